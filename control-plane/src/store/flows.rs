//! Rows of `flows`: pending consent flows, bound to one browser by the hash of
//! its browser secret.

use sqlx::any::AnyRow;

use super::{Store, StoreError, get_i64, get_opt_i64, get_opt_str, get_str};

/// A flow row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowRow {
    pub id: String,
    pub browser_secret_hash: String,
    pub client_id: String,
    pub redirect_uri: String,
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

const COLUMNS: &str = "id, browser_secret_hash, client_id, redirect_uri, code_challenge, scope, resource, state, identity_id, \
                       notice, created_at, expires_at, consumed_at, outcome";

impl Store {
    /// Inserts a new flow.
    pub async fn insert_flow(&self, flow: &FlowRow) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO flows (id, browser_secret_hash, client_id, redirect_uri, code_challenge, scope, resource, state,
                 identity_id, notice, created_at, expires_at, consumed_at, outcome)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
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

pub(crate) fn from_row(row: &AnyRow) -> Result<FlowRow, StoreError> {
    Ok(FlowRow {
        id: get_str(row, "id")?,
        browser_secret_hash: get_str(row, "browser_secret_hash")?,
        client_id: get_str(row, "client_id")?,
        redirect_uri: get_str(row, "redirect_uri")?,
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
