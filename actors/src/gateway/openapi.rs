//! OpenAPI v3 documents, enough for `kubectl apply` with default validation: an index of
//! group-versions and, per group-version, a patch/put/post operation per kind carrying
//! its GVK and the `fieldValidation` parameter. The schemas are permissive objects
//! (`x-kubernetes-preserve-unknown-fields`); full schemas come with the gateway issue.

use schema::registry::{self, ResourceInfo, RESOURCES};
use serde_json::{json, Map, Value};

/// `api/v1` or `apis/<g>/<v>`: the path a group-version's document lives under.
fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// A short, stable cache key: FNV-1a of the document, in kubectl-like upper base32-ish hex.
fn hash(doc: &Value) -> String {
    let bytes = serde_json::to_vec(doc).unwrap_or_default();
    let mut h: u64 = 0xcbf29ce484222325;
    for b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    format!("{h:016X}")
}

pub fn index() -> Value {
    let mut paths = Map::new();
    for (g, v) in registry::group_versions() {
        if let Some(doc) = document(&gv_path(g, v)) {
            let p = gv_path(g, v);
            paths.insert(p.clone(), json!({"serverRelativeURL": format!("/openapi/v3/{p}?hash={}", hash(&doc))}));
        }
    }
    json!({"paths": paths})
}

/// `io.k8s.api.core.v1.Pod`, `io.k8s.api.apps.v1.Deployment`, `io.k8s.api.node.v1.RuntimeClass`.
pub fn schema_name(res: &ResourceInfo) -> String {
    let pkg = if res.group.is_empty() { "core" } else { res.group.split('.').next().unwrap_or(res.group) };
    format!("io.k8s.api.{pkg}.{}.{}", res.version, res.kind)
}

fn param(name: &str) -> Value {
    json!({"name": name, "in": "query", "schema": {"type": "string", "uniqueItems": true}})
}

fn op(action: &str, gvk: &Value, code: &str, force: bool) -> Value {
    let mut params = vec![param("dryRun"), param("fieldManager"), param("fieldValidation")];
    if force {
        params.push(json!({"name": "force", "in": "query", "schema": {"type": "boolean"}}));
    }
    json!({"parameters": params, "x-kubernetes-action": action, "x-kubernetes-group-version-kind": gvk,
           "responses": {code: {"description": if code == "201" { "Created" } else { "OK" }}}})
}

/// The document for `api/v1` or `apis/<g>/<v>`, or None when not served.
pub fn document(path: &str) -> Option<Value> {
    let path = path.trim_matches('/');
    let served: Vec<&ResourceInfo> = RESOURCES.iter().filter(|r| gv_path(r.group, r.version) == path).collect();
    if served.is_empty() {
        return None;
    }
    let mut paths = Map::new();
    let mut schemas = Map::new();
    for r in served {
        let gvk = json!({"group": r.group, "version": r.version, "kind": r.kind});
        let base = format!("/{}", gv_path(r.group, r.version));
        let coll = if r.namespaced { format!("{base}/namespaces/{{namespace}}/{}", r.plural) } else { format!("{base}/{}", r.plural) };
        paths.insert(coll.clone(), json!({"post": op("post", &gvk, "201", false)}));
        paths.insert(format!("{coll}/{{name}}"), json!({"put": op("put", &gvk, "200", false), "patch": op("patch", &gvk, "200", true)}));
        schemas.insert(
            schema_name(r),
            json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true,
                   "x-kubernetes-group-version-kind": [gvk],
                   "properties": {"apiVersion": {"type": "string"}, "kind": {"type": "string"},
                                  "metadata": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                                  "spec": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                                  "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}),
        );
    }
    Some(json!({"openapi": "3.0.0", "info": {"title": "Kubernetes", "version": "v1.32.4"}, "paths": paths, "components": {"schemas": schemas}}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_lists_every_group_version_with_a_hash() {
        let v = index();
        for p in ["api/v1", "apis/apps/v1", "apis/node.k8s.io/v1"] {
            let url = v["paths"][p]["serverRelativeURL"].as_str().unwrap();
            assert!(url.starts_with(&format!("/openapi/v3/{p}?hash=")), "{url}");
        }
    }

    #[test]
    fn apps_document_has_patch_with_field_validation() {
        let d = document("apis/apps/v1").unwrap();
        let patch = &d["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"];
        assert_eq!(patch["x-kubernetes-group-version-kind"]["kind"], "Deployment");
        assert!(patch["parameters"].as_array().unwrap().iter().any(|p| p["name"] == "fieldValidation"));
        assert_eq!(d["components"]["schemas"]["io.k8s.api.apps.v1.Deployment"]["x-kubernetes-group-version-kind"][0]["kind"], "Deployment");
        let core = document("api/v1").unwrap();
        assert!(core["paths"]["/api/v1/namespaces/{name}"]["patch"].is_object());
        assert!(document("apis/nope/v1").is_none());
    }
}
