//! The runtime interface the kubelet drives. The process runtime (host mode) is the only
//! one today; CRI over gRPC and the simulated runtime for hollow nodes implement the same.

pub mod process;

use std::path::PathBuf;

/// What the kubelet asks a runtime to run: one container of one pod.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerSpec {
    pub pod_key: String,
    pub name: String,
    pub command: Vec<String>,
    pub env: Vec<(String, String)>,
    pub working_dir: PathBuf,
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

pub type OnExit = Box<dyn FnOnce(Started, i32) + Send>;

pub trait Runtime: Send + Sync {
    /// Starts the container; `on_exit` is called once, with the process and its exit code,
    /// when it ends.
    fn start(&self, spec: &ContainerSpec, on_exit: OnExit) -> Result<Started, RuntimeError>;
    /// Sends `signal` to the container's whole process group.
    fn signal(&self, started: Started, signal: i32);
    /// Whether any process of the container's group is still alive.
    fn alive(&self, started: Started) -> bool;
}
