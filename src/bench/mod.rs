//! `flotilla bench store`: the same closed-loop load — puts of 256-byte values and
//! linearizable reads, at 1, 64 and 1,000 concurrent clients — first against a flotilla
//! state group, then against a 3-member etcd 3.4 on the same machine, then puts against a
//! single flotilla member; prints one table and the flotilla/etcd ratios. `flotilla bench
//! api` (api.rs) measures the gateway over HTTPS instead.

mod api;
mod density;
mod etcd;
mod flotilla;
mod load;
mod openloop;
mod proc;
mod svg;
mod watch;

use anyhow::{bail, Result};
use clap::{Args, Subcommand};
use load::{Outcome, Phase};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

#[derive(Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    what: BenchCmd,
}

#[derive(Subcommand)]
enum BenchCmd {
    /// flotilla's state group against etcd 3.4, side by side (starts and stops both).
    Store(StoreArgs),
    /// The gateway's GET, LIST and CREATE at a fixed rate over HTTPS (starts and stops a
    /// local cluster).
    Api(api::ApiArgs),
    /// kubemark's density test: hollow nodes, pods created as fast as the API takes them,
    /// scheduling throughput and pod startup latency (starts and stops its own cluster).
    Density(density::DensityArgs),
    /// One write seen by many watchers (gateway HTTP watches and bus watches): delivery
    /// latency, lost or doubled events, peak RSS (starts and stops a local cluster).
    Watch(watch::WatchArgs),
}

#[derive(Args, Clone)]
struct StoreArgs {
    /// A short run of the same comparison (well under two minutes).
    #[arg(long)]
    quick: bool,
    /// Seconds measured per step (default 10, or 3 with --quick), after a warm-up.
    #[arg(long)]
    duration: Option<f64>,
    /// Size of the key space the clients write and read (created before timing).
    #[arg(long, default_value_t = 1000)]
    keys: usize,
    /// Concurrent clients per step.
    #[arg(long, value_delimiter = ',', default_values_t = [1, 64, 1000])]
    clients: Vec<usize>,
    /// Members of the flotilla state group compared with the 3-member etcd.
    #[arg(long, default_value_t = 3)]
    members: usize,
    /// Clients sharing one connection (a NATS connection for flotilla, a gRPC connection
    /// for etcd).
    #[arg(long, default_value_t = 64)]
    clients_per_conn: usize,
    /// Keep the temporary data directories (and the members' logs) afterwards.
    #[arg(long)]
    keep: bool,
}

const VALUE_BYTES: usize = 256;
const ETCD_MEMBERS: usize = 3;

pub async fn run(args: BenchArgs) -> Result<()> {
    match args.what {
        // Dropping the bench on a signal drops its clusters, which stop their processes.
        BenchCmd::Store(a) => tokio::select! {
            r = store(a) => r,
            _ = crate::wait_for_signal() => bail!("interrupted; the bench's processes were stopped"),
        },
        BenchCmd::Api(a) => tokio::select! {
            r = api::run(a) => r,
            _ = crate::wait_for_signal() => bail!("interrupted; the bench's cluster was stopped"),
        },
        BenchCmd::Density(a) => tokio::select! {
            r = density::run(a) => r,
            _ = crate::wait_for_signal() => bail!("interrupted; the bench's cluster was stopped"),
        },
        BenchCmd::Watch(a) => tokio::select! {
            r = watch::run(a) => r,
            _ = crate::wait_for_signal() => bail!("interrupted; the bench's cluster was stopped"),
        },
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Op {
    Put,
    Get,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Put => "put",
            Op::Get => "get",
        }
    }
}

struct Row {
    system: &'static str,
    members: usize,
    op: Op,
    clients: usize,
    out: Outcome,
}

/// Removes the bench's directory when the bench ends, however it ends.
pub(super) struct TempDir {
    pub path: PathBuf,
    pub keep: bool,
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if self.keep {
            eprintln!("kept {}", self.path.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

async fn store(a: StoreArgs) -> Result<()> {
    etcd::binary()?;
    let measure = Duration::from_secs_f64(a.duration.unwrap_or(if a.quick { 3.0 } else { 10.0 }));
    let warmup = if a.quick { Duration::from_secs(1) } else { Duration::from_secs(2) };
    let dir = TempDir { path: std::env::temp_dir().join(format!("flotilla-bench-{}", std::process::id())), keep: a.keep };
    std::fs::create_dir_all(&dir.path)?;
    let keys = Arc::new((0..a.keys.max(1)).map(flotilla::key).collect::<Vec<_>>());
    let plan = Plan { warmup, measure, clients_per_conn: a.clients_per_conn.max(1), keys };

    println!(
        "flotilla bench store: {VALUE_BYTES}-byte puts and linearizable gets over {} keys on {} cores; {:.0} s measured per step after {:.0} s warm-up; one connection per {} clients",
        a.keys,
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        measure.as_secs_f64(),
        warmup.as_secs_f64(),
        plan.clients_per_conn
    );
    println!("{:<9} {:<8} {:<5} {:>7} {:>9} {:>8} {:>8} {:>7}", "system", "members", "op", "clients", "ops/s", "p50(ms)", "p99(ms)", "errors");
    let mut rows = Vec::new();

    eprintln!("starting a {}-member flotilla state group", a.members);
    let mut group = flotilla::Group::start(&dir.path.join("flotilla"), a.members).await?;
    eprintln!("  pids {}", pids(&group.members));
    rows.extend(plan.flotilla(&group, a.members, &a.clients, &[Op::Put, Op::Get]).await?);
    group.stop();
    drop(group);

    eprintln!("starting a {ETCD_MEMBERS}-member etcd cluster");
    let mut cluster = etcd::Cluster::start(&dir.path.join("etcd"), ETCD_MEMBERS).await?;
    eprintln!("  pids {}", pids(&cluster.members));
    rows.extend(plan.etcd(&cluster, &a.clients, &[Op::Put, Op::Get]).await?);
    cluster.stop();
    drop(cluster);

    if a.members != 1 {
        eprintln!("starting a single flotilla state member");
        let mut single = flotilla::Group::start(&dir.path.join("flotilla-single"), 1).await?;
        rows.extend(plan.flotilla(&single, 1, &a.clients, &[Op::Put]).await?);
        single.stop();
    }

    for op in [Op::Put, Op::Get] {
        for &c in &a.clients {
            let find = |sys: &str, m: usize| rows.iter().find(|r| r.system == sys && r.members == m && r.op == op && r.clients == c);
            if let (Some(f), Some(e)) = (find("flotilla", a.members), find("etcd", ETCD_MEMBERS)) {
                println!("{}", ratio_line(op, c, &f.out, &e.out));
            }
        }
    }
    Ok(())
}

fn pids(members: &[proc::Proc]) -> String {
    members.iter().map(|m| m.pid().to_string()).collect::<Vec<_>>().join(" ")
}

fn print_row(r: &Row) {
    println!(
        "{:<9} {:<8} {:<5} {:>7} {:>9.0} {:>8.2} {:>8.2} {:>7}",
        r.system,
        r.members,
        r.op.name(),
        r.clients,
        r.out.ops_per_sec(),
        r.out.p_ms(50.0),
        r.out.p_ms(99.0),
        r.out.errors
    );
    if let Some(e) = &r.out.first_error {
        eprintln!("  first error ({} {} {} clients): {e}", r.system, r.op.name(), r.clients);
    }
}

/// `ratio put 1000 clients: flotilla/etcd throughput 2.30x, p99 0.80x` (p99 below 1 is
/// flotilla faster).
fn ratio_line(op: Op, clients: usize, f: &Outcome, e: &Outcome) -> String {
    let div = |a: f64, b: f64| if b > 0.0 { format!("{:.2}x", a / b) } else { "n/a".into() };
    format!(
        "ratio {} {clients} clients: flotilla/etcd throughput {}, p99 {}",
        op.name(),
        div(f.ops_per_sec(), e.ops_per_sec()),
        div(f.p_ms(99.0), e.p_ms(99.0))
    )
}

fn conns(clients: usize, per_conn: usize) -> usize {
    clients.div_ceil(per_conn).max(1)
}

struct Plan {
    warmup: Duration,
    measure: Duration,
    clients_per_conn: usize,
    keys: Arc<Vec<(String, String)>>,
}

impl Plan {
    fn phase(&self, clients: usize) -> Phase {
        Phase { clients, warmup: self.warmup, measure: self.measure }
    }

    fn value() -> Vec<u8> {
        (0..VALUE_BYTES).map(|i| b'a' + (i % 26) as u8).collect()
    }

    async fn flotilla(&self, group: &flotilla::Group, members: usize, clients: &[usize], ops: &[Op]) -> Result<Vec<Row>> {
        let setup = Arc::new(flotilla::Client::connect(&group.nats.url, 64.min(self.keys.len()).div_ceil(self.clients_per_conn)).await?);
        let mut pending = Vec::new();
        for (i, (k, s)) in self.keys.iter().enumerate() {
            let c = setup.clone();
            let (k, s) = (k.clone(), s.clone());
            pending.push(async move { c.create(i, k, s, Plan::value()).await });
            if pending.len() == 64 || i + 1 == self.keys.len() {
                for r in futures::future::join_all(pending.drain(..)).await {
                    r.map_err(|e| anyhow::anyhow!("creating the bench keys in flotilla: {e}"))?;
                }
            }
        }
        let mut rows = Vec::new();
        for &op in ops {
            for &n in clients {
                let client = Arc::new(flotilla::Client::connect(&group.nats.url, conns(n, self.clients_per_conn)).await?);
                let keys = self.keys.clone();
                let out = match op {
                    Op::Put => {
                        load::run(self.phase(n), move |c, seq| {
                            let (client, (k, s)) = (client.clone(), keys[load::pick(c, seq, keys.len())].clone());
                            async move { client.put(c, k, s, Plan::value()).await }
                        })
                        .await
                    }
                    Op::Get => {
                        load::run(self.phase(n), move |c, seq| {
                            let (client, k) = (client.clone(), keys[load::pick(c, seq, keys.len())].0.clone());
                            async move { client.get(c, k).await }
                        })
                        .await
                    }
                };
                let row = Row { system: "flotilla", members, op, clients: n, out };
                print_row(&row);
                rows.push(row);
            }
        }
        Ok(rows)
    }

    async fn etcd(&self, cluster: &etcd::Cluster, clients: &[usize], ops: &[Op]) -> Result<Vec<Row>> {
        let setup = Arc::new(etcd::Client::connect(&cluster.endpoints, 1).await?);
        let mut pending = Vec::new();
        for (i, (k, _)) in self.keys.iter().enumerate() {
            let c = setup.clone();
            let k = k.clone().into_bytes();
            pending.push(async move { c.put(i, k, Plan::value()).await });
            if pending.len() == 64 || i + 1 == self.keys.len() {
                for r in futures::future::join_all(pending.drain(..)).await {
                    r.map_err(|e| anyhow::anyhow!("creating the bench keys in etcd: {e}"))?;
                }
            }
        }
        let mut rows = Vec::new();
        for &op in ops {
            for &n in clients {
                let client = Arc::new(etcd::Client::connect(&cluster.endpoints, conns(n, self.clients_per_conn)).await?);
                let keys = self.keys.clone();
                let out = match op {
                    Op::Put => {
                        load::run(self.phase(n), move |c, seq| {
                            let (client, k) = (client.clone(), keys[load::pick(c, seq, keys.len())].0.clone().into_bytes());
                            async move { client.put(c, k, Plan::value()).await }
                        })
                        .await
                    }
                    Op::Get => {
                        load::run(self.phase(n), move |c, seq| {
                            let (client, k) = (client.clone(), keys[load::pick(c, seq, keys.len())].0.clone().into_bytes());
                            async move { client.get(c, k).await }
                        })
                        .await
                    }
                };
                let row = Row { system: "etcd", members: ETCD_MEMBERS, op, clients: n, out };
                print_row(&row);
                rows.push(row);
            }
        }
        Ok(rows)
    }
}
