//! Subresources: `status` (only status changes), `scale` (autoscaling/v1 Scale over
//! spec.replicas), `pods/binding` (the scheduler's CAS bind), `pods/log` and
//! `serviceaccounts/token` (in tokens.rs). Each is a
//! read-modify-write with CAS, retried when another writer got there first.

use super::fields;
use super::objects::{self, copy_status, pinned_rv, read, read_existing, update_op, write, write_if_changed, CAS_RETRIES};
use super::patch::PatchType;
use super::patching::{patch_body, patched};
use super::selectors::label_selector_string;
use super::status::{self, ApiError};
use super::{json_response, logs, validation, AppState, Req};
use axum::http::{Method, StatusCode};
use axum::response::Response;
use schema::admission;
use schema::registry::ResourceInfo;
use schema::store::Revision;
use serde_json::{json, Value};

pub async fn handle(st: &AppState, res: &ResourceInfo, ns: Option<&str>, name: &str, sub: &str, req: &Req) -> Result<Response, ApiError> {
    let m = &req.method;
    match (sub, m.clone()) {
        ("log", Method::GET) if res.kind == "Pod" => logs::pod_log(st, res, ns, name, req).await,
        ("exec" | "attach" | "portforward", Method::GET | Method::POST) if res.kind == "Pod" => super::streaming::handle(st, res, ns, name, sub, req).await,
        ("binding", Method::POST) if res.kind == "Pod" => bind(st, res, ns, name, req).await,
        ("eviction", Method::POST) if res.kind == "Pod" => super::eviction::evict(st, res, ns, name, req).await,
        ("token", Method::POST) if res.kind == "ServiceAccount" => super::tokens::create(st, res, ns, name, req).await,
        ("status" | "scale", Method::GET) => {
            let (v, _) = read_existing(st, res, ns, name).await?;
            Ok(json_response(StatusCode::OK, &if sub == "scale" { scale_of(&v) } else { v }))
        }
        ("status" | "scale", Method::PUT | Method::PATCH) => modify(st, res, ns, name, sub, req).await,
        _ => Err(ApiError::method_not_allowed(m.as_str(), &format!("{}/{sub}", res.plural))),
    }
}

/// The autoscaling/v1 Scale view of a Deployment or ReplicaSet.
pub fn scale_of(v: &Value) -> Value {
    let mut meta = json!({});
    for f in ["name", "namespace", "uid", "resourceVersion", "creationTimestamp"] {
        if let Some(x) = v.pointer(&format!("/metadata/{f}")) {
            meta[f] = x.clone();
        }
    }
    // A ReplicationController's selector is a bare label map.
    let rc_selector = (v.get("kind").and_then(Value::as_str) == Some("ReplicationController")).then(|| json!({"matchLabels": v.pointer("/spec/selector").cloned().unwrap_or(Value::Null)}));
    let selector = rc_selector.as_ref().or(v.pointer("/spec/selector"));
    json!({"kind": "Scale", "apiVersion": "autoscaling/v1", "metadata": meta,
           "spec": {"replicas": v.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(0)},
           "status": {"replicas": v.pointer("/status/replicas").and_then(Value::as_i64).unwrap_or(0),
                      "selector": label_selector_string(selector)}})
}

/// Sets `spec.<field>` without assuming the stored object's shape.
fn set_spec_field(v: &mut Value, field: &str, val: Value) -> Result<(), ApiError> {
    match v.as_object_mut().map(|o| o.entry("spec").or_insert_with(|| json!({}))) {
        Some(Value::Object(spec)) => {
            spec.insert(field.to_string(), val);
            Ok(())
        }
        _ => Err(ApiError::internal("the stored object has no usable spec")),
    }
}

/// Server-side apply through a subresource: the configuration narrowed to what the
/// subresource holds (status, or a Scale's replicas) applied to the whole object, owned
/// by the applier with that subresource.
fn apply_through(res: &ResourceInfo, sub: &str, cur: &Value, body: &Value, req: &Req) -> Result<Value, ApiError> {
    let name = schema::object::name(cur).unwrap_or("");
    let mut config = json!({"apiVersion": res.api_version(), "kind": res.kind, "metadata": {"name": name}});
    if sub == "scale" {
        config["spec"] = json!({"replicas": body.pointer("/spec/replicas").cloned().unwrap_or(Value::Null)});
    } else {
        objects::check_type(res, body)?;
        config["status"] = body.get("status").cloned().unwrap_or(json!({}));
    }
    let w = fields::writer(res, req, sub, "PatchOptions")?;
    fields::apply(res, w, fields::forced(req), Some(cur), &config)
}

/// What the client sent, turned into the new full object (not yet admitted), its writer
/// recorded.
fn apply_sub(res: &ResourceInfo, sub: &str, cur: &Value, cur_rev: Revision, req: &Req) -> Result<Value, ApiError> {
    let name = schema::object::name(cur).unwrap_or("");
    let stale = || ApiError::conflict(res, name);
    let mut applied = None;
    let sent: Value = if req.method == Method::PUT {
        let body = objects::decode_body(req)?;
        if pinned_rv(&body)?.is_some_and(|p| p != cur_rev) {
            return Err(stale());
        }
        body
    } else {
        let (kind, body) = patch_body(req)?;
        fields::check_patch_options(req, kind)?;
        if kind == PatchType::Apply {
            let a = apply_through(res, sub, cur, &body, req)?;
            applied = Some(a.clone());
            a
        } else {
            let base = if sub == "scale" { scale_of(cur) } else { cur.clone() };
            patched(res, &base, cur_rev, kind, &body)?
        }
    };
    let mut v = cur.clone();
    if sub == "scale" {
        let replicas = match sent.pointer("/spec/replicas") {
            None | Some(Value::Null) => 0,
            Some(r) => r.as_i64().filter(|r| *r >= 0 && *r <= i32::MAX as i64).ok_or_else(|| {
                let cause = schema::admission::Cause { reason: "FieldValueInvalid".into(), field: "spec.replicas".into(), message: format!("Invalid value: {r}: must be greater than or equal to 0") };
                ApiError::invalid("Scale", "autoscaling", name, &[cause])
            })?,
        };
        set_spec_field(&mut v, "replicas", json!(replicas))?;
    } else {
        copy_status(&sent, &mut v);
    }
    match applied {
        Some(a) => schema::object::set_meta(&mut v, "managedFields", a.pointer("/metadata/managedFields").cloned().unwrap_or(json!([]))),
        None => {
            let options = if req.method == Method::PUT { "UpdateOptions" } else { "PatchOptions" };
            fields::record_update(res, fields::writer(res, req, sub, options)?, Some(cur), &mut v);
        }
    }
    Ok(v)
}

async fn modify(st: &AppState, res: &ResourceInfo, ns: Option<&str>, name: &str, sub: &str, req: &Req) -> Result<Response, ApiError> {
    for _ in 0..CAS_RETRIES {
        let (cur, cur_rev) = read_existing(st, res, ns, name).await?;
        let mut v = apply_sub(res, sub, &cur, cur_rev, req)?;
        // A Scale has no schema of its own; a status write is checked as the whole object.
        let warnings = if sub == "status" { validation::check(res, req, None, &mut v)? } else { Vec::new() };
        admission::admit_update(res, &mut v, &cur).map_err(ApiError::admission)?;
        if req.dry_run() {
            return Ok(validation::with_warnings(json_response(StatusCode::OK, &if sub == "scale" { scale_of(&v) } else { v }), &warnings));
        }
        match write_if_changed(st, res, name, &cur, &v, Some(cur_rev)).await {
            Err(e) if e.reason == "Conflict" => {
                // A PUT that pinned its resourceVersion must not be retried against a newer one.
                if req.method == Method::PUT {
                    return Err(e);
                }
            }
            Err(e) => return Err(e),
            Ok(out) => return Ok(validation::with_warnings(json_response(StatusCode::OK, &if sub == "scale" { scale_of(&out) } else { out }), &warnings)),
        }
    }
    Err(ApiError::conflict(res, name))
}

/// POST pods/<name>/binding: sets spec.nodeName once, with CAS.
async fn bind(st: &AppState, res: &ResourceInfo, ns: Option<&str>, name: &str, req: &Req) -> Result<Response, ApiError> {
    let b = objects::decode_body(req)?;
    let node = b.pointer("/target/name").and_then(Value::as_str).filter(|n| !n.is_empty()).ok_or_else(|| ApiError::bad_request("the Binding has no target.name"))?.to_string();
    if let Some(kind) = b.pointer("/target/kind").and_then(Value::as_str).filter(|k| !k.is_empty() && *k != "Node") {
        return Err(ApiError::bad_request(format!("a pod can only be bound to a Node, not a {kind}")));
    }
    for _ in 0..CAS_RETRIES {
        let Some((cur, cur_rev)) = read(st, res, ns, name).await? else { return Err(ApiError::not_found(res, name)) };
        if let Some(n) = schema::object::node_name(&cur) {
            return Err(ApiError::conflict_msg(res, name, &format!("pod {name} is already assigned to node \"{n}\"")));
        }
        if cur.pointer("/metadata/deletionTimestamp").is_some_and(|d| !d.is_null()) {
            return Err(ApiError::conflict_msg(res, name, &format!("pod {name} is being deleted, cannot be assigned to a host")));
        }
        let mut v = cur.clone();
        set_spec_field(&mut v, "nodeName", json!(node))?;
        admission::admit_update(res, &mut v, &cur).map_err(ApiError::admission)?;
        match write(st, res, name, &update_op(res, &v, Some(cur_rev))?).await {
            Err(e) if e.reason == "Conflict" => continue,
            Err(e) => return Err(e),
            Ok(_) => return Ok(json_response(StatusCode::CREATED, &status::success(res, name, None, Some(201)))),
        }
    }
    Err(ApiError::conflict(res, name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_view() {
        let d = json!({"metadata":{"name":"nginx","namespace":"default","uid":"u","resourceVersion":"1255","creationTimestamp":"2026-11-22T20:15:18Z","labels":{"a":"b"}},
            "spec":{"replicas":5,"selector":{"matchLabels":{"app":"nginx"}}},"status":{"replicas":3}});
        let sample: Value = serde_json::from_str(r#"{"kind": "Scale", "apiVersion": "autoscaling/v1", "metadata": {"name": "nginx", "namespace": "default", "uid": "u", "resourceVersion": "1255", "creationTimestamp": "2026-11-22T20:15:18Z"}, "spec": {"replicas": 5}, "status": {"replicas": 3, "selector": "app=nginx"}}"#).unwrap();
        assert_eq!(scale_of(&d), sample);
    }

    fn req(method: Method, ct: &str, query: &[(&str, &str)], body: &str) -> Req {
        let mut headers = axum::http::HeaderMap::new();
        headers.insert(axum::http::header::CONTENT_TYPE, ct.parse().unwrap());
        headers.insert(axum::http::header::USER_AGENT, "kubectl/v1.32.4 (linux/amd64)".parse().unwrap());
        Req { method, query: query.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(), headers, body: body.to_string().into(), user: Default::default(), upgrade: Default::default() }
    }

    fn managers(v: &Value) -> Vec<String> {
        v["metadata"]["managedFields"].as_array().unwrap().iter().map(|e| format!("{}/{}/{}", e["manager"].as_str().unwrap(), e["operation"].as_str().unwrap(), e["subresource"].as_str().unwrap_or(""))).collect()
    }

    #[test]
    fn writes_through_subresources_are_owned_with_the_subresource() {
        let res = schema::registry::by_plural("apps", "v1", "deployments").unwrap();
        let cur = json!({"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"web","namespace":"d","resourceVersion":"3"},"spec":{"replicas":1},"status":{"replicas":1}});
        // kubectl scale: a merge patch of the Scale, no fieldManager.
        let v = apply_sub(res, "scale", &cur, 3, &req(Method::PATCH, "application/merge-patch+json", &[], r#"{"spec":{"replicas":4}}"#)).unwrap();
        assert_eq!(v["spec"]["replicas"], 4);
        assert_eq!(managers(&v), ["kubectl/Update/scale"]);
        assert_eq!(v["metadata"]["managedFields"][0]["fieldsV1"], json!({"f:spec":{"f:replicas":{}}}));
        // A status writer applying through status owns status fields only.
        let body = r#"{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"web"},"spec":{"replicas":9},"status":{"readyReplicas":1}}"#;
        let q = [("fieldManager", "ctl"), ("force", "true")];
        let s = apply_sub(res, "status", &v, 3, &req(Method::PATCH, "application/apply-patch+yaml", &q, body)).unwrap();
        assert_eq!(s["spec"]["replicas"], 4);
        assert_eq!(s["status"]["readyReplicas"], 1);
        assert_eq!(managers(&s), ["ctl/Apply/status", "kubectl/Update/scale"]);
        // Applying replicas through scale takes them from the earlier scaler when forced.
        let body = r#"{"apiVersion":"autoscaling/v1","kind":"Scale","metadata":{"name":"web"},"spec":{"replicas":2}}"#;
        let e = apply_sub(res, "scale", &s, 3, &req(Method::PATCH, "application/apply-patch+yaml", &[("fieldManager", "hpa")], body)).unwrap_err();
        assert_eq!(e.message, "Apply failed with 1 conflict: conflict with \"kubectl\" with subresource \"scale\" using apps/v1: .spec.replicas");
        let forced = apply_sub(res, "scale", &s, 3, &req(Method::PATCH, "application/apply-patch+yaml", &[("fieldManager", "hpa"), ("force", "true")], body)).unwrap();
        assert_eq!(forced["spec"]["replicas"], 2);
        assert_eq!(managers(&forced), ["ctl/Apply/status", "hpa/Apply/scale"]);
    }
}
