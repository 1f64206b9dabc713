//! The Raft transport between state-group members: a gRPC service (tonic, generated in
//! build.rs without protoc) whose messages are openraft's own types in MessagePack. It
//! does not depend on NATS, so members elect a leader and replicate while NATS is down.
//!
//! A fault switch (`SetFault`) isolates a member: it refuses every incoming Raft RPC and
//! fails every outgoing one, which is how the fault tests cut a minority off.

use super::TypeConfig;
use bytes::{Buf, BufMut};
use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest, VoteResponse,
};
use openraft::{BasicNode, Raft};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status};

mod generated {
    include!(concat!(env!("OUT_DIR"), "/flotilla.state.Raft.rs"));
}
use generated::raft_client::RaftClient;
use generated::raft_server::{Raft as RaftRpc, RaftServer};

type NodeId = u64;

pub type AppendReq = AppendEntriesRequest<TypeConfig>;
pub type AppendResp = Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>;
pub type VoteReq = VoteRequest<NodeId>;
pub type VoteResp = Result<VoteResponse<NodeId>, RaftError<NodeId>>;
pub type SnapshotReq = InstallSnapshotRequest<TypeConfig>;
pub type SnapshotResp = Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>;

/// The fault switch, as asked and as answered: `isolated: Some(b)` sets it, `None` only
/// reads it; the answer carries the state now.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct Fault {
    pub isolated: Option<bool>,
}

/// Snapshots travel in chunks of openraft's `snapshot_max_chunk_size`; a 1.5 MiB value in
/// an append batch needs more than tonic's 4 MiB default too.
const MAX_MESSAGE: usize = 64 * 1024 * 1024;
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

// ---------------------------------------------------------------------------------------
// Codec

/// MessagePack for any serde type: openraft's requests and answers need no proto mirror.
pub struct MsgPackCodec<T, U>(PhantomData<fn(T) -> U>);

impl<T, U> Default for MsgPackCodec<T, U> {
    fn default() -> Self {
        MsgPackCodec(PhantomData)
    }
}

pub struct MsgPackEncoder<T>(PhantomData<fn(T)>);
pub struct MsgPackDecoder<U>(PhantomData<fn() -> U>);

impl<T, U> Codec for MsgPackCodec<T, U>
where
    T: Serialize + Send + 'static,
    U: DeserializeOwned + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = MsgPackEncoder<T>;
    type Decoder = MsgPackDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        MsgPackEncoder(PhantomData)
    }
    fn decoder(&mut self) -> Self::Decoder {
        MsgPackDecoder(PhantomData)
    }
}

impl<T: Serialize> Encoder for MsgPackEncoder<T> {
    type Item = T;
    type Error = Status;

    fn encode(&mut self, item: T, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        let bytes = schema::codec::encode(&item).map_err(|e| Status::internal(format!("encoding a Raft message: {e}")))?;
        dst.put_slice(&bytes);
        Ok(())
    }
}

impl<U: DeserializeOwned> Decoder for MsgPackDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        let bytes = src.copy_to_bytes(src.remaining());
        schema::codec::decode(&bytes).map(Some).map_err(|e| Status::invalid_argument(format!("decoding a Raft message: {e}")))
    }
}

// ---------------------------------------------------------------------------------------
// Fault switch

/// Shared by a member's server and its clients.
#[derive(Clone, Default)]
pub struct Faults(Arc<AtomicBool>);

impl Faults {
    pub fn isolated(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
    fn set(&self, on: bool) {
        self.0.store(on, Ordering::SeqCst);
    }
}

#[derive(Debug, thiserror::Error)]
#[error("this member is isolated by its fault switch")]
struct Isolated;

// ---------------------------------------------------------------------------------------
// Server

struct Service {
    raft: Raft<TypeConfig>,
    faults: Faults,
}

impl Service {
    fn admit(&self) -> Result<(), Status> {
        if self.faults.isolated() {
            return Err(Status::unavailable(Isolated.to_string()));
        }
        Ok(())
    }
}

#[tonic::async_trait]
impl RaftRpc for Service {
    async fn append_entries(&self, req: Request<AppendReq>) -> Result<Response<AppendResp>, Status> {
        self.admit()?;
        Ok(Response::new(self.raft.append_entries(req.into_inner()).await))
    }

    async fn vote(&self, req: Request<VoteReq>) -> Result<Response<VoteResp>, Status> {
        self.admit()?;
        Ok(Response::new(self.raft.vote(req.into_inner()).await))
    }

    async fn install_snapshot(&self, req: Request<SnapshotReq>) -> Result<Response<SnapshotResp>, Status> {
        self.admit()?;
        Ok(Response::new(self.raft.install_snapshot(req.into_inner()).await))
    }

    async fn set_fault(&self, req: Request<Fault>) -> Result<Response<Fault>, Status> {
        if let Some(on) = req.into_inner().isolated {
            tracing::warn!(isolated = on, "state: Raft fault switch set");
            self.faults.set(on);
        }
        Ok(Response::new(Fault { isolated: Some(self.faults.isolated()) }))
    }
}

/// Serves the member's Raft RPCs on `listener` until `cancel` fires.
pub fn serve(listener: tokio::net::TcpListener, raft: Raft<TypeConfig>, faults: Faults, cancel: CancellationToken) -> JoinHandle<()> {
    let svc = RaftServer::new(Service { raft, faults }).max_decoding_message_size(MAX_MESSAGE).max_encoding_message_size(MAX_MESSAGE);
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    tokio::spawn(async move {
        let res = tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming_shutdown(incoming, cancel.cancelled_owned())
            .await;
        if let Err(e) = res {
            tracing::error!(error = %e, "state: the Raft transport stopped");
        }
    })
}

/// Flips (or, with `None`, reads) the fault switch of the member whose Raft transport
/// listens on `addr`.
pub async fn set_fault(addr: &str, isolated: Option<bool>) -> anyhow::Result<bool> {
    let channel = Endpoint::from_shared(format!("http://{addr}"))?.connect_timeout(CONNECT_TIMEOUT).connect().await?;
    let got = RaftClient::new(channel).set_fault(Fault { isolated }).await?.into_inner();
    Ok(got.isolated.unwrap_or(false))
}

// ---------------------------------------------------------------------------------------
// Client

/// Makes one client per peer; openraft asks for a new one after a failure.
#[derive(Clone, Default)]
pub struct Network {
    pub faults: Faults,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Client;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Client {
        // Lazy: a peer that is down now is dialed again on the next RPC, not here.
        let client = Endpoint::from_shared(format!("http://{}", node.addr)).map(|e| {
            let channel = e.connect_timeout(CONNECT_TIMEOUT).tcp_nodelay(true).connect_lazy();
            RaftClient::new(channel).max_decoding_message_size(MAX_MESSAGE).max_encoding_message_size(MAX_MESSAGE)
        });
        Client { target, addr: node.addr.clone(), client: client.map_err(|e| e.to_string()), faults: self.faults.clone() }
    }
}

pub struct Client {
    target: NodeId,
    addr: String,
    client: Result<RaftClient<Channel>, String>,
    faults: Faults,
}

#[derive(Debug, thiserror::Error)]
#[error("state member {target} at {addr}: {reason}")]
struct PeerError {
    target: NodeId,
    addr: String,
    reason: String,
}

type RpcResult<T, E> = Result<T, RPCError<NodeId, BasicNode, E>>;

impl Client {
    fn peer_error(&self, reason: impl ToString) -> PeerError {
        PeerError { target: self.target, addr: self.addr.clone(), reason: reason.to_string() }
    }

    /// A client to call with, unless the fault switch or a bad address says no.
    fn ready<E: std::error::Error>(&self) -> RpcResult<RaftClient<Channel>, E> {
        if self.faults.isolated() {
            return Err(RPCError::Unreachable(Unreachable::new(&Isolated)));
        }
        self.client.clone().map_err(|e| RPCError::Unreachable(Unreachable::new(&self.peer_error(e))))
    }

    /// Maps the outcome of one call: transport trouble is `Unreachable` (openraft backs off
    /// and retries), an answer that is a Raft error is the peer's `RemoteError`.
    fn finish<T, E: std::error::Error>(
        &self,
        r: Result<Result<Response<Result<T, E>>, Status>, tokio::time::error::Elapsed>,
    ) -> RpcResult<T, E> {
        match r {
            Err(_) => Err(RPCError::Network(NetworkError::new(&self.peer_error("timed out")))),
            Ok(Err(status)) => Err(RPCError::Unreachable(Unreachable::new(&self.peer_error(status.message())))),
            Ok(Ok(resp)) => resp.into_inner().map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e))),
        }
    }
}

impl RaftNetwork<TypeConfig> for Client {
    async fn append_entries(&mut self, rpc: AppendReq, option: RPCOption) -> RpcResult<AppendEntriesResponse<NodeId>, RaftError<NodeId>> {
        let mut c = self.ready()?;
        let r = tokio::time::timeout(option.hard_ttl(), c.append_entries(rpc)).await;
        self.finish(r)
    }

    async fn install_snapshot(
        &mut self,
        rpc: SnapshotReq,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>> {
        let mut c = self.ready()?;
        let r = tokio::time::timeout(option.hard_ttl(), c.install_snapshot(rpc)).await;
        self.finish(r)
    }

    async fn vote(&mut self, rpc: VoteReq, option: RPCOption) -> RpcResult<VoteResponse<NodeId>, RaftError<NodeId>> {
        let mut c = self.ready()?;
        let r = tokio::time::timeout(option.hard_ttl(), c.vote(rpc)).await;
        self.finish(r)
    }
}
