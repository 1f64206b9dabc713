//! kube-controller-manager's flags that flotilla's controllers honour, shared by `up` and
//! `controllers`, and the duration syntax they take ("30s", "5m", "12h").

use clap::Args;
use std::time::Duration;

#[derive(Args, Clone, Debug)]
pub struct ControllerFlags {
    /// The resync period of the controllers' informers is random between this and twice
    /// this (kube-controller-manager's --min-resync-period).
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    pub min_resync_period: Duration,
    /// Each node gets a /24 of this as its podCIDR (kube-controller-manager's
    /// --cluster-cidr, with --allocate-node-cidrs on).
    #[arg(long, default_value = "10.244.0.0/16")]
    pub cluster_cidr: String,
    /// How often every HorizontalPodAutoscaler is evaluated
    /// (--horizontal-pod-autoscaler-sync-period).
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    pub horizontal_pod_autoscaler_sync_period: Duration,
    /// How long a node's agent may go without renewing its Lease before the node is
    /// marked Unknown and tainted unreachable (kube-controller-manager's flag).
    #[arg(long, default_value = "40s", value_parser = parse_duration)]
    pub node_monitor_grace_period: Duration,
    /// How many finished pods are kept before the oldest are deleted (0: all are kept).
    #[arg(long, default_value_t = actors::controllers::podgc::TERMINATED_POD_GC_THRESHOLD)]
    pub terminated_pod_gc_threshold: usize,
    /// The cluster CA (PEM) published as the `kube-root-ca.crt` ConfigMap in every
    /// namespace (kube-controller-manager's --root-ca-file); `up` passes its own.
    #[arg(long)]
    pub root_ca_file: Option<std::path::PathBuf>,
    /// The local cloud provider's pool of LoadBalancer addresses (the cloud controller's;
    /// "none" turns it off). Loopback by default, so nothing leaves the machine.
    #[arg(long, default_value = actors::controllers::DEFAULT_LB_POOL)]
    pub lb_pool: String,
}

impl ControllerFlags {
    pub fn config(&self) -> anyhow::Result<actors::controllers::Config> {
        let root_ca_pem = match &self.root_ca_file {
            Some(p) => Some(std::fs::read_to_string(p).map_err(|e| anyhow::anyhow!("reading --root-ca-file {}: {e}", p.display()))?),
            None => None,
        };
        let lb_pool = (self.lb_pool != "none").then(|| self.lb_pool.clone());
        // Refused before anything starts, as a bad --cluster-cidr is.
        if let Some(p) = &lb_pool {
            actors::cloud::local::LocalPool::new(p)?;
        }
        let node_ipam = actors::controllers::nodeipam::NodeIpamConfig { cluster_cidr: self.cluster_cidr.clone(), ..Default::default() };
        let node_lifecycle = actors::controllers::nodelifecycle::NodeLifecycleConfig { node_monitor_grace_period: self.node_monitor_grace_period, ..Default::default() };
        Ok(actors::controllers::Config { min_resync_period: self.min_resync_period, node_ipam, node_lifecycle, terminated_pod_gc_threshold: self.terminated_pod_gc_threshold, hpa_sync_period: self.horizontal_pod_autoscaler_sync_period, root_ca_pem, lb_pool })
    }
}

/// A Go-style duration of one unit: "500ms", "30s", "5m", "12h".
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().map_err(|_| format!("{s:?} is not a duration (say 30s, 5m or 12h)"))?;
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "s" | "" => Duration::from_secs(n),
        "m" => Duration::from_secs(n * 60),
        "h" => Duration::from_secs(n * 3600),
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (use ms, s, m or h)")),
    };
    if d.is_zero() {
        return Err(format!("{s:?}: a resync period must be longer than zero"));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_in_go_units() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("12h"), Ok(Duration::from_secs(12 * 3600)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert!(parse_duration("5x").unwrap_err().contains("unknown unit"));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("soon").is_err());
    }
}
