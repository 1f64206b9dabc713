//! cgroup v1 limits for host-mode containers: each one with resources gets a memory and a
//! cpu cgroup of its own under the agent's parent (`/flotilla/<host id>/host/pod<uid>/…`,
//! beside containerd's pods, removed with the node's tree), which the process enters
//! before exec, so an OOM kill is the kernel's verdict on it as it would be under runc.

use super::Resources;
use std::path::{Path, PathBuf};

const ROOT: &str = "/sys/fs/cgroup";
/// The CFS period the kubelet uses (100 ms).
const PERIOD_US: i64 = 100_000;

/// The files to write in each controller for `r` (the kubelet's cgroupfs figures); empty
/// when nothing is asked.
pub fn settings(r: &Resources) -> Vec<(&'static str, &'static str, String)> {
    let mut out = Vec::new();
    if let Some(m) = r.memory_limit_bytes {
        out.push(("memory", "memory.limit_in_bytes", m.to_string()));
    }
    if let Some(req) = r.cpu_request_millis {
        out.push(("cpu", "cpu.shares", ((req as i64) * 1024 / 1000).max(2).to_string()));
    }
    if let Some(lim) = r.cpu_limit_millis {
        out.push(("cpu", "cpu.cfs_period_us", PERIOD_US.to_string()));
        out.push(("cpu", "cpu.cfs_quota_us", ((lim as i64) * PERIOD_US / 1000).max(1000).to_string()));
    }
    out
}

/// A container's cgroup, relative to each hierarchy's root.
pub fn container_rel(parent: &str, pod_uid: &str, name: &str, attempt: u32) -> String {
    format!("{}/{name}-{attempt}", pod_rel(parent, pod_uid))
}

/// A pod's cgroup, relative to each hierarchy's root.
pub fn pod_rel(parent: &str, pod_uid: &str) -> String {
    format!("{parent}/pod{}", pod_uid.replace('-', "_"))
}

fn dir(controller: &str, rel: &str) -> PathBuf {
    Path::new(ROOT).join(controller).join(rel.trim_start_matches('/'))
}

/// Makes the container's cgroups and writes its limits; returns the `cgroup.procs` files
/// the process writes itself into (memory first: a limit must hold from the start).
pub fn create(rel: &str, r: &Resources) -> std::io::Result<Vec<PathBuf>> {
    let s = settings(r);
    let mut controllers: Vec<&str> = s.iter().map(|(c, _, _)| *c).collect();
    controllers.dedup();
    let mut procs = Vec::new();
    for c in controllers {
        let d = dir(c, rel);
        std::fs::create_dir_all(&d)?;
        for (_, file, value) in s.iter().filter(|(cc, _, _)| *cc == c) {
            std::fs::write(d.join(file), value).map_err(|e| std::io::Error::new(e.kind(), format!("writing {}: {e}", d.join(file).display())))?;
        }
        procs.push(d.join("cgroup.procs"));
    }
    Ok(procs)
}

/// Whether the kernel's OOM killer ended a process of the container's memory cgroup.
pub fn oom_killed(rel: &str) -> bool {
    let f = std::fs::read_to_string(dir("memory", rel).join("memory.oom_control")).unwrap_or_default();
    f.lines().filter_map(|l| l.strip_prefix("oom_kill ")).any(|n| n.trim().parse::<u64>().is_ok_and(|n| n > 0))
}

/// Removes the container's cgroups (they must be empty: its processes are gone).
pub fn remove(rel: &str) {
    for c in ["memory", "cpu"] {
        let _ = std::fs::remove_dir(dir(c, rel));
    }
}

/// Removes the pod's cgroups, children first.
pub fn remove_pod(parent: &str, pod_uid: &str) {
    for c in ["memory", "cpu"] {
        let d = dir(c, &pod_rel(parent, pod_uid));
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                let _ = std::fs::remove_dir(e.path());
            }
        }
        let _ = std::fs::remove_dir(&d);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_become_the_kubelets_cgroupfs_figures() {
        assert!(settings(&Resources::default()).is_empty());
        let r = Resources { memory_limit_bytes: Some(16 << 20), cpu_request_millis: Some(250), cpu_limit_millis: Some(500) };
        assert_eq!(
            settings(&r),
            vec![("memory", "memory.limit_in_bytes", "16777216".to_string()), ("cpu", "cpu.shares", "256".into()), ("cpu", "cpu.cfs_period_us", "100000".into()), ("cpu", "cpu.cfs_quota_us", "50000".into())]
        );
        assert_eq!(container_rel("/flotilla/ab-n1/host", "u-1", "c", 2), "/flotilla/ab-n1/host/podu_1/c-2");
    }
}
