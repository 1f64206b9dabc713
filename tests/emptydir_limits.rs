//! emptyDir `sizeLimit` under containerd with the real kubectl: a memory-backed one is a
//! tmpfs of its limit's size (or of the pod's memory limit without one), and a pod
//! writing past a disk-backed one's limit is evicted (Failed, Evicted, the kubelet's
//! message); nothing of them is left in /dev/shm/flotilla-pods.

mod common;

use common::cluster::Cluster;
use common::registry::{busybox_only, offline_images};
use std::time::Duration;

const PODS: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: mem}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: busybox
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "exec sleep 3600"]
    resources: {limits: {memory: 48Mi}}
    volumeMounts: [{name: small, mountPath: /small}, {name: bypod, mountPath: /bypod}]
  volumes:
  - {name: small, emptyDir: {medium: Memory, sizeLimit: 8Mi}}
  - {name: bypod, emptyDir: {medium: Memory}}
---
apiVersion: v1
kind: Pod
metadata: {name: filler}
spec:
  terminationGracePeriodSeconds: 1
  restartPolicy: Never
  containers:
  - name: c
    image: busybox
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "dd if=/dev/zero of=/data/fill bs=1M count=20; exec sleep 3600"]
    volumeMounts: [{name: data, mountPath: /data}]
  volumes:
  - {name: data, emptyDir: {sizeLimit: 10Mi}}
"#;

#[test]
fn empty_dir_size_limits_hold() {
    assert!(unsafe { libc::geteuid() } == 0, "this test runs containerd: run it as root (CI does, after deploy/install-deps.sh)");
    let images = offline_images();
    let tmp = tempfile::tempdir().expect("tempdir");
    let airgap = busybox_only(&images, tmp.path());
    let cidr = common::pod_cidr();
    let mut c = Cluster::up_with(&tmp.path().join("c"), 1, &["--runtime", "containerd", "--images", &airgap.to_string_lossy(), "--cluster-cidr", &cidr]);
    let o = c.kubectl_stdin(&["apply", "-f", "-"], Some(PODS));
    assert!(o.ok, "{}", o.stderr);
    c.eventually(Duration::from_secs(120), "mem Running", || {
        let o = c.ok(&["get", "pod", "mem", "-o", "jsonpath={.status.phase}"]);
        if o == "Running" { Ok(()) } else { Err(o) }
    });
    let uid = c.ok(&["get", "pod", "mem", "-o", "jsonpath={.metadata.uid}"]);
    // df's 1K-blocks: the tmpfs sizes.
    let size = |path: &str| c.ok(&["exec", "mem", "--", "sh", "-c", &format!("df -k {path} | tail -1")]).split_whitespace().nth(1).unwrap_or_default().to_string();
    assert_eq!(size("/small"), "8192");
    assert_eq!(size("/bypod"), (48 * 1024).to_string(), "without a sizeLimit, the pod's memory limit");
    let o = c.kubectl(&["exec", "mem", "--", "dd", "if=/dev/zero", "of=/small/f", "bs=1M", "count=9"]);
    assert!(!o.ok && o.stderr.contains("No space left on device"), "{} {}", o.stdout, o.stderr);

    c.eventually(Duration::from_secs(120), "filler evicted", || {
        let o = c.ok(&["get", "pod", "filler", "-o", "jsonpath={.status.phase}/{.status.reason}/{.status.message}"]);
        if o == "Failed/Evicted/Usage of EmptyDir volume \"data\" exceeds the limit \"10Mi\". " { Ok(()) } else { Err(o) }
    });
    let events = c.ok(&["get", "events", "--field-selector", "involvedObject.name=filler", "-o", "jsonpath={range .items[*]}{.reason}: {.message}{\"\\n\"}{end}"]);
    assert!(events.contains("Evicted: Usage of EmptyDir volume \"data\" exceeds the limit \"10Mi\"."), "{events}");

    let mem_root = std::path::Path::new("/dev/shm/flotilla-pods").join(&uid);
    assert!(mem_root.join("small").exists());
    for p in ["mem", "filler"] {
        c.ok(&["delete", "pod", p, "--wait=true", "--timeout=60s"]);
    }
    c.eventually(Duration::from_secs(30), "the tmpfs volumes unmounted and removed", || if mem_root.exists() { Err(mem_root.display().to_string()) } else { Ok(()) });
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    assert!(!mounts.contains(&uid), "{mounts}");
    c.stop();
}
