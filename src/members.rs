//! The state group of `flotilla up --state-members N` (N > 1): each member is its own
//! child process (`flotilla state --id i --peers …`), so one can be killed as a real
//! member would die. Members that exit unasked are started again, like a supervisor
//! would; a stop sends SIGTERM to each and SIGKILL to any that lingers.

use crate::natsd::free_port;
use crate::state::{format_peers, parse_peers};
use anyhow::{Context, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Restart delay for a member that exited unasked.
const RESTART_AFTER: Duration = Duration::from_secs(1);
const STOP_GRACE: Duration = Duration::from_secs(10);

pub struct Members {
    stop: CancellationToken,
    supervisors: Vec<JoinHandle<()>>,
    /// Each member's pid (it changes when a member is started again) and health address.
    pub pids: BTreeMap<u64, (Arc<AtomicU32>, String)>,
}

/// The members' Raft addresses: chosen once and kept in the data dir, since the group's
/// membership (on every member's disk) names them.
fn peers(data_dir: &Path, n: u64) -> Result<BTreeMap<u64, String>> {
    let file = data_dir.join("state-peers");
    if let Ok(text) = std::fs::read_to_string(&file) {
        let p = parse_peers(text.trim()).map_err(anyhow::Error::msg).with_context(|| format!("reading {}", file.display()))?;
        if p.len() as u64 == n {
            return Ok(p);
        }
        anyhow::bail!("{} lists {} members but --state-members is {n}; use a new data dir", file.display(), p.len());
    }
    let mut p = BTreeMap::new();
    for id in 1..=n {
        p.insert(id, format!("127.0.0.1:{}", free_port()?));
    }
    std::fs::write(&file, format_peers(&p))?;
    Ok(p)
}

pub fn start(data_dir: &Path, n: u64, nats_url: &str, events_replicas: usize) -> Result<Members> {
    let exe = std::env::current_exe().context("finding the flotilla binary")?;
    let peers = peers(data_dir, n)?;
    let stop = CancellationToken::new();
    let mut supervisors = Vec::new();
    let mut pids = BTreeMap::new();
    for id in peers.keys() {
        let dir = data_dir.join(format!("state-{id}"));
        std::fs::create_dir_all(&dir)?;
        // Each member serves /healthz, /readyz and /metrics on a port of its own.
        let health = format!("127.0.0.1:{}", free_port()?);
        let args = vec![
            "state".to_string(),
            "--health-addr".into(),
            health.clone(),
            "--id".into(),
            id.to_string(),
            "--data-dir".into(),
            dir.display().to_string(),
            "--peers".into(),
            format_peers(&peers),
            "--nats-url".into(),
            nats_url.to_string(),
            "--events-replicas".into(),
            events_replicas.to_string(),
        ];
        let pid = Arc::new(AtomicU32::new(0));
        pids.insert(*id, (pid.clone(), health));
        let child = spawn(&exe, &args, &dir)?;
        pid.store(child.id().unwrap_or(0), Ordering::SeqCst);
        supervisors.push(tokio::spawn(supervise(*id, exe.clone(), args, dir, child, pid, stop.clone())));
    }
    Ok(Members { stop, supervisors, pids })
}

fn spawn(exe: &Path, args: &[String], dir: &Path) -> Result<tokio::process::Child> {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("member.log"))?;
    let mut cmd = tokio::process::Command::new(exe);
    cmd.args(args).stdin(std::process::Stdio::null()).stdout(log.try_clone()?).stderr(log);
    // SAFETY: prctl is async-signal-safe; it only asks for SIGTERM when `up` dies, so a
    // crashed `up` never leaves members behind.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        });
    }
    cmd.spawn().with_context(|| format!("starting state member: {} {}", exe.display(), args.join(" ")))
}

async fn supervise(
    id: u64,
    exe: PathBuf,
    args: Vec<String>,
    dir: PathBuf,
    mut child: tokio::process::Child,
    pid: Arc<AtomicU32>,
    stop: CancellationToken,
) {
    loop {
        pid.store(child.id().unwrap_or(0), Ordering::SeqCst);
        tokio::select! {
            status = child.wait() => {
                eprintln!("[flotilla up] state member {id} exited ({}); starting it again", status.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string()));
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(RESTART_AFTER) => {}
                }
                // A member that cannot even be spawned is retried until `up` stops.
                child = loop {
                    match spawn(&exe, &args, &dir) {
                        Ok(c) => break c,
                        Err(e) => eprintln!("[flotilla up] state member {id}: {e:#}"),
                    }
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(RESTART_AFTER) => {}
                    }
                };
            }
            _ = stop.cancelled() => {
                terminate(&mut child).await;
                return;
            }
        }
    }
}

async fn terminate(child: &mut tokio::process::Child) {
    if let Some(pid) = child.id() {
        // SAFETY: signalling our own child by pid.
        unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    }
    if tokio::time::timeout(STOP_GRACE, child.wait()).await.is_err() {
        let _ = child.kill().await;
    }
}

impl Members {
    pub async fn shutdown(self) {
        self.stop.cancel();
        for s in self.supervisors {
            let _ = s.await;
        }
    }
}
