//! Protobuf bodies of the kinds `kubectl create <generator>` sends beyond the first few
//! (role, clusterrole, rolebinding, clusterrolebinding, service, job, cronjob, quota,
//! poddisruptionbudget, priorityclass, and autoscale's HorizontalPodAutoscaler), decoded by a field table per message instead of
//! a hand-written struct and its JSON mapping per kind: one table line per field, with
//! the field numbers of k8s.io/api's generated.proto. Unknown fields are skipped.

use serde_json::{json, Map, Value};

#[derive(Clone, Copy)]
enum T {
    Str,
    I32,
    I64,
    Bool,
    Msg(&'static [F]),
    /// map<string, string>
    MapStr,
    /// map<string, resource.Quantity>
    MapQty,
    /// intstr.IntOrString: a number or a string in JSON.
    IntOrStr,
    /// resource.Quantity: a string in JSON.
    Qty,
}

/// One field: its number, JSON name, type, and whether it repeats. `keep` marks fields
/// Go holds as pointers or requires, whose zero value still means something.
#[derive(Clone, Copy)]
struct F {
    tag: u32,
    name: &'static str,
    t: T,
    rep: bool,
    keep: bool,
}

const fn f(tag: u32, name: &'static str, t: T) -> F {
    F { tag, name, t, rep: false, keep: false }
}
const fn r(tag: u32, name: &'static str, t: T) -> F {
    F { tag, name, t, rep: true, keep: false }
}
const fn k(tag: u32, name: &'static str, t: T) -> F {
    F { tag, name, t, rep: false, keep: true }
}

const OWNER_REF: &[F] = &[f(1, "kind", T::Str), f(3, "name", T::Str), f(4, "uid", T::Str), f(5, "apiVersion", T::Str), k(6, "controller", T::Bool), k(7, "blockOwnerDeletion", T::Bool)];
const META: &[F] = &[
    f(1, "name", T::Str),
    f(2, "generateName", T::Str),
    f(3, "namespace", T::Str),
    f(6, "resourceVersion", T::Str),
    f(11, "labels", T::MapStr),
    f(12, "annotations", T::MapStr),
    r(13, "ownerReferences", T::Msg(OWNER_REF)),
    r(14, "finalizers", T::Str),
];
const SELECTOR_REQ: &[F] = &[f(1, "key", T::Str), f(2, "operator", T::Str), r(3, "values", T::Str)];
const SELECTOR: &[F] = &[f(1, "matchLabels", T::MapStr), r(2, "matchExpressions", T::Msg(SELECTOR_REQ))];

const POLICY_RULE: &[F] = &[r(1, "verbs", T::Str), r(2, "apiGroups", T::Str), r(3, "resources", T::Str), r(4, "resourceNames", T::Str), r(5, "nonResourceURLs", T::Str)];
const AGGREGATION: &[F] = &[r(1, "clusterRoleSelectors", T::Msg(SELECTOR))];
const ROLE: &[F] = &[f(1, "metadata", T::Msg(META)), r(2, "rules", T::Msg(POLICY_RULE))];
const CLUSTER_ROLE: &[F] = &[f(1, "metadata", T::Msg(META)), r(2, "rules", T::Msg(POLICY_RULE)), f(3, "aggregationRule", T::Msg(AGGREGATION))];
const SUBJECT: &[F] = &[f(1, "kind", T::Str), k(2, "apiGroup", T::Str), f(3, "name", T::Str), f(4, "namespace", T::Str)];
const ROLE_REF: &[F] = &[f(1, "apiGroup", T::Str), f(2, "kind", T::Str), f(3, "name", T::Str)];
const BINDING: &[F] = &[f(1, "metadata", T::Msg(META)), r(2, "subjects", T::Msg(SUBJECT)), f(3, "roleRef", T::Msg(ROLE_REF))];

const SERVICE_PORT: &[F] = &[f(1, "name", T::Str), f(2, "protocol", T::Str), f(3, "port", T::I32), f(4, "targetPort", T::IntOrStr), f(5, "nodePort", T::I32), f(6, "appProtocol", T::Str)];
const SERVICE_SPEC: &[F] = &[
    r(1, "ports", T::Msg(SERVICE_PORT)),
    f(2, "selector", T::MapStr),
    f(3, "clusterIP", T::Str),
    f(4, "type", T::Str),
    r(5, "externalIPs", T::Str),
    f(7, "sessionAffinity", T::Str),
    f(8, "loadBalancerIP", T::Str),
    r(9, "loadBalancerSourceRanges", T::Str),
    f(10, "externalName", T::Str),
    f(11, "externalTrafficPolicy", T::Str),
    f(13, "publishNotReadyAddresses", T::Bool),
    f(17, "ipFamilyPolicy", T::Str),
    r(18, "clusterIPs", T::Str),
    r(19, "ipFamilies", T::Str),
    k(20, "allocateLoadBalancerNodePorts", T::Bool),
    f(21, "loadBalancerClass", T::Str),
    f(22, "internalTrafficPolicy", T::Str),
];
const SERVICE: &[F] = &[f(1, "metadata", T::Msg(META)), f(2, "spec", T::Msg(SERVICE_SPEC))];

const CONTAINER_PORT: &[F] = &[f(1, "name", T::Str), f(2, "hostPort", T::I32), f(3, "containerPort", T::I32), f(4, "protocol", T::Str), f(5, "hostIP", T::Str)];
const ENV_VAR: &[F] = &[f(1, "name", T::Str), f(2, "value", T::Str)];
const RESOURCES: &[F] = &[f(1, "limits", T::MapQty), f(2, "requests", T::MapQty)];
const CONTAINER: &[F] = &[
    f(1, "name", T::Str),
    f(2, "image", T::Str),
    r(3, "command", T::Str),
    r(4, "args", T::Str),
    f(5, "workingDir", T::Str),
    r(6, "ports", T::Msg(CONTAINER_PORT)),
    r(7, "env", T::Msg(ENV_VAR)),
    f(8, "resources", T::Msg(RESOURCES)),
    f(14, "imagePullPolicy", T::Str),
];
const TOLERATION: &[F] = &[f(1, "key", T::Str), f(2, "operator", T::Str), f(3, "value", T::Str), f(4, "effect", T::Str), k(5, "tolerationSeconds", T::I64)];
const POD_SPEC: &[F] = &[
    r(2, "containers", T::Msg(CONTAINER)),
    f(3, "restartPolicy", T::Str),
    k(4, "terminationGracePeriodSeconds", T::I64),
    k(5, "activeDeadlineSeconds", T::I64),
    f(6, "dnsPolicy", T::Str),
    f(7, "nodeSelector", T::MapStr),
    f(8, "serviceAccountName", T::Str),
    f(10, "nodeName", T::Str),
    f(19, "schedulerName", T::Str),
    r(20, "initContainers", T::Msg(CONTAINER)),
    r(22, "tolerations", T::Msg(TOLERATION)),
];
const POD_TEMPLATE: &[F] = &[f(1, "metadata", T::Msg(META)), f(2, "spec", T::Msg(POD_SPEC))];
const JOB_SPEC: &[F] = &[
    k(1, "parallelism", T::I32),
    k(2, "completions", T::I32),
    k(3, "activeDeadlineSeconds", T::I64),
    f(4, "selector", T::Msg(SELECTOR)),
    k(5, "manualSelector", T::Bool),
    f(6, "template", T::Msg(POD_TEMPLATE)),
    k(7, "backoffLimit", T::I32),
    k(8, "ttlSecondsAfterFinished", T::I32),
    f(9, "completionMode", T::Str),
    k(10, "suspend", T::Bool),
];
const JOB: &[F] = &[f(1, "metadata", T::Msg(META)), f(2, "spec", T::Msg(JOB_SPEC))];
const JOB_TEMPLATE: &[F] = &[f(1, "metadata", T::Msg(META)), f(2, "spec", T::Msg(JOB_SPEC))];
const CRON_JOB_SPEC: &[F] = &[
    f(1, "schedule", T::Str),
    k(2, "startingDeadlineSeconds", T::I64),
    f(3, "concurrencyPolicy", T::Str),
    k(4, "suspend", T::Bool),
    f(5, "jobTemplate", T::Msg(JOB_TEMPLATE)),
    k(6, "successfulJobsHistoryLimit", T::I32),
    k(7, "failedJobsHistoryLimit", T::I32),
    f(8, "timeZone", T::Str),
];
const CRON_JOB: &[F] = &[f(1, "metadata", T::Msg(META)), f(2, "spec", T::Msg(CRON_JOB_SPEC))];

const SCOPE_REQ: &[F] = &[f(1, "scopeName", T::Str), f(2, "operator", T::Str), r(3, "values", T::Str)];
const SCOPE_SELECTOR: &[F] = &[r(1, "matchExpressions", T::Msg(SCOPE_REQ))];
const QUOTA_SPEC: &[F] = &[f(1, "hard", T::MapQty), r(2, "scopes", T::Str), f(3, "scopeSelector", T::Msg(SCOPE_SELECTOR))];
const QUOTA: &[F] = &[f(1, "metadata", T::Msg(META)), f(2, "spec", T::Msg(QUOTA_SPEC))];
const PDB_SPEC: &[F] = &[f(1, "minAvailable", T::IntOrStr), f(2, "selector", T::Msg(SELECTOR)), f(3, "maxUnavailable", T::IntOrStr), f(4, "unhealthyPodEvictionPolicy", T::Str)];
const PDB: &[F] = &[f(1, "metadata", T::Msg(META)), f(2, "spec", T::Msg(PDB_SPEC))];
const PRIORITY_CLASS: &[F] = &[f(1, "metadata", T::Msg(META)), k(2, "value", T::I32), f(3, "globalDefault", T::Bool), f(4, "description", T::Str), f(5, "preemptionPolicy", T::Str)];

// `kubectl autoscale`: autoscaling/v1, its one CPU target.
const CROSS_VERSION_REF: &[F] = &[f(1, "kind", T::Str), f(2, "name", T::Str), f(3, "apiVersion", T::Str)];
const HPA_V1_SPEC: &[F] = &[f(1, "scaleTargetRef", T::Msg(CROSS_VERSION_REF)), k(2, "minReplicas", T::I32), k(3, "maxReplicas", T::I32), k(4, "targetCPUUtilizationPercentage", T::I32)];
const HPA_V1: &[F] = &[f(1, "metadata", T::Msg(META)), f(2, "spec", T::Msg(HPA_V1_SPEC))];

const INT_OR_STRING: &[F] = &[f(1, "type", T::I64), f(2, "intVal", T::I32), f(3, "strVal", T::Str)];
const QUANTITY: &[F] = &[f(1, "string", T::Str)];
const MAP_ENTRY_STR: &[F] = &[k(1, "key", T::Str), k(2, "value", T::Str)];
const MAP_ENTRY_QTY: &[F] = &[k(1, "key", T::Str), f(2, "value", T::Qty)];

/// The table for (apiVersion, kind), if this decoder knows it.
/// `kubectl create token NAME [--duration] [--audience] [--bound-object-kind]`.
const BOUND_OBJECT_REF: &[F] = &[f(1, "kind", T::Str), f(2, "apiVersion", T::Str), f(3, "name", T::Str), f(4, "uid", T::Str)];
const TOKEN_REQUEST_SPEC: &[F] = &[r(1, "audiences", T::Str), f(3, "boundObjectRef", T::Msg(BOUND_OBJECT_REF)), k(4, "expirationSeconds", T::I64)];
const TOKEN_REQUEST: &[F] = &[f(1, "metadata", T::Msg(META)), f(2, "spec", T::Msg(TOKEN_REQUEST_SPEC))];

fn table(api_version: &str, kind: &str) -> Option<&'static [F]> {
    Some(match (api_version, kind) {
        ("rbac.authorization.k8s.io/v1", "Role") => ROLE,
        ("rbac.authorization.k8s.io/v1", "ClusterRole") => CLUSTER_ROLE,
        ("rbac.authorization.k8s.io/v1", "RoleBinding" | "ClusterRoleBinding") => BINDING,
        ("v1", "Service") => SERVICE,
        ("v1", "ResourceQuota") => QUOTA,
        ("batch/v1", "Job") => JOB,
        ("batch/v1", "CronJob") => CRON_JOB,
        ("policy/v1", "PodDisruptionBudget") => PDB,
        ("autoscaling/v1", "HorizontalPodAutoscaler") => HPA_V1,
        ("scheduling.k8s.io/v1", "PriorityClass") => PRIORITY_CLASS,
        ("authentication.k8s.io/v1", "TokenRequest") => TOKEN_REQUEST,
        _ => return None,
    })
}

pub fn knows(api_version: &str, kind: &str) -> bool {
    table(api_version, kind).is_some()
}

/// Decodes `raw` as (apiVersion, kind); None when the kind has no table.
pub fn decode(api_version: &str, kind: &str, raw: &[u8]) -> Option<Result<Value, String>> {
    let fields = table(api_version, kind)?;
    Some(message(raw, fields).map(|mut m| {
        m.insert("apiVersion".into(), json!(api_version));
        m.insert("kind".into(), json!(kind));
        Value::Object(m)
    }))
}

fn varint(b: &[u8], pos: &mut usize) -> Result<u64, String> {
    let mut out = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *b.get(*pos).ok_or("truncated varint")?;
        *pos += 1;
        out |= ((byte & 0x7f) as u64) << shift;
        if byte & 0x80 == 0 {
            return Ok(out);
        }
    }
    Err("varint longer than 10 bytes".into())
}

/// A field's raw value by wire type: a varint, or the bytes of a length-delimited field.
enum Raw<'a> {
    Int(u64),
    Bytes(&'a [u8]),
    Fixed,
}

fn message(b: &[u8], fields: &[F]) -> Result<Map<String, Value>, String> {
    let mut out = Map::new();
    let mut pos = 0;
    while pos < b.len() {
        let key = varint(b, &mut pos)?;
        let (tag, wire) = ((key >> 3) as u32, key & 7);
        let raw = match wire {
            0 => Raw::Int(varint(b, &mut pos)?),
            2 => {
                let len = varint(b, &mut pos)? as usize;
                let end = pos.checked_add(len).filter(|e| *e <= b.len()).ok_or("length-delimited field runs past the end")?;
                let s = &b[pos..end];
                pos = end;
                Raw::Bytes(s)
            }
            1 | 5 => {
                pos += if wire == 1 { 8 } else { 4 };
                if pos > b.len() {
                    return Err("fixed-width field runs past the end".into());
                }
                Raw::Fixed
            }
            w => return Err(format!("unsupported wire type {w}")),
        };
        let Some(field) = fields.iter().find(|f| f.tag == tag) else { continue };
        let Some(v) = value(field, raw)? else { continue };
        match (field.t, field.rep) {
            (T::MapStr | T::MapQty, _) => {
                let entry = out.entry(field.name).or_insert_with(|| json!({}));
                if let (Some(m), Value::Object(kv)) = (entry.as_object_mut(), v) {
                    let key = kv.get("key").and_then(Value::as_str).unwrap_or("").to_string();
                    m.insert(key, kv.get("value").cloned().unwrap_or_else(|| json!("")));
                }
            }
            (_, true) => {
                if let Some(a) = out.entry(field.name).or_insert_with(|| json!([])).as_array_mut() {
                    a.push(v);
                }
            }
            _ => {
                out.insert(field.name.into(), v);
            }
        }
    }
    Ok(out)
}

/// One field's JSON value; None drops it (Go's zero values of non-pointer fields, which
/// it always marshals but JSON omits).
fn value(field: &F, raw: Raw<'_>) -> Result<Option<Value>, String> {
    let omit_zero = !field.rep && !field.keep;
    let v = match (field.t, raw) {
        (T::Str, Raw::Bytes(s)) => {
            let s = std::str::from_utf8(s).map_err(|_| format!("{}: not UTF-8", field.name))?;
            if s.is_empty() && omit_zero {
                return Ok(None);
            }
            json!(s)
        }
        (T::I32 | T::I64 | T::Bool, Raw::Int(n)) => {
            if n == 0 && omit_zero {
                return Ok(None);
            }
            match field.t {
                T::I32 => json!(n as i64 as i32),
                T::Bool => json!(n != 0),
                _ => json!(n as i64),
            }
        }
        (T::Msg(fields), Raw::Bytes(s)) => {
            let m = message(s, fields)?;
            if m.is_empty() && omit_zero {
                return Ok(None);
            }
            Value::Object(m)
        }
        (T::MapStr, Raw::Bytes(s)) => Value::Object(message(s, MAP_ENTRY_STR)?),
        (T::MapQty, Raw::Bytes(s)) => Value::Object(message(s, MAP_ENTRY_QTY)?),
        (T::IntOrStr, Raw::Bytes(s)) => {
            let m = message(s, INT_OR_STRING)?;
            if m.get("type").and_then(Value::as_i64) == Some(1) {
                m.get("strVal").cloned().unwrap_or_else(|| json!(""))
            } else {
                m.get("intVal").cloned().unwrap_or_else(|| json!(0))
            }
        }
        (T::Qty, Raw::Bytes(s)) => message(s, QUANTITY)?.remove("string").unwrap_or_else(|| json!("0")),
        (_, Raw::Fixed) => return Ok(None),
        _ => return Err(format!("{}: unexpected wire type", field.name)),
    };
    Ok(Some(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny encoder for the tests: (tag, payload) pairs.
    fn ld(tag: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![((tag << 3) | 2) as u8, payload.len() as u8];
        out.extend_from_slice(payload);
        out
    }
    fn vi(tag: u32, n: u8) -> Vec<u8> {
        vec![(tag << 3) as u8, n]
    }
    fn cat(parts: &[Vec<u8>]) -> Vec<u8> {
        parts.concat()
    }

    #[test]
    fn rolebinding_as_kubectl_create_sends_it() {
        let meta = cat(&[ld(1, b"alice-view"), ld(2, b""), ld(3, b"x")]);
        let subject = cat(&[ld(1, b"User"), ld(2, b"rbac.authorization.k8s.io"), ld(3, b"alice"), ld(4, b"")]);
        let role_ref = cat(&[ld(1, b"rbac.authorization.k8s.io"), ld(2, b"ClusterRole"), ld(3, b"view")]);
        let raw = cat(&[ld(1, &meta), ld(2, &subject), ld(3, &role_ref)]);
        let v = decode("rbac.authorization.k8s.io/v1", "RoleBinding", &raw).unwrap().unwrap();
        assert_eq!(
            v,
            json!({"apiVersion":"rbac.authorization.k8s.io/v1","kind":"RoleBinding","metadata":{"name":"alice-view","namespace":"x"},
                   "subjects":[{"kind":"User","apiGroup":"rbac.authorization.k8s.io","name":"alice"}],
                   "roleRef":{"apiGroup":"rbac.authorization.k8s.io","kind":"ClusterRole","name":"view"}})
        );
    }

    #[test]
    fn role_rules_keep_the_core_group() {
        let rule = cat(&[ld(1, b"get"), ld(1, b"list"), ld(2, b""), ld(3, b"pods")]);
        let raw = cat(&[ld(1, &ld(1, b"reader")), ld(2, &rule)]);
        let v = decode("rbac.authorization.k8s.io/v1", "Role", &raw).unwrap().unwrap();
        assert_eq!(v["rules"], json!([{"verbs":["get","list"],"apiGroups":[""],"resources":["pods"]}]));
    }

    #[test]
    fn services_maps_int_or_string_and_quantities() {
        let target = cat(&[vi(1, 0), vi(2, 80)]);
        let port = cat(&[ld(1, b"80-8080"), ld(2, b"TCP"), vi(3, 80), ld(4, &target)]);
        let spec = cat(&[ld(1, &port), ld(2, &cat(&[ld(1, b"app"), ld(2, b"web")])), ld(3, b""), ld(4, b"ClusterIP")]);
        let v = decode("v1", "Service", &cat(&[ld(1, &ld(1, b"web")), ld(2, &spec)])).unwrap().unwrap();
        assert_eq!(v["spec"], json!({"ports":[{"name":"80-8080","protocol":"TCP","port":80,"targetPort":80}],"selector":{"app":"web"},"type":"ClusterIP"}));
        let named = cat(&[vi(1, 1), ld(3, b"http")]);
        let v = decode("policy/v1", "PodDisruptionBudget", &ld(2, &ld(1, &named))).unwrap().unwrap();
        assert_eq!(v["spec"]["minAvailable"], "http");
        let hard = cat(&[ld(1, b"pods"), ld(2, &ld(1, b"10"))]);
        let v = decode("v1", "ResourceQuota", &ld(2, &ld(1, &hard))).unwrap().unwrap();
        assert_eq!(v["spec"], json!({"hard":{"pods":"10"}}));
    }

    #[test]
    fn jobs_keep_pointer_zeros_and_reject_garbage() {
        let container = cat(&[ld(1, b"pi"), ld(2, b"busybox"), ld(3, b"echo")]);
        let tpl = ld(2, &cat(&[ld(2, &container), ld(3, b"Never")]));
        let spec = cat(&[vi(7, 0), ld(6, &tpl)]);
        let v = decode("batch/v1", "Job", &ld(2, &spec)).unwrap().unwrap();
        assert_eq!(v["spec"], json!({"backoffLimit":0,"template":{"spec":{"containers":[{"name":"pi","image":"busybox","command":["echo"]}],"restartPolicy":"Never"}}}));
        assert!(decode("v1", "Service", &[0x0a, 0x05, 0x01]).unwrap().is_err());
        assert!(decode("v1", "Service", &[0xff]).unwrap().is_err());
        assert!(decode("v1", "Nope", &[]).is_none());
    }
}
