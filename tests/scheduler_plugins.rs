//! The scheduler's plugins on a real two-node cluster, driven by kubectl: required pod
//! anti-affinity puts one replica per node and leaves a third Pending with kube's exact
//! FailedScheduling message; topology spread keeps the skew; nodeSelector, node affinity
//! and taints steer pods; a gated pod waits as SchedulingGated; and a high-priority pod
//! preempts a low-priority one when both nodes are full.

mod common;

use common::cluster::Cluster;
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);

fn pods(c: &Cluster, ns: &str, selector: &str) -> Vec<Value> {
    let out = c.ok(&["get", "pods", "-n", ns, "-l", selector, "-o", "json"]);
    let v: Value = serde_json::from_str(&out).expect("pod list json");
    v["items"].as_array().cloned().unwrap_or_default()
}

fn node_of(p: &Value) -> Option<String> {
    p.pointer("/spec/nodeName").and_then(Value::as_str).map(str::to_string)
}

fn live(p: &Value) -> bool {
    p.pointer("/metadata/deletionTimestamp").is_none_or(Value::is_null)
}

fn scheduled_message(p: &Value) -> Option<String> {
    let conds = p.pointer("/status/conditions")?.as_array()?;
    conds.iter().find(|c| c["type"] == "PodScheduled" && c["status"] == "False").and_then(|c| c["message"].as_str()).map(str::to_string)
}

/// Live pods per node for a selector, and the messages of those still unscheduled.
fn placement(c: &Cluster, ns: &str, selector: &str) -> (BTreeMap<String, usize>, Vec<String>) {
    let mut per = BTreeMap::new();
    let mut pending = Vec::new();
    for p in pods(c, ns, selector).iter().filter(|p| live(p)) {
        match node_of(p) {
            Some(n) => *per.entry(n).or_default() += 1,
            None => pending.push(scheduled_message(p).unwrap_or_default()),
        }
    }
    (per, pending)
}

fn deployment(name: &str, ns: &str, replicas: u32, spec_extra: &str, cpu: &str) -> String {
    format!(
        r#"
apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}, namespace: {ns}}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      terminationGracePeriodSeconds: 1
{spec_extra}
      containers:
      - name: main
        image: busybox
        command: ["sleep", "3600"]
        resources: {{requests: {{cpu: {cpu}}}}}
"#
    )
}

fn pod(name: &str, ns: &str, spec_extra: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: {ns}}}
spec:
  terminationGracePeriodSeconds: 1
{spec_extra}
  containers:
  - name: main
    image: busybox
    command: ["sleep", "3600"]
"#
    )
}

fn apply(c: &Cluster, yaml: &str) {
    let o = c.kubectl_stdin(&["apply", "-f", "-"], Some(yaml));
    assert!(o.ok, "apply failed: {}\n{yaml}", o.stderr);
}

fn delete_and_wait(c: &Cluster, ns: &str, what: &[&str], selector: &str) {
    let mut args = vec!["delete", "-n", ns];
    args.extend_from_slice(what);
    c.ok(&args);
    c.eventually(WAIT, "pods gone", || {
        let left = pods(c, ns, selector).len();
        if left == 0 { Ok(()) } else { Err(format!("{left} left")) }
    });
}

fn pod_node(c: &Cluster, ns: &str, name: &str) -> Result<String, String> {
    let out = c.kubectl(&["get", "pod", "-n", ns, name, "-o", "json"]);
    let v: Value = serde_json::from_str(&out.stdout).map_err(|e| format!("{e}: {}", out.stderr))?;
    node_of(&v).ok_or_else(|| scheduled_message(&v).unwrap_or_else(|| "unscheduled".into()))
}

fn pending_message(c: &Cluster, ns: &str, name: &str) -> Result<String, String> {
    let out = c.kubectl(&["get", "pod", "-n", ns, name, "-o", "json"]);
    let v: Value = serde_json::from_str(&out.stdout).map_err(|e| format!("{e}: {}", out.stderr))?;
    match (node_of(&v), scheduled_message(&v)) {
        (None, Some(m)) => Ok(m),
        (n, _) => Err(format!("bound to {n:?} or no message yet")),
    }
}

fn anti_affinity_and_its_message(c: &Cluster) {
    let anti = r#"      affinity:
        podAntiAffinity:
          requiredDuringSchedulingIgnoredDuringExecution:
          - labelSelector: {matchLabels: {app: web}}
            topologyKey: kubernetes.io/hostname"#;
    apply(c, &deployment("web", "plugins", 2, anti, "10m"));
    c.eventually(WAIT, "one web replica per node", || {
        let (per, pending) = placement(c, "plugins", "app=web");
        if per.len() == 2 && per.values().all(|n| *n == 1) && pending.is_empty() { Ok(()) } else { Err(format!("{per:?} {pending:?}")) }
    });
    c.ok(&["scale", "deployment", "web", "-n", "plugins", "--replicas=3"]);
    let want = "0/2 nodes are available: 2 node(s) didn't match pod anti-affinity rules. preemption: 0/2 nodes are available: 2 No preemption victims found for incoming pod.";
    c.eventually(WAIT, "the third replica pending with kube's message", || {
        let (per, pending) = placement(c, "plugins", "app=web");
        if per.values().sum::<usize>() == 2 && pending == vec![want.to_string()] { Ok(()) } else { Err(format!("{per:?} {pending:?}")) }
    });
    c.eventually(WAIT, "the FailedScheduling event", || {
        let ev = c.ok(&["get", "events", "-n", "plugins", "-o", "jsonpath={range .items[?(@.reason==\"FailedScheduling\")]}{.type}|{.message}{\"\\n\"}{end}"]);
        if ev.lines().any(|l| l == format!("Warning|{want}")) { Ok(()) } else { Err(ev) }
    });
    delete_and_wait(c, "plugins", &["deployment", "web"], "app=web");
}

fn topology_spread(c: &Cluster) {
    let spread = r#"      topologySpreadConstraints:
      - maxSkew: 1
        topologyKey: kubernetes.io/hostname
        whenUnsatisfiable: DoNotSchedule
        labelSelector: {matchLabels: {app: spread}}
      nodeSelector: {kubernetes.io/os: linux}"#;
    apply(c, &deployment("spread", "plugins", 5, spread, "10m"));
    c.eventually(WAIT, "five replicas spread 3/2", || {
        let (per, pending) = placement(c, "plugins", "app=spread");
        let mut counts: Vec<usize> = per.values().copied().collect();
        counts.sort();
        if counts == vec![2, 3] && pending.is_empty() { Ok(()) } else { Err(format!("{per:?} {pending:?}")) }
    });
    delete_and_wait(c, "plugins", &["deployment", "spread"], "app=spread");
}

fn selectors_affinity_and_taints(c: &Cluster) {
    c.ok(&["label", "node", "node-2", "disk=ssd"]);
    apply(c, &pod("on-ssd", "plugins", "  nodeSelector: {disk: ssd}"));
    c.eventually(WAIT, "nodeSelector picks node-2", || pod_node(c, "plugins", "on-ssd").and_then(|n| if n == "node-2" { Ok(()) } else { Err(n) }));
    apply(c, &pod("on-nvme", "plugins", "  nodeSelector: {disk: nvme}"));
    let want = "0/2 nodes are available: 2 node(s) didn't match Pod's node affinity/selector. preemption: 0/2 nodes are available: 2 Preemption is not helpful for scheduling.";
    c.eventually(WAIT, "no node has nvme", || pending_message(c, "plugins", "on-nvme").and_then(|m| if m == want { Ok(()) } else { Err(m) }));
    let not_ssd = r#"  affinity:
    nodeAffinity:
      requiredDuringSchedulingIgnoredDuringExecution:
        nodeSelectorTerms:
        - matchExpressions: [{key: disk, operator: NotIn, values: [ssd]}]"#;
    apply(c, &pod("not-ssd", "plugins", not_ssd));
    c.eventually(WAIT, "node affinity NotIn picks node-1", || pod_node(c, "plugins", "not-ssd").and_then(|n| if n == "node-1" { Ok(()) } else { Err(n) }));

    c.ok(&["taint", "nodes", "node-1", "dedicated=db:NoSchedule"]);
    apply(c, &pod("wants-node-1", "plugins", "  nodeSelector: {kubernetes.io/hostname: node-1}"));
    let want = "0/2 nodes are available: 1 node(s) didn't match Pod's node affinity/selector, 1 node(s) had untolerated taint {dedicated: db}. preemption: 0/2 nodes are available: 2 Preemption is not helpful for scheduling.";
    c.eventually(WAIT, "the taint keeps it off node-1", || pending_message(c, "plugins", "wants-node-1").and_then(|m| if m == want { Ok(()) } else { Err(m) }));
    let tolerant = "  nodeSelector: {kubernetes.io/hostname: node-1}\n  tolerations: [{key: dedicated, operator: Equal, value: db, effect: NoSchedule}]";
    apply(c, &pod("tolerant", "plugins", tolerant));
    c.eventually(WAIT, "a tolerating pod goes to node-1", || pod_node(c, "plugins", "tolerant").and_then(|n| if n == "node-1" { Ok(()) } else { Err(n) }));
    // Removing the taint is a node change: the waiting pod is retried and placed.
    c.ok(&["taint", "nodes", "node-1", "dedicated=db:NoSchedule-"]);
    c.eventually(WAIT, "untainted, the waiting pod lands", || pod_node(c, "plugins", "wants-node-1").and_then(|n| if n == "node-1" { Ok(()) } else { Err(n) }));
    c.ok(&["label", "node", "node-2", "disk-"]);
    c.ok(&["delete", "pod", "-n", "plugins", "on-ssd", "on-nvme", "not-ssd", "wants-node-1", "tolerant"]);
}

fn scheduling_gates(c: &Cluster) {
    apply(c, &pod("gated", "plugins", "  schedulingGates: [{name: example.com/quota}]"));
    c.eventually(WAIT, "kubectl shows SchedulingGated", || {
        let row = c.ok(&["get", "pod", "gated", "-n", "plugins", "--no-headers"]);
        if row.split_whitespace().nth(2) == Some("SchedulingGated") { Ok(()) } else { Err(row) }
    });
    std::thread::sleep(Duration::from_secs(2));
    assert!(pod_node(c, "plugins", "gated").is_err(), "a gated pod is not scheduled");
    c.ok(&["patch", "pod", "gated", "-n", "plugins", "--type=json", "-p", r#"[{"op":"remove","path":"/spec/schedulingGates"}]"#]);
    c.eventually(WAIT, "ungated, it is scheduled", || pod_node(c, "plugins", "gated"));
    c.ok(&["delete", "pod", "gated", "-n", "plugins"]);
}

fn preemption(c: &Cluster) {
    let classes = r#"
apiVersion: scheduling.k8s.io/v1
kind: PriorityClass
metadata: {name: low}
value: 10
---
apiVersion: scheduling.k8s.io/v1
kind: PriorityClass
metadata: {name: high}
value: 1000
"#;
    apply(c, classes);
    let unknown = c.kubectl_stdin(&["apply", "-f", "-"], Some(&pod("nobody", "plugins", "  priorityClassName: nope")));
    assert!(!unknown.ok && unknown.stderr.contains("no PriorityClass with name nope was found"), "{}", unknown.stderr);
    // Each node has 2 cpu: one 1500m replica per node leaves no room for a 1 cpu pod.
    apply(c, &deployment("low", "plugins", 2, "      priorityClassName: low", "1500m"));
    c.eventually(WAIT, "one low replica per node", || {
        let (per, pending) = placement(c, "plugins", "app=low");
        if per.len() == 2 && pending.is_empty() { Ok(()) } else { Err(format!("{per:?} {pending:?}")) }
    });
    let high = "  priorityClassName: high\n  containers:\n  - {name: main, image: busybox, command: [sleep, '3600'], resources: {requests: {cpu: '1'}}}";
    let yaml = format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: vip, namespace: plugins}}\nspec:\n  terminationGracePeriodSeconds: 1\n{high}\n");
    apply(c, &yaml);
    let node = c.eventually(Duration::from_secs(90), "the high-priority pod runs after preempting", || pod_node(c, "plugins", "vip"));
    let uid = c.ok(&["get", "pod", "vip", "-n", "plugins", "-o", "jsonpath={.metadata.uid}"]);
    let want = format!("Preempted by pod {uid} on node {node}");
    c.eventually(WAIT, "a Preempted event on the victim", || {
        let ev = c.ok(&["get", "events", "-n", "plugins", "-o", "jsonpath={range .items[?(@.reason==\"Preempted\")]}{.involvedObject.name}|{.message}{\"\\n\"}{end}"]);
        if ev.lines().any(|l| l.starts_with("low-") && l.ends_with(&want)) { Ok(()) } else { Err(ev) }
    });
    // The victim's replacement cannot preempt its equal: it waits with kube's words.
    let want = "0/2 nodes are available: 2 Insufficient cpu. preemption: 0/2 nodes are available: 2 No preemption victims found for incoming pod.";
    c.eventually(WAIT, "the replacement waits", || {
        let (per, pending) = placement(c, "plugins", "app=low");
        if per.values().sum::<usize>() == 1 && pending == vec![want.to_string()] { Ok(()) } else { Err(format!("{per:?} {pending:?}")) }
    });
    c.ok(&["delete", "pod", "vip", "-n", "plugins"]);
    delete_and_wait(c, "plugins", &["deployment", "low"], "app=low");
}

#[test]
fn plugins_place_pods_as_kube_scheduler_does() {
    let dir = tempfile::tempdir().unwrap();
    let c = Cluster::up_with(dir.path(), 2, &["--node-cpu-millis", "2000", "--node-memory-bytes", "8589934592"]);
    c.ok(&["create", "namespace", "plugins"]);
    anti_affinity_and_its_message(&c);
    topology_spread(&c);
    selectors_affinity_and_taints(&c);
    scheduling_gates(&c);
    preemption(&c);
}
