//! A node agent that dies: `flotilla up --nodes 1` plus a second agent as its own
//! `flotilla node` process, which runs a Deployment's pods and is then SIGKILLed. The
//! node lifecycle controller marks the node Unknown and taints it unreachable, taint
//! eviction deletes its pods once their (shortened) default toleration is over, the
//! ReplicaSet replaces them on the healthy node, and pod GC removes the old ones that no
//! agent will ever finish off. When the agent comes back, so does Ready, and the taints go.

mod common;

use common::cluster::{pod_pids, Cluster};
use serde_json::Value;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const DEPLOY: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: app, namespace: default}
spec:
  replicas: 2
  selector: {matchLabels: {app: app}}
  template:
    metadata: {labels: {app: app}}
    spec:
      terminationGracePeriodSeconds: 1
      affinity:
        nodeAffinity:
          preferredDuringSchedulingIgnoredDuringExecution:
          - weight: 100
            preference:
              matchExpressions: [{key: kubernetes.io/hostname, operator: In, values: [far]}]
      containers:
      - name: main
        image: busybox
        command: ["sleep", "3600"]
"#;

/// The second node agent; SIGKILLed by the test, and on drop if it is still there.
struct Agent(Option<Child>);

impl Agent {
    fn kill(&mut self) {
        if let Some(mut c) = self.0.take() {
            // SAFETY: signalling a child this test started, by PID.
            unsafe { libc::kill(c.id() as i32, libc::SIGKILL) };
            let _ = c.wait();
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill();
    }
}

fn start_agent(dir: &std::path::Path, url: &str, creds: &std::path::Path) -> Agent {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("far.log")).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_flotilla"))
        .args(["node", "--name", "far", "--nats-url", url, "--runtime", "process", "--data-dir"])
        .arg(dir.join("far-node"))
        .env("FLOTILLA_NATS_CREDS", creds)
        .env("RUST_LOG", "info,async_nats=warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("starting flotilla node");
    Agent(Some(child))
}

fn wait_ready(c: &Cluster) {
    c.eventually(Duration::from_secs(60), "node far Ready", || {
        let s = c.kubectl(&["get", "node", "far", "-o", "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}"]);
        if s.stdout == "True" { Ok(()) } else { Err(format!("{} {}", s.stdout, s.stderr)) }
    });
}

fn pods(c: &Cluster) -> Vec<Value> {
    let v: Value = serde_json::from_str(&c.ok(&["get", "pods", "-l", "app=app", "-o", "json"])).expect("json");
    v["items"].as_array().cloned().unwrap_or_default()
}

fn field(p: &Value, ptr: &str) -> String {
    p.pointer(ptr).and_then(Value::as_str).unwrap_or("").to_string()
}

fn running_on(c: &Cluster, node: &str) -> Vec<String> {
    pods(c).iter().filter(|p| field(p, "/spec/nodeName") == node && field(p, "/status/phase") == "Running" && p.pointer("/metadata/deletionTimestamp").is_none_or(Value::is_null)).map(|p| field(p, "/metadata/name")).collect()
}

#[test]
fn a_dead_node_goes_unknown_and_its_pods_move() {
    let dir = tempfile::tempdir().unwrap();
    let c = Cluster::up_with(dir.path(), 1, &["--default-not-ready-toleration-seconds", "5", "--default-unreachable-toleration-seconds", "5"]);
    let url = c.nats_url();
    let mut agent = start_agent(dir.path(), &url, &c.admin_creds());
    wait_ready(&c);

    let o = c.kubectl_stdin(&["apply", "-f", "-"], Some(DEPLOY));
    assert!(o.ok, "{}", o.stderr);
    let old = c.eventually(Duration::from_secs(60), "both replicas running on far", || {
        let r = running_on(&c, "far");
        if r.len() == 2 { Ok(r) } else { Err(format!("{r:?}")) }
    });
    // The host processes the agent started; nobody stops them once it is SIGKILLed.
    let leftovers: Vec<i32> = old.iter().flat_map(|p| pod_pids(p)).collect();
    assert!(!leftovers.is_empty(), "the pods' processes are found");
    let tolerations = c.ok(&["get", "pod", &old[0], "-o", "jsonpath={.spec.tolerations[*].tolerationSeconds}"]);
    assert_eq!(tolerations, "5 5", "the gateway flags set the default tolerations");

    agent.kill();
    for pid in &leftovers {
        // SAFETY: the dead agent's pod processes, found by their pod's HOSTNAME, by PID.
        unsafe { libc::kill(*pid, libc::SIGKILL) };
    }
    c.eventually(Duration::from_secs(50), "far goes Unknown", || {
        let s = c.kubectl(&["get", "node", "far", "-o", "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}/{.status.conditions[?(@.type==\"Ready\")].reason}"]);
        if s.stdout == "Unknown/NodeStatusUnknown" { Ok(()) } else { Err(s.stdout) }
    });
    let taints = c.ok(&["get", "node", "far", "-o", "jsonpath={range .spec.taints[*]}{.key}:{.effect} {end}"]);
    assert!(taints.contains("node.kubernetes.io/unreachable:NoSchedule") && taints.contains("node.kubernetes.io/unreachable:NoExecute"), "{taints}");
    let ready_col = c.ok(&["get", "node", "far", "--no-headers"]);
    assert_eq!(ready_col.split_whitespace().nth(1), Some("NotReady"), "{ready_col}");

    c.eventually(Duration::from_secs(60), "two replacements running on node-1", || {
        let r = running_on(&c, "node-1");
        if r.len() == 2 && r.iter().all(|n| !old.contains(n)) { Ok(()) } else { Err(format!("{r:?}")) }
    });
    c.eventually(Duration::from_secs(60), "the old pods are gone (pod GC)", || {
        let names: Vec<String> = pods(&c).iter().map(|p| field(p, "/metadata/name")).collect();
        if old.iter().all(|o| !names.contains(o)) { Ok(()) } else { Err(format!("{names:?}")) }
    });
    let events = c.ok(&["get", "events", "-A", "-o", "jsonpath={range .items[*]}{.reason}|{.message}{\"\\n\"}{end}"]);
    assert!(events.lines().any(|l| l == "RegisteredNode|Node far event: Registered Node far in Controller"), "{events}");
    assert!(events.lines().any(|l| l == "NodeNotReady|Node far status is now: NodeNotReady"), "{events}");
    assert!(events.lines().any(|l| l.starts_with("TaintManagerEviction|Marking for deletion Pod default/app-")), "{events}");

    // The agent comes back: Ready again, and the unreachable taints go.
    let _back = start_agent(dir.path(), &url, &c.admin_creds());
    wait_ready(&c);
    c.eventually(Duration::from_secs(30), "the unreachable taints removed", || {
        let t = c.ok(&["get", "node", "far", "-o", "jsonpath={.spec.taints}"]);
        if t.contains("unreachable") { Err(t) } else { Ok(()) }
    });

}
