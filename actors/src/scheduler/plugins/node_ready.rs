//! Filter: only Ready nodes that are not cordoned take new pods (NodeUnschedulable, and
//! readiness for nodes whose lifecycle taints have not been written yet); a pod that
//! tolerates the cordon taint may still go to a cordoned node.

use super::taint_toleration::tolerated;
use super::{PodInfo, Reason};
use crate::scheduler::cache::NodeInfo;
use k8s_openapi::api::core::v1::Taint;

/// The taint Kubernetes puts on cordoned nodes; a pod tolerating it may go there anyway.
pub const UNSCHEDULABLE_TAINT: &str = "node.kubernetes.io/unschedulable";

pub fn filter(pod: &PodInfo, n: &NodeInfo) -> Result<(), Reason> {
    if !n.ready {
        return Err("node(s) were not ready".into());
    }
    let cordon = Taint { key: UNSCHEDULABLE_TAINT.into(), effect: "NoSchedule".into(), value: None, time_added: None };
    if n.unschedulable && !tolerated(&pod.tolerations, &cordon) {
        return Err("node(s) were unschedulable".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::plugins::testing::{node, pod};

    #[test]
    fn ready_schedulable_nodes_pass() {
        assert_eq!(filter(&pod(), &node("n1")), Ok(()));
    }

    #[test]
    fn not_ready_and_cordoned_nodes_are_rejected() {
        assert_eq!(filter(&pod(), &node("n1").not_ready()), Err("node(s) were not ready".into()));
        assert_eq!(filter(&pod(), &node("n1").cordoned()), Err("node(s) were unschedulable".into()));
        assert_eq!(filter(&pod().tolerates(UNSCHEDULABLE_TAINT, "NoSchedule"), &node("n1").cordoned()), Ok(()));
    }
}
