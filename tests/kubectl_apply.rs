//! The walking skeleton's story, end to end with the real kubectl and a real nats-server:
//! apply a Deployment and watch it travel gateway → state group → controllers →
//! scheduler → node agents → running processes, then survive kills, scaling, a restart of
//! the whole cluster, and deletion.

mod common;

use std::time::Duration;
use common::cluster::{pod_pids, Cluster};

const DEPLOY: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: ticker
spec:
  replicas: 3
  selector:
    matchLabels: {app: ticker}
  template:
    metadata:
      labels: {app: ticker}
    spec:
      terminationGracePeriodSeconds: 5
      containers:
      - name: main
        image: busybox
        command: ["sh", "-c", "i=0; while true; do echo tick $i; i=$((i+1)); sleep 1; done"]
"#;

const BAD_NAME: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: Bad_Name
spec:
  replicas: 1
  selector:
    matchLabels: {app: x}
  template:
    metadata:
      labels: {app: x}
    spec:
      containers: [{name: main, image: busybox, command: ["true"]}]
"#;

const NO_SELECTOR: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: noselector
spec:
  replicas: 1
  template:
    metadata:
      labels: {app: x}
    spec:
      containers: [{name: main, image: busybox, command: ["true"]}]
"#;

const NO_COMMAND: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: nocmd
spec:
  containers: [{name: main, image: busybox}]
"#;

/// (name, phase, node, restarts) of every pod in `demo`.
fn pods(c: &Cluster) -> Vec<(String, String, String, u32)> {
    let out = c.ok(&[
        "get", "pods", "-n", "demo", "-o",
        "jsonpath={range .items[*]}{.metadata.name} {.status.phase} {.spec.nodeName} {.status.containerStatuses[0].restartCount} {.metadata.deletionTimestamp}{\"\\n\"}{end}",
    ]);
    out.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            // Terminating pods (with a deletionTimestamp) are not counted as replicas.
            if f.len() >= 5 {
                return None;
            }
            Some((f.first()?.to_string(), f.get(1).unwrap_or(&"").to_string(), f.get(2).unwrap_or(&"").to_string(), f.get(3).and_then(|s| s.parse().ok()).unwrap_or(0)))
        })
        .collect()
}

fn running(c: &Cluster, n: usize) -> Result<Vec<(String, String, String, u32)>, String> {
    let p = pods(c);
    let run = p.iter().filter(|p| p.1 == "Running").count();
    if p.len() == n && run == n { Ok(p) } else { Err(format!("{p:?}")) }
}

#[test]
fn kubectl_apply_to_running_pods_and_back() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("cluster");
    let mut c = Cluster::up(&dir, 2);

    // Server version and nodes.
    let v = c.ok(&["version"]);
    assert!(v.contains("Server Version: v1.32"), "{v}");
    // Both node agents register and report Ready (under load, one may take a moment).
    c.eventually(Duration::from_secs(15), "two Ready nodes", || {
        let nodes = c.ok(&["get", "nodes", "--no-headers"]);
        let ready = nodes.lines().filter(|l| l.split_whitespace().nth(1) == Some("Ready")).count();
        if ready == 2 { Ok(()) } else { Err(nodes) }
    });

    // The state group reports one member, the leader.
    let st = std::process::Command::new(env!("CARGO_BIN_EXE_flotilla")).args(["state", "status", "-o", "json", "--kubeconfig"]).arg(&c.kubeconfig).output().expect("state status");
    let members: serde_json::Value = serde_json::from_slice(&st.stdout).expect("state status -o json");
    assert_eq!(members.as_array().map(Vec::len), Some(1), "{members}");
    assert_eq!(members[0]["role"], "leader");
    assert!(members[0]["applied"].as_u64().unwrap_or(0) > 0);

    // Namespaces: create, then AlreadyExists.
    assert!(c.ok(&["create", "namespace", "demo"]).contains("namespace/demo created"));
    let again = c.kubectl(&["create", "namespace", "demo"]);
    assert!(!again.ok && again.stderr.contains("AlreadyExists"), "{}", again.stderr);

    // `kubectl create <generator>` sends protobuf bodies.
    assert!(c.ok(&["create", "configmap", "settings", "-n", "demo", "--from-literal=mode=fast"]).contains("configmap/settings created"));
    assert_eq!(c.ok(&["get", "configmap", "settings", "-n", "demo", "-o", "jsonpath={.data.mode}"]), "fast");
    assert!(c.ok(&["create", "secret", "generic", "creds", "-n", "demo", "--from-literal=user=admin"]).contains("secret/creds created"));
    assert_eq!(c.ok(&["get", "secret", "creds", "-n", "demo", "-o", "jsonpath={.data.user}"]), "YWRtaW4=");
    assert!(c.ok(&["create", "serviceaccount", "runner", "-n", "demo"]).contains("serviceaccount/runner created"));
    assert!(c.ok(&["create", "deployment", "once", "-n", "demo", "--image=busybox", "--replicas=2", "--port=8080", "--", "sleep", "3600"]).contains("deployment.apps/once created"));
    let made = c.ok(&["get", "deploy", "once", "-n", "demo", "-o", "jsonpath={.spec.replicas} {.spec.selector.matchLabels.app} {.spec.template.spec.containers[0].command} {.spec.template.spec.containers[0].ports[0].containerPort}"]);
    assert_eq!(made, r#"2 once ["sleep","3600"] 8080"#);
    c.ok(&["delete", "deploy", "once", "-n", "demo"]);
    c.eventually(Duration::from_secs(30), "the pods of deployment once are gone", || {
        let o = c.ok(&["get", "pods", "-n", "demo", "-l", "app=once", "-o", "name"]);
        if o.trim().is_empty() { Ok(()) } else { Err(o) }
    });

    // Apply: three Running replicas spread over both nodes, deployment 3/3.
    let applied = c.kubectl_stdin(&["apply", "-n", "demo", "-f", "-"], Some(DEPLOY));
    assert!(applied.ok, "{} {}", applied.stdout, applied.stderr);
    assert!(applied.stdout.contains("deployment.apps/ticker created"), "{}", applied.stdout);
    let p = c.eventually(Duration::from_secs(20), "3 pods Running", || running(&c, 3));
    let mut used: Vec<&str> = p.iter().map(|p| p.2.as_str()).collect();
    used.sort();
    used.dedup();
    assert_eq!(used.len(), 2, "replicas should spread over both nodes: {p:?}");
    c.eventually(Duration::from_secs(10), "deploy 3/3", || {
        let o = c.ok(&["get", "deploy", "-n", "demo", "ticker", "--no-headers"]);
        if o.split_whitespace().nth(1) == Some("3/3") { Ok(()) } else { Err(o) }
    });
    let table = c.ok(&["get", "pods", "-n", "demo"]);
    assert!(table.starts_with("NAME") && table.contains("READY") && table.contains("STATUS") && table.contains("RESTARTS"), "{table}");

    // Logs.
    let first = p[0].0.clone();
    c.eventually(Duration::from_secs(10), "logs show ticks", || {
        let o = c.kubectl(&["logs", "-n", "demo", &first]);
        if o.ok && o.stdout.contains("tick 0") { Ok(()) } else { Err(format!("{} {}", o.stdout, o.stderr)) }
    });

    // logs -f keeps printing what the container writes after the request.
    let before = c.ok(&["logs", "-n", "demo", &first]);
    let last_tick: u64 = before.lines().filter_map(|l| l.strip_prefix("tick ")?.trim().parse().ok()).max().unwrap_or(0);
    let follow = c.kubectl_background(&["logs", "-f", "-n", "demo", &first]);
    let want = format!("tick {}\n", last_tick + 2);
    follow.wait_for(Duration::from_secs(30), "logs -f prints ticks written after the request", |o| o.contains(&want));
    follow.stop();

    // Kill one pod's process: the pod stays, RESTARTS goes to 1, Running again.
    let pids = pod_pids(&first);
    assert!(!pids.is_empty(), "no process found for pod {first}");
    for pid in &pids {
        // SAFETY: killing a test-owned pod process by PID.
        unsafe { libc::kill(*pid, libc::SIGKILL) };
    }
    c.eventually(Duration::from_secs(30), "restart count 1 and Running", || {
        let p = pods(&c);
        match p.iter().find(|x| x.0 == first) {
            Some(x) if x.3 >= 1 && x.1 == "Running" => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });

    // Delete one pod: a new one replaces it.
    c.ok(&["delete", "pod", "-n", "demo", &first]);
    let p = c.eventually(Duration::from_secs(30), "replacement pod", || running(&c, 3));
    assert!(p.iter().all(|x| x.0 != first), "{p:?}");

    // Watch while scaling to 5.
    let watch = c.kubectl_background(&["get", "pods", "-n", "demo", "-w", "--request-timeout=60s"]);
    // The listing's rows come first: then the watch is open.
    watch.wait_for(Duration::from_secs(30), "the watch lists the pods", |o| o.lines().filter(|l| l.contains("Running")).count() >= 3);
    assert!(c.ok(&["scale", "deploy", "ticker", "-n", "demo", "--replicas=5"]).contains("scaled"));
    let p = c.eventually(Duration::from_secs(30), "5 pods Running", || running(&c, 5));
    let yaml = c.ok(&["get", "deploy", "ticker", "-n", "demo", "-o", "yaml"]);
    assert!(yaml.contains("replicas: 5"), "{yaml}");
    let names: Vec<String> = p.iter().map(|x| x.0.clone()).collect();
    watch.wait_for(Duration::from_secs(30), "the watch shows every pod Running", |o| {
        names.iter().all(|n| o.lines().any(|l| l.starts_with(n.as_str()) && l.contains("Running")))
    });
    watch.stop();

    // Errors.
    let nf = c.kubectl(&["get", "pod", "nosuch", "-n", "demo"]);
    assert!(nf.stderr.contains(r#"Error from server (NotFound): pods "nosuch" not found"#), "{}", nf.stderr);
    let bad = c.kubectl_stdin(&["apply", "-n", "demo", "-f", "-"], Some(BAD_NAME));
    assert!(!bad.ok && bad.stderr.contains("is invalid") && bad.stderr.contains("metadata.name"), "{}", bad.stderr);
    let nosel = c.kubectl_stdin(&["apply", "-n", "demo", "-f", "-"], Some(NO_SELECTOR));
    assert!(!nosel.ok && nosel.stderr.contains("is invalid") && nosel.stderr.contains("spec.selector: Required value"), "{}", nosel.stderr);
    let deploys = c.ok(&["get", "deploy", "-n", "demo", "-o", "name"]);
    assert_eq!(deploys.trim(), "deployment.apps/ticker", "nothing invalid may be stored");

    // A container without a command cannot run in host mode: a clear CreateContainerError.
    let nocmd = c.kubectl_stdin(&["apply", "-n", "demo", "-f", "-"], Some(NO_COMMAND));
    assert!(nocmd.ok, "{}", nocmd.stderr);
    c.eventually(Duration::from_secs(20), "CreateContainerError", || {
        let o = c.ok(&["get", "pod", "nocmd", "-n", "demo", "--no-headers"]);
        if o.split_whitespace().nth(2) == Some("CreateContainerError") { Ok(()) } else { Err(o) }
    });
    let why = c.ok(&["get", "pod", "nocmd", "-n", "demo", "-o", "jsonpath={.status.containerStatuses[0].state.waiting.message}"]);
    assert!(why.contains("has no command"), "{why}");
    c.ok(&["delete", "pod", "nocmd", "-n", "demo"]);
    c.eventually(Duration::from_secs(20), "nocmd deleted", || {
        let o = c.kubectl(&["get", "pod", "nocmd", "-n", "demo"]);
        if o.stderr.contains("NotFound") { Ok(()) } else { Err(o.stdout + &o.stderr) }
    });

    // SIGTERM: no pod process is left.
    let names: Vec<String> = p.iter().map(|x| x.0.clone()).collect();
    let status = c.stop().expect("flotilla up exit status");
    assert!(status.success(), "flotilla up exited with {status}");
    for n in &names {
        assert!(pod_pids(n).is_empty(), "pod {n} still has processes after SIGTERM");
    }

    // Up again on the same data dir: the deployment is there and 5 pods Running.
    let c = Cluster::up(&dir, 2);
    c.ok(&["get", "deploy", "ticker", "-n", "demo"]);
    c.eventually(Duration::from_secs(30), "5 pods Running after restart", || running(&c, 5));

    // Deleting the deployment takes its ReplicaSet and pods with it.
    c.ok(&["delete", "deploy", "ticker", "-n", "demo"]);
    c.eventually(Duration::from_secs(40), "ReplicaSets and pods gone", || {
        let rs = c.ok(&["get", "rs", "-n", "demo", "-o", "name"]);
        let po = c.ok(&["get", "pods", "-n", "demo", "-o", "name"]);
        if rs.trim().is_empty() && po.trim().is_empty() { Ok(()) } else { Err(format!("rs: {rs} pods: {po}")) }
    });

    // Deleting the namespace deletes what is in it, then the namespace (kubectl waits).
    assert!(c.ok(&["delete", "namespace", "demo", "--timeout=60s"]).contains("namespace \"demo\" deleted"));
    let gone = c.kubectl(&["get", "namespace", "demo"]);
    assert!(gone.stderr.contains(r#"namespaces "demo" not found"#), "{}", gone.stderr);
    let left = c.ok(&["get", "configmaps,secrets,serviceaccounts,events", "-n", "demo", "-o", "name"]);
    assert!(left.trim().is_empty(), "left in the deleted namespace: {left}");
}
