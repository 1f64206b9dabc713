//! The pure part of the kubelet: a pod's life on this node as one explicit state machine,
//! `step(state, event) -> (state, commands)`. No processes, no clocks, no NATS: time comes
//! in with the events and the shell carries out the commands. Its status is in `status.rs`.
//!
//! A pod's containers are one list, init containers first (`spec::container_at`): init
//! containers run one at a time in order, native sidecars (init containers with
//! `restartPolicy: Always`) start in that order and keep running, and the main containers
//! start once every init container has completed and every sidecar has started.

use jiff::Timestamp;
use std::time::Duration;

pub use super::containers::{Container, ExitDetail, KillWhy, ProbeKind, Probes, Role, State, Terminated};
pub use super::status::{phase, pod_status, qos_class};

/// The kubelet's crash back-off: the first restart is at once (on the next sync), the
/// second waits 10 s, then each doubles up to five minutes.
pub const INITIAL_BACKOFF: Duration = Duration::from_secs(10);
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// A container that ran this long without failing starts its back-off over.
pub const BACKOFF_RESET_AFTER: Duration = Duration::from_secs(600);
/// "At once": the next sync after an exit, long enough for the exit to be seen
/// (`Init:Error`, `Error`) before the restart.
pub const FIRST_RESTART: Duration = Duration::from_secs(1);
/// The kubelet's image pull back-off starts at 10 s (and doubles up to MAX_BACKOFF).
pub const INITIAL_PULL_BACKOFF: Duration = Duration::from_secs(10);
/// How long ErrImagePull shows before the pod's next sync shows ImagePullBackOff.
pub const PULL_RESYNC: Duration = Duration::from_secs(2);
/// How soon a container whose creation failed is tried again (the kubelet retries on its
/// next sync: an image removed between pull and create is pulled again).
pub const CREATE_RETRY: Duration = Duration::from_secs(5);
/// terminationGracePeriodSeconds when the pod says nothing.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(30);
pub const DEADLINE_MESSAGE: &str = "Pod was active on the node longer than the specified deadline";

/// The wait before a restart and the back-off after it, from the back-off before it
/// (zero: none yet) and how long the instance ran: the kubelet's `doBackOff`.
pub fn next_backoff(current: Duration, ran: Duration) -> (Duration, Duration) {
    let current = if ran >= BACKOFF_RESET_AFTER { Duration::ZERO } else { current };
    if current.is_zero() {
        (Duration::ZERO, INITIAL_BACKOFF)
    } else {
        (current, (current * 2).min(MAX_BACKOFF))
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
    /// The pod failed as a whole (activeDeadlineSeconds): its containers are stopped and
    /// nothing starts again; the pod stays until it is deleted.
    Failed,
    /// Deletion was asked: running containers get SIGTERM, SIGKILL after `grace`; nothing
    /// (re)starts.
    Terminating { grace: Duration },
    /// Every container has stopped and the pod's removal from the store was asked.
    Removing,
    /// The pod left the store (or this node): the shell forgets it.
    Gone,
}

/// Why a pod failed as a whole: `status.reason` and `status.message`.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    pub reason: String,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PodState {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub policy: RestartPolicy,
    pub lifecycle: Lifecycle,
    pub containers: Vec<Container>,
    /// terminationGracePeriodSeconds: the stop that ends sidecars and kills for probes.
    pub grace: Duration,
    /// Every init container completed and every sidecar started, once (later restarts of
    /// a sidecar do not hold the main containers back).
    pub initialized: bool,
    pub failure: Option<Failure>,
}

impl PodState {
    pub fn new(namespace: &str, name: &str, uid: &str, policy: RestartPolicy, containers: Vec<Container>) -> PodState {
        let mut containers = containers;
        let initialized = !containers.iter().any(|c| c.role != Role::Main);
        if !initialized {
            for c in containers.iter_mut().filter(|c| c.fresh()) {
                c.state = State::Waiting { reason: "PodInitializing".into(), message: None };
            }
        }
        PodState { namespace: namespace.into(), name: name.into(), uid: uid.into(), policy, lifecycle: Lifecycle::Active, containers, grace: DEFAULT_GRACE, initialized, failure: None }
    }

    fn any_running(&self) -> bool {
        self.containers.iter().any(Container::running)
    }

    /// Every main container has ended for good (its policy restarts none of them).
    fn mains_finished(&self) -> bool {
        let mains: Vec<&Container> = self.containers.iter().filter(|c| c.role == Role::Main).collect();
        !mains.is_empty() && mains.iter().all(|c| matches!(&c.state, State::Terminated(_)) && !c.restart_pending)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The pod is bound to this node and not being deleted: start its containers.
    Admitted,
    /// The runtime started `instance` of container `idx` as `id`, from image `image_id`
    /// (its postStart hook, if any, has run).
    Started { idx: usize, instance: u64, id: String, image_id: String, at: Timestamp },
    /// The container's image could not be pulled (`ErrImagePull`, the runtime's words).
    PullFailed { idx: usize, message: String },
    /// Absent with `imagePullPolicy: Never`.
    NeverPull { idx: usize, message: String },
    /// The runtime could not create it (no command, unknown runtime class …).
    CreateFailed { idx: usize, message: String },
    /// A source the container's environment names is missing; tried again later.
    ConfigFailed { idx: usize, message: String },
    Exited { idx: usize, instance: u64, exit: ExitDetail, at: Timestamp },
    /// The back-off timer of container `idx` fired.
    BackoffElapsed { idx: usize },
    /// A probe of the running `instance` changed its verdict (thresholds applied); a
    /// failed liveness or startup probe kills it within `grace`.
    Probe { idx: usize, instance: u64, kind: ProbeKind, ok: bool, grace: Duration },
    /// The postStart hook of `instance` failed: it is killed.
    PostStartFailed { idx: usize, instance: u64 },
    /// activeDeadlineSeconds passed since the pod started.
    DeadlineExceeded,
    /// The node is short of a resource and picked this pod to go (the eviction manager).
    Evicted { message: String },
    /// The pod has a deletionTimestamp: stop it within `grace`, then remove it.
    DeletionRequested { grace: Duration },
    /// The pod left the store (force-deleted) or is no longer bound here.
    Removed,
    /// After an agent restart: these instances still run in the runtime (the agent adopts
    /// them, nothing is started again), and these containers had ended for good before
    /// (from the stored status: completed init containers, mains the policy does not restart).
    Adopted { running: Vec<Resumed>, finished: Vec<(usize, i32, Terminated)> },
}

/// A container instance an earlier agent started, still running.
#[derive(Debug, Clone, PartialEq)]
pub struct Resumed {
    pub idx: usize,
    pub instance: u64,
    pub id: String,
    pub image_id: String,
    pub started_at: Timestamp,
    /// The restart count it was created with.
    pub restarts: i32,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    Start { idx: usize },
    RestartAfter { idx: usize, after: Duration },
    /// Look at the image of container `idx` again after `after` (BackoffElapsed).
    PullBackoff { idx: usize, after: Duration },
    /// Run the probes of the running `instance` of container `idx`.
    Probe { idx: usize, instance: u64 },
    /// Its preStop hook, then SIGTERM, SIGKILL after `grace` (zero: at once, no hook).
    Stop { idx: usize, grace: Duration },
    /// A stop for a reason the pod's events tell (it restarts as its policy says).
    Kill { idx: usize, grace: Duration, why: KillWhy },
    /// Remove the pod object from the store (deletion finished).
    DeleteFromStore,
}

/// Stops every running container with `grace`, the main ones (and init ones) first: the
/// sidecars once nothing else runs. `again` restops those already told (a shorter grace).
fn stop_in_order(pod: &mut PodState, grace: Duration, again: bool) -> Vec<Command> {
    let others_running = pod.containers.iter().any(|c| c.running() && c.role != Role::Sidecar);
    let mut cmds = vec![];
    for (idx, c) in pod.containers.iter_mut().enumerate() {
        if c.running() && (again || !c.stopping) && (c.role != Role::Sidecar || !others_running) {
            c.stopping = true;
            cmds.push(Command::Stop { idx, grace });
        }
    }
    cmds
}

/// A terminating pod with nothing left running is finished: remove it from the store.
fn finish_if_stopped(mut pod: PodState, mut cmds: Vec<Command>) -> (PodState, Vec<Command>) {
    if let Lifecycle::Terminating { grace } = pod.lifecycle {
        cmds.extend(stop_in_order(&mut pod, grace, false));
    }
    if matches!(pod.lifecycle, Lifecycle::Terminating { .. }) && !pod.any_running() {
        pod.lifecycle = Lifecycle::Removing;
        cmds.push(Command::DeleteFromStore);
    }
    (pod, cmds)
}

fn backoff_message(pod: &PodState, c: &Container, wait: Duration) -> String {
    format!("back-off {}s restarting failed container={} pod={}_{}({})", wait.as_secs(), c.name, pod.name, pod.namespace, pod.uid)
}

/// What starts next in an active pod: the next init container or sidecar in order (one
/// at a time), then every main container; nothing while one is on its way.
fn next_starts(pod: &mut PodState) -> Vec<Command> {
    if pod.lifecycle != Lifecycle::Active {
        return vec![];
    }
    if !pod.initialized {
        for idx in 0..pod.containers.len() {
            let c = &mut pod.containers[idx];
            let done = match c.role {
                Role::Main => continue,
                Role::Init => c.completed(),
                Role::Sidecar => c.started(),
            };
            if done {
                continue;
            }
            if c.fresh() {
                c.starting = true;
                return vec![Command::Start { idx }];
            }
            return vec![];
        }
        pod.initialized = true;
    }
    let mut cmds = vec![];
    for (idx, c) in pod.containers.iter_mut().enumerate() {
        if c.role == Role::Main && c.fresh() {
            c.state = State::Waiting { reason: "ContainerCreating".into(), message: None };
            c.starting = true;
            cmds.push(Command::Start { idx });
        }
    }
    cmds
}

/// The running instance `instance` of container `idx`, if that is what runs.
fn running_instance(pod: &mut PodState, idx: usize, instance: u64) -> Option<&mut Container> {
    pod.containers.get_mut(idx).filter(|c| c.instance() == Some(instance))
}

/// An active pod's container ended: it completes, restarts after its back-off, or stays
/// ended (then, once every main container has, the sidecars are stopped).
fn exited_active(mut pod: PodState, idx: usize, t: Terminated) -> (PodState, Vec<Command>) {
    let (policy, grace, mains_finished) = (pod.policy, pod.grace, pod.mains_finished());
    let c = &mut pod.containers[idx];
    let restarts = match c.role {
        // Until the main containers have finished (then it was stopped for good).
        Role::Sidecar => !mains_finished,
        Role::Init => t.exit_code != 0 && policy != RestartPolicy::Never,
        Role::Main => policy.restarts(t.exit_code),
    };
    if !restarts {
        let mut cmds = next_starts(&mut pod);
        let init_failed = pod.containers.iter().any(|c| c.role == Role::Init && matches!(&c.state, State::Terminated(t) if t.exit_code != 0));
        if pod.mains_finished() || init_failed {
            cmds.extend(stop_in_order(&mut pod, grace, false));
        }
        return (pod, cmds);
    }
    let ran = t.finished_at.duration_since(t.started_at).unsigned_abs();
    let (wait, next) = next_backoff(c.backoff, ran);
    c.backoff = next;
    c.restart_pending = true;
    if wait.is_zero() {
        // Shown as ended (Error, Init:Error) until the restart on the next sync.
        return (pod, vec![Command::RestartAfter { idx, after: FIRST_RESTART }]);
    }
    c.last_state = Some(t);
    let message = backoff_message(&pod, &pod.containers[idx], wait);
    pod.containers[idx].state = State::Waiting { reason: "CrashLoopBackOff".into(), message: Some(message) };
    (pod, vec![Command::RestartAfter { idx, after: wait }])
}

/// The pod is over on this node (its deadline passed, or it was evicted): every container
/// goes at once, the sidecars too, and the pod is Failed with `reason`.
fn fail(mut pod: PodState, reason: &str, message: String) -> (PodState, Vec<Command>) {
    pod.lifecycle = Lifecycle::Failed;
    pod.failure = Some(Failure { reason: reason.into(), message });
    let grace = pod.grace;
    for c in pod.containers.iter_mut() {
        c.restart_pending = false;
    }
    let cmds = pod
        .containers
        .iter_mut()
        .enumerate()
        .filter(|(_, c)| c.running() && !c.stopping)
        .map(|(idx, c)| {
            c.stopping = true;
            Command::Stop { idx, grace }
        })
        .collect();
    (pod, cmds)
}

/// The pod as an earlier agent left it: what runs is running again here (its probes start
/// over), what had finished for good stays finished, and the rest starts in order.
fn adopted(mut pod: PodState, running: Vec<Resumed>, finished: Vec<(usize, i32, Terminated)>) -> (PodState, Vec<Command>) {
    let policy = pod.policy;
    let mut cmds = vec![];
    for (idx, restarts, t) in finished {
        let Some(c) = pod.containers.get_mut(idx) else { continue };
        let stays = match c.role {
            Role::Init => t.exit_code == 0 || policy == RestartPolicy::Never,
            Role::Sidecar => false,
            Role::Main => !policy.restarts(t.exit_code),
        };
        if stays {
            c.restart_count = restarts;
            c.state = State::Terminated(t);
        }
    }
    for r in running {
        let Some(c) = pod.containers.get_mut(r.idx) else { continue };
        c.restart_count = r.restarts;
        c.state = State::Running { instance: r.instance, started_at: r.started_at };
        c.container_id = Some(r.id);
        c.image_id = r.image_id;
        if c.probes != Probes::default() {
            cmds.push(Command::Probe { idx: r.idx, instance: r.instance });
        }
    }
    cmds.extend(next_starts(&mut pod));
    (pod, cmds)
}

/// Advances the pod's state machine; returns the new state and what the shell must do.
pub fn step(mut pod: PodState, ev: Event) -> (PodState, Vec<Command>) {
    let lifecycle = pod.lifecycle;
    match (lifecycle, ev) {
        (Lifecycle::Active, Event::Adopted { running, finished }) => adopted(pod, running, finished),
        (_, Event::Adopted { .. }) => (pod, vec![]),
        (Lifecycle::Active, Event::Admitted) => {
            let cmds = next_starts(&mut pod);
            (pod, cmds)
        }
        (Lifecycle::Failed | Lifecycle::Terminating { .. } | Lifecycle::Removing | Lifecycle::Gone, Event::Admitted) => (pod, vec![]),

        (_, Event::Started { idx, instance, id, image_id, at }) => {
            let Some(c) = pod.containers.get_mut(idx) else { return (pod, vec![]) };
            c.state = State::Running { instance, started_at: at };
            c.container_id = Some(id);
            c.image_id = image_id;
            c.pull_backoff = INITIAL_PULL_BACKOFF;
            c.starting = false;
            c.stopping = false;
            c.ready = false;
            c.startup_passed = false;
            let has_probes = c.probes != Probes::default();
            let cmds = match lifecycle {
                Lifecycle::Active => {
                    let mut cmds = if has_probes { vec![Command::Probe { idx, instance }] } else { vec![] };
                    cmds.extend(next_starts(&mut pod));
                    cmds
                }
                // A start that raced with the deletion (or the deadline): stop it like the others.
                Lifecycle::Terminating { grace } => {
                    c.stopping = true;
                    vec![Command::Stop { idx, grace }]
                }
                Lifecycle::Failed | Lifecycle::Removing | Lifecycle::Gone => {
                    c.stopping = true;
                    vec![Command::Stop { idx, grace: Duration::ZERO }]
                }
            };
            (pod, cmds)
        }

        (Lifecycle::Active, Event::CreateFailed { idx, message }) => {
            let Some(c) = pod.containers.get_mut(idx) else { return (pod, vec![]) };
            c.starting = false;
            c.state = State::Waiting { reason: "CreateContainerError".into(), message: Some(message) };
            (pod, vec![Command::PullBackoff { idx, after: CREATE_RETRY }])
        }
        (_, Event::CreateFailed { idx, message }) => {
            if let Some(c) = pod.containers.get_mut(idx) {
                c.starting = false;
                c.state = State::Waiting { reason: "CreateContainerError".into(), message: Some(message) };
            }
            finish_if_stopped(pod, vec![])
        }

        (Lifecycle::Active, Event::ConfigFailed { idx, message }) => {
            let Some(c) = pod.containers.get_mut(idx) else { return (pod, vec![]) };
            c.starting = false;
            c.state = State::Waiting { reason: "CreateContainerConfigError".into(), message: Some(message) };
            (pod, vec![Command::PullBackoff { idx, after: CREATE_RETRY }])
        }
        (_, Event::ConfigFailed { idx, message }) => {
            if let Some(c) = pod.containers.get_mut(idx) {
                c.starting = false;
                c.state = State::Waiting { reason: "CreateContainerConfigError".into(), message: Some(message) };
            }
            finish_if_stopped(pod, vec![])
        }

        (Lifecycle::Active, Event::PullFailed { idx, message }) => {
            let Some(c) = pod.containers.get_mut(idx) else { return (pod, vec![]) };
            c.starting = false;
            c.state = State::Waiting { reason: "ErrImagePull".into(), message: Some(message) };
            // Shown as ErrImagePull until the next sync, then ImagePullBackOff while waiting.
            (pod, vec![Command::PullBackoff { idx, after: PULL_RESYNC }])
        }
        (Lifecycle::Active, Event::NeverPull { idx, message }) => {
            if let Some(c) = pod.containers.get_mut(idx) {
                c.starting = false;
                c.state = State::Waiting { reason: "ErrImageNeverPull".into(), message: Some(message) };
            }
            (pod, vec![])
        }
        (Lifecycle::Failed | Lifecycle::Terminating { .. } | Lifecycle::Removing | Lifecycle::Gone, Event::PullFailed { idx, message } | Event::NeverPull { idx, message }) => {
            if let Some(c) = pod.containers.get_mut(idx) {
                c.starting = false;
                c.state = State::Waiting { reason: "ErrImagePull".into(), message: Some(message) };
            }
            finish_if_stopped(pod, vec![])
        }

        (Lifecycle::Active, Event::Exited { idx, instance, exit, at }) => {
            let Some(c) = pod.containers.get_mut(idx) else { return (pod, vec![]) };
            let Some(t) = c.record_exit(instance, &exit, at) else { return (pod, vec![]) };
            exited_active(pod, idx, t)
        }
        (Lifecycle::Failed | Lifecycle::Terminating { .. } | Lifecycle::Removing | Lifecycle::Gone, Event::Exited { idx, instance, exit, at }) => {
            if let Some(c) = pod.containers.get_mut(idx) {
                c.record_exit(instance, &exit, at);
            }
            finish_if_stopped(pod, vec![])
        }

        (Lifecycle::Active, Event::BackoffElapsed { idx }) => {
            let Some(c) = pod.containers.get_mut(idx) else { return (pod, vec![]) };
            if c.restart_pending {
                c.restart_pending = false;
                if let State::Terminated(t) = &c.state {
                    c.last_state = Some(t.clone());
                }
                c.restart_count += 1;
                c.starting = true;
                return (pod, vec![Command::Start { idx }]);
            }
            let reason = match &c.state {
                State::Waiting { reason, .. } => reason.clone(),
                _ => return (pod, vec![]),
            };
            match reason.as_str() {
                "ErrImagePull" => {
                    let wait = c.pull_backoff;
                    c.pull_backoff = (c.pull_backoff * 2).min(MAX_BACKOFF);
                    c.state = State::Waiting { reason: "ImagePullBackOff".into(), message: Some(crate::images::backoff_message(&c.image)) };
                    (pod, vec![Command::PullBackoff { idx, after: wait }])
                }
                "ImagePullBackOff" | "CreateContainerError" | "CreateContainerConfigError" if !c.starting => {
                    c.starting = true;
                    (pod, vec![Command::Start { idx }])
                }
                _ => (pod, vec![]),
            }
        }
        (Lifecycle::Failed | Lifecycle::Terminating { .. } | Lifecycle::Removing | Lifecycle::Gone, Event::BackoffElapsed { .. }) => (pod, vec![]),

        (Lifecycle::Active, Event::Probe { idx, instance, kind, ok, grace }) => {
            let Some(c) = running_instance(&mut pod, idx, instance) else { return (pod, vec![]) };
            match (kind, ok) {
                (ProbeKind::Readiness, ok) => {
                    c.ready = ok;
                    (pod, vec![])
                }
                (ProbeKind::Startup, true) => {
                    c.startup_passed = true;
                    // A sidecar that has started lets the next one (or the main ones) start.
                    let cmds = next_starts(&mut pod);
                    (pod, cmds)
                }
                (ProbeKind::Liveness, true) => (pod, vec![]),
                (ProbeKind::Liveness | ProbeKind::Startup, false) if !c.stopping => {
                    c.stopping = true;
                    let why = if kind == ProbeKind::Liveness { KillWhy::Liveness } else { KillWhy::Startup };
                    (pod, vec![Command::Kill { idx, grace, why }])
                }
                _ => (pod, vec![]),
            }
        }
        (Lifecycle::Active, Event::PostStartFailed { idx, instance }) => {
            let grace = pod.grace;
            let Some(c) = running_instance(&mut pod, idx, instance) else { return (pod, vec![]) };
            if c.stopping {
                return (pod, vec![]);
            }
            c.stopping = true;
            (pod, vec![Command::Kill { idx, grace, why: KillWhy::PostStartHook }])
        }
        (Lifecycle::Failed | Lifecycle::Terminating { .. } | Lifecycle::Removing | Lifecycle::Gone, Event::Probe { .. } | Event::PostStartFailed { .. }) => (pod, vec![]),

        (Lifecycle::Active, Event::DeadlineExceeded) => fail(pod, "DeadlineExceeded", DEADLINE_MESSAGE.into()),
        (Lifecycle::Active, Event::Evicted { message }) => fail(pod, "Evicted", message),
        (Lifecycle::Failed | Lifecycle::Terminating { .. } | Lifecycle::Removing | Lifecycle::Gone, Event::DeadlineExceeded | Event::Evicted { .. }) => (pod, vec![]),

        (Lifecycle::Active | Lifecycle::Failed, Event::DeletionRequested { grace }) => {
            pod.lifecycle = Lifecycle::Terminating { grace };
            // Containers the deadline already stops keep their stop; others get this one.
            finish_if_stopped(pod, vec![])
        }
        // A shorter grace period (e.g. a second delete with --grace-period) takes over.
        (Lifecycle::Terminating { grace: current }, Event::DeletionRequested { grace }) if grace < current => {
            pod.lifecycle = Lifecycle::Terminating { grace };
            let cmds = stop_in_order(&mut pod, grace, true);
            (pod, cmds)
        }
        (Lifecycle::Terminating { .. }, Event::DeletionRequested { .. }) => (pod, vec![]),
        // Seen again while being removed: the earlier removal may have failed, ask again.
        (Lifecycle::Removing, Event::DeletionRequested { .. }) => (pod, vec![Command::DeleteFromStore]),
        (Lifecycle::Gone, Event::DeletionRequested { .. }) => (pod, vec![]),

        (Lifecycle::Active | Lifecycle::Failed | Lifecycle::Terminating { .. } | Lifecycle::Removing, Event::Removed) => {
            pod.lifecycle = Lifecycle::Gone;
            let cmds = pod.containers.iter().enumerate().filter(|(_, c)| c.running()).map(|(idx, _)| Command::Stop { idx, grace: Duration::ZERO }).collect();
            (pod, cmds)
        }
        (Lifecycle::Gone, Event::Removed) => (pod, vec![]),
    }
}

/// Builders shared by the lifecycle and status tests.
#[cfg(test)]
pub(crate) mod fixtures {
    use super::*;

    pub fn ex(code: i32) -> ExitDetail {
        ExitDetail { code, ..Default::default() }
    }

    pub fn t(s: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + s).unwrap()
    }

    /// A pod "p" in "ns" with one container per name given.
    pub fn pod(policy: RestartPolicy, names: &[&str]) -> PodState {
        PodState::new("ns", "p", "u1", policy, names.iter().map(|n| Container::new(n, "busybox")).collect())
    }
}

#[cfg(test)]
#[path = "lifecycle_tests.rs"]
mod tests;
