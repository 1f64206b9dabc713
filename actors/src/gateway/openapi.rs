//! Serves the OpenAPI documents that schema/ generates from the API types: `/openapi/v3`
//! (an index with stable hashes), `/openapi/v3/<gv>` (cacheable for a year when asked by
//! hash, as kube-apiserver does) and `/openapi/v2` (JSON, or gnostic protobuf when asked).
//! Rendered once; they are megabytes.

use super::status::ApiError;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use schema::openapi;
use serde_json::{json, Map};
use std::collections::BTreeMap;
use std::sync::OnceLock;

struct Rendered {
    index: Vec<u8>,
    /// gv path → (hash, JSON bytes)
    v3: BTreeMap<String, (String, Vec<u8>)>,
    v2: (String, Vec<u8>),
    v2_protobuf: Vec<u8>,
}

/// Generates and renders every document now, off the async workers: done once before
/// the gateway listens, so no request (and no write's field validation) stalls a worker
/// while megabytes of schema are built.
pub async fn warm_up() {
    let _ = tokio::task::spawn_blocking(|| {
        openapi::definitions();
        rendered();
    })
    .await;
}

fn rendered() -> &'static Rendered {
    static R: OnceLock<Rendered> = OnceLock::new();
    R.get_or_init(|| {
        let mut v3 = BTreeMap::new();
        let mut paths = Map::new();
        for p in openapi::v3_paths() {
            if let Some(doc) = openapi::v3_document(&p) {
                let bytes = serde_json::to_vec(&doc).unwrap_or_default();
                let h = openapi::hash(&bytes);
                paths.insert(p.clone(), json!({"serverRelativeURL": format!("/openapi/v3/{p}?hash={h}")}));
                v3.insert(p, (h, bytes));
            }
        }
        let v2_doc = openapi::v2_document();
        let v2 = serde_json::to_vec(&v2_doc).unwrap_or_default();
        let v2_protobuf = openapi::v2proto::encode(&v2_doc);
        Rendered { index: serde_json::to_vec(&json!({"paths": paths})).unwrap_or_default(), v3, v2: (openapi::hash(&v2), v2), v2_protobuf }
    })
}

fn json_bytes(bytes: &[u8], etag: Option<&str>, cache: &'static str) -> Response {
    let mut r = (StatusCode::OK, bytes.to_vec()).into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    if let Some(e) = etag.and_then(|e| HeaderValue::from_str(&format!("\"{e}\"")).ok()) {
        h.insert(header::ETAG, e);
    }
    r
}

/// `GET /openapi/v3`: never cached by clients, so new hashes are seen at once.
pub fn index() -> Response {
    json_bytes(&rendered().index, None, "no-cache, private")
}

/// `GET /openapi/v3/<gv>[?hash=]`. With the current hash the answer may be kept for a
/// year (it can never change under that URL); with a stale one the client is sent to the
/// current URL, as kube-apiserver does; without one it must revalidate.
pub fn document(path: &str, hash: Option<&str>) -> Result<Response, ApiError> {
    let path = path.trim_matches('/');
    let (h, bytes) = rendered().v3.get(path).ok_or_else(ApiError::no_resource)?;
    match hash {
        Some(q) if q == h => Ok(json_bytes(bytes, Some(h), "public, immutable, max-age=31536000")),
        Some(_) => {
            let mut r = StatusCode::MOVED_PERMANENTLY.into_response();
            if let Ok(loc) = HeaderValue::from_str(&format!("/openapi/v3/{path}?hash={h}")) {
                r.headers_mut().insert(header::LOCATION, loc);
            }
            r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache, private"));
            Ok(r)
        }
        None => Ok(json_bytes(bytes, Some(h), "no-cache, private")),
    }
}

/// `GET /openapi/v2`: gnostic protobuf when the client names it (client-go always does),
/// else JSON, as kube-apiserver negotiates.
pub fn v2(accept: &str) -> Response {
    let r = rendered();
    let (h, json_bytes_) = &r.v2;
    if accept.contains(openapi::v2proto::ACCEPT_MARK) {
        let mut resp = json_bytes(&r.v2_protobuf, Some(h), "no-cache, private");
        resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(openapi::v2proto::CONTENT_TYPE));
        return resp;
    }
    json_bytes(json_bytes_, Some(h), "no-cache, private")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_hashes_match_documents_and_hash_selects_caching() {
        let idx: serde_json::Value = serde_json::from_slice(&rendered().index).unwrap();
        let url = idx["paths"]["apis/apps/v1"]["serverRelativeURL"].as_str().unwrap();
        let h = url.split("hash=").nth(1).unwrap();
        let r = document("apis/apps/v1", Some(h)).unwrap();
        assert_eq!(r.headers()[header::CACHE_CONTROL], "public, immutable, max-age=31536000");
        let stale = document("apis/apps/v1", Some("0000")).unwrap();
        assert_eq!(stale.status(), StatusCode::MOVED_PERMANENTLY);
        assert_eq!(stale.headers()[header::LOCATION], format!("/openapi/v3/apis/apps/v1?hash={h}").as_str());
        assert_eq!(document("api/v1", None).unwrap().headers()[header::CACHE_CONTROL], "no-cache, private");
        assert!(document("apis/nope/v1", None).is_err());
    }

    #[test]
    fn v2_is_protobuf_when_asked_else_json() {
        assert_eq!(v2("application/json").headers()[header::CONTENT_TYPE], "application/json");
        assert_eq!(v2("").headers()[header::CONTENT_TYPE], "application/json");
        let pb = v2("application/com.github.proto-openapi.spec.v2@v1.0+protobuf");
        assert_eq!(pb.headers()[header::CONTENT_TYPE], "application/com.github.proto-openapi.spec.v2.v1.0+protobuf");
    }
}
