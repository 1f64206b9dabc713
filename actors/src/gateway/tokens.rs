//! ServiceAccount tokens: `serviceaccounts/<name>/token` (TokenRequest, what `kubectl
//! create token` sends) signs a JWT with the cluster's service-account key, with the
//! claims kube-apiserver puts in one; the authenticator accepts such a token as
//! `system:serviceaccount:<ns>:<name>` while the account still exists with that uid.

use super::handlers::{decode_body, read};
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
pub struct AccountRef {
    pub name: String,
    pub uid: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct KubernetesClaims {
    pub namespace: String,
    pub serviceaccount: AccountRef,
}

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

    pub fn issue(&self, ns: &str, name: &str, uid: &str, aud: Vec<String>, seconds: i64, now: i64) -> Result<String, TokenError> {
        let claims = Claims {
            aud,
            exp: now + seconds,
            iat: now,
            iss: self.issuer.clone(),
            jti: uuid::Uuid::new_v4().to_string(),
            kubernetes: KubernetesClaims { namespace: ns.into(), serviceaccount: AccountRef { name: name.into(), uid: uid.into() } },
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
    u
}

/// Whether the account a token names still exists as the same object.
pub async fn account_is_current(st: &AppState, c: &Claims) -> Result<bool, ApiError> {
    let res = schema::registry::by_plural("", "v1", "serviceaccounts").ok_or_else(|| ApiError::internal("serviceaccounts are not registered"))?;
    let cur = read(st, res, Some(&c.kubernetes.namespace), &c.kubernetes.serviceaccount.name).await?;
    Ok(cur.is_some_and(|(v, _)| v.pointer("/metadata/uid").and_then(Value::as_str) == Some(c.kubernetes.serviceaccount.uid.as_str())))
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
    let now = jiff::Timestamp::now().as_second();
    let token = issuer.issue(ns, name, &uid, aud.clone(), seconds, now).map_err(|e| ApiError::internal(e.to_string()))?;
    let expires = jiff::Timestamp::from_second(now + seconds).map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()).unwrap_or_default();
    let out = json!({"kind": "TokenRequest", "apiVersion": "authentication.k8s.io/v1",
        "metadata": {"name": name, "namespace": ns, "creationTimestamp": schema::object::now_string()},
        "spec": {"audiences": aud, "expirationSeconds": seconds, "boundObjectRef": body.pointer("/spec/boundObjectRef").cloned().unwrap_or(Value::Null)},
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
        let t = i.issue("demo", "bot", "u1", i.audiences(), 3600, now).unwrap();
        assert!(looks_like_jwt(&t));
        let header = jsonwebtoken::decode_header(&t).unwrap();
        assert_eq!((header.alg, header.kid.map(|k| k.len())), (Algorithm::ES256, Some(43)));
        let c = i.verify(&t).unwrap();
        assert_eq!(c.sub, "system:serviceaccount:demo:bot");
        assert_eq!(c.kubernetes.serviceaccount, AccountRef { name: "bot".into(), uid: "u1".into() });
        let u = user_of(&c);
        assert_eq!(u.groups, vec!["system:serviceaccounts", "system:serviceaccounts:demo", "system:authenticated"]);
        assert_eq!(u.extra["authentication.kubernetes.io/credential-id"], vec![format!("JTI={}", c.jti)]);
        // Expired, for another audience, tampered, or signed by another key: refused.
        assert!(i.verify(&i.issue("demo", "bot", "u1", i.audiences(), 600, now - 7200).unwrap()).is_err());
        assert!(i.verify(&i.issue("demo", "bot", "u1", vec!["vault".into()], 600, now).unwrap()).is_err());
        let mut parts: Vec<String> = t.split('.').map(str::to_string).collect();
        parts[1] = parts[1].replacen('e', "f", 1);
        assert!(i.verify(&parts.join(".")).is_err());
        assert!(issuer().verify(&t).is_err());
    }
}
