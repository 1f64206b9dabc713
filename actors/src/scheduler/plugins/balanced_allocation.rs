//! Score: NodeResourcesBalancedAllocation, prefer the node whose CPU and memory would be
//! used in the most similar proportions once the pod is there, so neither runs out while
//! the other idles: 100 × (1 − the standard deviation of the two used fractions).

use super::least_allocated::non_zero;
use super::PodInfo;
use crate::scheduler::cache::NodeInfo;

pub fn score(pod: &PodInfo, n: &NodeInfo) -> i64 {
    let req = non_zero(pod.requests);
    let frac = |alloc: u64, used: u64| if alloc == 0 { 1.0 } else { (used as f64 / alloc as f64).min(1.0) };
    let cpu = frac(n.allocatable.cpu_millis, n.nonzero_requested.cpu_millis + req.cpu_millis);
    let mem = frac(n.allocatable.memory, n.nonzero_requested.memory + req.memory);
    let std = (cpu - mem).abs() / 2.0;
    ((1.0 - std) * 100.0) as i64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::plugins::testing::{node, pod};

    #[test]
    fn even_use_scores_higher() {
        // 2 cpu / 4Gi: 1 cpu + 2Gi is perfectly balanced, 1 cpu + a little memory is not.
        assert_eq!(score(&pod().cpu("1").memory("2Gi"), &node("n1")), 100);
        let lopsided = score(&pod().cpu("1").memory("1Mi"), &node("n1"));
        assert!((75..100).contains(&lopsided), "{lopsided}");
        assert!(score(&pod().memory("2Gi"), &node("n1").using("900m", "0")) > score(&pod().memory("2Gi"), &node("n2")));
    }
}
