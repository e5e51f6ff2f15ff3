//! Gatehouse control plane: owns every piece of state (clients, flows,
//! identities, grants, the token vault, the audit log) and serves it over gRPC.
//!
//! Entry point: [`ControlPlane::start`]. Module map: `grpc` is the edge (auth,
//! services, status mapping); `store` is the only SQL; `vault` the only
//! cryptography on stored values; `secret` issues and hashes secrets; domain
//! modules (`mcp_servers`, `virtual_keys`, `audit`) hold the rules.

pub mod audit;
pub mod clients;
pub mod clock;
pub mod config;
pub mod connect_links;
pub mod connections;
pub mod credentials;
pub mod events;
pub mod flows;
pub mod grants;
pub mod grpc;
pub mod identities;
pub mod mcp_servers;
pub mod metrics;
pub mod outbound;
pub mod pb;
pub mod periodic;
pub mod refresher;
pub mod secret;
pub mod sign_in;
pub mod store;
pub mod sweeper;
pub mod upstream;
pub mod vault;
pub mod virtual_keys;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::clock::Clock;
use crate::config::ControlPlaneConfig;
use crate::outbound::{Outbound, OutboundError};
use crate::periodic::Periodic;
use crate::secret::Secret;
use crate::store::{Store, StoreError};
use crate::vault::{KeySource, Vault, VaultError};

/// Environment variable holding vault keys when no key file is configured.
pub const VAULT_KEYS_ENV: &str = "GATEHOUSE_VAULT_KEYS";

/// Everything a request handler needs: store, vault, outbound HTTP, clock and settings.
pub struct Core {
    pub store: Store,
    pub vault: Vault,
    /// The guarded HTTP client (metadata documents, upstream OAuth, sign-in).
    pub outbound: Outbound,
    pub clock: Arc<dyn Clock>,
    pub config: ControlPlaneConfig,
    /// Invalidations for the data planes (`WatchEvents`).
    pub events: events::Events,
}

impl Core {
    /// Unix seconds now.
    pub fn now(&self) -> i64 {
        self.clock.now()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Vault(#[from] VaultError),
    #[error("store ({url}): {source}")]
    Store { url: String, source: StoreError },
    #[error("seeding MCP server {name:?} from the config: {reason}")]
    Seed { name: String, reason: String },
    #[error("TLS: {0}")]
    Tls(String),
    #[error("outbound HTTP client: {0}")]
    Outbound(#[from] OutboundError),
    #[error("gRPC listener: {0}")]
    Listener(std::io::Error),
}

/// A running control plane. Dropping it stops the server.
pub struct ControlPlane {
    addr: SocketAddr,
    core: Arc<Core>,
    sweeper: Option<Periodic>,
    refresher: Option<Periodic>,
    /// The event relay between replicas (PostgreSQL only); ends when events close.
    relay: Option<JoinHandle<()>>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), tonic::transport::Error>>>,
}

impl ControlPlane {
    /// Opens the store (applying migrations), loads the vault, seeds MCP servers
    /// from the config and serves gRPC on `listener`.
    pub async fn start(config: ControlPlaneConfig, listener: TcpListener, clock: Arc<dyn Clock>) -> Result<Self, StartError> {
        let vault = Vault::load(vault_source(&config)?)?;
        let store = Store::connect(&config.database_url)
            .await
            .map_err(|source| StartError::Store {
                url: store::redact_url(&config.database_url),
                source,
            })?;
        let outbound = Outbound::new(config.outbound.clone())?;
        let core = Arc::new(Core {
            store,
            vault,
            outbound,
            clock,
            config,
            events: events::Events::default(),
        });
        mcp_servers::seed_from_config(&core).await?;
        let addr = listener.local_addr().map_err(StartError::Listener)?;
        let (tx, rx) = oneshot::channel();
        let router = grpc::router(core.clone())?;
        // No Nagle: an HTTP/2 reply is several small writes (headers, data,
        // trailers); with Nagle and the peer's delayed ACK one of them could
        // wait ~40 ms (the benchmark's RPC p99 sat there before this).
        let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
        let task = tokio::spawn(router.serve_with_incoming_shutdown(incoming, async {
            let _ = rx.await;
        }));
        let relay = events::start_relay(&core).await.map_err(|source| StartError::Store {
            url: store::redact_url(&core.config.database_url),
            source,
        })?;
        let sweeper = sweeper::start(core.clone());
        let refresher = refresher::start(core.clone());
        tracing::info!(target: "gatehouse::control_plane", %addr, backend = ?core.store.backend(), "control plane serving gRPC");
        Ok(Self {
            addr,
            core,
            sweeper: Some(sweeper),
            refresher: Some(refresher),
            relay,
            shutdown: Some(tx),
            task: Some(task),
        })
    }

    /// The bound gRPC address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Shared state (for tests and the in-process `up` mode).
    pub fn core(&self) -> &Arc<Core> {
        &self.core
    }

    /// Stops serving and waits for in-flight calls, then closes the store.
    pub async fn shutdown(mut self) {
        if let Some(sweeper) = self.sweeper.take() {
            sweeper.stop().await;
        }
        if let Some(refresher) = self.refresher.take() {
            refresher.stop().await;
        }
        // Order: end the event streams first, or graceful shutdown waits on them forever.
        self.core.events.close();
        if let Some(relay) = self.relay.take() {
            let _ = relay.await;
        }
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            match task.await {
                Ok(Err(err)) => {
                    tracing::warn!(target: "gatehouse::control_plane", error = %err, "gRPC server ended with an error")
                }
                Err(err) if err.is_panic() => std::panic::resume_unwind(err.into_panic()),
                _ => {}
            }
        }
        self.core.store.close().await;
    }

    /// Waits until the server stops (for the `control-plane` command).
    pub async fn wait(mut self) -> Result<(), tonic::transport::Error> {
        match self.task.take() {
            Some(task) => task.await.unwrap_or(Ok(())),
            None => Ok(()),
        }
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.core.events.close();
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// Where the vault keys come from: the configured key file, else the environment.
pub fn vault_source(config: &ControlPlaneConfig) -> Result<KeySource, VaultError> {
    if let Some(path) = &config.vault.key_file {
        return Ok(KeySource::File(path.clone()));
    }
    match std::env::var(VAULT_KEYS_ENV) {
        Ok(keys) if !keys.trim().is_empty() => Ok(KeySource::Inline(Secret::new(keys))),
        _ => Err(VaultError::NoKeys),
    }
}
