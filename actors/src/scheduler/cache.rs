//! The scheduler's view of the cluster: each node's allocatable resources, labels and
//! images, the pods bound to it (for affinity, spreading, ports and preemption) and what
//! they request, kept up to date incrementally from pod and node events, so placing one
//! pod never walks the whole cluster's pods.

use k8s_openapi::api::core::v1::{Node, Pod, Taint};
use schema::quantity;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

pub type Labels = BTreeMap<String, String>;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Resources {
    pub cpu_millis: u64,
    pub memory: u64,
    pub pods: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct NodeInfo {
    pub name: String,
    pub ready: bool,
    pub unschedulable: bool,
    pub taints: Vec<Taint>,
    pub allocatable: Resources,
    pub requested: Resources,
    /// What scoring counts as requested: pods asking for no CPU or memory count as asking
    /// for kube's defaults (100m, 200Mi), so such pods still spread (NonZeroRequested).
    pub nonzero_requested: Resources,
    pub labels: Labels,
    /// `status.images`: (names, size in bytes).
    pub images: Vec<(Vec<String>, i64)>,
    /// The pods bound (or assumed) here, by key.
    pub pods: Vec<Arc<Pod>>,
}

/// kube-scheduler's DefaultMilliCPURequest and DefaultMemoryRequest, for scoring only.
pub const DEFAULT_MILLI_CPU: u64 = 100;
pub const DEFAULT_MEMORY: u64 = 200 << 20;

/// A pod's requests as scoring sees them.
pub fn non_zero(r: Resources) -> Resources {
    Resources { cpu_millis: if r.cpu_millis == 0 { DEFAULT_MILLI_CPU } else { r.cpu_millis }, memory: if r.memory == 0 { DEFAULT_MEMORY } else { r.memory }, pods: r.pods }
}

/// What a pod asks for: the sum of its containers' requests (limits when no request).
pub fn requests(p: &Pod) -> Resources {
    let (cpu_millis, memory) = quantity::pod_requests(p);
    Resources { cpu_millis, memory, pods: 1 }
}

pub fn node_info(n: &Node, requested: Resources) -> NodeInfo {
    let status = n.status.clone().unwrap_or_default();
    let alloc = status.allocatable.or(status.capacity).unwrap_or_default();
    let q = |k: &str| alloc.get(k).map(|q| q.0.clone());
    NodeInfo {
        name: n.metadata.name.clone().unwrap_or_default(),
        ready: status.conditions.unwrap_or_default().iter().any(|c| c.type_ == "Ready" && c.status == "True"),
        unschedulable: n.spec.as_ref().and_then(|s| s.unschedulable).unwrap_or(false),
        taints: n.spec.as_ref().and_then(|s| s.taints.clone()).unwrap_or_default(),
        allocatable: Resources {
            cpu_millis: q("cpu").and_then(|v| quantity::cpu_millis(&v)).unwrap_or(0),
            memory: q("memory").and_then(|v| quantity::value(&v)).unwrap_or(0),
            pods: q("pods").and_then(|v| quantity::value(&v)).unwrap_or(110),
        },
        requested,
        nonzero_requested: Resources::default(),
        labels: n.metadata.labels.clone().unwrap_or_default(),
        images: status.images.unwrap_or_default().into_iter().map(|i| (i.names.unwrap_or_default(), i.size_bytes.unwrap_or(0))).collect(),
        pods: Vec::new(),
    }
}

#[derive(Default)]
pub struct Cache {
    /// Each node's parsed shape (its `requested` unused: that lives in `requested`), so a
    /// heartbeat costs one parse and a placement none.
    nodes: HashMap<String, NodeInfo>,
    requested: HashMap<String, Resources>,
    /// Pod key → (node, what it requests): to undo its share when it goes away.
    placed: HashMap<String, (String, Resources)>,
    /// Node → its pods by key, for the plugins that look at who runs where.
    by_node: HashMap<String, BTreeMap<String, Arc<Pod>>>,
    /// Namespace → its labels, for affinity terms' namespaceSelector.
    namespaces: HashMap<String, Labels>,
}

fn add(a: &mut Resources, b: Resources) {
    a.cpu_millis += b.cpu_millis;
    a.memory += b.memory;
    a.pods += b.pods;
}

fn sub(a: &mut Resources, b: Resources) {
    a.cpu_millis = a.cpu_millis.saturating_sub(b.cpu_millis);
    a.memory = a.memory.saturating_sub(b.memory);
    a.pods = a.pods.saturating_sub(b.pods);
}

impl Cache {
    /// Stores the node; returns whether anything placement looks at changed (heartbeats
    /// only touch timestamps, and should not wake pods that fit nowhere).
    pub fn set_node(&mut self, n: &Node) -> bool {
        let Some(name) = n.metadata.name.clone() else { return false };
        let info = node_info(n, Resources::default());
        let changed = self.nodes.get(&name) != Some(&info);
        self.nodes.insert(name, info);
        changed
    }

    pub fn remove_node(&mut self, name: &str) {
        self.nodes.remove(name);
    }

    pub fn clear_nodes(&mut self) {
        self.nodes.clear();
    }

    /// Records (or moves) a pod's share; finished pods hold nothing.
    pub fn set_pod(&mut self, key: &str, p: &Pod) {
        self.remove_pod(key);
        let phase = p.status.as_ref().and_then(|s| s.phase.as_deref());
        if matches!(phase, Some("Succeeded") | Some("Failed")) {
            return;
        }
        if let Some(node) = p.spec.as_ref().and_then(|s| s.node_name.clone()) {
            self.assume(key, &node, p);
        }
    }

    /// Counts a pod against a node right away, before its binding is seen on the bus.
    pub fn assume(&mut self, key: &str, node: &str, p: &Pod) {
        self.remove_pod(key);
        let r = requests(p);
        add(self.requested.entry(node.to_string()).or_default(), r);
        self.placed.insert(key.to_string(), (node.to_string(), r));
        let mut p = p.clone();
        if let Some(s) = p.spec.as_mut() {
            s.node_name = Some(node.to_string());
        }
        self.by_node.entry(node.to_string()).or_default().insert(key.to_string(), Arc::new(p));
    }

    pub fn remove_pod(&mut self, key: &str) {
        if let Some((node, r)) = self.placed.remove(key) {
            if let Some(t) = self.requested.get_mut(&node) {
                sub(t, r);
            }
            if let Some(m) = self.by_node.get_mut(&node) {
                m.remove(key);
            }
        }
    }

    /// The pod as the cache holds it (bound or assumed).
    pub fn pod(&self, key: &str) -> Option<Arc<Pod>> {
        let (node, _) = self.placed.get(key)?;
        self.by_node.get(node)?.get(key).cloned()
    }

    /// Stores a namespace's labels; returns whether they changed.
    pub fn set_namespace(&mut self, name: &str, labels: Labels) -> bool {
        self.namespaces.insert(name.to_string(), labels.clone()) != Some(labels)
    }

    pub fn remove_namespace(&mut self, name: &str) {
        self.namespaces.remove(name);
    }

    pub fn namespaces(&self) -> &HashMap<String, Labels> {
        &self.namespaces
    }

    /// Where a pod is counted, and what it holds there.
    pub fn placed(&self, key: &str) -> Option<(String, Resources)> {
        self.placed.get(key).cloned()
    }

    pub fn clear_pods(&mut self) {
        self.placed.clear();
        self.requested.clear();
        self.by_node.clear();
    }

    fn view(&self, n: &NodeInfo) -> NodeInfo {
        let pods: Vec<Arc<Pod>> = self.by_node.get(&n.name).map(|m| m.values().cloned().collect()).unwrap_or_default();
        let mut nonzero = Resources::default();
        for p in &pods {
            add(&mut nonzero, non_zero(requests(p)));
        }
        NodeInfo { requested: self.requested.get(&n.name).copied().unwrap_or_default(), nonzero_requested: nonzero, pods, ..n.clone() }
    }

    /// One node's view, without building the whole snapshot.
    pub fn info(&self, name: &str) -> Option<NodeInfo> {
        self.nodes.get(name).map(|n| self.view(n))
    }

    /// Every node with what is requested on it and its pods, by name.
    pub fn snapshot(&self) -> Vec<NodeInfo> {
        let mut v: Vec<NodeInfo> = self.nodes.values().map(|n| self.view(n)).collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str) -> Node {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name},
            "status": {
                "allocatable": {"cpu": "2", "memory": "4Gi", "pods": "110"},
                "conditions": [{"type": "Ready", "status": "True"}]
            }
        }))
        .unwrap()
    }

    /// `pod("web-1").on_node("n1").cpu("250m")`, as the style guide's builders go.
    struct PodB(serde_json::Value);
    fn pod(name: &str) -> PodB {
        PodB(serde_json::json!({"metadata": {"name": name, "namespace": "demo"}, "spec": {"containers": [{"name": "c"}]}}))
    }
    impl PodB {
        fn on_node(mut self, n: &str) -> Self {
            self.0["spec"]["nodeName"] = n.into();
            self
        }
        fn cpu(mut self, q: &str) -> Self {
            self.0["spec"]["containers"][0]["resources"] = serde_json::json!({"requests": {"cpu": q}});
            self
        }
        fn phase(mut self, p: &str) -> Self {
            self.0["status"] = serde_json::json!({"phase": p});
            self
        }
        fn build(self) -> Pod {
            serde_json::from_value(self.0).unwrap()
        }
    }

    fn used(c: &Cache, n: &str) -> (u64, u64) {
        let i = c.info(n).unwrap();
        (i.requested.cpu_millis, i.requested.pods)
    }

    #[test]
    fn pod_events_move_requests_incrementally() {
        let mut c = Cache::default();
        assert!(c.set_node(&node("n1")));
        assert!(!c.set_node(&node("n1")), "same shape: nothing changed");
        c.set_node(&node("n2"));
        c.set_pod("demo/a", &pod("a").on_node("n1").cpu("250m").build());
        c.set_pod("demo/b", &pod("b").on_node("n1").cpu("500m").build());
        assert_eq!(used(&c, "n1"), (750, 2));
        // Re-applying the same pod does not double count.
        c.set_pod("demo/a", &pod("a").on_node("n1").cpu("250m").build());
        assert_eq!(used(&c, "n1"), (750, 2));
        c.remove_pod("demo/b");
        assert_eq!(used(&c, "n1"), (250, 1));
        // A finished pod holds nothing.
        c.set_pod("demo/a", &pod("a").on_node("n1").cpu("250m").phase("Succeeded").build());
        assert_eq!(used(&c, "n1"), (0, 0));
    }

    #[test]
    fn assumed_pods_count_until_confirmed_or_forgotten() {
        let mut c = Cache::default();
        c.set_node(&node("n1"));
        c.assume("demo/a", "n1", &pod("a").cpu("1").build());
        assert_eq!(c.info("n1").unwrap().pods.len(), 1);
        assert_eq!(used(&c, "n1"), (1000, 1));
        // The watch event for the binding replaces the assumption, it does not add to it.
        c.set_pod("demo/a", &pod("a").on_node("n1").cpu("1").build());
        assert_eq!(used(&c, "n1"), (1000, 1));
        c.remove_pod("demo/a");
        assert_eq!(used(&c, "n1"), (0, 0));
        assert_eq!(c.snapshot().len(), 1);
    }
}
