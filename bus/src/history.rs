//! One object's history as the events stream still holds it: every committed change of
//! its subject, with the trace and the writer its event carried in headers. For the
//! dashboard's object view; read once, by an ordered consumer deleted when done.

use crate::{Bus, BusError};
use async_nats::jetstream::consumer::{push, DeliverPolicy};
use futures::StreamExt;
use schema::store::Event;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Revision {
    pub event: Event,
    pub trace: Option<String>,
    pub writer: Option<String>,
}

/// The most revisions one read returns (the newest are kept).
const MAX: usize = 1000;

/// How long to wait for the next message before taking the stream to hold no more (an
/// object with no events left gives no message at all).
const QUIET: Duration = Duration::from_millis(750);

impl Bus {
    /// The events matching `filter` (one object's, e.g. `subjects::event_filter` with its
    /// name) still in the stream, oldest first, those of `key` only.
    pub async fn history(&self, filter: String, key: &str) -> Result<Vec<Revision>, BusError> {
        let stream = self.events_stream().await?;
        let cfg = push::OrderedConfig { deliver_subject: self.nats.new_inbox(), filter_subject: filter, deliver_policy: DeliverPolicy::All, ..Default::default() };
        let consumer = stream.create_consumer(cfg).await.map_err(|e| BusError::Nats(e.to_string()))?;
        let name = consumer.cached_info().name.clone();
        let out = self.read_history(consumer, key).await;
        // Best effort, as for a watch: an ordered consumer also lapses once unread.
        let _ = tokio::time::timeout(Duration::from_secs(5), self.js.delete_consumer_from_stream(&name, schema::subjects::EVENTS_STREAM)).await;
        out
    }

    async fn read_history(&self, consumer: async_nats::jetstream::consumer::Consumer<push::OrderedConfig>, key: &str) -> Result<Vec<Revision>, BusError> {
        let mut messages = consumer.messages().await.map_err(|e| BusError::Nats(e.to_string()))?;
        let mut out = std::collections::VecDeque::new();
        while let Ok(Some(Ok(m))) = tokio::time::timeout(QUIET, messages.next()).await {
            let pending = m.info().map(|i| i.pending).unwrap_or(0);
            let header = |name: &str| m.headers.as_ref().and_then(|h| h.get(name)).map(|v| v.as_str().to_string());
            if let Ok(ev) = schema::codec::decode::<Event>(&m.payload) {
                if ev.key == key {
                    out.push_back(Revision { trace: header(schema::trace::HEADER), writer: header(schema::obs::WRITER_HEADER), event: ev });
                    if out.len() > MAX {
                        out.pop_front();
                    }
                }
            }
            if pending == 0 {
                break;
            }
        }
        Ok(out.into())
    }
}
