//! The runtime interface the kubelet drives. The process runtime (host mode) is the only
//! one today; CRI over gRPC and the simulated runtime for hollow nodes implement the same.

pub mod process;

use futures::future::BoxFuture;
use std::path::PathBuf;
use std::time::Duration;

/// What the kubelet asks a runtime to run: one container of one pod.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerSpec {
    /// `<namespace>/<pod>`, for messages and spans.
    pub pod_key: String,
    pub name: String,
    /// command followed by args (Kubernetes semantics: command replaces the entrypoint).
    pub command: Vec<String>,
    pub env: Vec<(String, String)>,
    pub working_dir: PathBuf,
    /// stdout and stderr of this instance are appended here.
    pub log_path: PathBuf,
}

/// A started container: its main process, which leads its own process group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Started {
    pub pid: i32,
}

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The container cannot be created from its spec (`CreateContainerError`).
    #[error("{0}")]
    Create(String),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

/// Called once, with the process and its exit code (128+signal when killed), when the
/// container's main process ends.
pub type OnExit = Box<dyn FnOnce(Started, i32) + Send>;

pub trait Runtime: Send + Sync {
    /// The RuntimeClass handler this runtime serves (`runtimeClassName`).
    fn handler(&self) -> &'static str;
    /// Starts the container. Called from the kubelet's own thread: the process runtime ties
    /// its children's lives to the spawning thread.
    fn start_container(&self, spec: &ContainerSpec, on_exit: OnExit) -> Result<Started, RuntimeError>;
    /// SIGTERM to the container's whole process group, SIGKILL after `grace` (at once when
    /// `grace` is zero); resolves once no process of the group is left.
    fn stop_container(&self, started: Started, grace: Duration) -> BoxFuture<'static, ()>;
    /// Whether any live process of the container's group remains.
    fn alive(&self, started: Started) -> bool;
}
