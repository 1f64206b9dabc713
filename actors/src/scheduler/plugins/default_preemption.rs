//! PostFilter: DefaultPreemption. When a pod fits nowhere, find the nodes where evicting
//! lower-priority pods would make it fit, keep as many of them as still lets it fit
//! (PDB-protected ones reprieved first), and choose the node as kube does: fewest PDB
//! violations, then the lowest highest-priority victim, the smallest priority sum, the
//! fewest victims, the latest start among the most important victims, then by name.

use super::selectors::label_selector_matches;
use super::{priority, Diagnosis, Filters, PodInfo, Snapshot};
use crate::scheduler::cache::{requests, NodeInfo};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use std::collections::BTreeMap;
use std::sync::Arc;

pub const NOT_HELPFUL: &str = "Preemption is not helpful for scheduling";
pub const NO_VICTIMS: &str = "No preemption victims found for incoming pod";

/// What preemption needs of a PodDisruptionBudget (its status is the disruption
/// controller's).
#[derive(Debug, Clone)]
pub struct Pdb {
    pub namespace: String,
    pub selector: Option<LabelSelector>,
    pub disruptions_allowed: i32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub node: String,
    /// Most important first.
    pub victims: Vec<Arc<Pod>>,
    pub pdb_violations: usize,
}

fn start_time(p: &Pod) -> Option<jiff::Timestamp> {
    p.status.as_ref().and_then(|s| s.start_time.as_ref()).or(p.metadata.creation_timestamp.as_ref()).map(|t| t.0)
}

/// kube's MoreImportantPod: higher priority, then the one that started earlier.
fn more_important_first(a: &Arc<Pod>, b: &Arc<Pod>) -> std::cmp::Ordering {
    priority(b).cmp(&priority(a)).then_with(|| start_time(a).cmp(&start_time(b)))
}

fn without(n: &NodeInfo, gone: &[Arc<Pod>]) -> NodeInfo {
    let mut m = n.clone();
    m.pods.retain(|p| !gone.iter().any(|g| Arc::ptr_eq(g, p)));
    for g in gone {
        let r = requests(g);
        m.requested.cpu_millis = m.requested.cpu_millis.saturating_sub(r.cpu_millis);
        m.requested.memory = m.requested.memory.saturating_sub(r.memory);
        m.requested.pods = m.requested.pods.saturating_sub(1);
    }
    m
}

/// Whether the pod fits on `n` as changed, the rest of the cluster as it is.
fn fits(pod: &PodInfo, snap: &Snapshot, idx: usize, n: &NodeInfo) -> bool {
    let mut nodes = snap.nodes.to_vec();
    nodes[idx] = n.clone();
    let s = Snapshot { nodes: &nodes, namespaces: snap.namespaces };
    Filters::new(pod, &s).check(pod, n).is_none()
}

/// Splits pods into (would violate a PDB, would not), counting each PDB down as kube's
/// filterPodsWithPDBViolation does.
fn by_pdb(pods: &[Arc<Pod>], pdbs: &[Pdb]) -> (Vec<Arc<Pod>>, Vec<Arc<Pod>>) {
    let mut allowed: Vec<i32> = pdbs.iter().map(|p| p.disruptions_allowed).collect();
    let (mut violating, mut fine) = (Vec::new(), Vec::new());
    for p in pods {
        let labels = p.metadata.labels.clone().unwrap_or_default();
        let ns = p.metadata.namespace.as_deref().unwrap_or("default");
        let mut violated = false;
        for (i, pdb) in pdbs.iter().enumerate() {
            let Some(sel) = &pdb.selector else { continue };
            let empty = sel.match_labels.as_ref().is_none_or(|m| m.is_empty()) && sel.match_expressions.as_ref().is_none_or(|e| e.is_empty());
            if pdb.namespace != ns || empty || !label_selector_matches(sel, &labels) {
                continue;
            }
            allowed[i] -= 1;
            if allowed[i] < 0 {
                violated = true;
            }
        }
        if violated { violating.push(p.clone()) } else { fine.push(p.clone()) }
    }
    (violating, fine)
}

/// kube's SelectVictimsOnNode.
pub fn victims_on(pod: &PodInfo, snap: &Snapshot, idx: usize, pdbs: &[Pdb]) -> Option<Candidate> {
    let n = &snap.nodes[idx];
    let mut lower: Vec<Arc<Pod>> = n.pods.iter().filter(|p| priority(p) < pod.priority).cloned().collect();
    if lower.is_empty() {
        return None;
    }
    let mut node = without(n, &lower);
    if !fits(pod, snap, idx, &node) {
        return None;
    }
    lower.sort_by(more_important_first);
    let (violating, fine) = by_pdb(&lower, pdbs);
    let mut victims = Vec::new();
    let mut pdb_violations = 0;
    for (group, counts) in [(violating, true), (fine, false)] {
        for p in group {
            let mut back = node.clone();
            let r = requests(&p);
            back.requested.cpu_millis += r.cpu_millis;
            back.requested.memory += r.memory;
            back.requested.pods += 1;
            back.pods.push(p.clone());
            if fits(pod, snap, idx, &back) {
                node = back;
            } else {
                pdb_violations += usize::from(counts);
                victims.push(p);
            }
        }
    }
    victims.sort_by(more_important_first);
    Some(Candidate { node: n.name.clone(), victims, pdb_violations })
}

/// kube's pickOneNodeForPreemption over the candidates (in name order).
pub fn pick(mut cands: Vec<Candidate>) -> Option<Candidate> {
    let offset = i64::from(i32::MAX) + 1;
    let top = |c: &Candidate| c.victims.first().map(|p| priority(p)).unwrap_or(i32::MIN);
    let sum = |c: &Candidate| c.victims.iter().map(|p| i64::from(priority(p)) + offset).sum::<i64>();
    // Among the most important victims, the earliest start; a later one is better.
    let earliest = |c: &Candidate| {
        let t = top(c);
        c.victims.iter().filter(|p| priority(p) == t).filter_map(|p| start_time(p)).min()
    };
    cands.sort_by(|a, b| a.node.cmp(&b.node));
    cands.into_iter().min_by(|a, b| {
        a.pdb_violations
            .cmp(&b.pdb_violations)
            .then(top(a).cmp(&top(b)))
            .then(sum(a).cmp(&sum(b)))
            .then(a.victims.len().cmp(&b.victims.len()))
            .then(earliest(b).cmp(&earliest(a)))
    })
}

/// The outcome of PostFilter: a candidate to act on, or the message kube appends to the
/// FailedScheduling reason (already prefixed "preemption: ").
pub fn preempt(pod: &PodInfo, snap: &Snapshot, d: &Diagnosis, pdbs: &[Pdb]) -> Result<Candidate, String> {
    let spec = pod.pod.spec.as_ref();
    if spec.and_then(|s| s.preemption_policy.as_deref()) == Some("Never") {
        return Err("preemption: not eligible due to preemptionPolicy=Never.".into());
    }
    // Victims chosen earlier are still on their way out: wait for them, do not pick more.
    if let Some(nominated) = pod.pod.status.as_ref().and_then(|s| s.nominated_node_name.as_deref()).filter(|n| !n.is_empty()) {
        if let Some(n) = snap.nodes.iter().find(|n| n.name == nominated) {
            if n.pods.iter().any(|p| p.metadata.deletion_timestamp.is_some() && priority(p) < pod.priority) {
                return Err("preemption: not eligible due to a terminating pod on the nominated node.".into());
            }
        }
    }
    let mut why: BTreeMap<String, usize> = BTreeMap::new();
    let mut cands = Vec::new();
    for (i, n) in snap.nodes.iter().enumerate() {
        match d.rejected.get(&n.name) {
            Some(r) if !r.resolvable => *why.entry(NOT_HELPFUL.into()).or_default() += 1,
            Some(_) => match victims_on(pod, snap, i, pdbs) {
                Some(c) => cands.push(c),
                None => *why.entry(NO_VICTIMS.into()).or_default() += 1,
            },
            None => {}
        }
    }
    match pick(cands) {
        Some(c) => Ok(c),
        None => Err(format!("preemption: {}", super::unavailable_message(snap.nodes.len(), &why))),
    }
}

/// The PDBs as preemption reads them, from the stored objects.
pub fn pdb_of(v: &k8s_openapi::api::policy::v1::PodDisruptionBudget) -> Pdb {
    Pdb {
        namespace: v.metadata.namespace.clone().unwrap_or_default(),
        selector: v.spec.as_ref().and_then(|s| s.selector.clone()),
        disruptions_allowed: v.status.as_ref().and_then(|s| s.disruptions_allowed).unwrap_or(0),
    }
}


#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::plugins::testing::{node, pod_with, running};
    use serde_json::json;
    use std::collections::HashMap;

    fn victim(name: &str, prio: i32, cpu: &str, started: &str) -> Arc<Pod> {
        let mut p = (*running(name, json!({"app": name}), json!({"priority": prio, "containers": [{"name": "c", "resources": {"requests": {"cpu": cpu}}}]}))).clone();
        p.status = Some(serde_json::from_value(json!({"startTime": started})).unwrap());
        Arc::new(p)
    }

    fn high(cpu: &str) -> PodInfo {
        pod_with(json!({"priority": 1000, "containers": [{"name": "c", "resources": {"requests": {"cpu": cpu}}}]}))
    }

    fn run(p: &PodInfo, nodes: &[NodeInfo], pdbs: &[Pdb]) -> Result<Candidate, String> {
        let ns = HashMap::new();
        let snap = Snapshot { nodes, namespaces: &ns };
        let d = super::super::schedule(p, &snap).expect_err("the pod must not fit for these tests");
        preempt(p, &snap, &d, pdbs)
    }

    fn names(c: &Candidate) -> Vec<String> {
        c.victims.iter().map(|p| p.metadata.name.clone().unwrap()).collect()
    }

    #[test]
    fn evicts_as_few_lower_priority_pods_as_needed() {
        let n = node("n1").with_pod(victim("a", 10, "500m", "2026-01-01T00:00:00Z")).with_pod(victim("b", 5, "500m", "2026-01-01T00:00:00Z")).with_pod(victim("c", 1, "1", "2026-01-01T00:00:00Z"));
        let c = run(&high("1"), &[n], &[]).unwrap();
        assert_eq!(names(&c), vec!["c"], "the lowest one alone frees enough");
    }

    #[test]
    fn equal_or_higher_priority_pods_are_never_victims() {
        let n = node("n1").with_pod(victim("a", 1000, "2", "2026-01-01T00:00:00Z"));
        assert_eq!(run(&high("1"), &[n], &[]).unwrap_err(), "preemption: 0/1 nodes are available: 1 No preemption victims found for incoming pod.");
    }

    #[test]
    fn unresolvable_nodes_are_not_helped() {
        let tainted = node("n1").tainted("k", "", "NoSchedule");
        let full = node("n2").with_pod(victim("a", 2000, "2", "2026-01-01T00:00:00Z"));
        let d = run(&high("1"), &[tainted, full], &[]).unwrap_err();
        assert_eq!(d, "preemption: 0/2 nodes are available: 1 No preemption victims found for incoming pod, 1 Preemption is not helpful for scheduling.");
    }

    #[test]
    fn preemption_policy_never() {
        let p = pod_with(json!({"priority": 1000, "preemptionPolicy": "Never", "containers": [{"name": "c", "resources": {"requests": {"cpu": "1"}}}]}));
        let n = node("n1").with_pod(victim("a", 0, "2", "2026-01-01T00:00:00Z"));
        assert_eq!(run(&p, &[n], &[]).unwrap_err(), "preemption: not eligible due to preemptionPolicy=Never.");
    }

    #[test]
    fn node_choice_follows_kube_order() {
        // n1's victim has priority 50, n2's 10: the lower highest-priority victim wins.
        let n1 = node("n1").with_pod(victim("a", 50, "2", "2026-01-01T00:00:00Z"));
        let n2 = node("n2").with_pod(victim("b", 10, "2", "2026-01-01T00:00:00Z"));
        assert_eq!(run(&high("1"), &[n1, n2], &[]).unwrap().node, "n2");
        // Same priorities: fewer victims wins.
        let n1 = node("n1").with_pod(victim("a", 10, "1", "2026-01-01T00:00:00Z")).with_pod(victim("b", 10, "1", "2026-01-01T00:00:00Z"));
        let n2 = node("n2").with_pod(victim("c", 10, "2", "2026-01-01T00:00:00Z"));
        let c = run(&high("2"), &[n1, n2], &[]).unwrap();
        assert_eq!((c.node.as_str(), names(&c)), ("n2", vec!["c".to_string()]));
        // All else equal: the node whose victim started latest.
        let n1 = node("n1").with_pod(victim("a", 10, "2", "2026-01-01T00:00:00Z"));
        let n2 = node("n2").with_pod(victim("b", 10, "2", "2026-01-02T00:00:00Z"));
        assert_eq!(run(&high("1"), &[n1, n2], &[]).unwrap().node, "n2");
    }

    #[test]
    fn pdb_protected_pods_are_spared_when_possible() {
        let guarded = Pdb { namespace: "default".into(), selector: Some(serde_json::from_value(json!({"matchLabels": {"app": "a"}})).unwrap()), disruptions_allowed: 0 };
        let n1 = node("n1").with_pod(victim("a", 1, "2", "2026-01-01T00:00:00Z"));
        let n2 = node("n2").with_pod(victim("b", 5, "2", "2026-01-01T00:00:00Z"));
        let c = run(&high("1"), &[n1.clone(), n2], std::slice::from_ref(&guarded)).unwrap();
        assert_eq!((c.node.as_str(), c.pdb_violations), ("n2", 0), "a violation weighs more than priority");
        let c = run(&high("1"), &[n1], &[guarded]).unwrap();
        assert_eq!((names(&c), c.pdb_violations), (vec!["a".to_string()], 1), "violated when there is no other way");
    }

    #[test]
    fn waits_for_victims_already_terminating() {
        let mut p = high("1");
        p.pod.status = Some(serde_json::from_value(json!({"nominatedNodeName": "n1"})).unwrap());
        let mut v = (*victim("a", 1, "2", "2026-01-01T00:00:00Z")).clone();
        v.metadata.deletion_timestamp = Some(schema::object::now());
        let n = node("n1").with_pod(Arc::new(v));
        assert_eq!(run(&p, &[n], &[]).unwrap_err(), "preemption: not eligible due to a terminating pod on the nominated node.");
    }
}
