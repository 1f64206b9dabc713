//! The resource metrics API (metrics.k8s.io/v1beta1, as metrics-server serves it) from
//! the reports the node agents publish: NodeMetrics and PodMetrics, listed (with label
//! selectors) and read one by one, so `kubectl top nodes` and `kubectl top pods` work.

use super::selectors::LabelSelector;
use super::status::ApiError;
use super::target::Target;
use super::{json_response, AppState, Req};
use axum::http::StatusCode;
use axum::response::Response;
use schema::metrics::{node_metrics, pod_metrics};
use serde_json::{json, Value};

fn list(kind: &str, items: Vec<Value>) -> Value {
    json!({"kind": format!("{kind}List"), "apiVersion": "metrics.k8s.io/v1beta1", "metadata": {}, "items": items})
}

pub fn serve(st: &AppState, target: &Target, req: &Req) -> Result<Response, ApiError> {
    let selector = LabelSelector::parse(req.q("labelSelector").unwrap_or("")).map_err(ApiError::bad_request)?;
    let nodes = || st.usage.reports().into_iter().filter_map(|r| serde_json::to_value(node_metrics(&r)).ok());
    let pods = |ns: Option<&str>| -> Vec<Value> {
        st.usage.pods().into_iter().filter(|(_, p)| ns.is_none_or(|n| p.namespace == n)).filter_map(|(r, p)| serde_json::to_value(pod_metrics(&r, &p)).ok()).collect()
    };
    match target {
        Target::Collection { res, ns } => {
            let items: Vec<Value> = if res.kind == "NodeMetrics" { nodes().collect() } else { pods(ns.as_deref()) };
            Ok(json_response(StatusCode::OK, &list(res.kind, items.into_iter().filter(|v| selector.matches(v)).collect())))
        }
        Target::Object { res, ns, name } => {
            let found = if res.kind == "NodeMetrics" { nodes().find(|v| v["metadata"]["name"] == name.as_str()) } else { pods(ns.as_deref()).into_iter().find(|v| v["metadata"]["name"] == name.as_str()) };
            found.map(|v| json_response(StatusCode::OK, &v)).ok_or_else(|| ApiError::not_found(res, name))
        }
        Target::Sub { res, .. } => Err(ApiError::method_not_allowed(req.method.as_str(), res.plural)),
    }
}
