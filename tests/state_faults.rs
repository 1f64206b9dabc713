//! Fault tests of the state group: three real `flotilla state` processes on a real
//! nats-server, clients issuing create / update-with-CAS / delete / get on a few keys and
//! watching them, while in turn the leader is SIGKILLed and restarted, a follower is
//! SIGKILLed, a member is cut off from the others (its transport's fault switch), every
//! member restarts at once, and nats-server restarts. Every call is recorded with its
//! start, end and answer; the history is checked for linearizability and every watch
//! stream for gaps, duplicates and reordering. No acknowledged write may be lost.

mod common;

use common::linearizability::{check_linearizable, check_watch, History, Outcome, WatchEvent};
use common::members::Group;
use futures::StreamExt;
use rand::{Rng, SeedableRng};
use schema::store::{ReadOp, ReadResult, Revision, WriteOp};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const KEYS: usize = 6;
const CLIENTS: u64 = 6;
/// How long the load runs under each fault, and again after it heals.
const UNDER_FAULT: Duration = Duration::from_secs(3);
const AFTER_HEAL: Duration = Duration::from_secs(2);

fn key(i: usize) -> String {
    format!("faults/_/k{i}")
}

fn subject(i: usize) -> String {
    format!("ev.faults._.k{i}")
}

/// One client: random calls on random keys until told to stop. Conditional writes use
/// the revision the client last saw for the key, so some succeed and some conflict.
async fn client(id: u64, bus: bus::Bus, history: History, stop: Arc<AtomicBool>) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(id);
    let mut seen: Vec<Option<Revision>> = vec![None; KEYS];
    let mut n = 0u32;
    while !stop.load(Ordering::SeqCst) {
        let k = rng.gen_range(0..KEYS);
        n += 1;
        let value = format!("c{id}-{n}").into_bytes();
        let choice = rng.gen_range(0..10);
        if choice < 3 {
            let p = history.invoke_get(id, key(k));
            let r = bus.read(&ReadOp::Get { key: key(k) }).await.map_err(store_error);
            if let Ok(ReadResult::Get { item, .. }) = &r {
                seen[k] = item.as_ref().map(|s| s.rev);
            }
            p.complete(Outcome::of_read(&r));
            continue;
        }
        let op = match (choice, seen[k]) {
            (3..=4, _) | (_, None) => WriteOp::Create { key: key(k), subject: subject(k), value },
            (5..=7, rev) => WriteOp::Update { key: key(k), subject: subject(k), value, expected_rev: rev },
            (_, rev) => WriteOp::Delete { key: key(k), expected_rev: rev },
        };
        let p = history.invoke_write(id, &op);
        let r = bus.write(&op).await.map_err(store_error);
        match &r {
            Ok(w) => seen[k] = if matches!(op, WriteOp::Delete { .. }) { None } else { Some(w.rev) },
            Err(schema::store::StoreError::Conflict { current, .. }) => seen[k] = Some(*current),
            Err(schema::store::StoreError::NotFound(_)) => seen[k] = None,
            Err(_) => {}
        }
        p.complete(Outcome::of_write(&r));
    }
}

fn store_error(e: bus::BusError) -> schema::store::StoreError {
    match e {
        bus::BusError::Store(s) => s,
        other => schema::store::StoreError::Unavailable(other.to_string()),
    }
}

/// A watch on every key from revision 0, collecting what it delivers.
fn watcher(bus: bus::Bus, events: Arc<Mutex<Vec<WatchEvent>>>, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<Option<String>> {
    tokio::spawn(async move {
        let mut w = match bus.watch("ev.faults.>".to_string(), 0).await {
            Ok(w) => w,
            Err(e) => return Some(format!("opening the watch: {e}")),
        };
        while !stop.load(Ordering::SeqCst) {
            match tokio::time::timeout(Duration::from_millis(200), w.next()).await {
                Ok(Some(Ok(ev))) => events.lock().expect("events").push(WatchEvent::from(&ev)),
                Ok(Some(Err(e))) => return Some(format!("watch failed: {e}")),
                Ok(None) => return Some("watch ended".into()),
                Err(_) => {}
            }
        }
        None
    })
}

async fn run_load(group: &mut Group, nats: &mut common::NatsServer) {
    let history = History::new();
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for id in 1..=CLIENTS {
        let bus = bus::Bus::connect(&group.nats_url).await.expect("bus");
        clients.push(tokio::spawn(client(id, bus, history.clone(), stop.clone())));
    }
    let watch_stop = Arc::new(AtomicBool::new(false));
    let mut watches = Vec::new();
    for _ in 0..2 {
        let events = Arc::new(Mutex::new(Vec::new()));
        let bus = bus::Bus::connect(&group.nats_url).await.expect("bus");
        watches.push((events.clone(), watcher(bus, events, watch_stop.clone())));
    }

    tokio::time::sleep(AFTER_HEAL).await;

    // (a) the leader dies and comes back.
    let leader = group.leader(Duration::from_secs(10)).await;
    group.kill(leader);
    tokio::time::sleep(UNDER_FAULT).await;
    group.start_member(leader);
    tokio::time::sleep(AFTER_HEAL).await;

    // (b) a follower dies and comes back.
    let leader = group.leader(Duration::from_secs(10)).await;
    let follower = group.members.keys().copied().find(|id| *id != leader).expect("a follower");
    group.kill(follower);
    tokio::time::sleep(UNDER_FAULT).await;
    group.start_member(follower);
    tokio::time::sleep(AFTER_HEAL).await;

    // (c) a minority (the leader, the harder case) is cut off from the others, then healed.
    let leader = group.leader(Duration::from_secs(10)).await;
    group.isolate(leader, true).await;
    tokio::time::sleep(UNDER_FAULT).await;
    group.isolate(leader, false).await;
    tokio::time::sleep(AFTER_HEAL).await;

    // (d) every member restarts at once.
    let ids: Vec<u64> = group.members.keys().copied().collect();
    for id in &ids {
        group.kill(*id);
    }
    for id in &ids {
        group.start_member(*id);
    }
    tokio::time::sleep(UNDER_FAULT).await;
    group.leader(Duration::from_secs(15)).await;
    tokio::time::sleep(AFTER_HEAL).await;

    // (e) nats-server restarts (SIGKILL, same port and store).
    nats.restart();
    tokio::time::sleep(UNDER_FAULT + AFTER_HEAL).await;

    stop.store(true, Ordering::SeqCst);
    for c in clients {
        c.await.expect("client task");
    }
    let ops = history.ops();
    let acknowledged = ops.iter().filter(|o| matches!(o.outcome, Outcome::Written { .. })).count();
    let top = ops.iter().filter_map(|o| if let Outcome::Written { rev } = o.outcome { Some(rev) } else { None }).max().unwrap_or(0);
    assert!(acknowledged > 50, "too few writes went through to say anything: {acknowledged}\n{}", group.logs());

    // Let the watches catch up with the last acknowledged revision, then check them.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while tokio::time::Instant::now() < deadline {
        let behind = watches.iter().any(|(ev, _)| ev.lock().expect("events").last().map(|e| e.rev).unwrap_or(0) < top);
        if !behind {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    watch_stop.store(true, Ordering::SeqCst);
    let keys: Vec<String> = (0..KEYS).map(key).collect();
    let key_refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    for (i, (events, task)) in watches.into_iter().enumerate() {
        if let Some(err) = task.await.expect("watch task") {
            panic!("watch {i}: {err}\n{}", group.logs());
        }
        let events = events.lock().expect("events").clone();
        if let Err(v) = check_watch(&events, &ops, &key_refs, 0) {
            panic!("watch {i}: {v}\n{}", group.logs());
        }
    }
    if let Err(v) = check_linearizable(&ops) {
        panic!("{v}\n{}", group.logs());
    }
    eprintln!("{} calls, {acknowledged} acknowledged writes, top revision {top}: linearizable, watches complete", ops.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_members_lose_nothing_under_faults() {
    let mut nats = common::NatsServer::start();
    // Small snapshots, so restarted members also catch up from one.
    let mut group = Group::start(&nats.url, 3, &["--snapshot-every", "200"]);
    group.leader(Duration::from_secs(20)).await;
    run_load(&mut group, &mut nats).await;
}
