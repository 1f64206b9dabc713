//! NodePorts: a pod asking for a hostPort cannot share a node with a pod holding the same
//! (protocol, port) on a conflicting hostIP (0.0.0.0 conflicts with every address).

use super::{PodInfo, Reason};
use crate::scheduler::cache::NodeInfo;
use k8s_openapi::api::core::v1::Pod;

/// kube-scheduler's nodeports.ErrReason.
pub const ERR_REASON: &str = "node(s) didn't have free ports for the requested pod ports";

/// (hostIP, protocol, hostPort) of every container port with a hostPort.
pub fn host_ports(p: &Pod) -> Vec<(String, String, i32)> {
    let spec = p.spec.as_ref();
    let containers = spec.map(|s| s.containers.iter().chain(s.init_containers.iter().flatten())).into_iter().flatten();
    containers
        .flat_map(|c| c.ports.iter().flatten())
        .filter_map(|port| {
            let hp = port.host_port.filter(|p| *p > 0)?;
            let ip = port.host_ip.clone().filter(|s| !s.is_empty()).unwrap_or_else(|| "0.0.0.0".into());
            Some((ip, port.protocol.clone().unwrap_or_else(|| "TCP".into()), hp))
        })
        .collect()
}

fn conflict(a: &(String, String, i32), b: &(String, String, i32)) -> bool {
    a.1 == b.1 && a.2 == b.2 && (a.0 == b.0 || a.0 == "0.0.0.0" || b.0 == "0.0.0.0")
}

pub fn filter(pod: &PodInfo, n: &NodeInfo) -> Result<(), Reason> {
    let want = host_ports(&pod.pod);
    if want.is_empty() {
        return Ok(());
    }
    let used: Vec<_> = n.pods.iter().flat_map(|p| host_ports(p)).collect();
    if want.iter().any(|w| used.iter().any(|u| conflict(w, u))) { Err(ERR_REASON.into()) } else { Ok(()) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::plugins::testing::{node, pod_with, running};
    use serde_json::json;

    fn ports(v: serde_json::Value) -> serde_json::Value {
        json!({"containers": [{"name": "c", "ports": v}]})
    }

    #[test]
    fn the_same_host_port_conflicts() {
        let taken = running("a", json!({}), ports(json!([{"containerPort": 80, "hostPort": 8080}])));
        let n = node("n1").with_pod(taken);
        assert_eq!(filter(&pod_with(ports(json!([{"containerPort": 80, "hostPort": 8080}]))), &n), Err(ERR_REASON.to_string()));
        assert_eq!(filter(&pod_with(ports(json!([{"containerPort": 80, "hostPort": 8081}]))), &n), Ok(()));
        assert_eq!(filter(&pod_with(ports(json!([{"containerPort": 80, "hostPort": 8080, "protocol": "UDP"}]))), &n), Ok(()));
        assert_eq!(filter(&pod_with(ports(json!([{"containerPort": 80}]))), &n), Ok(()), "no hostPort, no conflict");
        let on_ip = node("n2").with_pod(running("b", json!({}), ports(json!([{"containerPort": 80, "hostPort": 9000, "hostIP": "10.0.0.1"}]))));
        assert!(filter(&pod_with(ports(json!([{"containerPort": 80, "hostPort": 9000, "hostIP": "10.0.0.2"}]))), &on_ip).is_ok());
        assert!(filter(&pod_with(ports(json!([{"containerPort": 80, "hostPort": 9000}]))), &on_ip).is_err(), "0.0.0.0 takes every address");
    }
}
