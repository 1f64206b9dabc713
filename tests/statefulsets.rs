//! StatefulSets with local persistent volumes: `web-0`, `web-1`, `web-2` are made in
//! order, each after the one before is Ready, each with its claim `www-web-<n>` Bound to
//! a local-path volume on its node; a pod writes into its volume, and a deleted `web-1`
//! comes back bound to the same claim and finds what it wrote.
//!
//! Pods run as host processes here (no mount namespace): a container finds its volume's
//! directory in `FLOTILLA_VOLUME_<NAME>` (and at `<pod dir>/volumes/<name>`).

mod common;

use common::cluster::Cluster;
use std::time::Duration;

const STS: &str = r#"
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: web
spec:
  replicas: 3
  serviceName: web
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: main
        image: busybox
        env:
        - name: POD_UID
          valueFrom: {fieldRef: {fieldPath: metadata.uid}}
        command: ["sh", "-c", "echo \"found: $(cat \"$FLOTILLA_VOLUME_WWW/written-by\" 2>/dev/null)\"; echo \"$POD_UID\" > \"$FLOTILLA_VOLUME_WWW/written-by\"; exec sleep 3600"]
        volumeMounts:
        - {name: www, mountPath: /usr/share/www}
  volumeClaimTemplates:
  - metadata:
      name: www
    spec:
      accessModes: [ReadWriteOnce]
      resources:
        requests: {storage: 16Mi}
"#;

fn field(c: &Cluster, kind: &str, name: &str, path: &str) -> String {
    c.ok(&["get", kind, name, "-o", &format!("jsonpath={path}")])
}

fn ready_and_running(c: &Cluster, pod: &str) -> Result<String, String> {
    let o = c.kubectl(&["get", "pod", pod, "-o", "jsonpath={.status.phase} {.status.conditions[?(@.type==\"Ready\")].status} {.metadata.uid}"]);
    let f: Vec<&str> = o.stdout.split(' ').collect();
    if o.ok && f.len() == 3 && f[0] == "Running" && f[1] == "True" { Ok(f[2].to_string()) } else { Err(format!("{} {}", o.stdout, o.stderr)) }
}

fn ts(s: &str) -> jiff::Timestamp {
    s.parse().unwrap_or_else(|e| panic!("timestamp {s:?}: {e}"))
}

#[test]
fn ordered_pods_keep_their_claims_and_data_across_a_replacement() {
    let dir = tempfile::tempdir().unwrap();
    let c = Cluster::up(&dir.path().join("c"), 2);
    let sc = c.ok(&["get", "sc"]);
    assert!(sc.contains("local-path (default)") && sc.contains("WaitForFirstConsumer"), "{sc}");
    let o = c.kubectl_stdin(&["apply", "-f", "-"], Some(STS));
    assert!(o.ok, "{}", o.stderr);

    for p in ["web-0", "web-1", "web-2"] {
        c.eventually(Duration::from_secs(90), &format!("{p} Running and Ready"), || ready_and_running(&c, p));
    }
    // OrderedReady: each pod was created no earlier than the one before became Ready.
    for (before, after) in [("web-0", "web-1"), ("web-1", "web-2")] {
        let ready_at = field(&c, "pod", before, "{.status.conditions[?(@.type==\"Ready\")].lastTransitionTime}");
        let created = field(&c, "pod", after, "{.metadata.creationTimestamp}");
        assert!(ts(&created) >= ts(&ready_at), "{after} created at {created}, before {before} was Ready at {ready_at}");
    }
    c.eventually(Duration::from_secs(30), "three claims Bound", || {
        let out = c.ok(&["get", "pvc"]);
        let bound = ["www-web-0", "www-web-1", "www-web-2"].iter().all(|n| out.lines().any(|l| l.starts_with(n) && l.contains("Bound") && l.contains("local-path")));
        if bound && out.starts_with("NAME") && out.contains("STORAGECLASS") { Ok(()) } else { Err(out) }
    });
    // Each claim's volume lives on the node its pod runs on.
    for i in 0..3 {
        let pv = field(&c, "pvc", &format!("www-web-{i}"), "{.spec.volumeName}");
        let pinned = field(&c, "pv", &pv, "{.spec.nodeAffinity.required.nodeSelectorTerms[0].matchExpressions[0].values[0]}");
        assert_eq!(pinned, field(&c, "pod", &format!("web-{i}"), "{.spec.nodeName}"), "web-{i}'s volume {pv}");
    }
    let pvs = c.ok(&["get", "pv"]);
    assert!(pvs.contains("default/www-web-1") && pvs.contains("Delete"), "{pvs}");

    // What web-1 wrote is on its node's disk, in its volume's directory.
    let old_uid = ready_and_running(&c, "web-1").unwrap();
    let volume = field(&c, "pvc", "www-web-1", "{.spec.volumeName}");
    let path = std::path::PathBuf::from(field(&c, "pv", &volume, "{.spec.hostPath.path}")).join("written-by");
    let on_disk = c.eventually(Duration::from_secs(20), "web-1 wrote into its volume", || std::fs::read_to_string(&path).map_err(|e| e.to_string()));
    assert_eq!(on_disk.trim(), old_uid);
    let first_logs = c.ok(&["logs", "web-1"]);
    assert_eq!(first_logs.trim(), "found:", "a fresh volume is empty");

    // Replaced: the same name, the same claim and volume, and the data is still there.
    c.ok(&["delete", "pod", "web-1"]);
    let new_uid = c.eventually(Duration::from_secs(90), "web-1 back", || ready_and_running(&c, "web-1").and_then(|u| if u != old_uid { Ok(u) } else { Err("the old web-1".into()) }));
    assert_eq!(field(&c, "pvc", "www-web-1", "{.spec.volumeName}"), volume);
    let claim = field(&c, "pod", "web-1", "{.spec.volumes[?(@.name==\"www\")].persistentVolumeClaim.claimName}");
    assert_eq!(claim, "www-web-1");
    let logs = c.eventually(Duration::from_secs(20), "the new web-1 reads the volume", || {
        let l = c.ok(&["logs", "web-1"]);
        if l.contains("found:") { Ok(l) } else { Err(l) }
    });
    assert_eq!(logs.trim(), format!("found: {old_uid}"), "the new web-1 ({new_uid}) sees what the old one wrote");

    let o = c.kubectl(&["rollout", "status", "sts/web", "--timeout=60s"]);
    assert!(o.ok, "{}\n{}", o.stdout, o.stderr);
    let sts = c.ok(&["get", "sts", "web"]);
    assert!(sts.contains("3/3"), "{sts}");
}
