//! Kubernetes `Status` errors: every failure the gateway answers is one of these, so that
//! kubectl prints `Error from server (<reason>): <message>`. Internal errors (store,
//! admission, bad bodies) are mapped here once.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bus::BusError;
use schema::admission::{AdmissionError, Cause};
use schema::registry::ResourceInfo;
use schema::store::StoreError;
use serde_json::{json, Value};

#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    /// `details` of the Status, when there is an object to name.
    pub details: Option<Value>,
}

/// `pods` or `deployments.apps`: how Kubernetes names a resource in messages.
pub fn qualified(res: &ResourceInfo) -> String {
    if res.group.is_empty() {
        res.plural.to_string()
    } else {
        format!("{}.{}", res.plural, res.group)
    }
}

fn details(res: &ResourceInfo, name: &str) -> Value {
    let mut d = json!({"name": name, "kind": res.plural});
    if !res.group.is_empty() {
        d["group"] = json!(res.group);
    }
    d
}

impl ApiError {
    pub fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        ApiError { code, reason, message: message.into(), details: None }
    }
    pub fn not_found(res: &ResourceInfo, name: &str) -> Self {
        ApiError { details: Some(details(res, name)), ..Self::new(404, "NotFound", format!("{} \"{name}\" not found", qualified(res))) }
    }
    pub fn namespace_not_found(ns: &str) -> Self {
        ApiError { details: Some(json!({"name": ns, "kind": "namespaces"})), ..Self::new(404, "NotFound", format!("namespaces \"{ns}\" not found")) }
    }
    pub fn no_resource() -> Self {
        ApiError { details: Some(json!({})), ..Self::new(404, "NotFound", "the server could not find the requested resource") }
    }
    pub fn already_exists(res: &ResourceInfo, name: &str) -> Self {
        ApiError { details: Some(details(res, name)), ..Self::new(409, "AlreadyExists", format!("{} \"{name}\" already exists", qualified(res))) }
    }
    pub fn conflict(res: &ResourceInfo, name: &str) -> Self {
        let msg = format!("Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again", qualified(res));
        ApiError { details: Some(details(res, name)), ..Self::new(409, "Conflict", msg) }
    }
    pub fn conflict_msg(res: &ResourceInfo, name: &str, why: &str) -> Self {
        let msg = format!("Operation cannot be fulfilled on {} \"{name}\": {why}", qualified(res));
        ApiError { details: Some(details(res, name)), ..Self::new(409, "Conflict", msg) }
    }
    pub fn bad_request(msg: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", msg)
    }
    pub fn unsupported_media(msg: impl Into<String>) -> Self {
        Self::new(415, "UnsupportedMediaType", msg)
    }
    pub fn method_not_allowed(verb: &str, res: &str) -> Self {
        Self::new(405, "MethodNotAllowed", format!("the server does not allow this method on the requested resource ({verb} {res})"))
    }
    pub fn unauthorized() -> Self {
        Self::new(401, "Unauthorized", "Unauthorized")
    }
    pub fn internal(msg: impl Into<String>) -> Self {
        Self::new(500, "InternalError", format!("Internal error occurred: {}", msg.into()))
    }
    pub fn unavailable(msg: impl Into<String>) -> Self {
        Self::new(503, "ServiceUnavailable", msg)
    }
    pub fn expired(msg: impl Into<String>) -> Self {
        Self::new(410, "Expired", msg)
    }
    pub fn invalid(kind: &str, group: &str, name: &str, causes: &[Cause]) -> Self {
        let qk = if group.is_empty() { kind.to_string() } else { format!("{kind}.{group}") };
        let list: Vec<String> = causes.iter().map(|c| format!("{}: {}", c.field, c.message)).collect();
        let joined = if list.len() == 1 { list[0].clone() } else { format!("[{}]", list.join(", ")) };
        let mut d = json!({"name": name, "kind": kind,
            "causes": causes.iter().map(|c| json!({"reason": c.reason, "message": c.message, "field": c.field})).collect::<Vec<_>>()});
        if !group.is_empty() {
            d["group"] = json!(group);
        }
        ApiError { details: Some(d), ..Self::new(422, "Invalid", format!("{qk} \"{name}\" is invalid: {joined}")) }
    }

    /// Maps an admission failure of an object of `res`.
    pub fn admission(e: AdmissionError) -> Self {
        match e {
            AdmissionError::Invalid { kind, group, name, causes } => Self::invalid(&kind, &group, &name, &causes),
            AdmissionError::BadRequest(m) => Self::bad_request(m),
            AdmissionError::Forbidden(m) => Self::new(403, "Forbidden", m),
        }
    }

    /// Maps a failure of the bus's typed client (admission plugins, their reads).
    pub fn client(res: &ResourceInfo, name: &str, e: bus::client::ClientError) -> Self {
        match e {
            bus::client::ClientError::Bus(e) => Self::store(res, name, e),
            bus::client::ClientError::Admission(e) => Self::admission(e),
            bus::client::ClientError::Other(m) => Self::internal(m),
        }
    }

    /// Maps a store/bus failure on the object `name` of `res`.
    pub fn store(res: &ResourceInfo, name: &str, e: BusError) -> Self {
        match e {
            BusError::Store(StoreError::NotFound(_)) => Self::not_found(res, name),
            BusError::Store(StoreError::AlreadyExists(_)) => Self::already_exists(res, name),
            BusError::Store(StoreError::Conflict { .. }) => Self::conflict(res, name),
            BusError::Store(StoreError::TooLarge { size, limit }) => Self::new(413, "RequestEntityTooLarge", format!("Request entity too large: {size} bytes, the limit is {limit} bytes")),
            BusError::Store(e @ StoreError::QuotaExceeded { .. }) => Self::new(507, "InsufficientStorage", e.to_string()),
            BusError::Store(StoreError::BadRequest(m)) => Self::bad_request(m),
            BusError::Store(e @ StoreError::Forbidden(_)) => Self::new(403, "Forbidden", e.to_string()),
            BusError::Store(e @ (StoreError::Unavailable(_) | StoreError::NotLeader { .. })) => Self::unavailable(format!("the state group is unavailable: {e}")),
            BusError::Timeout(m) => Self::new(504, "Timeout", format!("Timeout: {m}")),
            BusError::Expired(rev) | BusError::Store(StoreError::Compacted { rev }) => Self::expired(format!("too old resource version: {rev} ({rev})")),
            other => Self::internal(other.to_string()),
        }
    }

    pub fn status_json(&self) -> Value {
        let mut v = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": self.message, "reason": self.reason, "code": self.code});
        if let Some(d) = &self.details {
            v["details"] = d.clone();
        }
        v
    }
}

/// `{"kind":"Status",...,"status":"Success"}` answered by deletes and bindings.
pub fn success(res: &ResourceInfo, name: &str, uid: Option<&str>, code: Option<u16>) -> Value {
    let mut d = details(res, name);
    if let Some(u) = uid {
        d["uid"] = json!(u);
    }
    let mut v = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": d});
    if let Some(c) = code {
        v["code"] = json!(c);
    }
    v
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = StatusCode::from_u16(self.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::to_vec(&self.status_json()).unwrap_or_default();
        let mut r = (code, body).into_response();
        r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use schema::registry::by_plural;

    #[test]
    fn not_found_matches_the_sample() {
        let pods = by_plural("", "v1", "pods").unwrap();
        let v = ApiError::not_found(pods, "nope").status_json();
        let sample: Value = serde_json::from_str(r#"{"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": "pods \"nope\" not found", "reason": "NotFound", "code": 404, "details": {"name": "nope", "kind": "pods"}}"#).unwrap();
        assert_eq!(v, sample);
    }

    #[test]
    fn already_exists_and_conflict() {
        let ns = by_plural("", "v1", "namespaces").unwrap();
        let v = ApiError::already_exists(ns, "demo").status_json();
        assert_eq!(v["message"], "namespaces \"demo\" already exists");
        assert_eq!(v["code"], 409);
        let d = by_plural("apps", "v1", "deployments").unwrap();
        let v = ApiError::conflict(d, "web").status_json();
        assert_eq!(v["message"], "Operation cannot be fulfilled on deployments.apps \"web\": the object has been modified; please apply your changes to the latest version and try again");
        assert_eq!(v["details"]["group"], "apps");
        assert_eq!(v["reason"], "Conflict");
    }

    #[test]
    fn invalid_carries_causes() {
        let c = Cause { reason: "FieldValueInvalid".into(), field: "metadata.name".into(), message: "Invalid value: \"Bad_Name\": x".into() };
        let v = ApiError::invalid("Deployment", "apps", "Bad_Name", &[c]).status_json();
        assert_eq!(v["code"], 422);
        assert_eq!(v["reason"], "Invalid");
        assert_eq!(v["message"], "Deployment.apps \"Bad_Name\" is invalid: metadata.name: Invalid value: \"Bad_Name\": x");
        assert_eq!(v["details"]["kind"], "Deployment");
        assert_eq!(v["details"]["causes"][0]["field"], "metadata.name");
    }

    #[test]
    fn success_status() {
        let pods = by_plural("", "v1", "pods").unwrap();
        let v = success(pods, "p", Some("u1"), None);
        assert_eq!(v, json!({"kind":"Status","apiVersion":"v1","metadata":{},"status":"Success","details":{"name":"p","kind":"pods","uid":"u1"}}));
    }
}
