//! Traces across actors and processes: a pod created through the gateway with a W3C
//! `traceparent` header is started, by a node agent running as a process of its own,
//! inside that trace. The trace id can only get there through NATS headers: the
//! gateway's write, the committed event, the scheduler's bind write and its event.

mod common;

use common::cluster::Cluster;
use std::process::{Command, Stdio};
use std::time::Duration;

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

/// Scheduled (by the nodeSelector) onto the agent outside `up`'s process.
const POD: &str = r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"traced","namespace":"default"},
"spec":{"nodeSelector":{"kubernetes.io/hostname":"far-1"},"terminationGracePeriodSeconds":1,
"containers":[{"name":"main","image":"busybox","command":["sleep","3600"]}]}}"#;



#[test]
fn a_traceparent_follows_a_pod_from_the_gateway_to_a_node_agent_in_another_process() {
    let dir = tempfile::tempdir().unwrap();
    let c = Cluster::up(&dir.path().join("c"), 1);
    let agent_log = dir.path().join("far-1.log");
    let log = std::fs::File::create(&agent_log).unwrap();
    let _agent = common::process::TermOnDrop(
        Command::new(env!("CARGO_BIN_EXE_flotilla"))
            .args(["node", "--nats-url", &c.nats_url(), "--name", "far-1", "--runtime", "process", "--data-dir"])
            .arg(dir.path().join("far-1"))
            .env("FLOTILLA_NATS_CREDS", c.admin_creds())
            .env("RUST_LOG", "info,async_nats=warn")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting flotilla node"),
    );
    c.eventually(Duration::from_secs(60), "far-1 Ready", || {
        let s = c.kubectl(&["get", "node", "far-1", "-o", "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}"]).stdout;
        if s == "True" { Ok(()) } else { Err(s) }
    });
    // kubectl sends no custom headers; its proxy passes a client's on.
    let proxy = c.kubectl_background(&["proxy", "--port=0"]);
    let out = proxy.wait_for(Duration::from_secs(30), "kubectl proxy serving", |o| o.contains("Starting to serve on "));
    let addr = out.lines().find_map(|l| l.trim().strip_prefix("Starting to serve on ")).expect("an address").to_string();
    let o = Command::new("curl")
        .args(["-s", "--max-time", "10", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST", "-H", "Content-Type: application/json", "-H"])
        .arg(format!("traceparent: 00-{TRACE_ID}-00f067aa0ba902b7-01"))
        .args(["--data", POD, &format!("http://{addr}/api/v1/namespaces/default/pods")])
        .output()
        .expect("curl");
    assert_eq!(String::from_utf8_lossy(&o.stdout), "201", "the create");
    c.eventually(Duration::from_secs(60), "the pod Running on far-1", || {
        let p = c.ok(&["get", "pod", "traced", "-o", "jsonpath={.spec.nodeName} {.status.phase}"]);
        if p == "far-1 Running" { Ok(()) } else { Err(p) }
    });
    c.eventually(Duration::from_secs(20), "far-1's kubelet admitting the pod inside the trace", || {
        let log = std::fs::read_to_string(&agent_log).unwrap_or_default();
        let line = log.lines().find(|l| l.contains("pod admitted") && l.contains("default/traced"));
        match line {
            Some(l) if l.contains(&format!("trace_id={TRACE_ID}")) && l.contains("actor=\"kubelet\"") => Ok(()),
            Some(l) => Err(format!("admitted outside the trace: {l}")),
            None => Err("not admitted yet".to_string()),
        }
    });
    proxy.stop();
}
