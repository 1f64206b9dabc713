//! `flotilla up`: a whole local cluster in one foreground command. Starts in dependency
//! order (NATS, state group, bootstrap objects, controllers, scheduler, node agents,
//! gateway) and stops in the reverse order on SIGTERM or Ctrl-C, pod processes included.

use crate::{bootstrap, certs, identities, natsd};
use schema::natsauth::Role;
use anyhow::{Context, Result};
use clap::Args;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[derive(Args, Clone)]
pub struct UpArgs {
    /// Where everything the cluster keeps lives (state, NATS store, certificates, pods).
    #[arg(long, default_value = "./.flotilla")]
    pub data_dir: PathBuf,
    /// How many node agents to run in this process.
    #[arg(long, default_value_t = 2)]
    pub nodes: u32,
    /// Use this NATS server instead of starting one.
    #[arg(long)]
    pub nats_url: Option<String>,
    /// Start this many nats-servers joined by routes (JetStream clustered, the events
    /// stream kept on up to 3 of them) instead of one; any of them may die.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=5), conflicts_with = "nats_url")]
    pub nats_cluster: u64,
    /// Where the gateway serves HTTPS.
    #[arg(long, default_value = "127.0.0.1:6443")]
    pub gateway_addr: SocketAddr,
    /// State-group members: 1 runs in this process; 3 or 5 run as child processes that
    /// replicate over gRPC (a minority may die without losing anything).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=7))]
    pub state_members: u64,
    /// kube-apiserver's --token-auth-file (default: <data-dir>/pki/tokens.csv, made with
    /// the admin token when absent).
    #[arg(long)]
    pub token_auth_file: Option<PathBuf>,
    #[command(flatten)]
    pub apiserver: crate::apiserver_flags::ApiServerFlags,
    #[command(flatten)]
    pub dashboard: crate::DashboardFlags,
    #[command(flatten)]
    pub runtime: crate::runtime_flags::RuntimeFlags,
    #[command(flatten)]
    pub controllers: crate::controller_flags::ControllerFlags,
    #[command(flatten)]
    pub leader: crate::leader_flags::LeaderFlags,
    /// Run no controllers in this process (others run `flotilla controllers` against it).
    #[arg(long)]
    pub no_controllers: bool,
    /// Run no scheduler in this process (others run `flotilla scheduler`).
    #[arg(long)]
    pub no_scheduler: bool,
    /// Each node agent's pod limit (the kubelet's --max-pods).
    #[arg(long, default_value_t = 110)]
    pub max_pods: u32,
    /// Each node agent's CPU capacity in millicores (default: the host's).
    #[arg(long)]
    pub node_cpu_millis: Option<u64>,
    /// Each node agent's memory capacity in bytes (default: the host's).
    #[arg(long)]
    pub node_memory_bytes: Option<u64>,
    /// Start nats-server without authorization (every client may do anything, as before
    /// the per-role identities). Without it, each component connects as its own NATS user.
    #[arg(long)]
    pub no_nats_auth: bool,
}

/// How this process's components reach NATS: each as its own identity, or all over one
/// anonymous connection (an outside nats-server, or `--no-nats-auth`).
struct Connector {
    url: String,
    ids: Option<Arc<std::sync::Mutex<identities::Identities>>>,
    /// The users of up's servers and the nodes joined to them.
    registry: Option<crate::join::Shared>,
    shared: Option<bus::Bus>,
}

impl Connector {
    async fn connect(&mut self, role: &Role) -> Result<bus::Bus> {
        match &mut self.ids {
            Some(reg) => {
                let c = reg.lock().map_err(|_| anyhow::anyhow!("the identity registry is poisoned"))?.ensure(role)?;
                bus::Bus::connect_as(&self.url, Some(&c)).await.with_context(|| format!("connecting to NATS as {}", c.name))
            }
            None => {
                if self.shared.is_none() {
                    self.shared = Some(bus::Bus::connect(&self.url).await.context("connecting to NATS")?);
                }
                Ok(self.shared.clone().expect("connected above"))
            }
        }
    }

    fn creds_file(&self, role: &Role) -> Option<PathBuf> {
        self.ids.as_ref().and_then(|r| r.lock().ok().map(|r| r.path(role)))
    }
}

/// The state group as `up` runs it.
enum StateGroup {
    InProcess(actors::state::StateHandle),
    Children(crate::members::Members),
}

impl StateGroup {
    async fn shutdown(self) {
        match self {
            StateGroup::InProcess(h) => h.shutdown().await,
            StateGroup::Children(m) => m.shutdown().await,
        }
    }
}

/// JetStream keeps the events stream on three servers of a cluster (or all, if fewer).
fn events_replicas(a: &UpArgs) -> usize {
    (a.nats_cluster as usize).min(3)
}

fn step(msg: &str) {
    eprintln!("[flotilla up] {msg}");
}

pub async fn run(a: UpArgs) -> Result<()> {
    std::fs::create_dir_all(&a.data_dir).with_context(|| format!("creating {}", a.data_dir.display()))?;
    let data_dir = a.data_dir.canonicalize()?;
    let pki = data_dir.join("pki");
    let certs = certs::ensure(&pki, &[a.gateway_addr.ip()])?;
    let token = certs::admin_token(&pki)?;

    let mut nats_children = Vec::new();
    let nats_dir = data_dir.join("nats");
    let mut ids = (a.nats_url.is_none() && !a.no_nats_auth).then(|| identities::Identities::new(&nats_dir));
    if let Some(ids) = &mut ids {
        let nodes = (1..=a.nodes).map(|i| Role::Node(node_name(i)));
        for role in [Role::State, Role::Gateway, Role::Controllers, Role::Scheduler, Role::Admin, Role::Dashboard].into_iter().chain(nodes) {
            ids.ensure(&role)?;
        }
    }
    let joined_cache = nats_dir.join("joined-nodes.json");
    let base_users = ids.as_ref().map(|i| i.users()).transpose()?;
    let users = match (&ids, &base_users) {
        (Some(i), Some(b)) => Some(crate::join::users(b, &i.own_nodes(), &crate::join::cached(&joined_cache))),
        _ => None,
    };
    let nats_url = match &a.nats_url {
        Some(u) => u.clone(),
        None if a.nats_cluster > 1 => {
            step(&format!("starting {} nats-servers joined by routes (JetStream clustered{})", a.nats_cluster, if users.is_some() { ", a NATS user per component" } else { "" }));
            let (cs, url) = natsd::start_cluster(&nats_dir, a.nats_cluster as usize, users.as_ref())?;
            for c in &cs {
                step(&format!("nats-server pid {} on {}", c.pid(), c.url));
            }
            nats_children = cs;
            url
        }
        None => {
            step(if users.is_some() { "starting nats-server (JetStream, a NATS user per component)" } else { "starting nats-server (JetStream, no authorization)" });
            let c = natsd::NatsChild::start(&nats_dir, users.as_ref())?;
            let url = c.url.clone();
            step(&format!("nats-server pid {} on {url}", c.pid()));
            nats_children.push(c);
            url
        }
    };
    let (ids, registry) = match (ids, base_users, nats_children.is_empty()) {
        (Some(ids), Some(base), false) => {
            step(&format!("NATS identities in {} (tools and tests: admin.creds)", nats_dir.display()));
            let reg = crate::join::Registry::new(base, ids.own_nodes(), natsd::reloader(&nats_children), joined_cache);
            (Some(Arc::new(std::sync::Mutex::new(ids))), Some(Arc::new(std::sync::Mutex::new(reg))))
        }
        _ => (None, None),
    };
    let conn = Connector { url: nats_url.clone(), ids, registry, shared: None };
    let result = run_cluster(&a, &data_dir, conn, certs, token).await;
    for mut c in nats_children {
        step("stopping nats-server");
        c.stop();
    }
    if result.is_ok() {
        step("stopped");
    }
    result
}

fn node_name(i: u32) -> String {
    format!("node-{i}")
}

async fn run_cluster(a: &UpArgs, data_dir: &std::path::Path, mut conn: Connector, certs: certs::ClusterCerts, token: String) -> Result<()> {
    a.apiserver.apply_admission();
    let nats_url = conn.url.clone();
    let nats_url = nats_url.as_str();
    let bus = conn.connect(&Role::Admin).await?;
    let obs_stop = CancellationToken::new();
    bus::obs::start(bus.clone(), "up", obs_stop.clone());

    let state = if a.state_members == 1 {
        step("starting the state group (1 member)");
        let state_bus = conn.connect(&Role::State).await?;
        let mut cfg = actors::state::StateConfig::single(data_dir.join("state"));
        cfg.history.replicas = events_replicas(a);
        let h = actors::state::start(cfg, state_bus.nats.clone()).await?;
        h.wait_ready().await;
        StateGroup::InProcess(h)
    } else {
        step(&format!("starting the state group ({} member processes)", a.state_members));
        let m = crate::members::start(data_dir, a.state_members, nats_url, events_replicas(a), conn.creds_file(&Role::State).as_deref())?;
        for (id, (pid, health)) in &m.pids {
            step(&format!("state member {id} pid {}, health on http://{health}", pid.load(std::sync::atomic::Ordering::SeqCst)));
        }
        StateGroup::Children(m)
    };
    let client = bus::Client::new(bus.clone());
    // Retries until the group has a leader and answers (the first write waits for it).
    bootstrap::run(&client).await.context("writing the bootstrap objects (is the state group up?)")?;

    // The gateway listens from the start so that /readyz can say "not yet".
    let ready = Arc::new(AtomicBool::new(false));
    let shutdown = CancellationToken::new();
    let gw_cfg = actors::gateway::GatewayConfig {
        addr: a.gateway_addr,
        tls: Some(actors::gateway::TlsFiles { cert_pem: certs.serving_cert_pem.clone(), key_pem: certs.serving_key_pem.clone(), client_ca_pem: Some(certs.ca_pem.clone()) }),
        token_auth_file: Some(match &a.token_auth_file {
            Some(f) => f.clone(),
            None => certs::default_token_file(&data_dir.join("pki"), &token)?,
        }),
        service_account: Some(a.apiserver.service_account(&data_dir.join("pki"))?),
        limits: a.apiserver.limits(),
    };
    let r = ready.clone();
    let gw_bus = conn.connect(&Role::Gateway).await?;
    let gw_stop = shutdown.clone();
    let gateway = tokio::spawn(async move { actors::gateway::serve(gw_cfg, gw_bus, Arc::new(move || r.load(Ordering::SeqCst)), gw_stop).await });
    step(&format!("gateway on https://{}", a.gateway_addr));
    if let Some(addr) = a.dashboard.addr() {
        // Read-only: the dashboard's own identity cannot write (or read Secrets' values).
        let d_bus = conn.connect(&Role::Dashboard).await?;
        let (d_stop, token) = (shutdown.clone(), a.dashboard.dashboard_token.clone());
        tokio::spawn(async move {
            if let Err(e) = crate::dashboard::serve(addr, token, d_bus, d_stop).await {
                step(&format!("dashboard failed: {e:#}"));
            }
        });
        step(&format!("dashboard on http://{addr}"));
    }

    if let Some(reg) = conn.registry.clone() {
        let (b, ca, stop) = (bus.clone(), Some(data_dir.join("pki").join("ca.crt")), shutdown.clone());
        tokio::spawn(async move {
            if let Err(e) = crate::join::serve(b, reg, ca, stop).await {
                step(&format!("the join service failed: {e:#}"));
            }
        });
        step("answering node joins (flotilla join-token create; flotilla node --join)");
    }
    step("starting controllers and scheduler");
    let controllers = if a.no_controllers { Running::None } else { run_controllers(conn.connect(&Role::Controllers).await?, actors::controllers::Config { root_ca_pem: Some(certs.ca_pem.clone()), ..a.controllers.config()? }, a.leader.config("kube-controller-manager")?).await? };
    let scheduler = if a.no_scheduler { Running::None } else { run_scheduler(conn.connect(&Role::Scheduler).await?, a.leader.config("kube-scheduler")?).await? };

    let mut nodes: Vec<node_agent::NodeHandle> = Vec::new();
    for i in 1..=a.nodes {
        let name = node_name(i);
        step(&format!("starting node agent {name}"));
        let mut cfg = node_agent::NodeConfig::from_host(name.clone(), data_dir.join("nodes").join(&name));
        cfg.max_pods = a.max_pods;
        if let Some(c) = a.node_cpu_millis {
            cfg.cpu_millis = c;
        }
        if let Some(m) = a.node_memory_bytes {
            cfg.memory_bytes = m;
        }
        a.runtime.apply(&mut cfg, &data_dir, |w| if i == 1 { step(w) })?;
        let started = match conn.connect(&Role::Node(name.clone())).await {
            Ok(node_bus) => node_agent::start(cfg, node_bus).await.map_err(|e| e.context(format!("starting node agent {name}"))),
            Err(e) => Err(e),
        };
        match started {
            Ok(n) => {
                if let Some(pid) = n.containerd_pid() {
                    step(&format!("node agent {name}: containerd pid {pid}"));
                }
                nodes.push(n)
            }
            Err(e) => {
                // The agents already up stop their containerd before `up` gives up.
                for n in nodes {
                    n.shutdown().await;
                }
                controllers.shutdown().await;
                scheduler.shutdown().await;
                state.shutdown().await;
                return Err(e);
            }
        }
    }
    wait_nodes_ready(&client, a.nodes).await;

    let kubeconfig = data_dir.join("kubeconfig");
    let server = format!("https://{}", a.gateway_addr);
    certs::write_kubeconfig(&kubeconfig, &server, &certs)?;
    ready.store(true, Ordering::SeqCst);
    step("ready");
    println!("export KUBECONFIG={}", kubeconfig.display());

    tokio::select! {
        _ = crate::wait_for_signal() => {}
        r = gateway => {
            match r {
                Ok(Ok(())) => step("gateway stopped"),
                Ok(Err(e)) => step(&format!("gateway failed: {e:#}")),
                Err(e) => step(&format!("gateway task failed: {e}")),
            }
        }
    }
    step("shutting down");
    ready.store(false, Ordering::SeqCst);
    shutdown.cancel();
    // Controllers and scheduler first, so that pods stopping now are not replaced.
    controllers.shutdown().await;
    scheduler.shutdown().await;
    for n in nodes {
        n.shutdown().await;
    }
    state.shutdown().await;
    obs_stop.cancel();
    Ok(())
}

/// A control-plane component as this process runs it: at once, behind a leader
/// election, or not at all.
pub enum Running {
    Controllers(actors::controllers::ControllersHandle),
    Scheduler(actors::scheduler::SchedulerHandle),
    Elected(actors::leaderelection::Elected),
    None,
}

impl Running {
    pub async fn shutdown(self) {
        match self {
            Running::Controllers(h) => h.shutdown().await,
            Running::Scheduler(h) => h.shutdown().await,
            Running::Elected(e) => e.shutdown().await,
            Running::None => {}
        }
    }
}

/// The controllers, under the `kube-controller-manager` lease when `election` is set.
pub async fn run_controllers(bus: bus::Bus, cfg: actors::controllers::Config, election: Option<actors::leaderelection::ElectionConfig>) -> Result<Running> {
    let Some(election) = election else { return Ok(Running::Controllers(actors::controllers::start(bus, cfg).await?)) };
    let client = bus::Client::new(bus.clone());
    let start = move || {
        let (bus, cfg) = (bus.clone(), cfg.clone());
        async move { actors::controllers::start(bus, cfg).await }
    };
    Ok(Running::Elected(actors::leaderelection::elected(client, election, start, |h: actors::controllers::ControllersHandle| h.shutdown())))
}

/// The scheduler, under the `kube-scheduler` lease when `election` is set.
pub async fn run_scheduler(bus: bus::Bus, election: Option<actors::leaderelection::ElectionConfig>) -> Result<Running> {
    let Some(election) = election else { return Ok(Running::Scheduler(actors::scheduler::start(bus).await?)) };
    let client = bus::Client::new(bus.clone());
    let start = move || {
        let bus = bus.clone();
        async move { actors::scheduler::start(bus).await }
    };
    Ok(Running::Elected(actors::leaderelection::elected(client, election, start, |h: actors::scheduler::SchedulerHandle| h.shutdown())))
}

/// Waits (bounded) until `n` nodes report Ready, so `ready` means pods can be scheduled.
async fn wait_nodes_ready(client: &bus::Client, n: u32) {
    use k8s_openapi::api::core::v1::Node;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok((nodes, _)) = client.list::<Node>(None).await {
            let ready = nodes
                .iter()
                .filter(|node| {
                    node.status
                        .as_ref()
                        .and_then(|s| s.conditions.as_ref())
                        .map(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
                        .unwrap_or(false)
                })
                .count();
            if ready as u32 >= n {
                return;
            }
        }
        if tokio::time::Instant::now() > deadline {
            step("warning: not every node reported Ready within 30 s");
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
