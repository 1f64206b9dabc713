//! DefaultTolerationSeconds: every pod tolerates a not-ready or unreachable node for
//! 300 s before the node lifecycle evicts it, unless it says otherwise.

use serde_json::{json, Value};

pub const NOT_READY: &str = "node.kubernetes.io/not-ready";
pub const UNREACHABLE: &str = "node.kubernetes.io/unreachable";
/// kube-apiserver's --default-not-ready-toleration-seconds and --default-unreachable-toleration-seconds.
pub const DEFAULT_SECONDS: i64 = 300;

/// Adds the two NoExecute tolerations a pod lacks.
pub fn apply(pod: &mut Value) {
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
    for key in [NOT_READY, UNREACHABLE] {
        if !tolerates(key) {
            add.push(json!({"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": DEFAULT_SECONDS}));
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
}
