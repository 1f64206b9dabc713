//! Label and node selector matching as the scheduler's plugins need it (the apimachinery
//! `labels.Selector` and `nodeaffinity.NodeSelector` semantics), shared by node affinity,
//! inter-pod affinity, topology spreading and preemption's PDB check.

use crate::scheduler::cache::Labels;
use k8s_openapi::api::core::v1::{NodeSelectorRequirement, NodeSelectorTerm};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

/// A LabelSelector against labels: matchLabels and every matchExpression must hold; an
/// empty selector matches everything (the caller treats a missing one as nothing).
pub fn label_selector_matches(sel: &LabelSelector, labels: &Labels) -> bool {
    let by_label = sel.match_labels.iter().flatten().all(|(k, v)| labels.get(k) == Some(v));
    let by_expr = sel.match_expressions.iter().flatten().all(|e| {
        let have = labels.get(&e.key);
        let values = e.values.as_deref().unwrap_or_default();
        match e.operator.as_str() {
            "In" => have.is_some_and(|v| values.contains(v)),
            "NotIn" => have.is_none_or(|v| !values.contains(v)),
            "Exists" => have.is_some(),
            "DoesNotExist" => have.is_none(),
            _ => false,
        }
    });
    by_label && by_expr
}

fn requirement_matches(r: &NodeSelectorRequirement, value: Option<&String>) -> bool {
    let values = r.values.as_deref().unwrap_or_default();
    let number = |s: &str| s.parse::<i64>().ok();
    match r.operator.as_str() {
        "In" => value.is_some_and(|v| values.contains(v)),
        "NotIn" => value.is_none_or(|v| !values.contains(v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        // Gt/Lt take exactly one integer value; anything else matches nothing.
        "Gt" | "Lt" => {
            let (Some(have), [want]) = (value.and_then(|v| number(v)), values) else { return false };
            let Some(want) = number(want) else { return false };
            if r.operator == "Gt" { have > want } else { have < want }
        }
        _ => false,
    }
}

/// One NodeSelectorTerm: its matchExpressions over the node's labels and its matchFields
/// over `metadata.name` all hold. A term with neither matches no node, as in kube.
pub fn node_term_matches(term: &NodeSelectorTerm, labels: &Labels, node_name: &str) -> bool {
    let exprs = term.match_expressions.as_deref().unwrap_or_default();
    let fields = term.match_fields.as_deref().unwrap_or_default();
    if exprs.is_empty() && fields.is_empty() {
        return false;
    }
    let name = node_name.to_string();
    exprs.iter().all(|r| requirement_matches(r, labels.get(&r.key)))
        && fields.iter().all(|r| r.key == "metadata.name" && requirement_matches(r, Some(&name)))
}

/// Terms are ORed.
pub fn node_terms_match(terms: &[NodeSelectorTerm], labels: &Labels, node_name: &str) -> bool {
    terms.iter().any(|t| node_term_matches(t, labels, node_name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn labels(v: &[(&str, &str)]) -> Labels {
        v.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn label_selectors() {
        let sel: LabelSelector = serde_json::from_value(json!({"matchLabels": {"app": "web"}, "matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["db"]}]})).unwrap();
        assert!(label_selector_matches(&sel, &labels(&[("app", "web")])));
        assert!(!label_selector_matches(&sel, &labels(&[("app", "web"), ("tier", "db")])));
        assert!(!label_selector_matches(&sel, &labels(&[])));
        assert!(label_selector_matches(&LabelSelector::default(), &labels(&[])), "empty matches all");
    }

    #[test]
    fn node_selector_operators() {
        let term = |e: serde_json::Value| -> NodeSelectorTerm { serde_json::from_value(json!({"matchExpressions": [e]})).unwrap() };
        let l = labels(&[("zone", "a"), ("cores", "8")]);
        assert!(node_term_matches(&term(json!({"key": "zone", "operator": "In", "values": ["a", "b"]})), &l, "n1"));
        assert!(!node_term_matches(&term(json!({"key": "zone", "operator": "NotIn", "values": ["a"]})), &l, "n1"));
        assert!(node_term_matches(&term(json!({"key": "gpu", "operator": "DoesNotExist"})), &l, "n1"));
        assert!(node_term_matches(&term(json!({"key": "zone", "operator": "Exists"})), &l, "n1"));
        assert!(node_term_matches(&term(json!({"key": "cores", "operator": "Gt", "values": ["4"]})), &l, "n1"));
        assert!(!node_term_matches(&term(json!({"key": "cores", "operator": "Lt", "values": ["4"]})), &l, "n1"));
        assert!(!node_term_matches(&term(json!({"key": "cores", "operator": "Gt", "values": ["x"]})), &l, "n1"));
        let by_name: NodeSelectorTerm = serde_json::from_value(json!({"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n2"]}]})).unwrap();
        assert!(node_term_matches(&by_name, &l, "n2") && !node_term_matches(&by_name, &l, "n1"));
        assert!(!node_term_matches(&NodeSelectorTerm::default(), &l, "n1"), "an empty term matches nothing");
    }
}
