//! The default ClusterRoles and ClusterRoleBindings every cluster starts with, as the
//! real server's bootstrap policy has them (Kubernetes 1.32): `cluster-admin`, the
//! user-facing `admin`/`edit`/`view` (their aggregated rules written out), discovery and
//! public-info roles, basic-user, monitoring and one for node agents.

use crate::rbac::{Policy, AUTHENTICATED, SYSTEM_MASTERS, UNAUTHENTICATED};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use std::collections::BTreeMap;

const READ: &[&str] = &["get", "list", "watch"];
const WRITE: &[&str] = &["create", "delete", "deletecollection", "patch", "update"];
const READ_WRITE: &[&str] = &["get", "list", "watch", "create", "update", "patch", "delete", "deletecollection"];

/// The group flotilla's node agents would authenticate in; the real server leaves its
/// `system:node` binding empty for its Node authorizer, which flotilla does not have.
pub const NODES_GROUP: &str = "system:nodes";

fn strings(x: &[&str]) -> Vec<String> {
    x.iter().map(|s| s.to_string()).collect()
}

fn rule(verbs: &[&str], group: &str, resources: &[&str]) -> PolicyRule {
    PolicyRule { verbs: strings(verbs), api_groups: Some(vec![group.into()]), resources: Some(strings(resources)), ..Default::default() }
}

fn urls(verbs: &[&str], u: &[&str]) -> PolicyRule {
    PolicyRule { verbs: strings(verbs), non_resource_urls: Some(strings(u)), ..Default::default() }
}

fn meta(name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        labels: Some(BTreeMap::from([("kubernetes.io/bootstrapping".to_string(), "rbac-defaults".to_string())])),
        annotations: Some(BTreeMap::from([("rbac.authorization.kubernetes.io/autoupdate".to_string(), "true".to_string())])),
        ..Default::default()
    }
}

fn view_rules() -> Vec<PolicyRule> {
    vec![
        rule(READ, "", &["pods", "replicationcontrollers", "replicationcontrollers/scale", "serviceaccounts", "services", "services/status", "endpoints", "persistentvolumeclaims", "persistentvolumeclaims/status", "configmaps"]),
        rule(READ, "", &["limitranges", "resourcequotas", "bindings", "events", "pods/status", "resourcequotas/status", "namespaces/status", "replicationcontrollers/status", "pods/log"]),
        rule(READ, "", &["namespaces"]),
        rule(READ, "discovery.k8s.io", &["endpointslices"]),
        rule(READ, "apps", &["controllerrevisions", "statefulsets", "statefulsets/scale", "statefulsets/status", "daemonsets", "daemonsets/status", "deployments", "deployments/scale", "deployments/status", "replicasets", "replicasets/scale", "replicasets/status"]),
        rule(READ, "autoscaling", &["horizontalpodautoscalers", "horizontalpodautoscalers/status"]),
        rule(READ, "batch", &["jobs", "cronjobs", "cronjobs/status", "jobs/status"]),
        rule(READ, "extensions", &["daemonsets", "daemonsets/status", "deployments", "deployments/scale", "deployments/status", "ingresses", "ingresses/status", "replicasets", "replicasets/scale", "replicasets/status", "replicationcontrollers/scale", "networkpolicies"]),
        rule(READ, "policy", &["poddisruptionbudgets", "poddisruptionbudgets/status"]),
        rule(READ, "networking.k8s.io", &["networkpolicies", "ingresses", "ingresses/status"]),
    ]
}

fn edit_only_rules() -> Vec<PolicyRule> {
    vec![
        rule(READ, "", &["pods/attach", "pods/proxy", "pods/exec", "pods/portforward", "secrets", "services/proxy"]),
        rule(&["impersonate"], "", &["serviceaccounts"]),
        rule(WRITE, "", &["pods", "pods/attach", "pods/proxy", "pods/exec", "pods/portforward"]),
        rule(&["create"], "", &["pods/eviction"]),
        rule(WRITE, "", &["replicationcontrollers", "replicationcontrollers/scale", "serviceaccounts", "services", "services/proxy", "persistentvolumeclaims", "configmaps", "secrets", "events"]),
        rule(&["create"], "", &["serviceaccounts/token"]),
        rule(WRITE, "apps", &["statefulsets", "statefulsets/scale", "daemonsets", "deployments", "deployments/scale", "deployments/rollback", "replicasets", "replicasets/scale"]),
        rule(WRITE, "autoscaling", &["horizontalpodautoscalers"]),
        rule(WRITE, "batch", &["jobs", "cronjobs"]),
        rule(WRITE, "extensions", &["daemonsets", "deployments", "deployments/scale", "deployments/rollback", "ingresses", "replicasets", "replicasets/scale", "replicationcontrollers/scale", "networkpolicies"]),
        rule(WRITE, "policy", &["poddisruptionbudgets"]),
        rule(WRITE, "networking.k8s.io", &["networkpolicies", "ingresses"]),
        rule(READ_WRITE, "coordination.k8s.io", &["leases"]),
    ]
}

fn admin_only_rules() -> Vec<PolicyRule> {
    vec![rule(&["create"], "authorization.k8s.io", &["localsubjectaccessreviews"]), rule(READ_WRITE, "rbac.authorization.k8s.io", &["roles", "rolebindings"])]
}

fn node_rules() -> Vec<PolicyRule> {
    vec![
        rule(&["create"], "authentication.k8s.io", &["tokenreviews"]),
        rule(&["create"], "authorization.k8s.io", &["subjectaccessreviews", "localsubjectaccessreviews"]),
        rule(READ, "", &["services"]),
        rule(&["create", "get", "list", "watch"], "", &["nodes"]),
        rule(&["update", "patch"], "", &["nodes/status"]),
        rule(&["update", "patch"], "", &["nodes"]),
        rule(&["create", "update", "patch"], "", &["events"]),
        rule(READ, "", &["pods"]),
        rule(&["create", "delete"], "", &["pods"]),
        rule(&["update", "patch"], "", &["pods/status"]),
        rule(&["create"], "", &["pods/eviction"]),
        rule(READ, "", &["secrets", "configmaps"]),
        rule(&["get"], "", &["persistentvolumeclaims", "persistentvolumes"]),
        rule(&["get"], "", &["endpoints"]),
        rule(&["create", "get", "list", "watch"], "certificates.k8s.io", &["certificatesigningrequests"]),
        rule(&["get", "create", "update", "patch", "delete"], "coordination.k8s.io", &["leases"]),
        rule(&["get"], "storage.k8s.io", &["volumeattachments"]),
        rule(&["create"], "", &["serviceaccounts/token"]),
        rule(READ, "node.k8s.io", &["runtimeclasses"]),
    ]
}

fn role(name: &str, rules: Vec<PolicyRule>) -> ClusterRole {
    ClusterRole { metadata: meta(name), rules: Some(rules), ..Default::default() }
}

pub fn cluster_roles() -> Vec<ClusterRole> {
    let view = view_rules();
    let edit: Vec<PolicyRule> = edit_only_rules().into_iter().chain(view.iter().cloned()).collect();
    let admin: Vec<PolicyRule> = admin_only_rules().into_iter().chain(edit.iter().cloned()).collect();
    vec![
        role("cluster-admin", vec![rule(&["*"], "*", &["*"]), urls(&["*"], &["*"])]),
        role("admin", admin),
        role("edit", edit),
        role("view", view),
        role("system:discovery", vec![urls(&["get"], &["/livez", "/readyz", "/healthz", "/version", "/version/", "/openapi", "/openapi/*", "/api", "/api/*", "/apis", "/apis/*"])]),
        role("system:public-info-viewer", vec![urls(&["get"], &["/livez", "/readyz", "/healthz", "/version", "/version/"])]),
        role(
            "system:basic-user",
            vec![rule(&["create"], "authorization.k8s.io", &["selfsubjectaccessreviews", "selfsubjectrulesreviews"]), rule(&["create"], "authentication.k8s.io", &["selfsubjectreviews"])],
        ),
        role("system:monitoring", vec![urls(&["get"], &["/metrics", "/metrics/slis", "/livez", "/readyz", "/healthz", "/livez/*", "/readyz/*", "/healthz/*"])]),
        role("system:node", node_rules()),
    ]
}

fn binding(name: &str, role: &str, groups: &[&str]) -> ClusterRoleBinding {
    ClusterRoleBinding {
        metadata: meta(name),
        role_ref: RoleRef { api_group: Some("rbac.authorization.k8s.io".into()), kind: "ClusterRole".into(), name: role.into() },
        subjects: Some(groups.iter().map(|g| Subject { kind: "Group".into(), api_group: Some("rbac.authorization.k8s.io".into()), name: g.to_string(), namespace: None }).collect()),
    }
}

pub fn cluster_role_bindings() -> Vec<ClusterRoleBinding> {
    vec![
        binding("cluster-admin", "cluster-admin", &[SYSTEM_MASTERS]),
        binding("system:discovery", "system:discovery", &[AUTHENTICATED]),
        binding("system:public-info-viewer", "system:public-info-viewer", &[AUTHENTICATED, UNAUTHENTICATED]),
        binding("system:basic-user", "system:basic-user", &[AUTHENTICATED]),
        binding("system:monitoring", "system:monitoring", &["system:monitoring"]),
        binding("system:node", "system:node", &[NODES_GROUP]),
    ]
}

/// The policy the defaults alone make: what the gateway authorizes with until its cache
/// has listed the stored objects.
pub fn policy() -> Policy {
    let mut p = Policy::default();
    for r in cluster_roles() {
        p.put_cluster_role(r);
    }
    for b in cluster_role_bindings() {
        p.put_cluster_role_binding(b);
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rbac::{authorize, Attributes, UserInfo};

    #[test]
    fn anonymous_sees_public_info_only() {
        let p = policy();
        let anon = UserInfo::anonymous();
        for path in ["/healthz", "/readyz", "/version"] {
            assert!(authorize(&anon, &Attributes::non_resource("get", path), &p).allowed(), "{path}");
        }
        for path in ["/api", "/apis/apps/v1", "/openapi/v3", "/metrics"] {
            assert!(!authorize(&anon, &Attributes::non_resource("get", path), &p).allowed(), "{path}");
        }
        assert!(!authorize(&anon, &Attributes::resource("list", "", "namespaces", "", ""), &p).allowed());
    }

    #[test]
    fn authenticated_users_discover_and_review_themselves() {
        let p = policy();
        let u = UserInfo::authenticated("alice", "", []);
        assert!(authorize(&u, &Attributes::non_resource("get", "/apis/apps/v1"), &p).allowed());
        assert!(authorize(&u, &Attributes::resource("create", "authorization.k8s.io", "selfsubjectaccessreviews", "", ""), &p).allowed());
        assert!(!authorize(&u, &Attributes::resource("list", "", "pods", "default", ""), &p).allowed());
        let node = UserInfo::authenticated("system:node:n1", "", [NODES_GROUP.to_string()]);
        assert!(authorize(&node, &Attributes { subresource: "status".into(), ..Attributes::resource("patch", "", "pods", "d", "p") }, &p).allowed());
    }

    #[test]
    fn view_edit_admin_nest() {
        let roles = cluster_roles();
        let rules = |n: &str| roles.iter().find(|r| r.metadata.name.as_deref() == Some(n)).and_then(|r| r.rules.clone()).unwrap();
        let allows = |n: &str, a: &Attributes| rules(n).iter().any(|r| crate::rbac::rule_allows(a, r));
        let get_secret = Attributes::resource("get", "", "secrets", "x", "s");
        assert!(!allows("view", &get_secret));
        assert!(allows("edit", &get_secret));
        let bind = Attributes::resource("create", "rbac.authorization.k8s.io", "rolebindings", "x", "");
        assert!(!allows("edit", &bind));
        assert!(allows("admin", &bind));
        assert!(allows("view", &Attributes::resource("list", "batch", "cronjobs", "x", "")));
    }
}
