//! One watch on the events stream shared by every watcher of the same filter in a
//! process (a watch cache, as kube-apiserver's cacher is): 10,000 watchers of a resource
//! cost one JetStream consumer and one decode per event instead of 10,000 of each.
//! Sharing must not change what a watcher sees (design.md, "Watch semantics"): each still
//! gets exactly the events after its own start revision, in order, once. A watcher the
//! shared window cannot serve (a start older than the window), one that falls behind, or
//! one whose shared watch ended, goes on with a watch of its own from the last revision
//! it was given, which then tells it any Expired or Undecodable itself.

use crate::{Bus, BusError};
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use schema::store::{Event, Revision};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use tokio::sync::{broadcast, Notify};

/// Events each shared watch keeps for watchers that join at an older revision.
pub const WINDOW: usize = 1024;
/// Events a watcher may trail the shared watch by before it is moved to its own.
const LAG: usize = 4096;

/// One event as every watcher of it sees it, with room for encodings of it computed
/// once for all of them (the gateway's JSON line).
#[derive(Debug)]
pub struct Shared {
    pub ev: Event,
    memo: Mutex<Vec<(usize, Bytes)>>,
}

impl Shared {
    pub fn new(ev: Event) -> Shared {
        Shared { ev, memo: Mutex::new(Vec::new()) }
    }

    /// The encoding named `key` (an address the caller owns, e.g. its `&'static`
    /// resource's), made by `make` the first time and shared afterwards; errors are not
    /// kept, so each caller meets its own.
    pub fn memo<E>(&self, key: usize, make: impl FnOnce(&Event) -> Result<Bytes, E>) -> Result<Bytes, E> {
        if let Some((_, b)) = self.memo.lock().unwrap_or_else(|p| p.into_inner()).iter().find(|(k, _)| *k == key) {
            return Ok(b.clone());
        }
        // Made outside the lock: two watchers may both make it once, never wait on it.
        let b = make(&self.ev)?;
        let mut m = self.memo.lock().unwrap_or_else(|p| p.into_inner());
        if !m.iter().any(|(k, _)| *k == key) {
            m.push((key, b.clone()));
        }
        Ok(b)
    }
}

/// Whether a watcher starting after `after` can be served from a window that holds every
/// event of its filter after `covered_after`.
pub fn joinable(covered_after: Revision, after: Revision) -> bool {
    after >= covered_after
}

/// Pushes `ev` onto the window, dropping the oldest beyond `cap`; returns the revision
/// the window now covers from (every event after it is held or still to come).
fn push_window(window: &mut VecDeque<Arc<Shared>>, covered_after: Revision, ev: Arc<Shared>, cap: usize) -> Revision {
    window.push_back(ev);
    let mut covered = covered_after;
    while window.len() > cap {
        if let Some(old) = window.pop_front() {
            covered = old.ev.rev;
        }
    }
    covered
}

struct HubState {
    window: VecDeque<Arc<Shared>>,
    covered_after: Revision,
    watchers: usize,
    /// The shared watch has ended: new watchers open their own.
    done: bool,
}

struct Hub {
    state: Mutex<HubState>,
    tx: broadcast::Sender<Arc<Shared>>,
    /// Woken when the last watcher leaves.
    idle: Notify,
}

impl Hub {
    fn lock(&self) -> std::sync::MutexGuard<'_, HubState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Counts a watcher on its hub while it lives.
struct Joined(Arc<Hub>);

impl Drop for Joined {
    fn drop(&mut self) {
        let mut s = self.0.lock();
        s.watchers -= 1;
        if s.watchers == 0 {
            self.0.idle.notify_one();
        }
    }
}

/// The shared watches of one bus connection, by filter.
#[derive(Clone)]
pub struct Fanout {
    bus: Bus,
    hubs: Arc<tokio::sync::Mutex<HashMap<String, Arc<Hub>>>>,
}

enum Source {
    Hub { backlog: VecDeque<Arc<Shared>>, rx: broadcast::Receiver<Arc<Shared>>, _joined: Joined },
    Own(BoxStream<'static, Result<Event, BusError>>),
    Done,
}

struct Watcher {
    bus: Bus,
    filter: String,
    last: Revision,
    src: Source,
}

impl Watcher {
    async fn next(&mut self) -> Option<Result<Arc<Shared>, BusError>> {
        loop {
            match &mut self.src {
                Source::Hub { backlog, rx, .. } => {
                    let item = match backlog.pop_front() {
                        Some(s) => s,
                        None => match rx.recv().await {
                            Ok(s) => s,
                            // Behind by more than the channel holds, or the shared watch is
                            // over: from here on a watch of its own, from what it was given.
                            Err(_) => {
                                self.src = match self.bus.watch(self.filter.clone(), self.last).await {
                                    Ok(s) => Source::Own(s.boxed()),
                                    Err(e) => {
                                        self.src = Source::Done;
                                        return Some(Err(e));
                                    }
                                };
                                continue;
                            }
                        },
                    };
                    if item.ev.rev <= self.last {
                        continue;
                    }
                    self.last = item.ev.rev;
                    return Some(Ok(item));
                }
                Source::Own(s) => {
                    return match s.next().await {
                        Some(Ok(ev)) => {
                            self.last = ev.rev;
                            Some(Ok(Arc::new(Shared::new(ev))))
                        }
                        Some(Err(e)) => {
                            self.src = Source::Done;
                            Some(Err(e))
                        }
                        None => None,
                    };
                }
                Source::Done => return None,
            }
        }
    }
}

impl Fanout {
    pub fn new(bus: Bus) -> Fanout {
        Fanout { bus, hubs: Default::default() }
    }

    /// As `Bus::watch`: every event matching `filter` after `after`, in revision order,
    /// each once; shared with the other watchers of `filter` where the shared window
    /// reaches back to `after`.
    pub async fn watch(&self, filter: String, after: Revision) -> Result<impl Stream<Item = Result<Arc<Shared>, BusError>> + Send + Unpin + 'static, BusError> {
        let src = self.join(&filter, after).await?;
        let w = Watcher { bus: self.bus.clone(), filter, last: after, src };
        Ok(futures::stream::unfold(w, |mut w| async move { w.next().await.map(|item| (item, w)) }).boxed())
    }

    /// Watches served by shared watches now (for metrics and tests).
    pub async fn shared_watches(&self) -> usize {
        self.hubs.lock().await.len()
    }

    async fn join(&self, filter: &str, after: Revision) -> Result<Source, BusError> {
        let mut hubs = self.hubs.lock().await;
        // Decided in a block of its own: the hub's lock must not be held across an await.
        let joined = hubs.get(filter).and_then(|hub| {
            let mut s = hub.lock();
            if s.done {
                return None;
            }
            if !joinable(s.covered_after, after) {
                return Some(None);
            }
            // Under the hub's lock no event is pushed: the backlog and the channel
            // together hold every event after `after` exactly once.
            let rx = hub.tx.subscribe();
            let backlog: VecDeque<_> = s.window.iter().filter(|e| e.ev.rev > after).cloned().collect();
            s.watchers += 1;
            Some(Some(Source::Hub { backlog, rx, _joined: Joined(hub.clone()) }))
        });
        match joined {
            Some(Some(src)) => return Ok(src),
            // Older than the shared window reaches: a watch of its own.
            Some(None) => {
                drop(hubs);
                return Ok(Source::Own(self.bus.watch(filter.to_string(), after).await?.boxed()));
            }
            None => {}
        }
        let events = self.bus.watch(filter.to_string(), after).await?;
        let (tx, rx) = broadcast::channel(LAG);
        let hub = Arc::new(Hub {
            state: Mutex::new(HubState { window: VecDeque::new(), covered_after: after, watchers: 1, done: false }),
            tx,
            idle: Notify::new(),
        });
        hubs.insert(filter.to_string(), hub.clone());
        tokio::spawn(pump(self.hubs.clone(), filter.to_string(), hub.clone(), events.boxed()));
        Ok(Source::Hub { backlog: VecDeque::new(), rx, _joined: Joined(hub) })
    }
}

/// Feeds one shared watch's events to its watchers until the last leaves or the watch
/// ends; dropping the bus watch then deletes its consumer.
async fn pump(hubs: Arc<tokio::sync::Mutex<HashMap<String, Arc<Hub>>>>, filter: String, hub: Arc<Hub>, mut events: BoxStream<'static, Result<Event, BusError>>) {
    loop {
        tokio::select! {
            _ = hub.idle.notified() => {
                let mut map = hubs.lock().await;
                let mut s = hub.lock();
                // A watcher may have joined between the notice and the locks.
                if s.watchers == 0 {
                    s.done = true;
                    if map.get(&filter).is_some_and(|h| Arc::ptr_eq(h, &hub)) {
                        map.remove(&filter);
                    }
                    return;
                }
            }
            ev = events.next() => match ev {
                Some(Ok(ev)) => {
                    let shared = Arc::new(Shared::new(ev));
                    let mut guard = hub.lock();
                    let s = &mut *guard;
                    s.covered_after = push_window(&mut s.window, s.covered_after, shared.clone(), WINDOW);
                    let _ = hub.tx.send(shared);
                }
                // Each watcher reopens on its own from its last revision and meets the
                // error (or not) there.
                Some(Err(_)) | None => {
                    let mut map = hubs.lock().await;
                    hub.lock().done = true;
                    if map.get(&filter).is_some_and(|h| Arc::ptr_eq(h, &hub)) {
                        map.remove(&filter);
                    }
                    return;
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use schema::store::EventType;

    fn ev(rev: Revision) -> Arc<Shared> {
        Arc::new(Shared::new(Event { rev, typ: EventType::Modified, key: "k".into(), subject: "ev.x._.k".into(), value: vec![], prev: None }))
    }

    #[test]
    fn the_window_covers_from_the_last_event_it_dropped() {
        let mut w = VecDeque::new();
        let mut covered = 10;
        for rev in [12, 15, 16] {
            covered = push_window(&mut w, covered, ev(rev), 2);
        }
        assert_eq!(covered, 12);
        assert_eq!(w.iter().map(|e| e.ev.rev).collect::<Vec<_>>(), vec![15, 16]);
        // Revision 12 is gone: a watcher after 11 would miss it, one after 12 would not.
        assert!(!joinable(covered, 11));
        assert!(joinable(covered, 12));
        assert!(joinable(covered, 40));
    }

    #[test]
    fn an_encoding_is_made_once_per_key() {
        let s = ev(3);
        let mut made = 0;
        for _ in 0..3 {
            let b = s.memo::<()>(1, |e| {
                made += 1;
                Ok(Bytes::from(e.rev.to_string()))
            });
            assert_eq!(b, Ok(Bytes::from_static(b"3")));
        }
        assert_eq!(made, 1);
        assert_eq!(s.memo::<()>(2, |_| Ok(Bytes::from_static(b"other"))), Ok(Bytes::from_static(b"other")));
        assert_eq!(s.memo(3, |_| Err("bad")), Err("bad"));
        assert_eq!(s.memo::<()>(3, |_| Ok(Bytes::from_static(b"later"))), Ok(Bytes::from_static(b"later")));
    }
}
