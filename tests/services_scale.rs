//! Services at the seeds' scale on real containers, on a node run with `--cloud-provider
//! external` that the cloud controller initializes: a 3-replica nginx Deployment's
//! Endpoints follow its pods' readiness within 5 s (judged from the Ready timestamps),
//! a busybox pod reaches it by name through kube-dns and the requests spread over every
//! pod; SRV records name the ports of a ClusterIP and of a headless Service; scaling to
//! 5 adds endpoints; `type: LoadBalancer` gets an address from the local cloud provider's
//! pool that answers from the node, released when the type changes and kept across a
//! restart; a failing exec readiness probe takes its pod out; scaled to 0 the ClusterIP
//! refuses at once. Every packet goes to an address on this machine.

mod common;

use common::cluster::Cluster;
use common::registry::offline_images;
use std::collections::BTreeSet;
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// busybox as PID 1 ignores SIGTERM; this one leaves at once when its pod stops.
const IDLE: &str = "trap 'exit 0' TERM; touch /tmp/ready; while true; do sleep 1; done";

const PROBED: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: probed}
spec:
  replicas: 2
  selector: {matchLabels: {app: probed}}
  template:
    metadata: {labels: {app: probed}}
    spec:
      containers:
      - name: c
        image: busybox
        command: [sh, -c, "trap 'exit 0' TERM; touch /tmp/ready; while true; do sleep 1; done"]
        readinessProbe:
          exec: {command: [cat, /tmp/ready]}
          periodSeconds: 1
          failureThreshold: 1
"#;

/// One HTTP GET over a fresh connection from this host.
fn get_from_host(addr: SocketAddr) -> Result<String, String> {
    use std::io::{Read, Write};
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(3)).map_err(|e| format!("{addr}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n").map_err(|e| e.to_string())?;
    let mut out = String::new();
    s.read_to_string(&mut out).map_err(|e| e.to_string())?;
    Ok(out)
}

fn set(s: &str) -> BTreeSet<String> {
    s.split_whitespace().map(str::to_string).collect()
}

fn endpoints_ips(c: &Cluster, svc: &str, field: &str) -> BTreeSet<String> {
    set(&c.ok(&["get", "endpoints", svc, "-o", &format!("jsonpath={{.subsets[*].{field}[*].ip}}")]))
}

/// The pods of `app` that are Ready, with the latest Ready transition among them.
fn ready_pods(c: &Cluster, app: &str) -> (BTreeSet<String>, Option<jiff::Timestamp>) {
    let out = c.ok(&["get", "pods", "-l", &format!("app={app}"), "-o", "jsonpath={range .items[*]}{.status.podIP},{.status.conditions[?(@.type==\"Ready\")].status},{.status.conditions[?(@.type==\"Ready\")].lastTransitionTime} {end}"]);
    let mut ips = BTreeSet::new();
    let mut last = None;
    for row in out.split_whitespace() {
        let f: Vec<&str> = row.split(',').collect();
        if f.len() == 3 && f[1] == "True" && !f[0].is_empty() {
            ips.insert(f[0].to_string());
            let t: Option<jiff::Timestamp> = f[2].parse().ok();
            last = last.max(t);
        }
    }
    (ips, last)
}

/// Waits until `svc`'s Endpoints list exactly the `n` ready pods of `app`, and says how
/// long after the last pod's Ready transition that was first seen: an upper bound on
/// the controller's lag (the timestamps are whole seconds, rounded down).
fn endpoints_follow(c: &Cluster, svc: &str, app: &str, n: usize) -> (BTreeSet<String>, jiff::SignedDuration) {
    c.eventually(Duration::from_secs(120), &format!("{svc}'s Endpoints list {n} ready pods"), || {
        let eps = endpoints_ips(c, svc, "addresses");
        let seen = jiff::Timestamp::now();
        let (ready, last) = ready_pods(c, app);
        match last {
            Some(t) if ready.len() == n && eps == ready => Ok((eps, seen.duration_since(t))),
            _ => Err(format!("endpoints {eps:?}, ready pods {ready:?}")),
        }
    })
}

fn nslookup(c: &Cluster, args: &[&str]) -> String {
    let mut a = vec!["exec", "client", "--", "nslookup"];
    a.extend_from_slice(args);
    let o = c.kubectl(&a);
    format!("{}{}", o.stdout, o.stderr)
}

#[test]
fn a_deployment_behind_a_service_scales_balances_and_resolves() {
    assert!(unsafe { libc::geteuid() } == 0, "this test runs containerd and nftables: run it as root");
    let images = offline_images();
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("c");
    let cidr = common::pod_cidr();
    let images_arg = images.to_string_lossy().into_owned();
    let mut c = Cluster::up_with(&data, 1, &["--runtime", "containerd", "--images", &images_arg, "--cluster-cidr", &cidr, "--cloud-provider", "external"]);

    // The node registered tainted uninitialized; the cloud controller gave it its
    // providerID and lifted the taint, so pods can land.
    c.eventually(Duration::from_secs(20), "node-1 initialized by the cloud controller", || {
        let got = c.ok(&["get", "node", "node-1", "-o", "jsonpath={.spec.providerID} {.spec.taints[*].key}"]);
        if got.trim() == "flotilla://node-1" { Ok(()) } else { Err(got) }
    });
    let log = std::fs::read_to_string(&c.log).unwrap_or_default();
    assert!(log.contains("node initialized by the cloud provider"), "the taint was there to lift:\n{}", c.log_tail());

    c.ok(&["run", "client", "--image=busybox", "--restart=Never", "--", "sh", "-c", IDLE]);
    c.ok(&["create", "deployment", "web", "--image=nginx", "--replicas=3"]);
    c.ok(&["expose", "deployment", "web", "--port=80"]);
    // A named port, so the SRV records have a name to go by.
    c.ok(&["patch", "svc", "web", "--type=json", "-p", r#"[{"op":"add","path":"/spec/ports/0/name","value":"http"}]"#]);
    let (three, lag) = endpoints_follow(&c, "web", "web", 3);
    assert!(lag <= jiff::SignedDuration::from_secs(6), "Endpoints listed all 3 pods {lag:?} after the last was Ready");
    let cluster_ip = c.ok(&["get", "svc", "web", "-o", "jsonpath={.spec.clusterIP}"]);

    c.eventually(Duration::from_secs(60), "client Running", || {
        let p = c.ok(&["get", "pod", "client", "-o", "jsonpath={.status.phase}"]);
        if p == "Running" { Ok(()) } else { Err(p) }
    });
    // By short and full name, through kube-dns at 10.96.0.10.
    for url in ["http://web/", "http://web.default.svc.cluster.local/"] {
        c.eventually(Duration::from_secs(20), &format!("{url} answers the client"), || {
            let o = c.kubectl(&["exec", "client", "--", "wget", "-qO-", url]);
            if o.stdout.contains("Welcome to nginx!") { Ok(()) } else { Err(format!("{}{}", o.stdout, o.stderr)) }
        });
    }
    // 30 requests in one exec: each pod gets one unless the proxy favours some (a
    // uniform pick misses one of three with odds of 3·(2/3)^30 ≈ 1.6e-5).
    let o = c.kubectl(&["exec", "client", "--", "sh", "-c", "for i in $(seq 30); do wget -qO- http://web/ >/dev/null || exit 1; done"]);
    assert!(o.ok, "30 requests: {}{}", o.stdout, o.stderr);
    let names = c.ok(&["get", "pods", "-l", "app=web", "-o", "jsonpath={.items[*].metadata.name}"]);
    let mut served = Vec::new();
    for name in names.split_whitespace() {
        let n = c.ok(&["logs", name]).lines().filter(|l| l.contains("\"GET / HTTP/1.1\" 200")).count();
        served.push((name.to_string(), n));
    }
    assert_eq!(served.len(), 3, "{served:?}");
    assert!(served.iter().all(|(_, n)| *n > 0), "every pod served some: {served:?}");
    assert!(served.iter().map(|(_, n)| n).sum::<usize>() >= 32, "{served:?}");

    // SRV: the ClusterIP Service's named port, and a headless Service's per pod.
    let srv = nslookup(&c, &["-type=SRV", "_http._tcp.web.default.svc.cluster.local"]);
    assert!(srv.contains("0 100 80 web.default.svc.cluster.local"), "{srv}");
    c.ok(&["expose", "deployment", "web", "--name=web-h", "--cluster-ip=None", "--port=80"]);
    c.ok(&["patch", "svc", "web-h", "--type=json", "-p", r#"[{"op":"add","path":"/spec/ports/0/name","value":"http"}]"#]);
    c.eventually(Duration::from_secs(20), "headless SRV names every pod", || {
        let out = nslookup(&c, &["-type=SRV", "_http._tcp.web-h.default.svc.cluster.local"]);
        let targets: BTreeSet<String> = out.lines().filter_map(|l| l.split_once("service = ")).filter_map(|(_, r)| r.split_whitespace().nth(3)).map(|t| t.trim_end_matches('.').to_string()).collect();
        let want: BTreeSet<String> = three.iter().map(|ip| format!("{}.web-h.default.svc.cluster.local", ip.replace('.', "-"))).collect();
        if targets == want && out.contains(" 80 ") { Ok(()) } else { Err(format!("{targets:?} want {want:?}: {out}")) }
    });
    let nx = nslookup(&c, &["-type=SRV", "_nope._tcp.web.default.svc.cluster.local"]);
    assert!(nx.contains("NXDOMAIN"), "an unknown port name: {nx}");

    // Scale to 5: two more endpoints.
    c.ok(&["scale", "deployment", "web", "--replicas=5"]);
    let (five, lag) = endpoints_follow(&c, "web", "web", 5);
    assert!(five.is_superset(&three), "{five:?} ⊇ {three:?}");
    assert!(lag <= jiff::SignedDuration::from_secs(6), "Endpoints listed all 5 pods {lag:?} after the last was Ready");

    // type LoadBalancer: the local cloud provider's address from --lb-pool (loopback),
    // which the node's proxy answers on.
    c.ok(&["expose", "deployment", "web", "--type=LoadBalancer", "--port=80", "--name=web-lb"]);
    let lb_ip = c.eventually(Duration::from_secs(20), "web-lb gets an EXTERNAL-IP", || {
        let row = c.ok(&["get", "svc", "web-lb", "--no-headers"]);
        match row.split_whitespace().nth(3) {
            Some(ip) if ip.starts_with("127.0.100.") => Ok(ip.to_string()),
            _ => Err(row),
        }
    });
    let lb: SocketAddr = format!("{lb_ip}:80").parse().unwrap();
    c.eventually(Duration::from_secs(20), "the load-balancer address answers from the node", || {
        let p = get_from_host(lb)?;
        if p.contains("Welcome to nginx!") { Ok(()) } else { Err(p) }
    });
    let described = c.ok(&["describe", "svc", "web-lb"]);
    assert!(described.contains("LoadBalancer Ingress:") && described.contains(&lb_ip) && described.contains("EnsuredLoadBalancer"), "{described}");
    // Another type: the address is released (and given to the next one asking).
    c.ok(&["patch", "svc", "web-lb", "-p", r#"{"spec":{"type":"ClusterIP"}}"#]);
    c.eventually(Duration::from_secs(20), "web-lb's address released", || {
        let st = c.ok(&["get", "svc", "web-lb", "-o", "jsonpath={.status.loadBalancer}"]);
        if st.contains("127.0.100.") { Err(st) } else { Ok(()) }
    });
    c.ok(&["expose", "deployment", "web", "--type=LoadBalancer", "--port=80", "--name=web-lb2"]);
    c.eventually(Duration::from_secs(20), "web-lb2 gets the released address", || {
        let ip = c.ok(&["get", "svc", "web-lb2", "-o", "jsonpath={.status.loadBalancer.ingress[0].ip}"]);
        if ip == lb_ip { Ok(()) } else { Err(ip) }
    });

    // A real readiness probe failing takes its pod out of the ready addresses.
    let o = c.kubectl_stdin(&["apply", "-f", "-"], Some(PROBED));
    assert!(o.ok, "{}{}", o.stdout, o.stderr);
    c.ok(&["expose", "deployment", "probed", "--port=80"]);
    let (both, _) = endpoints_follow(&c, "probed", "probed", 2);
    let victim = c.ok(&["get", "pods", "-l", "app=probed", "-o", "jsonpath={.items[0].metadata.name}"]);
    let victim_ip = c.ok(&["get", "pod", &victim, "-o", "jsonpath={.status.podIP}"]);
    c.ok(&["exec", &victim, "--", "rm", "/tmp/ready"]);
    c.eventually(Duration::from_secs(20), "the unready pod left the ready addresses", || {
        let (ready, not_ready) = (endpoints_ips(&c, "probed", "addresses"), endpoints_ips(&c, "probed", "notReadyAddresses"));
        let want_ready: BTreeSet<String> = both.iter().filter(|i| **i != victim_ip).cloned().collect();
        if ready == want_ready && not_ready == BTreeSet::from([victim_ip.clone()]) { Ok(()) } else { Err(format!("ready {ready:?}, not ready {not_ready:?}")) }
    });
    c.ok(&["exec", &victim, "--", "touch", "/tmp/ready"]);
    endpoints_follow(&c, "probed", "probed", 2);

    // Scaled to 0: the ClusterIP refuses at once rather than letting clients hang.
    c.ok(&["scale", "deployment", "web", "--replicas=0"]);
    c.eventually(Duration::from_secs(60), "no web endpoints", || {
        let e = endpoints_ips(&c, "web", "addresses");
        if e.is_empty() { Ok(()) } else { Err(format!("{e:?}")) }
    });
    let vip: SocketAddr = format!("{cluster_ip}:80").parse().unwrap();
    c.eventually(Duration::from_secs(20), "the ClusterIP refuses from the node", || match TcpStream::connect_timeout(&vip, Duration::from_secs(3)) {
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => Ok(()),
        other => Err(format!("{other:?}")),
    });
    let o = c.kubectl(&["exec", "client", "--", "wget", "-qO-", "http://web/"]);
    assert!(!o.ok && o.stderr.contains("refused"), "{} {}", o.stdout, o.stderr);

    // web-lb3 takes the next address and web-lb2 gives back the lowest, so after a
    // restart a controller that forgot its allocations would move web-lb3.
    c.ok(&["expose", "deployment", "web", "--type=LoadBalancer", "--port=80", "--name=web-lb3"]);
    let ingress = |c: &Cluster, svc: &str| c.ok(&["get", "svc", svc, "-o", "jsonpath={.status.loadBalancer.ingress[0].ip}"]);
    let lb3 = c.eventually(Duration::from_secs(20), "web-lb3 gets an address", || {
        let ip = ingress(&c, "web-lb3");
        if ip.starts_with("127.0.100.") { Ok(ip) } else { Err(ip) }
    });
    assert_ne!(lb3, lb_ip);
    c.ok(&["delete", "svc", "web-lb2"]);
    let st = c.stop().expect("flotilla up exited");
    assert!(st.success(), "clean exit: {st:?}\n{}", c.log_tail());

    // Up again on the same data: the cloud controller takes back what it handed out.
    let mut c = Cluster::up_with(&data, 1, &["--runtime", "containerd", "--images", &images_arg, "--cluster-cidr", &cidr, "--cloud-provider", "external"]);
    c.ok(&["expose", "deployment", "web", "--type=LoadBalancer", "--port=80", "--name=web-lb4"]);
    c.eventually(Duration::from_secs(20), "web-lb4 gets the free address", || {
        let ip = ingress(&c, "web-lb4");
        if ip == lb_ip { Ok(()) } else { Err(ip) }
    });
    assert_eq!(ingress(&c, "web-lb3"), lb3, "web-lb3 kept its address across the restart");
    let st = c.stop().expect("flotilla up exited");
    assert!(st.success(), "clean exit after the restart: {st:?}\n{}", c.log_tail());
}
