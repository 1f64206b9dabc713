//! DefaultStorageClass: a claim that names no class (the field absent, not "") gets the
//! class annotated as the default, so `volumeClaimTemplates` without a class still get
//! storage. Several defaults: the newest wins, as kube-apiserver 1.28+ picks.

use crate::printers::DEFAULT_CLASS_ANNOTATION;
use serde_json::{json, Value};

fn is_default(sc: &Value) -> bool {
    sc.pointer("/metadata/annotations").and_then(|a| a.get(DEFAULT_CLASS_ANNOTATION)).and_then(Value::as_str) == Some("true")
}

/// The default class among `classes` (every StorageClass), if any.
pub fn default_class(classes: &[Value]) -> Option<&str> {
    let created = |c: &Value| c.pointer("/metadata/creationTimestamp").and_then(Value::as_str).unwrap_or("").to_string();
    let name = |c: &Value| c.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("").to_string();
    classes.iter().filter(|c| is_default(c)).max_by_key(|c| (created(c), name(c))).and_then(|c| c.pointer("/metadata/name")).and_then(Value::as_str)
}

pub fn admit_claim(pvc: &mut Value, classes: &[Value]) {
    if pvc.pointer("/spec/storageClassName").is_some_and(|c| !c.is_null()) {
        return;
    }
    let Some(class) = default_class(classes).map(str::to_string) else { return };
    if let Some(spec) = pvc.get_mut("spec").and_then(Value::as_object_mut) {
        spec.insert("storageClassName".into(), json!(class));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sc(name: &str, default: bool, created: &str) -> Value {
        json!({"metadata": {"name": name, "creationTimestamp": created, "annotations": {DEFAULT_CLASS_ANNOTATION: if default { "true" } else { "false" }}}})
    }

    #[test]
    fn only_claims_without_a_class_get_the_default() {
        let classes = [sc("slow", false, "2026-01-01T00:00:00Z"), sc("local-path", true, "2026-01-01T00:00:00Z"), sc("newer", true, "2026-02-01T00:00:00Z")];
        let mut pvc = json!({"spec": {}});
        admit_claim(&mut pvc, &classes);
        assert_eq!(pvc["spec"]["storageClassName"], json!("newer"));
        let mut explicit = json!({"spec": {"storageClassName": ""}});
        admit_claim(&mut explicit, &classes);
        assert_eq!(explicit["spec"]["storageClassName"], json!(""), "\"\" asks for no class");
        let mut none = json!({"spec": {}});
        admit_claim(&mut none, &classes[..1]);
        assert!(none["spec"].get("storageClassName").is_none());
    }
}
