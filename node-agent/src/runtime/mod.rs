//! The one runtime interface the kubelet drives, after the CRI's shape: a pod gets a
//! sandbox (its network and shared namespaces), its containers run inside it, and images
//! are made present first. Implementations: CRI over gRPC (`cri`, containerd), host
//! processes (`process`, `runtimeClassName: host`) and `simulated` (hollow nodes).

pub mod cri;
pub mod process;
pub mod process_cgroups;
mod process_streams;
pub mod simulated;
pub mod streams;

pub use crate::images::credentials::PullAuth;
use futures::future::BoxFuture;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// What the kubelet asks for before a pod's first container: the pod's sandbox.
#[derive(Debug, Clone, PartialEq)]
pub struct SandboxSpec {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    /// Bumped on every new sandbox of the same pod (a failed one keeps its name reserved).
    pub attempt: u32,
    pub hostname: String,
    /// The pod's directory; container log paths are relative to it (`<name>/<n>.log`).
    pub log_dir: PathBuf,
    pub host_network: bool,
    pub ports: Vec<PortMapping>,
    pub labels: BTreeMap<String, String>,
    /// The sandbox's resolv.conf; None: the runtime's default (the host's file).
    pub dns: Option<DnsConfig>,
    /// Some container is privileged: containerd refuses one in an unprivileged sandbox.
    pub privileged: bool,
}

/// CRI's DNSConfig: what the runtime writes into the sandbox's resolv.conf.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DnsConfig {
    pub servers: Vec<String>,
    pub searches: Vec<String>,
    /// `ndots:5`, `edns0`: resolv.conf's `options` words.
    pub options: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PortMapping {
    /// "TCP", "UDP" or "SCTP".
    pub protocol: String,
    pub container_port: i32,
    pub host_port: i32,
    pub host_ip: String,
}

/// A pod's sandbox as the runtime made it.
#[derive(Debug, Clone, PartialEq)]
pub struct Sandbox {
    pub id: String,
    /// The pod's address: its own on the pod network, the node's in host mode.
    pub ip: Option<String>,
}

/// `imagePullPolicy`, defaulted by the API (Always for `:latest` or no tag).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullPolicy {
    Always,
    IfNotPresent,
    Never,
}

impl PullPolicy {
    pub fn parse(s: Option<&str>, image: &str) -> PullPolicy {
        match s {
            Some("Always") => PullPolicy::Always,
            Some("Never") => PullPolicy::Never,
            Some("IfNotPresent") => PullPolicy::IfNotPresent,
            _ if crate::images::reference::tag_or_latest(image) == "latest" => PullPolicy::Always,
            _ => PullPolicy::IfNotPresent,
        }
    }
}

/// What the kubelet asks a runtime to run: one container of one pod.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerSpec {
    /// `<namespace>/<pod>`, for messages and spans.
    pub pod_key: String,
    pub name: String,
    pub image: String,
    /// `command` replaces the image's entrypoint and drops its cmd; `args` replace the cmd.
    /// Empty means "not set" (the image's own are used where there is an image).
    pub command: Vec<String>,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    /// The container's working directory; None: the image's (host mode: the pod's dir).
    pub working_dir: Option<PathBuf>,
    /// stdout and stderr of this instance go here; relative to the sandbox's log_dir as
    /// `<name>/<attempt>.log`.
    pub log_path: PathBuf,
    pub attempt: u32,
    /// `stdin`, `stdinOnce` and `tty` of the container (what `kubectl attach` connects to).
    pub stdin: bool,
    pub stdin_once: bool,
    pub tty: bool,
    /// The pod's volumes this container mounts (`volumeMounts`), resolved to host paths.
    pub mounts: Vec<Mount>,
    /// `resources.limits` and requests, as CRI's LinuxContainerResources carries them.
    pub resources: Resources,
    /// The effective securityContext (the pod's, overridden by the container's).
    pub security: Security,
}

/// What CRI's LinuxContainerSecurityContext carries, as the kubelet's
/// `determineEffectiveSecurityContext` makes it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Security {
    pub run_as_user: Option<i64>,
    /// The image's user by name, when a group is asked without a uid and the image names
    /// its user (the runtime resolves it in the image's /etc/passwd).
    pub run_as_username: String,
    pub run_as_group: Option<i64>,
    /// The pod's fsGroup first, then its supplementalGroups.
    pub supplemental_groups: Vec<i64>,
    pub readonly_rootfs: bool,
    pub privileged: bool,
    pub add_capabilities: Vec<String>,
    pub drop_capabilities: Vec<String>,
    /// `allowPrivilegeEscalation: false`.
    pub no_new_privs: bool,
    /// `runAsNonRoot: true`: the kubelet refuses a container that would run as root.
    pub run_as_non_root: bool,
}

/// A container's cgroup settings, computed as the kubelet's `generateLinuxContainerResources`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Resources {
    /// `limits.memory` in bytes; None: unlimited.
    pub memory_limit_bytes: Option<i64>,
    /// `requests.cpu` (else the limit) in millicores, for cpu.shares.
    pub cpu_request_millis: Option<u64>,
    /// `limits.cpu` in millicores, for the CFS quota.
    pub cpu_limit_millis: Option<u64>,
}

/// How a container ended: its code (128+signal when killed) and the runtime's reason when
/// it gives one (CRI's ContainerStatus.reason, e.g. `OOMKilled`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exit {
    pub code: i32,
    pub reason: Option<String>,
}

impl Exit {
    pub fn code(code: i32) -> Exit {
        Exit { code, reason: None }
    }
}

impl PartialEq<i32> for Exit {
    fn eq(&self, other: &i32) -> bool {
        self.code == *other
    }
}

/// What a command run to completion in a container (`ExecSync`: exec probes and hooks) gave.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ExecOutput {
    pub exit_code: i32,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

/// The variable a host-process container finds a mounted volume's directory in:
/// `FLOTILLA_VOLUME_WWW_DATA` for the volume `www-data`.
pub fn volume_env(volume: &str) -> String {
    let name: String = volume.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_uppercase() } else { '_' }).collect();
    format!("FLOTILLA_VOLUME_{name}")
}

/// One `volumeMounts[]` entry, resolved by the kubelet's volume code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// The pod's volume name.
    pub volume: String,
    /// The directory on the node (the volume's, or its subPath).
    pub host_path: PathBuf,
    /// `mountPath`, inside the container.
    pub container_path: String,
    pub read_only: bool,
}

/// A started container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Started {
    /// As `containerStatuses[].containerID` shows it: `containerd://<id>`, `flotilla://<pid>`.
    pub id: String,
    /// The main process when the runtime knows it (host mode: the process group leader).
    pub pid: Option<i32>,
}

/// One reading of a container's resource use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    /// CPU time used since it started, in nanoseconds.
    pub cpu_ns: u64,
    /// Its working set (host mode: resident memory).
    pub memory_bytes: u64,
}

/// An image made present for a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageReady {
    /// What `containerStatuses[].imageID` shows.
    pub image_id: String,
    /// Whether a pull happened, and how long it took (for the kubelet's Pulled event).
    pub pulled: Option<Duration>,
    /// The image's configured user (runAsNonRoot's check); none of both: root.
    pub user: ImageUser,
}

/// The user an image runs as (CRI's Image.uid and Image.username).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ImageUser {
    pub uid: Option<i64>,
    pub username: String,
}

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The container cannot be created from its spec (`CreateContainerError`).
    #[error("{0}")]
    Create(String),
    /// The container's environment names a source that is missing
    /// (`CreateContainerConfigError`).
    #[error("{0}")]
    Config(String),
    /// The pod's sandbox could not be made (the kubelet's FailedCreatePodSandBox).
    #[error("{0}")]
    Sandbox(String),
    /// Pulling failed (`ErrImagePull`): the runtime's own words.
    #[error("{0}")]
    ImagePull(String),
    /// Absent with `imagePullPolicy: Never` (`ErrImageNeverPull`).
    #[error("{0}")]
    ImageNeverPull(String),
    /// An exec, attach or port-forward that cannot start.
    #[error("{0}")]
    Stream(String),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

/// Called once, with how it ended, when the container ends.
pub type OnExit = Box<dyn FnOnce(Exit) + Send>;

/// What an earlier agent left running of a pod on this node: its sandbox and the newest
/// instance of each of its containers. A restarted agent adopts these instead of starting
/// the pod again, as the kubelet rebuilds its view from the runtime after a restart.
#[derive(Debug, Clone)]
pub struct Found {
    pub sandbox: Sandbox,
    /// The sandbox's attempt number (the next sandbox of the pod takes the one after).
    pub attempt: u32,
    pub containers: Vec<FoundContainer>,
}

#[derive(Debug, Clone)]
pub struct FoundContainer {
    pub name: String,
    /// The restart count it was created with.
    pub attempt: u32,
    pub started: Started,
    pub image_id: String,
    pub started_at: Option<jiff::Timestamp>,
    /// How it ended, and when, if it ended while no agent watched it.
    pub ended: Option<(Exit, jiff::Timestamp)>,
}

pub trait Runtime: Send + Sync {
    /// The RuntimeClass handler this runtime serves (`runtimeClassName`).
    fn handler(&self) -> &'static str;
    /// `nodeInfo.containerRuntimeVersion`, e.g. `containerd://1.6.20`.
    fn version(&self) -> String;
    /// Makes `image` present as `policy` says; a pull tries each of `auth` in turn (the
    /// pull secrets' credentials for its registry), anonymously when there are none.
    fn ensure_image(&self, image: &str, policy: PullPolicy, auth: Vec<PullAuth>) -> BoxFuture<'static, Result<ImageReady, RuntimeError>>;
    fn run_sandbox(&self, spec: &SandboxSpec) -> BoxFuture<'static, Result<Sandbox, RuntimeError>>;
    /// Creates and starts the container in `sandbox`. Called from the kubelet's own thread,
    /// and polled there: the process runtime ties its children's lives to that thread.
    fn start_container(&self, sandbox: &Sandbox, spec: &ContainerSpec, on_exit: OnExit) -> BoxFuture<'static, Result<Started, RuntimeError>>;
    /// Stops the container: its stop signal, SIGKILL after `grace` (at once when zero);
    /// resolves once it no longer runs.
    fn stop_container(&self, started: &Started, grace: Duration) -> BoxFuture<'static, ()>;
    /// Stops whatever still runs in the sandbox and removes it (and its network).
    fn remove_sandbox(&self, sandbox: &Sandbox) -> BoxFuture<'static, ()>;
    /// The images present, for the Node's `status.images`.
    /// What a running container has used: cumulative CPU time and memory now. None when
    /// the runtime cannot tell (the container is gone, or the runtime keeps no figures).
    fn container_usage(&self, _started: &Started) -> BoxFuture<'static, Option<Usage>> {
        Box::pin(async { None })
    }
    fn list_images(&self) -> BoxFuture<'static, Vec<NodeImage>> {
        Box::pin(async { Vec::new() })
    }
    /// The pod's sandbox and containers still running from an earlier agent, if the runtime
    /// outlives its agent (containerd's shims do; host processes die with it).
    fn find(&self, _spec: &SandboxSpec) -> BoxFuture<'static, Option<Found>> {
        Box::pin(async { None })
    }
    /// Watches an adopted running container and calls `on_exit` when it ends, as for one
    /// this agent started.
    fn follow(&self, _started: &Started, _on_exit: OnExit) {}
    /// Removes every sandbox of this node the runtime still has except `keep` (what a
    /// crashed agent left of pods that are gone); returns how many went.
    fn sweep(&self, _keep: Vec<String>) -> BoxFuture<'static, usize> {
        Box::pin(async { 0 })
    }
    /// Runs `command` in the container (`kubectl exec`).
    fn exec(&self, _target: &streams::ExecTarget, _command: Vec<String>, _s: streams::Streams) -> BoxFuture<'static, Result<streams::Session, RuntimeError>> {
        let h = self.handler();
        Box::pin(async move { Err(RuntimeError::Stream(format!("the {h} runtime does not run commands in containers"))) })
    }
    /// Runs `command` in the container to its end, within `timeout` (exec probes and
    /// hooks: CRI ExecSync). A command that outlives it is an error.
    fn exec_sync(&self, _target: &streams::ExecTarget, _command: Vec<String>, _timeout: Duration) -> BoxFuture<'static, Result<ExecOutput, RuntimeError>> {
        let h = self.handler();
        Box::pin(async move { Err(RuntimeError::Stream(format!("the {h} runtime does not run commands in containers"))) })
    }
    /// Connects to the container's own streams (`kubectl attach`).
    fn attach(&self, _target: &streams::ExecTarget, _s: streams::Streams) -> BoxFuture<'static, Result<streams::Session, RuntimeError>> {
        let h = self.handler();
        Box::pin(async move { Err(RuntimeError::Stream(format!("the {h} runtime does not attach to containers"))) })
    }
    /// One connection to `port` in the sandbox's network (`kubectl port-forward`).
    fn port_forward(&self, _sandbox: &Sandbox, _port: u16) -> BoxFuture<'static, Result<streams::Session, RuntimeError>> {
        let h = self.handler();
        Box::pin(async move { Err(RuntimeError::Stream(format!("the {h} runtime does not forward ports"))) })
    }
}

/// One entry of a Node's `status.images`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeImage {
    pub names: Vec<String>,
    pub size_bytes: u64,
}

/// The runtimes of one node: the default one (containerd, or host processes where there
/// is none) and the others a pod picks with `runtimeClassName` (`host`).
#[derive(Clone)]
pub struct Runtimes {
    default: std::sync::Arc<dyn Runtime>,
    others: Vec<std::sync::Arc<dyn Runtime>>,
}

impl Runtimes {
    pub fn new(default: std::sync::Arc<dyn Runtime>, others: Vec<std::sync::Arc<dyn Runtime>>) -> Runtimes {
        let others = others.into_iter().filter(|r| r.handler() != default.handler()).collect();
        Runtimes { default, others }
    }

    pub fn default_runtime(&self) -> &std::sync::Arc<dyn Runtime> {
        &self.default
    }

    pub fn all(&self) -> impl Iterator<Item = &std::sync::Arc<dyn Runtime>> {
        std::iter::once(&self.default).chain(self.others.iter())
    }

    /// The runtime for a pod's `runtimeClassName` (none: the default), or the message the
    /// pod shows when this node has no such handler.
    pub fn for_class(&self, class: Option<&str>, node: &str) -> Result<std::sync::Arc<dyn Runtime>, String> {
        let Some(class) = class else { return Ok(self.default.clone()) };
        if let Some(r) = self.all().find(|r| r.handler() == class) {
            return Ok(r.clone());
        }
        let handlers: Vec<&str> = self.all().map(|r| r.handler()).collect();
        Err(format!("failed to get sandbox runtime: no runtime for RuntimeClass \"{class}\" is configured on node {node} (handlers: {})", handlers.join(", ")))
    }
}
