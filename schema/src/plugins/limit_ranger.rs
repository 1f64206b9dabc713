//! LimitRanger: containers without requests or limits get the LimitRange `default` /
//! `defaultRequest` of their namespace (type Container), then every container (and the
//! pod as a whole, for type Pod) must lie within the ranges' `min`, `max` and
//! `maxLimitRequestRatio`. Messages are the real plugin's.

use super::{aggregate, for_each_container, forbidden};
use crate::admission::AdmissionError;
use crate::quantity::Qty;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

pub const ANNOTATION: &str = "kubernetes.io/limit-ranger";

fn items<'a>(ranges: &'a [Value], kind: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
    ranges.iter().flat_map(|r| r.pointer("/spec/limits").and_then(Value::as_array).into_iter().flatten()).filter(move |i| i.get("type").and_then(Value::as_str) == Some(kind))
}

fn list(v: Option<&Value>) -> BTreeMap<String, (String, Qty)> {
    v.and_then(Value::as_object)
        .map(|m| m.iter().filter_map(|(k, q)| q.as_str().and_then(|s| Qty::parse(s).map(|p| (k.clone(), (s.to_string(), p))))).collect())
        .unwrap_or_default()
}

/// Fills missing requests and limits from the first Container range's defaults, and
/// records what it set in the `kubernetes.io/limit-ranger` annotation.
pub fn default_resources(pod: &mut Value, ranges: &[Value]) {
    let (mut def_lim, mut def_req) = (Map::new(), Map::new());
    for it in items(ranges, "Container") {
        for (k, v) in it.get("default").and_then(Value::as_object).into_iter().flatten() {
            def_lim.entry(k.clone()).or_insert(v.clone());
        }
        for (k, v) in it.get("defaultRequest").and_then(Value::as_object).into_iter().flatten() {
            def_req.entry(k.clone()).or_insert(v.clone());
        }
    }
    if def_lim.is_empty() && def_req.is_empty() {
        return;
    }
    let mut notes = Vec::new();
    for_each_container(pod, |word, c| {
        let name = c.get("name").and_then(Value::as_str).unwrap_or("").to_string();
        let Some(co) = c.as_object_mut() else { return };
        let res = co.entry("resources").or_insert_with(|| json!({}));
        let Some(res) = res.as_object_mut() else { return };
        for (field, defaults, what) in [("requests", &def_req, "request"), ("limits", &def_lim, "limit")] {
            let mut set: Vec<&str> = Vec::new();
            let target = res.entry(field).or_insert_with(|| json!({}));
            let Some(t) = target.as_object_mut() else { continue };
            for (k, v) in defaults {
                if !t.contains_key(k) {
                    t.insert(k.clone(), v.clone());
                    set.push(k);
                }
            }
            if t.is_empty() {
                res.remove(field);
            }
            if !set.is_empty() {
                set.sort();
                notes.push(format!("{} {what} for {word} {name}", set.join(", ")));
            }
        }
    });
    if notes.is_empty() {
        return;
    }
    let note = format!("LimitRanger plugin set: {}", notes.join("; "));
    if let Some(meta) = pod.get_mut("metadata").and_then(Value::as_object_mut) {
        let ann = meta.entry("annotations").or_insert_with(|| json!({}));
        if let Some(a) = ann.as_object_mut() {
            a.insert(ANNOTATION.into(), json!(note));
        }
    }
}

/// min/max/ratio of one range item against requests and limits, for `kind` ("Container", "Pod").
fn enforce(kind: &str, item: &Value, req: &BTreeMap<String, (String, Qty)>, lim: &BTreeMap<String, (String, Qty)>, errs: &mut Vec<String>) {
    for (r, (min_s, min)) in list(item.get("min")) {
        match req.get(&r) {
            None => errs.push(format!("minimum {r} usage per {kind} is {min_s}.  No request is specified")),
            Some((s, q)) if q.milli < min.milli => errs.push(format!("minimum {r} usage per {kind} is {min_s}, but request is {s}")),
            _ => match lim.get(&r) {
                Some((s, q)) if q.milli < min.milli => errs.push(format!("minimum {r} usage per {kind} is {min_s}, but limit is {s}")),
                _ => {}
            },
        }
    }
    for (r, (max_s, max)) in list(item.get("max")) {
        match lim.get(&r) {
            None => errs.push(format!("maximum {r} usage per {kind} is {max_s}.  No limit is specified")),
            Some((s, q)) if q.milli > max.milli => errs.push(format!("maximum {r} usage per {kind} is {max_s}, but limit is {s}")),
            _ => {}
        }
    }
    for (r, (ratio_s, ratio)) in list(item.get("maxLimitRequestRatio")) {
        let (Some((_, l)), Some((_, q))) = (lim.get(&r), req.get(&r)) else {
            errs.push(format!("{r} max limit to request ratio per {kind} is {ratio_s}, but no request is specified or request is 0"));
            continue;
        };
        if q.milli == 0 {
            errs.push(format!("{r} max limit to request ratio per {kind} is {ratio_s}, but no request is specified or request is 0"));
        } else if l.milli.saturating_mul(1000) > ratio.milli.saturating_mul(q.milli) {
            errs.push(format!("{r} max limit to request ratio per {kind} is {ratio_s}, but provided ratio is {:.6}", l.milli as f64 / q.milli as f64));
        }
    }
}

fn sum(a: &mut BTreeMap<String, (String, Qty)>, b: &BTreeMap<String, (String, Qty)>) {
    for (k, (_, q)) in b {
        let e = a.entry(k.clone()).or_insert((String::new(), q.zero_like()));
        e.1 = e.1.plus(*q);
        e.0 = e.1.to_string();
    }
}

/// Checks the (defaulted) pod against every range.
pub fn validate(pod: &Value, ranges: &[Value]) -> Result<(), AdmissionError> {
    let mut errs = Vec::new();
    let (mut pod_req, mut pod_lim) = (BTreeMap::new(), BTreeMap::new());
    for c in super::containers(pod) {
        let (req, lim) = (list(c.pointer("/resources/requests")), list(c.pointer("/resources/limits")));
        for it in items(ranges, "Container") {
            enforce("Container", it, &req, &lim, &mut errs);
        }
        sum(&mut pod_req, &req);
        sum(&mut pod_lim, &lim);
    }
    for it in items(ranges, "Pod") {
        enforce("Pod", it, &pod_req, &pod_lim, &mut errs);
    }
    if errs.is_empty() {
        Ok(())
    } else {
        Err(forbidden("pods", pod, aggregate(&errs)))
    }
}

/// Defaults, then checks: the whole plugin for one new pod.
pub fn admit_pod(pod: &mut Value, ranges: &[Value]) -> Result<(), AdmissionError> {
    default_resources(pod, ranges);
    validate(pod, ranges)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range() -> Vec<Value> {
        vec![json!({"spec":{"limits":[{"type":"Container","default":{"cpu":"500m","memory":"128Mi"},"defaultRequest":{"cpu":"100m","memory":"64Mi"},"max":{"cpu":"1"},"min":{"memory":"32Mi"}}]}})]
    }

    #[test]
    fn defaults_requests_and_limits_and_notes_them() {
        let mut p = json!({"metadata":{"name":"p"},"spec":{"containers":[{"name":"c","image":"i","resources":{"requests":{"cpu":"200m"}}}]}});
        admit_pod(&mut p, &range()).unwrap();
        let r = &p["spec"]["containers"][0]["resources"];
        assert_eq!(r["requests"], json!({"cpu":"200m","memory":"64Mi"}));
        assert_eq!(r["limits"], json!({"cpu":"500m","memory":"128Mi"}));
        assert_eq!(p["metadata"]["annotations"][ANNOTATION], "LimitRanger plugin set: memory request for container c; cpu, memory limit for container c");
    }

    #[test]
    fn enforces_min_max_with_real_messages() {
        let mut p = json!({"metadata":{"name":"big"},"spec":{"containers":[{"name":"c","image":"i","resources":{"limits":{"cpu":"2","memory":"16Mi"},"requests":{"cpu":"2","memory":"16Mi"}}}]}});
        let e = admit_pod(&mut p, &range()).unwrap_err().to_string();
        assert_eq!(e, "pods \"big\" is forbidden: [minimum memory usage per Container is 32Mi, but request is 16Mi, maximum cpu usage per Container is 1, but limit is 2]");
        let pod_max = vec![json!({"spec":{"limits":[{"type":"Pod","max":{"cpu":"1"}}]}})];
        let two = json!({"metadata":{"name":"two"},"spec":{"containers":[{"name":"a","resources":{"limits":{"cpu":"600m"}}},{"name":"b","resources":{"limits":{"cpu":"600m"}}}]}});
        assert_eq!(validate(&two, &pod_max).unwrap_err().to_string(), "pods \"two\" is forbidden: maximum cpu usage per Pod is 1, but limit is 1200m");
        let ratio = vec![json!({"spec":{"limits":[{"type":"Container","maxLimitRequestRatio":{"cpu":"2"}}]}})];
        let r = json!({"metadata":{"name":"r"},"spec":{"containers":[{"name":"a","resources":{"limits":{"cpu":"1"},"requests":{"cpu":"250m"}}}]}});
        assert_eq!(validate(&r, &ratio).unwrap_err().to_string(), "pods \"r\" is forbidden: cpu max limit to request ratio per Container is 2, but provided ratio is 4.000000");
    }
}
