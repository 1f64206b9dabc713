//! `kubectl logs` with every option it has, against host-mode pods (whose logs the agent
//! writes in the CRI format, each line stamped): containers picked by `-c` or all of them,
//! timestamps, tail, since, limit-bytes, the previous instance, and the apiserver's and
//! kubelet's refusals word for word (a missing or unknown container, a waiting one, a
//! previous instance that does not exist, option values out of range).

mod common;

use common::cluster::Cluster;
use std::time::Duration;

const PODS: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: two}
spec:
  containers:
  - {name: a, image: busybox, command: ["sh", "-c", "echo a1; echo a2; echo a3; sleep 3600"]}
  - {name: b, image: busybox, command: ["sh", "-c", "echo b1 >&2; sleep 3600"]}
---
apiVersion: v1
kind: Pod
metadata: {name: crash}
spec:
  containers:
  - name: c
    image: busybox
    # Each instance counts itself in the pod's work directory (host mode keeps it).
    command: ["sh", "-c", "n=$(cat n 2>/dev/null || echo 0); n=$((n+1)); echo $n > n; echo run $n; sleep 4; exit 1"]
---
apiVersion: v1
kind: Pod
metadata: {name: unscheduled}
spec:
  schedulerName: nobody
  initContainers:
  - {name: setup, image: busybox, command: ["true"]}
  containers:
  - {name: a, image: busybox, command: ["true"]}
  - {name: b, image: busybox, command: ["true"]}
---
apiVersion: v1
kind: Pod
metadata: {name: nocmd}
spec:
  containers:
  - {name: c, image: busybox}
"#;

fn raw(c: &Cluster, query: &str) -> (bool, String) {
    let o = c.kubectl(&["get", "--raw", &format!("/api/v1/namespaces/default/pods/{query}")]);
    (o.ok, if o.ok { o.stdout } else { o.stderr.trim().to_string() })
}

#[test]
fn kubectl_logs_options_and_refusals() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let c = Cluster::up(&tmp.path().join("c"), 1);
    let o = c.kubectl_stdin(&["apply", "-f", "-"], Some(PODS));
    assert!(o.ok, "{}", o.stderr);
    c.eventually(Duration::from_secs(30), "two's containers wrote", || {
        let o = c.kubectl(&["logs", "two", "-c", "a"]);
        let b = c.kubectl(&["logs", "two", "-c", "b"]);
        if o.stdout == "a1\na2\na3\n" && b.stdout == "b1\n" { Ok(()) } else { Err(format!("{} {} | {}", o.stdout, o.stderr, b.stdout)) }
    });

    // Each line carries the time it was written, as RFC3339Nano.
    let stamped = c.ok(&["logs", "two", "-c", "a", "--timestamps"]);
    let lines: Vec<&str> = stamped.lines().collect();
    assert_eq!(lines.len(), 3, "{stamped}");
    for (l, want) in lines.iter().zip(["a1", "a2", "a3"]) {
        let (ts, text) = l.split_once(' ').unwrap();
        assert_eq!(text, want);
        assert!(ts.len() >= 20 && ts.ends_with('Z') && &ts[10..11] == "T", "{ts}");
        assert!(ts.parse::<jiff::Timestamp>().is_ok(), "{ts} is not RFC3339");
    }
    assert_eq!(c.ok(&["logs", "two", "-c", "a", "--tail=2"]), "a2\na3\n");
    assert_eq!(c.ok(&["logs", "two", "-c", "a", "--tail=0"]), "");
    assert_eq!(c.ok(&["logs", "two", "-c", "a", "--limit-bytes=4"]), "a1\na");
    assert_eq!(c.ok(&["logs", "two", "-c", "a", "--since=1h"]), "a1\na2\na3\n");
    assert_eq!(raw(&c, "two/log?container=a&sinceSeconds=9223372036854775807"), (true, "a1\na2\na3\n".into()));
    let second = lines[1].split_once(' ').unwrap().0;
    // kubectl sends --since-time to the second; a client may send it to the nanosecond.
    assert_eq!(c.ok(&["logs", "two", "-c", "a", "--since-time=2020-01-01T00:00:00Z"]), "a1\na2\na3\n");
    assert_eq!(raw(&c, &format!("two/log?container=a&sinceTime={second}")), (true, "a2\na3\n".into()));
    assert_eq!(c.ok(&["logs", "two", "-c", "a", "--since-time=2099-01-01T00:00:00Z"]), "");
    // kubectl asks once per container.
    let all = c.kubectl(&["logs", "two", "--all-containers", "--prefix"]);
    assert!(all.stdout.contains("[pod/two/a] a1") && all.stdout.contains("[pod/two/b] b1"), "{} {}", all.stdout, all.stderr);

    // The apiserver's words when the container is missing or unknown (kubectl itself
    // picks the first container, so these are asked raw).
    assert_eq!(raw(&c, "two/log"), (false, "Error from server (BadRequest): a container name must be specified for pod two, choose one of: [a b]".into()));
    assert_eq!(
        raw(&c, "unscheduled/log"),
        (false, "Error from server (BadRequest): a container name must be specified for pod unscheduled, choose one of: [a b] or one of the init containers: [setup]".into())
    );
    // Init containers are named by -c; a pod on no node has no kubelet to ask: nothing.
    assert_eq!(c.ok(&["logs", "unscheduled", "-c", "setup"]), "");
    assert_eq!(raw(&c, "two/log?container=nope"), (false, "Error from server (BadRequest): container nope is not valid for pod two".into()));
    let o = c.kubectl(&["logs", "two", "-c", "a", "--previous"]);
    assert_eq!(o.stderr.trim(), "Error from server (BadRequest): previous terminated container \"a\" in pod \"two\" not found");

    // Option values the apiserver rejects: not a number (400), out of range (422).
    let (ok, e) = raw(&c, "two/log?container=a&tailLines=abc");
    assert!(!ok && e.starts_with("Error from server (BadRequest): tailLines: "), "{e}");
    assert_eq!(raw(&c, "two/log?container=a&limitBytes=-1").1, "The PodLogOptions \"two\" is invalid: limitBytes: Invalid value: -1: must be greater than 0");
    assert_eq!(raw(&c, "two/log?container=a&sinceSeconds=0").1, "The PodLogOptions \"two\" is invalid: sinceSeconds: Invalid value: 0: must be greater than 0");
    assert_eq!(raw(&c, "two/log?container=a&tailLines=-2").1, "The PodLogOptions \"two\" is invalid: tailLines: Invalid value: -2: must be greater than or equal to 0");

    // A container that cannot start: the kubelet says it is waiting, and why.
    c.eventually(Duration::from_secs(30), "nocmd waiting", || {
        let o = c.kubectl(&["logs", "nocmd"]);
        let want = "Error from server (BadRequest): container \"c\" in pod \"nocmd\" is waiting to start: CreateContainerError";
        if o.stderr.trim() == want { Ok(()) } else { Err(o.stderr) }
    });

    // A crashed container waiting to start again: its log and the previous one are both
    // the instance that ended; once it runs again, --previous is the one before. Each
    // look is taken between two equal readings of the status (a restart may come between).
    let status = || c.ok(&["get", "pod", "crash", "-o", "jsonpath={.status.containerStatuses[0].restartCount} {.status.containerStatuses[0].state.waiting.reason}{.status.containerStatuses[0].state.running.startedAt}"]);
    let look = |want_waiting: bool| {
        c.eventually(Duration::from_secs(90), if want_waiting { "a look between instances" } else { "a look at a restarted instance" }, || {
            let before = status();
            let (n, state) = before.split_once(' ').ok_or_else(|| before.clone())?;
            let n: u32 = n.parse().map_err(|_| before.clone())?;
            if (state == "CrashLoopBackOff") != want_waiting || state.is_empty() || (!want_waiting && n == 0) {
                return Err(before);
            }
            let (cur, prev) = (c.ok(&["logs", "crash"]), c.ok(&["logs", "crash", "--previous", "--timestamps"]));
            if status() != before {
                return Err(format!("{before}: changed while looking"));
            }
            // Instance k (counted from 1) writes "run k"; restartCount n means n+1 instances
            // have started, or n+1 have ended while waiting.
            let (want_cur, want_prev) = if want_waiting { (n + 1, n + 1) } else { (n + 1, n) };
            let prev_text = prev.split_once(' ').map(|(_, t)| t.to_string()).unwrap_or_default();
            if cur == format!("run {want_cur}\n") && prev_text == format!("run {want_prev}\n") { Ok(()) } else { Err(format!("{before}: {cur:?} {prev:?}")) }
        })
    };
    look(true);
    look(false);

    // -f with --limit-bytes ends once the bytes are there.
    let o = c.kubectl(&["logs", "-f", "two", "-c", "a", "--limit-bytes=3"]);
    assert!(o.ok, "{}", o.stderr);
    assert_eq!(o.stdout, "a1\n");
}
