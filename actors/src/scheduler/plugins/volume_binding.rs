//! VolumeBinding: a pod's PersistentVolumeClaims decide where it may go. A missing claim
//! or an unbound Immediate one makes it unschedulable everywhere; a claim bound to a
//! volume with node affinity (a local volume) pins it to that volume's nodes; an unbound
//! WaitForFirstConsumer claim goes wherever the pod fits, and learns the node at binding.

use super::{PodInfo, Reason};
use crate::controllers::volumebinding::{volume_allows_node, waits_for_consumer};
use crate::scheduler::cache::NodeInfo;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::api::storage::v1::StorageClass;
use std::collections::HashMap;

/// The claims, volumes and classes the scheduler knows, by `ns/name` (claims) or name.
#[derive(Default)]
pub struct Volumes {
    pub claims: HashMap<String, PersistentVolumeClaim>,
    pub volumes: HashMap<String, PersistentVolume>,
    pub classes: HashMap<String, StorageClass>,
}

/// What the pod's claims say about placement, computed once per attempt.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PodVolumes {
    /// Why the pod fits no node at all, whatever the node.
    pub unschedulable: Option<String>,
    /// The volumes its bound claims use: a node must satisfy each one's node affinity.
    pub bound: Vec<PersistentVolume>,
    /// Its unbound WaitForFirstConsumer claims (names in its namespace): they are told
    /// the chosen node (`volume.kubernetes.io/selected-node`).
    pub to_select: Vec<String>,
}

/// The claims a pod names, in order.
pub fn claim_names(p: &Pod) -> Vec<String> {
    p.spec.as_ref().and_then(|s| s.volumes.as_ref()).into_iter().flatten().filter_map(|v| v.persistent_volume_claim.as_ref().map(|c| c.claim_name.clone())).collect()
}

pub fn pre_filter(p: &Pod, known: &Volumes) -> PodVolumes {
    let ns = p.metadata.namespace.clone().unwrap_or_default();
    let mut out = PodVolumes::default();
    for name in claim_names(p) {
        let Some(c) = known.claims.get(&format!("{ns}/{name}")) else {
            out.unschedulable = Some(format!("persistentvolumeclaim \"{name}\" not found"));
            return out;
        };
        if c.metadata.deletion_timestamp.is_some() {
            out.unschedulable = Some(format!("persistentvolumeclaim \"{name}\" is being deleted"));
            return out;
        }
        match c.spec.as_ref().and_then(|s| s.volume_name.as_deref()).filter(|v| !v.is_empty()) {
            Some(pv) => match known.volumes.get(pv) {
                Some(v) => out.bound.push(v.clone()),
                None => {
                    out.unschedulable = Some(format!("persistentvolume \"{pv}\" not found"));
                    return out;
                }
            },
            None => {
                let class_name = c.spec.as_ref().and_then(|s| s.storage_class_name.clone()).unwrap_or_default();
                let class = known.classes.get(&class_name);
                if !class_name.is_empty() && class.is_none() {
                    out.unschedulable = Some(format!("storageclass.storage.k8s.io \"{class_name}\" not found"));
                    return out;
                }
                if !waits_for_consumer(class) {
                    out.unschedulable = Some("pod has unbound immediate PersistentVolumeClaims".into());
                    return out;
                }
                out.to_select.push(name);
            }
        }
    }
    out
}

pub fn filter(pod: &PodInfo, n: &NodeInfo) -> Result<(), Reason> {
    if pod.volumes.bound.iter().all(|v| volume_allows_node(v, &n.name)) {
        Ok(())
    } else {
        Err("node(s) had volume node affinity conflict".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::plugins::testing::{node, pod};
    use crate::scheduler::plugins::{place, PodInfo};
    use serde_json::json;

    fn known() -> Volumes {
        let claim = |name: &str, class: &str, volume: Option<&str>| -> (String, PersistentVolumeClaim) {
            let c = serde_json::from_value(json!({"metadata": {"name": name, "namespace": "default"}, "spec": {"storageClassName": class, "volumeName": volume}})).unwrap();
            (format!("default/{name}"), c)
        };
        let local: PersistentVolume = serde_json::from_value(json!({"metadata": {"name": "pv-n2"}, "spec": {"nodeAffinity": {"required": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": ["n2"]}]}]}}}})).unwrap();
        let class = |name: &str, mode: &str| (name.to_string(), serde_json::from_value::<StorageClass>(json!({"metadata": {"name": name}, "provisioner": "p", "volumeBindingMode": mode})).unwrap());
        Volumes {
            claims: [claim("bound", "local-path", Some("pv-n2")), claim("later", "local-path", None), claim("now", "fast", None)].into_iter().collect(),
            volumes: [("pv-n2".to_string(), local)].into_iter().collect(),
            classes: [class("local-path", "WaitForFirstConsumer"), class("fast", "Immediate")].into_iter().collect(),
        }
    }

    fn using(claims: &[&str]) -> Pod {
        let vols: Vec<serde_json::Value> = claims.iter().map(|c| json!({"name": c, "persistentVolumeClaim": {"claimName": c}})).collect();
        serde_json::from_value(json!({"metadata": {"name": "web-0", "namespace": "default"}, "spec": {"containers": [], "volumes": vols}})).unwrap()
    }

    fn info(claims: &[&str]) -> PodInfo {
        PodInfo { volumes: pre_filter(&using(claims), &known()), ..pod() }
    }

    #[test]
    fn a_missing_claim_makes_the_pod_unschedulable_everywhere() {
        let nodes = [node("n1"), node("n2")];
        assert_eq!(place(&info(&["nope"]), &nodes).unwrap_err(), "0/2 nodes are available: persistentvolumeclaim \"nope\" not found.");
        assert_eq!(place(&info(&["now"]), &nodes).unwrap_err(), "0/2 nodes are available: pod has unbound immediate PersistentVolumeClaims.");
    }

    #[test]
    fn a_bound_local_volume_pins_the_pod_to_its_node() {
        let nodes = [node("n1"), node("n2")];
        assert_eq!(place(&info(&["bound"]), &nodes), Ok("n2".to_string()));
        assert_eq!(place(&info(&["bound"]), &nodes[..1]).unwrap_err(), "0/1 nodes are available: 1 node(s) had volume node affinity conflict.");
    }

    #[test]
    fn an_unbound_wait_for_first_consumer_claim_goes_anywhere_and_is_told_the_node() {
        let i = info(&["later"]);
        assert_eq!(i.volumes.to_select, vec!["later".to_string()]);
        assert_eq!(place(&i, &[node("n1")]), Ok("n1".to_string()));
        assert_eq!(pre_filter(&using(&[]), &known()), PodVolumes::default());
    }
}
