//! The state group: flotilla's etcd. A Raft-replicated key-value store on redb that
//! answers `flotilla.state.*` requests over NATS and publishes every committed change,
//! in revision order, to the JetStream events stream that all watches read.

mod apply;
mod network;
mod publisher;
mod server;
mod store;

pub use apply::MAX_VALUE_BYTES;

use anyhow::Context as _;
use openraft::{BasicNode, Raft};
use schema::store::{Revision, StoreError, WriteOp, WriteResult};
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
    /// Raft types of the state group: entries carry one `WriteOp`; applying it answers
    /// the write's outcome (a failed precondition is an answer, not a Raft error).
    pub TypeConfig:
        D = WriteOp,
        R = Result<WriteResult, StoreError>,
);

pub struct StateConfig {
    pub data_dir: PathBuf,
    pub node_id: u64,
}

/// How long shutdown waits for the publisher to put already-committed events on the
/// stream (a restart would publish them anyway; this only makes a clean stop tidy).
const FLUSH_FOR: Duration = Duration::from_secs(3);

pub struct StateHandle {
    raft: Raft<TypeConfig>,
    node_id: u64,
    js: async_nats::jetstream::Context,
    servers_cancel: CancellationToken,
    servers: Vec<JoinHandle<()>>,
    publisher_cancel: CancellationToken,
    publisher: JoinHandle<()>,
    applied: watch::Receiver<Revision>,
    published: watch::Receiver<Revision>,
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
        election_timeout_min: 300,
        election_timeout_max: 600,
        ..Default::default()
    }
    .validate()?;
    let raft = Raft::<TypeConfig>::new(
        cfg.node_id,
        Arc::new(config),
        network::Network,
        store::LogStore::new(db.clone()),
        store::StateMachine::new(db.clone(), applied_tx),
    )
    .await?;
    // A restarted member finds its vote and log on disk and elects itself again; only a
    // store that never held a membership is initialized.
    if !raft.is_initialized().await? {
        let members = BTreeMap::from([(cfg.node_id, BasicNode::new(format!("state-{}", cfg.node_id)))]);
        raft.initialize(members).await.context("initializing the single-member state group")?;
    }

    let js = async_nats::jetstream::new(nats.clone());
    publisher::ensure_stream(&js, nats.server_info().max_payload).await?;

    let servers_cancel = CancellationToken::new();
    let servers = server::spawn(nats.clone(), raft.clone(), db.clone(), servers_cancel.clone()).await?;
    let (published_tx, published_rx) = watch::channel(0);
    let publisher_cancel = CancellationToken::new();
    let publisher = publisher::Publisher {
        js: js.clone(),
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
        js,
        servers_cancel,
        servers,
        publisher_cancel,
        publisher,
        applied: applied_rx,
        published: published_rx,
    })
}

impl StateHandle {
    pub fn is_leader(&self) -> bool {
        self.raft.metrics().borrow().current_leader == Some(self.node_id)
    }

    /// The state machine's last applied revision.
    pub fn applied_rev(&self) -> Revision {
        *self.applied.borrow()
    }

    /// Returns once a leader is elected and the events stream exists.
    pub async fn wait_ready(&self) {
        let mut m = self.raft.metrics();
        while m.borrow_and_update().current_leader.is_none() {
            if m.changed().await.is_err() {
                return;
            }
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
    }
}
