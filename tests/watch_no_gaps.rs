//! The watch contract (design.md): every committed revision is delivered to a watcher in
//! revision order, exactly once, with no gaps; a watcher resumes from any revision; a
//! filtered watcher sees exactly the changes under its subjects. Real nats-server, real
//! state group on disk.

mod common;

use futures::StreamExt;
use schema::store::{EventType, WriteOp};
use schema::subjects;
use std::time::Duration;

async fn collect(bus: &bus::Bus, filter: String, after: u64, upto: u64) -> Vec<schema::store::Event> {
    let mut s = Box::pin(bus.watch(filter, after).await.expect("watch"));
    let mut out = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(10), s.next()).await {
            Ok(Some(Ok(ev))) => {
                let done = ev.rev >= upto;
                out.push(ev);
                if done {
                    return out;
                }
            }
            Ok(Some(Err(e))) => panic!("watch error: {e}"),
            Ok(None) => panic!("watch ended"),
            Err(_) => return out, // nothing more within 10 s: the caller's assertions say why
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchers_see_every_revision_once_in_order() {
    let nats = common::NatsServer::start();
    let tmp = tempfile::tempdir().expect("tempdir");
    let client = async_nats::connect(&nats.url).await.expect("connect");
    let state = actors::state::start(actors::state::StateConfig::single(tmp.path().join("state")), client.clone())
        .await
        .expect("state group");
    state.wait_ready().await;
    let bus = bus::Bus::from_client(client);

    // Four writers interleave creates, CAS updates (some stale, which must fail without
    // consuming a revision) and deletes over two namespaces.
    let mut tasks = Vec::new();
    for w in 0..4u32 {
        let bus = bus.clone();
        tasks.push(tokio::spawn(async move {
            let ns = if w % 2 == 0 { "a" } else { "b" };
            let mut ok = 0u64;
            for i in 0..25u32 {
                let name = format!("w{w}-{i}");
                let key = schema::keys::object("configmaps", Some(ns), &name);
                let subject = subjects::object_event("configmaps", Some(ns), &name, None);
                let c = bus.write(&WriteOp::Create { key: key.clone(), subject: subject.clone(), value: vec![1] }).await.expect("create");
                ok += 1;
                let u = bus
                    .write(&WriteOp::Update { key: key.clone(), subject: subject.clone(), value: vec![2], expected_rev: Some(c.rev) })
                    .await
                    .expect("update");
                ok += 1;
                let stale = bus.write(&WriteOp::Update { key: key.clone(), subject, value: vec![3], expected_rev: Some(c.rev) }).await;
                assert!(stale.is_err(), "a stale CAS must fail");
                if i % 3 == 0 {
                    bus.write(&WriteOp::Delete { key, expected_rev: Some(u.rev) }).await.expect("delete");
                    ok += 1;
                }
            }
            ok
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.expect("writer");
    }

    // Everything, from the start: revisions 1..=total, each once, in order.
    let all = collect(&bus, subjects::EVENTS_ALL.to_string(), 0, total).await;
    let revs: Vec<u64> = all.iter().map(|e| e.rev).collect();
    assert_eq!(revs, (1..=total).collect::<Vec<_>>(), "gap, duplicate or reorder in the full stream");

    // Resuming from the middle sees exactly the rest.
    let mid = total / 2;
    let rest = collect(&bus, subjects::EVENTS_ALL.to_string(), mid, total).await;
    assert_eq!(rest.iter().map(|e| e.rev).collect::<Vec<_>>(), (mid + 1..=total).collect::<Vec<_>>());

    // A filtered watcher sees exactly namespace a's events, in order.
    let want: Vec<u64> = all.iter().filter(|e| e.key.starts_with("configmaps/a/")).map(|e| e.rev).collect();
    let last_a = *want.last().expect("namespace a has events");
    let filter = subjects::event_filter("configmaps", &subjects::EventFilter { namespace: Some("a"), ..Default::default() });
    let only_a = collect(&bus, filter, 0, last_a).await;
    assert_eq!(only_a.iter().map(|e| e.rev).collect::<Vec<_>>(), want);
    assert!(only_a.iter().any(|e| e.typ == EventType::Deleted));

    // A restarted state group continues the sequence: no revision is reused or skipped.
    state.shutdown().await;
    let client = async_nats::connect(&nats.url).await.expect("reconnect");
    let state = actors::state::start(actors::state::StateConfig::single(tmp.path().join("state")), client.clone())
        .await
        .expect("state group restart");
    state.wait_ready().await;
    let bus = bus::Bus::from_client(client);
    let key = schema::keys::object("configmaps", Some("a"), "after-restart");
    let subject = subjects::object_event("configmaps", Some("a"), "after-restart", None);
    let r = bus.write(&WriteOp::Create { key, subject, value: vec![9] }).await.expect("write after restart");
    assert_eq!(r.rev, total + 1);
    let tail = collect(&bus, subjects::EVENTS_ALL.to_string(), total - 1, total + 1).await;
    assert_eq!(tail.iter().map(|e| e.rev).collect::<Vec<_>>(), vec![total, total + 1]);
    state.shutdown().await;
}
