//! The node agent's runtime flags, shared by `flotilla up` and `flotilla node`: which
//! runtime runs pods (containerd when it can, host processes otherwise), the CRI endpoint
//! (kubelet's --container-runtime-endpoint), the air-gap image folder, registry mirrors
//! and image garbage collection.

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

#[derive(Args, Clone, Debug)]
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
    /// A k3s-shaped registries.yaml (mirrors, per-host auth and TLS) for containerd
    /// (default: <data-dir>/registries.yaml when it exists).
    #[arg(long)]
    pub registries: Option<PathBuf>,
    /// Disk usage (percent) of the image filesystem above which unused images are removed
    /// (100 turns image garbage collection off).
    #[arg(long, default_value_t = 85, value_parser = clap::value_parser!(u8).range(0..=100))]
    pub image_gc_high_threshold: u8,
    /// Disk usage (percent) image garbage collection frees down to.
    #[arg(long, default_value_t = 80, value_parser = clap::value_parser!(u8).range(0..=100))]
    pub image_gc_low_threshold: u8,
    /// Seconds between image garbage collection checks (the kubelet's fixed ImageGCPeriod
    /// is 300).
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..))]
    pub image_gc_period: u64,
    /// How long an image stays after its last use before garbage collection may take it
    /// (the kubelet's --image-minimum-gc-age).
    #[arg(long, default_value = "2m", value_parser = crate::controller_flags::parse_duration)]
    pub image_minimum_gc_age: std::time::Duration,
    /// Hard eviction thresholds (the kubelet's --eviction-hard; disk at 5%, see eviction::DEFAULT_HARD): crossing one sets the
    /// node's pressure condition and evicts pods, BestEffort first.
    #[arg(long, default_value = node_agent::kubelet::eviction::DEFAULT_HARD)]
    pub eviction_hard: String,
    /// `external`: the node registers with the uninitialized taint and waits for the
    /// cloud controller to set its providerID (the kubelet's --cloud-provider).
    #[arg(long)]
    pub cloud_provider: Option<CloudProviderArg>,
    /// How each node proxies Services (kube-proxy's --proxy-mode): nftables where the
    /// `nft` tool is installed, else userspace (TCP only).
    #[arg(long)]
    pub proxy_mode: Option<ProxyModeArg>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProxyModeArg {
    Nftables,
    Userspace,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CloudProviderArg {
    External,
}

impl Default for RuntimeFlags {
    /// What clap fills in when no flag is given.
    fn default() -> Self {
        RuntimeFlags { runtime: None, container_runtime_endpoint: None, images: None, registries: None, image_gc_high_threshold: 85, image_gc_low_threshold: 80, image_gc_period: 300, image_minimum_gc_age: node_agent::images::gc::MIN_AGE, eviction_hard: node_agent::kubelet::eviction::DEFAULT_HARD.into(), cloud_provider: None, proxy_mode: None }
    }
}

impl RuntimeFlags {
    /// Fills the node config; `data_dir` holds the default air-gap folder (`images`) and
    /// registries.yaml; `warn` hears the one-line reason for falling back.
    pub fn apply(&self, cfg: &mut NodeConfig, data_dir: &Path, warn: impl Fn(&str)) -> Result<()> {
        if self.image_gc_low_threshold >= self.image_gc_high_threshold {
            bail!(
                "invalid configuration: imageGCLowThresholdPercent (--image-gc-low-threshold) {} must be less than imageGCHighThresholdPercent (--image-gc-high-threshold) {}",
                self.image_gc_low_threshold,
                self.image_gc_high_threshold
            );
        }
        cfg.image_gc = node_agent::images::gc::Thresholds { high: self.image_gc_high_threshold, low: self.image_gc_low_threshold, min_age: self.image_minimum_gc_age };
        cfg.image_gc_period = std::time::Duration::from_secs(self.image_gc_period);
        cfg.cloud_provider_external = self.cloud_provider == Some(CloudProviderArg::External);
        cfg.proxy_mode = match self.proxy_mode {
            None => node_agent::ProxyMode::Auto,
            Some(ProxyModeArg::Nftables) => {
                if !node_agent::proxy::available() {
                    bail!("--proxy-mode nftables: the nft tool is not installed (deploy/install-deps.sh installs nftables)");
                }
                node_agent::ProxyMode::Nftables
            }
            Some(ProxyModeArg::Userspace) => node_agent::ProxyMode::Userspace,
        };
        cfg.eviction_hard = node_agent::kubelet::eviction::parse(&self.eviction_hard).map_err(|e| anyhow::anyhow!("--eviction-hard: {e}"))?;
        let default_registries = data_dir.join("registries.yaml");
        cfg.registries = match &self.registries {
            Some(p) if !p.is_file() => bail!("--registries {}: no such file", p.display()),
            Some(p) => Some(p.clone()),
            None => default_registries.is_file().then_some(default_registries),
        };
        let default_images = data_dir.join("images");
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
        cfg.images_dir = Some(self.images.clone().unwrap_or(default_images));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags() -> RuntimeFlags {
        RuntimeFlags { runtime: Some(RuntimeArg::Process), ..Default::default() }
    }

    #[test]
    fn gc_thresholds_and_the_default_registries_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = NodeConfig::from_host("n".into(), dir.path().into());
        flags().apply(&mut cfg, dir.path(), |_| {}).unwrap();
        assert_eq!((cfg.image_gc.high, cfg.image_gc.low, cfg.registries.clone()), (85, 80, None));
        std::fs::write(dir.path().join("registries.yaml"), "mirrors: {}\n").unwrap();
        flags().apply(&mut cfg, dir.path(), |_| {}).unwrap();
        assert_eq!(cfg.registries, Some(dir.path().join("registries.yaml")));
        let e = RuntimeFlags { image_gc_high_threshold: 80, image_gc_low_threshold: 80, ..flags() }.apply(&mut cfg, dir.path(), |_| {}).unwrap_err();
        assert!(e.to_string().contains("must be less than imageGCHighThresholdPercent"), "{e}");
        let e = RuntimeFlags { registries: Some(dir.path().join("nope.yaml")), ..flags() }.apply(&mut cfg, dir.path(), |_| {}).unwrap_err();
        assert!(e.to_string().contains("no such file"), "{e}");
    }
}
