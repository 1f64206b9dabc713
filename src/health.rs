//! `/healthz`, `/readyz` and `/metrics` for components that have no gateway of their own
//! (state members, scheduler, controllers, node agents run as separate processes).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

pub async fn serve(addr: SocketAddr, ready: Arc<AtomicBool>, shutdown: tokio_util::sync::CancellationToken) -> anyhow::Result<()> {
    use axum::{http::StatusCode, routing::get, Router};
    let r = ready.clone();
    let app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/livez", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(move || {
                let r = r.clone();
                async move {
                    if r.load(Ordering::SeqCst) {
                        (StatusCode::OK, "ok")
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
                    }
                }
            }),
        )
        .route("/metrics", get(|| async { bus::metrics::render() }));
    let listener = tokio::net::TcpListener::bind(addr).await?;
    axum::serve(listener, app).with_graceful_shutdown(async move { shutdown.cancelled().await }).await?;
    Ok(())
}
