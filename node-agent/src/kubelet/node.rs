//! Node registration and heartbeats: the Node object built from the agent's config (pure)
//! and the loop that keeps its Ready condition fresh.

use crate::NodeConfig;
use bus::Client;
use k8s_openapi::api::core::v1::{Node, NodeCondition};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::{json, Value};
use std::time::Duration;

fn os_image() -> String {
    std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("PRETTY_NAME=").map(|v| v.trim_matches('"').to_string())))
        .unwrap_or_else(|| "Linux".into())
}

fn kernel() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease").map(|s| s.trim().to_string()).unwrap_or_default()
}

pub fn arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

pub fn conditions(now: &str) -> Value {
    let c = |ty: &str, status: &str, reason: &str, msg: &str| {
        json!({"type": ty, "status": status, "reason": reason, "message": msg, "lastHeartbeatTime": now, "lastTransitionTime": now})
    };
    json!([
        c("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
        c("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
        c("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
        c("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
    ])
}

/// The Node as this agent registers it.
pub fn node_object(cfg: &NodeConfig, now: &str) -> Value {
    let capacity = json!({
        "cpu": format!("{}m", cfg.cpu_millis),
        "memory": format!("{}Ki", cfg.memory_bytes / 1024),
        "pods": cfg.max_pods.to_string(),
        "ephemeral-storage": "0",
    });
    json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": cfg.name, "labels": {
            "kubernetes.io/hostname": cfg.name, "kubernetes.io/os": "linux", "kubernetes.io/arch": arch(),
            "node.kubernetes.io/instance-type": "flotilla", "beta.kubernetes.io/os": "linux", "beta.kubernetes.io/arch": arch()}},
        "spec": {},
        "status": {
            "capacity": capacity.clone(), "allocatable": capacity,
            "conditions": conditions(now),
            "addresses": [{"type": "InternalIP", "address": cfg.host_ip}, {"type": "Hostname", "address": cfg.name}],
            "nodeInfo": {"kubeletVersion": "v1.32.4-flotilla", "kubeProxyVersion": "", "containerRuntimeVersion": cfg.container_runtime_version,
                "operatingSystem": "linux", "architecture": arch(), "osImage": os_image(), "kernelVersion": kernel(),
                "machineID": "", "systemUUID": "", "bootID": ""},
        }
    })
}

/// Creates the Node, or refreshes an existing one's status (keeping its spec, e.g. a
/// cordon set by an operator).
pub async fn register(client: &Client, cfg: &NodeConfig) -> Result<(), bus::client::ClientError> {
    let want: Node = serde_json::from_value(node_object(cfg, &schema::object::now_string())).map_err(|e| bus::client::ClientError::Other(e.to_string()))?;
    for _ in 0..10 {
        match client.get::<Node>(None, &cfg.name).await? {
            None => match client.create(&want).await {
                Ok(_) => return Ok(()),
                Err(e) if e.is_conflict() => continue,
                Err(e) => return Err(e),
            },
            Some(mut existing) => {
                let before = existing.status.as_ref().and_then(|s| s.conditions.clone()).unwrap_or_default();
                existing.status = want.status.clone();
                if let Some(st) = existing.status.as_mut() {
                    st.conditions = Some(refresh_conditions(&before, &schema::object::now()));
                }
                existing.metadata.labels = want.metadata.labels.clone();
                match client.update(&existing).await {
                    Ok(_) => return Ok(()),
                    Err(e) if e.is_conflict() => continue,
                    Err(e) => return Err(e),
                }
            }
        }
    }
    Err(bus::client::ClientError::Other("node registration kept conflicting".into()))
}

/// The conditions a heartbeat writes: this agent's own view (Ready, no pressure) with a
/// fresh lastHeartbeatTime; a transition time moves only when a status changes (e.g. the
/// node lifecycle controller had marked the node Unknown while the agent was away).
/// Conditions other components own are kept as they are.
pub fn refresh_conditions(existing: &[NodeCondition], now: &Time) -> Vec<NodeCondition> {
    let ours: Vec<NodeCondition> = serde_json::from_value(conditions(&now.0.to_string())).unwrap_or_default();
    let mut out: Vec<NodeCondition> = existing.iter().filter(|c| !ours.iter().any(|o| o.type_ == c.type_)).cloned().collect();
    for mut c in ours {
        if let Some(old) = existing.iter().find(|o| o.type_ == c.type_ && o.status == c.status) {
            c.last_transition_time = old.last_transition_time.clone().or(c.last_transition_time);
        }
        out.push(c);
    }
    out
}

/// Refreshes the node's conditions every `period` (compare-and-swap, re-read on
/// conflict), re-registering the node if it was deleted, until cancelled.
pub async fn heartbeat(client: Client, cfg: NodeConfig, runtime: std::sync::Arc<dyn crate::runtime::Runtime>, stop: tokio_util::sync::CancellationToken) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(cfg.heartbeat) => {}
        }
        let images = node_images(runtime.list_images().await);
        for _ in 0..5 {
            let mut node = match client.get::<Node>(None, &cfg.name).await {
                Ok(Some(n)) => n,
                Ok(None) => {
                    if let Err(e) = register(&client, &cfg).await {
                        tracing::warn!(error = %e, "re-registering the node failed");
                    }
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "heartbeat read failed");
                    break;
                }
            };
            let now = schema::object::now();
            let status = node.status.get_or_insert_with(Default::default);
            status.conditions = Some(refresh_conditions(status.conditions.as_deref().unwrap_or_default(), &now));
            status.images = Some(images.clone());
            match client.update(&node).await {
                Ok(_) => break,
                Err(e) if e.is_conflict() => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "heartbeat write failed");
                    break;
                }
            }
        }
    }
}

/// `status.images` as the kubelet reports them (largest first, at most 50).
pub fn node_images(mut list: Vec<crate::runtime::NodeImage>) -> Vec<k8s_openapi::api::core::v1::ContainerImage> {
    list.sort_by(|a, b| b.size_bytes.cmp(&a.size_bytes).then_with(|| a.names.cmp(&b.names)));
    list.into_iter().take(50).map(|i| k8s_openapi::api::core::v1::ContainerImage { names: Some(i.names), size_bytes: Some(i.size_bytes as i64) }).collect()
}

pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(10);

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> NodeConfig {
        NodeConfig { cpu_millis: 2000, memory_bytes: 4 << 30, ..NodeConfig::from_host("n1".into(), "/tmp".into()) }
    }

    #[test]
    fn node_reports_capacity_and_ready() {
        let v = node_object(&cfg(), "2026-01-01T00:00:00Z");
        assert_eq!(v["status"]["capacity"]["cpu"], "2000m");
        assert_eq!(v["status"]["capacity"]["pods"], "110");
        assert_eq!(v["status"]["allocatable"]["memory"], "4194304Ki");
        assert_eq!(v["metadata"]["labels"]["kubernetes.io/hostname"], "n1");
        assert_eq!(v["metadata"]["labels"]["node.kubernetes.io/instance-type"], "flotilla");
        assert_eq!(v["status"]["nodeInfo"]["kubeletVersion"], "v1.32.4-flotilla");
        assert_eq!(v["status"]["nodeInfo"]["containerRuntimeVersion"], "flotilla-process://0.1");
        assert_eq!(v["status"]["addresses"][0], json!({"type": "InternalIP", "address": "127.0.0.1"}));
        let node: Node = serde_json::from_value(v).expect("a valid Node");
        let conds = node.status.unwrap().conditions.unwrap();
        let ready = conds.iter().find(|c| c.type_ == "Ready").unwrap();
        assert_eq!((ready.status.as_str(), ready.reason.as_deref()), ("True", Some("KubeletReady")));
        for ty in ["MemoryPressure", "DiskPressure", "PIDPressure"] {
            assert_eq!(conds.iter().find(|c| c.type_ == ty).unwrap().status, "False", "{ty}");
        }
    }

    #[test]
    fn heartbeats_refresh_times_and_restore_ready() {
        let at = |s: &str| Time(s.parse().unwrap());
        let mut old: Vec<NodeCondition> = serde_json::from_value(conditions("2026-01-01T00:00:00Z")).unwrap();
        // The node lifecycle controller marked it Unknown while the agent was away.
        let ready = old.iter_mut().find(|c| c.type_ == "Ready").unwrap();
        ready.status = "Unknown".into();
        old.push(NodeCondition { type_: "NetworkUnavailable".into(), status: "False".into(), ..Default::default() });
        let now = at("2026-01-01T00:05:00Z");
        let new = refresh_conditions(&old, &now);
        let get = |ty: &str| new.iter().find(|c| c.type_ == ty).unwrap().clone();
        assert_eq!(get("Ready").status, "True");
        assert_eq!(get("Ready").last_transition_time, Some(now.clone()));
        assert_eq!(get("Ready").last_heartbeat_time, Some(now.clone()));
        assert_eq!(get("MemoryPressure").last_transition_time, Some(at("2026-01-01T00:00:00Z")));
        assert_eq!(get("MemoryPressure").last_heartbeat_time, Some(now));
        assert_eq!(get("NetworkUnavailable").status, "False", "others' conditions are kept");
        assert_eq!(new.len(), 5);
    }
}
