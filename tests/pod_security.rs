//! securityContext under containerd with the real kubectl: runAsUser, runAsGroup and
//! fsGroup reach `id` and an emptyDir's files, readOnlyRootFilesystem and
//! allowPrivilegeEscalation hold, capabilities dropped and added show in CapEff (all of
//! them, with the host's devices, when privileged), and runAsNonRoot refuses a root image
//! with the kubelet's CreateContainerConfigError.

mod common;

use common::cluster::Cluster;
use common::registry::{busybox_only, offline_images};
use std::time::Duration;

const PODS: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: ids}
spec:
  terminationGracePeriodSeconds: 1
  securityContext: {runAsUser: 1000, runAsGroup: 3000, fsGroup: 2000}
  containers:
  - name: main
    image: busybox
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "echo hi > /data/f; exec sleep 3600"]
    volumeMounts: [{name: data, mountPath: /data}, {name: cfg, mountPath: /cfg}]
  volumes:
  - {name: data, emptyDir: {}}
  - {name: cfg, configMap: {name: cfg}}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: cfg}
data: {k: v}
---
apiVersion: v1
kind: Pod
metadata: {name: locked}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: ro
    image: busybox
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "exec sleep 3600"]
    securityContext: {readOnlyRootFilesystem: true, allowPrivilegeEscalation: false}
  - name: nocaps
    image: busybox
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "exec sleep 3600"]
    securityContext: {capabilities: {drop: [ALL]}}
  - name: netadmin
    image: busybox
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "exec sleep 3600"]
    securityContext: {capabilities: {drop: [ALL], add: [NET_ADMIN]}}
  - name: priv
    image: busybox
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "exec sleep 3600"]
    securityContext: {privileged: true}
  - name: grouponly
    image: busybox
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "exec sleep 3600"]
    securityContext: {runAsGroup: 4000}
---
apiVersion: v1
kind: Pod
metadata: {name: nonroot}
spec:
  terminationGracePeriodSeconds: 1
  securityContext: {runAsNonRoot: true}
  containers:
  - name: c
    image: busybox
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "exec sleep 3600"]
"#;

fn exec(c: &Cluster, pod: &str, container: &str, script: &str) -> String {
    c.ok(&["exec", pod, "-c", container, "--", "sh", "-c", script]).trim().to_string()
}

fn running(c: &Cluster, pod: &str) {
    c.eventually(Duration::from_secs(120), &format!("{pod} Running"), || {
        let o = c.ok(&["get", "pod", pod, "-o", "jsonpath={.status.phase}"]);
        if o == "Running" { Ok(()) } else { Err(o) }
    });
}

#[test]
fn security_contexts_reach_the_containers() {
    assert!(unsafe { libc::geteuid() } == 0, "this test runs containerd: run it as root (CI does, after deploy/install-deps.sh)");
    let images = offline_images();
    let tmp = tempfile::tempdir().expect("tempdir");
    let airgap = busybox_only(&images, tmp.path());
    let cidr = common::pod_cidr();
    let mut c = Cluster::up_with(&tmp.path().join("c"), 1, &["--runtime", "containerd", "--images", &airgap.to_string_lossy(), "--cluster-cidr", &cidr]);
    let o = c.kubectl_stdin(&["apply", "-f", "-"], Some(PODS));
    assert!(o.ok, "{}", o.stderr);
    running(&c, "ids");
    running(&c, "locked");

    // The identity, with fsGroup among the groups, and the volumes fsGroup owns.
    let id = exec(&c, "ids", "main", "id -u; id -g; id -G");
    let mut lines = id.lines();
    assert_eq!((lines.next(), lines.next()), (Some("1000"), Some("3000")), "{id}");
    assert!(lines.next().unwrap_or_default().split_whitespace().any(|g| g == "2000"), "fsGroup is a supplemental group: {id}");
    c.eventually(Duration::from_secs(20), "the emptyDir file written", || {
        let o = c.kubectl(&["exec", "ids", "-c", "main", "--", "stat", "-c", "%u %g", "/data/f"]);
        if o.ok { Ok(()) } else { Err(o.stderr) }
    });
    assert_eq!(exec(&c, "ids", "main", "stat -c '%u %g' /data/f"), "1000 2000", "a new file joins the setgid directory's group");
    assert_eq!(exec(&c, "ids", "main", "stat -c '%g %A' /data"), "2000 drwxrwsrwx");
    assert_eq!(exec(&c, "ids", "main", "stat -L -c '%g %a' /cfg/k"), "2000 644", "configMap files are the fsGroup's too");
    assert_eq!(exec(&c, "locked", "grouponly", "echo $(id -u) $(id -g)"), "0 4000", "a group alone runs beside the image's user");

    // Read-only root, no new privileges, capabilities.
    let o = c.kubectl(&["exec", "locked", "-c", "ro", "--", "touch", "/x"]);
    assert!(!o.ok && o.stderr.contains("Read-only file system"), "{} {}", o.stdout, o.stderr);
    assert_eq!(exec(&c, "locked", "ro", "grep NoNewPrivs /proc/self/status"), "NoNewPrivs:\t1");
    assert_eq!(exec(&c, "locked", "nocaps", "grep NoNewPrivs /proc/self/status"), "NoNewPrivs:\t0");
    assert_eq!(exec(&c, "locked", "nocaps", "grep CapEff /proc/self/status"), "CapEff:\t0000000000000000");
    // CAP_NET_ADMIN is capability 12.
    assert_eq!(exec(&c, "locked", "netadmin", "grep CapEff /proc/self/status"), "CapEff:\t0000000000001000");
    assert_eq!(exec(&c, "locked", "netadmin", "touch /x && echo wrote"), "wrote", "the root stays writable without readOnlyRootFilesystem");
    // Privileged: every capability the kernel has (runc's default set is 0xa80425fb), and
    // the host's devices.
    let caps = exec(&c, "locked", "priv", "grep CapEff /proc/self/status");
    let bits = u64::from_str_radix(caps.trim_start_matches("CapEff:").trim(), 16).expect("hex caps");
    assert!(bits & (1 << 21) != 0 && bits.count_ones() > 38, "CAP_SYS_ADMIN and the rest: {caps}");
    assert_eq!(exec(&c, "locked", "priv", "test -e /dev/kmsg && echo host devices"), "host devices");

    // runAsNonRoot against a root image.
    let uid = c.ok(&["get", "pod", "nonroot", "-o", "jsonpath={.metadata.uid}"]);
    let want = format!("container has runAsNonRoot and image will run as root (pod: \"nonroot_default({uid})\", container: c)");
    c.eventually(Duration::from_secs(60), "CreateContainerConfigError", || {
        let o = c.ok(&["get", "pod", "nonroot", "-o", "jsonpath={.status.containerStatuses[0].state.waiting.reason}: {.status.containerStatuses[0].state.waiting.message}"]);
        if o == format!("CreateContainerConfigError: {want}") { Ok(()) } else { Err(o) }
    });
    let described = c.ok(&["describe", "pod", "nonroot"]);
    assert!(described.contains("CreateContainerConfigError") && described.contains(&want), "{described}");

    for p in ["ids", "locked", "nonroot"] {
        c.ok(&["delete", "pod", p, "--wait=true", "--timeout=60s"]);
    }
    c.stop();
}
