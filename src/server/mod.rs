//! The HTTP server: router, shared state, start-up and graceful shutdown. Handlers are thin:
//! they parse the request, call the engine, and turn its answer into a response.

mod admin;
pub mod auth;
mod browser;
mod conditional;
mod docker;
mod error;
mod extract;
pub mod listener;
mod local;
mod npm;
mod pypi;
pub mod reload;
mod remote;
mod respond;
mod virtual_repo;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use serde_json::json;

use crate::metrics::Metrics;
use crate::repo::Engine;

pub use error::ApiError;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    /// The repositories and who may use them: replaced whole by a reload, while requests
    /// already running keep the ones they started with.
    live: Arc<std::sync::RwLock<Live>>,
    pub metrics: Arc<Metrics>,
    /// Set once a shutdown began: `/health` answers 503 `draining`.
    pub draining: Arc<std::sync::atomic::AtomicBool>,
    /// The file the configuration was read from, for reloads; `None` when it came from
    /// elsewhere (tests), and then reloading is refused.
    pub config_path: Option<Arc<std::path::PathBuf>>,
}

/// What a configuration defines: the engine (repositories over the cache) and the auth policy.
#[derive(Clone)]
struct Live {
    engine: Arc<Engine>,
    auth: Arc<crate::auth::Policy>,
}

impl AppState {
    pub fn new(
        engine: Arc<Engine>,
        auth: Arc<crate::auth::Policy>,
        metrics: Arc<Metrics>,
    ) -> AppState {
        AppState {
            live: Arc::new(std::sync::RwLock::new(Live { engine, auth })),
            metrics,
            draining: Arc::default(),
            config_path: None,
        }
    }

    fn live(&self) -> Live {
        self.live
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The repositories, as configured now.
    pub fn engine(&self) -> Arc<Engine> {
        self.live().engine
    }

    /// Who may do what (`auth:`), as configured now.
    pub fn auth(&self) -> Arc<crate::auth::Policy> {
        self.live().auth
    }

    /// Puts a reloaded configuration in force for the requests that start from now on.
    pub fn replace(&self, engine: Arc<Engine>, auth: Arc<crate::auth::Policy>) {
        *self
            .live
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Live { engine, auth };
    }
}

/// The whole route table.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/api/v1/remote/{*rest}", get(remote::get_remote))
        .route(
            "/api/v1/local/{*rest}",
            get(local::read)
                .put(local::put)
                .post(local::post)
                .delete(local::delete)
                // Uploads stream to storage whatever their size.
                .layer(DefaultBodyLimit::disable()),
        )
        .route("/api/v1/virtual/{*rest}", get(virtual_repo::read))
        .route("/api/v1/cache/flush", post(admin::flush))
        .route("/api/v1/admin/reload", post(admin::reload))
        .route("/v2", get(docker::ping))
        .route("/v2/", get(docker::ping))
        .route("/v2/{*rest}", any(docker::v2))
        .fallback(not_found)
        .layer(axum::middleware::from_fn(conditional::not_modified))
        .layer(axum::middleware::from_fn(browser::guard))
        .with_state(state)
}

async fn health(State(state): State<AppState>) -> Response {
    let engine = state.engine();
    let cache = &engine.cache;
    let (storage, meta) = tokio::join!(cache.storage.check(), cache.meta.check());
    let draining = state.draining.load(std::sync::atomic::Ordering::Relaxed);
    let ok = storage.is_ok() && meta.is_ok() && !draining;
    let body = json!({
        "status": match (draining, ok) {
            (true, _) => "draining",
            (false, true) => "ok",
            (false, false) => "degraded",
        },
        "version": crate::VERSION,
        "backends": {
            "storage": { "reachable": storage.is_ok() },
            "metadata": { "reachable": meta.is_ok() },
        },
        "fills_in_flight": cache.inflight.len(),
    });
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(body)).into_response()
}

async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
        .into_response()
}

async fn not_found(uri: Uri) -> Response {
    let body = json!({
        "error": "route_not_found",
        "message": format!("no route for {}", uri.path()),
    });
    (StatusCode::NOT_FOUND, axum::Json(body)).into_response()
}

/// Serves until SIGINT/SIGTERM; then drains (`/health` answers 503 while requests are still
/// taken, for `drain`), stops accepting and gives responses in flight `grace` to finish. Calls
/// `on_ready` with the bound address once listening.
pub async fn run(
    state: AppState,
    listen: SocketAddr,
    limits: listener::Limits,
    (drain, grace): (Duration, Duration),
    on_ready: impl FnOnce(SocketAddr),
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    on_ready(addr);
    let draining = state.draining.clone();
    let shutdown = async move {
        shutdown_signal().await;
        draining.store(true, std::sync::atomic::Ordering::Relaxed);
        if !drain.is_zero() {
            tracing::info!(
                seconds = drain.as_secs_f64(),
                "draining: /health answers 503, requests are still served"
            );
            tokio::time::sleep(drain).await;
        }
        tracing::info!("shutting down: no new connections, finishing responses in flight");
    };
    let metrics = state.metrics.clone();
    listener::serve(listener, router(state), metrics, limits, shutdown, grace).await
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
