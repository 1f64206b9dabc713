//! kube-apiserver's max-in-flight filter: at most `--max-requests-inflight` reads and
//! `--max-mutating-requests-inflight` writes are served at once; one more gets 429 with
//! `Retry-After: 1` (client-go waits and retries) instead of piling up. Long-running
//! requests (watches, logs, exec) and system:masters are not counted, as there.

use super::status::ApiError;
use axum::http::{header, HeaderValue, Method};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The limits; 0 means unlimited, as for the kube-apiserver flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_requests_inflight: usize,
    pub max_mutating_requests_inflight: usize,
    /// The largest request body accepted (kube-apiserver: 3 MiB).
    pub max_request_body_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_requests_inflight: 400, max_mutating_requests_inflight: 200, max_request_body_bytes: 3 * 1024 * 1024 }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    LongRunning,
    Read,
    Mutating,
}

/// BasicLongRunningRequestCheck: the verbs watch and proxy, the subresources attach,
/// exec, proxy, log and portforward.
pub fn classify(method: &Method, segs: &[&str], query: &[(String, String)]) -> Class {
    let watch = query.iter().any(|(k, v)| k == "watch" && (v == "true" || v == "1"));
    let long_sub = segs.len() >= 4 && matches!(segs.last().copied(), Some("attach" | "exec" | "proxy" | "log" | "portforward"));
    if (watch && *method == Method::GET) || long_sub || segs.contains(&"watch") {
        return Class::LongRunning;
    }
    match *method {
        Method::GET | Method::HEAD | Method::OPTIONS => Class::Read,
        _ => Class::Mutating,
    }
}

pub struct InFlight {
    reads: Option<Arc<Semaphore>>,
    writes: Option<Arc<Semaphore>>,
}

/// A counted request's slot: held for its life, and shown meanwhile in kube-apiserver's
/// `apiserver_current_inflight_requests{request_kind}` gauge.
#[derive(Debug)]
pub struct Slot {
    _permit: OwnedSemaphorePermit,
    kind: &'static str,
    counter: Arc<std::sync::atomic::AtomicI64>,
}

fn gauge(kind: &str, v: i64) {
    bus::metrics::set(&format!("apiserver_current_inflight_requests{{request_kind=\"{kind}\"}}"), v as f64);
}

impl Drop for Slot {
    fn drop(&mut self) {
        let v = self.counter.fetch_sub(1, std::sync::atomic::Ordering::SeqCst) - 1;
        gauge(self.kind, v);
    }
}

fn counters() -> &'static [Arc<std::sync::atomic::AtomicI64>; 2] {
    static C: std::sync::OnceLock<[Arc<std::sync::atomic::AtomicI64>; 2]> = std::sync::OnceLock::new();
    C.get_or_init(Default::default)
}

impl InFlight {
    pub fn new(l: &Limits) -> InFlight {
        let sem = |n: usize| (n > 0).then(|| Arc::new(Semaphore::new(n)));
        InFlight { reads: sem(l.max_requests_inflight), writes: sem(l.max_mutating_requests_inflight) }
    }

    /// A slot held for the request's life, None when it is not counted; Err when full.
    pub fn admit(&self, class: Class, privileged: bool) -> Result<Option<Slot>, ApiError> {
        let (sem, kind, counter) = match class {
            _ if privileged => return Ok(None),
            Class::LongRunning => return Ok(None),
            Class::Read => (&self.reads, "readOnly", &counters()[0]),
            Class::Mutating => (&self.writes, "mutating", &counters()[1]),
        };
        let Some(s) = sem else { return Ok(None) };
        let permit = s.clone().try_acquire_owned().map_err(|_| too_many())?;
        let v = counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        gauge(kind, v);
        Ok(Some(Slot { _permit: permit, kind, counter: counter.clone() }))
    }
}

pub fn too_many() -> ApiError {
    ApiError { details: Some(json!({"retryAfterSeconds": 1})), ..ApiError::new(429, "TooManyRequests", "Too many requests, please try again later.") }
}

/// The 429 as a response, with the Retry-After header client-go honours.
pub fn response(e: ApiError) -> Response {
    let retry = e.code == 429;
    let mut r = e.into_response();
    if retry {
        r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_and_limits() {
        let q = |s: &str| super::super::parse_query(s);
        assert_eq!(classify(&Method::GET, &["api", "v1", "pods"], &q("watch=true")), Class::LongRunning);
        assert_eq!(classify(&Method::GET, &["api", "v1", "namespaces", "d", "pods", "p", "log"], &q("follow=true")), Class::LongRunning);
        assert_eq!(classify(&Method::GET, &["api", "v1", "pods"], &q("")), Class::Read);
        assert_eq!(classify(&Method::POST, &["api", "v1", "namespaces", "d", "pods"], &q("")), Class::Mutating);
        let f = InFlight::new(&Limits { max_requests_inflight: 1, max_mutating_requests_inflight: 0, ..Default::default() });
        let held = f.admit(Class::Read, false).unwrap();
        assert!(held.is_some());
        assert_eq!(f.admit(Class::Read, false).unwrap_err().code, 429);
        assert!(f.admit(Class::Read, true).unwrap().is_none());
        assert!(f.admit(Class::Mutating, false).unwrap().is_none());
        drop(held);
        assert!(f.admit(Class::Read, false).is_ok());
        assert_eq!(response(too_many()).headers()[header::RETRY_AFTER], "1");
    }
}
