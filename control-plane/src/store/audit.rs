//! The audit log: who did what, when, from where. Never a secret.

use sqlx::Row as _;

use super::{Store, StoreError, get_i64, get_str};

/// One audit event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEvent {
    pub id: i64,
    pub at_ms: i64,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub remote_addr: String,
    /// JSON object.
    pub detail: String,
}

/// A new event.
#[derive(Debug, Clone, Default)]
pub struct NewAuditEvent<'a> {
    pub actor: &'a str,
    pub action: &'a str,
    pub target: &'a str,
    pub remote_addr: &'a str,
    /// JSON object; empty means `{}`.
    pub detail: String,
}

/// Filters for `query`.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    pub actor: Option<String>,
    pub action_prefix: Option<String>,
    pub target: Option<String>,
    pub since_ms: Option<i64>,
    pub before_id: Option<i64>,
    pub limit: u32,
}

impl Store {
    /// Appends an event.
    pub async fn append_audit(&self, event: NewAuditEvent<'_>, at_ms: i64) -> Result<(), StoreError> {
        let detail = if event.detail.is_empty() {
            "{}".to_string()
        } else {
            event.detail
        };
        sqlx::query(
            "INSERT INTO audit_events (at_ms, actor, action, target, remote_addr, detail) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(at_ms)
        .bind(event.actor)
        .bind(event.action)
        .bind(event.target)
        .bind(event.remote_addr)
        .bind(detail)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Events matching every given filter, newest first.
    pub async fn query_audit(&self, q: &AuditQuery) -> Result<Vec<AuditEvent>, StoreError> {
        // Unset filters compare against values that always match, so one static
        // statement serves every combination.
        let prefix_pattern = format!("{}%", escape_like(q.action_prefix.as_deref().unwrap_or("")));
        let rows = sqlx::query(
            "SELECT id, at_ms, actor, action, target, remote_addr, detail FROM audit_events
             WHERE ($1 = '' OR actor = $1)
               AND action LIKE $2 ESCAPE '\\'
               AND ($3 = '' OR target = $3)
               AND at_ms >= $4
               AND id < $5
             ORDER BY id DESC LIMIT $6",
        )
        .bind(q.actor.clone().unwrap_or_default())
        .bind(prefix_pattern)
        .bind(q.target.clone().unwrap_or_default())
        .bind(q.since_ms.unwrap_or(0))
        .bind(q.before_id.filter(|id| *id > 0).unwrap_or(i64::MAX))
        .bind(i64::from(q.limit.clamp(1, 1000)))
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|row| {
                Ok(AuditEvent {
                    id: row.try_get::<i64, _>("id")?,
                    at_ms: get_i64(row, "at_ms")?,
                    actor: get_str(row, "actor")?,
                    action: get_str(row, "action")?,
                    target: get_str(row, "target")?,
                    remote_addr: get_str(row, "remote_addr")?,
                    detail: get_str(row, "detail")?,
                })
            })
            .collect()
    }
}

fn escape_like(value: &str) -> String {
    value.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_")
}
