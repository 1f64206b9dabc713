//! Objects every new cluster has: the system namespaces and the `host` RuntimeClass.
//! Idempotent, so it runs on every start.

use bus::Client;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::node::v1::RuntimeClass;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

pub async fn run(client: &Client) -> anyhow::Result<()> {
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        let obj = Namespace { metadata: ObjectMeta { name: Some(ns.into()), ..Default::default() }, ..Default::default() };
        client.ensure(&obj).await.map_err(|e| anyhow::anyhow!("creating namespace {ns}: {e}"))?;
    }
    let rc = RuntimeClass {
        metadata: ObjectMeta { name: Some("host".into()), ..Default::default() },
        handler: "host".into(),
        ..Default::default()
    };
    client.ensure(&rc).await.map_err(|e| anyhow::anyhow!("creating RuntimeClass host: {e}"))?;
    Ok(())
}
