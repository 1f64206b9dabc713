//! This node's DNS server as an endpoint of `kube-system/kube-dns`: one EndpointSlice per
//! node (CoreDNS' pods play this part in kubeadm clusters), so 10.96.0.10 answers. The
//! Service's `internalTrafficPolicy: Local` makes every node's proxy send its pods to its
//! own server. The slice is owned by the Node, so it goes with the Node even when the
//! agent dies without withdrawing it.

use bus::Client;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

pub const NAMESPACE: &str = "kube-system";
pub const SERVICE: &str = "kube-dns";
/// Not the endpointslice controller's value, so it leaves these slices alone.
pub const MANAGED_BY: &str = "node-agent.flotilla.dev";
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";

pub fn slice_name(node: &str) -> String {
    format!("{SERVICE}-{node}")
}

/// The slice naming this node's server (pure).
pub fn slice(node: &str, node_uid: Option<&str>, ip: Ipv4Addr) -> EndpointSlice {
    let port = |name: &str, protocol: &str| EndpointPort { name: Some(name.into()), port: Some(i32::from(super::PORT)), protocol: Some(protocol.into()), ..Default::default() };
    let owner = node_uid.map(|uid| vec![OwnerReference { api_version: "v1".into(), kind: "Node".into(), name: node.into(), uid: uid.into(), ..Default::default() }]);
    EndpointSlice {
        metadata: ObjectMeta {
            name: Some(slice_name(node)),
            namespace: Some(NAMESPACE.into()),
            labels: Some(BTreeMap::from([(SERVICE_NAME_LABEL.to_string(), SERVICE.to_string()), (MANAGED_BY_LABEL.to_string(), MANAGED_BY.to_string())])),
            owner_references: owner,
            ..Default::default()
        },
        address_type: "IPv4".into(),
        endpoints: Some(vec![Endpoint {
            addresses: vec![ip.to_string()],
            conditions: Some(EndpointConditions { ready: Some(true), serving: Some(true), terminating: Some(false) }),
            node_name: Some(node.into()),
            ..Default::default()
        }]),
        ports: Some(vec![port("dns", "UDP"), port("dns-tcp", "TCP")]),
    }
}

/// Writes the slice (replacing one a previous run of this agent left).
pub async fn publish(client: &Client, node: &str, ip: Ipv4Addr) -> Result<(), bus::client::ClientError> {
    let uid = client.get::<Node>(None, node).await?.and_then(|n| n.metadata.uid);
    let want = slice(node, uid.as_deref(), ip);
    match client.get::<EndpointSlice>(Some(NAMESPACE), &slice_name(node)).await? {
        None => client.create(&want).await.map(drop),
        Some(have) if have.endpoints == want.endpoints && have.ports == want.ports && have.metadata.owner_references == want.metadata.owner_references => Ok(()),
        Some(have) => {
            let mut next = want;
            next.metadata.resource_version = have.metadata.resource_version;
            client.update(&next).await.map(drop)
        }
    }
}

/// Takes the slice away when the server stops, so no node's proxy sends queries to it.
pub async fn withdraw(client: &Client, node: &str) {
    match client.delete::<EndpointSlice>(Some(NAMESPACE), &slice_name(node), None).await {
        Ok(_) => tracing::info!(node, "withdrew this node's kube-dns endpoint"),
        Err(e) => tracing::debug!(node, error = %e, "withdrawing this node's kube-dns endpoint"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_slice_names_this_nodes_server_for_both_protocols() {
        let s = slice("n1", Some("u1"), Ipv4Addr::new(10, 244, 0, 1));
        let l = s.metadata.labels.as_ref().unwrap();
        assert_eq!((l[SERVICE_NAME_LABEL].as_str(), l[MANAGED_BY_LABEL].as_str()), ("kube-dns", MANAGED_BY));
        let e = &s.endpoints.as_ref().unwrap()[0];
        assert_eq!(e.addresses, vec!["10.244.0.1".to_string()]);
        assert_eq!(e.node_name.as_deref(), Some("n1"));
        let ports: Vec<(String, String, i32)> = s.ports.unwrap().into_iter().map(|p| (p.name.unwrap(), p.protocol.unwrap(), p.port.unwrap())).collect();
        assert_eq!(ports, vec![("dns".into(), "UDP".into(), 53), ("dns-tcp".into(), "TCP".into(), 53)]);
        assert_eq!(s.metadata.owner_references.unwrap()[0].uid, "u1");
    }
}
