//! emptyDir `sizeLimit`, as the kubelet enforces it: a memory-backed one is a tmpfs of
//! its own sized by the limit (or by what the pod may use of memory), a disk-backed one
//! is measured every eviction period and its pod evicted once it holds more.

use super::lifecycle::{Event, Lifecycle};
use super::{projected, spec, status, Kubelet};
use actix::prelude::*;
use k8s_openapi::api::core::v1::{Pod, Volume};
use std::path::{Path, PathBuf};

fn bytes(q: &k8s_openapi::apimachinery::pkg::api::resource::Quantity) -> Option<u64> {
    schema::quantity::value(&q.0)
}

/// The pod's memory limit as its cgroup gets it: only when every container declares one
/// (the sum of the containers', or an init container's if larger).
fn pod_memory_limit(pod: &Pod) -> Option<u64> {
    let s = pod.spec.as_ref()?;
    let limit = |c: &k8s_openapi::api::core::v1::Container| c.resources.as_ref()?.limits.as_ref()?.get("memory").and_then(bytes);
    let mut sum = 0u64;
    for c in &s.containers {
        sum = sum.saturating_add(limit(c)?);
    }
    for c in s.init_containers.iter().flatten() {
        sum = sum.max(limit(c)?);
    }
    Some(sum)
}

/// The size of a memory-backed emptyDir's tmpfs (the kubelet's
/// `calculateEmptyDirMemorySize`): the node's allocatable memory, lowered to the pod's
/// memory limit and then to the volume's sizeLimit when those are smaller. None: the
/// kernel's default (no bound is known).
pub fn memory_size(pod: &Pod, v: &Volume, allocatable: u64) -> Option<u64> {
    let mut size = (allocatable != u64::MAX).then_some(allocatable);
    let lower = |size: Option<u64>, to: Option<u64>| match (size, to.filter(|&t| t > 0)) {
        (Some(s), Some(t)) if t <= s => Some(t),
        (None, Some(t)) => Some(t),
        (s, _) => s,
    };
    size = lower(size, pod_memory_limit(pod));
    lower(size, v.empty_dir.as_ref()?.size_limit.as_ref().and_then(bytes))
}

/// The disk-backed emptyDirs of `pod` with a sizeLimit: (name, bytes, the limit as written).
pub fn disk_limits(pod: &Pod) -> Vec<(String, u64, String)> {
    let vols = pod.spec.as_ref().and_then(|s| s.volumes.as_ref());
    vols.into_iter()
        .flatten()
        .filter_map(|v| {
            let e = v.empty_dir.as_ref().filter(|e| e.medium.as_deref() != Some("Memory"))?;
            let q = e.size_limit.as_ref()?;
            Some((v.name.clone(), bytes(q)?, q.0.clone()))
        })
        .collect()
}

/// The eviction message for the first volume over its limit, in the kubelet's words;
/// `used` holds each limited volume's usage, in `disk_limits`' order.
pub fn over_limit(limits: &[(String, u64, String)], used: &[u64]) -> Option<String> {
    limits.iter().zip(used).find(|((_, limit, _), used)| *used > limit).map(|((name, _, text), _)| format!("Usage of EmptyDir volume {name:?} exceeds the limit {text:?}. "))
}

/// What a directory tree holds on disk (allocated blocks, as `du`), links not followed.
pub fn usage(root: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(md) = std::fs::symlink_metadata(root) else { return 0 };
    let mut total = md.blocks() * 512;
    if md.is_dir() {
        for e in std::fs::read_dir(root).into_iter().flatten().flatten() {
            total += usage(&e.path());
        }
    }
    total
}

/// Mounts a tmpfs of `size` bytes at `dir` unless one is there already (the pod's volumes
/// are prepared again after a retry).
pub fn mount_tmpfs(dir: &Path, size: Option<u64>) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let parent = dir.parent().unwrap_or(Path::new("/"));
    if std::fs::metadata(dir)?.dev() != std::fs::metadata(parent)?.dev() {
        return Ok(());
    }
    let opts = match size {
        Some(s) => format!("mode=0777,size={s}"),
        None => "mode=0777".to_string(),
    };
    let c = |s: &[u8]| std::ffi::CString::new(s).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e));
    let (src, target, fstype, data) = (c(b"tmpfs")?, c(dir.as_os_str().as_encoded_bytes())?, c(b"tmpfs")?, c(opts.as_bytes())?);
    // SAFETY: plain syscall with NUL-terminated strings that outlive it.
    let r = unsafe { libc::mount(src.as_ptr(), target.as_ptr(), fstype.as_ptr(), libc::MS_NOSUID | libc::MS_NODEV, data.as_ptr().cast()) };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Unmounts whatever is mounted on the directories in `root` (a pod's memory emptyDirs),
/// so the tree can be removed.
pub fn unmount_all(root: &Path) {
    for e in std::fs::read_dir(root).into_iter().flatten().flatten() {
        if let Ok(c) = std::ffi::CString::new(e.path().as_os_str().as_encoded_bytes()) {
            // SAFETY: plain syscall; a directory with nothing mounted just fails (EINVAL).
            unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        }
    }
}

impl Kubelet {
    /// Measures the pod's limited disk emptyDirs every eviction period while it is
    /// active; a pod without any is never looked at (an idle node stays idle).
    pub(super) fn watch_local_storage(&mut self, uid: &str, ctx: &mut Context<Self>) {
        let Some(rt) = self.pods.get_mut(uid) else { return };
        if rt.storage_watched || disk_limits(&rt.pod).is_empty() {
            return;
        }
        rt.storage_watched = true;
        self.check_local_storage_later(uid.to_string(), ctx);
    }

    fn check_local_storage_later(&mut self, uid: String, ctx: &mut Context<Self>) {
        ctx.run_later(super::eviction::PERIOD, move |act, ctx| act.check_local_storage(uid, ctx));
    }

    fn check_local_storage(&mut self, uid: String, ctx: &mut Context<Self>) {
        let Some(rt) = self.pods.get(&uid).filter(|rt| rt.state.lifecycle == Lifecycle::Active && !matches!(status::pod_phase(&rt.state), "Succeeded" | "Failed")) else { return };
        let limits = disk_limits(&rt.pod);
        let dir = spec::pod_dir(&self.data_dir, &rt.state.namespace, &rt.state.name, &rt.state.uid);
        let paths: Vec<PathBuf> = limits.iter().map(|(name, _, _)| projected::volume_dir(&dir, name)).collect();
        let measure = tokio::task::spawn_blocking(move || over_limit(&limits, &paths.iter().map(|p| usage(p)).collect::<Vec<_>>()));
        ctx.spawn(async move { measure.await.ok().flatten() }.into_actor(self).map(move |over, act, ctx| {
            let active = act.pods.get(&uid).is_some_and(|rt| rt.state.lifecycle == Lifecycle::Active);
            match over {
                Some(message) if active => {
                    tracing::warn!(node = %act.node, pod = %uid, reason = %message, "evicting a pod");
                    act.note(&uid, "Warning", "Evicted", message.clone());
                    act.drive(&uid, Event::Evicted { message }, ctx);
                }
                _ if active => act.check_local_storage_later(uid, ctx),
                _ => {}
            }
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(containers: serde_json::Value, volumes: serde_json::Value) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": {"containers": containers, "volumes": volumes}})).unwrap()
    }

    #[test]
    fn a_memory_volume_is_sized_by_the_smallest_known_bound() {
        let limited = json!([{"name": "a", "resources": {"limits": {"memory": "64Mi"}}}, {"name": "b", "resources": {"limits": {"memory": "32Mi"}}}]);
        let p = pod(limited.clone(), json!([{"name": "m", "emptyDir": {"medium": "Memory", "sizeLimit": "8Mi"}}, {"name": "n", "emptyDir": {"medium": "Memory"}}, {"name": "big", "emptyDir": {"medium": "Memory", "sizeLimit": "1Gi"}}]));
        let vols = p.spec.as_ref().unwrap().volumes.clone().unwrap();
        assert_eq!(memory_size(&p, &vols[0], u64::MAX), Some(8 << 20));
        assert_eq!(memory_size(&p, &vols[1], u64::MAX), Some(96 << 20), "the pod's limit");
        assert_eq!(memory_size(&p, &vols[2], u64::MAX), Some(96 << 20), "a sizeLimit above the pod's limit is not used");
        assert_eq!(memory_size(&p, &vols[1], 50 << 20), Some(50 << 20), "allocatable below the pod's limit");
        let unlimited = pod(json!([{"name": "a", "resources": {"limits": {"memory": "64Mi"}}}, {"name": "b"}]), json!([{"name": "n", "emptyDir": {"medium": "Memory"}}]));
        let v = &unlimited.spec.as_ref().unwrap().volumes.as_ref().unwrap()[0];
        assert_eq!(memory_size(&unlimited, v, u64::MAX), None, "a container without a limit: the pod has none");
        assert_eq!(memory_size(&unlimited, v, 1 << 30), Some(1 << 30));
    }

    #[test]
    fn disk_volumes_over_their_limit_give_the_kubelets_message() {
        let p = pod(json!([{"name": "a"}]), json!([{"name": "mem", "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}}, {"name": "free", "emptyDir": {}},
            {"name": "data", "emptyDir": {"sizeLimit": "10Mi"}}, {"name": "logs", "emptyDir": {"sizeLimit": "1Gi"}}]));
        let limits = disk_limits(&p);
        assert_eq!(limits, vec![("data".to_string(), 10 << 20, "10Mi".to_string()), ("logs".to_string(), 1 << 30, "1Gi".to_string())]);
        assert_eq!(over_limit(&limits, &[10 << 20, 0]), None, "at the limit is not over it");
        assert_eq!(over_limit(&limits, &[20 << 20, 0]).as_deref(), Some("Usage of EmptyDir volume \"data\" exceeds the limit \"10Mi\". "));
        assert_eq!(over_limit(&limits, &[0, 2 << 30]).as_deref(), Some("Usage of EmptyDir volume \"logs\" exceeds the limit \"1Gi\". "));
    }

    #[test]
    fn usage_counts_what_files_hold_on_disk() {
        let dir = std::env::temp_dir().join(format!("flotilla-usage-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(dir.join("sub/f"), vec![1u8; 1 << 20]).unwrap();
        let u = usage(&dir);
        assert!((1 << 20..2 << 20).contains(&u), "{u}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
