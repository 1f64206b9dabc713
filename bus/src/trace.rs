//! Trace context inside one process: which trace the code running now belongs to (a
//! gateway request's task, or an actor's handler), which trace the latest event about
//! each object came with (so an actor's writes about that object carry it on), and a
//! bounded ring of recent spans for the dashboard. W3C `traceparent` on the wire
//! (`schema::trace`), no exporter: cheap enough to be always on.

use schema::trace::TraceParent;
use std::cell::Cell;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, SystemTime};

tokio::task_local! {
    static TASK: TraceParent;
}

thread_local! {
    /// The trace of the message an actor is handling on this thread now.
    static HANDLING: Cell<Option<TraceParent>> = const { Cell::new(None) };
    /// The trace of the message just taken from a mailbox, for the handler that follows
    /// on the same thread (actix hands a stream's item to its handler at once).
    static NEXT: Cell<Option<TraceParent>> = const { Cell::new(None) };
}

pub fn span_id() -> [u8; 8] {
    loop {
        let id: [u8; 8] = rand::random();
        if id != [0; 8] {
            return id;
        }
    }
}

/// The share of new traces that are sampled (recorded and exported), as a fraction of
/// `u32::MAX`: all by default, since recording is a ring write.
static SAMPLE: AtomicU32 = AtomicU32::new(u32::MAX);

/// Samples `ratio` (0.0 to 1.0) of the traces this process starts; traces that arrive
/// with a `traceparent` keep the caller's decision.
pub fn set_sample_ratio(ratio: f64) {
    SAMPLE.store((ratio.clamp(0.0, 1.0) * u32::MAX as f64) as u32, Ordering::Relaxed);
}

/// A new trace, for a request that came without one: its `parent_id` is the first span's
/// own id. Unsampled traces still travel (their flag says so) but record nothing.
pub fn new_trace() -> TraceParent {
    let mut trace_id: [u8; 16] = rand::random();
    trace_id[0] |= 1; // never all zero
    TraceParent { trace_id, parent_id: span_id(), flags: u8::from(sampled(SAMPLE.load(Ordering::Relaxed), rand::random())) }
}

fn sampled(threshold: u32, draw: u32) -> bool {
    threshold == u32::MAX || draw < threshold
}

/// Runs `f` as part of `tp`'s trace: the bus requests it makes carry it.
pub async fn scope<F: std::future::Future>(tp: TraceParent, f: F) -> F::Output {
    TASK.scope(tp, f).await
}

/// The trace the running code belongs to, if any.
pub fn current() -> Option<TraceParent> {
    TASK.try_with(|t| *t).ok().or_else(|| HANDLING.with(Cell::get))
}

/// Marks the message just taken from a mailbox as part of `tp`.
pub fn set_next(tp: Option<TraceParent>) {
    NEXT.with(|n| n.set(tp));
}

/// Runs a handler under the trace of the message it handles (if it came with one), and
/// records its span in the ring. Returns what `f` returns.
pub(crate) fn handling<T>(actor: &'static str, span: &tracing::Span, f: impl FnOnce() -> T) -> T {
    let Some(tp) = NEXT.with(|n| n.take()) else { return f() };
    let me = tp.child(span_id());
    span.record("trace_id", tracing::field::display(tp.trace_id_hex()));
    let before = HANDLING.with(|h| h.replace(Some(me)));
    let started = SystemTime::now();
    struct Restore(Option<TraceParent>);
    impl Drop for Restore {
        fn drop(&mut self) {
            HANDLING.with(|h| h.set(self.0));
        }
    }
    let restore = Restore(before);
    let out = f();
    drop(restore);
    record(SpanRecord { trace: tp, span_id: me.parent_id, name: actor, started, took: started.elapsed().unwrap_or_default() });
    out
}

/// Insertion-ordered map that forgets its oldest entries past `cap`.
struct Bounded<K, V> {
    cap: usize,
    map: HashMap<K, V>,
    order: VecDeque<K>,
}

impl<K: std::hash::Hash + Eq + Clone, V> Bounded<K, V> {
    fn new(cap: usize) -> Self {
        Bounded { cap, map: HashMap::new(), order: VecDeque::new() }
    }
    fn insert(&mut self, k: K, v: V) {
        if self.map.insert(k.clone(), v).is_none() {
            self.order.push_back(k);
            while self.order.len() > self.cap {
                if let Some(old) = self.order.pop_front() {
                    self.map.remove(&old);
                }
            }
        }
    }
    fn get<Q: std::hash::Hash + Eq + ?Sized>(&self, k: &Q) -> Option<&V>
    where
        K: std::borrow::Borrow<Q>,
    {
        self.map.get(k)
    }
}

/// Objects whose latest event carried a trace; the oldest are forgotten first.
const KEYS: usize = 16 * 1024;
/// Revisions applied with a trace and not yet published.
const REVS: usize = 16 * 1024;

fn keys() -> &'static Mutex<Bounded<String, TraceParent>> {
    static K: OnceLock<Mutex<Bounded<String, TraceParent>>> = OnceLock::new();
    K.get_or_init(|| Mutex::new(Bounded::new(KEYS)))
}

fn revs() -> &'static Mutex<Bounded<u64, TraceParent>> {
    static R: OnceLock<Mutex<Bounded<u64, TraceParent>>> = OnceLock::new();
    R.get_or_init(|| Mutex::new(Bounded::new(REVS)))
}

/// The latest event about `key` came with `tp`.
pub fn remember_key(key: &str, tp: TraceParent) {
    if let Ok(mut k) = keys().lock() {
        k.insert(key.to_string(), tp);
    }
}

pub fn of_key(key: &str) -> Option<TraceParent> {
    keys().lock().ok()?.get(key).copied()
}

/// Revision `rev` was written as part of `tp` (the state machine tells the publisher).
pub fn remember_rev(rev: u64, tp: TraceParent) {
    if let Ok(mut r) = revs().lock() {
        r.insert(rev, tp);
    }
}

pub fn of_rev(rev: u64) -> Option<TraceParent> {
    revs().lock().ok()?.get(&rev).copied()
}

fn writers() -> &'static Mutex<Bounded<u64, String>> {
    static W: OnceLock<Mutex<Bounded<u64, String>>> = OnceLock::new();
    W.get_or_init(|| Mutex::new(Bounded::new(REVS)))
}

/// Revision `rev` was written by `writer` (an actor's name, or the gateway): the state
/// machine tells the publisher, which puts it on the event.
pub fn remember_writer(rev: u64, writer: &str) {
    if let Ok(mut w) = writers().lock() {
        w.insert(rev, writer.to_string());
    }
}

pub fn writer_of_rev(rev: u64) -> Option<String> {
    writers().lock().ok()?.get(&rev).cloned()
}

/// One finished span, as the dashboard will show it.
#[derive(Debug, Clone)]
pub struct SpanRecord {
    /// The span's trace, with `parent_id` its parent span (all zero for a trace's first).
    pub trace: TraceParent,
    pub span_id: [u8; 8],
    pub name: &'static str,
    pub started: SystemTime,
    pub took: Duration,
}

/// Spans kept per process: the last few thousand, enough to show recent requests.
const RING: usize = 4096;

fn ring() -> &'static Mutex<VecDeque<SpanRecord>> {
    static R: OnceLock<Mutex<VecDeque<SpanRecord>>> = OnceLock::new();
    R.get_or_init(|| Mutex::new(VecDeque::with_capacity(RING)))
}

/// Keeps a finished span (in the ring, and for the OTLP exporter if one runs), unless its
/// trace is not sampled.
pub fn record(s: SpanRecord) {
    if s.trace.flags & 1 == 0 {
        return;
    }
    crate::otlp::offer(&s);
    if let Ok(mut r) = ring().lock() {
        if r.len() == RING {
            r.pop_front();
        }
        r.push_back(s);
    }
}

/// The spans of `trace_id` still in the ring, oldest first.
pub fn spans_of(trace_id: &[u8; 16]) -> Vec<SpanRecord> {
    ring().lock().map(|r| r.iter().filter(|s| &s.trace.trace_id == trace_id).cloned().collect()).unwrap_or_default()
}

/// The spans recorded after the one with id `last` (all of them when it is None or has
/// left the ring), oldest first, and the id to pass next time: how a publisher sends
/// each span once without the ring keeping a cursor for it.
pub fn spans_after(last: Option<[u8; 8]>) -> (Vec<SpanRecord>, Option<[u8; 8]>) {
    let Ok(r) = ring().lock() else { return (Vec::new(), last) };
    let from = last.and_then(|l| r.iter().rposition(|s| s.span_id == l)).map(|i| i + 1).unwrap_or(0);
    let out: Vec<SpanRecord> = r.iter().skip(from).cloned().collect();
    let next = r.back().map(|s| s.span_id).or(last);
    (out, next)
}

/// A span as the bus carries it to the dashboard.
pub fn span_out(s: &SpanRecord) -> schema::obs::SpanOut {
    let us = |t: SystemTime| t.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0);
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    schema::obs::SpanOut {
        trace_id: s.trace.trace_id_hex(),
        span_id: hex(&s.span_id),
        parent_id: s.trace.parent_id_hex(),
        actor: s.name.to_string(),
        start_us: us(s.started),
        took_us: s.took.as_micros() as u64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_handler_runs_under_the_trace_of_the_message_it_took() {
        let tp = new_trace();
        set_next(Some(tp));
        let span = tracing::info_span!("actor", actor = "t", trace_id = tracing::field::Empty);
        let inside = handling("t-trace", &span, current);
        assert_eq!(inside.map(|t| t.trace_id), Some(tp.trace_id));
        assert_ne!(inside.map(|t| t.parent_id), Some(tp.parent_id), "the handler is a span of its own");
        assert_eq!(current(), None, "the trace ends with the handler");
        assert_eq!(handling("t-trace", &span, current), None, "the next message has none");
        assert_eq!(spans_of(&tp.trace_id).len(), 1);
    }

    #[tokio::test]
    async fn a_scope_is_the_current_trace_of_its_task() {
        let tp = new_trace();
        assert_eq!(scope(tp, async { current() }).await, Some(tp));
        assert_eq!(current(), None);
    }

    #[test]
    fn spans_after_hands_out_each_span_once() {
        let tp = new_trace();
        let rec = |id: [u8; 8]| record(SpanRecord { trace: tp, span_id: id, name: "t-after", started: SystemTime::now(), took: Duration::ZERO });
        let mine = |v: Vec<SpanRecord>| v.into_iter().filter(|s| s.trace == tp).map(|s| s.span_id).collect::<Vec<_>>();
        rec([1; 8]);
        let (_, cursor) = spans_after(None);
        rec([2; 8]);
        rec([3; 8]);
        let (got, cursor) = spans_after(cursor);
        assert_eq!(mine(got), vec![[2; 8], [3; 8]]);
        assert!(mine(spans_after(cursor).0).is_empty());
        assert_eq!(span_out(&spans_of(&tp.trace_id)[0]).span_id, "0101010101010101");
    }

    #[test]
    fn sampling_keeps_its_share_and_unsampled_spans_are_not_kept() {
        assert!(sampled(u32::MAX, u32::MAX) && !sampled(0, 0));
        let half = u32::MAX / 2;
        assert!(sampled(half, half - 1) && !sampled(half, half));
        let mut tp = new_trace();
        tp.flags = 0;
        record(SpanRecord { trace: tp, span_id: span_id(), name: "t-unsampled", started: SystemTime::now(), took: Duration::ZERO });
        assert!(spans_of(&tp.trace_id).is_empty());
    }

    #[test]
    fn bounded_memory_forgets_the_oldest() {
        let mut b = Bounded::new(2);
        b.insert(1, 'a');
        b.insert(2, 'b');
        b.insert(3, 'c');
        assert_eq!((b.get(&1), b.get(&3)), (None, Some(&'c')));
    }
}
