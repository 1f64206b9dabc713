//! The scheduling queue, after kube-scheduler's: pods ready to try now (active), pods
//! waiting out a backoff after a failed attempt, and pods that fit nowhere, which wait for
//! a cluster change that could help them (a node added or changed, capacity freed) and
//! are flushed back after five minutes regardless. Pure: the actor passes the clock in.

use k8s_openapi::api::core::v1::Pod;
use std::collections::{BTreeSet, HashMap};
use std::time::Duration;
use tokio::time::Instant;

/// kube-scheduler's podInitialBackoffSeconds and podMaxBackoffSeconds.
pub const INITIAL_BACKOFF: Duration = Duration::from_secs(1);
pub const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// kube-scheduler's podMaxInUnschedulablePodsDuration.
pub const MAX_UNSCHEDULABLE: Duration = Duration::from_secs(5 * 60);

#[derive(Debug, Clone, PartialEq)]
enum Where {
    Active,
    /// Being placed or bound right now.
    InFlight,
    Backoff,
    Unschedulable,
}

#[derive(Debug, Clone)]
struct Entry {
    pod: Pod,
    at: Where,
    attempts: u32,
    last_attempt: Option<Instant>,
    /// Its place in `active` while there.
    seq: u64,
}

#[derive(Debug, Default)]
pub struct SchedulingQueue {
    pods: HashMap<String, Entry>,
    /// Active keys in arrival order (a counter), so older pods go first.
    active: BTreeSet<(u64, String)>,
    seq: u64,
}

/// Whether a pod changed in a way worth a new attempt: its spec or labels, not its status
/// (the scheduler's own PodScheduled=False write must not wake the pod it describes).
fn changed_for_scheduling(old: &Pod, new: &Pod) -> bool {
    old.spec != new.spec || old.metadata.labels != new.metadata.labels || old.metadata.uid != new.metadata.uid
}

pub fn backoff(attempts: u32) -> Duration {
    let exp = attempts.saturating_sub(1).min(16);
    (INITIAL_BACKOFF * 2u32.pow(exp)).min(MAX_BACKOFF)
}

impl SchedulingQueue {
    fn activate(&mut self, key: &str) {
        if let Some(e) = self.pods.get_mut(key) {
            if e.at == Where::Active {
                return;
            }
            e.at = Where::Active;
            self.seq += 1;
            e.seq = self.seq;
            self.active.insert((self.seq, key.to_string()));
        }
    }

    fn deactivate(&mut self, key: &str) {
        if let Some(e) = self.pods.get(key) {
            self.active.remove(&(e.seq, key.to_string()));
        }
    }

    /// A pod waiting for a node, new or changed. Returns whether it became active.
    pub fn upsert(&mut self, key: &str, pod: Pod, now: Instant) -> bool {
        match self.pods.get_mut(key) {
            None => {
                self.pods.insert(key.to_string(), Entry { pod, at: Where::Backoff, attempts: 0, last_attempt: None, seq: 0 });
                self.activate(key);
                true
            }
            Some(e) => {
                let changed = changed_for_scheduling(&e.pod, &pod);
                e.pod = pod;
                if changed && e.at == Where::Unschedulable {
                    self.requeue(key, now);
                    return self.is_active(key);
                }
                false
            }
        }
    }

    pub fn remove(&mut self, key: &str) {
        self.deactivate(key);
        self.pods.remove(key);
    }

    pub fn contains(&self, key: &str) -> bool {
        self.pods.contains_key(key)
    }

    pub fn is_active(&self, key: &str) -> bool {
        self.pods.get(key).is_some_and(|e| e.at == Where::Active)
    }

    pub fn has_active(&self) -> bool {
        !self.active.is_empty()
    }

    pub fn len(&self) -> usize {
        self.pods.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pods.is_empty()
    }

    /// Takes every active pod, oldest first, for one scheduling pass.
    pub fn pop_active(&mut self, now: Instant) -> Vec<(String, Pod)> {
        let keys: Vec<String> = std::mem::take(&mut self.active).into_iter().map(|(_, k)| k).collect();
        keys.into_iter()
            .filter_map(|k| {
                let e = self.pods.get_mut(&k)?;
                e.at = Where::InFlight;
                e.attempts += 1;
                e.last_attempt = Some(now);
                Some((k, e.pod.clone()))
            })
            .collect()
    }

    /// The pod fits nowhere: it waits for a cluster change.
    pub fn unschedulable(&mut self, key: &str) {
        if let Some(e) = self.pods.get_mut(key) {
            e.at = Where::Unschedulable;
        }
    }

    /// Its binding failed: try again after a backoff.
    pub fn bind_failed(&mut self, key: &str, now: Instant) {
        if self.pods.contains_key(key) {
            self.requeue(key, now);
        }
    }

    /// Its binding landed: it leaves the queue.
    pub fn bound(&mut self, key: &str) {
        self.remove(key);
    }

    /// Back to active if its backoff has passed, else into backoff.
    fn requeue(&mut self, key: &str, now: Instant) {
        let Some(e) = self.pods.get_mut(key) else { return };
        let ready = e.last_attempt.map(|t| t + backoff(e.attempts) <= now).unwrap_or(true);
        if ready {
            self.activate(key);
        } else {
            e.at = Where::Backoff;
        }
    }

    /// A cluster change that may let waiting pods fit: every unschedulable pod goes back
    /// (through its backoff). Returns how many moved.
    pub fn move_unschedulable(&mut self, now: Instant) -> usize {
        let keys: Vec<String> = self.pods.iter().filter(|(_, e)| e.at == Where::Unschedulable).map(|(k, _)| k.clone()).collect();
        for k in &keys {
            self.requeue(k, now);
        }
        keys.len()
    }

    /// Moves pods whose backoff has passed to active, and pods unschedulable for longer
    /// than [`MAX_UNSCHEDULABLE`] back through their backoff.
    pub fn flush(&mut self, now: Instant) {
        let due: Vec<String> = self
            .pods
            .iter()
            .filter(|(_, e)| match e.at {
                Where::Backoff => e.last_attempt.map(|t| t + backoff(e.attempts) <= now).unwrap_or(true),
                Where::Unschedulable => e.last_attempt.map(|t| t + MAX_UNSCHEDULABLE <= now).unwrap_or(true),
                _ => false,
            })
            .map(|(k, _)| k.clone())
            .collect();
        for k in due {
            self.activate(&k);
        }
    }

    /// When `flush` next has something to do.
    pub fn next_wake(&self) -> Option<Instant> {
        self.pods
            .values()
            .filter_map(|e| match e.at {
                Where::Backoff => Some(e.last_attempt? + backoff(e.attempts)),
                Where::Unschedulable => Some(e.last_attempt? + MAX_UNSCHEDULABLE),
                _ => None,
            })
            .min()
    }

    pub fn keys(&self) -> Vec<String> {
        self.pods.keys().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str) -> Pod {
        serde_json::from_value(serde_json::json!({"metadata": {"name": name, "namespace": "demo", "uid": name}, "spec": {"containers": [{"name": "c"}]}})).unwrap()
    }

    #[test]
    fn backoff_doubles_to_ten_seconds() {
        assert_eq!(backoff(1), Duration::from_secs(1));
        assert_eq!(backoff(2), Duration::from_secs(2));
        assert_eq!(backoff(4), Duration::from_secs(8));
        assert_eq!(backoff(5), MAX_BACKOFF);
        assert_eq!(backoff(99), MAX_BACKOFF);
    }

    #[test]
    fn status_writes_do_not_wake_an_unschedulable_pod() {
        let t0 = Instant::now();
        let mut q = SchedulingQueue::default();
        assert!(q.upsert("demo/a", pod("a"), t0));
        assert_eq!(q.pop_active(t0).len(), 1);
        q.unschedulable("demo/a");
        let mut p = pod("a");
        p.status = Some(Default::default());
        assert!(!q.upsert("demo/a", p, t0 + Duration::from_secs(3)), "a status change is not a reason to retry");
        assert!(!q.has_active());
        let mut p = pod("a");
        p.metadata.labels = Some([("x".to_string(), "y".to_string())].into());
        assert!(q.upsert("demo/a", p, t0 + Duration::from_secs(3)), "a spec or label change is");
    }

    #[test]
    fn cluster_changes_requeue_through_backoff_and_flush_wakes_them() {
        let t0 = Instant::now();
        let mut q = SchedulingQueue::default();
        q.upsert("demo/a", pod("a"), t0);
        q.pop_active(t0);
        q.unschedulable("demo/a");
        assert_eq!(q.next_wake(), Some(t0 + MAX_UNSCHEDULABLE));
        assert_eq!(q.move_unschedulable(t0), 1);
        assert!(!q.has_active(), "still inside its 1 s backoff");
        assert_eq!(q.next_wake(), Some(t0 + INITIAL_BACKOFF));
        q.flush(t0 + INITIAL_BACKOFF);
        assert!(q.has_active());
        q.pop_active(t0 + INITIAL_BACKOFF);
        q.bind_failed("demo/a", t0 + INITIAL_BACKOFF);
        assert_eq!(q.next_wake(), Some(t0 + INITIAL_BACKOFF + backoff(2)));
        q.bound("demo/a");
        assert!(q.is_empty() && q.next_wake().is_none());
    }

    #[test]
    fn older_pods_go_first() {
        let t0 = Instant::now();
        let mut q = SchedulingQueue::default();
        q.upsert("demo/z", pod("z"), t0);
        q.upsert("demo/a", pod("a"), t0);
        let order: Vec<String> = q.pop_active(t0).into_iter().map(|(k, _)| k).collect();
        assert_eq!(order, vec!["demo/z".to_string(), "demo/a".to_string()]);
    }
}
