//! Real containers: `flotilla up` with two node agents, each running its own containerd
//! with the offline images (deploy/offline-images.sh, cached outside the repo), drives
//! nginx replicas with their own pod IPs on per-node bridges, a busybox client reaching
//! one, logs, a missing image backing off, host-mode pods beside them, and SIGTERM
//! leaving no containerd, shim, container, bridge or netns mount behind.

mod common;

use common::cluster::Cluster;
use common::registry::offline_images;
use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;


/// Processes whose command line mentions `needle`.
fn processes_mentioning(needle: &str) -> Vec<(i32, String)> {
    let me = std::process::id() as i32;
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|p| *p != me)
        .filter_map(|p| {
            let raw = std::fs::read(format!("/proc/{p}/cmdline")).ok()?;
            let cmd = String::from_utf8_lossy(&raw).replace('\0', " ");
            cmd.contains(needle).then_some((p, cmd))
        })
        .collect()
}

/// Live processes in the cgroups of these agents' pods (`/flotilla/<host id>/…`).
fn pod_processes(host_ids: &[String]) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|p| {
            let cg = std::fs::read_to_string(format!("/proc/{p}/cgroup")).unwrap_or_default();
            let state = std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
            let zombie = state.rsplit_once(')').is_some_and(|(_, r)| r.trim_start().starts_with('Z'));
            !zombie && host_ids.iter().any(|h| cg.contains(&format!("/flotilla/{h}/")))
        })
        .collect()
}

fn mounts_under(dir: &Path) -> Vec<String> {
    let d = dir.to_string_lossy().into_owned();
    std::fs::read_to_string("/proc/self/mounts").unwrap().lines().filter(|l| l.split_whitespace().nth(1).is_some_and(|t| t.starts_with(&d))).map(str::to_string).collect()
}

/// The bridge each node agent named in its CNI config.
fn bridges(data: &Path) -> Vec<String> {
    ["node-1", "node-2"]
        .iter()
        .map(|n| {
            let f = data.join("nodes").join(n).join("containerd/cni/net.d/10-flotilla.conflist");
            let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&f).unwrap_or_else(|e| panic!("{}: {e}", f.display()))).unwrap();
            v["plugins"][0]["bridge"].as_str().unwrap().to_string()
        })
        .collect()
}

fn in_cidr(ip: &str, cidr: &str) -> bool {
    let (net, len) = cidr.split_once('/').unwrap();
    let (ip, net): (std::net::Ipv4Addr, std::net::Ipv4Addr) = (ip.parse().unwrap(), net.parse().unwrap());
    let mask = u32::MAX << (32 - len.parse::<u32>().unwrap());
    u32::from(ip) & mask == u32::from(net) & mask
}

#[test]
fn containerd_pods_with_offline_images_and_pod_network() {
    assert!(unsafe { libc::geteuid() } == 0, "this test runs containerd: run it as root (CI does, after deploy/install-deps.sh)");
    let images = offline_images();
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("c");
    // A cluster CIDR of its own, so a `flotilla up` beside the test never shares routes.
    let cidr = common::pod_cidr();
    let images_arg = images.to_string_lossy().into_owned();
    let mut c = Cluster::up_with(&data, 2, &["--runtime", "containerd", "--images", &images_arg, "--cluster-cidr", &cidr]);

    // Both nodes report containerd, each with its own podCIDR from the cluster CIDR.
    let wide = c.eventually(Duration::from_secs(30), "two Ready containerd nodes", || {
        let out = c.ok(&["get", "node", "-o", "wide", "--no-headers"]);
        let ok = out.lines().filter(|l| l.split_whitespace().nth(1) == Some("Ready") && l.contains("containerd://1.6")).count();
        if ok == 2 { Ok(out) } else { Err(out) }
    });
    assert!(!wide.contains("flotilla-process"), "{wide}");
    let pod_cidrs: Vec<String> = c.ok(&["get", "node", "-o", "jsonpath={range .items[*]}{.metadata.name}={.spec.podCIDR} {end}"]).split_whitespace().map(str::to_string).collect();
    assert_eq!(pod_cidrs.len(), 2, "{pod_cidrs:?}");
    let cidr_of = |node: &str| pod_cidrs.iter().find_map(|p| p.strip_prefix(&format!("{node}="))).unwrap().to_string();
    assert_ne!(cidr_of("node-1"), cidr_of("node-2"));
    assert!(cidr_of("node-1").ends_with("/24") && in_cidr(cidr_of("node-1").split('/').next().unwrap(), &cidr));

    // `--image=nginx` (imagePullPolicy Always, from the defaulting) runs from the air-gap folder.
    assert!(c.ok(&["create", "deployment", "web", "--image=nginx", "--replicas=4"]).contains("deployment.apps/web created"));
    let pods = c.eventually(Duration::from_secs(90), "4 Running nginx pods", || {
        let out = c.ok(&["get", "pods", "-l", "app=web", "-o", "jsonpath={range .items[*]}{.status.phase},{.spec.nodeName},{.status.podIP},{.status.hostIP} {end}"]);
        let rows: Vec<Vec<String>> = out.split_whitespace().map(|r| r.split(',').map(str::to_string).collect()).collect();
        if rows.len() == 4 && rows.iter().all(|r| r[0] == "Running" && !r[2].is_empty()) { Ok(rows) } else { Err(out) }
    });
    let nodes: BTreeSet<&str> = pods.iter().map(|r| r[1].as_str()).collect();
    assert_eq!(nodes.len(), 2, "replicas on both nodes: {pods:?}");
    let ips: BTreeSet<&str> = pods.iter().map(|r| r[2].as_str()).collect();
    assert_eq!(ips.len(), 4, "each pod has its own IP: {pods:?}");
    for r in &pods {
        assert!(in_cidr(&r[2], &cidr_of(&r[1])), "pod IP {} outside {}'s podCIDR", r[2], r[1]);
        assert_eq!(r[3], "127.0.0.1", "hostIP");
    }
    let image_id = c.ok(&["get", "pods", "-l", "app=web", "-o", "jsonpath={.items[0].status.containerStatuses[0].imageID}"]);
    assert!(image_id.starts_with("docker.io/library/nginx@sha256:"), "{image_id}");

    // A busybox pod fetches nginx's page from a pod IP; its output is its log.
    let target = &pods[0][2];
    let url = format!("http://{target}/");
    c.ok(&["run", "t", "--image=busybox", "--restart=Never", "--", "wget", "-qO-", &url]);
    c.eventually(Duration::from_secs(60), "t Succeeded", || {
        let p = c.ok(&["get", "pod", "t", "-o", "jsonpath={.status.phase}"]);
        if p == "Succeeded" { Ok(()) } else { Err(format!("{p}: {}", c.ok(&["get", "pod", "t", "-o", "jsonpath={.status.containerStatuses}"]))) }
    });
    let page = c.ok(&["logs", "t"]);
    assert!(page.contains("<title>Welcome to nginx!</title>"), "{page}");
    // nginx logged the request (CRI log lines, unwrapped).
    let server = pods.iter().find(|r| &r[2] == target).unwrap();
    let name = c.ok(&["get", "pods", "-l", "app=web", "-o", &format!("jsonpath={{.items[?(@.status.podIP==\"{}\")].metadata.name}}", server[2])]);
    let access = c.eventually(Duration::from_secs(10), "nginx's access log", || {
        let l = c.ok(&["logs", &name]);
        if l.contains("\"GET / HTTP/1.1\" 200") { Ok(l) } else { Err(l) }
    });
    assert!(!access.contains(" stdout F "), "CRI framing is stripped: {access}");

    // The usual python image runs python3.
    c.ok(&["run", "py", "--image=python:3.11", "--restart=Never", "--", "python3", "-c", "print(6*7)"]);
    c.eventually(Duration::from_secs(60), "py Succeeded", || {
        let p = c.ok(&["get", "pod", "py", "-o", "jsonpath={.status.phase}"]);
        if p == "Succeeded" { Ok(()) } else { Err(p) }
    });
    assert_eq!(c.ok(&["logs", "py"]).trim(), "42");
    let stamped = c.ok(&["logs", "py", "--timestamps"]);
    let (ts, text) = stamped.trim_end().split_once(' ').unwrap();
    assert_eq!(text, "42");
    assert!(ts.parse::<jiff::Timestamp>().is_ok(), "containerd's time, RFC3339Nano: {ts}");

    // An image that is nowhere: ErrImagePull with containerd's words, then ImagePullBackOff.
    c.ok(&["run", "nope", "--image=flotilla-test/absent:1"]);
    let waiting = c.eventually(Duration::from_secs(60), "ImagePullBackOff", || {
        let w = c.ok(&["get", "pod", "nope", "-o", "jsonpath={.status.containerStatuses[0].state.waiting.reason}|{.status.containerStatuses[0].state.waiting.message}"]);
        if w.starts_with("ImagePullBackOff|") { Ok(w) } else { Err(w) }
    });
    assert_eq!(waiting, "ImagePullBackOff|Back-off pulling image \"flotilla-test/absent:1\"");
    let o = c.kubectl(&["logs", "nope"]);
    assert_eq!(o.stderr.trim(), "Error from server (BadRequest): container \"nope\" in pod \"nope\" is waiting to start: trying and failing to pull image");
    let events = c.eventually(Duration::from_secs(20), "pull failure events", || {
        let e = c.ok(&["get", "events", "--field-selector", "involvedObject.name=nope", "-o", "jsonpath={range .items[*]}{.reason}: {.message}\n{end}"]);
        if e.contains("Error: ErrImagePull") && e.contains("BackOff") { Ok(e) } else { Err(e) }
    });
    assert!(
        events.contains("Failed to pull image \"flotilla-test/absent:1\": rpc error: code = NotFound desc = failed to pull and unpack image \"docker.io/flotilla-test/absent:1\""),
        "{events}"
    );
    assert_eq!(c.ok(&["get", "pod", "nope", "-o", "jsonpath={.status.phase}"]), "Pending");

    // runtimeClassName: host still runs a host process, on the node's address.
    let host_pod = r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"hostp"},"spec":{"runtimeClassName":"host","containers":[{"name":"c","image":"busybox","command":["sh","-c","echo host-mode; sleep 3600"]}]}}"#;
    let o = c.kubectl_stdin(&["apply", "-f", "-"], Some(host_pod));
    assert!(o.ok, "{}", o.stderr);
    let hp = c.eventually(Duration::from_secs(30), "hostp Running", || {
        let s = c.ok(&["get", "pod", "hostp", "-o", "jsonpath={.status.phase} {.status.podIP} {.status.containerStatuses[0].containerID}"]);
        if s.starts_with("Running ") { Ok(s) } else { Err(s) }
    });
    assert!(hp.starts_with("Running 127.0.0.1 flotilla://"), "{hp}");
    assert!(!common::cluster::pod_pids("hostp").is_empty(), "a host process runs for hostp");

    // What SIGTERM must take away, seen while it runs.
    let data_s = data.to_string_lossy().into_owned();
    let bridge_names = bridges(&data);
    let host_ids: Vec<String> = bridge_names.iter().map(|b| b.trim_start_matches("fl").to_string()).collect();
    let containerds: Vec<(i32, String)> = processes_mentioning(&format!("{data_s}/nodes/")).into_iter().filter(|(_, cmd)| cmd.starts_with("containerd ")).collect();
    let shims: Vec<(i32, String)> = processes_mentioning(&data_s).into_iter().filter(|(_, cmd)| cmd.contains("containerd-shim")).collect();
    let in_pods = pod_processes(&host_ids);
    assert_eq!(containerds.len(), 2, "one containerd per node agent: {containerds:?}");
    assert!(shims.len() >= 4, "a shim per sandbox: {shims:?}");
    assert!(in_pods.len() >= 4, "nginx and pause processes in the pods' cgroups: {in_pods:?}");
    for b in &bridge_names {
        assert!(Path::new("/sys/class/net").join(b).exists(), "bridge {b} while running");
    }
    assert!(!mounts_under(&data).is_empty(), "netns and rootfs mounts while running");

    let st = c.stop().expect("flotilla up exited");
    assert!(st.success(), "clean exit: {st:?}\n{}", c.log_tail());
    let alive = |pid: i32| {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        !stat.is_empty() && !stat.rsplit_once(')').is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
    };
    for (pid, cmd) in containerds.iter().chain(&shims) {
        assert!(!alive(*pid), "{pid} ({cmd}) survived SIGTERM");
    }
    assert!(processes_mentioning(&data_s).is_empty(), "nothing names the data dir: {:?}", processes_mentioning(&data_s));
    assert_eq!(pod_processes(&host_ids), Vec::<i32>::new(), "no container process left");
    assert!(common::cluster::pod_pids("hostp").is_empty(), "the host-mode pod stopped too");
    for b in &bridge_names {
        assert!(!Path::new("/sys/class/net").join(b).exists(), "bridge {b} removed");
    }
    assert_eq!(mounts_under(&data), Vec::<String>::new(), "no netns or rootfs mount left");
    for h in &host_ids {
        assert!(!Path::new("/sys/fs/cgroup/memory/flotilla").join(h).exists(), "the agent's cgroups are removed");
    }
}
