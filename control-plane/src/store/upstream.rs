//! Rows of `upstream_attempts` (a pending upstream authorization: connect or
//! sign-in, keyed by the hash of its `state`) and `upstream_clients` (what
//! Gatehouse learned and registered at each service's authorization server),
//! the removal of connections on disconnect, and the notice a failed upstream
//! step leaves on its flow.
//!
//! Invariant: `verifier_ct` and `secret_ct` are vault ciphertexts bound with
//! `reseal::aad` to (table, column, primary key, "", service); the state and the
//! nonce exist here only as SHA-256 hashes.

use sqlx::any::AnyRow;

use super::connections::{self, COLUMNS as CONNECTION_COLUMNS, ConnectionRow};
use super::{Store, StoreError, get_i64, get_opt_bytes, get_opt_i64, get_opt_str, get_str};
use crate::vault::Sealed;

/// A pending upstream authorization.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptRow {
    pub state_hash: String,
    /// `connect` or `sign_in`.
    pub kind: String,
    pub flow_id: Option<String>,
    pub identity_id: Option<String>,
    pub link_id: Option<String>,
    pub service: String,
    pub verifier_ct: Vec<u8>,
    pub key_id: String,
    pub nonce_hash: Option<String>,
    /// For connect-link attempts: the hash of the browser secret the callback must present.
    pub browser_secret_hash: Option<String>,
    pub redirect_uri: String,
    pub created_at: i64,
    pub expires_at: i64,
    pub consumed_at: Option<i64>,
}

/// A new attempt; `verifier` sealed with `reseal::aad("upstream_attempts", "verifier_ct", state_hash, "", service)`.
#[derive(Debug, Clone)]
pub struct NewAttempt<'a> {
    pub state_hash: &'a str,
    pub kind: &'a str,
    pub flow_id: Option<&'a str>,
    pub identity_id: Option<&'a str>,
    pub link_id: Option<&'a str>,
    pub service: &'a str,
    pub verifier: Sealed,
    pub nonce_hash: Option<&'a str>,
    pub browser_secret_hash: Option<&'a str>,
    pub redirect_uri: &'a str,
    pub expires_at: i64,
}

/// What Gatehouse knows about its own client at a service's authorization server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamClientRow {
    pub service: String,
    pub issuer: String,
    pub client_id: String,
    pub secret_ct: Option<Vec<u8>>,
    pub key_id: Option<String>,
    /// JSON document: discovered endpoints and the registered auth method.
    pub endpoints: String,
    /// Registered by Gatehouse (RFC 7591) rather than configured.
    pub dynamic: bool,
    pub created_at: i64,
    pub updated_at: i64,
}

/// A client to remember; `secret` sealed with `reseal::aad("upstream_clients", "secret_ct", service, "", service)`.
#[derive(Debug, Clone)]
pub struct NewUpstreamClient<'a> {
    pub service: &'a str,
    pub issuer: &'a str,
    pub client_id: &'a str,
    pub secret: Option<Sealed>,
    pub endpoints: &'a str,
    pub dynamic: bool,
}

const ATTEMPT_COLUMNS: &str = "state_hash, kind, flow_id, identity_id, link_id, service, verifier_ct, key_id, nonce_hash, \
                               browser_secret_hash, redirect_uri, created_at, expires_at, consumed_at";
const CLIENT_COLUMNS: &str = "service, issuer, client_id, secret_ct, key_id, endpoints, dynamic, created_at, updated_at";

impl Store {
    /// Stores a new attempt.
    pub async fn insert_upstream_attempt(&self, a: &NewAttempt<'_>, now: i64) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO upstream_attempts (state_hash, kind, flow_id, identity_id, link_id, service, verifier_ct, key_id,
                 nonce_hash, redirect_uri, created_at, expires_at, browser_secret_hash)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
        )
        .bind(a.state_hash)
        .bind(a.kind)
        .bind(a.flow_id)
        .bind(a.identity_id)
        .bind(a.link_id)
        .bind(a.service)
        .bind(&a.verifier.blob)
        .bind(&a.verifier.key_id)
        .bind(a.nonce_hash)
        .bind(a.redirect_uri)
        .bind(now)
        .bind(a.expires_at)
        .bind(a.browser_secret_hash)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// One attempt by the hash of its state.
    pub async fn get_upstream_attempt(&self, state_hash: &str) -> Result<Option<AttemptRow>, StoreError> {
        let sql = format!("SELECT {ATTEMPT_COLUMNS} FROM upstream_attempts WHERE state_hash = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(state_hash)
            .fetch_optional(self.pool())
            .await?;
        row.as_ref().map(attempt_from_row).transpose()
    }

    /// Marks an attempt used. True only for the one caller that consumed it
    /// (a single conditional UPDATE, so two concurrent callbacks cannot both win).
    pub async fn consume_upstream_attempt(&self, state_hash: &str, now: i64) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE upstream_attempts SET consumed_at = $2 WHERE state_hash = $1 AND consumed_at IS NULL AND expires_at > $2",
        )
        .bind(state_hash)
        .bind(now)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// The remembered client of a service.
    pub async fn get_upstream_client(&self, service: &str) -> Result<Option<UpstreamClientRow>, StoreError> {
        let sql = format!("SELECT {CLIENT_COLUMNS} FROM upstream_clients WHERE service = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(service)
            .fetch_optional(self.pool())
            .await?;
        row.as_ref().map(client_from_row).transpose()
    }

    /// Remembers a service's client unless one is already remembered (another
    /// replica or call registered first); returns the row that is now stored.
    pub async fn insert_upstream_client_if_absent(
        &self,
        c: &NewUpstreamClient<'_>,
        now: i64,
    ) -> Result<UpstreamClientRow, StoreError> {
        sqlx::query(
            "INSERT INTO upstream_clients (service, issuer, client_id, secret_ct, key_id, endpoints, dynamic, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8)
             ON CONFLICT (service) DO NOTHING",
        )
        .bind(c.service)
        .bind(c.issuer)
        .bind(c.client_id)
        .bind(c.secret.as_ref().map(|s| s.blob.clone()))
        .bind(c.secret.as_ref().map(|s| s.key_id.clone()))
        .bind(c.endpoints)
        .bind(i64::from(c.dynamic))
        .bind(now)
        .execute(self.pool())
        .await?;
        self.get_upstream_client(c.service)
            .await?
            .ok_or_else(|| StoreError::Corrupt(format!("upstream client of {:?} vanished after insert", c.service)))
    }

    /// Forgets a service's client, but only if it is still `client_id` (so a
    /// replacement another caller stored meanwhile survives). True if removed.
    pub async fn forget_upstream_client(&self, service: &str, client_id: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM upstream_clients WHERE service = $1 AND client_id = $2")
            .bind(service)
            .bind(client_id)
            .execute(self.pool())
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Leaves a one-time notice on a pending flow (shown by the next page that
    /// reads the flow), for example why an upstream connection failed.
    pub async fn set_flow_notice(&self, flow_id: &str, notice: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE flows SET notice = $2 WHERE id = $1 AND consumed_at IS NULL")
            .bind(flow_id)
            .bind(notice)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Removes, in one transaction, the connection to `service` held by the
    /// pending flow and the one held by the identity; returns what was removed
    /// (tokens still sealed) so the caller can revoke them upstream.
    pub async fn delete_flow_and_identity_connections(
        &self,
        flow_id: &str,
        identity_id: Option<&str>,
        service: &str,
    ) -> Result<Vec<ConnectionRow>, StoreError> {
        let mut tx = self.pool().begin().await?;
        let sql = format!(
            "SELECT {CONNECTION_COLUMNS} FROM connections
             WHERE service = $1 AND ((flow_id = $2 AND identity_id IS NULL) OR (identity_id IS NOT NULL AND identity_id = $3))"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(service)
            .bind(flow_id)
            .bind(identity_id.unwrap_or(""))
            .fetch_all(&mut *tx)
            .await?;
        let removed = rows.iter().map(connections::from_row).collect::<Result<Vec<_>, _>>()?;
        for row in &removed {
            sqlx::query("DELETE FROM connections WHERE id = $1")
                .bind(&row.id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(removed)
    }
}

fn attempt_from_row(row: &AnyRow) -> Result<AttemptRow, StoreError> {
    Ok(AttemptRow {
        state_hash: get_str(row, "state_hash")?,
        kind: get_str(row, "kind")?,
        flow_id: get_opt_str(row, "flow_id")?,
        identity_id: get_opt_str(row, "identity_id")?,
        link_id: get_opt_str(row, "link_id")?,
        service: get_str(row, "service")?,
        verifier_ct: get_opt_bytes(row, "verifier_ct")?.unwrap_or_default(),
        key_id: get_str(row, "key_id")?,
        nonce_hash: get_opt_str(row, "nonce_hash")?,
        browser_secret_hash: get_opt_str(row, "browser_secret_hash")?,
        redirect_uri: get_str(row, "redirect_uri")?,
        created_at: get_i64(row, "created_at")?,
        expires_at: get_i64(row, "expires_at")?,
        consumed_at: get_opt_i64(row, "consumed_at")?,
    })
}

fn client_from_row(row: &AnyRow) -> Result<UpstreamClientRow, StoreError> {
    Ok(UpstreamClientRow {
        service: get_str(row, "service")?,
        issuer: get_str(row, "issuer")?,
        client_id: get_str(row, "client_id")?,
        secret_ct: get_opt_bytes(row, "secret_ct")?,
        key_id: get_opt_str(row, "key_id")?,
        endpoints: get_str(row, "endpoints")?,
        dynamic: get_i64(row, "dynamic")? != 0,
        created_at: get_i64(row, "created_at")?,
        updated_at: get_i64(row, "updated_at")?,
    })
}
