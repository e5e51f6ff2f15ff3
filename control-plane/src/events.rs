//! Invalidation events: what data planes must drop from their caches the
//! moment it happens (a revoked grant or identity, a changed connection or
//! service catalogue). `TokenService.WatchEvents` streams them.
//!
//! Events live in this process only: a data plane subscribed to another
//! replica learns of them when its caches expire (the fleet issue relays them
//! between replicas). A subscriber that falls behind loses its stream and
//! reconnects, and data planes then drop every per-grant entry.

use tokio::sync::broadcast;

/// What changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invalidation {
    /// A grant and every access token of it stopped working.
    GrantRevoked(String),
    /// An identity (and so every grant of it) stopped working.
    IdentityRevoked(String),
    /// An identity's connection to a service changed (new, refreshed, needs re-auth, gone).
    ConnectionChanged { identity_id: String, service: String },
    /// The MCP server registry changed.
    ServicesChanged,
}

/// The publisher every domain module uses through `Core::events`.
#[derive(Debug)]
pub struct Events {
    sender: broadcast::Sender<Invalidation>,
    /// Set when the control plane stops: every stream ends, so the graceful
    /// shutdown of the gRPC server is not held open by its subscribers.
    closed: tokio::sync::watch::Sender<bool>,
}

/// Events a slow subscriber may fall behind by before it loses its stream.
const BACKLOG: usize = 4096;

impl Default for Events {
    fn default() -> Self {
        Self {
            sender: broadcast::channel(BACKLOG).0,
            closed: tokio::sync::watch::channel(false).0,
        }
    }
}

impl Events {
    /// Publishes an event; nobody listening is fine.
    pub fn publish(&self, event: Invalidation) {
        let _ = self.sender.send(event);
    }

    /// A new subscription, from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Invalidation> {
        self.sender.subscribe()
    }

    /// Ends every stream (the control plane is stopping).
    pub fn close(&self) {
        self.closed.send_replace(true);
    }

    /// Resolves once `close` was called.
    pub fn closed(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut closed = self.closed.subscribe();
        async move {
            let _ = closed.wait_for(|closed| *closed).await;
        }
    }
}
