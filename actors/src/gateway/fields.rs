//! The gateway's side of field management: who the writer is (`fieldManager`, else the
//! User-Agent's product, as the real server derives it), the PatchOptions checks, and
//! recording `managedFields` on every create, update and patch that comes through here.

use super::patch::PatchType;
use super::status::ApiError;
use super::Req;
use axum::http::header;
use schema::admission::Cause;
use schema::fieldmanager::{self, FieldsError, Scope, Writer};
use schema::fieldpath::{Elem, FieldSet};
use schema::registry::ResourceInfo;
use serde_json::{json, Value};

const MAX_MANAGER_LEN: usize = 128;

fn options_invalid(kind: &str, causes: Vec<Cause>) -> ApiError {
    ApiError::invalid(kind, "meta.k8s.io", "", &causes)
}

/// The characters before the first `/` of the User-Agent, printable ones only, at most
/// 128 bytes: `kubectl/v1.32.4 (linux/amd64) …` writes as "kubectl".
fn from_user_agent(ua: &str) -> String {
    let mut out = String::new();
    for c in ua.split('/').next().unwrap_or("").chars().filter(|c| !c.is_control()) {
        if out.len() + c.len_utf8() > MAX_MANAGER_LEN {
            break;
        }
        out.push(c);
    }
    out
}

fn check_manager(m: &str, options: &str) -> Result<(), ApiError> {
    let mut causes = Vec::new();
    if m.len() > MAX_MANAGER_LEN {
        causes.push(Cause { reason: "FieldValueTooLong".into(), field: "fieldManager".into(), message: format!("Too long: may not be more than {MAX_MANAGER_LEN} bytes") });
    }
    for (i, c) in m.chars().enumerate().filter(|(_, c)| c.is_control()) {
        causes.push(Cause { reason: "FieldValueInvalid".into(), field: "fieldManager".into(), message: format!("Invalid value: {m:?}: invalid character U+{:04X} (at position {i})", c as u32) });
    }
    if causes.is_empty() {
        Ok(())
    } else {
        Err(options_invalid(options, causes))
    }
}

/// The writer of a create, update or patch (`options`: CreateOptions, UpdateOptions or
/// PatchOptions, for the 422 naming a bad fieldManager).
pub fn writer(res: &ResourceInfo, req: &Req, sub: &str, options: &str) -> Result<Writer, ApiError> {
    let manager = match req.q("fieldManager").filter(|m| !m.is_empty()) {
        Some(m) => {
            check_manager(m, options)?;
            m.to_string()
        }
        None => from_user_agent(req.header(header::USER_AGENT)),
    };
    Ok(Writer { manager, api_version: res.api_version(), subresource: sub.to_string() })
}

/// PatchOptions as the real server checks them, before it reads the object.
pub fn check_patch_options(req: &Req, kind: PatchType) -> Result<(), ApiError> {
    let forbidden = |field: &str, msg: &str| options_invalid("PatchOptions", vec![Cause { reason: "FieldValueForbidden".into(), field: field.into(), message: format!("Forbidden: {msg}") }]);
    if kind == PatchType::Apply {
        if req.q("fieldManager").is_none_or(str::is_empty) {
            return Err(options_invalid("PatchOptions", vec![Cause { reason: "FieldValueRequired".into(), field: "fieldManager".into(), message: "Required value: is required for apply patch".into() }]));
        }
        if let Some(f) = req.q("force").filter(|f| !matches!(*f, "true" | "false" | "1" | "0" | "")) {
            return Err(ApiError::bad_request(format!("invalid value for force: {f:?}")));
        }
    } else if req.q("force").is_some() {
        return Err(forbidden("force", "may not be specified for non-apply patch"));
    }
    Ok(())
}

pub fn forced(req: &Req) -> bool {
    matches!(req.q("force"), Some("true" | "1"))
}

fn scope<'a>(res: &'a ResourceInfo, writer: Writer) -> Scope<'a> {
    let mut ignored = FieldSet::new();
    if writer.subresource.is_empty() && super::objects::status_is_separate(res) {
        // Through the resource itself nobody owns status; the status subresource does.
        ignored.insert(&[Elem::field("status")]);
    }
    Scope { kind: res.kind, writer, ignored, now: schema::object::now_string() }
}

/// Records a non-apply write of `new` over `live` (None: a create). Both are compared
/// defaulted, as the real server compares decoded (defaulted) objects.
pub fn record_update(res: &ResourceInfo, writer: Writer, live: Option<&Value>, new: &mut Value) {
    schema::defaults::apply(res, new);
    let live = live.map(|l| {
        let mut l = l.clone();
        schema::defaults::apply(res, &mut l);
        l
    });
    fieldmanager::record_update(&scope(res, writer), live.as_ref(), new);
}

/// Server-side apply of `config` over `live` (None: absent). Answers the merged object
/// with its managedFields, or the Status the real server answers.
pub fn apply(res: &ResourceInfo, writer: Writer, force: bool, live: Option<&Value>, config: &Value) -> Result<Value, ApiError> {
    let gv = format!("{}, Kind={}", config.get("apiVersion").and_then(Value::as_str).unwrap_or("/"), config.get("kind").and_then(Value::as_str).unwrap_or(""));
    if config.get("apiVersion").and_then(Value::as_str).is_none_or(str::is_empty) || config.get("kind").and_then(Value::as_str).is_none_or(str::is_empty) {
        return Err(ApiError::bad_request(format!("invalid object type: {gv}")));
    }
    let name = schema::object::name(config).unwrap_or("");
    fieldmanager::apply(&scope(res, writer), live, config, force).map_err(|e| match e {
        FieldsError::Conflicts(c) => {
            let causes: Vec<Value> = c.iter().map(|(m, p)| json!({"reason": "FieldManagerConflict", "message": format!("conflict with {m}"), "field": schema::fieldpath::path_string(p)})).collect();
            ApiError { details: Some(json!({"causes": causes})), ..ApiError::new(409, "Conflict", FieldsError::Conflicts(c).to_string()) }
        }
        FieldsError::Invalid(m) if m.starts_with('.') => {
            let ns = schema::object::namespace(config).map(|n| format!("{n}/")).unwrap_or_default();
            ApiError::bad_request(format!("failed to create typed patch object ({ns}{name}; {gv}): {m}"))
        }
        FieldsError::Invalid(m) => ApiError::bad_request(m),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manager_from_user_agent() {
        assert_eq!(from_user_agent("kubectl/v1.32.4 (linux/amd64) kubernetes/4cb5f07"), "kubectl");
        assert_eq!(from_user_agent("OpenAPI-Generator/31.0.0/python"), "OpenAPI-Generator");
        assert_eq!(from_user_agent(""), "");
        assert_eq!(from_user_agent(&"a".repeat(300)).len(), 128);
        assert!(check_manager("ok-name", "PatchOptions").is_ok());
        let e = check_manager(&"x".repeat(129), "PatchOptions").unwrap_err();
        assert_eq!(e.code, 422);
        assert_eq!(e.message, "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Too long: may not be more than 128 bytes");
    }

    fn req(query: &[(&str, &str)], ua: &str) -> Req {
        let mut headers = axum::http::HeaderMap::new();
        headers.insert(header::USER_AGENT, ua.parse().unwrap());
        Req { method: axum::http::Method::PATCH, query: query.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(), headers, body: Default::default(), user: Default::default(), upgrade: Default::default() }
    }

    #[test]
    fn patch_options_as_the_real_server_checks_them() {
        let e = check_patch_options(&req(&[], "kubectl/v1.32.4"), PatchType::Apply).unwrap_err();
        assert_eq!((e.code, e.reason), (422, "Invalid"));
        assert_eq!(e.message, "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch");
        assert_eq!(e.details.as_ref().unwrap()["causes"][0]["field"], "fieldManager");
        let e = check_patch_options(&req(&[("fieldManager", "x"), ("force", "true")], ""), PatchType::Merge).unwrap_err();
        assert_eq!(e.message, "PatchOptions.meta.k8s.io \"\" is invalid: force: Forbidden: may not be specified for non-apply patch");
        assert!(check_patch_options(&req(&[("fieldManager", "x"), ("force", "true")], ""), PatchType::Apply).is_ok());
        assert!(forced(&req(&[("force", "true")], "")));
        let res = schema::registry::by_plural("apps", "v1", "deployments").unwrap();
        let w = writer(res, &req(&[("force", "false")], "kubectl/v1.32.4 (linux/amd64) kubernetes/4cb5f07"), "scale", "PatchOptions").unwrap();
        assert_eq!((w.manager.as_str(), w.api_version.as_str(), w.subresource.as_str()), ("kubectl", "apps/v1", "scale"));
    }

    #[test]
    fn apply_errors_are_statuses() {
        let res = schema::registry::by_plural("apps", "v1", "deployments").unwrap();
        let w = Writer { manager: "m".into(), api_version: "apps/v1".into(), subresource: String::new() };
        let e = apply(res, w.clone(), false, None, &json!({"metadata":{"name":"web"}})).unwrap_err();
        assert_eq!(e.message, "invalid object type: /, Kind=");
        let dup = json!({"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"web","namespace":"d"},
            "spec":{"template":{"spec":{"containers":[{"name":"a"},{"name":"a"}]}}}});
        let e = apply(res, w.clone(), false, None, &dup).unwrap_err();
        assert_eq!(e.code, 400);
        assert_eq!(e.message, "failed to create typed patch object (d/web; apps/v1, Kind=Deployment): .spec.template.spec.containers: duplicate entries for key [name=\"a\"]");
        let live = json!({"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"web","managedFields":[
            {"manager":"other","operation":"Apply","apiVersion":"apps/v1","fieldsType":"FieldsV1","fieldsV1":{"f:spec":{"f:replicas":{}}}}]},"spec":{"replicas":1}});
        let e = apply(res, w, false, Some(&live), &json!({"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"web"},"spec":{"replicas":2}})).unwrap_err();
        assert_eq!((e.code, e.reason), (409, "Conflict"));
        assert_eq!(e.message, "Apply failed with 1 conflict: conflict with \"other\": .spec.replicas");
        assert_eq!(e.details.unwrap(), json!({"causes":[{"reason":"FieldManagerConflict","message":"conflict with \"other\"","field":".spec.replicas"}]}));
    }
}
