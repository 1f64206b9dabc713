//! The DaemonSet controller's decisions, without NATS: placement, node changes, rolling
//! updates and status, on builders for nodes, daemon sets and their pods.

use super::*;
use k8s_openapi::api::core::v1::{PodCondition, PodStatus};
use serde_json::json;

fn ds(extra: serde_json::Value) -> DaemonSet {
    let mut v = json!({"metadata": {"name": "agent", "namespace": "default", "uid": "ds-uid", "generation": 1},
        "spec": {"selector": {"matchLabels": {"app": "agent"}}, "template": {"metadata": {"labels": {"app": "agent"}}, "spec": {"containers": [{"name": "c", "image": "v1"}]}},
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}}}});
    merge(&mut v, extra);
    serde_json::from_value(v).unwrap()
}

fn merge(a: &mut serde_json::Value, b: serde_json::Value) {
    match (a, b) {
        (serde_json::Value::Object(a), serde_json::Value::Object(b)) => b.into_iter().for_each(|(k, v)| merge(a.entry(k).or_insert(serde_json::Value::Null), v)),
        (a, b) => *a = b,
    }
}

fn node(name: &str, extra: serde_json::Value) -> Node {
    let mut v = json!({"metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}}, "spec": {}});
    merge(&mut v, extra);
    serde_json::from_value(v).unwrap()
}

/// A daemon pod of `set`'s current template on `node`, created `age` seconds before 1000.
fn pod_of(set: &DaemonSet, name: &str, node: &str) -> Pod {
    let hash = revisions::template_hash(&set.spec.template);
    let mut p = pod_for(set, node, &hash, name.into());
    p.spec.as_mut().unwrap().node_name = Some(node.into());
    p
}

fn ready(mut p: Pod) -> Pod {
    let since = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::from_second(900).unwrap());
    p.status = Some(PodStatus { phase: Some("Running".into()), conditions: Some(vec![PodCondition { type_: "Ready".into(), status: "True".into(), last_transition_time: Some(since), ..Default::default() }]), ..Default::default() });
    p
}

fn names() -> impl FnMut() -> String {
    let mut i = 0;
    move || {
        i += 1;
        format!("agent-{i}")
    }
}

fn run(set: &DaemonSet, nodes: &[Node], pods: &[Pod]) -> Vec<Action> {
    reconcile(set, nodes, pods, &[], true, 1000, &mut names())
}

fn created_on(a: &[Action]) -> Vec<String> {
    a.iter().filter_map(|x| if let Action::Create(p) = x { node_of(p) } else { None }).collect()
}

fn deleted(a: &[Action]) -> Vec<String> {
    a.iter().filter_map(|x| if let Action::Delete(p) = x { p.metadata.name.clone() } else { None }).collect()
}

fn status(a: &[Action]) -> DaemonSetStatus {
    a.iter().find_map(|x| if let Action::Status(s) = x { Some(s.clone()) } else { None }).expect("a status")
}

#[test]
fn every_eligible_node_gets_one_pinned_pod() {
    let set = ds(json!({}));
    let nodes = [node("n1", json!({})), node("n2", json!({}))];
    let a = run(&set, &nodes, &[]);
    assert_eq!(created_on(&a), vec!["n1", "n2"]);
    let Some(Action::Create(p)) = a.iter().find(|x| matches!(x, Action::Create(_))) else { unreachable!() };
    let spec = p.spec.as_ref().unwrap();
    assert_eq!(spec.node_name, None, "the scheduler binds it");
    let term = &spec.affinity.as_ref().unwrap().node_affinity.as_ref().unwrap().required_during_scheduling_ignored_during_execution.as_ref().unwrap().node_selector_terms[0];
    assert_eq!(term.match_fields.as_ref().unwrap()[0].values, Some(vec!["n1".to_string()]));
    let labels = p.metadata.labels.as_ref().unwrap();
    assert_eq!(labels.get(TEMPLATE_GENERATION_LABEL).map(String::as_str), Some("1"));
    assert!(labels.contains_key(REVISION_HASH_LABEL));
    assert!(spec.tolerations.as_ref().unwrap().iter().any(|t| t.key.as_deref() == Some("node.kubernetes.io/unschedulable")));
    assert!(a.iter().any(|x| matches!(x, Action::Revision(RevisionAction::Create(_)))));
    assert_eq!((status(&a).desired_number_scheduled, status(&a).current_number_scheduled), (2, 0));
}

#[test]
fn selectors_and_taints_decide_eligibility() {
    let set = ds(json!({"spec": {"template": {"spec": {"nodeSelector": {"disk": "ssd"}}}}}));
    let nodes = [
        node("ssd", json!({"metadata": {"labels": {"disk": "ssd"}}})),
        node("hdd", json!({"metadata": {"labels": {"disk": "hdd"}}})),
        node("tainted", json!({"metadata": {"labels": {"disk": "ssd"}}, "spec": {"taints": [{"key": "dedicated", "value": "db", "effect": "NoSchedule"}]}})),
        // Cordoned and not-ready nodes still run daemons (the added tolerations).
        node("cordoned", json!({"metadata": {"labels": {"disk": "ssd"}}, "spec": {"unschedulable": true, "taints": [{"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}]}})),
    ];
    assert_eq!(created_on(&run(&set, &nodes, &[])), vec!["ssd", "cordoned"]);
    let affine = ds(json!({"spec": {"template": {"spec": {"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": "disk", "operator": "NotIn", "values": ["ssd"]}]}]}}}}}}}));
    assert_eq!(created_on(&run(&affine, &nodes, &[])), vec!["hdd"]);
}

#[test]
fn a_node_that_no_longer_fits_loses_its_pod_and_a_gone_node_too() {
    let set = ds(json!({"spec": {"template": {"spec": {"nodeSelector": {"role": "edge"}}}}}));
    let nodes = [node("n1", json!({"metadata": {"labels": {"role": "edge"}}})), node("n2", json!({}))];
    let pods = [ready(pod_of(&set, "a", "n1")), ready(pod_of(&set, "b", "n2")), ready(pod_of(&set, "c", "gone"))];
    let a = run(&set, &nodes, &pods);
    assert_eq!(deleted(&a), vec!["b", "c"]);
    assert!(created_on(&a).is_empty());
    let st = status(&a);
    assert_eq!((st.desired_number_scheduled, st.number_misscheduled, st.number_ready), (1, 1, 1));
}

#[test]
fn a_template_change_replaces_one_node_at_a_time() {
    let old = ds(json!({}));
    let nodes = [node("n1", json!({})), node("n2", json!({})), node("n3", json!({}))];
    let pods: Vec<Pod> = ["n1", "n2", "n3"].iter().map(|n| ready(pod_of(&old, &format!("old-{n}"), n))).collect();
    let new = ds(json!({"metadata": {"generation": 2}, "spec": {"template": {"spec": {"containers": [{"name": "c", "image": "v2"}]}}}}));
    let a = run(&new, &nodes, &pods);
    assert_eq!(deleted(&a), vec!["old-n1"], "maxUnavailable 1");
    // n1's old pod is stopping: nothing new there yet, and no other node goes meanwhile.
    let mut stopping = pods.clone();
    stopping[0].metadata.deletion_timestamp = Some(schema::object::now());
    let a = run(&new, &nodes, &stopping);
    assert!(deleted(&a).is_empty() && created_on(&a).is_empty(), "{a:?}");
    // Gone: its new pod is made; once that one is ready the next node goes.
    let a = run(&new, &nodes, &pods[1..]);
    assert_eq!(created_on(&a), vec!["n1"]);
    assert!(deleted(&a).is_empty());
    let mut next = pods[1..].to_vec();
    next.push(ready(pod_of(&new, "new-n1", "n1")));
    let a = run(&new, &nodes, &next);
    assert_eq!(deleted(&a), vec!["old-n2"]);
    let st = status(&a);
    assert_eq!((st.updated_number_scheduled, st.number_available, st.observed_generation), (Some(1), Some(3), Some(2)));
}

#[test]
fn surge_starts_the_new_pod_beside_the_old_one() {
    let old = ds(json!({}));
    let nodes = [node("n1", json!({})), node("n2", json!({}))];
    let pods: Vec<Pod> = ["n1", "n2"].iter().map(|n| ready(pod_of(&old, &format!("old-{n}"), n))).collect();
    let new = ds(json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "v2"}]}}, "updateStrategy": {"rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}}}));
    let a = run(&new, &nodes, &pods);
    assert_eq!(created_on(&a), vec!["n1"]);
    assert!(deleted(&a).is_empty());
    let mut both = pods.clone();
    both.push(pod_of(&new, "new-n1", "n1"));
    assert!(created_on(&run(&new, &nodes, &both)).is_empty(), "the surge is used up");
    both[2] = ready(both[2].clone());
    let a = run(&new, &nodes, &both);
    assert_eq!(deleted(&a), vec!["old-n1"]);
    assert_eq!(created_on(&a), vec!["n2"]);
}

#[test]
fn on_delete_leaves_old_pods_and_in_flight_writes_block_changes() {
    let old = ds(json!({}));
    let nodes = [node("n1", json!({}))];
    let pods = [ready(pod_of(&old, "old", "n1"))];
    let new = ds(json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "v2"}]}}, "updateStrategy": {"type": "OnDelete", "rollingUpdate": null}}}));
    assert!(deleted(&run(&new, &nodes, &pods)).is_empty());
    let a = reconcile(&ds(json!({})), &[node("n1", json!({})), node("n2", json!({}))], &[], &[], false, 1000, &mut names());
    assert!(a.iter().all(|x| !matches!(x, Action::Create(_) | Action::Delete(_))), "{a:?}");
}

#[test]
fn failed_daemons_are_made_again_and_min_ready_counts() {
    let set = ds(json!({"spec": {"minReadySeconds": 200}}));
    let mut failed = pod_of(&set, "f", "n1");
    failed.status = Some(PodStatus { phase: Some("Failed".into()), ..Default::default() });
    let a = run(&set, &[node("n1", json!({})), node("n2", json!({}))], &[failed, ready(pod_of(&set, "r", "n2"))]);
    assert_eq!(deleted(&a), vec!["f"]);
    assert_eq!(created_on(&a), vec!["n1"]);
    // Ready since 900, now 1000: not yet available with minReadySeconds 200.
    assert_eq!((status(&a).number_ready, status(&a).number_available), (1, Some(0)));
}
