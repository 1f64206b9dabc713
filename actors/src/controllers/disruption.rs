//! The disruption controller: keeps each PodDisruptionBudget's status (expectedPods,
//! currentHealthy, desiredHealthy, disruptionsAllowed and the DisruptionAllowed
//! condition) equal to what its pods are now, so `kubectl get pdb` and drain's users see
//! the truth. The arithmetic is `schema::disruption`'s, which the eviction subresource
//! shares; `reconcile` is pure, the actor a shell.

use super::owned::{key_of, Cache};
use super::queue::WorkQueue;
use super::ControllerMsg;
use crate::gateway::selectors::LabelSelector;
use actix::prelude::*;
use bus::informer::InformerEvent;
use bus::Client;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use schema::labels::label_selector_string;
use serde_json::Value;
use std::collections::{BTreeSet, HashMap};

const ACTOR: &str = "disruption-controller";

/// The pods `pdb` covers: policy/v1 reads an empty selector as every pod of the
/// namespace and a missing one as none.
pub fn covered<'a>(pdb: &Value, pods: &'a [Value]) -> Vec<&'a Value> {
    let Some(sel) = pdb.pointer("/spec/selector").filter(|s| !s.is_null()) else { return Vec::new() };
    let Ok(sel) = LabelSelector::parse(&label_selector_string(Some(sel))) else { return Vec::new() };
    pods.iter().filter(|p| sel.matches(p)).collect()
}

/// The status the budget should show over `pods` (its namespace's pods, as values).
pub fn reconcile(pdb: &PodDisruptionBudget, pods: &[Value], now: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time) -> Option<PodDisruptionBudgetStatus> {
    let v = serde_json::to_value(pdb).ok()?;
    let mine: Vec<Value> = covered(&v, pods).into_iter().cloned().collect();
    let prev = pdb.status.clone().unwrap_or_default();
    let (budget, allowed_reason) = match schema::disruption::budget(&v, &mine) {
        Ok(b) => (b, if b.disruptions_allowed > 0 { "SufficientPods" } else { "InsufficientPods" }),
        Err(_) => (schema::disruption::Budget { expected_pods: mine.len() as i64, current_healthy: 0, desired_healthy: 0, disruptions_allowed: 0 }, "SyncFailed"),
    };
    let status = if budget.disruptions_allowed > 0 { "True" } else { "False" };
    let old = prev.conditions.iter().flatten().find(|c| c.type_ == "DisruptionAllowed");
    let same = old.is_some_and(|c| c.status == status && c.reason == allowed_reason);
    let cond = Condition {
        type_: "DisruptionAllowed".into(),
        status: status.into(),
        reason: allowed_reason.into(),
        message: String::new(),
        observed_generation: pdb.metadata.generation,
        last_transition_time: if same { old.map(|c| c.last_transition_time.clone()).unwrap_or_else(|| now.clone()) } else { now.clone() },
    };
    let next = PodDisruptionBudgetStatus {
        current_healthy: Some(budget.current_healthy as i32),
        desired_healthy: Some(budget.desired_healthy as i32),
        disruptions_allowed: Some(budget.disruptions_allowed as i32),
        expected_pods: Some(budget.expected_pods as i32),
        observed_generation: pdb.metadata.generation,
        conditions: Some(vec![cond]),
        disrupted_pods: prev.disrupted_pods.clone(),
    };
    (pdb.status.as_ref() != Some(&next)).then_some(next)
}

pub struct DisruptionController {
    client: Client,
    budgets: Cache<PodDisruptionBudget>,
    /// Pods by namespace, as values for the selector match.
    pods: HashMap<String, HashMap<String, Value>>,
    queue: WorkQueue,
}

impl DisruptionController {
    pub fn new(client: Client) -> Self {
        let client = client.named(ACTOR);
        DisruptionController { client, budgets: Cache::default(), pods: HashMap::new(), queue: WorkQueue::default() }
    }

    fn kick(&mut self, ctx: &mut Context<Self>) {
        if self.queue.arm() {
            ctx.notify(ControllerMsg::Process);
        }
    }

    /// Every budget of the namespaces given is looked at again.
    fn touch(&mut self, namespaces: BTreeSet<String>) {
        for k in self.budgets.keys() {
            if namespaces.iter().any(|ns| k.starts_with(&format!("{ns}/"))) {
                self.queue.add(k);
            }
        }
    }

    fn process(&mut self, ctx: &mut Context<Self>) {
        let now = schema::object::now();
        for key in self.queue.take_armed() {
            let Some(pdb) = self.budgets.get(&key).cloned() else {
                self.queue.done(&key);
                continue;
            };
            let ns = pdb.metadata.namespace.clone().unwrap_or_default();
            let pods: Vec<Value> = self.pods.get(&ns).map(|m| m.values().cloned().collect()).unwrap_or_default();
            let Some(st) = reconcile(&pdb, &pods, &now) else {
                self.queue.done(&key);
                continue;
            };
            let client = self.client.clone();
            let addr = ctx.address();
            tokio::spawn(async move {
                super::update_with_retry::<PodDisruptionBudget, _>(&client, pdb.metadata.namespace.as_deref(), pdb.metadata.name.as_deref().unwrap_or(""), |cur| {
                    if cur.metadata.uid == pdb.metadata.uid {
                        cur.status = Some(st.clone());
                    }
                })
                .await;
                addr.do_send(ControllerMsg::Done(key));
            });
        }
    }
}

impl Actor for DisruptionController {
    type Context = Context<Self>;
}

impl StreamHandler<InformerEvent<PodDisruptionBudget>> for DisruptionController {
    fn handle(&mut self, ev: InformerEvent<PodDisruptionBudget>, ctx: &mut Context<Self>) {
        bus::metrics::handle(ACTOR, || {
            let (requeue, _) = self.budgets.apply(ev);
            requeue.into_iter().for_each(|k| self.queue.add(k));
            self.kick(ctx);
        })
    }
    fn finished(&mut self, _: &mut Context<Self>) {}
}

impl StreamHandler<InformerEvent<Pod>> for DisruptionController {
    fn handle(&mut self, ev: InformerEvent<Pod>, ctx: &mut Context<Self>) {
        bus::metrics::handle(ACTOR, || {
            let mut touched = BTreeSet::new();
            let put = |pods: &mut HashMap<String, HashMap<String, Value>>, p: &Pod| {
                let ns = p.metadata.namespace.clone().unwrap_or_default();
                if let Ok(v) = serde_json::to_value(p) {
                    pods.entry(ns.clone()).or_default().insert(key_of(p), v);
                }
                ns
            };
            match ev {
                InformerEvent::Listed(items, _) => {
                    touched.extend(self.pods.keys().cloned());
                    self.pods.clear();
                    for p in &items {
                        touched.insert(put(&mut self.pods, p));
                    }
                }
                InformerEvent::Applied(p, _) => {
                    touched.insert(put(&mut self.pods, &p));
                }
                InformerEvent::Deleted(p, _) => {
                    let ns = p.metadata.namespace.clone().unwrap_or_default();
                    if let Some(m) = self.pods.get_mut(&ns) {
                        m.remove(&key_of(&p));
                    }
                    touched.insert(ns);
                }
            }
            self.touch(touched);
            self.kick(ctx);
        })
    }
    fn finished(&mut self, _: &mut Context<Self>) {}
}

impl Handler<ControllerMsg> for DisruptionController {
    type Result = ();
    fn handle(&mut self, m: ControllerMsg, ctx: &mut Context<Self>) {
        bus::metrics::handle(ACTOR, || {
            match m {
                ControllerMsg::Process => self.process(ctx),
                ControllerMsg::Done(k) => self.queue.done(&k),
                ControllerMsg::Stop => ctx.stop(),
            }
            self.kick(ctx);
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(name: &str, app: &str, ready: bool) -> Value {
        json!({"metadata": {"name": name, "namespace": "demo", "labels": {"app": app}},
               "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}})
    }

    fn pdb(spec: Value) -> PodDisruptionBudget {
        serde_json::from_value(json!({"metadata": {"name": "web", "namespace": "demo", "generation": 2}, "spec": spec})).unwrap()
    }

    #[test]
    fn counts_the_healthy_pods_it_covers() {
        let pods = vec![pod("a", "web", true), pod("b", "web", true), pod("c", "web", false), pod("x", "other", true)];
        let st = reconcile(&pdb(json!({"minAvailable": 1, "selector": {"matchLabels": {"app": "web"}}})), &pods, &schema::object::now()).unwrap();
        assert_eq!((st.expected_pods, st.current_healthy, st.desired_healthy, st.disruptions_allowed), (Some(3), Some(2), Some(1), Some(1)));
        let c = &st.conditions.unwrap()[0];
        assert_eq!((c.status.as_str(), c.reason.as_str()), ("True", "SufficientPods"));
        assert_eq!(st.observed_generation, Some(2));
    }

    #[test]
    fn no_disruption_allowed_at_the_minimum_and_unchanged_status_is_not_rewritten() {
        let pods = vec![pod("a", "web", true)];
        let mut b = pdb(json!({"maxUnavailable": 0, "selector": {"matchLabels": {"app": "web"}}}));
        let st = reconcile(&b, &pods, &schema::object::now()).unwrap();
        assert_eq!(st.disruptions_allowed, Some(0));
        assert_eq!(st.conditions.as_ref().unwrap()[0].reason, "InsufficientPods");
        b.status = Some(st);
        assert_eq!(reconcile(&b, &pods, &schema::object::now()), None);
    }
}
