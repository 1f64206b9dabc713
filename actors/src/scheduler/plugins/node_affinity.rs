//! NodeAffinity: the pod's nodeSelector and required node affinity (matchExpressions over
//! labels, matchFields over `metadata.name`) filter nodes; its preferred terms score them
//! by the summed weight of the terms a node matches.

use super::selectors::{node_term_matches, node_terms_match};
use super::{PodInfo, Reason};
use crate::scheduler::cache::NodeInfo;

/// kube-scheduler's nodeaffinity.ErrReasonPod.
pub const ERR_REASON_POD: &str = "node(s) didn't match Pod's node affinity/selector";

/// Whether the pod may go to this node by selector and required affinity alone (also used
/// by topology spreading's nodeAffinityPolicy: Honor).
pub fn matches(pod: &PodInfo, n: &NodeInfo) -> bool {
    let spec = pod.pod.spec.as_ref();
    let selector_ok = spec.and_then(|s| s.node_selector.as_ref()).into_iter().flatten().all(|(k, v)| n.labels.get(k) == Some(v));
    let required = spec.and_then(|s| s.affinity.as_ref()).and_then(|a| a.node_affinity.as_ref()).and_then(|na| na.required_during_scheduling_ignored_during_execution.as_ref());
    selector_ok && required.is_none_or(|r| node_terms_match(&r.node_selector_terms, &n.labels, &n.name))
}

pub fn filter(pod: &PodInfo, n: &NodeInfo) -> Result<(), Reason> {
    if matches(pod, n) { Ok(()) } else { Err(ERR_REASON_POD.into()) }
}

/// Raw score: the summed weights of the preferred terms this node matches.
pub fn score(pod: &PodInfo, n: &NodeInfo) -> i64 {
    let preferred = pod.pod.spec.as_ref().and_then(|s| s.affinity.as_ref()).and_then(|a| a.node_affinity.as_ref()).and_then(|na| na.preferred_during_scheduling_ignored_during_execution.as_ref());
    preferred.into_iter().flatten().filter(|t| t.weight != 0 && node_term_matches(&t.preference, &n.labels, &n.name)).map(|t| t.weight as i64).sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::plugins::testing::{node, pod_with};
    use serde_json::json;

    #[test]
    fn node_selector_and_required_affinity_filter() {
        let p = pod_with(json!({"nodeSelector": {"disk": "ssd"}}));
        assert_eq!(filter(&p, &node("n1").labeled(&[("disk", "ssd")])), Ok(()));
        assert_eq!(filter(&p, &node("n1")), Err(ERR_REASON_POD.to_string()));
        let p = pod_with(json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]},
            {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n9"]}]}
        ]}}}}));
        assert!(filter(&p, &node("n1").labeled(&[("zone", "a")])).is_ok());
        assert!(filter(&p, &node("n9")).is_ok(), "terms are ORed; matchFields sees the name");
        assert!(filter(&p, &node("n1").labeled(&[("zone", "b")])).is_err());
    }

    #[test]
    fn preferred_terms_add_their_weights() {
        let p = pod_with(json!({"affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 10, "preference": {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}},
            {"weight": 5, "preference": {"matchExpressions": [{"key": "disk", "operator": "Exists"}]}}
        ]}}}));
        assert_eq!(score(&p, &node("n1").labeled(&[("zone", "a"), ("disk", "ssd")])), 15);
        assert_eq!(score(&p, &node("n2").labeled(&[("disk", "hdd")])), 5);
        assert_eq!(score(&p, &node("n3")), 0);
    }
}
