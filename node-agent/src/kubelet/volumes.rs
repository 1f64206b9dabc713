//! The kubelet's volumes (its volume manager, in small): a pod's claims and hostPaths
//! become directories on this node before its sandbox is made (FailedMount while a claim
//! is unbound), then CRI bind mounts, or for host processes (no mount namespace) a
//! `FLOTILLA_VOLUME_<NAME>` variable and a `<pod dir>/volumes/<name>` link.

use super::env::{Downward, Sources};
use super::{projected, Kubelet, PodRt, SandboxSlot};
use crate::runtime::{Mount, Runtime};
use actix::prelude::*;
use bus::informer::{watch_objects, InformerEvent, Scope};
use bus::Client;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// How soon a pod whose volumes are not ready is tried again.
const MOUNT_RETRY: Duration = Duration::from_secs(2);
/// How often the orphan sweep looks at the disk again besides volume deletions, for
/// directories a pod still used when their volume went.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// Volume directories in use on this node, by pod uid (shared with the orphan sweep).
pub type InUse = Arc<std::sync::Mutex<BTreeMap<String, Vec<PathBuf>>>>;

/// The pod is gone from this node: its volumes are free.
pub fn release(in_use: &InUse, uid: &str) {
    if let Ok(mut m) = in_use.lock() {
        m.remove(uid);
    }
}

/// A pod volume made ready on this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mounted {
    pub name: String,
    pub host_path: PathBuf,
    pub read_only: bool,
}

/// Where a volume's data lives on the node, from its source.
fn volume_path(pv: &PersistentVolume) -> Option<(PathBuf, Option<String>)> {
    let spec = pv.spec.as_ref()?;
    if let Some(l) = &spec.local {
        return Some((PathBuf::from(&l.path), None));
    }
    spec.host_path.as_ref().map(|h| (PathBuf::from(&h.path), h.type_.clone()))
}

/// Makes or checks a hostPath the way its `type` asks.
fn host_path_ready(path: &Path, type_: Option<&str>) -> Result<(), String> {
    match type_.unwrap_or("") {
        "DirectoryOrCreate" => {
            std::fs::create_dir_all(path).map_err(|e| format!("creating {}: {e}", path.display()))?;
            // As k3s' local-path: any user a container runs as may write there.
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o777));
            Ok(())
        }
        "Directory" if !path.is_dir() => Err(format!("hostPath type check failed: {} is not a directory", path.display())),
        "File" if !path.is_file() => Err(format!("hostPath type check failed: {} is not a file", path.display())),
        "FileOrCreate" if !path.exists() => std::fs::File::create(path).map(drop).map_err(|e| format!("creating {}: {e}", path.display())),
        _ => Ok(()),
    }
}

/// Resolves and makes ready every volume of `pod` flotilla's node agent mounts; an error
/// says what the pod waits for (a FailedMount event).
pub async fn prepare(client: Client, pod: Pod, pod_dir: PathBuf, d: Downward) -> Result<(Vec<Mounted>, Option<i64>), String> {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let mut out = Vec::new();
    for v in pod.spec.as_ref().and_then(|s| s.volumes.clone()).unwrap_or_default() {
        if projected::is_written(&v) {
            out.push(Mounted { name: v.name.clone(), host_path: projected::volume_dir(&pod_dir, &v.name), read_only: true });
        } else if let Some(e) = &v.empty_dir {
            let memory = e.medium.as_deref() == Some("Memory");
            let dir = if memory { projected::memory_root(&uid).join(&v.name) } else { projected::volume_dir(&pod_dir, &v.name) };
            let setup = |e: std::io::Error| format!("MountVolume.SetUp failed for volume \"{}\" : {}: {e}", v.name, dir.display());
            std::fs::create_dir_all(&dir).map_err(setup)?;
            if memory {
                super::local_storage::mount_tmpfs(&dir, super::local_storage::memory_size(&pod, &v, d.allocatable.memory_bytes)).map_err(setup)?;
            }
            // As the kubelet's: any user the containers run as may write there.
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).map_err(setup)?;
            if let Some(gid) = super::security::fs_group(&pod) {
                super::security::own_volume(&dir, gid, false).map_err(setup)?;
            }
            out.push(Mounted { name: v.name.clone(), host_path: dir, read_only: false });
        } else if let Some(src) = &v.persistent_volume_claim {
            let name = &src.claim_name;
            let waiting = |why: String| format!("Unable to attach or mount volumes: unmounted volumes=[{}]: {why}", v.name);
            let claim = client.get::<PersistentVolumeClaim>(Some(&ns), name).await.map_err(|e| waiting(e.to_string()))?.ok_or_else(|| waiting(format!("persistentvolumeclaim \"{name}\" not found")))?;
            let bound = claim.spec.as_ref().and_then(|s| s.volume_name.clone()).filter(|n| !n.is_empty());
            let phase = claim.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("");
            let Some(pv_name) = bound.filter(|_| phase == "Bound") else { return Err(waiting(format!("persistentvolumeclaim \"{name}\" is not bound yet"))) };
            let pv = client.get::<PersistentVolume>(None, &pv_name).await.map_err(|e| waiting(e.to_string()))?.ok_or_else(|| waiting(format!("persistentvolume \"{pv_name}\" not found")))?;
            let Some((path, type_)) = volume_path(&pv) else { return Err(waiting(format!("persistentvolume \"{pv_name}\" is neither local nor hostPath: this node cannot mount it"))) };
            // A local volume's directory must be there; a provisioned hostPath one is made.
            host_path_ready(&path, type_.as_deref().or(Some("Directory"))).map_err(waiting)?;
            let read_only = src.read_only.unwrap_or(false) || claim.spec.as_ref().and_then(|s| s.access_modes.as_ref()).is_some_and(|m| m.iter().all(|x| x == "ReadOnlyMany"));
            out.push(Mounted { name: v.name.clone(), host_path: path, read_only });
        } else if let Some(hp) = &v.host_path {
            let path = PathBuf::from(&hp.path);
            host_path_ready(&path, hp.type_.as_deref()).map_err(|e| format!("MountVolume.SetUp failed for volume \"{}\" : {e}", v.name))?;
            out.push(Mounted { name: v.name.clone(), host_path: path, read_only: false });
        }
    }
    let (_, refresh) = write_volumes(&client, &pod, &pod_dir, &d).await?;
    link(&pod_dir, &out).map_err(|e| format!("linking the pod's volumes: {e}"))?;
    Ok((out, refresh))
}

/// Asks a gateway for the pod's ServiceAccount token (the kubelet's TokenRequest).
async fn request_token(client: &Client, pod: &Pod, audience: &str, seconds: i64) -> Result<(String, i64), String> {
    use schema::tokens::{TokenReply, TokenRequest};
    let spec = pod.spec.as_ref();
    let r = TokenRequest {
        namespace: pod.metadata.namespace.clone().unwrap_or_default(),
        service_account: spec.and_then(|s| s.service_account_name.clone()).filter(|n| !n.is_empty()).unwrap_or_else(|| "default".into()),
        pod: pod.metadata.name.clone().unwrap_or_default(),
        pod_uid: pod.metadata.uid.clone().unwrap_or_default(),
        audiences: if audience.is_empty() { Vec::new() } else { vec![audience.to_string()] },
        expiration_seconds: seconds,
    };
    let payload = schema::codec::encode(&r).map_err(|e| e.to_string())?;
    // A node agent asks on its own node's subject, so the gateway knows who asks.
    let subject = client.bus.node().map(schema::subjects::node_token_request).unwrap_or_else(|| schema::subjects::TOKEN_REQUEST.to_string());
    let ask = client.bus.nats.request(subject, payload.into());
    let msg = match tokio::time::timeout(Duration::from_secs(10), ask).await {
        Ok(Ok(m)) => m,
        Ok(Err(e)) => return Err(format!("failed to fetch token: {e}")),
        Err(_) => return Err("failed to fetch token: no gateway answered in 10s".into()),
    };
    match schema::codec::decode::<TokenReply>(&msg.payload) {
        Ok(TokenReply::Token { token, expires_at }) => Ok((token, expires_at)),
        Ok(TokenReply::Refused(why)) => Err(format!("failed to fetch token: {why}")),
        Err(e) => Err(format!("failed to fetch token: unreadable answer: {e}")),
    }
}

/// Writes (or brings up to date) every configMap, secret, downwardAPI and projected
/// volume of `pod`; true when some file changed.
/// With the time its tokens want refreshing (Unix seconds), if it has any.
pub async fn write_volumes(client: &Client, pod: &Pod, pod_dir: &Path, d: &Downward) -> Result<(bool, Option<i64>), String> {
    let written: Vec<_> = pod.spec.as_ref().and_then(|s| s.volumes.clone()).unwrap_or_default().into_iter().filter(projected::is_written).collect();
    if written.is_empty() {
        return Ok((false, None));
    }
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let (cms, secrets) = projected::referenced(pod);
    let mut sources = Sources::objects(client, &ns, cms, secrets).await?;
    let mut refresh: Option<i64> = None;
    for (audience, seconds) in projected::token_requests(pod) {
        let now = jiff::Timestamp::now().as_second();
        let (token, expires_at) = request_token(client, pod, &audience, seconds).await.map_err(|e| format!("MountVolume.SetUp failed for the pod's ServiceAccount token : {e}"))?;
        let due = schema::tokens::refresh_after(now, expires_at);
        refresh = Some(refresh.map_or(due, |r| r.min(due)));
        sources.tokens.insert(super::env::token_key(&audience, seconds), token);
    }
    let mut changed = false;
    for v in &written {
        let setup = |e: String| format!("MountVolume.SetUp failed for volume \"{}\" : {e}", v.name);
        let mut files = projected::files(v, pod, &sources, d).map_err(setup)?;
        let fs_group = super::security::fs_group(pod);
        if fs_group.is_some() {
            // The modes fsGroup ends with are the ones asked for: an unchanged payload
            // compares equal and is not written again.
            files.iter_mut().for_each(|f| f.mode = super::security::owned_mode(f.mode, false, true));
        }
        let dir = projected::volume_dir(pod_dir, &v.name);
        let wrote = projected::write_atomic(&dir, &files).map_err(|e| setup(e.to_string()))?;
        if let (true, Some(gid)) = (wrote, fs_group) {
            super::security::own_volume(&dir, gid, true).map_err(|e| setup(e.to_string()))?;
        }
        changed |= wrote;
    }
    Ok((changed, refresh))
}

/// `<pod dir>/volumes/<name>` → each volume's directory, for host-process pods.
fn link(pod_dir: &Path, mounted: &[Mounted]) -> std::io::Result<()> {
    if mounted.is_empty() {
        return Ok(());
    }
    let dir = pod_dir.join("volumes");
    std::fs::create_dir_all(&dir)?;
    for m in mounted {
        let at = dir.join(&m.name);
        if std::fs::symlink_metadata(&at).is_ok() {
            std::fs::remove_file(&at)?;
        }
        std::os::unix::fs::symlink(&m.host_path, &at)?;
    }
    Ok(())
}

/// Container `idx`'s `volumeMounts`, resolved against the pod's mounted volumes (a
/// subPath is made inside its volume).
pub fn container_mounts(pod: &Pod, idx: usize, mounted: &[Mounted]) -> Vec<Mount> {
    let Some(c) = pod.spec.as_ref().and_then(|s| super::spec::container_at(s, idx)) else { return Vec::new() };
    let mut out = Vec::new();
    for vm in c.volume_mounts.iter().flatten() {
        let Some(m) = mounted.iter().find(|m| m.name == vm.name) else { continue };
        let mut host_path = m.host_path.clone();
        if let Some(sub) = vm.sub_path.as_deref().filter(|s| !s.is_empty() && !s.split('/').any(|p| p == "..")) {
            host_path = host_path.join(sub.trim_start_matches('/'));
            let _ = std::fs::create_dir_all(&host_path);
        }
        out.push(Mount { volume: vm.name.clone(), host_path, container_path: vm.mount_path.clone(), read_only: m.read_only || vm.read_only.unwrap_or(false) });
    }
    out
}

impl Kubelet {
    /// Makes the pod's volumes ready, then its sandbox; while they are not, the pod shows
    /// ContainerCreating and is tried again every MOUNT_RETRY.
    pub(super) fn mount_then_sandbox(&mut self, uid: &str, runtime: Arc<dyn Runtime>, ctx: &mut Context<Self>) {
        let Some(rt) = self.pods.get(uid) else { return };
        let dir = super::spec::pod_dir(&self.data_dir, &rt.state.namespace, &rt.state.name, &rt.state.uid);
        let fut = prepare(self.client.clone(), rt.pod.clone(), dir, self.downward(rt));
        let u = uid.to_string();
        ctx.spawn(fut.into_actor(self).map(move |res, act, ctx| act.mounted(&u, runtime, res, ctx)));
    }

    fn mounted(&mut self, uid: &str, runtime: Arc<dyn Runtime>, res: Result<(Vec<Mounted>, Option<i64>), String>, ctx: &mut Context<Self>) {
        let stopping = self.stopping;
        let Some(rt) = self.pods.get_mut(uid) else { return };
        if stopping || rt.state.lifecycle != super::lifecycle::Lifecycle::Active {
            rt.sandbox = SandboxSlot::None;
            rt.starting = 0;
            return;
        }
        match res {
            Ok((m, refresh)) => {
                self.refresh_tokens_at(uid, refresh, ctx);
                let Some(rt) = self.pods.get_mut(uid) else { return };
                if let Ok(mut used) = self.in_use.lock() {
                    used.insert(uid.to_string(), m.iter().map(|v| v.host_path.clone()).collect());
                }
                rt.mounts = m;
                rt.mount_error = None;
                self.watch_local_storage(uid, ctx);
                self.run_sandbox(uid, runtime, ctx);
            }
            Err(why) => {
                if rt.mount_error.as_deref() != Some(why.as_str()) {
                    rt.mount_error = Some(why.clone());
                    tracing::info!(pod = %format!("{}/{}", rt.state.namespace, rt.state.name), reason = %why, "volumes not ready");
                    self.note(uid, "Warning", "FailedMount", why);
                }
                let u = uid.to_string();
                ctx.run_later(MOUNT_RETRY, move |act, ctx| act.mount_then_sandbox(&u, runtime, ctx));
            }
        }
    }
}

impl Kubelet {
    /// What the downward API reads of this node for `rt`.
    pub(super) fn downward(&self, rt: &PodRt) -> Downward {
        Downward { node: self.node.clone(), host_ip: self.host_ip.clone(), pod_ip: rt.pod_ip.clone().unwrap_or_else(|| self.host_ip.clone()), allocatable: self.allocatable }
    }

    /// Rewrites the written volumes of the pods `affected` picks (a ConfigMap or Secret
    /// they name changed, or their labels did), once their volumes were set up.
    pub(super) fn refresh_volumes(&mut self, affected: impl Fn(&Pod) -> bool, ctx: &mut Context<Self>) {
        let mut work = Vec::new();
        for (uid, rt) in &self.pods {
            if rt.mounts.is_empty() || !affected(&rt.pod) || rt.state.lifecycle != super::lifecycle::Lifecycle::Active {
                continue;
            }
            let (client, pod, d) = (self.client.clone(), rt.pod.clone(), self.downward(rt));
            let dir = super::spec::pod_dir(&self.data_dir, &rt.state.namespace, &rt.state.name, &rt.state.uid);
            let key = format!("{}/{}", rt.state.namespace, rt.state.name);
            let fut = async move {
                let res = write_volumes(&client, &pod, &dir, &d).await;
                match &res {
                    Ok((true, _)) => tracing::info!(pod = %key, "volume contents updated"),
                    Ok((false, _)) => {}
                    Err(e) => tracing::warn!(pod = %key, error = %e, "could not update the pod's volumes"),
                }
                res.ok().and_then(|(_, r)| r)
            };
            work.push((uid.clone(), fut.instrument(self.span())));
        }
        for (uid, fut) in work {
            ctx.spawn(fut.into_actor(self).map(move |refresh, act, ctx| act.refresh_tokens_at(&uid, refresh, ctx)));
        }
    }

    /// Schedules the pod's next token refresh; a later schedule replaces an earlier one.
    pub(super) fn refresh_tokens_at(&mut self, uid: &str, at: Option<i64>, ctx: &mut Context<Self>) {
        let Some(at) = at else { return };
        let Some(rt) = self.pods.get_mut(uid) else { return };
        rt.token_refresh += 1;
        let generation = rt.token_refresh;
        let wait = Duration::from_secs((at - jiff::Timestamp::now().as_second()).max(1) as u64);
        let u = uid.to_string();
        ctx.run_later(wait, move |act, ctx| {
            bus::metrics::handle(super::ACTOR, || {
                if act.pods.get(&u).is_some_and(|rt| rt.token_refresh == generation) {
                    act.refresh_volumes(|p| p.metadata.uid.as_deref() == Some(u.as_str()), ctx);
                }
            })
        });
    }
}

/// A ConfigMap or Secret changed: the pods here that mount it get the new content.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SourceChanged {
    pub secret: bool,
    pub namespace: String,
    /// None: every source (after a relist).
    pub name: Option<String>,
}

impl Handler<SourceChanged> for Kubelet {
    type Result = ();
    fn handle(&mut self, m: SourceChanged, ctx: &mut Context<Self>) {
        bus::metrics::handle(super::ACTOR, || {
            self.refresh_volumes(
                |pod| {
                if m.name.is_none() {
                    return true;
                }
                if pod.metadata.namespace.as_deref() != Some(m.namespace.as_str()) {
                    return false;
                }
                let (cms, secrets) = projected::referenced(pod);
                let names = if m.secret { secrets } else { cms };
                m.name.as_ref().is_some_and(|n| names.contains(n))
                },
                ctx,
            )
        })
    }
}

/// How often the ConfigMaps and Secrets mounted here are looked at again (the kubelet's
/// "Cache" change detection: a node may not watch every Secret, only read its pods' own).
pub const SOURCE_RESYNC: Duration = Duration::from_secs(10);

/// The ConfigMaps and Secrets mounted by the running pods here: (secret?, namespace, name).
#[derive(Message)]
#[rtype(result = "Vec<(bool, String, String)>")]
pub struct MountedSources;

impl Handler<MountedSources> for Kubelet {
    type Result = Vec<(bool, String, String)>;
    fn handle(&mut self, _: MountedSources, _: &mut Context<Self>) -> Self::Result {
        bus::metrics::poll(super::ACTOR, || {
            let mut out = std::collections::BTreeSet::new();
            for rt in self.pods.values().filter(|rt| !rt.mounts.is_empty() && rt.state.lifecycle == super::lifecycle::Lifecycle::Active) {
                let (cms, secrets) = projected::referenced(&rt.pod);
                let ns = rt.state.namespace.clone();
                out.extend(cms.into_iter().map(|n| (false, ns.clone(), n)));
                out.extend(secrets.into_iter().map(|n| (true, ns.clone(), n)));
            }
            out.into_iter().collect()
        })
    }
}

/// Feeds the kubelet `SourceChanged` when a mounted ConfigMap or Secret changes, so
/// mounted keys follow their objects. Each is read by name, as the node's pods allow
/// (the state group answers a node only for Secrets its pods reference), every
/// SOURCE_RESYNC; a change of resourceVersion, or the object's coming or going, counts.
pub async fn follow_sources(client: Client, kubelet: Addr<Kubelet>, stop: CancellationToken) {
    use k8s_openapi::api::core::v1::{ConfigMap, Secret};
    let mut seen: BTreeMap<(bool, String, String), Option<String>> = BTreeMap::new();
    let mut tick = tokio::time::interval(SOURCE_RESYNC);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let Ok(mounted) = kubelet.send(MountedSources).await else { return };
        let mut now = BTreeMap::new();
        for (secret, ns, name) in mounted {
            let rv = if secret {
                client.get::<Secret>(Some(&ns), &name).await.map(|o| o.and_then(|o| o.metadata.resource_version))
            } else {
                client.get::<ConfigMap>(Some(&ns), &name).await.map(|o| o.and_then(|o| o.metadata.resource_version))
            };
            let key = (secret, ns, name);
            let rv = match rv {
                Ok(rv) => rv,
                Err(e) => {
                    // Unread this round: keep what was known, look again next round.
                    tracing::debug!(source = ?key, error = %e, "reading a mounted source");
                    if let Some(old) = seen.get(&key) {
                        now.insert(key, old.clone());
                    }
                    continue;
                }
            };
            // First sight counts too: it may have changed between mount and now.
            if seen.get(&key) != Some(&rv) {
                kubelet.do_send(SourceChanged { secret: key.0, namespace: key.1.clone(), name: Some(key.2.clone()) });
            }
            now.insert(key, rv);
        }
        seen = now;
    }
}

/// Removes `<data dir>/volumes/pvc-*` directories that no PersistentVolume names any
/// more (their volume was reclaimed with Delete) and no pod here has mounted, once the
/// volumes have been listed: on each volume deletion, and every SWEEP_EVERY.
pub async fn collect_orphans(client: Client, data_dir: PathBuf, in_use: InUse, stop: CancellationToken) {
    let root = std::fs::canonicalize(&data_dir).unwrap_or(data_dir).join("volumes");
    let mut events = watch_objects::<PersistentVolume>(client, Scope::default()).boxed();
    let mut paths: BTreeMap<String, PathBuf> = BTreeMap::new();
    let mut listed = false;
    let mut tick = tokio::time::interval(SWEEP_EVERY);
    loop {
        let ev = tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => None,
            Some(e) = events.next() => Some(e),
            else => return,
        };
        let sweep = match ev {
            None => listed,
            Some(InformerEvent::Listed(items, _)) => {
                paths = items.iter().filter_map(|v| Some((v.metadata.name.clone()?, volume_path(v)?.0))).collect();
                listed = true;
                true
            }
            Some(InformerEvent::Applied(v, _)) => {
                if let (Some(n), Some((p, _))) = (v.metadata.name.clone(), volume_path(&v)) {
                    paths.insert(n, p);
                }
                false
            }
            Some(InformerEvent::Deleted(v, _)) => {
                paths.remove(v.metadata.name.as_deref().unwrap_or(""));
                listed
            }
        };
        if !sweep {
            continue;
        }
        let used: Vec<PathBuf> = in_use.lock().map(|m| m.values().flatten().cloned().collect()).unwrap_or_default();
        let Ok(entries) = std::fs::read_dir(&root) else { continue };
        let dirs: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
        let named: Vec<PathBuf> = paths.values().cloned().collect();
        for p in orphans(&dirs, &named, &used) {
            match std::fs::remove_dir_all(&p) {
                Ok(()) => tracing::info!(dir = %p.display(), "removed the directory of a deleted volume"),
                Err(e) => tracing::warn!(dir = %p.display(), error = %e, "could not remove a deleted volume's directory"),
            }
        }
    }
}

/// The provisioned directories (`pvc-*`) that no volume names and no pod here uses (a
/// subPath inside one counts as using it).
fn orphans(dirs: &[PathBuf], named: &[PathBuf], used: &[PathBuf]) -> Vec<PathBuf> {
    dirs.iter()
        .filter(|d| d.file_name().is_some_and(|n| n.to_string_lossy().starts_with("pvc-")))
        .filter(|d| !named.contains(d) && !used.iter().any(|u| u.starts_with(d)))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn volume_mounts_resolve_to_host_paths_with_sub_paths() {
        let dir = tempfile::tempdir().unwrap();
        let pod: Pod = serde_json::from_value(json!({"metadata": {"name": "web-0"}, "spec": {"containers": [{"name": "c", "volumeMounts": [
            {"name": "www", "mountPath": "/usr/share/nginx/html"}, {"name": "www", "mountPath": "/logs", "subPath": "logs", "readOnly": true}, {"name": "other", "mountPath": "/x"}]}]}}))
        .unwrap();
        let mounted = [Mounted { name: "www".into(), host_path: dir.path().to_path_buf(), read_only: false }];
        let m = container_mounts(&pod, 0, &mounted);
        assert_eq!(m.len(), 2, "a volume this node does not mount is skipped");
        assert_eq!((m[0].container_path.as_str(), m[0].read_only), ("/usr/share/nginx/html", false));
        assert_eq!((m[1].host_path.clone(), m[1].read_only), (dir.path().join("logs"), true));
        assert!(dir.path().join("logs").is_dir());
        assert_eq!(crate::runtime::volume_env("www-data"), "FLOTILLA_VOLUME_WWW_DATA");
    }

    #[test]
    fn only_unnamed_unused_provisioned_directories_are_orphans() {
        let d = |s: &str| PathBuf::from(format!("/data/volumes/{s}"));
        let dirs = [d("pvc-a"), d("pvc-b"), d("pvc-c"), d("mine")];
        let got = orphans(&dirs, &[d("pvc-a")], &[d("pvc-b/logs")]);
        assert_eq!(got, vec![d("pvc-c")], "named, in use and foreign directories stay");
    }

    #[test]
    fn host_paths_are_made_or_checked_as_their_type_says() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("a/b");
        assert!(host_path_ready(&d, Some("Directory")).is_err());
        host_path_ready(&d, Some("DirectoryOrCreate")).unwrap();
        assert!(d.is_dir());
        host_path_ready(&d, Some("Directory")).unwrap();
        link(dir.path(), &[Mounted { name: "www".into(), host_path: d.clone(), read_only: false }]).unwrap();
        link(dir.path(), &[Mounted { name: "www".into(), host_path: d.clone(), read_only: false }]).unwrap();
        assert_eq!(std::fs::read_link(dir.path().join("volumes/www")).unwrap(), d);
    }
}
