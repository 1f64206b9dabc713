//! What the metrics collector needs of the kubelet: the containers running now, each
//! with the runtime that runs it.

use super::Kubelet;
use crate::runtime::{Runtime, Started};
use actix::prelude::*;
use std::sync::Arc;

#[derive(Message)]
#[rtype(result = "Vec<RunningContainer>")]
pub struct ListRunning;

pub struct RunningContainer {
    pub namespace: String,
    pub pod: String,
    pub uid: String,
    pub labels: std::collections::BTreeMap<String, String>,
    pub container: String,
    pub runtime: Arc<dyn Runtime>,
    pub started: Started,
}

impl Handler<ListRunning> for Kubelet {
    type Result = Vec<RunningContainer>;
    fn handle(&mut self, _: ListRunning, _: &mut Context<Self>) -> Self::Result {
        bus::metrics::poll(super::ACTOR, || {
            let mut out = Vec::new();
            for (uid, rt) in &self.pods {
                let Ok(runtime) = rt.runtime.clone() else { continue };
                let Some(spec) = rt.pod.spec.as_ref() else { continue };
                for (idx, (_, started)) in &rt.procs {
                    let Some(c) = super::spec::container_at(spec, *idx) else { continue };
                    out.push(RunningContainer {
                        namespace: rt.state.namespace.clone(),
                        pod: rt.state.name.clone(),
                        uid: uid.clone(),
                        labels: rt.pod.metadata.labels.clone().unwrap_or_default(),
                        container: c.name.clone(),
                        runtime: runtime.clone(),
                        started: started.clone(),
                    });
                }
            }
            out
        })
    }
}
