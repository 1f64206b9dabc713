//! Test fixture: a state group of real `flotilla state` processes on one nats-server,
//! each member killable (SIGKILL), restartable on its own data dir, and isolatable
//! through its transport's fault switch. Every process is stopped by PID on drop.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::free_port;
use schema::store::MemberStatus;

pub struct Member {
    pub id: u64,
    pub addr: String,
    pub dir: PathBuf,
    pub log: PathBuf,
    child: Option<Child>,
}

pub struct Group {
    pub nats_url: String,
    pub members: BTreeMap<u64, Member>,
    peers: String,
    extra: Vec<String>,
    _dir: tempfile::TempDir,
}

impl Group {
    /// Starts `n` members (ids 1..=n) with `extra` arguments each (e.g. a small
    /// `--snapshot-every`).
    pub fn start(nats_url: &str, n: u64, extra: &[&str]) -> Group {
        let dir = tempfile::tempdir().expect("temp dir for the state group");
        let mut members = BTreeMap::new();
        for id in 1..=n {
            let mdir = dir.path().join(format!("state-{id}"));
            std::fs::create_dir_all(&mdir).expect("member dir");
            let addr = format!("127.0.0.1:{}", free_port());
            members.insert(id, Member { id, addr, log: mdir.join("member.log"), dir: mdir, child: None });
        }
        let peers = members.values().map(|m| format!("{}={}", m.id, m.addr)).collect::<Vec<_>>().join(",");
        let mut g = Group { nats_url: nats_url.to_string(), members, peers, extra: extra.iter().map(|s| s.to_string()).collect(), _dir: dir };
        let ids: Vec<u64> = g.members.keys().copied().collect();
        for id in ids {
            g.start_member(id);
        }
        g
    }

    /// Starts (again) the member `id` on its own data dir.
    pub fn start_member(&mut self, id: u64) {
        let args = vec!["--id".to_string(), id.to_string(), "--peers".into(), self.peers.clone()];
        self.launch(id, args);
    }

    /// Starts member `id` afresh (empty data dir) as one joining the running group; it
    /// takes part once `flotilla state member add` (or `Bus::admin`) adds it.
    pub fn join_member(&mut self, id: u64) {
        let m = &self.members[&id];
        let _ = std::fs::remove_dir_all(&m.dir);
        std::fs::create_dir_all(&m.dir).expect("member dir");
        let args = vec!["--join".to_string(), "--id".into(), id.to_string(), "--listen".into(), m.addr.clone()];
        self.launch(id, args);
    }

    fn launch(&mut self, id: u64, args: Vec<String>) {
        let (url, extra) = (self.nats_url.clone(), self.extra.clone());
        let m = self.members.get_mut(&id).expect("known member");
        assert!(m.child.is_none(), "member {id} is running already");
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&m.log).expect("member log");
        let child = Command::new(env!("CARGO_BIN_EXE_flotilla"))
            .arg("state")
            .args(&args)
            .arg("--data-dir")
            .arg(&m.dir)
            .args(["--nats-url", &url])
            .args(&extra)
            .env("RUST_LOG", "info,async_nats=warn,openraft=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting flotilla state {args:?}: {e}"));
        m.child = Some(child);
    }

    /// SIGKILL, as a crash would.
    pub fn kill(&mut self, id: u64) {
        if let Some(mut c) = self.members.get_mut(&id).and_then(|m| m.child.take()) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Cuts (or restores) all Raft traffic of member `id`.
    pub async fn isolate(&self, id: u64, on: bool) {
        let addr = &self.members[&id].addr;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match actors::state::transport::set_fault(addr, Some(on)).await {
                Ok(now) if now == on => return,
                Ok(_) => {}
                Err(e) if Instant::now() > deadline => panic!("fault switch of member {id} at {addr}: {e:#}"),
                Err(_) => {}
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Every member's status answer, gathered for a moment.
    pub async fn status(&self) -> Vec<MemberStatus> {
        use futures::StreamExt;
        let Ok(nats) = async_nats::connect(&self.nats_url).await else { return Vec::new() };
        let inbox = nats.new_inbox();
        let Ok(mut sub) = nats.subscribe(inbox.clone()).await else { return Vec::new() };
        if nats.publish_with_reply(schema::subjects::STATE_STATUS, inbox, "".into()).await.is_err() {
            return Vec::new();
        }
        let _ = nats.flush().await;
        let mut out = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_millis(500);
        while let Ok(Some(msg)) = tokio::time::timeout_at(deadline, sub.next()).await {
            if let Ok(m) = schema::codec::decode::<MemberStatus>(&msg.payload) {
                out.push(m);
            }
        }
        out.sort_by_key(|m| m.id);
        out
    }

    /// The leader's id, waiting (bounded) until exactly one member says it leads.
    pub async fn leader(&self, within: Duration) -> u64 {
        let deadline = Instant::now() + within;
        loop {
            let st = self.status().await;
            let leaders: Vec<u64> = st.iter().filter(|m| m.role == "leader").map(|m| m.id).collect();
            if leaders.len() == 1 {
                return leaders[0];
            }
            if Instant::now() > deadline {
                panic!("no single leader within {within:?}: {st:?}\n{}", self.logs());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn logs(&self) -> String {
        self.members
            .values()
            .map(|m| {
                let text = std::fs::read_to_string(&m.log).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(30).collect();
                format!("--- member {} ---\n{}", m.id, tail.into_iter().rev().collect::<Vec<_>>().join("\n"))
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        let ids: Vec<u64> = self.members.keys().copied().collect();
        for id in ids {
            self.kill(id);
        }
    }
}
