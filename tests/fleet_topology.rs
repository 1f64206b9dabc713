//! A fleet across hosts: four network namespaces made by this test, each a "host" with its
//! own address on a test bridge (the bridge in a fifth namespace, so nothing touches the
//! machine's own network). Hosts 1–3 each run a nats-server of one cluster (`flotilla
//! nats`, routes between them, a leafnode listener) and a state member; hosts 1 and 2 a
//! gateway each, host 3 the controllers and the scheduler. Host 4 is a remote site: a
//! leaf nats-server (`flotilla leaf`) and one node agent that knows only its local bus.
//! kubectl through either gateway sees the site's node Ready and runs a pod there; the
//! site cut off for 60 s keeps its pod, its node goes NotReady and comes back, and a watch
//! on its pods sees every revision once, in order. Security is on throughout: every
//! component connects as its own identity (`flotilla identities create`), the site's
//! link logs in as the leaf identity, and the site's agent joins with a token through its
//! leaf server; with its credentials, at the site, nats-server refuses other nodes'
//! subjects and the state group refuses what is not its own.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn ip(args: &[&str]) -> Output {
    Command::new("ip").args(args).output().expect("running ip")
}

fn must(args: &[&str]) {
    let o = ip(args);
    assert!(o.status.success(), "ip {}: {}", args.join(" "), String::from_utf8_lossy(&o.stderr));
}

/// The namespaces and bridge this test made; all removed on drop (processes first).
struct Net {
    tag: String,
    subnet: String,
    procs: Vec<(String, Child)>,
}

impl Net {
    fn host(&self, i: usize) -> String {
        format!("fl{}h{i}", self.tag)
    }
    fn addr(&self, i: usize) -> String {
        format!("{}.{i}", self.subnet)
    }

    /// None (with the reason printed) where network namespaces cannot be made.
    fn make(hosts: usize) -> Option<Net> {
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipping: network namespaces need root");
            return None;
        }
        let r: u32 = rand::random();
        let tag = format!("{:04x}", r & 0xffff);
        let subnet = format!("10.{}.{}", 200 + (r >> 16) % 50, (r >> 8) % 250);
        let net = Net { tag, subnet, procs: Vec::new() };
        let sw = format!("fl{}sw", net.tag);
        if !ip(&["netns", "add", &sw]).status.success() {
            eprintln!("skipping: `ip netns add` failed here");
            return None;
        }
        must(&["-n", &sw, "link", "add", "br0", "type", "bridge"]);
        must(&["-n", &sw, "link", "set", "br0", "up"]);
        for i in 1..=hosts {
            let h = net.host(i);
            must(&["netns", "add", &h]);
            must(&["-n", &h, "link", "set", "lo", "up"]);
            // The pair is made inside the host and its other end moved to the switch.
            must(&["-n", &h, "link", "add", "eth0", "type", "veth", "peer", "name", &format!("p{i}"), "netns", &sw]);
            must(&["-n", &sw, "link", "set", &format!("p{i}"), "master", "br0", "up"]);
            must(&["-n", &h, "addr", "add", &format!("{}/24", net.addr(i)), "dev", "eth0"]);
            must(&["-n", &h, "link", "set", "eth0", "up"]);
        }
        Some(net)
    }

    /// Starts `flotilla args…` inside host `i`, logging to `log`.
    fn run(&mut self, i: usize, name: &str, args: &[&str], log: &Path) {
        let f = std::fs::File::create(log).expect("log file");
        let child = Command::new("ip")
            .args(["netns", "exec", &self.host(i), env!("CARGO_BIN_EXE_flotilla")])
            .args(args)
            .env("RUST_LOG", "info,async_nats=warn,openraft=warn")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(f.try_clone().unwrap())
            .stderr(f)
            .spawn()
            .expect("starting flotilla in a netns");
        self.procs.push((name.to_string(), child));
    }

    fn in_host(&self, i: usize, cmd: &[&str]) -> Output {
        Command::new("ip").args(["netns", "exec", &self.host(i)]).args(cmd).output().expect("running in a netns")
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        // `ip netns exec` execs its command: these PIDs are flotilla's own.
        for (_, c) in self.procs.iter_mut().rev() {
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        for (_, c) in self.procs.iter_mut() {
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        for i in 1..=9 {
            let _ = ip(&["netns", "del", &self.host(i)]);
        }
        let _ = ip(&["netns", "del", &format!("fl{}sw", self.tag)]);
    }
}

fn eventually<T>(within: Duration, what: &str, mut f: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + within;
    loop {
        match f() {
            Ok(v) => return v,
            Err(e) if Instant::now() > deadline => panic!("{what}: not within {within:?}; last: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(250)),
        }
    }
}

struct Kubectl {
    kubeconfig: PathBuf,
}

impl Kubectl {
    /// kubectl from host `i` against `server`.
    fn run(&self, net: &Net, i: usize, server: &str, args: &[&str]) -> Result<String, String> {
        let o = Command::new("ip")
            .args(["netns", "exec", &net.host(i), "kubectl", "--kubeconfig"])
            .arg(&self.kubeconfig)
            .args(["--server", server, "--request-timeout=10s"])
            .args(args)
            .output()
            .expect("kubectl");
        if o.status.success() { Ok(String::from_utf8_lossy(&o.stdout).trim().to_string()) } else { Err(String::from_utf8_lossy(&o.stderr).trim().to_string()) }
    }
}

/// Runs `f` on a thread of its own inside network namespace `ns` (setns moves only the
/// calling thread), so the test's own NATS client reaches that host's loopback.
fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/var/run/netns/{ns}");
    std::thread::spawn(move || {
        use std::os::fd::AsRawFd;
        let f_ns = std::fs::File::open(&path).expect("the netns file");
        assert_eq!(unsafe { libc::setns(f_ns.as_raw_fd(), libc::CLONE_NEWNET) }, 0, "setns {path}: {}", std::io::Error::last_os_error());
        f()
    })
    .join()
    .expect("the thread in the netns")
}

/// What site-1's credentials were not refused, connecting to the site's leaf server.
fn site_refusals(creds: bus::creds::Credentials) -> Vec<String> {
    use schema::subjects;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async move {
        let url = "nats://127.0.0.1:4222";
        let (nats, errors) = common::connect_noting_errors(url, &creds).await;
        let other_pods = subjects::node_pod_events("hub-node");
        let read_secrets = format!("$JS.API.CONSUMER.CREATE.{}.w1.{}", subjects::EVENTS_STREAM, subjects::event_filter("secrets", &Default::default()));
        let by_seq = format!("$JS.API.STREAM.MSG.GET.{}", subjects::EVENTS_STREAM);
        nats.publish(subjects::node_write("hub-node"), "forged".into()).await.unwrap();
        nats.publish(subjects::STATE_READ, "forged".into()).await.unwrap();
        nats.publish(read_secrets.clone(), "{}".into()).await.unwrap();
        nats.publish(by_seq.clone(), "{\"seq\":1}".into()).await.unwrap();
        let _sub = nats.subscribe(other_pods.clone()).await.unwrap();
        nats.flush().await.unwrap();
        let wanted = [
            format!("permissions violation for publish to \"{}\"", subjects::node_write("hub-node")),
            format!("permissions violation for publish to \"{}\"", subjects::STATE_READ),
            format!("permissions violation for publish to \"{read_secrets}\""),
            format!("permissions violation for publish to \"{by_seq}\""),
            format!("permissions violation for subscription to \"{other_pods}\""),
        ]
        .map(|w| w.to_lowercase());
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while tokio::time::Instant::now() < deadline {
            let e = errors.lock().unwrap().join("\n");
            if wanted.iter().all(|w| e.contains(w.as_str())) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let e = errors.lock().unwrap().join("\n");
        let mut missed: Vec<String> = wanted.iter().filter(|w| !e.contains(w.as_str())).cloned().collect();
        // On its own subjects, through the leaf link, the state group answers, and holds
        // it to its own objects.
        let client = bus::Client::new(bus::Bus::connect_as(url, Some(&creds)).await.unwrap().for_node("site-1"));
        let planted = k8s_openapi::api::core::v1::Secret { metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta { name: Some("planted".into()), namespace: Some("default".into()), ..Default::default() }, ..Default::default() };
        match client.create(&planted).await {
            Err(e) if e.to_string().contains("forbidden") => {}
            other => missed.push(format!("creating a Secret: {other:?}")),
        }
        match client.get::<k8s_openapi::api::core::v1::Secret>(Some("default"), "unmounted").await {
            Err(e) if e.to_string().contains("no pod bound to it references this Secret") => {}
            other => missed.push(format!("reading an unmounted Secret: {:?}", other.map(|s| s.is_some()))),
        }
        match client.get::<k8s_openapi::api::core::v1::Pod>(Some("default"), "at-the-site").await {
            Ok(Some(_)) => {}
            other => missed.push(format!("reading its own pod: {:?}", other.map(|p| p.is_some()))),
        }
        missed
    })
}

const POD: &str = r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"at-the-site","namespace":"default"},
"spec":{"nodeSelector":{"kubernetes.io/hostname":"site-1"},"terminationGracePeriodSeconds":1,
"containers":[{"name":"main","image":"busybox","command":["sleep","3600"]}]}}"#;

#[test]
fn a_leaf_site_joins_runs_a_pod_and_rides_out_a_cut() {
    let Some(mut net) = Net::make(4) else { return };
    let dir = tempfile::tempdir().unwrap();
    let d = |s: &str| dir.path().join(s);
    let a: Vec<String> = (0..=4).map(|i| net.addr(i)).collect();
    let routes = (1..=3).map(|i| format!("{}:6222", a[i])).collect::<Vec<_>>().join(",");
    let peers = (1..=3).map(|i| format!("{i}={}:7001", a[i])).collect::<Vec<_>>().join(",");
    // The operator makes the cluster's identities once and hands them out.
    let ids = d("ids");
    let made = Command::new(env!("CARGO_BIN_EXE_flotilla")).args(["identities", "create", "--dir", ids.to_str().unwrap()]).output().unwrap();
    assert!(made.status.success(), "identities create: {}", String::from_utf8_lossy(&made.stderr));
    let creds = |role: &str| ids.join(format!("{role}.creds")).to_string_lossy().to_string();
    let pki = d("pki");
    let ca = pki.join("ca.crt");
    for i in 1..=3 {
        let (name, listen, cl, leaf) = (format!("nats-{i}"), format!("{}:4222", a[i]), format!("{}:6222", a[i]), format!("{}:7422", a[i]));
        let data = d(&format!("h{i}-nats"));
        net.run(i, &name, &["nats", "--name", &name, "--listen", &listen, "--cluster-listen", &cl, "--routes", &routes, "--leaf-listen", &leaf, "--data-dir", data.to_str().unwrap(), "--identities", ids.to_str().unwrap(), "--ca", ca.to_str().unwrap()], &d(&format!("h{i}-nats.log")));
    }
    for i in 1..=3 {
        let (nats, data) = (format!("nats://{}:4222", a[i]), d(&format!("h{i}-state")));
        net.run(i, &format!("state-{i}"), &["state", "--id", &i.to_string(), "--peers", &peers, "--nats-url", &nats, "--nats-creds", &creds("state"), "--events-replicas", "3", "--data-dir", data.to_str().unwrap()], &d(&format!("h{i}-state.log")));
    }
    let sans = format!("{},{}", a[1], a[2]);
    for i in 1..=2 {
        let (nats, addr) = (format!("nats://{}:4222", a[i]), format!("{}:6443", a[i]));
        net.run(i, &format!("gateway-{i}"), &["gateway", "--nats-url", &nats, "--nats-creds", &creds("gateway"), "--addr", &addr, "--pki-dir", pki.to_str().unwrap(), "--tls-san", &sans], &d(&format!("h{i}-gateway.log")));
        // The second shares the first's CA and serving certificate.
        if i == 1 {
            eventually(Duration::from_secs(60), "the first gateway's kubeconfig", || {
                if pki.join(format!("admin-{}.kubeconfig", a[1])).exists() { Ok(()) } else { Err("not yet".into()) }
            });
        }
    }
    let nats3 = format!("nats://{}:4222", a[3]);
    net.run(3, "controllers", &["controllers", "--nats-url", &nats3, "--nats-creds", &creds("controllers"), "--root-ca-file", ca.to_str().unwrap()], &d("h3-controllers.log"));
    net.run(3, "scheduler", &["scheduler", "--nats-url", &nats3, "--nats-creds", &creds("scheduler")], &d("h3-scheduler.log"));
    // The site: its leaf server dials all three hubs as the leaf identity, the only file
    // the site gets; its agent only knows 127.0.0.1.
    let hubs = (1..=3).map(|i| format!("{}:7422", a[i])).collect::<Vec<_>>().join(",");
    let leaf_data = d("h4-leaf");
    net.run(4, "leaf", &["leaf", "--hub", &hubs, "--listen", "127.0.0.1:4222", "--name", "site", "--data-dir", leaf_data.to_str().unwrap(), "--credentials", &creds("leaf")], &d("h4-leaf.log"));
    // A join token, made on the hub once the state group answers.
    let token = eventually(Duration::from_secs(90), "a join token", || {
        let o = net.in_host(1, &[env!("CARGO_BIN_EXE_flotilla"), "join-token", "create", "--nats-url", &format!("nats://{}:4222", a[1]), "--nats-creds", &creds("admin"), "--ttl", "1h"]);
        if o.status.success() { Ok(String::from_utf8_lossy(&o.stdout).trim().to_string()) } else { Err(String::from_utf8_lossy(&o.stderr).to_string()) }
    });
    let node_data = d("h4-node");
    // A token the cluster never made is refused at the site, saying so.
    let o = net.in_host(4, &[env!("CARGO_BIN_EXE_flotilla"), "node", "--join", "nats://127.0.0.1:4222", "--token", "abcdef.0123456789abcdef", "--name", "site-x", "--runtime", "process", "--data-dir", node_data.to_str().unwrap()]);
    let said = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && said.contains("the join token \"abcdef\" is unknown"), "an unknown token at the site: {said}");
    net.run(4, "site-1", &["node", "--join", "nats://127.0.0.1:4222", "--token", &token, "--name", "site-1", "--runtime", "process", "--data-dir", node_data.to_str().unwrap()], &d("h4-node.log"));

    let k = Kubectl { kubeconfig: pki.join(format!("admin-{}.kubeconfig", a[1])) };
    let gw = [format!("https://{}:6443", a[1]), format!("https://{}:6443", a[2])];
    let logs = || {
        let mut s = String::new();
        for f in ["h1-gateway", "h3-controllers", "h3-scheduler", "h4-leaf", "h4-node", "h1-state"] {
            let t = std::fs::read_to_string(d(&format!("{f}.log"))).unwrap_or_default();
            let tail: Vec<&str> = t.lines().rev().take(15).collect();
            s.push_str(&format!("--- {f}\n{}\n", tail.into_iter().rev().collect::<Vec<_>>().join("\n")));
        }
        s
    };
    for (g, from) in [(&gw[0], 1), (&gw[1], 2)] {
        eventually(Duration::from_secs(120), &format!("site-1 Ready through {g}"), || {
            let s = k.run(&net, from, g, &["get", "node", "site-1", "-o", "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}"])?;
            if s == "True" { Ok(()) } else { Err(format!("{s}\n{}", logs())) }
        });
    }
    let pod_file = d("pod.json");
    std::fs::write(&pod_file, POD).unwrap();
    k.run(&net, 2, &gw[1], &["create", "-f", pod_file.to_str().unwrap()]).expect("creating the pod through the second gateway");
    eventually(Duration::from_secs(60), "the pod Running at the site", || {
        let p = k.run(&net, 1, &gw[0], &["get", "pod", "at-the-site", "-o", "jsonpath={.spec.nodeName} {.status.phase}"])?;
        if p == "site-1 Running" { Ok(()) } else { Err(p) }
    });
    let pids = common::cluster::pod_pids("at-the-site");
    assert!(!pids.is_empty(), "the pod's process at the site");

    // With the joined agent's own credentials, at the site: nats-server refuses other
    // nodes' subjects and reading events it has no filter for; the state group refuses
    // what is not its own, and Secrets its pods do not mount.
    k.run(&net, 1, &gw[0], &["create", "secret", "generic", "unmounted", "--from-literal=k=theirs"]).expect("a secret no pod mounts");
    let site_creds = bus::creds::Credentials::load(&node_data.join("site-1").join("nats.creds")).expect("the joined agent kept its identity");
    let refusals = in_netns(&net.host(4), move || site_refusals(site_creds));
    assert!(refusals.is_empty(), "not refused at the site:\n{}", refusals.join("\n"));

    // A watch on the site's pods from the hub, opened before the cut.
    let mut watch = Command::new("ip")
        .args(["netns", "exec", &net.host(1), "kubectl", "--kubeconfig"])
        .arg(&k.kubeconfig)
        .args(["--server", &gw[0], "get", "pods", "-w", "--field-selector", "spec.nodeName=site-1", "-o", "jsonpath={.metadata.name} {.metadata.resourceVersion}{\"\\n\"}"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("kubectl watch");
    let out = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let sink = out.clone();
    let stdout = watch.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        use std::io::Read;
        let mut r = stdout;
        let mut buf = [0u8; 4096];
        while let Ok(n) = r.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    eventually(Duration::from_secs(20), "the watch's first list", || if out.lock().unwrap().lines().count() >= 1 { Ok(()) } else { Err("nothing yet".into()) });

    // The cut: the site's host drops everything to and from the hub's addresses.
    let rules = format!("table inet cut {{ chain cutin {{ type filter hook input priority 0; ip saddr {s}.0/24 drop; }}; chain cutout {{ type filter hook output priority 0; ip daddr {s}.0/24 drop; }}; }}", s = net.subnet);
    let o = net.in_host(4, &["nft", &rules]);
    assert!(o.status.success(), "nft: {}", String::from_utf8_lossy(&o.stderr));
    let cut_at = Instant::now();
    eventually(Duration::from_secs(90), "site-1 NotReady (or Unknown) while cut off", || {
        let s = k.run(&net, 1, &gw[0], &["get", "node", "site-1", "-o", "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}"])?;
        if s != "True" { Ok(()) } else { Err(s) }
    });
    // Meanwhile a write about the site's pod on the hub side: a label, which the watch must
    // see once, after the cut heals or before, in order.
    k.run(&net, 1, &gw[0], &["label", "pod", "at-the-site", "during=cut"]).expect("labelling during the cut");
    if let Some(rest) = Duration::from_secs(60).checked_sub(cut_at.elapsed()) {
        std::thread::sleep(rest);
    }
    for p in &pids {
        assert_eq!(unsafe { libc::kill(*p, 0) }, 0, "the pod's process {p} lived through the cut");
    }
    let o = net.in_host(4, &["nft", "delete", "table", "inet", "cut"]);
    assert!(o.status.success(), "healing: {}", String::from_utf8_lossy(&o.stderr));

    eventually(Duration::from_secs(90), "site-1 Ready again after the cut", || {
        let s = k.run(&net, 2, &gw[1], &["get", "node", "site-1", "-o", "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}"])?;
        if s == "True" { Ok(()) } else { Err(format!("{s}\n{}", logs())) }
    });
    eventually(Duration::from_secs(60), "the pod Running and labelled", || {
        let p = k.run(&net, 2, &gw[1], &["get", "pod", "at-the-site", "-o", "jsonpath={.status.phase} {.metadata.labels.during}"])?;
        if p == "Running cut" { Ok(()) } else { Err(p) }
    });
    let now = k.run(&net, 1, &gw[0], &["get", "pod", "at-the-site", "-o", "jsonpath={.metadata.resourceVersion}"]).unwrap();
    eventually(Duration::from_secs(30), "the watch at the pod's latest revision", || {
        let o = out.lock().unwrap().clone();
        if o.lines().any(|l| l.ends_with(&format!(" {now}"))) { Ok(()) } else { Err(o) }
    });
    unsafe { libc::kill(watch.id() as i32, libc::SIGTERM) };
    let _ = watch.wait();
    let _ = reader.join();
    let o = out.lock().unwrap().clone();
    let revs: Vec<u64> = o.lines().filter_map(|l| l.split(' ').nth(1)?.parse().ok()).collect();
    assert!(revs.windows(2).all(|w| w[0] < w[1]), "the watch saw a revision twice or out of order:\n{o}");
}
