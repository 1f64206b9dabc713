//! A nats-server child for `flotilla up` when no `--nats-url` is given: JetStream on, its
//! store inside the data dir, a payload limit that fits 1.5 MiB objects, stopped on exit.
//! With security on, its config carries one nkey user per identity with that identity's
//! permissions (`schema::natsauth`); the config is made of blocks (listen, JetStream,
//! authorization) so that cluster routes or a leaf block can sit beside them.

use anyhow::{bail, Context, Result};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct NatsChild {
    child: Child,
    pub url: String,
    conf: std::path::PathBuf,
    port: u16,
    jetstream_dir: std::path::PathBuf,
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

/// What `reload` needs of a running server (cloneable, for the join service).
#[derive(Debug, Clone)]
pub struct Reloader {
    pid: u32,
    conf: std::path::PathBuf,
    port: u16,
    jetstream_dir: std::path::PathBuf,
}

impl Reloader {
    /// Rewrites the config with these users and has the server reload it (SIGHUP): a user
    /// gone from the list is disconnected, a new one may connect.
    pub fn reload(&self, users: &Users) -> Result<()> {
        write_private(&self.conf, &config(self.port, &self.jetstream_dir, Some(users)))?;
        // SAFETY: signalling our own child by pid.
        if unsafe { libc::kill(self.pid as i32, libc::SIGHUP) } != 0 {
            bail!("signalling nats-server to reload: {}", std::io::Error::last_os_error());
        }
        Ok(())
    }
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

/// The whole config: listen and limits, JetStream, and authorization when `users` is set.
pub fn config(port: u16, jetstream_dir: &Path, users: Option<&Users>) -> String {
    let mut out = format!("listen: 127.0.0.1:{port}\nmax_payload: 4MB\njetstream {{\n  store_dir: \"{}\"\n}}\n", jetstream_dir.display());
    if let Some(u) = users {
        out.push_str(&authorization_block(u));
    }
    out
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

impl NatsChild {
    pub fn start(dir: &Path, users: Option<&Users>) -> Result<NatsChild> {
        let bin = find_binary().context("nats-server not found (install Debian's nats-server package, or set NATS_SERVER)")?;
        std::fs::create_dir_all(dir.join("jetstream"))?;
        let port = free_port()?;
        let conf = dir.join("nats.conf");
        write_private(&conf, &config(port, &dir.join("jetstream"), users))?;
        let log = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("nats.log"))?;
        let child = Command::new(&bin)
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {bin}"))?;
        let mut me = NatsChild { child, url: format!("nats://127.0.0.1:{port}"), conf, port, jetstream_dir: dir.join("jetstream") };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(st)) = me.child.try_wait() {
                bail!("nats-server exited at start ({st}); see {}", dir.join("nats.log").display());
            }
            if Instant::now() > deadline {
                me.stop();
                bail!("nats-server did not listen on port {port} within 10 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(me)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn reloader(&self) -> Reloader {
        Reloader { pid: self.child.id(), conf: self.conf.clone(), port: self.port, jetstream_dir: self.jetstream_dir.clone() }
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

/// The config names every identity's public key: readable by its owner only.
fn write_private(path: &Path, text: &str) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
    f.write_all(text.as_bytes())?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use schema::natsauth::{permissions, Role};

    #[test]
    fn users_carry_their_permissions() {
        let users = vec![(Who::Nkey("UNODE".into()), permissions(&Role::Node("n1".into()))), (Who::Password("bootstrap".into(), "bootstrap".into()), permissions(&Role::Bootstrap))];
        let c = config(4222, Path::new("/d/js"), Some(&users));
        assert!(c.starts_with("listen: 127.0.0.1:4222\n"));
        assert!(c.contains("{ nkey: UNODE, permissions: { publish: { allow: [\"flotilla.node.n1.write\""));
        assert!(c.contains("subscribe: { allow: [\"_INBOX_N.n1.>\""));
        assert!(!c.contains("allow_responses"));
        assert!(c.contains("{ user: \"bootstrap\", password: \"bootstrap\", permissions: { publish: { allow: [\"flotilla.join\"] }"));
        assert!(!config(4222, Path::new("/d/js"), None).contains("authorization"));
    }
}

impl Drop for NatsChild {
    fn drop(&mut self) {
        self.stop();
    }
}
