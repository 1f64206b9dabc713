//! Node registration and heartbeats: the Node object built from the agent's config (pure),
//! and the loop that renews the node's Lease and reports its conditions when they change.

use crate::NodeConfig;
use bus::Client;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{Node, NodeCondition};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, OwnerReference, Time};
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
    conditions_with(now, &super::eviction::Pressures::default())
}

/// The agent's conditions with the pressures its eviction thresholds see, in the
/// kubelet's words.
pub fn conditions_with(now: &str, p: &super::eviction::Pressures) -> Value {
    let c = |ty: &str, status: &str, reason: &str, msg: &str| {
        json!({"type": ty, "status": status, "reason": reason, "message": msg, "lastHeartbeatTime": now, "lastTransitionTime": now})
    };
    let memory = match p.memory {
        None => c("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
        Some(_) => c("MemoryPressure", "True", "KubeletHasInsufficientMemory", "kubelet has insufficient memory available"),
    };
    let disk = match p.disk {
        None => c("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
        Some(_) => c("DiskPressure", "True", "KubeletHasDiskPressure", "kubelet has disk pressure"),
    };
    let pid = match p.pid {
        None => c("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
        Some(_) => c("PIDPressure", "True", "KubeletHasInsufficientPID", "kubelet has insufficient PID available"),
    };
    json!([memory, disk, pid, c("Ready", "True", "KubeletReady", "kubelet is posting ready status")])
}

/// The data directory as an absolute path, for the local-path provisioner's volumes.
fn data_dir(cfg: &NodeConfig) -> String {
    std::fs::canonicalize(&cfg.data_dir).unwrap_or_else(|_| cfg.data_dir.clone()).to_string_lossy().into_owned()
}

/// The Node as this agent registers it.
pub fn node_object(cfg: &NodeConfig, now: &str) -> Value {
    let capacity = json!({
        "cpu": format!("{}m", cfg.cpu_millis),
        "memory": format!("{}Ki", cfg.memory_bytes / 1024),
        "pods": cfg.max_pods.to_string(),
        "ephemeral-storage": "0",
    });
    let mut labels = json!({
        "kubernetes.io/hostname": cfg.name, "kubernetes.io/os": "linux", "kubernetes.io/arch": arch(),
        "node.kubernetes.io/instance-type": "flotilla", "beta.kubernetes.io/os": "linux", "beta.kubernetes.io/arch": arch()});
    for (k, v) in &cfg.labels {
        labels[k] = json!(v);
    }
    json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": cfg.name, "annotations": {schema::storage::NODE_DATA_DIR_ANNOTATION: data_dir(cfg)}, "labels": labels},
        "spec": if cfg.cloud_provider_external { json!({"taints": [{"key": schema::plugins::tolerations::CLOUD_UNINITIALIZED, "value": "true", "effect": "NoSchedule"}]}) } else { json!({}) },
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
                    st.conditions = Some(refresh_conditions(&before, &schema::object::now(), &Default::default()));
                }
                existing.metadata.labels = want.metadata.labels.clone();
                let ann = existing.metadata.annotations.get_or_insert_with(Default::default);
                ann.extend(want.metadata.annotations.clone().unwrap_or_default());
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
pub fn refresh_conditions(existing: &[NodeCondition], now: &Time, p: &super::eviction::Pressures) -> Vec<NodeCondition> {
    let ours: Vec<NodeCondition> = serde_json::from_value(conditions_with(&now.0.to_string(), p)).unwrap_or_default();
    let mut out: Vec<NodeCondition> = existing.iter().filter(|c| !ours.iter().any(|o| o.type_ == c.type_)).cloned().collect();
    for mut c in ours {
        if let Some(old) = existing.iter().find(|o| o.type_ == c.type_ && o.status == c.status) {
            c.last_transition_time = old.last_transition_time.clone().or(c.last_transition_time);
        }
        out.push(c);
    }
    out
}

/// How often the Node's status is written when nothing in it changed (the kubelet's
/// nodeStatusReportFrequency); liveness in between is the Lease's job.
pub const STATUS_REPORT_EVERY: Duration = Duration::from_secs(5 * 60);
/// The Lease's leaseDurationSeconds, as the kubelet sets it.
pub const LEASE_DURATION_SECONDS: i32 = 40;

/// What a status write is for: the conditions' statuses without their timestamps.
fn condition_states(cs: &[NodeCondition]) -> Vec<(String, String, Option<String>)> {
    let mut v: Vec<_> = cs.iter().map(|c| (c.type_.clone(), c.status.clone(), c.reason.clone())).collect();
    v.sort();
    v
}

/// Whether the heartbeat must write the Node's status now: a condition changed (say the
/// node lifecycle controller marked it Unknown), or the last report is too old.
pub fn status_due(existing: &[NodeCondition], now: &Time, p: &super::eviction::Pressures) -> bool {
    let fresh = refresh_conditions(existing, now, p);
    if condition_states(existing) != condition_states(&fresh) {
        return true;
    }
    let last = existing.iter().filter_map(|c| c.last_heartbeat_time.as_ref()).map(|t| t.0).max();
    match last {
        None => true,
        Some(t) => now.0.duration_since(t).unsigned_abs() >= STATUS_REPORT_EVERY,
    }
}

/// The node's Lease in kube-node-lease, as the kubelet keeps it.
pub fn lease_object(cfg: &NodeConfig, node_uid: Option<&str>, now: &Time) -> Lease {
    Lease {
        metadata: ObjectMeta {
            name: Some(cfg.name.clone()),
            namespace: Some(LEASE_NAMESPACE.into()),
            owner_references: node_uid.map(|uid| vec![OwnerReference { api_version: "v1".into(), kind: "Node".into(), name: cfg.name.clone(), uid: uid.to_string(), ..Default::default() }]),
            ..Default::default()
        },
        spec: Some(LeaseSpec { holder_identity: Some(cfg.name.clone()), lease_duration_seconds: Some(LEASE_DURATION_SECONDS), renew_time: Some(MicroTime(now.0)), ..Default::default() }),
    }
}

pub const LEASE_NAMESPACE: &str = "kube-node-lease";

/// Renews the node's Lease (creating it if missing).
async fn renew_lease(client: &Client, cfg: &NodeConfig, node_uid: Option<&str>) {
    let now = schema::object::now();
    for _ in 0..5 {
        let res = match client.get::<Lease>(Some(LEASE_NAMESPACE), &cfg.name).await {
            Ok(Some(mut l)) => {
                let spec = l.spec.get_or_insert_with(Default::default);
                spec.renew_time = Some(MicroTime(now.0));
                spec.holder_identity = Some(cfg.name.clone());
                spec.lease_duration_seconds = Some(LEASE_DURATION_SECONDS);
                client.update(&l).await.map(drop)
            }
            Ok(None) => client.create(&lease_object(cfg, node_uid, &now)).await.map(drop),
            Err(e) => Err(e),
        };
        match res {
            Ok(()) => return,
            Err(e) if e.is_conflict() => continue,
            Err(e) => {
                tracing::warn!(error = %e, "renewing the node lease failed");
                return;
            }
        }
    }
}

/// Every `period`: renews the Lease, and writes the Node's conditions when they changed
/// or every [`STATUS_REPORT_EVERY`] (compare-and-swap, re-read on conflict), re-registering
/// the node if it was deleted, until cancelled. An idle node so costs its watchers one
/// Lease event per period and a Node event every five minutes, as with the kubelet (or
/// when the runtime's image list changed, for `status.images`).
pub async fn heartbeat(client: Client, cfg: NodeConfig, runtime: std::sync::Arc<dyn crate::runtime::Runtime>, pressures: super::eviction::Shared, stop: tokio_util::sync::CancellationToken) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(cfg.heartbeat) => {}
        }
        let images = node_images(runtime.list_images().await);
        let mut uid = None;
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
            uid = node.metadata.uid.clone();
            let now = schema::object::now();
            let status = node.status.get_or_insert_with(Default::default);
            let existing = status.conditions.clone().unwrap_or_default();
            let images_changed = status.images.as_ref() != Some(&images);
            let p = pressures.lock().map(|p| p.clone()).unwrap_or_default();
            if !status_due(&existing, &now, &p) && !images_changed {
                break;
            }
            status.conditions = Some(refresh_conditions(&existing, &now, &p));
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
        renew_lease(&client, &cfg, uid.as_deref()).await;
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
    fn an_external_cloud_provider_leaves_the_node_tainted_uninitialized() {
        assert_eq!(node_object(&cfg(), "2026-01-01T00:00:00Z")["spec"], json!({}));
        let v = node_object(&NodeConfig { cloud_provider_external: true, ..cfg() }, "2026-01-01T00:00:00Z");
        assert_eq!(v["spec"]["taints"], json!([{"key": "node.cloudprovider.kubernetes.io/uninitialized", "value": "true", "effect": "NoSchedule"}]));
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
        let new = refresh_conditions(&old, &now, &Default::default());
        let get = |ty: &str| new.iter().find(|c| c.type_ == ty).unwrap().clone();
        assert_eq!(get("Ready").status, "True");
        assert_eq!(get("Ready").last_transition_time, Some(now.clone()));
        assert_eq!(get("Ready").last_heartbeat_time, Some(now.clone()));
        assert_eq!(get("MemoryPressure").last_transition_time, Some(at("2026-01-01T00:00:00Z")));
        assert_eq!(get("MemoryPressure").last_heartbeat_time, Some(now));
        assert_eq!(get("NetworkUnavailable").status, "False", "others' conditions are kept");
        assert_eq!(new.len(), 5);
    }

    #[test]
    fn status_is_written_on_change_or_every_five_minutes() {
        let at = |s: &str| Time(s.parse().unwrap());
        let cs: Vec<NodeCondition> = serde_json::from_value(conditions("2026-01-01T00:00:00Z")).unwrap();
        assert!(!status_due(&cs, &at("2026-01-01T00:00:10Z"), &Default::default()), "nothing changed: the lease says the node is alive");
        assert!(status_due(&cs, &at("2026-01-01T00:05:00Z"), &Default::default()), "the periodic report");
        let mut unknown = cs.clone();
        unknown.iter_mut().find(|c| c.type_ == "Ready").unwrap().status = "Unknown".into();
        assert!(status_due(&unknown, &at("2026-01-01T00:00:10Z"), &Default::default()), "a condition to restore");
    }

    #[test]
    fn the_lease_is_held_by_the_node() {
        let l = lease_object(&cfg(), Some("uid-1"), &Time("2026-01-01T00:00:00Z".parse().unwrap()));
        let spec = l.spec.unwrap();
        assert_eq!((spec.holder_identity.as_deref(), spec.lease_duration_seconds), (Some("n1"), Some(40)));
        assert_eq!(l.metadata.namespace.as_deref(), Some("kube-node-lease"));
        assert_eq!(l.metadata.owner_references.unwrap()[0].kind, "Node");
    }
}
