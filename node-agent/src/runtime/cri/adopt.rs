//! After an agent restart: what containerd still runs of this node's pods. containerd's
//! shims outlive the agent and its containerd child, so a new containerd on the same state
//! sees the old sandboxes and containers; the kubelet adopts those of pods still bound
//! here (`find`) and the rest go (`sweep`).

use super::client::{go_error, pb, Cri};
use super::{remove_sandbox_id, sandbox_config, CriRuntime, NODE_LABEL};
use crate::runtime::{Exit, Found, FoundContainer, SandboxSpec, Started};
use std::collections::HashMap;

fn at(nanos: i64) -> Option<jiff::Timestamp> {
    (nanos > 0).then(|| jiff::Timestamp::from_nanosecond(i128::from(nanos)).ok()).flatten()
}

impl CriRuntime {
    pub(super) async fn find_pod(&self, spec: &SandboxSpec) -> Option<Found> {
        let mut rt = self.cri.runtime.clone();
        let labels = [("io.kubernetes.pod.uid".to_string(), spec.uid.clone()), (NODE_LABEL.to_string(), self.node.clone())].into();
        let filter = pb::PodSandboxFilter { label_selector: labels, state: Some(pb::PodSandboxStateValue { state: pb::PodSandboxState::SandboxReady as i32 }), ..Default::default() };
        let items = rt.list_pod_sandbox(pb::ListPodSandboxRequest { filter: Some(filter) }).await.ok()?.into_inner().items;
        // Only one sandbox of a pod is ever ready; the newest wins if not.
        let sb = items.into_iter().max_by_key(|s| s.created_at)?;
        let attempt = sb.metadata.as_ref().map(|m| m.attempt).unwrap_or(0);
        let status = rt.pod_sandbox_status(pb::PodSandboxStatusRequest { pod_sandbox_id: sb.id.clone(), verbose: false }).await.ok()?.into_inner().status?;
        let ip = status.network.map(|n| n.ip).filter(|ip| !ip.is_empty());
        let ip = if spec.host_network { Some(self.host_ip.clone()) } else { ip };
        // CreateContainer wants the sandbox's config again: the one it was made with is
        // what the pod spec gives (its attempt included).
        let config = sandbox_config(&SandboxSpec { attempt, ..spec.clone() }, &self.node, &self.host_id);
        if let Ok(mut m) = self.configs.lock() {
            m.insert(sb.id.clone(), config);
        }
        let filter = pb::ContainerFilter { pod_sandbox_id: sb.id.clone(), ..Default::default() };
        let listed = rt.list_containers(pb::ListContainersRequest { filter: Some(filter) }).await.ok()?.into_inner().containers;
        // The newest instance of each container; older ones are what a watcher that died
        // with the agent did not remove.
        let mut newest: HashMap<String, pb::Container> = HashMap::new();
        let mut stale = Vec::new();
        for c in listed {
            let (name, attempt) = c.metadata.as_ref().map(|m| (m.name.clone(), m.attempt)).unwrap_or_default();
            match newest.get(&name) {
                Some(have) if have.metadata.as_ref().map(|m| m.attempt).unwrap_or(0) >= attempt => stale.push(c.id),
                _ => {
                    if let Some(old) = newest.insert(name, c) {
                        stale.push(old.id);
                    }
                }
            }
        }
        for id in stale {
            let _ = rt.remove_container(pb::RemoveContainerRequest { container_id: id }).await;
        }
        let mut containers = Vec::new();
        for (name, c) in newest {
            let Ok(r) = rt.container_status(pb::ContainerStatusRequest { container_id: c.id.clone(), verbose: false }).await else { continue };
            let Some(st) = r.into_inner().status else { continue };
            let ended = if st.state == pb::ContainerState::ContainerRunning as i32 {
                None
            } else if st.state == pb::ContainerState::ContainerExited as i32 {
                let reason = Some(st.reason.clone()).filter(|r| r == "OOMKilled");
                let finished = at(st.finished_at).unwrap_or_else(jiff::Timestamp::now);
                // Its end is recorded now; the runtime's copy is not needed any more.
                let _ = rt.remove_container(pb::RemoveContainerRequest { container_id: c.id.clone() }).await;
                Some((Exit { code: st.exit_code, reason }, finished))
            } else {
                // Created but never started, or unknown: started again by the kubelet.
                let _ = rt.remove_container(pb::RemoveContainerRequest { container_id: c.id.clone() }).await;
                continue;
            };
            containers.push(FoundContainer {
                name,
                attempt: st.metadata.as_ref().map(|m| m.attempt).unwrap_or(0),
                started: Started { id: format!("containerd://{}", c.id), pid: None },
                image_id: st.image_ref.clone(),
                started_at: at(st.started_at),
                ended,
            });
        }
        Some(Found { sandbox: crate::runtime::Sandbox { id: sb.id, ip }, attempt, containers })
    }

    pub(super) async fn sweep_except(cri: Cri, node: String, host_id: String, keep: Vec<String>) -> usize {
        let mut rt = cri.runtime.clone();
        let filter = pb::PodSandboxFilter { label_selector: [(NODE_LABEL.to_string(), node.clone())].into(), ..Default::default() };
        let items = match rt.list_pod_sandbox(pb::ListPodSandboxRequest { filter: Some(filter) }).await {
            Ok(r) => r.into_inner().items,
            Err(e) => {
                tracing::warn!(node = %node, error = %go_error(&e), "listing sandboxes left by an earlier agent failed");
                return 0;
            }
        };
        let mut n = 0;
        for s in items.iter().filter(|s| !keep.contains(&s.id)) {
            remove_sandbox_id(&cri, &s.id).await;
            if let Some(uid) = s.labels.get("io.kubernetes.pod.uid") {
                super::cgroups::remove_pod(&host_id, uid);
            }
            n += 1;
        }
        n
    }
}
