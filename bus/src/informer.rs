//! The informer: list, then watch from the list's revision; when the watch fails, its
//! revision has expired or an event cannot be read, re-list (after a growing pause) and
//! start again. Consumers get a full `Listed` snapshot after every (re)list, then one
//! `Applied`/`Deleted` per change, in revision order.

use crate::client::{info, Client, Object};
use crate::metrics::Stamped;
use crate::BusError;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::{FutureExt, Stream, StreamExt};
use schema::store::{Event, EventType, Revision};
use schema::subjects::{self, EventFilter, NodeFilter};
use schema::{codec, object};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug, Clone)]
pub enum InformerEvent<K> {
    /// Everything that exists now; replaces whatever the consumer knew.
    Listed(Vec<K>, Revision),
    Applied(K, Revision),
    Deleted(K, Revision),
}

/// What to watch: a namespace (None = all) and, for pods, a node filter.
#[derive(Debug, Clone, Default)]
pub struct Scope {
    pub namespace: Option<String>,
    pub node: Option<String>,
    pub unscheduled_only: bool,
}

impl Scope {
    fn node_filter(&self) -> NodeFilter<'_> {
        match (&self.node, self.unscheduled_only) {
            (Some(n), _) => NodeFilter::Node(n),
            (None, true) => NodeFilter::Unscheduled,
            _ => NodeFilter::Any,
        }
    }

    fn admits(&self, v: &serde_json::Value) -> bool {
        let node = object::node_name(v);
        match self.node_filter() {
            NodeFilter::Any => true,
            NodeFilter::Unscheduled => node.is_none(),
            NodeFilter::Node(n) => node == Some(n),
        }
    }
}

/// Pauses between (re)lists: doubling up to a cap, so an informer whose watch keeps
/// expiring or failing at once does not hammer the state group, and back to the start
/// after a watch that stayed up (`HEALTHY_FOR`).
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Backoff {
        Backoff { min, max, next: min }
    }

    /// The pause to take now; the one after it is twice as long, up to the cap.
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        d
    }

    pub fn reset(&mut self) {
        self.next = self.min;
    }
}

const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// A watch that lasted this long was healthy: the next failure starts from the shortest pause.
const HEALTHY_FOR: Duration = Duration::from_secs(30);

type Events = BoxStream<'static, Result<Event, BusError>>;

/// Where an informer lists and watches; the bus in production, a scripted one in the
/// unit tests of the relist loop's timing.
pub(crate) trait Source<K>: Send + Sync + 'static {
    fn list(&self) -> BoxFuture<'_, Result<(Vec<K>, Revision), String>>;
    fn watch(&self, after: Revision) -> BoxFuture<'_, Result<Events, BusError>>;
}

struct BusSource {
    client: Client,
    namespace: Option<String>,
    filter: String,
}

impl<K: Object> Source<K> for BusSource {
    fn list(&self) -> BoxFuture<'_, Result<(Vec<K>, Revision), String>> {
        async move { self.client.list::<K>(self.namespace.as_deref()).await.map_err(|e| e.to_string()) }.boxed()
    }
    fn watch(&self, after: Revision) -> BoxFuture<'_, Result<Events, BusError>> {
        async move { self.client.bus.watch(self.filter.clone(), after).await.map(|s| s.boxed()) }.boxed()
    }
}

/// An endless stream of informer events for K within `scope`.
pub fn watch_objects<K: Object>(client: Client, scope: Scope) -> impl Stream<Item = InformerEvent<K>> + Send + 'static {
    watch(client, scope, None)
}

/// As `watch_objects`, for `actor`: the events waiting in the informer's channel count in
/// its mailbox depth, and the time each waited in its time-in-mailbox histogram. For the
/// actors whose mailboxes fill under load (the scheduler, the kubelet).
pub fn watch_objects_for<K: Object>(actor: &'static str, client: Client, scope: Scope) -> impl Stream<Item = InformerEvent<K>> + Send + 'static {
    watch(client, scope, Some(actor))
}

fn watch<K: Object>(client: Client, scope: Scope, actor: Option<&'static str>) -> BoxStream<'static, InformerEvent<K>> {
    if let Some(shared) = client.informers.clone() {
        if let Some(rx) = shared.join::<K>(&client, &scope, actor) {
            return rx.map(Stamped::take).boxed();
        }
    }
    own::<K>(client, scope, actor).map(Stamped::take).boxed()
}

/// An informer of its own: its list, its watch, its task.
fn own<K: Object>(client: Client, scope: Scope, actor: Option<&'static str>) -> futures::channel::mpsc::Receiver<Stamped<InformerEvent<K>>> {
    let (tx, rx) = futures::channel::mpsc::channel::<Stamped<InformerEvent<K>>>(1024);
    match info::<K>() {
        Ok(r) => {
            let filter = subjects::event_filter(
                r.plural,
                &EventFilter { namespace: scope.namespace.as_deref(), node: scope.node_filter(), name: None },
            );
            let source = BusSource { client, namespace: scope.namespace.clone(), filter };
            tokio::spawn(run::<K, _>(source, scope, actor, tx));
        }
        Err(e) => tracing::error!(error = %e, "informer for an unregistered kind"),
    }
    rx
}

type Receivers<K> = Arc<Mutex<Vec<(Option<&'static str>, futures::channel::mpsc::UnboundedSender<Stamped<InformerEvent<K>>>)>>>;

struct Hub {
    /// The `Receivers<K>` of the hub's kind.
    receivers: Box<dyn std::any::Any + Send>,
    /// Spawns the one informer and its fan-out; taken by `start`.
    starter: Option<Box<dyn FnOnce() + Send>>,
}

#[derive(Default)]
struct SharedState {
    started: bool,
    hubs: HashMap<String, Hub>,
}

/// One informer per kind and scope for every actor of a process that asks before
/// `start` (client-go's shared informer factory): one list, one JetStream consumer and
/// one decode per event, however many controllers want pods. Each receiver still gets
/// the informer contract — `Listed` after every (re)list, then each change once, in
/// order — through a queue of its own that never drops (client-go's listeners'
/// growing buffers), so a slow receiver delays nobody else. An informer asked for after
/// `start` is one of its own.
#[derive(Clone, Default)]
pub struct Shared {
    state: Arc<Mutex<SharedState>>,
}

impl Shared {
    pub fn new() -> Shared {
        Shared::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SharedState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A receiver on the shared informer for K in `scope`; None once started.
    fn join<K: Object>(&self, client: &Client, scope: &Scope, actor: Option<&'static str>) -> Option<futures::channel::mpsc::UnboundedReceiver<Stamped<InformerEvent<K>>>> {
        let mut st = self.lock();
        if st.started {
            return None;
        }
        let key = format!("{}/{}/{:?}", K::API_VERSION, K::KIND, scope);
        let hub = st.hubs.entry(key).or_insert_with(|| {
            let receivers: Receivers<K> = Default::default();
            let (client, scope, fan) = (client.clone(), scope.clone(), receivers.clone());
            Hub { receivers: Box::new(receivers), starter: Some(Box::new(move || drop(tokio::spawn(fan_out::<K>(own::<K>(client, scope, None), fan))))) }
        });
        let receivers = hub.receivers.downcast_ref::<Receivers<K>>()?;
        let (tx, rx) = futures::channel::mpsc::unbounded();
        receivers.lock().unwrap_or_else(|p| p.into_inner()).push((actor, tx));
        Some(rx)
    }

    /// Starts every shared informer asked for so far; later ones are their own.
    pub fn start(&self) {
        let starters: Vec<_> = {
            let mut st = self.lock();
            st.started = true;
            st.hubs.values_mut().filter_map(|h| h.starter.take()).collect()
        };
        for s in starters {
            s();
        }
    }

    /// The kinds and scopes shared (for logs).
    pub fn kinds(&self) -> Vec<String> {
        let mut v: Vec<String> = self.lock().hubs.keys().cloned().collect();
        v.sort();
        v
    }
}

/// Hands each of the informer's events to every receiver still listening; ends (and
/// with it the informer) when none is.
async fn fan_out<K: Object>(mut up: futures::channel::mpsc::Receiver<Stamped<InformerEvent<K>>>, receivers: Receivers<K>) {
    while let Some(st) = up.next().await {
        let (ev, trace) = st.into_parts();
        let mut rs = receivers.lock().unwrap_or_else(|p| p.into_inner());
        rs.retain(|(actor, tx)| tx.unbounded_send(Stamped::stamp(*actor, ev.clone()).traced(trace.clone())).is_ok());
        if rs.is_empty() {
            return;
        }
    }
}

/// The object an event carries, at the event's revision; None when it cannot be read.
fn decode<K: Object>(ev: &Event) -> Option<(K, serde_json::Value)> {
    let mut v = codec::decode::<serde_json::Value>(&ev.value).ok()?;
    object::set_meta(&mut v, "resourceVersion", serde_json::Value::String(ev.rev.to_string()));
    let obj = object::from_value::<K>(v.clone()).ok()?;
    Some((obj, v))
}

async fn run<K: Object, S: Source<K>>(source: S, scope: Scope, actor: Option<&'static str>, mut tx: futures::channel::mpsc::Sender<Stamped<InformerEvent<K>>>) {
    use futures::SinkExt;
    let mut backoff = Backoff::new(BACKOFF_MIN, BACKOFF_MAX);
    let mut first = true;
    loop {
        if !first {
            if tx.is_closed() {
                return;
            }
            tokio::time::sleep(backoff.next_delay()).await;
        }
        first = false;
        let (items, rev) = match source.list().await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(kind = K::KIND, error = %e, "informer list failed; retrying");
                continue;
            }
        };
        let items = items
            .into_iter()
            .filter(|o| object::to_value(o).map(|v| scope.admits(&v)).unwrap_or(false))
            .collect();
        if tx.send(Stamped::stamp(actor, InformerEvent::Listed(items, rev))).await.is_err() {
            return;
        }
        let mut events = match source.watch(rev).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(kind = K::KIND, error = %e, "informer watch failed; re-listing");
                continue;
            }
        };
        let started = tokio::time::Instant::now();
        let mut last = rev;
        while let Some(ev) = events.next().await {
            let ev = match ev {
                Ok(ev) => ev,
                Err(BusError::Expired(_)) => break,
                Err(e) => {
                    tracing::warn!(kind = K::KIND, error = %e, "informer watch error; re-listing");
                    break;
                }
            };
            if ev.rev <= last {
                continue; // already covered by the list (or a duplicate): never deliver twice
            }
            // An event it cannot read is treated as an expired watch: the list tells what
            // became of that object, where skipping it would leave the cache wrong.
            let Some((obj, v)) = decode::<K>(&ev) else {
                tracing::warn!(kind = K::KIND, rev = ev.rev, "undecodable event; re-listing");
                break;
            };
            last = ev.rev;
            let out = match ev.typ {
                EventType::Deleted => InformerEvent::Deleted(obj, ev.rev),
                // The object left the scope (a bind takes a pod out of the unscheduled
                // ones): to this informer it is gone, as a field-selector watch says.
                _ if !scope.admits(&v) => InformerEvent::Deleted(obj, ev.rev),
                EventType::Added | EventType::Modified => InformerEvent::Applied(obj, ev.rev),
            };
            if tx.send(Stamped::stamp(actor, out).traced(crate::trace::of_key(&ev.key))).await.is_err() {
                return;
            }
        }
        if started.elapsed() >= HEALTHY_FOR {
            backoff.reset();
        }
    }
}

#[cfg(test)]
#[path = "informer_tests.rs"]
mod tests;
