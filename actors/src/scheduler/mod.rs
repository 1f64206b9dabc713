//! The scheduler actor: keeps a queue of unscheduled pods and a cache of nodes and their
//! allocations, places each pod with the plugins (pure) and binds it with a
//! compare-and-swap on the pod. A pod that fits nowhere waits for the cluster to change.
//! A placed pod is assumed on its node (counted there, on that node only) from the moment
//! it is placed until its binding is seen on the watch or fails, as kube-scheduler does.
//! A pod that fits nowhere may preempt lower-priority pods (DefaultPreemption).

mod binder;
pub mod cache;
pub mod plugins;
pub mod queue;
mod volumes;

use actix::prelude::*;
use bus::informer::{watch_objects, watch_objects_for, InformerEvent, Scope};
use bus::Client;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use futures::future::BoxFuture;
use std::collections::HashMap;
use std::sync::Arc;
use tokio::time::Instant;

const ACTOR: &str = "scheduler";

fn key_of(p: &Pod) -> String {
    format!("{}/{}", p.metadata.namespace.as_deref().unwrap_or(""), p.metadata.name.as_deref().unwrap_or(""))
}

/// Unbound, not deleting, ours, and without schedulingGates (kube's PreEnqueue: a gated
/// pod waits outside the queue until its gates are removed).
fn wants_scheduling(p: &Pod) -> bool {
    let spec = p.spec.as_ref();
    spec.and_then(|s| s.node_name.as_ref()).is_none()
        && p.metadata.deletion_timestamp.is_none()
        && spec.and_then(|s| s.scheduling_gates.as_ref()).is_none_or(|g| g.is_empty())
        && matches!(spec.and_then(|s| s.scheduler_name.as_deref()), None | Some("default-scheduler"))
}

/// How a binding ended.
#[derive(Debug, Clone, PartialEq)]
pub enum BindResult {
    Bound,
    /// Someone else bound it first, to this node.
    AlreadyBound(String),
    /// The pod (of that uid) no longer exists.
    Gone,
    Failed,
}

/// The scheduler's writes: the store in production, a recorder in the actor's tests.
pub trait Binder: Send + Sync + 'static {
    fn bind(&self, pod: Pod, node: String) -> BoxFuture<'static, BindResult>;
    fn unschedulable(&self, pod: Pod, why: String) -> BoxFuture<'static, ()>;
    /// Nominates `node` for the preemptor and deletes the victims gracefully.
    fn preempt(&self, pod: Pod, node: String, victims: Vec<Pod>) -> BoxFuture<'static, ()>;
}

/// A pod placed on a node whose binding has not been seen on the watch yet.
#[derive(Debug, Clone)]
struct Assumed {
    uid: Option<String>,
    node: String,
    pod: Pod,
    /// The bind request is still running.
    binding: bool,
    /// The watch has shown the pod bound (the cache holds its real placement).
    confirmed: bool,
}

/// Counters the actor's tests read.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stats {
    pub passes: u64,
    pub attempts: u64,
    pub waiting: usize,
    pub assumed: usize,
    /// Pods counted per node (bound and assumed).
    pub pods_per_node: Vec<(String, u64)>,
}

pub struct Scheduler {
    binder: Arc<dyn Binder>,
    cache: cache::Cache,
    queue: queue::SchedulingQueue,
    assumed: HashMap<String, Assumed>,
    /// The reasons last written on each waiting pod, so a retry with the same outcome
    /// costs no store round trip.
    reported: HashMap<String, String>,
    /// Pods waiting for the room their preemption made: key → (node, the pod). Other pods of
    /// lower or equal priority see them as already there, so the room stays theirs.
    nominated: HashMap<String, (String, Pod)>,
    /// PodDisruptionBudgets by key, for preemption's victim choice.
    pdbs: HashMap<String, plugins::default_preemption::Pdb>,
    /// A Schedule message is on its way.
    armed: bool,
    /// The timer that flushes backoffs, and when it fires.
    wake: Option<(Instant, SpawnHandle)>,
    stats: Stats,
    /// Claims, volumes and classes, for the volume binding plugin.
    volumes: plugins::volume_binding::Volumes,
    /// Where the next pod's search for feasible nodes starts (kube's nextStartNodeIndex),
    /// so a sampled search still looks at every node in turn.
    next_start: usize,
}

#[derive(Message)]
#[rtype(result = "()")]
enum Msg {
    Schedule,
    Bound { key: String, result: BindResult },
    Stop,
}

#[derive(Message)]
#[rtype(result = "Stats")]
pub struct GetStats;

impl Scheduler {
    pub fn new(client: Client) -> Self {
        Self::with_binder(Arc::new(binder::StoreBinder(client.named(ACTOR))))
    }

    pub fn with_binder(binder: Arc<dyn Binder>) -> Self {
        Scheduler { binder, cache: cache::Cache::default(), queue: Default::default(), assumed: HashMap::new(), reported: HashMap::new(), nominated: HashMap::new(), pdbs: HashMap::new(), armed: false, wake: None, stats: Stats::default(), volumes: Default::default(), next_start: 0 }
    }

    /// Sends a Schedule message when there are pods to try, else sets the timer for the
    /// next backoff to end: an idle scheduler handles nothing.
    fn kick(&mut self, ctx: &mut Context<Self>) {
        if self.queue.has_active() {
            if !self.armed {
                self.armed = true;
                ctx.notify(Msg::Schedule);
            }
            return;
        }
        let next = self.queue.next_wake();
        if self.wake.as_ref().map(|(t, _)| *t) == next {
            return;
        }
        if let Some((_, h)) = self.wake.take() {
            ctx.cancel_future(h);
        }
        if let Some(at) = next {
            let h = ctx.run_later(at.saturating_duration_since(Instant::now()), |act, ctx| {
                bus::metrics::handle(ACTOR, || {
                    act.wake = None;
                    act.queue.flush(Instant::now());
                    act.kick(ctx);
                })
            });
            self.wake = Some((at, h));
        }
    }

    fn schedule(&mut self, ctx: &mut Context<Self>) {
        self.armed = false;
        self.stats.passes += 1;
        let now = Instant::now();
        let mut batch = self.queue.pop_active(now);
        // Higher priority first, as kube's activeQ orders them; arrival order otherwise.
        batch.sort_by_key(|(_, p)| std::cmp::Reverse(plugins::priority(p)));
        // One snapshot per pass, kept current node by node as pods are placed: building
        // it is O(cluster), placing a pod must not be.
        let mut pass = self.cache.snapshot();
        let at: HashMap<String, usize> = pass.iter().enumerate().map(|(i, n)| (n.name.clone(), i)).collect();
        for (key, pod) in batch {
            self.stats.attempts += 1;
            let mut info = plugins::pod_info(&pod);
            info.volumes = plugins::volume_binding::pre_filter(&pod, &self.volumes);
            let nominated = self.with_nominated(&key, &info, &pass);
            let nodes = nominated.as_deref().unwrap_or(&pass);
            let snap = plugins::Snapshot { nodes, namespaces: self.cache.namespaces() };
            let (result, looked_at) = plugins::schedule_from(&info, &snap, self.next_start);
            self.next_start = (self.next_start + looked_at) % nodes.len().max(1);
            let placed = result.map_err(|d| {
                let pdbs: Vec<_> = self.pdbs.values().cloned().collect();
                match plugins::default_preemption::preempt(&info, &snap, &d, &pdbs) {
                    Ok(c) => (d.message(None), Some(c)),
                    Err(post) => (d.message(Some(&post)), None),
                }
            });
            match placed {
                Ok(node) => {
                    // Counted at once, so the next pod in this pass already sees it.
                    self.cache.assume(&key, &node, &pod);
                    if let (Some(i), Some(view)) = (at.get(&node), self.cache.info(&node)) {
                        pass[*i] = view;
                    }
                    self.assumed.insert(key.clone(), Assumed { uid: pod.metadata.uid.clone(), node: node.clone(), pod: pod.clone(), binding: true, confirmed: false });
                    let bind = self.binder.bind(pod, node);
                    let addr = ctx.address();
                    tokio::spawn(async move {
                        let result = bind.await;
                        addr.do_send(Msg::Bound { key, result });
                    });
                }
                Err((why, candidate)) => {
                    tracing::info!(pod = %key, reason = %why, "pod does not fit");
                    self.queue.unschedulable(&key);
                    if let Some(c) = candidate {
                        tracing::info!(pod = %key, node = %c.node, victims = c.victims.len(), "preempting");
                        self.nominated.insert(key.clone(), (c.node.clone(), pod.clone()));
                        let victims = c.victims.iter().map(|v| (**v).clone()).collect();
                        tokio::spawn(self.binder.preempt(pod.clone(), c.node, victims));
                    }
                    if self.reported.get(&key) == Some(&why) {
                        continue;
                    }
                    self.reported.insert(key.clone(), why.clone());
                    tokio::spawn(self.binder.unschedulable(pod, why));
                }
            }
        }
    }

    fn bound(&mut self, key: String, result: BindResult) {
        let now = Instant::now();
        let Some(mut a) = self.assumed.remove(&key) else { return };
        a.binding = false;
        match result {
            BindResult::Bound | BindResult::AlreadyBound(_) => {
                self.queue.bound(&key);
                self.reported.remove(&key);
                if let BindResult::AlreadyBound(node) = result {
                    if !a.confirmed && node != a.node {
                        self.cache.assume(&key, &node, &a.pod);
                        a.node = node;
                    }
                }
                // Until the watch shows the binding, the pod stays counted where it went
                // and a stale unbound copy of it is not placed again.
                if !a.confirmed {
                    self.assumed.insert(key, a);
                }
            }
            BindResult::Gone => {
                if !a.confirmed {
                    self.cache.remove_pod(&key);
                }
                self.queue.remove(&key);
            }
            BindResult::Failed => {
                if !a.confirmed {
                    self.cache.remove_pod(&key);
                }
                self.queue.bind_failed(&key, now);
            }
        }
    }

    /// The snapshot with the nominated pods of at least this priority counted on their
    /// nominated nodes (kube's addNominatedPods), so a preemptor's room is not taken by
    /// a pod of lower priority while the victims leave.
    /// None when no nomination applies to this pod (the pass's snapshot serves as it is).
    fn with_nominated(&self, key: &str, info: &plugins::PodInfo, nodes: &[cache::NodeInfo]) -> Option<Vec<cache::NodeInfo>> {
        let applies = |k: &String, p: &Pod| k != key && plugins::priority(p) >= info.priority;
        if !self.nominated.iter().any(|(k, (_, p))| applies(k, p)) {
            return None;
        }
        let mut nodes = nodes.to_vec();
        for (k, (node, p)) in &self.nominated {
            if !applies(k, p) {
                continue;
            }
            if let Some(n) = nodes.iter_mut().find(|n| n.name == *node) {
                let r = cache::requests(p);
                n.requested.cpu_millis += r.cpu_millis;
                n.requested.memory += r.memory;
                n.requested.pods += 1;
                let nz = plugins::least_allocated::non_zero(r);
                n.nonzero_requested.cpu_millis += nz.cpu_millis;
                n.nonzero_requested.memory += nz.memory;
                n.pods.push(Arc::new(p.clone()));
            }
        }
        Some(nodes)
    }

    /// Whether an unbound event is an old copy of a pod this scheduler has placed.
    fn is_assumed(&self, key: &str, p: &Pod) -> bool {
        self.assumed.get(key).is_some_and(|a| a.uid == p.metadata.uid)
    }

    /// A pod as the watch shows it; returns whether capacity may have been freed.
    fn observe(&mut self, p: Pod, now: Instant) -> bool {
        let k = key_of(&p);
        let bound = p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some();
        if bound {
            self.queue.remove(&k);
            self.reported.remove(&k);
            self.nominated.remove(&k);
            if let Some(a) = self.assumed.get_mut(&k) {
                if a.uid == p.metadata.uid {
                    a.confirmed = true;
                    if !a.binding {
                        self.assumed.remove(&k);
                    }
                }
            }
            let before = self.cache.placed(&k);
            let old_labels = self.cache.pod(&k).map(|o| o.metadata.labels.clone());
            self.cache.set_pod(&k, &p);
            let after = self.cache.placed(&k);
            // Capacity given back, or labels changed (affinity and spreading look at them).
            let relabelled = old_labels.is_some_and(|l| l != p.metadata.labels);
            return (before.is_some() && before != after) || relabelled;
        }
        if self.is_assumed(&k, &p) {
            return false;
        }
        if wants_scheduling(&p) {
            match p.status.as_ref().and_then(|s| s.nominated_node_name.clone()).filter(|n| !n.is_empty()) {
                Some(n) => {
                    self.nominated.insert(k.clone(), (n, p.clone()));
                }
                None => {
                    self.nominated.remove(&k);
                }
            }
            self.queue.upsert(&k, p, now);
        } else {
            self.nominated.remove(&k);
            self.queue.remove(&k);
            self.reported.remove(&k);
        }
        false
    }

    fn forget_pod(&mut self, p: &Pod) -> bool {
        let k = key_of(p);
        self.nominated.remove(&k);
        self.queue.remove(&k);
        self.reported.remove(&k);
        if self.assumed.get(&k).is_some_and(|a| !a.binding && a.uid == p.metadata.uid) {
            self.assumed.remove(&k);
        }
        let held = self.cache.placed(&k).is_some();
        self.cache.remove_pod(&k);
        held
    }

    /// A fresh list: the cache and queue are rebuilt from it, and the pods whose bindings
    /// are in flight or not yet seen stay counted on the node they were placed on.
    fn relist(&mut self, pods: Vec<Pod>, now: Instant) {
        self.cache.clear_pods();
        let listed: HashMap<String, Option<String>> = pods.iter().map(|p| (key_of(p), p.metadata.uid.clone())).collect();
        for k in self.queue.keys() {
            if !listed.contains_key(&k) {
                self.queue.remove(&k);
            }
        }
        self.nominated.retain(|k, _| listed.contains_key(k));
        self.assumed.retain(|k, a| a.binding || listed.get(k).is_some_and(|u| *u == a.uid));
        for a in self.assumed.values_mut() {
            a.confirmed = false;
        }
        for p in pods {
            self.observe(p, now);
        }
        for (k, a) in &self.assumed {
            if !a.confirmed {
                self.cache.assume(k, &a.node, &a.pod);
            }
        }
        self.reported.retain(|k, _| listed.contains_key(k));
        self.queue.move_unschedulable(now);
    }

    fn stats(&self) -> Stats {
        let mut per_node: Vec<(String, u64)> = self.cache.snapshot().into_iter().map(|n| (n.name, n.requested.pods)).collect();
        per_node.sort();
        Stats { waiting: self.queue.len(), assumed: self.assumed.len(), pods_per_node: per_node, ..self.stats.clone() }
    }
}

impl Actor for Scheduler {
    type Context = Context<Self>;
}

impl StreamHandler<InformerEvent<Node>> for Scheduler {
    fn handle(&mut self, ev: InformerEvent<Node>, ctx: &mut Context<Self>) {
        bus::metrics::handle(ACTOR, || {
            let changed_shape = match ev {
                InformerEvent::Listed(nodes, _) => {
                    self.cache.clear_nodes();
                    nodes.iter().for_each(|n| {
                        self.cache.set_node(n);
                    });
                    true
                }
                // Heartbeats change nothing that matters to placement; only readiness,
                // cordoning, taints or capacity changes are worth a retry of waiting pods.
                InformerEvent::Applied(n, _) => self.cache.set_node(&n),
                InformerEvent::Deleted(n, _) => {
                    self.cache.remove_node(n.metadata.name.as_deref().unwrap_or(""));
                    false
                }
            };
            if changed_shape {
                self.queue.move_unschedulable(Instant::now());
            }
            self.kick(ctx);
        })
    }
    fn finished(&mut self, _: &mut Context<Self>) {}
}

impl StreamHandler<InformerEvent<Pod>> for Scheduler {
    fn handle(&mut self, ev: InformerEvent<Pod>, ctx: &mut Context<Self>) {
        bus::metrics::handle(ACTOR, || {
            let now = Instant::now();
            let freed = match ev {
                InformerEvent::Listed(pods, _) => {
                    self.relist(pods, now);
                    false
                }
                InformerEvent::Applied(p, _) => self.observe(p, now),
                InformerEvent::Deleted(p, _) => self.forget_pod(&p),
            };
            // Only capacity given back (a bound pod gone or finished) can help a pod that
            // fit nowhere; a pending pod's deletion or a status write cannot.
            if freed {
                self.queue.move_unschedulable(now);
            }
            self.kick(ctx);
        })
    }
    fn finished(&mut self, _: &mut Context<Self>) {}
}

/// Namespace labels feed affinity terms' namespaceSelector.
impl StreamHandler<InformerEvent<Namespace>> for Scheduler {
    fn handle(&mut self, ev: InformerEvent<Namespace>, ctx: &mut Context<Self>) {
        bus::metrics::handle(ACTOR, || {
            let labels = |n: &Namespace| n.metadata.labels.clone().unwrap_or_default();
            let changed = match ev {
                InformerEvent::Listed(items, _) => {
                    items.iter().for_each(|n| {
                        self.cache.set_namespace(n.metadata.name.as_deref().unwrap_or(""), labels(n));
                    });
                    true
                }
                InformerEvent::Applied(n, _) => self.cache.set_namespace(n.metadata.name.as_deref().unwrap_or(""), labels(&n)),
                InformerEvent::Deleted(n, _) => {
                    self.cache.remove_namespace(n.metadata.name.as_deref().unwrap_or(""));
                    false
                }
            };
            if changed {
                self.queue.move_unschedulable(Instant::now());
            }
            self.kick(ctx);
        })
    }
    fn finished(&mut self, _: &mut Context<Self>) {}
}

/// PodDisruptionBudgets only weigh on the choice of victims: no retry on their changes.
impl StreamHandler<InformerEvent<PodDisruptionBudget>> for Scheduler {
    fn handle(&mut self, ev: InformerEvent<PodDisruptionBudget>, _: &mut Context<Self>) {
        bus::metrics::handle(ACTOR, || {
            let key = |p: &PodDisruptionBudget| format!("{}/{}", p.metadata.namespace.as_deref().unwrap_or(""), p.metadata.name.as_deref().unwrap_or(""));
            match ev {
                InformerEvent::Listed(items, _) => self.pdbs = items.iter().map(|p| (key(p), plugins::default_preemption::pdb_of(p))).collect(),
                InformerEvent::Applied(p, _) => {
                    self.pdbs.insert(key(&p), plugins::default_preemption::pdb_of(&p));
                }
                InformerEvent::Deleted(p, _) => {
                    self.pdbs.remove(&key(&p));
                }
            }
        })
    }
    fn finished(&mut self, _: &mut Context<Self>) {}
}

impl Handler<Msg> for Scheduler {
    type Result = ();
    fn handle(&mut self, m: Msg, ctx: &mut Context<Self>) {
        bus::metrics::handle(ACTOR, || {
            match m {
                Msg::Schedule => self.schedule(ctx),
                Msg::Bound { key, result } => self.bound(key, result),
                Msg::Stop => ctx.stop(),
            }
            self.kick(ctx);
        })
    }
}

impl Handler<GetStats> for Scheduler {
    type Result = MessageResult<GetStats>;
    fn handle(&mut self, _: GetStats, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.stats())
    }
}

pub struct SchedulerHandle {
    addr: Addr<Scheduler>,
}

pub async fn start(bus: bus::Bus) -> anyhow::Result<SchedulerHandle> {
    let client = Client::new(bus);
    let addr = Scheduler::create(move |ctx| {
        ctx.add_stream(watch_objects_for::<Node>(ACTOR, client.clone(), Scope::default()));
        ctx.add_stream(watch_objects_for::<Pod>(ACTOR, client.clone(), Scope::default()));
        ctx.add_stream(watch_objects::<Namespace>(client.clone(), Scope::default()));
        ctx.add_stream(watch_objects::<PodDisruptionBudget>(client.clone(), Scope::default()));
        ctx.add_stream(watch_objects::<k8s_openapi::api::core::v1::PersistentVolumeClaim>(client.clone(), Scope::default()));
        ctx.add_stream(watch_objects::<k8s_openapi::api::core::v1::PersistentVolume>(client.clone(), Scope::default()));
        ctx.add_stream(watch_objects::<k8s_openapi::api::storage::v1::StorageClass>(client.clone(), Scope::default()));
        Scheduler::new(client)
    });
    Ok(SchedulerHandle { addr })
}

impl SchedulerHandle {
    pub async fn shutdown(self) {
        let _ = self.addr.send(Msg::Stop).await;
    }
}

#[cfg(test)]
mod tests;
