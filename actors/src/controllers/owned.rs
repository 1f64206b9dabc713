//! A cache of dependents indexed by their controlling owner's uid (ReplicaSets by
//! Deployment, Pods by ReplicaSet), so a controller finds an owner's objects without
//! scanning all of them, and learns which owners to reconcile when a dependent changes.

use bus::client::Object;
use std::collections::{HashMap, HashSet};

pub fn key_of<K: Object>(o: &K) -> String {
    let m = o.metadata();
    format!("{}/{}", m.namespace.as_deref().unwrap_or(""), m.name.as_deref().unwrap_or(""))
}

/// The objects a controller reconciles, by key, fed by its informer. `apply` returns the
/// keys to queue, and the key of a deleted object (for the caller's own bookkeeping).
pub struct Cache<K> {
    items: HashMap<String, K>,
}

impl<K> Default for Cache<K> {
    fn default() -> Self {
        Cache { items: HashMap::new() }
    }
}

impl<K: Object> Cache<K> {
    pub fn apply(&mut self, ev: bus::informer::InformerEvent<K>) -> (Vec<String>, Option<String>) {
        use bus::informer::InformerEvent;
        match ev {
            InformerEvent::Listed(items, _) => {
                self.items = items.into_iter().map(|o| (key_of(&o), o)).collect();
                (self.keys(), None)
            }
            InformerEvent::Applied(o, _) => {
                let k = key_of(&o);
                self.items.insert(k.clone(), o);
                (vec![k], None)
            }
            InformerEvent::Deleted(o, _) => {
                let k = key_of(&o);
                self.items.remove(&k);
                (Vec::new(), Some(k))
            }
        }
    }

    pub fn get(&self, key: &str) -> Option<&K> {
        self.items.get(key)
    }

    pub fn keys(&self) -> Vec<String> {
        self.items.keys().cloned().collect()
    }
}

pub struct OwnedIndex<K> {
    owner_kind: &'static str,
    items: HashMap<String, K>,
    by_owner: HashMap<String, HashSet<String>>,
}

impl<K: Object> OwnedIndex<K> {
    pub fn new(owner_kind: &'static str) -> Self {
        OwnedIndex { owner_kind, items: HashMap::new(), by_owner: HashMap::new() }
    }

    /// The controlling owner's (uid, "namespace/name").
    fn owner(&self, o: &K) -> Option<(String, String)> {
        let m = o.metadata();
        let r = m.owner_references.as_ref()?.iter().find(|r| r.controller == Some(true) && r.kind == self.owner_kind)?;
        Some((r.uid.clone(), format!("{}/{}", m.namespace.as_deref().unwrap_or(""), r.name)))
    }

    /// Stores or replaces an object; returns the owners to reconcile.
    pub fn put(&mut self, o: K) -> Vec<String> {
        let key = key_of(&o);
        let mut touched: Vec<String> = self.remove(&key).into_iter().collect();
        if let Some((uid, owner_key)) = self.owner(&o) {
            self.by_owner.entry(uid).or_default().insert(key.clone());
            touched.push(owner_key);
        }
        self.items.insert(key, o);
        touched
    }

    /// Forgets an object; returns its owner, to reconcile.
    pub fn remove(&mut self, key: &str) -> Option<String> {
        let old = self.items.remove(key)?;
        let (uid, owner_key) = self.owner(&old)?;
        if let Some(s) = self.by_owner.get_mut(&uid) {
            s.remove(key);
            if s.is_empty() {
                self.by_owner.remove(&uid);
            }
        }
        Some(owner_key)
    }

    /// Replaces everything after a (re)list; returns every owner touched.
    pub fn replace_all(&mut self, items: Vec<K>) -> Vec<String> {
        let keys: Vec<String> = self.items.keys().cloned().collect();
        let mut touched: Vec<String> = keys.iter().filter_map(|k| self.remove(k)).collect();
        for o in items {
            touched.extend(self.put(o));
        }
        touched
    }

    pub fn owned_by(&self, owner_uid: &str) -> Vec<K> {
        self.by_owner.get(owner_uid).map(|ks| ks.iter().filter_map(|k| self.items.get(k).cloned()).collect()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Pod;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

    fn pod(name: &str, owner: &str) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("demo".into()),
                owner_references: Some(vec![OwnerReference { kind: "ReplicaSet".into(), name: owner.into(), uid: format!("{owner}-uid"), controller: Some(true), ..Default::default() }]),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn moves_between_owners_touch_both() {
        let mut ix = OwnedIndex::<Pod>::new("ReplicaSet");
        assert_eq!(ix.put(pod("p", "a")), vec!["demo/a".to_string()]);
        assert_eq!(ix.put(pod("p", "b")), vec!["demo/a".to_string(), "demo/b".to_string()]);
        assert!(ix.owned_by("a-uid").is_empty());
        assert_eq!(ix.owned_by("b-uid").len(), 1);
        assert_eq!(ix.remove("demo/p"), Some("demo/b".to_string()));
        assert!(ix.owned_by("b-uid").is_empty());
    }
}
