//! ControllerRevisions, as the DaemonSet and StatefulSet controllers keep them (kube's
//! controller/history): one per distinct pod template, named `<owner>-<hash>`, numbered
//! in the order the templates were current, so `kubectl rollout history/undo` can find
//! them and pods can say which template they came from (`controller-revision-hash`).

use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

pub const REVISION_HASH_LABEL: &str = "controller-revision-hash";

const ALPHANUMS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// kube's `rand.SafeEncodeString(fmt.Sprint(fnv32a(template)))`: a short, stable name
/// part that changes whenever the template does.
pub fn template_hash(template: &PodTemplateSpec) -> String {
    let bytes = serde_json::to_vec(template).unwrap_or_default();
    let mut h: u32 = 0x811c9dc5;
    for b in bytes {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x01000193);
    }
    h.to_string().bytes().map(|b| ALPHANUMS[b as usize % ALPHANUMS.len()] as char).collect()
}

pub fn hash_of(r: &ControllerRevision) -> Option<&str> {
    r.metadata.labels.as_ref().and_then(|l| l.get(REVISION_HASH_LABEL)).map(String::as_str)
}

/// The template a revision holds (its data is `{"spec": {"template": …}}`, as kube's).
pub fn template_of(r: &ControllerRevision) -> Option<PodTemplateSpec> {
    serde_json::from_value(r.data.0.pointer("/spec/template")?.clone()).ok()
}

pub struct Owner<'a> {
    pub kind: &'a str,
    pub meta: &'a ObjectMeta,
}

pub fn new_revision(owner: &Owner, template: &PodTemplateSpec, hash: &str, revision: i64) -> ControllerRevision {
    let name = owner.meta.name.clone().unwrap_or_default();
    let mut labels = template.metadata.as_ref().and_then(|m| m.labels.clone()).unwrap_or_default();
    labels.insert(REVISION_HASH_LABEL.into(), hash.into());
    ControllerRevision {
        metadata: ObjectMeta {
            name: Some(format!("{name}-{hash}")),
            namespace: owner.meta.namespace.clone(),
            labels: Some(labels),
            owner_references: Some(vec![OwnerReference {
                api_version: "apps/v1".into(),
                kind: owner.kind.into(),
                name,
                uid: owner.meta.uid.clone().unwrap_or_default(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            }]),
            ..Default::default()
        },
        data: RawExtension(serde_json::json!({"spec": {"template": template}})),
        revision: Some(revision),
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum RevisionAction {
    Create(ControllerRevision),
    /// A template current again (a rollback): its revision moves to the top.
    Renumber { name: String, revision: i64 },
    Delete(String),
}

/// The revision of the current template (made or renumbered when needed), and what to
/// prune beyond `history` old ones, never one that `keep` names (hashes pods still use).
pub fn sync(owner: &Owner, template: &PodTemplateSpec, revisions: &[ControllerRevision], history: usize, keep: &[&str]) -> (String, i64, Vec<RevisionAction>) {
    let hash = template_hash(template);
    let top = revisions.iter().filter_map(|r| r.revision).max().unwrap_or(0);
    let mut out = Vec::new();
    let current = revisions.iter().find(|r| hash_of(r) == Some(hash.as_str()));
    let number = match current {
        Some(r) if r.revision == Some(top) => top,
        Some(r) => {
            out.push(RevisionAction::Renumber { name: r.metadata.name.clone().unwrap_or_default(), revision: top + 1 });
            top + 1
        }
        None => {
            out.push(RevisionAction::Create(new_revision(owner, template, &hash, top + 1)));
            top + 1
        }
    };
    let mut old: Vec<&ControllerRevision> = revisions.iter().filter(|r| hash_of(r) != Some(hash.as_str()) && !hash_of(r).is_some_and(|h| keep.contains(&h))).collect();
    old.sort_by_key(|r| r.revision.unwrap_or(0));
    if old.len() > history {
        for r in &old[..old.len() - history] {
            out.push(RevisionAction::Delete(r.metadata.name.clone().unwrap_or_default()));
        }
    }
    (hash, number, out)
}

/// An int-or-percent against `total`, rounding up or down, as kube's intstr does.
pub fn scaled(v: Option<&IntOrString>, total: i32, round_up: bool, default: i32) -> i32 {
    match v {
        Some(IntOrString::Int(i)) => *i,
        Some(IntOrString::String(s)) => {
            let pct = s.trim_end_matches('%').parse::<i32>().unwrap_or(0);
            if round_up { (total * pct + 99) / 100 } else { total * pct / 100 }
        }
        None => default,
    }
}

pub async fn execute(client: &bus::Client, ns: Option<&str>, a: RevisionAction) {
    let res = match &a {
        RevisionAction::Create(r) => client.create(r).await.map(drop).or_else(|e| if e.is_already_exists() { Ok(()) } else { Err(e.to_string()) }),
        RevisionAction::Renumber { name, revision } => {
            let ok = super::update_with_retry::<ControllerRevision, _>(client, ns, name, |r| r.revision = Some(*revision)).await;
            if ok { Ok(()) } else { Err("renumbering failed".into()) }
        }
        RevisionAction::Delete(name) => client.delete::<ControllerRevision>(ns, name, None).await.map(drop).or_else(|e| if e.is_not_found() { Ok(()) } else { Err(e.to_string()) }),
    };
    if let Err(e) = res {
        tracing::warn!(action = ?a, error = %e, "controller revision write failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Container, PodSpec};

    fn template(image: &str) -> PodTemplateSpec {
        PodTemplateSpec { metadata: None, spec: Some(PodSpec { containers: vec![Container { name: "c".into(), image: Some(image.into()), ..Default::default() }], ..Default::default() }) }
    }

    fn meta() -> ObjectMeta {
        ObjectMeta { name: Some("web".into()), namespace: Some("default".into()), uid: Some("u".into()), ..Default::default() }
    }

    #[test]
    fn a_new_template_gets_the_next_revision_and_a_rollback_is_renumbered() {
        let m = meta();
        let owner = Owner { kind: "DaemonSet", meta: &m };
        let (h1, n1, a) = sync(&owner, &template("a"), &[], 10, &[]);
        assert_eq!(n1, 1);
        let RevisionAction::Create(r1) = &a[0] else { panic!("{a:?}") };
        assert_eq!(r1.metadata.name.as_deref(), Some(format!("web-{h1}").as_str()));
        assert_eq!(template_of(r1), Some(template("a")));
        let (h2, n2, a) = sync(&owner, &template("b"), std::slice::from_ref(r1), 10, &[]);
        assert_ne!(h1, h2);
        assert_eq!(n2, 2);
        let RevisionAction::Create(r2) = &a[0] else { panic!("{a:?}") };
        let (_, n, a) = sync(&owner, &template("a"), &[r1.clone(), r2.clone()], 10, &[]);
        assert_eq!((n, a), (3, vec![RevisionAction::Renumber { name: format!("web-{h1}"), revision: 3 }]));
    }

    #[test]
    fn history_beyond_the_limit_is_pruned_unless_pods_use_it() {
        let m = meta();
        let owner = Owner { kind: "StatefulSet", meta: &m };
        let revs: Vec<ControllerRevision> = ["a", "b", "c"].iter().enumerate().map(|(i, img)| new_revision(&owner, &template(img), &template_hash(&template(img)), i as i64 + 1)).collect();
        let (_, _, a) = sync(&owner, &template("d"), &revs, 1, &[]);
        let deleted: Vec<&RevisionAction> = a.iter().filter(|x| matches!(x, RevisionAction::Delete(_))).collect();
        assert_eq!(deleted.len(), 2);
        let ha = template_hash(&template("a"));
        let (_, _, a) = sync(&owner, &template("d"), &revs, 1, &[ha.as_str()]);
        assert_eq!(a.iter().filter(|x| matches!(x, RevisionAction::Delete(_))).count(), 1);
    }

    #[test]
    fn percentages_round_as_kube_does() {
        assert_eq!(scaled(Some(&IntOrString::String("25%".into())), 5, false, 1), 1);
        assert_eq!(scaled(Some(&IntOrString::String("25%".into())), 5, true, 1), 2);
        assert_eq!(scaled(None, 5, true, 1), 1);
    }
}
