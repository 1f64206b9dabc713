//! How fresh a GET or LIST must be, from its `resourceVersion` and
//! `resourceVersionMatch` parameters, the way kube-apiserver reads them:
//! unset or "" is the most recent state (a linearizable read), "0" is any state (a
//! serializable read from whichever member answers), N is "not older than N", and
//! `resourceVersionMatch=Exact` asks for the state at exactly N.

use super::status::ApiError;
use schema::store::{Consistency, Revision};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    /// Everything acknowledged before the request.
    MostRecent,
    /// Any state at least this revision (0: any at all).
    NotOlderThan(Revision),
    /// The state at exactly this revision.
    Exact(Revision),
}

impl Freshness {
    /// Parses the request's parameters; a malformed or forbidden combination is a 400
    /// with kube-apiserver's wording.
    pub fn parse(rv: Option<&str>, rv_match: Option<&str>) -> Result<Freshness, ApiError> {
        let rv = rv.filter(|s| !s.is_empty());
        let rv_match = rv_match.filter(|s| !s.is_empty());
        let n = match rv {
            None => {
                if rv_match.is_some() {
                    return Err(ApiError::bad_request("resourceVersionMatch is forbidden unless resourceVersion is provided"));
                }
                return Ok(Freshness::MostRecent);
            }
            Some(s) => s.parse::<Revision>().map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {s:?}")))?,
        };
        match rv_match {
            None | Some("NotOlderThan") => Ok(Freshness::NotOlderThan(n)),
            Some("Exact") if n == 0 => Err(ApiError::bad_request("resourceVersionMatch \"Exact\" is forbidden for resourceVersion \"0\"")),
            Some("Exact") => Ok(Freshness::Exact(n)),
            Some(other) => Err(ApiError::bad_request(format!("resourceVersionMatch: unsupported value {other:?}: supported values: \"Exact\", \"NotOlderThan\""))),
        }
    }

    /// The read to try first: a serializable one when an older state may do (cheaper,
    /// any member answers), a linearizable one otherwise.
    pub fn first_read(&self) -> Consistency {
        match self {
            Freshness::MostRecent => Consistency::Linearizable,
            Freshness::NotOlderThan(_) | Freshness::Exact(_) => Consistency::Serializable,
        }
    }

    /// Judges a read taken at store revision `at`: `Ok(true)` serve it, `Ok(false)` read
    /// again linearizably (the member that answered was behind), `Err` the request cannot
    /// be served. There is no multi-version history: an exact revision older than the
    /// current state is gone (410, as after a compaction), a newer one not there yet (504).
    pub fn judge(&self, at: Revision, linearizable: bool) -> Result<bool, ApiError> {
        match *self {
            Freshness::MostRecent => Ok(true),
            Freshness::NotOlderThan(n) | Freshness::Exact(n) if at < n => {
                if linearizable {
                    Err(ApiError::new(504, "Timeout", format!("Too large resource version: {n}, current: {at}")))
                } else {
                    Ok(false)
                }
            }
            Freshness::NotOlderThan(_) => Ok(true),
            Freshness::Exact(n) if at == n => Ok(true),
            Freshness::Exact(n) => Err(ApiError::expired(format!("too old resource version: {n} ({at})"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_map_as_kubernetes_does() {
        assert_eq!(Freshness::parse(None, None).unwrap(), Freshness::MostRecent);
        assert_eq!(Freshness::parse(Some(""), None).unwrap(), Freshness::MostRecent);
        assert_eq!(Freshness::parse(Some("0"), None).unwrap(), Freshness::NotOlderThan(0));
        assert_eq!(Freshness::parse(Some("12"), Some("NotOlderThan")).unwrap(), Freshness::NotOlderThan(12));
        assert_eq!(Freshness::parse(Some("12"), Some("Exact")).unwrap(), Freshness::Exact(12));
        assert_eq!(Freshness::parse(None, Some("Exact")).unwrap_err().code, 400);
        assert_eq!(Freshness::parse(Some("0"), Some("Exact")).unwrap_err().code, 400);
        assert_eq!(Freshness::parse(Some("x"), None).unwrap_err().code, 400);
        assert_eq!(Freshness::parse(Some("3"), Some("Newest")).unwrap_err().code, 400);
        assert_eq!(Freshness::MostRecent.first_read(), Consistency::Linearizable);
        assert_eq!(Freshness::NotOlderThan(0).first_read(), Consistency::Serializable);
    }

    #[test]
    fn reads_are_judged_against_the_revision_asked_for() {
        assert_eq!(Freshness::NotOlderThan(0).judge(5, false).unwrap(), true);
        // A lagging member's answer is retried linearizably, and only then is it "too large".
        assert_eq!(Freshness::NotOlderThan(9).judge(5, false).unwrap(), false);
        assert_eq!(Freshness::NotOlderThan(9).judge(5, true).unwrap_err().code, 504);
        assert_eq!(Freshness::Exact(5).judge(5, false).unwrap(), true);
        assert_eq!(Freshness::Exact(4).judge(5, false).unwrap_err().code, 410);
        assert_eq!(Freshness::Exact(7).judge(5, false).unwrap(), false);
    }
}
