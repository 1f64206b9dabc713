//! Each process's actors and spans, published on the bus for the dashboard: about once a
//! second, and only what changed since the last publication, so an idle cluster sends
//! nothing. The snapshot is cheap (a copy of counters under one lock), taken off the
//! actors' threads.

use crate::{trace, Bus};
use schema::obs::{ActorSnapshot, ActorStat, SpanBatch};
use schema::{codec, subjects};
use std::time::Duration;

/// How often a process looks whether it has something new to tell.
pub const EVERY: Duration = Duration::from_secs(1);

/// Spans per message: a burst (a rollout of hundreds of pods) goes out in several.
const SPANS_PER_BATCH: usize = 512;

/// This process's id: `role`, the host's name and the pid.
pub fn process_id(role: &str) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_string()).unwrap_or_else(|_| "host".into());
    schema::obs::process_id(role, &host, std::process::id())
}

/// Whether the actors' stats differ from the last published ones in anything that
/// moves when work is done (an idle actor's percentiles do not move either).
pub fn changed(last: Option<&[ActorStat]>, now: &[ActorStat]) -> bool {
    match last {
        None => !now.is_empty(),
        Some(l) => l != now,
    }
}

/// Publishes until `stop` is cancelled. Failures to publish are dropped: the next
/// tick sends the then-current snapshot anyway.
pub async fn publish(bus: Bus, process: String, stop: tokio_util::sync::CancellationToken) {
    let (actors_subject, spans_subject) = (subjects::obs_actors(&process), subjects::obs_spans(&process));
    let mut last: Option<Vec<ActorStat>> = None;
    let mut cursor = None;
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut resend = match bus.nats.subscribe(subjects::OBS_RESEND).await {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "obs: not subscribed to resend requests; a dashboard started later sees this process at its next change");
            None
        }
    };
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
            Some(_) = async { match resend.as_mut() { Some(s) => futures::StreamExt::next(s).await, None => std::future::pending().await } } => {
                last = None;
                continue;
            }
        }
        let now = crate::metrics::actor_stats();
        if changed(last.as_deref(), &now) {
            let snap = ActorSnapshot { process: process.clone(), at_ms: now_ms(), actors: now.clone() };
            if let Ok(b) = codec::encode(&snap) {
                if bus.nats.publish(actors_subject.clone(), b.into()).await.is_ok() {
                    last = Some(now);
                }
            }
        }
        let (spans, next) = trace::spans_after(cursor);
        cursor = next;
        for chunk in spans.chunks(SPANS_PER_BATCH) {
            let batch = SpanBatch { process: process.clone(), spans: chunk.iter().map(trace::span_out).collect() };
            if let Ok(b) = codec::encode(&batch) {
                let _ = bus.nats.publish(spans_subject.clone(), b.into()).await;
            }
        }
    }
}

/// Starts `publish` on its own task.
pub fn start(bus: Bus, role: &str, stop: tokio_util::sync::CancellationToken) -> tokio::task::JoinHandle<()> {
    tokio::spawn(publish(bus, process_id(role), stop))
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stat(handled: u64) -> ActorStat {
        ActorStat { actor: "a".into(), instance: None, handled, failed: 0, mailbox: 0, p50_s: 0.0, p99_s: 0.0, queued_p50_s: None, queued_p99_s: None }
    }

    #[test]
    fn only_a_change_is_published() {
        assert!(!changed(None, &[]), "a process without actors says nothing");
        assert!(changed(None, &[stat(0)]));
        assert!(!changed(Some(&[stat(1)]), &[stat(1)]), "idle stays quiet");
        assert!(changed(Some(&[stat(1)]), &[stat(2)]));
    }

    #[test]
    fn the_process_id_is_one_subject_token() {
        let id = process_id("node.a");
        assert!(subjects::obs_actors(&id).split('.').count() == 4, "{}", subjects::obs_actors(&id));
    }
}
