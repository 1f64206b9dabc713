//! Scheduler plugins: each a small pure function over (pod, node), some with a PreFilter
//! state computed once from the whole snapshot. Filters say why a node is rejected and
//! whether removing pods could help (for preemption); scores rank the rest, normalised
//! and weighted as kube-scheduler's default profile does. `schedule` runs them all and,
//! when nothing fits, sums the reasons into kube's message ("0/2 nodes are available: …").

pub mod balanced_allocation;
pub mod default_preemption;
pub mod fit;
pub mod image_locality;
pub mod inter_pod_affinity;
pub mod least_allocated;
pub mod node_affinity;
pub mod node_ports;
pub mod node_ready;
pub mod selectors;
pub mod taint_toleration;
pub mod topology_spread;
pub mod volume_binding;

use super::cache::{requests, Labels, NodeInfo, Resources};
use k8s_openapi::api::core::v1::{Pod, Toleration};
use std::collections::{BTreeMap, HashMap};

/// Why a filter rejected a node, as kube-scheduler words it ("Insufficient cpu").
pub type Reason = String;

/// What the plugins need to know about the pod being placed, computed once per attempt.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PodInfo {
    pub requests: Resources,
    pub tolerations: Vec<Toleration>,
    pub namespace: String,
    pub priority: i32,
    pub pod: Pod,
    /// What its PersistentVolumeClaims allow, from the scheduler's claims and volumes
    /// (`volume_binding::pre_filter`); empty when it has none.
    pub volumes: volume_binding::PodVolumes,
}

pub fn pod_info(p: &Pod) -> PodInfo {
    PodInfo {
        requests: requests(p),
        tolerations: p.spec.as_ref().and_then(|s| s.tolerations.clone()).unwrap_or_default(),
        namespace: p.metadata.namespace.clone().unwrap_or_else(|| "default".into()),
        priority: priority(p),
        pod: p.clone(),
        volumes: Default::default(),
    }
}

/// `spec.priority` as admission resolved it (0 without one).
pub fn priority(p: &Pod) -> i32 {
    p.spec.as_ref().and_then(|s| s.priority).unwrap_or(0)
}

/// The cluster as one attempt sees it.
#[derive(Clone, Copy)]
pub struct Snapshot<'a> {
    pub nodes: &'a [NodeInfo],
    pub namespaces: &'a HashMap<String, Labels>,
}

/// A node's rejection: every reason the failing filter gave, and whether evicting pods
/// could make room (kube's Unschedulable versus UnschedulableAndUnresolvable).
#[derive(Debug, Clone, PartialEq)]
pub struct Rejection {
    pub reasons: Vec<Reason>,
    pub resolvable: bool,
}

/// Why no node fits: the rejection of every node, by name.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Diagnosis {
    pub total: usize,
    /// A PreFilter's verdict that rules out every node at once (kube's PreFilterMsg).
    pub pre_filter: Option<Reason>,
    pub rejected: BTreeMap<String, Rejection>,
}

impl Diagnosis {
    /// kube's FitError message; `post_filter` is preemption's, when it ran.
    pub fn message(&self, post_filter: Option<&str>) -> String {
        let mut counts: BTreeMap<Reason, usize> = BTreeMap::new();
        for r in self.rejected.values() {
            for w in &r.reasons {
                *counts.entry(w.clone()).or_default() += 1;
            }
        }
        let mut m = match &self.pre_filter {
            Some(why) if self.total > 0 => format!("0/{} nodes are available: {why}.", self.total),
            _ => unavailable_message(self.total, &counts),
        };
        if let Some(p) = post_filter {
            m.push(' ');
            m.push_str(p);
        }
        m
    }
}

/// The PreFilter states of one attempt and the filter chain over them.
pub struct Filters<'a> {
    affinity: inter_pod_affinity::PreState,
    spread: topology_spread::PreState<'a>,
}

impl<'a> Filters<'a> {
    pub fn new(pod: &'a PodInfo, snap: &Snapshot) -> Filters<'a> {
        Filters { affinity: inter_pod_affinity::PreState::new(pod, snap), spread: topology_spread::PreState::new(pod, snap) }
    }

    /// Like the framework, later filters are skipped once one rejects the node, so a
    /// NotReady node is reported as such, not also as full. kube's default order.
    pub fn check(&self, pod: &PodInfo, n: &NodeInfo) -> Option<Rejection> {
        let hard = |r: Result<(), Reason>| r.err().map(|w| Rejection { reasons: vec![w], resolvable: false });
        let soft = |r: Result<(), (Reason, bool)>| r.err().map(|(w, resolvable)| Rejection { reasons: vec![w], resolvable });
        hard(node_ready::filter(pod, n))
            .or_else(|| hard(taint_toleration::filter(pod, n)))
            .or_else(|| hard(node_affinity::filter(pod, n)))
            .or_else(|| node_ports::filter(pod, n).err().map(|w| Rejection { reasons: vec![w], resolvable: true }))
            .or_else(|| fit::filter(pod, n).err().map(|reasons| Rejection { reasons, resolvable: true }))
            .or_else(|| hard(volume_binding::filter(pod, n)))
            .or_else(|| soft(self.spread.filter(n)))
            .or_else(|| soft(self.affinity.filter(pod, n)))
    }
}

/// kube's DefaultNormalizeScore: scaled to 0..=100 by the maximum, optionally reversed.
fn normalize(raw: &HashMap<String, i64>, reverse: bool) -> HashMap<String, i64> {
    let max = raw.values().copied().max().unwrap_or(0);
    raw.iter()
        .map(|(k, v)| {
            let s = if max == 0 { if reverse { 100 } else { 0 } } else if reverse { 100 - v * 100 / max } else { v * 100 / max };
            (k.clone(), s)
        })
        .collect()
}

/// Weighted, normalised scores of the feasible nodes (weights of kube's default
/// profile: TaintToleration 3, NodeAffinity 2, PodTopologySpread 2, InterPodAffinity 2,
/// NodeResourcesFit 1, BalancedAllocation 1, ImageLocality 1).
pub fn scores(pod: &PodInfo, snap: &Snapshot, feasible: &[&NodeInfo]) -> HashMap<String, i64> {
    let per = |f: &dyn Fn(&NodeInfo) -> i64| -> HashMap<String, i64> { feasible.iter().map(|n| (n.name.clone(), f(n))).collect() };
    let taints = normalize(&per(&|n| taint_toleration::score(pod, n)), true);
    let node_aff = normalize(&per(&|n| node_affinity::score(pod, n)), false);
    let spread = topology_spread::scores(pod, snap, feasible);
    let raw_ipa = inter_pod_affinity::scores(pod, snap, feasible);
    let (lo, hi) = (raw_ipa.values().copied().min().unwrap_or(0), raw_ipa.values().copied().max().unwrap_or(0));
    let ipa: HashMap<String, i64> = raw_ipa.iter().map(|(k, v)| (k.clone(), if hi > lo { 100 * (v - lo) / (hi - lo) } else { 0 })).collect();
    feasible
        .iter()
        .map(|n| {
            let g = |m: &HashMap<String, i64>| m.get(&n.name).copied().unwrap_or(0);
            let total = 3 * g(&taints) + 2 * g(&node_aff) + 2 * g(&spread) + 2 * g(&ipa) + least_allocated::score(pod, n) + balanced_allocation::score(pod, n) + image_locality::score(pod, snap, n);
            (n.name.clone(), total)
        })
        .collect()
}

/// How many feasible nodes are enough to pick from: kube-scheduler's
/// numFeasibleNodesToFind with percentageOfNodesToScore unset (adaptive: 50% less one
/// point per 125 nodes, at least 5%, at least 100 nodes; all of them below 100).
pub fn feasible_to_find(total: usize) -> usize {
    const MIN_NODES: usize = 100;
    if total < MIN_NODES {
        return total;
    }
    let pct = (50 - (total / 125) as i64).max(5) as usize;
    (total * pct / 100).max(MIN_NODES)
}

/// [`schedule`] as kube-scheduler runs it at scale: nodes are filtered from `start`
/// (wrapping around) until [`feasible_to_find`] fit, and only those are scored. Returns
/// how many nodes were looked at, for the next pod's start.
pub fn schedule_from(pod: &PodInfo, snap: &Snapshot, start: usize) -> (Result<String, Diagnosis>, usize) {
    let total = snap.nodes.len();
    let enough = feasible_to_find(total);
    if enough >= total || pod.volumes.unschedulable.is_some() {
        return (schedule(pod, snap), total);
    }
    let filters = Filters::new(pod, snap);
    let mut feasible = Vec::with_capacity(enough);
    let mut rejected = BTreeMap::new();
    let mut looked = 0;
    for i in 0..total {
        let n = &snap.nodes[(start + i) % total];
        looked += 1;
        match filters.check(pod, n) {
            Some(r) => {
                rejected.insert(n.name.clone(), r);
            }
            None => feasible.push(n),
        }
        if feasible.len() >= enough {
            break;
        }
    }
    if feasible.is_empty() {
        return (Err(Diagnosis { total, pre_filter: None, rejected }), looked);
    }
    (Ok(best(pod, snap, &feasible)), looked)
}

/// The feasible node with the highest score; ties to fewer pods, then the first by name.
fn best(pod: &PodInfo, snap: &Snapshot, feasible: &[&NodeInfo]) -> String {
    let s = scores(pod, snap, feasible);
    let best = feasible.iter().max_by(|a, b| s[&a.name].cmp(&s[&b.name]).then(b.requested.pods.cmp(&a.requested.pods)).then(b.name.cmp(&a.name)));
    best.map(|n| n.name.clone()).unwrap_or_default()
}

/// Picks the best node, or says why none fits. Ties go to the node with fewer pods, then
/// to the first by name, which keeps placement deterministic and spreads look-alikes.
pub fn schedule(pod: &PodInfo, snap: &Snapshot) -> Result<String, Diagnosis> {
    let filters = Filters::new(pod, snap);
    let mut diagnosis = Diagnosis { total: snap.nodes.len(), pre_filter: None, rejected: BTreeMap::new() };
    if let Some(why) = &pod.volumes.unschedulable {
        // Every node fails the same way and no eviction could help.
        diagnosis.pre_filter = Some(why.clone());
        for n in snap.nodes {
            diagnosis.rejected.insert(n.name.clone(), Rejection { reasons: vec![why.clone()], resolvable: false });
        }
        return Err(diagnosis);
    }
    let mut feasible = Vec::new();
    for n in snap.nodes {
        match filters.check(pod, n) {
            Some(r) => {
                diagnosis.rejected.insert(n.name.clone(), r);
            }
            None => feasible.push(n),
        }
    }
    if feasible.is_empty() {
        return Err(diagnosis);
    }
    Ok(best(pod, snap, &feasible))
}

/// [`schedule`] over bare nodes (no namespaces), with the message when nothing fits.
pub fn place(pod: &PodInfo, nodes: &[NodeInfo]) -> Result<String, String> {
    let ns = HashMap::new();
    schedule(pod, &Snapshot { nodes, namespaces: &ns }).map_err(|d| d.message(None))
}

/// "0/3 nodes are available: 1 node(s) were unschedulable, 2 Insufficient cpu." The
/// "count reason" strings are sorted as strings, as kube's sortReasonsHistogram does.
pub fn unavailable_message(total: usize, reasons: &BTreeMap<Reason, usize>) -> String {
    if total == 0 {
        return "0/0 nodes are available: no nodes registered.".to_string();
    }
    let mut detail: Vec<String> = reasons.iter().map(|(r, c)| format!("{c} {r}")).collect();
    detail.sort();
    format!("0/{total} nodes are available: {}.", detail.join(", "))
}

#[cfg(test)]
pub(crate) mod testing {
    //! Builders for plugin tests: `node("n1").cpu("2").labeled(..).with_pod(..)`,
    //! `pod().cpu("100m")`, `pod_with(spec)`, `running(name, labels, spec)`.
    use super::{pod_info, PodInfo};
    use crate::scheduler::cache::{requests, NodeInfo, Resources};
    use k8s_openapi::api::core::v1::{Pod, Taint, Toleration};
    use schema::quantity;
    use std::sync::Arc;

    pub fn node(name: &str) -> NodeInfo {
        NodeInfo { name: name.into(), ready: true, unschedulable: false, taints: vec![], allocatable: Resources { cpu_millis: 2000, memory: 4 << 30, pods: 110 }, requested: Resources::default(), nonzero_requested: Resources::default(), labels: Default::default(), images: vec![], pods: vec![] }
    }

    pub fn pod() -> PodInfo {
        pod_with(serde_json::json!({}))
    }

    /// A pod in "default" with this spec (containers default to one named "c").
    pub fn pod_with(spec: serde_json::Value) -> PodInfo {
        pod_labeled(&[], spec)
    }

    pub fn pod_labeled(labels: &[(&str, &str)], spec: serde_json::Value) -> PodInfo {
        let labels: serde_json::Map<String, serde_json::Value> = labels.iter().map(|(k, v)| (k.to_string(), serde_json::json!(v))).collect();
        pod_info(&(*running("incoming", serde_json::Value::Object(labels), spec)).clone())
    }

    /// A pod object as the cache would hold it.
    pub fn running(name: &str, labels: serde_json::Value, spec: serde_json::Value) -> Arc<Pod> {
        let mut spec = spec;
        if spec.get("containers").is_none() {
            spec["containers"] = serde_json::json!([{"name": "c"}]);
        }
        Arc::new(serde_json::from_value(serde_json::json!({"metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}"), "labels": labels}, "spec": spec})).unwrap())
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
        /// What is requested here already (scoring sees the same).
        pub fn using(mut self, cpu: &str, memory: &str) -> Self {
            self.requested.cpu_millis = quantity::cpu_millis(cpu).unwrap_or(0);
            self.requested.memory = quantity::value(memory).unwrap_or(0);
            self.nonzero_requested = self.requested;
            self
        }
        pub fn labeled(mut self, l: &[(&str, &str)]) -> Self {
            self.labels.extend(l.iter().map(|(k, v)| (k.to_string(), v.to_string())));
            self
        }
        /// Runs the pod here, counting its requests.
        pub fn with_pod(mut self, p: Arc<Pod>) -> Self {
            let r = requests(&p);
            self.requested.cpu_millis += r.cpu_millis;
            self.requested.memory += r.memory;
            self.requested.pods += 1;
            let nz = super::least_allocated::non_zero(r);
            self.nonzero_requested.cpu_millis += nz.cpu_millis;
            self.nonzero_requested.memory += nz.memory;
            self.pods.push(p);
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
    use super::testing::{node, pod, pod_labeled};
    use super::*;
    use serde_json::json;

    #[test]
    fn reasons_are_collected_into_one_message() {
        let nodes = vec![node("n1").using("2", "0"), node("n2").using("1900m", "0"), node("n3").not_ready()];
        let err = place(&pod().cpu("200m"), &nodes).unwrap_err();
        assert_eq!(err, "0/3 nodes are available: 1 node(s) were not ready, 2 Insufficient cpu.");
    }

    #[test]
    fn the_brief_example_message() {
        let nodes = vec![node("n1").cpu("1"), node("n2").cpu("1")];
        assert_eq!(place(&pod().cpu("2"), &nodes).unwrap_err(), "0/2 nodes are available: 2 Insufficient cpu.");
        let nodes = vec![node("cp").tainted("node-role.kubernetes.io/control-plane", "", "NoSchedule"), node("n1").cpu("1"), node("n2").cpu("1")];
        assert_eq!(place(&pod().cpu("2"), &nodes).unwrap_err(), "0/3 nodes are available: 1 node(s) had untolerated taint {node-role.kubernetes.io/control-plane: }, 2 Insufficient cpu.");
    }

    #[test]
    fn no_nodes_at_all() {
        assert_eq!(place(&pod(), &[]).unwrap_err(), "0/0 nodes are available: no nodes registered.");
    }

    #[test]
    fn resolvability_follows_the_plugin() {
        let ns = HashMap::new();
        let nodes = vec![node("n1").tainted("k", "", "NoSchedule"), node("n2").using("2", "0")];
        let d = schedule(&pod().cpu("1"), &Snapshot { nodes: &nodes, namespaces: &ns }).unwrap_err();
        assert!(!d.rejected["n1"].resolvable && d.rejected["n2"].resolvable);
    }

    #[test]
    fn weighted_scores_prefer_the_preferred_node_over_a_slightly_emptier_one() {
        let spec = json!({"affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 1, "preference": {"matchExpressions": [{"key": "disk", "operator": "In", "values": ["ssd"]}]}}]}}});
        let nodes = vec![node("n1"), node("n2").labeled(&[("disk", "ssd")]).using("200m", "0")];
        assert_eq!(place(&pod_labeled(&[], spec), &nodes).unwrap(), "n2");
        // An untolerated PreferNoSchedule taint pushes pods elsewhere.
        let nodes = vec![node("n1").tainted("soft", "", "PreferNoSchedule"), node("n2").using("500m", "0")];
        assert_eq!(place(&pod(), &nodes).unwrap(), "n2");
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
                "tolerations": [{"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"}],
                "priority": 7
            }
        }))
        .unwrap();
        let info = pod_info(&p);
        assert_eq!(info.requests, Resources { cpu_millis: 1100, memory: (128 << 20) + 500_000_000, pods: 1 });
        assert_eq!((info.tolerations.len(), info.priority, info.namespace.as_str()), (1, 7, "default"));
    }

    #[test]
    fn the_number_of_feasible_nodes_to_find_is_kube_schedulers() {
        assert_eq!([50, 100, 1000, 5000, 10_000, 100_000].map(feasible_to_find), [50, 100, 420, 500, 500, 5000]);
    }

    #[test]
    fn a_large_cluster_is_searched_in_turns_from_a_moving_start() {
        let nodes: Vec<_> = (0..300).map(|i| node(&format!("n{i:03}"))).collect();
        let ns = HashMap::new();
        let snap = Snapshot { nodes: &nodes, namespaces: &ns };
        // 300 nodes: 100 feasible are enough (48% would be 144 ... at least 100).
        let enough = feasible_to_find(300);
        let (got, looked) = schedule_from(&pod(), &snap, 250);
        assert_eq!(looked, enough);
        // Only nodes from the start on (wrapping) were candidates.
        let picked: usize = got.unwrap()[1..].parse().unwrap();
        assert!(picked >= 250 || picked < (250 + enough) % 300, "{picked}");
        // Nodes that do not fit are skipped and counted as looked at.
        let mut full = nodes.clone();
        for n in full.iter_mut().take(150) {
            n.unschedulable = true;
        }
        let snap = Snapshot { nodes: &full, namespaces: &ns };
        let (got, looked) = schedule_from(&pod(), &snap, 0);
        assert_eq!(looked, 150 + enough);
        assert!(got.unwrap().as_str() >= "n150");
        // Nothing fits: every node was looked at, and the diagnosis names them all.
        let none: Vec<_> = nodes.iter().cloned().map(|mut n| { n.unschedulable = true; n }).collect();
        let snap = Snapshot { nodes: &none, namespaces: &ns };
        let (got, looked) = schedule_from(&pod(), &snap, 17);
        assert_eq!(looked, 300);
        assert_eq!(got.unwrap_err().rejected.len(), 300);
    }
}
