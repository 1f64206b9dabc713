//! The bus's own series: store requests, publishes and the NATS connection's events.

use super::{inc, labels, observe, ACTOR_BUCKETS};
use std::time::Duration;

/// One store request attempt on `subject`; `answered` false for no responders, a
/// timeout or a connection error (the attempt is retried).
pub fn bus_request(subject: &str, answered: bool, took: Duration) {
    let outcome = if answered { "answered" } else { "unanswered" };
    inc("flotilla_bus_requests_total", "NATS requests sent by this process, by subject and whether a member answered.", labels(&[("subject", subject), ("outcome", outcome)]), 1.0);
    if answered {
        observe("flotilla_bus_request_seconds", "Time from a NATS request to its answer, by subject.", ACTOR_BUCKETS, labels(&[("subject", subject)]), took.as_secs_f64());
    }
}

/// One message published by this process on `stream` (a JetStream stream, or "core").
pub fn bus_publish(stream: &str, n: u64) {
    inc("flotilla_bus_publishes_total", "Messages published by this process, by stream.", labels(&[("stream", stream)]), n as f64);
}

/// Counts the NATS client's connection events; `again` says a `connected` is a reconnect.
pub fn connection_event(ev: &async_nats::Event, again: bool) {
    let kind = match ev {
        async_nats::Event::Connected => "connected",
        async_nats::Event::Disconnected => "disconnected",
        async_nats::Event::LameDuckMode => "lame_duck_mode",
        async_nats::Event::Draining => "draining",
        async_nats::Event::Closed => "closed",
        async_nats::Event::SlowConsumer(_) => "slow_consumer",
        async_nats::Event::ServerError(_) => "server_error",
        async_nats::Event::ClientError(_) => "client_error",
    };
    inc("flotilla_bus_connection_events_total", "NATS connection events of this process.", labels(&[("event", kind)]), 1.0);
    if again {
        inc("flotilla_bus_reconnects_total", "Times the NATS connection came back after it was lost.", String::new(), 1.0);
    }
}
