//! Scheduler plugins: each a small pure function over (pod, node). Filters say why a node
//! is rejected; scores rank the rest. `place` runs them all.

pub mod fit;
pub mod least_allocated;
pub mod node_ready;

use super::cache::{NodeInfo, Resources};
use std::collections::BTreeMap;

/// Picks the best node, or explains why none fits ("0/2 nodes are available: …").
pub fn place(req: Resources, nodes: &[NodeInfo]) -> Result<String, String> {
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    let mut best: Option<(u64, &NodeInfo)> = None;
    for n in nodes {
        let verdict = node_ready::filter(n).and_then(|_| fit::filter(req, n));
        match verdict {
            Err(why) => {
                for w in why {
                    *reasons.entry(w).or_default() += 1;
                }
            }
            Ok(()) => {
                let s = least_allocated::score(req, n);
                if best.map(|(b, _)| s > b).unwrap_or(true) {
                    best = Some((s, n));
                }
            }
        }
    }
    match best {
        Some((_, n)) => Ok(n.name.clone()),
        None => {
            let detail: Vec<String> = reasons.iter().map(|(r, c)| format!("{c} {r}")).collect();
            Err(format!("0/{} nodes are available: {}.", nodes.len(), if detail.is_empty() { "no nodes registered".to_string() } else { detail.join(", ") }))
        }
    }
}
