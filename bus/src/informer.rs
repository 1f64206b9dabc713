//! The informer: list, then watch from the list's revision; when the watch fails or its
//! revision has expired, re-list and start again. Consumers get a full `Listed` snapshot
//! after every (re)list, then one `Applied`/`Deleted` per change, in revision order.

use crate::client::{info, Client, Object};
use crate::BusError;
use futures::{Stream, StreamExt};
use schema::store::{EventType, Revision};
use schema::subjects::{self, EventFilter, NodeFilter};
use schema::{codec, object};
use std::time::Duration;

#[derive(Debug, Clone)]
pub enum InformerEvent<K> {
    /// Everything that exists now; replaces whatever the consumer knew.
    Listed(Vec<K>, Revision),
    Applied(K, Revision),
    Deleted(K, Revision),
}

/// What to watch: a namespace (None = all) and, for pods, a node filter.
#[derive(Debug, Clone, Default)]
pub struct Scope {
    pub namespace: Option<String>,
    pub node: Option<String>,
    pub unscheduled_only: bool,
}

impl Scope {
    fn node_filter(&self) -> NodeFilter<'_> {
        match (&self.node, self.unscheduled_only) {
            (Some(n), _) => NodeFilter::Node(n),
            (None, true) => NodeFilter::Unscheduled,
            _ => NodeFilter::Any,
        }
    }

    fn admits(&self, v: &serde_json::Value) -> bool {
        let node = object::node_name(v);
        match self.node_filter() {
            NodeFilter::Any => true,
            NodeFilter::Unscheduled => node.is_none(),
            NodeFilter::Node(n) => node == Some(n),
        }
    }
}

/// An endless stream of informer events for K within `scope`.
pub fn watch_objects<K: Object>(client: Client, scope: Scope) -> impl Stream<Item = InformerEvent<K>> + Send + 'static {
    let (tx, rx) = futures::channel::mpsc::channel::<InformerEvent<K>>(1024);
    tokio::spawn(run::<K>(client, scope, tx));
    rx
}

async fn run<K: Object>(client: Client, scope: Scope, mut tx: futures::channel::mpsc::Sender<InformerEvent<K>>) {
    use futures::SinkExt;
    let plural = match info::<K>() {
        Ok(r) => r.plural,
        Err(e) => {
            tracing::error!(error = %e, "informer for an unregistered kind");
            return;
        }
    };
    let filter = subjects::event_filter(
        plural,
        &EventFilter { namespace: scope.namespace.as_deref(), node: scope.node_filter(), name: None },
    );
    let mut backoff = Duration::from_millis(100);
    loop {
        let (items, rev) = match client.list::<K>(scope.namespace.as_deref()).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(kind = K::KIND, error = %e, "informer list failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        let items = items
            .into_iter()
            .filter(|o| object::to_value(o).map(|v| scope.admits(&v)).unwrap_or(false))
            .collect();
        if tx.send(InformerEvent::Listed(items, rev)).await.is_err() {
            return;
        }
        let mut events = match client.bus.watch(filter.clone(), rev).await {
            Ok(s) => Box::pin(s),
            Err(e) => {
                tracing::warn!(kind = K::KIND, error = %e, "informer watch failed; re-listing");
                tokio::time::sleep(backoff).await;
                continue;
            }
        };
        backoff = Duration::from_millis(100);
        let mut last = rev;
        while let Some(ev) = events.next().await {
            let ev = match ev {
                Ok(ev) => ev,
                Err(BusError::Expired(_)) => break,
                Err(e) => {
                    tracing::warn!(kind = K::KIND, error = %e, "informer watch error; re-listing");
                    break;
                }
            };
            if ev.rev <= last {
                continue; // already covered by the list (or a duplicate): never deliver twice
            }
            last = ev.rev;
            let decoded = codec::decode::<serde_json::Value>(&ev.value).ok().and_then(|mut v| {
                object::set_meta(&mut v, "resourceVersion", serde_json::Value::String(ev.rev.to_string()));
                object::from_value::<K>(v).ok()
            });
            let Some(obj) = decoded else {
                tracing::warn!(kind = K::KIND, rev = ev.rev, "undecodable event skipped");
                continue;
            };
            let out = match ev.typ {
                EventType::Deleted => InformerEvent::Deleted(obj, ev.rev),
                EventType::Added | EventType::Modified => InformerEvent::Applied(obj, ev.rev),
            };
            if tx.send(out).await.is_err() {
                return;
            }
        }
    }
}
