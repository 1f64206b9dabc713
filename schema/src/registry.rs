//! The resource registry: one entry per served resource, the single place that says
//! what a resource is called, where it lives and whether it is namespaced.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResourceInfo {
    /// API group; "" for the core group.
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    pub plural: &'static str,
    pub singular: &'static str,
    pub short_names: &'static [&'static str],
    pub namespaced: bool,
    pub verbs: &'static [&'static str],
    /// Subresources served under the resource, e.g. "status", "scale", "log".
    pub subresources: &'static [&'static str],
    pub categories: &'static [&'static str],
}

const ALL_VERBS: &[&str] = &["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"];

impl ResourceInfo {
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }
    pub fn list_kind(&self) -> String {
        format!("{}List", self.kind)
    }
    pub fn group_version(&self) -> (&'static str, &'static str) {
        (self.group, self.version)
    }
}

pub static RESOURCES: &[ResourceInfo] = &[
    ResourceInfo { group: "", version: "v1", kind: "Namespace", plural: "namespaces", singular: "namespace", short_names: &["ns"], namespaced: false, verbs: &["create", "delete", "get", "list", "patch", "update", "watch"], subresources: &["status"], categories: &[] },
    ResourceInfo { group: "", version: "v1", kind: "Node", plural: "nodes", singular: "node", short_names: &["no"], namespaced: false, verbs: ALL_VERBS, subresources: &["status"], categories: &[] },
    ResourceInfo { group: "", version: "v1", kind: "Pod", plural: "pods", singular: "pod", short_names: &["po"], namespaced: true, verbs: ALL_VERBS, subresources: &["status", "log", "binding"], categories: &["all"] },
    ResourceInfo { group: "", version: "v1", kind: "Event", plural: "events", singular: "event", short_names: &["ev"], namespaced: true, verbs: ALL_VERBS, subresources: &[], categories: &[] },
    ResourceInfo { group: "apps", version: "v1", kind: "Deployment", plural: "deployments", singular: "deployment", short_names: &["deploy"], namespaced: true, verbs: ALL_VERBS, subresources: &["status", "scale"], categories: &["all"] },
    ResourceInfo { group: "apps", version: "v1", kind: "ReplicaSet", plural: "replicasets", singular: "replicaset", short_names: &["rs"], namespaced: true, verbs: ALL_VERBS, subresources: &["status", "scale"], categories: &["all"] },
    ResourceInfo { group: "node.k8s.io", version: "v1", kind: "RuntimeClass", plural: "runtimeclasses", singular: "runtimeclass", short_names: &[], namespaced: false, verbs: ALL_VERBS, subresources: &[], categories: &[] },
    // Stored and served as written; the controllers that act on them come with later issues.
    ResourceInfo { group: "", version: "v1", kind: "ConfigMap", plural: "configmaps", singular: "configmap", short_names: &["cm"], namespaced: true, verbs: ALL_VERBS, subresources: &[], categories: &[] },
    ResourceInfo { group: "", version: "v1", kind: "Secret", plural: "secrets", singular: "secret", short_names: &[], namespaced: true, verbs: ALL_VERBS, subresources: &[], categories: &[] },
    ResourceInfo { group: "", version: "v1", kind: "ServiceAccount", plural: "serviceaccounts", singular: "serviceaccount", short_names: &["sa"], namespaced: true, verbs: ALL_VERBS, subresources: &[], categories: &[] },
    ResourceInfo { group: "coordination.k8s.io", version: "v1", kind: "Lease", plural: "leases", singular: "lease", short_names: &[], namespaced: true, verbs: ALL_VERBS, subresources: &[], categories: &[] },
    ResourceInfo { group: "scheduling.k8s.io", version: "v1", kind: "PriorityClass", plural: "priorityclasses", singular: "priorityclass", short_names: &["pc"], namespaced: false, verbs: ALL_VERBS, subresources: &[], categories: &[] },
];

pub fn by_plural(group: &str, version: &str, plural: &str) -> Option<&'static ResourceInfo> {
    RESOURCES.iter().find(|r| r.group == group && r.version == version && r.plural == plural)
}

pub fn by_kind(api_version: &str, kind: &str) -> Option<&'static ResourceInfo> {
    RESOURCES.iter().find(|r| r.api_version() == api_version && r.kind == kind)
}

/// Group/versions served, in the order discovery lists them (core first).
pub fn group_versions() -> Vec<(&'static str, &'static str)> {
    let mut out: Vec<(&'static str, &'static str)> = Vec::new();
    for r in RESOURCES {
        if !out.contains(&r.group_version()) {
            out.push(r.group_version());
        }
    }
    out
}
