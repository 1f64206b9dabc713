//! The node agent (flotilla's kubelet): registers its Node, keeps it Ready with heartbeats,
//! runs the pods bound to it through a runtime and serves their logs.

pub mod kubelet;
pub mod logs;
pub mod runtime;

use actix::prelude::*;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub name: String,
    /// Per-node directory: pod working directories and logs.
    pub data_dir: PathBuf,
    pub cpu_millis: u64,
    pub memory_bytes: u64,
    pub max_pods: u32,
    /// Mirrors the kubelet's node-status-update-frequency.
    pub heartbeat: Duration,
    /// The address pods get in host mode.
    pub host_ip: String,
}

fn host_memory() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("MemTotal:").and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())))
        .map(|kb| kb * 1024)
        .unwrap_or(4 << 30)
}

impl NodeConfig {
    /// Capacity from the host: its CPUs and memory.
    pub fn from_host(name: String, data_dir: PathBuf) -> NodeConfig {
        let cpus = std::thread::available_parallelism().map(|n| n.get() as u64).unwrap_or(1);
        NodeConfig {
            name,
            data_dir,
            cpu_millis: cpus * 1000,
            memory_bytes: host_memory(),
            max_pods: 110,
            heartbeat: kubelet::node::DEFAULT_HEARTBEAT,
            host_ip: "127.0.0.1".into(),
        }
    }
}

pub struct NodeHandle {
    kubelet: Addr<kubelet::Kubelet>,
    stop: CancellationToken,
}

/// Registers the node, then runs its heartbeat, its log service and the kubelet actor.
/// Call inside an actix System (the actor runs on the System's thread).
pub async fn start(cfg: NodeConfig, bus: bus::Bus) -> anyhow::Result<NodeHandle> {
    use tracing::Instrument;
    std::fs::create_dir_all(&cfg.data_dir)?;
    let client = bus::Client::new(bus.clone());
    kubelet::node::register(&client, &cfg).await.map_err(|e| anyhow::anyhow!("registering node {}: {e}", cfg.name))?;
    let stop = CancellationToken::new();
    let span = || tracing::info_span!("kubelet", node = %cfg.name);
    tokio::spawn(kubelet::node::heartbeat(client.clone(), cfg.clone(), stop.clone()).instrument(span()));
    tokio::spawn(logs::serve(bus.nats.clone(), cfg.name.clone(), cfg.data_dir.clone(), stop.clone()).instrument(span()));
    let scope = bus::informer::Scope { node: Some(cfg.name.clone()), ..Default::default() };
    let pods = bus::informer::watch_objects::<k8s_openapi::api::core::v1::Pod>(client.clone(), scope);
    let runtime: Arc<dyn runtime::Runtime> = Arc::new(runtime::process::ProcessRuntime);
    let mut k = kubelet::Kubelet::new(cfg.name.clone(), cfg.host_ip.clone(), cfg.data_dir.clone(), client, runtime);
    k.allocatable = kubelet::admission::Allocatable { cpu_millis: cfg.cpu_millis, memory_bytes: cfg.memory_bytes, pods: u64::from(cfg.max_pods) };
    let kubelet = kubelet::Kubelet::create(move |ctx| {
        ctx.add_stream(pods);
        k
    });
    Ok(NodeHandle { kubelet, stop })
}

/// How long pod processes get between SIGTERM and SIGKILL when the agent stops.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

impl NodeHandle {
    /// Stops the agent: every pod process group gets SIGTERM, then SIGKILL after
    /// [`SHUTDOWN_GRACE`]; returns once they are gone. The store is left as it is (no
    /// status written), so a restart on the same data dir resumes the pods.
    pub async fn shutdown(self) {
        self.stop.cancel();
        let _ = self.kubelet.send(kubelet::Shutdown { grace: SHUTDOWN_GRACE }).await;
    }
}
