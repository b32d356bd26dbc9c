//! `/healthz`, `/readyz` and `/metrics`.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use axum::{Router, extract::State, http::StatusCode, response::IntoResponse, routing::get};

use crate::metrics::Metrics;

/// What the endpoints report.
pub struct Health {
    pub metrics: Arc<Metrics>,
    /// Set once the controllers have started (and, with leader election,
    /// whether this replica may act is irrelevant: a standby is ready).
    pub ready: AtomicBool,
}

pub async fn serve(addr: SocketAddr, health: Arc<Health>, shutdown: impl Future<Output = ()> + Send + 'static) -> std::io::Result<()> {
    let app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(health);
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "serving /healthz, /readyz and /metrics");
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await
}

async fn readyz(State(h): State<Arc<Health>>) -> impl IntoResponse {
    if h.ready.load(Ordering::Relaxed) { (StatusCode::OK, "ok") } else { (StatusCode::SERVICE_UNAVAILABLE, "starting") }
}

async fn metrics(State(h): State<Arc<Health>>) -> impl IntoResponse {
    ([("content-type", "text/plain; version=0.0.4; charset=utf-8")], h.metrics.encode())
}
