//! Issue 3's acceptance, end to end with the real kubectl: `flotilla up --state-members
//! 3` shows one leader and two followers; SIGKILL the leader's process and writes through
//! kubectl succeed again within 5 s, every object written before is readable, and a
//! running `kubectl get -w` carries on without missing an event. Then `flotilla backup`,
//! `flotilla restore` and `flotilla up` on the restored dir show the same objects.

mod common;

use common::cluster::Cluster;
use std::time::{Duration, Instant};

fn status(c: &Cluster) -> Vec<serde_json::Value> {
    let dir = c.data_dir.to_string_lossy().to_string();
    let o = c.flotilla(&["state", "status", "--data-dir", &dir, "-o", "json"]);
    assert!(o.ok, "state status failed: {}", o.stderr);
    serde_json::from_str::<Vec<serde_json::Value>>(&o.stdout).unwrap_or_else(|e| panic!("state status -o json: {e}: {}", o.stdout))
}

fn roles(st: &[serde_json::Value]) -> Vec<String> {
    let mut r: Vec<String> = st.iter().map(|m| m["role"].as_str().unwrap_or("?").to_string()).collect();
    r.sort();
    r
}

/// A plain HTTP/1.0 GET; the body and headers as one string.
fn http_get(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap_or_else(|e| panic!("connecting to {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").expect("request");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.trim_end().to_string()
}

/// `kubectl get -w --output-watch-events` prints `EVENT NAME DATA AGE`: "EVENT NAME" per line.
fn events(out: &str) -> Vec<String> {
    out.lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            Some(format!("{} {}", it.next()?, it.next()?))
        })
        .filter(|l| !l.starts_with("EVENT "))
        .collect()
}

#[test]
fn killing_the_leader_loses_nothing_and_backups_restore() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("cluster");
    let mut c = Cluster::up_with(&dir, 1, &["--state-members", "3"]);

    let st = c.eventually(Duration::from_secs(20), "one leader, two followers", || {
        let st = status(&c);
        if roles(&st) == ["follower", "follower", "leader"] { Ok(st) } else { Err(format!("{st:?}")) }
    });
    for m in &st {
        for k in ["id", "pid", "addr", "role", "applied"] {
            assert!(m.get(k).is_some(), "state status -o json lacks {k}: {m}");
        }
    }
    // The table form says the same.
    let d = dir.to_string_lossy().to_string();
    let table = c.flotilla(&["state", "status", "--data-dir", &d]);
    assert!(table.stdout.lines().next().unwrap_or("").contains("ROLE"), "{}", table.stdout);
    assert_eq!(table.stdout.lines().filter(|l| l.contains("leader")).count(), 1, "{}", table.stdout);

    // Every member process serves its own health endpoints and metrics.
    let log = std::fs::read_to_string(&c.log).unwrap_or_default();
    let health: Vec<String> = log.lines().filter_map(|l| l.split("health on http://").nth(1)).map(|a| a.trim().to_string()).collect();
    assert_eq!(health.len(), 3, "three members with health addresses in the log:\n{log}");
    for addr in &health {
        assert!(http_get(addr, "/healthz").ends_with("ok"), "healthz of {addr}");
        let metrics = http_get(addr, "/metrics");
        assert!(metrics.contains("flotilla_state_applied_index"), "metrics of {addr}:\n{metrics}");
    }
    assert_eq!(health.iter().filter(|a| http_get(a, "/metrics").contains("flotilla_state_leader 1")).count(), 1);

    for i in 0..5 {
        c.ok(&["create", "configmap", &format!("before-{i}"), &format!("--from-literal=i={i}")]);
    }
    let watch = c.kubectl_background(&["get", "configmaps", "-w", "--output-watch-events"]);
    // Once the listing is printed the watch runs from its revision.
    watch.wait_for(Duration::from_secs(30), "the watch lists the ConfigMaps", |o| (0..5).all(|i| events(o).contains(&format!("ADDED before-{i}"))));

    let leader = st.iter().find(|m| m["role"] == "leader").expect("leader");
    let pid = leader["pid"].as_i64().expect("leader pid") as i32;
    // SAFETY: a member process of this test's cluster, by PID.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0, "kill leader {pid}");
    let killed_at = Instant::now();
    c.eventually(Duration::from_secs(5), "a write through kubectl after the leader died", || {
        let o = c.kubectl(&["create", "configmap", "after", "--from-literal=x=1"]);
        if o.ok || o.stderr.contains("AlreadyExists") { Ok(()) } else { Err(o.stderr) }
    });
    let recovered = killed_at.elapsed();
    assert!(recovered < Duration::from_secs(5), "writes came back after {recovered:?}");
    for i in 0..5 {
        let v = c.ok(&["get", "configmap", &format!("before-{i}"), "-o", "jsonpath={.data.i}"]);
        assert_eq!(v, i.to_string());
    }
    c.ok(&["delete", "configmap", "before-0"]);
    c.ok(&["label", "configmap", "before-1", "after=yes"]);
    // The watch saw everything: the list, then each change after the failover, in order.
    watch.wait_for(Duration::from_secs(30), "the watch shows the last change", |o| events(o).contains(&"MODIFIED before-1".to_string()));
    let seen = watch.stop();
    let lines = events(&seen);
    let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
    for i in 0..5 {
        assert!(lines.contains(&format!("ADDED before-{i}").as_str()), "watch lacks before-{i}:\n{seen}");
    }
    let after = lines.iter().position(|l| *l == "ADDED after").unwrap_or_else(|| panic!("watch lacks the write after failover:\n{seen}"));
    let deleted = lines.iter().position(|l| *l == "DELETED before-0").unwrap_or_else(|| panic!("watch lacks the delete:\n{seen}"));
    let labelled = lines.iter().position(|l| *l == "MODIFIED before-1").unwrap_or_else(|| panic!("watch lacks the label:\n{seen}"));
    assert!(after < deleted && deleted < labelled, "events out of order:\n{seen}");

    // The killed member is started again by `up` and rejoins as a follower.
    c.eventually(Duration::from_secs(20), "the killed member back as a follower", || {
        let st = status(&c);
        if roles(&st) == ["follower", "follower", "leader"] { Ok(()) } else { Err(format!("{st:?}")) }
    });

    // resourceVersion the way Kubernetes reads it: "0" is any member's state, N is "not
    // older than N" (a lagging member's answer is read again from the leader), Exact needs
    // that very revision (there is no multi-version history: an older one is gone, 410, as
    // after an etcd compaction), and a revision from the future is a 504.
    let list = |q: &str| c.kubectl(&["get", "--raw", &format!("/api/v1/namespaces/default/configmaps{q}")]);
    let current: serde_json::Value = serde_json::from_str(&list("").stdout).expect("list json");
    let rv: u64 = current["metadata"]["resourceVersion"].as_str().and_then(|s| s.parse().ok()).expect("list resourceVersion");
    for q in ["?resourceVersion=0", &format!("?resourceVersion={rv}"), &format!("?resourceVersion={rv}&resourceVersionMatch=NotOlderThan")] {
        let o = list(q);
        assert!(o.ok, "{q}: {}", o.stderr);
        let v: serde_json::Value = serde_json::from_str(&o.stdout).expect("json");
        assert!(v["items"].as_array().is_some_and(|i| i.len() >= 5), "{q}: {}", o.stdout);
    }
    let gone = list("?resourceVersion=1&resourceVersionMatch=Exact");
    assert!(!gone.ok && gone.stderr.contains("too old resource version"), "{}", gone.stderr);
    let future = list(&format!("?resourceVersion={}", rv + 1_000_000));
    assert!(!future.ok && future.stderr.contains("Too large resource version"), "{}", future.stderr);
    let bad = list("?resourceVersionMatch=Exact");
    assert!(!bad.ok && bad.stderr.contains("resourceVersionMatch is forbidden"), "{}", bad.stderr);
    let one = c.kubectl(&["get", "--raw", "/api/v1/namespaces/default/configmaps/before-2?resourceVersion=0"]);
    assert!(one.ok && one.stdout.contains("before-2"), "{}", one.stderr);

    // Object size: 1.4 MiB is stored and watched; 2 MiB is refused with the limit named,
    // and nothing of it is stored.
    let cm = |name: &str, bytes: usize| {
        format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\ndata:\n  blob: {}\n", "x".repeat(bytes))
    };
    let big_watch = c.kubectl_background(&["get", "configmaps", "-w", "--output-watch-events"]);
    big_watch.wait_for(Duration::from_secs(30), "the watch lists the ConfigMaps", |o| events(o).contains(&"ADDED after".to_string()));
    let ok = c.kubectl_stdin(&["create", "-f", "-"], Some(&cm("big-1400k", 1400 * 1024)));
    assert!(ok.ok, "a 1.4 MiB ConfigMap must be stored: {}", ok.stderr);
    let too_big = c.kubectl_stdin(&["create", "-f", "-"], Some(&cm("big-2m", 2 * 1024 * 1024)));
    assert!(!too_big.ok, "a 2 MiB ConfigMap must be refused");
    assert!(too_big.stderr.contains("1572864"), "the refusal names the limit: {}", too_big.stderr);
    assert!(c.kubectl(&["get", "configmap", "big-2m"]).stderr.contains("NotFound"));
    let got = c.ok(&["get", "configmap", "big-1400k", "-o", "jsonpath={.data.blob}"]);
    assert_eq!(got.len(), 1400 * 1024);
    big_watch.wait_for(Duration::from_secs(30), "the 1.4 MiB ConfigMap is watched", |o| events(o).contains(&"ADDED big-1400k".to_string()));
    let seen = big_watch.stop();
    assert!(events(&seen).contains(&"ADDED big-1400k".to_string()), "the 1.4 MiB ConfigMap is watched:\n{}", &seen[..seen.len().min(2000)]);

    // Backup from the running cluster, restore into a new dir, serve it.
    let backup = tmp.path().join("state.backup");
    let b = c.flotilla(&["backup", "--data-dir", &d, "--out", &backup.to_string_lossy()]);
    assert!(b.ok, "backup failed: {} {}", b.stdout, b.stderr);
    assert!(b.stdout.contains("backup of revision"), "{}", b.stdout);
    let names = |c: &Cluster| {
        let mut v: Vec<String> = c.ok(&["get", "configmaps", "-o", "name"]).lines().map(String::from).collect();
        v.sort();
        v
    };
    let before = names(&c);
    c.stop();

    let restored = tmp.path().join("restored");
    let r = c.flotilla(&["restore", &backup.to_string_lossy(), "--data-dir", &restored.to_string_lossy()]);
    assert!(r.ok, "restore failed: {} {}", r.stdout, r.stderr);
    let again = c.flotilla(&["restore", &backup.to_string_lossy(), "--data-dir", &restored.to_string_lossy()]);
    assert!(!again.ok && again.stderr.contains("already exists"), "a second restore must refuse: {}", again.stderr);
    let c2 = Cluster::up(&restored, 1);
    assert_eq!(names(&c2), before);
    assert!(c2.ok(&["get", "configmap", "before-1", "--show-labels"]).contains("after=yes"));
    // The restored cluster takes writes and serves watches from its new history.
    let w = c2.kubectl_background(&["get", "configmaps", "-w", "--output-watch-events"]);
    w.wait_for(Duration::from_secs(30), "the watch lists the ConfigMaps", |o| events(o).contains(&"ADDED before-1".to_string()));
    c2.ok(&["create", "configmap", "restored-new", "--from-literal=y=1"]);
    w.wait_for(Duration::from_secs(30), "the new ConfigMap is watched", |o| events(o).contains(&"ADDED restored-new".to_string()));
    let seen = w.stop();
    assert!(events(&seen).contains(&"ADDED restored-new".to_string()), "watch on the restored cluster:\n{seen}");
}
