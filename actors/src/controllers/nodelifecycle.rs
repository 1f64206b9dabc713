//! The node lifecycle controller (kube-controller-manager's node-lifecycle-controller):
//! a node whose agent stopped renewing its Lease in kube-node-lease for longer than
//! --node-monitor-grace-period gets its conditions set to Unknown, and every node gets
//! the not-ready/unreachable NoSchedule and NoExecute taints its Ready condition calls
//! for (removed when it is Ready again), which the scheduler and taint eviction act on.

use super::{events, update_outcome, Outcome};
use bus::informer::{watch_objects, InformerEvent, Scope};
use bus::Client;
use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, NodeCondition, Pod, PodCondition, Taint};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use std::collections::HashMap;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub const NOT_READY_TAINT: &str = "node.kubernetes.io/not-ready";
pub const UNREACHABLE_TAINT: &str = "node.kubernetes.io/unreachable";
/// What a cordoned node carries (TaintNodesByCondition), so tolerations can opt in.
pub const UNSCHEDULABLE_TAINT: &str = "node.kubernetes.io/unschedulable";
pub const LEASE_NAMESPACE: &str = "kube-node-lease";
/// The conditions a node agent reports, which go Unknown with it.
const AGENT_CONDITIONS: &[&str] = &["Ready", "MemoryPressure", "DiskPressure", "PIDPressure"];
const COMPONENT: &str = "node-controller";

/// kube-controller-manager's --node-monitor-grace-period and --node-monitor-period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeLifecycleConfig {
    pub node_monitor_grace_period: Duration,
    pub node_monitor_period: Duration,
}

impl Default for NodeLifecycleConfig {
    fn default() -> Self {
        NodeLifecycleConfig { node_monitor_grace_period: Duration::from_secs(40), node_monitor_period: Duration::from_secs(5) }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// The agent is silent: these conditions become Unknown.
    MarkUnknown { node: String, conditions: Vec<NodeCondition> },
    /// The lifecycle taints the node should carry now (others it has are kept).
    SetTaints { node: String, add: Vec<Taint>, remove: Vec<Taint> },
    /// The node's Ready condition changed: "Node x status is now: NodeNotReady", and its
    /// pods are marked not ready.
    StatusChanged { node: String, ready: bool },
}

fn ready_status(n: &Node) -> Option<String> {
    n.status.as_ref()?.conditions.as_ref()?.iter().find(|c| c.type_ == "Ready").map(|c| c.status.clone())
}

/// A node's signs of life as written: its Lease's renewTime and its newest heartbeat.
pub type Signs = (Option<jiff::Timestamp>, Option<jiff::Timestamp>);

pub fn signs(n: &Node, lease: Option<&Lease>) -> Signs {
    let renew = lease.and_then(|l| l.spec.as_ref()).and_then(|s| s.renew_time.as_ref()).map(|t| t.0);
    let beat = n.status.as_ref().and_then(|s| s.conditions.as_ref()).into_iter().flatten().filter_map(|c| c.last_heartbeat_time.as_ref()).map(|t| t.0).max();
    (renew, beat)
}

/// kube's probeTimestamp: when this controller last saw the signs change (first sight
/// counts as a change). Counting the grace period from our own observation, not from the
/// writer's clock, means a restarted control plane does not find every node overdue.
pub fn probe(prev: Option<&(Signs, jiff::Timestamp)>, now_signs: Signs, now: jiff::Timestamp) -> (Signs, jiff::Timestamp) {
    match prev {
        Some((s, at)) if *s == now_signs => (*s, *at),
        _ => (now_signs, now),
    }
}

/// The lifecycle taints a node with this Ready status should carry; a node that has not
/// reported yet (and is not overdue) is left alone.
fn wanted_taints(ready: Option<&str>) -> Option<Vec<(&'static str, &'static str)>> {
    match ready? {
        "True" => Some(vec![]),
        "False" => Some(vec![(NOT_READY_TAINT, "NoSchedule"), (NOT_READY_TAINT, "NoExecute")]),
        _ => Some(vec![(UNREACHABLE_TAINT, "NoSchedule"), (UNREACHABLE_TAINT, "NoExecute")]),
    }
}

/// Whether the node has been silent for longer than the grace period.
pub fn is_silent(probed: jiff::Timestamp, now: jiff::Timestamp, grace: Duration) -> bool {
    now.duration_since(probed).unsigned_abs() > grace
}

/// One node's pass (kube's tryUpdateNodeHealth plus the tainting passes): pure.
/// `probed` is when its signs of life last changed ([`probe`]); `was_ready` is what the
/// previous pass saw, to report changes once.
pub fn reconcile(n: &Node, probed: jiff::Timestamp, was_ready: Option<bool>, now: jiff::Timestamp, grace: Duration) -> Vec<Action> {
    let name = n.metadata.name.clone().unwrap_or_default();
    let mut out = Vec::new();
    let mut ready = ready_status(n);
    let silent = is_silent(probed, now, grace);
    if silent {
        let existing = n.status.as_ref().and_then(|s| s.conditions.clone()).unwrap_or_default();
        let stamp = Some(Time(now));
        let mut changed = false;
        let mut conds = existing.clone();
        for ty in AGENT_CONDITIONS {
            match conds.iter_mut().find(|c| c.type_ == *ty) {
                Some(c) if c.status != "Unknown" => {
                    *c = NodeCondition { status: "Unknown".into(), reason: Some("NodeStatusUnknown".into()), message: Some("Kubelet stopped posting node status.".into()), last_transition_time: stamp.clone(), ..c.clone() };
                    changed = true;
                }
                Some(_) => {}
                None => {
                    conds.push(NodeCondition { type_: ty.to_string(), status: "Unknown".into(), reason: Some("NodeStatusNeverUpdated".into()), message: Some("Kubelet never posted node status.".into()), last_transition_time: stamp.clone(), last_heartbeat_time: n.metadata.creation_timestamp.clone() });
                    changed = true;
                }
            }
        }
        if changed {
            out.push(Action::MarkUnknown { node: name.clone(), conditions: conds });
        }
        ready = Some("Unknown".into());
    }
    let Some(mut want) = wanted_taints(ready.as_deref()) else { return out };
    if n.spec.as_ref().and_then(|s| s.unschedulable).unwrap_or(false) {
        want.push((UNSCHEDULABLE_TAINT, "NoSchedule"));
    }
    let have: Vec<Taint> = n.spec.as_ref().and_then(|s| s.taints.clone()).unwrap_or_default();
    let ours = |t: &Taint| t.key == NOT_READY_TAINT || t.key == UNREACHABLE_TAINT || t.key == UNSCHEDULABLE_TAINT;
    let add: Vec<Taint> = want
        .iter()
        .filter(|(k, e)| !have.iter().any(|t| t.key == *k && t.effect == *e))
        .map(|(k, e)| Taint { key: k.to_string(), effect: e.to_string(), value: None, time_added: (*e == "NoExecute").then_some(Time(now)) })
        .collect();
    let remove: Vec<Taint> = have.iter().filter(|t| ours(t) && !want.iter().any(|(k, e)| t.key == *k && t.effect == *e)).cloned().collect();
    if !add.is_empty() || !remove.is_empty() {
        out.push(Action::SetTaints { node: name.clone(), add, remove });
    }
    let is_ready = ready.as_deref() == Some("True");
    if was_ready.is_some_and(|w| w != is_ready) {
        out.push(Action::StatusChanged { node: name, ready: is_ready });
    }
    out
}

async fn execute(client: &Client, a: Action, pods: &[Pod]) {
    match a {
        Action::MarkUnknown { node, conditions } => {
            let out = update_outcome::<Node, _>(client, None, &node, |n| {
                n.status.get_or_insert_with(Default::default).conditions = Some(conditions.clone());
            })
            .await;
            if let Outcome::Failed(e) = out {
                tracing::warn!(node = %node, error = %e, "marking the node Unknown failed");
            }
        }
        Action::SetTaints { node, add, remove } => {
            let out = update_outcome::<Node, _>(client, None, &node, |n| {
                let taints = n.spec.get_or_insert_with(Default::default).taints.get_or_insert_with(Vec::new);
                taints.retain(|t| !remove.iter().any(|r| r.key == t.key && r.effect == t.effect));
                for t in &add {
                    if !taints.iter().any(|x| x.key == t.key && x.effect == t.effect) {
                        taints.push(t.clone());
                    }
                }
            })
            .await;
            if let Outcome::Failed(e) = out {
                tracing::warn!(node = %node, error = %e, "updating the node's taints failed");
            }
        }
        Action::StatusChanged { node, ready } => {
            let Ok(Some(n)) = client.get::<Node>(None, &node).await else { return };
            let status = if ready { "NodeReady" } else { "NodeNotReady" };
            events::record(client, events::event(events::reference(&n), "Normal", status, &format!("Node {node} status is now: {status}"), COMPONENT));
            if ready {
                return;
            }
            // kube's MarkPodsNotReady: the node cannot say so for its pods any more.
            for p in pods.iter().filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node.as_str())) {
                let uid = p.metadata.uid.clone();
                let out = update_outcome::<Pod, _>(client, p.metadata.namespace.as_deref(), p.metadata.name.as_deref().unwrap_or(""), |cur| {
                    if cur.metadata.uid != uid {
                        return;
                    }
                    let conds = cur.status.get_or_insert_with(Default::default).conditions.get_or_insert_with(Vec::new);
                    if let Some(c) = conds.iter_mut().find(|c| c.type_ == "Ready" && c.status != "False") {
                        *c = PodCondition { status: "False".into(), last_transition_time: Some(schema::object::now()), ..c.clone() };
                    }
                })
                .await;
                if out == Outcome::Written {
                    events::record(client, events::event(events::reference(p), "Warning", "NodeNotReady", "Node is not ready", COMPONENT));
                }
            }
        }
    }
}

fn name_of<K: bus::client::Object>(o: &K) -> String {
    o.metadata().name.clone().unwrap_or_default()
}

/// kube's RecordNodeEvent: "Node n1 event: Registered Node n1 in Controller".
fn node_event(client: &Client, n: &Node, reason: &str, what: &str) {
    let name = name_of(n);
    let msg = format!("Node {name} event: {}", what.replace("{}", &name));
    events::record(client, events::event(events::reference(n), "Normal", reason, &msg, COMPONENT));
}

pub fn start(client: Client, cfg: NodeLifecycleConfig, stop: CancellationToken) -> tokio::task::JoinHandle<()> {
    // Made before the task runs, so they join the process's shared informers.
    let mut nodes_ev = watch_objects::<Node>(client.clone(), Scope::default()).boxed();
    let mut leases_ev = watch_objects::<Lease>(client.clone(), Scope { namespace: Some(LEASE_NAMESPACE.into()), ..Default::default() }).boxed();
    let mut pods_ev = watch_objects::<Pod>(client.clone(), Scope::default()).boxed();
    tokio::spawn(async move {
        let mut nodes: HashMap<String, Node> = HashMap::new();
        let mut leases: HashMap<String, Lease> = HashMap::new();
        let mut pods: HashMap<String, Pod> = HashMap::new();
        let mut was_ready: HashMap<String, bool> = HashMap::new();
        let mut probes: HashMap<String, (Signs, jiff::Timestamp)> = HashMap::new();
        let mut tick = tokio::time::interval(cfg.node_monitor_period);
        let pod_key = |p: &Pod| format!("{}/{}", p.metadata.namespace.as_deref().unwrap_or(""), name_of(p));
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                Some(ev) = nodes_ev.next() => match ev {
                    InformerEvent::Listed(items, _) => {
                        for n in items.iter().filter(|n| !nodes.contains_key(&name_of(*n))) {
                            node_event(&client, n, "RegisteredNode", "Registered Node {} in Controller");
                        }
                        nodes = items.into_iter().map(|n| (name_of(&n), n)).collect();
                    }
                    InformerEvent::Applied(n, _) => {
                        if !nodes.contains_key(&name_of(&n)) {
                            node_event(&client, &n, "RegisteredNode", "Registered Node {} in Controller");
                        }
                        nodes.insert(name_of(&n), n);
                    }
                    InformerEvent::Deleted(n, _) => {
                        node_event(&client, &n, "RemovingNode", "Removing Node {} from Controller");
                        nodes.remove(&name_of(&n));
                        was_ready.remove(&name_of(&n));
                        probes.remove(&name_of(&n));
                    }
                },
                Some(ev) = leases_ev.next() => match ev {
                    InformerEvent::Listed(items, _) => leases = items.into_iter().map(|l| (name_of(&l), l)).collect(),
                    InformerEvent::Applied(l, _) => { leases.insert(name_of(&l), l); }
                    InformerEvent::Deleted(l, _) => { leases.remove(&name_of(&l)); }
                },
                Some(ev) = pods_ev.next() => match ev {
                    InformerEvent::Listed(items, _) => pods = items.into_iter().map(|p| (pod_key(&p), p)).collect(),
                    InformerEvent::Applied(p, _) => { pods.insert(pod_key(&p), p); }
                    InformerEvent::Deleted(p, _) => { pods.remove(&pod_key(&p)); }
                },
                _ = tick.tick() => {
                    let now = jiff::Timestamp::now();
                    let on_nodes: Vec<Pod> = pods.values().cloned().collect();
                    for n in nodes.values() {
                        let name = name_of(n);
                        let p = probe(probes.get(&name), signs(n, leases.get(&name)), now);
                        probes.insert(name.clone(), p);
                        let actions = reconcile(n, p.1, was_ready.get(&name).copied(), now, cfg.node_monitor_grace_period);
                        for a in actions {
                            if let Action::StatusChanged { ready, .. } = &a {
                                tracing::info!(node = %name, ready, "node readiness changed");
                            }
                            execute(&client, a, &on_nodes).await;
                        }
                        // What this pass decided is what the next compares against.
                        let silent = is_silent(p.1, now, cfg.node_monitor_grace_period);
                        was_ready.insert(name, !silent && ready_status(n).as_deref() == Some("True"));
                    }
                }
                else => return,
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const GRACE: Duration = Duration::from_secs(40);

    fn at(s: &str) -> jiff::Timestamp {
        s.parse().unwrap()
    }

    fn node(ready: &str, heartbeat: &str, taints: serde_json::Value) -> Node {
        serde_json::from_value(json!({
            "metadata": {"name": "n1", "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"taints": taints},
            "status": {"conditions": [
                {"type": "Ready", "status": ready, "lastHeartbeatTime": heartbeat},
                {"type": "MemoryPressure", "status": "False", "lastHeartbeatTime": heartbeat}
            ]}
        }))
        .unwrap()
    }

    fn lease(renewed: &str) -> Lease {
        serde_json::from_value(json!({"metadata": {"name": "n1", "namespace": LEASE_NAMESPACE}, "spec": {"renewTime": renewed}})).unwrap()
    }

    #[test]
    fn a_renewed_lease_keeps_a_ready_node_untouched() {
        let n = node("True", "2026-01-01T00:00:00Z", json!([]));
        assert!(reconcile(&n, at("2026-01-01T00:05:00Z"), Some(true), at("2026-01-01T00:05:30Z"), GRACE).is_empty());
    }

    #[test]
    fn a_silent_node_goes_unknown_and_gets_the_unreachable_taints() {
        let n = node("True", "2026-01-01T00:00:00Z", json!([{"key": "dedicated", "effect": "NoSchedule"}]));
        let now = at("2026-01-01T00:01:00Z");
        let acts = reconcile(&n, at("2026-01-01T00:00:10Z"), Some(true), now, GRACE);
        let Action::MarkUnknown { conditions, .. } = &acts[0] else { panic!("{acts:?}") };
        assert!(conditions.iter().all(|c| c.status == "Unknown"), "{conditions:?}");
        let ready = conditions.iter().find(|c| c.type_ == "Ready").unwrap();
        assert_eq!((ready.reason.as_deref(), ready.message.as_deref()), (Some("NodeStatusUnknown"), Some("Kubelet stopped posting node status.")));
        assert!(conditions.iter().any(|c| c.type_ == "DiskPressure" && c.reason.as_deref() == Some("NodeStatusNeverUpdated")));
        let Action::SetTaints { add, remove, .. } = &acts[1] else { panic!("{acts:?}") };
        let keys: Vec<(&str, &str)> = add.iter().map(|t| (t.key.as_str(), t.effect.as_str())).collect();
        assert_eq!(keys, vec![(UNREACHABLE_TAINT, "NoSchedule"), (UNREACHABLE_TAINT, "NoExecute")]);
        assert_eq!(add[1].time_added, Some(Time(now)));
        assert!(remove.is_empty(), "other taints are not ours");
        assert_eq!(acts[2], Action::StatusChanged { node: "n1".into(), ready: false });
    }

    #[test]
    fn an_already_unknown_node_is_not_rewritten() {
        let n = node("Unknown", "2026-01-01T00:00:00Z", json!([{"key": UNREACHABLE_TAINT, "effect": "NoSchedule"}, {"key": UNREACHABLE_TAINT, "effect": "NoExecute"}]));
        let mut n2 = n.clone();
        for c in n2.status.as_mut().unwrap().conditions.as_mut().unwrap() {
            c.status = "Unknown".into();
        }
        n2.status.as_mut().unwrap().conditions.as_mut().unwrap().extend(["DiskPressure", "PIDPressure"].map(|t| NodeCondition { type_: t.into(), status: "Unknown".into(), ..Default::default() }));
        assert!(reconcile(&n2, at("2026-01-01T00:00:00Z"), Some(false), at("2026-01-01T01:00:00Z"), GRACE).is_empty());
    }

    #[test]
    fn a_not_ready_node_gets_not_ready_taints_and_loses_them_when_back() {
        let n = node("False", "2026-01-01T00:00:00Z", json!([]));
        let acts = reconcile(&n, at("2026-01-01T00:00:00Z"), Some(true), at("2026-01-01T00:00:05Z"), GRACE);
        let Action::SetTaints { add, .. } = &acts[0] else { panic!("{acts:?}") };
        assert!(add.iter().all(|t| t.key == NOT_READY_TAINT) && add.len() == 2);
        let back = node("True", "2026-01-01T00:00:00Z", json!([{"key": UNREACHABLE_TAINT, "effect": "NoExecute"}, {"key": "mine", "effect": "NoSchedule"}]));
        let acts = reconcile(&back, at("2026-01-01T00:00:00Z"), Some(false), at("2026-01-01T00:00:05Z"), GRACE);
        let Action::SetTaints { add, remove, .. } = &acts[0] else { panic!("{acts:?}") };
        assert!(add.is_empty());
        assert_eq!(remove.iter().map(|t| t.key.as_str()).collect::<Vec<_>>(), vec![UNREACHABLE_TAINT]);
        assert_eq!(acts[1], Action::StatusChanged { node: "n1".into(), ready: true });
    }

    #[test]
    fn a_cordoned_node_carries_the_unschedulable_taint_until_uncordoned() {
        let mut n = node("True", "2026-01-01T00:00:00Z", json!([]));
        n.spec.as_mut().unwrap().unschedulable = Some(true);
        let acts = reconcile(&n, at("2026-01-01T00:00:00Z"), Some(true), at("2026-01-01T00:00:05Z"), GRACE);
        let Action::SetTaints { add, .. } = &acts[0] else { panic!("{acts:?}") };
        assert_eq!((add[0].key.as_str(), add[0].effect.as_str(), add.len()), (UNSCHEDULABLE_TAINT, "NoSchedule", 1));
        let mut back = node("True", "2026-01-01T00:00:00Z", json!([{"key": UNSCHEDULABLE_TAINT, "effect": "NoSchedule"}]));
        back.spec.as_mut().unwrap().unschedulable = Some(false);
        let acts = reconcile(&back, at("2026-01-01T00:00:00Z"), Some(true), at("2026-01-01T00:00:05Z"), GRACE);
        let Action::SetTaints { remove, .. } = &acts[0] else { panic!("{acts:?}") };
        assert_eq!(remove.len(), 1);
    }

    #[test]
    fn a_new_node_without_conditions_is_left_alone_until_overdue() {
        let n: Node = serde_json::from_value(json!({"metadata": {"name": "n1", "creationTimestamp": "2026-01-01T00:00:00Z"}})).unwrap();
        assert!(reconcile(&n, at("2026-01-01T00:00:00Z"), None, at("2026-01-01T00:00:10Z"), GRACE).is_empty());
        assert!(!reconcile(&n, at("2026-01-01T00:00:00Z"), None, at("2026-01-01T00:01:00Z"), GRACE).is_empty());
    }

    #[test]
    fn the_grace_period_counts_from_when_the_signs_last_changed_here() {
        let n = node("True", "2026-01-01T00:00:00Z", json!([]));
        let l = lease("2026-01-01T00:10:00Z");
        // First sight after a restart of the control plane: counted from now, however old.
        let p = probe(None, signs(&n, Some(&l)), at("2026-01-01T05:00:00Z"));
        assert_eq!(p.1, at("2026-01-01T05:00:00Z"));
        assert!(reconcile(&n, p.1, Some(true), at("2026-01-01T05:00:30Z"), GRACE).is_empty());
        // Unchanged signs keep their time; a renewal moves it.
        let same = probe(Some(&p), signs(&n, Some(&l)), at("2026-01-01T05:00:41Z"));
        assert_eq!(same.1, p.1);
        assert!(!reconcile(&n, same.1, Some(true), at("2026-01-01T05:00:41Z"), GRACE).is_empty());
        let renewed = probe(Some(&p), signs(&n, Some(&lease("2026-01-01T05:00:40Z"))), at("2026-01-01T05:00:41Z"));
        assert_eq!(renewed.1, at("2026-01-01T05:00:41Z"));
    }
}
