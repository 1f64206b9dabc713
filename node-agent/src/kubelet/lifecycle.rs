//! The pure part of the kubelet: a pod's life on this node as one explicit state machine,
//! `step(state, event) -> (state, commands)`. No processes, no clocks, no NATS: time comes
//! in with the events and the shell carries out the commands. Its status is in `status.rs`.

use jiff::Timestamp;
use std::time::Duration;

pub use super::status::{phase, pod_status, qos_class};

pub const INITIAL_BACKOFF: Duration = Duration::from_secs(1);
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// A container that ran this long without failing starts its back-off over.
pub const BACKOFF_RESET_AFTER: Duration = Duration::from_secs(600);
/// The kubelet's image pull back-off starts at 10 s (and doubles up to MAX_BACKOFF).
pub const INITIAL_PULL_BACKOFF: Duration = Duration::from_secs(10);
/// How long ErrImagePull shows before the pod's next sync shows ImagePullBackOff.
pub const PULL_RESYNC: Duration = Duration::from_secs(2);
/// How soon a container whose creation failed is tried again (the kubelet retries on its
/// next sync: an image removed between pull and create is pulled again).
pub const CREATE_RETRY: Duration = Duration::from_secs(5);
/// terminationGracePeriodSeconds when the pod says nothing.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, PartialEq)]
pub struct Terminated {
    pub exit_code: i32,
    pub reason: String,
    pub started_at: Timestamp,
    pub finished_at: Timestamp,
}

/// One container's state, as `containerStatuses[].state` shows it.
#[derive(Debug, Clone, PartialEq)]
pub enum State {
    Waiting { reason: String, message: Option<String> },
    /// `instance` numbers the kubelet's starts of this container: an exit names the
    /// instance it ended, so a late exit of a replaced one changes nothing.
    Running { instance: u64, started_at: Timestamp },
    Terminated(Terminated),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Container {
    pub name: String,
    pub image: String,
    pub state: State,
    pub restart_count: i32,
    pub last_state: Option<Terminated>,
    /// The wait before the next restart after a failure.
    pub backoff: Duration,
    /// The runtime's id of the newest instance (`containerd://…`, `flotilla://<pid>`).
    pub container_id: Option<String>,
    /// `imageID` of the newest instance.
    pub image_id: String,
    /// The wait before the next pull after a failed one.
    pub pull_backoff: Duration,
}

impl Container {
    pub fn new(name: &str, image: &str) -> Container {
        Container {
            name: name.into(),
            image: image.into(),
            state: State::Waiting { reason: "ContainerCreating".into(), message: None },
            restart_count: 0,
            last_state: None,
            backoff: INITIAL_BACKOFF,
            container_id: None,
            image_id: String::new(),
            pull_backoff: INITIAL_PULL_BACKOFF,
        }
    }

    pub fn running(&self) -> bool {
        matches!(self.state, State::Running { .. })
    }

    /// Records the end of the running `instance`; None when it is not the current one (an
    /// exit of an earlier one, already replaced, changes nothing).
    fn record_exit(&mut self, instance: u64, code: i32, at: Timestamp) -> Option<Terminated> {
        let State::Running { instance: current, started_at } = self.state else { return None };
        if current != instance {
            return None;
        }
        let t = Terminated { exit_code: code, reason: if code == 0 { "Completed".into() } else { "Error".into() }, started_at, finished_at: at };
        self.state = State::Terminated(t.clone());
        Some(t)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartPolicy {
    Always,
    OnFailure,
    Never,
}

impl RestartPolicy {
    pub fn parse(s: Option<&str>) -> RestartPolicy {
        match s {
            Some("OnFailure") => RestartPolicy::OnFailure,
            Some("Never") => RestartPolicy::Never,
            _ => RestartPolicy::Always,
        }
    }

    fn restarts(self, code: i32) -> bool {
        match self {
            RestartPolicy::Always => true,
            RestartPolicy::OnFailure => code != 0,
            RestartPolicy::Never => false,
        }
    }
}

/// Where the pod is in its life on this node.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Lifecycle {
    /// Containers start, run and restart as the restart policy says.
    Active,
    /// Deletion was asked: running containers get SIGTERM, SIGKILL after `grace`; nothing
    /// (re)starts.
    Terminating { grace: Duration },
    /// Every container has stopped and the pod's removal from the store was asked.
    Removing,
    /// The pod left the store (or this node): the shell forgets it.
    Gone,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PodState {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub policy: RestartPolicy,
    pub lifecycle: Lifecycle,
    pub containers: Vec<Container>,
}

impl PodState {
    pub fn new(namespace: &str, name: &str, uid: &str, policy: RestartPolicy, containers: Vec<Container>) -> PodState {
        PodState { namespace: namespace.into(), name: name.into(), uid: uid.into(), policy, lifecycle: Lifecycle::Active, containers }
    }

    fn any_running(&self) -> bool {
        self.containers.iter().any(Container::running)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The pod is bound to this node and not being deleted: start its containers.
    Admitted,
    /// The runtime started `instance` of container `idx` as `id`, from image `image_id`.
    Started { idx: usize, instance: u64, id: String, image_id: String, at: Timestamp },
    /// The container's image could not be pulled (`ErrImagePull`, the runtime's words).
    PullFailed { idx: usize, message: String },
    /// Absent with `imagePullPolicy: Never`.
    NeverPull { idx: usize, message: String },
    /// The runtime could not create it (no command, unknown runtime class …).
    CreateFailed { idx: usize, message: String },
    /// A source the container's environment names is missing; tried again later.
    ConfigFailed { idx: usize, message: String },
    Exited { idx: usize, instance: u64, code: i32, at: Timestamp },
    /// The back-off timer of container `idx` fired.
    BackoffElapsed { idx: usize },
    /// The pod has a deletionTimestamp: stop it within `grace`, then remove it.
    DeletionRequested { grace: Duration },
    /// The pod left the store (force-deleted) or is no longer bound here.
    Removed,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    Start { idx: usize },
    RestartAfter { idx: usize, after: Duration },
    /// Look at the image of container `idx` again after `after` (BackoffElapsed).
    PullBackoff { idx: usize, after: Duration },
    /// SIGTERM the container's process group, SIGKILL after `grace` (zero: at once).
    Stop { idx: usize, grace: Duration },
    /// Remove the pod object from the store (deletion finished).
    DeleteFromStore,
}

/// Stops every running container with `grace`.
fn stop_all(pod: &PodState, grace: Duration) -> Vec<Command> {
    pod.containers.iter().enumerate().filter(|(_, c)| c.running()).map(|(idx, _)| Command::Stop { idx, grace }).collect()
}

/// A terminating pod with nothing left running is finished: remove it from the store.
fn finish_if_stopped(mut pod: PodState, mut cmds: Vec<Command>) -> (PodState, Vec<Command>) {
    if matches!(pod.lifecycle, Lifecycle::Terminating { .. }) && !pod.any_running() {
        pod.lifecycle = Lifecycle::Removing;
        cmds.push(Command::DeleteFromStore);
    }
    (pod, cmds)
}

fn backoff_message(pod: &PodState, c: &Container, wait: Duration) -> String {
    format!("back-off {}s restarting failed container={} pod={}_{}({})", wait.as_secs(), c.name, pod.name, pod.namespace, pod.uid)
}

/// Advances the pod's state machine; returns the new state and what the shell must do.
pub fn step(mut pod: PodState, ev: Event) -> (PodState, Vec<Command>) {
    let lifecycle = pod.lifecycle;
    match (lifecycle, ev) {
        (Lifecycle::Active, Event::Admitted) => {
            let cmds = pod
                .containers
                .iter()
                .enumerate()
                .filter(|(_, c)| matches!(&c.state, State::Waiting { reason, .. } if reason == "ContainerCreating"))
                .map(|(idx, _)| Command::Start { idx })
                .collect();
            (pod, cmds)
        }
        (Lifecycle::Terminating { .. } | Lifecycle::Removing | Lifecycle::Gone, Event::Admitted) => (pod, vec![]),

        (_, Event::Started { idx, instance, id, image_id, at }) => {
            let Some(c) = pod.containers.get_mut(idx) else { return (pod, vec![]) };
            c.state = State::Running { instance, started_at: at };
            c.container_id = Some(id);
            c.image_id = image_id;
            c.pull_backoff = INITIAL_PULL_BACKOFF;
            let cmds = match lifecycle {
                Lifecycle::Active => vec![],
                // A start that raced with the deletion: stop it like the others.
                Lifecycle::Terminating { grace } => vec![Command::Stop { idx, grace }],
                Lifecycle::Removing | Lifecycle::Gone => vec![Command::Stop { idx, grace: Duration::ZERO }],
            };
            (pod, cmds)
        }

        (Lifecycle::Active, Event::CreateFailed { idx, message }) => {
            let Some(c) = pod.containers.get_mut(idx) else { return (pod, vec![]) };
            c.state = State::Waiting { reason: "CreateContainerError".into(), message: Some(message) };
            (pod, vec![Command::PullBackoff { idx, after: CREATE_RETRY }])
        }
        (_, Event::CreateFailed { idx, message }) => {
            if let Some(c) = pod.containers.get_mut(idx) {
                c.state = State::Waiting { reason: "CreateContainerError".into(), message: Some(message) };
            }
            finish_if_stopped(pod, vec![])
        }

        (Lifecycle::Active, Event::ConfigFailed { idx, message }) => {
            let Some(c) = pod.containers.get_mut(idx) else { return (pod, vec![]) };
            c.state = State::Waiting { reason: "CreateContainerConfigError".into(), message: Some(message) };
            (pod, vec![Command::PullBackoff { idx, after: CREATE_RETRY }])
        }
        (_, Event::ConfigFailed { idx, message }) => {
            if let Some(c) = pod.containers.get_mut(idx) {
                c.state = State::Waiting { reason: "CreateContainerConfigError".into(), message: Some(message) };
            }
            finish_if_stopped(pod, vec![])
        }

        (Lifecycle::Active, Event::PullFailed { idx, message }) => {
            let Some(c) = pod.containers.get_mut(idx) else { return (pod, vec![]) };
            c.state = State::Waiting { reason: "ErrImagePull".into(), message: Some(message) };
            // Shown as ErrImagePull until the next sync, then ImagePullBackOff while waiting.
            (pod, vec![Command::PullBackoff { idx, after: PULL_RESYNC }])
        }
        (Lifecycle::Active, Event::NeverPull { idx, message }) => {
            if let Some(c) = pod.containers.get_mut(idx) {
                c.state = State::Waiting { reason: "ErrImageNeverPull".into(), message: Some(message) };
            }
            (pod, vec![])
        }
        (Lifecycle::Terminating { .. } | Lifecycle::Removing | Lifecycle::Gone, Event::PullFailed { idx, message } | Event::NeverPull { idx, message }) => {
            if let Some(c) = pod.containers.get_mut(idx) {
                c.state = State::Waiting { reason: "ErrImagePull".into(), message: Some(message) };
            }
            finish_if_stopped(pod, vec![])
        }

        (Lifecycle::Active, Event::Exited { idx, instance, code, at }) => {
            let policy = pod.policy;
            let Some(c) = pod.containers.get_mut(idx) else { return (pod, vec![]) };
            let Some(t) = c.record_exit(instance, code, at) else { return (pod, vec![]) };
            if !policy.restarts(code) {
                return (pod, vec![]);
            }
            if at.duration_since(t.started_at).unsigned_abs() >= BACKOFF_RESET_AFTER {
                c.backoff = INITIAL_BACKOFF;
            }
            let wait = c.backoff;
            c.backoff = (c.backoff * 2).min(MAX_BACKOFF);
            c.last_state = Some(t);
            let snapshot = c.clone();
            let message = backoff_message(&pod, &snapshot, wait);
            if let Some(c) = pod.containers.get_mut(idx) {
                c.state = State::Waiting { reason: "CrashLoopBackOff".into(), message: Some(message) };
            }
            (pod, vec![Command::RestartAfter { idx, after: wait }])
        }
        (Lifecycle::Terminating { .. } | Lifecycle::Removing | Lifecycle::Gone, Event::Exited { idx, instance, code, at }) => {
            if let Some(c) = pod.containers.get_mut(idx) {
                c.record_exit(instance, code, at);
            }
            finish_if_stopped(pod, vec![])
        }

        (Lifecycle::Active, Event::BackoffElapsed { idx }) => {
            let Some(c) = pod.containers.get_mut(idx) else { return (pod, vec![]) };
            let reason = match &c.state {
                State::Waiting { reason, .. } => reason.clone(),
                _ => return (pod, vec![]),
            };
            match reason.as_str() {
                "CrashLoopBackOff" => {
                    c.restart_count += 1;
                    (pod, vec![Command::Start { idx }])
                }
                "ErrImagePull" => {
                    let wait = c.pull_backoff;
                    c.pull_backoff = (c.pull_backoff * 2).min(MAX_BACKOFF);
                    c.state = State::Waiting { reason: "ImagePullBackOff".into(), message: Some(crate::images::backoff_message(&c.image)) };
                    (pod, vec![Command::PullBackoff { idx, after: wait }])
                }
                "ImagePullBackOff" | "CreateContainerError" | "CreateContainerConfigError" => (pod, vec![Command::Start { idx }]),
                _ => (pod, vec![]),
            }
        }
        (Lifecycle::Terminating { .. } | Lifecycle::Removing | Lifecycle::Gone, Event::BackoffElapsed { .. }) => (pod, vec![]),

        (Lifecycle::Active, Event::DeletionRequested { grace }) => {
            pod.lifecycle = Lifecycle::Terminating { grace };
            let cmds = stop_all(&pod, grace);
            finish_if_stopped(pod, cmds)
        }
        // A shorter grace period (e.g. a second delete with --grace-period) takes over.
        (Lifecycle::Terminating { grace: current }, Event::DeletionRequested { grace }) if grace < current => {
            pod.lifecycle = Lifecycle::Terminating { grace };
            let cmds = stop_all(&pod, grace);
            (pod, cmds)
        }
        (Lifecycle::Terminating { .. }, Event::DeletionRequested { .. }) => (pod, vec![]),
        // Seen again while being removed: the earlier removal may have failed, ask again.
        (Lifecycle::Removing, Event::DeletionRequested { .. }) => (pod, vec![Command::DeleteFromStore]),
        (Lifecycle::Gone, Event::DeletionRequested { .. }) => (pod, vec![]),

        (Lifecycle::Active | Lifecycle::Terminating { .. } | Lifecycle::Removing, Event::Removed) => {
            pod.lifecycle = Lifecycle::Gone;
            let cmds = stop_all(&pod, Duration::ZERO);
            (pod, cmds)
        }
        (Lifecycle::Gone, Event::Removed) => (pod, vec![]),
    }
}

/// Builders shared by the lifecycle and status tests.
#[cfg(test)]
pub(crate) mod fixtures {
    use super::*;

    pub fn t(s: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + s).unwrap()
    }

    /// A pod "p" in "ns" with one container per name given.
    pub fn pod(policy: RestartPolicy, names: &[&str]) -> PodState {
        PodState::new("ns", "p", "u1", policy, names.iter().map(|n| Container::new(n, "busybox")).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::{pod, t};
    use super::*;

    /// Feeds events in order, returning the final state and every command issued.
    fn run(mut p: PodState, evs: Vec<Event>) -> (PodState, Vec<Command>) {
        let mut all = vec![];
        for ev in evs {
            let (next, cmds) = step(p, ev);
            p = next;
            all.extend(cmds);
        }
        (p, all)
    }

    fn waiting_reason(c: &Container) -> Option<&str> {
        match &c.state {
            State::Waiting { reason, .. } => Some(reason),
            _ => None,
        }
    }

    #[test]
    fn admission_starts_every_container() {
        let (p, cmds) = step(pod(RestartPolicy::Always, &["a", "b"]), Event::Admitted);
        assert_eq!(cmds, vec![Command::Start { idx: 0 }, Command::Start { idx: 1 }]);
        let (p, cmds) = step(p, Event::Started { idx: 0, instance: 10, id: format!("flotilla://{}", 10), image_id: String::new(), at: t(0) });
        assert!(cmds.is_empty());
        assert_eq!(p.containers[0].state, State::Running { instance: 10, started_at: t(0) });
        assert_eq!(p.containers[0].container_id.as_deref(), Some("flotilla://10"));
    }

    #[test]
    fn crash_restarts_with_growing_backoff() {
        let p = pod(RestartPolicy::Always, &["c"]);
        let (p, _) = run(p, vec![Event::Admitted, Event::Started { idx: 0, instance: 10, id: format!("flotilla://{}", 10), image_id: String::new(), at: t(0) }]);
        let (p, cmds) = step(p, Event::Exited { idx: 0, instance: 10, code: 137, at: t(5) });
        assert_eq!(cmds, vec![Command::RestartAfter { idx: 0, after: INITIAL_BACKOFF }]);
        assert_eq!(waiting_reason(&p.containers[0]), Some("CrashLoopBackOff"));
        let State::Waiting { message: Some(m), .. } = &p.containers[0].state else { panic!("waiting") };
        assert_eq!(m, "back-off 1s restarting failed container=c pod=p_ns(u1)");
        assert_eq!(p.containers[0].last_state.as_ref().map(|l| (l.exit_code, l.reason.as_str(), l.started_at, l.finished_at)), Some((137, "Error", t(0), t(5))));

        let (p, cmds) = step(p, Event::BackoffElapsed { idx: 0 });
        assert_eq!(cmds, vec![Command::Start { idx: 0 }]);
        assert_eq!(p.containers[0].restart_count, 1);

        // Each further crash doubles the wait, up to five minutes.
        let mut p = p;
        let mut waits = vec![];
        for i in 0..12 {
            let n = 11 + i;
            let (next, _) = step(p, Event::Started { idx: 0, instance: n, id: format!("flotilla://{n}"), image_id: String::new(), at: t(10 + i as i64) });
            let (next, cmds) = step(next, Event::Exited { idx: 0, instance: n, code: 1, at: t(11 + i as i64) });
            let [Command::RestartAfter { after, .. }] = cmds.as_slice() else { panic!("{cmds:?}") };
            waits.push(after.as_secs());
            let (next, _) = step(next, Event::BackoffElapsed { idx: 0 });
            p = next;
        }
        assert_eq!(waits, vec![2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300, 300]);
        assert_eq!(p.containers[0].restart_count, 13);
    }

    #[test]
    fn long_runs_reset_the_backoff() {
        let mut p = pod(RestartPolicy::Always, &["c"]);
        p.containers[0].backoff = Duration::from_secs(160);
        let (_, cmds) = run(p, vec![Event::Started { idx: 0, instance: 1, id: format!("flotilla://{}", 1), image_id: String::new(), at: t(0) }, Event::Exited { idx: 0, instance: 1, code: 1, at: t(700) }]);
        assert_eq!(cmds, vec![Command::RestartAfter { idx: 0, after: INITIAL_BACKOFF }]);
    }

    #[test]
    fn an_exit_of_a_replaced_instance_changes_nothing() {
        let p = pod(RestartPolicy::Always, &["c"]);
        let (p, _) = run(p, vec![Event::Started { idx: 0, instance: 1, id: format!("flotilla://{}", 1), image_id: String::new(), at: t(0) }]);
        let (q, cmds) = step(p.clone(), Event::Exited { idx: 0, instance: 99, code: 1, at: t(1) });
        assert!(cmds.is_empty());
        assert_eq!(q, p);
    }

    #[test]
    fn policies_decide_restarts() {
        for (policy, code, restarts) in
            [(RestartPolicy::Never, 1, false), (RestartPolicy::Never, 0, false), (RestartPolicy::OnFailure, 0, false), (RestartPolicy::OnFailure, 2, true), (RestartPolicy::Always, 0, true)]
        {
            let (p, cmds) = run(pod(policy, &["c"]), vec![Event::Started { idx: 0, instance: 1, id: format!("flotilla://{}", 1), image_id: String::new(), at: t(0) }, Event::Exited { idx: 0, instance: 1, code, at: t(1) }]);
            assert_eq!(!cmds.is_empty(), restarts, "{policy:?} exit {code}");
            if !restarts {
                assert!(matches!(&p.containers[0].state, State::Terminated(t) if t.exit_code == code));
            }
        }
    }

    #[test]
    fn a_failed_create_waits_with_its_reason() {
        let msg = "failed to create containerd task: container \"c\" has no command: host-process mode needs spec.containers[].command";
        let (p, cmds) = run(pod(RestartPolicy::Always, &["c"]), vec![Event::Admitted, Event::CreateFailed { idx: 0, message: msg.into() }]);
        assert_eq!(cmds, vec![Command::Start { idx: 0 }, Command::PullBackoff { idx: 0, after: CREATE_RETRY }]);
        assert_eq!(p.containers[0].state, State::Waiting { reason: "CreateContainerError".into(), message: Some(msg.into()) });
        assert_eq!(p.lifecycle, Lifecycle::Active);
    }

    #[test]
    fn a_missing_env_source_waits_as_create_container_config_error_and_is_tried_again() {
        let msg = "couldn't find key nope in ConfigMap default/cfg";
        let (p, cmds) = run(pod(RestartPolicy::Always, &["c"]), vec![Event::Admitted, Event::ConfigFailed { idx: 0, message: msg.into() }]);
        assert_eq!(cmds, vec![Command::Start { idx: 0 }, Command::PullBackoff { idx: 0, after: CREATE_RETRY }]);
        assert_eq!(p.containers[0].state, State::Waiting { reason: "CreateContainerConfigError".into(), message: Some(msg.into()) });
        let (_, cmds) = step(p, Event::BackoffElapsed { idx: 0 });
        assert_eq!(cmds, vec![Command::Start { idx: 0 }]);
    }

    #[test]
    fn a_failed_pull_shows_err_image_pull_then_backs_off() {
        let p = pod(RestartPolicy::Always, &["c"]);
        let msg = "rpc error: code = NotFound desc = failed to pull and unpack image \"docker.io/library/nope:latest\"";
        let (p, cmds) = run(p, vec![Event::Admitted, Event::PullFailed { idx: 0, message: msg.into() }]);
        assert_eq!(cmds, vec![Command::Start { idx: 0 }, Command::PullBackoff { idx: 0, after: PULL_RESYNC }]);
        assert_eq!(p.containers[0].state, State::Waiting { reason: "ErrImagePull".into(), message: Some(msg.into()) });
        let (p, cmds) = step(p, Event::BackoffElapsed { idx: 0 });
        assert_eq!(cmds, vec![Command::PullBackoff { idx: 0, after: INITIAL_PULL_BACKOFF }]);
        assert_eq!(p.containers[0].state, State::Waiting { reason: "ImagePullBackOff".into(), message: Some("Back-off pulling image \"busybox\"".into()) });
        let (p, cmds) = step(p, Event::BackoffElapsed { idx: 0 });
        assert_eq!(cmds, vec![Command::Start { idx: 0 }]);
        // The next failure waits twice as long; restarts are not counted for pulls.
        let (p, _) = run(p, vec![Event::PullFailed { idx: 0, message: msg.into() }]);
        let (p, cmds) = step(p, Event::BackoffElapsed { idx: 0 });
        assert_eq!(cmds, vec![Command::PullBackoff { idx: 0, after: INITIAL_PULL_BACKOFF * 2 }]);
        assert_eq!(p.containers[0].restart_count, 0);
        assert_eq!(crate::kubelet::status::phase(&p.containers, p.policy), "Pending");
    }

    #[test]
    fn deletion_stops_then_removes_from_the_store() {
        let grace = Duration::from_secs(30);
        let (p, _) = run(pod(RestartPolicy::Always, &["a", "b"]), vec![Event::Admitted, Event::Started { idx: 0, instance: 1, id: format!("flotilla://{}", 1), image_id: String::new(), at: t(0) }, Event::Started { idx: 1, instance: 2, id: format!("flotilla://{}", 2), image_id: String::new(), at: t(0) }]);
        let (p, cmds) = step(p, Event::DeletionRequested { grace });
        assert_eq!(cmds, vec![Command::Stop { idx: 0, grace }, Command::Stop { idx: 1, grace }]);
        assert_eq!(p.lifecycle, Lifecycle::Terminating { grace });

        // The first exit neither restarts nor finishes the pod.
        let (p, cmds) = step(p, Event::Exited { idx: 0, instance: 1, code: 143, at: t(3) });
        assert!(cmds.is_empty());
        let (p, cmds) = step(p, Event::BackoffElapsed { idx: 0 });
        assert!(cmds.is_empty());
        // The last one does: the pod is deleted from the store.
        let (p, cmds) = step(p, Event::Exited { idx: 1, instance: 2, code: 137, at: t(30) });
        assert_eq!(cmds, vec![Command::DeleteFromStore]);
        assert_eq!(p.lifecycle, Lifecycle::Removing);
        // Seen again before the store's delete event: ask again; then forget it.
        let (p, cmds) = step(p, Event::DeletionRequested { grace });
        assert_eq!(cmds, vec![Command::DeleteFromStore]);
        let (p, cmds) = step(p, Event::Removed);
        assert!(cmds.is_empty());
        assert_eq!(p.lifecycle, Lifecycle::Gone);
    }

    #[test]
    fn a_pod_with_nothing_running_is_removed_at_once() {
        let (p, cmds) = run(
            pod(RestartPolicy::Always, &["c"]),
            vec![Event::Admitted, Event::CreateFailed { idx: 0, message: "no command".into() }, Event::DeletionRequested { grace: DEFAULT_GRACE }],
        );
        assert_eq!(cmds, vec![Command::Start { idx: 0 }, Command::PullBackoff { idx: 0, after: CREATE_RETRY }, Command::DeleteFromStore]);
        assert_eq!(p.lifecycle, Lifecycle::Removing);
    }

    #[test]
    fn a_shorter_grace_takes_over() {
        let (p, _) = run(pod(RestartPolicy::Always, &["c"]), vec![Event::Started { idx: 0, instance: 1, id: format!("flotilla://{}", 1), image_id: String::new(), at: t(0) }, Event::DeletionRequested { grace: DEFAULT_GRACE }]);
        let (p, cmds) = step(p, Event::DeletionRequested { grace: Duration::from_secs(60) });
        assert!(cmds.is_empty());
        let (_, cmds) = step(p, Event::DeletionRequested { grace: Duration::ZERO });
        assert_eq!(cmds, vec![Command::Stop { idx: 0, grace: Duration::ZERO }]);
    }

    #[test]
    fn force_deletion_kills_at_once() {
        let (p, _) = run(pod(RestartPolicy::Always, &["c"]), vec![Event::Started { idx: 0, instance: 1, id: format!("flotilla://{}", 1), image_id: String::new(), at: t(0) }]);
        let (p, cmds) = step(p, Event::Removed);
        assert_eq!(cmds, vec![Command::Stop { idx: 0, grace: Duration::ZERO }]);
        assert_eq!(p.lifecycle, Lifecycle::Gone);
        // Its exit, and a pending restart timer, do nothing any more.
        let (p, cmds) = step(p, Event::Exited { idx: 0, instance: 1, code: 137, at: t(1) });
        assert!(cmds.is_empty());
        let (_, cmds) = step(p, Event::BackoffElapsed { idx: 0 });
        assert!(cmds.is_empty());
    }

    #[test]
    fn a_crash_looping_container_does_not_restart_while_terminating() {
        let (p, _) = run(pod(RestartPolicy::Always, &["c"]), vec![Event::Started { idx: 0, instance: 1, id: format!("flotilla://{}", 1), image_id: String::new(), at: t(0) }, Event::Exited { idx: 0, instance: 1, code: 1, at: t(1) }]);
        let (p, cmds) = step(p, Event::DeletionRequested { grace: DEFAULT_GRACE });
        assert_eq!(cmds, vec![Command::DeleteFromStore], "nothing runs: removed at once");
        let (_, cmds) = step(p, Event::BackoffElapsed { idx: 0 });
        assert!(cmds.is_empty());
    }

    #[test]
    fn unknown_indexes_are_ignored() {
        let p = pod(RestartPolicy::Always, &["c"]);
        for ev in [Event::Started { idx: 5, instance: 1, id: format!("flotilla://{}", 1), image_id: String::new(), at: t(0) }, Event::Exited { idx: 5, instance: 1, code: 0, at: t(0) }, Event::BackoffElapsed { idx: 5 }, Event::CreateFailed { idx: 5, message: "x".into() }] {
            let (q, cmds) = step(p.clone(), ev);
            assert!(cmds.is_empty());
            assert_eq!(q, p);
        }
    }
}
