//! The runtime over CRI v1 (containerd, or any CRI endpoint): the kubelet's
//! `kuberuntime` in small. A pod is a sandbox (containerd makes its network namespace and
//! calls CNI), its containers are created and started in it with their logs in the pod's
//! directory, and their ends are seen by polling ContainerStatus (containerd 1.6 has no
//! container event stream), as the kubelet's PLEG relists.

mod adopt;
pub mod cgroups;
pub mod client;
pub mod containerd;
pub mod image_store;
mod connect;
mod streams;

pub use connect::connect;

use super::{ContainerSpec, ImageReady, PullAuth, NodeImage, OnExit, PullPolicy, Runtime, RuntimeError, Sandbox, SandboxSpec, Started};
use crate::images::{self, reference, PullDecision};
use client::{go_error, pb, Cri};
use futures::future::BoxFuture;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How often a running container's state is read to see it end.
const RELIST: Duration = Duration::from_millis(500);
/// How long, and how often, a SIGKILLed container's status is read again for containerd's
/// OOM verdict.
const OOM_SETTLE: Duration = Duration::from_millis(200);
// Up to 3 s: under load containerd has handled its OOM event well after the exit.
const OOM_SETTLE_TRIES: u32 = 15;
/// The label every sandbox of this agent carries, with its node's name.
pub const NODE_LABEL: &str = "flotilla.io/node";

#[derive(Clone)]
pub struct CriRuntime {
    cri: Cri,
    /// `containerd://1.6.20`.
    version: String,
    node: String,
    /// `NodeConfig::host_id`: the pods' cgroup parent is named after it.
    host_id: String,
    host_ip: String,
    /// Each sandbox's config: CreateContainer wants it again.
    configs: Arc<Mutex<HashMap<String, pb::PodSandboxConfig>>>,
    /// When each image was last made ready for a container (image GC's order).
    pub last_used: image_store::LastUsed,
}

impl CriRuntime {
    pub fn new(cri: Cri, version: &pb::VersionResponse, node: &str, host_id: &str, host_ip: &str) -> CriRuntime {
        CriRuntime {
            cri,
            version: format!("{}://{}", version.runtime_name, version.runtime_version),
            node: node.to_string(),
            host_id: host_id.to_string(),
            host_ip: host_ip.to_string(),
            configs: Arc::new(Mutex::new(HashMap::new())),
            last_used: Default::default(),
        }
    }

    pub fn client(&self) -> Cri {
        self.cri.clone()
    }
}

fn bare_id(started_id: &str) -> String {
    started_id.split_once("://").map(|(_, id)| id).unwrap_or(started_id).to_string()
}

fn sandbox_config(spec: &SandboxSpec, node: &str, host_id: &str) -> pb::PodSandboxConfig {
    let mut labels: HashMap<String, String> = spec.labels.clone().into_iter().collect();
    labels.insert("io.kubernetes.pod.name".into(), spec.name.clone());
    labels.insert("io.kubernetes.pod.namespace".into(), spec.namespace.clone());
    labels.insert("io.kubernetes.pod.uid".into(), spec.uid.clone());
    labels.insert(NODE_LABEL.into(), node.to_string());
    let network = if spec.host_network { pb::NamespaceMode::Node } else { pb::NamespaceMode::Pod };
    pb::PodSandboxConfig {
        metadata: Some(pb::PodSandboxMetadata { name: spec.name.clone(), uid: spec.uid.clone(), namespace: spec.namespace.clone(), attempt: spec.attempt }),
        hostname: spec.hostname.clone(),
        log_directory: spec.log_dir.to_string_lossy().into_owned(),
        dns_config: spec.dns.as_ref().map(|d| pb::DnsConfig { servers: d.servers.clone(), searches: d.searches.clone(), options: d.options.clone() }),
        port_mappings: spec
            .ports
            .iter()
            .map(|p| pb::PortMapping {
                protocol: match p.protocol.as_str() {
                    "UDP" => pb::Protocol::Udp,
                    "SCTP" => pb::Protocol::Sctp,
                    _ => pb::Protocol::Tcp,
                } as i32,
                container_port: p.container_port,
                host_port: p.host_port,
                host_ip: p.host_ip.clone(),
            })
            .collect(),
        labels,
        annotations: HashMap::new(),
        linux: Some(pb::LinuxPodSandboxConfig {
            cgroup_parent: cgroups::pod_parent(host_id, &spec.uid),
            security_context: Some(pb::LinuxSandboxSecurityContext {
                namespace_options: Some(pb::NamespaceOption { network: network as i32, pid: pb::NamespaceMode::Container as i32, ipc: pb::NamespaceMode::Pod as i32, target_id: String::new() }),
                privileged: spec.privileged,
                ..Default::default()
            }),
            sysctls: HashMap::new(),
        }),
    }
}

/// cgroup settings as the kubelet's `generateLinuxContainerResources` (cgroupfs): shares
/// from the cpu request (2 at least), a CFS quota from the cpu limit over a 100 ms period,
/// the memory limit in bytes; None when nothing is asked, so the runtime's defaults stay.
fn linux_resources(r: &super::Resources) -> Option<pb::LinuxContainerResources> {
    if *r == super::Resources::default() {
        return None;
    }
    const PERIOD: i64 = 100_000;
    let shares = r.cpu_request_millis.map(|m| ((m as i64) * 1024 / 1000).max(2)).unwrap_or(2);
    let quota = r.cpu_limit_millis.map(|m| ((m as i64) * PERIOD / 1000).max(1000)).unwrap_or(0);
    Some(pb::LinuxContainerResources {
        cpu_period: if quota > 0 { PERIOD } else { 0 },
        cpu_quota: quota,
        cpu_shares: shares,
        memory_limit_in_bytes: r.memory_limit_bytes.unwrap_or(0),
        oom_score_adj: 0,
    })
}

/// The container's securityContext as CRI carries it; capabilities only when some are
/// named, so the runtime's default set stays otherwise.
fn container_security(s: &super::Security, namespaces: Option<pb::NamespaceOption>) -> pb::LinuxContainerSecurityContext {
    let caps = !(s.add_capabilities.is_empty() && s.drop_capabilities.is_empty());
    pb::LinuxContainerSecurityContext {
        capabilities: caps.then(|| pb::Capability { add_capabilities: s.add_capabilities.clone(), drop_capabilities: s.drop_capabilities.clone() }),
        privileged: s.privileged,
        namespace_options: namespaces,
        run_as_user: s.run_as_user.map(|value| pb::Int64Value { value }),
        run_as_username: s.run_as_username.clone(),
        run_as_group: s.run_as_group.map(|value| pb::Int64Value { value }),
        readonly_rootfs: s.readonly_rootfs,
        supplemental_groups: s.supplemental_groups.clone(),
        no_new_privs: s.no_new_privs,
    }
}

/// The user the image says it runs as.
fn image_user(img: Option<&pb::Image>) -> super::ImageUser {
    img.map(|i| super::ImageUser { uid: i.uid.as_ref().map(|u| u.value), username: i.username.clone() }).unwrap_or_default()
}

/// The `imageID` the kubelet reports: the repo digest when the runtime has one.
fn image_id(img: &pb::Image) -> String {
    img.repo_digests.first().cloned().unwrap_or_else(|| img.id.clone())
}

async fn image_status(cri: &Cri, name: &str) -> Result<Option<pb::Image>, tonic::Status> {
    let mut c = cri.images.clone();
    let r = c.image_status(pb::ImageStatusRequest { image: Some(pb::ImageSpec { image: name.to_string(), ..Default::default() }), verbose: false }).await?;
    Ok(r.into_inner().image)
}

/// Pulls `name` with each credential in turn until one works (the kubelet's order), or
/// anonymously when there are none; the last failure is the one reported.
async fn pull(cri: &Cri, name: &str, auth: Vec<PullAuth>) -> Result<(), RuntimeError> {
    let tries: Vec<Option<pb::AuthConfig>> = if auth.is_empty() {
        vec![None]
    } else {
        auth.into_iter().map(|a| Some(pb::AuthConfig { username: a.username, password: a.password, auth: a.auth, ..Default::default() })).collect()
    };
    let mut last = None;
    for auth in tries {
        let mut c = cri.images.clone();
        match c.pull_image(pb::PullImageRequest { image: Some(pb::ImageSpec { image: name.to_string(), ..Default::default() }), auth, sandbox_config: None }).await {
            Ok(_) => return Ok(()),
            Err(e) => last = Some(RuntimeError::ImagePull(go_error(&e))),
        }
    }
    Err(last.unwrap_or_else(|| RuntimeError::ImagePull("no pull was tried".into())))
}

/// Polls the container until it has exited, then reports its code and removes it (its
/// log stays in the pod's directory for `kubectl logs --previous`).
async fn watch_exit(cri: Cri, id: String, on_exit: OnExit) {
    let mut failures = 0u32;
    loop {
        tokio::time::sleep(RELIST).await;
        let mut rt = cri.runtime.clone();
        match rt.container_status(pb::ContainerStatusRequest { container_id: id.clone(), verbose: false }).await {
            Ok(r) => {
                failures = 0;
                let Some(st) = r.into_inner().status else { continue };
                if st.state == pb::ContainerState::ContainerExited as i32 {
                    // containerd says OOMKilled when the cgroup's OOM killer ended it; it
                    // learns that from an event of its own, which may be handled just after
                    // the exit: a SIGKILLed container is looked at again before it is judged.
                    let mut reason = st.reason;
                    for _ in 0..OOM_SETTLE_TRIES {
                        if reason == "OOMKilled" || st.exit_code != 137 {
                            break;
                        }
                        tokio::time::sleep(OOM_SETTLE).await;
                        match rt.container_status(pb::ContainerStatusRequest { container_id: id.clone(), verbose: false }).await {
                            Ok(r) => reason = r.into_inner().status.map(|s| s.reason).unwrap_or_default(),
                            Err(_) => break,
                        }
                    }
                    let reason = Some(reason).filter(|r| r == "OOMKilled");
                    on_exit(super::Exit { code: st.exit_code, reason });
                    let _ = rt.remove_container(pb::RemoveContainerRequest { container_id: id }).await;
                    return;
                }
            }
            // Removed under us (its sandbox went): it was killed.
            Err(e) if e.code() == tonic::Code::NotFound => {
                on_exit(super::Exit::code(137));
                return;
            }
            Err(e) => {
                failures += 1;
                // The runtime is gone (the agent is stopping): nothing more to learn.
                if failures > 20 {
                    tracing::warn!(container = %id, error = %go_error(&e), "lost track of a container");
                    on_exit(super::Exit::code(255));
                    return;
                }
            }
        }
    }
}

/// `ensure_image`'s work, with the image's id (for image GC's last-used times).
async fn ensure(cri: &Cri, image: &str, name: &str, policy: PullPolicy, auth: Vec<PullAuth>) -> Result<(ImageReady, Option<String>), RuntimeError> {
    let present = image_status(cri, name).await.map_err(|e| RuntimeError::ImagePull(go_error(&e)))?;
    match images::decide(image, policy, present.is_some()) {
        PullDecision::UsePresent => Ok((ImageReady { image_id: present.as_ref().map(image_id).unwrap_or_default(), pulled: None, user: image_user(present.as_ref()) }, present.map(|i| i.id))),
        PullDecision::NeverPull(m) => Err(RuntimeError::ImageNeverPull(m)),
        PullDecision::Pull => {
            let t0 = Instant::now();
            pull(cri, name, auth).await?;
            let img = image_status(cri, name).await.map_err(|e| RuntimeError::ImagePull(go_error(&e)))?;
            Ok((ImageReady { image_id: img.as_ref().map(image_id).unwrap_or_default(), pulled: Some(t0.elapsed()), user: image_user(img.as_ref()) }, img.map(|i| i.id)))
        }
    }
}

impl Runtime for CriRuntime {
    fn handler(&self) -> &'static str {
        "runc"
    }

    fn version(&self) -> String {
        self.version.clone()
    }

    fn ensure_image(&self, image: &str, policy: PullPolicy, auth: Vec<PullAuth>) -> BoxFuture<'static, Result<ImageReady, RuntimeError>> {
        let cri = self.cri.clone();
        let (image, name) = (image.to_string(), reference::normalize(image));
        let last_used = self.last_used.clone();
        Box::pin(async move {
            let ready = ensure(&cri, &image, &name, policy, auth).await?;
            if let (Ok(mut m), Some(id)) = (last_used.lock(), ready.1) {
                m.insert(id, image_store::now_secs());
            }
            Ok(ready.0)
        })
    }

    fn run_sandbox(&self, spec: &SandboxSpec) -> BoxFuture<'static, Result<Sandbox, RuntimeError>> {
        let cri = self.cri.clone();
        let config = sandbox_config(spec, &self.node, &self.host_id);
        let configs = self.configs.clone();
        let (uid, host_network, host_ip) = (spec.uid.clone(), spec.host_network, self.host_ip.clone());
        Box::pin(async move {
            let mut rt = cri.runtime.clone();
            let id = match rt.run_pod_sandbox(pb::RunPodSandboxRequest { config: Some(config.clone()), runtime_handler: String::new() }).await {
                Ok(r) => r.into_inner().pod_sandbox_id,
                Err(e) => {
                    // A failed sandbox keeps its name reserved: remove what is left of it.
                    remove_pod_sandboxes(&cri, &uid).await;
                    return Err(RuntimeError::Sandbox(format!("Failed to create pod sandbox: {}", go_error(&e))));
                }
            };
            let status = rt.pod_sandbox_status(pb::PodSandboxStatusRequest { pod_sandbox_id: id.clone(), verbose: false }).await.map_err(|e| RuntimeError::Sandbox(go_error(&e)))?;
            let ip = status.into_inner().status.and_then(|s| s.network).map(|n| n.ip).filter(|ip| !ip.is_empty());
            let ip = if host_network { Some(host_ip) } else { ip };
            if let Ok(mut m) = configs.lock() {
                m.insert(id.clone(), config);
            }
            Ok(Sandbox { id, ip })
        })
    }

    fn start_container(&self, sandbox: &Sandbox, spec: &ContainerSpec, on_exit: OnExit) -> BoxFuture<'static, Result<Started, RuntimeError>> {
        let cri = self.cri.clone();
        let sandbox_config = self.configs.lock().ok().and_then(|m| m.get(&sandbox.id).cloned());
        let (sandbox_id, spec) = (sandbox.id.clone(), spec.clone());
        Box::pin(async move {
            let Some(sandbox_config) = sandbox_config else { return Err(RuntimeError::Create(format!("sandbox {sandbox_id} is not known"))) };
            let log_dir = std::path::PathBuf::from(&sandbox_config.log_directory);
            let log_path = spec.log_path.strip_prefix(&log_dir).unwrap_or(&spec.log_path).to_string_lossy().into_owned();
            let mut labels = HashMap::new();
            labels.insert("io.kubernetes.container.name".to_string(), spec.name.clone());
            for k in ["io.kubernetes.pod.name", "io.kubernetes.pod.namespace", "io.kubernetes.pod.uid"] {
                if let Some(v) = sandbox_config.labels.get(k) {
                    labels.insert(k.to_string(), v.clone());
                }
            }
            let config = pb::ContainerConfig {
                metadata: Some(pb::ContainerMetadata { name: spec.name.clone(), attempt: spec.attempt }),
                image: Some(pb::ImageSpec { image: reference::normalize(&spec.image), ..Default::default() }),
                command: spec.command.clone(),
                args: spec.args.clone(),
                working_dir: spec.working_dir.as_ref().map(|w| w.to_string_lossy().into_owned()).unwrap_or_default(),
                envs: spec.env.iter().map(|(k, v)| pb::KeyValue { key: k.clone(), value: v.clone() }).collect(),
                mounts: spec.mounts.iter().map(|m| pb::Mount { container_path: m.container_path.clone(), host_path: m.host_path.to_string_lossy().into_owned(), readonly: m.read_only }).collect(),
                labels,
                log_path,
                stdin: spec.stdin,
                stdin_once: spec.stdin_once,
                tty: spec.tty,
                linux: Some(pb::LinuxContainerConfig {
                    resources: linux_resources(&spec.resources),
                    security_context: Some(container_security(&spec.security, sandbox_config.linux.as_ref().and_then(|l| l.security_context.as_ref()).and_then(|s| s.namespace_options.clone()))),
                }),
                ..Default::default()
            };
            let mut rt = cri.runtime.clone();
            let id = rt
                .create_container(pb::CreateContainerRequest { pod_sandbox_id: sandbox_id, config: Some(config), sandbox_config: Some(sandbox_config) })
                .await
                .map_err(|e| RuntimeError::Create(go_error(&e)))?
                .into_inner()
                .container_id;
            if let Err(e) = rt.start_container(pb::StartContainerRequest { container_id: id.clone() }).await {
                let _ = rt.remove_container(pb::RemoveContainerRequest { container_id: id }).await;
                return Err(RuntimeError::Create(go_error(&e)));
            }
            tokio::spawn(watch_exit(cri.clone(), id.clone(), on_exit));
            Ok(Started { id: format!("containerd://{id}"), pid: None })
        })
    }

    fn stop_container(&self, started: &Started, grace: Duration) -> BoxFuture<'static, ()> {
        let cri = self.cri.clone();
        let id = bare_id(&started.id);
        Box::pin(async move {
            let mut rt = cri.runtime.clone();
            if let Err(e) = rt.stop_container(pb::StopContainerRequest { container_id: id.clone(), timeout: grace.as_secs() as i64 }).await {
                if e.code() != tonic::Code::NotFound {
                    tracing::warn!(container = %id, error = %go_error(&e), "stopping a container failed");
                }
            }
        })
    }

    fn remove_sandbox(&self, sandbox: &Sandbox) -> BoxFuture<'static, ()> {
        let cri = self.cri.clone();
        let id = sandbox.id.clone();
        let uid = self.configs.lock().ok().and_then(|mut m| m.remove(&id)).and_then(|c| c.metadata).map(|m| m.uid);
        let host_id = self.host_id.clone();
        Box::pin(async move {
            remove_sandbox_id(&cri, &id).await;
            if let Some(uid) = uid {
                cgroups::remove_pod(&host_id, &uid);
            }
        })
    }

    fn exec(&self, target: &super::streams::ExecTarget, command: Vec<String>, s: super::streams::Streams) -> BoxFuture<'static, Result<super::streams::Session, RuntimeError>> {
        Box::pin(streams::exec(self.cri.clone(), bare_id(&target.started.id), command, s))
    }

    fn exec_sync(&self, target: &super::streams::ExecTarget, command: Vec<String>, timeout: Duration) -> BoxFuture<'static, Result<super::ExecOutput, RuntimeError>> {
        let cri = self.cri.clone();
        let id = bare_id(&target.started.id);
        Box::pin(async move {
            let mut rt = cri.runtime.clone();
            let req = pb::ExecSyncRequest { container_id: id, cmd: command, timeout: timeout.as_secs().max(1) as i64 };
            // containerd enforces the timeout; ours is a safety net a little later.
            let call = tokio::time::timeout(timeout + Duration::from_secs(2), rt.exec_sync(req));
            match call.await {
                Ok(Ok(r)) => {
                    let r = r.into_inner();
                    Ok(super::ExecOutput { exit_code: r.exit_code, stdout: r.stdout, stderr: r.stderr })
                }
                Ok(Err(e)) => Err(RuntimeError::Stream(go_error(&e))),
                Err(_) => Err(RuntimeError::Stream(format!("command timed out after {}s", timeout.as_secs_f64()))),
            }
        })
    }

    fn attach(&self, target: &super::streams::ExecTarget, s: super::streams::Streams) -> BoxFuture<'static, Result<super::streams::Session, RuntimeError>> {
        Box::pin(streams::attach(self.cri.clone(), bare_id(&target.started.id), s))
    }

    fn port_forward(&self, sandbox: &Sandbox, port: u16) -> BoxFuture<'static, Result<super::streams::Session, RuntimeError>> {
        Box::pin(streams::port_forward(self.cri.clone(), sandbox.id.clone(), port))
    }

    fn container_usage(&self, started: &Started) -> BoxFuture<'static, Option<super::Usage>> {
        let cri = self.cri.clone();
        let id = started.id.trim_start_matches("containerd://").to_string();
        Box::pin(async move {
            let mut rt = cri.runtime.clone();
            let stats = rt.container_stats(pb::ContainerStatsRequest { container_id: id }).await.ok()?.into_inner().stats?;
            Some(super::Usage {
                cpu_ns: stats.cpu.and_then(|c| c.usage_core_nano_seconds).map(|v| v.value).unwrap_or(0),
                memory_bytes: stats.memory.and_then(|m| m.working_set_bytes).map(|v| v.value).unwrap_or(0),
            })
        })
    }

    fn find(&self, spec: &SandboxSpec) -> BoxFuture<'static, Option<super::Found>> {
        let me = self.clone();
        let spec = spec.clone();
        Box::pin(async move { me.find_pod(&spec).await })
    }

    fn follow(&self, started: &Started, on_exit: OnExit) {
        tokio::spawn(watch_exit(self.cri.clone(), bare_id(&started.id), on_exit));
    }

    fn sweep(&self, keep: Vec<String>) -> BoxFuture<'static, usize> {
        Box::pin(CriRuntime::sweep_except(self.cri.clone(), self.node.clone(), self.host_id.clone(), keep))
    }

    fn list_images(&self) -> BoxFuture<'static, Vec<NodeImage>> {
        let cri = self.cri.clone();
        Box::pin(async move {
            let mut c = cri.images.clone();
            let Ok(r) = c.list_images(pb::ListImagesRequest { filter: None }).await else { return Vec::new() };
            r.into_inner()
                .images
                .into_iter()
                .map(|i| NodeImage { names: i.repo_digests.iter().chain(&i.repo_tags).cloned().collect(), size_bytes: i.size })
                .filter(|i| !i.names.is_empty())
                .collect()
        })
    }
}

async fn remove_sandbox_id(cri: &Cri, id: &str) {
    let mut rt = cri.runtime.clone();
    // Stopping kills the containers and tears the network down (CNI DEL).
    if let Err(e) = rt.stop_pod_sandbox(pb::StopPodSandboxRequest { pod_sandbox_id: id.to_string() }).await {
        if e.code() != tonic::Code::NotFound {
            tracing::warn!(sandbox = %id, error = %go_error(&e), "stopping a pod sandbox failed");
        }
    }
    if let Err(e) = rt.remove_pod_sandbox(pb::RemovePodSandboxRequest { pod_sandbox_id: id.to_string() }).await {
        if e.code() != tonic::Code::NotFound {
            tracing::warn!(sandbox = %id, error = %go_error(&e), "removing a pod sandbox failed");
        }
    }
}

/// Removes every sandbox of the pod `uid` (what a failed RunPodSandbox left).
async fn remove_pod_sandboxes(cri: &Cri, uid: &str) {
    let mut rt = cri.runtime.clone();
    let filter = pb::PodSandboxFilter { label_selector: [("io.kubernetes.pod.uid".to_string(), uid.to_string())].into(), ..Default::default() };
    if let Ok(r) = rt.list_pod_sandbox(pb::ListPodSandboxRequest { filter: Some(filter) }).await {
        for s in r.into_inner().items {
            remove_sandbox_id(cri, &s.id).await;
        }
    }
}

/// Removes every sandbox this node's agent made (labelled with its node), e.g. left by an
/// agent that crashed, or all of them at shutdown.
pub async fn remove_node_sandboxes(cri: &Cri, node: &str) -> usize {
    let mut rt = cri.runtime.clone();
    let filter = pb::PodSandboxFilter { label_selector: [(NODE_LABEL.to_string(), node.to_string())].into(), ..Default::default() };
    let Ok(r) = rt.list_pod_sandbox(pb::ListPodSandboxRequest { filter: Some(filter) }).await else { return 0 };
    let items = r.into_inner().items;
    for s in &items {
        remove_sandbox_id(cri, &s.id).await;
    }
    items.len()
}
