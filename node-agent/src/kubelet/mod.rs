//! The kubelet actor: a thin shell fed by the informer of this node's pods, by container
//! exits and by timers. It feeds each pod's pure state machine (`lifecycle::step`), carries
//! out the commands through the pod's runtime (`workers` starts containers: sandbox, image,
//! container) and the store (`store`), and reports status through one writer per pod.

pub mod admission;
pub mod env;
pub mod lifecycle;
pub mod lookup;
pub mod node;
pub mod projected;
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
use lifecycle::{Command, Container, Event, Lifecycle, PodState, RestartPolicy};
use std::collections::{HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument;

pub use spec::pod_dir;

const ACTOR: &str = "kubelet";
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
}

pub struct Kubelet {
    pub node: String,
    pub host_ip: String,
    pub data_dir: PathBuf,
    pub client: Client,
    pub runtimes: Runtimes,
    /// What admission lets the node's pods add up to.
    pub allocatable: admission::Allocatable,
    pods: HashMap<String, PodRt>,
    /// Numbers every container start, so an exit names the instance it ended.
    next_instance: u64,
    /// Exits seen before their start's answer was handled.
    early_exits: HashMap<u64, i32>,
    /// The volume directories this node's pods have mounted, by pod uid: the orphan
    /// sweep (`volumes::collect_orphans`) never removes one of them.
    pub in_use: volumes::InUse,
    /// Set by Shutdown: nothing new starts and no status is written any more, so the store
    /// keeps saying what should run and a restarted agent brings it back.
    stopping: bool,
}

impl Kubelet {
    pub fn new(node: String, host_ip: String, data_dir: PathBuf, client: Client, runtimes: Runtimes) -> Kubelet {
        let allocatable = admission::Allocatable { cpu_millis: u64::MAX, memory_bytes: u64::MAX, pods: u64::MAX };
        Kubelet { node, host_ip, data_dir, client, runtimes, allocatable, pods: HashMap::new(), next_instance: 0, early_exits: HashMap::new(), stopping: false, in_use: Default::default() }
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
    code: i32,
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

/// A pod found after an agent restart resumes its counts: its containers were restarted,
/// as after a node reboot, so each instance that ran before counts one restart.
fn resumed_containers(pod: &Pod) -> Vec<Container> {
    let stored = pod.status.as_ref().and_then(|s| s.container_statuses.clone()).unwrap_or_default();
    let spec = pod.spec.clone().unwrap_or_default();
    spec.containers
        .iter()
        .map(|c| {
            let mut ct = Container::new(&c.name, c.image.as_deref().unwrap_or(""));
            if let Some(s) = stored.iter().find(|s| s.name == c.name) {
                let ran = s.state.as_ref().is_some_and(|st| st.running.is_some() || st.terminated.is_some()) || s.last_state.as_ref().is_some_and(|l| l.terminated.is_some());
                ct.restart_count = s.restart_count + i32::from(ran);
            }
            ct
        })
        .collect()
}

impl StreamHandler<InformerEvent<Pod>> for Kubelet {
    fn handle(&mut self, ev: InformerEvent<Pod>, ctx: &mut Context<Self>) {
        bus::metrics::handle(ACTOR, || match ev {
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
        if deletion.is_none() {
            let running = self.pods.values().filter(|rt| !matches!(status::phase(&rt.state.containers, rt.state.policy), "Succeeded" | "Failed")).map(|rt| &rt.pod);
            if let Err(r) = admission::admit(&pod, running, self.allocatable) {
                tracing::warn!(pod = %uid, reason = %r.reason, "pod rejected");
                tokio::spawn(store::reject(self.client.clone(), self.node.clone(), pod, r).instrument(self.span()));
                return;
            }
        }
        self.admit(uid.clone(), pod);
        let ev = match deletion {
            Some(grace) => Event::DeletionRequested { grace },
            None => Event::Admitted,
        };
        self.drive(&uid, ev, ctx);
    }

    fn admit(&mut self, uid: String, pod: Pod) {
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        let policy = RestartPolicy::parse(pod.spec.as_ref().and_then(|s| s.restart_policy.as_deref()));
        let state = PodState::new(&ns, &name, &uid, policy, resumed_containers(&pod));
        let start_time = pod.status.as_ref().and_then(|s| s.start_time.as_ref()).map(|t| t.0).unwrap_or_else(Timestamp::now);
        let (status_tx, status_rx) = tokio::sync::watch::channel(None);
        tokio::spawn(store::status_writer(self.client.clone(), ns.clone(), name.clone(), uid.clone(), status_rx).instrument(self.span()));
        let runtime = self.runtimes.for_class(pod.spec.as_ref().and_then(|s| s.runtime_class_name.as_deref()), &self.node);
        tracing::info!(pod = %format!("{ns}/{name}"), node = %self.node, runtime = runtime.as_ref().map(|r| r.handler()).unwrap_or("none"), "pod admitted");
        let qos = status::qos_class(pod.spec.as_ref());
        self.pods.insert(
            uid,
            PodRt { pod, state, runtime, sandbox: SandboxSlot::None, sandbox_attempt: 0, pod_ip: None, starting: 0, procs: HashMap::new(), envs: HashMap::new(), token_refresh: 0, start_time, qos, status_tx, mounts: Vec::new(), mount_error: None },
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
            Lifecycle::Active | Lifecycle::Terminating { .. } if rt.starting > 0 => {
                let u = uid.to_string();
                ctx.run_later(STARTING_REPORT, move |act, _| act.report(&u));
            }
            Lifecycle::Active | Lifecycle::Terminating { .. } => self.report(uid),
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
        self.pods.get(uid).and_then(|rt| rt.pod.spec.as_ref()?.containers.get(idx).map(|c| c.name.clone())).unwrap_or_default()
    }

    fn container_image(&self, uid: &str, idx: usize) -> String {
        self.pods.get(uid).and_then(|rt| rt.pod.spec.as_ref()?.containers.get(idx)?.image.clone()).unwrap_or_default()
    }

    fn execute(&mut self, uid: &str, cmd: Command, ctx: &mut Context<Self>) -> Option<Event> {
        match cmd {
            Command::Start { idx } => self.start(uid, idx, ctx),
            Command::RestartAfter { idx, after } => {
                let (name, pod) = (self.container_name(uid, idx), self.pods.get(uid).map(|rt| format!("{}_{}({uid})", rt.state.name, rt.state.namespace)).unwrap_or_default());
                self.note(uid, "Warning", "BackOff", format!("Back-off restarting failed container {name} in pod {pod}"));
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
                let rt = self.pods.get(uid)?;
                let (s, runtime) = (rt.procs.get(&idx).map(|(_, s)| s.clone())?, rt.runtime.clone().ok()?);
                self.note(uid, "Normal", "Killing", format!("Stopping container {}", self.container_name(uid, idx)));
                tokio::spawn(async move { runtime.stop_container(&s, grace).await }.instrument(self.span()));
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
        bus::metrics::handle(ACTOR, || {
            let Some(rt) = self.pods.get_mut(&m.uid) else { return };
            match rt.procs.get(&m.idx) {
                Some((instance, _)) if *instance == m.instance => {
                    rt.procs.remove(&m.idx);
                }
                // Its start's answer is still to come: the exit waits for it.
                None => {
                    self.early_exits.insert(m.instance, m.code);
                    return;
                }
                Some(_) => {}
            }
            tracing::info!(pod = %format!("{}/{}", rt.state.namespace, rt.state.name), container = m.idx, code = m.code, "container exited");
            self.drive(&m.uid, Event::Exited { idx: m.idx, instance: m.instance, code: m.code, at: Timestamp::now() }, ctx);
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
