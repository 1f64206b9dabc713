//! Filter: the node's allocatable CPU, memory and pod count cover what is already
//! requested there plus this pod's requests (NodeResourcesFit).

use crate::scheduler::cache::{NodeInfo, Resources};

pub fn filter(req: Resources, n: &NodeInfo) -> Result<(), Vec<String>> {
    let mut why = Vec::new();
    if n.requested.cpu_millis + req.cpu_millis > n.allocatable.cpu_millis {
        why.push("Insufficient cpu".to_string());
    }
    if n.requested.memory + req.memory > n.allocatable.memory {
        why.push("Insufficient memory".to_string());
    }
    if n.requested.pods + req.pods > n.allocatable.pods {
        why.push("Too many pods".to_string());
    }
    if why.is_empty() { Ok(()) } else { Err(why) }
}
