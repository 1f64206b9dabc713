//! Membership changes online: a 5-member group (real processes) shrinks to 3 — the leader
//! among the removed — and grows back to 5 with two fresh members that catch up as
//! learners, all under a steady write load. Every acknowledged write must be readable
//! afterwards, with its value.

mod common;

use common::members::Group;
use schema::store::{AdminOp, AdminResult, ReadOp, ReadResult, WriteOp};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

async fn writer(id: u64, bus: bus::Bus, acked: Arc<Mutex<BTreeMap<String, Vec<u8>>>>, stop: Arc<AtomicBool>) {
    let mut n = 0u64;
    while !stop.load(Ordering::SeqCst) {
        n += 1;
        let key = format!("members/_/w{id}-{n}");
        let value = format!("v{id}-{n}").into_bytes();
        let op = WriteOp::Create { key: key.clone(), subject: format!("ev.members._.w{id}-{n}"), value: value.clone() };
        if bus.write(&op).await.is_ok() {
            acked.lock().expect("acked").insert(key, value);
        }
    }
}

async fn voters(bus: &bus::Bus, op: AdminOp) -> Vec<u64> {
    match bus.admin(&op).await {
        Ok(AdminResult::Members { voters, .. }) => voters,
        other => panic!("{op:?}: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn five_shrink_to_three_and_grow_back_under_load() {
    let nats = common::NatsServer::start();
    let mut group = Group::start(&nats.url, 5, &["--snapshot-every", "10"]);
    let leader = group.leader(Duration::from_secs(20)).await;
    let bus = bus::Bus::connect(&nats.url).await.expect("bus");

    let acked = Arc::new(Mutex::new(BTreeMap::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for id in 0..4 {
        let b = bus::Bus::connect(&nats.url).await.expect("bus");
        writers.push(tokio::spawn(writer(id, b, acked.clone(), stop.clone())));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;

    // Shrink: the leader and one follower leave.
    let follower = group.members.keys().copied().find(|id| *id != leader).expect("follower");
    let gone = [leader, follower];
    for id in gone {
        let v = voters(&bus, AdminOp::RemoveMember { id }).await;
        assert!(!v.contains(&id), "member {id} still votes: {v:?}");
        group.kill(id);
    }
    let after_shrink = group.leader(Duration::from_secs(15)).await;
    assert!(!gone.contains(&after_shrink));
    let st = group.status().await;
    let voting: Vec<u64> = st.iter().find(|m| m.id == after_shrink).map(|m| m.voters.clone()).unwrap_or_default();
    assert_eq!(voting.len(), 3, "three voters after the shrink: {st:?}");
    tokio::time::sleep(Duration::from_secs(1)).await;

    // Grow back: the two come back empty and join; they catch up (by snapshot: the log
    // has moved on by more than --snapshot-every) before they vote.
    for id in gone {
        group.join_member(id);
        let addr = group.members[&id].addr.clone();
        let v = voters(&bus, AdminOp::AddMember { id, addr }).await;
        assert!(v.contains(&id), "member {id} does not vote after joining: {v:?}");
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::SeqCst);
    for w in writers {
        w.await.expect("writer");
    }
    // Nothing acknowledged is lost, and the new members hold it too.
    let acked = acked.lock().expect("acked").clone();
    assert!(acked.len() > 20, "too few writes under load to say anything: {}", acked.len());
    let stored = match bus.read(&ReadOp::List { prefix: "members/".into(), start_after: None, limit: 0, at: None }).await.expect("list") {
        ReadResult::List { items, .. } => items.into_iter().map(|s| (s.key, s.value)).collect::<BTreeMap<_, _>>(),
        other => panic!("{other:?}"),
    };
    for (k, v) in &acked {
        assert_eq!(stored.get(k), Some(v), "acknowledged write {k} lost\n{}", group.logs());
    }
    // Every member ends up holding the whole log and the five-voter membership (a member
    // learns of a committed change when the leader next replicates to it).
    let top = group.status().await.iter().map(|m| m.applied).max().unwrap_or(0);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let st = loop {
        let st = group.status().await;
        if st.len() == 5 && st.iter().all(|m| m.applied >= top && m.voters.len() == 5) {
            break st;
        }
        assert!(tokio::time::Instant::now() < deadline, "the members did not converge: {st:?}\n{}", group.logs());
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // The two that joined late caught up from a snapshot, not from a log replayed from 1.
    for id in gone {
        let m = st.iter().find(|m| m.id == id).expect("joined member");
        assert!(m.snapshot.is_some(), "member {id} holds no snapshot: {m:?}");
    }
    eprintln!("{} acknowledged writes, all present; members {st:?}", acked.len());
}

