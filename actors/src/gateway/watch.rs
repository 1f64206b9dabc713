//! `?watch=true`: a chunked stream of `{"type":…,"object":…}` lines fed by the bus's
//! ordered watch on the resource's subjects, with selectors applied per event (an object
//! that leaves a selector is sent as DELETED, one that enters it as ADDED). With
//! `allowWatchBookmarks` it also sends BOOKMARKs (the revision the stream has reached),
//! and with `sendInitialEvents` it starts with the current objects, as watch-list clients
//! expect, ended by a bookmark marked `k8s.io/initial-events-end`.

use super::objects::{list_objects, selectors};
use super::status::ApiError;
use super::{channel_body, table, AppState, Req};
use axum::body::Bytes;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bus::BusError;
use futures::StreamExt;
use schema::registry::ResourceInfo;
use schema::store::{EventType, Revision, Stored};
use schema::subjects::{self, EventFilter, NodeFilter};
use schema::{keys, object};
use serde_json::{json, Value};
use std::collections::HashSet;
use std::time::Duration;

/// Default watch length when the client sets no timeoutSeconds: kubectl `get -w` exits
/// when the server ends the stream, so keep it long, as the apiserver does.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1800);
/// How often a watch that allows bookmarks gets one (the real server: about a minute);
/// another comes just before the server ends the watch.
const BOOKMARK_EVERY: Duration = Duration::from_secs(60);

/// A BOOKMARK's object: only the kind and the revision the stream has reached.
fn bookmark(res: &ResourceInfo, rev: Revision, initial_end: bool) -> Value {
    let mut meta = json!({"resourceVersion": rev.to_string()});
    if initial_end {
        meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    json!({"kind": res.kind, "apiVersion": res.api_version(), "metadata": meta})
}

/// The watch-list parameters, validated as the real server does.
fn watch_list_options(req: &Req) -> Result<(bool, bool), ApiError> {
    let flag = |k: &str| matches!(req.q(k), Some("true") | Some("1"));
    let (bookmarks, initial) = (flag("allowWatchBookmarks"), flag("sendInitialEvents"));
    if initial {
        let mut why = Vec::new();
        if req.q("resourceVersionMatch") != Some("NotOlderThan") {
            why.push("resourceVersionMatch: Forbidden: sendInitialEvents requires setting resourceVersionMatch to NotOlderThan");
        }
        if !bookmarks {
            why.push("allowWatchBookmarks: Forbidden: sendInitialEvents requires setting allowWatchBookmarks to true");
        }
        if !why.is_empty() {
            return Err(ApiError::new(422, "Invalid", format!("ListOptions.meta.k8s.io \"\" is invalid: {}", why.join(", "))));
        }
    }
    Ok((bookmarks, initial))
}

/// What one event becomes, given whether the object matched before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Emit {
    Added,
    Modified,
    Deleted,
    Skip,
}

/// The per-event selector decision: `was` tells whether the key matched before.
pub fn decide(typ: EventType, was: bool, matches_now: bool) -> Emit {
    match (typ, was, matches_now) {
        (EventType::Deleted, true, _) | (EventType::Deleted, false, true) => Emit::Deleted,
        (EventType::Deleted, false, false) => Emit::Skip,
        (_, false, true) => Emit::Added,
        (_, true, true) => Emit::Modified,
        (_, true, false) => Emit::Deleted,
        (_, false, false) => Emit::Skip,
    }
}

/// An event as a watch without selectors sends it.
fn plain(typ: EventType) -> Emit {
    match typ {
        EventType::Added => Emit::Added,
        EventType::Modified => Emit::Modified,
        EventType::Deleted => Emit::Deleted,
    }
}

fn type_name(e: Emit) -> &'static str {
    match e {
        Emit::Added => "ADDED",
        Emit::Modified => "MODIFIED",
        Emit::Deleted => "DELETED",
        Emit::Skip => "",
    }
}

struct Encoder {
    res: &'static ResourceInfo,
    table: bool,
    first: bool,
}

impl Encoder {
    fn line(&mut self, typ: &str, obj: &Value) -> Bytes {
        let object = if self.table && typ != "ERROR" {
            let t = table::table(self.res, std::slice::from_ref(obj), json!({}), self.first);
            self.first = false;
            t
        } else {
            obj.clone()
        };
        let mut b = serde_json::to_vec(&json!({"type": typ, "object": object})).unwrap_or_default();
        b.push(b'\n');
        Bytes::from(b)
    }
}

fn streaming(rx: tokio::sync::mpsc::Receiver<Bytes>) -> Response {
    let mut r = (StatusCode::OK, channel_body(rx)).into_response();
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache, private"));
    r
}

pub async fn serve(st: &AppState, res: &'static ResourceInfo, ns: Option<String>, req: &Req) -> Result<Response, ApiError> {
    let (ls, fs) = selectors(req, res)?;
    let timeout = match req.q("timeoutSeconds") {
        Some(t) if !t.is_empty() => Duration::from_secs(t.parse::<u64>().map_err(|_| ApiError::bad_request(format!("invalid timeoutSeconds {t:?}")))?.min(86_400)),
        _ => DEFAULT_TIMEOUT,
    };
    let (bookmarks, send_initial) = watch_list_options(req)?;
    let from: Option<Revision> = match req.q("resourceVersion") {
        // Watch-list: the current state first, whatever revision it is "not older than".
        _ if send_initial => None,
        None | Some("") | Some("0") => None,
        Some(r) => Some(r.parse().map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {r:?}")))?),
    };
    // Bookmarks are for clients of JSON objects; kubectl's Table watches never ask.
    let bookmarks = bookmarks && !table::wants_table(req.accept());
    let filtered = !ls.is_empty() || !fs.is_empty();
    // Synthetic ADDED events when no revision was given. With selectors the list (at C)
    // also tells which objects matched just before any event after C. From a revision R
    // before C that says nothing about events in (R, C]: for those, each object's state
    // before the event is read from the history (see `membership`).
    let (initial, after, listed_at) = if from.is_none() || filtered {
        let page = list_objects(st, res, ns.as_deref(), &ls, &fs, 0, None).await?;
        let after = from.unwrap_or(page.rev);
        // A list older than the start (a resourceVersion from the future) misses events
        // this watch never sees: it cannot tell membership then.
        (page.items, after, (page.rev >= after).then_some(page.rev))
    } else {
        (Vec::new(), from.unwrap_or(0), None)
    };
    let mut enc = Encoder { res, table: table::wants_table(req.accept()), first: true };
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(64);
    let node = fs.exact("spec.nodeName").map(|n| if n.is_empty() { NodeFilter::Unscheduled } else { NodeFilter::Node(n) }).unwrap_or_default();
    let filter = subjects::event_filter(
        res.plural,
        &EventFilter { namespace: if res.namespaced { ns.as_deref() } else { None }, node: if res.plural == "pods" { node } else { NodeFilter::Any }, name: fs.exact("metadata.name") },
    );
    let events = match st.watches.watch(filter, after).await {
        Ok(s) => s,
        Err(BusError::Expired(rev)) => {
            let status = ApiError::expired(format!("too old resource version: {rev} ({rev})")).status_json();
            let _ = tx.try_send(enc.line("ERROR", &status));
            drop(tx);
            return Ok(streaming(rx));
        }
        Err(e) => return Err(ApiError::store(res, "", e)),
    };
    // The keys that matched the selectors after the last event of them this watch saw;
    // before its first one, whether the list had it (for events after the list).
    let mut matching: HashSet<String> = HashSet::new();
    let mut listed: HashSet<String> = HashSet::new();
    let mut first_lines = Vec::new();
    for obj in &initial {
        if let Ok(k) = object::key_of(res, obj) {
            listed.insert(k);
        }
        if from.is_none() {
            first_lines.push(enc.line("ADDED", obj));
        }
    }
    if send_initial {
        first_lines.push(enc.line("BOOKMARK", &bookmark(res, after, true)));
    }
    let stop = st.shutdown.clone();
    let bus = st.bus.clone();
    let prefix = keys::prefix(res.plural, if res.namespaced { ns.as_deref() } else { None });
    tokio::spawn(async move {
        for l in first_lines {
            if tx.send(l).await.is_err() {
                return;
            }
        }
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        tokio::pin!(events);
        // The revision every event up to which has been delivered (or skipped as not ours).
        let mut reached = after;
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + BOOKMARK_EVERY, BOOKMARK_EVERY);
        loop {
            let ev = tokio::select! {
                _ = &mut deadline => {
                    if bookmarks {
                        let _ = tx.send(enc.line("BOOKMARK", &bookmark(res, reached, false))).await;
                    }
                    return;
                }
                _ = stop.cancelled() => return,
                _ = tx.closed() => return,
                _ = tick.tick(), if bookmarks => {
                    if tx.send(enc.line("BOOKMARK", &bookmark(res, reached, false))).await.is_err() {
                        return;
                    }
                    continue;
                }
                ev = events.next() => ev,
            };
            let shared = match ev {
                None => return,
                Some(Ok(ev)) => ev,
                Some(Err(e)) => {
                    let status = match e {
                        BusError::Expired(rev) => ApiError::expired(format!("too old resource version: {rev} ({rev})")),
                        other => ApiError::internal(format!("the watch failed: {other}")),
                    };
                    let _ = tx.send(enc.line("ERROR", &status.status_json())).await;
                    return;
                }
            };
            let ev = &shared.ev;
            if !ev.key.starts_with(&prefix) {
                reached = reached.max(ev.rev);
                continue;
            }
            // A change this watch cannot read ends it, naming the revision: skipping it
            // (and bookmarking past it) would tell the client it had seen everything.
            let undecodable = |e: object::ObjectError| {
                tracing::warn!(key = %ev.key, rev = ev.rev, error = %e, "gateway: undecodable event ends the watch");
                ApiError::internal(format!("the event at revision {} cannot be decoded: {e}", ev.rev))
            };
            if !filtered && !enc.table {
                // Without selectors or tables every watcher of this resource sends the
                // same line: it is made once, by whichever watcher comes first.
                let key = std::ptr::from_ref(res) as usize;
                let line = shared.memo(key, |ev| {
                    let obj = super::objects::decode_stored(res, &Stored { key: ev.key.clone(), rev: ev.rev, value: ev.value.clone() })?;
                    Ok(enc.line(type_name(plain(ev.typ)), &obj))
                });
                reached = reached.max(ev.rev);
                match line {
                    Ok(l) => {
                        if tx.send(l).await.is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        let status = undecodable(e);
                        let _ = tx.send(enc.line("ERROR", &status.status_json())).await;
                        return;
                    }
                }
                continue;
            }
            let obj = match super::objects::decode_stored(res, &Stored { key: ev.key.clone(), rev: ev.rev, value: ev.value.clone() }) {
                Ok(v) => v,
                Err(e) => {
                    let status = undecodable(e);
                    let _ = tx.send(enc.line("ERROR", &status.status_json())).await;
                    return;
                }
            };
            let emit = if filtered {
                let was = if matching.contains(&ev.key) {
                    true
                } else if listed_at.is_some_and(|c| ev.rev > c) {
                    listed.contains(&ev.key)
                } else {
                    match super::membership::matched_before(&bus, res, ev, &obj, &ls, &fs).await {
                        Ok(b) => b,
                        Err(status) => {
                            let _ = tx.send(enc.line("ERROR", &status.status_json())).await;
                            return;
                        }
                    }
                };
                let now = ev.typ != EventType::Deleted && ls.matches(&obj) && fs.matches(&obj);
                // Only matches are kept: for a key not kept, a later event after the list
                // reads "not listed" (false), an earlier one its state from the history.
                listed.remove(&ev.key);
                if now {
                    matching.insert(ev.key.clone());
                } else {
                    matching.remove(&ev.key);
                }
                decide(ev.typ, was, now)
            } else {
                plain(ev.typ)
            };
            reached = reached.max(ev.rev);
            if emit == Emit::Skip {
                continue;
            }
            if tx.send(enc.line(type_name(emit), &obj)).await.is_err() {
                return;
            }
        }
    });
    Ok(streaming(rx))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selector_transitions() {
        assert_eq!(decide(EventType::Modified, true, false), Emit::Deleted);
        assert_eq!(decide(EventType::Modified, false, true), Emit::Added);
        assert_eq!(decide(EventType::Modified, true, true), Emit::Modified);
        assert_eq!(decide(EventType::Modified, false, false), Emit::Skip);
        assert_eq!(decide(EventType::Added, false, true), Emit::Added);
        assert_eq!(decide(EventType::Deleted, true, false), Emit::Deleted);
        assert_eq!(decide(EventType::Deleted, false, false), Emit::Skip);
    }

    #[test]
    fn bookmarks_carry_only_kind_and_revision() {
        let res = schema::registry::by_plural("", "v1", "pods").unwrap();
        assert_eq!(bookmark(res, 42, false), json!({"kind": "Pod", "apiVersion": "v1", "metadata": {"resourceVersion": "42"}}));
        assert_eq!(bookmark(res, 7, true)["metadata"]["annotations"]["k8s.io/initial-events-end"], "true");
    }

    #[test]
    fn table_events_carry_columns_once() {
        let res = schema::registry::by_plural("", "v1", "namespaces").unwrap();
        let mut enc = Encoder { res, table: true, first: true };
        let obj = json!({"metadata":{"name":"a"},"status":{"phase":"Active"}});
        let l1: Value = serde_json::from_slice(&enc.line("ADDED", &obj)).unwrap();
        let l2: Value = serde_json::from_slice(&enc.line("MODIFIED", &obj)).unwrap();
        assert_eq!(l1["object"]["kind"], "Table");
        assert!(l1["object"]["columnDefinitions"].is_array());
        assert!(l2["object"]["columnDefinitions"].is_null());
        assert_eq!(l2["object"]["rows"][0]["cells"][0], "a");
        let e: Value = serde_json::from_slice(&enc.line("ERROR", &json!({"kind":"Status"}))).unwrap();
        assert_eq!(e["object"]["kind"], "Status");
    }
}
