//! Label selectors in the string form kubectl and the real server print them (the
//! Selector column, Scale.status.selector), from a LabelSelector object.

use serde_json::Value;

/// `app=web,tier in (a,b)`: a LabelSelector object (matchLabels/matchExpressions) as the
/// string form Scale.status.selector and the Selector column use.
pub fn label_selector_string(sel: Option<&Value>) -> String {
    let Some(sel) = sel else { return String::new() };
    let mut terms: Vec<(String, String)> = Vec::new();
    if let Some(ml) = sel.get("matchLabels").and_then(Value::as_object) {
        for (k, v) in ml {
            terms.push((k.clone(), format!("{k}={}", v.as_str().unwrap_or(""))));
        }
    }
    if let Some(exprs) = sel.get("matchExpressions").and_then(Value::as_array) {
        for e in exprs {
            let k = e.get("key").and_then(Value::as_str).unwrap_or("").to_string();
            let mut vals: Vec<&str> = e.get("values").and_then(Value::as_array).map(|a| a.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
            vals.sort_unstable();
            let t = match e.get("operator").and_then(Value::as_str).unwrap_or("") {
                "In" => format!("{k} in ({})", vals.join(",")),
                "NotIn" => format!("{k} notin ({})", vals.join(",")),
                "Exists" => k.clone(),
                "DoesNotExist" => format!("!{k}"),
                _ => continue,
            };
            terms.push((k, t));
        }
    }
    terms.sort();
    terms.into_iter().map(|(_, t)| t).collect::<Vec<_>>().join(",")
}
