//! DefaultTolerationSeconds: every pod tolerates a not-ready or unreachable node for
//! 300 s before the node lifecycle evicts it, unless it says otherwise.

use serde_json::{json, Value};
use std::sync::atomic::{AtomicI64, Ordering};

pub const NOT_READY: &str = "node.kubernetes.io/not-ready";
pub const UNREACHABLE: &str = "node.kubernetes.io/unreachable";
/// Put on by a kubelet with `--cloud-provider external` until the cloud controller has
/// initialized its Node.
pub const CLOUD_UNINITIALIZED: &str = "node.cloudprovider.kubernetes.io/uninitialized";
/// kube-apiserver's --default-not-ready-toleration-seconds and --default-unreachable-toleration-seconds.
pub const DEFAULT_SECONDS: i64 = 300;

/// The process's settings of those two flags (kube-apiserver's are process-wide too);
/// every admission in this process reads them.
static NOT_READY_SECONDS: AtomicI64 = AtomicI64::new(DEFAULT_SECONDS);
static UNREACHABLE_SECONDS: AtomicI64 = AtomicI64::new(DEFAULT_SECONDS);

/// Sets --default-not-ready-toleration-seconds and --default-unreachable-toleration-seconds.
pub fn set_default_seconds(not_ready: i64, unreachable: i64) {
    NOT_READY_SECONDS.store(not_ready, Ordering::Relaxed);
    UNREACHABLE_SECONDS.store(unreachable, Ordering::Relaxed);
}

/// Adds the two NoExecute tolerations a pod lacks, with this process's default seconds.
pub fn apply(pod: &mut Value) {
    apply_with(pod, NOT_READY_SECONDS.load(Ordering::Relaxed), UNREACHABLE_SECONDS.load(Ordering::Relaxed));
}

/// Adds the two NoExecute tolerations a pod lacks.
pub fn apply_with(pod: &mut Value, not_ready: i64, unreachable: i64) {
    let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) else { return };
    let have = spec.get("tolerations").and_then(Value::as_array).cloned().unwrap_or_default();
    let tolerates = |key: &str| {
        have.iter().any(|t| {
            let k = t.get("key").and_then(Value::as_str).unwrap_or("");
            let e = t.get("effect").and_then(Value::as_str).unwrap_or("");
            (k == key || k.is_empty()) && (e == "NoExecute" || e.is_empty())
        })
    };
    let mut add = Vec::new();
    for (key, seconds) in [(NOT_READY, not_ready), (UNREACHABLE, unreachable)] {
        if !tolerates(key) {
            add.push(json!({"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": seconds}));
        }
    }
    if add.is_empty() {
        return;
    }
    let mut all = have;
    all.extend(add);
    spec.insert("tolerations".into(), Value::Array(all));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adds_what_is_missing() {
        let mut p = json!({"spec":{}});
        apply(&mut p);
        assert_eq!(p["spec"]["tolerations"].as_array().unwrap().len(), 2);
        assert_eq!(p["spec"]["tolerations"][0], json!({"key": NOT_READY, "operator":"Exists","effect":"NoExecute","tolerationSeconds":300}));
        let once = p.clone();
        apply(&mut p);
        assert_eq!(p, once);
        let mut q = json!({"spec":{"tolerations":[{"key": UNREACHABLE, "operator":"Exists","effect":"NoExecute","tolerationSeconds":10}]}});
        apply(&mut q);
        let ts = q["spec"]["tolerations"].as_array().unwrap();
        assert_eq!((ts.len(), ts[1]["key"].as_str()), (2, Some(NOT_READY)));
        let mut all = json!({"spec":{"tolerations":[{"operator":"Exists"}]}});
        apply(&mut all);
        assert_eq!(all["spec"]["tolerations"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn the_flags_set_the_seconds() {
        let mut p = json!({"spec":{}});
        apply_with(&mut p, 5, 7);
        assert_eq!((p["spec"]["tolerations"][0]["tolerationSeconds"].as_i64(), p["spec"]["tolerations"][1]["tolerationSeconds"].as_i64()), (Some(5), Some(7)));
    }
}
