//! Cluster DNS (CoreDNS' job) inside the node agent: informers of Services and
//! EndpointSlices keep a snapshot that `resolve` (pure) answers from; names outside the
//! cluster domain go to the host's resolvers as they are (CoreDNS' `forward`). It listens
//! on the node's bridge gateway, port 53 UDP and TCP — the address this node's pods
//! have in their resolv.conf — and only where the agent has a bridge of its own.

pub mod endpoint;
pub mod resolve;
pub mod resolv_conf;

use bus::informer::{watch_objects, InformerEvent, Scope};
use bus::Client;
use futures::{FutureExt, StreamExt};
use hickory_proto::op::{Message, MessageType, Metadata, OpCode, ResponseCode};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use resolve::{Answer, Snapshot};
use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

const ACTOR: &str = "cluster-dns";
pub const PORT: u16 = 53;
/// How long one upstream resolver gets before the next is asked (resolv.conf's default).
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);
/// A TCP client that sends nothing for this long is dropped (CoreDNS' read timeout).
const TCP_IDLE: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error("binding {0}: {1}")]
    Bind(SocketAddr, std::io::Error),
}

/// The running server: what stops it and the task that ends once its sockets are closed.
pub struct DnsServer {
    pub addr: SocketAddr,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl DnsServer {
    pub async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
        tracing::info!(addr = %self.addr, "cluster DNS stopped");
    }
}

/// Binds with IP_FREEBIND: the CNI bridge plugin gives the bridge its gateway address only
/// when the first pod's sandbox is made, which is after the agent starts; the sockets
/// receive on it from then on.
fn bind(addr: SocketAddr, ty: socket2::Type) -> Result<socket2::Socket, DnsError> {
    let err = |e| DnsError::Bind(addr, e);
    let proto = if ty == socket2::Type::DGRAM { socket2::Protocol::UDP } else { socket2::Protocol::TCP };
    let s = socket2::Socket::new(socket2::Domain::IPV4, ty, Some(proto)).map_err(err)?;
    s.set_freebind_v4(true).map_err(err)?;
    s.set_reuse_address(true).map_err(err)?;
    s.set_nonblocking(true).map_err(err)?;
    s.bind(&addr.into()).map_err(err)?;
    if ty == socket2::Type::STREAM {
        s.listen(128).map_err(err)?;
    }
    Ok(s)
}

/// Starts serving on `ip`:53 (UDP and TCP) until stopped.
pub fn start(client: Client, ip: Ipv4Addr) -> Result<DnsServer, DnsError> {
    let addr = SocketAddr::from((ip, PORT));
    let udp = UdpSocket::from_std(bind(addr, socket2::Type::DGRAM)?.into()).map_err(|e| DnsError::Bind(addr, e))?;
    let tcp = TcpListener::from_std(bind(addr, socket2::Type::STREAM)?.into()).map_err(|e| DnsError::Bind(addr, e))?;
    let upstreams: Vec<SocketAddr> = resolv_conf::host().nameservers.into_iter().map(|ip| SocketAddr::new(ip, PORT)).filter(|a| *a != addr).collect();
    let stop = CancellationToken::new();
    let snap = Arc::new(RwLock::new(Snapshot::default()));
    let shared = Arc::new(Shared { snap: snap.clone(), upstreams });
    let span = tracing::info_span!("cluster-dns", addr = %addr);
    let (s1, s2, s3) = (stop.clone(), stop.clone(), stop.clone());
    let task = tokio::spawn(
        async move {
            tracing::info!(upstreams = ?shared.upstreams, "cluster DNS serving");
            let informers = tokio::spawn(follow(client, snap, s1).in_current_span());
            let udp = tokio::spawn(serve_udp(udp, shared.clone(), s2).in_current_span());
            let tcp = tokio::spawn(serve_tcp(tcp, shared, s3).in_current_span());
            let _ = tokio::join!(informers, udp, tcp);
        }
        .instrument(span),
    );
    Ok(DnsServer { addr, stop, task })
}

struct Shared {
    snap: Arc<RwLock<Snapshot>>,
    upstreams: Vec<SocketAddr>,
}

fn key(m: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> String {
    format!("{}/{}", m.namespace.as_deref().unwrap_or(""), m.name.as_deref().unwrap_or(""))
}

fn put<K: bus::client::Object>(map: &mut HashMap<String, K>, ev: InformerEvent<K>) {
    match ev {
        InformerEvent::Listed(items, _) => *map = items.into_iter().map(|k| (key(k.metadata()), k)).collect(),
        InformerEvent::Applied(k, _) => {
            map.insert(key(k.metadata()), k);
        }
        InformerEvent::Deleted(k, _) => {
            map.remove(&key(k.metadata()));
        }
    }
}

/// Keeps the snapshot in step with the informers, one rebuild per burst of events (the
/// service proxy's shape). Only events wake it: an idle cluster costs nothing here.
async fn follow(client: Client, snap: Arc<RwLock<Snapshot>>, stop: CancellationToken) {
    let mut services = watch_objects::<Service>(client.clone(), Scope::default()).boxed();
    let mut slices = watch_objects::<EndpointSlice>(client, Scope::default()).boxed();
    let (mut svcs, mut sls) = (HashMap::new(), HashMap::new());
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            Some(ev) = services.next() => put(&mut svcs, ev),
            Some(ev) = slices.next() => put(&mut sls, ev),
        }
        loop {
            if let Some(Some(ev)) = services.next().now_or_never() {
                put(&mut svcs, ev);
            } else if let Some(Some(ev)) = slices.next().now_or_never() {
                put(&mut sls, ev);
            } else {
                break;
            }
        }
        let next = bus::metrics::handle(ACTOR, || resolve::snapshot(svcs.values(), sls.values()));
        *snap.write().unwrap_or_else(|e| e.into_inner()) = next;
    }
}

/// The reply to one query: from the snapshot, or from upstream (None: no reply at all,
/// as for a message that is not a query).
async fn answer(shared: &Shared, bytes: &[u8]) -> Option<Vec<u8>> {
    let Ok(req) = Message::from_vec(bytes) else {
        // Too broken to read an id from: nothing sensible to say.
        if bytes.len() < 2 {
            return None;
        }
        let id = u16::from_be_bytes([bytes[0], bytes[1]]);
        return Message::error_msg(id, OpCode::Query, ResponseCode::FormErr).to_vec().ok();
    };
    if req.metadata.message_type != MessageType::Query {
        return None;
    }
    let mut resp = Message::response(req.metadata.id, req.metadata.op_code);
    resp.metadata = Metadata::response_from_request(&req.metadata);
    let Some(q) = req.queries.first().filter(|_| req.metadata.op_code == OpCode::Query && req.queries.len() == 1) else {
        resp.metadata.response_code = ResponseCode::NotImp;
        return resp.to_vec().ok();
    };
    resp.add_query(q.clone());
    let answer = {
        let snap = shared.snap.read().unwrap_or_else(|e| e.into_inner());
        resolve::resolve(&q.name.to_ascii(), q.query_type, &snap)
    };
    match answer {
        Answer::Records(recs) => {
            resp.metadata.authoritative = true;
            resp.metadata.recursion_available = true;
            resp.add_answers(recs);
        }
        Answer::NxDomain => {
            resp.metadata.authoritative = true;
            resp.metadata.recursion_available = true;
            resp.metadata.response_code = ResponseCode::NXDomain;
        }
        Answer::Forward => match forward(&shared.upstreams, bytes).await {
            Some(reply) => return Some(reply),
            None => resp.metadata.response_code = ResponseCode::ServFail,
        },
    }
    resp.to_vec().ok()
}

/// Sends the query as it came to each upstream in turn; the first reply with its id wins.
async fn forward(upstreams: &[SocketAddr], query: &[u8]) -> Option<Vec<u8>> {
    for up in upstreams {
        let Ok(sock) = UdpSocket::bind(if up.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }).await else { continue };
        if sock.send_to(query, up).await.is_err() {
            continue;
        }
        let mut buf = vec![0u8; 4096];
        let got = tokio::time::timeout(UPSTREAM_TIMEOUT, async {
            loop {
                let (n, from) = sock.recv_from(&mut buf).await.ok()?;
                if from == *up && n >= 2 && buf[..2] == query[..2] {
                    return Some(n);
                }
            }
        })
        .await;
        if let Ok(Some(n)) = got {
            buf.truncate(n);
            return Some(buf);
        }
        tracing::debug!(upstream = %up, "upstream resolver did not answer");
    }
    None
}

async fn serve_udp(sock: UdpSocket, shared: Arc<Shared>, stop: CancellationToken) {
    let sock = Arc::new(sock);
    let mut buf = vec![0u8; 4096];
    loop {
        let (n, peer) = tokio::select! {
            _ = stop.cancelled() => return,
            r = sock.recv_from(&mut buf) => match r {
                Ok(r) => r,
                Err(e) => {
                    tracing::debug!(error = %e, "dns udp receive");
                    continue;
                }
            },
        };
        let query = buf[..n].to_vec();
        let (sock, shared, stop) = (sock.clone(), shared.clone(), stop.clone());
        // Each query on its own: a slow upstream must not hold up cluster names.
        tokio::spawn(
            async move {
                tokio::select! {
                    _ = stop.cancelled() => {}
                    Some(reply) = answer(&shared, &query) => {
                        let _ = sock.send_to(&truncate_for_udp(reply), peer).await;
                    }
                }
            }
            .in_current_span(),
        );
    }
}

/// A reply over 512 bytes goes out cut to its header with TC set, so the client asks
/// again over TCP (no EDNS buffer sizes are honoured yet).
fn truncate_for_udp(reply: Vec<u8>) -> Vec<u8> {
    if reply.len() <= 512 {
        return reply;
    }
    match Message::from_vec(&reply) {
        Ok(m) => m.truncate().to_vec().unwrap_or(reply),
        Err(_) => reply,
    }
}

async fn serve_tcp(listener: TcpListener, shared: Arc<Shared>, stop: CancellationToken) {
    loop {
        let conn = tokio::select! {
            _ = stop.cancelled() => return,
            r = listener.accept() => match r {
                Ok((c, _)) => c,
                Err(e) => {
                    tracing::debug!(error = %e, "dns tcp accept");
                    continue;
                }
            },
        };
        let (shared, stop) = (shared.clone(), stop.clone());
        tokio::spawn(
            async move {
                tokio::select! {
                    _ = stop.cancelled() => {}
                    _ = serve_conn(conn, &shared) => {}
                }
            }
            .in_current_span(),
        );
    }
}

/// RFC 1035 4.2.2 / RFC 7766: two-byte length, then the message; several per connection.
async fn serve_conn(mut conn: tokio::net::TcpStream, shared: &Shared) {
    loop {
        let mut len = [0u8; 2];
        match tokio::time::timeout(TCP_IDLE, conn.read_exact(&mut len)).await {
            Ok(Ok(_)) => {}
            _ => return,
        }
        let mut query = vec![0u8; u16::from_be_bytes(len) as usize];
        if conn.read_exact(&mut query).await.is_err() {
            return;
        }
        let Some(reply) = answer(shared, &query).await else { continue };
        let Ok(n) = u16::try_from(reply.len()) else { return };
        if conn.write_all(&n.to_be_bytes()).await.is_err() || conn.write_all(&reply).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests;
