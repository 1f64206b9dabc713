//! The sandbox ("pause") image, written by the agent itself: containerd needs one for
//! every pod and no registry is reachable, so it is an OCI archive of one layer holding the
//! host's static busybox, whose `sleep` holds the pod's namespaces open.

use sha2::{Digest, Sha256};
use std::path::Path;

pub const PAUSE_IMAGE: &str = "localhost/flotilla/pause:1";
/// Debian's busybox-static.
pub const BUSYBOX: &str = "/bin/busybox";

fn digest(b: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(b))
}

fn append(t: &mut tar::Builder<Vec<u8>>, path: &str, data: &[u8], mode: u32) -> std::io::Result<()> {
    let mut h = tar::Header::new_gnu();
    h.set_size(data.len() as u64);
    h.set_mode(mode);
    h.set_mtime(0);
    h.set_entry_type(tar::EntryType::Regular);
    t.append_data(&mut h, path, data)
}

fn dir(t: &mut tar::Builder<Vec<u8>>, path: &str) -> std::io::Result<()> {
    let mut h = tar::Header::new_gnu();
    h.set_size(0);
    h.set_mode(0o755);
    h.set_mtime(0);
    h.set_entry_type(tar::EntryType::Directory);
    t.append_data(&mut h, path, std::io::empty())
}

/// An OCI image archive (`ctr images import` reads it) named `name` with one layer
/// holding `binary` as /bin/busybox and the given entrypoint.
pub fn archive(name: &str, binary: &[u8], entrypoint: &[&str]) -> std::io::Result<Vec<u8>> {
    let mut layer = tar::Builder::new(Vec::new());
    dir(&mut layer, "bin/")?;
    append(&mut layer, "bin/busybox", binary, 0o755)?;
    let layer = layer.into_inner()?;
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": crate::kubelet::node::arch(), "os": "linux",
        "config": {"Entrypoint": entrypoint, "Env": ["PATH=/bin"], "WorkingDir": "/"},
        "rootfs": {"type": "layers", "diff_ids": [digest(&layer)]},
    }))?;
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest(&config), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": digest(&layer), "size": layer.len()}],
    }))?;
    let tag = name.rsplit_once(':').map(|(_, t)| t).unwrap_or("latest");
    let index = serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest(&manifest), "size": manifest.len(),
        "annotations": {"io.containerd.image.name": name, "org.opencontainers.image.ref.name": tag},
    }]}))?;
    let mut out = tar::Builder::new(Vec::new());
    append(&mut out, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#, 0o644)?;
    append(&mut out, "index.json", &index, 0o644)?;
    for blob in [&config, &manifest, &layer] {
        append(&mut out, &format!("blobs/sha256/{}", &digest(blob)[7..]), blob, 0o644)?;
    }
    out.into_inner()
}

/// Writes the pause image archive to `path` from the host's busybox.
pub fn write(path: &Path) -> std::io::Result<()> {
    let bin = std::fs::read(BUSYBOX).map_err(|e| std::io::Error::new(e.kind(), format!("reading {BUSYBOX} (Debian's busybox-static) for the sandbox image: {e}")))?;
    // PID 1 of the sandbox ignores SIGTERM; containerd stops sandboxes with SIGKILL.
    std::fs::write(path, archive(PAUSE_IMAGE, &bin, &["/bin/busybox", "sleep", "2147483647"])?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn an_oci_layout_whose_digests_match() {
        let a = archive(PAUSE_IMAGE, b"\x7fELF-not-really", &["/bin/busybox", "sleep", "1"]).unwrap();
        let mut files = std::collections::HashMap::new();
        for e in tar::Archive::new(&a[..]).entries().unwrap() {
            let mut e = e.unwrap();
            let mut v = Vec::new();
            e.read_to_end(&mut v).unwrap();
            files.insert(e.path().unwrap().to_string_lossy().into_owned(), v);
        }
        let index: serde_json::Value = serde_json::from_slice(&files["index.json"]).unwrap();
        assert_eq!(index["manifests"][0]["annotations"]["io.containerd.image.name"], PAUSE_IMAGE);
        let m = index["manifests"][0]["digest"].as_str().unwrap();
        let manifest = &files[&format!("blobs/sha256/{}", &m[7..])];
        assert_eq!(digest(manifest), m);
        let manifest: serde_json::Value = serde_json::from_slice(manifest).unwrap();
        for d in [&manifest["config"]["digest"], &manifest["layers"][0]["digest"]] {
            let d = d.as_str().unwrap();
            assert_eq!(digest(&files[&format!("blobs/sha256/{}", &d[7..])]), d);
        }
    }
}
