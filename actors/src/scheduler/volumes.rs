//! The scheduler's side of volume binding that is not a pure plugin: its caches of
//! claims, volumes and classes (fed by informers; a change may let a waiting pod fit),
//! and PreBind: telling a pod's unbound WaitForFirstConsumer claims the node it got.

use super::{Scheduler, ACTOR};
use crate::controllers::update_with_retry;
use actix::prelude::*;
use bus::client::Object;
use bus::informer::InformerEvent;
use bus::Client;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::api::storage::v1::StorageClass;
use schema::storage::SELECTED_NODE_ANNOTATION;
use std::collections::HashMap;
use tokio::time::Instant;

fn key<K: Object>(o: &K) -> String {
    let m = o.metadata();
    match &m.namespace {
        Some(ns) => format!("{ns}/{}", m.name.as_deref().unwrap_or("")),
        None => m.name.clone().unwrap_or_default(),
    }
}

fn apply<K: Object>(m: &mut HashMap<String, K>, ev: InformerEvent<K>) {
    match ev {
        InformerEvent::Listed(items, _) => *m = items.into_iter().map(|o| (key(&o), o)).collect(),
        InformerEvent::Applied(o, _) => {
            m.insert(key(&o), o);
        }
        InformerEvent::Deleted(o, _) => {
            m.remove(&key(&o));
        }
    }
}

/// Sets the chosen node on the pod's claims that wait for it, before the pod is bound
/// (kube's VolumeBinding PreBind), so the provisioner can start while the pod starts.
pub async fn pre_bind(client: &Client, pod: &Pod, node: &str, claims: &[String]) {
    let ns = pod.metadata.namespace.as_deref();
    for name in claims {
        let ok = update_with_retry::<PersistentVolumeClaim, _>(client, ns, name, |c| {
            let unbound = c.spec.as_ref().and_then(|s| s.volume_name.as_deref()).is_none_or(str::is_empty);
            if unbound {
                c.metadata.annotations.get_or_insert_with(Default::default).entry(SELECTED_NODE_ANNOTATION.into()).or_insert_with(|| node.to_string());
            }
        })
        .await;
        if !ok {
            tracing::warn!(claim = %name, node, "could not record the selected node on a claim");
        }
    }
}

macro_rules! volume_informer {
    ($kind:ty, $field:ident) => {
        impl StreamHandler<InformerEvent<$kind>> for Scheduler {
            fn handle(&mut self, ev: InformerEvent<$kind>, ctx: &mut Context<Self>) {
                bus::metrics::handle(ACTOR, || {
                    apply(&mut self.volumes.$field, ev);
                    // A claim made or bound, a volume or class added: waiting pods may fit.
                    self.queue.move_unschedulable(Instant::now());
                    self.kick(ctx);
                })
            }
            fn finished(&mut self, _: &mut Context<Self>) {}
        }
    };
}

volume_informer!(PersistentVolumeClaim, claims);
volume_informer!(PersistentVolume, volumes);
volume_informer!(StorageClass, classes);
