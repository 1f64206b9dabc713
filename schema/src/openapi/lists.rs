//! How lists merge, which k8s-openapi's generated schemas do not carry: the
//! `patchStrategy`/`patchMergeKey` struct tags and `+listType`/`+listMapKey` markers of the
//! Kubernetes 1.32 Go types (k8s.io/api), as the real server publishes them in its OpenAPI.

/// One list field: its definition, property, patch strategy, merge key, list type and map keys.
pub struct ListRule {
    pub definition: &'static str,
    pub property: &'static str,
    pub patch_strategy: Option<&'static str>,
    pub merge_key: Option<&'static str>,
    pub list_type: &'static str,
    pub map_keys: &'static [&'static str],
}

const fn map(definition: &'static str, property: &'static str, strategy: &'static str, key: &'static str, keys: &'static [&'static str]) -> ListRule {
    ListRule { definition, property, patch_strategy: Some(strategy), merge_key: Some(key), list_type: "map", map_keys: keys }
}

const fn atomic(definition: &'static str, property: &'static str) -> ListRule {
    ListRule { definition, property, patch_strategy: None, merge_key: None, list_type: "atomic", map_keys: &[] }
}

pub static LIST_RULES: &[ListRule] = &[
    map("io.k8s.api.core.v1.PodSpec", "containers", "merge", "name", &["name"]),
    map("io.k8s.api.core.v1.PodSpec", "initContainers", "merge", "name", &["name"]),
    map("io.k8s.api.core.v1.PodSpec", "ephemeralContainers", "merge", "name", &["name"]),
    map("io.k8s.api.core.v1.PodSpec", "volumes", "merge,retainKeys", "name", &["name"]),
    map("io.k8s.api.core.v1.PodSpec", "imagePullSecrets", "merge", "name", &["name"]),
    map("io.k8s.api.core.v1.PodSpec", "hostAliases", "merge", "ip", &["ip"]),
    map("io.k8s.api.core.v1.PodSpec", "topologySpreadConstraints", "merge", "topologyKey", &["topologyKey", "whenUnsatisfiable"]),
    map("io.k8s.api.core.v1.PodSpec", "resourceClaims", "merge,retainKeys", "name", &["name"]),
    map("io.k8s.api.core.v1.PodSpec", "schedulingGates", "merge", "name", &["name"]),
    atomic("io.k8s.api.core.v1.PodSpec", "tolerations"),
    atomic("io.k8s.api.core.v1.PodSpec", "readinessGates"),
    map("io.k8s.api.core.v1.Container", "ports", "merge", "containerPort", &["containerPort", "protocol"]),
    map("io.k8s.api.core.v1.Container", "env", "merge", "name", &["name"]),
    map("io.k8s.api.core.v1.Container", "volumeMounts", "merge", "mountPath", &["mountPath"]),
    map("io.k8s.api.core.v1.Container", "volumeDevices", "merge", "devicePath", &["devicePath"]),
    atomic("io.k8s.api.core.v1.Container", "command"),
    atomic("io.k8s.api.core.v1.Container", "args"),
    atomic("io.k8s.api.core.v1.Container", "envFrom"),
    atomic("io.k8s.api.core.v1.Container", "resizePolicy"),
    map("io.k8s.api.core.v1.EphemeralContainer", "ports", "merge", "containerPort", &["containerPort", "protocol"]),
    map("io.k8s.api.core.v1.EphemeralContainer", "env", "merge", "name", &["name"]),
    map("io.k8s.api.core.v1.EphemeralContainer", "volumeMounts", "merge", "mountPath", &["mountPath"]),
    map("io.k8s.api.core.v1.EphemeralContainer", "volumeDevices", "merge", "devicePath", &["devicePath"]),
    map("io.k8s.api.core.v1.PodStatus", "conditions", "merge", "type", &["type"]),
    map("io.k8s.api.core.v1.ServiceSpec", "ports", "merge", "port", &["port", "protocol"]),
    map("io.k8s.api.core.v1.NodeStatus", "addresses", "merge", "type", &["type"]),
    map("io.k8s.api.core.v1.NodeStatus", "conditions", "merge", "type", &["type"]),
    atomic("io.k8s.api.core.v1.NodeSpec", "taints"),
    map("io.k8s.api.core.v1.NamespaceStatus", "conditions", "merge", "type", &["type"]),
    map("io.k8s.api.core.v1.ServiceAccount", "secrets", "merge", "name", &["name"]),
    atomic("io.k8s.api.core.v1.EndpointSubset", "addresses"),
    atomic("io.k8s.api.core.v1.EndpointSubset", "ports"),
    map("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta", "ownerReferences", "merge", "uid", &["uid"]),
    ListRule { definition: "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta", property: "finalizers", patch_strategy: Some("merge"), merge_key: None, list_type: "set", map_keys: &[] },
    atomic("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta", "managedFields"),
    atomic("io.k8s.apimachinery.pkg.apis.meta.v1.LabelSelector", "matchExpressions"),
    map("io.k8s.api.apps.v1.DeploymentStatus", "conditions", "merge", "type", &["type"]),
    map("io.k8s.api.apps.v1.ReplicaSetStatus", "conditions", "merge", "type", &["type"]),
    map("io.k8s.api.apps.v1.DaemonSetStatus", "conditions", "merge", "type", &["type"]),
    map("io.k8s.api.apps.v1.StatefulSetStatus", "conditions", "merge", "type", &["type"]),
    ListRule { definition: "io.k8s.api.batch.v1.JobStatus", property: "conditions", patch_strategy: Some("merge"), merge_key: Some("type"), list_type: "atomic", map_keys: &[] },
    map("io.k8s.api.policy.v1.PodDisruptionBudgetStatus", "conditions", "merge", "type", &["type"]),
];

/// The rule for `definition.property`, if any.
pub fn rule(definition: &str, property: &str) -> Option<&'static ListRule> {
    LIST_RULES.iter().find(|r| r.definition == definition && r.property == property)
}
