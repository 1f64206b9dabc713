//! Field paths and field sets as server-side apply records them: the `FieldsV1` JSON of
//! `metadata.managedFields` (`f:` fields, `k:` keyed list items, `v:` set values, `i:`
//! indexes, `.` for a node that is itself owned) and the set algebra over it.

use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet};

/// One step of a path. The order (fields, keys, values, indexes) is the real server's.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Elem {
    Field(String),
    /// The key fields of a list item as a JSON object with sorted names.
    Key(String),
    /// A set item as JSON.
    Value(String),
    Index(u64),
}

impl Elem {
    pub fn field(name: &str) -> Elem {
        Elem::Field(name.to_string())
    }

    /// `f:name`, `k:{...}`, `v:...`, `i:0`: a FieldsV1 key.
    pub fn encode(&self) -> String {
        match self {
            Elem::Field(f) => format!("f:{f}"),
            Elem::Key(k) => format!("k:{k}"),
            Elem::Value(v) => format!("v:{v}"),
            Elem::Index(i) => format!("i:{i}"),
        }
    }

    /// None for an unknown prefix (skipped, as the real server does).
    pub fn decode(s: &str) -> Result<Option<Elem>, PathError> {
        let bad = || PathError(format!("invalid path element {s:?}"));
        let Some((p, rest)) = s.split_once(':') else { return Err(bad()) };
        Ok(Some(match p {
            "f" => Elem::Field(rest.to_string()),
            "k" => match serde_json::from_str::<Value>(rest) {
                Ok(Value::Object(m)) => Elem::Key(Value::Object(m).to_string()),
                _ => return Err(bad()),
            },
            "v" => Elem::Value(serde_json::from_str::<Value>(rest).map_err(|_| bad())?.to_string()),
            "i" => Elem::Index(rest.parse().map_err(|_| bad())?),
            _ => return Ok(None),
        }))
    }
}

/// Go's `%v` of a value inside a path: strings quoted, the rest as JSON.
fn show(v: &Value) -> String {
    match v {
        Value::Object(m) => m.iter().map(|(k, v)| format!("{k}={}", show(v))).collect(),
        other => other.to_string(),
    }
}

impl std::fmt::Display for Elem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Elem::Field(n) => write!(f, ".{n}"),
            Elem::Key(k) => {
                let parts: Vec<String> = match serde_json::from_str::<Value>(k) {
                    Ok(Value::Object(m)) => m.iter().map(|(n, v)| format!("{n}={}", show(v))).collect(),
                    _ => vec![k.clone()],
                };
                write!(f, "[{}]", parts.join(","))
            }
            Elem::Value(v) => write!(f, "[={}]", serde_json::from_str::<Value>(v).map(|v| show(&v)).unwrap_or_else(|_| v.clone())),
            Elem::Index(i) => write!(f, "[{i}]"),
        }
    }
}

pub type Path = Vec<Elem>;

/// `.spec.template.spec.containers[name="web"].image`, as conflict messages print it.
pub fn path_string(p: &[Elem]) -> String {
    p.iter().map(ToString::to_string).collect()
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct PathError(pub String);

/// A set of paths: the members at this level and the subsets below each element.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSet {
    members: BTreeSet<Elem>,
    children: BTreeMap<Elem, FieldSet>,
}

impl FieldSet {
    pub fn new() -> FieldSet {
        FieldSet::default()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty() && self.children.values().all(FieldSet::is_empty)
    }

    /// Inserting the empty path does nothing (the root is never a member).
    pub fn insert(&mut self, path: &[Elem]) {
        match path {
            [] => {}
            [last] => {
                self.members.insert(last.clone());
            }
            [first, rest @ ..] => self.children.entry(first.clone()).or_default().insert(rest),
        }
    }

    pub fn has(&self, path: &[Elem]) -> bool {
        match path {
            [] => false,
            [last] => self.members.contains(last),
            [first, rest @ ..] => self.children.get(first).is_some_and(|c| c.has(rest)),
        }
    }

    /// The subset below `e`.
    pub fn child(&self, e: &Elem) -> Option<&FieldSet> {
        self.children.get(e)
    }

    pub fn union(&self, other: &FieldSet) -> FieldSet {
        let mut out = self.clone();
        out.members.extend(other.members.iter().cloned());
        for (e, c) in &other.children {
            let merged = match out.children.get(e) {
                Some(mine) => mine.union(c),
                None => c.clone(),
            };
            out.children.insert(e.clone(), merged);
        }
        out
    }

    /// Members of self not in other, level by level.
    pub fn difference(&self, other: &FieldSet) -> FieldSet {
        let mut out = FieldSet { members: self.members.difference(&other.members).cloned().collect(), children: BTreeMap::new() };
        for (e, c) in &self.children {
            let d = match other.children.get(e) {
                Some(o) => c.difference(o),
                None => c.clone(),
            };
            if !d.is_empty() {
                out.children.insert(e.clone(), d);
            }
        }
        out
    }

    pub fn intersection(&self, other: &FieldSet) -> FieldSet {
        let mut out = FieldSet { members: self.members.intersection(&other.members).cloned().collect(), children: BTreeMap::new() };
        for (e, c) in &self.children {
            if let Some(o) = other.children.get(e) {
                let i = c.intersection(o);
                if !i.is_empty() {
                    out.children.insert(e.clone(), i);
                }
            }
        }
        out
    }

    /// Self without anything at or below a member of `other` (whole subtrees go).
    pub fn recursive_difference(&self, other: &FieldSet) -> FieldSet {
        let mut out = FieldSet { members: self.members.difference(&other.members).cloned().collect(), children: BTreeMap::new() };
        for (e, c) in &self.children {
            if other.members.contains(e) {
                continue;
            }
            let d = match other.children.get(e) {
                Some(o) => c.recursive_difference(o),
                None => c.clone(),
            };
            if !d.is_empty() {
                out.children.insert(e.clone(), d);
            }
        }
        out
    }

    /// Every field a member path passes through becomes a member too, so that a field
    /// whose owned children are all pruned is pruned itself.
    pub fn with_named_fields(&self) -> FieldSet {
        let mut out = FieldSet { members: self.members.clone(), children: BTreeMap::new() };
        for (e, c) in &self.children {
            if matches!(e, Elem::Field(_)) && !c.is_empty() {
                out.members.insert(e.clone());
            }
            out.children.insert(e.clone(), c.with_named_fields());
        }
        out
    }

    /// Member paths, members of a level before the levels below it (the server's order).
    pub fn paths(&self) -> Vec<Path> {
        let mut out = Vec::new();
        self.collect(&mut Vec::new(), &mut out);
        out
    }

    fn collect(&self, prefix: &mut Path, out: &mut Vec<Path>) {
        for m in &self.members {
            let mut p = prefix.clone();
            p.push(m.clone());
            out.push(p);
        }
        for (e, c) in &self.children {
            prefix.push(e.clone());
            c.collect(prefix, out);
            prefix.pop();
        }
    }

    /// The FieldsV1 form.
    pub fn to_fields_v1(&self) -> Value {
        Value::Object(self.emit(false))
    }

    fn emit(&self, include_self: bool) -> Map<String, Value> {
        let mut out = Map::new();
        if include_self {
            out.insert(".".into(), Value::Object(Map::new()));
        }
        let keys: BTreeSet<&Elem> = self.members.iter().chain(self.children.keys().filter(|e| !self.children[*e].is_empty())).collect();
        for e in keys {
            let member = self.members.contains(e);
            let body = match self.children.get(e).filter(|c| !c.is_empty()) {
                Some(c) => c.emit(member),
                None => Map::new(),
            };
            out.insert(e.encode(), Value::Object(body));
        }
        out
    }

    pub fn from_fields_v1(v: &Value) -> Result<FieldSet, PathError> {
        let Value::Object(m) = v else { return Err(PathError("fieldsV1 must be a JSON object".into())) };
        let mut out = FieldSet::new();
        for (k, body) in m {
            if k == "." {
                continue;
            }
            let Some(e) = Elem::decode(k)? else { continue };
            let Value::Object(inner) = body else { return Err(PathError(format!("the value of {k:?} must be an object"))) };
            if inner.is_empty() || inner.contains_key(".") {
                out.members.insert(e.clone());
            }
            if inner.keys().any(|x| x != ".") {
                let c = FieldSet::from_fields_v1(body)?;
                if !c.is_empty() {
                    out.children.insert(e, c);
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn f(n: &str) -> Elem {
        Elem::field(n)
    }

    #[test]
    fn fields_v1_round_trip_with_dot() {
        let text = json!({"f:metadata":{"f:labels":{".":{},"f:app":{}}},
            "f:spec":{"f:containers":{"k:{\"name\":\"web\"}":{".":{},"f:image":{},"f:name":{}}},"f:replicas":{}}});
        let s = FieldSet::from_fields_v1(&text).unwrap();
        assert!(s.has(&[f("spec"), f("replicas")]));
        assert!(s.has(&[f("metadata"), f("labels")]));
        assert!(!s.has(&[f("metadata")]));
        let web = Elem::Key(r#"{"name":"web"}"#.into());
        assert!(s.has(&[f("spec"), f("containers"), web.clone()]));
        assert_eq!(s.to_fields_v1(), text);
        assert_eq!(path_string(&[f("spec"), f("containers"), web, f("image")]), r#".spec.containers[name="web"].image"#);
    }

    #[test]
    fn bad_fields_v1_is_an_error_and_unknown_prefixes_are_skipped() {
        assert!(FieldSet::from_fields_v1(&json!([1])).is_err());
        assert!(FieldSet::from_fields_v1(&json!({"k:notjson":{}})).is_err());
        assert!(FieldSet::from_fields_v1(&json!({"f:a": 1})).is_err());
        assert!(FieldSet::from_fields_v1(&json!({"zz":{}})).is_err());
        assert!(FieldSet::from_fields_v1(&json!({"x:a":{}})).unwrap().is_empty());
    }

    #[test]
    fn algebra() {
        let mut a = FieldSet::new();
        a.insert(&[f("spec"), f("replicas")]);
        a.insert(&[f("spec"), f("paused")]);
        let mut b = FieldSet::new();
        b.insert(&[f("spec"), f("replicas")]);
        b.insert(&[f("metadata"), f("labels"), f("x")]);
        assert_eq!(a.intersection(&b).paths(), vec![vec![f("spec"), f("replicas")]]);
        assert_eq!(a.difference(&b).paths(), vec![vec![f("spec"), f("paused")]]);
        assert_eq!(a.union(&b).paths().len(), 3);
        let mut spec = FieldSet::new();
        spec.insert(&[f("spec")]);
        assert!(a.recursive_difference(&spec).is_empty());
        assert!(a.difference(&spec).has(&[f("spec"), f("paused")]));
        let named = b.with_named_fields();
        assert!(named.has(&[f("metadata")]) && named.has(&[f("metadata"), f("labels")]));
        assert_eq!(Elem::Value("\"a\"".into()).to_string(), "[=\"a\"]");
        assert_eq!(Elem::Key(r#"{"containerPort":80,"protocol":"TCP"}"#.into()).to_string(), r#"[containerPort=80,protocol="TCP"]"#);
    }
}
