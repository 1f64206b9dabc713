//! The resource quota controller: keeps each ResourceQuota's `status.used` equal to what
//! its namespace's objects use, so deletions give quota back and `kubectl describe quota`
//! tells the truth. Admission charges quotas as objects are created; this recomputes
//! from the objects themselves when something counted goes away, when a quota is new or
//! changed, and on a resync.

use bus::admission::{list_values, namespace_usage};
use bus::informer::{watch_objects, InformerEvent, Scope};
use bus::Client;
use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Pod, ResourceQuota, Secret, Service};
use schema::admission::{self, Writer};
use schema::plugins::resource_quota;
use schema::store::WriteOp;
use schema::{object, registry};
use std::collections::BTreeSet;
use std::pin::Pin;
use tokio_util::sync::CancellationToken;

type Namespaces = Pin<Box<dyn Stream<Item = Vec<String>> + Send>>;

/// The namespaces whose usage an informer event may have lowered (or whose quota is new
/// or changed), by `relevant(object, deleted)`. Creates are not among them: admission
/// charged those already, and recomputing between a charge and the object's write
/// would undercount, as the real controller's replenishment avoids too.
fn namespaces<K: bus::client::Object>(c: &Client, relevant: fn(&K, bool) -> bool) -> Namespaces {
    let ns = |k: &K| k.metadata().namespace.clone().unwrap_or_default();
    watch_objects::<K>(c.clone(), Scope::default())
        .map(move |e| match e {
            InformerEvent::Listed(items, _) => items.iter().map(ns).collect(),
            InformerEvent::Applied(k, _) if relevant(&k, false) => vec![ns(&k)],
            InformerEvent::Deleted(k, _) if relevant(&k, true) => vec![ns(&k)],
            _ => Vec::new(),
        })
        .boxed()
}

fn deleted<K>(_: &K, deleted: bool) -> bool {
    deleted
}

/// A pod that finished no longer holds its resources.
fn pod_released(p: &Pod, deleted: bool) -> bool {
    deleted || p.status.as_ref().and_then(|s| s.phase.as_deref()).is_some_and(|ph| ph == "Succeeded" || ph == "Failed")
}

/// A quota whose status does not yet mirror its spec (new, or its hard limits changed).
fn quota_unsynced(q: &ResourceQuota, deleted: bool) -> bool {
    !deleted && q.spec.as_ref().and_then(|s| s.hard.as_ref()) != q.status.as_ref().and_then(|s| s.hard.as_ref())
}

pub fn start(client: Client, resync_every: std::time::Duration, stop: CancellationToken) -> tokio::task::JoinHandle<()> {
    // Made before the task runs, so they join the process's shared informers.
    let mut events = futures::stream::select_all(vec![
        namespaces::<ResourceQuota>(&client, quota_unsynced),
        namespaces::<Pod>(&client, pod_released),
        namespaces::<Service>(&client, deleted),
        namespaces::<ConfigMap>(&client, deleted),
        namespaces::<Secret>(&client, deleted),
    ]);
    tokio::spawn(async move {
        let mut resync = tokio::time::interval(resync_every);
        loop {
            let mut dirty: BTreeSet<String> = BTreeSet::new();
            tokio::select! {
                _ = stop.cancelled() => return,
                Some(ns) = events.next() => dirty.extend(ns),
                _ = resync.tick() => {
                    let quotas = registry::by_plural("", "v1", "resourcequotas").expect("registered");
                    if let Ok(all) = list_values(&client.bus, quotas, None).await {
                        dirty.extend(all.iter().filter_map(|(q, _)| object::namespace(q).map(str::to_string)));
                    }
                }
            }
            // Whatever else is already waiting joins this pass.
            while let Some(Some(ns)) = futures::FutureExt::now_or_never(events.next()) {
                dirty.extend(ns);
            }
            for ns in dirty {
                if let Err(e) = sync(&client, &ns).await {
                    tracing::warn!(namespace = %ns, error = %e, "quota controller: recomputing usage failed");
                }
            }
        }
    })
}

/// Recomputes every quota of `ns`; a quota changed meanwhile is left for its own event.
async fn sync(client: &Client, ns: &str) -> Result<(), bus::client::ClientError> {
    let res = registry::by_plural("", "v1", "resourcequotas").expect("registered");
    for (quota, rev) in list_values(&client.bus, res, Some(ns)).await? {
        let used = namespace_usage(&client.bus, &quota, ns).await?;
        let status = resource_quota::status(&quota, &used);
        if quota.get("status") == Some(&status) {
            continue;
        }
        let mut next = quota.clone();
        next["status"] = status;
        admission::admit_update_as(res, &mut next, &quota, Writer::Actor)?;
        let other = |e: object::ObjectError| bus::client::ClientError::Other(e.to_string());
        let op = WriteOp::Update { key: object::key_of(res, &next).map_err(other)?, subject: object::subject_of(res, &next).map_err(other)?, value: object::to_store_bytes(&next).map_err(other)?, expected_rev: Some(rev) };
        match client.bus.write(&op).await {
            Ok(_) => {}
            Err(e) => {
                let e = bus::client::ClientError::from(e);
                if !e.is_conflict() && !e.is_not_found() {
                    return Err(e);
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodStatus, ResourceQuotaSpec, ResourceQuotaStatus};
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

    #[test]
    fn only_releases_and_new_quotas_trigger_a_recount() {
        let running = Pod { status: Some(PodStatus { phase: Some("Running".into()), ..Default::default() }), ..Default::default() };
        let done = Pod { status: Some(PodStatus { phase: Some("Succeeded".into()), ..Default::default() }), ..Default::default() };
        assert!(!pod_released(&running, false) && pod_released(&running, true) && pod_released(&done, false));
        let hard = Some([("pods".to_string(), Quantity("1".into()))].into_iter().collect());
        let new = ResourceQuota { spec: Some(ResourceQuotaSpec { hard: hard.clone(), ..Default::default() }), ..Default::default() };
        let synced = ResourceQuota { status: Some(ResourceQuotaStatus { hard, used: None }), ..new.clone() };
        assert!(quota_unsynced(&new, false) && !quota_unsynced(&synced, false) && !quota_unsynced(&new, true));
        assert!(deleted(&(), true) && !deleted(&(), false));
    }
}
