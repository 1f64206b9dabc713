//! Test fixture: a real nats-server, a one-member state group and an in-process gateway
//! (plain HTTP, one system:masters token), with a raw HTTP/1.1 client that reads a whole
//! answer (watches included) until the server closes it.

use super::NatsServer;
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub const TOKEN: &str = "Bearer test-token";

pub struct Gateway {
    pub nats: NatsServer,
    pub bus: bus::Bus,
    pub addr: String,
    pub state: actors::state::StateHandle,
    stop: tokio_util::sync::CancellationToken,
    _tmp: tempfile::TempDir,
}

pub struct Resp {
    pub code: u16,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    /// A watch's lines, each `{"type":…,"object":…}`.
    pub fn lines(&self) -> Vec<Value> {
        String::from_utf8_lossy(&self.body).lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad watch line {l:?}: {e}"))).collect()
    }
}

impl Gateway {
    pub async fn start() -> Gateway {
        let nats = NatsServer::start();
        let tmp = tempfile::tempdir().expect("tempdir");
        let client = async_nats::connect(&nats.url).await.expect("connect");
        let state = actors::state::start(actors::state::StateConfig::single(tmp.path().join("state")), client.clone()).await.expect("state group");
        state.wait_ready().await;
        let bus = bus::Bus::from_client(client);
        let addr = format!("127.0.0.1:{}", super::free_port());
        let stop = tokio_util::sync::CancellationToken::new();
        let tokens = tmp.path().join("tokens.csv");
        std::fs::write(&tokens, "test-token,admin,admin-uid,system:masters\n").expect("token file");
        let cfg = actors::gateway::GatewayConfig { addr: addr.parse().expect("addr"), tls: None, token_auth_file: Some(tokens), service_account: None, limits: Default::default() };
        tokio::spawn(actors::gateway::serve(cfg, bus.clone(), Arc::new(|| true), stop.clone()));
        let gw = Gateway { nats, bus, addr, state, stop, _tmp: tmp };
        gw.eventually("the gateway to listen", || async { tokio::net::TcpStream::connect(&gw.addr).await.ok().map(|_| ()) }).await;
        gw.eventually("the gateway ready", || async { (gw.get("/readyz").await.body == b"ok").then_some(()) }).await;
        gw
    }

    /// Polls `f` until it gives a value, for at most 20 s.
    pub async fn eventually<T, F: std::future::Future<Output = Option<T>>>(&self, what: &str, mut f: impl FnMut() -> F) -> T {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(v) = f().await {
                return v;
            }
            assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn call(&self, method: &str, path: &str, ct: &str, body: &str) -> Resp {
        call(&self.addr, method, path, ct, body).await
    }

    pub async fn get(&self, path: &str) -> Resp {
        self.call("GET", path, "", "").await
    }

    /// The events stream's consumer count now.
    pub async fn consumers(&self) -> usize {
        let mut s = self.bus.js.get_stream(schema::subjects::EVENTS_STREAM).await.expect("events stream");
        s.info().await.expect("stream info").state.consumer_count
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Undoes chunked transfer encoding.
fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(pos) = b.windows(2).position(|w| w == b"\r\n") {
        let size = usize::from_str_radix(std::str::from_utf8(&b[..pos]).unwrap_or("0").trim(), 16).unwrap_or(0);
        if size == 0 || b.len() < pos + 2 + size {
            break;
        }
        out.extend_from_slice(&b[pos + 2..pos + 2 + size]);
        b = &b[(pos + 4 + size).min(b.len())..];
    }
    out
}

/// One HTTP/1.1 request on a fresh connection, read until the server closes it.
pub async fn call(addr: &str, method: &str, path: &str, ct: &str, body: &str) -> Resp {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect to the gateway");
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nAuthorization: {TOKEN}\r\nAccept: application/json\r\nContent-Length: {}\r\n", body.len());
    if !ct.is_empty() {
        req.push_str(&format!("Content-Type: {ct}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).await.expect("send");
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut raw)).await.expect("answer in time").expect("read");
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("header end");
    let headers = String::from_utf8_lossy(&raw[..split]).to_string();
    let code = headers.split_whitespace().nth(1).and_then(|c| c.parse().ok()).expect("status code");
    let mut body = raw[split + 4..].to_vec();
    if headers.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        body = dechunk(&body);
    }
    Resp { code, body }
}
