//! Node registration and heartbeats: the Node object built from the agent's config (pure)
//! and the loop that keeps its Ready condition fresh.

use crate::NodeConfig;
use bus::Client;
use k8s_openapi::api::core::v1::Node;
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

fn arch() -> &'static str {
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
            "nodeInfo": {"kubeletVersion": "v1.32.4-flotilla", "kubeProxyVersion": "", "containerRuntimeVersion": "flotilla-process://0.1",
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
                existing.status = want.status.clone();
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

/// Refreshes lastHeartbeatTime of every condition every `period`, until cancelled.
pub async fn heartbeat(client: Client, cfg: NodeConfig, stop: tokio_util::sync::CancellationToken) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(cfg.heartbeat) => {}
        }
        let span = tracing::info_span!("kubelet", node = %cfg.name, op = "heartbeat");
        let _g = span.enter();
        for _ in 0..5 {
            let node = match client.get::<Node>(None, &cfg.name).await {
                Ok(Some(n)) => n,
                Ok(None) => {
                    let _ = register(&client, &cfg).await;
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "heartbeat read failed");
                    break;
                }
            };
            let mut node = node;
            let now = schema::object::now();
            if let Some(cs) = node.status.as_mut().and_then(|s| s.conditions.as_mut()) {
                for c in cs.iter_mut() {
                    c.last_heartbeat_time = Some(now.clone());
                }
            }
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

pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(10);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_reports_capacity_and_ready() {
        let cfg = NodeConfig { name: "n1".into(), data_dir: "/tmp".into(), cpu_millis: 2000, memory_bytes: 4 << 30, max_pods: 110, heartbeat: DEFAULT_HEARTBEAT, host_ip: "127.0.0.1".into() };
        let v = node_object(&cfg, "2026-01-01T00:00:00Z");
        assert_eq!(v["status"]["capacity"]["cpu"], "2000m");
        assert_eq!(v["status"]["allocatable"]["memory"], "4194304Ki");
        let node: Node = serde_json::from_value(v).expect("a valid Node");
        let ready = node.status.unwrap().conditions.unwrap().into_iter().find(|c| c.type_ == "Ready").unwrap();
        assert_eq!(ready.status, "True");
    }
}
