//! Cumulative-bucket histograms and the Prometheus text they render to: the shape every
//! latency series here takes, so dashboards can take quantiles with `histogram_quantile`.

/// Handling and queueing times of actors: most messages take well under a millisecond,
/// a reconcile that writes takes tens of milliseconds, a stuck one seconds.
pub const ACTOR_BUCKETS: &[f64] = &[0.0001, 0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// kube-apiserver's buckets for `apiserver_request_duration_seconds`, so its dashboards'
/// thresholds line up.
pub const APISERVER_BUCKETS: &[f64] = &[0.005, 0.025, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0, 1.25, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 15.0, 20.0, 30.0, 45.0, 60.0];

/// etcd's `etcd_disk_wal_fsync_duration_seconds`-style buckets for a Raft commit.
pub const COMMIT_BUCKETS: &[f64] = &[0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512, 1.024, 2.048, 4.096, 8.192];

/// Messages a consumer trails its stream by.
pub const LAG_BUCKETS: &[f64] = &[0.0, 1.0, 10.0, 100.0, 1000.0, 10000.0, 100000.0];

#[derive(Clone, Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    /// Per bucket, not cumulative: an observation increments one slot; rendering sums.
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Histogram {
        Histogram { bounds, counts: vec![0; bounds.len()], sum: 0.0, count: 0 }
    }

    pub fn observe(&mut self, v: f64) {
        if let Some(i) = self.bounds.iter().position(|b| v <= *b) {
            self.counts[i] += 1;
        }
        self.sum += v;
        self.count += 1;
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    /// The `q` quantile (0..=1), interpolated inside its bucket as Prometheus'
    /// `histogram_quantile` does; past the last bound it is that bound. 0 when empty.
    pub fn quantile(&self, q: f64) -> f64 {
        if self.count == 0 {
            return 0.0;
        }
        let rank = q.clamp(0.0, 1.0) * self.count as f64;
        let mut below = 0u64;
        for (i, c) in self.counts.iter().enumerate() {
            if *c > 0 && (below + c) as f64 >= rank {
                let lo = if i == 0 { 0.0 } else { self.bounds[i - 1] };
                let hi = self.bounds[i];
                return lo + (hi - lo) * ((rank - below as f64) / *c as f64).clamp(0.0, 1.0);
            }
            below += c;
        }
        self.bounds.last().copied().unwrap_or(0.0)
    }

    /// `name_bucket{labels,le=…}` lines up to `+Inf`, then `_sum` and `_count`; `labels`
    /// is the inside of the braces without them (may be empty).
    pub fn render(&self, name: &str, labels: &str, out: &mut String) {
        use std::fmt::Write;
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (b, c) in self.bounds.iter().zip(&self.counts) {
            cumulative += c;
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{b}\"}} {cumulative}");
        }
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}", self.count);
        let braces = if labels.is_empty() { String::new() } else { format!("{{{labels}}}") };
        let _ = writeln!(out, "{name}_sum{braces} {}", self.sum);
        let _ = writeln!(out, "{name}_count{braces} {}", self.count);
    }
}

/// A label value escaped as the text format wants (backslash, quote, newline).
pub fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// `k1="v1",k2="v2"` from pairs, values escaped.
pub fn labels(pairs: &[(&str, &str)]) -> String {
    pairs.iter().map(|(k, v)| format!("{k}=\"{}\"", escape(v))).collect::<Vec<_>>().join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_and_end_in_inf() {
        let mut h = Histogram::new(&[0.1, 1.0]);
        h.observe(0.05);
        h.observe(0.5);
        h.observe(7.0);
        let mut out = String::new();
        h.render("x_seconds", "actor=\"a\"", &mut out);
        assert_eq!(
            out,
            "x_seconds_bucket{actor=\"a\",le=\"0.1\"} 1\nx_seconds_bucket{actor=\"a\",le=\"1\"} 2\nx_seconds_bucket{actor=\"a\",le=\"+Inf\"} 3\nx_seconds_sum{actor=\"a\"} 7.55\nx_seconds_count{actor=\"a\"} 3\n"
        );
    }

    #[test]
    fn quantiles_interpolate_inside_the_bucket() {
        let mut h = Histogram::new(&[0.1, 1.0]);
        assert_eq!(h.quantile(0.5), 0.0);
        for _ in 0..10 {
            h.observe(0.05);
        }
        h.observe(0.5);
        h.observe(5.0);
        assert!((h.quantile(0.5) - 0.06).abs() < 1e-9, "{}", h.quantile(0.5));
        assert_eq!(h.quantile(1.0), 1.0, "past the last bound is that bound");
    }

    #[test]
    fn no_labels_renders_no_empty_braces() {
        let mut h = Histogram::new(&[1.0]);
        h.observe(2.0);
        let mut out = String::new();
        h.render("y", "", &mut out);
        assert_eq!(out, "y_bucket{le=\"1\"} 0\ny_bucket{le=\"+Inf\"} 1\ny_sum 2\ny_count 1\n");
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(labels(&[("path", "a\"b\\c\nd")]), "path=\"a\\\"b\\\\c\\nd\"");
    }
}
