//! Every resource the gateway serves goes through kubectl's everyday cycle — create from a
//! manifest, get (with the real server's table columns), describe, edit (with `EDITOR`
//! set to a script), delete — and each step is checked by what kubectl prints.

mod common;

use common::cluster::Cluster;
use std::process::Command;
use std::time::Duration;

/// (resource as kubectl names it, namespaced, the table header the real server prints,
/// manifest). Each manifest carries the label `suite: before` for the editor to change.
const CASES: &[(&str, bool, &str, &str)] = &[
    ("namespace", false, "NAME STATUS AGE", "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: s-ns\n  labels:\n    suite: before\n"),
    ("configmap", true, "NAME DATA AGE", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: s-cm\n  labels:\n    suite: before\ndata:\n  a: \"1\"\n"),
    ("secret", true, "NAME TYPE DATA AGE", "apiVersion: v1\nkind: Secret\nmetadata:\n  name: s-secret\n  labels:\n    suite: before\nstringData:\n  password: hunter2\n"),
    ("serviceaccount", true, "NAME SECRETS AGE", "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: s-sa\n  labels:\n    suite: before\n"),
    ("service", true, "NAME TYPE CLUSTER-IP EXTERNAL-IP PORT(S) AGE", "apiVersion: v1\nkind: Service\nmetadata:\n  name: s-svc\n  labels:\n    suite: before\nspec:\n  selector:\n    app: s\n  ports:\n  - port: 80\n    targetPort: 8080\n"),
    ("endpoints", true, "NAME ENDPOINTS AGE", "apiVersion: v1\nkind: Endpoints\nmetadata:\n  name: s-ep\n  labels:\n    suite: before\nsubsets:\n- addresses:\n  - ip: 10.0.0.7\n  ports:\n  - port: 8080\n"),
    ("resourcequota", true, "NAME AGE REQUEST LIMIT", "apiVersion: v1\nkind: ResourceQuota\nmetadata:\n  name: s-quota\n  labels:\n    suite: before\nspec:\n  hard:\n    configmaps: \"50\"\n"),
    ("limitrange", true, "NAME CREATED AT", "apiVersion: v1\nkind: LimitRange\nmetadata:\n  name: s-limits\n  labels:\n    suite: before\nspec:\n  limits:\n  - type: Container\n    max:\n      memory: 4Gi\n"),
    ("event", true, "LAST SEEN TYPE REASON OBJECT MESSAGE", "apiVersion: v1\nkind: Event\nmetadata:\n  name: s-event\n  labels:\n    suite: before\ninvolvedObject:\n  kind: ConfigMap\n  name: s-cm\n  namespace: suite\nreason: Tested\nmessage: the suite was here\ntype: Normal\nsource:\n  component: suite\n"),
    ("pod", true, "NAME READY STATUS RESTARTS AGE", "apiVersion: v1\nkind: Pod\nmetadata:\n  name: s-pod\n  labels:\n    suite: before\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: main\n    image: busybox\n    command: [\"sleep\", \"3600\"]\n"),
    ("deployment", true, "NAME READY UP-TO-DATE AVAILABLE AGE", "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: s-deploy\n  labels:\n    suite: before\nspec:\n  replicas: 1\n  selector:\n    matchLabels:\n      app: s-deploy\n  template:\n    metadata:\n      labels:\n        app: s-deploy\n    spec:\n      terminationGracePeriodSeconds: 1\n      containers:\n      - name: main\n        image: busybox\n        command: [\"sleep\", \"3600\"]\n"),
    ("replicaset", true, "NAME DESIRED CURRENT READY AGE", "apiVersion: apps/v1\nkind: ReplicaSet\nmetadata:\n  name: s-rs\n  labels:\n    suite: before\nspec:\n  replicas: 1\n  selector:\n    matchLabels:\n      app: s-rs\n  template:\n    metadata:\n      labels:\n        app: s-rs\n    spec:\n      terminationGracePeriodSeconds: 1\n      containers:\n      - name: main\n        image: busybox\n        command: [\"sleep\", \"3600\"]\n"),
    ("daemonset", true, "NAME DESIRED CURRENT READY UP-TO-DATE AVAILABLE NODE SELECTOR AGE", "apiVersion: apps/v1\nkind: DaemonSet\nmetadata:\n  name: s-ds\n  labels:\n    suite: before\nspec:\n  selector:\n    matchLabels:\n      app: s-ds\n  template:\n    metadata:\n      labels:\n        app: s-ds\n    spec:\n      containers:\n      - name: main\n        image: busybox\n"),
    ("statefulset", true, "NAME READY AGE", "apiVersion: apps/v1\nkind: StatefulSet\nmetadata:\n  name: s-sts\n  labels:\n    suite: before\nspec:\n  serviceName: s-svc\n  replicas: 0\n  selector:\n    matchLabels:\n      app: s-sts\n  template:\n    metadata:\n      labels:\n        app: s-sts\n    spec:\n      containers:\n      - name: main\n        image: busybox\n"),
    ("job", true, "NAME STATUS COMPLETIONS DURATION AGE", "apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: s-job\n  labels:\n    suite: before\nspec:\n  suspend: true\n  template:\n    spec:\n      restartPolicy: Never\n      containers:\n      - name: main\n        image: busybox\n        command: [\"true\"]\n"),
    ("cronjob", true, "NAME SCHEDULE TIMEZONE SUSPEND ACTIVE LAST SCHEDULE AGE", "apiVersion: batch/v1\nkind: CronJob\nmetadata:\n  name: s-cj\n  labels:\n    suite: before\nspec:\n  schedule: \"*/5 * * * *\"\n  suspend: true\n  jobTemplate:\n    spec:\n      template:\n        spec:\n          restartPolicy: OnFailure\n          containers:\n          - name: main\n            image: busybox\n"),
    ("lease", true, "NAME HOLDER AGE", "apiVersion: coordination.k8s.io/v1\nkind: Lease\nmetadata:\n  name: s-lease\n  labels:\n    suite: before\nspec:\n  holderIdentity: suite-holder\n  leaseDurationSeconds: 15\n"),
    ("endpointslice", true, "NAME ADDRESSTYPE PORTS ENDPOINTS AGE", "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: s-slice\n  labels:\n    suite: before\naddressType: IPv4\nendpoints:\n- addresses: [\"10.0.0.8\"]\nports:\n- port: 8080\n  protocol: TCP\n"),
    ("role", true, "NAME CREATED AT", "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata:\n  name: s-role\n  labels:\n    suite: before\nrules:\n- apiGroups: [\"\"]\n  resources: [\"pods\"]\n  verbs: [\"get\"]\n"),
    ("rolebinding", true, "NAME ROLE AGE", "apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata:\n  name: s-rb\n  labels:\n    suite: before\nroleRef:\n  apiGroup: rbac.authorization.k8s.io\n  kind: Role\n  name: s-role\nsubjects:\n- kind: User\n  name: suite-user\n  apiGroup: rbac.authorization.k8s.io\n"),
    ("clusterrole", false, "NAME CREATED AT", "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata:\n  name: s-cr\n  labels:\n    suite: before\nrules:\n- apiGroups: [\"\"]\n  resources: [\"nodes\"]\n  verbs: [\"get\"]\n"),
    ("clusterrolebinding", false, "NAME ROLE AGE", "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata:\n  name: s-crb\n  labels:\n    suite: before\nroleRef:\n  apiGroup: rbac.authorization.k8s.io\n  kind: ClusterRole\n  name: s-cr\nsubjects:\n- kind: Group\n  name: suite-group\n  apiGroup: rbac.authorization.k8s.io\n"),
    ("poddisruptionbudget", true, "NAME MIN AVAILABLE MAX UNAVAILABLE ALLOWED DISRUPTIONS AGE", "apiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata:\n  name: s-pdb\n  labels:\n    suite: before\nspec:\n  minAvailable: 1\n  selector:\n    matchLabels:\n      app: s-none\n"),
    ("priorityclass", false, "NAME VALUE GLOBAL-DEFAULT AGE PREEMPTIONPOLICY", "apiVersion: scheduling.k8s.io/v1\nkind: PriorityClass\nmetadata:\n  name: s-pc\n  labels:\n    suite: before\nvalue: 1000\ndescription: for the suite\n"),
    ("runtimeclass", false, "NAME HANDLER AGE", "apiVersion: node.k8s.io/v1\nkind: RuntimeClass\nmetadata:\n  name: s-rc\n  labels:\n    suite: before\nhandler: process\n"),
    ("persistentvolume", false, "NAME CAPACITY ACCESS MODES RECLAIM POLICY STATUS CLAIM STORAGECLASS VOLUMEATTRIBUTESCLASS REASON AGE", "apiVersion: v1\nkind: PersistentVolume\nmetadata:\n  name: s-pv\n  labels:\n    suite: before\nspec:\n  capacity:\n    storage: 1Gi\n  accessModes: [ReadWriteOnce]\n  storageClassName: s-manual\n  hostPath:\n    path: /tmp/flotilla-suite-pv\n"),
    ("persistentvolumeclaim", true, "NAME STATUS VOLUME CAPACITY ACCESS MODES STORAGECLASS VOLUMEATTRIBUTESCLASS AGE", "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata:\n  name: s-pvc\n  labels:\n    suite: before\nspec:\n  accessModes: [ReadWriteOnce]\n  resources:\n    requests:\n      storage: 1Gi\n"),
    ("storageclass", false, "NAME PROVISIONER RECLAIMPOLICY VOLUMEBINDINGMODE ALLOWVOLUMEEXPANSION AGE", "apiVersion: storage.k8s.io/v1\nkind: StorageClass\nmetadata:\n  name: s-sc\n  labels:\n    suite: before\nprovisioner: example.com/suite\n"),
    ("controllerrevision", true, "NAME CONTROLLER REVISION AGE", "apiVersion: apps/v1\nkind: ControllerRevision\nmetadata:\n  name: s-cr\n  labels:\n    suite: before\nrevision: 1\ndata:\n  spec: {}\n"),
    ("events.events.k8s.io", true, "LAST SEEN TYPE REASON OBJECT MESSAGE", "apiVersion: events.k8s.io/v1\nkind: Event\nmetadata:\n  name: s-ev2\n  labels:\n    suite: before\neventTime: \"2026-11-23T08:00:00.000000Z\"\nreportingController: suite.example/ctl\nreportingInstance: suite-1\naction: Testing\nreason: Tested\nnote: the suite was here again\ntype: Normal\nregarding:\n  kind: ConfigMap\n  name: s-cm\n  namespace: suite\n"),
];

/// The manifest's name.
fn name_of(manifest: &str) -> &str {
    manifest.lines().find_map(|l| l.trim().strip_prefix("name: ")).expect("manifest has a name")
}

/// The header of a table, with runs of spaces squeezed: "NAME READY STATUS …".
fn header(table: &str) -> String {
    table.lines().next().unwrap_or("").split_whitespace().collect::<Vec<_>>().join(" ")
}

#[test]
fn every_resource_through_create_get_describe_edit_delete() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let c = Cluster::up(&tmp.path().join("cluster"), 1);
    assert!(c.ok(&["create", "namespace", "suite"]).contains("namespace/suite created"));
    // The editor `kubectl edit` runs: flips the suite label in the file it is handed.
    let editor = tmp.path().join("editor.sh");
    std::fs::write(&editor, "#!/bin/sh\nsed -i 's/suite: before/suite: after/' \"$1\"\n").expect("editor script");
    std::fs::set_permissions(&editor, std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod editor");

    for (res, namespaced, want_header, manifest) in CASES {
        let name = name_of(manifest);
        let ns: &[&str] = if *namespaced { &["-n", "suite"] } else { &[] };
        let with_ns = |args: &[&str]| -> Vec<String> { args.iter().chain(ns.iter()).map(|s| s.to_string()).collect() };
        let run = |args: Vec<String>| {
            let a: Vec<&str> = args.iter().map(String::as_str).collect();
            c.ok(&a)
        };

        let created = c.kubectl_stdin(&with_ns(&["create", "-f", "-"]).iter().map(String::as_str).collect::<Vec<_>>(), Some(manifest));
        assert!(created.ok, "creating {res}: {}{}", created.stdout, created.stderr);
        assert!(created.stdout.trim().ends_with(&format!("/{name} created")), "creating {res}: {}", created.stdout);

        let table = run(with_ns(&["get", res, name]));
        assert_eq!(header(&table), *want_header, "{res} table:\n{table}");
        // Event rows name the object the event is about, not the event.
        let row_names = if res.contains("event") { "Tested   configmap/s-cm" } else { name };
        assert!(table.lines().nth(1).is_some_and(|l| l.starts_with(name) || l.contains(row_names)), "{res} row:\n{table}");
        let by_label = run(with_ns(&["get", res, "-l", "suite=before", "-o", "name"]));
        assert!(by_label.lines().any(|l| l.ends_with(&format!("/{name}"))), "{res} by label: {by_label}");

        let described = run(with_ns(&["describe", res, name]));
        assert!(described.lines().next().is_some_and(|l| l.starts_with("Name:") && l.ends_with(name)), "describe {res}:\n{described}");
        // kubectl's describers for quotas, limit ranges, budgets, priority and storage classes print no labels.
        if !matches!(*res, "resourcequota" | "limitrange" | "poddisruptionbudget" | "priorityclass" | "storageclass") {
            assert!(described.contains("suite=before"), "describe {res} shows its labels:\n{described}");
        }

        let edit = Command::new("kubectl")
            .args(with_ns(&["edit", res, name]))
            .env("KUBECONFIG", &c.kubeconfig)
            .env("EDITOR", &editor)
            .output()
            .expect("kubectl edit");
        let said = String::from_utf8_lossy(&edit.stdout).into_owned() + &String::from_utf8_lossy(&edit.stderr);
        assert!(edit.status.success() && said.trim().ends_with(&format!("/{name} edited")), "edit {res}: {said}");
        assert_eq!(run(with_ns(&["get", res, name, "-o", "jsonpath={.metadata.labels.suite}"])), "after", "{res} after edit");

        if *res == "namespace" {
            continue; // deleted last, with everything in it
        }
        let deleted = run(with_ns(&["delete", res, name]));
        assert!(deleted.trim().ends_with(&format!("\"{name}\" deleted")), "delete {res}: {deleted}");
        let gone = c.kubectl(&with_ns(&["get", res, name]).iter().map(String::as_str).collect::<Vec<_>>());
        assert!(!gone.ok && gone.stderr.contains("(NotFound)"), "{res} after delete: {}{}", gone.stdout, gone.stderr);
    }

    // Nodes come from node agents; a Node object written by hand is served the same way.
    let node = "apiVersion: v1\nkind: Node\nmetadata:\n  name: s-node\n  labels:\n    suite: before\n";
    assert!(c.kubectl_stdin(&["create", "-f", "-"], Some(node)).stdout.contains("node/s-node created"));
    assert_eq!(header(&c.ok(&["get", "node", "s-node"])), "NAME STATUS ROLES AGE VERSION");
    assert!(c.ok(&["describe", "node", "s-node"]).contains("suite=before"));
    assert!(c.ok(&["delete", "node", "s-node"]).contains("node \"s-node\" deleted"));

    for ns in ["s-ns", "suite"] {
        let out = c.ok(&["delete", "namespace", ns, "--timeout=60s"]);
        assert!(out.contains(&format!("namespace \"{ns}\" deleted")), "{out}");
    }
    c.eventually(Duration::from_secs(30), "the namespaces are gone", || {
        let o = c.kubectl(&["get", "namespace", "suite"]);
        if o.stderr.contains("(NotFound)") { Ok(()) } else { Err(o.stdout) }
    });
}
