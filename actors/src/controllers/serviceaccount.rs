//! The ServiceAccount controller: every live namespace has a `default` ServiceAccount.
//! The namespace create path makes it at once; this puts it back when it is deleted and
//! makes it for namespaces that existed before, as the real controller does.
//! `keep_in_every_namespace` is the loop it shares with the root CA publisher.

use bus::admission::ensure_default_service_account;
use bus::informer::{watch_objects, InformerEvent, Scope};
use bus::Client;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use tokio_util::sync::CancellationToken;

/// Whether `ns` should have its default account now: it exists and is not going away.
pub fn wants_default(ns: Option<&Namespace>) -> bool {
    ns.is_some_and(|n| n.metadata.deletion_timestamp.is_none())
}

pub fn start(client: Client, stop: CancellationToken) -> tokio::task::JoinHandle<()> {
    keep_in_every_namespace::<ServiceAccount, _, _>(
        client,
        stop,
        "serviceaccount controller",
        |sa| sa.metadata.name.as_deref() == Some("default"),
        |client, ns| async move { ensure_default_service_account(&client.bus, &ns).await.map_err(|e| e.to_string()) },
    )
}

/// Keeps one object of kind `K` in every live namespace: `ensure` runs for each namespace
/// listed or changed, and for the namespace of a deleted or changed object that `ours`
/// picks. The controllers that publish per-namespace objects share this.
pub fn keep_in_every_namespace<K, F, Fut>(client: Client, stop: CancellationToken, who: &'static str, ours: fn(&K) -> bool, ensure: F) -> tokio::task::JoinHandle<()>
where
    K: bus::client::Object + k8s_openapi::Metadata<Ty = k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta> + Send + 'static,
    F: Fn(Client, String) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<(), String>> + Send,
{
    // Made before the task runs, so they join the process's shared informers.
    let namespaces = watch_objects::<Namespace>(client.clone(), Scope::default()).map(|e| match e {
        InformerEvent::Listed(items, _) => items.into_iter().filter_map(|n| n.metadata.name).collect(),
        InformerEvent::Applied(n, _) => n.metadata.name.into_iter().collect(),
        InformerEvent::Deleted(..) => Vec::new(),
    });
    let owned = watch_objects::<K>(client.clone(), Scope::default()).map(move |e| match e {
        InformerEvent::Deleted(o, _) | InformerEvent::Applied(o, _) if ours(&o) => o.metadata().namespace.clone().into_iter().collect(),
        _ => Vec::new(),
    });
    let mut events = futures::stream::select(namespaces.boxed(), owned.boxed());
    tokio::spawn(async move {
        loop {
            let names: Vec<String> = tokio::select! {
                _ = stop.cancelled() => return,
                Some(n) = events.next() => n,
                else => return,
            };
            for ns in names {
                // Re-read: the event may be old, and a terminating namespace gets nothing new.
                match client.get::<Namespace>(None, &ns).await {
                    Ok(n) if wants_default(n.as_ref()) => {
                        if let Err(e) = ensure(client.clone(), ns.clone()).await {
                            tracing::warn!(namespace = %ns, error = %e, "{who}: ensuring its object failed");
                        }
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(namespace = %ns, error = %e, "{who}: reading the namespace failed"),
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    #[test]
    fn only_live_namespaces() {
        let live = Namespace { metadata: ObjectMeta { name: Some("a".into()), ..Default::default() }, ..Default::default() };
        let mut going = live.clone();
        going.metadata.deletion_timestamp = Some(schema::object::now());
        assert!(wants_default(Some(&live)));
        assert!(!wants_default(Some(&going)));
        assert!(!wants_default(None));
    }
}
