//! A history checker for the state group's fault tests. A test records every client call
//! in a `History` (when it was sent, when it came back, what came back); afterwards
//! `check_linearizable` asks whether one sequential order of those calls, consistent with
//! real time, explains every answer, and `check_watch` whether a watch stream told the
//! truth about them. Pure functions: no I/O, no clocks beyond the recorded instants.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use schema::store::{Event, ReadResult, Revision, StoreError, WriteOp, WriteResult};

pub use schema::store::EventType as EventKind;

pub type ClientId = u64;

/// What a client asked for (the key is kept beside it, in `Op`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpKind {
    Create { value: Vec<u8> },
    Update { value: Vec<u8>, expected_rev: Option<Revision> },
    Delete { expected_rev: Option<Revision> },
    Get,
}

impl OpKind {
    pub fn of_write(op: &WriteOp) -> OpKind {
        match op {
            WriteOp::Create { value, .. } => OpKind::Create { value: value.clone() },
            WriteOp::Update { value, expected_rev, .. } => OpKind::Update { value: value.clone(), expected_rev: *expected_rev },
            WriteOp::Delete { expected_rev, .. } => OpKind::Delete { expected_rev: *expected_rev },
        }
    }

    fn is_write(&self) -> bool {
        !matches!(self, OpKind::Get)
    }

    fn expected_rev(&self) -> Option<Revision> {
        match self {
            OpKind::Update { expected_rev, .. } | OpKind::Delete { expected_rev } => *expected_rev,
            _ => None,
        }
    }

    fn written_value(&self) -> Option<&[u8]> {
        match self {
            OpKind::Create { value } | OpKind::Update { value, .. } => Some(value),
            _ => None,
        }
    }

    fn event_kind(&self) -> Option<EventKind> {
        match self {
            OpKind::Create { .. } => Some(EventKind::Added),
            OpKind::Update { .. } => Some(EventKind::Modified),
            OpKind::Delete { .. } => Some(EventKind::Deleted),
            OpKind::Get => None,
        }
    }
}

/// A definite refusal: the store says the write did not happen, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    AlreadyExists,
    NotFound,
    Conflict { current: Revision },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A write committed at `rev`.
    Written {
        rev: Revision,
    },
    /// A Get's answer: the value and the key's revision (None when absent), and the store
    /// revision it was read at when the reader knows it.
    Read {
        item: Option<(Vec<u8>, Revision)>,
        store_rev: Option<Revision>,
    },
    Failed(Failure),
    /// Timed out, unavailable, leader lost: a write may or may not have taken effect.
    Unknown,
}

impl Outcome {
    pub fn of_write(res: &Result<WriteResult, StoreError>) -> Outcome {
        match res {
            Ok(w) => Outcome::Written { rev: w.rev },
            Err(e) => Outcome::of_error(e),
        }
    }

    pub fn of_read(res: &Result<ReadResult, StoreError>) -> Outcome {
        match res {
            Ok(ReadResult::Get { item, rev }) => {
                Outcome::Read { item: item.as_ref().map(|s| (s.value.clone(), s.rev)), store_rev: Some(*rev) }
            }
            Ok(ReadResult::List { .. }) => panic!("the history records Gets, not Lists"),
            Err(e) => Outcome::of_error(e),
        }
    }

    /// Only the three precondition failures prove a write did not happen. `NotLeader` is
    /// not one: a leader that loses its term answers it to writes it had already appended,
    /// and the next leader may still commit them.
    pub fn of_error(e: &StoreError) -> Outcome {
        match e {
            StoreError::AlreadyExists(_) => Outcome::Failed(Failure::AlreadyExists),
            StoreError::NotFound(_) => Outcome::Failed(Failure::NotFound),
            StoreError::Conflict { current, .. } => Outcome::Failed(Failure::Conflict { current: *current }),
            _ => Outcome::Unknown,
        }
    }
}

/// One recorded call. `complete` means nothing for an `Unknown` outcome: such a write
/// may take effect at any time after `invoke`.
#[derive(Debug, Clone)]
pub struct Op {
    pub id: usize,
    pub client: ClientId,
    pub key: String,
    pub kind: OpKind,
    pub invoke: Instant,
    pub complete: Instant,
    pub outcome: Outcome,
}

/// The recorder: clone it into every client task.
#[derive(Debug, Clone, Default)]
pub struct History {
    ops: Arc<Mutex<Vec<Op>>>,
}

impl History {
    pub fn new() -> History {
        History::default()
    }

    /// Starts a call now; finish it with `Pending::complete`. Dropping the handle
    /// uncompleted records `Unknown` (the task panicked or was cancelled mid-call).
    pub fn invoke(&self, client: ClientId, key: impl Into<String>, kind: OpKind) -> Pending {
        Pending { history: self.clone(), client, key: key.into(), kind: Some(kind), invoke: Instant::now() }
    }

    pub fn invoke_write(&self, client: ClientId, op: &WriteOp) -> Pending {
        self.invoke(client, op.key(), OpKind::of_write(op))
    }

    pub fn invoke_get(&self, client: ClientId, key: impl Into<String>) -> Pending {
        self.invoke(client, key, OpKind::Get)
    }

    /// Records a finished call with explicit instants (for replayed or generated histories).
    pub fn record(&self, client: ClientId, key: impl Into<String>, kind: OpKind, invoke: Instant, complete: Instant, outcome: Outcome) {
        // A panicking client task must not poison the history for the others.
        let mut ops = self.ops.lock().unwrap_or_else(|e| e.into_inner());
        let id = ops.len();
        ops.push(Op { id, client, key: key.into(), kind, invoke, complete, outcome });
    }

    pub fn ops(&self) -> Vec<Op> {
        self.ops.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

#[must_use = "complete the call, or it is recorded as Unknown when dropped"]
pub struct Pending {
    history: History,
    client: ClientId,
    key: String,
    kind: Option<OpKind>,
    invoke: Instant,
}

impl Pending {
    pub fn complete(mut self, outcome: Outcome) {
        self.finish(outcome);
    }

    fn finish(&mut self, outcome: Outcome) {
        if let Some(kind) = self.kind.take() {
            let key = std::mem::take(&mut self.key);
            self.history.record(self.client, key, kind, self.invoke, Instant::now(), outcome);
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.finish(Outcome::Unknown);
    }
}

// ----------------------------------------------------------------------------------------
// Violations

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ViolationKind {
    /// No order of the calls on one key explains their answers.
    NotLinearizable,
    /// Revisions contradict real time or each other (duplicates, a read's store revision).
    RevisionOrder,
    /// A watch stream skipped, repeated, reordered or invented an event.
    Watch,
    /// The search gave up: the answer is unknown, not bad.
    TooComplex,
}

#[derive(Debug, Clone)]
pub struct Violation {
    pub kind: ViolationKind,
    pub key: Option<String>,
    pub message: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.kind)?;
        if let Some(key) = &self.key {
            write!(f, " on key {key:?}")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for Violation {}

fn violation(kind: ViolationKind, key: Option<&str>, message: String) -> Violation {
    Violation { kind, key: key.map(str::to_string), message }
}

/// Prints ops with times relative to the history's first call, so reports read as a timeline.
struct Show {
    t0: Instant,
}

impl Show {
    fn new(ops: &[Op]) -> Show {
        Show { t0: ops.iter().map(|o| o.invoke).min().unwrap_or_else(Instant::now) }
    }

    fn ms(&self, t: Instant) -> String {
        format!("{:.3}ms", t.saturating_duration_since(self.t0).as_secs_f64() * 1000.0)
    }

    fn op(&self, op: &Op) -> String {
        let kind = match &op.kind {
            OpKind::Create { value } => format!("Create({})", show_value(value)),
            OpKind::Update { value, expected_rev } => format!("Update({}, expected_rev {expected_rev:?})", show_value(value)),
            OpKind::Delete { expected_rev } => format!("Delete(expected_rev {expected_rev:?})"),
            OpKind::Get => "Get".to_string(),
        };
        let outcome = match &op.outcome {
            Outcome::Written { rev } => format!("ok at rev {rev}"),
            Outcome::Read { item: None, store_rev } => format!("absent (store rev {store_rev:?})"),
            Outcome::Read { item: Some((v, r)), store_rev } => format!("{} at rev {r} (store rev {store_rev:?})", show_value(v)),
            Outcome::Failed(f) => format!("{f:?}"),
            Outcome::Unknown => "unknown".to_string(),
        };
        let end = if op.outcome == Outcome::Unknown { "?".to_string() } else { self.ms(op.complete) };
        format!("#{} client {} {} {kind} -> {outcome} [{} .. {end}]", op.id, op.client, op.key, self.ms(op.invoke))
    }
}

fn show_value(v: &[u8]) -> String {
    match std::str::from_utf8(v) {
        Ok(s) if s.chars().all(|c| !c.is_control()) && s.len() <= 40 => format!("{s:?}"),
        _ => format!("{} bytes {:02x?}", v.len(), &v[..v.len().min(12)]),
    }
}

// ----------------------------------------------------------------------------------------
// Linearizability

/// Gives up on one key after this many attempts to linearize a call: far above what a
/// fault test's history needs (thousands), and reached within seconds.
const MAX_STEPS_PER_KEY: u64 = 500_000;

/// Checks the whole history: revisions against real time first (cheap, and their reports
/// are the most precise), then each key on its own, which linearizability allows (it is
/// local) and which keeps the search small.
pub fn check_linearizable(ops: &[Op]) -> Result<(), Violation> {
    let show = Show::new(ops);
    for op in ops {
        if let Some(why) = impossible_answer(op) {
            return Err(violation(ViolationKind::NotLinearizable, Some(&op.key), format!("{why}: {}", show.op(op))));
        }
    }
    let pinned = pin_lost_writes(ops);
    let taken = TakenRevs::new(ops, &pinned, &show)?;
    check_revisions_in_real_time(ops, &show)?;
    check_reads_at_store_rev(ops, &show)?;
    let mut by_key: BTreeMap<&str, Vec<(&Op, Option<Pin>)>> = BTreeMap::new();
    for (op, pin) in ops.iter().zip(pinned) {
        by_key.entry(&op.key).or_default().push((op, pin));
    }
    for (key, key_ops) in by_key {
        check_key(key, &key_ops, &taken, &show)?;
    }
    Ok(())
}

/// Answers no state can produce, caught up front so the report names them instead of
/// "no linearization".
fn impossible_answer(op: &Op) -> Option<&'static str> {
    use OpKind::*;
    match (&op.kind, &op.outcome) {
        (_, Outcome::Unknown) => None,
        (Get, Outcome::Read { item: Some((_, r)), store_rev: Some(s) }) if r > s => {
            Some("a Get saw a key revision above its store revision")
        }
        (Get, Outcome::Read { .. }) => None,
        (Get, _) | (_, Outcome::Read { .. }) => Some("the recorded outcome does not fit the call (test bug)"),
        (_, Outcome::Written { rev: 0 }) => Some("a write committed at revision 0"),
        (_, Outcome::Written { .. }) => None,
        (Create { .. }, Outcome::Failed(Failure::AlreadyExists)) => None,
        (Create { .. }, Outcome::Failed(_)) => Some("a Create failed with something other than AlreadyExists"),
        (_, Outcome::Failed(Failure::AlreadyExists)) => Some("an Update or Delete failed with AlreadyExists"),
        (_, Outcome::Failed(Failure::NotFound)) => None,
        (k, Outcome::Failed(Failure::Conflict { current })) => match k.expected_rev() {
            None => Some("a Conflict for a write without an expected revision"),
            Some(e) if e == *current => Some("a Conflict although the expected revision is the current one"),
            Some(_) => None,
        },
    }
}

fn acked_rev(op: &Op) -> Revision {
    match op.outcome {
        Outcome::Written { rev } => rev,
        _ => 0,
    }
}

/// A lost write that a Get showed: it took effect at `rev`, before `by` (that Get's return).
#[derive(Debug, Clone, Copy)]
struct Pin {
    rev: Revision,
    by: Instant,
}

/// A Get showing a value at a revision no acknowledged write holds names a lost write
/// that took effect: the only lost write of that value on that key, at that revision.
/// Knowing its revision fixes its place among the other writes, which prunes the search.
fn pin_lost_writes(ops: &[Op]) -> Vec<Option<Pin>> {
    let acked: HashSet<Revision> = ops.iter().map(acked_rev).collect();
    let mut lost: HashMap<(&str, &[u8]), Vec<usize>> = HashMap::new();
    for (i, op) in ops.iter().enumerate() {
        if let (Some(v), Outcome::Unknown) = (op.kind.written_value(), &op.outcome) {
            lost.entry((&op.key, v)).or_default().push(i);
        }
    }
    let mut pinned = vec![None; ops.len()];
    for op in ops {
        let Outcome::Read { item: Some((v, r)), .. } = &op.outcome else { continue };
        if let Some(&[only]) = lost.get(&(op.key.as_str(), v.as_slice())).map(Vec::as_slice) {
            if !acked.contains(r) {
                let pin = pinned[only].get_or_insert(Pin { rev: *r, by: op.complete });
                if pin.rev == *r {
                    pin.by = pin.by.min(op.complete);
                }
            }
        }
    }
    pinned
}

/// The revisions known to be held by a write: acknowledged or pinned. Each belongs to
/// exactly one write, so a lost write cannot have committed at any of the others.
struct TakenRevs {
    sorted: Vec<Revision>,
}

impl TakenRevs {
    fn new(ops: &[Op], pinned: &[Option<Pin>], show: &Show) -> Result<TakenRevs, Violation> {
        let mut by_rev: HashMap<Revision, &Op> = HashMap::new();
        for (op, pin) in ops.iter().zip(pinned) {
            let Some(rev) = pin.map(|p| p.rev).or(Some(acked_rev(op)).filter(|r| *r > 0)) else { continue };
            if let Some(other) = by_rev.insert(rev, op) {
                return Err(violation(
                    ViolationKind::RevisionOrder,
                    Some(&op.key),
                    format!("two writes hold revision {rev} (acknowledged there, or read there):\n  {}\n  {}", show.op(other), show.op(op)),
                ));
            }
        }
        let mut sorted: Vec<Revision> = by_rev.into_keys().collect();
        sorted.sort_unstable();
        Ok(TakenRevs { sorted })
    }

    fn contains(&self, r: Revision) -> bool {
        self.sorted.binary_search(&r).is_ok()
    }

    /// How many revisions strictly between `lo` and `hi` no write is known to hold.
    fn free_between(&self, lo: Revision, hi: Revision) -> u64 {
        if hi <= lo + 1 {
            return 0;
        }
        let taken = self.sorted.partition_point(|&r| r < hi) - self.sorted.partition_point(|&r| r <= lo);
        hi - lo - 1 - taken as u64
    }
}

/// Where an op sits in the store's single revision sequence: a write at its revision, a
/// read with a store revision just after it.
fn revision_point(op: &Op) -> Option<(Revision, bool)> {
    match op.outcome {
        Outcome::Written { rev } => Some((rev, true)),
        Outcome::Read { store_rev: Some(s), .. } => Some((s, false)),
        _ => None,
    }
}

/// Revisions are global, so real time orders them across keys: whatever finished before
/// a write was sent sits below the write's revision, and whatever finished before a read
/// was sent sits at or below the read's store revision.
fn check_revisions_in_real_time(ops: &[Op], show: &Show) -> Result<(), Violation> {
    let mut by_complete: Vec<&Op> = ops.iter().filter(|o| revision_point(o).is_some()).collect();
    by_complete.sort_by_key(|o| o.complete);
    let mut by_invoke = by_complete.clone();
    by_invoke.sort_by_key(|o| o.invoke);
    let mut highest: Option<&Op> = None;
    let mut finished = by_complete.iter().peekable();
    for op in by_invoke {
        while let Some(done) = finished.next_if(|d| d.complete < op.invoke) {
            if highest.is_none_or(|h| revision_point(done) > revision_point(h)) {
                highest = Some(done);
            }
        }
        let Some(before) = highest else { continue };
        let (at, is_write) = revision_point(op).expect("filtered");
        let (prior, _) = revision_point(before).expect("filtered");
        if prior > at || (is_write && prior == at) {
            return Err(violation(
                ViolationKind::RevisionOrder,
                Some(&op.key),
                format!("revision order contradicts real time:\n  {}\nfinished before\n  {}\nwas sent", show.op(before), show.op(op)),
            ));
        }
    }
    Ok(())
}

/// A Get answers from one snapshot at its store revision: the key's newest acknowledged
/// write at or below that revision is what it must show.
fn check_reads_at_store_rev(ops: &[Op], show: &Show) -> Result<(), Violation> {
    let mut writes: HashMap<&str, BTreeMap<Revision, &Op>> = HashMap::new();
    let mut unknown_deletes: HashSet<&str> = HashSet::new();
    for op in ops {
        match (&op.kind, &op.outcome) {
            (_, Outcome::Written { rev }) => {
                writes.entry(&op.key).or_default().insert(*rev, op);
            }
            (OpKind::Delete { .. }, Outcome::Unknown) => {
                unknown_deletes.insert(&op.key);
            }
            _ => {}
        }
    }
    for op in ops {
        let Outcome::Read { item, store_rev: Some(s) } = &op.outcome else { continue };
        let Some((_, last)) = writes.get(op.key.as_str()).and_then(|w| w.range(..=s).next_back()) else { continue };
        let stale = match (item, &last.kind) {
            (Some((_, r)), _) if *r < acked_rev(last) => true,
            (Some((v, r)), kind) if *r == acked_rev(last) => kind.written_value() != Some(v),
            (None, OpKind::Create { .. } | OpKind::Update { .. }) => !unknown_deletes.contains(op.key.as_str()),
            _ => false,
        };
        if stale {
            return Err(violation(
                ViolationKind::NotLinearizable,
                Some(&op.key),
                format!(
                    "a read at store revision {s} does not show the key's write at or below it:\n  {}\n  {}",
                    show.op(op),
                    show.op(last)
                ),
            ));
        }
    }
    Ok(())
}

// --- the per-key search (Wing & Gong, with Lowe's memoization) ---

/// The key's revision in the model. After lost writes that nothing pinned it is not a
/// number but "the `count`-th of `count` distinct free revisions above `above`", and the
/// first observation fixes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Rev {
    Known(Revision),
    Unknown { above: Revision, count: u32 },
}

/// The model of one key: its value (interned) and the revision of its last write, kept
/// when absent too, because a later Create must still commit above the Delete.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct State {
    value: Option<u32>,
    rev: Rev,
}

/// One call on the key, with values interned so states are small and cheap to hash.
/// `returns` is when it must have taken effect by: its completion, or for a pinned lost
/// write the return of the Get that showed it; None for other lost writes.
#[derive(Debug, Clone, Copy)]
struct Call {
    kind: CallKind,
    result: CallResult,
    invoke: Instant,
    returns: Option<Instant>,
}

impl Call {
    /// The revision of a write whose revision is known (acknowledged or pinned).
    fn write_rev(&self) -> Option<Revision> {
        match self.result {
            CallResult::Written(r) | CallResult::Lost(Some(r)) => Some(r),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum CallKind {
    Create(u32),
    Update(u32, Option<Revision>),
    Delete(Option<Revision>),
    Get,
}

#[derive(Debug, Clone, Copy)]
enum CallResult {
    Written(Revision),
    /// A lost write; when linearized it takes effect, at the pinned revision if known.
    Lost(Option<Revision>),
    Read(Option<(u32, Revision)>),
    Failed(Failure),
}

impl Rev {
    /// The key's revision can be `r`, fixing an unknown one.
    fn fix(self, r: Revision, taken: &TakenRevs) -> Option<Rev> {
        let ok = match self {
            Rev::Known(k) => k == r,
            Rev::Unknown { above, count } => r > above && !taken.contains(r) && taken.free_between(above, r) >= u64::from(count - 1),
        };
        ok.then_some(Rev::Known(r))
    }

    /// The revision after a write at `at` (None: a lost write's, which nothing pinned).
    /// `below` is the revision of the key's next write of known revision, if any: a lost
    /// write taking effect now needs a free revision under it, and there are few.
    fn then_write(self, at: Option<Revision>, below: Option<Revision>, taken: &TakenRevs) -> Option<Rev> {
        let next = match (self, at) {
            (Rev::Known(k), Some(r)) => (r > k).then_some(Rev::Known(r))?,
            (Rev::Unknown { above, count }, Some(r)) => (taken.free_between(above, r) >= u64::from(count)).then_some(Rev::Known(r))?,
            (Rev::Known(k), None) => Rev::Unknown { above: k, count: 1 },
            (Rev::Unknown { above, count }, None) => Rev::Unknown { above, count: count + 1 },
        };
        match (next, below) {
            (Rev::Unknown { above, count }, Some(b)) => (taken.free_between(above, b) >= u64::from(count)).then_some(next),
            _ => Some(next),
        }
    }
}

/// The sequential specification: the state after `call` takes effect in `state`, or None
/// when its answer is impossible there. `below` as in `Rev::then_write`.
fn step(state: State, call: &Call, below: Option<Revision>, taken: &TakenRevs) -> Option<State> {
    let present = state.value.is_some();
    match (call.kind, call.result) {
        (kind, CallResult::Written(r)) => write(state, kind, Some(r), below, taken),
        (kind, CallResult::Lost(pinned)) => write(state, kind, pinned, below, taken),
        (CallKind::Create(_), CallResult::Failed(Failure::AlreadyExists)) => present.then_some(state),
        (_, CallResult::Failed(Failure::NotFound)) => (!present).then_some(state),
        (_, CallResult::Failed(Failure::Conflict { current })) if present => Some(State { rev: state.rev.fix(current, taken)?, ..state }),
        (CallKind::Get, CallResult::Read(None)) => (!present).then_some(state),
        (CallKind::Get, CallResult::Read(Some((v, r)))) if state.value == Some(v) => Some(State { rev: state.rev.fix(r, taken)?, ..state }),
        _ => None,
    }
}

fn write(state: State, kind: CallKind, at: Option<Revision>, below: Option<Revision>, taken: &TakenRevs) -> Option<State> {
    let (needs_present, expected, value) = match kind {
        CallKind::Create(v) => (false, None, Some(v)),
        CallKind::Update(v, e) => (true, e, Some(v)),
        CallKind::Delete(e) => (true, e, None),
        CallKind::Get => return None,
    };
    if state.value.is_some() != needs_present {
        return None;
    }
    let checked = match expected {
        Some(e) => state.rev.fix(e, taken)?,
        None => state.rev,
    };
    Some(State { value, rev: checked.then_write(at, below, taken)? })
}

/// The calls worth searching over, those that must take effect first, with values
/// interned. Gets without an answer say nothing. A lost Update whose value nobody read
/// can only hurt an explanation (it hides the value and raises the revision), unless some
/// Conflict or expected revision names a revision no write is known to hold: it is left
/// out otherwise.
fn calls_for_key<'a>(ops: &[(&'a Op, Option<Pin>)], taken: &TakenRevs) -> (Vec<&'a Op>, Vec<Call>, Vec<&'a [u8]>) {
    let read_values: HashSet<&[u8]> = ops
        .iter()
        .filter_map(|(o, _)| match &o.outcome {
            Outcome::Read { item: Some((v, _)), .. } => Some(v.as_slice()),
            _ => None,
        })
        .collect();
    let unexplained_rev = ops.iter().any(|(o, _)| {
        let named = match &o.outcome {
            Outcome::Failed(Failure::Conflict { current }) => Some(*current),
            Outcome::Written { .. } | Outcome::Unknown => o.kind.expected_rev(),
            _ => None,
        };
        named.is_some_and(|r| !taken.contains(r))
    });
    let useful = |(o, _): &&(&Op, Option<Pin>)| match (&o.kind, &o.outcome) {
        (OpKind::Get, Outcome::Unknown) => false,
        (OpKind::Update { value, .. }, Outcome::Unknown) => unexplained_rev || read_values.contains(value.as_slice()),
        _ => true,
    };
    let mut kept: Vec<(&Op, Option<Pin>)> = ops.iter().filter(useful).copied().collect();
    kept.sort_by_key(|(o, pin)| o.outcome == Outcome::Unknown && pin.is_none());

    let mut interned: HashMap<&[u8], u32> = HashMap::new();
    let mut values: Vec<&[u8]> = Vec::new();
    let mut intern = |v: &'a [u8]| {
        *interned.entry(v).or_insert_with(|| {
            values.push(v);
            values.len() as u32 - 1
        })
    };
    let calls = kept
        .iter()
        .map(|(o, pin)| Call {
            kind: match &o.kind {
                OpKind::Create { value } => CallKind::Create(intern(value)),
                OpKind::Update { value, expected_rev } => CallKind::Update(intern(value), *expected_rev),
                OpKind::Delete { expected_rev } => CallKind::Delete(*expected_rev),
                OpKind::Get => CallKind::Get,
            },
            result: match &o.outcome {
                Outcome::Written { rev } => CallResult::Written(*rev),
                Outcome::Read { item, .. } => CallResult::Read(item.as_ref().map(|(v, r)| (intern(v), *r))),
                Outcome::Failed(f) => CallResult::Failed(*f),
                Outcome::Unknown => CallResult::Lost(pin.map(|p| p.rev)),
            },
            invoke: o.invoke,
            returns: match (&o.outcome, pin) {
                (Outcome::Unknown, pin) => pin.map(|p| p.by),
                _ => Some(o.complete),
            },
        })
        .collect();
    (kept.into_iter().map(|(o, _)| o).collect(), calls, values)
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Bits(Vec<u64>);

impl Bits {
    fn new(n: usize) -> Bits {
        Bits(vec![0; n.div_ceil(64)])
    }
    fn set(&mut self, i: usize, on: bool) {
        if on {
            self.0[i / 64] |= 1 << (i % 64);
        } else {
            self.0[i / 64] &= !(1 << (i % 64));
        }
    }
    fn is_subset(&self, other: &Bits) -> bool {
        self.0.iter().zip(&other.0).all(|(a, b)| a & !b == 0)
    }
}

/// The calls' invocations and returns in time order, as a doubly linked list so that
/// linearized calls can be taken out and put back in O(1) (node 0 is the head).
struct Timeline {
    op: Vec<usize>,
    is_return: Vec<bool>,
    prev: Vec<usize>,
    next: Vec<usize>,
    call_node: Vec<usize>,
    return_node: Vec<Option<usize>>,
}

const NIL: usize = usize::MAX;

impl Timeline {
    fn new(calls: &[Call]) -> Timeline {
        let mut entries: Vec<(Instant, bool, usize)> = Vec::new();
        for (i, c) in calls.iter().enumerate() {
            entries.push((c.invoke, false, i));
            if let Some(t) = c.returns {
                entries.push((t, true, i));
            }
        }
        // At equal instants invocations go first: touching intervals count as concurrent.
        entries.sort_by_key(|&(t, is_return, _)| (t, is_return));
        let n = entries.len() + 1;
        let mut t = Timeline {
            op: vec![NIL; n],
            is_return: vec![false; n],
            prev: (0..n).map(|i| i.wrapping_sub(1)).collect(),
            next: (1..=n).map(|i| if i == n { NIL } else { i }).collect(),
            call_node: vec![NIL; calls.len()],
            return_node: vec![None; calls.len()],
        };
        for (k, (_, is_return, i)) in entries.into_iter().enumerate() {
            let node = k + 1;
            t.op[node] = i;
            t.is_return[node] = is_return;
            if is_return {
                t.return_node[i] = Some(node);
            } else {
                t.call_node[i] = node;
            }
        }
        t
    }

    /// The calls that may take effect next: all invoked before the first pending return.
    /// Completed calls come first and lost writes last, so that "not applied yet" is
    /// explored before "applied", which is what lets the memo prune the latter.
    fn candidates(&self, completed: usize) -> Vec<usize> {
        let mut out = Vec::new();
        let mut node = self.next[0];
        while node != NIL && !self.is_return[node] {
            out.push(self.op[node]);
            node = self.next[node];
        }
        out.sort_by_key(|&op| op >= completed);
        out
    }

    fn first_pending_return(&self) -> Option<usize> {
        let mut node = self.next[0];
        while node != NIL && !self.is_return[node] {
            node = self.next[node];
        }
        (node != NIL).then(|| self.op[node])
    }

    fn unlink(&mut self, node: usize) {
        let (p, n) = (self.prev[node], self.next[node]);
        self.next[p] = n;
        if n != NIL {
            self.prev[n] = p;
        }
    }

    /// Undoes `unlink`; valid because nodes are put back in the reverse order of removal.
    fn relink(&mut self, node: usize) {
        let (p, n) = (self.prev[node], self.next[node]);
        self.next[p] = node;
        if n != NIL {
            self.prev[n] = node;
        }
    }

    fn lift(&mut self, op: usize) {
        self.unlink(self.call_node[op]);
        if let Some(r) = self.return_node[op] {
            self.unlink(r);
        }
    }

    fn unlift(&mut self, op: usize) {
        if let Some(r) = self.return_node[op] {
            self.relink(r);
        }
        self.relink(self.call_node[op]);
    }
}

/// One level of the depth-first search: the call that led here and what to try next.
struct Frame {
    applied: Option<usize>,
    before: State,
    candidates: Vec<usize>,
    tried: usize,
}

/// Where the search got furthest, for the report.
struct Stuck {
    linearized: usize,
    blocked: usize,
    state: State,
    after: Option<usize>,
}

/// What the memo compares configurations by. `seen` maps (completed calls, state without
/// the count of lost writes applied since the last known revision) to the explored
/// (lost writes applied, that count) pairs; fewer of either only leaves more options.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Explored {
    applied: Bits,
    count: u32,
}

impl Explored {
    fn covers(&self, other: &Explored) -> bool {
        self.applied.is_subset(&other.applied) && self.count <= other.count
    }
}

fn memo_key(done: &Bits, state: State) -> ((Bits, State), u32) {
    match state.rev {
        Rev::Unknown { above, count } => ((done.clone(), State { rev: Rev::Unknown { above, count: 0 }, ..state }), count),
        Rev::Known(_) => ((done.clone(), state), 0),
    }
}

/// Wing & Gong's search with Lowe's memoization over (linearized calls, state). Lost
/// writes nothing pinned have no return, so they never force a backtrack and may stay
/// unapplied; a configuration is skipped when an explored one `covers` it. Writes of
/// known revision must take effect in revision order, so only the next of them is tried.
fn check_key(key: &str, ops: &[(&Op, Option<Pin>)], taken: &TakenRevs, show: &Show) -> Result<(), Violation> {
    let (ops, calls, values) = calls_for_key(ops, taken);
    let completed = calls.iter().filter(|c| c.returns.is_some()).count();
    let mut in_order: Vec<Revision> = calls.iter().filter_map(Call::write_rev).collect();
    in_order.sort_unstable();
    let mut timeline = Timeline::new(&calls);
    let mut state = State { value: None, rev: Rev::Known(0) };
    let (mut done, mut applied) = (Bits::new(completed), Bits::new(ops.len() - completed));
    let mark = |done: &mut Bits, applied: &mut Bits, op: usize, on: bool| {
        if op < completed {
            done.set(op, on)
        } else {
            applied.set(op - completed, on)
        }
    };
    let mut seen: HashMap<(Bits, State), Vec<Explored>> = HashMap::new();
    let mut stack = vec![Frame { applied: None, before: state, candidates: timeline.candidates(completed), tried: 0 }];
    let mut stuck: Option<Stuck> = None;
    let (mut linearized, mut writes_done, mut steps) = (0, 0, 0u64);
    while linearized < completed {
        let frame = stack.last_mut().expect("the root frame is never popped without returning");
        let Some(&op) = frame.candidates.get(frame.tried) else {
            // Nothing can take effect here: remember how far we got, then undo the last call.
            if stuck.as_ref().is_none_or(|s| linearized > s.linearized) {
                let blocked = timeline.first_pending_return().expect("a completed call is pending");
                stuck = Some(Stuck { linearized, blocked, state, after: frame.applied });
            }
            let Some(undo) = frame.applied else {
                return Err(not_linearizable(key, &ops, &values, completed, &stuck.expect("set above"), show));
            };
            state = frame.before;
            stack.pop();
            timeline.unlift(undo);
            mark(&mut done, &mut applied, undo, false);
            linearized -= usize::from(undo < completed);
            writes_done -= usize::from(calls[undo].write_rev().is_some());
            continue;
        };
        frame.tried += 1;
        steps += 1;
        if steps > MAX_STEPS_PER_KEY {
            return Err(too_complex(key, &ops, steps));
        }
        if calls[op].write_rev().is_some_and(|r| in_order.binary_search(&r) != Ok(writes_done)) {
            continue;
        }
        let Some(next) = step(state, &calls[op], in_order.get(writes_done).copied(), taken) else { continue };
        mark(&mut done, &mut applied, op, true);
        let (memo, count) = memo_key(&done, next);
        let this = Explored { applied: applied.clone(), count };
        let explored = seen.entry(memo).or_default();
        if explored.iter().any(|e| e.covers(&this)) {
            mark(&mut done, &mut applied, op, false);
            continue;
        }
        explored.retain(|e| !this.covers(e));
        explored.push(this);
        timeline.lift(op);
        linearized += usize::from(op < completed);
        writes_done += usize::from(calls[op].write_rev().is_some());
        stack.push(Frame { applied: Some(op), before: state, candidates: timeline.candidates(completed), tried: 0 });
        state = next;
    }
    Ok(())
}

fn too_complex(key: &str, ops: &[&Op], steps: u64) -> Violation {
    let unknown = ops.iter().filter(|o| o.outcome == Outcome::Unknown).count();
    violation(
        ViolationKind::TooComplex,
        Some(key),
        format!("gave up after {steps} search steps over {} calls ({unknown} with unknown outcome); record fewer calls per key or less concurrency", ops.len()),
    )
}

fn not_linearizable(key: &str, ops: &[&Op], values: &[&[u8]], completed: usize, stuck: &Stuck, show: &Show) -> Violation {
    let blocked = ops[stuck.blocked];
    let value = |id: u32| show_value(values[id as usize]);
    let state = match (stuck.state.value, stuck.state.rev) {
        (None, _) => "absent".to_string(),
        (Some(v), Rev::Known(r)) => format!("{} at rev {r}", value(v)),
        (Some(v), Rev::Unknown { above, .. }) => format!("{} at some rev above {above}", value(v)),
    };
    let after = stuck.after.map_or("no call yet".to_string(), |o| show.op(ops[o]));
    let overlapping: Vec<String> = ops
        .iter()
        .filter(|o| o.id != blocked.id && o.invoke <= blocked.complete && (o.outcome == Outcome::Unknown || o.complete >= blocked.invoke))
        .take(12)
        .map(|o| format!("  {}", show.op(o)))
        .collect();
    violation(
        ViolationKind::NotLinearizable,
        Some(key),
        format!(
            "no order of its {} calls explains the answers. The longest explanation covers {} of {completed} completed calls; \
             then this call cannot have taken effect:\n  {}\nwhen the key is {state}, after\n  {after}\ncalls overlapping it:\n{}",
            ops.len(),
            stuck.linearized,
            show.op(blocked),
            overlapping.join("\n")
        ),
    )
}

// ----------------------------------------------------------------------------------------
// Watch streams

/// One delivered event, as the checker needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchEvent {
    pub rev: Revision,
    pub key: String,
    pub kind: EventKind,
    pub value: Vec<u8>,
}

impl WatchEvent {
    pub fn new(rev: Revision, key: impl Into<String>, kind: EventKind, value: impl Into<Vec<u8>>) -> WatchEvent {
        WatchEvent { rev, key: key.into(), kind, value: value.into() }
    }
}

impl From<&Event> for WatchEvent {
    fn from(e: &Event) -> WatchEvent {
        WatchEvent::new(e.rev, e.key.clone(), e.typ, e.value.clone())
    }
}

/// Checks one watch on `keys` opened after revision `from_rev` against the recorded
/// history: strictly increasing revisions on watched keys only, every acknowledged write
/// above `from_rev` on those keys delivered, every event written by some call (an event
/// for a lost-answer write shows it took effect), and each key's events telling a possible
/// story. Drain the watch up to the highest acknowledged revision before calling this.
pub fn check_watch(events: &[WatchEvent], ops: &[Op], keys: &[&str], from_rev: Revision) -> Result<(), Violation> {
    let show = Show::new(ops);
    let fail = |(key, message): (String, String)| violation(ViolationKind::Watch, Some(&key), message);
    check_event_order(events, keys, from_rev).map_err(fail)?;
    // Completeness before content: a skipped event makes the next one on its key look wrong.
    check_nothing_missing(events, ops, keys, from_rev, &show).map_err(fail)?;
    let unresolved = match_events_to_calls(events, ops, &show).map_err(fail)?;
    check_key_stories(events, ops, &unresolved, from_rev).map_err(fail)
}

type WatchError = (String, String);

fn check_event_order(events: &[WatchEvent], keys: &[&str], from_rev: Revision) -> Result<(), WatchError> {
    let mut prev: Option<&WatchEvent> = None;
    for ev in events {
        let why = if !keys.contains(&ev.key.as_str()) {
            format!("an event for a key the watch does not cover: {ev:?}")
        } else if ev.rev <= from_rev {
            format!("an event at or below the start revision {from_rev}: {ev:?}")
        } else if let Some(p) = prev.filter(|p| p.rev >= ev.rev) {
            let what = if p.rev == ev.rev { "duplicate" } else { "out of order" };
            format!("{what} revision: {p:?} then {ev:?}")
        } else {
            prev = Some(ev);
            continue;
        };
        return Err((ev.key.clone(), why));
    }
    Ok(())
}

fn check_nothing_missing(events: &[WatchEvent], ops: &[Op], keys: &[&str], from_rev: Revision, show: &Show) -> Result<(), WatchError> {
    let delivered: HashSet<Revision> = events.iter().map(|e| e.rev).collect();
    let mut missing: Vec<&Op> = ops
        .iter()
        .filter(|o| matches!(o.outcome, Outcome::Written { rev } if rev > from_rev && !delivered.contains(&rev)))
        .filter(|o| keys.contains(&o.key.as_str()))
        .collect();
    missing.sort_by_key(|o| acked_rev(o));
    let Some(op) = missing.first() else { return Ok(()) };
    let r = acked_rev(op);
    let place = match (events.first().map(|e| e.rev), events.last().map(|e| e.rev)) {
        (Some(f), Some(l)) if f < r && r < l => format!("a gap between events at revisions {f} and {l}"),
        (Some(f), _) if r < f => format!("missing before the first event (revision {f})"),
        (_, Some(l)) => format!("missing after the last event (revision {l}): the watch stopped early or was not drained"),
        _ => "no event was delivered".to_string(),
    };
    Err((
        op.key.clone(),
        format!("{place}; the acknowledged write\n  {}\nnever arrived ({} acknowledged writes missing)", show.op(op), missing.len()),
    ))
}

/// Pairs each event with the write that made it; returns the lost-answer writes no event
/// showed, which may have taken effect before the watch began or not at all.
fn match_events_to_calls<'a>(events: &[WatchEvent], ops: &'a [Op], show: &Show) -> Result<Vec<&'a Op>, WatchError> {
    let written: HashMap<Revision, &Op> = ops.iter().map(|o| (acked_rev(o), o)).filter(|(r, _)| *r > 0).collect();
    let mut unresolved: Vec<&Op> = ops.iter().filter(|o| o.kind.is_write() && o.outcome == Outcome::Unknown).collect();
    let made = |o: &Op, ev: &WatchEvent| o.key == ev.key && o.kind.event_kind() == Some(ev.kind) && written_value_matches(o, ev);
    for ev in events {
        match written.get(&ev.rev) {
            Some(op) if !made(op, ev) => {
                return Err((
                    ev.key.clone(),
                    format!("event {ev:?} does not match the write acknowledged at its revision:\n  {}", show.op(op)),
                ));
            }
            Some(_) => {}
            None => match unresolved.iter().position(|o| made(o, ev)) {
                Some(i) => {
                    unresolved.swap_remove(i);
                }
                None => return Err((ev.key.clone(), format!("event {ev:?} matches no call in the history"))),
            },
        }
    }
    Ok(unresolved)
}

fn written_value_matches(op: &Op, ev: &WatchEvent) -> bool {
    // A Deleted event carries the removed value, which the Delete call does not know;
    // `check_key_stories` checks it against the key's previous write instead.
    op.kind.written_value().is_none_or(|v| v == ev.value)
}

/// Each key's events must be a possible life: Added only when absent, Modified and Deleted
/// only when present, and Deleted carrying the value it removed.
fn check_key_stories(events: &[WatchEvent], ops: &[Op], unresolved: &[&Op], from_rev: Revision) -> Result<(), WatchError> {
    let mut last_on_key: HashMap<&str, &WatchEvent> = HashMap::new();
    for ev in events {
        let present = match last_on_key.insert(&ev.key, ev) {
            Some(p) => Some((p.kind != EventKind::Deleted).then_some(p.value.as_slice())),
            None => state_before_watch(ev, ops, unresolved, from_rev),
        };
        let why = match (ev.kind, present) {
            (EventKind::Added, Some(Some(_))) => "Added for a key that is present",
            (EventKind::Modified | EventKind::Deleted, Some(None)) => "Modified or Deleted for a key that is absent",
            (EventKind::Deleted, Some(Some(v))) if v != ev.value => "Deleted does not carry the value it removed",
            _ => continue,
        };
        return Err((ev.key.clone(), format!("{why}: {ev:?}")));
    }
    Ok(())
}

/// Whether the key was present (and with what value) just before its first event, when
/// the history alone says so: its newest acknowledged write is from before the watch
/// began (keys start absent), and no lost-answer write on it is unaccounted for.
fn state_before_watch<'a>(ev: &WatchEvent, ops: &'a [Op], unresolved: &[&Op], from_rev: Revision) -> Option<Option<&'a [u8]>> {
    if unresolved.iter().any(|o| o.key == ev.key) {
        return None;
    }
    let prior = ops.iter().filter(|o| o.key == ev.key && (1..ev.rev).contains(&acked_rev(o))).max_by_key(|o| acked_rev(o));
    match prior {
        Some(p) if acked_rev(p) > from_rev => None,
        Some(p) => Some(p.kind.written_value()),
        None => Some(None),
    }
}
