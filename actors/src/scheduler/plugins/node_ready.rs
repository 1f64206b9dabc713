//! Filter: only Ready nodes that are not cordoned take new pods, and only pods that
//! tolerate a node's NoSchedule/NoExecute taints go there (NodeUnschedulable +
//! TaintToleration; PreferNoSchedule only matters to scoring, which we do not do yet).

use super::{PodInfo, Reason};
use crate::scheduler::cache::NodeInfo;
use k8s_openapi::api::core::v1::{Taint, Toleration};

/// The taint Kubernetes puts on cordoned nodes; a pod tolerating it may go there anyway.
const UNSCHEDULABLE_TAINT: &str = "node.kubernetes.io/unschedulable";

pub fn filter(pod: &PodInfo, n: &NodeInfo) -> Result<(), Reason> {
    if !n.ready {
        return Err("node(s) were not ready".into());
    }
    let cordon = Taint { key: UNSCHEDULABLE_TAINT.into(), effect: "NoSchedule".into(), value: None, time_added: None };
    if n.unschedulable && !tolerated(&pod.tolerations, &cordon) {
        return Err("node(s) were unschedulable".into());
    }
    let blocking = n.taints.iter().filter(|t| t.effect == "NoSchedule" || t.effect == "NoExecute");
    for t in blocking {
        if !tolerated(&pod.tolerations, t) {
            return Err(format!("node(s) had untolerated taint {{{}: {}}}", t.key, t.value.as_deref().unwrap_or("")));
        }
    }
    Ok(())
}

/// Kubernetes' ToleratesTaint: effect empty or equal; key empty (with Exists) or equal;
/// Exists ignores the value, Equal (the default) compares it.
pub fn tolerated(tolerations: &[Toleration], t: &Taint) -> bool {
    tolerations.iter().any(|tol| {
        let effect_ok = tol.effect.as_deref().map(|e| e.is_empty() || e == t.effect).unwrap_or(true);
        let key = tol.key.as_deref().unwrap_or("");
        let exists = tol.operator.as_deref() == Some("Exists");
        let key_ok = if key.is_empty() { exists } else { key == t.key };
        let value_ok = exists || tol.value.as_deref().unwrap_or("") == t.value.as_deref().unwrap_or("");
        effect_ok && key_ok && value_ok
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::plugins::testing::{node, pod};

    #[test]
    fn ready_schedulable_untainted_nodes_pass() {
        assert_eq!(filter(&pod(), &node("n1")), Ok(()));
    }

    #[test]
    fn not_ready_and_cordoned_nodes_are_rejected() {
        assert_eq!(filter(&pod(), &node("n1").not_ready()), Err("node(s) were not ready".into()));
        assert_eq!(filter(&pod(), &node("n1").cordoned()), Err("node(s) were unschedulable".into()));
        assert_eq!(filter(&pod().tolerates(UNSCHEDULABLE_TAINT, "NoSchedule"), &node("n1").cordoned()), Ok(()));
    }

    #[test]
    fn taints_need_a_toleration() {
        let n = node("n1").tainted("dedicated", "db", "NoSchedule");
        assert_eq!(filter(&pod(), &n), Err("node(s) had untolerated taint {dedicated: db}".into()));
        assert_eq!(filter(&pod().tolerates("dedicated", "NoSchedule"), &n), Ok(()));
        assert_eq!(filter(&pod().tolerates("other", "NoSchedule"), &n).is_err(), true);
        // PreferNoSchedule never filters.
        assert_eq!(filter(&pod(), &node("n2").tainted("soft", "", "PreferNoSchedule")), Ok(()));
    }

    #[test]
    fn toleration_matching_rules() {
        let t = Taint { key: "k".into(), value: Some("v".into()), effect: "NoExecute".into(), time_added: None };
        let equal = |v: &str| Toleration { key: Some("k".into()), operator: Some("Equal".into()), value: Some(v.into()), effect: Some("NoExecute".into()), ..Default::default() };
        assert!(tolerated(&[equal("v")], &t));
        assert!(!tolerated(&[equal("w")], &t));
        let everything = Toleration { operator: Some("Exists".into()), ..Default::default() };
        assert!(tolerated(&[everything], &t));
        let wrong_effect = Toleration { key: Some("k".into()), operator: Some("Exists".into()), effect: Some("NoSchedule".into()), ..Default::default() };
        assert!(!tolerated(&[wrong_effect], &t));
    }
}
