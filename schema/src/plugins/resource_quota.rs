//! ResourceQuota: what a new object adds to its namespace's quotas (`pods`, `count/…`,
//! `requests.cpu`, `limits.memory`, `services.nodeports`, …), whether that fits under
//! each quota's `hard`, and the usage of a whole namespace that the quota controller
//! writes into `status.used`. The caller charges a quota with a CAS write on its status,
//! so two concurrent creates cannot both take the last unit.

use super::{aggregate, forbidden};
use crate::admission::AdmissionError;
use crate::quantity::Qty;
use crate::registry::ResourceInfo;
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, BTreeSet};

pub type Usage = BTreeMap<String, Qty>;

/// The resource a quota counts objects of: `count/deployments.apps` → ("apps", "deployments").
pub fn counted_resource(quota_name: &str) -> Option<(String, String)> {
    let legacy = match quota_name {
        "pods" | "cpu" | "memory" | "ephemeral-storage" => Some("pods"),
        n if n.starts_with("requests.") || n.starts_with("limits.") => Some("pods"),
        "services" | "services.nodeports" | "services.loadbalancers" => Some("services"),
        "configmaps" | "secrets" | "replicationcontrollers" | "resourcequotas" | "persistentvolumeclaims" => Some(quota_name),
        _ => None,
    };
    if let Some(p) = legacy {
        return Some((String::new(), p.to_string()));
    }
    let c = quota_name.strip_prefix("count/")?;
    Some(match c.split_once('.') {
        Some((plural, group)) => (group.to_string(), plural.to_string()),
        None => (String::new(), c.to_string()),
    })
}

fn one() -> Qty {
    Qty { milli: 1000, binary: false }
}

/// `count/pods` or `count/deployments.apps`.
fn count_name(res: &ResourceInfo) -> String {
    if res.group.is_empty() {
        format!("count/{}", res.plural)
    } else {
        format!("count/{}.{}", res.plural, res.group)
    }
}

fn container_sum(pod: &Value, field: &str) -> BTreeMap<String, Qty> {
    // Init containers run one at a time before the others: the pod needs the larger of
    // the regular containers' sum and any single init container.
    let mut sum: BTreeMap<String, Qty> = BTreeMap::new();
    for c in pod.pointer("/spec/containers").and_then(Value::as_array).into_iter().flatten() {
        for (k, q) in c.pointer(&format!("/resources/{field}")).and_then(Value::as_object).into_iter().flatten() {
            if let Some(q) = q.as_str().and_then(Qty::parse) {
                let e = sum.entry(k.clone()).or_insert(q.zero_like());
                *e = e.plus(q);
            }
        }
    }
    for c in pod.pointer("/spec/initContainers").and_then(Value::as_array).into_iter().flatten() {
        for (k, q) in c.pointer(&format!("/resources/{field}")).and_then(Value::as_object).into_iter().flatten() {
            if let Some(q) = q.as_str().and_then(Qty::parse) {
                let e = sum.entry(k.clone()).or_insert(q.zero_like());
                if q.milli > e.milli {
                    *e = q;
                }
            }
        }
    }
    sum
}

/// Everything one object adds to quota counters.
pub fn usage(res: &ResourceInfo, obj: &Value) -> Usage {
    let mut u = Usage::new();
    if res.kind == "Pod" {
        let phase = obj.pointer("/status/phase").and_then(Value::as_str).unwrap_or("");
        if matches!(phase, "Succeeded" | "Failed") {
            return u; // a finished pod holds nothing
        }
        u.insert("pods".into(), one());
        for (k, q) in container_sum(obj, "requests") {
            u.insert(format!("requests.{k}"), q);
            if k == "cpu" || k == "memory" || k == "ephemeral-storage" {
                u.insert(k, q);
            }
        }
        for (k, q) in container_sum(obj, "limits") {
            u.insert(format!("limits.{k}"), q);
        }
    }
    if res.group.is_empty() && matches!(res.plural, "services" | "configmaps" | "secrets" | "replicationcontrollers" | "resourcequotas" | "persistentvolumeclaims") {
        u.insert(res.plural.to_string(), one());
    }
    if res.kind == "Service" && res.group.is_empty() {
        let ty = obj.pointer("/spec/type").and_then(Value::as_str).unwrap_or("ClusterIP");
        let ports = obj.pointer("/spec/ports").and_then(Value::as_array).map(|p| p.len()).unwrap_or(0) as i128;
        let node_ports = if ty == "NodePort" || ty == "LoadBalancer" { ports } else { 0 };
        u.insert("services.nodeports".into(), Qty { milli: node_ports * 1000, binary: false });
        u.insert("services.loadbalancers".into(), Qty { milli: if ty == "LoadBalancer" { 1000 } else { 0 }, binary: false });
    }
    u.insert(count_name(res), one());
    u
}

fn hard(quota: &Value) -> BTreeMap<String, (String, Qty)> {
    quota
        .pointer("/spec/hard")
        .and_then(Value::as_object)
        .map(|m| m.iter().filter_map(|(k, v)| v.as_str().and_then(|s| Qty::parse(s).map(|q| (k.clone(), (s.to_string(), q))))).collect())
        .unwrap_or_default()
}

fn used(quota: &Value) -> Usage {
    quota.pointer("/status/used").and_then(Value::as_object).map(|m| m.iter().filter_map(|(k, v)| v.as_str().and_then(Qty::parse).map(|q| (k.clone(), q))).collect()).unwrap_or_default()
}

fn pretty(m: &BTreeMap<String, String>) -> String {
    m.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
}

/// Resources whose use a quota on cpu or memory forces every container to declare.
const MUST_DECLARE: &[&str] = &["cpu", "memory", "requests.cpu", "requests.memory", "limits.cpu", "limits.memory"];

fn missing_declarations(res: &ResourceInfo, obj: &Value, hard: &BTreeMap<String, (String, Qty)>) -> Vec<String> {
    if res.kind != "Pod" {
        return Vec::new();
    }
    let mut missing: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for r in MUST_DECLARE.iter().filter(|r| hard.contains_key(**r)) {
        let (field, key) = match r.split_once('.') {
            Some(("limits", k)) => ("limits", k),
            Some((_, k)) => ("requests", k),
            None => ("requests", *r),
        };
        for c in super::containers(obj) {
            if c.pointer(&format!("/resources/{field}/{key}")).is_none() {
                missing.entry(r).or_default().insert(c.get("name").and_then(Value::as_str).unwrap_or("").to_string());
            }
        }
    }
    missing.into_iter().map(|(r, names)| format!("must specify {r} for: {}", names.into_iter().collect::<Vec<_>>().join(","))).collect()
}

fn best_effort(pod: &Value) -> bool {
    super::containers(pod).all(|c| {
        let empty = |f: &str| c.pointer(&format!("/resources/{f}")).and_then(Value::as_object).is_none_or(|m| m.is_empty());
        empty("requests") && empty("limits")
    })
}

/// Whether a pod falls in one quota scope (`expr`: the scopeSelector expression naming it).
fn in_scope(scope: &str, pod: &Value, expr: Option<&Value>) -> bool {
    let op = expr.and_then(|e| e.get("operator")).and_then(Value::as_str).unwrap_or("Exists");
    let values: Vec<&str> = expr.and_then(|e| e.get("values")).and_then(Value::as_array).map(|a| a.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
    let holds = match scope {
        "Terminating" => pod.pointer("/spec/activeDeadlineSeconds").and_then(Value::as_i64).is_some_and(|s| s >= 0),
        "NotTerminating" => !in_scope("Terminating", pod, None),
        "BestEffort" => best_effort(pod),
        "NotBestEffort" => !in_scope("BestEffort", pod, None),
        "PriorityClass" => {
            let pc = pod.pointer("/spec/priorityClassName").and_then(Value::as_str).unwrap_or("");
            return match op {
                "In" => values.contains(&pc),
                "NotIn" => !values.contains(&pc),
                "DoesNotExist" => pc.is_empty(),
                _ => !pc.is_empty(),
            };
        }
        _ => false,
    };
    match op {
        "DoesNotExist" | "NotIn" => !holds,
        _ => holds,
    }
}

/// Whether `quota` covers `obj`: an unscoped quota covers everything, a scoped one
/// (`scopes`, `scopeSelector`) only the pods in all of its scopes.
pub fn covers(quota: &Value, res: &ResourceInfo, obj: &Value) -> bool {
    let scopes: Vec<&str> = quota.pointer("/spec/scopes").and_then(Value::as_array).map(|a| a.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
    let exprs: Vec<&Value> = quota.pointer("/spec/scopeSelector/matchExpressions").and_then(Value::as_array).map(|a| a.iter().collect()).unwrap_or_default();
    if scopes.is_empty() && exprs.is_empty() {
        return true;
    }
    res.kind == "Pod"
        && scopes.iter().all(|s| in_scope(s, obj, None))
        && exprs.iter().all(|e| in_scope(e.get("scopeName").and_then(Value::as_str).unwrap_or(""), obj, Some(e)))
}

/// What creating `obj` does to `quota`: `Ok(None)` when the quota tracks none of it,
/// `Ok(Some(status))` with the quota's new status when it fits, 403 when it does not.
pub fn charge(res: &ResourceInfo, obj: &Value, quota: &Value) -> Result<Option<Value>, AdmissionError> {
    if !covers(quota, res, obj) {
        return Ok(None);
    }
    let hard = hard(quota);
    let qname = crate::object::name(quota).unwrap_or("");
    let plural = res.plural;
    let missing = missing_declarations(res, obj, &hard);
    if !missing.is_empty() {
        return Err(forbidden(plural, obj, format!("failed quota: {qname}: {}", aggregate(&missing))));
    }
    let delta: Usage = usage(res, obj).into_iter().filter(|(k, _)| hard.contains_key(k)).collect();
    if delta.is_empty() {
        return Ok(None);
    }
    let mut now = used(quota);
    let mut exceeded = Vec::new();
    for (k, d) in &delta {
        let cur = now.get(k).copied().unwrap_or(d.zero_like());
        let next = cur.plus(*d);
        if next.milli > hard[k].1.milli {
            exceeded.push(k.clone());
        }
        now.insert(k.clone(), next);
    }
    if !exceeded.is_empty() {
        let pick = |f: &dyn Fn(&str) -> String| exceeded.iter().map(|k| (k.clone(), f(k))).collect::<BTreeMap<_, _>>();
        let before = used(quota);
        let msg = format!(
            "exceeded quota: {qname}, requested: {}, used: {}, limited: {}",
            pretty(&pick(&|k| delta[k].to_string())),
            pretty(&pick(&|k| before.get(k).copied().unwrap_or_default().to_string())),
            pretty(&pick(&|k| hard[k].0.clone())),
        );
        return Err(forbidden(plural, obj, msg));
    }
    Ok(Some(status(quota, &now)))
}

/// The status a quota shows for `used`: `hard` mirrors the spec, every hard resource
/// has a used value (0 when nothing counts towards it).
pub fn status(quota: &Value, used: &Usage) -> Value {
    let hard = hard(quota);
    let mut h = Map::new();
    let mut u = Map::new();
    for (k, (s, q)) in &hard {
        h.insert(k.clone(), json!(s));
        u.insert(k.clone(), json!(used.get(k).copied().unwrap_or(q.zero_like()).to_string()));
    }
    json!({"hard": h, "used": u})
}

/// The usage of a namespace's objects, for the resources `quota` tracks.
pub fn total(quota: &Value, objects: &[(&ResourceInfo, Value)]) -> Usage {
    let hard = hard(quota);
    let mut u = Usage::new();
    for (res, obj) in objects.iter().filter(|(r, o)| covers(quota, r, o)) {
        for (k, q) in usage(res, obj) {
            if hard.contains_key(&k) {
                let e = u.entry(k).or_insert(q.zero_like());
                *e = e.plus(q);
            }
        }
    }
    u
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::by_plural;

    fn pod(name: &str, cpu: &str) -> Value {
        json!({"metadata":{"name":name},"spec":{"containers":[{"name":"c","resources":{"requests":{"cpu":cpu,"memory":"64Mi"},"limits":{"cpu":cpu,"memory":"64Mi"}}}]}})
    }

    #[test]
    fn charges_until_full_then_refuses_with_the_real_message() {
        let pods = by_plural("", "v1", "pods").unwrap();
        let mut q = json!({"metadata":{"name":"q1"},"spec":{"hard":{"pods":"1","requests.cpu":"1"}}});
        let st = charge(pods, &pod("a", "500m"), &q).unwrap().unwrap();
        assert_eq!(st, json!({"hard":{"pods":"1","requests.cpu":"1"},"used":{"pods":"1","requests.cpu":"500m"}}));
        q["status"] = st;
        let e = charge(pods, &pod("b", "250m"), &q).unwrap_err().to_string();
        assert_eq!(e, "pods \"b\" is forbidden: exceeded quota: q1, requested: pods=1, used: pods=1, limited: pods=1");
    }

    #[test]
    fn cpu_quotas_need_declared_requests() {
        let pods = by_plural("", "v1", "pods").unwrap();
        let q = json!({"metadata":{"name":"compute"},"spec":{"hard":{"limits.cpu":"2","requests.memory":"1Gi"}}});
        let bare = json!({"metadata":{"name":"p"},"spec":{"containers":[{"name":"c"}]}});
        assert_eq!(charge(pods, &bare, &q).unwrap_err().to_string(), "pods \"p\" is forbidden: failed quota: compute: [must specify limits.cpu for: c, must specify requests.memory for: c]");
    }

    #[test]
    fn counts_and_totals() {
        let cms = by_plural("", "v1", "configmaps").unwrap();
        let deps = by_plural("apps", "v1", "deployments").unwrap();
        let svcs = by_plural("", "v1", "services").unwrap();
        let q = json!({"metadata":{"name":"objs"},"spec":{"hard":{"configmaps":"2","count/deployments.apps":"1","services.nodeports":"1"}}});
        assert_eq!(charge(svcs, &json!({"metadata":{"name":"s"},"spec":{"type":"ClusterIP","ports":[{"port":80}]}}), &q).unwrap().unwrap()["used"]["services.nodeports"], "0");
        let objs = vec![(cms, json!({})), (cms, json!({})), (deps, json!({}))];
        let t = total(&q, &objs);
        assert_eq!(status(&q, &t)["used"], json!({"configmaps":"2","count/deployments.apps":"1","services.nodeports":"0"}));
        let mut full = q.clone();
        full["status"] = status(&q, &t);
        assert!(charge(cms, &json!({"metadata":{"name":"c3"}}), &full).is_err());
        assert_eq!(charge(by_plural("", "v1", "secrets").unwrap(), &json!({"metadata":{"name":"s"}}), &full).unwrap(), None);
        assert_eq!(counted_resource("count/deployments.apps"), Some(("apps".into(), "deployments".into())));
        assert_eq!(counted_resource("requests.cpu"), Some(("".into(), "pods".into())));
    }

    #[test]
    fn scoped_quotas_cover_only_their_pods() {
        let pods = by_plural("", "v1", "pods").unwrap();
        let be = json!({"spec":{"hard":{"pods":"1"},"scopes":["BestEffort"]}});
        let bare = json!({"metadata":{"name":"b"},"spec":{"containers":[{"name":"c"}]}});
        assert!(covers(&be, pods, &bare) && !covers(&be, pods, &pod("r", "1")));
        assert!(!covers(&be, by_plural("", "v1", "configmaps").unwrap(), &json!({})));
        let high = json!({"spec":{"hard":{"pods":"1"},"scopeSelector":{"matchExpressions":[{"scopeName":"PriorityClass","operator":"In","values":["high"]}]}}});
        assert!(covers(&high, pods, &json!({"spec":{"priorityClassName":"high"}})));
        assert!(!covers(&high, pods, &json!({"spec":{}})));
        assert_eq!(total(&be, &[(pods, bare.clone()), (pods, pod("r", "1"))])["pods"].to_string(), "1");
    }
}
