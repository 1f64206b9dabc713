//! Resource metrics (the kubelet's cAdvisor part): every period the node agent reads what
//! each running container and the node have used, turns the CPU time into a rate over
//! the period, and publishes one `schema::metrics::NodeReport` on its node's metrics
//! subject, where gateways (`kubectl top`) and the HPA controller read it.

pub mod procfs;

use crate::kubelet::usage::{ListRunning, RunningContainer};
use crate::kubelet::Kubelet;
use actix::Addr;
use schema::metrics::{nanocores, ContainerUsage, NodeReport, PodUsage};
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How often figures are taken (the kubelet's housekeeping interval).
pub const PERIOD: Duration = Duration::from_secs(10);

/// The previous reading of each container instance, to take the next rate against.
#[derive(Default)]
struct Readings {
    containers: HashMap<String, (Instant, u64)>,
    node: Option<(Instant, u64)>,
}

/// Rates since the last reading; a container seen for the first time has none yet and is
/// left out, as metrics-server leaves out what it has one point for.
fn rates(prev: &mut Readings, now: Instant, samples: Vec<(RunningContainer, crate::runtime::Usage)>) -> Vec<PodUsage> {
    let mut pods: BTreeMap<(String, String, String), (BTreeMap<String, String>, Vec<ContainerUsage>)> = BTreeMap::new();
    let mut seen = HashMap::new();
    for (c, u) in samples {
        let key = format!("{}/{}", c.uid, c.started.id);
        if let Some((at, cpu)) = prev.containers.get(&key) {
            pods.entry((c.namespace.clone(), c.pod.clone(), c.uid.clone())).or_insert_with(|| (c.labels.clone(), Vec::new())).1.push(ContainerUsage { name: c.container.clone(), cpu_nanocores: nanocores(*cpu, u.cpu_ns, now - *at), memory_bytes: u.memory_bytes });
        }
        seen.insert(key, (now, u.cpu_ns));
    }
    prev.containers = seen;
    pods.into_iter().map(|((namespace, name, uid), (labels, containers))| PodUsage { namespace, name, uid, labels, containers }).collect()
}

pub async fn run(nats: async_nats::Client, node: String, kubelet: Addr<Kubelet>, period: Duration, stop: CancellationToken) {
    let subject = schema::subjects::node_metrics(&node);
    let mut prev = Readings::default();
    let mut tick = tokio::time::interval(period);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let Ok(running) = kubelet.send(ListRunning).await else { return };
        let mut samples = Vec::new();
        for c in running {
            if let Some(u) = c.runtime.container_usage(&c.started).await {
                samples.push((c, u));
            }
        }
        let now = Instant::now();
        let pods = rates(&mut prev, now, samples);
        let Some(n) = procfs::node_usage() else { continue };
        let node_rate = prev.node.map(|(at, cpu)| nanocores(cpu, n.cpu_ns, now - at));
        prev.node = Some((now, n.cpu_ns));
        let Some(cpu_nanocores) = node_rate else { continue };
        let report = NodeReport { node: node.clone(), timestamp: schema::object::now_string(), window_secs: period.as_secs() as u32, cpu_nanocores, memory_bytes: n.memory_bytes, pods };
        match schema::codec::encode(&report) {
            Ok(bytes) => {
                if let Err(e) = nats.publish(subject.clone(), bytes.into()).await {
                    tracing::debug!(error = %e, "publishing resource metrics failed");
                }
            }
            Err(e) => tracing::warn!(error = %e, "encoding resource metrics failed"),
        }
    }
}
