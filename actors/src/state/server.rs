//! The state group's face on the bus: request handlers for writes (through Raft) and
//! linearizable reads (read index, then the local state machine). Every request gets its
//! own task so a slow commit never holds up a read, and every request gets an answer.

use super::{apply, store, TypeConfig};
use futures::StreamExt;
use openraft::error::{CheckIsLeaderError, ClientWriteError, RaftError};
use openraft::Raft;
use schema::codec;
use schema::store::{ReadOp, ReadResult, StoreError, WriteOp, WriteResult};
use schema::subjects;
use std::time::Duration;
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// Every member listens in one queue group, so a request reaches exactly one of them.
const QUEUE_GROUP: &str = "flotilla-state";
/// How long shutdown waits for requests already being handled.
const DRAIN_FOR: Duration = Duration::from_secs(5);

#[derive(Clone)]
struct Ctx {
    nats: async_nats::Client,
    raft: Raft<TypeConfig>,
    db: store::Db,
}

#[derive(Clone, Copy)]
enum Kind {
    Write,
    Read,
}

/// Subscribes to the write and read subjects and serves them until `cancel` fires; the
/// returned tasks end once their in-flight requests are answered (or `DRAIN_FOR` passes).
pub async fn spawn(
    nats: async_nats::Client,
    raft: Raft<TypeConfig>,
    db: store::Db,
    cancel: CancellationToken,
) -> anyhow::Result<Vec<JoinHandle<()>>> {
    let ctx = Ctx { nats: nats.clone(), raft, db };
    let mut tasks = Vec::new();
    for (subject, kind) in [(subjects::STATE_WRITE, Kind::Write), (subjects::STATE_READ, Kind::Read)] {
        let sub = nats.queue_subscribe(subject, QUEUE_GROUP.to_string()).await?;
        tasks.push(tokio::spawn(serve(sub, kind, ctx.clone(), cancel.clone())));
    }
    let status = nats.subscribe(subjects::STATE_STATUS).await?;
    tasks.push(tokio::spawn(serve_status(status, ctx.clone(), cancel.clone())));
    // Make sure the server has registered the subscriptions before callers are told the
    // state group is up.
    nats.flush().await?;
    Ok(tasks)
}

/// Answers status requests from every member, so a caller hears the whole group.
async fn serve_status(mut sub: async_nats::Subscriber, ctx: Ctx, cancel: CancellationToken) {
    loop {
        let msg = tokio::select! {
            _ = cancel.cancelled() => break,
            m = sub.next() => m,
        };
        let Some(msg) = msg else { break };
        let Some(reply) = msg.reply.clone() else { continue };
        let m = ctx.raft.metrics().borrow().clone();
        let role = match m.state {
            openraft::ServerState::Leader => "leader",
            openraft::ServerState::Follower => "follower",
            openraft::ServerState::Learner => "learner",
            openraft::ServerState::Candidate => "candidate",
            openraft::ServerState::Shutdown => "shutdown",
        };
        let addr = m.membership_config.membership().get_node(&m.id).map(|n| n.addr.clone()).filter(|a| !a.is_empty()).unwrap_or_else(|| "-".into());
        let status = schema::store::MemberStatus { id: m.id, pid: std::process::id(), addr, role: role.into(), applied: m.last_applied.map(|l| l.index).unwrap_or(0) };
        if let Ok(bytes) = codec::encode(&status) {
            let _ = ctx.nats.publish(reply, bytes.into()).await;
        }
    }
}

async fn serve(mut sub: async_nats::Subscriber, kind: Kind, ctx: Ctx, cancel: CancellationToken) {
    let mut inflight = JoinSet::new();
    loop {
        let msg = tokio::select! {
            _ = cancel.cancelled() => break,
            m = sub.next() => m,
        };
        let Some(msg) = msg else { break };
        while inflight.try_join_next().is_some() {}
        let ctx = ctx.clone();
        inflight.spawn(async move {
            let Some(reply) = msg.reply.clone() else {
                tracing::debug!(subject = %msg.subject, "state request without a reply subject: ignored");
                return;
            };
            let answer = match kind {
                Kind::Write => encode_answer(&handle_write(&ctx, &msg.payload).await),
                Kind::Read => encode_answer(&handle_read(&ctx, &msg.payload).await),
            };
            if let Err(e) = ctx.nats.publish(reply, answer.into()).await {
                tracing::warn!(error = %e, "state: could not send the answer");
            }
        });
    }
    let _ = sub.unsubscribe().await;
    let drained = tokio::time::timeout(DRAIN_FOR, async { while inflight.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        inflight.abort_all();
        while inflight.join_next().await.is_some() {}
    }
}

fn encode_answer<T: serde::Serialize>(r: &Result<T, StoreError>) -> Vec<u8> {
    match codec::encode(r) {
        Ok(b) => b,
        Err(e) => {
            // Answer something decodable rather than leave the caller waiting for a timeout.
            let fallback: Result<T, StoreError> = Err(StoreError::Internal(format!("encoding the answer: {e}")));
            codec::encode(&fallback).unwrap_or_default()
        }
    }
}

async fn handle_write(ctx: &Ctx, payload: &[u8]) -> Result<WriteResult, StoreError> {
    let op: WriteOp = codec::decode(payload).map_err(|e| StoreError::Internal(format!("bad request: {e}")))?;
    let span = tracing::info_span!("state", op = "write", key = %op.key());
    async move {
        apply::check_size(&op)?;
        match ctx.raft.client_write(op).await {
            Ok(resp) => resp.data,
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => Err(StoreError::NotLeader { leader: f.leader_id }),
            Err(e) => Err(StoreError::Unavailable(e.to_string())),
        }
    }
    .instrument(span)
    .await
}

async fn handle_read(ctx: &Ctx, payload: &[u8]) -> Result<ReadResult, StoreError> {
    let op: ReadOp = codec::decode(payload).map_err(|e| StoreError::Internal(format!("bad request: {e}")))?;
    let span = match &op {
        ReadOp::Get { key } => tracing::info_span!("state", op = "get", key = %key),
        ReadOp::List { prefix, .. } => tracing::info_span!("state", op = "list", prefix = %prefix),
    };
    async move {
        // Read index: confirms leadership with a quorum and waits until the state machine
        // has applied everything committed before this read arrived.
        match ctx.raft.ensure_linearizable().await {
            Ok(_) => {}
            Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f))) => {
                return Err(StoreError::NotLeader { leader: f.leader_id })
            }
            Err(e) => return Err(StoreError::Unavailable(e.to_string())),
        }
        let db = ctx.db.clone();
        let res = tokio::task::spawn_blocking(move || match op {
            ReadOp::Get { key } => store::get(&db, &key).map(|(item, rev)| ReadResult::Get { item, rev }),
            ReadOp::List { prefix, start_after, limit } => {
                store::list(&db, &prefix, start_after.as_deref(), limit).map(|(items, rev, more)| ReadResult::List { items, rev, more })
            }
        })
        .await;
        match res {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(e)) => Err(StoreError::Internal(format!("{e:#}"))),
            Err(e) => Err(StoreError::Internal(format!("read task: {e}"))),
        }
    }
    .instrument(span)
    .await
}
