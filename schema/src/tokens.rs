//! A node agent's request for a pod's ServiceAccount token (the kubelet's TokenRequest
//! for a projected `serviceAccountToken` volume source) and the gateway's answer, on
//! `subjects::TOKEN_REQUEST`, MessagePack-encoded.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenRequest {
    pub namespace: String,
    pub service_account: String,
    /// The pod the token is bound to: it is no longer valid once the pod is gone.
    pub pod: String,
    pub pod_uid: String,
    /// Empty: the API server's own audience.
    pub audiences: Vec<String>,
    pub expiration_seconds: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum TokenReply {
    /// The JWT and when it expires (Unix seconds).
    Token { token: String, expires_at: i64 },
    /// Why none was issued, in the API server's words.
    Refused(String),
}

/// kube's minimum for a projected token's expirationSeconds (the API validates it too).
pub const MIN_EXPIRATION: i64 = 600;
/// The projected source's default expirationSeconds.
pub const DEFAULT_EXPIRATION: i64 = 3600;

/// When the kubelet asks again: at 80% of the token's life, or after 24 h, whichever is
/// first (its token manager's rule).
pub fn refresh_after(issued_at: i64, expires_at: i64) -> i64 {
    let life = (expires_at - issued_at).max(0);
    issued_at + (life * 4 / 5).min(24 * 3600)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_refreshed_at_four_fifths_of_their_life_or_a_day() {
        assert_eq!(refresh_after(1000, 1000 + 3600), 1000 + 2880);
        assert_eq!(refresh_after(0, 10 * 24 * 3600), 24 * 3600);
        assert_eq!(refresh_after(5, 5), 5);
    }

    #[test]
    fn requests_round_trip_the_bus_codec() {
        let r = TokenRequest { namespace: "ns".into(), service_account: "default".into(), pod: "p".into(), pod_uid: "u".into(), audiences: vec!["vault".into()], expiration_seconds: 3600 };
        let b = crate::codec::encode(&r).unwrap();
        assert_eq!(crate::codec::decode::<TokenRequest>(&b).unwrap(), r);
        let a = TokenReply::Token { token: "t".into(), expires_at: 9 };
        assert_eq!(crate::codec::decode::<TokenReply>(&crate::codec::encode(&a).unwrap()).unwrap(), a);
    }
}
