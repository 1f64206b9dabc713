//! Hollow nodes, as kubemark's hollow kubelets and kwok's fake nodes: many node agents in
//! one process, each with the real kubelet (registration, heartbeats, admission, the pod
//! lifecycle, status writes) over the simulated runtime, so the control plane can be
//! driven at scale without a process per pod. They share one bus connection and one pod
//! watch, fanned out by `spec.nodeName`: N agents cost the bus one consumer, not N.

use crate::kubelet::{self, Kubelet};
use crate::runtime::{self, simulated::SimulatedRuntime, Runtime};
use crate::NodeConfig;
use actix::prelude::*;
use bus::informer::{watch_objects, InformerEvent, Scope};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Pod;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// How many nodes register at once (each is a read and a write to the store).
const REGISTER_AT_ONCE: usize = 32;

#[derive(Debug, Clone)]
pub struct HollowConfig {
    pub count: u32,
    pub name_prefix: String,
    pub cpu_millis: u64,
    pub memory_bytes: u64,
    pub max_pods: u32,
    /// How long a container takes to "start".
    pub start_delay: Duration,
    pub heartbeat: Duration,
}

impl HollowConfig {
    pub fn node_name(&self, i: u32) -> String {
        format!("{}{i}", self.name_prefix)
    }

    fn node_config(&self, i: u32) -> NodeConfig {
        let name = self.node_name(i);
        let mut cfg = NodeConfig::from_host(name, std::env::temp_dir().join("flotilla-hollow"));
        cfg.cpu_millis = self.cpu_millis;
        cfg.memory_bytes = self.memory_bytes;
        cfg.max_pods = self.max_pods;
        cfg.heartbeat = self.heartbeat;
        cfg.runtime = crate::RuntimeKind::Simulated;
        cfg.container_runtime_version = "simulated://0.1".into();
        // As kwok marks its nodes, so selectors can tell them from real ones.
        cfg.labels.insert("type".into(), "hollow".into());
        // Documentation addresses (RFC 5737): never routed.
        cfg.host_ip = format!("192.0.2.{}", i % 254 + 1);
        cfg
    }
}

pub struct Hollow {
    kubelets: Vec<Addr<Kubelet>>,
    stop: CancellationToken,
}

/// Which hollow node gets an event of the shared pod watch, and what it gets. A pod is
/// delivered to the node it is bound to; one bound to none of them (or to none yet) to
/// nobody. Pure, so the fan-out is tested without a bus.
pub fn route(ev: InformerEvent<Pod>, nodes: &HashMap<String, usize>) -> Vec<(usize, InformerEvent<Pod>)> {
    let node_of = |p: &Pod| p.spec.as_ref().and_then(|s| s.node_name.as_deref()).and_then(|n| nodes.get(n)).copied();
    match ev {
        InformerEvent::Listed(pods, rev) => {
            let mut per: Vec<Vec<Pod>> = vec![Vec::new(); nodes.len()];
            for p in pods {
                if let Some(i) = node_of(&p) {
                    per[i].push(p);
                }
            }
            // Every node gets its (maybe empty) list: a relist tells each what is gone.
            per.into_iter().enumerate().map(|(i, ps)| (i, InformerEvent::Listed(ps, rev))).collect()
        }
        InformerEvent::Applied(p, rev) => node_of(&p).map(|i| vec![(i, InformerEvent::Applied(p, rev))]).unwrap_or_default(),
        InformerEvent::Deleted(p, rev) => node_of(&p).map(|i| vec![(i, InformerEvent::Deleted(p, rev))]).unwrap_or_default(),
    }
}

/// Registers `cfg.count` nodes and runs their kubelets. Call inside an actix System.
pub async fn start(cfg: HollowConfig, bus: bus::Bus) -> anyhow::Result<Hollow> {
    let client = bus::Client::new(bus);
    let configs: Vec<NodeConfig> = (0..cfg.count).map(|i| cfg.node_config(i)).collect();
    futures::stream::iter(configs.iter().map(|c| {
        let client = client.clone();
        async move { kubelet::node::register(&client, c).await.map_err(|e| anyhow::anyhow!("registering node {}: {e}", c.name)) }
    }))
    .buffer_unordered(REGISTER_AT_ONCE)
    .try_collect::<Vec<()>>()
    .await?;
    tracing::info!(nodes = cfg.count, prefix = %cfg.name_prefix, "hollow nodes registered");

    let stop = CancellationToken::new();
    let runtime: Arc<dyn Runtime> = Arc::new(SimulatedRuntime::with_start_delay(cfg.start_delay));
    let pressures = kubelet::eviction::Shared::default();
    let mut senders = Vec::with_capacity(configs.len());
    let mut kubelets = Vec::with_capacity(configs.len());
    let index: HashMap<String, usize> = configs.iter().enumerate().map(|(i, c)| (c.name.clone(), i)).collect();
    for c in &configs {
        let span = tracing::info_span!("kubelet", node = %c.name);
        tokio::spawn(kubelet::node::heartbeat(client.clone(), c.clone(), runtime.clone(), pressures.clone(), stop.clone()).instrument(span));
        // Unbounded: one busy kubelet must not hold back the others' events.
        let (tx, rx) = futures::channel::mpsc::unbounded::<InformerEvent<Pod>>();
        senders.push(tx);
        let runtimes = runtime::Runtimes::new(runtime.clone(), vec![]);
        let mut k = Kubelet::new(c.name.clone(), c.host_ip.clone(), c.data_dir.clone(), client.clone(), runtimes);
        k.allocatable = kubelet::admission::Allocatable { cpu_millis: c.cpu_millis, memory_bytes: c.memory_bytes, pods: u64::from(c.max_pods) };
        kubelets.push(Kubelet::create(move |ctx| {
            ctx.add_stream(rx);
            k
        }));
    }
    let mut pods = Box::pin(watch_objects::<Pod>(client, Scope::default()));
    let fan_stop = stop.clone();
    tokio::spawn(
        async move {
            loop {
                let ev = tokio::select! {
                    _ = fan_stop.cancelled() => return,
                    ev = pods.next() => match ev { Some(ev) => ev, None => return },
                };
                for (i, ev) in route(ev, &index) {
                    let _ = senders[i].unbounded_send(ev);
                }
            }
        }
        .instrument(tracing::info_span!("hollow-nodes")),
    );
    Ok(Hollow { kubelets, stop })
}

impl Hollow {
    /// Stops every hollow kubelet (their simulated containers end at once); the nodes stay
    /// in the store and go NotReady as any node whose agent stopped.
    pub async fn shutdown(self) {
        self.stop.cancel();
        futures::future::join_all(self.kubelets.iter().map(|k| k.send(kubelet::Shutdown { grace: Duration::ZERO }))).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, node: Option<&str>) -> Pod {
        let mut p = Pod::default();
        p.metadata.name = Some(name.into());
        p.spec = Some(k8s_openapi::api::core::v1::PodSpec { node_name: node.map(Into::into), ..Default::default() });
        p
    }

    fn names(ev: &InformerEvent<Pod>) -> Vec<String> {
        match ev {
            InformerEvent::Listed(ps, _) => ps.iter().map(|p| p.metadata.name.clone().unwrap()).collect(),
            InformerEvent::Applied(p, _) | InformerEvent::Deleted(p, _) => vec![p.metadata.name.clone().unwrap()],
        }
    }

    #[test]
    fn each_node_gets_only_its_own_pods() {
        let nodes: HashMap<String, usize> = [("h0".to_string(), 0), ("h1".to_string(), 1)].into();
        let listed = route(InformerEvent::Listed(vec![pod("a", Some("h0")), pod("b", Some("h1")), pod("c", None), pod("d", Some("real-1")), pod("e", Some("h0"))], 7), &nodes);
        let got: Vec<(usize, Vec<String>)> = listed.iter().map(|(i, ev)| (*i, names(ev))).collect();
        assert_eq!(got, vec![(0, vec!["a".to_string(), "e".to_string()]), (1, vec!["b".to_string()])]);
        assert_eq!(route(InformerEvent::Applied(pod("c", None), 8), &nodes).len(), 0, "unscheduled: nobody's yet");
        let bound = route(InformerEvent::Applied(pod("c", Some("h1")), 9), &nodes);
        assert_eq!(bound.iter().map(|(i, ev)| (*i, names(ev))).collect::<Vec<_>>(), vec![(1, vec!["c".to_string()])]);
        assert!(matches!(route(InformerEvent::Deleted(pod("a", Some("h0")), 10), &nodes)[..], [(0, InformerEvent::Deleted(_, 10))]));
        assert!(route(InformerEvent::Deleted(pod("d", Some("real-1")), 11), &nodes).is_empty());
    }

    #[test]
    fn every_node_hears_a_relist_even_when_empty() {
        let nodes: HashMap<String, usize> = [("h0".to_string(), 0), ("h1".to_string(), 1)].into();
        let listed = route(InformerEvent::Listed(vec![], 3), &nodes);
        assert_eq!(listed.len(), 2);
    }
}
