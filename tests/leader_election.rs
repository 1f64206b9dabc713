//! Several control-plane replicas, seed 002's HA topology: two `flotilla controllers`
//! processes elect one leader through the kube-system Lease; SIGKILL the leader and the
//! other takes over within the lease duration, and nothing is created twice. A second
//! `flotilla gateway` serves the same cluster.

mod common;

use common::cluster::Cluster;
use common::process::Process;
use std::time::{Duration, Instant};

fn holder(c: &Cluster) -> String {
    lease_holder(c, "kube-controller-manager")
}

fn lease_holder(c: &Cluster, lease: &str) -> String {
    c.ok(&["get", "lease", "-n", "kube-system", lease, "-o", "jsonpath={.spec.holderIdentity}"])
}

/// The identity a controllers process says it campaigns as.
fn identity(p: &Process) -> String {
    let log = p.log_text();
    let line = log.lines().find(|l| l.contains("attempting to acquire leader lease")).unwrap_or_else(|| panic!("no campaign in:\n{log}"));
    let plain = strip_ansi(line);
    let at = plain.find("identity=").unwrap_or_else(|| panic!("no identity in {plain:?}")) + "identity=".len();
    plain[at..].split_whitespace().next().unwrap_or("").to_string()
}

/// The log's colour codes (tracing writes them to files too) taken out.
fn strip_ansi(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn web_counts(c: &Cluster) -> (usize, usize) {
    let rs = c.ok(&["get", "rs", "-l", "app=web", "-o", "name"]).lines().count();
    let pods = c.ok(&["get", "pods", "-l", "app=web", "-o", "name"]).lines().count();
    (rs, pods)
}

#[test]
fn one_controller_leads_and_the_other_takes_over() {
    let nats = common::NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let c = Cluster::up_with(&dir.path().join("c"), 1, &["--nats-url", &nats.url, "--no-controllers", "--no-scheduler"]);
    let election = ["--nats-url", &nats.url, "--leader-elect-lease-duration=8s", "--leader-elect-renew-deadline=6s", "--leader-elect-retry-period=1s"];
    // As kubeadm passes kube-controller-manager the cluster CA, for kube-root-ca.crt.
    let ca = dir.path().join("c/pki/ca.crt");
    let ca = ca.to_string_lossy();
    let args = [&["controllers", "--root-ca-file", &ca][..], &election[..]].concat();
    let sched_args = [&["scheduler"][..], &election[..]].concat();
    let mut sched_a = Process::flotilla(&sched_args, &dir.path().join("scheduler-a.log"));
    sched_a.wait_log(Duration::from_secs(30), "successfully acquired lease");
    let sched_b = Process::flotilla(&sched_args, &dir.path().join("scheduler-b.log"));
    sched_b.wait_log(Duration::from_secs(30), "attempting to acquire leader lease");
    let sched_b_id = identity(&sched_b);
    let mut a = Process::flotilla(&args, &dir.path().join("controllers-a.log"));
    a.wait_log(Duration::from_secs(30), "successfully acquired lease");
    let b = Process::flotilla(&args, &dir.path().join("controllers-b.log"));
    b.wait_log(Duration::from_secs(30), "attempting to acquire leader lease");
    let (id_a, id_b) = (identity(&a), identity(&b));
    assert_eq!(holder(&c), id_a);
    let leases = c.ok(&["get", "lease", "-n", "kube-system"]);
    assert!(leases.lines().any(|l| l.starts_with("kube-controller-manager") && l.contains(&id_a)), "{leases}");

    c.ok(&["create", "deployment", "web", "--image=busybox", "--replicas=3", "--", "sleep", "3600"]);
    c.ok(&["rollout", "status", "deployment/web", "--timeout=90s"]);
    assert_eq!(web_counts(&c), (1, 3));
    assert!(!b.log_text().contains("successfully acquired lease"), "the standby acted while a led:\n{}", b.log_text());

    // The leader dies without a word: b waits out the lease, then leads.
    a.kill();
    sched_a.kill();
    let killed = Instant::now();
    c.eventually(Duration::from_secs(15), "b holds the lease", || {
        let h = holder(&c);
        if h == id_b { Ok(()) } else { Err(h) }
    });
    b.wait_log(Duration::from_secs(5), "successfully acquired lease");
    c.eventually(Duration::from_secs(15), "the second scheduler holds its lease", || {
        let h = lease_holder(&c, "kube-scheduler");
        if h == sched_b_id { Ok(()) } else { Err(h) }
    });
    eprintln!("takeover {:?} after the leader's SIGKILL", killed.elapsed());
    let transitions = c.ok(&["get", "lease", "-n", "kube-system", "kube-controller-manager", "-o", "jsonpath={.spec.leaseTransitions}"]);
    assert_eq!(transitions, "1");

    // b acts (and the second scheduler binds the new pods): scaling works, and the
    // ReplicaSet and pods a made are not made again.
    c.ok(&["scale", "deployment", "web", "--replicas=5"]);
    c.ok(&["rollout", "status", "deployment/web", "--timeout=90s"]);
    c.eventually(Duration::from_secs(30), "one ReplicaSet, five pods", || {
        let n = web_counts(&c);
        if n == (1, 5) { Ok(()) } else { Err(format!("{n:?}")) }
    });
    let ready = c.ok(&["get", "deployment", "web", "-o", "jsonpath={.status.readyReplicas}/{.status.replicas}"]);
    assert_eq!(ready, "5/5");

    // A clean stop gives the lease up at once.
    let mut b = b;
    b.stop();
    c.eventually(Duration::from_secs(10), "the lease released", || {
        let h = holder(&c);
        if h.is_empty() { Ok(()) } else { Err(h) }
    });
}

#[test]
fn a_second_gateway_serves_the_same_cluster() {
    let nats = common::NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("c");
    let c = Cluster::up_with(&data, 1, &["--nats-url", &nats.url]);
    let addr = format!("127.0.0.1:{}", common::free_port());
    let pki = data.join("pki");
    let gw = Process::flotilla(&["gateway", "--nats-url", &nats.url, "--addr", &addr, "--pki-dir", pki.to_str().unwrap()], &dir.path().join("gateway-2.log"));
    let kubeconfig = std::fs::read_to_string(&c.kubeconfig).unwrap().replace(&c.addr, &addr);
    let second = dir.path().join("kubeconfig-2");
    std::fs::write(&second, kubeconfig).unwrap();
    let kubectl = |args: &[&str]| {
        let o = std::process::Command::new("kubectl").args(args).env("KUBECONFIG", &second).output().expect("kubectl");
        (o.status.success(), String::from_utf8_lossy(&o.stdout).to_string(), String::from_utf8_lossy(&o.stderr).to_string())
    };
    c.eventually(Duration::from_secs(30), "the second gateway answers", || {
        let (ok, out, err) = kubectl(&["get", "--raw", "/readyz"]);
        if ok && out.trim() == "ok" { Ok(()) } else { Err(format!("{out}{err}\n{}", gw.log_text())) }
    });
    // A write through one is read through the other, and a watch on one sees the other's.
    let (ok, _, err) = kubectl(&["create", "configmap", "via-second", "--from-literal=k=v"]);
    assert!(ok, "{err}");
    assert_eq!(c.ok(&["get", "configmap", "via-second", "-o", "jsonpath={.data.k}"]), "v");
    let watch = c.kubectl_background(&["get", "configmaps", "-w", "-o", "name"]);
    watch.wait_for(Duration::from_secs(20), "the watch lists", |o| o.contains("configmap/via-second"));
    let (ok, _, err) = kubectl(&["create", "configmap", "later", "--from-literal=k=w"]);
    assert!(ok, "{err}");
    watch.wait_for(Duration::from_secs(20), "the first gateway's watch sees the second's write", |o| o.contains("configmap/later"));
    drop(watch);
    drop(gw);
}
