//! The scheduler's writes to the store: the binding (a CAS on the pod that sets its node
//! and PodScheduled=True), the PodScheduled=False report with its FailedScheduling event,
//! and preemption's nomination and graceful eviction of the victims.

use super::{BindResult, Binder};
use crate::controllers::{events, update_outcome, Outcome};
use bus::Client;
use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::{Pod, PodCondition};

pub(super) struct StoreBinder(pub(super) Client);

impl Binder for StoreBinder {
    fn bind(&self, pod: Pod, node: String) -> BoxFuture<'static, BindResult> {
        let c = self.0.clone();
        Box::pin(async move {
            super::volumes::pre_bind(&c, &pod, &node, &super::plugins::volume_binding::claim_names(&pod)).await;
            bind(&c, &pod, &node).await
        })
    }
    fn unschedulable(&self, pod: Pod, why: String) -> BoxFuture<'static, ()> {
        let c = self.0.clone();
        Box::pin(async move { mark_unschedulable(&c, &pod, &why).await })
    }
    fn preempt(&self, pod: Pod, node: String, victims: Vec<Pod>) -> BoxFuture<'static, ()> {
        let c = self.0.clone();
        Box::pin(async move { preempt(&c, &pod, &node, &victims).await })
    }
}

async fn bind(client: &Client, pod: &Pod, node: &str) -> BindResult {
    let ns = pod.metadata.namespace.as_deref();
    let name = pod.metadata.name.as_deref().unwrap_or("");
    let uid = pod.metadata.uid.clone();
    let seen = std::sync::Mutex::new(BindResult::Bound);
    let out = update_outcome::<Pod, _>(client, ns, name, |cur| {
        // Another pod of the same name, or someone else bound it: leave it.
        if cur.metadata.uid != uid {
            *seen.lock().unwrap() = BindResult::Gone;
            return;
        }
        if let Some(n) = cur.spec.as_ref().and_then(|s| s.node_name.clone()) {
            *seen.lock().unwrap() = BindResult::AlreadyBound(n);
            return;
        }
        *seen.lock().unwrap() = BindResult::Bound;
        if let Some(s) = cur.spec.as_mut() {
            s.node_name = Some(node.to_string());
        }
        let st = cur.status.get_or_insert_with(Default::default);
        let conds = st.conditions.get_or_insert_with(Vec::new);
        conds.retain(|c| c.type_ != "PodScheduled");
        conds.push(PodCondition { type_: "PodScheduled".into(), status: "True".into(), last_transition_time: Some(schema::object::now()), ..Default::default() });
    })
    .await;
    let seen = seen.into_inner().unwrap_or(BindResult::Failed);
    match out {
        Outcome::Written => {
            events::record(client, events::event(events::reference(pod), "Normal", "Scheduled", &format!("Successfully assigned {}/{name} to {node}", ns.unwrap_or("")), "default-scheduler"));
            BindResult::Bound
        }
        Outcome::Unchanged => seen,
        Outcome::Gone => BindResult::Gone,
        Outcome::Failed(e) => {
            tracing::warn!(pod = %name, error = %e, "binding failed");
            BindResult::Failed
        }
    }
}

/// Writes PodScheduled=False with the reasons, and a FailedScheduling event, only when the
/// reasons changed: a pod retried every few seconds must not grow the event list forever.
async fn mark_unschedulable(client: &Client, pod: &Pod, why: &str) {
    let ns = pod.metadata.namespace.as_deref();
    let name = pod.metadata.name.as_deref().unwrap_or("");
    let uid = pod.metadata.uid.clone();
    let out = update_outcome::<Pod, _>(client, ns, name, |cur| {
        if cur.metadata.uid != uid || cur.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some() {
            return;
        }
        let st = cur.status.get_or_insert_with(Default::default);
        let conds = st.conditions.get_or_insert_with(Vec::new);
        if conds.iter().any(|c| c.type_ == "PodScheduled" && c.message.as_deref() == Some(why)) {
            return;
        }
        conds.retain(|c| c.type_ != "PodScheduled");
        conds.push(PodCondition {
            type_: "PodScheduled".into(),
            status: "False".into(),
            reason: Some("Unschedulable".into()),
            message: Some(why.to_string()),
            last_transition_time: Some(schema::object::now()),
            ..Default::default()
        });
    })
    .await;
    if out == Outcome::Written {
        events::record(client, events::event(events::reference(pod), "Warning", "FailedScheduling", why, "default-scheduler"));
    }
}

/// DefaultPreemption's actions: the preemptor's `status.nominatedNodeName`, then each
/// victim gets a Preempted event and is deleted gracefully (its node agent stops it).
async fn preempt(client: &Client, pod: &Pod, node: &str, victims: &[Pod]) {
    let ns = pod.metadata.namespace.as_deref();
    let name = pod.metadata.name.as_deref().unwrap_or("");
    let uid = pod.metadata.uid.clone();
    let nominate = update_outcome::<Pod, _>(client, ns, name, |cur| {
        if cur.metadata.uid == uid && cur.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_none() {
            cur.status.get_or_insert_with(Default::default).nominated_node_name = Some(node.to_string());
        }
    })
    .await;
    if !nominate.ok() {
        // The preemptor went away or was bound meanwhile: no reason to evict anyone.
        return;
    }
    let by = uid.as_deref().unwrap_or("");
    for v in victims {
        events::record(client, events::event(events::reference(v), "Normal", "Preempted", &format!("Preempted by pod {by} on node {node}"), "default-scheduler"));
        crate::controllers::taint_eviction::mark_disruption_target(client, v, "PreemptionByScheduler", "default-scheduler: preempting to accommodate a higher priority pod").await;
        if let Err(e) = crate::controllers::delete_pod_gracefully(client, v).await {
            tracing::warn!(victim = ?v.metadata.name, error = %e, "deleting a preemption victim failed");
        }
    }
}

