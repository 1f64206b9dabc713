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
            let scheme = if *https { "https" } else { "http" };
            match tokio::time::timeout(timeout, http_get(*https, &host, *port, path, headers, agent)).await {
                Ok(o) => o,
                Err(_) => Outcome::Failure(format!("Get \"{scheme}://{}{path}\": context deadline exceeded (Client.Timeout exceeded while awaiting headers)", join(&host, *port))),
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

/// The kubelet's prober skips certificate checks for HTTPS (InsecureSkipVerify):
/// signatures are still checked, the chain and name are not.
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(&self, message: &[u8], cert: &rustls::pki_types::CertificateDer<'_>, dss: &rustls::DigitallySignedStruct) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(&self, message: &[u8], cert: &rustls::pki_types::CertificateDer<'_>, dss: &rustls::DigitallySignedStruct) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn tls_connector() -> Result<tokio_rustls::TlsConnector, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
        .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

/// One HTTP/1.1 GET (over TLS for HTTPS), as the kubelet's prober sends it; 200 to 399
/// is a success.
async fn http_get(https: bool, host: &str, port: u16, path: &str, headers: &[(String, String)], agent: &str) -> Outcome {
    let addr = join(host, port);
    let url = format!("{}://{addr}{path}", if https { "https" } else { "http" });
    let tcp = match tokio::net::TcpStream::connect(&addr).await {
        Ok(s) => s,
        Err(e) => return Outcome::Failure(format!("Get \"{url}\": dial tcp {addr}: connect: {}", dial_words(&e))),
    };
    if !https {
        return exchange(tcp, &url, &addr, path, headers, agent).await;
    }
    let name = rustls::pki_types::ServerName::try_from(host.to_string()).unwrap_or_else(|_| rustls::pki_types::ServerName::try_from("localhost").expect("a valid name"));
    let tls = match tls_connector() {
        Ok(c) => c.connect(name, tcp).await,
        Err(e) => return Outcome::Failure(format!("Get \"{url}\": {e}")),
    };
    match tls {
        Ok(s) => exchange(s, &url, &addr, path, headers, agent).await,
        Err(e) => Outcome::Failure(format!("Get \"{url}\": {e}")),
    }
}

async fn exchange(mut s: impl tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin, url: &str, addr: &str, path: &str, headers: &[(String, String)], agent: &str) -> Outcome {
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
        assert_eq!(http_get(false, "127.0.0.1", port, "/ok", &h, "kube-probe/1.32").await, Outcome::Success);
        assert_eq!(http_get(false, "127.0.0.1", port, "/bad", &h, "kube-probe/1.32").await, Outcome::Failure("HTTP probe failed with statuscode: 503".into()));
        // A closed port: Go's words.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        assert_eq!(
            http_get(false, "127.0.0.1", closed, "/", &[], "kube-probe/1.32").await,
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

    #[tokio::test]
    async fn https_checks_skip_certificate_verification() {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["somewhere.example".to_string()]).unwrap().self_signed(&key).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert.der().clone()], rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()))
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (s, _) = l.accept().await.unwrap();
            let mut s = acceptor.accept(s).await.unwrap();
            let mut buf = vec![0u8; 2048];
            let _ = s.read(&mut buf).await;
            let _ = s.write_all(b"HTTP/1.1 204 No Content\r\n\r\n").await;
            let _ = s.shutdown().await;
        });
        assert_eq!(http_get(true, "127.0.0.1", port, "/healthz", &[], "kube-probe/1.32").await, Outcome::Success);
    }
}
