//! kube-proxy's nftables ruleset as a pure function: (Services, EndpointSlices, node) →
//! the `nft -f` script that replaces this agent's table in one transaction. The shape
//! follows kube-proxy's nftables mode (a `service-ips` verdict map, per-service chains
//! choosing an endpoint with `numgen random`, per-endpoint DNAT chains, a masquerade
//! mark, reject for Services without endpoints, a `service-nodeports` map).

use k8s_openapi::api::core::v1::{Service, ServicePort};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use std::collections::BTreeSet;
use std::fmt::Write;
use std::net::Ipv4Addr;

/// The mark kube-proxy uses for "masquerade this on the way out".
const MASQ_MARK: &str = "0x4000";
/// kube's default sessionAffinityConfig.clientIP.timeoutSeconds.
const DEFAULT_AFFINITY_TIMEOUT: i32 = 10800;

/// The table of one agent: named after its host id, so two agents (or two clusters) on
/// one machine never write into each other's table.
pub fn table_name(host_id: &str) -> String {
    use sha2::Digest;
    let h = sha2::Sha256::digest(host_id.as_bytes());
    format!("flotilla-{:02x}{:02x}{:02x}{:02x}", h[0], h[1], h[2], h[3])
}

/// One ready endpoint of one Service port.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Backend {
    pub ip: Ipv4Addr,
    pub port: i32,
    pub local: bool,
}

fn proto(p: &ServicePort) -> Option<&'static str> {
    match p.protocol.as_deref().unwrap_or("TCP") {
        "TCP" => Some("tcp"),
        "UDP" => Some("udp"),
        "SCTP" => Some("sctp"),
        _ => None,
    }
}

/// The ready endpoints of a Service port from the Service's slices (a port matches by
/// name and protocol, as kube-proxy's endpoints change tracker does).
pub fn backends(svc: &Service, sp: &ServicePort, slices: &[&EndpointSlice], node: &str) -> Vec<Backend> {
    let ns = svc.metadata.namespace.as_deref();
    let name = svc.metadata.name.as_deref();
    let want_name = sp.name.clone().unwrap_or_default();
    let want_proto = sp.protocol.as_deref().unwrap_or("TCP");
    let mut out = BTreeSet::new();
    for s in slices.iter().filter(|s| s.metadata.namespace.as_deref() == ns && s.address_type == "IPv4" && s.metadata.labels.as_ref().and_then(|l| l.get("kubernetes.io/service-name")).map(String::as_str) == name) {
        let Some(port) = s.ports.iter().flatten().find(|p| p.name.clone().unwrap_or_default() == want_name && p.protocol.as_deref().unwrap_or("TCP") == want_proto).and_then(|p| p.port) else { continue };
        for e in s.endpoints.iter().flatten() {
            if e.conditions.as_ref().and_then(|c| c.ready) == Some(false) {
                continue;
            }
            let Some(ip) = e.addresses.first().and_then(|a| a.parse::<Ipv4Addr>().ok()) else { continue };
            out.insert(Backend { ip, port, local: e.node_name.as_deref() == Some(node) });
        }
    }
    out.into_iter().collect()
}

/// The addresses a cloud provider gave the Service's balancer (status.loadBalancer),
/// which this node answers on as kube-proxy does, without a trip to the balancer.
fn load_balancer_ips(svc: &Service) -> Vec<Ipv4Addr> {
    let ingress = svc.status.as_ref().and_then(|s| s.load_balancer.as_ref()).and_then(|l| l.ingress.as_ref());
    let mut ips: Vec<Ipv4Addr> = ingress.into_iter().flatten().filter_map(|i| i.ip.as_deref()?.parse().ok()).collect();
    ips.sort();
    ips.dedup();
    ips
}

/// What the node's proxy needs to know about itself.
#[derive(Debug, Clone, Default)]
pub struct NodeInfo {
    pub name: String,
    /// The agent's pod bridge: traffic a DNAT sends back out the bridge it came in on is
    /// masqueraded, else the reply would go pod-to-pod around the host's conntrack.
    pub bridge: Option<String>,
}

fn chain_id(ns: &str, name: &str, proto: &str, port: &ServicePort) -> String {
    use sha2::Digest;
    let pname = port.name.clone().unwrap_or_else(|| port.port.to_string());
    let h = sha2::Sha256::digest(format!("{ns}/{name}/{proto}/{pname}").as_bytes());
    format!("{:02X}{:02X}{:02X}{:02X}-{ns}/{name}/{proto}/{pname}", h[0], h[1], h[2], h[3])
}

struct Script {
    /// Service chains in the order they are made: a chain comes after those it jumps to.
    chains: Vec<(String, Vec<String>)>,
    service_ips: Vec<String>,
    nodeports: Vec<String>,
    no_endpoints: Vec<String>,
    no_endpoint_nodeports: Vec<String>,
    /// Affinity sets: name and definition.
    sets: Vec<(String, String)>,
}

impl Script {
    /// A chain that picks one of `backends` (session affinity first when on), or drops
    /// when there is none (a Local policy without local endpoints).
    fn balance(&mut self, chain: &str, id: &str, backends: &[Backend], proto: &str, affinity: Option<i32>, masq_local: bool, dst: Option<(Ipv4Addr, i32)>) {
        let mut rules = Vec::new();
        if masq_local {
            // From the node itself: the reply must come back through this host's NAT.
            let m = match dst {
                Some((ip, port)) => format!("ip daddr {ip} {proto} dport {port} "),
                None => String::new(),
            };
            rules.push(format!("{m}fib saddr type local jump mark-for-masquerade"));
        }
        if backends.is_empty() {
            rules.push("drop".into());
            self.chains.push((chain.to_string(), rules));
            return;
        }
        let eps: Vec<String> = backends.iter().map(|b| format!("endpoint-{id}__{}/{}", b.ip, b.port)).collect();
        if let Some(timeout) = affinity {
            for ep in &eps {
                let set = format!("affinity-{}", &ep["endpoint-".len()..]);
                if !self.sets.iter().any(|(n, _)| *n == set) {
                    self.sets.push((set.clone(), format!("type ipv4_addr; flags dynamic,timeout; timeout {timeout}s;")));
                }
                rules.push(format!("ip saddr @{set} goto {ep}"));
            }
        }
        let vmap: Vec<String> = eps.iter().enumerate().map(|(i, e)| format!("{i} : goto {e}")).collect();
        rules.push(format!("numgen random mod {} vmap {{ {} }}", eps.len(), vmap.join(", ")));
        self.chains.push((chain.to_string(), rules));
    }

    fn endpoint(&mut self, id: &str, b: &Backend, proto: &str, affinity: bool) {
        let chain = format!("endpoint-{id}__{}/{}", b.ip, b.port);
        if self.chains.iter().any(|(n, _)| *n == chain) {
            return;
        }
        // Hairpin: a pod reaching itself through its Service.
        let mut rules = vec![format!("ip saddr {} jump mark-for-masquerade", b.ip)];
        if affinity {
            rules.push(format!("update @affinity-{id}__{}/{} {{ ip saddr }}", b.ip, b.port));
        }
        rules.push(format!("meta l4proto {proto} dnat to {}:{}", b.ip, b.port));
        self.chains.push((chain, rules));
    }
}

/// The four verdict maps, by name, with their key types.
pub const MAPS: [(&str, &str); 4] = [
    ("service-ips", "ipv4_addr . inet_proto . inet_service"),
    ("service-nodeports", "inet_proto . inet_service"),
    ("no-endpoint-services", "ipv4_addr . inet_proto . inet_service"),
    ("no-endpoint-nodeports", "inet_proto . inet_service"),
];

/// The ruleset as data: what `script` writes in full and `diff` compares.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Ruleset {
    pub table: String,
    /// Per map (in `MAPS` order): element key → verdict.
    pub maps: Vec<std::collections::BTreeMap<String, String>>,
    pub sets: Vec<(String, String)>,
    pub chains: Vec<(String, Vec<String>)>,
    /// The base chains and the fixed helpers, which depend on the node only.
    pub base: String,
}

fn elements(v: Vec<String>) -> std::collections::BTreeMap<String, String> {
    v.into_iter().filter_map(|e| e.split_once(" : ").map(|(k, v)| (k.to_string(), v.to_string()))).collect()
}

/// The whole script: delete the table and add it again, in one transaction (`nft -f`
/// applies a file atomically), so the kernel never holds half a ruleset.
pub fn script(table: &str, node: &NodeInfo, services: &[&Service], slices: &[&EndpointSlice]) -> String {
    ruleset(table, node, services, slices).full()
}

/// The ruleset kube-proxy's nftables mode would hold for these Services (pure).
pub fn ruleset(table: &str, node: &NodeInfo, services: &[&Service], slices: &[&EndpointSlice]) -> Ruleset {
    let mut sc = Script { chains: Vec::new(), service_ips: Vec::new(), nodeports: Vec::new(), no_endpoints: Vec::new(), no_endpoint_nodeports: Vec::new(), sets: Vec::new() };
    let mut sorted: Vec<&&Service> = services.iter().collect();
    sorted.sort_by_key(|s| (s.metadata.namespace.clone(), s.metadata.name.clone()));
    for svc in sorted {
        let Some(spec) = svc.spec.as_ref() else { continue };
        let typ = spec.type_.as_deref().unwrap_or("ClusterIP");
        if typ == "ExternalName" {
            continue;
        }
        let Some(cip) = spec.cluster_ip.as_deref().and_then(|c| c.parse::<Ipv4Addr>().ok()) else { continue };
        let ns = svc.metadata.namespace.as_deref().unwrap_or("");
        let name = svc.metadata.name.as_deref().unwrap_or("");
        let affinity = (spec.session_affinity.as_deref() == Some("ClientIP")).then(|| spec.session_affinity_config.as_ref().and_then(|c| c.client_ip.as_ref()).and_then(|c| c.timeout_seconds).unwrap_or(DEFAULT_AFFINITY_TIMEOUT));
        let internal_local = spec.internal_traffic_policy.as_deref() == Some("Local");
        let external_local = spec.external_traffic_policy.as_deref() == Some("Local");
        let lb_ips = if typ == "LoadBalancer" { load_balancer_ips(svc) } else { Vec::new() };
        for sp in spec.ports.iter().flatten() {
            let Some(proto) = proto(sp) else { continue };
            let id = chain_id(ns, name, proto, sp);
            let all = backends(svc, sp, slices, &node.name);
            let local: Vec<Backend> = all.iter().filter(|b| b.local).cloned().collect();
            let node_port = sp.node_port.filter(|_| typ == "NodePort" || typ == "LoadBalancer");
            if all.is_empty() {
                // Refused at once rather than left to time out (kube-proxy's reject).
                sc.no_endpoints.push(format!("{cip} . {proto} . {} : goto reject-chain", sp.port));
                for ip in &lb_ips {
                    sc.no_endpoints.push(format!("{ip} . {proto} . {} : goto reject-chain", sp.port));
                }
                if let Some(np) = node_port {
                    sc.no_endpoint_nodeports.push(format!("{proto} . {np} : goto reject-chain"));
                }
                continue;
            }
            for b in &all {
                sc.endpoint(&id, b, proto, affinity.is_some());
            }
            let cluster_chain = format!("service-{id}");
            sc.balance(&cluster_chain, &id, &all, proto, affinity, true, Some((cip, sp.port)));
            let internal_chain = if internal_local {
                let c = format!("local-{id}");
                sc.balance(&c, &id, &local, proto, affinity, true, Some((cip, sp.port)));
                c
            } else {
                cluster_chain.clone()
            };
            sc.service_ips.push(format!("{cip} . {proto} . {} : goto {internal_chain}", sp.port));
            // Node ports and load-balancer addresses are external traffic alike.
            if node_port.is_some() || !lb_ips.is_empty() {
                let ext = format!("external-{id}");
                if external_local {
                    // The client's address is kept: only this node's endpoints serve it,
                    // except for traffic from the node itself.
                    sc.balance(&format!("external-local-{id}"), &id, &local, proto, affinity, false, None);
                    let rules = vec!["fib saddr type local jump mark-for-masquerade".to_string(), format!("fib saddr type local goto {cluster_chain}"), format!("goto external-local-{id}")];
                    sc.chains.push((ext.clone(), rules));
                } else {
                    sc.chains.push((ext.clone(), vec!["jump mark-for-masquerade".to_string(), format!("goto {cluster_chain}")]));
                }
                if let Some(np) = node_port {
                    sc.nodeports.push(format!("{proto} . {np} : goto {ext}"));
                }
                for ip in &lb_ips {
                    sc.service_ips.push(format!("{ip} . {proto} . {} : goto {ext}", sp.port));
                }
            }
        }
    }
    let mut base = String::new();
    // Pods' Service traffic is this agent's only when it comes in on its own bridge: other
    // agents (and other clusters) on the same host hold the same ClusterIPs, 10.96.0.10
    // first of all, for their own pods. Node ports stay open to every interface.
    let (from_pods, prerouting) = match &node.bridge {
        Some(br) => (format!("iifname \"{br}\" ct state new jump service-endpoints-check"), vec![format!("iifname \"{br}\" jump services"), "fib daddr type local meta l4proto . th dport vmap @service-nodeports".to_string()]),
        None => ("ct state new jump service-endpoints-check".to_string(), vec!["jump services".to_string()]),
    };
    let prerouting: Vec<&str> = prerouting.iter().map(String::as_str).collect();
    let fixed = [
        ("filter-forward", "type filter hook forward priority -110; policy accept;", vec![from_pods.as_str()]),
        ("filter-input", "type filter hook input priority -110; policy accept;", vec!["ct state new jump nodeport-endpoints-check"]),
        ("filter-output", "type filter hook output priority -110; policy accept;", vec!["ct state new jump service-endpoints-check", "ct state new jump nodeport-endpoints-check"]),
        ("nat-prerouting", "type nat hook prerouting priority -100; policy accept;", prerouting),
        ("nat-output", "type nat hook output priority -100; policy accept;", vec!["jump services"]),
        ("nat-postrouting", "type nat hook postrouting priority 100; policy accept;", vec!["jump masquerading"]),
    ];
    for (name, hook, rules) in fixed {
        let _ = writeln!(base, "\tchain {name} {{\n\t\t{hook}");
        for r in rules {
            let _ = writeln!(base, "\t\t{r}");
        }
        let _ = writeln!(base, "\t}}");
    }
    let _ = writeln!(base, "\tchain service-endpoints-check {{\n\t\tip daddr . meta l4proto . th dport vmap @no-endpoint-services\n\t}}");
    let _ = writeln!(base, "\tchain nodeport-endpoints-check {{\n\t\tfib daddr type local meta l4proto . th dport vmap @no-endpoint-nodeports\n\t}}");
    let _ = writeln!(base, "\tchain reject-chain {{\n\t\treject\n\t}}");
    let _ = writeln!(base, "\tchain mark-for-masquerade {{\n\t\tmeta mark set meta mark | {MASQ_MARK}\n\t}}");
    let _ = writeln!(base, "\tchain masquerading {{");
    if let Some(br) = &node.bridge {
        // DNATed back out of the bridge it came in on: without the masquerade the
        // endpoint would answer the client directly across the bridge, un-NATed.
        let _ = writeln!(base, "\t\tct status dnat iifname \"{br}\" oifname \"{br}\" meta mark set meta mark | {MASQ_MARK}");
    }
    let _ = writeln!(base, "\t\tmeta mark & {MASQ_MARK} == 0 return\n\t\tmeta mark set meta mark ^ {MASQ_MARK}\n\t\tmasquerade fully-random\n\t}}");
    let _ = writeln!(base, "\tchain services {{\n\t\tip daddr . meta l4proto . th dport vmap @service-ips\n\t\tfib daddr type local meta l4proto . th dport vmap @service-nodeports\n\t}}");
    Ruleset { table: table.to_string(), maps: vec![elements(sc.service_ips), elements(sc.nodeports), elements(sc.no_endpoints), elements(sc.no_endpoint_nodeports)], sets: sc.sets, chains: sc.chains, base }
}

impl Ruleset {
    /// The table from scratch, replacing whatever the kernel holds under its name.
    pub fn full(&self) -> String {
        let table = &self.table;
        let mut out = String::new();
        let _ = writeln!(out, "add table ip {table}");
        let _ = writeln!(out, "delete table ip {table}");
        let _ = writeln!(out, "table ip {table} {{");
        for ((name, typ), elems) in MAPS.iter().zip(&self.maps) {
            let _ = writeln!(out, "\tmap {name} {{");
            let _ = writeln!(out, "\t\ttype {typ} : verdict");
            if !elems.is_empty() {
                let list: Vec<String> = elems.iter().map(|(k, v)| format!("{k} : {v}")).collect();
                let _ = writeln!(out, "\t\telements = {{ {} }}", list.join(",\n\t\t\t"));
            }
            let _ = writeln!(out, "\t}}");
        }
        for (name, def) in &self.sets {
            let _ = writeln!(out, "\tset {name} {{ {def} }}");
        }
        out.push_str(&self.base);
        for (name, rules) in &self.chains {
            let _ = writeln!(out, "\tchain {name} {{");
            for r in rules {
                let _ = writeln!(out, "\t\t{r}");
            }
            let _ = writeln!(out, "\t}}");
        }
        out.push_str("}\n");
        out
    }
}
