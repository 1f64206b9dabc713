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


/// An exact quantity for arithmetic and printing (quota sums, LimitRange bounds): the
/// value in thousandths, and whether it was written with binary suffixes (Ki, Mi, …),
/// which decides how it prints, as Kubernetes' canonical form does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Qty {
    pub milli: i128,
    pub binary: bool,
}

impl Qty {
    pub fn parse(q: &str) -> Option<Qty> {
        let q = q.trim();
        const SUFFIXES: &[(&str, i128, bool)] = &[
            ("Ki", 1 << 10, true), ("Mi", 1 << 20, true), ("Gi", 1 << 30, true), ("Ti", 1 << 40, true), ("Pi", 1 << 50, true), ("Ei", 1 << 60, true),
            ("k", 1_000, false), ("M", 1_000_000, false), ("G", 1_000_000_000, false), ("T", 1_000_000_000_000, false), ("P", 1_000_000_000_000_000, false), ("E", 1_000_000_000_000_000_000, false),
        ];
        let (num, mul_milli, div, binary) = if let Some((s, m, b)) = SUFFIXES.iter().find_map(|(s, m, b)| q.strip_suffix(s).map(|n| (n, *m, *b))) {
            (s, m * 1000, 1, b)
        } else if let Some(n) = q.strip_suffix('m') {
            (n, 1, 1, false)
        } else if let Some(n) = q.strip_suffix('u') {
            (n, 1, 1000, false)
        } else if let Some(n) = q.strip_suffix('n') {
            (n, 1, 1_000_000, false)
        } else if q.contains(['e', 'E']) {
            let f: f64 = q.parse().ok().filter(|f: &f64| f.is_finite() && *f >= 0.0 && *f < 1e30)?;
            return Some(Qty { milli: (f * 1000.0).ceil() as i128, binary: false });
        } else {
            (q, 1000, 1, false)
        };
        let num = num.strip_prefix('+').unwrap_or(num);
        let (int, frac) = num.split_once('.').unwrap_or((num, ""));
        if int.is_empty() && frac.is_empty() || !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit()) || int.len() + frac.len() > 24 {
            return None;
        }
        let digits: i128 = format!("{int}{frac}").parse().ok()?;
        let scale = 10i128.checked_pow(frac.len() as u32)?;
        // value in thousandths = digits / scale * mul_milli / div, rounded up as Kubernetes does.
        let num = digits.checked_mul(mul_milli)?;
        let den = scale * div;
        Some(Qty { milli: num.checked_add(den - 1)? / den, binary })
    }

    pub fn zero_like(&self) -> Qty {
        Qty { milli: 0, binary: self.binary }
    }

    pub fn plus(self, o: Qty) -> Qty {
        // Saturating: absurd quantities compare as huge instead of wrapping around.
        Qty { milli: self.milli.saturating_add(o.milli), binary: if self.milli == 0 { o.binary } else { self.binary } }
    }
}

/// Kubernetes' canonical form: "500m", "2", "128Mi", "2k".
impl std::fmt::Display for Qty {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let m = self.milli;
        if m == 0 {
            return write!(f, "0");
        }
        if m % 1000 != 0 {
            return write!(f, "{m}m");
        }
        let v = m / 1000;
        if self.binary {
            for (s, d) in [("Ei", 1i128 << 60), ("Pi", 1 << 50), ("Ti", 1 << 40), ("Gi", 1 << 30), ("Mi", 1 << 20), ("Ki", 1 << 10)] {
                if v % d == 0 {
                    return write!(f, "{}{s}", v / d);
                }
            }
            return write!(f, "{v}");
        }
        for (s, d) in [("E", 1_000_000_000_000_000_000i128), ("P", 1_000_000_000_000_000), ("T", 1_000_000_000_000), ("G", 1_000_000_000), ("M", 1_000_000), ("k", 1_000)] {
            if v % d == 0 {
                return write!(f, "{}{s}", v / d);
            }
        }
        write!(f, "{v}")
    }
}

/// What a pod asks a node for, as the scheduler and the kubelet's admission both count it:
/// the sum of its containers' requests (a limit stands in for a missing request), in
/// millicores and bytes.
pub fn pod_requests(p: &k8s_openapi::api::core::v1::Pod) -> (u64, u64) {
    let (mut cpu, mut mem) = (0, 0);
    for c in p.spec.as_ref().map(|s| s.containers.as_slice()).unwrap_or_default() {
        let res = c.resources.as_ref();
        let get = |name: &str| res.and_then(|r| r.requests.as_ref().and_then(|m| m.get(name)).or_else(|| r.limits.as_ref().and_then(|m| m.get(name)))).map(|q| q.0.clone());
        cpu += get("cpu").and_then(|q| cpu_millis(&q)).unwrap_or(0);
        mem += get("memory").and_then(|q| value(&q)).unwrap_or(0);
    }
    (cpu, mem)
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

    #[test]
    fn exact_quantities_print_canonically() {
        let p = |s: &str| Qty::parse(s).unwrap();
        assert_eq!(p("500m").to_string(), "500m");
        assert_eq!(p("0.5").to_string(), "500m");
        assert_eq!(p("2").to_string(), "2");
        assert_eq!(p("128Mi").to_string(), "128Mi");
        assert_eq!(p("1536Mi").to_string(), "1536Mi");
        assert_eq!(p("1024Mi").to_string(), "1Gi");
        assert_eq!(p("2000").to_string(), "2k");
        assert_eq!(p("1G").milli, 1_000_000_000_000);
        assert_eq!(p("100u").milli, 1);
        assert_eq!(p("1e3").to_string(), "1k");
        assert_eq!(p("64Mi").plus(p("64Mi")).to_string(), "128Mi");
        assert!(Qty::parse(&"9".repeat(24)).is_some() && Qty::parse(&format!("{}Ei", "9".repeat(24))).is_none());
        assert_eq!(p("100000000000000000E").plus(p("100000000000000000E")).milli, i128::MAX);
        assert!(Qty::parse("junk").is_none() && Qty::parse("").is_none() && Qty::parse("1.2.3").is_none());
    }
}
