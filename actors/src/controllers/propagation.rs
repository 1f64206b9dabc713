//! The garbage collector's half of Orphan and Foreground deletion. An owner deleted with
//! one of these policies stays, marked for deletion and holding the policy's finalizer,
//! until the collector has done the work: Orphan takes the owner's references off its
//! dependents, Foreground deletes the dependents (cascading the same way to theirs) and
//! waits until they are gone. Then the finalizer comes off and the owner goes with it.

use super::{delete_pod_gracefully, update_outcome, Outcome};
use bus::client::{ClientError, Object};
use bus::Client;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use schema::object::{FOREGROUND_FINALIZER, ORPHAN_FINALIZER};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    Orphan,
    Foreground,
}

/// The policy an owner is being deleted with, if it waits for the collector.
pub fn policy_of(meta: &ObjectMeta) -> Option<Policy> {
    meta.deletion_timestamp.as_ref()?;
    let fins = meta.finalizers.as_deref().unwrap_or_default();
    if fins.iter().any(|f| f == ORPHAN_FINALIZER) {
        Some(Policy::Orphan)
    } else if fins.iter().any(|f| f == FOREGROUND_FINALIZER) {
        Some(Policy::Foreground)
    } else {
        None
    }
}

/// An owner being deleted: what the collector needs to find it and its dependents again.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Owner {
    pub kind: &'static str,
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

/// The kind whose objects the given owner kind owns (the controllers that exist so far).
pub fn dependent_kind(owner_kind: &str) -> Option<&'static str> {
    match owner_kind {
        "Deployment" => Some("ReplicaSet"),
        "ReplicaSet" => Some("Pod"),
        _ => None,
    }
}

/// A dependent as the plan needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dep {
    pub kind: &'static str,
    pub name: String,
    pub deleting: bool,
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

fn owned_by(meta: &ObjectMeta, uid: &str) -> bool {
    meta.owner_references.as_deref().unwrap_or_default().iter().any(|r| r.uid == uid)
}

async fn list_deps<K: Object>(client: &Client, owner: &Owner, kind: &'static str) -> Result<Vec<Dep>, ClientError> {
    let (items, _) = client.list::<K>(Some(&owner.namespace)).await?;
    Ok(items
        .iter()
        .map(|o| o.metadata())
        .filter(|m| owned_by(m, &owner.uid))
        .map(|m| Dep { kind, name: m.name.clone().unwrap_or_default(), deleting: m.deletion_timestamp.is_some() })
        .collect())
}

async fn current_policy<K: Object>(client: &Client, owner: &Owner) -> Result<Option<Policy>, ClientError> {
    Ok(match client.get::<K>(Some(&owner.namespace), &owner.name).await? {
        Some(o) if o.metadata().uid.as_deref() == Some(owner.uid.as_str()) => policy_of(o.metadata()),
        _ => None,
    })
}

fn unown<K: Object>(uid: &str) -> impl Fn(&mut K) + '_ {
    move |o: &mut K| {
        let m = o.metadata_mut();
        if let Some(refs) = m.owner_references.as_mut() {
            refs.retain(|r| r.uid != uid);
            if refs.is_empty() {
                m.owner_references = None;
            }
        }
    }
}

/// Marks an owner-kind dependent for Foreground deletion, so its own dependents go first.
fn mark_foreground<K: Object>(o: &mut K) {
    let m = o.metadata_mut();
    if m.deletion_timestamp.is_none() {
        m.deletion_timestamp = Some(schema::object::now());
        m.deletion_grace_period_seconds = Some(0);
        m.finalizers.get_or_insert_with(Vec::new).push(FOREGROUND_FINALIZER.to_string());
    }
}

fn drop_finalizer<K: Object>(policy: Policy) -> impl Fn(&mut K) {
    let f = if policy == Policy::Orphan { ORPHAN_FINALIZER } else { FOREGROUND_FINALIZER };
    move |o: &mut K| {
        if let Some(fins) = o.metadata_mut().finalizers.as_mut() {
            fins.retain(|x| x != f);
        }
    }
}

fn failed(o: Outcome) -> Result<(), ClientError> {
    match o {
        Outcome::Failed(e) => Err(ClientError::Other(e)),
        _ => Ok(()),
    }
}

/// One pass over an owner being deleted: reads it and its dependents fresh, carries out
/// the plan. Returns true when the owner is done with (finished, gone, or no longer
/// waiting); false when dependents are still on their way out.
pub async fn pass(client: &Client, owner: &Owner) -> Result<bool, ClientError> {
    let ns = Some(owner.namespace.as_str());
    let policy = match owner.kind {
        "Deployment" => current_policy::<Deployment>(client, owner).await?,
        "ReplicaSet" => current_policy::<ReplicaSet>(client, owner).await?,
        _ => None,
    };
    let Some(policy) = policy else { return Ok(true) };
    let deps = match dependent_kind(owner.kind) {
        Some("ReplicaSet") => list_deps::<ReplicaSet>(client, owner, "ReplicaSet").await?,
        Some("Pod") => list_deps::<Pod>(client, owner, "Pod").await?,
        _ => Vec::new(),
    };
    let mut finished = false;
    for step in plan(policy, &deps) {
        match step {
            Step::Unown(d) if d.kind == "ReplicaSet" => failed(update_outcome::<ReplicaSet, _>(client, ns, &d.name, unown(&owner.uid)).await)?,
            Step::Unown(d) => failed(update_outcome::<Pod, _>(client, ns, &d.name, unown(&owner.uid)).await)?,
            Step::Delete(d) if d.kind == "ReplicaSet" => failed(update_outcome::<ReplicaSet, _>(client, ns, &d.name, mark_foreground).await)?,
            Step::Delete(d) => {
                if let Some(p) = client.get::<Pod>(ns, &d.name).await? {
                    delete_pod_gracefully(client, &p).await?;
                }
            }
            Step::Finish => {
                let out = match owner.kind {
                    "Deployment" => update_outcome::<Deployment, _>(client, ns, &owner.name, drop_finalizer(policy)).await,
                    _ => update_outcome::<ReplicaSet, _>(client, ns, &owner.name, drop_finalizer(policy)).await,
                };
                failed(out)?;
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
        Dep { kind: "Pod", name: name.into(), deleting }
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
        let mut m = ObjectMeta { finalizers: Some(vec![ORPHAN_FINALIZER.into()]), ..Default::default() };
        assert_eq!(policy_of(&m), None, "not being deleted");
        m.deletion_timestamp = Some(schema::object::now());
        assert_eq!(policy_of(&m), Some(Policy::Orphan));
        m.finalizers = Some(vec!["example.com/x".into(), FOREGROUND_FINALIZER.into()]);
        assert_eq!(policy_of(&m), Some(Policy::Foreground));
        m.finalizers = None;
        assert_eq!(policy_of(&m), None);
    }
}
