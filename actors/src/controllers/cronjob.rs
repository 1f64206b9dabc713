//! The CronJob controller: makes a Job at each scheduled time (in the CronJob's time
//! zone), honours `concurrencyPolicy`, `startingDeadlineSeconds` and `suspend`, keeps the
//! history limits, and wakes for the next scheduled time instead of polling.
//! `reconcile` is pure (the clock is passed in); the actor is a shell.

use super::job::finished;
use super::owned::{Cache, OwnedIndex};
use super::queue::WorkQueue;
use super::{events, ControllerMsg};
use actix::prelude::*;
use bus::informer::InformerEvent;
use bus::Client;
use k8s_openapi::api::batch::v1::{CronJob, CronJobStatus, Job};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use std::collections::BTreeMap;
use std::time::Duration;

const ACTOR: &str = "cronjob-controller";
pub const SCHEDULED_AT: &str = "batch.kubernetes.io/cronjob-scheduled-timestamp";
/// kube gives up counting missed start times past this many and says so.
const MAX_MISSED: usize = 100;

#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    CreateJob(Job),
    DeleteJob { name: String, reason: &'static str },
    Status(CronJobStatus),
    Event { type_: &'static str, reason: &'static str, message: String },
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Plan {
    pub actions: Vec<Action>,
    /// When the next scheduled time comes.
    pub requeue: Option<Duration>,
}

fn job_ref(j: &Job) -> ObjectReference {
    ObjectReference {
        api_version: Some("batch/v1".into()),
        kind: Some("Job".into()),
        name: j.metadata.name.clone(),
        namespace: j.metadata.namespace.clone(),
        uid: j.metadata.uid.clone(),
        resource_version: j.metadata.resource_version.clone(),
        field_path: None,
    }
}

fn t(ts: jiff::Timestamp) -> Time {
    Time(ts)
}

/// The Job for scheduled time `at`: named `<cronjob>-<minutes since the epoch>` as the
/// real controller names them, so a time is never run twice.
pub fn job_for(cj: &CronJob, at: jiff::Timestamp) -> Job {
    let tpl = cj.spec.job_template.clone();
    let meta = tpl.metadata.unwrap_or_default();
    let mut annotations = meta.annotations.unwrap_or_default();
    annotations.insert(SCHEDULED_AT.into(), at.to_string());
    let name = cj.metadata.name.clone().unwrap_or_default();
    Job {
        metadata: ObjectMeta {
            name: Some(format!("{name}-{}", at.as_second() / 60)),
            namespace: cj.metadata.namespace.clone(),
            labels: meta.labels,
            annotations: Some(annotations),
            owner_references: Some(vec![OwnerReference {
                api_version: "batch/v1".into(),
                kind: "CronJob".into(),
                name,
                uid: cj.metadata.uid.clone().unwrap_or_default(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            }]),
            ..Default::default()
        },
        spec: tpl.spec,
        status: None,
    }
}

/// Decides what the CronJob needs, given the Jobs it owns and the time.
pub fn reconcile(cj: &CronJob, jobs: &[Job], now: jiff::Timestamp) -> Plan {
    let mut plan = Plan::default();
    let spec = &cj.spec;
    if cj.metadata.deletion_timestamp.is_some() {
        return plan;
    }
    let prev = cj.status.clone().unwrap_or_default();
    let mut status = prev.clone();
    let active: Vec<&Job> = jobs.iter().filter(|j| finished(j).is_none() && j.metadata.deletion_timestamp.is_none()).collect();
    for j in jobs {
        let was_active = prev.active.iter().flatten().any(|r| r.uid == j.metadata.uid);
        if let (true, Some((ty, _))) = (was_active, finished(j)) {
            plan.actions.push(Action::Event { type_: "Normal", reason: "SawCompletedJob", message: format!("Saw completed job: {}, condition: {ty}", j.metadata.name.as_deref().unwrap_or("")) });
        }
    }
    status.active = Some(active.iter().map(|j| job_ref(j)).collect::<Vec<_>>()).filter(|a| !a.is_empty());
    let last_success = jobs.iter().filter_map(|j| match finished(j) {
        Some((ty, at)) if ty == "Complete" => Some(j.status.as_ref().and_then(|s| s.completion_time.clone()).unwrap_or(at)),
        _ => None,
    });
    if let Some(ls) = last_success.max_by_key(|x| x.0) {
        if status.last_successful_time.as_ref().is_none_or(|p| p.0 < ls.0) {
            status.last_successful_time = Some(ls);
        }
    }

    // History: the newest N of each outcome stay.
    for (outcome, keep) in [("Complete", spec.successful_jobs_history_limit.unwrap_or(3)), ("Failed", spec.failed_jobs_history_limit.unwrap_or(1))] {
        let mut done: Vec<(&Job, Time)> = jobs.iter().filter_map(|j| finished(j).filter(|(ty, _)| ty == outcome).map(|(_, at)| (j, at))).collect();
        done.sort_by_key(|(j, at)| (std::cmp::Reverse(at.0), j.metadata.name.clone()));
        for (j, _) in done.into_iter().skip(keep.max(0) as usize) {
            plan.actions.push(Action::DeleteJob { name: j.metadata.name.clone().unwrap_or_default(), reason: "history" });
        }
    }

    let schedule = match schema::cron::parse(&spec.schedule) {
        Ok(s) => s,
        Err(e) => {
            plan.actions.push(Action::Event { type_: "Warning", reason: "UnparseableSchedule", message: format!("unparseable schedule: {:?} : {e}", spec.schedule) });
            return finish(cj, status, plan);
        }
    };
    let tz = match schema::cron::time_zone(spec.time_zone.as_deref()) {
        Ok(tz) => tz,
        Err(e) => {
            plan.actions.push(Action::Event { type_: "Warning", reason: "UnknownTimeZone", message: format!("invalid timeZone: {:?}: {e}", spec.time_zone.as_deref().unwrap_or("")) });
            return finish(cj, status, plan);
        }
    };
    let next_after_now = schedule.next(now, &tz);
    plan.requeue = next_after_now.map(|n| Duration::from_secs((n.as_second() - now.as_second()).max(0) as u64));
    if spec.suspend == Some(true) {
        return finish(cj, status, plan);
    }

    // The latest scheduled time that has come since the last run (or creation).
    let created = cj.metadata.creation_timestamp.as_ref().map(|c| c.0).unwrap_or(now);
    let mut earliest = prev.last_schedule_time.as_ref().map(|x| x.0).unwrap_or(created);
    if let Some(sds) = spec.starting_deadline_seconds {
        let floor = jiff::Timestamp::from_second(now.as_second() - sds).unwrap_or(now);
        earliest = earliest.max(floor);
    }
    let mut due = None;
    let mut missed = 0;
    let mut at = earliest;
    while let Some(n) = schedule.next(at, &tz) {
        if n > now {
            break;
        }
        due = Some(n);
        missed += 1;
        at = n;
        if missed == MAX_MISSED {
            plan.actions.push(Action::Event { type_: "Warning", reason: "TooManyMissedTimes", message: "too many missed start times. Set or decrease .spec.startingDeadlineSeconds or check clock skew".into() });
            // Only the newest missed time runs, as kube does: skip to the last day.
            let skip = jiff::Timestamp::from_second(now.as_second() - 86_400).unwrap_or(now);
            at = at.max(skip);
        }
    }
    let Some(due) = due else { return finish(cj, status, plan) };
    let job = job_for(cj, due);
    if jobs.iter().any(|j| j.metadata.name == job.metadata.name) {
        return finish(cj, status, plan);
    }
    if let Some(sds) = spec.starting_deadline_seconds {
        if now.as_second() - due.as_second() > sds {
            plan.actions.push(Action::Event { type_: "Warning", reason: "MissSchedule", message: format!("Missed scheduled time to start a job: {due}") });
            return finish(cj, status, plan);
        }
    }
    match spec.concurrency_policy.as_deref() {
        Some("Forbid") if !active.is_empty() => {
            plan.actions.push(Action::Event { type_: "Normal", reason: "JobAlreadyActive", message: "Not starting job because prior execution is running and concurrency policy is Forbid".into() });
            // Waits for the running Job; its end wakes this CronJob.
            return finish(cj, status, plan);
        }
        Some("Replace") => {
            for j in &active {
                plan.actions.push(Action::DeleteJob { name: j.metadata.name.clone().unwrap_or_default(), reason: "replace" });
            }
            status.active = None;
        }
        _ => {}
    }
    status.last_schedule_time = Some(t(due));
    plan.actions.push(Action::CreateJob(job));
    finish(cj, status, plan)
}

fn finish(cj: &CronJob, status: CronJobStatus, mut plan: Plan) -> Plan {
    if cj.status.as_ref().cloned().unwrap_or_default() != status {
        plan.actions.push(Action::Status(status));
    }
    plan
}

pub struct CronJobController {
    client: Client,
    resync: Duration,
    cronjobs: Cache<CronJob>,
    jobs: OwnedIndex<Job>,
    queue: WorkQueue,
    /// Timers already set per key, so a pass does not stack a new one each time.
    timers: BTreeMap<String, SpawnHandle>,
}

impl CronJobController {
    pub fn new(client: Client) -> Self {
        let client = client.named(ACTOR);
        CronJobController { client, resync: super::RESYNC, cronjobs: Cache::default(), jobs: OwnedIndex::new("CronJob"), queue: WorkQueue::default(), timers: BTreeMap::new() }
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

    fn process(&mut self, ctx: &mut Context<Self>) {
        for key in self.queue.take_armed() {
            let Some(cj) = self.cronjobs.get(&key).cloned() else {
                if let Some(h) = self.timers.remove(&key) {
                    ctx.cancel_future(h);
                }
                self.queue.done(&key);
                continue;
            };
            let jobs = self.jobs.owned_by(cj.metadata.uid.as_deref().unwrap_or(""));
            let plan = reconcile(&cj, &jobs, jiff::Timestamp::now());
            if let Some(after) = plan.requeue {
                if let Some(h) = self.timers.remove(&key) {
                    ctx.cancel_future(h);
                }
                let k = key.clone();
                // A little past the minute, so "now" is surely at or after it.
                let h = ctx.run_later(after + Duration::from_millis(200), move |act, ctx| {
                    act.timers.remove(&k);
                    act.queue.add(k);
                    act.kick(ctx);
                });
                self.timers.insert(key.clone(), h);
            }
            if plan.actions.is_empty() {
                self.queue.done(&key);
                continue;
            }
            let client = self.client.clone();
            let addr = ctx.address();
            tokio::spawn(async move {
                execute(&client, &cj, plan.actions).await;
                addr.do_send(ControllerMsg::Done(key));
            });
        }
    }
}

async fn execute(client: &Client, cj: &CronJob, actions: Vec<Action>) {
    let ns = cj.metadata.namespace.as_deref();
    let record = |type_: &str, reason: &str, message: String| events::record(client, events::event(events::reference(cj), type_, reason, &message, ACTOR));
    for a in actions {
        match a {
            Action::CreateJob(j) => {
                let name = j.metadata.name.clone().unwrap_or_default();
                match client.create(&j).await {
                    Ok(_) => record("Normal", "SuccessfulCreate", format!("Created job {name}")),
                    Err(e) if e.is_already_exists() => {}
                    Err(e) => record("Warning", "FailedCreate", format!("Error creating job: {e}")),
                }
            }
            Action::DeleteJob { name, reason } => match client.delete::<Job>(ns, &name, None).await {
                // Its pods go with it: the garbage collector removes what it owned.
                Ok(_) => record("Normal", "SuccessfulDelete", format!("Deleted job {name}")),
                Err(e) if e.is_not_found() => {}
                Err(e) => {
                    tracing::warn!(job = %name, reason, error = %e, "deleting job failed");
                    record("Warning", "FailedDelete", format!("Deleted job: {e}"));
                }
            },
            Action::Status(st) => {
                super::update_with_retry::<CronJob, _>(client, ns, cj.metadata.name.as_deref().unwrap_or(""), |cur| {
                    if cur.metadata.uid == cj.metadata.uid {
                        // A pass on a cache that has not seen the last write yet must not
                        // take its times back.
                        let mut st = st.clone();
                        let old = cur.status.clone().unwrap_or_default();
                        st.last_schedule_time = later(st.last_schedule_time, old.last_schedule_time);
                        st.last_successful_time = later(st.last_successful_time, old.last_successful_time);
                        cur.status = Some(st);
                    }
                })
                .await;
            }
            Action::Event { type_, reason, message } => record(type_, reason, message),
        }
    }
}

fn later(a: Option<Time>, b: Option<Time>) -> Option<Time> {
    match (a, b) {
        (Some(a), Some(b)) => Some(if a.0 >= b.0 { a } else { b }),
        (a, b) => a.or(b),
    }
}

impl Actor for CronJobController {
    type Context = Context<Self>;
    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(self.resync, |act, ctx| {
            act.cronjobs.keys().into_iter().for_each(|k| act.queue.add(k));
            act.kick(ctx);
        });
    }
}

impl StreamHandler<InformerEvent<CronJob>> for CronJobController {
    fn handle(&mut self, ev: InformerEvent<CronJob>, ctx: &mut Context<Self>) {
        bus::metrics::handle(ACTOR, || {
            let (requeue, _) = self.cronjobs.apply(ev);
            requeue.into_iter().for_each(|k| self.queue.add(k));
            self.kick(ctx);
        })
    }
    fn finished(&mut self, _: &mut Context<Self>) {}
}

impl StreamHandler<InformerEvent<Job>> for CronJobController {
    fn handle(&mut self, ev: InformerEvent<Job>, ctx: &mut Context<Self>) {
        bus::metrics::handle(ACTOR, || {
            let touched = match ev {
                InformerEvent::Listed(items, _) => self.jobs.replace_all(items),
                InformerEvent::Applied(j, _) => self.jobs.put(j),
                InformerEvent::Deleted(j, _) => self.jobs.remove(&super::owned::key_of(&j)).into_iter().collect(),
            };
            touched.into_iter().for_each(|k| self.queue.add(k));
            self.kick(ctx);
        })
    }
    fn finished(&mut self, _: &mut Context<Self>) {}
}

impl Handler<ControllerMsg> for CronJobController {
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
    use k8s_openapi::api::batch::v1::{CronJobSpec, JobCondition, JobStatus, JobTemplateSpec};

    fn at(s: &str) -> jiff::Timestamp {
        s.parse().unwrap()
    }

    fn cronjob(schedule: &str, policy: &str) -> CronJob {
        CronJob {
            metadata: ObjectMeta { name: Some("tick".into()), namespace: Some("demo".into()), uid: Some("cj-uid".into()), creation_timestamp: Some(Time(at("2026-01-01T10:00:10Z"))), ..Default::default() },
            spec: CronJobSpec { schedule: schedule.into(), concurrency_policy: Some(policy.into()), job_template: JobTemplateSpec::default(), ..Default::default() },
            status: None,
        }
    }

    fn done(mut j: Job, ty: &str, when: &str) -> Job {
        j.status = Some(JobStatus { conditions: Some(vec![JobCondition { type_: ty.into(), status: "True".into(), last_transition_time: Some(Time(at(when))), ..Default::default() }]), ..Default::default() });
        j
    }

    fn created(p: &Plan) -> Vec<String> {
        p.actions.iter().filter_map(|a| if let Action::CreateJob(j) = a { j.metadata.name.clone() } else { None }).collect()
    }

    #[test]
    fn makes_the_job_of_the_minute_once_and_wakes_for_the_next() {
        let cj = cronjob("*/1 * * * *", "Allow");
        let now = at("2026-01-01T10:01:05Z");
        let p = reconcile(&cj, &[], now);
        let want = format!("tick-{}", at("2026-01-01T10:01:00Z").as_second() / 60);
        assert_eq!(created(&p), vec![want.clone()]);
        assert_eq!(p.requeue, Some(Duration::from_secs(55)));
        let j = job_for(&cj, at("2026-01-01T10:01:00Z"));
        assert_eq!(j.metadata.owner_references.as_ref().unwrap()[0].kind, "CronJob");
        assert!(created(&reconcile(&cj, &[j], now)).is_empty(), "the same time runs once");
    }

    #[test]
    fn forbid_waits_for_the_running_job_and_replace_stops_it() {
        let mut cj = cronjob("*/1 * * * *", "Forbid");
        cj.status = Some(CronJobStatus { last_schedule_time: Some(Time(at("2026-01-01T10:01:00Z"))), ..Default::default() });
        let running = job_for(&cj, at("2026-01-01T10:01:00Z"));
        let now = at("2026-01-01T10:02:01Z");
        let p = reconcile(&cj, &[running.clone()], now);
        assert!(created(&p).is_empty());
        assert!(p.actions.iter().any(|a| matches!(a, Action::Event { reason: "JobAlreadyActive", .. })));
        cj.spec.concurrency_policy = Some("Replace".into());
        let p = reconcile(&cj, &[running], now);
        assert_eq!(created(&p).len(), 1);
        assert!(p.actions.iter().any(|a| matches!(a, Action::DeleteJob { reason: "replace", .. })));
    }

    #[test]
    fn history_limits_keep_the_newest() {
        let mut cj = cronjob("0 0 1 1 *", "Allow");
        cj.spec.successful_jobs_history_limit = Some(1);
        cj.spec.failed_jobs_history_limit = Some(0);
        let jobs = vec![
            done(job_for(&cj, at("2026-01-01T10:01:00Z")), "Complete", "2026-01-01T10:01:30Z"),
            done(job_for(&cj, at("2026-01-01T10:02:00Z")), "Complete", "2026-01-01T10:02:30Z"),
            done(job_for(&cj, at("2026-01-01T10:03:00Z")), "Failed", "2026-01-01T10:03:30Z"),
        ];
        let p = reconcile(&cj, &jobs, at("2026-01-01T10:04:00Z"));
        let mut deleted: Vec<String> = p.actions.iter().filter_map(|a| if let Action::DeleteJob { name, .. } = a { Some(name.clone()) } else { None }).collect();
        deleted.sort();
        assert_eq!(deleted, vec![jobs[0].metadata.name.clone().unwrap(), jobs[2].metadata.name.clone().unwrap()]);
    }

    #[test]
    fn a_missed_deadline_is_not_run_late() {
        let mut cj = cronjob("0 * * * *", "Allow");
        cj.spec.starting_deadline_seconds = Some(30);
        cj.metadata.creation_timestamp = Some(Time(at("2026-01-01T09:00:00Z")));
        let p = reconcile(&cj, &[], at("2026-01-01T10:05:00Z"));
        assert!(created(&p).is_empty());
        let p = reconcile(&cj, &[], at("2026-01-01T10:00:20Z"));
        assert_eq!(created(&p).len(), 1);
    }

    #[test]
    fn suspended_makes_nothing() {
        let mut cj = cronjob("*/1 * * * *", "Allow");
        cj.spec.suspend = Some(true);
        assert!(created(&reconcile(&cj, &[], at("2026-01-01T10:05:00Z"))).is_empty());
    }
}
