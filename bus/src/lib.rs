//! The bus: flotilla's NATS connection, the store client every component writes through,
//! the watch on the events stream, and the informer (list, then watch from the list's
//! revision, re-list when expired) that every actor is fed by.

pub mod admission;
pub mod client;
pub mod creds;
pub mod events;
pub mod fanout;
pub mod history;
pub mod informer;
pub mod metadata;
pub mod metrics;
pub mod obs;
pub mod otlp;
pub mod spdy;
pub mod streams;
pub mod trace;
pub mod usage;
pub mod watch;

use schema::codec;
use schema::store::{AdminOp, AdminResult, Consistency, ReadOp, ReadResult, RequestId, Revision, StoreError, Stored, WriteOp, WriteRequest, WriteResult};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use schema::subjects;
use std::time::Duration;

pub use client::Client;

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("nats: {0}")]
    Nats(String),
    #[error("codec: {0}")]
    Codec(#[from] codec::CodecError),
    /// The requested revision is older than the retained history: re-list.
    #[error("resource version {0} is too old")]
    Expired(Revision),
    /// The events stream's message at this revision is not an event of it: a watch stops
    /// there (an informer re-lists) rather than pass over a change it cannot read.
    #[error("the event at revision {rev} cannot be decoded: {reason}")]
    Undecodable { rev: Revision, reason: String },
    #[error("timed out: {0}")]
    Timeout(String),
}

impl BusError {
    fn nats(e: impl std::fmt::Display) -> Self {
        BusError::Nats(e.to_string())
    }
}

/// How long a store request may retry while the state group elects a leader or starts.
const STORE_RETRY_FOR: Duration = Duration::from_secs(15);

#[derive(Clone)]
pub struct Bus {
    pub nats: async_nats::Client,
    pub js: async_nats::jetstream::Context,
    /// Request ids: random per connection, then counted, so retries of one write carry
    /// one id and no two writes share one.
    ids: Arc<(u64, AtomicU64)>,
    /// Who this handle writes as (an actor's name, `gateway`), told to the state group in
    /// a header so an object's history can say which actor wrote each revision.
    writer: Option<&'static str>,
    /// Counts reconnects (not the first connect): watches reopen their consumers on each,
    /// since a consumer may have lived on the server that went away.
    reconnects: tokio::sync::watch::Receiver<u64>,
    /// Set for a node agent's bus: its reads and writes go on its own node's subjects, so
    /// the state group holds them to that node's objects.
    node: Option<Arc<str>>,
}

impl Bus {
    /// Connects to `url`, or to any of a cluster's servers given as a comma-separated list
    /// (the client fails over between them).
    pub async fn connect(url: &str) -> Result<Bus, BusError> {
        Bus::connect_as(url, None).await
    }

    /// Connects with a NATS identity (nkey and inbox prefix), or anonymously with None.
    pub async fn connect_as(url: &str, creds: Option<&creds::Credentials>) -> Result<Bus, BusError> {
        let servers: Vec<&str> = url.split(',').map(str::trim).filter(|u| !u.is_empty()).collect();
        // Every `connected` after this connection's first is a reconnect.
        let seen = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (reconnected, reconnects) = tokio::sync::watch::channel(0u64);
        let mut opts = async_nats::ConnectOptions::new();
        if let Some(c) = creds {
            opts = opts.nkey(c.seed.clone()).custom_inbox_prefix(&c.inbox);
        }
        let nats = opts
            .event_callback(move |ev| {
                let again = matches!(ev, async_nats::Event::Connected) && seen.swap(true, Ordering::Relaxed);
                if again {
                    reconnected.send_modify(|n| *n += 1);
                }
                async move { metrics::connection_event(&ev, again) }
            })
            .retry_on_initial_connect()
            .connection_timeout(Duration::from_secs(5))
            .connect(servers)
            .await
            .map_err(BusError::nats)?;
        let mut bus = Bus::from_client(nats);
        bus.reconnects = reconnects;
        Ok(bus)
    }

    /// A bus on a connection made elsewhere: its watches rely on the client's own
    /// consumer recreation, since its reconnects are not seen here.
    pub fn from_client(nats: async_nats::Client) -> Bus {
        let js = async_nats::jetstream::new(nats.clone());
        let (_, reconnects) = tokio::sync::watch::channel(0u64);
        Bus { nats, js, ids: Arc::new((rand::random(), AtomicU64::new(0))), reconnects, node: None, writer: None }
    }

    /// The same connection, writing as `writer`.
    pub fn named(&self, writer: &'static str) -> Bus {
        Bus { writer: Some(writer), ..self.clone() }
    }

    pub fn writer(&self) -> Option<&'static str> {
        self.writer
    }

    /// Resolves at this connection's next reconnect (never, for `from_client` buses).
    pub(crate) async fn reconnected(rx: &mut tokio::sync::watch::Receiver<u64>) {
        if rx.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// This bus as node agent `node`'s: store requests go on that node's subjects.
    pub fn for_node(&self, node: &str) -> Bus {
        Bus { node: Some(node.into()), ..self.clone() }
    }

    pub fn node(&self) -> Option<&str> {
        self.node.as_deref()
    }

    fn next_id(&self) -> RequestId {
        (self.ids.0, self.ids.1.fetch_add(1, Ordering::Relaxed))
    }

    /// Sends one request, retrying while no member answers or the answer says "retry".
    /// Writes are safe to retry because they carry a request id (see `write`).
    async fn request<Req: serde::Serialize, Resp: serde::de::DeserializeOwned>(
        &self,
        subject: &str,
        req: &Req,
        key: Option<&str>,
    ) -> Result<Resp, BusError> {
        let payload = codec::encode(req)?;
        // Writes about an object an actor learnt of through a traced event go on in that
        // trace even from tasks the handler spawned (where `current` knows nothing).
        let trace = trace::current().or_else(|| key.and_then(trace::of_key)).map(|t| t.child(trace::span_id()));
        let mut headers = async_nats::HeaderMap::new();
        if let Some(t) = trace {
            headers.insert(schema::trace::HEADER, t.to_string().as_str());
        }
        if let (Some(w), subjects::STATE_WRITE) = (self.writer, subject) {
            headers.insert(schema::obs::WRITER_HEADER, w);
        }
        let deadline = tokio::time::Instant::now() + STORE_RETRY_FOR;
        let mut backoff = Duration::from_millis(20);
        loop {
            let started = std::time::Instant::now();
            let attempt = tokio::time::timeout(Duration::from_secs(10), self.nats.request_with_headers(subject.to_string(), headers.clone(), payload.clone().into())).await;
            // Per-node subjects are counted under their pattern: one series, not one per node.
            let label = match subjects::node_of_request(subject) {
                Some(_) if subject.ends_with(".write") => subjects::NODE_WRITES,
                Some(_) if subject.ends_with(".token") => subjects::NODE_TOKEN_REQUESTS,
                Some(_) => subjects::NODE_READS,
                None => subject,
            };
            metrics::bus_request(label, attempt.as_ref().map(|r| r.is_ok()).unwrap_or(false), started.elapsed());
            let retry_reason = match attempt {
                Ok(Ok(msg)) => {
                    let r: Result<Resp, StoreError> = codec::decode(&msg.payload)?;
                    match r {
                        Err(e) if e.is_retryable() => e.to_string(),
                        other => return other.map_err(BusError::Store),
                    }
                }
                Ok(Err(e)) => e.to_string(),
                Err(_) => "no answer within 10s".to_string(),
            };
            if tokio::time::Instant::now() >= deadline {
                return Err(BusError::Store(StoreError::Unavailable(retry_reason)));
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_millis(500));
        }
    }

    /// Sends one write to the state group's leader; retries while no leader answers. The
    /// write's id makes a retry of a write that was applied (its answer lost, or its
    /// leader gone after committing it) return the first answer instead of applying twice.
    pub async fn write(&self, op: &WriteOp) -> Result<WriteResult, BusError> {
        let req = WriteRequest { id: Some(self.next_id()), op: op.clone() };
        match self.node.as_deref() {
            Some(n) => self.request(&subjects::node_write(n), &req, Some(op.key())).await,
            None => self.request(subjects::STATE_WRITE, &req, Some(op.key())).await,
        }
    }

    /// A linearizable read: it sees every write acknowledged before it began.
    pub async fn read(&self, op: &ReadOp) -> Result<ReadResult, BusError> {
        self.read_with(op, Consistency::Linearizable).await
    }

    pub async fn read_with(&self, op: &ReadOp, consistency: Consistency) -> Result<ReadResult, BusError> {
        // A node's reads are answered by the leader, which checks them against the pods
        // bound to that node.
        if let Some(n) = self.node.as_deref() {
            return self.request(&subjects::node_read(n), op, None).await;
        }
        let subject = match consistency {
            Consistency::Linearizable => subjects::STATE_READ,
            Consistency::Serializable => subjects::STATE_READ_LOCAL,
        };
        self.request(subject, op, None).await
    }

    /// Every stored item under `prefix`, read in pages of `page` items all at the first
    /// page's revision, and that revision: a watch from it sees every later change, and
    /// no change between pages is lost (each page at its own revision would miss a
    /// delete on an earlier page, then watch past it). When the store can no longer rebuild
    /// the first page's revision (`Compacted`), the list starts again, a few times.
    pub async fn list_all(&self, prefix: &str, page: u32) -> Result<(Vec<Stored>, Revision), BusError> {
        let mut attempts = 0;
        'again: loop {
            let (mut out, mut start_after, mut at) = (Vec::new(), None, None);
            loop {
                let op = ReadOp::List { prefix: prefix.to_string(), start_after: start_after.clone(), limit: page, at };
                let (items, rev, more) = match self.read(&op).await {
                    Ok(ReadResult::List { items, rev, more }) => (items, rev, more),
                    Ok(_) => return Err(BusError::Store(StoreError::Internal("the store answered a list with something else".into()))),
                    Err(BusError::Store(StoreError::Compacted { .. })) if attempts < 3 => {
                        attempts += 1;
                        continue 'again;
                    }
                    Err(e) => return Err(e),
                };
                at = Some(rev);
                start_after = items.last().map(|s| s.key.clone());
                out.extend(items);
                if !more {
                    return Ok((out, rev));
                }
            }
        }
    }

    /// Membership changes and backups, carried out by the leader.
    pub async fn admin(&self, op: &AdminOp) -> Result<AdminResult, BusError> {
        self.request(subjects::STATE_ADMIN, op, None).await
    }

    /// The events stream, waiting for the state group to create it.
    pub(crate) async fn events_stream(&self) -> Result<async_nats::jetstream::stream::Stream, BusError> {
        let deadline = tokio::time::Instant::now() + STORE_RETRY_FOR;
        loop {
            match self.js.get_stream(subjects::EVENTS_STREAM).await {
                Ok(s) => return Ok(s),
                Err(e) if tokio::time::Instant::now() >= deadline => return Err(BusError::nats(e)),
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }
}
