//! The TTL-after-finished controller: deletes a Job `ttlSecondsAfterFinished` seconds
//! after it completed or failed (its pods go with it through the garbage collector).
//! `expires_in` is pure; the actor keeps one timer per Job and re-reads the Job before
//! deleting, so a Job whose TTL was raised meanwhile lives on.

use super::job::finished;
use super::owned::key_of;
use super::ControllerMsg;
use actix::prelude::*;
use bus::informer::InformerEvent;
use bus::Client;
use k8s_openapi::api::batch::v1::Job;
use std::collections::HashMap;
use std::time::Duration;

const ACTOR: &str = "ttl-after-finished-controller";

/// How long until the finished Job is due for deletion (zero: now); None when it has no
/// TTL, has not finished, or is already being deleted.
pub fn expires_in(j: &Job, now: jiff::Timestamp) -> Option<Duration> {
    let ttl = j.spec.as_ref()?.ttl_seconds_after_finished?;
    if j.metadata.deletion_timestamp.is_some() {
        return None;
    }
    let (_, at) = finished(j)?;
    let due = at.0.as_second() + ttl.max(0) as i64;
    Some(Duration::from_secs((due - now.as_second()).max(0) as u64))
}

pub struct TtlAfterFinished {
    client: Client,
    timers: HashMap<String, SpawnHandle>,
}

impl TtlAfterFinished {
    pub fn new(client: Client) -> Self {
        let client = client.named(ACTOR);
        TtlAfterFinished { client, timers: HashMap::new() }
    }

    fn track(&mut self, j: Job, ctx: &mut Context<Self>) {
        let key = key_of(&j);
        if let Some(h) = self.timers.remove(&key) {
            ctx.cancel_future(h);
        }
        let Some(after) = expires_in(&j, jiff::Timestamp::now()) else { return };
        let k = key.clone();
        let h = ctx.run_later(after, move |act, ctx| bus::metrics::handle(ACTOR, || {
            act.timers.remove(&k);
            let client = act.client.clone();
            ctx.spawn(
                async move {
                    let (ns, name) = (j.metadata.namespace.clone(), j.metadata.name.clone().unwrap_or_default());
                    // The Job as it is now: its TTL may have changed, or a new Job took the name.
                    let cur = match client.get::<Job>(ns.as_deref(), &name).await {
                        Ok(Some(c)) if c.metadata.uid == j.metadata.uid => c,
                        _ => return,
                    };
                    if expires_in(&cur, jiff::Timestamp::now()) != Some(Duration::ZERO) {
                        return;
                    }
                    let rev = cur.metadata.resource_version.as_deref().and_then(|r| r.parse().ok());
                    match client.delete::<Job>(ns.as_deref(), &name, rev).await {
                        Ok(_) => tracing::info!(job = %name, "deleted a finished Job past its ttlSecondsAfterFinished"),
                        // Changed meanwhile: its watch event sets a new timer.
                        Err(e) if e.is_conflict() || e.is_not_found() => {}
                        Err(e) => tracing::warn!(job = %name, error = %e, "deleting an expired Job failed"),
                    }
                }
                .into_actor(act),
            );
        }));
        self.timers.insert(key, h);
    }
}

impl Actor for TtlAfterFinished {
    type Context = Context<Self>;
}

impl StreamHandler<InformerEvent<Job>> for TtlAfterFinished {
    fn handle(&mut self, ev: InformerEvent<Job>, ctx: &mut Context<Self>) {
        bus::metrics::handle(ACTOR, || match ev {
            InformerEvent::Listed(items, _) => {
                for (_, h) in self.timers.drain() {
                    ctx.cancel_future(h);
                }
                items.into_iter().for_each(|j| self.track(j, ctx));
            }
            InformerEvent::Applied(j, _) => self.track(j, ctx),
            InformerEvent::Deleted(j, _) => {
                if let Some(h) = self.timers.remove(&key_of(&j)) {
                    ctx.cancel_future(h);
                }
            }
        })
    }
    fn finished(&mut self, _: &mut Context<Self>) {}
}

impl Handler<ControllerMsg> for TtlAfterFinished {
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
    use k8s_openapi::api::batch::v1::{JobCondition, JobSpec, JobStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn job(ttl: Option<i32>, finished_at: Option<i64>) -> Job {
        Job {
            spec: Some(JobSpec { ttl_seconds_after_finished: ttl, ..Default::default() }),
            status: finished_at.map(|t| JobStatus {
                conditions: Some(vec![JobCondition { type_: "Complete".into(), status: "True".into(), last_transition_time: Some(Time(jiff::Timestamp::from_second(t).unwrap())), ..Default::default() }]),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn due_ttl_seconds_after_the_job_finished() {
        let now = jiff::Timestamp::from_second(1000).unwrap();
        assert_eq!(expires_in(&job(Some(30), Some(990)), now), Some(Duration::from_secs(20)));
        assert_eq!(expires_in(&job(Some(5), Some(900)), now), Some(Duration::ZERO));
        assert_eq!(expires_in(&job(None, Some(900)), now), None, "no TTL: kept");
        assert_eq!(expires_in(&job(Some(5), None), now), None, "still running");
    }
}
