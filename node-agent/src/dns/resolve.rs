//! What cluster DNS answers, as a pure function of the query and a snapshot of the
//! Services and their ready endpoints (the Kubernetes DNS specification's records, as
//! CoreDNS' `kubernetes` plugin serves them with `pods insecure`). No I/O: the server
//! shell (mod.rs) feeds it and the unit tests below need no sockets.

use hickory_proto::rr::rdata::{A, SRV};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

pub const CLUSTER_DOMAIN: &str = "cluster.local";
/// CoreDNS' default TTL for the records it makes from the API.
const TTL: u32 = 5;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Port {
    pub name: String,
    /// "tcp" or "udp", as the SRV label spells it.
    pub protocol: String,
    pub port: u16,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub ip: Ipv4Addr,
    /// `hostname` of the endpoint (a StatefulSet pod's), else its dashed address names it.
    pub hostname: Option<String>,
    /// The endpoint's own port numbers by port name (a headless Service's SRV names them).
    pub ports: BTreeMap<String, u16>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ServiceEntry {
    /// None for a headless Service (clusterIP None): its names are its endpoints'.
    pub cluster_ip: Option<Ipv4Addr>,
    pub ports: Vec<Port>,
    pub endpoints: Vec<Endpoint>,
}

/// Everything the answers depend on, keyed by (namespace, name).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Snapshot {
    pub services: BTreeMap<(String, String), ServiceEntry>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// The name is ours and these are its records (empty: it exists, but has none of
    /// that type — NOERROR with no answers, so a resolver does not try the next search
    /// domain for an AAAA question about a name that has an A record).
    Records(Vec<Record>),
    /// A name under the cluster domain that does not exist.
    NxDomain,
    /// Not ours: the host's resolvers answer it.
    Forward,
}

fn dashed(ip: Ipv4Addr) -> String {
    ip.to_string().replace('.', "-")
}

fn undashed(label: &str) -> Option<Ipv4Addr> {
    let dotted = label.replace('-', ".");
    // "1-2-3-4" only: "1-2-3" or "01-2-3-4" is not an address label.
    dotted.parse().ok().filter(|ip: &Ipv4Addr| dashed(*ip) == label)
}

fn record(name: &str, rdata: RData) -> Option<Record> {
    Some(Record::from_rdata(Name::from_ascii(format!("{name}.")).ok()?, TTL, rdata))
}

fn a(name: &str, ip: Ipv4Addr) -> Option<Record> {
    record(name, RData::A(A(ip)))
}

fn srv(name: &str, port: u16, target: &str, weight: u16) -> Option<Record> {
    let target = Name::from_ascii(format!("{target}.")).ok()?;
    record(name, RData::SRV(SRV::new(0, weight, port, target)))
}

/// The answer to `qname`/`qtype` (qname with or without its trailing dot, any case).
pub fn resolve(qname: &str, qtype: RecordType, snap: &Snapshot) -> Answer {
    let name = qname.trim_end_matches('.').to_ascii_lowercase();
    let Some(rest) = name.strip_suffix(CLUSTER_DOMAIN).filter(|r| r.is_empty() || r.ends_with('.')) else {
        return Answer::Forward;
    };
    let labels: Vec<&str> = rest.trim_end_matches('.').split('.').filter(|l| !l.is_empty()).collect();
    let of_type = |want: RecordType, recs: Vec<Option<Record>>| {
        if qtype == want || qtype == RecordType::ANY {
            Answer::Records(recs.into_iter().flatten().collect())
        } else {
            Answer::Records(vec![])
        }
    };
    match labels.as_slice() {
        // The zone and its namespace levels exist (they have names below them).
        [] | ["svc"] | ["pod"] | [_, "svc"] | [_, "pod"] => Answer::Records(vec![]),
        // `1-2-3-4.<ns>.pod`: any address, as `pods insecure` answers.
        [ip, _ns, "pod"] => match undashed(ip) {
            Some(ip) => of_type(RecordType::A, vec![a(&name, ip)]),
            None => Answer::NxDomain,
        },
        [svc, ns, "svc"] => match snap.services.get(&(ns.to_string(), svc.to_string())) {
            None => Answer::NxDomain,
            Some(s) => match s.cluster_ip {
                Some(ip) => of_type(RecordType::A, vec![a(&name, ip)]),
                None => of_type(RecordType::A, s.endpoints.iter().map(|e| a(&name, e.ip)).collect()),
            },
        },
        // A headless Service's endpoint by its hostname or dashed address.
        [host, svc, ns, "svc"] => {
            let Some(s) = snap.services.get(&(ns.to_string(), svc.to_string())).filter(|s| s.cluster_ip.is_none()) else { return Answer::NxDomain };
            let hits: Vec<_> = s.endpoints.iter().filter(|e| endpoint_label(e) == *host).map(|e| a(&name, e.ip)).collect();
            if hits.is_empty() {
                Answer::NxDomain
            } else {
                of_type(RecordType::A, hits)
            }
        }
        // `_<port>._<proto>.<svc>.<ns>.svc`: the named port's SRV records.
        [port, proto, svc, ns, "svc"] if port.starts_with('_') && proto.starts_with('_') => {
            let Some(s) = snap.services.get(&(ns.to_string(), svc.to_string())) else { return Answer::NxDomain };
            let (port, proto) = (&port[1..], &proto[1..]);
            let Some(p) = s.ports.iter().find(|p| p.name == port && p.protocol == proto) else { return Answer::NxDomain };
            let base = format!("{svc}.{ns}.svc.{CLUSTER_DOMAIN}");
            let recs = match s.cluster_ip {
                Some(_) => vec![srv(&name, p.port, &base, 100)],
                None => {
                    let weight = (100 / s.endpoints.len().max(1)) as u16;
                    s.endpoints.iter().map(|e| srv(&name, e.ports.get(port).copied().unwrap_or(p.port), &format!("{}.{base}", endpoint_label(e)), weight)).collect()
                }
            };
            of_type(RecordType::SRV, recs)
        }
        _ => Answer::NxDomain,
    }
}

fn endpoint_label(e: &Endpoint) -> String {
    e.hostname.clone().unwrap_or_else(|| dashed(e.ip))
}

/// The snapshot of the informers' Services and EndpointSlices: ready endpoints only
/// (all of them with `publishNotReadyAddresses`), IPv4 only.
pub fn snapshot<'a>(services: impl IntoIterator<Item = &'a Service>, slices: impl IntoIterator<Item = &'a EndpointSlice>) -> Snapshot {
    let mut by_service: BTreeMap<(String, String), Vec<&EndpointSlice>> = BTreeMap::new();
    for sl in slices {
        let owner = sl.metadata.labels.as_ref().and_then(|l| l.get("kubernetes.io/service-name"));
        if let (Some(ns), Some(svc)) = (sl.metadata.namespace.clone(), owner) {
            by_service.entry((ns, svc.clone())).or_default().push(sl);
        }
    }
    let mut snap = Snapshot::default();
    for svc in services {
        let (Some(ns), Some(name)) = (svc.metadata.namespace.clone(), svc.metadata.name.clone()) else { continue };
        let Some(spec) = &svc.spec else { continue };
        // ExternalName Services answer with a CNAME in Kubernetes: not served yet.
        if spec.type_.as_deref() == Some("ExternalName") {
            continue;
        }
        let cluster_ip = match spec.cluster_ip.as_deref() {
            Some("None") => None,
            Some(ip) => match ip.parse() {
                Ok(ip) => Some(ip),
                Err(_) => continue,
            },
            None => continue,
        };
        let ports = spec
            .ports
            .iter()
            .flatten()
            .filter_map(|p| Some(Port { name: p.name.clone().filter(|n| !n.is_empty())?, protocol: p.protocol.as_deref().unwrap_or("TCP").to_ascii_lowercase(), port: u16::try_from(p.port).ok()? }))
            .collect();
        let all = spec.publish_not_ready_addresses.unwrap_or(false);
        let mut endpoints: Vec<Endpoint> = Vec::new();
        for sl in by_service.get(&(ns.clone(), name.clone())).into_iter().flatten() {
            if sl.address_type != "IPv4" {
                continue;
            }
            let ports: BTreeMap<String, u16> = sl.ports.iter().flatten().filter_map(|p| Some((p.name.clone()?, u16::try_from(p.port?).ok()?))).collect();
            for ep in sl.endpoints.iter().flatten() {
                let ready = ep.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
                if !ready && !all {
                    continue;
                }
                for ip in ep.addresses.iter().filter_map(|a| a.parse::<Ipv4Addr>().ok()) {
                    if !endpoints.iter().any(|e| e.ip == ip) {
                        endpoints.push(Endpoint { ip, hostname: ep.hostname.clone(), ports: ports.clone() });
                    }
                }
            }
        }
        endpoints.sort_by_key(|e| e.ip);
        snap.services.insert((ns, name), ServiceEntry { cluster_ip, ports, endpoints });
    }
    snap
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ips(a: &Answer) -> Vec<String> {
        match a {
            Answer::Records(r) => r.iter().map(|r| r.data.to_string()).collect(),
            other => panic!("not records: {other:?}"),
        }
    }

    fn snap() -> Snapshot {
        let mut s = Snapshot::default();
        s.services.insert(
            ("default".into(), "web".into()),
            ServiceEntry { cluster_ip: Some("10.96.0.20".parse().unwrap()), ports: vec![Port { name: "http".into(), protocol: "tcp".into(), port: 80 }], endpoints: vec![] },
        );
        let ep = |ip: &str, host: Option<&str>| Endpoint { ip: ip.parse().unwrap(), hostname: host.map(str::to_string), ports: BTreeMap::from([("http".to_string(), 8080)]) };
        s.services.insert(
            ("apps".into(), "db".into()),
            ServiceEntry { cluster_ip: None, ports: vec![Port { name: "http".into(), protocol: "tcp".into(), port: 80 }], endpoints: vec![ep("10.244.1.5", None), ep("10.244.1.6", Some("db-0"))] },
        );
        s
    }

    #[test]
    fn a_service_name_is_its_cluster_ip_in_any_case() {
        let a = resolve("Web.Default.svc.cluster.local.", RecordType::A, &snap());
        assert_eq!(ips(&a), vec!["10.96.0.20"]);
    }

    #[test]
    fn a_headless_service_is_its_ready_endpoints_and_each_has_a_name() {
        assert_eq!(ips(&resolve("db.apps.svc.cluster.local", RecordType::A, &snap())), vec!["10.244.1.5", "10.244.1.6"]);
        assert_eq!(ips(&resolve("10-244-1-5.db.apps.svc.cluster.local", RecordType::A, &snap())), vec!["10.244.1.5"]);
        assert_eq!(ips(&resolve("db-0.db.apps.svc.cluster.local", RecordType::A, &snap())), vec!["10.244.1.6"]);
        assert_eq!(resolve("db-1.db.apps.svc.cluster.local", RecordType::A, &snap()), Answer::NxDomain);
        // A ClusterIP Service's endpoints have no names of their own.
        assert_eq!(resolve("x.web.default.svc.cluster.local", RecordType::A, &snap()), Answer::NxDomain);
    }

    #[test]
    fn srv_names_the_port_of_the_service_or_of_each_endpoint() {
        let a = resolve("_http._tcp.web.default.svc.cluster.local", RecordType::SRV, &snap());
        assert_eq!(ips(&a), vec!["0 100 80 web.default.svc.cluster.local."]);
        let a = resolve("_http._tcp.db.apps.svc.cluster.local", RecordType::SRV, &snap());
        assert_eq!(ips(&a), vec!["0 50 8080 10-244-1-5.db.apps.svc.cluster.local.", "0 50 8080 db-0.db.apps.svc.cluster.local."]);
        assert_eq!(resolve("_http._udp.web.default.svc.cluster.local", RecordType::SRV, &snap()), Answer::NxDomain);
        assert_eq!(resolve("_grpc._tcp.web.default.svc.cluster.local", RecordType::SRV, &snap()), Answer::NxDomain);
    }

    #[test]
    fn pod_names_carry_their_address() {
        assert_eq!(ips(&resolve("10-244-0-7.default.pod.cluster.local", RecordType::A, &snap())), vec!["10.244.0.7"]);
        assert_eq!(resolve("10-244-0.default.pod.cluster.local", RecordType::A, &snap()), Answer::NxDomain);
        assert_eq!(resolve("010-244-0-7.default.pod.cluster.local", RecordType::A, &snap()), Answer::NxDomain);
    }

    #[test]
    fn other_types_of_a_known_name_are_empty_not_nxdomain() {
        assert_eq!(resolve("web.default.svc.cluster.local", RecordType::AAAA, &snap()), Answer::Records(vec![]));
        assert_eq!(resolve("default.svc.cluster.local", RecordType::A, &snap()), Answer::Records(vec![]));
    }

    #[test]
    fn unknown_cluster_names_do_not_exist_and_the_rest_is_forwarded() {
        assert_eq!(resolve("nope.default.svc.cluster.local", RecordType::A, &snap()), Answer::NxDomain);
        // What a search list makes of an already full name.
        assert_eq!(resolve("web.default.svc.cluster.local.default.svc.cluster.local", RecordType::A, &snap()), Answer::NxDomain);
        assert_eq!(resolve("a.b.c.d.e.f.cluster.local", RecordType::A, &snap()), Answer::NxDomain);
        assert_eq!(resolve("example.com", RecordType::A, &snap()), Answer::Forward);
        assert_eq!(resolve("notcluster.local", RecordType::A, &snap()), Answer::Forward);
    }

    #[test]
    fn snapshot_keeps_ready_endpoints_of_each_slice_of_the_service() {
        let svc: Service = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "db", "namespace": "apps"},
            "spec": {"clusterIP": "None", "ports": [{"name": "http", "port": 80}, {"port": 81}]}
        }))
        .unwrap();
        let slice = |name: &str, eps: serde_json::Value| -> EndpointSlice {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": name, "namespace": "apps", "labels": {"kubernetes.io/service-name": "db"}},
                "addressType": "IPv4", "endpoints": eps, "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]
            }))
            .unwrap()
        };
        let a = slice("db-a", serde_json::json!([{"addresses": ["10.244.1.6"], "conditions": {"ready": true}, "hostname": "db-0"}, {"addresses": ["10.244.1.9"], "conditions": {"ready": false}}]));
        let b = slice("db-b", serde_json::json!([{"addresses": ["10.244.1.5"]}]));
        let s = snapshot([&svc], [&a, &b]);
        let e = &s.services[&("apps".to_string(), "db".to_string())];
        assert_eq!(e.cluster_ip, None);
        assert_eq!(e.ports, vec![Port { name: "http".into(), protocol: "tcp".into(), port: 80 }]);
        assert_eq!(e.endpoints.iter().map(|e| e.ip.to_string()).collect::<Vec<_>>(), vec!["10.244.1.5", "10.244.1.6"]);
        assert_eq!(e.endpoints[1].hostname.as_deref(), Some("db-0"));
        assert_eq!(e.endpoints[1].ports["http"], 8080);
    }
}
