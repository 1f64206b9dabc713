//! The kubelet's writes to the store: each pod's status through one writer task (so
//! writes never reorder), the final removal of a pod whose containers all stopped, and the
//! Failed status of a pod admission refused.

use bus::Client;
use k8s_openapi::api::core::v1::Pod;
use std::time::Duration;

/// Removes a pod whose containers have all stopped. Only the same pod (same uid) is
/// deleted, compare-and-swap on its revision: a re-created pod of the same name survives.
pub async fn delete_from_store(client: Client, pod: Pod) {
    let ns = pod.metadata.namespace.clone();
    let name = pod.metadata.name.clone().unwrap_or_default();
    for _ in 0..10 {
        let current = match client.get::<Pod>(ns.as_deref(), &name).await {
            Ok(Some(p)) if p.metadata.uid == pod.metadata.uid => p,
            Ok(_) => return,
            Err(e) => {
                tracing::warn!(pod = %name, error = %e, "reading a terminated pod failed");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let rev = current.metadata.resource_version.as_deref().and_then(|r| r.parse().ok());
        match client.delete::<Pod>(ns.as_deref(), &name, rev).await {
            Ok(_) => return,
            Err(e) if e.is_not_found() => return,
            Err(e) if e.is_conflict() => continue,
            Err(e) => {
                tracing::warn!(pod = %name, error = %e, "deleting a terminated pod failed");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

/// Records an Event about a pod as this node's kubelet (for `kubectl describe pod`).
pub fn record_event(client: &Client, node: &str, pod: &Pod, type_: &str, reason: &str, message: &str) {
    let mut ev = bus::events::event(bus::events::reference(pod), type_, reason, message, "kubelet");
    if let Some(src) = ev.source.as_mut() {
        src.host = Some(node.to_string());
    }
    ev.reporting_instance = Some(node.to_string());
    bus::events::record(client, ev);
}

/// Read-modify-write of one pod (that uid only), compare-and-swap with a retry on
/// conflict; `change` returns false when the stored pod already says what it should.
/// Returns false when the pod is gone (or another of its name took its place).
async fn rewrite(client: &Client, ns: Option<&str>, name: &str, uid: Option<&str>, what: &str, change: impl Fn(&mut Pod) -> bool) -> bool {
    for _ in 0..10 {
        let mut pod = match client.get::<Pod>(ns, name).await {
            Ok(Some(p)) if p.metadata.uid.as_deref() == uid => p,
            Ok(_) => return false,
            Err(e) => {
                tracing::warn!(pod = %name, error = %e, "reading the pod to write its {what} failed");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        if !change(&mut pod) {
            return true;
        }
        match client.update(&pod).await {
            Ok(_) => return true,
            Err(e) if e.is_conflict() => continue,
            Err(e) if e.is_not_found() => return false,
            Err(e) => {
                tracing::warn!(pod = %name, error = %e, "writing the pod's {what} failed");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    true
}

/// Fails a pod the node cannot take, as the kubelet does: phase Failed with the reason
/// and message, and a Warning event; the pod's controller replaces it.
pub async fn reject(client: Client, node: String, pod: Pod, why: super::admission::Rejection) {
    record_event(&client, &node, &pod, "Warning", &why.reason, &why.message);
    let (ns, name) = (pod.metadata.namespace.as_deref(), pod.metadata.name.as_deref().unwrap_or_default());
    rewrite(&client, ns, name, pod.metadata.uid.as_deref(), "rejection", |cur| {
        let st = cur.status.get_or_insert_with(Default::default);
        if st.phase.as_deref() == Some("Failed") {
            return false;
        }
        st.phase = Some("Failed".into());
        st.reason = Some(why.reason.clone());
        st.message = Some(why.message.clone());
        true
    })
    .await;
}

/// Writes the newest status of one pod, one write at a time (so writes never reorder),
/// with compare-and-swap on the stored pod and a retry on conflict; skips the write when
/// the store already holds that status. Ends when the pod's runtime entry is dropped.
pub async fn status_writer(client: Client, ns: String, name: String, uid: String, mut rx: tokio::sync::watch::Receiver<Option<serde_json::Value>>) {
    while rx.changed().await.is_ok() {
        let Some(status) = rx.borrow_and_update().clone() else { continue };
        let Ok(new) = serde_json::from_value::<k8s_openapi::api::core::v1::PodStatus>(status) else {
            tracing::error!(pod = %name, "computed an invalid pod status");
            continue;
        };
        let alive = rewrite(&client, Some(&ns), &name, Some(&uid), "status", |pod| {
            if pod.status.as_ref() == Some(&new) {
                return false;
            }
            pod.status = Some(new.clone());
            true
        })
        .await;
        if !alive {
            return;
        }
    }
}
