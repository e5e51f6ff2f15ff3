//! Invalidation events: what data planes must drop from their caches the
//! moment it happens (a revoked grant or identity, a changed connection or
//! service catalogue). `TokenService.WatchEvents` streams them.
//!
//! On PostgreSQL, replicas relay their events to each other through
//! `LISTEN`/`NOTIFY` ([`relay`]), so a data plane subscribed to any replica
//! hears of every change. When the relay loses its connection it tells its
//! subscribers to start over ([`Invalidation::Resync`]) once it is back, since
//! it may have missed events meanwhile. A subscriber that falls behind loses
//! its stream too; data planes then drop every per-grant entry.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc};

use crate::Core;
use crate::store::notify::Heard;

/// What changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "of", rename_all = "snake_case")]
pub enum Invalidation {
    /// A grant and every access token of it stopped working.
    GrantRevoked(String),
    /// An identity (and so every grant of it) stopped working.
    IdentityRevoked(String),
    /// An identity's connection to a service changed (new, refreshed, needs re-auth, gone).
    ConnectionChanged { identity_id: String, service: String },
    /// The MCP server registry changed.
    ServicesChanged,
    /// Events may have been missed (the relay was cut off): subscribers must
    /// drop everything they cached per grant. Never relayed.
    Resync,
}

/// The publisher every domain module uses through `Core::events`.
#[derive(Debug)]
pub struct Events {
    sender: broadcast::Sender<Invalidation>,
    /// This replica's name in relayed events, so it ignores its own.
    origin: String,
    /// Events for the other replicas, once the relay runs.
    relay: OnceLock<mpsc::Sender<Invalidation>>,
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
            origin: crate::secret::random_id("cp_"),
            relay: OnceLock::new(),
            closed: tokio::sync::watch::channel(false).0,
        }
    }
}

impl Events {
    /// Publishes an event here and to the other replicas; nobody listening is fine.
    pub fn publish(&self, event: Invalidation) {
        if let Some(relay) = self.relay.get()
            && relay.try_send(event.clone()).is_err()
        {
            // The database is far behind or gone; the other replicas' data
            // planes fall back on their cache lifetimes for this one.
            tracing::warn!(target: "gatehouse::events", ?event, "event relay queue full; the other replicas miss an event");
        }
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

// === The relay between replicas ===

/// Relayed events the database may be behind by before new ones are dropped.
const RELAY_BACKLOG: usize = 4096;
/// How long the relay waits before listening again after losing its connection.
const RELAY_RETRY: Duration = Duration::from_secs(1);

#[derive(Serialize, Deserialize)]
struct Relayed {
    origin: String,
    event: Invalidation,
}

/// Starts relaying events between replicas through the database, when it can
/// (PostgreSQL); the task ends when the control plane stops.
pub async fn start_relay(core: &Arc<Core>) -> Result<Option<tokio::task::JoinHandle<()>>, crate::store::StoreError> {
    let Some(channel) = core.store.notify_channel().await? else {
        return Ok(None);
    };
    let (sender, outgoing) = mpsc::channel(RELAY_BACKLOG);
    let _ = core.events.relay.set(sender);
    // Listening starts before this returns: an event published by another
    // replica after this control plane serves is never missed.
    let listener = core.store.listen(&channel).await?;
    tracing::info!(target: "gatehouse::events", channel, "relaying invalidation events between control-plane replicas");
    let core = core.clone();
    Ok(Some(tokio::spawn(async move {
        let closed = core.events.closed();
        tokio::select! {
            _ = closed => {}
            _ = send_loop(&core, &channel, outgoing) => {}
            _ = listen_loop(&core, &channel, listener) => {}
        }
    })))
}

/// Sends this replica's events, in order; an event the database refuses for
/// ten seconds is dropped (the others' caches expire meanwhile).
async fn send_loop(core: &Core, channel: &str, mut outgoing: mpsc::Receiver<Invalidation>) {
    while let Some(event) = outgoing.recv().await {
        if event == Invalidation::Resync {
            continue;
        }
        let payload = match serde_json::to_string(&Relayed {
            origin: core.events.origin.clone(),
            event,
        }) {
            Ok(payload) => payload,
            Err(err) => {
                tracing::error!(target: "gatehouse::events", error = %err, "an event could not be encoded for the relay");
                continue;
            }
        };
        let mut wait = Duration::from_millis(100);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            match core.store.notify(channel, &payload).await {
                Ok(()) => break,
                Err(err) if tokio::time::Instant::now() < deadline => {
                    tracing::debug!(target: "gatehouse::events", error = %err, "relaying an event failed; retrying");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(2));
                }
                Err(err) => {
                    tracing::warn!(target: "gatehouse::events", error = %err, "an event could not be relayed to the other replicas");
                    break;
                }
            }
        }
    }
}

/// Publishes here what the other replicas relayed; after a lost connection,
/// listens again and tells subscribers to start over.
async fn listen_loop(core: &Core, channel: &str, mut listener: crate::store::notify::Listener) {
    loop {
        match listener.next().await {
            Ok(Heard::Payload(payload)) => match serde_json::from_str::<Relayed>(&payload) {
                Ok(relayed) if relayed.origin != core.events.origin => {
                    let _ = core.events.sender.send(relayed.event);
                }
                Ok(_) => {}
                Err(err) => {
                    tracing::warn!(target: "gatehouse::events", error = %err, "ignoring a relayed event this version cannot read")
                }
            },
            Ok(Heard::ConnectionLost) | Err(_) => {
                tracing::warn!(target: "gatehouse::events", "the event relay lost its database connection; reconnecting");
                listener = loop {
                    tokio::time::sleep(RELAY_RETRY).await;
                    match core.store.listen(channel).await {
                        Ok(listener) => break listener,
                        Err(err) => {
                            tracing::debug!(target: "gatehouse::events", error = %err, "the event relay cannot listen yet")
                        }
                    }
                };
                tracing::info!(target: "gatehouse::events", "the event relay listens again; data planes start over");
                let _ = core.events.sender.send(Invalidation::Resync);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_event_survives_the_relay_encoding() {
        for event in [
            Invalidation::GrantRevoked("grt_1".into()),
            Invalidation::IdentityRevoked("idn_1".into()),
            Invalidation::ConnectionChanged {
                identity_id: "idn_1".into(),
                service: "notes".into(),
            },
            Invalidation::ServicesChanged,
        ] {
            let relayed = Relayed {
                origin: "cp_a".into(),
                event: event.clone(),
            };
            let payload = serde_json::to_string(&relayed).unwrap();
            let back: Relayed = serde_json::from_str(&payload).unwrap();
            assert_eq!((back.origin.as_str(), back.event), ("cp_a", event));
        }
    }

    #[tokio::test]
    async fn a_full_relay_queue_drops_the_relayed_copy_but_publishes_here() {
        let events = Events::default();
        let (sender, _receiver) = mpsc::channel(1);
        events.relay.set(sender).unwrap();
        let mut here = events.subscribe();
        events.publish(Invalidation::ServicesChanged);
        events.publish(Invalidation::GrantRevoked("grt_1".into()));
        assert_eq!(here.recv().await.unwrap(), Invalidation::ServicesChanged);
        assert_eq!(here.recv().await.unwrap(), Invalidation::GrantRevoked("grt_1".into()));
    }
}
