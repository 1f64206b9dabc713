//! ServiceAccount tokens end to end, with the real kubectl and curl: `kubectl create
//! token` gets a signed JWT with the real server's claims; the gateway takes it as
//! `system:serviceaccount:NS:NAME` (403 without a role, 200 after a RoleBinding,
//! `kubectl auth whoami` names it); expired, tampered and foreign-audience tokens, and
//! tokens of a deleted account or bound pod, are 401; every namespace has a `default`
//! account at once, and gets it back when it is deleted.

mod common;

use base64::Engine;
use common::cluster::Cluster;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

/// `curl -k` with a bearer token: (HTTP code, body).
fn curl(c: &Cluster, path: &str, token: &str) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-sk", "-w", "\n%{http_code}", "-H", &format!("Authorization: Bearer {token}"), &format!("https://{}{path}", c.addr)])
        .output()
        .expect("running curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').expect("curl printed the code");
    (code.trim().parse().expect("HTTP code"), body.to_string())
}

/// A kubeconfig that presents only `token` (no client certificate).
fn token_kubeconfig(c: &Cluster, dir: &Path, token: &str) -> PathBuf {
    let ca = std::fs::read_to_string(c.data_dir.join("pki/ca.crt")).expect("ca.crt");
    let doc = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: f\n  cluster:\n    server: https://{}\n    certificate-authority-data: {}\nusers:\n- name: sa\n  user:\n    token: {token}\ncontexts:\n- name: f\n  context:\n    cluster: f\n    user: sa\n    namespace: default\ncurrent-context: f\n",
        c.addr,
        base64::engine::general_purpose::STANDARD.encode(ca)
    );
    let p = dir.join("sa.kubeconfig");
    std::fs::write(&p, doc).expect("writing kubeconfig");
    p
}

fn claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).expect("a JWT has a payload");
    serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).expect("base64url")).expect("JSON claims")
}

#[test]
fn tokens_authenticate_service_accounts() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let c = Cluster::up(&tmp.path().join("cluster"), 1);

    // The registry lists the subresource, and every namespace has its default account.
    assert!(c.ok(&["get", "--raw", "/api/v1"]).contains("\"serviceaccounts/token\""));
    assert!(c.ok(&["get", "serviceaccounts"]).contains("default"));
    let token = c.ok(&["create", "token", "default"]).trim().to_string();
    let cl = claims(&token);
    let uid = c.ok(&["get", "sa", "default", "-o", "jsonpath={.metadata.uid}"]);
    assert_eq!(cl["sub"], "system:serviceaccount:default:default");
    assert_eq!(cl["iss"], "https://kubernetes.default.svc.cluster.local");
    assert_eq!(cl["aud"], serde_json::json!(["https://kubernetes.default.svc.cluster.local"]));
    assert_eq!(cl["kubernetes.io"]["namespace"], "default");
    assert_eq!(cl["kubernetes.io"]["serviceaccount"], serde_json::json!({"name": "default", "uid": uid}));
    assert_eq!(cl["exp"].as_i64().unwrap() - cl["iat"].as_i64().unwrap(), 3600);
    assert_eq!(cl["nbf"], cl["iat"]);
    let twenty = claims(c.ok(&["create", "token", "default", "--duration=20m"]).trim());
    assert_eq!(twenty["exp"].as_i64().unwrap() - twenty["iat"].as_i64().unwrap(), 1200);
    let short = c.kubectl(&["create", "token", "default", "--duration=5m"]);
    assert!(!short.ok && short.stderr.contains("may not specify a duration less than 10 minutes"), "{}", short.stderr);
    let missing = c.kubectl(&["create", "token", "nobody"]);
    assert!(missing.stderr.contains("serviceaccounts \"nobody\" not found"), "{}", missing.stderr);

    // Authenticated as the account, which has no role yet.
    let (code, body) = curl(&c, "/api/v1/namespaces/default/pods", &token);
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("User \\\"system:serviceaccount:default:default\\\" cannot list resource \\\"pods\\\""), "{body}");
    let kc = token_kubeconfig(&c, tmp.path(), &token);
    let who = Command::new("kubectl").args(["auth", "whoami"]).env("KUBECONFIG", &kc).output().expect("kubectl");
    let who = String::from_utf8_lossy(&who.stdout).into_owned();
    assert!(who.contains("system:serviceaccount:default:default"), "{who}");
    assert!(who.contains("[system:serviceaccounts system:serviceaccounts:default system:authenticated]"), "{who}");
    assert!(who.contains(&format!("Extra: authentication.kubernetes.io/credential-id   [JTI={}]", cl["jti"].as_str().unwrap())), "{who}");

    c.ok(&["create", "rolebinding", "sa-view", "--clusterrole=view", "--serviceaccount=default:default"]);
    c.eventually(std::time::Duration::from_secs(10), "the binding takes effect", || match curl(&c, "/api/v1/namespaces/default/pods", &token) {
        (200, b) if b.contains("\"kind\":\"PodList\"") => Ok(()),
        other => Err(format!("{other:?}")),
    });
    assert_eq!(curl(&c, "/api/v1/namespaces/default/secrets", &token).0, 403);

    // Tampered (payload changed, signature kept), foreign audience, expired: 401.
    let mut parts: Vec<String> = token.split('.').map(str::to_string).collect();
    let mut forged = cl.clone();
    forged["sub"] = "system:serviceaccount:kube-system:default".into();
    parts[1] = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(&forged).unwrap());
    assert_eq!(curl(&c, "/api/v1/namespaces/default/pods", &parts.join(".")).0, 401);
    let vault = c.ok(&["create", "token", "default", "--audience=vault"]).trim().to_string();
    assert_eq!(curl(&c, "/api/v1/namespaces/default/pods", &vault).0, 401);
    let key = jsonwebtoken::EncodingKey::from_ec_pem(&std::fs::read(c.data_dir.join("pki/sa.key")).expect("sa.key")).expect("EC key");
    let mut old = cl.clone();
    let now = cl["iat"].as_i64().unwrap();
    (old["iat"], old["nbf"], old["exp"]) = ((now - 7200).into(), (now - 7200).into(), (now - 3600).into());
    let expired = jsonwebtoken::encode(&jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256), &old, &key).expect("signing");
    let (code, body) = curl(&c, "/api/v1/namespaces/default/pods", &expired);
    assert_eq!(code, 401, "{body}");
    assert!(body.contains("\"reason\":\"Unauthorized\""), "{body}");

    // A deleted account's tokens stop working.
    c.ok(&["create", "serviceaccount", "bot"]);
    let bot = c.ok(&["create", "token", "bot"]).trim().to_string();
    assert_eq!(curl(&c, "/api/v1/namespaces/default/pods", &bot).0, 403);
    c.ok(&["delete", "serviceaccount", "bot"]);
    assert_eq!(curl(&c, "/api/v1/namespaces/default/pods", &bot).0, 401);

    // A token bound to a pod names it, and dies with it.
    let pod = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: holder\nspec:\n  containers:\n  - name: c\n    image: busybox\n";
    assert!(c.kubectl_stdin(&["create", "-f", "-"], Some(pod)).ok);
    let bound = c.ok(&["create", "token", "default", "--bound-object-kind=Pod", "--bound-object-name=holder"]).trim().to_string();
    let pod_uid = c.ok(&["get", "pod", "holder", "-o", "jsonpath={.metadata.uid}"]);
    assert_eq!(claims(&bound)["kubernetes.io"]["pod"], serde_json::json!({"name": "holder", "uid": pod_uid}));
    assert_eq!(curl(&c, "/api/v1/namespaces/default/pods", &bound).0, 200);
    let o = c.kubectl(&["create", "token", "default", "--bound-object-kind=Pod", "--bound-object-name=nope"]);
    assert!(o.stderr.contains("pods \"nope\" not found"), "{}", o.stderr);
    c.ok(&["delete", "pod", "holder", "--grace-period=0", "--force"]);
    assert_eq!(curl(&c, "/api/v1/namespaces/default/pods", &bound).0, 401);

    // A new namespace has its default account from the start.
    c.ok(&["create", "namespace", "team"]);
    let t = c.ok(&["-n", "team", "create", "token", "default"]);
    assert_eq!(claims(t.trim())["sub"], "system:serviceaccount:team:default");

    // Deleted, it comes back (a new object: the old tokens die with the old uid).
    let before = c.ok(&["-n", "team", "get", "sa", "default", "-o", "jsonpath={.metadata.uid}"]);
    c.ok(&["-n", "team", "delete", "sa", "default"]);
    assert_eq!(curl(&c, "/api/v1/namespaces/team/pods", t.trim()).0, 401);
    c.eventually(std::time::Duration::from_secs(10), "the default account is back", || {
        let o = c.kubectl(&["-n", "team", "get", "sa", "default", "-o", "jsonpath={.metadata.uid}"]);
        if o.ok && !o.stdout.is_empty() && o.stdout != before { Ok(()) } else { Err(format!("{} {}", o.stdout, o.stderr)) }
    });
    assert_eq!(curl(&c, "/api/v1/namespaces/team/pods", t.trim()).0, 401);
}
