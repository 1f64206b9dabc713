//! The process runtime alone, no NATS: a host-mode container writes its log, and stopping
//! it leaves no process of its group behind (SIGTERM first, SIGKILL for those ignoring it).

use node_agent::runtime::process::{group_alive, ProcessRuntime};
use node_agent::runtime::{ContainerSpec, Runtime};
use std::path::{Path, PathBuf};
use std::time::Duration;

fn spec(dir: &Path, script: &str) -> ContainerSpec {
    ContainerSpec {
        pod_key: "t/p".into(),
        name: "c".into(),
        command: vec!["sh".into(), "-c".into(), script.into()],
        env: vec![("HOSTNAME".into(), "p".into())],
        working_dir: dir.join("work"),
        log_path: dir.join("c/0.log"),
    }
}

fn scratch(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("flotilla-rt-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(d.join("work")).unwrap();
    d
}

/// Live (non-zombie) processes whose process group is `pgid`, read from /proc.
fn members(pgid: i32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let Some((_, rest)) = stat.rsplit_once(')') else { return false };
            let f: Vec<&str> = rest.split_whitespace().collect();
            f.len() > 2 && f[2] == pgid.to_string() && f[0] != "Z"
        })
        .collect()
}

async fn wait_for_log(path: &Path, text: &str) -> String {
    for _ in 0..250 {
        let s = std::fs::read_to_string(path).unwrap_or_default();
        if s.contains(text) {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{text:?} never reached {}", path.display());
}

#[tokio::test]
async fn runs_logs_and_stops_the_whole_group() {
    let dir = scratch("stop");
    let s = spec(&dir, "echo hi $HOSTNAME; sleep 100 & sleep 100");
    let rt = ProcessRuntime;
    let (tx, rx) = tokio::sync::oneshot::channel();
    let started = rt.start_container(&s, Box::new(move |_, code| {
        let _ = tx.send(code);
    })).expect("start");
    assert!(wait_for_log(&s.log_path, "hi").await.contains("hi p"), "env reaches the process");
    assert!(rt.alive(started));
    // The sleeps are forked after the echo: under load they may trail the log line.
    for _ in 0..250 {
        if members(started.pid).len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(members(started.pid).len() >= 2, "the shell and its sleeps share one group");

    tokio::time::timeout(Duration::from_secs(10), rt.stop_container(started, Duration::from_secs(5))).await.expect("stop finishes");
    let code = tokio::time::timeout(Duration::from_secs(5), rx).await.expect("exit seen").expect("code");
    assert_eq!(code, 128 + libc::SIGTERM, "SIGTERM was enough");
    assert!(!rt.alive(started) && !group_alive(started.pid));
    assert!(members(started.pid).is_empty(), "no process of the group survives");
    // The main process was reaped by the runtime, not left a zombie.
    for _ in 0..100 {
        if !Path::new(&format!("/proc/{}", started.pid)).exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!Path::new(&format!("/proc/{}", started.pid)).exists());
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn sigterm_ignored_means_sigkill_after_grace() {
    let dir = scratch("kill");
    let s = spec(&dir, "trap '' TERM; echo ready; while true; do sleep 1; done");
    let rt = ProcessRuntime;
    let (tx, rx) = tokio::sync::oneshot::channel();
    let started = rt.start_container(&s, Box::new(move |_, code| {
        let _ = tx.send(code);
    })).expect("start");
    wait_for_log(&s.log_path, "ready").await;
    let t0 = std::time::Instant::now();
    rt.stop_container(started, Duration::from_millis(300)).await;
    assert!(t0.elapsed() >= Duration::from_millis(300), "the grace period was given");
    let code = tokio::time::timeout(Duration::from_secs(5), rx).await.expect("exit seen").expect("code");
    assert_eq!(code, 128 + libc::SIGKILL);
    assert!(members(started.pid).is_empty());
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_missing_working_dir_is_a_create_error() {
    let dir = scratch("wd");
    let mut s = spec(&dir, "true");
    s.working_dir = dir.join("nosuch");
    let e = ProcessRuntime.start_container(&s, Box::new(|_, _| {})).unwrap_err();
    assert!(e.to_string().contains("does not exist"), "{e}");
    assert!(!s.working_dir.exists(), "nothing is created on the host");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn an_exit_reports_its_code() {
    let dir = scratch("exit");
    let s = spec(&dir, "echo bye >&2; exit 3");
    let (tx, rx) = tokio::sync::oneshot::channel();
    ProcessRuntime.start_container(&s, Box::new(move |_, code| {
        let _ = tx.send(code);
    })).expect("start");
    let code = tokio::time::timeout(Duration::from_secs(5), rx).await.expect("exit seen").expect("code");
    assert_eq!(code, 3);
    assert!(std::fs::read_to_string(&s.log_path).unwrap().contains("bye"), "stderr goes to the log too");
    let _ = std::fs::remove_dir_all(dir);
}
