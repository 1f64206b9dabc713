//! Authorization: each request's RBAC attributes (kube-apiserver's RequestInfo), and the
//! RBAC objects kept in memory by four informers so that no request reads the store to
//! be authorized. Until every informer has listed, the default policy stands in.

use super::status::ApiError;
use axum::http::Method;
use bus::informer::{watch_objects, InformerEvent, Scope};
use futures::StreamExt;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use schema::rbac::{self, Attributes, Decision, Policy, UserInfo};
use serde_json::json;
use std::sync::{Arc, RwLock};
use tokio_util::sync::CancellationToken;

/// Subresources of a namespace, which name the namespace itself rather than a resource in it.
const NAMESPACE_SUBRESOURCES: &[&str] = &["status", "finalize"];

/// The RBAC attributes of a request: `segs` are the decoded path segments.
pub fn attributes(method: &Method, path: &str, segs: &[&str], query: &[(String, String)]) -> Attributes {
    let q = |k: &str| query.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str());
    let (group, rest) = match segs {
        ["api", _, rest @ ..] if !rest.is_empty() => ("", rest),
        ["apis", g, _, rest @ ..] if !rest.is_empty() => (*g, rest),
        _ => {
            let verb = if *method == Method::HEAD { "get".to_string() } else { method.as_str().to_ascii_lowercase() };
            return Attributes::non_resource(&verb, path);
        }
    };
    let mut parts = rest;
    let mut namespace = "";
    if parts[0] == "namespaces" && parts.len() > 1 {
        namespace = parts[1];
        if parts.len() > 2 && !NAMESPACE_SUBRESOURCES.contains(&parts[2]) {
            parts = &parts[2..];
        }
    }
    let resource = parts[0];
    let mut name = parts.get(1).copied().unwrap_or("").to_string();
    let subresource = parts.get(2).copied().unwrap_or("");
    let watch = super::query_bool(q("watch"));
    let verb = match *method {
        Method::GET | Method::HEAD if watch => "watch",
        Method::GET | Method::HEAD if name.is_empty() => "list",
        Method::GET | Method::HEAD => "get",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE if name.is_empty() => "deletecollection",
        Method::DELETE => "delete",
        _ => "",
    };
    let verb = if verb.is_empty() { method.as_str().to_ascii_lowercase() } else { verb.to_string() };
    if name.is_empty() && (verb == "list" || verb == "watch") {
        // A list or watch of one name (what `kubectl get -w NAME` and informers send)
        // is authorized as that name, so resourceNames rules apply.
        if let Some(n) = q("fieldSelector").and_then(|fs| fs.split(',').find_map(|t| t.strip_prefix("metadata.name="))) {
            name = n.to_string();
        }
    }
    Attributes { verb, resource_request: true, namespace: namespace.into(), api_group: group.into(), resource: resource.into(), subresource: subresource.into(), name, path: path.into() }
}

/// The 403 for a refused request, shaped as the real server's.
pub fn forbidden(user: &UserInfo, a: &Attributes, reason: &str) -> ApiError {
    let mut details = json!({});
    if a.resource_request && !a.resource.is_empty() {
        details["kind"] = json!(a.resource);
        if !a.api_group.is_empty() {
            details["group"] = json!(a.api_group);
        }
        if !a.name.is_empty() {
            details["name"] = json!(a.name);
        }
    }
    ApiError { details: Some(details), ..ApiError::new(403, "Forbidden", rbac::forbidden_status_message(&user.name, a, reason)) }
}

#[derive(Default)]
struct Cache {
    policy: Policy,
    /// Which of the four kinds have been listed (Role, ClusterRole, RoleBinding, ClusterRoleBinding).
    listed: [bool; 4],
}

/// The gateway's RBAC view, fed by informers.
pub struct Rbac {
    cache: RwLock<Cache>,
    defaults: Policy,
}

impl Rbac {
    pub fn new() -> Arc<Rbac> {
        Arc::new(Rbac { cache: RwLock::new(Cache::default()), defaults: schema::rbac_defaults::policy() })
    }

    /// True once every RBAC kind has been listed from the store.
    pub fn synced(&self) -> bool {
        self.cache.read().map(|c| c.listed.iter().all(|l| *l)).unwrap_or(false)
    }

    pub fn authorize(&self, user: &UserInfo, a: &Attributes) -> Decision {
        match self.cache.read() {
            Ok(c) if c.listed.iter().all(|l| *l) => rbac::authorize(user, a, &c.policy),
            _ => rbac::authorize(user, a, &self.defaults),
        }
    }

    fn update(&self, f: impl FnOnce(&mut Cache)) {
        // A poisoned lock only means another updater panicked; the data is still a policy.
        let mut g = self.cache.write().unwrap_or_else(|e| e.into_inner());
        f(&mut g);
    }

    /// Starts the four informers; they stop when `stop` fires.
    pub fn start(self: &Arc<Self>, client: bus::Client, stop: CancellationToken) {
        feed::<Role>(self.clone(), client.clone(), stop.clone(), 0, |p| p.roles.clear(), Policy::put_role, Policy::remove_role);
        feed::<ClusterRole>(self.clone(), client.clone(), stop.clone(), 1, |p| p.cluster_roles.clear(), Policy::put_cluster_role, Policy::remove_cluster_role);
        feed::<RoleBinding>(self.clone(), client.clone(), stop.clone(), 2, |p| p.role_bindings.clear(), Policy::put_role_binding, Policy::remove_role_binding);
        feed::<ClusterRoleBinding>(self.clone(), client, stop, 3, |p| p.cluster_role_bindings.clear(), Policy::put_cluster_role_binding, Policy::remove_cluster_role_binding);
    }
}

fn feed<K: bus::client::Object>(rbac: Arc<Rbac>, client: bus::Client, stop: CancellationToken, idx: usize, clear: fn(&mut Policy), put: fn(&mut Policy, K), remove: fn(&mut Policy, &K)) {
    tokio::spawn(async move {
        let events = watch_objects::<K>(client, Scope::default());
        tokio::pin!(events);
        loop {
            let ev = tokio::select! {
                _ = stop.cancelled() => return,
                ev = events.next() => ev,
            };
            match ev {
                None => return,
                Some(InformerEvent::Listed(items, _)) => rbac.update(|c| {
                    clear(&mut c.policy);
                    for it in items {
                        put(&mut c.policy, it);
                    }
                    c.listed[idx] = true;
                }),
                Some(InformerEvent::Applied(it, _)) => rbac.update(|c| put(&mut c.policy, it)),
                Some(InformerEvent::Deleted(it, _)) => rbac.update(|c| remove(&mut c.policy, &it)),
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(method: Method, path: &str) -> Attributes {
        let (p, q) = path.split_once('?').unwrap_or((path, ""));
        let segs: Vec<&str> = p.split('/').filter(|s| !s.is_empty()).collect();
        attributes(&method, p, &segs, &super::super::parse_query(q))
    }

    #[test]
    fn request_info() {
        let a = attrs(Method::GET, "/api/v1/namespaces/default/pods");
        assert_eq!((a.verb.as_str(), a.resource.as_str(), a.namespace.as_str(), a.resource_request), ("list", "pods", "default", true));
        let a = attrs(Method::GET, "/api/v1/namespaces/default/pods?watch=true&fieldSelector=metadata.name%3Dweb");
        assert_eq!((a.verb.as_str(), a.name.as_str()), ("watch", "web"));
        let a = attrs(Method::GET, "/api/v1/namespaces/default/pods/p/log");
        assert_eq!((a.verb.as_str(), a.name.as_str(), a.subresource.as_str()), ("get", "p", "log"));
        let a = attrs(Method::DELETE, "/apis/apps/v1/namespaces/d/deployments");
        assert_eq!((a.verb.as_str(), a.api_group.as_str()), ("deletecollection", "apps"));
        let a = attrs(Method::PATCH, "/apis/apps/v1/namespaces/d/deployments/web/scale");
        assert_eq!((a.verb.as_str(), a.name.as_str(), a.subresource.as_str()), ("patch", "web", "scale"));
        // A namespace is its own namespace, and so are its status and finalize.
        let a = attrs(Method::GET, "/api/v1/namespaces/demo");
        assert_eq!((a.resource.as_str(), a.name.as_str(), a.namespace.as_str()), ("namespaces", "demo", "demo"));
        let a = attrs(Method::PUT, "/api/v1/namespaces/demo/finalize");
        assert_eq!((a.resource.as_str(), a.subresource.as_str(), a.verb.as_str()), ("namespaces", "finalize", "update"));
        let a = attrs(Method::GET, "/api/v1/namespaces");
        assert_eq!((a.verb.as_str(), a.namespace.as_str()), ("list", ""));
        let a = attrs(Method::POST, "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews");
        assert_eq!((a.verb.as_str(), a.api_group.as_str()), ("create", "authorization.k8s.io"));
        for p in ["/api", "/apis", "/api/v1", "/apis/apps", "/apis/apps/v1", "/version", "/openapi/v3/apis/apps/v1"] {
            let a = attrs(Method::GET, p);
            assert!(!a.resource_request, "{p}");
            assert_eq!((a.verb.as_str(), a.path.as_str()), ("get", p));
        }
    }

    #[test]
    fn forbidden_status() {
        let anon = UserInfo::anonymous();
        let v = forbidden(&anon, &attrs(Method::GET, "/api/v1/namespaces"), "").status_json();
        assert_eq!(
            v,
            json!({"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","reason":"Forbidden","code":403,
                   "message":"namespaces is forbidden: User \"system:anonymous\" cannot list resource \"namespaces\" in API group \"\" at the cluster scope",
                   "details":{"kind":"namespaces"}})
        );
        let v = forbidden(&anon, &attrs(Method::GET, "/apis/apps/v1/namespaces/d/deployments/web"), "").status_json();
        assert_eq!(v["details"], json!({"kind":"deployments","group":"apps","name":"web"}));
        let v = forbidden(&anon, &attrs(Method::GET, "/metrics"), "").status_json();
        assert_eq!(v["message"], "forbidden: User \"system:anonymous\" cannot get path \"/metrics\"");
        assert_eq!(v["details"], json!({}));
    }

    #[test]
    fn defaults_stand_in_until_listed() {
        let r = Rbac::new();
        let anon = UserInfo::anonymous();
        assert!(!r.synced());
        assert!(r.authorize(&anon, &Attributes::non_resource("get", "/healthz")).allowed());
        r.update(|c| c.listed = [true; 4]);
        // Listed and empty: the stored policy rules now, and it grants nothing.
        assert!(r.synced());
        assert!(!r.authorize(&anon, &Attributes::non_resource("get", "/healthz")).allowed());
    }
}
