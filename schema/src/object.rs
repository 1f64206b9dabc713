//! Helpers on objects as `serde_json::Value`: the form the gateway, the store and the
//! admission chain share. Typed k8s-openapi structs convert to and from it losslessly.

use crate::registry::ResourceInfo;
use crate::store::{Revision, Stored};
use crate::{codec, keys, subjects};
use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum ObjectError {
    #[error("{0}")]
    Codec(#[from] codec::CodecError),
    #[error("object has no metadata.name")]
    NoName,
}

pub fn name(v: &Value) -> Option<&str> {
    v.pointer("/metadata/name").and_then(Value::as_str).filter(|s| !s.is_empty())
}

pub fn namespace(v: &Value) -> Option<&str> {
    v.pointer("/metadata/namespace").and_then(Value::as_str).filter(|s| !s.is_empty())
}

pub fn resource_version(v: &Value) -> Option<Revision> {
    v.pointer("/metadata/resourceVersion").and_then(Value::as_str).and_then(|s| s.parse().ok())
}

/// The node a pod is bound to, if any.
pub fn node_name(v: &Value) -> Option<&str> {
    v.pointer("/spec/nodeName").and_then(Value::as_str).filter(|s| !s.is_empty())
}

fn metadata_mut(v: &mut Value) -> &mut serde_json::Map<String, Value> {
    if !v.is_object() {
        *v = Value::Object(Default::default());
    }
    if let Value::Object(o) = v {
        let m = o.entry("metadata").or_insert_with(|| Value::Object(Default::default()));
        if !m.is_object() {
            *m = Value::Object(Default::default());
        }
        if let Value::Object(m) = m {
            return m;
        }
    }
    unreachable!("both levels were made objects above")
}

pub fn set_meta(v: &mut Value, field: &str, val: Value) {
    metadata_mut(v).insert(field.to_string(), val);
}

pub fn remove_meta(v: &mut Value, field: &str) {
    metadata_mut(v).remove(field);
}

/// Decodes a stored value and stamps the revision it was stored at as its resourceVersion.
pub fn from_stored(s: &Stored) -> Result<Value, ObjectError> {
    let mut v: Value = codec::decode(&s.value)?;
    set_meta(&mut v, "resourceVersion", Value::String(s.rev.to_string()));
    Ok(v)
}

/// Encodes an object for the store; the resourceVersion is not stored (the store owns it).
pub fn to_store_bytes(v: &Value) -> Result<Vec<u8>, ObjectError> {
    let mut v = v.clone();
    remove_meta(&mut v, "resourceVersion");
    Ok(codec::encode(&v)?)
}

pub fn key_of(res: &ResourceInfo, v: &Value) -> Result<String, ObjectError> {
    let name = name(v).ok_or(ObjectError::NoName)?;
    Ok(keys::object(res.plural, if res.namespaced { namespace(v) } else { None }, name))
}

pub fn subject_of(res: &ResourceInfo, v: &Value) -> Result<String, ObjectError> {
    let name = name(v).ok_or(ObjectError::NoName)?;
    let ns = if res.namespaced { namespace(v) } else { None };
    Ok(subjects::object_event(res.plural, ns, name, node_name(v)))
}

/// Converts a typed k8s-openapi object to the shared form, setting apiVersion and kind.
pub fn to_value<K>(obj: &K) -> Result<Value, serde_json::Error>
where
    K: k8s_openapi::Resource + serde::Serialize,
{
    let mut v = serde_json::to_value(obj)?;
    if let Some(o) = v.as_object_mut() {
        o.insert("apiVersion".into(), Value::String(K::API_VERSION.into()));
        o.insert("kind".into(), Value::String(K::KIND.into()));
    }
    Ok(v)
}

pub fn from_value<K: serde::de::DeserializeOwned>(v: Value) -> Result<K, serde_json::Error> {
    serde_json::from_value(v)
}

pub fn now() -> k8s_openapi::apimachinery::pkg::apis::meta::v1::Time {
    // Kubernetes keeps whole seconds in Time.
    let secs = jiff::Timestamp::now().as_second();
    k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        jiff::Timestamp::from_second(secs).unwrap_or(jiff::Timestamp::UNIX_EPOCH),
    )
}

pub fn now_string() -> String {
    serde_json::to_value(now()).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()
}

/// When a graceful deletion with `grace_seconds` is due: what `deletionTimestamp` holds,
/// as on the real server (now + grace, whole seconds).
pub fn deletion_deadline(grace_seconds: i64) -> k8s_openapi::apimachinery::pkg::apis::meta::v1::Time {
    let now = now();
    let at = now.0.as_second().saturating_add(grace_seconds.max(0));
    k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::from_second(at).unwrap_or(now.0))
}

/// The finalizer a delete with `propagationPolicy: Orphan` puts on the owner: the garbage
/// collector removes the owner's references from its dependents, then this finalizer.
pub const ORPHAN_FINALIZER: &str = "orphan";
/// The finalizer of `propagationPolicy: Foreground`: the owner stays (with a
/// deletionTimestamp) until the garbage collector has deleted its dependents.
pub const FOREGROUND_FINALIZER: &str = "foregroundDeletion";

pub fn finalizers(v: &Value) -> Vec<&str> {
    v.pointer("/metadata/finalizers").and_then(Value::as_array).map(|a| a.iter().filter_map(Value::as_str).collect()).unwrap_or_default()
}

pub fn is_deleting(v: &Value) -> bool {
    v.pointer("/metadata/deletionTimestamp").is_some_and(|d| !d.is_null())
}

/// Whether a write of `v` should remove it instead: it is being deleted, with no grace
/// period left to wait for (pods on a node have one: their agent deletes them), and the
/// last finalizer has just been taken off — as the real server deletes an object whose
/// finalizers are done.
pub fn finalized(v: &Value) -> bool {
    is_deleting(v) && finalizers(v).is_empty() && v.pointer("/metadata/deletionGracePeriodSeconds").and_then(Value::as_i64) == Some(0)
}

#[cfg(test)]
mod finalizer_tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_a_deleting_object_without_finalizers_or_grace_is_finalized() {
        let v = |m: Value| json!({"metadata": m});
        assert!(finalized(&v(json!({"deletionTimestamp": "2026-01-01T00:00:00Z", "deletionGracePeriodSeconds": 0}))));
        assert!(finalized(&v(json!({"deletionTimestamp": "2026-01-01T00:00:00Z", "deletionGracePeriodSeconds": 0, "finalizers": []}))));
        assert!(!finalized(&v(json!({"deletionTimestamp": "2026-01-01T00:00:00Z", "deletionGracePeriodSeconds": 0, "finalizers": ["orphan"]}))));
        // A pod in its grace period, a terminating namespace: someone else finishes them.
        assert!(!finalized(&v(json!({"deletionTimestamp": "2026-01-01T00:00:00Z", "deletionGracePeriodSeconds": 30}))));
        assert!(!finalized(&v(json!({"deletionTimestamp": "2026-01-01T00:00:00Z"}))));
        assert!(!finalized(&v(json!({"deletionGracePeriodSeconds": 0}))));
        assert_eq!(finalizers(&v(json!({"finalizers": ["a", "b"]}))), vec!["a", "b"]);
    }
}
