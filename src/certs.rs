//! The cluster CA, the gateway's serving certificate and the admin's client certificate
//! (CN=kubernetes-admin, O=system:masters, as kubeadm makes it), generated once per data
//! dir and reused afterwards, so a kubeconfig written earlier keeps working across
//! restarts. Also the static token file the gateway reads and the ServiceAccount key.

use anyhow::{Context, Result};
use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType};
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

pub struct ClusterCerts {
    pub ca_pem: String,
    pub serving_cert_pem: String,
    pub serving_key_pem: String,
    pub admin_cert_pem: String,
    pub admin_key_pem: String,
}

/// The CA's parameters; the same ones re-create the issuer from `ca.key` later.
fn ca_params() -> Result<CertificateParams> {
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.distinguished_name = rcgen::DistinguishedName::new();
    ca.distinguished_name.push(DnType::CommonName, "flotilla-ca");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    Ok(ca)
}

/// A client certificate for `user` in `groups`, signed by the CA in `dir` (PEM cert, PEM key).
pub fn client_cert(dir: &Path, user: &str, groups: &[&str]) -> Result<(String, String)> {
    let ca_key = KeyPair::from_pem(&std::fs::read_to_string(dir.join("ca.key")).context("reading ca.key")?)?;
    // Same subject and key as the stored CA certificate: what it signs verifies against it.
    let issuer = ca_params()?.self_signed(&ca_key)?;
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name.push(DnType::CommonName, user);
    for g in groups {
        p.distinguished_name.push(DnType::OrganizationName, *g);
    }
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    p.use_authority_key_identifier_extension = true;
    let key = KeyPair::generate()?;
    let cert = p.signed_by(&key, &issuer, &ca_key)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// The admin's client certificate, made once (also for data dirs from before it existed).
fn admin_cert(dir: &Path) -> Result<(String, String)> {
    let (crt, key) = (dir.join("admin.crt"), dir.join("admin.key"));
    if crt.exists() && key.exists() {
        return Ok((std::fs::read_to_string(&crt)?, std::fs::read_to_string(&key)?));
    }
    let (c, k) = client_cert(dir, "kubernetes-admin", &["system:masters"])?;
    std::fs::write(&crt, &c)?;
    std::fs::write(&key, &k)?;
    restrict(&key);
    Ok((c, k))
}

pub fn ensure(dir: &Path, extra_ips: &[IpAddr]) -> Result<ClusterCerts> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let (ca_p, crt_p, key_p) = (dir.join("ca.crt"), dir.join("gateway.crt"), dir.join("gateway.key"));
    if ca_p.exists() && crt_p.exists() && key_p.exists() {
        let (admin_cert_pem, admin_key_pem) = admin_cert(dir)?;
        return Ok(ClusterCerts {
            ca_pem: std::fs::read_to_string(&ca_p)?,
            serving_cert_pem: std::fs::read_to_string(&crt_p)?,
            serving_key_pem: std::fs::read_to_string(&key_p)?,
            admin_cert_pem,
            admin_key_pem,
        });
    }
    let ca = ca_params()?;
    let ca_key = KeyPair::generate()?;
    let ca_cert = ca.self_signed(&ca_key)?;

    let mut sv = CertificateParams::new(vec!["localhost".to_string(), "kubernetes".to_string(), "kubernetes.default".to_string()])?;
    sv.distinguished_name.push(DnType::CommonName, "flotilla-gateway");
    // What strict verifiers ask of a leaf (OpenSSL's X509_V_FLAG_X509_STRICT, on by default
    // in Python 3.13's ssl, and so in the Python kubernetes client): an Authority Key
    // Identifier naming the CA's key, and key usages that allow a TLS server.
    sv.use_authority_key_identifier_extension = true;
    sv.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    sv.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    sv.subject_alt_names.push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
    for ip in extra_ips {
        if !ip.is_loopback() && !ip.is_unspecified() {
            sv.subject_alt_names.push(SanType::IpAddress(*ip));
        }
    }
    let sv_key = KeyPair::generate()?;
    let sv_cert = sv.signed_by(&sv_key, &ca_cert, &ca_key)?;

    std::fs::write(&ca_p, ca_cert.pem())?;
    std::fs::write(dir.join("ca.key"), ca_key.serialize_pem())?;
    std::fs::write(&crt_p, sv_cert.pem())?;
    std::fs::write(&key_p, sv_key.serialize_pem())?;
    restrict(&dir.join("ca.key"));
    restrict(&key_p);
    let (admin_cert_pem, admin_key_pem) = admin_cert(dir)?;
    Ok(ClusterCerts { ca_pem: ca_cert.pem(), serving_cert_pem: sv_cert.pem(), serving_key_pem: sv_key.serialize_pem(), admin_cert_pem, admin_key_pem })
}

fn restrict(p: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o600));
}

/// kubeadm's sa.key / sa.pub: the key pair that signs and verifies ServiceAccount
/// tokens (ECDSA P-256, for ES256), made once per data dir.
pub fn service_account_key(dir: &Path) -> Result<(PathBuf, PathBuf)> {
    let (key, public) = (dir.join("sa.key"), dir.join("sa.pub"));
    if !(key.exists() && public.exists()) {
        let k = KeyPair::generate()?;
        std::fs::write(&key, k.serialize_pem()).with_context(|| format!("writing {}", key.display()))?;
        restrict(&key);
        std::fs::write(&public, k.public_key_pem()).with_context(|| format!("writing {}", public.display()))?;
    }
    Ok((key, public))
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

/// The token file the gateway reads when none is given: `<pki>/tokens.csv`, written with
/// the admin token (a member of system:masters) when absent and kept as it is otherwise,
/// so an operator may add users to it.
pub fn default_token_file(dir: &Path, admin_token: &str) -> Result<PathBuf> {
    let p = dir.join("tokens.csv");
    if !p.exists() {
        std::fs::write(&p, format!("{admin_token},kubernetes-admin,kubernetes-admin,\"system:masters\"\n")).with_context(|| format!("writing {}", p.display()))?;
        restrict(&p);
    }
    Ok(p)
}

/// kubeadm's admin.conf: the cluster CA and the admin's client certificate.
pub fn write_kubeconfig(path: &Path, server: &str, certs: &ClusterCerts) -> Result<()> {
    use base64::Engine;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let (ca, crt, key) = (b64(&certs.ca_pem), b64(&certs.admin_cert_pem), b64(&certs.admin_key_pem));
    let doc = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: flotilla\n  cluster:\n    server: {server}\n    certificate-authority-data: {ca}\nusers:\n- name: kubernetes-admin\n  user:\n    client-certificate-data: {crt}\n    client-key-data: {key}\ncontexts:\n- name: flotilla\n  context:\n    cluster: flotilla\n    user: kubernetes-admin\n    namespace: default\ncurrent-context: flotilla\n"
    );
    std::fs::write(path, doc).with_context(|| format!("writing {}", path.display()))?;
    restrict(path);
    Ok(())
}
