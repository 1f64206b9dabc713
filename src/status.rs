//! `flotilla state status`: asks every state member who it is and how far it has applied.
//! Finds the cluster from --nats-url, or from a data dir (its nats.conf), or from a
//! kubeconfig that `flotilla up` wrote (it sits in the data dir).

use anyhow::{bail, Context, Result};
use futures::StreamExt;
use schema::store::MemberStatus;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Which cluster a command talks to: its NATS URL, or the data dir or kubeconfig that
/// `flotilla up` wrote (the NATS address is read from there).
#[derive(clap::Args, Clone)]
pub struct Target {
    #[arg(long, env = "FLOTILLA_NATS_URL")]
    pub nats_url: Option<String>,
    /// The data dir of `flotilla up` (default: ./.flotilla).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// A kubeconfig written by `flotilla up`.
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// The NATS identity to connect as (a cluster's `admin.creds`); default: `up`'s own
    /// admin identity in its data dir, if there is one.
    #[arg(long, env = "FLOTILLA_NATS_CREDS")]
    pub nats_creds: Option<PathBuf>,
}

#[derive(clap::Args, Clone)]
pub struct StatusArgs {
    #[command(flatten)]
    pub target: Target,
    /// Output format: table (default) or json.
    #[arg(short = 'o', long, default_value = "table")]
    pub output: String,
}

/// One row: a member that answered, or one the others list that did not ("down").
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub id: u64,
    pub pid: Option<u32>,
    pub addr: String,
    pub role: String,
    pub applied: Option<u64>,
}

/// Every member that answered, plus every member some answer lists but that did not
/// answer itself, in id order.
pub fn rows(answers: &[MemberStatus]) -> Vec<Row> {
    let mut out: std::collections::BTreeMap<u64, Row> = std::collections::BTreeMap::new();
    for m in answers {
        for (id, addr) in &m.members {
            out.entry(*id).or_insert_with(|| Row { id: *id, pid: None, addr: addr.clone(), role: "down".into(), applied: None });
        }
    }
    for m in answers {
        out.insert(m.id, Row { id: m.id, pid: Some(m.pid), addr: m.addr.clone(), role: m.role.clone(), applied: Some(m.applied) });
    }
    out.into_values().collect()
}

/// The NATS URL of the cluster the arguments point at.
/// The admin identity `flotilla up` wrote in the target's data dir, when there is one
/// (a cluster without NATS authorization has none).
pub fn find_creds(t: &Target) -> Result<Option<bus::creds::Credentials>> {
    if let Some(p) = &t.nats_creds {
        return Ok(Some(bus::creds::Credentials::load(p)?));
    }
    if t.nats_url.is_some() && t.data_dir.is_none() && t.kubeconfig.is_none() {
        return Ok(None);
    }
    let dir = match (t.data_dir.as_deref(), t.kubeconfig.as_deref()) {
        (Some(d), _) => d.to_path_buf(),
        (None, Some(k)) => k.parent().map(Path::to_path_buf).unwrap_or_default(),
        (None, None) => PathBuf::from("./.flotilla"),
    };
    let path = crate::identities::file(&dir.join("nats"), &schema::natsauth::Role::Admin);
    if !path.exists() {
        return Ok(None);
    }
    Ok(Some(bus::creds::Credentials::load(&path)?))
}

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

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(id: u64, role: &str, members: &[u64]) -> MemberStatus {
        MemberStatus {
            id,
            pid: 100 + id as u32,
            addr: format!("a{id}"),
            role: role.into(),
            applied: 7,
            members: members.iter().map(|m| (*m, format!("a{m}"))).collect(),
            voters: members.to_vec(),
            snapshot: None,
        }
    }

    #[test]
    fn a_silent_member_is_down() {
        let r = rows(&[answer(2, "follower", &[1, 2, 3]), answer(1, "leader", &[1, 2, 3])]);
        let roles: Vec<_> = r.iter().map(|r| (r.id, r.role.as_str(), r.pid)).collect();
        assert_eq!(roles, vec![(1, "leader", Some(101)), (2, "follower", Some(102)), (3, "down", None)]);
        assert_eq!(r[2].addr, "a3");
    }
}

pub async fn run(a: StatusArgs) -> Result<()> {
    let t = &a.target;
    let url = find_nats(t.nats_url.as_deref(), t.data_dir.as_deref(), t.kubeconfig.as_deref())?;
    let mut opts = async_nats::ConnectOptions::new();
    if let Some(c) = find_creds(t)? {
        opts = opts.nkey(c.seed).custom_inbox_prefix(c.inbox);
    }
    let nats = opts.connection_timeout(Duration::from_secs(3)).connect(url.split(',').map(str::trim).collect::<Vec<_>>()).await.with_context(|| format!("connecting to {url}"))?;
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
    let table = rows(&members);
    if a.output == "json" {
        let v: Vec<serde_json::Value> = table
            .iter()
            .map(|m| serde_json::json!({"id": m.id, "pid": m.pid, "addr": m.addr, "role": m.role, "applied": m.applied}))
            .collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        let dash = |v: Option<String>| v.unwrap_or_else(|| "-".into());
        println!("{:<4} {:<8} {:<22} {:<10} {}", "ID", "PID", "ADDRESS", "ROLE", "APPLIED");
        for m in &table {
            println!("{:<4} {:<8} {:<22} {:<10} {}", m.id, dash(m.pid.map(|p| p.to_string())), m.addr, m.role, dash(m.applied.map(|a| a.to_string())));
        }
    }
    if members.is_empty() {
        bail!("no state member answered on {url}");
    }
    Ok(())
}
