//! Field validation for the kinds beyond pods and deployments (workloads, batch, RBAC,
//! policy, discovery), with the real server's field paths and messages, and the fields
//! each of them may not change once stored.

use crate::admission::{validate_pod_spec, validate_workload, Cause};
use serde_json::Value;

fn cause(reason: &str, field: &str, message: impl Into<String>) -> Cause {
    Cause { reason: reason.into(), field: field.into(), message: message.into() }
}

fn strs(v: Option<&Value>) -> Vec<&str> {
    v.and_then(Value::as_array).map(|a| a.iter().filter_map(Value::as_str).collect()).unwrap_or_default()
}

/// Validation of one object of `kind` beyond its metadata.
pub fn kind(kind: &str, v: &Value, causes: &mut Vec<Cause>) {
    match kind {
        "DaemonSet" | "StatefulSet" => validate_workload(v, causes),
        "Job" => job_spec(v.get("spec"), "spec", causes),
        "HorizontalPodAutoscaler" => {
            let min = v.pointer("/spec/minReplicas").and_then(Value::as_i64).unwrap_or(1);
            match v.pointer("/spec/maxReplicas").and_then(Value::as_i64) {
                None => causes.push(cause("FieldValueRequired", "spec.maxReplicas", "Required value")),
                Some(max) if max < min => causes.push(cause("FieldValueInvalid", "spec.maxReplicas", format!("Invalid value: {max}: must be greater than or equal to `minReplicas`"))),
                _ => {}
            }
            if min < 1 {
                causes.push(cause("FieldValueInvalid", "spec.minReplicas", format!("Invalid value: {min}: must be greater than or equal to 1")));
            }
            for f in ["kind", "name"] {
                if v.pointer(&format!("/spec/scaleTargetRef/{f}")).and_then(Value::as_str).is_none_or(str::is_empty) {
                    causes.push(cause("FieldValueRequired", &format!("spec.scaleTargetRef.{f}"), "Required value"));
                }
            }
        }
        "CronJob" => {
            match v.pointer("/spec/schedule").and_then(Value::as_str) {
                None | Some("") => causes.push(cause("FieldValueRequired", "spec.schedule", "Required value")),
                Some(s) => {
                    if let Err(why) = cron_schedule(s) {
                        causes.push(cause("FieldValueInvalid", "spec.schedule", format!("Invalid value: \"{s}\": {why}")));
                    }
                }
            }
            if let Some(tz) = v.pointer("/spec/timeZone").and_then(Value::as_str) {
                if let Err(why) = crate::cron::time_zone(Some(tz)) {
                    causes.push(cause("FieldValueInvalid", "spec.timeZone", format!("Invalid value: \"{tz}\": {why}")));
                }
            }
            job_spec(v.pointer("/spec/jobTemplate/spec"), "spec.jobTemplate.spec", causes);
        }
        "Role" => rules(v, true, causes),
        "ClusterRole" => rules(v, false, causes),
        "RoleBinding" | "ClusterRoleBinding" => binding(kind, v, causes),
        "PodDisruptionBudget" => {
            if v.pointer("/spec/minAvailable").is_some_and(|x| !x.is_null()) && v.pointer("/spec/maxUnavailable").is_some_and(|x| !x.is_null()) {
                causes.push(cause("FieldValueInvalid", "spec", "Invalid value: policy.PodDisruptionBudgetSpec{...}: minAvailable and maxUnavailable cannot be both set"));
            }
        }
        "EndpointSlice" => match v.get("addressType").and_then(Value::as_str) {
            None | Some("") => causes.push(cause("FieldValueRequired", "addressType", "Required value")),
            Some(t) if !["IPv4", "IPv6", "FQDN"].contains(&t) => {
                causes.push(cause("FieldValueNotSupported", "addressType", format!("Unsupported value: \"{t}\": supported values: \"FQDN\", \"IPv4\", \"IPv6\"")))
            }
            Some(_) => {}
        },
        "Service" => crate::services::validate(v, causes),
        "PersistentVolume" | "PersistentVolumeClaim" | "StorageClass" => crate::storage::validate(kind, v, causes),
        _ => {}
    }
}

fn job_spec(spec: Option<&Value>, path: &str, causes: &mut Vec<Cause>) {
    for f in ["parallelism", "completions", "backoffLimit", "activeDeadlineSeconds"] {
        if let Some(n) = spec.and_then(|s| s.get(f)).and_then(Value::as_i64).filter(|n| *n < 0) {
            causes.push(cause("FieldValueInvalid", &format!("{path}.{f}"), format!("Invalid value: {n}: must be greater than or equal to 0")));
        }
    }
    let tpl = spec.and_then(|s| s.pointer("/template/spec"));
    validate_pod_spec(tpl, &format!("{path}.template.spec"), causes);
    let rp = tpl.and_then(|t| t.get("restartPolicy")).and_then(Value::as_str).unwrap_or("");
    let field = format!("{path}.template.spec.restartPolicy");
    if rp.is_empty() {
        causes.push(cause("FieldValueRequired", &field, "Required value: valid values: \"OnFailure\", \"Never\""));
    } else if rp != "OnFailure" && rp != "Never" && !causes.iter().any(|c| c.field == field) {
        causes.push(cause("FieldValueNotSupported", &field, format!("Unsupported value: \"{rp}\": supported values: \"OnFailure\", \"Never\"")));
    }
}

/// Checks a standard five-field cron schedule (or a predefined `@…` one), as the robfig
/// parser the real server uses accepts them.
pub fn cron_schedule(s: &str) -> Result<(), String> {
    crate::cron::parse(s).map(drop)
}

fn rules(v: &Value, namespaced: bool, causes: &mut Vec<Cause>) {
    for (i, r) in v.get("rules").and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[]).iter().enumerate() {
        let p = |f: &str| format!("rules[{i}].{f}");
        if strs(r.get("verbs")).is_empty() {
            causes.push(cause("FieldValueRequired", &p("verbs"), "Required value: verbs must contain at least one value"));
        }
        let urls = strs(r.get("nonResourceURLs"));
        if !urls.is_empty() {
            if namespaced {
                causes.push(cause("FieldValueInvalid", &p("nonResourceURLs"), format!("Invalid value: {urls:?}: namespaced rules cannot apply to non-resource URLs")));
            } else if !strs(r.get("apiGroups")).is_empty() || !strs(r.get("resources")).is_empty() {
                causes.push(cause("FieldValueInvalid", &p("nonResourceURLs"), format!("Invalid value: {urls:?}: rules cannot apply to both regular resources and non-resource URLs")));
            }
            continue;
        }
        if r.get("apiGroups").and_then(Value::as_array).map(Vec::is_empty).unwrap_or(true) {
            causes.push(cause("FieldValueRequired", &p("apiGroups"), "Required value: resource rules must supply at least one api group"));
        }
        if strs(r.get("resources")).is_empty() {
            causes.push(cause("FieldValueRequired", &p("resources"), "Required value: resource rules must supply at least one resource"));
        }
    }
}

fn binding(kind: &str, v: &Value, causes: &mut Vec<Cause>) {
    let rr = v.get("roleRef");
    let rk = rr.and_then(|r| r.get("kind")).and_then(Value::as_str).unwrap_or("");
    let allowed: &[&str] = if kind == "RoleBinding" { &["Role", "ClusterRole"] } else { &["ClusterRole"] };
    if !allowed.contains(&rk) {
        let supported = allowed.iter().map(|k| format!("\"{k}\"")).collect::<Vec<_>>().join(", ");
        causes.push(cause("FieldValueNotSupported", "roleRef.kind", format!("Unsupported value: \"{rk}\": supported values: {supported}")));
    }
    if rr.and_then(|r| r.get("name")).and_then(Value::as_str).unwrap_or("").is_empty() {
        causes.push(cause("FieldValueRequired", "roleRef.name", "Required value"));
    }
    let group = rr.and_then(|r| r.get("apiGroup")).and_then(Value::as_str).unwrap_or("");
    if group != "rbac.authorization.k8s.io" {
        causes.push(cause("FieldValueNotSupported", "roleRef.apiGroup", format!("Unsupported value: \"{group}\": supported values: \"rbac.authorization.k8s.io\"")));
    }
    for (i, s) in v.get("subjects").and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[]).iter().enumerate() {
        let p = |f: &str| format!("subjects[{i}].{f}");
        let name = s.get("name").and_then(Value::as_str).unwrap_or("");
        if name.is_empty() {
            causes.push(cause("FieldValueRequired", &p("name"), "Required value"));
        }
        match s.get("kind").and_then(Value::as_str).unwrap_or("") {
            "User" | "Group" => {}
            "ServiceAccount" => {
                if kind == "ClusterRoleBinding" && s.get("namespace").and_then(Value::as_str).unwrap_or("").is_empty() {
                    causes.push(cause("FieldValueRequired", &p("namespace"), "Required value"));
                }
            }
            other => causes.push(cause("FieldValueNotSupported", &p("kind"), format!("Unsupported value: \"{other}\": supported values: \"ServiceAccount\", \"User\", \"Group\""))),
        }
    }
}

/// Fields an update may not change, per kind.
pub fn immutable(kind: &str, v: &Value, old: &Value, causes: &mut Vec<Cause>) {
    // A null field is an absent one (`creationTimestamp: null` in a template that a typed
    // client wrote back without it has not changed).
    let changed = |p: &str| v.pointer(p).map(without_nulls) != old.pointer(p).map(without_nulls);
    match kind {
        "DaemonSet" | "StatefulSet" if changed("/spec/selector") => causes.push(cause("FieldValueInvalid", "spec.selector", "Invalid value: field is immutable")),
        "Job" => {
            if changed("/spec/selector") {
                causes.push(cause("FieldValueInvalid", "spec.selector", "Invalid value: field is immutable"));
            }
            if changed("/spec/template") {
                causes.push(cause("FieldValueInvalid", "spec.template", "Invalid value: field is immutable"));
            }
            if changed("/spec/completions") {
                causes.push(cause("FieldValueInvalid", "spec.completions", "Invalid value: field is immutable"));
            }
        }
        "RoleBinding" | "ClusterRoleBinding" if changed("/roleRef") => causes.push(cause("FieldValueInvalid", "roleRef", "Invalid value: cannot change roleRef")),
        "Service" => crate::services::immutable(v, old, causes),
        "PersistentVolumeClaim" | "StorageClass" => crate::storage::immutable(kind, v, old, causes),
        _ => {}
    }
}

fn without_nulls(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(m.iter().filter(|(_, x)| !x.is_null()).map(|(k, x)| (k.clone(), without_nulls(x))).collect()),
        Value::Array(a) => Value::Array(a.iter().map(without_nulls).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_null_is_not_a_change_to_an_immutable_field() {
        let old = json!({"spec": {"template": {"metadata": {"creationTimestamp": null}, "spec": {"containers": []}}}});
        let new = json!({"spec": {"template": {"metadata": {}, "spec": {"containers": []}}}});
        let mut c = Vec::new();
        immutable("Job", &new, &old, &mut c);
        assert!(c.is_empty(), "{c:?}");
        let changed = json!({"spec": {"template": {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": []}}}});
        immutable("Job", &changed, &old, &mut c);
        assert_eq!(c.len(), 1);
    }

    fn fields(kind_: &str, v: Value) -> Vec<String> {
        let mut c = Vec::new();
        kind(kind_, &v, &mut c);
        c.into_iter().map(|c| c.field).collect()
    }

    #[test]
    fn cron() {
        for ok in ["*/5 * * * *", "0 0 1 JAN,jul *", "30 2 * * mon-fri", "@hourly", "0 0 ? * 0"] {
            assert_eq!(cron_schedule(ok), Ok(()), "{ok}");
        }
        assert_eq!(cron_schedule("* * *"), Err("expected exactly 5 fields, found 3: * * *".into()));
        assert_eq!(cron_schedule("60 * * * *"), Err("end of range (60) above maximum (59): 60".into()));
        assert!(cron_schedule("TZ=UTC * * * * *").is_err());
    }

    #[test]
    fn jobs_need_a_restart_policy_other_than_always() {
        let j = json!({"spec":{"template":{"spec":{"restartPolicy":"Always","containers":[{"name":"c","image":"i"}]}}}});
        assert_eq!(fields("Job", j), vec!["spec.template.spec.restartPolicy"]);
        let cj = json!({"spec":{"schedule":"x","jobTemplate":{"spec":{"template":{"spec":{"restartPolicy":"Never","containers":[{"name":"c","image":"i"}]}}}}}});
        assert_eq!(fields("CronJob", cj), vec!["spec.schedule"]);
    }

    #[test]
    fn rbac_objects() {
        let role = json!({"rules":[{"apiGroups":[""],"resources":["pods"],"verbs":[]},{"nonResourceURLs":["/x"],"verbs":["get"]}]});
        assert_eq!(fields("Role", role.clone()), vec!["rules[0].verbs", "rules[1].nonResourceURLs"]);
        assert_eq!(fields("ClusterRole", role), vec!["rules[0].verbs"]);
        let rb = json!({"roleRef":{"apiGroup":"rbac.authorization.k8s.io","kind":"Thing","name":"view"},"subjects":[{"kind":"User","name":""}]});
        assert_eq!(fields("RoleBinding", rb), vec!["roleRef.kind", "subjects[0].name"]);
        let crb = json!({"roleRef":{"apiGroup":"rbac.authorization.k8s.io","kind":"Role","name":"x"},"subjects":[{"kind":"ServiceAccount","name":"default"}]});
        assert_eq!(fields("ClusterRoleBinding", crb), vec!["roleRef.kind", "subjects[0].namespace"]);
        let old = json!({"roleRef":{"kind":"ClusterRole","name":"view"}});
        let mut c = Vec::new();
        immutable("RoleBinding", &json!({"roleRef":{"kind":"ClusterRole","name":"edit"}}), &old, &mut c);
        assert_eq!(c[0].message, "Invalid value: cannot change roleRef");
    }

    #[test]
    fn pdb_and_slices() {
        assert_eq!(fields("PodDisruptionBudget", json!({"spec":{"minAvailable":1,"maxUnavailable":1}})), vec!["spec"]);
        assert_eq!(fields("EndpointSlice", json!({})), vec!["addressType"]);
        assert!(fields("EndpointSlice", json!({"addressType":"IPv4"})).is_empty());
    }
}
