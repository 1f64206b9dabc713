//! The flotilla side of the comparison: its own nats-server, then a state group of `n`
//! members, each `flotilla state` as a child process of the bench with its own data dir
//! (a 3-member group talks Raft over `--peers`), and a client spread over several NATS
//! connections.

use super::proc::Proc;
use crate::natsd::{free_port, NatsChild};
use anyhow::{bail, Context, Result};
use bus::Bus;
use schema::store::{ReadOp, ReadResult, WriteOp};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

pub struct Group {
    pub members: Vec<Proc>,
    pub nats: NatsChild,
}

impl Group {
    /// Starts a fresh nats-server under `dir` (so every group starts from an empty events
    /// stream) and `n` members, and waits until a linearizable read is answered.
    pub async fn start(dir: &Path, n: usize) -> Result<Group> {
        std::fs::create_dir_all(dir)?;
        let nats = NatsChild::start(&dir.join("nats"), None).context("starting nats-server for the flotilla state group")?;
        let exe = std::env::current_exe().context("locating the flotilla binary")?;
        let peers = if n > 1 {
            let ports = (0..n).map(|_| free_port()).collect::<Result<Vec<_>>>()?;
            Some(ports.iter().enumerate().map(|(i, p)| format!("{}=127.0.0.1:{p}", i + 1)).collect::<Vec<_>>().join(","))
        } else {
            None
        };
        let mut members = Vec::new();
        for id in 1..=n {
            let mdir = dir.join(format!("state-{id}"));
            std::fs::create_dir_all(&mdir)?;
            let mut cmd = Command::new(&exe);
            cmd.arg("state").arg("--id").arg(id.to_string()).arg("--data-dir").arg(&mdir).arg("--nats-url").arg(&nats.url);
            if let Some(p) = &peers {
                cmd.arg("--peers").arg(p);
            }
            members.push(Proc::spawn(format!("flotilla state member {id}"), cmd, &mdir.join("state.log"))?);
        }
        let mut group = Group { members, nats };
        group.wait_ready().await?;
        Ok(group)
    }

    async fn wait_ready(&mut self) -> Result<()> {
        let bus = Bus::connect(&self.nats.url).await?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        let probe = ReadOp::Get { key: schema::keys::object("bench", None, "ready") };
        loop {
            for m in &mut self.members {
                m.check_alive()?;
            }
            match tokio::time::timeout(Duration::from_secs(2), bus.read(&probe)).await {
                Ok(Ok(_)) => return Ok(()),
                _ if tokio::time::Instant::now() > deadline => {
                    bail!("the flotilla state group did not answer a read within 60 s; see {}", self.members[0].log.display())
                }
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    pub fn stop(&mut self) {
        for m in &mut self.members {
            m.stop();
        }
        self.nats.stop();
    }
}

/// The bench's keys: `bench/_/k{i}` with subjects `ev.bench._.k{i}`.
pub fn key(i: usize) -> (String, String) {
    let name = format!("k{i}");
    (schema::keys::object("bench", None, &name), schema::subjects::object_event("bench", None, &name, None))
}

/// `conns` NATS connections; client `c` uses connection `c % conns`.
#[derive(Clone)]
pub struct Client {
    conns: Vec<Bus>,
}

impl Client {
    pub async fn connect(url: &str, conns: usize) -> Result<Client> {
        let mut out = Vec::new();
        for _ in 0..conns.max(1) {
            out.push(Bus::connect(url).await?);
        }
        Ok(Client { conns: out })
    }

    pub async fn create(&self, client: usize, key: String, subject: String, value: Vec<u8>) -> Result<(), String> {
        match self.conns[client % self.conns.len()].write(&WriteOp::Create { key, subject, value }).await {
            Ok(_) => Ok(()),
            Err(bus::BusError::Store(schema::store::StoreError::AlreadyExists(_))) => Ok(()),
            Err(e) => Err(e.to_string()),
        }
    }

    pub async fn put(&self, client: usize, key: String, subject: String, value: Vec<u8>) -> Result<(), String> {
        let op = WriteOp::Update { key, subject, value, expected_rev: None };
        self.conns[client % self.conns.len()].write(&op).await.map(|_| ()).map_err(|e| e.to_string())
    }

    /// A linearizable read; an absent key is an error, as on the etcd side.
    pub async fn get(&self, client: usize, key: String) -> Result<(), String> {
        match self.conns[client % self.conns.len()].read(&ReadOp::Get { key }).await {
            Ok(ReadResult::Get { item: Some(_), .. }) => Ok(()),
            Ok(_) => Err("flotilla get: key not found".into()),
            Err(e) => Err(e.to_string()),
        }
    }
}
