//! The admission plugins kube-apiserver runs after defaulting and validation, in its
//! order: ServiceAccount, LimitRanger, ResourceQuota, DefaultTolerationSeconds, Priority.
//! Each decision is a pure function of the object and the objects it consults (read by
//! the caller over the bus), so the gateway and the internal writers share them.

pub mod limit_ranger;
pub mod priority;
pub mod resource_quota;
pub mod service_account;
pub mod storage_class;
pub mod tolerations;

use crate::admission::AdmissionError;
use serde_json::Value;

/// `pods "web" is forbidden: <why>`, as admission.NewForbidden words it.
pub fn forbidden(plural: &str, obj: &Value, why: impl std::fmt::Display) -> AdmissionError {
    let name = crate::object::name(obj).unwrap_or("");
    AdmissionError::Forbidden(format!("{plural} \"{name}\" is forbidden: {why}"))
}

/// Go's utilerrors.NewAggregate: one message alone, several in brackets.
pub fn aggregate(errs: &[String]) -> String {
    if errs.len() == 1 {
        errs[0].clone()
    } else {
        format!("[{}]", errs.join(", "))
    }
}

/// Calls `f` on each of a pod's containers, then its init containers, with the word the
/// real messages use for each kind.
pub(crate) fn for_each_container(pod: &mut Value, mut f: impl FnMut(&'static str, &mut Value)) {
    for (field, word) in [("containers", "container"), ("initContainers", "init container")] {
        if let Some(cs) = pod.get_mut("spec").and_then(|s| s.get_mut(field)).and_then(Value::as_array_mut) {
            for c in cs.iter_mut().filter(|c| c.is_object()) {
                f(word, c);
            }
        }
    }
}

/// A pod's containers (regular, then init) as read-only values.
pub(crate) fn containers(pod: &Value) -> impl Iterator<Item = &Value> {
    ["containers", "initContainers"].into_iter().flat_map(move |f| pod.pointer(&format!("/spec/{f}")).and_then(Value::as_array).into_iter().flatten())
}
