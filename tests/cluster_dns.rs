//! Cluster DNS on real containers: a busybox pod's resolv.conf names its node's DNS
//! server with the namespace's search path and ndots:5; Service names resolve to the
//! ClusterIP (full and short through the search path), a headless Service's to its
//! ready pods' addresses, an unknown name does not; `kube-dns` is in kube-system; the
//! server handles nothing while the cluster is idle and its sockets close with `up`.
//! No query leaves the machine (upstream forwarding is unit-tested in node-agent).

mod common;

use common::cluster::Cluster;
use common::registry::offline_images;
use std::collections::BTreeSet;
use std::time::Duration;

fn set(s: &str) -> BTreeSet<String> {
    s.split_whitespace().map(str::to_string).collect()
}

/// The addresses busybox's nslookup printed after the "Name:" line (the server's own
/// address comes before it).
fn answers(out: &str) -> BTreeSet<String> {
    let Some(i) = out.find("Name:") else { return BTreeSet::new() };
    out[i..].lines().filter_map(|l| l.trim().strip_prefix("Address:")).map(|a| a.trim().to_string()).filter(|a| !a.contains(':') || a.parse::<std::net::Ipv4Addr>().is_ok()).collect()
}

fn dns_messages(c: &Cluster) -> Option<u64> {
    let text = c.ok(&["get", "--raw", "/metrics"]);
    text.lines().find_map(|l| l.strip_prefix("flotilla_actor_messages_total{actor=\"cluster-dns\"} ")).and_then(|n| n.trim().parse().ok())
}

fn udp_listeners_on(ip: &str) -> String {
    let o = std::process::Command::new("ss").args(["-Hlnu", "src", &format!("{ip}:53")]).output().expect("ss");
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn pods_resolve_services_through_the_node_dns() {
    assert!(unsafe { libc::geteuid() } == 0, "this test runs containerd: run it as root");
    let images = offline_images();
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("c");
    let cidr = format!("10.{}.0.0/16", 150 + (std::process::id() + 17) % 50);
    let images_arg = images.to_string_lossy().into_owned();
    let mut c = Cluster::up_with(&data, 1, &["--runtime", "containerd", "--images", &images_arg, "--cluster-cidr", &cidr]);

    // The kube-dns Service is made at bootstrap, on kubeadm's address.
    let dns_svc = c.ok(&["get", "svc", "-n", "kube-system", "kube-dns", "-o", "jsonpath={.spec.clusterIP} {.spec.ports[*].name} {.spec.ports[*].protocol}"]);
    assert_eq!(dns_svc, "10.96.0.10 dns dns-tcp UDP TCP");

    c.ok(&["create", "service", "clusterip", "web", "--tcp=80:80"]);
    let web_ip = c.ok(&["get", "svc", "web", "-o", "jsonpath={.spec.clusterIP}"]);
    assert!(!web_ip.is_empty());
    // A headless Service over two busybox pods.
    c.ok(&["create", "deployment", "db", "--image=busybox", "--replicas=2", "--", "sleep", "3600"]);
    c.ok(&["create", "service", "clusterip", "db", "--clusterip=None", "--tcp=5432:5432"]);

    c.ok(&["run", "client", "--image=busybox", "--restart=Never", "--", "sleep", "3600"]);
    c.eventually(Duration::from_secs(60), "client Running", || {
        let p = c.ok(&["get", "pod", "client", "-o", "jsonpath={.status.phase}"]);
        if p == "Running" { Ok(()) } else { Err(p) }
    });
    let node = c.ok(&["get", "pod", "client", "-o", "jsonpath={.spec.nodeName}"]);
    let pod_cidr = c.ok(&["get", "node", &node, "-o", "jsonpath={.spec.podCIDR}"]);
    let net: std::net::Ipv4Addr = pod_cidr.split('/').next().unwrap().parse().expect("podCIDR");
    let gateway = std::net::Ipv4Addr::from(u32::from(net) + 1).to_string();

    // resolv.conf: the node's DNS, the namespace's search path, ndots:5.
    let conf = c.ok(&["exec", "client", "--", "cat", "/etc/resolv.conf"]);
    assert!(conf.lines().any(|l| l.trim() == format!("nameserver {gateway}")), "{conf}");
    assert!(conf.lines().any(|l| l.trim().starts_with("search default.svc.cluster.local svc.cluster.local cluster.local")), "{conf}");
    assert!(conf.lines().any(|l| l.trim() == "options ndots:5"), "{conf}");
    assert!(udp_listeners_on(&gateway).contains(&format!("{gateway}:53")), "DNS listens on the bridge: {}", udp_listeners_on(&gateway));

    for name in ["web.default.svc.cluster.local", "web"] {
        c.eventually(Duration::from_secs(20), &format!("{name} resolves to the ClusterIP"), || {
            let o = c.kubectl(&["exec", "client", "--", "nslookup", name]);
            let got = answers(&o.stdout);
            if got == BTreeSet::from([web_ip.clone()]) { Ok(()) } else { Err(format!("{got:?}: {}{}", o.stdout, o.stderr)) }
        });
    }
    let o = c.kubectl(&["exec", "client", "--", "nslookup", "nope.default.svc.cluster.local"]);
    assert!(!o.ok && answers(&o.stdout).is_empty(), "an unknown name fails: {}{}", o.stdout, o.stderr);
    assert!(format!("{}{}", o.stdout, o.stderr).contains("NXDOMAIN"), "{}{}", o.stdout, o.stderr);

    let db_ips = c.eventually(Duration::from_secs(90), "2 Running db pods", || {
        let out = c.ok(&["get", "pods", "-l", "app=db", "-o", "jsonpath={range .items[*]}{.status.phase},{.status.podIP} {end}"]);
        let rows: Vec<&str> = out.split_whitespace().collect();
        if rows.len() == 2 && rows.iter().all(|r| r.starts_with("Running,") && r.len() > "Running,".len()) {
            Ok(rows.iter().map(|r| r["Running,".len()..].to_string()).collect::<BTreeSet<_>>())
        } else {
            Err(out)
        }
    });
    c.eventually(Duration::from_secs(30), "the headless Service resolves to its pods", || {
        let o = c.kubectl(&["exec", "client", "--", "nslookup", "db.default.svc.cluster.local"]);
        let got = answers(&o.stdout);
        if got == db_ips { Ok(()) } else { Err(format!("{got:?} want {db_ips:?}: {}{}", o.stdout, o.stderr)) }
    });
    assert_eq!(set(&db_ips.iter().cloned().collect::<Vec<_>>().join(" ")).len(), 2);

    // Idle: the DNS server's informers wake for nothing.
    c.eventually(Duration::from_secs(60), "a quiet 10 s window for cluster-dns", || {
        let before = dns_messages(&c);
        std::thread::sleep(Duration::from_secs(10));
        let after = dns_messages(&c);
        if before.is_some() && before == after { Ok(()) } else { Err(format!("{before:?} -> {after:?}")) }
    });

    let st = c.stop().expect("flotilla up exited");
    assert!(st.success(), "clean exit: {st:?}\n{}", c.log_tail());
    assert_eq!(udp_listeners_on(&gateway), "", "the DNS socket is closed");
}
