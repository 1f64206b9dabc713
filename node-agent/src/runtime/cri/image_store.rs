//! What image garbage collection sees of a CRI runtime: its images with the time this
//! agent's containers last used each, the images its containers are made from, removal,
//! and the usage of the filesystem the images live on (ImageFsInfo's mountpoint, statvfs).

use super::client::{go_error, pb, Cri};
use crate::images::gc::{Image, ImageStore, Usage};
use futures::future::BoxFuture;
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// Image id → unix seconds of its last use by a container of this agent.
pub type LastUsed = Arc<Mutex<HashMap<String, u64>>>;

pub fn now_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

pub struct CriImages {
    pub cri: Cri,
    pub last_used: LastUsed,
    /// The image filesystem's mountpoint.
    pub fs: PathBuf,
    /// The sandbox image: never collected.
    pub sandbox_image: String,
}

impl CriImages {
    /// Asks the runtime where its images live; `fallback` when it does not say.
    pub async fn new(cri: Cri, last_used: LastUsed, fallback: PathBuf, sandbox_image: &str) -> CriImages {
        let mut c = cri.images.clone();
        let fs = match c.image_fs_info(pb::ImageFsInfoRequest {}).await {
            Ok(r) => r.into_inner().image_filesystems.into_iter().find_map(|f| f.fs_id.map(|id| PathBuf::from(id.mountpoint))).filter(|p| p.exists()),
            Err(e) => {
                tracing::warn!(error = %go_error(&e), "ImageFsInfo failed");
                None
            }
        };
        CriImages { cri, last_used, fs: fs.unwrap_or(fallback), sandbox_image: crate::images::reference::normalize(sandbox_image) }
    }
}

impl ImageStore for CriImages {
    fn images(&self) -> BoxFuture<'static, Result<Vec<Image>, String>> {
        let (cri, last_used, sandbox) = (self.cri.clone(), self.last_used.clone(), self.sandbox_image.clone());
        Box::pin(async move {
            let mut c = cri.images.clone();
            let r = c.list_images(pb::ListImagesRequest { filter: None }).await.map_err(|e| format!("failed to list images: {}", go_error(&e)))?;
            let used = last_used.lock().map(|m| m.clone()).unwrap_or_default();
            Ok(r.into_inner()
                .images
                .into_iter()
                .map(|i| Image { last_used: used.get(&i.id).copied().unwrap_or(0), pinned: i.pinned || i.repo_tags.contains(&sandbox), size: i.size, id: i.id })
                .collect())
        })
    }

    fn in_use(&self) -> BoxFuture<'static, Result<HashSet<String>, String>> {
        let (cri, last_used) = (self.cri.clone(), self.last_used.clone());
        Box::pin(async move {
            let mut rt = cri.runtime.clone();
            let r = rt.list_containers(pb::ListContainersRequest { filter: None }).await.map_err(|e| format!("failed to list containers: {}", go_error(&e)))?;
            let ids: HashSet<String> = r.into_inner().containers.into_iter().map(|c| c.image_ref).filter(|i| !i.is_empty()).collect();
            // In use now is used now: what the kubelet's image manager records each pass.
            if let Ok(mut m) = last_used.lock() {
                let t = now_secs();
                for id in &ids {
                    m.insert(id.clone(), t);
                }
            }
            Ok(ids)
        })
    }

    fn remove(&self, id: &str) -> BoxFuture<'static, Result<(), String>> {
        let (cri, id, last_used) = (self.cri.clone(), id.to_string(), self.last_used.clone());
        Box::pin(async move {
            let mut c = cri.images.clone();
            c.remove_image(pb::RemoveImageRequest { image: Some(pb::ImageSpec { image: id.clone(), ..Default::default() }) }).await.map_err(|e| go_error(&e))?;
            if let Ok(mut m) = last_used.lock() {
                m.remove(&id);
            }
            tracing::info!(image = %id, "image garbage collection removed an image");
            Ok(())
        })
    }

    fn usage(&self) -> std::io::Result<Usage> {
        Usage::statvfs(&self.fs)
    }
}
