//! The three patch formats kubectl sends: JSON patch (RFC 6902), JSON merge patch
//! (RFC 7386) and Kubernetes' strategic merge patch, whose list merge keys are the
//! built-in types' `patchMergeKey`s and whose `$`-directives client-side apply emits.

use super::status::ApiError;
use super::Req;
use schema::openapi::lists::LIST_RULES;
use serde_json::{Map, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    Json,
    Merge,
    Strategic,
    /// Server-side apply, approximated: create when absent, else merge-patch semantics
    /// (no field ownership, no conflicts between managers).
    Apply,
}

impl PatchType {
    pub fn from_content_type(ct: &str) -> Option<PatchType> {
        let base = ct.split(';').next().unwrap_or("").trim();
        match base {
            "application/json-patch+json" => Some(PatchType::Json),
            "application/merge-patch+json" => Some(PatchType::Merge),
            "application/strategic-merge-patch+json" => Some(PatchType::Strategic),
            "application/apply-patch+yaml" | "application/apply-patch+cbor" => Some(PatchType::Apply),
            _ => None,
        }
    }
}

/// Parses a patch body by its Content-Type.
pub fn body(req: &Req) -> Result<(PatchType, Value), ApiError> {
    let kind = PatchType::from_content_type(req.content_type()).ok_or_else(|| {
        ApiError::unsupported_media(format!(
            "the body of the request was in an unknown format ({}) - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json",
            req.content_type()
        ))
    })?;
    let body: Value = if kind == PatchType::Apply {
        serde_yaml::from_slice(&req.body).map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?
    } else {
        serde_json::from_slice(&req.body).map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?
    };
    Ok((kind, body))
}

/// Applies `patch` (already parsed) to `doc`. Errors are messages for a 400/422.
pub fn apply(kind: PatchType, doc: &mut Value, patch: &Value) -> Result<(), String> {
    match kind {
        PatchType::Json => {
            let p: json_patch::Patch = serde_json::from_value(patch.clone()).map_err(|e| format!("the JSON patch is not valid: {e}"))?;
            json_patch::patch(doc, &p).map_err(|e| format!("the JSON patch could not be applied: {e}"))
        }
        PatchType::Merge | PatchType::Apply => {
            if !patch.is_object() {
                return Err("the merge patch must be a JSON object".into());
            }
            json_patch::merge(doc, patch);
            Ok(())
        }
        PatchType::Strategic => {
            let Value::Object(p) = patch else { return Err("the strategic merge patch must be a JSON object".into()) };
            if !doc.is_object() {
                *doc = Value::Object(Map::new());
            }
            if let Value::Object(d) = doc {
                merge_map(d, p)?;
            }
            Ok(())
        }
    }
}

/// The merge key of a list field, from the one table of the Kubernetes types'
/// `patchMergeKey`s that OpenAPI publishes too. The patcher sees field names only, so a
/// name with several keys (Container ports by containerPort, Service ports by port) is
/// told apart by the key an element carries.
fn merge_key(field: &str, sample: Option<&Value>) -> Option<&'static str> {
    let mut keys = LIST_RULES.iter().filter(|r| r.property == field).filter_map(|r| r.merge_key);
    let first = keys.next()?;
    let has = |k: &str| sample.and_then(|s| s.get(k)).is_some();
    Some(if has(first) { first } else { keys.find(|k| has(k)).unwrap_or(first) })
}

/// Primitive lists merged as sets rather than replaced (`finalizers`).
fn is_set_list(field: &str) -> bool {
    LIST_RULES.iter().any(|r| r.property == field && r.list_type == "set" && r.patch_strategy.is_some())
}

fn directive(v: &Value) -> Option<&str> {
    v.get("$patch").and_then(Value::as_str)
}

/// Removes `$`-directives from a value that is being inserted whole.
fn strip(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            let mut out = Map::new();
            merge_map(&mut out, m).ok();
            Value::Object(out)
        }
        Value::Array(a) => Value::Array(a.iter().map(strip).collect()),
        other => other.clone(),
    }
}

fn merge_map(orig: &mut Map<String, Value>, patch: &Map<String, Value>) -> Result<(), String> {
    if let Some(d) = patch.get("$patch").and_then(Value::as_str) {
        match d {
            "replace" => {
                orig.clear();
                let rest: Map<String, Value> = patch.iter().filter(|(k, _)| *k != "$patch").map(|(k, v)| (k.clone(), v.clone())).collect();
                return merge_map(orig, &rest);
            }
            "delete" => {
                orig.clear();
                return Ok(());
            }
            "merge" => {}
            other => return Err(format!("unknown patch type: {other:?}")),
        }
    }
    let mut orders: Vec<(&str, &Value)> = Vec::new();
    for (k, v) in patch {
        if k == "$patch" || k == "$retainKeys" {
            continue;
        }
        if let Some(f) = k.strip_prefix("$setElementOrder/") {
            orders.push((f, v));
            continue;
        }
        if let Some(f) = k.strip_prefix("$deleteFromPrimitiveList/") {
            let del = v.as_array().cloned().unwrap_or_default();
            if let Some(Value::Array(list)) = orig.get_mut(f) {
                list.retain(|x| !del.contains(x));
            }
            continue;
        }
        if k.starts_with('$') {
            return Err(format!("unknown directive {k:?} in the strategic merge patch"));
        }
        match v {
            Value::Null => {
                orig.remove(k);
            }
            Value::Object(pm) => {
                if directive(v) == Some("delete") {
                    orig.remove(k);
                    continue;
                }
                match orig.get_mut(k) {
                    Some(Value::Object(om)) => merge_map(om, pm)?,
                    _ => {
                        let mut fresh = Map::new();
                        merge_map(&mut fresh, pm)?;
                        orig.insert(k.clone(), Value::Object(fresh));
                    }
                }
            }
            Value::Array(pl) => {
                let merged = merge_list(k, orig.get(k), pl)?;
                orig.insert(k.clone(), merged);
            }
            other => {
                orig.insert(k.clone(), other.clone());
            }
        }
    }
    for (f, order) in orders {
        if let (Some(Value::Array(list)), Some(order)) = (orig.get_mut(f), order.as_array()) {
            reorder(f, list, order);
        }
    }
    if let Some(keep) = patch.get("$retainKeys").and_then(Value::as_array) {
        let keep: Vec<&str> = keep.iter().filter_map(Value::as_str).collect();
        orig.retain(|k, _| keep.contains(&k.as_str()));
    }
    Ok(())
}

fn key_of<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    v.get(key)
}

fn merge_list(field: &str, orig: Option<&Value>, patch: &[Value]) -> Result<Value, String> {
    let orig_list: Vec<Value> = orig.and_then(Value::as_array).cloned().unwrap_or_default();
    let sample = patch.iter().chain(orig_list.iter()).find(|v| v.is_object() && directive(v).is_none());
    let objects = patch.iter().all(Value::is_object);
    if objects && !patch.is_empty() {
        if let Some(mk) = merge_key(field, sample) {
            // A `{"$patch":"replace"}` element replaces the whole list with the others.
            if patch.iter().any(|p| directive(p) == Some("replace")) {
                return Ok(Value::Array(patch.iter().filter(|p| directive(p).is_none()).map(strip).collect()));
            }
            let mut out = orig_list;
            for p in patch {
                let pk = key_of(p, mk);
                if directive(p) == Some("delete") {
                    out.retain(|o| pk.is_none() || key_of(o, mk) != pk);
                    continue;
                }
                match out.iter_mut().find(|o| pk.is_some() && key_of(o, mk) == pk) {
                    Some(Value::Object(om)) => {
                        if let Value::Object(pm) = p {
                            merge_map(om, pm)?;
                        }
                    }
                    _ => out.push(strip(p)),
                }
            }
            return Ok(Value::Array(out));
        }
    }
    if is_set_list(field) {
        let mut out = orig_list;
        for p in patch {
            if !out.contains(p) {
                out.push(p.clone());
            }
        }
        return Ok(Value::Array(out));
    }
    Ok(Value::Array(patch.iter().map(strip).collect()))
}

/// `$setElementOrder/<field>`: listed elements first, in the given order; the rest after,
/// in their current order.
fn reorder(field: &str, list: &mut Vec<Value>, order: &[Value]) {
    let mk = merge_key(field, list.first());
    let ident = |v: &Value| -> Value {
        match (mk, v) {
            (Some(k), Value::Object(_)) => v.get(k).cloned().unwrap_or(Value::Null),
            _ => v.clone(),
        }
    };
    let mut rest: Vec<Value> = std::mem::take(list);
    let mut out = Vec::with_capacity(rest.len());
    for o in order {
        let id = ident(o);
        if let Some(pos) = rest.iter().position(|x| ident(x) == id) {
            out.push(rest.remove(pos));
        }
    }
    out.extend(rest);
    *list = out;
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deploy() -> Value {
        json!({"metadata":{"name":"web","labels":{"app":"web"},"finalizers":["a"]},
               "spec":{"replicas":1,"strategy":{"type":"RollingUpdate","rollingUpdate":{"maxSurge":"25%"}},
                 "template":{"spec":{"containers":[
                   {"name":"a","image":"a:1","env":[{"name":"X","value":"1"},{"name":"Y","value":"2"}]},
                   {"name":"b","image":"b:1","ports":[{"containerPort":80},{"containerPort":81}]}]}}}})
    }

    #[test]
    fn smp_merges_containers_by_name() {
        let mut d = deploy();
        let p = json!({"spec":{"template":{"spec":{"$setElementOrder/containers":[{"name":"a"},{"name":"b"}],
            "containers":[{"name":"b","image":"b:2"}]}}}});
        apply(PatchType::Strategic, &mut d, &p).unwrap();
        let cs = d.pointer("/spec/template/spec/containers").unwrap().as_array().unwrap();
        assert_eq!(cs.len(), 2);
        assert_eq!(cs[0]["image"], "a:1");
        assert_eq!(cs[1]["image"], "b:2");
        assert_eq!(cs[1]["ports"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn smp_set_element_order_reorders() {
        let mut d = deploy();
        let p = json!({"spec":{"template":{"spec":{"$setElementOrder/containers":[{"name":"b"},{"name":"a"}],
            "containers":[{"name":"a","image":"a:2"}]}}}});
        apply(PatchType::Strategic, &mut d, &p).unwrap();
        let cs = d.pointer("/spec/template/spec/containers").unwrap().as_array().unwrap();
        assert_eq!(cs[0]["name"], "b");
        assert_eq!(cs[1]["name"], "a");
        assert_eq!(cs[1]["image"], "a:2");
    }

    #[test]
    fn smp_delete_directives() {
        let mut d = deploy();
        let p = json!({"metadata":{"labels":{"app":null},"$deleteFromPrimitiveList/finalizers":["a"]},
            "spec":{"template":{"spec":{"containers":[{"name":"a","$patch":"delete"},
                {"name":"b","ports":[{"containerPort":81,"$patch":"delete"}],"env":[{"name":"Z","value":"3"}]}]}}}});
        apply(PatchType::Strategic, &mut d, &p).unwrap();
        let cs = d.pointer("/spec/template/spec/containers").unwrap().as_array().unwrap();
        assert_eq!(cs.len(), 1);
        assert_eq!(cs[0]["name"], "b");
        assert_eq!(cs[0]["ports"], json!([{"containerPort":80}]));
        assert_eq!(cs[0]["env"], json!([{"name":"Z","value":"3"}]));
        assert_eq!(d.pointer("/metadata/labels"), Some(&json!({})));
        assert_eq!(d.pointer("/metadata/finalizers"), Some(&json!([])));
    }

    #[test]
    fn smp_replace_and_retain_keys() {
        let mut d = deploy();
        let p = json!({"spec":{"strategy":{"$retainKeys":["type"],"type":"Recreate"},
            "template":{"spec":{"containers":[{"$patch":"replace"},{"name":"c","image":"c:1"}]}}}});
        apply(PatchType::Strategic, &mut d, &p).unwrap();
        assert_eq!(d.pointer("/spec/strategy"), Some(&json!({"type":"Recreate"})));
        assert_eq!(d.pointer("/spec/template/spec/containers"), Some(&json!([{"name":"c","image":"c:1"}])));
        let p = json!({"spec":{"template":{"$patch":"replace","spec":{"containers":[]}}}});
        apply(PatchType::Strategic, &mut d, &p).unwrap();
        assert_eq!(d.pointer("/spec/template"), Some(&json!({"spec":{"containers":[]}})));
    }

    #[test]
    fn smp_unknown_lists_are_replaced_and_null_clears() {
        let mut d = json!({"spec":{"unschedulable":true,"args":["a","b"]}});
        apply(PatchType::Strategic, &mut d, &json!({"spec":{"unschedulable":null,"args":["c"]}})).unwrap();
        assert_eq!(d, json!({"spec":{"args":["c"]}}));
        assert!(apply(PatchType::Strategic, &mut d, &json!([1])).is_err());
        assert!(apply(PatchType::Strategic, &mut d, &json!({"$bogus": 1})).is_err());
    }

    #[test]
    fn merge_patch_rfc7386() {
        let mut d = deploy();
        apply(PatchType::Merge, &mut d, &json!({"spec":{"replicas":5,"template":null},"metadata":{"labels":{"tier":"fe"}}})).unwrap();
        assert_eq!(d.pointer("/spec/replicas"), Some(&json!(5)));
        assert!(d.pointer("/spec/template").is_none());
        assert_eq!(d.pointer("/metadata/labels"), Some(&json!({"app":"web","tier":"fe"})));
    }

    #[test]
    fn json_patch_ops() {
        let mut d = deploy();
        apply(PatchType::Json, &mut d, &json!([{"op":"replace","path":"/spec/replicas","value":3},{"op":"add","path":"/metadata/labels/x","value":"y"}])).unwrap();
        assert_eq!(d.pointer("/spec/replicas"), Some(&json!(3)));
        assert_eq!(d.pointer("/metadata/labels/x"), Some(&json!("y")));
        assert!(apply(PatchType::Json, &mut d, &json!([{"op":"test","path":"/spec/replicas","value":9}])).is_err());
        assert!(apply(PatchType::Json, &mut d, &json!({"op":"x"})).is_err());
    }

    #[test]
    fn content_types() {
        assert_eq!(PatchType::from_content_type("application/strategic-merge-patch+json; charset=utf-8"), Some(PatchType::Strategic));
        assert_eq!(PatchType::from_content_type("application/json"), None);
    }
}
