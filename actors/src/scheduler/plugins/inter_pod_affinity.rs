//! InterPodAffinity: where other pods run decides where this one may go. The pod's
//! required affinity wants a topology domain (nodes sharing a `topologyKey` label value)
//! holding matching pods, its required anti-affinity a domain without them, and existing
//! pods' anti-affinity keeps it out of theirs; preferred terms (both ways) score domains.

use super::selectors::label_selector_matches;
use super::{PodInfo, Reason, Snapshot};
use crate::scheduler::cache::{Labels, NodeInfo};
use k8s_openapi::api::core::v1::{Pod, PodAffinityTerm};
use std::collections::HashMap;

pub const ERR_EXISTING_ANTI: &str = "node(s) didn't satisfy existing pods anti-affinity rules";
pub const ERR_AFFINITY: &str = "node(s) didn't match pod affinity rules";
pub const ERR_ANTI_AFFINITY: &str = "node(s) didn't match pod anti-affinity rules";
/// kube-scheduler's hardPodAffinityWeight default: an existing pod's required affinity
/// to this pod counts this much in scoring.
const HARD_POD_AFFINITY_WEIGHT: i64 = 1;

type Domain = (String, String);

fn ns_of(p: &Pod) -> &str {
    p.metadata.namespace.as_deref().unwrap_or("default")
}

/// Whether `term`, written on a pod of namespace `owner_ns`, selects pod `q`.
pub fn term_matches(term: &PodAffinityTerm, owner_ns: &str, q: &Pod, namespaces: &HashMap<String, Labels>) -> bool {
    let q_ns = ns_of(q);
    let listed = term.namespaces.as_deref().unwrap_or_default();
    let ns_ok = match &term.namespace_selector {
        None => if listed.is_empty() { q_ns == owner_ns } else { listed.iter().any(|n| n == q_ns) },
        Some(sel) => listed.iter().any(|n| n == q_ns) || label_selector_matches(sel, namespaces.get(q_ns).unwrap_or(&Labels::new())),
    };
    let Some(sel) = &term.label_selector else { return false };
    ns_ok && label_selector_matches(sel, q.metadata.labels.as_ref().unwrap_or(&Labels::new()))
}

struct Terms<'a> {
    required_affinity: &'a [PodAffinityTerm],
    required_anti: &'a [PodAffinityTerm],
    preferred: Vec<(&'a PodAffinityTerm, i64)>,
}

fn terms(p: &Pod) -> Terms<'_> {
    let a = p.spec.as_ref().and_then(|s| s.affinity.as_ref());
    let aff = a.and_then(|a| a.pod_affinity.as_ref());
    let anti = a.and_then(|a| a.pod_anti_affinity.as_ref());
    let mut preferred: Vec<(&PodAffinityTerm, i64)> = aff.and_then(|x| x.preferred_during_scheduling_ignored_during_execution.as_ref()).into_iter().flatten().map(|w| (&w.pod_affinity_term, w.weight as i64)).collect();
    preferred.extend(anti.and_then(|x| x.preferred_during_scheduling_ignored_during_execution.as_ref()).into_iter().flatten().map(|w| (&w.pod_affinity_term, -(w.weight as i64))));
    Terms {
        required_affinity: aff.and_then(|x| x.required_during_scheduling_ignored_during_execution.as_deref()).unwrap_or_default(),
        required_anti: anti.and_then(|x| x.required_during_scheduling_ignored_during_execution.as_deref()).unwrap_or_default(),
        preferred,
    }
}

fn domain(n: &NodeInfo, key: &str) -> Option<Domain> {
    n.labels.get(key).map(|v| (key.to_string(), v.clone()))
}

/// What the filter needs, computed once per attempt from every node's pods (PreFilter).
pub struct PreState {
    existing_anti: HashMap<Domain, i64>,
    affinity: HashMap<Domain, i64>,
    anti: HashMap<Domain, i64>,
    /// No pod anywhere matches the pod's affinity terms.
    no_affinity_match_anywhere: bool,
    /// The pod matches its own affinity terms (so the first of a group may go anywhere).
    matches_itself: bool,
}

impl PreState {
    pub fn new(pod: &PodInfo, snap: &Snapshot) -> PreState {
        let me = &pod.pod;
        let my_ns = ns_of(me);
        let mine = terms(me);
        let mut s = PreState { existing_anti: HashMap::new(), affinity: HashMap::new(), anti: HashMap::new(), no_affinity_match_anywhere: true, matches_itself: false };
        for n in snap.nodes {
            for q in &n.pods {
                for t in terms(q).required_anti {
                    if term_matches(t, ns_of(q), me, snap.namespaces) {
                        if let Some(d) = domain(n, &t.topology_key) {
                            *s.existing_anti.entry(d).or_default() += 1;
                        }
                    }
                }
                if !mine.required_affinity.is_empty() && mine.required_affinity.iter().all(|t| term_matches(t, my_ns, q, snap.namespaces)) {
                    s.no_affinity_match_anywhere = false;
                    for t in mine.required_affinity {
                        if let Some(d) = domain(n, &t.topology_key) {
                            *s.affinity.entry(d).or_default() += 1;
                        }
                    }
                }
                for t in mine.required_anti {
                    if term_matches(t, my_ns, q, snap.namespaces) {
                        if let Some(d) = domain(n, &t.topology_key) {
                            *s.anti.entry(d).or_default() += 1;
                        }
                    }
                }
            }
        }
        s.matches_itself = mine.required_affinity.iter().all(|t| term_matches(t, my_ns, me, snap.namespaces));
        s
    }

    /// The filter, in kube's order (own affinity, own anti-affinity, existing pods'
    /// anti-affinity); its error says whether preemption could help (only the pod's own
    /// affinity cannot be helped by removing pods).
    pub fn filter(&self, pod: &PodInfo, n: &NodeInfo) -> Result<(), (Reason, bool)> {
        let hit = |m: &HashMap<Domain, i64>, key: &str| domain(n, key).is_some_and(|d| m.get(&d).copied().unwrap_or(0) > 0);
        let mine = terms(&pod.pod);
        let affinity_ok = mine.required_affinity.iter().all(|t| hit(&self.affinity, &t.topology_key));
        let first_of_group = self.no_affinity_match_anywhere && self.matches_itself && mine.required_affinity.iter().all(|t| n.labels.contains_key(&t.topology_key));
        if !affinity_ok && !first_of_group {
            return Err((ERR_AFFINITY.into(), false));
        }
        if mine.required_anti.iter().any(|t| hit(&self.anti, &t.topology_key)) {
            return Err((ERR_ANTI_AFFINITY.into(), true));
        }
        if n.labels.iter().any(|(k, v)| self.existing_anti.get(&(k.clone(), v.clone())).copied().unwrap_or(0) > 0) {
            return Err((ERR_EXISTING_ANTI.into(), true));
        }
        Ok(())
    }
}

/// Raw scores per node name: the pod's preferred (anti-)affinity to pods in each node's
/// domains, and existing pods' preferred terms and required affinity towards this pod.
pub fn scores(pod: &PodInfo, snap: &Snapshot, feasible: &[&NodeInfo]) -> HashMap<String, i64> {
    let me = &pod.pod;
    let my_ns = ns_of(me);
    let mine = terms(me);
    let mut by_domain: HashMap<Domain, i64> = HashMap::new();
    for n in snap.nodes {
        for q in &n.pods {
            for (t, w) in &mine.preferred {
                if term_matches(t, my_ns, q, snap.namespaces) {
                    if let Some(d) = domain(n, &t.topology_key) {
                        *by_domain.entry(d).or_default() += w;
                    }
                }
            }
            let theirs = terms(q);
            let symmetric = theirs.preferred.iter().copied().chain(theirs.required_affinity.iter().map(|t| (t, HARD_POD_AFFINITY_WEIGHT)));
            for (t, w) in symmetric {
                if term_matches(t, ns_of(q), me, snap.namespaces) {
                    if let Some(d) = domain(n, &t.topology_key) {
                        *by_domain.entry(d).or_default() += w;
                    }
                }
            }
        }
    }
    feasible.iter().map(|n| (n.name.clone(), n.labels.iter().map(|(k, v)| by_domain.get(&(k.clone(), v.clone())).copied().unwrap_or(0)).sum())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::plugins::testing::{node, pod_labeled, running};
    use serde_json::json;

    fn host(n: &str) -> NodeInfo {
        node(n).labeled(&[("kubernetes.io/hostname", n), ("zone", if n == "n3" { "b" } else { "a" })])
    }

    fn term(app: &str, key: &str) -> serde_json::Value {
        json!({"labelSelector": {"matchLabels": {"app": app}}, "topologyKey": key})
    }

    fn verdicts(p: &PodInfo, nodes: &[NodeInfo]) -> Vec<Result<(), (Reason, bool)>> {
        let ns = HashMap::new();
        let snap = Snapshot { nodes, namespaces: &ns };
        let st = PreState::new(p, &snap);
        nodes.iter().map(|n| st.filter(p, n)).collect()
    }

    #[test]
    fn required_anti_affinity_spreads_replicas_by_hostname() {
        let spec = json!({"affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [term("web", "kubernetes.io/hostname")]}}});
        let nodes = vec![host("n1").with_pod(running("web-1", json!({"app": "web"}), spec.clone())), host("n2")];
        let p = pod_labeled(&[("app", "web")], spec.clone());
        assert_eq!(verdicts(&p, &nodes), vec![Err((ERR_ANTI_AFFINITY.into(), true)), Ok(())]);
        // The existing pod's own anti-affinity keeps an unlabelled-selector pod out too.
        let other = pod_labeled(&[("app", "web")], json!({}));
        assert_eq!(verdicts(&other, &nodes)[0], Err((ERR_EXISTING_ANTI.into(), true)));
        let unrelated = pod_labeled(&[("app", "db")], json!({}));
        assert!(verdicts(&unrelated, &nodes).iter().all(|v| v.is_ok()));
    }

    #[test]
    fn required_affinity_wants_a_domain_with_a_match_unless_it_is_the_first() {
        let spec = json!({"affinity": {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [term("cache", "zone")]}}});
        let nodes = vec![host("n1").with_pod(running("cache-1", json!({"app": "cache"}), json!({}))), host("n2"), host("n3")];
        let p = pod_labeled(&[("app", "web")], spec.clone());
        assert_eq!(verdicts(&p, &nodes), vec![Ok(()), Ok(()), Err((ERR_AFFINITY.into(), false))], "n2 shares zone a with the cache");
        // Nothing matches anywhere, and the pod matches its own term: it may go anywhere.
        let first = pod_labeled(&[("app", "cache")], spec);
        let empty = vec![host("n1"), host("n3")];
        assert!(verdicts(&first, &empty).iter().all(|v| v.is_ok()));
    }

    #[test]
    fn namespaces_scope_the_terms() {
        let q = running("x", json!({"app": "web"}), json!({}));
        let mut q2 = (*q).clone();
        q2.metadata.namespace = Some("other".into());
        let t: PodAffinityTerm = serde_json::from_value(term("web", "zone")).unwrap();
        let labels: HashMap<String, Labels> = [("other".to_string(), [("team".to_string(), "a".to_string())].into())].into();
        assert!(term_matches(&t, "default", &q, &labels));
        assert!(!term_matches(&t, "default", &q2, &labels), "own namespace only by default");
        let by_sel: PodAffinityTerm = serde_json::from_value(json!({"labelSelector": {"matchLabels": {"app": "web"}}, "topologyKey": "zone", "namespaceSelector": {"matchLabels": {"team": "a"}}})).unwrap();
        assert!(term_matches(&by_sel, "default", &q2, &labels));
        let listed: PodAffinityTerm = serde_json::from_value(json!({"labelSelector": {"matchLabels": {"app": "web"}}, "topologyKey": "zone", "namespaces": ["other"]})).unwrap();
        assert!(term_matches(&listed, "default", &q2, &labels) && !term_matches(&listed, "default", &q, &labels));
    }

    #[test]
    fn preferred_terms_score_domains() {
        let spec = json!({"affinity": {
            "podAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 10, "podAffinityTerm": term("cache", "zone")}]},
            "podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 5, "podAffinityTerm": term("web", "kubernetes.io/hostname")}]}
        }});
        let nodes = vec![host("n1").with_pod(running("c", json!({"app": "cache"}), json!({}))).with_pod(running("w", json!({"app": "web"}), json!({}))), host("n2"), host("n3")];
        let p = pod_labeled(&[("app", "web")], spec);
        let ns = HashMap::new();
        let snap = Snapshot { nodes: &nodes, namespaces: &ns };
        let all: Vec<&NodeInfo> = nodes.iter().collect();
        let s = scores(&p, &snap, &all);
        assert_eq!((s["n1"], s["n2"], s["n3"]), (5, 10, 0));
    }
}
