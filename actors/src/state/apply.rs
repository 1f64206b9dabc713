//! The state machine's decision for one write, as a pure function of the write, the
//! key's current entry and the store's last revision. Kept apart from redb so that the
//! rules every replica must agree on (preconditions, revision numbering) are unit-tested.

use schema::store::{Event, EventType, RequestId, Revision, StoreError, Stored, WriteOp, WriteResult};
use schema::subjects;
use serde::{Deserialize, Serialize};

/// Largest value the store accepts (Kubernetes' own object limit).
pub const MAX_VALUE_BYTES: usize = 1_572_864;

/// How long the state machine remembers a request id's answer. Writers retry for 15 s;
/// a retry later than this is treated as a new write.
pub const DEDUP_WINDOW_MS: u64 = 120_000;

/// One Raft log entry's payload: the write, the writer's request id, and the leader's
/// clock when it proposed it (so that forgetting old ids is decided by the log, the same
/// on every member, not by each member's clock).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Proposal {
    pub op: WriteOp,
    pub id: Option<RequestId>,
    pub at_ms: u64,
    /// The writer's `traceparent`, handed to the event this write makes. Last and absent
    /// when None, so entries without one are encoded as before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<String>,
    /// Who sent the write (`obs::WRITER_HEADER`), for the object's history; absent when
    /// None, as `trace` is, so older entries decode and untagged ones encode as before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub writer: Option<String>,
}

/// One Raft entry's payload: the writes that arrived together. openraft 0.9 appends and
/// flushes one entry at a time, so the group commits many writes per entry instead.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Batch {
    pub proposals: Vec<Proposal>,
}

impl std::fmt::Display for Batch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "batch of {} writes", self.proposals.len())
    }
}

/// What the state machine remembers of an answered request: enough to give a retry the
/// same answer. Created and updated values are the request's own, so only a delete keeps
/// the value it removed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Remembered {
    pub at_ms: u64,
    pub answer: Result<(Revision, Option<serde_bytes::ByteBuf>), StoreError>,
}

pub fn remember(op: &WriteOp, at_ms: u64, answer: &Result<WriteResult, StoreError>) -> Remembered {
    let answer = match answer {
        Ok(r) => Ok((r.rev, matches!(op, WriteOp::Delete { .. }).then(|| serde_bytes::ByteBuf::from(r.stored.value.clone())))),
        Err(e) => Err(e.clone()),
    };
    Remembered { at_ms, answer }
}

/// The answer a retried request gets: the one its first arrival got.
pub fn recall(op: &WriteOp, r: &Remembered) -> Result<WriteResult, StoreError> {
    let (rev, removed) = r.answer.clone()?;
    let value = match (op, removed) {
        (_, Some(v)) => v.into_vec(),
        (WriteOp::Create { value, .. } | WriteOp::Update { value, .. }, None) => value.clone(),
        (WriteOp::Delete { .. }, None) => Vec::new(),
    };
    Ok(WriteResult { rev, stored: Stored { key: op.key().to_string(), rev, value } })
}

/// What the `kv` table holds per key. The subject is kept so a delete can be published
/// on the same subject the object's earlier events went to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KvEntry {
    pub rev: Revision,
    pub subject: String,
    #[serde(with = "serde_bytes")]
    pub value: Vec<u8>,
}

/// How the key's entry changes when a write succeeds.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    Put(KvEntry),
    Remove,
}

/// A successful write: its revision, the change to `kv`, the event to append and the
/// answer for the client.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub rev: Revision,
    pub change: Change,
    pub event: Event,
    pub result: WriteResult,
}

/// Refuses values over the limit; checked before proposing, and again on apply so that
/// every replica decides the same even if a proposer skipped the check.
pub fn check_size(op: &WriteOp) -> Result<(), StoreError> {
    let size = match op {
        WriteOp::Create { value, .. } | WriteOp::Update { value, .. } => value.len(),
        WriteOp::Delete { .. } => 0,
    };
    if size > MAX_VALUE_BYTES {
        return Err(StoreError::TooLarge { size, limit: MAX_VALUE_BYTES });
    }
    Ok(())
}

fn check_rev(key: &str, expected: Option<Revision>, current: &KvEntry) -> Result<(), StoreError> {
    match expected {
        Some(want) if want != current.rev => Err(StoreError::Conflict { key: key.to_string(), current: current.rev }),
        _ => Ok(()),
    }
}

/// Decides one write. An `Err` consumes no revision and must change nothing.
pub fn decide(op: &WriteOp, current: Option<&KvEntry>, last_rev: Revision) -> Result<Outcome, StoreError> {
    check_size(op)?;
    let rev = last_rev + 1;
    match (op, current) {
        (WriteOp::Create { key, .. }, Some(_)) => Err(StoreError::AlreadyExists(key.clone())),
        (WriteOp::Create { key, subject, value }, None) => Ok(put(key, subject, None, value, rev, EventType::Added)),
        (WriteOp::Update { key, .. }, None) | (WriteOp::Delete { key, .. }, None) => Err(StoreError::NotFound(key.clone())),
        (WriteOp::Update { key, subject, value, expected_rev }, Some(cur)) => {
            check_rev(key, *expected_rev, cur)?;
            Ok(put(key, subject, Some(cur), value, rev, EventType::Modified))
        }
        (WriteOp::Delete { key, expected_rev }, Some(cur)) => {
            check_rev(key, *expected_rev, cur)?;
            Ok(Outcome {
                rev,
                change: Change::Remove,
                event: Event {
                    rev,
                    typ: EventType::Deleted,
                    key: key.clone(),
                    subject: subjects::event_subject(&cur.subject, Some(&cur.subject)),
                    value: cur.value.clone(),
                    prev: Some(cur.rev),
                },
                // The removed value, at the revision of the delete, so a client can
                // resume a watch right after its own change.
                result: WriteResult { rev, stored: Stored { key: key.clone(), rev, value: cur.value.clone() } },
            })
        }
    }
}

/// The event's subject is decided here, on apply, from the stored subject before the
/// write: only the state machine knows it for certain (an unconditional update's writer
/// may have read an older object).
fn put(key: &str, subject: &str, before: Option<&KvEntry>, value: &[u8], rev: Revision, typ: EventType) -> Outcome {
    Outcome {
        rev,
        change: Change::Put(KvEntry { rev, subject: subject.to_string(), value: value.to_vec() }),
        event: Event {
            rev,
            typ,
            key: key.to_string(), subject: subjects::event_subject(subject, before.map(|b| b.subject.as_str())),
            value: value.to_vec(),
            prev: before.map(|b| b.rev),
        },
        result: WriteResult { rev, stored: Stored { key: key.to_string(), rev, value: value.to_vec() } },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// The same bookkeeping the redb state machine does, over a map.
    #[derive(Default)]
    struct Mem {
        kv: BTreeMap<String, KvEntry>,
        events: Vec<Event>,
        last_rev: Revision,
    }

    impl Mem {
        fn apply(&mut self, op: WriteOp) -> Result<WriteResult, StoreError> {
            let out = decide(&op, self.kv.get(op.key()), self.last_rev)?;
            match out.change {
                Change::Put(e) => {
                    self.kv.insert(op.key().to_string(), e);
                }
                Change::Remove => {
                    self.kv.remove(op.key());
                }
            }
            self.last_rev = out.rev;
            self.events.push(out.event);
            Ok(out.result)
        }
    }

    fn create(k: &str, v: u8) -> WriteOp {
        WriteOp::Create { key: k.into(), subject: format!("ev.{k}"), value: vec![v] }
    }
    fn update(k: &str, v: u8, expected_rev: Option<Revision>) -> WriteOp {
        WriteOp::Update { key: k.into(), subject: format!("ev.{k}.u"), value: vec![v], expected_rev }
    }
    fn delete(k: &str, expected_rev: Option<Revision>) -> WriteOp {
        WriteOp::Delete { key: k.into(), expected_rev }
    }

    #[test]
    fn revisions_increment_and_events_follow() {
        let mut m = Mem::default();
        assert_eq!(m.apply(create("a", 1)).map(|r| r.rev), Ok(1));
        assert_eq!(m.apply(create("b", 1)).map(|r| r.rev), Ok(2));
        assert_eq!(m.apply(update("a", 2, Some(1))).map(|r| r.rev), Ok(3));
        assert_eq!(m.apply(update("a", 3, None)).map(|r| r.rev), Ok(4));
        let d = m.apply(delete("a", Some(4))).expect("delete");
        assert_eq!(d.rev, 5);
        assert_eq!(d.stored.value, vec![3]);
        let typs: Vec<_> = m.events.iter().map(|e| (e.rev, e.typ)).collect();
        assert_eq!(
            typs,
            vec![(1, EventType::Added), (2, EventType::Added), (3, EventType::Modified), (4, EventType::Modified), (5, EventType::Deleted)]
        );
        // A delete is published where the object's last write said, with its last value.
        assert_eq!(m.events[4].subject, "ev.a.u");
        assert_eq!(m.events[4].value, vec![3]);
        assert!(!m.kv.contains_key("a"));
    }

    #[test]
    fn failed_preconditions_consume_no_revision() {
        let mut m = Mem::default();
        m.apply(create("a", 1)).expect("create");
        assert_eq!(m.apply(create("a", 2)), Err(StoreError::AlreadyExists("a".into())));
        assert_eq!(m.apply(update("x", 2, None)), Err(StoreError::NotFound("x".into())));
        assert_eq!(m.apply(delete("x", None)), Err(StoreError::NotFound("x".into())));
        assert_eq!(m.apply(update("a", 2, Some(7))), Err(StoreError::Conflict { key: "a".into(), current: 1 }));
        assert_eq!(m.apply(delete("a", Some(7))), Err(StoreError::Conflict { key: "a".into(), current: 1 }));
        assert_eq!(m.last_rev, 1);
        assert_eq!(m.events.len(), 1);
        assert_eq!(m.kv.get("a").map(|e| e.value.clone()), Some(vec![1]));
        // The next success takes the very next revision.
        assert_eq!(m.apply(update("a", 2, Some(1))).map(|r| r.rev), Ok(2));
    }

    #[test]
    fn recreate_after_delete_is_added() {
        let mut m = Mem::default();
        m.apply(create("a", 1)).expect("create");
        m.apply(delete("a", None)).expect("delete");
        assert_eq!(m.apply(create("a", 9)).map(|r| r.rev), Ok(3));
        assert_eq!(m.events[2].typ, EventType::Added);
    }

    #[test]
    fn a_retried_request_gets_its_first_answer() {
        let mut m = Mem::default();
        let op = create("a", 7);
        let first = m.apply(op.clone());
        let r = remember(&op, 5, &first);
        assert_eq!(recall(&op, &r), first);
        // Applying it again would have said AlreadyExists: recall keeps the success.
        assert!(m.apply(op.clone()).is_err());
        let del = delete("a", None);
        let gone = m.apply(del.clone());
        assert_eq!(recall(&del, &remember(&del, 6, &gone)), gone);
        let failed = m.apply(del.clone());
        assert_eq!(recall(&del, &remember(&del, 7, &failed)), failed);
    }

    #[test]
    fn a_bind_event_names_the_node_the_pod_left() {
        let mut m = Mem::default();
        let (pending, bound) = (subjects::object_event("pods", Some("d"), "p", None), subjects::object_event("pods", Some("d"), "p", Some("n1")));
        m.apply(WriteOp::Create { key: "pods/d/p".into(), subject: pending.clone(), value: vec![1] }).expect("create");
        m.apply(WriteOp::Update { key: "pods/d/p".into(), subject: bound.clone(), value: vec![2], expected_rev: None }).expect("bind");
        m.apply(WriteOp::Delete { key: "pods/d/p".into(), expected_rev: None }).expect("delete");
        let subs: Vec<_> = m.events.iter().map(|e| e.subject.as_str()).collect();
        assert_eq!(subs, vec!["ev.pods.d._.p._", "ev.pods.d.n1.p._", "ev.pods.d.n1.p.n1"]);
        assert_eq!(m.kv.len(), 0);
        let prevs: Vec<_> = m.events.iter().map(|e| e.prev).collect();
        assert_eq!(prevs, vec![None, Some(1), Some(2)]);
    }

    #[test]
    fn an_untraced_proposal_is_encoded_as_before_traces() {
        let p = Proposal { op: create("k", 1), id: None, at_ms: 5, trace: None, writer: None };
        let bytes = schema::codec::encode(&p).unwrap();
        assert!(!bytes.windows(5).any(|w| w == b"trace"), "no trace field when there is none");
        let back: Proposal = schema::codec::decode(&bytes).unwrap();
        assert_eq!(back, p);
        let traced = Proposal { trace: Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into()), ..p };
        assert_eq!(schema::codec::decode::<Proposal>(&schema::codec::encode(&traced).unwrap()).unwrap(), traced);
    }

    #[test]
    fn a_writer_is_carried_and_entries_from_before_it_still_decode() {
        #[derive(Serialize)]
        struct Before {
            op: WriteOp,
            id: Option<RequestId>,
            at_ms: u64,
            trace: Option<String>,
        }
        let old = schema::codec::encode(&Before { op: create("k", 1), id: None, at_ms: 5, trace: None }).unwrap();
        assert_eq!(schema::codec::decode::<Proposal>(&old).unwrap().writer, None);
        let p = Proposal { op: create("k", 1), id: None, at_ms: 5, trace: None, writer: Some("deployment-controller".into()) };
        assert_eq!(schema::codec::decode::<Proposal>(&schema::codec::encode(&p).unwrap()).unwrap(), p);
    }

    #[test]
    fn too_large_is_refused() {
        let mut m = Mem::default();
        let op = WriteOp::Create { key: "big".into(), subject: "ev.big".into(), value: vec![0; MAX_VALUE_BYTES + 1] };
        assert_eq!(m.apply(op), Err(StoreError::TooLarge { size: MAX_VALUE_BYTES + 1, limit: MAX_VALUE_BYTES }));
        assert_eq!(m.last_rev, 0);
        let ok = WriteOp::Create { key: "big".into(), subject: "ev.big".into(), value: vec![0; MAX_VALUE_BYTES] };
        assert!(m.apply(ok).is_ok());
    }
}
