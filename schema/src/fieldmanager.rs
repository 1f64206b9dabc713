//! Field management as the real API server does it: every write records its writer in
//! `metadata.managedFields` owning the fields it changed (operation Update), and
//! server-side apply owns its whole configuration (operation Apply), prunes what it no
//! longer applies and refuses to change fields other managers own unless forced.

use crate::fieldpath::{path_string, FieldSet, Path};
use crate::typed;
use serde_json::{json, Value};

pub const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";
/// Update entries kept before the oldest are folded into one (the server's cap).
pub const MAX_UPDATE_MANAGERS: usize = 10;
const ANCIENT: &str = "ancient-changes";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Operation {
    Apply,
    Update,
}

/// One `managedFields` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub manager: String,
    pub operation: Operation,
    pub api_version: String,
    pub time: Option<String>,
    pub subresource: String,
    pub fields: FieldSet,
}

impl Entry {
    /// Appliers are one manager whatever version they applied; updaters one per version.
    fn same_manager(&self, w: &Writer, op: Operation) -> bool {
        self.manager == w.manager && self.operation == op && self.subresource == w.subresource && (op == Operation::Apply || self.api_version == w.api_version)
    }

    /// How conflict messages name the manager.
    pub fn describe(&self) -> String {
        let mut s = format!("{:?}", self.manager);
        if !self.subresource.is_empty() {
            s.push_str(&format!(" with subresource {:?}", self.subresource));
        }
        if self.operation == Operation::Update {
            s.push_str(&format!(" using {}", self.api_version));
        }
        s
    }
}

/// Who writes, and through which version and subresource.
#[derive(Debug, Clone, PartialEq)]
pub struct Writer {
    pub manager: String,
    pub api_version: String,
    /// "" for the resource itself, else "status" or "scale".
    pub subresource: String,
}

/// What one operation needs besides the objects.
pub struct Scope<'a> {
    pub kind: &'a str,
    pub writer: Writer,
    /// Fields this operation can never own (status, when written through the resource
    /// and the kind has a status subresource).
    pub ignored: FieldSet,
    /// RFC 3339, whole seconds.
    pub now: String,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FieldsError {
    #[error("{0}")]
    Invalid(String),
    /// 409: the fields others own that this apply would change.
    #[error("{}", conflict_message(.0))]
    Conflicts(Vec<(String, Path)>),
}

fn conflict_message(c: &[(String, Path)]) -> String {
    if let [(m, p)] = c {
        return format!("Apply failed with 1 conflict: conflict with {m}: {}", path_string(p));
    }
    let mut lines = Vec::new();
    let mut last: Option<&str> = None;
    for (m, p) in c {
        if last != Some(m.as_str()) {
            lines.push(format!("conflicts with {m}:"));
            last = Some(m);
        }
        lines.push(format!("- {}", path_string(p)));
    }
    format!("Apply failed with {} conflicts: {}", c.len(), lines.join("\n"))
}

/// Reads `metadata.managedFields`; an absent list is empty.
pub fn decode(obj: &Value) -> Result<Vec<Entry>, String> {
    let Some(list) = obj.pointer("/metadata/managedFields").filter(|v| !v.is_null()) else { return Ok(Vec::new()) };
    let Value::Array(items) = list else { return Err("managedFields must be a list".into()) };
    let mut out: Vec<Entry> = Vec::new();
    for (i, it) in items.iter().enumerate() {
        let s = |k: &str| it.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        let operation = match s("operation").as_str() {
            "Apply" => Operation::Apply,
            "Update" => Operation::Update,
            _ => return Err("operation must be `Apply` or `Update`".into()),
        };
        if s("apiVersion").is_empty() {
            return Err("apiVersion must not be empty".into());
        }
        match s("fieldsType").as_str() {
            "FieldsV1" => {}
            "" => return Err(format!("missing fieldsType in managed fields entry {i}")),
            t => return Err(format!("invalid fieldsType {t:?} in managed fields entry {i}")),
        }
        let fields = FieldSet::from_fields_v1(it.get("fieldsV1").unwrap_or(&json!({}))).map_err(|e| e.to_string())?;
        let e = Entry { manager: s("manager"), operation, api_version: s("apiVersion"), time: it.get("time").and_then(Value::as_str).map(str::to_string), subresource: s("subresource"), fields };
        // A later entry for the same manager replaces an earlier one, as on the server.
        let w = Writer { manager: e.manager.clone(), api_version: e.api_version.clone(), subresource: e.subresource.clone() };
        out.retain(|x| !x.same_manager(&w, e.operation));
        out.push(e);
    }
    Ok(out)
}

/// The `managedFields` list, in the server's order (Apply first, then by time, manager,
/// version, subresource).
pub fn encode(entries: &[Entry]) -> Value {
    let mut sorted: Vec<&Entry> = entries.iter().filter(|e| !e.fields.is_empty()).collect();
    sorted.sort_by(|a, b| (a.operation, &a.time, &a.manager, &a.api_version, &a.subresource).cmp(&(b.operation, &b.time, &b.manager, &b.api_version, &b.subresource)));
    Value::Array(
        sorted
            .into_iter()
            .map(|e| {
                let mut v = json!({"manager": e.manager, "operation": if e.operation == Operation::Apply { "Apply" } else { "Update" },
                    "apiVersion": e.api_version, "fieldsType": "FieldsV1", "fieldsV1": e.fields.to_fields_v1()});
                if let Some(t) = &e.time {
                    v["time"] = json!(t);
                }
                if !e.subresource.is_empty() {
                    v["subresource"] = json!(e.subresource);
                }
                v
            })
            .collect(),
    )
}

/// Metadata no manager owns (the server strips it from every set).
fn strip_meta(s: &FieldSet) -> FieldSet {
    use crate::fieldpath::Elem;
    let mut strip = FieldSet::new();
    for f in ["apiVersion", "kind", "metadata"] {
        strip.insert(&[Elem::field(f)]);
    }
    for f in ["name", "namespace", "creationTimestamp", "selfLink", "uid", "clusterName", "generation", "managedFields", "resourceVersion"] {
        strip.insert(&[Elem::field("metadata"), Elem::field(f)]);
    }
    s.difference(&strip)
}

/// Other managers lose what this operation changed or removed; empty entries go.
fn take_from_others(entries: &mut Vec<Entry>, mine: impl Fn(&Entry) -> bool, cmp: &typed::Comparison) {
    let changed = cmp.changed();
    for e in entries.iter_mut().filter(|e| !mine(e)) {
        e.fields = e.fields.difference(&changed).difference(&cmp.removed);
    }
    entries.retain(|e| !e.fields.is_empty());
}

/// Folds the oldest Update entries into "ancient-changes" past the cap.
fn cap_updaters(entries: &mut Vec<Entry>) {
    loop {
        let mut updaters: Vec<usize> = (0..entries.len()).filter(|i| entries[*i].operation == Operation::Update).collect();
        if updaters.len() <= MAX_UPDATE_MANAGERS {
            return;
        }
        updaters.sort_by(|a, b| (&entries[*a].time, &entries[*a].manager).cmp(&(&entries[*b].time, &entries[*b].manager)));
        let Some(&oldest) = updaters.iter().find(|i| entries[**i].manager != ANCIENT).or(updaters.first()) else { return };
        let old = entries.remove(oldest);
        match entries.iter_mut().find(|e| e.manager == ANCIENT && e.operation == Operation::Update && e.api_version == old.api_version) {
            Some(b) => {
                b.fields = b.fields.union(&old.fields);
                b.time = b.time.clone().max(old.time);
            }
            None if old.manager == ANCIENT => return,
            None => entries.push(Entry { manager: ANCIENT.into(), subresource: String::new(), ..old }),
        }
    }
}

/// Records a create (`live` None), update or non-apply patch: the writer's Update entry
/// gains the fields it added or changed, and every other manager loses them.
pub fn update(scope: &Scope, live: Option<&Value>, new: &Value, mut entries: Vec<Entry>) -> Vec<Entry> {
    let zero = crate::fieldtypes::zero_object(scope.kind);
    let mut cmp = typed::compare(scope.kind, live.unwrap_or(&zero), new);
    cmp.exclude(&scope.ignored);
    let w = &scope.writer;
    take_from_others(&mut entries, |e| e.same_manager(w, Operation::Update), &cmp);
    let own = strip_meta(&cmp.changed());
    let pos = entries.iter().position(|e| e.same_manager(w, Operation::Update));
    if let Some(i) = pos {
        entries[i].fields = entries[i].fields.difference(&cmp.removed);
    }
    if !own.is_empty() {
        match pos {
            Some(i) => {
                entries[i].fields = entries[i].fields.union(&own);
                entries[i].time = Some(scope.now.clone());
            }
            None => entries.push(Entry { manager: w.manager.clone(), operation: Operation::Update, api_version: w.api_version.clone(), time: Some(scope.now.clone()), subresource: w.subresource.clone(), fields: own }),
        }
    }
    entries.retain(|e| !e.fields.is_empty());
    cap_updaters(&mut entries);
    entries
}

/// The fields of the live object that kubectl's last client-side apply set to the values
/// they still have: kubectl's first server-side apply may take those over without a
/// conflict (the real server's upgrade from client-side apply).
fn allowed_from_last_applied(scope: &Scope, live: &Value) -> Option<FieldSet> {
    let text = live.pointer(&format!("/metadata/annotations/{}", LAST_APPLIED.replace('/', "~1")))?.as_str()?;
    let last: Value = serde_json::from_str(text).ok()?;
    if last.get("apiVersion").and_then(Value::as_str) != Some(scope.writer.api_version.as_str()) {
        return None;
    }
    let set = typed::field_set(scope.kind, &last, false).ok()?;
    let cmp = typed::compare(scope.kind, &last, live);
    Some(set.difference(&cmp.modified).difference(&cmp.added).difference(&cmp.removed))
}

/// Server-side apply of `config` (already checked to be this kind) onto `live` (None:
/// absent, so this creates it). Answers the new object, its managedFields set, or the
/// conflicts.
pub fn apply(scope: &Scope, live: Option<&Value>, config: &Value, force: bool) -> Result<Value, FieldsError> {
    if config.pointer("/metadata/managedFields").is_some_and(|m| !m.is_null()) {
        return Err(FieldsError::Invalid("metadata.managedFields must be nil".into()));
    }
    let entries = match live {
        Some(l) => decode(l).map_err(|e| FieldsError::Invalid(format!("failed to decode managed fields: {e}")))?,
        None => Vec::new(),
    };
    let empty = json!({});
    let live_v = live.unwrap_or(&empty);
    let result = apply_once(scope, live_v, config, entries.clone(), force);
    let result = match result {
        Err(FieldsError::Conflicts(c)) if scope.writer.manager == "kubectl" && !force => match allowed_from_last_applied(scope, live_v) {
            Some(allowed) => {
                let left: Vec<(String, Path)> = c.iter().filter(|(_, p)| !allowed.has(p)).cloned().collect();
                if left.is_empty() {
                    apply_once(scope, live_v, config, entries, true)
                } else {
                    Err(FieldsError::Conflicts(left))
                }
            }
            None => Err(FieldsError::Conflicts(c)),
        },
        other => other,
    };
    let (mut out, entries) = result?;
    if scope.writer.manager == "kubectl" {
        keep_last_applied_in_sync(live_v, config, &mut out);
    }
    crate::object::set_meta(&mut out, "managedFields", encode(&entries));
    Ok(out)
}

/// kubectl's server-side apply keeps an existing client-side apply annotation current, so
/// that a later client-side apply computes the right patch.
fn keep_last_applied_in_sync(live: &Value, config: &Value, out: &mut Value) {
    if live.pointer("/metadata/annotations").and_then(|a| a.get(LAST_APPLIED)).is_none() {
        return;
    }
    let mut c = config.clone();
    if let Some(a) = c.pointer_mut("/metadata/annotations").and_then(Value::as_object_mut) {
        a.remove(LAST_APPLIED);
        if a.is_empty() {
            if let Some(m) = c.pointer_mut("/metadata").and_then(Value::as_object_mut) {
                m.remove("annotations");
            }
        }
    }
    if let Some(a) = out.pointer_mut("/metadata/annotations").and_then(Value::as_object_mut) {
        a.insert(LAST_APPLIED.into(), Value::String(c.to_string()));
    }
}

type Applied = (Value, Vec<Entry>);

fn apply_once(scope: &Scope, live: &Value, config: &Value, mut entries: Vec<Entry>, force: bool) -> Result<Applied, FieldsError> {
    let kind = scope.kind;
    let w = &scope.writer;
    let set = typed::field_set(kind, config, true).map_err(FieldsError::Invalid)?;
    let set = strip_meta(&set).recursive_difference(&scope.ignored);
    let mut merged = typed::merge(kind, live, config);
    let pos = entries.iter().position(|e| e.same_manager(w, Operation::Apply));
    let last = pos.map(|i| entries[i].fields.clone());
    let before = pos.map(|i| entries[i].clone());
    match pos {
        Some(i) => {
            entries[i].fields = set.clone();
            entries[i].api_version = w.api_version.clone();
        }
        None => entries.push(Entry { manager: w.manager.clone(), operation: Operation::Apply, api_version: w.api_version.clone(), time: Some(scope.now.clone()), subresource: w.subresource.clone(), fields: set.clone() }),
    }
    if let Some(last) = last.filter(|l| !l.is_empty()) {
        // Prune what this applier applied last time, no longer applies, and nobody else owns.
        let merged_set = typed::field_set(kind, &merged, false).map_err(FieldsError::Invalid)?.with_named_fields();
        let owned = entries.iter().fold(FieldSet::new(), |acc, e| acc.union(&e.fields)).with_named_fields();
        let gone = merged_set.intersection(&last.with_named_fields()).difference(&owned);
        if !gone.is_empty() {
            merged = typed::remove_items(kind, &merged, &gone).unwrap_or_else(|| json!({}));
        }
    }
    strip_nulls(&mut merged);
    let mut cmp = typed::compare(kind, live, &merged);
    cmp.exclude(&scope.ignored);
    let changed = cmp.changed();
    let mut conflicts: Vec<(String, Path)> = Vec::new();
    for e in entries.iter().filter(|e| !e.same_manager(w, Operation::Apply)) {
        for p in e.fields.intersection(&changed).paths() {
            conflicts.push((e.describe(), p));
        }
    }
    if !conflicts.is_empty() && !force {
        conflicts.sort_by(|a, b| a.0.cmp(&b.0));
        return Err(FieldsError::Conflicts(conflicts));
    }
    take_from_others(&mut entries, |e| e.same_manager(w, Operation::Apply), &cmp);
    if let Some(i) = entries.iter().position(|e| e.same_manager(w, Operation::Apply)) {
        let unchanged = before.as_ref().is_some_and(|b| b.fields == entries[i].fields) && cmp == typed::Comparison::default();
        entries[i].time = if unchanged { before.and_then(|b| b.time) } else { Some(scope.now.clone()) };
        entries[i].subresource = w.subresource.clone();
    }
    Ok((merged, entries))
}

/// A null in a configuration unsets the field: typed objects have no null fields.
fn strip_nulls(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.retain(|_, x| !x.is_null());
            m.values_mut().for_each(strip_nulls);
        }
        Value::Array(a) => a.iter_mut().for_each(strip_nulls),
        _ => {}
    }
}

/// Records a non-apply write on the object itself: reads the base entries (those the
/// client sent, when it sent any that decode; else the live object's), updates them and
/// stores the result in `new`.
pub fn record_update(scope: &Scope, live: Option<&Value>, new: &mut Value) {
    let base = match (decode(new).ok().filter(|e| !e.is_empty()), live) {
        _ if is_reset(new) => Vec::new(),
        (Some(e), _) => e,
        (None, Some(l)) => decode(l).unwrap_or_default(),
        (None, None) => Vec::new(),
    };
    let entries = update(scope, live, new, base);
    crate::object::set_meta(new, "managedFields", encode(&entries));
}

/// `managedFields: [{}]` asks the server to forget all managers but this write.
fn is_reset(v: &Value) -> bool {
    matches!(v.pointer("/metadata/managedFields"), Some(Value::Array(a)) if a.len() == 1 && a[0].as_object().is_some_and(|m| m.is_empty()))
}

#[cfg(test)]
#[path = "fieldmanager_tests.rs"]
mod tests;
