//! The DaemonSet controller: one pod on every node the template may run on (nodeSelector,
//! required node affinity, taints against its tolerations), pinned there with the node
//! affinity the real controller writes, replaced node by node on a template change
//! (RollingUpdate's maxUnavailable/maxSurge, or OnDelete). `reconcile` is pure.

use super::expectations::Expectations;
use super::owned::{self, Cache, OwnedIndex};
use super::queue::WorkQueue;
use super::replicaset::{create_checked, is_active, is_ready, random_suffix, Created};
use super::revisions::{self, Owner, RevisionAction, REVISION_HASH_LABEL};
use super::{delete_pod_gracefully, events, ControllerMsg};
use crate::scheduler::plugins::taint_toleration::tolerated;
use actix::prelude::*;
use bus::informer::InformerEvent;
use bus::Client;
use k8s_openapi::api::apps::v1::{ControllerRevision, DaemonSet, DaemonSetStatus};
use k8s_openapi::api::core::v1::{Affinity, Node, NodeAffinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, Pod, Taint, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use std::collections::{BTreeMap, HashMap};
use tokio::time::Instant;

const ACTOR: &str = "daemonset-controller";
pub const TEMPLATE_GENERATION_LABEL: &str = "pod-template-generation";

#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Create(Pod),
    Delete(Pod),
    Revision(RevisionAction),
    Status(DaemonSetStatus),
}

/// The tolerations the real controller adds to every daemon pod, so daemons keep running
/// (and get placed) on nodes under pressure, cordoned or not ready.
pub fn daemon_tolerations(host_network: bool) -> Vec<Toleration> {
    let t = |key: &str, effect: &str| Toleration { key: Some(key.into()), operator: Some("Exists".into()), effect: Some(effect.into()), ..Default::default() };
    let mut out = vec![
        t("node.kubernetes.io/not-ready", "NoExecute"),
        t("node.kubernetes.io/unreachable", "NoExecute"),
        t("node.kubernetes.io/disk-pressure", "NoSchedule"),
        t("node.kubernetes.io/memory-pressure", "NoSchedule"),
        t("node.kubernetes.io/pid-pressure", "NoSchedule"),
        t("node.kubernetes.io/unschedulable", "NoSchedule"),
    ];
    if host_network {
        out.push(t("node.kubernetes.io/network-unavailable", "NoSchedule"));
    }
    out
}

fn requirement_matches(r: &NodeSelectorRequirement, value: Option<&str>) -> bool {
    let vals = r.values.clone().unwrap_or_default();
    match r.operator.as_str() {
        "In" => value.is_some_and(|v| vals.iter().any(|x| x == v)),
        "NotIn" => value.is_none_or(|v| !vals.iter().any(|x| x == v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" | "Lt" => {
            let (Some(v), Some(x)) = (value.and_then(|v| v.parse::<i64>().ok()), vals.first().and_then(|x| x.parse::<i64>().ok())) else { return false };
            if r.operator == "Gt" { v > x } else { v < x }
        }
        _ => false,
    }
}

/// A node selector term: every expression on the node's labels and every field
/// (`metadata.name`) holds; an empty term matches nothing, as in Kubernetes.
pub fn term_matches(t: &NodeSelectorTerm, node: &Node) -> bool {
    let labels = node.metadata.labels.clone().unwrap_or_default();
    let exprs = t.match_expressions.clone().unwrap_or_default();
    let fields = t.match_fields.clone().unwrap_or_default();
    if exprs.is_empty() && fields.is_empty() {
        return false;
    }
    exprs.iter().all(|r| requirement_matches(r, labels.get(&r.key).map(String::as_str)))
        && fields.iter().all(|r| r.key == "metadata.name" && requirement_matches(r, node.metadata.name.as_deref()))
}

/// Whether the daemon's template should run on `node` (kube's NodeShouldRunDaemonPod).
pub fn should_run(ds: &DaemonSet, node: &Node) -> bool {
    let spec = ds.spec.template.spec.clone().unwrap_or_default();
    let labels = node.metadata.labels.clone().unwrap_or_default();
    if !spec.node_selector.iter().flatten().all(|(k, v)| labels.get(k) == Some(v)) {
        return false;
    }
    let required = spec.affinity.as_ref().and_then(|a| a.node_affinity.as_ref()).and_then(|n| n.required_during_scheduling_ignored_during_execution.as_ref());
    if let Some(req) = required {
        if !req.node_selector_terms.iter().any(|t| term_matches(t, node)) {
            return false;
        }
    }
    let mut tolerations = spec.tolerations.clone().unwrap_or_default();
    tolerations.extend(daemon_tolerations(spec.host_network.unwrap_or(false)));
    let taints: Vec<Taint> = node.spec.as_ref().and_then(|s| s.taints.clone()).unwrap_or_default();
    taints.iter().filter(|t| t.effect == "NoSchedule" || t.effect == "NoExecute").all(|t| tolerated(&tolerations, t))
}

/// The node a daemon pod is for: where it is bound, else what its affinity pins it to.
pub fn node_of(p: &Pod) -> Option<String> {
    let spec = p.spec.as_ref()?;
    if let Some(n) = spec.node_name.clone() {
        return Some(n);
    }
    let req = spec.affinity.as_ref()?.node_affinity.as_ref()?.required_during_scheduling_ignored_during_execution.as_ref()?;
    req.node_selector_terms.iter().flat_map(|t| t.match_fields.iter().flatten()).find(|f| f.key == "metadata.name" && f.operator == "In").and_then(|f| f.values.as_ref()?.first().cloned())
}

/// kube's ReplaceDaemonSetPodNodeNameNodeAffinity: the required terms become the one term
/// `metadata.name In [node]`; preferred terms are kept.
fn pin_to(affinity: Option<Affinity>, node: &str) -> Affinity {
    let mut a = affinity.unwrap_or_default();
    let na = a.node_affinity.get_or_insert_with(NodeAffinity::default);
    na.required_during_scheduling_ignored_during_execution = Some(NodeSelector {
        node_selector_terms: vec![NodeSelectorTerm {
            match_expressions: None,
            match_fields: Some(vec![NodeSelectorRequirement { key: "metadata.name".into(), operator: "In".into(), values: Some(vec![node.to_string()]) }]),
        }],
    });
    a
}

fn pod_for(ds: &DaemonSet, node: &str, hash: &str, name: String) -> Pod {
    let tpl = ds.spec.template.clone();
    let tmeta = tpl.metadata.unwrap_or_default();
    let mut labels = tmeta.labels.unwrap_or_default();
    labels.insert(REVISION_HASH_LABEL.into(), hash.into());
    labels.insert(TEMPLATE_GENERATION_LABEL.into(), ds.metadata.generation.unwrap_or(1).to_string());
    let mut spec = tpl.spec.unwrap_or_default();
    spec.affinity = Some(pin_to(spec.affinity.take(), node));
    let mut tolerations = spec.tolerations.take().unwrap_or_default();
    for t in daemon_tolerations(spec.host_network.unwrap_or(false)) {
        if !tolerations.iter().any(|x| x.key == t.key && x.effect == t.effect) {
            tolerations.push(t);
        }
    }
    spec.tolerations = Some(tolerations);
    Pod {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: ds.metadata.namespace.clone(),
            labels: Some(labels),
            annotations: tmeta.annotations,
            owner_references: Some(vec![OwnerReference {
                api_version: "apps/v1".into(),
                kind: "DaemonSet".into(),
                name: ds.metadata.name.clone().unwrap_or_default(),
                uid: ds.metadata.uid.clone().unwrap_or_default(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            }]),
            ..Default::default()
        },
        spec: Some(spec),
        status: None,
    }
}

fn hash_label(p: &Pod) -> Option<&str> {
    p.metadata.labels.as_ref().and_then(|l| l.get(REVISION_HASH_LABEL)).map(String::as_str)
}

/// Ready for at least minReadySeconds (`now` in Unix seconds).
pub fn is_available(p: &Pod, min_ready: i64, now: i64) -> bool {
    let since = p.status.as_ref().and_then(|s| s.conditions.as_ref()).and_then(|cs| cs.iter().find(|c| c.type_ == "Ready" && c.status == "True")).map(|c| c.last_transition_time.as_ref().map(|t| t.0.as_second()).unwrap_or(0));
    since.is_some_and(|t| min_ready <= 0 || t + min_ready <= now)
}

/// What the DaemonSet needs. `settled` is false while its own creates or deletes are in
/// flight; then only revisions and status are brought up to date.
pub fn reconcile(ds: &DaemonSet, nodes: &[Node], owned: &[Pod], revisions: &[ControllerRevision], settled: bool, now: i64, new_name: &mut dyn FnMut() -> String) -> Vec<Action> {
    let mut out = Vec::new();
    let spec = ds.spec.clone();
    let min_ready = i64::from(spec.min_ready_seconds.unwrap_or(0));
    let pods: Vec<&Pod> = owned.iter().filter(|p| p.metadata.deletion_timestamp.is_none()).collect();
    let keep: Vec<&str> = pods.iter().filter_map(|p| hash_label(p)).collect();
    let history = spec.revision_history_limit.unwrap_or(10).max(0) as usize;
    let owner = Owner { kind: "DaemonSet", meta: &ds.metadata };
    let (hash, _, rev_actions) = revisions::sync(&owner, &spec.template, revisions, history, &keep);
    out.extend(rev_actions.into_iter().map(Action::Revision));
    let mut by_node: BTreeMap<String, Vec<&Pod>> = BTreeMap::new();
    // Terminating pods count too: a node whose daemon is still stopping gets its new
    // one after, as kube's podsShouldBeOnNode waits.
    for p in owned {
        if let Some(n) = node_of(p) {
            by_node.entry(n).or_default().push(p);
        }
    }
    let (mut desired, mut current, mut ready, mut updated, mut available, mut misscheduled) = (0, 0, 0, 0, 0, 0);
    let mut creates = Vec::new();
    let mut deletes: Vec<Pod> = Vec::new();
    // Rolling update bookkeeping: nodes whose only pod is old, and whether it is available.
    let mut old_only: Vec<(&Pod, bool)> = Vec::new();
    let mut unavailable = 0;
    let mut surging = 0;
    let rolling = spec.update_strategy.as_ref().and_then(|s| s.type_.as_deref()).unwrap_or("RollingUpdate") == "RollingUpdate";
    let ru = spec.update_strategy.as_ref().and_then(|s| s.rolling_update.clone()).unwrap_or_default();
    let deleting = ds.metadata.deletion_timestamp.is_some();
    for node in nodes {
        let name = node.metadata.name.clone().unwrap_or_default();
        let (stopping, here): (Vec<&Pod>, Vec<&Pod>) = by_node.remove(&name).unwrap_or_default().into_iter().partition(|p| p.metadata.deletion_timestamp.is_some());
        let run = should_run(ds, node);
        if !run {
            if here.iter().any(|p| is_active(p)) {
                misscheduled += 1;
            }
            deletes.extend(here.iter().map(|p| (*p).clone()));
            continue;
        }
        desired += 1;
        if here.is_empty() && !stopping.is_empty() {
            unavailable += 1;
            continue;
        }
        // Failed daemons are deleted and made again, as the real controller does.
        let (failed, mut live): (Vec<&Pod>, Vec<&Pod>) = here.into_iter().partition(|p| !is_active(p));
        deletes.extend(failed.into_iter().cloned());
        if live.is_empty() {
            creates.push(name.clone());
            unavailable += 1;
            continue;
        }
        current += 1;
        live.sort_by_key(|p| (hash_label(p) != Some(hash.as_str()), p.metadata.creation_timestamp.as_ref().map(|t| t.0)));
        let new: Vec<&&Pod> = live.iter().filter(|p| hash_label(p) == Some(hash.as_str())).collect();
        let old: Vec<&&Pod> = live.iter().filter(|p| hash_label(p) != Some(hash.as_str())).collect();
        let shown = live[0];
        ready += is_ready(shown) as i32;
        let avail = live.iter().any(|p| is_available(p, min_ready, now));
        available += avail as i32;
        unavailable += (!avail) as i32;
        updated += (!new.is_empty()) as i32;
        // Beyond one pod per node: extra new ones go; an old one goes once a new one is
        // available (a surge finished).
        deletes.extend(new.iter().skip(1).map(|p| (***p).clone()));
        match new.first() {
            Some(n) if is_available(n, min_ready, now) => deletes.extend(old.iter().map(|p| (***p).clone())),
            Some(_) => surging += (!old.is_empty()) as i32,
            None => {
                deletes.extend(old.iter().skip(1).map(|p| (***p).clone()));
                if let Some(o) = old.first() {
                    old_only.push((o, is_available(o, min_ready, now)));
                }
            }
        }
    }
    // Pods for nodes that are gone.
    deletes.extend(by_node.into_values().flatten().filter(|p| p.metadata.deletion_timestamp.is_none()).cloned());
    if rolling && !deleting {
        let max_unavailable = revisions::scaled(ru.max_unavailable.as_ref(), desired, false, 1);
        let max_surge = revisions::scaled(ru.max_surge.as_ref(), desired, true, 0);
        if max_surge > 0 {
            // New pod beside the old one, on as many nodes as the surge allows.
            let mut budget = max_surge - surging;
            for (o, _) in &old_only {
                if budget <= 0 {
                    break;
                }
                creates.push(node_of(o).unwrap_or_default());
                budget -= 1;
            }
        } else {
            // Old pods that are not available anyway go first; then as many as the
            // unavailability budget allows.
            let mut budget = (max_unavailable.max(1)) - unavailable;
            for (o, avail) in &old_only {
                if !avail {
                    deletes.push((*o).clone());
                } else if budget > 0 {
                    deletes.push((*o).clone());
                    budget -= 1;
                }
            }
        }
    }
    if settled && !deleting {
        for node in creates {
            out.push(Action::Create(pod_for(ds, &node, &hash, new_name())));
        }
        let mut seen = std::collections::HashSet::new();
        for p in deletes {
            if seen.insert(p.metadata.name.clone()) {
                out.push(Action::Delete(p));
            }
        }
    }
    let status = DaemonSetStatus {
        current_number_scheduled: current,
        desired_number_scheduled: desired,
        number_misscheduled: misscheduled,
        number_ready: ready,
        updated_number_scheduled: Some(updated),
        number_available: Some(available),
        number_unavailable: Some((desired - available).max(0)),
        observed_generation: ds.metadata.generation,
        collision_count: ds.status.as_ref().and_then(|s| s.collision_count),
        conditions: None,
    };
    if ds.status.as_ref() != Some(&status) {
        out.push(Action::Status(status));
    }
    out
}

pub struct DaemonSetController {
    client: Client,
    resync: std::time::Duration,
    sets: Cache<DaemonSet>,
    pods: OwnedIndex<Pod>,
    revisions: OwnedIndex<ControllerRevision>,
    nodes: HashMap<String, Node>,
    expectations: Expectations,
    queue: WorkQueue,
}

impl DaemonSetController {
    pub fn new(client: Client, resync: std::time::Duration) -> Self {
        let client = client.named(ACTOR);
        DaemonSetController {
            client,
            resync,
            sets: Cache::default(),
            pods: OwnedIndex::new("DaemonSet"),
            revisions: OwnedIndex::new("DaemonSet"),
            nodes: HashMap::new(),
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
        let mut nodes: Vec<Node> = self.nodes.values().cloned().collect();
        nodes.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        for key in self.queue.take_armed() {
            let Some(ds) = self.sets.get(&key).cloned() else {
                self.expectations.forget(&key);
                self.queue.done(&key);
                continue;
            };
            let uid = ds.metadata.uid.clone().unwrap_or_default();
            let (pods, revs) = (self.pods.owned_by(&uid), self.revisions.owned_by(&uid));
            let now = Instant::now();
            let settled = self.expectations.satisfied(&key, now);
            let ds_name = ds.metadata.name.clone().unwrap_or_default();
            let actions = reconcile(&ds, &nodes, &pods, &revs, settled, jiff::Timestamp::now().as_second(), &mut || format!("{ds_name}-{}", random_suffix()));
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
                let not_done = execute(&client, &ds, actions).await;
                addr.do_send(Finished { key, not_done });
            });
        }
    }
}

fn record(client: &Client, ds: &DaemonSet, type_: &str, reason: &str, message: String) {
    events::record(client, events::event(events::reference(ds), type_, reason, &message, ACTOR));
}

/// Carries the actions out; returns the pods whose create or delete did not happen.
async fn execute(client: &Client, ds: &DaemonSet, actions: Vec<Action>) -> Vec<String> {
    let ns = ds.metadata.namespace.as_deref();
    let mut not_done = Vec::new();
    for a in actions {
        match a {
            Action::Revision(r) => revisions::execute(client, ns, r).await,
            Action::Create(p) => {
                let name = p.metadata.name.clone().unwrap_or_default();
                match create_checked(client, &p).await {
                    Created::Yes => record(client, ds, "Normal", "SuccessfulCreate", format!("Created pod: {name}")),
                    Created::No(e) => {
                        record(client, ds, "Warning", "FailedCreate", format!("Error creating: {e}"));
                        not_done.push(name);
                    }
                    Created::Unknown(e) => tracing::warn!(pod = %name, error = %e, "daemon pod create outcome unknown"),
                }
            }
            Action::Delete(p) => {
                let name = p.metadata.name.clone().unwrap_or_default();
                match delete_pod_gracefully(client, &p).await {
                    Ok(()) => record(client, ds, "Normal", "SuccessfulDelete", format!("Deleted pod: {name}")),
                    Err(e) => {
                        record(client, ds, "Warning", "FailedDelete", format!("Error deleting pod: {e}"));
                        not_done.push(name);
                    }
                }
            }
            Action::Status(st) => {
                super::update_with_retry::<DaemonSet, _>(client, ns, ds.metadata.name.as_deref().unwrap_or(""), |cur| {
                    if cur.metadata.uid == ds.metadata.uid {
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

impl Handler<Finished> for DaemonSetController {
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

impl Actor for DaemonSetController {
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

impl StreamHandler<InformerEvent<DaemonSet>> for DaemonSetController {
    fn handle(&mut self, ev: InformerEvent<DaemonSet>, ctx: &mut Context<Self>) {
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

impl StreamHandler<InformerEvent<Pod>> for DaemonSetController {
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

impl StreamHandler<InformerEvent<ControllerRevision>> for DaemonSetController {
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

impl StreamHandler<InformerEvent<Node>> for DaemonSetController {
    fn handle(&mut self, ev: InformerEvent<Node>, ctx: &mut Context<Self>) {
        bus::metrics::handle(ACTOR, || {
            // Only what placement looks at (labels, taints) is worth a pass; heartbeats are not.
            let shape = |n: &Node| (n.metadata.labels.clone(), n.spec.as_ref().and_then(|s| s.taints.clone()));
            let changed = match ev {
                InformerEvent::Listed(items, _) => {
                    self.nodes = items.into_iter().map(|n| (n.metadata.name.clone().unwrap_or_default(), n)).collect();
                    true
                }
                InformerEvent::Applied(n, _) => {
                    let name = n.metadata.name.clone().unwrap_or_default();
                    let changed = self.nodes.get(&name).map(shape) != Some(shape(&n));
                    self.nodes.insert(name, n);
                    changed
                }
                InformerEvent::Deleted(n, _) => self.nodes.remove(n.metadata.name.as_deref().unwrap_or("")).is_some(),
            };
            if changed {
                self.all();
            }
            self.kick(ctx);
        })
    }
    fn finished(&mut self, _: &mut Context<Self>) {}
}

impl Handler<ControllerMsg> for DaemonSetController {
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
#[path = "daemonset_tests.rs"]
mod tests;
