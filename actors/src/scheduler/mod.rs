//! The scheduler actor: keeps a queue of unscheduled pods and a cache of nodes and their
//! allocations, places each pod with the plugins (pure) and binds it with a
//! compare-and-swap on the pod. A pod that fits nowhere waits for the cluster to change.

pub mod cache;
pub mod plugins;

use crate::controllers::{events, update_outcome, update_with_retry, Outcome};
use actix::prelude::*;
use bus::informer::{watch_objects, InformerEvent, Scope};
use bus::Client;
use k8s_openapi::api::core::v1::{Node, Pod, PodCondition};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

const ACTOR: &str = "scheduler";
const RETRY_UNSCHEDULABLE: Duration = Duration::from_secs(5);

fn key_of(p: &Pod) -> String {
    format!("{}/{}", p.metadata.namespace.as_deref().unwrap_or(""), p.metadata.name.as_deref().unwrap_or(""))
}

fn wants_scheduling(p: &Pod) -> bool {
    let spec = p.spec.as_ref();
    spec.and_then(|s| s.node_name.as_ref()).is_none()
        && p.metadata.deletion_timestamp.is_none()
        && matches!(spec.and_then(|s| s.scheduler_name.as_deref()), None | Some("default-scheduler"))
}

pub struct Scheduler {
    client: Client,
    cache: cache::Cache,
    /// Unscheduled pods waiting for a decision, by key.
    pending: BTreeMap<String, Pod>,
    /// Keys whose binding is being written.
    binding: HashSet<String>,
    /// Keys that fit nowhere last time, with the message written for them.
    unschedulable: BTreeMap<String, String>,
    /// The reasons last written on each waiting pod, so a retry with the same outcome
    /// costs no store round trip.
    reported: HashMap<String, String>,
    scheduled: bool,
}

#[derive(Message)]
#[rtype(result = "()")]
enum Msg {
    Schedule,
    Bound { key: String, ok: bool },
    Stop,
}

impl Scheduler {
    pub fn new(client: Client) -> Self {
        Scheduler { client, cache: cache::Cache::default(), pending: BTreeMap::new(), binding: HashSet::new(), unschedulable: BTreeMap::new(), reported: HashMap::new(), scheduled: false }
    }

    fn kick(&mut self, ctx: &mut Context<Self>) {
        if !self.scheduled && self.pending.keys().any(|k| !self.binding.contains(k) && !self.unschedulable.contains_key(k)) {
            self.scheduled = true;
            ctx.notify(Msg::Schedule);
        }
    }

    fn schedule(&mut self, ctx: &mut Context<Self>) {
        self.scheduled = false;
        let keys: Vec<String> = self.pending.keys().filter(|k| !self.binding.contains(*k) && !self.unschedulable.contains_key(*k)).cloned().collect();
        for key in keys {
            let Some(pod) = self.pending.get(&key).cloned() else { continue };
            let info = plugins::pod_info(&pod);
            match plugins::place(&info, &self.cache.snapshot()) {
                Ok(node) => {
                    // Counted at once, so the next pod in this pass already sees it.
                    self.cache.assume(&key, &node, info.requests);
                    self.binding.insert(key.clone());
                    let client = self.client.clone();
                    let addr = ctx.address();
                    tokio::spawn(async move {
                        let ok = bind(&client, &pod, &node).await;
                        addr.do_send(Msg::Bound { key, ok });
                    });
                }
                Err(why) => {
                    tracing::info!(pod = %key, reason = %why, "pod does not fit");
                    self.unschedulable.insert(key.clone(), why.clone());
                    if self.reported.get(&key) == Some(&why) {
                        continue;
                    }
                    self.reported.insert(key.clone(), why.clone());
                    let client = self.client.clone();
                    tokio::spawn(async move { mark_unschedulable(&client, &pod, &why).await });
                }
            }
        }
    }

    fn retry_unschedulable(&mut self, ctx: &mut Context<Self>) {
        if !self.unschedulable.is_empty() {
            self.unschedulable.clear();
            self.kick(ctx);
        }
    }
}

async fn bind(client: &Client, pod: &Pod, node: &str) -> bool {
    let ns = pod.metadata.namespace.as_deref();
    let name = pod.metadata.name.as_deref().unwrap_or("");
    let uid = pod.metadata.uid.clone();
    let bound_here = std::sync::atomic::AtomicBool::new(false);
    let ok = update_with_retry::<Pod, _>(client, ns, name, |cur| {
        // Someone else bound it, or it is another pod of the same name: leave it.
        if cur.metadata.uid != uid || cur.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some() {
            return;
        }
        if let Some(s) = cur.spec.as_mut() {
            s.node_name = Some(node.to_string());
        }
        let st = cur.status.get_or_insert_with(Default::default);
        let conds = st.conditions.get_or_insert_with(Vec::new);
        conds.retain(|c| c.type_ != "PodScheduled");
        conds.push(PodCondition { type_: "PodScheduled".into(), status: "True".into(), last_transition_time: Some(schema::object::now()), ..Default::default() });
        bound_here.store(true, std::sync::atomic::Ordering::SeqCst);
    })
    .await;
    if ok && bound_here.load(std::sync::atomic::Ordering::SeqCst) {
        events::record(client, events::event(events::reference(pod), "Normal", "Scheduled", &format!("Successfully assigned {}/{name} to {node}", ns.unwrap_or("")), "default-scheduler"));
    }
    ok
}

/// Writes PodScheduled=False with the reasons, and a FailedScheduling event, only when the
/// reasons changed: a pod retried every few seconds must not grow the event list forever.
async fn mark_unschedulable(client: &Client, pod: &Pod, why: &str) {
    let ns = pod.metadata.namespace.as_deref();
    let name = pod.metadata.name.as_deref().unwrap_or("");
    let uid = pod.metadata.uid.clone();
    let out = update_outcome::<Pod, _>(client, ns, name, |cur| {
        if cur.metadata.uid != uid || cur.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some() {
            return;
        }
        let st = cur.status.get_or_insert_with(Default::default);
        let conds = st.conditions.get_or_insert_with(Vec::new);
        if conds.iter().any(|c| c.type_ == "PodScheduled" && c.message.as_deref() == Some(why)) {
            return;
        }
        conds.retain(|c| c.type_ != "PodScheduled");
        conds.push(PodCondition {
            type_: "PodScheduled".into(),
            status: "False".into(),
            reason: Some("Unschedulable".into()),
            message: Some(why.to_string()),
            last_transition_time: Some(schema::object::now()),
            ..Default::default()
        });
    })
    .await;
    if out == Outcome::Written {
        events::record(client, events::event(events::reference(pod), "Warning", "FailedScheduling", why, "default-scheduler"));
    }
}

impl Actor for Scheduler {
    type Context = Context<Self>;
    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(RETRY_UNSCHEDULABLE, |act, ctx| act.retry_unschedulable(ctx));
    }
}

impl StreamHandler<InformerEvent<Node>> for Scheduler {
    fn handle(&mut self, ev: InformerEvent<Node>, ctx: &mut Context<Self>) {
        bus::metrics::handle(ACTOR, || {
            let mut changed_shape = false;
            match ev {
                InformerEvent::Listed(nodes, _) => {
                    self.cache.clear_nodes();
                    nodes.iter().for_each(|n| {
                        self.cache.set_node(n);
                    });
                    changed_shape = true;
                }
                // Heartbeats change nothing that matters to placement; only readiness,
                // cordoning, taints or capacity changes are worth a retry of waiting pods.
                InformerEvent::Applied(n, _) => changed_shape = self.cache.set_node(&n),
                InformerEvent::Deleted(n, _) => self.cache.remove_node(n.metadata.name.as_deref().unwrap_or("")),
            }
            if changed_shape {
                self.unschedulable.clear();
            }
            self.kick(ctx);
        })
    }
    fn finished(&mut self, _: &mut Context<Self>) {}
}

impl StreamHandler<InformerEvent<Pod>> for Scheduler {
    fn handle(&mut self, ev: InformerEvent<Pod>, ctx: &mut Context<Self>) {
        bus::metrics::handle(ACTOR, || {
            match ev {
                InformerEvent::Listed(pods, _) => {
                    self.cache.clear_pods();
                    self.pending.clear();
                    self.reported.clear();
                    for p in pods {
                        self.observe(p);
                    }
                }
                InformerEvent::Applied(p, _) => self.observe(p),
                InformerEvent::Deleted(p, _) => {
                    let k = key_of(&p);
                    self.cache.remove_pod(&k);
                    self.pending.remove(&k);
                    self.reported.remove(&k);
                    // Freed resources may let a waiting pod fit.
                    self.unschedulable.clear();
                }
            }
            self.kick(ctx);
        })
    }
    fn finished(&mut self, _: &mut Context<Self>) {}
}

impl Scheduler {
    fn observe(&mut self, p: Pod) {
        let k = key_of(&p);
        if wants_scheduling(&p) {
            self.pending.insert(k, p);
        } else {
            self.pending.remove(&k);
            self.unschedulable.remove(&k);
            self.reported.remove(&k);
            if !self.binding.contains(&k) {
                self.cache.set_pod(&k, &p);
            }
        }
    }
}

impl Handler<Msg> for Scheduler {
    type Result = ();
    fn handle(&mut self, m: Msg, ctx: &mut Context<Self>) {
        bus::metrics::handle(ACTOR, || {
            match m {
                Msg::Schedule => self.schedule(ctx),
                Msg::Bound { key, ok } => {
                    self.binding.remove(&key);
                    if !ok {
                        // The binding did not land (conflicts are already retried inside):
                        // forget the assumption and wait for the next retry round rather
                        // than spin on a pod the store keeps refusing.
                        self.cache.remove_pod(&key);
                        if self.pending.contains_key(&key) {
                            self.unschedulable.insert(key, "binding failed".into());
                        }
                    }
                }
                Msg::Stop => ctx.stop(),
            }
            self.kick(ctx);
        })
    }
}

pub struct SchedulerHandle {
    addr: Addr<Scheduler>,
}

pub async fn start(bus: bus::Bus) -> anyhow::Result<SchedulerHandle> {
    let client = Client::new(bus);
    let addr = Scheduler::create(move |ctx| {
        ctx.add_stream(watch_objects::<Node>(client.clone(), Scope::default()));
        ctx.add_stream(watch_objects::<Pod>(client.clone(), Scope::default()));
        Scheduler::new(client)
    });
    Ok(SchedulerHandle { addr })
}

impl SchedulerHandle {
    pub async fn shutdown(self) {
        let _ = self.addr.send(Msg::Stop).await;
    }
}
