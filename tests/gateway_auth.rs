//! Authentication and RBAC end to end, on a real `flotilla up` with the real kubectl and
//! curl: anonymous callers get 403 naming system:anonymous, a client-certificate user
//! bound to `view` in one namespace reads pods there and nothing more, a token-file user
//! gains rights through a group binding, and `kubectl auth can-i` (protobuf reviews,
//! impersonation with --as) answers as the authorizer does.

mod common;

use common::cluster::Cluster;
use std::path::{Path, PathBuf};
use std::process::Command;

/// `curl -k` against the gateway: (HTTP code, body).
fn curl(c: &Cluster, path: &str, token: Option<&str>) -> (u16, String) {
    let mut cmd = Command::new("curl");
    cmd.args(["-sk", "-w", "\n%{http_code}", &format!("https://{}{path}", c.addr)]);
    if let Some(t) = token {
        cmd.args(["-H", &format!("Authorization: Bearer {t}")]);
    }
    let out = cmd.output().expect("running curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').expect("curl printed the code");
    (code.trim().parse().expect("HTTP code"), body.to_string())
}

/// A client certificate for `user` in `groups`, signed with the cluster CA's key as the
/// gateway's client CA, and a kubeconfig that presents it.
fn user_kubeconfig(c: &Cluster, dir: &Path, user: &str, groups: &[&str]) -> PathBuf {
    use base64::Engine;
    let pki = c.data_dir.join("pki");
    let ca_key = rcgen::KeyPair::from_pem(&std::fs::read_to_string(pki.join("ca.key")).expect("ca.key")).expect("CA key");
    // The CA's subject and key: certificates it signs verify against the stored ca.crt.
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    ca.distinguished_name = rcgen::DistinguishedName::new();
    ca.distinguished_name.push(rcgen::DnType::CommonName, "flotilla-ca");
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let issuer = ca.self_signed(&ca_key).expect("issuer");
    let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name.push(rcgen::DnType::CommonName, user);
    for g in groups {
        p.distinguished_name.push(rcgen::DnType::OrganizationName, *g);
    }
    p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = p.signed_by(&key, &issuer, &ca_key).expect("signing");
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let ca_pem = std::fs::read_to_string(pki.join("ca.crt")).expect("ca.crt");
    let doc = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: f\n  cluster:\n    server: https://{}\n    certificate-authority-data: {}\nusers:\n- name: {user}\n  user:\n    client-certificate-data: {}\n    client-key-data: {}\ncontexts:\n- name: f\n  context:\n    cluster: f\n    user: {user}\n    namespace: x\ncurrent-context: f\n",
        c.addr,
        b64(&ca_pem),
        b64(&cert.pem()),
        b64(&key.serialize_pem())
    );
    let path = dir.join(format!("{user}.kubeconfig"));
    std::fs::write(&path, doc).expect("writing kubeconfig");
    path
}

/// kubectl as the user of `kubeconfig`: (exit ok, stdout, stderr).
fn kubectl_as(kubeconfig: &Path, args: &[&str]) -> (bool, String, String) {
    let o = Command::new("kubectl").arg("--request-timeout=20s").args(args).env("KUBECONFIG", kubeconfig).output().expect("running kubectl");
    (o.status.success(), String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr).into_owned())
}

#[test]
fn anonymous_view_users_tokens_and_can_i() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("cluster");
    // `flotilla up` reads <data-dir>/pki/tokens.csv when it exists (kube-apiserver's
    // --token-auth-file format): bob is in group devs.
    std::fs::create_dir_all(dir.join("pki")).expect("pki dir");
    std::fs::write(dir.join("pki/tokens.csv"), "bob-token,bob,bob-uid,\"devs,qa\"\n").expect("token file");
    let c = Cluster::up(&dir, 1);

    // No credentials: system:anonymous, 403 with the real server's Status.
    let (code, body) = curl(&c, "/api/v1/namespaces", None);
    assert_eq!(code, 403, "{body}");
    let status: serde_json::Value = serde_json::from_str(&body).expect("a Status body");
    assert_eq!(status["kind"], "Status");
    assert_eq!(status["reason"], "Forbidden");
    assert_eq!(status["message"], "namespaces is forbidden: User \"system:anonymous\" cannot list resource \"namespaces\" in API group \"\" at the cluster scope");
    assert_eq!(status["details"], serde_json::json!({"kind": "namespaces"}));
    // system:public-info-viewer lets anonymous callers see /version and /healthz, not discovery.
    assert_eq!(curl(&c, "/version", None).0, 200);
    assert_eq!(curl(&c, "/healthz", None), (200, "ok".to_string()));
    let (code, body) = curl(&c, "/apis", None);
    assert_eq!(code, 403);
    assert!(body.contains("forbidden: User \\\"system:anonymous\\\" cannot get path \\\"/apis\\\""), "{body}");
    // A token that is not in the file is a 401, not anonymous.
    let (code, body) = curl(&c, "/api/v1/namespaces", Some("nope"));
    assert_eq!(code, 401, "{body}");
    assert!(body.contains("\"reason\":\"Unauthorized\""), "{body}");

    // The admin kubeconfig carries kubeadm's admin certificate.
    let who = c.ok(&["auth", "whoami"]);
    assert!(who.contains("kubernetes-admin") && who.contains("[system:masters system:authenticated]"), "{who}");
    assert_eq!(c.ok(&["auth", "can-i", "create", "pods"]).trim(), "yes");
    let roles = c.ok(&["get", "clusterroles", "--no-headers", "-o", "custom-columns=N:.metadata.name"]);
    for r in ["cluster-admin", "admin", "edit", "view", "system:discovery", "system:public-info-viewer", "system:basic-user", "system:node"] {
        assert!(roles.lines().any(|l| l == r), "default ClusterRole {r} missing:\n{roles}");
    }

    // alice (client certificate) is bound to view in namespace x only.
    assert!(c.ok(&["create", "namespace", "x"]).contains("namespace/x created"));
    assert!(c.ok(&["create", "secret", "generic", "s", "-n", "x", "--from-literal=k=v"]).contains("secret/s created"));
    let rb = c.ok(&["create", "rolebinding", "alice-view", "--clusterrole=view", "--user=alice", "-n", "x"]);
    assert!(rb.contains("rolebinding.rbac.authorization.k8s.io/alice-view created"), "{rb}");
    let alice = user_kubeconfig(&c, tmp.path(), "alice", &["qa-team"]);
    // The binding reaches the gateway's cache through its informer: wait for it.
    c.eventually(std::time::Duration::from_secs(10), "alice may list pods in x", || {
        let (ok, out, err) = kubectl_as(&alice, &["get", "pods", "-n", "x"]);
        if ok { Ok(out + &err) } else { Err(err) }
    });
    let (ok, out, err) = kubectl_as(&alice, &["get", "pods", "-n", "x"]);
    assert!(ok && out.is_empty() && err.trim() == "No resources found in x namespace.", "{out}{err}");
    let (_, out, _) = kubectl_as(&alice, &["auth", "whoami"]);
    assert!(out.contains("alice") && out.contains("[qa-team system:authenticated]"), "{out}");
    let (ok, _, err) = kubectl_as(&alice, &["run", "p", "--image=busybox", "-n", "x", "--", "sleep", "1"]);
    assert!(!ok);
    assert_eq!(err.trim(), "Error from server (Forbidden): pods is forbidden: User \"alice\" cannot create resource \"pods\" in API group \"\" in the namespace \"x\"");
    let (ok, _, err) = kubectl_as(&alice, &["get", "secrets", "-n", "x"]);
    assert!(!ok);
    assert_eq!(err.trim(), "Error from server (Forbidden): secrets is forbidden: User \"alice\" cannot list resource \"secrets\" in API group \"\" in the namespace \"x\"");
    let (ok, _, err) = kubectl_as(&alice, &["get", "secret", "s", "-n", "x"]);
    assert!(!ok);
    assert_eq!(err.trim(), "Error from server (Forbidden): secrets \"s\" is forbidden: User \"alice\" cannot get resource \"secrets\" in API group \"\" in the namespace \"x\"");
    let (ok, _, err) = kubectl_as(&alice, &["get", "pods", "-n", "default"]);
    assert!(!ok && err.contains("in the namespace \"default\""), "{err}");
    let (ok, out, _) = kubectl_as(&alice, &["auth", "can-i", "create", "pods", "-n", "x"]);
    assert!(!ok && out.trim() == "no", "{out}");
    let (ok, out, _) = kubectl_as(&alice, &["auth", "can-i", "watch", "deployments.apps", "-n", "x"]);
    assert!(ok && out.trim() == "yes", "{out}");

    // can-i through impersonation (--as): the admin may impersonate anyone.
    assert_eq!(c.ok(&["auth", "can-i", "list", "pods", "-n", "x", "--as", "alice"]).trim(), "yes");
    let no = c.kubectl(&["auth", "can-i", "list", "pods", "-n", "default", "--as", "alice"]);
    assert!(!no.ok && no.stdout.trim() == "no", "{}", no.stdout);
    let no = c.kubectl(&["auth", "can-i", "get", "secrets", "-n", "x", "--as", "alice"]);
    assert!(!no.ok && no.stdout.trim() == "no", "{}", no.stdout);
    // alice may not impersonate.
    let (ok, _, err) = kubectl_as(&alice, &["get", "pods", "-n", "x", "--as", "bob"]);
    assert!(!ok);
    assert_eq!(err.trim(), "Error from server (Forbidden): users \"bob\" is forbidden: User \"alice\" cannot impersonate resource \"users\" in API group \"\" at the cluster scope");

    // bob (token file) gains edit in x through his group.
    assert_eq!(curl(&c, "/api/v1/namespaces/x/pods", Some("bob-token")).0, 403);
    assert!(c.ok(&["create", "rolebinding", "devs-edit", "--clusterrole=edit", "--group=devs", "-n", "x"]).contains("devs-edit created"));
    c.eventually(std::time::Duration::from_secs(10), "bob may list pods in x", || {
        let (code, body) = curl(&c, "/api/v1/namespaces/x/pods", Some("bob-token"));
        if code == 200 { Ok(()) } else { Err(format!("{code} {body}")) }
    });
    assert_eq!(curl(&c, "/api/v1/namespaces/x/secrets", Some("bob-token")).0, 200);
    assert_eq!(c.ok(&["auth", "can-i", "create", "deployments", "-n", "x", "--as", "bob", "--as-group", "devs"]).trim(), "yes");
    let no = c.kubectl(&["auth", "can-i", "create", "rolebindings", "-n", "x", "--as", "bob", "--as-group", "devs"]);
    assert!(!no.ok && no.stdout.trim() == "no", "{}", no.stdout);

    // Removing the binding takes the right away again.
    assert!(c.ok(&["delete", "rolebinding", "alice-view", "-n", "x"]).contains("rolebinding.rbac.authorization.k8s.io \"alice-view\" deleted"));
    c.eventually(std::time::Duration::from_secs(10), "alice can no longer list pods in x", || {
        let (ok, _, err) = kubectl_as(&alice, &["get", "pods", "-n", "x"]);
        if !ok && err.contains("Forbidden") { Ok(()) } else { Err(err) }
    });
}
