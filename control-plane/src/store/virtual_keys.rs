//! Rows of `virtual_keys` and the identities they prove.

use sqlx::any::AnyRow;

use super::{Store, StoreError, get_i64, get_opt_i64, get_str};

/// A virtual key, without its secret (only the hash is stored).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VirtualKeyRow {
    pub id: String,
    pub name: String,
    pub prefix: String,
    pub identity_id: String,
    pub created_at: i64,
    pub revoked_at: Option<i64>,
}

/// What `insert_virtual_key` needs.
#[derive(Debug, Clone)]
pub struct NewVirtualKey<'a> {
    pub id: &'a str,
    pub name: &'a str,
    pub secret_hash: &'a str,
    pub prefix: &'a str,
    pub identity_id: &'a str,
}

const COLUMNS: &str = "id, name, prefix, identity_id, created_at, revoked_at";

impl Store {
    /// Creates the key and its identity in one transaction.
    pub async fn insert_virtual_key(&self, key: &NewVirtualKey<'_>, now: i64) -> Result<VirtualKeyRow, StoreError> {
        let mut tx = self.pool().begin().await?;
        sqlx::query(
            "INSERT INTO identities (id, kind, display_name, subject, created_at) VALUES ($1, 'virtual_key', $2, NULL, $3)",
        )
        .bind(key.identity_id)
        .bind(key.name)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO virtual_keys (id, name, secret_hash, prefix, identity_id, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(key.id)
        .bind(key.name)
        .bind(key.secret_hash)
        .bind(key.prefix)
        .bind(key.identity_id)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(VirtualKeyRow {
            id: key.id.to_string(),
            name: key.name.to_string(),
            prefix: key.prefix.to_string(),
            identity_id: key.identity_id.to_string(),
            created_at: now,
            revoked_at: None,
        })
    }

    /// Keys, newest first.
    pub async fn list_virtual_keys(&self, include_revoked: bool) -> Result<Vec<VirtualKeyRow>, StoreError> {
        let sql =
            format!("SELECT {COLUMNS} FROM virtual_keys WHERE ($1 = 1 OR revoked_at IS NULL) ORDER BY created_at DESC, id DESC");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(i64::from(include_revoked))
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(from_row).collect()
    }

    /// The unrevoked key with this secret hash.
    pub async fn find_virtual_key_by_hash(&self, secret_hash: &str) -> Result<Option<VirtualKeyRow>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM virtual_keys WHERE secret_hash = $1 AND revoked_at IS NULL");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(secret_hash)
            .fetch_optional(self.pool())
            .await?;
        row.as_ref().map(from_row).transpose()
    }

    /// Revokes a key, its identity and every grant of that identity, in one
    /// transaction. Returns the key as it now stands, `None` if unknown.
    pub async fn revoke_virtual_key(&self, id: &str, now: i64) -> Result<Option<VirtualKeyRow>, StoreError> {
        let mut tx = self.pool().begin().await?;
        let sql = format!("SELECT {COLUMNS} FROM virtual_keys WHERE id = $1");
        let Some(row) = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?
        else {
            return Ok(None);
        };
        let mut key = from_row(&row)?;
        if key.revoked_at.is_none() {
            sqlx::query("UPDATE virtual_keys SET revoked_at = $2 WHERE id = $1")
                .bind(id)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            sqlx::query("UPDATE identities SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL")
                .bind(&key.identity_id)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            sqlx::query(
                "UPDATE grants SET revoked_at = $2, revoke_reason = 'virtual_key_revoked' WHERE identity_id = $1 AND revoked_at IS NULL",
            )
            .bind(&key.identity_id)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            key.revoked_at = Some(now);
        }
        tx.commit().await?;
        Ok(Some(key))
    }
}

fn from_row(row: &AnyRow) -> Result<VirtualKeyRow, StoreError> {
    Ok(VirtualKeyRow {
        id: get_str(row, "id")?,
        name: get_str(row, "name")?,
        prefix: get_str(row, "prefix")?,
        identity_id: get_str(row, "identity_id")?,
        created_at: get_i64(row, "created_at")?,
        revoked_at: get_opt_i64(row, "revoked_at")?,
    })
}
