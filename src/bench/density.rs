//! `flotilla bench density`: kubemark's density test on one machine. A cluster as users
//! run it (`flotilla up --nodes 0 --state-members 3`, fsync on), `flotilla hollow-nodes`
//! beside it, then pods created as fast as the API takes them — bare pods from several
//! clients and Deployments — while one watch sees every pod: nodes Ready time, pods bound
//! per second, pod startup latency (created → Running as a watch sees it, the SLO's
//! definition), client-side API latency per verb and each process's peak RSS. Writes the
//! throughput and latency plots as SVG beside a JSON of the figures.

use super::api::{send, Https};
use super::proc::Proc;
use super::svg;
use super::TempDir;
use anyhow::{bail, Context, Result};
use bytes::Bytes;
use clap::Args;
use http_body_util::BodyExt;
use hyper::{Method, StatusCode};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Args, Clone)]
pub struct DensityArgs {
    /// 1,000 nodes and 10,000 pods (under two minutes where it keeps up).
    #[arg(long)]
    quick: bool,
    /// Hollow nodes (default 5,000; 1,000 with --quick).
    #[arg(long)]
    nodes: Option<u32>,
    /// Pods in all (default 50,000; 10,000 with --quick).
    #[arg(long)]
    pods: Option<usize>,
    /// Share of the pods created bare by the clients; the rest come from Deployments.
    #[arg(long, default_value_t = 0.5)]
    bare_fraction: f64,
    /// Replicas per Deployment.
    #[arg(long, default_value_t = 1000)]
    deployment_size: usize,
    /// Concurrent clients creating bare pods (one keep-alive connection each).
    #[arg(long, default_value_t = 16)]
    clients: usize,
    #[arg(long, default_value_t = 3)]
    state_members: u32,
    /// How long a hollow container takes to start.
    #[arg(long, default_value_t = 0)]
    start_delay_ms: u64,
    /// Where the figures (density.json) and plots (SVG) go.
    #[arg(long, default_value = "bench-density")]
    out: PathBuf,
    /// Give up on pods not Running this long after the last was created.
    #[arg(long, default_value_t = 300)]
    timeout_secs: u64,
    /// Keep the cluster's data directory (and the logs) afterwards.
    #[arg(long)]
    keep: bool,
}

const NS: &str = "density";

fn pod_json(name: &str) -> String {
    format!(r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"{name}","labels":{{"bench":"density"}}}},"spec":{{"automountServiceAccountToken":false,"containers":[{{"name":"c","image":"busybox","resources":{{"requests":{{"cpu":"10m","memory":"16Mi"}}}}}}]}}}}"#)
}

fn deployment_json(name: &str, replicas: usize) -> String {
    format!(
        r#"{{"apiVersion":"apps/v1","kind":"Deployment","metadata":{{"name":"{name}"}},"spec":{{"replicas":{replicas},"selector":{{"matchLabels":{{"app":"{name}"}}}},"template":{{"metadata":{{"labels":{{"app":"{name}","bench":"density"}}}},"spec":{{"automountServiceAccountToken":false,"containers":[{{"name":"c","image":"busybox","resources":{{"requests":{{"cpu":"10m","memory":"16Mi"}}}}}}]}}}}}}}}"#
    )
}

/// What the watch saw of one pod, in seconds since the run began.
#[derive(Debug, Clone, Copy, Default)]
struct Seen {
    added: Option<f64>,
    bound: Option<f64>,
    running: Option<f64>,
}

/// Per-verb latencies the bench's own clients measured, in milliseconds.
#[derive(Default)]
struct Latencies(HashMap<&'static str, Vec<f64>>);

impl Latencies {
    fn add(&mut self, verb: &'static str, ms: f64) {
        self.0.entry(verb).or_default().push(ms);
    }
}

/// The nearest-rank percentile of sorted values.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Events per one-second window from the run's start, for `times` in seconds.
pub fn per_second(times: &[f64]) -> Vec<u32> {
    let Some(last) = times.iter().cloned().fold(None, |m: Option<f64>, t| Some(m.map_or(t, |m| m.max(t)))) else { return vec![] };
    let mut w = vec![0u32; last.floor() as usize + 1];
    for t in times {
        w[t.floor().max(0.0) as usize] += 1;
    }
    w
}

/// Peak resident set of a process (VmHWM), in bytes.
pub(super) fn peak_rss(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: u64 = s.lines().find_map(|l| l.strip_prefix("VmHWM:"))?.trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kb * 1024)
}

/// The child of `parent` named `comm` (up's nats-server and state members).
pub(super) fn children_named(parent: u32, comm: &str) -> Vec<u32> {
    let Ok(rd) = std::fs::read_dir("/proc") else { return vec![] };
    rd.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| {
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else { return false };
            // comm is in parentheses; ppid is the second field after it.
            let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else { return false };
            let name = &stat[open + 1..close];
            let ppid = stat[close + 1..].split_whitespace().nth(1).and_then(|v| v.parse::<u32>().ok());
            ppid == Some(parent) && name == comm
        })
        .collect()
}

pub async fn run(a: DensityArgs) -> Result<()> {
    let nodes = a.nodes.unwrap_or(if a.quick { 1000 } else { 5000 });
    let pods = a.pods.unwrap_or(if a.quick { 10_000 } else { 50_000 });
    let bare = ((pods as f64) * a.bare_fraction.clamp(0.0, 1.0)).round() as usize;
    let dir = TempDir { path: std::env::temp_dir().join(format!("flotilla-bench-density-{}", std::process::id())), keep: a.keep };
    std::fs::create_dir_all(&dir.path)?;
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let addr: SocketAddr = format!("127.0.0.1:{}", crate::natsd::free_port()?).parse()?;
    let data = dir.path.join("cluster");
    let exe = std::env::current_exe().context("locating the flotilla binary")?;
    let mut cmd = Command::new(&exe);
    cmd.arg("up").arg("--data-dir").arg(&data).args(["--nodes", "0", "--gateway-addr", &addr.to_string(), "--state-members", &a.state_members.to_string(), "--dashboard-addr", "off"]);
    cmd.args(["--max-requests-inflight", "4000", "--max-mutating-requests-inflight", "2000"]);
    let mut up = Proc::spawn("flotilla up", cmd, &dir.path.join("up.log"))?;
    eprintln!("started flotilla up ({} state members), pid {}, log {}", a.state_members, up.pid(), dir.path.join("up.log").display());
    let https = Https::wait_ready(&mut up, &data.join("pki"), addr).await?;
    let conf = std::fs::read_to_string(data.join("nats").join("nats.conf")).context("up's nats.conf")?;
    let nats_url = conf.lines().find_map(|l| l.strip_prefix("listen: ")).map(|l| format!("nats://{}", l.trim())).context("a listen line in nats.conf")?;
    https.once(Method::POST, "/api/v1/namespaces", Some(format!(r#"{{"apiVersion":"v1","kind":"Namespace","metadata":{{"name":"{NS}"}}}}"#)), StatusCode::CREATED).await?;

    // Nodes.
    let t0 = Instant::now();
    let mut hcmd = Command::new(&exe);
    hcmd.args(["hollow-nodes", "--nats-url", &nats_url, "--count", &nodes.to_string(), "--start-delay-ms", &a.start_delay_ms.to_string()]);
    hcmd.env("RUST_LOG", "warn").env("FLOTILLA_NATS_CREDS", data.join("nats").join("admin.creds"));
    let mut hollow = Proc::spawn("flotilla hollow-nodes", hcmd, &dir.path.join("hollow.log"))?;
    let mut conn = https.connect().await?;
    let mut lat = Latencies::default();
    let nodes_ready = loop {
        up.check_alive()?;
        hollow.check_alive()?;
        let t = Instant::now();
        let list = https.get_json(&mut conn, "/api/v1/nodes?labelSelector=type%3Dhollow").await?;
        lat.add("LIST nodes", t.elapsed().as_secs_f64() * 1e3);
        let ready = list["items"].as_array().map(|items| items.iter().filter(|n| n["status"]["conditions"].as_array().is_some_and(|cs| cs.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))).count()).unwrap_or(0);
        eprint!("\r  nodes Ready {ready}/{nodes} after {:.1} s   ", t0.elapsed().as_secs_f64());
        if ready >= nodes as usize {
            break t0.elapsed().as_secs_f64();
        }
        if t0.elapsed() > Duration::from_secs(a.timeout_secs) {
            bail!("only {ready} of {nodes} hollow nodes Ready after {} s", a.timeout_secs);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    eprintln!();

    // One watch over the namespace's pods from now on.
    let list = https.get_json(&mut conn, &format!("/api/v1/namespaces/{NS}/pods")).await?;
    let rv = list["metadata"]["resourceVersion"].as_str().unwrap_or("0").to_string();
    let seen: Arc<Mutex<HashMap<String, Seen>>> = Default::default();
    let start = Instant::now();
    let watch = tokio::spawn(watch_pods(https.clone(), rv, seen.clone(), start));

    // Create: the Deployments at once, the bare pods from the clients.
    let from_deployments = pods - bare;
    let mut left = from_deployments;
    let mut i = 0;
    while left > 0 {
        let n = left.min(a.deployment_size.max(1));
        let t = Instant::now();
        https.once(Method::POST, &format!("/apis/apps/v1/namespaces/{NS}/deployments"), Some(deployment_json(&format!("d{i}"), n)), StatusCode::CREATED).await?;
        lat.add("CREATE deployment", t.elapsed().as_secs_f64() * 1e3);
        left -= n;
        i += 1;
    }
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let lat = Arc::new(Mutex::new(lat));
    // One progress line for the whole run, creation included.
    let deadline = Instant::now() + Duration::from_secs(a.timeout_secs);
    let progress = {
        let (seen, next) = (seen.clone(), next.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let (n, bound, running) = {
                    let s = seen.lock().unwrap();
                    (s.len(), s.values().filter(|v| v.bound.is_some()).count(), s.values().filter(|v| v.running.is_some()).count())
                };
                let asked = next.load(std::sync::atomic::Ordering::Relaxed).min(bare);
                eprint!("\r  {:>6.1} s: {asked}/{bare} bare pods asked for, {n} pods seen, {bound} bound, {running} Running   ", start.elapsed().as_secs_f64());
            }
        })
    };
    let mut workers = Vec::new();
    for _ in 0..a.clients.max(1) {
        let (https, next, lat) = (https.clone(), next.clone(), lat.clone());
        workers.push(tokio::spawn(async move {
            let mut conn = https.connect().await.ok();
            let mut errors = 0usize;
            loop {
                let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                // Past the deadline the run stops creating and reports what it got.
                if n >= bare || Instant::now() > deadline {
                    return errors;
                }
                let c = match conn.take() {
                    Some(c) => Some(c),
                    None => https.connect().await.ok(),
                };
                let Some(mut c) = c else {
                    errors += 1;
                    continue;
                };
                let t = Instant::now();
                let req = https.request(Method::POST, &format!("/api/v1/namespaces/{NS}/pods"), Some(pod_json(&format!("p{n}"))));
                match send(&mut c, req, StatusCode::CREATED).await {
                    Ok(()) => {
                        lat.lock().unwrap().add("CREATE pod", t.elapsed().as_secs_f64() * 1e3);
                        conn = Some(c);
                    }
                    Err(_) => errors += 1,
                }
            }
        }));
    }
    let mut create_errors = 0;
    for w in workers {
        create_errors += w.await.unwrap_or(0);
    }
    let created_by = start.elapsed().as_secs_f64();
    let asked = next.load(std::sync::atomic::Ordering::Relaxed).min(bare);
    eprintln!();
    eprintln!("  {asked} of {bare} bare pods asked for in {created_by:.1} s ({create_errors} errors); {from_deployments} from {i} Deployments");

    // Wait until every pod runs (or the deadline).
    let mut get_conn = https.connect().await?;
    loop {
        up.check_alive()?;
        hollow.check_alive()?;
        let running = seen.lock().unwrap().values().filter(|v| v.running.is_some()).count();
        if running >= pods {
            break;
        }
        if Instant::now() > deadline {
            eprintln!();
            eprintln!("  gave up: {running} of {pods} Running after {} s", a.timeout_secs);
            break;
        }
        // A GET now and then, for the read path's latency under the load.
        let t = Instant::now();
        if https.get_json(&mut get_conn, &format!("/api/v1/namespaces/{NS}/pods/p0")).await.is_ok() {
            lat.lock().unwrap().add("GET pod", t.elapsed().as_secs_f64() * 1e3);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    progress.abort();
    eprintln!();
    watch.abort();

    // Figures.
    let seen = seen.lock().unwrap().clone();
    let mut startup: Vec<f64> = seen.values().filter_map(|s| Some((s.running? - s.added?) * 1e3)).collect();
    startup.sort_by(f64::total_cmp);
    let bound_at: Vec<f64> = seen.values().filter_map(|s| s.bound).collect();
    let windows = per_second(&bound_at);
    let busy: Vec<u32> = windows.iter().copied().filter(|n| *n > 0).collect();
    let mut sorted_w: Vec<f64> = busy.iter().map(|n| f64::from(*n)).collect();
    sorted_w.sort_by(f64::total_cmp);
    let span = bound_at.iter().cloned().fold(f64::NAN, f64::max) - bound_at.iter().cloned().fold(f64::NAN, f64::min);
    let avg = if span > 0.0 { bound_at.len() as f64 / span } else { f64::NAN };
    let rss_up = peak_rss(up.pid());
    let nats = children_named(up.pid(), "nats-server");
    let rss_nats = nats.first().and_then(|p| peak_rss(*p));
    let members: u64 = children_named(up.pid(), "flotilla").iter().filter_map(|p| peak_rss(*p)).sum();
    let rss_hollow = peak_rss(hollow.pid());
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let mib = |b: Option<u64>| b.map(|b| format!("{:.0} MiB", b as f64 / 1048576.0)).unwrap_or_else(|| "?".into());

    println!("flotilla bench density: {nodes} hollow nodes, {pods} pods ({bare} bare from {} clients, {from_deployments} from Deployments of {}), {} state members, {cores} cores", a.clients, a.deployment_size, a.state_members);
    println!("  nodes Ready           {nodes_ready:.1} s");
    println!("  pods bound            {} of {pods}", bound_at.len());
    println!("  scheduling            {avg:.0} pods/s average, p50 {:.0} pods/s over 1 s windows, peak {:.0}", percentile(&sorted_w, 50.0), sorted_w.last().copied().unwrap_or(f64::NAN));
    println!("  pod startup (ms)      p50 {:.0}  p90 {:.0}  p99 {:.0}  ({} Running)", percentile(&startup, 50.0), percentile(&startup, 90.0), percentile(&startup, 99.0), startup.len());
    let lat = std::mem::take(&mut *lat.lock().unwrap());
    let mut verbs: Vec<_> = lat.0.into_iter().collect();
    verbs.sort_by(|x, y| x.0.cmp(y.0));
    for (verb, mut v) in verbs.clone() {
        v.sort_by(f64::total_cmp);
        println!("  {verb:<21} p50 {:.1} ms  p99 {:.1} ms  ({} requests)", percentile(&v, 50.0), percentile(&v, 99.0), v.len());
    }
    println!("  peak RSS              up {} (state members {}), nats-server {}, hollow-nodes {} = {:.0} KiB per node", mib(rss_up), mib(Some(members)), mib(rss_nats), mib(rss_hollow), rss_hollow.map(|b| b as f64 / 1024.0 / f64::from(nodes.max(1))).unwrap_or(f64::NAN));

    let json = serde_json::json!({
        "nodes": nodes, "pods": pods, "bare": bare, "clients": a.clients, "state_members": a.state_members, "cores": cores,
        "nodes_ready_s": nodes_ready, "bound": bound_at.len(), "running": startup.len(),
        "scheduling_avg_per_s": avg, "scheduling_p50_per_s": percentile(&sorted_w, 50.0), "bound_per_second": windows,
        "startup_ms": {"p50": percentile(&startup, 50.0), "p90": percentile(&startup, 90.0), "p99": percentile(&startup, 99.0)},
        "api_ms": verbs.iter().map(|(k, v)| { let mut v = v.clone(); v.sort_by(f64::total_cmp); (k.to_string(), serde_json::json!({"p50": percentile(&v, 50.0), "p99": percentile(&v, 99.0), "n": v.len()})) }).collect::<serde_json::Map<_, _>>(),
        "peak_rss_bytes": {"up": rss_up, "state_members": members, "nats": rss_nats, "hollow": rss_hollow},
    });
    std::fs::write(a.out.join("density.json"), serde_json::to_string_pretty(&json)?)?;
    let tp: Vec<(f64, f64)> = windows.iter().enumerate().map(|(i, n)| (i as f64, f64::from(*n))).collect();
    std::fs::write(a.out.join("density-throughput.svg"), svg::line("pods bound per second", "seconds since the first create", "pods/s", &tp))?;
    let cdf: Vec<(f64, f64)> = startup.iter().enumerate().map(|(i, ms)| (*ms, (i + 1) as f64 / startup.len() as f64 * 100.0)).collect();
    std::fs::write(a.out.join("density-startup-cdf.svg"), svg::line("pod startup latency, CDF", "ms from created to Running", "% of pods", &cdf))?;
    println!("  figures and plots in {}", a.out.display());
    hollow.stop();
    up.stop();
    Ok(())
}

/// Watches the namespace's pods and notes when each was first seen, bound and Running.
async fn watch_pods(https: Https, rv: String, seen: Arc<Mutex<HashMap<String, Seen>>>, start: Instant) {
    let path = format!("/api/v1/namespaces/{NS}/pods?watch=1&resourceVersion={rv}&allowWatchBookmarks=false");
    let Ok(mut conn) = https.connect().await else { return };
    if conn.ready().await.is_err() {
        return;
    }
    let Ok(resp) = conn.send_request(https.request(Method::GET, &path, None)).await else { return };
    let mut body = resp.into_body();
    let mut buf: Vec<u8> = Vec::new();
    while let Some(Ok(frame)) = body.frame().await {
        let Ok(chunk) = frame.into_data() else { continue };
        buf.extend_from_slice(&chunk);
        while let Some(nl) = buf.iter().position(|b| *b == b'\n') {
            let line: Bytes = Bytes::copy_from_slice(&buf[..nl]);
            buf.drain(..=nl);
            let Ok(ev) = serde_json::from_slice::<serde_json::Value>(&line) else { continue };
            let o = &ev["object"];
            let Some(name) = o["metadata"]["name"].as_str() else { continue };
            let now = start.elapsed().as_secs_f64();
            let mut s = seen.lock().unwrap();
            let e = s.entry(name.to_string()).or_default();
            e.added.get_or_insert(now);
            if o["spec"]["nodeName"].as_str().is_some_and(|n| !n.is_empty()) {
                e.bound.get_or_insert(now);
            }
            if o["status"]["phase"] == "Running" {
                e.running.get_or_insert(now);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!((percentile(&v, 50.0), percentile(&v, 99.0), percentile(&v, 100.0)), (50.0, 99.0, 100.0));
        assert!(percentile(&[], 50.0).is_nan());
    }

    #[test]
    fn binds_are_counted_per_second_window() {
        assert_eq!(per_second(&[0.1, 0.9, 1.0, 3.5]), vec![2, 1, 0, 1]);
        assert!(per_second(&[]).is_empty());
    }
}
