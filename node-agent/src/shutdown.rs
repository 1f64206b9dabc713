//! The node agent's last steps, in order, after the kubelet has stopped its pods: any
//! cluster DNS server (its kube-dns endpoint withdrawn first), the service proxy's nftables table, any sandbox still left, the agent's containerd child and its shims, the node's bridge and
//! the mounts containerd left under the data dir. One explicit piece, so `flotilla up`'s
//! SIGTERM leaves no process, bridge, netns or mount behind.

use crate::runtime::cri::client::Cri;
use crate::runtime::cri::containerd::Containerd;

#[derive(Default)]
pub struct Cleanup {
    pub node: String,
    /// `NodeConfig::host_id`: names the bridge and the cgroup parent.
    pub host_id: String,
    /// The CRI endpoint the pods ran on (own containerd or given).
    pub cri: Option<Cri>,
    /// The containerd this agent started.
    pub containerd: Option<Containerd>,
    /// Whether the node's bridge is ours to remove.
    pub bridge: bool,
    /// The service proxy's nftables table, its task and what stops the task.
    pub proxy: Option<(String, tokio::task::JoinHandle<()>, tokio_util::sync::CancellationToken)>,
    /// The userspace proxy (no nftables): its interface, its task and what stops it.
    pub userspace_proxy: Option<(String, tokio::task::JoinHandle<()>, tokio_util::sync::CancellationToken)>,
    /// The cluster DNS server, stopped (its sockets closed) with the proxy.
    pub dns: Option<crate::dns::DnsServer>,
    /// Set once this node's kube-dns EndpointSlice is published: withdrawn before the
    /// server stops.
    pub dns_endpoint: Option<bus::Client>,
    /// Stops what the agent serves beside its runtime (the air-gap registry).
    pub stop: tokio_util::sync::CancellationToken,
}

impl Cleanup {
    pub async fn run(self) {
        if let Some(client) = &self.dns_endpoint {
            crate::dns::endpoint::withdraw(client, &self.node).await;
        }
        if let Some(dns) = self.dns {
            dns.stop().await;
        }
        if let Some((table, task, stop)) = self.proxy {
            // The task may be mid-apply: it must be gone before the table is, or it
            // could put the table back.
            stop.cancel();
            let _ = task.await;
            crate::proxy::remove(&table).await;
        }
        if let Some((iface, task, stop)) = self.userspace_proxy {
            stop.cancel();
            let _ = task.await;
            crate::proxy::userspace::remove(&iface).await;
        }
        if let Some(cri) = &self.cri {
            let n = crate::runtime::cri::remove_node_sandboxes(cri, &self.node).await;
            if n > 0 {
                tracing::info!(node = %self.node, sandboxes = n, "removed sandboxes left after the pods stopped");
            }
        }
        if let Some(c) = self.containerd {
            let dir = c.layout.dir.clone();
            c.stop().await;
            unmount_under(&dir);
            crate::runtime::cri::cgroups::remove_node(&self.host_id);
        }
        // Host-mode containers' cgroups live in the node's tree too, with or without containerd.
        crate::runtime::cri::cgroups::remove_node(&self.host_id);
        if self.bridge {
            crate::network::remove_bridge(&self.host_id).await;
        }
        self.stop.cancel();
    }
}

impl Cleanup {
    /// The agent goes but its pods stay (`--keep-pods-on-exit`, for an upgrade or a
    /// restart): only what lives in the agent's own process stops — cluster DNS, the
    /// proxy's task, containerd (not its shims). Sandboxes, mounts, the bridge and the
    /// service rules stay, so pods keep running and answering; the next agent on the same
    /// data dir adopts them.
    pub async fn detach(self) {
        if let Some(dns) = self.dns {
            dns.stop().await;
        }
        if let Some((_, task, stop)) = self.proxy {
            stop.cancel();
            let _ = task.await;
        }
        if let Some((_, task, stop)) = self.userspace_proxy {
            stop.cancel();
            let _ = task.await;
        }
        if let Some(c) = self.containerd {
            c.stop_keeping_shims().await;
        }
        self.stop.cancel();
    }
}

/// Detaches every mount below `dir`, deepest first (netns bind mounts, rootfs overlays a
/// killed containerd could not undo).
pub fn unmount_under(dir: &std::path::Path) {
    let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts") else { return };
    let prefix = format!("{}/", dir.display());
    let mut targets: Vec<String> = mounts
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        // /proc/mounts escapes spaces and the like as octal.
        .map(|t| t.replace("\\040", " "))
        .filter(|t| t.starts_with(&prefix))
        .collect();
    targets.sort_by_key(|t| std::cmp::Reverse(t.len()));
    for t in targets {
        let Ok(c) = std::ffi::CString::new(t.clone()) else { continue };
        // SAFETY: a path string; MNT_DETACH never blocks.
        if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } == 0 {
            tracing::info!(mount = %t, "unmounted a leftover mount");
        }
    }
}
