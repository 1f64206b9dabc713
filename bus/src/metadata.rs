//! A metadata informer over every stored resource at once (client-go's metadata informers,
//! which kube's garbage collector runs for every resource): the identity and ownership of
//! each object, not its contents. Changes that touch neither (a status write, a Lease
//! renewal) are dropped here, so a subscriber wakes only when the ownership graph moves.

use crate::client::Client;
use crate::informer::InformerEvent;
use crate::BusError;
use futures::{Stream, StreamExt};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use schema::store::{EventType, Revision};
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

/// The part of a stored object the graph reads; everything else (spec, status,
/// managedFields) is skipped while decoding, not built and thrown away.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct HeadMeta {
    #[serde(default)]
    uid: String,
    #[serde(default)]
    owner_references: Vec<OwnerReference>,
    #[serde(default)]
    deletion_timestamp: Option<String>,
    #[serde(default)]
    finalizers: Vec<String>,
}

#[derive(Debug, Default, serde::Deserialize)]
struct Head {
    #[serde(default)]
    metadata: HeadMeta,
}

impl Meta {
    /// From a stored object's key and its stored (MessagePack) bytes; None for a key no
    /// served resource has.
    pub fn decode(key: &str, bytes: &[u8], rev: Revision) -> Result<Option<Meta>, codec::CodecError> {
        Ok(Meta::from_head(key, codec::decode::<Head>(bytes)?, rev))
    }

    /// From a stored object's key and value.
    pub fn of(key: &str, v: &serde_json::Value, rev: Revision) -> Option<Meta> {
        v.get("metadata")?;
        Meta::from_head(key, serde_json::from_value::<Head>(v.clone()).ok()?, rev)
    }

    fn from_head(key: &str, head: Head, rev: Revision) -> Option<Meta> {
        let (plural, ns, name) = keys::split(key)?;
        let info = registry::RESOURCES.iter().find(|r| r.plural == plural)?;
        let m = head.metadata;
        let api_version = if info.group.is_empty() { info.version.to_string() } else { format!("{}/{}", info.group, info.version) };
        Some(Meta {
            api_version,
            kind: info.kind,
            plural: info.plural,
            namespace: ns.map(str::to_string),
            name: name.to_string(),
            uid: m.uid,
            owners: m.owner_references,
            deleting: m.deletion_timestamp.is_some(),
            finalizers: m.finalizers,
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

/// Lists one resource whole, at one revision; returns its objects' metadata and it.
async fn list_plural(client: &Client, plural: &str) -> Result<(Vec<Meta>, Revision), BusError> {
    let (items, rev) = client.bus.list_all(&keys::prefix(plural, None), 1000).await?;
    let mut out = Vec::with_capacity(items.len());
    for s in &items {
        out.extend(Meta::decode(&s.key, &s.value, s.rev)?);
    }
    Ok((out, rev))
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
    let mut backoff = crate::informer::Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
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
                    tokio::time::sleep(backoff.next_delay()).await;
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
                tokio::time::sleep(backoff.next_delay()).await;
                continue;
            }
        };
        // Re-lists pause longer each time a watch fails soon after it began (expired,
        // unreadable); one that stayed up starts the pauses over.
        let started = tokio::time::Instant::now();
        let mut pause = || {
            if started.elapsed() >= Duration::from_secs(30) {
                backoff.reset();
            }
            backoff.next_delay()
        };
        while let Some(ev) = events.next().await {
            let ev = match ev {
                Ok(ev) => ev,
                Err(e) => {
                    tracing::warn!(error = %e, "metadata informer watch ended; re-listing");
                    tokio::time::sleep(pause()).await;
                    continue 'relist;
                }
            };
            let Some((plural, _, _)) = keys::split(&ev.key) else { continue };
            if listed_at.get(plural).is_some_and(|r| ev.rev <= *r) {
                continue;
            }
            let meta = match Meta::decode(&ev.key, &ev.value, ev.rev).ok().flatten() {
                Some(m) => m,
                // An object no resource describes is no one's owner or dependent; one that
                // does not decode means the view is broken: start again from a list.
                None if registry::RESOURCES.iter().all(|r| r.plural != plural) => continue,
                None => {
                    tracing::warn!(key = %ev.key, rev = ev.rev, "undecodable event; re-listing");
                    tokio::time::sleep(pause()).await;
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
    fn stored_bytes_decode_to_the_same_meta_skipping_the_rest() {
        let v = serde_json::json!({"metadata": {"name": "p", "uid": "u", "deletionTimestamp": "2026-01-01T00:00:00Z", "managedFields": [{"manager": "m"}],
            "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap", "name": "c", "uid": "c"}]}, "spec": {"containers": []}, "status": {"phase": "Running"}});
        let bytes = codec::encode(&v).unwrap();
        let m = Meta::decode("pods/demo/p", &bytes, 3).unwrap().unwrap();
        assert_eq!(Some(m.clone()), Meta::of("pods/demo/p", &v, 3));
        assert!(m.deleting && m.owners[0].kind == "ConfigMap");
        assert!(Meta::decode("pods/demo/p", b"\xc1", 3).is_err());
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
