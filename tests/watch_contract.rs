//! The holes the watch contract (design.md, "Watch semantics") had, each shown closed
//! against a real nats-server, state group and gateway: unreadable events stop a watch
//! (never skipped), a bind reaches watchers of unscheduled pods, selector watches from an
//! old revision judge membership at that revision, and finished watches hold no consumer.

mod common;

use common::gateway::Gateway;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use schema::store::{Event, EventType};
use serde_json::{json, Value};
use std::time::Duration;

/// Puts a message straight into the events stream as revision `rev` (as a bug or a
/// foreign writer could), so the watchers meet something they cannot read.
async fn inject(gw: &Gateway, subject: &str, rev: u64, payload: Vec<u8>) {
    let msg = async_nats::jetstream::message::PublishMessage::build().payload(payload.into()).expected_last_sequence(rev - 1);
    let ack = gw.bus.js.send_publish(subject.to_string(), msg).await.expect("publish").await.expect("ack");
    assert_eq!(ack.sequence, rev);
}

/// The stream's last revision, once the publisher has caught up with the store.
async fn published(gw: &Gateway, rev: u64) {
    gw.eventually("the publisher to catch up", || async {
        let mut s = gw.bus.js.get_stream(schema::subjects::EVENTS_STREAM).await.ok()?;
        (s.info().await.ok()?.state.last_sequence >= rev).then_some(())
    })
    .await;
}

/// The store's revision now (a linearizable read).
async fn store_rev(gw: &Gateway) -> u64 {
    match gw.bus.read(&schema::store::ReadOp::Get { key: "none".into() }).await.expect("read") {
        schema::store::ReadResult::Get { rev, .. } => rev,
        other => panic!("{other:?}"),
    }
}

async fn create_namespace(gw: &Gateway, name: &str) -> u64 {
    let r = gw.call("POST", "/api/v1/namespaces", "application/json", &json!({"apiVersion":"v1","kind":"Namespace","metadata":{"name":name}}).to_string()).await;
    assert_eq!(r.code, 201, "{}", String::from_utf8_lossy(&r.body));
    rv(&r.json())
}

fn rv(v: &Value) -> u64 {
    v["metadata"]["resourceVersion"].as_str().and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("no resourceVersion in {v}"))
}

fn types(lines: &[Value]) -> Vec<String> {
    lines.iter().map(|l| format!("{} {}", l["type"].as_str().unwrap_or(""), l["object"]["metadata"]["name"].as_str().unwrap_or(""))).collect()
}

/// A gateway over a store at revision `base`, whose stream then holds, as revisions
/// base+1 and base+2, an event whose object cannot be read and a message that is no event.
async fn with_unreadable_events() -> (Gateway, u64) {
    let gw = Gateway::start().await;
    create_namespace(&gw, "a").await;
    let base = store_rev(&gw).await;
    published(&gw, base).await;
    let cm = schema::subjects::object_event("configmaps", Some("a"), "bad", None);
    let bad = Event { rev: base + 1, typ: EventType::Added, key: "configmaps/a/bad".into(), subject: cm.clone(), value: b"\xc1".to_vec(), prev: None };
    inject(&gw, &cm, base + 1, schema::codec::encode(&bad).expect("encode")).await;
    inject(&gw, &cm, base + 2, b"\xc1 not messagepack".to_vec()).await;
    (gw, base)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_ends_a_watch_at_an_unreadable_event() {
    let (gw, base) = with_unreadable_events().await;
    // A Status naming the revision, and no bookmark past it.
    let path = format!("/api/v1/namespaces/a/configmaps?watch=true&resourceVersion={base}&allowWatchBookmarks=true&timeoutSeconds=5");
    let lines = gw.get(&path).await.lines();
    let last = lines.last().expect("a line");
    assert_eq!((last["type"].as_str(), last["object"]["code"].as_i64()), (Some("ERROR"), Some(500)), "{lines:?}");
    assert!(last["object"]["message"].as_str().unwrap_or("").contains(&format!("revision {}", base + 1)), "{last}");
    assert!(!lines.iter().any(|l| l["type"] == "BOOKMARK" && rv(&l["object"]) > base), "bookmarked past the unreadable event: {lines:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_informer_relists_at_an_unreadable_event() {
    let (gw, _) = with_unreadable_events().await;
    // The list says what became of the object; skipping the event would carry on as if
    // the informer had seen everything.
    let mut inf = Box::pin(bus::informer::watch_objects::<ConfigMap>(bus::Client::new(gw.bus.clone()), bus::informer::Scope { namespace: Some("a".into()), ..Default::default() }));
    let mut lists = 0;
    while lists < 2 {
        match tokio::time::timeout(Duration::from_secs(10), inf.next()).await {
            Ok(Some(bus::informer::InformerEvent::Listed(..))) => lists += 1,
            Ok(Some(other)) => panic!("the informer delivered past the unreadable event: {other:?}"),
            _ => panic!("the informer did not re-list after the unreadable event"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bus_watch_stops_at_a_message_that_is_no_event() {
    let (gw, base) = with_unreadable_events().await;
    // An error naming the message, instead of reopening the consumer onto it forever.
    let mut w = gw.bus.watch("ev.configmaps.a.*".into(), base + 1).await.expect("watch");
    match tokio::time::timeout(Duration::from_secs(10), w.next()).await {
        Ok(Some(Err(bus::BusError::Undecodable { rev, .. }))) => assert_eq!(rev, base + 2),
        other => panic!("expected Undecodable at {}, got {other:?}", base + 2),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bind_is_deleted_for_watchers_of_unscheduled_pods() {
    let gw = Gateway::start().await;
    create_namespace(&gw, "demo").await;
    let pods = "/api/v1/namespaces/demo/pods";
    let pod = json!({"apiVersion":"v1","kind":"Pod","metadata":{"name":"p"},"spec":{"containers":[{"name":"c","image":"busybox"}]}}).to_string();
    let created = gw.call("POST", pods, "application/json", &pod).await;
    assert_eq!(created.code, 201, "{}", String::from_utf8_lossy(&created.body));
    let from = rv(&created.json());

    let mut inf = Box::pin(bus::informer::watch_objects::<Pod>(bus::Client::new(gw.bus.clone()), bus::informer::Scope { unscheduled_only: true, ..Default::default() }));
    match tokio::time::timeout(Duration::from_secs(10), inf.next()).await {
        Ok(Some(bus::informer::InformerEvent::Listed(items, _))) => assert_eq!(items.len(), 1),
        other => panic!("expected the list of unscheduled pods, got {other:?}"),
    }
    let addr = gw.addr.clone();
    let watch = tokio::spawn(async move { common::gateway::call(&addr, "GET", &format!("/api/v1/namespaces/demo/pods?watch=true&fieldSelector=spec.nodeName%3D&resourceVersion={from}&timeoutSeconds=4"), "", "").await });
    let bind = json!({"apiVersion":"v1","kind":"Binding","metadata":{"name":"p"},"target":{"kind":"Node","name":"n1"}}).to_string();
    assert_eq!(gw.call("POST", &format!("{pods}/p/binding"), "application/json", &bind).await.code, 201);

    match tokio::time::timeout(Duration::from_secs(10), inf.next()).await {
        Ok(Some(bus::informer::InformerEvent::Deleted(p, _))) => assert_eq!(p.metadata.name.as_deref(), Some("p")),
        other => panic!("the unscheduled informer did not see the bound pod leave: {other:?}"),
    }
    let lines = watch.await.expect("watch").lines();
    assert_eq!(types(&lines), vec!["DELETED p"], "{lines:?}");
    // Node watchers see it arrive.
    let on_node = gw.get(&format!("/api/v1/namespaces/demo/pods?watch=true&fieldSelector=spec.nodeName%3Dn1&resourceVersion={from}&timeoutSeconds=1")).await.lines();
    assert_eq!(types(&on_node), vec!["ADDED p"], "{on_node:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_selector_watch_from_an_old_revision_judges_membership_then() {
    let gw = Gateway::start().await;
    create_namespace(&gw, "demo").await;
    let cms = "/api/v1/namespaces/demo/configmaps";
    let cm = |name: &str, app: &str| json!({"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":name,"labels":{"app":app}}}).to_string();
    let relabel = |app: &str| json!({"metadata":{"labels":{"app":app}}}).to_string();
    // x matches at the start and leaves; y enters after the start and changes again.
    let x = gw.call("POST", cms, "application/json", &cm("x", "a")).await;
    assert_eq!(x.code, 201);
    assert_eq!(gw.call("POST", cms, "application/json", &cm("y", "b")).await.code, 201);
    let start = rv(&gw.call("POST", cms, "application/json", &cm("z", "b")).await.json());
    for (name, app) in [("x", "b"), ("y", "a"), ("y", "a2")] {
        let patch = if app == "a2" { json!({"data":{"k":"v"}}).to_string() } else { relabel(app) };
        let r = gw.call("PATCH", &format!("{cms}/{name}"), "application/merge-patch+json", &patch).await;
        assert_eq!(r.code, 200, "{}", String::from_utf8_lossy(&r.body));
    }
    let lines = gw.get(&format!("{cms}?watch=true&labelSelector=app%3Da&resourceVersion={start}&timeoutSeconds=1")).await.lines();
    assert_eq!(types(&lines), vec!["DELETED x", "ADDED y", "MODIFIED y"], "{lines:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_watch_holds_no_consumer() {
    let gw = Gateway::start().await;
    let ns_rev = create_namespace(&gw, "demo").await;
    published(&gw, ns_rev).await;
    // The gateway's own informers settle first.
    let mut base = gw.consumers().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = gw.consumers().await;
        if now == base {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the consumer count did not settle");
        base = now;
    }

    // A bus watch on subjects nothing is written to: dropping it deletes its consumer.
    let w = gw.bus.watch("ev.configmaps.nowhere.*".into(), ns_rev).await.expect("watch");
    gw.eventually("the watch's consumer", || async { (gw.consumers().await == base + 1).then_some(()) }).await;
    drop(w);
    gw.eventually("the consumer to be deleted after the watch", || async { (gw.consumers().await == base).then_some(()) }).await;

    // A gateway watch that times out, and one whose client goes away.
    let lines = gw.get("/api/v1/namespaces/nowhere/configmaps?watch=true&timeoutSeconds=1").await.lines();
    assert!(lines.is_empty(), "{lines:?}");
    gw.eventually("the timed-out watch's consumer to be deleted", || async { (gw.consumers().await == base).then_some(()) }).await;
    let addr = gw.addr.clone();
    let client = tokio::spawn(async move { common::gateway::call(&addr, "GET", "/api/v1/namespaces/nowhere/configmaps?watch=true", "", "").await });
    gw.eventually("the long watch's consumer", || async { (gw.consumers().await == base + 1).then_some(()) }).await;
    client.abort();
    gw.eventually("the abandoned watch's consumer to be deleted", || async { (gw.consumers().await == base).then_some(()) }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paged_list_is_one_revision() {
    let gw = Gateway::start().await;
    create_namespace(&gw, "demo").await;
    let cms = "/api/v1/namespaces/demo/configmaps";
    for name in ["c1", "c2", "c3"] {
        let r = gw.call("POST", cms, "application/json", &json!({"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":name}}).to_string()).await;
        assert_eq!(r.code, 201);
    }
    let first = gw.get(&format!("{cms}?limit=1")).await.json();
    let names = |v: &Value| v["items"].as_array().map(|a| a.iter().map(|i| i["metadata"]["name"].as_str().unwrap_or("").to_string()).collect::<Vec<_>>()).unwrap_or_default();
    assert_eq!(names(&first), vec!["c1"]);
    let cont = first["metadata"]["continue"].as_str().expect("a continue token").to_string();
    // Between the pages c2 goes and c4 comes: the rest of the list is still as of the
    // first page's revision, which every page reports.
    assert_eq!(gw.call("DELETE", &format!("{cms}/c2"), "", "").await.code, 200);
    assert_eq!(gw.call("POST", cms, "application/json", &json!({"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"c4"}}).to_string()).await.code, 201);
    let rest = gw.get(&format!("{cms}?limit=5&continue={}", cont.replace('=', "%3D").replace('+', "%2B").replace('/', "%2F"))).await.json();
    assert_eq!(names(&rest), vec!["c2", "c3"], "{rest}");
    assert_eq!(rest["metadata"]["resourceVersion"], first["metadata"]["resourceVersion"]);
}
