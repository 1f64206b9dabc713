//! The kubelet actor: a thin shell fed by the informer of this node's pods, by container
//! exits and by timers. It feeds each pod's pure state machine (`lifecycle::step`), carries
//! out the commands through the pod's runtime (`workers` starts containers: sandbox, image,
//! container) and the store (`store`), and reports status through one writer per pod.

mod adopt;
pub mod admission;
pub mod containers;
pub mod env;
pub mod hosts;
pub mod eviction;
pub mod lifecycle;
pub mod local_storage;
pub mod lookup;
pub mod node;
mod probes;
pub mod projected;
pub mod security;
pub mod spec;
pub mod status;
pub mod usage;
mod store;
pub mod volumes;
mod workers;

use crate::runtime::{Runtime, Runtimes, Sandbox, Started};
use actix::prelude::*;
use bus::informer::InformerEvent;
use bus::Client;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;
use lifecycle::{Command, Container, Event, ExitDetail, KillWhy, Lifecycle, PodState, Probes, RestartPolicy, Role};
use std::collections::{HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument;

pub use spec::pod_dir;

pub(crate) const ACTOR: &str = "kubelet";
/// How long a pod's containers may take to start before its status says ContainerCreating.
const STARTING_REPORT: Duration = Duration::from_millis(500);

/// A pod's sandbox, as far as the shell knows it.
enum SandboxSlot {
    None,
    /// Being made; these containers start once it is there.
    Creating(Vec<usize>),
    Ready(Sandbox),
}

/// What the shell keeps beside a pod's pure state: the stored object, its runtime,
/// sandbox and containers, and the channel to its status writer.
struct PodRt {
    pod: Pod,
    state: PodState,
    /// The runtime its runtimeClassName picks, or why there is none.
    runtime: Result<Arc<dyn Runtime>, String>,
    sandbox: SandboxSlot,
    sandbox_attempt: u32,
    pod_ip: Option<String>,
    /// Starts asked of the runtime whose answer has not come back.
    starting: usize,
    /// Running containers by index, with the instance number the kubelet gave each start.
    procs: HashMap<usize, (u64, Started)>,
    /// The environment each container was last started with (exec gets it too).
    envs: HashMap<usize, Vec<(String, String)>>,
    /// Numbers the token refresh schedules: only the latest one acts.
    token_refresh: u64,
    start_time: Timestamp,
    qos: &'static str,
    /// Its volumes, ready on this node (made before its sandbox).
    mounts: Vec<volumes::Mounted>,
    /// Why its volumes were last not ready (FailedMount is recorded when this changes).
    mount_error: Option<String>,
    /// The latest status; a per-pod writer task coalesces and writes it.
    status_tx: tokio::sync::watch::Sender<Option<serde_json::Value>>,
    /// The probe worker of each running container (dropped with it).
    probe_tasks: HashMap<usize, probes::ProbeTask>,
    /// Where each running instance's termination message and log are read at its end.
    files: HashMap<usize, InstanceFiles>,
    /// Its limited emptyDirs are measured every eviction period (`local_storage`).
    storage_watched: bool,
}

/// The files of one running instance that its end is read from.
#[derive(Debug, Clone)]
struct InstanceFiles {
    /// The termination message file on the node (None: not readable here).
    message: Option<PathBuf>,
    log: PathBuf,
    fallback_to_logs: bool,
}

pub struct Kubelet {
    pub node: String,
    pub host_ip: String,
    pub data_dir: PathBuf,
    pub client: Client,
    pub runtimes: Runtimes,
    /// What admission lets the node's pods add up to.
    pub allocatable: admission::Allocatable,
    /// This node's cluster DNS address (pods' nameserver under ClusterFirst), if it has one.
    pub cluster_dns: Option<std::net::Ipv4Addr>,
    /// The host's resolv.conf, read once at start (the kubelet's --resolv-conf).
    pub host_dns: crate::dns::resolv_conf::HostConf,
    pods: HashMap<String, PodRt>,
    /// Numbers every container start, so an exit names the instance it ended.
    next_instance: u64,
    /// Exits seen before their start's answer was handled.
    early_exits: HashMap<u64, crate::runtime::Exit>,
    /// The volume directories this node's pods have mounted, by pod uid: the orphan
    /// sweep (`volumes::collect_orphans`) never removes one of them.
    pub in_use: volumes::InUse,
    /// Set by Shutdown: nothing new starts and no status is written any more, so the store
    /// keeps saying what should run and a restarted agent brings it back.
    stopping: bool,
    /// The first list of pods has been handled (after adopting what still ran).
    listed_once: bool,
    /// What an earlier agent left running, by pod uid, until the pod is admitted.
    left: HashMap<String, adopt::Left>,
}

impl Kubelet {
    pub fn new(node: String, host_ip: String, data_dir: PathBuf, client: Client, runtimes: Runtimes) -> Kubelet {
        let allocatable = admission::Allocatable { cpu_millis: u64::MAX, memory_bytes: u64::MAX, pods: u64::MAX };
        Kubelet { node, host_ip, data_dir, client: client.named(ACTOR), runtimes, allocatable, cluster_dns: None, host_dns: crate::dns::resolv_conf::host(), pods: HashMap::new(), next_instance: 0, early_exits: HashMap::new(), stopping: false, in_use: Default::default(), listed_once: false, left: HashMap::new() }
    }

    fn span(&self) -> tracing::Span {
        tracing::info_span!("kubelet", node = %self.node)
    }
}

impl Actor for Kubelet {
    type Context = Context<Self>;
}

#[derive(Message)]
#[rtype(result = "()")]
struct Exited {
    uid: String,
    idx: usize,
    instance: u64,
    exit: crate::runtime::Exit,
}

/// activeDeadlineSeconds of the pod `uid` passed.
#[derive(Message)]
#[rtype(result = "()")]
struct DeadlineDue {
    uid: String,
}

/// The node is short of a resource (`message` says which): one pod goes.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Evict {
    pub message: String,
}

impl Handler<Evict> for Kubelet {
    type Result = ();
    fn handle(&mut self, m: Evict, ctx: &mut Context<Self>) {
        bus::metrics::handle(ACTOR, || {
            let live = self.pods.iter().filter(|(_, rt)| rt.state.lifecycle == Lifecycle::Active && !matches!(status::pod_phase(&rt.state), "Succeeded" | "Failed"));
            let Some(uid) = eviction::victim(live.map(|(u, rt)| (u, &rt.pod))).cloned() else { return };
            tracing::warn!(node = %self.node, pod = %uid, reason = %m.message, "evicting a pod");
            self.note(&uid, "Warning", "Evicted", m.message.clone());
            self.drive(&uid, Event::Evicted { message: m.message }, ctx);
        })
    }
}

/// An event for a pod from work running off the actor (reading a pull's secrets).
#[derive(Message)]
#[rtype(result = "()")]
struct Note {
    uid: String,
    kind: &'static str,
    reason: &'static str,
    message: String,
}

impl Handler<Note> for Kubelet {
    type Result = ();
    fn handle(&mut self, n: Note, _: &mut Context<Self>) {
        self.note(&n.uid, n.kind, n.reason, n.message);
    }
}

#[derive(Message)]
#[rtype(result = "()")]
struct RestartDue {
    uid: String,
    idx: usize,
}

/// Stops the actor and leaves every pod running as it is, for the next agent to adopt.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Detach;

impl Handler<Detach> for Kubelet {
    type Result = ();
    fn handle(&mut self, _: Detach, ctx: &mut Context<Self>) {
        bus::metrics::handle(ACTOR, || {
            self.stopping = true;
            tracing::info!(node = %self.node, pods = self.pods.len(), "leaving every pod running");
            // Dropping the entries ends their status writers and probe workers; the exit
            // watchers' messages find nobody.
            self.pods.clear();
            ctx.stop();
        })
    }
}

/// Stops every container (its stop signal, then SIGKILL after `grace`) and removes every
/// sandbox, and answers once they are gone; then the actor stops.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Shutdown {
    pub grace: Duration,
}

fn uid_of(p: &Pod) -> String {
    p.metadata.uid.clone().unwrap_or_else(|| format!("{}/{}", p.metadata.namespace.as_deref().unwrap_or(""), p.metadata.name.as_deref().unwrap_or("")))
}

/// The grace period of a deletion: the one the delete asked for, else the pod's own.
fn grace_of(pod: &Pod) -> Duration {
    let secs = pod
        .metadata
        .deletion_grace_period_seconds
        .or_else(|| pod.spec.as_ref().and_then(|s| s.termination_grace_period_seconds))
        .map(|s| s.max(0) as u64);
    secs.map(Duration::from_secs).unwrap_or(lifecycle::DEFAULT_GRACE)
}

/// The pod's containers for its state machine, init containers first (each with its role
/// and probes). A pod found after an agent restart resumes its counts: its containers were
/// restarted, as after a node reboot, so each instance that ran before counts one restart.
fn resumed_containers(pod: &Pod) -> Vec<Container> {
    let st = pod.status.as_ref();
    let stored: Vec<_> = st.and_then(|s| s.init_container_statuses.clone()).unwrap_or_default().into_iter().chain(st.and_then(|s| s.container_statuses.clone()).unwrap_or_default()).collect();
    let spec = pod.spec.clone().unwrap_or_default();
    let init = spec.init_containers.iter().flatten().map(|c| (c, if c.restart_policy.as_deref() == Some("Always") { Role::Sidecar } else { Role::Init }));
    init.chain(spec.containers.iter().map(|c| (c, Role::Main)))
        .map(|(c, role)| {
            let probes = Probes { readiness: c.readiness_probe.is_some(), liveness: c.liveness_probe.is_some(), startup: c.startup_probe.is_some() };
            let mut ct = Container::with_role(&c.name, c.image.as_deref().unwrap_or(""), role, probes);
            if let Some(s) = stored.iter().find(|s| s.name == c.name) {
                let ran = s.state.as_ref().is_some_and(|st| st.running.is_some() || st.terminated.is_some()) || s.last_state.as_ref().is_some_and(|l| l.terminated.is_some());
                ct.restart_count = s.restart_count + i32::from(ran);
            }
            ct
        })
        .collect()
}

/// The termination message of an ended instance: its file (at most 4096 bytes, as the
/// kubelet reads), else with FallbackToLogsOnError and a failure, its log's last lines.
fn termination_message(f: &InstanceFiles, code: i32) -> Option<String> {
    const MAX: usize = 4096;
    let from_file = f.message.as_ref().and_then(|p| std::fs::read(p).ok()).map(|mut b| {
        b.truncate(MAX);
        String::from_utf8_lossy(&b).into_owned()
    });
    if from_file.as_deref().is_some_and(|m| !m.is_empty()) || !f.fallback_to_logs || code == 0 {
        return from_file.filter(|m| !m.is_empty());
    }
    // The kubelet's fallback: the last 80 lines, at most 2048 bytes.
    let bytes = std::fs::read(&f.log).ok()?;
    let mut text: Vec<u8> = Vec::new();
    for e in crate::logs::cri::entries(&bytes) {
        text.extend_from_slice(e.text);
        if e.complete {
            text.push(b'\n');
        }
    }
    let s = String::from_utf8_lossy(&text).into_owned();
    let lines: Vec<&str> = s.lines().collect();
    let tail = lines[lines.len().saturating_sub(80)..].join("\n");
    let start = tail.len().saturating_sub(2048);
    let start = (start..tail.len()).find(|i| tail.is_char_boundary(*i)).unwrap_or(tail.len());
    Some(tail[start..].to_string()).filter(|m| !m.is_empty())
}

impl StreamHandler<InformerEvent<Pod>> for Kubelet {
    fn handle(&mut self, ev: InformerEvent<Pod>, ctx: &mut Context<Self>) {
        let node = self.node.clone();
        bus::metrics::handle_in(ACTOR, &node, || match ev {
            InformerEvent::Listed(pods, rev) if !self.listed_once => {
                self.listed_once = true;
                let seen = pods.clone();
                self.adopt_then(seen, move |act, ctx| StreamHandler::handle(act, InformerEvent::Listed(pods, rev), ctx), ctx);
            }
            InformerEvent::Listed(pods, _) => {
                let keep: HashSet<String> = pods.iter().map(uid_of).collect();
                let gone: Vec<String> = self.pods.keys().filter(|u| !keep.contains(*u)).cloned().collect();
                for uid in gone {
                    self.drive(&uid, Event::Removed, ctx);
                }
                for p in pods {
                    self.apply(p, ctx);
                }
            }
            InformerEvent::Applied(p, _) => self.apply(p, ctx),
            InformerEvent::Deleted(p, _) => self.drive(&uid_of(&p), Event::Removed, ctx),
        })
    }

    fn finished(&mut self, _ctx: &mut Context<Self>) {
        // The informer stream never ends on its own; ending means the agent is stopping.
    }
}

impl Kubelet {
    fn apply(&mut self, pod: Pod, ctx: &mut Context<Self>) {
        if self.stopping {
            return;
        }
        let uid = uid_of(&pod);
        if pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) != Some(self.node.as_str()) {
            self.drive(&uid, Event::Removed, ctx);
            return;
        }
        let deletion = pod.metadata.deletion_timestamp.is_some().then(|| grace_of(&pod));
        if let Some(rt) = self.pods.get_mut(&uid) {
            let relabelled = rt.pod.metadata.labels != pod.metadata.labels || rt.pod.metadata.annotations != pod.metadata.annotations;
            rt.pod = pod;
            if relabelled && projected::has_downward(&rt.pod) {
                self.refresh_volumes(|p| uid_of(p) == uid, ctx);
            }
            if let Some(grace) = deletion {
                self.drive(&uid, Event::DeletionRequested { grace }, ctx);
            }
            return;
        }
        // A pod that finished before an agent restart stays finished.
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
        if deletion.is_none() && matches!(phase, Some("Succeeded" | "Failed")) {
            return;
        }
        let left = self.left.remove(&uid);
        if deletion.is_none() && left.is_none() {
            let running = self.pods.values().filter(|rt| !matches!(status::pod_phase(&rt.state), "Succeeded" | "Failed")).map(|rt| &rt.pod);
            if let Err(r) = admission::admit(&pod, running, self.allocatable) {
                tracing::warn!(pod = %uid, reason = %r.reason, "pod rejected");
                tokio::spawn(store::reject(self.client.clone(), self.node.clone(), pod, r).instrument(self.span()));
                return;
            }
        }
        let deadline = pod.spec.as_ref().and_then(|s| s.active_deadline_seconds).filter(|s| *s >= 0);
        self.admit(uid.clone(), pod);
        if let (Some(secs), None) = (deadline, deletion) {
            // Counted from the pod's start on a node, as the kubelet's activeDeadlineHandler.
            let start = self.pods.get(&uid).map(|rt| rt.start_time).unwrap_or_else(Timestamp::now);
            let left = (start.as_second() + secs).saturating_sub(Timestamp::now().as_second()).max(0) as u64;
            ctx.notify_later(DeadlineDue { uid: uid.clone() }, Duration::from_secs(left));
        }
        let ev = match deletion {
            Some(grace) => Event::DeletionRequested { grace },
            None => Event::Admitted,
        };
        match left {
            // It runs already: adopted, then (if it is being deleted) stopped as usual.
            Some(left) => {
                self.resume(&uid, left, ctx);
                if let Event::DeletionRequested { .. } = ev {
                    self.drive(&uid, ev, ctx);
                }
            }
            None => self.drive(&uid, ev, ctx),
        }
    }

    fn admit(&mut self, uid: String, pod: Pod) {
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        let policy = RestartPolicy::parse(pod.spec.as_ref().and_then(|s| s.restart_policy.as_deref()));
        let mut state = PodState::new(&ns, &name, &uid, policy, resumed_containers(&pod));
        state.grace = pod.spec.as_ref().and_then(|s| s.termination_grace_period_seconds).map(|s| Duration::from_secs(s.max(0) as u64)).unwrap_or(lifecycle::DEFAULT_GRACE);
        let start_time = pod.status.as_ref().and_then(|s| s.start_time.as_ref()).map(|t| t.0).unwrap_or_else(Timestamp::now);
        let (status_tx, status_rx) = tokio::sync::watch::channel(None);
        tokio::spawn(store::status_writer(self.client.clone(), ns.clone(), name.clone(), uid.clone(), status_rx).instrument(self.span()));
        let runtime = self.runtimes.for_class(pod.spec.as_ref().and_then(|s| s.runtime_class_name.as_deref()), &self.node);
        tracing::info!(pod = %format!("{ns}/{name}"), node = %self.node, runtime = runtime.as_ref().map(|r| r.handler()).unwrap_or("none"), "pod admitted");
        if runtime.as_ref().is_ok_and(|r| r.handler() == "simulated") {
            // Hollow pods have nothing to probe (as kwok's): running is ready.
            for c in state.containers.iter_mut() {
                c.probes = Probes::default();
            }
        }
        let qos = status::qos_class(pod.spec.as_ref());
        self.pods.insert(
            uid,
            PodRt {
                pod,
                state,
                runtime,
                sandbox: SandboxSlot::None,
                sandbox_attempt: 0,
                pod_ip: None,
                starting: 0,
                procs: HashMap::new(),
                envs: HashMap::new(),
                token_refresh: 0,
                start_time,
                qos,
                status_tx,
                mounts: Vec::new(),
                mount_error: None,
                probe_tasks: HashMap::new(),
                files: HashMap::new(),
                storage_watched: false,
            },
        );
    }

    /// Feeds one event to a pod's state machine, carries out its commands (which may feed
    /// further events), then reports status.
    fn drive(&mut self, uid: &str, ev: Event, ctx: &mut Context<Self>) {
        let mut queue = VecDeque::from([ev]);
        while let Some(ev) = queue.pop_front() {
            let Some(rt) = self.pods.get_mut(uid) else { return };
            let (next, cmds) = lifecycle::step(rt.state.clone(), ev);
            rt.state = next;
            for cmd in cmds {
                if let Some(follow) = self.execute(uid, cmd, ctx) {
                    queue.push_back(follow);
                }
            }
        }
        let Some(rt) = self.pods.get_mut(uid) else { return };
        match rt.state.lifecycle {
            // A start that answers quickly (host processes) is reported with its result, in
            // one status write instead of a ContainerCreating one first; a slow one (a pull)
            // shows ContainerCreating after STARTING_REPORT.
            Lifecycle::Active | Lifecycle::Failed | Lifecycle::Terminating { .. } if rt.starting > 0 => {
                let u = uid.to_string();
                ctx.run_later(STARTING_REPORT, move |act, _| act.report(&u));
            }
            Lifecycle::Active | Lifecycle::Failed | Lifecycle::Terminating { .. } => self.report(uid),
            Lifecycle::Removing => self.release_sandbox(uid),
            Lifecycle::Gone => {
                let dir = spec::pod_dir(&self.data_dir, &rt.state.namespace, &rt.state.name, uid);
                self.release_sandbox(uid);
                volumes::release(&self.in_use, uid);
                projected::remove_pod_data(&dir, uid);
                // Dropping the entry ends its status writer.
                self.pods.remove(uid);
            }
        }
    }

    /// Removes the pod's sandbox (its network too) once nothing of the pod should run.
    fn release_sandbox(&mut self, uid: &str) {
        let Some(rt) = self.pods.get_mut(uid) else { return };
        if let (SandboxSlot::Ready(sb), Ok(runtime)) = (std::mem::replace(&mut rt.sandbox, SandboxSlot::None), &rt.runtime) {
            let procs: Vec<Started> = rt.procs.drain().map(|(_, (_, s))| s).collect();
            let runtime = runtime.clone();
            tokio::spawn(
                async move {
                    // Running containers were told to stop; the sandbox goes once they have.
                    for s in &procs {
                        runtime.stop_container(s, Duration::ZERO).await;
                    }
                    runtime.remove_sandbox(&sb).await;
                }
                .instrument(self.span()),
            );
        }
    }

    /// Records an Event about the pod, as the kubelet does for `kubectl describe pod`.
    fn note(&self, uid: &str, type_: &str, reason: &str, message: String) {
        if let Some(rt) = self.pods.get(uid) {
            store::record_event(&self.client, &self.node, &rt.pod, type_, reason, &message);
        }
    }

    fn container_name(&self, uid: &str, idx: usize) -> String {
        self.pods.get(uid).and_then(|rt| spec::container_at(rt.pod.spec.as_ref()?, idx).map(|c| c.name.clone())).unwrap_or_default()
    }

    fn container_image(&self, uid: &str, idx: usize) -> String {
        self.pods.get(uid).and_then(|rt| spec::container_at(rt.pod.spec.as_ref()?, idx)?.image.clone()).unwrap_or_default()
    }

    fn execute(&mut self, uid: &str, cmd: Command, ctx: &mut Context<Self>) -> Option<Event> {
        match cmd {
            Command::Start { idx } => self.start(uid, idx, ctx),
            Command::RestartAfter { idx, after } => {
                // The restart at once after a first crash is no back-off.
                if after > lifecycle::FIRST_RESTART {
                    let (name, pod) = (self.container_name(uid, idx), self.pods.get(uid).map(|rt| format!("{}_{}({uid})", rt.state.name, rt.state.namespace)).unwrap_or_default());
                    self.note(uid, "Warning", "BackOff", format!("Back-off restarting failed container {name} in pod {pod}"));
                }
                ctx.notify_later(RestartDue { uid: uid.to_string(), idx }, after);
                None
            }
            Command::PullBackoff { idx, after } => {
                let pulling = self.pods.get(uid).and_then(|rt| rt.state.containers.get(idx)).is_some_and(|c| matches!(&c.state, lifecycle::State::Waiting { reason, .. } if reason == "ImagePullBackOff"));
                if after != lifecycle::PULL_RESYNC && pulling {
                    self.note(uid, "Normal", "BackOff", crate::images::backoff_message(&self.container_image(uid, idx)));
                }
                ctx.notify_later(RestartDue { uid: uid.to_string(), idx }, after);
                None
            }
            Command::Stop { idx, grace } => {
                self.pods.get(uid)?.procs.get(&idx)?;
                self.note(uid, "Normal", "Killing", format!("Stopping container {}", self.container_name(uid, idx)));
                self.stop_container(uid, idx, grace);
                None
            }
            Command::Kill { idx, grace, why } => {
                self.pods.get(uid)?.procs.get(&idx)?;
                let name = self.container_name(uid, idx);
                let message = match why {
                    KillWhy::Liveness => format!("Container {name} failed liveness probe, will be restarted"),
                    KillWhy::Startup => format!("Container {name} failed startup probe, will be restarted"),
                    KillWhy::PostStartHook => format!("FailedPostStartHook: stopping container {name}"),
                };
                self.note(uid, "Normal", "Killing", message);
                self.stop_container(uid, idx, grace);
                None
            }
            Command::Probe { idx, instance } => {
                self.start_probes(uid, idx, instance, ctx);
                None
            }
            Command::DeleteFromStore => {
                let pod = self.pods.get(uid).map(|rt| rt.pod.clone())?;
                tokio::spawn(store::delete_from_store(self.client.clone(), pod).instrument(self.span()));
                None
            }
        }
    }

    fn report(&self, uid: &str) {
        if self.stopping {
            return;
        }
        let Some(rt) = self.pods.get(uid) else { return };
        let prev = rt.pod.status.as_ref().and_then(|s| serde_json::to_value(s).ok());
        let status = lifecycle::pod_status(&rt.state, &self.host_ip, rt.pod_ip.as_deref(), rt.start_time, rt.qos, prev.as_ref(), Timestamp::now());
        // Only a changed status wakes the writer.
        rt.status_tx.send_if_modified(|cur| {
            if cur.as_ref() == Some(&status) {
                return false;
            }
            *cur = Some(status);
            true
        });
    }
}

impl Handler<Exited> for Kubelet {
    type Result = ();
    fn handle(&mut self, m: Exited, ctx: &mut Context<Self>) {
        let node = self.node.clone();
        bus::metrics::handle_in(ACTOR, &node, || {
            let Some(rt) = self.pods.get_mut(&m.uid) else { return };
            match rt.procs.get(&m.idx) {
                Some((instance, _)) if *instance == m.instance => {
                    rt.procs.remove(&m.idx);
                    rt.probe_tasks.remove(&m.idx);
                }
                // Its start's answer is still to come: the exit waits for it.
                None => {
                    self.early_exits.insert(m.instance, m.exit);
                    return;
                }
                Some(_) => {}
            }
            tracing::info!(pod = %format!("{}/{}", rt.state.namespace, rt.state.name), container = m.idx, code = m.exit.code, reason = ?m.exit.reason, "container exited");
            let detail = self.exit_detail(&m.uid, m.idx, &m.exit);
            self.drive(&m.uid, Event::Exited { idx: m.idx, instance: m.instance, exit: detail, at: Timestamp::now() }, ctx);
        })
    }
}

impl Kubelet {
    /// How an instance ended, with its termination message read from its files.
    fn exit_detail(&mut self, uid: &str, idx: usize, exit: &crate::runtime::Exit) -> ExitDetail {
        let files = self.pods.get_mut(uid).and_then(|rt| rt.files.remove(&idx));
        ExitDetail { code: exit.code, oom: exit.reason.as_deref() == Some("OOMKilled"), message: files.and_then(|f| termination_message(&f, exit.code)) }
    }
}

impl Handler<DeadlineDue> for Kubelet {
    type Result = ();
    fn handle(&mut self, m: DeadlineDue, ctx: &mut Context<Self>) {
        bus::metrics::handle(ACTOR, || {
            // Only a pod still running has a deadline to miss (a finished one stays as it ended).
            let live = self.pods.get(&m.uid).is_some_and(|rt| rt.state.lifecycle == Lifecycle::Active && !matches!(status::pod_phase(&rt.state), "Succeeded" | "Failed"));
            if live {
                self.note(&m.uid, "Normal", "DeadlineExceeded", lifecycle::DEADLINE_MESSAGE.into());
                self.drive(&m.uid, Event::DeadlineExceeded, ctx);
            }
        })
    }
}

impl Handler<RestartDue> for Kubelet {
    type Result = ();
    fn handle(&mut self, m: RestartDue, ctx: &mut Context<Self>) {
        bus::metrics::handle(ACTOR, || self.drive(&m.uid, Event::BackoffElapsed { idx: m.idx }, ctx))
    }
}

impl Handler<Shutdown> for Kubelet {
    type Result = ResponseActFuture<Self, ()>;
    fn handle(&mut self, m: Shutdown, _ctx: &mut Context<Self>) -> Self::Result {
        bus::metrics::handle(ACTOR, || {
            self.stopping = true;
            // Dropping the pods' entries ends their status writers and makes the exits that
            // follow no-ops: the stored status stays as it was.
            let pods: Vec<PodRt> = self.pods.drain().map(|(_, rt)| rt).collect();
            let data_dir = self.data_dir.clone();
            tracing::info!(node = %self.node, pods = pods.len(), "stopping every pod");
            let stops: Vec<_> = pods
                .into_iter()
                .filter_map(|rt| {
                    let runtime = rt.runtime.ok()?;
                    let procs: Vec<Started> = rt.procs.into_values().map(|(_, s)| s).collect();
                    let sandbox = match rt.sandbox {
                        SandboxSlot::Ready(sb) => Some(sb),
                        _ => None,
                    };
                    let grace = m.grace;
                    let dir = spec::pod_dir(&data_dir, &rt.state.namespace, &rt.state.name, &rt.state.uid);
                    let uid = rt.state.uid.clone();
                    Some(async move {
                        futures::future::join_all(procs.iter().map(|s| runtime.stop_container(s, grace))).await;
                        if let Some(sb) = sandbox {
                            runtime.remove_sandbox(&sb).await;
                        }
                        // Memory-backed emptyDirs would outlive the agent in /dev/shm.
                        projected::remove_pod_data(&dir, &uid);
                    })
                })
                .collect();
            Box::pin(futures::future::join_all(stops).instrument(self.span()).into_actor(self).map(|_, _, ctx| ctx.stop())) as ResponseActFuture<Self, ()>
        })
    }
}
