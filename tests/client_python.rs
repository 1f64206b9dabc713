//! The official Python `kubernetes` client (from PyPI) against a real `flotilla up`: it
//! creates, reads, patches, lists, watches and deletes a pod (tests/clients/pods.py), with
//! the cluster's admin kubeconfig and TLS verified against the cluster CA (also with
//! OpenSSL's strict checks, which Python 3.13 turns on by default).
//!
//! The interpreter is `<repo>/.venv/bin/python`, which deploy/install-deps.sh makes with
//! the pinned packages of tests/clients/requirements.txt; `FLOTILLA_PYTHON` names another
//! interpreter that has them.

mod common;

use common::cluster::Cluster;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Runs one of tests/clients/*.py with `args`, credentials and proxies only from the
/// kubeconfig; fails the test with everything it printed when it fails. Answers stdout.
fn run_client(c: &Cluster, script: &str, args: &[&str]) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients").join(script);
    let out = Command::new(python())
        .arg(&script)
        .arg(&c.kubeconfig)
        .args(args)
        // The client must not find credentials or a proxy anywhere but the kubeconfig.
        .env_remove("KUBECONFIG")
        .env_remove("HTTPS_PROXY")
        .env_remove("https_proxy")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .expect("running the Python client");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{} failed ({}):\nstdout:\n{stdout}\nstderr:\n{stderr}\nflotilla log:\n{}", script.display(), out.status, c.log_tail());
    stdout
}

fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("FLOTILLA_PYTHON") {
        return PathBuf::from(p);
    }
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    assert!(p.exists(), "{} is missing: run deploy/install-deps.sh (it installs the Python kubernetes client there)", p.display());
    p
}

#[test]
fn python_client_creates_lists_watches_and_deletes_a_pod() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let c = Cluster::up(&tmp.path().join("cluster"), 0);
    c.ok(&["create", "namespace", "py"]);

    let stdout = run_client(&c, "pods.py", &["py"]);

    let lines: Vec<&str> = stdout.lines().collect();
    // The gateway's certificate passes OpenSSL's strict checks (Python 3.13's default).
    assert!(lines[0].starts_with("strict TLS verification ok (TLSv1."), "{stdout}");
    assert!(lines[1].starts_with("server 1.32 v1.32."), "{stdout}");
    let expect_line = |prefix: &str| {
        lines.iter().find(|l| l.starts_with(prefix)).unwrap_or_else(|| panic!("no line starting {prefix:?} in:\n{stdout}"))
    };
    expect_line("listed 0 pods at resourceVersion ");
    assert!(expect_line("created pod py-pod uid ").len() > "created pod py-pod uid ".len());
    expect_line("read pod py-pod phase Pending");
    assert_eq!(*expect_line("patched labels"), "patched labels app=py-client,patched=yes,tier=test");
    assert_eq!(*expect_line("listed pods with"), "listed pods with app=py-client: py-pod");
    assert_eq!(*expect_line("second create:"), "second create: 409 Conflict");
    assert_eq!(*expect_line("deleted pod"), "deleted pod py-pod");
    assert_eq!(*expect_line("read after delete:"), "read after delete: 404");
    // The pod's whole life, in order: added, changed (by the patch, and by the scheduler
    // finding no node), deleted.
    let events: Vec<&str> = expect_line("watch events:").trim_start_matches("watch events:").split_whitespace().collect();
    let kinds: Vec<&str> = events.iter().step_by(2).copied().collect();
    assert!(events.iter().skip(1).step_by(2).all(|n| *n == "py-pod"), "{stdout}");
    assert_eq!(kinds.first(), Some(&"ADDED"), "{stdout}");
    assert_eq!(kinds.last(), Some(&"DELETED"), "{stdout}");
    assert!(kinds.len() >= 3 && kinds[1..kinds.len() - 1].iter().all(|k| *k == "MODIFIED"), "{stdout}");
    expect_line("watch saw the patch");
    assert_eq!(lines.last().copied(), Some("ok"), "{stdout}");

    // What the client did is what kubectl sees: the pod is gone.
    assert_eq!(c.ok(&["get", "pods", "-n", "py", "-o", "name"]).trim(), "");
}

#[test]
fn python_client_execs_and_forwards_ports() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let c = Cluster::up(&tmp.path().join("cluster"), 1);
    c.ok(&["create", "namespace", "py"]);
    let port = common::free_port();
    let pod = format!(
        r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"pyexec","namespace":"py"}},"spec":{{"containers":[
            {{"name":"main","image":"python","command":["sh","-c","echo served > hello.txt; exec python3 -m http.server {port} --bind 127.0.0.1"]}}]}}}}"#
    );
    let o = c.kubectl_stdin(&["apply", "-f", "-"], Some(&pod));
    assert!(o.ok, "{}", o.stderr);
    c.eventually(std::time::Duration::from_secs(60), "pyexec Running", || {
        let s = c.ok(&["get", "pod", "pyexec", "-n", "py", "-o", "jsonpath={.status.phase}"]);
        if s == "Running" { Ok(()) } else { Err(s) }
    });
    // The server inside is up once a connection is accepted.
    c.eventually(std::time::Duration::from_secs(30), "the pod's server listening", || std::net::TcpStream::connect(("127.0.0.1", port)).map(|_| ()).map_err(|e| e.to_string()));
    let stdout = run_client(&c, "exec.py", &["py", "pyexec", &port.to_string()]);
    assert!(stdout.contains("exec output from-python"), "{stdout}");
    assert!(stdout.contains("exec stdin hello exit 7"), "{stdout}");
    assert!(stdout.contains("portforward ok"), "{stdout}");
    assert_eq!(stdout.lines().last(), Some("ok"), "{stdout}");
}
