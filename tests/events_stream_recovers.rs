//! The publisher keeps "revision N is stream message N" after the events stream lost
//! more than the state group still holds (nats-server lost its JetStream store): it makes
//! the stream again, marks the revisions it cannot bring back as a gap so that watches
//! from inside them are told Expired, and goes on publishing every later revision.

mod common;

use futures::StreamExt;
use schema::store::{ReadOp, ReadResult, StoreError, WriteOp};
use schema::subjects;
use std::time::Duration;

async fn eventually<T, F: std::future::Future<Output = Option<T>>>(what: &str, mut f: impl FnMut() -> F) -> T {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn stream_state(bus: &bus::Bus) -> Option<(u64, u64)> {
    let mut s = bus.js.get_stream(subjects::EVENTS_STREAM).await.ok()?;
    let st = s.info().await.ok()?.state.clone();
    Some((st.first_sequence, st.last_sequence))
}

async fn create(bus: &bus::Bus, name: &str) -> u64 {
    let key = schema::keys::object("configmaps", Some("a"), name);
    let subject = subjects::object_event("configmaps", Some("a"), name, None);
    bus.write(&WriteOp::Create { key, subject, value: vec![1] }).await.expect("create").rev
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_that_lost_more_than_the_store_keeps_is_started_again_after_the_loss() {
    let mut nats = common::NatsServer::start();
    let tmp = tempfile::tempdir().expect("tempdir");
    let client = async_nats::connect(&nats.url).await.expect("connect");
    let mut cfg = actors::state::StateConfig::single(tmp.path().join("state"));
    cfg.trim = actors::state::TrimPolicy { keep: 2, every: Duration::from_millis(100) };
    let state = actors::state::start(cfg, client.clone()).await.expect("state group");
    state.wait_ready().await;
    let bus = bus::Bus::from_client(client);
    let mut last = 0;
    for i in 0..10 {
        last = create(&bus, &format!("c{i}")).await;
    }
    eventually("every revision in the stream", || async { stream_state(&bus).await.filter(|s| s.1 == last) }).await;
    // The members forget what the stream holds but the last `keep` (2): a list at
    // `last - 3` needs the event `last - 2`, so its Compacted answer says the trimmer has
    // gone all the way (an earlier pass may have trimmed only part, seen at revision 1).
    eventually("the events table trimmed to the last two", || async {
        match bus.read(&ReadOp::List { prefix: "configmaps/".into(), start_after: None, limit: 0, at: Some(last - 3) }).await {
            Err(bus::BusError::Store(StoreError::Compacted { .. })) => Some(()),
            _ => None,
        }
    })
    .await;

    nats.restart_empty();
    // The stream comes back holding revisions last-1 and last as messages last-1 and
    // last; everything before is gone (a watch from there is Expired, not short).
    let (first, end) = eventually("the stream made again and refilled", || async {
        stream_state(&bus).await.filter(|s| s.1 == last)
    })
    .await;
    assert_eq!((first, end), (last - 1, last));
    let mut w = bus.watch("ev.configmaps.a.*".into(), last - 2).await.expect("watch after the loss");
    let next = create(&bus, "after").await;
    let mut revs = Vec::new();
    while revs.len() < 3 {
        match tokio::time::timeout(Duration::from_secs(10), w.next()).await {
            Ok(Some(Ok(ev))) => revs.push(ev.rev),
            other => panic!("watch after the loss: {other:?} after {revs:?}"),
        }
    }
    assert_eq!(revs, vec![last - 1, last, next]);
    match bus.watch("ev.configmaps.a.*".into(), 3).await {
        Err(bus::BusError::Expired(3)) => {}
        Err(e) => panic!("expected Expired, got {e}"),
        Ok(_) => panic!("a watch from inside the lost revisions must be told Expired"),
    }
    match bus.read(&ReadOp::Get { key: "configmaps/a/after".into() }).await.expect("get") {
        ReadResult::Get { item: Some(s), .. } => assert_eq!(s.rev, next),
        other => panic!("{other:?}"),
    }
}

/// A consistent backup of the running group, as `flotilla backup` takes it.
async fn backup(bus: &bus::Bus) -> Vec<u8> {
    use schema::store::{AdminOp, AdminResult};
    let (mut name, mut data) = (None, Vec::new());
    loop {
        let AdminResult::BackupChunk { backup, total, data: chunk, .. } = bus.admin(&AdminOp::Backup { backup: name.clone(), offset: data.len() as u64 }).await.expect("backup") else { panic!("not a backup chunk") };
        data.extend_from_slice(&chunk);
        name = Some(backup);
        if data.len() as u64 >= total {
            return data;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_restored_onto_a_stream_that_went_on_publishes_its_own_history() {
    let nats = common::NatsServer::start();
    let tmp = tempfile::tempdir().expect("tempdir");
    let client = async_nats::connect(&nats.url).await.expect("connect");
    let bus = bus::Bus::from_client(client.clone());
    let old = actors::state::start(actors::state::StateConfig::single(tmp.path().join("old")), client.clone()).await.expect("state group");
    old.wait_ready().await;
    for i in 0..3 {
        create(&bus, &format!("kept{i}")).await;
    }
    let snapshot = backup(&bus).await;
    let mut lost = 0;
    for i in 0..2 {
        lost = create(&bus, &format!("lost{i}")).await;
    }
    eventually("the old group's revisions in the stream", || async { stream_state(&bus).await.filter(|s| s.1 == lost) }).await;
    // A watcher that read the old history up to its end.
    let mut old_watch = bus.watch("ev.configmaps.a.*".into(), 0).await.expect("watch");
    for _ in 0..lost {
        tokio::time::timeout(Duration::from_secs(10), old_watch.next()).await.expect("old event").expect("open").expect("event");
    }
    old.shutdown().await;

    // Restored at revision 3, the group writes its own revisions 4 and 5.
    let dir = tmp.path().join("restored");
    let (at, _) = actors::state::restore(&snapshot, &dir).expect("restore");
    assert_eq!(at, 3);
    let restored = actors::state::start(actors::state::StateConfig::single(dir), client.clone()).await.expect("restored group");
    restored.wait_ready().await;
    let (r4, r5) = (create(&bus, "new0").await, create(&bus, "new1").await);
    assert_eq!((r4, r5), (4, 5));
    // Revisions 4 and 5 in the stream are the restored group's, not the old ones.
    let mut w = bus.watch("ev.configmaps.a.*".into(), 3).await.expect("watch the restored history");
    let mut keys = Vec::new();
    while keys.len() < 2 {
        match tokio::time::timeout(Duration::from_secs(20), w.next()).await {
            Ok(Some(Ok(ev))) => keys.push((ev.rev, ev.key)),
            Ok(Some(Err(bus::BusError::Expired(_)))) => w = bus.watch("ev.configmaps.a.*".into(), 3).await.expect("watch again"),
            other => panic!("{other:?} after {keys:?}"),
        }
    }
    assert_eq!(keys, vec![(4, "configmaps/a/new0".to_string()), (5, "configmaps/a/new1".to_string())]);
    // The watcher that had read the old history is told so, not continued in the new one.
    match tokio::time::timeout(Duration::from_secs(20), old_watch.next()).await {
        Ok(Some(Err(bus::BusError::Expired(_)))) => {}
        other => panic!("the old history's watcher must be told Expired, got {other:?}"),
    }
    restored.shutdown().await;
}
