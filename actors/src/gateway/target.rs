//! What a request path names below `/api/v1` or `/apis/<g>/<v>`: a collection, an
//! object, or one of its subresources. Pure parsing, shared by the router and the fuzz
//! tests.

use super::status::ApiError;
use schema::registry::{self, ResourceInfo};

/// What a request path names below `/api/v1` or `/apis/<g>/<v>`.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    /// `ns` None: cluster-scoped, or all namespaces for a namespaced resource.
    Collection { res: &'static ResourceInfo, ns: Option<String> },
    Object { res: &'static ResourceInfo, ns: Option<String>, name: String },
    Sub { res: &'static ResourceInfo, ns: Option<String>, name: String, sub: String },
}

pub fn parse_target(group: &str, version: &str, rest: &[&str]) -> Result<Target, ApiError> {
    let res = |p: &str| registry::by_plural(group, version, p);
    let nf = ApiError::no_resource;
    let namespaced = |p: &str| res(p).filter(|r| r.namespaced);
    let cluster = |p: &str| res(p).filter(|r| !r.namespaced);
    let has_sub = |r: &ResourceInfo, s: &str| r.subresources.contains(&s);
    let t = match rest {
        [p] => Target::Collection { res: res(p).ok_or_else(nf)?, ns: None },
        [p, name] => Target::Object { res: cluster(p).ok_or_else(nf)?, ns: None, name: name.to_string() },
        ["namespaces", ns, p] if namespaced(p).is_some() => Target::Collection { res: namespaced(p).ok_or_else(nf)?, ns: Some(ns.to_string()) },
        [p, name, sub] => {
            let r = cluster(p).filter(|r| has_sub(r, sub)).ok_or_else(nf)?;
            Target::Sub { res: r, ns: None, name: name.to_string(), sub: sub.to_string() }
        }
        ["namespaces", ns, p, name] => Target::Object { res: namespaced(p).ok_or_else(nf)?, ns: Some(ns.to_string()), name: name.to_string() },
        ["namespaces", ns, p, name, sub] => {
            let r = namespaced(p).filter(|r| has_sub(r, sub)).ok_or_else(nf)?;
            Target::Sub { res: r, ns: Some(ns.to_string()), name: name.to_string(), sub: sub.to_string() }
        }
        _ => return Err(nf()),
    };
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        let t = parse_target("", "v1", &["namespaces", "demo", "pods", "p", "log"]).unwrap();
        assert!(matches!(t, Target::Sub { res, ref sub, .. } if res.plural == "pods" && sub == "log"));
        assert!(matches!(parse_target("", "v1", &["pods"]).unwrap(), Target::Collection { ns: None, .. }));
        assert!(matches!(parse_target("", "v1", &["namespaces", "demo"]).unwrap(), Target::Object { res, .. } if res.plural == "namespaces"));
        assert!(matches!(parse_target("", "v1", &["namespaces", "demo", "status"]).unwrap(), Target::Sub { res, .. } if res.plural == "namespaces"));
        assert!(matches!(parse_target("", "v1", &["namespaces", "demo", "pods"]).unwrap(), Target::Collection { ns: Some(_), .. }));
        assert!(matches!(parse_target("", "v1", &["nodes", "n1"]).unwrap(), Target::Object { .. }));
        assert!(matches!(parse_target("apps", "v1", &["namespaces", "d", "deployments", "w", "scale"]).unwrap(), Target::Sub { .. }));
        assert!(parse_target("", "v1", &["pods", "p"]).is_err());
        assert!(parse_target("", "v1", &["namespaces", "d", "nodes"]).is_err());
        assert!(parse_target("", "v1", &["namespaces", "d", "pods", "p", "proxy"]).is_err());
        assert!(parse_target("", "v1", &["nope"]).is_err());
        assert!(parse_target("", "v1", &["a", "b", "c", "d", "e", "f"]).is_err());
    }
}

