//! The latest resource usage each node agent published (`schema::metrics::NodeReport`),
//! kept by whoever reads it: gateways answering the metrics API (`kubectl top`) and the
//! HPA controller. A report not renewed within `STALE` is dropped, as metrics-server
//! drops a node it cannot scrape.

use futures::StreamExt;
use schema::metrics::{NodeReport, PodUsage};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub const STALE: Duration = Duration::from_secs(60);

#[derive(Default)]
pub struct UsageCache {
    nodes: RwLock<HashMap<String, (NodeReport, Instant)>>,
}

impl UsageCache {
    /// Subscribes to every node's reports until `stop`.
    pub async fn start(nats: async_nats::Client, stop: CancellationToken) -> Result<Arc<UsageCache>, async_nats::SubscribeError> {
        let mut sub = nats.subscribe(schema::subjects::all_node_metrics()).await?;
        let cache = Arc::new(UsageCache::default());
        let c = cache.clone();
        tokio::spawn(async move {
            loop {
                let msg = tokio::select! {
                    _ = stop.cancelled() => return,
                    m = sub.next() => match m { Some(m) => m, None => return },
                };
                match schema::codec::decode::<NodeReport>(&msg.payload) {
                    Ok(r) => c.put(r, Instant::now()),
                    Err(e) => tracing::debug!(error = %e, "an unreadable metrics report"),
                }
            }
        });
        Ok(cache)
    }

    pub fn put(&self, r: NodeReport, at: Instant) {
        if let Ok(mut m) = self.nodes.write() {
            m.insert(r.node.clone(), (r, at));
        }
    }

    /// The fresh reports, by node name.
    pub fn reports(&self) -> Vec<NodeReport> {
        let now = Instant::now();
        let mut v: Vec<NodeReport> = self.nodes.read().map(|m| m.values().filter(|(_, at)| now.saturating_duration_since(*at) < STALE).map(|(r, _)| r.clone()).collect()).unwrap_or_default();
        v.sort_by(|a, b| a.node.cmp(&b.node));
        v
    }

    /// Every pod's usage, with the report it came in.
    pub fn pods(&self) -> Vec<(NodeReport, PodUsage)> {
        self.reports().into_iter().flat_map(|r| r.pods.clone().into_iter().map(move |p| (r.clone(), p))).collect()
    }
}
