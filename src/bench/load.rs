//! The closed-loop load driver both systems are measured with: N clients, each issuing
//! one operation at a time through the same `op` closure shape, so flotilla and etcd see
//! exactly the same load. Latencies are kept as sorted samples; percentiles are a pure
//! function over them.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// One measured run: how many clients, how long to warm up (not recorded), how long to
/// record.
#[derive(Debug, Clone, Copy)]
pub struct Phase {
    pub clients: usize,
    pub warmup: Duration,
    pub measure: Duration,
}

#[derive(Debug, Clone)]
pub struct Outcome {
    /// Operations that succeeded and completed inside the measured window.
    pub ops: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    pub measured: Duration,
    /// Latencies of the counted operations, in microseconds, sorted.
    pub latencies_us: Vec<u32>,
}

impl Outcome {
    pub fn ops_per_sec(&self) -> f64 {
        self.ops as f64 / self.measured.as_secs_f64().max(1e-9)
    }
    pub fn p_ms(&self, p: f64) -> f64 {
        percentile(&self.latencies_us, p) as f64 / 1000.0
    }
}

/// An operation that takes longer than this is counted as an error, so one stuck
/// request cannot hold a phase open.
const OP_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs `phase.clients` clients in a closed loop for warmup + measure. `op(client, seq)`
/// performs one operation; only operations that complete inside the measured window are
/// counted (their latencies too).
pub async fn run<F, Fut>(phase: Phase, op: F) -> Outcome
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), String>> + Send + 'static,
{
    let op = Arc::new(op);
    let start = Instant::now();
    let window_start = start + phase.warmup;
    let end = window_start + phase.measure;
    let mut tasks = tokio::task::JoinSet::new();
    for client in 0..phase.clients {
        let op = op.clone();
        tasks.spawn(async move {
            let mut lat = Vec::new();
            let (mut errors, mut first_error) = (0u64, None);
            let mut seq = 0u64;
            loop {
                let began = Instant::now();
                if began >= end {
                    break;
                }
                let r = match tokio::time::timeout(OP_TIMEOUT, op(client, seq)).await {
                    Ok(r) => r,
                    Err(_) => Err(format!("no answer within {OP_TIMEOUT:?}")),
                };
                seq += 1;
                let done = Instant::now();
                if done < window_start || done > end {
                    continue;
                }
                match r {
                    Ok(()) => lat.push(u32::try_from((done - began).as_micros()).unwrap_or(u32::MAX)),
                    Err(e) => {
                        errors += 1;
                        first_error.get_or_insert(e);
                    }
                }
            }
            (lat, errors, first_error)
        });
    }
    let mut out = Outcome { ops: 0, errors: 0, first_error: None, measured: phase.measure, latencies_us: Vec::new() };
    while let Some(r) = tasks.join_next().await {
        match r {
            Ok((lat, errors, first_error)) => {
                out.latencies_us.extend(lat);
                out.errors += errors;
                if out.first_error.is_none() {
                    out.first_error = first_error;
                }
            }
            Err(e) => {
                out.errors += 1;
                out.first_error.get_or_insert(format!("client task: {e}"));
            }
        }
    }
    out.latencies_us.sort_unstable();
    out.ops = out.latencies_us.len() as u64;
    out
}

/// The nearest-rank percentile of sorted samples: the smallest sample such that at least
/// `p`% of all samples are at or below it. 0 for no samples.
pub fn percentile(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Which of `n` keys a client's `seq`-th operation touches: a fixed pseudo-random spread
/// (splitmix64), the same for both systems.
pub fn pick(client: usize, seq: u64, n: usize) -> usize {
    let mut z = ((client as u64) << 40 ^ seq).wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z % n.max(1) as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_is_nearest_rank() {
        let s: Vec<u32> = (1..=100).collect();
        assert_eq!(percentile(&s, 50.0), 50);
        assert_eq!(percentile(&s, 99.0), 99);
        assert_eq!(percentile(&s, 100.0), 100);
        assert_eq!(percentile(&s, 0.0), 1);
        assert_eq!(percentile(&[7], 99.0), 7);
        assert_eq!(percentile(&[], 50.0), 0);
        // 1,000 samples: p99 is the 990th, so the 10 slowest lie above it.
        let s: Vec<u32> = (1..=1000).collect();
        assert_eq!(percentile(&s, 99.0), 990);
        assert_eq!(percentile(&[1, 2, 3], 50.0), 2);
    }

    #[test]
    fn pick_spreads_over_the_key_space() {
        let mut seen = vec![0u32; 10];
        for seq in 0..10_000 {
            seen[pick(3, seq, 10)] += 1;
        }
        assert!(seen.iter().all(|&c| (800..1200).contains(&c)), "{seen:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn counts_only_the_measured_window() {
        let phase = Phase { clients: 2, warmup: Duration::from_millis(100), measure: Duration::from_secs(1) };
        let out = run(phase, |_, _| async {
            tokio::time::sleep(Duration::from_millis(10)).await;
            Ok(())
        })
        .await;
        // Two clients, 10 ms per op, 1 s window: about 100 each.
        assert!((195..=202).contains(&out.ops), "{}", out.ops);
        assert_eq!(out.errors, 0);
        assert_eq!(percentile(&out.latencies_us, 99.0), 10_000);
    }
}
