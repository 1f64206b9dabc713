//! The state group's face on the bus. Writes, linearizable reads and admin requests go to
//! the leader only: a member subscribes to those subjects while it leads with a fresh
//! quorum acknowledgement and unsubscribes when it stops, so writers never need to know
//! who leads (no answer yet means "retry"). Serializable reads and status go to any
//! member. Every request gets its own task and an answer.

use super::{apply, history, store, TypeConfig};
use futures::StreamExt;
use openraft::error::{CheckIsLeaderError, ClientWriteError, RaftError};
use openraft::{BasicNode, ChangeMembers, Raft, RaftMetrics, ServerState};
use schema::codec;
use schema::store::{AdminOp, AdminResult, Consistency, MemberStatus, ReadOp, ReadResult, StoreError, WriteRequest, WriteResult};
use schema::subjects;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// Every member listens in one queue group, so a request reaches exactly one of them.
const QUEUE_GROUP: &str = "flotilla-state";
/// How long shutdown waits for requests already being handled.
const DRAIN_FOR: Duration = Duration::from_secs(5);
/// A leader that has not heard from a quorum for this long stops taking requests: it may
/// be cut off, and a newer leader may be serving already.
const LEASE_MS: u64 = 1_000;
/// How often leadership is re-checked even without a metrics change (the lease ages).
const GATE_TICK: Duration = Duration::from_millis(100);
/// A backup stays fetchable this long after it was taken.
const BACKUP_TTL: Duration = Duration::from_secs(300);
const BACKUP_CHUNK: usize = 1024 * 1024;

/// Writes waiting to be proposed, each with where its answer goes.
type Pending = (apply::Proposal, tokio::sync::oneshot::Sender<Result<WriteResult, StoreError>>);

/// At most this many writes, and about this many bytes, go into one Raft entry.
const BATCH_WRITES: usize = 1024;
const BATCH_BYTES: usize = 2 * 1024 * 1024;
/// Batches in flight at once: one being appended while the one before is applied.
const BATCHES_IN_FLIGHT: usize = 2;

#[derive(Clone)]
struct Ctx {
    nats: async_nats::Client,
    raft: Raft<TypeConfig>,
    proposals: tokio::sync::mpsc::Sender<Pending>,
    read_index: tokio::sync::mpsc::Sender<ReadWaiter>,
    db: store::Db,
    node_id: u64,
    quota_bytes: u64,
    backups: Arc<Mutex<HashMap<String, Backup>>>,
}

struct Backup {
    taken: Instant,
    rev: u64,
    data: Arc<Vec<u8>>,
}

#[derive(Clone, Copy)]
enum Kind {
    Write,
    Read(Consistency),
    Admin,
    /// A node agent's own write or read subject: checked against what that node may touch.
    NodeWrite,
    NodeRead,
}

pub struct Limits {
    pub quota_bytes: u64,
}

/// Whether this member is taking leader-only requests right now.
pub type Serving = tokio::sync::watch::Receiver<bool>;

/// Starts serving until `cancel` fires; the returned tasks end once their in-flight
/// requests are answered (or `DRAIN_FOR` passes).
pub async fn spawn(
    nats: async_nats::Client,
    raft: Raft<TypeConfig>,
    db: store::Db,
    limits: Limits,
    cancel: CancellationToken,
) -> anyhow::Result<(Vec<JoinHandle<()>>, Serving)> {
    let node_id = raft.metrics().borrow().id;
    let (proposals, queue) = tokio::sync::mpsc::channel(BATCH_WRITES * 4);
    let (read_index, readers) = tokio::sync::mpsc::channel(READS_WAITING);
    let mut tasks = vec![tokio::spawn(propose(raft.clone(), queue)), tokio::spawn(share_read_index(raft.clone(), readers))];
    let ctx = Ctx { nats: nats.clone(), raft, proposals, read_index, db, node_id, quota_bytes: limits.quota_bytes, backups: Default::default() };
    let local = nats.queue_subscribe(subjects::STATE_READ_LOCAL, QUEUE_GROUP.to_string()).await?;
    tasks.push(tokio::spawn(serve(local, Kind::Read(Consistency::Serializable), ctx.clone(), cancel.clone())));
    let status = nats.subscribe(subjects::STATE_STATUS).await?;
    tasks.push(tokio::spawn(serve_status(status, ctx.clone(), cancel.clone())));
    let (serving_tx, serving) = tokio::sync::watch::channel(false);
    tasks.push(tokio::spawn(gate(ctx.clone(), serving_tx, cancel.clone())));
    // Make sure the server has registered the subscriptions before callers are told the
    // state group is up.
    nats.flush().await?;
    Ok((tasks, serving))
}

/// Group commit of writes: takes every write waiting (up to a batch), proposes them as one
/// Raft entry, and hands each its own answer. While a batch is in flight the next one
/// gathers, so the busier the group, the more writes share an append and its fsync.
/// Ends when every sender is gone (the request servers have stopped).
async fn propose(raft: Raft<TypeConfig>, mut queue: tokio::sync::mpsc::Receiver<Pending>) {
    let slots = Arc::new(tokio::sync::Semaphore::new(BATCHES_IN_FLIGHT));
    let mut inflight = JoinSet::new();
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else { break };
        let Some(first) = queue.recv().await else { break };
        let mut bytes = first.0.op.size();
        let mut batch = vec![first];
        while batch.len() < BATCH_WRITES && bytes < BATCH_BYTES {
            match queue.try_recv() {
                Ok(p) => {
                    bytes += p.0.op.size();
                    batch.push(p);
                }
                Err(_) => break,
            }
        }
        while inflight.try_join_next().is_some() {}
        let raft = raft.clone();
        inflight.spawn(async move {
            let (proposals, answer_to): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
            let n = proposals.len();
            bus::metrics::count("flotilla_state_batches_total", 1.0);
            bus::metrics::count("flotilla_state_writes_total", n as f64);
            let started = std::time::Instant::now();
            let outcome = raft.client_write(apply::Batch { proposals }).await;
            bus::metrics::observe("flotilla_state_commit_seconds", "Time to commit and apply one batch of writes through Raft, on the leader.", bus::metrics::COMMIT_BUCKETS, String::new(), started.elapsed().as_secs_f64());
            drop(slot);
            let answers: Vec<Result<WriteResult, StoreError>> = match outcome {
                Ok(resp) if resp.data.len() == n => resp.data,
                Ok(resp) => vec![Err(StoreError::Internal(format!("{} answers for {n} writes", resp.data.len()))); n],
                Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => vec![Err(StoreError::NotLeader { leader: f.leader_id }); n],
                Err(e) => vec![Err(StoreError::Unavailable(e.to_string())); n],
            };
            for (tx, a) in answer_to.into_iter().zip(answers) {
                let _ = tx.send(a);
            }
        });
    }
    while inflight.join_next().await.is_some() {}
}

/// A linearizable read waiting for a read-index round that started after it arrived.
type ReadWaiter = tokio::sync::oneshot::Sender<Result<(), StoreError>>;
const READS_WAITING: usize = 16 * 1024;

/// Read index shared by every read waiting at once, as etcd does: openraft 0.9 sends a
/// heartbeat round per `ensure_linearizable` call, so a thousand concurrent reads were a
/// thousand rounds. Reads that arrive while a round is under way wait for the next one,
/// because a round only proves leadership from the moment it started.
async fn share_read_index(raft: Raft<TypeConfig>, mut queue: tokio::sync::mpsc::Receiver<ReadWaiter>) {
    while let Some(first) = queue.recv().await {
        let mut waiting = vec![first];
        while let Ok(w) = queue.try_recv() {
            waiting.push(w);
        }
        bus::metrics::count("flotilla_state_read_index_rounds_total", 1.0);
        let outcome = match raft.ensure_linearizable().await {
            Ok(_) => Ok(()),
            Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f))) => Err(StoreError::NotLeader { leader: f.leader_id }),
            Err(e) => Err(StoreError::Unavailable(e.to_string())),
        };
        for w in waiting {
            let _ = w.send(outcome.clone());
        }
    }
}

/// Whether this member should take leader-only requests now.
fn leads(m: &RaftMetrics<u64, BasicNode>) -> bool {
    if m.state != ServerState::Leader || m.current_leader != Some(m.id) {
        return false;
    }
    let voters = m.membership_config.membership().voter_ids().count();
    voters <= 1 || m.millis_since_quorum_ack.is_some_and(|ms| ms < LEASE_MS)
}

fn export_metrics(m: &RaftMetrics<u64, BasicNode>) {
    use bus::metrics::set;
    // The leader each member (several may share a process) saw last: a change counts.
    static LEADERS: Mutex<BTreeMap<u64, u64>> = Mutex::new(BTreeMap::new());
    if let (Some(l), Ok(mut seen)) = (m.current_leader, LEADERS.lock()) {
        if seen.insert(m.id, l) != Some(l) {
            let member = m.id.to_string();
            bus::metrics::inc("flotilla_state_leader_changes_total", "Times a member saw the group's leader change (its first leader included).", bus::metrics::labels(&[("member", &member)]), 1.0);
        }
    }
    set("flotilla_state_leader", if m.state == ServerState::Leader { 1.0 } else { 0.0 });
    set("flotilla_state_term", m.current_term as f64);
    set("flotilla_state_applied_index", m.last_applied.map(|l| l.index).unwrap_or(0) as f64);
    set("flotilla_state_snapshot_index", m.snapshot.map(|l| l.index).unwrap_or(0) as f64);
    set("flotilla_state_voters", m.membership_config.membership().voter_ids().count() as f64);
}

/// Subscribes to the leader-only subjects while this member leads, and lets go when it
/// stops leading (requests already taken are still answered).
async fn gate(ctx: Ctx, serving_tx: tokio::sync::watch::Sender<bool>, cancel: CancellationToken) {
    let mut metrics = ctx.raft.metrics();
    let mut serving: Option<(CancellationToken, Vec<JoinHandle<()>>)> = None;
    let mut draining: Vec<JoinHandle<()>> = Vec::new();
    loop {
        let lead = {
            let m = metrics.borrow_and_update();
            export_metrics(&m);
            leads(&m)
        };
        match (lead, serving.is_some()) {
            (true, false) => match subscribe_leader(&ctx, &cancel).await {
                Ok(s) => {
                    tracing::info!(id = ctx.node_id, "state: leading; taking writes");
                    serving = Some(s);
                }
                Err(e) => tracing::warn!(error = %e, "state: subscribing to the leader subjects failed; retrying"),
            },
            (false, true) => {
                if let Some((stop, tasks)) = serving.take() {
                    tracing::info!(id = ctx.node_id, "state: not leading (or no quorum); no longer taking writes");
                    stop.cancel();
                    draining.extend(tasks);
                }
            }
            _ => {}
        }
        serving_tx.send_if_modified(|s| std::mem::replace(s, serving.is_some()) != serving.is_some());
        draining.retain(|t| !t.is_finished());
        tokio::select! {
            _ = cancel.cancelled() => break,
            r = metrics.changed() => if r.is_err() { break },
            _ = tokio::time::sleep(GATE_TICK) => {}
        }
    }
    if let Some((stop, tasks)) = serving.take() {
        stop.cancel();
        draining.extend(tasks);
    }
    for t in draining {
        let _ = t.await;
    }
}

async fn subscribe_leader(ctx: &Ctx, cancel: &CancellationToken) -> anyhow::Result<(CancellationToken, Vec<JoinHandle<()>>)> {
    let stop = cancel.child_token();
    let mut tasks = Vec::new();
    for (subject, kind) in [
        (subjects::STATE_WRITE, Kind::Write),
        (subjects::STATE_READ, Kind::Read(Consistency::Linearizable)),
        (subjects::STATE_ADMIN, Kind::Admin),
        (subjects::NODE_WRITES, Kind::NodeWrite),
        (subjects::NODE_READS, Kind::NodeRead),
    ] {
        let sub = ctx.nats.queue_subscribe(subject, QUEUE_GROUP.to_string()).await?;
        tasks.push(tokio::spawn(serve(sub, kind, ctx.clone(), stop.clone())));
    }
    ctx.nats.flush().await?;
    Ok((stop, tasks))
}

fn role(state: ServerState) -> &'static str {
    match state {
        ServerState::Leader => "leader",
        ServerState::Follower => "follower",
        ServerState::Learner => "learner",
        ServerState::Candidate => "candidate",
        ServerState::Shutdown => "shutdown",
    }
}

/// What this member says of itself and of the membership it knows (so a caller can tell
/// which members did not answer).
pub fn member_status(m: &RaftMetrics<u64, BasicNode>) -> MemberStatus {
    let membership = m.membership_config.membership();
    let addr = membership.get_node(&m.id).map(|n| n.addr.clone()).filter(|a| !a.is_empty()).unwrap_or_else(|| "-".into());
    MemberStatus {
        id: m.id,
        pid: std::process::id(),
        addr,
        role: role(m.state).into(),
        applied: m.last_applied.map(|l| l.index).unwrap_or(0),
        members: membership.nodes().map(|(id, n)| (*id, n.addr.clone())).collect(),
        voters: membership.voter_ids().collect(),
        snapshot: m.snapshot.map(|l| l.index),
    }
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
        let status = member_status(&ctx.raft.metrics().borrow());
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
                Kind::Write => encode_answer(&observed(handle_write(&ctx, &msg.payload, msg.headers.as_ref()), msg.headers.as_ref()).await),
                Kind::Read(c) => encode_answer(&handle_read(&ctx, &msg.payload, c).await),
                Kind::Admin => encode_answer(&handle_admin(&ctx, &msg.payload).await),
                Kind::NodeWrite | Kind::NodeRead => {
                    let node = subjects::node_of_request(msg.subject.as_str()).map(subjects::untoken).unwrap_or_default();
                    if matches!(kind, Kind::NodeWrite) {
                        encode_answer(&handle_node_write(&ctx, &node, &msg.payload, msg.headers.as_ref()).await)
                    } else {
                        encode_answer(&handle_node_read(&ctx, &node, &msg.payload).await)
                    }
                }
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

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// Refuses a write that would grow a store already at its quota; deletes always pass, so
/// space can be freed. Checked by the leader before proposing: a refused write never
/// enters the log, so every member still applies the same entries.
fn check_quota(ctx: &Ctx, req: &WriteRequest) -> Result<(), StoreError> {
    let size = req.op.size() as u64;
    if size == 0 {
        return Ok(());
    }
    let used = store::kv_bytes(&ctx.db).map_err(|e| StoreError::Internal(format!("{e:#}")))?;
    if used + size > ctx.quota_bytes {
        return Err(StoreError::QuotaExceeded { used, quota: ctx.quota_bytes });
    }
    Ok(())
}

/// Counts a write as a message the `state` actor handled and, when it came in a trace,
/// records its span, so the dashboard shows the leader beside the other actors.
async fn observed<T>(f: impl std::future::Future<Output = Result<T, StoreError>>, headers: Option<&async_nats::HeaderMap>) -> Result<T, StoreError> {
    let trace = headers.and_then(|h| h.get(schema::trace::HEADER)).and_then(|v| schema::trace::TraceParent::parse(v.as_str()).ok());
    let (started, at) = (std::time::Instant::now(), std::time::SystemTime::now());
    let out = f.await;
    // A refused write (conflict, not found) is an answer; only the store failing is a failure.
    if matches!(out, Err(StoreError::Internal(_))) {
        bus::metrics::failed("state", started.elapsed())
    } else {
        bus::metrics::handled("state", started.elapsed())
    }
    if let Some(t) = trace {
        bus::trace::record(bus::trace::SpanRecord { trace: t, span_id: bus::trace::span_id(), name: "state", started: at, took: started.elapsed() });
    }
    out
}

async fn handle_write(ctx: &Ctx, payload: &[u8], headers: Option<&async_nats::HeaderMap>) -> Result<WriteResult, StoreError> {
    let req: WriteRequest = codec::decode(payload).map_err(|e| StoreError::BadRequest(format!("undecodable write: {e}")))?;
    propose_write(ctx, req, headers).await
}

fn decode_value(bytes: &[u8]) -> Result<serde_json::Value, StoreError> {
    codec::decode(bytes).map_err(|e| StoreError::BadRequest(format!("undecodable object: {e}")))
}

/// A write from node agent `node` (the subject it came on says so): the leader checks it
/// against the stored object before proposing. The check and the proposal are not one
/// step; a node racing a rebind of a pod it does not hold can at most lose to a
/// compare-and-swap, since spec.nodeName never changes once set.
async fn handle_node_write(ctx: &Ctx, node: &str, payload: &[u8], headers: Option<&async_nats::HeaderMap>) -> Result<WriteResult, StoreError> {
    let req: WriteRequest = codec::decode(payload).map_err(|e| StoreError::BadRequest(format!("undecodable write: {e}")))?;
    let key = req.op.key().to_string();
    let db = ctx.db.clone();
    let k = key.clone();
    let (old, _) = on_disk(move || store::get(&db, &k)).await?;
    let old = old.map(|s| decode_value(&s.value)).transpose()?;
    let new = match &req.op {
        schema::store::WriteOp::Create { value, .. } | schema::store::WriteOp::Update { value, .. } => Some(decode_value(value)?),
        schema::store::WriteOp::Delete { .. } => None,
    };
    if let Err(f) = schema::noderestriction::check_write(node, req.op.verb(), &key, old.as_ref(), new.as_ref()) {
        bus::metrics::count("flotilla_state_node_writes_refused_total", 1.0);
        tracing::warn!(node, key = %key, "state: refused a node's write: {f}");
        return Err(StoreError::Forbidden(f.to_string()));
    }
    propose_write(ctx, req, headers).await
}

/// Every pod in the store, decoded (what a node's Secret reads are checked against).
async fn all_pods(ctx: &Ctx) -> Result<Vec<serde_json::Value>, StoreError> {
    let db = ctx.db.clone();
    let items = on_disk(move || {
        let (mut out, mut after) = (Vec::new(), None::<String>);
        loop {
            let (items, _, more) = store::list(&db, "pods/", after.as_deref(), 10_000)?;
            after = items.last().map(|s| s.key.clone());
            out.extend(items);
            if !more {
                return Ok(out);
            }
        }
    })
    .await?;
    Ok(items.iter().filter_map(|s| decode_value(&s.value).ok()).collect())
}

/// A read from node agent `node`: answered as a linearizable read, except that Secrets
/// no pod bound to the node references are refused (a get) or left out (a list), as the
/// Node authorizer does for kubelets.
async fn handle_node_read(ctx: &Ctx, node: &str, payload: &[u8]) -> Result<ReadResult, StoreError> {
    const SECRETS: &str = "secrets/";
    let op: ReadOp = codec::decode(payload).map_err(|e| StoreError::BadRequest(format!("undecodable read: {e}")))?;
    let touches_secrets = match &op {
        ReadOp::Get { key } => key.starts_with(SECRETS),
        ReadOp::List { prefix, .. } => prefix.starts_with(SECRETS) || SECRETS.starts_with(prefix.as_str()),
    };
    if let (ReadOp::Get { key }, true) = (&op, touches_secrets) {
        let pods = all_pods(ctx).await?;
        if !schema::noderestriction::may_read_secret(node, key, &pods) {
            return Err(StoreError::Forbidden(format!("node {node:?} may not read {key}: no pod bound to it references this Secret")));
        }
    }
    let answer = handle_read_op(ctx, op, Consistency::Linearizable).await?;
    if !touches_secrets {
        return Ok(answer);
    }
    match answer {
        ReadResult::List { items, rev, more } => {
            let pods = all_pods(ctx).await?;
            let items = items.into_iter().filter(|s| !s.key.starts_with(SECRETS) || schema::noderestriction::may_read_secret(node, &s.key, &pods)).collect();
            Ok(ReadResult::List { items, rev, more })
        }
        other => Ok(other),
    }
}

async fn propose_write(ctx: &Ctx, req: WriteRequest, headers: Option<&async_nats::HeaderMap>) -> Result<WriteResult, StoreError> {
    let trace = headers.and_then(|h| h.get(schema::trace::HEADER)).and_then(|v| schema::trace::TraceParent::parse(v.as_str()).ok());
    let writer = headers.and_then(|h| h.get(schema::obs::WRITER_HEADER)).map(|v| v.as_str().to_string());
    let span = tracing::info_span!("state", op = req.op.verb(), key = %req.op.key(), trace_id = tracing::field::Empty);
    if let Some(t) = &trace {
        span.record("trace_id", tracing::field::display(t.trace_id_hex()));
    }
    async move {
        apply::check_size(&req.op)?;
        check_quota(ctx, &req)?;
        let proposal = apply::Proposal { op: req.op, id: req.id, at_ms: now_ms(), trace: trace.map(|t| t.to_string()), writer };
        let (tx, rx) = tokio::sync::oneshot::channel();
        ctx.proposals.send((proposal, tx)).await.map_err(|_| StoreError::Unavailable("this member is stopping".into()))?;
        rx.await.map_err(|_| StoreError::Unavailable("this member stopped before the write was answered".into()))?
    }
    .instrument(span)
    .await
}

/// Read index: confirms leadership with a quorum and waits until the state machine has
/// applied everything committed before the read arrived.
async fn linearize(ctx: &Ctx) -> Result<(), StoreError> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    ctx.read_index.send(tx).await.map_err(|_| StoreError::Unavailable("this member is stopping".into()))?;
    rx.await.map_err(|_| StoreError::Unavailable("this member stopped before the read was answered".into()))?
}

async fn on_disk<T: Send + 'static>(f: impl FnOnce() -> anyhow::Result<T> + Send + 'static) -> Result<T, StoreError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(r)) => Ok(r),
        Ok(Err(e)) => Err(StoreError::Internal(format!("{e:#}"))),
        Err(e) => Err(StoreError::Internal(format!("disk task: {e}"))),
    }
}

async fn handle_read(ctx: &Ctx, payload: &[u8], consistency: Consistency) -> Result<ReadResult, StoreError> {
    let op: ReadOp = codec::decode(payload).map_err(|e| StoreError::BadRequest(format!("undecodable read: {e}")))?;
    handle_read_op(ctx, op, consistency).await
}

async fn handle_read_op(ctx: &Ctx, op: ReadOp, consistency: Consistency) -> Result<ReadResult, StoreError> {
    let span = match &op {
        ReadOp::Get { key } => tracing::info_span!("state", op = "get", key = %key),
        ReadOp::List { prefix, .. } => tracing::info_span!("state", op = "list", prefix = %prefix),
    };
    async move {
        if consistency == Consistency::Linearizable {
            linearize(ctx).await?;
        }
        let db = ctx.db.clone();
        on_disk(move || match op {
            ReadOp::Get { key } => store::get(&db, &key).map(|(item, rev)| Ok(ReadResult::Get { item, rev })),
            ReadOp::List { prefix, start_after, limit, at: None } => {
                store::list(&db, &prefix, start_after.as_deref(), limit).map(|(items, rev, more)| Ok(ReadResult::List { items, rev, more }))
            }
            ReadOp::List { prefix, start_after, limit, at: Some(at) } => history::list_at(&db, &prefix, start_after.as_deref(), limit, at)
                .map(|r| r.map(|(items, rev, more)| ReadResult::List { items, rev, more })),
        })
        .await?
    }
    .instrument(span)
    .await
}

async fn handle_admin(ctx: &Ctx, payload: &[u8]) -> Result<AdminResult, StoreError> {
    let op: AdminOp = codec::decode(payload).map_err(|e| StoreError::BadRequest(format!("undecodable admin request: {e}")))?;
    let span = tracing::info_span!("state", op = "admin");
    async move {
        match op {
            AdminOp::AddMember { id, addr } => add_member(ctx, id, addr).await,
            AdminOp::RemoveMember { id } => remove_member(ctx, id).await,
            AdminOp::Backup { backup, offset } => backup_chunk(ctx, backup, offset).await,
        }
    }
    .instrument(span)
    .await
}

fn members(ctx: &Ctx) -> AdminResult {
    let m = ctx.raft.metrics().borrow().membership_config.clone();
    let voters: BTreeSet<u64> = m.membership().voter_ids().collect();
    let learners = m.membership().nodes().map(|(id, _)| *id).filter(|id| !voters.contains(id)).collect();
    AdminResult::Members { voters: voters.into_iter().collect(), learners }
}

fn raft_failure<E: std::fmt::Display>(e: E) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

/// Adds a member as a learner, waits until it has caught up, then makes it a voter: the
/// group never counts a member in its quorum before it holds the log.
async fn add_member(ctx: &Ctx, id: u64, addr: String) -> Result<AdminResult, StoreError> {
    if addr.is_empty() {
        return Err(StoreError::BadRequest("a new member needs the address of its Raft transport".into()));
    }
    if ctx.raft.metrics().borrow().membership_config.membership().voter_ids().any(|v| v == id) {
        return Ok(members(ctx));
    }
    ctx.raft.add_learner(id, BasicNode::new(addr), true).await.map_err(raft_failure)?;
    ctx.raft.change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false).await.map_err(raft_failure)?;
    Ok(members(ctx))
}

/// Idempotent, like adding: a retried request (its first answer lost when the removed
/// member was the leader) finds the member gone and answers the membership as it is.
async fn remove_member(ctx: &Ctx, id: u64) -> Result<AdminResult, StoreError> {
    let (is_voter, is_node) = {
        let m = ctx.raft.metrics();
        let m = m.borrow();
        let membership = m.membership_config.membership();
        (membership.voter_ids().any(|v| v == id), membership.get_node(&id).is_some())
    };
    if !is_node {
        return Ok(members(ctx));
    }
    if is_voter {
        ctx.raft.change_membership(ChangeMembers::RemoveVoters(BTreeSet::from([id])), false).await.map_err(raft_failure)?;
    } else {
        ctx.raft.change_membership(ChangeMembers::RemoveNodes(BTreeSet::from([id])), false).await.map_err(raft_failure)?;
    }
    Ok(members(ctx))
}

/// A backup is the state machine at one linearizable point, encoded once and handed out
/// in chunks (the bus carries a few MiB per message; a store may be far larger).
async fn backup_chunk(ctx: &Ctx, backup: Option<String>, offset: u64) -> Result<AdminResult, StoreError> {
    let (name, rev, data) = match backup {
        Some(name) => {
            let mut all = ctx.backups.lock().map_err(|_| StoreError::Internal("backup table poisoned".into()))?;
            all.retain(|_, b| b.taken.elapsed() < BACKUP_TTL);
            let b = all.get(&name).ok_or_else(|| StoreError::BadRequest(format!("backup {name} is unknown or expired; start again")))?;
            (name, b.rev, b.data.clone())
        }
        None => {
            linearize(ctx).await?;
            let db = ctx.db.clone();
            let (rev, bytes) = on_disk(move || super::backup::encode(&db)).await?;
            let name = uuid::Uuid::new_v4().simple().to_string();
            let data = Arc::new(bytes);
            let mut all = ctx.backups.lock().map_err(|_| StoreError::Internal("backup table poisoned".into()))?;
            all.retain(|_, b| b.taken.elapsed() < BACKUP_TTL);
            all.insert(name.clone(), Backup { taken: Instant::now(), rev, data: data.clone() });
            (name, rev, data)
        }
    };
    let start = (offset as usize).min(data.len());
    let end = (start + BACKUP_CHUNK).min(data.len());
    Ok(AdminResult::BackupChunk { backup: name, total: data.len() as u64, rev, data: data[start..end].to_vec() })
}
