//! `pods/exec`, `pods/attach` and `pods/portforward`: the gateway checks the request
//! against the pod, opens a stream to the node agent that runs it over the bus
//! (`schema::streaming`), then upgrades the client's connection — WebSocket with the
//! `channel.k8s.io` protocols (v5 down to v1, binary or base64), kubectl's port-forward
//! tunnel (`SPDY/3.1+portforward.k8s.io` inside WebSocket), or SPDY/3.1 itself, which
//! kubectl falls back to — and relays between the two until either side ends.

mod portforward;
mod remotecommand;
mod ws;

use super::logs::pick_container;
use super::objects::read_existing;
use super::status::ApiError;
use super::{AppState, Req};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bus::streams::{pipe, PipeRx, PipeTx};
use schema::registry::ResourceInfo;
use schema::streaming::{OpenReply, StreamKind, StreamOpen};
use schema::{codec, object, subjects};
use serde_json::Value;
use std::time::Duration;

/// How the client asked to upgrade.
#[derive(Debug, Clone, PartialEq)]
pub enum Upgrade {
    /// WebSocket with this subprotocol (empty: none offered).
    WebSocket { key: String, protocol: String },
    /// SPDY/3.1 with this `X-Stream-Protocol-Version`.
    Spdy { protocol: String },
}

fn header_list(req: &Req, name: &str) -> Vec<String> {
    req.headers.get_all(name).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(',')).map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect()
}

/// The upgrade a request asks for, with the protocol chosen among `supported` (the
/// client's order decides among those both sides speak).
pub fn negotiate(req: &Req, ws_supported: &[&str], spdy_supported: &[&str]) -> Result<Upgrade, ApiError> {
    let upgrade = req.header(header::UPGRADE).to_ascii_lowercase();
    if upgrade == "websocket" {
        let key = req.header(header::SEC_WEBSOCKET_KEY).to_string();
        if key.is_empty() {
            return Err(ApiError::bad_request("unable to upgrade streaming request: missing Sec-WebSocket-Key"));
        }
        let offered = header_list(req, "sec-websocket-protocol");
        let protocol = match offered.iter().find(|p| ws_supported.contains(&p.as_str())) {
            Some(p) => p.clone(),
            None if offered.is_empty() => String::new(),
            None => return Err(ApiError::bad_request(format!("unable to upgrade streaming request: none of the requested subprotocols {offered:?} is supported; supported: {ws_supported:?}"))),
        };
        return Ok(Upgrade::WebSocket { key, protocol });
    }
    if upgrade.starts_with("spdy/3.1") {
        let offered = header_list(req, "x-stream-protocol-version");
        let protocol = offered.iter().find(|p| spdy_supported.contains(&p.as_str())).cloned().ok_or_else(|| {
            ApiError::new(403, "Forbidden", format!("unable to upgrade: unable to negotiate protocol: client supports {offered:?}, server supports {spdy_supported:?}"))
        })?;
        return Ok(Upgrade::Spdy { protocol });
    }
    Err(ApiError::bad_request("Upgrade request required"))
}

/// The 101 answer for `up`; the caller then takes the connection from `req`.
pub fn switching(up: &Upgrade) -> Response {
    let mut r = StatusCode::SWITCHING_PROTOCOLS.into_response();
    let h = r.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    match up {
        Upgrade::WebSocket { key, protocol } => {
            h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
            if let Ok(v) = HeaderValue::from_str(&ws::accept_key(key)) {
                h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
            }
            if let (false, Ok(v)) = (protocol.is_empty(), HeaderValue::from_str(protocol)) {
                h.insert(header::SEC_WEBSOCKET_PROTOCOL, v);
            }
        }
        Upgrade::Spdy { protocol } => {
            h.insert(header::UPGRADE, HeaderValue::from_static("SPDY/3.1"));
            if let Ok(v) = HeaderValue::from_str(protocol) {
                h.insert("X-Stream-Protocol-Version", v);
            }
        }
    }
    r
}

/// Takes the client's connection out of the request: it is there once the 101 answer has
/// gone out (await it in a task spawned after answering).
pub fn take_connection(req: &Req) -> Result<hyper::upgrade::OnUpgrade, ApiError> {
    req.upgrade.lock().ok().and_then(|mut u| u.take()).ok_or_else(|| ApiError::bad_request("unable to upgrade streaming request: this connection cannot be upgraded"))
}

/// The upgraded connection as tokio I/O.
pub async fn connection(on: hyper::upgrade::OnUpgrade) -> Option<hyper_util::rt::TokioIo<hyper::upgrade::Upgraded>> {
    match on.await {
        Ok(u) => Some(hyper_util::rt::TokioIo::new(u)),
        Err(e) => {
            tracing::debug!(error = %e, "the client's connection was not upgraded");
            None
        }
    }
}

/// The pod a stream goes to, checked as the real server checks it: it exists, is bound
/// and has not completed.
pub struct PodRef {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub node: String,
    pub pod: Value,
}

pub async fn pod_for_stream(st: &AppState, res: &ResourceInfo, ns: Option<&str>, name: &str, verb: &str) -> Result<PodRef, ApiError> {
    let (pod, _) = read_existing(st, res, ns, name).await?;
    let phase = pod.pointer("/status/phase").and_then(Value::as_str).unwrap_or("");
    if verb != "portforward" && matches!(phase, "Succeeded" | "Failed") {
        return Err(ApiError::bad_request(format!("cannot {verb} into a container in a completed pod; current phase is {phase}")));
    }
    let node = object::node_name(&pod).ok_or_else(|| ApiError::bad_request(format!("pod {name} does not have a host assigned")))?.to_string();
    Ok(PodRef { namespace: ns.unwrap_or("").to_string(), name: name.to_string(), uid: pod.pointer("/metadata/uid").and_then(Value::as_str).unwrap_or("").to_string(), node, pod })
}

/// Opens a stream to the pod's node; the node has started the session when this returns.
pub async fn open(nats: &async_nats::Client, p: &PodRef, container: &str, kind: StreamKind, io: [bool; 4]) -> Result<(PipeTx, PipeRx), ApiError> {
    let nats = nats.clone();
    let inbox = nats.new_inbox();
    let sub = nats.subscribe(inbox.clone()).await.map_err(|e| ApiError::unavailable(format!("opening a stream: {e}")))?;
    let [stdin, stdout, stderr, tty] = io;
    let req = StreamOpen { namespace: p.namespace.clone(), pod: p.name.clone(), uid: p.uid.clone(), container: container.to_string(), kind, stdin, stdout, stderr, tty, inbox };
    let payload = codec::encode(&req).map_err(|e| ApiError::internal(e.to_string()))?;
    let node = &p.node;
    let ask = nats.request(subjects::node_streams(node), payload.into());
    let msg = match tokio::time::timeout(Duration::from_secs(30), ask).await {
        Ok(Ok(m)) => m,
        Ok(Err(e)) if e.kind() == async_nats::RequestErrorKind::NoResponders => return Err(ApiError::unavailable(format!("the node agent of {node} is not reachable"))),
        Ok(Err(e)) if e.kind() != async_nats::RequestErrorKind::TimedOut => return Err(ApiError::internal(format!("opening a stream on {node}: {e}"))),
        _ => return Err(ApiError::new(504, "Timeout", format!("the node {node} did not open the stream in time"))),
    };
    match codec::decode::<OpenReply>(&msg.payload).map_err(|e| ApiError::internal(format!("bad stream answer from {node}: {e}")))? {
        OpenReply::Opened { inbox } => Ok(pipe(nats, sub, inbox)),
        OpenReply::Refused { code, message } => Err(match code {
            404 => ApiError::new(404, "NotFound", message),
            400 => ApiError::bad_request(message),
            503 => ApiError::unavailable(message),
            c => ApiError::new(c, "InternalError", message),
        }),
    }
}

pub async fn handle(st: &AppState, res: &ResourceInfo, ns: Option<&str>, name: &str, sub: &str, req: &Req) -> Result<Response, ApiError> {
    match sub {
        "portforward" => portforward::handle(st, res, ns, name, req).await,
        _ => {
            let p = pod_for_stream(st, res, ns, name, sub).await?;
            let container = pick_container(&p.pod, req.q("container"))?;
            remotecommand::handle(st, p, container, sub, req).await
        }
    }
}
