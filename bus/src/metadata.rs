//! A metadata informer over every stored resource at once (client-go's metadata informers,
//! which kube's garbage collector runs for every resource): the identity and ownership of
//! each object, not its contents. Changes that touch neither (a status write, a Lease
//! renewal) are dropped here, so a subscriber wakes only when the ownership graph moves.

use crate::client::Client;
use crate::informer::InformerEvent;
use crate::BusError;
use futures::{Stream, StreamExt};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use schema::store::{EventType, ReadOp, ReadResult, Revision};
use schema::{codec, keys, registry, subjects};
use std::collections::HashMap;
use std::time::Duration;

/// What the ownership graph needs of one object.
#[derive(Debug, Clone, PartialEq)]
pub struct Meta {
    pub api_version: String,
    pub kind: &'static str,
    pub plural: &'static str,
    pub namespace: Option<String>,
    pub name: String,
    pub uid: String,
    pub owners: Vec<OwnerReference>,
    pub deleting: bool,
    pub finalizers: Vec<String>,
    /// The revision it was read or changed at.
    pub rev: Revision,
}

impl Meta {
    /// From a stored object's key and value.
    pub fn of(key: &str, v: &serde_json::Value, rev: Revision) -> Option<Meta> {
        let (plural, ns, name) = keys::split(key)?;
        let info = registry::RESOURCES.iter().find(|r| r.plural == plural)?;
        let m = v.get("metadata")?;
        let api_version = if info.group.is_empty() { info.version.to_string() } else { format!("{}/{}", info.group, info.version) };
        Some(Meta {
            api_version,
            kind: info.kind,
            plural: info.plural,
            namespace: ns.map(str::to_string),
            name: name.to_string(),
            uid: m.get("uid").and_then(|u| u.as_str()).unwrap_or_default().to_string(),
            owners: m.get("ownerReferences").and_then(|o| serde_json::from_value(o.clone()).ok()).unwrap_or_default(),
            deleting: m.get("deletionTimestamp").is_some_and(|t| !t.is_null()),
            finalizers: m.get("finalizers").and_then(|f| serde_json::from_value(f.clone()).ok()).unwrap_or_default(),
            rev,
        })
    }

    /// The part whose change is worth telling: everything but the revision.
    fn shape(&self) -> (&str, &[OwnerReference], bool, &[String]) {
        (&self.uid, &self.owners, self.deleting, &self.finalizers)
    }
}

/// The resources that are stored and listable, once each.
fn stored_plurals() -> Vec<&'static str> {
    let mut out: Vec<&'static str> = Vec::new();
    for r in registry::RESOURCES {
        if r.verbs.contains(&"list") && r.verbs.contains(&"watch") && !out.contains(&r.plural) {
            out.push(r.plural);
        }
    }
    out
}

/// Lists one resource whole; returns its objects' metadata and the revision of the read.
async fn list_plural(client: &Client, plural: &str) -> Result<(Vec<Meta>, Revision), BusError> {
    let prefix = keys::prefix(plural, None);
    let (mut out, mut start_after, mut at) = (Vec::new(), None, 0);
    loop {
        let r = client.bus.read(&ReadOp::List { prefix: prefix.clone(), start_after: start_after.clone(), limit: 1000 }).await?;
        let ReadResult::List { items, rev, more } = r else {
            return Err(BusError::Nats("store answered a list with something else".into()));
        };
        at = at.max(rev);
        start_after = items.last().map(|s| s.key.clone());
        for s in &items {
            let v: serde_json::Value = codec::decode(&s.value)?;
            out.extend(Meta::of(&s.key, &v, s.rev));
        }
        if !more {
            return Ok((out, at));
        }
    }
}

/// An endless stream of metadata events for every stored resource: a `Listed` snapshot
/// (after every re-list), then an `Applied` or `Deleted` only when an object appears, goes,
/// or changes its uid, owners, finalizers or deletion mark.
pub fn watch_metadata(client: Client) -> impl Stream<Item = InformerEvent<Meta>> + Send + 'static {
    let (tx, rx) = futures::channel::mpsc::channel::<InformerEvent<Meta>>(1024);
    tokio::spawn(run(client, tx));
    rx
}

async fn run(client: Client, mut tx: futures::channel::mpsc::Sender<InformerEvent<Meta>>) {
    use futures::SinkExt;
    let mut backoff = Duration::from_millis(100);
    'relist: loop {
        let mut all = Vec::new();
        // Each resource is read at its own revision; the watch starts at the oldest and
        // skips, per resource, what its own list already covered.
        let mut listed_at: HashMap<&'static str, Revision> = HashMap::new();
        for plural in stored_plurals() {
            match list_plural(&client, plural).await {
                Ok((items, rev)) => {
                    listed_at.insert(plural, rev);
                    all.extend(items);
                }
                Err(e) => {
                    tracing::warn!(plural, error = %e, "metadata informer list failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue 'relist;
                }
            }
        }
        let from = listed_at.values().copied().min().unwrap_or(0);
        let mut known: HashMap<String, Meta> = all.iter().map(|m| (keys::object(m.plural, m.namespace.as_deref(), &m.name), m.clone())).collect();
        if tx.send(InformerEvent::Listed(all, from)).await.is_err() {
            return;
        }
        let mut events = match client.bus.watch(subjects::OBJECT_EVENTS.to_string(), from).await {
            Ok(s) => Box::pin(s),
            Err(e) => {
                tracing::warn!(error = %e, "metadata informer watch failed; re-listing");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        backoff = Duration::from_millis(100);
        while let Some(ev) = events.next().await {
            let ev = match ev {
                Ok(ev) => ev,
                Err(e) => {
                    tracing::warn!(error = %e, "metadata informer watch ended; re-listing");
                    tokio::time::sleep(backoff).await;
                    continue 'relist;
                }
            };
            let Some((plural, _, _)) = keys::split(&ev.key) else { continue };
            if listed_at.get(plural).is_some_and(|r| ev.rev <= *r) {
                continue;
            }
            let meta = match codec::decode::<serde_json::Value>(&ev.value).ok().and_then(|v| Meta::of(&ev.key, &v, ev.rev)) {
                Some(m) => m,
                // An object no resource describes is no one's owner or dependent; one that
                // does not decode means the view is broken: start again from a list.
                None if registry::RESOURCES.iter().all(|r| r.plural != plural) => continue,
                None => {
                    tracing::warn!(key = %ev.key, rev = ev.rev, "undecodable event; re-listing");
                    continue 'relist;
                }
            };
            let out = match ev.typ {
                EventType::Deleted => {
                    known.remove(&ev.key);
                    InformerEvent::Deleted(meta, ev.rev)
                }
                EventType::Added | EventType::Modified => {
                    if known.get(&ev.key).is_some_and(|k| k.shape() == meta.shape()) {
                        continue;
                    }
                    known.insert(ev.key.clone(), meta.clone());
                    InformerEvent::Applied(meta, ev.rev)
                }
            };
            if tx.send(out).await.is_err() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_carries_identity_and_owners() {
        let v = serde_json::json!({"metadata": {"name": "web-1", "uid": "u1", "finalizers": ["f"],
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web", "uid": "rs", "controller": true}]}});
        let m = Meta::of("pods/demo/web-1", &v, 7).unwrap();
        assert_eq!((m.kind, m.plural, m.api_version.as_str(), m.namespace.as_deref(), m.uid.as_str()), ("Pod", "pods", "v1", Some("demo"), "u1"));
        assert_eq!(m.owners[0].uid, "rs");
        assert_eq!((m.deleting, m.finalizers.clone(), m.rev), (false, vec!["f".to_string()], 7));
        let j = Meta::of("jobs/demo/j", &serde_json::json!({"metadata": {"uid": "j"}}), 1).unwrap();
        assert_eq!((j.kind, j.api_version.as_str()), ("Job", "batch/v1"));
        assert!(Meta::of("nosuchthings/x/y", &v, 1).is_none());
    }

    #[test]
    fn every_listable_resource_is_read_once() {
        let p = stored_plurals();
        assert!(p.contains(&"pods") && p.contains(&"deployments") && p.contains(&"configmaps"));
        let mut d = p.clone();
        d.dedup();
        assert_eq!(d.len(), p.len());
    }
}
