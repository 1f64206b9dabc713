//! How the built-in types' lists and maps merge: the `+listType`/`+listMapKey`/`+mapType`
//! markers (server-side apply's field sets) and the `patchMergeKey`/`patchStrategy` tags
//! (strategic merge patch) of Kubernetes 1.32, kept in this one table for both users.

/// A key field of an associative list, with the schema default used when it is absent
/// (container and service ports key on `protocol`, which defaults to TCP).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyField {
    pub name: &'static str,
    pub default: Option<&'static str>,
}

/// How server-side apply sees a list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListType {
    /// Replaced whole; owned as one field.
    Atomic,
    /// Scalars merged as a set (`v:` elements).
    Set,
    /// Objects merged by key (`k:` elements).
    Map(&'static [KeyField]),
}

/// How strategic merge patch merges a list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Smp {
    Replace,
    MergeKey(&'static str),
    /// Primitive list merged as a set.
    MergeSet,
}

const fn k(name: &'static str) -> KeyField {
    KeyField { name, default: None }
}
const TCP: KeyField = KeyField { name: "protocol", default: Some("TCP") };
const NAME: &[KeyField] = &[k("name")];
const TYPE: &[KeyField] = &[k("type")];
const IP: &[KeyField] = &[k("ip")];
const CONTAINERS: &str = "containers|initContainers|ephemeralContainers";

/// Patterns over the field-name path from the object's root (list elements add nothing):
/// `*.a.b` matches any path ending in `a.b`; `Kind:a.b` only that whole path in that kind;
/// `x|y` is either segment. The first match wins, so specific rules come first.
/// Lists not named here are atomic and replaced by strategic merge patch.
static LISTS: &[(&str, ListType, Smp)] = &[
    ("*.metadata.finalizers", ListType::Set, Smp::MergeSet),
    ("*.metadata.ownerReferences", ListType::Map(&[k("uid")]), Smp::MergeKey("uid")),
    ("*.@C", ListType::Map(NAME), Smp::MergeKey("name")),
    ("*.@C.ports", ListType::Map(&[k("containerPort"), TCP]), Smp::MergeKey("containerPort")),
    ("*.@C.env", ListType::Map(NAME), Smp::MergeKey("name")),
    ("*.@C.volumeMounts", ListType::Map(&[k("mountPath")]), Smp::MergeKey("mountPath")),
    ("*.@C.volumeDevices", ListType::Map(&[k("devicePath")]), Smp::MergeKey("devicePath")),
    ("*.@C.resources.claims", ListType::Map(NAME), Smp::Replace),
    ("*.spec.volumes", ListType::Map(NAME), Smp::MergeKey("name")),
    ("*.spec.imagePullSecrets", ListType::Map(NAME), Smp::MergeKey("name")),
    ("*.spec.hostAliases", ListType::Map(IP), Smp::MergeKey("ip")),
    ("*.spec.topologySpreadConstraints", ListType::Map(&[k("topologyKey"), k("whenUnsatisfiable")]), Smp::MergeKey("topologyKey")),
    ("*.spec.schedulingGates", ListType::Map(NAME), Smp::MergeKey("name")),
    ("*.spec.resourceClaims", ListType::Map(NAME), Smp::MergeKey("name")),
    ("Job:status.conditions", ListType::Atomic, Smp::MergeKey("type")),
    ("*.status.conditions", ListType::Map(TYPE), Smp::MergeKey("type")),
    ("Pod:status.podIPs", ListType::Map(IP), Smp::MergeKey("ip")),
    ("Pod:status.hostIPs", ListType::Atomic, Smp::MergeKey("ip")),
    ("Pod:status.resourceClaimStatuses", ListType::Map(NAME), Smp::MergeKey("name")),
    ("Service:spec.ports", ListType::Map(&[k("port"), TCP]), Smp::MergeKey("port")),
    ("ServiceAccount:secrets", ListType::Map(NAME), Smp::MergeKey("name")),
    ("Node:spec.podCIDRs", ListType::Set, Smp::MergeSet),
    ("Node:status.addresses", ListType::Map(TYPE), Smp::MergeKey("type")),
    ("EndpointSlice:endpoints.addresses", ListType::Set, Smp::Replace),
];

/// Objects owned and replaced whole by server-side apply (`+mapType=atomic`,
/// `+structType=atomic`): label selectors, references, key selectors. An element of a
/// keyed list named here (imagePullSecrets' LocalObjectReference) is atomic too.
static ATOMIC_OBJECTS: &[&str] = &[
    "*.selector",
    "*.labelSelector",
    "*.namespaceSelector",
    "*.nodeSelector",
    "*.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution",
    "*.fieldRef",
    "*.resourceFieldRef",
    "*.configMapKeyRef",
    "*.secretKeyRef",
    "*.involvedObject",
    "*.related",
    "*.regarding",
    "*.roleRef",
    "*.scopeSelector",
    "*.spec.imagePullSecrets",
    "ServiceAccount:secrets",
];

fn segment_matches(pat: &str, seg: &str) -> bool {
    if pat == "@C" {
        return CONTAINERS.split('|').any(|p| p == seg);
    }
    pat.split('|').any(|p| p == seg)
}

fn matches(pattern: &str, kind: &str, path: &[&str]) -> bool {
    let (anchored, body) = match pattern.strip_prefix("*.") {
        Some(rest) => (false, rest),
        None => match pattern.split_once(':') {
            Some((kinds, rest)) if kinds.split('|').any(|k| k == kind) => (true, rest),
            _ => return false,
        },
    };
    let segs: Vec<&str> = body.split('.').collect();
    if segs.len() > path.len() || (anchored && segs.len() != path.len()) {
        return false;
    }
    let tail = &path[path.len() - segs.len()..];
    segs.iter().zip(tail).all(|(p, s)| segment_matches(p, s))
}

/// The server-side apply and strategic-merge-patch semantics of the list at `path`
/// (field names from the root) in an object of `kind`.
pub fn list(kind: &str, path: &[&str]) -> (ListType, Smp) {
    LISTS.iter().find(|(p, _, _)| matches(p, kind, path)).map(|(_, l, s)| (*l, *s)).unwrap_or((ListType::Atomic, Smp::Replace))
}

/// Whether the object at `path` is owned and replaced whole by server-side apply.
pub fn atomic_object(kind: &str, path: &[&str]) -> bool {
    ATOMIC_OBJECTS.iter().any(|p| matches(p, kind, path))
}

/// What the zero value of the kind's Go struct serializes to: the real server compares a
/// new object against it on create, so these fields never show as added (`.`) in the
/// creator's managed fields.
pub fn zero_object(kind: &str) -> serde_json::Value {
    use serde_json::json;
    let template = json!({"metadata": {}, "spec": {"containers": null}});
    match kind {
        "Deployment" => json!({"metadata": {}, "spec": {"template": template, "strategy": {}}, "status": {}}),
        "ReplicaSet" | "ReplicationController" | "Job" => json!({"metadata": {}, "spec": {"template": template}, "status": {}}),
        "DaemonSet" | "StatefulSet" => json!({"metadata": {}, "spec": {"template": template, "updateStrategy": {}}, "status": {}}),
        "CronJob" => json!({"metadata": {}, "spec": {"jobTemplate": {"metadata": {}, "spec": {"template": template}}}, "status": {}}),
        "Pod" => json!({"metadata": {}, "spec": {"containers": null}, "status": {}}),
        "Service" => json!({"metadata": {}, "spec": {}, "status": {"loadBalancer": {}}}),
        "Node" | "Namespace" | "ResourceQuota" | "LimitRange" | "PodDisruptionBudget" => json!({"metadata": {}, "spec": {}, "status": {}}),
        _ => json!({"metadata": {}}),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_lists_key_on_their_merge_keys() {
        let p = ["spec", "template", "spec", "containers", "ports"];
        const PORT: &[KeyField] = &[k("containerPort"), TCP];
        assert_eq!(list("Deployment", &p), (ListType::Map(PORT), Smp::MergeKey("containerPort")));
        assert_eq!(list("Pod", &["spec", "initContainers", "env"]).1, Smp::MergeKey("name"));
        assert_eq!(list("Pod", &["spec", "containers"]).0, ListType::Map(NAME));
        assert_eq!(list("Pod", &["spec", "containers", "command"]), (ListType::Atomic, Smp::Replace));
    }

    #[test]
    fn kind_anchored_rules() {
        assert_eq!(list("Service", &["spec", "ports"]).1, Smp::MergeKey("port"));
        assert_eq!(list("EndpointSlice", &["ports"]), (ListType::Atomic, Smp::Replace));
        assert_eq!(list("Job", &["status", "conditions"]), (ListType::Atomic, Smp::MergeKey("type")));
        assert_eq!(list("Deployment", &["status", "conditions"]).0, ListType::Map(TYPE));
        assert_eq!(list("Node", &["spec", "taints"]), (ListType::Atomic, Smp::Replace));
        assert_eq!(list("Namespace", &["spec", "finalizers"]), (ListType::Atomic, Smp::Replace));
        assert_eq!(list("Namespace", &["metadata", "finalizers"]), (ListType::Set, Smp::MergeSet));
        assert_eq!(list("ServiceAccount", &["imagePullSecrets"]), (ListType::Atomic, Smp::Replace));
    }

    #[test]
    fn atomic_objects() {
        assert!(atomic_object("Deployment", &["spec", "selector"]));
        assert!(atomic_object("Pod", &["spec", "containers", "env", "valueFrom", "fieldRef"]));
        assert!(!atomic_object("Deployment", &["spec", "template", "metadata", "labels"]));
        assert!(atomic_object("Pod", &["spec", "imagePullSecrets"]));
        assert!(zero_object("Deployment").pointer("/spec/template/spec").is_some());
    }
}
