//! The node agent (flotilla's kubelet): registers its Node, keeps it Ready with heartbeats,
//! runs the pods bound to it through a runtime (its own containerd, any CRI endpoint, host
//! processes, or simulated) and serves their logs.

pub mod dns;
pub mod hollow;
pub mod images;
pub mod kubelet;
pub mod logs;
pub mod metrics;
pub mod network;
pub mod prober;
pub mod proxy;
pub mod runtime;
mod shutdown;
pub mod streaming;

use actix::prelude::*;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Which runtime runs the pods that name no `runtimeClassName`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuntimeKind {
    /// CRI: the agent's own containerd child, or `endpoint` when given
    /// (kubelet's --container-runtime-endpoint).
    Containerd { endpoint: Option<PathBuf> },
    /// Host processes (`runtimeClassName: host` works on every node whatever this is).
    Process,
    /// Hollow nodes: pods "run" without processes.
    Simulated,
}

impl RuntimeKind {
    /// containerd when it can run here (installed, and we are root), else host
    /// processes, with the one-line reason.
    pub fn detect() -> (RuntimeKind, Option<&'static str>) {
        if runtime::cri::containerd::available() {
            (RuntimeKind::Containerd { endpoint: None }, None)
        } else {
            (RuntimeKind::Process, Some("containerd, runc or ctr is not installed, or the agent is not root: pods run as host processes (they need spec.containers[].command)"))
        }
    }
}

/// How the node's service proxy works (kube-proxy's --proxy-mode).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyMode {
    /// nftables when the `nft` tool is here, else userspace.
    Auto,
    Nftables,
    Userspace,
}

#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub name: String,
    /// Per-node directory: pod working directories and logs, the containerd child's state.
    pub data_dir: PathBuf,
    pub cpu_millis: u64,
    pub memory_bytes: u64,
    pub max_pods: u32,
    /// Mirrors the kubelet's node-status-update-frequency.
    pub heartbeat: Duration,
    /// The node's address (host-mode pods report it as theirs).
    pub host_ip: String,
    pub runtime: RuntimeKind,
    /// The air-gap folder: image archives imported into containerd at start.
    pub images_dir: Option<PathBuf>,
    /// A k3s-shaped registries.yaml: mirrors and per-host auth and TLS for containerd.
    pub registries: Option<PathBuf>,
    /// When unused images are removed (kubelet's --image-gc-high/low-threshold).
    pub image_gc: images::gc::Thresholds,
    /// How often image GC looks at the disk (the kubelet's fixed ImageGCPeriod).
    pub image_gc_period: Duration,
    /// `nodeInfo.containerRuntimeVersion`, filled in once the runtime answers.
    pub container_runtime_version: String,
    /// The kubelet's --eviction-hard thresholds.
    pub eviction_hard: Vec<kubelet::eviction::Threshold>,
    /// Labels the Node registers with beside the well-known ones (the kubelet's --node-labels).
    pub labels: std::collections::BTreeMap<String, String>,
    /// The kubelet's `--cloud-provider external`: registered tainted uninitialized, for
    /// the cloud controller to finish.
    pub cloud_provider_external: bool,
    /// kube-proxy's --proxy-mode: nftables where `nft` is installed, else userspace.
    pub proxy_mode: ProxyMode,
}

fn host_memory() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("MemTotal:").and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())))
        .map(|kb| kb * 1024)
        .unwrap_or(4 << 30)
}

impl NodeConfig {
    /// The name of what this agent makes in host-wide namespaces (its bridge, its cgroup
    /// parent): the node's name behind a tag of its data dir, so two clusters on one host
    /// whose nodes share names never share a bridge.
    pub fn host_id(&self) -> String {
        use sha2::Digest;
        let h = sha2::Sha256::digest(self.data_dir.to_string_lossy().as_bytes());
        format!("{:02x}{:02x}-{}", h[0], h[1], self.name)
    }

    /// Capacity from the host: its CPUs and memory; host processes until told otherwise.
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
            runtime: RuntimeKind::Process,
            images_dir: None,
            registries: None,
            image_gc: images::gc::Thresholds::default(),
            image_gc_period: images::gc::PERIOD,
            container_runtime_version: "flotilla-process://0.1".into(),
            eviction_hard: kubelet::eviction::parse(kubelet::eviction::DEFAULT_HARD).unwrap_or_default(),
            labels: Default::default(),
            cloud_provider_external: false,
            proxy_mode: ProxyMode::Auto,
        }
    }
}

/// An event about the Node itself (image GC's), as the kubelet records them: the node's
/// name as its uid.
fn node_event(client: &bus::Client, node: &str, type_: &str, reason: &str, message: &str) {
    let involved = k8s_openapi::api::core::v1::ObjectReference { api_version: Some("v1".into()), kind: Some("Node".into()), name: Some(node.into()), uid: Some(node.into()), ..Default::default() };
    let mut ev = bus::events::event(involved, type_, reason, message, "kubelet");
    if let Some(src) = ev.source.as_mut() {
        src.host = Some(node.to_string());
    }
    ev.reporting_instance = Some(node.to_string());
    bus::events::record(client, ev);
}

pub struct NodeHandle {
    kubelet: Addr<kubelet::Kubelet>,
    stop: CancellationToken,
    cleanup: shutdown::Cleanup,
}

/// Starts the runtime, registers the node, then runs its heartbeat, its log service and
/// the kubelet actor. Call inside an actix System (the actor runs on the System's thread).
pub async fn start(cfg: NodeConfig, bus: bus::Bus) -> anyhow::Result<NodeHandle> {
    let mut cleanup = shutdown::Cleanup { node: cfg.name.clone(), host_id: cfg.host_id(), ..Default::default() };
    match start_parts(cfg, bus, &mut cleanup).await {
        Ok((kubelet, stop)) => Ok(NodeHandle { kubelet, stop, cleanup }),
        Err(e) => {
            // Whatever was started (containerd, the bridge) goes again.
            cleanup.run().await;
            Err(e)
        }
    }
}

async fn start_parts(mut cfg: NodeConfig, bus: bus::Bus, cleanup: &mut shutdown::Cleanup) -> anyhow::Result<(Addr<kubelet::Kubelet>, CancellationToken)> {
    use tracing::Instrument;
    // Its store requests go on its own node's subjects, where the state group holds them
    // to this node's objects and the Secrets its pods mount.
    let bus = bus.for_node(&cfg.name);
    std::fs::create_dir_all(&cfg.data_dir)?;
    let process: Arc<dyn runtime::Runtime> = Arc::new(runtime::process::ProcessRuntime {
        host_ip: cfg.host_ip.clone(),
        // Beside containerd's pods, so the node's tree is removed with theirs at stop.
        cgroup_parent: (unsafe { libc::geteuid() } == 0).then(|| format!("{}/host", runtime::cri::cgroups::node_parent(&cfg.host_id()))),
    });
    let mut image_gc = None;
    let default: Arc<dyn runtime::Runtime> = match &cfg.runtime {
        RuntimeKind::Process => process.clone(),
        RuntimeKind::Simulated => Arc::new(runtime::simulated::SimulatedRuntime::default()),
        RuntimeKind::Containerd { endpoint } => {
            let r = runtime::cri::connect(&cfg, endpoint.as_deref(), cleanup).await?;
            image_gc = Some((r.client(), r.last_used.clone()));
            r
        }
    };
    cfg.container_runtime_version = default.version();
    let client = bus::Client::new(bus.clone());
    kubelet::node::register(&client, &cfg).await.map_err(|e| anyhow::anyhow!("registering node {}: {e}", cfg.name))?;
    let mut cluster_dns = None;
    if cleanup.containerd.is_some() {
        // Our own containerd: its pod network is ours to configure.
        let cidr = network::setup(&client, &cfg).await?;
        cleanup.bridge = true;
        // Cluster DNS on the bridge's address, which this node's pods reach directly.
        match network::gateway(&cidr).map(|ip| (ip, dns::start(client.clone(), ip))) {
            Some((ip, Ok(server))) => {
                cluster_dns = Some(ip);
                cleanup.dns = Some(server);
                match dns::endpoint::publish(&client, &cfg.name, ip).await {
                    Ok(()) => cleanup.dns_endpoint = Some(client.clone()),
                    Err(e) => tracing::warn!(node = %cfg.name, error = %e, "cannot publish this node's kube-dns endpoint: 10.96.0.10 does not answer here"),
                }
            }
            Some((_, Err(e))) => tracing::warn!(node = %cfg.name, error = %e, "no cluster DNS on this node: pods get the host's resolv.conf"),
            None => tracing::warn!(node = %cfg.name, pod_cidr = %cidr, "no gateway address in the podCIDR: no cluster DNS on this node"),
        }
    }
    let stop = CancellationToken::new();
    // The service proxy only where pods have addresses of their own behind our bridge;
    // host-process pods share the node's address and need none.
    let userspace = match cfg.proxy_mode {
        ProxyMode::Userspace => true,
        ProxyMode::Nftables => false,
        ProxyMode::Auto => !proxy::available(),
    };
    if cleanup.bridge && userspace {
        let iface = proxy::userspace::interface_name(&cfg.host_id());
        let proxy_stop = CancellationToken::new();
        let task = proxy::userspace::start(client.clone(), iface.clone(), cfg.name.clone(), proxy_stop.clone());
        cleanup.userspace_proxy = Some((iface, task, proxy_stop));
    } else if cleanup.bridge {
        if proxy::available() {
            let table = proxy::rules::table_name(&cfg.host_id());
            let node = proxy::rules::NodeInfo { name: cfg.name.clone(), bridge: Some(network::bridge_name(&cfg.host_id())) };
            let proxy_stop = CancellationToken::new();
            let task = proxy::start(client.clone(), table.clone(), node, proxy_stop.clone());
            cleanup.proxy = Some((table, task, proxy_stop));
        } else {
            tracing::warn!(node = %cfg.name, "nft is not installed: no service proxy, ClusterIPs and NodePorts do not answer on this node");
        }
    }
    // Pods name the kube-dns ClusterIP, as the kubelet's --cluster-dns has them do, once
    // this node's proxy can carry it to the server published above.
    if cleanup.dns_endpoint.is_some() && cleanup.proxy.is_some() {
        // (The userspace proxy carries TCP alone: DNS over UDP goes to the node's server
        // directly there.)
        cluster_dns = Some(schema::services::KUBE_DNS_SERVICE_IP);
    }
    let span = || tracing::info_span!("kubelet", node = %cfg.name);
    let pressures = kubelet::eviction::Shared::default();
    tokio::spawn(kubelet::node::heartbeat(client.clone(), cfg.clone(), default.clone(), pressures.clone(), stop.clone()).instrument(span()));
    tokio::spawn(logs::serve(bus.nats.clone(), cfg.name.clone(), cfg.data_dir.clone(), stop.clone()).instrument(span()));
    // A high threshold of 100 turns image GC off, as it does the kubelet's.
    if let Some((cri, last_used)) = image_gc.filter(|_| cfg.image_gc.high < 100) {
        let fallback = runtime::cri::containerd::Layout::for_node(&cfg.data_dir).root();
        let store = Arc::new(runtime::cri::image_store::CriImages::new(cri, last_used, fallback, images::pause::PAUSE_IMAGE).await);
        tracing::info!(node = %cfg.name, fs = %store.fs.display(), high = cfg.image_gc.high, low = cfg.image_gc.low, "image garbage collection on");
        let (events, node) = (client.clone(), cfg.name.clone());
        let event = move |reason: &str, message: &str| node_event(&events, &node, "Warning", reason, message);
        tokio::spawn(images::gc::run(store, cfg.image_gc, cfg.image_gc_period, event, stop.clone()).instrument(span()));
    }
    let scope = bus::informer::Scope { node: Some(cfg.name.clone()), ..Default::default() };
    let pods = bus::informer::watch_objects_for::<k8s_openapi::api::core::v1::Pod>(kubelet::ACTOR, client.clone(), scope);
    let runtimes = runtime::Runtimes::new(default, vec![process]);
    let mut k = kubelet::Kubelet::new(cfg.name.clone(), cfg.host_ip.clone(), cfg.data_dir.clone(), client, runtimes);
    let kubelet_client = k.client.clone();
    tokio::spawn(kubelet::volumes::collect_orphans(k.client.clone(), cfg.data_dir.clone(), k.in_use.clone(), stop.clone()).instrument(span()));
    k.cluster_dns = cluster_dns;
    k.allocatable = kubelet::admission::Allocatable { cpu_millis: cfg.cpu_millis, memory_bytes: cfg.memory_bytes, pods: u64::from(cfg.max_pods) };
    let kubelet = kubelet::Kubelet::create(move |ctx| {
        ctx.add_stream(pods);
        k
    });
    tokio::spawn(kubelet::eviction::run(kubelet.clone(), cfg.eviction_hard.clone(), cfg.data_dir.clone(), pressures, stop.clone()).instrument(span()));
    tokio::spawn(kubelet::volumes::follow_sources(kubelet_client, kubelet.clone(), stop.clone()).instrument(span()));
    tokio::spawn(streaming::serve(bus.nats.clone(), cfg.name.clone(), kubelet.clone(), stop.clone()).instrument(span()));
    tokio::spawn(metrics::run(bus.nats.clone(), cfg.name.clone(), kubelet.clone(), metrics::PERIOD, stop.clone()).instrument(span()));
    Ok((kubelet, stop))
}

/// How long pod processes get between SIGTERM and SIGKILL when the agent stops.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

impl NodeHandle {
    /// Stops the agent: every container gets its stop signal, then SIGKILL after
    /// [`SHUTDOWN_GRACE`], every sandbox is removed; then the agent's containerd, its shims,
    /// the node's bridge. The store is left as it is (no status written), so a restart on
    /// the same data dir resumes the pods.
    pub async fn shutdown(self) {
        self.stop.cancel();
        let _ = self.kubelet.send(kubelet::Shutdown { grace: SHUTDOWN_GRACE }).await;
        self.cleanup.run().await;
    }

    /// Stops the agent and leaves its pods running (see `Cleanup::detach`): no container
    /// is stopped and no status written, so the store still says what runs, and an agent
    /// started again on the same data dir adopts the pods where they are.
    pub async fn detach(self) {
        self.stop.cancel();
        let _ = self.kubelet.send(kubelet::Detach).await;
        self.cleanup.detach().await;
    }

    /// The PID of the agent's containerd child, if it runs one.
    pub fn containerd_pid(&self) -> Option<u32> {
        self.cleanup.containerd.as_ref().map(|c| c.pid())
    }
}
