//! The garbage collector: dependents whose controlling owner is gone are deleted
//! (Background propagation). It confirms each owner's absence with a fresh read from the
//! store before deleting, because its informers for owners and dependents are separate
//! streams and one may lag the other. An owner's deletion looks only at that owner's
//! dependents; the whole graph is swept after a (re)list and on the periodic resync.
//! Owners deleted with the Orphan or Foreground policy wait for this collector behind
//! their finalizer (see `propagation`); it runs one pass per such owner at a time, again
//! whenever one of its dependents changes, and on every resync.
//! Not yet: owners of kinds other than Deployment and ReplicaSet.

use super::propagation::{self, Owner};
use super::{delete_pod_gracefully, owner_ref, ControllerMsg};
use actix::prelude::*;
use bus::informer::InformerEvent;
use bus::Client;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use std::collections::{HashMap, HashSet};

const ACTOR: &str = "garbage-collector";

/// A dependent: its kind, namespace, name and its controlling owner (kind, name, uid).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Dependent {
    pub kind: &'static str,
    pub namespace: String,
    pub name: String,
    pub owner_kind: String,
    pub owner_name: String,
    pub owner_uid: String,
}

/// The owner kinds this collector can confirm gone; dependents of others are left alone.
pub const OWNER_KINDS: &[&str] = &["Deployment", "ReplicaSet"];

/// Dependents whose owner uid is not among the live owners.
pub fn orphans<'a>(owners: &HashSet<String>, dependents: impl IntoIterator<Item = &'a Dependent>) -> Vec<Dependent> {
    dependents.into_iter().filter(|d| !owners.contains(&d.owner_uid) && OWNER_KINDS.contains(&d.owner_kind.as_str())).cloned().collect()
}

pub struct GarbageCollector {
    /// How often every object is reconciled again, events or not.
    resync: std::time::Duration,
    client: Client,
    owners: HashSet<String>,
    dependents: HashMap<(String, String, &'static str), Dependent>,
    /// Dependent ids by owner uid, so a deleted owner finds its dependents directly.
    by_owner: HashMap<String, HashSet<(String, String, &'static str)>>,
    in_flight: HashSet<Dependent>,
    listed: HashSet<&'static str>,
    /// Owners being deleted with Orphan or Foreground, by uid.
    finalizing: HashMap<String, Owner>,
    /// Owners with a pass under way, and whether another was asked for meanwhile.
    passes: HashMap<String, bool>,
}

impl GarbageCollector {
    /// Reconciles everything again every `d` (kube-controller-manager's resync), besides events.
    pub fn resync_every(mut self, d: std::time::Duration) -> Self {
        self.resync = d;
        self
    }

    pub fn new(client: Client) -> Self {
        GarbageCollector { resync: super::RESYNC, client, owners: HashSet::new(), dependents: HashMap::new(), by_owner: HashMap::new(), in_flight: HashSet::new(), listed: HashSet::new(), finalizing: HashMap::new(), passes: HashMap::new() }
    }

    fn track<K: bus::client::Object>(&mut self, kind: &'static str, obj: &K, present: bool) {
        let m = obj.metadata();
        let id = (m.namespace.clone().unwrap_or_default(), m.name.clone().unwrap_or_default(), kind);
        self.untrack(&id);
        if !present {
            return;
        }
        // A bound pod already terminating is its node agent's to finish.
        if m.deletion_timestamp.is_some() {
            return;
        }
        if let Some((owner_kind, owner_name, owner_uid)) = owner_ref(m) {
            if OWNER_KINDS.contains(&owner_kind.as_str()) {
                self.by_owner.entry(owner_uid.clone()).or_default().insert(id.clone());
                self.dependents.insert(id.clone(), Dependent { kind, namespace: id.0, name: id.1, owner_kind, owner_name, owner_uid });
            }
        }
    }

    /// Keeps `finalizing` up to date from an owner-kind event, and wakes the pass of the
    /// owner a dependent event is about.
    fn observe(&mut self, kind: &'static str, m: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta, present: bool, ctx: &mut Context<Self>) {
        let uid = m.uid.clone().unwrap_or_default();
        if propagation::dependent_kind(kind).is_some() {
            if present && propagation::policy_of(m).is_some() {
                let owner = Owner { kind, namespace: m.namespace.clone().unwrap_or_default(), name: m.name.clone().unwrap_or_default(), uid: uid.clone() };
                self.finalizing.insert(uid.clone(), owner);
                self.start_pass(&uid, ctx);
            } else {
                self.finalizing.remove(&uid);
            }
        }
        for r in m.owner_references.as_deref().unwrap_or_default() {
            if self.finalizing.contains_key(&r.uid) {
                self.start_pass(&r.uid.clone(), ctx);
            }
        }
    }

    fn start_pass(&mut self, uid: &str, ctx: &mut Context<Self>) {
        if let Some(again) = self.passes.get_mut(uid) {
            *again = true;
            return;
        }
        let Some(owner) = self.finalizing.get(uid).cloned() else { return };
        self.passes.insert(uid.to_string(), false);
        let client = self.client.clone();
        let addr = ctx.address();
        tokio::spawn(async move {
            let finished = match propagation::pass(&client, &owner).await {
                Ok(f) => f,
                Err(e) => {
                    tracing::warn!(owner = %owner.name, error = %e, "finishing an orphan or foreground deletion failed; retried on resync");
                    false
                }
            };
            addr.do_send(PassDone { uid: owner.uid, finished });
        });
    }

    fn untrack(&mut self, id: &(String, String, &'static str)) {
        if let Some(old) = self.dependents.remove(id) {
            if let Some(s) = self.by_owner.get_mut(&old.owner_uid) {
                s.remove(id);
                if s.is_empty() {
                    self.by_owner.remove(&old.owner_uid);
                }
            }
        }
    }

    /// Until every kind has been listed once, a missing owner may just not be known yet.
    fn ready(&self) -> bool {
        self.listed.len() >= 3
    }

    /// Collects the orphans among everything tracked: after a list and on resync.
    fn sweep(&mut self, ctx: &mut Context<Self>) {
        if self.ready() {
            let found = orphans(&self.owners, self.dependents.values());
            self.collect_all(found, ctx);
        }
    }

    /// Collects the orphans among one owner's dependents: when that owner is deleted.
    fn sweep_owner(&mut self, uid: &str, ctx: &mut Context<Self>) {
        if !self.ready() {
            return;
        }
        let deps: Vec<Dependent> = self.by_owner.get(uid).map(|ids| ids.iter().filter_map(|id| self.dependents.get(id).cloned()).collect()).unwrap_or_default();
        let found = orphans(&self.owners, deps.iter());
        self.collect_all(found, ctx);
    }

    fn collect_all(&mut self, found: Vec<Dependent>, ctx: &mut Context<Self>) {
        for d in found {
            if !self.in_flight.insert(d.clone()) {
                continue;
            }
            let client = self.client.clone();
            let addr = ctx.address();
            tokio::spawn(async move {
                collect(&client, &d).await;
                addr.do_send(Collected(d));
            });
        }
    }
}

async fn owner_exists(client: &Client, d: &Dependent) -> bool {
    let r = match d.owner_kind.as_str() {
        "Deployment" => client.get::<Deployment>(Some(&d.namespace), &d.owner_name).await.map(|o| o.and_then(|o| o.metadata.uid)),
        "ReplicaSet" => client.get::<ReplicaSet>(Some(&d.namespace), &d.owner_name).await.map(|o| o.and_then(|o| o.metadata.uid)),
        _ => return true, // owners of kinds this collector does not know are left alone
    };
    match r {
        Ok(Some(uid)) => uid == d.owner_uid,
        Ok(None) => false,
        Err(_) => true, // unsure: keep the dependent
    }
}

async fn collect(client: &Client, d: &Dependent) {
    if owner_exists(client, d).await {
        return;
    }
    tracing::info!(kind = d.kind, namespace = %d.namespace, name = %d.name, owner = %d.owner_name, "deleting dependent of a deleted owner");
    let r = match d.kind {
        "ReplicaSet" => client.delete::<ReplicaSet>(Some(&d.namespace), &d.name, None).await.map(drop),
        "Pod" => match client.get::<Pod>(Some(&d.namespace), &d.name).await {
            Ok(Some(p)) => delete_pod_gracefully(client, &p).await,
            Ok(None) => Ok(()),
            Err(e) => Err(e),
        },
        _ => Ok(()),
    };
    if let Err(e) = r {
        if !e.is_not_found() {
            tracing::warn!(name = %d.name, error = %e, "garbage collection failed");
        }
    }
}

#[derive(Message)]
#[rtype(result = "()")]
struct Collected(Dependent);

#[derive(Message)]
#[rtype(result = "()")]
struct PassDone {
    uid: String,
    finished: bool,
}

impl Handler<PassDone> for GarbageCollector {
    type Result = ();
    fn handle(&mut self, m: PassDone, ctx: &mut Context<Self>) {
        bus::metrics::handle(ACTOR, || {
            let again = self.passes.remove(&m.uid).unwrap_or(false);
            if m.finished {
                self.finalizing.remove(&m.uid);
            } else if again {
                self.start_pass(&m.uid, ctx);
            }
        })
    }
}

impl Actor for GarbageCollector {
    type Context = Context<Self>;
    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(self.resync, |act, ctx| {
            bus::metrics::handle(ACTOR, || {
                act.sweep(ctx);
                let waiting: Vec<String> = act.finalizing.keys().cloned().collect();
                waiting.iter().for_each(|uid| act.start_pass(uid, ctx));
            })
        });
    }
}

macro_rules! owner_stream {
    ($kind:ty, $name:literal, $is_dependent:expr) => {
        impl StreamHandler<InformerEvent<$kind>> for GarbageCollector {
            fn handle(&mut self, ev: InformerEvent<$kind>, ctx: &mut Context<Self>) {
                bus::metrics::handle(ACTOR, || {
                    match ev {
                        InformerEvent::Listed(items, _) => {
                            self.listed.insert($name);
                            let stale: Vec<_> = self.dependents.keys().filter(|k| k.2 == $name).cloned().collect();
                            stale.iter().for_each(|k| self.untrack(k));
                            for o in &items {
                                self.observe($name, &o.metadata, true, ctx);
                                if let Some(uid) = o.metadata.uid.clone() {
                                    self.owners.insert(uid);
                                }
                                if $is_dependent {
                                    self.track($name, o, true);
                                }
                            }
                            self.sweep(ctx);
                        }
                        InformerEvent::Applied(o, _) => {
                            self.observe($name, &o.metadata, true, ctx);
                            if let Some(uid) = o.metadata.uid.clone() {
                                self.owners.insert(uid);
                            }
                            if $is_dependent {
                                self.track($name, &o, true);
                                // A dependent written after its owner was deleted.
                                let id = (o.metadata.namespace.clone().unwrap_or_default(), o.metadata.name.clone().unwrap_or_default(), $name);
                                if let Some(d) = self.dependents.get(&id).cloned() {
                                    if self.ready() {
                                        self.collect_all(orphans(&self.owners, [&d]), ctx);
                                    }
                                }
                            }
                        }
                        InformerEvent::Deleted(o, _) => {
                            self.observe($name, &o.metadata, false, ctx);
                            if $is_dependent {
                                self.track($name, &o, false);
                            }
                            if let Some(uid) = o.metadata.uid.clone() {
                                self.owners.remove(&uid);
                                self.sweep_owner(&uid, ctx);
                            }
                        }
                    }
                })
            }
            fn finished(&mut self, _: &mut Context<Self>) {}
        }
    };
}

owner_stream!(Deployment, "Deployment", false);
owner_stream!(ReplicaSet, "ReplicaSet", true);
owner_stream!(Pod, "Pod", true);

impl Handler<Collected> for GarbageCollector {
    type Result = ();
    fn handle(&mut self, m: Collected, _: &mut Context<Self>) {
        bus::metrics::handle(ACTOR, || {
            self.in_flight.remove(&m.0);
        })
    }
}

impl Handler<ControllerMsg> for GarbageCollector {
    type Result = ();
    fn handle(&mut self, m: ControllerMsg, ctx: &mut Context<Self>) {
        bus::metrics::handle(ACTOR, || {
            if let ControllerMsg::Stop = m {
                ctx.stop();
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dep(name: &str, owner_uid: &str) -> Dependent {
        Dependent { kind: "Pod", namespace: "demo".into(), name: name.into(), owner_kind: "ReplicaSet".into(), owner_name: "rs".into(), owner_uid: owner_uid.into() }
    }

    #[test]
    fn only_dependents_of_missing_owners_are_orphans() {
        let owners: HashSet<String> = ["alive".to_string()].into();
        let deps = [dep("a", "alive"), dep("b", "gone")];
        let o = orphans(&owners, deps.iter());
        assert_eq!(o, vec![dep("b", "gone")]);
    }

    #[test]
    fn owners_of_unknown_kinds_are_never_presumed_gone() {
        let mut by_job = dep("c", "job-uid");
        by_job.owner_kind = "Job".into();
        assert!(orphans(&HashSet::new(), [&by_job]).is_empty());
    }

    #[test]
    fn replicasets_of_a_deleted_deployment_are_orphans() {
        let rs = Dependent { kind: "ReplicaSet", namespace: "demo".into(), name: "web-5d9c7b8f6".into(), owner_kind: "Deployment".into(), owner_name: "web".into(), owner_uid: "d-uid".into() };
        let owners: HashSet<String> = ["rs-uid".to_string()].into();
        assert_eq!(orphans(&owners, [&rs, &dep("web-5d9c7b8f6-abcde", "rs-uid")]), vec![rs.clone()]);
    }
}
