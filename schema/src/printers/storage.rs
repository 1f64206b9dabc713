//! Table printers for the storage kinds (PersistentVolume, PersistentVolumeClaim,
//! StorageClass) and ControllerRevision, with the columns kubectl 1.32 shows for them
//! (pkg/printers/internalversion's printPersistentVolume and friends).

use super::more::Printer;
use super::{arr, i, s, since};
use serde_json::{json, Value};

pub fn printer(kind: &str) -> Option<Printer> {
    let p = |columns: &'static [(&'static str, u8)], cells: fn(&Value, i64) -> Vec<Value>| Some(Printer { columns, cells });
    match kind {
        "PersistentVolume" => p(
            &[("Name", 0), ("Capacity", 0), ("Access Modes", 0), ("Reclaim Policy", 0), ("Status", 0), ("Claim", 0), ("StorageClass", 0), ("VolumeAttributesClass", 0), ("Reason", 0), ("Age", 0), ("VolumeMode", 1)],
            pv,
        ),
        "PersistentVolumeClaim" => p(&[("Name", 0), ("Status", 0), ("Volume", 0), ("Capacity", 0), ("Access Modes", 0), ("StorageClass", 0), ("VolumeAttributesClass", 0), ("Age", 0), ("VolumeMode", 1)], pvc),
        "StorageClass" => p(&[("Name", 0), ("Provisioner", 0), ("ReclaimPolicy", 0), ("VolumeBindingMode", 0), ("AllowVolumeExpansion", 0), ("Age", 0)], storage_class),
        "ControllerRevision" => p(&[("Name", 0), ("Controller", 0), ("Revision", 0), ("Age", 0)], |o, now| {
            let owner = arr(o, "/metadata/ownerReferences").iter().find(|r| r.get("controller").and_then(Value::as_bool) == Some(true));
            let controller = owner.map(|r| format!("{}/{}", kind_path(s(r, "/apiVersion"), s(r, "/kind")), s(r, "/name"))).unwrap_or_else(|| "<none>".into());
            vec![json!(s(o, "/metadata/name")), json!(controller), json!(i(o, "/revision")), age(o, now)]
        }),
        _ => None,
    }
}

/// `daemonset.apps`, as the printer names a controller by its group-kind.
fn kind_path(api_version: &str, kind: &str) -> String {
    match api_version.split_once('/') {
        Some((group, _)) => format!("{}.{group}", kind.to_lowercase()),
        None => kind.to_lowercase(),
    }
}

fn age(o: &Value, now: i64) -> Value {
    json!(since(o.pointer("/metadata/creationTimestamp"), now))
}

/// Access modes the way `kubectl get` abbreviates them: RWO, ROX, RWX, RWOP.
pub fn access_modes(v: &Value, ptr: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    for (mode, short) in [("ReadWriteOnce", "RWO"), ("ReadOnlyMany", "ROX"), ("ReadWriteMany", "RWX"), ("ReadWriteOncePod", "RWOP")] {
        if arr(v, ptr).iter().any(|m| m.as_str() == Some(mode)) {
            out.push(short);
        }
    }
    out.join(",")
}

fn or_unset(x: &str) -> Value {
    json!(if x.is_empty() { "<unset>" } else { x })
}

fn pv(o: &Value, now: i64) -> Vec<Value> {
    let claim = match (s(o, "/spec/claimRef/namespace"), s(o, "/spec/claimRef/name")) {
        (_, "") => String::new(),
        (ns, n) => format!("{ns}/{n}"),
    };
    vec![
        json!(s(o, "/metadata/name")),
        json!(s(o, "/spec/capacity/storage")),
        json!(access_modes(o, "/spec/accessModes")),
        json!(s(o, "/spec/persistentVolumeReclaimPolicy")),
        json!(s(o, "/status/phase")),
        json!(claim),
        json!(s(o, "/spec/storageClassName")),
        or_unset(s(o, "/spec/volumeAttributesClassName")),
        json!(s(o, "/status/reason")),
        age(o, now),
        json!(if s(o, "/spec/volumeMode").is_empty() { "Filesystem" } else { s(o, "/spec/volumeMode") }),
    ]
}

fn pvc(o: &Value, now: i64) -> Vec<Value> {
    let phase = if o.pointer("/metadata/deletionTimestamp").is_some_and(|d| !d.is_null()) { "Terminating" } else { s(o, "/status/phase") };
    // Capacity and access modes are shown once bound, from the status.
    let bound = !s(o, "/spec/volumeName").is_empty();
    let (capacity, modes) = if bound { (s(o, "/status/capacity/storage").to_string(), access_modes(o, "/status/accessModes")) } else { (String::new(), String::new()) };
    vec![
        json!(s(o, "/metadata/name")),
        json!(phase),
        json!(s(o, "/spec/volumeName")),
        json!(capacity),
        json!(modes),
        json!(s(o, "/spec/storageClassName")),
        or_unset(s(o, "/spec/volumeAttributesClassName")),
        age(o, now),
        json!(if s(o, "/spec/volumeMode").is_empty() { "Filesystem" } else { s(o, "/spec/volumeMode") }),
    ]
}

pub const DEFAULT_CLASS_ANNOTATION: &str = "storageclass.kubernetes.io/is-default-class";

fn storage_class(o: &Value, now: i64) -> Vec<Value> {
    let mut name = s(o, "/metadata/name").to_string();
    if o.pointer("/metadata/annotations").and_then(|a| a.get(DEFAULT_CLASS_ANNOTATION)).and_then(Value::as_str) == Some("true") {
        name.push_str(" (default)");
    }
    let or = |p: &str, d: &str| if s(o, p).is_empty() { d.to_string() } else { s(o, p).to_string() };
    vec![
        json!(name),
        json!(s(o, "/provisioner")),
        json!(or("/reclaimPolicy", "Delete")),
        json!(or("/volumeBindingMode", "Immediate")),
        json!(o.get("allowVolumeExpansion").and_then(Value::as_bool).unwrap_or(false)),
        age(o, now),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cells(kind: &str, o: Value) -> Vec<Value> {
        (printer(kind).unwrap().cells)(&o, 0)
    }

    #[test]
    fn claims_show_capacity_once_bound() {
        let pending = json!({"metadata":{"name":"www-web-0"},"spec":{"accessModes":["ReadWriteOnce"],"storageClassName":"local-path","resources":{"requests":{"storage":"1Gi"}}},"status":{"phase":"Pending"}});
        assert_eq!(cells("PersistentVolumeClaim", pending)[1..6], [json!("Pending"), json!(""), json!(""), json!(""), json!("local-path")]);
        let bound = json!({"metadata":{"name":"www-web-0"},"spec":{"volumeName":"pvc-1","storageClassName":"local-path"},"status":{"phase":"Bound","capacity":{"storage":"1Gi"},"accessModes":["ReadWriteOnce","ReadOnlyMany"]}});
        assert_eq!(cells("PersistentVolumeClaim", bound)[1..6], [json!("Bound"), json!("pvc-1"), json!("1Gi"), json!("RWO,ROX"), json!("local-path")]);
    }

    #[test]
    fn volumes_and_classes() {
        let pv = json!({"metadata":{"name":"pvc-1"},"spec":{"capacity":{"storage":"1Gi"},"accessModes":["ReadWriteOnce"],"persistentVolumeReclaimPolicy":"Delete","claimRef":{"namespace":"default","name":"www-web-0"},"storageClassName":"local-path"},"status":{"phase":"Bound"}});
        assert_eq!(cells("PersistentVolume", pv)[1..8], [json!("1Gi"), json!("RWO"), json!("Delete"), json!("Bound"), json!("default/www-web-0"), json!("local-path"), json!("<unset>")]);
        let sc = json!({"metadata":{"name":"local-path","annotations":{DEFAULT_CLASS_ANNOTATION:"true"}},"provisioner":"flotilla.io/local-path","volumeBindingMode":"WaitForFirstConsumer"});
        assert_eq!(cells("StorageClass", sc)[..5], [json!("local-path (default)"), json!("flotilla.io/local-path"), json!("Delete"), json!("WaitForFirstConsumer"), json!(false)]);
        let cr = json!({"metadata":{"name":"web-5d8f","ownerReferences":[{"apiVersion":"apps/v1","kind":"StatefulSet","name":"web","uid":"u","controller":true}]},"revision":2});
        assert_eq!(cells("ControllerRevision", cr)[1..3], [json!("statefulset.apps/web"), json!(2)]);
    }
}
