//! Versions kept in another version's storage, converted on the way in and out as the
//! real server's conversion does: events.k8s.io/v1 Events are core/v1 Events, and
//! autoscaling/v1 HorizontalPodAutoscalers are autoscaling/v2 ones (v1's CPU target is
//! v2's one CPU Utilization metric).

use crate::registry::{storage_of, ResourceInfo};
use serde_json::{json, Map, Value};

/// Whether `res` is stored as another version.
pub fn converted(res: &ResourceInfo) -> bool {
    let s = storage_of(res);
    (s.group, s.version) != (res.group, res.version)
}

/// `v` (as `res`) in its storage version.
pub fn to_storage(res: &ResourceInfo, v: &Value) -> Value {
    match (res.group, res.version, res.kind) {
        ("events.k8s.io", _, "Event") => crate::events::to_core(v),
        ("autoscaling", "v1", "HorizontalPodAutoscaler") => hpa_v1_to_v2(v),
        _ => v.clone(),
    }
}

/// A stored value as `res` shows it.
pub fn from_storage(res: &ResourceInfo, v: Value) -> Value {
    match (res.group, res.version, res.kind) {
        ("events.k8s.io", _, "Event") => crate::events::to_events_v1(&v),
        ("autoscaling", "v1", "HorizontalPodAutoscaler") => hpa_v2_to_v1(&v),
        _ => v,
    }
}

fn copy(from: &Value, to: &mut Map<String, Value>, fields: &[&str]) {
    for f in fields {
        if let Some(x) = from.get(*f).filter(|x| !x.is_null()) {
            to.insert(f.to_string(), x.clone());
        }
    }
}

fn hpa_v1_to_v2(v: &Value) -> Value {
    let mut out = v.as_object().cloned().unwrap_or_default();
    out.insert("apiVersion".into(), json!("autoscaling/v2"));
    let spec = v.get("spec").cloned().unwrap_or(json!({}));
    let mut s = Map::new();
    copy(&spec, &mut s, &["scaleTargetRef", "minReplicas", "maxReplicas"]);
    let cpu = spec.get("targetCPUUtilizationPercentage").and_then(Value::as_i64).unwrap_or(80);
    s.insert("metrics".into(), json!([{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": cpu}}}]));
    out.insert("spec".into(), Value::Object(s));
    if let Some(st) = v.get("status").filter(|x| x.is_object()) {
        let mut t = Map::new();
        copy(st, &mut t, &["observedGeneration", "lastScaleTime", "currentReplicas", "desiredReplicas"]);
        if let Some(u) = st.get("currentCPUUtilizationPercentage").and_then(Value::as_i64) {
            t.insert("currentMetrics".into(), json!([{"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": u}}}]));
        }
        t.entry("desiredReplicas").or_insert(json!(0));
        out.insert("status".into(), Value::Object(t));
    }
    Value::Object(out)
}

fn hpa_v2_to_v1(v: &Value) -> Value {
    let mut out = v.as_object().cloned().unwrap_or_default();
    out.insert("apiVersion".into(), json!("autoscaling/v1"));
    let spec = v.get("spec").cloned().unwrap_or(json!({}));
    let mut s = Map::new();
    copy(&spec, &mut s, &["scaleTargetRef", "minReplicas", "maxReplicas"]);
    let cpu = |ms: Option<&Value>, field: &str| {
        ms.and_then(Value::as_array)?.iter().find(|m| m["type"] == "Resource" && m["resource"]["name"] == "cpu")?["resource"][field]["averageUtilization"].as_i64()
    };
    if let Some(t) = cpu(spec.get("metrics"), "target") {
        s.insert("targetCPUUtilizationPercentage".into(), json!(t));
    }
    out.insert("spec".into(), Value::Object(s));
    if let Some(st) = v.get("status").filter(|x| x.is_object()) {
        let mut t = Map::new();
        copy(st, &mut t, &["observedGeneration", "lastScaleTime", "currentReplicas", "desiredReplicas"]);
        if let Some(u) = cpu(st.get("currentMetrics"), "current") {
            t.insert("currentCPUUtilizationPercentage".into(), json!(u));
        }
        out.insert("status".into(), Value::Object(t));
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hpa_v1_round_trips_through_v2() {
        let v1 = json!({"apiVersion": "autoscaling/v1", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "web"},
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"}, "minReplicas": 1, "maxReplicas": 3, "targetCPUUtilizationPercentage": 50},
            "status": {"currentReplicas": 2, "desiredReplicas": 3, "currentCPUUtilizationPercentage": 90}});
        let v2 = hpa_v1_to_v2(&v1);
        assert_eq!(v2["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"], 50);
        assert_eq!(v2["status"]["currentMetrics"][0]["resource"]["current"]["averageUtilization"], 90);
        assert_eq!(hpa_v2_to_v1(&v2), v1);
    }
}
