//! Pod cgroups under one parent per agent (`/flotilla/<host id>/pod<uid>`, cgroupfs driver):
//! containerd makes them and leaves them behind when a pod goes, so the agent removes a
//! pod's directories after its sandbox, and the node's whole tree when it stops.

use std::path::{Path, PathBuf};

const ROOT: &str = "/sys/fs/cgroup";

pub fn node_parent(node: &str) -> String {
    format!("/flotilla/{node}")
}

pub fn pod_parent(node: &str, uid: &str) -> String {
    format!("{}/pod{}", node_parent(node), uid.replace('-', "_"))
}

/// The hierarchies mounted here: each v1 controller and the unified (v2) one.
fn hierarchies() -> Vec<PathBuf> {
    let root = Path::new(ROOT);
    if root.join("cgroup.controllers").exists() {
        return vec![root.to_path_buf()];
    }
    std::fs::read_dir(root).map(|rd| rd.flatten().map(|e| e.path()).filter(|p| p.is_dir() && !p.is_symlink()).collect()).unwrap_or_default()
}

/// Removes the empty directories at and below `rel` (deepest first), in every hierarchy.
fn remove_tree(rel: &str) {
    for h in hierarchies() {
        let top = h.join(rel.trim_start_matches('/'));
        let mut dirs = Vec::new();
        collect(&top, &mut dirs);
        dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
        for d in dirs {
            let _ = std::fs::remove_dir(&d);
        }
    }
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    if !dir.is_dir() {
        return;
    }
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                collect(&e.path(), out);
            }
        }
    }
    out.push(dir.to_path_buf());
}

pub fn remove_pod(node: &str, uid: &str) {
    remove_tree(&pod_parent(node, uid));
}

/// The node's tree, and `/flotilla` itself once no other node uses it.
pub fn remove_node(node: &str) {
    remove_tree(&node_parent(node));
    for h in hierarchies() {
        let _ = std::fs::remove_dir(h.join("flotilla"));
    }
}
