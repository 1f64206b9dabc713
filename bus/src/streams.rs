//! One side of a stream between a gateway and a node agent (see `schema::streaming`):
//! frames out to the peer's inbox in sequence, data frames only while the peer has
//! acknowledged enough of them (at most `WINDOW` in flight), and frames in from our own
//! inbox, checked for gaps, with an acknowledgement for each data frame the consumer
//! takes. Either side pings; a peer silent for `SILENCE_SECS` ends the stream.

use futures::StreamExt;
use schema::codec;
use schema::streaming::{Body, Frame, CHUNK, PING_SECS, SILENCE_SECS, WINDOW};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, Mutex, Semaphore};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StreamError {
    #[error("the stream lost a frame (expected {expected}, got {got})")]
    Gap { expected: u64, got: u64 },
    #[error("the other side of the stream went silent")]
    Silent,
    #[error("an undecodable frame on the stream: {0}")]
    Undecodable(String),
    #[error("the stream is closed")]
    Closed,
    #[error("publishing on the stream failed: {0}")]
    Publish(String),
}

/// Sends frames to the peer.
#[derive(Clone)]
pub struct PipeTx {
    nats: async_nats::Client,
    peer: String,
    seq: Arc<Mutex<u64>>,
    credits: Arc<Semaphore>,
}

/// Receives the peer's frames, in order.
pub struct PipeRx {
    rx: mpsc::UnboundedReceiver<Result<Body, StreamError>>,
    acks: PipeTx,
    _stop: tokio_util::sync::DropGuard,
}

impl PipeTx {
    async fn publish(&self, f: &Frame) -> Result<(), StreamError> {
        let bytes = codec::encode(f).map_err(|e| StreamError::Publish(e.to_string()))?;
        self.nats.publish(self.peer.clone(), bytes.into()).await.map_err(|e| StreamError::Publish(e.to_string()))
    }

    async fn send_one(&self, body: Body) -> Result<(), StreamError> {
        if matches!(body, Body::Data { .. }) {
            // Waits for the peer to take in earlier data: back-pressure end to end.
            let permit = self.credits.acquire().await.map_err(|_| StreamError::Closed)?;
            permit.forget();
        }
        let mut seq = self.seq.lock().await;
        *seq += 1;
        self.publish(&Frame::Msg { seq: *seq, body }).await
    }

    /// Sends `body`; data longer than a chunk goes as several frames.
    pub async fn send(&self, body: Body) -> Result<(), StreamError> {
        match body {
            Body::Data { ch, data } if data.len() > CHUNK => {
                for part in data.chunks(CHUNK) {
                    self.send_one(Body::Data { ch, data: part.to_vec() }).await?;
                }
                Ok(())
            }
            b => self.send_one(b).await,
        }
    }

    /// Data on channel `ch`.
    pub async fn data(&self, ch: u8, data: &[u8]) -> Result<(), StreamError> {
        self.send(Body::Data { ch, data: data.to_vec() }).await
    }
}

impl PipeRx {
    /// The next body from the peer; None when the stream has ended.
    pub async fn recv(&mut self) -> Option<Result<Body, StreamError>> {
        let item = self.rx.recv().await?;
        if let Ok(Body::Data { .. }) = &item {
            // Best effort: a lost acknowledgement stalls the peer, which then goes silent
            // on us and the stream ends; nothing is delivered twice or out of order.
            let _ = self.acks.publish(&Frame::Ack { n: 1 }).await;
        }
        Some(item)
    }
}

/// Both halves of our side of a stream: `sub` is our inbox (subscribed before the peer
/// learnt it, so nothing it sends is missed), `peer` the other side's inbox.
pub fn pipe(nats: async_nats::Client, mut sub: async_nats::Subscriber, peer: String) -> (PipeTx, PipeRx) {
    let tx = PipeTx { nats, peer, seq: Arc::new(Mutex::new(0)), credits: Arc::new(Semaphore::new(WINDOW)) };
    let (fwd, rx) = mpsc::unbounded_channel();
    let stop = CancellationToken::new();
    let (router_tx, router_stop) = (tx.clone(), stop.clone());
    tokio::spawn(async move {
        let mut expected = 1u64;
        let mut ping = tokio::time::interval(Duration::from_secs(PING_SECS));
        let silence = Duration::from_secs(SILENCE_SECS);
        let mut heard = tokio::time::Instant::now();
        loop {
            let msg = tokio::select! {
                _ = router_stop.cancelled() => break,
                _ = ping.tick() => {
                    if heard.elapsed() > silence {
                        let _ = fwd.send(Err(StreamError::Silent));
                        break;
                    }
                    let _ = router_tx.publish(&Frame::Ping).await;
                    continue;
                }
                m = sub.next() => m,
            };
            let Some(msg) = msg else { break };
            heard = tokio::time::Instant::now();
            match codec::decode::<Frame>(&msg.payload) {
                Err(e) => {
                    let _ = fwd.send(Err(StreamError::Undecodable(e.to_string())));
                    break;
                }
                Ok(Frame::Ping) => {}
                Ok(Frame::Ack { n }) => router_tx.credits.add_permits((n as usize).min(WINDOW)),
                Ok(Frame::Msg { seq, body }) => {
                    if seq != expected {
                        let _ = fwd.send(Err(StreamError::Gap { expected, got: seq }));
                        break;
                    }
                    expected += 1;
                    if fwd.send(Ok(body)).is_err() {
                        break;
                    }
                }
            }
        }
        // Whoever still sends on this side learns the stream is gone.
        router_tx.credits.close();
        let _ = sub.unsubscribe().await;
    });
    let acks = tx.clone();
    (tx, PipeRx { rx, acks, _stop: stop.drop_guard() })
}
