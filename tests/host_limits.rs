//! Host-mode pods (processes on the node) with the real kubectl: runAsUser, runAsGroup
//! and supplementalGroups are the process's identity (and its execs'), resources.limits
//! are a cgroup v1 memory and cpu cgroup of its own (removed with the pod), and a process
//! past its memory limit ends OOMKilled (137).

mod common;

use common::cluster::Cluster;
use std::path::Path;
use std::time::Duration;

const PODS: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: who}
spec:
  terminationGracePeriodSeconds: 1
  securityContext: {runAsUser: 1000, runAsGroup: 3000, supplementalGroups: [2000]}
  containers:
  - name: c
    image: busybox
    command: ["sh", "-c", "echo ids $(id -u) $(id -g) $(id -G); exec sleep 3600"]
---
apiVersion: v1
kind: Pod
metadata: {name: capped}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: busybox
    command: ["sh", "-c", "exec sleep 3600"]
    resources: {limits: {memory: 32Mi, cpu: 500m}}
---
apiVersion: v1
kind: Pod
metadata: {name: hog}
spec:
  terminationGracePeriodSeconds: 1
  restartPolicy: Never
  containers:
  - name: c
    image: busybox
    command: ["sh", "-c", "head -c 512m /dev/zero | tail"]
    resources: {limits: {memory: 16Mi}}
"#;

/// The pod's cgroup directory in `controller`'s hierarchy, wherever the agent put it.
fn pod_cgroup(controller: &str, uid: &str) -> Option<std::path::PathBuf> {
    let want = format!("pod{}", uid.replace('-', "_"));
    let root = Path::new("/sys/fs/cgroup").join(controller).join("flotilla");
    for node in std::fs::read_dir(&root).into_iter().flatten().flatten() {
        let p = node.path().join("host").join(&want);
        if p.is_dir() {
            return Some(p);
        }
    }
    None
}

#[test]
fn host_processes_get_their_identity_and_limits() {
    assert!(unsafe { libc::geteuid() } == 0, "host-mode identities and cgroups need root (CI runs as root)");
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut c = Cluster::up(&tmp.path().join("c"), 1);
    let o = c.kubectl_stdin(&["apply", "-f", "-"], Some(PODS));
    assert!(o.ok, "{}", o.stderr);

    let line = c.eventually(Duration::from_secs(60), "who's ids", || {
        let l = c.kubectl(&["logs", "who"]);
        if l.ok && l.stdout.starts_with("ids ") { Ok(l.stdout) } else { Err(format!("{} {}", l.stdout, l.stderr)) }
    });
    let words: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(&words[1..3], &["1000", "3000"], "{line}");
    assert!(words[3..].contains(&"2000") && !words[3..].contains(&"0"), "{line}");
    assert_eq!(c.ok(&["exec", "who", "--", "sh", "-c", "echo $(id -u) $(id -g)"]).trim(), "1000 3000", "kubectl exec runs as the container does");

    c.eventually(Duration::from_secs(60), "capped Running", || {
        let o = c.ok(&["get", "pod", "capped", "-o", "jsonpath={.status.phase}"]);
        if o == "Running" { Ok(()) } else { Err(o) }
    });
    let uid = c.ok(&["get", "pod", "capped", "-o", "jsonpath={.metadata.uid}"]);
    let mem = pod_cgroup("memory", &uid).expect("the pod's memory cgroup");
    let cpu = pod_cgroup("cpu", &uid).expect("the pod's cpu cgroup");
    assert_eq!(std::fs::read_to_string(mem.join("c-0/memory.limit_in_bytes")).unwrap().trim(), (32u64 << 20).to_string());
    assert_eq!(std::fs::read_to_string(cpu.join("c-0/cpu.cfs_quota_us")).unwrap().trim(), "50000");

    c.eventually(Duration::from_secs(60), "hog OOMKilled", || {
        let o = c.ok(&["get", "pod", "hog", "-o", "jsonpath={.status.containerStatuses[0].state.terminated.reason} {.status.containerStatuses[0].state.terminated.exitCode}"]);
        if o == "OOMKilled 137" { Ok(()) } else { Err(o) }
    });

    for p in ["who", "capped", "hog"] {
        c.ok(&["delete", "pod", p, "--wait=true", "--timeout=60s"]);
    }
    c.eventually(Duration::from_secs(30), "the pod's cgroups removed", || match pod_cgroup("memory", &uid).or_else(|| pod_cgroup("cpu", &uid)) {
        Some(p) => Err(p.display().to_string()),
        None => Ok(()),
    });
    c.stop();
}
