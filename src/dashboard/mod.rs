//! The dashboard: a page served by `flotilla up` (and `flotilla dashboard`) showing every
//! process's actors, the nodes and their pods, recent traces as waterfalls and one
//! object's history. It only listens to the bus (`flotilla.obs.*`, informers, the events
//! stream); the page is hand-written HTML/JS/CSS embedded in the binary.

pub mod collect;

use axum::extract::{Path, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use collect::Collected;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use schema::obs::{ActorSnapshot, SpanBatch};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio_util::sync::CancellationToken;

const INDEX: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const STYLE: &str = include_str!("assets/style.css");

/// `--dashboard-addr`: an address, or `off`.
pub fn parse_addr(s: &str) -> Result<Option<SocketAddr>, String> {
    match s {
        "off" | "none" | "" => Ok(None),
        a => a.parse().map(Some).map_err(|e| format!("{a:?} is not an address or \"off\": {e}")),
    }
}

#[derive(Clone)]
struct Dash {
    data: Arc<Mutex<Collected>>,
    /// Bumped on every change; the SSE stream tells the page to look again.
    version: tokio::sync::watch::Sender<u64>,
    bus: bus::Bus,
    token: Option<Arc<str>>,
    /// The nodes' and pods' informers start with the first look at the nodes, so a
    /// cluster nobody watches (every test's `up`) does not decode each pod event again.
    informing: Arc<std::sync::atomic::AtomicBool>,
    stop: CancellationToken,
}

impl Dash {
    fn change(&self, f: impl FnOnce(&mut Collected)) {
        if let Ok(mut d) = self.data.lock() {
            f(&mut d);
        }
        self.version.send_modify(|v| *v += 1);
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// Serves the dashboard on `addr` until `stop`. Refuses a non-loopback address without
/// a token: the page shows every object name and trace of the cluster.
pub async fn serve(addr: SocketAddr, token: Option<String>, bus: bus::Bus, stop: CancellationToken) -> anyhow::Result<()> {
    if token.is_none() && !addr.ip().is_loopback() {
        anyhow::bail!("the dashboard listens on {addr}, not loopback: set --dashboard-token");
    }
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| anyhow::anyhow!("dashboard: binding {addr}: {e}"))?;
    let (version, _) = tokio::sync::watch::channel(0u64);
    let d = Dash { data: Arc::default(), version, bus: bus.clone(), token: token.map(Into::into), informing: Arc::default(), stop: stop.clone() };
    subscribe(&d, stop.clone()).await?;
    let app = Router::new()
        .route("/api/actors", get(actors))
        .route("/api/nodes", get(nodes))
        .route("/api/traces", get(traces))
        .route("/api/traces/{id}", get(trace))
        .route("/api/history/{plural}/{ns}/{name}", get(history))
        .route("/api/events", get(events))
        .route("/metrics", get(|| async { bus::metrics::render() }))
        .layer(axum::middleware::from_fn_with_state(d.clone(), guard))
        // The page itself holds no cluster data: it loads without the token (which it
        // then passes on from its own URL to the API).
        .route("/", get(|| async { ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], INDEX) }))
        .route("/app.js", get(|| async { ([(header::CONTENT_TYPE, "text/javascript; charset=utf-8")], APP_JS) }))
        .route("/style.css", get(|| async { ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], STYLE) }))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(|| async { "ok" }))
        .with_state(d);
    tracing::info!(%addr, "dashboard listening");
    axum::serve(listener, app).with_graceful_shutdown(async move { stop.cancelled().await }).await?;
    Ok(())
}

async fn guard(State(d): State<Dash>, req: Request, next: Next) -> Response {
    let bearer = req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    if collect::authorized(d.token.as_deref(), bearer, req.uri().query()) {
        next.run(req).await
    } else {
        (StatusCode::UNAUTHORIZED, "a dashboard token is required (Authorization: Bearer, or ?token=)").into_response()
    }
}

/// Folds the processes' publications into `d`.
async fn subscribe(d: &Dash, stop: CancellationToken) -> anyhow::Result<()> {
    let mut actors = d.bus.nats.subscribe(schema::subjects::all_obs_actors()).await?;
    let mut spans = d.bus.nats.subscribe(schema::subjects::all_obs_spans()).await?;
    // Processes publish only changes: ask each for its current stats once.
    d.bus.nats.publish(schema::subjects::OBS_RESEND, bytes::Bytes::new()).await?;
    let d = d.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                Some(m) = actors.next() => if let Ok(s) = schema::codec::decode::<ActorSnapshot>(&m.payload) { d.change(|c| c.snapshot(s)) },
                Some(m) = spans.next() => if let Ok(b) = schema::codec::decode::<SpanBatch>(&m.payload) { d.change(|c| c.add_spans(&b.process, b.spans)) },
                else => return,
            }
        }
    });
    Ok(())
}

/// Starts the nodes' and pods' informers, once.
fn inform(d: &Dash) {
    if d.informing.swap(true, std::sync::atomic::Ordering::SeqCst) {
        return;
    }
    let client = bus::Client::new(d.bus.clone());
    let mut nodes = Box::pin(bus::informer::watch_objects::<Node>(client.clone(), Default::default()));
    let mut pods = Box::pin(bus::informer::watch_objects::<Pod>(client, Default::default()));
    let d = d.clone();
    tokio::spawn(async move {
        use bus::informer::InformerEvent as E;
        let name = |m: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| format!("{}/{}", m.namespace.as_deref().unwrap_or(""), m.name.as_deref().unwrap_or(""));
        loop {
            tokio::select! {
                _ = d.stop.cancelled() => return,
                Some(ev) = nodes.next() => d.change(|c| match ev {
                    E::Listed(all, _) => c.nodes = all.into_iter().map(|n| (n.metadata.name.clone().unwrap_or_default(), n)).collect(),
                    E::Applied(n, _) => { c.nodes.insert(n.metadata.name.clone().unwrap_or_default(), n); }
                    E::Deleted(n, _) => { c.nodes.remove(n.metadata.name.as_deref().unwrap_or_default()); }
                }),
                Some(ev) = pods.next() => d.change(|c| match ev {
                    E::Listed(all, _) => c.pods = all.into_iter().map(|p| (name(&p.metadata), p)).collect(),
                    E::Applied(p, _) => { c.pods.insert(name(&p.metadata), p); }
                    E::Deleted(p, _) => { c.pods.remove(&name(&p.metadata)); }
                }),
                else => return,
            }
        }
    });
}

fn read<T>(d: &Dash, f: impl FnOnce(&Collected) -> T) -> Result<T, StatusCode> {
    d.data.lock().map(|c| f(&c)).map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)
}

async fn actors(State(d): State<Dash>) -> Result<Json<Vec<collect::ActorRow>>, StatusCode> {
    read(&d, |c| collect::actor_rows(c, now_ms())).map(Json)
}

async fn nodes(State(d): State<Dash>) -> Result<Json<Vec<collect::NodeRow>>, StatusCode> {
    inform(&d);
    read(&d, collect::nodes).map(Json)
}

async fn traces(State(d): State<Dash>) -> Result<Json<Vec<collect::TraceSummary>>, StatusCode> {
    read(&d, |c| collect::traces(c, 100)).map(Json)
}

async fn trace(State(d): State<Dash>, Path(id): Path<String>) -> Result<Json<Vec<collect::SpanRow>>, StatusCode> {
    read(&d, |c| collect::waterfall(c, &id)).map(Json)
}

#[derive(serde::Serialize)]
struct HistoryRow {
    rev: u64,
    #[serde(rename = "type")]
    typ: String,
    writer: Option<String>,
    trace_id: Option<String>,
    prev: Option<u64>,
    object: serde_json::Value,
}

/// `plural/ns/name`, `_` for a cluster-scoped object's namespace.
async fn history(State(d): State<Dash>, Path((plural, ns, name)): Path<(String, String, String)>) -> Response {
    let found = schema::registry::group_versions().into_iter().filter_map(|(g, v)| schema::registry::by_plural(g, v, &plural)).find(|r| schema::registry::is_stored(r));
    let Some(res) = found else { return (StatusCode::NOT_FOUND, format!("no resource {plural:?}")).into_response() };
    let ns = (res.namespaced && ns != schema::subjects::NONE).then_some(ns.as_str());
    let key = schema::keys::object(res.plural, ns, &name);
    let filter = schema::subjects::event_filter(res.plural, &schema::subjects::EventFilter { namespace: ns, name: Some(&name), ..Default::default() });
    match d.bus.history(filter, &key).await {
        Ok(revs) => Json(
            revs.into_iter()
                .map(|r| HistoryRow {
                    rev: r.event.rev,
                    typ: format!("{:?}", r.event.typ),
                    writer: r.writer,
                    trace_id: r.trace.and_then(|t| schema::trace::TraceParent::parse(&t).ok()).map(|t| t.trace_id_hex()),
                    prev: r.event.prev,
                    object: schema::codec::decode::<serde_json::Value>(&r.event.value).unwrap_or(serde_json::Value::Null),
                })
                .collect::<Vec<_>>(),
        )
        .into_response(),
        Err(e) => (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    }
}

/// Tells the page, at most twice a second, that something changed; it then re-reads
/// the JSON it shows. The first message goes at once, so a page renders without waiting.
async fn events(State(d): State<Dash>) -> Sse<impl futures::Stream<Item = Result<SseEvent, std::convert::Infallible>>> {
    let rx = d.version.subscribe();
    // Ends with the server, so an open page does not hold up its graceful shutdown.
    let stop = d.stop.clone();
    let s = futures::stream::unfold((rx, true), move |(mut rx, first)| {
        let stop = stop.clone();
        async move {
            if !first {
                tokio::select! {
                    r = rx.changed() => r.ok()?,
                    _ = stop.cancelled() => return None,
                }
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            }
            let v = *rx.borrow_and_update();
            Some((Ok(SseEvent::default().event("changed").data(v.to_string())), (rx, false)))
        }
    });
    Sse::new(s).keep_alive(KeepAlive::default())
}
