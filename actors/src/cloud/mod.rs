//! The cloud-controller-manager's service controller: `type: LoadBalancer` Services get
//! a balancer from a provider behind [`LoadBalancerProvider`], and its addresses in
//! `status.loadBalancer.ingress`; the balancer goes when the Service does or changes
//! type. The decisions are pure (`reconcile`, `status_change`); the task around them
//! only feeds informer events in and carries the steps out. `local` is the provider
//! that hands out addresses from a pool on this machine; `node` initializes the Nodes
//! of kubelets run with `--cloud-provider external`.

pub mod local;
pub mod node;

use crate::controllers::{update_outcome, Outcome};
use bus::informer::{watch_objects, InformerEvent, Scope};
use bus::Client;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{LoadBalancerIngress, LoadBalancerStatus, ObjectReference, Service};
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

const ACTOR: &str = "cloud-controller";
/// A Service whose balancer could not be made is tried again this soon.
const RETRY: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum ProviderError {
    /// The provider's own settings are wrong: nothing can be served.
    #[error("{0}")]
    Config(String),
    /// This Service asks for something the provider will not give.
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    Exhausted(String),
}

/// What a cloud (or the local machine) must do for load-balancer Services, after the
/// cloud-provider's `LoadBalancer` interface. `key` is "namespace/name".
pub trait LoadBalancerProvider: Send + 'static {
    /// Makes or updates the Service's balancer; its addresses.
    fn ensure(&mut self, key: &str, svc: &Service) -> impl Future<Output = Result<Vec<LoadBalancerIngress>, ProviderError>> + Send;
    /// Takes the balancer down (nothing to do when there is none).
    fn release(&mut self, key: &str) -> impl Future<Output = ()> + Send;
    /// At start: a balancer an earlier run made, as the Service's status records it.
    fn adopt(&mut self, key: &str, ingress: &[LoadBalancerIngress]);
}

/// Whether this controller serves the Service: kube's default service controller leaves
/// those with a `loadBalancerClass` to the controller of that class.
pub fn wants_balancer(svc: &Service) -> bool {
    let Some(spec) = svc.spec.as_ref() else { return false };
    spec.type_.as_deref() == Some("LoadBalancer") && spec.load_balancer_class.as_deref().is_none_or(str::is_empty) && svc.metadata.deletion_timestamp.is_none()
}

fn ingress(svc: &Service) -> &[LoadBalancerIngress] {
    svc.status.as_ref().and_then(|s| s.load_balancer.as_ref()).and_then(|l| l.ingress.as_deref()).unwrap_or(&[])
}

#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    Ensure,
    /// Release the balancer; `clear_status` when the Service still shows its addresses.
    Release { clear_status: bool },
}

/// The step for one Service key (None: deleted), given whether a balancer is held.
pub fn reconcile(svc: Option<&Service>, held: bool) -> Option<Step> {
    match svc {
        Some(s) if wants_balancer(s) => Some(Step::Ensure),
        Some(s) if held || !ingress(s).is_empty() => Some(Step::Release { clear_status: !ingress(s).is_empty() }),
        None if held => Some(Step::Release { clear_status: false }),
        _ => None,
    }
}

/// The status to write, or None when the Service already shows these addresses.
pub fn status_change(svc: &Service, want: &[LoadBalancerIngress]) -> Option<LoadBalancerStatus> {
    (ingress(svc) != want).then(|| LoadBalancerStatus { ingress: (!want.is_empty()).then(|| want.to_vec()) })
}

fn key(svc: &Service) -> String {
    format!("{}/{}", svc.metadata.namespace.as_deref().unwrap_or(""), svc.metadata.name.as_deref().unwrap_or(""))
}

fn event(client: &Client, svc: &Service, type_: &str, reason: &str, message: &str) {
    let m = &svc.metadata;
    let involved = ObjectReference { api_version: Some("v1".into()), kind: Some("Service".into()), namespace: m.namespace.clone(), name: m.name.clone(), uid: m.uid.clone(), resource_version: m.resource_version.clone(), ..Default::default() };
    bus::events::record(client, bus::events::event(involved, type_, reason, message, "service-controller"));
}

struct Controller<P> {
    client: Client,
    provider: P,
    services: BTreeMap<String, Service>,
    /// Keys the provider holds a balancer for.
    held: BTreeSet<String>,
    failed: BTreeSet<String>,
}

impl<P: LoadBalancerProvider> Controller<P> {
    async fn sync(&mut self, k: &str) {
        let svc = self.services.get(k).cloned();
        let step = reconcile(svc.as_ref(), self.held.contains(k));
        self.failed.remove(k);
        let Some(step) = step else { return };
        let (ns, name) = k.split_once('/').unwrap_or(("", k));
        let want = match step {
            Step::Ensure => {
                let Some(svc) = svc.as_ref() else { return };
                match self.provider.ensure(k, svc).await {
                    Ok(want) => {
                        self.held.insert(k.to_string());
                        want
                    }
                    Err(e) => {
                        tracing::warn!(service = k, error = %e, "ensuring the load balancer failed");
                        event(&self.client, svc, "Warning", "SyncLoadBalancerFailed", &format!("Error syncing load balancer: failed to ensure load balancer: {e}"));
                        self.failed.insert(k.to_string());
                        return;
                    }
                }
            }
            Step::Release { clear_status } => {
                self.provider.release(k).await;
                self.held.remove(k);
                tracing::info!(service = k, "load balancer released");
                if !clear_status {
                    return;
                }
                Vec::new()
            }
        };
        let Some(svc) = svc else { return };
        if status_change(&svc, &want).is_none() {
            return;
        }
        let w = want.clone();
        let out = update_outcome::<Service, _>(&self.client, Some(ns), name, move |s| {
            if let Some(next) = status_change(s, &w) {
                s.status.get_or_insert_with(Default::default).load_balancer = Some(next);
            }
        })
        .await;
        match out {
            Outcome::Written if !want.is_empty() => {
                let ips: Vec<&str> = want.iter().filter_map(|i| i.ip.as_deref()).collect();
                tracing::info!(service = k, ingress = ?ips, "load balancer ensured");
                event(&self.client, &svc, "Normal", "EnsuredLoadBalancer", "Ensured load balancer");
            }
            Outcome::Failed(e) => {
                tracing::warn!(service = k, error = %e, "writing the load balancer status failed");
                self.failed.insert(k.to_string());
            }
            _ => {}
        }
    }
}

/// Runs the controller until `stop`.
pub fn start<P: LoadBalancerProvider>(client: Client, provider: P, stop: CancellationToken) -> tokio::task::JoinHandle<()> {
    let span = tracing::info_span!("actor", actor = ACTOR);
    // Made before the task runs, so they join the process's shared informers.
    let mut events = watch_objects::<Service>(client.clone(), Scope::default()).boxed();
    tokio::spawn(
        async move {
            let mut c = Controller { client, provider, services: BTreeMap::new(), held: BTreeSet::new(), failed: BTreeSet::new() };
            let mut listed = false;
            loop {
                let retry = async {
                    if c.failed.is_empty() {
                        std::future::pending::<()>().await
                    }
                    tokio::time::sleep(RETRY).await
                };
                let ev = tokio::select! {
                    _ = stop.cancelled() => return,
                    Some(ev) = events.next() => Some(ev),
                    _ = retry => None,
                    else => return,
                };
                let started = std::time::Instant::now();
                let todo: Vec<String> = match ev {
                    None => c.failed.iter().cloned().collect(),
                    Some(InformerEvent::Listed(items, _)) => {
                        let before: BTreeSet<String> = c.services.keys().cloned().collect();
                        c.services = items.into_iter().map(|s| (key(&s), s)).collect();
                        if !listed {
                            // What earlier runs handed out is in the statuses: the provider
                            // takes it back before anything new is given.
                            for (k, s) in c.services.iter().filter(|(_, s)| wants_balancer(s) && !ingress(s).is_empty()) {
                                c.provider.adopt(k, ingress(s));
                                c.held.insert(k.clone());
                            }
                            listed = true;
                        }
                        before.into_iter().chain(c.services.keys().cloned()).chain(c.held.iter().cloned()).collect::<BTreeSet<_>>().into_iter().collect()
                    }
                    Some(InformerEvent::Applied(s, _)) => {
                        let k = key(&s);
                        c.services.insert(k.clone(), s);
                        vec![k]
                    }
                    Some(InformerEvent::Deleted(s, _)) => {
                        let k = key(&s);
                        c.services.remove(&k);
                        vec![k]
                    }
                };
                for k in todo {
                    c.sync(&k).await;
                }
                bus::metrics::handled(ACTOR, started.elapsed());
            }
        }
        .instrument(span),
    )
}

#[cfg(test)]
mod tests;
