//! Rows of `clients`: MCP clients registered dynamically (RFC 7591) and cached
//! Client ID Metadata Documents. Pre-registered clients live in the config, not here.
//!
//! A client secret arrives here only as its SHA-256. List columns
//! (`redirect_uris`, `grant_types`, `response_types`) hold JSON arrays.

use sqlx::any::AnyRow;

use super::{Store, StoreError, get_opt_i64, get_opt_str, get_str};

/// A stored client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientRow {
    pub client_id: String,
    /// `dynamic` or `metadata_document`.
    pub kind: String,
    pub client_name: String,
    pub redirect_uris: Vec<String>,
    /// `none`, `client_secret_post` or `client_secret_basic`.
    pub auth_method: String,
    /// SHA-256 hex of the client secret (confidential clients only).
    pub secret_hash: Option<String>,
    pub grant_types: Vec<String>,
    pub response_types: Vec<String>,
    pub scope: String,
    pub client_uri: String,
    pub logo_uri: String,
    pub application_type: String,
    /// JSON object with the informational metadata (contacts, software id and version).
    pub metadata: String,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
    /// Dynamic clients: when an unused registration lapses (refreshed at use).
    /// Metadata documents: when the cached copy must be fetched again.
    pub expires_at: Option<i64>,
}

const COLUMNS: &str = "client_id, kind, client_name, redirect_uris, auth_method, secret_hash, grant_types, response_types, \
                       scope, client_uri, logo_uri, application_type, metadata, created_at, last_used_at, expires_at";

impl Store {
    /// Inserts a dynamically registered client.
    pub async fn insert_client(&self, client: &ClientRow) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO clients (client_id, kind, client_name, redirect_uris, auth_method, secret_hash, grant_types,
                 response_types, scope, client_uri, logo_uri, application_type, metadata, created_at, last_used_at, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)",
        )
        .bind(&client.client_id)
        .bind(&client.kind)
        .bind(&client.client_name)
        .bind(to_json(&client.redirect_uris))
        .bind(&client.auth_method)
        .bind(&client.secret_hash)
        .bind(to_json(&client.grant_types))
        .bind(to_json(&client.response_types))
        .bind(&client.scope)
        .bind(&client.client_uri)
        .bind(&client.logo_uri)
        .bind(&client.application_type)
        .bind(&client.metadata)
        .bind(client.created_at)
        .bind(client.last_used_at)
        .bind(client.expires_at)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Stores (or replaces) the cached copy of a metadata document. A row of
    /// another kind with the same id is never overwritten.
    pub async fn put_metadata_document(&self, client: &ClientRow) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO clients (client_id, kind, client_name, redirect_uris, auth_method, secret_hash, grant_types,
                 response_types, scope, client_uri, logo_uri, application_type, metadata, created_at, last_used_at, expires_at)
             VALUES ($1, 'metadata_document', $2, $3, $4, NULL, $5, $6, $7, $8, $9, $10, $11, $12, NULL, $13)
             ON CONFLICT (client_id) DO UPDATE SET
                 client_name = excluded.client_name, redirect_uris = excluded.redirect_uris,
                 auth_method = excluded.auth_method, grant_types = excluded.grant_types,
                 response_types = excluded.response_types, scope = excluded.scope, client_uri = excluded.client_uri,
                 logo_uri = excluded.logo_uri, application_type = excluded.application_type,
                 metadata = excluded.metadata, created_at = excluded.created_at, expires_at = excluded.expires_at
             WHERE clients.kind = 'metadata_document'",
        )
        .bind(&client.client_id)
        .bind(&client.client_name)
        .bind(to_json(&client.redirect_uris))
        .bind(&client.auth_method)
        .bind(to_json(&client.grant_types))
        .bind(to_json(&client.response_types))
        .bind(&client.scope)
        .bind(&client.client_uri)
        .bind(&client.logo_uri)
        .bind(&client.application_type)
        .bind(&client.metadata)
        .bind(client.created_at)
        .bind(client.expires_at)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// One client by id.
    /// Every stored client (dynamic registrations and cached metadata documents), newest first.
    pub async fn list_clients(&self) -> Result<Vec<ClientRow>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM clients ORDER BY created_at DESC, client_id");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).fetch_all(self.pool()).await?;
        rows.iter().map(from_row).collect()
    }

    pub async fn get_client(&self, client_id: &str) -> Result<Option<ClientRow>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM clients WHERE client_id = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(client_id)
            .fetch_optional(self.pool())
            .await?;
        row.as_ref().map(from_row).transpose()
    }

    /// Deletes unused dynamic registrations that lapsed and metadata-document
    /// copies past their cache lifetime. Returns how many rows went.
    pub async fn delete_expired_clients(&self, now: i64) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "DELETE FROM clients WHERE expires_at IS NOT NULL AND expires_at < $1
                 AND ((kind = 'dynamic' AND last_used_at IS NULL) OR kind = 'metadata_document')",
        )
        .bind(now)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected())
    }
}

fn to_json(values: &[String]) -> String {
    serde_json::Value::from(values.to_vec()).to_string()
}

fn from_json(row: &AnyRow, column: &str) -> Result<Vec<String>, StoreError> {
    let text = get_str(row, column)?;
    serde_json::from_str(&text).map_err(|e| StoreError::Corrupt(format!("clients.{column}: {e}")))
}

fn from_row(row: &AnyRow) -> Result<ClientRow, StoreError> {
    Ok(ClientRow {
        client_id: get_str(row, "client_id")?,
        kind: get_str(row, "kind")?,
        client_name: get_str(row, "client_name")?,
        redirect_uris: from_json(row, "redirect_uris")?,
        auth_method: get_str(row, "auth_method")?,
        secret_hash: get_opt_str(row, "secret_hash")?,
        grant_types: from_json(row, "grant_types")?,
        response_types: from_json(row, "response_types")?,
        scope: get_str(row, "scope")?,
        client_uri: get_str(row, "client_uri")?,
        logo_uri: get_str(row, "logo_uri")?,
        application_type: get_str(row, "application_type")?,
        metadata: get_str(row, "metadata")?,
        created_at: super::get_i64(row, "created_at")?,
        last_used_at: get_opt_i64(row, "last_used_at")?,
        expires_at: get_opt_i64(row, "expires_at")?,
    })
}
