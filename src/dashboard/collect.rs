//! What the dashboard knows, folded from the bus: every process's latest actor snapshot
//! (and the one before, for rates), a bounded ring of spans from every process, and the
//! nodes and pods from informers. The views are pure functions of it, unit-tested here.

use k8s_openapi::api::core::v1::{Node, Pod};
use schema::obs::{ActorSnapshot, SpanOut};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, VecDeque};

/// Spans kept from all processes together: a few minutes of a busy cluster.
pub const SPANS: usize = 50_000;

/// A snapshot older than this (publishers send only on change) means the actor has been
/// idle since: its rate is zero, not the last one measured.
const STALE_MS: u64 = 2_500;

#[derive(Default)]
pub struct Collected {
    /// Per process: the latest snapshot and the one before it.
    pub procs: BTreeMap<String, (ActorSnapshot, Option<ActorSnapshot>)>,
    pub spans: VecDeque<(String, SpanOut)>,
    pub nodes: BTreeMap<String, Node>,
    pub pods: BTreeMap<String, Pod>,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct ActorRow {
    pub process: String,
    pub actor: String,
    pub instance: Option<String>,
    pub handled: u64,
    pub failed: u64,
    /// Messages per second between the last two snapshots.
    pub rate: f64,
    pub mailbox: i64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub queued_p50_ms: Option<f64>,
    pub queued_p99_ms: Option<f64>,
    /// Seconds since its process last published (it sends only when something changed).
    pub age_s: f64,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct TraceSummary {
    pub trace_id: String,
    pub start_us: u64,
    pub duration_us: u64,
    pub spans: usize,
    /// Distinct actors, in the order they first acted.
    pub actors: Vec<String>,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct SpanRow {
    pub process: String,
    pub actor: String,
    pub span_id: String,
    pub parent_id: String,
    /// Microseconds after the trace's first span began.
    pub offset_us: u64,
    pub took_us: u64,
}

#[derive(Debug, Serialize)]
pub struct PodRow {
    pub namespace: String,
    pub name: String,
    pub phase: String,
    pub node: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct NodeRow {
    pub name: String,
    pub ready: bool,
    pub pods: Vec<PodRow>,
}

impl Collected {
    pub fn snapshot(&mut self, s: ActorSnapshot) {
        let prev = self.procs.remove(&s.process).map(|(cur, _)| cur);
        self.procs.insert(s.process.clone(), (s, prev));
    }

    pub fn add_spans(&mut self, process: &str, spans: Vec<SpanOut>) {
        for s in spans {
            if self.spans.len() == SPANS {
                self.spans.pop_front();
            }
            self.spans.push_back((process.to_string(), s));
        }
    }
}

fn rate(cur: &ActorSnapshot, prev: Option<&ActorSnapshot>, actor: &str, instance: Option<&str>, handled: u64, now_ms: u64) -> f64 {
    if now_ms.saturating_sub(cur.at_ms) > STALE_MS {
        return 0.0;
    }
    let Some(p) = prev else { return 0.0 };
    let before = p.actors.iter().find(|a| a.actor == actor && a.instance.as_deref() == instance).map(|a| a.handled).unwrap_or(0);
    let secs = cur.at_ms.saturating_sub(p.at_ms) as f64 / 1000.0;
    if secs <= 0.0 {
        return 0.0;
    }
    handled.saturating_sub(before) as f64 / secs
}

/// Every actor of every process, by process then actor.
pub fn actor_rows(c: &Collected, now_ms: u64) -> Vec<ActorRow> {
    let ms = |s: f64| (s * 1e6).round() / 1e3;
    let mut out = Vec::new();
    for (process, (cur, prev)) in &c.procs {
        for a in &cur.actors {
            out.push(ActorRow {
                process: process.clone(),
                actor: a.actor.clone(),
                instance: a.instance.clone(),
                handled: a.handled,
                failed: a.failed,
                rate: rate(cur, prev.as_ref(), &a.actor, a.instance.as_deref(), a.handled, now_ms),
                mailbox: a.mailbox,
                p50_ms: ms(a.p50_s),
                p99_ms: ms(a.p99_s),
                queued_p50_ms: a.queued_p50_s.map(ms),
                queued_p99_ms: a.queued_p99_s.map(ms),
                age_s: now_ms.saturating_sub(cur.at_ms) as f64 / 1000.0,
            });
        }
    }
    // Each type's total first, its instances under it.
    out.sort_by(|a, b| (&a.process, &a.actor, &a.instance).cmp(&(&b.process, &b.actor, &b.instance)));
    out
}

/// The `limit` most recently begun traces, newest first.
pub fn traces(c: &Collected, limit: usize) -> Vec<TraceSummary> {
    let mut by: HashMap<&str, Vec<&SpanOut>> = HashMap::new();
    for (_, s) in &c.spans {
        by.entry(s.trace_id.as_str()).or_default().push(s);
    }
    let mut out: Vec<TraceSummary> = by
        .into_iter()
        .map(|(id, mut spans)| {
            spans.sort_by_key(|s| s.start_us);
            let start = spans.first().map(|s| s.start_us).unwrap_or(0);
            let end = spans.iter().map(|s| s.start_us + s.took_us).max().unwrap_or(start);
            let mut actors: Vec<String> = Vec::new();
            for s in &spans {
                if !actors.contains(&s.actor) {
                    actors.push(s.actor.clone());
                }
            }
            TraceSummary { trace_id: id.to_string(), start_us: start, duration_us: end - start, spans: spans.len(), actors }
        })
        .collect();
    out.sort_by(|a, b| b.start_us.cmp(&a.start_us).then_with(|| a.trace_id.cmp(&b.trace_id)));
    out.truncate(limit);
    out
}

/// One trace's spans from every process, in the order they began, as offsets from the first.
pub fn waterfall(c: &Collected, trace_id: &str) -> Vec<SpanRow> {
    let mut spans: Vec<&(String, SpanOut)> = c.spans.iter().filter(|(_, s)| s.trace_id == trace_id).collect();
    spans.sort_by_key(|(_, s)| s.start_us);
    let start = spans.first().map(|(_, s)| s.start_us).unwrap_or(0);
    spans
        .into_iter()
        .map(|(p, s)| SpanRow { process: p.clone(), actor: s.actor.clone(), span_id: s.span_id.clone(), parent_id: s.parent_id.clone(), offset_us: s.start_us - start, took_us: s.took_us })
        .collect()
}

fn ready(n: &Node) -> bool {
    n.status.as_ref().and_then(|s| s.conditions.as_ref()).is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The nodes with the pods bound to each; pods on no (known) node under a row named "".
pub fn nodes(c: &Collected) -> Vec<NodeRow> {
    let mut rows: BTreeMap<String, NodeRow> = c.nodes.iter().map(|(n, node)| (n.clone(), NodeRow { name: n.clone(), ready: ready(node), pods: Vec::new() })).collect();
    for p in c.pods.values() {
        let node = p.spec.as_ref().and_then(|s| s.node_name.clone());
        let row = PodRow {
            namespace: p.metadata.namespace.clone().unwrap_or_default(),
            name: p.metadata.name.clone().unwrap_or_default(),
            phase: p.status.as_ref().and_then(|s| s.phase.clone()).unwrap_or_else(|| "Pending".into()),
            node: node.clone(),
        };
        let key = node.filter(|n| rows.contains_key(n)).unwrap_or_default();
        rows.entry(key.clone()).or_insert_with(|| NodeRow { name: key, ready: false, pods: Vec::new() }).pods.push(row);
    }
    rows.into_values().collect()
}

/// Whether a request may see the dashboard: always without a token configured (it then
/// listens on loopback only), else with that token as bearer or `?token=`.
pub fn authorized(token: Option<&str>, bearer: Option<&str>, query: Option<&str>) -> bool {
    let Some(t) = token else { return true };
    let given = bearer.and_then(|b| b.strip_prefix("Bearer ")).or_else(|| query.and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("token="))));
    // Compared in full whatever the length, so timing says nothing about the prefix.
    given.is_some_and(|g| g.len() == t.len() && g.bytes().zip(t.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use schema::obs::ActorStat;

    fn snap(at_ms: u64, handled: u64) -> ActorSnapshot {
        ActorSnapshot {
            process: "up-h-1".into(),
            at_ms,
            actors: vec![ActorStat { actor: "kubelet".into(), instance: Some("node-1".into()), handled, failed: 0, mailbox: 2, p50_s: 0.0012, p99_s: 0.01, queued_p50_s: None, queued_p99_s: None }],
        }
    }

    fn span(trace: &str, actor: &str, start_us: u64, took_us: u64) -> SpanOut {
        SpanOut { trace_id: trace.into(), span_id: format!("{actor}{start_us}"), parent_id: "p".into(), actor: actor.into(), start_us, took_us }
    }

    #[test]
    fn the_rate_is_the_change_between_snapshots_and_zero_once_idle() {
        let mut c = Collected::default();
        c.snapshot(snap(1_000, 10));
        c.snapshot(snap(3_000, 30));
        let rows = actor_rows(&c, 3_500);
        assert_eq!((rows[0].rate, rows[0].p50_ms, rows[0].instance.as_deref()), (10.0, 1.2, Some("node-1")));
        assert_eq!(actor_rows(&c, 10_000)[0].rate, 0.0, "no snapshot since: nothing changed");
    }

    #[test]
    fn traces_are_newest_first_and_a_waterfall_is_in_start_order() {
        let mut c = Collected::default();
        c.add_spans("a", vec![span("t1", "gateway", 100, 50), span("t2", "gateway", 500, 10)]);
        c.add_spans("b", vec![span("t1", "scheduler", 130, 40), span("t1", "state", 110, 5)]);
        let t = traces(&c, 10);
        assert_eq!(t.iter().map(|t| t.trace_id.as_str()).collect::<Vec<_>>(), vec!["t2", "t1"]);
        assert_eq!((t[1].duration_us, t[1].spans), (70, 3));
        assert_eq!(t[1].actors, vec!["gateway", "state", "scheduler"]);
        let w = waterfall(&c, "t1");
        assert_eq!(w.iter().map(|s| (s.actor.as_str(), s.offset_us, s.process.as_str())).collect::<Vec<_>>(), vec![("gateway", 0, "a"), ("state", 10, "b"), ("scheduler", 30, "b")]);
    }

    #[test]
    fn the_span_ring_is_bounded() {
        let mut c = Collected::default();
        c.add_spans("a", (0..SPANS as u64 + 5).map(|i| span("t", "x", i, 1)).collect());
        assert_eq!((c.spans.len(), c.spans.front().map(|(_, s)| s.start_us)), (SPANS, Some(5)));
    }

    #[test]
    fn a_token_is_needed_only_when_configured() {
        assert!(authorized(None, None, None));
        assert!(!authorized(Some("s3"), None, None));
        assert!(authorized(Some("s3"), Some("Bearer s3"), None));
        assert!(authorized(Some("s3"), None, Some("x=1&token=s3")));
        assert!(!authorized(Some("s3"), Some("Bearer s4"), Some("token=s")));
    }
}
