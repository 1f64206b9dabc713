//! PodDisruptionBudget arithmetic, shared by the eviction subresource (may this pod go
//! now?) and what reports a budget's status: how many of the pods a budget covers are
//! healthy, how many must stay healthy, and so how many may be disrupted.

use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    pub expected_pods: i64,
    pub current_healthy: i64,
    pub desired_healthy: i64,
    pub disruptions_allowed: i64,
}

/// A pod counts as healthy when it is Ready and not on its way out.
pub fn healthy(pod: &Value) -> bool {
    let deleting = pod.pointer("/metadata/deletionTimestamp").is_some_and(|d| !d.is_null());
    let ready = pod.pointer("/status/conditions").and_then(Value::as_array).is_some_and(|cs| cs.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"));
    ready && !deleting
}

/// An int-or-percent of `of`; percentages round up, as the real server rounds them.
fn scaled(v: &Value, of: i64) -> Result<i64, String> {
    match v {
        Value::Number(n) => n.as_i64().filter(|n| *n >= 0).ok_or_else(|| format!("invalid value {n}")),
        Value::String(s) => {
            let p: i64 = s.strip_suffix('%').and_then(|p| p.parse().ok()).filter(|p| (0..=100).contains(p)).ok_or_else(|| format!("invalid value {s:?}: must be an integer or a percentage"))?;
            Ok((p * of + 99) / 100)
        }
        other => Err(format!("invalid value {other}")),
    }
}

/// The budget of `pdb` over `pods`: the pods in its namespace its selector matches.
pub fn budget(pdb: &Value, pods: &[Value]) -> Result<Budget, String> {
    let live: Vec<&Value> = pods.iter().filter(|p| !matches!(p.pointer("/status/phase").and_then(Value::as_str), Some("Succeeded" | "Failed"))).collect();
    let expected = live.len() as i64;
    let current = live.iter().filter(|p| healthy(p)).count() as i64;
    let desired = match (pdb.pointer("/spec/minAvailable"), pdb.pointer("/spec/maxUnavailable")) {
        (Some(min), _) if !min.is_null() => scaled(min, expected)?,
        (_, Some(max)) if !max.is_null() => (expected - scaled(max, expected)?).max(0),
        // Neither: no pod may be disrupted.
        _ => expected,
    };
    Ok(Budget { expected_pods: expected, current_healthy: current, desired_healthy: desired, disruptions_allowed: (current - desired).max(0) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(ready: bool) -> Value {
        json!({"metadata": {"name": "p"}, "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}})
    }

    #[test]
    fn min_available_and_max_unavailable() {
        let pods = vec![pod(true), pod(true), pod(true), pod(false)];
        let b = budget(&json!({"spec": {"minAvailable": 2}}), &pods).unwrap();
        assert_eq!(b, Budget { expected_pods: 4, current_healthy: 3, desired_healthy: 2, disruptions_allowed: 1 });
        assert_eq!(budget(&json!({"spec": {"minAvailable": "50%"}}), &pods).unwrap().desired_healthy, 2);
        assert_eq!(budget(&json!({"spec": {"minAvailable": "60%"}}), &pods).unwrap().desired_healthy, 3);
        let b = budget(&json!({"spec": {"maxUnavailable": 1}}), &pods).unwrap();
        assert_eq!((b.desired_healthy, b.disruptions_allowed), (3, 0));
        assert_eq!(budget(&json!({"spec": {"maxUnavailable": "25%"}}), &pods).unwrap().desired_healthy, 3);
        assert_eq!(budget(&json!({"spec": {}}), &pods).unwrap().disruptions_allowed, 0);
        assert!(budget(&json!({"spec": {"minAvailable": "lots"}}), &pods).is_err());
    }

    #[test]
    fn deleting_and_finished_pods_do_not_count() {
        let mut going = pod(true);
        going["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        let mut done = pod(false);
        done["status"]["phase"] = json!("Succeeded");
        let b = budget(&json!({"spec": {"minAvailable": 1}}), &[pod(true), going, done]).unwrap();
        assert_eq!((b.expected_pods, b.current_healthy, b.disruptions_allowed), (2, 1, 0));
    }
}
