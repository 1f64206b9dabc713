//! The PersistentVolume binder (kube-controller-manager's persistentvolume-binder): binds
//! claims to volumes that satisfy them (class, size, access modes, selector), keeps both
//! sides' phases (Pending/Bound/Released/Lost) and reclaims the volumes of deleted claims.
//! WaitForFirstConsumer claims wait for the scheduler's `selected-node` annotation.

use super::update_with_retry;
use bus::informer::{watch_objects, InformerEvent, Scope};
use bus::Client;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{ObjectReference, PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use schema::storage::{BIND_COMPLETED_ANNOTATION, BOUND_BY_CONTROLLER_ANNOTATION, SELECTED_NODE_ANNOTATION, STORAGE_PROVISIONER_ANNOTATION};
use std::collections::{BTreeMap, HashSet};
use tokio_util::sync::CancellationToken;

const ACTOR: &str = "persistentvolume-binder";

#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Points the volume at the claim (`spec.claimRef`, with its uid), phase Bound.
    BindVolume { pv: String, claim: ObjectReference },
    /// Points the claim at the volume, phase Bound with the volume's capacity and modes.
    BindClaim { ns: String, name: String, pv: String, capacity: BTreeMap<String, Quantity>, modes: Vec<String> },
    VolumePhase { pv: String, phase: &'static str },
    ClaimPhase { ns: String, name: String, phase: &'static str },
    /// Reclaim policy Delete: the claim that held it is gone.
    DeleteVolume { pv: String },
    /// No volume fits: the class's provisioner is asked to make one.
    AskProvisioner { ns: String, name: String, provisioner: String },
    /// An Event on the claim saying what it waits for (recorded once per claim and reason).
    Note { claim: ObjectReference, reason: &'static str, message: String },
}

fn name_of<K: bus::client::Object>(o: &K) -> String {
    o.metadata().name.clone().unwrap_or_default()
}

pub fn claim_class(c: &PersistentVolumeClaim) -> &str {
    c.spec.as_ref().and_then(|s| s.storage_class_name.as_deref()).unwrap_or("")
}

fn claim_phase(c: &PersistentVolumeClaim) -> &str {
    c.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("")
}

fn volume_phase(v: &PersistentVolume) -> &str {
    v.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("")
}

fn annotation<'a, K: bus::client::Object>(o: &'a K, k: &str) -> Option<&'a str> {
    o.metadata().annotations.as_ref().and_then(|a| a.get(k)).map(String::as_str)
}

/// Whether a class binds only once a pod using the claim is scheduled.
pub fn waits_for_consumer(class: Option<&StorageClass>) -> bool {
    class.and_then(|c| c.volume_binding_mode.as_deref()) == Some("WaitForFirstConsumer")
}

fn requested(c: &PersistentVolumeClaim) -> u64 {
    c.spec.as_ref().and_then(|s| s.resources.as_ref()).and_then(|r| r.requests.as_ref()).and_then(|r| r.get("storage")).and_then(|q| schema::quantity::value(&q.0)).unwrap_or(0)
}

fn capacity(v: &PersistentVolume) -> u64 {
    v.spec.as_ref().and_then(|s| s.capacity.as_ref()).and_then(|c| c.get("storage")).and_then(|q| schema::quantity::value(&q.0)).unwrap_or(0)
}

/// matchLabels and matchExpressions (In, NotIn, Exists, DoesNotExist) against labels.
pub fn selector_matches(sel: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let labels_ok = sel.match_labels.iter().flatten().all(|(k, v)| labels.get(k) == Some(v));
    let exprs_ok = sel.match_expressions.iter().flatten().all(|e| {
        let vals = e.values.clone().unwrap_or_default();
        match e.operator.as_str() {
            "In" => labels.get(&e.key).is_some_and(|v| vals.contains(v)),
            "NotIn" => labels.get(&e.key).is_none_or(|v| !vals.contains(v)),
            "Exists" => labels.contains_key(&e.key),
            "DoesNotExist" => !labels.contains_key(&e.key),
            _ => false,
        }
    });
    labels_ok && exprs_ok
}

/// Whether the volume's required node affinity admits the node. Flotilla's nodes are
/// named after their `kubernetes.io/hostname` label, so terms on that label and on
/// `metadata.name` are decided by the name; a term on any other label does not match.
pub fn volume_allows_node(v: &PersistentVolume, node: &str) -> bool {
    let Some(terms) = v.spec.as_ref().and_then(|s| s.node_affinity.as_ref()).and_then(|a| a.required.as_ref()).map(|r| &r.node_selector_terms) else { return true };
    terms.iter().any(|t| {
        let exprs = t.match_expressions.iter().flatten().map(|e| (e.key.as_str(), e));
        let fields = t.match_fields.iter().flatten().map(|e| (if e.key == "metadata.name" { "kubernetes.io/hostname" } else { e.key.as_str() }, e));
        let mut any = false;
        let ok = exprs.chain(fields).all(|(key, e)| {
            any = true;
            let vals = e.values.clone().unwrap_or_default();
            key == "kubernetes.io/hostname"
                && match e.operator.as_str() {
                    "In" => vals.iter().any(|v| v == node),
                    "NotIn" => !vals.iter().any(|v| v == node),
                    "Exists" => true,
                    _ => false,
                }
        });
        any && ok
    })
}

fn claim_ref_is(r: &ObjectReference, c: &PersistentVolumeClaim) -> bool {
    r.namespace == c.metadata.namespace && r.name == c.metadata.name
}

fn fits(v: &PersistentVolume, c: &PersistentVolumeClaim, node: Option<&str>) -> bool {
    let vs = v.spec.clone().unwrap_or_default();
    let cs = c.spec.clone().unwrap_or_default();
    let modes = vs.access_modes.unwrap_or_default();
    let labels = v.metadata.labels.clone().unwrap_or_default();
    vs.claim_ref.is_none()
        && v.metadata.deletion_timestamp.is_none()
        && matches!(volume_phase(v), "" | "Pending" | "Available")
        && vs.storage_class_name.as_deref().unwrap_or("") == claim_class(c)
        && capacity(v) >= requested(c)
        && cs.access_modes.unwrap_or_default().iter().all(|m| modes.contains(m))
        && cs.selector.as_ref().is_none_or(|s| selector_matches(s, &labels))
        && node.is_none_or(|n| volume_allows_node(v, n))
}

fn reference(c: &PersistentVolumeClaim) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("PersistentVolumeClaim".into()),
        namespace: c.metadata.namespace.clone(),
        name: c.metadata.name.clone(),
        uid: c.metadata.uid.clone(),
        resource_version: c.metadata.resource_version.clone(),
        ..Default::default()
    }
}

fn bind_claim(c: &PersistentVolumeClaim, v: &PersistentVolume) -> Action {
    let vs = v.spec.clone().unwrap_or_default();
    Action::BindClaim {
        ns: c.metadata.namespace.clone().unwrap_or_default(),
        name: name_of(c),
        pv: name_of(v),
        capacity: vs.capacity.unwrap_or_default(),
        modes: vs.access_modes.unwrap_or_default(),
    }
}

fn claim_bound_fully(c: &PersistentVolumeClaim, v: &PersistentVolume) -> bool {
    claim_phase(c) == "Bound" && annotation(c, BIND_COMPLETED_ANNOTATION) == Some("yes") && c.status.as_ref().and_then(|s| s.capacity.as_ref()) == v.spec.as_ref().and_then(|s| s.capacity.as_ref())
}

/// Decides every binding step for the whole cluster's claims, volumes and classes.
pub fn reconcile(claims: &[PersistentVolumeClaim], volumes: &[PersistentVolume], classes: &[StorageClass]) -> Vec<Action> {
    let mut out = Vec::new();
    // Volumes promised to a claim in this pass: one volume is never given to two claims.
    let mut taken: HashSet<String> = HashSet::new();
    let mut sorted: Vec<&PersistentVolumeClaim> = claims.iter().collect();
    sorted.sort_by_key(|c| (c.metadata.creation_timestamp.as_ref().map(|t| t.0), c.metadata.name.clone()));
    for c in sorted {
        let (ns, name) = (c.metadata.namespace.clone().unwrap_or_default(), name_of(c));
        let bound_to = c.spec.as_ref().and_then(|s| s.volume_name.clone()).filter(|v| !v.is_empty());
        if let Some(pv) = bound_to {
            match volumes.iter().find(|v| name_of(*v) == pv) {
                None if claim_phase(c) != "Lost" && claim_phase(c) == "Bound" => out.push(Action::ClaimPhase { ns, name, phase: "Lost" }),
                None => {}
                Some(v) => match v.spec.as_ref().and_then(|s| s.claim_ref.as_ref()) {
                    None => {
                        out.push(Action::BindVolume { pv: pv.clone(), claim: reference(c) });
                        out.push(bind_claim(c, v));
                    }
                    Some(r) if claim_ref_is(r, c) && r.uid.as_deref().is_none_or(|u| u.is_empty() || Some(u) == c.metadata.uid.as_deref()) => {
                        if r.uid.as_deref().is_none_or(str::is_empty) {
                            out.push(Action::BindVolume { pv: pv.clone(), claim: reference(c) });
                        }
                        if !claim_bound_fully(c, v) {
                            out.push(bind_claim(c, v));
                        }
                    }
                    Some(_) if claim_phase(c) != "Lost" => out.push(Action::ClaimPhase { ns, name, phase: "Lost" }),
                    Some(_) => {}
                },
            }
            taken.insert(pv);
            continue;
        }
        if c.metadata.deletion_timestamp.is_some() {
            continue;
        }
        // A volume made for (or pre-bound by an admin to) this claim.
        let prebound = volumes.iter().find(|v| {
            v.spec.as_ref().and_then(|s| s.claim_ref.as_ref()).is_some_and(|r| claim_ref_is(r, c) && r.uid.as_deref().is_none_or(|u| u.is_empty() || Some(u) == c.metadata.uid.as_deref()))
                && v.metadata.deletion_timestamp.is_none()
        });
        if let Some(v) = prebound {
            out.push(Action::BindVolume { pv: name_of(v), claim: reference(c) });
            out.push(bind_claim(c, v));
            taken.insert(name_of(v));
            continue;
        }
        let class = classes.iter().find(|s| name_of(*s) == claim_class(c));
        let node = annotation(c, SELECTED_NODE_ANNOTATION);
        if claim_phase(c) != "Pending" {
            out.push(Action::ClaimPhase { ns: ns.clone(), name: name.clone(), phase: "Pending" });
        }
        if waits_for_consumer(class) && node.is_none() {
            out.push(Action::Note { claim: reference(c), reason: "WaitForFirstConsumer", message: "waiting for first consumer to be created before binding".into() });
            continue;
        }
        let mut candidates: Vec<&PersistentVolume> = volumes.iter().filter(|v| !taken.contains(&name_of(*v)) && fits(v, c, node)).collect();
        candidates.sort_by_key(|v| (capacity(v), name_of(*v)));
        match candidates.first() {
            Some(v) => {
                out.push(Action::BindVolume { pv: name_of(*v), claim: reference(c) });
                out.push(bind_claim(c, v));
                taken.insert(name_of(*v));
            }
            None => {
                let provisioner = class.map(|s| s.provisioner.clone()).filter(|p| !p.is_empty() && p != "kubernetes.io/no-provisioner");
                if let Some(p) = provisioner {
                    let message = format!("Waiting for a volume to be created either by the external provisioner '{p}' or manually by the system administrator. If volume creation is delayed, please verify that the provisioner is running and correctly registered.");
                    out.push(Action::Note { claim: reference(c), reason: "ExternalProvisioning", message });
                    if annotation(c, STORAGE_PROVISIONER_ANNOTATION) != Some(p.as_str()) {
                        out.push(Action::AskProvisioner { ns, name, provisioner: p });
                    }
                }
            }
        }
    }
    for v in volumes {
        let pv = name_of(v);
        let want = match v.spec.as_ref().and_then(|s| s.claim_ref.as_ref()) {
            None => "Available",
            Some(r) if r.uid.as_deref().is_none_or(str::is_empty) => "Available",
            Some(r) => match claims.iter().find(|c| claim_ref_is(r, c)) {
                Some(c) if c.metadata.uid == r.uid => "Bound",
                // The claim that held it is gone (or is another one now): reclaim.
                _ => {
                    // A provisioner deletes the volumes it made; the binder the others.
                    let provisioned = annotation(v, schema::storage::PROVISIONED_BY_ANNOTATION).is_some();
                    if !provisioned && v.spec.as_ref().and_then(|s| s.persistent_volume_reclaim_policy.as_deref()) == Some("Delete") {
                        if v.metadata.deletion_timestamp.is_none() {
                            out.push(Action::DeleteVolume { pv: pv.clone() });
                        }
                        continue;
                    }
                    "Released"
                }
            },
        };
        // A bind issued in this pass sets the phase itself.
        let binding = out.iter().any(|a| matches!(a, Action::BindVolume { pv: p, .. } if *p == pv));
        if volume_phase(v) != want && !binding && !(want == "Available" && volume_phase(v) == "Released") {
            out.push(Action::VolumePhase { pv, phase: want });
        }
    }
    out
}

async fn execute(client: &Client, a: Action) {
    let ok = match &a {
        Action::Note { claim, reason, message } => {
            bus::events::record(client, bus::events::event(claim.clone(), "Normal", reason, message, ACTOR));
            true
        }
        Action::BindVolume { pv, claim } => {
            update_with_retry::<PersistentVolume, _>(client, None, pv, |v| {
                let spec = v.spec.get_or_insert_with(Default::default);
                if spec.claim_ref.as_ref().is_some_and(|r| r.name != claim.name || r.namespace != claim.namespace) {
                    return; // someone bound it elsewhere meanwhile
                }
                // A volume the binder chose (not one made or pre-bound for the claim) says so.
                if spec.claim_ref.is_none() {
                    v.metadata.annotations.get_or_insert_with(Default::default).entry(BOUND_BY_CONTROLLER_ANNOTATION.into()).or_insert_with(|| "yes".into());
                }
                spec.claim_ref = Some(claim.clone());
                v.status.get_or_insert_with(Default::default).phase = Some("Bound".into());
            })
            .await
        }
        Action::BindClaim { ns, name, pv, capacity, modes } => {
            update_with_retry::<PersistentVolumeClaim, _>(client, Some(ns), name, |c| {
                let spec = c.spec.get_or_insert_with(Default::default);
                if spec.volume_name.as_deref().is_some_and(|v| !v.is_empty() && v != pv) {
                    return;
                }
                spec.volume_name = Some(pv.clone());
                let ann = c.metadata.annotations.get_or_insert_with(Default::default);
                ann.insert(BIND_COMPLETED_ANNOTATION.into(), "yes".into());
                ann.entry(BOUND_BY_CONTROLLER_ANNOTATION.into()).or_insert_with(|| "yes".into());
                let st = c.status.get_or_insert_with(Default::default);
                st.phase = Some("Bound".into());
                st.capacity = Some(capacity.clone());
                st.access_modes = Some(modes.clone());
            })
            .await
        }
        Action::VolumePhase { pv, phase } => update_with_retry::<PersistentVolume, _>(client, None, pv, |v| v.status.get_or_insert_with(Default::default).phase = Some(phase.to_string())).await,
        Action::ClaimPhase { ns, name, phase } => {
            update_with_retry::<PersistentVolumeClaim, _>(client, Some(ns), name, |c| c.status.get_or_insert_with(Default::default).phase = Some(phase.to_string())).await
        }
        Action::DeleteVolume { pv } => match client.delete::<PersistentVolume>(None, pv, None).await {
            Ok(_) => true,
            Err(e) => e.is_not_found(),
        },
        Action::AskProvisioner { ns, name, provisioner } => {
            update_with_retry::<PersistentVolumeClaim, _>(client, Some(ns), name, |c| {
                c.metadata.annotations.get_or_insert_with(Default::default).insert(STORAGE_PROVISIONER_ANNOTATION.into(), provisioner.clone());
            })
            .await
        }
    };
    if !ok {
        tracing::warn!(action = ?a, "volume binding step did not land; the next pass retries");
    }
}

enum Ev {
    Claim(InformerEvent<PersistentVolumeClaim>),
    Volume(InformerEvent<PersistentVolume>),
    Class(InformerEvent<StorageClass>),
    Tick,
}

/// One object kind's cache, fed by its informer.
pub(crate) fn apply<K: bus::client::Object>(m: &mut BTreeMap<String, K>, ev: InformerEvent<K>) {
    match ev {
        InformerEvent::Listed(items, _) => *m = items.into_iter().map(|o| (super::owned::key_of(&o), o)).collect(),
        InformerEvent::Applied(o, _) => {
            m.insert(super::owned::key_of(&o), o);
        }
        InformerEvent::Deleted(o, _) => {
            m.remove(&super::owned::key_of(&o));
        }
    }
}

pub fn start(client: Client, resync: std::time::Duration, stop: CancellationToken) -> tokio::task::JoinHandle<()> {
    // Made before the task runs, so they join the process's shared informers.
    let ticks = futures::stream::unfold((), move |_| async move {
        tokio::time::sleep(resync).await;
        Some((Ev::Tick, ()))
    });
    let mut events = futures::stream::select_all(vec![
        watch_objects::<PersistentVolumeClaim>(client.clone(), Scope::default()).map(Ev::Claim).boxed(),
        watch_objects::<PersistentVolume>(client.clone(), Scope::default()).map(Ev::Volume).boxed(),
        watch_objects::<StorageClass>(client.clone(), Scope::default()).map(Ev::Class).boxed(),
        ticks.boxed(),
    ]);
    tokio::spawn(async move {
        let (mut claims, mut volumes, mut classes) = (BTreeMap::new(), BTreeMap::new(), BTreeMap::new());
        // (claim uid, reason) of the events already recorded: each is said once.
        let mut said: HashSet<(String, &'static str)> = HashSet::new();
        loop {
            let ev = tokio::select! {
                _ = stop.cancelled() => return,
                Some(e) = events.next() => e,
                else => return,
            };
            let mut batch = vec![ev];
            // A burst of events is one pass.
            while let Some(Some(e)) = futures::FutureExt::now_or_never(events.next()) {
                batch.push(e);
            }
            let actions = bus::metrics::handle(ACTOR, || {
                for e in batch {
                    match e {
                        Ev::Claim(e) => apply(&mut claims, e),
                        Ev::Volume(e) => apply(&mut volumes, e),
                        Ev::Class(e) => apply(&mut classes, e),
                        Ev::Tick => {}
                    }
                }
                let (c, v, s): (Vec<_>, Vec<_>, Vec<_>) = (claims.values().cloned().collect(), volumes.values().cloned().collect(), classes.values().cloned().collect());
                reconcile(&c, &v, &s)
            });
            let live: HashSet<String> = claims.values().filter_map(|c: &PersistentVolumeClaim| c.metadata.uid.clone()).collect();
            said.retain(|(u, _)| live.contains(u));
            for a in actions {
                if let Action::Note { claim, reason, .. } = &a {
                    if !said.insert((claim.uid.clone().unwrap_or_default(), reason)) {
                        continue;
                    }
                }
                execute(&client, a).await;
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claim(name: &str, extra: serde_json::Value) -> PersistentVolumeClaim {
        let mut v = json!({"metadata": {"name": name, "namespace": "default", "uid": format!("{name}-uid")},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}, "storageClassName": "manual"}, "status": {"phase": "Pending"}});
        merge(&mut v, extra);
        serde_json::from_value(v).unwrap()
    }

    fn volume(name: &str, size: &str, extra: serde_json::Value) -> PersistentVolume {
        let mut v = json!({"metadata": {"name": name}, "spec": {"accessModes": ["ReadWriteOnce"], "capacity": {"storage": size}, "storageClassName": "manual",
            "hostPath": {"path": "/d"}, "persistentVolumeReclaimPolicy": "Retain"}, "status": {"phase": "Available"}});
        merge(&mut v, extra);
        serde_json::from_value(v).unwrap()
    }

    fn class(name: &str, mode: &str) -> StorageClass {
        serde_json::from_value(json!({"metadata": {"name": name}, "provisioner": "flotilla.io/local-path", "volumeBindingMode": mode})).unwrap()
    }

    fn merge(a: &mut serde_json::Value, b: serde_json::Value) {
        match (a, b) {
            (serde_json::Value::Object(a), serde_json::Value::Object(b)) => b.into_iter().for_each(|(k, v)| merge(a.entry(k).or_insert(serde_json::Value::Null), v)),
            (a, b) => *a = b,
        }
    }

    #[test]
    fn an_immediate_claim_gets_the_smallest_volume_that_fits() {
        let vols = [volume("big", "10Gi", json!({})), volume("small", "2Gi", json!({})), volume("tiny", "500Mi", json!({})), volume("rwx", "1Gi", json!({"spec": {"accessModes": ["ReadWriteMany"]}}))];
        let a = reconcile(&[claim("data", json!({}))], &vols, &[]);
        assert!(matches!(&a[0], Action::BindVolume { pv, claim } if pv == "small" && claim.uid.as_deref() == Some("data-uid")), "{a:?}");
        assert!(matches!(&a[1], Action::BindClaim { pv, .. } if pv == "small"), "{a:?}");
    }

    #[test]
    fn two_claims_never_share_a_volume_and_selectors_count() {
        let vols = [volume("a", "1Gi", json!({"metadata": {"labels": {"tier": "fast"}}})), volume("b", "1Gi", json!({}))];
        let fast = claim("fast", json!({"spec": {"selector": {"matchLabels": {"tier": "fast"}}}}));
        let a = reconcile(&[claim("one", json!({"metadata": {"creationTimestamp": "2026-01-01T00:00:00Z"}})), fast, claim("three", json!({"metadata": {"creationTimestamp": "2026-01-02T00:00:00Z"}}))], &vols, &[]);
        let binds: Vec<(String, String)> = a.iter().filter_map(|x| if let Action::BindClaim { name, pv, .. } = x { Some((name.clone(), pv.clone())) } else { None }).collect();
        // "fast" sorts first (no creationTimestamp) and takes the labelled one.
        assert_eq!(binds, vec![("fast".into(), "a".into()), ("one".into(), "b".into())]);
    }

    #[test]
    fn wait_for_first_consumer_waits_for_the_selected_node_then_asks_the_provisioner() {
        let classes = [class("local-path", "WaitForFirstConsumer")];
        let c = claim("www-web-0", json!({"spec": {"storageClassName": "local-path"}}));
        let a = reconcile(std::slice::from_ref(&c), &[], &classes);
        assert!(matches!(&a[..], [Action::Note { reason: "WaitForFirstConsumer", .. }]), "{a:?}");
        let picked = claim("www-web-0", json!({"spec": {"storageClassName": "local-path"}, "metadata": {"annotations": {SELECTED_NODE_ANNOTATION: "n2"}}}));
        let a = reconcile(&[picked], &[], &classes);
        assert!(matches!(&a[0], Action::Note { reason: "ExternalProvisioning", message, .. } if message.contains("'flotilla.io/local-path'")), "{a:?}");
        assert_eq!(a[1], Action::AskProvisioner { ns: "default".into(), name: "www-web-0".into(), provisioner: "flotilla.io/local-path".into() });
    }

    #[test]
    fn a_local_volume_on_another_node_does_not_fit_a_selected_node() {
        let classes = [class("manual", "WaitForFirstConsumer")];
        let on = |n: &str| json!({"spec": {"nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": [n]}]}]}}}});
        let vols = [volume("on-n1", "1Gi", on("n1")), volume("on-n2", "1Gi", on("n2"))];
        let c = claim("c", json!({"metadata": {"annotations": {SELECTED_NODE_ANNOTATION: "n2"}}}));
        let a = reconcile(&[c], &vols, &classes);
        assert!(matches!(&a[0], Action::BindVolume { pv, .. } if pv == "on-n2"), "{a:?}");
    }

    #[test]
    fn a_provisioned_volume_completes_the_binding_on_both_sides() {
        let c = claim("c", json!({}));
        let v = volume("pvc-c-uid", "1Gi", json!({"spec": {"claimRef": {"namespace": "default", "name": "c", "uid": "c-uid"}}, "status": {"phase": "Pending"}}));
        let a = reconcile(&[c], &[v], &[]);
        assert!(matches!(&a[0], Action::BindVolume { pv, .. } if pv == "pvc-c-uid"));
        assert!(matches!(&a[1], Action::BindClaim { pv, .. } if pv == "pvc-c-uid"));
        assert_eq!(a.len(), 2, "{a:?}");
    }

    #[test]
    fn a_bound_pair_is_left_alone_and_reclaim_follows_the_policy() {
        let v = volume("v", "1Gi", json!({"spec": {"claimRef": {"namespace": "default", "name": "c", "uid": "c-uid"}}, "status": {"phase": "Bound"}}));
        let mut c = claim("c", json!({"spec": {"volumeName": "v"}, "metadata": {"annotations": {BIND_COMPLETED_ANNOTATION: "yes"}}, "status": {"phase": "Bound", "capacity": {"storage": "1Gi"}}}));
        assert!(reconcile(std::slice::from_ref(&c), std::slice::from_ref(&v), &[]).is_empty());
        // The claim is gone: Retain keeps the volume Released, Delete removes it.
        assert_eq!(reconcile(&[], std::slice::from_ref(&v), &[]), vec![Action::VolumePhase { pv: "v".into(), phase: "Released" }]);
        let del = volume("v", "1Gi", json!({"spec": {"claimRef": {"namespace": "default", "name": "c", "uid": "c-uid"}, "persistentVolumeReclaimPolicy": "Delete"}}));
        assert_eq!(reconcile(&[], &[del], &[]), vec![Action::DeleteVolume { pv: "v".into() }]);
        // A new claim of the same name is not the one the volume held.
        c.metadata.uid = Some("other".into());
        c.spec.as_mut().unwrap().volume_name = None;
        let a = reconcile(&[c], &[v], &[]);
        assert!(a.contains(&Action::VolumePhase { pv: "v".into(), phase: "Released" }), "{a:?}");
        assert!(!a.iter().any(|x| matches!(x, Action::BindClaim { .. })), "{a:?}");
    }

    #[test]
    fn a_claim_whose_volume_vanished_is_lost() {
        let c = claim("c", json!({"spec": {"volumeName": "gone"}, "status": {"phase": "Bound"}}));
        assert_eq!(reconcile(&[c], &[], &[]), vec![Action::ClaimPhase { ns: "default".into(), name: "c".into(), phase: "Lost" }]);
    }
}
