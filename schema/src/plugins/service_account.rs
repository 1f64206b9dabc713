//! The ServiceAccount plugin: a pod runs as a ServiceAccount of its namespace, `default`
//! unless it names one, and is refused when that account does not exist.

use super::forbidden;
use crate::admission::AdmissionError;
use serde_json::{json, Value};

/// Sets `spec.serviceAccountName` (and its deprecated twin `serviceAccount`) to `default`
/// when unset; answers the name the pod runs as.
pub fn default_name(pod: &mut Value) -> String {
    let set = |v: Option<&Value>| v.and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_string);
    let name = set(pod.pointer("/spec/serviceAccountName")).or_else(|| set(pod.pointer("/spec/serviceAccount"))).unwrap_or_else(|| "default".into());
    if let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) {
        spec.insert("serviceAccountName".into(), json!(name));
        spec.insert("serviceAccount".into(), json!(name));
    }
    name
}

/// Refuses a pod whose ServiceAccount is missing, with the real server's words.
pub fn check(pod: &Value, ns: &str, sa: &str, exists: bool) -> Result<(), AdmissionError> {
    if exists {
        return Ok(());
    }
    Err(forbidden("pods", pod, format!("error looking up service account {ns}/{sa}: serviceaccount \"{sa}\" not found")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_refuses() {
        let mut p = json!({"metadata":{"name":"p"},"spec":{"containers":[]}});
        assert_eq!(default_name(&mut p), "default");
        assert_eq!(p["spec"]["serviceAccountName"], "default");
        assert_eq!(p["spec"]["serviceAccount"], "default");
        let mut q = json!({"metadata":{"name":"q"},"spec":{"serviceAccountName":"bot"}});
        assert_eq!(default_name(&mut q), "bot");
        assert!(check(&q, "x", "bot", true).is_ok());
        assert_eq!(
            check(&q, "x", "bot", false).unwrap_err().to_string(),
            "pods \"q\" is forbidden: error looking up service account x/bot: serviceaccount \"bot\" not found"
        );
    }
}
