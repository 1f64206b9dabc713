//! The kubelet actor: a thin shell fed by the informer of this node's pods and by
//! container exits. It drives each container's pure state machine (`lifecycle`), carries
//! out the commands through the runtime, and reports pod status through one writer per pod.

pub mod lifecycle;
pub mod node;

use crate::runtime::{ContainerSpec, Runtime, Started};
use actix::prelude::*;
use bus::informer::InformerEvent;
use bus::Client;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;
use lifecycle::{Command, Container, Event, RestartPolicy};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

const ACTOR: &str = "kubelet";

struct PodRt {
    pod: Pod,
    key: String,
    policy: RestartPolicy,
    containers: Vec<Container>,
    /// Processes by container index.
    started: HashMap<usize, Started>,
    start_time: Timestamp,
    terminating: bool,
    /// Where the latest status goes; a per-pod writer task coalesces and writes it.
    status_tx: tokio::sync::watch::Sender<Option<serde_json::Value>>,
    /// A runtime-class problem that prevents every container from starting.
    blocked: Option<String>,
}

pub struct Kubelet {
    pub node: String,
    pub host_ip: String,
    pub data_dir: PathBuf,
    pub client: Client,
    pub runtime: Arc<dyn Runtime>,
    pods: HashMap<String, PodRt>,
    /// Set by Shutdown: nothing new starts and no status is written any more, so the store
    /// keeps saying what should run and a restarted agent brings it back.
    stopping: bool,
}

impl Kubelet {
    pub fn new(node: String, host_ip: String, data_dir: PathBuf, client: Client, runtime: Arc<dyn Runtime>) -> Kubelet {
        Kubelet { node, host_ip, data_dir, client, runtime, pods: HashMap::new(), stopping: false }
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
/// processes are gone.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Shutdown {
    pub grace: Duration,
}

fn uid_of(p: &Pod) -> String {
    p.metadata.uid.clone().unwrap_or_else(|| format!("{}/{}", p.metadata.namespace.as_deref().unwrap_or(""), p.metadata.name.as_deref().unwrap_or("")))
}

/// The pod's directory: working dirs and logs; the log service finds logs by its name.
pub fn pod_dir(data_dir: &std::path::Path, ns: &str, name: &str, uid: &str) -> PathBuf {
    data_dir.join("pods").join(format!("{ns}_{name}_{uid}"))
}

impl StreamHandler<InformerEvent<Pod>> for Kubelet {
    fn handle(&mut self, ev: InformerEvent<Pod>, ctx: &mut Context<Self>) {
        bus::metrics::handle(ACTOR, || match ev {
            InformerEvent::Listed(pods, _) => {
                let keep: std::collections::HashSet<String> = pods.iter().map(uid_of).collect();
                let gone: Vec<String> = self.pods.keys().filter(|u| !keep.contains(*u)).cloned().collect();
                for uid in gone {
                    self.forget(&uid, ctx);
                }
                for p in pods {
                    self.apply(p, ctx);
                }
            }
            InformerEvent::Applied(p, _) => self.apply(p, ctx),
            InformerEvent::Deleted(p, _) => self.forget(&uid_of(&p), ctx),
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
        if pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) != Some(self.node.as_str()) {
            return;
        }
        let uid = uid_of(&pod);
        let deleting = pod.metadata.deletion_timestamp.is_some();
        if let Some(rt) = self.pods.get_mut(&uid) {
            rt.pod = pod;
            if deleting && !rt.terminating {
                self.terminate(&uid, ctx);
            }
            return;
        }
        if deleting {
            // Nothing of it runs here (e.g. after an agent restart): finish the deletion.
            self.delete_from_store(&pod);
            return;
        }
        self.admit(uid, pod, ctx);
    }

    fn admit(&mut self, uid: String, pod: Pod, ctx: &mut Context<Self>) {
        let spec = pod.spec.clone().unwrap_or_default();
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        let containers: Vec<Container> = spec.containers.iter().map(|c| Container::new(&c.name, c.image.as_deref().unwrap_or(""))).collect();
        let blocked = match spec.runtime_class_name.as_deref() {
            None | Some("host") => None,
            Some(other) => Some(format!("RuntimeClass \"{other}\" is not served by this node: only \"host\" (host-process mode) is available")),
        };
        let (status_tx, status_rx) = tokio::sync::watch::channel(None);
        tokio::spawn(status_writer(self.client.clone(), ns.clone(), name.clone(), uid.clone(), status_rx));
        let rt = PodRt {
            pod,
            key: format!("{ns}/{name}"),
            policy: RestartPolicy::parse(spec.restart_policy.as_deref()),
            containers,
            started: HashMap::new(),
            start_time: Timestamp::now(),
            terminating: false,
            status_tx,
            blocked,
        };
        tracing::info!(pod = %rt.key, node = %self.node, "starting pod");
        self.pods.insert(uid.clone(), rt);
        for idx in 0..self.pods.get(&uid).map(|r| r.containers.len()).unwrap_or(0) {
            self.start_container(&uid, idx, ctx);
        }
        self.report(&uid);
    }

    fn container_spec(&self, rt: &PodRt, idx: usize) -> Option<ContainerSpec> {
        let spec = rt.pod.spec.as_ref()?;
        let c = spec.containers.get(idx)?;
        let ns = rt.pod.metadata.namespace.clone().unwrap_or_default();
        let name = rt.pod.metadata.name.clone().unwrap_or_default();
        let uid = uid_of(&rt.pod);
        let dir = pod_dir(&self.data_dir, &ns, &name, &uid);
        let mut command: Vec<String> = c.command.clone().unwrap_or_default();
        if !command.is_empty() {
            command.extend(c.args.clone().unwrap_or_default());
        }
        let mut env = vec![("HOSTNAME".to_string(), name.clone())];
        for e in c.env.clone().unwrap_or_default() {
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
                _ => None,
            };
            if let Some(v) = value {
                env.push((e.name.clone(), v));
            }
        }
        let restarts = rt.containers.get(idx).map(|c| c.restart_count).unwrap_or(0);
        Some(ContainerSpec {
            pod_key: rt.key.clone(),
            name: c.name.clone(),
            command,
            env,
            working_dir: c.working_dir.clone().map(PathBuf::from).unwrap_or_else(|| dir.join("work")),
            log_path: dir.join(&c.name).join(format!("{restarts}.log")),
        })
    }

    fn start_container(&mut self, uid: &str, idx: usize, ctx: &mut Context<Self>) {
        let Some(rt) = self.pods.get(uid) else { return };
        let blocked = rt.blocked.clone();
        let spec = self.container_spec(rt, idx);
        let event = match (blocked, spec) {
            (Some(msg), _) => Event::CreateFailed { message: msg },
            (None, None) => return,
            (None, Some(spec)) => {
                let addr = ctx.address();
                let (u, i) = (uid.to_string(), idx);
                let on_exit = Box::new(move |s: Started, code: i32| addr.do_send(Exited { uid: u, idx: i, pid: s.pid, code }));
                match self.runtime.start(&spec, on_exit) {
                    Ok(s) => {
                        if let Some(rt) = self.pods.get_mut(uid) {
                            rt.started.insert(idx, s);
                        }
                        Event::Started { pid: s.pid, at: Timestamp::now() }
                    }
                    Err(e) => Event::CreateFailed { message: e.to_string() },
                }
            }
        };
        self.step(uid, idx, event, ctx);
    }

    fn step(&mut self, uid: &str, idx: usize, ev: Event, ctx: &mut Context<Self>) {
        let Some(rt) = self.pods.get_mut(uid) else { return };
        let policy = rt.policy;
        let Some(c) = rt.containers.get_mut(idx) else { return };
        let cmds = c.step(ev, policy);
        for cmd in cmds {
            match cmd {
                Command::Start => self.start_container(uid, idx, ctx),
                Command::RestartAfter(d) => {
                    let u = uid.to_string();
                    ctx.notify_later(RestartDue { uid: u, idx }, d);
                }
                Command::Kill => self.kill(uid, idx, ctx),
            }
        }
        self.report(uid);
        self.maybe_finish_deletion(uid);
    }

    fn grace(rt: &PodRt) -> Duration {
        let secs = rt
            .pod
            .metadata
            .deletion_grace_period_seconds
            .or_else(|| rt.pod.spec.as_ref().and_then(|s| s.termination_grace_period_seconds))
            .unwrap_or(30)
            .max(0);
        Duration::from_secs(secs as u64)
    }

    fn kill(&mut self, uid: &str, idx: usize, ctx: &mut Context<Self>) {
        let Some(rt) = self.pods.get(uid) else { return };
        let Some(s) = rt.started.get(&idx).copied() else { return };
        let grace = Self::grace(rt);
        self.runtime.signal(s, libc::SIGTERM);
        let runtime = self.runtime.clone();
        ctx.run_later(grace, move |_, _| {
            if runtime.alive(s) {
                runtime.signal(s, libc::SIGKILL);
            }
        });
    }

    fn terminate(&mut self, uid: &str, ctx: &mut Context<Self>) {
        let Some(rt) = self.pods.get_mut(uid) else { return };
        rt.terminating = true;
        tracing::info!(pod = %rt.key, "stopping pod");
        let n = rt.containers.len();
        for idx in 0..n {
            self.step(uid, idx, Event::Stop, ctx);
        }
        self.maybe_finish_deletion(uid);
    }

    /// A terminating pod whose containers have all stopped is removed from the store.
    fn maybe_finish_deletion(&mut self, uid: &str) {
        let Some(rt) = self.pods.get(uid) else { return };
        if rt.terminating && rt.containers.iter().all(|c| c.finished()) {
            let pod = rt.pod.clone();
            self.pods.remove(uid);
            self.delete_from_store(&pod);
        }
    }

    fn delete_from_store(&self, pod: &Pod) {
        let client = self.client.clone();
        let ns = pod.metadata.namespace.clone();
        let name = pod.metadata.name.clone().unwrap_or_default();
        tokio::spawn(async move {
            match client.delete::<Pod>(ns.as_deref(), &name, None).await {
                Ok(_) => {}
                Err(e) if e.is_not_found() => {}
                Err(e) => tracing::warn!(pod = %name, error = %e, "deleting a terminated pod failed"),
            }
        });
    }

    /// The pod is gone from the store (or from this node): kill what still runs.
    fn forget(&mut self, uid: &str, _ctx: &mut Context<Self>) {
        if let Some(mut rt) = self.pods.remove(uid) {
            for c in rt.containers.iter_mut() {
                c.stopping = true;
            }
            for s in rt.started.values() {
                self.runtime.signal(*s, libc::SIGKILL);
            }
        }
    }

    fn report(&self, uid: &str) {
        let Some(rt) = self.pods.get(uid) else { return };
        let prev = rt.pod.status.as_ref().and_then(|s| serde_json::to_value(s).ok());
        let status = lifecycle::pod_status(&rt.containers, rt.policy, &self.host_ip, rt.start_time, prev.as_ref(), Timestamp::now());
        rt.status_tx.send_replace(Some(status));
    }
}

impl Handler<Exited> for Kubelet {
    type Result = ();
    fn handle(&mut self, m: Exited, ctx: &mut Context<Self>) {
        bus::metrics::handle(ACTOR, || {
            // An exit of an earlier instance (already replaced) changes nothing.
            let current = self.pods.get(&m.uid).and_then(|rt| rt.started.get(&m.idx)).map(|s| s.pid);
            if current != Some(m.pid) {
                return;
            }
            if let Some(key) = self.pods.get(&m.uid).map(|r| r.key.clone()) {
                tracing::info!(pod = %key, container = m.idx, code = m.code, "container exited");
            }
            self.step(&m.uid, m.idx, Event::Exited { code: m.code, at: Timestamp::now() }, ctx);
        })
    }
}

impl Handler<RestartDue> for Kubelet {
    type Result = ();
    fn handle(&mut self, m: RestartDue, ctx: &mut Context<Self>) {
        bus::metrics::handle(ACTOR, || self.step(&m.uid, m.idx, Event::BackoffElapsed, ctx))
    }
}

impl Handler<Shutdown> for Kubelet {
    type Result = ResponseActFuture<Self, ()>;
    fn handle(&mut self, m: Shutdown, _ctx: &mut Context<Self>) -> Self::Result {
        let _span = tracing::info_span!("kubelet", node = %self.node, op = "shutdown").entered();
        self.stopping = true;
        // Dropping the pods' entries ends their status writers and makes the exits that
        // follow no-ops: the stored status stays as it was.
        let procs: Vec<Started> = self.pods.drain().flat_map(|(_, rt)| rt.started.into_values()).collect();
        let runtime = self.runtime.clone();
        for s in &procs {
            runtime.signal(*s, libc::SIGTERM);
        }
        Box::pin(
            async move {
                let deadline = tokio::time::Instant::now() + m.grace;
                while procs.iter().any(|s| runtime.alive(*s)) && tokio::time::Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                for s in &procs {
                    if runtime.alive(*s) {
                        runtime.signal(*s, libc::SIGKILL);
                    }
                }
                let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
                while procs.iter().any(|s| runtime.alive(*s)) && tokio::time::Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            .into_actor(self)
            .map(|_, act, ctx| {
                act.pods.clear();
                ctx.stop();
            }),
        )
    }
}

/// Writes the newest status of one pod, one write at a time (so writes never reorder),
/// with compare-and-swap on the stored pod and a retry on conflict. Ends when the pod's
/// runtime entry is dropped.
async fn status_writer(client: Client, ns: String, name: String, uid: String, mut rx: tokio::sync::watch::Receiver<Option<serde_json::Value>>) {
    use tracing::Instrument;
    let span = tracing::info_span!("kubelet", pod = %format!("{ns}/{name}"), op = "status");
    async move {
        while rx.changed().await.is_ok() {
            let Some(status) = rx.borrow_and_update().clone() else { continue };
            for _ in 0..10 {
                let pod = match client.get::<Pod>(Some(&ns), &name).await {
                    Ok(Some(p)) if p.metadata.uid.as_deref() == Some(uid.as_str()) => p,
                    Ok(_) => return,
                    Err(e) => {
                        tracing::warn!(error = %e, "reading pod for status failed");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        continue;
                    }
                };
                let stored = pod.status.as_ref().and_then(|s| serde_json::to_value(s).ok());
                let Ok(new) = serde_json::from_value(status.clone()) else { break };
                let mut pod = pod;
                pod.status = Some(new);
                if stored == pod.status.as_ref().and_then(|s| serde_json::to_value(s).ok()) {
                    break;
                }
                match client.update(&pod).await {
                    Ok(_) => break,
                    Err(e) if e.is_conflict() => continue,
                    Err(e) if e.is_not_found() => return,
                    Err(e) => {
                        tracing::warn!(error = %e, "writing pod status failed");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            }
        }
    }
    .instrument(span)
    .await
}
