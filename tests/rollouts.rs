//! Deployment rollouts as kubectl drives them: a rolling update never has fewer than
//! `replicas - maxUnavailable` ready pods (watched pod by pod), `rollout undo` brings the
//! previous template back, `pause`/`resume` hold and release a change, `restart` rolls
//! anew, and a Deployment with a 53-character name gets its ReplicaSet and valid pods.
//! ReplicationControllers are served and kept at their replicas too.

mod common;

use common::cluster::Cluster;
use std::collections::HashMap;
use std::time::Duration;

const WEB: &str = "apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 4
  strategy:
    type: RollingUpdate
    rollingUpdate: {maxSurge: 1, maxUnavailable: 1}
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      terminationGracePeriodSeconds: 2
      containers:
      - name: main
        image: busybox:1
        command: [sleep, '3600']
";

fn images(c: &Cluster) -> Vec<String> {
    let out = c.ok(&["get", "pods", "-l", "app=web", "--field-selector=status.phase=Running", "-o", "jsonpath={range .items[*]}{.metadata.deletionTimestamp}/{.spec.containers[0].image}{\"\\n\"}{end}"]);
    // Terminating pods (a deletionTimestamp before the slash) are on their way out.
    let mut v: Vec<String> = out.lines().filter(|l| l.starts_with('/')).map(|l| l[1..].to_string()).collect();
    v.sort();
    v
}

fn all_on(c: &Cluster, image: &str) -> Result<(), String> {
    let imgs = images(c);
    if imgs.len() == 4 && imgs.iter().all(|i| i == image) { Ok(()) } else { Err(format!("{imgs:?}")) }
}

/// The fewest ready, not-terminating pods at any point of a `kubectl get pods -w` log,
/// counted after the first time `want` were ready.
fn fewest_ready(watch: &str, want: usize) -> Option<usize> {
    let mut state: HashMap<&str, bool> = HashMap::new();
    let mut fewest: Option<usize> = None;
    let mut started = false;
    for line in watch.lines() {
        let mut f = line.split('|');
        let (Some(name), Some(ready), Some(deleting)) = (f.next(), f.next(), f.next()) else { continue };
        state.insert(name, ready == "True" && deleting.is_empty());
        let n = state.values().filter(|r| **r).count();
        if n >= want {
            started = true;
        }
        if started {
            fewest = Some(fewest.map_or(n, |m: usize| m.min(n)));
        }
    }
    fewest
}

#[test]
fn rolling_updates_keep_availability_and_undo_returns_the_template() {
    let dir = tempfile::tempdir().unwrap();
    let c = Cluster::up(&dir.path().join("c"), 2);
    let wait = Duration::from_secs(90);
    assert!(c.kubectl_stdin(&["apply", "-f", "-"], Some(WEB)).ok);
    c.ok(&["rollout", "status", "deployment/web", "--timeout=90s"]);
    c.eventually(wait, "four pods of busybox:1", || all_on(&c, "busybox:1"));

    // Every pod event during the rollout, as the watch shows them.
    let watch = c.kubectl_background(&["get", "pods", "-l", "app=web", "-w", "-o", "jsonpath={.metadata.name}|{.status.conditions[?(@.type==\"Ready\")].status}|{.metadata.deletionTimestamp}{\"\\n\"}"]);
    watch.wait_for(Duration::from_secs(20), "the watch lists the pods", |o| o.lines().count() >= 4);
    c.ok(&["set", "image", "deployment/web", "main=busybox:2"]);
    c.ok(&["rollout", "status", "deployment/web", "--timeout=120s"]);
    c.eventually(wait, "four pods of busybox:2", || all_on(&c, "busybox:2"));
    let log = watch.stop();
    let fewest = fewest_ready(&log, 4).expect("the watch saw four ready pods");
    let new_pods: std::collections::HashSet<&str> = log.lines().filter_map(|l| l.split('|').next()).collect();
    assert!(new_pods.len() >= 8, "the watch saw the four old pods and four new ones:\n{log}");
    assert!(fewest >= 3, "only {fewest} ready pods during a rollout with maxUnavailable 1:\n{log}");

    // rollout undo: back to the previous template, as a new revision.
    assert_eq!(c.ok(&["rollout", "undo", "deployment/web"]).trim(), "deployment.apps/web rolled back");
    c.ok(&["rollout", "status", "deployment/web", "--timeout=120s"]);
    c.eventually(wait, "four pods of busybox:1 again", || all_on(&c, "busybox:1"));
    assert_eq!(c.ok(&["get", "deployment", "web", "-o", "jsonpath={.spec.template.spec.containers[0].image}"]), "busybox:1");
    let history = c.ok(&["rollout", "history", "deployment/web"]);
    let revisions: Vec<&str> = history.lines().skip(2).filter_map(|l| l.split_whitespace().next()).collect();
    assert_eq!(revisions, vec!["2", "3"], "revision 1 came back as 3:\n{history}");

    // pause holds a change back until resume.
    c.ok(&["rollout", "pause", "deployment/web"]);
    c.ok(&["set", "image", "deployment/web", "main=busybox:3"]);
    c.eventually(wait, "the controller saw the paused change", || {
        let o = c.ok(&["get", "deployment", "web", "-o", "jsonpath={.metadata.generation}/{.status.observedGeneration}/{.status.conditions[?(@.type==\"Progressing\")].reason}"]);
        let f: Vec<&str> = o.split('/').collect();
        if f.len() == 3 && f[0] == f[1] && f[2] == "DeploymentPaused" { Ok(()) } else { Err(o) }
    });
    assert_eq!(c.ok(&["get", "rs", "-l", "app=web", "-o", "name"]).lines().count(), 2, "no ReplicaSet for a paused change");
    all_on(&c, "busybox:1").expect("still the old pods while paused");
    c.ok(&["rollout", "resume", "deployment/web"]);
    c.ok(&["rollout", "status", "deployment/web", "--timeout=120s"]);
    c.eventually(wait, "four pods of busybox:3", || all_on(&c, "busybox:3"));

    // restart rolls the same template anew.
    let before = c.ok(&["get", "pods", "-l", "app=web", "-o", "jsonpath={.items[*].metadata.name}"]);
    c.ok(&["rollout", "restart", "deployment/web"]);
    c.ok(&["rollout", "status", "deployment/web", "--timeout=120s"]);
    c.eventually(wait, "four new pods", || {
        let now = c.ok(&["get", "pods", "-l", "app=web", "--field-selector=status.phase=Running", "-o", "jsonpath={range .items[*]}{.metadata.deletionTimestamp}/{.metadata.name}{\"\\n\"}{end}"]);
        let live: Vec<&str> = now.lines().filter_map(|l| l.strip_prefix('/')).collect();
        if live.len() == 4 && live.iter().all(|n| !before.split_whitespace().any(|b| b == *n)) { Ok(()) } else { Err(now) }
    });

    // A PodDisruptionBudget over the four shows what may be disrupted.
    c.ok(&["create", "pdb", "web", "--selector=app=web", "--min-available=3"]);
    c.eventually(wait, "the budget's status", || {
        let o = c.ok(&["get", "pdb", "web", "-o", "jsonpath={.status.expectedPods}/{.status.currentHealthy}/{.status.desiredHealthy}/{.status.disruptionsAllowed}"]);
        if o == "4/4/3/1" { Ok(()) } else { Err(o) }
    });
    let listed = c.ok(&["get", "pdb", "web", "--no-headers"]);
    assert_eq!(listed.split_whitespace().nth(3), Some("1"), "ALLOWED DISRUPTIONS: {listed}");

    // A 53-character name: its ReplicaSet's name is 64 characters, its pods' names 63.
    let long = "a".repeat(50) + "bcd";
    c.ok(&["create", "deployment", &long, "--image=busybox", "--", "sleep", "3600"]);
    c.ok(&["rollout", "status", &format!("deployment/{long}"), "--timeout=90s"]);
    let rs = c.ok(&["get", "rs", "-l", &format!("app={long}"), "-o", "jsonpath={.items[*].metadata.name}"]);
    assert_eq!(rs.len(), 64, "{rs}");
    let pod = c.ok(&["get", "pods", "-l", &format!("app={long}"), "-o", "jsonpath={.items[*].metadata.name}"]);
    assert!(pod.len() == 63 && pod.starts_with(&rs[..58]), "{pod}");
}

const RC: &str = "apiVersion: v1
kind: ReplicationController
metadata:
  name: legacy
spec:
  replicas: 2
  template:
    metadata:
      labels: {app: legacy}
    spec:
      terminationGracePeriodSeconds: 2
      containers:
      - name: main
        image: busybox
        command: [sleep, '3600']
";

fn running(c: &Cluster, n: usize) -> Result<Vec<String>, String> {
    let out = c.ok(&["get", "pods", "-l", "app=legacy", "--field-selector=status.phase=Running", "-o", "jsonpath={range .items[*]}{.metadata.deletionTimestamp}/{.metadata.name}{\"\\n\"}{end}"]);
    let live: Vec<String> = out.lines().filter_map(|l| l.strip_prefix('/')).map(str::to_string).collect();
    if live.len() == n { Ok(live) } else { Err(out) }
}

#[test]
fn replication_controllers_keep_their_replicas() {
    let dir = tempfile::tempdir().unwrap();
    let c = Cluster::up(&dir.path().join("c"), 1);
    let wait = Duration::from_secs(60);
    assert_eq!(c.kubectl_stdin(&["create", "-f", "-"], Some(RC)).stdout.trim(), "replicationcontroller/legacy created");
    // Its selector was defaulted from the template's labels.
    assert_eq!(c.ok(&["get", "rc", "legacy", "-o", "jsonpath={.spec.selector.app}"]), "legacy");
    let pods = c.eventually(wait, "two pods", || running(&c, 2));
    let owner = c.ok(&["get", "pod", &pods[0], "-o", "jsonpath={.metadata.ownerReferences[0].kind}/{.metadata.ownerReferences[0].apiVersion}"]);
    assert_eq!(owner, "ReplicationController/v1");

    assert_eq!(c.ok(&["scale", "rc", "legacy", "--replicas=3"]).trim(), "replicationcontroller/legacy scaled");
    c.eventually(wait, "three pods", || running(&c, 3));
    c.eventually(wait, "kubectl get rc shows 3 ready", || {
        let o = c.ok(&["get", "rc", "legacy", "--no-headers"]);
        let f: Vec<&str> = o.split_whitespace().collect();
        if f.get(1..4) == Some(&["3", "3", "3"][..]) { Ok(()) } else { Err(o) }
    });
    let scale = c.ok(&["get", "--raw", "/api/v1/namespaces/default/replicationcontrollers/legacy/scale"]);
    assert!(scale.contains("\"selector\":\"app=legacy\""), "{scale}");

    c.ok(&["delete", "pod", &pods[0], "--wait=false"]);
    c.eventually(wait, "the deleted pod replaced", || {
        let now = running(&c, 3)?;
        if now.contains(&pods[0]) { Err(format!("{now:?}")) } else { Ok(()) }
    });
    c.ok(&["delete", "rc", "legacy"]);
    c.eventually(wait, "its pods go with it", || {
        let left = c.ok(&["get", "pods", "-l", "app=legacy", "-o", "name"]);
        if left.trim().is_empty() { Ok(()) } else { Err(left) }
    });
}
