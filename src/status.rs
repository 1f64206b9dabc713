//! `flotilla state status`: asks every state member who it is and how far it has applied.
//! Finds the cluster from --nats-url, or from a data dir (its nats.conf), or from a
//! kubeconfig that `flotilla up` wrote (it sits in the data dir).

use anyhow::{bail, Context, Result};
use futures::StreamExt;
use schema::store::MemberStatus;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(clap::Args, Clone)]
pub struct StatusArgs {
    #[arg(long, env = "FLOTILLA_NATS_URL")]
    pub nats_url: Option<String>,
    /// The data dir of `flotilla up` (default: ./.flotilla).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// A kubeconfig written by `flotilla up`.
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Output format: table (default) or json.
    #[arg(short = 'o', long, default_value = "table")]
    pub output: String,
}

/// The NATS URL of the cluster the arguments point at.
pub fn find_nats(nats_url: Option<&str>, data_dir: Option<&Path>, kubeconfig: Option<&Path>) -> Result<String> {
    if let Some(u) = nats_url {
        return Ok(u.to_string());
    }
    let dir = match (data_dir, kubeconfig) {
        (Some(d), _) => d.to_path_buf(),
        (None, Some(k)) => k.parent().map(Path::to_path_buf).unwrap_or_default(),
        (None, None) => PathBuf::from("./.flotilla"),
    };
    let conf = dir.join("nats").join("nats.conf");
    let text = std::fs::read_to_string(&conf).with_context(|| format!("no --nats-url given and {} is not readable", conf.display()))?;
    match text.lines().find_map(|l| l.trim().strip_prefix("listen:")) {
        Some(addr) => Ok(format!("nats://{}", addr.trim())),
        None => bail!("{} has no listen address", conf.display()),
    }
}

pub async fn run(a: StatusArgs) -> Result<()> {
    let url = find_nats(a.nats_url.as_deref(), a.data_dir.as_deref(), a.kubeconfig.as_deref())?;
    let nats = async_nats::ConnectOptions::new().connection_timeout(Duration::from_secs(3)).connect(&url).await.with_context(|| format!("connecting to {url}"))?;
    let inbox = nats.new_inbox();
    let mut sub = nats.subscribe(inbox.clone()).await?;
    nats.publish_with_reply(schema::subjects::STATE_STATUS, inbox, "".into()).await?;
    nats.flush().await?;
    // Every member answers; gather for a moment rather than stopping at the first.
    let mut members: Vec<MemberStatus> = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_millis(700);
    while let Ok(Some(msg)) = tokio::time::timeout_at(deadline, sub.next()).await {
        if let Ok(m) = schema::codec::decode::<MemberStatus>(&msg.payload) {
            members.push(m);
        }
    }
    members.sort_by_key(|m| m.id);
    if a.output == "json" {
        let v: Vec<serde_json::Value> = members
            .iter()
            .map(|m| serde_json::json!({"id": m.id, "pid": m.pid, "addr": m.addr, "role": m.role, "applied": m.applied}))
            .collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!("{:<4} {:<8} {:<22} {:<10} {}", "ID", "PID", "ADDRESS", "ROLE", "APPLIED");
        for m in &members {
            println!("{:<4} {:<8} {:<22} {:<10} {}", m.id, m.pid, m.addr, m.role, m.applied);
        }
    }
    if members.is_empty() {
        bail!("no state member answered on {url}");
    }
    Ok(())
}
