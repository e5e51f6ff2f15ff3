//! PostgreSQL `LISTEN`/`NOTIFY`: how control-plane replicas tell each other
//! what changed (`events::relay`). SQLite has no such thing; a deployment on
//! SQLite is one control plane.

use sqlx::postgres::PgListener;

use super::{Backend, Store, StoreError};

/// A dedicated connection listening on one channel. Once [`Listener::next`]
/// says the connection was lost, drop it and listen again: notifications sent
/// meanwhile are lost, which the caller must make up for.
pub struct Listener {
    inner: PgListener,
}

/// What [`Listener::next`] got.
#[derive(Debug)]
pub enum Heard {
    Payload(String),
    /// The connection was lost.
    ConnectionLost,
}

impl Store {
    /// The channel name of this deployment: one per database schema, so two
    /// deployments sharing a database never hear each other.
    pub async fn notify_channel(&self) -> Result<Option<String>, StoreError> {
        if self.backend != Backend::Postgres {
            return Ok(None);
        }
        let schema: String = sqlx::query_scalar("SELECT current_schema()::text")
            .fetch_one(&self.pool)
            .await?;
        let suffix: String = schema
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '_'
                }
            })
            .take(40)
            .collect();
        Ok(Some(format!("gatehouse_events_{suffix}")))
    }

    /// Sends `payload` to every listener of `channel` (PostgreSQL only).
    pub async fn notify(&self, channel: &str, payload: &str) -> Result<(), StoreError> {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(channel)
            .bind(payload)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// A dedicated connection listening on `channel` (PostgreSQL only).
    pub async fn listen(&self, channel: &str) -> Result<Listener, StoreError> {
        let mut inner = PgListener::connect(self.url.expose()).await?;
        // Reconnecting is the caller's (it must know when to make up for a gap).
        inner.eager_reconnect(false);
        inner.listen(channel).await?;
        Ok(Listener { inner })
    }
}

impl Listener {
    /// The next notification, or word that the connection was lost.
    pub async fn next(&mut self) -> Result<Heard, StoreError> {
        Ok(match self.inner.try_recv().await? {
            Some(notification) => Heard::Payload(notification.payload().to_owned()),
            None => Heard::ConnectionLost,
        })
    }
}
