//! Fuzzed requests against a running cluster: mangled bodies (truncated, bytes flipped,
//! values of the wrong type grafted anywhere, deep nesting, oversize), odd paths, every
//! verb and content type. The gateway must answer each with a Kubernetes Status (never a
//! 500, never a dropped connection), stay up, and store nothing from a refused request:
//! a refused create leaves no object, a refused update or patch leaves the object as it
//! was. (The decoders themselves are property-tested in actors/src/gateway/fuzz.rs.)

mod common;

use common::cluster::Cluster;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use std::io::Write;
use std::process::{Command, Stdio};

struct Answer {
    code: u16,
    body: String,
}

/// One HTTPS request with the admin token; curl reports the status code last.
fn send(c: &Cluster, token: &str, method: &str, path: &str, content_type: &str, body: &[u8]) -> Answer {
    let mut child = Command::new("curl")
        .args(["-sk", "-X", method, "-w", "\n%{http_code}", "-H", &format!("Authorization: Bearer {token}"), "-H", &format!("Content-Type: {content_type}")])
        .args(["--data-binary", "@-", &format!("https://{}{path}", c.addr)])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("running curl");
    child.stdin.take().expect("stdin").write_all(body).expect("request body");
    let out = child.wait_with_output().expect("curl output");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    Answer { code: code.trim().parse().unwrap_or(0), body: body.to_string() }
}

fn base(kind: usize, name: &str) -> Value {
    match kind {
        0 => json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "labels": {"a": "b"}}, "data": {"k": "v"}}),
        1 => json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
                    "spec": {"containers": [{"name": "c", "image": "busybox", "command": ["sleep", "1"], "ports": [{"containerPort": 80}]}]}}),
        _ => json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
                    "spec": {"replicas": 0, "selector": {"matchLabels": {"app": name}},
                             "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}}),
    }
}

fn collection(kind: usize) -> &'static str {
    ["/api/v1/namespaces/fuzz/configmaps", "/api/v1/namespaces/fuzz/pods", "/apis/apps/v1/namespaces/fuzz/deployments"][kind]
}

fn random_value(rng: &mut StdRng, depth: u32) -> Value {
    match rng.gen_range(0..if depth > 3 { 5 } else { 7 }) {
        0 => Value::Null,
        1 => json!(rng.gen::<bool>()),
        2 => json!(rng.gen::<i64>()),
        3 => json!(rng.gen::<f64>() * 1e12),
        4 => json!(["", "x", "-1", "1Gi", "true", "ñ\u{0}", "../..", "a.b/c"][rng.gen_range(0..8)]),
        5 => Value::Array((0..rng.gen_range(0..4)).map(|_| random_value(rng, depth + 1)).collect()),
        _ => {
            let keys = ["metadata", "spec", "name", "containers", "image", "labels", "data", "replicas", "selector", "x"];
            Value::Object((0..rng.gen_range(0..4)).map(|_| (keys[rng.gen_range(0..keys.len())].to_string(), random_value(rng, depth + 1))).collect())
        }
    }
}

/// Replaces a random node of `v` (not the name) with a random value.
fn graft(rng: &mut StdRng, v: &mut Value) {
    enum At {
        Key(String),
        Index(usize),
        Here,
    }
    let at = match &*v {
        Value::Object(m) => {
            let keys: Vec<&String> = m.keys().filter(|k| *k != "name").collect();
            if keys.is_empty() { At::Here } else { At::Key(keys[rng.gen_range(0..keys.len())].clone()) }
        }
        Value::Array(a) if !a.is_empty() => At::Index(rng.gen_range(0..a.len())),
        _ => At::Here,
    };
    let child = match at {
        At::Key(k) => v.get_mut(&k),
        At::Index(i) => v.get_mut(i),
        At::Here => None,
    };
    match child {
        Some(n) if rng.gen_bool(0.6) => graft(rng, n),
        Some(n) => *n = random_value(rng, 0),
        None => *v = random_value(rng, 0),
    }
}

/// A body for object `name`: valid, or mangled as JSON, or mangled as bytes (a refused
/// body whose name got mangled is looked for under `name` all the same: never there).
fn mangled(rng: &mut StdRng, kind: usize, name: &str) -> Vec<u8> {
    let mut v = base(kind, name);
    match rng.gen_range(0..6) {
        0 => serde_json::to_vec(&v).unwrap_or_default(),
        1 | 2 => {
            for _ in 0..rng.gen_range(1..4) {
                graft(rng, &mut v);
            }
            serde_json::to_vec(&v).unwrap_or_default()
        }
        3 => {
            let mut b = serde_json::to_vec(&v).unwrap_or_default();
            let cut = rng.gen_range(0..b.len());
            b.truncate(cut);
            b
        }
        4 => {
            let mut b = serde_json::to_vec(&v).unwrap_or_default();
            for _ in 0..rng.gen_range(1..4) {
                let i = rng.gen_range(0..b.len());
                b[i] = rng.gen();
            }
            b
        }
        _ => match rng.gen_range(0..3) {
            // Deeper than any decoder recurses.
            0 => format!("{}{}", "[".repeat(5000), "]".repeat(5000)).into_bytes(),
            // Larger than the 3 MiB body limit.
            1 => {
                v["data"] = json!({"big": "x".repeat(3 * 1024 * 1024 + 10)});
                serde_json::to_vec(&v).unwrap_or_default()
            }
            _ => (0..rng.gen_range(0..64)).map(|_| rng.gen()).collect(),
        },
    }
}

/// What a client's write could change: everything but the status (the node agent keeps
/// writing a pod's) and the resourceVersion that comes with it.
fn written_part(body: &str) -> Value {
    let mut v: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    if let Some(o) = v.as_object_mut() {
        o.remove("status");
    }
    if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("resourceVersion");
    }
    v
}

fn assert_status(a: &Answer, what: &str) {
    assert_ne!(a.code, 0, "{what}: no answer (connection dropped?)");
    assert!(a.code < 500, "{what}: server error {}: {}", a.code, a.body);
    if a.code >= 400 {
        let s: Value = serde_json::from_str(&a.body).unwrap_or_else(|_| panic!("{what}: {} without a Status body: {:?}", a.code, a.body));
        assert_eq!(s["kind"], "Status", "{what}: {}", a.body);
        assert!(s["message"].as_str().is_some_and(|m| !m.is_empty()), "{what}: a Status names the problem: {}", a.body);
    }
}

#[test]
fn fuzzed_requests_get_a_status_and_store_nothing_partial() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let c = Cluster::up(&tmp.path().join("cluster"), 1);
    let tokens = std::fs::read_to_string(c.data_dir.join("pki/tokens.csv")).expect("token file");
    let token = tokens.lines().next().and_then(|l| l.split(',').next()).expect("admin token").to_string();
    assert!(c.ok(&["create", "namespace", "fuzz"]).contains("created"));
    let seed: u64 = std::env::var("FUZZ_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(20261123);
    let mut rng = StdRng::seed_from_u64(seed);
    eprintln!("gateway fuzz seed {seed} (set FUZZ_SEED to replay)");

    // Objects that updates and patches are aimed at, one per kind.
    for kind in 0..3 {
        let a = send(&c, &token, "POST", collection(kind), "application/json", &serde_json::to_vec(&base(kind, "target")).unwrap());
        assert_eq!(a.code, 201, "{}", a.body);
    }
    let get = |kind: usize, name: &str| send(&c, &token, "GET", &format!("{}/{name}", collection(kind)), "application/json", b"");

    let content_types = ["application/json", "application/yaml", "application/vnd.kubernetes.protobuf", "application/merge-patch+json",
                         "application/strategic-merge-patch+json", "application/json-patch+json", "application/apply-patch+yaml", "text/plain"];
    for i in 0..240 {
        let kind = rng.gen_range(0..3);
        let ct = content_types[rng.gen_range(0..content_types.len())];
        match rng.gen_range(0..4) {
            // Create: refused means absent afterwards; accepted means stored as answered.
            0 | 1 => {
                let name = format!("fz-{i}");
                let a = send(&c, &token, "POST", collection(kind), ct, &mangled(&mut rng, kind, &name));
                let what = format!("request {i}: POST {} ({ct})", collection(kind));
                assert_status(&a, &what);
                let after = get(kind, &name);
                if a.code == 201 {
                    let stored: Value = serde_json::from_str(&after.body).expect("stored object");
                    let answered: Value = serde_json::from_str(&a.body).expect("answered object");
                    if answered["metadata"]["name"] == name {
                        assert_eq!(stored["metadata"]["uid"], answered["metadata"]["uid"], "{what}: the answer is what was stored");
                    }
                } else {
                    assert_eq!(after.code, 404, "{what}: refused with {} ({}) yet {name} exists: {}", a.code, a.body, after.body);
                }
            }
            // Update or patch the target: refused means unchanged.
            2 => {
                let before = get(kind, "target");
                let method = if ct.contains("patch") { "PATCH" } else { "PUT" };
                let a = send(&c, &token, method, &format!("{}/target", collection(kind)), ct, &mangled(&mut rng, kind, "target"));
                let what = format!("request {i}: {method} {}/target ({ct})", collection(kind));
                assert_status(&a, &what);
                if a.code >= 400 {
                    let after = get(kind, "target");
                    assert_eq!(written_part(&after.body), written_part(&before.body), "{what}: refused with {} ({}) yet the object changed", a.code, a.body);
                }
            }
            // Odd paths and verbs.
            _ => {
                let segs = ["api", "apis", "v1", "apps", "namespaces", "fuzz", "pods", "..", "%ff", "target", "status", "scale", "eviction", "log", "binding", "", "x"];
                let path: String = (0..rng.gen_range(1..7)).map(|_| format!("/{}", segs[rng.gen_range(0..segs.len())])).collect();
                let method = ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"][rng.gen_range(0..6)];
                let body = if method == "GET" || method == "DELETE" { Vec::new() } else { mangled(&mut rng, kind, "target") };
                let a = send(&c, &token, method, &path, ct, &body);
                if a.code != 200 && a.code != 201 {
                    assert_status(&a, &format!("request {i}: {method} {path}"));
                }
            }
        }
    }
    // Still up, still serving.
    assert!(c.ok(&["get", "namespace", "fuzz", "-o", "name"]).contains("namespace/fuzz"));
}
