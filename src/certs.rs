//! The cluster CA and the gateway's serving certificate, generated once per data dir and
//! reused afterwards, so a kubeconfig written earlier keeps working across restarts.

use anyhow::{Context, Result};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose, SanType};
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

pub struct ClusterCerts {
    pub ca_pem: String,
    pub serving_cert_pem: String,
    pub serving_key_pem: String,
}

pub fn ensure(dir: &Path, extra_ips: &[IpAddr]) -> Result<ClusterCerts> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let (ca_p, crt_p, key_p) = (dir.join("ca.crt"), dir.join("gateway.crt"), dir.join("gateway.key"));
    if ca_p.exists() && crt_p.exists() && key_p.exists() {
        return Ok(ClusterCerts {
            ca_pem: std::fs::read_to_string(&ca_p)?,
            serving_cert_pem: std::fs::read_to_string(&crt_p)?,
            serving_key_pem: std::fs::read_to_string(&key_p)?,
        });
    }
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.distinguished_name.push(DnType::CommonName, "flotilla-ca");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    let ca_key = KeyPair::generate()?;
    let ca_cert = ca.self_signed(&ca_key)?;

    let mut sv = CertificateParams::new(vec!["localhost".to_string(), "kubernetes".to_string(), "kubernetes.default".to_string()])?;
    sv.distinguished_name.push(DnType::CommonName, "flotilla-gateway");
    sv.subject_alt_names.push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
    for ip in extra_ips {
        if !ip.is_loopback() && !ip.is_unspecified() {
            sv.subject_alt_names.push(SanType::IpAddress(*ip));
        }
    }
    let sv_key = KeyPair::generate()?;
    let sv_cert = sv.signed_by(&sv_key, &ca_cert, &ca_key)?;

    let out = ClusterCerts { ca_pem: ca_cert.pem(), serving_cert_pem: sv_cert.pem(), serving_key_pem: sv_key.serialize_pem() };
    std::fs::write(&ca_p, &out.ca_pem)?;
    std::fs::write(dir.join("ca.key"), ca_key.serialize_pem())?;
    std::fs::write(&crt_p, &out.serving_cert_pem)?;
    std::fs::write(&key_p, &out.serving_key_pem)?;
    restrict(&dir.join("ca.key"));
    restrict(&key_p);
    Ok(out)
}

fn restrict(p: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o600));
}

/// The admin bearer token, made once per data dir.
pub fn admin_token(dir: &Path) -> Result<String> {
    let p = dir.join("admin.token");
    if let Ok(t) = std::fs::read_to_string(&p) {
        if !t.trim().is_empty() {
            return Ok(t.trim().to_string());
        }
    }
    let t = format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple());
    std::fs::write(&p, &t)?;
    restrict(&p);
    Ok(t)
}

pub fn write_kubeconfig(path: &Path, server: &str, ca_pem: &str, token: &str) -> Result<()> {
    use base64::Engine;
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    let doc = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: flotilla\n  cluster:\n    server: {server}\n    certificate-authority-data: {ca}\nusers:\n- name: admin\n  user:\n    token: {token}\ncontexts:\n- name: flotilla\n  context:\n    cluster: flotilla\n    user: admin\n    namespace: default\ncurrent-context: flotilla\n"
    );
    std::fs::write(path, doc).with_context(|| format!("writing {}", path.display()))?;
    restrict(path);
    Ok(())
}
