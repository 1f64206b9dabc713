//! The namespace controller: a namespace marked for deletion has everything in it deleted
//! (pods gracefully, so their node agents stop them first), then the namespace itself.
//! `leftovers` is the pure decision; the actor sweeps until nothing is left.

use super::{delete_pod_gracefully, ControllerMsg};
use actix::prelude::*;
use bus::informer::InformerEvent;
use bus::Client;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use schema::registry::RESOURCES;
use schema::store::{ReadOp, ReadResult, Stored, WriteOp};
use schema::{keys, object};
use std::collections::{BTreeSet, HashSet};
use std::time::Duration;

const ACTOR: &str = "namespace-controller";
/// How soon a namespace whose content is still going away is swept again.
const RESWEEP: Duration = Duration::from_millis(500);

/// What a sweep does with one stored object of a terminating namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Delete it now (CAS on the revision seen).
    Delete,
    /// A pod: mark it for graceful deletion, its node agent removes it.
    DeletePodGracefully,
    /// Already on its way out; wait.
    Wait,
}

pub fn step(kind: &str, obj: &serde_json::Value) -> Step {
    let terminating = obj.pointer("/metadata/deletionTimestamp").is_some_and(|d| !d.is_null());
    match (kind, terminating) {
        ("Pod", true) => Step::Wait,
        ("Pod", false) => Step::DeletePodGracefully,
        _ => Step::Delete,
    }
}

pub struct NamespaceController {
    client: Client,
    terminating: BTreeSet<String>,
    busy: HashSet<String>,
}

#[derive(Message)]
#[rtype(result = "()")]
struct Swept {
    ns: String,
    empty: bool,
}

impl NamespaceController {
    pub fn new(client: Client) -> Self {
        let client = client.named(ACTOR);
        NamespaceController { client, terminating: BTreeSet::new(), busy: HashSet::new() }
    }

    fn kick(&mut self, ctx: &mut Context<Self>) {
        let ready: Vec<String> = self.terminating.iter().filter(|n| !self.busy.contains(*n)).cloned().collect();
        for ns in ready {
            self.busy.insert(ns.clone());
            let client = self.client.clone();
            let addr = ctx.address();
            tokio::spawn(async move {
                let empty = sweep(&client, &ns).await;
                addr.do_send(Swept { ns, empty });
            });
        }
    }
}

async fn list(client: &Client, prefix: String) -> Vec<Stored> {
    match client.bus.read(&ReadOp::List { prefix, start_after: None, limit: 0, at: None }).await {
        Ok(ReadResult::List { items, .. }) => items,
        _ => Vec::new(),
    }
}

/// One pass over the namespace; true once nothing is left and the namespace is gone.
async fn sweep(client: &Client, ns: &str) -> bool {
    let mut left = 0usize;
    for res in RESOURCES.iter().filter(|r| r.namespaced && schema::registry::is_stored(r)) {
        for item in list(client, keys::prefix(res.plural, Some(ns))).await {
            left += 1;
            let Ok(v) = object::from_stored(&item) else { continue };
            let r = match step(res.kind, &v) {
                Step::Wait => Ok(()),
                Step::Delete => client.bus.write(&WriteOp::Delete { key: item.key.clone(), expected_rev: Some(item.rev) }).await.map(drop).map_err(|e| e.to_string()),
                Step::DeletePodGracefully => match object::from_value::<Pod>(v) {
                    Ok(p) => delete_pod_gracefully(client, &p).await.map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                },
            };
            if let Err(e) = r {
                tracing::debug!(key = %item.key, error = %e, "namespace sweep: will retry");
            }
        }
    }
    if left > 0 {
        return false;
    }
    match client.delete::<Namespace>(None, ns, None).await {
        Ok(_) => true,
        Err(e) if e.is_not_found() => true,
        Err(e) => {
            tracing::warn!(namespace = ns, error = %e, "removing an empty namespace failed");
            false
        }
    }
}

impl Actor for NamespaceController {
    type Context = Context<Self>;
}

impl StreamHandler<InformerEvent<Namespace>> for NamespaceController {
    fn handle(&mut self, ev: InformerEvent<Namespace>, ctx: &mut Context<Self>) {
        bus::metrics::handle(ACTOR, || {
            let deleting = |n: &Namespace| n.metadata.deletion_timestamp.is_some();
            match ev {
                InformerEvent::Listed(items, _) => {
                    self.terminating = items.iter().filter(|n| deleting(n)).filter_map(|n| n.metadata.name.clone()).collect();
                }
                InformerEvent::Applied(n, _) => {
                    if deleting(&n) {
                        self.terminating.extend(n.metadata.name);
                    }
                }
                InformerEvent::Deleted(n, _) => {
                    if let Some(name) = n.metadata.name {
                        self.terminating.remove(&name);
                    }
                }
            }
            self.kick(ctx);
        })
    }
    fn finished(&mut self, _: &mut Context<Self>) {}
}

impl Handler<Swept> for NamespaceController {
    type Result = ();
    fn handle(&mut self, m: Swept, ctx: &mut Context<Self>) {
        bus::metrics::handle(ACTOR, || {
            self.busy.remove(&m.ns);
            if m.empty {
                self.terminating.remove(&m.ns);
            } else {
                ctx.run_later(RESWEEP, |act, ctx| act.kick(ctx));
            }
        })
    }
}

impl Handler<ControllerMsg> for NamespaceController {
    type Result = ();
    fn handle(&mut self, m: ControllerMsg, ctx: &mut Context<Self>) {
        if let ControllerMsg::Stop = m {
            ctx.stop();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pods_go_gracefully_everything_else_at_once() {
        assert_eq!(step("Pod", &json!({"metadata": {"name": "p"}})), Step::DeletePodGracefully);
        assert_eq!(step("Pod", &json!({"metadata": {"name": "p", "deletionTimestamp": "2026-01-01T00:00:00Z"}})), Step::Wait);
        assert_eq!(step("ConfigMap", &json!({"metadata": {"name": "c"}})), Step::Delete);
    }
}
