//! `flotilla state …`, `flotilla backup` and `flotilla restore`: running one state-group
//! member, and the commands that look after a running group (status, membership, the
//! transport's fault switch) or save and rebuild one.

use crate::status;
use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use schema::store::{AdminOp, AdminResult};
use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct StateArgs {
    #[command(subcommand)]
    pub action: Option<StateCmd>,
    #[command(flatten)]
    pub common: crate::Common,
    #[command(flatten)]
    pub member: MemberArgs,
}

/// How one member runs.
#[derive(Args, Clone)]
pub struct MemberArgs {
    #[arg(long, default_value_t = 1)]
    pub id: u64,
    #[arg(long, default_value = "./.flotilla/state")]
    pub data_dir: PathBuf,
    /// The group's initial members and their Raft addresses: `1=127.0.0.1:7001,2=…`.
    /// Without it the member is a group of one.
    #[arg(long, value_parser = parse_peers)]
    pub peers: Option<BTreeMap<u64, String>>,
    /// Where this member's Raft transport listens (default: its entry in --peers).
    #[arg(long)]
    pub listen: Option<String>,
    /// Join a running group (added with `flotilla state member add`) instead of forming one.
    #[arg(long)]
    pub join: bool,
    /// Snapshot and compact the Raft log every this many entries.
    #[arg(long, default_value_t = actors::state::DEFAULT_SNAPSHOT_EVERY)]
    pub snapshot_every: u64,
    /// Keep watch history this long (seconds) …
    #[arg(long, default_value_t = 3600)]
    pub history_max_age: u64,
    /// … and at most this many events.
    #[arg(long, default_value_t = 1_000_000)]
    pub history_max_events: i64,
    /// On how many nats-servers the events stream is kept (a NATS cluster's size, ≤ 5).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=5))]
    pub events_replicas: u64,
    /// Refuse writes (not deletes) once keys and values take this many bytes.
    #[arg(long, default_value_t = actors::state::DEFAULT_QUOTA_BYTES)]
    pub quota_bytes: u64,
}

impl MemberArgs {
    pub fn config(&self) -> actors::state::StateConfig {
        let mut cfg = actors::state::StateConfig::single(self.data_dir.clone());
        cfg.node_id = self.id;
        cfg.peers = self.peers.clone().unwrap_or_default();
        cfg.listen = self.listen.clone();
        cfg.join = self.join;
        cfg.snapshot_every = self.snapshot_every;
        cfg.history = actors::state::HistoryLimits { max_age: Duration::from_secs(self.history_max_age), max_events: self.history_max_events, replicas: self.events_replicas as usize };
        cfg.quota_bytes = self.quota_bytes;
        cfg
    }
}

pub fn parse_peers(s: &str) -> Result<BTreeMap<u64, String>, String> {
    let mut out = BTreeMap::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (id, addr) = part.split_once('=').ok_or_else(|| format!("`{part}` is not id=host:port"))?;
        let id: u64 = id.trim().parse().map_err(|_| format!("`{id}` is not a member id"))?;
        if addr.trim().is_empty() {
            return Err(format!("member {id} has no address"));
        }
        if out.insert(id, addr.trim().to_string()).is_some() {
            return Err(format!("member {id} is listed twice"));
        }
    }
    if out.is_empty() {
        return Err("no members listed".into());
    }
    Ok(out)
}

pub fn format_peers(peers: &BTreeMap<u64, String>) -> String {
    peers.iter().map(|(id, a)| format!("{id}={a}")).collect::<Vec<_>>().join(",")
}

#[derive(Subcommand)]
pub enum StateCmd {
    /// One line per member: id, pid, address, role, last applied index (`-o json` too).
    Status(status::StatusArgs),
    /// Add or remove a member of a running group.
    #[command(subcommand)]
    Member(MemberCmd),
    /// Cut a member's Raft traffic (its fault switch) or restore it; for fault tests.
    Fault(FaultArgs),
}

#[derive(Subcommand)]
pub enum MemberCmd {
    /// Add a member (start it first with `flotilla state --join --id N --listen ADDR`):
    /// it catches up as a learner, then votes.
    Add {
        #[command(flatten)]
        target: status::Target,
        #[arg(long)]
        id: u64,
        /// Its Raft transport's address.
        #[arg(long)]
        addr: String,
    },
    /// Remove a member from the group.
    Remove {
        #[command(flatten)]
        target: status::Target,
        #[arg(long)]
        id: u64,
    },
}

#[derive(Args)]
pub struct FaultArgs {
    /// The member's Raft transport address.
    #[arg(long)]
    pub addr: String,
    /// `isolate` drops all of its Raft traffic, `heal` restores it, `show` only asks.
    #[arg(value_parser = ["isolate", "heal", "show"])]
    pub action: String,
}

#[derive(Args)]
pub struct BackupArgs {
    #[command(flatten)]
    pub target: status::Target,
    /// Where to write the backup.
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Args)]
pub struct RestoreArgs {
    /// A file written by `flotilla backup`.
    pub file: PathBuf,
    /// A new data dir for `flotilla up --data-dir` (the state goes to its `state/`).
    #[arg(long)]
    pub data_dir: PathBuf,
}

pub async fn run(a: StateArgs) -> Result<()> {
    match a.action {
        Some(StateCmd::Status(s)) => status::run(s).await,
        Some(StateCmd::Member(m)) => member(m).await,
        Some(StateCmd::Fault(f)) => {
            let want = match f.action.as_str() {
                "isolate" => Some(true),
                "heal" => Some(false),
                _ => None,
            };
            let isolated = actors::state::transport::set_fault(&f.addr, want).await.with_context(|| format!("reaching the member at {}", f.addr))?;
            println!("{}: {}", f.addr, if isolated { "isolated" } else { "connected" });
            Ok(())
        }
        None => {
            let bus = a.common.connect().await?;
            bus::obs::start(bus.clone(), "state", tokio_util::sync::CancellationToken::new());
            let h = actors::state::start(a.member.config(), bus.nats.clone()).await?;
            crate::component(&a.common, "state member", || async move { h.shutdown().await }).await
        }
    }
}

async fn connect(target: &status::Target) -> Result<bus::Bus> {
    let url = status::find_nats(target.nats_url.as_deref(), target.data_dir.as_deref(), target.kubeconfig.as_deref())?;
    let creds = status::find_creds(target)?;
    Ok(bus::Bus::connect_as(&url, creds.as_ref()).await?)
}

async fn member(cmd: MemberCmd) -> Result<()> {
    let (target, op) = match cmd {
        MemberCmd::Add { target, id, addr } => (target, AdminOp::AddMember { id, addr }),
        MemberCmd::Remove { target, id } => (target, AdminOp::RemoveMember { id }),
    };
    let bus = connect(&target).await?;
    match bus.admin(&op).await.context("changing the membership")? {
        AdminResult::Members { voters, learners } => {
            println!("voters: {voters:?} learners: {learners:?}");
            Ok(())
        }
        other => bail!("unexpected answer: {other:?}"),
    }
}

/// Fetches a consistent backup from the leader, chunk by chunk, into `--out`.
pub async fn backup(a: BackupArgs) -> Result<()> {
    let bus = connect(&a.target).await?;
    let mut name = None;
    let mut data = Vec::new();
    let (total, rev) = loop {
        let answer = bus.admin(&AdminOp::Backup { backup: name.clone(), offset: data.len() as u64 }).await.context("taking a backup")?;
        let AdminResult::BackupChunk { backup, total, rev, data: chunk } = answer else { bail!("unexpected answer to a backup request") };
        if chunk.is_empty() && (data.len() as u64) < total {
            bail!("the backup ended early at {} of {total} bytes", data.len());
        }
        data.extend_from_slice(&chunk);
        name = Some(backup);
        if data.len() as u64 >= total {
            break (total, rev);
        }
    };
    // Written beside the target and renamed, so a failed backup never leaves half a file.
    let tmp = a.out.with_extension("partial");
    let mut f = std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    f.write_all(&data)?;
    f.sync_all()?;
    std::fs::rename(&tmp, &a.out)?;
    println!("backup of revision {rev} ({total} bytes) written to {}", a.out.display());
    Ok(())
}

pub fn restore(a: RestoreArgs) -> Result<()> {
    let bytes = std::fs::read(&a.file).with_context(|| format!("reading {}", a.file.display()))?;
    let state_dir = a.data_dir.join("state");
    let (rev, keys) = actors::state::restore(&bytes, &state_dir)?;
    println!("restored {keys} objects at revision {rev} into {}; start it with: flotilla up --data-dir {}", state_dir.display(), a.data_dir.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_parse_and_print() {
        let p = parse_peers("1=127.0.0.1:7001, 2=127.0.0.1:7002,3=h:1").expect("parse");
        assert_eq!(p.len(), 3);
        assert_eq!(format_peers(&p), "1=127.0.0.1:7001,2=127.0.0.1:7002,3=h:1");
        assert!(parse_peers("1=a,1=b").is_err());
        assert!(parse_peers("x=a").is_err());
        assert!(parse_peers("1=").is_err());
        assert!(parse_peers("").is_err());
    }
}
