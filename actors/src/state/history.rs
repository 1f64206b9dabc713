//! Lists as of an earlier revision, for the later pages of a paged list: the `kv` table
//! holds only the newest state, so the state at revision `at` is rebuilt from the events
//! committed since (each names the object's revision before it, whose event holds that
//! state). When the events needed are trimmed the answer is `Compacted`, never a page
//! mixing two revisions.

use super::apply::KvEntry;
use super::store::{dec, get_in, EVENTS, KV, K_LAST_REV, META};
use redb::{Database, ReadableDatabase, ReadableTable};
use schema::store::{Event, EventType, Revision, StoreError, Stored};
use std::collections::BTreeMap;
use std::ops::Bound;

type Page = (Vec<Stored>, Revision, bool);

/// `store::list` as the store was at `at`: keys under `prefix` after `start_after`, in key
/// order, at most `limit` (0 = all), with whether more remained.
pub fn list_at(db: &Database, prefix: &str, start_after: Option<&str>, limit: u32, at: Revision) -> anyhow::Result<Result<Page, StoreError>> {
    let tx = db.begin_read()?;
    let last: Revision = get_in(&tx.open_table(META)?, K_LAST_REV)?.unwrap_or(0);
    if at > last {
        // A member that has not applied `at` yet (a serializable read): another may have.
        return Ok(Err(StoreError::Unavailable(format!("this member is at revision {last}, behind {at}"))));
    }
    let after = |k: &str| k.starts_with(prefix) && start_after.is_none_or(|s| k > s);
    // Each key changed since `at`, with its state at `at` (None: it did not exist then).
    let mut then: BTreeMap<String, Option<Stored>> = BTreeMap::new();
    if at < last {
        let events = tx.open_table(EVENTS)?;
        if events.first()?.is_none_or(|(k, _)| k.value() > at + 1) {
            return Ok(Err(StoreError::Compacted { rev: at }));
        }
        for item in events.range(at + 1..=last)? {
            let ev: Event = dec(item?.1.value())?;
            if !after(&ev.key) || then.contains_key(&ev.key) {
                continue;
            }
            let state = match (ev.typ, ev.prev) {
                (EventType::Added, _) => None,
                // A delete carries the value it removed: the state just before it.
                (EventType::Deleted, Some(prev)) => Some(Stored { key: ev.key.clone(), rev: prev, value: ev.value }),
                (EventType::Modified, Some(prev)) => match events.get(prev)? {
                    Some(v) => {
                        let before: Event = dec(v.value())?;
                        Some(Stored { key: ev.key.clone(), rev: prev, value: before.value })
                    }
                    None => return Ok(Err(StoreError::Compacted { rev: at })),
                },
                // Events from before they named the previous revision.
                (_, None) => return Ok(Err(StoreError::Compacted { rev: at })),
            };
            then.insert(ev.key, state);
        }
    }
    // Merge the unchanged keys of `kv` with the rebuilt ones, in key order.
    let kv = tx.open_table(KV)?;
    let start = match start_after {
        Some(s) if s >= prefix => Bound::Excluded(s),
        _ => Bound::Included(prefix),
    };
    let mut current = kv.range::<&str>((start, Bound::Unbounded))?;
    let mut rebuilt = then.into_values().flatten().peekable();
    let mut next_current = || -> anyhow::Result<Option<Stored>> {
        for item in current.by_ref() {
            let (k, v) = item?;
            let key = k.value();
            if !key.starts_with(prefix) {
                return Ok(None);
            }
            let e: KvEntry = dec(v.value())?;
            // Changed since `at`: its state then comes from `rebuilt` (or it did not exist).
            if e.rev > at {
                continue;
            }
            return Ok(Some(Stored { key: key.to_string(), rev: e.rev, value: e.value }));
        }
        Ok(None)
    };
    let mut items = Vec::new();
    let mut head = next_current()?;
    loop {
        let take_rebuilt = match (&head, rebuilt.peek()) {
            (None, None) => return Ok(Ok((items, at, false))),
            (Some(c), Some(r)) => r.key < c.key,
            (None, Some(_)) => true,
            (Some(_), None) => false,
        };
        if limit > 0 && items.len() >= limit as usize {
            return Ok(Ok((items, at, true)));
        }
        if take_rebuilt {
            items.extend(rebuilt.next());
        } else {
            items.extend(head.take());
            head = next_current()?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{apply, store, TypeConfig};
    use super::*;
    use openraft::{Entry, EntryPayload, LogId};
    use schema::store::WriteOp;
    use std::sync::atomic::{AtomicU64, Ordering};

    struct Tmp(std::path::PathBuf);
    impl Drop for Tmp {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn tmp_db() -> (Tmp, store::Db) {
        let dir = std::env::temp_dir().join(format!("flotilla-history-test-{}", uuid::Uuid::new_v4().simple()));
        let db = store::open(&dir.join("state.redb")).expect("open");
        (Tmp(dir), db)
    }

    /// Applies each write as its own Raft entry, as the state machine would.
    fn apply_ops(db: &Database, ops: Vec<WriteOp>) {
        static INDEX: AtomicU64 = AtomicU64::new(1);
        let entries: Vec<Entry<TypeConfig>> = ops
            .into_iter()
            .map(|op| {
                let index = INDEX.fetch_add(1, Ordering::SeqCst);
                let p = apply::Proposal { op, id: None, at_ms: index, trace: None, writer: None };
                Entry { log_id: LogId::new(openraft::CommittedLeaderId::new(1, 1), index), payload: EntryPayload::Normal(apply::Batch { proposals: vec![p] }) }
            })
            .collect();
        for answers in store::apply_batch(db, entries).expect("apply").0 {
            assert!(answers.iter().all(|a| a.is_ok()), "{answers:?}");
        }
    }

    fn put(k: &str, v: u8) -> WriteOp {
        WriteOp::Update { key: k.into(), subject: format!("ev.t._.{k}"), value: vec![v], expected_rev: None }
    }
    fn create(k: &str, v: u8) -> WriteOp {
        WriteOp::Create { key: k.into(), subject: format!("ev.t._.{k}"), value: vec![v] }
    }

    fn page(db: &Database, after: Option<&str>, limit: u32, at: Revision) -> Vec<(String, u8)> {
        let (items, rev, _) = list_at(db, "a/", after, limit, at).expect("read").expect("not compacted");
        assert_eq!(rev, at);
        items.into_iter().map(|s| (s.key, s.value[0])).collect()
    }

    #[test]
    fn a_later_page_sees_the_first_pages_revision() {
        let (_dir, db) = tmp_db();
        // rev 1..=3: a/1=1, a/2=2, a/3=3; then changes after revision 3.
        apply_ops(&db, vec![create("a/1", 1), create("a/2", 2), create("a/3", 3)]);
        apply_ops(&db, vec![put("a/2", 20), WriteOp::Delete { key: "a/3".into(), expected_rev: None }, create("a/0", 9), create("a/4", 4), put("a/1", 10)]);
        assert_eq!(page(&db, None, 0, 3), vec![("a/1".into(), 1), ("a/2".into(), 2), ("a/3".into(), 3)]);
        assert_eq!(page(&db, Some("a/1"), 1, 3), vec![("a/2".into(), 2)]);
        assert_eq!(page(&db, Some("a/2"), 0, 3), vec![("a/3".into(), 3)]);
        assert_eq!(page(&db, None, 0, 8), vec![("a/0".into(), 9), ("a/1".into(), 10), ("a/2".into(), 20), ("a/4".into(), 4)]);
        let (_, _, more) = list_at(&db, "a/", None, 2, 3).expect("read").expect("page");
        assert!(more);
        // Once the events after a revision are trimmed it cannot be rebuilt: Compacted.
        store::trim_events(&db, 4).expect("trim");
        assert_eq!(list_at(&db, "a/", None, 0, 3).expect("read"), Err(StoreError::Compacted { rev: 3 }));
        assert_eq!(list_at(&db, "a/", None, 0, 9).expect("read").map(|p| p.1), Err(StoreError::Unavailable("this member is at revision 8, behind 9".into())));
    }
}
