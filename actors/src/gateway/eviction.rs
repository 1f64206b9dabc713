//! POST pods/<name>/eviction (policy/v1 Eviction): `kubectl drain`'s way to delete a pod
//! that respects PodDisruptionBudgets. A pod a budget covers may go only while the budget
//! allows a disruption; otherwise 429 with the real server's message, and drain retries.

use super::deletion::{self, delete_opts};
use super::objects::{decode_body, list_objects, read_existing};
use super::selectors::{label_selector_string, FieldSelector, LabelSelector};
use super::status::{self, ApiError};
use super::{json_response, AppState, Req};
use axum::http::StatusCode;
use axum::response::Response;
use schema::disruption;
use schema::registry::{self, ResourceInfo};
use serde_json::{json, Value};

/// Evictions are checked and carried out one at a time, so two cannot both spend the
/// last disruption a budget allows (the real server does a CAS on the budget's status).
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn selector(sel: Option<&Value>) -> Result<LabelSelector, ApiError> {
    LabelSelector::parse(&label_selector_string(sel)).map_err(ApiError::bad_request)
}

pub async fn evict(st: &AppState, pods: &ResourceInfo, ns: Option<&str>, name: &str, req: &Req) -> Result<Response, ApiError> {
    let body = if req.body.iter().all(u8::is_ascii_whitespace) { json!({}) } else { decode_body(req)? };
    if let Some(n) = body.pointer("/metadata/name").and_then(Value::as_str).filter(|n| !n.is_empty() && *n != name) {
        return Err(ApiError::bad_request(format!("name in URL does not match name in Eviction object: {name} != {n}")));
    }
    let opts_body = body.get("deleteOptions").cloned().unwrap_or_else(|| json!({}));
    let opts = delete_opts(&opts_body, &|k| req.q(k).map(str::to_string))?;
    let _turn = ONE_AT_A_TIME.lock().await;
    let (pod, _) = read_existing(st, pods, ns, name).await?;
    let running = pod.pointer("/status/phase").and_then(Value::as_str) == Some("Running");
    if running && disruption::healthy(&pod) {
        check_budgets(st, pods, ns, &pod).await?;
    }
    if !opts.dry_run {
        match deletion::delete_one(st, pods, ns, name, &opts).await {
            Ok(_) => {}
            Err(e) if e.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    Ok(json_response(StatusCode::CREATED, &status::success(pods, name, None, Some(201))))
}

async fn check_budgets(st: &AppState, pods: &ResourceInfo, ns: Option<&str>, pod: &Value) -> Result<(), ApiError> {
    let pdbs = registry::by_plural("policy", "v1", "poddisruptionbudgets").ok_or_else(|| ApiError::internal("poddisruptionbudgets are not in the registry"))?;
    let everything = LabelSelector::parse("").map_err(ApiError::bad_request)?;
    let no_fields = FieldSelector::parse("").map_err(ApiError::bad_request)?;
    let budgets = list_objects(st, pdbs, ns, &everything, &no_fields, 0, None).await?.items;
    let mut covering = Vec::new();
    for b in budgets {
        // policy/v1: an empty selector covers every pod in the namespace, a missing one none.
        let Some(sel) = b.pointer("/spec/selector").filter(|s| !s.is_null()) else { continue };
        if selector(Some(sel))?.matches(pod) {
            covering.push(b);
        }
    }
    match covering.len() {
        0 => return Ok(()),
        1 => {}
        _ => return Err(ApiError::internal("This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.")),
    }
    let b = &covering[0];
    let covered = list_objects(st, pods, ns, &selector(b.pointer("/spec/selector"))?, &no_fields, 0, None).await?.items;
    let budget = disruption::budget(b, &covered).map_err(|e| ApiError::internal(format!("PodDisruptionBudget {}: {e}", schema::object::name(b).unwrap_or(""))))?;
    if budget.disruptions_allowed >= 1 {
        return Ok(());
    }
    let mut e = ApiError::new(429, "TooManyRequests", "Cannot evict pod as it would violate the pod's disruption budget.");
    e.details = Some(json!({"causes": [{"reason": "DisruptionBudget", "message": format!(
        "The disruption budget {} needs {} healthy pods and has {} currently",
        schema::object::name(b).unwrap_or(""), budget.desired_healthy, budget.current_healthy)}]}));
    Err(e)
}
