//! kube-controller-manager's and kube-scheduler's leader-election flags, shared by
//! `up`, `controllers` and `scheduler`.

use crate::controller_flags::parse_duration;
use clap::Args;
use std::time::Duration;

#[derive(Args, Clone, Debug)]
pub struct LeaderFlags {
    /// Elect one active replica through a Lease in kube-system before acting
    /// (--leader-elect); false runs unconditionally.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_elect: bool,
    /// How long others wait after the holder's last renewal before taking over.
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    pub leader_elect_lease_duration: Duration,
    /// How long the holder keeps trying to renew before it stops acting.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub leader_elect_renew_deadline: Duration,
    /// How often candidates try to acquire and the holder renews.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub leader_elect_retry_period: Duration,
}

impl LeaderFlags {
    /// The election for the lease `kube-system/<lease>`, or None when election is off.
    pub fn config(&self, lease: &str) -> anyhow::Result<Option<actors::leaderelection::ElectionConfig>> {
        if !self.leader_elect {
            return Ok(None);
        }
        if self.leader_elect_renew_deadline >= self.leader_elect_lease_duration {
            anyhow::bail!("--leader-elect-renew-deadline must be shorter than --leader-elect-lease-duration");
        }
        if self.leader_elect_retry_period >= self.leader_elect_renew_deadline {
            anyhow::bail!("--leader-elect-retry-period must be shorter than --leader-elect-renew-deadline");
        }
        let mut cfg = actors::leaderelection::ElectionConfig::new(lease);
        cfg.lease_duration = self.leader_elect_lease_duration;
        cfg.renew_deadline = self.leader_elect_renew_deadline;
        cfg.retry_period = self.leader_elect_retry_period;
        Ok(Some(cfg))
    }
}
