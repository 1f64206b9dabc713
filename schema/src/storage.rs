//! Validation, immutable fields and defaults of the storage kinds (PersistentVolume,
//! PersistentVolumeClaim, StorageClass), with the real server's field paths and messages,
//! so a claim that cannot be satisfied is refused at the door, not left Pending forever.

use crate::admission::Cause;
use serde_json::{json, Value};

/// The provisioner name of flotilla's node-local volumes (k3s: rancher.io/local-path).
pub const LOCAL_PATH_PROVISIONER: &str = "flotilla.io/local-path";
/// Set by the scheduler on a WaitForFirstConsumer claim: the node its first pod went to.
pub const SELECTED_NODE_ANNOTATION: &str = "volume.kubernetes.io/selected-node";
/// Set by the binder on both sides once a claim and a volume are bound.
pub const BIND_COMPLETED_ANNOTATION: &str = "pv.kubernetes.io/bind-completed";
pub const BOUND_BY_CONTROLLER_ANNOTATION: &str = "pv.kubernetes.io/bound-by-controller";
/// Set by a provisioner on the volumes it made (and by the binder on claims it asks for).
pub const PROVISIONED_BY_ANNOTATION: &str = "pv.kubernetes.io/provisioned-by";
pub const STORAGE_PROVISIONER_ANNOTATION: &str = "volume.kubernetes.io/storage-provisioner";

/// A node agent's data directory, on its Node: where the local-path provisioner puts the
/// node's volumes (`<data dir>/volumes/pvc-<uid>`).
pub const NODE_DATA_DIR_ANNOTATION: &str = "flotilla.io/data-dir";

/// The directory of a local-path volume on its node.
pub fn local_volume_dir(data_dir: &str, pv: &str) -> String {
    format!("{}/volumes/{pv}", data_dir.trim_end_matches('/'))
}

const ACCESS_MODES: &[&str] = &["ReadWriteOnce", "ReadOnlyMany", "ReadWriteMany", "ReadWriteOncePod"];
/// The volume sources a PersistentVolume may carry (one of them); those flotilla can mount
/// are `local` and `hostPath`, the rest are stored as written.
const PV_SOURCES: &[&str] = &[
    "local", "hostPath", "nfs", "csi", "iscsi", "fc", "awsElasticBlockStore", "gcePersistentDisk", "azureDisk", "azureFile", "cephfs", "rbd", "cinder",
    "flexVolume", "flocker", "glusterfs", "photonPersistentDisk", "portworxVolume", "quobyte", "scaleIO", "storageos", "vsphereVolume",
];

fn cause(reason: &str, field: &str, message: impl Into<String>) -> Cause {
    Cause { reason: reason.into(), field: field.into(), message: message.into() }
}

fn access_modes(v: &Value, path: &str, causes: &mut Vec<Cause>) {
    let modes = v.get("accessModes").and_then(Value::as_array).cloned().unwrap_or_default();
    if modes.is_empty() {
        causes.push(cause("FieldValueRequired", &format!("{path}.accessModes"), "Required value: at least 1 access mode is required"));
    }
    for m in modes.iter() {
        let m = m.as_str().unwrap_or("");
        if !ACCESS_MODES.contains(&m) {
            causes.push(cause("FieldValueNotSupported", &format!("{path}.accessModes"), format!("Unsupported value: \"{m}\": supported values: \"ReadOnlyMany\", \"ReadWriteMany\", \"ReadWriteOnce\", \"ReadWriteOncePod\"")));
        }
    }
}

fn storage_quantity(q: Option<&Value>, field: &str, causes: &mut Vec<Cause>) {
    match q.and_then(Value::as_str) {
        None => causes.push(cause("FieldValueRequired", field, "Required value")),
        Some(s) => match crate::quantity::value(s) {
            Some(n) if n > 0 => {}
            _ => causes.push(cause("FieldValueInvalid", field, format!("Invalid value: \"{s}\": must be greater than zero"))),
        },
    }
}

pub fn validate(kind: &str, v: &Value, causes: &mut Vec<Cause>) {
    match kind {
        "PersistentVolumeClaim" => {
            let spec = v.get("spec").cloned().unwrap_or(json!({}));
            access_modes(&spec, "spec", causes);
            storage_quantity(spec.pointer("/resources/requests/storage"), "spec.resources[storage]", causes);
        }
        "PersistentVolume" => {
            let spec = v.get("spec").cloned().unwrap_or(json!({}));
            access_modes(&spec, "spec", causes);
            storage_quantity(spec.pointer("/capacity/storage"), "spec.capacity[storage]", causes);
            let sources: Vec<&&str> = PV_SOURCES.iter().filter(|s| spec.get(**s).is_some_and(|x| !x.is_null())).collect();
            match sources.len() {
                0 => causes.push(cause("FieldValueRequired", "spec", "Required value: must specify a volume type")),
                1 => {}
                _ => causes.push(cause("FieldValueForbidden", "spec", "Forbidden: may not specify more than 1 volume type")),
            }
            let local_path = spec.pointer("/local/path").or_else(|| spec.pointer("/hostPath/path")).and_then(Value::as_str);
            if sources.iter().any(|s| **s == "local" || **s == "hostPath") && local_path.is_none_or(|p| !p.starts_with('/')) {
                let which = if spec.get("local").is_some() { "spec.local.path" } else { "spec.hostPath.path" };
                causes.push(cause("FieldValueRequired", which, "Required value: must be an absolute path"));
            }
            if spec.get("local").is_some() && spec.pointer("/nodeAffinity/required").is_none() {
                causes.push(cause("FieldValueRequired", "spec.nodeAffinity", "Required value: Local volume requires node affinity"));
            }
            if let Some(p) = spec.get("persistentVolumeReclaimPolicy").and_then(Value::as_str) {
                if !["Retain", "Delete", "Recycle"].contains(&p) {
                    causes.push(cause("FieldValueNotSupported", "spec.persistentVolumeReclaimPolicy", format!("Unsupported value: \"{p}\": supported values: \"Delete\", \"Recycle\", \"Retain\"")));
                }
            }
        }
        "StorageClass" => {
            if v.get("provisioner").and_then(Value::as_str).is_none_or(str::is_empty) {
                causes.push(cause("FieldValueRequired", "provisioner", "Required value"));
            }
            if let Some(m) = v.get("volumeBindingMode").and_then(Value::as_str) {
                if !["Immediate", "WaitForFirstConsumer"].contains(&m) {
                    causes.push(cause("FieldValueNotSupported", "volumeBindingMode", format!("Unsupported value: \"{m}\": supported values: \"Immediate\", \"WaitForFirstConsumer\"")));
                }
            }
            if let Some(p) = v.get("reclaimPolicy").and_then(Value::as_str) {
                if !["Retain", "Delete"].contains(&p) {
                    causes.push(cause("FieldValueNotSupported", "reclaimPolicy", format!("Unsupported value: \"{p}\": supported values: \"Delete\", \"Retain\"")));
                }
            }
        }
        _ => {}
    }
}

/// A claim's spec is fixed once stored, but for its storage request and the binder
/// filling an empty `volumeName` (and `storageClassName`) once; a class may not change its
/// provisioner, parameters, reclaim policy or binding mode.
pub fn immutable(kind: &str, v: &Value, old: &Value, causes: &mut Vec<Cause>) {
    match kind {
        "PersistentVolumeClaim" => {
            let mut a = v.get("spec").cloned().unwrap_or(json!({}));
            let mut b = old.get("spec").cloned().unwrap_or(json!({}));
            for s in [&mut a, &mut b] {
                if let Some(r) = s.pointer_mut("/resources").and_then(Value::as_object_mut) {
                    r.remove("requests");
                }
            }
            for once in ["volumeName", "storageClassName"] {
                if b.get(once).is_none_or(|x| x.is_null() || x.as_str() == Some("")) {
                    if let (Some(a), Some(b)) = (a.as_object_mut(), b.as_object_mut()) {
                        a.remove(once);
                        b.remove(once);
                    }
                }
            }
            if a != b {
                causes.push(cause("FieldValueForbidden", "spec", "Forbidden: spec is immutable after creation except resources.requests and volumeAttributesClassName for bound claims"));
            }
        }
        "StorageClass" => {
            for f in ["provisioner", "parameters", "reclaimPolicy", "volumeBindingMode"] {
                if v.get(f) != old.get(f) {
                    causes.push(cause("FieldValueForbidden", f, "Forbidden: updates to ".to_string() + f + " are forbidden."));
                }
            }
        }
        _ => {}
    }
}

fn set_default(o: &mut Value, field: &str, val: Value) {
    if let Some(m) = o.as_object_mut() {
        m.entry(field.to_string()).or_insert(val);
    }
}

pub fn defaults(kind: &str, v: &mut Value) {
    match kind {
        "PersistentVolumeClaim" | "PersistentVolume" => {
            if let Some(spec) = v.get_mut("spec").filter(|s| s.is_object()) {
                set_default(spec, "volumeMode", json!("Filesystem"));
                if kind == "PersistentVolume" {
                    set_default(spec, "persistentVolumeReclaimPolicy", json!("Retain"));
                }
            }
            if v.pointer("/status/phase").is_none() && v.is_object() {
                v["status"] = json!({"phase": "Pending"});
            }
        }
        "StorageClass" => {
            set_default(v, "reclaimPolicy", json!("Delete"));
            set_default(v, "volumeBindingMode", json!("Immediate"));
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(kind: &str, v: Value) -> Vec<String> {
        let mut c = Vec::new();
        validate(kind, &v, &mut c);
        c.into_iter().map(|c| c.field).collect()
    }

    #[test]
    fn claims_need_modes_and_a_size() {
        assert_eq!(fields("PersistentVolumeClaim", json!({"spec": {}})), vec!["spec.accessModes", "spec.resources[storage]"]);
        assert!(fields("PersistentVolumeClaim", json!({"spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}})).is_empty());
        assert_eq!(fields("PersistentVolumeClaim", json!({"spec": {"accessModes": ["Sometimes"], "resources": {"requests": {"storage": "0"}}}})), vec!["spec.accessModes", "spec.resources[storage]"]);
    }

    #[test]
    fn volumes_need_exactly_one_source_and_local_ones_a_node() {
        let base = |extra: Value| {
            let mut v = json!({"spec": {"accessModes": ["ReadWriteOnce"], "capacity": {"storage": "1Gi"}}});
            v["spec"].as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
            v
        };
        assert_eq!(fields("PersistentVolume", base(json!({}))), vec!["spec"]);
        assert_eq!(fields("PersistentVolume", base(json!({"local": {"path": "/d"}}))), vec!["spec.nodeAffinity"]);
        assert!(fields("PersistentVolume", base(json!({"hostPath": {"path": "/d"}}))).is_empty());
        assert_eq!(fields("PersistentVolume", base(json!({"hostPath": {"path": "d"}, "nfs": {}}))), vec!["spec", "spec.hostPath.path"]);
    }

    #[test]
    fn a_claim_may_only_grow_and_be_bound_once() {
        let old = json!({"spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}});
        let mut c = Vec::new();
        let bound = json!({"spec": {"accessModes": ["ReadWriteOnce"], "volumeName": "pv1", "storageClassName": "x", "resources": {"requests": {"storage": "2Gi"}}}});
        immutable("PersistentVolumeClaim", &bound, &old, &mut c);
        assert!(c.is_empty(), "{c:?}");
        let rebound = json!({"spec": {"accessModes": ["ReadWriteOnce"], "volumeName": "pv2", "storageClassName": "x", "resources": {"requests": {"storage": "2Gi"}}}});
        immutable("PersistentVolumeClaim", &rebound, &bound, &mut c);
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn defaults_are_the_servers() {
        let mut sc = json!({"metadata": {"name": "s"}, "provisioner": "p"});
        defaults("StorageClass", &mut sc);
        assert_eq!((sc["reclaimPolicy"].as_str(), sc["volumeBindingMode"].as_str()), (Some("Delete"), Some("Immediate")));
        let mut pv = json!({"spec": {}});
        defaults("PersistentVolume", &mut pv);
        assert_eq!((pv["spec"]["persistentVolumeReclaimPolicy"].as_str(), pv["status"]["phase"].as_str()), (Some("Retain"), Some("Pending")));
    }
}
