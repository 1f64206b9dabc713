//! The ReplicaSet controller: keeps `spec.replicas` pods matching each ReplicaSet alive.
//! `reconcile` is pure; the actor keeps the caches (ReplicaSets, pods indexed by owner),
//! expectations for its own in-flight creates and deletes, and carries the actions out.

use super::queue::WorkQueue;
use super::{delete_pod_gracefully, events, owner_uid, ControllerMsg};
use actix::prelude::*;
use bus::informer::InformerEvent;
use bus::Client;
use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetStatus};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

const ACTOR: &str = "replicaset-controller";
/// Expectations older than this are dropped: the watch event was lost or the write failed.
const EXPECTATION_TTL: Duration = Duration::from_secs(30);

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

fn pod_for(rs: &ReplicaSet, name: String) -> Pod {
    let tpl = rs.spec.template.clone().unwrap_or_default();
    let tmeta = tpl.metadata.unwrap_or_default();
    Pod {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: rs.metadata.namespace.clone(),
            labels: tmeta.labels,
            annotations: tmeta.annotations,
            owner_references: Some(vec![OwnerReference {
                api_version: "apps/v1".into(),
                kind: "ReplicaSet".into(),
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
/// `expected_creates` counts pods it created that the cache has not seen yet.
pub fn reconcile(rs: &ReplicaSet, owned: &[Pod], expected_creates: usize, new_name: &mut dyn FnMut() -> String) -> Vec<Action> {
    let want = rs.spec.replicas.unwrap_or(1).max(0) as usize;
    let mut active: Vec<&Pod> = owned.iter().filter(|p| is_active(p)).collect();
    let have = active.len() + expected_creates;
    let mut actions = Vec::new();
    if rs.metadata.deletion_timestamp.is_none() {
        if have < want {
            // Slow start is left out: one ReplicaSet's creates are few in this cluster.
            for _ in 0..(want - have) {
                actions.push(Action::Create(pod_for(rs, new_name())));
            }
        } else if active.len() > want {
            active.sort_by_key(|p| deletion_rank(p));
            for p in active.iter().take(active.len() - want) {
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

pub struct ReplicaSetController {
    client: Client,
    sets: HashMap<String, ReplicaSet>,
    pods: HashMap<String, Pod>,
    /// Pod keys by their controlling owner's uid.
    by_owner: HashMap<String, HashSet<String>>,
    /// Names of pods created but not yet seen, per ReplicaSet key.
    expected: HashMap<String, (HashSet<String>, Instant)>,
    queue: WorkQueue,
    scheduled: bool,
}

fn key_of(meta: &ObjectMeta) -> String {
    format!("{}/{}", meta.namespace.as_deref().unwrap_or(""), meta.name.as_deref().unwrap_or(""))
}

impl ReplicaSetController {
    pub fn new(client: Client) -> Self {
        ReplicaSetController { client, sets: HashMap::new(), pods: HashMap::new(), by_owner: HashMap::new(), expected: HashMap::new(), queue: WorkQueue::default(), scheduled: false }
    }

    fn owner_key(&self, p: &Pod) -> Option<String> {
        let uid = owner_uid(&p.metadata, "ReplicaSet")?;
        let ns = p.metadata.namespace.as_deref().unwrap_or("");
        let name = p.metadata.owner_references.as_ref()?.iter().find(|o| o.uid == uid)?.name.clone();
        Some(format!("{ns}/{name}"))
    }

    fn put_pod(&mut self, p: Pod) {
        let key = key_of(&p.metadata);
        self.drop_pod(&key);
        if let Some(uid) = owner_uid(&p.metadata, "ReplicaSet") {
            self.by_owner.entry(uid).or_default().insert(key.clone());
        }
        if let Some(rs) = self.owner_key(&p) {
            if let Some((names, _)) = self.expected.get_mut(&rs) {
                names.remove(p.metadata.name.as_deref().unwrap_or(""));
            }
            self.queue.add(rs);
        }
        self.pods.insert(key, p);
    }

    fn drop_pod(&mut self, key: &str) {
        if let Some(old) = self.pods.remove(key) {
            if let Some(uid) = owner_uid(&old.metadata, "ReplicaSet") {
                if let Some(s) = self.by_owner.get_mut(&uid) {
                    s.remove(key);
                }
            }
            if let Some(rs) = self.owner_key(&old) {
                self.queue.add(rs);
            }
        }
    }

    fn kick(&mut self, ctx: &mut Context<Self>) {
        if !self.scheduled && !self.queue.is_empty() {
            self.scheduled = true;
            ctx.notify(ControllerMsg::Process);
        }
    }

    fn process(&mut self, ctx: &mut Context<Self>) {
        self.scheduled = false;
        for key in self.queue.take() {
            let Some(rs) = self.sets.get(&key).cloned() else {
                self.expected.remove(&key);
                self.queue.done(&key);
                continue;
            };
            let uid = rs.metadata.uid.clone().unwrap_or_default();
            let owned: Vec<Pod> = self.by_owner.get(&uid).map(|ks| ks.iter().filter_map(|k| self.pods.get(k).cloned()).collect()).unwrap_or_default();
            let pending = match self.expected.get(&key) {
                Some((names, at)) if at.elapsed() < EXPECTATION_TTL => names.len(),
                _ => 0,
            };
            let rs_name = rs.metadata.name.clone().unwrap_or_default();
            let actions = reconcile(&rs, &owned, pending, &mut || format!("{rs_name}-{}", random_suffix()));
            if actions.is_empty() {
                self.queue.done(&key);
                continue;
            }
            let created: HashSet<String> = actions.iter().filter_map(|a| if let Action::Create(p) = a { p.metadata.name.clone() } else { None }).collect();
            if !created.is_empty() {
                let e = self.expected.entry(key.clone()).or_insert_with(|| (HashSet::new(), Instant::now()));
                e.0.extend(created);
                e.1 = Instant::now();
            }
            let client = self.client.clone();
            let addr = ctx.address();
            tokio::spawn(async move {
                execute(&client, &rs, actions).await;
                addr.do_send(ControllerMsg::Done(key));
            });
        }
    }
}

async fn execute(client: &Client, rs: &ReplicaSet, actions: Vec<Action>) {
    for a in actions {
        match a {
            Action::Create(p) => {
                let name = p.metadata.name.clone().unwrap_or_default();
                match client.create(&p).await {
                    Ok(_) => events::record(client, events::event(events::reference(rs), "Normal", "SuccessfulCreate", &format!("Created pod: {name}"), "replicaset-controller")),
                    Err(e) => {
                        tracing::warn!(pod = %name, error = %e, "creating pod failed");
                        events::record(client, events::event(events::reference(rs), "Warning", "FailedCreate", &format!("Error creating: {e}"), "replicaset-controller"));
                    }
                }
            }
            Action::Delete(p) => {
                let name = p.metadata.name.clone().unwrap_or_default();
                match delete_pod_gracefully(client, &p).await {
                    Ok(()) => events::record(client, events::event(events::reference(rs), "Normal", "SuccessfulDelete", &format!("Deleted pod: {name}"), "replicaset-controller")),
                    Err(e) => tracing::warn!(pod = %name, error = %e, "deleting pod failed"),
                }
            }
            Action::Status(st) => {
                super::update_with_retry::<ReplicaSet, _>(client, rs.metadata.namespace.as_deref(), rs.metadata.name.as_deref().unwrap_or(""), |cur| {
                    cur.status = Some(st.clone());
                })
                .await;
            }
        }
    }
}

impl Actor for ReplicaSetController {
    type Context = Context<Self>;
    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(super::RESYNC, |act, ctx| {
            let keys: Vec<String> = act.sets.keys().cloned().collect();
            for k in keys {
                act.queue.add(k);
            }
            act.kick(ctx);
        });
    }
}

impl StreamHandler<InformerEvent<ReplicaSet>> for ReplicaSetController {
    fn handle(&mut self, ev: InformerEvent<ReplicaSet>, ctx: &mut Context<Self>) {
        bus::metrics::handle(ACTOR, || {
            match ev {
                InformerEvent::Listed(items, _) => {
                    self.sets = items.into_iter().map(|r| (key_of(&r.metadata), r)).collect();
                    let keys: Vec<String> = self.sets.keys().cloned().collect();
                    keys.into_iter().for_each(|k| self.queue.add(k));
                }
                InformerEvent::Applied(r, _) => {
                    let k = key_of(&r.metadata);
                    self.sets.insert(k.clone(), r);
                    self.queue.add(k);
                }
                InformerEvent::Deleted(r, _) => {
                    let k = key_of(&r.metadata);
                    self.sets.remove(&k);
                    self.expected.remove(&k);
                }
            }
            self.kick(ctx);
        })
    }
    fn finished(&mut self, _: &mut Context<Self>) {}
}

impl StreamHandler<InformerEvent<Pod>> for ReplicaSetController {
    fn handle(&mut self, ev: InformerEvent<Pod>, ctx: &mut Context<Self>) {
        bus::metrics::handle(ACTOR, || {
            match ev {
                InformerEvent::Listed(items, _) => {
                    let keys: Vec<String> = self.pods.keys().cloned().collect();
                    keys.iter().for_each(|k| self.drop_pod(k));
                    items.into_iter().for_each(|p| self.put_pod(p));
                }
                InformerEvent::Applied(p, _) => self.put_pod(p),
                InformerEvent::Deleted(p, _) => self.drop_pod(&key_of(&p.metadata)),
            }
            self.kick(ctx);
        })
    }
    fn finished(&mut self, _: &mut Context<Self>) {}
}

impl Handler<ControllerMsg> for ReplicaSetController {
    type Result = ();
    fn handle(&mut self, m: ControllerMsg, ctx: &mut Context<Self>) {
        bus::metrics::handle(ACTOR, || {
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
        PodBuilder(pod_for(&rs(1), name.into()))
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
        let a = reconcile(&rs(3), &[pod("p1").on_node("n1").ready().build()], 0, &mut names());
        let creates: Vec<&Pod> = a.iter().filter_map(|x| if let Action::Create(p) = x { Some(p) } else { None }).collect();
        assert_eq!(creates.len(), 2);
        let owner = &creates[0].metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!((owner.kind.as_str(), owner.uid.as_str(), owner.controller), ("ReplicaSet", "rs-uid", Some(true)));
    }

    #[test]
    fn expectations_stop_double_creates() {
        let a = reconcile(&rs(3), &[pod("p1").build()], 2, &mut names());
        assert!(a.iter().all(|x| !matches!(x, Action::Create(_))));
    }

    #[test]
    fn terminating_pods_do_not_count() {
        let a = reconcile(&rs(1), &[pod("p1").on_node("n1").terminating().build()], 0, &mut names());
        assert_eq!(a.iter().filter(|x| matches!(x, Action::Create(_))).count(), 1);
    }

    #[test]
    fn deletes_unscheduled_then_unready_first() {
        let owned = vec![pod("ready").on_node("n1").ready().build(), pod("unready").on_node("n1").build(), pod("pending").build()];
        let a = reconcile(&rs(1), &owned, 0, &mut names());
        let deleted: Vec<String> = a.iter().filter_map(|x| if let Action::Delete(p) = x { p.metadata.name.clone() } else { None }).collect();
        assert_eq!(deleted, vec!["pending".to_string(), "unready".to_string()]);
    }

    #[test]
    fn status_counts_ready_pods() {
        let a = reconcile(&rs(2), &[pod("a").on_node("n").ready().build(), pod("b").on_node("n").build()], 0, &mut names());
        let st = a.iter().find_map(|x| if let Action::Status(s) = x { Some(s.clone()) } else { None }).unwrap();
        assert_eq!((st.replicas, st.ready_replicas), (2, Some(1)));
    }
}
