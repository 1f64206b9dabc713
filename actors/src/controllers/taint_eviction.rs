//! Taint-based eviction (kube's taint-eviction-controller): pods on a node with NoExecute
//! taints they do not tolerate are deleted at once; those tolerating them with
//! `tolerationSeconds` are deleted when that time has passed since the taint was added
//! (the default not-ready/unreachable tolerations make this 300 s for every pod).

use super::{delete_pod_gracefully, events};
use crate::scheduler::plugins::taint_toleration::tolerates;
use bus::informer::{watch_objects, InformerEvent, Scope};
use bus::Client;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod, PodCondition, Taint, Toleration};
use std::collections::{HashMap, HashSet};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const COMPONENT: &str = "taint-eviction-controller";

#[derive(Debug, Clone, PartialEq)]
pub enum Eviction {
    Keep,
    Now,
    At(jiff::Timestamp),
}

/// When a pod with these tolerations must leave a node with these taints (pure).
pub fn plan(taints: &[Taint], tolerations: &[Toleration], now: jiff::Timestamp) -> Eviction {
    let no_execute: Vec<&Taint> = taints.iter().filter(|t| t.effect == "NoExecute").collect();
    if no_execute.is_empty() {
        return Eviction::Keep;
    }
    let mut used: Vec<&Toleration> = Vec::new();
    for t in &no_execute {
        let matching: Vec<&Toleration> = tolerations.iter().filter(|tol| tolerates(tol, t)).collect();
        if matching.is_empty() {
            return Eviction::Now;
        }
        used.extend(matching);
    }
    // kube's getMinTolerationTime: the shortest tolerationSeconds of the tolerations in
    // use; none with seconds tolerates for ever.
    let Some(min) = used.iter().filter_map(|t| t.toleration_seconds).min() else { return Eviction::Keep };
    if min <= 0 {
        return Eviction::Now;
    }
    let since = no_execute.iter().filter_map(|t| t.time_added.as_ref().map(|x| x.0)).max().unwrap_or(now);
    let at = since + jiff::SignedDuration::from_secs(min);
    if at <= now { Eviction::Now } else { Eviction::At(at) }
}

/// Every pod to evict now and the soonest later deadline, over the pods on tainted nodes.
pub fn reconcile<'a>(nodes: &HashMap<String, Vec<Taint>>, pods: impl Iterator<Item = &'a Pod>, now: jiff::Timestamp) -> (Vec<&'a Pod>, Option<jiff::Timestamp>) {
    let mut evict = Vec::new();
    let mut next: Option<jiff::Timestamp> = None;
    for p in pods {
        if p.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let Some(taints) = p.spec.as_ref().and_then(|s| s.node_name.as_ref()).and_then(|n| nodes.get(n)) else { continue };
        let tolerations = p.spec.as_ref().and_then(|s| s.tolerations.clone()).unwrap_or_default();
        match plan(taints, &tolerations, now) {
            Eviction::Keep => {}
            Eviction::Now => evict.push(p),
            Eviction::At(t) => next = Some(next.map_or(t, |n| n.min(t))),
        }
    }
    (evict, next)
}

/// Adds the DisruptionTarget condition kube writes before deleting a pod it chose to
/// disrupt (taint eviction, preemption), so its owner and `kubectl describe` see why.
pub async fn mark_disruption_target(client: &Client, p: &Pod, reason: &str, message: &str) {
    let uid = p.metadata.uid.clone();
    let _ = super::update_outcome::<Pod, _>(client, p.metadata.namespace.as_deref(), p.metadata.name.as_deref().unwrap_or(""), |cur| {
        if cur.metadata.uid != uid || cur.metadata.deletion_timestamp.is_some() {
            return;
        }
        let conds = cur.status.get_or_insert_with(Default::default).conditions.get_or_insert_with(Vec::new);
        if conds.iter().any(|c| c.type_ == "DisruptionTarget" && c.status == "True") {
            return;
        }
        conds.retain(|c| c.type_ != "DisruptionTarget");
        conds.push(PodCondition { type_: "DisruptionTarget".into(), status: "True".into(), reason: Some(reason.into()), message: Some(message.into()), last_transition_time: Some(schema::object::now()), ..Default::default() });
    })
    .await;
}

fn key(p: &Pod) -> String {
    format!("{}/{}", p.metadata.namespace.as_deref().unwrap_or(""), p.metadata.name.as_deref().unwrap_or(""))
}

pub fn start(client: Client, stop: CancellationToken) -> tokio::task::JoinHandle<()> {
    // Made before the task runs, so they join the process's shared informers.
    let mut nodes_ev = watch_objects::<Node>(client.clone(), Scope::default()).boxed();
    let mut pods_ev = watch_objects::<Pod>(client.clone(), Scope::default()).boxed();
    tokio::spawn(async move {
        // Only nodes with NoExecute taints are kept: on a healthy cluster a pass is free.
        let mut tainted: HashMap<String, Vec<Taint>> = HashMap::new();
        let mut pods: HashMap<String, Pod> = HashMap::new();
        // Evictions already sent for these uids; the pod's deletion event follows.
        let mut sent: HashSet<String> = HashSet::new();
        let mut wake: Option<tokio::time::Instant> = None;
        // Evictions that failed come back here, to be sent again on the next pass.
        let (failed_tx, mut failed_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        let taints_of = |n: &Node| -> Vec<Taint> { n.spec.as_ref().and_then(|s| s.taints.clone()).unwrap_or_default().into_iter().filter(|t| t.effect == "NoExecute").collect() };
        loop {
            let sleep = async {
                match wake {
                    Some(t) => tokio::time::sleep_until(t).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = stop.cancelled() => return,
                Some(ev) = nodes_ev.next() => {
                    let put = |m: &mut HashMap<String, Vec<Taint>>, n: &Node| {
                        let name = n.metadata.name.clone().unwrap_or_default();
                        let t = taints_of(n);
                        if t.is_empty() { m.remove(&name); } else { m.insert(name, t); }
                    };
                    match ev {
                        InformerEvent::Listed(items, _) => { tainted.clear(); items.iter().for_each(|n| put(&mut tainted, n)); }
                        InformerEvent::Applied(n, _) => put(&mut tainted, &n),
                        InformerEvent::Deleted(n, _) => { tainted.remove(n.metadata.name.as_deref().unwrap_or("")); }
                    }
                }
                Some(ev) = pods_ev.next() => match ev {
                    InformerEvent::Listed(items, _) => pods = items.into_iter().map(|p| (key(&p), p)).collect(),
                    InformerEvent::Applied(p, _) => { pods.insert(key(&p), p); }
                    InformerEvent::Deleted(p, _) => {
                        sent.remove(p.metadata.uid.as_deref().unwrap_or(""));
                        pods.remove(&key(&p));
                    }
                },
                _ = sleep => { wake = None; }
                Some(uid) = failed_rx.recv() => {
                    sent.remove(&uid);
                    wake = Some(tokio::time::Instant::now() + Duration::from_secs(1));
                    continue;
                }
                else => return,
            }
            if tainted.is_empty() {
                continue;
            }
            let now = jiff::Timestamp::now();
            let (evict, next) = reconcile(&tainted, pods.values(), now);
            wake = next.map(|t| tokio::time::Instant::now() + Duration::from_millis(now.duration_until(t).as_millis().max(0) as u64));
            for p in evict {
                let uid = p.metadata.uid.clone().unwrap_or_default();
                if !sent.insert(uid) {
                    continue;
                }
                tracing::info!(pod = %key(p), "evicting a pod from a NoExecute-tainted node");
                events::record(&client, events::event(events::reference(p), "Normal", "TaintManagerEviction", &format!("Marking for deletion Pod {}", key(p)), COMPONENT));
                let (c, p, failed) = (client.clone(), p.clone(), failed_tx.clone());
                tokio::spawn(async move {
                    mark_disruption_target(&c, &p, "DeletionByTaintManager", "Taint manager: deleting due to NoExecute taint").await;
                    if let Err(e) = delete_pod_gracefully(&c, &p).await {
                        tracing::warn!(pod = %key(&p), error = %e, "taint eviction failed");
                        let _ = failed.send(p.metadata.uid.clone().unwrap_or_default());
                    }
                });
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use serde_json::json;

    fn at(s: &str) -> jiff::Timestamp {
        s.parse().unwrap()
    }

    fn unreachable(added: &str) -> Taint {
        Taint { key: "node.kubernetes.io/unreachable".into(), effect: "NoExecute".into(), value: None, time_added: Some(Time(at(added))) }
    }

    fn tol(seconds: Option<i64>) -> Toleration {
        Toleration { key: Some("node.kubernetes.io/unreachable".into()), operator: Some("Exists".into()), effect: Some("NoExecute".into()), toleration_seconds: seconds, ..Default::default() }
    }

    #[test]
    fn untolerated_no_execute_taints_evict_at_once() {
        assert_eq!(plan(&[unreachable("2026-01-01T00:00:00Z")], &[], at("2026-01-01T00:00:01Z")), Eviction::Now);
        let soft = Taint { effect: "NoSchedule".into(), ..unreachable("2026-01-01T00:00:00Z") };
        assert_eq!(plan(&[soft], &[], at("2026-01-01T00:00:01Z")), Eviction::Keep, "only NoExecute evicts");
    }

    #[test]
    fn toleration_seconds_count_from_the_taint() {
        let t = [unreachable("2026-01-01T00:00:00Z")];
        assert_eq!(plan(&t, &[tol(Some(300))], at("2026-01-01T00:00:10Z")), Eviction::At(at("2026-01-01T00:05:00Z")));
        assert_eq!(plan(&t, &[tol(Some(5))], at("2026-01-01T00:00:10Z")), Eviction::Now);
        assert_eq!(plan(&t, &[tol(None)], at("2026-01-01T10:00:00Z")), Eviction::Keep, "no seconds: for ever");
        assert_eq!(plan(&t, &[tol(None), tol(Some(60))], at("2026-01-01T00:00:10Z")), Eviction::At(at("2026-01-01T00:01:00Z")));
        assert_eq!(plan(&t, &[tol(Some(0))], at("2026-01-01T00:00:00Z")), Eviction::Now);
    }

    #[test]
    fn reconcile_picks_the_pods_on_tainted_nodes_and_the_next_deadline() {
        let pod = |name: &str, node: &str, seconds: Option<i64>, deleting: bool| -> Pod {
            let mut v = json!({"metadata": {"name": name, "namespace": "d", "uid": name}, "spec": {"nodeName": node, "containers": [{"name": "c"}], "tolerations": seconds.map(|s| vec![json!({"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": s})]).unwrap_or_default()}});
            if deleting {
                v["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
            }
            serde_json::from_value(v).unwrap()
        };
        let nodes: HashMap<String, Vec<Taint>> = [("bad".to_string(), vec![unreachable("2026-01-01T00:00:00Z")])].into();
        let pods = [pod("a", "bad", None, false), pod("b", "bad", Some(30), false), pod("c", "good", None, false), pod("d", "bad", None, true)];
        let (evict, next) = reconcile(&nodes, pods.iter(), at("2026-01-01T00:00:10Z"));
        assert_eq!(evict.iter().map(|p| p.metadata.name.clone().unwrap()).collect::<Vec<_>>(), vec!["a"]);
        assert_eq!(next, Some(at("2026-01-01T00:00:30Z")));
        let (evict, next) = reconcile(&nodes, pods.iter(), at("2026-01-01T00:00:31Z"));
        assert_eq!((evict.len(), next), (2, None));
    }
}
