//! The local-path provisioner (k3s' local-path-provisioner): a `flotilla.io/local-path`
//! claim on the scheduler's chosen node gets a hostPath volume `pvc-<uid>` pinned there,
//! at `<node data dir>/volumes/pvc-<uid>`; the node agent, which owns the disk, makes and
//! removes that directory. Reclaim Delete removes the volume object here.

use super::volumebinding::{apply, claim_class};
use bus::informer::{watch_objects, InformerEvent, Scope};
use bus::Client;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{
    HostPathVolumeSource, Node, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, ObjectReference, PersistentVolume, PersistentVolumeClaim, PersistentVolumeSpec,
    VolumeNodeAffinity,
};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use schema::storage::{local_volume_dir, LOCAL_PATH_PROVISIONER, NODE_DATA_DIR_ANNOTATION, PROVISIONED_BY_ANNOTATION, SELECTED_NODE_ANNOTATION, STORAGE_PROVISIONER_ANNOTATION};
use std::collections::BTreeMap;
use tokio_util::sync::CancellationToken;

const ACTOR: &str = "local-path-provisioner";

#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Provision(Box<PersistentVolume>),
    /// A Released volume of ours whose reclaim policy is Delete.
    Delete(String),
    /// The selected node has not said where its data lives (an agent too old, or gone).
    Wait { claim: ObjectReference, why: String },
}

impl Action {
    /// What the action is about, to do it once per resync period.
    fn key(&self) -> String {
        match self {
            Action::Provision(pv) => format!("provision {}", pv.metadata.name.as_deref().unwrap_or("")),
            Action::Delete(n) => format!("delete {n}"),
            Action::Wait { claim, why } => format!("wait {} {why}", claim.uid.as_deref().unwrap_or("")),
        }
    }
}

fn annotation<'a>(m: &'a ObjectMeta, k: &str) -> Option<&'a str> {
    m.annotations.as_ref().and_then(|a| a.get(k)).map(String::as_str)
}

pub fn volume_name(c: &PersistentVolumeClaim) -> String {
    format!("pvc-{}", c.metadata.uid.as_deref().unwrap_or(""))
}

fn volume_for(c: &PersistentVolumeClaim, class: &StorageClass, node: &str, data_dir: &str) -> PersistentVolume {
    let name = volume_name(c);
    let spec = c.spec.clone().unwrap_or_default();
    let size = spec.resources.and_then(|r| r.requests).and_then(|r| r.get("storage").cloned());
    PersistentVolume {
        metadata: ObjectMeta { name: Some(name.clone()), annotations: Some(BTreeMap::from([(PROVISIONED_BY_ANNOTATION.to_string(), LOCAL_PATH_PROVISIONER.to_string())])), ..Default::default() },
        spec: Some(PersistentVolumeSpec {
            capacity: size.map(|q| BTreeMap::from([("storage".to_string(), q)])),
            access_modes: spec.access_modes,
            claim_ref: Some(ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("PersistentVolumeClaim".into()),
                namespace: c.metadata.namespace.clone(),
                name: c.metadata.name.clone(),
                uid: c.metadata.uid.clone(),
                resource_version: c.metadata.resource_version.clone(),
                ..Default::default()
            }),
            storage_class_name: Some(claim_class(c).to_string()),
            persistent_volume_reclaim_policy: Some(class.reclaim_policy.clone().unwrap_or_else(|| "Delete".into())),
            volume_mode: Some("Filesystem".into()),
            host_path: Some(HostPathVolumeSource { path: local_volume_dir(data_dir, &name), type_: Some("DirectoryOrCreate".into()) }),
            node_affinity: Some(VolumeNodeAffinity {
                required: Some(NodeSelector {
                    node_selector_terms: vec![NodeSelectorTerm {
                        match_expressions: Some(vec![NodeSelectorRequirement { key: "kubernetes.io/hostname".into(), operator: "In".into(), values: Some(vec![node.to_string()]) }]),
                        match_fields: None,
                    }],
                }),
            }),
            ..Default::default()
        }),
        status: None,
    }
}

/// `nodes` maps each node to its data directory (from its annotation).
pub fn reconcile(claims: &[PersistentVolumeClaim], volumes: &[PersistentVolume], classes: &[StorageClass], nodes: &BTreeMap<String, Option<String>>) -> Vec<Action> {
    let mut out = Vec::new();
    for c in claims {
        let unbound = c.spec.as_ref().and_then(|s| s.volume_name.as_deref()).is_none_or(str::is_empty);
        // The binder names the provisioner only when no existing volume fits.
        let asked = annotation(&c.metadata, STORAGE_PROVISIONER_ANNOTATION) == Some(LOCAL_PATH_PROVISIONER);
        if !unbound || !asked || c.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let Some(class) = classes.iter().find(|s| s.metadata.name.as_deref() == Some(claim_class(c))).filter(|s| s.provisioner == LOCAL_PATH_PROVISIONER) else { continue };
        let Some(node) = annotation(&c.metadata, SELECTED_NODE_ANNOTATION) else { continue };
        let name = volume_name(c);
        if volumes.iter().any(|v| v.metadata.name.as_deref() == Some(name.as_str())) {
            continue;
        }
        let reference = bus::events::reference(c);
        match nodes.get(node) {
            Some(Some(dir)) => out.push(Action::Provision(Box::new(volume_for(c, class, node, dir)))),
            Some(None) => out.push(Action::Wait { claim: reference, why: format!("node {node} does not say where its data directory is ({NODE_DATA_DIR_ANNOTATION})") }),
            None => out.push(Action::Wait { claim: reference, why: format!("node {node} not found") }),
        }
    }
    for v in volumes {
        let ours = annotation(&v.metadata, PROVISIONED_BY_ANNOTATION) == Some(LOCAL_PATH_PROVISIONER);
        let released = v.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Released");
        let delete = v.spec.as_ref().and_then(|s| s.persistent_volume_reclaim_policy.as_deref()) == Some("Delete");
        if ours && released && delete && v.metadata.deletion_timestamp.is_none() {
            out.push(Action::Delete(v.metadata.name.clone().unwrap_or_default()));
        }
    }
    out
}

async fn execute(client: &Client, a: Action) {
    match a {
        Action::Provision(pv) => {
            let name = pv.metadata.name.clone().unwrap_or_default();
            let claim = pv.spec.as_ref().and_then(|s| s.claim_ref.clone()).unwrap_or_default();
            match client.create(&*pv).await {
                Ok(_) => {
                    let msg = format!("Successfully provisioned volume {name}");
                    bus::events::record(client, bus::events::event(claim, "Normal", "ProvisioningSucceeded", &msg, LOCAL_PATH_PROVISIONER));
                }
                Err(e) if e.is_already_exists() => {}
                Err(e) => {
                    tracing::warn!(pv = %name, error = %e, "provisioning failed");
                    bus::events::record(client, bus::events::event(claim, "Warning", "ProvisioningFailed", &format!("failed to provision volume: {e}"), LOCAL_PATH_PROVISIONER));
                }
            }
        }
        Action::Delete(name) => match client.delete::<PersistentVolume>(None, &name, None).await {
            Ok(_) => tracing::info!(pv = %name, "deleted a released local-path volume"),
            Err(e) if e.is_not_found() => {}
            Err(e) => tracing::warn!(pv = %name, error = %e, "deleting a released volume failed"),
        },
        Action::Wait { claim, why } => {
            bus::events::record(client, bus::events::event(claim, "Warning", "ProvisioningFailed", &why, LOCAL_PATH_PROVISIONER));
        }
    }
}

enum Ev {
    Claim(InformerEvent<PersistentVolumeClaim>),
    Volume(InformerEvent<PersistentVolume>),
    Class(InformerEvent<StorageClass>),
    Node(InformerEvent<Node>),
    Tick,
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
        watch_objects::<Node>(client.clone(), Scope::default()).map(Ev::Node).boxed(),
        ticks.boxed(),
    ]);
    tokio::spawn(async move {
        let (mut claims, mut volumes, mut classes, mut nodes) = (BTreeMap::new(), BTreeMap::new(), BTreeMap::new(), BTreeMap::<String, Node>::new());
        // What a pass already did, so a lagging cache does not make it twice (or shout twice).
        let mut done: std::collections::HashSet<String> = Default::default();
        loop {
            let ev = tokio::select! {
                _ = stop.cancelled() => return,
                Some(e) = events.next() => e,
                else => return,
            };
            // A tick only matters when something was tried since the last one (a failed
            // provisioning to retry); an idle cluster's provisioner does nothing.
            if matches!(ev, Ev::Tick) && done.is_empty() {
                continue;
            }
            let mut batch = vec![ev];
            while let Some(Some(e)) = futures::FutureExt::now_or_never(events.next()) {
                batch.push(e);
            }
            let mut tick = false;
            let actions = bus::metrics::handle(ACTOR, || {
                for e in batch {
                    match e {
                        Ev::Claim(e) => apply(&mut claims, e),
                        Ev::Volume(e) => apply(&mut volumes, e),
                        Ev::Class(e) => apply(&mut classes, e),
                        Ev::Node(e) => apply(&mut nodes, e),
                        Ev::Tick => tick = true,
                    }
                }
                let dirs: BTreeMap<String, Option<String>> =
                    nodes.values().map(|n| (n.metadata.name.clone().unwrap_or_default(), annotation(&n.metadata, NODE_DATA_DIR_ANNOTATION).map(str::to_string))).collect();
                let (c, v, s): (Vec<_>, Vec<_>, Vec<_>) = (claims.values().cloned().collect(), volumes.values().cloned().collect(), classes.values().cloned().collect());
                reconcile(&c, &v, &s, &dirs)
            });
            if tick {
                done.clear();
            }
            for a in actions {
                if done.insert(a.key()) {
                    execute(&client, a).await;
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claim(annotations: serde_json::Value) -> PersistentVolumeClaim {
        serde_json::from_value(json!({"metadata": {"name": "www-web-0", "namespace": "default", "uid": "u1", "annotations": annotations},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}, "storageClassName": "local-path"}})).unwrap()
    }

    fn class() -> StorageClass {
        serde_json::from_value(json!({"metadata": {"name": "local-path"}, "provisioner": LOCAL_PATH_PROVISIONER, "reclaimPolicy": "Delete", "volumeBindingMode": "WaitForFirstConsumer"})).unwrap()
    }

    fn nodes() -> BTreeMap<String, Option<String>> {
        BTreeMap::from([("n1".to_string(), Some("/data/n1".to_string())), ("old".to_string(), None)])
    }

    #[test]
    fn a_claim_on_a_selected_node_gets_a_volume_there() {
        let c = claim(json!({SELECTED_NODE_ANNOTATION: "n1", STORAGE_PROVISIONER_ANNOTATION: LOCAL_PATH_PROVISIONER}));
        let a = reconcile(std::slice::from_ref(&c), &[], &[class()], &nodes());
        let [Action::Provision(pv)] = a.as_slice() else { panic!("{a:?}") };
        let spec = pv.spec.clone().unwrap();
        assert_eq!(pv.metadata.name.as_deref(), Some("pvc-u1"));
        assert_eq!(spec.host_path.unwrap().path, "/data/n1/volumes/pvc-u1");
        assert_eq!(spec.claim_ref.unwrap().uid.as_deref(), Some("u1"));
        assert_eq!(spec.capacity.unwrap()["storage"].0, "1Gi");
        assert!(super::super::volumebinding::volume_allows_node(pv, "n1") && !super::super::volumebinding::volume_allows_node(pv, "n2"));
        // Made already: nothing more.
        assert!(reconcile(&[c], &[(**pv).clone()], &[class()], &nodes()).is_empty());
    }

    #[test]
    fn nothing_before_the_binder_asks_and_the_scheduler_picks() {
        assert!(reconcile(&[claim(json!({SELECTED_NODE_ANNOTATION: "n1"}))], &[], &[class()], &nodes()).is_empty());
        assert!(reconcile(&[claim(json!({STORAGE_PROVISIONER_ANNOTATION: LOCAL_PATH_PROVISIONER}))], &[], &[class()], &nodes()).is_empty());
        let a = reconcile(&[claim(json!({SELECTED_NODE_ANNOTATION: "old", STORAGE_PROVISIONER_ANNOTATION: LOCAL_PATH_PROVISIONER}))], &[], &[class()], &nodes());
        assert!(matches!(&a[..], [Action::Wait { why, .. }] if why.contains("data directory")), "{a:?}");
    }

    #[test]
    fn released_volumes_of_ours_with_delete_go() {
        let c = claim(json!({SELECTED_NODE_ANNOTATION: "n1", STORAGE_PROVISIONER_ANNOTATION: LOCAL_PATH_PROVISIONER}));
        let mut pv = volume_for(&c, &class(), "n1", "/d");
        pv.status = Some(k8s_openapi::api::core::v1::PersistentVolumeStatus { phase: Some("Released".into()), ..Default::default() });
        assert_eq!(reconcile(&[], std::slice::from_ref(&pv), &[class()], &nodes()), vec![Action::Delete("pvc-u1".into())]);
        pv.spec.as_mut().unwrap().persistent_volume_reclaim_policy = Some("Retain".into());
        assert!(reconcile(&[], &[pv], &[class()], &nodes()).is_empty());
    }
}
