//! DaemonSets: one pod on every node, a node that joins later gets its own, and a
//! template change (`kubectl set image`) replaces them all, node by node, with
//! `kubectl rollout status` waiting until it has.

mod common;

use common::cluster::{pod_pids, Cluster};
use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::Duration;

const DS: &str = r#"
apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: agent
spec:
  selector:
    matchLabels: {app: agent}
  template:
    metadata:
      labels: {app: agent}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: main
        image: busybox
        command: ["sleep", "3600"]
"#;

/// node → [(pod, image)] of the agent's live, Running pods.
fn running_by_node(c: &Cluster) -> BTreeMap<String, Vec<(String, String)>> {
    let out = c.ok(&["get", "pods", "-l", "app=agent", "-o", "jsonpath={range .items[*]}{.metadata.name} {.spec.nodeName} {.spec.containers[0].image} {.status.phase} {.metadata.deletionTimestamp}{\"\\n\"}{end}"]);
    let mut m: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    for l in out.lines() {
        let f: Vec<&str> = l.split(' ').collect();
        if f.len() >= 4 && f[3] == "Running" && f.get(4).is_none_or(|d| d.is_empty()) {
            m.entry(f[1].to_string()).or_default().push((f[0].to_string(), f[2].to_string()));
        }
    }
    m
}

/// Every one of `nodes` runs exactly one agent pod of `image`, and no other node runs one.
fn one_per_node(c: &Cluster, nodes: &[&str], image: &str) -> Result<(), String> {
    let m = running_by_node(c);
    let ok = m.len() == nodes.len() && nodes.iter().all(|n| m.get(*n).is_some_and(|ps| ps.len() == 1 && ps[0].1 == image));
    if ok { Ok(()) } else { Err(format!("{m:?}")) }
}

#[test]
fn a_daemon_runs_on_every_node_including_a_new_one_and_rolls_out_a_new_image() {
    let dir = tempfile::tempdir().unwrap();
    let c = Cluster::up(&dir.path().join("c"), 2);
    let o = c.kubectl_stdin(&["apply", "-f", "-"], Some(DS));
    assert!(o.ok, "{}", o.stderr);
    c.eventually(Duration::from_secs(60), "one agent pod on each node", || one_per_node(&c, &["node-1", "node-2"], "busybox"));
    let wide = c.ok(&["get", "pods", "-o", "wide"]);
    assert!(wide.contains("node-1") && wide.contains("node-2"), "{wide}");
    c.eventually(Duration::from_secs(30), "the DaemonSet's status", || {
        let s = c.ok(&["get", "ds", "agent", "-o", "jsonpath={.status.desiredNumberScheduled} {.status.numberReady} {.status.numberAvailable}"]);
        if s == "2 2 2" { Ok(()) } else { Err(s) }
    });
    let table = c.ok(&["get", "ds", "agent"]);
    assert!(table.starts_with("NAME") && table.contains("DESIRED") && table.contains("UP-TO-DATE"), "{table}");

    // A third node joins the same cluster: it gets its own daemon.
    let log = std::fs::File::create(dir.path().join("node-3.log")).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_flotilla"))
        .args(["node", "--nats-url", &c.nats_url(), "--name", "node-3", "--runtime", "process", "--data-dir"])
        .arg(dir.path().join("extra"))
        .env("FLOTILLA_NATS_CREDS", c.admin_creds())
        .env("RUST_LOG", "info,async_nats=warn")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("starting flotilla node");
    let extra = common::process::TermOnDrop(child);
    c.eventually(Duration::from_secs(90), "an agent pod on the new node too", || one_per_node(&c, &["node-1", "node-2", "node-3"], "busybox"));

    // A new image: every node's pod is replaced, and rollout status says when.
    c.ok(&["set", "image", "ds/agent", "main=busybox:v2"]);
    let o = c.kubectl(&["rollout", "status", "ds/agent", "--timeout=150s"]);
    assert!(o.ok, "rollout status failed:\n{}\n{}\n{}", o.stdout, o.stderr, c.log_tail());
    assert!(o.stdout.contains("successfully rolled out"), "{}", o.stdout);
    c.eventually(Duration::from_secs(30), "every node runs the new image", || one_per_node(&c, &["node-1", "node-2", "node-3"], "busybox:v2"));
    let revisions = c.ok(&["get", "controllerrevisions", "-o", "jsonpath={range .items[*]}{.revision}{\"\\n\"}{end}"]);
    assert_eq!(revisions.lines().count(), 2, "one revision per template: {revisions}");

    // The extra node's pods are host processes of its agent: stop it, then make sure
    // none of its pods' processes outlive it.
    let on_extra: Vec<String> = running_by_node(&c).remove("node-3").unwrap_or_default().into_iter().map(|(p, _)| p).collect();
    drop(extra);
    for p in on_extra {
        for pid in pod_pids(&p) {
            // SAFETY: a process of a pod this test made, by PID.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}
