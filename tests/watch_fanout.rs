//! Sharing one watch among many watchers (bus/src/fanout.rs, the gateway's HTTP
//! watches) keeps each watcher's contract: from whatever revision it starts, it sees
//! exactly the events after it, in order, once — the same sequence a watch of its own
//! would give. Real nats-server, state group and gateway; `flotilla bench watch`'s own
//! run checks the same at a few hundred watchers end to end.

mod common;

use common::gateway::Gateway;
use futures::StreamExt;
use schema::store::{Event, EventType, WriteOp};
use schema::subjects;
use serde_json::{json, Value};
use std::time::Duration;

/// Writes `n` changes to ConfigMaps of namespace `a` (and, between them, some of `b`,
/// which a watcher of `a` must not see); returns the last revision in `a`.
async fn write(bus: &bus::Bus, tag: &str, n: u32) -> u64 {
    let mut last = 0;
    let mut made = std::collections::HashSet::new();
    for i in 0..n {
        let ns = if i % 4 == 3 { "b" } else { "a" };
        let name = format!("{tag}-{}", i % 7);
        let key = schema::keys::object("configmaps", Some(ns), &name);
        let subject = subjects::object_event("configmaps", Some(ns), &name, None);
        let op = if made.insert((ns, name.clone())) { WriteOp::Create { key, subject, value: vec![i as u8] } } else { WriteOp::Update { key, subject, value: vec![i as u8], expected_rev: None } };
        let rev = bus.write(&op).await.expect("write").rev;
        if ns == "a" {
            last = rev;
        }
    }
    last
}

/// A watcher's events up to revision `upto`.
async fn collect<S: futures::Stream<Item = Result<T, bus::BusError>> + Unpin, T>(mut s: S, rev: impl Fn(&T) -> u64, upto: u64) -> Vec<T> {
    let mut out = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(20), s.next()).await {
            Ok(Some(Ok(ev))) => {
                let done = rev(&ev) >= upto;
                out.push(ev);
                if done {
                    return out;
                }
            }
            Ok(Some(Err(e))) => panic!("watch error: {e}"),
            Ok(None) => panic!("watch ended"),
            Err(_) => return out,
        }
    }
}

fn brief(e: &Event) -> (u64, String, EventType) {
    (e.rev, e.key.clone(), e.typ)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_watchers_from_different_revisions_see_exactly_their_sequences() {
    let gw = Gateway::start().await;
    let bus = gw.bus.clone();
    let filter = subjects::event_filter("configmaps", &subjects::EventFilter { namespace: Some("a"), ..Default::default() });

    let before = write(&bus, "early", 60).await;
    let fan = bus::fanout::Fanout::new(bus.clone());
    // The first watcher opens the shared watch from the middle of what was written; the
    // others start before it (older than the shared window: their own watch), at it, in
    // the window and ahead of everything written so far.
    let mid = before / 2;
    let starts: Vec<u64> = std::iter::once(mid).chain((0..299u64).map(|i| (i * 7) % (before + 20))).collect();
    let mut watchers = Vec::new();
    for &s in &starts {
        watchers.push((s, fan.watch(filter.clone(), s).await.expect("watch")));
    }
    assert_eq!(fan.shared_watches().await, 1, "one shared watch for one filter");
    let last = write(&bus, "late", 60).await;

    let reference = collect(bus.watch(filter.clone(), 0).await.expect("own watch"), |e: &Event| e.rev, last).await;
    assert!(reference.len() >= 80, "the reference watch saw {} events", reference.len());
    let mut tasks = Vec::new();
    for (s, w) in watchers {
        tasks.push(tokio::spawn(async move { (s, collect(w, |e: &std::sync::Arc<bus::fanout::Shared>| e.ev.rev, last).await) }));
    }
    for t in tasks {
        let (s, got) = t.await.expect("watcher");
        let want: Vec<_> = reference.iter().filter(|e| e.rev > s).map(brief).collect();
        let got: Vec<_> = got.iter().map(|e| brief(&e.ev)).collect();
        assert_eq!(got, want, "the watcher from revision {s}");
    }
    // The last watcher gone, the shared watch closes (and its consumer with it).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while fan.shared_watches().await > 0 {
        assert!(tokio::time::Instant::now() < deadline, "the shared watch outlived its watchers");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn rv(v: &Value) -> u64 {
    v["metadata"]["resourceVersion"].as_str().and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("no resourceVersion in {v}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_watchers_sharing_a_watch_each_see_the_events_after_their_revision() {
    let gw = Gateway::start().await;
    let r = gw.call("POST", "/api/v1/namespaces", "application/json", &json!({"apiVersion":"v1","kind":"Namespace","metadata":{"name":"demo"}}).to_string()).await;
    assert_eq!(r.code, 201);
    let cms = "/api/v1/namespaces/demo/configmaps";
    let mut revs = Vec::new();
    for i in 0..5 {
        let r = gw.call("POST", cms, "application/json", &json!({"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":format!("c{i}")}}).to_string()).await;
        assert_eq!(r.code, 201);
        revs.push(rv(&r.json()));
    }
    // Eighty watches from five revisions, all open while more changes come.
    let mut watches = Vec::new();
    for i in 0..80 {
        let from = revs[i % revs.len()];
        let addr = gw.addr.clone();
        let path = format!("{cms}?watch=true&resourceVersion={from}&timeoutSeconds=4");
        watches.push((from, tokio::spawn(async move { common::gateway::call(&addr, "GET", &path, "", "").await })));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    for i in 0..5 {
        let patch = json!({"data":{"n":i.to_string()}}).to_string();
        assert_eq!(gw.call("PATCH", &format!("{cms}/c{}", i % 3), "application/merge-patch+json", &patch).await.code, 200);
    }
    assert_eq!(gw.call("DELETE", &format!("{cms}/c4"), "", "").await.code, 200);
    let reference: Vec<(String, String, u64)> = {
        let lines = gw.get(&format!("{cms}?watch=true&resourceVersion={}&timeoutSeconds=1", revs[0])).await.lines();
        lines.iter().map(|l| (l["type"].as_str().unwrap_or("").to_string(), l["object"]["metadata"]["name"].as_str().unwrap_or("").to_string(), rv(&l["object"]))).collect()
    };
    assert_eq!(reference.len(), 4 + 5 + 1, "{reference:?}");
    for (from, w) in watches {
        let lines = w.await.expect("watch").lines();
        let got: Vec<(String, String, u64)> = lines.iter().map(|l| (l["type"].as_str().unwrap_or("").to_string(), l["object"]["metadata"]["name"].as_str().unwrap_or("").to_string(), rv(&l["object"]))).collect();
        let want: Vec<_> = reference.iter().filter(|e| e.2 > from).cloned().collect();
        assert_eq!(got, want, "the watch from {from}");
    }
}

/// `flotilla bench watch`'s own machinery at a small size: it fails when any watcher lost,
/// doubled or reordered a write.
#[test]
fn bench_watch_sees_every_write_once_in_order_at_every_watcher() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_flotilla"))
        .args(["bench", "watch", "--watchers", "300", "--writes", "10", "--interval-ms", "50", "--streams-per-conn", "50", "--bus-per-conn", "50"])
        .output()
        .expect("running flotilla bench watch");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "bench watch failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    for kind in ["http", "bus"] {
        let row = stdout.lines().find(|l| l.starts_with(kind)).unwrap_or_else(|| panic!("no {kind} row in\n{stdout}"));
        let cols: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(cols[1], "150", "{row}");
        assert_eq!(cols[2], "1500", "every watcher saw every measured write: {row}");
        assert_eq!(&cols[cols.len() - 3..], &["0", "0", "0"], "{row}");
    }
}

/// The consumers on the events stream, by filter subject.
async fn consumers_by_filter(bus: &bus::Bus) -> std::collections::BTreeMap<String, usize> {
    let stream = bus.js.get_stream(subjects::EVENTS_STREAM).await.expect("events stream");
    let mut infos = stream.consumers();
    let mut by = std::collections::BTreeMap::new();
    while let Some(info) = infos.next().await {
        let info = info.expect("consumer info");
        *by.entry(info.config.filter_subject.clone()).or_insert(0) += 1;
    }
    by
}

/// The controllers process asks for pods a dozen times (ReplicaSets, Jobs, Endpoints,
/// node lifecycle, pod GC, …) and holds one watch of them: its informers are shared.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_controllers_hold_one_watch_per_kind() {
    let gw = Gateway::start().await;
    let pods = subjects::event_filter("pods", &subjects::EventFilter::default());
    let before = consumers_by_filter(&gw.bus).await;
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_flotilla"))
        .args(["controllers", "--nats-url", &gw.nats.url, "--health-addr", &format!("127.0.0.1:{}", common::free_port())])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("flotilla controllers");
    let _controllers = common::process::TermOnDrop(child);
    // Leader, then started: the Lease it holds says so, and its watches open.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let by = loop {
        let by = consumers_by_filter(&gw.bus).await;
        let nodes = by.get(&subjects::event_filter("nodes", &subjects::EventFilter::default())).copied().unwrap_or(0);
        if nodes > 0 {
            // Every informer of the process asked before the shared ones started.
            tokio::time::sleep(Duration::from_secs(1)).await;
            break consumers_by_filter(&gw.bus).await;
        }
        assert!(tokio::time::Instant::now() < deadline, "the controllers opened no watch: {by:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let theirs: std::collections::BTreeMap<&String, usize> = by.iter().map(|(f, n)| (f, n - before.get(f).copied().unwrap_or(0))).filter(|(_, n)| *n > 0).collect();
    assert_eq!(theirs.get(&pods).copied(), Some(1), "the controllers' watches: {theirs:?}");
    let many: Vec<_> = theirs.iter().filter(|(_, n)| **n > 1).collect();
    assert!(many.is_empty(), "kinds the controllers watch more than once: {many:?} (all: {theirs:?})");
}
