//! `?fieldValidation=` on every write: applies schema/'s unknown- and duplicate-field
//! checks to a body and turns them into a 400 (Strict) or `Warning` headers (Warn), the
//! way kube-apiserver answers, so kubectl's default validation works server-side.

use super::status::ApiError;
use super::Req;
use axum::http::HeaderValue;
use axum::response::Response;
use schema::openapi::{self, fields::FieldValidation};
use schema::registry::ResourceInfo;
use serde_json::Value;

/// Checks `v` (the object a write would store) and, when `raw` is its JSON text, that
/// text's duplicate keys. Unknown fields are dropped from `v` in every mode, as the real
/// server drops what it cannot decode. Returns the warnings to send (Warn only).
pub fn check(res: &ResourceInfo, req: &Req, raw: Option<&[u8]>, v: &mut Value) -> Result<Vec<String>, ApiError> {
    let mode = FieldValidation::parse(req.q("fieldValidation")).map_err(ApiError::bad_request)?;
    let mut problems: Vec<String> = raw.map(openapi::fields::duplicate_fields).unwrap_or_default().into_iter().map(|p| format!("duplicate field \"{p}\"")).collect();
    problems.extend(openapi::fields::drop_unknown_fields(&openapi::schema_name(res), v).into_iter().map(|p| format!("unknown field \"{p}\"")));
    match mode {
        FieldValidation::Ignore => Ok(Vec::new()),
        FieldValidation::Warn => Ok(problems),
        FieldValidation::Strict if problems.is_empty() => Ok(Vec::new()),
        FieldValidation::Strict => Err(ApiError::bad_request(format!(
            "{kind} in version \"{version}\" cannot be handled as a {kind}: strict decoding error: {}",
            problems.join(", "),
            kind = res.kind,
            version = res.version
        ))),
    }
}

/// The raw body when it is JSON (where duplicate keys survive until decoding).
pub fn json_text(req: &Req) -> Option<&[u8]> {
    let ct = req.content_type().split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    matches!(ct.as_str(), "" | "application/json" | "application/merge-patch+json" | "application/strategic-merge-patch+json").then_some(&req.body[..])
}

/// Adds one `Warning: 299 - "…"` header per warning (kubectl prints `Warning: …`).
pub fn with_warnings(mut r: Response, warnings: &[String]) -> Response {
    for w in warnings {
        let quoted = format!("299 - \"{}\"", w.replace('\\', "\\\\").replace('"', "\\\""));
        if let Ok(h) = HeaderValue::from_str(&quoted) {
            r.headers_mut().append("warning", h);
        }
    }
    r
}
