//! The kubelet actor: a thin shell fed by the informer of this node's pods, by container
//! exits and by timers. It feeds each pod's pure state machine (`lifecycle::step`), carries
//! out the commands through the runtime and the store, and reports status through one
//! writer per pod.

pub mod admission;
pub mod lifecycle;
pub mod node;
pub mod status;

use crate::runtime::{ContainerSpec, Runtime, Started};
use actix::prelude::*;
use bus::informer::InformerEvent;
use bus::Client;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;
use lifecycle::{Command, Container, Event, Lifecycle, PodState, RestartPolicy};
use std::collections::{HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument;

const ACTOR: &str = "kubelet";

/// What the shell keeps beside a pod's pure state: the stored object, its processes and
/// the channel to its status writer.
struct PodRt {
    pod: Pod,
    state: PodState,
    /// Processes by container index.
    procs: HashMap<usize, Started>,
    start_time: Timestamp,
    qos: &'static str,
    /// The latest status; a per-pod writer task coalesces and writes it.
    status_tx: tokio::sync::watch::Sender<Option<serde_json::Value>>,
}

pub struct Kubelet {
    pub node: String,
    pub host_ip: String,
    pub data_dir: PathBuf,
    pub client: Client,
    pub runtime: Arc<dyn Runtime>,
    /// What admission lets the node's pods add up to.
    pub allocatable: admission::Allocatable,
    pods: HashMap<String, PodRt>,
    /// Set by Shutdown: nothing new starts and no status is written any more, so the store
    /// keeps saying what should run and a restarted agent brings it back.
    stopping: bool,
}

impl Kubelet {
    pub fn new(node: String, host_ip: String, data_dir: PathBuf, client: Client, runtime: Arc<dyn Runtime>) -> Kubelet {
        let allocatable = admission::Allocatable { cpu_millis: u64::MAX, memory_bytes: u64::MAX, pods: u64::MAX };
        Kubelet { node, host_ip, data_dir, client, runtime, allocatable, pods: HashMap::new(), stopping: false }
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
    pid: i32,
    code: i32,
}

#[derive(Message)]
#[rtype(result = "()")]
struct RestartDue {
    uid: String,
    idx: usize,
}

/// Stops every container (SIGTERM, then SIGKILL after `grace`) and answers once the
/// processes are gone; then the actor stops.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Shutdown {
    pub grace: Duration,
}

fn uid_of(p: &Pod) -> String {
    p.metadata.uid.clone().unwrap_or_else(|| format!("{}/{}", p.metadata.namespace.as_deref().unwrap_or(""), p.metadata.name.as_deref().unwrap_or("")))
}

/// The pod's directory: working dirs and logs; the log service finds logs by its name.
pub fn pod_dir(data_dir: &Path, ns: &str, name: &str, uid: &str) -> PathBuf {
    data_dir.join("pods").join(format!("{ns}_{name}_{uid}"))
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
            rt.pod = pod;
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
                tokio::spawn(reject(self.client.clone(), self.node.clone(), pod, r).instrument(self.span()));
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
        tokio::spawn(status_writer(self.client.clone(), ns.clone(), name.clone(), uid.clone(), status_rx).instrument(self.span()));
        tracing::info!(pod = %format!("{ns}/{name}"), node = %self.node, "pod admitted");
        let qos = status::qos_class(pod.spec.as_ref());
        self.pods.insert(uid, PodRt { pod, state, procs: HashMap::new(), start_time, qos, status_tx });
    }

    /// Feeds one event to a pod's state machine, carries out its commands (which may feed
    /// further events: a start answers with Started or CreateFailed), then reports status.
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
        let Some(rt) = self.pods.get(uid) else { return };
        match rt.state.lifecycle {
            Lifecycle::Active | Lifecycle::Terminating { .. } => self.report(uid),
            Lifecycle::Removing => {}
            Lifecycle::Gone => {
                // Dropping the entry ends its status writer.
                self.pods.remove(uid);
            }
        }
    }

    /// Records an Event about the pod, as the kubelet does for `kubectl describe pod`.
    fn note(&self, uid: &str, type_: &str, reason: &str, message: String) {
        if let Some(rt) = self.pods.get(uid) {
            let mut ev = bus::events::event(bus::events::reference(&rt.pod), type_, reason, &message, "kubelet");
            if let Some(src) = ev.source.as_mut() {
                src.host = Some(self.node.clone());
            }
            ev.reporting_instance = Some(self.node.clone());
            bus::events::record(&self.client, ev);
        }
    }

    fn container_name(&self, uid: &str, idx: usize) -> String {
        self.pods.get(uid).and_then(|rt| rt.pod.spec.as_ref()?.containers.get(idx).map(|c| c.name.clone())).unwrap_or_default()
    }

    fn execute(&mut self, uid: &str, cmd: Command, ctx: &mut Context<Self>) -> Option<Event> {
        match cmd {
            Command::Start { idx } => {
                let ev = self.start_container(uid, idx, ctx);
                let name = self.container_name(uid, idx);
                match &ev {
                    Event::Started { .. } => {
                        let image = self.pods.get(uid).and_then(|rt| rt.pod.spec.as_ref()?.containers.get(idx)?.image.clone()).unwrap_or_default();
                        // Host-process mode runs commands from the machine: nothing is pulled.
                        self.note(uid, "Normal", "Pulled", format!("Container image \"{image}\" already present on machine"));
                        self.note(uid, "Normal", "Created", format!("Created container: {name}"));
                        self.note(uid, "Normal", "Started", format!("Started container {name}"));
                    }
                    Event::CreateFailed { message, .. } => self.note(uid, "Warning", "Failed", format!("Error: {message}")),
                    _ => {}
                }
                Some(ev)
            }
            Command::RestartAfter { idx, after } => {
                let (name, pod) = (self.container_name(uid, idx), self.pods.get(uid).map(|rt| format!("{}_{}({uid})", rt.state.name, rt.state.namespace)).unwrap_or_default());
                self.note(uid, "Warning", "BackOff", format!("Back-off restarting failed container {name} in pod {pod}"));
                ctx.notify_later(RestartDue { uid: uid.to_string(), idx }, after);
                None
            }
            Command::Stop { idx, grace } => {
                let s = self.pods.get(uid).and_then(|rt| rt.procs.get(&idx)).copied()?;
                self.note(uid, "Normal", "Killing", format!("Stopping container {}", self.container_name(uid, idx)));
                tokio::spawn(self.runtime.stop_container(s, grace).instrument(self.span()));
                None
            }
            Command::DeleteFromStore => {
                let pod = self.pods.get(uid).map(|rt| rt.pod.clone())?;
                tokio::spawn(delete_from_store(self.client.clone(), pod).instrument(self.span()));
                None
            }
        }
    }

    fn start_container(&mut self, uid: &str, idx: usize, ctx: &mut Context<Self>) -> Event {
        let Some(rt) = self.pods.get(uid) else { return Event::CreateFailed { idx, message: "the pod is gone".into() } };
        let class = rt.pod.spec.as_ref().and_then(|s| s.runtime_class_name.clone());
        if let Some(class) = class.filter(|c| c != self.runtime.handler()) {
            return Event::CreateFailed {
                idx,
                message: format!(
                    "failed to get sandbox runtime: no runtime for RuntimeClass \"{class}\" is configured on node {}: only \"{}\" (host-process mode) is available",
                    self.node,
                    self.runtime.handler()
                ),
            };
        }
        let Some(spec) = self.container_spec(rt, idx) else { return Event::CreateFailed { idx, message: "no such container in the pod spec".into() } };
        let default_dir = pod_dir(&self.data_dir, &rt.state.namespace, &rt.state.name, &rt.state.uid).join("work");
        if spec.working_dir == default_dir {
            if let Err(e) = std::fs::create_dir_all(&default_dir) {
                return Event::CreateFailed { idx, message: format!("failed to create the pod's working directory: {e}") };
            }
        }
        let addr = ctx.address();
        let u = uid.to_string();
        let on_exit = Box::new(move |s: Started, code: i32| addr.do_send(Exited { uid: u, idx, pid: s.pid, code }));
        match self.runtime.start_container(&spec, on_exit) {
            Ok(s) => {
                tracing::info!(pod = %spec.pod_key, container = %spec.name, pid = s.pid, "container started");
                if let Some(rt) = self.pods.get_mut(uid) {
                    rt.procs.insert(idx, s);
                }
                Event::Started { idx, pid: s.pid, at: Timestamp::now() }
            }
            Err(e) => Event::CreateFailed { idx, message: e.to_string() },
        }
    }

    fn container_spec(&self, rt: &PodRt, idx: usize) -> Option<ContainerSpec> {
        let c = rt.pod.spec.as_ref()?.containers.get(idx)?;
        let (ns, name, uid) = (&rt.state.namespace, &rt.state.name, &rt.state.uid);
        let dir = pod_dir(&self.data_dir, ns, name, uid);
        // Kubernetes semantics: command replaces the entrypoint, args follow it; without a
        // command there is nothing to run in host mode, and the runtime says so.
        let mut command: Vec<String> = c.command.clone().unwrap_or_default();
        if !command.is_empty() {
            command.extend(c.args.clone().unwrap_or_default());
        }
        let mut env = vec![("HOSTNAME".to_string(), name.clone())];
        for e in c.env.iter().flatten() {
            let value = match (&e.value, &e.value_from) {
                (Some(v), _) => Some(v.clone()),
                (None, Some(from)) => from.field_ref.as_ref().and_then(|f| match f.field_path.as_str() {
                    "metadata.name" => Some(name.clone()),
                    "metadata.namespace" => Some(ns.clone()),
                    "metadata.uid" => Some(uid.clone()),
                    "spec.nodeName" => Some(self.node.clone()),
                    "status.podIP" | "status.hostIP" => Some(self.host_ip.clone()),
                    _ => None,
                }),
                (None, None) => Some(String::new()),
            };
            if let Some(v) = value {
                env.push((e.name.clone(), v));
            }
        }
        let restarts = rt.state.containers.get(idx).map(|c| c.restart_count).unwrap_or(0);
        Some(ContainerSpec {
            pod_key: format!("{ns}/{name}"),
            name: c.name.clone(),
            command,
            env,
            working_dir: c.working_dir.clone().filter(|w| !w.is_empty()).map(PathBuf::from).unwrap_or_else(|| dir.join("work")),
            log_path: dir.join(&c.name).join(format!("{restarts}.log")),
        })
    }

    fn report(&self, uid: &str) {
        if self.stopping {
            return;
        }
        let Some(rt) = self.pods.get(uid) else { return };
        let prev = rt.pod.status.as_ref().and_then(|s| serde_json::to_value(s).ok());
        let status = lifecycle::pod_status(&rt.state, &self.host_ip, rt.start_time, rt.qos, prev.as_ref(), Timestamp::now());
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
            if let Some(rt) = self.pods.get(&m.uid) {
                tracing::info!(pod = %format!("{}/{}", rt.state.namespace, rt.state.name), container = m.idx, code = m.code, "container exited");
            }
            self.drive(&m.uid, Event::Exited { idx: m.idx, pid: m.pid, code: m.code, at: Timestamp::now() }, ctx);
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
            let procs: Vec<Started> = self.pods.drain().flat_map(|(_, rt)| rt.procs.into_values()).collect();
            tracing::info!(node = %self.node, processes = procs.len(), "stopping every pod");
            let stops: Vec<_> = procs.iter().map(|s| self.runtime.stop_container(*s, m.grace)).collect();
            Box::pin(futures::future::join_all(stops).instrument(self.span()).into_actor(self).map(|_, _, ctx| ctx.stop())) as ResponseActFuture<Self, ()>
        })
    }
}

/// Removes a pod whose containers have all stopped. Only the same pod (same uid) is
/// deleted, compare-and-swap on its revision: a re-created pod of the same name survives.
async fn delete_from_store(client: Client, pod: Pod) {
    let ns = pod.metadata.namespace.clone();
    let name = pod.metadata.name.clone().unwrap_or_default();
    for _ in 0..10 {
        let current = match client.get::<Pod>(ns.as_deref(), &name).await {
            Ok(Some(p)) if p.metadata.uid == pod.metadata.uid => p,
            Ok(_) => return,
            Err(e) => {
                tracing::warn!(pod = %name, error = %e, "reading a terminated pod failed");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let rev = current.metadata.resource_version.as_deref().and_then(|r| r.parse().ok());
        match client.delete::<Pod>(ns.as_deref(), &name, rev).await {
            Ok(_) => return,
            Err(e) if e.is_not_found() => return,
            Err(e) if e.is_conflict() => continue,
            Err(e) => {
                tracing::warn!(pod = %name, error = %e, "deleting a terminated pod failed");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

/// Writes the newest status of one pod, one write at a time (so writes never reorder),
/// with compare-and-swap on the stored pod and a retry on conflict; skips the write when
/// the store already holds that status. Ends when the pod's runtime entry is dropped.
/// Fails a pod the node cannot take, as the kubelet does: phase Failed with the reason
/// and message, and a Warning event; the pod's controller replaces it.
async fn reject(client: Client, node: String, pod: Pod, why: admission::Rejection) {
    let (ns, name, uid) = (pod.metadata.namespace.clone(), pod.metadata.name.clone().unwrap_or_default(), pod.metadata.uid.clone());
    let mut ev = bus::events::event(bus::events::reference(&pod), "Warning", &why.reason, &why.message, "kubelet");
    if let Some(src) = ev.source.as_mut() {
        src.host = Some(node.clone());
    }
    ev.reporting_instance = Some(node);
    bus::events::record(&client, ev);
    for _ in 0..10 {
        let mut cur = match client.get::<Pod>(ns.as_deref(), &name).await {
            Ok(Some(p)) if p.metadata.uid == uid => p,
            Ok(_) => return,
            Err(e) => {
                tracing::warn!(pod = %name, error = %e, "reading a rejected pod failed");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let st = cur.status.get_or_insert_with(Default::default);
        if st.phase.as_deref() == Some("Failed") {
            return;
        }
        st.phase = Some("Failed".into());
        st.reason = Some(why.reason.clone());
        st.message = Some(why.message.clone());
        match client.update(&cur).await {
            Ok(_) => return,
            Err(e) if e.is_conflict() => continue,
            Err(e) if e.is_not_found() => return,
            Err(e) => {
                tracing::warn!(pod = %name, error = %e, "failing a rejected pod failed");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

async fn status_writer(client: Client, ns: String, name: String, uid: String, mut rx: tokio::sync::watch::Receiver<Option<serde_json::Value>>) {
    while rx.changed().await.is_ok() {
        let Some(status) = rx.borrow_and_update().clone() else { continue };
        let Ok(new) = serde_json::from_value::<k8s_openapi::api::core::v1::PodStatus>(status) else {
            tracing::error!(pod = %name, "computed an invalid pod status");
            continue;
        };
        for _ in 0..10 {
            let mut pod = match client.get::<Pod>(Some(&ns), &name).await {
                Ok(Some(p)) if p.metadata.uid.as_deref() == Some(uid.as_str()) => p,
                Ok(_) => return,
                Err(e) => {
                    tracing::warn!(pod = %name, error = %e, "reading pod for status failed");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            };
            if pod.status.as_ref() == Some(&new) {
                break;
            }
            pod.status = Some(new.clone());
            match client.update(&pod).await {
                Ok(_) => break,
                Err(e) if e.is_conflict() => continue,
                Err(e) if e.is_not_found() => return,
                Err(e) => {
                    tracing::warn!(pod = %name, error = %e, "writing pod status failed");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }
}
