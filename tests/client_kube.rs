//! The Rust `kube` crate (client and runtime, rustls) against a real `flotilla up`, with
//! the cluster's admin kubeconfig: pods created, read, patched (merge and strategic),
//! replaced with a stale resourceVersion (409), listed by label, watched both with
//! `Api::watch` from a resourceVersion and with kube-runtime's watcher (list, then watch),
//! deleted and awaited; a ConfigMap through server-side apply.

mod common;

use common::cluster::Cluster;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::{wait, watcher};
use kube::{Client, Config, ResourceExt};
use serde_json::json;
use std::time::Duration;

const NS: &str = "kube";
const LABEL: &str = "app=kube-client";

fn pod(name: &str) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "kube-client"}},
        "spec": {"containers": [{"name": "main", "image": "busybox", "command": ["sleep", "3600"]}]}
    }))
    .expect("a pod")
}

/// What a kube-runtime watcher saw, one line per event: `Apply kube-pod`, `InitDone`, ….
fn describe(ev: &watcher::Event<Pod>) -> String {
    match ev {
        watcher::Event::Apply(p) => format!("Apply {}", p.name_any()),
        watcher::Event::Delete(p) => format!("Delete {}", p.name_any()),
        watcher::Event::Init => "Init".into(),
        watcher::Event::InitApply(p) => format!("InitApply {}", p.name_any()),
        watcher::Event::InitDone => "InitDone".into(),
    }
}

async fn next(seen: &mut tokio::sync::mpsc::UnboundedReceiver<String>) -> String {
    tokio::time::timeout(Duration::from_secs(20), seen.recv()).await.expect("a watcher event within 20 s").expect("the watcher runs")
}

async fn client(c: &Cluster) -> Client {
    let kc = Kubeconfig::read_from(&c.kubeconfig).expect("reading the kubeconfig");
    let cfg = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await.expect("a kube Config from the kubeconfig");
    assert!(cfg.cluster_url.to_string().starts_with("https://"), "{}", cfg.cluster_url);
    Client::try_from(cfg).expect("a kube Client")
}

fn api_code<T: std::fmt::Debug>(r: kube::Result<T>) -> (u16, String) {
    match r {
        Err(kube::Error::Api(s)) => (s.code, s.reason),
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[test]
fn kube_crate_creates_lists_watches_patches_and_deletes_pods() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let c = Cluster::up(&tmp.path().join("cluster"), 0);
    c.ok(&["create", "namespace", NS]);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let client = client(&c).await;
        let v = client.apiserver_version().await.expect("GET /version");
        assert_eq!((v.major.as_str(), v.minor.as_str()), ("1", "32"));

        let pods: Api<Pod> = Api::namespaced(client.clone(), NS);

        // kube-runtime's watcher, started first: it lists (empty), then watches from the
        // list's resourceVersion; its events go to a channel the test reads at the end.
        let (tx, mut seen) = tokio::sync::mpsc::unbounded_channel();
        let w = watcher(pods.clone(), watcher::Config::default().labels(LABEL));
        let watching = tokio::spawn(async move {
            let mut w = std::pin::pin!(w);
            while let Some(ev) = w.next().await {
                let line = match ev {
                    Ok(ev) => describe(&ev),
                    Err(e) => format!("error {e}"),
                };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        assert_eq!(next(&mut seen).await, "Init");
        assert_eq!(next(&mut seen).await, "InitDone");

        let empty = pods.list(&ListParams::default().labels(LABEL)).await.expect("list");
        assert!(empty.items.is_empty());
        let rv0 = empty.metadata.resource_version.clone().expect("a list has a resourceVersion");

        let created = pods.create(&PostParams::default(), &pod("kube-pod")).await.expect("create");
        let uid = created.uid().expect("the server sets uid");
        assert!(created.creation_timestamp().is_some());
        let rv1 = created.resource_version().expect("the server sets resourceVersion");
        assert_eq!(api_code(pods.create(&PostParams::default(), &pod("kube-pod")).await), (409, "AlreadyExists".into()));

        let got = pods.get("kube-pod").await.expect("get");
        assert_eq!(got.uid().as_deref(), Some(uid.as_str()));
        assert_eq!(api_code(pods.get("nobody").await), (404, "NotFound".into()));
        assert!(pods.get_opt("nobody").await.expect("get_opt").is_none());

        // Merge patch, then a strategic merge patch that merges containers by name.
        let merged = pods.patch("kube-pod", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"labels": {"patched": "merge"}}}))).await.expect("merge patch");
        assert_eq!(merged.labels().get("patched").map(String::as_str), Some("merge"));
        assert_eq!(merged.labels().get("app").map(String::as_str), Some("kube-client"));
        assert_ne!(merged.resource_version(), Some(rv1.clone()));
        let strategic = pods
            .patch("kube-pod", &PatchParams::default(), &Patch::Strategic(json!({"spec": {"containers": [{"name": "main", "image": "busybox:1.36"}]}})))
            .await
            .expect("strategic merge patch");
        let containers = &strategic.spec.as_ref().expect("spec").containers;
        assert_eq!(containers.len(), 1);
        assert_eq!(containers[0].image.as_deref(), Some("busybox:1.36"));
        assert_eq!(containers[0].command.as_deref(), Some(&["sleep".to_string(), "3600".to_string()][..]));

        // A replace carrying the creation's resourceVersion is stale by now.
        let mut stale = created.clone();
        stale.labels_mut().insert("stale".into(), "yes".into());
        assert_eq!(api_code(pods.replace("kube-pod", &PostParams::default(), &stale).await), (409, "Conflict".into()));

        let listed = pods.list(&ListParams::default().labels(LABEL)).await.expect("list by label");
        assert_eq!(listed.items.iter().map(|p| p.name_any()).collect::<Vec<_>>(), ["kube-pod"]);
        let set_based = pods.list(&ListParams::default().labels("app in (kube-client),patched")).await.expect("set-based selector");
        assert_eq!(set_based.items.len(), 1);
        assert!(pods.list(&ListParams::default().labels("app=other")).await.expect("list").items.is_empty());
        let all: Api<Pod> = Api::all(client.clone());
        let everywhere = all.list(&ListParams::default().labels(LABEL)).await.expect("list across namespaces");
        assert_eq!(everywhere.items.iter().map(|p| (p.namespace().unwrap_or_default(), p.name_any())).collect::<Vec<_>>(), [(NS.to_string(), "kube-pod".to_string())]);

        let deleted = pods.delete("kube-pod", &DeleteParams::default().grace_period(0)).await.expect("delete");
        if let Some(p) = deleted.left() {
            assert_eq!(p.uid().as_deref(), Some(uid.as_str()));
        }
        let gone = tokio::time::timeout(Duration::from_secs(20), wait::await_condition(pods.clone(), "kube-pod", wait::conditions::is_deleted(&uid)))
            .await
            .expect("deleted within 20 s")
            .expect("await_condition");
        assert!(gone.is_none());
        assert_eq!(api_code(pods.get("kube-pod").await), (404, "NotFound".into()));

        // Api::watch from the empty list's resourceVersion replays the pod's whole life.
        let stream = pods.watch(&WatchParams::default().labels(LABEL).timeout(10), &rv0).await.expect("watch");
        let mut stream = std::pin::pin!(stream);
        let mut replay = Vec::new();
        while let Some(ev) = tokio::time::timeout(Duration::from_secs(20), stream.try_next()).await.expect("a watch event").expect("watch stream") {
            match ev {
                WatchEvent::Added(p) => replay.push(format!("Added {}", p.name_any())),
                WatchEvent::Modified(p) => replay.push(format!("Modified {}", p.name_any())),
                WatchEvent::Deleted(p) => {
                    replay.push(format!("Deleted {}", p.name_any()));
                    break;
                }
                WatchEvent::Bookmark(_) => {}
                WatchEvent::Error(s) => panic!("watch error {s:?}"),
            }
        }
        assert_eq!(replay.first().map(String::as_str), Some("Added kube-pod"), "{replay:?}");
        assert_eq!(replay.last().map(String::as_str), Some("Deleted kube-pod"), "{replay:?}");
        // Two patches at least; the scheduler's status writes add more.
        assert!(replay.iter().filter(|e| *e == "Modified kube-pod").count() >= 2, "{replay:?}");
        assert_eq!(replay.len(), 2 + replay.iter().filter(|e| *e == "Modified kube-pod").count(), "{replay:?}");

        // The live watcher saw the same life: applied (created, patched, …), then deleted.
        let mut live = Vec::new();
        while live.last().map(String::as_str) != Some("Delete kube-pod") {
            live.push(next(&mut seen).await);
        }
        assert_eq!(live.first().map(String::as_str), Some("Apply kube-pod"), "{live:?}");
        assert!(live[..live.len() - 1].iter().all(|e| e == "Apply kube-pod"), "{live:?}");
        assert!(live.len() >= 4, "create, two patches, delete: {live:?}");
        watching.abort();

        // Server-side apply of a ConfigMap: created by the apply, then changed by it.
        let cms: Api<ConfigMap> = Api::namespaced(client.clone(), NS);
        let ssa = PatchParams::apply("kube-test");
        let doc = |v: &str| json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "kube-cm"}, "data": {"k": v}});
        let first = cms.patch("kube-cm", &ssa, &Patch::Apply(doc("1"))).await.expect("server-side apply (create)");
        assert_eq!(first.data.as_ref().and_then(|d| d.get("k")).map(String::as_str), Some("1"));
        let second = cms.patch("kube-cm", &ssa, &Patch::Apply(doc("2"))).await.expect("server-side apply (update)");
        assert_eq!(second.data.as_ref().and_then(|d| d.get("k")).map(String::as_str), Some("2"));
        assert_eq!(second.uid(), first.uid());
    });

    // What the client did is what kubectl sees.
    assert_eq!(c.ok(&["get", "pods", "-n", NS, "-o", "name"]).trim(), "");
    assert_eq!(c.ok(&["get", "configmap", "kube-cm", "-n", NS, "-o", "jsonpath={.data.k}"]), "2");
}
