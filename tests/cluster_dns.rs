//! Cluster DNS on real containers: each node's DNS server is kube-dns' endpoint on that
//! node, so a busybox pod's resolv.conf names 10.96.0.10 with the namespace's search
//! path and ndots:5, and the node's proxy carries the queries to its own server; Service names resolve to the
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

/// One A query in TCP framing (RFC 7766), by hand: busybox's nslookup speaks UDP only.
fn tcp_query(name: &str) -> Vec<u8> {
    let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in name.split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    let mut framed = (q.len() as u16).to_be_bytes().to_vec();
    framed.extend(q);
    framed
}

/// The single answer's address in a framed reply, as `od -tu1` printed it.
fn tcp_answer(od: &str) -> Result<std::net::Ipv4Addr, String> {
    let r: Vec<u8> = od.split_whitespace().filter_map(|b| b.parse().ok()).collect();
    if r.len() < 18 || r[2..4] != [0x12, 0x34] || r[5] & 0x0f != 0 || u16::from_be_bytes([r[8], r[9]]) != 1 {
        return Err(format!("not one answer: {r:?}"));
    }
    let n = r.len();
    Ok(std::net::Ipv4Addr::new(r[n - 4], r[n - 3], r[n - 2], r[n - 1]))
}

#[test]
fn pods_resolve_services_through_the_node_dns() {
    assert!(unsafe { libc::geteuid() } == 0, "this test runs containerd: run it as root");
    let images = offline_images();
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("c");
    let cidr = common::pod_cidr();
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

    // The node's server is kube-dns' endpoint on this node, on the bridge's address.
    let dns_eps = c.ok(&["get", "endpointslices", "-n", "kube-system", "-l", "kubernetes.io/service-name=kube-dns,endpointslice.kubernetes.io/managed-by=node-agent.flotilla.dev", "-o", "jsonpath={range .items[*].endpoints[*]}{.addresses[0]},{.nodeName} {end}"]);
    assert_eq!(dns_eps.trim(), format!("{gateway},{node}"));
    let policy = c.ok(&["get", "svc", "-n", "kube-system", "kube-dns", "-o", "jsonpath={.spec.internalTrafficPolicy}"]);
    assert_eq!(policy, "Local");

    // resolv.conf: kube-dns' ClusterIP (the kubelet's --cluster-dns), the namespace's
    // search path, ndots:5.
    let conf = c.ok(&["exec", "client", "--", "cat", "/etc/resolv.conf"]);
    assert!(conf.lines().any(|l| l.trim() == "nameserver 10.96.0.10"), "{conf}");
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
    // Asked by address from the pod, over UDP and over TCP: both go through the proxy to
    // this node's server.
    c.eventually(Duration::from_secs(20), "nslookup at 10.96.0.10 answers", || {
        let o = c.kubectl(&["exec", "client", "--", "nslookup", "web.default.svc.cluster.local", "10.96.0.10"]);
        let got = answers(&o.stdout);
        if got == BTreeSet::from([web_ip.clone()]) { Ok(()) } else { Err(format!("{got:?}: {}{}", o.stdout, o.stderr)) }
    });
    let octal: String = tcp_query("web.default.svc.cluster.local").iter().map(|b| format!("\\{b:03o}")).collect();
    let pipeline = format!("printf '{octal}' | nc -w 3 10.96.0.10 53 | od -An -v -tu1");
    let over_tcp = c.eventually(Duration::from_secs(20), "a TCP query from the pod to 10.96.0.10", || {
        let o = c.kubectl(&["exec", "client", "--", "sh", "-c", &pipeline]);
        tcp_answer(&o.stdout).map_err(|e| format!("{e} {}", o.stderr))
    });
    assert_eq!(over_tcp.to_string(), web_ip);
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
    let log = std::fs::read_to_string(&c.log).unwrap_or_default();
    assert!(log.contains("withdrew this node's kube-dns endpoint"), "the node's kube-dns endpoint is withdrawn at stop:\n{}", c.log_tail());
}
