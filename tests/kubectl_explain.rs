//! The OpenAPI documents generated from the types, seen through the real kubectl:
//! `kubectl explain` renders them, `kubectl apply|create|replace|edit` validate against
//! them server-side (`fieldValidation` Strict/Warn/Ignore), and the v3 documents cache by hash.

mod common;

use common::cluster::Cluster;
use std::time::Duration;

const BAD_POD: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: NAME
spec:
  containerz: []
  containers:
  - name: main
    image: busybox
    command: ["sleep", "1000"]
"#;

const DEPLOY: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 1
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: main
        image: busybox
        command: ["sleep", "1000"]
        env: [{name: A, value: "1"}, {name: B, value: "1"}]
"#;

fn assert_has(out: &str, wanted: &[&str]) {
    for w in wanted {
        assert!(out.contains(w), "missing {w:?} in:\n{out}");
    }
}

fn explain(c: &Cluster) {
    let pods = c.ok(&["explain", "pods"]);
    assert_has(&pods, &["KIND:       Pod\n", "VERSION:    v1\n", "DESCRIPTION:\n", "Pod is a collection of containers that can run on a host.", "FIELDS:\n", "  spec\t<PodSpec>\n", "  metadata\t<ObjectMeta>\n"]);

    let containers = c.ok(&["explain", "pod.spec.containers"]);
    assert_has(
        &containers,
        &[
            "KIND:       Pod\n",
            "FIELD: containers <[]Container>\n",
            "List of containers belonging to the pod.",
            "  name\t<string> -required-\n",
            "  env\t<[]EnvVar>\n",
            "  ports\t<[]ContainerPort>\n",
            "  resources\t<ResourceRequirements>\n",
        ],
    );

    let strategy = c.ok(&["explain", "deployment.spec.strategy", "--recursive"]);
    assert_has(&strategy, &["GROUP:      apps\n", "KIND:       Deployment\n", "FIELD: strategy <DeploymentStrategy>\n", "  rollingUpdate\t<RollingUpdateDeployment>\n", "    maxSurge\t<IntOrString>\n", "  type\t<string>\n"]);

    let svc = c.ok(&["explain", "svc", "--api-version=v1"]);
    assert_has(&svc, &["KIND:       Service\n", "VERSION:    v1\n", "  spec\t<ServiceSpec>\n"]);

    // The v2 form, which client-go fetches as gnostic protobuf.
    let v2 = c.ok(&["explain", "pod.spec.containers", "--output=plaintext-openapiv2"]);
    assert_has(&v2, &["KIND:     Pod\n", "VERSION:  v1\n", "RESOURCE: containers <[]Object>\n", "   name\t<string> -required-\n", "   env\t<[]Object>\n"]);
    let v2 = c.ok(&["explain", "deployment.spec.strategy", "--recursive", "--output=plaintext-openapiv2"]);
    assert_has(&v2, &["RESOURCE: strategy <Object>\n", "   rollingUpdate\t<Object>\n", "      maxSurge\t<string>\n"]);

    let nope = c.kubectl(&["explain", "pod.spec.nope"]);
    assert!(!nope.ok);
    assert!(nope.stderr.contains(r#"error: field "nope" does not exist"#), "{}", nope.stderr);
}

fn validation(c: &Cluster) {
    let strict = c.kubectl_stdin(&["apply", "-f", "-"], Some(&BAD_POD.replace("NAME", "strict")));
    assert!(!strict.ok);
    assert_eq!(
        strict.stderr.trim(),
        r#"Error from server (BadRequest): error when creating "STDIN": Pod in version "v1" cannot be handled as a Pod: strict decoding error: unknown field "spec.containerz""#
    );
    assert!(c.kubectl(&["get", "pod", "strict"]).stderr.contains("NotFound"));

    let warn = c.kubectl_stdin(&["apply", "--validate=warn", "-f", "-"], Some(&BAD_POD.replace("NAME", "warned")));
    assert!(warn.ok, "{}", warn.stderr);
    assert_eq!(warn.stdout.trim(), "pod/warned created");
    assert_eq!(warn.stderr.trim(), r#"Warning: unknown field "spec.containerz""#);
    // Unknown fields are dropped, as the real server drops them.
    let spec = c.ok(&["get", "pod", "warned", "-o", "jsonpath={.spec}"]);
    assert!(!spec.contains("containerz") && spec.contains(r#""name":"main""#), "{spec}");

    // kubectl patch sends no fieldValidation: the server's default, Warn, on the status
    // subresource as on the object.
    let status = c.kubectl(&["patch", "pod", "warned", "--subresource=status", "--type=merge", "-p", r#"{"status":{"phasez":"x"}}"#]);
    assert!(status.ok, "{}", status.stderr);
    assert_eq!(status.stderr.trim(), r#"Warning: unknown field "status.phasez""#);
    let spec = c.kubectl(&["patch", "pod", "warned", "--type=merge", "-p", r#"{"spec":{"nodeNamez":"x"}}"#]);
    assert_eq!(spec.stderr.trim(), r#"Warning: unknown field "spec.nodeNamez""#);

    let quiet = c.kubectl_stdin(&["apply", "--validate=false", "-f", "-"], Some(&BAD_POD.replace("NAME", "quiet")));
    assert!(quiet.ok, "{}", quiet.stderr);
    assert_eq!((quiet.stdout.trim(), quiet.stderr.trim()), ("pod/quiet created", ""));

    let create = c.kubectl_stdin(&["create", "-f", "-"], Some(&BAD_POD.replace("NAME", "created")));
    assert!(!create.ok);
    assert!(create.stderr.contains(r#"error when creating "STDIN": Pod in version "v1" cannot be handled as a Pod: strict decoding error: unknown field "spec.containerz""#), "{}", create.stderr);

    // Duplicate keys survive only in raw JSON: `create --raw` sends the body as written.
    let dir = c.data_dir.join("raw");
    std::fs::create_dir_all(&dir).expect("dir");
    let dup = dir.join("dup.json");
    std::fs::write(&dup, r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"dup"},"data":{"a":"1"},"data":{"b":"2"},"extra":1}"#).expect("write");
    let dup = dup.to_string_lossy().to_string();
    let refused = c.kubectl(&["create", "--raw", "/api/v1/namespaces/default/configmaps?fieldValidation=Strict", "-f", &dup]);
    assert!(!refused.ok);
    assert!(refused.stderr.contains(r#"strict decoding error: duplicate field "data", unknown field "extra""#), "{}", refused.stderr);
    let warned = c.kubectl(&["create", "--raw", "/api/v1/namespaces/default/configmaps?fieldValidation=Warn", "-f", &dup]);
    assert!(warned.ok, "{}", warned.stderr);
    assert_has(&warned.stderr, &[r#"Warning: duplicate field "data""#, r#"Warning: unknown field "extra""#]);
    assert_eq!(c.ok(&["get", "cm", "dup", "-o", "jsonpath={.data}"]), r#"{"b":"2"}"#);
}

fn writes_that_consult_openapi(c: &Cluster) {
    let created = c.kubectl_stdin(&["apply", "-f", "-"], Some(DEPLOY));
    assert_eq!(created.stdout.trim(), "deployment.apps/web created", "{}", created.stderr);
    // Client-side apply of a change: a strategic merge patch built from the v3 schema's
    // merge keys (env by name), with no fallback warning.
    let changed = c.kubectl_stdin(&["apply", "-f", "-"], Some(&DEPLOY.replace(r#"{name: B, value: "1"}"#, r#"{name: B, value: "2"}"#)));
    assert!(changed.ok, "{}", changed.stderr);
    assert_eq!(changed.stdout.trim(), "deployment.apps/web configured");
    assert!(!changed.stderr.contains("strategic merge"), "{}", changed.stderr);
    assert_eq!(c.ok(&["get", "deploy", "web", "-o", "jsonpath={.spec.template.spec.containers[0].env[*].value}"]), "1 2");

    let script = c.data_dir.join("editor.sh");
    std::fs::write(&script, "#!/bin/sh\nsed -i 's/replicas: 1/replicas: 2/' \"$1\"\n").expect("editor");
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");
    let edit = std::process::Command::new("kubectl")
        .args(["edit", "deploy", "web"])
        .env("KUBECONFIG", &c.kubeconfig)
        .env("EDITOR", &script)
        .output()
        .expect("kubectl edit");
    assert!(edit.status.success(), "{}", String::from_utf8_lossy(&edit.stderr));
    assert_eq!(String::from_utf8_lossy(&edit.stdout).trim(), "deployment.apps/web edited");
    assert_eq!(c.ok(&["get", "deploy", "web", "-o", "jsonpath={.spec.replicas}"]), "2");

    // replace: kubectl pins the resourceVersion it just read, so a status write by the
    // controllers in between is a genuine 409 (as on any server); a user retries.
    let replaced = c.eventually(Duration::from_secs(20), "replace succeeds", || {
        let o = c.kubectl_stdin(&["replace", "-f", "-"], Some(&DEPLOY.replace("replicas: 1", "replicas: 3")));
        if o.ok { Ok(o.stdout) } else if o.stderr.contains("(Conflict)") { Err(o.stderr) } else { panic!("replace failed: {}", o.stderr) }
    });
    assert_eq!(replaced.trim(), "deployment.apps/web replaced");
    let bad = c.kubectl_stdin(&["replace", "-f", "-"], Some(&DEPLOY.replace("replicas: 1", "replicaz: 3")));
    assert!(!bad.ok);
    assert!(bad.stderr.contains(r#"Deployment in version "v1" cannot be handled as a Deployment: strict decoding error: unknown field "spec.replicaz""#), "{}", bad.stderr);
    assert_eq!(c.ok(&["get", "deploy", "web", "-o", "jsonpath={.spec.replicas}"]), "3");
}

/// (status line, headers) of a raw GET, from kubectl's own request log.
fn raw_headers(c: &Cluster, path: &str) -> String {
    let o = c.kubectl(&["get", "--raw", path, "-v=8"]);
    o.stderr.lines().filter(|l| l.contains("Response Status") || l.contains("Cache-Control") || l.contains("Location")).collect::<Vec<_>>().join("\n")
}

fn documents(c: &Cluster) {
    let index: serde_json::Value = serde_json::from_str(&c.ok(&["get", "--raw", "/openapi/v3"])).expect("index json");
    let url = index["paths"]["apis/apps/v1"]["serverRelativeURL"].as_str().expect("apps url").to_string();
    let again: serde_json::Value = serde_json::from_str(&c.ok(&["get", "--raw", "/openapi/v3"])).expect("index json");
    assert_eq!(again["paths"]["apis/apps/v1"]["serverRelativeURL"], url.as_str(), "the hash is stable");

    let fresh = raw_headers(c, &url);
    assert!(fresh.contains("200 OK") && fresh.contains("Cache-Control: public, immutable, max-age=31536000"), "{fresh}");
    let stale = raw_headers(c, "/openapi/v3/apis/apps/v1?hash=0000");
    assert!(stale.contains("301 Moved Permanently") && stale.contains(&format!("Location: {url}")), "{stale}");

    let doc: serde_json::Value = serde_json::from_str(&c.ok(&["get", "--raw", &url])).expect("apps json");
    let d = &doc["components"]["schemas"]["io.k8s.api.apps.v1.Deployment"];
    assert_eq!(d["x-kubernetes-group-version-kind"][0]["kind"], "Deployment");
    assert_eq!(doc["components"]["schemas"]["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"]["x-kubernetes-patch-merge-key"], "name");

    let v2: serde_json::Value = serde_json::from_str(&c.ok(&["get", "--raw", "/openapi/v2"])).expect("v2 json");
    assert_eq!(v2["swagger"], "2.0");
    assert_eq!(v2["definitions"]["io.k8s.api.core.v1.Pod"]["properties"]["spec"]["$ref"], "#/definitions/io.k8s.api.core.v1.PodSpec");
    assert_eq!(v2["definitions"]["io.k8s.api.core.v1.Container"]["properties"]["ports"]["x-kubernetes-patch-merge-key"], "containerPort");
}

#[test]
fn kubectl_explain_and_server_side_field_validation() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut c = Cluster::up(&tmp.path().join("data"), 1);
    explain(&c);
    validation(&c);
    writes_that_consult_openapi(&c);
    documents(&c);
    c.stop();
}
