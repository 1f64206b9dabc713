//! The gateway: flotilla's kube-apiserver. It speaks the Kubernetes REST API to kubectl
//! over HTTPS, authenticates every request (client certificate, token file, or
//! anonymous), authorizes it with RBAC, and turns it into reads, CAS writes and watches
//! on the bus. This file holds the config, `serve`, the request pipeline and the router.

mod authn;
mod authz;
mod consistency;
mod deletion;
mod eviction;
#[cfg(test)]
mod fuzz;
mod discovery;
mod fields;
mod objects;
mod router;
mod target;
mod verbs;
mod inflight;
mod logs;
mod membership;
pub mod endpoint_reconciler;
mod token_service;
mod metrics_api;
mod openapi;
mod patch;
mod patching;
mod protobuf;
mod protobuf_kinds;
mod request_metrics;
mod reviews;
pub(crate) mod selectors;
mod status;
mod streaming;
mod subresources;
mod table;
mod tls;
mod tokens;
mod validation;
mod watch;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use status::ApiError;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

pub struct GatewayConfig {
    pub addr: std::net::SocketAddr,
    /// None: plain HTTP (tests). kubectl sends no credentials over plain HTTP.
    pub tls: Option<TlsFiles>,
    /// kube-apiserver's `--token-auth-file`: `token,user,uid,"group1,group2"` per line.
    /// None: bearer tokens authenticate nobody.
    pub token_auth_file: Option<std::path::PathBuf>,
    /// The ServiceAccount token key pair and issuer; None: no ServiceAccount tokens.
    pub service_account: Option<ServiceAccountKeys>,
    /// In-flight and body-size limits, named after kube-apiserver's flags.
    pub limits: Limits,
}

pub use inflight::Limits;
pub use tokens::ServiceAccountKeys;

/// PEM contents (serving certificate chain + private key).
pub struct TlsFiles {
    pub cert_pem: String,
    pub key_pem: String,
    /// kube-apiserver's `--client-ca-file`: client certificates it signed authenticate
    /// as their subject (CN = user, O = groups). None: no client certificates.
    pub client_ca_pem: Option<String>,
}

pub(crate) struct AppState {
    pub bus: bus::Bus,
    pub authn: authn::Authenticator,
    pub rbac: Arc<authz::Rbac>,
    pub ready: Arc<dyn Fn() -> bool + Send + Sync>,
    pub shutdown: CancellationToken,
    pub inflight: inflight::InFlight,
    pub limits: Limits,
    /// The node agents' latest usage reports, for the metrics API.
    pub usage: Arc<bus::usage::UsageCache>,
    /// HTTP watches of one resource share one watch on the events stream.
    pub watches: bus::fanout::Fanout,
}

/// One parsed request, as the handlers see it.
pub(crate) struct Req {
    pub method: Method,
    pub query: Vec<(String, String)>,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// Who sent it (after impersonation).
    pub user: schema::rbac::UserInfo,
    /// The connection, for the streaming subresources' protocol upgrades.
    pub upgrade: std::sync::Mutex<Option<hyper::upgrade::OnUpgrade>>,
}

impl Req {
    pub fn q(&self, k: &str) -> Option<&str> {
        self.query.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str())
    }
    /// A boolean query parameter (`watch`, `follow`, …), read as kube-apiserver reads it.
    pub fn flag(&self, k: &str) -> bool {
        query_bool(self.q(k))
    }
    pub fn header(&self, h: header::HeaderName) -> &str {
        self.headers.get(h).and_then(|v| v.to_str().ok()).unwrap_or("")
    }
    pub fn accept(&self) -> &str {
        self.header(header::ACCEPT)
    }
    pub fn content_type(&self) -> &str {
        self.header(header::CONTENT_TYPE)
    }
    pub fn dry_run(&self) -> bool {
        self.query.iter().any(|(k, v)| k == "dryRun" && v == "All")
    }
}

/// Go's strconv.ParseBool, which kube-apiserver decodes boolean parameters with: the
/// Python client sends `watch=True`, client-go `watch=true`, some tools `watch=1`.
pub(crate) fn query_bool(v: Option<&str>) -> bool {
    matches!(v, Some("1" | "t" | "T" | "true" | "TRUE" | "True"))
}

/// Serves until `shutdown` fires. `ready` is consulted by /readyz.
pub async fn serve(
    cfg: GatewayConfig,
    bus: bus::Bus,
    ready: Arc<dyn Fn() -> bool + Send + Sync>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    openapi::warm_up().await;
    let listener = tokio::net::TcpListener::bind(cfg.addr).await.map_err(|e| anyhow::anyhow!("gateway: binding {}: {e}", cfg.addr))?;
    let acceptor = match &cfg.tls {
        Some(files) => Some(tls::acceptor(files)?),
        None => None,
    };
    let tokens = match &cfg.token_auth_file {
        Some(p) => {
            let text = std::fs::read_to_string(p).map_err(|e| anyhow::anyhow!("gateway: reading the token file {}: {e}", p.display()))?;
            authn::parse_token_file(&text).map_err(|e| anyhow::anyhow!("gateway: {}: {e}", p.display()))?
        }
        None => Default::default(),
    };
    let rbac = authz::Rbac::new();
    rbac.start(bus::Client::new(bus.clone()), shutdown.clone());
    let service_accounts = match &cfg.service_account {
        Some(k) => Some(Arc::new(tokens::TokenIssuer::new(k).map_err(|e| anyhow::anyhow!("gateway: {e}"))?)),
        None => None,
    };
    if let Some(issuer) = &service_accounts {
        tokio::spawn(token_service::serve(bus.clone(), issuer.clone(), shutdown.clone()));
    }
    let usage = bus::usage::UsageCache::start(bus.nats.clone(), shutdown.clone()).await.map_err(|e| anyhow::anyhow!("gateway: subscribing to resource metrics: {e}"))?;
    let state = Arc::new(AppState {
        usage,
        watches: bus::fanout::Fanout::new(bus.named("gateway")),
        bus: bus.named("gateway"),
        authn: authn::Authenticator { tokens, service_accounts },
        rbac,
        ready,
        shutdown: shutdown.clone(),
        inflight: inflight::InFlight::new(&cfg.limits),
        limits: cfg.limits,
    });
    tracing::info!(addr = %cfg.addr, tls = acceptor.is_some(), "gateway listening");
    let addr = listener.local_addr().unwrap_or(cfg.addr);
    tokio::spawn(endpoint_reconciler::run(bus::Client::new(state.bus.clone()), addr, shutdown.clone()));
    tls::accept_loop(listener, acceptor, router(state), shutdown).await;
    Ok(())
}

pub(crate) fn router(state: Arc<AppState>) -> axum::Router {
    axum::Router::new().fallback(dispatch).with_state(state)
}

pub(crate) fn json_response(code: StatusCode, v: &Value) -> Response {
    let mut r = (code, serde_json::to_vec(v).unwrap_or_default()).into_response();
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

fn text(code: StatusCode, s: impl Into<String>) -> Response {
    let mut r = (code, s.into()).into_response();
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    r
}

fn percent_decode(s: &str, plus_is_space: bool) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok().and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(x) => {
                        out.push(x);
                        i += 3;
                    }
                    None => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub(crate) fn parse_query(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k, true), percent_decode(v, true))
        })
        .collect()
}

async fn dispatch(State(st): State<Arc<AppState>>, request: Request) -> Response {
    use tracing::Instrument;
    // The caller's trace, or a new one: everything this request causes belongs to it.
    // `parent` is what the gateway's span hangs under: the caller's span, or nothing.
    let (parent, trace) = match request.headers().get(schema::trace::HEADER).and_then(|v| v.to_str().ok()).and_then(|v| schema::trace::TraceParent::parse(v).ok()) {
        Some(caller) => (caller, caller.child(bus::trace::span_id())),
        None => {
            let t = bus::trace::new_trace();
            (t.child([0; 8]), t)
        }
    };
    let span = tracing::info_span!("gateway", method = %request.method(), path = %request.uri().path(), trace_id = %trace.trace_id_hex());
    let started = std::time::Instant::now();
    let labels = {
        let path = request.uri().path();
        let segs: Vec<String> = path.split('/').filter(|s| !s.is_empty()).map(|s| percent_decode(s, false)).collect();
        let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
        let query = parse_query(request.uri().query().unwrap_or(""));
        let ct = request.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
        request_metrics::classify(request.method(), path, &segs, &query, ct)
    };
    let resp = bus::trace::scope(trace, handle(st, request)).instrument(span).await;
    // An answer the server itself failed to give counts as a failed message.
    if resp.status().is_server_error() {
        bus::metrics::failed("gateway", started.elapsed());
    } else {
        bus::metrics::handled("gateway", started.elapsed());
    }
    request_metrics::record(&labels, resp.status().as_u16(), started.elapsed());
    bus::trace::record(bus::trace::SpanRecord { trace: parent, span_id: trace.parent_id, name: "gateway", started: std::time::SystemTime::now() - started.elapsed(), took: started.elapsed() });
    resp
}

/// Authentication, impersonation and authorization, in the real server's order: the
/// user the request acts as, or the 401/403 it gets.
async fn admit(st: &AppState, parts: &axum::http::request::Parts, path: &str, query: &[(String, String)]) -> Result<schema::rbac::UserInfo, ApiError> {
    let cert_user = parts.extensions.get::<tls::PeerUser>().and_then(|p| p.0.as_ref());
    let authenticated = st.authn.authenticate(&parts.headers, cert_user)?;
    if let Some(c) = &authenticated.service_account {
        // A token outlives nothing it names: a deleted (or deleted and re-created)
        // account's or bound object's tokens stop working at once.
        if !tokens::token_is_current(st, c).await? {
            return Err(ApiError::unauthorized());
        }
    }
    let mut user = authenticated.user;
    if let Some(imp) = authn::impersonation(&parts.headers)? {
        for a in authn::impersonation_checks(&imp) {
            let d = st.rbac.authorize(&user, &a);
            if !d.allowed() {
                return Err(authz::forbidden(&user, &a, d.reason()));
            }
        }
        user = authn::impersonated_user(&imp);
    }
    let segs: Vec<String> = path.split('/').filter(|s| !s.is_empty()).map(|s| percent_decode(s, false)).collect();
    let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
    let a = authz::attributes(&parts.method, path, &segs, query);
    let d = st.rbac.authorize(&user, &a);
    if !d.allowed() {
        tracing::debug!(user = %user.name, verb = %a.verb, resource = %a.resource, namespace = %a.namespace, path, "forbidden");
        return Err(authz::forbidden(&user, &a, d.reason()));
    }
    Ok(user)
}

async fn handle(st: Arc<AppState>, request: Request) -> Response {
    let (mut parts, body) = request.into_parts();
    let upgrade = parts.extensions.remove::<hyper::upgrade::OnUpgrade>();
    let path = parts.uri.path().to_string();
    let method = parts.method.clone();
    let query = parse_query(parts.uri.query().unwrap_or(""));
    let resp = match admit(&st, &parts, &path, &query).await {
        Err(e) => e.into_response(),
        Ok(user) => {
            let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
            let privileged = user.groups.iter().any(|g| g == schema::rbac::SYSTEM_MASTERS);
            match st.inflight.admit(inflight::classify(&parts.method, &segs, &query), privileged) {
                Err(e) => {
                    // Take in what the client is already sending (briefly, and no more
                    // than a body may be) before answering: an HTTP/2 answer that races
                    // the request's last DATA frames ends in a stream reset, and the
                    // client sees no answer at all instead of the 429.
                    let drain = axum::body::to_bytes(body, st.limits.max_request_body_bytes);
                    let _ = tokio::time::timeout(std::time::Duration::from_millis(200), drain).await;
                    inflight::response(e)
                }
                // Held until the answer is ready, body upload included.
                Ok(_permit) => {
                    let limit = st.limits.max_request_body_bytes;
                    match axum::body::to_bytes(body, limit).await {
                        Err(_) => ApiError::new(413, "RequestEntityTooLarge", format!("Request entity too large: limit is {limit}")).into_response(),
                        Ok(bytes) => {
                            let req = Req { method: parts.method, query, headers: parts.headers, body: bytes, user, upgrade: std::sync::Mutex::new(upgrade) };
                            route(&st, &path, &req).await.unwrap_or_else(IntoResponse::into_response)
                        }
                    }
                }
            }
        }
    };
    bus::metrics::count(&format!("flotilla_gateway_requests_total{{verb=\"{method}\",code=\"{}\"}}", resp.status().as_u16()), 1.0);
    resp
}

async fn route(st: &AppState, path: &str, req: &Req) -> Result<Response, ApiError> {
    let segs: Vec<String> = path.split('/').filter(|s| !s.is_empty()).map(|s| percent_decode(s, false)).collect();
    let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
    let get = req.method == Method::GET;
    match segs.as_slice() {
        ["healthz"] | ["livez"] => Ok(text(StatusCode::OK, "ok")),
        ["readyz"] => Ok(if (st.ready)() && st.rbac.synced() { text(StatusCode::OK, "ok") } else { text(StatusCode::INTERNAL_SERVER_ERROR, "[-]flotilla-ready failed: the cluster is still starting\nreadyz check failed") }),
        ["version"] => Ok(json_response(StatusCode::OK, &discovery::version())),
        ["metrics"] => Ok(text(StatusCode::OK, bus::metrics::render())),
        ["openapi", "v3"] if get => Ok(openapi::index()),
        ["openapi", "v3", rest @ ..] if get => openapi::document(&rest.join("/"), req.q("hash")),
        ["openapi", "v2"] if get => Ok(openapi::v2(req.accept())),
        ["api"] if get => Ok(discovery_doc(req, true)),
        ["apis"] if get => Ok(discovery_doc(req, false)),
        ["api", v] if get => discovery::resource_list("", v).map(|d| json_response(StatusCode::OK, &d)).ok_or_else(ApiError::no_resource),
        ["apis", g] if get => discovery::group(g).map(|d| json_response(StatusCode::OK, &d)).ok_or_else(ApiError::no_resource),
        ["apis", g, v] if get => discovery::resource_list(g, v).map(|d| json_response(StatusCode::OK, &d)).ok_or_else(ApiError::no_resource),
        ["api", v, rest @ ..] if !rest.is_empty() => router::handle(st, "", v, rest, req).await,
        ["apis", g, v, rest @ ..] if !rest.is_empty() => router::handle(st, g, v, rest, req).await,
        _ => Err(ApiError::no_resource()),
    }
}

fn discovery_doc(req: &Req, core: bool) -> Response {
    if discovery::wants_aggregated(req.accept()) {
        let mut r = json_response(StatusCode::OK, &discovery::aggregated(core));
        r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(discovery::AGGREGATED_CONTENT_TYPE));
        r.headers_mut().insert(header::VARY, HeaderValue::from_static("Accept"));
        return r;
    }
    let host = req.header(header::HOST).to_string();
    let v = if core { discovery::legacy_api(&host) } else { discovery::legacy_apis() };
    let mut r = json_response(StatusCode::OK, &v);
    r.headers_mut().insert(header::VARY, HeaderValue::from_static("Accept"));
    r
}

/// A streaming response body fed by a channel (watch events, followed logs).
pub(crate) fn channel_body(rx: tokio::sync::mpsc::Receiver<Bytes>) -> Body {
    let s = futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|b| (Ok::<Bytes, std::convert::Infallible>(b), rx)) });
    Body::from_stream(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_and_percent_decoding() {
        let q = parse_query("fieldSelector=metadata.name%3Dweb&limit=500&watch&x=a+b&bad=%zz%");
        assert_eq!(q[0], ("fieldSelector".into(), "metadata.name=web".into()));
        assert_eq!(q[2], ("watch".into(), "".into()));
        assert_eq!(q[3].1, "a b");
        assert_eq!(q[4].1, "%zz%");
        assert_eq!(percent_decode("%", false), "%");
        assert_eq!(percent_decode("a%2", false), "a%2");
        assert_eq!(percent_decode("%e2%82%ac", false), "€");
    }

    #[test]
    fn boolean_parameters_read_like_go_parse_bool() {
        for yes in ["true", "True", "TRUE", "t", "T", "1"] {
            assert!(query_bool(Some(yes)), "{yes}");
        }
        for no in ["false", "False", "0", "", "yes", "tru"] {
            assert!(!query_bool(Some(no)), "{no}");
        }
        assert!(!query_bool(None));
    }

}
