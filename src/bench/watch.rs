//! `flotilla bench watch`: one write seen by many watchers. A local cluster as users run
//! it (`flotilla up --nodes 0` as a child on a temp dir), then N watchers of one
//! namespace's ConfigMaps — half HTTP watches through the gateway (`?watch=1`, HTTP/2
//! streams multiplexed over a few TLS connections), half bus watches on the events stream
//! (many per NATS connection) — and one ConfigMap updated every interval. Each watcher
//! notes when it saw each write; the bench prints delivery latency (seen − the write's
//! request sent) per kind of watcher, what any watcher lost, saw twice or out of order,
//! and the processes' peak RSS.

use super::api::Https;
use super::density::{children_named, peak_rss};
use super::TempDir;
use anyhow::{bail, Context, Result};
use bytes::Bytes;
use clap::Args;
use futures::StreamExt;
use http_body_util::{BodyExt, Full};
use hyper::{Method, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Args, Clone)]
pub struct WatchArgs {
    /// Watchers in all (default 10,000; 1,000 with --quick).
    #[arg(long)]
    watchers: Option<usize>,
    /// Share of the watchers that watch through the gateway over HTTP; the rest watch on
    /// the bus.
    #[arg(long, default_value_t = 0.5)]
    http_fraction: f64,
    /// Writes measured (default 100; 20 with --quick).
    #[arg(long)]
    writes: Option<u32>,
    /// Milliseconds between writes.
    #[arg(long, default_value_t = 100)]
    interval_ms: u64,
    /// HTTP/2 streams (watches) per gateway connection.
    #[arg(long, default_value_t = 100)]
    streams_per_conn: usize,
    /// Bus watchers per NATS connection (they share one watch of the events stream).
    #[arg(long, default_value_t = 1000)]
    bus_per_conn: usize,
    /// A smaller run: 1,000 watchers, 20 writes.
    #[arg(long)]
    quick: bool,
    /// Keep the cluster's data directory (and its log) afterwards.
    #[arg(long)]
    keep: bool,
}

const NS: &str = "bench-watch";
const NAME: &str = "watched";

fn configmap(seq: u32) -> String {
    format!(r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"{NAME}","namespace":"{NS}"}},"data":{{"seq":"{seq}"}}}}"#)
}

/// What one watcher saw: the write numbers, in the order it saw them, with when.
type Seen = Arc<Mutex<Vec<(u32, Instant)>>>;

/// A watcher's record against the writes 0..=last: (lost, duplicated, out of order).
pub fn judge(seen: &[u32], last: u32) -> (usize, usize, usize) {
    let mut count = vec![0usize; last as usize + 1];
    let mut reordered = 0;
    let mut prev: Option<u32> = None;
    for &s in seen {
        if let Some(c) = count.get_mut(s as usize) {
            *c += 1;
        }
        if prev.is_some_and(|p| s < p) {
            reordered += 1;
        }
        prev = Some(s);
    }
    let lost = count.iter().filter(|c| **c == 0).count();
    let dup = count.iter().map(|c| c.saturating_sub(1)).sum();
    (lost, dup, reordered)
}

/// Nearest-rank percentile of sorted values.
fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Raises the soft open-file limit to the hard one: thousands of watch connections (and
/// the gateway, which inherits it, serving them).
fn raise_nofile() -> u64 {
    let mut l = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: plain getrlimit/setrlimit on our own process with a valid struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) == 0 && l.rlim_cur < l.rlim_max {
            l.rlim_cur = l.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &l);
        }
    }
    l.rlim_cur as u64
}

/// The write number a watch line (or a stored object) carries in `data.seq`.
fn seq_of(obj: &serde_json::Value) -> Option<u32> {
    obj.get("data")?.get("seq")?.as_str()?.parse().ok()
}

#[derive(serde::Deserialize)]
struct Line {
    object: serde_json::Value,
}

/// HTTP/2 connections to the gateway, `streams` watches each, all from `after`.
async fn http_watchers(https: &Https, addr: SocketAddr, n: usize, per_conn: usize, after: u64, seen: &[Seen]) -> Result<()> {
    let path = format!("/api/v1/namespaces/{NS}/configmaps?watch=1&resourceVersion={after}");
    let mut started = Vec::new();
    for (c, chunk) in seen[..n].chunks(per_conn.max(1)).enumerate() {
        let tcp = tokio::net::TcpStream::connect(addr).await.with_context(|| format!("HTTP connection {c}"))?;
        tcp.set_nodelay(true)?;
        let tls = https.h2_tls().connect(ServerName::IpAddress(addr.ip().into()), tcp).await?;
        let (send, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new()).handshake::<_, Full<Bytes>>(TokioIo::new(tls)).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        for s in chunk {
            let mut send = send.clone();
            let req = https.request(Method::GET, &path, None);
            let s = s.clone();
            started.push(tokio::spawn(async move {
                send.ready().await.map_err(|e| anyhow::anyhow!("stream: {e}"))?;
                let resp = send.send_request(req).await?;
                if resp.status() != StatusCode::OK {
                    bail!("watch answered {}", resp.status());
                }
                let mut body = resp.into_body();
                tokio::spawn(async move {
                    let mut buf: Vec<u8> = Vec::new();
                    while let Some(Ok(frame)) = body.frame().await {
                        let Ok(data) = frame.into_data() else { continue };
                        let at = Instant::now();
                        buf.extend_from_slice(&data);
                        while let Some(nl) = buf.iter().position(|b| *b == b'\n') {
                            let line: Vec<u8> = buf.drain(..=nl).collect();
                            if let Some(seq) = serde_json::from_slice::<Line>(&line).ok().and_then(|l| seq_of(&l.object)) {
                                s.lock().unwrap_or_else(|p| p.into_inner()).push((seq, at));
                            }
                        }
                    }
                });
                Ok(())
            }));
        }
    }
    for t in started {
        t.await??;
    }
    Ok(())
}

/// Bus watchers, `per_conn` on each NATS connection sharing its fan-out, all from `after`.
async fn bus_watchers(url: &str, creds: &bus::creds::Credentials, per_conn: usize, after: u64, seen: &[Seen]) -> Result<Vec<bus::Bus>> {
    let filter = schema::subjects::event_filter("configmaps", &schema::subjects::EventFilter { namespace: Some(NS), ..Default::default() });
    let mut buses = Vec::new();
    for chunk in seen.chunks(per_conn.max(1)) {
        let b = bus::Bus::connect_as(url, Some(creds)).await?;
        let fan = bus::fanout::Fanout::new(b.clone());
        for s in chunk {
            let mut w = fan.watch(filter.clone(), after).await?;
            let s = s.clone();
            tokio::spawn(async move {
                while let Some(Ok(ev)) = w.next().await {
                    let at = Instant::now();
                    let stored = schema::store::Stored { key: ev.ev.key.clone(), rev: ev.ev.rev, value: ev.ev.value.clone() };
                    if let Some(seq) = schema::object::from_stored(&stored).ok().as_ref().and_then(seq_of) {
                        s.lock().unwrap_or_else(|p| p.into_inner()).push((seq, at));
                    }
                }
            });
        }
        buses.push(b);
    }
    Ok(buses)
}

/// One kind of watcher's figures over every (watcher, write) it saw.
struct Kind {
    name: &'static str,
    watchers: usize,
    lat_ms: Vec<f64>,
    lost: usize,
    dup: usize,
    reordered: usize,
    /// Per write, its slowest delivery to this kind.
    worst_per_write: Vec<f64>,
}

fn tally(name: &'static str, seen: &[Seen], sent: &[Instant], last: u32) -> Kind {
    let mut k = Kind { name, watchers: seen.len(), lat_ms: Vec::new(), lost: 0, dup: 0, reordered: 0, worst_per_write: vec![0.0; sent.len()] };
    for s in seen {
        let s = s.lock().unwrap_or_else(|p| p.into_inner());
        let seqs: Vec<u32> = s.iter().map(|(q, _)| *q).collect();
        let (l, d, r) = judge(&seqs, last);
        k.lost += l;
        k.dup += d;
        k.reordered += r;
        for (q, at) in s.iter() {
            // Write 0 only tells that the watcher is live; it is not measured.
            if *q == 0 {
                continue;
            }
            if let Some(t) = sent.get(*q as usize) {
                let ms = at.saturating_duration_since(*t).as_secs_f64() * 1e3;
                k.lat_ms.push(ms);
                let w = &mut k.worst_per_write[*q as usize];
                *w = w.max(ms);
            }
        }
    }
    k.lat_ms.sort_by(|a, b| a.total_cmp(b));
    k
}

fn saw(seen: &[Seen], seq: u32) -> usize {
    seen.iter().filter(|s| s.lock().unwrap_or_else(|p| p.into_inner()).iter().any(|(q, _)| *q == seq)).count()
}

pub async fn run(a: WatchArgs) -> Result<()> {
    let total = a.watchers.unwrap_or(if a.quick { 1000 } else { 10_000 });
    let writes = a.writes.unwrap_or(if a.quick { 20 } else { 100 });
    let n_http = ((total as f64) * a.http_fraction.clamp(0.0, 1.0)).round() as usize;
    let n_bus = total - n_http;
    let nofile = raise_nofile();
    let dir = TempDir { path: std::env::temp_dir().join(format!("flotilla-bench-watch-{}", std::process::id())), keep: a.keep };
    std::fs::create_dir_all(&dir.path)?;
    let (mut up, https) = super::api::local_cluster(&dir.path).await?;
    let (addr, data) = (https.addr(), dir.path.join("cluster"));
    let ns = format!(r#"{{"apiVersion":"v1","kind":"Namespace","metadata":{{"name":"{NS}"}}}}"#);
    https.once(Method::POST, "/api/v1/namespaces", Some(ns), StatusCode::CREATED).await?;
    let mut writer = https.connect().await?;
    // Created without a number: an update that changes nothing is no event.
    let created = https.send_json(&mut writer, Method::POST, &format!("/api/v1/namespaces/{NS}/configmaps"), configmap(0).replace(r#""seq":"0""#, r#""seq":"none""#), StatusCode::CREATED).await?;
    let after: u64 = created["metadata"]["resourceVersion"].as_str().and_then(|r| r.parse().ok()).context("the ConfigMap's resourceVersion")?;

    let conf = std::fs::read_to_string(data.join("nats").join("nats.conf")).context("up's nats.conf")?;
    let nats_url = conf.lines().find_map(|l| l.strip_prefix("listen: ")).map(|l| format!("nats://{}", l.trim())).context("a listen line in nats.conf")?;
    let creds = bus::creds::Credentials::load(&data.join("nats").join("admin.creds"))?;

    eprintln!("opening {n_http} HTTP watches ({} per HTTP/2 connection) and {n_bus} bus watches ({} per NATS connection); open-file limit {nofile}", a.streams_per_conn, a.bus_per_conn);
    let http_seen: Vec<Seen> = (0..n_http).map(|_| Seen::default()).collect();
    let bus_seen: Vec<Seen> = (0..n_bus).map(|_| Seen::default()).collect();
    let opened = Instant::now();
    http_watchers(&https, addr, n_http, a.streams_per_conn, after, &http_seen).await?;
    let _buses = bus_watchers(&nats_url, &creds, a.bus_per_conn, after, &bus_seen).await?;
    eprintln!("{total} watches open in {:.1} s", opened.elapsed().as_secs_f64());

    // Write 0 (the create) must reach everyone before anything is timed: then every
    // watcher is live.
    let all_saw = |seq: u32| saw(&http_seen, seq) == n_http && saw(&bus_seen, seq) == n_bus;
    let deadline = Instant::now() + Duration::from_secs(60);
    let path = format!("/api/v1/namespaces/{NS}/configmaps/{NAME}");
    // A watch from the create's revision does not see the create itself: the update
    // to 0 is the first event.
    https.send_json(&mut writer, Method::PUT, &path, configmap(0), StatusCode::OK).await?;
    while !all_saw(0) {
        up.check_alive()?;
        if Instant::now() > deadline {
            bail!("after 60 s only {} of {n_http} HTTP and {} of {n_bus} bus watchers saw the first write", saw(&http_seen, 0), saw(&bus_seen, 0));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let mut sent = vec![Instant::now()];
    let mut ack_ms = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_millis(a.interval_ms.max(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    for seq in 1..=writes {
        tick.tick().await;
        let t = Instant::now();
        sent.push(t);
        https.send_json(&mut writer, Method::PUT, &path, configmap(seq), StatusCode::OK).await?;
        ack_ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while !all_saw(writes) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Anything late or doubled has a moment to show.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let kinds = [tally("http", &http_seen, &sent, writes), tally("bus", &bus_seen, &sent, writes)];
    ack_ms.sort_by(|a, b| a.total_cmp(b));
    println!(
        "flotilla bench watch: {total} watchers ({n_http} HTTP watches over HTTP/2, {} per connection; {n_bus} bus watches, {} per NATS connection); {writes} ConfigMap updates, one every {} ms; latency = seen by the watcher - update request sent; {} cores",
        a.streams_per_conn,
        a.bus_per_conn,
        a.interval_ms,
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
    );
    println!("writes acknowledged: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms", pct(&ack_ms, 50.0), pct(&ack_ms, 99.0), pct(&ack_ms, 100.0));
    println!("{:<6} {:>8} {:>9} {:>8} {:>8} {:>8} {:>8} {:>14} {:>6} {:>6} {:>9}", "kind", "watchers", "events", "p50(ms)", "p90(ms)", "p99(ms)", "max(ms)", "write p99 med", "lost", "dup", "reordered");
    let mut bad = 0;
    for k in &kinds {
        if k.watchers == 0 {
            continue;
        }
        let mut worst: Vec<f64> = k.worst_per_write[1..].to_vec();
        worst.sort_by(|a, b| a.total_cmp(b));
        println!(
            "{:<6} {:>8} {:>9} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>14.2} {:>6} {:>6} {:>9}",
            k.name,
            k.watchers,
            k.lat_ms.len(),
            pct(&k.lat_ms, 50.0),
            pct(&k.lat_ms, 90.0),
            pct(&k.lat_ms, 99.0),
            pct(&k.lat_ms, 100.0),
            pct(&worst, 50.0),
            k.lost,
            k.dup,
            k.reordered
        );
        bad += k.lost + k.dup + k.reordered;
    }
    let mut all: Vec<f64> = kinds.iter().flat_map(|k| k.lat_ms.iter().copied()).collect();
    all.sort_by(|a, b| a.total_cmp(b));
    println!("all    p99 {:.2} ms (goal 20 ms at 10,000 watchers)", pct(&all, 99.0));
    let mib = |b: Option<u64>| b.map(|b| format!("{:.0} MiB", b as f64 / 1048576.0)).unwrap_or_else(|| "?".into());
    let nats = children_named(up.pid(), "nats-server");
    println!("peak RSS: flotilla up {}, nats-server {}, bench (the watchers) {}", mib(peak_rss(up.pid())), mib(nats.first().and_then(|p| peak_rss(*p))), mib(peak_rss(std::process::id())));
    up.stop();
    if bad > 0 {
        bail!("{bad} events lost, duplicated or out of order");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn judging_what_a_watcher_saw() {
        assert_eq!(judge(&[0, 1, 2, 3], 3), (0, 0, 0));
        assert_eq!(judge(&[0, 1, 3], 3), (1, 0, 0));
        assert_eq!(judge(&[0, 1, 1, 2, 3], 3), (0, 1, 0));
        assert_eq!(judge(&[0, 2, 1, 3], 3), (0, 0, 1));
    }

    #[test]
    fn nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(pct(&v, 50.0), 50.0);
        assert_eq!(pct(&v, 99.0), 99.0);
        assert_eq!(pct(&v, 100.0), 100.0);
        assert!(pct(&[], 50.0).is_nan());
    }
}
