//! A read-only registry serving the air-gap folder's archives (the OCI distribution API's
//! pull side: manifests and blobs by tag or digest), on 127.0.0.1, that the agent's
//! containerd uses as docker.io's last host (after its mirrors, see `mirrors`). So
//! `imagePullPolicy: Always` resolves as it would against Docker Hub (the image is present: nothing is downloaded), and an image
//! that is not there fails the pull with containerd's own "not found", without a network.

use axum::body::Body;
use axum::http::{header, HeaderValue, Method, Request, Response, StatusCode};
use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// Where a blob lies: inside which archive, at which offset, how long.
#[derive(Debug, Clone, PartialEq)]
struct BlobAt {
    archive: PathBuf,
    offset: u64,
    size: u64,
}

/// Everything the archives hold, by name.
#[derive(Debug, Default)]
pub struct Catalog {
    /// (host, repository, tag) → (manifest digest, media type).
    tags: HashMap<(String, String, String), (String, String)>,
    blobs: HashMap<String, BlobAt>,
    /// Media types of manifests by digest.
    manifests: HashMap<String, String>,
}

/// `docker.io/library/nginx:latest` → (`docker.io`, `library/nginx`, `latest`).
fn split_name(name: &str) -> Option<(String, String, String)> {
    let full = super::reference::normalize(name);
    let (host, rest) = full.split_once('/')?;
    let (repo, tag) = rest.rsplit_once(':')?;
    Some((host.to_string(), repo.to_string(), tag.to_string()))
}

impl Catalog {
    /// Reads the tar headers and index.json of every archive (blobs are not read).
    pub fn load(dir: &Path) -> Catalog {
        let mut c = Catalog::default();
        for a in super::airgap::archives(dir) {
            if let Err(e) = c.add(&a) {
                tracing::warn!(archive = %a.display(), error = %e, "not served by the air-gap registry");
            }
        }
        c
    }

    fn add(&mut self, archive: &Path) -> std::io::Result<()> {
        let mut index = None;
        let mut ar = tar::Archive::new(std::fs::File::open(archive)?);
        for e in ar.entries_with_seek()? {
            let mut e = e?;
            let path = e.path()?.to_string_lossy().trim_start_matches("./").to_string();
            if path == "index.json" {
                let mut v = Vec::new();
                e.read_to_end(&mut v)?;
                index = Some(v);
            } else if let Some(hex) = path.strip_prefix("blobs/sha256/") {
                self.blobs.insert(format!("sha256:{hex}"), BlobAt { archive: archive.to_path_buf(), offset: e.raw_file_position(), size: e.size() });
            }
        }
        let index: serde_json::Value = serde_json::from_slice(&index.ok_or_else(|| std::io::Error::other("no index.json: not an OCI archive"))?)?;
        for m in index["manifests"].as_array().into_iter().flatten() {
            let (Some(digest), Some(media)) = (m["digest"].as_str(), m["mediaType"].as_str()) else { continue };
            self.manifests.insert(digest.to_string(), media.to_string());
            if let Some(key) = m["annotations"]["io.containerd.image.name"].as_str().and_then(split_name) {
                self.tags.insert(key, (digest.to_string(), media.to_string()));
            }
        }
        Ok(())
    }

    /// The manifest a reference names: (digest, media type).
    fn manifest(&self, host: &str, repo: &str, reference: &str) -> Option<(String, String)> {
        if reference.starts_with("sha256:") {
            return self.manifests.get(reference).map(|m| (reference.to_string(), m.clone()));
        }
        self.tags.get(&(host.to_string(), repo.to_string(), reference.to_string())).cloned()
    }

    fn read_blob(&self, digest: &str) -> Option<std::io::Result<Vec<u8>>> {
        let at = self.blobs.get(digest)?.clone();
        Some((|| {
            let mut f = std::fs::File::open(&at.archive)?;
            f.seek(SeekFrom::Start(at.offset))?;
            let mut v = vec![0; at.size as usize];
            f.read_exact(&mut v)?;
            Ok(v)
        })())
    }
}

fn error(status: StatusCode, code: &str, message: &str) -> Response<Body> {
    let body = serde_json::json!({"errors": [{"code": code, "message": message}]}).to_string();
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

/// Answers one request of the pull API.
async fn answer(catalog: Arc<Catalog>, req: Request<Body>) -> Response<Body> {
    let head = req.method() == Method::HEAD;
    if req.method() != Method::GET && !head {
        return error(StatusCode::METHOD_NOT_ALLOWED, "UNSUPPORTED", "this registry only serves pulls");
    }
    let path = req.uri().path().to_string();
    // containerd names the upstream it resolves for in `?ns=docker.io`.
    let host = req.uri().query().and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("ns="))).unwrap_or("docker.io").to_string();
    if path == "/v2/" || path == "/v2" {
        return Response::new(Body::from("{}"));
    }
    let Some(rest) = path.strip_prefix("/v2/") else { return error(StatusCode::NOT_FOUND, "NAME_UNKNOWN", "not a registry path") };
    let (repo, kind, reference) = match (rest.rsplit_once("/manifests/"), rest.rsplit_once("/blobs/")) {
        (Some((repo, r)), _) => (repo, "manifests", r),
        (None, Some((repo, r))) => (repo, "blobs", r),
        _ => return error(StatusCode::NOT_FOUND, "NAME_UNKNOWN", "not a registry path"),
    };
    let (digest, media) = if kind == "manifests" {
        match catalog.manifest(&host, repo, reference) {
            Some(m) => m,
            None => return error(StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN", &format!("manifest unknown: {host}/{repo}:{reference}")),
        }
    } else {
        (reference.to_string(), "application/octet-stream".to_string())
    };
    let c = catalog.clone();
    let d = digest.clone();
    let bytes = match tokio::task::spawn_blocking(move || c.read_blob(&d)).await.ok().flatten() {
        Some(Ok(b)) => b,
        Some(Err(e)) => return error(StatusCode::INTERNAL_SERVER_ERROR, "UNKNOWN", &e.to_string()),
        None => return error(StatusCode::NOT_FOUND, "BLOB_UNKNOWN", &format!("blob unknown: {digest}")),
    };
    let len = bytes.len();
    let mut r = Response::new(if head { Body::empty() } else { Body::from(bytes) });
    let h = r.headers_mut();
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    if let Ok(v) = HeaderValue::from_str(&media) {
        h.insert(header::CONTENT_TYPE, v);
    }
    if let Ok(v) = HeaderValue::from_str(&digest) {
        h.insert("Docker-Content-Digest", v);
    }
    r
}

/// Serves `dir` on a free port of 127.0.0.1 until `stop`; returns the address.
pub async fn serve(dir: &Path, stop: CancellationToken) -> std::io::Result<std::net::SocketAddr> {
    let d = dir.to_path_buf();
    let catalog = Arc::new(tokio::task::spawn_blocking(move || Catalog::load(&d)).await.map_err(std::io::Error::other)?);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let app = axum::Router::new().fallback(move |req: Request<Body>| answer(catalog.clone(), req));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).with_graceful_shutdown(async move { stop.cancelled().await }).await;
    });
    Ok(addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn serves_manifests_by_tag_and_digest_and_404s_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let a = super::super::pause::archive("docker.io/library/busybox:1.35", b"binary", &["/bin/busybox"]).unwrap();
        std::fs::write(dir.path().join("busybox.tar"), a).unwrap();
        let stop = CancellationToken::new();
        let addr = serve(dir.path(), stop.clone()).await.unwrap();
        // HTTP/1.0 by hand: the status and the digest header are all a test needs.
        let get = |path: &str| {
            let req = format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n");
            async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
                s.write_all(req.as_bytes()).await.unwrap();
                let mut buf = Vec::new();
                s.read_to_end(&mut buf).await.unwrap();
                let text = String::from_utf8_lossy(&buf).to_string();
                let status = text.split(' ').nth(1).unwrap_or("").to_string();
                let digest = text.lines().find_map(|l| l.to_ascii_lowercase().starts_with("docker-content-digest:").then(|| l[22..].trim().to_string()));
                match digest {
                    Some(d) => format!("{status} {d}"),
                    None => status,
                }
            }
        };
        assert!(get("/v2/").await.starts_with("200"));
        let tagged = get("/v2/library/busybox/manifests/1.35?ns=docker.io").await;
        assert!(tagged.starts_with("200 sha256:"), "{tagged}");
        let digest = tagged.split(' ').nth(1).unwrap().to_string();
        assert!(get(&format!("/v2/library/busybox/manifests/{digest}")).await.starts_with("200"));
        assert_eq!(get("/v2/library/busybox/manifests/latest?ns=docker.io").await, "404");
        assert_eq!(get("/v2/library/nope/manifests/latest").await, "404");
        assert_eq!(get("/v2/library/busybox/blobs/sha256:00").await, "404");
        stop.cancel();
    }
}
