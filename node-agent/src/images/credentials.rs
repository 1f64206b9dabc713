//! `imagePullSecrets`: the pod's docker-registry Secrets (`kubernetes.io/dockerconfigjson`
//! and the older `kubernetes.io/dockercfg`) read into a keyring, and the credentials for
//! an image picked from it by the kubelet's rules (its `credentialprovider` keyring): a
//! key is a host, host:port or host/path prefix, `*.` matches one DNS label, `https://`
//! and `/v1/`/`/v2/` are ignored, and `index.docker.io` serves every Docker Hub image.

use serde::Deserialize;
use std::collections::BTreeMap;

/// One credential, as CRI's `AuthConfig` carries it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PullAuth {
    pub username: String,
    pub password: String,
    /// base64 of `username:password`, when the secret gave it.
    pub auth: String,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SecretError {
    #[error("secret {0} has no {1} key")]
    MissingKey(String, &'static str),
    #[error("secret {0}: {1}")]
    Decode(String, String),
}

#[derive(Deserialize, Default)]
struct Entry {
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    auth: String,
}

#[derive(Deserialize)]
struct ConfigJson {
    #[serde(default)]
    auths: BTreeMap<String, Entry>,
}

const DEFAULT_REGISTRY_HOST: &str = "index.docker.io";

/// Credentials by key, most specific first (reverse order, as the kubelet sorts them:
/// `quay.io/coreos` before `quay.io`).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Keyring {
    entries: Vec<(String, PullAuth)>,
}

fn to_auth(e: Entry) -> PullAuth {
    let (mut username, mut password) = (e.username, e.password);
    if username.is_empty() && !e.auth.is_empty() {
        use base64::Engine;
        if let Some((u, p)) = base64::engine::general_purpose::STANDARD.decode(e.auth.trim()).ok().and_then(|b| String::from_utf8(b).ok()).and_then(|s| s.split_once(':').map(|(u, p)| (u.to_string(), p.to_string()))) {
            (username, password) = (u, p);
        }
    }
    PullAuth { username, password, auth: e.auth }
}

/// `https://index.docker.io/v1/` → `index.docker.io`, `quay.io/coreos/` → `quay.io/coreos`.
fn key_of(location: &str) -> String {
    let rest = location.strip_prefix("https://").or_else(|| location.strip_prefix("http://")).unwrap_or(location);
    let (host, path) = rest.split_once('/').map(|(h, p)| (h, format!("/{p}"))).unwrap_or((rest, String::new()));
    let path = if path.starts_with("/v1/") || path.starts_with("/v2/") { path[3..].to_string() } else { path };
    let path = path.trim_end_matches('/');
    if path.is_empty() {
        host.to_string()
    } else {
        format!("{host}{path}")
    }
}

impl Keyring {
    /// Adds one Secret's credentials (`type` and `data` as stored, values decoded).
    pub fn add_secret(&mut self, name: &str, kind: &str, data: &BTreeMap<String, Vec<u8>>) -> Result<(), SecretError> {
        let auths: BTreeMap<String, Entry> = match kind {
            "kubernetes.io/dockerconfigjson" => {
                let raw = data.get(".dockerconfigjson").ok_or_else(|| SecretError::MissingKey(name.into(), ".dockerconfigjson"))?;
                serde_json::from_slice::<ConfigJson>(raw).map_err(|e| SecretError::Decode(name.into(), e.to_string()))?.auths
            }
            "kubernetes.io/dockercfg" => {
                let raw = data.get(".dockercfg").ok_or_else(|| SecretError::MissingKey(name.into(), ".dockercfg"))?;
                serde_json::from_slice(raw).map_err(|e| SecretError::Decode(name.into(), e.to_string()))?
            }
            // The kubelet reads any secret that has one of the two keys, whatever its type.
            _ if data.contains_key(".dockerconfigjson") => return self.add_secret(name, "kubernetes.io/dockerconfigjson", data),
            _ if data.contains_key(".dockercfg") => return self.add_secret(name, "kubernetes.io/dockercfg", data),
            _ => return Err(SecretError::MissingKey(name.into(), ".dockerconfigjson")),
        };
        for (loc, e) in auths {
            self.entries.push((key_of(&loc), to_auth(e)));
        }
        // Stable: two secrets with the same key keep the pod's order.
        self.entries.sort_by(|a, b| b.0.cmp(&a.0));
        Ok(())
    }

    /// The credentials to try for `image`, in order (none: pull anonymously).
    pub fn lookup(&self, image: &str) -> Vec<PullAuth> {
        let repo = repository(image);
        let mut out: Vec<PullAuth> = self.entries.iter().filter(|(k, _)| urls_match(k, &repo)).map(|(_, a)| a.clone()).collect();
        if is_default_registry(&repo) {
            out.extend(self.entries.iter().filter(|(k, _)| k == DEFAULT_REGISTRY_HOST).map(|(_, a)| a.clone()));
        }
        out.dedup();
        out
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// The image's repository, fully qualified, without tag or digest
/// (`nginx:1` → `docker.io/library/nginx`).
fn repository(image: &str) -> String {
    let full = super::reference::normalize(image);
    let no_digest = full.split_once('@').map(|(n, _)| n.to_string()).unwrap_or(full);
    let last_slash = no_digest.rfind('/').unwrap_or(0);
    match no_digest[last_slash..].rfind(':') {
        Some(i) => no_digest[..last_slash + i].to_string(),
        None => no_digest,
    }
}

fn is_default_registry(repo: &str) -> bool {
    match repo.split_once('/') {
        None => true,
        Some((first, _)) => first == "docker.io" || !(first.contains('.') || first.contains(':')),
    }
}

fn split_port(host: &str) -> (&str, &str) {
    match host.rsplit_once(':') {
        Some((h, p)) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => (h, p),
        _ => (host, ""),
    }
}

/// One DNS label against a glob label (`*`, `foo*`, or literal), as Go's filepath.Match
/// does for the labels the kubelet compares.
fn label_match(glob: &str, label: &str) -> bool {
    match glob.split_once('*') {
        None => glob == label,
        Some((pre, post)) => label.len() >= pre.len() + post.len() && label.starts_with(pre) && label_match_rest(post, &label[pre.len()..]),
    }
}

fn label_match_rest(glob: &str, rest: &str) -> bool {
    if !glob.contains('*') {
        return rest.ends_with(glob);
    }
    (0..=rest.len()).any(|i| rest.is_char_boundary(i) && label_match(glob, &rest[i..]))
}

/// Whether the key `glob` covers the repository `target`: the same number of host labels,
/// each matching, the same port, and the key's path a prefix of the target's.
fn urls_match(glob: &str, target: &str) -> bool {
    let (ghost, gpath) = glob.split_once('/').map(|(h, p)| (h, format!("/{p}"))).unwrap_or((glob, String::new()));
    let (thost, tpath) = target.split_once('/').map(|(h, p)| (h, format!("/{p}"))).unwrap_or((target, String::new()));
    let ((gh, gp), (th, tp)) = (split_port(ghost), split_port(thost));
    if gp != tp {
        return false;
    }
    let (gl, tl): (Vec<&str>, Vec<&str>) = (gh.split('.').collect(), th.split('.').collect());
    if gl.len() != tl.len() || !gl.iter().zip(&tl).all(|(g, t)| label_match(g, t)) {
        return false;
    }
    tpath.starts_with(&gpath)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(kind: &str, key: &str, json: &str) -> Keyring {
        let mut k = Keyring::default();
        k.add_secret("s", kind, &[(key.to_string(), json.as_bytes().to_vec())].into()).unwrap();
        k
    }

    fn users(k: &Keyring, image: &str) -> Vec<String> {
        k.lookup(image).into_iter().map(|a| a.username).collect()
    }

    #[test]
    fn keys_are_hosts_ports_paths_and_wildcards() {
        let k = ring(
            "kubernetes.io/dockerconfigjson",
            ".dockerconfigjson",
            r#"{"auths":{
                "https://quay.io/v1/":{"username":"quay"},
                "quay.io/coreos":{"username":"coreos"},
                "*.example.com":{"username":"wild"},
                "127.0.0.1:5000":{"username":"local"},
                "https://index.docker.io/v1/":{"username":"hub"}}}"#,
        );
        assert_eq!(users(&k, "quay.io/coreos/etcd:3"), ["coreos", "quay"]);
        assert_eq!(users(&k, "quay.io/other/x"), ["quay"]);
        assert_eq!(users(&k, "registry.example.com/app:1"), ["wild"]);
        assert!(users(&k, "a.b.example.com/app").is_empty(), "* is one label");
        assert!(users(&k, "example.com/app").is_empty());
        assert_eq!(users(&k, "127.0.0.1:5000/private/busybox:1"), ["local"]);
        assert!(users(&k, "127.0.0.1:5001/private/busybox:1").is_empty(), "ports must match");
        assert!(users(&k, "127.0.0.1/private/busybox").is_empty());
        assert_eq!(users(&k, "nginx"), ["hub"]);
        assert_eq!(users(&k, "bitnami/redis:7"), ["hub"]);
        assert_eq!(users(&k, "docker.io/library/nginx@sha256:abc"), ["hub"]);
    }

    #[test]
    fn docker_io_keys_and_dockercfg() {
        let k = ring("kubernetes.io/dockercfg", ".dockercfg", r#"{"docker.io":{"auth":"dXNlcjpwYXNz"}}"#);
        assert_eq!(k.lookup("nginx:1"), vec![PullAuth { username: "user".into(), password: "pass".into(), auth: "dXNlcjpwYXNz".into() }]);
        assert!(k.lookup("quay.io/x").is_empty());
    }

    #[test]
    fn bad_secrets_are_named() {
        let mut k = Keyring::default();
        assert_eq!(k.add_secret("s", "kubernetes.io/dockerconfigjson", &BTreeMap::new()), Err(SecretError::MissingKey("s".into(), ".dockerconfigjson")));
        assert!(matches!(k.add_secret("s", "kubernetes.io/dockercfg", &[(".dockercfg".to_string(), b"nope".to_vec())].into()), Err(SecretError::Decode(..))));
    }

    #[test]
    fn repositories() {
        assert_eq!(repository("nginx"), "docker.io/library/nginx");
        assert_eq!(repository("localhost:5000/a/b:2"), "localhost:5000/a/b");
        assert_eq!(repository("localhost:5000/a"), "localhost:5000/a");
        assert_eq!(repository("busybox@sha256:abc"), "docker.io/library/busybox");
    }
}
