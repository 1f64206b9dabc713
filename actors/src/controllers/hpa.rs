//! The HorizontalPodAutoscaler controller (autoscaling/v2, resource metrics): every sync
//! period it reads each target's scale, the usage the node agents published for the
//! target's pods, and sets the replicas kube's replica calculator would (the usage ratio
//! against the target, a 10% tolerance, missing metrics assumed against the direction of
//! the change, unready pods left out of a scale-up), stabilised over the scale-down window
//! and clamped to [minReplicas, maxReplicas]. The calculation is pure; the actor a shell.

use super::owned::{key_of, Cache};
use super::{events, ControllerMsg};
use actix::prelude::*;
use bus::informer::InformerEvent;
use bus::usage::UsageCache;
use bus::Client;
use k8s_openapi::api::autoscaling::v2::{
    HorizontalPodAutoscaler, HorizontalPodAutoscalerCondition, HorizontalPodAutoscalerStatus, MetricSpec, MetricStatus, MetricValueStatus, ResourceMetricStatus,
};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

const ACTOR: &str = "horizontal-pod-autoscaler";
/// kube's --horizontal-pod-autoscaler-tolerance.
pub const TOLERANCE: f64 = 0.1;
/// kube's default scale-down stabilization window.
pub const DOWN_WINDOW: Duration = Duration::from_secs(300);

/// One pod of the target, as the calculation needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct PodSample {
    pub name: String,
    pub ready: bool,
    /// Requests of the resource: millicores for cpu, bytes for memory.
    pub request: u64,
    /// Usage in the same units, when metrics exist for the pod.
    pub usage: Option<u64>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    /// Percent of the pods' requests.
    Utilization(i32),
    /// Per pod, in the resource's units.
    AverageValue(u64),
}

/// What one metric asks for, and what it measured (utilization %, average per pod).
#[derive(Debug, Clone, PartialEq)]
pub struct Proposal {
    pub replicas: i32,
    pub utilization: Option<i32>,
    pub average: u64,
}

/// The replica calculator for one resource metric.
pub fn propose(target: &Target, current: i32, pods: &[PodSample]) -> Result<Proposal, String> {
    let with: Vec<&PodSample> = pods.iter().filter(|p| p.usage.is_some()).collect();
    if with.is_empty() {
        return Err("no metrics returned from resource metrics API".into());
    }
    if matches!(target, Target::Utilization(_)) && with.iter().any(|p| p.request == 0) {
        return Err("missing request for the resource on a pod of the target".into());
    }
    let ratio_of = |ps: &[(u64, u64)]| -> f64 {
        let usage: u64 = ps.iter().map(|p| p.0).sum();
        match target {
            Target::Utilization(t) => {
                let req: u64 = ps.iter().map(|p| p.1).sum();
                (usage as f64 * 100.0 / req.max(1) as f64) / (*t).max(1) as f64
            }
            Target::AverageValue(v) => usage as f64 / ps.len().max(1) as f64 / (*v).max(1) as f64,
        }
    };
    // Ready pods with metrics decide the direction.
    let ready: Vec<(u64, u64)> = with.iter().filter(|p| p.ready).map(|p| (p.usage.unwrap_or(0), p.request)).collect();
    let measured: Vec<(u64, u64)> = with.iter().map(|p| (p.usage.unwrap_or(0), p.request)).collect();
    let usage: u64 = measured.iter().map(|p| p.0).sum();
    let req: u64 = measured.iter().map(|p| p.1).sum();
    let utilization = matches!(target, Target::Utilization(_)).then(|| (usage * 100 / req.max(1)) as i32);
    let average = usage / measured.len() as u64;
    let basis = if ready.is_empty() { &measured } else { &ready };
    let ratio = ratio_of(basis);
    let missing: Vec<&PodSample> = pods.iter().filter(|p| p.usage.is_none() || !p.ready).collect();
    let replicas = if missing.is_empty() {
        if (ratio - 1.0).abs() <= TOLERANCE { current } else { (ratio * basis.len() as f64).ceil() as i32 }
    } else {
        // Pods without figures (or not ready) count as using all they asked for when
        // scaling down, nothing when scaling up: the change is never made bigger by them.
        let mut all: Vec<(u64, u64)> = basis.clone();
        for p in &missing {
            let full = match target {
                Target::Utilization(t) => p.request * (*t).max(0) as u64 / 100,
                Target::AverageValue(v) => *v,
            };
            all.push((if ratio < 1.0 { full } else { 0 }, p.request));
        }
        let again = ratio_of(&all);
        if (again - 1.0).abs() <= TOLERANCE || (ratio < 1.0) != (again < 1.0) {
            current
        } else {
            (again * all.len() as f64).ceil() as i32
        }
    };
    Ok(Proposal { replicas, utilization, average })
}

/// kube's default scale-up limit per period: double, or four more, whichever is more.
pub fn scale_up_limit(current: i32) -> i32 {
    (current * 2).max(current + 4)
}

/// The replicas to set: the recommendation stabilised (a scale-down takes the highest
/// recommendation of the window), limited, and clamped to [min, max]; with the reason a
/// clamp gives (ScalingLimited).
pub fn settle(current: i32, desired: i32, window: &[i32], min: i32, max: i32) -> (i32, Option<&'static str>) {
    let mut want = if desired < current { window.iter().copied().chain([desired]).max().unwrap_or(desired).min(current) } else { desired };
    want = want.min(scale_up_limit(current.max(1)));
    if want > max {
        return (max, Some("TooManyReplicas"));
    }
    if want < min {
        return (min, Some("TooFewReplicas"));
    }
    (want, None)
}

fn metric_target(m: &MetricSpec) -> Result<(String, Target), String> {
    let r = m.resource.as_ref().filter(|_| m.type_ == "Resource").ok_or_else(|| format!("metric type {} is not supported (only Resource metrics are)", m.type_))?;
    let t = &r.target;
    let target = match (t.type_.as_str(), t.average_utilization, t.average_value.as_ref()) {
        ("Utilization", Some(u), _) => Target::Utilization(u),
        ("AverageValue", _, Some(q)) => {
            let v = if r.name == "cpu" { schema::quantity::cpu_millis(&q.0) } else { schema::quantity::value(&q.0) };
            Target::AverageValue(v.ok_or_else(|| format!("invalid averageValue {}", q.0))?)
        }
        _ => return Err(format!("invalid target for resource {}", r.name)),
    };
    Ok((r.name.clone(), target))
}

fn cond(ty: &str, ok: bool, reason: &str, message: String, prev: &HorizontalPodAutoscalerStatus) -> HorizontalPodAutoscalerCondition {
    let status = if ok { "True" } else { "False" };
    let old = prev.conditions.iter().flatten().find(|c| c.type_ == ty);
    let same = old.is_some_and(|c| c.status == status && c.reason.as_deref() == Some(reason));
    HorizontalPodAutoscalerCondition {
        type_: ty.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message),
        last_transition_time: if same { old.and_then(|c| c.last_transition_time.clone()) } else { Some(schema::object::now()) },
        observed_generation: None,
    }
}

/// One sync of one HPA: the replicas to set (if they change) and the status to write.
pub fn reconcile(hpa: &HorizontalPodAutoscaler, current: i32, pods_by_metric: &dyn Fn(&str) -> Vec<PodSample>, window: &[i32]) -> (Option<i32>, HorizontalPodAutoscalerStatus, Option<String>) {
    let spec = hpa.spec.clone();
    let prev = hpa.status.clone().unwrap_or_default();
    let (min, max) = (spec.min_replicas.unwrap_or(1), spec.max_replicas);
    let mut best: Option<(i32, String)> = None;
    let mut current_metrics = Vec::new();
    let mut failure = None;
    for m in spec.metrics.iter().flatten() {
        let (name, target) = match metric_target(m) {
            Ok(x) => x,
            Err(e) => {
                failure = Some(("InvalidMetricSourceType", e));
                continue;
            }
        };
        match propose(&target, current, &pods_by_metric(&name)) {
            Ok(p) => {
                let average = if name == "cpu" { format!("{}m", p.average) } else { p.average.to_string() };
                current_metrics.push(MetricStatus {
                    type_: "Resource".into(),
                    resource: Some(ResourceMetricStatus { name: name.clone(), current: MetricValueStatus { average_utilization: p.utilization, average_value: Some(Quantity(average)), value: None } }),
                    ..Default::default()
                });
                let why = match target {
                    Target::Utilization(_) => format!("{name} resource utilization (percentage of request)"),
                    Target::AverageValue(_) => format!("{name} resource"),
                };
                if best.as_ref().is_none_or(|(r, _)| p.replicas > *r) {
                    best = Some((p.replicas, why));
                }
            }
            Err(e) => failure = Some(("FailedGetResourceMetric", format!("the HPA was unable to compute the replica count: failed to get {name} utilization: {e}"))),
        }
    }
    let mut status = HorizontalPodAutoscalerStatus {
        current_replicas: Some(current),
        desired_replicas: current,
        current_metrics: Some(current_metrics).filter(|m| !m.is_empty()),
        last_scale_time: prev.last_scale_time.clone(),
        observed_generation: hpa.metadata.generation,
        conditions: None,
    };
    let able = cond("AbleToScale", true, "SucceededGetScale", "the HPA controller was able to get the target's current scale".into(), &prev);
    let Some((desired, why)) = best.filter(|_| failure.is_none()) else {
        let (reason, msg) = failure.unwrap_or(("FailedGetResourceMetric", "no metrics".into()));
        status.conditions = Some(vec![able, cond("ScalingActive", false, reason, msg, &prev)]);
        return (None, status, None);
    };
    let (set, limited) = settle(current, desired, window, min, max);
    let active = cond("ScalingActive", true, "ValidMetricFound", format!("the HPA was able to successfully calculate a replica count from {why}"), &prev);
    let limit = match limited {
        Some(r) => cond("ScalingLimited", true, r, format!("the desired replica count is {} than the {} replica count", if r == "TooManyReplicas" { "more" } else { "less" }, if r == "TooManyReplicas" { "maximum" } else { "minimum" }), &prev),
        None => cond("ScalingLimited", false, "DesiredWithinRange", "the desired count is within the acceptable range".into(), &prev),
    };
    status.conditions = Some(vec![able, active, limit]);
    status.desired_replicas = set;
    if set == current {
        return (None, status, None);
    }
    status.last_scale_time = Some(schema::object::now());
    let dir = if set > current { "above" } else { "below" };
    (Some(set), status, Some(format!("New size: {set}; reason: {why} {dir} target")))
}

pub struct HpaController {
    client: Client,
    usage: Arc<UsageCache>,
    sync_period: Duration,
    hpas: Cache<HorizontalPodAutoscaler>,
    pods: HashMap<String, Pod>,
    /// Recommendations of the last scale-down window, per HPA.
    recommendations: HashMap<String, Vec<(Instant, i32)>>,
    busy: HashSet<String>,
}

impl HpaController {
    pub fn new(client: Client, usage: Arc<UsageCache>, sync_period: Duration) -> Self {
        let client = client.named(ACTOR);
        HpaController { client, usage, sync_period, hpas: Cache::default(), pods: HashMap::new(), recommendations: HashMap::new(), busy: HashSet::new() }
    }

    fn sync_all(&mut self, ctx: &mut Context<Self>) {
        for key in self.hpas.keys() {
            if self.busy.contains(&key) {
                continue;
            }
            let Some(hpa) = self.hpas.get(&key).cloned() else { continue };
            let spec = hpa.spec.clone();
            let Some(res) = schema::registry::by_kind(spec.scale_target_ref.api_version.as_deref().unwrap_or(""), &spec.scale_target_ref.kind) else { continue };
            let ns = hpa.metadata.namespace.clone().unwrap_or_default();
            let pods: Vec<Pod> = self.pods.values().filter(|p| p.metadata.namespace.as_deref() == Some(ns.as_str())).cloned().collect();
            let usage: HashMap<(String, String), schema::metrics::PodUsage> = self.usage.pods().into_iter().filter(|(_, p)| p.namespace == ns).map(|(_, p)| ((p.name.clone(), p.uid.clone()), p)).collect();
            let window_len = spec.behavior.as_ref().and_then(|b| b.scale_down.as_ref()).and_then(|d| d.stabilization_window_seconds).map(|s| Duration::from_secs(s.max(0) as u64)).unwrap_or(DOWN_WINDOW);
            let now = Instant::now();
            let recs = self.recommendations.entry(key.clone()).or_default();
            recs.retain(|(at, _)| now.saturating_duration_since(*at) < window_len);
            let window: Vec<i32> = recs.iter().map(|(_, r)| *r).collect();
            self.busy.insert(key.clone());
            let (client, addr) = (self.client.clone(), ctx.address());
            tokio::spawn(async move {
                let recommended = sync_one(&client, &hpa, res, pods, usage, window).await;
                addr.do_send(Synced { key, recommended });
            });
        }
    }
}

/// Reads the target's scale and pods, decides, scales and writes the status; returns the
/// recommendation, for the stabilization window.
async fn sync_one(client: &Client, hpa: &HorizontalPodAutoscaler, res: &'static schema::registry::ResourceInfo, pods: Vec<Pod>, usage: HashMap<(String, String), schema::metrics::PodUsage>, window: Vec<i32>) -> Option<i32> {
    let spec = hpa.spec.clone();
    let ns = hpa.metadata.namespace.clone();
    let target = client.get_value(res, ns.as_deref(), &spec.scale_target_ref.name).await.ok().flatten()?;
    let current = target.pointer("/spec/replicas").and_then(serde_json::Value::as_i64).unwrap_or(1) as i32;
    let mut sel = target.pointer("/spec/selector").cloned();
    if res.kind == "ReplicationController" {
        sel = sel.map(|m| serde_json::json!({"matchLabels": m}));
    }
    let selector = crate::gateway::selectors::LabelSelector::parse(&schema::labels::label_selector_string(sel.as_ref())).ok()?;
    let mine: Vec<Pod> = pods
        .into_iter()
        .filter(|p| serde_json::to_value(p).is_ok_and(|v| selector.matches(&v)))
        .filter(|p| p.metadata.deletion_timestamp.is_none() && !matches!(p.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Failed" | "Succeeded")))
        .collect();
    let samples = |resource: &str| -> Vec<PodSample> {
        mine.iter()
            .map(|p| {
                let (cpu_req, mem_req) = schema::quantity::pod_requests(p);
                let u = usage.get(&(p.metadata.name.clone().unwrap_or_default(), p.metadata.uid.clone().unwrap_or_default()));
                let used = u.map(|u| if resource == "cpu" { u.cpu_nanocores() / 1_000_000 } else { u.containers.iter().map(|c| c.memory_bytes).sum() });
                PodSample { name: p.metadata.name.clone().unwrap_or_default(), ready: super::replicaset::is_ready(p), request: if resource == "cpu" { cpu_req } else { mem_req }, usage: used }
            })
            .collect()
    };
    let (scale_to, status, event) = reconcile(hpa, current, &samples, &window);
    if let Some(n) = scale_to {
        let mut v = target.clone();
        v["spec"]["replicas"] = serde_json::json!(n);
        match client.update_value(res, v).await {
            Ok(_) => {
                if let Some(msg) = event {
                    events::record(client, events::event(events::reference(hpa), "Normal", "SuccessfulRescale", &msg, ACTOR));
                }
            }
            Err(e) => {
                events::record(client, events::event(events::reference(hpa), "Warning", "FailedRescale", &format!("New size: {n}; error: {e}"), ACTOR));
                return None;
            }
        }
    }
    super::update_with_retry::<HorizontalPodAutoscaler, _>(client, ns.as_deref(), hpa.metadata.name.as_deref().unwrap_or(""), |cur| {
        if cur.metadata.uid == hpa.metadata.uid {
            cur.status = Some(status.clone());
        }
    })
    .await;
    Some(status.desired_replicas)
}

#[derive(Message)]
#[rtype(result = "()")]
struct Synced {
    key: String,
    recommended: Option<i32>,
}

impl Actor for HpaController {
    type Context = Context<Self>;
    fn started(&mut self, ctx: &mut Context<Self>) {
        // With no autoscalers a tick is not handling anything (an idle cluster stays flat).
        ctx.run_interval(self.sync_period, |act, ctx| {
            if !act.hpas.keys().is_empty() {
                bus::metrics::handle(ACTOR, || act.sync_all(ctx))
            }
        });
    }
}

impl Handler<Synced> for HpaController {
    type Result = ();
    fn handle(&mut self, m: Synced, _: &mut Context<Self>) {
        bus::metrics::handle(ACTOR, || {
            self.busy.remove(&m.key);
            if let Some(r) = m.recommended {
                self.recommendations.entry(m.key).or_default().push((Instant::now(), r));
            }
        })
    }
}

impl StreamHandler<InformerEvent<HorizontalPodAutoscaler>> for HpaController {
    fn handle(&mut self, ev: InformerEvent<HorizontalPodAutoscaler>, _: &mut Context<Self>) {
        bus::metrics::handle(ACTOR, || {
            if let (_, Some(gone)) = self.hpas.apply(ev) {
                self.recommendations.remove(&gone);
            }
        })
    }
    fn finished(&mut self, _: &mut Context<Self>) {}
}

impl StreamHandler<InformerEvent<Pod>> for HpaController {
    fn handle(&mut self, ev: InformerEvent<Pod>, _: &mut Context<Self>) {
        bus::metrics::handle(ACTOR, || match ev {
            InformerEvent::Listed(items, _) => self.pods = items.into_iter().map(|p| (key_of(&p), p)).collect(),
            InformerEvent::Applied(p, _) => {
                self.pods.insert(key_of(&p), p);
            }
            InformerEvent::Deleted(p, _) => {
                self.pods.remove(&key_of(&p));
            }
        })
    }
    fn finished(&mut self, _: &mut Context<Self>) {}
}

impl Handler<ControllerMsg> for HpaController {
    type Result = ();
    fn handle(&mut self, m: ControllerMsg, ctx: &mut Context<Self>) {
        if let ControllerMsg::Stop = m {
            ctx.stop();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(usage: Option<u64>, request: u64) -> PodSample {
        PodSample { name: "p".into(), ready: true, request, usage }
    }

    #[test]
    fn scales_by_the_usage_ratio_outside_the_tolerance() {
        // 2 pods at 100% of a 50% target: 4.
        let p = propose(&Target::Utilization(50), 2, &[pod(Some(100), 100), pod(Some(100), 100)]).unwrap();
        assert_eq!((p.replicas, p.utilization, p.average), (4, Some(100), 100));
        // 54% against 50% is within 10%: stays.
        assert_eq!(propose(&Target::Utilization(50), 2, &[pod(Some(54), 100), pod(Some(54), 100)]).unwrap().replicas, 2);
        // Average value: 300m per pod against 100m.
        assert_eq!(propose(&Target::AverageValue(100), 1, &[pod(Some(300), 0)]).unwrap().replicas, 3);
    }

    #[test]
    fn missing_metrics_never_enlarge_the_change() {
        // Scaling down: the pod without figures counts as at target, so less comes off.
        let p = propose(&Target::Utilization(50), 4, &[pod(Some(10), 100), pod(Some(10), 100), pod(Some(10), 100), pod(None, 100)]).unwrap();
        assert_eq!(p.replicas, 2);
        assert!(propose(&Target::Utilization(50), 1, &[pod(None, 100)]).is_err());
        assert!(propose(&Target::Utilization(50), 1, &[pod(Some(10), 0)]).unwrap_err().contains("missing request"));
    }

    #[test]
    fn scale_down_is_stabilised_and_everything_clamped() {
        // A recommendation of 5 within the window holds a drop to 2 at 5.
        assert_eq!(settle(5, 2, &[5, 3], 1, 10), (5, None));
        assert_eq!(settle(5, 2, &[], 1, 10), (2, None));
        assert_eq!(settle(2, 20, &[], 1, 10), (6, None), "up by at most max(double, +4) per sync");
        assert_eq!(settle(4, 20, &[], 1, 5), (5, Some("TooManyReplicas")));
        assert_eq!(settle(2, 1, &[], 2, 5), (2, Some("TooFewReplicas")));
    }
}
