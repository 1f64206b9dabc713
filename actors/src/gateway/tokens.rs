//! ServiceAccount tokens: `serviceaccounts/<name>/token` (TokenRequest, what `kubectl
//! create token` sends) signs a JWT with the cluster's service-account key, with the
//! claims kube-apiserver puts in one; the authenticator accepts such a token as
//! `system:serviceaccount:<ns>:<name>` while the account still exists with that uid.

use super::objects::{decode_body, read};
use super::status::ApiError;
use super::{json_response, AppState, Req};
use axum::http::StatusCode;
use axum::response::Response;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use schema::admission::Cause;
use schema::rbac::UserInfo;
use schema::registry::ResourceInfo;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// kube-apiserver's default for a TokenRequest without expirationSeconds: one hour.
pub const DEFAULT_EXPIRATION: i64 = 3600;
const MIN_EXPIRATION: i64 = 600;

/// The key pair and issuer (`--service-account-signing-key-file`,
/// `--service-account-key-file`, `--service-account-issuer`), PEM: an ECDSA P-256 key.
pub struct ServiceAccountKeys {
    pub signing_key_pem: String,
    pub public_key_pem: String,
    pub issuer: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ObjectRef {
    pub name: String,
    pub uid: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct KubernetesClaims {
    pub namespace: String,
    pub serviceaccount: ObjectRef,
    /// The object a bound token lives no longer than (`kubectl create token
    /// --bound-object-kind Pod|Secret|Node`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<ObjectRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<ObjectRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<ObjectRef>,
}

/// What a token may be bound to: (kind, plural, namespaced).
const BINDABLE: &[(&str, &str, bool)] = &[("Pod", "pods", true), ("Secret", "secrets", true), ("Node", "nodes", false)];

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Claims {
    pub aud: Vec<String>,
    pub exp: i64,
    pub iat: i64,
    pub iss: String,
    pub jti: String,
    #[serde(rename = "kubernetes.io")]
    pub kubernetes: KubernetesClaims,
    pub nbf: i64,
    pub sub: String,
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("service account key: {0}")]
    Key(jsonwebtoken::errors::Error),
    #[error("invalid service account token: {0}")]
    Invalid(jsonwebtoken::errors::Error),
    #[error("the token's subject does not match its kubernetes.io claims")]
    Subject,
}

pub struct TokenIssuer {
    enc: EncodingKey,
    dec: DecodingKey,
    /// The header's `kid`, as kube-apiserver derives it: base64url(SHA-256(SPKI DER)).
    kid: String,
    pub issuer: String,
}

fn key_id(public_pem: &str) -> String {
    use base64::Engine;
    use sha2::Digest;
    let b64: String = public_pem.lines().filter(|l| !l.starts_with("-----")).map(str::trim).collect();
    let der = base64::engine::general_purpose::STANDARD.decode(b64).unwrap_or_default();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(der))
}

impl TokenIssuer {
    pub fn new(k: &ServiceAccountKeys) -> Result<TokenIssuer, TokenError> {
        Ok(TokenIssuer {
            enc: EncodingKey::from_ec_pem(k.signing_key_pem.as_bytes()).map_err(TokenError::Key)?,
            dec: DecodingKey::from_ec_pem(k.public_key_pem.as_bytes()).map_err(TokenError::Key)?,
            kid: key_id(&k.public_key_pem),
            issuer: k.issuer.clone(),
        })
    }

    /// The API's own audience: kube-apiserver's --api-audiences defaults to the issuer.
    pub fn audiences(&self) -> Vec<String> {
        vec![self.issuer.clone()]
    }

    #[allow(clippy::too_many_arguments)]
    pub fn issue(&self, ns: &str, name: &str, uid: &str, aud: Vec<String>, seconds: i64, now: i64, bound: Option<(&str, ObjectRef)>) -> Result<String, TokenError> {
        let mut kubernetes = KubernetesClaims { namespace: ns.into(), serviceaccount: ObjectRef { name: name.into(), uid: uid.into() }, pod: None, secret: None, node: None };
        match bound {
            Some(("Pod", r)) => kubernetes.pod = Some(r),
            Some(("Secret", r)) => kubernetes.secret = Some(r),
            Some(("Node", r)) => kubernetes.node = Some(r),
            _ => {}
        }
        let claims = Claims {
            aud,
            exp: now + seconds,
            iat: now,
            iss: self.issuer.clone(),
            jti: uuid::Uuid::new_v4().to_string(),
            kubernetes,
            nbf: now,
            sub: format!("system:serviceaccount:{ns}:{name}"),
        };
        let header = Header { kid: Some(self.kid.clone()), ..Header::new(Algorithm::ES256) };
        jsonwebtoken::encode(&header, &claims, &self.enc).map_err(TokenError::Key)
    }

    /// Checks signature, issuer, audience, expiry and not-before.
    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        let mut v = Validation::new(Algorithm::ES256);
        v.set_issuer(&[&self.issuer]);
        v.set_audience(&self.audiences());
        v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        v.validate_nbf = true;
        let c = jsonwebtoken::decode::<Claims>(token, &self.dec, &v).map_err(TokenError::Invalid)?.claims;
        if c.sub != format!("system:serviceaccount:{}:{}", c.kubernetes.namespace, c.kubernetes.serviceaccount.name) {
            return Err(TokenError::Subject);
        }
        Ok(c)
    }
}

/// Whether a bearer token is shaped like a JWT (three base64url parts).
pub fn looks_like_jwt(t: &str) -> bool {
    t.split('.').count() == 3 && t.starts_with("eyJ")
}

/// The user a verified token stands for.
pub fn user_of(c: &Claims) -> UserInfo {
    let ns = &c.kubernetes.namespace;
    let mut u = UserInfo::authenticated(&c.sub, &c.kubernetes.serviceaccount.uid, vec!["system:serviceaccounts".to_string(), format!("system:serviceaccounts:{ns}")]);
    u.extra.insert("authentication.kubernetes.io/credential-id".into(), vec![format!("JTI={}", c.jti)]);
    for (what, r) in [("pod", &c.kubernetes.pod), ("node", &c.kubernetes.node)] {
        if let Some(r) = r {
            u.extra.insert(format!("authentication.kubernetes.io/{what}-name"), vec![r.name.clone()]);
            u.extra.insert(format!("authentication.kubernetes.io/{what}-uid"), vec![r.uid.clone()]);
        }
    }
    u
}

/// Whether the object `plural`/`name` exists as the one with `uid`.
async fn exists_as(st: &AppState, plural: &str, ns: Option<&str>, name: &str, uid: &str) -> Result<bool, ApiError> {
    let res = schema::registry::by_plural("", "v1", plural).ok_or_else(|| ApiError::internal(format!("{plural} are not registered")))?;
    let cur = read(st, res, ns, name).await?;
    Ok(cur.is_some_and(|(v, _)| v.pointer("/metadata/uid").and_then(Value::as_str) == Some(uid)))
}

/// Whether the account a token names, and the object it is bound to, still exist as
/// the same objects.
pub async fn token_is_current(st: &AppState, c: &Claims) -> Result<bool, ApiError> {
    let (k, ns) = (&c.kubernetes, Some(c.kubernetes.namespace.as_str()));
    if !exists_as(st, "serviceaccounts", ns, &k.serviceaccount.name, &k.serviceaccount.uid).await? {
        return Ok(false);
    }
    for (kind, r) in [("Pod", &k.pod), ("Secret", &k.secret), ("Node", &k.node)] {
        let Some(r) = r else { continue };
        let Some((_, plural, namespaced)) = BINDABLE.iter().find(|b| b.0 == kind) else { continue };
        if !exists_as(st, plural, if *namespaced { ns } else { None }, &r.name, &r.uid).await? {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The object `spec.boundObjectRef` names, checked as the real server does.
async fn bound_object(st: &AppState, ns: &str, r: &Value) -> Result<(&'static str, ObjectRef), ApiError> {
    let s = |k: &str| r.get(k).and_then(Value::as_str).unwrap_or("");
    let (kind, api_version, name, want_uid) = (s("kind"), s("apiVersion"), s("name"), s("uid"));
    let gvk = |av: &str| if av.contains('/') { format!("{av}, Kind={kind}") } else { format!("/{av}, Kind={kind}") };
    let Some((kind, plural, namespaced)) = BINDABLE.iter().find(|b| b.0 == kind && (api_version.is_empty() || api_version == "v1")) else {
        return Err(ApiError::bad_request(format!("cannot bind token to object of type {}", gvk(api_version))));
    };
    let res = schema::registry::by_plural("", "v1", plural).ok_or_else(|| ApiError::internal(format!("{plural} are not registered")))?;
    let (obj, _) = read(st, res, if *namespaced { Some(ns) } else { None }, name).await?.ok_or_else(|| ApiError::not_found(res, name))?;
    let uid = obj.pointer("/metadata/uid").and_then(Value::as_str).unwrap_or("").to_string();
    if !want_uid.is_empty() && want_uid != uid {
        let why = format!("the UID in the bound object reference ({want_uid}) does not match the UID in record. The object might have been deleted and then recreated");
        return Err(ApiError::conflict_msg(res, name, &why));
    }
    Ok((kind, ObjectRef { name: name.into(), uid }))
}

fn invalid(name: &str, field: &str, msg: String) -> ApiError {
    ApiError::invalid("TokenRequest", "authentication.k8s.io", name, &[Cause { reason: "FieldValueInvalid".into(), field: field.into(), message: msg }])
}

/// POST serviceaccounts/<name>/token.
pub async fn create(st: &AppState, res: &ResourceInfo, ns: Option<&str>, name: &str, req: &Req) -> Result<Response, ApiError> {
    let issuer = st.authn.service_accounts.as_ref().ok_or_else(|| ApiError::new(404, "NotFound", "the server could not find the requested resource: service account tokens are not configured"))?;
    let body = decode_body(req)?;
    let ns = ns.unwrap_or("");
    let (sa, _) = read(st, res, Some(ns), name).await?.ok_or_else(|| ApiError::not_found(res, name))?;
    let uid = sa.pointer("/metadata/uid").and_then(Value::as_str).unwrap_or("").to_string();
    let seconds = body.pointer("/spec/expirationSeconds").and_then(Value::as_i64).unwrap_or(DEFAULT_EXPIRATION);
    if seconds < MIN_EXPIRATION {
        return Err(invalid(name, "spec.expirationSeconds", format!("Invalid value: {seconds}: may not specify a duration less than 10 minutes")));
    }
    if seconds > 1 << 32 {
        return Err(invalid(name, "spec.expirationSeconds", format!("Invalid value: {seconds}: may not specify a duration larger than 2^32 seconds")));
    }
    let aud: Vec<String> = body.pointer("/spec/audiences").and_then(Value::as_array).map(|a| a.iter().filter_map(Value::as_str).map(str::to_string).collect()).filter(|a: &Vec<String>| !a.is_empty()).unwrap_or_else(|| issuer.audiences());
    let bound = match body.pointer("/spec/boundObjectRef").filter(|r| r.is_object()) {
        Some(r) => Some(bound_object(st, ns, r).await?),
        None => None,
    };
    let bound_ref = bound.as_ref().map(|(kind, r)| json!({"kind": kind, "apiVersion": "v1", "name": r.name, "uid": r.uid}));
    let now = jiff::Timestamp::now().as_second();
    let token = issuer.issue(ns, name, &uid, aud.clone(), seconds, now, bound).map_err(|e| ApiError::internal(e.to_string()))?;
    let expires = jiff::Timestamp::from_second(now + seconds).map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()).unwrap_or_default();
    let out = json!({"kind": "TokenRequest", "apiVersion": "authentication.k8s.io/v1",
        "metadata": {"name": name, "namespace": ns, "creationTimestamp": schema::object::now_string()},
        "spec": {"audiences": aud, "expirationSeconds": seconds, "boundObjectRef": bound_ref},
        "status": {"token": token, "expirationTimestamp": expires}});
    Ok(json_response(StatusCode::CREATED, &out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn issuer() -> TokenIssuer {
        let k = rcgen::KeyPair::generate().unwrap();
        TokenIssuer::new(&ServiceAccountKeys { signing_key_pem: k.serialize_pem(), public_key_pem: k.public_key_pem(), issuer: "https://kubernetes.default.svc.cluster.local".into() }).unwrap()
    }

    #[test]
    fn issues_and_verifies_like_the_real_server() {
        let i = issuer();
        let now = jiff::Timestamp::now().as_second();
        let t = i.issue("demo", "bot", "u1", i.audiences(), 3600, now, None).unwrap();
        assert!(looks_like_jwt(&t));
        let header = jsonwebtoken::decode_header(&t).unwrap();
        assert_eq!((header.alg, header.kid.map(|k| k.len())), (Algorithm::ES256, Some(43)));
        let c = i.verify(&t).unwrap();
        assert_eq!(c.sub, "system:serviceaccount:demo:bot");
        assert_eq!(c.kubernetes.serviceaccount, ObjectRef { name: "bot".into(), uid: "u1".into() });
        use base64::Engine;
        let raw: Value = serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(t.split('.').nth(1).unwrap()).unwrap()).unwrap();
        assert_eq!(raw["kubernetes.io"].as_object().unwrap().keys().collect::<Vec<_>>(), ["namespace", "serviceaccount"]);
        let u = user_of(&c);
        assert_eq!(u.groups, vec!["system:serviceaccounts", "system:serviceaccounts:demo", "system:authenticated"]);
        assert_eq!(u.extra["authentication.kubernetes.io/credential-id"], vec![format!("JTI={}", c.jti)]);
        // Expired, for another audience, tampered, or signed by another key: refused.
        assert!(i.verify(&i.issue("demo", "bot", "u1", i.audiences(), 600, now - 7200, None).unwrap()).is_err());
        assert!(i.verify(&i.issue("demo", "bot", "u1", vec!["vault".into()], 600, now, None).unwrap()).is_err());
        let mut parts: Vec<String> = t.split('.').map(str::to_string).collect();
        parts[1] = parts[1].replacen('e', "f", 1);
        assert!(i.verify(&parts.join(".")).is_err());
        assert!(issuer().verify(&t).is_err());
        // A pod-bound token names its pod, and its user carries the pod as extra.
        let b = i.issue("demo", "bot", "u1", i.audiences(), 600, now, Some(("Pod", ObjectRef { name: "p".into(), uid: "pu".into() }))).unwrap();
        let bc = i.verify(&b).unwrap();
        assert_eq!(bc.kubernetes.pod, Some(ObjectRef { name: "p".into(), uid: "pu".into() }));
        assert_eq!(user_of(&bc).extra["authentication.kubernetes.io/pod-name"], vec!["p".to_string()]);
    }
}
