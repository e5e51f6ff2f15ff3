//! What the sweeper deletes beyond plain expiry: grants that ended, anonymous
//! identities nothing refers to any more (with their approvals and
//! connections), and audit events past their retention.
//!
//! Invariant: nothing here touches what can still be used. A grant is "ended"
//! only when it is revoked or idle-expired (so its refresh token can never
//! work again) and has no unexpired access token; an anonymous identity is
//! "abandoned" only when no flow (a flow row lives until its expiry, consumed
//! or not), no unexpired code, no grant, no connect link and no upstream attempt
//! names it. Named identities (virtual keys, signed-in users) are never deleted.

use super::connections::{self, COLUMNS as CONNECTION_COLUMNS, ConnectionRow};
use super::{Store, StoreError};

/// `WHERE` clause over `grants` (no alias): ended before `$1`, and with no
/// access token alive at `$2`.
const ENDED_GRANT: &str = "((grants.revoked_at IS NOT NULL AND grants.revoked_at < $1)
        OR (grants.revoked_at IS NULL AND grants.idle_expires_at < $1))
    AND NOT EXISTS (SELECT 1 FROM access_tokens a WHERE a.grant_id = grants.id AND a.expires_at >= $2)";

/// `WHERE` clause over `identities AS i`: anonymous, created before `$1`, and
/// named by nothing that could still lead to a grant (`$2` is now).
const ABANDONED_ANONYMOUS: &str = "i.kind = 'anonymous' AND i.created_at < $1
    AND NOT EXISTS (SELECT 1 FROM flows f WHERE f.identity_id = i.id)
    AND NOT EXISTS (SELECT 1 FROM auth_codes c WHERE c.identity_id = i.id AND c.expires_at >= $2)
    AND NOT EXISTS (SELECT 1 FROM grants g WHERE g.identity_id = i.id)
    AND NOT EXISTS (SELECT 1 FROM connect_links l WHERE l.identity_id = i.id)
    AND NOT EXISTS (SELECT 1 FROM upstream_attempts u WHERE u.identity_id = i.id)";

/// Rows deleted with abandoned anonymous identities.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AbandonedIdentities {
    pub identities: u64,
    pub approved_clients: u64,
}

impl Store {
    /// Deletes grants that ended (revoked, or idle-expired) before `ended_before`
    /// and hold no access token alive at `now`, with their tokens and connect
    /// links. Returns how many grants went.
    pub async fn delete_ended_grants(&self, ended_before: i64, now: i64) -> Result<u64, StoreError> {
        let mut tx = self.pool().begin().await?;
        for table in ["access_tokens", "refresh_tokens", "connect_links"] {
            let sql = format!("DELETE FROM {table} WHERE grant_id IN (SELECT grants.id FROM grants WHERE {ENDED_GRANT})");
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(ended_before)
                .bind(now)
                .execute(&mut *tx)
                .await?;
        }
        let sql = format!("DELETE FROM grants WHERE {ENDED_GRANT}");
        let grants = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(ended_before)
            .bind(now)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(grants)
    }

    /// Connections of abandoned anonymous identities created before
    /// `created_before`, at most `limit`: the sweeper deletes them one by one
    /// through the path that also revokes them at the provider.
    pub async fn abandoned_anonymous_connections(
        &self,
        created_before: i64,
        now: i64,
        limit: i64,
    ) -> Result<Vec<ConnectionRow>, StoreError> {
        let sql = format!(
            "SELECT {CONNECTION_COLUMNS} FROM connections WHERE identity_id IN
                 (SELECT i.id FROM identities i WHERE {ABANDONED_ANONYMOUS})
             ORDER BY id LIMIT $3"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(created_before)
            .bind(now)
            .bind(limit)
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(connections::from_row).collect()
    }

    /// Deletes abandoned anonymous identities created before `created_before`
    /// that no longer hold a connection (those go first, revoked upstream),
    /// then every client approval whose identity no longer exists.
    pub async fn delete_abandoned_anonymous_identities(
        &self,
        created_before: i64,
        now: i64,
    ) -> Result<AbandonedIdentities, StoreError> {
        let mut tx = self.pool().begin().await?;
        let sql = format!(
            "DELETE FROM identities WHERE id IN (SELECT i.id FROM identities i WHERE {ABANDONED_ANONYMOUS}
                 AND NOT EXISTS (SELECT 1 FROM connections c WHERE c.identity_id = i.id))"
        );
        let identities = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(created_before)
            .bind(now)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        let approved_clients = sqlx::query(
            "DELETE FROM approved_clients
             WHERE NOT EXISTS (SELECT 1 FROM identities i WHERE i.id = approved_clients.identity_id)",
        )
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(AbandonedIdentities {
            identities,
            approved_clients,
        })
    }

    /// Deletes audit events recorded before `before_ms`.
    pub async fn delete_audit_before(&self, before_ms: i64) -> Result<u64, StoreError> {
        Ok(sqlx::query("DELETE FROM audit_events WHERE at_ms < $1")
            .bind(before_ms)
            .execute(self.pool())
            .await?
            .rows_affected())
    }
}
