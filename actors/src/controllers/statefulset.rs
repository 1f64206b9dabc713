//! The StatefulSet controller: pods `<name>-<ordinal>` with stable names, hostnames and
//! claims (`<template>-<name>-<ordinal>`, made before the pod and kept across its
//! replacements), created in order and waited for (OrderedReady) or all at once
//! (Parallel), updated from the highest ordinal down to the partition. `reconcile` is pure.

use super::daemonset::is_available;
use super::expectations::Expectations;
use super::owned::{self, Cache, OwnedIndex};
use super::queue::WorkQueue;
use super::replicaset::{create_checked, is_ready, Created};
use super::revisions::{self, Owner, RevisionAction, REVISION_HASH_LABEL};
use super::{delete_pod_gracefully, events, ControllerMsg};
use actix::prelude::*;
use bus::informer::InformerEvent;
use bus::Client;
use k8s_openapi::api::apps::v1::{ControllerRevision, StatefulSet, StatefulSetStatus};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, PersistentVolumeClaimVolumeSource, Pod, PodTemplateSpec, Volume};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use std::collections::BTreeMap;
use tokio::time::Instant;

const ACTOR: &str = "statefulset-controller";
pub const POD_NAME_LABEL: &str = "statefulset.kubernetes.io/pod-name";
pub const POD_INDEX_LABEL: &str = "apps.kubernetes.io/pod-index";

#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    CreateClaim(PersistentVolumeClaim),
    /// The claim's owner references as the retention policy wants them.
    ClaimOwners { name: String, owners: Vec<OwnerReference> },
    Create(Pod),
    Delete(Pod),
    Revision(RevisionAction),
    Status(StatefulSetStatus),
}

pub fn ordinal_of(set: &str, pod: &str) -> Option<i32> {
    pod.strip_prefix(set)?.strip_prefix('-')?.parse().ok().filter(|o: &i32| *o >= 0)
}

pub fn claim_name(template: &str, set: &str, ordinal: i32) -> String {
    format!("{template}-{set}-{ordinal}")
}

fn owner_ref(kind: &str, api_version: &str, meta: &ObjectMeta, controller: bool) -> OwnerReference {
    OwnerReference {
        api_version: api_version.into(),
        kind: kind.into(),
        name: meta.name.clone().unwrap_or_default(),
        uid: meta.uid.clone().unwrap_or_default(),
        controller: controller.then_some(true),
        block_owner_deletion: controller.then_some(true),
    }
}

fn running_and_available(p: &Pod, min_ready: i64, now: i64) -> bool {
    p.metadata.deletion_timestamp.is_none() && p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running") && is_ready(p) && is_available(p, min_ready, now)
}

fn finished(p: &Pod) -> bool {
    matches!(p.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Failed" | "Succeeded"))
}

fn revision_label(p: &Pod) -> Option<&str> {
    p.metadata.labels.as_ref().and_then(|l| l.get(REVISION_HASH_LABEL)).map(String::as_str)
}

fn pod_for(sts: &StatefulSet, template: &PodTemplateSpec, revision: &str, ordinal: i32) -> Pod {
    let set = sts.metadata.name.clone().unwrap_or_default();
    let name = format!("{set}-{ordinal}");
    let tmeta = template.metadata.clone().unwrap_or_default();
    let mut labels = tmeta.labels.unwrap_or_default();
    labels.insert(POD_NAME_LABEL.into(), name.clone());
    labels.insert(POD_INDEX_LABEL.into(), ordinal.to_string());
    labels.insert(REVISION_HASH_LABEL.into(), revision.into());
    let mut spec = template.spec.clone().unwrap_or_default();
    spec.hostname = Some(name.clone());
    spec.subdomain = sts.spec.service_name.clone().filter(|s| !s.is_empty());
    let mut volumes: Vec<Volume> = spec.volumes.take().unwrap_or_default();
    for t in sts.spec.volume_claim_templates.iter().flatten() {
        let tname = t.metadata.name.clone().unwrap_or_default();
        volumes.retain(|v| v.name != tname);
        volumes.push(Volume { name: tname.clone(), persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource { claim_name: claim_name(&tname, &set, ordinal), read_only: None }), ..Default::default() });
    }
    spec.volumes = Some(volumes);
    Pod {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: sts.metadata.namespace.clone(),
            labels: Some(labels),
            annotations: tmeta.annotations,
            owner_references: Some(vec![owner_ref("StatefulSet", "apps/v1", &sts.metadata, true)]),
            ..Default::default()
        },
        spec: Some(spec),
        status: None,
    }
}

fn claim_for(sts: &StatefulSet, template: &PersistentVolumeClaim, ordinal: i32) -> PersistentVolumeClaim {
    let set = sts.metadata.name.clone().unwrap_or_default();
    let tname = template.metadata.name.clone().unwrap_or_default();
    let mut labels = template.metadata.labels.clone().unwrap_or_default();
    labels.extend(sts.spec.selector.match_labels.clone().unwrap_or_default());
    PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(claim_name(&tname, &set, ordinal)),
            namespace: sts.metadata.namespace.clone(),
            labels: Some(labels),
            annotations: template.metadata.annotations.clone(),
            ..Default::default()
        },
        spec: template.spec.clone(),
        status: None,
    }
}

fn policy(sts: &StatefulSet) -> (bool, bool) {
    let p = sts.spec.persistent_volume_claim_retention_policy.clone().unwrap_or_default();
    (p.when_deleted.as_deref() == Some("Delete"), p.when_scaled.as_deref() == Some("Delete"))
}

/// The owner references a claim should carry (kube's claim retention): the set's when
/// `whenDeleted: Delete`, its pod's when its ordinal is scaled away and `whenScaled:
/// Delete`; references to anything else are kept. The garbage collector then deletes
/// the claim with its owner; a claim whose pod was gone before the policy said Delete
/// is left alone, as the real controller leaves it.
fn wanted_owners(sts: &StatefulSet, claim: &PersistentVolumeClaim, pod: Option<&Pod>, condemned: bool) -> Vec<OwnerReference> {
    let (when_deleted, when_scaled) = policy(sts);
    let set_uid = sts.metadata.uid.clone().unwrap_or_default();
    let pod_uid = pod.and_then(|p| p.metadata.uid.clone());
    let mut out: Vec<OwnerReference> = claim.metadata.owner_references.clone().unwrap_or_default().into_iter().filter(|r| !(r.kind == "StatefulSet" && r.uid == set_uid) && r.kind != "Pod").collect();
    if when_deleted {
        out.push(owner_ref("StatefulSet", "apps/v1", &sts.metadata, false));
    }
    if let (true, true, Some(p), Some(_)) = (condemned, when_scaled, pod, pod_uid) {
        out.push(owner_ref("Pod", "v1", &p.metadata, false));
    }
    out
}

/// What the StatefulSet needs. `claims` are the namespace's claims named after its
/// templates; `settled` is false while its own pod writes are in flight.
pub fn reconcile(sts: &StatefulSet, owned: &[Pod], revisions: &[ControllerRevision], claims: &[PersistentVolumeClaim], settled: bool, now: i64) -> Vec<Action> {
    let mut out = Vec::new();
    let set = sts.metadata.name.clone().unwrap_or_default();
    let spec = &sts.spec;
    let replicas = spec.replicas.unwrap_or(1).max(0);
    let start = spec.ordinals.as_ref().and_then(|o| o.start).unwrap_or(0).max(0);
    let min_ready = i64::from(spec.min_ready_seconds.unwrap_or(0));
    let parallel = spec.pod_management_policy.as_deref() == Some("Parallel");
    let rolling = spec.update_strategy.as_ref().and_then(|s| s.type_.as_deref()).unwrap_or("RollingUpdate") == "RollingUpdate";
    let partition = spec.update_strategy.as_ref().and_then(|s| s.rolling_update.as_ref()).and_then(|r| r.partition).unwrap_or(0).max(0);
    let history = spec.revision_history_limit.unwrap_or(10).max(0) as usize;
    let keep: Vec<String> = owned.iter().filter_map(|p| revision_label(p)).map(|r| r.rsplit('-').next().unwrap_or("").to_string()).collect();
    let keep: Vec<&str> = keep.iter().map(String::as_str).collect();
    let owner = Owner { kind: "StatefulSet", meta: &sts.metadata };
    let (hash, _, rev_actions) = revisions::sync(&owner, &spec.template, revisions, history, &keep);
    out.extend(rev_actions.into_iter().map(Action::Revision));
    let update_rev = format!("{set}-{hash}");
    let status = sts.status.clone().unwrap_or_default();
    let current_rev = status.current_revision.clone().filter(|r| !r.is_empty()).unwrap_or_else(|| update_rev.clone());
    let current_tpl = revisions.iter().find(|r| r.metadata.name.as_deref() == Some(current_rev.as_str())).and_then(revisions::template_of).unwrap_or_else(|| spec.template.clone());
    // Which revision a new pod of this ordinal gets (kube's newVersionedStatefulSetPod).
    let versioned = |ord: i32| if rolling && ord - start < partition { pod_for(sts, &current_tpl, &current_rev, ord) } else { pod_for(sts, &spec.template, &update_rev, ord) };

    let mut by_ord: BTreeMap<i32, &Pod> = BTreeMap::new();
    for p in owned {
        if let Some(o) = p.metadata.name.as_deref().and_then(|n| ordinal_of(&set, n)) {
            by_ord.insert(o, p);
        }
    }
    let wanted = start..start + replicas;
    let claim = |n: &str| claims.iter().find(|c| c.metadata.name.as_deref() == Some(n));
    let templates: Vec<&PersistentVolumeClaim> = spec.volume_claim_templates.iter().flatten().collect();
    let deleting = sts.metadata.deletion_timestamp.is_some();

    // Retention: claims of live ordinals and of condemned ones.
    for c in claims {
        let Some(ord) = templates.iter().find_map(|t| {
            let prefix = format!("{}-{set}-", t.metadata.name.as_deref().unwrap_or(""));
            c.metadata.name.as_deref()?.strip_prefix(&prefix)?.parse::<i32>().ok()
        }) else { continue };
        let condemned = !wanted.contains(&ord);
        let pod = by_ord.get(&ord).copied();
        let owners = wanted_owners(sts, c, pod, condemned);
        if owners != c.metadata.owner_references.clone().unwrap_or_default() {
            out.push(Action::ClaimOwners { name: c.metadata.name.clone().unwrap_or_default(), owners });
        }
    }

    let mut pod_writes = Vec::new();
    if settled && !deleting {
        // Create (or replace finished) pods in ordinal order; OrderedReady waits for each.
        let mut blocked = false;
        for ord in wanted.clone() {
            match by_ord.get(&ord) {
                Some(p) if finished(p) && p.metadata.deletion_timestamp.is_none() => {
                    pod_writes.push(Action::Delete((*p).clone()));
                    blocked = true;
                }
                Some(p) => {
                    if !parallel && !running_and_available(p, min_ready, now) {
                        blocked = true;
                    }
                }
                None => {
                    for t in &templates {
                        let want = claim_for(sts, t, ord);
                        if claim(want.metadata.name.as_deref().unwrap_or("")).is_none() {
                            let mut want = want;
                            let owners = wanted_owners(sts, &want, None, false);
                            want.metadata.owner_references = (!owners.is_empty()).then_some(owners);
                            pod_writes.push(Action::CreateClaim(want));
                        }
                    }
                    pod_writes.push(Action::Create(versioned(ord)));
                    blocked = !parallel;
                }
            }
            if blocked && !parallel {
                break;
            }
        }
        // Scale down from the highest ordinal; OrderedReady one at a time, and only
        // while everything below is healthy.
        let condemned: Vec<&Pod> = by_ord.iter().rev().filter(|(o, _)| !wanted.contains(o)).map(|(_, p)| *p).collect();
        if !blocked || parallel {
            for p in condemned {
                if p.metadata.deletion_timestamp.is_some() {
                    if parallel {
                        continue;
                    }
                    break;
                }
                pod_writes.push(Action::Delete(p.clone()));
                if !parallel {
                    break;
                }
            }
        }
        // Rolling update: highest ordinal first, down to the partition, one at a time,
        // once every pod is there and healthy.
        let all_there = wanted.clone().all(|o| by_ord.get(&o).is_some_and(|p| running_and_available(p, min_ready, now)));
        if rolling && all_there && pod_writes.is_empty() {
            for ord in wanted.clone().rev().filter(|o| o - start >= partition) {
                let p = by_ord[&ord];
                if revision_label(p) != Some(update_rev.as_str()) {
                    pod_writes.push(Action::Delete(p.clone()));
                    break;
                }
            }
        }
    }
    out.extend(pod_writes);

    let live: Vec<&Pod> = by_ord.iter().filter(|(o, _)| wanted.contains(o)).map(|(_, p)| *p).filter(|p| p.metadata.deletion_timestamp.is_none()).collect();
    let count = |f: &dyn Fn(&Pod) -> bool| live.iter().filter(|p| f(p)).count() as i32;
    let ready = count(&|p| is_ready(p));
    let updated = count(&|p| revision_label(p) == Some(update_rev.as_str()));
    let mut st = StatefulSetStatus {
        replicas: by_ord.values().filter(|p| p.metadata.deletion_timestamp.is_none()).count() as i32,
        ready_replicas: Some(ready),
        available_replicas: Some(count(&|p| running_and_available(p, min_ready, now))),
        current_replicas: Some(count(&|p| revision_label(p) == Some(current_rev.as_str()))),
        updated_replicas: Some(updated),
        current_revision: Some(current_rev.clone()),
        update_revision: Some(update_rev.clone()),
        observed_generation: sts.metadata.generation,
        collision_count: status.collision_count.or(Some(0)),
        conditions: status.conditions.clone(),
    };
    // The rollout is complete: the update revision becomes the current one.
    if updated == replicas && ready == replicas && st.replicas == replicas {
        st.current_revision = Some(update_rev.clone());
        st.current_replicas = Some(updated);
    }
    if sts.status.as_ref() != Some(&st) {
        out.push(Action::Status(st));
    }
    out
}

pub struct StatefulSetController {
    client: Client,
    resync: std::time::Duration,
    sets: Cache<StatefulSet>,
    pods: OwnedIndex<Pod>,
    revisions: OwnedIndex<ControllerRevision>,
    /// Claims by `ns/name` (they are not owned: found by name).
    claims: BTreeMap<String, PersistentVolumeClaim>,
    expectations: Expectations,
    queue: WorkQueue,
}

impl StatefulSetController {
    pub fn new(client: Client, resync: std::time::Duration) -> Self {
        let client = client.named(ACTOR);
        StatefulSetController {
            client,
            resync,
            sets: Cache::default(),
            pods: OwnedIndex::new("StatefulSet"),
            revisions: OwnedIndex::new("StatefulSet"),
            claims: BTreeMap::new(),
            expectations: Expectations::default(),
            queue: WorkQueue::default(),
        }
    }

    fn kick(&mut self, ctx: &mut Context<Self>) {
        if self.queue.arm() {
            ctx.notify(ControllerMsg::Process);
        }
    }

    fn all(&mut self) {
        self.sets.keys().into_iter().for_each(|k| self.queue.add(k));
    }

    /// Sets with minReadySeconds: a pod becoming available is no event, so they are
    /// looked at again every few seconds; the others only on events.
    fn waiting_for_min_ready(&mut self) {
        let keys: Vec<String> = self.sets.keys().into_iter().filter(|k| self.sets.get(k).is_some_and(|s| s.spec.min_ready_seconds.unwrap_or(0) > 0)).collect();
        keys.into_iter().for_each(|k| self.queue.add(k));
    }

    fn put_pod(&mut self, p: Pod) {
        let name = p.metadata.name.clone().unwrap_or_default();
        let terminating = p.metadata.deletion_timestamp.is_some();
        for key in self.pods.put(p) {
            self.expectations.created(&key, &name);
            if terminating {
                self.expectations.deleted(&key, &name);
            }
            self.queue.add(key);
        }
    }

    fn process(&mut self, ctx: &mut Context<Self>) {
        for key in self.queue.take_armed() {
            let Some(sts) = self.sets.get(&key).cloned() else {
                self.expectations.forget(&key);
                self.queue.done(&key);
                continue;
            };
            let uid = sts.metadata.uid.clone().unwrap_or_default();
            let (pods, revs) = (self.pods.owned_by(&uid), self.revisions.owned_by(&uid));
            let (ns, set) = (sts.metadata.namespace.clone().unwrap_or_default(), sts.metadata.name.clone().unwrap_or_default());
            let prefixes: Vec<String> = sts.spec.volume_claim_templates.iter().flatten().map(|t| format!("{ns}/{}-{set}-", t.metadata.name.as_deref().unwrap_or(""))).collect();
            let claims: Vec<PersistentVolumeClaim> = self.claims.iter().filter(|(k, _)| prefixes.iter().any(|p| k.starts_with(p))).map(|(_, c)| c.clone()).collect();
            let now = Instant::now();
            let settled = self.expectations.satisfied(&key, now);
            let actions = reconcile(&sts, &pods, &revs, &claims, settled, jiff::Timestamp::now().as_second());
            if actions.is_empty() {
                self.queue.done(&key);
                continue;
            }
            let name = |p: &Pod| p.metadata.name.clone().unwrap_or_default();
            let creates: Vec<String> = actions.iter().filter_map(|a| if let Action::Create(p) = a { Some(name(p)) } else { None }).collect();
            let deletes: Vec<String> = actions.iter().filter_map(|a| if let Action::Delete(p) = a { Some(name(p)) } else { None }).collect();
            if settled {
                self.expectations.forget(&key);
            }
            if !creates.is_empty() || !deletes.is_empty() {
                self.expectations.expect(&key, creates, deletes, now);
            }
            let (client, addr) = (self.client.clone(), ctx.address());
            tokio::spawn(async move {
                let not_done = execute(&client, &sts, actions).await;
                addr.do_send(Finished { key, not_done });
            });
        }
    }
}

fn record(client: &Client, sts: &StatefulSet, type_: &str, reason: &str, message: String) {
    events::record(client, events::event(events::reference(sts), type_, reason, &message, ACTOR));
}

/// Carries the actions out in order (claims before their pod); returns the pods whose
/// create or delete did not happen. A claim that cannot be made stops the pass, so its
/// pod is not created without it.
async fn execute(client: &Client, sts: &StatefulSet, actions: Vec<Action>) -> Vec<String> {
    let ns = sts.metadata.namespace.as_deref();
    let set = sts.metadata.name.clone().unwrap_or_default();
    let mut not_done = Vec::new();
    let mut stop = false;
    for a in actions {
        match a {
            Action::Revision(r) => revisions::execute(client, ns, r).await,
            Action::CreateClaim(c) if !stop => {
                let name = c.metadata.name.clone().unwrap_or_default();
                match client.create(&c).await {
                    Ok(_) => record(client, sts, "Normal", "SuccessfulCreate", format!("create Claim {name} in StatefulSet {set} success")),
                    Err(e) if e.is_already_exists() => {}
                    Err(e) => {
                        record(client, sts, "Warning", "FailedCreate", format!("create Claim {name} in StatefulSet {set} failed error: {e}"));
                        stop = true;
                    }
                }
            }
            Action::ClaimOwners { name, owners } => {
                super::update_with_retry::<PersistentVolumeClaim, _>(client, ns, &name, |c| c.metadata.owner_references = (!owners.is_empty()).then(|| owners.clone())).await;
            }
            Action::Create(p) | Action::Delete(p) if stop => not_done.push(p.metadata.name.clone().unwrap_or_default()),
            Action::CreateClaim(_) => {}
            Action::Create(p) => {
                let name = p.metadata.name.clone().unwrap_or_default();
                match create_checked(client, &p).await {
                    Created::Yes => record(client, sts, "Normal", "SuccessfulCreate", format!("create Pod {name} in StatefulSet {set} successful")),
                    Created::No(e) => {
                        record(client, sts, "Warning", "FailedCreate", format!("create Pod {name} in StatefulSet {set} failed error: {e}"));
                        not_done.push(name);
                    }
                    Created::Unknown(e) => tracing::warn!(pod = %name, error = %e, "stateful pod create outcome unknown"),
                }
            }
            Action::Delete(p) => {
                let name = p.metadata.name.clone().unwrap_or_default();
                match delete_pod_gracefully(client, &p).await {
                    Ok(()) => record(client, sts, "Normal", "SuccessfulDelete", format!("delete Pod {name} in StatefulSet {set} successful")),
                    Err(e) => {
                        record(client, sts, "Warning", "FailedDelete", format!("delete Pod {name} in StatefulSet {set} failed error: {e}"));
                        not_done.push(name);
                    }
                }
            }
            Action::Status(st) => {
                super::update_with_retry::<StatefulSet, _>(client, ns, &set, |cur| {
                    if cur.metadata.uid == sts.metadata.uid {
                        cur.status = Some(st.clone());
                    }
                })
                .await;
            }
        }
    }
    not_done
}

#[derive(Message)]
#[rtype(result = "()")]
struct Finished {
    key: String,
    not_done: Vec<String>,
}

impl Handler<Finished> for StatefulSetController {
    type Result = ();
    fn handle(&mut self, m: Finished, ctx: &mut Context<Self>) {
        bus::metrics::handle(ACTOR, || {
            m.not_done.iter().for_each(|n| self.expectations.lower(&m.key, n));
            self.expectations.touch(&m.key, Instant::now());
            self.queue.done(&m.key);
            self.kick(ctx);
        })
    }
}

impl Actor for StatefulSetController {
    type Context = Context<Self>;
    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(self.resync, |act, ctx| {
            act.all();
            act.kick(ctx);
        });
        ctx.run_interval(std::time::Duration::from_secs(5), |act, ctx| {
            act.waiting_for_min_ready();
            act.kick(ctx);
        });
    }
}

impl StreamHandler<InformerEvent<StatefulSet>> for StatefulSetController {
    fn handle(&mut self, ev: InformerEvent<StatefulSet>, ctx: &mut Context<Self>) {
        bus::metrics::handle(ACTOR, || {
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

impl StreamHandler<InformerEvent<Pod>> for StatefulSetController {
    fn handle(&mut self, ev: InformerEvent<Pod>, ctx: &mut Context<Self>) {
        bus::metrics::handle(ACTOR, || {
            match ev {
                InformerEvent::Listed(items, _) => {
                    for k in self.pods.replace_all(Vec::new()) {
                        self.queue.add(k);
                    }
                    items.into_iter().for_each(|p| self.put_pod(p));
                }
                InformerEvent::Applied(p, _) => self.put_pod(p),
                InformerEvent::Deleted(p, _) => {
                    if let Some(k) = self.pods.remove(&owned::key_of(&p)) {
                        self.expectations.deleted(&k, p.metadata.name.as_deref().unwrap_or(""));
                        self.queue.add(k);
                    }
                }
            }
            self.kick(ctx);
        })
    }
    fn finished(&mut self, _: &mut Context<Self>) {}
}

impl StreamHandler<InformerEvent<ControllerRevision>> for StatefulSetController {
    fn handle(&mut self, ev: InformerEvent<ControllerRevision>, ctx: &mut Context<Self>) {
        bus::metrics::handle(ACTOR, || {
            let touched = match ev {
                InformerEvent::Listed(items, _) => self.revisions.replace_all(items),
                InformerEvent::Applied(r, _) => self.revisions.put(r),
                InformerEvent::Deleted(r, _) => self.revisions.remove(&owned::key_of(&r)).into_iter().collect(),
            };
            touched.into_iter().for_each(|k| self.queue.add(k));
            self.kick(ctx);
        })
    }
    fn finished(&mut self, _: &mut Context<Self>) {}
}

impl StreamHandler<InformerEvent<PersistentVolumeClaim>> for StatefulSetController {
    fn handle(&mut self, ev: InformerEvent<PersistentVolumeClaim>, ctx: &mut Context<Self>) {
        bus::metrics::handle(ACTOR, || {
            // Claims are few and changes rare: every set of the namespace looks again.
            let ns = match &ev {
                InformerEvent::Listed(..) => None,
                InformerEvent::Applied(c, _) | InformerEvent::Deleted(c, _) => c.metadata.namespace.clone(),
            };
            super::volumebinding::apply(&mut self.claims, ev);
            let keys = self.sets.keys().into_iter().filter(|k| ns.as_ref().is_none_or(|n| k.starts_with(&format!("{n}/"))));
            keys.collect::<Vec<_>>().into_iter().for_each(|k| self.queue.add(k));
            self.kick(ctx);
        })
    }
    fn finished(&mut self, _: &mut Context<Self>) {}
}

impl Handler<ControllerMsg> for StatefulSetController {
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
#[path = "statefulset_tests.rs"]
mod tests;
