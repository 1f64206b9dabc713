//! The dashboard in a real browser: after a Deployment is applied on a two-node cluster,
//! headless Chromium renders the page, which lists the actors that took part (gateway,
//! state, deployment and replicaset controllers, scheduler, a kubelet per node) with
//! handled counts, and the apply's trace as a waterfall of spans from at least five
//! actors. The trace is found as a user would: the Deployment's history names the
//! gateway as the writer of its first revision and links that revision's trace.

mod common;

use common::cluster::Cluster;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const CHROMIUM: &str = "/usr/bin/chromium";

const DEPLOYMENT: &str = r#"apiVersion: apps/v1
kind: Deployment
metadata: {name: shown, namespace: default}
spec:
  replicas: 2
  selector: {matchLabels: {app: shown}}
  template:
    metadata: {labels: {app: shown}}
    spec:
      terminationGracePeriodSeconds: 1
      containers: [{name: main, image: busybox, command: [sleep, "3600"]}]
"#;

/// Chromium, installed if missing (as deploy/install-deps.sh does); None when it cannot be.
fn chromium() -> Option<&'static str> {
    if Path::new(CHROMIUM).exists() {
        return Some(CHROMIUM);
    }
    // SAFETY: getuid has no preconditions.
    let root = unsafe { libc::getuid() } == 0;
    let mut cmd = if root { Command::new("apt-get") } else { let mut c = Command::new("sudo"); c.args(["-n", "apt-get"]); c };
    let ok = cmd.args(["install", "-y", "-qq", "chromium"]).env("DEBIAN_FRONTEND", "noninteractive").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success());
    (ok && Path::new(CHROMIUM).exists()).then_some(CHROMIUM)
}

/// Runs headless Chromium on `url` with a fresh profile in `dir`; `extra` picks
/// `--dump-dom` or `--screenshot`. Killed by PID if it has not finished within a minute.
fn browse(bin: &str, dir: &Path, url: &str, extra: &[String]) -> String {
    let profile = tempfile::tempdir_in(dir).expect("a profile dir");
    let mut child = Command::new(bin)
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("--virtual-time-budget=10000")
        .args(extra)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting chromium");
    let stdout = child.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || {
        use std::io::Read;
        let mut s = String::new();
        let _ = std::io::BufReader::new(stdout).read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium did not finish with {url} within 60 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = reader.join().unwrap_or_default();
    drop(profile);
    out
}

fn curl(url: &str) -> String {
    let o = Command::new("curl").args(["-s", "--max-time", "10", url]).output().expect("curl");
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn json(url: &str) -> serde_json::Value {
    serde_json::from_str(&curl(url)).unwrap_or(serde_json::Value::Null)
}

/// The opening tags in `dom` that contain `marker`, e.g. every `<tr class="actor …>`.
fn tags<'a>(dom: &'a str, marker: &str) -> Vec<&'a str> {
    dom.match_indices(marker).filter_map(|(i, _)| {
        let start = dom[..i].rfind('<')?;
        let end = i + dom[i..].find('>')?;
        Some(&dom[start..end])
    }).collect()
}

fn attr<'a>(tag: &'a str, name: &str) -> Option<&'a str> {
    let k = format!(" {name}=\"");
    let i = tag.find(&k)? + k.len();
    Some(&tag[i..i + tag[i..].find('"')?])
}

/// Handled count the rendered page shows for `actor` (and `instance`), summed over processes.
fn shown_handled(dom: &str, actor: &str, instance: Option<&str>) -> u64 {
    tags(dom, "class=\"actor")
        .into_iter()
        .filter(|t| attr(t, "data-actor") == Some(actor) && attr(t, "data-instance") == instance)
        .filter_map(|t| attr(t, "data-handled")?.parse::<u64>().ok())
        .sum()
}

#[test]
fn the_dashboard_renders_the_actors_and_the_trace_of_a_kubectl_apply() {
    let Some(bin) = chromium() else {
        eprintln!("skipping: {CHROMIUM} is absent and could not be installed (run deploy/install-deps.sh)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let c = Cluster::up(&dir.path().join("c"), 2);
    let base = format!("http://{}", c.dashboard);
    assert_eq!(curl(&format!("{base}/healthz")), "ok");
    assert!(curl(&format!("{base}/")).contains("<script src=\"app.js\">"), "the page is served");
    let o = c.kubectl_stdin(&["apply", "-f", "-"], Some(DEPLOYMENT));
    assert!(o.ok, "kubectl apply: {} {}", o.stdout, o.stderr);
    c.eventually(Duration::from_secs(120), "both replicas Running", || {
        let out = c.ok(&["get", "pods", "-l", "app=shown", "-o", "jsonpath={.items[*].status.phase}"]);
        if out.trim() == "Running Running" { Ok(()) } else { Err(out) }
    });

    // The apply's trace: the Deployment's first revision, written by the gateway.
    let history = json(&format!("{base}/api/history/deployments/default/shown"));
    let revs = history.as_array().cloned().unwrap_or_default();
    let first = revs.first().unwrap_or_else(|| panic!("no history for the Deployment: {history}"));
    assert_eq!((first["type"].as_str(), first["writer"].as_str()), (Some("Added"), Some("gateway")), "{first}");
    assert!(revs.iter().any(|r| r["writer"] == "deployment-controller"), "the controller's status writes are named: {history}");
    let trace = first["trace_id"].as_str().expect("the create's trace").to_string();
    let actors_of_trace = c.eventually(Duration::from_secs(30), "the apply's trace reaching five actors", || {
        let spans = json(&format!("{base}/api/traces/{trace}"));
        let mut actors: Vec<String> = spans.as_array().into_iter().flatten().filter_map(|s| s["actor"].as_str().map(String::from)).collect();
        actors.sort();
        actors.dedup();
        if actors.len() >= 5 && actors.iter().any(|a| a == "kubelet") { Ok(actors) } else { Err(format!("{actors:?}")) }
    });
    for a in ["gateway", "state", "deployment-controller", "replicaset-controller", "scheduler", "kubelet"] {
        assert!(actors_of_trace.iter().any(|x| x == a), "{a} acted in the apply's trace: {actors_of_trace:?}");
    }

    // The overview, as the browser renders it after the page's script ran.
    let wanted: [(&str, Option<&str>); 7] = [("gateway", None), ("state", None), ("scheduler", None), ("deployment-controller", None), ("replicaset-controller", None), ("kubelet", Some("node-1")), ("kubelet", Some("node-2"))];
    let dom = c.eventually(Duration::from_secs(30), "every actor on the rendered page", || {
        let dom = browse(bin, dir.path(), &format!("{base}/?live=0"), &["--dump-dom".into()]);
        let missing: Vec<_> = wanted.iter().filter(|(a, i)| shown_handled(&dom, a, *i) == 0).collect();
        // The nodes' informers start with the first look at them: a later render has them.
        let nodes = tags(&dom, "data-node=\"node-1\"").len() == 1 && tags(&dom, "data-node=\"node-2\"").len() == 1;
        let pods = tags(&dom, "data-pod=\"default/shown-").len();
        if missing.is_empty() && nodes && pods == 2 { Ok(dom) } else { Err(format!("not shown with handled > 0: {missing:?}; both nodes: {nodes}; replicas listed: {pods}")) }
    });
    assert!(dom.contains("Running"), "the replicas' phase shown");

    // The trace, loaded straight from its URL, as a waterfall.
    let dom = browse(bin, dir.path(), &format!("{base}/?live=0#/trace/{trace}"), &["--dump-dom".into()]);
    let mut drawn: Vec<&str> = tags(&dom, "class=\"wrow span\"").into_iter().filter_map(|t| attr(t, "data-actor")).collect();
    drawn.sort();
    drawn.dedup();
    assert!(drawn.len() >= 5, "the waterfall shows spans of {drawn:?}");

    let shot = dir.path().join("dashboard.png");
    browse(bin, dir.path(), &format!("{base}/?live=0"), &[format!("--screenshot={}", shot.display()), "--window-size=1400,1000".into()]);
    let png = std::fs::read(&shot).expect("a screenshot");
    assert!(png.starts_with(b"\x89PNG"), "the screenshot is a PNG");
    if let Ok(keep) = std::env::var("FLOTILLA_DASHBOARD_PNG") {
        let _ = std::fs::copy(&shot, keep);
    }

    // The live stream the page listens to says "changed" at once.
    let o = Command::new("curl").args(["-sN", "--max-time", "3", &format!("{base}/api/events")]).output().expect("curl");
    assert!(String::from_utf8_lossy(&o.stdout).contains("event: changed"), "the event stream speaks");

    // `flotilla dashboard` on its own, behind a token, sees the same cluster over NATS.
    let addr = format!("127.0.0.1:{}", common::free_port());
    let standalone = common::process::TermOnDrop(
        Command::new(env!("CARGO_BIN_EXE_flotilla"))
            .args(["dashboard", "--nats-url", &c.nats_url(), "--dashboard-addr", &addr, "--dashboard-token", "s3cret", "--nats-creds"])
            .arg(c.data_dir.join("nats").join("dashboard.creds"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting flotilla dashboard"),
    );
    c.eventually(Duration::from_secs(30), "the standalone dashboard refusing without the token", || {
        let o = Command::new("curl").args(["-s", "-o", "/dev/null", "-w", "%{http_code}", &format!("http://{addr}/api/actors")]).output().expect("curl");
        let code = String::from_utf8_lossy(&o.stdout).into_owned();
        if code == "401" { Ok(()) } else { Err(code) }
    });
    let code = |path: &str| {
        let o = Command::new("curl").args(["-s", "-o", "/dev/null", "-w", "%{http_code}", &format!("http://{addr}{path}")]).output().expect("curl");
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    assert_eq!((code("/").as_str(), code("/app.js").as_str()), ("200", "200"), "the page holds no data and loads without the token");
    c.eventually(Duration::from_secs(30), "the standalone dashboard listing up's actors", || {
        let rows = json(&format!("http://{addr}/api/actors?token=s3cret"));
        let seen = rows.as_array().into_iter().flatten().any(|r| r["actor"] == "scheduler" && r["process"].as_str().is_some_and(|p| p.starts_with("up-")));
        if seen { Ok(()) } else { Err(rows.to_string()) }
    });
    drop(standalone);
}


