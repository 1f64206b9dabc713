//! ReplicationControllers, the ReplicaSet's core/v1 ancestor: reconciled by the
//! ReplicaSet controller itself, through a view of each one as the ReplicaSet it behaves
//! as (its selector is a plain label map), as kube's replication manager does.

use super::replicaset::PodOwner;
use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetSpec, ReplicaSetStatus};
use k8s_openapi::api::core::v1::{ReplicationController, ReplicationControllerStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

impl PodOwner for ReplicationController {
    const ACTOR: &'static str = "replication-controller";

    fn as_replica_set(&self) -> ReplicaSet {
        let spec = self.spec.clone().unwrap_or_default();
        let st = self.status.clone();
        ReplicaSet {
            metadata: self.metadata.clone(),
            spec: ReplicaSetSpec {
                replicas: spec.replicas,
                min_ready_seconds: spec.min_ready_seconds,
                selector: LabelSelector { match_labels: spec.selector, match_expressions: None },
                template: spec.template,
            },
            status: st.map(|s| ReplicaSetStatus {
                replicas: s.replicas,
                fully_labeled_replicas: s.fully_labeled_replicas,
                ready_replicas: s.ready_replicas,
                available_replicas: s.available_replicas,
                observed_generation: s.observed_generation,
                conditions: None,
                terminating_replicas: None,
            }),
        }
    }

    fn set_status(&mut self, st: &ReplicaSetStatus) {
        let conditions = self.status.as_ref().and_then(|s| s.conditions.clone());
        self.status = Some(ReplicationControllerStatus {
            replicas: st.replicas,
            fully_labeled_replicas: st.fully_labeled_replicas,
            ready_replicas: st.ready_replicas,
            available_replicas: st.available_replicas,
            observed_generation: st.observed_generation,
            conditions,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controllers::replicaset::{reconcile_as, Action};
    use k8s_openapi::api::core::v1::{PodTemplateSpec, ReplicationControllerSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    #[test]
    fn a_replication_controller_makes_pods_it_owns() {
        let labels: std::collections::BTreeMap<String, String> = [("app".to_string(), "web".to_string())].into();
        let rc = ReplicationController {
            metadata: ObjectMeta { name: Some("web".into()), namespace: Some("demo".into()), uid: Some("rc-uid".into()), ..Default::default() },
            spec: Some(ReplicationControllerSpec {
                replicas: Some(2),
                selector: Some(labels.clone()),
                template: Some(PodTemplateSpec { metadata: Some(ObjectMeta { labels: Some(labels.clone()), ..Default::default() }), spec: Some(Default::default()) }),
                ..Default::default()
            }),
            status: None,
        };
        let view = rc.as_replica_set();
        assert_eq!(view.spec.selector.match_labels, Some(labels));
        let mut n = 0;
        let actions = reconcile_as(("v1", "ReplicationController"), &view, &[], true, &mut || {
            n += 1;
            format!("web-{n}")
        });
        let creates: Vec<_> = actions.iter().filter_map(|a| if let Action::Create(p) = a { Some(p) } else { None }).collect();
        assert_eq!(creates.len(), 2);
        let owner = &creates[0].metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!((owner.api_version.as_str(), owner.kind.as_str(), owner.uid.as_str()), ("v1", "ReplicationController", "rc-uid"));
        let Some(Action::Status(st)) = actions.last() else { panic!("{actions:?}") };
        let mut rc = rc;
        rc.set_status(st);
        assert_eq!(rc.as_replica_set().status.as_ref(), Some(st), "the status round-trips, so it is not rewritten");
    }
}
