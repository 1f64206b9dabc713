//! exec, cp and port-forward into containerd pods: the node agent relays the bus stream
//! to containerd's CRI streaming server (SPDY/3.1), as the kubelet proxies it.

mod common;

use common::cluster::Cluster;
use common::registry::offline_images;
use std::time::Duration;



#[test]
fn exec_cp_and_port_forward_into_containerd_pods() {
    assert!(unsafe { libc::geteuid() } == 0, "this test runs containerd: run it as root (CI does, after deploy/install-deps.sh)");
    let images = offline_images();
    let tmp = tempfile::tempdir().expect("tempdir");
    let cidr = common::pod_cidr();
    let images_arg = images.to_string_lossy().into_owned();
    let mut c = Cluster::up_with(&tmp.path().join("c"), 1, &["--runtime", "containerd", "--images", &images_arg, "--cluster-cidr", &cidr]);
    c.ok(&["run", "web", "--image=nginx"]);
    c.eventually(Duration::from_secs(90), "web Running", || {
        let p = c.ok(&["get", "pod", "web", "-o", "jsonpath={.status.phase}"]);
        if p == "Running" { Ok(()) } else { Err(p) }
    });

    let o = c.kubectl(&["exec", "web", "--", "sh", "-c", "echo in-container; exit 3"]);
    assert_eq!(o.code, Some(3), "{} {}", o.stdout, o.stderr);
    assert_eq!(o.stdout, "in-container\n");
    let o = c.kubectl_stdin(&["exec", "-i", "web", "--", "cat"], Some("echoed through containerd\n"));
    assert!(o.ok, "{}", o.stderr);
    assert_eq!(o.stdout, "echoed through containerd\n");
    let o = c.kubectl(&["exec", "web", "--", "no-such-program"]);
    assert!(!o.ok && o.stderr.contains("no-such-program"), "{}", o.stderr);

    let src = tmp.path().join("blob");
    let bytes: Vec<u8> = (0..100_000u32).map(|i| (i * 13 % 253) as u8).collect();
    std::fs::write(&src, &bytes).expect("write");
    let o = c.kubectl(&["cp", src.to_str().unwrap(), "web:/tmp/blob"]);
    assert!(o.ok, "cp in: {}", o.stderr);
    let back = tmp.path().join("back");
    let o = c.kubectl(&["cp", "web:/tmp/blob", back.to_str().unwrap()]);
    assert!(o.ok, "cp out: {}", o.stderr);
    assert_eq!(std::fs::read(&back).expect("read"), bytes);

    let local = common::free_port();
    let pf = c.kubectl_background(&["port-forward", "pod/web", &format!("{local}:80")]);
    pf.wait_for(Duration::from_secs(30), "port-forward listening", |o| o.contains("Forwarding from"));
    let a = std::thread::spawn(move || common::http_get(local, "/"));
    let b = std::thread::spawn(move || common::http_get(local, "/"));
    for r in [a.join().expect("a"), b.join().expect("b")] {
        let body = r.expect("a forwarded connection");
        assert!(body.contains("Welcome to nginx!"), "{body}");
    }
    pf.stop();
    let st = c.stop().expect("flotilla up exited");
    assert!(st.success(), "clean exit: {st:?}");
    // `up` again on the same data dir: the pod runs again in a new sandbox.
    let c = Cluster::up_with(&tmp.path().join("c"), 1, &["--runtime", "containerd", "--images", &images_arg, "--cluster-cidr", &cidr]);
    // The stored status still says Running from before the restart: the restarted agent's
    // own report counts the restart (and only then does the container run again).
    c.eventually(Duration::from_secs(90), "web Running again", || {
        let p = c.ok(&["get", "pod", "web", "-o", "jsonpath={.status.phase} {.status.containerStatuses[0].restartCount} {.status.containerStatuses[0].ready}"]);
        if p == "Running 1 true" { Ok(()) } else { Err(p) }
    });
    let o = c.kubectl(&["exec", "web", "--", "sh", "-c", "exit 5"]);
    assert_eq!(o.code, Some(5), "{}", o.stderr);
}
