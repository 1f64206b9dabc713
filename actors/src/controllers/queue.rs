//! The controllers' work queue: keys, deduplicated, each reconciled by one pass at a time;
//! a key changed while its pass runs is queued again for after it (kube's workqueue).

use std::collections::{BTreeSet, HashSet};

#[derive(Default, Debug)]
pub struct WorkQueue {
    dirty: BTreeSet<String>,
    busy: HashSet<String>,
    again: HashSet<String>,
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
}
