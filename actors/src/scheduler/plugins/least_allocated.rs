//! Score: prefer the node left with the most free CPU and memory (as fractions), then the
//! one with fewer pods, so replicas spread (NodeResourcesLeastAllocated + spreading).

use crate::scheduler::cache::{NodeInfo, Resources};

pub fn score(req: Resources, n: &NodeInfo) -> u64 {
    let free = |alloc: u64, used: u64| if alloc == 0 { 0 } else { alloc.saturating_sub(used) * 1000 / alloc };
    let cpu = free(n.allocatable.cpu_millis, n.requested.cpu_millis + req.cpu_millis);
    let mem = free(n.allocatable.memory, n.requested.memory + req.memory);
    let pods = free(n.allocatable.pods, n.requested.pods + req.pods);
    // Resources dominate; the pod count breaks ties between pods that request nothing.
    (cpu + mem) * 1000 + pods
}

#[cfg(test)]
mod tests {
    use crate::scheduler::cache::{NodeInfo, Resources};
    use crate::scheduler::plugins::place;

    fn node(name: &str, ready: bool) -> NodeInfo {
        NodeInfo { name: name.into(), ready, unschedulable: false, allocatable: Resources { cpu_millis: 2000, memory: 4 << 30, pods: 110 }, requested: Resources::default() }
    }

    #[test]
    fn three_pods_spread_over_two_nodes() {
        let mut nodes = vec![node("n1", true), node("n2", true)];
        let req = Resources { pods: 1, ..Default::default() };
        let mut placed = Vec::new();
        for _ in 0..3 {
            let n = place(req, &nodes).unwrap();
            let info = nodes.iter_mut().find(|x| x.name == n).unwrap();
            info.requested.pods += 1;
            placed.push(n);
        }
        assert!(placed.contains(&"n1".to_string()) && placed.contains(&"n2".to_string()), "{placed:?}");
    }

    #[test]
    fn reasons_are_collected() {
        let mut full = node("n1", true);
        full.requested.cpu_millis = 2000;
        let nodes = vec![full, node("n2", false)];
        let err = place(Resources { cpu_millis: 100, memory: 0, pods: 1 }, &nodes).unwrap_err();
        assert_eq!(err, "0/2 nodes are available: 1 Insufficient cpu, 1 node(s) were not ready.");
    }

    #[test]
    fn prefers_the_least_allocated_node() {
        let mut busy = node("n1", true);
        busy.requested.cpu_millis = 1500;
        let nodes = vec![busy, node("n2", true)];
        assert_eq!(place(Resources { cpu_millis: 100, memory: 0, pods: 1 }, &nodes).unwrap(), "n2");
    }
}
