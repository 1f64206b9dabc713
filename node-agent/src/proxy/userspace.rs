//! kube-proxy's userspace mode in small, for a node without nftables (or told
//! `--proxy-mode userspace`): every ClusterIP and load-balancer address goes on an
//! interface of the agent's own (an empty bridge: the bridge driver is there wherever the
//! pod network is, the dummy one not always), as IPVS mode's kube-ipvs0 holds them, so the
//! host owns it; a listener per Service TCP port accepts there (and on every address for a
//! NodePort) and splices each connection to the next ready endpoint in turn (round robin, as the
//! userspace mode did). A port
//! without endpoints has no listener: the host's own address refuses at once. TCP only —
//! UDP Services do not answer in this mode, which the log says. The interface goes at stop.

use super::put;
use super::rules::backends;
use bus::informer::{watch_objects, Scope};
use bus::Client;
use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::{Arc, RwLock};
use tokio_util::sync::CancellationToken;

const ACTOR: &str = "service-proxy";

/// Where to listen, and the endpoints behind it.
pub type Wanted = BTreeMap<SocketAddrV4, Vec<SocketAddrV4>>;

/// The agent's interface for Service addresses (at most 15 characters).
pub fn interface_name(host_id: &str) -> String {
    let tag: String = super::rules::table_name(host_id).trim_start_matches("flotilla-").chars().take(8).collect();
    format!("flsvc{tag}")
}

/// What to listen on for these Services (pure): each TCP port of a ClusterIP and of its
/// load-balancer addresses, and each NodePort on 0.0.0.0, with its ready endpoints (the
/// node's own under a Local traffic policy). Also the addresses the interface must hold.
pub fn wanted(node: &str, services: &[&Service], slices: &[&EndpointSlice]) -> (Wanted, BTreeSet<Ipv4Addr>) {
    let mut out = Wanted::new();
    let mut addrs = BTreeSet::new();
    for svc in services {
        let Some(spec) = svc.spec.as_ref() else { continue };
        let typ = spec.type_.as_deref().unwrap_or("ClusterIP");
        let Some(cip) = spec.cluster_ip.as_deref().and_then(|c| c.parse::<Ipv4Addr>().ok()) else { continue };
        if typ == "ExternalName" {
            continue;
        }
        let lb: Vec<Ipv4Addr> = if typ == "LoadBalancer" {
            svc.status.as_ref().and_then(|s| s.load_balancer.as_ref()).and_then(|l| l.ingress.as_ref()).into_iter().flatten().filter_map(|i| i.ip.as_deref()?.parse().ok()).collect()
        } else {
            vec![]
        };
        addrs.insert(cip);
        addrs.extend(lb.iter().copied());
        let internal_local = spec.internal_traffic_policy.as_deref() == Some("Local");
        let external_local = spec.external_traffic_policy.as_deref() == Some("Local");
        for sp in spec.ports.iter().flatten().filter(|p| p.protocol.as_deref().unwrap_or("TCP") == "TCP") {
            let all = backends(svc, sp, slices, node);
            let pick = |local: bool| -> Vec<SocketAddrV4> { all.iter().filter(|b| !local || b.local).map(|b| SocketAddrV4::new(b.ip, b.port as u16)).collect() };
            let port = sp.port as u16;
            let internal = pick(internal_local);
            if !internal.is_empty() {
                out.insert(SocketAddrV4::new(cip, port), internal);
            }
            let external = pick(external_local);
            if external.is_empty() {
                continue;
            }
            for ip in &lb {
                out.insert(SocketAddrV4::new(*ip, port), external.clone());
            }
            if let Some(np) = sp.node_port.filter(|_| typ == "NodePort" || typ == "LoadBalancer") {
                out.insert(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, np as u16), external.clone());
            }
        }
    }
    (out, addrs)
}

async fn ip(args: &[&str]) -> Result<(), String> {
    let out = tokio::process::Command::new("ip").args(args).output().await.map_err(|e| format!("running ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

/// Removes the agent's Service-address interface (and every address on it).
pub async fn remove(iface: &str) {
    if ip(&["link", "show", iface]).await.is_ok() {
        match ip(&["link", "del", iface]).await {
            Ok(()) => tracing::info!(iface, "removed the userspace proxy's interface"),
            Err(e) => tracing::warn!(iface, error = %e, "removing the userspace proxy's interface failed"),
        }
    }
}

/// One listener: its endpoints can change under it without closing it.
struct Listener {
    backends: Arc<RwLock<Vec<SocketAddrV4>>>,
    task: tokio::task::JoinHandle<()>,
}

fn listen(addr: SocketAddrV4, backends: Arc<RwLock<Vec<SocketAddrV4>>>) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    sock.set_reuse_address(true)?;
    // Several agents on one host serve the same NodePorts.
    sock.set_reuse_port(true)?;
    sock.set_nonblocking(true)?;
    sock.bind(&SocketAddr::V4(addr).into())?;
    sock.listen(1024)?;
    let listener = tokio::net::TcpListener::from_std(sock.into())?;
    Ok(tokio::spawn(async move {
        let mut turn = 0usize;
        loop {
            let Ok((mut client, _)) = listener.accept().await else { continue };
            let to = {
                let b = backends.read().unwrap_or_else(|e| e.into_inner());
                if b.is_empty() {
                    continue;
                }
                turn = turn.wrapping_add(1);
                b[turn % b.len()]
            };
            tokio::spawn(async move {
                match tokio::net::TcpStream::connect(to).await {
                    Ok(mut server) => {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                    Err(e) => tracing::debug!(endpoint = %to, error = %e, "an endpoint refused"),
                }
            });
        }
    }))
}

/// Runs the userspace proxy until `stop`; the caller removes the interface afterwards.
pub fn start(client: Client, iface: String, node: String, stop: CancellationToken) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        tracing::warn!(iface = %iface, node = %node, "service proxy in userspace mode (no nftables): TCP ClusterIPs, load-balancer addresses and NodePorts only; UDP Services do not answer on this node");
        if let Err(e) = async {
            if ip(&["link", "show", &iface]).await.is_err() {
                ip(&["link", "add", &iface, "type", "bridge"]).await?;
            }
            ip(&["link", "set", &iface, "up"]).await
        }
        .await
        {
            tracing::error!(iface = %iface, error = %e, "cannot make the userspace proxy's interface: no service proxy on this node");
            return;
        }
        let mut services = watch_objects::<Service>(client.clone(), Scope::default()).boxed();
        let mut slices = watch_objects::<EndpointSlice>(client.clone(), Scope::default()).boxed();
        let (mut svc_cache, mut slice_cache): (HashMap<String, Service>, HashMap<String, EndpointSlice>) = Default::default();
        let mut listed = 0u8;
        let mut listeners: HashMap<SocketAddrV4, Listener> = HashMap::new();
        let mut held: BTreeSet<Ipv4Addr> = BTreeSet::new();
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                Some(ev) = services.next() => if put(&mut svc_cache, ev) { listed |= 1 },
                Some(ev) = slices.next() => if put(&mut slice_cache, ev) { listed |= 2 },
            }
            while let Some(Some(ev)) = services.next().now_or_never() {
                if put(&mut svc_cache, ev) {
                    listed |= 1;
                }
            }
            while let Some(Some(ev)) = slices.next().now_or_never() {
                if put(&mut slice_cache, ev) {
                    listed |= 2;
                }
            }
            if listed != 3 {
                continue;
            }
            let (want, addrs) = bus::metrics::handle(ACTOR, || {
                let svcs: Vec<&Service> = svc_cache.values().collect();
                let sl: Vec<&EndpointSlice> = slice_cache.values().collect();
                wanted(&node, &svcs, &sl)
            });
            for a in addrs.difference(&held.clone()) {
                match ip(&["addr", "add", &format!("{a}/32"), "dev", &iface]).await {
                    Ok(()) => {
                        held.insert(*a);
                    }
                    Err(e) if e.contains("File exists") => {
                        held.insert(*a);
                    }
                    Err(e) => tracing::warn!(addr = %a, error = %e, "cannot hold a Service address"),
                }
            }
            for a in held.clone().difference(&addrs) {
                let _ = ip(&["addr", "del", &format!("{a}/32"), "dev", &iface]).await;
                held.remove(a);
            }
            listeners.retain(|addr, l| {
                let keep = want.contains_key(addr);
                if !keep {
                    l.task.abort();
                }
                keep
            });
            for (addr, bs) in want {
                if let Some(l) = listeners.get(&addr) {
                    *l.backends.write().unwrap_or_else(|e| e.into_inner()) = bs;
                    continue;
                }
                let shared = Arc::new(RwLock::new(bs));
                match listen(addr, shared.clone()) {
                    Ok(task) => {
                        listeners.insert(addr, Listener { backends: shared, task });
                    }
                    Err(e) => tracing::warn!(%addr, error = %e, "cannot listen for a Service port"),
                }
            }
        }
        for (_, l) in listeners {
            l.task.abort();
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn svc(v: serde_json::Value) -> Service {
        serde_json::from_value(v).unwrap()
    }

    fn slice(svc: &str, eps: &[(&str, &str, bool)]) -> EndpointSlice {
        serde_json::from_value(json!({
            "metadata": {"name": format!("{svc}-x"), "namespace": "default", "labels": {"kubernetes.io/service-name": svc}},
            "addressType": "IPv4",
            "ports": [{"name": "", "port": 8080, "protocol": "TCP"}],
            "endpoints": eps.iter().map(|(ip, node, ready)| json!({"addresses": [ip], "nodeName": node, "conditions": {"ready": ready}})).collect::<Vec<_>>()
        }))
        .unwrap()
    }

    #[test]
    fn listeners_follow_services_and_their_ready_endpoints() {
        let web = svc(json!({"metadata": {"name": "web", "namespace": "default"}, "spec": {"type": "NodePort", "clusterIP": "10.96.0.20", "ports": [{"port": 80, "targetPort": 8080, "nodePort": 30080, "protocol": "TCP"}, {"name": "dns", "port": 53, "protocol": "UDP"}]}}));
        let empty = svc(json!({"metadata": {"name": "empty", "namespace": "default"}, "spec": {"clusterIP": "10.96.0.21", "ports": [{"port": 80}]}}));
        let s = slice("web", &[("10.1.0.5", "n1", true), ("10.1.0.6", "n2", true), ("10.1.0.7", "n1", false)]);
        let (want, addrs) = wanted("n1", &[&web, &empty], &[&s]);
        let eps = vec!["10.1.0.5:8080".parse().unwrap(), "10.1.0.6:8080".parse().unwrap()];
        assert_eq!(want.get(&"10.96.0.20:80".parse().unwrap()), Some(&eps));
        assert_eq!(want.get(&"0.0.0.0:30080".parse().unwrap()), Some(&eps));
        // No endpoints: the address is held (so it refuses) but nothing listens. UDP: none.
        assert_eq!(want.len(), 2, "{want:?}");
        assert_eq!(addrs, BTreeSet::from(["10.96.0.20".parse().unwrap(), "10.96.0.21".parse().unwrap()]));
    }

    #[test]
    fn local_traffic_policies_keep_to_this_nodes_endpoints() {
        let web = svc(json!({"metadata": {"name": "web", "namespace": "default"}, "spec": {"type": "NodePort", "clusterIP": "10.96.0.20", "internalTrafficPolicy": "Local", "externalTrafficPolicy": "Local", "ports": [{"port": 80, "nodePort": 30080}]}}));
        let s = slice("web", &[("10.1.0.5", "n1", true), ("10.1.0.6", "n2", true)]);
        let (want, _) = wanted("n2", &[&web], &[&s]);
        let only: Vec<SocketAddrV4> = vec!["10.1.0.6:8080".parse().unwrap()];
        assert_eq!(want.get(&"10.96.0.20:80".parse().unwrap()), Some(&only));
        assert_eq!(want.get(&"0.0.0.0:30080".parse().unwrap()), Some(&only));
        let (want, _) = wanted("n3", &[&web], &[&s]);
        assert!(want.is_empty(), "{want:?}");
    }

    #[test]
    fn the_interface_name_fits_linux_limits() {
        let n = interface_name("ab12-node-with-a-long-name");
        assert!(n.len() <= 15 && n.starts_with("flsvc"), "{n}");
        assert_ne!(n, interface_name("ab13-node-with-a-long-name"));
    }
}
