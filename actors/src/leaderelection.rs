//! Leader election through a `coordination.k8s.io` Lease in kube-system, as client-go's
//! leaderelection does it for kube-controller-manager and kube-scheduler: candidates
//! race to write themselves as holder with a compare-and-swap; the holder renews every
//! `retry_period`; the others wait until the record has not changed for
//! `lease_duration` (timed on their own clock, not the writer's), then take over. A holder
//! that cannot renew within `renew_deadline` stops what it runs before anyone else may
//! start. `decide` is pure; `elected` is the loop around it.

use bus::Client;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use std::future::Future;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone)]
pub struct ElectionConfig {
    pub namespace: String,
    pub name: String,
    /// Who this candidate is, as `holderIdentity` shows it: `<hostname>_<uuid>`.
    pub identity: String,
    /// kube's --leader-elect-lease-duration, --leader-elect-renew-deadline and
    /// --leader-elect-retry-period.
    pub lease_duration: Duration,
    pub renew_deadline: Duration,
    pub retry_period: Duration,
}

impl ElectionConfig {
    /// kube's defaults (15 s, 10 s, 2 s) for the lease `kube-system/<name>`.
    pub fn new(name: &str) -> ElectionConfig {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_string()).unwrap_or_else(|_| "localhost".into());
        ElectionConfig {
            namespace: "kube-system".into(),
            name: name.into(),
            identity: format!("{host}_{}", uuid::Uuid::new_v4()),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// What this candidate last saw of the lease record, and when (its own clock).
#[derive(Debug, Default, Clone)]
pub struct Observed {
    record: Option<(Option<String>, Option<String>, Option<i32>)>,
    at: Option<Instant>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    Create(Lease),
    /// Write this (a CAS on the revision read): a renewal, or a takeover.
    Update(Lease),
    /// Someone else holds it and has renewed recently enough.
    Wait { holder: String },
}

fn micro(t: jiff::Timestamp) -> MicroTime {
    MicroTime(jiff::Timestamp::from_microsecond(t.as_microsecond()).unwrap_or(t))
}

/// One try to acquire or renew, from the lease as read now.
pub fn decide(lease: Option<&Lease>, cfg: &ElectionConfig, observed: &mut Observed, wall: jiff::Timestamp, now: Instant) -> Step {
    let secs = cfg.lease_duration.as_secs().max(1) as i32;
    let Some(lease) = lease else {
        return Step::Create(Lease {
            metadata: ObjectMeta { name: Some(cfg.name.clone()), namespace: Some(cfg.namespace.clone()), ..Default::default() },
            spec: Some(LeaseSpec { holder_identity: Some(cfg.identity.clone()), lease_duration_seconds: Some(secs), acquire_time: Some(micro(wall)), renew_time: Some(micro(wall)), lease_transitions: Some(0), ..Default::default() }),
        });
    };
    let spec = lease.spec.clone().unwrap_or_default();
    let record = (spec.holder_identity.clone(), spec.renew_time.as_ref().map(|t| t.0.to_string()), spec.lease_transitions);
    if observed.record.as_ref() != Some(&record) {
        observed.record = Some(record);
        observed.at = Some(now);
    }
    let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
    let mine = holder.as_deref() == Some(cfg.identity.as_str());
    // The holder's own lease duration, as written, bounds how long it may go silent.
    let duration = spec.lease_duration_seconds.map(|s| Duration::from_secs(s.max(0) as u64)).unwrap_or(cfg.lease_duration);
    if let (Some(h), false) = (&holder, mine) {
        if observed.at.is_some_and(|at| now.saturating_duration_since(at) < duration) {
            return Step::Wait { holder: h.clone() };
        }
    }
    let mut next = lease.clone();
    let s = next.spec.get_or_insert_with(Default::default);
    if !mine {
        s.holder_identity = Some(cfg.identity.clone());
        s.acquire_time = Some(micro(wall));
        s.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + if holder.is_some() || spec.lease_transitions.is_some() { 1 } else { 0 });
    }
    s.lease_duration_seconds = Some(secs);
    s.renew_time = Some(micro(wall));
    Step::Update(next)
}

/// One read-decide-write; true when this candidate holds the lease afterwards.
async fn try_once(client: &Client, cfg: &ElectionConfig, observed: &mut Observed) -> bool {
    let cur = match client.get::<Lease>(Some(&cfg.namespace), &cfg.name).await {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(lease = %cfg.name, error = %e, "reading the leader lease failed");
            return false;
        }
    };
    match decide(cur.as_ref(), cfg, observed, jiff::Timestamp::now(), Instant::now()) {
        Step::Wait { .. } => false,
        Step::Create(l) => client.create(&l).await.is_ok(),
        Step::Update(l) => client.update(&l).await.is_ok(),
    }
}

/// Gives the lease up on a clean stop, so a successor need not wait for it to expire.
async fn release(client: &Client, cfg: &ElectionConfig) {
    let id = cfg.identity.clone();
    super::controllers::update_with_retry::<Lease, _>(client, Some(&cfg.namespace), &cfg.name, |l| {
        if let Some(s) = l.spec.as_mut().filter(|s| s.holder_identity.as_deref() == Some(id.as_str())) {
            s.holder_identity = None;
            s.lease_duration_seconds = Some(1);
            s.renew_time = Some(micro(jiff::Timestamp::now()));
        }
    })
    .await;
}

/// A few percent of jitter, as client-go's, so candidates do not retry in lockstep.
fn jittered(d: Duration) -> Duration {
    d.mul_f64(1.0 + (uuid::Uuid::new_v4().as_u128() % 200) as f64 / 1000.0)
}

/// What `elected` runs: stopped by `shutdown`.
pub struct Elected {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Elected {
    pub async fn shutdown(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

/// Runs `start` while this process holds the lease, `stop` on what it returned when the
/// lease is lost (then campaigns again) or on shutdown (then releases the lease).
/// Spawned on the actix arbiter: `start` creates actors.
pub fn elected<H, S, SF, D, DF>(client: Client, cfg: ElectionConfig, start: S, stop: D) -> Elected
where
    H: 'static,
    S: Fn() -> SF + 'static,
    SF: Future<Output = anyhow::Result<H>> + 'static,
    D: Fn(H) -> DF + 'static,
    DF: Future<Output = ()> + 'static,
{
    let token = CancellationToken::new();
    let t = token.clone();
    let task = actix::spawn(async move {
        let mut observed = Observed::default();
        loop {
            tracing::info!(lease = %format!("{}/{}", cfg.namespace, cfg.name), identity = %cfg.identity, "attempting to acquire leader lease");
            loop {
                if try_once(&client, &cfg, &mut observed).await {
                    break;
                }
                tokio::select! {
                    _ = t.cancelled() => return,
                    _ = tokio::time::sleep(jittered(cfg.retry_period)) => {}
                }
            }
            tracing::info!(lease = %format!("{}/{}", cfg.namespace, cfg.name), identity = %cfg.identity, "successfully acquired lease");
            let running = match start().await {
                Ok(h) => h,
                Err(e) => {
                    tracing::error!(error = %format!("{e:#}"), "starting as leader failed");
                    release(&client, &cfg).await;
                    tokio::select! {
                        _ = t.cancelled() => return,
                        _ = tokio::time::sleep(cfg.retry_period) => continue,
                    }
                }
            };
            // Renew until shut down, or until renewals fail for renew_deadline.
            let lost = loop {
                tokio::select! {
                    _ = t.cancelled() => break false,
                    _ = tokio::time::sleep(cfg.retry_period) => {}
                }
                let since = Instant::now();
                let mut renewed = false;
                while since.elapsed() < cfg.renew_deadline {
                    if try_once(&client, &cfg, &mut observed).await {
                        renewed = true;
                        break;
                    }
                    tokio::time::sleep(cfg.retry_period / 4).await;
                }
                if !renewed {
                    break true;
                }
            };
            stop(running).await;
            if !lost {
                release(&client, &cfg).await;
                return;
            }
            tracing::error!(lease = %cfg.name, identity = %cfg.identity, "leaderelection lost");
        }
    });
    Elected { stop: token, task }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(id: &str) -> ElectionConfig {
        ElectionConfig { identity: id.into(), ..ElectionConfig::new("kube-controller-manager") }
    }

    fn wall() -> jiff::Timestamp {
        jiff::Timestamp::from_second(1_000_000).unwrap()
    }

    fn lease_of(step: Step) -> Lease {
        match step {
            Step::Create(l) | Step::Update(l) => l,
            Step::Wait { holder } => panic!("waiting on {holder}"),
        }
    }

    #[test]
    fn the_first_candidate_creates_the_lease() {
        let l = lease_of(decide(None, &cfg("a"), &mut Observed::default(), wall(), Instant::now()));
        let s = l.spec.unwrap();
        assert_eq!((s.holder_identity.as_deref(), s.lease_duration_seconds, s.lease_transitions), (Some("a"), Some(15), Some(0)));
        assert_eq!(l.metadata.namespace.as_deref(), Some("kube-system"));
    }

    #[tokio::test(start_paused = true)]
    async fn others_wait_until_the_record_stops_changing_for_a_lease_duration() {
        let held = lease_of(decide(None, &cfg("a"), &mut Observed::default(), wall(), Instant::now()));
        let b = cfg("b");
        let mut seen = Observed::default();
        assert_eq!(decide(Some(&held), &b, &mut seen, wall(), Instant::now()), Step::Wait { holder: "a".into() });
        tokio::time::advance(Duration::from_secs(10)).await;
        // a renewed: the clock starts again.
        let mut renewed = held.clone();
        renewed.spec.as_mut().unwrap().renew_time = Some(micro(jiff::Timestamp::from_second(1_000_010).unwrap()));
        assert!(matches!(decide(Some(&renewed), &b, &mut seen, wall(), Instant::now()), Step::Wait { .. }));
        tokio::time::advance(Duration::from_secs(14)).await;
        assert!(matches!(decide(Some(&renewed), &b, &mut seen, wall(), Instant::now()), Step::Wait { .. }));
        tokio::time::advance(Duration::from_secs(2)).await;
        let taken = lease_of(decide(Some(&renewed), &b, &mut seen, wall(), Instant::now())).spec.unwrap();
        assert_eq!((taken.holder_identity.as_deref(), taken.lease_transitions), (Some("b"), Some(1)));
    }

    #[test]
    fn the_holder_renews_without_a_transition_and_a_released_lease_is_free() {
        let a = cfg("a");
        let held = lease_of(decide(None, &a, &mut Observed::default(), wall(), Instant::now()));
        let renewed = lease_of(decide(Some(&held), &a, &mut Observed::default(), wall(), Instant::now())).spec.unwrap();
        assert_eq!((renewed.holder_identity.as_deref(), renewed.lease_transitions), (Some("a"), Some(0)));
        let mut released = held;
        released.spec.as_mut().unwrap().holder_identity = None;
        let taken = lease_of(decide(Some(&released), &cfg("b"), &mut Observed::default(), wall(), Instant::now())).spec.unwrap();
        assert_eq!(taken.holder_identity.as_deref(), Some("b"));
    }
}
