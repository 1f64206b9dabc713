//! The ReplicaSet controller: keeps `spec.replicas` pods matching each ReplicaSet alive.
//! `reconcile` is pure; the actor keeps the caches (ReplicaSets, pods indexed by owner),
//! expectations for its own in-flight creates and deletes, and carries the actions out.

use super::expectations::Expectations;
use super::queue::WorkQueue;
use super::owned::{self, Cache, OwnedIndex};
use super::{delete_pod_gracefully, events, ControllerMsg};
use actix::prelude::*;
use bus::informer::InformerEvent;
use bus::Client;
use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetStatus};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use futures::future::BoxFuture;
use std::sync::Arc;
use tokio::time::Instant;

/// What the controller keeps pods for: a ReplicaSet, or a ReplicationController seen as
/// the ReplicaSet it behaves as (kube's replication manager wraps the ReplicaSet
/// controller the same way).
pub trait PodOwner: bus::client::Object + Clone + Unpin + Send + Sync + 'static {
    /// The actor's name in spans, metrics and events.
    const ACTOR: &'static str;
    fn as_replica_set(&self) -> ReplicaSet;
    fn set_status(&mut self, st: &ReplicaSetStatus);
}

impl PodOwner for ReplicaSet {
    const ACTOR: &'static str = "replicaset-controller";
    fn as_replica_set(&self) -> ReplicaSet {
        self.clone()
    }
    fn set_status(&mut self, st: &ReplicaSetStatus) {
        self.status = Some(st.clone());
    }
}
/// At most this many creates or deletes per pass (kube's burstReplicas).
const BURST: usize = 500;

#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Create(Pod),
    Delete(Pod),
    Status(ReplicaSetStatus),
}

pub fn is_active(p: &Pod) -> bool {
    let phase = p.status.as_ref().and_then(|s| s.phase.as_deref());
    p.metadata.deletion_timestamp.is_none() && phase != Some("Succeeded") && phase != Some("Failed")
}

pub fn is_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .map(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        .unwrap_or(false)
}

const ALPHANUMS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

pub fn random_suffix() -> String {
    let b = uuid::Uuid::new_v4();
    b.as_bytes().iter().take(5).map(|x| ALPHANUMS[*x as usize % ALPHANUMS.len()] as char).collect()
}

fn pod_for(owner: (&str, &str), rs: &ReplicaSet, name: String) -> Pod {
    let tpl = rs.spec.template.clone().unwrap_or_default();
    let tmeta = tpl.metadata.unwrap_or_default();
    Pod {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: rs.metadata.namespace.clone(),
            labels: tmeta.labels,
            annotations: tmeta.annotations,
            owner_references: Some(vec![OwnerReference {
                api_version: owner.0.into(),
                kind: owner.1.into(),
                name: rs.metadata.name.clone().unwrap_or_default(),
                uid: rs.metadata.uid.clone().unwrap_or_default(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            }]),
            ..Default::default()
        },
        spec: tpl.spec,
        status: None,
    }
}

/// Which extra pods go first: unscheduled, then not ready, then the newest.
fn deletion_rank(p: &Pod) -> (u8, u8, std::cmp::Reverse<String>) {
    let scheduled = p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some();
    let created = p.metadata.creation_timestamp.as_ref().map(|t| t.0.to_string()).unwrap_or_default();
    (scheduled as u8, is_ready(p) as u8, std::cmp::Reverse(created))
}

/// Decides what the ReplicaSet needs. `owned` are its pods as the cache sees them;
/// `settled` is false while its own creates or deletes are still in flight (expectations):
/// the cache is known to lag then, so only the status is brought up to date.
pub fn reconcile(rs: &ReplicaSet, owned: &[Pod], settled: bool, new_name: &mut dyn FnMut() -> String) -> Vec<Action> {
    reconcile_as(("apps/v1", "ReplicaSet"), rs, owned, settled, new_name)
}

/// [`reconcile`] for an owner of another kind (apiVersion, kind) that behaves as `rs`.
pub fn reconcile_as(owner: (&str, &str), rs: &ReplicaSet, owned: &[Pod], settled: bool, new_name: &mut dyn FnMut() -> String) -> Vec<Action> {
    let want = rs.spec.replicas.unwrap_or(1).max(0) as usize;
    let mut active: Vec<&Pod> = owned.iter().filter(|p| is_active(p)).collect();
    let mut actions = Vec::new();
    if settled && rs.metadata.deletion_timestamp.is_none() {
        if active.len() < want {
            for _ in 0..(want - active.len()).min(BURST) {
                actions.push(Action::Create(pod_for(owner, rs, new_name())));
            }
        } else if active.len() > want {
            active.sort_by_key(|p| deletion_rank(p));
            for p in active.iter().take((active.len() - want).min(BURST)) {
                actions.push(Action::Delete((*p).clone()));
            }
        }
    }
    let ready = owned.iter().filter(|p| is_active(p) && is_ready(p)).count() as i32;
    let status = ReplicaSetStatus {
        replicas: owned.iter().filter(|p| is_active(p)).count() as i32,
        fully_labeled_replicas: Some(owned.iter().filter(|p| is_active(p)).count() as i32),
        ready_replicas: Some(ready),
        available_replicas: Some(ready),
        observed_generation: rs.metadata.generation,
        conditions: None,
        terminating_replicas: None,
    };
    if rs.status.as_ref() != Some(&status) {
        actions.push(Action::Status(status));
    }
    actions
}

/// Where a pass's writes go: the store in production, a recorder in the actor's tests.
pub trait Writer<K = ReplicaSet>: Send + Sync + 'static {
    /// Carries out one pass's actions; returns the pods whose create or delete is known
    /// not to have happened (a write whose outcome is unknown is not among them).
    fn execute(&self, rs: K, actions: Vec<Action>) -> BoxFuture<'static, Vec<String>>;
}

struct StoreWriter(Client);

impl<K: PodOwner> Writer<K> for StoreWriter {
    fn execute(&self, rs: K, actions: Vec<Action>) -> BoxFuture<'static, Vec<String>> {
        let client = self.0.clone();
        Box::pin(async move { execute(&client, &rs, actions).await })
    }
}

pub struct ReplicaSetController<K: PodOwner = ReplicaSet> {
    /// How often every object is reconciled again, events or not.
    resync: std::time::Duration,
    writer: Arc<dyn Writer<K>>,
    sets: Cache<K>,
    pods: OwnedIndex<Pod>,
    /// Its own creates and deletes not yet seen on the watch, per ReplicaSet key.
    expectations: Expectations,
    queue: WorkQueue,
}

impl<K: PodOwner> ReplicaSetController<K> {
    /// Reconciles everything again every `d` (kube-controller-manager's resync), besides events.
    pub fn resync_every(mut self, d: std::time::Duration) -> Self {
        self.resync = d;
        self
    }

    pub fn new(client: Client) -> Self {
        Self::with_writer(Arc::new(StoreWriter(client.named(K::ACTOR))))
    }

    pub fn with_writer(writer: Arc<dyn Writer<K>>) -> Self {
        ReplicaSetController { resync: super::RESYNC, writer, sets: Cache::default(), pods: OwnedIndex::new(<K as k8s_openapi::Resource>::KIND), expectations: Expectations::default(), queue: WorkQueue::default() }
    }

    fn put_pod(&mut self, p: Pod) {
        let name = p.metadata.name.clone().unwrap_or_default();
        let terminating = p.metadata.deletion_timestamp.is_some();
        for rs in self.pods.put(p) {
            // Seen: no longer an in-flight create; seen terminating: a landed delete.
            self.expectations.created(&rs, &name);
            if terminating {
                self.expectations.deleted(&rs, &name);
            }
            self.queue.add(rs);
        }
    }

    fn drop_pod(&mut self, p: &Pod) {
        if let Some(rs) = self.pods.remove(&owned::key_of(p)) {
            self.expectations.deleted(&rs, p.metadata.name.as_deref().unwrap_or(""));
            self.queue.add(rs);
        }
    }

    fn kick(&mut self, ctx: &mut Context<Self>) {
        if self.queue.arm() {
            ctx.notify(ControllerMsg::Process);
        }
    }

    fn process(&mut self, ctx: &mut Context<Self>) {
        for key in self.queue.take_armed() {
            let Some(owner) = self.sets.get(&key).cloned() else {
                self.expectations.forget(&key);
                self.queue.done(&key);
                continue;
            };
            let rs = owner.as_replica_set();
            let uid = rs.metadata.uid.clone().unwrap_or_default();
            let owned: Vec<Pod> = self.pods.owned_by(&uid);
            let now = Instant::now();
            let settled = self.expectations.satisfied(&key, now);
            let rs_name = rs.metadata.name.clone().unwrap_or_default();
            let actions = reconcile_as((<K as k8s_openapi::Resource>::API_VERSION, <K as k8s_openapi::Resource>::KIND), &rs, &owned, settled, &mut || super::generated_name(&format!("{rs_name}-"), &random_suffix()));
            if actions.is_empty() {
                self.queue.done(&key);
                continue;
            }
            let name = |p: &Pod| p.metadata.name.clone().unwrap_or_default();
            let creates: Vec<String> = actions.iter().filter_map(|a| if let Action::Create(p) = a { Some(name(p)) } else { None }).collect();
            let deletes: Vec<String> = actions.iter().filter_map(|a| if let Action::Delete(p) = a { Some(name(p)) } else { None }).collect();
            if settled {
                // Whatever expired is stale: the cache is the truth for this pass.
                self.expectations.forget(&key);
            }
            if !creates.is_empty() || !deletes.is_empty() {
                self.expectations.expect(&key, creates, deletes, now);
            }
            let writer = self.writer.clone();
            let addr = ctx.address();
            tokio::spawn(async move {
                let not_done = writer.execute(owner, actions).await;
                addr.do_send(Finished { key, not_done });
            });
        }
    }
}

/// A pass is over; `not_done` names the pods whose create or delete did not happen.
#[derive(Message)]
#[rtype(result = "()")]
struct Finished {
    key: String,
    not_done: Vec<String>,
}

fn record<K: PodOwner>(client: &Client, rs: &K, type_: &str, reason: &str, message: String) {
    events::record(client, events::event(events::reference(rs), type_, reason, &message, K::ACTOR));
}

/// How a create ended, as far as the controller can tell.
pub enum Created {
    Yes,
    /// Refused: nothing was written.
    No(bus::client::ClientError),
    /// No answer, and reading did not settle it.
    Unknown(bus::client::ClientError),
}

/// Creates `p`; a create whose answer was lost (the write may have committed) is checked
/// by reading the pod back, then by creating it again under the same name, which either
/// lands it or answers AlreadyExists. Pod names are random, so a pod of this name that
/// exists is the one this pass made.
pub async fn create_checked(client: &Client, p: &Pod) -> Created {
    let first = match client.create(p).await {
        Ok(_) => return Created::Yes,
        Err(e) if e.is_already_exists() => return Created::Yes,
        Err(e) if !e.is_ambiguous() => return Created::No(e),
        Err(e) => e,
    };
    let (ns, name) = (p.metadata.namespace.as_deref(), p.metadata.name.as_deref().unwrap_or(""));
    match client.get::<Pod>(ns, name).await {
        Ok(Some(_)) => return Created::Yes,
        Ok(None) => {}
        Err(_) => return Created::Unknown(first),
    }
    match client.create(p).await {
        Ok(_) => Created::Yes,
        Err(e) if e.is_already_exists() => Created::Yes,
        Err(e) if e.is_ambiguous() => Created::Unknown(e),
        Err(e) => Created::No(e),
    }
}

/// Carries the actions out; returns the pods whose create or delete did not happen.
/// Creates go in slow-start batches (1, 2, 4, …) and stop at the first failure, so a
/// ReplicaSet that cannot create (quota, admission) does not hammer the store.
async fn execute<K: PodOwner>(client: &Client, rs: &K, actions: Vec<Action>) -> Vec<String> {
    let mut creates = Vec::new();
    let mut deletes = Vec::new();
    let mut status = None;
    for a in actions {
        match a {
            Action::Create(p) => creates.push(p),
            Action::Delete(p) => deletes.push(p),
            Action::Status(st) => status = Some(st),
        }
    }
    let mut not_done = Vec::new();
    let mut batch = 1;
    let mut failed = false;
    let mut rest = creates.into_iter().peekable();
    while rest.peek().is_some() {
        let chunk: Vec<Pod> = rest.by_ref().take(batch).collect();
        batch *= 2;
        if failed {
            not_done.extend(chunk.iter().filter_map(|p| p.metadata.name.clone()));
            continue;
        }
        let results = futures::future::join_all(chunk.iter().map(|p| create_checked(client, p))).await;
        for (p, r) in chunk.iter().zip(results) {
            let name = p.metadata.name.clone().unwrap_or_default();
            match r {
                Created::Yes => record(client, rs, "Normal", "SuccessfulCreate", format!("Created pod: {name}")),
                Created::No(e) => {
                    tracing::warn!(pod = %name, error = %e, "creating pod failed");
                    record(client, rs, "Warning", "FailedCreate", format!("Error creating: {e}"));
                    not_done.push(name);
                    failed = true;
                }
                Created::Unknown(e) => {
                    // Stays expected: the watch shows it if it landed, the expiry if not.
                    tracing::warn!(pod = %name, error = %e, "pod create outcome unknown");
                    failed = true;
                }
            }
        }
    }
    let results = futures::future::join_all(deletes.iter().map(|p| delete_pod_gracefully(client, p))).await;
    for (p, r) in deletes.iter().zip(results) {
        let name = p.metadata.name.clone().unwrap_or_default();
        match r {
            Ok(()) => record(client, rs, "Normal", "SuccessfulDelete", format!("Deleted pod: {name}")),
            Err(e) => {
                tracing::warn!(pod = %name, error = %e, "deleting pod failed");
                record(client, rs, "Warning", "FailedDelete", format!("Error deleting pod: {e}"));
                not_done.push(name);
            }
        }
    }
    if let Some(st) = status {
        let m = rs.metadata();
        super::update_with_retry::<K, _>(client, m.namespace.as_deref(), m.name.as_deref().unwrap_or(""), |cur| {
            // Not onto a new object that took the name meanwhile.
            if cur.metadata().uid == m.uid {
                cur.set_status(&st);
            }
        })
        .await;
    }
    not_done
}

impl<K: PodOwner> Handler<Finished> for ReplicaSetController<K> {
    type Result = ();
    fn handle(&mut self, m: Finished, ctx: &mut Context<Self>) {
        bus::metrics::handle(K::ACTOR, || {
            m.not_done.iter().for_each(|n| self.expectations.lower(&m.key, n));
            // The pass issued its last write just now: what it still expects is fresh,
            // however long its slow-start batches took.
            self.expectations.touch(&m.key, Instant::now());
            self.queue.done(&m.key);
            self.kick(ctx);
        })
    }
}

impl<K: PodOwner> Actor for ReplicaSetController<K> {
    type Context = Context<Self>;
    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(self.resync, |act, ctx| {
            act.sets.keys().into_iter().for_each(|k| act.queue.add(k));
            act.kick(ctx);
        });
    }
}

impl<K: PodOwner> StreamHandler<InformerEvent<K>> for ReplicaSetController<K> {
    fn handle(&mut self, ev: InformerEvent<K>, ctx: &mut Context<Self>) {
        bus::metrics::handle(K::ACTOR, || {
            let (requeue, deleted) = self.sets.apply(ev);
            requeue.into_iter().for_each(|k| self.queue.add(k));
            if let Some(k) = deleted {
                self.expectations.forget(&k);
            }
            self.kick(ctx);
        })
    }
    fn finished(&mut self, _: &mut Context<Self>) {}
}

impl<K: PodOwner> StreamHandler<InformerEvent<Pod>> for ReplicaSetController<K> {
    fn handle(&mut self, ev: InformerEvent<Pod>, ctx: &mut Context<Self>) {
        bus::metrics::handle(K::ACTOR, || {
            match ev {
                InformerEvent::Listed(items, _) => {
                    for rs in self.pods.replace_all(Vec::new()) {
                        self.queue.add(rs);
                    }
                    items.into_iter().for_each(|p| self.put_pod(p));
                }
                InformerEvent::Applied(p, _) => self.put_pod(p),
                InformerEvent::Deleted(p, _) => self.drop_pod(&p),
            }
            self.kick(ctx);
        })
    }
    fn finished(&mut self, _: &mut Context<Self>) {}
}

impl<K: PodOwner> Handler<ControllerMsg> for ReplicaSetController<K> {
    type Result = ();
    fn handle(&mut self, m: ControllerMsg, ctx: &mut Context<Self>) {
        bus::metrics::handle(K::ACTOR, || {
            match m {
                ControllerMsg::Process => self.process(ctx),
                ControllerMsg::Done(k) => {
                    self.queue.done(&k);
                }
                ControllerMsg::Stop => ctx.stop(),
            }
            self.kick(ctx);
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::ReplicaSetSpec;
    use k8s_openapi::api::core::v1::{PodCondition, PodSpec, PodStatus, PodTemplateSpec};

    fn rs(replicas: i32) -> ReplicaSet {
        ReplicaSet {
            metadata: ObjectMeta { name: Some("web-abc".into()), namespace: Some("demo".into()), uid: Some("rs-uid".into()), generation: Some(1), ..Default::default() },
            spec: ReplicaSetSpec { replicas: Some(replicas), template: Some(PodTemplateSpec { metadata: None, spec: Some(PodSpec::default()) }), ..Default::default() },
            status: None,
        }
    }

    fn pod(name: &str) -> PodBuilder {
        PodBuilder(pod_for(("apps/v1", "ReplicaSet"), &rs(1), name.into()))
    }

    struct PodBuilder(Pod);
    impl PodBuilder {
        fn on_node(mut self, n: &str) -> Self {
            self.0.spec.get_or_insert_with(Default::default).node_name = Some(n.into());
            self
        }
        fn ready(mut self) -> Self {
            self.0.status = Some(PodStatus { phase: Some("Running".into()), conditions: Some(vec![PodCondition { type_: "Ready".into(), status: "True".into(), ..Default::default() }]), ..Default::default() });
            self
        }
        fn terminating(mut self) -> Self {
            self.0.metadata.deletion_timestamp = Some(schema::object::now());
            self
        }
        fn build(self) -> Pod {
            self.0
        }
    }

    fn names() -> impl FnMut() -> String {
        let mut i = 0;
        move || {
            i += 1;
            format!("web-abc-{i}")
        }
    }

    #[test]
    fn creates_the_missing_pods_with_an_owner() {
        let a = reconcile(&rs(3), &[pod("p1").on_node("n1").ready().build()], true, &mut names());
        let creates: Vec<&Pod> = a.iter().filter_map(|x| if let Action::Create(p) = x { Some(p) } else { None }).collect();
        assert_eq!(creates.len(), 2);
        let owner = &creates[0].metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!((owner.kind.as_str(), owner.uid.as_str(), owner.controller), ("ReplicaSet", "rs-uid", Some(true)));
    }

    #[test]
    fn in_flight_writes_stop_double_creates_and_deletes() {
        let a = reconcile(&rs(3), &[pod("p1").build()], false, &mut names());
        assert!(a.iter().all(|x| matches!(x, Action::Status(_))), "{a:?}");
        let a = reconcile(&rs(0), &[pod("p1").build()], false, &mut names());
        assert!(a.iter().all(|x| matches!(x, Action::Status(_))), "{a:?}");
    }

    #[test]
    fn finished_pods_are_replaced_not_deleted() {
        let mut done = pod("done").on_node("n1").build();
        done.status = Some(PodStatus { phase: Some("Succeeded".into()), ..Default::default() });
        let a = reconcile(&rs(1), &[done], true, &mut names());
        assert_eq!(a.iter().filter(|x| matches!(x, Action::Create(_))).count(), 1);
        assert!(a.iter().all(|x| !matches!(x, Action::Delete(_))));
    }

    #[test]
    fn created_pods_carry_the_template_and_namespace() {
        let mut set = rs(1);
        let labels: std::collections::BTreeMap<String, String> = [("app".to_string(), "web".to_string())].into();
        set.spec.template = Some(PodTemplateSpec { metadata: Some(ObjectMeta { labels: Some(labels.clone()), ..Default::default() }), spec: Some(PodSpec { restart_policy: Some("Always".into()), ..Default::default() }) });
        let a = reconcile(&set, &[], true, &mut names());
        let Some(Action::Create(p)) = a.first() else { panic!("{a:?}") };
        assert_eq!((p.metadata.name.as_deref(), p.metadata.namespace.as_deref()), (Some("web-abc-1"), Some("demo")));
        assert_eq!(p.metadata.labels.as_ref(), Some(&labels));
        assert_eq!(p.spec.as_ref().and_then(|s| s.restart_policy.as_deref()), Some("Always"));
    }

    #[test]
    fn unchanged_status_is_not_rewritten() {
        let mut set = rs(1);
        let owned = [pod("a").on_node("n").ready().build()];
        let a = reconcile(&set, &owned, true, &mut names());
        let Some(Action::Status(st)) = a.last().cloned() else { panic!("{a:?}") };
        set.status = Some(st);
        assert!(reconcile(&set, &owned, true, &mut names()).is_empty());
    }

    #[test]
    fn random_names_use_the_safe_alphabet() {
        let s = random_suffix();
        assert_eq!(s.len(), 5);
        assert!(s.bytes().all(|b| ALPHANUMS.contains(&b)), "{s}");
    }

    #[test]
    fn terminating_pods_do_not_count() {
        let a = reconcile(&rs(1), &[pod("p1").on_node("n1").terminating().build()], true, &mut names());
        assert_eq!(a.iter().filter(|x| matches!(x, Action::Create(_))).count(), 1);
    }

    #[test]
    fn deletes_unscheduled_then_unready_first() {
        let owned = vec![pod("ready").on_node("n1").ready().build(), pod("unready").on_node("n1").build(), pod("pending").build()];
        let a = reconcile(&rs(1), &owned, true, &mut names());
        let deleted: Vec<String> = a.iter().filter_map(|x| if let Action::Delete(p) = x { p.metadata.name.clone() } else { None }).collect();
        assert_eq!(deleted, vec!["pending".to_string(), "unready".to_string()]);
    }

    #[test]
    fn status_counts_ready_pods() {
        let a = reconcile(&rs(2), &[pod("a").on_node("n").ready().build(), pod("b").on_node("n").build()], true, &mut names());
        let st = a.iter().find_map(|x| if let Action::Status(s) = x { Some(s.clone()) } else { None }).unwrap();
        assert_eq!((st.replicas, st.ready_replicas), (2, Some(1)));
    }

    /// Records each create a pass asks for and takes `took` to carry a pass out, as the
    /// store does under load; nothing it writes comes back on a watch by itself.
    struct SlowWriter {
        created: std::sync::Mutex<Vec<String>>,
        took: std::time::Duration,
    }

    impl Writer for SlowWriter {
        fn execute(&self, _rs: ReplicaSet, actions: Vec<Action>) -> BoxFuture<'static, Vec<String>> {
            let mut c = self.created.lock().unwrap();
            c.extend(actions.iter().filter_map(|a| if let Action::Create(p) = a { p.metadata.name.clone() } else { None }));
            let took = self.took;
            Box::pin(async move {
                tokio::time::sleep(took).await;
                Vec::new()
            })
        }
    }

    impl SlowWriter {
        fn created(&self) -> Vec<String> {
            self.created.lock().unwrap().clone()
        }
    }

    async fn until(cond: impl Fn() -> bool) {
        for _ in 0..10_000 {
            if cond() {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("condition never held");
    }

    /// The actor, not only `reconcile`: a pass whose writes take longer than the old 30 s
    /// expectation window, while the pod watch lags behind, must not create again.
    #[test]
    fn a_pass_longer_than_the_old_window_creates_each_pod_once() {
        actix::System::new().block_on(async {
            tokio::time::pause();
            let writer = Arc::new(SlowWriter { created: Default::default(), took: std::time::Duration::from_secs(45) });
            let (rs_tx, rs_rx) = futures::channel::mpsc::unbounded::<InformerEvent<ReplicaSet>>();
            let (pod_tx, pod_rx) = futures::channel::mpsc::unbounded::<InformerEvent<Pod>>();
            let w = writer.clone();
            let _addr = ReplicaSetController::create(move |ctx| {
                ctx.add_stream(rs_rx);
                ctx.add_stream(pod_rx);
                ReplicaSetController::with_writer(w)
            });
            rs_tx.unbounded_send(InformerEvent::Listed(vec![rs(10)], 1)).unwrap();
            pod_tx.unbounded_send(InformerEvent::Listed(Vec::new(), 1)).unwrap();
            until(|| writer.created().len() == 10).await;
            // The pass is still writing 45 s later; only three of its pods have come back.
            tokio::time::sleep(std::time::Duration::from_secs(50)).await;
            let made = writer.created();
            for (i, name) in made.iter().take(3).enumerate() {
                pod_tx.unbounded_send(InformerEvent::Applied(pod(name).build(), 2 + i as u64)).unwrap();
            }
            // Resyncs and the pod events run more passes; none may create.
            tokio::time::sleep(std::time::Duration::from_secs(95)).await;
            assert_eq!(writer.created().len(), 10, "created again from a lagging cache: {:?}", writer.created());
            for (i, name) in made.iter().skip(3).enumerate() {
                pod_tx.unbounded_send(InformerEvent::Applied(pod(name).build(), 10 + i as u64)).unwrap();
            }
            tokio::time::sleep(std::time::Duration::from_secs(95)).await;
            assert_eq!(writer.created().len(), 10);
            // A pod that really goes away is replaced, once.
            pod_tx.unbounded_send(InformerEvent::Deleted(pod(&made[0]).build(), 30)).unwrap();
            until(|| writer.created().len() == 11).await;
            tokio::time::sleep(std::time::Duration::from_secs(95)).await;
            assert_eq!(writer.created().len(), 11);
        });
    }
}
