//! Rows of `identities` (whom a grant acts for) and `approved_clients` (which
//! clients each identity approved).

use sqlx::any::AnyRow;

use super::{Store, StoreError, get_i64, get_opt_i64, get_opt_str, get_str};

/// An identity row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityRow {
    pub id: String,
    /// `virtual_key`, `user` or `anonymous`.
    pub kind: String,
    pub display_name: String,
    /// Users only: the verified subject (`<issuer>#<sub>`, or `proxy#<name>`).
    pub subject: Option<String>,
    pub created_at: i64,
    pub revoked_at: Option<i64>,
}

const COLUMNS: &str = "id, kind, display_name, subject, created_at, revoked_at";

impl Store {
    /// Inserts an identity.
    pub async fn insert_identity(&self, identity: &IdentityRow) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO identities (id, kind, display_name, subject, created_at, revoked_at) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&identity.id)
        .bind(&identity.kind)
        .bind(&identity.display_name)
        .bind(&identity.subject)
        .bind(identity.created_at)
        .bind(identity.revoked_at)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// The user identity with `subject`, created (with `new_id`) if none exists;
    /// an existing one takes the new display name.
    pub async fn upsert_identity_by_subject(
        &self,
        new_id: &str,
        subject: &str,
        display_name: &str,
        now: i64,
    ) -> Result<IdentityRow, StoreError> {
        sqlx::query(
            "INSERT INTO identities (id, kind, display_name, subject, created_at) VALUES ($1, 'user', $2, $3, $4)
             ON CONFLICT (subject) DO UPDATE SET display_name = excluded.display_name",
        )
        .bind(new_id)
        .bind(display_name)
        .bind(subject)
        .bind(now)
        .execute(self.pool())
        .await?;
        let sql = format!("SELECT {COLUMNS} FROM identities WHERE subject = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(subject)
            .fetch_one(self.pool())
            .await?;
        from_row(&row)
    }

    /// One identity by id.
    pub async fn get_identity(&self, id: &str) -> Result<Option<IdentityRow>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM identities WHERE id = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(self.pool())
            .await?;
        row.as_ref().map(from_row).transpose()
    }

    /// Identities, optionally of one kind, newest first.
    pub async fn list_identities(&self, kind: Option<&str>) -> Result<Vec<IdentityRow>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM identities WHERE ($1 = '' OR kind = $1) ORDER BY created_at DESC, id DESC");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(kind.unwrap_or(""))
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(from_row).collect()
    }

    /// Whether `identity_id` approved `client_id` before.
    pub async fn is_client_approved(&self, identity_id: &str, client_id: &str) -> Result<bool, StoreError> {
        let row = sqlx::query("SELECT approved_at FROM approved_clients WHERE identity_id = $1 AND client_id = $2")
            .bind(identity_id)
            .bind(client_id)
            .fetch_optional(self.pool())
            .await?;
        Ok(row.is_some())
    }
}

pub(crate) fn from_row(row: &AnyRow) -> Result<IdentityRow, StoreError> {
    Ok(IdentityRow {
        id: get_str(row, "id")?,
        kind: get_str(row, "kind")?,
        display_name: get_str(row, "display_name")?,
        subject: get_opt_str(row, "subject")?,
        created_at: get_i64(row, "created_at")?,
        revoked_at: get_opt_i64(row, "revoked_at")?,
    })
}
