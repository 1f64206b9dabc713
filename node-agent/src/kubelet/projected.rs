//! Volumes the kubelet writes itself: configMap, secret, downwardAPI and projected
//! (their configMap, secret and downwardAPI sources), and emptyDir (on disk, or in
//! memory under /dev/shm). `files` is pure: a volume's payload from the objects it names;
//! `write_atomic` lays it out as the kubelet's atomic writer does (`..data` → a
//! timestamped directory, each top-level name a link into `..data`), so a reader never
//! sees half an update, and an unchanged payload writes nothing.

use super::env::{resource_field, Downward, Sources};
use k8s_openapi::api::core::v1::{DownwardAPIVolumeFile, KeyToPath, Pod, Volume};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The mode of a written file when the volume says nothing (0644).
pub const DEFAULT_MODE: i32 = 0o644;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct File {
    /// Relative to the volume's root; never absolute, never with `..`.
    pub path: String,
    pub data: Vec<u8>,
    pub mode: u32,
}

/// Whether the kubelet writes this volume's content (then it is mounted read-only).
pub fn is_written(v: &Volume) -> bool {
    v.config_map.is_some() || v.secret.is_some() || v.downward_api.is_some() || v.projected.is_some()
}

/// The ConfigMaps and Secrets the pod's volumes name.
pub fn referenced(pod: &Pod) -> (BTreeSet<String>, BTreeSet<String>) {
    let (mut cms, mut secrets) = (BTreeSet::new(), BTreeSet::new());
    for v in pod.spec.as_ref().and_then(|s| s.volumes.as_ref()).into_iter().flatten() {
        if let Some(c) = &v.config_map {
            cms.insert(c.name.clone());
        }
        if let Some(s) = v.secret.as_ref().and_then(|s| s.secret_name.clone()) {
            secrets.insert(s);
        }
        for p in v.projected.iter().flat_map(|p| p.sources.iter().flatten()) {
            if let Some(c) = &p.config_map {
                cms.insert(c.name.clone());
            }
            if let Some(s) = &p.secret {
                secrets.insert(s.name.clone());
            }
        }
    }
    (cms, secrets)
}

/// The (audience, expirationSeconds) of every projected ServiceAccount token of the pod.
pub fn token_requests(pod: &Pod) -> BTreeSet<(String, i64)> {
    let vols = pod.spec.as_ref().and_then(|s| s.volumes.as_ref()).into_iter().flatten();
    vols.flat_map(|v| v.projected.iter().flat_map(|p| p.sources.iter().flatten()))
        .filter_map(|s| s.service_account_token.as_ref())
        .map(|t| (t.audience.clone().unwrap_or_default(), t.expiration_seconds.unwrap_or(schema::tokens::DEFAULT_EXPIRATION)))
        .collect()
}

/// Whether the pod has a downwardAPI file (plain or projected), which follows its labels
/// and annotations.
pub fn has_downward(pod: &Pod) -> bool {
    pod.spec.as_ref().and_then(|s| s.volumes.as_ref()).into_iter().flatten().any(|v| v.downward_api.is_some() || v.projected.iter().flat_map(|p| p.sources.iter().flatten()).any(|s| s.downward_api.is_some()))
}

fn safe(path: &str) -> Result<String, String> {
    if path.is_empty() || path.starts_with('/') || path.split('/').any(|p| p == ".." || p.is_empty()) || path.starts_with("..") {
        return Err(format!("invalid path {path:?}: must be relative, without '..'"));
    }
    Ok(path.to_string())
}

fn mode_of(item: Option<i32>, default: Option<i32>) -> u32 {
    (item.or(default).unwrap_or(DEFAULT_MODE) & 0o777) as u32
}

/// Key→bytes of a source, through its `items` when given (a missing listed key is an error
/// unless the source is optional), as the files it makes.
fn keyed(data: BTreeMap<String, Vec<u8>>, items: Option<&Vec<KeyToPath>>, default_mode: Option<i32>, optional: bool, what: &str) -> Result<Vec<File>, String> {
    let mut out = Vec::new();
    match items {
        Some(items) if !items.is_empty() => {
            for it in items {
                match data.get(&it.key) {
                    Some(d) => out.push(File { path: safe(&it.path)?, data: d.clone(), mode: mode_of(it.mode, default_mode) }),
                    None if optional => {}
                    None => return Err(format!("{what} references non-existent {} key: {}", if what == "configmap" { "config" } else { "secret" }, it.key)),
                }
            }
        }
        _ => {
            for (k, d) in data {
                out.push(File { path: safe(&k)?, data: d, mode: mode_of(None, default_mode) });
            }
        }
    }
    Ok(out)
}

/// `key="value"` lines, sorted, as the downward API writes labels and annotations.
fn pairs(m: Option<&BTreeMap<String, String>>) -> String {
    m.into_iter().flatten().map(|(k, v)| format!("{k}={v:?}")).collect::<Vec<_>>().join("\n")
}

fn downward_files(pod: &Pod, items: &[DownwardAPIVolumeFile], default_mode: Option<i32>, d: &Downward) -> Result<Vec<File>, String> {
    let mut out = Vec::new();
    for it in items {
        let data = if let Some(f) = &it.field_ref {
            let m = &pod.metadata;
            match f.field_path.as_str() {
                "metadata.labels" => pairs(m.labels.as_ref()),
                "metadata.annotations" => pairs(m.annotations.as_ref()),
                p => super::env::field(pod, p, d)?,
            }
        } else if let Some(r) = &it.resource_field_ref {
            let name = r.container_name.clone().unwrap_or_default();
            let c = pod.spec.as_ref().into_iter().flat_map(super::spec::all_containers).find(|c| c.name == name).ok_or_else(|| format!("container {name:?} not found for resourceFieldRef {}", r.resource))?;
            resource_field(c, &r.resource, r.divisor.as_ref().map(|q| q.0.as_str()), d.allocatable)?
        } else {
            continue;
        };
        out.push(File { path: safe(&it.path)?, data: data.into_bytes(), mode: mode_of(it.mode, default_mode) });
    }
    Ok(out)
}

/// The files of a written volume, or why it cannot be set up (the FailedMount message
/// after `MountVolume.SetUp failed for volume …`).
pub fn files(v: &Volume, pod: &Pod, src: &Sources, d: &Downward) -> Result<Vec<File>, String> {
    if let Some(c) = &v.config_map {
        let optional = c.optional == Some(true);
        return match src.config_map(&c.name) {
            Some(data) => keyed(data, c.items.as_ref(), c.default_mode, optional, "configmap"),
            None if optional => Ok(Vec::new()),
            None => Err(format!("configmap \"{}\" not found", c.name)),
        };
    }
    if let Some(s) = &v.secret {
        let name = s.secret_name.clone().unwrap_or_default();
        let optional = s.optional == Some(true);
        return match src.secret(&name) {
            Some(data) => keyed(data, s.items.as_ref(), s.default_mode, optional, "secret"),
            None if optional => Ok(Vec::new()),
            None => Err(format!("secret \"{name}\" not found")),
        };
    }
    if let Some(dw) = &v.downward_api {
        return downward_files(pod, dw.items.as_deref().unwrap_or_default(), dw.default_mode, d);
    }
    let Some(p) = &v.projected else { return Ok(Vec::new()) };
    let mut out = Vec::new();
    for s in p.sources.iter().flatten() {
        if let Some(c) = &s.config_map {
            let optional = c.optional == Some(true);
            match src.config_map(&c.name) {
                Some(data) => out.extend(keyed(data, c.items.as_ref(), p.default_mode, optional, "configmap")?),
                None if optional => {}
                None => return Err(format!("configmap \"{}\" not found", c.name)),
            }
        }
        if let Some(sec) = &s.secret {
            let optional = sec.optional == Some(true);
            match src.secret(&sec.name) {
                Some(data) => out.extend(keyed(data, sec.items.as_ref(), p.default_mode, optional, "secret")?),
                None if optional => {}
                None => return Err(format!("secret \"{}\" not found", sec.name)),
            }
        }
        if let Some(dw) = &s.downward_api {
            out.extend(downward_files(pod, dw.items.as_deref().unwrap_or_default(), p.default_mode, d)?);
        }
        if let Some(t) = &s.service_account_token {
            let key = super::env::token_key(t.audience.as_deref().unwrap_or(""), t.expiration_seconds.unwrap_or(schema::tokens::DEFAULT_EXPIRATION));
            let token = src.tokens.get(&key).ok_or_else(|| format!("failed to fetch token: no token for audience {:?}", t.audience.as_deref().unwrap_or("")))?;
            out.push(File { path: safe(&t.path)?, data: token.clone().into_bytes(), mode: mode_of(None, p.default_mode) });
        }
    }
    Ok(out)
}

fn read_tree(root: &Path, rel: &Path, out: &mut BTreeMap<String, (Vec<u8>, u32)>) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    for e in std::fs::read_dir(root.join(rel))? {
        let e = e?;
        let r = rel.join(e.file_name());
        let md = e.metadata()?;
        if md.is_dir() {
            read_tree(root, &r, out)?;
        } else {
            out.insert(r.to_string_lossy().into_owned(), (std::fs::read(root.join(&r))?, md.permissions().mode() & 0o777));
        }
    }
    Ok(())
}

/// Lays `files` out in `dir` atomically; false when the payload there is the same already.
pub fn write_atomic(dir: &Path, files: &[File]) -> std::io::Result<bool> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir)?;
    let want: BTreeMap<String, (Vec<u8>, u32)> = files.iter().map(|f| (f.path.clone(), (f.data.clone(), f.mode))).collect();
    let data = dir.join("..data");
    let old = std::fs::read_link(&data).ok();
    if old.is_some() {
        let mut have = BTreeMap::new();
        if read_tree(&data, Path::new(""), &mut have).is_ok() && have == want {
            return Ok(false);
        }
    }
    let stamp = format!("..{}", jiff::Timestamp::now().as_nanosecond());
    let fresh = dir.join(&stamp);
    std::fs::create_dir(&fresh)?;
    for (path, (bytes, mode)) in &want {
        let at = fresh.join(path);
        if let Some(parent) = at.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&at, bytes)?;
        std::fs::set_permissions(&at, std::fs::Permissions::from_mode(*mode))?;
    }
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(&stamp, &tmp)?;
    std::fs::rename(&tmp, &data)?;
    let top: BTreeSet<String> = want.keys().map(|p| p.split('/').next().unwrap_or(p).to_string()).collect();
    for name in &top {
        let link = dir.join(name);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(PathBuf::from("..data").join(name), &link)?;
        }
    }
    for e in std::fs::read_dir(dir)?.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with("..") {
            if name != "..data" && name != stamp {
                let _ = std::fs::remove_dir_all(e.path());
            }
        } else if !top.contains(&name) {
            let _ = std::fs::remove_file(e.path());
        }
    }
    Ok(true)
}

/// Where a pod's memory-backed emptyDirs live: tmpfs, removed with the pod.
pub fn memory_root(uid: &str) -> PathBuf {
    PathBuf::from("/dev/shm/flotilla-pods").join(uid)
}

/// The directory a pod's written volume or disk emptyDir gets.
pub fn volume_dir(pod_dir: &Path, name: &str) -> PathBuf {
    pod_dir.join(".volumes").join(name)
}

/// Removes what the pod's volumes wrote on this node (the pod is gone).
pub fn remove_pod_data(pod_dir: &Path, uid: &str) {
    let _ = std::fs::remove_dir_all(pod_dir.join(".volumes"));
    let _ = std::fs::remove_file(super::hosts::path(pod_dir));
    if !uid.is_empty() {
        let root = memory_root(uid);
        super::local_storage::unmount_all(&root);
        let _ = std::fs::remove_dir_all(&root);
        // The shared parent goes with the last pod (fails harmlessly while others use it).
        if let Some(parent) = root.parent() {
            let _ = std::fs::remove_dir(parent);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kubelet::admission::Allocatable;
    use serde_json::json;

    fn d() -> Downward {
        Downward { node: "n1".into(), host_ip: "10.0.0.1".into(), pod_ip: "10.244.0.5".into(), allocatable: Allocatable { cpu_millis: 2000, memory_bytes: 1 << 30, pods: 110 } }
    }

    fn pod(volumes: serde_json::Value) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "p", "namespace": "ns", "uid": "u1", "labels": {"b": "2", "a": "1"}},
            "spec": {"containers": [{"name": "c", "resources": {"limits": {"memory": "128Mi"}}}], "volumes": volumes}})).unwrap()
    }

    fn src() -> Sources {
        let mut s = Sources::default();
        s.config_maps.insert("cfg".into(), Some(serde_json::from_value(json!({"metadata": {"name": "cfg"}, "data": {"a.conf": "x=1", "b": "2"}})).unwrap()));
        s.secrets.insert("sec".into(), Some(serde_json::from_value(json!({"metadata": {"name": "sec"}, "data": {"pw": "aHVudGVyMg=="}})).unwrap()));
        s
    }

    fn vol(p: &Pod) -> &Volume {
        &p.spec.as_ref().unwrap().volumes.as_ref().unwrap()[0]
    }

    #[test]
    fn config_maps_write_every_key_or_the_listed_items_with_their_modes() {
        let p = pod(json!([{"name": "v", "configMap": {"name": "cfg", "defaultMode": 0o600}}]));
        let f = files(vol(&p), &p, &src(), &d()).unwrap();
        assert_eq!(f, vec![File { path: "a.conf".into(), data: b"x=1".to_vec(), mode: 0o600 }, File { path: "b".into(), data: b"2".to_vec(), mode: 0o600 }]);
        let p = pod(json!([{"name": "v", "configMap": {"name": "cfg", "items": [{"key": "b", "path": "sub/bee", "mode": 0o400}]}}]));
        assert_eq!(files(vol(&p), &p, &src(), &d()).unwrap(), vec![File { path: "sub/bee".into(), data: b"2".to_vec(), mode: 0o400 }]);
        let p = pod(json!([{"name": "v", "configMap": {"name": "cfg", "items": [{"key": "zz", "path": "z"}]}}]));
        assert_eq!(files(vol(&p), &p, &src(), &d()).unwrap_err(), "configmap references non-existent config key: zz");
        let p = pod(json!([{"name": "v", "configMap": {"name": "gone"}}]));
        assert_eq!(files(vol(&p), &p, &src(), &d()).unwrap_err(), "configmap \"gone\" not found");
        let p = pod(json!([{"name": "v", "configMap": {"name": "gone", "optional": true}}]));
        assert_eq!(files(vol(&p), &p, &src(), &d()).unwrap(), vec![]);
        let p = pod(json!([{"name": "v", "configMap": {"name": "cfg", "items": [{"key": "b", "path": "../escape"}]}}]));
        assert!(files(vol(&p), &p, &src(), &d()).is_err());
    }

    #[test]
    fn secrets_downward_api_and_projections_combine() {
        let p = pod(json!([{"name": "v", "projected": {"defaultMode": 0o440, "sources": [
            {"secret": {"name": "sec"}},
            {"configMap": {"name": "cfg", "items": [{"key": "b", "path": "b"}]}},
            {"downwardAPI": {"items": [
                {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
                {"path": "name", "fieldRef": {"fieldPath": "metadata.name"}},
                {"path": "mem", "resourceFieldRef": {"containerName": "c", "resource": "limits.memory", "divisor": "1Mi"}}]}}]}}]));
        let f = files(vol(&p), &p, &src(), &d()).unwrap();
        let get = |n: &str| f.iter().find(|x| x.path == n).map(|x| (String::from_utf8(x.data.clone()).unwrap(), x.mode));
        assert_eq!(get("pw"), Some(("hunter2".into(), 0o440)));
        assert_eq!(get("b"), Some(("2".into(), 0o440)));
        assert_eq!(get("labels"), Some(("a=\"1\"\nb=\"2\"".into(), 0o440)));
        assert_eq!(get("name"), Some(("p".into(), 0o440)));
        assert_eq!(get("mem"), Some(("128".into(), 0o440)));
    }

    #[test]
    fn the_atomic_writer_swaps_whole_payloads_and_skips_unchanged_ones() {
        let dir = tempfile::tempdir().unwrap();
        let at = dir.path().join("v");
        let one = vec![File { path: "a".into(), data: b"1".to_vec(), mode: 0o644 }, File { path: "d/e".into(), data: b"x".to_vec(), mode: 0o600 }];
        assert!(write_atomic(&at, &one).unwrap());
        assert_eq!(std::fs::read_to_string(at.join("a")).unwrap(), "1");
        assert_eq!(std::fs::read_to_string(at.join("d/e")).unwrap(), "x");
        assert!(std::fs::symlink_metadata(at.join("a")).unwrap().file_type().is_symlink());
        assert!(!write_atomic(&at, &one).unwrap(), "same payload: nothing written");
        let two = vec![File { path: "a".into(), data: b"2".to_vec(), mode: 0o644 }];
        assert!(write_atomic(&at, &two).unwrap());
        assert_eq!(std::fs::read_to_string(at.join("a")).unwrap(), "2");
        assert!(std::fs::symlink_metadata(at.join("d")).is_err(), "a key that went is unlinked");
        let stamps = std::fs::read_dir(&at).unwrap().flatten().filter(|e| e.file_name().to_string_lossy().starts_with("..") && e.file_name() != "..data").count();
        assert_eq!(stamps, 1, "the old payload is removed");
    }
}
