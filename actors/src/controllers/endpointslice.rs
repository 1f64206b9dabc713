//! The EndpointSlice controller (kube's endpointslice-controller and
//! endpointslicemirroring-controller in one actor): a Service with a selector gets
//! slices of at most 100 endpoints built from its pods; a Service without one gets the
//! user's Endpoints mirrored into slices. `reconcile` is pure: desired chunks matched
//! onto the existing slices by name, so an unchanged cluster writes nothing.

use super::endpoints::{self, apply_owned, derived_labels, headless, pod_ip, pod_state, publish_not_ready, selector, selects, target_port, ServicePods};
use super::queue::WorkQueue;
use super::ControllerMsg;
use actix::prelude::*;
use bus::informer::InformerEvent;
use bus::Client;
use k8s_openapi::api::core::v1::{Endpoints, ObjectReference, Pod, Service};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

const ACTOR: &str = "endpointslice-controller";
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
pub const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
pub const MANAGED_BY: &str = "endpointslice-controller.k8s.io";
pub const MIRRORING: &str = "endpointslicemirroring-controller.k8s.io";
/// Endpoints with this label are not mirrored (the `kubernetes` Service's, whose
/// slice the gateway writes itself).
pub const SKIP_MIRROR_LABEL: &str = "endpointslice.kubernetes.io/skip-mirror";
/// kube-controller-manager's --max-endpoints-per-slice default.
pub const MAX_PER_SLICE: usize = 100;
const RETRY: Duration = Duration::from_secs(1);

type PortSet = Vec<EndpointPort>;

/// The endpoints a Service should have, grouped by the ports they serve (pods resolving
/// named ports differently land in different slices, as in kube).
fn from_pods(svc: &Service, pods: &[&Pod]) -> BTreeMap<String, (PortSet, Vec<Endpoint>)> {
    let mut out: BTreeMap<String, (PortSet, Vec<Endpoint>)> = BTreeMap::new();
    let Some(sel) = selector(svc) else { return out };
    let tolerate = publish_not_ready(svc);
    let ports = svc.spec.as_ref().and_then(|s| s.ports.clone()).unwrap_or_default();
    for pod in pods.iter().filter(|p| selects(sel, p)) {
        let Some(st) = pod_state(pod) else { continue };
        let resolved: PortSet = ports.iter().filter_map(|sp| target_port(sp, pod).map(|n| EndpointPort { name: Some(sp.name.clone().unwrap_or_default()), port: Some(n), protocol: Some(sp.protocol.clone().unwrap_or_else(|| "TCP".into())), app_protocol: sp.app_protocol.clone() })).collect();
        if resolved.is_empty() && !(ports.is_empty() && headless(svc)) {
            continue;
        }
        let spec = pod.spec.as_ref();
        let serving = st.ready;
        let ep = Endpoint {
            addresses: vec![pod_ip(pod).to_string()],
            conditions: Some(EndpointConditions { ready: Some(tolerate || (serving && !st.terminating)), serving: Some(serving), terminating: Some(st.terminating) }),
            node_name: spec.and_then(|s| s.node_name.clone()),
            hostname: spec.and_then(|s| s.hostname.clone()).filter(|_| spec.and_then(|s| s.subdomain.as_deref()) == svc.metadata.name.as_deref()),
            target_ref: Some(ObjectReference { kind: Some("Pod".into()), namespace: pod.metadata.namespace.clone(), name: pod.metadata.name.clone(), uid: pod.metadata.uid.clone(), ..Default::default() }),
            ..Default::default()
        };
        out.entry(port_key(&resolved)).or_insert_with(|| (resolved, Vec::new())).1.push(ep);
    }
    out
}

/// The user's Endpoints as slice endpoints, one group per subset's ports.
fn from_endpoints(e: &Endpoints) -> BTreeMap<String, (PortSet, Vec<Endpoint>)> {
    let mut out: BTreeMap<String, (PortSet, Vec<Endpoint>)> = BTreeMap::new();
    for sub in e.subsets.iter().flatten() {
        let ports: PortSet = sub.ports.iter().flatten().map(|p| EndpointPort { name: Some(p.name.clone().unwrap_or_default()), port: Some(p.port), protocol: Some(p.protocol.clone().unwrap_or_else(|| "TCP".into())), app_protocol: p.app_protocol.clone() }).collect();
        let entry = out.entry(port_key(&ports)).or_insert_with(|| (ports, Vec::new()));
        let ready = sub.addresses.iter().flatten().map(|a| (a, true));
        let not_ready = sub.not_ready_addresses.iter().flatten().map(|a| (a, false));
        for (a, ok) in ready.chain(not_ready) {
            // Only IPv4 slices here; an address that does not parse is not mirrored.
            if a.ip.parse::<std::net::Ipv4Addr>().is_err() {
                continue;
            }
            entry.1.push(Endpoint {
                addresses: vec![a.ip.clone()],
                conditions: Some(EndpointConditions { ready: Some(ok), serving: Some(ok), terminating: Some(false) }),
                node_name: a.node_name.clone(),
                hostname: a.hostname.clone(),
                target_ref: a.target_ref.clone(),
                ..Default::default()
            });
        }
    }
    out
}

fn port_key(ports: &PortSet) -> String {
    let mut k: Vec<String> = ports.iter().map(|p| format!("{}:{}:{}", p.name.as_deref().unwrap_or(""), p.port.unwrap_or(0), p.protocol.as_deref().unwrap_or(""))).collect();
    k.sort();
    k.join(",")
}

#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Create(EndpointSlice),
    Update(EndpointSlice),
    Delete(String, String),
}

/// Who manages a Service's slices: the pod path for selector Services, mirroring for
/// the others (None: neither, e.g. no Endpoints to mirror).
fn manager(svc: &Service) -> &'static str {
    if selector(svc).is_some() { MANAGED_BY } else { MIRRORING }
}

/// The slice writes that make `existing` (this Service's slices managed by either of
/// our two controllers) match the Service. `name_suffix` gives a new slice's suffix
/// (random in the actor, fixed in tests).
pub fn reconcile(svc: Option<&Service>, pods: &[&Pod], mirrored: Option<&Endpoints>, existing: &[&EndpointSlice], mut name_suffix: impl FnMut() -> String) -> Vec<Action> {
    let mut actions = Vec::new();
    let del = |s: &EndpointSlice| Action::Delete(s.metadata.namespace.clone().unwrap_or_default(), s.metadata.name.clone().unwrap_or_default());
    let Some(svc) = svc else { return existing.iter().map(|s| del(s)).collect() };
    let mgr = manager(svc);
    let groups = if mgr == MANAGED_BY {
        from_pods(svc, pods)
    } else {
        match mirrored.filter(|e| !e.metadata.labels.as_ref().is_some_and(|l| l.get(SKIP_MIRROR_LABEL).map(String::as_str) == Some("true"))) {
            Some(e) => from_endpoints(e),
            None => BTreeMap::new(),
        }
    };
    let (mine, others): (Vec<&EndpointSlice>, Vec<&EndpointSlice>) = existing.iter().partition(|s| s.metadata.labels.as_ref().and_then(|l| l.get(MANAGED_BY_LABEL)).map(String::as_str) == Some(mgr));
    actions.extend(others.into_iter().map(del));
    let mut labels = derived_labels(svc);
    labels.insert(SERVICE_NAME_LABEL.into(), svc.metadata.name.clone().unwrap_or_default());
    labels.insert(MANAGED_BY_LABEL.into(), mgr.into());
    // Desired slices: per port set, endpoints sorted by address, cut into chunks.
    let mut want: Vec<(PortSet, Vec<Endpoint>)> = Vec::new();
    for (_, (ports, mut eps)) in groups {
        eps.sort_by(|a, b| (&a.addresses, target_name(a)).cmp(&(&b.addresses, target_name(b))));
        for chunk in eps.chunks(MAX_PER_SLICE) {
            want.push((ports.clone(), chunk.to_vec()));
        }
    }
    // A selector Service with no endpoints still has one empty slice (kube's placeholder).
    if want.is_empty() && mgr == MANAGED_BY {
        let ports: PortSet = Vec::new();
        want.push((ports, Vec::new()));
    }
    let mut pool: Vec<&EndpointSlice> = mine;
    pool.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    for (ports, eps) in want {
        let key = port_key(&ports);
        // Reuse a slice with the same ports first, then any leftover one.
        let pick = pool.iter().position(|s| port_key(&s.ports.clone().unwrap_or_default()) == key).or(if pool.is_empty() { None } else { Some(0) });
        let ports = Some(ports).filter(|p| !p.is_empty());
        match pick.map(|i| pool.remove(i)) {
            Some(have) => {
                if have.endpoints.as_deref().unwrap_or_default() == eps.as_slice() && have.ports == ports && have.metadata.labels.as_ref() == Some(&labels) && have.address_type == "IPv4" {
                    continue;
                }
                let mut next = have.clone();
                next.endpoints = Some(eps);
                next.ports = ports;
                next.address_type = "IPv4".into();
                next.metadata.labels = Some(labels.clone());
                actions.push(Action::Update(next));
            }
            None => {
                let base = format!("{}-", svc.metadata.name.as_deref().unwrap_or(""));
                let name = super::generated_name(&base, &name_suffix());
                actions.push(Action::Create(EndpointSlice {
                    metadata: ObjectMeta {
                        name: Some(name),
                        generate_name: Some(base),
                        namespace: svc.metadata.namespace.clone(),
                        labels: Some(labels.clone()),
                        owner_references: Some(vec![OwnerReference { api_version: "v1".into(), kind: "Service".into(), name: svc.metadata.name.clone().unwrap_or_default(), uid: svc.metadata.uid.clone().unwrap_or_default(), controller: Some(true), block_owner_deletion: Some(true) }]),
                        ..Default::default()
                    },
                    address_type: "IPv4".into(),
                    endpoints: Some(eps),
                    ports,
                }));
            }
        }
    }
    actions.extend(pool.into_iter().map(del));
    actions
}

fn target_name(e: &Endpoint) -> Option<&str> {
    e.target_ref.as_ref().and_then(|r| r.name.as_deref())
}

/// The Service key a slice belongs to, if one of our controllers manages it.
pub fn owner_key(s: &EndpointSlice) -> Option<String> {
    let l = s.metadata.labels.as_ref()?;
    let mgr = l.get(MANAGED_BY_LABEL)?;
    if mgr != MANAGED_BY && mgr != MIRRORING {
        return None;
    }
    Some(format!("{}/{}", s.metadata.namespace.as_deref().unwrap_or(""), l.get(SERVICE_NAME_LABEL)?))
}

pub struct EndpointSliceController {
    client: Client,
    cache: ServicePods,
    /// Every Endpoints object (mirroring reads the selector-less Services' ones).
    endpoints: HashMap<String, Endpoints>,
    /// Our slices by `namespace/name` of the slice.
    slices: HashMap<String, EndpointSlice>,
    queue: WorkQueue,
    resync: Duration,
}

#[derive(Message)]
#[rtype(result = "()")]
struct Written {
    key: String,
    /// Slices written (stored form) and slice keys removed; Err: try the Service again.
    result: Result<(Vec<EndpointSlice>, Vec<String>), String>,
}

impl EndpointSliceController {
    pub fn new(client: Client, resync: Duration) -> Self {
        let client = client.named(ACTOR);
        EndpointSliceController { client, cache: ServicePods::default(), endpoints: HashMap::new(), slices: HashMap::new(), queue: WorkQueue::default(), resync }
    }

    fn kick(&mut self, ctx: &mut Context<Self>) {
        if self.cache.listed == 15 && self.queue.arm() {
            ctx.address().do_send(ControllerMsg::Process);
        }
    }

    fn process(&mut self, ctx: &mut Context<Self>) {
        for k in self.queue.take_armed() {
            let svc = self.cache.services.get(&k);
            let ns = k.split('/').next().unwrap_or("");
            let pods = self.cache.pods_of(ns);
            let existing: Vec<&EndpointSlice> = self.slices.values().filter(|s| owner_key(s).as_deref() == Some(k.as_str())).collect();
            let suffix = || uuid::Uuid::new_v4().simple().to_string()[..5].to_string();
            let actions = reconcile(svc, &pods, self.endpoints.get(&k), &existing, suffix);
            if actions.is_empty() {
                self.queue.done(&k);
                continue;
            }
            let (client, addr) = (self.client.clone(), ctx.address());
            tokio::spawn(async move {
                let mut written = Vec::new();
                let mut removed = Vec::new();
                let mut err = None;
                for a in actions {
                    let r = match a {
                        Action::Create(s) => client.create(&s).await.map(|s| written.push(s)),
                        Action::Update(s) => client.update(&s).await.map(|s| written.push(s)),
                        Action::Delete(ns, name) => match client.delete::<EndpointSlice>(Some(&ns), &name, None).await {
                            Err(e) if !e.is_not_found() => Err(e),
                            _ => {
                                removed.push(format!("{ns}/{name}"));
                                Ok(())
                            }
                        },
                    };
                    if let Err(e) = r {
                        err = Some(e.to_string());
                    }
                }
                let result = match err {
                    // What did get written is kept either way, through its event.
                    Some(e) => Err(e),
                    None => Ok((written, removed)),
                };
                addr.do_send(Written { key: k, result });
            });
        }
    }
}

impl Actor for EndpointSliceController {
    type Context = Context<Self>;
    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(self.resync, |act, ctx| {
            act.cache.services.keys().cloned().collect::<Vec<_>>().into_iter().for_each(|k| act.queue.add(k));
            act.kick(ctx);
        });
    }
}

impl Handler<Written> for EndpointSliceController {
    type Result = ();
    fn handle(&mut self, m: Written, ctx: &mut Context<Self>) {
        bus::metrics::handle(ACTOR, || {
            match m.result {
                Ok((written, removed)) => {
                    for s in written {
                        self.slices.insert(endpoints::key(&s.metadata), s);
                    }
                    for k in removed {
                        self.slices.remove(&k);
                    }
                }
                Err(e) => {
                    tracing::debug!(key = %m.key, error = %e, "endpoint slice write failed; retrying");
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

impl StreamHandler<InformerEvent<Service>> for EndpointSliceController {
    fn handle(&mut self, ev: InformerEvent<Service>, ctx: &mut Context<Self>) {
        bus::metrics::handle(ACTOR, || {
            self.cache.service_event(ev).into_iter().for_each(|k| self.queue.add(k));
            self.kick(ctx);
        })
    }
    fn finished(&mut self, _: &mut Context<Self>) {}
}

impl StreamHandler<InformerEvent<Pod>> for EndpointSliceController {
    fn handle(&mut self, ev: InformerEvent<Pod>, ctx: &mut Context<Self>) {
        bus::metrics::handle(ACTOR, || {
            self.cache.pod_event(ev).into_iter().for_each(|k| self.queue.add(k));
            self.kick(ctx);
        })
    }
    fn finished(&mut self, _: &mut Context<Self>) {}
}

impl StreamHandler<InformerEvent<Endpoints>> for EndpointSliceController {
    fn handle(&mut self, ev: InformerEvent<Endpoints>, ctx: &mut Context<Self>) {
        bus::metrics::handle(ACTOR, || {
            if matches!(ev, InformerEvent::Listed(..)) {
                self.cache.listed |= 4;
            }
            // Only selector-less Services read Endpoints; the others' need no pass.
            let keys = apply_owned(&mut self.endpoints, ev);
            for k in keys {
                if self.cache.services.get(&k).is_none_or(|s| selector(s).is_none()) {
                    self.queue.add(k);
                }
            }
            self.kick(ctx);
        })
    }
    fn finished(&mut self, _: &mut Context<Self>) {}
}

impl StreamHandler<InformerEvent<EndpointSlice>> for EndpointSliceController {
    fn handle(&mut self, ev: InformerEvent<EndpointSlice>, ctx: &mut Context<Self>) {
        bus::metrics::handle(ACTOR, || {
            let ev = match ev {
                InformerEvent::Listed(items, r) => {
                    self.cache.listed |= 8;
                    InformerEvent::Listed(items.into_iter().filter(|s| owner_key(s).is_some()).collect(), r)
                }
                InformerEvent::Applied(s, _) | InformerEvent::Deleted(s, _) if owner_key(&s).is_none() => return,
                ev => ev,
            };
            let before: Vec<String> = match &ev {
                InformerEvent::Listed(..) => self.slices.values().filter_map(owner_key).collect(),
                _ => Vec::new(),
            };
            let owners: Vec<String> = match &ev {
                InformerEvent::Listed(items, _) => items.iter().filter_map(owner_key).collect(),
                InformerEvent::Applied(s, _) | InformerEvent::Deleted(s, _) => owner_key(s).into_iter().collect(),
            };
            apply_owned(&mut self.slices, ev);
            before.into_iter().chain(owners).for_each(|k| self.queue.add(k));
            self.kick(ctx);
        })
    }
    fn finished(&mut self, _: &mut Context<Self>) {}
}

impl Handler<ControllerMsg> for EndpointSliceController {
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
mod tests {
    use super::*;
    use crate::controllers::endpoints::tests::{pod, port, svc};
    use k8s_openapi::api::core::v1::{EndpointAddress, EndpointSubset};
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

    fn fixed() -> impl FnMut() -> String {
        let mut n = 0;
        move || {
            n += 1;
            format!("x{n:04}")
        }
    }

    fn created(a: &[Action]) -> Vec<&EndpointSlice> {
        a.iter().filter_map(|a| if let Action::Create(s) = a { Some(s) } else { None }).collect()
    }

    fn stored(s: &EndpointSlice, rev: u32) -> EndpointSlice {
        let mut s = s.clone();
        s.metadata.resource_version = Some(rev.to_string());
        s
    }

    #[test]
    fn a_selector_service_gets_labelled_owned_slices_and_then_rests() {
        let s = svc("web", &[("app", "web")], vec![port("http", 80, IntOrString::String("http".into()))]);
        let (a, b) = (pod("a", "10.0.0.1", true), pod("b", "10.0.0.2", false));
        let acts = reconcile(Some(&s), &[&a, &b], None, &[], fixed());
        let c = created(&acts);
        assert_eq!(c.len(), 1);
        let sl = c[0];
        assert_eq!(sl.metadata.name.as_deref(), Some("web-x0001"));
        let l = sl.metadata.labels.as_ref().unwrap();
        assert_eq!((l[SERVICE_NAME_LABEL].as_str(), l[MANAGED_BY_LABEL].as_str()), ("web", MANAGED_BY));
        assert_eq!(sl.metadata.owner_references.as_ref().unwrap()[0].uid, "web-uid");
        assert_eq!(sl.ports.as_ref().unwrap()[0].port, Some(8080));
        let ready: Vec<(String, Option<bool>)> = sl.endpoints.iter().flatten().map(|e| (e.addresses[0].clone(), e.conditions.as_ref().unwrap().ready)).collect();
        assert_eq!(ready, [("10.0.0.1".to_string(), Some(true)), ("10.0.0.2".to_string(), Some(false))]);
        let have = stored(sl, 5);
        assert!(reconcile(Some(&s), &[&a, &b], None, &[&have], fixed()).is_empty(), "nothing changed: nothing written");
        let acts = reconcile(Some(&s), &[&a], None, &[&have], fixed());
        assert!(matches!(&acts[..], [Action::Update(u)] if u.endpoints.as_ref().map_or(0, Vec::len) == 1 && u.metadata.resource_version.as_deref() == Some("5")));
    }

    #[test]
    fn slices_hold_at_most_a_hundred_endpoints() {
        let s = svc("web", &[("app", "web")], vec![port("", 80, IntOrString::Int(80))]);
        let pods: Vec<Pod> = (0..250).map(|i| pod(&format!("p{i}"), &format!("10.0.{}.{}", i / 200, i % 200 + 1), true)).collect();
        let refs: Vec<&Pod> = pods.iter().collect();
        let acts = reconcile(Some(&s), &refs, None, &[], fixed());
        let sizes: Vec<usize> = created(&acts).iter().map(|s| s.endpoints.as_ref().map_or(0, Vec::len)).collect();
        assert_eq!(sizes, [100, 100, 50]);
        let have: Vec<EndpointSlice> = created(&acts).iter().map(|s| stored(s, 1)).collect();
        let have_refs: Vec<&EndpointSlice> = have.iter().collect();
        assert!(reconcile(Some(&s), &refs, None, &have_refs, fixed()).is_empty());
        // Scaled to 10: one slice keeps them, the other two go.
        let acts = reconcile(Some(&s), &refs[..10], None, &have_refs, fixed());
        assert_eq!(acts.iter().filter(|a| matches!(a, Action::Delete(..))).count(), 2);
        assert_eq!(acts.iter().filter(|a| matches!(a, Action::Update(..))).count(), 1);
    }

    #[test]
    fn a_service_without_endpoints_keeps_one_empty_slice_and_a_deleted_one_none() {
        let s = svc("web", &[("app", "web")], vec![port("", 80, IntOrString::Int(80))]);
        let acts = reconcile(Some(&s), &[], None, &[], fixed());
        let c = created(&acts);
        assert!(c.len() == 1 && c[0].endpoints.as_ref().is_none_or(Vec::is_empty));
        let have = stored(c[0], 1);
        assert_eq!(reconcile(None, &[], None, &[&have], fixed()), vec![Action::Delete("ns".into(), "web-x0001".into())]);
    }

    #[test]
    fn user_endpoints_are_mirrored_for_selectorless_services() {
        let s = svc("ext", &[], vec![port("", 80, IntOrString::Int(80))]);
        assert!(reconcile(Some(&s), &[], None, &[], fixed()).is_empty(), "nothing to mirror yet");
        let e = Endpoints {
            metadata: ObjectMeta { name: Some("ext".into()), namespace: Some("ns".into()), ..Default::default() },
            subsets: Some(vec![EndpointSubset {
                addresses: Some(vec![EndpointAddress { ip: "192.0.2.10".into(), ..Default::default() }]),
                not_ready_addresses: Some(vec![EndpointAddress { ip: "192.0.2.11".into(), ..Default::default() }]),
                ports: Some(vec![k8s_openapi::api::core::v1::EndpointPort { port: 9000, protocol: Some("TCP".into()), ..Default::default() }]),
            }]),
        };
        let acts = reconcile(Some(&s), &[], Some(&e), &[], fixed());
        let c = created(&acts);
        assert_eq!(c[0].metadata.labels.as_ref().unwrap()[MANAGED_BY_LABEL], MIRRORING);
        assert_eq!(c[0].endpoints.iter().flatten().map(|e| e.conditions.as_ref().unwrap().ready).collect::<Vec<_>>(), [Some(true), Some(false)]);
        let mut skip = e.clone();
        skip.metadata.labels = Some([(SKIP_MIRROR_LABEL.to_string(), "true".to_string())].into());
        assert!(reconcile(Some(&s), &[], Some(&skip), &[], fixed()).is_empty());
        // The Service gains a selector: the mirrored slice goes, a controller slice comes.
        let have = stored(c[0], 3);
        let sel = svc("ext", &[("app", "web")], vec![port("", 80, IntOrString::Int(80))]);
        let acts = reconcile(Some(&sel), &[], Some(&e), &[&have], fixed());
        assert!(acts.contains(&Action::Delete("ns".into(), "ext-x0001".into())) && created(&acts).len() == 1);
    }
}
