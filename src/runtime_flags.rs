//! The node agent's runtime flags, shared by `flotilla up` and `flotilla node`: which
//! runtime runs pods (containerd when it can, host processes otherwise), the CRI endpoint
//! (kubelet's --container-runtime-endpoint) and the air-gap image folder.

use anyhow::{bail, Result};
use clap::{Args, ValueEnum};
use node_agent::{NodeConfig, RuntimeKind};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RuntimeArg {
    /// containerd through CRI (the agent's own child unless --container-runtime-endpoint).
    Containerd,
    /// Host processes: each container's command on the node's network.
    Process,
}

#[derive(Args, Clone, Debug, Default)]
pub struct RuntimeFlags {
    /// The pods' runtime (default: containerd when containerd and runc are installed and
    /// the agent is root, else process).
    #[arg(long)]
    pub runtime: Option<RuntimeArg>,
    /// A CRI socket to use instead of starting containerd (implies --runtime containerd).
    #[arg(long)]
    pub container_runtime_endpoint: Option<PathBuf>,
    /// The air-gap folder: every .tar image archive in it is imported into containerd at
    /// start (default: <data-dir>/images; `deploy/offline-images.sh DIR` makes them).
    #[arg(long)]
    pub images: Option<PathBuf>,
}

impl RuntimeFlags {
    /// Fills the node config; `warn` hears the one-line reason for falling back.
    pub fn apply(&self, cfg: &mut NodeConfig, default_images: &Path, warn: impl Fn(&str)) -> Result<()> {
        cfg.runtime = match (self.runtime, &self.container_runtime_endpoint) {
            (Some(RuntimeArg::Process), Some(_)) => bail!("--container-runtime-endpoint needs --runtime containerd"),
            (_, Some(ep)) => RuntimeKind::Containerd { endpoint: Some(ep.clone()) },
            (Some(RuntimeArg::Process), None) => RuntimeKind::Process,
            (Some(RuntimeArg::Containerd), None) => {
                if !node_agent::runtime::cri::containerd::available() {
                    bail!("--runtime containerd: containerd, runc and ctr must be installed (deploy/install-deps.sh) and the agent must run as root");
                }
                RuntimeKind::Containerd { endpoint: None }
            }
            (None, None) => {
                let (kind, why) = RuntimeKind::detect();
                if let Some(w) = why {
                    warn(&format!("warning: {w}"));
                }
                kind
            }
        };
        cfg.images_dir = Some(self.images.clone().unwrap_or_else(|| default_images.to_path_buf()));
        Ok(())
    }
}
