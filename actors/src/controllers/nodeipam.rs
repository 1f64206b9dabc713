//! The node IPAM controller (kube-controller-manager's range allocator): every Node gets a
//! `spec.podCIDR` from the cluster CIDR (`--cluster-cidr`, a /24 per node by default), which
//! its agent's pod network (CNI bridge + host-local) hands addresses from.

use super::update_with_retry;
use bus::informer::{watch_objects, InformerEvent, Scope};
use bus::Client;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use std::collections::BTreeMap;
use tokio_util::sync::CancellationToken;

/// kube-controller-manager's --cluster-cidr and --node-cidr-mask-size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeIpamConfig {
    pub cluster_cidr: String,
    pub node_cidr_mask_size: u8,
}

impl Default for NodeIpamConfig {
    fn default() -> Self {
        NodeIpamConfig { cluster_cidr: "10.244.0.0/16".into(), node_cidr_mask_size: 24 }
    }
}

/// An IPv4 network as (first address, prefix length).
pub fn parse_cidr(s: &str) -> Option<(u32, u8)> {
    let (addr, len) = s.split_once('/')?;
    let addr: std::net::Ipv4Addr = addr.parse().ok()?;
    let len: u8 = len.parse().ok().filter(|l| *l <= 32)?;
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
    Some((u32::from(addr) & mask, len))
}

fn format_cidr(base: u32, len: u8) -> String {
    format!("{}/{len}", std::net::Ipv4Addr::from(base))
}

/// The podCIDRs to give: each node without one gets the lowest subnet no node holds, in
/// name order (pure). Nodes that already have one keep it.
pub fn allocate(cfg: &NodeIpamConfig, nodes: &BTreeMap<String, Option<String>>) -> Result<Vec<(String, String)>, String> {
    let (base, len) = parse_cidr(&cfg.cluster_cidr).ok_or_else(|| format!("invalid cluster CIDR {:?}", cfg.cluster_cidr))?;
    let size = cfg.node_cidr_mask_size;
    if size < len || size > 30 {
        return Err(format!("node CIDR mask size {size} does not fit in the cluster CIDR {}", cfg.cluster_cidr));
    }
    let count = 1u64 << (size - len);
    let step = 1u64 << (32 - size);
    let taken: std::collections::HashSet<String> = nodes.values().flatten().cloned().collect();
    let mut free = (0..count).map(|i| format_cidr(base + (i * step) as u32, size)).filter(|c| !taken.contains(c));
    let mut out = Vec::new();
    for (name, cidr) in nodes {
        if cidr.is_none() {
            match free.next() {
                Some(c) => out.push((name.clone(), c)),
                None => return Err(format!("the cluster CIDR {} has no free /{size} left for node {name}", cfg.cluster_cidr)),
            }
        }
    }
    Ok(out)
}

pub fn start(client: Client, cfg: NodeIpamConfig, stop: CancellationToken) -> tokio::task::JoinHandle<()> {
    // Made before the task runs, so they join the process's shared informers.
    let mut events = watch_objects::<Node>(client.clone(), Scope::default()).boxed();
    tokio::spawn(async move {
        let mut nodes: BTreeMap<String, Option<String>> = BTreeMap::new();
        let cidr_of = |n: &Node| n.spec.as_ref().and_then(|s| s.pod_cidr.clone()).filter(|c| !c.is_empty());
        loop {
            let ev = tokio::select! {
                _ = stop.cancelled() => return,
                Some(e) = events.next() => e,
                else => return,
            };
            match ev {
                InformerEvent::Listed(items, _) => nodes = items.iter().filter_map(|n| Some((n.metadata.name.clone()?, cidr_of(n)))).collect(),
                InformerEvent::Applied(n, _) => {
                    if let Some(name) = n.metadata.name.clone() {
                        nodes.insert(name, cidr_of(&n));
                    }
                }
                InformerEvent::Deleted(n, _) => {
                    if let Some(name) = &n.metadata.name {
                        nodes.remove(name);
                    }
                }
            }
            let todo = match allocate(&cfg, &nodes) {
                Ok(t) => t,
                Err(e) => {
                    tracing::warn!(error = %e, "node IPAM: cannot allocate");
                    continue;
                }
            };
            for (name, cidr) in todo {
                // Only a node still without one gets it: another writer may have been first.
                let c = cidr.clone();
                let ok = update_with_retry::<Node, _>(&client, None, &name, move |n| {
                    let spec = n.spec.get_or_insert_with(Default::default);
                    if spec.pod_cidr.as_deref().is_none_or(str::is_empty) {
                        spec.pod_cidr = Some(c.clone());
                        spec.pod_cidrs = Some(vec![c.clone()]);
                    }
                })
                .await;
                if ok {
                    tracing::info!(node = %name, pod_cidr = %cidr, "node IPAM: allocated");
                    // Counted as taken at once: the watch event follows.
                    nodes.insert(name, Some(cidr));
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(v: &[(&str, Option<&str>)]) -> BTreeMap<String, Option<String>> {
        v.iter().map(|(n, c)| (n.to_string(), c.map(str::to_string))).collect()
    }

    #[test]
    fn each_node_gets_the_lowest_free_slash_24() {
        let cfg = NodeIpamConfig::default();
        let got = allocate(&cfg, &nodes(&[("a", None), ("b", Some("10.244.0.0/24")), ("c", None)])).unwrap();
        assert_eq!(got, vec![("a".into(), "10.244.1.0/24".into()), ("c".into(), "10.244.2.0/24".into())]);
        assert!(allocate(&cfg, &nodes(&[("a", Some("10.244.7.0/24"))])).unwrap().is_empty());
    }

    #[test]
    fn a_full_range_or_a_bad_cidr_is_an_error() {
        let small = NodeIpamConfig { cluster_cidr: "10.0.0.0/23".into(), node_cidr_mask_size: 24 };
        let e = allocate(&small, &nodes(&[("a", None), ("b", None), ("c", None)])).unwrap_err();
        assert!(e.contains("no free /24 left for node c"), "{e}");
        assert!(allocate(&NodeIpamConfig { cluster_cidr: "nope".into(), node_cidr_mask_size: 24 }, &nodes(&[])).is_err());
        assert_eq!(parse_cidr("10.244.3.7/16"), Some((u32::from(std::net::Ipv4Addr::new(10, 244, 0, 0)), 16)));
    }
}
