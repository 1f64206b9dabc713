//! Carries committed events from the state machine's `events` table into the JetStream
//! events stream, keeping "revision N is stream message N": the leader publishes each
//! missing revision in order, with the expected last sequence, so nothing is skipped,
//! reordered or published twice, across restarts and leader changes.

use super::{store, TypeConfig};
use async_nats::jetstream::{self, context::PublishErrorKind, message::PublishMessage, stream};
use openraft::Raft;
use schema::codec;
use schema::store::{Event, Revision};
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

/// Events this member keeps after the stream has them (`keep`), so that a stream that
/// lost its newest messages (nats-server's disk is not synced on every publish) can be
/// refilled; checked every `every`. A stream that lost more than that is started again
/// after the loss (see `Publisher::publish_up_to`).
#[derive(Debug, Clone, Copy)]
pub struct TrimPolicy {
    pub keep: u64,
    pub every: Duration,
}

impl Default for TrimPolicy {
    fn default() -> Self {
        TrimPolicy { keep: 10_000, every: Duration::from_secs(10) }
    }
}

/// How much history the events stream keeps for resuming watches: whichever limit is
/// reached first drops the oldest events, and a watch from before them is "expired".
#[derive(Debug, Clone, Copy)]
pub struct HistoryLimits {
    pub max_age: Duration,
    pub max_events: i64,
    /// On how many nats-servers of a cluster JetStream keeps the stream (1 without one).
    pub replicas: usize,
}

impl Default for HistoryLimits {
    fn default() -> Self {
        // etcd's watch cache keeps 75 s; a resume within the hour should never re-list.
        HistoryLimits { max_age: Duration::from_secs(3600), max_events: 1_000_000, replicas: 1 }
    }
}

/// Creates the events stream, or brings an existing one's retention to `limits`.
pub async fn ensure_stream(js: &jetstream::Context, max_payload: usize, limits: HistoryLimits) -> anyhow::Result<()> {
    let max_msg = if max_payload > 0 { max_payload.min(MAX_EVENT_BYTES) } else { MAX_EVENT_BYTES };
    let cfg = stream::Config {
        name: subjects::EVENTS_STREAM.to_string(),
        subjects: vec![subjects::EVENTS_ALL.to_string()],
        storage: stream::StorageType::File,
        max_message_size: i32::try_from(max_msg).unwrap_or(i32::MAX),
        max_messages: limits.max_events,
        max_bytes: -1,
        max_age: limits.max_age,
        duplicate_window: Duration::from_secs(120),
        discard: stream::DiscardPolicy::Old,
        num_replicas: limits.replicas.max(1),
        ..Default::default()
    };
    let mut existing = js.get_or_create_stream(cfg.clone()).await.map_err(|e| anyhow::anyhow!("events stream {}: {e}", subjects::EVENTS_STREAM))?;
    let have = &existing.info().await?.config;
    if have.max_age != cfg.max_age || have.max_messages != cfg.max_messages || have.max_message_size != cfg.max_message_size || have.num_replicas != cfg.num_replicas {
        js.update_stream(cfg).await.map_err(|e| anyhow::anyhow!("updating the retention of {}: {e}", subjects::EVENTS_STREAM))?;
    }
    Ok(())
}

/// Every member forgets the events the stream already holds (keeping a margin), so the
/// events table, and every snapshot that copies it, stays small. This is the compaction
/// of old revisions; the stream's own limits compact the history watches read.
pub fn spawn_trimmer(js: jetstream::Context, db: store::Db, applied: watch::Receiver<Revision>, policy: TrimPolicy, cancel: CancellationToken) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(policy.every) => {}
            }
            let Ok(mut stream) = js.get_stream(subjects::EVENTS_STREAM).await else { continue };
            let Ok(info) = stream.info().await else { continue };
            let upto = info.state.last_sequence.min(*applied.borrow()).saturating_sub(policy.keep);
            if upto == 0 {
                continue;
            }
            let db = db.clone();
            match tokio::task::spawn_blocking(move || store::trim_events(&db, upto)).await {
                Ok(Ok(n)) if n > 0 => tracing::debug!(upto, removed = n, "state: trimmed published events"),
                Ok(Err(e)) => tracing::warn!(error = %e, "state: trimming events failed"),
                _ => {}
            }
        }
    })
}

pub struct Publisher {
    pub js: jetstream::Context,
    pub nats: async_nats::Client,
    pub history: HistoryLimits,
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
        let mut recheck = tokio::time::interval(Duration::from_secs(5));
        recheck.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // NATS may be away when the member starts: the stream is made (or its limits set)
        // as soon as it is reachable.
        while let Err(e) = ensure_stream(&self.js, self.nats.server_info().max_payload, self.history).await {
            tracing::warn!(error = %e, "state: events stream not ready; retrying");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
        backoff = BACKOFF_MIN;
        loop {
            let target = *self.applied.borrow_and_update();
            if !self.is_leader() || target <= known {
                // Woken by a new apply or a leadership change; the timeout also catches up
                // after someone else (a former leader) advanced the stream.
                tokio::select! {
                    r = self.applied.changed() => if r.is_err() { return },
                    r = metrics.changed() => if r.is_err() { return },
                    // Look at the stream again even without a new write: it may have lost
                    // messages, or been made anew, and must be refilled before watchers
                    // come to rely on it.
                    // (An interval, not a sleep made anew each turn: metrics change often.)
                    _ = recheck.tick() => known = 0,
                }
                continue;
            }
            // A first look (after start, and every few seconds) also checks that what the
            // stream holds is this group's history.
            match self.publish_up_to(target, known == 0).await {
                Ok(Round::Done(last)) => {
                    // A stream ahead of this member (a new leader still applying, or
                    // another history) is looked at again on the next apply.
                    known = last.min(target);
                    self.published.send_replace(last);
                    backoff = BACKOFF_MIN;
                }
                // Someone moved the stream under us: look again, but not in a hot loop.
                Ok(Round::Reread) => tokio::time::sleep(BACKOFF_MIN).await,
                Err(e) => {
                    tracing::warn!(error = %e, target, "state: publishing events failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
    }

    /// Publishes placeholders for the sequences after `from` up to `to`.
    async fn fill_gap(&self, from: Revision, to: Revision) -> anyhow::Result<()> {
        let mut seq = from;
        while seq < to {
            let end = to.min(seq + 1024);
            let mut acks = Vec::new();
            for s in seq + 1..=end {
                let msg = PublishMessage::build().payload(bytes::Bytes::new()).expected_last_sequence(s - 1);
                acks.push(self.js.send_publish(subjects::EVENTS_GAP, msg).await?);
            }
            for ack in acks {
                ack.await?;
            }
            seq = end;
        }
        Ok(())
    }

    /// The stream, made again if it is gone (nats-server lost its store, or someone
    /// deleted it): a new one starts at sequence 1 and is refilled like a lagging one.
    async fn stream(&self) -> anyhow::Result<stream::Stream> {
        match self.js.get_stream(subjects::EVENTS_STREAM).await {
            Ok(s) => Ok(s),
            Err(e) if matches!(e.kind(), jetstream::context::GetStreamErrorKind::JetStream(j) if j.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND) => {
                tracing::warn!(error = %e, "state: the events stream is gone; making it again");
                ensure_stream(&self.js, self.nats.server_info().max_payload, self.history).await?;
                Ok(self.js.get_stream(subjects::EVENTS_STREAM).await?)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Whether the stream's message `rev` is this group's event at `rev` (true when there
    /// is nothing to compare: no such message, or an event this member no longer keeps).
    async fn stream_is_ours(&self, stream: &stream::Stream, rev: Revision, base: Revision) -> anyhow::Result<bool> {
        if rev <= base {
            return Ok(true);
        }
        let db = self.db.clone();
        let Some((_, ours)) = tokio::task::spawn_blocking(move || store::events(&db, rev, rev)).await??.pop() else { return Ok(true) };
        let there = match stream.get_raw_message(rev).await {
            Ok(m) => m.payload,
            Err(e) if e.kind() == stream::LastRawMessageErrorKind::NoMessageFound => return Ok(true),
            Err(e) => return Err(e.into()),
        };
        Ok(same_event(&there, &ours))
    }

    /// Publishes every revision the stream lacks, up to `target`, in order.
    async fn publish_up_to(&self, target: Revision, verify: bool) -> anyhow::Result<Round> {
        let stream = self.stream().await?;
        let info = stream.get_info().await?;
        let mut last = info.state.last_sequence;
        let db = self.db.clone();
        let (base, first_kept) = tokio::task::spawn_blocking(move || Ok::<_, anyhow::Error>((store::history_base(&db)?, store::first_event_rev(&db)?))).await??;
        // Checked on a first look and whenever the stream is ahead of what this member has
        // applied: a history that is not ours must not be taken as published.
        if (verify || last > target) && !self.stream_is_ours(&stream, last.min(target), base).await? {
            // Another history (a group restored from a backup onto a stream that went on
            // past it, or another cluster's): watchers would read its events as ours. Start
            // the stream again; everyone watching is told Expired and re-lists.
            tracing::warn!(rev = last.min(target), "state: the events stream holds another history than this group's; making it again");
            self.js.delete_stream(subjects::EVENTS_STREAM).await?;
            return Ok(Round::Reread);
        }
        // The stream lacks revisions this member no longer holds: a group restored from a
        // backup at `base` has no events before it, and a stream that lost more than the
        // trimmer keeps (nats-server lost its store) cannot get them back. Its next
        // message must still be the next revision: fill the gap with empty messages on a
        // subject no watch reads (each with its expected sequence, so two publishers
        // cannot interleave), then purge, so a watch from inside the gap is told Expired
        // and re-lists rather than silently missing what was there. nats-server 2.9
        // counts sequences wrongly after a purge *to* a sequence, so this purges all.
        let missing_to = match first_kept {
            _ if last >= target => None,
            Some(first) if first > last + 1 => Some((first - 1).min(target)),
            None => Some(target),
            _ => None,
        };
        let gap_to = base.max(missing_to.unwrap_or(0));
        if last < gap_to {
            if missing_to.is_some_and(|m| m > base) {
                tracing::warn!(from = last + 1, to = gap_to, "state: the events stream lost revisions this member no longer holds; watches from before them will be told Expired");
            } else {
                tracing::info!(base, stream = last, "state: starting the events stream after the restored revision");
            }
            self.fill_gap(last, gap_to).await?;
            stream.purge().await?;
            return Ok(Round::Reread);
        }
        while last < target {
            let end = target.min(last + PIPELINE);
            let mut acks = VecDeque::new();
            let db = self.db.clone();
            let from = last + 1;
            let found = tokio::task::spawn_blocking(move || store::events(&db, from, end)).await??;
            if found.is_empty() {
                anyhow::bail!("revision {from} is applied but missing from the events table");
            }
            for (event, bytes) in found {
                let rev = event.rev;
                let payload = bytes::Bytes::from(bytes);
                let mut msg = PublishMessage::build().payload(payload.clone()).message_id(rev.to_string()).expected_last_sequence(rev - 1);
                if let Some(t) = bus::trace::of_rev(rev) {
                    msg = msg.header(schema::trace::HEADER, t.to_string().as_str());
                }
                if let Some(w) = bus::trace::writer_of_rev(rev) {
                    msg = msg.header(schema::obs::WRITER_HEADER, w.as_str());
                }
                match self.js.send_publish(event.subject, msg).await {
                    Ok(ack) => {
                        bus::metrics::bus_publish(subjects::EVENTS_STREAM, 1);
                        acks.push_back((rev, payload, ack))
                    }
                    // Publishing stops at the first failure: later revisions would be
                    // refused anyway, since they expect this one before them.
                    Err(e) if acks.is_empty() => return Err(e.into()),
                    Err(_) => break,
                }
            }
            for (rev, payload, ack) in acks {
                match ack.await {
                    Ok(a) => {
                        if a.duplicate {
                            // The stream already had a message with this id: it counts only
                            // if it is this very event at this very sequence (after a
                            // restore or a purge an id can name another revision's event).
                            let there = stream.get_raw_message(a.sequence).await.ok().map(|m| m.payload);
                            if !duplicate_is_ours(rev, a.sequence, there.as_deref(), &payload) {
                                if last > info.state.last_sequence {
                                    self.published.send_replace(last);
                                }
                                anyhow::bail!("revision {rev}: the stream's message {} under this id is another event; retrying once the stream's duplicate window has passed", a.sequence);
                            }
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

/// Whether a duplicate ack for revision `rev` means the stream holds this event as
/// message `rev`: the ack names the earlier message with the id, which must be ours.
fn duplicate_is_ours(rev: Revision, acked_seq: u64, stored: Option<&[u8]>, ours: &[u8]) -> bool {
    acked_seq == rev && stored.is_some_and(|s| same_event(s, ours))
}

/// Whether two encoded events are the same change: revision, key, kind and value. The
/// subject and the previous revision are left out, so that members of two versions (a
/// rolling upgrade) agree on an event either of them published.
fn same_event(a: &[u8], b: &[u8]) -> bool {
    let (Ok(a), Ok(b)) = (codec::decode::<Event>(a), codec::decode::<Event>(b)) else { return a == b };
    (a.rev, &a.key, a.typ, &a.value) == (b.rev, &b.key, b.typ, &b.value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use schema::store::EventType;

    #[test]
    fn a_duplicate_counts_only_when_it_is_this_event_at_its_revision() {
        assert!(duplicate_is_ours(7, 7, Some(b"ev7"), b"ev7"));
        assert!(!duplicate_is_ours(7, 5, Some(b"ev7"), b"ev7"), "the id names an earlier sequence");
        assert!(!duplicate_is_ours(7, 7, Some(b"other"), b"ev7"), "another event under the id");
        assert!(!duplicate_is_ours(7, 7, None, b"ev7"), "the message is gone");
        let ev = |rev, value: u8, subject: &str| codec::encode(&Event { rev, typ: EventType::Modified, key: "k".into(), subject: subject.into(), value: vec![value], prev: Some(1) }).expect("encode");
        assert!(same_event(&ev(7, 1, "ev.pods.d.n.p.n"), &ev(7, 1, "ev.pods.d.n.p")), "a subject of another version is the same event");
        assert!(!same_event(&ev(7, 1, "s"), &ev(7, 2, "s")));
        assert!(!same_event(&ev(7, 1, "s"), &ev(8, 1, "s")));
    }
}
