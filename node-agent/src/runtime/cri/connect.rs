//! Bringing the CRI runtime of a node up: the given endpoint, or the agent's own
//! containerd child with the sandbox image and the air-gap folder imported. What a crashed
//! predecessor left running is the kubelet's to adopt (kubelet/adopt.rs).

use super::client::Cri;
use super::containerd::{Containerd, Layout};
use super::CriRuntime;
use crate::images::{airgap, mirrors, pause, registry};
use crate::shutdown::Cleanup;
use crate::NodeConfig;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

pub async fn connect(cfg: &NodeConfig, endpoint: Option<&Path>, cleanup: &mut Cleanup) -> anyhow::Result<Arc<CriRuntime>> {
    let (cri, version) = match endpoint {
        Some(ep) => {
            let cri = Cri::new(ep)?;
            let v = cri.wait_version(ep, Duration::from_secs(30)).await?;
            (cri, v)
        }
        None => {
            // A containerd that died with its agent left its shims running: the new one
            // reconnects to them, and the kubelet adopts what still runs.
            let registries = match &cfg.registries {
                Some(p) => mirrors::Registries::load(p)?,
                None => mirrors::Registries::default(),
            };
            let c = Containerd::start(Layout::for_node(&cfg.data_dir), pause::PAUSE_IMAGE, &registries.auth_toml()).await?;
            tracing::info!(node = %cfg.name, pid = c.pid(), "containerd started");
            let socket = c.layout.socket();
            let layout = c.layout.clone();
            let (cri, version) = (c.cri.clone(), c.version.clone());
            cleanup.containerd = Some(c);
            let archive = cfg.data_dir.join("containerd/pause.tar");
            pause::write(&archive)?;
            airgap::import(&socket, &archive).await?;
            // docker.io resolves against its mirrors, then the air-gap folder (an empty one
            // answers 404); never the internet.
            let dir = cfg.images_dir.clone().unwrap_or_else(|| cfg.data_dir.join("images"));
            let addr = registry::serve(&dir, cleanup.stop.clone()).await?;
            registries.write_hosts(&layout.registry_config_dir(), addr)?;
            let mirrored: Vec<&String> = registries.mirrors.keys().collect();
            tracing::info!(node = %cfg.name, %addr, ?mirrored, "air-gap registry serving docker.io after its mirrors");
            if let Some(dir) = &cfg.images_dir {
                let t0 = std::time::Instant::now();
                let (n, errs) = airgap::import_dir(&socket, dir).await;
                for e in &errs {
                    tracing::warn!(node = %cfg.name, error = %e, "an image archive was not imported");
                }
                tracing::info!(node = %cfg.name, images = n, dir = %dir.display(), took = ?t0.elapsed(), "imported the air-gap images");
            }
            (cri, version)
        }
    };
    // Sandboxes a previous agent left stay: the kubelet adopts those of pods still bound
    // here once it has listed them, and sweeps the rest.
    cleanup.cri = Some(cri.clone());
    Ok(Arc::new(CriRuntime::new(cri, &version, &cfg.name, &cfg.host_id(), &cfg.host_ip)))
}
