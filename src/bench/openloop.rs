//! The open-loop driver `flotilla bench api` measures with: requests are due at a fixed
//! rate whatever the server does, and each latency runs from the moment its request was
//! due, not from when a connection got round to sending it, so a stall shows up in the
//! figures instead of quietly lowering the load (coordinated omission). The schedule and
//! the summary are pure functions; the dispatcher is one OS thread (sub-millisecond sleeps,
//! where tokio's timer rounds up to whole milliseconds).

use super::load::percentile;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// When the `i`-th request is due, counted from the start of the run.
pub fn due(i: u64, rate: f64) -> Duration {
    Duration::from_secs_f64(i as f64 / rate.max(1e-9))
}

/// One finished request: when it was due and when its answer was complete (both from the
/// start of the run), and whether it succeeded.
#[derive(Debug, Clone)]
pub struct Sample {
    pub due: Duration,
    pub done: Duration,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct Summary {
    /// Requests due inside the measured window.
    pub sent: u64,
    /// Of those, answered successfully (their latencies are in `latencies_us`).
    pub ok: u64,
    pub errors: u64,
    /// Due in the window but not answered before the drain deadline.
    pub unfinished: u64,
    /// Successful answers completed inside the window, per second.
    pub achieved: f64,
    pub latencies_us: Vec<u32>,
    pub first_error: Option<String>,
}

impl Summary {
    pub fn p_ms(&self, p: f64) -> f64 {
        percentile(&self.latencies_us, p) as f64 / 1000.0
    }
}

/// Reduces a run's samples to what the table shows: requests due in
/// `[warmup, warmup + measure)` count, their latency is `done - due`.
pub fn summarize(samples: &[Sample], rate: f64, warmup: Duration, measure: Duration) -> Summary {
    let end = warmup + measure;
    let mut s = Summary { sent: (0..).map(|i| due(i, rate)).skip_while(|d| *d < warmup).take_while(|d| *d < end).count() as u64, ..Summary::default() };
    for x in samples.iter().filter(|x| x.due >= warmup && x.due < end) {
        match &x.error {
            None => {
                s.ok += 1;
                s.latencies_us.push(u32::try_from(x.done.saturating_sub(x.due).as_micros()).unwrap_or(u32::MAX));
            }
            Some(e) => {
                s.errors += 1;
                s.first_error.get_or_insert_with(|| e.clone());
            }
        }
    }
    let completed_in_window = samples.iter().filter(|x| x.error.is_none() && x.done >= warmup && x.done < end).count();
    s.unfinished = s.sent.saturating_sub(s.ok + s.errors);
    s.achieved = completed_in_window as f64 / measure.as_secs_f64().max(1e-9);
    s.latencies_us.sort_unstable();
    s
}

/// Runs `rate` requests a second for `warmup + measure`, spread over `workers` (each one
/// connection, one request at a time: `make_worker(w)` builds its state, `op(state, seq)`
/// sends request `seq` and hands the state back). After the last request is due, waits at most `drain` for
/// answers. Returns every finished request.
pub async fn run<W, MW, MWF, Op, OpF>(rate: f64, warmup: Duration, measure: Duration, drain: Duration, workers: usize, make_worker: MW, op: Op) -> Vec<Sample>
where
    W: Send + 'static,
    MW: Fn(usize) -> MWF,
    MWF: Future<Output = W>,
    Op: Fn(W, u64) -> OpF + Send + Sync + 'static,
    OpF: Future<Output = (W, Result<(), String>)> + Send,
{
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<(u64, Duration)>();
    let rx = Arc::new(tokio::sync::Mutex::new(rx));
    let samples = Arc::new(Mutex::new(Vec::new()));
    let op = Arc::new(op);
    let mut states = Vec::new();
    for w in 0..workers.max(1) {
        states.push(make_worker(w).await);
    }
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for mut state in states {
        let (rx, samples, op) = (rx.clone(), samples.clone(), op.clone());
        tasks.spawn(async move {
            loop {
                let job = rx.lock().await.recv().await;
                let Some((seq, due)) = job else { return };
                let (s, r) = op(state, seq).await;
                state = s;
                let done = start.elapsed();
                samples.lock().unwrap_or_else(|e| e.into_inner()).push(Sample { due, done, error: r.err() });
            }
        });
    }
    let end = warmup + measure;
    let dispatcher = std::thread::spawn(move || {
        for i in 0.. {
            let d = due(i, rate);
            if d >= end {
                return;
            }
            if let Some(wait) = d.checked_sub(start.elapsed()) {
                std::thread::sleep(wait);
            }
            if tx.send((i, d)).is_err() {
                return;
            }
        }
    });
    let all_done = async {
        while tasks.join_next().await.is_some() {}
    };
    // The dispatcher's last send closes the queue; workers then finish what is queued.
    let _ = tokio::time::timeout(end + drain, all_done).await;
    tasks.abort_all();
    let _ = tokio::task::spawn_blocking(move || dispatcher.join()).await;
    let out = std::mem::take(&mut *samples.lock().unwrap_or_else(|e| e.into_inner()));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schedule_is_evenly_spaced() {
        assert_eq!(due(0, 1000.0), Duration::ZERO);
        assert_eq!(due(1, 1000.0), Duration::from_millis(1));
        assert_eq!(due(2500, 1000.0), Duration::from_millis(2500));
        assert_eq!(due(3, 200.0), Duration::from_millis(15));
    }

    fn sample(due_ms: u64, latency_us: u64, ok: bool) -> Sample {
        let due = Duration::from_millis(due_ms);
        Sample { due, done: due + Duration::from_micros(latency_us), error: (!ok).then(|| "boom".to_string()) }
    }

    #[test]
    fn only_requests_due_in_the_window_count_and_latency_runs_from_when_they_were_due() {
        // 100/s: due at 0, 10, …; warm-up 1 s, window 1 s → requests 100..=199 count.
        let (warmup, measure) = (Duration::from_secs(1), Duration::from_secs(1));
        let mut samples: Vec<Sample> = (0..200).map(|i| sample(i * 10, 500 + i, true)).collect();
        samples[150].error = Some("503".into());
        // One request stuck behind a stall: answered 40 ms after it was due.
        samples[160] = sample(1600, 40_000, true);
        // Two never answered: absent.
        samples.truncate(198);
        let s = summarize(&samples, 100.0, warmup, measure);
        assert_eq!(s.sent, 100);
        assert_eq!((s.ok, s.errors, s.unfinished), (97, 1, 2));
        assert_eq!(s.first_error.as_deref(), Some("503"));
        assert_eq!(s.latencies_us.len(), 97);
        assert_eq!(*s.latencies_us.last().unwrap(), 40_000);
        assert_eq!(s.p_ms(50.0), 0.648);
        // Successful answers that completed inside the window (request 99's, due at
        // 990 ms, completes at 990.599 ms: outside).
        assert!((s.achieved - 97.0).abs() < 0.01, "{}", s.achieved);
    }

    #[tokio::test]
    async fn runs_at_the_rate_it_is_given() {
        let (warmup, measure) = (Duration::from_millis(100), Duration::from_millis(400));
        let samples = run(200.0, warmup, measure, Duration::from_secs(2), 2, |_| async {}, |s, _| async move { (s, Ok(())) }).await;
        assert_eq!(samples.len(), 100);
        let s = summarize(&samples, 200.0, warmup, measure);
        assert_eq!((s.sent, s.ok, s.errors, s.unfinished), (80, 80, 0, 0));
    }
}
