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
        image: "busybox".into(),
        command: vec!["sh".into(), "-c".into()],
        args: vec![script.into()],
        env: vec![("HOSTNAME".into(), "p".into())],
        working_dir: Some(dir.join("work")),
        log_path: dir.join("c/0.log"),
        attempt: 0,
        stdin: false,
        stdin_once: false,
        tty: false,
        mounts: vec![],
        resources: Default::default(),
        security: Default::default(),
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
    let rt = ProcessRuntime::default();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let started = rt.spawn(&s, Box::new(move |code| {
        let _ = tx.send(code);
    })).expect("start");
    let pid = started.pid.expect("host processes have a pid");
    assert!(wait_for_log(&s.log_path, "hi").await.contains("hi p"), "env reaches the process");
    assert!(group_alive(pid));
    // The sleeps are forked after the echo: under load they may trail the log line.
    for _ in 0..250 {
        if members(pid).len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(members(pid).len() >= 2, "the shell and its sleeps share one group");

    tokio::time::timeout(Duration::from_secs(10), rt.stop_container(&started, Duration::from_secs(5))).await.expect("stop finishes");
    let code = tokio::time::timeout(Duration::from_secs(5), rx).await.expect("exit seen").expect("code");
    assert_eq!(code, 128 + libc::SIGTERM, "SIGTERM was enough");
    assert!(!group_alive(pid));
    assert!(members(pid).is_empty(), "no process of the group survives");
    // The main process was reaped by the runtime, not left a zombie.
    for _ in 0..100 {
        if !Path::new(&format!("/proc/{pid}")).exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!Path::new(&format!("/proc/{pid}")).exists());
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn sigterm_ignored_means_sigkill_after_grace() {
    let dir = scratch("kill");
    let s = spec(&dir, "trap '' TERM; echo ready; while true; do sleep 1; done");
    let rt = ProcessRuntime::default();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let started = rt.spawn(&s, Box::new(move |code| {
        let _ = tx.send(code);
    })).expect("start");
    let pid = started.pid.expect("host processes have a pid");
    wait_for_log(&s.log_path, "ready").await;
    let t0 = std::time::Instant::now();
    rt.stop_container(&started, Duration::from_millis(300)).await;
    assert!(t0.elapsed() >= Duration::from_millis(300), "the grace period was given");
    let code = tokio::time::timeout(Duration::from_secs(5), rx).await.expect("exit seen").expect("code");
    assert_eq!(code, 128 + libc::SIGKILL);
    assert!(members(pid).is_empty());
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_missing_working_dir_is_a_create_error() {
    let dir = scratch("wd");
    let mut s = spec(&dir, "true");
    s.working_dir = Some(dir.join("nosuch"));
    let e = ProcessRuntime::default().spawn(&s, Box::new(|_| {})).unwrap_err();
    assert!(e.to_string().contains("does not exist"), "{e}");
    assert!(!dir.join("nosuch").exists(), "nothing is created on the host");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn an_exit_reports_its_code() {
    let dir = scratch("exit");
    let s = spec(&dir, "echo bye >&2; exit 3");
    let (tx, rx) = tokio::sync::oneshot::channel();
    ProcessRuntime::default().spawn(&s, Box::new(move |code| {
        let _ = tx.send(code);
    })).expect("start");
    let code = tokio::time::timeout(Duration::from_secs(5), rx).await.expect("exit seen").expect("code");
    assert_eq!(code, 3);
    assert!(std::fs::read_to_string(&s.log_path).unwrap().contains("bye"), "stderr goes to the log too");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_mounted_volume_is_named_in_the_environment() {
    let dir = scratch("mount");
    let vol = dir.join("vol");
    std::fs::create_dir_all(&vol).unwrap();
    let mut s = spec(&dir, "echo stored > \"$FLOTILLA_VOLUME_WWW_DATA/f\"; echo done");
    s.mounts = vec![node_agent::runtime::Mount { volume: "www-data".into(), host_path: vol.clone(), container_path: "/data".into(), read_only: false }];
    let rt = ProcessRuntime::default();
    let (tx, rx) = tokio::sync::oneshot::channel();
    rt.spawn(&s, Box::new(move |code| {
        let _ = tx.send(code);
    }))
    .expect("start");
    assert_eq!(rx.await.unwrap(), 0);
    wait_for_log(&s.log_path, "done").await;
    assert_eq!(std::fs::read_to_string(vol.join("f")).unwrap(), "stored\n");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn run_as_user_group_and_groups_apply_to_host_processes() {
    // setuid needs root; elsewhere the runtime refuses at spawn, which says nothing here.
    if unsafe { libc::geteuid() } != 0 {
        return;
    }
    let dir = scratch("ident");
    // The log is written by the agent, the working dir is only read: uid 1000 can run there.
    let mut s = spec(&dir, "echo \"ids $(id -u) $(id -g) $(id -G)\"; grep NoNewPrivs /proc/self/status");
    s.security = node_agent::runtime::Security { run_as_user: Some(1000), run_as_group: Some(3000), supplemental_groups: vec![2000], no_new_privs: true, ..Default::default() };
    let rt = ProcessRuntime::default();
    let (tx, rx) = tokio::sync::oneshot::channel();
    rt.spawn(&s, Box::new(move |code| {
        let _ = tx.send(code);
    }))
    .expect("start");
    let code = tokio::time::timeout(Duration::from_secs(10), rx).await.expect("exit seen").expect("code");
    assert_eq!(code, 0);
    let log = wait_for_log(&s.log_path, "NoNewPrivs").await;
    assert!(log.contains("ids 1000 3000 "), "{log}");
    let groups = log.lines().find(|l| l.contains("ids ")).unwrap_or_default();
    assert!(groups.contains("2000") && !groups.split_whitespace().any(|w| w == "0"), "root's groups are dropped: {groups}");
    assert!(log.contains("NoNewPrivs:\t1"), "{log}");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn limits_put_a_host_process_in_cgroups_and_an_oom_kill_is_oom_killed() {
    use node_agent::runtime::{process_cgroups, Resources, Sandbox};
    if unsafe { libc::geteuid() } != 0 || !Path::new("/sys/fs/cgroup/memory/memory.limit_in_bytes").exists() {
        return;
    }
    let dir = scratch("cgroup");
    let parent = format!("/flotilla/rt-test-{}/host", std::process::id());
    let rt = ProcessRuntime { host_ip: "127.0.0.1".into(), cgroup_parent: Some(parent.clone()) };
    let sandbox = Sandbox { id: "host/u-1".into(), ip: None };
    let rel = process_cgroups::container_rel(&parent, "u-1", "c", 0);
    let mem = format!("/sys/fs/cgroup/memory{rel}");
    let cpu = format!("/sys/fs/cgroup/cpu{rel}");
    // The limits are read from inside, then a tail holding one endless line outgrows 16Mi.
    let mut s = spec(&dir, &format!("cat {mem}/memory.limit_in_bytes {cpu}/cpu.cfs_quota_us; grep -c {rel} /proc/self/cgroup; echo go; head -c 256m /dev/zero | tail"));
    s.resources = Resources { memory_limit_bytes: Some(16 << 20), cpu_request_millis: Some(100), cpu_limit_millis: Some(500) };
    let (tx, rx) = tokio::sync::oneshot::channel();
    rt.start_container(&sandbox, &s, Box::new(move |exit| {
        let _ = tx.send(exit);
    }))
    .await
    .expect("start");
    let exit = tokio::time::timeout(Duration::from_secs(30), rx).await.expect("exit seen").expect("exit");
    let log = wait_for_log(&s.log_path, "go").await;
    assert!(log.contains("16777216") && log.contains("50000"), "{log}");
    assert!(log.contains(" 2\n"), "in the memory and the cpu cgroup: {log}");
    assert_eq!((exit.code, exit.reason.as_deref()), (137, Some("OOMKilled")));
    assert!(!Path::new(&mem).exists() && !Path::new(&cpu).exists(), "the container's cgroups go with it");
    rt.remove_sandbox(&sandbox).await;
    node_agent::runtime::cri::cgroups::remove_node(&format!("rt-test-{}", std::process::id()));
    assert!(!Path::new(&format!("/sys/fs/cgroup/memory/flotilla/rt-test-{}", std::process::id())).exists());

    // Without resources, no cgroup is made.
    let plain = spec(&dir, "grep -c flotilla /proc/self/cgroup; true");
    let (tx, rx) = tokio::sync::oneshot::channel();
    let mut plain = plain;
    plain.log_path = dir.join("c/1.log");
    rt.start_container(&sandbox, &plain, Box::new(move |exit| {
        let _ = tx.send(exit);
    }))
    .await
    .expect("start");
    tokio::time::timeout(Duration::from_secs(10), rx).await.expect("exit seen").expect("exit");
    assert!(wait_for_log(&plain.log_path, "0").await.contains(" 0\n"));
    let _ = std::fs::remove_dir_all(dir);
}
