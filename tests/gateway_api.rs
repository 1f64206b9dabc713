//! The gateway speaks the Kubernetes REST API over a real state group and nats-server:
//! authentication, discovery, create/get/update/patch/delete with Kubernetes Status errors, scale,
//! binding, graceful pod deletion, selector watches and logs without a node agent.

mod common;

use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Resp {
    code: u16,
    headers: String,
    body: Vec<u8>,
}

impl Resp {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
}

/// Undoes chunked transfer encoding.
fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(pos) = b.windows(2).position(|w| w == b"\r\n") {
        let size = usize::from_str_radix(std::str::from_utf8(&b[..pos]).unwrap_or("0").trim(), 16).unwrap_or(0);
        if size == 0 || b.len() < pos + 2 + size {
            break;
        }
        out.extend_from_slice(&b[pos + 2..pos + 2 + size]);
        b = &b[(pos + 4 + size).min(b.len())..];
    }
    out
}

/// One HTTP/1.1 request on a fresh connection, read until the server closes it.
async fn call(addr: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Resp {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect to the gateway");
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).await.expect("send");
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut raw)).await.expect("answer in time").expect("read");
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("header end");
    let headers = String::from_utf8_lossy(&raw[..split]).to_string();
    let code = headers.split_whitespace().nth(1).and_then(|c| c.parse().ok()).expect("status code");
    let mut body = raw[split + 4..].to_vec();
    if headers.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        body = dechunk(&body);
    }
    Resp { code, headers, body }
}

const TOKEN: &str = "Bearer test-token";

async fn api(addr: &str, method: &str, path: &str, ct: &str, body: &str) -> Resp {
    call(addr, method, path, &[("Authorization", TOKEN), ("Content-Type", ct), ("Accept", "application/json")], body).await
}

fn deployment(name: &str) -> String {
    json!({"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":name,"labels":{"app":name}},
        "spec":{"replicas":2,"selector":{"matchLabels":{"app":name}},"template":{"metadata":{"labels":{"app":name}},
        "spec":{"containers":[{"name":"c","image":"busybox","command":["sleep","100"]}]}}}})
    .to_string()
}

fn pod(name: &str, labels: Value) -> String {
    json!({"apiVersion":"v1","kind":"Pod","metadata":{"name":name,"labels":labels},"spec":{"containers":[{"name":"c","image":"busybox"}]}}).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_serves_the_kubernetes_api() {
    let nats = common::NatsServer::start();
    let tmp = tempfile::tempdir().expect("tempdir");
    let client = async_nats::connect(&nats.url).await.expect("connect");
    let state = actors::state::start(actors::state::StateConfig::single(tmp.path().join("state")), client.clone()).await.expect("state group");
    state.wait_ready().await;
    let bus = bus::Bus::from_client(client);
    let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port();
    let addr = format!("127.0.0.1:{port}");
    let stop = tokio_util::sync::CancellationToken::new();
    let tokens = tmp.path().join("tokens.csv");
    std::fs::write(&tokens, "test-token,admin,admin-uid,system:masters\n").expect("token file");
    let cfg = actors::gateway::GatewayConfig { addr: addr.parse().expect("addr"), tls: None, token_auth_file: Some(tokens), service_account: None, limits: Default::default() };
    let gw = tokio::spawn(actors::gateway::serve(cfg, bus, Arc::new(|| true), stop.clone()));
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(&addr).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Open endpoints and authentication.
    // No bootstrap here, so no default bindings: only the token's system:masters user
    // may read anything once the RBAC cache has listed (which /readyz waits for).
    let v = call(&addr, "GET", "/version", &[("Authorization", TOKEN)], "").await;
    assert_eq!(v.code, 200);
    assert_eq!(v.json()["minor"], "32");
    let mut ready = Vec::new();
    for _ in 0..100 {
        ready = call(&addr, "GET", "/readyz", &[("Authorization", TOKEN)], "").await.body;
        if ready == b"ok" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(ready, b"ok");
    let anon = call(&addr, "GET", "/api/v1/namespaces", &[], "").await;
    assert_eq!(anon.code, 403);
    assert_eq!(anon.json()["reason"], "Forbidden");
    let unauth = call(&addr, "GET", "/api/v1/namespaces", &[("Authorization", "Bearer wrong")], "").await;
    assert_eq!(unauth.code, 401);
    assert_eq!(unauth.json()["reason"], "Unauthorized");

    // Aggregated discovery answers with its exact content type.
    let agg = call(&addr, "GET", "/apis", &[("Authorization", TOKEN), ("Accept", "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json")], "").await;
    assert!(agg.headers.contains("application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"), "{}", agg.headers);
    assert_eq!(api(&addr, "GET", "/apis/nope/v1/things", "", "").await.code, 404);

    // Namespaces: create, AlreadyExists; creating into a missing namespace is NotFound.
    let ns = json!({"apiVersion":"v1","kind":"Namespace","metadata":{"name":"demo"}}).to_string();
    assert_eq!(api(&addr, "POST", "/api/v1/namespaces", "application/json", &ns).await.code, 201);
    let dup = api(&addr, "POST", "/api/v1/namespaces", "application/json", &ns).await;
    assert_eq!((dup.code, dup.json()["message"].as_str()), (409, Some("namespaces \"demo\" already exists")));
    let missing = api(&addr, "POST", "/apis/apps/v1/namespaces/nowhere/deployments", "application/json", &deployment("web")).await;
    assert_eq!((missing.code, missing.json()["message"].as_str()), (404, Some("namespaces \"nowhere\" not found")));

    // Deployments: create, stale update, strategic merge patch, scale.
    let base = "/apis/apps/v1/namespaces/demo/deployments";
    let created = api(&addr, "POST", base, "application/json", &deployment("web")).await;
    assert_eq!(created.code, 201, "{}", String::from_utf8_lossy(&created.body));
    let mut stale = created.json();
    stale["metadata"]["resourceVersion"] = json!("1");
    let conflict = api(&addr, "PUT", &format!("{base}/web"), "application/json", &stale.to_string()).await;
    assert_eq!(conflict.code, 409);
    assert_eq!(conflict.json()["message"], "Operation cannot be fulfilled on deployments.apps \"web\": the object has been modified; please apply your changes to the latest version and try again");
    let smp = json!({"spec":{"template":{"spec":{"$setElementOrder/containers":[{"name":"c"}],"containers":[{"name":"c","image":"busybox:2"}]}}}}).to_string();
    let patched = api(&addr, "PATCH", &format!("{base}/web"), "application/strategic-merge-patch+json", &smp).await.json();
    assert_eq!(patched["spec"]["template"]["spec"]["containers"][0]["image"], "busybox:2");
    assert_eq!(patched["spec"]["template"]["spec"]["containers"][0]["command"], json!(["sleep", "100"]));
    assert_eq!(patched["metadata"]["generation"], 2);
    let scale = api(&addr, "PATCH", &format!("{base}/web/scale"), "application/merge-patch+json", r#"{"spec":{"replicas":5}}"#).await.json();
    assert_eq!(scale["kind"], "Scale");
    assert_eq!(scale["spec"]["replicas"], 5);
    assert_eq!(scale["status"]["selector"], "app=web");
    let invalid = api(&addr, "POST", base, "application/json", &deployment("Bad_Name")).await;
    assert_eq!((invalid.code, invalid.json()["reason"].as_str()), (422, Some("Invalid")));
    let table = call(&addr, "GET", base, &[("Authorization", TOKEN), ("Accept", "application/json;as=Table;v=v1;g=meta.k8s.io,application/json")], "").await.json();
    assert_eq!(table["kind"], "Table");
    assert_eq!(table["rows"][0]["cells"][1], "0/5");

    // A selector watch sees a pod enter (ADDED) and leave (DELETED) the selector.
    let pods = "/api/v1/namespaces/demo/pods";
    let watch_addr = addr.clone();
    // From the list's revision, so the watch sees what follows however late it starts.
    let rv = api(&addr, "GET", pods, "", "").await.json()["metadata"]["resourceVersion"].as_str().unwrap_or("0").to_string();
    let watch = tokio::spawn(async move { api(&watch_addr, "GET", &format!("/api/v1/namespaces/demo/pods?watch=true&labelSelector=app%3Dx&timeoutSeconds=3&resourceVersion={rv}"), "", "").await });
    assert_eq!(api(&addr, "POST", pods, "application/json", &pod("p1", json!({"app":"x"}))).await.code, 201);
    let relabel = api(&addr, "PATCH", &format!("{pods}/p1"), "application/merge-patch+json", r#"{"metadata":{"labels":{"app":"y"}}}"#).await;
    assert_eq!(relabel.code, 200);
    let w = watch.await.expect("watch task");
    let types: Vec<String> = String::from_utf8_lossy(&w.body).lines().map(|l| serde_json::from_str::<Value>(l).expect("event line")["type"].as_str().unwrap_or("").to_string()).collect();
    assert_eq!(types, vec!["ADDED", "DELETED"]);

    // Bookmarks: the watch ends with one at the revision it reached. Watch-list
    // (sendInitialEvents) starts with the current objects and a bookmark marking their end.
    let lines = |r: &Resp| -> Vec<Value> { String::from_utf8_lossy(&r.body).lines().map(|l| serde_json::from_str(l).expect("event line")).collect() };
    let w = api(&addr, "GET", &format!("{pods}?watch=true&allowWatchBookmarks=true&resourceVersion={}&timeoutSeconds=1", relabel.json()["metadata"]["resourceVersion"].as_str().unwrap()), "", "").await;
    let evs = lines(&w);
    let last = evs.last().expect("a bookmark at the end");
    assert_eq!((last["type"].as_str(), last["object"]["kind"].as_str()), (Some("BOOKMARK"), Some("Pod")), "{evs:?}");
    let list = api(&addr, "GET", pods, "", "").await.json();
    let listed_rv: u64 = list["metadata"]["resourceVersion"].as_str().unwrap().parse().unwrap();
    let w = api(&addr, "GET", &format!("{pods}?watch=true&sendInitialEvents=true&allowWatchBookmarks=true&resourceVersionMatch=NotOlderThan&resourceVersion=0&timeoutSeconds=1"), "", "").await;
    let evs = lines(&w);
    assert_eq!(evs[0]["type"], "ADDED");
    assert_eq!(evs[0]["object"]["metadata"]["name"], "p1");
    assert_eq!(evs[1]["type"], "BOOKMARK");
    assert_eq!(evs[1]["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"], "true");
    assert!(evs[1]["object"]["metadata"]["resourceVersion"].as_str().unwrap().parse::<u64>().unwrap() >= listed_rv);
    let bad = api(&addr, "GET", &format!("{pods}?watch=true&sendInitialEvents=true"), "", "").await;
    assert_eq!(bad.code, 422);
    assert!(bad.json()["message"].as_str().unwrap().contains("sendInitialEvents requires setting allowWatchBookmarks to true"));

    // Bound pods are deleted gracefully; unbound ones at once.
    let bind = json!({"apiVersion":"v1","kind":"Binding","metadata":{"name":"p1"},"target":{"kind":"Node","name":"node1"}}).to_string();
    assert_eq!(api(&addr, "POST", &format!("{pods}/p1/binding"), "application/json", &bind).await.code, 201);
    assert_eq!(api(&addr, "POST", &format!("{pods}/p1/binding"), "application/json", &bind).await.code, 409);
    let logs = api(&addr, "GET", &format!("{pods}/p1/log?container=c"), "", "").await;
    assert_eq!(logs.code, 503, "no node agent answers for node1");
    let del = api(&addr, "DELETE", &format!("{pods}/p1"), "application/json", r#"{"propagationPolicy":"Background"}"#).await.json();
    assert!(del["metadata"]["deletionTimestamp"].is_string(), "{del}");
    assert_eq!(api(&addr, "GET", &format!("{pods}/p1"), "", "").await.code, 200);
    assert_eq!(api(&addr, "POST", pods, "application/json", &pod("p2", json!({}))).await.code, 201);
    let gone = api(&addr, "DELETE", &format!("{pods}/p2"), "", "").await.json();
    assert_eq!(gone["status"], "Success");
    let nf = api(&addr, "GET", &format!("{pods}/p2"), "", "").await;
    assert_eq!((nf.code, nf.json()["message"].as_str()), (404, Some("pods \"p2\" not found")));

    stop.cancel();
    tokio::time::timeout(Duration::from_secs(15), gw).await.expect("gateway stops").expect("task").expect("serve");
    state.shutdown().await;
}
