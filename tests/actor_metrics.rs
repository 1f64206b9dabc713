//! Actor-level observability on a real cluster: after `kubectl create deployment` runs a
//! pod, the gateway's /metrics counts messages and fills the handling-time histogram of
//! every actor that took part (gateway, controllers, scheduler, kubelet), the scheduler's
//! and the kubelet's time-in-mailbox histograms, and kube-apiserver's request series
//! under their own names and labels.

mod common;

use common::cluster::Cluster;
use std::time::Duration;

/// The value of the series whose line starts with `series` (name and labels).
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

fn count_of(text: &str, family: &str, actor: &str) -> f64 {
    value(text, &format!("{family}{{actor=\"{actor}\"}}")).unwrap_or(0.0)
}

#[test]
fn a_deployment_leaves_its_trace_in_every_actors_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let c = Cluster::up(&dir.path().join("c"), 1);
    c.ok(&["create", "deployment", "x", "--image=busybox", "--", "sleep", "3600"]);
    c.eventually(Duration::from_secs(120), "the pod Running", || {
        let out = c.ok(&["get", "pods", "-l", "app=x", "-o", "jsonpath={.items[*].status.phase}"]);
        if out.trim() == "Running" { Ok(()) } else { Err(out) }
    });
    let actors = ["gateway", "deployment-controller", "replicaset-controller", "scheduler", "kubelet"];
    let text = c.eventually(Duration::from_secs(30), "every actor counted", || {
        let text = c.ok(&["get", "--raw", "/metrics"]);
        let missing: Vec<&str> = actors
            .iter()
            .copied()
            .filter(|a| count_of(&text, "flotilla_actor_messages_total", a) < 1.0 || count_of(&text, "flotilla_actor_handling_seconds_count", a) < 1.0)
            .collect();
        if missing.is_empty() { Ok(text) } else { Err(format!("no messages or histogram for {missing:?}")) }
    });
    for a in actors {
        let inf = value(&text, &format!("flotilla_actor_handling_seconds_bucket{{actor=\"{a}\",le=\"+Inf\"}}")).unwrap_or(0.0);
        assert_eq!(inf, count_of(&text, "flotilla_actor_handling_seconds_count", a), "{a}: +Inf bucket is the count");
        assert!(value(&text, &format!("flotilla_actor_messages_failed_total{{actor=\"{a}\"}}")).is_some(), "{a}: a failed counter");
        assert!(value(&text, &format!("flotilla_actor_mailbox_depth{{actor=\"{a}\"}}")).is_some(), "{a}: a mailbox gauge");
    }
    for a in ["scheduler", "kubelet"] {
        assert!(count_of(&text, "flotilla_actor_mailbox_seconds_count", a) >= 1.0, "{a}: time in mailbox measured");
    }
    let created = "apiserver_request_total{verb=\"CREATE\",group=\"apps\",version=\"v1\",resource=\"deployments\",subresource=\"\",scope=\"resource\",component=\"apiserver\",code=\"201\"}";
    assert_eq!(value(&text, created), Some(1.0), "one Deployment created");
    assert!(text.contains("apiserver_request_duration_seconds_bucket{verb=\"CREATE\",group=\"apps\",version=\"v1\",resource=\"deployments\","), "a CREATE latency histogram");
    assert!(text.lines().any(|l| l.starts_with("apiserver_request_total{verb=\"LIST\",") && l.contains("resource=\"pods\"")), "kubectl get pods is a LIST");
    assert!(text.contains("# TYPE apiserver_request_total counter"));
    // The bus and the state group.
    assert!(text.lines().any(|l| l.starts_with("flotilla_bus_requests_total{") && l.contains("outcome=\"answered\"")), "store requests counted");
    assert!(text.lines().any(|l| l.starts_with("flotilla_bus_publishes_total{")), "event publishes counted");
    assert!(value(&text, "flotilla_state_commit_seconds_count").unwrap_or(0.0) >= 1.0, "commits timed");
    assert!(text.lines().any(|l| l.starts_with("flotilla_state_leader_changes_total{")), "the first leader counted");
}
