//! A pod's configuration as a Kubernetes user writes it, under containerd with the real
//! kubectl: env from ConfigMaps, Secrets, the downward API and resource fields, `envFrom`
//! with a prefix, `$(VAR)` in values and command, the Services' link variables; configMap,
//! secret, downwardAPI and projected volumes with their modes, an updated ConfigMap and
//! new labels reaching the mounted files, two containers sharing an emptyDir (and one in
//! memory, gone with the pod); a missing key is `CreateContainerConfigError` with the
//! kubelet's words until the key appears.

mod common;

use common::cluster::Cluster;
use common::registry::{busybox_only, offline_images};
use std::time::Duration;

const SETUP: &str = r#"
apiVersion: v1
kind: ConfigMap
metadata: {name: cfg}
data:
  mode: fast
  app.conf: "level=3"
---
apiVersion: v1
kind: Secret
metadata: {name: creds}
stringData:
  password: hunter2
---
apiVersion: v1
kind: Service
metadata: {name: web-front}
spec:
  selector: {app: none}
  ports: [{name: http, port: 8080}]
"#;

const POD: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: configured
  labels: {app: cfgtest, tier: one}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: busybox
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "echo started in $(MODE) mode; echo shared > /shared/from-main; echo mem > /mem/here; exec sleep 3600"]
    resources:
      requests: {memory: 32Mi}
      limits: {memory: 64Mi}
    envFrom:
    - prefix: CFG_
      configMapRef: {name: cfg}
    env:
    - {name: MODE, valueFrom: {configMapKeyRef: {name: cfg, key: mode}}}
    - {name: PASSWORD, valueFrom: {secretKeyRef: {name: creds, key: password}}}
    - {name: POD_NAME, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
    - {name: POD_IP, valueFrom: {fieldRef: {fieldPath: status.podIP}}}
    - {name: MEM_LIMIT_MI, valueFrom: {resourceFieldRef: {resource: limits.memory, divisor: 1Mi}}}
    - {name: GREETING, value: "$(POD_NAME) runs $(MODE), $$(MODE) is literal"}
    volumeMounts:
    - {name: config, mountPath: /etc/cfg}
    - {name: secret, mountPath: /etc/secret}
    - {name: info, mountPath: /etc/info}
    - {name: all, mountPath: /etc/all}
    - {name: shared, mountPath: /shared}
    - {name: mem, mountPath: /mem}
  - name: side
    image: busybox
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "exec sleep 3600"]
    volumeMounts:
    - {name: shared, mountPath: /from-side}
  volumes:
  - name: config
    configMap: {name: cfg, defaultMode: 0600}
  - name: secret
    secret:
      secretName: creds
      items: [{key: password, path: pw/file, mode: 0400}]
  - name: info
    downwardAPI:
      items:
      - {path: labels, fieldRef: {fieldPath: metadata.labels}}
      - {path: name, fieldRef: {fieldPath: metadata.name}}
  - name: all
    projected:
      sources:
      - configMap: {name: cfg, items: [{key: mode, path: mode}]}
      - secret: {name: creds}
      - downwardAPI: {items: [{path: mem, resourceFieldRef: {containerName: main, resource: limits.memory, divisor: 1Mi}}]}
      - serviceAccountToken: {path: token, expirationSeconds: 3600}
      - configMap: {name: kube-root-ca.crt, items: [{key: ca.crt, path: ca.crt}]}
  - {name: shared, emptyDir: {}}
  - {name: mem, emptyDir: {medium: Memory}}
"#;

const MISSING: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: missing-key}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: busybox
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "echo got $LATE; exec sleep 3600"]
    env:
    - {name: LATE, valueFrom: {configMapKeyRef: {name: cfg, key: late}}}
"#;

fn exec(c: &Cluster, container: &str, script: &str) -> String {
    c.ok(&["exec", "configured", "-c", container, "--", "sh", "-c", script]).trim().to_string()
}

fn env_of(c: &Cluster) -> std::collections::BTreeMap<String, String> {
    // Not through sh, which drops names like `CFG_app.conf` that it cannot hold.
    c.ok(&["exec", "configured", "-c", "main", "--", "env"]).lines().filter_map(|l| l.split_once('=')).map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

#[test]
fn env_sources_and_written_volumes_reach_the_containers() {
    assert!(unsafe { libc::geteuid() } == 0, "this test runs containerd: run it as root (CI does, after deploy/install-deps.sh)");
    let images = offline_images();
    let tmp = tempfile::tempdir().expect("tempdir");
    let airgap = busybox_only(&images, tmp.path());
    let cidr = common::pod_cidr();
    let mut c = Cluster::up_with(&tmp.path().join("c"), 1, &["--runtime", "containerd", "--images", &airgap.to_string_lossy(), "--cluster-cidr", &cidr]);
    let o = c.kubectl_stdin(&["apply", "-f", "-"], Some(SETUP));
    assert!(o.ok, "{}", o.stderr);
    let o = c.kubectl_stdin(&["apply", "-f", "-"], Some(POD));
    assert!(o.ok, "{}", o.stderr);
    let wait = Duration::from_secs(120);
    c.eventually(wait, "configured Running", || {
        let o = c.ok(&["get", "pod", "configured", "-o", "jsonpath={.status.phase}"]);
        if o == "Running" { Ok(()) } else { Err(o) }
    });
    let pod_ip = c.ok(&["get", "pod", "configured", "-o", "jsonpath={.status.podIP}"]);
    let uid = c.ok(&["get", "pod", "configured", "-o", "jsonpath={.metadata.uid}"]);

    // Env.
    let env = env_of(&c);
    let get = |k: &str| env.get(k).map(String::as_str);
    assert_eq!(get("MODE"), Some("fast"), "{env:?}");
    assert_eq!(get("CFG_mode"), Some("fast"));
    assert_eq!(get("CFG_app.conf"), Some("level=3"));
    assert_eq!(get("PASSWORD"), Some("hunter2"));
    assert_eq!(get("POD_NAME"), Some("configured"));
    assert_eq!(get("POD_IP"), Some(pod_ip.as_str()));
    assert_eq!(get("MEM_LIMIT_MI"), Some("64"));
    assert_eq!(get("GREETING"), Some("configured runs fast, $(MODE) is literal"));
    let svc_ip = c.ok(&["get", "svc", "web-front", "-o", "jsonpath={.spec.clusterIP}"]);
    assert_eq!(get("WEB_FRONT_SERVICE_HOST"), Some(svc_ip.as_str()));
    assert_eq!(get("WEB_FRONT_SERVICE_PORT_HTTP"), Some("8080"));
    assert_eq!(get("WEB_FRONT_PORT"), Some(format!("tcp://{svc_ip}:8080").as_str()));
    assert!(get("KUBERNETES_SERVICE_HOST").is_some(), "the kubernetes Service is always linked: {env:?}");
    let logs = c.eventually(Duration::from_secs(20), "main's first line", || {
        let l = c.ok(&["logs", "configured", "-c", "main"]);
        if l.is_empty() { Err(l) } else { Ok(l) }
    });
    assert_eq!(logs.trim(), "started in fast mode", "$(MODE) in command expands");

    // Files and modes (stat -L: the keys are links into ..data, as the kubelet's are).
    assert_eq!(exec(&c, "main", "cat /etc/cfg/mode; echo; cat /etc/cfg/app.conf"), "fast\nlevel=3");
    assert_eq!(exec(&c, "main", "stat -L -c %a /etc/cfg/mode"), "600");
    assert_eq!(exec(&c, "main", "cat /etc/secret/pw/file; stat -L -c ' %a' /etc/secret/pw/file"), "hunter2 400");
    assert_eq!(exec(&c, "main", "cat /etc/info/labels"), "app=\"cfgtest\"\ntier=\"one\"");
    assert_eq!(exec(&c, "main", "cat /etc/info/name"), "configured");
    assert_eq!(exec(&c, "main", "cat /etc/all/mode; echo; cat /etc/all/password; echo; cat /etc/all/mem; stat -L -c ' %a' /etc/all/mode"), "fast\nhunter2\n64 644");
    // The projected token is a JWT for the pod's account, bound to the pod; the CA is the cluster's.
    let token = exec(&c, "main", "cat /etc/all/token");
    let payload = token.split('.').nth(1).expect("a JWT");
    use base64::Engine;
    let claims: serde_json::Value = serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).expect("base64url")).expect("claims");
    assert_eq!(claims["sub"], "system:serviceaccount:default:default", "{claims}");
    assert_eq!(claims["kubernetes.io"]["pod"]["uid"], uid.as_str(), "{claims}");
    assert_eq!(exec(&c, "main", "stat -L -c %a /etc/all/token"), "644", "the projected volume's default mode");
    // Only the token: no kubeconfig (whose client certificate would be used first).
    let server = c.ok(&["config", "view", "--raw", "-o", "jsonpath={.clusters[0].cluster.server}"]);
    let who = c.ok(&["--kubeconfig", "/dev/null", "--server", &server, "--insecure-skip-tls-verify", "--token", &token, "auth", "whoami", "-o", "jsonpath={.status.userInfo.username}"]);
    assert_eq!(who, "system:serviceaccount:default:default");
    let ca = c.ok(&["get", "configmap", "kube-root-ca.crt", "-o", "jsonpath={.data.ca\\.crt}"]);
    assert!(ca.starts_with("-----BEGIN CERTIFICATE-----"), "{ca}");
    assert_eq!(exec(&c, "main", "cat /etc/all/ca.crt"), ca.trim());
    let refused = c.kubectl(&["exec", "configured", "-c", "main", "--", "sh", "-c", "echo x > /etc/cfg/new"]);
    assert!(!refused.ok, "configMap volumes are read-only");

    // Two containers, one emptyDir; the memory one lives in tmpfs on the node.
    c.eventually(Duration::from_secs(20), "the side container sees main's file", || {
        let o = c.kubectl(&["exec", "configured", "-c", "side", "--", "cat", "/from-side/from-main"]);
        if o.ok && o.stdout.trim() == "shared" { Ok(()) } else { Err(format!("{} {}", o.stdout, o.stderr)) }
    });
    let mem_dir = std::path::Path::new("/dev/shm/flotilla-pods").join(&uid);
    assert_eq!(std::fs::read_to_string(mem_dir.join("mem/here")).expect("the memory emptyDir on the node").trim(), "mem");

    // Updates reach the mounted files.
    c.ok(&["patch", "configmap", "cfg", "--type=merge", "-p", r#"{"data":{"mode":"slow"}}"#]);
    c.eventually(Duration::from_secs(60), "the updated ConfigMap in the file", || {
        let o = exec(&c, "main", "cat /etc/cfg/mode; echo; cat /etc/all/mode");
        if o == "slow\nslow" { Ok(()) } else { Err(o) }
    });
    c.ok(&["label", "pod", "configured", "tier=two", "--overwrite"]);
    c.eventually(Duration::from_secs(60), "the new label in the downwardAPI file", || {
        let o = exec(&c, "main", "cat /etc/info/labels");
        if o.contains("tier=\"two\"") { Ok(()) } else { Err(o) }
    });
    assert_eq!(env_of(&c).get("MODE").map(String::as_str), Some("fast"), "env stays what the container started with");

    // A missing key: CreateContainerConfigError with the kubelet's words, until it exists.
    let o = c.kubectl_stdin(&["apply", "-f", "-"], Some(MISSING));
    assert!(o.ok, "{}", o.stderr);
    c.eventually(Duration::from_secs(60), "CreateContainerConfigError", || {
        let o = c.ok(&["get", "pod", "missing-key", "-o", "jsonpath={.status.containerStatuses[0].state.waiting.reason}: {.status.containerStatuses[0].state.waiting.message}"]);
        if o == "CreateContainerConfigError: couldn't find key late in ConfigMap default/cfg" { Ok(()) } else { Err(o) }
    });
    let table = c.ok(&["get", "pod", "missing-key"]);
    assert!(table.contains("CreateContainerConfigError"), "{table}");
    c.ok(&["patch", "configmap", "cfg", "--type=merge", "-p", r#"{"data":{"late":"now"}}"#]);
    c.eventually(Duration::from_secs(60), "missing-key starts once the key exists", || {
        let l = c.kubectl(&["logs", "missing-key"]);
        if l.ok && l.stdout.trim() == "got now" { Ok(()) } else { Err(format!("{} {}", l.stdout, l.stderr)) }
    });

    // The pod's volumes go with it.
    c.ok(&["delete", "pod", "configured", "--wait=true", "--timeout=60s"]);
    c.eventually(Duration::from_secs(30), "the memory emptyDir removed", || if mem_dir.exists() { Err(mem_dir.display().to_string()) } else { Ok(()) });
    c.ok(&["delete", "pod", "missing-key", "--wait=true", "--timeout=60s"]);
    c.stop();
}
