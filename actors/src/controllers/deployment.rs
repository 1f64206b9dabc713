//! The Deployment controller: one ReplicaSet per pod template (named by the template's
//! hash), scaled up and the old ones down as a rolling update allows, and the Deployment's
//! status summed from its ReplicaSets. `reconcile` is pure; the actor is a shell.

use super::queue::WorkQueue;
use super::owned::{self, Cache, OwnedIndex};
use super::{events, ControllerMsg};
use actix::prelude::*;
use bus::informer::InformerEvent;
use bus::Client;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentCondition, DeploymentStatus, ReplicaSet, ReplicaSetSpec};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::collections::BTreeMap;

const ACTOR: &str = "deployment-controller";
pub const HASH_LABEL: &str = "pod-template-hash";
/// What `kubectl rollout history` lists: each template's ReplicaSet carries its revision.
pub const REVISION: &str = "deployment.kubernetes.io/revision";

#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    CreateReplicaSet(ReplicaSet),
    Scale { name: String, from: i32, to: i32 },
    /// A ReplicaSet whose template came back (a rollback) becomes the newest revision.
    SetRevision { name: String, revision: i64 },
    /// The Deployment itself shows the revision of its current ReplicaSet.
    DeploymentRevision(i64),
    /// An old, scaled-down ReplicaSet past `revisionHistoryLimit`.
    DeleteReplicaSet(String),
    Status(DeploymentStatus),
}

pub fn revision_of(meta: &ObjectMeta) -> i64 {
    meta.annotations.as_ref().and_then(|a| a.get(REVISION)).and_then(|r| r.parse().ok()).unwrap_or(0)
}

/// FNV-32a of the template's JSON, spelled with Kubernetes' safe alphabet.
pub fn template_hash(t: &PodTemplateSpec, collision_count: Option<i32>) -> String {
    let mut h: u32 = 0x811c9dc5;
    let mut feed = |bytes: &[u8]| {
        for b in bytes {
            h ^= *b as u32;
            h = h.wrapping_mul(0x01000193);
        }
    };
    feed(serde_json::to_string(t).unwrap_or_default().as_bytes());
    if let Some(c) = collision_count {
        feed(c.to_string().as_bytes());
    }
    const ALPHANUMS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    h.to_string().bytes().map(|b| ALPHANUMS[b as usize % ALPHANUMS.len()] as char).collect()
}

fn replicas_of(rs: &ReplicaSet) -> i32 {
    rs.spec.replicas.unwrap_or(0)
}

fn status_of(rs: &ReplicaSet) -> (i32, i32, i32) {
    let s = rs.status.clone().unwrap_or_default();
    (s.replicas, s.ready_replicas.unwrap_or(0), s.available_replicas.unwrap_or(0))
}

/// Resolves an int-or-percent against `total`, rounding up (surge) or down (unavailable).
fn resolve(v: Option<&IntOrString>, total: i32, round_up: bool, default_pct: i32) -> i32 {
    match v {
        Some(IntOrString::Int(i)) => *i,
        Some(IntOrString::String(s)) => {
            let pct = s.trim_end_matches('%').parse::<i32>().unwrap_or(default_pct);
            if round_up { (total * pct + 99) / 100 } else { total * pct / 100 }
        }
        None => {
            if round_up { (total * default_pct + 99) / 100 } else { total * default_pct / 100 }
        }
    }
}

fn new_replica_set(d: &Deployment, hash: &str, revision: i64) -> ReplicaSet {
    let spec = d.spec.clone();
    let mut template = spec.template.clone();
    let mut tmeta = template.metadata.take().unwrap_or_default();
    tmeta.labels.get_or_insert_with(BTreeMap::new).insert(HASH_LABEL.into(), hash.into());
    template.metadata = Some(tmeta.clone());
    let mut selector: LabelSelector = spec.selector.clone();
    selector.match_labels.get_or_insert_with(BTreeMap::new).insert(HASH_LABEL.into(), hash.into());
    let name = format!("{}-{hash}", d.metadata.name.clone().unwrap_or_default());
    let replicas = spec.replicas.unwrap_or(1);
    let mut annotations = BTreeMap::new();
    annotations.insert(REVISION.to_string(), revision.to_string());
    annotations.insert("deployment.kubernetes.io/desired-replicas".to_string(), replicas.to_string());
    annotations.insert("deployment.kubernetes.io/max-replicas".to_string(), (replicas + resolve(spec.strategy.as_ref().and_then(|s| s.rolling_update.as_ref()).and_then(|r| r.max_surge.as_ref()), replicas, true, 25)).to_string());
    ReplicaSet {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: d.metadata.namespace.clone(),
            labels: tmeta.labels.clone(),
            annotations: Some(annotations),
            owner_references: Some(vec![OwnerReference {
                api_version: "apps/v1".into(),
                kind: "Deployment".into(),
                name: d.metadata.name.clone().unwrap_or_default(),
                uid: d.metadata.uid.clone().unwrap_or_default(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            }]),
            ..Default::default()
        },
        spec: ReplicaSetSpec { replicas: Some(0), min_ready_seconds: spec.min_ready_seconds, selector, template: Some(template) },
        status: None,
    }
}

/// Decides what the Deployment needs given the ReplicaSets it owns.
pub fn reconcile(d: &Deployment, owned: &[ReplicaSet]) -> Vec<Action> {
    let spec = &d.spec;
    let want = spec.replicas.unwrap_or(1).max(0);
    let hash = template_hash(&spec.template, d.status.as_ref().and_then(|s| s.collision_count));
    let new_name = format!("{}-{hash}", d.metadata.name.as_deref().unwrap_or(""));
    let new = owned.iter().find(|r| r.metadata.name.as_deref() == Some(new_name.as_str()));
    let old: Vec<&ReplicaSet> = owned.iter().filter(|r| r.metadata.name.as_deref() != Some(new_name.as_str())).collect();
    let mut actions = Vec::new();
    if d.metadata.deletion_timestamp.is_some() {
        return actions;
    }
    let max_old = old.iter().map(|r| revision_of(&r.metadata)).max().unwrap_or(0);
    // History: scaled-down old ReplicaSets past the limit go, oldest revision first.
    let limit = spec.revision_history_limit.unwrap_or(10).max(0) as usize;
    let mut idle: Vec<&&ReplicaSet> = old.iter().filter(|r| replicas_of(r) == 0 && status_of(r).0 == 0).collect();
    idle.sort_by_key(|r| revision_of(&r.metadata));
    for r in idle.iter().take(idle.len().saturating_sub(limit)) {
        actions.push(Action::DeleteReplicaSet(r.metadata.name.clone().unwrap_or_default()));
    }
    let paused = spec.paused == Some(true);
    if paused {
        // A paused Deployment rolls nothing out; a change of replicas still reaches the
        // one ReplicaSet that runs (kube scales all of them in proportion).
        let running: Vec<&ReplicaSet> = owned.iter().filter(|r| replicas_of(r) > 0).collect();
        let target = new.filter(|_| running.len() <= 1).or(if running.len() == 1 { Some(running[0]) } else { None });
        if let Some(r) = target {
            if replicas_of(r) != want {
                actions.push(Action::Scale { name: r.metadata.name.clone().unwrap_or_default(), from: replicas_of(r), to: want });
            }
        }
        if let Some(n) = new.or(running.first().copied()) {
            actions.push(Action::Status(status(d, owned, n)));
        }
        return actions;
    }
    let Some(new) = new else {
        actions.push(Action::CreateReplicaSet(new_replica_set(d, &hash, max_old + 1)));
        return actions;
    };
    let mut revision = revision_of(&new.metadata);
    if revision <= max_old {
        revision = max_old + 1;
        actions.push(Action::SetRevision { name: new_name.clone(), revision });
    }
    if revision_of(&d.metadata) != revision {
        actions.push(Action::DeploymentRevision(revision));
    }
    let recreate = spec.strategy.as_ref().and_then(|s| s.type_.as_deref()) == Some("Recreate");
    let ru = spec.strategy.as_ref().and_then(|s| s.rolling_update.as_ref());
    let mut surge = resolve(ru.and_then(|r| r.max_surge.as_ref()), want, true, 25);
    let mut unavailable = resolve(ru.and_then(|r| r.max_unavailable.as_ref()), want, false, 25);
    if surge == 0 && unavailable == 0 {
        unavailable = 1;
    }
    let old_total: i32 = old.iter().map(|r| replicas_of(r)).sum();
    let new_replicas = replicas_of(new);
    let target_new = if recreate {
        if old.iter().any(|r| status_of(r).0 > 0 || replicas_of(r) > 0) { 0 } else { want }
    } else if old_total == 0 {
        want
    } else {
        if surge < 0 {
            surge = 0;
        }
        (want + surge - old_total).clamp(new_replicas.min(want), want)
    };
    if target_new != new_replicas {
        actions.push(Action::Scale { name: new_name.clone(), from: new_replicas, to: target_new });
    }
    // Old ReplicaSets go down as far as availability allows (all at once for Recreate).
    // A ReplicaSet counts no more available pods than its spec keeps: one just scaled
    // down still reports the pods it is about to delete, and counting them would scale
    // the old ones down twice for one step.
    let available_of = |r: &ReplicaSet| status_of(r).2.min(replicas_of(r));
    let available_total: i32 = owned.iter().map(|r| available_of(r)).sum();
    let mut budget = if recreate { i32::MAX } else { (available_total - (want - unavailable)).max(0) };
    let mut olds: Vec<&&ReplicaSet> = old.iter().filter(|r| replicas_of(r) > 0).collect();
    olds.sort_by_key(|r| r.metadata.creation_timestamp.as_ref().map(|t| t.0.to_string()).unwrap_or_default());
    for r in olds {
        // Replicas that are not available can always go: they serve nobody.
        let cur = replicas_of(r);
        let unavailable_here = cur - available_of(r);
        let down = (unavailable_here.max(0) + budget).min(cur);
        if down > 0 {
            budget -= (down - unavailable_here.max(0)).max(0);
            actions.push(Action::Scale { name: r.metadata.name.clone().unwrap_or_default(), from: cur, to: cur - down });
        }
    }
    actions.push(Action::Status(status(d, owned, new)));
    actions
}

pub fn status(d: &Deployment, owned: &[ReplicaSet], new: &ReplicaSet) -> DeploymentStatus {
    let want = d.spec.replicas.unwrap_or(1);
    let (replicas, ready, available) = owned.iter().map(status_of).fold((0, 0, 0), |a, b| (a.0 + b.0, a.1 + b.1, a.2 + b.2));
    let updated = status_of(new).0;
    let prev = d.status.clone().unwrap_or_default();
    let now = schema::object::now();
    let cond = |ty: &str, ok: bool, reason: &str, message: String| {
        let status = if ok { "True" } else { "False" };
        let old = prev.conditions.as_ref().and_then(|cs| cs.iter().find(|c| c.type_.as_deref() == Some(ty)));
        let same = old.map(|c| c.status.as_deref() == Some(status) && c.reason.as_deref() == Some(reason)).unwrap_or(false);
        DeploymentCondition {
            type_: Some(ty.into()),
            status: Some(status.into()),
            reason: Some(reason.into()),
            message: Some(message),
            last_transition_time: if same { old.and_then(|c| c.last_transition_time.clone()) } else { Some(now.clone()) },
            last_update_time: if same { old.and_then(|c| c.last_update_time.clone()) } else { Some(now.clone()) },
        }
    };
    let complete = updated == want && replicas == want && available == want;
    let name = new.metadata.name.clone().unwrap_or_default();
    // Progress: more pods updated, ready or available than the last status said.
    let progressed = updated > prev.updated_replicas.unwrap_or(0) || ready > prev.ready_replicas.unwrap_or(0) || available > prev.available_replicas.unwrap_or(0) || prev.observed_generation != d.metadata.generation;
    let last_progress = prev.conditions.as_ref().and_then(|cs| cs.iter().find(|c| c.type_.as_deref() == Some("Progressing"))).and_then(|c| c.last_update_time.clone());
    let deadline = d.spec.progress_deadline_seconds.filter(|_| d.spec.paused != Some(true));
    let timed_out = !complete && !progressed && deadline.is_some_and(|s| last_progress.is_some_and(|t| now.0.as_second() - t.0.as_second() > s as i64));
    let conditions = vec![
        if available >= want - resolve(None, want, false, 25) {
            cond("Available", true, "MinimumReplicasAvailable", "Deployment has minimum availability.".into())
        } else {
            cond("Available", false, "MinimumReplicasUnavailable", "Deployment does not have minimum availability.".into())
        },
        if d.spec.paused == Some(true) {
            let mut c = cond("Progressing", true, "DeploymentPaused", "Deployment is paused".into());
            c.status = Some("Unknown".into());
            c
        } else if complete {
            cond("Progressing", true, "NewReplicaSetAvailable", format!("ReplicaSet \"{name}\" has successfully progressed."))
        } else if timed_out || prev.conditions.iter().flatten().any(|c| c.reason.as_deref() == Some("ProgressDeadlineExceeded") && !progressed) {
            cond("Progressing", false, "ProgressDeadlineExceeded", format!("ReplicaSet \"{name}\" has timed out progressing."))
        } else {
            let mut c = cond("Progressing", true, "ReplicaSetUpdated", format!("ReplicaSet \"{name}\" is progressing."));
            if progressed {
                c.last_update_time = Some(now.clone());
            }
            c
        },
    ];
    DeploymentStatus {
        observed_generation: d.metadata.generation,
        replicas: Some(replicas),
        updated_replicas: Some(updated),
        ready_replicas: Some(ready),
        available_replicas: Some(available),
        unavailable_replicas: if want - available > 0 { Some(want - available) } else { None },
        conditions: Some(conditions),
        collision_count: prev.collision_count,
        terminating_replicas: None,
    }
}

/// Status equality that ignores condition timestamps, so unchanged status is not rewritten.
fn same_status(a: Option<&DeploymentStatus>, b: &DeploymentStatus) -> bool {
    let strip = |s: &DeploymentStatus| {
        let mut s = s.clone();
        if let Some(cs) = s.conditions.as_mut() {
            for c in cs.iter_mut() {
                c.last_transition_time = None;
                c.last_update_time = None;
            }
        }
        s
    };
    a.map(|a| strip(a) == strip(b)).unwrap_or(false)
}

pub struct DeploymentController {
    /// How often every object is reconciled again, events or not.
    resync: std::time::Duration,
    client: Client,
    deployments: Cache<Deployment>,
    sets: OwnedIndex<ReplicaSet>,
    queue: WorkQueue,
    /// Deployments mid-rollout are looked at again when their progress deadline could
    /// pass, even if nothing else happens; one timer per key.
    deadlines: BTreeMap<String, SpawnHandle>,
}

impl DeploymentController {
    /// Reconciles everything again every `d` (kube-controller-manager's resync), besides events.
    pub fn resync_every(mut self, d: std::time::Duration) -> Self {
        self.resync = d;
        self
    }

    pub fn new(client: Client) -> Self {
        let client = client.named(ACTOR);
        DeploymentController { resync: super::RESYNC, client, deployments: Cache::default(), sets: OwnedIndex::new("Deployment"), queue: WorkQueue::default(), deadlines: BTreeMap::new() }
    }

    fn kick(&mut self, ctx: &mut Context<Self>) {
        if self.queue.arm() {
            ctx.notify(ControllerMsg::Process);
        }
    }

    fn process(&mut self, ctx: &mut Context<Self>) {
        for key in self.queue.take_armed() {
            let Some(d) = self.deployments.get(&key).cloned() else {
                self.queue.done(&key);
                continue;
            };
            let uid = d.metadata.uid.clone().unwrap_or_default();
            let owned: Vec<ReplicaSet> = self.sets.owned_by(&uid);
            let actions: Vec<Action> = reconcile(&d, &owned).into_iter().filter(|a| !matches!(a, Action::Status(s) if same_status(d.status.as_ref(), s))).collect();
            let progressing = d.status.as_ref().and_then(|s| s.conditions.as_ref()).is_some_and(|cs| cs.iter().any(|c| c.type_.as_deref() == Some("Progressing") && c.reason.as_deref() == Some("ReplicaSetUpdated")));
            if let (true, Some(secs)) = (progressing, d.spec.progress_deadline_seconds) {
                if !self.deadlines.contains_key(&key) {
                    let k = key.clone();
                    let h = ctx.run_later(std::time::Duration::from_secs(secs.max(0) as u64 + 1), move |act, ctx| {
                        act.deadlines.remove(&k);
                        act.queue.add(k);
                        act.kick(ctx);
                    });
                    self.deadlines.insert(key.clone(), h);
                }
            }
            if actions.is_empty() {
                self.queue.done(&key);
                continue;
            }
            let client = self.client.clone();
            let addr = ctx.address();
            tokio::spawn(async move {
                execute(&client, &d, actions).await;
                addr.do_send(ControllerMsg::Done(key));
            });
        }
    }
}

async fn execute(client: &Client, d: &Deployment, actions: Vec<Action>) {
    let ns = d.metadata.namespace.as_deref();
    for a in actions {
        match a {
            Action::CreateReplicaSet(rs) => match client.create(&rs).await {
                Ok(_) => {}
                Err(e) if e.is_conflict() => {}
                Err(e) => tracing::warn!(error = %e, "creating ReplicaSet failed"),
            },
            Action::Scale { name, from, to } => {
                let want = d.spec.replicas.unwrap_or(1);
                // The count this write replaced: the cache may be behind, and a pass
                // repeated on a stale cache must not announce the same scaling twice.
                let replaced = std::sync::Mutex::new(None);
                let out = super::update_outcome::<ReplicaSet, _>(client, ns, &name, |rs| {
                    *replaced.lock().unwrap_or_else(|e| e.into_inner()) = Some(rs.spec.replicas.unwrap_or(0));
                    rs.spec.replicas = Some(to);
                    rs.metadata.annotations.get_or_insert_with(BTreeMap::new).insert("deployment.kubernetes.io/desired-replicas".into(), want.to_string());
                })
                .await;
                let from = replaced.into_inner().unwrap_or_else(|e| e.into_inner()).unwrap_or(from);
                if out == super::Outcome::Written && from != to {
                    let verb = if to > from { "up" } else { "down" };
                    events::record(client, events::event(events::reference(d), "Normal", "ScalingReplicaSet", &format!("Scaled {verb} replica set {name} from {from} to {to}"), ACTOR));
                }
            }
            Action::DeleteReplicaSet(name) => match client.delete::<ReplicaSet>(ns, &name, None).await {
                Ok(_) => {}
                Err(e) if e.is_not_found() => {}
                Err(e) => tracing::warn!(replicaset = %name, error = %e, "deleting an old ReplicaSet failed"),
            },
            Action::SetRevision { name, revision } => {
                super::update_with_retry::<ReplicaSet, _>(client, ns, &name, |rs| {
                    rs.metadata.annotations.get_or_insert_with(BTreeMap::new).insert(REVISION.into(), revision.to_string());
                })
                .await;
            }
            Action::DeploymentRevision(revision) => {
                super::update_with_retry::<Deployment, _>(client, ns, d.metadata.name.as_deref().unwrap_or(""), |cur| {
                    if cur.metadata.uid == d.metadata.uid {
                        cur.metadata.annotations.get_or_insert_with(BTreeMap::new).insert(REVISION.into(), revision.to_string());
                    }
                })
                .await;
            }
            Action::Status(st) => {
                super::update_with_retry::<Deployment, _>(client, ns, d.metadata.name.as_deref().unwrap_or(""), |cur| {
                    let mut st = st.clone();
                    st.observed_generation = st.observed_generation.min(cur.metadata.generation);
                    cur.status = Some(st);
                })
                .await;
            }
        }
    }
}

impl Actor for DeploymentController {
    type Context = Context<Self>;
    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(self.resync, |act, ctx| {
            let keys = act.deployments.keys();
            keys.into_iter().for_each(|k| act.queue.add(k));
            act.kick(ctx);
        });
    }
}

impl StreamHandler<InformerEvent<Deployment>> for DeploymentController {
    fn handle(&mut self, ev: InformerEvent<Deployment>, ctx: &mut Context<Self>) {
        bus::metrics::handle(ACTOR, || {
            let (requeue, _) = self.deployments.apply(ev);
            requeue.into_iter().for_each(|k| self.queue.add(k));
            self.kick(ctx);
        })
    }
    fn finished(&mut self, _: &mut Context<Self>) {}
}

impl StreamHandler<InformerEvent<ReplicaSet>> for DeploymentController {
    fn handle(&mut self, ev: InformerEvent<ReplicaSet>, ctx: &mut Context<Self>) {
        bus::metrics::handle(ACTOR, || {
            match ev {
                InformerEvent::Listed(items, _) => self.sets.replace_all(items).into_iter().for_each(|d| self.queue.add(d)),
                InformerEvent::Applied(r, _) => self.sets.put(r).into_iter().for_each(|d| self.queue.add(d)),
                InformerEvent::Deleted(r, _) => self.sets.remove(&owned::key_of(&r)).into_iter().for_each(|d| self.queue.add(d)),
            }
            self.kick(ctx);
        })
    }
    fn finished(&mut self, _: &mut Context<Self>) {}
}

impl Handler<ControllerMsg> for DeploymentController {
    type Result = ();
    fn handle(&mut self, m: ControllerMsg, ctx: &mut Context<Self>) {
        bus::metrics::handle(ACTOR, || {
            match m {
                ControllerMsg::Process => self.process(ctx),
                ControllerMsg::Done(k) => self.queue.done(&k),
                ControllerMsg::Stop => ctx.stop(),
            }
            self.kick(ctx);
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::{DeploymentSpec, ReplicaSetStatus};
    use k8s_openapi::api::core::v1::{Container, PodSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn deploy(replicas: i32, image: &str) -> Deployment {
        let labels: BTreeMap<String, String> = [("app".to_string(), "web".to_string())].into();
        Deployment {
            metadata: ObjectMeta { name: Some("web".into()), namespace: Some("demo".into()), uid: Some("d-uid".into()), generation: Some(1), ..Default::default() },
            spec: DeploymentSpec {
                replicas: Some(replicas),
                selector: LabelSelector { match_labels: Some(labels.clone()), ..Default::default() },
                template: PodTemplateSpec {
                    metadata: Some(ObjectMeta { labels: Some(labels), ..Default::default() }),
                    spec: Some(PodSpec { containers: vec![Container { name: "c".into(), image: Some(image.into()), ..Default::default() }], ..Default::default() }),
                },
                ..Default::default()
            },
            status: None,
        }
    }

    fn with(mut rs: ReplicaSet, replicas: i32, available: i32) -> ReplicaSet {
        rs.spec.replicas = Some(replicas);
        rs.status = Some(ReplicaSetStatus { replicas, ready_replicas: Some(available), available_replicas: Some(available), ..Default::default() });
        rs
    }

    fn current(d: &Deployment, replicas: i32, available: i32, revision: i64) -> ReplicaSet {
        with(new_replica_set(d, &template_hash(&d.spec.template, None), revision), replicas, available)
    }

    #[test]
    fn old_replicasets_past_the_history_limit_are_deleted_oldest_first() {
        let mut d = deploy(1, "v9");
        d.spec.revision_history_limit = Some(1);
        let mut owned: Vec<ReplicaSet> = (1..=3).map(|i| current(&deploy(1, &format!("v{i}")), 0, 0, i)).collect();
        owned.push(current(&d, 1, 1, 4));
        let deleted: Vec<String> = reconcile(&d, &owned).into_iter().filter_map(|a| if let Action::DeleteReplicaSet(n) = a { Some(n) } else { None }).collect();
        assert_eq!(deleted, vec![owned[0].metadata.name.clone().unwrap(), owned[1].metadata.name.clone().unwrap()]);
    }

    #[test]
    fn an_old_replicaset_just_scaled_down_is_not_scaled_down_again() {
        let mut d = deploy(4, "v2");
        d.spec.strategy = Some(k8s_openapi::api::apps::v1::DeploymentStrategy {
            type_: Some("RollingUpdate".into()),
            rolling_update: Some(k8s_openapi::api::apps::v1::RollingUpdateDeployment { max_surge: Some(IntOrString::Int(1)), max_unavailable: Some(IntOrString::Int(1)) }),
        });
        // The old set's spec went 4 → 3 a moment ago; its status still counts 4 available.
        let mut old = current(&deploy(4, "v1"), 3, 4, 1);
        old.status.as_mut().unwrap().replicas = 4;
        let new = current(&d, 2, 0, 2);
        let a = reconcile(&d, &[old.clone(), new]);
        let old_name = old.metadata.name.clone().unwrap();
        assert!(!a.iter().any(|x| matches!(x, Action::Scale { name, .. } if *name == old_name)), "{a:?}");
    }

    #[test]
    fn a_paused_deployment_rolls_nothing_out_but_still_scales() {
        let old = deploy(2, "v1");
        let mut d = deploy(3, "v2");
        d.spec.paused = Some(true);
        let running = current(&old, 2, 2, 1);
        let a = reconcile(&d, std::slice::from_ref(&running));
        assert!(!a.iter().any(|x| matches!(x, Action::CreateReplicaSet(_))), "{a:?}");
        assert!(a.iter().any(|x| matches!(x, Action::Scale { to: 3, .. })), "{a:?}");
        let Some(Action::Status(st)) = a.last() else { panic!("{a:?}") };
        let p = st.conditions.as_ref().unwrap().iter().find(|c| c.type_.as_deref() == Some("Progressing")).unwrap();
        assert_eq!((p.status.as_deref(), p.reason.as_deref()), (Some("Unknown"), Some("DeploymentPaused")));
    }

    #[test]
    fn no_progress_within_the_deadline_is_reported() {
        let mut d = deploy(2, "v1");
        d.spec.progress_deadline_seconds = Some(60);
        let rs = current(&d, 2, 0, 1);
        let mut st = status(&d, std::slice::from_ref(&rs), &rs);
        // The last progress was two minutes ago.
        let ago = Time(jiff::Timestamp::from_second(schema::object::now().0.as_second() - 120).unwrap());
        for c in st.conditions.iter_mut().flatten() {
            c.last_update_time = Some(ago.clone());
        }
        d.status = Some(st);
        let st = status(&d, std::slice::from_ref(&rs), &rs);
        let p = st.conditions.unwrap().into_iter().find(|c| c.type_.as_deref() == Some("Progressing")).unwrap();
        assert_eq!((p.status.as_deref(), p.reason.as_deref()), (Some("False"), Some("ProgressDeadlineExceeded")));
    }

    #[test]
    fn first_pass_creates_the_replicaset_named_by_hash() {
        let d = deploy(3, "busybox");
        let a = reconcile(&d, &[]);
        let Action::CreateReplicaSet(rs) = &a[0] else { panic!("{a:?}") };
        let hash = template_hash(&d.spec.template, None);
        assert_eq!(rs.metadata.name.as_deref(), Some(format!("web-{hash}").as_str()));
        assert_eq!(rs.metadata.labels.as_ref().unwrap().get(HASH_LABEL), Some(&hash));
        assert_eq!(rs.spec.selector.match_labels.as_ref().unwrap().get(HASH_LABEL), Some(&hash));
        assert_eq!(rs.metadata.owner_references.as_ref().unwrap()[0].uid, "d-uid");
    }

    #[test]
    fn scales_the_new_replicaset_to_the_spec() {
        let d = deploy(5, "busybox");
        let rs = with(new_replica_set(&d, &template_hash(&d.spec.template, None), 1), 3, 3);
        let a = reconcile(&d, &[rs]);
        assert!(a.iter().any(|x| matches!(x, Action::Scale { to: 5, from: 3, .. })), "{a:?}");
    }

    #[test]
    fn template_change_rolls_to_a_new_replicaset() {
        let old_d = deploy(4, "busybox:1");
        let old = with(new_replica_set(&old_d, &template_hash(&old_d.spec.template, None), 1), 4, 4);
        let d = deploy(4, "busybox:2");
        let a = reconcile(&d, std::slice::from_ref(&old));
        let Action::CreateReplicaSet(created) = &a[0] else { panic!("{a:?}") };
        assert_eq!(revision_of(&created.metadata), 2, "the next revision");
        assert_eq!(created.spec.replicas, Some(0), "scaled up by the next pass, as the rollout allows");
        let new = with(new_replica_set(&d, &template_hash(&d.spec.template, None), 2), 0, 0);
        let a = reconcile(&d, &[old, new]);
        // 25% surge of 4 = 1 new pod; 25% unavailable of 4 = 1 old pod may go.
        assert!(a.iter().any(|x| matches!(x, Action::Scale { to: 1, from: 0, .. })), "{a:?}");
        assert!(a.iter().any(|x| matches!(x, Action::Scale { to: 3, from: 4, .. })), "{a:?}");
    }

    fn scales(a: &[Action]) -> Vec<(i32, i32)> {
        a.iter().filter_map(|x| if let Action::Scale { from, to, .. } = x { Some((*from, *to)) } else { None }).collect()
    }

    #[test]
    fn scales_down_when_the_spec_shrinks() {
        let d = deploy(2, "busybox");
        let rs = with(new_replica_set(&d, &template_hash(&d.spec.template, None), 1), 5, 5);
        assert_eq!(scales(&reconcile(&d, &[rs])), vec![(5, 2)]);
    }

    #[test]
    fn rolling_update_waits_for_new_pods_before_removing_more_old_ones() {
        let old_d = deploy(4, "busybox:1");
        let d = deploy(4, "busybox:2");
        let hash = |d: &Deployment| template_hash(&d.spec.template, None);
        // Mid-rollout: old at 3 (all available), new at 2 (none available yet): total 5 =
        // 4 + 1 surge, and 3 available = 4 - 1 unavailable, so nothing may move.
        let old = with(new_replica_set(&old_d, &hash(&old_d), 1), 3, 3);
        let new = with(new_replica_set(&d, &hash(&d), 2), 2, 0);
        assert!(scales(&reconcile(&d, &[old.clone(), new])).is_empty());
        // Once the new pods are available, old ones may go as long as 3 stay available:
        // 5 available - 3 = 2 of the old ReplicaSet's 3.
        let new = with(new_replica_set(&d, &hash(&d), 2), 2, 2);
        assert_eq!(scales(&reconcile(&d, &[old, new])), vec![(3, 1)]);
    }

    #[test]
    fn recreate_empties_the_old_replicasets_first() {
        let old_d = deploy(3, "busybox:1");
        let mut d = deploy(3, "busybox:2");
        d.spec.strategy = Some(k8s_openapi::api::apps::v1::DeploymentStrategy { type_: Some("Recreate".into()), rolling_update: None });
        let old = with(new_replica_set(&old_d, &template_hash(&old_d.spec.template, None), 1), 3, 3);
        let new = with(new_replica_set(&d, &template_hash(&d.spec.template, None), 2), 0, 0);
        assert_eq!(scales(&reconcile(&d, &[old.clone(), new.clone()])), vec![(3, 0)]);
        // Old scaled to 0 but its pods still terminating: the new one waits.
        let draining = with(old.clone(), 0, 0);
        let mut draining = draining;
        draining.status.as_mut().unwrap().replicas = 2;
        assert!(scales(&reconcile(&d, &[draining, new.clone()])).is_empty());
        assert_eq!(scales(&reconcile(&d, &[with(old, 0, 0), new])), vec![(0, 3)]);
    }

    #[test]
    fn rollback_makes_the_old_replicaset_the_newest_revision() {
        let d = deploy(2, "busybox:1");
        let back = with(new_replica_set(&d, &template_hash(&d.spec.template, None), 1), 2, 2);
        let d2 = deploy(2, "busybox:2");
        let other = with(new_replica_set(&d2, &template_hash(&d2.spec.template, None), 2), 0, 0);
        let a = reconcile(&d, &[back, other]);
        assert!(a.contains(&Action::SetRevision { name: format!("web-{}", template_hash(&d.spec.template, None)), revision: 3 }), "{a:?}");
        assert!(a.contains(&Action::DeploymentRevision(3)), "{a:?}");
    }

    #[test]
    fn replicaset_carries_owner_labels_and_annotations() {
        let d = deploy(3, "busybox");
        let Action::CreateReplicaSet(rs) = &reconcile(&d, &[])[0] else { panic!() };
        let owner = &rs.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!((owner.api_version.as_str(), owner.kind.as_str(), owner.name.as_str()), ("apps/v1", "Deployment", "web"));
        assert_eq!((owner.controller, owner.block_owner_deletion), (Some(true), Some(true)));
        let hash = template_hash(&d.spec.template, None);
        let tl = rs.spec.template.as_ref().and_then(|t| t.metadata.as_ref()).and_then(|m| m.labels.as_ref()).unwrap();
        assert_eq!((tl.get("app").map(String::as_str), tl.get(HASH_LABEL)), (Some("web"), Some(&hash)));
        let ann = rs.metadata.annotations.as_ref().unwrap();
        assert_eq!(ann.get(REVISION).map(String::as_str), Some("1"));
        assert_eq!(ann.get("deployment.kubernetes.io/desired-replicas").map(String::as_str), Some("3"));
        assert_eq!(ann.get("deployment.kubernetes.io/max-replicas").map(String::as_str), Some("4"));
        assert_eq!(rs.metadata.namespace.as_deref(), Some("demo"));
    }

    #[test]
    fn complete_rollout_reports_available_and_new_replicaset_available() {
        let d = deploy(3, "busybox");
        let rs = with(new_replica_set(&d, "h", 1), 3, 3);
        let st = status(&d, std::slice::from_ref(&rs), &rs);
        let cond = |t: &str| st.conditions.as_ref().unwrap().iter().find(|c| c.type_.as_deref() == Some(t)).cloned().unwrap();
        assert_eq!((cond("Available").status.as_deref(), cond("Available").reason.as_deref()), (Some("True"), Some("MinimumReplicasAvailable")));
        assert_eq!(cond("Progressing").reason.as_deref(), Some("NewReplicaSetAvailable"));
        assert_eq!((st.observed_generation, st.unavailable_replicas), (Some(1), None));
        // The same status again is recognised as unchanged despite fresh timestamps.
        let mut d2 = d.clone();
        d2.status = Some(st.clone());
        assert!(same_status(d2.status.as_ref(), &status(&d2, std::slice::from_ref(&rs), &rs)));
    }

    #[test]
    fn status_sums_the_replicasets() {
        let d = deploy(3, "busybox");
        let rs = with(new_replica_set(&d, "h", 1), 3, 2);
        let st = status(&d, std::slice::from_ref(&rs), &rs);
        assert_eq!((st.replicas, st.ready_replicas, st.available_replicas, st.updated_replicas), (Some(3), Some(2), Some(2), Some(3)));
        assert_eq!(st.unavailable_replicas, Some(1));
    }

    #[test]
    fn hash_is_stable() {
        let d = deploy(1, "busybox");
        let t = &d.spec.template;
        assert_eq!(template_hash(t, None), template_hash(t, None));
        assert_ne!(template_hash(t, None), template_hash(t, Some(1)));
    }
}
