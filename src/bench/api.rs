//! `flotilla bench api`: a local cluster as users run it (`flotilla up` as a child process
//! on a temporary data dir and free ports), 500 ConfigMaps made first, then GET of one,
//! LIST of all 500 and CREATE of new ones, each at a fixed open-loop rate over HTTPS with
//! keep-alive connections presenting the admin's client certificate.

use super::openloop::{self, Summary};
use super::proc::Proc;
use super::TempDir;
use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use clap::Args;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

#[derive(Args, Clone)]
pub struct ApiArgs {
    /// Requests per second for each operation.
    #[arg(long, default_value_t = 1000.0)]
    rate: f64,
    /// A short run (3 s measured per operation instead of 10).
    #[arg(long)]
    quick: bool,
    /// Seconds measured per operation, after a warm-up.
    #[arg(long)]
    duration: Option<f64>,
    /// ConfigMaps made before timing; LIST returns all of them.
    #[arg(long, default_value_t = 500)]
    objects: usize,
    /// Keep-alive HTTP/1.1 connections per operation (each carries one request at a time).
    #[arg(long, default_value_t = 32)]
    conns: usize,
    /// Which operations to run, in this order (LIST last by default: at a rate it cannot
    /// keep up with, its backlog would slow whatever ran after it).
    #[arg(long, value_delimiter = ',', default_values_t = [Op::Get, Op::Create, Op::List])]
    ops: Vec<Op>,
    /// Keep the cluster's data directory (and its log) afterwards.
    #[arg(long)]
    keep: bool,
}

const NS: &str = "bench";
const CREATE_NS: &str = "bench-create";

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum Op {
    Get,
    List,
    Create,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Get => "GET",
            Op::List => "LIST",
            Op::Create => "CREATE",
        }
    }
}

impl std::fmt::Display for Op {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name().to_ascii_lowercase())
    }
}

pub async fn run(a: ApiArgs) -> Result<()> {
    let measure = Duration::from_secs_f64(a.duration.unwrap_or(if a.quick { 3.0 } else { 10.0 }));
    let warmup = if a.quick { Duration::from_secs(1) } else { Duration::from_secs(2) };
    let dir = TempDir { path: std::env::temp_dir().join(format!("flotilla-bench-api-{}", std::process::id())), keep: a.keep };
    std::fs::create_dir_all(&dir.path)?;
    let (mut up, https) = local_cluster(&dir.path).await?;

    for ns in [NS, CREATE_NS] {
        let body = format!(r#"{{"apiVersion":"v1","kind":"Namespace","metadata":{{"name":"{ns}"}}}}"#);
        https.once(Method::POST, "/api/v1/namespaces", Some(body), StatusCode::CREATED).await?;
    }
    eprintln!("creating {} ConfigMaps in namespace {NS}", a.objects);
    let names: Vec<String> = (0..a.objects.max(1)).map(|i| format!("cm-{i}")).collect();
    let cms = format!("/api/v1/namespaces/{NS}/configmaps");
    for chunk in names.chunks(32) {
        let made = chunk.iter().map(|n| https.once(Method::POST, &cms, Some(configmap(n)), StatusCode::CREATED));
        for r in futures::future::join_all(made).await {
            r?;
        }
    }

    println!(
        "flotilla bench api: {:.0} requests/s per operation, open loop over {} keep-alive HTTPS connections, {:.0} s measured after {:.0} s warm-up; {} ConfigMaps listed; {} cores",
        a.rate,
        a.conns,
        measure.as_secs_f64(),
        warmup.as_secs_f64(),
        names.len(),
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
    );
    println!("{:<7} {:>9} {:>9} {:>8} {:>8} {:>8} {:>7} {:>10}", "op", "target/s", "achieved", "p50(ms)", "p99(ms)", "max(ms)", "errors", "unfinished");
    for op in a.ops.clone() {
        up.check_alive()?;
        let s = phase(&https, op, &a, warmup, measure).await;
        println!(
            "{:<7} {:>9.0} {:>9.0} {:>8.2} {:>8.2} {:>8.2} {:>7} {:>10}",
            op.name(),
            a.rate,
            s.achieved,
            s.p_ms(50.0),
            s.p_ms(99.0),
            s.p_ms(100.0),
            s.errors,
            s.unfinished
        );
        if let Some(e) = &s.first_error {
            eprintln!("  first {} error: {e}", op.name());
        }
    }
    up.stop();
    Ok(())
}

async fn phase(https: &Https, op: Op, a: &ApiArgs, warmup: Duration, measure: Duration) -> Summary {
    let paths = Arc::new((
        format!("/api/v1/namespaces/{NS}/configmaps/cm-{}", a.objects.max(1) / 2),
        format!("/api/v1/namespaces/{NS}/configmaps"),
        format!("/api/v1/namespaces/{CREATE_NS}/configmaps"),
    ));
    let https2 = https.clone();
    let samples = openloop::run(
        a.rate,
        warmup,
        measure,
        Duration::from_secs(5),
        a.conns,
        |_| {
            let h = https2.clone();
            async move { Worker { conn: h.connect().await.ok(), https: h } }
        },
        move |mut w: Worker, seq| {
            let (method, path, body, want) = match op {
                Op::Get => (Method::GET, &paths.0, None, StatusCode::OK),
                Op::List => (Method::GET, &paths.1, None, StatusCode::OK),
                Op::Create => (Method::POST, &paths.2, Some(configmap(&format!("new-{seq}"))), StatusCode::CREATED),
            };
            let req = w.https.request(method, path, body);
            async move {
                let mut conn = match w.conn.take() {
                    Some(c) => c,
                    None => match w.https.connect().await {
                        Ok(c) => c,
                        Err(e) => return (w, Err(format!("connecting: {e}"))),
                    },
                };
                let r = send(&mut conn, req, want).await;
                // A connection that failed is dropped; the next request opens a new one.
                if r.is_ok() {
                    w.conn = Some(conn);
                }
                (w, r)
            }
        },
    )
    .await;
    openloop::summarize(&samples, a.rate, warmup, measure)
}

struct Worker {
    conn: Option<SendRequest<Full<Bytes>>>,
    https: Https,
}

fn configmap(name: &str) -> String {
    format!(r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"{name}","labels":{{"app":"bench"}}}},"data":{{"key":"{}"}}}}"#, "v".repeat(64))
}

pub(super) async fn send(conn: &mut SendRequest<Full<Bytes>>, req: Request<Full<Bytes>>, want: StatusCode) -> Result<(), String> {
    conn.ready().await.map_err(|e| format!("connection: {e}"))?;
    let resp = conn.send_request(req).await.map_err(|e| format!("request: {e}"))?;
    let status = resp.status();
    let body = resp.into_body().collect().await.map_err(|e| format!("reading the answer: {e}"))?.to_bytes();
    if status != want {
        return Err(format!("{status}: {}", String::from_utf8_lossy(&body[..body.len().min(300)])));
    }
    Ok(())
}

/// `flotilla up --nodes 0` as a child on `<dir>/cluster` (its log `<dir>/up.log`), once its
/// gateway answers; the benches that measure one cluster as users run it start it so.
pub(super) async fn local_cluster(dir: &Path) -> Result<(Proc, Https)> {
    let addr: SocketAddr = format!("127.0.0.1:{}", crate::natsd::free_port()?).parse()?;
    let data = dir.join("cluster");
    let mut cmd = Command::new(std::env::current_exe().context("locating the flotilla binary")?);
    cmd.arg("up").arg("--data-dir").arg(&data).args(["--nodes", "0", "--gateway-addr", &addr.to_string(), "--dashboard-addr", "off"]);
    let mut up = Proc::spawn("flotilla up", cmd, &dir.join("up.log"))?;
    eprintln!("started flotilla up, pid {} (gateway on https://{addr}, log {})", up.pid(), dir.join("up.log").display());
    let https = Https::wait_ready(&mut up, &data.join("pki"), addr).await?;
    Ok((up, https))
}

/// The gateway's address and a TLS client that trusts the cluster CA and presents the
/// admin's client certificate, as the kubeconfig `up` writes does.
#[derive(Clone)]
pub(super) struct Https {
    addr: SocketAddr,
    tls: tokio_rustls::TlsConnector,
    /// The same client offering only HTTP/2, for multiplexed watches.
    h2: tokio_rustls::TlsConnector,
}

impl Https {
    pub(super) fn from_pki(pki: &Path, addr: SocketAddr) -> Result<Https> {
        let ca = CertificateDer::from_pem_file(pki.join("ca.crt")).context("reading ca.crt")?;
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca)?;
        let chain = CertificateDer::pem_file_iter(pki.join("admin.crt")).context("reading admin.crt")?.collect::<Result<Vec<_>, _>>()?;
        let key = PrivateKeyDer::from_pem_file(pki.join("admin.key")).context("reading admin.key")?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)?;
        let mut h2 = cfg.clone();
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        h2.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Https { addr, tls: tokio_rustls::TlsConnector::from(Arc::new(cfg)), h2: tokio_rustls::TlsConnector::from(Arc::new(h2)) })
    }

    pub(super) fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub(super) fn h2_tls(&self) -> &tokio_rustls::TlsConnector {
        &self.h2
    }

    /// Waits until `up` has written its certificates and the gateway answers `/readyz`.
    pub(super) async fn wait_ready(up: &mut Proc, pki: &Path, addr: SocketAddr) -> Result<Https> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        loop {
            up.check_alive()?;
            if pki.join("admin.key").exists() {
                if let Ok(h) = Https::from_pki(pki, addr) {
                    if h.once(Method::GET, "/readyz", None, StatusCode::OK).await.is_ok() {
                        return Ok(h);
                    }
                }
            }
            if tokio::time::Instant::now() > deadline {
                bail!("the gateway did not become ready within 120 s; see {}", up.log.display());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub(super) async fn connect(&self) -> Result<SendRequest<Full<Bytes>>> {
        let tcp = tokio::net::TcpStream::connect(self.addr).await?;
        tcp.set_nodelay(true)?;
        let tls = self.tls.connect(ServerName::IpAddress(self.addr.ip().into()), tcp).await?;
        let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(send)
    }

    pub(super) fn request(&self, method: Method, path: &str, body: Option<String>) -> Request<Full<Bytes>> {
        let mut b = Request::builder().method(method).uri(path).header(hyper::header::HOST, self.addr.to_string()).header(hyper::header::ACCEPT, "application/json");
        if body.is_some() {
            b = b.header(hyper::header::CONTENT_TYPE, "application/json");
        }
        b.body(Full::new(Bytes::from(body.unwrap_or_default()))).unwrap_or_else(|_| Request::new(Full::new(Bytes::new())))
    }

    /// One request on a new connection (setup and readiness, not timed).
    pub(super) async fn once(&self, method: Method, path: &str, body: Option<String>, want: StatusCode) -> Result<()> {
        let mut c = self.connect().await?;
        send(&mut c, self.request(method, path, body), want).await.map_err(|e| anyhow!("{path}: {e}"))
    }

    /// A request with a JSON body on `conn`, its JSON answer.
    pub(super) async fn send_json(&self, conn: &mut SendRequest<Full<Bytes>>, method: Method, path: &str, body: String, want: StatusCode) -> Result<serde_json::Value> {
        conn.ready().await?;
        let resp = conn.send_request(self.request(method, path, Some(body))).await?;
        let status = resp.status();
        let body = resp.into_body().collect().await?.to_bytes();
        if status != want {
            bail!("{path}: {status}: {}", String::from_utf8_lossy(&body[..body.len().min(300)]));
        }
        Ok(serde_json::from_slice(&body)?)
    }

    /// A GET on `conn`, its JSON answer.
    pub(super) async fn get_json(&self, conn: &mut SendRequest<Full<Bytes>>, path: &str) -> Result<serde_json::Value> {
        conn.ready().await?;
        let resp = conn.send_request(self.request(Method::GET, path, None)).await?;
        let status = resp.status();
        let body = resp.into_body().collect().await?.to_bytes();
        if status != StatusCode::OK {
            bail!("GET {path}: {status}: {}", String::from_utf8_lossy(&body[..body.len().min(300)]));
        }
        Ok(serde_json::from_slice(&body)?)
    }
}
