//! Expectations (kube's ControllerExpectations, by name): the creates and deletes a
//! controller has issued but not yet seen come back on its watch. While a key has any, its
//! pass does not create or delete again, so watch lag never causes a double create.

use std::collections::{HashMap, HashSet};
use std::time::Duration;
use tokio::time::Instant;

/// Expectations not lowered for this long are dropped (kube's ExpectationsTimeout): the
/// watch event was lost or a write failed without telling us, and the level-triggered pass
/// recounts from the cache. The clock starts at the last write issued for the key, not at
/// the start of its pass, so a pass that spends minutes in slow-start batches never
/// outlives its own expectations.
pub const TTL: Duration = Duration::from_secs(5 * 60);

#[derive(Debug, Clone)]
struct Pending {
    creates: HashSet<String>,
    deletes: HashSet<String>,
    at: Instant,
}

#[derive(Debug, Default)]
pub struct Expectations {
    by_key: HashMap<String, Pending>,
}

impl Expectations {
    /// Records the names a pass is about to create and delete for `key`.
    pub fn expect(&mut self, key: &str, creates: impl IntoIterator<Item = String>, deletes: impl IntoIterator<Item = String>, now: Instant) {
        let p = self.by_key.entry(key.to_string()).or_insert_with(|| Pending { creates: HashSet::new(), deletes: HashSet::new(), at: now });
        p.creates.extend(creates);
        p.deletes.extend(deletes);
        p.at = now;
        self.tidy(key);
    }

    /// Moves the expiry of `key`'s expectations to `now`: its writes are still being
    /// issued (a long pass), so what is still expected is not stale.
    pub fn touch(&mut self, key: &str, now: Instant) {
        if let Some(p) = self.by_key.get_mut(key) {
            p.at = now;
        }
    }

    /// A pod of `key` was seen: its create has landed.
    pub fn created(&mut self, key: &str, name: &str) {
        if let Some(p) = self.by_key.get_mut(key) {
            p.creates.remove(name);
        }
        self.tidy(key);
    }

    /// A pod of `key` was seen terminating or gone: its delete has landed.
    pub fn deleted(&mut self, key: &str, name: &str) {
        if let Some(p) = self.by_key.get_mut(key) {
            p.deletes.remove(name);
            // A pod created and deleted before we saw it: neither will be seen now.
            p.creates.remove(name);
        }
        self.tidy(key);
    }

    /// A write is known not to have happened (refused, or skipped by slow start): expect
    /// nothing for it. Writes whose outcome is unknown must not be lowered.
    pub fn lower(&mut self, key: &str, name: &str) {
        self.deleted(key, name);
    }

    /// Whether `key` may create or delete: nothing of its own is in flight (or it expired).
    pub fn satisfied(&self, key: &str, now: Instant) -> bool {
        match self.by_key.get(key) {
            None => true,
            Some(p) => now.saturating_duration_since(p.at) >= TTL || (p.creates.is_empty() && p.deletes.is_empty()),
        }
    }

    /// How many writes of `key` are still unseen: (creates, deletes).
    pub fn outstanding(&self, key: &str) -> (usize, usize) {
        self.by_key.get(key).map(|p| (p.creates.len(), p.deletes.len())).unwrap_or((0, 0))
    }

    pub fn forget(&mut self, key: &str) {
        self.by_key.remove(key);
    }

    fn tidy(&mut self, key: &str) {
        if self.by_key.get(key).is_some_and(|p| p.creates.is_empty() && p.deletes.is_empty()) {
            self.by_key.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsatisfied_until_every_write_is_seen() {
        let t0 = Instant::now();
        let mut e = Expectations::default();
        e.expect("demo/web", ["p1".to_string(), "p2".to_string()], ["old".to_string()], t0);
        assert!(!e.satisfied("demo/web", t0));
        e.created("demo/web", "p1");
        e.deleted("demo/web", "old");
        assert!(!e.satisfied("demo/web", t0), "p2 not seen yet");
        assert_eq!(e.outstanding("demo/web"), (1, 0));
        e.created("demo/web", "p2");
        assert!(e.satisfied("demo/web", t0));
        assert!(e.satisfied("demo/other", t0));
    }

    #[test]
    fn failed_writes_are_lowered_and_old_ones_expire() {
        let t0 = Instant::now();
        let mut e = Expectations::default();
        e.expect("k", ["p1".to_string()], [], t0);
        e.lower("k", "p1");
        assert!(e.satisfied("k", t0));
        e.expect("k", ["p2".to_string()], [], t0);
        assert!(!e.satisfied("k", t0 + TTL - Duration::from_secs(1)));
        assert!(e.satisfied("k", t0 + TTL));
    }

    #[test]
    fn a_long_pass_keeps_its_expectations_alive() {
        let t0 = Instant::now();
        let mut e = Expectations::default();
        e.expect("k", ["p1".to_string()], [], t0);
        // The pass is still issuing writes four minutes in; the clock restarts there.
        e.touch("k", t0 + Duration::from_secs(240));
        assert!(!e.satisfied("k", t0 + TTL + Duration::from_secs(1)));
        assert!(e.satisfied("k", t0 + Duration::from_secs(240) + TTL));
    }
}
