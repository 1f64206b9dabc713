//! `exec`, `attach` and `port-forward` for CRI pods: the runtime answers a URL on its
//! streaming server (containerd's, on 127.0.0.1), which the agent upgrades to SPDY/3.1
//! and speaks the kubelet's protocols on — remote command v4 (one stream per channel,
//! named by `streamtype`, the end as a JSON Status on the error stream) and port-forward
//! (an error and a data stream per connection) — as the kubelet's own proxy would.

use super::client::{go_error, pb, Cri};
use crate::runtime::streams::{self, End, Session, Streams};
use crate::runtime::RuntimeError;
use bus::spdy::{self, ClientSession, ClientStream};
use hyper_util::rt::TokioIo;
use schema::streaming::{STDERR, STDOUT};
use serde_json::Value;

fn stream_err(e: impl std::fmt::Display) -> RuntimeError {
    RuntimeError::Stream(e.to_string())
}

/// POSTs an upgrade to `url` and answers the connection once the server switched.
async fn upgrade(url: &str, protocol: &str) -> Result<TokioIo<hyper::upgrade::Upgraded>, RuntimeError> {
    let uri: hyper::Uri = url.parse().map_err(|e| stream_err(format!("the runtime's streaming URL {url:?}: {e}")))?;
    let host = uri.host().unwrap_or("127.0.0.1").to_string();
    let port = uri.port_u16().unwrap_or(80);
    let tcp = tokio::net::TcpStream::connect((host.as_str(), port)).await.map_err(|e| stream_err(format!("connecting to the runtime's streaming server {host}:{port}: {e}")))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await.map_err(stream_err)?;
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });
    let path = uri.path_and_query().map(|p| p.as_str().to_string()).unwrap_or_else(|| "/".into());
    let req = hyper::Request::post(path)
        .header(hyper::header::HOST, format!("{host}:{port}"))
        .header(hyper::header::CONNECTION, "Upgrade")
        .header(hyper::header::UPGRADE, "SPDY/3.1")
        .header("X-Stream-Protocol-Version", protocol)
        .body(String::new())
        .map_err(stream_err)?;
    let resp = sender.send_request(req).await.map_err(stream_err)?;
    if resp.status() != hyper::StatusCode::SWITCHING_PROTOCOLS {
        use http_body_util::BodyExt;
        let code = resp.status();
        let body = resp.into_body().collect().await.map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned()).unwrap_or_default();
        return Err(stream_err(format!("the runtime's streaming server answered {code}: {}", body.trim())));
    }
    let up = hyper::upgrade::on(resp).await.map_err(stream_err)?;
    Ok(TokioIo::new(up))
}

fn headers(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// The end a v4 error stream reports (empty: success).
pub fn end_of(status: &[u8]) -> End {
    if status.iter().all(u8::is_ascii_whitespace) {
        return End::Exited(0);
    }
    let Ok(v) = serde_json::from_slice::<Value>(status) else { return End::Error(String::from_utf8_lossy(status).trim().to_string()) };
    if v["status"] == "Success" {
        return End::Exited(0);
    }
    if v["reason"] == "NonZeroExitCode" {
        let code = v["details"]["causes"].as_array().into_iter().flatten().find(|c| c["reason"] == "ExitCode").and_then(|c| c["message"].as_str()?.parse().ok());
        if let Some(code) = code {
            return End::Exited(code);
        }
    }
    End::Error(v["message"].as_str().unwrap_or("the command failed").to_string())
}

async fn read_all(s: &mut ClientStream) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(b) = s.data.recv().await {
        out.extend_from_slice(&b);
    }
    out
}

async fn remote_command(url: String, s: Streams) -> Result<Session, RuntimeError> {
    let io = upgrade(&url, "v4.channel.k8s.io").await?;
    let cs = spdy::connect(io);
    let open = |t: &'static str| {
        let cs = cs.clone();
        async move { cs.open_stream(headers(&[("streamtype", t)])).await.map_err(stream_err) }
    };
    let mut error = open("error").await?;
    let stdin = if s.stdin { Some(open("stdin").await?) } else { None };
    let stdout = if s.stdout { Some(open("stdout").await?) } else { None };
    let stderr = if s.stderr && !s.tty { Some(open("stderr").await?) } else { None };
    let resize = if s.tty { Some(open("resize").await?) } else { None };
    let (session, parts) = streams::session(s.stdin, s.tty);
    if let (Some(stream), Some(mut rx)) = (stdin, parts.stdin) {
        tokio::spawn(async move {
            while let Some(b) = rx.recv().await {
                if stream.writer.write(b.into()).await.is_err() {
                    return;
                }
            }
            let _ = stream.writer.close().await;
        });
    }
    if let (Some(stream), Some(mut rx)) = (resize, parts.resize) {
        tokio::spawn(async move {
            while let Some((w, h)) = rx.recv().await {
                let msg = serde_json::json!({"Width": w, "Height": h}).to_string();
                if stream.writer.write(msg.into_bytes().into()).await.is_err() {
                    return;
                }
            }
        });
    }
    let mut pumps = Vec::new();
    for (stream, ch) in [(stdout, STDOUT), (stderr, STDERR)] {
        let (Some(mut stream), out) = (stream, parts.output.clone()) else { continue };
        pumps.push(tokio::spawn(async move {
            while let Some(b) = stream.data.recv().await {
                if out.send((ch, b.to_vec())).await.is_err() {
                    return;
                }
            }
        }));
    }
    drop(parts.output);
    let mut end = parts.end;
    tokio::spawn(async move {
        tokio::select! {
            status = read_all(&mut error) => {
                futures::future::join_all(pumps).await;
                let _ = end.send(end_of(&status));
            }
            _ = end.closed() => {}
        }
        cs.go_away().await;
    });
    Ok(session)
}

pub async fn exec(cri: Cri, container_id: String, command: Vec<String>, s: Streams) -> Result<Session, RuntimeError> {
    let req = pb::ExecRequest { container_id, cmd: command, tty: s.tty, stdin: s.stdin, stdout: s.stdout, stderr: s.stderr && !s.tty };
    let url = cri.runtime.clone().exec(req).await.map_err(|e| stream_err(go_error(&e)))?.into_inner().url;
    remote_command(url, s).await
}

pub async fn attach(cri: Cri, container_id: String, s: Streams) -> Result<Session, RuntimeError> {
    let req = pb::AttachRequest { container_id, stdin: s.stdin, tty: s.tty, stdout: s.stdout, stderr: s.stderr && !s.tty };
    let url = cri.runtime.clone().attach(req).await.map_err(|e| stream_err(go_error(&e)))?.into_inner().url;
    remote_command(url, s).await
}

pub async fn port_forward(cri: Cri, sandbox_id: String, port: u16) -> Result<Session, RuntimeError> {
    let req = pb::PortForwardRequest { pod_sandbox_id: sandbox_id, port: vec![i32::from(port)] };
    let url = cri.runtime.clone().port_forward(req).await.map_err(|e| stream_err(go_error(&e)))?.into_inner().url;
    let io = upgrade(&url, "portforward.k8s.io").await?;
    let cs: ClientSession = spdy::connect(io);
    let p = port.to_string();
    let mut error = cs.open_stream(headers(&[("streamtype", "error"), ("port", &p), ("requestid", "0")])).await.map_err(stream_err)?;
    let mut data = cs.open_stream(headers(&[("streamtype", "data"), ("port", &p), ("requestid", "0")])).await.map_err(stream_err)?;
    let (session, parts) = streams::session(true, false);
    let writer = data.writer.clone();
    if let Some(mut rx) = parts.stdin {
        tokio::spawn(async move {
            while let Some(b) = rx.recv().await {
                if writer.write(b.into()).await.is_err() {
                    return;
                }
            }
            let _ = writer.close().await;
        });
    }
    let (out, mut end) = (parts.output, parts.end);
    tokio::spawn(async move {
        let relay = async {
            while let Some(b) = data.data.recv().await {
                if out.send((STDOUT, b.to_vec())).await.is_err() {
                    return;
                }
            }
        };
        tokio::select! {
            _ = relay => {
                drop(out);
                // An error stream that says something means the connection failed.
                let msg = tokio::time::timeout(std::time::Duration::from_secs(1), read_all(&mut error)).await.unwrap_or_default();
                let text = String::from_utf8_lossy(&msg).trim().to_string();
                let _ = end.send(if text.is_empty() { End::Exited(0) } else { End::Error(text) });
            }
            _ = end.closed() => {}
        }
        cs.go_away().await;
    });
    Ok(session)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ends_from_the_error_stream() {
        assert_eq!(end_of(b""), End::Exited(0));
        assert_eq!(end_of(br#"{"metadata":{},"status":"Success"}"#), End::Exited(0));
        let failed = br#"{"metadata":{},"status":"Failure","message":"command terminated with non-zero exit code: error executing command [sh -c exit 3], exit code 3","reason":"NonZeroExitCode","details":{"causes":[{"reason":"ExitCode","message":"3"}]}}"#;
        assert_eq!(end_of(failed), End::Exited(3));
        assert_eq!(end_of(br#"{"status":"Failure","message":"OCI runtime exec failed"}"#), End::Error("OCI runtime exec failed".into()));
        assert_eq!(end_of(b"plain words"), End::Error("plain words".into()));
    }
}
