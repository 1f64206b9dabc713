//! A pod's life beyond one container, driven by the real kubectl: init containers in
//! order (their writes to the pod's shared directory prove it) with `Init:0/2`, a failing
//! one shown as `Init:Error` then `Init:CrashLoopBackOff`; a native sidecar running beside
//! a crashing main container and outliving its restarts; a postStart hook done before the
//! container shows Running, a preStop hook run before SIGTERM; termination messages from
//! a file and from the log; activeDeadlineSeconds failing a pod with DeadlineExceeded
//! (host-mode pods, which share the pod's directory). With containerd: a container past
//! its memory limit ends OOMKilled, and /dev/termination-log reaches the status.

mod common;

use common::cluster::Cluster;
use common::registry::{busybox_only, offline_images};
use std::time::Duration;

fn host_pods(dir: &str, hook_port: u16) -> String {
    format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: order}}
spec:
  initContainers:
  - {{name: i1, image: busybox, command: ["sh", "-c", "sleep 2; echo i1 >> order"]}}
  - {{name: i2, image: busybox, command: ["sh", "-c", "test -f order && echo i2 >> order"]}}
  containers:
  - {{name: main, image: busybox, command: ["sh", "-c", "echo main >> order; cat order; exec sleep 3600"]}}
---
apiVersion: v1
kind: Pod
metadata: {{name: initfail}}
spec:
  initContainers:
  - {{name: bad, image: busybox, command: ["sh", "-c", "echo failing; exit 3"]}}
  - {{name: never, image: busybox, command: ["true"]}}
  containers:
  - {{name: main, image: busybox, command: ["sleep", "3600"]}}
---
apiVersion: v1
kind: Pod
metadata: {{name: sidecar}}
spec:
  initContainers:
  - {{name: side, image: busybox, restartPolicy: Always, command: ["sh", "-c", "echo side up; exec sleep 3600"]}}
  containers:
  - {{name: main, image: busybox, command: ["sh", "-c", "sleep 1; exit 1"]}}
---
apiVersion: v1
kind: Pod
metadata: {{name: hooks}}
spec:
  containers:
  - name: c
    image: busybox
    command: ["sh", "-c", "trap 'echo term >> {dir}/stop-order; exit 0' TERM; while true; do sleep 0.2; done"]
    lifecycle:
      postStart: {{exec: {{command: ["sh", "-c", "sleep 1; echo poststart > poststart"]}}}}
      preStop: {{exec: {{command: ["sh", "-c", "echo prestop >> {dir}/stop-order"]}}}}
---
apiVersion: v1
kind: Pod
metadata: {{name: httphook}}
spec:
  containers:
  - name: c
    image: busybox
    command: ["sleep", "3600"]
    lifecycle:
      preStop: {{httpGet: {{host: 127.0.0.1, port: {hook_port}, path: /stop, httpHeaders: [{{name: X-Hook, value: pre-stop}}]}}}}
---
apiVersion: v1
kind: Pod
metadata: {{name: msg}}
spec:
  restartPolicy: Never
  containers:
  - name: file
    image: busybox
    terminationMessagePath: {dir}/message
    command: ["sh", "-c", "echo from the file > {dir}/message"]
  - name: logs
    image: busybox
    terminationMessagePolicy: FallbackToLogsOnError
    command: ["sh", "-c", "echo first; echo last words; exit 2"]
---
apiVersion: v1
kind: Pod
metadata: {{name: deadline}}
spec:
  activeDeadlineSeconds: 3
  containers:
  - {{name: c, image: busybox, command: ["sleep", "3600"]}}
"#
    )
}

fn jsonpath(c: &Cluster, pod: &str, path: &str) -> String {
    c.ok(&["get", "pod", pod, "-o", &format!("jsonpath={path}")])
}

/// `READY STATUS RESTARTS` of a pod as `kubectl get` prints them.
fn row(c: &Cluster, pod: &str) -> Vec<String> {
    c.ok(&["get", "pod", pod, "--no-headers"]).split_whitespace().skip(1).take(3).map(str::to_string).collect()
}

#[test]
fn init_containers_sidecars_hooks_messages_and_deadlines() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("shared");
    std::fs::create_dir_all(&dir).unwrap();
    let c = Cluster::up(&tmp.path().join("c"), 1);
    // Every change of every pod, as `kubectl get -w` prints it (the pods do not exist yet).
    let watch = c.kubectl_background(&["get", "pods", "-w", "--no-headers"]);
    let of = |out: &str, pod: &str| out.lines().filter(|l| l.starts_with(&format!("{pod} "))).collect::<Vec<_>>().join("\n");
    // The httpGet preStop hook calls this listener; what it asked comes back on `hooked`.
    let hook_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let hook_port = hook_listener.local_addr().unwrap().port();
    let (hook_tx, hooked) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        if let Ok((mut s, _)) = hook_listener.accept() {
            let mut buf = vec![0u8; 4096];
            let n = s.read(&mut buf).unwrap_or(0);
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
            let _ = hook_tx.send(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    });
    let o = c.kubectl_stdin(&["apply", "-f", "-"], Some(&host_pods(&dir.to_string_lossy(), hook_port)));
    assert!(o.ok, "{}", o.stderr);

    // Init containers in order, then the main one: what each wrote, in that order.
    c.eventually(Duration::from_secs(40), "order Running", || {
        let r = row(&c, "order");
        if r[..2] == ["1/1", "Running"] { Ok(()) } else { Err(format!("{r:?}")) }
    });
    c.eventually(Duration::from_secs(10), "order's log", || {
        let l = c.ok(&["logs", "order"]);
        if l == "i1\ni2\nmain\n" { Ok(()) } else { Err(l) }
    });
    let seen = of(&watch.output(), "order");
    assert!(seen.contains("Init:0/2"), "{seen}");
    assert_eq!(jsonpath(&c, "order", "{.status.initContainerStatuses[*].state.terminated.reason}"), "Completed Completed");
    assert_eq!(jsonpath(&c, "order", "{.status.conditions[?(@.type==\"Initialized\")].status}"), "True");

    // A failing init container: Init:Error, then Init:CrashLoopBackOff; the rest wait.
    let seen = watch.wait_for(Duration::from_secs(40), "Init:Error then Init:CrashLoopBackOff", |o| {
        let o = of(o, "initfail");
        o.contains("Init:Error") && o.contains("Init:CrashLoopBackOff")
    });
    let seen = of(&seen, "initfail");
    assert!(seen.find("Init:Error") < seen.find("Init:CrashLoopBackOff"), "{seen}");
    drop(watch);
    assert_eq!(jsonpath(&c, "initfail", "{.status.phase} {.status.initContainerStatuses[1].state.waiting.reason} {.status.containerStatuses[0].state.waiting.reason}"), "Pending PodInitializing PodInitializing");
    let waiting = jsonpath(&c, "initfail", "{.status.initContainerStatuses[0].state.waiting.message}");
    assert!(waiting.starts_with("back-off 10s restarting failed container=bad pod=initfail_default("), "{waiting}");
    assert_eq!(c.ok(&["logs", "initfail", "-c", "bad"]), "failing\n");
    let events = c.ok(&["get", "events", "-o", "jsonpath={range .items[?(@.involvedObject.name==\"initfail\")]}{.type}|{.reason}|{.message}{\"\\n\"}{end}"]);
    assert!(events.lines().any(|l| l.starts_with("Warning|BackOff|Back-off restarting failed container bad in pod initfail_default(")), "{events}");

    // The sidecar runs beside the main container, which crashes and restarts; the sidecar
    // is the same instance throughout.
    let side_id = c.eventually(Duration::from_secs(30), "sidecar running", || {
        let s = jsonpath(&c, "sidecar", "{.status.initContainerStatuses[0].state.running.startedAt} {.status.initContainerStatuses[0].containerID}");
        match s.split_once(' ') {
            Some((started, id)) if !started.is_empty() && !id.is_empty() => Ok(id.to_string()),
            _ => Err(s),
        }
    });
    c.eventually(Duration::from_secs(60), "main restarted twice beside the sidecar", || {
        let n = jsonpath(&c, "sidecar", "{.status.containerStatuses[0].restartCount}");
        if n.parse::<i32>().unwrap_or(0) >= 2 { Ok(()) } else { Err(n) }
    });
    assert_eq!(jsonpath(&c, "sidecar", "{.status.initContainerStatuses[0].restartCount} {.status.initContainerStatuses[0].containerID} {.status.initContainerStatuses[0].ready}"), format!("0 {side_id} true"));
    assert_eq!(c.ok(&["logs", "sidecar", "-c", "side"]), "side up\n");
    let r = row(&c, "sidecar");
    assert!(r[0].ends_with("/2"), "the sidecar counts as a container: {r:?}");

    // postStart ran to its end before the container showed Running.
    c.eventually(Duration::from_secs(30), "hooks Running", || {
        let s = jsonpath(&c, "hooks", "{.status.containerStatuses[0].state.running.startedAt}");
        if s.is_empty() { Err(s) } else { Ok(()) }
    });
    assert_eq!(c.ok(&["exec", "hooks", "--", "cat", "poststart"]), "poststart\n");

    // The termination messages: from the file, and from the log of a failed container.
    c.eventually(Duration::from_secs(30), "msg Failed", || {
        let p = jsonpath(&c, "msg", "{.status.phase}");
        if p == "Failed" { Ok(()) } else { Err(p) }
    });
    assert_eq!(jsonpath(&c, "msg", "{.status.containerStatuses[0].state.terminated.message}").trim_end(), "from the file");
    assert_eq!(jsonpath(&c, "msg", "{.status.containerStatuses[0].state.terminated.reason}"), "Completed");
    assert_eq!(jsonpath(&c, "msg", "{.status.containerStatuses[1].state.terminated.message}").trim_end(), "first\nlast words");
    assert_eq!(jsonpath(&c, "msg", "{.status.containerStatuses[1].state.terminated.exitCode} {.status.containerStatuses[1].state.terminated.reason}"), "2 Error");

    // activeDeadlineSeconds: the pod fails as a whole.
    c.eventually(Duration::from_secs(30), "deadline Failed", || {
        let p = jsonpath(&c, "deadline", "{.status.phase} {.status.reason}");
        if p == "Failed DeadlineExceeded" { Ok(()) } else { Err(p) }
    });
    assert_eq!(jsonpath(&c, "deadline", "{.status.message}"), "Pod was active on the node longer than the specified deadline");
    c.eventually(Duration::from_secs(40), "deadline's container stopped", || {
        let s = jsonpath(&c, "deadline", "{.status.containerStatuses[0].state.terminated.exitCode}");
        if s.is_empty() { Err(s) } else { Ok(()) }
    });

    // preStop before SIGTERM: deleting the pod runs the hook, then the trap.
    let o = c.kubectl(&["delete", "pod", "hooks", "--timeout=60s"]);
    assert!(o.ok, "{}", o.stderr);
    assert_eq!(std::fs::read_to_string(dir.join("stop-order")).unwrap_or_default(), "prestop\nterm\n");
    // An httpGet preStop hook: its request, with its header, reaches the listener.
    c.eventually(Duration::from_secs(30), "httphook Running", || {
        let r = row(&c, "httphook");
        if r[..2] == ["1/1", "Running"] { Ok(()) } else { Err(format!("{r:?}")) }
    });
    let o = c.kubectl(&["delete", "pod", "httphook", "--timeout=60s"]);
    assert!(o.ok, "{}", o.stderr);
    let req = hooked.recv_timeout(Duration::from_secs(10)).expect("the preStop request");
    assert!(req.starts_with("GET /stop HTTP/1.1\r\n") && req.contains("X-Hook: pre-stop\r\n") && req.contains("User-Agent: kube-lifecycle/1.32\r\n"), "{req}");

    assert!(c.ok(&["delete", "pod", "--all", "--grace-period=1"]).contains("deleted"));
}

#[test]
fn containerd_oom_killed_and_termination_log() {
    assert!(unsafe { libc::geteuid() } == 0, "this test runs containerd: run it as root (CI does, after deploy/install-deps.sh)");
    let images = offline_images();
    let tmp = tempfile::tempdir().expect("tempdir");
    let airgap = busybox_only(&images, tmp.path());
    let cidr = common::pod_cidr();
    let c = Cluster::up_with(&tmp.path().join("c"), 1, &["--runtime", "containerd", "--images", &airgap.to_string_lossy(), "--cluster-cidr", &cidr]);
    let pods = r#"
apiVersion: v1
kind: Pod
metadata: {name: oom}
spec:
  restartPolicy: Never
  containers:
  - name: c
    image: busybox:1.35
    # dd's 64 MiB buffer is more than the cgroup allows.
    command: ["dd", "if=/dev/zero", "of=/dev/null", "bs=64M", "count=4"]
    resources: {limits: {memory: 16Mi}}
---
apiVersion: v1
kind: Pod
metadata: {name: msg}
spec:
  restartPolicy: Never
  containers:
  - name: c
    image: busybox:1.35
    command: ["sh", "-c", "echo goodbye > /dev/termination-log; exit 3"]
"#;
    let o = c.kubectl_stdin(&["apply", "-f", "-"], Some(pods));
    assert!(o.ok, "{}", o.stderr);
    let oom = c.eventually(Duration::from_secs(90), "oom ended", || {
        let s = jsonpath(&c, "oom", "{.status.phase} {.status.containerStatuses[0].state.terminated.reason} {.status.containerStatuses[0].state.terminated.exitCode}");
        if s.starts_with("Failed ") { Ok(s) } else { Err(s) }
    });
    assert_eq!(oom, "Failed OOMKilled 137");
    assert_eq!(row(&c, "oom")[1], "OOMKilled");
    let msg = c.eventually(Duration::from_secs(60), "msg ended", || {
        let s = jsonpath(&c, "msg", "{.status.phase}|{.status.containerStatuses[0].state.terminated.exitCode}|{.status.containerStatuses[0].state.terminated.message}");
        if s.starts_with("Failed|") { Ok(s) } else { Err(s) }
    });
    assert_eq!(msg.trim_end(), "Failed|3|goodbye");
    assert!(c.ok(&["delete", "pod", "--all", "--grace-period=1"]).contains("deleted"));
}
