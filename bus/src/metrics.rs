//! Per-actor metrics (handled messages, handling time, mailbox depth) in one process-wide
//! registry, rendered in the Prometheus text format by every component's `/metrics`.

use std::collections::BTreeMap;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

#[derive(Default, Clone, Copy)]
struct ActorStats {
    handled: u64,
    seconds: f64,
    mailbox: i64,
}

fn registry() -> &'static Mutex<BTreeMap<&'static str, ActorStats>> {
    static R: OnceLock<Mutex<BTreeMap<&'static str, ActorStats>>> = OnceLock::new();
    R.get_or_init(Default::default)
}

fn counters() -> &'static Mutex<BTreeMap<String, f64>> {
    static R: OnceLock<Mutex<BTreeMap<String, f64>>> = OnceLock::new();
    R.get_or_init(Default::default)
}

/// Records one handled message of `actor`.
pub fn handled(actor: &'static str, took: Duration) {
    if let Ok(mut r) = registry().lock() {
        let s = r.entry(actor).or_default();
        s.handled += 1;
        s.seconds += took.as_secs_f64();
    }
}

/// Records a message queued for (+1) or taken from (-1) `actor`'s mailbox.
pub fn mailbox(actor: &'static str, delta: i64) {
    if let Ok(mut r) = registry().lock() {
        r.entry(actor).or_default().mailbox += delta;
    }
}

fn gauges() -> &'static Mutex<BTreeMap<String, f64>> {
    static R: OnceLock<Mutex<BTreeMap<String, f64>>> = OnceLock::new();
    R.get_or_init(Default::default)
}

/// Sets a free-form gauge, e.g. `flotilla_state_applied_index`.
pub fn set(series: &str, value: f64) {
    if let Ok(mut g) = gauges().lock() {
        g.insert(series.to_string(), value);
    }
}

/// Adds to a free-form counter, e.g. `flotilla_gateway_requests_total{code="200"}`.
pub fn count(series: &str, by: f64) {
    if let Ok(mut c) = counters().lock() {
        *c.entry(series.to_string()).or_default() += by;
    }
}

/// Times `f` as one message handled by `actor`, inside a span named after it.
pub fn handle<T>(actor: &'static str, f: impl FnOnce() -> T) -> T {
    let span = tracing::info_span!("actor", actor);
    let _g = span.enter();
    let start = std::time::Instant::now();
    let out = f();
    handled(actor, start.elapsed());
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

pub fn render() -> String {
    let mut out = String::new();
    out.push_str("# HELP flotilla_actor_messages_total Messages handled per actor.\n# TYPE flotilla_actor_messages_total counter\n");
    let snapshot: Vec<(&'static str, ActorStats)> = registry().lock().map(|r| r.iter().map(|(k, v)| (*k, *v)).collect()).unwrap_or_default();
    for (a, s) in &snapshot {
        out.push_str(&format!("flotilla_actor_messages_total{{actor=\"{a}\"}} {}\n", s.handled));
    }
    out.push_str("# HELP flotilla_actor_handling_seconds_total Time spent handling messages per actor.\n# TYPE flotilla_actor_handling_seconds_total counter\n");
    for (a, s) in &snapshot {
        out.push_str(&format!("flotilla_actor_handling_seconds_total{{actor=\"{a}\"}} {}\n", s.seconds));
    }
    out.push_str("# HELP flotilla_actor_mailbox_depth Messages waiting per actor.\n# TYPE flotilla_actor_mailbox_depth gauge\n");
    for (a, s) in &snapshot {
        out.push_str(&format!("flotilla_actor_mailbox_depth{{actor=\"{a}\"}} {}\n", s.mailbox.max(0)));
    }
    for map in [counters(), gauges()] {
        if let Ok(c) = map.lock() {
            for (k, v) in c.iter() {
                out.push_str(&format!("{k} {v}\n"));
            }
        }
    }
    out
}
