//! One container as the kubelet's state machine sees it: its state as
//! `containerStatuses[].state` shows it, its role in the pod (init, sidecar, main), the
//! probes it declares and their verdicts, its restart count and back-off.

use super::lifecycle::INITIAL_PULL_BACKOFF;
use jiff::Timestamp;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq)]
pub struct Terminated {
    pub exit_code: i32,
    pub reason: String,
    /// The termination message (terminationMessagePath, or the log's tail on error).
    pub message: Option<String>,
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

/// What a container is to its pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Runs to completion before the next one starts.
    Init,
    /// An init container with `restartPolicy: Always`: started in order, kept running
    /// beside the main containers, stopped after them.
    Sidecar,
    Main,
}

/// Which probes a container declares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Probes {
    pub readiness: bool,
    pub liveness: bool,
    pub startup: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeKind {
    Readiness,
    Liveness,
    Startup,
}

/// Why the kubelet kills a running container (it restarts as its policy says).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KillWhy {
    Liveness,
    Startup,
    PostStartHook,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Container {
    pub name: String,
    pub image: String,
    pub role: Role,
    pub probes: Probes,
    pub state: State,
    pub restart_count: i32,
    pub last_state: Option<Terminated>,
    /// The wait before the next restart after a failure; zero: the next restart is at once.
    pub backoff: Duration,
    /// The runtime's id of the newest instance (`containerd://…`, `flotilla://<pid>`).
    pub container_id: Option<String>,
    /// `imageID` of the newest instance.
    pub image_id: String,
    /// The wait before the next pull after a failed one.
    pub pull_backoff: Duration,
    /// A start was asked and its answer has not come.
    pub starting: bool,
    /// The running instance was told to stop (or killed): not stopped twice.
    pub stopping: bool,
    /// A restart timer runs for it.
    pub restart_pending: bool,
    /// The readiness probe's latest verdict for the running instance.
    pub ready: bool,
    /// The startup probe succeeded for the running instance.
    pub startup_passed: bool,
}

impl Container {
    pub fn new(name: &str, image: &str) -> Container {
        Container::with_role(name, image, Role::Main, Probes::default())
    }

    pub fn with_role(name: &str, image: &str, role: Role, probes: Probes) -> Container {
        Container {
            name: name.into(),
            image: image.into(),
            role,
            probes,
            state: State::Waiting { reason: "ContainerCreating".into(), message: None },
            restart_count: 0,
            last_state: None,
            backoff: Duration::ZERO,
            container_id: None,
            image_id: String::new(),
            pull_backoff: INITIAL_PULL_BACKOFF,
            starting: false,
            stopping: false,
            restart_pending: false,
            ready: false,
            startup_passed: false,
        }
    }

    pub fn running(&self) -> bool {
        matches!(self.state, State::Running { .. })
    }

    /// `containerStatuses[].started`: running and past its startup probe.
    pub fn started(&self) -> bool {
        self.running() && (!self.probes.startup || self.startup_passed)
    }

    /// `containerStatuses[].ready`: started and, with a readiness probe, passing it.
    pub fn is_ready(&self) -> bool {
        self.started() && (!self.probes.readiness || self.ready)
    }

    pub(super) fn completed(&self) -> bool {
        matches!(&self.state, State::Terminated(t) if t.exit_code == 0) && !self.restart_pending
    }

    /// Never started, and no start asked: the next one to start when its turn comes.
    pub(super) fn fresh(&self) -> bool {
        !self.starting && matches!(&self.state, State::Waiting { reason, .. } if reason == "ContainerCreating" || reason == "PodInitializing")
    }

    pub(super) fn instance(&self) -> Option<u64> {
        match self.state {
            State::Running { instance, .. } => Some(instance),
            _ => None,
        }
    }

    /// Records the end of the running `instance`; None when it is not the current one (an
    /// exit of an earlier one, already replaced, changes nothing).
    pub(super) fn record_exit(&mut self, instance: u64, exit: &ExitDetail, at: Timestamp) -> Option<Terminated> {
        let State::Running { instance: current, started_at } = self.state else { return None };
        if current != instance {
            return None;
        }
        let reason = match exit.code {
            _ if exit.oom => "OOMKilled",
            0 => "Completed",
            _ => "Error",
        };
        let t = Terminated { exit_code: exit.code, reason: reason.into(), message: exit.message.clone(), started_at, finished_at: at };
        self.state = State::Terminated(t.clone());
        self.stopping = false;
        self.ready = false;
        self.startup_passed = false;
        Some(t)
    }
}

/// How a container ended, beyond its code.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ExitDetail {
    pub code: i32,
    /// The runtime said the cgroup's OOM killer ended it.
    pub oom: bool,
    pub message: Option<String>,
}

