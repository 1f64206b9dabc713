//! Kubernetes resource quantities ("100m", "2", "128Mi", "1G") as integers the scheduler
//! can add: CPU in millicores, everything else in whole units (bytes for memory).

/// CPU in millicores: "250m" → 250, "2" → 2000, "0.5" → 500.
pub fn cpu_millis(q: &str) -> Option<u64> {
    let q = q.trim();
    if let Some(m) = q.strip_suffix('m') {
        return m.parse::<f64>().ok().filter(|v| *v >= 0.0).map(|v| v.ceil() as u64);
    }
    if let Some(n) = q.strip_suffix('u') {
        return n.parse::<f64>().ok().filter(|v| *v >= 0.0).map(|v| (v / 1000.0).ceil() as u64);
    }
    q.parse::<f64>().ok().filter(|v| *v >= 0.0).map(|v| (v * 1000.0).ceil() as u64)
}

/// A plain quantity in units: "128Mi" → 134217728, "1G" → 1e9, "1500" → 1500.
pub fn value(q: &str) -> Option<u64> {
    let q = q.trim();
    const SUFFIXES: &[(&str, f64)] = &[
        ("Ki", 1024.0), ("Mi", 1048576.0), ("Gi", 1073741824.0), ("Ti", 1099511627776.0), ("Pi", 1125899906842624.0), ("Ei", 1152921504606846976.0),
        ("k", 1e3), ("M", 1e6), ("G", 1e9), ("T", 1e12), ("P", 1e15), ("E", 1e18), ("m", 1e-3),
    ];
    for (s, mul) in SUFFIXES {
        if let Some(n) = q.strip_suffix(s) {
            return n.parse::<f64>().ok().filter(|v| *v >= 0.0).map(|v| (v * mul).ceil() as u64);
        }
    }
    // Exponent forms such as "1e3" parse directly.
    q.parse::<f64>().ok().filter(|v| *v >= 0.0).map(|v| v.ceil() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_usual_forms() {
        assert_eq!(cpu_millis("100m"), Some(100));
        assert_eq!(cpu_millis("2"), Some(2000));
        assert_eq!(cpu_millis("0.5"), Some(500));
        assert_eq!(value("128Mi"), Some(134_217_728));
        assert_eq!(value("1G"), Some(1_000_000_000));
        assert_eq!(value("4194304Ki"), Some(4 << 30));
        assert_eq!(value("junk"), None);
    }
}
