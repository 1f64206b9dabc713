//! Authentication, as kube-apiserver does it: a client certificate verified against the
//! cluster CA during the TLS handshake (CN = user, O = groups), else a bearer token from
//! the static token file or a signed ServiceAccount token, else `system:anonymous`. Impersonation headers then switch
//! the user when the caller may impersonate.

use super::status::ApiError;
use axum::http::{header, HeaderMap};
use schema::rbac::{self, Attributes, UserInfo};
use std::collections::HashMap;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum TokenFileError {
    #[error("token file line {line}: must have at least 3 columns (token, user name, user uid), found {found}")]
    TooFewColumns { line: usize, found: usize },
    #[error("token file line {line}: unterminated quoted field")]
    Unterminated { line: usize },
}

/// One CSV record as encoding/csv reads it: commas separate fields, double quotes
/// enclose fields that hold commas, `""` inside quotes is one quote.
fn csv_fields(line: &str, n: usize) -> Result<Vec<String>, TokenFileError> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = line.chars().peekable();
    let mut quoted = false;
    let mut at_start = true;
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            '"' if quoted => quoted = false,
            '"' if at_start => quoted = true,
            ',' if !quoted => {
                out.push(std::mem::take(&mut cur));
                at_start = true;
                continue;
            }
            ' ' if at_start && !quoted => continue,
            c => cur.push(c),
        }
        at_start = false;
    }
    if quoted {
        return Err(TokenFileError::Unterminated { line: n });
    }
    out.push(cur);
    Ok(out)
}

/// Parses `--token-auth-file`: `token,user,uid,"group1,group2"` per line. Empty tokens are
/// skipped, later duplicates win, as kube-apiserver's tokenfile authenticator does.
pub fn parse_token_file(text: &str) -> Result<HashMap<String, UserInfo>, TokenFileError> {
    let mut out = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        let f = csv_fields(line, i + 1)?;
        if f.len() < 3 {
            return Err(TokenFileError::TooFewColumns { line: i + 1, found: f.len() });
        }
        if f[0].is_empty() {
            tracing::warn!(line = i + 1, "empty token in the token file; skipped");
            continue;
        }
        let groups = f.get(3).map(|g| g.split(',').map(str::to_string).collect::<Vec<_>>()).unwrap_or_default();
        out.insert(f[0].clone(), UserInfo::authenticated(&f[1], &f[2], groups));
    }
    Ok(out)
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum CertError {
    #[error("the client certificate cannot be parsed: {0}")]
    Parse(String),
    #[error("the client certificate's subject has no common name")]
    NoCommonName,
}

/// The user a verified client certificate stands for: subject CN is the name, every O a
/// group (kubeadm's admin certificate: CN=kubernetes-admin, O=system:masters).
pub fn user_from_cert(der: &[u8]) -> Result<UserInfo, CertError> {
    use x509_cert::der::Decode;
    const CN: &str = "2.5.4.3";
    const O: &str = "2.5.4.10";
    let cert = x509_cert::Certificate::from_der(der).map_err(|e| CertError::Parse(e.to_string()))?;
    let mut name = None;
    let mut groups = Vec::new();
    for rdn in cert.tbs_certificate.subject.0.iter() {
        for atv in rdn.0.iter() {
            // UTF8String, PrintableString and IA5String all carry the text as their content.
            let text = String::from_utf8_lossy(atv.value.value()).into_owned();
            match atv.oid.to_string().as_str() {
                CN => name = Some(text),
                O => groups.push(text),
                _ => {}
            }
        }
    }
    let name = name.filter(|n| !n.is_empty()).ok_or(CertError::NoCommonName)?;
    Ok(UserInfo::authenticated(&name, "", groups))
}

/// Who is asking, from the connection's verified certificate or the request's token.
pub struct Authenticator {
    pub tokens: HashMap<String, UserInfo>,
    /// None: ServiceAccount tokens are neither issued nor accepted.
    pub service_accounts: Option<std::sync::Arc<super::tokens::TokenIssuer>>,
}

/// An authenticated caller; a ServiceAccount token's claims still need the account to
/// exist with the token's uid (a store read the caller makes).
#[derive(Debug)]
pub struct Authenticated {
    pub user: UserInfo,
    pub service_account: Option<super::tokens::Claims>,
}

impl From<UserInfo> for Authenticated {
    fn from(user: UserInfo) -> Self {
        Authenticated { user, service_account: None }
    }
}

impl Authenticator {
    /// A certificate wins over a token; a token that is not in the file is a 401, as is
    /// an Authorization header of another scheme; no credentials at all is anonymous.
    pub fn authenticate(&self, headers: &HeaderMap, cert_user: Option<&UserInfo>) -> Result<Authenticated, ApiError> {
        if let Some(u) = cert_user {
            return Ok(u.clone().into());
        }
        let Some(auth) = headers.get(header::AUTHORIZATION) else { return Ok(UserInfo::anonymous().into()) };
        let token = auth.to_str().ok().and_then(|v| v.strip_prefix("Bearer ")).map(str::trim).unwrap_or("");
        if token.is_empty() {
            return Err(ApiError::unauthorized());
        }
        // Compare every entry without early exit so timing says little about the token.
        let mut found = None;
        for (t, u) in &self.tokens {
            if constant_time_eq(t.as_bytes(), token.as_bytes()) {
                found = Some(u);
            }
        }
        if let Some(u) = found {
            return Ok(u.clone().into());
        }
        match &self.service_accounts {
            Some(issuer) if super::tokens::looks_like_jwt(token) => match issuer.verify(token) {
                Ok(c) => Ok(Authenticated { user: super::tokens::user_of(&c), service_account: Some(c) }),
                Err(e) => {
                    tracing::debug!(error = %e, "bearer token refused");
                    Err(ApiError::unauthorized())
                }
            },
            _ => Err(ApiError::unauthorized()),
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// What an `Impersonate-*` request asks to become.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Impersonation {
    pub user: String,
    pub groups: Vec<String>,
    pub uid: Option<String>,
}

/// The impersonation headers, if any; groups or a uid without a user is a 400.
pub fn impersonation(headers: &HeaderMap) -> Result<Option<Impersonation>, ApiError> {
    let all = |h: &str| headers.get_all(h).iter().filter_map(|v| v.to_str().ok()).map(str::to_string).collect::<Vec<_>>();
    let user = all("impersonate-user").into_iter().next();
    let groups = all("impersonate-group");
    let uid = all("impersonate-uid").into_iter().next();
    match user {
        Some(user) if !user.is_empty() => Ok(Some(Impersonation { user, groups, uid })),
        _ if !groups.is_empty() || uid.is_some() => Err(ApiError::bad_request("requested [impersonation of groups or uid] without impersonating a user")),
        _ => Ok(None),
    }
}

/// The checks an impersonation needs (verb `impersonate` on users or service accounts,
/// groups and uids), in the order the real filter makes them.
pub fn impersonation_checks(imp: &Impersonation) -> Vec<Attributes> {
    let mut out = Vec::new();
    let user = match imp.user.strip_prefix("system:serviceaccount:").and_then(|r| r.split_once(':')) {
        Some((ns, name)) => Attributes::resource("impersonate", "", "serviceaccounts", ns, name),
        None => Attributes::resource("impersonate", "", "users", "", &imp.user),
    };
    out.push(user);
    for g in &imp.groups {
        out.push(Attributes::resource("impersonate", "", "groups", "", g));
    }
    if let Some(u) = &imp.uid {
        out.push(Attributes::resource("impersonate", "authentication.k8s.io", "uids", "", u));
    }
    out
}

/// The user an allowed impersonation yields: the groups asked for, plus
/// `system:authenticated` (or `system:unauthenticated` for the anonymous user), plus a
/// service account's groups when none were asked for.
pub fn impersonated_user(imp: &Impersonation) -> UserInfo {
    let mut groups = imp.groups.clone();
    if groups.is_empty() {
        if let Some((ns, _)) = imp.user.strip_prefix("system:serviceaccount:").and_then(|r| r.split_once(':')) {
            groups.push("system:serviceaccounts".into());
            groups.push(format!("system:serviceaccounts:{ns}"));
        }
    }
    if imp.user == rbac::ANONYMOUS {
        if !groups.iter().any(|g| g == rbac::UNAUTHENTICATED) {
            groups.push(rbac::UNAUTHENTICATED.into());
        }
    } else if !groups.iter().any(|g| g == rbac::AUTHENTICATED || g == rbac::UNAUTHENTICATED) {
        groups.push(rbac::AUTHENTICATED.into());
    }
    UserInfo { name: imp.user.clone(), uid: imp.uid.clone().unwrap_or_default(), groups, ..Default::default() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn token_file_like_kube_apiserver() {
        let f = "t1,admin,uid-1,\"system:masters,ops\"\n\n# comment\nt2,bob,uid-2\n,nobody,uid-3\n";
        let m = parse_token_file(f).unwrap();
        assert_eq!(m["t1"], UserInfo { name: "admin".into(), uid: "uid-1".into(), groups: vec!["system:masters".into(), "ops".into(), "system:authenticated".into()], ..Default::default() });
        assert_eq!(m["t2"].groups, vec!["system:authenticated".to_string()]);
        assert_eq!(m.len(), 2);
        assert_eq!(parse_token_file("t,u\n"), Err(TokenFileError::TooFewColumns { line: 1, found: 2 }));
        assert_eq!(parse_token_file("t,u,i,\"g\n"), Err(TokenFileError::Unterminated { line: 1 }));
        assert_eq!(csv_fields("a, \"b \"\"c\"\"\",d", 1).unwrap(), vec!["a", "b \"c\"", "d"]);
    }

    #[test]
    fn tokens_and_anonymous() {
        let a = Authenticator { tokens: parse_token_file("good,alice,a1,devs").unwrap(), service_accounts: None };
        let mut h = HeaderMap::new();
        assert_eq!(a.authenticate(&h, None).unwrap().user, UserInfo::anonymous());
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer good"));
        let u = a.authenticate(&h, None).unwrap().user;
        assert_eq!((u.name.as_str(), u.groups.clone()), ("alice", vec!["devs".to_string(), "system:authenticated".to_string()]));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer bad"));
        assert_eq!(a.authenticate(&h, None).unwrap_err().code, 401);
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic eDp5"));
        assert_eq!(a.authenticate(&h, None).unwrap_err().code, 401);
        let cert_user = UserInfo::authenticated("carol", "", []);
        assert_eq!(a.authenticate(&h, Some(&cert_user)).unwrap().user.name, "carol");
    }

    #[test]
    fn certificate_subjects() {
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(rcgen::DnType::CommonName, "kubernetes-admin");
        p.distinguished_name.push(rcgen::DnType::OrganizationName, "system:masters");
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = p.self_signed(&key).unwrap();
        let u = user_from_cert(cert.der()).unwrap();
        assert_eq!(u.name, "kubernetes-admin");
        assert_eq!(u.groups, vec!["system:masters".to_string(), "system:authenticated".to_string()]);
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.distinguished_name.push(rcgen::DnType::OrganizationName, "x");
        let cert = p.self_signed(&key).unwrap();
        assert_eq!(user_from_cert(cert.der()), Err(CertError::NoCommonName));
        assert!(matches!(user_from_cert(b"junk"), Err(CertError::Parse(_))));
    }

    #[test]
    fn impersonating() {
        let mut h = HeaderMap::new();
        assert_eq!(impersonation(&h).unwrap(), None);
        h.append("impersonate-group", HeaderValue::from_static("g1"));
        assert_eq!(impersonation(&h).unwrap_err().code, 400);
        h.insert("impersonate-user", HeaderValue::from_static("alice"));
        h.append("impersonate-group", HeaderValue::from_static("g2"));
        let imp = impersonation(&h).unwrap().unwrap();
        assert_eq!(imp.groups, vec!["g1".to_string(), "g2".to_string()]);
        let checks = impersonation_checks(&imp);
        assert_eq!(checks.iter().map(|c| (c.resource.as_str(), c.name.as_str())).collect::<Vec<_>>(), vec![("users", "alice"), ("groups", "g1"), ("groups", "g2")]);
        assert_eq!(impersonated_user(&imp).groups, vec!["g1", "g2", "system:authenticated"]);
        let sa = Impersonation { user: "system:serviceaccount:x:bot".into(), ..Default::default() };
        assert_eq!(impersonation_checks(&sa)[0], Attributes::resource("impersonate", "", "serviceaccounts", "x", "bot"));
        assert_eq!(impersonated_user(&sa).groups, vec!["system:serviceaccounts", "system:serviceaccounts:x", "system:authenticated"]);
        let anon = Impersonation { user: "system:anonymous".into(), ..Default::default() };
        assert_eq!(impersonated_user(&anon).groups, vec!["system:unauthenticated"]);
    }
}
