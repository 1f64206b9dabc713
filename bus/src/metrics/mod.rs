//! Per-actor metrics (handled and failed messages, handling-time and time-in-mailbox
//! histograms, mailbox depth) and typed series families (counters, gauges, histograms
//! with labels) in one process-wide registry, rendered in the Prometheus text format by
//! every component's `/metrics`. Hand-rolled rather than a metrics crate: the set of
//! shapes is small, and `handle` must stay a plain function other code already calls.

mod bus;
mod histogram;

pub use bus::{bus_publish, bus_request, connection_event};

pub use histogram::{escape, labels, Histogram, ACTOR_BUCKETS, APISERVER_BUCKETS, COMMIT_BUCKETS, LAG_BUCKETS};

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

#[derive(Clone)]
struct ActorStats {
    handled: u64,
    failed: u64,
    handling: Histogram,
    /// Only for actors whose senders stamp their messages (`Stamped`).
    queued: Option<Histogram>,
    mailbox: i64,
}

impl Default for ActorStats {
    fn default() -> Self {
        ActorStats { handled: 0, failed: 0, handling: Histogram::new(ACTOR_BUCKETS), queued: None, mailbox: 0 }
    }
}

fn registry() -> &'static Mutex<BTreeMap<&'static str, ActorStats>> {
    static R: OnceLock<Mutex<BTreeMap<&'static str, ActorStats>>> = OnceLock::new();
    R.get_or_init(Default::default)
}

/// The same stats per instance, for actors that run several times in one process (the
/// kubelet of each hollow or in-process node), filled by `handle_in`.
fn instances() -> &'static Mutex<BTreeMap<(&'static str, String), ActorStats>> {
    static R: OnceLock<Mutex<BTreeMap<(&'static str, String), ActorStats>>> = OnceLock::new();
    R.get_or_init(Default::default)
}

fn counters() -> &'static Mutex<BTreeMap<String, f64>> {
    static R: OnceLock<Mutex<BTreeMap<String, f64>>> = OnceLock::new();
    R.get_or_init(Default::default)
}

fn gauges() -> &'static Mutex<BTreeMap<String, f64>> {
    static R: OnceLock<Mutex<BTreeMap<String, f64>>> = OnceLock::new();
    R.get_or_init(Default::default)
}

fn with_actor(actor: &'static str, f: impl FnOnce(&mut ActorStats)) {
    if let Ok(mut r) = registry().lock() {
        f(r.entry(actor).or_default());
    }
}

/// Records one handled message of `actor`.
pub fn handled(actor: &'static str, took: Duration) {
    with_actor(actor, |s| {
        s.handled += 1;
        s.handling.observe(took.as_secs_f64());
    });
}

/// Records one message of `actor` whose handling panicked or returned an error; it
/// counts as handled too, so `failed / messages` is the failure ratio.
pub fn failed(actor: &'static str, took: Duration) {
    with_actor(actor, |s| {
        s.handled += 1;
        s.failed += 1;
        s.handling.observe(took.as_secs_f64());
    });
}

/// Records a message queued for (+1) or taken from (-1) `actor`'s mailbox.
pub fn mailbox(actor: &'static str, delta: i64) {
    with_actor(actor, |s| s.mailbox += delta);
}

/// Records how long a message waited in `actor`'s mailbox before its handling began.
pub fn queued(actor: &'static str, waited: Duration) {
    with_actor(actor, |s| s.queued.get_or_insert_with(|| Histogram::new(ACTOR_BUCKETS)).observe(waited.as_secs_f64()));
}

/// A message on its way to an actor, counted in its mailbox depth from `stamp` until
/// `take` (or until dropped unread), and timed in between.
pub struct Stamped<T> {
    at: Instant,
    actor: Option<&'static str>,
    item: Option<T>,
    /// The trace the message is part of, handed to the handler that takes it.
    trace: Option<schema::trace::TraceParent>,
}

impl<T> Stamped<T> {
    /// `actor` None: a message nobody meters (the receiver has no name to report under).
    pub fn stamp(actor: Option<&'static str>, item: T) -> Stamped<T> {
        if let Some(a) = actor {
            mailbox(a, 1);
        }
        Stamped { at: Instant::now(), actor, item: Some(item), trace: None }
    }

    pub fn traced(mut self, trace: Option<schema::trace::TraceParent>) -> Stamped<T> {
        self.trace = trace;
        self
    }

    /// The message and its trace, for a forwarder that stamps it again for each of its
    /// receivers (the trace is not made the taking thread's next).
    pub fn into_parts(mut self) -> (T, Option<schema::trace::TraceParent>) {
        if let Some(a) = self.actor.take() {
            mailbox(a, -1);
            queued(a, self.at.elapsed());
        }
        (self.item.take().expect("a stamped message is taken once"), self.trace.take())
    }

    pub fn take(self) -> T {
        let (item, trace) = self.into_parts();
        crate::trace::set_next(trace);
        item
    }
}

impl<T> Drop for Stamped<T> {
    fn drop(&mut self) {
        if let Some(a) = self.actor {
            mailbox(a, -1);
        }
    }
}

/// Sets a free-form gauge, e.g. `flotilla_state_applied_index`.
pub fn set(series: &str, value: f64) {
    if let Ok(mut g) = gauges().lock() {
        g.insert(series.to_string(), value);
    }
}

/// Adds to a free-form counter, e.g. `flotilla_state_writes_total`.
pub fn count(series: &str, by: f64) {
    if let Ok(mut c) = counters().lock() {
        *c.entry(series.to_string()).or_default() += by;
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

enum Series {
    Value(f64),
    Hist(Histogram),
}

struct Family {
    kind: Kind,
    help: &'static str,
    /// Keyed by the rendered label set (`k="v",…`).
    series: BTreeMap<String, Series>,
}

fn families() -> &'static Mutex<BTreeMap<&'static str, Family>> {
    static R: OnceLock<Mutex<BTreeMap<&'static str, Family>>> = OnceLock::new();
    R.get_or_init(Default::default)
}

fn with_series(name: &'static str, kind: Kind, help: &'static str, labels: String, new: impl FnOnce() -> Series, f: impl FnOnce(&mut Series)) {
    if let Ok(mut fs) = families().lock() {
        let fam = fs.entry(name).or_insert_with(|| Family { kind, help, series: BTreeMap::new() });
        if fam.kind == kind {
            f(fam.series.entry(labels).or_insert_with(new));
        }
    }
}

/// Adds `by` to the counter `name{labels}`; `labels` as `labels(&[…])` builds them.
pub fn inc(name: &'static str, help: &'static str, labels: String, by: f64) {
    with_series(name, Kind::Counter, help, labels, || Series::Value(0.0), |s| {
        if let Series::Value(v) = s {
            *v += by;
        }
    });
}

/// Sets the gauge `name{labels}`.
pub fn gauge(name: &'static str, help: &'static str, labels: String, value: f64) {
    with_series(name, Kind::Gauge, help, labels, || Series::Value(0.0), |s| {
        if let Series::Value(v) = s {
            *v = value;
        }
    });
}

/// Observes `value` in the histogram `name{labels}` with `buckets` (fixed at its first use).
pub fn observe(name: &'static str, help: &'static str, buckets: &'static [f64], labels: String, value: f64) {
    with_series(name, Kind::Histogram, help, labels, || Series::Hist(Histogram::new(buckets)), |s| {
        if let Series::Hist(h) = s {
            h.observe(value);
        }
    });
}

/// Times `f` as one message handled by `actor`, inside a span named after it. A panic
/// counts the message as failed and goes on unwinding, as it would have without us.
pub fn handle<T>(actor: &'static str, f: impl FnOnce() -> T) -> T {
    let span = tracing::info_span!("actor", actor, trace_id = tracing::field::Empty);
    let _g = span.enter();
    let start = Instant::now();
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| crate::trace::handling(actor, &span, f))) {
        Ok(out) => {
            handled(actor, start.elapsed());
            out
        }
        Err(panic) => {
            failed(actor, start.elapsed());
            std::panic::resume_unwind(panic)
        }
    }
}

/// As `handle`, also counted under `instance` of `actor` (its node, for a kubelet), so
/// the dashboard can show each of several same-typed actors in one process.
pub fn handle_in<T>(actor: &'static str, instance: &str, f: impl FnOnce() -> T) -> T {
    struct Count<'a>(&'static str, &'a str, Instant);
    impl Drop for Count<'_> {
        fn drop(&mut self) {
            let took = self.2.elapsed().as_secs_f64();
            let failed = std::thread::panicking();
            if let Ok(mut r) = instances().lock() {
                let s = r.entry((self.0, self.1.to_string())).or_default();
                s.handled += 1;
                s.failed += failed as u64;
                s.handling.observe(took);
            }
        }
    }
    let _count = Count(actor, instance, Instant::now());
    handle(actor, f)
}

fn stat(actor: &str, instance: Option<&str>, s: &ActorStats) -> schema::obs::ActorStat {
    schema::obs::ActorStat {
        actor: actor.to_string(),
        instance: instance.map(str::to_string),
        handled: s.handled,
        failed: s.failed,
        mailbox: s.mailbox.max(0),
        p50_s: s.handling.quantile(0.5),
        p99_s: s.handling.quantile(0.99),
        queued_p50_s: s.queued.as_ref().map(|q| q.quantile(0.5)),
        queued_p99_s: s.queued.as_ref().map(|q| q.quantile(0.99)),
    }
}

/// Every actor of this process as the dashboard shows it: one row per type, then one
/// per instance of the types that have them.
pub fn actor_stats() -> Vec<schema::obs::ActorStat> {
    let mut out: Vec<_> = registry().lock().map(|r| r.iter().map(|(a, s)| stat(a, None, s)).collect()).unwrap_or_default();
    if let Ok(r) = instances().lock() {
        out.extend(r.iter().map(|((a, i), s)| stat(a, Some(i), s)));
    }
    out
}

/// As `handle`, for handlers that say whether they failed: an `Err` counts as failed.
pub fn handle_result<T, E>(actor: &'static str, f: impl FnOnce() -> Result<T, E>) -> Result<T, E> {
    let out = handle(actor, f);
    if out.is_err() {
        // `handle` counted it as handled, which it also is.
        with_actor(actor, |s| s.failed += 1);
    }
    out
}

/// Runs `f` inside `actor`'s span without counting it as handled: for the node's own
/// periodic polls (the usage collector asking what runs), so that "handled" keeps
/// meaning work done in answer to the cluster and an idle cluster's counters stay flat.
pub fn poll<T>(actor: &'static str, f: impl FnOnce() -> T) -> T {
    let span = tracing::info_span!("actor", actor);
    let _g = span.enter();
    f()
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn render_actors(out: &mut String, snapshot: &[(&'static str, ActorStats)]) {
    header(out, "flotilla_actor_messages_total", "counter", "Messages handled per actor.");
    for (a, s) in snapshot {
        let _ = writeln!(out, "flotilla_actor_messages_total{{actor=\"{a}\"}} {}", s.handled);
    }
    header(out, "flotilla_actor_messages_failed_total", "counter", "Messages whose handling panicked or returned an error, per actor.");
    for (a, s) in snapshot {
        let _ = writeln!(out, "flotilla_actor_messages_failed_total{{actor=\"{a}\"}} {}", s.failed);
    }
    header(out, "flotilla_actor_handling_seconds", "histogram", "Time spent handling one message, per actor.");
    for (a, s) in snapshot {
        s.handling.render("flotilla_actor_handling_seconds", &format!("actor=\"{a}\""), out);
    }
    header(out, "flotilla_actor_mailbox_seconds", "histogram", "Time a message waited in the actor's mailbox, for actors whose senders stamp messages.");
    for (a, s) in snapshot {
        if let Some(q) = &s.queued {
            q.render("flotilla_actor_mailbox_seconds", &format!("actor=\"{a}\""), out);
        }
    }
    header(out, "flotilla_actor_mailbox_depth", "gauge", "Messages waiting per actor.");
    for (a, s) in snapshot {
        let _ = writeln!(out, "flotilla_actor_mailbox_depth{{actor=\"{a}\"}} {}", s.mailbox.max(0));
    }
}

fn render_families(out: &mut String) {
    let Ok(fs) = families().lock() else { return };
    for (name, fam) in fs.iter() {
        header(out, name, fam.kind.name(), fam.help);
        for (l, s) in &fam.series {
            match s {
                Series::Value(v) if l.is_empty() => {
                    let _ = writeln!(out, "{name} {v}");
                }
                Series::Value(v) => {
                    let _ = writeln!(out, "{name}{{{l}}} {v}");
                }
                Series::Hist(h) => h.render(name, l, out),
            }
        }
    }
}

pub fn render() -> String {
    let mut out = String::new();
    let snapshot: Vec<(&'static str, ActorStats)> = registry().lock().map(|r| r.iter().map(|(k, v)| (*k, v.clone())).collect()).unwrap_or_default();
    render_actors(&mut out, &snapshot);
    render_families(&mut out);
    for map in [counters(), gauges()] {
        if let Ok(c) = map.lock() {
            for (k, v) in c.iter() {
                let _ = writeln!(out, "{k} {v}");
            }
        }
    }
    out
}

#[cfg(test)]
mod tests;
