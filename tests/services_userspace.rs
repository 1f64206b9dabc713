//! The service proxy's userspace mode (kube-proxy's `--proxy-mode userspace`, what a node
//! without nftables gets): the agent holds ClusterIPs on an interface of its own and
//! splices TCP connections to ready endpoints in turn. From a pod, a Service answers by
//! ClusterIP and by name and its requests reach both backends; a NodePort answers on the
//! node's address; a Service without endpoints refuses at once; the log says which mode
//! runs; no nftables table is made; stopping `up` removes the interface.

mod common;

use common::cluster::Cluster;
use common::registry::offline_images;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

fn get_from_host(addr: SocketAddr) -> Result<String, String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(3)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok();
    s.write_all(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n").map_err(|e| e.to_string())?;
    let mut out = String::new();
    s.read_to_string(&mut out).map_err(|e| e.to_string())?;
    Ok(out)
}

fn links() -> String {
    let o = std::process::Command::new("ip").args(["-br", "link"]).output().expect("ip");
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn the_userspace_proxy_answers_cluster_ips_and_node_ports() {
    assert!(unsafe { libc::geteuid() } == 0, "this test runs containerd: run it as root");
    let images = offline_images();
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("c");
    let cidr = common::pod_cidr();
    let images_arg = images.to_string_lossy().into_owned();
    let mut c = Cluster::up_with(&data, 1, &["--runtime", "containerd", "--images", &images_arg, "--cluster-cidr", &cidr, "--proxy-mode", "userspace"]);

    let iface = c.eventually(Duration::from_secs(30), "the userspace proxy's interface", || {
        let log = std::fs::read_to_string(&c.log).unwrap_or_default();
        let name = log.lines().filter(|l| l.contains("service proxy in userspace mode")).find_map(|l| l.find("flsvc").map(|i| l[i..].chars().take_while(|ch| ch.is_ascii_alphanumeric()).collect::<String>()));
        match name {
            Some(n) if links().lines().any(|l| l.starts_with(&format!("{n} "))) => Ok(n),
            n => Err(format!("{n:?}\n{}", links())),
        }
    });
    let log = std::fs::read_to_string(&c.log).unwrap_or_default();
    assert!(!log.contains("service proxy (nftables) starting"), "no nftables proxy in userspace mode");

    c.ok(&["create", "deployment", "web", "--image=nginx", "--replicas=2"]);
    c.ok(&["expose", "deployment", "web", "--port=80", "--type=NodePort"]);
    c.ok(&["create", "service", "clusterip", "nobody", "--tcp=80:80"]);
    c.ok(&["run", "client", "--image=busybox", "--restart=Never", "--", "sleep", "3600"]);
    c.eventually(Duration::from_secs(90), "2 web pods and the client Running", || {
        let out = c.ok(&["get", "pods", "-o", "jsonpath={range .items[*]}{.status.phase} {end}"]);
        if out.split_whitespace().filter(|p| *p == "Running").count() == 3 { Ok(()) } else { Err(out) }
    });
    let cluster_ip = c.ok(&["get", "svc", "web", "-o", "jsonpath={.spec.clusterIP}"]);
    for url in [format!("http://{cluster_ip}/"), "http://web/".to_string()] {
        c.eventually(Duration::from_secs(30), &format!("{url} answers the client pod"), || {
            let o = c.kubectl(&["exec", "client", "--", "wget", "-qO-", &url]);
            if o.stdout.contains("Welcome to nginx!") { Ok(()) } else { Err(format!("{}{}", o.stdout, o.stderr)) }
        });
    }
    // Round robin: a few requests reach both pods.
    for _ in 0..6 {
        let o = c.kubectl(&["exec", "client", "--", "wget", "-qO-", &format!("http://{cluster_ip}/")]);
        assert!(o.stdout.contains("Welcome to nginx!"), "{} {}", o.stdout, o.stderr);
    }
    let names = c.ok(&["get", "pods", "-l", "app=web", "-o", "jsonpath={.items[*].metadata.name}"]);
    for name in names.split_whitespace() {
        c.eventually(Duration::from_secs(10), &format!("{name} served the client"), || {
            let log = c.ok(&["logs", name]);
            if log.contains("\"GET / HTTP/1.1\" 200") { Ok(()) } else { Err(log) }
        });
    }

    // The NodePort on the node's address, from the host.
    let port = c.ok(&["get", "svc", "web", "-o", "jsonpath={.spec.ports[0].nodePort}"]);
    let node_ip = c.ok(&["get", "node", "node-1", "-o", "jsonpath={.status.addresses[?(@.type==\"InternalIP\")].address}"]);
    let np: SocketAddr = format!("{node_ip}:{port}").parse().expect("node address");
    c.eventually(Duration::from_secs(20), "the NodePort answers", || {
        let p = get_from_host(np)?;
        if p.contains("Welcome to nginx!") { Ok(()) } else { Err(p) }
    });

    // No endpoints: refused at once from the pod.
    let empty_ip = c.ok(&["get", "svc", "nobody", "-o", "jsonpath={.spec.clusterIP}"]);
    c.eventually(Duration::from_secs(20), "the empty Service refuses", || {
        let o = c.kubectl(&["exec", "client", "--", "wget", "-qO-", &format!("http://{empty_ip}/")]);
        if !o.ok && o.stderr.contains("refused") { Ok(()) } else { Err(format!("{} {}", o.stdout, o.stderr)) }
    });

    let st = c.stop().expect("flotilla up exited");
    assert!(st.success(), "clean exit: {st:?}\n{}", c.log_tail());
    assert!(!links().lines().any(|l| l.starts_with(&format!("{iface} "))), "the interface is gone: {}", links());
}
