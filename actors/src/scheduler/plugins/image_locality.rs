//! Score: ImageLocality, prefer nodes that already hold the pod's images (from their
//! `status.images`), by size, discounted by how few nodes have them so one node holding a
//! popular image does not attract everything.

use super::{PodInfo, Snapshot};
use crate::scheduler::cache::NodeInfo;

const MB: i64 = 1024 * 1024;
/// kube's minThreshold and maxContainerThreshold.
const MIN_THRESHOLD: i64 = 23 * MB;
const MAX_CONTAINER_THRESHOLD: i64 = 1000 * MB;

/// An image reference as the runtime would name it: registry, repository and tag.
pub fn normalize(image: &str) -> String {
    let (name, digest) = match image.split_once('@') {
        Some((n, d)) => (n, Some(d)),
        None => (image, None),
    };
    let last = name.rsplit('/').next().unwrap_or(name);
    let tagged = if digest.is_some() || last.contains(':') { name.to_string() } else { format!("{name}:latest") };
    let first = tagged.split('/').next().unwrap_or("");
    let has_registry = tagged.contains('/') && (first.contains('.') || first.contains(':') || first == "localhost");
    let full = if has_registry {
        tagged
    } else if tagged.contains('/') {
        format!("docker.io/{tagged}")
    } else {
        format!("docker.io/library/{tagged}")
    };
    match digest {
        Some(d) => format!("{full}@{d}"),
        None => full,
    }
}

fn size_on(n: &NodeInfo, image: &str) -> Option<i64> {
    n.images.iter().find(|(names, _)| names.iter().any(|x| normalize(x) == image)).map(|(_, s)| *s)
}

/// 0..=100 for each node.
pub fn score(pod: &PodInfo, snap: &Snapshot, n: &NodeInfo) -> i64 {
    let Some(spec) = pod.pod.spec.as_ref() else { return 0 };
    let images: Vec<String> = spec.containers.iter().filter_map(|c| c.image.as_deref()).map(normalize).collect();
    let total = snap.nodes.len().max(1) as f64;
    let sum: i64 = images
        .iter()
        .filter_map(|img| {
            let size = size_on(n, img)?;
            let holders = snap.nodes.iter().filter(|m| size_on(m, img).is_some()).count() as f64;
            Some((size as f64 * holders / total) as i64)
        })
        .sum();
    let max = MAX_CONTAINER_THRESHOLD * images.len().max(1) as i64;
    let clamped = sum.clamp(MIN_THRESHOLD, max);
    100 * (clamped - MIN_THRESHOLD) / (max - MIN_THRESHOLD)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::plugins::testing::{node, pod_with};
    use serde_json::json;
    use std::collections::HashMap;

    #[test]
    fn names_are_normalised_like_the_runtime_does() {
        assert_eq!(normalize("busybox"), "docker.io/library/busybox:latest");
        assert_eq!(normalize("nginx:1.27"), "docker.io/library/nginx:1.27");
        assert_eq!(normalize("bitnami/redis"), "docker.io/bitnami/redis:latest");
        assert_eq!(normalize("registry.k8s.io/pause:3.10"), "registry.k8s.io/pause:3.10");
        assert_eq!(normalize("localhost:5000/app"), "localhost:5000/app:latest");
    }

    #[test]
    fn nodes_holding_big_images_score_higher() {
        let p = pod_with(json!({"containers": [{"name": "c", "image": "app:v1"}]}));
        let mut has = node("n1");
        has.images = vec![(vec!["docker.io/library/app:v1".into()], 600 * MB)];
        let nodes = vec![has, node("n2")];
        let ns = HashMap::new();
        let snap = Snapshot { nodes: &nodes, namespaces: &ns };
        let (a, b) = (score(&p, &snap, &nodes[0]), score(&p, &snap, &nodes[1]));
        assert!(a > 0 && b == 0, "{a} {b}");
        // Tiny images never count.
        let mut small = node("n3");
        small.images = vec![(vec!["app:v1".into()], MB)];
        let nodes = vec![small];
        assert_eq!(score(&p, &Snapshot { nodes: &nodes, namespaces: &ns }, &nodes[0]), 0);
    }
}
