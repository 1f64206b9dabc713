//! Server-side apply with the real kubectl against `flotilla up`: field managers in
//! managedFields, re-applies, the conflict a scale causes and `--force-conflicts`,
//! pruning of dropped fields, a second manager co-owning the object, `diff
//! --server-side`, and the migration of an object made by client-side apply.

mod common;

use common::cluster::Cluster;
use serde_json::Value;

fn deploy(name: &str, replicas: u32, image: &str, labels: &str) -> String {
    format!(
        r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
  labels: {{{labels}}}
spec:
  replicas: {replicas}
  selector:
    matchLabels: {{app: {name}}}
  template:
    metadata:
      labels: {{app: {name}}}
    spec:
      containers:
      - name: main
        image: {image}
        command: ["sleep", "3600"]
"#
    )
}

fn object(c: &Cluster, name: &str) -> Value {
    serde_json::from_str(&c.ok(&["get", "deploy", name, "-n", "ssa", "-o", "json", "--show-managed-fields"])).expect("deployment JSON")
}

/// "manager/operation/subresource" of every managedFields entry.
fn managers(v: &Value) -> Vec<String> {
    v["metadata"]["managedFields"]
        .as_array()
        .map(|a| a.iter().map(|e| format!("{}/{}/{}", e["manager"].as_str().unwrap_or(""), e["operation"].as_str().unwrap_or(""), e["subresource"].as_str().unwrap_or(""))).collect())
        .unwrap_or_default()
}

/// The fieldsV1 of the entry for `manager` and `operation`.
fn fields_of<'a>(v: &'a Value, manager: &str, operation: &str) -> &'a Value {
    v["metadata"]["managedFields"].as_array().and_then(|a| a.iter().find(|e| e["manager"] == manager && e["operation"] == operation)).map(|e| &e["fieldsV1"]).unwrap_or(&Value::Null)
}

fn apply(c: &Cluster, args: &[&str], yaml: &str) -> common::cluster::Out {
    let mut all = vec!["apply", "--server-side", "-n", "ssa", "-f", "-"];
    all.extend_from_slice(args);
    c.kubectl_stdin(&all, Some(yaml))
}

#[test]
fn kubectl_server_side_apply_owns_fields_and_reports_conflicts() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let c = Cluster::up(&tmp.path().join("cluster"), 1);
    c.ok(&["create", "namespace", "ssa"]);

    // Create by apply (201): one Apply entry, hidden unless asked for.
    let out = apply(&c, &["-v=6"], &deploy("web", 2, "busybox:1", "app: web, tier: fe"));
    assert!(out.ok, "{}", out.stderr);
    assert_eq!(out.stdout.trim(), "deployment.apps/web serverside-applied");
    assert!(out.stderr.lines().any(|l| l.contains("PATCH https://") && l.contains("fieldManager=kubectl") && l.contains("201 Created")), "{}", out.stderr);
    let v = object(&c, "web");
    assert_eq!(managers(&v), ["kubectl/Apply/"]);
    let f = fields_of(&v, "kubectl", "Apply");
    assert_eq!(f["f:spec"]["f:replicas"], serde_json::json!({}));
    assert_eq!(f["f:metadata"]["f:labels"], serde_json::json!({"f:app":{}, "f:tier":{}}));
    assert!(f["f:spec"]["f:template"]["f:spec"]["f:containers"]["k:{\"name\":\"main\"}"]["."].is_object(), "{f}");
    assert_eq!(v["metadata"]["managedFields"][0]["apiVersion"], "apps/v1");
    assert_eq!(v["metadata"]["managedFields"][0]["fieldsType"], "FieldsV1");
    let time = v["metadata"]["managedFields"][0]["time"].as_str().unwrap_or("");
    assert!(time.len() == 20 && time.ends_with('Z'), "{time}");
    let plain = c.ok(&["get", "deploy", "web", "-n", "ssa", "-o", "yaml"]);
    assert!(!plain.contains("managedFields"), "{plain}");
    let shown = c.ok(&["get", "deploy", "web", "-n", "ssa", "-o", "yaml", "--show-managed-fields"]);
    assert!(shown.contains("manager: kubectl") && shown.contains("operation: Apply") && shown.contains("f:replicas: {}"), "{shown}");

    // The same configuration again changes nothing, not even the resourceVersion (a
    // ConfigMap: no controller writes it in between).
    let cm = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\ndata: {mode: fast}\n";
    assert!(apply(&c, &[], cm).ok);
    let rv = |c: &Cluster| c.ok(&["get", "cm", "settings", "-n", "ssa", "-o", "jsonpath={.metadata.resourceVersion}"]);
    let before = rv(&c);
    let out = apply(&c, &[], cm);
    assert!(out.ok && out.stdout.contains("configmap/settings serverside-applied"), "{} {}", out.stdout, out.stderr);
    assert_eq!(rv(&c), before);

    // Re-apply with a new image: applied in place.
    let out = apply(&c, &[], &deploy("web", 2, "busybox:2", "app: web, tier: fe"));
    assert!(out.ok, "{}", out.stderr);
    assert_eq!(c.ok(&["get", "deploy", "web", "-n", "ssa", "-o", "jsonpath={.spec.template.spec.containers[0].image}"]), "busybox:2");

    // kubectl scale takes .spec.replicas through the scale subresource...
    assert_eq!(c.ok(&["scale", "deploy", "web", "-n", "ssa", "--replicas=5"]).trim(), "deployment.apps/web scaled");
    let v = object(&c, "web");
    assert_eq!(managers(&v), ["kubectl/Apply/", "kubectl/Update/scale"]);
    assert!(fields_of(&v, "kubectl", "Apply")["f:spec"].get("f:replicas").is_none());

    // ...so applying other replicas conflicts, and nothing changes.
    let out = apply(&c, &[], &deploy("web", 3, "busybox:2", "app: web, tier: fe"));
    assert!(!out.ok);
    assert!(
        out.stderr.contains(r#"error: Apply failed with 1 conflict: conflict with "kubectl" with subresource "scale" using apps/v1: .spec.replicas"#),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("--force-conflicts"), "{}", out.stderr);
    assert_eq!(c.ok(&["get", "deploy", "web", "-n", "ssa", "-o", "jsonpath={.spec.replicas}"]), "5");

    // --force-conflicts takes ownership.
    let out = apply(&c, &["--force-conflicts"], &deploy("web", 3, "busybox:2", "app: web, tier: fe"));
    assert!(out.ok, "{}", out.stderr);
    let v = object(&c, "web");
    assert_eq!(v["spec"]["replicas"], 3);
    assert_eq!(managers(&v), ["kubectl/Apply/"]);
    assert_eq!(fields_of(&v, "kubectl", "Apply")["f:spec"]["f:replicas"], serde_json::json!({}));

    // A label dropped from the configuration leaves the object.
    let out = apply(&c, &[], &deploy("web", 3, "busybox:2", "app: web"));
    assert!(out.ok, "{}", out.stderr);
    assert_eq!(c.ok(&["get", "deploy", "web", "-n", "ssa", "-o", "jsonpath={.metadata.labels}"]), r#"{"app":"web"}"#);

    // A second manager applying a disjoint field co-owns the object.
    let other = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n  annotations: {team: blue}\n";
    let out = apply(&c, &["--field-manager=other"], other);
    assert!(out.ok, "{}", out.stderr);
    let v = object(&c, "web");
    assert_eq!(managers(&v), ["kubectl/Apply/", "other/Apply/"]);
    assert_eq!(v["metadata"]["annotations"]["team"], "blue");
    assert_eq!(v["spec"]["replicas"], 3);
    assert_eq!(fields_of(&v, "other", "Apply")["f:metadata"], serde_json::json!({"f:annotations":{"f:team":{}}}));
    // It may not take kubectl's replicas without forcing.
    let grab = format!("{other}spec:\n  replicas: 4\n");
    let out = apply(&c, &["--field-manager=other"], &grab);
    assert!(out.stderr.contains(r#"Apply failed with 1 conflict: conflict with "kubectl": .spec.replicas"#), "{}", out.stderr);

    // diff --server-side shows what an apply would change, without changing it.
    let out = c.kubectl_stdin(&["diff", "--server-side", "-n", "ssa", "-f", "-"], Some(&deploy("web", 3, "busybox:3", "app: web")));
    assert!(out.stdout.contains("-        image: busybox:2") && out.stdout.contains("+        image: busybox:3"), "{}\n{}", out.stdout, out.stderr);
    assert_eq!(c.ok(&["get", "deploy", "web", "-n", "ssa", "-o", "jsonpath={.spec.template.spec.containers[0].image}"]), "busybox:2");

    // Over an object made by `kubectl create`, equal values are co-owned and a different
    // one conflicts with the creator.
    c.ok(&["create", "deployment", "made", "-n", "ssa", "--image=busybox:1", "--", "sleep", "3600"]);
    assert_eq!(managers(&object(&c, "made")), ["kubectl-create/Update/"]);
    let made = |image: &str| format!("apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: made}}\nspec:\n  selector: {{matchLabels: {{app: made}}}}\n  template:\n    metadata: {{labels: {{app: made}}}}\n    spec:\n      containers: [{{name: busybox, image: \"{image}\"}}]\n");
    let out = apply(&c, &[], &made("busybox:1"));
    assert!(out.ok, "{}", out.stderr);
    assert_eq!(managers(&object(&c, "made")), ["kubectl/Apply/", "kubectl-create/Update/"]);
    let out = apply(&c, &[], &made("busybox:2"));
    assert!(
        out.stderr.contains(r#"Apply failed with 1 conflict: conflict with "kubectl-create" using apps/v1: .spec.template.spec.containers[name="busybox"].image"#),
        "{}",
        out.stderr
    );

    // An object made by client-side apply migrates to server-side apply without conflicts.
    let out = c.kubectl_stdin(&["apply", "-n", "ssa", "-f", "-"], Some(&deploy("legacy", 1, "busybox:1", "app: legacy")));
    assert!(out.ok && out.stdout.contains("deployment.apps/legacy created"), "{} {}", out.stdout, out.stderr);
    assert_eq!(managers(&object(&c, "legacy")), ["kubectl-client-side-apply/Update/"]);
    let out = apply(&c, &[], &deploy("legacy", 2, "busybox:2", "app: legacy"));
    assert!(out.ok, "{}", out.stderr);
    let v = object(&c, "legacy");
    assert_eq!(v["spec"]["replicas"], 2);
    assert_eq!(v["spec"]["template"]["spec"]["containers"][0]["image"], "busybox:2");
    let m = managers(&v);
    assert!(m.contains(&"kubectl/Apply/".to_string()) && !m.iter().any(|x| x.starts_with("kubectl-client-side-apply")), "{m:?}");
}
