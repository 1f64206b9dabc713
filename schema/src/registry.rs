//! The resource registry: one entry per served resource, the single place that says
//! what a resource is called, where it lives, whether it is namespaced and which Rust
//! type (hence which OpenAPI schema) its objects have.

use k8s_openapi::api::{
    apps::v1 as apps, authentication::v1 as authentication, authorization::v1 as authorization, batch::v1 as batch,
    coordination::v1 as coordination, core::v1 as core, discovery::v1 as discovery, events::v1 as events, node::v1 as node,
    policy::v1 as policy, rbac::v1 as rbac, scheduling::v1 as scheduling, storage::v1 as storage,
};
use schemars::{JsonSchema, Schema, SchemaGenerator};

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
    /// The object type's schema, so OpenAPI and field validation follow the type itself.
    pub schema: TypeSchema,
    pub categories: &'static [&'static str],
}

/// A resource's Rust type, seen only through its JSON schema: its definition name
/// (`io.k8s.api.core.v1.Pod`) and a function that adds it and everything it refers to
/// to a generator.
#[derive(Clone, Copy)]
pub struct TypeSchema {
    pub name: fn() -> std::borrow::Cow<'static, str>,
    pub add: fn(&mut SchemaGenerator) -> Schema,
}

impl TypeSchema {
    pub const fn of<T: JsonSchema>() -> TypeSchema {
        TypeSchema { name: T::schema_name, add: SchemaGenerator::subschema_for::<T> }
    }
}

// By definition name: two entries naming the same type describe the same schema.
impl PartialEq for TypeSchema {
    fn eq(&self, other: &Self) -> bool {
        (self.name)() == (other.name)()
    }
}
impl Eq for TypeSchema {}
impl std::fmt::Debug for TypeSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&(self.name)())
    }
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
    ResourceInfo { group: "", version: "v1", kind: "Namespace", plural: "namespaces", singular: "namespace", short_names: &["ns"], namespaced: false, verbs: &["create", "delete", "get", "list", "patch", "update", "watch"], subresources: &["status"], schema: TypeSchema::of::<core::Namespace>(), categories: &[] },
    ResourceInfo { group: "", version: "v1", kind: "Node", plural: "nodes", singular: "node", short_names: &["no"], namespaced: false, verbs: ALL_VERBS, subresources: &["status"], schema: TypeSchema::of::<core::Node>(), categories: &[] },
    ResourceInfo { group: "", version: "v1", kind: "Pod", plural: "pods", singular: "pod", short_names: &["po"], namespaced: true, verbs: ALL_VERBS, subresources: &["status", "log", "binding", "eviction", "exec", "attach", "portforward"], schema: TypeSchema::of::<core::Pod>(), categories: &["all"] },
    ResourceInfo { group: "", version: "v1", kind: "Event", plural: "events", singular: "event", short_names: &["ev"], namespaced: true, verbs: ALL_VERBS, subresources: &[], schema: TypeSchema::of::<core::Event>(), categories: &[] },
    ResourceInfo { group: "apps", version: "v1", kind: "Deployment", plural: "deployments", singular: "deployment", short_names: &["deploy"], namespaced: true, verbs: ALL_VERBS, subresources: &["status", "scale"], schema: TypeSchema::of::<apps::Deployment>(), categories: &["all"] },
    ResourceInfo { group: "", version: "v1", kind: "ReplicationController", plural: "replicationcontrollers", singular: "replicationcontroller", short_names: &["rc"], namespaced: true, verbs: ALL_VERBS, subresources: &["status", "scale"], schema: TypeSchema::of::<core::ReplicationController>(), categories: &["all"] },
    ResourceInfo { group: "apps", version: "v1", kind: "ReplicaSet", plural: "replicasets", singular: "replicaset", short_names: &["rs"], namespaced: true, verbs: ALL_VERBS, subresources: &["status", "scale"], schema: TypeSchema::of::<apps::ReplicaSet>(), categories: &["all"] },
    ResourceInfo { group: "node.k8s.io", version: "v1", kind: "RuntimeClass", plural: "runtimeclasses", singular: "runtimeclass", short_names: &[], namespaced: false, verbs: ALL_VERBS, subresources: &[], schema: TypeSchema::of::<node::RuntimeClass>(), categories: &[] },
    // Stored and served as written; the controllers that act on them come with later issues.
    ResourceInfo { group: "", version: "v1", kind: "ConfigMap", plural: "configmaps", singular: "configmap", short_names: &["cm"], namespaced: true, verbs: ALL_VERBS, subresources: &[], schema: TypeSchema::of::<core::ConfigMap>(), categories: &[] },
    ResourceInfo { group: "", version: "v1", kind: "Secret", plural: "secrets", singular: "secret", short_names: &[], namespaced: true, verbs: ALL_VERBS, subresources: &[], schema: TypeSchema::of::<core::Secret>(), categories: &[] },
    ResourceInfo { group: "", version: "v1", kind: "ServiceAccount", plural: "serviceaccounts", singular: "serviceaccount", short_names: &["sa"], namespaced: true, verbs: ALL_VERBS, subresources: &["token"], schema: TypeSchema::of::<core::ServiceAccount>(), categories: &[] },
    ResourceInfo { group: "coordination.k8s.io", version: "v1", kind: "Lease", plural: "leases", singular: "lease", short_names: &[], namespaced: true, verbs: ALL_VERBS, subresources: &[], schema: TypeSchema::of::<coordination::Lease>(), categories: &[] },
    ResourceInfo { group: "scheduling.k8s.io", version: "v1", kind: "PriorityClass", plural: "priorityclasses", singular: "priorityclass", short_names: &["pc"], namespaced: false, verbs: ALL_VERBS, subresources: &[], schema: TypeSchema::of::<scheduling::PriorityClass>(), categories: &[] },
    ResourceInfo { group: "", version: "v1", kind: "Service", plural: "services", singular: "service", short_names: &["svc"], namespaced: true, verbs: SERVICE_VERBS, subresources: &["status"], schema: TypeSchema::of::<core::Service>(), categories: &["all"] },
    ResourceInfo { group: "", version: "v1", kind: "Endpoints", plural: "endpoints", singular: "endpoints", short_names: &["ep"], namespaced: true, verbs: ALL_VERBS, subresources: &[], schema: TypeSchema::of::<core::Endpoints>(), categories: &[] },
    ResourceInfo { group: "", version: "v1", kind: "ResourceQuota", plural: "resourcequotas", singular: "resourcequota", short_names: &["quota"], namespaced: true, verbs: ALL_VERBS, subresources: &["status"], schema: TypeSchema::of::<core::ResourceQuota>(), categories: &[] },
    ResourceInfo { group: "", version: "v1", kind: "LimitRange", plural: "limitranges", singular: "limitrange", short_names: &["limits"], namespaced: true, verbs: ALL_VERBS, subresources: &[], schema: TypeSchema::of::<core::LimitRange>(), categories: &[] },
    ResourceInfo { group: "apps", version: "v1", kind: "DaemonSet", plural: "daemonsets", singular: "daemonset", short_names: &["ds"], namespaced: true, verbs: ALL_VERBS, subresources: &["status"], schema: TypeSchema::of::<apps::DaemonSet>(), categories: &["all"] },
    ResourceInfo { group: "apps", version: "v1", kind: "StatefulSet", plural: "statefulsets", singular: "statefulset", short_names: &["sts"], namespaced: true, verbs: ALL_VERBS, subresources: &["status", "scale"], schema: TypeSchema::of::<apps::StatefulSet>(), categories: &["all"] },
    ResourceInfo { group: "apps", version: "v1", kind: "ControllerRevision", plural: "controllerrevisions", singular: "controllerrevision", short_names: &[], namespaced: true, verbs: ALL_VERBS, subresources: &[], schema: TypeSchema::of::<apps::ControllerRevision>(), categories: &[] },
    ResourceInfo { group: "", version: "v1", kind: "PersistentVolume", plural: "persistentvolumes", singular: "persistentvolume", short_names: &["pv"], namespaced: false, verbs: ALL_VERBS, subresources: &["status"], schema: TypeSchema::of::<core::PersistentVolume>(), categories: &[] },
    ResourceInfo { group: "", version: "v1", kind: "PersistentVolumeClaim", plural: "persistentvolumeclaims", singular: "persistentvolumeclaim", short_names: &["pvc"], namespaced: true, verbs: ALL_VERBS, subresources: &["status"], schema: TypeSchema::of::<core::PersistentVolumeClaim>(), categories: &[] },
    ResourceInfo { group: "storage.k8s.io", version: "v1", kind: "StorageClass", plural: "storageclasses", singular: "storageclass", short_names: &["sc"], namespaced: false, verbs: ALL_VERBS, subresources: &[], schema: TypeSchema::of::<storage::StorageClass>(), categories: &[] },
    ResourceInfo { group: "batch", version: "v1", kind: "Job", plural: "jobs", singular: "job", short_names: &[], namespaced: true, verbs: ALL_VERBS, subresources: &["status"], schema: TypeSchema::of::<batch::Job>(), categories: &["all"] },
    ResourceInfo { group: "batch", version: "v1", kind: "CronJob", plural: "cronjobs", singular: "cronjob", short_names: &["cj"], namespaced: true, verbs: ALL_VERBS, subresources: &["status"], schema: TypeSchema::of::<batch::CronJob>(), categories: &["all"] },
    ResourceInfo { group: "discovery.k8s.io", version: "v1", kind: "EndpointSlice", plural: "endpointslices", singular: "endpointslice", short_names: &[], namespaced: true, verbs: ALL_VERBS, subresources: &[], schema: TypeSchema::of::<discovery::EndpointSlice>(), categories: &[] },
    ResourceInfo { group: "rbac.authorization.k8s.io", version: "v1", kind: "Role", plural: "roles", singular: "role", short_names: &[], namespaced: true, verbs: ALL_VERBS, subresources: &[], schema: TypeSchema::of::<rbac::Role>(), categories: &[] },
    ResourceInfo { group: "rbac.authorization.k8s.io", version: "v1", kind: "ClusterRole", plural: "clusterroles", singular: "clusterrole", short_names: &[], namespaced: false, verbs: ALL_VERBS, subresources: &[], schema: TypeSchema::of::<rbac::ClusterRole>(), categories: &[] },
    ResourceInfo { group: "rbac.authorization.k8s.io", version: "v1", kind: "RoleBinding", plural: "rolebindings", singular: "rolebinding", short_names: &[], namespaced: true, verbs: ALL_VERBS, subresources: &[], schema: TypeSchema::of::<rbac::RoleBinding>(), categories: &[] },
    ResourceInfo { group: "rbac.authorization.k8s.io", version: "v1", kind: "ClusterRoleBinding", plural: "clusterrolebindings", singular: "clusterrolebinding", short_names: &[], namespaced: false, verbs: ALL_VERBS, subresources: &[], schema: TypeSchema::of::<rbac::ClusterRoleBinding>(), categories: &[] },
    ResourceInfo { group: "autoscaling", version: "v2", kind: "HorizontalPodAutoscaler", plural: "horizontalpodautoscalers", singular: "horizontalpodautoscaler", short_names: &["hpa"], namespaced: true, verbs: ALL_VERBS, subresources: &["status"], schema: TypeSchema::of::<k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler>(), categories: &["all"] },
    // Stored as autoscaling/v2, converted on the way in and out (schema::conversion).
    ResourceInfo { group: "autoscaling", version: "v1", kind: "HorizontalPodAutoscaler", plural: "horizontalpodautoscalers", singular: "horizontalpodautoscaler", short_names: &["hpa"], namespaced: true, verbs: ALL_VERBS, subresources: &["status"], schema: TypeSchema::of::<k8s_openapi::api::autoscaling::v1::HorizontalPodAutoscaler>(), categories: &["all"] },
    ResourceInfo { group: "policy", version: "v1", kind: "PodDisruptionBudget", plural: "poddisruptionbudgets", singular: "poddisruptionbudget", short_names: &["pdb"], namespaced: true, verbs: ALL_VERBS, subresources: &["status"], schema: TypeSchema::of::<policy::PodDisruptionBudget>(), categories: &[] },
    // Stored with the core events (same keys and subjects), converted on the way in and
    // out, as the real server keeps one storage for both versions of Event.
    ResourceInfo { group: "events.k8s.io", version: "v1", kind: "Event", plural: "events", singular: "event", short_names: &["ev"], namespaced: true, verbs: ALL_VERBS, subresources: &[], schema: TypeSchema::of::<events::Event>(), categories: &[] },
    // Not stored: the latest usage the node agents published (metrics-server's API).
    ResourceInfo { group: "metrics.k8s.io", version: "v1beta1", kind: "NodeMetrics", plural: "nodes", singular: "", short_names: &[], namespaced: false, verbs: &["get", "list"], subresources: &[], schema: TypeSchema::of::<crate::metrics::NodeMetrics>(), categories: &[] },
    ResourceInfo { group: "metrics.k8s.io", version: "v1beta1", kind: "PodMetrics", plural: "pods", singular: "", short_names: &[], namespaced: true, verbs: &["get", "list"], subresources: &[], schema: TypeSchema::of::<crate::metrics::PodMetrics>(), categories: &[] },
    // Not stored: answered by the gateway's authorizer.
    ResourceInfo { group: "authorization.k8s.io", version: "v1", kind: "SelfSubjectAccessReview", plural: "selfsubjectaccessreviews", singular: "selfsubjectaccessreview", short_names: &[], namespaced: false, verbs: &["create"], subresources: &[], schema: TypeSchema::of::<authorization::SelfSubjectAccessReview>(), categories: &[] },
    ResourceInfo { group: "authentication.k8s.io", version: "v1", kind: "SelfSubjectReview", plural: "selfsubjectreviews", singular: "selfsubjectreview", short_names: &[], namespaced: false, verbs: &["create"], subresources: &[], schema: TypeSchema::of::<authentication::SelfSubjectReview>(), categories: &[] },
];

/// Services have no deletecollection on the real server.
const SERVICE_VERBS: &[&str] = &["create", "delete", "get", "list", "patch", "update", "watch"];

pub fn by_plural(group: &str, version: &str, plural: &str) -> Option<&'static ResourceInfo> {
    RESOURCES.iter().find(|r| r.group == group && r.version == version && r.plural == plural)
}

/// Whether objects of this resource live in the store (reviews are computed per request).
pub fn is_stored(res: &ResourceInfo) -> bool {
    !matches!(res.group, "authorization.k8s.io" | "authentication.k8s.io" | "metrics.k8s.io")
}

/// The resource whose storage `res` shares, when it is another version of it
/// (events.k8s.io/v1 Event is kept as core/v1 Event).
pub fn storage_of(res: &ResourceInfo) -> &'static ResourceInfo {
    let found = match (res.group, res.kind) {
        ("events.k8s.io", "Event") => by_kind("v1", "Event"),
        ("autoscaling", "HorizontalPodAutoscaler") => by_kind("autoscaling/v2", "HorizontalPodAutoscaler"),
        _ => None,
    };
    found.unwrap_or_else(|| by_plural(res.group, res.version, res.plural).expect("every resource is in the registry"))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_resource_is_unique_and_findable() {
        for r in RESOURCES {
            assert_eq!(by_plural(r.group, r.version, r.plural), Some(r));
            assert_eq!(by_kind(&r.api_version(), r.kind), Some(r));
            assert!(!r.verbs.is_empty(), "{} has no verbs", r.plural);
        }
        let ev = by_plural("events.k8s.io", "v1", "events").unwrap();
        assert_eq!(storage_of(ev).group, "");
        assert!(!is_stored(by_plural("authorization.k8s.io", "v1", "selfsubjectaccessreviews").unwrap()));
        assert_eq!(group_versions()[0], ("", "v1"));
    }
}

/// The fields a resource can be selected by with `fieldSelector` (kube-apiserver's
/// field-label conversions): metadata.name and metadata.namespace for every resource,
/// plus the ones each resource registers.
pub fn field_labels(res: &ResourceInfo) -> &'static [&'static str] {
    match (res.group, res.kind) {
        ("", "Pod") => &[
            "spec.nodeName", "spec.restartPolicy", "spec.schedulerName", "spec.serviceAccountName", "spec.hostNetwork",
            "status.phase", "status.podIP", "status.nominatedNodeName",
        ],
        ("", "Event") | ("events.k8s.io", "Event") => &[
            "involvedObject.kind", "involvedObject.namespace", "involvedObject.name", "involvedObject.uid",
            "involvedObject.apiVersion", "involvedObject.resourceVersion", "involvedObject.fieldPath",
            "reason", "reportingComponent", "source", "type",
        ],
        ("", "Secret") => &["type"],
        ("", "Namespace") => &["status.phase"],
        ("", "Node") => &["spec.unschedulable"],
        ("apps", "ReplicaSet") | ("", "ReplicationController") => &["status.replicas"],
        ("batch", "Job") => &["status.successful"],
        _ => &[],
    }
}

/// Whether `field` may be used in a field selector on `res`.
pub fn selectable(res: &ResourceInfo, field: &str) -> bool {
    matches!(field, "metadata.name" | "metadata.namespace") || field_labels(res).contains(&field)
}
