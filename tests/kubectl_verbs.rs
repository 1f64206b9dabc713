//! kubectl's everyday verbs on a live cluster, each checked by what kubectl prints: label
//! and annotate, the three patch types, scale, set image and rollout status, the output
//! formats, label and field selectors, paging, expose, diff, get -w, cordon and drain
//! (evictions held back by a PodDisruptionBudget), deletecollection, finalizers and the
//! three propagation policies.

mod common;

use common::cluster::Cluster;
use std::time::Duration;

const WEB: &str = "apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels: {app: web, tier: front}
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: main
        image: busybox:1.36
        command: [sleep, \"3600\"]
";

fn lines(s: &str) -> Vec<&str> {
    s.lines().map(str::trim_end).filter(|l| !l.is_empty()).collect()
}

#[test]
fn everyday_verbs_print_what_kubectl_users_expect() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let c = Cluster::up(&tmp.path().join("cluster"), 2);
    let wait = Duration::from_secs(30);

    assert!(c.kubectl_stdin(&["apply", "-f", "-"], Some(WEB)).stdout.contains("deployment.apps/web created"));
    let rolled = c.ok(&["rollout", "status", "deployment/web", "--timeout=60s"]);
    assert!(rolled.trim_end().ends_with("deployment \"web\" successfully rolled out"), "{rolled}");

    // label / annotate, and kubectl's own refusal to overwrite without --overwrite.
    assert_eq!(c.ok(&["label", "deployment", "web", "owner=ops"]).trim(), "deployment.apps/web labeled");
    let again = c.kubectl(&["label", "deployment", "web", "owner=dev"]);
    assert!(!again.ok && again.stderr.contains("'owner' already has a value (ops), and --overwrite is false"), "{}", again.stderr);
    assert_eq!(c.ok(&["label", "deployment", "web", "owner=dev", "--overwrite"]).trim(), "deployment.apps/web labeled");
    assert_eq!(c.ok(&["annotate", "deployment", "web", "note=hello"]).trim(), "deployment.apps/web annotated");
    assert_eq!(c.ok(&["label", "deployment", "web", "owner-"]).trim(), "deployment.apps/web unlabeled");
    assert_eq!(c.ok(&["get", "deployment", "web", "-o", "jsonpath={.metadata.labels.owner}|{.metadata.annotations.note}"]), "|hello");

    // Patches: strategic merge (containers merged by name), merge, JSON patch.
    let smp = r#"{"spec":{"template":{"spec":{"containers":[{"name":"main","env":[{"name":"MODE","value":"fast"}]}]}}}}"#;
    assert_eq!(c.ok(&["patch", "deployment", "web", "-p", smp]).trim(), "deployment.apps/web patched");
    let got = c.ok(&["get", "deployment", "web", "-o", "jsonpath={.spec.template.spec.containers[*].name} {.spec.template.spec.containers[0].image} {.spec.template.spec.containers[0].env[0].value}"]);
    assert_eq!(got, "main busybox:1.36 fast", "a strategic merge patch keeps the container's other fields");
    assert_eq!(c.ok(&["patch", "deployment", "web", "--type=merge", "-p", r#"{"metadata":{"labels":{"patched":"merge"}}}"#]).trim(), "deployment.apps/web patched");
    assert_eq!(c.ok(&["patch", "deployment", "web", "--type=json", "-p", r#"[{"op":"add","path":"/metadata/labels/json","value":"yes"}]"#]).trim(), "deployment.apps/web patched");
    assert_eq!(c.ok(&["get", "deployment", "web", "-o", "jsonpath={.metadata.labels.patched} {.metadata.labels.json}"]), "merge yes");
    let failed_test = c.kubectl(&["patch", "deployment", "web", "--type=json", "-p", r#"[{"op":"test","path":"/spec/replicas","value":7}]"#]);
    assert!(!failed_test.ok && failed_test.stderr.contains("The request is invalid"), "{}", failed_test.stderr);
    // A patch that changes nothing is not written (kubectl compares what it read with the
    // answer: on an object no controller is updating, it says so).
    c.ok(&["create", "configmap", "still", "--from-literal=a=b"]);
    c.ok(&["patch", "configmap", "still", "--type=merge", "-p", r#"{"metadata":{"labels":{"patched":"merge"}}}"#]);
    let unchanged = c.ok(&["patch", "configmap", "still", "--type=merge", "-p", r#"{"metadata":{"labels":{"patched":"merge"}}}"#]);
    assert_eq!(unchanged.trim(), "configmap/still patched (no change)");
    c.ok(&["delete", "configmap", "still"]);

    // scale, set image, rollout.
    assert_eq!(c.ok(&["scale", "deployment", "web", "--replicas=3"]).trim(), "deployment.apps/web scaled");
    assert_eq!(c.ok(&["set", "image", "deployment/web", "main=busybox:1.37"]).trim(), "deployment.apps/web image updated");
    let rolled = c.ok(&["rollout", "status", "deployment/web", "--timeout=90s"]);
    assert!(rolled.trim_end().ends_with("deployment \"web\" successfully rolled out"), "{rolled}");
    let history = c.ok(&["rollout", "history", "deployment/web"]);
    assert!(lines(&history).iter().any(|l| l.starts_with("2 ")), "{history}");
    c.eventually(wait, "three pods of the new template", || {
        let imgs = c.ok(&["get", "pods", "-l", "app=web", "--field-selector=status.phase=Running", "-o", "jsonpath={.items[*].spec.containers[0].image}"]);
        let imgs: Vec<&str> = imgs.split_whitespace().collect();
        if imgs.len() == 3 && imgs.iter().all(|i| *i == "busybox:1.37") { Ok(()) } else { Err(format!("{imgs:?}")) }
    });

    // describe shows the pod's events: the scheduler's, then the node agent's.
    let pod = c.ok(&["get", "pods", "-l", "app=web", "-o", "jsonpath={.items[0].metadata.name}"]);
    let described = c.ok(&["describe", "pod", &pod]);
    let events = described.split("Events:").nth(1).unwrap_or("");
    for want in ["Scheduled", "Successfully assigned default/", "Pulled", "Created container: main", "Started container main"] {
        assert!(events.contains(want), "describe pod lacks {want:?}:\n{described}");
    }

    // Output formats.
    let wide = c.ok(&["get", "pods", "-l", "app=web", "-o", "wide"]);
    let head: Vec<&str> = wide.lines().next().unwrap_or("").split_whitespace().collect();
    assert_eq!(head, ["NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP", "NODE", "NOMINATED", "NODE", "READINESS", "GATES"]);
    let yaml = c.ok(&["get", "deployment", "web", "-o", "yaml"]);
    assert!(yaml.starts_with("apiVersion: apps/v1\nkind: Deployment\n") && yaml.contains("  replicas: 3\n"), "{yaml}");
    let json: serde_json::Value = serde_json::from_str(&c.ok(&["get", "deployment", "web", "-o", "json"])).expect("-o json is JSON");
    assert_eq!(json["spec"]["replicas"], 3);
    let cols = c.ok(&["get", "deployment", "web", "-o", "custom-columns=NAME:.metadata.name,WANT:.spec.replicas,IMAGE:.spec.template.spec.containers[0].image"]);
    assert_eq!(lines(&cols).iter().map(|l| l.split_whitespace().collect::<Vec<_>>()).collect::<Vec<_>>(), vec![vec!["NAME", "WANT", "IMAGE"], vec!["web", "3", "busybox:1.37"]]);

    // Selectors: equality, set-based, negation; fields.
    for i in 0..5 {
        let tier = if i % 2 == 0 { "gold" } else { "silver" };
        c.ok(&["create", "configmap", &format!("cm-{i}"), "--from-literal=i=x"]);
        c.ok(&["label", "configmap", &format!("cm-{i}"), &format!("tier={tier}")]);
    }
    let names = |args: &[&str]| -> Vec<String> { lines(&c.ok(args)).iter().map(|s| s.to_string()).collect() };
    assert_eq!(names(&["get", "cm", "-l", "tier=gold", "-o", "name"]), ["configmap/cm-0", "configmap/cm-2", "configmap/cm-4"]);
    assert_eq!(names(&["get", "cm", "-l", "tier in (silver),tier!=gold", "-o", "name"]), ["configmap/cm-1", "configmap/cm-3"]);
    assert_eq!(names(&["get", "cm", "-l", "!tier", "-o", "name"]), ["configmap/kube-root-ca.crt"], "every namespace's CA bundle has no tier");
    assert_eq!(names(&["get", "cm", "--field-selector", "metadata.name=cm-3", "-o", "name"]), ["configmap/cm-3"]);
    let on_node = names(&["get", "pods", "--field-selector", "spec.nodeName=node-1", "-o", "jsonpath={range .items[*]}{.spec.nodeName}{\"\\n\"}{end}"]);
    assert!(on_node.iter().all(|n| n == "node-1"), "{on_node:?}");
    let bad = c.kubectl(&["get", "pods", "--field-selector", "spec.color=blue"]);
    assert!(!bad.ok && bad.stderr.contains("field label not supported: spec.color"), "{}", bad.stderr);

    // Server-side dry run stores nothing; generateName gets a server-made suffix; an
    // update from a stale copy is a 409.
    let dry = c.ok(&["create", "configmap", "dry", "--from-literal=a=b", "--dry-run=server", "-o", "name"]);
    assert_eq!(dry.trim(), "configmap/dry");
    assert!(c.kubectl(&["get", "cm", "dry"]).stderr.contains("(NotFound)"), "a dry run stores nothing");
    let generated = c.kubectl_stdin(&["create", "-f", "-", "-o", "name"], Some("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  generateName: gen-\n"));
    let gname = generated.stdout.trim().strip_prefix("configmap/gen-").unwrap_or_else(|| panic!("{}{}", generated.stdout, generated.stderr)).to_string();
    assert_eq!(gname.len(), 5, "a five-character suffix: {gname}");
    let stale = c.ok(&["get", "cm", "cm-2", "-o", "yaml"]);
    c.ok(&["label", "cm", "cm-2", "touched=yes"]);
    let replaced = c.kubectl_stdin(&["replace", "-f", "-"], Some(&stale));
    assert!(!replaced.ok, "a replace from a stale copy must fail");
    assert!(replaced.stderr.contains("Error from server (Conflict)") && replaced.stderr.contains("the object has been modified; please apply your changes to the latest version and try again"), "{}", replaced.stderr);

    // --chunk-size: every page is fetched and the listing is whole.
    let paged = c.kubectl(&["get", "cm", "-l", "tier", "--chunk-size=2", "-o", "name", "-v=6"]);
    assert!(paged.ok, "{}", paged.stderr);
    assert_eq!(lines(&paged.stdout), ["configmap/cm-0", "configmap/cm-1", "configmap/cm-2", "configmap/cm-3", "configmap/cm-4"]);
    assert_eq!(paged.stderr.matches("continue=").count(), 2, "three pages, two continues:\n{}", paged.stderr);

    // get -w: the initial row, then the change as it happens.
    let watch = c.kubectl_background(&["get", "cm", "cm-0", "-w", "-o", "custom-columns=NAME:.metadata.name,I:.data.i"]);
    watch.wait_for(Duration::from_secs(20), "the initial row", |o| o.contains("cm-0"));
    c.ok(&["patch", "cm", "cm-0", "--type=merge", "-p", r#"{"data":{"i":"changed"}}"#]);
    watch.wait_for(Duration::from_secs(20), "the change", |o| o.contains("changed"));
    let seen = watch.stop();
    let rows: Vec<Vec<&str>> = lines(&seen).iter().map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(rows, vec![vec!["NAME", "I"], vec!["cm-0", "x"], vec!["cm-0", "changed"]], "{seen}");

    // expose: a Service selecting the deployment's pods.
    assert_eq!(c.ok(&["expose", "deployment", "web", "--port=80", "--target-port=8080"]).trim(), "service/web exposed");
    let svc = c.ok(&["get", "service", "web", "-o", "jsonpath={.spec.selector.app} {.spec.ports[0].port} {.spec.ports[0].targetPort} {.spec.type}"]);
    assert_eq!(svc, "web 80 8080 ClusterIP");
    assert!(c.ok(&["get", "service", "web", "-o", "jsonpath={.spec.clusterIP}"]).starts_with("10."));

    // diff: exit code 1 with a unified diff of what would change, nothing written.
    let live = c.ok(&["get", "deployment", "web", "-o", "yaml"]);
    let changed = live.replace("  replicas: 3\n", "  replicas: 4\n");
    let diff = c.kubectl_stdin(&["diff", "-f", "-"], Some(&changed));
    assert!(!diff.ok, "kubectl diff exits 1 when something differs");
    assert!(diff.stdout.contains("-  replicas: 3") && diff.stdout.contains("+  replicas: 4"), "{}", diff.stdout);
    assert_eq!(c.ok(&["get", "deployment", "web", "-o", "jsonpath={.spec.replicas}"]), "3", "diff is a dry run");
    let same = c.kubectl_stdin(&["diff", "-f", "-"], Some(&live));
    assert!(same.ok && same.stdout.is_empty(), "{}", same.stdout);

    // cordon / uncordon.
    assert_eq!(c.ok(&["cordon", "node-1"]).trim(), "node/node-1 cordoned");
    let nodes = c.ok(&["get", "nodes", "node-1", "--no-headers"]);
    assert!(nodes.contains("Ready,SchedulingDisabled"), "{nodes}");
    assert_eq!(c.ok(&["uncordon", "node-1"]).trim(), "node/node-1 uncordoned");

    // drain: evictions honour a PodDisruptionBudget that allows no disruption, then go
    // through once it allows one.
    assert!(c.ok(&["create", "pdb", "web", "--selector=app=web", "--min-available=3"]).contains("poddisruptionbudget.policy/web created"));
    let node = c.ok(&["get", "pods", "-l", "app=web", "-o", "jsonpath={.items[0].spec.nodeName}"]);
    let held = c.kubectl(&["drain", &node, "--ignore-daemonsets", "--timeout=6s"]);
    assert!(!held.ok, "drain must not get past the budget");
    assert!(held.stderr.contains("Cannot evict pod as it would violate the pod's disruption budget."), "{}", held.stderr);
    assert_eq!(c.ok(&["get", "pods", "-l", "app=web", "--field-selector=status.phase=Running", "-o", "name"]).lines().count(), 3);
    c.ok(&["patch", "pdb", "web", "--type=merge", "-p", r#"{"spec":{"minAvailable":1}}"#]);
    let drained = c.ok(&["drain", &node, "--ignore-daemonsets", "--timeout=60s"]);
    assert!(drained.contains("evicted") && drained.trim_end().ends_with(&format!("node/{node} drained")), "{drained}");
    c.eventually(wait, "no web pod left on the drained node", || {
        let on = c.ok(&["get", "pods", "-l", "app=web", "--field-selector", &format!("spec.nodeName={node}"), "-o", "name"]);
        if on.trim().is_empty() { Ok(()) } else { Err(on) }
    });
    c.ok(&["uncordon", &node]);

    // deletecollection with a label selector.
    let gone = c.ok(&["delete", "--raw", "/api/v1/namespaces/default/configmaps?labelSelector=tier%3Dgold"]);
    let list: serde_json::Value = serde_json::from_str(&gone).expect("deletecollection answers a list");
    assert_eq!(list["kind"], "ConfigMapList");
    assert_eq!(list["items"].as_array().map(Vec::len), Some(3));
    assert_eq!(names(&["get", "cm", "-l", "tier", "-o", "name"]), ["configmap/cm-1", "configmap/cm-3"]);

    // Finalizers hold a deleted object until they are removed.
    c.ok(&["patch", "cm", "cm-1", "--type=merge", "-p", r#"{"metadata":{"finalizers":["example.com/hold"]}}"#]);
    assert!(c.ok(&["delete", "cm", "cm-1", "--wait=false"]).contains("configmap \"cm-1\" deleted"));
    let held = c.ok(&["get", "cm", "cm-1", "-o", "jsonpath={.metadata.deletionTimestamp}|{.metadata.finalizers}"]);
    assert!(held.contains("T") && held.ends_with("|[\"example.com/hold\"]"), "{held}");
    c.ok(&["patch", "cm", "cm-1", "--type=json", "-p", r#"[{"op":"remove","path":"/metadata/finalizers"}]"#]);
    let gone = c.kubectl(&["get", "cm", "cm-1"]);
    assert!(gone.stderr.contains("(NotFound)"), "{}{}", gone.stdout, gone.stderr);
}

#[test]
fn delete_propagation_orphan_foreground_background() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let c = Cluster::up(&tmp.path().join("cluster"), 1);
    let wait = Duration::from_secs(45);
    let deploy = |name: &str| {
        let m = WEB.replace("name: web", &format!("name: {name}")).replace("app: web", &format!("app: {name}"));
        assert!(c.kubectl_stdin(&["apply", "-f", "-"], Some(&m)).ok);
        c.ok(&["rollout", "status", &format!("deployment/{name}"), "--timeout=60s"]);
    };
    let count = |what: &str, app: &str| c.ok(&["get", what, "-l", &format!("app={app}"), "-o", "name"]).lines().count();

    // Orphan: the deployment goes; its ReplicaSet and pods stay, no longer owned.
    deploy("orphan");
    assert_eq!(c.ok(&["delete", "deployment", "orphan", "--cascade=orphan"]).trim(), "deployment.apps \"orphan\" deleted");
    assert!(c.kubectl(&["get", "deployment", "orphan"]).stderr.contains("(NotFound)"));
    assert_eq!(count("rs", "orphan"), 1);
    assert_eq!(count("pods", "orphan"), 2);
    assert_eq!(c.ok(&["get", "rs", "-l", "app=orphan", "-o", "jsonpath={.items[0].metadata.ownerReferences}"]), "");

    // Foreground: the deployment stays, marked, until its ReplicaSet and pods are gone.
    deploy("fore");
    assert_eq!(c.ok(&["delete", "deployment", "fore", "--cascade=foreground", "--wait=false"]).trim(), "deployment.apps \"fore\" deleted");
    let marked = c.kubectl(&["get", "deployment", "fore", "-o", "jsonpath={.metadata.finalizers}"]);
    // Either still waiting for its dependents (then it shows why) or already done.
    assert!(marked.stdout == "[\"foregroundDeletion\"]" || marked.stderr.contains("(NotFound)"), "{}{}", marked.stdout, marked.stderr);
    c.eventually(wait, "the foreground deletion finishes", || {
        let d = c.kubectl(&["get", "deployment", "fore"]);
        let (rs, pods) = (count("rs", "fore"), count("pods", "fore"));
        if d.stderr.contains("(NotFound)") {
            // The owner goes last: nothing it owned may outlive it.
            assert_eq!((rs, pods), (0, 0), "the deployment went before its dependents");
            Ok(())
        } else {
            Err(format!("deployment still there; {rs} rs, {pods} pods"))
        }
    });

    // Background (kubectl's default): gone at once, dependents collected after.
    deploy("back");
    assert_eq!(c.ok(&["delete", "deployment", "back"]).trim(), "deployment.apps \"back\" deleted");
    c.eventually(wait, "the garbage collector removes the dependents", || {
        let (rs, pods) = (count("rs", "back"), count("pods", "back"));
        if rs + pods == 0 { Ok(()) } else { Err(format!("{rs} rs, {pods} pods")) }
    });
    // The collector has handled every event since the orphaning (it collected the later
    // deployments' dependents), and it left the orphans alone.
    assert_eq!((count("rs", "orphan"), count("pods", "orphan")), (1, 2), "the collector leaves orphaned dependents alone");
    // Owners of any kind: a ConfigMap owning a Secret (Background), a Secret owning a
    // ConfigMap (Orphan).
    c.ok(&["create", "configmap", "owner-cm", "--from-literal=a=b"]);
    let uid = c.ok(&["get", "configmap", "owner-cm", "-o", "jsonpath={.metadata.uid}"]);
    let owned = format!("apiVersion: v1\nkind: Secret\nmetadata:\n  name: owned-secret\n  ownerReferences:\n  - {{apiVersion: v1, kind: ConfigMap, name: owner-cm, uid: {uid}}}\nstringData: {{k: v}}\n");
    assert!(c.kubectl_stdin(&["create", "-f", "-"], Some(&owned)).ok);
    c.ok(&["delete", "configmap", "owner-cm"]);
    c.eventually(wait, "the Secret owned by a deleted ConfigMap is collected", || {
        let o = c.kubectl(&["get", "secret", "owned-secret"]);
        if o.stderr.contains("(NotFound)") { Ok(()) } else { Err(format!("{}{}", o.stdout, o.stderr)) }
    });
    c.ok(&["create", "secret", "generic", "owner-secret", "--from-literal=a=b"]);
    let uid = c.ok(&["get", "secret", "owner-secret", "-o", "jsonpath={.metadata.uid}"]);
    let owned = format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: kept-cm\n  ownerReferences:\n  - {{apiVersion: v1, kind: Secret, name: owner-secret, uid: {uid}}}\ndata: {{k: v}}\n");
    assert!(c.kubectl_stdin(&["create", "-f", "-"], Some(&owned)).ok);
    c.ok(&["delete", "secret", "owner-secret", "--cascade=orphan"]);
    c.eventually(wait, "the orphaned ConfigMap loses its owner and stays", || {
        let o = c.kubectl(&["get", "configmap", "kept-cm", "-o", "jsonpath={.metadata.ownerReferences}"]);
        let owner = c.kubectl(&["get", "secret", "owner-secret"]);
        if o.ok && o.stdout.is_empty() && owner.stderr.contains("(NotFound)") { Ok(()) } else { Err(format!("{} {} {}", o.stdout, o.stderr, owner.stdout)) }
    });
    let bogus = c.kubectl(&["delete", "--raw", "/apis/apps/v1/namespaces/default/replicasets?propagationPolicy=Sideways"]);
    assert!(!bogus.ok && bogus.stderr.contains("Unsupported value: \"Sideways\""), "{}", bogus.stderr);
    assert_eq!(count("rs", "orphan"), 1, "a refused deletecollection deletes nothing");
}
