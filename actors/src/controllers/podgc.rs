//! The pod garbage collector (kube's PodGC): removes pods no node agent will ever finish
//! off, so they do not linger as Terminating: pods bound to nodes that no longer exist,
//! terminating pods that were never scheduled, terminating pods on a node that is not
//! Ready once their grace period is over (at once when it has the out-of-service taint),
//! and the oldest finished pods beyond
//! --terminated-pod-gc-threshold.

use bus::informer::{watch_objects, InformerEvent, Scope};
use bus::Client;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use std::collections::HashMap;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// kube-controller-manager's --terminated-pod-gc-threshold default.
pub const TERMINATED_POD_GC_THRESHOLD: usize = 12500;
/// kube's gcCheckPeriod.
pub const GC_CHECK_PERIOD: Duration = Duration::from_secs(20);

#[derive(Debug, Clone, PartialEq)]
pub enum Why {
    TooManyTerminated,
    Orphaned,
    UnscheduledTerminating,
    TerminatingOnNotReadyNode,
}

/// The node taint an operator sets to say a node is gone for good: its terminating pods
/// are removed without waiting for their grace period.
pub const OUT_OF_SERVICE_TAINT: &str = "node.kubernetes.io/out-of-service";

/// What pod GC needs of a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeState {
    pub ready: bool,
    pub out_of_service: bool,
}

/// One pass (pure): the pods to force-delete. `nodes` holds every existing node;
/// `threshold` 0 keeps every finished pod.
pub fn reconcile<'a>(nodes: &HashMap<String, NodeState>, pods: &'a [Pod], now: jiff::Timestamp, threshold: usize) -> Vec<(&'a Pod, Why)> {
    let mut out = Vec::new();
    let finished = |p: &Pod| matches!(p.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Succeeded" | "Failed"));
    if threshold > 0 {
        let mut done: Vec<&Pod> = pods.iter().filter(|p| finished(p)).collect();
        if done.len() > threshold {
            done.sort_by_key(|p| (p.metadata.creation_timestamp.as_ref().map(|t| t.0), p.metadata.name.clone()));
            let extra = done.len() - threshold;
            out.extend(done.into_iter().take(extra).map(|p| (p, Why::TooManyTerminated)));
        }
    }
    for p in pods {
        if out.iter().any(|(q, _)| std::ptr::eq(*q, p)) {
            continue;
        }
        let node = p.spec.as_ref().and_then(|s| s.node_name.as_deref()).filter(|n| !n.is_empty());
        let deadline = p.metadata.deletion_timestamp.as_ref().map(|t| t.0);
        match (node, deadline) {
            (Some(n), _) if !nodes.contains_key(n) => out.push((p, Why::Orphaned)),
            (None, Some(_)) => out.push((p, Why::UnscheduledTerminating)),
            (Some(n), Some(d)) if nodes.get(n).is_some_and(|s| !s.ready && (s.out_of_service || d <= now)) => out.push((p, Why::TerminatingOnNotReadyNode)),
            _ => {}
        }
    }
    out
}

fn key(p: &Pod) -> String {
    format!("{}/{}", p.metadata.namespace.as_deref().unwrap_or(""), p.metadata.name.as_deref().unwrap_or(""))
}

fn state(n: &Node) -> NodeState {
    NodeState {
        ready: n.status.as_ref().and_then(|s| s.conditions.as_ref()).is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True")),
        out_of_service: n.spec.as_ref().and_then(|s| s.taints.as_ref()).is_some_and(|ts| ts.iter().any(|t| t.key == OUT_OF_SERVICE_TAINT)),
    }
}

/// Force-deletes (no grace: its node will not do it) the pod of that uid; an orphan's node
/// is looked up again first, as kube double-checks before acting on a cache.
async fn force_delete(client: &Client, p: &Pod, why: &Why) {
    if *why == Why::Orphaned {
        let node = p.spec.as_ref().and_then(|s| s.node_name.clone()).unwrap_or_default();
        if !matches!(client.get::<Node>(None, &node).await, Ok(None)) {
            return;
        }
    }
    let (ns, name) = (p.metadata.namespace.as_deref(), p.metadata.name.as_deref().unwrap_or(""));
    match client.get::<Pod>(ns, name).await {
        Ok(Some(cur)) if cur.metadata.uid == p.metadata.uid => {
            let rev = cur.metadata.resource_version.as_deref().and_then(|r| r.parse::<u64>().ok());
            match client.delete::<Pod>(ns, name, rev).await {
                Ok(_) => tracing::info!(pod = %key(p), reason = ?why, "pod GC: force-deleted"),
                Err(e) if e.is_not_found() || e.is_conflict() => {}
                Err(e) => tracing::warn!(pod = %key(p), error = %e, "pod GC: delete failed"),
            }
        }
        _ => {}
    }
}

pub fn start(client: Client, threshold: usize, stop: CancellationToken) -> tokio::task::JoinHandle<()> {
    // Made before the task runs, so they join the process's shared informers.
    let mut nodes_ev = watch_objects::<Node>(client.clone(), Scope::default()).boxed();
    let mut pods_ev = watch_objects::<Pod>(client.clone(), Scope::default()).boxed();
    tokio::spawn(async move {
        let mut nodes: HashMap<String, NodeState> = HashMap::new();
        let mut pods: HashMap<String, Pod> = HashMap::new();
        let (mut nodes_listed, mut pods_listed) = (false, false);
        let mut tick = tokio::time::interval(GC_CHECK_PERIOD);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                Some(ev) = nodes_ev.next() => match ev {
                    InformerEvent::Listed(items, _) => { nodes_listed = true; nodes = items.iter().map(|n| (n.metadata.name.clone().unwrap_or_default(), state(n))).collect(); }
                    InformerEvent::Applied(n, _) => { nodes.insert(n.metadata.name.clone().unwrap_or_default(), state(&n)); }
                    InformerEvent::Deleted(n, _) => { nodes.remove(n.metadata.name.as_deref().unwrap_or("")); }
                },
                Some(ev) = pods_ev.next() => match ev {
                    InformerEvent::Listed(items, _) => { pods_listed = true; pods = items.into_iter().map(|p| (key(&p), p)).collect(); }
                    InformerEvent::Applied(p, _) => { pods.insert(key(&p), p); }
                    InformerEvent::Deleted(p, _) => { pods.remove(&key(&p)); }
                },
                _ = tick.tick() => {
                    // Judging orphans needs both lists: an empty node cache is not "no nodes".
                    if !(nodes_listed && pods_listed) {
                        continue;
                    }
                    let all: Vec<Pod> = pods.values().cloned().collect();
                    for (p, why) in reconcile(&nodes, &all, jiff::Timestamp::now(), threshold) {
                        force_delete(&client, p, &why).await;
                    }
                }
                else => return,
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn at(s: &str) -> jiff::Timestamp {
        s.parse().unwrap()
    }

    fn pod(name: &str, node: Option<&str>, deleting: Option<&str>, phase: &str, created: &str) -> Pod {
        let mut v = json!({"metadata": {"name": name, "namespace": "d", "creationTimestamp": created}, "spec": {"containers": [{"name": "c"}]}, "status": {"phase": phase}});
        if let Some(n) = node {
            v["spec"]["nodeName"] = json!(n);
        }
        if let Some(d) = deleting {
            v["metadata"]["deletionTimestamp"] = json!(d);
        }
        serde_json::from_value(v).unwrap()
    }

    fn names(v: &[(&Pod, Why)]) -> Vec<(String, Why)> {
        v.iter().map(|(p, w)| (p.metadata.name.clone().unwrap(), w.clone())).collect()
    }

    #[test]
    fn pods_no_agent_will_finish_are_removed() {
        let st = |ready, out_of_service| NodeState { ready, out_of_service };
        let nodes: HashMap<String, NodeState> = [("up".to_string(), st(true, false)), ("down".to_string(), st(false, false)), ("retired".to_string(), st(false, true))].into();
        let t = "2026-01-01T00:00:00Z";
        let pods = vec![
            pod("ok", Some("up"), None, "Running", t),
            pod("orphan", Some("gone"), None, "Running", t),
            pod("never-scheduled", None, Some(t), "Pending", t),
            pod("stuck", Some("down"), Some("2026-01-01T00:00:30Z"), "Running", t),
            pod("in-grace", Some("down"), Some("2026-01-01T00:05:00Z"), "Running", t),
            pod("stopping", Some("up"), Some(t), "Running", t),
            pod("still-running-on-down", Some("down"), None, "Running", t),
            pod("on-retired", Some("retired"), Some("2026-01-01T00:05:00Z"), "Running", t),
        ];
        let got = names(&reconcile(&nodes, &pods, at("2026-01-01T00:01:00Z"), 0));
        let want = vec![("orphan".into(), Why::Orphaned), ("never-scheduled".into(), Why::UnscheduledTerminating), ("stuck".into(), Why::TerminatingOnNotReadyNode), ("on-retired".into(), Why::TerminatingOnNotReadyNode)];
        assert_eq!(got, want, "an out-of-service node's pods do not wait for their grace period");
    }

    #[test]
    fn the_oldest_finished_pods_beyond_the_threshold_go() {
        let nodes: HashMap<String, NodeState> = [("up".to_string(), NodeState { ready: true, out_of_service: false })].into();
        let pods = vec![
            pod("new", Some("up"), None, "Succeeded", "2026-01-03T00:00:00Z"),
            pod("old", Some("up"), None, "Failed", "2026-01-01T00:00:00Z"),
            pod("mid", Some("up"), None, "Succeeded", "2026-01-02T00:00:00Z"),
            pod("running", Some("up"), None, "Running", "2025-01-01T00:00:00Z"),
        ];
        let got = names(&reconcile(&nodes, &pods, at("2026-01-04T00:00:00Z"), 1));
        assert_eq!(got, vec![("old".into(), Why::TooManyTerminated), ("mid".into(), Why::TooManyTerminated)]);
        assert!(reconcile(&nodes, &pods, at("2026-01-04T00:00:00Z"), 0).is_empty(), "0 keeps them all");
    }
}
