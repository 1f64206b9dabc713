//! Defaulting, as the real API server does it, for the fields kubectl prints or the
//! controllers rely on. Idempotent: applying twice changes nothing.

use crate::registry::ResourceInfo;
use serde_json::{json, Value};

/// A pod created with schedulingGates says so in PodScheduled=False/SchedulingGated,
/// which `kubectl get pod` shows as its status (the pod strategy's
/// applySchedulingGatedCondition).
fn scheduling_gated(v: &mut Value) {
    let gated = v.pointer("/spec/schedulingGates").and_then(Value::as_array).is_some_and(|g| !g.is_empty());
    if !gated || !v["status"].is_object() {
        return;
    }
    let conds = v["status"].as_object_mut().map(|st| st.entry("conditions").or_insert_with(|| json!([])));
    let Some(Value::Array(conds)) = conds else { return };
    if conds.iter().any(|c| c["type"] == "PodScheduled") {
        return;
    }
    conds.push(json!({"type": "PodScheduled", "status": "False", "reason": "SchedulingGated", "message": "Scheduling is blocked due to non-empty scheduling gates", "lastProbeTime": null, "lastTransitionTime": crate::object::now_string()}));
}

pub fn apply(res: &ResourceInfo, v: &mut Value) {
    match res.kind {
        "Pod" => {
            if let Some(spec) = v.get_mut("spec") {
                pod_spec(spec);
            }
            if v.get("status").is_none() {
                v["status"] = json!({"phase": "Pending"});
            }
            scheduling_gated(v);
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
        "ReplicationController" => {
            if let Some(spec) = v.get_mut("spec").filter(|s| s.is_object()) {
                set_default(spec, "replicas", json!(1));
                set_default(spec, "minReadySeconds", json!(0));
                // An RC without a selector selects its template's labels (and a template
                // without labels gets the selector's), as the real server defaults them.
                let tpl_labels = spec.pointer("/template/metadata/labels").cloned().filter(|l| l.as_object().is_some_and(|o| !o.is_empty()));
                let sel = spec.get("selector").cloned().filter(|l| l.as_object().is_some_and(|o| !o.is_empty()));
                match (sel, tpl_labels) {
                    (None, Some(l)) => spec["selector"] = l,
                    (Some(sel), None) => {
                        if let Some(t) = spec.get_mut("template").filter(|t| t.is_object()) {
                            let meta = t.as_object_mut().map(|o| o.entry("metadata").or_insert_with(|| json!({})));
                            if let Some(m) = meta.and_then(Value::as_object_mut) {
                                m.insert("labels".into(), sel);
                            }
                        }
                    }
                    _ => {}
                }
                template(spec);
            }
        }
        "DaemonSet" => {
            if let Some(spec) = v.get_mut("spec").filter(|s| s.is_object()) {
                set_default(spec, "updateStrategy", json!({"type":"RollingUpdate","rollingUpdate":{"maxUnavailable":1,"maxSurge":0}}));
                set_default(spec, "revisionHistoryLimit", json!(10));
                template(spec);
            }
        }
        "StatefulSet" => {
            if let Some(spec) = v.get_mut("spec").filter(|s| s.is_object()) {
                set_default(spec, "replicas", json!(1));
                set_default(spec, "podManagementPolicy", json!("OrderedReady"));
                set_default(spec, "updateStrategy", json!({"type":"RollingUpdate","rollingUpdate":{"partition":0}}));
                set_default(spec, "revisionHistoryLimit", json!(10));
                set_default(spec, "persistentVolumeClaimRetentionPolicy", json!({"whenDeleted":"Retain","whenScaled":"Retain"}));
                template(spec);
            }
        }
        "Job" => job(v),
        "CronJob" => {
            if let Some(spec) = v.get_mut("spec").filter(|s| s.is_object()) {
                set_default(spec, "concurrencyPolicy", json!("Allow"));
                set_default(spec, "suspend", json!(false));
                set_default(spec, "successfulJobsHistoryLimit", json!(3));
                set_default(spec, "failedJobsHistoryLimit", json!(1));
                if let Some(js) = spec.pointer_mut("/jobTemplate/spec") {
                    template(js);
                }
            }
        }
        "Service" => crate::services::defaults(v),
        "PersistentVolume" | "PersistentVolumeClaim" | "StorageClass" => crate::storage::defaults(res.kind, v),
        "Secret" => {
            set_default(v, "type", json!("Opaque"));
            string_data(v);
        }
        "Endpoints" => {
            for s in v.get_mut("subsets").and_then(Value::as_array_mut).into_iter().flatten() {
                for p in s.get_mut("ports").and_then(Value::as_array_mut).into_iter().flatten() {
                    set_default(p, "protocol", json!("TCP"));
                }
            }
        }
        "EndpointSlice" => {
            for p in v.get_mut("ports").and_then(Value::as_array_mut).into_iter().flatten() {
                set_default(p, "protocol", json!("TCP"));
            }
        }
        "LimitRange" => {
            for item in v.pointer_mut("/spec/limits").and_then(Value::as_array_mut).into_iter().flatten() {
                limit_range_item(item);
            }
        }
        "RoleBinding" | "ClusterRoleBinding" => {
            for s in v.get_mut("subjects").and_then(Value::as_array_mut).into_iter().flatten() {
                let group = if s.get("kind").and_then(Value::as_str) == Some("ServiceAccount") { "" } else { "rbac.authorization.k8s.io" };
                set_default(s, "apiGroup", json!(group));
            }
        }
        "HorizontalPodAutoscaler" if res.version == "v2" => {
            if let Some(spec) = v.get_mut("spec").filter(|s| s.is_object()) {
                set_default(spec, "minReplicas", json!(1));
                // No metrics: 80% CPU, as the real server defaults autoscaling/v2.
                if spec.get("metrics").and_then(Value::as_array).is_none_or(|m| m.is_empty()) {
                    spec["metrics"] = json!([{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}}]);
                }
            }
        }
        "PriorityClass" => set_default(v, "preemptionPolicy", json!("PreemptLowerPriority")),
        _ => {}
    }
}

/// Job defaults, and the selector the real server generates from the Job's uid (so its
/// pods can be told apart from any other Job's) unless the user manages it.
fn job(v: &mut Value) {
    let uid = v.pointer("/metadata/uid").and_then(Value::as_str).unwrap_or("").to_string();
    let name = v.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("").to_string();
    let Some(spec) = v.get_mut("spec").filter(|s| s.is_object()) else { return };
    if spec.get("completions").is_none() && spec.get("parallelism").is_none() {
        spec["completions"] = json!(1);
        spec["parallelism"] = json!(1);
    }
    set_default(spec, "parallelism", json!(1));
    set_default(spec, "backoffLimit", json!(6));
    set_default(spec, "completionMode", json!("NonIndexed"));
    set_default(spec, "suspend", json!(false));
    set_default(spec, "podReplacementPolicy", json!("TerminatingOrFailed"));
    let manual = spec.get("manualSelector").and_then(Value::as_bool) == Some(true);
    if !manual && spec.get("selector").is_none() && !uid.is_empty() {
        spec["selector"] = json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid}});
        if let Some(tpl) = spec.get_mut("template").filter(|t| t.is_object()) {
            let meta = tpl.as_object_mut().map(|o| o.entry("metadata").or_insert_with(|| json!({})));
            if let Some(meta) = meta.filter(|m| m.is_object()) {
                let labels = meta.as_object_mut().map(|o| o.entry("labels").or_insert_with(|| json!({})));
                if let Some(Value::Object(l)) = labels {
                    for (k, val) in [("batch.kubernetes.io/controller-uid", &uid), ("batch.kubernetes.io/job-name", &name), ("controller-uid", &uid), ("job-name", &name)] {
                        l.insert(k.into(), json!(val));
                    }
                }
            }
        }
    }
    template(spec);
}

/// `stringData` is write-only: the real server merges it into `data` (base64) on every
/// write and never returns it.
fn string_data(v: &mut Value) {
    use base64::Engine;
    let Some(o) = v.as_object_mut() else { return };
    let Some(Value::Object(sd)) = o.remove("stringData") else { return };
    let data = o.entry("data").or_insert_with(|| json!({}));
    if let Some(d) = data.as_object_mut() {
        for (k, val) in sd {
            d.insert(k, json!(base64::engine::general_purpose::STANDARD.encode(val.as_str().unwrap_or(""))));
        }
    }
}

/// As SetDefaults_LimitRangeItem: a container's default limit falls back to the max, its
/// default request to the default limit, then to the min.
fn limit_range_item(item: &mut Value) {
    if item.get("type").and_then(Value::as_str) != Some("Container") || !item.is_object() {
        return;
    }
    let get = |it: &Value, f: &str| it.get(f).and_then(Value::as_object).cloned().unwrap_or_default();
    let (max, min) = (get(item, "max"), get(item, "min"));
    let mut default = get(item, "default");
    for (k, q) in &max {
        default.entry(k.clone()).or_insert(q.clone());
    }
    let mut request = get(item, "defaultRequest");
    for (k, q) in default.iter().chain(min.iter()) {
        request.entry(k.clone()).or_insert(q.clone());
    }
    if !default.is_empty() {
        item["default"] = Value::Object(default);
    }
    if !request.is_empty() {
        item["defaultRequest"] = Value::Object(request);
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
    for list in ["initContainers", "containers"] {
        let Some(cs) = spec.get_mut(list).and_then(Value::as_array_mut) else { continue };
        for c in cs.iter_mut().filter(|c| c.is_object()) {
            set_default(c, "terminationMessagePath", json!("/dev/termination-log"));
            set_default(c, "terminationMessagePolicy", json!("File"));
            let always = c.get("image").and_then(Value::as_str).map(|i| i.ends_with(":latest") || !i.contains(':')).unwrap_or(false);
            set_default(c, "imagePullPolicy", json!(if always { "Always" } else { "IfNotPresent" }));
            set_default(c, "resources", json!({}));
            limits_as_requests(c);
            for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
                if let Some(p) = c.get_mut(probe) {
                    probe_defaults(p);
                }
            }
            for hook in ["postStart", "preStop"] {
                if let Some(h) = c.pointer_mut(&format!("/lifecycle/{hook}")) {
                    handler_defaults(h);
                }
            }
        }
    }
}

/// SetDefaults_Probe: what `kubectl describe` prints as `delay=0s timeout=1s period=10s
/// #success=1 #failure=3` when the manifest says nothing.
fn probe_defaults(p: &mut Value) {
    if !p.is_object() {
        return;
    }
    // As the real server: zero (or null) counts as unset.
    for (field, default) in [("timeoutSeconds", 1), ("periodSeconds", 10), ("successThreshold", 1), ("failureThreshold", 3)] {
        if p.get(field).is_none_or(|v| v.is_null() || v.as_i64() == Some(0)) {
            p[field] = json!(default);
        }
    }
    handler_defaults(p);
}

/// SetDefaults_HTTPGetAction (path "/", scheme HTTP) and SetDefaults_GRPCAction's service
/// left empty, for probes and lifecycle hooks alike.
fn handler_defaults(h: &mut Value) {
    if let Some(get) = h.get_mut("httpGet").filter(|g| g.is_object()) {
        if get.get("path").and_then(Value::as_str).is_none_or(str::is_empty) {
            get["path"] = json!("/");
        }
        if get.get("scheme").and_then(Value::as_str).is_none_or(str::is_empty) {
            get["scheme"] = json!("HTTP");
        }
    }
}

/// As SetDefaults_Pod: a resource with a limit and no request requests its limit.
fn limits_as_requests(c: &mut Value) {
    let Some(res) = c.get_mut("resources").and_then(Value::as_object_mut) else { return };
    let Some(limits) = res.get("limits").and_then(Value::as_object).cloned() else { return };
    let requests = res.entry("requests").or_insert_with(|| json!({}));
    if let Some(r) = requests.as_object_mut() {
        for (k, v) in limits {
            r.entry(k).or_insert(v);
        }
        if r.is_empty() {
            res.remove("requests");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::by_plural;

    #[test]
    fn job_gets_a_selector_from_its_uid() {
        let res = by_plural("batch", "v1", "jobs").unwrap();
        let mut j = json!({"metadata":{"name":"pi","uid":"u1"},"spec":{"template":{"spec":{"restartPolicy":"Never","containers":[{"name":"c","image":"busybox"}]}}}});
        apply(res, &mut j);
        assert_eq!(j["spec"]["selector"], json!({"matchLabels":{"batch.kubernetes.io/controller-uid":"u1"}}));
        assert_eq!(j["spec"]["template"]["metadata"]["labels"]["job-name"], "pi");
        assert_eq!((j["spec"]["completions"].clone(), j["spec"]["parallelism"].clone(), j["spec"]["backoffLimit"].clone()), (json!(1), json!(1), json!(6)));
        let once = j.clone();
        apply(res, &mut j);
        assert_eq!(j, once);
    }

    #[test]
    fn a_gated_pod_says_so_in_pod_scheduled() {
        let res = by_plural("", "v1", "pods").unwrap();
        let mut p = json!({"metadata":{"name":"g"},"spec":{"schedulingGates":[{"name":"example.com/wait"}],"containers":[{"name":"c","image":"busybox"}]}});
        apply(res, &mut p);
        let c = &p["status"]["conditions"][0];
        assert_eq!((c["type"].as_str(), c["status"].as_str(), c["reason"].as_str()), (Some("PodScheduled"), Some("False"), Some("SchedulingGated")));
        let once = p.clone();
        apply(res, &mut p);
        assert_eq!(p, once);
        let mut free = json!({"metadata":{"name":"f"},"spec":{"containers":[{"name":"c","image":"busybox"}]}});
        apply(res, &mut free);
        assert!(free["status"].get("conditions").is_none());
    }

    #[test]
    fn probes_and_hooks_get_the_api_defaults() {
        let res = by_plural("", "v1", "pods").unwrap();
        let mut p = json!({"spec":{"initContainers":[{"name":"i","image":"busybox","startupProbe":{"exec":{"command":["true"]}}}],
            "containers":[{"name":"c","image":"busybox","readinessProbe":{"tcpSocket":{"port":80},"periodSeconds":2},
            "livenessProbe":{"httpGet":{"port":"http"}},"lifecycle":{"preStop":{"httpGet":{"port":80,"path":"/stop"}}}}]}});
        apply(res, &mut p);
        let c = &p["spec"]["containers"][0];
        let r = &c["readinessProbe"];
        assert_eq!((r["timeoutSeconds"].clone(), r["periodSeconds"].clone(), r["successThreshold"].clone(), r["failureThreshold"].clone()), (json!(1), json!(2), json!(1), json!(3)));
        assert_eq!(c["livenessProbe"]["httpGet"], json!({"port":"http","path":"/","scheme":"HTTP"}));
        assert_eq!(c["lifecycle"]["preStop"]["httpGet"], json!({"port":80,"path":"/stop","scheme":"HTTP"}));
        let i = &p["spec"]["initContainers"][0];
        assert_eq!((i["startupProbe"]["periodSeconds"].clone(), i["terminationMessagePolicy"].clone()), (json!(10), json!("File")));
        let once = p.clone();
        apply(res, &mut p);
        assert_eq!(p, once);
        // Zero counts as unset, as in SetDefaults_Probe; an empty scheme is HTTP.
        let mut zero = json!({"spec":{"containers":[{"name":"c","readinessProbe":{"periodSeconds":0,"timeoutSeconds":null,"httpGet":{"port":1,"scheme":""}}}]}});
        apply(res, &mut zero);
        let r = &zero["spec"]["containers"][0]["readinessProbe"];
        assert_eq!((r["periodSeconds"].clone(), r["timeoutSeconds"].clone(), r["httpGet"]["scheme"].clone()), (json!(10), json!(1), json!("HTTP")));
        // A probe that is not an object is left for validation to refuse, not a panic.
        let mut bad = json!({"spec":{"containers":[{"name":"c","livenessProbe":3,"lifecycle":{"postStart":"x"}}]}});
        apply(res, &mut bad);
    }

    #[test]
    fn secret_string_data_becomes_data() {
        let res = by_plural("", "v1", "secrets").unwrap();
        let mut v = json!({"data":{"a":"eA=="},"stringData":{"b":"hi"}});
        apply(res, &mut v);
        assert_eq!(v, json!({"type":"Opaque","data":{"a":"eA==","b":"aGk="}}));
    }

    #[test]
    fn limit_range_and_bindings() {
        let lr = by_plural("", "v1", "limitranges").unwrap();
        let mut v = json!({"spec":{"limits":[{"type":"Container","max":{"cpu":"1"},"min":{"memory":"1Mi"}}]}});
        apply(lr, &mut v);
        assert_eq!(v["spec"]["limits"][0]["default"], json!({"cpu":"1"}));
        assert_eq!(v["spec"]["limits"][0]["defaultRequest"], json!({"cpu":"1","memory":"1Mi"}));
        let rb = by_plural("rbac.authorization.k8s.io", "v1", "rolebindings").unwrap();
        let mut b = json!({"subjects":[{"kind":"User","name":"alice"},{"kind":"ServiceAccount","name":"default","namespace":"x"}]});
        apply(rb, &mut b);
        assert_eq!(b["subjects"][0]["apiGroup"], "rbac.authorization.k8s.io");
        assert_eq!(b["subjects"][1]["apiGroup"], "");
    }
}
