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
    chains: String,
    service_ips: Vec<String>,
    nodeports: Vec<String>,
    no_endpoints: Vec<String>,
    no_endpoint_nodeports: Vec<String>,
    sets: String,
}

impl Script {
    /// A chain that picks one of `backends` (session affinity first when on), or drops
    /// when there is none (a Local policy without local endpoints).
    fn balance(&mut self, chain: &str, id: &str, backends: &[Backend], proto: &str, affinity: Option<i32>, masq_local: bool, dst: Option<(Ipv4Addr, i32)>) {
        let _ = writeln!(self.chains, "\tchain {chain} {{");
        if masq_local {
            // From the node itself: the reply must come back through this host's NAT.
            let m = match dst {
                Some((ip, port)) => format!("ip daddr {ip} {proto} dport {port} "),
                None => String::new(),
            };
            let _ = writeln!(self.chains, "\t\t{m}fib saddr type local jump mark-for-masquerade");
        }
        if backends.is_empty() {
            let _ = writeln!(self.chains, "\t\tdrop");
            let _ = writeln!(self.chains, "\t}}");
            return;
        }
        let eps: Vec<String> = backends.iter().map(|b| format!("endpoint-{id}__{}/{}", b.ip, b.port)).collect();
        if let Some(timeout) = affinity {
            for ep in &eps {
                let set = format!("affinity-{}", &ep["endpoint-".len()..]);
                if !self.sets.contains(&format!("set {set} ")) {
                    let _ = writeln!(self.sets, "\tset {set} {{ type ipv4_addr; flags dynamic,timeout; timeout {timeout}s; }}");
                }
                let _ = writeln!(self.chains, "\t\tip saddr @{set} goto {ep}");
            }
        }
        let vmap: Vec<String> = eps.iter().enumerate().map(|(i, e)| format!("{i} : goto {e}")).collect();
        let _ = writeln!(self.chains, "\t\tnumgen random mod {} vmap {{ {} }}", eps.len(), vmap.join(", "));
        let _ = writeln!(self.chains, "\t}}");
    }

    fn endpoint(&mut self, id: &str, b: &Backend, proto: &str, affinity: bool) {
        let chain = format!("endpoint-{id}__{}/{}", b.ip, b.port);
        if self.chains.contains(&format!("\tchain {chain} {{")) {
            return;
        }
        let _ = writeln!(self.chains, "\tchain {chain} {{");
        // Hairpin: a pod reaching itself through its Service.
        let _ = writeln!(self.chains, "\t\tip saddr {} jump mark-for-masquerade", b.ip);
        if affinity {
            let _ = writeln!(self.chains, "\t\tupdate @affinity-{id}__{}/{} {{ ip saddr }}", b.ip, b.port);
        }
        let _ = writeln!(self.chains, "\t\tmeta l4proto {proto} dnat to {}:{}", b.ip, b.port);
        let _ = writeln!(self.chains, "\t}}");
    }
}

/// The whole script: delete the table and add it again, in one transaction (`nft -f`
/// applies a file atomically), so the kernel never holds half a ruleset.
pub fn script(table: &str, node: &NodeInfo, services: &[&Service], slices: &[&EndpointSlice]) -> String {
    let mut sc = Script { chains: String::new(), service_ips: Vec::new(), nodeports: Vec::new(), no_endpoints: Vec::new(), no_endpoint_nodeports: Vec::new(), sets: String::new() };
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
                let _ = writeln!(sc.chains, "\tchain {ext} {{");
                if external_local {
                    // The client's address is kept: only this node's endpoints serve it,
                    // except for traffic from the node itself.
                    let _ = writeln!(sc.chains, "\t\tfib saddr type local jump mark-for-masquerade");
                    let _ = writeln!(sc.chains, "\t\tfib saddr type local goto {cluster_chain}");
                    let _ = writeln!(sc.chains, "\t\tgoto external-local-{id}");
                    let _ = writeln!(sc.chains, "\t}}");
                    sc.balance(&format!("external-local-{id}"), &id, &local, proto, affinity, false, None);
                } else {
                    let _ = writeln!(sc.chains, "\t\tjump mark-for-masquerade");
                    let _ = writeln!(sc.chains, "\t\tgoto {cluster_chain}");
                    let _ = writeln!(sc.chains, "\t}}");
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
    let mut out = String::new();
    let _ = writeln!(out, "add table ip {table}");
    let _ = writeln!(out, "delete table ip {table}");
    let _ = writeln!(out, "table ip {table} {{");
    let map = |out: &mut String, name: &str, typ: &str, elems: &[String]| {
        let _ = writeln!(out, "\tmap {name} {{");
        let _ = writeln!(out, "\t\ttype {typ} : verdict");
        if !elems.is_empty() {
            let _ = writeln!(out, "\t\telements = {{ {} }}", elems.join(",\n\t\t\t"));
        }
        let _ = writeln!(out, "\t}}");
    };
    map(&mut out, "service-ips", "ipv4_addr . inet_proto . inet_service", &sc.service_ips);
    map(&mut out, "service-nodeports", "inet_proto . inet_service", &sc.nodeports);
    map(&mut out, "no-endpoint-services", "ipv4_addr . inet_proto . inet_service", &sc.no_endpoints);
    map(&mut out, "no-endpoint-nodeports", "inet_proto . inet_service", &sc.no_endpoint_nodeports);
    out.push_str(&sc.sets);
    let base = [
        ("filter-forward", "type filter hook forward priority -110; policy accept;", vec!["ct state new jump service-endpoints-check"]),
        ("filter-input", "type filter hook input priority -110; policy accept;", vec!["ct state new jump nodeport-endpoints-check"]),
        ("filter-output", "type filter hook output priority -110; policy accept;", vec!["ct state new jump service-endpoints-check", "ct state new jump nodeport-endpoints-check"]),
        ("nat-prerouting", "type nat hook prerouting priority -100; policy accept;", vec!["jump services"]),
        ("nat-output", "type nat hook output priority -100; policy accept;", vec!["jump services"]),
        ("nat-postrouting", "type nat hook postrouting priority 100; policy accept;", vec!["jump masquerading"]),
    ];
    for (name, hook, rules) in base {
        let _ = writeln!(out, "\tchain {name} {{\n\t\t{hook}");
        for r in rules {
            let _ = writeln!(out, "\t\t{r}");
        }
        let _ = writeln!(out, "\t}}");
    }
    let _ = writeln!(out, "\tchain service-endpoints-check {{\n\t\tip daddr . meta l4proto . th dport vmap @no-endpoint-services\n\t}}");
    let _ = writeln!(out, "\tchain nodeport-endpoints-check {{\n\t\tfib daddr type local meta l4proto . th dport vmap @no-endpoint-nodeports\n\t}}");
    let _ = writeln!(out, "\tchain reject-chain {{\n\t\treject\n\t}}");
    let _ = writeln!(out, "\tchain mark-for-masquerade {{\n\t\tmeta mark set meta mark | {MASQ_MARK}\n\t}}");
    let _ = writeln!(out, "\tchain masquerading {{");
    if let Some(br) = &node.bridge {
        // DNATed back out of the bridge it came in on: without the masquerade the
        // endpoint would answer the client directly across the bridge, un-NATed.
        let _ = writeln!(out, "\t\tct status dnat iifname \"{br}\" oifname \"{br}\" meta mark set meta mark | {MASQ_MARK}");
    }
    let _ = writeln!(out, "\t\tmeta mark & {MASQ_MARK} == 0 return\n\t\tmeta mark set meta mark ^ {MASQ_MARK}\n\t\tmasquerade fully-random\n\t}}");
    let _ = writeln!(out, "\tchain services {{\n\t\tip daddr . meta l4proto . th dport vmap @service-ips\n\t\tfib daddr type local meta l4proto . th dport vmap @service-nodeports\n\t}}");
    out.push_str(&sc.chains);
    out.push_str("}\n");
    out
}
