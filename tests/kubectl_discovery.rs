//! What kubectl learns about the server before anything else, checked by what it prints:
//! version, api-versions, api-resources (with its filters), cluster-info, and the same
//! API through `kubectl proxy` (plain HTTP on loopback, lists, watches and kubectl itself).

mod common;

use common::cluster::Cluster;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

fn rows(table: &str) -> Vec<Vec<String>> {
    table.lines().map(|l| l.split_whitespace().map(str::to_string).collect()).filter(|r: &Vec<String>| !r.is_empty()).collect()
}

#[test]
fn kubectl_discovers_the_server_and_works_through_its_proxy() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let c = Cluster::up(&tmp.path().join("cluster"), 1);

    let v = c.ok(&["version"]);
    assert!(v.lines().any(|l| l.starts_with("Server Version: v1.32.")), "{v}");

    let versions: Vec<String> = c.ok(&["api-versions"]).lines().map(str::to_string).collect();
    for gv in ["apps/v1", "authorization.k8s.io/v1", "batch/v1", "coordination.k8s.io/v1", "discovery.k8s.io/v1", "events.k8s.io/v1",
               "node.k8s.io/v1", "policy/v1", "rbac.authorization.k8s.io/v1", "scheduling.k8s.io/v1", "v1"] {
        assert!(versions.iter().any(|l| l == gv), "api-versions lacks {gv}: {versions:?}");
    }
    let mut sorted = versions.clone();
    sorted.sort();
    assert_eq!(versions, sorted, "kubectl prints them sorted");

    let all = rows(&c.ok(&["api-resources"]));
    assert_eq!(all[0], ["NAME", "SHORTNAMES", "APIVERSION", "NAMESPACED", "KIND"]);
    for want in [
        &["pods", "po", "v1", "true", "Pod"][..],
        &["deployments", "deploy", "apps/v1", "true", "Deployment"],
        &["cronjobs", "cj", "batch/v1", "true", "CronJob"],
        &["nodes", "no", "v1", "false", "Node"],
        &["clusterroles", "rbac.authorization.k8s.io/v1", "false", "ClusterRole"],
        &["poddisruptionbudgets", "pdb", "policy/v1", "true", "PodDisruptionBudget"],
        &["selfsubjectaccessreviews", "authorization.k8s.io/v1", "false", "SelfSubjectAccessReview"],
    ] {
        assert!(all.iter().any(|r| r == want), "api-resources lacks {want:?}");
    }
    let cluster_scoped = rows(&c.ok(&["api-resources", "--namespaced=false", "-o", "name"]));
    assert!(cluster_scoped.iter().any(|r| r[0] == "nodes") && !cluster_scoped.iter().any(|r| r[0] == "pods"), "{cluster_scoped:?}");
    let apps = rows(&c.ok(&["api-resources", "--api-group=apps", "-o", "name"]));
    let apps: Vec<&str> = apps.iter().map(|r| r[0].as_str()).collect();
    assert_eq!(apps, ["controllerrevisions.apps", "daemonsets.apps", "deployments.apps", "replicasets.apps", "statefulsets.apps"]);
    let wide = rows(&c.ok(&["api-resources", "-o", "wide", "--api-group=apps"]));
    assert_eq!(wide[0], ["NAME", "SHORTNAMES", "APIVERSION", "NAMESPACED", "KIND", "VERBS", "CATEGORIES"]);
    assert!(wide.iter().any(|r| r[0] == "deployments" && r[5] == "create,delete,deletecollection,get,list,patch,update,watch" && r[6] == "all"), "{wide:?}");
    let listable = rows(&c.ok(&["api-resources", "--verbs=list", "-o", "name"]));
    assert!(!listable.iter().any(|r| r[0].starts_with("selfsubject")), "reviews cannot be listed: {listable:?}");

    let info = c.ok(&["cluster-info"]);
    assert!(info.contains(&format!("Kubernetes control plane is running at https://{}", c.addr)), "{info}");

    // kubectl proxy in front of the gateway: it authenticates with the admin kubeconfig.
    let mut proxy = Command::new("kubectl")
        .args(["proxy", "--port=0"])
        .env("KUBECONFIG", &c.kubeconfig)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("kubectl proxy");
    let mut first = String::new();
    BufReader::new(proxy.stdout.take().expect("proxy stdout")).read_line(&mut first).expect("proxy says where it serves");
    let addr = first.trim().strip_prefix("Starting to serve on ").unwrap_or_else(|| panic!("kubectl proxy printed {first:?}")).to_string();
    let curl = |path: &str| {
        let o = Command::new("curl").args(["-s", "--max-time", "10", &format!("http://{addr}{path}")]).output().expect("curl");
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let nss: serde_json::Value = serde_json::from_str(&curl("/api/v1/namespaces")).expect("a NamespaceList through the proxy");
    assert_eq!(nss["kind"], "NamespaceList");
    assert!(nss["items"].as_array().is_some_and(|a| a.iter().any(|n| n["metadata"]["name"] == "default")));
    // kubectl itself, pointed at the proxy.
    let through = Command::new("kubectl").args(["--server", &format!("http://{addr}"), "get", "namespace", "default", "-o", "name"]).env("KUBECONFIG", "/dev/null").output().expect("kubectl via proxy");
    assert_eq!(String::from_utf8_lossy(&through.stdout).trim(), "namespace/default", "{}", String::from_utf8_lossy(&through.stderr));
    // A watch streams through it: the object created meanwhile arrives as ADDED.
    let rv = nss["metadata"]["resourceVersion"].as_str().expect("list resourceVersion").to_string();
    let watcher = {
        let addr = addr.clone();
        std::thread::spawn(move || {
            let o = Command::new("curl")
                .args(["-sN", "--max-time", "10", &format!("http://{addr}/api/v1/namespaces/default/configmaps?watch=1&resourceVersion={rv}&timeoutSeconds=3")])
                .output()
                .expect("curl watch");
            String::from_utf8_lossy(&o.stdout).into_owned()
        })
    };
    // The watch starts from `rv`, so it sees this create however late curl connects.
    c.ok(&["create", "configmap", "via-proxy", "--from-literal=a=b"]);
    let events = watcher.join().expect("watch thread");
    let added: Vec<serde_json::Value> = events.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    assert!(added.iter().any(|e| e["type"] == "ADDED" && e["object"]["metadata"]["name"] == "via-proxy"), "{events}");
    // SAFETY: stopping the kubectl proxy this test started, by PID.
    unsafe { libc::kill(proxy.id() as i32, libc::SIGTERM) };
    let _ = proxy.wait();
}
