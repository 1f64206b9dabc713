//! The watch on the events stream: one ordered JetStream consumer per watch, reopened
//! from the last delivered revision when it fails, deleted as soon as the watch ends
//! (its reader gone, an error, or expiry) so that finished watches hold no consumers.

use crate::{Bus, BusError};
use async_nats::jetstream::consumer::{push, DeliverPolicy};
use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use schema::codec;
use schema::store::{Event, EventType, Revision};
use schema::subjects;
use std::time::Duration;
use tokio::sync::mpsc;

/// One open consumer: its messages and the name to delete it by when the watch is done.
struct Opened {
    messages: BoxStream<'static, Result<async_nats::jetstream::Message, String>>,
    consumer: String,
}

/// What one stream message is to a watcher.
#[derive(Debug, PartialEq)]
pub(crate) enum Decoded {
    Event(Event),
    /// A placeholder for a revision a restored group has no event for (`ev._gap`).
    Gap,
}

/// Decodes the stream's message `seq`. A message that is not an event, or one whose
/// revision is not its sequence, breaks "revision N is message N": the watch cannot
/// say what happened at `seq`, so it must stop rather than pass over it.
pub(crate) fn decode(seq: u64, subject: &str, payload: &[u8]) -> Result<Decoded, BusError> {
    if subject == subjects::EVENTS_GAP {
        return Ok(Decoded::Gap);
    }
    let ev: Event = codec::decode(payload).map_err(|e| BusError::Undecodable { rev: seq, reason: e.to_string() })?;
    if ev.rev != seq {
        return Err(BusError::Undecodable { rev: seq, reason: format!("stream message {seq} carries revision {}", ev.rev) });
    }
    Ok(Decoded::Event(ev))
}

impl Bus {
    /// Every event matching `filter` committed after revision `after`, in revision order,
    /// each once. The stream outlives NATS disconnects and server restarts: when its
    /// consumer fails it opens a new one from the last delivered revision + 1 (revision N
    /// is stream message N), and drops anything it already delivered. It ends with
    /// `Err(Expired)` when the history it needs is gone and with `Err(Undecodable)` at a
    /// message it cannot read; dropping the stream deletes its consumer.
    pub async fn watch(&self, filter: String, after: Revision) -> Result<impl Stream<Item = Result<Event, BusError>> + Send + Unpin + 'static, BusError> {
        let opened = self.open_watch(&filter, after).await?;
        let (tx, rx) = mpsc::channel::<Result<Event, BusError>>(256);
        tokio::spawn(pump(self.clone(), filter, after, opened, tx));
        Ok(futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) }).boxed())
    }

    async fn open_watch(&self, filter: &str, after: Revision) -> Result<Opened, BusError> {
        let stream = self.events_stream().await?;
        let info = stream.cached_info();
        if after > 0 && after + 1 < info.state.first_sequence {
            return Err(BusError::Expired(after));
        }
        let consumer = stream.create_consumer(self.watch_consumer(filter, after + 1)).await.map_err(BusError::nats)?;
        let name = consumer.cached_info().name.clone();
        if after > 0 {
            // The history may have aged out between that look and the consumer's start;
            // the consumer would silently begin later. Look again.
            let mut stream = stream;
            let info = stream.info().await.map_err(BusError::nats)?;
            if after + 1 < info.state.first_sequence {
                self.close_consumer(&name).await;
                return Err(BusError::Expired(after));
            }
        }
        let messages = match consumer.messages().await {
            Ok(m) => m,
            Err(e) => {
                self.close_consumer(&name).await;
                return Err(BusError::nats(e));
            }
        };
        Ok(Opened { messages: messages.map(|m| m.map_err(|e| e.to_string())).boxed(), consumer: name })
    }

    /// A consumer of our own name: the client then asks for it on the subject that
    /// carries its filter, which is what a node agent's permissions allow (per filter),
    /// and its recreations keep that name with a suffix.
    fn watch_consumer(&self, filter: &str, start_sequence: u64) -> push::OrderedConfig {
        push::OrderedConfig {
            name: Some(format!("w{:016x}", rand::random::<u64>())),
            deliver_subject: self.nats.new_inbox(),
            filter_subject: filter.to_string(),
            deliver_policy: DeliverPolicy::ByStartSequence { start_sequence },
            ..Default::default()
        }
    }

    /// The event committed at `rev` (stream message `rev`), None when the stream no longer
    /// holds it (aged out, or before a restored group's history) or never had an event
    /// there (a gap placeholder).
    pub async fn event_at(&self, rev: Revision) -> Result<Option<Event>, BusError> {
        use async_nats::jetstream::stream::LastRawMessageErrorKind;
        let stream = self.events_stream().await?;
        let msg = match stream.get_raw_message(rev).await {
            Ok(m) => m,
            Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => return Ok(None),
            Err(e) => return Err(BusError::nats(e)),
        };
        match decode(msg.sequence, msg.subject.as_str(), &msg.payload)? {
            Decoded::Event(ev) => Ok(Some(ev)),
            Decoded::Gap => Ok(None),
        }
    }

    /// Deletes a watch's consumer. Best effort: one the ordered consumer recreated under
    /// another name (after a missed heartbeat) lapses 30 s after its subscription goes.
    async fn close_consumer(&self, name: &str) {
        match tokio::time::timeout(Duration::from_secs(5), self.js.delete_consumer_from_stream(name, subjects::EVENTS_STREAM)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::debug!(consumer = name, error = %e, "deleting a watch consumer failed"),
            Err(_) => tracing::debug!(consumer = name, "deleting a watch consumer timed out"),
        }
    }
}

/// Whether the stream still holds, as message `rev`, the event of `key` this watch
/// delivered last.
#[derive(Debug, PartialEq)]
enum Continuity {
    Same,
    /// The stream has not reached `rev` (it lost its newest messages, which the publisher
    /// puts back): wait for it.
    Behind,
    /// Another event is message `rev` now (the stream was made again with another history).
    Other,
}

impl Bus {
    /// By key and kind of change: cheap to remember per event, and another history
    /// differs there almost always (comparing values would mean keeping each one).
    ///
    /// It looks through a consumer on the watch's own filter rather than reading message
    /// `rev` by sequence: a node agent may not read messages by sequence (that would reach
    /// any object's events), and within its filter the answer is the same, since the event
    /// delivered at `rev` matched it.
    async fn continuity(&self, filter: &str, rev: Revision, seen: &(String, EventType)) -> Result<Continuity, BusError> {
        let mut stream = self.events_stream().await?;
        let info = stream.info().await.map_err(BusError::nats)?;
        if info.state.last_sequence < rev {
            return Ok(Continuity::Behind);
        }
        if rev < info.state.first_sequence {
            // Gone by age: reopening tells Expired by itself.
            return Ok(Continuity::Same);
        }
        let consumer = stream.create_consumer(self.watch_consumer(filter, rev)).await.map_err(BusError::nats)?;
        let name = consumer.cached_info().name.clone();
        let first = async {
            let mut messages = consumer.messages().await.map_err(BusError::nats)?;
            match messages.next().await {
                Some(Ok(m)) => Ok(m),
                Some(Err(e)) => Err(BusError::nats(e)),
                None => Err(BusError::Nats("the probe consumer ended".into())),
            }
        };
        let first = tokio::time::timeout(Duration::from_secs(5), first).await;
        self.close_consumer(&name).await;
        let msg = first.map_err(|_| BusError::Nats(format!("no event at or after revision {rev} within 5 s")))??;
        let seq = msg.info().map_err(|e| BusError::Nats(e.to_string()))?.stream_sequence;
        if seq != rev {
            // Message `rev` is no longer one this watch's filter takes: another history
            // (or a gap placeholder where there had been an event).
            return Ok(Continuity::Other);
        }
        Ok(match decode(seq, msg.subject.as_str(), &msg.payload)? {
            Decoded::Event(ev) if (&ev.key, ev.typ) == (&seen.0, seen.1) => Continuity::Same,
            _ => Continuity::Other,
        })
    }
}

/// Moves events from the consumer to the watcher until either side is done.
async fn pump(bus: Bus, filter: String, after: Revision, mut opened: Opened, tx: mpsc::Sender<Result<Event, BusError>>) {
    let mut last = after;
    // The last event delivered: before reopening, the stream must still hold
    // it where it was, or this watch would go on in a history its reader never saw.
    let mut last_seen: Option<(String, EventType)> = None;
    let mut reconnects = bus.reconnects.clone();
    reconnects.mark_unchanged();
    loop {
        // What the consumer already delivered goes first; a reconnect then reopens from
        // the last of it. The client recreates its ordered consumers by itself too, but
        // one whose server died can stay pending in that retry forever (seen with a
        // 3-server cluster on nats-server 2.9): only a consumer of our own is sure.
        let item = tokio::select! {
            biased;
            _ = tx.closed() => break,
            m = opened.messages.next() => Some(m),
            _ = Bus::reconnected(&mut reconnects) => None,
        };
        let Some(item) = item else {
            tracing::debug!(filter, last, "NATS reconnected; reopening the watch's consumer");
            // Its server may be the one gone: deleting it must not hold up the new one.
            let (b, name) = (bus.clone(), opened.consumer.clone());
            tokio::spawn(async move { b.close_consumer(&name).await });
            opened = match reopen(&bus, &filter, last, &last_seen, &tx).await {
                Some(o) => o,
                None => return,
            };
            continue;
        };
        match item {
            Some(Ok(msg)) => {
                let seq = match msg.info() {
                    Ok(i) => {
                        // The consumer's own count of what it has yet to deliver: how far
                        // this watcher trails the stream, at no extra request.
                        crate::metrics::observe("flotilla_bus_watch_lag_messages", "Events still pending on a watch's JetStream consumer when one is delivered.", crate::metrics::LAG_BUCKETS, String::new(), i.pending as f64);
                        i.stream_sequence
                    }
                    Err(e) => {
                        let _ = tx.send(Err(BusError::Undecodable { rev: last + 1, reason: format!("no stream sequence: {e}") })).await;
                        break;
                    }
                };
                match decode(seq, msg.subject.as_str(), &msg.payload) {
                    Ok(Decoded::Gap) => continue,
                    Ok(Decoded::Event(ev)) => {
                        if ev.rev <= last {
                            continue;
                        }
                        // The write's trace goes on with the object: the actors that
                        // handle this event, and their writes about it, belong to it.
                        if let Some(tp) = msg.headers.as_ref().and_then(|h| h.get(schema::trace::HEADER)).and_then(|v| schema::trace::TraceParent::parse(v.as_str()).ok()) {
                            crate::trace::remember_key(&ev.key, tp);
                        }
                        last = ev.rev;
                        last_seen = Some((ev.key.clone(), ev.typ));
                        if tx.send(Ok(ev)).await.is_err() {
                            break;
                        }
                        continue;
                    }
                    Err(e) => {
                        // Reopening would land on the same message again, forever.
                        let _ = tx.send(Err(e)).await;
                        break;
                    }
                }
            }
            Some(Err(e)) => tracing::debug!(error = %e, filter, last, "watch consumer failed; reopening"),
            None => tracing::debug!(filter, last, "watch consumer ended; reopening"),
        }
        bus.close_consumer(&opened.consumer).await;
        opened = match reopen(&bus, &filter, last, &last_seen, &tx).await {
            Some(o) => o,
            None => return,
        };
    }
    bus.close_consumer(&opened.consumer).await;
}

/// A new consumer from `last` + 1, backing off while NATS is away; None once the watcher
/// is gone or has been told its history expired.
async fn reopen(bus: &Bus, filter: &str, last: Revision, last_seen: &Option<(String, EventType)>, tx: &mpsc::Sender<Result<Event, BusError>>) -> Option<Opened> {
    let mut backoff = Duration::from_millis(50);
    loop {
        let attempt = async {
            if let Some(seen) = last_seen {
                match bus.continuity(filter, last, seen).await? {
                    Continuity::Same => {}
                    Continuity::Behind => return Err(BusError::Nats(format!("the stream has not reached revision {last} again yet"))),
                    Continuity::Other => return Err(BusError::Expired(last)),
                }
            }
            bus.open_watch(filter, last).await
        };
        let err = tokio::select! {
            _ = tx.closed() => return None,
            r = attempt => match r {
                Ok(o) => return Some(o),
                Err(e) => e,
            },
        };
        if let BusError::Expired(r) = err {
            let _ = tx.send(Err(BusError::Expired(r))).await;
            return None;
        }
        tracing::debug!(error = %err, "reopening watch failed");
        tokio::select! {
            _ = tx.closed() => return None,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_that_is_not_its_revision_stops_the_watch() {
        let ev = Event { rev: 7, typ: EventType::Added, key: "k".into(), subject: "ev.x._.k".into(), value: vec![1], prev: None };
        let bytes = codec::encode(&ev).expect("encode");
        assert_eq!(decode(7, "ev.x._.k", &bytes).expect("decodes"), Decoded::Event(ev));
        assert!(matches!(decode(8, "ev.x._.k", &bytes), Err(BusError::Undecodable { rev: 8, .. })));
        assert!(matches!(decode(9, "ev.x._.k", b"\xc1garbage"), Err(BusError::Undecodable { rev: 9, .. })));
        assert_eq!(decode(3, subjects::EVENTS_GAP, b"").expect("gap"), Decoded::Gap);
    }
}
