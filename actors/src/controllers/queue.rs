//! The controllers' work queue: keys, deduplicated, each reconciled by one pass at a time;
//! a key changed while its pass runs is queued again for after it (kube's workqueue).

use std::collections::{BTreeSet, HashSet};

#[derive(Default, Debug)]
pub struct WorkQueue {
    dirty: BTreeSet<String>,
    busy: HashSet<String>,
    again: HashSet<String>,
    /// A "process the queue" message is already on its way to the actor.
    armed: bool,
}

impl WorkQueue {
    pub fn add(&mut self, key: String) {
        if self.busy.contains(&key) {
            self.again.insert(key);
        } else {
            self.dirty.insert(key);
        }
    }

    /// Takes every queued key that is not being reconciled now.
    pub fn take(&mut self) -> Vec<String> {
        let keys: Vec<String> = std::mem::take(&mut self.dirty).into_iter().collect();
        for k in &keys {
            self.busy.insert(k.clone());
        }
        keys
    }

    pub fn done(&mut self, key: &str) {
        self.busy.remove(key);
        if self.again.remove(key) {
            self.dirty.insert(key.to_string());
        }
    }

    pub fn is_empty(&self) -> bool {
        self.dirty.is_empty()
    }

    /// True when the actor should send itself a "process" message now: there is work and
    /// no such message is pending. Coalesces bursts of events into one pass.
    pub fn arm(&mut self) -> bool {
        if self.armed || self.dirty.is_empty() {
            return false;
        }
        self.armed = true;
        true
    }

    /// Takes every queued key not being reconciled now, for the pass that `arm` asked for.
    pub fn take_armed(&mut self) -> Vec<String> {
        self.armed = false;
        self.take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_never_worked_twice_at_once() {
        let mut q = WorkQueue::default();
        q.add("a".into());
        q.add("a".into());
        assert_eq!(q.take(), vec!["a".to_string()]);
        q.add("a".into());
        assert!(q.take().is_empty(), "a is busy");
        q.done("a");
        assert_eq!(q.take(), vec!["a".to_string()]);
    }

    #[test]
    fn a_burst_of_events_arms_one_pass() {
        let mut q = WorkQueue::default();
        assert!(!q.arm(), "nothing to do");
        q.add("a".into());
        assert!(q.arm());
        q.add("b".into());
        assert!(!q.arm(), "a pass is already on its way");
        assert_eq!(q.take_armed(), vec!["a".to_string(), "b".to_string()]);
        q.add("c".into());
        assert!(q.arm());
    }
}
