//! The pod network of one node (the CNI + flannel part of a Kubernetes node): a bridge
//! named after the node with the node's podCIDR, addresses from host-local, hostPorts
//! through portmap. containerd calls the plugins for every sandbox from the config written
//! here; the bridge itself is removed when the agent stops.

use serde_json::json;
use std::path::Path;
use std::time::Duration;

/// How long an agent waits for the node IPAM controller to give its node a podCIDR.
const POD_CIDR_WAIT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error("node {0} got no spec.podCIDR within {1:?} (is the node IPAM controller running?)")]
    NoPodCidr(String, Duration),
    #[error("writing the CNI config: {0}")]
    Io(#[from] std::io::Error),
}

/// Waits for the node's podCIDR, then writes the node's CNI config where its containerd
/// reads it (containerd picks it up without a restart).
pub async fn setup(client: &bus::Client, cfg: &crate::NodeConfig) -> Result<String, NetworkError> {
    let deadline = tokio::time::Instant::now() + POD_CIDR_WAIT;
    let cidr = loop {
        if let Ok(Some(n)) = client.get::<k8s_openapi::api::core::v1::Node>(None, &cfg.name).await {
            if let Some(c) = n.spec.and_then(|s| s.pod_cidr).filter(|c| !c.is_empty()) {
                break c;
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(NetworkError::NoPodCidr(cfg.name.clone(), POD_CIDR_WAIT));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let layout = crate::runtime::cri::containerd::Layout::for_node(&cfg.data_dir);
    write_conflist(&layout.cni_conf_dir(), &cfg.host_id(), &cfg.name, &cidr, &layout.cni_ipam_dir())?;
    enable_forwarding();
    tracing::info!(node = %cfg.name, pod_cidr = %cidr, bridge = %bridge_name(&cfg.host_id()), "pod network configured");
    Ok(cidr)
}

/// The bridge's own address on the podCIDR, which the bridge plugin (isGateway) gives it:
/// the first host address, as host-local's default gateway.
pub fn gateway(pod_cidr: &str) -> Option<std::net::Ipv4Addr> {
    let (net, _) = pod_cidr.split_once('/')?;
    let net: std::net::Ipv4Addr = net.parse().ok()?;
    Some(std::net::Ipv4Addr::from(u32::from(net).checked_add(1)?))
}

/// The conflist's file name in containerd's CNI conf dir.
pub const CONFLIST: &str = "10-flotilla.conflist";

/// A Linux interface name (at most 15 bytes) for this agent's bridge, from its host id
/// (`NodeConfig::host_id`, `<tag>-<node>`): `fl<host id>` when it fits, else `fl` and a
/// hash of it, so two agents never share one.
pub fn bridge_name(node: &str) -> String {
    let clean: String = node.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '-').collect();
    let name = format!("fl{clean}");
    if name.len() <= 15 && clean.len() == node.len() {
        return name;
    }
    use sha2::Digest;
    let h = sha2::Sha256::digest(node.as_bytes());
    format!("fl{:x}", h).chars().take(15).collect()
}

/// The CNI network config for a node: bridge (the node's gateway on its first address, no
/// masquerading: pod traffic stays on this machine), host-local IPAM over the podCIDR with
/// its state in the agent's data dir, portmap for hostPorts.
pub fn conflist(host_id: &str, node: &str, pod_cidr: &str, ipam_dir: &Path) -> serde_json::Value {
    json!({
        "cniVersion": "0.4.0",
        "name": format!("flotilla-{node}"),
        "plugins": [
            {"type": "bridge", "bridge": bridge_name(host_id), "isGateway": true, "ipMasq": false, "hairpinMode": true,
             "ipam": {"type": "host-local", "ranges": [[{"subnet": pod_cidr}]], "routes": [{"dst": "0.0.0.0/0"}],
                      "dataDir": ipam_dir.to_string_lossy()}},
            {"type": "portmap", "capabilities": {"portMappings": true}},
        ]
    })
}

pub fn write_conflist(conf_dir: &Path, host_id: &str, node: &str, pod_cidr: &str, ipam_dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(conf_dir)?;
    let body = serde_json::to_vec_pretty(&conflist(host_id, node, pod_cidr, ipam_dir))?;
    let tmp = conf_dir.join(format!(".{CONFLIST}.tmp"));
    std::fs::write(&tmp, body)?;
    // containerd watches the dir: it must never read a half-written file.
    std::fs::rename(tmp, conf_dir.join(CONFLIST))
}

/// Pods on different nodes of one host reach each other through the host, which must
/// forward between the bridges (as kube-proxy and flannel require too).
pub fn enable_forwarding() {
    let p = "/proc/sys/net/ipv4/ip_forward";
    if std::fs::read_to_string(p).map(|s| s.trim() != "1").unwrap_or(false) {
        match std::fs::write(p, "1") {
            Ok(()) => tracing::info!("enabled net.ipv4.ip_forward for pod traffic between nodes"),
            Err(e) => tracing::warn!(error = %e, "cannot enable net.ipv4.ip_forward: pods on different nodes may not reach each other"),
        }
    }
}

/// Whether an interface of this name exists.
pub fn link_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

/// Removes the agent's bridge (the CNI bridge plugin never does).
pub async fn remove_bridge(host_id: &str) {
    let name = bridge_name(host_id);
    if !link_exists(&name) {
        return;
    }
    match tokio::process::Command::new("ip").args(["link", "delete", &name]).output().await {
        Ok(o) if o.status.success() => tracing::info!(bridge = %name, "removed the pod bridge"),
        Ok(o) => tracing::warn!(bridge = %name, error = %String::from_utf8_lossy(&o.stderr).trim(), "removing the pod bridge failed"),
        Err(e) => tracing::warn!(bridge = %name, error = %e, "running ip failed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bridge_names_fit_and_differ() {
        assert_eq!(bridge_name("1a2b-node-1"), "fl1a2b-node-1");
        let long = bridge_name("a-very-long-node-name-indeed");
        assert!(long.len() <= 15 && long.starts_with("fl"), "{long}");
        assert_ne!(long, bridge_name("a-very-long-node-name-indeed-2"));
        assert_ne!(bridge_name("n.1"), bridge_name("n1"));
    }

    #[test]
    fn the_gateway_is_the_first_address() {
        assert_eq!(gateway("10.244.2.0/24"), Some("10.244.2.1".parse().unwrap()));
        assert_eq!(gateway("nonsense"), None);
    }

    #[test]
    fn conflist_uses_the_node_cidr_and_bridge() {
        let c = conflist("1a2b-node-2", "node-2", "10.244.2.0/24", Path::new("/d/ipam"));
        assert_eq!(c["plugins"][0]["bridge"], "fl1a2b-node-2");
        assert_eq!(c["plugins"][0]["ipam"]["ranges"][0][0]["subnet"], "10.244.2.0/24");
        assert_eq!(c["plugins"][0]["ipam"]["dataDir"], "/d/ipam");
        assert_eq!(c["plugins"][1]["type"], "portmap");
    }
}
