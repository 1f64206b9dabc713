//! An agent that restarts leaves its pods running: containerd's shims outlive it. Before
//! the kubelet acts on its first list of pods it asks each pod's runtime what still runs
//! of it, adopts that (sandbox, running instances, volumes) and sweeps what belongs to no
//! pod bound here, so a restart neither kills nor duplicates a container.

use super::lifecycle::{Event, Resumed, Terminated};
use super::volumes::{self, Mounted};
use super::{spec, uid_of, Exited, InstanceFiles, Kubelet, SandboxSlot};
use crate::runtime::{Found, Runtime};
use actix::prelude::*;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;
use std::collections::HashMap;
use std::sync::Arc;
use tracing::Instrument;

/// What an earlier agent left of one pod, with its volumes made ready again.
pub(super) type Left = (Arc<dyn Runtime>, Found, Result<(Vec<Mounted>, Option<i64>), String>);

/// The pods whose runtime may still run something of theirs: bound here, not finished.
fn candidates(pods: &[Pod], node: &str) -> Vec<Pod> {
    pods.iter()
        .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node))
        .filter(|p| !matches!(p.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Succeeded" | "Failed")))
        .cloned()
        .collect()
}

/// The containers the stored status says had ended (their last state before the restart),
/// by index, with their restart counts.
fn stored_ends(pod: &Pod) -> Vec<(usize, i32, Terminated)> {
    let (Some(spec), Some(st)) = (pod.spec.as_ref(), pod.status.as_ref()) else { return vec![] };
    let statuses = st.init_container_statuses.iter().flatten().chain(st.container_statuses.iter().flatten());
    statuses
        .filter_map(|s| {
            let t = s.state.as_ref()?.terminated.as_ref()?;
            let now = Timestamp::now();
            let started_at = t.started_at.as_ref().map(|x| x.0).unwrap_or(now);
            let term = Terminated { exit_code: t.exit_code, reason: t.reason.clone().unwrap_or_default(), message: t.message.clone(), started_at, finished_at: t.finished_at.as_ref().map(|x| x.0).unwrap_or(started_at) };
            Some((spec::index_of(spec, &s.name)?, s.restart_count, term))
        })
        .collect()
}

impl Kubelet {
    /// Holds the actor (no event is handled meanwhile) until the runtimes have said what
    /// still runs of `pods`; then the list is handled with that known.
    pub(super) fn adopt_then(&mut self, pods: Vec<Pod>, then: impl FnOnce(&mut Kubelet, &mut Context<Kubelet>) + 'static, ctx: &mut Context<Self>) {
        let mut jobs: Vec<(String, Arc<dyn Runtime>, crate::runtime::SandboxSpec, Pod, std::path::PathBuf)> = Vec::new();
        for p in candidates(&pods, &self.node) {
            let Ok(runtime) = self.runtimes.for_class(p.spec.as_ref().and_then(|s| s.runtime_class_name.as_deref()), &self.node) else { continue };
            let (ns, name, uid) = (p.metadata.namespace.clone().unwrap_or_default(), p.metadata.name.clone().unwrap_or_default(), uid_of(&p));
            let dir = spec::pod_dir(&self.data_dir, &ns, &name, &uid);
            let sandbox = spec::sandbox_spec(&p, &dir, 0, self.cluster_dns, &self.host_dns);
            jobs.push((uid, runtime, sandbox, p, dir));
        }
        let runtimes: Vec<Arc<dyn Runtime>> = self.runtimes.all().cloned().collect();
        let (client, node, host_ip, allocatable) = (self.client.clone(), self.node.clone(), self.host_ip.clone(), self.allocatable);
        let fut = async move {
            let mut left: HashMap<String, Left> = HashMap::new();
            for (uid, runtime, sandbox, pod, dir) in jobs {
                let Some(found) = runtime.find(&sandbox).await else { continue };
                let pod_ip = found.sandbox.ip.clone().unwrap_or_else(|| host_ip.clone());
                let d = super::env::Downward { node: node.clone(), host_ip: host_ip.clone(), pod_ip, allocatable };
                let mounts = volumes::prepare(client.clone(), pod, dir, d).await;
                left.insert(uid, (runtime, found, mounts));
            }
            let keep: Vec<String> = left.values().map(|(_, f, _)| f.sandbox.id.clone()).collect();
            for r in runtimes {
                let n = r.sweep(keep.clone()).await;
                if n > 0 {
                    tracing::info!(node = %node, sandboxes = n, runtime = r.handler(), "removed sandboxes an earlier agent left of pods no longer here");
                }
            }
            left
        }
        .instrument(self.span());
        ctx.wait(fut.into_actor(self).map(move |left, act, ctx| {
            if !left.is_empty() {
                tracing::info!(node = %act.node, pods = left.len(), "adopting pods an earlier agent left running");
            }
            act.left = left;
            then(act, ctx);
            // Whatever was found for a pod that was not admitted after all stays unused:
            // it goes, so nothing runs unowned.
            for (_, (runtime, found, _)) in std::mem::take(&mut act.left) {
                tokio::spawn(async move { runtime.remove_sandbox(&found.sandbox).await });
            }
        }));
    }

    /// Takes over what an earlier agent left running of the just admitted pod `uid`, in
    /// place of starting it: its sandbox and volumes, its running containers (followed to
    /// their ends), and the ends it missed.
    pub(super) fn resume(&mut self, uid: &str, (_, found, mounts): Left, ctx: &mut Context<Self>) {
        let Some(rt) = self.pods.get_mut(uid) else { return };
        let Ok(runtime) = rt.runtime.clone() else { return };
        rt.pod_ip = found.sandbox.ip.clone();
        rt.sandbox = SandboxSlot::Ready(found.sandbox.clone());
        rt.sandbox_attempt = found.attempt + 1;
        let dir = spec::pod_dir(&self.data_dir, &rt.state.namespace, &rt.state.name, uid);
        let mut refresh = None;
        match mounts {
            Ok((m, r)) => {
                if let Ok(mut used) = self.in_use.lock() {
                    used.insert(uid.to_string(), m.iter().map(|v| v.host_path.clone()).collect());
                }
                rt.mounts = m;
                refresh = r;
            }
            Err(why) => {
                tracing::warn!(pod = %format!("{}/{}", rt.state.namespace, rt.state.name), reason = %why, "an adopted pod's volumes are not ready");
                rt.mount_error = Some(why);
            }
        }
        let pod = rt.pod.clone();
        let Some(pspec) = pod.spec.as_ref() else { return };
        let mut running = Vec::new();
        let mut missed = Vec::new();
        for fc in found.containers {
            let Some(idx) = spec::index_of(pspec, &fc.name) else {
                // Not in the spec any more: nothing will ever watch it.
                let (r, s) = (runtime.clone(), fc.started.clone());
                tokio::spawn(async move { r.stop_container(&s, std::time::Duration::ZERO).await }.instrument(self.span()));
                continue;
            };
            self.next_instance += 1;
            let instance = self.next_instance;
            let c = spec::container_at(pspec, idx).cloned().unwrap_or_default();
            let log = spec::container_spec(&pod, idx, &dir, fc.attempt as i32, &[]).map(|s| s.log_path).unwrap_or_default();
            let message = Some(dir.join("termination").join(format!("{}-{}", c.name, fc.attempt))).filter(|f| f.exists());
            let files = InstanceFiles { message, log, fallback_to_logs: c.termination_message_policy.as_deref() == Some("FallbackToLogsOnError") };
            let Some(rt) = self.pods.get_mut(uid) else { return };
            rt.procs.insert(idx, (instance, fc.started.clone()));
            rt.files.insert(idx, files);
            running.push(Resumed { idx, instance, id: fc.started.id.clone(), image_id: fc.image_id.clone(), started_at: fc.started_at.unwrap_or_else(Timestamp::now), restarts: fc.attempt as i32 });
            match fc.ended {
                None => {
                    let (addr, u) = (ctx.address(), uid.to_string());
                    runtime.follow(&fc.started, Box::new(move |exit| addr.do_send(Exited { uid: u, idx, instance, exit })));
                }
                Some((exit, at)) => missed.push((idx, instance, exit, at)),
            }
        }
        let adopted: Vec<usize> = running.iter().map(|r| r.idx).collect();
        let finished = stored_ends(&pod).into_iter().filter(|(idx, _, _)| !adopted.contains(idx)).collect();
        tracing::info!(pod = %format!("{}/{}", pod.metadata.namespace.as_deref().unwrap_or(""), pod.metadata.name.as_deref().unwrap_or("")), containers = running.len(), "adopted a running pod");
        self.refresh_tokens_at(uid, refresh, ctx);
        self.watch_local_storage(uid, ctx);
        self.drive(uid, Event::Adopted { running, finished }, ctx);
        for (idx, instance, exit, at) in missed {
            if let Some(rt) = self.pods.get_mut(uid) {
                rt.procs.remove(&idx);
            }
            let detail = self.exit_detail(uid, idx, &exit);
            self.drive(uid, Event::Exited { idx, instance, exit: detail, at }, ctx);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ContainerState, ContainerStateTerminated, ContainerStatus, PodSpec, PodStatus};

    fn pod(node: &str, phase: &str) -> Pod {
        let mut p = Pod::default();
        p.metadata.name = Some("p".into());
        p.spec = Some(PodSpec { node_name: Some(node.into()), containers: vec![k8s_openapi::api::core::v1::Container { name: "a".into(), ..Default::default() }, k8s_openapi::api::core::v1::Container { name: "b".into(), ..Default::default() }], ..Default::default() });
        p.status = Some(PodStatus { phase: Some(phase.into()), ..Default::default() });
        p
    }

    #[test]
    fn only_unfinished_pods_of_this_node_are_looked_for() {
        let pods = vec![pod("n1", "Running"), pod("n2", "Running"), pod("n1", "Succeeded"), pod("n1", "Pending")];
        let got = candidates(&pods, "n1");
        assert_eq!(got.iter().map(|p| p.status.as_ref().unwrap().phase.clone().unwrap()).collect::<Vec<_>>(), ["Running", "Pending"]);
    }

    #[test]
    fn stored_ends_name_their_containers_by_index() {
        let mut p = pod("n1", "Running");
        let term = ContainerStateTerminated { exit_code: 0, reason: Some("Completed".into()), ..Default::default() };
        p.status.as_mut().unwrap().container_statuses = Some(vec![
            ContainerStatus { name: "b".into(), restart_count: 2, state: Some(ContainerState { terminated: Some(term), ..Default::default() }), ..Default::default() },
            ContainerStatus { name: "a".into(), state: Some(ContainerState { running: Some(Default::default()), ..Default::default() }), ..Default::default() },
        ]);
        let ends = stored_ends(&p);
        assert_eq!(ends.len(), 1);
        assert_eq!((ends[0].0, ends[0].1, ends[0].2.exit_code, ends[0].2.reason.as_str()), (1, 2, 0, "Completed"));
    }
}
