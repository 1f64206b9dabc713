//! The StatefulSet controller's decisions, without NATS: ordered creation with claims,
//! scale down, rolling updates with a partition, claim retention and status.

use super::*;
use k8s_openapi::api::core::v1::{PodCondition, PodStatus};
use serde_json::json;

fn sts(extra: serde_json::Value) -> StatefulSet {
    let mut v = json!({"metadata": {"name": "web", "namespace": "default", "uid": "sts-uid", "generation": 1},
        "spec": {"replicas": 3, "serviceName": "web", "selector": {"matchLabels": {"app": "web"}}, "podManagementPolicy": "OrderedReady",
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}},
            "persistentVolumeClaimRetentionPolicy": {"whenDeleted": "Retain", "whenScaled": "Retain"},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "v1"}]}},
            "volumeClaimTemplates": [{"metadata": {"name": "www"}, "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}]}});
    merge(&mut v, extra);
    serde_json::from_value(v).unwrap()
}

fn merge(a: &mut serde_json::Value, b: serde_json::Value) {
    match (a, b) {
        (serde_json::Value::Object(a), serde_json::Value::Object(b)) => b.into_iter().for_each(|(k, v)| merge(a.entry(k).or_insert(serde_json::Value::Null), v)),
        (a, b) => *a = b,
    }
}

fn rev(set: &StatefulSet) -> String {
    format!("web-{}", revisions::template_hash(&set.spec.template))
}

fn pod(set: &StatefulSet, ord: i32, ready: bool) -> Pod {
    let mut p = pod_for(set, &set.spec.template, &rev(set), ord);
    p.metadata.uid = Some(format!("pod-{ord}"));
    p.spec.as_mut().unwrap().node_name = Some("n1".into());
    let since = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::from_second(900).unwrap());
    let conds = ready.then(|| vec![PodCondition { type_: "Ready".into(), status: "True".into(), last_transition_time: Some(since), ..Default::default() }]);
    p.status = Some(PodStatus { phase: Some(if ready { "Running" } else { "Pending" }.into()), conditions: conds, ..Default::default() });
    p
}

fn claims_of(set: &StatefulSet, ords: &[i32]) -> Vec<PersistentVolumeClaim> {
    let t = set.spec.volume_claim_templates.as_ref().unwrap()[0].clone();
    ords.iter().map(|o| claim_for(set, &t, *o)).collect()
}

fn run(set: &StatefulSet, pods: &[Pod], claims: &[PersistentVolumeClaim]) -> Vec<Action> {
    reconcile(set, pods, &[], claims, true, 1000)
}

fn writes(a: &[Action]) -> Vec<String> {
    a.iter()
        .filter_map(|x| match x {
            Action::CreateClaim(c) => Some(format!("claim {}", c.metadata.name.as_deref().unwrap())),
            Action::Create(p) => Some(format!("create {}", p.metadata.name.as_deref().unwrap())),
            Action::Delete(p) => Some(format!("delete {}", p.metadata.name.as_deref().unwrap())),
            _ => None,
        })
        .collect()
}

#[test]
fn ordered_ready_makes_one_pod_at_a_time_with_its_claim_first() {
    let set = sts(json!({}));
    let a = run(&set, &[], &[]);
    assert_eq!(writes(&a), vec!["claim www-web-0", "create web-0"]);
    let Some(Action::Create(p)) = a.iter().find(|x| matches!(x, Action::Create(_))) else { unreachable!() };
    let spec = p.spec.as_ref().unwrap();
    assert_eq!((spec.hostname.as_deref(), spec.subdomain.as_deref()), (Some("web-0"), Some("web")));
    let labels = p.metadata.labels.as_ref().unwrap();
    assert_eq!((labels[POD_NAME_LABEL].as_str(), labels[POD_INDEX_LABEL].as_str()), ("web-0", "0"));
    assert_eq!(spec.volumes.as_ref().unwrap()[0].persistent_volume_claim.as_ref().unwrap().claim_name, "www-web-0");
    // web-0 not ready yet: web-1 waits.
    assert!(writes(&run(&set, &[pod(&set, 0, false)], &claims_of(&set, &[0]))).is_empty());
    assert_eq!(writes(&run(&set, &[pod(&set, 0, true)], &claims_of(&set, &[0]))), vec!["claim www-web-1", "create web-1"]);
}

#[test]
fn parallel_makes_them_all_and_a_replaced_pod_reuses_its_claim() {
    let set = sts(json!({"spec": {"podManagementPolicy": "Parallel"}}));
    assert_eq!(writes(&run(&set, &[], &[])), vec!["claim www-web-0", "create web-0", "claim www-web-1", "create web-1", "claim www-web-2", "create web-2"]);
    let set = sts(json!({}));
    let a = run(&set, &[pod(&set, 0, true), pod(&set, 2, true)], &claims_of(&set, &[0, 1, 2]));
    assert_eq!(writes(&a), vec!["create web-1"], "the claim of web-1 is still there");
}

#[test]
fn scale_down_goes_from_the_top_one_at_a_time() {
    let set = sts(json!({"spec": {"replicas": 1}}));
    let pods = [pod(&set, 0, true), pod(&set, 1, true), pod(&set, 2, true)];
    assert_eq!(writes(&run(&set, &pods, &claims_of(&set, &[0, 1, 2]))), vec!["delete web-2"]);
    let mut stopping = pods.clone();
    stopping[2].metadata.deletion_timestamp = Some(schema::object::now());
    assert!(writes(&run(&set, &stopping, &[])).is_empty(), "waits for web-2 to go");
}

#[test]
fn rolling_update_goes_from_the_top_down_to_the_partition() {
    let old = sts(json!({}));
    let pods: Vec<Pod> = (0..3).map(|o| pod(&old, o, true)).collect();
    let new = sts(json!({"metadata": {"generation": 2}, "spec": {"template": {"spec": {"containers": [{"name": "c", "image": "v2"}]}}, "updateStrategy": {"rollingUpdate": {"partition": 1}}}}));
    let mut with_status = new.clone();
    with_status.status = Some(StatefulSetStatus { current_revision: Some(rev(&old)), ..Default::default() });
    assert_eq!(writes(&run(&with_status, &pods, &claims_of(&old, &[0, 1, 2]))), vec!["delete web-2"]);
    let updated = [pods[0].clone(), pods[1].clone(), pod(&new, 2, true)];
    assert_eq!(writes(&run(&with_status, &updated, &[])), vec!["delete web-1"]);
    let done = [pods[0].clone(), pod(&new, 1, true), pod(&new, 2, true)];
    let a = run(&with_status, &done, &[]);
    assert!(writes(&a).is_empty(), "web-0 is below the partition: {a:?}");
    let Some(Action::Status(st)) = a.iter().find(|x| matches!(x, Action::Status(_))) else { panic!("{a:?}") };
    assert_eq!((st.updated_replicas, st.current_revision.clone(), st.update_revision.clone()), (Some(2), Some(rev(&old)), Some(rev(&new))));
    // web-0 recreated below the partition gets the current (old) template.
    let old_rev = revisions::new_revision(&Owner { kind: "StatefulSet", meta: &old.metadata }, &old.spec.template, &revisions::template_hash(&old.spec.template), 1);
    let a = reconcile(&with_status, &done[1..], &[old_rev], &[], true, 1000);
    let Some(Action::Create(p)) = a.iter().find(|x| matches!(x, Action::Create(_))) else { panic!("{a:?}") };
    assert_eq!(p.spec.as_ref().unwrap().containers[0].image.as_deref(), Some("v1"));
}

#[test]
fn a_finished_rollout_makes_the_update_revision_current() {
    let set = sts(json!({"spec": {"replicas": 2}}));
    let a = run(&set, &[pod(&set, 0, true), pod(&set, 1, true)], &[]);
    let Some(Action::Status(st)) = a.iter().find(|x| matches!(x, Action::Status(_))) else { panic!("{a:?}") };
    assert_eq!((st.replicas, st.ready_replicas, st.current_revision.clone()), (2, Some(2), Some(rev(&set))));
}

#[test]
fn retention_policy_is_carried_by_owner_references() {
    let set = sts(json!({"spec": {"replicas": 1, "persistentVolumeClaimRetentionPolicy": {"whenDeleted": "Delete", "whenScaled": "Delete"}}}));
    let pods = [pod(&set, 0, true), pod(&set, 1, true)];
    let a = run(&set, &pods, &claims_of(&set, &[0, 1]));
    let owners: BTreeMap<String, Vec<String>> = a.iter().filter_map(|x| if let Action::ClaimOwners { name, owners } = x { Some((name.clone(), owners.iter().map(|o| o.kind.clone()).collect())) } else { None }).collect();
    assert_eq!(owners["www-web-0"], vec!["StatefulSet"]);
    assert_eq!(owners["www-web-1"], vec!["StatefulSet", "Pod"], "scaled away: the pod owns it too");
    // A condemned claim whose pod is already gone keeps only the set as its owner.
    let a = run(&set, &pods[..1], &claims_of(&set, &[0, 1]));
    let gone: Vec<&Action> = a.iter().filter(|x| matches!(x, Action::ClaimOwners { name, .. } if name == "www-web-1")).collect();
    assert!(matches!(gone[..], [Action::ClaimOwners { ref owners, .. }] if owners.len() == 1 && owners[0].kind == "StatefulSet"), "{gone:?}");
    let retain = sts(json!({"spec": {"replicas": 1}}));
    assert!(run(&retain, &[pod(&retain, 0, true)], &claims_of(&retain, &[0, 1])).iter().all(|x| !matches!(x, Action::ClaimOwners { .. })));
}

#[test]
fn names_parse_back_to_ordinals() {
    assert_eq!(ordinal_of("web", "web-12"), Some(12));
    assert_eq!(ordinal_of("web", "web-x"), None);
    assert_eq!(ordinal_of("web", "webby-1"), None);
    assert_eq!(claim_name("www", "web", 3), "www-web-3");
}
