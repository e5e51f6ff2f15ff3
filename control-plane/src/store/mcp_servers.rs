//! Rows of `mcp_servers`. The entry itself is the `settings` JSON; name, URL and
//! auth mode are columns too, for listing and operators reading the database.

use sqlx::any::AnyRow;

use super::{Store, StoreError, get_i64, get_str, is_unique_violation};
use crate::mcp_servers::McpServer;

const COLUMNS: &str = "name, settings, source, created_at, updated_at";

impl Store {
    /// Inserts a new entry; `Ok(false)` when the name is taken.
    pub async fn insert_mcp_server(&self, server: &McpServer, source: &str, now: i64) -> Result<bool, StoreError> {
        let result = sqlx::query(
            "INSERT INTO mcp_servers (name, display_name, url, auth_mode, settings, source, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $7)",
        )
        .bind(&server.name)
        .bind(&server.display_name)
        .bind(&server.url)
        .bind(server.auth_mode.as_str())
        .bind(settings_json(server)?)
        .bind(source)
        .bind(now)
        .execute(self.pool())
        .await;
        match result {
            Ok(_) => Ok(true),
            Err(err) if is_unique_violation(&err) => Ok(false),
            Err(err) => Err(err.into()),
        }
    }

    /// Inserts or replaces an entry seeded from the config file.
    pub async fn upsert_mcp_server(&self, server: &McpServer, source: &str, now: i64) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO mcp_servers (name, display_name, url, auth_mode, settings, source, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $7)
             ON CONFLICT (name) DO UPDATE SET display_name = $2, url = $3, auth_mode = $4, settings = $5,
                 source = $6, updated_at = $7",
        )
        .bind(&server.name)
        .bind(&server.display_name)
        .bind(&server.url)
        .bind(server.auth_mode.as_str())
        .bind(settings_json(server)?)
        .bind(source)
        .bind(now)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Replaces an existing entry's settings; `Ok(false)` when it does not exist.
    pub async fn update_mcp_server(&self, server: &McpServer, now: i64) -> Result<bool, StoreError> {
        let result = sqlx::query(
            "UPDATE mcp_servers SET display_name = $2, url = $3, auth_mode = $4, settings = $5, source = 'admin', updated_at = $6
             WHERE name = $1",
        )
        .bind(&server.name)
        .bind(&server.display_name)
        .bind(&server.url)
        .bind(server.auth_mode.as_str())
        .bind(settings_json(server)?)
        .bind(now)
        .execute(self.pool())
        .await?;
        Ok(result.rows_affected() > 0)
    }

    /// One entry by name.
    pub async fn get_mcp_server(&self, name: &str) -> Result<Option<McpServer>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM mcp_servers WHERE name = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(name)
            .fetch_optional(self.pool())
            .await?;
        row.as_ref().map(from_row).transpose()
    }

    /// Every entry, by name.
    pub async fn list_mcp_servers(&self) -> Result<Vec<McpServer>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM mcp_servers ORDER BY name");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).fetch_all(self.pool()).await?;
        rows.iter().map(from_row).collect()
    }

    /// Deletes an entry and every connection to it, in one transaction.
    /// Returns `None` when it did not exist, else the number of connections removed.
    pub async fn delete_mcp_server(&self, name: &str) -> Result<Option<u64>, StoreError> {
        let mut tx = self.pool().begin().await?;
        let deleted = sqlx::query("DELETE FROM mcp_servers WHERE name = $1")
            .bind(name)
            .execute(&mut *tx)
            .await?;
        if deleted.rows_affected() == 0 {
            return Ok(None);
        }
        let connections = sqlx::query("DELETE FROM connections WHERE service = $1")
            .bind(name)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM upstream_clients WHERE service = $1")
            .bind(name)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Some(connections.rows_affected()))
    }
}

fn settings_json(server: &McpServer) -> Result<String, StoreError> {
    serde_json::to_string(server).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn from_row(row: &AnyRow) -> Result<McpServer, StoreError> {
    let name = get_str(row, "name")?;
    let mut server: McpServer = serde_json::from_str(&get_str(row, "settings")?)
        .map_err(|e| StoreError::Corrupt(format!("mcp_servers.settings of {name:?}: {e}")))?;
    server.source = get_str(row, "source")?;
    server.created_at = get_i64(row, "created_at")?;
    server.updated_at = get_i64(row, "updated_at")?;
    Ok(server)
}
