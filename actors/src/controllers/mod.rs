//! The controllers (Deployment, ReplicaSet, ReplicationController, DaemonSet, StatefulSet,
//! Job, CronJob, TTL-after-finished, disruption, HPA, garbage collector, namespace, quota,
//! serviceaccount, node IPAM, node lifecycle, taint eviction, pod GC, volume binding,
//! local-path provisioning, Endpoints, EndpointSlice and its mirroring) and what they share: the message that drives their queues (`queue`),
//! expectations for their own writes in flight (`expectations`), graceful pod deletion,
//! and read-modify-write with CAS.

pub mod daemonset;
pub mod deployment;
pub mod disruption;
pub mod endpoints;
pub mod endpointslice;
/// Moved to the bus, where node agents record events too.
pub use bus::events;
pub mod expectations;
pub mod cronjob;
pub mod gc;
pub mod hpa;
pub mod job;
pub mod localpath;
pub mod namespace;
pub mod nodeipam;
pub mod nodelifecycle;
pub mod owned;
pub mod podgc;
pub mod propagation;
pub mod queue;
pub mod quota;
pub mod replicaset;
pub mod replicationcontroller;
pub mod revisions;
pub mod rootcacert;
pub mod serviceaccount;
pub mod statefulset;
pub mod volumebinding;
pub mod taint_eviction;
pub mod ttlafterfinished;

use actix::prelude::*;
use bus::client::{ClientError, Object};
use bus::informer::{watch_objects, Scope};
use bus::Client;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use std::time::Duration;

/// The safety net: every object is reconciled again this often, events or not (the
/// default of [`Config::min_resync_period`]). The watch contract delivers every change,
/// so this only bounds how long a controller's own bug can leave an object unreconciled;
/// kube-controller-manager's default is 12 hours.
/// Loopback addresses: a LoadBalancer Service's address answers on this machine only.
pub const DEFAULT_LB_POOL: &str = "127.0.100.0/24";

pub const RESYNC: Duration = Duration::from_secs(5 * 60);

/// The controller manager's settings, named after kube-controller-manager's flags.
#[derive(Debug, Clone)]
pub struct Config {
    /// Each controller resyncs after a random period in [min, 2·min), as kube's do, so
    /// they do not all wake together.
    pub min_resync_period: Duration,
    /// --cluster-cidr and --node-cidr-mask-size of the node IPAM controller.
    pub node_ipam: nodeipam::NodeIpamConfig,
    /// --horizontal-pod-autoscaler-sync-period.
    pub hpa_sync_period: Duration,
    /// --node-monitor-grace-period and --node-monitor-period.
    pub node_lifecycle: nodelifecycle::NodeLifecycleConfig,
    /// --terminated-pod-gc-threshold (0: keep every finished pod).
    pub terminated_pod_gc_threshold: usize,
    /// --root-ca-file: the CA published as `kube-root-ca.crt` in every namespace (PEM).
    pub root_ca_pem: Option<String>,
    /// --lb-pool: the local cloud provider's load-balancer addresses (None: no cloud
    /// controller).
    pub lb_pool: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            min_resync_period: RESYNC,
            node_ipam: nodeipam::NodeIpamConfig::default(),
            node_lifecycle: nodelifecycle::NodeLifecycleConfig::default(),
            terminated_pod_gc_threshold: podgc::TERMINATED_POD_GC_THRESHOLD,
            hpa_sync_period: Duration::from_secs(15),
            root_ca_pem: None,
            lb_pool: Some(DEFAULT_LB_POOL.into()),
        }
    }
}

impl Config {
    fn resync(&self) -> Duration {
        self.min_resync_period.mul_f64(1.0 + (uuid::Uuid::new_v4().as_u128() % 1024) as f64 / 1024.0)
    }
}

#[derive(Message, Debug)]
#[rtype(result = "()")]
pub enum ControllerMsg {
    /// Reconcile the queued keys.
    Process,
    /// A key's pass has finished.
    Done(String),
    Stop,
}

/// A name made the way the API server fills `generateName`: the base cut to 58
/// characters, then the 5-character suffix, so the result is a valid 63-character label
/// however long the owner's name is (the kubelet uses a pod's name as its hostname).
pub fn generated_name(base: &str, suffix: &str) -> String {
    const MAX_BASE: usize = 63 - 5;
    let cut = base.char_indices().nth(MAX_BASE).map(|(i, _)| i).unwrap_or(base.len());
    format!("{}{suffix}", &base[..cut])
}

/// The uid of the controlling owner of the given kind.
pub fn owner_uid(meta: &ObjectMeta, kind: &str) -> Option<String> {
    meta.owner_references.as_ref()?.iter().find(|o| o.controller == Some(true) && o.kind == kind).map(|o| o.uid.clone())
}

/// (kind, name, uid) of the controlling owner, if any.
pub fn owner_ref(meta: &ObjectMeta) -> Option<(String, String, String)> {
    meta.owner_references.as_ref()?.iter().find(|o| o.controller == Some(true)).map(|o| (o.kind.clone(), o.name.clone(), o.uid.clone()))
}

/// Deletes a pod the Kubernetes way: a pod bound to a node gets a deletionTimestamp and
/// its node agent stops it, then removes it; an unbound pod is removed at once. The direct
/// removal is a CAS on the revision we saw, so a pod bound meanwhile is not yanked from
/// under its node agent: it is re-read and marked instead.
pub async fn delete_pod_gracefully(client: &Client, p: &Pod) -> Result<(), ClientError> {
    let ns = p.metadata.namespace.as_deref();
    let name = p.metadata.name.as_deref().unwrap_or("");
    let mut seen = p.clone();
    for _ in 0..4 {
        if seen.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some() {
            break;
        }
        let rev = seen.metadata.resource_version.as_deref().and_then(|r| r.parse::<u64>().ok());
        match client.delete::<Pod>(ns, name, rev).await {
            Ok(_) => return Ok(()),
            Err(e) if e.is_not_found() => return Ok(()),
            Err(e) if e.is_conflict() => match client.get::<Pod>(ns, name).await? {
                Some(cur) if cur.metadata.uid == p.metadata.uid => seen = cur,
                _ => return Ok(()),
            },
            Err(e) => return Err(e),
        }
    }
    let uid = p.metadata.uid.clone();
    let out = update_outcome::<Pod, _>(client, ns, name, |cur| {
        if cur.metadata.uid == uid && cur.metadata.deletion_timestamp.is_none() {
            let grace = cur.spec.as_ref().and_then(|s| s.termination_grace_period_seconds).unwrap_or(30);
            cur.metadata.deletion_timestamp = Some(schema::object::deletion_deadline(grace));
            cur.metadata.deletion_grace_period_seconds = Some(grace);
        }
    })
    .await;
    match out {
        Outcome::Failed(e) => Err(ClientError::Other(e)),
        _ => Ok(()),
    }
}

/// How a read-modify-write ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Written,
    /// The change was already in place: nothing to write.
    Unchanged,
    Gone,
    Failed(String),
}

impl Outcome {
    /// The object now carries the change (or no longer exists to need it).
    pub fn ok(&self) -> bool {
        matches!(self, Outcome::Written | Outcome::Unchanged)
    }
}

/// Re-reads the object, applies `change`, writes it back with CAS; retries on conflict.
/// Returns whether the object now carries the change (false: gone or kept failing).
pub async fn update_with_retry<K: Object, F: Fn(&mut K)>(client: &Client, ns: Option<&str>, name: &str, change: F) -> bool {
    update_outcome(client, ns, name, change).await.ok()
}

/// [`update_with_retry`], telling apart a write, a no-op, a vanished object and a failure.
pub async fn update_outcome<K: Object, F: Fn(&mut K)>(client: &Client, ns: Option<&str>, name: &str, change: F) -> Outcome {
    let mut last = String::from("kept conflicting");
    for attempt in 0..8u64 {
        let mut cur = match client.get::<K>(ns, name).await {
            Ok(Some(o)) => o,
            Ok(None) => return Outcome::Gone,
            Err(e) => {
                tracing::warn!(kind = K::KIND, name, error = %e, "read before update failed");
                last = e.to_string();
                tokio::time::sleep(Duration::from_millis(100 * (attempt + 1))).await;
                continue;
            }
        };
        let before = serde_json::to_value(&cur).ok();
        change(&mut cur);
        if serde_json::to_value(&cur).ok() == before {
            return Outcome::Unchanged;
        }
        match client.update(&cur).await {
            Ok(_) => return Outcome::Written,
            Err(e) if e.is_conflict() => continue,
            Err(e) if e.is_not_found() => return Outcome::Gone,
            Err(e) => {
                tracing::warn!(kind = K::KIND, name, error = %e, "update failed");
                return Outcome::Failed(e.to_string());
            }
        }
    }
    Outcome::Failed(last)
}

pub struct ControllersHandle {
    deployment: Addr<deployment::DeploymentController>,
    daemonset: Addr<daemonset::DaemonSetController>,
    statefulset: Addr<statefulset::StatefulSetController>,
    replicaset: Addr<replicaset::ReplicaSetController>,
    replication: Addr<replicaset::ReplicaSetController<k8s_openapi::api::core::v1::ReplicationController>>,
    gc: Addr<gc::GarbageCollector>,
    job: Addr<job::JobController>,
    cronjob: Addr<cronjob::CronJobController>,
    ttl: Addr<ttlafterfinished::TtlAfterFinished>,
    disruption: Addr<disruption::DisruptionController>,
    hpa: Addr<hpa::HpaController>,
    namespace: Addr<namespace::NamespaceController>,
    endpoints: Addr<endpoints::EndpointsController>,
    endpointslice: Addr<endpointslice::EndpointSliceController>,
    /// The task-shaped controllers (quota, serviceaccount, node IPAM, node lifecycle, taint
    /// eviction, pod GC, volume binding, local-path provisioning) and what stops them.
    tasks: (Vec<tokio::task::JoinHandle<()>>, tokio_util::sync::CancellationToken),
}

/// Starts every controller; each lists and watches what it needs over the bus.
pub async fn start(bus: bus::Bus, cfg: Config) -> anyhow::Result<ControllersHandle> {
    if nodeipam::parse_cidr(&cfg.node_ipam.cluster_cidr).is_none() {
        anyhow::bail!("--cluster-cidr {:?} is not an IPv4 CIDR", cfg.node_ipam.cluster_cidr);
    }
    let lb_pool = match cfg.lb_pool.as_deref() {
        Some(p) => Some(crate::cloud::local::LocalPool::new(p)?),
        None => None,
    };
    // One informer per kind for all of them (a dozen want pods): started below, once
    // every controller has asked.
    let informers = bus::informer::Shared::new();
    let client = Client::new(bus).sharing(informers.clone());
    let (resync_d, resync_rs, resync_gc) = (cfg.resync(), cfg.resync(), cfg.resync());
    let c = client.clone();
    let deployment = deployment::DeploymentController::create(move |ctx| {
        ctx.add_stream(watch_objects::<Deployment>(c.clone(), Scope::default()));
        ctx.add_stream(watch_objects::<ReplicaSet>(c.clone(), Scope::default()));
        deployment::DeploymentController::new(c).resync_every(resync_d)
    });
    let c = client.clone();
    let replicaset = replicaset::ReplicaSetController::create(move |ctx| {
        ctx.add_stream(watch_objects::<ReplicaSet>(c.clone(), Scope::default()));
        ctx.add_stream(watch_objects::<Pod>(c.clone(), Scope::default()));
        replicaset::ReplicaSetController::new(c).resync_every(resync_rs)
    });
    let (c, resync_ds) = (client.clone(), cfg.resync());
    let daemonset = daemonset::DaemonSetController::create(move |ctx| {
        ctx.add_stream(watch_objects::<k8s_openapi::api::apps::v1::DaemonSet>(c.clone(), Scope::default()));
        ctx.add_stream(watch_objects::<Pod>(c.clone(), Scope::default()));
        ctx.add_stream(watch_objects::<k8s_openapi::api::apps::v1::ControllerRevision>(c.clone(), Scope::default()));
        ctx.add_stream(watch_objects::<k8s_openapi::api::core::v1::Node>(c.clone(), Scope::default()));
        daemonset::DaemonSetController::new(c, resync_ds)
    });
    let (c, resync_sts) = (client.clone(), cfg.resync());
    let statefulset = statefulset::StatefulSetController::create(move |ctx| {
        ctx.add_stream(watch_objects::<k8s_openapi::api::apps::v1::StatefulSet>(c.clone(), Scope::default()));
        ctx.add_stream(watch_objects::<Pod>(c.clone(), Scope::default()));
        ctx.add_stream(watch_objects::<k8s_openapi::api::apps::v1::ControllerRevision>(c.clone(), Scope::default()));
        ctx.add_stream(watch_objects::<k8s_openapi::api::core::v1::PersistentVolumeClaim>(c.clone(), Scope::default()));
        statefulset::StatefulSetController::new(c, resync_sts)
    });
    let c = client.clone();
    let resync_rc = cfg.resync();
    let replication = replicaset::ReplicaSetController::<k8s_openapi::api::core::v1::ReplicationController>::create(move |ctx| {
        ctx.add_stream(watch_objects::<k8s_openapi::api::core::v1::ReplicationController>(c.clone(), Scope::default()));
        ctx.add_stream(watch_objects::<Pod>(c.clone(), Scope::default()));
        replicaset::ReplicaSetController::new(c).resync_every(resync_rc)
    });
    let c = client.clone();
    let gc = gc::GarbageCollector::create(move |ctx| {
        ctx.add_stream(bus::metadata::watch_metadata(c.clone()));
        gc::GarbageCollector::new(c).resync_every(resync_gc)
    });
    let c = client.clone();
    let resync_job = cfg.resync();
    let job = job::JobController::create(move |ctx| {
        ctx.add_stream(watch_objects::<k8s_openapi::api::batch::v1::Job>(c.clone(), Scope::default()));
        ctx.add_stream(watch_objects::<Pod>(c.clone(), Scope::default()));
        job::JobController::new(c).resync_every(resync_job)
    });
    let c = client.clone();
    let resync_cj = cfg.resync();
    let cronjob = cronjob::CronJobController::create(move |ctx| {
        ctx.add_stream(watch_objects::<k8s_openapi::api::batch::v1::CronJob>(c.clone(), Scope::default()));
        ctx.add_stream(watch_objects::<k8s_openapi::api::batch::v1::Job>(c.clone(), Scope::default()));
        cronjob::CronJobController::new(c).resync_every(resync_cj)
    });
    let c = client.clone();
    let ttl = ttlafterfinished::TtlAfterFinished::create(move |ctx| {
        ctx.add_stream(watch_objects::<k8s_openapi::api::batch::v1::Job>(c.clone(), Scope::default()));
        ttlafterfinished::TtlAfterFinished::new(c)
    });
    let c = client.clone();
    let disruption = disruption::DisruptionController::create(move |ctx| {
        ctx.add_stream(watch_objects::<k8s_openapi::api::policy::v1::PodDisruptionBudget>(c.clone(), Scope::default()));
        ctx.add_stream(watch_objects::<Pod>(c.clone(), Scope::default()));
        disruption::DisruptionController::new(c)
    });
    let stop = tokio_util::sync::CancellationToken::new();
    let usage = bus::usage::UsageCache::start(client.bus.nats.clone(), stop.clone()).await.map_err(|e| anyhow::anyhow!("subscribing to resource metrics: {e}"))?;
    let c = client.clone();
    let hpa_period = cfg.hpa_sync_period;
    let hpa = hpa::HpaController::create(move |ctx| {
        ctx.add_stream(watch_objects::<k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler>(c.clone(), Scope::default()));
        ctx.add_stream(watch_objects::<Pod>(c.clone(), Scope::default()));
        hpa::HpaController::new(c, usage, hpa_period)
    });
    let tasks = (
        vec![
            quota::start(client.clone(), cfg.resync(), stop.clone()),
            serviceaccount::start(client.clone(), stop.clone()),
            nodeipam::start(client.clone(), cfg.node_ipam.clone(), stop.clone()),
            nodelifecycle::start(client.clone(), cfg.node_lifecycle.clone(), stop.clone()),
            taint_eviction::start(client.clone(), stop.clone()),
            podgc::start(client.clone(), cfg.terminated_pod_gc_threshold, stop.clone()),
            volumebinding::start(client.clone(), cfg.resync(), stop.clone()),
            // Short: a provisioning that failed is tried again this soon.
            localpath::start(client.clone(), Duration::from_secs(10), stop.clone()),
        ],
        stop,
    );
    let mut tasks = tasks;
    if let Some(pool) = lb_pool {
        tasks.0.push(crate::cloud::start(client.clone(), pool, tasks.1.clone()));
        tasks.0.push(crate::cloud::node::start(client.clone(), crate::cloud::node::LocalInstances, tasks.1.clone()));
    }
    if let Some(ca) = cfg.root_ca_pem.clone() {
        tasks.0.push(rootcacert::start(client.clone(), ca, tasks.1.clone()));
    }
    let (c, resync_ep) = (client.clone(), cfg.resync());
    let endpoints = endpoints::EndpointsController::create(move |ctx| {
        ctx.add_stream(watch_objects::<k8s_openapi::api::core::v1::Service>(c.clone(), Scope::default()));
        ctx.add_stream(watch_objects::<Pod>(c.clone(), Scope::default()));
        ctx.add_stream(watch_objects::<k8s_openapi::api::core::v1::Endpoints>(c.clone(), Scope::default()));
        endpoints::EndpointsController::new(c, resync_ep)
    });
    let (c, resync_eps) = (client.clone(), cfg.resync());
    let endpointslice = endpointslice::EndpointSliceController::create(move |ctx| {
        ctx.add_stream(watch_objects::<k8s_openapi::api::core::v1::Service>(c.clone(), Scope::default()));
        ctx.add_stream(watch_objects::<Pod>(c.clone(), Scope::default()));
        ctx.add_stream(watch_objects::<k8s_openapi::api::core::v1::Endpoints>(c.clone(), Scope::default()));
        ctx.add_stream(watch_objects::<k8s_openapi::api::discovery::v1::EndpointSlice>(c.clone(), Scope::default()));
        endpointslice::EndpointSliceController::new(c, resync_eps)
    });
    let c = client;
    let namespace = namespace::NamespaceController::create(move |ctx| {
        ctx.add_stream(watch_objects::<k8s_openapi::api::core::v1::Namespace>(c.clone(), Scope::default()));
        namespace::NamespaceController::new(c)
    });
    informers.start();
    tracing::debug!(informers = ?informers.kinds(), "controllers: shared informers started");
    Ok(ControllersHandle { deployment, daemonset, statefulset, replicaset, replication, gc, job, cronjob, ttl, disruption, hpa, namespace, endpoints, endpointslice, tasks })
}

impl ControllersHandle {
    pub async fn shutdown(self) {
        let _ = self.deployment.send(ControllerMsg::Stop).await;
        let _ = self.replicaset.send(ControllerMsg::Stop).await;
        let _ = self.replication.send(ControllerMsg::Stop).await;
        let _ = self.daemonset.send(ControllerMsg::Stop).await;
        let _ = self.statefulset.send(ControllerMsg::Stop).await;
        let _ = self.gc.send(ControllerMsg::Stop).await;
        let _ = self.job.send(ControllerMsg::Stop).await;
        let _ = self.cronjob.send(ControllerMsg::Stop).await;
        let _ = self.ttl.send(ControllerMsg::Stop).await;
        let _ = self.disruption.send(ControllerMsg::Stop).await;
        let _ = self.hpa.send(ControllerMsg::Stop).await;
        let _ = self.namespace.send(ControllerMsg::Stop).await;
        let _ = self.endpoints.send(ControllerMsg::Stop).await;
        let _ = self.endpointslice.send(ControllerMsg::Stop).await;
        self.tasks.1.cancel();
        for t in self.tasks.0 {
            let _ = t.await;
        }
    }
}
