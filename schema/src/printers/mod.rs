//! Every resource's Table columns and the cells of one object, as the real server's
//! printers (pkg/printers/internalversion) produce them: part of what the registry says
//! about a resource. The gateway wraps them into `meta.k8s.io/v1` Tables.

mod more;
mod storage;
pub use storage::{access_modes, DEFAULT_CLASS_ANNOTATION};

use crate::labels::label_selector_string;
use crate::registry::ResourceInfo;
use serde_json::{json, Value};

fn col(name: &str, priority: u8, format: &str) -> Value {
    json!({"name": name, "type": "string", "format": format, "description": name, "priority": priority})
}

pub fn columns(res: &ResourceInfo) -> Vec<Value> {
    if let Some(p) = more::printer(res.kind).or_else(|| storage::printer(res.kind)) {
        return p.columns.iter().map(|(n, pr)| col(n, *pr, if *n == "Name" { "name" } else { "" })).collect();
    }
    let name = col("Name", 0, "name");
    let mut out = vec![name];
    let more: &[(&str, u8)] = match res.kind {
        "Pod" => &[("Ready", 0), ("Status", 0), ("Restarts", 0), ("Age", 0), ("IP", 1), ("Node", 1), ("Nominated Node", 1), ("Readiness Gates", 1)],
        "Deployment" => &[("Ready", 0), ("Up-to-date", 0), ("Available", 0), ("Age", 0), ("Containers", 1), ("Images", 1), ("Selector", 1)],
        "ReplicaSet" | "ReplicationController" => &[("Desired", 0), ("Current", 0), ("Ready", 0), ("Age", 0), ("Containers", 1), ("Images", 1), ("Selector", 1)],
        "Node" => &[("Status", 0), ("Roles", 0), ("Age", 0), ("Version", 0), ("Internal-IP", 1), ("External-IP", 1), ("OS-Image", 1), ("Kernel-Version", 1), ("Container-Runtime", 1)],
        "Namespace" => &[("Status", 0), ("Age", 0)],
        "RuntimeClass" => &[("Handler", 0), ("Age", 0)],
        "Event" => {
            // Events have no Name column first: the real printer leads with Last Seen.
            return [("Last Seen", 0), ("Type", 0), ("Reason", 0), ("Object", 0), ("Subobject", 1), ("Source", 1), ("Message", 0), ("First Seen", 1), ("Count", 1), ("Name", 1)]
                .iter()
                .map(|(n, p)| col(n, *p, if *n == "Name" { "name" } else { "" }))
                .collect();
        }
        _ => &[("Age", 0)],
    };
    out.extend(more.iter().map(|(n, p)| col(n, *p, "")));
    out
}

/// kubectl's `duration.HumanDuration`: 45s, 3m2s, 12m, 4h5m, 10h, 3d4h, 20d, 2y10d, 9y.
pub fn human_duration(secs: i64) -> String {
    if secs < -1 {
        return "<invalid>".into();
    }
    if secs < 0 {
        return "0s".into();
    }
    if secs < 120 {
        return format!("{secs}s");
    }
    let minutes = secs / 60;
    if minutes < 10 {
        let s = secs % 60;
        return if s == 0 { format!("{minutes}m") } else { format!("{minutes}m{s}s") };
    }
    if minutes < 180 {
        return format!("{minutes}m");
    }
    let hours = secs / 3600;
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 { format!("{hours}h") } else { format!("{hours}h{m}m") };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 { format!("{}d", hours / 24) } else { format!("{}d{h}h", hours / 24) };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        let dy = (hours / 24) % 365;
        return if dy == 0 { format!("{}y", hours / 24 / 365) } else { format!("{}y{dy}d", hours / 24 / 365) };
    }
    format!("{}y", hours / 24 / 365)
}

pub(super) fn since(ts: Option<&Value>, now: i64) -> String {
    match ts.and_then(Value::as_str).and_then(|s| s.parse::<jiff::Timestamp>().ok()) {
        Some(t) => human_duration(now - t.as_second()),
        None => "<unknown>".into(),
    }
}

pub(super) fn s<'a>(v: &'a Value, ptr: &str) -> &'a str {
    v.pointer(ptr).and_then(Value::as_str).unwrap_or("")
}

pub(super) fn i(v: &Value, ptr: &str) -> i64 {
    v.pointer(ptr).and_then(Value::as_i64).unwrap_or(0)
}

pub(super) fn or_none(x: &str) -> String {
    if x.is_empty() { "<none>".into() } else { x.into() }
}

pub(super) fn arr<'a>(v: &'a Value, ptr: &str) -> &'a [Value] {
    v.pointer(ptr).and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[])
}

pub(super) fn containers_images(v: &Value, ptr: &str) -> (String, String) {
    let cs = arr(v, ptr);
    let names: Vec<&str> = cs.iter().map(|c| s(c, "/name")).collect();
    let images: Vec<&str> = cs.iter().map(|c| s(c, "/image")).collect();
    (names.join(","), images.join(","))
}

/// The cells of one object, in `columns(res)` order; `now` is in Unix seconds.
pub fn cells(res: &ResourceInfo, obj: &Value, now: i64) -> Vec<Value> {
    if let Some(p) = more::printer(res.kind).or_else(|| storage::printer(res.kind)) {
        return (p.cells)(obj, now);
    }
    let name = json!(s(obj, "/metadata/name"));
    let age = json!(since(obj.pointer("/metadata/creationTimestamp"), now));
    match res.kind {
        "Pod" => pod_cells(obj, now, name, age),
        "Deployment" => {
            let (c, im) = containers_images(obj, "/spec/template/spec/containers");
            let ready = format!("{}/{}", i(obj, "/status/readyReplicas"), obj.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(1));
            vec![name, json!(ready), json!(i(obj, "/status/updatedReplicas")), json!(i(obj, "/status/availableReplicas")), age, json!(c), json!(im), json!(label_selector_string(obj.pointer("/spec/selector")))]
        }
        "ReplicaSet" => {
            let (c, im) = containers_images(obj, "/spec/template/spec/containers");
            let desired = obj.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(1);
            vec![name, json!(desired), json!(i(obj, "/status/replicas")), json!(i(obj, "/status/readyReplicas")), age, json!(c), json!(im), json!(label_selector_string(obj.pointer("/spec/selector")))]
        }
        "ReplicationController" => {
            let (c, im) = containers_images(obj, "/spec/template/spec/containers");
            let desired = obj.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(1);
            let sel = json!({"matchLabels": obj.pointer("/spec/selector").cloned().unwrap_or(Value::Null)});
            vec![name, json!(desired), json!(i(obj, "/status/replicas")), json!(i(obj, "/status/readyReplicas")), age, json!(c), json!(im), json!(label_selector_string(Some(&sel)))]
        }
        "Node" => node_cells(obj, name, age),
        "Namespace" => vec![name, json!(s(obj, "/status/phase")), age],
        "RuntimeClass" => vec![name, json!(s(obj, "/handler")), age],
        // events.k8s.io Events print as the core Events they are stored as.
        "Event" if res.group == "events.k8s.io" => event_cells(&crate::events::to_core(obj), now),
        "Event" => event_cells(obj, now),
        _ => vec![name, age],
    }
}

fn pod_cells(obj: &Value, now: i64, name: Value, age: Value) -> Vec<Value> {
    // Native sidecars (restartPolicy: Always init containers) count as containers.
    let sidecars: Vec<&str> = arr(obj, "/spec/initContainers").iter().filter(|c| s(c, "/restartPolicy") == "Always").map(|c| s(c, "/name")).collect();
    let total = arr(obj, "/spec/containers").len() + sidecars.len();
    let mut reason = s(obj, "/status/phase").to_string();
    if !s(obj, "/status/reason").is_empty() {
        reason = s(obj, "/status/reason").to_string();
    }
    if arr(obj, "/status/conditions").iter().any(|c| c["type"] == "PodScheduled" && c["reason"] == "SchedulingGated") {
        reason = "SchedulingGated".into();
    }
    let mut restarts = 0i64;
    let mut ready = 0usize;
    let mut last_restart: Option<i64> = None;
    let mut has_running = false;
    // Init containers that have not finished decide the status first, as in printPod.
    let mut initializing = false;
    let init_statuses = arr(obj, "/status/initContainerStatuses");
    let init_total = arr(obj, "/spec/initContainers").len();
    let mut sidecar_restarts = 0i64;
    for (idx, c) in init_statuses.iter().enumerate() {
        restarts += i(c, "/restartCount");
        if sidecars.contains(&s(c, "/name")) {
            sidecar_restarts += i(c, "/restartCount");
            if c.get("started").and_then(Value::as_bool) == Some(true) && c.get("ready").and_then(Value::as_bool) == Some(true) {
                ready += 1;
            }
            continue;
        }
        if c.pointer("/state/terminated").is_some() && i(c, "/state/terminated/exitCode") == 0 {
            continue;
        }
        let r = if c.pointer("/state/terminated").is_some() {
            let tr = s(c, "/state/terminated/reason");
            if tr.is_empty() { format!("Init:ExitCode:{}", i(c, "/state/terminated/exitCode")) } else { format!("Init:{tr}") }
        } else if !s(c, "/state/waiting/reason").is_empty() && s(c, "/state/waiting/reason") != "PodInitializing" {
            format!("Init:{}", s(c, "/state/waiting/reason"))
        } else {
            format!("Init:{idx}/{init_total}")
        };
        reason = r;
        initializing = true;
        break;
    }
    let initialized = arr(obj, "/status/conditions").iter().any(|c| s(c, "/type") == "Initialized" && s(c, "/status") == "True");
    if !initializing || initialized {
        restarts = sidecar_restarts;
        for c in arr(obj, "/status/containerStatuses").iter().rev() {
            restarts += i(c, "/restartCount");
            if let Some(t) = c.pointer("/lastState/terminated/finishedAt").and_then(Value::as_str).and_then(|t| t.parse::<jiff::Timestamp>().ok()) {
                let t = t.as_second();
                last_restart = Some(last_restart.map_or(t, |l: i64| l.max(t)));
            }
            let waiting = s(c, "/state/waiting/reason");
            let term = c.pointer("/state/terminated");
            if !waiting.is_empty() {
                reason = waiting.to_string();
            } else if let Some(t) = term {
                let tr = s(t, "/reason");
                reason = if !tr.is_empty() {
                    tr.to_string()
                } else if i(t, "/signal") != 0 {
                    format!("Signal:{}", i(t, "/signal"))
                } else {
                    format!("ExitCode:{}", i(t, "/exitCode"))
                };
            } else if c.get("ready").and_then(Value::as_bool) == Some(true) && c.pointer("/state/running").is_some() {
                has_running = true;
                ready += 1;
            }
        }
        if reason == "Completed" && has_running {
            let pod_ready = arr(obj, "/status/conditions").iter().any(|c| s(c, "/type") == "Ready" && s(c, "/status") == "True");
            reason = if pod_ready { "Running".into() } else { "NotReady".into() };
        }
    }
    if obj.pointer("/metadata/deletionTimestamp").is_some_and(|d| !d.is_null()) {
        reason = if s(obj, "/status/reason") == "NodeLost" { "Unknown".into() } else { "Terminating".into() };
    }
    let restarts_cell = match last_restart {
        Some(t) => json!(format!("{restarts} ({} ago)", human_duration(now - t))),
        None => json!(restarts),
    };
    let gates = arr(obj, "/spec/readinessGates");
    let gates_cell = if gates.is_empty() {
        "<none>".to_string()
    } else {
        let conds = arr(obj, "/status/conditions");
        let ok = gates.iter().filter(|g| conds.iter().any(|c| s(c, "/type") == s(g, "/conditionType") && s(c, "/status") == "True")).count();
        format!("{ok}/{}", gates.len())
    };
    vec![
        name,
        json!(format!("{ready}/{total}")),
        json!(reason),
        restarts_cell,
        age,
        json!(or_none(s(obj, "/status/podIP"))),
        json!(or_none(s(obj, "/spec/nodeName"))),
        json!(or_none(s(obj, "/status/nominatedNodeName"))),
        json!(gates_cell),
    ]
}

fn node_cells(obj: &Value, name: Value, age: Value) -> Vec<Value> {
    let conds = arr(obj, "/status/conditions");
    let mut status = match conds.iter().find(|c| s(c, "/type") == "Ready") {
        Some(c) if s(c, "/status") == "True" => "Ready".to_string(),
        Some(_) => "NotReady".to_string(),
        None => "Unknown".to_string(),
    };
    if obj.pointer("/spec/unschedulable").and_then(Value::as_bool) == Some(true) {
        status.push_str(",SchedulingDisabled");
    }
    let mut roles: Vec<String> = Vec::new();
    if let Some(labels) = obj.pointer("/metadata/labels").and_then(Value::as_object) {
        for (k, v) in labels {
            if let Some(r) = k.strip_prefix("node-role.kubernetes.io/") {
                if !r.is_empty() {
                    roles.push(r.to_string());
                }
            } else if k == "kubernetes.io/role" {
                if let Some(r) = v.as_str().filter(|r| !r.is_empty()) {
                    roles.push(r.to_string());
                }
            }
        }
    }
    roles.sort();
    roles.dedup();
    let addr = |t: &str| arr(obj, "/status/addresses").iter().find(|a| s(a, "/type") == t).map(|a| s(a, "/address").to_string()).unwrap_or_default();
    vec![
        name,
        json!(status),
        json!(if roles.is_empty() { "<none>".to_string() } else { roles.join(",") }),
        age,
        json!(s(obj, "/status/nodeInfo/kubeletVersion")),
        json!(or_none(&addr("InternalIP"))),
        json!(or_none(&addr("ExternalIP"))),
        json!(or_none(s(obj, "/status/nodeInfo/osImage"))),
        json!(or_none(s(obj, "/status/nodeInfo/kernelVersion"))),
        json!(or_none(s(obj, "/status/nodeInfo/containerRuntimeVersion"))),
    ]
}

fn event_cells(obj: &Value, now: i64) -> Vec<Value> {
    let present = |p: &str| obj.pointer(p).and_then(Value::as_str).filter(|x| !x.is_empty());
    let first = match present("/firstTimestamp") {
        Some(_) => since(obj.pointer("/firstTimestamp"), now),
        None => since(obj.pointer("/eventTime"), now),
    };
    let mut last = match present("/lastTimestamp") {
        Some(_) => since(obj.pointer("/lastTimestamp"), now),
        None => first.clone(),
    };
    let mut count = obj.get("count").and_then(Value::as_i64).unwrap_or(0);
    if obj.get("series").is_some_and(|x| x.is_object()) {
        last = since(obj.pointer("/series/lastObservedTime"), now);
        count = i(obj, "/series/count");
    } else if count == 0 {
        count = 1;
    }
    let kind = s(obj, "/involvedObject/kind").to_lowercase();
    let iname = s(obj, "/involvedObject/name");
    let target = if iname.is_empty() { kind } else { format!("{kind}/{iname}") };
    let mut source = s(obj, "/source/component").to_string();
    if source.is_empty() {
        source = s(obj, "/reportingComponent").to_string();
    }
    let host = s(obj, "/source/host");
    if !host.is_empty() {
        source = format!("{source}, {host}");
    }
    vec![
        json!(last),
        json!(s(obj, "/type")),
        json!(s(obj, "/reason")),
        json!(target),
        json!(s(obj, "/involvedObject/fieldPath")),
        json!(source),
        json!(s(obj, "/message").trim()),
        json!(first),
        json!(count),
        json!(s(obj, "/metadata/name")),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::by_plural;

    const NOW: &str = "2026-11-22T20:16:07Z";
    fn now() -> i64 {
        NOW.parse::<jiff::Timestamp>().unwrap().as_second()
    }

    #[test]
    fn ages() {
        assert_eq!(human_duration(5), "5s");
        assert_eq!(human_duration(119), "119s");
        assert_eq!(human_duration(182), "3m2s");
        assert_eq!(human_duration(600), "10m");
        assert_eq!(human_duration(4 * 3600), "4h");
        assert_eq!(human_duration(4 * 3600 + 5 * 60), "4h5m");
        assert_eq!(human_duration(10 * 3600), "10h");
        assert_eq!(human_duration(2 * 86400), "2d");
        assert_eq!(human_duration(3 * 86400 + 4 * 3600), "3d4h");
        assert_eq!(human_duration(20 * 86400), "20d");
        assert_eq!(human_duration(-1), "0s");
        assert_eq!(human_duration(-5), "<invalid>");
    }

    #[test]
    fn pod_rows() {
        let pods = by_plural("", "v1", "pods").unwrap();
        let p = json!({"metadata":{"name":"p","creationTimestamp":"2026-11-22T20:15:49Z"},
            "spec":{"nodeName":"node2","containers":[{"name":"c"}]},
            "status":{"phase":"Running","podIP":"10.244.2.12","containerStatuses":[{"name":"c","ready":true,"restartCount":0,"state":{"running":{}}}]}});
        assert_eq!(cells(pods, &p, now()), vec![json!("p"), json!("1/1"), json!("Running"), json!(0), json!("18s"), json!("10.244.2.12"), json!("node2"), json!("<none>"), json!("<none>")]);
        let crash = json!({"metadata":{"name":"p"},"spec":{"containers":[{"name":"c"}]},
            "status":{"phase":"Running","containerStatuses":[{"name":"c","ready":false,"restartCount":3,
              "state":{"waiting":{"reason":"CrashLoopBackOff"}},"lastState":{"terminated":{"exitCode":1,"finishedAt":"2026-11-22T20:16:00Z"}}}]}});
        let c = cells(pods, &crash, now());
        assert_eq!(c[1], json!("0/1"));
        assert_eq!(c[2], json!("CrashLoopBackOff"));
        assert_eq!(c[3], json!("3 (7s ago)"));
        assert_eq!(c[4], json!("<unknown>"));
        let mut term = p.clone();
        term["metadata"]["deletionTimestamp"] = json!(NOW);
        assert_eq!(cells(pods, &term, now())[2], json!("Terminating"));
        let pending = json!({"metadata":{"name":"p"},"spec":{"containers":[{"name":"c"}]},"status":{"phase":"Pending"}});
        assert_eq!(cells(pods, &pending, now())[2], json!("Pending"));
    }

    #[test]
    fn init_and_sidecar_rows() {
        let pods = by_plural("", "v1", "pods").unwrap();
        let pod = |init: Value, conds: Value| json!({"metadata":{"name":"p"},
            "spec":{"initContainers":[{"name":"i1"},{"name":"i2"},{"name":"s","restartPolicy":"Always"}],"containers":[{"name":"c"}]},
            "status":{"phase":"Pending","conditions":conds,"initContainerStatuses":init,
              "containerStatuses":[{"name":"c","ready":false,"restartCount":0,"state":{"waiting":{"reason":"PodInitializing"}}}]}});
        let running_i1 = json!([{"name":"i1","restartCount":0,"state":{"running":{}}},{"name":"i2","restartCount":0,"state":{"waiting":{"reason":"PodInitializing"}}},{"name":"s","restartCount":0,"state":{"waiting":{"reason":"PodInitializing"}}}]);
        let c = cells(pods, &pod(running_i1, json!([])), now());
        assert_eq!((c[1].clone(), c[2].clone()), (json!("0/2"), json!("Init:0/3")));
        let errored = json!([{"name":"i1","restartCount":0,"state":{"terminated":{"exitCode":1,"reason":"Error"}}}]);
        assert_eq!(cells(pods, &pod(errored, json!([])), now())[2], json!("Init:Error"));
        let looping = json!([{"name":"i1","restartCount":2,"state":{"waiting":{"reason":"CrashLoopBackOff"}}}]);
        assert_eq!(cells(pods, &pod(looping, json!([])), now())[2], json!("Init:CrashLoopBackOff"));
        // Initialized, the sidecar running and ready beside the main container.
        let mut up = pod(json!([{"name":"i1","restartCount":0,"state":{"terminated":{"exitCode":0,"reason":"Completed"}}},
            {"name":"i2","restartCount":0,"state":{"terminated":{"exitCode":0,"reason":"Completed"}}},
            {"name":"s","restartCount":4,"started":true,"ready":true,"state":{"running":{}}}]), json!([{"type":"Initialized","status":"True"}]));
        up["status"]["phase"] = json!("Running");
        up["status"]["containerStatuses"] = json!([{"name":"c","ready":true,"restartCount":1,"state":{"running":{}}}]);
        let c = cells(pods, &up, now());
        assert_eq!((c[1].clone(), c[2].clone(), c[3].clone()), (json!("2/2"), json!("Running"), json!(5)));
    }

    #[test]
    fn deployment_and_node_rows() {
        let d = by_plural("apps", "v1", "deployments").unwrap();
        let obj = json!({"metadata":{"name":"nginx","creationTimestamp":"2026-11-22T20:15:18Z"},
            "spec":{"replicas":3,"selector":{"matchLabels":{"app":"nginx"}},"template":{"spec":{"containers":[{"name":"nginx","image":"nginx:3"}]}}},
            "status":{"readyReplicas":3,"updatedReplicas":3,"availableReplicas":3}});
        assert_eq!(cells(d, &obj, now()), vec![json!("nginx"), json!("3/3"), json!(3), json!(3), json!("49s"), json!("nginx"), json!("nginx:3"), json!("app=nginx")]);
        assert_eq!(columns(d).len(), 8);
        let n = by_plural("", "v1", "nodes").unwrap();
        let node = json!({"metadata":{"name":"n1","labels":{"node-role.kubernetes.io/control-plane":""}},"spec":{"unschedulable":true},
            "status":{"conditions":[{"type":"Ready","status":"True"}],"nodeInfo":{"kubeletVersion":"v1.32.4-flotilla"}}});
        let c = cells(n, &node, now());
        assert_eq!(c[1], json!("Ready,SchedulingDisabled"));
        assert_eq!(c[2], json!("control-plane"));
        assert_eq!(c[4], json!("v1.32.4-flotilla"));
        assert_eq!(columns(n).len(), c.len());
    }

    #[test]
    fn event_cells_match_their_columns() {
        let ev = by_plural("", "v1", "events").unwrap();
        let e = json!({"metadata":{"name":"e1"},"involvedObject":{"kind":"Pod","name":"p"},"reason":"Scheduled","type":"Normal","message":"m","count":1,"source":{"component":"default-scheduler"},"firstTimestamp":NOW,"lastTimestamp":NOW});
        let c = cells(ev, &e, now());
        assert_eq!(c.len(), columns(ev).len());
        assert_eq!(c[3], json!("pod/p"));
    }
}
