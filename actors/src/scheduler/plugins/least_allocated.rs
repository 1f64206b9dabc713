//! Score: NodeResourcesFit's LeastAllocated strategy, prefer the node left with the most
//! free CPU and memory (each as a share of allocatable, weighted equally). A pod asking
//! for nothing is scored as asking for kube's non-zero defaults, 100m CPU and 200Mi.

use super::PodInfo;
pub use crate::scheduler::cache::non_zero;
use crate::scheduler::cache::NodeInfo;

/// 0..=100, higher is better.
pub fn score(pod: &PodInfo, n: &NodeInfo) -> i64 {
    let req = non_zero(pod.requests);
    let free = |alloc: u64, used: u64| if alloc == 0 || used > alloc { 0 } else { ((alloc - used) * 100 / alloc) as i64 };
    let cpu = free(n.allocatable.cpu_millis, n.nonzero_requested.cpu_millis + req.cpu_millis);
    let mem = free(n.allocatable.memory, n.nonzero_requested.memory + req.memory);
    (cpu + mem) / 2
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::plugins::place;
    use crate::scheduler::plugins::testing::{node, pod};

    #[test]
    fn three_pods_spread_over_two_nodes() {
        let mut nodes = vec![node("n1"), node("n2")];
        let p = pod().cpu("100m").memory("64Mi");
        let mut placed = Vec::new();
        for _ in 0..3 {
            let n = place(&p, &nodes).unwrap();
            let info = nodes.iter_mut().find(|x| x.name == n).unwrap();
            info.requested.cpu_millis += p.requests.cpu_millis;
            info.requested.memory += p.requests.memory;
            info.requested.pods += 1;
            info.nonzero_requested.cpu_millis += p.requests.cpu_millis;
            info.nonzero_requested.memory += p.requests.memory;
            placed.push(n);
        }
        assert_eq!(placed, vec!["n1", "n2", "n1"]);
    }

    #[test]
    fn pods_without_requests_spread() {
        let nodes = vec![node("n1").with_pod(crate::scheduler::plugins::testing::running("a", serde_json::json!({}), serde_json::json!({}))), node("n2")];
        assert_eq!(place(&pod(), &nodes).unwrap(), "n2", "a pod asking nothing still counts as 100m/200Mi");
        assert!(score(&pod(), &nodes[1]) > score(&pod(), &nodes[0]));
    }

    #[test]
    fn prefers_the_least_allocated_node() {
        let nodes = vec![node("n1").using("1500m", "0"), node("n2")];
        assert_eq!(place(&pod().cpu("100m"), &nodes).unwrap(), "n2");
        assert!(score(&pod(), &nodes[1]) > score(&pod(), &nodes[0]));
        // 2 cpu, 4Gi: asking 1 cpu and 2Gi leaves half of each.
        assert_eq!(score(&pod().cpu("1").memory("2Gi"), &node("n3")), 50);
    }
}
