//! The state group's request and answer types: the one contract between every writer
//! (gateway, controllers, scheduler, node agents) and the replicated store. Values are
//! opaque bytes (MessagePack of a Kubernetes object); the store owns revisions.

use serde::{Deserialize, Serialize};

/// A revision of the whole store; an object's `resourceVersion` is the revision at which
/// it was last written. Revision 0 means "nothing written yet".
pub type Revision = u64;

/// One mutation, applied atomically through Raft.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum WriteOp {
    /// Fails with `AlreadyExists` when the key is present.
    Create {
        key: String,
        subject: String,
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
    },
    /// Fails with `NotFound` when absent, and with `Conflict` when `expected_rev` is set
    /// and differs from the stored revision.
    Update {
        key: String,
        subject: String,
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
        expected_rev: Option<Revision>,
    },
    /// Fails with `NotFound` when absent, `Conflict` on a revision mismatch.
    Delete { key: String, expected_rev: Option<Revision> },
}

impl WriteOp {
    pub fn verb(&self) -> &'static str {
        match self {
            WriteOp::Create { .. } => "create",
            WriteOp::Update { .. } => "update",
            WriteOp::Delete { .. } => "delete",
        }
    }

    /// Bytes the write adds to the store (a delete adds none).
    pub fn size(&self) -> usize {
        match self {
            WriteOp::Create { key, value, .. } | WriteOp::Update { key, value, .. } => key.len() + value.len(),
            WriteOp::Delete { .. } => 0,
        }
    }

    pub fn key(&self) -> &str {
        match self {
            WriteOp::Create { key, .. } | WriteOp::Update { key, .. } | WriteOp::Delete { key, .. } => key,
        }
    }
}

/// What a writer sends: the write, and an id that makes sending it again safe. A retry
/// after a lost answer or a leader change carries the same id; the state machine answers
/// it from memory instead of applying it twice.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WriteRequest {
    pub id: Option<RequestId>,
    pub op: WriteOp,
}

/// A writer-chosen unique id (random per process, then a counter).
pub type RequestId = (u64, u64);

/// A stored value with the revision it was last modified at.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stored {
    pub key: String,
    pub rev: Revision,
    // Bytes, not an array of integers: keeps a 1.5 MiB object about 1.5 MiB on the bus.
    #[serde(with = "serde_bytes")]
    pub value: Vec<u8>,
}

/// The answer to a successful write: the revision it was committed at and what is stored
/// now (for a delete, the value that was removed).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WriteResult {
    pub rev: Revision,
    pub stored: Stored,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ReadOp {
    Get { key: String },
    /// Every key starting with `prefix`, in key order, starting after `start_after` when
    /// given, at most `limit` items (0 = no limit). With `at`, as the store was at that
    /// revision: later pages of one list pass the first page's revision, so the whole
    /// list is one consistent revision (as etcd pages are); `Compacted` when the store no
    /// longer holds the changes since.
    List {
        prefix: String,
        start_after: Option<String>,
        limit: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        at: Option<Revision>,
    },
}

/// How fresh a read must be (Kubernetes: `resourceVersion=""` is the most recent,
/// `"0"` is any).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Consistency {
    /// Reflects every write acknowledged before the read began (read index on the leader).
    Linearizable,
    /// Whatever one member has applied: may lag, never goes backwards on that member.
    Serializable,
}

/// Requests on the admin subject (answered by the leader).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum AdminOp {
    /// Adds a member: first as a learner that catches up, then as a voter.
    AddMember { id: u64, addr: String },
    /// Removes a voter (or learner) from the group.
    RemoveMember { id: u64 },
    /// One chunk of a consistent backup: `backup` names a backup the leader holds (None
    /// starts a new one), `offset` is where this chunk starts.
    Backup { backup: Option<String>, offset: u64 },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum AdminResult {
    /// The voters and learners after the change.
    Members { voters: Vec<u64>, learners: Vec<u64> },
    BackupChunk {
        backup: String,
        /// Total size of the backup in bytes.
        total: u64,
        /// The revision the backup was taken at.
        rev: Revision,
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ReadResult {
    Get { item: Option<Stored>, rev: Revision },
    /// `rev` is the store's revision the list was taken at: a watch from `rev` sees every
    /// later change. `more` is true when `limit` cut the list short.
    List { items: Vec<Stored>, rev: Revision, more: bool },
}

/// Why a store request failed. Retryable ones (`NotLeader`, `Unavailable`) say so.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, thiserror::Error)]
pub enum StoreError {
    #[error("key {0} not found")]
    NotFound(String),
    #[error("key {0} already exists")]
    AlreadyExists(String),
    #[error("conflict on {key}: stored revision is {current}")]
    Conflict { key: String, current: Revision },
    #[error("not the leader (leader is {leader:?})")]
    NotLeader { leader: Option<u64> },
    #[error("state group unavailable: {0}")]
    Unavailable(String),
    #[error("value too large: {size} bytes, the limit is {limit} bytes")]
    TooLarge { size: usize, limit: usize },
    /// The store holds its quota: only deletes are accepted until space is freed.
    #[error("state store quota exceeded: {used} bytes stored, the quota is {quota} bytes; delete objects to free space")]
    QuotaExceeded { used: u64, quota: u64 },
    /// A read at a revision whose changes since the store no longer keeps (HTTP 410, as
    /// etcd's compaction is): list again from the start.
    #[error("revision {rev} has been compacted: list again")]
    Compacted { rev: Revision },
    /// A request the store cannot carry out as asked.
    #[error("bad request: {0}")]
    BadRequest(String),
    #[error("internal store error: {0}")]
    Internal(String),
    /// The writer's identity does not allow this (a node agent outside its own objects).
    #[error("forbidden: {0}")]
    Forbidden(String),
}

impl StoreError {
    pub fn is_retryable(&self) -> bool {
        matches!(self, StoreError::NotLeader { .. } | StoreError::Unavailable(_))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

/// One committed change, as published on the bus. `rev` is also the JetStream sequence
/// of the message in the events stream: revision N is stream message N, so resuming a
/// watch from revision R means reading from stream sequence R + 1.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub rev: Revision,
    pub typ: EventType,
    pub key: String,
    pub subject: String,
    /// For `Deleted`, the last stored value.
    #[serde(with = "serde_bytes")]
    pub value: Vec<u8>,
    /// The revision the object was at just before this change (None for a create): its
    /// state then is stream message `prev`. A selector watch from an old revision reads
    /// it to know whether the object matched before this event. Absent in events
    /// committed before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prev: Option<Revision>,
}

/// One member's answer to a status request (`flotilla state status`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemberStatus {
    pub id: u64,
    pub pid: u32,
    /// Where its Raft transport listens ("-" for a single member, which has none).
    pub addr: String,
    /// leader, follower, learner, candidate or shutdown.
    pub role: String,
    /// The last log index applied to its state machine.
    pub applied: u64,
    /// Every member of the group this member knows of (voters and learners), with the
    /// address of its Raft transport: lets a caller name the members that did not answer.
    #[serde(default)]
    pub members: Vec<(u64, String)>,
    #[serde(default)]
    pub voters: Vec<u64>,
    /// The last log index its newest snapshot covers (built here or received).
    #[serde(default)]
    pub snapshot: Option<u64>,
}
