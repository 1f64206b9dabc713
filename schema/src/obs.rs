//! What each process tells the dashboard over the bus: a snapshot of its actors' counters
//! and latencies, and the spans it finished since its last batch. MessagePack via
//! `codec`; every field past the first release is optional so old publishers still decode.

use serde::{Deserialize, Serialize};

/// NATS header naming the actor (or component) that sent a write, carried from the
/// writer's request into the Raft entry and on to the committed event.
pub const WRITER_HEADER: &str = "flotilla-writer";

/// One actor type (or one instance of it, e.g. the kubelet of one node) in one process.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActorStat {
    pub actor: String,
    /// The instance when the actor runs several times in one process (the node name of
    /// a kubelet); None for the process-wide total of its type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    pub handled: u64,
    pub failed: u64,
    pub mailbox: i64,
    /// Handling time, seconds, estimated from the histogram's buckets.
    pub p50_s: f64,
    pub p99_s: f64,
    /// Time in mailbox, for actors whose senders stamp their messages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queued_p50_s: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queued_p99_s: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActorSnapshot {
    pub process: String,
    /// Unix milliseconds when it was taken.
    pub at_ms: u64,
    pub actors: Vec<ActorStat>,
}

/// One finished span, with its ids as lowercase hex (as in `traceparent`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpanOut {
    pub trace_id: String,
    pub span_id: String,
    /// The span that sent the message this one handled.
    pub parent_id: String,
    pub actor: String,
    /// Unix microseconds.
    pub start_us: u64,
    pub took_us: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpanBatch {
    pub process: String,
    pub spans: Vec<SpanOut>,
}

/// A process's id on the bus: role, host and pid, so two processes never share one.
pub fn process_id(role: &str, host: &str, pid: u32) -> String {
    format!("{role}-{host}-{pid}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_round_trips_and_a_total_has_no_instance_field() {
        let s = ActorSnapshot {
            process: process_id("up", "h", 7),
            at_ms: 1,
            actors: vec![ActorStat { actor: "kubelet".into(), instance: None, handled: 3, failed: 0, mailbox: 0, p50_s: 0.001, p99_s: 0.01, queued_p50_s: None, queued_p99_s: None }],
        };
        let b = crate::codec::encode(&s).unwrap();
        assert!(!b.windows(8).any(|w| w == b"instance"));
        assert_eq!(crate::codec::decode::<ActorSnapshot>(&b).unwrap(), s);
        assert_eq!(s.process, "up-h-7");
    }
}
