//! The local provider: load-balancer addresses from a pool on this machine (`--lb-pool`,
//! 127.0.100.0/24 by default, so nothing leaves it), one per Service. The node agents'
//! proxies answer on them. Its only state is who holds which address, which the
//! Services' status holds too, so a restart rebuilds it by `adopt`.

use super::{LoadBalancerProvider, ProviderError};
use k8s_openapi::api::core::v1::{LoadBalancerIngress, Service};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

#[derive(Debug, Clone)]
pub struct LocalPool {
    base: u32,
    len: u8,
    held: BTreeMap<String, Ipv4Addr>,
}

impl LocalPool {
    pub fn new(cidr: &str) -> Result<LocalPool, ProviderError> {
        let bad = || ProviderError::Config(format!("--lb-pool {cidr:?} is not an IPv4 CIDR of /30 or wider"));
        let (base, len) = crate::controllers::nodeipam::parse_cidr(cidr).ok_or_else(bad)?;
        if len > 30 {
            return Err(bad());
        }
        Ok(LocalPool { base, len, held: BTreeMap::new() })
    }

    /// Usable addresses: the network and broadcast addresses are left out.
    fn contains(&self, ip: Ipv4Addr) -> bool {
        let n = u32::from(ip);
        let size = 1u64 << (32 - self.len);
        n > self.base && u64::from(n - self.base) < size - 1
    }

    fn taken_by_other(&self, key: &str, ip: Ipv4Addr) -> bool {
        self.held.iter().any(|(k, v)| *v == ip && k != key)
    }

    /// The address for `key`: the one it holds, else the one it asks for (if free and
    /// in the pool), else the lowest free one (pure).
    pub fn allocate(&mut self, key: &str, requested: Option<Ipv4Addr>) -> Result<Ipv4Addr, ProviderError> {
        if let Some(req) = requested {
            if !self.contains(req) {
                return Err(ProviderError::Refused(format!("loadBalancerIP {req} is not in the pool {}/{}", Ipv4Addr::from(self.base), self.len)));
            }
            if self.taken_by_other(key, req) {
                return Err(ProviderError::Refused(format!("loadBalancerIP {req} is already in use")));
            }
            self.held.insert(key.to_string(), req);
            return Ok(req);
        }
        if let Some(ip) = self.held.get(key) {
            return Ok(*ip);
        }
        let size = 1u64 << (32 - self.len);
        let free = (1..size - 1).map(|i| Ipv4Addr::from(self.base + i as u32)).find(|ip| !self.held.values().any(|h| h == ip));
        let ip = free.ok_or_else(|| ProviderError::Exhausted(format!("no free address left in {}/{}", Ipv4Addr::from(self.base), self.len)))?;
        self.held.insert(key.to_string(), ip);
        Ok(ip)
    }

    pub fn held(&self, key: &str) -> Option<Ipv4Addr> {
        self.held.get(key).copied()
    }
}

impl LoadBalancerProvider for LocalPool {
    async fn ensure(&mut self, key: &str, svc: &Service) -> Result<Vec<LoadBalancerIngress>, ProviderError> {
        let requested = svc.spec.as_ref().and_then(|s| s.load_balancer_ip.as_deref()).filter(|s| !s.is_empty());
        let requested = match requested {
            Some(r) => Some(r.parse::<Ipv4Addr>().map_err(|_| ProviderError::Refused(format!("loadBalancerIP {r:?} is not an IPv4 address")))?),
            None => None,
        };
        let ip = self.allocate(key, requested)?;
        Ok(vec![LoadBalancerIngress { ip: Some(ip.to_string()), ip_mode: Some("VIP".into()), ..Default::default() }])
    }

    async fn release(&mut self, key: &str) {
        self.held.remove(key);
    }

    fn adopt(&mut self, key: &str, ingress: &[LoadBalancerIngress]) {
        let ip = ingress.iter().filter_map(|i| i.ip.as_deref()?.parse::<Ipv4Addr>().ok()).find(|ip| self.contains(*ip) && !self.taken_by_other(key, *ip));
        if let Some(ip) = ip {
            self.held.insert(key.to_string(), ip);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn addresses_are_the_lowest_free_and_stay_with_their_service() {
        let mut p = LocalPool::new("127.0.100.0/24").unwrap();
        assert_eq!(p.allocate("a/x", None).unwrap(), ip("127.0.100.1"));
        assert_eq!(p.allocate("a/y", None).unwrap(), ip("127.0.100.2"));
        assert_eq!(p.allocate("a/x", None).unwrap(), ip("127.0.100.1"));
        p.held.remove("a/x");
        assert_eq!(p.allocate("a/z", None).unwrap(), ip("127.0.100.1"), "a released address is given again");
    }

    #[test]
    fn a_requested_address_must_be_free_and_in_the_pool() {
        let mut p = LocalPool::new("127.0.100.0/24").unwrap();
        assert_eq!(p.allocate("a/x", Some(ip("127.0.100.7"))).unwrap(), ip("127.0.100.7"));
        assert!(matches!(p.allocate("a/y", Some(ip("127.0.100.7"))), Err(ProviderError::Refused(_))));
        assert!(matches!(p.allocate("a/y", Some(ip("10.0.0.1"))), Err(ProviderError::Refused(_))));
        assert!(matches!(p.allocate("a/y", Some(ip("127.0.100.255"))), Err(ProviderError::Refused(_))), "broadcast");
    }

    #[test]
    fn a_full_pool_or_a_bad_cidr_is_an_error() {
        let mut p = LocalPool::new("127.0.100.0/30").unwrap();
        p.allocate("a", None).unwrap();
        p.allocate("b", None).unwrap();
        assert!(matches!(p.allocate("c", None), Err(ProviderError::Exhausted(_))));
        assert!(LocalPool::new("127.0.100.0/31").is_err());
        assert!(LocalPool::new("nope").is_err());
    }

    #[test]
    fn adoption_rebuilds_what_the_statuses_hold() {
        let mut p = LocalPool::new("127.0.100.0/24").unwrap();
        let ing = |s: &str| vec![LoadBalancerIngress { ip: Some(s.into()), ..Default::default() }];
        p.adopt("a/x", &ing("127.0.100.5"));
        p.adopt("a/y", &ing("127.0.100.5"));
        p.adopt("a/z", &ing("192.168.0.1"));
        assert_eq!((p.held("a/x"), p.held("a/y"), p.held("a/z")), (Some(ip("127.0.100.5")), None, None));
        assert_eq!(p.allocate("a/y", None).unwrap(), ip("127.0.100.1"));
    }
}
