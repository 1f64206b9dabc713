//! A pod's resolv.conf, as the kubelet's `dns.Configurer` decides it from `dnsPolicy`
//! and `dnsConfig` (pure), and the host's resolv.conf that `Default` pods and upstream
//! forwarding use (read with the resolv-conf crate).

use crate::runtime::DnsConfig;
use k8s_openapi::api::core::v1::PodSpec;
use std::net::{IpAddr, Ipv4Addr};

/// The host's resolvers and search list.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HostConf {
    pub nameservers: Vec<IpAddr>,
    pub searches: Vec<String>,
}

pub fn host() -> HostConf {
    let Ok(bytes) = std::fs::read("/etc/resolv.conf") else { return HostConf::default() };
    let (c, _) = resolv_conf::Config::parse_with_errors(&bytes);
    HostConf { nameservers: c.nameservers.iter().map(IpAddr::from).collect(), searches: c.get_search().cloned().unwrap_or_default() }
}

/// The kubelet's limits (validation.MaxDNSSearchPaths and friends): the C library reads
/// no more.
const MAX_SERVERS: usize = 3;
const MAX_SEARCHES: usize = 32;

/// What the sandbox's resolv.conf holds; None leaves it to the runtime, which copies the
/// host's (the `Default` policy, and host-network pods under `ClusterFirst`).
pub fn pod_dns(spec: &PodSpec, namespace: &str, cluster_dns: Option<Ipv4Addr>, host: &HostConf) -> Option<DnsConfig> {
    let host_network = spec.host_network.unwrap_or(false);
    let policy = spec.dns_policy.as_deref().unwrap_or("ClusterFirst");
    let cluster = match policy {
        "None" => false,
        "Default" => return merge(None, spec),
        // ClusterFirst with hostNetwork behaves as Default; ClusterFirstWithHostNet doesn't.
        "ClusterFirst" if host_network => return merge(None, spec),
        _ => true,
    };
    let base = if cluster {
        // No cluster DNS on this node (no bridge of our own): the kubelet falls back to
        // Default too.
        let ip = cluster_dns?;
        let d = super::resolve::CLUSTER_DOMAIN;
        let mut searches = vec![format!("{namespace}.svc.{d}"), format!("svc.{d}"), d.to_string()];
        searches.extend(host.searches.iter().cloned());
        DnsConfig { servers: vec![ip.to_string()], searches, options: vec!["ndots:5".into()] }
    } else {
        DnsConfig::default()
    };
    merge(Some(base), spec)
}

/// Adds `spec.dnsConfig` to `base` (nameservers and searches appended, options by name
/// replaced), as the kubelet's `appendDNSConfig`.
fn merge(base: Option<DnsConfig>, spec: &PodSpec) -> Option<DnsConfig> {
    let Some(extra) = spec.dns_config.as_ref() else { return base };
    let mut c = match base {
        Some(c) => c,
        // Default plus a dnsConfig: the host's file is the base then.
        None => {
            let h = host();
            DnsConfig { servers: h.nameservers.iter().map(|i| i.to_string()).collect(), searches: h.searches, options: vec![] }
        }
    };
    for s in extra.nameservers.iter().flatten() {
        if !c.servers.contains(s) {
            c.servers.push(s.clone());
        }
    }
    for s in extra.searches.iter().flatten() {
        if !c.searches.contains(s) {
            c.searches.push(s.clone());
        }
    }
    for o in extra.options.iter().flatten() {
        let Some(name) = o.name.as_deref() else { continue };
        let text = match &o.value {
            Some(v) => format!("{name}:{v}"),
            None => name.to_string(),
        };
        c.options.retain(|x| x.split(':').next() != Some(name));
        c.options.push(text);
    }
    c.servers.truncate(MAX_SERVERS);
    c.searches.truncate(MAX_SEARCHES);
    Some(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(v: serde_json::Value) -> PodSpec {
        let mut v = v;
        v["containers"] = serde_json::json!([]);
        serde_json::from_value(v).unwrap()
    }

    const IP: Option<Ipv4Addr> = Some(Ipv4Addr::new(10, 244, 1, 1));

    fn host_conf() -> HostConf {
        HostConf { nameservers: vec!["192.0.2.53".parse().unwrap()], searches: vec!["corp.example".into()] }
    }

    #[test]
    fn cluster_first_names_the_node_dns_and_the_namespace_search_path() {
        let c = pod_dns(&spec(serde_json::json!({})), "apps", IP, &host_conf()).unwrap();
        assert_eq!(c.servers, vec!["10.244.1.1"]);
        assert_eq!(c.searches, vec!["apps.svc.cluster.local", "svc.cluster.local", "cluster.local", "corp.example"]);
        assert_eq!(c.options, vec!["ndots:5"]);
    }

    #[test]
    fn host_network_and_default_keep_the_host_file() {
        assert_eq!(pod_dns(&spec(serde_json::json!({"hostNetwork": true})), "apps", IP, &host_conf()), None);
        assert_eq!(pod_dns(&spec(serde_json::json!({"dnsPolicy": "Default"})), "apps", IP, &host_conf()), None);
        assert_eq!(pod_dns(&spec(serde_json::json!({})), "apps", None, &host_conf()), None);
        let c = pod_dns(&spec(serde_json::json!({"hostNetwork": true, "dnsPolicy": "ClusterFirstWithHostNet"})), "apps", IP, &host_conf()).unwrap();
        assert_eq!(c.servers, vec!["10.244.1.1"]);
    }

    #[test]
    fn none_is_the_pod_dns_config_alone() {
        let s = spec(serde_json::json!({"dnsPolicy": "None", "dnsConfig": {"nameservers": ["1.2.3.4"], "searches": ["a.example"], "options": [{"name": "ndots", "value": "2"}, {"name": "edns0"}]}}));
        let c = pod_dns(&s, "apps", IP, &host_conf()).unwrap();
        assert_eq!(c, DnsConfig { servers: vec!["1.2.3.4".into()], searches: vec!["a.example".into()], options: vec!["ndots:2".into(), "edns0".into()] });
    }

    #[test]
    fn cluster_first_with_dns_config_appends_and_replaces_options() {
        let s = spec(serde_json::json!({"dnsConfig": {"searches": ["a.example"], "options": [{"name": "ndots", "value": "1"}]}}));
        let c = pod_dns(&s, "apps", IP, &HostConf::default()).unwrap();
        assert_eq!(c.searches.last().map(String::as_str), Some("a.example"));
        assert_eq!(c.options, vec!["ndots:1"]);
    }
}
