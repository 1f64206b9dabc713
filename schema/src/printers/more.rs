//! Table printers for the kinds beyond pods, workloads, nodes and events: each kind's
//! columns and the cells of one object side by side, as the real server's printers
//! (pkg/printers/internalversion) produce them.

use crate::labels::label_selector_string;
use super::{arr, containers_images, human_duration, i, or_none, s, since};
use serde_json::{json, Value};

/// (column name, priority): priority 1 columns show with `-o wide` only.
type Columns = &'static [(&'static str, u8)];

pub struct Printer {
    pub columns: Columns,
    pub cells: fn(&Value, i64) -> Vec<Value>,
}

/// "cpu: 40%/50%": each resource metric's current value against its target, as kubectl
/// prints HPA targets (`<unknown>` until the controller has measured it).
fn hpa_targets(o: &Value) -> String {
    if let Some(t) = o.pointer("/spec/targetCPUUtilizationPercentage").and_then(Value::as_i64) {
        let c = o.pointer("/status/currentCPUUtilizationPercentage").and_then(Value::as_i64).map(|c| format!("{c}%")).unwrap_or_else(|| "<unknown>".into());
        return format!("cpu: {c}/{t}%");
    }
    let current = arr(o, "/status/currentMetrics");
    let parts: Vec<String> = arr(o, "/spec/metrics")
        .iter()
        .filter(|m| m["type"] == "Resource")
        .map(|m| {
            let res = m["resource"]["name"].as_str().unwrap_or("");
            let t = &m["resource"]["target"];
            let cur = current.iter().find(|c| c["type"] == "Resource" && c["resource"]["name"] == res).map(|c| &c["resource"]["current"]);
            if let Some(u) = t["averageUtilization"].as_i64() {
                let c = cur.and_then(|c| c["averageUtilization"].as_i64()).map(|c| format!("{c}%")).unwrap_or_else(|| "<unknown>".into());
                format!("{res}: {c}/{u}%")
            } else {
                let want = t["averageValue"].as_str().unwrap_or("");
                let c = cur.and_then(|c| c["averageValue"].as_str()).unwrap_or("<unknown>");
                format!("{res}: {c}/{want}")
            }
        })
        .collect();
    if parts.is_empty() { "<none>".into() } else { parts.join(", ") }
}

pub fn printer(kind: &str) -> Option<Printer> {
    let p = |columns: Columns, cells: fn(&Value, i64) -> Vec<Value>| Some(Printer { columns, cells });
    match kind {
        "ConfigMap" => p(&[("Name", 0), ("Data", 0), ("Age", 0)], |o, now| vec![name(o), json!(count(o, "/data") + count(o, "/binaryData")), age(o, now)]),
        "Secret" => p(&[("Name", 0), ("Type", 0), ("Data", 0), ("Age", 0)], |o, now| vec![name(o), json!(s(o, "/type")), json!(count(o, "/data")), age(o, now)]),
        "ServiceAccount" => p(&[("Name", 0), ("Secrets", 0), ("Age", 0)], |o, now| vec![name(o), json!(arr(o, "/secrets").len()), age(o, now)]),
        "Service" => p(&[("Name", 0), ("Type", 0), ("Cluster-IP", 0), ("External-IP", 0), ("Port(s)", 0), ("Age", 0), ("Selector", 1)], service),
        "Endpoints" => p(&[("Name", 0), ("Endpoints", 0), ("Age", 0)], |o, now| vec![name(o), json!(endpoints(o)), age(o, now)]),
        "ResourceQuota" => p(&[("Name", 0), ("Age", 0), ("Request", 0), ("Limit", 0)], quota),
        "LimitRange" | "Role" | "ClusterRole" => p(&[("Name", 0), ("Created At", 0)], |o, _| vec![name(o), json!(s(o, "/metadata/creationTimestamp"))]),
        "RoleBinding" | "ClusterRoleBinding" => p(&[("Name", 0), ("Role", 0), ("Age", 0), ("Users", 1), ("Groups", 1), ("ServiceAccounts", 1)], binding),
        "DaemonSet" => p(
            &[("Name", 0), ("Desired", 0), ("Current", 0), ("Ready", 0), ("Up-to-date", 0), ("Available", 0), ("Node Selector", 0), ("Age", 0), ("Containers", 1), ("Images", 1), ("Selector", 1)],
            daemonset,
        ),
        "StatefulSet" => p(&[("Name", 0), ("Ready", 0), ("Age", 0), ("Containers", 1), ("Images", 1)], |o, now| {
            let (c, im) = containers_images(o, "/spec/template/spec/containers");
            let replicas = o.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(1);
            vec![name(o), json!(format!("{}/{replicas}", i(o, "/status/readyReplicas"))), age(o, now), json!(c), json!(im)]
        }),
        "Job" => p(&[("Name", 0), ("Status", 0), ("Completions", 0), ("Duration", 0), ("Age", 0), ("Containers", 1), ("Images", 1), ("Selector", 1)], job),
        "CronJob" => p(
            &[("Name", 0), ("Schedule", 0), ("Timezone", 0), ("Suspend", 0), ("Active", 0), ("Last Schedule", 0), ("Age", 0), ("Containers", 1), ("Images", 1), ("Selector", 1)],
            cronjob,
        ),
        "EndpointSlice" => p(&[("Name", 0), ("AddressType", 0), ("Ports", 0), ("Endpoints", 0), ("Age", 0)], slice),
        "PodDisruptionBudget" => p(&[("Name", 0), ("Min Available", 0), ("Max Unavailable", 0), ("Allowed Disruptions", 0), ("Age", 0)], |o, now| {
            let int_or_str = |p: &str| o.pointer(p).filter(|v| !v.is_null()).map(|v| v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string())).unwrap_or_else(|| "N/A".into());
            vec![name(o), json!(int_or_str("/spec/minAvailable")), json!(int_or_str("/spec/maxUnavailable")), json!(i(o, "/status/disruptionsAllowed")), age(o, now)]
        }),
        "HorizontalPodAutoscaler" => p(&[("Name", 0), ("Reference", 0), ("Targets", 0), ("MinPods", 0), ("MaxPods", 0), ("Replicas", 0), ("Age", 0)], |o, now| {
            let reference = format!("{}/{}", s(o, "/spec/scaleTargetRef/kind"), s(o, "/spec/scaleTargetRef/name"));
            let min = o.pointer("/spec/minReplicas").and_then(Value::as_i64).unwrap_or(1);
            vec![name(o), json!(reference), json!(hpa_targets(o)), json!(min), json!(i(o, "/spec/maxReplicas")), json!(i(o, "/status/currentReplicas")), age(o, now)]
        }),
        "Lease" => p(&[("Name", 0), ("Holder", 0), ("Age", 0)], |o, now| vec![name(o), json!(s(o, "/spec/holderIdentity")), age(o, now)]),
        "PriorityClass" => p(&[("Name", 0), ("Value", 0), ("Global-Default", 0), ("Age", 0), ("PreemptionPolicy", 0)], |o, now| {
            vec![name(o), json!(i(o, "/value")), json!(o.get("globalDefault").and_then(Value::as_bool).unwrap_or(false)), age(o, now), json!(s(o, "/preemptionPolicy"))]
        }),
        _ => None,
    }
}

fn name(o: &Value) -> Value {
    json!(s(o, "/metadata/name"))
}

fn age(o: &Value, now: i64) -> Value {
    json!(since(o.pointer("/metadata/creationTimestamp"), now))
}

fn count(o: &Value, p: &str) -> usize {
    o.pointer(p).and_then(Value::as_object).map(|m| m.len()).unwrap_or(0)
}

/// labels.FormatLabels: sorted `k=v` pairs, or `<none>`.
fn format_labels(v: Option<&Value>) -> String {
    let Some(m) = v.and_then(Value::as_object).filter(|m| !m.is_empty()) else { return "<none>".into() };
    let mut pairs: Vec<String> = m.iter().map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or(""))).collect();
    pairs.sort();
    pairs.join(",")
}

/// At most three entries, then ` + N more...`, as the real printers shorten lists.
fn list_with_more(list: Vec<String>, count: usize, empty: &str) -> String {
    const MAX: usize = 3;
    let shown: Vec<String> = list.into_iter().take(MAX).collect();
    let ret = shown.join(",");
    if count > MAX {
        return format!("{ret} + {} more...", count - MAX);
    }
    if ret.is_empty() {
        empty.to_string()
    } else {
        ret
    }
}

fn service(o: &Value, now: i64) -> Vec<Value> {
    let typ = s(o, "/spec/type");
    let cluster_ip = arr(o, "/spec/clusterIPs").first().and_then(Value::as_str).map(str::to_string).unwrap_or_else(|| "<none>".into());
    let external: Vec<String> = arr(o, "/spec/externalIPs").iter().filter_map(Value::as_str).map(str::to_string).collect();
    let external_cell = match typ {
        "ClusterIP" | "NodePort" => or_none(&external.join(",")),
        "LoadBalancer" => {
            let mut ips: Vec<String> = arr(o, "/status/loadBalancer/ingress").iter().map(|g| if s(g, "/ip").is_empty() { s(g, "/hostname").to_string() } else { s(g, "/ip").to_string() }).collect();
            ips.extend(external);
            if ips.is_empty() { "<pending>".into() } else { ips.join(",") }
        }
        "ExternalName" => s(o, "/spec/externalName").to_string(),
        _ => "<unknown>".into(),
    };
    let ports: Vec<String> = arr(o, "/spec/ports")
        .iter()
        .map(|p| match p.get("nodePort").and_then(Value::as_i64) {
            Some(np) => format!("{}:{np}/{}", i(p, "/port"), s(p, "/protocol")),
            None => format!("{}/{}", i(p, "/port"), s(p, "/protocol")),
        })
        .collect();
    vec![name(o), json!(typ), json!(cluster_ip), json!(external_cell), json!(or_none(&ports.join(","))), age(o, now), json!(format_labels(o.pointer("/spec/selector")))]
}

fn endpoints(o: &Value) -> String {
    let mut list = Vec::new();
    let mut count = 0;
    for ss in arr(o, "/subsets") {
        let addrs = arr(ss, "/addresses");
        let ports = arr(ss, "/ports");
        if ports.is_empty() {
            count += addrs.len();
            list.extend(addrs.iter().map(|a| s(a, "/ip").to_string()));
            continue;
        }
        for p in ports {
            count += addrs.len();
            list.extend(addrs.iter().map(|a| format!("{}:{}", s(a, "/ip"), i(p, "/port"))));
        }
    }
    list_with_more(list, count, "<none>")
}

fn quota(o: &Value, now: i64) -> Vec<Value> {
    let mut names: Vec<&String> = o.pointer("/spec/hard").and_then(Value::as_object).map(|m| m.keys().collect()).unwrap_or_default();
    names.sort();
    let (mut req, mut lim) = (Vec::new(), Vec::new());
    for n in names {
        let q = |p: &str| o.pointer(p).and_then(|m| m.get(n.as_str())).and_then(Value::as_str);
        // Until a quota controller has copied the limits into status, the spec's stand in.
        let hard = q("/status/hard").or(q("/spec/hard")).unwrap_or("0");
        let cell = format!("{n}: {}/{hard}", q("/status/used").unwrap_or("0"));
        if n.starts_with("limits.") {
            lim.push(cell);
        } else {
            req.push(cell);
        }
    }
    vec![name(o), age(o, now), json!(req.join(", ")), json!(lim.join(", "))]
}

fn binding(o: &Value, now: i64) -> Vec<Value> {
    let (mut users, mut groups, mut sas) = (Vec::new(), Vec::new(), Vec::new());
    for sub in arr(o, "/subjects") {
        let n = s(sub, "/name").to_string();
        match s(sub, "/kind") {
            "User" => users.push(n),
            "Group" => groups.push(n),
            "ServiceAccount" => sas.push(format!("{}/{n}", s(sub, "/namespace"))),
            _ => {}
        }
    }
    let role = format!("{}/{}", s(o, "/roleRef/kind"), s(o, "/roleRef/name"));
    vec![name(o), json!(role), age(o, now), json!(users.join(", ")), json!(groups.join(", ")), json!(sas.join(", "))]
}

fn daemonset(o: &Value, now: i64) -> Vec<Value> {
    let (c, im) = containers_images(o, "/spec/template/spec/containers");
    vec![
        name(o),
        json!(i(o, "/status/desiredNumberScheduled")),
        json!(i(o, "/status/currentNumberScheduled")),
        json!(i(o, "/status/numberReady")),
        json!(i(o, "/status/updatedNumberScheduled")),
        json!(i(o, "/status/numberAvailable")),
        json!(format_labels(o.pointer("/spec/template/spec/nodeSelector"))),
        age(o, now),
        json!(c),
        json!(im),
        json!(label_selector_string(o.pointer("/spec/selector"))),
    ]
}

fn has_condition(o: &Value, t: &str) -> bool {
    arr(o, "/status/conditions").iter().any(|c| s(c, "/type") == t && s(c, "/status") == "True")
}

fn job(o: &Value, now: i64) -> Vec<Value> {
    let status = if has_condition(o, "Complete") {
        "Complete"
    } else if has_condition(o, "Failed") {
        "Failed"
    } else if o.pointer("/metadata/deletionTimestamp").is_some_and(|d| !d.is_null()) {
        "Terminating"
    } else if has_condition(o, "Suspended") {
        "Suspended"
    } else if has_condition(o, "FailureTarget") {
        "FailureTarget"
    } else {
        "Running"
    };
    let succeeded = i(o, "/status/succeeded");
    let completions = match (o.pointer("/spec/completions").and_then(Value::as_i64), o.pointer("/spec/parallelism").and_then(Value::as_i64)) {
        (Some(c), _) => format!("{succeeded}/{c}"),
        (None, Some(p)) if p > 1 => format!("{succeeded}/1 of {p}"),
        _ => format!("{succeeded}/1"),
    };
    let ts = |p: &str| o.pointer(p).and_then(Value::as_str).and_then(|t| t.parse::<jiff::Timestamp>().ok()).map(|t| t.as_second());
    let duration = match (ts("/status/startTime"), ts("/status/completionTime")) {
        (None, _) => String::new(),
        (Some(st), None) => human_duration(now - st),
        (Some(st), Some(done)) => human_duration(done - st),
    };
    let (c, im) = containers_images(o, "/spec/template/spec/containers");
    vec![name(o), json!(status), json!(completions), json!(duration), age(o, now), json!(c), json!(im), json!(label_selector_string(o.pointer("/spec/selector")))]
}

fn cronjob(o: &Value, now: i64) -> Vec<Value> {
    let (c, im) = containers_images(o, "/spec/jobTemplate/spec/template/spec/containers");
    let suspend = match o.pointer("/spec/suspend").and_then(Value::as_bool) {
        Some(true) => "True",
        Some(false) => "False",
        None => "<unset>",
    };
    let last = match o.pointer("/status/lastScheduleTime") {
        Some(t) if !t.is_null() => since(Some(t), now),
        _ => "<none>".into(),
    };
    let selector = match o.pointer("/spec/jobTemplate/spec/selector") {
        Some(sel) if !sel.is_null() => label_selector_string(Some(sel)),
        _ => "<none>".into(),
    };
    vec![
        name(o),
        json!(s(o, "/spec/schedule")),
        json!(or_none(s(o, "/spec/timeZone"))),
        json!(suspend),
        json!(arr(o, "/status/active").len()),
        json!(last),
        age(o, now),
        json!(c),
        json!(im),
        json!(selector),
    ]
}

fn slice(o: &Value, now: i64) -> Vec<Value> {
    let ports: Vec<String> = arr(o, "/ports")
        .iter()
        .map(|p| match (p.get("port").and_then(Value::as_i64), p.get("name").and_then(Value::as_str)) {
            (Some(n), _) => n.to_string(),
            (None, Some(nm)) => nm.to_string(),
            _ => "*".into(),
        })
        .collect();
    let pc = ports.len();
    let addrs: Vec<String> = arr(o, "/endpoints").iter().flat_map(|e| arr(e, "/addresses").iter().filter_map(Value::as_str).map(str::to_string)).collect();
    let ac = addrs.len();
    vec![name(o), json!(s(o, "/addressType")), json!(list_with_more(ports, pc, "<unset>")), json!(list_with_more(addrs, ac, "<unset>")), age(o, now)]
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_795_000_000;

    fn cells(kind: &str, o: Value) -> Vec<Value> {
        let p = printer(kind).unwrap();
        let c = (p.cells)(&o, NOW);
        assert_eq!(c.len(), p.columns.len(), "{kind}: one cell per column");
        c
    }

    #[test]
    fn services() {
        let svc = json!({"metadata":{"name":"web"},"spec":{"type":"ClusterIP","clusterIP":"10.96.0.7","clusterIPs":["10.96.0.7"],"ports":[{"port":80,"protocol":"TCP"}],"selector":{"b":"2","a":"1"}}});
        assert_eq!(cells("Service", svc), vec![json!("web"), json!("ClusterIP"), json!("10.96.0.7"), json!("<none>"), json!("80/TCP"), json!("<unknown>"), json!("a=1,b=2")]);
        let np = json!({"metadata":{"name":"np"},"spec":{"type":"NodePort","clusterIPs":["10.96.0.8"],"ports":[{"port":80,"nodePort":30080,"protocol":"TCP"}]}});
        assert_eq!(cells("Service", np)[4], json!("80:30080/TCP"));
        let lb = json!({"metadata":{"name":"lb"},"spec":{"type":"LoadBalancer","clusterIPs":["10.96.0.9"],"ports":[]}});
        let c = cells("Service", lb);
        assert_eq!((c[3].clone(), c[4].clone(), c[6].clone()), (json!("<pending>"), json!("<none>"), json!("<none>")));
    }

    #[test]
    fn endpoints_and_slices() {
        let ep = json!({"metadata":{"name":"web"},"subsets":[{"addresses":[{"ip":"10.0.0.1"},{"ip":"10.0.0.2"}],"ports":[{"port":80},{"port":81}]}]});
        assert_eq!(cells("Endpoints", ep)[1], json!("10.0.0.1:80,10.0.0.2:80,10.0.0.1:81 + 1 more..."));
        assert_eq!(cells("Endpoints", json!({"metadata":{"name":"e"}}))[1], json!("<none>"));
        let sl = json!({"metadata":{"name":"web-abc"},"addressType":"IPv4","ports":[{"port":80}],"endpoints":[{"addresses":["10.0.0.1"]}]});
        assert_eq!(cells("EndpointSlice", sl)[1..4], [json!("IPv4"), json!("80"), json!("10.0.0.1")]);
    }

    #[test]
    fn batch() {
        let j = json!({"metadata":{"name":"pi"},"spec":{"completions":1,"parallelism":1,"selector":{"matchLabels":{"batch.kubernetes.io/controller-uid":"u"}},
            "template":{"spec":{"containers":[{"name":"pi","image":"perl"}]}}},"status":{"succeeded":1,"startTime":"2026-11-18T08:00:00Z","completionTime":"2026-11-18T08:00:30Z",
            "conditions":[{"type":"Complete","status":"True"}]}});
        let c = cells("Job", j);
        assert_eq!(c[1..4], [json!("Complete"), json!("1/1"), json!("30s")]);
        assert_eq!(c[7], json!("batch.kubernetes.io/controller-uid=u"));
        let running = json!({"metadata":{"name":"r"},"spec":{"parallelism":3},"status":{}});
        assert_eq!(cells("Job", running)[1..4], [json!("Running"), json!("0/1 of 3"), json!("")]);
        let cj = json!({"metadata":{"name":"tick"},"spec":{"schedule":"*/1 * * * *","suspend":false,"jobTemplate":{"spec":{"template":{"spec":{"containers":[{"name":"c","image":"busybox"}]}}}}}});
        assert_eq!(cells("CronJob", cj)[1..6], [json!("*/1 * * * *"), json!("<none>"), json!("False"), json!(0), json!("<none>")]);
    }

    #[test]
    fn rbac_quota_and_others() {
        let rb = json!({"metadata":{"name":"b"},"roleRef":{"kind":"ClusterRole","name":"view"},"subjects":[{"kind":"User","name":"alice"},{"kind":"Group","name":"devs"},{"kind":"ServiceAccount","name":"bot","namespace":"x"}]});
        assert_eq!(cells("RoleBinding", rb)[1..], [json!("ClusterRole/view"), json!("<unknown>"), json!("alice"), json!("devs"), json!("x/bot")]);
        let r = json!({"metadata":{"name":"reader","creationTimestamp":"2026-11-18T08:00:00Z"}});
        assert_eq!(cells("Role", r), vec![json!("reader"), json!("2026-11-18T08:00:00Z")]);
        let q = json!({"metadata":{"name":"q"},"spec":{"hard":{"pods":"10","limits.cpu":"2","cpu":"1"}},"status":{"hard":{"pods":"10","limits.cpu":"2","cpu":"1"},"used":{"pods":"3"}}});
        assert_eq!(cells("ResourceQuota", q)[2..], [json!("cpu: 0/1, pods: 3/10"), json!("limits.cpu: 0/2")]);
        let fresh = json!({"metadata":{"name":"q"},"spec":{"hard":{"pods":"10"}}});
        assert_eq!(cells("ResourceQuota", fresh)[2], json!("pods: 0/10"));
        let cm = json!({"metadata":{"name":"c"},"data":{"a":"1","b":"2"},"binaryData":{"c":"AA=="}});
        assert_eq!(cells("ConfigMap", cm)[1], json!(3));
        let pdb = json!({"metadata":{"name":"p"},"spec":{"minAvailable":"50%"}});
        assert_eq!(cells("PodDisruptionBudget", pdb)[1..4], [json!("50%"), json!("N/A"), json!(0)]);
        let ds = json!({"metadata":{"name":"d"},"spec":{"selector":{"matchLabels":{"app":"d"}},"template":{"spec":{"nodeSelector":{"kubernetes.io/os":"linux"},"containers":[]}}},"status":{"desiredNumberScheduled":2}});
        assert_eq!(cells("DaemonSet", ds)[6], json!("kubernetes.io/os=linux"));
        assert!(printer("Pod").is_none());
    }
}
