//! Object keys in the store: `<plural>/<namespace or _>/<name>`. Listing a resource is
//! a prefix scan on `<plural>/`, a namespace on `<plural>/<ns>/`.

use crate::subjects::NONE;

pub fn object(plural: &str, namespace: Option<&str>, name: &str) -> String {
    format!("{plural}/{}/{name}", namespace.filter(|n| !n.is_empty()).unwrap_or(NONE))
}

/// Prefix for listing: a whole resource (namespace None) or one namespace.
pub fn prefix(plural: &str, namespace: Option<&str>) -> String {
    match namespace.filter(|n| !n.is_empty()) {
        Some(ns) => format!("{plural}/{ns}/"),
        None => format!("{plural}/"),
    }
}

/// Splits a key back into (plural, namespace, name).
pub fn split(key: &str) -> Option<(&str, Option<&str>, &str)> {
    let mut it = key.splitn(3, '/');
    let plural = it.next()?;
    let ns = it.next()?;
    let name = it.next()?;
    Some((plural, if ns == NONE { None } else { Some(ns) }, name))
}

#[cfg(test)]
mod tests {
    #[test]
    fn round_trip() {
        let k = super::object("pods", Some("demo"), "web-1");
        assert_eq!(k, "pods/demo/web-1");
        assert_eq!(super::split(&k), Some(("pods", Some("demo"), "web-1")));
        assert_eq!(super::split(&super::object("nodes", None, "n1")), Some(("nodes", None, "n1")));
        assert_eq!(super::prefix("pods", None), "pods/");
    }
}
