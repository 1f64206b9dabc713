//! Defaulting, as the real API server does it, for the fields kubectl prints or the
//! controllers rely on. Idempotent: applying twice changes nothing.

use crate::registry::ResourceInfo;
use serde_json::{json, Value};

pub fn apply(res: &ResourceInfo, v: &mut Value) {
    match res.kind {
        "Pod" => {
            if let Some(spec) = v.get_mut("spec") {
                pod_spec(spec);
            }
            if v.get("status").is_none() {
                v["status"] = json!({"phase": "Pending"});
            }
        }
        "Deployment" => {
            if let Some(spec) = v.get_mut("spec").filter(|s| s.is_object()) {
                set_default(spec, "replicas", json!(1));
                set_default(spec, "revisionHistoryLimit", json!(10));
                set_default(spec, "progressDeadlineSeconds", json!(600));
                set_default(spec, "strategy", json!({"type":"RollingUpdate","rollingUpdate":{"maxSurge":"25%","maxUnavailable":"25%"}}));
                template(spec);
            }
        }
        "ReplicaSet" => {
            if let Some(spec) = v.get_mut("spec").filter(|s| s.is_object()) {
                set_default(spec, "replicas", json!(1));
                template(spec);
            }
        }
        _ => {}
    }
}

fn template(spec: &mut Value) {
    if let Some(ps) = spec.pointer_mut("/template/spec") {
        pod_spec(ps);
    }
}

fn set_default(o: &mut Value, field: &str, val: Value) {
    if let Some(m) = o.as_object_mut() {
        m.entry(field).or_insert(val);
    }
}

fn pod_spec(spec: &mut Value) {
    if !spec.is_object() {
        return;
    }
    set_default(spec, "restartPolicy", json!("Always"));
    set_default(spec, "terminationGracePeriodSeconds", json!(30));
    set_default(spec, "dnsPolicy", json!("ClusterFirst"));
    set_default(spec, "schedulerName", json!("default-scheduler"));
    set_default(spec, "securityContext", json!({}));
    if let Some(cs) = spec.get_mut("containers").and_then(Value::as_array_mut) {
        for c in cs.iter_mut().filter(|c| c.is_object()) {
            set_default(c, "terminationMessagePath", json!("/dev/termination-log"));
            set_default(c, "terminationMessagePolicy", json!("File"));
            let always = c.get("image").and_then(Value::as_str).map(|i| i.ends_with(":latest") || !i.contains(':')).unwrap_or(false);
            set_default(c, "imagePullPolicy", json!(if always { "Always" } else { "IfNotPresent" }));
            set_default(c, "resources", json!({}));
        }
    }
}
