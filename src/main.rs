//! The `flotilla` command: one binary for the local cluster (`up`) and for running each
//! component as its own process (`state`, `gateway`, `scheduler`, `controllers`, `node`).

mod apiserver_flags;
mod bench;
mod bootstrap;
mod certs;
mod controller_flags;
mod dashboard;
mod health;
mod identities;
mod join;
mod leader_flags;
mod members;
mod natsd;
mod runtime_flags;
mod state;
mod status;
mod up;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

// The gateway builds and drops a JSON tree per object it answers; under glibc's malloc
// that churn was a third of a LIST's CPU (BENCHMARKS.md, `flotilla bench api`).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "flotilla", version, about = "A Kubernetes-compatible control plane whose components are actors on NATS")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
    /// Also export every sampled span over OTLP/gRPC to this collector (e.g.
    /// http://127.0.0.1:4317). The dashboard's in-memory ring is kept either way.
    #[arg(long, global = true, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    otlp_endpoint: Option<String>,
    /// The share of traces this process starts that are sampled (recorded, exported);
    /// traces that arrive with a traceparent keep their caller's decision.
    #[arg(long, global = true, default_value_t = 1.0, value_parser = sample_ratio, env = "FLOTILLA_TRACE_SAMPLE")]
    trace_sample: f64,
}

fn sample_ratio(s: &str) -> std::result::Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
        _ => Err(format!("{s:?} is not a ratio between 0 and 1")),
    }
}

/// The resource name a process's spans are exported under.
fn service_name(cmd: &Cmd) -> &'static str {
    match cmd {
        Cmd::Up(_) => "flotilla-up",
        Cmd::Bench(_) => "flotilla-bench",
        Cmd::State(_) | Cmd::Backup(_) | Cmd::Restore(_) => "flotilla-state",
        Cmd::Gateway(_) => "flotilla-gateway",
        Cmd::Scheduler(_) => "flotilla-scheduler",
        Cmd::Controllers(_) => "flotilla-controllers",
        Cmd::Node(_) => "flotilla-node",
        Cmd::HollowNodes(_) => "flotilla-hollow-nodes",
        Cmd::Nats(_) | Cmd::Leaf(_) => "flotilla-nats",
        Cmd::JoinToken(_) | Cmd::Identities(_) => "flotilla-join-token",
        Cmd::Dashboard(_) => "flotilla-dashboard",
    }
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a whole local cluster in the foreground (state group, gateway, controllers,
    /// scheduler and node agents), starting nats-server unless --nats-url is given.
    Up(up::UpArgs),
    /// Run one state-group member, or look after a running group (status, member, fault).
    State(state::StateArgs),
    /// Take a consistent backup of a running cluster's state.
    Backup(state::BackupArgs),
    /// Make a new single-member state group from a backup, for `flotilla up --data-dir`.
    Restore(state::RestoreArgs),
    /// Run the API gateway.
    Gateway(GatewayArgs),
    /// Run the scheduler.
    Scheduler(SchedulerArgs),
    /// Run the controllers (deployment, replicaset, garbage collector, node IPAM, …).
    Controllers(ControllersArgs),
    /// Run one node agent.
    Node(NodeArgs),
    /// Bootstrap tokens for `flotilla node --join` (kubeadm's `token create`).
    JoinToken(join::JoinTokenArgs),
    /// The NATS identities of a multi-machine cluster's roles (`identities create`).
    Identities(identities::IdentitiesArgs),
    /// Run many hollow node agents in this process (kubemark's hollow kubelets): the real
    /// kubelet over a simulated runtime, for driving the control plane at scale.
    HollowNodes(HollowArgs),
    /// Run one nats-server of a cluster on this host (routes to the others, JetStream,
    /// optionally a leafnode listener for remote sites), with a config flotilla writes.
    Nats(natsd::NatsArgs),
    /// Run a remote site's nats-server as a leaf node of the hub; the site's node agents
    /// connect to it.
    Leaf(natsd::LeafArgs),
    /// Serve the dashboard (actors, nodes and pods, traces, object history) for a cluster
    /// reached over NATS.
    Dashboard(DashboardArgs),
    /// Benchmarks: `bench store` measures the state group against etcd 3.4, `bench api` the
    /// gateway's GET, LIST and CREATE over HTTPS.
    Bench(bench::BenchArgs),
}

#[derive(Args, Clone)]
pub struct Common {
    #[arg(long, env = "FLOTILLA_NATS_URL", default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,
    /// This component's NATS identity (a `.creds` file `flotilla up` wrote); none
    /// connects without one, as to a nats-server without authorization.
    #[arg(long, env = "FLOTILLA_NATS_CREDS")]
    pub nats_creds: Option<PathBuf>,
    /// Where /healthz, /readyz and /metrics are served.
    #[arg(long)]
    pub health_addr: Option<SocketAddr>,
}

impl Common {
    pub async fn connect(&self) -> Result<bus::Bus> {
        let creds = self.nats_creds.as_deref().map(bus::creds::Credentials::load).transpose()?;
        Ok(bus::Bus::connect_as(&self.nats_url, creds.as_ref()).await?)
    }
}

/// Where the dashboard listens, and the token it then requires.
#[derive(Args, Clone)]
pub struct DashboardFlags {
    /// Where the dashboard is served (`off` serves none). Loopback only unless
    /// --dashboard-token is set.
    #[arg(long, default_value = "127.0.0.1:8090", value_parser = |s: &str| dashboard::parse_addr(s).map(|_| s.to_string()))]
    pub dashboard_addr: String,
    /// A token the dashboard requires (`Authorization: Bearer …` or `?token=…`).
    #[arg(long, env = "FLOTILLA_DASHBOARD_TOKEN")]
    pub dashboard_token: Option<String>,
}

impl DashboardFlags {
    /// None for `off`; checked by clap, so it parses.
    pub fn addr(&self) -> Option<SocketAddr> {
        dashboard::parse_addr(&self.dashboard_addr).ok().flatten()
    }
}

#[derive(Args)]
struct DashboardArgs {
    #[arg(long, env = "FLOTILLA_NATS_URL", default_value = "nats://127.0.0.1:4222")]
    nats_url: String,
    /// The dashboard's NATS identity (`<data-dir>/nats/dashboard.creds` of `flotilla up`).
    #[arg(long, env = "FLOTILLA_NATS_CREDS")]
    nats_creds: Option<PathBuf>,
    #[command(flatten)]
    dashboard: DashboardFlags,
}

#[derive(Args, Clone)]
pub struct ControllersArgs {
    #[command(flatten)]
    common: Common,
    #[command(flatten)]
    flags: controller_flags::ControllerFlags,
    #[command(flatten)]
    leader: leader_flags::LeaderFlags,
}

#[derive(Args, Clone)]
pub struct SchedulerArgs {
    #[command(flatten)]
    common: Common,
    #[command(flatten)]
    leader: leader_flags::LeaderFlags,
}

#[derive(Args)]
struct GatewayArgs {
    #[command(flatten)]
    common: Common,
    #[arg(long, default_value = "127.0.0.1:6443")]
    addr: SocketAddr,
    /// Directory holding ca.crt, gateway.crt, gateway.key and admin.token (made if absent).
    #[arg(long, default_value = "./.flotilla/pki")]
    pki_dir: PathBuf,
    /// kube-apiserver's --token-auth-file (default: <pki-dir>/tokens.csv).
    #[arg(long)]
    token_auth_file: Option<PathBuf>,
    /// More addresses the serving certificate is good for (k3s's --tls-san): every
    /// gateway's, when several share one pki dir (whichever makes it first signs for all).
    #[arg(long, value_delimiter = ',')]
    tls_san: Vec<std::net::IpAddr>,
    #[command(flatten)]
    apiserver: apiserver_flags::ApiServerFlags,
}

#[derive(Args)]
struct NodeArgs {
    #[command(flatten)]
    common: Common,
    #[arg(long)]
    name: String,
    #[arg(long, default_value = "./.flotilla/nodes")]
    data_dir: PathBuf,
    /// CPU capacity in millicores (default: the host's).
    #[arg(long)]
    cpu_millis: Option<u64>,
    /// Memory capacity in bytes (default: the host's).
    #[arg(long)]
    memory_bytes: Option<u64>,
    #[command(flatten)]
    runtime: runtime_flags::RuntimeFlags,
    /// On SIGTERM, leave the pods running (containerd's shims, sandboxes, the bridge and
    /// the service rules stay) for the next agent on this data dir to adopt, as a kubelet
    /// restart does; without it the agent stops every pod and removes what it added.
    #[arg(long)]
    keep_pods_on_exit: bool,
    /// Join the cluster whose nats-server is at this URL with --token (once; the node's
    /// identity is kept in <data-dir>/<name>/nats.creds and reused after).
    #[arg(long)]
    join: Option<String>,
    /// A bootstrap token from `flotilla join-token create`.
    #[arg(long, env = "FLOTILLA_JOIN_TOKEN")]
    token: Option<String>,
}

#[derive(Args)]
struct HollowArgs {
    #[command(flatten)]
    common: Common,
    #[arg(long, default_value_t = 10)]
    count: u32,
    #[arg(long, default_value = "hollow-")]
    name_prefix: String,
    /// Each node's pod limit (the kubelet's --max-pods).
    #[arg(long, default_value_t = 110)]
    pods_per_node: u32,
    /// Each node's CPU capacity, as a quantity (`4`, `3500m`).
    #[arg(long, default_value = "4")]
    cpu: String,
    /// Each node's memory capacity, as a quantity (`16Gi`).
    #[arg(long, default_value = "16Gi")]
    memory: String,
    /// How long a container takes to "start", in milliseconds.
    #[arg(long, default_value_t = 0)]
    start_delay_ms: u64,
}

fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,async_nats=warn,openraft=warn,h2=warn,hyper=warn"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    init_tracing();
    let system = actix::System::with_tokio_rt(|| {
        tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap_or_else(|e| {
            eprintln!("cannot build the tokio runtime: {e}");
            std::process::exit(1)
        })
    });
    system.block_on(run(cli))
}

async fn run(cli: Cli) -> Result<()> {
    bus::trace::set_sample_ratio(cli.trace_sample);
    if let Some(ep) = cli.otlp_endpoint.as_deref().filter(|e| !e.is_empty()) {
        bus::otlp::start(ep, service_name(&cli.cmd))?;
    }
    let out = run_cmd(cli.cmd).await;
    bus::otlp::flush(std::time::Duration::from_secs(2)).await;
    out
}

async fn run_cmd(cmd: Cmd) -> Result<()> {
    match cmd {
        Cmd::Up(a) => up::run(a).await,
        Cmd::Nats(a) => {
            let (cfg, side) = join::hub(&a)?;
            natsd::run(&a.data_dir, &cfg, "nats", side).await
        }
        Cmd::Leaf(a) => {
            let (cfg, side) = join::leaf(&a)?;
            natsd::run(&a.data_dir, &cfg, "leaf", side).await
        }
        Cmd::Identities(a) => identities::run(a),
        Cmd::Bench(a) => bench::run(a).await,
        Cmd::Dashboard(a) => {
            let Some(addr) = a.dashboard.addr() else { anyhow::bail!("--dashboard-addr off: nothing to serve") };
            let creds = a.nats_creds.as_deref().map(bus::creds::Credentials::load).transpose()?;
            let bus = bus::Bus::connect_as(&a.nats_url, creds.as_ref()).await?;
            let stop = CancellationToken::new();
            let s2 = stop.clone();
            tokio::spawn(async move {
                wait_for_signal().await;
                s2.cancel();
            });
            eprintln!("flotilla dashboard on http://{addr}");
            dashboard::serve(addr, a.dashboard.dashboard_token, bus, stop).await
        }
        Cmd::State(a) => state::run(a).await,
        Cmd::Backup(a) => state::backup(a).await,
        Cmd::Restore(a) => state::restore(a),
        Cmd::Gateway(a) => {
            a.apiserver.apply_admission();
            let bus = a.common.connect().await?;
            let mut sans = vec![a.addr.ip()];
            sans.extend(a.tls_san.iter().copied());
            let c = certs::ensure(&a.pki_dir, &sans)?;
            let token = certs::admin_token(&a.pki_dir)?;
            // An admin kubeconfig for this gateway, as `up` writes one for its own.
            let host = if a.addr.ip().is_unspecified() { "127.0.0.1".to_string() } else { a.addr.ip().to_string() };
            let kubeconfig = a.pki_dir.join(format!("admin-{host}.kubeconfig"));
            certs::write_kubeconfig(&kubeconfig, &format!("https://{}", SocketAddr::new(host.parse()?, a.addr.port())), &c)?;
            eprintln!("flotilla gateway: admin kubeconfig in {}", kubeconfig.display());
            let shutdown = CancellationToken::new();
            let cfg = actors::gateway::GatewayConfig {
                addr: a.addr,
                tls: Some(actors::gateway::TlsFiles { cert_pem: c.serving_cert_pem, key_pem: c.serving_key_pem, client_ca_pem: Some(c.ca_pem) }),
                token_auth_file: Some(match a.token_auth_file {
                    Some(f) => f,
                    None => certs::default_token_file(&a.pki_dir, &token)?,
                }),
                service_account: Some(a.apiserver.service_account(&a.pki_dir)?),
                limits: a.apiserver.limits(),
            };
            let s2 = shutdown.clone();
            tokio::spawn(async move {
                wait_for_signal().await;
                s2.cancel();
            });
            // As kube-apiserver does: the system namespaces, default RBAC and Services exist
            // once any gateway has run (idempotent; retried until the state group answers).
            let client = bus::Client::new(bus.clone());
            let s3 = shutdown.clone();
            tokio::spawn(async move {
                loop {
                    match bootstrap::run(&client).await {
                        Ok(()) => return,
                        Err(e) => tracing::warn!(error = %e, "gateway: writing the bootstrap objects; retrying"),
                    }
                    tokio::select! {
                        _ = s3.cancelled() => return,
                        _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
                    }
                }
            });
            bus::obs::start(bus.clone(), "gateway", shutdown.clone());
            actors::gateway::serve(cfg, bus, Arc::new(|| true), shutdown).await
        }
        Cmd::Scheduler(c) => {
            let bus = c.common.connect().await?;
            bus::obs::start(bus.clone(), "scheduler", CancellationToken::new());
            let h = up::run_scheduler(bus, c.leader.config("kube-scheduler")?).await?;
            component(&c.common, "scheduler", || async move { h.shutdown().await }).await
        }
        Cmd::Controllers(c) => {
            let bus = c.common.connect().await?;
            bus::obs::start(bus.clone(), "controllers", CancellationToken::new());
            let h = up::run_controllers(bus, c.flags.config()?, c.leader.config("kube-controller-manager")?).await?;
            component(&c.common, "controllers", || async move { h.shutdown().await }).await
        }
        Cmd::JoinToken(a) => join::run(a).await,
        Cmd::Node(a) => {
            let bus = match &a.join {
                Some(url) => {
                    let creds = join::node_identity(url, a.token.as_deref(), &a.name, &a.data_dir.join(&a.name)).await?;
                    bus::Bus::connect_as(url, Some(&creds)).await?
                }
                None => a.common.connect().await?,
            };
            let mut cfg = node_agent::NodeConfig::from_host(a.name.clone(), a.data_dir.join(&a.name));
            if let Some(c) = a.cpu_millis {
                cfg.cpu_millis = c;
            }
            if let Some(m) = a.memory_bytes {
                cfg.memory_bytes = m;
            }
            a.runtime.apply(&mut cfg, &a.data_dir.join(&a.name), |w| eprintln!("{w}"))?;
            bus::obs::start(bus.clone(), &format!("node-{}", a.name), CancellationToken::new());
            let h = node_agent::start(cfg, bus).await?;
            let keep = a.keep_pods_on_exit;
            component(&a.common, "node agent", || async move { if keep { h.detach().await } else { h.shutdown().await } }).await
        }
        Cmd::HollowNodes(a) => {
            let cpu_millis = schema::quantity::cpu_millis(&a.cpu).with_context(|| format!("--cpu {:?} is not a quantity", a.cpu))?;
            let memory_bytes = schema::quantity::value(&a.memory).with_context(|| format!("--memory {:?} is not a quantity", a.memory))?;
            let cfg = node_agent::hollow::HollowConfig {
                count: a.count,
                name_prefix: a.name_prefix,
                cpu_millis,
                memory_bytes,
                max_pods: a.pods_per_node,
                start_delay: std::time::Duration::from_millis(a.start_delay_ms),
                heartbeat: node_agent::kubelet::node::DEFAULT_HEARTBEAT,
            };
            let bus = a.common.connect().await?;
            bus::obs::start(bus.clone(), "hollow-nodes", CancellationToken::new());
            let h = node_agent::hollow::start(cfg, bus).await?;
            component(&a.common, "hollow nodes", || async move { h.shutdown().await }).await
        }
    }
}

/// Serves health endpoints for a standalone component until SIGTERM/Ctrl-C, then stops it.
pub async fn component<F, Fut>(c: &Common, what: &str, stop: F) -> Result<()>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let ready = Arc::new(AtomicBool::new(true));
    let token = CancellationToken::new();
    if let Some(addr) = c.health_addr {
        let (r, t) = (ready.clone(), token.clone());
        tokio::spawn(async move {
            if let Err(e) = health::serve(addr, r, t).await {
                tracing::error!(error = %e, "health server failed");
            }
        });
    }
    eprintln!("flotilla {what} running; Ctrl-C or SIGTERM stops it");
    wait_for_signal().await;
    ready.store(false, Ordering::SeqCst);
    stop().await;
    token.cancel();
    Ok(())
}

pub async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let term = signal(SignalKind::terminate()).context("installing the SIGTERM handler");
    match term {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "falling back to Ctrl-C only");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
