//! Filter: only Ready nodes that are not cordoned take new pods.

use crate::scheduler::cache::NodeInfo;

pub fn filter(n: &NodeInfo) -> Result<(), Vec<String>> {
    let mut why = Vec::new();
    if !n.ready {
        why.push("node(s) were not ready".to_string());
    }
    if n.unschedulable {
        why.push("node(s) were unschedulable".to_string());
    }
    if why.is_empty() { Ok(()) } else { Err(why) }
}
