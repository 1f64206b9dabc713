//! Label and field selectors (`?labelSelector=`, `?fieldSelector=`), parsed once per
//! request and matched against objects as JSON; used by list and by watch alike.

use serde_json::Value;
pub use schema::labels::label_selector_string;

#[derive(Debug, Clone, PartialEq)]
pub enum LabelReq {
    Eq(String, String),
    NotEq(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct LabelSelector(pub Vec<LabelReq>);

#[derive(Debug, Clone, PartialEq)]
pub struct FieldReq {
    pub field: String,
    pub value: String,
    pub negate: bool,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct FieldSelector(pub Vec<FieldReq>);

/// Splits on commas outside parentheses: `a in (x,y),b` is two terms.
fn split_terms(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut depth, mut start) = (0i32, 0usize);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out.into_iter().map(str::trim).filter(|t| !t.is_empty()).collect()
}

fn valid_key(k: &str) -> bool {
    !k.is_empty() && k.len() <= 316 && k.chars().all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
}

impl LabelSelector {
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut reqs = Vec::new();
        for term in split_terms(s) {
            reqs.push(parse_label_term(term)?);
        }
        Ok(LabelSelector(reqs))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn matches(&self, obj: &Value) -> bool {
        let labels = obj.pointer("/metadata/labels").and_then(Value::as_object);
        let get = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
        self.0.iter().all(|r| match r {
            LabelReq::Eq(k, v) => get(k) == Some(v.as_str()),
            LabelReq::NotEq(k, v) => get(k) != Some(v.as_str()),
            LabelReq::In(k, vs) => get(k).map(|x| vs.iter().any(|v| v == x)).unwrap_or(false),
            LabelReq::NotIn(k, vs) => get(k).map(|x| !vs.iter().any(|v| v == x)).unwrap_or(true),
            LabelReq::Exists(k) => get(k).is_some(),
            LabelReq::NotExists(k) => get(k).is_none(),
        })
    }
}

fn parse_label_term(term: &str) -> Result<LabelReq, String> {
    let bad = || format!("unable to parse requirement: invalid label selector term {term:?}");
    if let Some(k) = term.strip_prefix('!') {
        let k = k.trim();
        return if valid_key(k) { Ok(LabelReq::NotExists(k.into())) } else { Err(bad()) };
    }
    if let Some(open) = term.find('(') {
        let close = term.rfind(')').filter(|c| *c > open && term[*c + 1..].trim().is_empty()).ok_or_else(bad)?;
        let head: Vec<&str> = term[..open].split_whitespace().collect();
        let [k, op] = head.as_slice() else { return Err(bad()) };
        if !valid_key(k) {
            return Err(bad());
        }
        let vals: Vec<String> = term[open + 1..close].split(',').map(|v| v.trim().to_string()).filter(|v| !v.is_empty()).collect();
        return match *op {
            "in" => Ok(LabelReq::In(k.to_string(), vals)),
            "notin" => Ok(LabelReq::NotIn(k.to_string(), vals)),
            _ => Err(bad()),
        };
    }
    let (k, v, neg) = if let Some((k, v)) = term.split_once("!=") {
        (k, v, true)
    } else if let Some((k, v)) = term.split_once("==") {
        (k, v, false)
    } else if let Some((k, v)) = term.split_once('=') {
        (k, v, false)
    } else {
        let k = term.trim();
        return if valid_key(k) { Ok(LabelReq::Exists(k.into())) } else { Err(bad()) };
    };
    let (k, v) = (k.trim(), v.trim());
    if !valid_key(k) || v.contains(['=', '!', ' ']) {
        return Err(bad());
    }
    Ok(if neg { LabelReq::NotEq(k.into(), v.into()) } else { LabelReq::Eq(k.into(), v.into()) })
}

impl FieldSelector {
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut reqs = Vec::new();
        for term in split_terms(s) {
            let (f, v, negate) = if let Some((f, v)) = term.split_once("!=") {
                (f, v, true)
            } else if let Some((f, v)) = term.split_once("==") {
                (f, v, false)
            } else if let Some((f, v)) = term.split_once('=') {
                (f, v, false)
            } else {
                return Err(format!("invalid selector: '{term}'; can't understand '{term}'"));
            };
            let f = f.trim();
            if f.is_empty() || !f.chars().all(|c| c.is_ascii_alphanumeric() || c == '.') {
                return Err(format!("field label not supported: {f}"));
            }
            reqs.push(FieldReq { field: f.into(), value: v.trim().into(), negate });
        }
        Ok(FieldSelector(reqs))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn fields(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|r| r.field.as_str())
    }

    /// The value a `field=` term asks for, e.g. `metadata.name` (to narrow a watch's subject).
    pub fn exact(&self, field: &str) -> Option<&str> {
        self.0.iter().find(|r| r.field == field && !r.negate).map(|r| r.value.as_str())
    }

    pub fn matches(&self, obj: &Value) -> bool {
        self.0.iter().all(|r| (field_value(obj, &r.field) == r.value) != r.negate)
    }
}

/// A field as the apiserver's field-label conversion renders it: absent = "".
fn field_value(obj: &Value, field: &str) -> String {
    let ptr = format!("/{}", field.replace('.', "/"));
    match obj.pointer(&ptr) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Bool(b)) => b.to_string(),
        Some(Value::Number(n)) => n.to_string(),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(labels: Value) -> Value {
        json!({"metadata":{"name":"p1","namespace":"demo","labels":labels},"spec":{"nodeName":"n1"},"status":{"phase":"Running"}})
    }

    #[test]
    fn equality_and_sets() {
        let p = pod(json!({"app":"web","tier":"fe"}));
        assert!(LabelSelector::parse("app=web").unwrap().matches(&p));
        assert!(LabelSelector::parse("app==web,tier").unwrap().matches(&p));
        assert!(!LabelSelector::parse("app!=web").unwrap().matches(&p));
        assert!(LabelSelector::parse("tier in (fe, be)").unwrap().matches(&p));
        assert!(!LabelSelector::parse("tier notin (fe,be)").unwrap().matches(&p));
        assert!(LabelSelector::parse("env notin (prod)").unwrap().matches(&p));
        assert!(LabelSelector::parse("!env").unwrap().matches(&p));
        assert!(!LabelSelector::parse("!app").unwrap().matches(&p));
        assert!(LabelSelector::parse("app in (web),!env,tier=fe").unwrap().matches(&p));
        assert!(LabelSelector::parse("").unwrap().is_empty());
        assert!(LabelSelector::parse("a in (x").is_err());
        assert!(LabelSelector::parse("a b").is_err());
        assert!(LabelSelector::parse("=x").is_err());
    }

    #[test]
    fn fields() {
        let p = pod(json!({}));
        assert!(FieldSelector::parse("metadata.name=p1").unwrap().matches(&p));
        assert!(FieldSelector::parse("spec.nodeName=n1,status.phase=Running").unwrap().matches(&p));
        assert!(!FieldSelector::parse("spec.nodeName!=n1").unwrap().matches(&p));
        assert!(FieldSelector::parse("metadata.namespace==demo").unwrap().matches(&p));
        assert!(FieldSelector::parse("spec.nodeName=").unwrap().matches(&json!({"spec":{}})));
        assert_eq!(FieldSelector::parse("metadata.name=p1").unwrap().exact("metadata.name"), Some("p1"));
        assert!(FieldSelector::parse("nonsense").is_err());
    }

    #[test]
    fn selector_strings() {
        let s = json!({"matchLabels":{"b":"2","a":"1"},"matchExpressions":[{"key":"c","operator":"In","values":["y","x"]}]});
        assert_eq!(label_selector_string(Some(&s)), "a=1,b=2,c in (x,y)");
    }
}
