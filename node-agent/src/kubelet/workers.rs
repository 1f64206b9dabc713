//! Starting a container, the kubelet's `SyncPod` in small: the pod's sandbox first (once,
//! shared by its containers), then the image as the pull policy says, then the container.
//! Each step is a future run on the kubelet's own thread (the process runtime ties its
//! children to it); its answer comes back to the actor and is fed to the state machine.

use super::lifecycle::{Event, Lifecycle};
use super::env;
use super::spec;
use super::{Exited, InstanceFiles, Kubelet, SandboxSlot};
use crate::images::credentials;
use crate::runtime::{ImageReady, PullAuth, PullPolicy, Runtime, RuntimeError, Sandbox, Started};
use k8s_openapi::api::core::v1::Secret;
use std::collections::BTreeMap;
use actix::prelude::*;
use jiff::Timestamp;
use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument;

/// A started container, why its postStart hook failed if it did, and the environment it
/// was started with.
type StartResult = Result<(ImageReady, Started, Option<String>, Vec<(String, String)>), RuntimeError>;

/// How long a postStart hook may take (the kubelet waits for it without a limit; a hook
/// that never ends should not hold a container back for ever).
const POST_START_LIMIT: Duration = Duration::from_secs(120);

/// The pull credentials of a pod's `imagePullSecrets` for `image`, and the secrets that
/// could not be read (the kubelet warns and pulls with what it has).
async fn pull_credentials(client: bus::Client, ns: String, secrets: Vec<String>, image: String) -> (Vec<PullAuth>, Vec<String>) {
    let mut ring = credentials::Keyring::default();
    let mut missing = Vec::new();
    for name in secrets {
        match client.get::<Secret>(Some(&ns), &name).await {
            Ok(Some(s)) => {
                let data: BTreeMap<String, Vec<u8>> = s.data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.0)).collect();
                if let Err(e) = ring.add_secret(&name, s.type_.as_deref().unwrap_or(""), &data) {
                    tracing::warn!(secret = %name, error = %e, "an image pull secret is not usable");
                }
            }
            _ => missing.push(name),
        }
    }
    (ring.lookup(&image), missing)
}

impl Kubelet {
    /// Carries out `Command::Start`: the answer comes later, as Started, PullFailed,
    /// NeverPull or CreateFailed; only a pod without a runtime answers at once.
    pub(super) fn start(&mut self, uid: &str, idx: usize, ctx: &mut Context<Self>) -> Option<Event> {
        let data_dir = self.data_dir.clone();
        let rt = self.pods.get_mut(uid)?;
        let runtime = match &rt.runtime {
            Ok(r) => r.clone(),
            Err(m) => return Some(Event::CreateFailed { idx, message: m.clone() }),
        };
        rt.starting += 1;
        match &mut rt.sandbox {
            SandboxSlot::Ready(sb) => {
                let sb = sb.clone();
                self.start_in(uid, idx, sb, runtime, ctx);
            }
            SandboxSlot::Creating(pending) => pending.push(idx),
            SandboxSlot::None if runtime.handler() == "simulated" => {
                // Hollow pods have no files: no directory, no volumes to write.
                rt.sandbox = SandboxSlot::Creating(vec![idx]);
                self.run_sandbox(uid, runtime, ctx);
            }
            SandboxSlot::None => {
                rt.sandbox = SandboxSlot::Creating(vec![idx]);
                let dir = spec::pod_dir(&data_dir, &rt.state.namespace, &rt.state.name, &rt.state.uid);
                if let Err(e) = std::fs::create_dir_all(&dir) {
                    rt.sandbox = SandboxSlot::None;
                    rt.starting -= 1;
                    return Some(Event::CreateFailed { idx, message: format!("failed to create the pod's directory {}: {e}", dir.display()) });
                }
                // Volumes first: the sandbox (and every container) waits for them.
                self.mount_then_sandbox(uid, runtime, ctx);
            }
        }
        None
    }

    /// Makes the pod's sandbox once its volumes are ready; its waiting containers start in it.
    pub(super) fn run_sandbox(&mut self, uid: &str, runtime: Arc<dyn Runtime>, ctx: &mut Context<Self>) {
        let Some(rt) = self.pods.get_mut(uid) else { return };
        let dir = spec::pod_dir(&self.data_dir, &rt.state.namespace, &rt.state.name, &rt.state.uid);
        let sandbox_spec = spec::sandbox_spec(&rt.pod, &dir, rt.sandbox_attempt, self.cluster_dns, &self.host_dns);
        rt.sandbox_attempt += 1;
        tracing::debug!(node = %self.node, pod = %format!("{}/{}", rt.state.namespace, rt.state.name), "creating the pod sandbox");
        let fut = runtime.run_sandbox(&sandbox_spec);
        let u = uid.to_string();
        ctx.spawn(fut.into_actor(self).map(move |res, act, ctx| act.sandbox_done(&u, runtime, res, ctx)));
    }

    fn sandbox_done(&mut self, uid: &str, runtime: Arc<dyn Runtime>, res: Result<Sandbox, RuntimeError>, ctx: &mut Context<Self>) {
        let stopping = self.stopping;
        let Some(rt) = self.pods.get_mut(uid).filter(|rt| !stopping && rt.state.lifecycle == Lifecycle::Active) else {
            // The pod went (or the agent is stopping) meanwhile: its sandbox goes too.
            if let Ok(sb) = res {
                tokio::spawn(async move { runtime.remove_sandbox(&sb).await }.instrument(self.span()));
            }
            if let Some(rt) = self.pods.get_mut(uid) {
                rt.sandbox = SandboxSlot::None;
                rt.starting = 0;
            }
            return;
        };
        let pending = match std::mem::replace(&mut rt.sandbox, SandboxSlot::None) {
            SandboxSlot::Creating(p) => p,
            other => {
                rt.sandbox = other;
                Vec::new()
            }
        };
        match res {
            Ok(sb) => {
                rt.pod_ip = sb.ip.clone();
                rt.sandbox = SandboxSlot::Ready(sb.clone());
                for idx in pending {
                    self.start_in(uid, idx, sb.clone(), runtime.clone(), ctx);
                }
            }
            Err(e) => {
                let message = e.to_string();
                tracing::warn!(node = %self.node, error = %message, "pod sandbox failed");
                self.note(uid, "Warning", "FailedCreatePodSandBox", message.clone());
                if let Some(rt) = self.pods.get_mut(uid) {
                    rt.starting = rt.starting.saturating_sub(pending.len());
                }
                for idx in pending {
                    self.drive(uid, Event::CreateFailed { idx, message: message.clone() }, ctx);
                }
            }
        }
    }

    fn start_in(&mut self, uid: &str, idx: usize, sb: Sandbox, runtime: Arc<dyn Runtime>, ctx: &mut Context<Self>) {
        let Some(rt) = self.pods.get(uid) else { return };
        let restarts = rt.state.containers.get(idx).map(|c| c.restart_count).unwrap_or(0);
        let dir = spec::pod_dir(&self.data_dir, &rt.state.namespace, &rt.state.name, &rt.state.uid);
        let pod_ip = rt.pod_ip.clone().unwrap_or_else(|| self.host_ip.clone());
        let d = env::Downward { node: self.node.clone(), host_ip: self.host_ip.clone(), pod_ip, allocatable: self.allocatable };
        let Some(mut cspec) = spec::container_spec(&rt.pod, idx, &dir, restarts, &[]) else {
            if let Some(rt) = self.pods.get_mut(uid) {
                rt.starting = rt.starting.saturating_sub(1);
            }
            self.drive(uid, Event::CreateFailed { idx, message: "no such container in the pod spec".into() }, ctx);
            return;
        };
        cspec.mounts = super::volumes::container_mounts(&rt.pod, idx, &rt.mounts);
        let container = rt.pod.spec.as_ref().and_then(|s| spec::container_at(s, idx)).cloned().unwrap_or_default();
        let files = self.termination_files(&dir, &container, &mut cspec, runtime.handler());
        // Host processes share the node's /etc/hosts; hollow pods have no files.
        if let (false, Some(ip)) = (matches!(runtime.handler(), "host" | "simulated"), rt.pod_ip.as_deref()) {
            if let Err(e) = super::hosts::mount(&rt.pod, &dir, ip, &mut cspec) {
                tracing::warn!(pod = %cspec.pod_key, error = %e, "no managed /etc/hosts");
            }
        }
        let declared = container.image_pull_policy.clone();
        let policy = PullPolicy::parse(declared.as_deref(), &cspec.image);
        self.next_instance += 1;
        let instance = self.next_instance;
        let (addr, u) = (ctx.address(), uid.to_string());
        let on_exit = Box::new(move |exit: crate::runtime::Exit| addr.do_send(Exited { uid: u, idx, instance, exit }));
        let post_start = self.hook(uid, idx, false).map(|a| (a, sb.clone(), cspec.env.clone(), cspec.working_dir.clone().unwrap_or_else(|| dir.join("work")), cspec.log_path.clone(), rt.pod_ip.clone().unwrap_or_else(|| self.host_ip.clone())));
        let hook_words = (container.name.clone(), rt.pod.clone());
        let rt2 = runtime.clone();
        let secrets: Vec<String> = rt.pod.spec.as_ref().and_then(|s| s.image_pull_secrets.clone()).unwrap_or_default().into_iter().map(|r| r.name).filter(|n| !n.is_empty()).collect();
        let (client, ns, addr2, u2) = (self.client.clone(), rt.state.namespace.clone(), ctx.address(), uid.to_string());
        let pod = rt.pod.clone();
        let fut = async move {
            // The environment is read when the container is made, as the kubelet does: a
            // source that appears later is picked up by the next try.
            let container = pod.spec.as_ref().and_then(|s| spec::container_at(s, idx)).cloned().unwrap_or_default();
            // A hollow container runs nothing that could read its environment.
            let resolved = if rt2.handler() == "simulated" {
                Vec::new()
            } else {
                let sources = env::Sources::fetch(&client, &pod).await.map_err(RuntimeError::Config)?;
                env::resolve(&pod, &container, &sources, &d).map_err(RuntimeError::Config)?
            };
            let Some(full) = spec::container_spec(&pod, idx, &dir, restarts, &resolved) else {
                return Err(RuntimeError::Create("no such container in the pod spec".into()));
            };
            cspec.env = full.env;
            cspec.command = full.command;
            cspec.args = full.args;
            let auth = if secrets.is_empty() || policy == PullPolicy::Never {
                Vec::new()
            } else {
                let (auth, missing) = pull_credentials(client.clone(), ns, secrets, cspec.image.clone()).await;
                if !missing.is_empty() {
                    addr2.do_send(super::Note { uid: u2, kind: "Warning", reason: "FailedToRetrieveImagePullSecret", message: format!("Unable to retrieve some image pull secrets ({}); attempting to pull the image may not succeed.", missing.join(", ")) });
                }
                auth
            };
            let image = rt2.ensure_image(&cspec.image, policy, auth).await?;
            super::security::verify_non_root(&cspec.security, &image.user, &pod, &cspec.name).map_err(RuntimeError::Config)?;
            cspec.security = super::security::with_image_user(cspec.security, &image.user);
            let started = rt2.start_container(&sb, &cspec, on_exit).await?;
            // The container is not Running until its postStart hook has ended.
            let mut hook_error = None;
            if let Some((action, sandbox, _, working_dir, log_path, pod_ip)) = post_start {
                let exec = crate::runtime::streams::ExecTarget { started: started.clone(), sandbox, env: cspec.env.clone(), working_dir, log_path, security: cspec.security.clone() };
                let target = crate::prober::Target { runtime: rt2.clone(), exec, pod_ip };
                if let crate::prober::Outcome::Failure(m) = crate::prober::run_hook(&action, &target, POST_START_LIMIT).await {
                    hook_error = Some(super::probes::hook_failure(&action, &hook_words.0, &hook_words.1, &m));
                }
            }
            Ok((image, started, hook_error, cspec.env))
        };
        let u = uid.to_string();
        ctx.spawn(fut.into_actor(self).map(move |res: StartResult, act, ctx| {
            if res.is_ok() {
                if let Some(rt) = act.pods.get_mut(&u) {
                    rt.files.insert(idx, files);
                }
            }
            act.start_done(&u, idx, instance, runtime, res, ctx)
        }));
    }

    fn start_done(&mut self, uid: &str, idx: usize, instance: u64, runtime: Arc<dyn Runtime>, res: StartResult, ctx: &mut Context<Self>) {
        let (name, image) = (self.container_name(uid, idx), self.container_image(uid, idx));
        if let Some(rt) = self.pods.get_mut(uid) {
            rt.starting = rt.starting.saturating_sub(1);
        }
        if !self.pods.contains_key(uid) || self.stopping {
            // Nobody wants it any more.
            if let Ok((_, s, _, _)) = res {
                tokio::spawn(async move { runtime.stop_container(&s, Duration::ZERO).await }.instrument(self.span()));
            }
            return;
        }
        let mut hook_failed = None;
        let ev = match res {
            Ok((img, started, hook_error, envs)) => {
                hook_failed = hook_error;
                match img.pulled {
                    None => self.note(uid, "Normal", "Pulled", format!("Container image \"{image}\" already present on machine")),
                    Some(took) => self.note(uid, "Normal", "Pulled", format!("Successfully pulled image \"{image}\" in {:.3}s", took.as_secs_f64())),
                }
                self.note(uid, "Normal", "Created", format!("Created container: {name}"));
                self.note(uid, "Normal", "Started", format!("Started container {name}"));
                tracing::info!(node = %self.node, container = %name, id = %started.id, "container started");
                if let Some(rt) = self.pods.get_mut(uid) {
                    rt.procs.insert(idx, (instance, started.clone()));
                    rt.envs.insert(idx, envs);
                }
                Event::Started { idx, instance, id: started.id, image_id: img.image_id, at: Timestamp::now() }
            }
            Err(RuntimeError::ImagePull(message)) => {
                self.note(uid, "Warning", "Failed", format!("Failed to pull image \"{image}\": {message}"));
                self.note(uid, "Warning", "Failed", "Error: ErrImagePull".into());
                Event::PullFailed { idx, message }
            }
            Err(RuntimeError::Config(message)) => {
                self.note(uid, "Warning", "Failed", format!("Error: {message}"));
                Event::ConfigFailed { idx, message }
            }
            Err(RuntimeError::ImageNeverPull(message)) => {
                self.note(uid, "Warning", "ErrImageNeverPull", message.clone());
                Event::NeverPull { idx, message }
            }
            Err(e) => {
                let message = e.to_string();
                self.note(uid, "Warning", "Failed", format!("Error: {message}"));
                Event::CreateFailed { idx, message }
            }
        };
        self.drive(uid, ev, ctx);
        if let Some(message) = hook_failed {
            self.note(uid, "Warning", "FailedPostStartHook", message);
            self.drive(uid, Event::PostStartFailed { idx, instance }, ctx);
        }
        if let Some(exit) = self.early_exits.remove(&instance) {
            if let Some(rt) = self.pods.get_mut(uid) {
                rt.procs.remove(&idx);
                rt.probe_tasks.remove(&idx);
            }
            let detail = self.exit_detail(uid, idx, &exit);
            self.drive(uid, Event::Exited { idx, instance, exit: detail, at: Timestamp::now() }, ctx);
        }
    }

    /// Where the instance's termination message is read at its end. A container gets a
    /// file of its own on the node mounted at terminationMessagePath, as the kubelet does;
    /// a host process has no mount namespace, so its path is read as it is (the default
    /// /dev/termination-log, a device on the host, is not read).
    fn termination_files(&self, dir: &std::path::Path, c: &k8s_openapi::api::core::v1::Container, cspec: &mut crate::runtime::ContainerSpec, handler: &str) -> InstanceFiles {
        let path = c.termination_message_path.clone().filter(|p| p.starts_with('/')).unwrap_or_else(|| "/dev/termination-log".into());
        let fallback_to_logs = c.termination_message_policy.as_deref() == Some("FallbackToLogsOnError");
        let message = if handler == "host" {
            (path != "/dev/termination-log").then(|| std::path::PathBuf::from(&path))
        } else if handler == "simulated" {
            // Hollow pods write nothing: no file per container for thousands of them.
            None
        } else {
            let f = dir.join("termination").join(format!("{}-{}", c.name, cspec.attempt));
            let made = f.parent().map(std::fs::create_dir_all).transpose().and_then(|_| std::fs::write(&f, b""));
            match made {
                Ok(()) => {
                    cspec.mounts.push(crate::runtime::Mount { volume: "termination-log".into(), host_path: f.clone(), container_path: path, read_only: false });
                    Some(f)
                }
                Err(e) => {
                    tracing::warn!(container = %c.name, error = %e, "no termination message file");
                    None
                }
            }
        };
        InstanceFiles { message, log: cspec.log_path.clone(), fallback_to_logs }
    }
}
