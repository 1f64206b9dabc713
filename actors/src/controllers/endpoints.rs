//! The Endpoints controller (kube's endpoints-controller): a Service with a selector gets
//! an Endpoints object of the same name listing its pods' addresses, ready ones under
//! `addresses`, the others under `notReadyAddresses`, with named targetPorts resolved per
//! pod. `desired` is the pure decision; the pod/service helpers here are shared with the
//! EndpointSlice controller. The actor only feeds caches and writes what differs.

use super::queue::WorkQueue;
use super::ControllerMsg;
use actix::prelude::*;
use bus::informer::InformerEvent;
use bus::Client;
use k8s_openapi::api::core::v1::{EndpointAddress, EndpointPort, EndpointSubset, Endpoints, ObjectReference, Pod, Service, ServicePort};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

const ACTOR: &str = "endpoints-controller";
/// kube's label on the Endpoints and slices of a headless Service.
pub const HEADLESS_LABEL: &str = "service.kubernetes.io/headless";
/// A write that failed is tried again this soon.
const RETRY: Duration = Duration::from_secs(1);

/// `namespace/name`, the queue key of a Service and of its Endpoints.
pub fn key(meta: &ObjectMeta) -> String {
    format!("{}/{}", meta.namespace.as_deref().unwrap_or(""), meta.name.as_deref().unwrap_or(""))
}

/// The Service's selector when it has one that selects (an empty selector selects
/// nothing for Services, unlike for workloads).
pub fn selector(svc: &Service) -> Option<&BTreeMap<String, String>> {
    svc.spec.as_ref()?.selector.as_ref().filter(|s| !s.is_empty())
}

pub fn selects(sel: &BTreeMap<String, String>, pod: &Pod) -> bool {
    let labels = pod.metadata.labels.as_ref();
    sel.iter().all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
}

pub fn headless(svc: &Service) -> bool {
    svc.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()) == Some("None")
}

pub fn publish_not_ready(svc: &Service) -> bool {
    svc.spec.as_ref().and_then(|s| s.publish_not_ready_addresses).unwrap_or(false)
}

/// What a pod contributes as an endpoint, as kube's endpoint utilities read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PodState {
    pub ready: bool,
    pub terminating: bool,
}

/// None: the pod is no endpoint at all (no IP yet, finished, or host-network-less edge
/// cases kube skips too).
pub fn pod_state(pod: &Pod) -> Option<PodState> {
    let st = pod.status.as_ref()?;
    st.pod_ip.as_deref().filter(|ip| !ip.is_empty())?;
    if matches!(st.phase.as_deref(), Some("Succeeded" | "Failed")) {
        return None;
    }
    let ready = st.conditions.iter().flatten().any(|c| c.type_ == "Ready" && c.status == "True");
    Some(PodState { ready, terminating: pod.metadata.deletion_timestamp.is_some() })
}

pub fn pod_ip(pod: &Pod) -> &str {
    pod.status.as_ref().and_then(|s| s.pod_ip.as_deref()).unwrap_or("")
}

/// The port a Service port reaches on this pod: a number as given, a name looked up
/// among the pod's container ports (same protocol); None when the pod has no such port.
pub fn target_port(sp: &ServicePort, pod: &Pod) -> Option<i32> {
    let proto = sp.protocol.as_deref().unwrap_or("TCP");
    match sp.target_port.as_ref() {
        None => Some(sp.port),
        Some(IntOrString::Int(n)) => Some(*n),
        Some(IntOrString::String(s)) => match s.parse::<i32>() {
            Ok(n) => Some(n),
            Err(_) => pod.spec.as_ref()?.containers.iter().flat_map(|c| c.ports.iter().flatten()).find(|p| p.name.as_deref() == Some(s.as_str()) && p.protocol.as_deref().unwrap_or("TCP") == proto).map(|p| p.container_port),
        },
    }
}

/// The labels kube puts on a Service's Endpoints and slices: the Service's own, and the
/// headless marker.
pub fn derived_labels(svc: &Service) -> BTreeMap<String, String> {
    let mut l = svc.metadata.labels.clone().unwrap_or_default();
    if headless(svc) {
        l.insert(HEADLESS_LABEL.into(), String::new());
    }
    l
}

fn pod_ref(pod: &Pod) -> ObjectReference {
    ObjectReference { kind: Some("Pod".into()), namespace: pod.metadata.namespace.clone(), name: pod.metadata.name.clone(), uid: pod.metadata.uid.clone(), ..Default::default() }
}

/// The Endpoints a selector Service should have, from the pods of its namespace; None
/// for a Service without a selector (its Endpoints are the user's).
pub fn desired(svc: &Service, pods: &[&Pod]) -> Option<Endpoints> {
    let sel = selector(svc)?;
    let tolerate = publish_not_ready(svc);
    let ports: Vec<ServicePort> = svc.spec.as_ref().and_then(|s| s.ports.clone()).unwrap_or_default();
    // Pods with the same resolved ports share a subset (kube's RepackSubsets).
    let mut groups: BTreeMap<Vec<(String, i32, String)>, (Vec<EndpointAddress>, Vec<EndpointAddress>)> = BTreeMap::new();
    for pod in pods.iter().filter(|p| selects(sel, p)) {
        let Some(st) = pod_state(pod) else { continue };
        if st.terminating && !tolerate {
            continue;
        }
        let mut resolved = Vec::new();
        for sp in &ports {
            if let Some(n) = target_port(sp, pod) {
                resolved.push((sp.name.clone().unwrap_or_default(), n, sp.protocol.clone().unwrap_or_else(|| "TCP".into())));
            }
        }
        // A headless Service without ports still lists addresses; any other Service
        // lists a pod only where one of its ports resolves.
        if resolved.is_empty() && !(ports.is_empty() && headless(svc)) {
            continue;
        }
        let spec = pod.spec.as_ref();
        let svc_name = svc.metadata.name.as_deref();
        let hostname = spec.and_then(|s| s.hostname.clone()).filter(|_| spec.and_then(|s| s.subdomain.as_deref()) == svc_name);
        let addr = EndpointAddress { ip: pod_ip(pod).to_string(), node_name: spec.and_then(|s| s.node_name.clone()), hostname, target_ref: Some(pod_ref(pod)) };
        let g = groups.entry(resolved).or_default();
        if st.ready || tolerate {
            g.0.push(addr);
        } else {
            g.1.push(addr);
        }
    }
    let by_ip = |v: &mut Vec<EndpointAddress>| v.sort_by(|a, b| (a.ip.as_str(), &a.target_ref.as_ref().and_then(|r| r.name.clone())).cmp(&(b.ip.as_str(), &b.target_ref.as_ref().and_then(|r| r.name.clone()))));
    let subsets: Vec<EndpointSubset> = groups
        .into_iter()
        .map(|(ports, (mut ready, mut not_ready))| {
            by_ip(&mut ready);
            by_ip(&mut not_ready);
            EndpointSubset {
                addresses: Some(ready).filter(|v| !v.is_empty()),
                not_ready_addresses: Some(not_ready).filter(|v| !v.is_empty()),
                ports: Some(ports.into_iter().map(|(name, port, protocol)| EndpointPort { name: Some(name).filter(|n| !n.is_empty()), port, protocol: Some(protocol), app_protocol: None }).collect::<Vec<_>>()).filter(|v| !v.is_empty()),
            }
        })
        .collect();
    Some(Endpoints {
        metadata: ObjectMeta { name: svc.metadata.name.clone(), namespace: svc.metadata.namespace.clone(), labels: Some(derived_labels(svc)).filter(|l| !l.is_empty()), ..Default::default() },
        subsets: Some(subsets).filter(|s| !s.is_empty()),
    })
}

/// What a pass does for one Service key.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Create(Endpoints),
    /// The stored object with the desired content put in.
    Update(Endpoints),
    Delete(String, String),
}

/// Compares desired with what is stored; writes only what differs (an idle cluster
/// writes nothing). A Service without selector keeps the user's Endpoints; a Service
/// gone takes its Endpoints with it.
pub fn reconcile(svc: Option<&Service>, pods: &[&Pod], stored: Option<&Endpoints>) -> Option<Action> {
    match (svc, stored) {
        (None, Some(e)) => Some(Action::Delete(e.metadata.namespace.clone().unwrap_or_default(), e.metadata.name.clone().unwrap_or_default())),
        (None, None) => None,
        (Some(svc), stored) => {
            let want = desired(svc, pods)?;
            match stored {
                None => Some(Action::Create(want)),
                Some(have) if have.subsets == want.subsets && have.metadata.labels.clone().unwrap_or_default() == want.metadata.labels.clone().unwrap_or_default() => None,
                Some(have) => {
                    let mut next = have.clone();
                    next.subsets = want.subsets;
                    next.metadata.labels = want.metadata.labels;
                    Some(Action::Update(next))
                }
            }
        }
    }
}

/// The caches every service-endpoint controller keeps: Services by key, pods by
/// namespace, and which Service keys an event concerns.
#[derive(Default)]
pub struct ServicePods {
    pub services: HashMap<String, Service>,
    pub pods: HashMap<String, HashMap<String, Pod>>,
    /// Bits of the informers that have listed; nothing is written before all have.
    pub listed: u8,
}

impl ServicePods {
    pub fn pods_of(&self, ns: &str) -> Vec<&Pod> {
        self.pods.get(ns).map(|m| m.values().collect()).unwrap_or_default()
    }

    /// Applies a Service event; returns the keys to reconcile.
    pub fn service_event(&mut self, ev: InformerEvent<Service>) -> Vec<String> {
        match ev {
            InformerEvent::Listed(items, _) => {
                let mut keys: Vec<String> = self.services.keys().cloned().collect();
                self.services = items.into_iter().map(|s| (key(&s.metadata), s)).collect();
                keys.extend(self.services.keys().cloned());
                self.listed |= 1;
                keys
            }
            InformerEvent::Applied(s, _) => {
                let k = key(&s.metadata);
                self.services.insert(k.clone(), s);
                vec![k]
            }
            InformerEvent::Deleted(s, _) => {
                let k = key(&s.metadata);
                self.services.remove(&k);
                vec![k]
            }
        }
    }

    /// The selector Services of `ns` that select `pod`.
    fn selecting(&self, pod: &Pod) -> Vec<String> {
        let ns = pod.metadata.namespace.as_deref().unwrap_or("");
        self.services.iter().filter(|(_, s)| s.metadata.namespace.as_deref() == Some(ns) && selector(s).is_some_and(|sel| selects(sel, pod))).map(|(k, _)| k.clone()).collect()
    }

    /// Applies a Pod event; returns the Services whose endpoints may change (those that
    /// select the pod before or after).
    pub fn pod_event(&mut self, ev: InformerEvent<Pod>) -> Vec<String> {
        match ev {
            InformerEvent::Listed(items, _) => {
                self.pods.clear();
                for p in items {
                    let ns = p.metadata.namespace.clone().unwrap_or_default();
                    self.pods.entry(ns).or_default().insert(p.metadata.name.clone().unwrap_or_default(), p);
                }
                self.listed |= 2;
                self.services.keys().cloned().collect()
            }
            InformerEvent::Applied(p, _) => {
                let ns = p.metadata.namespace.clone().unwrap_or_default();
                let name = p.metadata.name.clone().unwrap_or_default();
                let old = self.pods.get(&ns).and_then(|m| m.get(&name)).cloned();
                // Status heartbeats that change nothing an endpoint shows wake no Service.
                if old.as_ref().is_some_and(|o| same_endpoint(o, &p)) {
                    self.pods.entry(ns).or_default().insert(name, p);
                    return Vec::new();
                }
                let mut keys = self.selecting(&p);
                if let Some(o) = &old {
                    keys.extend(self.selecting(o));
                }
                self.pods.entry(ns).or_default().insert(name, p);
                keys.sort();
                keys.dedup();
                keys
            }
            InformerEvent::Deleted(p, _) => {
                let ns = p.metadata.namespace.clone().unwrap_or_default();
                let keys = self.selecting(&p);
                if let Some(m) = self.pods.get_mut(&ns) {
                    m.remove(p.metadata.name.as_deref().unwrap_or(""));
                }
                keys
            }
        }
    }
}

/// Whether two versions of a pod look the same to every endpoint controller.
fn same_endpoint(a: &Pod, b: &Pod) -> bool {
    a.metadata.labels == b.metadata.labels && pod_state(a) == pod_state(b) && pod_ip(a) == pod_ip(b) && a.spec.as_ref().map(|s| (&s.node_name, &s.hostname, &s.subdomain)) == b.spec.as_ref().map(|s| (&s.node_name, &s.hostname, &s.subdomain)) && ports_of(a) == ports_of(b)
}

fn ports_of(p: &Pod) -> Vec<(Option<String>, i32)> {
    p.spec.iter().flat_map(|s| s.containers.iter()).flat_map(|c| c.ports.iter().flatten()).map(|p| (p.name.clone(), p.container_port)).collect()
}

/// Applies an informer event to a cache of objects by key, ignoring events older than
/// what a write of ours already put there (our write's result lands before its event).
pub fn apply_owned<K: bus::client::Object + Clone>(cache: &mut HashMap<String, K>, ev: InformerEvent<K>) -> Vec<String> {
    let rev = |k: &K| k.metadata().resource_version.as_deref().and_then(|r| r.parse::<u64>().ok()).unwrap_or(0);
    match ev {
        InformerEvent::Listed(items, _) => {
            let mut keys: Vec<String> = cache.keys().cloned().collect();
            *cache = items.into_iter().map(|e| (key(e.metadata()), e)).collect();
            keys.extend(cache.keys().cloned());
            keys
        }
        InformerEvent::Applied(e, _) => {
            let k = key(e.metadata());
            if cache.get(&k).is_some_and(|c| rev(c) > rev(&e)) {
                return Vec::new();
            }
            cache.insert(k.clone(), e);
            vec![k]
        }
        InformerEvent::Deleted(e, _) => {
            let k = key(e.metadata());
            if cache.get(&k).is_some_and(|c| rev(c) > rev(&e)) {
                return Vec::new();
            }
            cache.remove(&k);
            vec![k]
        }
    }
}

pub struct EndpointsController {
    client: Client,
    cache: ServicePods,
    endpoints: HashMap<String, Endpoints>,
    queue: WorkQueue,
    resync: Duration,
}

#[derive(Message)]
#[rtype(result = "()")]
struct Written {
    key: String,
    /// The stored result (None: deleted); Err: retry later.
    result: Result<Option<Endpoints>, String>,
}

impl EndpointsController {
    pub fn new(client: Client, resync: Duration) -> Self {
        let client = client.named(ACTOR);
        EndpointsController { client, cache: ServicePods::default(), endpoints: HashMap::new(), queue: WorkQueue::default(), resync }
    }

    fn kick(&mut self, ctx: &mut Context<Self>) {
        if self.cache.listed == 7 && self.queue.arm() {
            ctx.address().do_send(ControllerMsg::Process);
        }
    }

    fn process(&mut self, ctx: &mut Context<Self>) {
        for k in self.queue.take_armed() {
            let svc = self.cache.services.get(&k);
            let ns = k.split('/').next().unwrap_or("");
            let pods = self.cache.pods_of(ns);
            let Some(action) = reconcile(svc, &pods, self.endpoints.get(&k)) else {
                self.queue.done(&k);
                continue;
            };
            let (client, addr) = (self.client.clone(), ctx.address());
            tokio::spawn(async move {
                let result = match action {
                    Action::Create(e) => client.create(&e).await.map(Some),
                    Action::Update(e) => client.update(&e).await.map(Some),
                    Action::Delete(ns, name) => match client.delete::<Endpoints>(Some(&ns), &name, None).await {
                        Err(e) if !e.is_not_found() => Err(e),
                        _ => Ok(None),
                    },
                };
                addr.do_send(Written { key: k, result: result.map_err(|e| e.to_string()) });
            });
        }
    }
}

impl Actor for EndpointsController {
    type Context = Context<Self>;
    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(self.resync, |act, ctx| {
            act.cache.services.keys().cloned().collect::<Vec<_>>().into_iter().for_each(|k| act.queue.add(k));
            act.kick(ctx);
        });
    }
}

impl Handler<Written> for EndpointsController {
    type Result = ();
    fn handle(&mut self, m: Written, ctx: &mut Context<Self>) {
        bus::metrics::handle(ACTOR, || {
            match m.result {
                Ok(Some(e)) => {
                    self.endpoints.insert(m.key.clone(), e);
                }
                Ok(None) => {
                    self.endpoints.remove(&m.key);
                }
                Err(e) => {
                    // A conflict means our cache trails the store: its event is on the
                    // way; other failures get another go soon either way.
                    tracing::debug!(key = %m.key, error = %e, "endpoints write failed; retrying");
                    let k = m.key.clone();
                    ctx.run_later(RETRY, move |act, ctx| {
                        act.queue.add(k);
                        act.kick(ctx);
                    });
                }
            }
            self.queue.done(&m.key);
            self.kick(ctx);
        })
    }
}

impl StreamHandler<InformerEvent<Service>> for EndpointsController {
    fn handle(&mut self, ev: InformerEvent<Service>, ctx: &mut Context<Self>) {
        bus::metrics::handle(ACTOR, || {
            self.cache.service_event(ev).into_iter().for_each(|k| self.queue.add(k));
            self.kick(ctx);
        })
    }
    fn finished(&mut self, _: &mut Context<Self>) {}
}

impl StreamHandler<InformerEvent<Pod>> for EndpointsController {
    fn handle(&mut self, ev: InformerEvent<Pod>, ctx: &mut Context<Self>) {
        bus::metrics::handle(ACTOR, || {
            self.cache.pod_event(ev).into_iter().for_each(|k| self.queue.add(k));
            self.kick(ctx);
        })
    }
    fn finished(&mut self, _: &mut Context<Self>) {}
}

impl StreamHandler<InformerEvent<Endpoints>> for EndpointsController {
    fn handle(&mut self, ev: InformerEvent<Endpoints>, ctx: &mut Context<Self>) {
        bus::metrics::handle(ACTOR, || {
            if matches!(ev, InformerEvent::Listed(..)) {
                self.cache.listed |= 4;
            }
            // Only the Endpoints of selector Services are ours: a user's Endpoints with no
            // Service (or a selector-less one) is left alone, as kube's controller does
            // while running; an Endpoints leaves with its Service's deletion event.
            for k in apply_owned(&mut self.endpoints, ev) {
                if self.cache.services.get(&k).is_some_and(|s| selector(s).is_some()) {
                    self.queue.add(k);
                }
            }
            self.kick(ctx);
        })
    }
    fn finished(&mut self, _: &mut Context<Self>) {}
}

impl Handler<ControllerMsg> for EndpointsController {
    type Result = ();
    fn handle(&mut self, m: ControllerMsg, ctx: &mut Context<Self>) {
        bus::metrics::handle(ACTOR, || {
            match m {
                ControllerMsg::Process => self.process(ctx),
                ControllerMsg::Done(k) => self.queue.done(&k),
                ControllerMsg::Stop => ctx.stop(),
            }
            self.kick(ctx);
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Container, ContainerPort, PodCondition, PodSpec, PodStatus, ServiceSpec};

    pub fn svc(name: &str, selector: &[(&str, &str)], ports: Vec<ServicePort>) -> Service {
        Service {
            metadata: ObjectMeta { name: Some(name.into()), namespace: Some("ns".into()), uid: Some(format!("{name}-uid")), ..Default::default() },
            spec: Some(ServiceSpec {
                selector: Some(selector.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()).filter(|s: &BTreeMap<String, String>| !s.is_empty()),
                cluster_ip: Some("10.96.0.10".into()),
                ports: Some(ports),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    pub fn port(name: &str, port: i32, target: IntOrString) -> ServicePort {
        ServicePort { name: Some(name.into()).filter(|n: &String| !n.is_empty()), port, target_port: Some(target), protocol: Some("TCP".into()), ..Default::default() }
    }

    pub fn pod(name: &str, ip: &str, ready: bool) -> Pod {
        Pod {
            metadata: ObjectMeta { name: Some(name.into()), namespace: Some("ns".into()), uid: Some(format!("{name}-uid")), labels: Some([("app".to_string(), "web".to_string())].into()), ..Default::default() },
            spec: Some(PodSpec {
                node_name: Some("n1".into()),
                containers: vec![Container { name: "c".into(), ports: Some(vec![ContainerPort { name: Some("http".into()), container_port: 8080, ..Default::default() }]), ..Default::default() }],
                ..Default::default()
            }),
            status: Some(PodStatus {
                phase: Some("Running".into()),
                pod_ip: Some(ip.into()).filter(|i: &String| !i.is_empty()),
                conditions: Some(vec![PodCondition { type_: "Ready".into(), status: if ready { "True" } else { "False" }.into(), ..Default::default() }]),
                ..Default::default()
            }),
        }
    }

    fn ips(v: &Option<Vec<EndpointAddress>>) -> Vec<&str> {
        v.iter().flatten().map(|a| a.ip.as_str()).collect()
    }

    #[test]
    fn ready_and_not_ready_pods_with_named_ports() {
        let s = svc("web", &[("app", "web")], vec![port("http", 80, IntOrString::String("http".into()))]);
        let (a, b, c) = (pod("a", "10.0.0.2", true), pod("b", "10.0.0.1", true), pod("c", "10.0.0.3", false));
        let mut other = pod("d", "10.0.0.4", true);
        other.metadata.labels = Some([("app".to_string(), "db".to_string())].into());
        let no_ip = pod("e", "", true);
        let e = desired(&s, &[&a, &b, &c, &other, &no_ip]).unwrap();
        let subsets = e.subsets.unwrap();
        assert_eq!(subsets.len(), 1);
        assert_eq!(ips(&subsets[0].addresses), ["10.0.0.1", "10.0.0.2"]);
        assert_eq!(ips(&subsets[0].not_ready_addresses), ["10.0.0.3"]);
        assert_eq!(subsets[0].ports.as_ref().unwrap()[0].port, 8080, "named targetPort resolved on the pod");
        assert_eq!(subsets[0].addresses.as_ref().unwrap()[0].target_ref.as_ref().unwrap().name.as_deref(), Some("b"));
    }

    #[test]
    fn publish_not_ready_and_unresolvable_ports() {
        let mut s = svc("web", &[("app", "web")], vec![port("", 80, IntOrString::String("metrics".into()))]);
        assert_eq!(desired(&s, &[&pod("a", "10.0.0.1", true)]).unwrap().subsets, None, "no pod has a port named metrics");
        s.spec.as_mut().unwrap().ports = Some(vec![port("", 80, IntOrString::Int(80))]);
        s.spec.as_mut().unwrap().publish_not_ready_addresses = Some(true);
        let e = desired(&s, &[&pod("a", "10.0.0.1", false)]).unwrap();
        assert_eq!(ips(&e.subsets.unwrap()[0].addresses), ["10.0.0.1"]);
    }

    #[test]
    fn headless_without_ports_lists_addresses_and_is_labelled() {
        let mut s = svc("db", &[("app", "web")], vec![]);
        s.spec.as_mut().unwrap().cluster_ip = Some("None".into());
        let e = desired(&s, &[&pod("a", "10.0.0.1", true)]).unwrap();
        assert_eq!(e.metadata.labels.unwrap().get(HEADLESS_LABEL).map(String::as_str), Some(""));
        let sub = &e.subsets.unwrap()[0];
        assert_eq!((ips(&sub.addresses), sub.ports.is_none()), (vec!["10.0.0.1"], true));
    }

    #[test]
    fn writes_only_what_differs() {
        let s = svc("web", &[("app", "web")], vec![port("", 80, IntOrString::Int(80))]);
        let p = pod("a", "10.0.0.1", true);
        let Some(Action::Create(e)) = reconcile(Some(&s), &[&p], None) else { panic!("create expected") };
        let mut stored = e.clone();
        stored.metadata.resource_version = Some("7".into());
        assert_eq!(reconcile(Some(&s), &[&p], Some(&stored)), None, "unchanged: no write");
        let q = pod("b", "10.0.0.2", true);
        let Some(Action::Update(u)) = reconcile(Some(&s), &[&p, &q], Some(&stored)) else { panic!("update expected") };
        assert_eq!(u.metadata.resource_version.as_deref(), Some("7"), "CAS on what was read");
        assert_eq!(reconcile(None, &[], Some(&stored)), Some(Action::Delete("ns".into(), "web".into())));
        let manual = svc("ext", &[], vec![port("", 80, IntOrString::Int(80))]);
        assert_eq!(reconcile(Some(&manual), &[&p], Some(&stored)), None, "a Service without selector keeps the user's Endpoints");
    }

    #[test]
    fn terminating_and_finished_pods_leave() {
        let s = svc("web", &[("app", "web")], vec![port("", 80, IntOrString::Int(80))]);
        let mut t = pod("a", "10.0.0.1", true);
        t.metadata.deletion_timestamp = Some(schema::object::now());
        let mut f = pod("b", "10.0.0.2", false);
        f.status.as_mut().unwrap().phase = Some("Succeeded".into());
        assert_eq!(desired(&s, &[&t, &f]).unwrap().subsets, None);
    }

    #[test]
    fn pod_heartbeats_that_change_nothing_wake_no_service() {
        let mut c = ServicePods::default();
        c.service_event(InformerEvent::Listed(vec![svc("web", &[("app", "web")], vec![])], 1));
        c.pod_event(InformerEvent::Listed(vec![pod("a", "10.0.0.1", true)], 1));
        let mut same = pod("a", "10.0.0.1", true);
        same.metadata.resource_version = Some("9".into());
        assert!(c.pod_event(InformerEvent::Applied(same, 9)).is_empty());
        assert_eq!(c.pod_event(InformerEvent::Applied(pod("a", "10.0.0.1", false), 10)), vec!["ns/web".to_string()]);
    }
}
