//! `flotilla up --nats-cluster 3`: three nats-servers joined by routes, JetStream
//! clustered with the events stream on all three. SIGKILL the server most clients are
//! connected to: writes go on, and a watch opened before the kill sees what came after.

mod common;

use common::cluster::Cluster;
use std::process::Command;
use std::time::Duration;

fn curl(url: &str) -> String {
    let o = Command::new("curl").args(["-s", "--max-time", "5", url]).output().expect("curl");
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn writes_and_watches_survive_a_killed_nats_server() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("c");
    let c = Cluster::up_with(&data, 1, &["--nats-cluster", "3"]);

    // Each server's pid (from up's log) and monitoring address (from its config).
    let log = std::fs::read_to_string(&c.log).unwrap();
    let pids: Vec<i32> = log.lines().filter_map(|l| l.split("nats-server pid ").nth(1)?.split_whitespace().next()?.parse().ok()).collect();
    assert_eq!(pids.len(), 3, "three nats-servers started:\n{log}");
    let monitors: Vec<String> = ["nats", "nats-2", "nats-3"]
        .iter()
        .map(|d| {
            let conf = std::fs::read_to_string(data.join(d).join("nats.conf")).expect("a server's nats.conf");
            conf.lines().find_map(|l| l.strip_prefix("http: ")).expect("a monitoring address").trim().to_string()
        })
        .collect();
    for m in &monitors {
        let routez = curl(&format!("http://{m}/routez"));
        assert!(routez.contains("\"num_routes\": 2"), "every server routes to the other two: {routez}");
    }

    c.ok(&["create", "deployment", "web", "--image=busybox", "--replicas=2", "--", "sleep", "3600"]);
    c.eventually(Duration::from_secs(60), "2 pods Running", || {
        let p = c.ok(&["get", "pods", "-l", "app=web", "-o", "jsonpath={.items[*].status.phase}"]);
        if p == "Running Running" { Ok(()) } else { Err(p) }
    });
    c.eventually(Duration::from_secs(30), "the events stream on three servers", || {
        let jsz = curl(&format!("http://{}/jsz?streams=true&config=true", monitors[0]));
        if jsz.contains("\"num_replicas\": 3") { Ok(()) } else { Err(jsz) }
    });
    let watch = c.kubectl_background(&["get", "pods", "-w", "-o", "jsonpath={.metadata.name} {.metadata.resourceVersion}{\"\\n\"}"]);
    watch.wait_for(Duration::from_secs(20), "the watch's first list", |o| o.lines().count() >= 2);

    // The busiest server is the one the cluster's own components most likely sit on.
    let conns: Vec<u64> = monitors
        .iter()
        .map(|m| {
            let v: serde_json::Value = serde_json::from_str(&curl(&format!("http://{m}/connz"))).unwrap_or_default();
            v["num_connections"].as_u64().unwrap_or(0)
        })
        .collect();
    let victim = (0..3).max_by_key(|i| conns[*i]).unwrap();
    // SAFETY: signalling a process of this test's cluster by PID.
    assert_eq!(unsafe { libc::kill(pids[victim], libc::SIGKILL) }, 0, "killing nats-server {}", pids[victim]);

    c.eventually(Duration::from_secs(60), "a write after the kill", || {
        let o = c.kubectl(&["scale", "deployment", "web", "--replicas=4"]);
        if o.ok { Ok(()) } else { Err(o.stderr) }
    });
    c.eventually(Duration::from_secs(60), "4 pods Running", || {
        let p = c.ok(&["get", "pods", "-l", "app=web", "-o", "jsonpath={.items[*].status.phase}"]);
        if p == "Running Running Running Running" { Ok(()) } else { Err(p) }
    });
    let names = c.ok(&["get", "pods", "-l", "app=web", "-o", "name"]);
    let out = watch.wait_for(Duration::from_secs(30), "the watch seeing the pods made after the kill", |o| {
        names.lines().all(|n| o.lines().any(|l| l.split(' ').next() == n.strip_prefix("pod/")))
    });
    // After the first list (two pods), every event is a later revision than the one before.
    let revs: Vec<u64> = out.lines().skip(2).filter_map(|l| l.split(' ').nth(1)?.parse().ok()).collect();
    assert!(revs.windows(2).all(|w| w[0] < w[1]), "events out of order or twice:\n{out}");
    watch.stop();
}
