//! The kube-apiserver flags `flotilla up` and `flotilla gateway` share, under the same
//! names: in-flight limits and the ServiceAccount token key pair and issuer.

use anyhow::{Context, Result};
use clap::Args;
use std::path::{Path, PathBuf};

#[derive(Args, Clone)]
pub struct ApiServerFlags {
    /// Reads served at once; one more gets 429 (0: no limit). Watches and logs do not count.
    #[arg(long, default_value_t = 400)]
    pub max_requests_inflight: usize,
    /// Writes served at once; one more gets 429 (0: no limit).
    #[arg(long, default_value_t = 200)]
    pub max_mutating_requests_inflight: usize,
    /// The `iss` of ServiceAccount tokens, and the audience the gateway accepts.
    #[arg(long, default_value = "https://kubernetes.default.svc.cluster.local")]
    pub service_account_issuer: String,
    /// PEM private key that signs ServiceAccount tokens (default: <pki>/sa.key, made when absent).
    #[arg(long)]
    pub service_account_signing_key_file: Option<PathBuf>,
    /// PEM public key that verifies them (default: <pki>/sa.pub).
    #[arg(long)]
    pub service_account_key_file: Option<PathBuf>,
    /// The tolerationSeconds of the node.kubernetes.io/not-ready:NoExecute toleration
    /// admission adds to every pod that lacks one (DefaultTolerationSeconds).
    #[arg(long, default_value_t = 300)]
    pub default_not_ready_toleration_seconds: i64,
    /// The same for node.kubernetes.io/unreachable:NoExecute.
    #[arg(long, default_value_t = 300)]
    pub default_unreachable_toleration_seconds: i64,
}

impl ApiServerFlags {
    /// Puts the process-wide admission settings in place (before any pod is admitted).
    pub fn apply_admission(&self) {
        schema::plugins::tolerations::set_default_seconds(self.default_not_ready_toleration_seconds, self.default_unreachable_toleration_seconds);
    }

    pub fn limits(&self) -> actors::gateway::Limits {
        actors::gateway::Limits {
            max_requests_inflight: self.max_requests_inflight,
            max_mutating_requests_inflight: self.max_mutating_requests_inflight,
            ..Default::default()
        }
    }

    pub fn service_account(&self, pki: &Path) -> Result<actors::gateway::ServiceAccountKeys> {
        let (key, public) = match (&self.service_account_signing_key_file, &self.service_account_key_file) {
            (Some(k), Some(p)) => (k.clone(), p.clone()),
            (None, None) => crate::certs::service_account_key(pki)?,
            _ => anyhow::bail!("--service-account-signing-key-file and --service-account-key-file go together"),
        };
        let read = |p: &Path| std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()));
        Ok(actors::gateway::ServiceAccountKeys { signing_key_pem: read(&key)?, public_key_pem: read(&public)?, issuer: self.service_account_issuer.clone() })
    }
}
