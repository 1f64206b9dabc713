//! OpenAPI v2 and v3 documents generated from the API types: every registry entry's type
//! gives its schema (k8s-openapi's `schemars` impls, with the Go doc comments as
//! descriptions), named and cross-referenced the way kube-apiserver names them, so
//! `kubectl explain`, openapi-based strategic merge and field validation see real shapes.

pub mod fields;
pub mod v2proto;

use crate::fieldtypes::{self, ListType, Smp};
use crate::registry::{self, ResourceInfo, RESOURCES};
use schemars::generate::SchemaSettings;
use serde_json::{json, Map, Value};
use std::collections::BTreeSet;
use std::sync::OnceLock;

/// Where v2 keeps definitions; the generator writes refs in this form.
const V2_PREFIX: &str = "#/definitions/";
const V3_PREFIX: &str = "#/components/schemas/";

/// Every definition the registry's types reach, by name, with v2-style refs, the
/// GVK extension on top-level kinds and the list extensions `fieldtypes` knows. Built once.
pub fn definitions() -> &'static Map<String, Value> {
    static DEFS: OnceLock<Map<String, Value>> = OnceLock::new();
    DEFS.get_or_init(generate)
}

fn generate() -> Map<String, Value> {
    let settings = SchemaSettings::draft07().with(|s| {
        s.transforms.clear();
        s.meta_schema = None;
        s.definitions_path = "/definitions".into();
    });
    let mut gen = settings.into_generator();
    for r in RESOURCES {
        (r.schema.add)(&mut gen);
    }
    let mut defs = gen.take_definitions(false);
    for d in defs.values_mut() {
        // k8s-openapi makes `metadata` a required (non-Option) field of every kind; the API
        // itself never requires it, and kubectl explain would print it `-required-`.
        if let Some(req) = d.get_mut("required").and_then(Value::as_array_mut) {
            req.retain(|f| f != "metadata");
            if req.is_empty() {
                d.as_object_mut().map(|o| o.remove("required"));
            }
        }
    }
    for r in RESOURCES {
        let gvk = json!({"group": r.group, "version": r.version, "kind": r.kind});
        if let Some(Value::Object(d)) = defs.get_mut(&*(r.schema.name)()) {
            let list = d.entry("x-kubernetes-group-version-kind").or_insert_with(|| json!([]));
            if let Some(a) = list.as_array_mut().filter(|a| !a.contains(&gvk)) {
                a.push(gvk);
            }
        }
    }
    annotate_lists(&mut defs);
    defs
}

/// The `x-kubernetes-list-*` and `x-kubernetes-patch-*` extensions of every list
/// property, from the one table of list semantics (`crate::fieldtypes`, which server-side
/// apply and strategic merge patch use too). That table is keyed by field paths within a
/// kind; definitions are shared between paths, so each kind's tree is walked from its
/// root and a list gets the semantics of the first path that reaches it.
fn annotate_lists(defs: &mut Map<String, Value>) {
    let mut decided: BTreeSet<(String, String)> = BTreeSet::new();
    let mut marks = Vec::new();
    for r in RESOURCES {
        let root = (r.schema.name)().into_owned();
        walk_lists(defs, r.kind, &root, &mut Vec::new(), &mut decided, &mut marks);
    }
    for (def, prop, list_type, smp) in marks {
        let Some(p) = defs.get_mut(&def).and_then(|d| d.pointer_mut(&format!("/properties/{prop}"))).and_then(Value::as_object_mut) else { continue };
        let (ty, keys): (&str, Vec<&str>) = match list_type {
            ListType::Atomic => ("atomic", vec![]),
            ListType::Set => ("set", vec![]),
            ListType::Map(keys) => ("map", keys.iter().map(|k| k.name).collect()),
        };
        p.insert("x-kubernetes-list-type".into(), json!(ty));
        if !keys.is_empty() {
            p.insert("x-kubernetes-list-map-keys".into(), json!(keys));
        }
        match smp {
            Smp::MergeKey(k) => {
                p.insert("x-kubernetes-patch-strategy".into(), json!("merge"));
                p.insert("x-kubernetes-patch-merge-key".into(), json!(k));
            }
            Smp::MergeSet => {
                p.insert("x-kubernetes-patch-strategy".into(), json!("merge"));
            }
            Smp::Replace => {}
        }
    }
}

/// The definition a property refers to, directly or as its array's items.
fn referenced(p: &Value) -> Option<&str> {
    let r = p.get("$ref").or_else(|| p.pointer("/items/$ref")).or_else(|| p.pointer("/allOf/0/$ref"))?;
    ref_name(r.as_str()?)
}

fn walk_lists(defs: &Map<String, Value>, kind: &str, def: &str, path: &mut Vec<String>, decided: &mut BTreeSet<(String, String)>, marks: &mut Vec<(String, String, ListType, Smp)>) {
    // Recursive types (none among ours today) end here rather than loop.
    if path.len() > 16 {
        return;
    }
    let Some(props) = defs.get(def).and_then(|d| d.get("properties")).and_then(Value::as_object) else { return };
    for (name, p) in props {
        path.push(name.clone());
        if p.get("type").and_then(Value::as_str) == Some("array") && decided.insert((def.to_string(), name.clone())) {
            let names: Vec<&str> = path.iter().map(String::as_str).collect();
            let (list_type, smp) = fieldtypes::list(kind, &names);
            marks.push((def.to_string(), name.clone(), list_type, smp));
        }
        if let Some(next) = referenced(p) {
            walk_lists(defs, kind, next, path, decided, marks);
        }
        path.pop();
    }
}

/// The definition a `$ref` names, if it is one of ours.
pub fn ref_name(r: &str) -> Option<&str> {
    r.strip_prefix(V2_PREFIX).or_else(|| r.strip_prefix(V3_PREFIX))
}

/// The definition name of a resource's objects (`io.k8s.api.core.v1.Pod`).
pub fn schema_name(res: &ResourceInfo) -> String {
    (res.schema.name)().into_owned()
}

/// `api/v1` or `apis/<g>/<v>`: the path a group-version's v3 document lives under.
pub fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

fn collect_refs(v: &Value, out: &mut BTreeSet<String>) {
    match v {
        Value::Object(m) => {
            if let Some(name) = m.get("$ref").and_then(Value::as_str).and_then(ref_name) {
                out.insert(name.to_string());
            }
            m.values().for_each(|x| collect_refs(x, out));
        }
        Value::Array(a) => a.iter().for_each(|x| collect_refs(x, out)),
        _ => {}
    }
}

/// The named definitions and everything they refer to, transitively.
fn closure(roots: impl IntoIterator<Item = String>) -> BTreeSet<String> {
    let defs = definitions();
    let mut seen = BTreeSet::new();
    let mut todo: Vec<String> = roots.into_iter().collect();
    while let Some(n) = todo.pop() {
        if !seen.insert(n.clone()) {
            continue;
        }
        let mut refs = BTreeSet::new();
        if let Some(d) = defs.get(&n) {
            collect_refs(d, &mut refs);
        }
        todo.extend(refs.into_iter().filter(|r| !seen.contains(r)));
    }
    seen
}

/// v3 form of a schema: refs point into components, and a `$ref` with siblings (a
/// description) becomes `allOf: [{$ref}]` beside them, as OpenAPI 3.0 ignores `$ref`'s
/// siblings and kube-apiserver publishes it that way.
fn to_v3(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            let mut out = Map::new();
            for (k, x) in m {
                out.insert(k.clone(), to_v3(x));
            }
            if let Some(Value::String(r)) = out.get("$ref").cloned() {
                let target = ref_name(&r).map(|n| format!("{V3_PREFIX}{n}")).unwrap_or(r);
                if out.len() == 1 {
                    out.insert("$ref".into(), json!(target));
                } else {
                    out.remove("$ref");
                    out.insert("allOf".into(), json!([{"$ref": target}]));
                }
            }
            Value::Object(out)
        }
        Value::Array(a) => Value::Array(a.iter().map(to_v3).collect()),
        other => other.clone(),
    }
}

fn param(v3: bool, name: &str, ty: &str) -> Value {
    if v3 {
        json!({"name": name, "in": "query", "schema": {"type": ty, "uniqueItems": true}})
    } else {
        json!({"name": name, "in": "query", "type": ty, "uniqueItems": true})
    }
}

/// The write operations kubectl's query-parameter verifier looks for: each carries the
/// GVK and the `fieldValidation` parameter, with the object schema as body and answer.
fn operations(res: &ResourceInfo, v3: bool) -> Vec<(String, Value)> {
    let gvk = json!({"group": res.group, "version": res.version, "kind": res.kind});
    let target = format!("{}{}", if v3 { V3_PREFIX } else { V2_PREFIX }, schema_name(res));
    let op = |action: &str, code: &str, force: bool| {
        let mut params = vec![param(v3, "dryRun", "string"), param(v3, "fieldManager", "string"), param(v3, "fieldValidation", "string")];
        if force {
            params.push(param(v3, "force", "boolean"));
        }
        let body_ct = if action == "patch" { "application/strategic-merge-patch+json" } else { "application/json" };
        let mut o = json!({"parameters": params, "x-kubernetes-action": action, "x-kubernetes-group-version-kind": gvk,
                           "operationId": format!("{action}{}", res.kind)});
        if v3 {
            o["requestBody"] = json!({"content": {body_ct: {"schema": {"$ref": target}}}, "required": true});
            o["responses"] = json!({code: {"description": if code == "201" { "Created" } else { "OK" }, "content": {"application/json": {"schema": {"$ref": target}}}}});
        } else {
            o["responses"] = json!({code: {"description": if code == "201" { "Created" } else { "OK" }, "schema": {"$ref": target}}});
        }
        o
    };
    let base = format!("/{}", gv_path(res.group, res.version));
    let coll = if res.namespaced { format!("{base}/namespaces/{{namespace}}/{}", res.plural) } else { format!("{base}/{}", res.plural) };
    let mut out = vec![(coll.clone(), json!({"post": op("post", "201", false)}))];
    if res.verbs.contains(&"get") {
        let mut item = json!({"put": op("put", "200", false), "patch": op("patch", "200", true)});
        item["get"] = json!({"x-kubernetes-action": "get", "x-kubernetes-group-version-kind": gvk, "operationId": format!("read{}", res.kind),
                             "responses": op("get", "200", false)["responses"].clone()});
        out.push((format!("{coll}/{{name}}"), item));
    }
    out
}

fn info() -> Value {
    json!({"title": "Kubernetes", "version": "v1.32.4"})
}

/// The v3 document of one group-version (`api/v1`, `apis/apps/v1`), or None if not served.
pub fn v3_document(path: &str) -> Option<Value> {
    let path = path.trim_matches('/');
    let served: Vec<&ResourceInfo> = RESOURCES.iter().filter(|r| gv_path(r.group, r.version) == path).collect();
    if served.is_empty() {
        return None;
    }
    let mut paths = Map::new();
    for r in &served {
        paths.extend(operations(r, true));
    }
    let defs = definitions();
    let mut schemas = Map::new();
    for n in closure(served.iter().map(|r| schema_name(r))) {
        if let Some(d) = defs.get(&n) {
            schemas.insert(n, to_v3(d));
        }
    }
    Some(json!({"openapi": "3.0.0", "info": info(), "paths": paths, "components": {"schemas": schemas}}))
}

/// The whole v2 (Swagger 2.0) document: every definition and every resource's operations.
pub fn v2_document() -> Value {
    let mut paths = Map::new();
    for r in RESOURCES {
        paths.extend(operations(r, false));
    }
    let mut defs = definitions().clone();
    // k8s-openapi leaves these typeless (v3 says int-or-string by extension); the v2
    // document of kube-apiserver types them as strings, which v2 clients print.
    for (name, format) in [("io.k8s.apimachinery.pkg.util.intstr.IntOrString", Some("int-or-string")), ("io.k8s.apimachinery.pkg.api.resource.Quantity", None)] {
        if let Some(Value::Object(d)) = defs.get_mut(name) {
            d.entry("type").or_insert_with(|| json!("string"));
            if let Some(f) = format {
                d.entry("format").or_insert_with(|| json!(f));
            }
        }
    }
    json!({"swagger": "2.0", "info": info(), "paths": paths, "definitions": defs})
}

/// Group-version paths served, in discovery order.
pub fn v3_paths() -> Vec<String> {
    registry::group_versions().into_iter().map(|(g, v)| gv_path(g, v)).collect()
}

/// A stable cache key for a document's bytes (FNV-1a, 64 bits, upper-case hex): the
/// generation is deterministic, so the same build always publishes the same hashes.
pub fn hash(bytes: &[u8]) -> String {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in bytes {
        h ^= *b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    format!("{h:016X}")
}

#[cfg(test)]
mod tests;
