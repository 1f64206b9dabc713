//! The Job controller: runs a Job's pods until enough succeed (`completions`, or one of a
//! work queue), at most `parallelism` at once, and fails it past `backoffLimit`, its
//! `activeDeadlineSeconds` or a `podFailurePolicy` rule. `reconcile` is pure (the clock is
//! passed in); the actor feeds it from caches and carries the actions out.
//!
//! Counting follows the pods that exist (kube's tracking before pod finalizers): a Job's
//! terminated pods stay until the Job goes, so what they say is what happened.

use super::expectations::Expectations;
use super::owned::{self, Cache, OwnedIndex};
use super::queue::WorkQueue;
use super::replicaset::{create_checked, is_ready, random_suffix, Created};
use super::{delete_pod_gracefully, events, ControllerMsg};
use actix::prelude::*;
use bus::informer::InformerEvent;
use bus::Client;
use k8s_openapi::api::batch::v1::{Job, JobCondition, JobStatus, PodFailurePolicyRule};
use k8s_openapi::api::core::v1::{EnvVar, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use tokio::time::Instant;

const ACTOR: &str = "job-controller";
pub const INDEX_KEY: &str = "batch.kubernetes.io/job-completion-index";
/// kube's DefaultJobPodFailureBackOff and MaxJobPodFailureBackOff.
const BACKOFF: Duration = Duration::from_secs(10);
const MAX_BACKOFF: Duration = Duration::from_secs(360);

#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Create(Pod),
    Delete(Pod),
    Status(JobStatus),
    /// A finished, failed or suspended Job tells why, once, as the real controller does.
    /// A `finishing` event is recorded only by the pass whose write ended the Job.
    Event { type_: &'static str, reason: &'static str, message: String, finishing: bool },
}

/// What one pass decided, and when to look again if nothing else happens first
/// (a failure backoff ending, the active deadline).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Plan {
    pub actions: Vec<Action>,
    pub requeue: Option<Duration>,
}

fn phase(p: &Pod) -> &str {
    p.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("Pending")
}

fn is_active(p: &Pod) -> bool {
    p.metadata.deletion_timestamp.is_none() && !matches!(phase(p), "Succeeded" | "Failed")
}

pub fn index_of(p: &Pod) -> Option<i32> {
    p.metadata.annotations.as_ref()?.get(INDEX_KEY)?.parse().ok()
}

fn condition(j: &Job, ty: &str) -> Option<JobCondition> {
    j.status.as_ref()?.conditions.as_ref()?.iter().find(|c| c.type_ == ty && c.status == "True").cloned()
}

/// The Job is over: Complete or Failed.
pub fn finished(j: &Job) -> Option<(String, Time)> {
    for ty in ["Complete", "Failed"] {
        if let Some(c) = condition(j, ty) {
            return Some((ty.to_string(), c.last_transition_time.unwrap_or_else(schema::object::now)));
        }
    }
    None
}

fn ts(t: jiff::Timestamp) -> Time {
    Time(jiff::Timestamp::from_second(t.as_second()).unwrap_or(t))
}

/// When the pod stopped, for the failure backoff: its containers' finish, else its start.
fn finished_at(p: &Pod) -> Option<jiff::Timestamp> {
    let st = p.status.as_ref()?;
    let ends = st.container_statuses.iter().flatten().filter_map(|c| c.state.as_ref()?.terminated.as_ref()?.finished_at.as_ref().map(|t| t.0));
    ends.max().or_else(|| st.start_time.as_ref().map(|t| t.0))
}

/// What the pod failure policy says about one failed pod: the first rule that matches
/// (its action and index), as kube evaluates them in order.
fn policy_match<'a>(rules: &'a [PodFailurePolicyRule], p: &Pod) -> Option<(usize, &'a PodFailurePolicyRule, String)> {
    for (i, r) in rules.iter().enumerate() {
        if let Some(req) = &r.on_exit_codes {
            let st = p.status.as_ref();
            let codes: Vec<(String, i32)> = st
                .into_iter()
                .flat_map(|s| s.container_statuses.iter().flatten())
                .filter(|c| req.container_name.as_ref().is_none_or(|n| *n == c.name))
                .filter_map(|c| Some((c.name.clone(), c.state.as_ref()?.terminated.as_ref()?.exit_code)))
                .filter(|(_, code)| *code != 0)
                .collect();
            let hit = codes.iter().find(|(_, code)| match req.operator.as_str() {
                "In" => req.values.contains(code),
                "NotIn" => !req.values.contains(code),
                _ => false,
            });
            if let Some((c, code)) = hit {
                let ns = p.metadata.namespace.as_deref().unwrap_or("");
                let name = p.metadata.name.as_deref().unwrap_or("");
                return Some((i, r, format!("Container {c} for pod {ns}/{name} failed with exit code {code} matching {} rule at index {i}", r.action)));
            }
        }
        for pat in r.on_pod_conditions.iter().flatten() {
            let conds = p.status.as_ref().and_then(|s| s.conditions.as_ref());
            let want = pat.status.as_deref().unwrap_or("True");
            if conds.is_some_and(|cs| cs.iter().any(|c| c.type_ == pat.type_ && c.status == want)) {
                let ns = p.metadata.namespace.as_deref().unwrap_or("");
                let name = p.metadata.name.as_deref().unwrap_or("");
                return Some((i, r, format!("Pod {ns}/{name} has condition {} matching {} rule at index {i}", pat.type_, r.action)));
            }
        }
    }
    None
}

/// "0-2,4": the real status' compressed list of completed indexes.
pub fn compress(ix: &BTreeSet<i32>) -> Option<String> {
    let mut out: Vec<String> = Vec::new();
    let mut run: Option<(i32, i32)> = None;
    for &i in ix {
        run = match run {
            Some((a, b)) if i == b + 1 => Some((a, i)),
            Some((a, b)) => {
                out.push(if a == b { a.to_string() } else { format!("{a}-{b}") });
                Some((i, i))
            }
            None => Some((i, i)),
        };
    }
    if let Some((a, b)) = run {
        out.push(if a == b { a.to_string() } else { format!("{a}-{b}") });
    }
    (!out.is_empty()).then(|| out.join(","))
}

/// The pod for one slot of the Job (an index in Indexed mode).
pub fn pod_for(j: &Job, index: Option<i32>, suffix: &str) -> Pod {
    let tpl = j.spec.as_ref().map(|s| s.template.clone()).unwrap_or_default();
    let mut meta = tpl.metadata.unwrap_or_default();
    let job_name = j.metadata.name.clone().unwrap_or_default();
    let mut spec = tpl.spec.unwrap_or_default();
    let base = match index {
        Some(i) => {
            meta.annotations.get_or_insert_with(BTreeMap::new).insert(INDEX_KEY.into(), i.to_string());
            meta.labels.get_or_insert_with(BTreeMap::new).insert(INDEX_KEY.into(), i.to_string());
            for c in spec.containers.iter_mut().chain(spec.init_containers.iter_mut().flatten()) {
                let env = c.env.get_or_insert_with(Vec::new);
                if !env.iter().any(|e| e.name == "JOB_COMPLETION_INDEX") {
                    env.push(EnvVar { name: "JOB_COMPLETION_INDEX".into(), value: Some(i.to_string()), value_from: None });
                }
            }
            if spec.hostname.is_none() {
                spec.hostname = Some(format!("{job_name}-{i}"));
            }
            format!("{job_name}-{i}-")
        }
        None => format!("{job_name}-"),
    };
    Pod {
        metadata: ObjectMeta {
            name: Some(super::generated_name(&base, suffix)),
            namespace: j.metadata.namespace.clone(),
            labels: meta.labels,
            annotations: meta.annotations,
            finalizers: None,
            owner_references: Some(vec![OwnerReference {
                api_version: "batch/v1".into(),
                kind: "Job".into(),
                name: job_name,
                uid: j.metadata.uid.clone().unwrap_or_default(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            }]),
            ..Default::default()
        },
        spec: Some(spec),
        status: None,
    }
}

fn new_condition(ty: &str, reason: &str, message: &str, now: jiff::Timestamp) -> JobCondition {
    JobCondition { type_: ty.into(), status: "True".into(), reason: Some(reason.into()), message: Some(message.into()), last_probe_time: Some(ts(now)), last_transition_time: Some(ts(now)) }
}

/// Decides what the Job needs. `settled` is false while its own creates or deletes are in
/// flight (the cache lags them): then only the status is brought up to date.
pub fn reconcile(j: &Job, owned: &[Pod], settled: bool, now: jiff::Timestamp, suffix: &mut dyn FnMut() -> String) -> Plan {
    let mut plan = Plan::default();
    let Some(spec) = j.spec.as_ref() else { return plan };
    if j.metadata.deletion_timestamp.is_some() {
        return plan;
    }
    let prev = j.status.clone().unwrap_or_default();
    let indexed = spec.completion_mode.as_deref() == Some("Indexed");
    let completions = spec.completions;
    let parallelism = spec.parallelism.unwrap_or(1).max(0);
    let backoff_limit = spec.backoff_limit.unwrap_or(6);
    let suspended = spec.suspend == Some(true);
    let on_failure = spec.template.spec.as_ref().and_then(|s| s.restart_policy.as_deref()) == Some("OnFailure");
    let rules = spec.pod_failure_policy.as_ref().map(|p| p.rules.clone()).unwrap_or_default();

    let active: Vec<&Pod> = owned.iter().filter(|p| is_active(p)).collect();
    let succeeded_pods: Vec<&Pod> = owned.iter().filter(|p| phase(p) == "Succeeded").collect();
    let failed_pods: Vec<&Pod> = owned.iter().filter(|p| phase(p) == "Failed").collect();
    let completed: BTreeSet<i32> = succeeded_pods.iter().filter_map(|p| index_of(p)).filter(|i| completions.is_none_or(|c| *i < c)).collect();
    let succeeded = if indexed { completed.len() as i32 } else { succeeded_pods.len() as i32 };

    // Failures the policy ignores do not count; one that says FailJob ends the Job.
    let mut counted_failures = 0;
    let mut fail_job: Option<String> = None;
    for p in &failed_pods {
        match policy_match(&rules, p) {
            Some((_, r, msg)) if r.action == "FailJob" => {
                fail_job.get_or_insert(msg);
                counted_failures += 1;
            }
            Some((_, r, _)) if r.action == "Ignore" => {}
            _ => counted_failures += 1,
        }
    }
    let restarts: i32 = if on_failure { active.iter().filter_map(|p| p.status.as_ref()).flat_map(|s| s.container_statuses.iter().flatten()).map(|c| c.restart_count).sum() } else { 0 };
    let failures = counted_failures + restarts;

    let start = prev.start_time.clone().or_else(|| (!suspended).then(|| ts(now)));
    let mut conditions = prev.conditions.clone().unwrap_or_default();
    let mut completion_time = prev.completion_time.clone();
    let was_finished = finished(j).is_some();
    let mut deadline_requeue = None;

    let mut end: Option<(&'static str, &'static str, String)> = None;
    if !was_finished {
        if let Some(msg) = fail_job {
            end = Some(("Failed", "PodFailurePolicy", msg));
        } else if failures > backoff_limit {
            end = Some(("Failed", "BackoffLimitExceeded", "Job has reached the specified backoff limit".into()));
        } else if let (Some(d), Some(s), false) = (spec.active_deadline_seconds, start.as_ref(), suspended) {
            let ran = now.as_second() - s.0.as_second();
            if ran >= d {
                end = Some(("Failed", "DeadlineExceeded", "Job was active longer than specified deadline".into()));
            } else {
                deadline_requeue = Some(Duration::from_secs((d - ran) as u64));
            }
        }
        if end.is_none() {
            let done = match completions {
                Some(c) => succeeded >= c,
                None => succeeded > 0 && active.is_empty(),
            };
            if done {
                end = Some(("Complete", "Completed", String::new()));
            }
        }
    }
    if let Some((ty, reason, msg)) = &end {
        if *ty == "Failed" {
            // The real status says FailureTarget first, then Failed once pods are gone.
            conditions.push(new_condition("FailureTarget", reason, msg, now));
            conditions.push(new_condition("Failed", reason, msg, now));
            plan.actions.push(Action::Event { type_: "Warning", reason, message: msg.clone(), finishing: true });
        } else {
            conditions.push(new_condition("SuccessCriteriaMet", reason, "Reached expected number of succeeded pods", now));
            conditions.push(new_condition("Complete", reason, "Reached expected number of succeeded pods", now));
            completion_time = Some(ts(now));
            plan.actions.push(Action::Event { type_: "Normal", reason: "Completed", message: "Job completed".into(), finishing: true });
        }
    }
    let over = was_finished || end.is_some();

    // The Suspended condition follows spec.suspend.
    let had_suspended = conditions.iter().any(|c| c.type_ == "Suspended" && c.status == "True");
    if !over && suspended != had_suspended {
        conditions.retain(|c| c.type_ != "Suspended");
        if suspended {
            conditions.push(new_condition("Suspended", "JobSuspended", "Job suspended", now));
            plan.actions.push(Action::Event { type_: "Normal", reason: "Suspended", message: "Job suspended".into(), finishing: false });
        } else {
            let mut c = new_condition("Suspended", "JobResumed", "Job resumed", now);
            c.status = "False".into();
            conditions.push(c);
            plan.actions.push(Action::Event { type_: "Normal", reason: "Resumed", message: "Job resumed".into(), finishing: false });
        }
    }

    if settled {
        if over || suspended {
            for p in &active {
                plan.actions.push(Action::Delete((*p).clone()));
            }
        } else {
            // A failed pod is replaced only after its backoff (10 s doubling, to 6 min).
            let wait = if counted_failures > 0 {
                let last = failed_pods.iter().filter_map(|p| finished_at(p)).max();
                let backoff = (BACKOFF * 2u32.saturating_pow((counted_failures - 1).min(10) as u32)).min(MAX_BACKOFF);
                last.map(|t| backoff.saturating_sub(Duration::from_secs((now.as_second() - t.as_second()).max(0) as u64))).unwrap_or_default()
            } else {
                Duration::ZERO
            };
            let want_active = match completions {
                Some(c) => parallelism.min(c - succeeded).max(0),
                None if succeeded > 0 => 0,
                None => parallelism,
            } as usize;
            if active.len() > want_active {
                let mut extra: Vec<&&Pod> = active.iter().collect();
                extra.sort_by_key(|p| (p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some(), is_ready(p), std::cmp::Reverse(p.metadata.creation_timestamp.as_ref().map(|t| t.0))));
                for p in extra.into_iter().take(active.len() - want_active) {
                    plan.actions.push(Action::Delete((**p).clone()));
                }
            } else if active.len() < want_active {
                if !wait.is_zero() {
                    plan.requeue = Some(wait);
                } else if indexed {
                    let running: BTreeSet<i32> = active.iter().filter_map(|p| index_of(p)).collect();
                    let free = (0..completions.unwrap_or(0)).filter(|i| !completed.contains(i) && !running.contains(i));
                    for i in free.take(want_active - active.len()) {
                        plan.actions.push(Action::Create(pod_for(j, Some(i), &suffix())));
                    }
                } else {
                    for _ in 0..(want_active - active.len()) {
                        plan.actions.push(Action::Create(pod_for(j, None, &suffix())));
                    }
                }
            }
        }
    }
    if !over && plan.requeue.is_none() {
        plan.requeue = deadline_requeue;
    }

    let status = JobStatus {
        active: Some(active.len() as i32).filter(|n| *n > 0),
        succeeded: Some(succeeded).filter(|n| *n > 0),
        failed: Some(failed_pods.len() as i32 + restarts).filter(|n| *n > 0),
        ready: Some(active.iter().filter(|p| is_ready(p)).count() as i32),
        terminating: Some(owned.iter().filter(|p| p.metadata.deletion_timestamp.is_some()).count() as i32),
        start_time: start,
        completion_time,
        completed_indexes: if indexed { compress(&completed) } else { None },
        conditions: Some(conditions).filter(|c| !c.is_empty()),
        failed_indexes: prev.failed_indexes.clone(),
        uncounted_terminated_pods: None,
    };
    if j.status.as_ref() != Some(&status) {
        plan.actions.push(Action::Status(status));
    }
    plan
}

pub struct JobController {
    client: Client,
    resync: Duration,
    jobs: Cache<Job>,
    pods: OwnedIndex<Pod>,
    expectations: Expectations,
    queue: WorkQueue,
}

impl JobController {
    pub fn new(client: Client) -> Self {
        let client = client.named(ACTOR);
        JobController { client, resync: super::RESYNC, jobs: Cache::default(), pods: OwnedIndex::new("Job"), expectations: Expectations::default(), queue: WorkQueue::default() }
    }

    pub fn resync_every(mut self, d: Duration) -> Self {
        self.resync = d;
        self
    }

    fn kick(&mut self, ctx: &mut Context<Self>) {
        if self.queue.arm() {
            ctx.notify(ControllerMsg::Process);
        }
    }

    fn put_pod(&mut self, p: Pod) {
        let name = p.metadata.name.clone().unwrap_or_default();
        let terminating = p.metadata.deletion_timestamp.is_some();
        for key in self.pods.put(p) {
            self.expectations.created(&key, &name);
            if terminating {
                self.expectations.deleted(&key, &name);
            }
            self.queue.add(key);
        }
    }

    fn process(&mut self, ctx: &mut Context<Self>) {
        for key in self.queue.take_armed() {
            let Some(j) = self.jobs.get(&key).cloned() else {
                self.expectations.forget(&key);
                self.queue.done(&key);
                continue;
            };
            let owned = self.pods.owned_by(j.metadata.uid.as_deref().unwrap_or(""));
            let now = Instant::now();
            let settled = self.expectations.satisfied(&key, now);
            let plan = reconcile(&j, &owned, settled, jiff::Timestamp::now(), &mut random_suffix);
            if let Some(after) = plan.requeue {
                let k = key.clone();
                ctx.run_later(after + Duration::from_millis(100), move |act, ctx| {
                    act.queue.add(k);
                    act.kick(ctx);
                });
            }
            if plan.actions.is_empty() {
                self.queue.done(&key);
                continue;
            }
            if settled {
                self.expectations.forget(&key);
            }
            let name = |p: &Pod| p.metadata.name.clone().unwrap_or_default();
            let creates: Vec<String> = plan.actions.iter().filter_map(|a| if let Action::Create(p) = a { Some(name(p)) } else { None }).collect();
            let deletes: Vec<String> = plan.actions.iter().filter_map(|a| if let Action::Delete(p) = a { Some(name(p)) } else { None }).collect();
            if !creates.is_empty() || !deletes.is_empty() {
                self.expectations.expect(&key, creates, deletes, now);
            }
            let client = self.client.clone();
            let addr = ctx.address();
            tokio::spawn(async move {
                let not_done = execute(&client, &j, plan.actions).await;
                addr.do_send(Finished { key, not_done });
            });
        }
    }
}

#[derive(Message)]
#[rtype(result = "()")]
struct Finished {
    key: String,
    not_done: Vec<String>,
}

async fn execute(client: &Client, j: &Job, actions: Vec<Action>) -> Vec<String> {
    let mut not_done = Vec::new();
    let record = |type_: &str, reason: &str, message: String| events::record(client, events::event(events::reference(j), type_, reason, &message, ACTOR));
    // The status goes first: whether this pass's write is the one that ended the Job
    // decides whether its finishing events are told (a pass on a lagging cache repeats
    // the decision, not the news).
    let mut ended_here = false;
    if let Some(st) = actions.iter().find_map(|a| if let Action::Status(s) = a { Some(s.clone()) } else { None }) {
        let ended = std::sync::atomic::AtomicBool::new(false);
        let out = super::update_outcome::<Job, _>(client, j.metadata.namespace.as_deref(), j.metadata.name.as_deref().unwrap_or(""), |cur| {
            if cur.metadata.uid != j.metadata.uid {
                return;
            }
            let mut st = st.clone();
            let was_over = finished(cur).is_some();
            if let Some(old) = cur.status.as_ref() {
                if was_over {
                    st.conditions = old.conditions.clone();
                    st.completion_time = old.completion_time.clone();
                }
                st.start_time = old.start_time.clone().or(st.start_time);
            }
            let probe = Job { status: Some(st.clone()), ..Default::default() };
            ended.store(!was_over && finished(&probe).is_some(), std::sync::atomic::Ordering::Relaxed);
            cur.status = Some(st);
        })
        .await;
        ended_here = out == super::Outcome::Written && ended.load(std::sync::atomic::Ordering::Relaxed);
    }
    for a in actions {
        match a {
            Action::Create(p) => {
                let name = p.metadata.name.clone().unwrap_or_default();
                match create_checked(client, &p).await {
                    Created::Yes => record("Normal", "SuccessfulCreate", format!("Created pod: {name}")),
                    Created::No(e) => {
                        record("Warning", "FailedCreate", format!("Error creating: {e}"));
                        not_done.push(name);
                    }
                    Created::Unknown(e) => tracing::warn!(pod = %name, error = %e, "pod create outcome unknown"),
                }
            }
            Action::Delete(p) => {
                let name = p.metadata.name.clone().unwrap_or_default();
                match delete_pod_gracefully(client, &p).await {
                    Ok(()) => record("Normal", "SuccessfulDelete", format!("Deleted pod: {name}")),
                    Err(e) => {
                        record("Warning", "FailedDelete", format!("Error deleting: {e}"));
                        not_done.push(name);
                    }
                }
            }
            Action::Status(_) => {}
            Action::Event { type_, reason, message, finishing } => {
                if !finishing || ended_here {
                    record(type_, reason, message)
                }
            }
        }
    }
    not_done
}

impl Actor for JobController {
    type Context = Context<Self>;
    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(self.resync, |act, ctx| {
            act.jobs.keys().into_iter().for_each(|k| act.queue.add(k));
            act.kick(ctx);
        });
    }
}

impl Handler<Finished> for JobController {
    type Result = ();
    fn handle(&mut self, m: Finished, ctx: &mut Context<Self>) {
        bus::metrics::handle(ACTOR, || {
            m.not_done.iter().for_each(|n| self.expectations.lower(&m.key, n));
            self.expectations.touch(&m.key, Instant::now());
            self.queue.done(&m.key);
            self.kick(ctx);
        })
    }
}

impl StreamHandler<InformerEvent<Job>> for JobController {
    fn handle(&mut self, ev: InformerEvent<Job>, ctx: &mut Context<Self>) {
        bus::metrics::handle(ACTOR, || {
            let (requeue, deleted) = self.jobs.apply(ev);
            requeue.into_iter().for_each(|k| self.queue.add(k));
            if let Some(k) = deleted {
                self.expectations.forget(&k);
            }
            self.kick(ctx);
        })
    }
    fn finished(&mut self, _: &mut Context<Self>) {}
}

impl StreamHandler<InformerEvent<Pod>> for JobController {
    fn handle(&mut self, ev: InformerEvent<Pod>, ctx: &mut Context<Self>) {
        bus::metrics::handle(ACTOR, || {
            match ev {
                InformerEvent::Listed(items, _) => {
                    self.pods.replace_all(Vec::new()).into_iter().for_each(|k| self.queue.add(k));
                    items.into_iter().for_each(|p| self.put_pod(p));
                }
                InformerEvent::Applied(p, _) => self.put_pod(p),
                InformerEvent::Deleted(p, _) => {
                    if let Some(key) = self.pods.remove(&owned::key_of(&p)) {
                        self.expectations.deleted(&key, p.metadata.name.as_deref().unwrap_or(""));
                        self.queue.add(key);
                    }
                }
            }
            self.kick(ctx);
        })
    }
    fn finished(&mut self, _: &mut Context<Self>) {}
}

impl Handler<ControllerMsg> for JobController {
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
    use k8s_openapi::api::batch::v1::{JobSpec, PodFailurePolicy, PodFailurePolicyOnExitCodesRequirement};
    use k8s_openapi::api::core::v1::{Container, ContainerState, ContainerStatus, ContainerStateTerminated, PodSpec, PodStatus, PodTemplateSpec};

    fn job(completions: Option<i32>, parallelism: i32) -> Job {
        Job {
            metadata: ObjectMeta { name: Some("pi".into()), namespace: Some("demo".into()), uid: Some("job-uid".into()), ..Default::default() },
            spec: Some(JobSpec {
                completions,
                parallelism: Some(parallelism),
                backoff_limit: Some(2),
                template: PodTemplateSpec { metadata: None, spec: Some(PodSpec { restart_policy: Some("Never".into()), containers: vec![Container { name: "c".into(), ..Default::default() }], ..Default::default() }) },
                ..Default::default()
            }),
            status: None,
        }
    }

    fn now() -> jiff::Timestamp {
        jiff::Timestamp::from_second(1_000_000).unwrap()
    }

    fn pod(j: &Job, name: &str, phase: &str) -> Pod {
        let mut p = pod_for(j, None, "x");
        p.metadata.name = Some(name.into());
        p.status = Some(PodStatus { phase: Some(phase.into()), ..Default::default() });
        p
    }

    fn exited(mut p: Pod, code: i32, at: i64) -> Pod {
        let st = p.status.get_or_insert_with(Default::default);
        st.container_statuses = Some(vec![ContainerStatus {
            name: "c".into(),
            state: Some(ContainerState { terminated: Some(ContainerStateTerminated { exit_code: code, finished_at: Some(Time(jiff::Timestamp::from_second(at).unwrap())), ..Default::default() }), ..Default::default() }),
            ..Default::default()
        }]);
        p
    }

    fn suffixes() -> impl FnMut() -> String {
        let mut i = 0;
        move || {
            i += 1;
            format!("s{i}")
        }
    }

    fn creates(p: &Plan) -> Vec<Pod> {
        p.actions.iter().filter_map(|a| if let Action::Create(p) = a { Some(p.clone()) } else { None }).collect()
    }

    fn status(p: &Plan) -> JobStatus {
        p.actions.iter().find_map(|a| if let Action::Status(s) = a { Some(s.clone()) } else { None }).expect("a status")
    }

    fn has_condition(st: &JobStatus, ty: &str, reason: &str) -> bool {
        st.conditions.iter().flatten().any(|c| c.type_ == ty && c.status == "True" && c.reason.as_deref() == Some(reason))
    }

    #[test]
    fn runs_parallelism_pods_until_completions_succeed() {
        let j = job(Some(3), 2);
        let p = reconcile(&j, &[], true, now(), &mut suffixes());
        assert_eq!(creates(&p).len(), 2);
        let owner = &creates(&p)[0].metadata.owner_references.clone().unwrap()[0];
        assert_eq!((owner.kind.as_str(), owner.uid.as_str()), ("Job", "job-uid"));
        // Two done, one to go: only one more pod.
        let pods = [pod(&j, "a", "Succeeded"), pod(&j, "b", "Succeeded")];
        let p = reconcile(&j, &pods, true, now(), &mut suffixes());
        assert_eq!(creates(&p).len(), 1);
        let pods = [pod(&j, "a", "Succeeded"), pod(&j, "b", "Succeeded"), pod(&j, "c", "Succeeded")];
        let p = reconcile(&j, &pods, true, now(), &mut suffixes());
        assert!(creates(&p).is_empty());
        let st = status(&p);
        assert!(has_condition(&st, "Complete", "Completed"), "{st:?}");
        assert_eq!((st.succeeded, st.completion_time.is_some()), (Some(3), true));
    }

    #[test]
    fn in_flight_creates_are_not_repeated() {
        let p = reconcile(&job(Some(3), 2), &[], false, now(), &mut suffixes());
        assert!(creates(&p).is_empty());
    }

    #[test]
    fn failures_past_the_backoff_limit_fail_the_job_and_stop_its_pods() {
        let j = job(Some(1), 1);
        let t = now().as_second();
        let pods = [exited(pod(&j, "a", "Failed"), 1, t - 100), exited(pod(&j, "b", "Failed"), 1, t - 50), exited(pod(&j, "c", "Failed"), 1, t - 5), pod(&j, "d", "Running")];
        let p = reconcile(&j, &pods, true, now(), &mut suffixes());
        let st = status(&p);
        assert!(has_condition(&st, "Failed", "BackoffLimitExceeded"), "{st:?}");
        assert!(p.actions.iter().any(|a| matches!(a, Action::Delete(p) if p.metadata.name.as_deref() == Some("d"))));
        assert!(creates(&p).is_empty());
    }

    #[test]
    fn a_failed_pod_is_replaced_after_its_backoff() {
        let j = job(Some(1), 1);
        let t = now().as_second();
        let pods = [exited(pod(&j, "a", "Failed"), 1, t - 4)];
        let p = reconcile(&j, &pods, true, now(), &mut suffixes());
        assert!(creates(&p).is_empty());
        assert_eq!(p.requeue, Some(Duration::from_secs(6)));
        let pods = [exited(pod(&j, "a", "Failed"), 1, t - 11)];
        assert_eq!(creates(&reconcile(&j, &pods, true, now(), &mut suffixes())).len(), 1);
    }

    #[test]
    fn indexed_pods_carry_their_index_and_fill_the_gaps() {
        let mut j = job(Some(3), 3);
        j.spec.as_mut().unwrap().completion_mode = Some("Indexed".into());
        let mut done = pod_for(&j, Some(1), "x");
        done.status = Some(PodStatus { phase: Some("Succeeded".into()), ..Default::default() });
        let p = reconcile(&j, &[done], true, now(), &mut suffixes());
        let made = creates(&p);
        let ix: Vec<i32> = made.iter().filter_map(index_of).collect();
        assert_eq!(ix, vec![0, 2]);
        assert_eq!(made[0].metadata.name.as_deref(), Some("pi-0-s1"));
        let env = &made[0].spec.as_ref().unwrap().containers[0].env.clone().unwrap();
        assert!(env.iter().any(|e| e.name == "JOB_COMPLETION_INDEX" && e.value.as_deref() == Some("0")));
        assert_eq!(made[0].spec.as_ref().unwrap().hostname.as_deref(), Some("pi-0"));
        assert_eq!(status(&p).completed_indexes.as_deref(), Some("1"));
    }

    #[test]
    fn completed_indexes_are_compressed() {
        assert_eq!(compress(&[0, 1, 2, 4, 6, 7].into_iter().collect()).as_deref(), Some("0-2,4,6-7"));
        assert_eq!(compress(&BTreeSet::new()), None);
    }

    #[test]
    fn the_active_deadline_fails_the_job() {
        let mut j = job(Some(1), 1);
        j.spec.as_mut().unwrap().active_deadline_seconds = Some(30);
        j.status = Some(JobStatus { start_time: Some(Time(jiff::Timestamp::from_second(now().as_second() - 10).unwrap())), ..Default::default() });
        let running = [pod(&j, "a", "Running")];
        let p = reconcile(&j, &running, true, now(), &mut suffixes());
        assert_eq!(p.requeue, Some(Duration::from_secs(20)));
        j.status.as_mut().unwrap().start_time = Some(Time(jiff::Timestamp::from_second(now().as_second() - 31).unwrap()));
        let p = reconcile(&j, &running, true, now(), &mut suffixes());
        assert!(has_condition(&status(&p), "Failed", "DeadlineExceeded"));
    }

    #[test]
    fn pod_failure_policy_ignores_and_fails_by_exit_code() {
        let mut j = job(Some(1), 1);
        j.spec.as_mut().unwrap().pod_failure_policy = Some(PodFailurePolicy {
            rules: vec![
                PodFailurePolicyRule { action: "Ignore".into(), on_exit_codes: Some(PodFailurePolicyOnExitCodesRequirement { container_name: None, operator: "In".into(), values: vec![3] }), on_pod_conditions: None },
                PodFailurePolicyRule { action: "FailJob".into(), on_exit_codes: Some(PodFailurePolicyOnExitCodesRequirement { container_name: Some("c".into()), operator: "In".into(), values: vec![42] }), on_pod_conditions: None },
            ],
        });
        let t = now().as_second() - 100;
        let ignored = [exited(pod(&j, "a", "Failed"), 3, t), exited(pod(&j, "b", "Failed"), 3, t), exited(pod(&j, "c", "Failed"), 3, t)];
        let p = reconcile(&j, &ignored, true, now(), &mut suffixes());
        assert_eq!(creates(&p).len(), 1, "ignored failures neither count nor back off");
        let fatal = [exited(pod(&j, "a", "Failed"), 42, t)];
        let st = status(&reconcile(&j, &fatal, true, now(), &mut suffixes()));
        assert!(has_condition(&st, "Failed", "PodFailurePolicy"), "{st:?}");
        let msg = st.conditions.unwrap().iter().find(|c| c.type_ == "Failed").unwrap().message.clone().unwrap();
        assert_eq!(msg, "Container c for pod demo/a failed with exit code 42 matching FailJob rule at index 1");
    }

    #[test]
    fn suspending_stops_the_pods_and_says_so() {
        let mut j = job(Some(2), 2);
        j.spec.as_mut().unwrap().suspend = Some(true);
        let p = reconcile(&j, &[pod(&j, "a", "Running")], true, now(), &mut suffixes());
        assert!(p.actions.iter().any(|a| matches!(a, Action::Delete(_))));
        assert!(creates(&p).is_empty());
        assert!(has_condition(&status(&p), "Suspended", "JobSuspended"));
    }

    #[test]
    fn a_work_queue_job_completes_when_one_succeeds_and_the_rest_end() {
        let j = job(None, 2);
        let p = reconcile(&j, &[pod(&j, "a", "Succeeded"), pod(&j, "b", "Running")], true, now(), &mut suffixes());
        assert!(creates(&p).is_empty());
        assert!(!has_condition(&status(&p), "Complete", "Completed"));
        let p = reconcile(&j, &[pod(&j, "a", "Succeeded"), pod(&j, "b", "Succeeded")], true, now(), &mut suffixes());
        assert!(has_condition(&status(&p), "Complete", "Completed"));
    }

    #[test]
    fn long_job_names_still_give_valid_pod_names() {
        let mut j = job(Some(1), 1);
        j.metadata.name = Some("j".repeat(63));
        let p = pod_for(&j, Some(7), "abcde");
        let name = p.metadata.name.unwrap();
        assert!(name.len() <= 63, "{name}");
        assert!(name.ends_with("abcde"));
    }
}
