//! The root CA publisher: every live namespace has the `kube-root-ca.crt` ConfigMap
//! holding the cluster CA (`ca.crt`), which the projected ServiceAccount volume mounts so
//! in-cluster clients can verify the API server. Put back when deleted or edited, as
//! kube-controller-manager's root-ca-cert-publisher does.

use super::serviceaccount::keep_in_every_namespace;
use bus::Client;
use k8s_openapi::api::core::v1::ConfigMap;
use std::collections::BTreeMap;
use tokio_util::sync::CancellationToken;

pub const NAME: &str = "kube-root-ca.crt";
const KEY: &str = "ca.crt";

/// What the namespace's ConfigMap should become: None when it is right already.
pub fn reconcile(current: Option<&ConfigMap>, ns: &str, ca_pem: &str) -> Option<ConfigMap> {
    let want = BTreeMap::from([(KEY.to_string(), ca_pem.to_string())]);
    match current {
        Some(cm) if cm.data.as_ref() == Some(&want) => None,
        Some(cm) => {
            let mut cm = cm.clone();
            cm.data = Some(want);
            cm.binary_data = None;
            Some(cm)
        }
        None => {
            let mut cm = ConfigMap { data: Some(want), ..Default::default() };
            cm.metadata.name = Some(NAME.into());
            cm.metadata.namespace = Some(ns.into());
            cm.metadata.annotations = Some(BTreeMap::from([("kubernetes.io/description".to_string(), "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes clusters.".to_string())]));
            Some(cm)
        }
    }
}

async fn ensure(client: Client, ns: String, ca_pem: String) -> Result<(), String> {
    let current = client.get::<ConfigMap>(Some(&ns), NAME).await.map_err(|e| e.to_string())?;
    let Some(next) = reconcile(current.as_ref(), &ns, &ca_pem) else { return Ok(()) };
    let res = if current.is_some() { client.update(&next).await.map(drop) } else { client.create(&next).await.map(drop) };
    match res {
        // Someone else wrote meanwhile: its event brings this back here.
        Err(e) if e.is_conflict() => Ok(()),
        other => other.map_err(|e| e.to_string()),
    }
}

pub fn start(client: Client, ca_pem: String, stop: CancellationToken) -> tokio::task::JoinHandle<()> {
    keep_in_every_namespace::<ConfigMap, _, _>(client, stop, "root-ca-cert-publisher", |cm| cm.metadata.name.as_deref() == Some(NAME), move |client, ns| ensure(client, ns, ca_pem.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn made_when_missing_mended_when_edited_left_when_right() {
        let made = reconcile(None, "ns", "PEM").unwrap();
        assert_eq!(made.metadata.name.as_deref(), Some(NAME));
        assert_eq!(made.data.as_ref().unwrap()["ca.crt"], "PEM");
        assert!(reconcile(Some(&made), "ns", "PEM").is_none());
        let mut edited = made.clone();
        edited.data = Some(BTreeMap::from([("ca.crt".to_string(), "other".to_string())]));
        assert_eq!(reconcile(Some(&edited), "ns", "PEM").unwrap().data, made.data);
    }
}
