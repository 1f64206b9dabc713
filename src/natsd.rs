//! nats-server children: one for `flotilla up` when no `--nats-url` is given, a cluster of
//! them joined by routes (`up --nats-cluster 3`), and the servers `flotilla nats` (one
//! member of a cluster on a host of its own) and `flotilla leaf` (a remote site's leaf
//! node) run. JetStream's store sits inside the data dir, the payload limit fits 1.5 MiB
//! objects, and every child is stopped on exit. The config is data (`ServerConfig`)
//! rendered by one pure function. With security on, the config carries one nkey user per
//! identity with that identity's permissions (`schema::natsauth`); a join or a revocation
//! rewrites it and has every server reload it.

use anyhow::{bail, Context, Result};
use std::fmt::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct NatsChild {
    child: Child,
    pub url: String,
    conf: PathBuf,
    cfg: ServerConfig,
}

/// How a user proves who it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Who {
    /// An nkey's public half (the client signs the server's nonce with the seed).
    Nkey(String),
    /// User and password (the public bootstrap identity only).
    Password(String, String),
}

/// The users nats-server accepts, with their permissions.
pub type Users = Vec<(Who, schema::natsauth::Permissions)>;

/// What `reload` needs of the running servers (cloneable, for the join service).
#[derive(Debug, Clone)]
pub struct Reloader {
    servers: Vec<(u32, PathBuf, ServerConfig)>,
}

impl Reloader {
    /// Rewrites every server's config with these users and has it reload (SIGHUP): a user
    /// gone from the list is disconnected, a new one may connect.
    pub fn reload(&self, users: &Users) -> Result<()> {
        for (pid, conf, cfg) in &self.servers {
            let cfg = ServerConfig { users: Some(users.clone()), ..cfg.clone() };
            write_private(conf, &render(&cfg))?;
            // SAFETY: signalling our own child by pid.
            if unsafe { libc::kill(*pid as i32, libc::SIGHUP) } != 0 {
                bail!("signalling nats-server {pid} to reload: {}", std::io::Error::last_os_error());
            }
        }
        Ok(())
    }
}

/// One reloader for all of a cluster's servers.
pub fn reloader(children: &[NatsChild]) -> Reloader {
    Reloader { servers: children.iter().map(|c| (c.child.id(), c.conf.clone(), c.cfg.clone())).collect() }
}

fn list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| format!("\"{s}\"")).collect();
    format!("[{}]", quoted.join(", "))
}

fn allow_deny(allow: &[String], deny: &[String]) -> String {
    let mut out = format!("{{ allow: {}", list(allow));
    if !deny.is_empty() {
        out.push_str(&format!(", deny: {}", list(deny)));
    }
    out.push_str(" }");
    out
}

/// The `authorization` block: every user by nkey, with its permissions.
pub fn authorization_block(users: &Users) -> String {
    let mut out = String::from("authorization {\n  users = [\n");
    for (who, p) in users {
        let who = match who {
            Who::Nkey(k) => format!("nkey: {k}"),
            Who::Password(u, pw) => format!("user: \"{u}\", password: \"{pw}\""),
        };
        out.push_str(&format!(
            "    {{ {who}, permissions: {{ publish: {}, subscribe: {}{} }} }}\n",
            allow_deny(&p.publish_allow, &p.publish_deny),
            allow_deny(&p.subscribe_allow, &p.subscribe_deny),
            if p.allow_responses { ", allow_responses: true" } else { "" },
        ));
    }
    out.push_str("  ]\n}\n");
    out
}

/// The config names every identity's public key: readable by its owner only.
fn write_private(path: &Path, text: &str) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
    f.write_all(text.as_bytes())?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}

pub fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

fn find_binary() -> Option<String> {
    if let Ok(p) = std::env::var("NATS_SERVER") {
        return Some(p);
    }
    for p in ["/usr/sbin/nats-server", "/usr/bin/nats-server", "/usr/local/bin/nats-server"] {
        if Path::new(p).exists() {
            return Some(p.to_string());
        }
    }
    None
}

/// Routes to the other servers of one cluster.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterConfig {
    pub name: String,
    pub listen: String,
    /// `host:port` of every member's cluster listener (its own may be among them).
    pub routes: Vec<String>,
}

/// A leaf node's connection to its hub.
#[derive(Debug, Clone, PartialEq)]
pub struct LeafRemote {
    /// The hub's leafnode listeners, `host:port`.
    pub hubs: Vec<String>,
    /// User and password the hub knows this site's link by.
    pub login: Option<(String, String)>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ServerConfig {
    pub server_name: Option<String>,
    pub listen: String,
    /// Where JetStream keeps its streams; none: this server runs no JetStream (a leaf
    /// site's server, whose clients reach the hub's JetStream through the leaf link).
    pub jetstream_dir: Option<PathBuf>,
    pub cluster: Option<ClusterConfig>,
    /// Accept leaf nodes (remote sites) here.
    pub leaf_listen: Option<String>,
    pub leaf_remote: Option<LeafRemote>,
    /// nats-server's own monitoring endpoint (`/healthz`, `/varz`).
    pub monitor: Option<String>,
    /// The users it accepts (none: anyone may do anything).
    pub users: Option<Users>,
}

impl ServerConfig {
    pub fn single(listen: String, jetstream_dir: PathBuf) -> ServerConfig {
        ServerConfig { server_name: None, listen, jetstream_dir: Some(jetstream_dir), cluster: None, leaf_listen: None, leaf_remote: None, monitor: None, users: None }
    }
}

fn quoted(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// nats-server's config file for `c`. The `listen:` line comes first: tools read it back.
pub fn render(c: &ServerConfig) -> String {
    let mut out = format!("listen: {}\nmax_payload: 4MB\n", c.listen);
    if let Some(n) = &c.server_name {
        let _ = writeln!(out, "server_name: {}", quoted(n));
    }
    if let Some(m) = &c.monitor {
        let _ = writeln!(out, "http: {m}");
    }
    if let Some(d) = &c.jetstream_dir {
        let _ = writeln!(out, "jetstream {{\n  store_dir: {}\n}}", quoted(&d.display().to_string()));
    }
    if let Some(cl) = &c.cluster {
        let routes: Vec<String> = cl.routes.iter().filter(|r| **r != cl.listen).map(|r| quoted(&format!("nats-route://{r}"))).collect();
        let _ = writeln!(out, "cluster {{\n  name: {}\n  listen: {}\n  routes: [{}]\n}}", quoted(&cl.name), cl.listen, routes.join(", "));
    }
    if c.leaf_listen.is_some() || c.leaf_remote.is_some() {
        out.push_str("leafnodes {\n");
        if let Some(l) = &c.leaf_listen {
            let _ = writeln!(out, "  listen: {l}");
        }
        if let Some(r) = &c.leaf_remote {
            let login = r.login.as_ref().map(|(u, p)| format!("{u}:{p}@")).unwrap_or_default();
            let urls: Vec<String> = r.hubs.iter().map(|h| quoted(&format!("nats-leaf://{login}{h}"))).collect();
            let _ = writeln!(out, "  remotes: [ {{ urls: [{}] }} ]", urls.join(", "));
        }
        out.push_str("}\n");
    }
    if let Some(u) = &c.users {
        out.push_str(&authorization_block(u));
    }
    out
}

/// A `host:port` to connect to for a listener on `listen` (`0.0.0.0` means any: loopback).
fn dial(listen: &str) -> String {
    match listen.rsplit_once(':') {
        Some(("0.0.0.0", p)) => format!("127.0.0.1:{p}"),
        _ => listen.to_string(),
    }
}

/// Starts `n` servers joined by routes, each with JetStream, in `dir` (the first in
/// `dir` itself, the others in `dir`-2, `dir`-3, …). The cluster's client URL lists all.
pub fn start_cluster(dir: &Path, n: usize, users: Option<&Users>) -> Result<(Vec<NatsChild>, String)> {
    let ports: Vec<(u16, u16)> = (0..n).map(|_| Ok((free_port()?, free_port()?))).collect::<Result<_>>()?;
    let routes: Vec<String> = ports.iter().map(|(_, r)| format!("127.0.0.1:{r}")).collect();
    let mut children = Vec::new();
    for (i, (client, route)) in ports.iter().enumerate() {
        let d = if i == 0 { dir.to_path_buf() } else { PathBuf::from(format!("{}-{}", dir.display(), i + 1)) };
        let mut cfg = ServerConfig::single(format!("127.0.0.1:{client}"), d.join("jetstream"));
        cfg.server_name = Some(format!("nats-{}", i + 1));
        cfg.monitor = Some(format!("127.0.0.1:{}", free_port()?));
        cfg.users = users.cloned();
        cfg.cluster = Some(ClusterConfig { name: "flotilla".into(), listen: format!("127.0.0.1:{route}"), routes: routes.clone() });
        children.push(NatsChild::start_config(&d, &cfg)?);
    }
    let url = children.iter().map(|c| c.url.clone()).collect::<Vec<_>>().join(",");
    Ok((children, url))
}

impl NatsChild {
    /// One server on a free loopback port, with JetStream.
    pub fn start(dir: &Path, users: Option<&Users>) -> Result<NatsChild> {
        let port = free_port()?;
        let mut cfg = ServerConfig::single(format!("127.0.0.1:{port}"), dir.join("jetstream"));
        cfg.users = users.cloned();
        NatsChild::start_config(dir, &cfg)
    }

    /// Writes `cfg` as `dir`/nats.conf and starts nats-server on it; returns once it listens.
    pub fn start_config(dir: &Path, cfg: &ServerConfig) -> Result<NatsChild> {
        let bin = find_binary().context("nats-server not found (install Debian's nats-server package, or set NATS_SERVER)")?;
        std::fs::create_dir_all(dir)?;
        if let Some(js) = &cfg.jetstream_dir {
            std::fs::create_dir_all(js)?;
        }
        let conf = dir.join("nats.conf");
        write_private(&conf, &render(cfg))?;
        let target = dial(&cfg.listen);
        let log = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("nats.log"))?;
        let child = Command::new(&bin)
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {bin}"))?;
        let mut me = NatsChild { child, url: format!("nats://{target}"), conf, cfg: cfg.clone() };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(target.as_str()).is_err() {
            if let Ok(Some(st)) = me.child.try_wait() {
                bail!("nats-server exited at start ({st}); see {}", dir.join("nats.log").display());
            }
            if Instant::now() > deadline {
                me.stop();
                bail!("nats-server did not listen on {target} within 10 s; see {}", dir.join("nats.log").display());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(me)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, then SIGKILL after 5 s.
    pub fn stop(&mut self) {
        let pid = self.child.id() as i32;
        // SAFETY: signalling our own child by pid.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match self.child.try_wait() {
                Ok(Some(_)) | Err(_) => return,
                Ok(None) if Instant::now() > deadline => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    return;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }
}

impl Drop for NatsChild {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_single_server_listens_first_and_keeps_jetstream_in_its_dir() {
        let c = render(&ServerConfig::single("127.0.0.1:4222".into(), "/d/js".into()));
        assert!(c.starts_with("listen: 127.0.0.1:4222\n"));
        assert!(c.contains("jetstream {\n  store_dir: \"/d/js\"\n}"));
        assert!(!c.contains("cluster") && !c.contains("leafnodes"));
    }

    #[test]
    fn a_cluster_member_routes_to_the_others_only() {
        let mut cfg = ServerConfig::single("10.0.0.1:4222".into(), "/js".into());
        cfg.server_name = Some("nats-1".into());
        cfg.cluster = Some(ClusterConfig { name: "flotilla".into(), listen: "10.0.0.1:6222".into(), routes: vec!["10.0.0.1:6222".into(), "10.0.0.2:6222".into()] });
        let c = render(&cfg);
        assert!(c.contains("server_name: \"nats-1\""));
        assert!(c.contains("routes: [\"nats-route://10.0.0.2:6222\"]"), "{c}");
    }

    #[test]
    fn a_leaf_has_no_jetstream_and_dials_its_hubs_with_credentials() {
        let mut cfg = ServerConfig::single("127.0.0.1:4222".into(), "/js".into());
        cfg.jetstream_dir = None;
        cfg.leaf_remote = Some(LeafRemote { hubs: vec!["10.0.0.1:7422".into(), "10.0.0.2:7422".into()], login: Some(("leaf".into(), "pw".into())) });
        let c = render(&cfg);
        assert!(!c.contains("jetstream"));
        assert!(c.contains("remotes: [ { urls: [\"nats-leaf://leaf:pw@10.0.0.1:7422\", \"nats-leaf://leaf:pw@10.0.0.2:7422\"] } ]"), "{c}");
    }

    #[test]
    fn users_carry_their_permissions() {
        use schema::natsauth::{permissions, Role};
        let users = vec![(Who::Nkey("UNODE".into()), permissions(&Role::Node("n1".into()))), (Who::Password("bootstrap".into(), "bootstrap".into()), permissions(&Role::Bootstrap))];
        let mut cfg = ServerConfig::single("127.0.0.1:4222".into(), "/d/js".into());
        cfg.users = Some(users);
        let c = render(&cfg);
        assert!(c.starts_with("listen: 127.0.0.1:4222\n"));
        assert!(c.contains("{ nkey: UNODE, permissions: { publish: { allow: [\"flotilla.node.n1.write\""));
        assert!(c.contains("subscribe: { allow: [\"_INBOX_N.n1.>\""));
        assert!(!c.contains("allow_responses"));
        assert!(c.contains("{ user: \"bootstrap\", password: \"bootstrap\", permissions: { publish: { allow: [\"flotilla.join\"] }"));
        cfg.users = None;
        assert!(!render(&cfg).contains("authorization"));
    }

    #[test]
    fn any_address_is_dialled_on_loopback() {
        assert_eq!(dial("0.0.0.0:4222"), "127.0.0.1:4222");
        assert_eq!(dial("10.1.0.2:4222"), "10.1.0.2:4222");
    }
}

/// `flotilla nats`: one nats-server of a cluster, on a host of its own.
#[derive(clap::Args, Clone)]
pub struct NatsArgs {
    /// Config, JetStream store and log live here.
    #[arg(long, default_value = "./.flotilla/nats")]
    pub data_dir: PathBuf,
    /// This server's name in the cluster (JetStream needs one per server).
    #[arg(long)]
    pub name: String,
    /// Where clients connect.
    #[arg(long, default_value = "127.0.0.1:4222")]
    pub listen: String,
    /// Where the other servers' routes connect.
    #[arg(long)]
    pub cluster_listen: Option<String>,
    /// Every member's cluster address, `host:port,…` (this one's may be among them).
    #[arg(long, value_delimiter = ',')]
    pub routes: Vec<String>,
    /// Accept leaf nodes (remote sites, `flotilla leaf`) here.
    #[arg(long)]
    pub leaf_listen: Option<String>,
    /// nats-server's monitoring endpoint (/healthz, /varz, /jsz).
    #[arg(long)]
    pub monitor: Option<String>,
    /// The cluster's NATS identities (`flotilla identities create`): with it, the server
    /// admits each role and the joined nodes only, and this wrapper answers joins.
    #[arg(long)]
    pub identities: Option<PathBuf>,
    /// The cluster CA a joining node is handed (the gateway's `<pki>/ca.crt`).
    #[arg(long)]
    pub ca: Option<PathBuf>,
}

/// `flotilla leaf`: a remote site's nats-server, joined to the hub as a leaf node; the
/// site's node agents connect to it and keep their local bus while the link is down.
#[derive(clap::Args, Clone)]
pub struct LeafArgs {
    /// The hub's leafnode listeners, `host:port,…` (`flotilla nats --leaf-listen`).
    #[arg(long, value_delimiter = ',', required = true)]
    pub hub: Vec<String>,
    /// The leaf identity (`leaf.creds` of `flotilla identities create`): the site's
    /// link logs in with it, and the site's server admits the joined nodes only.
    #[arg(long)]
    pub credentials: Option<PathBuf>,
    /// Where the site's clients connect.
    #[arg(long, default_value = "127.0.0.1:4222")]
    pub listen: String,
    #[arg(long, default_value = "./.flotilla/leaf")]
    pub data_dir: PathBuf,
    #[arg(long)]
    pub name: Option<String>,
    #[arg(long)]
    pub monitor: Option<String>,
}

impl NatsArgs {
    pub fn config(&self) -> Result<ServerConfig> {
        let mut cfg = ServerConfig::single(self.listen.clone(), self.data_dir.join("jetstream"));
        cfg.server_name = Some(self.name.clone());
        cfg.monitor = self.monitor.clone();
        cfg.leaf_listen = self.leaf_listen.clone();
        match (&self.cluster_listen, self.routes.is_empty()) {
            (Some(l), _) => cfg.cluster = Some(ClusterConfig { name: "flotilla".into(), listen: l.clone(), routes: self.routes.clone() }),
            (None, false) => bail!("--routes needs --cluster-listen (where this server's own route listener is)"),
            (None, true) => {}
        }
        Ok(cfg)
    }
}

impl LeafArgs {
    pub fn config(&self) -> ServerConfig {
        let mut cfg = ServerConfig::single(self.listen.clone(), self.data_dir.join("jetstream"));
        // No JetStream at the site: its clients' stream requests go over the link to the
        // hub's, so there is one events stream, never a site copy that could diverge.
        cfg.jetstream_dir = None;
        cfg.server_name = self.name.clone();
        cfg.monitor = self.monitor.clone();
        cfg.leaf_remote = Some(LeafRemote { hubs: self.hub.clone(), login: None });
        cfg
    }
}

/// What a wrapper runs beside its server: given the server's reloader and client URL.
pub type Side = Box<dyn FnOnce(Reloader, String, tokio_util::sync::CancellationToken) -> futures::future::BoxFuture<'static, ()> + Send>;

/// Runs one server in the foreground until SIGTERM/Ctrl-C (or until it exits by itself).
pub async fn run(dir: &Path, cfg: &ServerConfig, what: &str, side: Option<Side>) -> Result<()> {
    let mut child = NatsChild::start_config(dir, cfg)?;
    eprintln!("flotilla {what}: nats-server pid {} on {}; Ctrl-C or SIGTERM stops it", child.pid(), child.url);
    let stop = tokio_util::sync::CancellationToken::new();
    let _stop_side = stop.clone().drop_guard();
    if let Some(side) = side {
        tokio::spawn(side(reloader(std::slice::from_ref(&child)), child.url.clone(), stop.clone()));
    }
    let exited = loop {
        tokio::select! {
            _ = crate::wait_for_signal() => break None,
            _ = tokio::time::sleep(Duration::from_millis(500)) => {
                if let Ok(Some(st)) = child.child.try_wait() {
                    break Some(st);
                }
            }
        }
    };
    match exited {
        Some(st) => bail!("nats-server exited ({st}); see {}", dir.join("nats.log").display()),
        None => {
            tokio::task::spawn_blocking(move || child.stop()).await?;
            Ok(())
        }
    }
}
