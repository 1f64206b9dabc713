//! PodTopologySpread: the pod's topologySpreadConstraints keep matching pods spread over
//! topology domains. DoNotSchedule constraints filter (a domain may hold at most maxSkew
//! more matching pods than the emptiest one, minDomains counting absent domains as
//! empty); ScheduleAnyway constraints score the less crowded domains higher.

use super::selectors::label_selector_matches;
use super::taint_toleration::tolerated;
use super::{node_affinity, PodInfo, Reason, Snapshot};
use crate::scheduler::cache::{Labels, NodeInfo};
use k8s_openapi::api::core::v1::TopologySpreadConstraint;
use std::collections::{BTreeMap, HashMap};

pub const ERR_CONSTRAINTS: &str = "node(s) didn't match pod topology spread constraints";
pub const ERR_MISSING_LABEL: &str = "node(s) didn't match pod topology spread constraints (missing required label)";

fn constraints<'a>(pod: &'a PodInfo, when: &str) -> Vec<&'a TopologySpreadConstraint> {
    pod.pod.spec.as_ref().and_then(|s| s.topology_spread_constraints.as_ref()).into_iter().flatten().filter(|c| c.when_unsatisfiable == when).collect()
}

/// The selector with matchLabelKeys folded in (the pod's own values for those keys).
fn selects(c: &TopologySpreadConstraint, pod: &PodInfo, q_labels: &Labels) -> bool {
    let Some(sel) = &c.label_selector else { return false };
    let own = pod.pod.metadata.labels.clone().unwrap_or_default();
    let keys_ok = c.match_label_keys.iter().flatten().all(|k| own.get(k).is_none_or(|v| q_labels.get(k) == Some(v)));
    keys_ok && label_selector_matches(sel, q_labels)
}

/// Whether a node takes part in a constraint's counting (nodeAffinityPolicy defaults to
/// Honor, nodeTaintsPolicy to Ignore).
fn eligible(c: &TopologySpreadConstraint, pod: &PodInfo, n: &NodeInfo) -> bool {
    let affinity_ok = c.node_affinity_policy.as_deref() == Some("Ignore") || node_affinity::matches(pod, n);
    let taints_ok = c.node_taints_policy.as_deref() != Some("Honor") || n.taints.iter().filter(|t| t.effect == "NoSchedule" || t.effect == "NoExecute").all(|t| tolerated(&pod.tolerations, t));
    n.labels.contains_key(&c.topology_key) && affinity_ok && taints_ok
}

/// Matching pods per domain value of the constraint's key, every eligible domain present.
fn counts(c: &TopologySpreadConstraint, pod: &PodInfo, snap: &Snapshot) -> BTreeMap<String, i64> {
    let ns = pod.namespace.as_str();
    let mut m = BTreeMap::new();
    for n in snap.nodes.iter().filter(|n| eligible(c, pod, n)) {
        let matching = n
            .pods
            .iter()
            .filter(|q| q.metadata.deletion_timestamp.is_none() && q.metadata.namespace.as_deref().unwrap_or("default") == ns)
            .filter(|q| selects(c, pod, q.metadata.labels.as_ref().unwrap_or(&Labels::new())))
            .count() as i64;
        *m.entry(n.labels[&c.topology_key].clone()).or_default() += matching;
    }
    m
}

/// PreFilter's counts for the DoNotSchedule constraints.
pub struct PreState<'a> {
    hard: Vec<(&'a TopologySpreadConstraint, BTreeMap<String, i64>)>,
    self_match: Vec<bool>,
}

impl<'a> PreState<'a> {
    pub fn new(pod: &'a PodInfo, snap: &Snapshot) -> PreState<'a> {
        let hard: Vec<_> = constraints(pod, "DoNotSchedule").into_iter().map(|c| (c, counts(c, pod, snap))).collect();
        let own = pod.pod.metadata.labels.clone().unwrap_or_default();
        let self_match = hard.iter().map(|(c, _)| selects(c, pod, &own)).collect();
        PreState { hard, self_match }
    }

    /// The error says whether preemption could help (a missing label cannot be helped).
    pub fn filter(&self, n: &NodeInfo) -> Result<(), (Reason, bool)> {
        for ((c, counts), me) in self.hard.iter().zip(&self.self_match) {
            let Some(value) = n.labels.get(&c.topology_key) else { return Err((ERR_MISSING_LABEL.into(), false)) };
            let mut min = counts.values().copied().min().unwrap_or(0);
            if (counts.len() as i32) < c.min_domains.unwrap_or(1) {
                min = 0;
            }
            let here = counts.get(value).copied().unwrap_or(0) + i64::from(*me);
            if here - min > c.max_skew as i64 {
                return Err((ERR_CONSTRAINTS.into(), true));
            }
        }
        Ok(())
    }
}

/// Normalised scores (0..=100) for the feasible nodes from the ScheduleAnyway constraints;
/// empty when the pod has none.
pub fn scores(pod: &PodInfo, snap: &Snapshot, feasible: &[&NodeInfo]) -> HashMap<String, i64> {
    let soft = constraints(pod, "ScheduleAnyway");
    if soft.is_empty() {
        return HashMap::new();
    }
    let per: Vec<(&TopologySpreadConstraint, BTreeMap<String, i64>)> = soft.into_iter().map(|c| (c, counts(c, pod, snap))).collect();
    let raw: Vec<(String, Option<f64>)> = feasible
        .iter()
        .map(|n| {
            let mut total = 0.0;
            for (c, counts) in &per {
                let Some(v) = n.labels.get(&c.topology_key) else { return (n.name.clone(), None) };
                // kube weighs each constraint by log(domains + 2) and adds maxSkew - 1.
                let weight = ((counts.len() + 2) as f64).ln();
                total += counts.get(v).copied().unwrap_or(0) as f64 * weight + (c.max_skew - 1) as f64;
            }
            (n.name.clone(), Some(total))
        })
        .collect();
    let present: Vec<f64> = raw.iter().filter_map(|(_, s)| *s).collect();
    let max = present.iter().copied().fold(0.0, f64::max);
    let min = present.iter().copied().fold(f64::MAX, f64::min);
    raw.into_iter()
        .map(|(name, s)| {
            let v = match s {
                None => 0,
                Some(_) if max == 0.0 => 100,
                Some(s) => (100.0 * (max + min - s) / max) as i64,
            };
            (name, v)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::plugins::testing::{node, pod_labeled, running};
    use serde_json::json;

    fn spread(when: &str, skew: i32, extra: serde_json::Value) -> serde_json::Value {
        let mut c = json!({"maxSkew": skew, "topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": when, "labelSelector": {"matchLabels": {"app": "web"}}});
        c.as_object_mut().unwrap().extend(extra.as_object().cloned().unwrap_or_default());
        json!({"topologySpreadConstraints": [c]})
    }

    fn host(n: &str, webs: usize) -> NodeInfo {
        let mut info = node(n).labeled(&[("kubernetes.io/hostname", n)]);
        for i in 0..webs {
            info = info.with_pod(running(&format!("{n}-{i}"), json!({"app": "web"}), json!({})));
        }
        info
    }

    fn verdicts(p: &PodInfo, nodes: &[NodeInfo]) -> Vec<bool> {
        let ns = HashMap::new();
        let st = PreState::new(p, &Snapshot { nodes, namespaces: &ns });
        nodes.iter().map(|n| st.filter(n).is_ok()).collect()
    }

    #[test]
    fn do_not_schedule_keeps_the_skew() {
        let p = pod_labeled(&[("app", "web")], spread("DoNotSchedule", 1, json!({})));
        assert_eq!(verdicts(&p, &[host("n1", 1), host("n2", 0)]), vec![false, true]);
        assert_eq!(verdicts(&p, &[host("n1", 1), host("n2", 1)]), vec![true, true]);
        let ns = HashMap::new();
        let nodes = [host("n1", 2), host("n2", 0)];
        let st = PreState::new(&p, &Snapshot { nodes: &nodes, namespaces: &ns });
        assert_eq!(st.filter(&nodes[0]), Err((ERR_CONSTRAINTS.into(), true)));
        assert_eq!(st.filter(&node("bare")), Err((ERR_MISSING_LABEL.into(), false)));
    }

    #[test]
    fn min_domains_counts_missing_domains_as_empty() {
        let p = pod_labeled(&[("app", "web")], spread("DoNotSchedule", 1, json!({"minDomains": 3})));
        assert_eq!(verdicts(&p, &[host("n1", 1), host("n2", 1)]), vec![false, false]);
        assert_eq!(verdicts(&p, &[host("n1", 0), host("n2", 1)]), vec![true, false]);
    }

    #[test]
    fn node_affinity_policy_honor_leaves_out_nodes_the_pod_cannot_use() {
        let mut spec = spread("DoNotSchedule", 1, json!({}));
        spec["nodeSelector"] = json!({"pool": "a"});
        let p = pod_labeled(&[("app", "web")], spec.clone());
        let a = host("n1", 1).labeled(&[("pool", "a")]);
        // n2 is not in pool a: its empty domain does not count, so n1 may take another.
        assert!(verdicts(&p, &[a.clone(), host("n2", 0)])[0]);
        spec["topologySpreadConstraints"][0]["nodeAffinityPolicy"] = json!("Ignore");
        let p = pod_labeled(&[("app", "web")], spec);
        assert!(!verdicts(&p, &[a, host("n2", 0)])[0]);
    }

    #[test]
    fn schedule_anyway_scores_the_emptier_domain() {
        let p = pod_labeled(&[("app", "web")], spread("ScheduleAnyway", 1, json!({})));
        let nodes = [host("n1", 2), host("n2", 0), node("bare")];
        let ns = HashMap::new();
        let all: Vec<&NodeInfo> = nodes.iter().collect();
        let s = scores(&p, &Snapshot { nodes: &nodes, namespaces: &ns }, &all);
        assert!(s["n2"] > s["n1"], "{s:?}");
        assert_eq!(s["bare"], 0);
        assert!(scores(&pod_labeled(&[], json!({})), &Snapshot { nodes: &nodes, namespaces: &ns }, &all).is_empty());
    }
}
