//! The garbage collector's half of Orphan and Foreground deletion. An owner deleted with
//! one of these policies stays, marked for deletion and holding the policy's finalizer,
//! until the collector has done the work: Orphan takes the owner's references off its
//! dependents, Foreground deletes the dependents (cascading the same way to theirs) and
//! waits until they are gone. Then the finalizer comes off and the owner goes with it.
//! Owners and dependents may be of any kind the registry serves.

use super::delete_pod_gracefully;
use bus::client::ClientError;
use bus::metadata::Meta;
use bus::Client;
use k8s_openapi::api::core::v1::Pod;
use schema::object::{FOREGROUND_FINALIZER, ORPHAN_FINALIZER};
use schema::registry::{self, ResourceInfo};
use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    Orphan,
    Foreground,
}

/// The policy an owner is being deleted with, if it waits for the collector.
pub fn policy_of(deleting: bool, finalizers: &[String]) -> Option<Policy> {
    if !deleting {
        return None;
    }
    if finalizers.iter().any(|f| f == ORPHAN_FINALIZER) {
        Some(Policy::Orphan)
    } else if finalizers.iter().any(|f| f == FOREGROUND_FINALIZER) {
        Some(Policy::Foreground)
    } else {
        None
    }
}

/// A dependent as the plan needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dep {
    pub api_version: String,
    pub kind: &'static str,
    pub name: String,
    pub deleting: bool,
    /// It owns objects in turn: Foreground marks it rather than removing it outright.
    pub owns: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Take the owner's reference off this dependent.
    Unown(Dep),
    /// Delete this dependent (Foreground again, if it owns objects in turn).
    Delete(Dep),
    /// Nothing left to wait for: remove the policy's finalizer from the owner.
    Finish,
}

/// What to do next for an owner being deleted with `policy`, given its dependents now.
pub fn plan(policy: Policy, deps: &[Dep]) -> Vec<Step> {
    match policy {
        // Unowning is all there is to it; the finalizer comes off after the last one.
        Policy::Orphan => deps.iter().cloned().map(Step::Unown).chain(std::iter::once(Step::Finish)).collect(),
        // Foreground waits until dependents are gone, not merely deleting.
        Policy::Foreground if deps.is_empty() => vec![Step::Finish],
        Policy::Foreground => deps.iter().filter(|d| !d.deleting).cloned().map(Step::Delete).collect(),
    }
}

fn resource(api_version: &str, kind: &str) -> Result<&'static ResourceInfo, ClientError> {
    registry::by_kind(api_version, kind).ok_or_else(|| ClientError::Other(format!("{api_version} {kind} is not a served resource")))
}

fn meta_mut(v: &mut Value) -> &mut serde_json::Map<String, Value> {
    if !v.get("metadata").is_some_and(Value::is_object) {
        v["metadata"] = Value::Object(Default::default());
    }
    v["metadata"].as_object_mut().expect("metadata is an object")
}

/// Read-modify-write of any object, compare-and-swap with retries on conflict; `change`
/// returns false when the object needs nothing (or is not the one meant).
pub async fn update_any(client: &Client, res: &ResourceInfo, ns: Option<&str>, name: &str, change: impl Fn(&mut Value) -> bool) -> Result<(), ClientError> {
    for _ in 0..8 {
        let Some(mut v) = client.get_value(res, ns, name).await? else { return Ok(()) };
        if !change(&mut v) {
            return Ok(());
        }
        match client.update_value(res, v).await {
            Ok(_) => return Ok(()),
            Err(e) if e.is_conflict() => continue,
            Err(e) if e.is_not_found() => return Ok(()),
            Err(e) => return Err(e),
        }
    }
    Err(ClientError::Other(format!("{}/{name} kept conflicting", res.plural)))
}

fn uid_is(v: &Value, uid: &str) -> bool {
    v["metadata"]["uid"].as_str() == Some(uid)
}

/// Deletes one object of any kind as the real server would for a Background delete: a
/// pod through its node agent, an object with finalizers by marking it, anything else at
/// once (compare-and-swap on what was read, so a newer object of the same name stays).
pub async fn delete_any(client: &Client, api_version: &str, kind: &str, ns: Option<&str>, name: &str, uid: &str, foreground: bool) -> Result<(), ClientError> {
    if kind == "Pod" && api_version == "v1" {
        return match client.get::<Pod>(ns, name).await? {
            Some(p) if p.metadata.uid.as_deref() == Some(uid) => delete_pod_gracefully(client, &p).await,
            _ => Ok(()),
        };
    }
    let res = resource(api_version, kind)?;
    let Some(v) = client.get_value(res, ns, name).await? else { return Ok(()) };
    if !uid_is(&v, uid) || v["metadata"].get("deletionTimestamp").is_some_and(|t| !t.is_null()) {
        return Ok(());
    }
    let has_finalizers = v["metadata"]["finalizers"].as_array().is_some_and(|f| !f.is_empty());
    if foreground || has_finalizers {
        let uid = uid.to_string();
        return update_any(client, res, ns, name, move |o| {
            if !uid_is(o, &uid) {
                return false;
            }
            let m = meta_mut(o);
            if m.get("deletionTimestamp").is_some_and(|t| !t.is_null()) {
                return false;
            }
            m.insert("deletionTimestamp".into(), serde_json::to_value(schema::object::now()).unwrap_or(Value::Null));
            m.insert("deletionGracePeriodSeconds".into(), Value::from(0));
            if foreground {
                let fins = m.entry("finalizers").or_insert_with(|| Value::Array(Vec::new()));
                if let Some(a) = fins.as_array_mut() {
                    a.push(Value::String(FOREGROUND_FINALIZER.into()));
                }
            }
            true
        })
        .await;
    }
    let rev = schema::object::resource_version(&v);
    match client.delete_value(res, ns, name, rev).await {
        Ok(()) => Ok(()),
        Err(e) if e.is_not_found() || e.is_conflict() => Ok(()),
        Err(e) => Err(e),
    }
}

/// One pass over an owner being deleted: reads it fresh, carries out the plan for the
/// dependents the collector's graph holds. Returns true when the owner is done with
/// (finished, gone, or no longer waiting); false when dependents are still on their way.
pub async fn pass(client: &Client, owner: &Meta, deps: &[Dep]) -> Result<bool, ClientError> {
    let ns = owner.namespace.as_deref();
    let res = resource(&owner.api_version, owner.kind)?;
    let Some(cur) = client.get_value(res, ns, &owner.name).await? else { return Ok(true) };
    if !uid_is(&cur, &owner.uid) {
        return Ok(true);
    }
    let deleting = cur["metadata"].get("deletionTimestamp").is_some_and(|t| !t.is_null());
    let finalizers: Vec<String> = serde_json::from_value(cur["metadata"]["finalizers"].clone()).unwrap_or_default();
    let Some(policy) = policy_of(deleting, &finalizers) else { return Ok(true) };
    let mut finished = false;
    for step in plan(policy, deps) {
        match step {
            Step::Unown(d) => {
                let owner_uid = owner.uid.clone();
                update_any(client, resource(&d.api_version, d.kind)?, ns, &d.name, move |o| {
                    let m = meta_mut(o);
                    let Some(refs) = m.get_mut("ownerReferences").and_then(Value::as_array_mut) else { return false };
                    let before = refs.len();
                    refs.retain(|r| r["uid"].as_str() != Some(owner_uid.as_str()));
                    if refs.len() == before {
                        return false;
                    }
                    if refs.is_empty() {
                        m.remove("ownerReferences");
                    }
                    true
                })
                .await?
            }
            Step::Delete(d) => {
                let uid = client.get_value(resource(&d.api_version, d.kind)?, ns, &d.name).await?.and_then(|v| v["metadata"]["uid"].as_str().map(str::to_string));
                if let Some(uid) = uid {
                    delete_any(client, &d.api_version, d.kind, ns, &d.name, &uid, d.owns).await?;
                }
            }
            Step::Finish => {
                let f = if policy == Policy::Orphan { ORPHAN_FINALIZER } else { FOREGROUND_FINALIZER };
                let uid = owner.uid.clone();
                update_any(client, res, ns, &owner.name, move |o| {
                    if !uid_is(o, &uid) {
                        return false;
                    }
                    let Some(fins) = meta_mut(o).get_mut("finalizers").and_then(Value::as_array_mut) else { return false };
                    let before = fins.len();
                    fins.retain(|x| x.as_str() != Some(f));
                    fins.len() != before
                })
                .await?;
                finished = true;
            }
        }
    }
    Ok(finished)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dep(name: &str, deleting: bool) -> Dep {
        Dep { api_version: "v1".into(), kind: "Pod", name: name.into(), deleting, owns: false }
    }

    #[test]
    fn orphan_unowns_everything_then_finishes() {
        let deps = [dep("a", false), dep("b", true)];
        assert_eq!(plan(Policy::Orphan, &deps), vec![Step::Unown(dep("a", false)), Step::Unown(dep("b", true)), Step::Finish]);
        assert_eq!(plan(Policy::Orphan, &[]), vec![Step::Finish]);
    }

    #[test]
    fn foreground_deletes_dependents_and_waits_until_they_are_gone() {
        assert_eq!(plan(Policy::Foreground, &[dep("a", false), dep("b", true)]), vec![Step::Delete(dep("a", false))]);
        // Only dependents still terminating: nothing to do but wait.
        assert_eq!(plan(Policy::Foreground, &[dep("b", true)]), vec![]);
        assert_eq!(plan(Policy::Foreground, &[]), vec![Step::Finish]);
    }

    #[test]
    fn the_policy_comes_from_the_finalizer_of_a_deleting_object() {
        let fins = |f: &[&str]| f.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(policy_of(false, &fins(&[ORPHAN_FINALIZER])), None, "not being deleted");
        assert_eq!(policy_of(true, &fins(&[ORPHAN_FINALIZER])), Some(Policy::Orphan));
        assert_eq!(policy_of(true, &fins(&["example.com/x", FOREGROUND_FINALIZER])), Some(Policy::Foreground));
        assert_eq!(policy_of(true, &[]), None);
    }
}
