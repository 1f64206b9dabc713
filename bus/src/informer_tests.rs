//! The informer's relist loop against a scripted source (no I/O): its pauses grow and
//! reset as they should, in paused tokio time; unreadable events and objects leaving
//! the scope are handled as the watch contract says.

use super::*;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Lists nothing at revision 1; `watch` number n (from 0) gets `script(n)`.
struct Scripted {
    watches: Arc<AtomicUsize>,
    script: fn(usize) -> Events,
}

impl<K: Object> Source<K> for Scripted {
    fn list(&self) -> BoxFuture<'_, Result<(Vec<K>, Revision), String>> {
        async { Ok((Vec::new(), 1)) }.boxed()
    }
    fn watch(&self, _after: Revision) -> BoxFuture<'_, Result<Events, BusError>> {
        let n = self.watches.fetch_add(1, Ordering::SeqCst);
        let s = (self.script)(n);
        async move { Ok(s) }.boxed()
    }
}

fn expires_at_once() -> Events {
    futures::stream::iter([Err(BusError::Expired(1))]).boxed()
}

fn start<K: Object>(script: fn(usize) -> Events, scope: Scope) -> futures::channel::mpsc::Receiver<InformerEvent<K>> {
    let (tx, stamped) = futures::channel::mpsc::channel(16);
    tokio::spawn(run::<K, _>(Scripted { watches: Arc::new(AtomicUsize::new(0)), script }, scope, None, tx));
    // The tests read plain events, as `watch_objects`' callers do.
    let (plain_tx, rx) = futures::channel::mpsc::channel(16);
    tokio::spawn(stamped.map(|s: crate::metrics::Stamped<InformerEvent<K>>| Ok(s.take())).forward(plain_tx));
    rx
}

/// The pauses between consecutive lists, in milliseconds of (paused) tokio time.
async fn gaps_between_lists(rx: &mut futures::channel::mpsc::Receiver<InformerEvent<ConfigMap>>, lists: usize) -> Vec<u128> {
    let mut at = Vec::new();
    while at.len() < lists {
        if let Some(InformerEvent::Listed(..)) = rx.next().await {
            at.push(tokio::time::Instant::now());
        }
    }
    at.windows(2).map(|w| (w[1] - w[0]).as_millis()).collect()
}

#[test]
fn backoff_doubles_up_to_its_cap_and_resets() {
    let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(500));
    let d: Vec<_> = (0..5).map(|_| b.next_delay().as_millis()).collect();
    assert_eq!(d, vec![100, 200, 400, 500, 500]);
    b.reset();
    assert_eq!(b.next_delay().as_millis(), 100);
}

#[tokio::test(start_paused = true)]
async fn relists_back_off_while_watches_expire_at_once() {
    let mut rx = start::<ConfigMap>(|_| expires_at_once(), Scope::default());
    assert_eq!(gaps_between_lists(&mut rx, 8).await, vec![100, 200, 400, 800, 1600, 3200, 5000]);
}

#[tokio::test(start_paused = true)]
async fn a_healthy_watch_resets_the_backoff() {
    let mut rx = start::<ConfigMap>(
        |n| match n {
            3 => futures::stream::once(async {
                tokio::time::sleep(Duration::from_secs(60)).await;
                Err(BusError::Expired(1))
            })
            .boxed(),
            _ => expires_at_once(),
        },
        Scope::default(),
    );
    assert_eq!(gaps_between_lists(&mut rx, 6).await, vec![100, 200, 400, 60_100, 200]);
}

fn event(rev: Revision, typ: EventType, value: Vec<u8>) -> Event {
    Event { rev, typ, key: format!("configmaps/d/c{rev}"), subject: "ev.configmaps.d.c".into(), value, prev: None }
}

fn encoded(v: serde_json::Value) -> Vec<u8> {
    codec::encode(&v).expect("encode")
}

#[tokio::test(start_paused = true)]
async fn an_unreadable_event_is_a_relist_not_a_skip() {
    let mut rx = start::<ConfigMap>(
        |n| match n {
            0 => {
                let good = encoded(serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c3", "namespace": "d"}}));
                futures::stream::iter([Ok(event(2, EventType::Added, b"\xc1".to_vec())), Ok(event(3, EventType::Added, good))]).chain(futures::stream::pending()).boxed()
            }
            _ => futures::stream::pending().boxed(),
        },
        Scope::default(),
    );
    assert!(matches!(rx.next().await, Some(InformerEvent::Listed(..))));
    // Nothing after the unreadable revision 2 is delivered from that watch: it re-lists.
    assert!(matches!(rx.next().await, Some(InformerEvent::Listed(..))), "expected a re-list after the unreadable event");
}

#[tokio::test(start_paused = true)]
async fn a_bound_pod_leaves_the_unscheduled_scope() {
    let mut rx = start::<Pod>(
        |n| match n {
            0 => {
                let pod = |node: Option<&str>| {
                    let mut v = serde_json::json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "d"}, "spec": {"containers": []}});
                    if let Some(n) = node {
                        v["spec"]["nodeName"] = n.into();
                    }
                    encoded(v)
                };
                futures::stream::iter([Ok(event(2, EventType::Added, pod(None))), Ok(event(3, EventType::Modified, pod(Some("n1"))))]).chain(futures::stream::pending()).boxed()
            }
            _ => futures::stream::pending().boxed(),
        },
        Scope { unscheduled_only: true, ..Default::default() },
    );
    assert!(matches!(rx.next().await, Some(InformerEvent::Listed(..))));
    assert!(matches!(rx.next().await, Some(InformerEvent::Applied(_, 2))));
    assert!(matches!(rx.next().await, Some(InformerEvent::Deleted(_, 3))));
}

fn cm(name: &str) -> ConfigMap {
    ConfigMap { metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta { name: Some(name.into()), ..Default::default() }, ..Default::default() }
}

fn brief(e: &InformerEvent<ConfigMap>) -> String {
    match e {
        InformerEvent::Listed(items, rev) => format!("listed {} @{rev}", items.len()),
        InformerEvent::Applied(o, rev) => format!("applied {} @{rev}", o.metadata.name.as_deref().unwrap_or("")),
        InformerEvent::Deleted(o, rev) => format!("deleted {} @{rev}", o.metadata.name.as_deref().unwrap_or("")),
    }
}

#[tokio::test]
async fn a_shared_informer_gives_every_receiver_every_event_in_order_and_ends_with_the_last() {
    let (mut up, events) = futures::channel::mpsc::channel(4);
    let receivers: Receivers<ConfigMap> = Default::default();
    let mut rx: Vec<_> = (0..3)
        .map(|_| {
            let (tx, rx) = futures::channel::mpsc::unbounded();
            receivers.lock().unwrap().push((None, tx));
            rx
        })
        .collect();
    let fan = tokio::spawn(fan_out::<ConfigMap>(events, receivers.clone()));
    use futures::SinkExt;
    let script = [
        InformerEvent::Listed(vec![cm("a"), cm("b")], 4),
        InformerEvent::Applied(cm("c"), 5),
        InformerEvent::Deleted(cm("a"), 6),
        InformerEvent::Listed(vec![cm("b"), cm("c")], 9),
        InformerEvent::Applied(cm("b"), 10),
    ];
    let want: Vec<String> = script.iter().map(brief).collect();
    // The slowest receiver reads nothing until the end: the others are not held back.
    for ev in script.iter().cloned() {
        up.send(crate::metrics::Stamped::stamp(None, ev)).await.unwrap();
    }
    for r in rx.iter_mut().take(2) {
        let mut got = Vec::new();
        for _ in 0..want.len() {
            got.push(brief(&r.next().await.unwrap().take()));
        }
        assert_eq!(got, want);
    }
    let mut last = rx.pop().unwrap();
    drop(rx);
    let mut got = Vec::new();
    for _ in 0..want.len() {
        got.push(brief(&last.next().await.unwrap().take()));
    }
    assert_eq!(got, want, "the receiver that read last");
    // Gone receivers are dropped from the fan-out at the next event; with none left it ends.
    up.send(crate::metrics::Stamped::stamp(None, InformerEvent::Applied(cm("d"), 11))).await.unwrap();
    assert_eq!(brief(&last.next().await.unwrap().take()), "applied d @11");
    assert_eq!(receivers.lock().unwrap().len(), 1);
    drop(last);
    up.send(crate::metrics::Stamped::stamp(None, InformerEvent::Applied(cm("e"), 12))).await.unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(5), fan).await.expect("the fan-out ends with its last receiver").unwrap();
}
