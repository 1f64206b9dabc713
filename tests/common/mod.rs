//! A real nats-server (with JetStream) per test, on a free port in a private directory,
//! killed when the value is dropped. Shared by every integration test that needs the bus:
//! `mod common;` then `let nats = common::NatsServer::start();`.
#![allow(dead_code)]

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const NATS_SERVER: &str = "/usr/sbin/nats-server";

pub struct NatsServer {
    /// `nats://127.0.0.1:<port>`
    pub url: String,
    pub port: u16,
    /// nats-server's stdout and stderr (a pipe could fill up and stall it).
    pub log: PathBuf,
    child: Child,
    dir: tempfile::TempDir,
}

impl NatsServer {
    /// Starts nats-server with JetStream and a 4 MB `max_payload` (Kubernetes objects may
    /// be 1.5 MiB); returns once the port accepts connections. Panics on failure: tests only.
    pub fn start() -> NatsServer {
        let dir = tempfile::tempdir().expect("temp dir for nats-server");
        let port = free_port();
        let store = dir.path().join("jetstream");
        let conf = dir.path().join("nats.conf");
        std::fs::write(
            &conf,
            format!("listen: 127.0.0.1:{port}\nmax_payload: 4MB\njetstream {{\n  store_dir: \"{}\"\n}}\n", store.display()),
        )
        .expect("write nats.conf");
        let log = dir.path().join("nats-server.log");
        let child = spawn(&conf, &log);
        let mut server = NatsServer { url: format!("nats://127.0.0.1:{port}"), port, log, child, dir };
        server.wait_accepting();
        server
    }

    /// Stops the server (SIGKILL, as a crash would) and starts it again on the same port
    /// and JetStream store: the fault every NATS client must ride out.
    pub fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = spawn(&self.dir.path().join("nats.conf"), &self.log);
        self.wait_accepting();
    }

    /// `restart`, with the JetStream store wiped: nats-server lost everything it held.
    pub fn restart_empty(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(self.dir.path().join("jetstream"));
        self.child = spawn(&self.dir.path().join("nats.conf"), &self.log);
        self.wait_accepting();
    }

    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn wait_accepting(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("nats-server exited with {status}:\n{}", self.log_text());
            }
            if Instant::now() > deadline {
                panic!("nats-server did not accept connections within 10 s:\n{}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(conf: &std::path::Path, log: &std::path::Path) -> Child {
    let out = std::fs::OpenOptions::new().create(true).append(true).open(log).expect("nats-server log file");
    let err = out.try_clone().expect("nats-server log file");
    Command::new(NATS_SERVER)
        .arg("-c")
        .arg(conf)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .unwrap_or_else(|e| panic!("starting {NATS_SERVER}: {e}"))
}

/// A port nothing listens on right now (the OS picks it; the listener is closed at once).
/// A port nothing listens on, for a server a test starts. Chosen at random below Linux's
/// ephemeral range (32768 and up), where the kernel hands out the ports that `flotilla
/// up` and nats-server pick for themselves with bind(0): test processes running side by
/// side then cannot be given the same port the kernel just gave another one.
pub fn free_port() -> u16 {
    use rand::Rng;
    let mut rng = rand::thread_rng();
    for _ in 0..200 {
        let port = rng.gen_range(20_000..32_000);
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}

/// A /16 of 10.0.0.0/8 for one test cluster's pods (its nodes' bridges take /24s of it)
/// that no other test running on this machine holds. Each second octet is claimed by an
/// flock on a file in /tmp, held until this test process exits (the kernel lets go of it
/// even after a crash), and skipped while any interface still has an address in it.
pub fn pod_cidr() -> String {
    use std::os::unix::io::AsRawFd;
    // 10.96/16 holds the Service addresses, 10.244/16 is the default pod network.
    let octets: Vec<u32> = (64..244).filter(|o| *o != 96).collect();
    let start = rand::random::<usize>() % octets.len();
    let in_use = String::from_utf8_lossy(&Command::new("ip").args(["-o", "-4", "addr"]).output().map(|o| o.stdout).unwrap_or_default()).into_owned();
    for i in 0..octets.len() {
        let o = octets[(start + i) % octets.len()];
        if in_use.contains(&format!(" 10.{o}.")) {
            continue;
        }
        let Ok(f) = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(format!("/tmp/flotilla-test-pod-cidr-{o}.lock")) else { continue };
        // SAFETY: flock on a descriptor this function owns.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            // Held for the rest of this process: the cluster lives as long as the test.
            std::mem::forget(f);
            return format!("10.{o}.0.0/16");
        }
    }
    panic!("no free /16 for a test cluster's pods in 10.64.0.0-10.243.0.0");
}

/// `GET path` over HTTP/1.0 to 127.0.0.1:`port`: the whole answer, headers included.
pub fn http_get(port: u16, path: &str) -> Result<String, String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(10))).map_err(|e| e.to_string())?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes()).map_err(|e| e.to_string())?;
    let mut out = String::new();
    s.read_to_string(&mut out).map_err(|e| e.to_string())?;
    Ok(out)
}

pub mod cluster;
pub mod gateway;
pub mod linearizability;
pub mod members;
pub mod process;
pub mod registry;

/// A NATS connection as `creds`, and the errors nats-server tells it of (its permissions
/// violations), lower-cased, as they come.
pub async fn connect_noting_errors(url: &str, creds: &bus::creds::Credentials) -> (async_nats::Client, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    let errors = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let seen = errors.clone();
    let nats = async_nats::ConnectOptions::new()
        .nkey(creds.seed.clone())
        .custom_inbox_prefix(&creds.inbox)
        .event_callback(move |ev| {
            let seen = seen.clone();
            async move {
                if let async_nats::Event::ServerError(e) = ev {
                    seen.lock().unwrap().push(e.to_string().to_lowercase());
                }
            }
        })
        .connect(url)
        .await
        .unwrap_or_else(|e| panic!("connecting to {url} as {}: {e}", creds.inbox));
    (nats, errors)
}
