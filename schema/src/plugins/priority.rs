//! Priority: a pod's `priorityClassName` becomes its `spec.priority` (and preemption
//! policy); without one, the class marked `globalDefault` applies, else priority 0. An
//! unknown class is refused. The two system classes every cluster has live here too.

use super::forbidden;
use crate::admission::AdmissionError;
use serde_json::{json, Value};

/// (name, value, description) of the classes kube-apiserver creates at start.
pub const SYSTEM_CLASSES: &[(&str, i64, &str)] = &[
    ("system-node-critical", 2_000_001_000, "Used for system critical pods that must not be moved from their current node."),
    ("system-cluster-critical", 2_000_000_000, "Used for system critical pods that must run in the cluster, but can be moved to another node if necessary."),
];

fn name_of(pc: &Value) -> &str {
    crate::object::name(pc).unwrap_or("")
}

fn is_default(pc: &Value) -> bool {
    pc.get("globalDefault").and_then(Value::as_bool) == Some(true)
}

/// Resolves the pod's priority from `classes` (every PriorityClass).
pub fn resolve(pod: &mut Value, classes: &[Value]) -> Result<(), AdmissionError> {
    let asked = pod.pointer("/spec/priorityClassName").and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_string);
    let class = match &asked {
        Some(n) => Some(classes.iter().find(|c| name_of(c) == n).ok_or_else(|| forbidden("pods", pod, format!("no PriorityClass with name {n} was found")))?),
        // Several defaults: the lowest value wins, as the real plugin picks.
        None => classes.iter().filter(|c| is_default(c)).min_by_key(|c| c.get("value").and_then(Value::as_i64).unwrap_or(0)),
    };
    let (value, policy) = match class {
        Some(c) => (c.get("value").and_then(Value::as_i64).unwrap_or(0), c.get("preemptionPolicy").and_then(Value::as_str).unwrap_or("PreemptLowerPriority").to_string()),
        None => (0, "PreemptLowerPriority".to_string()),
    };
    if let Some(p) = pod.pointer("/spec/priority").and_then(Value::as_i64) {
        if p != value {
            return Err(forbidden("pods", pod, format!("the integer value of priority ({p}) must not be provided in pod spec; priority admission controller computed {value} from the given PriorityClass name")));
        }
    }
    if let Some(p) = pod.pointer("/spec/preemptionPolicy").and_then(Value::as_str) {
        if p != policy {
            return Err(forbidden("pods", pod, format!("the string value of PreemptionPolicy ({p}) must not be provided in pod spec; priority admission controller computed {policy} from the given PriorityClass name")));
        }
    }
    let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) else { return Ok(()) };
    if let Some(c) = class {
        spec.insert("priorityClassName".into(), json!(name_of(c)));
    }
    spec.insert("priority".into(), json!(value));
    spec.insert("preemptionPolicy".into(), json!(policy));
    Ok(())
}

/// A new or changed PriorityClass may not be a second global default.
pub fn check_class(pc: &Value, classes: &[Value]) -> Result<(), AdmissionError> {
    if !is_default(pc) {
        return Ok(());
    }
    match classes.iter().find(|c| is_default(c) && name_of(c) != name_of(pc)) {
        Some(other) => Err(forbidden("priorityclasses.scheduling.k8s.io", pc, format!("PriorityClass {} is marked as default and another default already exists: {}", name_of(pc), name_of(other)))),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn classes() -> Vec<Value> {
        vec![
            json!({"metadata":{"name":"high"},"value":1000,"preemptionPolicy":"Never"}),
            json!({"metadata":{"name":"low"},"value":10,"globalDefault":true}),
        ]
    }

    #[test]
    fn resolves_named_default_and_unknown() {
        let mut p = json!({"metadata":{"name":"p"},"spec":{"priorityClassName":"high"}});
        resolve(&mut p, &classes()).unwrap();
        assert_eq!((p["spec"]["priority"].clone(), p["spec"]["preemptionPolicy"].clone()), (json!(1000), json!("Never")));
        let mut d = json!({"metadata":{"name":"d"},"spec":{}});
        resolve(&mut d, &classes()).unwrap();
        assert_eq!((d["spec"]["priority"].clone(), d["spec"]["priorityClassName"].clone()), (json!(10), json!("low")));
        let mut none = json!({"metadata":{"name":"n"},"spec":{}});
        resolve(&mut none, &[]).unwrap();
        assert_eq!(none["spec"]["priority"], 0);
        let mut bad = json!({"metadata":{"name":"b"},"spec":{"priorityClassName":"nope"}});
        assert_eq!(resolve(&mut bad, &classes()).unwrap_err().to_string(), "pods \"b\" is forbidden: no PriorityClass with name nope was found");
        let mut lie = json!({"metadata":{"name":"l"},"spec":{"priorityClassName":"high","priority":5}});
        assert!(resolve(&mut lie, &classes()).unwrap_err().to_string().contains("must not be provided in pod spec; priority admission controller computed 1000"));
    }

    #[test]
    fn one_global_default() {
        let second = json!({"metadata":{"name":"other"},"value":1,"globalDefault":true});
        assert!(check_class(&second, &classes()).is_err());
        assert!(check_class(&classes()[1], &classes()).is_ok());
    }
}
