//! The Node authorizer and NodeRestriction admission of Kubernetes, for the state group:
//! what a node agent may write and read, given the node its request came from (the
//! subject it arrived on, which nats-server's permissions tie to that node's identity).
//! nats-server's subject permissions cannot see inside a write, so these checks are what
//! keeps a leaked node credential from changing other nodes' objects.

use crate::keys;
use serde_json::Value;

/// Why a node's request was refused (the message says who, what and why).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("node {node:?} is forbidden to {verb} {key}: {why}")]
pub struct Forbidden {
    pub node: String,
    pub verb: &'static str,
    pub key: String,
    pub why: String,
}

/// Where node agents' Leases live.
pub const NODE_LEASE_NAMESPACE: &str = "kube-node-lease";

fn node_name(pod: &Value) -> Option<&str> {
    pod.pointer("/spec/nodeName").and_then(Value::as_str).filter(|s| !s.is_empty())
}

/// Every endpoint of the slice is on `node`, and there is one (the node agent's own DNS slice).
fn slice_on(slice: &Value, node: &str) -> bool {
    match slice.get("endpoints").and_then(Value::as_array) {
        Some(eps) if !eps.is_empty() => eps.iter().all(|e| e.get("nodeName").and_then(Value::as_str) == Some(node)),
        _ => false,
    }
}

/// Whether node `node` may change `key` from `old` (None: absent) to `new` (None: delete).
pub fn check_write(node: &str, verb: &'static str, key: &str, old: Option<&Value>, new: Option<&Value>) -> Result<(), Forbidden> {
    let deny = |why: &str| Err(Forbidden { node: node.into(), verb, key: key.into(), why: why.into() });
    let Some((plural, ns, name)) = keys::split(key) else { return deny("not an object key") };
    let objects = || old.into_iter().chain(new);
    match plural {
        "nodes" if name == node => Ok(()),
        "nodes" => deny("a node may change only its own Node object"),
        "leases" if ns == Some(NODE_LEASE_NAMESPACE) && name == node => Ok(()),
        "leases" => deny("a node may change only its own Lease"),
        "pods" => {
            if !objects().all(|p| node_name(p) == Some(node)) {
                return deny("the pod is not bound to this node");
            }
            // Status only: the spec is the user's (mirror pods are created whole).
            match (old, new) {
                (Some(o), Some(n)) if o.get("spec") != n.get("spec") => deny("a node may change only the status of its pods"),
                _ => Ok(()),
            }
        }
        // The kubelet's Events; they name objects but change none.
        "events" => Ok(()),
        "endpointslices" if objects().all(|s| slice_on(s, node)) => Ok(()),
        "endpointslices" => deny("a node may write only the EndpointSlice of its own endpoints"),
        _ => deny("node agents may not write this resource"),
    }
}

/// The Secrets (as `namespace/name`) the given pods reference: volumes, projected
/// sources, env and envFrom, and image pull secrets.
pub fn secrets_of(pod: &Value) -> Vec<String> {
    let ns = pod.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or("default");
    let mut out = Vec::new();
    let mut add = |n: Option<&Value>| {
        if let Some(n) = n.and_then(Value::as_str) {
            out.push(format!("{ns}/{n}"));
        }
    };
    let spec = pod.get("spec");
    let arr = |v: Option<&Value>, k: &str| v.and_then(|v| v.get(k)).and_then(Value::as_array).cloned().unwrap_or_default();
    for v in arr(spec, "volumes") {
        add(v.pointer("/secret/secretName"));
        for s in arr(v.get("projected"), "sources") {
            add(s.pointer("/secret/name"));
        }
    }
    for p in arr(spec, "imagePullSecrets") {
        add(p.get("name"));
    }
    for group in ["initContainers", "containers", "ephemeralContainers"] {
        for c in arr(spec, group) {
            for e in arr(Some(&c), "env") {
                add(e.pointer("/valueFrom/secretKeyRef/name"));
            }
            for e in arr(Some(&c), "envFrom") {
                add(e.pointer("/secretRef/name"));
            }
        }
    }
    out
}

/// Whether node `node` may read Secret `key`, given every pod in the store: only when a
/// pod bound to it references the Secret.
pub fn may_read_secret<'a>(node: &str, key: &str, pods: impl IntoIterator<Item = &'a Value>) -> bool {
    let Some(("secrets", Some(ns), name)) = keys::split(key) else { return false };
    let want = format!("{ns}/{name}");
    pods.into_iter().filter(|p| node_name(p) == Some(node)).any(|p| secrets_of(p).contains(&want))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(node: &str, phase: &str) -> Value {
        json!({"metadata": {"namespace": "demo", "name": "p"}, "spec": {"nodeName": node, "containers": [{"name": "c", "env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "env-s", "key": "k"}}}]}], "volumes": [{"name": "v", "secret": {"secretName": "vol-s"}}]}, "status": {"phase": phase}})
    }

    #[test]
    fn a_node_changes_its_own_node_and_lease_only() {
        assert!(check_write("n1", "update", "nodes/_/n1", None, None).is_ok());
        assert!(check_write("n1", "update", "nodes/_/n2", None, None).is_err());
        assert!(check_write("n1", "create", "leases/kube-node-lease/n1", None, None).is_ok());
        assert!(check_write("n1", "update", "leases/kube-node-lease/n2", None, None).is_err());
        assert!(check_write("n1", "update", "leases/kube-system/kube-scheduler", None, None).is_err());
        let e = check_write("n1", "create", "secrets/demo/s", None, Some(&json!({}))).unwrap_err();
        assert_eq!(e.to_string(), "node \"n1\" is forbidden to create secrets/demo/s: node agents may not write this resource");
    }

    #[test]
    fn a_node_changes_the_status_of_its_own_pods_only() {
        let (old, new) = (pod("n1", "Pending"), pod("n1", "Running"));
        assert!(check_write("n1", "update", "pods/demo/p", Some(&old), Some(&new)).is_ok());
        assert!(check_write("n1", "delete", "pods/demo/p", Some(&old), None).is_ok());
        let (theirs, theirs_new) = (pod("n2", "Pending"), pod("n2", "Failed"));
        assert!(check_write("n1", "update", "pods/demo/p", Some(&theirs), Some(&theirs_new)).is_err());
        // Rebinding someone's pod to itself does not pass either.
        assert!(check_write("n1", "update", "pods/demo/p", Some(&theirs), Some(&new)).is_err());
        let mut respec = new.clone();
        respec["spec"]["containers"][0]["image"] = json!("evil");
        assert!(check_write("n1", "update", "pods/demo/p", Some(&old), Some(&respec)).is_err());
    }

    #[test]
    fn a_node_writes_its_own_dns_slice_only() {
        let mine = json!({"endpoints": [{"nodeName": "n1"}]});
        let theirs = json!({"endpoints": [{"nodeName": "n2"}]});
        assert!(check_write("n1", "create", "endpointslices/kube-system/kube-dns-n1", None, Some(&mine)).is_ok());
        assert!(check_write("n1", "delete", "endpointslices/kube-system/kube-dns-n2", Some(&theirs), None).is_err());
    }

    #[test]
    fn a_node_reads_only_the_secrets_its_pods_reference() {
        let pods = [pod("n1", "Running"), json!({"metadata": {"namespace": "demo"}, "spec": {"nodeName": "n2", "volumes": [{"secret": {"secretName": "other"}}]}})];
        assert!(may_read_secret("n1", "secrets/demo/vol-s", &pods));
        assert!(may_read_secret("n1", "secrets/demo/env-s", &pods));
        assert!(!may_read_secret("n1", "secrets/demo/other", &pods));
        assert!(!may_read_secret("n1", "secrets/kube-system/vol-s", &pods));
        assert!(!may_read_secret("n1", "configmaps/demo/vol-s", &pods));
    }
}
