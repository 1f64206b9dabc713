//! Objects every new cluster has: the system namespaces and their `default`
//! ServiceAccounts, the system PriorityClasses, the `host` RuntimeClass, the
//! default `local-path` StorageClass, the `kubernetes` and `kube-dns` Services and the default RBAC policy. Idempotent, so it runs on every
//! start; default roles and bindings are reconciled as the real server does (missing
//! rules and subjects put back) unless an admin set `autoupdate: "false"` on them.

use bus::Client;
use k8s_openapi::api::core::v1::{Namespace, Service, ServicePort, ServiceSpec};
use k8s_openapi::api::node::v1::RuntimeClass;
use k8s_openapi::api::scheduling::v1::PriorityClass;
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::collections::BTreeMap;

pub async fn run(client: &Client) -> anyhow::Result<()> {
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        let obj = Namespace { metadata: ObjectMeta { name: Some(ns.into()), ..Default::default() }, ..Default::default() };
        client.ensure(&obj).await.map_err(|e| anyhow::anyhow!("creating namespace {ns}: {e}"))?;
    }
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        bus::admission::ensure_default_service_account(&client.bus, ns).await.map_err(|e| anyhow::anyhow!("creating the default ServiceAccount of {ns}: {e}"))?;
    }
    for (name, value, description) in schema::plugins::priority::SYSTEM_CLASSES {
        let pc = PriorityClass { metadata: ObjectMeta { name: Some(name.to_string()), ..Default::default() }, value: Some(*value as i32), description: Some(description.to_string()), ..Default::default() };
        client.ensure(&pc).await.map_err(|e| anyhow::anyhow!("creating PriorityClass {name}: {e}"))?;
    }
    let rc = RuntimeClass {
        metadata: ObjectMeta { name: Some("host".into()), ..Default::default() },
        handler: "host".into(),
        ..Default::default()
    };
    client.ensure(&rc).await.map_err(|e| anyhow::anyhow!("creating RuntimeClass host: {e}"))?;
    client.ensure(&local_path_class()).await.map_err(|e| anyhow::anyhow!("creating StorageClass local-path: {e}"))?;
    client.ensure(&kubernetes_service()).await.map_err(|e| anyhow::anyhow!("creating the kubernetes Service: {e}"))?;
    ensure_kube_dns(client).await.map_err(|e| anyhow::anyhow!("creating the kube-dns Service: {e}"))?;
    for r in schema::rbac_defaults::cluster_roles() {
        reconcile_role(client, r).await?;
    }
    for b in schema::rbac_defaults::cluster_role_bindings() {
        reconcile_binding(client, b).await?;
    }
    Ok(())
}

/// The default class: node-local directories made by the local-path provisioner once the
/// scheduler has picked the node (WaitForFirstConsumer), as k3s ships it.
fn local_path_class() -> StorageClass {
    StorageClass {
        metadata: ObjectMeta {
            name: Some("local-path".into()),
            annotations: Some(BTreeMap::from([(schema::printers::DEFAULT_CLASS_ANNOTATION.to_string(), "true".to_string())])),
            ..Default::default()
        },
        provisioner: schema::storage::LOCAL_PATH_PROVISIONER.into(),
        reclaim_policy: Some("Delete".into()),
        volume_binding_mode: Some("WaitForFirstConsumer".into()),
        ..Default::default()
    }
}

/// `default/kubernetes`: the API's own Service, on the first address of the range.
fn kubernetes_service() -> Service {
    let ip = schema::services::KUBERNETES_SERVICE_IP.to_string();
    Service {
        metadata: ObjectMeta {
            name: Some("kubernetes".into()),
            namespace: Some("default".into()),
            labels: Some(BTreeMap::from([("component".to_string(), "apiserver".to_string()), ("provider".to_string(), "kubernetes".to_string())])),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            cluster_ip: Some(ip.clone()),
            cluster_ips: Some(vec![ip]),
            ports: Some(vec![ServicePort { name: Some("https".into()), port: 443, protocol: Some("TCP".into()), target_port: Some(IntOrString::Int(6443)), ..Default::default() }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A cluster made before kube-dns had endpoints gets the traffic policy they need.
async fn ensure_kube_dns(client: &Client) -> Result<(), bus::client::ClientError> {
    let want = kube_dns_service();
    client.ensure(&want).await?;
    let Some(mut have) = client.get::<Service>(Some("kube-system"), "kube-dns").await? else { return Ok(()) };
    let spec = have.spec.get_or_insert_with(Default::default);
    if spec.internal_traffic_policy.as_deref() == Some("Local") {
        return Ok(());
    }
    spec.internal_traffic_policy = Some("Local".into());
    client.update(&have).await.map(drop)
}

/// `kube-system/kube-dns`, where kubeadm's CoreDNS sits. flotilla's DNS runs inside each
/// node agent on its bridge address, and each agent publishes that address in an
/// EndpointSlice of its own (node-agent's dns/endpoint.rs); no pod carries the selector.
/// `internalTrafficPolicy: Local` keeps every pod's queries on its own node's server.
fn kube_dns_service() -> Service {
    let ip = schema::services::KUBE_DNS_SERVICE_IP.to_string();
    let port = |name: &str, protocol: &str| ServicePort { name: Some(name.into()), port: 53, protocol: Some(protocol.into()), target_port: Some(IntOrString::Int(53)), ..Default::default() };
    Service {
        metadata: ObjectMeta {
            name: Some("kube-dns".into()),
            namespace: Some("kube-system".into()),
            labels: Some(BTreeMap::from([("k8s-app".to_string(), "kube-dns".to_string()), ("kubernetes.io/name".to_string(), "CoreDNS".to_string())])),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            cluster_ip: Some(ip.clone()),
            cluster_ips: Some(vec![ip]),
            selector: Some(BTreeMap::from([("k8s-app".to_string(), "kube-dns".to_string())])),
            internal_traffic_policy: Some("Local".into()),
            ports: Some(vec![port("dns", "UDP"), port("dns-tcp", "TCP")]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn autoupdate(meta: &ObjectMeta) -> bool {
    meta.annotations.as_ref().and_then(|a| a.get("rbac.authorization.kubernetes.io/autoupdate")).map(|v| v != "false").unwrap_or(true)
}

async fn reconcile_role(client: &Client, want: ClusterRole) -> anyhow::Result<()> {
    let name = want.metadata.name.clone().unwrap_or_default();
    let err = |e: bus::client::ClientError| anyhow::anyhow!("default ClusterRole {name}: {e}");
    match client.get::<ClusterRole>(None, &name).await.map_err(err)? {
        None => client.ensure(&want).await.map_err(err),
        Some(mut have) => {
            let mut rules = have.rules.clone().unwrap_or_default();
            let missing: Vec<_> = want.rules.unwrap_or_default().into_iter().filter(|r| !rules.contains(r)).collect();
            if missing.is_empty() || !autoupdate(&have.metadata) {
                return Ok(());
            }
            rules.extend(missing);
            have.rules = Some(rules);
            client.update(&have).await.map(drop).map_err(err)
        }
    }
}

async fn reconcile_binding(client: &Client, want: ClusterRoleBinding) -> anyhow::Result<()> {
    let name = want.metadata.name.clone().unwrap_or_default();
    let err = |e: bus::client::ClientError| anyhow::anyhow!("default ClusterRoleBinding {name}: {e}");
    match client.get::<ClusterRoleBinding>(None, &name).await.map_err(err)? {
        None => client.ensure(&want).await.map_err(err),
        Some(mut have) => {
            let mut subjects = have.subjects.clone().unwrap_or_default();
            let missing: Vec<_> = want.subjects.unwrap_or_default().into_iter().filter(|s| !subjects.iter().any(|h| h.kind == s.kind && h.name == s.name)).collect();
            if missing.is_empty() || !autoupdate(&have.metadata) {
                return Ok(());
            }
            subjects.extend(missing);
            have.subjects = Some(subjects);
            client.update(&have).await.map(drop).map_err(err)
        }
    }
}
