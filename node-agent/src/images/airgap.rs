//! The air-gap folder (as k3s has one): every `.tar` image archive in it is imported into
//! the agent's containerd at start, so images are present on machines without a registry.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
#[error("importing {path}: {message}")]
pub struct ImportError {
    pub path: PathBuf,
    pub message: String,
}

/// The archives to import, in name order.
pub fn archives(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| rd.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "tar") && p.is_file()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

/// Imports one archive into the CRI namespace of the containerd at `socket` (unpacked, so
/// the first container need not wait for it).
pub async fn import(socket: &Path, archive: &Path) -> Result<(), ImportError> {
    let out = tokio::process::Command::new("ctr")
        .arg("--address")
        .arg(socket)
        .args(["--namespace", "k8s.io", "images", "import"])
        .arg(archive)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .map_err(|e| ImportError { path: archive.into(), message: format!("running ctr: {e}") })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(ImportError { path: archive.into(), message: String::from_utf8_lossy(&out.stderr).trim().to_string() })
    }
}

/// Imports every archive in `dir`; a bad archive is reported and skipped.
pub async fn import_dir(socket: &Path, dir: &Path) -> (usize, Vec<ImportError>) {
    let (mut ok, mut errs) = (0, Vec::new());
    for a in archives(dir) {
        match import(socket, &a).await {
            Ok(()) => ok += 1,
            Err(e) => errs.push(e),
        }
    }
    (ok, errs)
}
