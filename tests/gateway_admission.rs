//! The admission plugins on a real `flotilla up`, through the real kubectl: pods get the
//! `default` ServiceAccount (a missing one is refused), LimitRange defaults and bounds,
//! ResourceQuota refusals with the real message and usage in `describe quota` (also under
//! concurrent creates), the 300 s not-ready/unreachable tolerations, and priorities
//! resolved from PriorityClasses.

mod common;

use common::cluster::Cluster;
use std::time::Duration;

fn pod(name: &str, extra_spec: &str, resources: &str) -> String {
    format!("apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n{extra_spec}  containers:\n  - name: c\n    image: busybox\n    command: [sleep, \"1000\"]\n{resources}")
}

fn create(c: &Cluster, ns: &str, yaml: &str) -> common::cluster::Out {
    c.kubectl_stdin(&["-n", ns, "create", "-f", "-"], Some(yaml))
}

#[test]
fn service_account_tolerations_and_priority() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let c = Cluster::up(&tmp.path().join("cluster"), 0);

    let o = create(&c, "default", &pod("plain", "", ""));
    assert!(o.ok, "{}", o.stderr);
    let y = c.ok(&["get", "pod", "plain", "-o", "yaml"]);
    for want in ["serviceAccountName: default", "serviceAccount: default", "priority: 0", "preemptionPolicy: PreemptLowerPriority", "key: node.kubernetes.io/not-ready", "key: node.kubernetes.io/unreachable"] {
        assert!(y.contains(want), "{want} missing from\n{y}");
    }
    assert_eq!(y.matches("tolerationSeconds: 300").count(), 2, "{y}");

    let o = create(&c, "default", &pod("stranger", "  serviceAccountName: nope\n", ""));
    assert!(!o.ok);
    assert!(o.stderr.contains("Error from server (Forbidden): error when creating \"STDIN\": pods \"stranger\" is forbidden: error looking up service account default/nope: serviceaccount \"nope\" not found"), "{}", o.stderr);

    // The system classes exist; a named class and a global default resolve; an unknown one is refused.
    let pcs = c.ok(&["get", "priorityclasses"]);
    assert!(pcs.contains("system-node-critical") && pcs.contains("2000001000") && pcs.contains("system-cluster-critical"), "{pcs}");
    c.ok(&["create", "priorityclass", "high", "--value=1000", "--preemption-policy=Never"]);
    assert!(create(&c, "default", &pod("vip", "  priorityClassName: high\n", "")).ok);
    assert_eq!(c.ok(&["get", "pod", "vip", "-o", "jsonpath={.spec.priority} {.spec.preemptionPolicy}"]), "1000 Never");
    assert!(create(&c, "default", &pod("crit", "  priorityClassName: system-node-critical\n", "")).ok);
    assert_eq!(c.ok(&["get", "pod", "crit", "-o", "jsonpath={.spec.priority}"]), "2000001000");
    let o = create(&c, "default", &pod("nobody", "  priorityClassName: nope\n", ""));
    assert!(o.stderr.contains("pods \"nobody\" is forbidden: no PriorityClass with name nope was found"), "{}", o.stderr);
    c.ok(&["create", "priorityclass", "usual", "--value=50", "--global-default"]);
    let o = c.kubectl(&["create", "priorityclass", "another", "--value=60", "--global-default"]);
    assert!(o.stderr.contains("PriorityClass another is marked as default and another default already exists: usual"), "{}", o.stderr);
    assert!(create(&c, "default", &pod("later", "", "")).ok);
    assert_eq!(c.ok(&["get", "pod", "later", "-o", "jsonpath={.spec.priorityClassName} {.spec.priority}"]), "usual 50");
}

#[test]
fn limit_ranges_default_and_bound_containers() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let c = Cluster::up(&tmp.path().join("cluster"), 0);
    c.ok(&["create", "namespace", "lr"]);
    let range = "apiVersion: v1\nkind: LimitRange\nmetadata:\n  name: limits\nspec:\n  limits:\n  - type: Container\n    default: {cpu: 500m, memory: 128Mi}\n    defaultRequest: {cpu: 100m, memory: 64Mi}\n    max: {cpu: \"1\"}\n";
    assert!(c.kubectl_stdin(&["-n", "lr", "create", "-f", "-"], Some(range)).ok);

    assert!(create(&c, "lr", &pod("defaulted", "", "")).ok);
    let res = c.ok(&["-n", "lr", "get", "pod", "defaulted", "-o", "jsonpath={.spec.containers[0].resources}"]);
    let res: serde_json::Value = serde_json::from_str(&res).expect("resources JSON");
    assert_eq!(res, serde_json::json!({"limits": {"cpu": "500m", "memory": "128Mi"}, "requests": {"cpu": "100m", "memory": "64Mi"}}));
    let note = c.ok(&["-n", "lr", "get", "pod", "defaulted", "-o", "jsonpath={.metadata.annotations.kubernetes\\.io/limit-ranger}"]);
    assert_eq!(note, "LimitRanger plugin set: cpu, memory request for container c; cpu, memory limit for container c");

    let big = "    resources:\n      limits: {cpu: \"2\"}\n";
    let o = create(&c, "lr", &pod("big", "", big));
    assert!(o.stderr.contains("Error from server (Forbidden): error when creating \"STDIN\": pods \"big\" is forbidden: maximum cpu usage per Container is 1, but limit is 2"), "{}", o.stderr);
    assert!(c.kubectl(&["-n", "lr", "get", "pod", "big"]).stderr.contains("NotFound"));
}

#[test]
fn resource_quotas_count_refuse_and_hold_under_races() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let c = Cluster::up(&tmp.path().join("cluster"), 0);
    c.ok(&["create", "namespace", "q"]);
    // Every namespace holds kube-root-ca.crt, which counts against a configmaps quota as
    // in a real cluster: wait for it, so that the room left below is exactly two.
    c.eventually(Duration::from_secs(20), "kube-root-ca.crt in q", || {
        let o = c.kubectl(&["-n", "q", "get", "configmap", "kube-root-ca.crt", "-o", "name"]);
        if o.ok { Ok(()) } else { Err(o.stderr) }
    });
    c.ok(&["-n", "q", "create", "quota", "q1", "--hard=pods=1,configmaps=3,requests.cpu=1"]);
    let d = c.ok(&["-n", "q", "describe", "quota", "q1"]);
    assert!(d.lines().any(|l| l.split_whitespace().collect::<Vec<_>>() == ["pods", "0", "1"]), "{d}");

    // A cpu quota needs every container to declare its request.
    let o = create(&c, "q", &pod("bare", "", ""));
    assert!(o.stderr.contains("pods \"bare\" is forbidden: failed quota: q1: must specify requests.cpu for: c"), "{}", o.stderr);
    let small = "    resources:\n      requests: {cpu: 250m}\n";
    assert!(create(&c, "q", &pod("a", "", small)).ok);
    let o = create(&c, "q", &pod("b", "", small));
    assert!(
        o.stderr.contains("Error from server (Forbidden): error when creating \"STDIN\": pods \"b\" is forbidden: exceeded quota: q1, requested: pods=1, used: pods=1, limited: pods=1"),
        "{}",
        o.stderr
    );
    let d = c.ok(&["-n", "q", "describe", "quota", "q1"]);
    assert!(d.lines().any(|l| l.split_whitespace().collect::<Vec<_>>() == ["pods", "1", "1"]), "{d}");
    assert!(d.lines().any(|l| l.split_whitespace().collect::<Vec<_>>() == ["requests.cpu", "250m", "1"]), "{d}");

    // Six creates at once against room for two: exactly two get in (CAS on the quota).
    let kids: Vec<_> = (0..6)
        .map(|i| {
            std::process::Command::new("kubectl")
                .args(["--request-timeout=20s", "-n", "q", "create", "configmap", &format!("cm-{i}")])
                .env("KUBECONFIG", &c.kubeconfig)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("kubectl")
        })
        .collect();
    let outs: Vec<_> = kids.into_iter().map(|k| k.wait_with_output().expect("kubectl")).collect();
    let won = outs.iter().filter(|o| o.status.success()).count();
    assert_eq!(won, 2, "{:?}", outs.iter().map(|o| String::from_utf8_lossy(&o.stderr).into_owned()).collect::<Vec<_>>());
    for o in outs.iter().filter(|o| !o.status.success()) {
        assert!(String::from_utf8_lossy(&o.stderr).contains("exceeded quota: q1, requested: configmaps=1, used: configmaps=3, limited: configmaps=3"), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let user_maps = || -> Vec<String> { c.ok(&["-n", "q", "get", "configmaps", "-o", "name"]).lines().filter(|l| *l != "configmap/kube-root-ca.crt").map(str::to_string).collect() };
    assert_eq!(user_maps().len(), 2);

    // Deleting gives quota back: the controller recomputes usage.
    let first = user_maps()[0].clone();
    c.ok(&["-n", "q", "delete", &first]);
    c.eventually(Duration::from_secs(10), "configmaps usage drops to 2", || {
        let d = c.ok(&["-n", "q", "describe", "quota", "q1"]);
        if d.lines().any(|l| l.split_whitespace().collect::<Vec<_>>() == ["configmaps", "2", "3"]) { Ok(()) } else { Err(d) }
    });
    c.ok(&["-n", "q", "create", "configmap", "again"]);
}
