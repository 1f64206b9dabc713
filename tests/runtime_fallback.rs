//! Without containerd on the PATH, `flotilla up` (no `--runtime`) falls back to the
//! process runtime, says so in one line, and its nodes report it.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn up_without_containerd_runs_host_processes_and_says_so() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let empty_path = tmp.path().join("bin");
    std::fs::create_dir_all(&empty_path).expect("bin dir");
    let data = tmp.path().join("c");
    let addr = format!("127.0.0.1:{}", common::free_port());
    let err_log = tmp.path().join("up.err");
    let mut child = Command::new(env!("CARGO_BIN_EXE_flotilla"))
        .args(["up", "--data-dir"])
        .arg(&data)
        .args(["--nodes", "1", "--gateway-addr", &addr, "--dashboard-addr", "off"])
        // No containerd, runc or ctr to be found.
        .env("PATH", &empty_path)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&err_log).expect("log"))
        .spawn()
        .expect("flotilla up");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    let ready = rx.recv_timeout(Duration::from_secs(120));
    let stop = |child: &mut std::process::Child| {
        // SAFETY: signalling the child this test started, by PID.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        child.wait().expect("wait")
    };
    let errors = || std::fs::read_to_string(&err_log).unwrap_or_default();
    let Ok(line) = ready else {
        stop(&mut child);
        panic!("up did not become ready:\n{}", errors());
    };
    assert!(line.starts_with("export KUBECONFIG="), "{line}");
    let warned = errors();
    assert!(warned.contains("warning: containerd, runc or ctr is not installed, or the agent is not root: pods run as host processes"), "{warned}");
    let kubeconfig = data.join("kubeconfig");
    let deadline = Instant::now() + Duration::from_secs(30);
    let wide = loop {
        let o = Command::new("kubectl").args(["get", "nodes", "-o", "wide", "--no-headers"]).env("KUBECONFIG", &kubeconfig).output().expect("kubectl");
        let out = String::from_utf8_lossy(&o.stdout).into_owned();
        if out.contains("Ready") || Instant::now() > deadline {
            break out;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let st = stop(&mut child);
    assert!(wide.contains("flotilla-process://"), "{wide}");
    assert!(!wide.contains("containerd://"), "{wide}");
    assert!(st.success(), "clean exit: {st:?}\n{}", errors());
}
