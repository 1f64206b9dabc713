//! The state group: flotilla's etcd. A Raft-replicated key-value store on redb that
//! answers `flotilla.state.*` requests over NATS and publishes every committed change,
//! in revision order, to the JetStream events stream that all watches read.

mod apply;
mod backup;
mod history;
mod publisher;
mod server;
mod store;
pub mod transport;

pub use apply::MAX_VALUE_BYTES;
pub use backup::restore;
pub use publisher::{HistoryLimits, TrimPolicy};

use anyhow::Context as _;
use openraft::{BasicNode, Raft};
use schema::store::{Revision, StoreError, WriteResult};
use schema::subjects;
use std::collections::BTreeMap;
use std::io::Cursor;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

openraft::declare_raft_types!(
    /// Raft types of the state group: an entry carries a batch of writes; applying it
    /// answers each write's outcome (a failed precondition is an answer, not a Raft error).
    pub TypeConfig:
        D = apply::Batch,
        R = Vec<Result<WriteResult, StoreError>>,
);

pub struct StateConfig {
    pub data_dir: PathBuf,
    pub node_id: u64,
    /// The group's first members and the addresses of their Raft transports. Empty: a
    /// single member that needs no transport.
    pub peers: BTreeMap<u64, String>,
    /// Where this member's transport listens; defaults to its own entry in `peers`.
    pub listen: Option<String>,
    /// This member joins a running group (`flotilla state member add`): it never
    /// initializes a membership of its own.
    pub join: bool,
    /// Take a snapshot (and compact the log) every this many entries.
    pub snapshot_every: u64,
    /// How much history the events stream keeps for resuming watches.
    pub history: HistoryLimits,
    /// Bytes of keys and values the store holds before it refuses writes (not deletes).
    pub quota_bytes: u64,
    /// How many published events each member keeps, and how often it forgets older ones.
    pub trim: publisher::TrimPolicy,
}

pub const DEFAULT_QUOTA_BYTES: u64 = 8 * 1024 * 1024 * 1024;

impl StateConfig {
    /// A single member, initialized on first start.
    pub fn single(data_dir: PathBuf) -> Self {
        StateConfig {
            data_dir,
            node_id: 1,
            peers: BTreeMap::new(),
            listen: None,
            join: false,
            snapshot_every: DEFAULT_SNAPSHOT_EVERY,
            history: HistoryLimits::default(),
            quota_bytes: DEFAULT_QUOTA_BYTES,
            trim: publisher::TrimPolicy::default(),
        }
    }

    fn listen_addr(&self) -> Option<String> {
        self.listen.clone().or_else(|| self.peers.get(&self.node_id).cloned())
    }

    /// The membership a fresh group starts with, if this member is the one to start it:
    /// the lowest id of the initial peers (or the only member) initializes, the others
    /// wait to be contacted, so two members never initialize different groups.
    fn initial_membership(&self) -> Option<BTreeMap<u64, BasicNode>> {
        if self.join {
            return None;
        }
        if self.peers.is_empty() {
            let addr = self.listen.clone().unwrap_or_default();
            return Some(BTreeMap::from([(self.node_id, BasicNode::new(addr))]));
        }
        if self.peers.keys().next() != Some(&self.node_id) {
            return None;
        }
        Some(self.peers.iter().map(|(id, addr)| (*id, BasicNode::new(addr.clone()))).collect())
    }
}

pub const DEFAULT_SNAPSHOT_EVERY: u64 = 10_000;

/// How long shutdown waits for the publisher to put already-committed events on the
/// stream (a restart would publish them anyway; this only makes a clean stop tidy).
const FLUSH_FOR: Duration = Duration::from_secs(3);

pub struct StateHandle {
    raft: Raft<TypeConfig>,
    node_id: u64,
    transport_cancel: CancellationToken,
    transport: Option<JoinHandle<()>>,
    js: async_nats::jetstream::Context,
    servers_cancel: CancellationToken,
    servers: Vec<JoinHandle<()>>,
    publisher_cancel: CancellationToken,
    publisher: JoinHandle<()>,
    applied: watch::Receiver<Revision>,
    published: watch::Receiver<Revision>,
    serving: server::Serving,
}

/// Opens the store under `cfg.data_dir`, starts (or resumes) Raft, makes a fresh store a
/// single-member cluster, ensures the events stream, and starts serving and publishing.
pub async fn start(cfg: StateConfig, nats: async_nats::Client) -> anyhow::Result<StateHandle> {
    let path = cfg.data_dir.join("state.redb");
    let db = tokio::task::spawn_blocking(move || store::open(&path)).await.context("opening the state store")??;
    let first_rev = store::last_rev(&db)?;
    let (applied_tx, applied_rx) = watch::channel(first_rev);

    let config = openraft::Config {
        cluster_name: "flotilla-state".to_string(),
        heartbeat_interval: 100,
        election_timeout_min: 400,
        election_timeout_max: 800,
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(cfg.snapshot_every.max(1)),
        // A follower a little behind catches up from the log; one further behind gets
        // the snapshot.
        max_in_snapshot_log_to_keep: (cfg.snapshot_every / 10).max(1),
        ..Default::default()
    }
    .validate()?;
    // Bind first: a taken port is an error now, not a member that silently never hears.
    let listener = match cfg.listen_addr() {
        Some(addr) if !addr.is_empty() => Some(
            tokio::net::TcpListener::bind(&addr).await.with_context(|| format!("binding the Raft transport on {addr}"))?,
        ),
        _ => None,
    };
    let network = transport::Network::default();
    let faults = network.faults.clone();
    let raft = Raft::<TypeConfig>::new(
        cfg.node_id,
        Arc::new(config),
        network,
        store::LogStore::new(db.clone()),
        store::StateMachine::new(db.clone(), applied_tx),
    )
    .await?;
    let transport_cancel = CancellationToken::new();
    let transport = listener.map(|l| transport::serve(l, raft.clone(), faults, transport_cancel.clone()));
    // A restarted member finds its vote and log on disk and carries on; only a store that
    // never held a membership is initialized, and only by the member chosen to.
    if !raft.is_initialized().await? {
        if let Some(members) = cfg.initial_membership() {
            raft.initialize(members).await.context("initializing the state group")?;
        }
    }

    let js = async_nats::jetstream::new(nats.clone());
    let servers_cancel = CancellationToken::new();
    let limits = server::Limits { quota_bytes: cfg.quota_bytes };
    let (mut servers, serving) = server::spawn(nats.clone(), raft.clone(), db.clone(), limits, servers_cancel.clone()).await?;
    servers.push(publisher::spawn_trimmer(js.clone(), db.clone(), applied_rx.clone(), cfg.trim, servers_cancel.clone()));
    let (published_tx, published_rx) = watch::channel(0);
    let publisher_cancel = CancellationToken::new();
    let publisher = publisher::Publisher {
        js: js.clone(),
        nats: nats.clone(),
        history: cfg.history,
        db,
        raft: raft.clone(),
        node_id: cfg.node_id,
        applied: applied_rx.clone(),
        published: published_tx,
    }
    .spawn(publisher_cancel.clone());

    Ok(StateHandle {
        raft,
        node_id: cfg.node_id,
        transport_cancel,
        transport,
        js,
        servers_cancel,
        servers,
        publisher_cancel,
        publisher,
        applied: applied_rx,
        published: published_rx,
        serving,
    })
}

impl StateHandle {
    pub fn is_leader(&self) -> bool {
        self.raft.metrics().borrow().current_leader == Some(self.node_id)
    }

    /// This member's status, as `flotilla state status` shows it.
    pub fn status(&self) -> schema::store::MemberStatus {
        server::member_status(&self.raft.metrics().borrow())
    }

    /// The state machine's last applied revision.
    pub fn applied_rev(&self) -> Revision {
        *self.applied.borrow()
    }

    /// Returns once a leader is known and the events stream exists.
    pub async fn wait_ready(&self) {
        let mut m = self.raft.metrics();
        while m.borrow_and_update().current_leader.is_none() {
            if m.changed().await.is_err() {
                return;
            }
        }
        if self.is_leader() {
            // Leading is not enough: writers reach it once it has subscribed.
            let _ = self.serving.clone().wait_for(|s| *s).await;
        }
        while self.js.get_stream(subjects::EVENTS_STREAM).await.is_err() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stops answering, lets the publisher catch up briefly, then stops Raft. Every task
    /// holding the store is awaited, so the same directory can be opened again at once.
    pub async fn shutdown(self) {
        let is_leader = self.is_leader();
        self.servers_cancel.cancel();
        for t in self.servers {
            let _ = t.await;
        }
        if is_leader {
            let target = *self.applied.borrow();
            let mut published = self.published.clone();
            let _ = tokio::time::timeout(FLUSH_FOR, published.wait_for(|p| *p >= target)).await;
        }
        self.publisher_cancel.cancel();
        let _ = self.publisher.await;
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(error = %e, "state: raft shutdown");
        }
        self.transport_cancel.cancel();
        if let Some(t) = self.transport {
            let _ = t.await;
        }
    }
}
