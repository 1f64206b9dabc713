//! Image garbage collection by disk usage, as the kubelet's image GC manager does it: when
//! the image filesystem is fuller than the high threshold, unused images are removed,
//! least recently used first, until usage is under the low threshold; when not enough can
//! go, the node hears `FreeDiskSpaceFailed`, and `ImageGCFailed` when that happens twice
//! in a row. The choice is `select_images_to_free`; `run` is the periodic shell around it.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

/// kubelet's --image-gc-high-threshold / --image-gc-low-threshold, in percent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Thresholds {
    pub high: u8,
    pub low: u8,
    /// kubelet's --image-minimum-gc-age: an image used (or pulled) more recently stays,
    /// so one pulled for a container about to be made is not taken from under it.
    pub min_age: Duration,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds { high: 85, low: 80, min_age: MIN_AGE }
    }
}

/// The kubelet's default --image-minimum-gc-age.
pub const MIN_AGE: Duration = Duration::from_secs(120);

/// Whether `i` was used or pulled less than `min_age` before `now` (unix seconds).
pub fn too_young(i: &Image, now: u64, min_age: Duration) -> bool {
    i.last_used > 0 && now.saturating_sub(i.last_used) < min_age.as_secs()
}

/// The kubelet's ImageGCPeriod.
pub const PERIOD: Duration = Duration::from_secs(300);

/// One image the runtime holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    pub id: String,
    pub size: u64,
    /// When a container of this agent last used it (unix seconds); 0 for never.
    pub last_used: u64,
    /// The sandbox image, or one the runtime pins: never removed.
    pub pinned: bool,
}

/// The image filesystem, from statvfs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    pub capacity: u64,
    pub available: u64,
}

impl Usage {
    /// As the kubelet rounds it: `100 - available*100/capacity`.
    pub fn percent(&self) -> u64 {
        if self.capacity == 0 {
            return 0;
        }
        100 - (self.available.min(self.capacity) as u128 * 100 / self.capacity as u128) as u64
    }

    /// The bytes to free to get down to `low` percent (0 when already there).
    pub fn to_free(&self, low: u8) -> u64 {
        let goal = (self.capacity as u128 * (100 - u128::from(low.min(100))) / 100) as u64;
        goal.saturating_sub(self.available)
    }

    pub fn statvfs(path: &std::path::Path) -> std::io::Result<Usage> {
        use std::os::unix::ffi::OsStrExt;
        let c = std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(std::io::Error::other)?;
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: a NUL-terminated path and a struct of the right type to fill.
        if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let frsize = st.f_frsize as u64;
        Ok(Usage { capacity: st.f_blocks as u64 * frsize, available: st.f_bavail as u64 * frsize })
    }
}

/// The images to remove, in order, to get the filesystem down to `target` percent: none
/// in use or pinned, least recently used first (ties: the larger first, so fewer go). It
/// may not reach the target: the caller compares what it frees with what was needed.
pub fn select_images_to_free(images: &[Image], in_use: &HashSet<String>, usage: Usage, target: u8) -> Vec<String> {
    let need = usage.to_free(target);
    if need == 0 {
        return Vec::new();
    }
    let mut candidates: Vec<&Image> = images.iter().filter(|i| !i.pinned && !in_use.contains(&i.id)).collect();
    candidates.sort_by(|a, b| a.last_used.cmp(&b.last_used).then(b.size.cmp(&a.size)).then(a.id.cmp(&b.id)));
    let mut freed = 0u64;
    let mut out = Vec::new();
    for i in candidates {
        if freed >= need {
            break;
        }
        freed += i.size;
        out.push(i.id.clone());
    }
    out
}

/// The kubelet's words when not enough could be freed.
pub fn shortfall_message(needed: u64, freed: u64) -> String {
    format!("Failed to garbage collect required amount of images. Attempted to free {needed} bytes, but only found {freed} bytes eligible to free.")
}

/// What a runtime offers image GC.
pub trait ImageStore: Send + Sync {
    fn images(&self) -> futures::future::BoxFuture<'static, Result<Vec<Image>, String>>;
    /// Image ids some container (running or not) is made from.
    fn in_use(&self) -> futures::future::BoxFuture<'static, Result<HashSet<String>, String>>;
    fn remove(&self, id: &str) -> futures::future::BoxFuture<'static, Result<(), String>>;
    fn usage(&self) -> std::io::Result<Usage>;
}

/// What one pass did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pass {
    Idle,
    Freed { removed: Vec<String> },
    /// (message): `FreeDiskSpaceFailed`.
    Short(String),
}

/// One GC pass against `store`.
pub async fn pass(store: &dyn ImageStore, t: Thresholds) -> Result<Pass, String> {
    let usage = store.usage().map_err(|e| format!("failed to get image stats: {e}"))?;
    if usage.percent() < u64::from(t.high) {
        return Ok(Pass::Idle);
    }
    let in_use = store.in_use().await?;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let images: Vec<Image> = store.images().await?.into_iter().filter(|i| !too_young(i, now, t.min_age)).collect();
    let need = usage.to_free(t.low);
    let sizes: HashMap<&str, u64> = images.iter().map(|i| (i.id.as_str(), i.size)).collect();
    let mut freed = 0u64;
    let mut removed = Vec::new();
    for id in select_images_to_free(&images, &in_use, usage, t.low) {
        match store.remove(&id).await {
            Ok(()) => {
                freed += sizes.get(id.as_str()).copied().unwrap_or(0);
                removed.push(id);
            }
            Err(e) => tracing::warn!(image = %id, error = %e, "removing an image failed"),
        }
    }
    if freed < need {
        return Ok(Pass::Short(shortfall_message(need, freed)));
    }
    Ok(Pass::Freed { removed })
}

/// Runs a pass every `period` until `stop`, reporting shortfalls as the kubelet does
/// through `event(reason, message)`.
pub async fn run(store: std::sync::Arc<dyn ImageStore>, t: Thresholds, period: Duration, event: impl Fn(&str, &str) + Send, stop: tokio_util::sync::CancellationToken) {
    let mut failed_before = false;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(period) => {}
        }
        let failure = match pass(store.as_ref(), t).await {
            Ok(Pass::Idle) => None,
            Ok(Pass::Freed { removed }) => {
                tracing::info!(images = removed.len(), "image garbage collection freed disk space");
                None
            }
            Ok(Pass::Short(m)) => {
                event("FreeDiskSpaceFailed", &m);
                Some(m)
            }
            Err(m) => Some(m),
        };
        failed_before = match failure {
            Some(m) if failed_before => {
                event("ImageGCFailed", &m);
                true
            }
            Some(m) => {
                tracing::warn!(error = %m, "image garbage collection failed");
                true
            }
            None => false,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn img(id: &str, size: u64, last_used: u64) -> Image {
        Image { id: id.into(), size, last_used, pinned: false }
    }

    const GB: u64 = 1 << 30;

    #[test]
    fn usage_as_the_kubelet_counts_it() {
        let u = Usage { capacity: 100 * GB, available: 10 * GB };
        assert_eq!(u.percent(), 90);
        assert_eq!(u.to_free(80), 10 * GB);
        assert_eq!(Usage { capacity: 100 * GB, available: 30 * GB }.to_free(80), 0);
        assert_eq!(Usage { capacity: 0, available: 0 }.percent(), 0);
    }

    #[test]
    fn recently_used_images_are_too_young() {
        let min = Duration::from_secs(120);
        assert!(too_young(&img("a", 1, 1000), 1100, min));
        assert!(!too_young(&img("a", 1, 1000), 1120, min));
        assert!(!too_young(&img("never", 1, 0), 1100, min));
    }

    #[test]
    fn oldest_unused_first_until_enough() {
        let images = [img("new", 4 * GB, 300), img("old", 3 * GB, 100), img("never", 2 * GB, 0), img("busy", 50 * GB, 0), Image { pinned: true, ..img("pause", 9 * GB, 0) }];
        let in_use: HashSet<String> = ["busy".to_string()].into();
        let u = Usage { capacity: 100 * GB, available: 15 * GB };
        // 5 GB to free: never (2) then old (3).
        assert_eq!(select_images_to_free(&images, &in_use, u, 80), ["never", "old"]);
        // Everything that may go, and still short.
        assert_eq!(select_images_to_free(&images, &in_use, u, 0), ["never", "old", "new"]);
        assert!(select_images_to_free(&images, &in_use, Usage { capacity: 100 * GB, available: 50 * GB }, 80).is_empty());
    }

    struct Fake {
        images: std::sync::Mutex<Vec<Image>>,
        usage: Usage,
    }

    impl ImageStore for Fake {
        fn images(&self) -> futures::future::BoxFuture<'static, Result<Vec<Image>, String>> {
            let v = self.images.lock().unwrap().clone();
            Box::pin(async move { Ok(v) })
        }
        fn in_use(&self) -> futures::future::BoxFuture<'static, Result<HashSet<String>, String>> {
            Box::pin(async { Ok(["busy".to_string()].into()) })
        }
        fn remove(&self, id: &str) -> futures::future::BoxFuture<'static, Result<(), String>> {
            self.images.lock().unwrap().retain(|i| i.id != id);
            Box::pin(async { Ok(()) })
        }
        fn usage(&self) -> std::io::Result<Usage> {
            Ok(self.usage)
        }
    }

    #[tokio::test]
    async fn a_pass_removes_or_reports_the_shortfall() {
        let f = Fake { images: std::sync::Mutex::new(vec![img("a", GB, 1), img("busy", GB, 0)]), usage: Usage { capacity: 100 * GB, available: 10 * GB } };
        assert_eq!(pass(&f, Thresholds { high: 95, low: 80, ..Default::default() }).await.unwrap(), Pass::Idle);
        let p = pass(&f, Thresholds { high: 85, low: 80, ..Default::default() }).await.unwrap();
        assert_eq!(p, Pass::Short(shortfall_message(10 * GB, GB)));
        assert_eq!(f.images.lock().unwrap().iter().map(|i| i.id.as_str()).collect::<Vec<_>>(), ["busy"]);
    }
}
