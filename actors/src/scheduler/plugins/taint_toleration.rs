//! TaintToleration: a node's NoSchedule and NoExecute taints keep away the pods that do
//! not tolerate them; PreferNoSchedule taints only lower a node's score, by how many of
//! them the pod does not tolerate.

use super::{PodInfo, Reason};
use crate::scheduler::cache::NodeInfo;
use k8s_openapi::api::core::v1::{Taint, Toleration};

pub fn filter(pod: &PodInfo, n: &NodeInfo) -> Result<(), Reason> {
    let blocking = n.taints.iter().filter(|t| t.effect == "NoSchedule" || t.effect == "NoExecute");
    for t in blocking {
        if !tolerated(&pod.tolerations, t) {
            return Err(format!("node(s) had untolerated taint {{{}: {}}}", t.key, t.value.as_deref().unwrap_or("")));
        }
    }
    Ok(())
}

/// Raw score: the PreferNoSchedule taints the pod does not tolerate (fewer is better; the
/// normalisation reverses it). Only tolerations with an empty or PreferNoSchedule effect
/// count here, as in kube.
pub fn score(pod: &PodInfo, n: &NodeInfo) -> i64 {
    let soft: Vec<Toleration> = pod.tolerations.iter().filter(|t| t.effect.as_deref().is_none_or(|e| e.is_empty() || e == "PreferNoSchedule")).cloned().collect();
    n.taints.iter().filter(|t| t.effect == "PreferNoSchedule" && !tolerated(&soft, t)).count() as i64
}

/// Kubernetes' ToleratesTaint: effect empty or equal; key empty (with Exists) or equal;
/// Exists ignores the value, Equal (the default) compares it.
pub fn tolerated(tolerations: &[Toleration], t: &Taint) -> bool {
    tolerations.iter().any(|tol| tolerates(tol, t))
}

pub fn tolerates(tol: &Toleration, t: &Taint) -> bool {
    let effect_ok = tol.effect.as_deref().map(|e| e.is_empty() || e == t.effect).unwrap_or(true);
    let key = tol.key.as_deref().unwrap_or("");
    let exists = tol.operator.as_deref() == Some("Exists");
    let key_ok = if key.is_empty() { exists } else { key == t.key };
    let value_ok = exists || tol.value.as_deref().unwrap_or("") == t.value.as_deref().unwrap_or("");
    effect_ok && key_ok && value_ok
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::plugins::testing::{node, pod};

    #[test]
    fn taints_need_a_toleration() {
        let n = node("n1").tainted("dedicated", "db", "NoSchedule");
        assert_eq!(filter(&pod(), &n), Err("node(s) had untolerated taint {dedicated: db}".into()));
        assert_eq!(filter(&pod().tolerates("dedicated", "NoSchedule"), &n), Ok(()));
        assert!(filter(&pod().tolerates("other", "NoSchedule"), &n).is_err());
        let cp = node("cp").tainted("node-role.kubernetes.io/control-plane", "", "NoSchedule");
        assert_eq!(filter(&pod(), &cp), Err("node(s) had untolerated taint {node-role.kubernetes.io/control-plane: }".into()));
        // PreferNoSchedule never filters.
        assert_eq!(filter(&pod(), &node("n2").tainted("soft", "", "PreferNoSchedule")), Ok(()));
    }

    #[test]
    fn prefer_no_schedule_taints_count_against_a_node() {
        let n = node("n1").tainted("a", "", "PreferNoSchedule").tainted("b", "", "PreferNoSchedule").tainted("c", "", "NoSchedule");
        assert_eq!(score(&pod(), &n), 2);
        assert_eq!(score(&pod().tolerates("a", "PreferNoSchedule"), &n), 1);
        assert_eq!(score(&pod().tolerates("a", "NoSchedule"), &n), 2, "a NoSchedule toleration does not soften a PreferNoSchedule taint");
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
