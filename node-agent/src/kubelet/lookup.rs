//! What a stream (`exec`, `attach`, `port-forward`) needs of the kubelet: the pod's
//! runtime, its sandbox and the running container, or the kubelet's words for why not.

use super::spec;
use super::{Kubelet, SandboxSlot};
use crate::runtime::streams::ExecTarget;
use crate::runtime::{Runtime, Sandbox};
use actix::prelude::*;
use std::sync::Arc;

/// Asks for the pod `namespace/pod` (with that uid, when given) and, unless `container`
/// is empty, its running container of that name.
#[derive(Message)]
#[rtype(result = "Result<Found, Refusal>")]
pub struct Lookup {
    pub namespace: String,
    pub pod: String,
    pub uid: String,
    pub container: String,
}

pub struct Found {
    pub runtime: Arc<dyn Runtime>,
    pub sandbox: Sandbox,
    pub target: Option<ExecTarget>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    pub code: u16,
    pub message: String,
}

fn refuse(code: u16, message: String) -> Refusal {
    Refusal { code, message }
}

impl Handler<Lookup> for Kubelet {
    type Result = Result<Found, Refusal>;
    fn handle(&mut self, m: Lookup, _: &mut Context<Self>) -> Self::Result {
        bus::metrics::handle(super::ACTOR, || {
            let Some((uid, rt)) = self.pods.iter().find(|(uid, rt)| {
                rt.pod.metadata.namespace.as_deref() == Some(m.namespace.as_str()) && rt.pod.metadata.name.as_deref() == Some(m.pod.as_str()) && (m.uid.is_empty() || **uid == m.uid)
            }) else {
                return Err(refuse(404, format!("pod {}/{} does not run on node {}", m.namespace, m.pod, self.node)));
            };
            let runtime = rt.runtime.clone().map_err(|e| refuse(400, e))?;
            let SandboxSlot::Ready(sandbox) = &rt.sandbox else {
                return Err(refuse(400, format!("pod {}/{} has no sandbox yet", m.namespace, m.pod)));
            };
            if m.container.is_empty() {
                return Ok(Found { runtime, sandbox: sandbox.clone(), target: None });
            }
            let spec = rt.pod.spec.as_ref();
            let Some(idx) = spec.and_then(|s| spec::index_of(s, &m.container)) else {
                return Err(refuse(400, format!("container {} is not valid for pod {}", m.container, m.pod)));
            };
            let Some((_, started)) = rt.procs.get(&idx).map(|(i, s)| (*i, s.clone())) else {
                return Err(refuse(400, format!("container not found (\"{}\")", m.container)));
            };
            let restarts = rt.state.containers.get(idx).map(|c| c.restart_count).unwrap_or(0);
            let dir = spec::pod_dir(&self.data_dir, &rt.state.namespace, &rt.state.name, uid);
            // exec sees the environment the container was started with.
            let env = rt.envs.get(&idx).cloned().unwrap_or_default();
            let cspec = spec::container_spec(&rt.pod, idx, &dir, restarts, &env).ok_or_else(|| refuse(400, format!("container {} is not valid for pod {}", m.container, m.pod)))?;
            let working_dir = cspec.working_dir.clone().unwrap_or_else(|| dir.join("work"));
            let target = ExecTarget { started, sandbox: sandbox.clone(), env: cspec.env, working_dir, log_path: cspec.log_path, security: cspec.security };
            Ok(Found { runtime, sandbox: sandbox.clone(), target: Some(target) })
        })
    }
}
