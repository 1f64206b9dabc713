//! Hollow nodes at a modest scale, through the real gateway, controllers and scheduler:
//! `flotilla hollow-nodes --count 200` registers 200 Ready nodes in one process, four
//! Deployments of 500 replicas are spread over them, and every pod ends bound to one
//! hollow node and Running, each ReplicaSet has exactly its replicas, no node is over its
//! maxPods or its allocatable CPU, and the control plane goes quiet afterwards.

mod common;

use common::cluster::Cluster;
use std::collections::{BTreeMap, BTreeSet};
use std::process::{Command, Stdio};
use std::time::Duration;

const NODES: u32 = 200;
const MAX_PODS: usize = 12;
const DEPLOYMENTS: usize = 4;
const REPLICAS: usize = 500;

fn deployment(name: &str) -> String {
    format!(
        r#"
apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}}}
spec:
  replicas: {REPLICAS}
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      containers:
      - name: c
        image: busybox
        resources: {{requests: {{cpu: 300m, memory: 64Mi}}}}
"#
    )
}

#[test]
fn two_thousand_pods_on_two_hundred_hollow_nodes() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("c");
    let mut c = Cluster::up_with(&data, 0, &[]);
    let log = tmp.path().join("hollow.log");
    let logf = std::fs::File::create(&log).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_flotilla"))
        .args(["hollow-nodes", "--nats-url", &c.nats_url(), "--count", &NODES.to_string(), "--pods-per-node", &MAX_PODS.to_string(), "--cpu", "4", "--memory", "16Gi"])
        .env("FLOTILLA_NATS_CREDS", c.admin_creds())
        .env("RUST_LOG", "info,async_nats=warn")
        .stdin(Stdio::null())
        .stdout(logf.try_clone().unwrap())
        .stderr(logf)
        .spawn()
        .expect("starting flotilla hollow-nodes");
    let hollow = common::process::TermOnDrop(child);
    let hollow_log = || std::fs::read_to_string(&log).unwrap_or_default();

    c.eventually(Duration::from_secs(120), "200 hollow nodes Ready", || {
        let out = c.ok(&["get", "nodes", "-l", "type=hollow", "-o", "jsonpath={range .items[*]}{.status.conditions[?(@.type==\"Ready\")].status}{\"\\n\"}{end}"]);
        let ready = out.lines().filter(|l| *l == "True").count();
        if ready == NODES as usize { Ok(()) } else { Err(format!("{ready} Ready\n{}", hollow_log())) }
    });
    let nodes = c.ok(&["get", "nodes", "--no-headers"]);
    assert!(nodes.lines().any(|l| l.starts_with("hollow-0 ") && l.contains(" Ready ")), "{nodes}");
    let capacity = c.ok(&["get", "node", "hollow-7", "-o", "jsonpath={.status.capacity.cpu} {.status.capacity.memory} {.status.capacity.pods} {.status.nodeInfo.containerRuntimeVersion}"]);
    assert_eq!(capacity, format!("4000m 16777216Ki {MAX_PODS} simulated://0.1"));

    for i in 0..DEPLOYMENTS {
        let o = c.kubectl_stdin(&["apply", "-f", "-"], Some(&deployment(&format!("d{i}"))));
        assert!(o.ok, "{}", o.stderr);
    }
    let total = DEPLOYMENTS * REPLICAS;
    let rows = c.eventually(Duration::from_secs(600), "every pod Running", || {
        let out = c.ok(&["get", "pods", "-o", "jsonpath={range .items[*]}{.metadata.name} {.spec.nodeName} {.status.phase} {.metadata.ownerReferences[0].name} {.spec.containers[0].resources.requests.cpu}{\"\\n\"}{end}"]);
        let rows: Vec<Vec<String>> = out.lines().map(|l| l.split(' ').map(String::from).collect()).collect();
        let running = rows.iter().filter(|r| r.get(2).map(String::as_str) == Some("Running")).count();
        if rows.len() == total && running == total { Ok(rows) } else { Err(format!("{} pods, {running} Running", rows.len())) }
    });

    // Every pod on exactly one hollow node, none twice.
    let names: BTreeSet<&str> = rows.iter().map(|r| r[0].as_str()).collect();
    assert_eq!(names.len(), total);
    let mut per_node: BTreeMap<&str, usize> = BTreeMap::new();
    let mut per_rs: BTreeMap<&str, usize> = BTreeMap::new();
    for r in &rows {
        assert!(r[1].starts_with("hollow-"), "bound to a hollow node: {r:?}");
        *per_node.entry(r[1].as_str()).or_default() += 1;
        *per_rs.entry(r[3].as_str()).or_default() += 1;
        assert_eq!(r[4], "300m");
    }
    // maxPods and allocatable CPU (4 cores / 300m = 13 pods) hold on every node.
    let fullest = per_node.values().max().copied().unwrap_or(0);
    assert!(fullest <= MAX_PODS && fullest * 300 <= 4000, "a node over its limits: {fullest} pods");
    // Exactly `replicas` pods per ReplicaSet, and its status says so.
    assert_eq!(per_rs.len(), DEPLOYMENTS, "{per_rs:?}");
    assert!(per_rs.values().all(|n| *n == REPLICAS), "{per_rs:?}");
    c.eventually(Duration::from_secs(60), "every ReplicaSet's status", || {
        let out = c.ok(&["get", "rs", "-o", "jsonpath={range .items[*]}{.status.replicas}/{.status.readyReplicas} {end}"]);
        let want = vec![format!("{REPLICAS}/{REPLICAS}"); DEPLOYMENTS].join(" ");
        if out.trim() == want { Ok(()) } else { Err(out) }
    });

    // Then nothing moves: the controllers and the scheduler handle nothing while nothing
    // changes (the hollow nodes' heartbeats write only what changed).
    let counts = |c: &Cluster| -> Vec<String> {
        let text = c.ok(&["get", "--raw", "/metrics"]);
        // The state group answers the nodes' Lease renewals, which go on while idle.
        text.lines().filter(|l| l.starts_with("flotilla_actor_messages_total{") && !l.contains("actor=\"gateway\"") && !l.contains("actor=\"state\"")).map(String::from).collect()
    };
    c.eventually(Duration::from_secs(90), "a quiet 10 s window", || {
        let before = counts(&c);
        std::thread::sleep(Duration::from_secs(10));
        let after = counts(&c);
        if before == after { Ok(()) } else { Err(format!("{before:?}\n-> {after:?}")) }
    });

    drop(hollow);
    let st = c.stop().expect("flotilla up exited");
    assert!(st.success(), "clean exit: {st:?}\n{}", c.log_tail());
}
