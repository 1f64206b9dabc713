//! The ServiceAccount controller: every live namespace has a `default` ServiceAccount.
//! The namespace create path makes it at once; this puts it back when it is deleted and
//! makes it for namespaces that existed before, as the real controller does.

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
    tokio::spawn(async move {
        let namespaces = watch_objects::<Namespace>(client.clone(), Scope::default()).map(|e| match e {
            InformerEvent::Listed(items, _) => items.into_iter().filter_map(|n| n.metadata.name).collect(),
            InformerEvent::Applied(n, _) => n.metadata.name.into_iter().collect(),
            InformerEvent::Deleted(..) => Vec::new(),
        });
        let accounts = watch_objects::<ServiceAccount>(client.clone(), Scope::default()).map(|e| match e {
            InformerEvent::Deleted(sa, _) if sa.metadata.name.as_deref() == Some("default") => sa.metadata.namespace.into_iter().collect(),
            _ => Vec::new(),
        });
        let mut events = futures::stream::select(namespaces.boxed(), accounts.boxed());
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
                        if let Err(e) = ensure_default_service_account(&client.bus, &ns).await {
                            tracing::warn!(namespace = %ns, error = %e, "serviceaccount controller: creating the default account failed");
                        }
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(namespace = %ns, error = %e, "serviceaccount controller: reading the namespace failed"),
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
