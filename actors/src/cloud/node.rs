//! The cloud-controller-manager's node controller, for nodes whose kubelet runs with
//! `--cloud-provider external`: such a Node registers tainted uninitialized; the
//! provider says what instance it is (providerID, addresses), this writes that into the
//! Node and lifts the taint, and only then do pods get scheduled there.

use super::ProviderError;
use crate::controllers::{update_outcome, Outcome};
use bus::informer::{watch_objects, InformerEvent, Scope};
use bus::Client;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, NodeAddress};
use schema::plugins::tolerations::CLOUD_UNINITIALIZED;
use std::future::Future;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

const ACTOR: &str = "cloud-node-controller";

/// What the cloud knows of one machine.
#[derive(Debug, Clone, PartialEq)]
pub struct Instance {
    pub provider_id: String,
    /// Empty: keep what the kubelet reported.
    pub addresses: Vec<NodeAddress>,
}

/// The cloud-provider's `InstancesV2`, as far as initialization needs it.
pub trait InstancesProvider: Send + 'static {
    fn instance(&mut self, node: &Node) -> impl Future<Output = Result<Instance, ProviderError>> + Send;
}

/// The local machine as the cloud: every node is an instance named after itself, at the
/// addresses its agent reported.
pub struct LocalInstances;

pub const LOCAL_PROVIDER_PREFIX: &str = "flotilla://";

impl InstancesProvider for LocalInstances {
    async fn instance(&mut self, node: &Node) -> Result<Instance, ProviderError> {
        let name = node.metadata.name.as_deref().unwrap_or("");
        Ok(Instance { provider_id: format!("{LOCAL_PROVIDER_PREFIX}{name}"), addresses: Vec::new() })
    }
}

pub fn uninitialized(node: &Node) -> bool {
    node.spec.as_ref().and_then(|s| s.taints.as_ref()).is_some_and(|t| t.iter().any(|t| t.key == CLOUD_UNINITIALIZED))
}

/// The Node once initialized (pure): providerID set when it has none, the instance's
/// addresses when it has some, the taint gone.
pub fn initialize(node: &mut Node, inst: &Instance) {
    let spec = node.spec.get_or_insert_with(Default::default);
    if spec.provider_id.as_deref().is_none_or(str::is_empty) {
        spec.provider_id = Some(inst.provider_id.clone());
    }
    if let Some(t) = spec.taints.as_mut() {
        t.retain(|t| t.key != CLOUD_UNINITIALIZED);
    }
    if spec.taints.as_ref().is_some_and(Vec::is_empty) {
        spec.taints = None;
    }
    if !inst.addresses.is_empty() {
        node.status.get_or_insert_with(Default::default).addresses = Some(inst.addresses.clone());
    }
}

pub fn start<P: InstancesProvider>(client: Client, mut provider: P, stop: CancellationToken) -> tokio::task::JoinHandle<()> {
    let span = tracing::info_span!("actor", actor = ACTOR);
    // Made before the task runs, so they join the process's shared informers.
    let mut events = watch_objects::<Node>(client.clone(), Scope::default()).boxed();
    tokio::spawn(
        async move {
            loop {
                let ev = tokio::select! {
                    _ = stop.cancelled() => return,
                    Some(ev) = events.next() => ev,
                    else => return,
                };
                let todo: Vec<Node> = match ev {
                    InformerEvent::Listed(items, _) => items.into_iter().filter(uninitialized).collect(),
                    InformerEvent::Applied(n, _) if uninitialized(&n) => vec![n],
                    _ => continue,
                };
                let started = std::time::Instant::now();
                for node in todo {
                    let name = node.metadata.name.clone().unwrap_or_default();
                    let inst = match provider.instance(&node).await {
                        Ok(i) => i,
                        Err(e) => {
                            // The kubelet's node stays unschedulable; its next update retries.
                            tracing::warn!(node = %name, error = %e, "cloud provider does not know the node");
                            continue;
                        }
                    };
                    match update_outcome::<Node, _>(&client, None, &name, |n| initialize(n, &inst)).await {
                        Outcome::Written => tracing::info!(node = %name, provider_id = %inst.provider_id, "node initialized by the cloud provider"),
                        Outcome::Failed(e) => tracing::warn!(node = %name, error = %e, "initializing the node failed"),
                        _ => {}
                    }
                }
                bus::metrics::handled(ACTOR, started.elapsed());
            }
        }
        .instrument(span),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{NodeSpec, Taint};

    fn node(taints: &[&str]) -> Node {
        let taints = taints.iter().map(|k| Taint { key: k.to_string(), effect: "NoSchedule".into(), value: Some("true".into()), ..Default::default() }).collect();
        Node { metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta { name: Some("n1".into()), ..Default::default() }, spec: Some(NodeSpec { taints: Some(taints), ..Default::default() }), ..Default::default() }
    }

    #[tokio::test]
    async fn initialization_sets_the_provider_id_and_lifts_only_its_taint() {
        let mut n = node(&[CLOUD_UNINITIALIZED, "dedicated"]);
        assert!(uninitialized(&n));
        let inst = LocalInstances.instance(&n).await.unwrap();
        initialize(&mut n, &inst);
        let spec = n.spec.as_ref().unwrap();
        assert_eq!(spec.provider_id.as_deref(), Some("flotilla://n1"));
        assert_eq!(spec.taints.as_ref().unwrap().iter().map(|t| t.key.as_str()).collect::<Vec<_>>(), vec!["dedicated"]);
        assert!(!uninitialized(&n));
        let mut only = node(&[CLOUD_UNINITIALIZED]);
        initialize(&mut only, &inst);
        assert_eq!(only.spec.unwrap().taints, None);
    }

    #[test]
    fn a_provider_id_already_set_is_kept_and_addresses_replace_when_given() {
        let mut n = node(&[CLOUD_UNINITIALIZED]);
        n.spec.as_mut().unwrap().provider_id = Some("aws:///i-1".into());
        let addr = NodeAddress { type_: "InternalIP".into(), address: "10.0.0.5".into() };
        initialize(&mut n, &Instance { provider_id: "flotilla://n1".into(), addresses: vec![addr.clone()] });
        assert_eq!(n.spec.unwrap().provider_id.as_deref(), Some("aws:///i-1"));
        assert_eq!(n.status.unwrap().addresses, Some(vec![addr]));
    }
}
