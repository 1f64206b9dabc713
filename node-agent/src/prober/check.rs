//! Running one [`Action`] against a container, with the kubelet's words for a failure:
//! exec through the runtime's ExecSync, HTTP GET and TCP connects to the pod's address,
//! gRPC health checks (grpc.health.v1) with tonic.

use super::{Action, Outcome};
use crate::runtime::streams::ExecTarget;
use crate::runtime::Runtime;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub mod health {
    #![allow(clippy::all)]
    tonic::include_proto!("grpc.health.v1");
}

/// What a check needs of its container: the runtime (exec), the target (exec) and the
/// pod's address (network checks).
#[derive(Clone)]
pub struct Target {
    pub runtime: Arc<dyn Runtime>,
    pub exec: ExecTarget,
    pub pod_ip: String,
}

/// How much of an exec's output becomes the failure's message (the kubelet keeps 10 KiB).
const MAX_OUTPUT: usize = 10 * 1024;

/// Runs a probe's action.
pub async fn run(action: &Action, t: &Target, timeout: Duration) -> Outcome {
    run_as(action, t, timeout, "kube-probe/1.32").await
}

/// Runs a lifecycle hook's action (its HTTP requests say so, as the kubelet's do).
pub async fn run_hook(action: &Action, t: &Target, timeout: Duration) -> Outcome {
    run_as(action, t, timeout, "kube-lifecycle/1.32").await
}

async fn run_as(action: &Action, t: &Target, timeout: Duration, agent: &str) -> Outcome {
    match action {
        Action::Exec(cmd) => exec(cmd, t, timeout).await,
        Action::Http { https, host, port, path, headers } => {
            let host = host.clone().unwrap_or_else(|| t.pod_ip.clone());
            if *https {
                return Outcome::Failure(format!("Get \"https://{}{path}\": HTTPS probes are not supported by this node agent", join(&host, *port)));
            }
            match tokio::time::timeout(timeout, http_get(&host, *port, path, headers, agent)).await {
                Ok(o) => o,
                Err(_) => Outcome::Failure(format!("Get \"http://{}{path}\": context deadline exceeded (Client.Timeout exceeded while awaiting headers)", join(&host, *port))),
            }
        }
        Action::Tcp { host, port } => {
            let host = host.clone().unwrap_or_else(|| t.pod_ip.clone());
            let addr = join(&host, *port);
            match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(&addr)).await {
                Ok(Ok(_)) => Outcome::Success,
                Ok(Err(e)) => Outcome::Failure(format!("dial tcp {addr}: connect: {}", dial_words(&e))),
                Err(_) => Outcome::Failure(format!("dial tcp {addr}: i/o timeout")),
            }
        }
        Action::Grpc { port, service } => match tokio::time::timeout(timeout, grpc(&t.pod_ip, *port, service)).await {
            Ok(o) => o,
            Err(_) => Outcome::Failure(format!("timeout: health rpc did not complete within {}s", timeout.as_secs())),
        },
        Action::Sleep(d) => {
            tokio::time::sleep(*d).await;
            Outcome::Success
        }
    }
}

fn join(host: &str, port: u16) -> String {
    if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") }
}

/// Go's words for the common connect errors ("connection refused").
fn dial_words(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::ConnectionRefused => "connection refused".into(),
        _ => e.to_string(),
    }
}

async fn exec(cmd: &[String], t: &Target, timeout: Duration) -> Outcome {
    match t.runtime.exec_sync(&t.exec, cmd.to_vec(), timeout).await {
        Ok(out) if out.exit_code == 0 => Outcome::Success,
        Ok(out) => {
            let mut text = out.stdout;
            text.extend_from_slice(&out.stderr);
            text.truncate(MAX_OUTPUT);
            let text = String::from_utf8_lossy(&text).trim_end().to_string();
            if text.is_empty() {
                Outcome::Failure(format!("command {:?} exited with {}", cmd.join(" "), out.exit_code))
            } else {
                Outcome::Failure(text)
            }
        }
        Err(e) => Outcome::Failure(e.to_string()),
    }
}

/// One HTTP/1.1 GET, as the kubelet's prober sends it; 200 to 399 is a success.
async fn http_get(host: &str, port: u16, path: &str, headers: &[(String, String)], agent: &str) -> Outcome {
    let addr = join(host, port);
    let url = format!("http://{addr}{path}");
    let mut s = match tokio::net::TcpStream::connect(&addr).await {
        Ok(s) => s,
        Err(e) => return Outcome::Failure(format!("Get \"{url}\": dial tcp {addr}: connect: {}", dial_words(&e))),
    };
    let has = |n: &str| headers.iter().any(|(k, _)| k.eq_ignore_ascii_case(n));
    let mut req = format!("GET {path} HTTP/1.1\r\n");
    if !has("host") {
        req.push_str(&format!("Host: {addr}\r\n"));
    }
    if !has("user-agent") {
        req.push_str(&format!("User-Agent: {agent}\r\n"));
    }
    if !has("accept") {
        req.push_str("Accept: */*\r\n");
    }
    for (k, v) in headers {
        // A header that would break the request line structure is left out.
        if !k.contains(['\r', '\n', ':']) && !v.contains(['\r', '\n']) {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
    }
    req.push_str("Connection: close\r\n\r\n");
    if let Err(e) = s.write_all(req.as_bytes()).await {
        return Outcome::Failure(format!("Get \"{url}\": {e}"));
    }
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(2).any(|w| w == b"\r\n") && head.len() < 8192 {
        match s.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
            Err(e) => return Outcome::Failure(format!("Get \"{url}\": {e}")),
        }
    }
    let line = String::from_utf8_lossy(&head);
    let code = line.split_whitespace().nth(1).and_then(|c| c.parse::<u16>().ok());
    match code {
        Some(c) if (200..400).contains(&c) => Outcome::Success,
        Some(c) => Outcome::Failure(format!("HTTP probe failed with statuscode: {c}")),
        None => Outcome::Failure(format!("Get \"{url}\": malformed HTTP response")),
    }
}

async fn grpc(ip: &str, port: u16, service: &str) -> Outcome {
    let addr = format!("http://{}", join(ip, port));
    let channel = match tonic::transport::Endpoint::from_shared(addr.clone()) {
        Ok(e) => match e.connect().await {
            Ok(c) => c,
            Err(e) => return Outcome::Failure(format!("timeout: failed to connect service {:?} within 1s: {e}", join(ip, port))),
        },
        Err(e) => return Outcome::Failure(e.to_string()),
    };
    let mut client = health::health_client::HealthClient::new(channel);
    match client.check(health::HealthCheckRequest { service: service.to_string() }).await {
        Ok(r) if r.get_ref().status == health::health_check_response::ServingStatus::Serving as i32 => Outcome::Success,
        Ok(r) => {
            let st = health::health_check_response::ServingStatus::try_from(r.get_ref().status).map(|s| s.as_str_name()).unwrap_or("UNKNOWN");
            Outcome::Failure(format!("service unhealthy (responded with {st:?})"))
        }
        Err(e) => Outcome::Failure(format!("rpc error: code = {:?} desc = {}", e.code(), e.message())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn http_and_tcp_checks_against_a_local_listener() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = l.accept().await else { return };
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 2048];
                    let n = s.read(&mut buf).await.unwrap_or(0);
                    let req = String::from_utf8_lossy(&buf[..n]).to_string();
                    let status = if req.starts_with("GET /ok ") && req.contains("X-Probe: yes\r\n") { "200 OK" } else { "503 Service Unavailable" };
                    let _ = s.write_all(format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n").as_bytes()).await;
                });
            }
        });
        let h = vec![("X-Probe".to_string(), "yes".to_string())];
        assert_eq!(http_get("127.0.0.1", port, "/ok", &h, "kube-probe/1.32").await, Outcome::Success);
        assert_eq!(http_get("127.0.0.1", port, "/bad", &h, "kube-probe/1.32").await, Outcome::Failure("HTTP probe failed with statuscode: 503".into()));
        // A closed port: Go's words.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        assert_eq!(
            http_get("127.0.0.1", closed, "/", &[], "kube-probe/1.32").await,
            Outcome::Failure(format!("Get \"http://127.0.0.1:{closed}/\": dial tcp 127.0.0.1:{closed}: connect: connection refused"))
        );
    }

    /// A health server that answers SERVING for "" and NOT_SERVING for anything else.
    struct Health;

    #[tonic::async_trait]
    impl health::health_server::Health for Health {
        async fn check(&self, r: tonic::Request<health::HealthCheckRequest>) -> Result<tonic::Response<health::HealthCheckResponse>, tonic::Status> {
            use health::health_check_response::ServingStatus;
            let status = if r.get_ref().service.is_empty() { ServingStatus::Serving } else { ServingStatus::NotServing };
            Ok(tonic::Response::new(health::HealthCheckResponse { status: status as i32 }))
        }
    }

    #[tokio::test]
    async fn grpc_health_checks() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let incoming = tokio_stream_of(l);
        tokio::spawn(tonic::transport::Server::builder().add_service(health::health_server::HealthServer::new(Health)).serve_with_incoming(incoming));
        assert_eq!(grpc("127.0.0.1", port, "").await, Outcome::Success);
        assert_eq!(grpc("127.0.0.1", port, "db").await, Outcome::Failure("service unhealthy (responded with \"NOT_SERVING\")".into()));
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        assert!(matches!(grpc("127.0.0.1", closed, "").await, Outcome::Failure(m) if m.starts_with("timeout: failed to connect service")));
    }

    /// The listener's connections as the stream tonic serves.
    fn tokio_stream_of(l: tokio::net::TcpListener) -> impl futures::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
        futures::stream::unfold(l, |l| async move {
            let r = l.accept().await.map(|(s, _)| s);
            Some((r, l))
        })
    }
}
