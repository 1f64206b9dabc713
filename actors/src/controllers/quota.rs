//! The resource quota controller: keeps each ResourceQuota's `status.used` equal to what
//! its namespace's objects use, so deletions give quota back and `kubectl describe quota`
//! tells the truth. Admission charges quotas as objects are created; this recomputes
//! from the objects themselves whenever something counted changes, and on a resync.

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

/// The namespaces an informer event touches.
fn namespaces<K: bus::client::Object>(c: &Client) -> Namespaces {
    let ns = |k: &K| k.metadata().namespace.clone().unwrap_or_default();
    watch_objects::<K>(c.clone(), Scope::default())
        .map(move |e| match e {
            InformerEvent::Listed(items, _) => items.iter().map(ns).collect(),
            InformerEvent::Applied(k, _) | InformerEvent::Deleted(k, _) => vec![ns(&k)],
        })
        .boxed()
}

pub fn start(client: Client, stop: CancellationToken) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut events = futures::stream::select_all(vec![
            namespaces::<ResourceQuota>(&client),
            namespaces::<Pod>(&client),
            namespaces::<Service>(&client),
            namespaces::<ConfigMap>(&client),
            namespaces::<Secret>(&client),
        ]);
        let mut resync = tokio::time::interval(super::RESYNC);
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
