//! RBAC as the real authorizer evaluates it: a request's attributes against the
//! ClusterRoleBindings, then the RoleBindings of its namespace, each naming a role whose
//! rules may allow it. `authorize` is a pure function of (user, attributes, policy); the
//! gateway keeps the policy in an informer-fed cache and turns a refusal into a 403.

use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject};
use std::collections::BTreeMap;

/// Members of this group are allowed everything, before RBAC is consulted (as the real
/// server's privileged-group authorizer does), so an admin never depends on the cache.
pub const SYSTEM_MASTERS: &str = "system:masters";
pub const ANONYMOUS: &str = "system:anonymous";
pub const UNAUTHENTICATED: &str = "system:unauthenticated";
pub const AUTHENTICATED: &str = "system:authenticated";

/// Who is asking: a user name, its uid, every group it belongs to, and what else its
/// authenticator says (a ServiceAccount token's credential id).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UserInfo {
    pub name: String,
    pub uid: String,
    pub groups: Vec<String>,
    pub extra: std::collections::BTreeMap<String, Vec<String>>,
}

impl UserInfo {
    pub fn anonymous() -> UserInfo {
        UserInfo { name: ANONYMOUS.into(), groups: vec![UNAUTHENTICATED.into()], ..Default::default() }
    }

    /// An authenticated user: `system:authenticated` is added to its groups once.
    pub fn authenticated(name: &str, uid: &str, groups: impl IntoIterator<Item = String>) -> UserInfo {
        let mut g: Vec<String> = groups.into_iter().filter(|g| !g.is_empty()).collect();
        if !g.iter().any(|x| x == AUTHENTICATED) {
            g.push(AUTHENTICATED.into());
        }
        UserInfo { name: name.into(), uid: uid.into(), groups: g, ..Default::default() }
    }
}

/// What a request does, as RBAC sees it (the real server's authorizer.Attributes).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Attributes {
    pub verb: String,
    /// False for non-resource URLs such as `/api`, `/version`, `/healthz`.
    pub resource_request: bool,
    pub namespace: String,
    pub api_group: String,
    pub resource: String,
    pub subresource: String,
    pub name: String,
    /// The URL path of a non-resource request.
    pub path: String,
}

impl Attributes {
    pub fn resource(verb: &str, api_group: &str, resource: &str, namespace: &str, name: &str) -> Attributes {
        Attributes { verb: verb.into(), resource_request: true, api_group: api_group.into(), resource: resource.into(), namespace: namespace.into(), name: name.into(), ..Default::default() }
    }
    pub fn non_resource(verb: &str, path: &str) -> Attributes {
        Attributes { verb: verb.into(), path: path.into(), ..Default::default() }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow { reason: String },
    /// RBAC never denies explicitly; without an allowing rule it has no opinion, and the
    /// request is refused. `reason` carries problems met on the way (a missing role).
    NoOpinion { reason: String },
}

impl Decision {
    pub fn allowed(&self) -> bool {
        matches!(self, Decision::Allow { .. })
    }
    pub fn reason(&self) -> &str {
        match self {
            Decision::Allow { reason } | Decision::NoOpinion { reason } => reason,
        }
    }
}

/// Every Role, ClusterRole and binding the authorizer knows.
#[derive(Debug, Default, Clone)]
pub struct Policy {
    pub roles: BTreeMap<(String, String), Vec<PolicyRule>>,
    pub cluster_roles: BTreeMap<String, Vec<PolicyRule>>,
    /// Keyed by (namespace, name), so one namespace's bindings are one range.
    pub role_bindings: BTreeMap<(String, String), RoleBinding>,
    pub cluster_role_bindings: BTreeMap<String, ClusterRoleBinding>,
}

fn key(ns: Option<&String>, name: Option<&String>) -> (String, String) {
    (ns.cloned().unwrap_or_default(), name.cloned().unwrap_or_default())
}

impl Policy {
    pub fn put_role(&mut self, r: Role) {
        self.roles.insert(key(r.metadata.namespace.as_ref(), r.metadata.name.as_ref()), r.rules.unwrap_or_default());
    }
    pub fn remove_role(&mut self, r: &Role) {
        self.roles.remove(&key(r.metadata.namespace.as_ref(), r.metadata.name.as_ref()));
    }
    pub fn put_cluster_role(&mut self, r: ClusterRole) {
        self.cluster_roles.insert(r.metadata.name.clone().unwrap_or_default(), r.rules.unwrap_or_default());
    }
    pub fn remove_cluster_role(&mut self, r: &ClusterRole) {
        self.cluster_roles.remove(r.metadata.name.as_deref().unwrap_or_default());
    }
    pub fn put_role_binding(&mut self, b: RoleBinding) {
        self.role_bindings.insert(key(b.metadata.namespace.as_ref(), b.metadata.name.as_ref()), b);
    }
    pub fn remove_role_binding(&mut self, b: &RoleBinding) {
        self.role_bindings.remove(&key(b.metadata.namespace.as_ref(), b.metadata.name.as_ref()));
    }
    pub fn put_cluster_role_binding(&mut self, b: ClusterRoleBinding) {
        self.cluster_role_bindings.insert(b.metadata.name.clone().unwrap_or_default(), b);
    }
    pub fn remove_cluster_role_binding(&mut self, b: &ClusterRoleBinding) {
        self.cluster_role_bindings.remove(b.metadata.name.as_deref().unwrap_or_default());
    }

    /// The rules a binding's roleRef names, or why they cannot be found.
    fn rules_of(&self, r: &RoleRef, binding_ns: &str) -> Result<&[PolicyRule], String> {
        let found = match r.kind.as_str() {
            "ClusterRole" => self.cluster_roles.get(&r.name),
            "Role" => self.roles.get(&(binding_ns.to_string(), r.name.clone())),
            _ => None,
        };
        found.map(Vec::as_slice).ok_or_else(|| format!("{}.rbac.authorization.k8s.io \"{}\" not found", r.kind.to_ascii_lowercase(), r.name))
    }
}

fn has(list: &[String], want: &str) -> bool {
    list.iter().any(|x| x == "*" || x == want)
}

/// Does one rule allow the request? (rbac's RuleAllows.)
pub fn rule_allows(a: &Attributes, rule: &PolicyRule) -> bool {
    if !has(&rule.verbs, &a.verb) {
        return false;
    }
    if !a.resource_request {
        return rule.non_resource_urls.as_deref().unwrap_or_default().iter().any(|u| u == "*" || *u == a.path || (u.ends_with('*') && a.path.starts_with(u.trim_end_matches('*'))));
    }
    let groups = rule.api_groups.as_deref().unwrap_or_default();
    if !has(groups, &a.api_group) {
        return false;
    }
    let combined = if a.subresource.is_empty() { a.resource.clone() } else { format!("{}/{}", a.resource, a.subresource) };
    let resources = rule.resources.as_deref().unwrap_or_default();
    let resource_ok = resources.iter().any(|r| r == "*" || *r == combined || (!a.subresource.is_empty() && *r == format!("*/{}", a.subresource)));
    let names = rule.resource_names.as_deref().unwrap_or_default();
    resource_ok && (names.is_empty() || names.iter().any(|n| *n == a.name))
}

/// Does a binding's subject name this user? Service accounts without a namespace mean
/// the binding's own.
pub fn applies_to(s: &Subject, user: &UserInfo, binding_ns: &str) -> bool {
    match s.kind.as_str() {
        "User" => user.name == s.name,
        "Group" => user.groups.iter().any(|g| *g == s.name),
        "ServiceAccount" => {
            let ns = s.namespace.as_deref().filter(|n| !n.is_empty()).unwrap_or(binding_ns);
            !ns.is_empty() && user.name == format!("system:serviceaccount:{ns}:{}", s.name)
        }
        _ => false,
    }
}

fn describe_subject(s: &Subject, binding_ns: &str) -> String {
    match s.kind.as_str() {
        "ServiceAccount" => format!("{} \"{}/{}\"", s.kind, s.name, s.namespace.as_deref().filter(|n| !n.is_empty()).unwrap_or(binding_ns)),
        _ => format!("{} \"{}\"", s.kind, s.name),
    }
}

/// The RBAC decision for `user` doing `a`. Members of `system:masters` are allowed first.
pub fn authorize(user: &UserInfo, a: &Attributes, policy: &Policy) -> Decision {
    if user.groups.iter().any(|g| g == SYSTEM_MASTERS) {
        return Decision::Allow { reason: String::new() };
    }
    let mut errors: Vec<String> = Vec::new();
    for b in policy.cluster_role_bindings.values() {
        let Some(subject) = b.subjects.iter().flatten().find(|s| applies_to(s, user, "")) else { continue };
        match policy.rules_of(&b.role_ref, "") {
            Err(e) => errors.push(e),
            Ok(rules) if rules.iter().any(|r| rule_allows(a, r)) => {
                let reason = format!(
                    "RBAC: allowed by ClusterRoleBinding \"{}\" of {} \"{}\" to {}",
                    b.metadata.name.as_deref().unwrap_or(""),
                    b.role_ref.kind,
                    b.role_ref.name,
                    describe_subject(subject, "")
                );
                return Decision::Allow { reason };
            }
            Ok(_) => {}
        }
    }
    if !a.namespace.is_empty() {
        let range = (a.namespace.clone(), String::new())..(format!("{}\u{0}", a.namespace), String::new());
        for ((ns, name), b) in policy.role_bindings.range(range) {
            let Some(subject) = b.subjects.iter().flatten().find(|s| applies_to(s, user, ns)) else { continue };
            match policy.rules_of(&b.role_ref, ns) {
                Err(e) => errors.push(e),
                Ok(rules) if rules.iter().any(|r| rule_allows(a, r)) => {
                    let reason = format!("RBAC: allowed by RoleBinding \"{name}/{ns}\" of {} \"{}\" to {}", b.role_ref.kind, b.role_ref.name, describe_subject(subject, ns));
                    return Decision::Allow { reason };
                }
                Ok(_) => {}
            }
        }
    }
    let reason = match errors.len() {
        0 => String::new(),
        1 => format!("RBAC: {}", errors[0]),
        _ => format!("RBAC: [{}]", errors.join(", ")),
    };
    Decision::NoOpinion { reason }
}

/// `User "alice" cannot list resource "pods" in API group "" in the namespace "default"`:
/// the real server's sentence for a refused request.
pub fn forbidden_message(user: &str, a: &Attributes) -> String {
    if !a.resource_request {
        return format!("User \"{user}\" cannot {} path \"{}\"", a.verb, a.path);
    }
    let resource = if a.subresource.is_empty() { a.resource.clone() } else { format!("{}/{}", a.resource, a.subresource) };
    if a.namespace.is_empty() {
        format!("User \"{user}\" cannot {} resource \"{resource}\" in API group \"{}\" at the cluster scope", a.verb, a.api_group)
    } else {
        format!("User \"{user}\" cannot {} resource \"{resource}\" in API group \"{}\" in the namespace \"{}\"", a.verb, a.api_group, a.namespace)
    }
}

/// The whole Status message: `pods is forbidden: …`, `deployments.apps "web" is
/// forbidden: …`, or `forbidden: …` for non-resource paths; a reason is appended.
pub fn forbidden_status_message(user: &str, a: &Attributes, reason: &str) -> String {
    let mut msg = forbidden_message(user, a);
    if !reason.is_empty() {
        msg = format!("{msg}: {reason}");
    }
    if !a.resource_request || a.resource.is_empty() {
        return format!("forbidden: {msg}");
    }
    let gr = if a.api_group.is_empty() { a.resource.clone() } else { format!("{}.{}", a.resource, a.api_group) };
    if a.name.is_empty() {
        format!("{gr} is forbidden: {msg}")
    } else {
        format!("{gr} \"{}\" is forbidden: {msg}", a.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn rule(verbs: &[&str], groups: &[&str], resources: &[&str]) -> PolicyRule {
        let v = |x: &[&str]| x.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        PolicyRule { verbs: v(verbs), api_groups: Some(v(groups)), resources: Some(v(resources)), ..Default::default() }
    }

    fn subject(kind: &str, name: &str, ns: Option<&str>) -> Subject {
        Subject { kind: kind.into(), name: name.into(), namespace: ns.map(str::to_string), api_group: None }
    }

    fn role_ref(kind: &str, name: &str) -> RoleRef {
        RoleRef { api_group: Some("rbac.authorization.k8s.io".into()), kind: kind.into(), name: name.into() }
    }

    fn policy() -> Policy {
        let mut p = Policy::default();
        p.put_cluster_role(ClusterRole { metadata: ObjectMeta { name: Some("view".into()), ..Default::default() }, rules: Some(vec![rule(&["get", "list", "watch"], &[""], &["pods", "pods/log"])]), ..Default::default() });
        p.put_role(Role { metadata: ObjectMeta { name: Some("scaler".into()), namespace: Some("x".into()), ..Default::default() }, rules: Some(vec![rule(&["patch"], &["apps"], &["*/scale"])]) });
        p.put_role_binding(RoleBinding {
            metadata: ObjectMeta { name: Some("alice-view".into()), namespace: Some("x".into()), ..Default::default() },
            role_ref: role_ref("ClusterRole", "view"),
            subjects: Some(vec![subject("User", "alice", None), subject("ServiceAccount", "bot", None)]),
        });
        p.put_role_binding(RoleBinding {
            metadata: ObjectMeta { name: Some("scalers".into()), namespace: Some("x".into()), ..Default::default() },
            role_ref: role_ref("Role", "scaler"),
            subjects: Some(vec![subject("Group", "ops", None)]),
        });
        p.put_cluster_role_binding(ClusterRoleBinding {
            metadata: ObjectMeta { name: Some("dangling".into()), ..Default::default() },
            role_ref: role_ref("ClusterRole", "gone"),
            subjects: Some(vec![subject("Group", "ghosts", None)]),
        });
        p
    }

    #[test]
    fn a_namespaced_view_binding_reads_only_there() {
        let p = policy();
        let alice = UserInfo::authenticated("alice", "", []);
        let list = Attributes::resource("list", "", "pods", "x", "");
        let d = authorize(&alice, &list, &p);
        assert_eq!(d, Decision::Allow { reason: "RBAC: allowed by RoleBinding \"alice-view/x\" of ClusterRole \"view\" to User \"alice\"".into() });
        assert!(!authorize(&alice, &Attributes::resource("list", "", "pods", "y", ""), &p).allowed());
        assert!(!authorize(&alice, &Attributes::resource("create", "", "pods", "x", ""), &p).allowed());
        assert!(!authorize(&alice, &Attributes::resource("get", "", "secrets", "x", "s"), &p).allowed());
        let log = Attributes { subresource: "log".into(), ..Attributes::resource("get", "", "pods", "x", "p") };
        assert!(authorize(&alice, &log, &p).allowed());
        let bob = UserInfo::authenticated("bob", "", []);
        assert!(!authorize(&bob, &list, &p).allowed());
    }

    #[test]
    fn groups_service_accounts_subresource_wildcards_and_masters() {
        let p = policy();
        let ops = UserInfo::authenticated("carol", "", ["ops".to_string()]);
        let scale = Attributes { subresource: "scale".into(), ..Attributes::resource("patch", "apps", "deployments", "x", "web") };
        assert!(authorize(&ops, &scale, &p).allowed());
        assert!(!authorize(&ops, &Attributes::resource("patch", "apps", "deployments", "x", "web"), &p).allowed());
        let sa = UserInfo::authenticated("system:serviceaccount:x:bot", "", []);
        assert!(authorize(&sa, &Attributes::resource("get", "", "pods", "x", "p"), &p).allowed());
        let root = UserInfo::authenticated("kubernetes-admin", "", [SYSTEM_MASTERS.to_string()]);
        assert!(authorize(&root, &Attributes::non_resource("get", "/anything"), &Policy::default()).allowed());
    }

    #[test]
    fn missing_roles_are_reported() {
        let ghost = UserInfo::authenticated("g", "", ["ghosts".to_string()]);
        let d = authorize(&ghost, &Attributes::resource("get", "", "pods", "x", "p"), &policy());
        assert_eq!(d, Decision::NoOpinion { reason: "RBAC: clusterrole.rbac.authorization.k8s.io \"gone\" not found".into() });
    }

    #[test]
    fn resource_names_and_urls() {
        let mut r = rule(&["get"], &[""], &["configmaps"]);
        r.resource_names = Some(vec!["only".into()]);
        assert!(rule_allows(&Attributes::resource("get", "", "configmaps", "x", "only"), &r));
        assert!(!rule_allows(&Attributes::resource("get", "", "configmaps", "x", "other"), &r));
        let u = PolicyRule { verbs: vec!["get".into()], non_resource_urls: Some(vec!["/apis/*".into(), "/version".into()]), ..Default::default() };
        assert!(rule_allows(&Attributes::non_resource("get", "/apis/apps/v1"), &u));
        assert!(rule_allows(&Attributes::non_resource("get", "/version"), &u));
        assert!(!rule_allows(&Attributes::non_resource("get", "/api"), &u));
        assert!(!rule_allows(&Attributes::non_resource("post", "/version"), &u));
    }

    #[test]
    fn messages_match_the_real_server() {
        let a = Attributes::resource("list", "", "pods", "default", "");
        assert_eq!(forbidden_status_message("alice", &a, ""), "pods is forbidden: User \"alice\" cannot list resource \"pods\" in API group \"\" in the namespace \"default\"");
        let c = Attributes::resource("list", "", "namespaces", "", "");
        assert_eq!(forbidden_status_message(ANONYMOUS, &c, ""), "namespaces is forbidden: User \"system:anonymous\" cannot list resource \"namespaces\" in API group \"\" at the cluster scope");
        let d = Attributes::resource("get", "apps", "deployments", "d", "web");
        assert_eq!(forbidden_status_message("bob", &d, ""), "deployments.apps \"web\" is forbidden: User \"bob\" cannot get resource \"deployments\" in API group \"apps\" in the namespace \"d\"");
        assert_eq!(forbidden_status_message(ANONYMOUS, &Attributes::non_resource("get", "/api"), ""), "forbidden: User \"system:anonymous\" cannot get path \"/api\"");
        assert_eq!(UserInfo::authenticated("a", "", [AUTHENTICATED.to_string()]).groups, vec![AUTHENTICATED.to_string()]);
    }
}
