//! Scheduler plugins: each a small pure function over (pod, node). Filters say why a node
//! is rejected; scores rank the rest. `place` runs them all and, when nothing fits, sums
//! the reasons into the message kube-scheduler writes ("0/2 nodes are available: …").

pub mod fit;
pub mod least_allocated;
pub mod node_ready;

use super::cache::{requests, NodeInfo, Resources};
use k8s_openapi::api::core::v1::{Pod, Toleration};
use std::collections::BTreeMap;

/// Why a filter rejected a node, as kube-scheduler words it ("Insufficient cpu").
pub type Reason = String;

/// What the plugins need to know about the pod being placed, computed once per attempt.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PodInfo {
    pub requests: Resources,
    pub tolerations: Vec<Toleration>,
}

pub fn pod_info(p: &Pod) -> PodInfo {
    PodInfo { requests: requests(p), tolerations: p.spec.as_ref().and_then(|s| s.tolerations.clone()).unwrap_or_default() }
}

/// Every filter's verdict on one node; a node is feasible when this is empty.
pub fn filter(pod: &PodInfo, node: &NodeInfo) -> Vec<Reason> {
    // Like the framework, later filters are skipped once one rejects the node, so a
    // NotReady node is reported as such, not also as full.
    if let Err(why) = node_ready::filter(pod, node) {
        return vec![why];
    }
    fit::filter(pod, node).err().unwrap_or_default()
}

/// Picks the best node, or explains why none fits. Ties go to the first node by name,
/// which keeps placement deterministic.
pub fn place(pod: &PodInfo, nodes: &[NodeInfo]) -> Result<String, String> {
    let mut reasons: BTreeMap<Reason, usize> = BTreeMap::new();
    let mut best: Option<(u32, &NodeInfo)> = None;
    for n in nodes {
        let why = filter(pod, n);
        if !why.is_empty() {
            for w in why {
                *reasons.entry(w).or_default() += 1;
            }
            continue;
        }
        let s = least_allocated::score(pod, n);
        if best.map(|(b, _)| s > b).unwrap_or(true) {
            best = Some((s, n));
        }
    }
    match best {
        Some((_, n)) => Ok(n.name.clone()),
        None => Err(unavailable_message(nodes.len(), &reasons)),
    }
}

/// "0/3 nodes are available: 1 node(s) were unschedulable, 2 Insufficient cpu."
pub fn unavailable_message(total: usize, reasons: &BTreeMap<Reason, usize>) -> String {
    if total == 0 {
        return "0/0 nodes are available: no nodes registered.".to_string();
    }
    let detail: Vec<String> = reasons.iter().map(|(r, c)| format!("{c} {r}")).collect();
    format!("0/{total} nodes are available: {}.", detail.join(", "))
}

#[cfg(test)]
pub(crate) mod testing {
    //! Builders for plugin tests: `node("n1").cpu("2").memory("4Gi")`, `pod().cpu("100m")`.
    use super::PodInfo;
    use crate::scheduler::cache::{NodeInfo, Resources};
    use k8s_openapi::api::core::v1::{Taint, Toleration};
    use schema::quantity;

    pub fn node(name: &str) -> NodeInfo {
        NodeInfo { name: name.into(), ready: true, unschedulable: false, taints: vec![], allocatable: Resources { cpu_millis: 2000, memory: 4 << 30, pods: 110 }, requested: Resources::default() }
    }

    pub fn pod() -> PodInfo {
        PodInfo { requests: Resources { pods: 1, ..Default::default() }, tolerations: vec![] }
    }

    impl NodeInfo {
        pub fn not_ready(mut self) -> Self {
            self.ready = false;
            self
        }
        pub fn cordoned(mut self) -> Self {
            self.unschedulable = true;
            self
        }
        pub fn tainted(mut self, key: &str, value: &str, effect: &str) -> Self {
            self.taints.push(Taint { key: key.into(), value: Some(value.into()), effect: effect.into(), time_added: None });
            self
        }
        pub fn cpu(mut self, q: &str) -> Self {
            self.allocatable.cpu_millis = quantity::cpu_millis(q).unwrap_or(0);
            self
        }
        pub fn memory(mut self, q: &str) -> Self {
            self.allocatable.memory = quantity::value(q).unwrap_or(0);
            self
        }
        pub fn using(mut self, cpu: &str, memory: &str) -> Self {
            self.requested.cpu_millis = quantity::cpu_millis(cpu).unwrap_or(0);
            self.requested.memory = quantity::value(memory).unwrap_or(0);
            self
        }
    }

    impl PodInfo {
        pub fn cpu(mut self, q: &str) -> Self {
            self.requests.cpu_millis = quantity::cpu_millis(q).unwrap_or(0);
            self
        }
        pub fn memory(mut self, q: &str) -> Self {
            self.requests.memory = quantity::value(q).unwrap_or(0);
            self
        }
        pub fn tolerates(mut self, key: &str, effect: &str) -> Self {
            self.tolerations.push(Toleration { key: Some(key.into()), operator: Some("Exists".into()), effect: Some(effect.into()), ..Default::default() });
            self
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{node, pod};
    use super::*;

    #[test]
    fn reasons_are_collected_into_one_message() {
        let nodes = vec![node("n1").using("2", "0"), node("n2").using("1900m", "0"), node("n3").not_ready()];
        let err = place(&pod().cpu("200m"), &nodes).unwrap_err();
        assert_eq!(err, "0/3 nodes are available: 2 Insufficient cpu, 1 node(s) were not ready.");
    }

    #[test]
    fn the_brief_example_message() {
        let nodes = vec![node("n1").cpu("1"), node("n2").cpu("1")];
        assert_eq!(place(&pod().cpu("2"), &nodes).unwrap_err(), "0/2 nodes are available: 2 Insufficient cpu.");
    }

    #[test]
    fn no_nodes_at_all() {
        assert_eq!(place(&pod(), &[]).unwrap_err(), "0/0 nodes are available: no nodes registered.");
    }

    #[test]
    fn pod_info_sums_container_requests_and_keeps_tolerations() {
        let p: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web-1"},
            "spec": {
                "containers": [
                    {"name": "a", "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}}},
                    {"name": "b", "resources": {"limits": {"cpu": "1", "memory": "500M"}}}
                ],
                "tolerations": [{"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"}]
            }
        }))
        .unwrap();
        let info = pod_info(&p);
        assert_eq!(info.requests, Resources { cpu_millis: 1100, memory: (128 << 20) + 500_000_000, pods: 1 });
        assert_eq!(info.tolerations.len(), 1);
    }
}
