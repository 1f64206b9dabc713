//! Joining a node with a bootstrap token, as kubeadm's kubelets do: the token
//! `<id>.<secret>` (6 and 16 characters of `[a-z0-9]`) is kept as the Secret
//! `bootstrap-token-<id>` in kube-system; a joining agent presents it with the public half
//! of an nkey it made itself, and gets that key accepted as its node's identity. The seed
//! never travels, so the join answer carries nothing secret.

use serde::{Deserialize, Serialize};

pub const TOKEN_SECRET_TYPE: &str = "bootstrap.kubernetes.io/token";
pub const TOKEN_NAMESPACE: &str = "kube-system";
const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";

/// The nodes that joined and the public nkey each joined with, kept as one Secret in
/// kube-system (data: node name → key): every hub server's wrapper, and `up`, admits
/// exactly these, and a leaf site's wrapper asks the hub for them.
pub const JOINED_SECRET: &str = "flotilla-joined-nodes";
pub const JOINED_SECRET_TYPE: &str = "flotilla.dev/joined-nodes";
pub type JoinedNodes = std::collections::BTreeMap<String, String>;

pub fn secret_name(id: &str) -> String {
    format!("bootstrap-token-{id}")
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinRequest {
    pub token: String,
    pub node: String,
    /// The node's own nkey, public half.
    pub nkey: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinReply {
    /// The inbox prefix the node's identity may use.
    pub inbox: String,
    /// The cluster CA (PEM), when the cluster has one.
    pub ca_pem: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum JoinError {
    #[error("the join token is malformed: expected <6 characters>.<16 characters> of [a-z0-9]")]
    Malformed,
    #[error("the join token {0:?} is unknown (create one with `flotilla join-token create`)")]
    Unknown(String),
    #[error("the join token {id:?} expired at {at}")]
    Expired { id: String, at: String },
    #[error("node {0:?} has joined already and its Node exists: delete it first (kubectl delete node {0})")]
    AlreadyJoined(String),
    #[error("the node name {0:?} cannot be joined: {1}")]
    BadName(String, String),
    #[error("joining failed: {0}")]
    Internal(String),
}

fn well_formed(s: &str, n: usize) -> bool {
    s.len() == n && s.bytes().all(|b| ALPHABET.contains(&b))
}

/// The token's id and secret.
pub fn parse_token(token: &str) -> Result<(&str, &str), JoinError> {
    match token.trim().split_once('.') {
        Some((id, secret)) if well_formed(id, 6) && well_formed(secret, 16) => Ok((id, secret)),
        _ => Err(JoinError::Malformed),
    }
}

/// A new token from 22 random bytes (any source; each byte picks one character).
pub fn token_from(random: &[u8; 22]) -> String {
    let c = |b: &u8| ALPHABET[*b as usize % ALPHABET.len()] as char;
    let id: String = random[..6].iter().map(c).collect();
    let secret: String = random[6..].iter().map(c).collect();
    format!("{id}.{secret}")
}

/// What the token's Secret holds, decoded from its data.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoredToken {
    pub secret: String,
    /// RFC 3339; none never expires.
    pub expiration: Option<String>,
    pub type_: String,
}

/// Whether `token` may join now, given its Secret (None: there is none).
pub fn check(token: &str, stored: Option<&StoredToken>, now: jiff::Timestamp) -> Result<(), JoinError> {
    let (id, secret) = parse_token(token)?;
    let unknown = || JoinError::Unknown(id.to_string());
    let Some(s) = stored else { return Err(unknown()) };
    // A wrong secret reads as unknown: the answer tells a guesser nothing.
    if s.type_ != TOKEN_SECRET_TYPE || s.secret != secret {
        return Err(unknown());
    }
    if let Some(at) = &s.expiration {
        let t: jiff::Timestamp = at.parse().map_err(|_| JoinError::Expired { id: id.into(), at: at.clone() })?;
        if t <= now {
            return Err(JoinError::Expired { id: id.into(), at: at.clone() });
        }
    }
    Ok(())
}

/// Adds `node` with `nkey` to the joined list. A name that joined before may join again
/// (a new key replaces the old) only once its Node is gone, as kubeadm refuses a second
/// node of an existing name.
pub fn admit(joined: &mut JoinedNodes, node: &str, nkey: &str, node_exists: bool) -> Result<bool, JoinError> {
    match joined.get(node) {
        Some(k) if k == nkey => Ok(false),
        Some(_) if node_exists => Err(JoinError::AlreadyJoined(node.to_string())),
        _ => {
            joined.insert(node.to_string(), nkey.to_string());
            Ok(true)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(exp: Option<&str>) -> StoredToken {
        StoredToken { secret: "0123456789abcdef".into(), expiration: exp.map(Into::into), type_: TOKEN_SECRET_TYPE.into() }
    }

    #[test]
    fn tokens_are_kubeadm_shaped() {
        let t = token_from(&[7; 22]);
        assert_eq!(t.len(), 23);
        assert!(parse_token(&t).is_ok());
        assert_eq!(parse_token("abc.def"), Err(JoinError::Malformed));
        assert_eq!(parse_token("ABCDEF.0123456789abcdef"), Err(JoinError::Malformed));
        assert_eq!(secret_name("abcdef"), "bootstrap-token-abcdef");
    }

    #[test]
    fn unknown_wrong_and_expired_tokens_are_refused() {
        let now: jiff::Timestamp = "2026-01-02T00:00:00Z".parse().unwrap();
        let tok = "abcdef.0123456789abcdef";
        assert_eq!(check(tok, Some(&stored(Some("2026-01-03T00:00:00Z"))), now), Ok(()));
        assert_eq!(check(tok, Some(&stored(None)), now), Ok(()));
        assert_eq!(check(tok, None, now), Err(JoinError::Unknown("abcdef".into())));
        assert_eq!(check("abcdef.ffffffffffffffff", Some(&stored(None)), now), Err(JoinError::Unknown("abcdef".into())));
        let e = check(tok, Some(&stored(Some("2026-01-01T00:00:00Z"))), now).unwrap_err();
        assert_eq!(e.to_string(), "the join token \"abcdef\" expired at 2026-01-01T00:00:00Z");
    }

    #[test]
    fn a_joined_name_is_taken_while_its_node_exists() {
        let mut j = JoinedNodes::new();
        assert_eq!(admit(&mut j, "far", "UA", false), Ok(true));
        assert_eq!(admit(&mut j, "far", "UA", true), Ok(false), "the same key again changes nothing");
        assert_eq!(admit(&mut j, "far", "UB", true), Err(JoinError::AlreadyJoined("far".into())));
        assert_eq!(admit(&mut j, "far", "UB", false), Ok(true));
        assert_eq!(j.get("far").map(String::as_str), Some("UB"));
    }
}
