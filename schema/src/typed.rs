//! The walks server-side apply makes over an object, with the built-in types' list and
//! map semantics from `fieldtypes`: the field set of an applied configuration, the fields
//! one object changed relative to another, the apply merge, and removing owned fields.

use crate::fieldpath::{path_string, Elem, FieldSet, Path};
use crate::fieldtypes::{self, ListType};
use serde_json::{Map, Value};

/// A walk's position: the object's kind, the field names from the root (what the type
/// table matches) and the path as recorded in field sets.
struct Walk<'a> {
    kind: &'a str,
    names: Vec<String>,
    path: Path,
}

impl<'a> Walk<'a> {
    fn new(kind: &'a str) -> Self {
        Walk { kind, names: Vec::new(), path: Vec::new() }
    }
    fn names(&self) -> Vec<&str> {
        self.names.iter().map(String::as_str).collect()
    }
    fn list_type(&self) -> ListType {
        fieldtypes::list(self.kind, &self.names()).0
    }
    fn atomic_object(&self) -> bool {
        !self.names.is_empty() && fieldtypes::atomic_object(self.kind, &self.names())
    }
    fn enter_field(&mut self, k: &str) {
        self.names.push(k.to_string());
        self.path.push(Elem::field(k));
    }
    fn leave_field(&mut self) {
        self.names.pop();
        self.path.pop();
    }
    fn err(&self, msg: impl std::fmt::Display) -> String {
        format!("{}: {msg}", path_string(&self.path))
    }
}

/// The path element of an item of a keyed list or set.
fn item_elem(lt: ListType, item: &Value) -> Result<Elem, String> {
    match lt {
        ListType::Map(keys) => {
            let Value::Object(m) = item else { return Err("associative list with keys may not have non-map elements".into()) };
            let mut key = Map::new();
            for kf in keys {
                match (m.get(kf.name), kf.default) {
                    (Some(v), _) if !v.is_null() => key.insert(kf.name.to_string(), v.clone()),
                    (_, Some(d)) => key.insert(kf.name.to_string(), Value::String(d.to_string())),
                    _ => return Err(format!("associative list with keys has an element that omits key field {:?} (and doesn't have default value)", kf.name)),
                };
            }
            Ok(Elem::Key(Value::Object(key).to_string()))
        }
        ListType::Set => match item {
            Value::Object(_) | Value::Array(_) => Err("associative list without keys has an element that's a map or list".into()),
            v => Ok(Elem::Value(v.to_string())),
        },
        ListType::Atomic => Err("atomic lists have no keys".into()),
    }
}

/// A keyed list's items by element, or None when it cannot be keyed (missing keys or
/// duplicates: the live object may hold such a list, which is then owned as a whole).
fn index(lt: ListType, items: &[Value]) -> Option<Vec<(Elem, &Value)>> {
    let mut out: Vec<(Elem, &Value)> = Vec::with_capacity(items.len());
    for it in items {
        let e = item_elem(lt, it).ok()?;
        if out.iter().any(|(x, _)| *x == e) {
            return None;
        }
        out.push((e, it));
    }
    Some(out)
}

/// The fields an applied configuration sets. `strict`: a list that cannot be keyed is an
/// error (for a configuration) rather than an atomic field (for a live object).
pub fn field_set(kind: &str, v: &Value, strict: bool) -> Result<FieldSet, String> {
    let mut out = FieldSet::new();
    set_walk(&mut Walk::new(kind), v, strict, &mut out)?;
    Ok(out)
}

fn set_walk(w: &mut Walk, v: &Value, strict: bool, out: &mut FieldSet) -> Result<(), String> {
    match v {
        Value::Object(_) if w.atomic_object() => out.insert(&w.path),
        Value::Object(m) => {
            for (k, child) in m {
                w.enter_field(k);
                set_walk(w, child, strict, out)?;
                if child.is_null() || child.as_object().is_some_and(Map::is_empty) {
                    out.insert(&w.path);
                }
                w.leave_field();
            }
        }
        Value::Array(items) => {
            let lt = w.list_type();
            if lt == ListType::Atomic {
                out.insert(&w.path);
                return Ok(());
            }
            if !strict && index(lt, items).is_none() {
                // Not keyable in a live object: owned whole.
                out.insert(&w.path);
                return Ok(());
            }
            let mut seen: Vec<Elem> = Vec::new();
            for (i, it) in items.iter().enumerate() {
                let e = match item_elem(lt, it) {
                    Ok(e) if seen.contains(&e) => return Err(w.err(format!("duplicate entries for key {e}"))),
                    Ok(e) => e,
                    Err(m) => return Err(w.err(format!("element {i}: {m}"))),
                };
                seen.push(e.clone());
                w.path.push(e);
                set_walk(w, it, strict, out)?;
                out.insert(&w.path);
                w.path.pop();
            }
        }
        _ => out.insert(&w.path),
    }
    Ok(())
}

/// What changed from `lhs` to `rhs`, as the real server's comparison reports it: leaves
/// (scalars, atomic lists and maps, empty ones) added, removed or modified; maps, lists
/// and list items added or removed as a whole.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Comparison {
    pub added: FieldSet,
    pub modified: FieldSet,
    pub removed: FieldSet,
}

impl Comparison {
    /// Drops whatever lies at or below `ignored`.
    pub fn exclude(&mut self, ignored: &FieldSet) {
        self.added = self.added.recursive_difference(ignored);
        self.modified = self.modified.recursive_difference(ignored);
        self.removed = self.removed.recursive_difference(ignored);
    }
    pub fn changed(&self) -> FieldSet {
        self.added.union(&self.modified)
    }
}

pub fn compare(kind: &str, lhs: &Value, rhs: &Value) -> Comparison {
    let mut c = Comparison::default();
    cmp_walk(&mut Walk::new(kind), Some(lhs), Some(rhs), &mut c);
    c
}

fn as_map(v: Option<&Value>) -> Option<Option<&Map<String, Value>>> {
    match v {
        None | Some(Value::Null) => Some(None),
        Some(Value::Object(m)) => Some(Some(m)),
        _ => None,
    }
}

fn as_list(v: Option<&Value>) -> Option<&[Value]> {
    match v {
        None | Some(Value::Null) => Some(&[]),
        Some(Value::Array(a)) => Some(a),
        _ => None,
    }
}

fn cmp_leaf(w: &Walk, l: Option<&Value>, r: Option<&Value>, c: &mut Comparison) {
    match (l, r) {
        (None, _) => c.added.insert(&w.path),
        (_, None) => c.removed.insert(&w.path),
        (Some(a), Some(b)) if a != b => c.modified.insert(&w.path),
        _ => {}
    }
}

fn cmp_walk(w: &mut Walk, l: Option<&Value>, r: Option<&Value>, c: &mut Comparison) {
    let granular = match (as_map(l), as_map(r), as_list(l), as_list(r)) {
        (Some(lm), Some(rm), _, _) if l.is_some_and(Value::is_object) || r.is_some_and(Value::is_object) => {
            let empty = lm.is_none_or(Map::is_empty) && rm.is_none_or(Map::is_empty);
            if w.atomic_object() || empty {
                false
            } else {
                let mut keys: Vec<&String> = lm.into_iter().flat_map(Map::keys).collect();
                keys.extend(rm.into_iter().flat_map(Map::keys).filter(|k| !lm.is_some_and(|m| m.contains_key(*k))));
                for k in keys {
                    w.enter_field(k);
                    cmp_walk(w, lm.and_then(|m| m.get(k)), rm.and_then(|m| m.get(k)), c);
                    w.leave_field();
                }
                true
            }
        }
        (_, _, Some(ll), Some(rl)) if l.is_some_and(Value::is_array) || r.is_some_and(Value::is_array) => {
            let lt = w.list_type();
            let empty = ll.is_empty() && rl.is_empty();
            match (lt, index(lt, ll), index(lt, rl)) {
                (ListType::Atomic, _, _) => false,
                _ if empty => false,
                (_, Some(li), Some(ri)) => {
                    let mut elems: Vec<&Elem> = li.iter().map(|(e, _)| e).collect();
                    elems.extend(ri.iter().map(|(e, _)| e).filter(|e| !li.iter().any(|(x, _)| x == *e)));
                    for e in elems {
                        let lv = li.iter().find(|(x, _)| x == e).map(|(_, v)| *v);
                        let rv = ri.iter().find(|(x, _)| x == e).map(|(_, v)| *v);
                        w.path.push(e.clone());
                        cmp_walk(w, lv, rv, c);
                        w.path.pop();
                    }
                    true
                }
                _ => false,
            }
        }
        _ => false,
    };
    if !granular {
        cmp_leaf(w, l, r, c);
    } else if !w.path.is_empty() {
        match (l, r) {
            (None, _) => c.added.insert(&w.path),
            (_, None) => c.removed.insert(&w.path),
            _ => {}
        }
    }
}

/// The live object with the configuration merged in: the configuration's values win,
/// maps and keyed lists merge item by item, everything else is replaced.
pub fn merge(kind: &str, live: &Value, config: &Value) -> Value {
    merge_walk(&mut Walk::new(kind), live, config)
}

fn merge_walk(w: &mut Walk, l: &Value, r: &Value) -> Value {
    match (l, r) {
        (Value::Object(lm), Value::Object(rm)) if !w.atomic_object() => {
            let mut out = lm.clone();
            for (k, rv) in rm {
                w.enter_field(k);
                let merged = match lm.get(k) {
                    Some(lv) => merge_walk(w, lv, rv),
                    None => rv.clone(),
                };
                w.leave_field();
                out.insert(k.clone(), merged);
            }
            Value::Object(out)
        }
        (Value::Array(ll), Value::Array(rl)) => {
            let lt = w.list_type();
            match (lt, index(lt, ll), index(lt, rl)) {
                (ListType::Atomic, _, _) => r.clone(),
                (_, Some(li), Some(ri)) => Value::Array(merge_items(w, &li, &ri)),
                _ => r.clone(),
            }
        }
        _ => r.clone(),
    }
}

/// Keyed list merge in the real server's order: configuration items in their order, live
/// items the configuration does not name kept where they were.
fn merge_items(w: &mut Walk, li: &[(Elem, &Value)], ri: &[(Elem, &Value)]) -> Vec<Value> {
    let in_l = |e: &Elem| li.iter().find(|(x, _)| x == e).map(|(_, v)| *v);
    let in_r = |e: &Elem| ri.iter().any(|(x, _)| x == e);
    let mut shared = ri.iter().map(|(e, _)| e).filter(|e| in_l(e).is_some());
    let mut next_shared = shared.next();
    let mut merged_r: Vec<&Elem> = Vec::new();
    let mut out = Vec::new();
    let item = |w: &mut Walk, e: &Elem, lv: Option<&Value>, rv: &Value| {
        w.path.push(e.clone());
        let v = match lv {
            Some(lv) => merge_walk(w, lv, rv),
            None => rv.clone(),
        };
        w.path.pop();
        v
    };
    let (mut i, mut j) = (0, 0);
    while i < li.len() || j < ri.len() {
        if i < li.len() && j < ri.len() {
            let pe = &li[i].0;
            if *pe == ri[j].0 {
                merged_r.push(pe);
                out.push(item(w, pe, Some(li[i].1), ri[j].1));
                i += 1;
                j += 1;
                next_shared = shared.next();
                continue;
            }
            if in_r(pe) && next_shared.is_some_and(|n| n != pe) {
                i += 1;
                continue;
            }
        }
        if i < li.len() {
            let pe = &li[i].0;
            if !in_r(pe) {
                out.push(li[i].1.clone());
                i += 1;
                continue;
            } else if merged_r.contains(&pe) {
                i += 1;
                continue;
            }
        }
        if j < ri.len() {
            let pe = &ri[j].0;
            merged_r.push(pe);
            out.push(item(w, pe, in_l(pe), ri[j].1));
            j += 1;
            if next_shared == Some(pe) {
                next_shared = shared.next();
            }
        }
    }
    out
}

/// `v` without the fields, map entries and list items in `set` (a map or list left
/// empty goes too: None).
pub fn remove_items(kind: &str, v: &Value, set: &FieldSet) -> Option<Value> {
    remove_walk(&mut Walk::new(kind), v, set)
}

fn remove_walk(w: &mut Walk, v: &Value, set: &FieldSet) -> Option<Value> {
    match v {
        Value::Object(m) if !w.atomic_object() => {
            let mut out = Map::new();
            for (k, child) in m {
                let e = Elem::field(k);
                if set.has(std::slice::from_ref(&e)) {
                    continue;
                }
                match set.child(&e) {
                    Some(sub) => {
                        w.enter_field(k);
                        let kept = remove_walk(w, child, sub);
                        w.leave_field();
                        if let Some(x) = kept {
                            out.insert(k.clone(), x);
                        }
                    }
                    None => {
                        out.insert(k.clone(), child.clone());
                    }
                }
            }
            (!out.is_empty() || m.is_empty()).then_some(Value::Object(out))
        }
        Value::Array(items) => {
            let lt = w.list_type();
            let Some(idx) = index(lt, items).filter(|_| lt != ListType::Atomic) else { return Some(v.clone()) };
            let mut out = Vec::new();
            for (e, it) in idx {
                if set.has(std::slice::from_ref(&e)) {
                    continue;
                }
                match set.child(&e) {
                    Some(sub) => {
                        w.path.push(e.clone());
                        out.push(remove_walk(w, it, sub).unwrap_or_else(|| it.clone()));
                        w.path.pop();
                    }
                    None => out.push(it.clone()),
                }
            }
            (!out.is_empty() || items.is_empty()).then_some(Value::Array(out))
        }
        other => Some(other.clone()),
    }
}

#[cfg(test)]
#[path = "typed_tests.rs"]
mod tests;
