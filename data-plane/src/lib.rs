//! Gatehouse data plane: the stateless HTTP edge. Serves `/mcp`, the OAuth
//! endpoints, the consent pages and health; asks the control plane for
//! everything it needs to know and keeps only what it can drop.
//!
//! Entry point: [`DataPlane::start`]; the middleware stack is assembled in
//! `layers`, the routes in [`router`]. `cp_client` is the only gRPC client.

pub mod config;
mod connect;
mod consent;
pub mod cp_client;
mod health;
#[path = "../../proto/histogram.rs"]
mod histogram;
mod layers;
mod mcp;
mod metrics;
mod oauth;
mod pb;
mod ratelimit;
#[path = "../../proto/trace_context.rs"]
pub mod trace_context;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::routing::get;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::config::DataPlaneConfig;
use crate::cp_client::{ControlPlaneClient, CpClientError};

/// What every handler shares.
pub struct AppState {
    pub config: DataPlaneConfig,
    pub cp: ControlPlaneClient,
    /// `/mcp`'s caches and upstream client.
    pub(crate) mcp: mcp::Gateway,
    /// Rate-limit buckets.
    pub(crate) limiter: ratelimit::Limiter,
    /// Requests by route, for `/metrics`.
    pub(crate) metrics: Arc<metrics::HttpMetrics>,
}

/// A running data plane. Dropping it stops the server.
pub struct DataPlane {
    addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
    /// Follows the control plane's invalidation events.
    watcher: JoinHandle<()>,
}

impl DataPlane {
    /// Serves HTTP on `listener`.
    pub async fn start(config: DataPlaneConfig, listener: TcpListener) -> Result<Self, CpClientError> {
        let cp = ControlPlaneClient::new(&config.control_plane)?;
        let mcp = mcp::Gateway::new(&config).map_err(|e| CpClientError::HttpClient(e.to_string()))?;
        let state = Arc::new(AppState {
            config,
            cp,
            mcp,
            limiter: ratelimit::Limiter::default(),
            metrics: Arc::default(),
        });
        let watcher = tokio::spawn(mcp::events::watch(state.clone()));
        let app = app(state);
        let addr = listener.local_addr().map_err(|e| CpClientError::BadUrl {
            url: "listener".into(),
            reason: e.to_string(),
        })?;
        let (tx, rx) = oneshot::channel();
        // No Nagle: an SSE relay writes event by event; each must go out at once.
        let listener = axum::serve::ListenerExt::tap_io(listener, |tcp: &mut tokio::net::TcpStream| {
            if let Err(err) = tcp.set_nodelay(true) {
                tracing::debug!(target: "gatehouse::data_plane", error = %err, "TCP_NODELAY not set");
            }
        });
        let task = tokio::spawn(async move {
            axum::serve(
                listener,
                axum::ServiceExt::<axum::extract::Request>::into_make_service_with_connect_info::<SocketAddr>(app),
            )
            .with_graceful_shutdown(async {
                let _ = rx.await;
            })
            .await
        });
        tracing::info!(target: "gatehouse::data_plane", %addr, "data plane serving HTTP");
        Ok(Self {
            addr,
            shutdown: Some(tx),
            task: Some(task),
            watcher,
        })
    }

    /// The bound HTTP address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, finishes in-flight requests.
    pub async fn shutdown(mut self) {
        self.watcher.abort();
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            match task.await {
                Ok(Err(err)) => {
                    tracing::warn!(target: "gatehouse::data_plane", error = %err, "HTTP server ended with an error")
                }
                Err(err) if err.is_panic() => std::panic::resume_unwind(err.into_panic()),
                _ => {}
            }
        }
    }

    /// Waits until the server stops (for the `data-plane` command).
    pub async fn wait(mut self) -> std::io::Result<()> {
        match self.task.take() {
            Some(task) => task.await.unwrap_or(Ok(())),
            None => Ok(()),
        }
    }
}

impl Drop for DataPlane {
    fn drop(&mut self) {
        self.watcher.abort();
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// Every route, inside the shared middleware stack. Each group brings its own
/// layers: CORS on the OAuth endpoints, page security headers on the consent
/// pages and `/authorize`; `/mcp` authenticates in its handlers.
pub fn app(state: Arc<AppState>) -> layers::App {
    let routes = Router::new()
        .route("/healthz", get(health::get_healthz))
        .route("/readyz", get(health::get_readyz))
        .route("/metrics", get(metrics::get_metrics))
        .merge(oauth::router())
        .merge(consent::router())
        .merge(connect::router())
        .merge(mcp::router())
        .with_state(state.clone());
    layers::apply(routes, &state)
}
