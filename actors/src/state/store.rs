//! The state group's disk: one redb file holding the Raft log, vote, committed and purged
//! ids, and the state machine (kv, revision counter, event history, snapshot). openraft
//! drives it through the storage-v2 traits; the request servers and the publisher read it.

use super::apply::{self, Change, KvEntry, Remembered};
use super::TypeConfig;
use anyhow::{anyhow, Context as _};
use openraft::storage::{LogFlushed, RaftLogStorage, RaftStateMachine};
use openraft::{
    AnyError, Entry, EntryPayload, LogId, LogState, OptionalSend, RaftLogReader, RaftSnapshotBuilder, Snapshot, SnapshotMeta, StorageError,
    StorageIOError, StoredMembership, Vote,
};
use redb::{Database, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use schema::codec;
use schema::store::{Event, RequestId, Revision, StoreError, Stored, WriteResult};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use std::fmt::Debug;
use std::io::Cursor;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

type NodeId = u64;
type Node = openraft::BasicNode;
type StoResult<T> = Result<T, StorageError<NodeId>>;
pub type Db = Arc<Database>;

const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");
/// vote, committed, purged.
const RAFT: TableDefinition<&str, &[u8]> = TableDefinition::new("raft");
pub(super) const KV: TableDefinition<&str, &[u8]> = TableDefinition::new("kv");
/// last_rev, applied, membership, snapshot.
pub(super) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
pub(super) const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events");
/// Answered request ids (16 bytes) → `Remembered`.
const DEDUP: TableDefinition<&[u8], &[u8]> = TableDefinition::new("dedup");
/// The same ids ordered by age (8-byte big-endian time ++ id), to forget the old ones.
const DEDUP_AT: TableDefinition<&[u8], ()> = TableDefinition::new("dedup_at");

const K_VOTE: &str = "vote";
const K_COMMITTED: &str = "committed";
const K_PURGED: &str = "purged";
pub(super) const K_LAST_REV: &str = "last_rev";
const K_APPLIED: &str = "applied";
const K_MEMBERSHIP: &str = "membership";
const K_SNAPSHOT: &str = "snapshot";
/// Written by each group commit (a durable commit needs something to write).
const K_FLUSHED: &str = "flushed";
/// Bytes of keys and values in `kv`: what the space quota counts.
const K_KV_BYTES: &str = "kv_bytes";
/// Set by a restore: revisions up to here have no events (the history began later).
const K_HISTORY_BASE: &str = "history_base";

/// Opens (or creates) the store file and makes sure every table exists, so that read
/// transactions never trip over a missing table.
pub fn open(path: &Path) -> anyhow::Result<Db> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    // A state group shut down a moment ago may still be dropping its last handle (openraft
    // drops the storage from its own tasks); redb refuses a second open meanwhile.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let db = loop {
        match Database::create(path) {
            Ok(db) => break db,
            Err(redb::DatabaseError::DatabaseAlreadyOpen) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => return Err(anyhow!("opening {}: {e}", path.display())),
        }
    };
    let tx = db.begin_write()?;
    {
        tx.open_table(LOG)?;
        tx.open_table(RAFT)?;
        tx.open_table(KV)?;
        tx.open_table(META)?;
        tx.open_table(EVENTS)?;
        tx.open_table(DEDUP)?;
        tx.open_table(DEDUP_AT)?;
    }
    tx.commit()?;
    Ok(Arc::new(db))
}

fn enc<T: Serialize + ?Sized>(v: &T) -> anyhow::Result<Vec<u8>> {
    Ok(codec::encode(v)?)
}

pub(super) fn dec<T: DeserializeOwned>(b: &[u8]) -> anyhow::Result<T> {
    Ok(codec::decode(b)?)
}

fn durable_write(db: &Database) -> anyhow::Result<redb::WriteTransaction> {
    let mut tx = db.begin_write()?;
    // The default already, but the log's correctness depends on it: say so.
    tx.set_durability(Durability::Immediate)?;
    Ok(tx)
}

pub(super) fn get_in<T: DeserializeOwned>(t: &impl ReadableTable<&'static str, &'static [u8]>, key: &str) -> anyhow::Result<Option<T>> {
    match t.get(key)? {
        Some(v) => Ok(Some(dec(v.value())?)),
        None => Ok(None),
    }
}

fn read_meta<T: DeserializeOwned>(db: &Database, table: TableDefinition<&str, &[u8]>, key: &str) -> anyhow::Result<Option<T>> {
    let tx = db.begin_read()?;
    let t = tx.open_table(table)?;
    get_in(&t, key)
}

fn write_meta<T: Serialize>(db: &Database, table: TableDefinition<&str, &[u8]>, key: &str, v: &T) -> anyhow::Result<()> {
    let bytes = enc(v)?;
    let tx = durable_write(db)?;
    tx.open_table(table)?.insert(key, bytes.as_slice())?;
    tx.commit()?;
    Ok(())
}

/// Runs disk work off the async workers: redb commits fsync.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> anyhow::Result<T> + Send + 'static) -> anyhow::Result<T> {
    tokio::task::spawn_blocking(f).await.map_err(|e| anyhow!("disk task failed: {e}"))?
}

fn io_err(e: anyhow::Error, kind: impl FnOnce(AnyError) -> StorageIOError<NodeId>) -> StorageError<NodeId> {
    StorageError::from(kind(AnyError::error(format!("{e:#}"))))
}

// ---------------------------------------------------------------------------------------
// Raft log

/// The Raft log and its bookkeeping. Cloned as its own log reader: redb read
/// transactions run concurrently with the writer.
#[derive(Clone)]
pub struct LogStore {
    db: Db,
    /// Appends waiting for their fsync (see `flusher`).
    flush: std::sync::mpsc::Sender<LogFlushed<TypeConfig>>,
}

/// Group commit: an append writes its entries at once without an fsync (so they are
/// readable when `append` returns, as openraft requires) and queues its callback here; this
/// thread makes one durable commit for everything queued so far, which persists every
/// earlier commit too, and only then tells openraft the entries are stored. Many appends
/// share one fsync instead of waiting for one each. It ends when the log store is dropped.
fn flusher(db: Db, rx: std::sync::mpsc::Receiver<LogFlushed<TypeConfig>>) {
    while let Ok(first) = rx.recv() {
        let mut waiting = vec![first];
        while let Ok(more) = rx.try_recv() {
            waiting.push(more);
        }
        let res = (|| -> anyhow::Result<()> {
            let tx = durable_write(&db)?;
            tx.open_table(RAFT)?.insert(K_FLUSHED, [1u8].as_slice())?;
            tx.commit()?;
            Ok(())
        })();
        for cb in waiting {
            cb.log_io_completed(res.as_ref().map(|_| ()).map_err(|e| std::io::Error::other(format!("{e:#}"))));
        }
    }
}

impl LogStore {
    pub fn new(db: Db) -> Self {
        let (flush, rx) = std::sync::mpsc::channel();
        let flush_db = db.clone();
        std::thread::Builder::new()
            .name("state-log-flush".into())
            .spawn(move || flusher(flush_db, rx))
            .expect("spawning the log flusher thread");
        LogStore { db, flush }
    }

    fn entries(&self, range: (Bound<u64>, Bound<u64>)) -> anyhow::Result<Vec<Entry<TypeConfig>>> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(LOG)?;
        let mut out = Vec::new();
        for item in t.range(range)? {
            let (_, v) = item?;
            out.push(dec(v.value())?);
        }
        Ok(out)
    }

    fn log_state(&self) -> anyhow::Result<LogState<TypeConfig>> {
        let tx = self.db.begin_read()?;
        let purged: Option<LogId<NodeId>> = get_in(&tx.open_table(RAFT)?, K_PURGED)?;
        let log = tx.open_table(LOG)?;
        let last = match log.last()? {
            Some((_, v)) => Some(dec::<Entry<TypeConfig>>(v.value())?.log_id),
            None => purged,
        };
        Ok(LogState { last_purged_log_id: purged, last_log_id: last })
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> StoResult<Vec<Entry<TypeConfig>>> {
        let bounds = (range.start_bound().cloned(), range.end_bound().cloned());
        self.entries(bounds).map_err(|e| io_err(e, StorageIOError::read_logs))
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> StoResult<LogState<TypeConfig>> {
        self.log_state().map_err(|e| io_err(e, StorageIOError::read_logs))
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> StoResult<()> {
        let (db, vote) = (self.db.clone(), *vote);
        blocking(move || write_meta(&db, RAFT, K_VOTE, &vote)).await.map_err(|e| io_err(e, StorageIOError::write_vote))
    }

    async fn read_vote(&mut self) -> StoResult<Option<Vote<NodeId>>> {
        read_meta(&self.db, RAFT, K_VOTE).map_err(|e| io_err(e, StorageIOError::read_vote))
    }

    async fn save_committed(&mut self, committed: Option<LogId<NodeId>>) -> StoResult<()> {
        let db = self.db.clone();
        blocking(move || {
            let bytes = enc(&committed)?;
            let mut tx = db.begin_write()?;
            // Advisory only (openraft re-derives it when lost), so it spares an fsync; the
            // next durable commit, an append or an apply, persists it anyway.
            tx.set_durability(Durability::None)?;
            tx.open_table(RAFT)?.insert(K_COMMITTED, bytes.as_slice())?;
            tx.commit()?;
            Ok(())
        })
        .await
        .map_err(|e| io_err(e, StorageIOError::write))
    }

    async fn read_committed(&mut self) -> StoResult<Option<LogId<NodeId>>> {
        let c: Option<Option<LogId<NodeId>>> = read_meta(&self.db, RAFT, K_COMMITTED).map_err(|e| io_err(e, StorageIOError::read))?;
        Ok(c.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> StoResult<()>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut rows = Vec::new();
        for e in entries {
            rows.push((e.log_id.index, enc(&e).map_err(|e| io_err(e, StorageIOError::write_logs))?));
        }
        let db = self.db.clone();
        let res = blocking(move || {
            let mut tx = db.begin_write()?;
            tx.set_durability(Durability::None)?;
            {
                let mut t = tx.open_table(LOG)?;
                for (idx, bytes) in &rows {
                    t.insert(*idx, bytes.as_slice())?;
                }
            }
            tx.commit()?;
            Ok(())
        })
        .await;
        match res {
            // Readable now; stored (for openraft's counting) once the flusher's fsync is done.
            Ok(()) => self.flush.send(callback).map_err(|_| io_err(anyhow!("the log flusher has stopped"), StorageIOError::write_logs)),
            Err(e) => {
                callback.log_io_completed(Err(std::io::Error::other(format!("{e:#}"))));
                Err(io_err(e, StorageIOError::write_logs))
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> StoResult<()> {
        let db = self.db.clone();
        blocking(move || {
            let tx = durable_write(&db)?;
            tx.open_table(LOG)?.retain_in(log_id.index.., |_, _| false)?;
            tx.commit()?;
            Ok(())
        })
        .await
        .map_err(|e| io_err(e, StorageIOError::write_logs))
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> StoResult<()> {
        let db = self.db.clone();
        blocking(move || {
            let bytes = enc(&log_id)?;
            let tx = durable_write(&db)?;
            tx.open_table(RAFT)?.insert(K_PURGED, bytes.as_slice())?;
            tx.open_table(LOG)?.retain_in(..=log_id.index, |_, _| false)?;
            tx.commit()?;
            Ok(())
        })
        .await
        .map_err(|e| io_err(e, StorageIOError::write_logs))
    }
}

// ---------------------------------------------------------------------------------------
// State machine

/// What a snapshot carries: the whole kv table, the revision counter and the event
/// history (the publisher reads events by revision, so a follower that catches up by
/// snapshot must have them too).
#[derive(Serialize, Deserialize)]
pub(super) struct SnapshotData {
    pub last_rev: Revision,
    pub kv: Vec<(String, KvEntry)>,
    pub events: Vec<Event>,
    /// Answered request ids, so a retry after a catch-up by snapshot is still recognized.
    pub dedup: Vec<(RequestId, Remembered)>,
    pub history_base: Revision,
}

/// The latest snapshot, kept in the meta table so it survives a restart.
#[derive(Serialize, Deserialize)]
pub(super) struct StoredSnapshot {
    meta: SnapshotMeta<NodeId, Node>,
    #[serde(with = "serde_bytes")]
    data: Vec<u8>,
}

pub struct StateMachine {
    db: Db,
    /// Last applied revision, for the publisher.
    applied: watch::Sender<Revision>,
}

impl StateMachine {
    pub fn new(db: Db, applied: watch::Sender<Revision>) -> Self {
        StateMachine { db, applied }
    }
}

type Applied = (Option<LogId<NodeId>>, StoredMembership<NodeId, Node>);

fn applied_state(db: &Database) -> anyhow::Result<Applied> {
    let tx = db.begin_read()?;
    let t = tx.open_table(META)?;
    let applied = get_in::<Option<LogId<NodeId>>>(&t, K_APPLIED)?.flatten();
    let membership = get_in(&t, K_MEMBERSHIP)?.unwrap_or_default();
    Ok((applied, membership))
}

fn id_key(id: RequestId) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&id.0.to_be_bytes());
    k[8..].copy_from_slice(&id.1.to_be_bytes());
    k
}

fn id_from_key(k: &[u8]) -> Option<RequestId> {
    let a = u64::from_be_bytes(k.get(..8)?.try_into().ok()?);
    let b = u64::from_be_bytes(k.get(8..16)?.try_into().ok()?);
    Some((a, b))
}

fn age_key(at_ms: u64, id: &[u8; 16]) -> [u8; 24] {
    let mut k = [0u8; 24];
    k[..8].copy_from_slice(&at_ms.to_be_bytes());
    k[8..].copy_from_slice(id);
    k
}

fn entry_bytes(key: &str, e: &KvEntry) -> u64 {
    (key.len() + e.value.len()) as u64
}

/// Applies entries in one transaction; returns each entry's answers (one per write it
/// carries) and the revision reached.
#[allow(clippy::type_complexity)]
pub(super) fn apply_batch(db: &Database, entries: Vec<Entry<TypeConfig>>) -> anyhow::Result<(Vec<Vec<Result<WriteResult, StoreError>>>, Revision)> {
    let mut tx = db.begin_write()?;
    // No fsync of its own: the entries are durable in the log already, and the next log
    // append (or snapshot) commits durably, which persists this too. A crash in between
    // reopens at an older applied id, and openraft applies the rest again from the log,
    // which keeps every entry after the last snapshot.
    tx.set_durability(Durability::None)?;
    let mut answers = Vec::with_capacity(entries.len());
    let mut last_rev;
    {
        let mut meta = tx.open_table(META)?;
        let mut kv = tx.open_table(KV)?;
        let mut events = tx.open_table(EVENTS)?;
        let mut dedup = tx.open_table(DEDUP)?;
        let mut dedup_at = tx.open_table(DEDUP_AT)?;
        last_rev = get_in::<Revision>(&meta, K_LAST_REV)?.unwrap_or(0);
        let mut kv_bytes = get_in::<u64>(&meta, K_KV_BYTES)?.unwrap_or(0);
        let (mut applied, mut membership) = (None, None);
        let mut newest_ms = 0;
        for entry in entries {
            applied = Some(entry.log_id);
            let batch = match entry.payload {
                EntryPayload::Blank => Vec::new(),
                EntryPayload::Membership(m) => {
                    membership = Some(StoredMembership::new(Some(entry.log_id), m));
                    Vec::new()
                }
                EntryPayload::Normal(b) => b.proposals,
            };
            let mut entry_answers = Vec::with_capacity(batch.len());
            for p in batch {
                newest_ms = newest_ms.max(p.at_ms);
                let id = p.id.map(id_key);
                if let Some(id) = &id {
                    if let Some(r) = dedup.get(id.as_slice())? {
                        let r: Remembered = dec(r.value())?;
                        entry_answers.push(apply::recall(&p.op, &r));
                        continue;
                    }
                }
                let current: Option<KvEntry> = get_in(&kv, p.op.key())?;
                let answer = match apply::decide(&p.op, current.as_ref(), last_rev) {
                    Ok(out) => {
                        if let Some(old) = &current {
                            kv_bytes = kv_bytes.saturating_sub(entry_bytes(p.op.key(), old));
                        }
                        match &out.change {
                            Change::Put(e) => {
                                kv.insert(p.op.key(), enc(e)?.as_slice())?;
                                kv_bytes += entry_bytes(p.op.key(), e);
                            }
                            Change::Remove => {
                                kv.remove(p.op.key())?;
                            }
                        }
                        events.insert(out.rev, enc(&out.event)?.as_slice())?;
                        // Told before `applied` moves, so the publisher finds it.
                        if let Some(t) = p.trace.as_deref().and_then(|t| schema::trace::TraceParent::parse(t).ok()) {
                            bus::trace::remember_rev(out.rev, t);
                        }
                        if let Some(w) = p.writer.as_deref() {
                            bus::trace::remember_writer(out.rev, w);
                        }
                        last_rev = out.rev;
                        Ok(out.result)
                    }
                    Err(e) => Err(e),
                };
                if let Some(id) = &id {
                    dedup.insert(id.as_slice(), enc(&apply::remember(&p.op, p.at_ms, &answer))?.as_slice())?;
                    dedup_at.insert(age_key(p.at_ms, id).as_slice(), ())?;
                }
                entry_answers.push(answer);
            }
            answers.push(entry_answers);
        }
        // Forget ids older than the window, measured by the proposals' own clock.
        if newest_ms > apply::DEDUP_WINDOW_MS {
            let horizon = age_key(newest_ms - apply::DEDUP_WINDOW_MS, &[0; 16]);
            let mut old = Vec::new();
            for item in dedup_at.range::<&[u8]>(..horizon.as_slice())? {
                old.push(item?.0.value().to_vec());
            }
            for k in old {
                dedup_at.remove(k.as_slice())?;
                dedup.remove(&k[8..])?;
            }
        }
        meta.insert(K_LAST_REV, enc(&last_rev)?.as_slice())?;
        meta.insert(K_KV_BYTES, enc(&kv_bytes)?.as_slice())?;
        meta.insert(K_APPLIED, enc(&applied)?.as_slice())?;
        if let Some(m) = membership {
            meta.insert(K_MEMBERSHIP, enc(&m)?.as_slice())?;
        }
    }
    tx.commit()?;
    Ok((answers, last_rev))
}

/// The whole state machine as of one read transaction.
pub(super) fn snapshot_data(db: &Database) -> anyhow::Result<(SnapshotData, Option<LogId<NodeId>>, StoredMembership<NodeId, Node>)> {
    let tx = db.begin_read()?;
    let meta = tx.open_table(META)?;
    let applied = get_in::<Option<LogId<NodeId>>>(&meta, K_APPLIED)?.flatten();
    let membership: StoredMembership<NodeId, Node> = get_in(&meta, K_MEMBERSHIP)?.unwrap_or_default();
    let last_rev = get_in::<Revision>(&meta, K_LAST_REV)?.unwrap_or(0);
    let history_base = get_in::<Revision>(&meta, K_HISTORY_BASE)?.unwrap_or(0);
    let mut kv = Vec::new();
    for item in tx.open_table(KV)?.iter()? {
        let (k, v) = item?;
        kv.push((k.value().to_string(), dec::<KvEntry>(v.value())?));
    }
    let mut events = Vec::new();
    for item in tx.open_table(EVENTS)?.iter()? {
        let (_, v) = item?;
        events.push(dec::<Event>(v.value())?);
    }
    let mut dedup = Vec::new();
    for item in tx.open_table(DEDUP)?.iter()? {
        let (k, v) = item?;
        if let Some(id) = id_from_key(k.value()) {
            dedup.push((id, dec::<Remembered>(v.value())?));
        }
    }
    Ok((SnapshotData { last_rev, kv, events, dedup, history_base }, applied, membership))
}

fn build_snapshot(db: &Database) -> anyhow::Result<StoredSnapshot> {
    // One read transaction: the data and the applied id it claims are consistent.
    let (data, applied, membership) = snapshot_data(db)?;
    let bytes = enc(&data)?;
    let snapshot_id = match applied {
        Some(id) => format!("{}-{}-{}", id.leader_id.term, id.index, uuid::Uuid::new_v4().simple()),
        None => format!("empty-{}", uuid::Uuid::new_v4().simple()),
    };
    let stored = StoredSnapshot { meta: SnapshotMeta { last_log_id: applied, last_membership: membership, snapshot_id }, data: bytes };
    write_meta(db, META, K_SNAPSHOT, &stored)?;
    Ok(stored)
}

/// Replaces the state machine with `data`. `stored` is the Raft snapshot it came from
/// (None for a restore from backup, which starts a new group with no Raft history).
pub(super) fn install_data(db: &Database, data: &SnapshotData, stored: Option<&StoredSnapshot>) -> anyhow::Result<Revision> {
    let tx = durable_write(db)?;
    {
        let mut kv = tx.open_table(KV)?;
        kv.retain(|_, _| false)?;
        let mut kv_bytes = 0;
        for (k, e) in &data.kv {
            kv.insert(k.as_str(), enc(e)?.as_slice())?;
            kv_bytes += entry_bytes(k, e);
        }
        let mut events = tx.open_table(EVENTS)?;
        events.retain(|_, _| false)?;
        for ev in &data.events {
            events.insert(ev.rev, enc(ev)?.as_slice())?;
        }
        let mut dedup = tx.open_table(DEDUP)?;
        dedup.retain(|_, _| false)?;
        let mut dedup_at = tx.open_table(DEDUP_AT)?;
        dedup_at.retain(|_, _| false)?;
        for (id, r) in &data.dedup {
            let k = id_key(*id);
            dedup.insert(k.as_slice(), enc(r)?.as_slice())?;
            dedup_at.insert(age_key(r.at_ms, &k).as_slice(), ())?;
        }
        let mut meta = tx.open_table(META)?;
        meta.insert(K_LAST_REV, enc(&data.last_rev)?.as_slice())?;
        meta.insert(K_KV_BYTES, enc(&kv_bytes)?.as_slice())?;
        meta.insert(K_HISTORY_BASE, enc(&data.history_base)?.as_slice())?;
        match stored {
            Some(stored) => {
                meta.insert(K_APPLIED, enc(&stored.meta.last_log_id)?.as_slice())?;
                meta.insert(K_MEMBERSHIP, enc(&stored.meta.last_membership)?.as_slice())?;
                meta.insert(K_SNAPSHOT, enc(stored)?.as_slice())?;
            }
            None => {
                meta.remove(K_APPLIED)?;
                meta.remove(K_MEMBERSHIP)?;
                meta.remove(K_SNAPSHOT)?;
            }
        }
    }
    tx.commit()?;
    Ok(data.last_rev)
}

fn install_snapshot(db: &Database, stored: &StoredSnapshot) -> anyhow::Result<Revision> {
    let data: SnapshotData = dec(&stored.data)?;
    install_data(db, &data, Some(stored))
}

pub struct SnapshotBuilder {
    db: Db,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> StoResult<Snapshot<TypeConfig>> {
        let db = self.db.clone();
        let s = blocking(move || build_snapshot(&db)).await.map_err(|e| io_err(e, |a| StorageIOError::write_snapshot(None, a)))?;
        Ok(Snapshot { meta: s.meta, snapshot: Box::new(Cursor::new(s.data)) })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> StoResult<Applied> {
        applied_state(&self.db).map_err(|e| io_err(e, StorageIOError::read_state_machine))
    }

    async fn apply<I>(&mut self, entries: I) -> StoResult<Vec<Vec<Result<WriteResult, StoreError>>>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<_> = entries.into_iter().collect();
        let db = self.db.clone();
        let (answers, rev) = blocking(move || apply_batch(&db, entries))
            .await
            .map_err(|e| io_err(e, StorageIOError::write_state_machine))?;
        self.applied.send_replace(rev);
        Ok(answers)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder { db: self.db.clone() }
    }

    async fn begin_receiving_snapshot(&mut self) -> StoResult<Box<Cursor<Vec<u8>>>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(&mut self, meta: &SnapshotMeta<NodeId, Node>, snapshot: Box<Cursor<Vec<u8>>>) -> StoResult<()> {
        let stored = StoredSnapshot { meta: meta.clone(), data: snapshot.into_inner() };
        let db = self.db.clone();
        let rev = blocking(move || install_snapshot(&db, &stored))
            .await
            .map_err(|e| io_err(e, |a| StorageIOError::write_snapshot(None, a)))?;
        self.applied.send_replace(rev);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> StoResult<Option<Snapshot<TypeConfig>>> {
        let s: Option<StoredSnapshot> =
            read_meta(&self.db, META, K_SNAPSHOT).map_err(|e| io_err(e, |a| StorageIOError::read_snapshot(None, a)))?;
        Ok(s.map(|s| Snapshot { meta: s.meta, snapshot: Box::new(Cursor::new(s.data)) }))
    }
}

// ---------------------------------------------------------------------------------------
// Reads for the request servers and the publisher

/// The state machine's revision now.
pub fn last_rev(db: &Database) -> anyhow::Result<Revision> {
    Ok(read_meta(db, META, K_LAST_REV)?.unwrap_or(0))
}

/// Bytes of keys and values stored: what the space quota is checked against.
pub fn kv_bytes(db: &Database) -> anyhow::Result<u64> {
    Ok(read_meta(db, META, K_KV_BYTES)?.unwrap_or(0))
}

/// Revisions up to this one have no events anywhere (the group was restored from a
/// backup taken there); 0 for a group that holds its whole history.
pub fn history_base(db: &Database) -> anyhow::Result<Revision> {
    Ok(read_meta(db, META, K_HISTORY_BASE)?.unwrap_or(0))
}

/// Forgets events up to `rev`: the events stream holds them, and watches read from there.
/// Local to this member (not replicated): each member trims what the stream has. Returns
/// how many it removed.
pub fn trim_events(db: &Database, rev: Revision) -> anyhow::Result<u64> {
    let tx = db.begin_write()?;
    let removed;
    {
        let mut t = tx.open_table(EVENTS)?;
        let before = t.len()?;
        t.retain_in(..=rev, |_, _| false)?;
        removed = before - t.len()?;
    }
    tx.commit()?;
    Ok(removed)
}

/// The oldest event still kept here, if any.
pub fn first_event_rev(db: &Database) -> anyhow::Result<Option<Revision>> {
    let tx = db.begin_read()?;
    let t = tx.open_table(EVENTS)?;
    let first = t.first()?.map(|(k, _)| k.value());
    Ok(first)
}

pub fn get(db: &Database, key: &str) -> anyhow::Result<(Option<Stored>, Revision)> {
    let tx = db.begin_read()?;
    let rev = get_in(&tx.open_table(META)?, K_LAST_REV)?.unwrap_or(0);
    let item = get_in::<KvEntry>(&tx.open_table(KV)?, key)?.map(|e| Stored { key: key.to_string(), rev: e.rev, value: e.value });
    Ok((item, rev))
}

/// Keys under `prefix`, in key order, after `start_after`, at most `limit` (0 = all);
/// the flag says whether more remained.
pub fn list(db: &Database, prefix: &str, start_after: Option<&str>, limit: u32) -> anyhow::Result<(Vec<Stored>, Revision, bool)> {
    let tx = db.begin_read()?;
    let rev = get_in(&tx.open_table(META)?, K_LAST_REV)?.unwrap_or(0);
    let kv = tx.open_table(KV)?;
    let start = match start_after {
        Some(s) if s >= prefix => Bound::Excluded(s),
        _ => Bound::Included(prefix),
    };
    let mut items = Vec::new();
    let mut more = false;
    for item in kv.range::<&str>((start, Bound::Unbounded))? {
        let (k, v) = item?;
        let key = k.value();
        if !key.starts_with(prefix) {
            break;
        }
        if limit > 0 && items.len() >= limit as usize {
            more = true;
            break;
        }
        let e: KvEntry = dec(v.value())?;
        items.push(Stored { key: key.to_string(), rev: e.rev, value: e.value });
    }
    Ok((items, rev, more))
}

/// The events committed at revisions `from..=to`, in order, with their encoded form (what
/// is published); stops at the first revision it does not hold.
pub fn events(db: &Database, from: Revision, to: Revision) -> anyhow::Result<Vec<(Event, Vec<u8>)>> {
    let tx = db.begin_read()?;
    let t = tx.open_table(EVENTS)?;
    let mut out = Vec::new();
    let mut want = from;
    for item in t.range(from..=to)? {
        let (k, v) = item?;
        if k.value() != want {
            break;
        }
        let bytes = v.value().to_vec();
        out.push((dec(&bytes)?, bytes));
        want += 1;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use schema::store::{EventType, WriteOp};

    fn tmp_db() -> (std::path::PathBuf, Db) {
        let dir = std::env::temp_dir().join(format!("flotilla-store-test-{}", uuid::Uuid::new_v4().simple()));
        let db = open(&dir.join("state.redb")).expect("open");
        (dir, db)
    }

    fn entry(index: u64, op: WriteOp) -> Entry<TypeConfig> {
        let p = apply::Proposal { op, id: Some((7, index)), at_ms: index, trace: None, writer: None };
        Entry { log_id: LogId::new(openraft::CommittedLeaderId::new(1, 1), index), payload: EntryPayload::Normal(apply::Batch { proposals: vec![p] }) }
    }

    #[test]
    fn apply_list_and_snapshot_roundtrip() {
        let (dir, db) = tmp_db();
        let ops = vec![
            WriteOp::Create { key: "a/1".into(), subject: "ev.a.1".into(), value: vec![1] },
            WriteOp::Create { key: "a/2".into(), subject: "ev.a.2".into(), value: vec![2] },
            WriteOp::Create { key: "a/1".into(), subject: "ev.a.1".into(), value: vec![3] },
            WriteOp::Create { key: "b/1".into(), subject: "ev.b.1".into(), value: vec![4] },
            WriteOp::Delete { key: "a/2".into(), expected_rev: Some(2) },
            WriteOp::Create { key: "a/3".into(), subject: "ev.a.3".into(), value: vec![5] },
        ];
        let entries = ops.into_iter().enumerate().map(|(i, op)| entry(i as u64 + 1, op)).collect();
        let (answers, rev) = apply_batch(&db, entries).expect("apply");
        assert_eq!(rev, 5);
        assert_eq!(answers[2], vec![Err(StoreError::AlreadyExists("a/1".into()))]);
        let (items, at, more) = list(&db, "a/", None, 1).expect("list");
        assert_eq!((items.len(), items[0].key.as_str(), at, more), (1, "a/1", 5, true));
        let (items, _, more) = list(&db, "a/", Some("a/1"), 0).expect("list");
        assert_eq!(items.iter().map(|s| s.key.as_str()).collect::<Vec<_>>(), vec!["a/3"]);
        assert!(!more);
        let (deleted, _) = events(&db, 4, 4).expect("event").pop().expect("rev 4");
        assert_eq!((deleted.typ, deleted.subject.as_str()), (EventType::Deleted, "ev.a.2"));

        // A retried request (same id) gets its first answer and changes nothing.
        let again = Entry { log_id: LogId::new(openraft::CommittedLeaderId::new(1, 1), 7), payload: EntryPayload::Normal(apply::Batch { proposals: vec![apply::Proposal { op: WriteOp::Create { key: "a/1".into(), subject: "ev.a.1".into(), value: vec![1] }, id: Some((7, 1)), at_ms: 7, trace: None, writer: None }] }) };
        let (answers, rev) = apply_batch(&db, vec![again]).expect("apply");
        assert_eq!((answers[0][0].as_ref().map(|r| r.rev), rev), (Ok(1), 5));
        assert_eq!(kv_bytes(&db).expect("bytes"), 3 * 4);

        let snap = build_snapshot(&db).expect("snapshot");
        let (dir2, db2) = tmp_db();
        assert_eq!(install_snapshot(&db2, &snap).expect("install"), 5);
        assert_eq!(get(&db2, "b/1").expect("get").0.map(|s| s.rev), Some(3));
        assert_eq!(applied_state(&db2).expect("applied").0.map(|l| l.index), Some(7));
        assert_eq!(kv_bytes(&db2).expect("bytes"), 3 * 4);
        assert_eq!(events(&db2, 1, 9).expect("events").len(), 5);
        assert_eq!(trim_events(&db2, 3).expect("trim"), 3);
        assert_eq!(first_event_rev(&db2).expect("first"), Some(4));
        // A range that starts at a trimmed revision holds nothing: the caller must not
        // mistake the next revision for the one it asked for.
        assert!(events(&db2, 3, 9).expect("events").is_empty());
        drop((db, db2));
        let _ = std::fs::remove_dir_all(dir);
        let _ = std::fs::remove_dir_all(dir2);
    }
}

