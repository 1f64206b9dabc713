//! `kubectl exec`, `attach`, `cp` and `port-forward` through the gateway and the bus to
//! host-mode pods: exit codes, stdin, a terminal, files both ways, forwarded connections
//! in parallel, the SPDY fallback, and the real server's refusals.

mod common;

use common::cluster::Cluster;
use std::io::Write;
use std::time::Duration;

fn running(c: &Cluster, pod: &str) {
    c.eventually(Duration::from_secs(60), &format!("{pod} Running"), || {
        let s = c.ok(&["get", "pod", pod, "-o", "jsonpath={.status.phase}"]);
        if s == "Running" { Ok(()) } else { Err(s) }
    });
}


#[test]
fn exec_cp_attach_and_port_forward_to_host_mode_pods() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut c = Cluster::up(&tmp.path().join("cluster"), 1);
    let web_port = common::free_port();
    let pod = format!(
        r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"box"}},"spec":{{"containers":[
            {{"name":"main","image":"busybox","command":["sh","-c","echo served > hello.txt; exec python3 -m http.server {web_port} --bind 127.0.0.1"]}},
            {{"name":"side","image":"busybox","command":["sh","-c","while true; do echo tick; sleep 0.2; done"]}}]}}}}"#
    );
    let o = c.kubectl_stdin(&["apply", "-f", "-"], Some(&pod));
    assert!(o.ok, "{}", o.stderr);
    running(&c, "box");

    // Exit codes and output.
    let o = c.kubectl(&["exec", "box", "-c", "main", "--", "sh", "-c", "echo out; echo err >&2; exit 3"]);
    assert_eq!(o.code, Some(3), "exit code; stderr: {}", o.stderr);
    assert_eq!(o.stdout, "out\n");
    assert!(o.stderr.contains("err"), "{}", o.stderr);
    assert_eq!(c.ok(&["exec", "box", "-c", "main", "--", "printenv", "HOSTNAME"]).trim(), "box");
    // stdin to the end.
    let o = c.kubectl_stdin(&["exec", "-i", "box", "-c", "main", "--", "cat"], Some("line one\nline two\n"));
    assert!(o.ok, "{}", o.stderr);
    assert_eq!(o.stdout, "line one\nline two\n");
    // The same over SPDY, kubectl's fallback.
    let spdy = std::process::Command::new("kubectl")
        .args(["exec", "-i", "box", "-c", "main", "--kubeconfig"])
        .arg(&c.kubeconfig)
        .args(["--", "sh", "-c", "cat; exit 4"])
        .env("KUBECTL_REMOTE_COMMAND_WEBSOCKETS", "false")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map(|mut ch| {
            ch.stdin.take().expect("stdin").write_all(b"via spdy\n").expect("write");
            ch.wait_with_output().expect("kubectl")
        })
        .expect("kubectl");
    assert_eq!(spdy.status.code(), Some(4), "{}", String::from_utf8_lossy(&spdy.stderr));
    assert_eq!(String::from_utf8_lossy(&spdy.stdout), "via spdy\n");

    // Refusals as the real server words them.
    let o = c.kubectl(&["exec", "box", "-c", "nope", "--", "true"]);
    assert!(!o.ok && o.stderr.contains("container nope is not valid for pod box"), "{}", o.stderr);
    let o = c.kubectl(&["exec", "ghost", "--", "true"]);
    assert!(!o.ok && o.stderr.contains("NotFound") || o.stderr.contains("not found"), "{}", o.stderr);
    let o = c.kubectl(&["exec", "box", "-c", "main", "--", "no-such-program"]);
    assert!(!o.ok && o.stderr.contains("no-such-program"), "{}", o.stderr);

    // cp both ways, the same bytes.
    let src = tmp.path().join("in.bin");
    let bytes: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(&src, &bytes).expect("write");
    let o = c.kubectl(&["cp", src.to_str().unwrap(), "box:in.bin", "-c", "main"]);
    assert!(o.ok, "cp in: {}", o.stderr);
    let back = tmp.path().join("out.bin");
    let o = c.kubectl(&["cp", "box:in.bin", back.to_str().unwrap(), "-c", "main"]);
    assert!(o.ok, "cp out: {}", o.stderr);
    assert_eq!(std::fs::read(&back).expect("read back"), bytes, "the same bytes came back");

    // attach follows the container's output.
    let attach = c.kubectl_background(&["attach", "box", "-c", "side"]);
    attach.wait_for(Duration::from_secs(30), "attach prints the container's output", |o| o.contains("tick"));
    attach.stop();

    // port-forward: two local ports' connections in parallel, each answered by the pod.
    let local = common::free_port();
    let pf = c.kubectl_background(&["port-forward", "pod/box", &format!("{local}:{web_port}")]);
    pf.wait_for(Duration::from_secs(30), "port-forward listening", |o| o.contains("Forwarding from"));
    let a = std::thread::spawn(move || common::http_get(local, "/hello.txt"));
    let b = std::thread::spawn(move || common::http_get(local, "/hello.txt"));
    for r in [a.join().expect("a"), b.join().expect("b")] {
        let body = r.expect("a forwarded connection");
        assert!(body.contains("200") && body.contains("served"), "{body}");
    }
    pf.stop();
    // Two ports at once over SPDY/3.1 itself (kubectl's fallback when WebSocket is off).
    let (l1, l2) = (common::free_port(), common::free_port());
    let mut spdy = std::process::Command::new("kubectl")
        .args(["port-forward", "pod/box", &format!("{l1}:{web_port}"), &format!("{l2}:{web_port}"), "--kubeconfig"])
        .arg(&c.kubeconfig)
        .env("KUBECTL_PORT_FORWARD_WEBSOCKETS", "false")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("kubectl port-forward");
    let answered = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        c.eventually(Duration::from_secs(30), "both forwarded ports answer", || match (common::http_get(l1, "/hello.txt"), common::http_get(l2, "/hello.txt")) {
            (Ok(a), Ok(b)) if a.contains("served") && b.contains("served") => Ok(()),
            other => Err(format!("{other:?}")),
        })
    }));
    // SAFETY: signalling the kubectl this test started, by PID.
    unsafe { libc::kill(spdy.id() as i32, libc::SIGTERM) };
    let _ = spdy.wait();
    if let Err(e) = answered {
        std::panic::resume_unwind(e);
    }
    c.stop();
}
