//! Probes, driven by the real kubectl against host-mode pods: a readiness probe on a closed
//! port keeps its pod 0/1 and opening the port makes it 1/1 within two periods (tcpSocket);
//! an httpGet readiness probe on a port named in the container passes; a failing exec
//! liveness probe restarts the container with the kubelet's events, as `kubectl describe`
//! shows them; a startup probe holds readiness back until it passes; and `kubectl
//! describe` prints the API's probe defaults.

mod common;

use common::cluster::Cluster;
use std::time::{Duration, Instant};

fn pods(tcp_port: u16, http_port: u16, flag: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: tcp}}
spec:
  containers:
  - name: c
    image: busybox
    command: ["sleep", "3600"]
    readinessProbe:
      tcpSocket: {{port: {tcp_port}}}
      periodSeconds: 2
---
apiVersion: v1
kind: Pod
metadata: {{name: http}}
spec:
  containers:
  - name: web
    image: python
    command: ["sh", "-c", "echo ok > ready.txt; exec python3 -m http.server {http_port} --bind 127.0.0.1"]
    ports: [{{name: web, containerPort: {http_port}}}]
    readinessProbe:
      httpGet: {{path: /ready.txt, port: web, httpHeaders: [{{name: X-Probe, value: "yes"}}]}}
      periodSeconds: 1
---
apiVersion: v1
kind: Pod
metadata: {{name: live}}
spec:
  terminationGracePeriodSeconds: 30
  containers:
  - name: c
    image: busybox
    command: ["sh", "-c", "echo started; exec sleep 3600"]
    livenessProbe:
      exec: {{command: ["cat", "{flag}"]}}
      periodSeconds: 1
      failureThreshold: 2
      terminationGracePeriodSeconds: 1
---
apiVersion: v1
kind: Pod
metadata: {{name: slow}}
spec:
  containers:
  - name: c
    image: busybox
    command: ["sh", "-c", "sleep 3; touch started; exec sleep 3600"]
    startupProbe:
      exec: {{command: ["cat", "started"]}}
      periodSeconds: 1
      failureThreshold: 30
    readinessProbe:
      exec: {{command: ["true"]}}
      periodSeconds: 1
---
apiVersion: v1
kind: Pod
metadata: {{name: defaults}}
spec:
  containers:
  - name: c
    image: busybox
    command: ["sleep", "3600"]
    readinessProbe:
      exec: {{command: ["true"]}}
    livenessProbe:
      httpGet: {{port: 1}}
      initialDelaySeconds: 3600
"#
    )
}

/// `READY STATUS RESTARTS` of a pod as `kubectl get` prints them.
fn row(c: &Cluster, pod: &str) -> Vec<String> {
    c.ok(&["get", "pod", pod, "--no-headers"]).split_whitespace().skip(1).take(3).map(str::to_string).collect()
}

/// The value `kubectl describe` prints after `key` (its columns are aligned with spaces).
fn field(describe: &str, key: &str) -> String {
    describe.lines().find_map(|l| l.trim_start().strip_prefix(key)).map(|v| v.trim().to_string()).unwrap_or_else(|| panic!("no {key} in:\n{describe}"))
}

fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[test]
fn probes_drive_readiness_and_restarts() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let flag = tmp.path().join("healthy");
    std::fs::write(&flag, "ok").unwrap();
    let c = Cluster::up(&tmp.path().join("c"), 1);
    let (tcp_port, http_port) = (closed_port(), closed_port());
    let o = c.kubectl_stdin(&["apply", "-f", "-"], Some(&pods(tcp_port, http_port, &flag.to_string_lossy())));
    assert!(o.ok, "{}", o.stderr);

    // tcpSocket on a closed port: Running but 0/1, while the probe keeps failing.
    c.eventually(Duration::from_secs(30), "tcp running, unready, probe failing twice", || {
        let r = row(&c, "tcp");
        let events = c.ok(&["get", "events", "-o", "jsonpath={range .items[?(@.involvedObject.name==\"tcp\")]}{.reason}|{.message}|{.count}{\"\\n\"}{end}"]);
        let refused = format!("Readiness probe failed: dial tcp 127.0.0.1:{tcp_port}: connect: connection refused");
        let failures: u64 = events.lines().filter(|l| l.contains(&refused) && l.starts_with("Unhealthy|")).map(|l| l.rsplit('|').next().and_then(|n| n.parse().ok()).unwrap_or(1)).sum();
        if r[..2] == ["0/1", "Running"] && failures >= 2 { Ok(()) } else { Err(format!("{r:?} {events}")) }
    });
    assert_eq!(row(&c, "tcp")[0], "0/1", "still unready after two failed probes");
    assert_eq!(c.ok(&["get", "pod", "tcp", "-o", "jsonpath={.status.conditions[?(@.type==\"Ready\")].status} {.status.containerStatuses[0].ready}"]), "False false");

    // Opening the port makes it ready within two periods (2 s each), plus a status write.
    let listener = std::net::TcpListener::bind(("127.0.0.1", tcp_port)).expect("binding the probed port");
    let opened = Instant::now();
    c.eventually(Duration::from_secs(10), "tcp 1/1", || {
        let r = row(&c, "tcp");
        if r[0] == "1/1" { Ok(()) } else { Err(format!("{r:?}")) }
    });
    assert!(opened.elapsed() <= Duration::from_secs(5), "ready {:?} after the port opened", opened.elapsed());
    assert_eq!(c.ok(&["get", "pod", "tcp", "-o", "jsonpath={.status.conditions[?(@.type==\"Ready\")].status} {.status.conditions[?(@.type==\"ContainersReady\")].status}"]), "True True");
    // Closing it again: unready after failureThreshold (3) failures.
    drop(listener);
    c.eventually(Duration::from_secs(20), "tcp 0/1 again", || {
        let r = row(&c, "tcp");
        if r[0] == "0/1" { Ok(()) } else { Err(format!("{r:?}")) }
    });

    // httpGet to a port named in the container, with a header: ready once the server is up.
    c.eventually(Duration::from_secs(30), "http 1/1", || {
        let r = row(&c, "http");
        if r[..2] == ["1/1", "Running"] { Ok(()) } else { Err(format!("{r:?}")) }
    });

    // exec liveness: the flag file goes, the probe fails twice, the container restarts.
    c.eventually(Duration::from_secs(30), "live 1/1", || {
        let r = row(&c, "live");
        if r[..2] == ["1/1", "Running"] { Ok(()) } else { Err(format!("{r:?}")) }
    });
    std::fs::remove_file(&flag).unwrap();
    c.eventually(Duration::from_secs(30), "live restarted", || {
        let n = c.ok(&["get", "pod", "live", "-o", "jsonpath={.status.containerStatuses[0].restartCount}"]);
        if n.trim().parse::<i32>().unwrap_or(0) >= 1 { Ok(()) } else { Err(n) }
    });
    std::fs::write(&flag, "ok").unwrap();
    let describe = c.eventually(Duration::from_secs(30), "live running again, its events described", || {
        let d = c.ok(&["describe", "pod", "live"]);
        let ok = d.contains("Liveness probe failed: cat: ") && d.contains("Container c failed liveness probe, will be restarted") && row(&c, "live")[..2] == ["1/1", "Running"];
        if ok { Ok(d) } else { Err(d) }
    });
    assert!(describe.contains("Unhealthy") && describe.contains("Killing"), "{describe}");
    assert_eq!(field(&describe, "Liveness:"), format!("exec [cat {}] delay=0s timeout=1s period=1s #success=1 #failure=2", flag.display()));
    // The terminated instance is the last state: killed by its SIGTERM.
    let last = c.ok(&["get", "pod", "live", "-o", "jsonpath={.status.containerStatuses[0].lastState.terminated.reason}"]);
    assert_eq!(last, "Error");

    // A startup probe holds readiness back until it passes: started false, then true and ready.
    c.eventually(Duration::from_secs(30), "slow started and ready", || {
        let s = c.ok(&["get", "pod", "slow", "-o", "jsonpath={.status.containerStatuses[0].started} {.status.containerStatuses[0].ready}"]);
        if s == "true true" { Ok(()) } else { Err(s) }
    });
    let events = c.ok(&["get", "events", "-o", "jsonpath={range .items[?(@.involvedObject.name==\"slow\")]}{.reason}|{.message}{\"\\n\"}{end}"]);
    assert!(events.lines().any(|l| l.starts_with("Unhealthy|Startup probe failed: cat: ")), "{events}");
    assert!(!events.contains("Readiness probe failed"), "readiness waited for the startup probe: {events}");
    assert_eq!(c.ok(&["get", "pod", "slow", "-o", "jsonpath={.status.containerStatuses[0].restartCount}"]), "0");

    // The API's defaults, as kubectl describe prints them.
    let d = c.ok(&["describe", "pod", "defaults"]);
    assert_eq!(field(&d, "Readiness:"), "exec [true] delay=0s timeout=1s period=10s #success=1 #failure=3", "{d}");
    assert_eq!(field(&d, "Liveness:"), "http-get http://:1/ delay=3600s timeout=1s period=10s #success=1 #failure=3", "{d}");
    c.eventually(Duration::from_secs(30), "defaults 1/1", || {
        let r = row(&c, "defaults");
        if r[0] == "1/1" { Ok(()) } else { Err(format!("{r:?}")) }
    });

    assert!(c.ok(&["delete", "pod", "--all", "--grace-period=1"]).contains("deleted"));
}
