//! A typed store client for internal actors. Every write passes the same admission code
//! in `schema/` as the gateway's, so no writer of any origin can store an invalid object.

use crate::{Bus, BusError};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::{Metadata, Resource};
use schema::admission::{self, AdmissionError};
use schema::registry::{self, ResourceInfo};
use schema::store::{ReadOp, ReadResult, Revision, StoreError, WriteOp};
use schema::{keys, object};
use serde::{de::DeserializeOwned, Serialize};
use serde_json::Value;

/// What an actor's objects must be: a typed Kubernetes object that round-trips.
pub trait Object: Resource + Metadata<Ty = ObjectMeta> + Serialize + DeserializeOwned + Clone + Send + Sync + 'static {}
impl<T> Object for T where T: Resource + Metadata<Ty = ObjectMeta> + Serialize + DeserializeOwned + Clone + Send + Sync + 'static {}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(transparent)]
    Bus(#[from] BusError),
    #[error(transparent)]
    Admission(#[from] AdmissionError),
    #[error("{0}")]
    Other(String),
}

impl ClientError {
    pub fn is_not_found(&self) -> bool {
        matches!(self, ClientError::Bus(BusError::Store(StoreError::NotFound(_))))
    }
    pub fn is_conflict(&self) -> bool {
        matches!(self, ClientError::Bus(BusError::Store(StoreError::Conflict { .. } | StoreError::AlreadyExists(_))))
    }
    pub fn is_already_exists(&self) -> bool {
        matches!(self, ClientError::Bus(BusError::Store(StoreError::AlreadyExists(_))))
    }
    /// The write may or may not have been applied: no member answered in time, or the
    /// answer was lost. A writer that counts its writes must find out by reading.
    pub fn is_ambiguous(&self) -> bool {
        matches!(self, ClientError::Bus(BusError::Store(StoreError::Unavailable(_) | StoreError::NotLeader { .. }) | BusError::Nats(_) | BusError::Timeout(_)))
    }
}

pub fn info<K: Resource>() -> Result<&'static ResourceInfo, ClientError> {
    registry::by_kind(K::API_VERSION, K::KIND).ok_or_else(|| ClientError::Other(format!("{} is not a registered resource", K::KIND)))
}

fn other(e: impl std::fmt::Display) -> ClientError {
    ClientError::Other(e.to_string())
}

fn typed<K: Object>(s: &schema::store::Stored) -> Result<K, ClientError> {
    let v = object::from_stored(s).map_err(other)?;
    object::from_value(v).map_err(other)
}

#[derive(Clone)]
pub struct Client {
    pub bus: Bus,
    /// The process's shared informers (`informer::Shared`), when it has them: informers
    /// made through this client join them.
    pub informers: Option<crate::informer::Shared>,
}

impl Client {
    pub fn new(bus: Bus) -> Client {
        Client { bus, informers: None }
    }

    /// The same client, its informers shared with every other informer of the same kind
    /// and scope made through it before `shared.start()`.
    pub fn sharing(&self, shared: crate::informer::Shared) -> Client {
        Client { bus: self.bus.clone(), informers: Some(shared) }
    }

    /// The same client, its writes naming `writer` (the actor) in the object's history.
    pub fn named(&self, writer: &'static str) -> Client {
        Client { bus: self.bus.named(writer), informers: self.informers.clone() }
    }

    pub async fn get<K: Object>(&self, ns: Option<&str>, name: &str) -> Result<Option<K>, ClientError> {
        match self.get_value(info::<K>()?, ns, name).await? {
            Some(v) => Ok(Some(object::from_value(v).map_err(other)?)),
            None => Ok(None),
        }
    }

    /// [`Client::get`] for a resource known only at run time (the garbage collector's
    /// owners and dependents may be of any kind).
    pub async fn get_value(&self, res: &ResourceInfo, ns: Option<&str>, name: &str) -> Result<Option<Value>, ClientError> {
        let key = keys::object(res.plural, if res.namespaced { ns } else { None }, name);
        match self.bus.read(&ReadOp::Get { key }).await? {
            ReadResult::Get { item: Some(s), .. } => Ok(Some(object::from_stored(&s).map_err(other)?)),
            _ => Ok(None),
        }
    }

    /// Every object of kind K (in one namespace, or all), and the revision to watch from.
    pub async fn list<K: Object>(&self, ns: Option<&str>) -> Result<(Vec<K>, Revision), ClientError> {
        let res = info::<K>()?;
        let prefix = keys::prefix(res.plural, if res.namespaced { ns } else { None });
        let (items, rev) = self.bus.list_all(&prefix, 1000).await?;
        let out = items.iter().map(typed).collect::<Result<Vec<K>, _>>()?;
        Ok((out, rev))
    }

    pub async fn create<K: Object>(&self, obj: &K) -> Result<K, ClientError> {
        let res = info::<K>()?;
        let mut v = object::to_value(obj).map_err(other)?;
        admission::admit_create(res, &mut v)?;
        crate::admission::on_create(&self.bus, res, &mut v, false).await?;
        let op = WriteOp::Create {
            key: object::key_of(res, &v).map_err(other)?,
            subject: object::subject_of(res, &v).map_err(other)?,
            value: object::to_store_bytes(&v).map_err(other)?,
        };
        // A new object has no trace of its own yet; made by a controller for its owner (a
        // ReplicaSet for a Deployment, a Pod for a ReplicaSet), it goes on in the trace
        // of the owner's latest event, even from a task the handler spawned.
        let inherited = if crate::trace::current().is_none() && crate::trace::of_key(op.key()).is_none() { owner_trace(&v) } else { None };
        let r = match inherited {
            Some(tp) => crate::trace::scope(tp, self.bus.write(&op)).await?,
            None => self.bus.write(&op).await?,
        };
        typed(&r.stored)
    }

    /// Compare-and-swap on the object's resourceVersion (unconditional when it has none).
    pub async fn update<K: Object>(&self, obj: &K) -> Result<K, ClientError> {
        let v = object::to_value(obj).map_err(other)?;
        let stored = self.update_value(info::<K>()?, v).await?;
        object::from_value(stored).map_err(other)
    }

    /// [`Client::update`] for a resource known only at run time.
    pub async fn update_value(&self, res: &ResourceInfo, mut v: Value) -> Result<Value, ClientError> {
        let expected_rev = object::resource_version(&v);
        let key = object::key_of(res, &v).map_err(other)?;
        let old = match self.bus.read(&ReadOp::Get { key: key.clone() }).await? {
            ReadResult::Get { item: Some(s), .. } => object::from_stored(&s).map_err(other)?,
            _ => return Err(BusError::Store(StoreError::NotFound(key)).into()),
        };
        admission::admit_update_as(res, &mut v, &old, admission::Writer::Actor)?;
        // Taking the last finalizer off an object being deleted removes it, as the real
        // server does (the garbage collector finishing an Orphan or Foreground delete).
        if object::finalized(&v) {
            let r = self.bus.write(&WriteOp::Delete { key, expected_rev }).await?;
            return object::from_stored(&r.stored).map_err(other);
        }
        let op = WriteOp::Update {
            key,
            subject: object::subject_of(res, &v).map_err(other)?,
            value: object::to_store_bytes(&v).map_err(other)?,
            expected_rev,
        };
        let r = self.bus.write(&op).await?;
        object::from_stored(&r.stored).map_err(other)
    }

    /// Removes an object of a resource known only at run time, if it is still at
    /// `expected_rev` (when given).
    pub async fn delete_value(&self, res: &ResourceInfo, ns: Option<&str>, name: &str, expected_rev: Option<Revision>) -> Result<(), ClientError> {
        let key = keys::object(res.plural, if res.namespaced { ns } else { None }, name);
        self.bus.write(&WriteOp::Delete { key, expected_rev }).await?;
        Ok(())
    }

    /// Removes the object from the store now (graceful pod deletion is the caller's job).
    pub async fn delete<K: Object>(&self, ns: Option<&str>, name: &str, expected_rev: Option<Revision>) -> Result<K, ClientError> {
        let res = info::<K>()?;
        let key = keys::object(res.plural, if res.namespaced { ns } else { None }, name);
        let r = self.bus.write(&WriteOp::Delete { key, expected_rev }).await?;
        typed(&r.stored)
    }

    /// Creates unless present; for bootstrap objects (default namespaces, RuntimeClass).
    pub async fn ensure<K: Object>(&self, obj: &K) -> Result<(), ClientError> {
        match self.create(obj).await {
            Ok(_) => Ok(()),
            Err(ClientError::Bus(BusError::Store(StoreError::AlreadyExists(_)))) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// The trace of the latest event about the object's controlling owner (or first owner).
fn owner_trace(v: &Value) -> Option<schema::trace::TraceParent> {
    let owners = v.pointer("/metadata/ownerReferences")?.as_array()?;
    let o = owners.iter().find(|o| o.get("controller").and_then(Value::as_bool) == Some(true)).or_else(|| owners.first())?;
    let res = registry::by_kind(o.get("apiVersion")?.as_str()?, o.get("kind")?.as_str()?)?;
    let ns = v.pointer("/metadata/namespace").and_then(Value::as_str);
    let key = keys::object(res.plural, if res.namespaced { ns } else { None }, o.get("name")?.as_str()?);
    crate::trace::of_key(&key)
}

/// Untyped form of [`Client::update`]'s conversion, for callers holding `Value`s.
pub fn value_of<K: Object>(obj: &K) -> Result<Value, ClientError> {
    object::to_value(obj).map_err(other)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_object_inherits_its_controlling_owners_trace() {
        let tp = crate::trace::new_trace();
        crate::trace::remember_key(&keys::object("replicasets", Some("t-owner"), "rs1"), tp);
        let pod = serde_json::json!({"metadata": {"namespace": "t-owner", "name": "p", "ownerReferences": [
            {"apiVersion": "v1", "kind": "ConfigMap", "name": "other"},
            {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs1", "controller": true}]}});
        assert_eq!(owner_trace(&pod), Some(tp));
        let orphan = serde_json::json!({"metadata": {"namespace": "t-owner", "name": "q"}});
        assert_eq!(owner_trace(&orphan), None);
    }
}
