//! Carries committed events from the state machine's `events` table into the JetStream
//! events stream, keeping "revision N is stream message N": the leader publishes each
//! missing revision in order, with the expected last sequence, so nothing is skipped,
//! reordered or published twice, across restarts and leader changes.

use super::{store, TypeConfig};
use async_nats::jetstream::{self, context::PublishErrorKind, message::PublishMessage, stream};
use openraft::Raft;
use schema::store::Revision;
use schema::subjects;
use std::collections::VecDeque;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// At most this many publishes await their acks at once.
const PIPELINE: u64 = 64;
/// Room for a 1.5 MiB value encoded as MessagePack plus key, subject and headers.
const MAX_EVENT_BYTES: usize = 4 * 1024 * 1024;
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// Creates the events stream unless it exists (an existing stream is left as it is).
pub async fn ensure_stream(js: &jetstream::Context, max_payload: usize) -> anyhow::Result<()> {
    let max_msg = if max_payload > 0 { max_payload.min(MAX_EVENT_BYTES) } else { MAX_EVENT_BYTES };
    let cfg = stream::Config {
        name: subjects::EVENTS_STREAM.to_string(),
        subjects: vec![subjects::EVENTS_ALL.to_string()],
        storage: stream::StorageType::File,
        max_message_size: i32::try_from(max_msg).unwrap_or(i32::MAX),
        max_messages: -1,
        max_bytes: -1,
        max_age: Duration::ZERO,
        duplicate_window: Duration::from_secs(120),
        discard: stream::DiscardPolicy::Old,
        num_replicas: 1,
        ..Default::default()
    };
    js.get_or_create_stream(cfg).await.map_err(|e| anyhow::anyhow!("events stream {}: {e}", subjects::EVENTS_STREAM))?;
    Ok(())
}

pub struct Publisher {
    pub js: jetstream::Context,
    pub db: store::Db,
    pub raft: Raft<TypeConfig>,
    pub node_id: u64,
    /// Last applied revision, from the state machine.
    pub applied: watch::Receiver<Revision>,
    /// Last revision known to be in the stream.
    pub published: watch::Sender<Revision>,
}

#[derive(Debug)]
enum Round {
    /// The stream holds every revision up to this one.
    Done(Revision),
    /// Someone else moved the stream (or an ack was lost): look again.
    Reread,
}

impl Publisher {
    pub fn spawn(self, cancel: CancellationToken) -> JoinHandle<()> {
        tokio::spawn(async move {
            tokio::select! {
                _ = cancel.cancelled() => {}
                _ = self.run() => {}
            }
        })
    }

    fn is_leader(&self) -> bool {
        self.raft.metrics().borrow().current_leader == Some(self.node_id)
    }

    async fn run(mut self) {
        let mut metrics = self.raft.metrics();
        let mut backoff = BACKOFF_MIN;
        // Unknown until the stream is asked: 0 makes the first round look.
        let mut known: Revision = 0;
        loop {
            let target = *self.applied.borrow_and_update();
            if !self.is_leader() || target <= known {
                // Woken by a new apply or a leadership change; the timeout also catches up
                // after someone else (a former leader) advanced the stream.
                tokio::select! {
                    r = self.applied.changed() => if r.is_err() { return },
                    r = metrics.changed() => if r.is_err() { return },
                    _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                }
                continue;
            }
            match self.publish_up_to(target).await {
                Ok(Round::Done(last)) => {
                    known = last;
                    self.published.send_replace(last);
                    backoff = BACKOFF_MIN;
                }
                Ok(Round::Reread) => {}
                Err(e) => {
                    tracing::warn!(error = %e, target, "state: publishing events failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
    }

    /// Publishes every revision the stream lacks, up to `target`, in order.
    async fn publish_up_to(&self, target: Revision) -> anyhow::Result<Round> {
        let info = self.js.get_stream(subjects::EVENTS_STREAM).await?.get_info().await?;
        let mut last = info.state.last_sequence;
        if last > target {
            tracing::debug!(stream = last, applied = target, "state: the stream is ahead of this member's state machine");
        }
        while last < target {
            let end = target.min(last + PIPELINE);
            let mut acks = VecDeque::new();
            for rev in last + 1..=end {
                let db = self.db.clone();
                let found = tokio::task::spawn_blocking(move || store::event(&db, rev)).await??;
                let Some((event, bytes)) = found else {
                    anyhow::bail!("revision {rev} is applied but missing from the events table");
                };
                let msg = PublishMessage::build().payload(bytes.into()).message_id(rev.to_string()).expected_last_sequence(rev - 1);
                match self.js.send_publish(event.subject, msg).await {
                    Ok(ack) => acks.push_back((rev, ack)),
                    // Publishing stops at the first failure: later revisions would be
                    // refused anyway, since they expect this one before them.
                    Err(e) if acks.is_empty() => return Err(e.into()),
                    Err(_) => break,
                }
            }
            for (rev, ack) in acks {
                match ack.await {
                    Ok(a) => {
                        if a.duplicate {
                            tracing::debug!(rev, "state: event already in the stream");
                        }
                        last = rev;
                    }
                    Err(e) if e.kind() == PublishErrorKind::WrongLastSequence => return Ok(Round::Reread),
                    Err(e) => {
                        if last > info.state.last_sequence {
                            // Keep what was acknowledged; the next round resumes after it.
                            self.published.send_replace(last);
                        }
                        return Err(anyhow::anyhow!("publishing revision {rev}: {e}"));
                    }
                }
            }
        }
        Ok(Round::Done(last))
    }
}
