//! Resource metrics and the HorizontalPodAutoscaler with the real kubectl: the node
//! agents' usage reports answer `kubectl top`, `kubectl autoscale` (autoscaling/v1,
//! stored as v2) scales a busy Deployment up to its maximum, and a target raised far
//! above the usage brings it back down to its minimum.

mod common;

use common::cluster::Cluster;
use std::time::Duration;

/// A little work in a bounded loop (about two minutes, then idle): each pod uses some
/// tens of millicores, several times its 10m request.
const BUSY: &str = "i=0; while [ $i -lt 2400 ]; do j=0; while [ $j -lt 300 ]; do j=$((j+1)); done; sleep 0.05; i=$((i+1)); done; sleep 3600";

#[test]
fn top_and_autoscale_follow_the_usage() {
    let dir = tempfile::tempdir().unwrap();
    let c = Cluster::up_with(&dir.path().join("c"), 1, &["--horizontal-pod-autoscaler-sync-period=2s"]);
    let wait = Duration::from_secs(90);
    c.ok(&["create", "deployment", "busy", "--image=busybox", "--", "sh", "-c", BUSY]);
    c.ok(&["set", "resources", "deployment", "busy", "--requests=cpu=10m"]);
    c.ok(&["rollout", "status", "deployment/busy", "--timeout=60s"]);

    // kubectl top: the node and the pod, with figures.
    c.eventually(wait, "kubectl top nodes prints the node", || {
        let o = c.kubectl(&["top", "nodes", "--no-headers"]);
        let f: Vec<&str> = o.stdout.split_whitespace().collect();
        if o.ok && f.first() == Some(&"node-1") && f.get(1).is_some_and(|cpu| cpu.ends_with('m')) { Ok(()) } else { Err(format!("{}{}", o.stdout, o.stderr)) }
    });
    c.eventually(wait, "kubectl top pods --containers prints the pod", || {
        let o = c.kubectl(&["top", "pods", "-l", "app=busy", "--containers", "--no-headers"]);
        let f: Vec<&str> = o.stdout.split_whitespace().collect();
        if o.ok && f.len() >= 4 && f[0].starts_with("busy-") && f[1] == "busybox" && f[2].ends_with('m') && f[3].ends_with("Mi") { Ok(()) } else { Err(format!("{}{}", o.stdout, o.stderr)) }
    });

    // Up: every pod uses more than half its request, so to the maximum.
    assert_eq!(c.ok(&["autoscale", "deployment", "busy", "--cpu-percent=50", "--min=1", "--max=3"]).trim(), "horizontalpodautoscaler.autoscaling/busy autoscaled");
    c.eventually(wait, "scaled up to 3", || {
        let r = c.ok(&["get", "deployment", "busy", "-o", "jsonpath={.spec.replicas}"]);
        if r == "3" { Ok(()) } else { Err(r) }
    });
    let targets = c.ok(&["get", "hpa", "busy", "--no-headers"]);
    assert!(targets.contains("cpu: ") && targets.contains("%/50%") && !targets.contains("<unknown>"), "{targets}");
    let events = c.ok(&["get", "events", "--field-selector=involvedObject.name=busy,reason=SuccessfulRescale", "-o", "jsonpath={.items[*].message}"]);
    assert!(events.contains("reason: cpu resource utilization (percentage of request) above target"), "{events}");
    // v1 reads show the same HPA through its one CPU target.
    assert_eq!(c.ok(&["get", "horizontalpodautoscalers.v1.autoscaling", "busy", "-o", "jsonpath={.spec.targetCPUUtilizationPercentage}"]), "50");
    c.eventually(wait, "the limit is reported", || {
        let reason = c.ok(&["get", "hpa", "busy", "-o", "jsonpath={.status.conditions[?(@.type==\"ScalingLimited\")].reason}"]);
        if reason == "TooManyReplicas" { Ok(()) } else { Err(reason) }
    });

    // Down: a target far above the usage, with no stabilization window.
    let patch = r#"{"spec":{"metrics":[{"type":"Resource","resource":{"name":"cpu","target":{"type":"Utilization","averageUtilization":100000}}}],"behavior":{"scaleDown":{"stabilizationWindowSeconds":0}}}}"#;
    c.ok(&["patch", "horizontalpodautoscalers.v2.autoscaling", "busy", "--type=merge", "-p", patch]);
    c.eventually(wait, "scaled down to 1", || {
        let r = c.ok(&["get", "deployment", "busy", "-o", "jsonpath={.spec.replicas}"]);
        if r == "1" { Ok(()) } else { Err(r) }
    });
}
