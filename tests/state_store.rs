//! The state group over a real nats-server: the write and read contract on the wire
//! (preconditions, CAS, list paging), the events stream holding revision N as message N,
//! and a restart on the same directory that keeps the data and continues the sequence.

mod common;

use futures::StreamExt;
use schema::codec;
use schema::store::{Event, EventType, ReadOp, ReadResult, Revision, StoreError, WriteOp, WriteResult};
use schema::subjects;
use std::time::Duration;

async fn request(nats: &async_nats::Client, subject: &'static str, payload: Vec<u8>) -> async_nats::Message {
    tokio::time::timeout(Duration::from_secs(10), nats.request(subject, payload.into()))
        .await
        .expect("answer within 10 s")
        .expect("request")
}

async fn write(nats: &async_nats::Client, op: WriteOp) -> Result<WriteResult, StoreError> {
    let req = schema::store::WriteRequest { id: None, op };
    let answer = request(nats, subjects::STATE_WRITE, codec::encode(&req).expect("encode")).await;
    codec::decode(&answer.payload).expect("decode write answer")
}

async fn read(nats: &async_nats::Client, op: ReadOp) -> Result<ReadResult, StoreError> {
    let answer = request(nats, subjects::STATE_READ, codec::encode(&op).expect("encode")).await;
    codec::decode(&answer.payload).expect("decode read answer")
}

fn create(key: &str, value: u8) -> WriteOp {
    WriteOp::Create { key: key.into(), subject: format!("ev.test._.{}", key.replace('/', "-")), value: vec![value] }
}

async fn start(dir: &std::path::Path, nats: &async_nats::Client) -> actors::state::StateHandle {
    let state = actors::state::start(actors::state::StateConfig::single(dir.to_path_buf()), nats.clone())
        .await
        .expect("state group starts");
    tokio::time::timeout(Duration::from_secs(10), state.wait_ready()).await.expect("ready within 10 s");
    assert!(state.is_leader());
    state
}

/// Every message of the events stream, read with an ordered consumer from sequence 1
/// until nothing more arrives for a while, with its stream sequence.
async fn stream_contents(nats: &async_nats::Client, expect: u64) -> Vec<(u64, Event)> {
    use async_nats::jetstream::consumer::{push, DeliverPolicy};
    let js = async_nats::jetstream::new(nats.clone());
    // The publisher runs after apply: wait until it has caught up.
    let stream = js.get_stream(subjects::EVENTS_STREAM).await.expect("events stream");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let last = stream.get_info().await.expect("stream info").state.last_sequence;
        if last >= expect || tokio::time::Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let consumer = stream
        .create_consumer(push::OrderedConfig {
            deliver_subject: nats.new_inbox(),
            deliver_policy: DeliverPolicy::ByStartSequence { start_sequence: 1 },
            ..Default::default()
        })
        .await
        .expect("consumer");
    let mut messages = consumer.messages().await.expect("messages");
    let mut out = Vec::new();
    while let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(700), messages.next()).await {
        let m = m.expect("message");
        let seq = m.info().expect("jetstream message info").stream_sequence;
        out.push((seq, codec::decode::<Event>(&m.payload).expect("event")));
    }
    out
}

fn revs(events: &[(u64, Event)]) -> Vec<Revision> {
    events.iter().map(|(_, e)| e.rev).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_group_serves_writes_reads_and_publishes_every_revision_once() {
    let server = common::NatsServer::start();
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("state");
    let nats = async_nats::connect(&server.url).await.expect("connect");
    let state = start(&dir, &nats).await;

    // Creates and preconditions.
    assert_eq!(write(&nats, create("a/1", 1)).await.map(|r| r.rev), Ok(1));
    assert_eq!(write(&nats, create("a/2", 2)).await.map(|r| r.rev), Ok(2));
    assert_eq!(write(&nats, create("a/1", 9)).await, Err(StoreError::AlreadyExists("a/1".into())));
    match read(&nats, ReadOp::Get { key: "a/1".into() }).await {
        Ok(ReadResult::Get { item: Some(s), rev }) => assert_eq!((s.rev, s.value, rev), (1, vec![1], 2)),
        other => panic!("get a/1: {other:?}"),
    }
    match read(&nats, ReadOp::Get { key: "nope".into() }).await {
        Ok(ReadResult::Get { item: None, rev: 2 }) => {}
        other => panic!("get of an absent key: {other:?}"),
    }

    // CAS: the first update wins, the stale one conflicts and consumes no revision.
    let update = |rev| WriteOp::Update { key: "a/1".into(), subject: "ev.test._.a-1".into(), value: vec![3], expected_rev: Some(rev) };
    assert_eq!(write(&nats, update(1)).await.map(|r| r.rev), Ok(3));
    assert_eq!(write(&nats, update(1)).await, Err(StoreError::Conflict { key: "a/1".into(), current: 3 }));
    assert_eq!(write(&nats, WriteOp::Delete { key: "a/2".into(), expected_rev: Some(1) }).await, Err(StoreError::Conflict { key: "a/2".into(), current: 2 }));
    let deleted = write(&nats, WriteOp::Delete { key: "a/2".into(), expected_rev: Some(2) }).await.expect("delete");
    assert_eq!((deleted.rev, deleted.stored.value), (4, vec![2]));
    assert_eq!(write(&nats, WriteOp::Delete { key: "a/2".into(), expected_rev: None }).await, Err(StoreError::NotFound("a/2".into())));
    assert_eq!(write(&nats, create("b/1", 5)).await.map(|r| r.rev), Ok(5));
    assert_eq!(write(&nats, create("a/3", 6)).await.map(|r| r.rev), Ok(6));

    // Refusals that never reach Raft.
    let big = WriteOp::Create { key: "big".into(), subject: "ev.test._.big".into(), value: vec![0; actors::state::MAX_VALUE_BYTES + 1] };
    assert!(matches!(write(&nats, big).await, Err(StoreError::TooLarge { .. })));
    let garbage = nats.request(subjects::STATE_WRITE, vec![0xc1, 0x00].into()).await.expect("answer to garbage");
    match codec::decode::<Result<WriteResult, StoreError>>(&garbage.payload) {
        Ok(Err(StoreError::BadRequest(m))) => assert!(m.contains("undecodable"), "{m}"),
        other => panic!("garbage write: {other:?}"),
    }

    // Lists: key order, prefix, paging.
    match read(&nats, ReadOp::List { prefix: "a/".into(), start_after: None, limit: 0, at: None }).await {
        Ok(ReadResult::List { items, rev, more }) => {
            assert_eq!(items.iter().map(|s| s.key.as_str()).collect::<Vec<_>>(), vec!["a/1", "a/3"]);
            assert_eq!((rev, more), (6, false));
        }
        other => panic!("list a/: {other:?}"),
    }
    match read(&nats, ReadOp::List { prefix: String::new(), start_after: Some("a/1".into()), limit: 1, at: None }).await {
        Ok(ReadResult::List { items, more, .. }) => {
            assert_eq!(items.iter().map(|s| s.key.as_str()).collect::<Vec<_>>(), vec!["a/3"]);
            assert!(more);
        }
        other => panic!("paged list: {other:?}"),
    }

    // The stream: revision N is message N, every revision once.
    let events = stream_contents(&nats, 6).await;
    assert_eq!(revs(&events), (1..=6).collect::<Vec<_>>());
    assert!(events.iter().all(|(seq, e)| *seq == e.rev));
    let typs: Vec<_> = events.iter().map(|(_, e)| e.typ).collect();
    use EventType::*;
    assert_eq!(typs, vec![Added, Added, Modified, Deleted, Added, Added]);
    assert_eq!((events[3].1.key.as_str(), events[3].1.subject.as_str()), ("a/2", "ev.test._.a-2"));

    // Restart on the same directory: data kept, revisions continue, no event repeated.
    state.shutdown().await;
    let state = start(&dir, &nats).await;
    match read(&nats, ReadOp::Get { key: "a/1".into() }).await {
        Ok(ReadResult::Get { item: Some(s), rev }) => assert_eq!((s.rev, s.value, rev), (3, vec![3], 6)),
        other => panic!("get a/1 after restart: {other:?}"),
    }
    assert_eq!(write(&nats, create("c/1", 7)).await.map(|r| r.rev), Ok(7));
    assert_eq!(write(&nats, create("c/1", 7)).await, Err(StoreError::AlreadyExists("c/1".into())));
    assert_eq!(write(&nats, WriteOp::Delete { key: "b/1".into(), expected_rev: Some(5) }).await.map(|r| r.rev), Ok(8));
    let events = stream_contents(&nats, 8).await;
    assert_eq!(revs(&events), (1..=8).collect::<Vec<_>>());
    assert!(events.iter().all(|(seq, e)| *seq == e.rev));
    state.shutdown().await;
}

/// A nats-server and one member with small limits (a 64 KiB quota and 20 events of
/// history) on it, and a bus client.
struct Small {
    _server: common::NatsServer,
    _tmp: tempfile::TempDir,
    nats: async_nats::Client,
    state: actors::state::StateHandle,
    bus: bus::Bus,
}

async fn small() -> Small {
    let server = common::NatsServer::start();
    let nats = async_nats::connect(&server.url).await.expect("connect");
    let tmp = tempfile::tempdir().expect("tmp");
    let state = start_small(tmp.path(), &nats).await;
    let bus = bus::Bus::from_client(nats.clone());
    Small { _server: server, _tmp: tmp, nats, state, bus }
}

async fn start_small(dir: &std::path::Path, nats: &async_nats::Client) -> actors::state::StateHandle {
    let mut cfg = actors::state::StateConfig::single(dir.to_path_buf());
    cfg.quota_bytes = 64 * 1024;
    cfg.history = actors::state::HistoryLimits { max_age: Duration::from_secs(3600), max_events: 20, replicas: 1 };
    let state = actors::state::start(cfg, nats.clone()).await.expect("state group starts");
    tokio::time::timeout(Duration::from_secs(10), state.wait_ready()).await.expect("ready within 10 s");
    state
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_refuses_growth_but_not_reads_or_deletes() {
    let s = small().await;
    let bus = &s.bus;
    let put = |i: usize| WriteOp::Create { key: format!("q/_/k{i}"), subject: format!("ev.q._.k{i}"), value: vec![7; 10 * 1024] };
    let mut stored = 0;
    let refusal = loop {
        match bus.write(&put(stored)).await {
            Ok(_) => stored += 1,
            Err(e) => break e,
        }
        assert!(stored < 20, "a 64 KiB quota let {stored} 10 KiB values in");
    };
    assert_eq!(stored, 6, "six 10 KiB values fit a 64 KiB quota");
    let msg = refusal.to_string();
    assert!(msg.contains("quota") && msg.contains("65536"), "the refusal names the quota: {msg}");
    // Reads still work; deletes free space; then writes resume. No crash on the way.
    match bus.read(&ReadOp::Get { key: "q/_/k0".into() }).await.expect("read at quota") {
        ReadResult::Get { item, .. } => assert!(item.is_some()),
        other => panic!("{other:?}"),
    }
    bus.write(&WriteOp::Delete { key: "q/_/k0".into(), expected_rev: None }).await.expect("delete at quota");
    bus.write(&WriteOp::Delete { key: "q/_/k1".into(), expected_rev: None }).await.expect("delete at quota");
    bus.write(&put(100)).await.expect("a write after deletes freed space");
    s.state.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_older_than_the_history_is_expired_and_reads_may_be_serializable() {
    let s = small().await;
    let (bus, nats) = (&s.bus, &s.nats);
    let mut last = 0;
    for i in 0..30 {
        last = bus.write(&create(&format!("h/{i}"), 1)).await.expect("write").rev;
    }
    // Wait until the stream holds the last revision, then resume from the start.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let info = async_nats::jetstream::new(nats.clone()).get_stream(subjects::EVENTS_STREAM).await.expect("stream").get_info().await.expect("info");
        if info.state.last_sequence >= last {
            assert!(info.state.first_sequence > 1, "the stream keeps 20 events: {:?}", info.state);
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "events not published");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    match bus.watch("ev.test.>".into(), 1).await {
        Err(bus::BusError::Expired(1)) => {}
        Err(e) => panic!("expected Expired(1), got {e}"),
        Ok(_) => panic!("a watch from revision 1 must be expired after 30 writes with 20 kept"),
    }
    // A recent revision still resumes, and sees the next write.
    let mut w = bus.watch("ev.test.>".into(), last - 5).await.expect("recent resume");
    let first = tokio::time::timeout(Duration::from_secs(5), w.next()).await.expect("event").expect("some").expect("ok");
    assert_eq!(first.rev, last - 4);
    // Serializable reads are answered by any member from what it has applied.
    match bus.read_with(&ReadOp::Get { key: "h/29".into() }, schema::store::Consistency::Serializable).await.expect("serializable read") {
        ReadResult::Get { item, rev } => {
            assert!(item.is_some());
            assert!(rev >= last);
        }
        other => panic!("{other:?}"),
    }
    s.state.shutdown().await;
}
