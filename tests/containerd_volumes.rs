//! Local persistent volumes under containerd: a StatefulSet pod's claim is bind-mounted
//! at its `mountPath` inside the container (a CRI Mount of the volume's directory on the
//! node), what it writes lands in that directory, and its replacement finds it there.

mod common;

use common::cluster::Cluster;
use common::registry::{busybox_only, offline_images};
use std::time::Duration;

const STS: &str = r#"
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: db
spec:
  replicas: 1
  serviceName: db
  selector:
    matchLabels: {app: db}
  template:
    metadata:
      labels: {app: db}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: main
        image: busybox
        imagePullPolicy: IfNotPresent
        env:
        - name: POD_UID
          valueFrom: {fieldRef: {fieldPath: metadata.uid}}
        command: ["sh", "-c", "echo \"found: $(cat /var/lib/db/written-by 2>/dev/null)\"; echo \"$POD_UID\" > /var/lib/db/written-by; exec sleep 3600"]
        volumeMounts:
        - {name: data, mountPath: /var/lib/db}
  volumeClaimTemplates:
  - metadata:
      name: data
    spec:
      accessModes: [ReadWriteOnce]
      resources:
        requests: {storage: 16Mi}
"#;

fn running_uid(c: &Cluster, pod: &str) -> Result<String, String> {
    let o = c.kubectl(&["get", "pod", pod, "-o", "jsonpath={.status.phase} {.metadata.uid}"]);
    match o.stdout.split_once(' ') {
        Some(("Running", uid)) if o.ok => Ok(uid.to_string()),
        _ => Err(format!("{} {}", o.stdout, o.stderr)),
    }
}

#[test]
fn a_claim_is_bind_mounted_into_the_container_and_outlives_the_pod() {
    assert!(unsafe { libc::geteuid() } == 0, "this test runs containerd: run it as root (CI does, after deploy/install-deps.sh)");
    let images = offline_images();
    let tmp = tempfile::tempdir().expect("tempdir");
    let airgap = busybox_only(&images, tmp.path());
    let cidr = common::pod_cidr();
    let c = Cluster::up_with(&tmp.path().join("c"), 1, &["--runtime", "containerd", "--images", &airgap.to_string_lossy(), "--cluster-cidr", &cidr]);
    let o = c.kubectl_stdin(&["apply", "-f", "-"], Some(STS));
    assert!(o.ok, "{}", o.stderr);
    let first = c.eventually(Duration::from_secs(120), "db-0 Running", || running_uid(&c, "db-0"));
    let volume = c.eventually(Duration::from_secs(30), "data-db-0 Bound", || {
        let o = c.ok(&["get", "pvc", "data-db-0", "-o", "jsonpath={.status.phase} {.spec.volumeName}"]);
        match o.split_once(' ') {
            Some(("Bound", v)) => Ok(v.to_string()),
            _ => Err(o),
        }
    });
    let dir = c.ok(&["get", "pv", &volume, "-o", "jsonpath={.spec.hostPath.path}"]);
    let file = std::path::Path::new(&dir).join("written-by");
    let on_disk = c.eventually(Duration::from_secs(20), "the container's write on the node's disk", || std::fs::read_to_string(&file).map_err(|e| e.to_string()));
    assert_eq!(on_disk.trim(), first, "written inside the container at /var/lib/db");

    c.ok(&["delete", "pod", "db-0"]);
    let second = c.eventually(Duration::from_secs(120), "db-0 back", || running_uid(&c, "db-0").and_then(|u| if u != first { Ok(u) } else { Err("the old db-0".into()) }));
    let logs = c.eventually(Duration::from_secs(20), "the new db-0's log", || {
        let l = c.ok(&["logs", "db-0"]);
        if l.contains("found:") { Ok(l) } else { Err(l) }
    });
    assert_eq!(logs.trim(), format!("found: {first}"), "db-0 ({second}) reads what its predecessor wrote");
}
