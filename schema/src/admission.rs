//! Admission shared by every writer (gateway and internal actors): server-owned metadata,
//! defaulting, then validation. An object that fails here is never stored.

use crate::object;
use crate::registry::ResourceInfo;
use serde_json::{json, Value};

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Cause {
    /// e.g. "FieldValueRequired", "FieldValueInvalid".
    pub reason: String,
    pub field: String,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum AdmissionError {
    /// 422: `<Kind> "<name>" is invalid: <causes>`.
    #[error("{kind} \"{name}\" is invalid: {}", causes.iter().map(|c| format!("{}: {}", c.field, c.message)).collect::<Vec<_>>().join(", "))]
    Invalid { kind: String, group: String, name: String, causes: Vec<Cause> },
    /// 400: the body is not a well-formed object of this kind.
    #[error("{0}")]
    BadRequest(String),
    /// 403 from an admission plugin: `<resource> "<name>" is forbidden: <why>`.
    #[error("{0}")]
    Forbidden(String),
}

fn required(field: &str) -> Cause {
    Cause { reason: "FieldValueRequired".into(), field: field.into(), message: "Required value".into() }
}

fn invalid(field: &str, value: &str, why: &str) -> Cause {
    Cause { reason: "FieldValueInvalid".into(), field: field.into(), message: format!("Invalid value: \"{value}\": {why}") }
}

/// RFC 1123 label: what namespaces and most names must be.
pub fn is_dns1123_label(s: &str) -> bool {
    s.len() <= 63 && label_chars(s)
}

/// One dot-separated part of a subdomain: a label's characters, of any length (the real
/// server's subdomain check is the regex and 253 characters, not 63 per part).
fn label_chars(s: &str) -> bool {
    !s.is_empty()
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && s.as_bytes()[0].is_ascii_alphanumeric()
        && s.as_bytes()[s.len() - 1].is_ascii_alphanumeric()
}

/// RFC 1123 subdomain: dot-separated labels, at most 253 characters.
pub fn is_dns1123_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(label_chars)
}

const SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const DNS1035_MSG: &str = "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')";
const LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";

/// Sets what the server owns on a new object (uid, creationTimestamp, generation), fills
/// a `generateName`, applies defaults and validates.
pub fn admit_create(res: &ResourceInfo, v: &mut Value) -> Result<(), AdmissionError> {
    if !v.is_object() {
        return Err(AdmissionError::BadRequest("the body is not a JSON object".into()));
    }
    let whole = check_shape(res, v)?;
    if object::name(v).is_none() {
        if let Some(gen) = v.pointer("/metadata/generateName").and_then(Value::as_str).filter(|s| !s.is_empty()) {
            let name = format!("{gen}{}", random_suffix(5));
            object::set_meta(v, "name", Value::String(name));
        }
    }
    object::set_meta(v, "uid", Value::String(uuid::Uuid::new_v4().to_string()));
    object::set_meta(v, "creationTimestamp", Value::String(object::now_string()));
    object::remove_meta(v, "resourceVersion");
    object::remove_meta(v, "deletionTimestamp");
    if v.get("spec").is_some() {
        object::set_meta(v, "generation", json!(1));
    }
    set_type_meta(res, v);
    if res.kind == "Namespace" {
        default_namespace(v);
    }
    crate::defaults::apply(res, v);
    validate_shaped(res, v, whole)
}

/// Carries server-owned metadata over from the stored object, bumps generation when the
/// spec changed, applies defaults and validates, including immutable fields.
pub fn admit_update(res: &ResourceInfo, v: &mut Value, old: &Value) -> Result<(), AdmissionError> {
    admit_update_as(res, v, old, Writer::Client)
}

/// Who writes: a client of the API, or one of flotilla's own actors. Only actors may
/// start a graceful deletion by setting `deletionTimestamp` (clients use DELETE).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Writer {
    Client,
    Actor,
}

pub fn admit_update_as(res: &ResourceInfo, v: &mut Value, old: &Value, writer: Writer) -> Result<(), AdmissionError> {
    if !v.is_object() {
        return Err(AdmissionError::BadRequest("the body is not a JSON object".into()));
    }
    let whole = check_shape(res, v)?;
    set_type_meta(res, v);
    let deleting = old.pointer("/metadata/deletionTimestamp").is_some_and(|d| !d.is_null());
    for f in ["uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds"] {
        let may_set = writer == Writer::Actor && !deleting && f.starts_with("deletion");
        if may_set {
            continue; // an actor marking the object for deletion: keep what it set
        }
        match old.pointer(&format!("/metadata/{f}")) {
            Some(x) => object::set_meta(v, f, x.clone()),
            None => object::remove_meta(v, f),
        }
    }
    crate::defaults::apply(res, v);
    let old_gen = old.pointer("/metadata/generation").and_then(Value::as_i64).unwrap_or(0);
    if v.get("spec").is_some() {
        let changed = v.get("spec") != old.get("spec");
        object::set_meta(v, "generation", json!(if changed { old_gen + 1 } else { old_gen.max(1) }));
    }
    if res.kind == "Namespace" {
        default_namespace(v);
    }
    validate_shaped(res, v, whole)?;
    let mut causes = Vec::new();
    crate::validate::immutable(res.kind, v, old, &mut causes);
    if matches!(res.kind, "Deployment" | "ReplicaSet") {
        if v.pointer("/spec/selector") != old.pointer("/spec/selector") {
            causes.push(Cause { reason: "FieldValueInvalid".into(), field: "spec.selector".into(), message: "Invalid value: field is immutable".into() });
        }
    }
    if res.kind == "Pod" {
        let (o, n) = (object::node_name(old), object::node_name(v));
        if o.is_some() && o != n {
            causes.push(Cause { reason: "FieldValueInvalid".into(), field: "spec.nodeName".into(), message: "Invalid value: field is immutable once set".into() });
        }
    }
    if causes.is_empty() {
        Ok(())
    } else {
        Err(invalid_err(res, v, causes))
    }
}

fn default_namespace(v: &mut Value) {
    if let Some(o) = v.as_object_mut() {
        let spec = o.entry("spec").or_insert_with(|| json!({}));
        if spec.get("finalizers").is_none() {
            spec["finalizers"] = json!(["kubernetes"]);
        }
        let status = o.entry("status").or_insert_with(|| json!({}));
        if status.get("phase").is_none() {
            status["phase"] = json!("Active");
        }
    }
}

fn set_type_meta(res: &ResourceInfo, v: &mut Value) {
    if let Some(o) = v.as_object_mut() {
        o.insert("apiVersion".into(), Value::String(res.api_version()));
        o.insert("kind".into(), Value::String(res.kind.into()));
    }
}

fn invalid_err(res: &ResourceInfo, v: &Value, causes: Vec<Cause>) -> AdmissionError {
    AdmissionError::Invalid {
        kind: res.kind.into(),
        group: res.group.into(),
        name: object::name(v).unwrap_or("").into(),
        causes,
    }
}

fn random_suffix(n: usize) -> String {
    // Kubernetes' alphabet for generated names: no vowels, no confusable characters.
    const ALPHA: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let u = uuid::Uuid::new_v4();
    u.as_bytes().iter().take(n).map(|b| ALPHA[*b as usize % ALPHA.len()] as char).collect()
}

/// Validates the fields kubectl users set; every problem is reported, not just the first.
pub fn validate(res: &ResourceInfo, v: &Value) -> Result<(), AdmissionError> {
    validate_shaped(res, v, false)
}

/// `decoded`: the object already decoded whole as its type before defaulting (which only
/// adds well-typed fields), so the typed decode need not run a second time per write.
fn validate_shaped(res: &ResourceInfo, v: &Value, decoded: bool) -> Result<(), AdmissionError> {
    let mut causes = Vec::new();
    match object::name(v) {
        None => causes.push(Cause { reason: "FieldValueRequired".into(), field: "metadata.name".into(), message: "Required value: name or generateName is required".into() }),
        Some(n) => {
            if let Err(why) = name_rule(res.kind, n) {
                causes.push(invalid("metadata.name", n, why));
            }
        }
    }
    if res.namespaced && object::namespace(v).is_none() {
        causes.push(required("metadata.namespace"));
    }
    match res.kind {
        "Pod" => validate_pod_spec(v.get("spec"), "spec", &mut causes),
        "Deployment" | "ReplicaSet" => validate_workload(v, &mut causes),
        "ReplicationController" => validate_replication_controller(v, &mut causes),
        other => crate::validate::kind(other, v, &mut causes),
    }
    // Field problems first (a missing selector is Invalid, as on the real server), then
    // the shape: the object must decode as its typed form.
    if !causes.is_empty() {
        return Err(invalid_err(res, v, causes));
    }
    if decoded {
        return Ok(());
    }
    typed_check(res, v).map_err(|e| cannot_handle(res, e))
}

fn cannot_handle(res: &ResourceInfo, e: serde_json::Error) -> AdmissionError {
    AdmissionError::BadRequest(format!("{} in version \"{}\" cannot be handled as a {}: {e}", res.kind, res.version, res.kind))
}

/// Before defaulting touches the object: every field present has its type's shape (a
/// `spec` that is a list, a number where an object belongs), or the request is a 400.
/// A required field that is missing is left for validation to report field by field
/// (serde reports it only after every present field of that object decoded). True when
/// the object decoded whole.
fn check_shape(res: &ResourceInfo, v: &Value) -> Result<bool, AdmissionError> {
    match typed_check(res, v) {
        Ok(()) => Ok(true),
        Err(e) if e.to_string().starts_with("missing field") => Ok(false),
        Err(e) => Err(cannot_handle(res, e)),
    }
}

fn typed_check(res: &ResourceInfo, v: &Value) -> Result<(), serde_json::Error> {
    use k8s_openapi::api::{apps::v1 as apps, core::v1 as core, node::v1 as node, rbac::v1 as rbac};
    let v = v.clone();
    match res.kind {
        "Namespace" => serde_json::from_value::<core::Namespace>(v).map(drop),
        "Node" => serde_json::from_value::<core::Node>(v).map(drop),
        "Pod" => serde_json::from_value::<core::Pod>(v).map(drop),
        "Event" if res.group == "events.k8s.io" => serde_json::from_value::<k8s_openapi::api::events::v1::Event>(v).map(drop),
        "Event" => serde_json::from_value::<core::Event>(v).map(drop),
        "Deployment" => serde_json::from_value::<apps::Deployment>(v).map(drop),
        "ReplicaSet" => serde_json::from_value::<apps::ReplicaSet>(v).map(drop),
        "ReplicationController" => serde_json::from_value::<core::ReplicationController>(v).map(drop),
        "RuntimeClass" => serde_json::from_value::<node::RuntimeClass>(v).map(drop),
        "ConfigMap" => serde_json::from_value::<core::ConfigMap>(v).map(drop),
        "Secret" => serde_json::from_value::<core::Secret>(v).map(drop),
        "ServiceAccount" => serde_json::from_value::<core::ServiceAccount>(v).map(drop),
        "Lease" => serde_json::from_value::<k8s_openapi::api::coordination::v1::Lease>(v).map(drop),
        "PriorityClass" => serde_json::from_value::<k8s_openapi::api::scheduling::v1::PriorityClass>(v).map(drop),
        "Service" => serde_json::from_value::<core::Service>(v).map(drop),
        "Endpoints" => serde_json::from_value::<core::Endpoints>(v).map(drop),
        "ResourceQuota" => serde_json::from_value::<core::ResourceQuota>(v).map(drop),
        "LimitRange" => serde_json::from_value::<core::LimitRange>(v).map(drop),
        "DaemonSet" => serde_json::from_value::<apps::DaemonSet>(v).map(drop),
        "StatefulSet" => serde_json::from_value::<apps::StatefulSet>(v).map(drop),
        "Job" => serde_json::from_value::<k8s_openapi::api::batch::v1::Job>(v).map(drop),
        "CronJob" => serde_json::from_value::<k8s_openapi::api::batch::v1::CronJob>(v).map(drop),
        "HorizontalPodAutoscaler" if res.version == "v1" => serde_json::from_value::<k8s_openapi::api::autoscaling::v1::HorizontalPodAutoscaler>(v).map(drop),
        "HorizontalPodAutoscaler" => serde_json::from_value::<k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler>(v).map(drop),
        "EndpointSlice" => serde_json::from_value::<k8s_openapi::api::discovery::v1::EndpointSlice>(v).map(drop),
        "Role" => serde_json::from_value::<rbac::Role>(v).map(drop),
        "ClusterRole" => serde_json::from_value::<rbac::ClusterRole>(v).map(drop),
        "RoleBinding" => serde_json::from_value::<rbac::RoleBinding>(v).map(drop),
        "ClusterRoleBinding" => serde_json::from_value::<rbac::ClusterRoleBinding>(v).map(drop),
        "PodDisruptionBudget" => serde_json::from_value::<k8s_openapi::api::policy::v1::PodDisruptionBudget>(v).map(drop),
        "ControllerRevision" => serde_json::from_value::<apps::ControllerRevision>(v).map(drop),
        "PersistentVolume" => serde_json::from_value::<core::PersistentVolume>(v).map(drop),
        "PersistentVolumeClaim" => serde_json::from_value::<core::PersistentVolumeClaim>(v).map(drop),
        "StorageClass" => serde_json::from_value::<k8s_openapi::api::storage::v1::StorageClass>(v).map(drop),
        _ => Ok(()),
    }
}

/// Which names a kind accepts: namespaces are labels, services DNS-1035 labels, RBAC
/// objects any path segment (`system:discovery`), everything else subdomains.
fn name_rule(kind: &str, n: &str) -> Result<(), &'static str> {
    let ok = match kind {
        "Namespace" => return if is_dns1123_label(n) { Ok(()) } else { Err(LABEL_MSG) },
        "Service" => is_dns1123_label(n) && n.as_bytes()[0].is_ascii_lowercase(),
        "Role" | "ClusterRole" | "RoleBinding" | "ClusterRoleBinding" => {
            return match n {
                "." | ".." => Err("may not be '.' or '..'"),
                _ if n.contains('/') => Err("may not contain '/'"),
                _ if n.contains('%') => Err("may not contain '%'"),
                _ => Ok(()),
            }
        }
        _ => return if is_dns1123_subdomain(n) { Ok(()) } else { Err(SUBDOMAIN_MSG) },
    };
    if ok {
        Ok(())
    } else {
        Err(DNS1035_MSG)
    }
}

pub(crate) fn validate_pod_spec(spec: Option<&Value>, path: &str, causes: &mut Vec<Cause>) {
    let containers = spec.and_then(|s| s.get("containers")).and_then(Value::as_array);
    match containers {
        None => causes.push(required(&format!("{path}.containers"))),
        Some(cs) if cs.is_empty() => causes.push(required(&format!("{path}.containers"))),
        Some(cs) => {
            let mut seen = std::collections::HashSet::new();
            for (i, c) in cs.iter().enumerate() {
                let p = format!("{path}.containers[{i}]");
                match c.get("name").and_then(Value::as_str) {
                    None | Some("") => causes.push(required(&format!("{p}.name"))),
                    Some(n) if !is_dns1123_label(n) => causes.push(invalid(&format!("{p}.name"), n, LABEL_MSG)),
                    Some(n) => {
                        if !seen.insert(n.to_string()) {
                            causes.push(Cause { reason: "FieldValueDuplicate".into(), field: format!("{p}.name"), message: format!("Duplicate value: \"{n}\"") });
                        }
                    }
                }
                if c.get("image").and_then(Value::as_str).map(str::is_empty).unwrap_or(true) {
                    causes.push(required(&format!("{p}.image")));
                }
            }
        }
    }
    if let Some(rp) = spec.and_then(|s| s.get("restartPolicy")).and_then(Value::as_str) {
        if !["Always", "OnFailure", "Never"].contains(&rp) {
            causes.push(Cause { reason: "FieldValueNotSupported".into(), field: format!("{path}.restartPolicy"), message: format!("Unsupported value: \"{rp}\": supported values: \"Always\", \"OnFailure\", \"Never\"") });
        }
    }
}

/// An RC's selector is a plain label map, required and matched by the template's labels.
fn validate_replication_controller(v: &Value, causes: &mut Vec<Cause>) {
    if let Some(r) = v.pointer("/spec/replicas").and_then(Value::as_i64) {
        if r < 0 {
            causes.push(Cause { reason: "FieldValueInvalid".into(), field: "spec.replicas".into(), message: format!("Invalid value: {r}: must be greater than or equal to 0") });
        }
    }
    let sel = v.pointer("/spec/selector").and_then(Value::as_object).filter(|m| !m.is_empty());
    let Some(sel) = sel else {
        causes.push(required("spec.selector"));
        return;
    };
    let tpl_labels = v.pointer("/spec/template/metadata/labels").and_then(Value::as_object);
    if v.pointer("/spec/template").is_some() && !sel.iter().all(|(k, val)| tpl_labels.and_then(|t| t.get(k)) == Some(val)) {
        causes.push(Cause {
            reason: "FieldValueInvalid".into(),
            field: "spec.template.metadata.labels".into(),
            message: format!("Invalid value: {}: `selector` does not match template `labels`", serde_json::to_string(&tpl_labels).unwrap_or_default()),
        });
    }
    if v.pointer("/spec/template").is_some() {
        validate_pod_spec(v.pointer("/spec/template/spec"), "spec.template.spec", causes);
    }
}

pub(crate) fn validate_workload(v: &Value, causes: &mut Vec<Cause>) {
    if let Some(r) = v.pointer("/spec/replicas").and_then(Value::as_i64) {
        if r < 0 {
            causes.push(Cause { reason: "FieldValueInvalid".into(), field: "spec.replicas".into(), message: format!("Invalid value: {r}: must be greater than or equal to 0") });
        }
    }
    let selector = v.pointer("/spec/selector");
    let match_labels = selector.and_then(|s| s.get("matchLabels")).and_then(Value::as_object);
    let match_expr = selector.and_then(|s| s.get("matchExpressions")).and_then(Value::as_array);
    if match_labels.map(|m| m.is_empty()).unwrap_or(true) && match_expr.map(|m| m.is_empty()).unwrap_or(true) {
        causes.push(required("spec.selector"));
    }
    let tpl_labels = v.pointer("/spec/template/metadata/labels").and_then(Value::as_object);
    if let Some(ml) = match_labels {
        let ok = ml.iter().all(|(k, val)| tpl_labels.and_then(|t| t.get(k)) == Some(val));
        if !ok {
            causes.push(Cause {
                reason: "FieldValueInvalid".into(),
                field: "spec.template.metadata.labels".into(),
                message: format!("Invalid value: {}: `selector` does not match template `labels`", serde_json::to_string(&tpl_labels).unwrap_or_default()),
            });
        }
    }
    validate_pod_spec(v.pointer("/spec/template/spec"), "spec.template.spec", causes);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::by_plural;

    fn deploy(name: &str, selector: Value) -> Value {
        json!({"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":name,"namespace":"demo"},
          "spec":{"replicas":3,"selector":selector,"template":{"metadata":{"labels":{"app":"web"}},
          "spec":{"containers":[{"name":"c","image":"busybox","command":["sh","-c","sleep 1000"]}]}}}})
    }

    #[test]
    fn valid_deployment_is_admitted_and_defaulted() {
        let res = by_plural("apps", "v1", "deployments").unwrap();
        let mut d = deploy("web", json!({"matchLabels":{"app":"web"}}));
        admit_create(res, &mut d).unwrap();
        assert_eq!(d.pointer("/metadata/generation"), Some(&json!(1)));
        assert!(d.pointer("/metadata/uid").is_some());
    }

    #[test]
    fn bad_name_and_missing_selector_are_invalid() {
        let res = by_plural("apps", "v1", "deployments").unwrap();
        let mut d = deploy("Bad_Name", Value::Null);
        let e = admit_create(res, &mut d).unwrap_err();
        let AdmissionError::Invalid { causes, .. } = e else { panic!("expected Invalid") };
        let fields: Vec<_> = causes.iter().map(|c| c.field.as_str()).collect();
        assert!(fields.contains(&"metadata.name"));
        assert!(fields.contains(&"spec.selector"));
    }

    #[test]
    fn only_actors_start_a_graceful_deletion() {
        let res = by_plural("", "v1", "pods").unwrap();
        let mut old = json!({"metadata":{"name":"p","namespace":"demo"},"spec":{"containers":[{"name":"c","image":"i"}]}});
        admit_create(res, &mut old).unwrap();
        let mut marked = old.clone();
        object::set_meta(&mut marked, "deletionTimestamp", json!("2026-01-01T00:00:00Z"));
        let mut by_client = marked.clone();
        admit_update(res, &mut by_client, &old).unwrap();
        assert!(by_client.pointer("/metadata/deletionTimestamp").is_none());
        let mut by_actor = marked.clone();
        admit_update_as(res, &mut by_actor, &old, Writer::Actor).unwrap();
        assert!(by_actor.pointer("/metadata/deletionTimestamp").is_some());
        // Once set, it stays as it was.
        let mut later = by_actor.clone();
        object::set_meta(&mut later, "deletionTimestamp", json!("2030-01-01T00:00:00Z"));
        admit_update_as(res, &mut later, &by_actor, Writer::Actor).unwrap();
        assert_eq!(later.pointer("/metadata/deletionTimestamp"), Some(&json!("2026-01-01T00:00:00Z")));
    }

    #[test]
    fn labels() {
        assert!(is_dns1123_label("demo-1"));
        assert!(!is_dns1123_label("-demo"));
        assert!(!is_dns1123_label("Demo"));
        assert!(is_dns1123_subdomain("a.b-c"));
        // A Deployment of 53 characters names its ReplicaSet with 64.
        assert!(is_dns1123_subdomain(&format!("{}-5fcf4f68b4", "a".repeat(53))));
        assert!(!is_dns1123_label(&"a".repeat(64)));
    }
}
