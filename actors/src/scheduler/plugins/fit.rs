//! Filter: the node's allocatable CPU, memory and pod count cover what is already
//! requested there plus this pod's requests (NodeResourcesFit). Every shortfall is a
//! reason of its own, as in kube-scheduler ("Insufficient cpu", "Insufficient memory").

use super::{PodInfo, Reason};
use crate::scheduler::cache::NodeInfo;

pub fn filter(pod: &PodInfo, n: &NodeInfo) -> Result<(), Vec<Reason>> {
    let req = pod.requests;
    let mut why = Vec::new();
    if n.requested.pods + req.pods > n.allocatable.pods {
        why.push("Too many pods".to_string());
    }
    // A pod that requests nothing of a resource fits whatever is left of it.
    if req.cpu_millis > 0 && n.requested.cpu_millis + req.cpu_millis > n.allocatable.cpu_millis {
        why.push("Insufficient cpu".to_string());
    }
    if req.memory > 0 && n.requested.memory + req.memory > n.allocatable.memory {
        why.push("Insufficient memory".to_string());
    }
    if why.is_empty() { Ok(()) } else { Err(why) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::plugins::testing::{node, pod};

    #[test]
    fn fits_within_what_is_left() {
        let n = node("n1").cpu("2").memory("1Gi").using("1500m", "512Mi");
        assert_eq!(filter(&pod().cpu("500m").memory("512Mi"), &n), Ok(()));
        assert_eq!(filter(&pod().cpu("501m"), &n), Err(vec!["Insufficient cpu".to_string()]));
        assert_eq!(filter(&pod().memory("513Mi"), &n), Err(vec!["Insufficient memory".to_string()]));
        assert_eq!(filter(&pod().cpu("1").memory("1Gi"), &n), Err(vec!["Insufficient cpu".to_string(), "Insufficient memory".to_string()]));
    }

    #[test]
    fn pods_without_requests_fit_a_full_node_but_not_past_its_pod_limit() {
        let mut n = node("n1").using("2", "4Gi");
        assert_eq!(filter(&pod(), &n), Ok(()));
        n.requested.pods = n.allocatable.pods;
        assert_eq!(filter(&pod(), &n), Err(vec!["Too many pods".to_string()]));
    }

    #[test]
    fn decimal_and_binary_suffixes() {
        let n = node("n1").memory("1G");
        assert_eq!(filter(&pod().memory("500M"), &n), Ok(()));
        assert!(filter(&pod().memory("1Gi"), &n).is_err(), "1Gi > 1G");
    }
}
