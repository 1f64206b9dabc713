//! Reviews answered from the request itself, never stored: SelfSubjectAccessReview
//! (`kubectl auth can-i`) runs the gateway's own authorizer for the caller, and
//! SelfSubjectReview (`kubectl auth whoami`) tells the caller who it is.

use super::objects::decode_body;
use super::status::ApiError;
use super::{json_response, AppState, Req};
use axum::http::StatusCode;
use axum::response::Response;
use schema::admission::Cause;
use schema::rbac::{Attributes, Decision, UserInfo};
use serde_json::{json, Value};

/// The attributes a SelfSubjectAccessReview asks about, or the 422 the real server gives
/// when it names neither kind (or both).
pub fn review_attributes(review: &Value) -> Result<Attributes, ApiError> {
    let s = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    let ra = review.pointer("/spec/resourceAttributes").filter(|v| v.is_object());
    let na = review.pointer("/spec/nonResourceAttributes").filter(|v| v.is_object());
    match (ra, na) {
        (Some(r), None) => Ok(Attributes {
            verb: s(r, "verb"),
            resource_request: true,
            namespace: s(r, "namespace"),
            api_group: s(r, "group"),
            resource: s(r, "resource"),
            subresource: s(r, "subresource"),
            name: s(r, "name"),
            path: String::new(),
        }),
        (None, Some(n)) => Ok(Attributes::non_resource(&s(n, "verb"), &s(n, "path"))),
        (r, _) => {
            let (field, msg) = if r.is_some() {
                ("spec.nonResourceAttributes", "Invalid value: \"non-null\": cannot be specified in combination with resourceAttributes")
            } else {
                ("spec.resourceAttributes", "Invalid value: \"null\": exactly one of nonResourceAttributes or resourceAttributes must be specified")
            };
            let cause = Cause { reason: "FieldValueInvalid".into(), field: field.into(), message: msg.into() };
            Err(ApiError::invalid("SelfSubjectAccessReview", "authorization.k8s.io", "", &[cause]))
        }
    }
}

/// The answered review: the request's spec with the decision as status.
pub fn answer(review: &Value, d: &Decision) -> Value {
    let mut status = json!({"allowed": d.allowed()});
    if !d.reason().is_empty() {
        status["reason"] = json!(d.reason());
    }
    json!({"kind": "SelfSubjectAccessReview", "apiVersion": "authorization.k8s.io/v1", "metadata": {"creationTimestamp": null},
           "spec": review.get("spec").cloned().unwrap_or_else(|| json!({})), "status": status})
}

pub fn whoami(user: &UserInfo) -> Value {
    let mut info = json!({"username": user.name, "groups": user.groups});
    if !user.uid.is_empty() {
        info["uid"] = json!(user.uid);
    }
    if !user.extra.is_empty() {
        info["extra"] = json!(user.extra);
    }
    json!({"kind": "SelfSubjectReview", "apiVersion": "authentication.k8s.io/v1", "metadata": {"creationTimestamp": null}, "status": {"userInfo": info}})
}

/// POST of a review: `kind` tells which one.
pub fn create(st: &AppState, kind: &str, req: &Req) -> Result<Response, ApiError> {
    let body = decode_body(req)?;
    match kind {
        "SelfSubjectAccessReview" => {
            let a = review_attributes(&body)?;
            let d = st.rbac.authorize(&req.user, &a);
            Ok(json_response(StatusCode::CREATED, &answer(&body, &d)))
        }
        "SelfSubjectReview" => Ok(json_response(StatusCode::CREATED, &whoami(&req.user))),
        other => Err(ApiError::method_not_allowed("POST", other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reviews() {
        let r = json!({"spec":{"resourceAttributes":{"namespace":"default","verb":"create","resource":"pods"}}});
        let a = review_attributes(&r).unwrap();
        assert_eq!(a, Attributes::resource("create", "", "pods", "default", ""));
        let d = Decision::Allow { reason: "RBAC: allowed by x".into() };
        let v = answer(&r, &d);
        assert_eq!(v["status"], json!({"allowed": true, "reason": "RBAC: allowed by x"}));
        assert_eq!(v["spec"], r["spec"]);
        let n = review_attributes(&json!({"spec":{"nonResourceAttributes":{"path":"/api","verb":"get"}}})).unwrap();
        assert_eq!(n, Attributes::non_resource("get", "/api"));
        let e = review_attributes(&json!({"spec":{}})).unwrap_err();
        assert_eq!((e.code, e.reason), (422, "Invalid"));
        let no = answer(&r, &Decision::NoOpinion { reason: String::new() });
        assert_eq!(no["status"], json!({"allowed": false}));
        let w = whoami(&UserInfo::authenticated("alice", "", ["devs".to_string()]));
        assert_eq!(w["status"]["userInfo"], json!({"username":"alice","groups":["devs","system:authenticated"]}));
    }
}
