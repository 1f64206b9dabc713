//! Server-side field validation (`?fieldValidation=Strict|Warn|Ignore`): unknown fields
//! found by walking a body against the same generated schemas OpenAPI publishes, and
//! duplicate keys found in the raw JSON, named by path as kube-apiserver names them.

use super::{definitions, ref_name};
use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldValidation {
    Strict,
    Warn,
    Ignore,
}

impl FieldValidation {
    /// The query parameter; absent means Warn, the server's default since 1.27.
    pub fn parse(q: Option<&str>) -> Result<FieldValidation, String> {
        match q.unwrap_or("") {
            "" | "Warn" => Ok(FieldValidation::Warn),
            "Strict" => Ok(FieldValidation::Strict),
            "Ignore" => Ok(FieldValidation::Ignore),
            other => Err(format!("fieldValidation parameter unsupported: {other}")),
        }
    }
}

/// Follows `$ref`s (and a single `allOf`) to the schema that describes a value.
fn resolve<'a>(mut s: &'a Value, defs: &'a Map<String, Value>) -> &'a Value {
    for _ in 0..8 {
        let r = s.get("$ref").or_else(|| s.pointer("/allOf/0/$ref")).and_then(Value::as_str);
        match r.and_then(ref_name).and_then(|n| defs.get(n)) {
            Some(d) => s = d,
            None => break,
        }
    }
    s
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn walk(schema: &Value, v: &mut Value, path: &str, defs: &Map<String, Value>, out: &mut Vec<String>) {
    let schema = resolve(schema, defs);
    if schema.get("x-kubernetes-preserve-unknown-fields").and_then(Value::as_bool) == Some(true) {
        return;
    }
    match v {
        Value::Object(m) => {
            if let Some(props) = schema.get("properties").and_then(Value::as_object) {
                let unknown: Vec<String> = m.keys().filter(|k| !props.contains_key(*k)).cloned().collect();
                for k in unknown {
                    m.remove(&k);
                    out.push(join(path, &k));
                }
                for (k, x) in m.iter_mut() {
                    walk(&props[k], x, &join(path, k), defs, out);
                }
            } else if let Some(ap) = schema.get("additionalProperties").filter(|a| a.is_object()) {
                for (k, x) in m.iter_mut() {
                    walk(ap, x, &join(path, k), defs, out);
                }
            }
        }
        Value::Array(a) => {
            if let Some(items) = schema.get("items") {
                for (i, x) in a.iter_mut().enumerate() {
                    walk(items, x, &format!("{path}[{i}]"), defs, out);
                }
            }
        }
        _ => {}
    }
}

/// Removes from `v` every field the definition `name` does not declare (the server drops
/// them whatever the mode) and returns their paths, e.g. `spec.containers[0].imagez`.
/// An unknown definition checks nothing.
pub fn drop_unknown_fields(name: &str, v: &mut Value) -> Vec<String> {
    let defs = definitions();
    let mut out = Vec::new();
    if let Some(d) = defs.get(name) {
        walk(d, v, "", defs, &mut out);
    }
    out
}

/// Paths of keys that appear twice in the same JSON object of `body` (the last one wins
/// when decoding). A body that is not JSON has none here; its decoder reports it.
pub fn duplicate_fields(body: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    let mut de = serde_json::Deserializer::from_slice(body);
    let _ = Dups { path: String::new(), out: &mut out }.deserialize(&mut de);
    out
}

struct Dups<'a> {
    path: String,
    out: &'a mut Vec<String>,
}

impl<'de> DeserializeSeed<'de> for Dups<'_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Dups<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<(), A::Error> {
        let mut seen = std::collections::HashSet::new();
        while let Some(k) = m.next_key::<String>()? {
            let p = join(&self.path, &k);
            if !seen.insert(k) {
                self.out.push(p.clone());
            }
            m.next_value_seed(Dups { path: p, out: self.out })?;
        }
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> Result<(), A::Error> {
        let mut i = 0;
        while s.next_element_seed(Dups { path: format!("{}[{i}]", self.path), out: self.out })?.is_some() {
            i += 1;
        }
        Ok(())
    }
    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn unknown_fields_are_named_by_path_and_dropped() {
        let mut pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "labels": {"any": "x"}, "bogus": 1},
            "spec": {"containerz": [], "containers": [{"name": "c", "image": "i", "imagez": "j",
                     "resources": {"limits": {"cpu": "1"}}, "ports": [{"containerPort": 80, "hostPortz": 1}]}]}});
        let found = drop_unknown_fields("io.k8s.api.core.v1.Pod", &mut pod);
        assert_eq!(found, vec!["metadata.bogus", "spec.containerz", "spec.containers[0].imagez", "spec.containers[0].ports[0].hostPortz"]);
        assert!(pod["spec"].get("containerz").is_none());
        assert_eq!(pod["metadata"]["labels"]["any"], "x", "map keys are free");
        assert_eq!(pod["spec"]["containers"][0]["resources"]["limits"]["cpu"], "1");
        assert!(drop_unknown_fields("io.k8s.api.core.v1.Pod", &mut pod).is_empty());
    }

    #[test]
    fn deployment_template_is_checked_through_refs() {
        let mut d = json!({"spec": {"replicas": 1, "template": {"spec": {"containers": [{"name": "c", "imagePullPolice": "x"}]}}}});
        assert_eq!(drop_unknown_fields("io.k8s.api.apps.v1.Deployment", &mut d), vec!["spec.template.spec.containers[0].imagePullPolice"]);
        let mut cm = json!({"data": {"k": "v"}, "binaryData": {}, "immutable": true});
        assert!(drop_unknown_fields("io.k8s.api.core.v1.ConfigMap", &mut cm).is_empty());
        assert!(drop_unknown_fields("no.such.Kind", &mut json!({"x": 1})).is_empty());
    }

    #[test]
    fn duplicates_are_found_in_raw_json() {
        let body = br#"{"spec":{"replicas":1,"replicas":2,"template":{"spec":{"containers":[{"name":"a","name":"b"}]}}},"kind":"Deployment"}"#;
        assert_eq!(duplicate_fields(body), vec!["spec.replicas", "spec.template.spec.containers[0].name"]);
        assert!(duplicate_fields(br#"{"a":{"b":1},"c":{"b":2}}"#).is_empty());
        assert!(duplicate_fields(b"not json").is_empty());
    }

    #[test]
    fn modes_parse_with_warn_by_default() {
        assert_eq!(FieldValidation::parse(None), Ok(FieldValidation::Warn));
        assert_eq!(FieldValidation::parse(Some("Strict")), Ok(FieldValidation::Strict));
        assert_eq!(FieldValidation::parse(Some("Ignore")), Ok(FieldValidation::Ignore));
        assert!(FieldValidation::parse(Some("strict")).is_err());
    }
}
