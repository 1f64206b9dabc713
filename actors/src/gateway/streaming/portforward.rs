//! `pods/portforward`: kubectl 1.32 tunnels a SPDY/3.1 session through a WebSocket
//! (`SPDY/3.1+portforward.k8s.io`), or speaks SPDY/3.1 itself; each forwarded
//! connection is a pair of streams (`streamtype` error and data, with `port` and
//! `requestID` headers), relayed to one connection the node opens in the pod's network.
//! Older WebSocket clients (`portforward.k8s.io`, `v4.channel.k8s.io`) name the ports in
//! the query and get two channels per port (data, error), each opened with the port
//! number as two little-endian bytes.

use bus::spdy::{self, IncomingStream};
use super::ws::{Channels, WsIo};
use super::{connection, negotiate, open, pod_for_stream, switching, take_connection, PodRef, Upgrade};
use crate::gateway::status::ApiError;
use crate::gateway::{AppState, Req};
use axum::response::Response;
use futures::{SinkExt, StreamExt};
use schema::registry::ResourceInfo;
use schema::streaming::{Body, End, StreamKind, STDIN};
use std::collections::HashMap;
use std::sync::Arc;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

const TUNNEL: &str = "SPDY/3.1+portforward.k8s.io";
const WS_PROTOCOLS: &[&str] = &[TUNNEL, "v4.channel.k8s.io", "portforward.k8s.io"];
const SPDY_PROTOCOLS: &[&str] = &["portforward.k8s.io"];

/// The ports a legacy WebSocket request names (`ports=80,8080` or repeated).
pub fn query_ports(req: &Req) -> Result<Vec<u16>, ApiError> {
    let mut out = Vec::new();
    for (_, v) in req.query.iter().filter(|(k, _)| k == "ports") {
        for p in v.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match p.parse::<u16>() {
                Ok(n) if n > 0 => out.push(n),
                _ => return Err(ApiError::bad_request(format!("unable to parse \"{p}\" as a port: must be in the range 1-65535"))),
            }
        }
    }
    if out.is_empty() {
        return Err(ApiError::bad_request("query parameter \"port\" is required"));
    }
    Ok(out)
}

pub async fn handle(st: &AppState, res: &ResourceInfo, ns: Option<&str>, name: &str, req: &Req) -> Result<Response, ApiError> {
    let p = Arc::new(pod_for_stream(st, res, ns, name, "portforward").await?);
    let up = negotiate(req, WS_PROTOCOLS, SPDY_PROTOCOLS)?;
    let legacy_ports = match &up {
        Upgrade::WebSocket { protocol, .. } if protocol != TUNNEL => Some(query_ports(req)?),
        _ => None,
    };
    let on = take_connection(req)?;
    let nats = st.bus.nats.clone();
    let resp = switching(&up);
    let span = tracing::info_span!("gateway-stream", verb = "portforward", pod = %format!("{}/{}", p.namespace, p.name));
    tokio::spawn(tracing::Instrument::instrument(
        async move {
            let Some(io) = connection(on).await else { return };
            match (up, legacy_ports) {
                (Upgrade::WebSocket { protocol, .. }, Some(ports)) => {
                    let ws = WebSocketStream::from_raw_socket(io, Role::Server, None).await;
                    legacy_websocket(ws, Channels::of(&protocol), ports, nats, p).await
                }
                (Upgrade::WebSocket { .. }, None) => {
                    let ws = WebSocketStream::from_raw_socket(io, Role::Server, None).await;
                    over_spdy(WsIo::new(ws), nats, p).await
                }
                (Upgrade::Spdy { .. }, _) => over_spdy(io, nats, p).await,
            }
        },
        span,
    ));
    Ok(resp)
}

/// The two streams of one forwarded connection, as they arrive.
#[derive(Default)]
struct Pair {
    error: Option<IncomingStream>,
    data: Option<IncomingStream>,
}

async fn over_spdy<IO>(io: IO, nats: async_nats::Client, p: Arc<PodRef>)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (session, mut incoming) = spdy::serve(io);
    let mut pairs: HashMap<String, Pair> = HashMap::new();
    while let Some(s) = incoming.recv().await {
        let id = s.header("requestid").unwrap_or("").to_string();
        let pair = pairs.entry(id.clone()).or_default();
        match s.header("streamtype") {
            Some("error") => pair.error = Some(s),
            Some("data") => pair.data = Some(s),
            _ => {
                s.writer.reset(1).await;
                continue;
            }
        }
        if pair.data.is_some() && pair.error.is_some() {
            let Pair { error: Some(error), data: Some(data) } = pairs.remove(&id).unwrap_or_default() else { continue };
            tokio::spawn(forward(nats.clone(), p.clone(), data, error));
        }
    }
    session.go_away().await;
}

/// Relays one SPDY data stream to a connection in the pod; failures go on its error stream.
async fn forward(nats: async_nats::Client, p: Arc<PodRef>, data: IncomingStream, error: IncomingStream) {
    let port = match data.header("port").and_then(|v| v.parse::<u16>().ok()) {
        Some(n) if n > 0 => n,
        _ => {
            let _ = error.writer.write(format!("invalid port header {:?}", data.header("port").unwrap_or("")).into_bytes().into()).await;
            let _ = error.writer.close().await;
            data.writer.reset(1).await;
            return;
        }
    };
    let (tx, mut rx) = match open(&nats, &p, "", StreamKind::PortForward { port }, [true, true, false, false]).await {
        Ok(x) => x,
        Err(e) => {
            let _ = error.writer.write(e.message.clone().into_bytes().into()).await;
            let _ = error.writer.close().await;
            let _ = data.writer.close().await;
            return;
        }
    };
    let up = tx.clone();
    let mut from_client = data.data;
    let client = tokio::spawn(async move {
        while let Some(b) = from_client.recv().await {
            if up.send(Body::Data { ch: STDIN, data: b.to_vec() }).await.is_err() {
                return;
            }
        }
        let _ = up.send(Body::Close { ch: STDIN }).await;
    });
    loop {
        match rx.recv().await {
            Some(Ok(Body::Data { data: b, .. })) => {
                if data.writer.write(b.into()).await.is_err() {
                    let _ = tx.send(Body::Cancel).await;
                    break;
                }
            }
            Some(Ok(Body::End(End::Exited(_)))) | None => break,
            Some(Ok(Body::End(End::Error(m)))) => {
                let _ = error.writer.write(m.into_bytes().into()).await;
                break;
            }
            Some(Err(e)) => {
                let _ = error.writer.write(e.to_string().into_bytes().into()).await;
                break;
            }
            Some(Ok(_)) => {}
        }
    }
    client.abort();
    let _ = data.writer.close().await;
    let _ = error.writer.close().await;
}

/// The legacy WebSocket protocol: one connection per named port for the socket's life.
async fn legacy_websocket<S>(ws: WebSocketStream<S>, chans: Channels, ports: Vec<u16>, nats: async_nats::Client, p: Arc<PodRef>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sink, mut stream) = ws.split();
    let sink = Arc::new(tokio::sync::Mutex::new(sink));
    let mut txs = Vec::new();
    for (i, port) in ports.iter().enumerate() {
        let (data_ch, err_ch) = ((2 * i) as u8, (2 * i + 1) as u8);
        {
            let mut s = sink.lock().await;
            let _ = s.send(chans.encode(data_ch, &port.to_le_bytes())).await;
            let _ = s.send(chans.encode(err_ch, &port.to_le_bytes())).await;
        }
        match open(&nats, &p, "", StreamKind::PortForward { port: *port }, [true, true, false, false]).await {
            Err(e) => {
                let _ = sink.lock().await.send(chans.encode(err_ch, e.message.as_bytes())).await;
                txs.push(None);
            }
            Ok((tx, mut rx)) => {
                let sink = sink.clone();
                tokio::spawn(async move {
                    while let Some(item) = rx.recv().await {
                        let m = match item {
                            Ok(Body::Data { data, .. }) => chans.encode(data_ch, &data),
                            Ok(Body::End(End::Error(m))) => chans.encode(err_ch, m.as_bytes()),
                            Ok(Body::End(_)) => break,
                            Ok(_) => continue,
                            Err(e) => chans.encode(err_ch, e.to_string().as_bytes()),
                        };
                        if sink.lock().await.send(m).await.is_err() {
                            break;
                        }
                    }
                });
                txs.push(Some(tx));
            }
        }
    }
    while let Some(Ok(m)) = stream.next().await {
        if matches!(m, Message::Close(_)) {
            break;
        }
        let Some((ch, data)) = chans.decode(&m) else { continue };
        if ch % 2 == 0 {
            if let Some(Some(tx)) = txs.get(usize::from(ch / 2)) {
                let _ = tx.send(Body::Data { ch: STDIN, data }).await;
            }
        }
    }
    for tx in txs.into_iter().flatten() {
        let _ = tx.send(Body::Cancel).await;
    }
}
