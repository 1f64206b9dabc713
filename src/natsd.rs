//! nats-server children: one for `flotilla up` when no `--nats-url` is given, a cluster of
//! them joined by routes (`up --nats-cluster 3`), and the servers `flotilla nats` (one
//! member of a cluster on a host of its own) and `flotilla leaf` (a remote site's leaf
//! node) run. JetStream's store sits inside the data dir, the payload limit fits 1.5 MiB
//! objects, and every child is stopped on exit. The config is data (`ServerConfig`)
//! rendered by one pure function.

use anyhow::{bail, Context, Result};
use std::fmt::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct NatsChild {
    child: Child,
    pub url: String,
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
    pub credentials: Option<PathBuf>,
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
    /// Blocks of config another part of flotilla adds (authorization, accounts), verbatim.
    pub extra: Vec<String>,
}

impl ServerConfig {
    pub fn single(listen: String, jetstream_dir: PathBuf) -> ServerConfig {
        ServerConfig { server_name: None, listen, jetstream_dir: Some(jetstream_dir), cluster: None, leaf_listen: None, leaf_remote: None, monitor: None, extra: Vec::new() }
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
            let urls: Vec<String> = r.hubs.iter().map(|h| quoted(&format!("nats-leaf://{h}"))).collect();
            let _ = write!(out, "  remotes: [ {{ urls: [{}]", urls.join(", "));
            if let Some(cr) = &r.credentials {
                let _ = write!(out, ", credentials: {}", quoted(&cr.display().to_string()));
            }
            out.push_str(" } ]\n");
        }
        out.push_str("}\n");
    }
    for e in &c.extra {
        out.push_str(e);
        if !e.ends_with('\n') {
            out.push('\n');
        }
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
pub fn start_cluster(dir: &Path, n: usize) -> Result<(Vec<NatsChild>, String)> {
    let ports: Vec<(u16, u16)> = (0..n).map(|_| Ok((free_port()?, free_port()?))).collect::<Result<_>>()?;
    let routes: Vec<String> = ports.iter().map(|(_, r)| format!("127.0.0.1:{r}")).collect();
    let mut children = Vec::new();
    for (i, (client, route)) in ports.iter().enumerate() {
        let d = if i == 0 { dir.to_path_buf() } else { PathBuf::from(format!("{}-{}", dir.display(), i + 1)) };
        let mut cfg = ServerConfig::single(format!("127.0.0.1:{client}"), d.join("jetstream"));
        cfg.server_name = Some(format!("nats-{}", i + 1));
        cfg.monitor = Some(format!("127.0.0.1:{}", free_port()?));
        cfg.cluster = Some(ClusterConfig { name: "flotilla".into(), listen: format!("127.0.0.1:{route}"), routes: routes.clone() });
        children.push(NatsChild::start_config(&d, &cfg)?);
    }
    let url = children.iter().map(|c| c.url.clone()).collect::<Vec<_>>().join(",");
    Ok((children, url))
}

impl NatsChild {
    /// One server on a free loopback port, with JetStream.
    pub fn start(dir: &Path) -> Result<NatsChild> {
        let port = free_port()?;
        NatsChild::start_config(dir, &ServerConfig::single(format!("127.0.0.1:{port}"), dir.join("jetstream")))
    }

    /// Writes `cfg` as `dir`/nats.conf and starts nats-server on it; returns once it listens.
    pub fn start_config(dir: &Path, cfg: &ServerConfig) -> Result<NatsChild> {
        let bin = find_binary().context("nats-server not found (install Debian's nats-server package, or set NATS_SERVER)")?;
        std::fs::create_dir_all(dir)?;
        if let Some(js) = &cfg.jetstream_dir {
            std::fs::create_dir_all(js)?;
        }
        let conf = dir.join("nats.conf");
        std::fs::write(&conf, render(cfg))?;
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
        let mut me = NatsChild { child, url: format!("nats://{target}") };
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
        cfg.leaf_remote = Some(LeafRemote { hubs: vec!["10.0.0.1:7422".into(), "10.0.0.2:7422".into()], credentials: Some("/c/leaf.creds".into()) });
        let c = render(&cfg);
        assert!(!c.contains("jetstream"));
        assert!(c.contains("remotes: [ { urls: [\"nats-leaf://10.0.0.1:7422\", \"nats-leaf://10.0.0.2:7422\"], credentials: \"/c/leaf.creds\" } ]"), "{c}");
    }

    #[test]
    fn any_address_is_dialled_on_loopback() {
        assert_eq!(dial("0.0.0.0:4222"), "127.0.0.1:4222");
        assert_eq!(dial("10.1.0.2:4222"), "10.1.0.2:4222");
    }
}
