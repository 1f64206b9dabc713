//! Registry mirrors and per-host settings from a k3s-shaped `registries.yaml`
//! (`mirrors: {docker.io: {endpoint: [...]}}`, `configs: {host: {auth, tls}}`), turned
//! into what containerd 1.6's CRI plugin reads: one `hosts.toml` per registry under its
//! `config_path` (endpoints in order, TLS per endpoint), and `registry.configs.<host>.auth`
//! in its config.toml (the credentials it sends a host when the kubelet passes none).
//! docker.io keeps the air-gap registry as its last endpoint, so the air-gap folder still
//! serves what the mirrors do not have, and nothing goes to the internet.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct Registries {
    #[serde(default)]
    pub mirrors: BTreeMap<String, Mirror>,
    #[serde(default)]
    pub configs: BTreeMap<String, HostConfig>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct Mirror {
    #[serde(default)]
    pub endpoint: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct HostConfig {
    pub auth: Option<Auth>,
    pub tls: Option<Tls>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct Auth {
    #[serde(default)]
    pub username: String,
    #[serde(default)]
    pub password: String,
    #[serde(default)]
    pub auth: String,
    #[serde(default)]
    pub identity_token: String,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct Tls {
    #[serde(default)]
    pub insecure_skip_verify: bool,
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum MirrorsError {
    #[error("reading {0}: {1}")]
    Read(PathBuf, std::io::Error),
    #[error("{0}: {1}")]
    Parse(PathBuf, serde_yaml::Error),
    #[error("{0}: mirror endpoint {1:?} of {2} is not a URL (http://host[:port][/path])")]
    Endpoint(PathBuf, String, String),
}

/// A string in TOML's basic form.
fn q(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 2);
    o.push('"');
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            '\n' => o.push_str("\\n"),
            c if c.is_control() => o.push_str(&format!("\\u{:04x}", c as u32)),
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

/// `http://127.0.0.1:5000/` → `http://127.0.0.1:5000`; no scheme means https, as k3s reads it.
fn endpoint_url(e: &str) -> Option<String> {
    let e = e.trim().trim_end_matches('/');
    let (scheme, rest) = e.split_once("://").unwrap_or(("https", e));
    if !(scheme == "http" || scheme == "https") || rest.is_empty() || rest.starts_with('/') {
        return None;
    }
    Some(format!("{scheme}://{rest}"))
}

/// The host (and port) of an endpoint URL: what `configs` is keyed by.
fn host_of(url: &str) -> &str {
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    rest.split('/').next().unwrap_or(rest)
}

/// containerd names a registry's directory after it; k3s's `*` is containerd's `_default`.
fn dir_name(registry: &str) -> String {
    if registry == "*" {
        "_default".into()
    } else {
        registry.to_string()
    }
}

impl Registries {
    pub fn load(path: &Path) -> Result<Registries, MirrorsError> {
        let text = std::fs::read_to_string(path).map_err(|e| MirrorsError::Read(path.into(), e))?;
        let r: Registries = if text.trim().is_empty() { Registries::default() } else { serde_yaml::from_str(&text).map_err(|e| MirrorsError::Parse(path.into(), e))? };
        for (reg, m) in &r.mirrors {
            if let Some(bad) = m.endpoint.iter().find(|e| endpoint_url(e).is_none()) {
                return Err(MirrorsError::Endpoint(path.into(), bad.clone(), reg.clone()));
            }
        }
        Ok(r)
    }

    fn host_block(&self, url: &str, capabilities: &str) -> String {
        let mut b = format!("\n[host.{}]\n  capabilities = {capabilities}\n", q(url));
        if let Some(tls) = self.configs.get(host_of(url)).and_then(|c| c.tls.as_ref()) {
            if tls.insecure_skip_verify {
                b.push_str("  skip_verify = true\n");
            }
            if let Some(ca) = &tls.ca_file {
                b.push_str(&format!("  ca = {}\n", q(&ca.to_string_lossy())));
            }
            if let (Some(c), Some(k)) = (&tls.cert_file, &tls.key_file) {
                b.push_str(&format!("  client = [[{}, {}]]\n", q(&c.to_string_lossy()), q(&k.to_string_lossy())));
            }
        }
        b
    }

    /// Every `hosts.toml` to write, by directory name under containerd's `config_path`.
    /// `airgap` is the agent's own registry serving the air-gap folder (docker.io's last
    /// endpoint, and its only one without mirrors).
    pub fn hosts_files(&self, airgap: SocketAddr) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        let airgap_url = format!("http://{airgap}");
        let mut registries: Vec<&str> = self.mirrors.keys().map(String::as_str).collect();
        if !self.mirrors.contains_key("docker.io") {
            registries.push("docker.io");
        }
        for reg in registries {
            let endpoints: Vec<String> = self.mirrors.get(reg).map(|m| m.endpoint.iter().filter_map(|e| endpoint_url(e)).collect()).unwrap_or_default();
            let mut t = String::from("# Written by the flotilla node agent from registries.yaml; edits are overwritten.\n");
            // The upstream comes after the mirrors: docker.io's is the air-gap folder.
            let server = match reg {
                "docker.io" => airgap_url.clone(),
                "*" => String::new(),
                r => format!("https://{r}"),
            };
            if !server.is_empty() {
                t.push_str(&format!("server = {}\n", q(&server)));
            }
            for e in &endpoints {
                t.push_str(&self.host_block(e, "[\"pull\", \"resolve\"]"));
            }
            if reg == "docker.io" {
                t.push_str(&format!("\n# The air-gap folder, after the mirrors.\n[host.{}]\n  capabilities = [\"pull\", \"resolve\"]\n", q(&airgap_url)));
            } else if !server.is_empty() && self.configs.get(reg).and_then(|c| c.tls.as_ref()).is_some() {
                t.push_str(&self.host_block(&server, "[\"pull\", \"resolve\"]"));
            }
            out.insert(dir_name(reg), t);
        }
        // A host with TLS settings but no mirror entry still needs its directory.
        for (host, c) in &self.configs {
            if c.tls.is_some() && !out.contains_key(host) && !self.mirrors.values().any(|m| m.endpoint.iter().filter_map(|e| endpoint_url(e)).any(|e| host_of(&e) == host)) {
                let server = format!("https://{host}");
                let t = format!("# Written by the flotilla node agent from registries.yaml; edits are overwritten.\nserver = {}\n{}", q(&server), self.host_block(&server, "[\"pull\", \"resolve\", \"push\"]"));
                out.insert(host.clone(), t);
            }
        }
        out
    }

    /// The `registry.configs` tables of containerd's config.toml: credentials by host.
    pub fn auth_toml(&self) -> String {
        let mut t = String::new();
        for (host, c) in &self.configs {
            let Some(a) = &c.auth else { continue };
            t.push_str(&format!("  [plugins.\"io.containerd.grpc.v1.cri\".registry.configs.{}.auth]\n", q(host)));
            for (k, v) in [("username", &a.username), ("password", &a.password), ("auth", &a.auth), ("identitytoken", &a.identity_token)] {
                if !v.is_empty() {
                    t.push_str(&format!("    {k} = {}\n", q(v)));
                }
            }
        }
        t
    }

    /// Writes every hosts.toml under `dir`, removing directories of registries no longer
    /// configured (a mirror taken out of the file stops being used).
    pub fn write_hosts(&self, dir: &Path, airgap: SocketAddr) -> std::io::Result<()> {
        let files = self.hosts_files(airgap);
        if let Ok(rd) = std::fs::read_dir(dir) {
            for e in rd.flatten() {
                if !files.contains_key(&*e.file_name().to_string_lossy()) && e.path().join("hosts.toml").is_file() {
                    std::fs::remove_dir_all(e.path())?;
                }
            }
        }
        for (name, text) in files {
            let d = dir.join(name);
            std::fs::create_dir_all(&d)?;
            std::fs::write(d.join("hosts.toml"), text)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const YAML: &str = r#"
mirrors:
  docker.io:
    endpoint: ["http://127.0.0.1:5000", "https://mirror.example.com/"]
  registry.example.com:
    endpoint: ["mirror.example.com"]
configs:
  "mirror.example.com":
    tls: {insecure_skip_verify: true, ca_file: /etc/ca.pem}
    auth: {username: u, password: "p\"w"}
  "private.example.com":
    tls: {insecure_skip_verify: true}
"#;

    fn parse(y: &str) -> Registries {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("registries.yaml");
        std::fs::write(&p, y).unwrap();
        Registries::load(&p).unwrap()
    }

    #[test]
    fn mirrors_come_first_and_the_airgap_folder_last() {
        let r = parse(YAML);
        let files = r.hosts_files("127.0.0.1:4000".parse().unwrap());
        let hub = &files["docker.io"];
        let (m1, m2, ag) = (hub.find("[host.\"http://127.0.0.1:5000\"]").unwrap(), hub.find("[host.\"https://mirror.example.com\"]").unwrap(), hub.find("[host.\"http://127.0.0.1:4000\"]").unwrap());
        assert!(m1 < m2 && m2 < ag, "{hub}");
        assert!(hub.contains("server = \"http://127.0.0.1:4000\""), "{hub}");
        assert!(hub.contains("skip_verify = true\n  ca = \"/etc/ca.pem\""), "{hub}");
        let other = &files["registry.example.com"];
        assert!(other.contains("server = \"https://registry.example.com\"") && other.contains("[host.\"https://mirror.example.com\"]"), "{other}");
        assert!(files["private.example.com"].contains("skip_verify = true"), "{files:?}");
        assert_eq!(r.auth_toml(), "  [plugins.\"io.containerd.grpc.v1.cri\".registry.configs.\"mirror.example.com\".auth]\n    username = \"u\"\n    password = \"p\\\"w\"\n");
    }

    #[test]
    fn without_a_file_docker_io_is_the_airgap_folder_alone() {
        let files = Registries::default().hosts_files("127.0.0.1:4000".parse().unwrap());
        assert_eq!(files.keys().collect::<Vec<_>>(), ["docker.io"]);
        assert_eq!(files["docker.io"].matches("[host.").count(), 1);
        assert_eq!(parse("").mirrors.len(), 0);
        assert_eq!(parse("mirrors:\n  \"*\":\n    endpoint: [http://m:1]\n").hosts_files("127.0.0.1:4000".parse().unwrap()).keys().collect::<Vec<_>>(), ["_default", "docker.io"]);
    }

    #[test]
    fn bad_endpoints_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("r.yaml");
        std::fs::write(&p, "mirrors:\n  docker.io:\n    endpoint: [\"ftp://x\"]\n").unwrap();
        assert!(matches!(Registries::load(&p), Err(MirrorsError::Endpoint(..))));
        std::fs::write(&p, "mirrors: [1, 2]").unwrap();
        assert!(matches!(Registries::load(&p), Err(MirrorsError::Parse(..))));
    }

    #[test]
    fn stale_registry_dirs_go() {
        let dir = tempfile::tempdir().unwrap();
        parse(YAML).write_hosts(dir.path(), "127.0.0.1:4000".parse().unwrap()).unwrap();
        assert!(dir.path().join("registry.example.com/hosts.toml").is_file());
        Registries::default().write_hosts(dir.path(), "127.0.0.1:4000".parse().unwrap()).unwrap();
        assert!(!dir.path().join("registry.example.com").exists());
        assert!(dir.path().join("docker.io/hosts.toml").is_file());
    }
}
