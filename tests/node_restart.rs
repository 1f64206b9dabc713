//! A node agent that is killed and started again leaves its pods running: containerd's
//! shims outlive it, and the new agent adopts the sandbox and containers it finds (same
//! processes, same container IDs, no restart counted), follows them to their ends, and
//! sweeps what belongs to pods deleted while it was away. With `--keep-pods-on-exit` a
//! SIGTERM leaves the pods running too (an upgrade); without it, a SIGTERM still leaves
//! nothing behind.

mod common;

use common::cluster::{pod_pids, Cluster};
use common::registry::offline_images;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const KEEP: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: keep
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: busybox
    command: ["sh", "-c", "date +%s%N > /tmp/started; while [ ! -f /tmp/stop ]; do sleep 0.2; done; exit 3"]
    readinessProbe:
      exec: {command: ["true"]}
      periodSeconds: 1
"#;

/// The standalone agent, signalled by PID; dropped, it is stopped with SIGTERM so a failed
/// test leaves no pod, shim or bridge behind either.
struct Agent(Option<Child>);

impl Agent {
    fn start(c: &Cluster, dir: &Path, images: &str, log: &Path, extra: &[&str]) -> Agent {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_flotilla"))
            .args(["node", "--nats-url", &c.nats_url(), "--name", "node-r", "--runtime", "containerd", "--images", images, "--data-dir"])
            .arg(dir)
            .args(extra)
            .env("FLOTILLA_NATS_CREDS", c.admin_creds())
            .env("RUST_LOG", "info,async_nats=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting flotilla node");
        Agent(Some(child))
    }

    /// SIGKILL: the agent dies without a word (its containerd child with it).
    fn crash(mut self) {
        if let Some(mut ch) = self.0.take() {
            let _ = ch.kill();
            let _ = ch.wait();
        }
    }

    /// SIGTERM, then waits for it to finish its cleanup.
    fn stop(mut self) -> std::process::ExitStatus {
        let mut ch = self.0.take().expect("running");
        // SAFETY: signalling our own child by PID.
        unsafe { libc::kill(ch.id() as i32, libc::SIGTERM) };
        for _ in 0..600 {
            if let Ok(Some(st)) = ch.try_wait() {
                return st;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = ch.kill();
        panic!("the agent did not stop within 60 s");
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if self.0.is_some() {
            Agent(self.0.take()).stop();
        }
    }
}

/// Processes whose command line mentions `needle` (the agent's data dir names its shims).
fn processes_mentioning(needle: &str) -> Vec<i32> {
    let me = std::process::id() as i32;
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|p| *p != me)
        .filter(|p| std::fs::read(format!("/proc/{p}/cmdline")).is_ok_and(|raw| String::from_utf8_lossy(&raw).replace('\0', " ").contains(needle)))
        .collect()
}

#[test]
fn a_restarted_agent_adopts_its_running_pods() {
    assert!(unsafe { libc::geteuid() } == 0, "this test runs containerd: run it as root");
    let images = offline_images();
    let images = images.to_string_lossy().into_owned();
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("c");
    let cidr = common::pod_cidr();
    let mut c = Cluster::up_with(&data, 0, &["--runtime", "containerd", "--images", &images, "--cluster-cidr", &cidr]);
    let nodes_dir = tmp.path().join("nodes");
    let agent_log = tmp.path().join("agent.log");
    let agent = Agent::start(&c, &nodes_dir, &images, &agent_log, &[]);
    let log = || std::fs::read_to_string(&agent_log).unwrap_or_default();
    c.eventually(Duration::from_secs(60), "node-r Ready", || {
        let s = c.kubectl(&["get", "node", "node-r", "-o", "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}"]).stdout;
        if s == "True" { Ok(()) } else { Err(format!("{s}\n{}", log())) }
    });

    let o = c.kubectl_stdin(&["apply", "-f", "-"], Some(KEEP));
    assert!(o.ok, "{}", o.stderr);
    c.ok(&["run", "gone", "--image=busybox", "--restart=Never", "--", "sleep", "3600"]);
    let ready = |c: &Cluster, pod: &str| c.ok(&["get", "pod", pod, "-o", "jsonpath={.status.phase} {.status.containerStatuses[0].ready}"]);
    for pod in ["keep", "gone"] {
        c.eventually(Duration::from_secs(90), &format!("{pod} Running"), || {
            let s = ready(&c, pod);
            if s.starts_with("Running") && (pod == "gone" || s == "Running true") { Ok(()) } else { Err(format!("{s}\n{}", log())) }
        });
    }
    let before = |c: &Cluster| c.ok(&["get", "pod", "keep", "-o", "jsonpath={.status.containerStatuses[0].containerID} {.status.containerStatuses[0].restartCount} {.status.podIP}"]);
    let was = before(&c);
    let started = c.ok(&["exec", "keep", "--", "cat", "/tmp/started"]);
    // The container's first process (its shell; its `sleep`s come and go).
    let main_pid = || pod_pids("keep").into_iter().min();
    let pids = main_pid();
    assert!(pids.is_some(), "the pod's processes are visible");
    assert!(!pod_pids("gone").is_empty());

    // The agent dies without a word (its containerd child goes with it); a pod is
    // force-deleted meanwhile.
    agent.crash();
    c.ok(&["delete", "pod", "gone", "--force", "--grace-period=0"]);
    assert_eq!(main_pid(), pids, "the pod outlives its agent");

    let agent = Agent::start(&c, &nodes_dir, &images, &agent_log, &["--keep-pods-on-exit"]);
    c.eventually(Duration::from_secs(60), "the pod adopted", || if log().matches("adopted a running pod").count() == 1 { Ok(()) } else { Err(log()) });
    c.eventually(Duration::from_secs(30), "the deleted pod's sandbox swept", || if pod_pids("gone").is_empty() { Ok(()) } else { Err(format!("{:?}", pod_pids("gone"))) });
    // The same processes and container, no restart, still ready, still answering exec.
    assert_eq!(main_pid(), pids, "not restarted");
    c.eventually(Duration::from_secs(20), "keep Running and ready again", || {
        let s = ready(&c, "keep");
        if s == "Running true" { Ok(()) } else { Err(s) }
    });
    assert_eq!(before(&c), was);
    assert_eq!(c.ok(&["exec", "keep", "--", "cat", "/tmp/started"]), started);

    // The adopted container is followed to its end and restarted as any other.
    c.ok(&["exec", "keep", "--", "touch", "/tmp/stop"]);
    c.eventually(Duration::from_secs(60), "the adopted container's exit seen and restarted", || {
        let s = c.ok(&["get", "pod", "keep", "-o", "jsonpath={.status.containerStatuses[0].restartCount} {.status.containerStatuses[0].lastState.terminated.exitCode}"]);
        if s == "1 3" { Ok(()) } else { Err(s) }
    });

    // An agent told to keep its pods leaves them running on SIGTERM (an upgrade), and the
    // next one adopts them again.
    let pids = main_pid();
    let was = before(&c);
    let st = agent.stop();
    assert!(st.success(), "clean exit: {st:?}\n{}", log());
    assert!(log().contains("leaving every pod running"), "{}", log());
    assert_eq!(main_pid(), pids, "the pod outlives a kept stop");
    let agent = Agent::start(&c, &nodes_dir, &images, &agent_log, &[]);
    c.eventually(Duration::from_secs(60), "the pod adopted again", || if log().matches("adopted a running pod").count() == 2 { Ok(()) } else { Err(log()) });
    assert_eq!(main_pid(), pids);
    c.eventually(Duration::from_secs(20), "keep Running and ready after the second restart", || {
        let s = ready(&c, "keep");
        if s == "Running true" { Ok(()) } else { Err(s) }
    });
    assert_eq!(before(&c), was);

    // A SIGTERM without it stops everything: no shim of this agent is left.
    let st = agent.stop();
    assert!(st.success(), "clean exit: {st:?}\n{}", log());
    let left = processes_mentioning(&nodes_dir.to_string_lossy());
    assert!(left.is_empty(), "processes of the agent left: {left:?}");
    assert!(pod_pids("keep").is_empty(), "the pod stopped with the agent");
    let st = c.stop().expect("flotilla up exited");
    assert!(st.success(), "clean exit: {st:?}\n{}", c.log_tail());
}
