//! Score: prefer the node left with the most free CPU and memory (as fractions), then the
//! one with fewer pods, so replicas spread (NodeResourcesLeastAllocated + spreading).

use super::PodInfo;
use crate::scheduler::cache::NodeInfo;

/// Higher is better. Resources dominate; the pod count breaks ties between nodes that
/// look alike to pods that request nothing.
pub fn score(pod: &PodInfo, n: &NodeInfo) -> u32 {
    let req = pod.requests;
    let free = |alloc: u64, used: u64| if alloc == 0 { 0 } else { (alloc.saturating_sub(used) * 1000 / alloc) as u32 };
    let cpu = free(n.allocatable.cpu_millis, n.requested.cpu_millis + req.cpu_millis);
    let mem = free(n.allocatable.memory, n.requested.memory + req.memory);
    let pods = free(n.allocatable.pods, n.requested.pods + req.pods);
    (cpu + mem) * 1001 + pods
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
            placed.push(n);
        }
        assert_eq!(placed, vec!["n1", "n2", "n1"]);
    }

    #[test]
    fn pods_without_requests_spread_by_count() {
        let mut nodes = vec![node("n1"), node("n2")];
        nodes[0].requested.pods = 1;
        assert_eq!(place(&pod(), &nodes).unwrap(), "n2");
    }

    #[test]
    fn prefers_the_least_allocated_node() {
        let nodes = vec![node("n1").using("1500m", "0"), node("n2")];
        assert_eq!(place(&pod().cpu("100m"), &nodes).unwrap(), "n2");
        assert!(score(&pod(), &nodes[1]) > score(&pod(), &nodes[0]));
    }
}
