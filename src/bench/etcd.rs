//! The etcd side of the comparison: a 3-member etcd 3.4 cluster (Debian's `etcd-server`)
//! on loopback with its default durability (fsync per commit), and a minimal client for
//! its KV service. The four prost messages are written by hand so that nothing needs
//! `protoc`; field numbers are those of etcd's `rpc.proto` and `kv.proto`.

use super::proc::Proc;
use crate::natsd::free_port;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use tonic::client::Grpc;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::{Channel, Endpoint};

/// The etcd binary: `$ETCD`, else `/usr/bin/etcd`, else `etcd` on the PATH.
pub fn binary() -> Result<PathBuf> {
    if let Ok(p) = std::env::var("ETCD") {
        let p = PathBuf::from(p);
        if !p.is_file() {
            bail!("ETCD={} is not a file: `flotilla bench store` needs etcd 3.4 (Debian's etcd-server package)", p.display());
        }
        return Ok(p);
    }
    let candidates = [PathBuf::from("/usr/bin/etcd"), PathBuf::from("/usr/local/bin/etcd")];
    let on_path = std::env::var_os("PATH").into_iter().flat_map(|p| std::env::split_paths(&p).map(|d| d.join("etcd")).collect::<Vec<_>>());
    candidates.into_iter().chain(on_path).find(|p| p.is_file()).context(
        "etcd not found: `flotilla bench store` compares against etcd 3.4; install Debian's etcd-server package \
         (bash deploy/install-deps.sh does) or set ETCD=/path/to/etcd",
    )
}

pub struct Cluster {
    pub members: Vec<Proc>,
    /// Client URLs, one per member.
    pub endpoints: Vec<String>,
}

impl Cluster {
    /// Starts `n` members under `dir`, each with its own data dir and log, and waits until
    /// the cluster accepts a put.
    pub async fn start(dir: &Path, n: usize) -> Result<Cluster> {
        let bin = binary()?;
        let ports: Vec<(u16, u16)> = (0..n).map(|_| Ok((free_port()?, free_port()?))).collect::<Result<_>>()?;
        let initial = ports.iter().enumerate().map(|(i, (_, p))| format!("m{}=http://127.0.0.1:{p}", i + 1)).collect::<Vec<_>>().join(",");
        let mut members = Vec::new();
        let mut endpoints = Vec::new();
        for (i, (client, peer)) in ports.iter().enumerate() {
            let name = format!("m{}", i + 1);
            let mdir = dir.join(format!("etcd-{name}"));
            std::fs::create_dir_all(&mdir)?;
            let mut cmd = Command::new(&bin);
            cmd.arg("--name").arg(&name)
                .arg("--data-dir").arg(mdir.join("data"))
                .arg("--listen-client-urls").arg(format!("http://127.0.0.1:{client}"))
                .arg("--advertise-client-urls").arg(format!("http://127.0.0.1:{client}"))
                .arg("--listen-peer-urls").arg(format!("http://127.0.0.1:{peer}"))
                .arg("--initial-advertise-peer-urls").arg(format!("http://127.0.0.1:{peer}"))
                .arg("--initial-cluster").arg(&initial)
                .arg("--initial-cluster-token").arg("flotilla-bench")
                .arg("--initial-cluster-state").arg("new")
                .arg("--logger").arg("zap")
                .arg("--log-outputs").arg("stderr");
            members.push(Proc::spawn(format!("etcd {name}"), cmd, &mdir.join("etcd.log"))?);
            endpoints.push(format!("http://127.0.0.1:{client}"));
        }
        let mut cluster = Cluster { members, endpoints };
        cluster.wait_ready().await?;
        Ok(cluster)
    }

    async fn wait_ready(&mut self) -> Result<()> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        let mut last_err = String::new();
        loop {
            for m in &mut self.members {
                m.check_alive()?;
            }
            if let Ok(client) = Client::connect(&self.endpoints, 1).await {
                match client.put(0, b"bench-ready".to_vec(), b"1".to_vec()).await {
                    Ok(()) => return Ok(()),
                    Err(e) => last_err = e,
                }
            }
            if tokio::time::Instant::now() > deadline {
                bail!("etcd cluster not ready within 60 s ({last_err}); see {}", self.members[0].log.display());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub fn stop(&mut self) {
        for m in &mut self.members {
            m.stop();
        }
    }
}

/// `conns` gRPC connections spread round-robin over the members, like etcd's own
/// `benchmark --conns N --endpoints …`; client `c` uses connection `c % conns`.
#[derive(Clone)]
pub struct Client {
    conns: Vec<Grpc<Channel>>,
}

const PUT: &str = "/etcdserverpb.KV/Put";
const RANGE: &str = "/etcdserverpb.KV/Range";

impl Client {
    pub async fn connect(endpoints: &[String], conns: usize) -> Result<Client> {
        let mut out = Vec::new();
        for i in 0..conns.max(1) {
            let ep = &endpoints[i % endpoints.len()];
            let ch = Endpoint::from_shared(ep.clone())?
                .connect_timeout(Duration::from_secs(5))
                .tcp_nodelay(true)
                .connect()
                .await
                .with_context(|| format!("connecting to etcd at {ep}"))?;
            out.push(Grpc::new(ch));
        }
        Ok(Client { conns: out })
    }

    pub async fn put(&self, client: usize, key: Vec<u8>, value: Vec<u8>) -> Result<(), String> {
        let mut g = self.conns[client % self.conns.len()].clone();
        g.ready().await.map_err(|e| e.to_string())?;
        let codec = tonic_prost::ProstCodec::<PutRequest, PutResponse>::default();
        g.unary(tonic::Request::new(PutRequest { key, value, ..Default::default() }), PathAndQuery::from_static(PUT), codec)
            .await
            .map(|_| ())
            .map_err(|s| format!("etcd put: {}", s.message()))
    }

    /// A linearizable read (etcd's default Range, serializable = false). Fails when the key
    /// is absent, so a read that finds nothing does not count as a served read.
    pub async fn get(&self, client: usize, key: Vec<u8>) -> Result<(), String> {
        let mut g = self.conns[client % self.conns.len()].clone();
        g.ready().await.map_err(|e| e.to_string())?;
        let codec = tonic_prost::ProstCodec::<RangeRequest, RangeResponse>::default();
        let resp = g
            .unary(tonic::Request::new(RangeRequest { key, ..Default::default() }), PathAndQuery::from_static(RANGE), codec)
            .await
            .map_err(|s| format!("etcd range: {}", s.message()))?;
        match resp.into_inner().kvs.len() {
            0 => Err("etcd range: key not found".into()),
            _ => Ok(()),
        }
    }
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ResponseHeader {
    #[prost(uint64, tag = "1")]
    pub cluster_id: u64,
    #[prost(uint64, tag = "2")]
    pub member_id: u64,
    #[prost(int64, tag = "3")]
    pub revision: i64,
    #[prost(uint64, tag = "4")]
    pub raft_term: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct PutRequest {
    #[prost(bytes = "vec", tag = "1")]
    pub key: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    pub value: Vec<u8>,
    #[prost(int64, tag = "3")]
    pub lease: i64,
    #[prost(bool, tag = "4")]
    pub prev_kv: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct PutResponse {
    #[prost(message, optional, tag = "1")]
    pub header: Option<ResponseHeader>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct RangeRequest {
    #[prost(bytes = "vec", tag = "1")]
    pub key: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    pub range_end: Vec<u8>,
    #[prost(int64, tag = "3")]
    pub limit: i64,
    #[prost(int64, tag = "4")]
    pub revision: i64,
    /// false = linearizable (the default), true = served from the local member.
    #[prost(bool, tag = "7")]
    pub serializable: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct KeyValue {
    #[prost(bytes = "vec", tag = "1")]
    pub key: Vec<u8>,
    #[prost(int64, tag = "2")]
    pub create_revision: i64,
    #[prost(int64, tag = "3")]
    pub mod_revision: i64,
    #[prost(int64, tag = "4")]
    pub version: i64,
    #[prost(bytes = "vec", tag = "5")]
    pub value: Vec<u8>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct RangeResponse {
    #[prost(message, optional, tag = "1")]
    pub header: Option<ResponseHeader>,
    #[prost(message, repeated, tag = "2")]
    pub kvs: Vec<KeyValue>,
    #[prost(bool, tag = "3")]
    pub more: bool,
    #[prost(int64, tag = "4")]
    pub count: i64,
}
