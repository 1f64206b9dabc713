//! Services end to end on real containers: `kubectl expose` gives a Deployment's ready
//! pods Endpoints and EndpointSlices that follow a scale and a pod going not-ready;
//! `kubectl describe svc` shows them; the node agent's nftables proxy makes the
//! ClusterIP answer from a pod and from the node, a NodePort answer on the node's
//! address, and a Service without endpoints refuse at once; stopping `up` removes the
//! proxy's table. Every packet goes to an address on this machine.

mod common;

use common::cluster::Cluster;
use common::registry::offline_images;
use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// One HTTP GET over a fresh connection from this host.
fn get_from_host(addr: SocketAddr) -> Result<String, String> {
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

/// The `web` pods' IPs, once `n` of them run with an address.
fn running_ips(c: &Cluster, n: usize) -> BTreeSet<String> {
    c.eventually(Duration::from_secs(90), &format!("{n} Running web pods"), || {
        let out = c.ok(&["get", "pods", "-l", "app=web", "-o", "jsonpath={range .items[*]}{.status.phase},{.status.podIP} {end}"]);
        let rows: Vec<&str> = out.split_whitespace().collect();
        if rows.len() == n && rows.iter().all(|r| r.starts_with("Running,") && r.len() > "Running,".len()) {
            Ok(rows.iter().map(|r| r["Running,".len()..].to_string()).collect())
        } else {
            Err(out)
        }
    })
}

fn endpoints_ips(c: &Cluster, svc: &str, field: &str) -> BTreeSet<String> {
    set(&c.ok(&["get", "endpoints", svc, "-o", &format!("jsonpath={{.subsets[*].{field}[*].ip}}")]))
}

fn slice_ips(c: &Cluster, svc: &str, ready: bool) -> BTreeSet<String> {
    let sel = format!("kubernetes.io/service-name={svc}");
    let out = c.ok(&["get", "endpointslices", "-l", &sel, "-o", "jsonpath={range .items[*].endpoints[*]}{.addresses[0]},{.conditions.ready} {end}"]);
    out.split_whitespace().filter_map(|r| r.split_once(',')).filter(|(_, r)| (*r == "true") == ready).map(|(ip, _)| ip.to_string()).collect()
}

fn nft_tables() -> String {
    let o = std::process::Command::new("nft").args(["list", "tables"]).output().expect("nft");
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn services_get_endpoints_and_answer_through_the_node_proxy() {
    assert!(unsafe { libc::geteuid() } == 0, "this test runs containerd and nftables: run it as root");
    let images = offline_images();
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("c");
    let cidr = common::pod_cidr();
    let images_arg = images.to_string_lossy().into_owned();
    let mut c = Cluster::up_with(&data, 1, &["--runtime", "containerd", "--images", &images_arg, "--cluster-cidr", &cidr]);

    // The proxy names its table in the log; it exists while the cluster runs.
    let table = c.eventually(Duration::from_secs(30), "the service proxy's table", || {
        let log = std::fs::read_to_string(&c.log).unwrap_or_default();
        // The log is coloured: take the name by its shape, `flotilla-` and 8 hex digits.
        let t = log.lines().filter(|l| l.contains("service proxy (nftables) starting")).find_map(|l| l.find("flotilla-").map(|i| l[i..].chars().take(17).collect::<String>()));
        match t {
            Some(t) if nft_tables().contains(&format!("table ip {t}\n")) => Ok(t),
            t => Err(format!("{t:?} in {}", nft_tables())),
        }
    });

    assert!(c.ok(&["create", "deployment", "web", "--image=nginx", "--replicas=1"]).contains("deployment.apps/web created"));
    assert_eq!(c.ok(&["expose", "deployment", "web", "--port=80"]).trim(), "service/web exposed");
    let one = running_ips(&c, 1);
    c.eventually(Duration::from_secs(20), "Endpoints and slices list the pod", || {
        let (e, s) = (endpoints_ips(&c, "web", "addresses"), slice_ips(&c, "web", true));
        if e == one && s == one { Ok(()) } else { Err(format!("endpoints {e:?}, slices {s:?}, pods {one:?}")) }
    });
    // The slice is the controller's, owned by the Service.
    let meta = c.ok(&["get", "endpointslices", "-l", "kubernetes.io/service-name=web", "-o", "jsonpath={.items[0].metadata.labels.endpointslice\\.kubernetes\\.io/managed-by} {.items[0].metadata.ownerReferences[0].kind}/{.items[0].metadata.ownerReferences[0].name} {.items[0].addressType} {.items[0].ports[0].port}"]);
    assert_eq!(meta, "endpointslice-controller.k8s.io Service/web IPv4 80");

    // The seeds' example: scaling adds the new pod's address.
    c.ok(&["scale", "deployment", "web", "--replicas=2"]);
    let two = running_ips(&c, 2);
    c.eventually(Duration::from_secs(20), "both pods listed", || {
        let (e, s) = (endpoints_ips(&c, "web", "addresses"), slice_ips(&c, "web", true));
        if e == two && s == two { Ok(()) } else { Err(format!("endpoints {e:?}, slices {s:?}, pods {two:?}")) }
    });
    let got = c.ok(&["get", "endpoints", "web", "--no-headers"]);
    for ip in &two {
        assert!(got.contains(&format!("{ip}:80")), "{got}");
    }
    let described = c.ok(&["describe", "svc", "web"]);
    let line = described.lines().find(|l| l.starts_with("Endpoints:")).unwrap_or_else(|| panic!("{described}"));
    for ip in &two {
        assert!(line.contains(&format!("{ip}:80")), "{described}");
    }
    let cluster_ip = c.ok(&["get", "svc", "web", "-o", "jsonpath={.spec.clusterIP}"]);
    let vip: SocketAddr = format!("{cluster_ip}:80").parse().unwrap();

    // A client pod reaches the ClusterIP, and both pods answer over a few requests.
    c.ok(&["run", "client", "--image=busybox", "--restart=Never", "--", "sleep", "3600"]);
    c.eventually(Duration::from_secs(60), "client Running", || {
        let p = c.ok(&["get", "pod", "client", "-o", "jsonpath={.status.phase}"]);
        if p == "Running" { Ok(()) } else { Err(p) }
    });
    let url = format!("http://{cluster_ip}/");
    c.eventually(Duration::from_secs(20), "the ClusterIP answers the client pod", || {
        let o = c.kubectl(&["exec", "client", "--", "wget", "-qO-", &url]);
        if o.stdout.contains("Welcome to nginx!") { Ok(()) } else { Err(format!("{}{}", o.stdout, o.stderr)) }
    });
    for _ in 0..16 {
        let o = c.kubectl(&["exec", "client", "--", "wget", "-qO-", &url]);
        assert!(o.stdout.contains("Welcome to nginx!"), "{} {}", o.stdout, o.stderr);
    }
    let names = c.ok(&["get", "pods", "-l", "app=web", "-o", "jsonpath={.items[*].metadata.name}"]);
    let client_ip = c.ok(&["get", "pod", "client", "-o", "jsonpath={.status.podIP}"]);
    for name in names.split_whitespace() {
        c.eventually(Duration::from_secs(10), &format!("{name} served the client"), || {
            let log = c.ok(&["logs", name]);
            if log.contains("\"GET / HTTP/1.1\" 200") { Ok(()) } else { Err(log) }
        });
    }
    // Same bridge both ways: the client's own address is kept, unless the answer would
    // bypass the host (then it is the bridge's).
    assert!(!client_ip.is_empty());

    // The node itself reaches the ClusterIP.
    let page = get_from_host(vip).unwrap_or_else(|e| panic!("from the host: {e}\n{}", c.log_tail()));
    assert!(page.contains("Welcome to nginx!"), "{page}");

    // A NodePort answers on the node's address.
    c.ok(&["expose", "deployment", "web", "--name=web-np", "--type=NodePort", "--port=80"]);
    let node_port = c.ok(&["get", "svc", "web-np", "-o", "jsonpath={.spec.ports[0].nodePort}"]);
    let port: u16 = node_port.parse().unwrap_or_else(|_| panic!("nodePort {node_port:?}"));
    assert!((30000..=32767).contains(&port), "{port}");
    let node_ip = c.ok(&["get", "node", "node-1", "-o", "jsonpath={.status.addresses[?(@.type==\"InternalIP\")].address}"]);
    let np: SocketAddr = format!("{node_ip}:{port}").parse().unwrap();
    c.eventually(Duration::from_secs(20), "the NodePort answers", || {
        let p = get_from_host(np)?;
        if p.contains("Welcome to nginx!") { Ok(()) } else { Err(p) }
    });

    // A Service without endpoints refuses at once, from the node and from a pod.
    c.ok(&["create", "service", "clusterip", "nobody", "--tcp=80:80"]);
    let empty_ip = c.ok(&["get", "svc", "nobody", "-o", "jsonpath={.spec.clusterIP}"]);
    let empty: SocketAddr = format!("{empty_ip}:80").parse().unwrap();
    c.eventually(Duration::from_secs(20), "the empty Service is refused", || {
        let t = Instant::now();
        match TcpStream::connect_timeout(&empty, Duration::from_secs(3)) {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused && t.elapsed() < Duration::from_secs(1) => Ok(()),
            other => Err(format!("{other:?} after {:?}", t.elapsed())),
        }
    });
    let o = c.kubectl(&["exec", "client", "--", "wget", "-qO-", &format!("http://{empty_ip}/")]);
    assert!(!o.ok && o.stderr.contains("refused"), "{} {}", o.stdout, o.stderr);

    // A pod going not-ready (as its readiness probe would report) leaves the ready
    // addresses and shows as not ready in both.
    let victim = names.split_whitespace().next().unwrap().to_string();
    let victim_ip = c.ok(&["get", "pod", &victim, "-o", "jsonpath={.status.podIP}"]);
    let patch = r#"{"status":{"conditions":[{"type":"Ready","status":"False","reason":"ReadinessProbeFailed"}]}}"#;
    c.ok(&["patch", "pod", &victim, "--subresource=status", "--type=strategic", "-p", patch]);
    c.eventually(Duration::from_secs(20), "the not-ready pod moved", || {
        let (ready, not_ready) = (endpoints_ips(&c, "web", "addresses"), endpoints_ips(&c, "web", "notReadyAddresses"));
        let (s_ready, s_not) = (slice_ips(&c, "web", true), slice_ips(&c, "web", false));
        let want_not: BTreeSet<String> = [victim_ip.clone()].into();
        let want_ready: BTreeSet<String> = two.iter().filter(|i| **i != victim_ip).cloned().collect();
        if not_ready == want_not && ready == want_ready && s_not == want_not && s_ready == want_ready { Ok(()) } else { Err(format!("{ready:?} {not_ready:?} {s_ready:?} {s_not:?}")) }
    });

    // Deleting the Service takes its Endpoints along.
    c.ok(&["delete", "svc", "web-np"]);
    c.eventually(Duration::from_secs(20), "web-np's Endpoints gone", || {
        let o = c.kubectl(&["get", "endpoints", "web-np"]);
        if !o.ok && o.stderr.contains("NotFound") { Ok(()) } else { Err(o.stdout) }
    });

    // Then the cluster rests: neither controller nor the proxy handles anything while
    // nothing changes (they compare before they write).
    let ours = |c: &Cluster| -> Vec<(String, u64)> {
        let text = c.ok(&["get", "--raw", "/metrics"]);
        text.lines()
            .filter_map(|l| {
                let rest = l.strip_prefix("flotilla_actor_messages_total{actor=\"")?;
                let (actor, n) = rest.split_once("\"} ")?;
                if !["endpoints-controller", "endpointslice-controller", "service-proxy"].contains(&actor) {
                    return None;
                }
                Some((actor.to_string(), n.trim().parse().ok()?))
            })
            .collect()
    };
    c.eventually(Duration::from_secs(60), "a quiet 10 s window", || {
        let before = ours(&c);
        std::thread::sleep(Duration::from_secs(10));
        let after = ours(&c);
        if before == after && before.len() == 3 { Ok(()) } else { Err(format!("{before:?} -> {after:?}")) }
    });

    let st = c.stop().expect("flotilla up exited");
    assert!(st.success(), "clean exit: {st:?}\n{}", c.log_tail());
    assert!(!nft_tables().contains(&format!("table ip {table}\n")), "the proxy's table is gone: {}", nft_tables());
}
