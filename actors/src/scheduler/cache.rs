//! The scheduler's view of the cluster: each node's allocatable resources and what the
//! pods bound to it request, kept up to date incrementally from pod and node events, so
//! placing one pod never walks the whole cluster's pods.

use k8s_openapi::api::core::v1::{Node, Pod};
use schema::quantity;
use std::collections::HashMap;

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
    pub allocatable: Resources,
    pub requested: Resources,
}

/// What a pod asks for: the sum of its containers' requests (limits when no request).
pub fn requests(p: &Pod) -> Resources {
    let mut r = Resources { pods: 1, ..Default::default() };
    for c in p.spec.as_ref().map(|s| s.containers.as_slice()).unwrap_or_default() {
        let res = c.resources.as_ref();
        let get = |name: &str| {
            res.and_then(|r| r.requests.as_ref().and_then(|m| m.get(name)).or_else(|| r.limits.as_ref().and_then(|m| m.get(name)))).map(|q| q.0.clone())
        };
        r.cpu_millis += get("cpu").and_then(|q| quantity::cpu_millis(&q)).unwrap_or(0);
        r.memory += get("memory").and_then(|q| quantity::value(&q)).unwrap_or(0);
    }
    r
}

pub fn node_info(n: &Node, requested: Resources) -> NodeInfo {
    let status = n.status.clone().unwrap_or_default();
    let alloc = status.allocatable.or(status.capacity).unwrap_or_default();
    let q = |k: &str| alloc.get(k).map(|q| q.0.clone());
    NodeInfo {
        name: n.metadata.name.clone().unwrap_or_default(),
        ready: status.conditions.unwrap_or_default().iter().any(|c| c.type_ == "Ready" && c.status == "True"),
        unschedulable: n.spec.as_ref().and_then(|s| s.unschedulable).unwrap_or(false),
        allocatable: Resources {
            cpu_millis: q("cpu").and_then(|v| quantity::cpu_millis(&v)).unwrap_or(0),
            memory: q("memory").and_then(|v| quantity::value(&v)).unwrap_or(0),
            pods: q("pods").and_then(|v| quantity::value(&v)).unwrap_or(110),
        },
        requested,
    }
}

#[derive(Default)]
pub struct Cache {
    nodes: HashMap<String, Node>,
    requested: HashMap<String, Resources>,
    /// Pod key → (node, what it requests): to undo its share when it goes away.
    placed: HashMap<String, (String, Resources)>,
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
    pub fn set_node(&mut self, n: Node) {
        if let Some(name) = n.metadata.name.clone() {
            self.nodes.insert(name, n);
        }
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
            self.assume(key, &node, requests(p));
        }
    }

    /// Counts a pod against a node right away, before its binding is seen on the bus.
    pub fn assume(&mut self, key: &str, node: &str, r: Resources) {
        self.remove_pod(key);
        add(self.requested.entry(node.to_string()).or_default(), r);
        self.placed.insert(key.to_string(), (node.to_string(), r));
    }

    pub fn remove_pod(&mut self, key: &str) {
        if let Some((node, r)) = self.placed.remove(key) {
            if let Some(t) = self.requested.get_mut(&node) {
                sub(t, r);
            }
        }
    }

    pub fn clear_pods(&mut self) {
        self.placed.clear();
        self.requested.clear();
    }

    /// One node's view, without building the whole snapshot.
    pub fn info(&self, name: &str) -> Option<NodeInfo> {
        self.nodes.get(name).map(|n| node_info(n, self.requested.get(name).copied().unwrap_or_default()))
    }

    pub fn snapshot(&self) -> Vec<NodeInfo> {
        let mut v: Vec<NodeInfo> = self.nodes.values().map(|n| node_info(n, self.requested.get(n.metadata.name.as_deref().unwrap_or("")).copied().unwrap_or_default())).collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }
}
