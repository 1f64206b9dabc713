//! PATCH on a resource: JSON, merge and strategic merge patches of the stored object
//! (recorded as an Update by their writer), and server-side apply, which owns fields,
//! prunes, answers conflicts and creates the object when it is absent.

use super::fields;
use super::objects::{allocate, check_name, check_type, copy_status, create_value, pinned_rv, read, status_is_separate, write_if_changed, CAS_RETRIES};
use super::patch::{self, PatchType};
use super::status::ApiError;
use super::{json_response, validation, AppState, Req};
use axum::http::StatusCode;
use axum::response::Response;
use schema::admission;
use schema::object;
use schema::registry::ResourceInfo;
use schema::store::Revision;
use serde_json::{json, Value};

/// Parses a patch body by its Content-Type.
pub fn patch_body(req: &Req) -> Result<(PatchType, Value), ApiError> {
    let kind = PatchType::from_content_type(req.content_type()).ok_or_else(|| {
        ApiError::unsupported_media(format!(
            "the body of the request was in an unknown format ({}) - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json",
            req.content_type()
        ))
    })?;
    let body: Value = if kind == PatchType::Apply {
        serde_yaml::from_slice(&req.body).map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?
    } else {
        serde_json::from_slice(&req.body).map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?
    };
    Ok((kind, body))
}

/// Applies a patch to the current object and checks what a patch may not change.
pub fn patched(res: &ResourceInfo, cur: &Value, cur_rev: Revision, kind: PatchType, body: &Value) -> Result<Value, ApiError> {
    let mut v = cur.clone();
    patch::apply(kind, res.kind, &mut v, body).map_err(|m| if kind == PatchType::Json { ApiError::new(422, "Invalid", m) } else { ApiError::bad_request(m) })?;
    if pinned_rv(&v)?.is_some_and(|p| p != cur_rev) {
        return Err(ApiError::conflict(res, object::name(cur).unwrap_or("")));
    }
    if object::name(&v) != object::name(cur) || (res.namespaced && object::namespace(&v) != object::namespace(cur)) {
        return Err(ApiError::bad_request("metadata.name and metadata.namespace cannot be changed by a patch"));
    }
    Ok(v)
}

/// The applied configuration for the object named on the URL.
fn apply_config(res: &ResourceInfo, body: &Value, name: &str) -> Result<Value, ApiError> {
    check_type(res, body)?;
    check_name(body, name)?;
    let mut config = body.clone();
    object::set_meta(&mut config, "name", json!(name));
    Ok(config)
}

pub async fn patch(st: &AppState, res: &ResourceInfo, ns: Option<&str>, name: &str, req: &Req) -> Result<Response, ApiError> {
    let (kind, body) = patch_body(req)?;
    fields::check_patch_options(req, kind)?;
    let w = fields::writer(res, req, "", "PatchOptions")?;
    let config = if kind == PatchType::Apply { Some(apply_config(res, &body, name)?) } else { None };
    for _ in 0..CAS_RETRIES {
        let Some((cur, cur_rev)) = read(st, res, ns, name).await? else {
            let Some(config) = &config else { return Err(ApiError::not_found(res, name)) };
            let mut v = fields::apply(res, w.clone(), fields::forced(req), None, config)?;
            let warnings = validation::check(res, req, validation::json_text(req), &mut v)?;
            let created = create_value(st, res, ns, v, req.dry_run(), None).await?;
            return Ok(validation::with_warnings(json_response(StatusCode::CREATED, &created), &warnings));
        };
        let mut v = match &config {
            Some(config) => {
                if pinned_rv(config)?.is_some_and(|p| p != cur_rev) {
                    return Err(ApiError::conflict(res, name));
                }
                let v = fields::apply(res, w.clone(), fields::forced(req), Some(&cur), config)?;
                if res.namespaced && object::namespace(&v) != object::namespace(&cur) {
                    return Err(ApiError::bad_request("the namespace of the provided object does not match the namespace sent on the request"));
                }
                v
            }
            None => patched(res, &cur, cur_rev, kind, &body)?,
        };
        // Checked on the result, so JSON patches are covered too; the stored object has
        // no unknown fields, so whatever is found came with this patch.
        let warnings = validation::check(res, req, validation::json_text(req), &mut v)?;
        if status_is_separate(res) {
            copy_status(&cur, &mut v);
        }
        if config.is_none() {
            fields::record_update(res, w.clone(), Some(&cur), &mut v);
        }
        allocate(st, res, &mut v, Some(&cur)).await?;
        admission::admit_update(res, &mut v, &cur).map_err(ApiError::admission)?;
        if req.dry_run() {
            return Ok(validation::with_warnings(json_response(StatusCode::OK, &v), &warnings));
        }
        match write_if_changed(st, res, name, &cur, &v, Some(cur_rev)).await {
            Err(e) if e.reason == "Conflict" => continue,
            Err(e) => return Err(e),
            Ok(out) => return Ok(validation::with_warnings(json_response(StatusCode::OK, &out), &warnings)),
        }
    }
    Err(ApiError::conflict(res, name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use schema::registry;

    #[test]
    fn patched_rejects_stale_rv_and_renames() {
        let res = registry::by_plural("apps", "v1", "deployments").unwrap();
        let cur = json!({"metadata":{"name":"web","namespace":"d","resourceVersion":"7"},"spec":{"replicas":1}});
        let ok = patched(res, &cur, 7, PatchType::Merge, &json!({"spec":{"replicas":2}})).unwrap();
        assert_eq!(ok["spec"]["replicas"], 2);
        let e = patched(res, &cur, 7, PatchType::Json, &json!([{"op":"replace","path":"/metadata/resourceVersion","value":"6"}])).unwrap_err();
        assert_eq!(e.code, 409);
        let e = patched(res, &cur, 7, PatchType::Merge, &json!({"metadata":{"name":"x"}})).unwrap_err();
        assert_eq!(e.code, 400);
    }

    #[test]
    fn apply_config_checks_type_and_name() {
        let res = registry::by_plural("apps", "v1", "deployments").unwrap();
        let c = apply_config(res, &json!({"apiVersion":"apps/v1","kind":"Deployment"}), "web").unwrap();
        assert_eq!(c["metadata"]["name"], "web");
        assert_eq!(apply_config(res, &json!({"apiVersion":"v1","kind":"Deployment"}), "web").unwrap_err().code, 400);
        assert_eq!(apply_config(res, &json!({"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"x"}}), "web").unwrap_err().code, 400);
    }
}
