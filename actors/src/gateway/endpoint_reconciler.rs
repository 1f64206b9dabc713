//! The `default/kubernetes` Service's endpoints are the gateways themselves (kube-apiserver's
//! endpoint reconciler): each gateway, once listening, puts its address into the
//! Service's Endpoints and EndpointSlice, and the Service's targetPort on its port, so
//! pods reach the API through the ClusterIP. Written once at start and only when it
//! differs: an idle cluster sees no writes from here.

use bus::Client;
use k8s_openapi::api::core::v1::{EndpointAddress, EndpointPort, EndpointSubset, Endpoints, Service};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

const NS: &str = "default";
const NAME: &str = "kubernetes";
const SKIP_MIRROR: &str = "endpointslice.kubernetes.io/skip-mirror";
const SERVICE_NAME: &str = "kubernetes.io/service-name";

/// The address pods are sent to: a gateway bound to every address answers on loopback.
pub fn advertised(addr: SocketAddr) -> (String, i32) {
    let ip = match addr.ip() {
        IpAddr::V4(v) if v.is_unspecified() => Ipv4Addr::LOCALHOST.to_string(),
        ip => ip.to_string(),
    };
    (ip, addr.port() as i32)
}

/// The Endpoints with this gateway's address added to what other gateways put there;
/// None when it is already there.
pub fn merged_endpoints(have: Option<&Endpoints>, ip: &str, port: i32) -> Option<Endpoints> {
    let ports = vec![EndpointPort { name: Some("https".into()), port, protocol: Some("TCP".into()), app_protocol: None }];
    let sub = have.and_then(|e| e.subsets.as_ref()).and_then(|s| s.first());
    let mut ips: Vec<String> = sub.map(|s| s.addresses.iter().flatten().map(|a| a.ip.clone()).collect()).unwrap_or_default();
    let same_port = sub.and_then(|s| s.ports.as_ref()) == Some(&ports);
    let labelled = have.and_then(|e| e.metadata.labels.as_ref()).and_then(|l| l.get(SKIP_MIRROR)).map(String::as_str) == Some("true");
    if ips.iter().any(|i| i == ip) && same_port && labelled {
        return None;
    }
    if !same_port {
        // Gateways share one port (as apiservers do): on a new port the old addresses are stale.
        ips.clear();
    }
    if !ips.iter().any(|i| i == ip) {
        ips.push(ip.to_string());
    }
    ips.sort();
    let mut e = have.cloned().unwrap_or_else(|| Endpoints { metadata: ObjectMeta { name: Some(NAME.into()), namespace: Some(NS.into()), ..Default::default() }, ..Default::default() });
    e.metadata.labels.get_or_insert_with(BTreeMap::new).insert(SKIP_MIRROR.into(), "true".into());
    e.subsets = Some(vec![EndpointSubset { addresses: Some(ips.into_iter().map(|ip| EndpointAddress { ip, ..Default::default() }).collect()), not_ready_addresses: None, ports: Some(ports) }]);
    Some(e)
}

/// The slice mirroring the Endpoints (the mirroring controller skips these Endpoints).
pub fn slice_for(e: &Endpoints, have: Option<&EndpointSlice>) -> Option<EndpointSlice> {
    let sub = e.subsets.as_ref().and_then(|s| s.first());
    let endpoints: Vec<Endpoint> = sub
        .map(|s| s.addresses.iter().flatten().map(|a| Endpoint { addresses: vec![a.ip.clone()], conditions: Some(EndpointConditions { ready: Some(true), serving: Some(true), terminating: Some(false) }), ..Default::default() }).collect())
        .unwrap_or_default();
    let ports = sub.and_then(|s| s.ports.as_ref()).map(|ps| ps.iter().map(|p| k8s_openapi::api::discovery::v1::EndpointPort { name: p.name.clone(), port: Some(p.port), protocol: p.protocol.clone(), app_protocol: None }).collect());
    if let Some(h) = have {
        if h.endpoints.as_deref().unwrap_or_default() == endpoints.as_slice() && h.ports == ports {
            return None;
        }
    }
    let mut s = have.cloned().unwrap_or_else(|| EndpointSlice {
        metadata: ObjectMeta { name: Some(NAME.into()), namespace: Some(NS.into()), labels: Some(BTreeMap::from([(SERVICE_NAME.to_string(), NAME.to_string())])), ..Default::default() },
        address_type: "IPv4".into(),
        endpoints: None,
        ports: None,
    });
    s.endpoints = Some(endpoints);
    s.ports = ports;
    Some(s)
}

async fn once(client: &Client, ip: &str, port: i32) -> Result<(), bus::client::ClientError> {
    // Without the Service (a bare gateway in front of an empty store) there is nothing
    // to give endpoints to.
    let Some(mut svc) = client.get::<Service>(Some(NS), NAME).await? else { return Ok(()) };
    let ports = svc.spec.as_mut().and_then(|s| s.ports.as_mut());
    if let Some(p) = ports.and_then(|ps| ps.first_mut()).filter(|p| p.target_port != Some(IntOrString::Int(port))) {
        p.target_port = Some(IntOrString::Int(port));
        client.update(&svc).await?;
    }
    let have = client.get::<Endpoints>(Some(NS), NAME).await?;
    let e = match merged_endpoints(have.as_ref(), ip, port) {
        None => have.unwrap_or_default(),
        Some(e) if e.metadata.resource_version.is_some() => client.update(&e).await?,
        Some(e) => client.create(&e).await?,
    };
    let have = client.get::<EndpointSlice>(Some(NS), NAME).await?;
    match slice_for(&e, have.as_ref()) {
        None => {}
        Some(s) if s.metadata.resource_version.is_some() => drop(client.update(&s).await?),
        Some(s) => drop(client.create(&s).await?),
    }
    Ok(())
}

/// Puts this gateway into the kubernetes Service's endpoints, retrying while the state
/// group is not answering yet (or another gateway writes at the same moment).
pub async fn run(client: Client, addr: SocketAddr, stop: tokio_util::sync::CancellationToken) {
    let (ip, port) = advertised(addr);
    let mut delay = Duration::from_millis(200);
    for _ in 0..30 {
        match once(&client, &ip, port).await {
            Ok(()) => return,
            Err(e) => tracing::debug!(error = %e, "writing the kubernetes Service's endpoints; retrying"),
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(5));
    }
    tracing::warn!("gave up writing the kubernetes Service's endpoints");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateways_add_themselves_once() {
        assert_eq!(advertised("0.0.0.0:6443".parse().unwrap()), ("127.0.0.1".to_string(), 6443));
        let e = merged_endpoints(None, "127.0.0.1", 6443).unwrap();
        let mut stored = e.clone();
        stored.metadata.resource_version = Some("3".into());
        assert_eq!(merged_endpoints(Some(&stored), "127.0.0.1", 6443), None, "already there: no write");
        let two = merged_endpoints(Some(&stored), "192.0.2.2", 6443).unwrap();
        let ips: Vec<&str> = two.subsets.as_ref().unwrap()[0].addresses.iter().flatten().map(|a| a.ip.as_str()).collect();
        assert_eq!(ips, ["127.0.0.1", "192.0.2.2"]);
        let moved = merged_endpoints(Some(&stored), "127.0.0.1", 7443).unwrap();
        assert_eq!(moved.subsets.as_ref().unwrap()[0].ports.as_ref().unwrap()[0].port, 7443);
        let s = slice_for(&e, None).unwrap();
        assert_eq!((s.endpoints.as_ref().map_or(0, Vec::len), s.ports.as_ref().unwrap()[0].port), (1, Some(6443)));
        assert_eq!(slice_for(&e, Some(&s)), None);
    }
}
