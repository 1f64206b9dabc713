//! The bus as the trust boundary, on a real `flotilla up` and its nats-server: a node
//! agent's credentials reach only its own node's subjects (nats-server refuses the rest),
//! a write it forges on its own subject about another node's objects is refused by the
//! state group, and it reads only the Secrets its pods mount.

mod common;

use bus::creds::Credentials;
use common::cluster::Cluster;
use k8s_openapi::api::core::v1::{Node, Pod, Secret};
use schema::subjects;
use std::time::Duration;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap()
}

fn node_creds(c: &Cluster, node: &str) -> Credentials {
    Credentials::load(&c.data_dir.join("nats").join(format!("node-{node}.creds"))).expect("up wrote the node's identity")
}

const POD_ON: &str = r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"NAME","namespace":"default"},
"spec":{"nodeName":"NODE","runtimeClassName":"host","terminationGracePeriodSeconds":1,
"containers":[{"name":"main","image":"busybox","command":["sleep","3600"]}],
"volumes":[{"name":"v","secret":{"secretName":"mounted"}}]}}"#;

fn pod_on(name: &str, node: &str) -> String {
    POD_ON.replace("NAME", name).replace("NODE", node)
}

#[test]
fn a_node_agent_reaches_only_its_own_node() {
    let dir = tempfile::tempdir().unwrap();
    let c = Cluster::up(&dir.path().join("c"), 2);
    c.ok(&["create", "secret", "generic", "mounted", "--from-literal=k=mine"]);
    c.ok(&["create", "secret", "generic", "unmounted", "--from-literal=k=theirs"]);
    for (pod, node) in [("on-1", "node-1"), ("on-2", "node-2")] {
        let o = c.kubectl_stdin(&["apply", "-f", "-"], Some(&pod_on(pod, node)));
        assert!(o.ok, "{}", o.stderr);
    }
    // A pod that mounts a Secret still gets it.
    c.eventually(Duration::from_secs(60), "on-1 running with its secret written", || {
        let phase = c.kubectl(&["get", "pod", "on-1", "-o", "jsonpath={.status.phase}"]).stdout;
        let pods = c.data_dir.join("nodes/node-1/pods");
        let written = std::fs::read_dir(&pods)
            .map_err(|e| e.to_string())?
            .filter_map(Result::ok)
            .filter(|d| d.file_name().to_string_lossy().starts_with("default_on-1_"))
            .any(|d| std::fs::read_to_string(d.path().join(".volumes/v/k")).is_ok_and(|k| k == "mine"));
        if phase == "Running" && written { Ok(()) } else { Err(format!("phase {phase:?}, secret written: {written}")) }
    });
    let url = c.nats_url();
    let creds = node_creds(&c, "node-1");
    rt().block_on(async {
        // nats-server refuses what the subject permissions do not allow, and says so.
        let (nats, errors) = common::connect_noting_errors(&url, &creds).await;
        nats.publish(subjects::node_write("node-2"), "forged".into()).await.unwrap();
        let _sub = nats.subscribe(subjects::node_pod_events("node-2")).await.unwrap();
        nats.publish(subjects::STATE_WRITE, "forged".into()).await.unwrap();
        nats.flush().await.unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let e = errors.lock().unwrap().join("\n").to_lowercase();
            let wanted = [
                format!("permissions violation for publish to \"{}\"", subjects::node_write("node-2")),
                format!("permissions violation for subscription to \"{}\"", subjects::node_pod_events("node-2")),
                format!("permissions violation for publish to \"{}\"", subjects::STATE_WRITE),
            ];
            if wanted.iter().all(|w| e.contains(w.as_str())) {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "nats-server did not refuse all three; it said:\n{e}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // Its own pods' subjects it may subscribe to.
        let mine = nats.subscribe(subjects::node_pod_events("node-1")).await.unwrap();
        nats.flush().await.unwrap();
        drop(mine);

        // On its own subject, the state group holds it to its own objects.
        let bus = bus::Bus::connect_as(&url, Some(&creds)).await.unwrap().for_node("node-1");
        let client = bus::Client::new(bus);
        let mut theirs: Pod = client.get(Some("default"), "on-2").await.unwrap().expect("on-2 exists");
        theirs.status.get_or_insert_with(Default::default).phase = Some("Failed".into());
        let e = client.update(&theirs).await.expect_err("changing node-2's pod status must be refused").to_string();
        assert!(e.contains("forbidden") && e.contains("not bound to this node"), "{e}");
        let mut other: Node = client.get(None, "node-2").await.unwrap().expect("node-2 exists");
        other.metadata.labels.get_or_insert_with(Default::default).insert("forged".into(), "yes".into());
        let e = client.update(&other).await.expect_err("changing node-2's Node must be refused").to_string();
        assert!(e.contains("forbidden") && e.contains("only its own Node"), "{e}");
        let secret = Secret { metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta { name: Some("planted".into()), namespace: Some("default".into()), ..Default::default() }, ..Default::default() };
        let e = client.create(&secret).await.expect_err("a node may not create Secrets").to_string();
        assert!(e.contains("forbidden"), "{e}");
        // Its own pod's status it may write.
        let mut mine: Pod = client.get(Some("default"), "on-1").await.unwrap().expect("on-1 exists");
        mine.metadata.resource_version = None;
        let conds = mine.status.get_or_insert_with(Default::default).conditions.get_or_insert_with(Default::default);
        conds.retain(|c| c.type_ != "flotilla.test/Checked");
        conds.push(k8s_openapi::api::core::v1::PodCondition { type_: "flotilla.test/Checked".into(), status: "True".into(), ..Default::default() });
        client.update(&mine).await.expect("node-1 may write its own pod's status");

        // ServiceAccount tokens: only for its own pods.
        let ask = |pod: &Pod| {
            let r = schema::tokens::TokenRequest { namespace: "default".into(), service_account: "default".into(), pod: pod.metadata.name.clone().unwrap(), pod_uid: pod.metadata.uid.clone().unwrap(), audiences: vec![], expiration_seconds: 3600 };
            schema::codec::encode(&r).unwrap()
        };
        let token_for = |pod: &Pod| {
            let (nats, payload) = (client.bus.nats.clone(), ask(pod));
            async move {
                let m = nats.request(subjects::node_token_request("node-1"), payload.into()).await.expect("a gateway answers");
                schema::codec::decode::<schema::tokens::TokenReply>(&m.payload).unwrap()
            }
        };
        match token_for(&theirs).await {
            schema::tokens::TokenReply::Refused(why) => assert!(why.contains("not bound to it"), "{why}"),
            other => panic!("node-1 got a token for node-2's pod: {other:?}"),
        }
        let own: Pod = client.get(Some("default"), "on-1").await.unwrap().unwrap();
        assert!(matches!(token_for(&own).await, schema::tokens::TokenReply::Token { .. }), "node-1 gets its own pod's token");

        // Secrets: only those its pods mount.
        let got: Option<Secret> = client.get(Some("default"), "mounted").await.expect("node-1's pod mounts this secret");
        assert!(got.is_some());
        let e = client.get::<Secret>(Some("default"), "unmounted").await.expect_err("no pod of node-1 mounts this secret").to_string();
        assert!(e.contains("forbidden") && e.contains("no pod bound to it references this Secret"), "{e}");
        let (listed, _) = client.list::<Secret>(None).await.unwrap();
        let names: Vec<_> = listed.iter().filter_map(|s| s.metadata.name.clone()).collect();
        assert_eq!(names, vec!["mounted".to_string()], "a node's list shows only its pods' secrets");
    });
    // Nothing of the forgeries landed.
    let phase = c.ok(&["get", "pod", "on-2", "-o", "jsonpath={.status.phase}"]);
    assert_ne!(phase.trim(), "Failed");
    let labels = c.ok(&["get", "node", "node-2", "-o", "jsonpath={.metadata.labels.forged}"]);
    assert_eq!(labels.trim(), "");
}

/// A node agent process started by the test, stopped by its PID.
type Agent = common::process::TermOnDrop;

impl Agent {
    fn join(c: &Cluster, dir: &std::path::Path, name: &str, token: Option<&str>) -> Agent {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(dir.join(format!("{name}.log"))).unwrap();
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_flotilla"));
        cmd.args(["node", "--join", &c.nats_url(), "--name", name, "--runtime", "process", "--data-dir"]).arg(dir.join("nodes"));
        if let Some(t) = token {
            cmd.args(["--token", t]);
        }
        let child = cmd.env("RUST_LOG", "info,async_nats=warn").env_remove("FLOTILLA_NATS_CREDS").stdin(std::process::Stdio::null()).stdout(log.try_clone().unwrap()).stderr(log).spawn().expect("starting flotilla node --join");
        common::process::TermOnDrop(child)
    }
}


fn node_ready(c: &Cluster, name: &str) -> Result<(), String> {
    let o = c.kubectl(&["get", "node", name, "-o", "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}"]);
    if o.ok && o.stdout.trim() == "True" { Ok(()) } else { Err(format!("{} {}", o.stdout, o.stderr)) }
}

#[test]
fn nodes_join_with_a_token_and_lose_their_credentials_with_their_node() {
    let dir = tempfile::tempdir().unwrap();
    let c = Cluster::up(&dir.path().join("c"), 1);
    let data = c.data_dir.to_string_lossy().to_string();
    let token = c.flotilla(&["join-token", "create", "--data-dir", &data, "--ttl", "1h"]);
    assert!(token.ok, "join-token create failed: {}", token.stderr);
    let token = token.stdout.trim().to_string();
    let (id, _) = schema::join::parse_token(&token).expect("a kubeadm-shaped token");
    let stored = c.ok(&["get", "secret", "-n", "kube-system", &format!("bootstrap-token-{id}"), "-o", "jsonpath={.type}"]);
    assert_eq!(stored, "bootstrap.kubernetes.io/token");

    // Unknown and expired tokens are refused, clearly, with a failing exit.
    let url = c.nats_url();
    let nodes = dir.path().join("nodes");
    let nodes = nodes.to_string_lossy();
    let join = |token: &str| c.flotilla(&["node", "--join", &url, "--token", token, "--name", "far", "--runtime", "process", "--data-dir", &nodes]);
    let unknown = join("abcdef.0123456789abcdef");
    assert!(!unknown.ok && unknown.stderr.contains("the join token \"abcdef\" is unknown"), "{}", unknown.stderr);
    let expired = c.flotilla(&["join-token", "create", "--data-dir", &data, "--ttl", "1s"]);
    assert!(expired.ok, "{}", expired.stderr);
    std::thread::sleep(Duration::from_secs(2));
    let refused = join(expired.stdout.trim());
    assert!(!refused.ok && refused.stderr.contains("expired at"), "{}", refused.stderr);
    assert!(!dir.path().join("nodes/far/nats.creds").exists(), "a refused join stores nothing");

    // A joined node becomes Ready and runs a pod.
    let agent = Agent::join(&c, dir.path(), "far", Some(&token));
    c.eventually(Duration::from_secs(60), "far Ready", || node_ready(&c, "far"));
    let pod = r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"on-far","namespace":"default"},
"spec":{"nodeName":"far","runtimeClassName":"host","terminationGracePeriodSeconds":1,"containers":[{"name":"main","image":"busybox","command":["sleep","3600"]}]}}"#;
    let o = c.kubectl_stdin(&["apply", "-f", "-"], Some(pod));
    assert!(o.ok, "{}", o.stderr);
    c.eventually(Duration::from_secs(60), "on-far Running", || {
        let phase = c.kubectl(&["get", "pod", "on-far", "-o", "jsonpath={.status.phase}"]).stdout;
        if phase == "Running" { Ok(()) } else { Err(phase) }
    });
    assert!(dir.path().join("nodes/far/ca.crt").exists(), "the join hands over the cluster CA");

    // A valid token does not let another machine take over far's name while far's Node
    // exists, and nothing is stored for the refused one.
    let other = dir.path().join("other");
    let other = other.to_string_lossy();
    let taken = c.flotilla(&["node", "--join", &url, "--token", &token, "--name", "far", "--runtime", "process", "--data-dir", &other]);
    assert!(!taken.ok && taken.stderr.contains("has joined already"), "{}", taken.stderr);
    assert!(!dir.path().join("other/far/nats.creds").exists(), "a refused re-join stores nothing");
    assert_eq!(node_ready(&c, "far"), Ok(()), "far keeps its identity");

    // A restart reuses the stored identity (no token given).
    drop(agent);
    let agent = Agent::join(&c, dir.path(), "far", None);
    c.eventually(Duration::from_secs(60), "far Ready after a restart", || node_ready(&c, "far"));

    // Deleting its Node revokes its identity.
    let creds = Credentials::load(&dir.path().join("nodes/far/nats.creds")).unwrap();
    c.ok(&["delete", "pod", "on-far", "--wait=false"]);
    c.ok(&["delete", "node", "far"]);
    rt().block_on(async {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let r = async_nats::ConnectOptions::new().nkey(creds.seed.clone()).custom_inbox_prefix(&creds.inbox).connection_timeout(Duration::from_secs(3)).connect(&url).await;
            match r {
                Err(e) if e.to_string().to_lowercase().contains("authorization") => break,
                other => {
                    assert!(tokio::time::Instant::now() < deadline, "far's identity still connects after its Node was deleted: {:?}", other.err());
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    });
    drop(agent);
}
