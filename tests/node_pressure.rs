//! The kubelet's eviction manager with the real kubectl: a node whose `--eviction-hard`
//! threshold is crossed reports MemoryPressure with the kubelet's reason, and evicts its
//! BestEffort pod first (Failed, reason Evicted, the kubelet's message and a Warning
//! event), before a Guaranteed one. A node within its thresholds reports no pressure.

mod common;

use common::cluster::Cluster;
use std::time::Duration;

fn pod(name: &str, resources: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  runtimeClassName: host
  terminationGracePeriodSeconds: 1
  restartPolicy: Never
  containers:
  - name: main
    image: busybox
    command: ["sleep", "3600"]
{resources}
"#
    )
}

fn condition(c: &Cluster, ty: &str) -> String {
    c.ok(&["get", "node", "node-1", "-o", &format!("jsonpath={{.status.conditions[?(@.type==\"{ty}\")].status}}/{{.status.conditions[?(@.type==\"{ty}\")].reason}}")])
}

#[test]
fn a_node_short_of_memory_evicts_best_effort_pods_first() {
    let dir = tempfile::tempdir().unwrap();
    // Ready first, with the defaults: no pressure on this machine.
    let mut c = Cluster::up_with(&dir.path().join("calm"), 1, &[]);
    c.eventually(Duration::from_secs(60), "node-1 Ready", || {
        let s = condition(&c, "Ready");
        if s.starts_with("True/") { Ok(()) } else { Err(s) }
    });
    assert_eq!(condition(&c, "MemoryPressure"), "False/KubeletHasSufficientMemory");
    assert_eq!(condition(&c, "DiskPressure"), "False/KubeletHasNoDiskPressure");
    c.stop();

    // A threshold no machine meets: always short of memory.
    let mut c = Cluster::up_with(&dir.path().join("short"), 1, &["--eviction-hard", "memory.available<1000Ti"]);
    let guaranteed = "    resources:\n      requests: {cpu: 10m, memory: 16Mi}\n      limits: {cpu: 10m, memory: 16Mi}";
    for (name, res) in [("guaranteed", guaranteed), ("besteffort", "")] {
        let o = c.kubectl_stdin(&["apply", "-f", "-"], Some(&pod(name, res)));
        assert!(o.ok, "{}", o.stderr);
    }
    c.eventually(Duration::from_secs(60), "MemoryPressure True", || {
        let s = condition(&c, "MemoryPressure");
        if s == "True/KubeletHasInsufficientMemory" { Ok(()) } else { Err(s) }
    });
    let evicted = c.eventually(Duration::from_secs(90), "the BestEffort pod evicted", || {
        let s = c.ok(&["get", "pod", "besteffort", "-o", "jsonpath={.status.phase}/{.status.reason}/{.status.message}"]);
        if s.starts_with("Failed/Evicted/") { Ok(s) } else { Err(s) }
    });
    assert!(evicted.contains("The node was low on resource: memory. Threshold quantity: 1000Ti, available: "), "{evicted}");
    let events = c.ok(&["get", "events", "--field-selector", "involvedObject.name=besteffort", "-o", "jsonpath={range .items[*]}{.type} {.reason}{\"\\n\"}{end}"]);
    assert!(events.lines().any(|l| l == "Warning Evicted"), "{events}");
    // The Guaranteed pod goes only after the BestEffort one (one pod per period).
    c.eventually(Duration::from_secs(90), "then the Guaranteed pod", || {
        let s = c.ok(&["get", "pod", "guaranteed", "-o", "jsonpath={.status.phase}/{.status.reason}"]);
        if s == "Failed/Evicted" { Ok(()) } else { Err(s) }
    });
    let when = |name: &str| c.ok(&["get", "events", "--field-selector", &format!("involvedObject.name={name},reason=Evicted"), "-o", "jsonpath={.items[0].firstTimestamp}"]);
    assert!(when("besteffort") <= when("guaranteed"), "BestEffort first");
    c.stop();
}
