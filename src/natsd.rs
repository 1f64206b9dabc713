//! A nats-server child for `flotilla up` when no `--nats-url` is given: JetStream on, its
//! store inside the data dir, a payload limit that fits 1.5 MiB objects, stopped on exit.

use anyhow::{bail, Context, Result};
use std::path::Path;
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

impl NatsChild {
    pub fn start(dir: &Path) -> Result<NatsChild> {
        let bin = find_binary().context("nats-server not found (install Debian's nats-server package, or set NATS_SERVER)")?;
        std::fs::create_dir_all(dir.join("jetstream"))?;
        let port = free_port()?;
        let conf = dir.join("nats.conf");
        std::fs::write(
            &conf,
            format!(
                "listen: 127.0.0.1:{port}\nmax_payload: 4MB\njetstream {{\n  store_dir: \"{}\"\n}}\n",
                dir.join("jetstream").display()
            ),
        )?;
        let log = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("nats.log"))?;
        let child = Command::new(&bin)
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {bin}"))?;
        let mut me = NatsChild { child, url: format!("nats://127.0.0.1:{port}") };
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
