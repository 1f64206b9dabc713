//! The history checker the fault tests rely on, checked against hand-written histories
//! (each one bug the store could have) and against random histories that are
//! linearizable by construction. No cluster, no NATS: pure and fast.

mod common;

use common::linearizability::{
    check_linearizable, check_watch, EventKind, Failure, History, Op, OpKind, Outcome, ViolationKind, WatchEvent,
};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// A history written as a timeline in milliseconds.
struct Timeline {
    history: History,
    t0: Instant,
}

impl Timeline {
    fn new() -> Timeline {
        Timeline { history: History::new(), t0: Instant::now() }
    }

    fn at(&self, ms: u64) -> Instant {
        self.t0 + Duration::from_millis(ms)
    }

    fn op(&self, client: u64, key: &str, kind: OpKind, from: u64, to: u64, outcome: Outcome) -> &Self {
        self.history.record(client, key, kind, self.at(from), self.at(to), outcome);
        self
    }

    /// A call whose answer never came: its completion time means nothing.
    fn lost(&self, client: u64, key: &str, kind: OpKind, from: u64) -> &Self {
        self.op(client, key, kind, from, from, Outcome::Unknown)
    }

    fn ops(&self) -> Vec<Op> {
        self.history.ops()
    }
}

fn create(v: &str) -> OpKind {
    OpKind::Create { value: v.into() }
}
fn update(v: &str, expected_rev: Option<u64>) -> OpKind {
    OpKind::Update { value: v.into(), expected_rev }
}
fn delete(expected_rev: Option<u64>) -> OpKind {
    OpKind::Delete { expected_rev }
}
fn ok(rev: u64) -> Outcome {
    Outcome::Written { rev }
}
fn saw(v: &str, rev: u64) -> Outcome {
    Outcome::Read { item: Some((v.into(), rev)), store_rev: None }
}
fn absent() -> Outcome {
    Outcome::Read { item: None, store_rev: None }
}
fn at_store_rev(outcome: Outcome, s: u64) -> Outcome {
    match outcome {
        Outcome::Read { item, .. } => Outcome::Read { item, store_rev: Some(s) },
        other => other,
    }
}

fn violation_kind(ops: &[Op]) -> Option<ViolationKind> {
    check_linearizable(ops).err().map(|v| {
        println!("{v}");
        v.kind
    })
}

#[test]
fn a_valid_concurrent_history_passes() {
    let t = Timeline::new();
    t.op(1, "a", create("v1"), 0, 10, ok(1))
        .op(2, "a", OpKind::Get, 2, 5, absent())
        .op(3, "a", OpKind::Get, 3, 12, saw("v1", 1))
        .op(1, "b", create("x"), 11, 14, ok(2))
        .op(2, "a", update("v2", Some(1)), 6, 20, ok(3))
        .op(3, "a", OpKind::Get, 13, 25, saw("v1", 1))
        .op(4, "a", update("v3", Some(1)), 15, 30, Outcome::Failed(Failure::Conflict { current: 3 }))
        .op(1, "a", OpKind::Get, 21, 22, at_store_rev(saw("v2", 3), 3))
        .op(1, "b", create("y"), 23, 24, Outcome::Failed(Failure::AlreadyExists))
        .op(2, "b", delete(Some(2)), 26, 28, ok(4))
        .op(2, "b", delete(None), 29, 31, Outcome::Failed(Failure::NotFound))
        .op(1, "b", create("z"), 32, 33, ok(5));
    assert_eq!(violation_kind(&t.ops()), None);
}

#[test]
fn a_stale_read_is_caught() {
    let t = Timeline::new();
    t.op(1, "a", create("v1"), 0, 1, ok(1)).op(1, "a", update("v2", None), 2, 3, ok(2)).op(2, "a", OpKind::Get, 4, 5, saw("v1", 1));
    assert_eq!(violation_kind(&t.ops()), Some(ViolationKind::NotLinearizable));
}

#[test]
fn a_read_behind_its_own_store_revision_is_caught_even_when_concurrent() {
    // The Get overlaps the Update, so on the key alone it could come first; but it says it
    // read the store at revision 2, where the Update had already committed.
    let t = Timeline::new();
    t.op(1, "a", create("v1"), 0, 1, ok(1)).op(1, "a", update("v2", None), 2, 10, ok(2)).op(
        2,
        "a",
        OpKind::Get,
        3,
        9,
        at_store_rev(saw("v1", 1), 2),
    );
    assert_eq!(violation_kind(&t.ops()), Some(ViolationKind::NotLinearizable));
}

#[test]
fn a_stale_read_across_keys_is_caught_through_store_revisions() {
    // Per key each read may precede the concurrent write, but y was read at store
    // revision 2 and, later in real time, x at store revision 0: revisions went backwards.
    let t = Timeline::new();
    t.op(1, "x", create("x1"), 0, 20, ok(1))
        .op(2, "y", create("y1"), 0, 20, ok(2))
        .op(3, "y", OpKind::Get, 1, 5, at_store_rev(saw("y1", 2), 2))
        .op(3, "x", OpKind::Get, 6, 9, at_store_rev(absent(), 0));
    assert_eq!(violation_kind(&t.ops()), Some(ViolationKind::RevisionOrder));
}

#[test]
fn a_lost_acknowledged_write_is_caught() {
    let t = Timeline::new();
    t.op(1, "a", create("v1"), 0, 1, ok(1)).op(2, "a", OpKind::Get, 2, 3, absent());
    assert_eq!(violation_kind(&t.ops()), Some(ViolationKind::NotLinearizable));

    // The Update's acknowledgement was a lie: the next CAS still found revision 1.
    let t = Timeline::new();
    t.op(1, "a", create("v1"), 0, 1, ok(1)).op(1, "a", update("v2", None), 2, 3, ok(2)).op(2, "a", update("v3", Some(1)), 4, 5, ok(3)).op(
        2,
        "a",
        OpKind::Get,
        6,
        7,
        saw("v3", 3),
    );
    assert_eq!(violation_kind(&t.ops()), Some(ViolationKind::NotLinearizable));
}

#[test]
fn a_cas_that_succeeded_against_the_wrong_revision_is_caught() {
    let t = Timeline::new();
    t.op(1, "a", create("v1"), 0, 1, ok(1)).op(1, "a", update("v2", None), 2, 3, ok(2)).op(2, "a", update("v3", Some(1)), 4, 5, ok(3));
    let v = check_linearizable(&t.ops()).expect_err("the CAS expected revision 1 while the key was at 2");
    println!("{v}");
    assert_eq!((v.kind, v.key.as_deref()), (ViolationKind::NotLinearizable, Some("a")));
    assert!(v.message.contains("Update(\"v3\", expected_rev Some(1))"), "the report names the call: {v}");
}

#[test]
fn a_conflict_naming_the_wrong_current_revision_is_caught() {
    let history = |current| {
        let t = Timeline::new();
        t.op(1, "a", create("v1"), 0, 1, ok(1)).op(1, "a", update("v2", None), 2, 3, ok(2)).op(
            2,
            "a",
            update("v3", Some(1)),
            4,
            5,
            Outcome::Failed(Failure::Conflict { current }),
        );
        t.ops()
    };
    assert_eq!(violation_kind(&history(2)), None);
    assert_eq!(violation_kind(&history(1)), Some(ViolationKind::NotLinearizable));
    assert_eq!(violation_kind(&history(7)), Some(ViolationKind::NotLinearizable));
}

#[test]
fn writes_whose_answer_was_lost_may_have_taken_effect_or_not() {
    // Took effect at revision 4 (a revision no acknowledged write holds), seen by a read
    // and by a CAS.
    let t = Timeline::new();
    t.op(1, "a", create("v1"), 0, 1, ok(1))
        .lost(2, "a", update("v2", None), 2)
        .op(3, "b", create("x"), 3, 4, ok(2))
        .op(3, "b", update("y", None), 5, 6, ok(3))
        .op(1, "a", OpKind::Get, 10, 11, saw("v2", 4))
        .op(1, "a", update("v3", Some(4)), 12, 13, ok(5));
    assert_eq!(violation_kind(&t.ops()), None);

    // ...but it cannot have taken a revision an acknowledged write holds.
    let t = Timeline::new();
    t.op(1, "a", create("v1"), 0, 1, ok(1)).lost(2, "a", update("v2", None), 2).op(3, "b", create("x"), 3, 4, ok(2)).op(
        1,
        "a",
        OpKind::Get,
        10,
        11,
        saw("v2", 2),
    );
    assert_eq!(violation_kind(&t.ops()), Some(ViolationKind::NotLinearizable));

    // Never took effect.
    let t = Timeline::new();
    t.op(1, "a", create("v1"), 0, 1, ok(1)).lost(2, "a", update("v2", None), 2).op(1, "a", OpKind::Get, 10, 11, saw("v1", 1)).op(
        1,
        "a",
        OpKind::Get,
        12,
        13,
        saw("v1", 1),
    );
    assert_eq!(violation_kind(&t.ops()), None);

    // A retried Create: the first attempt's answer was lost, the retry finds the key.
    let t = Timeline::new();
    t.lost(1, "a", create("v1"), 0).op(1, "a", create("v1"), 5, 6, Outcome::Failed(Failure::AlreadyExists)).op(
        1,
        "a",
        OpKind::Get,
        7,
        8,
        saw("v1", 3),
    );
    assert_eq!(violation_kind(&t.ops()), None);

    // A lost write cannot take effect before it was sent.
    let t = Timeline::new();
    t.op(1, "a", OpKind::Get, 0, 1, saw("v1", 1)).lost(2, "a", create("v1"), 2);
    assert_eq!(violation_kind(&t.ops()), Some(ViolationKind::NotLinearizable));
}

#[test]
fn revisions_must_follow_real_time_across_keys() {
    let t = Timeline::new();
    t.op(1, "a", create("v1"), 0, 1, ok(5)).op(2, "b", create("x"), 2, 3, ok(3));
    assert_eq!(violation_kind(&t.ops()), Some(ViolationKind::RevisionOrder));

    let t = Timeline::new();
    t.op(1, "a", create("v1"), 0, 1, ok(1)).op(2, "b", create("x"), 2, 3, ok(1));
    assert_eq!(violation_kind(&t.ops()), Some(ViolationKind::RevisionOrder), "one revision, two writes");
}

#[test]
fn the_recorder_records_completions_and_dropped_calls_as_unknown() {
    let history = History::new();
    let get = history.invoke_get(1, "a");
    let create = history.invoke(2, "a", create("v1"));
    create.complete(ok(1));
    get.complete(saw("v1", 1));
    drop(history.invoke(3, "a", update("v2", None)));
    let ops = history.ops();
    let outcomes: Vec<_> = ops.iter().map(|o| (o.client, o.outcome.clone())).collect();
    assert_eq!(outcomes, vec![(2, ok(1)), (1, saw("v1", 1)), (3, Outcome::Unknown)]);
    assert!(ops[1].invoke < ops[0].invoke && ops[0].complete <= ops[1].complete);
    assert_eq!(violation_kind(&ops), None);
}

// --- watch streams ---

fn watch_history() -> Vec<Op> {
    let t = Timeline::new();
    t.op(1, "a", create("a1"), 0, 1, ok(1))
        .op(1, "b", create("b1"), 2, 3, ok(2))
        .op(1, "a", update("a2", None), 4, 5, ok(3))
        .op(1, "c", create("c1"), 6, 7, ok(4))
        .op(1, "a", delete(None), 8, 9, ok(5))
        .lost(2, "b", update("b2", None), 10);
    t.ops()
}

fn watch_events() -> Vec<WatchEvent> {
    vec![
        WatchEvent::new(1, "a", EventKind::Added, "a1"),
        WatchEvent::new(2, "b", EventKind::Added, "b1"),
        WatchEvent::new(3, "a", EventKind::Modified, "a2"),
        WatchEvent::new(5, "a", EventKind::Deleted, "a2"),
    ]
}

fn watch_violation(events: &[WatchEvent], from_rev: u64) -> Option<ViolationKind> {
    check_watch(events, &watch_history(), &["a", "b"], from_rev).err().map(|v| {
        println!("{v}");
        v.kind
    })
}

#[test]
fn a_complete_watch_passes_and_resolves_lost_writes() {
    assert_eq!(watch_violation(&watch_events(), 0), None);
    assert_eq!(watch_violation(&watch_events()[2..], 2), None, "a watch from revision 2");
    let mut events = watch_events();
    events.push(WatchEvent::new(6, "b", EventKind::Modified, "b2"));
    assert_eq!(watch_violation(&events, 0), None, "the lost Update of b took effect at 6");
}

#[test]
fn reordered_duplicate_missing_and_invented_events_are_caught() {
    let mut reordered = watch_events();
    reordered.swap(1, 2);
    assert_eq!(watch_violation(&reordered, 0), Some(ViolationKind::Watch));

    let mut duplicate = watch_events();
    duplicate.insert(2, duplicate[1].clone());
    assert_eq!(watch_violation(&duplicate, 0), Some(ViolationKind::Watch));

    let mut gap = watch_events();
    gap.remove(2);
    let v = check_watch(&gap, &watch_history(), &["a", "b"], 0).expect_err("revision 3 is missing");
    assert!(v.message.contains("gap"), "{v}");

    let tail = &watch_events()[..3];
    let v = check_watch(tail, &watch_history(), &["a", "b"], 0).expect_err("revision 5 never arrived");
    assert!(v.message.contains("after the last event"), "{v}");

    let mut invented = watch_events();
    invented.push(WatchEvent::new(6, "b", EventKind::Modified, "nobody wrote this"));
    assert_eq!(watch_violation(&invented, 0), Some(ViolationKind::Watch));

    let mut wrong_value = watch_events();
    wrong_value[2].value = "a1".into();
    assert_eq!(watch_violation(&wrong_value, 0), Some(ViolationKind::Watch));

    let mut wrong_removed_value = watch_events();
    wrong_removed_value[3].value = "a1".into();
    assert_eq!(watch_violation(&wrong_removed_value, 0), Some(ViolationKind::Watch));

    let mut unwatched = watch_events();
    unwatched.insert(3, WatchEvent::new(4, "c", EventKind::Added, "c1"));
    assert_eq!(watch_violation(&unwatched, 0), Some(ViolationKind::Watch));

    assert_eq!(watch_violation(&watch_events(), 1), Some(ViolationKind::Watch), "revision 1 is not after the start");
}

// --- random histories, linearizable by construction ---

/// splitmix64: a seeded generator so a failing seed can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

struct Generated {
    ops: Vec<Op>,
    /// What a watch on every key from revision 0 delivers.
    events: Vec<WatchEvent>,
    /// For some Gets: the answer the key gave just before its current version, where the
    /// write that replaced it had finished before the Get was sent (so that answer is stale).
    stale: Vec<(usize, Outcome)>,
}

/// Runs `clients` clients against an in-memory store, each call taking effect at one
/// random instant inside its interval, calls in effect order: linearizable by
/// construction. `lost` percent of writes lose their answer (and take effect half the time).
fn generate(seed: u64, clients: u64, keys: u64, calls_per_client: u64, lost: u64) -> Generated {
    let mut rng = Rng(seed);
    // (effect, invoke, complete, client, key) in microseconds; effects unique per client.
    let mut planned = Vec::new();
    for c in 0..clients {
        let mut t = rng.below(50);
        for _ in 0..calls_per_client {
            let invoke = t + rng.below(30);
            let effect = invoke + 1 + rng.below(200);
            let complete = effect + 1 + rng.below(200);
            planned.push((effect * clients + c, invoke * clients + c, complete * clients + c, c, format!("k{}", rng.below(keys))));
            t = complete;
        }
    }
    planned.sort();
    let t0 = Instant::now();
    let at = |us: u64| t0 + Duration::from_micros(us);
    let history = History::new();
    let mut store: HashMap<String, (String, u64)> = HashMap::new();
    // Per key: the answer a Get would have given before the current version, and when the
    // write that made the current version finished (None when its answer was lost).
    let mut before: HashMap<String, (Outcome, Option<u64>)> = HashMap::new();
    let mut rev = 0;
    let mut stale = Vec::new();
    let mut events = Vec::new();
    for (n, (_, invoke, complete, client, key)) in planned.into_iter().enumerate() {
        let current = store.get(&key).cloned();
        let read = |cur: &Option<(String, u64)>| Outcome::Read { item: cur.clone().map(|(v, r)| (v.into_bytes(), r)), store_rev: None };
        let value = format!("c{client}-{n}");
        let expected = |rng: &mut Rng| match (&current, rng.below(4)) {
            (_, 0) => None,
            (Some((_, r)), 1 | 2) => Some(*r),
            _ => Some(rng.below(rev + 2)),
        };
        let kind = match rng.below(10) {
            0..=3 => OpKind::Get,
            4 | 5 => OpKind::Create { value: value.clone().into_bytes() },
            6 | 7 => OpKind::Update { value: value.clone().into_bytes(), expected_rev: expected(&mut rng) },
            _ => OpKind::Delete { expected_rev: expected(&mut rng) },
        };
        let next = match (&kind, &current) {
            (OpKind::Get, _) => {
                Err(Outcome::Read { item: current.clone().map(|(v, r)| (v.into_bytes(), r)), store_rev: rng.chance(50).then_some(rev) })
            }
            (OpKind::Create { .. }, Some(_)) => Err(Outcome::Failed(Failure::AlreadyExists)),
            (OpKind::Create { .. }, None) => Ok(Some(value.clone())),
            (_, None) => Err(Outcome::Failed(Failure::NotFound)),
            (k, Some((_, r))) => match k {
                OpKind::Update { expected_rev: Some(e), .. } | OpKind::Delete { expected_rev: Some(e) } if e != r => {
                    Err(Outcome::Failed(Failure::Conflict { current: *r }))
                }
                OpKind::Update { .. } => Ok(Some(value.clone())),
                _ => Ok(None),
            },
        };
        let outcome = match next {
            Err(outcome) => outcome,
            Ok(new) => {
                let lose = rng.chance(lost);
                if !lose || rng.chance(50) {
                    rev += 1;
                    before.insert(key.clone(), (read(&current), (!lose).then_some(complete)));
                    let event = match (new, &current) {
                        (Some(v), None) => WatchEvent::new(rev, &key, EventKind::Added, v.clone()),
                        (Some(v), Some(_)) => WatchEvent::new(rev, &key, EventKind::Modified, v.clone()),
                        (None, Some((removed, _))) => WatchEvent::new(rev, &key, EventKind::Deleted, removed.clone()),
                        (None, None) => unreachable!("a Delete of an absent key fails"),
                    };
                    match event.kind {
                        EventKind::Deleted => store.remove(&key),
                        _ => store.insert(key.clone(), (String::from_utf8(event.value.clone()).expect("utf-8"), rev)),
                    };
                    events.push(event);
                }
                if lose {
                    Outcome::Unknown
                } else {
                    Outcome::Written { rev }
                }
            }
        };
        // Only an older *value* is certainly stale: an older "absent" could be explained
        // by a Delete that overlaps the Get.
        if let (OpKind::Get, Some((old @ Outcome::Read { item: Some(_), .. }, Some(done)))) = (&kind, before.get(&key)) {
            if *done < invoke {
                stale.push((n, old.clone()));
            }
        }
        history.record(client, key, kind, at(invoke), at(complete), outcome);
    }
    Generated { ops: history.ops(), events, stale }
}

#[test]
fn random_linearizable_histories_pass_and_one_changed_read_fails_them() {
    for seed in 0..40 {
        let g = generate(seed, 1 + seed % 8, 1 + seed % 4, 30, 10);
        if let Err(v) = check_linearizable(&g.ops) {
            panic!("seed {seed}: a linearizable history was rejected: {v}");
        }

        let mut rng = Rng(seed);
        let reads: Vec<usize> = g.ops.iter().filter(|o| matches!(o.outcome, Outcome::Read { .. })).map(|o| o.id).collect();
        let mut invented = g.ops.clone();
        let victim = reads[rng.below(reads.len() as u64) as usize];
        invented[victim].outcome = Outcome::Read { item: Some((b"nobody wrote this".to_vec(), 1)), store_rev: None };
        assert!(check_linearizable(&invented).is_err(), "seed {seed}: a read of a value nobody wrote passed");

        if let Some((victim, old)) = g.stale.get(rng.below(g.stale.len().max(1) as u64) as usize) {
            let mut stale = g.ops.clone();
            stale[*victim].outcome = old.clone();
            assert_eq!(
                check_linearizable(&stale).map_err(|v| v.kind),
                Err(ViolationKind::NotLinearizable),
                "seed {seed}: a stale read passed: {}",
                stale[*victim].id
            );
        }
    }
}

#[test]
fn fault_test_sized_histories_are_checked_quickly() {
    // About what a fault test records: 10 keys, 8 clients, a few hundred calls per key,
    // some of them lost.
    for seed in 100..103 {
        let g = generate(seed, 8, 10, 400, 5);
        let started = Instant::now();
        let result = check_linearizable(&g.ops);
        let took = started.elapsed();
        println!("seed {seed}: {} calls checked in {took:?}", g.ops.len());
        assert!(result.is_ok(), "seed {seed}: {}", result.unwrap_err());
        assert!(took < Duration::from_secs(5), "seed {seed}: took {took:?}");
    }
}

#[test]
fn random_watch_streams_pass_and_each_kind_of_damage_fails_them() {
    for seed in 0..20 {
        let g = generate(seed, 4, 3, 40, 10);
        let all = ["k0", "k1", "k2"];
        assert!(check_watch(&g.events, &g.ops, &all, 0).is_ok(), "seed {seed}: {}", check_watch(&g.events, &g.ops, &all, 0).unwrap_err());

        // One key, from the middle of the history.
        let from = g.events[g.events.len() / 2].rev;
        let k1: Vec<WatchEvent> = g.events.iter().filter(|e| e.key == "k1" && e.rev > from).cloned().collect();
        assert!(check_watch(&k1, &g.ops, &["k1"], from).is_ok(), "seed {seed}: {}", check_watch(&k1, &g.ops, &["k1"], from).unwrap_err());

        // Damage an acknowledged write's event: one of a lost write may never have existed.
        let acked: Vec<usize> =
            (1..g.events.len() - 1).filter(|&i| g.ops.iter().any(|o| o.outcome == Outcome::Written { rev: g.events[i].rev })).collect();
        let i = acked[Rng(seed).below(acked.len() as u64) as usize];
        let damaged: [(&str, Vec<WatchEvent>); 4] = [
            ("dropped", [&g.events[..i], &g.events[i + 1..]].concat()),
            ("repeated", [&g.events[..=i], &g.events[i..]].concat()),
            ("swapped", [&g.events[..i], &[g.events[i + 1].clone(), g.events[i].clone()], &g.events[i + 2..]].concat()),
            ("invented", [&g.events[..], &[WatchEvent::new(g.events.last().unwrap().rev + 1, "k0", EventKind::Added, "nobody")]].concat()),
        ];
        for (what, events) in damaged {
            assert_eq!(
                check_watch(&events, &g.ops, &all, 0).map_err(|v| v.kind),
                Err(ViolationKind::Watch),
                "seed {seed}: {what} event {i}"
            );
        }
    }
}
