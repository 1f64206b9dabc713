//! The watch contract across a NATS crash: nats-server is killed and restarted (same port,
//! same JetStream store) while writes continue; a raw watcher and an informer both see
//! every revision, in order, once, with no gaps.

mod common;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use std::collections::BTreeMap;
use std::time::Duration;

fn ns(name: &str) -> Namespace {
    Namespace { metadata: ObjectMeta { name: Some(name.into()), ..Default::default() }, ..Default::default() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchers_ride_out_a_nats_restart() {
    let mut nats = common::NatsServer::start();
    let tmp = tempfile::tempdir().expect("tempdir");
    let conn = async_nats::connect(&nats.url).await.expect("connect");
    let state = actors::state::start(actors::state::StateConfig::single(tmp.path().join("state")), conn.clone()).await.expect("state group");
    state.wait_ready().await;
    let bus = bus::Bus::from_client(conn);
    let client = bus::Client::new(bus.clone());

    let mut raw = Box::pin(bus.watch(schema::subjects::EVENTS_ALL.to_string(), 0).await.expect("watch"));
    let mut informer = Box::pin(bus::informer::watch_objects::<Namespace>(client.clone(), Default::default()));

    for i in 0..20 {
        client.create(&ns(&format!("before-{i}"))).await.expect("create before");
    }
    nats.restart();
    for i in 0..20 {
        client.create(&ns(&format!("after-{i}"))).await.expect("create after the restart");
    }
    let last = state.applied_rev();
    assert_eq!(last, 40);

    // The raw watcher: revisions 1..=40 exactly.
    let mut revs = Vec::new();
    while revs.last() != Some(&last) {
        match tokio::time::timeout(Duration::from_secs(20), raw.next()).await {
            Ok(Some(Ok(ev))) => revs.push(ev.rev),
            other => panic!("raw watch stopped after {revs:?}: {:?}", other.map(|o| o.map(|r| r.map(|e| e.rev))).ok()),
        }
    }
    assert_eq!(revs, (1..=last).collect::<Vec<_>>());

    // The informer: a view equal to the store, built from revisions that only go up.
    let mut view: BTreeMap<String, u64> = BTreeMap::new();
    let mut high = 0u64;
    while view.len() < 40 || high < last {
        let ev = tokio::time::timeout(Duration::from_secs(20), informer.next()).await.expect("informer event").expect("informer stream");
        match ev {
            bus::informer::InformerEvent::Listed(items, rev) => {
                assert!(rev >= high, "a re-list may not go back in time");
                high = rev;
                view = items.into_iter().map(|n| (n.metadata.name.unwrap_or_default(), rev)).collect();
            }
            bus::informer::InformerEvent::Applied(n, rev) => {
                assert!(rev > high, "revision {rev} after {high}: duplicate or reordered");
                high = rev;
                view.insert(n.metadata.name.unwrap_or_default(), rev);
            }
            bus::informer::InformerEvent::Deleted(..) => panic!("nothing was deleted"),
        }
    }
    assert_eq!(view.len(), 40);
    state.shutdown().await;
}
