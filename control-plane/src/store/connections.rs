//! Rows of `connections`: an identity's (or a pending flow's) sealed upstream
//! tokens for one service.
//!
//! Invariant: `access_ct` and `refresh_ct` are vault ciphertexts bound to
//! (`connections`, column, id, owner, service), where the owner is the identity,
//! or `flow:<id>` while the connection still belongs to a pending flow.

use sqlx::any::AnyRow;

use super::{Store, StoreError, get_i64, get_opt_bytes, get_opt_i64, get_opt_str, get_str};
use crate::vault::{Aad, Sealed};

/// The owner part of a connection's associated data.
pub fn owner(identity_id: Option<&str>, flow_id: Option<&str>) -> String {
    match (identity_id, flow_id) {
        (Some(identity), _) => identity.to_string(),
        (None, Some(flow)) => format!("flow:{flow}"),
        (None, None) => String::new(),
    }
}

/// The associated data of a connection's sealed column.
pub fn aad<'a>(field: &'static str, id: &'a str, owner: &'a str, service: &'a str) -> Aad<'a> {
    super::reseal::aad("connections", field, id, owner, service)
}

/// A connection row, tokens still sealed.
#[derive(Debug, Clone)]
pub struct ConnectionRow {
    pub id: String,
    pub identity_id: Option<String>,
    pub flow_id: Option<String>,
    pub service: String,
    pub status: String,
    pub account: String,
    pub scopes: String,
    pub access_ct: Vec<u8>,
    pub refresh_ct: Option<Vec<u8>>,
    pub key_id: String,
    pub expires_at: Option<i64>,
    pub last_refresh_at: Option<i64>,
    pub version: i64,
    pub created_at: i64,
    pub updated_at: i64,
}

impl ConnectionRow {
    /// The owner part of this row's associated data.
    pub fn owner(&self) -> String {
        owner(self.identity_id.as_deref(), self.flow_id.as_deref())
    }
}

/// A connection to store. `access` and `refresh` must be sealed with `aad`
/// for this id, owner and service, under one key.
#[derive(Debug, Clone)]
pub struct NewConnection<'a> {
    pub id: &'a str,
    pub identity_id: Option<&'a str>,
    pub flow_id: Option<&'a str>,
    pub service: &'a str,
    pub account: &'a str,
    pub scopes: &'a str,
    pub access: Sealed,
    pub refresh: Option<Sealed>,
    pub expires_at: Option<i64>,
}

/// Every column of `connections`, for `from_row`.
pub(crate) const COLUMNS: &str = "id, identity_id, flow_id, service, status, account, scopes, access_ct, refresh_ct, key_id, \
                       expires_at, last_refresh_at, version, created_at, updated_at";

impl Store {
    /// Stores a new connection, replacing the owner's previous one for the same service.
    pub async fn put_connection(&self, c: &NewConnection<'_>, now: i64) -> Result<(), StoreError> {
        let mut tx = self.pool().begin().await?;
        sqlx::query(
            "DELETE FROM connections WHERE service = $1 AND ((identity_id IS NOT NULL AND identity_id = $2) OR (flow_id IS NOT NULL AND flow_id = $3 AND identity_id IS NULL))",
        )
        .bind(c.service)
        .bind(c.identity_id)
        .bind(c.flow_id)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO connections (id, identity_id, flow_id, service, status, account, scopes, access_ct, refresh_ct, key_id,
                 expires_at, created_at, updated_at)
             VALUES ($1, $2, $3, $4, 'connected', $5, $6, $7, $8, $9, $10, $11, $11)",
        )
        .bind(c.id)
        .bind(c.identity_id)
        .bind(c.flow_id)
        .bind(c.service)
        .bind(c.account)
        .bind(c.scopes)
        .bind(&c.access.blob)
        .bind(c.refresh.as_ref().map(|r| r.blob.clone()))
        .bind(&c.access.key_id)
        .bind(c.expires_at)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Deletes one connection; whether it existed.
    pub async fn delete_connection(&self, id: &str) -> Result<bool, StoreError> {
        let result = sqlx::query("DELETE FROM connections WHERE id = $1")
            .bind(id)
            .execute(self.pool())
            .await?;
        Ok(result.rows_affected() > 0)
    }

    /// One connection by id.
    pub async fn get_connection(&self, id: &str) -> Result<Option<ConnectionRow>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM connections WHERE id = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(self.pool())
            .await?;
        row.as_ref().map(from_row).transpose()
    }

    /// Connections, optionally of one identity and/or service, newest first.
    pub async fn list_connections(
        &self,
        identity_id: Option<&str>,
        service: Option<&str>,
    ) -> Result<Vec<ConnectionRow>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM connections WHERE ($1 = '' OR identity_id = $1) AND ($2 = '' OR service = $2)
             ORDER BY created_at DESC, id DESC"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(identity_id.unwrap_or(""))
            .bind(service.unwrap_or(""))
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(from_row).collect()
    }
}

/// A `connections` row selected with `COLUMNS`.
pub(crate) fn from_row(row: &AnyRow) -> Result<ConnectionRow, StoreError> {
    Ok(ConnectionRow {
        id: get_str(row, "id")?,
        identity_id: get_opt_str(row, "identity_id")?,
        flow_id: get_opt_str(row, "flow_id")?,
        service: get_str(row, "service")?,
        status: get_str(row, "status")?,
        account: get_str(row, "account")?,
        scopes: get_str(row, "scopes")?,
        access_ct: get_opt_bytes(row, "access_ct")?.unwrap_or_default(),
        refresh_ct: get_opt_bytes(row, "refresh_ct")?,
        key_id: get_str(row, "key_id")?,
        expires_at: get_opt_i64(row, "expires_at")?,
        last_refresh_at: get_opt_i64(row, "last_refresh_at")?,
        version: get_i64(row, "version")?,
        created_at: get_i64(row, "created_at")?,
        updated_at: get_i64(row, "updated_at")?,
    })
}
