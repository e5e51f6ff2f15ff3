//! Rows of `flows`: pending consent flows, bound to one browser by the hash of
//! its browser secret; the transactions of their steps (identity, approve,
//! deny), and the connections a flow holds until it is approved.

use sqlx::any::AnyRow;

use super::connections::{self, COLUMNS as CONNECTION_COLUMNS, ConnectionRow};
use super::{Store, StoreError, get_i64, get_opt_i64, get_opt_str, get_str};

/// A flow row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowRow {
    pub id: String,
    pub browser_secret_hash: String,
    pub client_id: String,
    pub redirect_uri: String,
    /// Whether the authorization request carried `redirect_uri` (else the
    /// client's only registered one was taken); the code inherits it.
    pub redirect_uri_sent: bool,
    pub code_challenge: String,
    /// Space-separated granted scopes.
    pub scope: String,
    pub resource: String,
    /// `None` when the client sent no state.
    pub state: Option<String>,
    pub identity_id: Option<String>,
    /// A one-time message for the services page.
    pub notice: Option<String>,
    pub created_at: i64,
    pub expires_at: i64,
    pub consumed_at: Option<i64>,
    /// `approved` or `denied` once consumed.
    pub outcome: Option<String>,
}

const COLUMNS: &str = "id, browser_secret_hash, client_id, redirect_uri, redirect_uri_sent, code_challenge, scope, resource, state, \
                       identity_id, notice, created_at, expires_at, consumed_at, outcome";

impl Store {
    /// Inserts a new flow.
    pub async fn insert_flow(&self, flow: &FlowRow) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO flows (id, browser_secret_hash, client_id, redirect_uri, code_challenge, scope, resource, state,
                 identity_id, notice, created_at, expires_at, consumed_at, outcome, redirect_uri_sent)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
        )
        .bind(&flow.id)
        .bind(&flow.browser_secret_hash)
        .bind(&flow.client_id)
        .bind(&flow.redirect_uri)
        .bind(&flow.code_challenge)
        .bind(&flow.scope)
        .bind(&flow.resource)
        .bind(&flow.state)
        .bind(&flow.identity_id)
        .bind(&flow.notice)
        .bind(flow.created_at)
        .bind(flow.expires_at)
        .bind(flow.consumed_at)
        .bind(&flow.outcome)
        .bind(i64::from(flow.redirect_uri_sent))
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// One flow by id.
    pub async fn get_flow(&self, id: &str) -> Result<Option<FlowRow>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM flows WHERE id = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(self.pool())
            .await?;
        row.as_ref().map(from_row).transpose()
    }
}

/// A connection re-sealed for its new owner (the approving identity).
#[derive(Debug, Clone)]
pub struct ResealedConnection {
    pub access_ct: Vec<u8>,
    pub refresh_ct: Option<Vec<u8>>,
    pub key_id: String,
}

/// The authorization code minted by an approval (only its hash).
#[derive(Debug, Clone)]
pub struct NewAuthCode<'a> {
    pub code_hash: &'a str,
    pub client_id: &'a str,
    pub identity_id: &'a str,
    pub redirect_uri: &'a str,
    pub redirect_uri_sent: bool,
    pub code_challenge: &'a str,
    pub scope: &'a str,
    pub resource: &'a str,
    pub expires_at: i64,
}

/// Result of [`Store::approve_flow`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Approval {
    /// Consumed; the services whose connections moved to the identity.
    Approved { moved_services: Vec<String> },
    /// The flow was consumed, expired or given another identity meanwhile.
    NotOpen,
}

impl Store {
    /// Sets the flow's identity, discarding the connections made in the flow so
    /// far and the previous identity when it was an anonymous one made for this
    /// flow. Returns false when the flow is no longer open.
    pub async fn set_flow_identity(
        &self,
        flow_id: &str,
        identity_id: &str,
        previous_anonymous: Option<&str>,
        now: i64,
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool().begin().await?;
        let updated = sqlx::query("UPDATE flows SET identity_id = $2 WHERE id = $1 AND consumed_at IS NULL AND expires_at > $3")
            .bind(flow_id)
            .bind(identity_id)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        if updated.rows_affected() != 1 {
            tx.rollback().await?;
            return Ok(false);
        }
        sqlx::query("DELETE FROM connections WHERE flow_id = $1 AND identity_id IS NULL")
            .bind(flow_id)
            .execute(&mut *tx)
            .await?;
        if let Some(previous) = previous_anonymous.filter(|p| *p != identity_id) {
            sqlx::query(
                "DELETE FROM identities WHERE id = $1 AND kind = 'anonymous'
                     AND NOT EXISTS (SELECT 1 FROM grants WHERE grants.identity_id = identities.id)",
            )
            .bind(previous)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    /// Clears the flow's one-time notice.
    pub async fn clear_flow_notice(&self, flow_id: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE flows SET notice = NULL WHERE id = $1")
            .bind(flow_id)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// The connections a flow's pages show: the identity's and the flow's own
    /// (not yet approved), oldest first.
    pub async fn list_flow_connections(
        &self,
        identity_id: Option<&str>,
        flow_id: &str,
    ) -> Result<Vec<ConnectionRow>, StoreError> {
        let sql = format!(
            "SELECT {CONNECTION_COLUMNS} FROM connections
             WHERE (identity_id IS NOT NULL AND identity_id = $1) OR (identity_id IS NULL AND flow_id = $2)
             ORDER BY created_at, id"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(identity_id.unwrap_or(""))
            .bind(flow_id)
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(connections::from_row).collect()
    }

    /// Approves a flow in one transaction: consumes it (only if still open, not
    /// expired and still for `identity_id`), records the client as approved by
    /// the identity, moves the flow's connections to the identity (replacing the
    /// identity's older connection to the same service; `reseal` re-binds each
    /// ciphertext to its new owner) and stores the code's hash. Nothing is kept
    /// when any step fails.
    pub async fn approve_flow<E, F>(&self, flow_id: &str, code: &NewAuthCode<'_>, now: i64, mut reseal: F) -> Result<Approval, E>
    where
        E: From<StoreError>,
        F: FnMut(&ConnectionRow) -> Result<ResealedConnection, E>,
    {
        let mut tx = self.pool().begin().await.map_err(StoreError::from)?;
        // Invariant: this compare-and-swap is what makes a flow single-use; a
        // concurrent approve or deny finds consumed_at set and changes nothing.
        let consumed = sqlx::query(
            "UPDATE flows SET consumed_at = $2, outcome = 'approved'
             WHERE id = $1 AND consumed_at IS NULL AND expires_at > $2 AND identity_id = $3",
        )
        .bind(flow_id)
        .bind(now)
        .bind(code.identity_id)
        .execute(&mut *tx)
        .await
        .map_err(StoreError::from)?;
        if consumed.rows_affected() != 1 {
            tx.rollback().await.map_err(StoreError::from)?;
            return Ok(Approval::NotOpen);
        }
        sqlx::query(
            "INSERT INTO approved_clients (identity_id, client_id, approved_at) VALUES ($1, $2, $3)
             ON CONFLICT (identity_id, client_id) DO UPDATE SET approved_at = excluded.approved_at",
        )
        .bind(code.identity_id)
        .bind(code.client_id)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(StoreError::from)?;

        let sql = format!("SELECT {CONNECTION_COLUMNS} FROM connections WHERE flow_id = $1 AND identity_id IS NULL ORDER BY id");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(flow_id)
            .fetch_all(&mut *tx)
            .await
            .map_err(StoreError::from)?;
        let mut moved_services = Vec::with_capacity(rows.len());
        for row in &rows {
            let connection = connections::from_row(row)?;
            let resealed = reseal(&connection)?;
            sqlx::query("DELETE FROM connections WHERE identity_id = $1 AND service = $2")
                .bind(code.identity_id)
                .bind(&connection.service)
                .execute(&mut *tx)
                .await
                .map_err(StoreError::from)?;
            let updated = sqlx::query(
                "UPDATE connections SET identity_id = $2, flow_id = NULL, access_ct = $3, refresh_ct = $4, key_id = $5,
                     version = version + 1, updated_at = $6
                 WHERE id = $1 AND version = $7 AND identity_id IS NULL",
            )
            .bind(&connection.id)
            .bind(code.identity_id)
            .bind(resealed.access_ct)
            .bind(resealed.refresh_ct)
            .bind(resealed.key_id)
            .bind(now)
            .bind(connection.version)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::from)?;
            if updated.rows_affected() != 1 {
                return Err(StoreError::Corrupt(format!(
                    "connection {} changed while flow {flow_id} was approved; approve again",
                    connection.id
                ))
                .into());
            }
            moved_services.push(connection.service);
        }

        sqlx::query(
            "INSERT INTO auth_codes (code_hash, client_id, identity_id, redirect_uri, code_challenge, scope, resource,
                 grant_id, created_at, expires_at, consumed_at, redirect_uri_sent)
             VALUES ($1, $2, $3, $4, $5, $6, $7, NULL, $8, $9, NULL, $10)",
        )
        .bind(code.code_hash)
        .bind(code.client_id)
        .bind(code.identity_id)
        .bind(code.redirect_uri)
        .bind(code.code_challenge)
        .bind(code.scope)
        .bind(code.resource)
        .bind(now)
        .bind(code.expires_at)
        .bind(i64::from(code.redirect_uri_sent))
        .execute(&mut *tx)
        .await
        .map_err(StoreError::from)?;
        tx.commit().await.map_err(StoreError::from)?;
        Ok(Approval::Approved { moved_services })
    }

    /// Consumes a flow as denied and discards its connections. Returns false
    /// when it was no longer open.
    pub async fn deny_flow(&self, flow_id: &str, now: i64) -> Result<bool, StoreError> {
        let mut tx = self.pool().begin().await?;
        let consumed = sqlx::query(
            "UPDATE flows SET consumed_at = $2, outcome = 'denied' WHERE id = $1 AND consumed_at IS NULL AND expires_at > $2",
        )
        .bind(flow_id)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        if consumed.rows_affected() != 1 {
            tx.rollback().await?;
            return Ok(false);
        }
        sqlx::query("DELETE FROM connections WHERE flow_id = $1 AND identity_id IS NULL")
            .bind(flow_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Deletes flows past their expiry with the connections they still hold,
    /// and upstream attempts past theirs. Returns (flows, upstream attempts).
    pub async fn delete_expired_flows(&self, now: i64) -> Result<(u64, u64), StoreError> {
        let mut tx = self.pool().begin().await?;
        sqlx::query(
            "DELETE FROM connections WHERE identity_id IS NULL
                 AND flow_id IN (SELECT id FROM flows WHERE expires_at < $1)",
        )
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let flows = sqlx::query("DELETE FROM flows WHERE expires_at < $1")
            .bind(now)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        let attempts = sqlx::query("DELETE FROM upstream_attempts WHERE expires_at < $1")
            .bind(now)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok((flows, attempts))
    }
}

pub(crate) fn from_row(row: &AnyRow) -> Result<FlowRow, StoreError> {
    Ok(FlowRow {
        id: get_str(row, "id")?,
        browser_secret_hash: get_str(row, "browser_secret_hash")?,
        client_id: get_str(row, "client_id")?,
        redirect_uri: get_str(row, "redirect_uri")?,
        redirect_uri_sent: get_i64(row, "redirect_uri_sent")? != 0,
        code_challenge: get_str(row, "code_challenge")?,
        scope: get_str(row, "scope")?,
        resource: get_str(row, "resource")?,
        state: get_opt_str(row, "state")?,
        identity_id: get_opt_str(row, "identity_id")?,
        notice: get_opt_str(row, "notice")?,
        created_at: get_i64(row, "created_at")?,
        expires_at: get_i64(row, "expires_at")?,
        consumed_at: get_opt_i64(row, "consumed_at")?,
        outcome: get_opt_str(row, "outcome")?,
    })
}
