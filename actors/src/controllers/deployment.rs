//! The Deployment controller: one ReplicaSet per pod template (named by the template's
//! hash), scaled up and the old ones down as a rolling update allows, and the Deployment's
//! status summed from its ReplicaSets. `reconcile` is pure; the actor is a shell.

use super::queue::WorkQueue;
use super::{events, owner_uid, ControllerMsg};
use actix::prelude::*;
use bus::informer::InformerEvent;
use bus::Client;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentCondition, DeploymentStatus, ReplicaSet, ReplicaSetSpec};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::collections::{BTreeMap, HashMap, HashSet};

const ACTOR: &str = "deployment-controller";
pub const HASH_LABEL: &str = "pod-template-hash";

#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    CreateReplicaSet(ReplicaSet),
    Scale { name: String, from: i32, to: i32 },
    Status(DeploymentStatus),
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

fn new_replica_set(d: &Deployment, hash: &str) -> ReplicaSet {
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
    let Some(new) = new else {
        actions.push(Action::CreateReplicaSet(new_replica_set(d, &hash)));
        return actions;
    };
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
    let available_total: i32 = owned.iter().map(|r| status_of(r).2).sum();
    let mut budget = if recreate { i32::MAX } else { (available_total - (want - unavailable)).max(0) };
    let mut olds: Vec<&&ReplicaSet> = old.iter().filter(|r| replicas_of(r) > 0).collect();
    olds.sort_by_key(|r| r.metadata.creation_timestamp.as_ref().map(|t| t.0.to_string()).unwrap_or_default());
    for r in olds {
        // Replicas that are not available can always go: they serve nobody.
        let cur = replicas_of(r);
        let unavailable_here = cur - status_of(r).2;
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
    let conditions = vec![
        if available >= want - resolve(None, want, false, 25) {
            cond("Available", true, "MinimumReplicasAvailable", "Deployment has minimum availability.".into())
        } else {
            cond("Available", false, "MinimumReplicasUnavailable", "Deployment does not have minimum availability.".into())
        },
        if complete {
            cond("Progressing", true, "NewReplicaSetAvailable", format!("ReplicaSet \"{name}\" has successfully progressed."))
        } else {
            cond("Progressing", true, "ReplicaSetUpdated", format!("ReplicaSet \"{name}\" is progressing."))
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
    client: Client,
    deployments: HashMap<String, Deployment>,
    sets: HashMap<String, ReplicaSet>,
    by_owner: HashMap<String, HashSet<String>>,
    queue: WorkQueue,
    scheduled: bool,
}

fn key_of(meta: &ObjectMeta) -> String {
    format!("{}/{}", meta.namespace.as_deref().unwrap_or(""), meta.name.as_deref().unwrap_or(""))
}

impl DeploymentController {
    pub fn new(client: Client) -> Self {
        DeploymentController { client, deployments: HashMap::new(), sets: HashMap::new(), by_owner: HashMap::new(), queue: WorkQueue::default(), scheduled: false }
    }

    fn owner_key(rs: &ReplicaSet) -> Option<String> {
        let uid = owner_uid(&rs.metadata, "Deployment")?;
        let name = rs.metadata.owner_references.as_ref()?.iter().find(|o| o.uid == uid)?.name.clone();
        Some(format!("{}/{name}", rs.metadata.namespace.as_deref().unwrap_or("")))
    }

    fn put_rs(&mut self, rs: ReplicaSet) {
        let key = key_of(&rs.metadata);
        self.drop_rs(&key);
        if let Some(uid) = owner_uid(&rs.metadata, "Deployment") {
            self.by_owner.entry(uid).or_default().insert(key.clone());
        }
        if let Some(d) = Self::owner_key(&rs) {
            self.queue.add(d);
        }
        self.sets.insert(key, rs);
    }

    fn drop_rs(&mut self, key: &str) {
        if let Some(old) = self.sets.remove(key) {
            if let Some(uid) = owner_uid(&old.metadata, "Deployment") {
                if let Some(s) = self.by_owner.get_mut(&uid) {
                    s.remove(key);
                }
            }
            if let Some(d) = Self::owner_key(&old) {
                self.queue.add(d);
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
            let Some(d) = self.deployments.get(&key).cloned() else {
                self.queue.done(&key);
                continue;
            };
            let uid = d.metadata.uid.clone().unwrap_or_default();
            let owned: Vec<ReplicaSet> = self.by_owner.get(&uid).map(|ks| ks.iter().filter_map(|k| self.sets.get(k).cloned()).collect()).unwrap_or_default();
            let actions: Vec<Action> = reconcile(&d, &owned).into_iter().filter(|a| !matches!(a, Action::Status(s) if same_status(d.status.as_ref(), s))).collect();
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
                let ok = super::update_with_retry::<ReplicaSet, _>(client, ns, &name, |rs| {
                    rs.spec.replicas = Some(to);
                    rs.metadata.annotations.get_or_insert_with(BTreeMap::new).insert("deployment.kubernetes.io/desired-replicas".into(), want.to_string());
                })
                .await;
                if ok {
                    let verb = if to > from { "up" } else { "down" };
                    events::record(client, events::event(events::reference(d), "Normal", "ScalingReplicaSet", &format!("Scaled {verb} replica set {name} from {from} to {to}"), "deployment-controller"));
                }
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
        ctx.run_interval(super::RESYNC, |act, ctx| {
            let keys: Vec<String> = act.deployments.keys().cloned().collect();
            keys.into_iter().for_each(|k| act.queue.add(k));
            act.kick(ctx);
        });
    }
}

impl StreamHandler<InformerEvent<Deployment>> for DeploymentController {
    fn handle(&mut self, ev: InformerEvent<Deployment>, ctx: &mut Context<Self>) {
        bus::metrics::handle(ACTOR, || {
            match ev {
                InformerEvent::Listed(items, _) => {
                    self.deployments = items.into_iter().map(|d| (key_of(&d.metadata), d)).collect();
                    let keys: Vec<String> = self.deployments.keys().cloned().collect();
                    keys.into_iter().for_each(|k| self.queue.add(k));
                }
                InformerEvent::Applied(d, _) => {
                    let k = key_of(&d.metadata);
                    self.deployments.insert(k.clone(), d);
                    self.queue.add(k);
                }
                InformerEvent::Deleted(d, _) => {
                    self.deployments.remove(&key_of(&d.metadata));
                }
            }
            self.kick(ctx);
        })
    }
    fn finished(&mut self, _: &mut Context<Self>) {}
}

impl StreamHandler<InformerEvent<ReplicaSet>> for DeploymentController {
    fn handle(&mut self, ev: InformerEvent<ReplicaSet>, ctx: &mut Context<Self>) {
        bus::metrics::handle(ACTOR, || {
            match ev {
                InformerEvent::Listed(items, _) => {
                    let keys: Vec<String> = self.sets.keys().cloned().collect();
                    keys.iter().for_each(|k| self.drop_rs(k));
                    items.into_iter().for_each(|r| self.put_rs(r));
                }
                InformerEvent::Applied(r, _) => self.put_rs(r),
                InformerEvent::Deleted(r, _) => self.drop_rs(&key_of(&r.metadata)),
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
        let rs = with(new_replica_set(&d, &template_hash(&d.spec.template, None)), 3, 3);
        let a = reconcile(&d, &[rs]);
        assert!(a.iter().any(|x| matches!(x, Action::Scale { to: 5, from: 3, .. })), "{a:?}");
    }

    #[test]
    fn template_change_rolls_to_a_new_replicaset() {
        let old_d = deploy(4, "busybox:1");
        let old = with(new_replica_set(&old_d, &template_hash(&old_d.spec.template, None)), 4, 4);
        let d = deploy(4, "busybox:2");
        let a = reconcile(&d, std::slice::from_ref(&old));
        assert!(matches!(a[0], Action::CreateReplicaSet(_)));
        let new = with(new_replica_set(&d, &template_hash(&d.spec.template, None)), 0, 0);
        let a = reconcile(&d, &[old, new]);
        // 25% surge of 4 = 1 new pod; 25% unavailable of 4 = 1 old pod may go.
        assert!(a.iter().any(|x| matches!(x, Action::Scale { to: 1, from: 0, .. })), "{a:?}");
        assert!(a.iter().any(|x| matches!(x, Action::Scale { to: 3, from: 4, .. })), "{a:?}");
    }

    #[test]
    fn status_sums_the_replicasets() {
        let d = deploy(3, "busybox");
        let rs = with(new_replica_set(&d, "h"), 3, 2);
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
