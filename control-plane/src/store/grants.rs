//! Rows of `grants`, `auth_codes`, `access_tokens` and `refresh_tokens`: what a
//! client holds. Codes and tokens arrive and are looked up only as SHA-256 hashes.
//!
//! Code redemption and refresh-token rotation are compare-and-swap updates in
//! one transaction with everything they issue, so concurrent requests on any
//! number of replicas redeem or rotate once.

use sqlx::any::AnyRow;

use super::identities::IdentityRow;
use super::{Store, StoreError, get_i64, get_opt_i64, get_opt_str, get_str};

/// An authorization code row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthCodeRow {
    pub code_hash: String,
    pub client_id: String,
    pub identity_id: String,
    pub redirect_uri: String,
    /// Whether the authorization request carried `redirect_uri`.
    pub redirect_uri_sent: bool,
    pub code_challenge: String,
    pub scope: String,
    pub resource: String,
    /// The grant the code was redeemed for.
    pub grant_id: Option<String>,
    pub created_at: i64,
    pub expires_at: i64,
    pub consumed_at: Option<i64>,
}

/// A grant row: one refresh-token family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantRow {
    pub id: String,
    pub client_id: String,
    pub identity_id: String,
    pub scope: String,
    pub resource: String,
    pub created_at: i64,
    pub last_refresh_at: Option<i64>,
    pub idle_expires_at: i64,
    pub revoked_at: Option<i64>,
    pub revoke_reason: Option<String>,
    pub url_elicitation: bool,
}

/// An access or refresh token row (without its value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRow {
    pub token_hash: String,
    pub grant_id: String,
    pub created_at: i64,
    pub expires_at: i64,
    /// Refresh tokens: when it was rotated.
    pub used_at: Option<i64>,
}

/// An access token as `ResolveAccessToken` reads it ([`Store::resolve_access_token`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedToken {
    pub expires_at: i64,
    pub grant_id: String,
    pub client_id: String,
    pub scope: String,
    pub resource: String,
    pub grant_revoked_at: Option<i64>,
    pub url_elicitation: bool,
    pub identity: IdentityRow,
}

/// A token to store: its hash and expiry.
#[derive(Debug, Clone, Copy)]
pub struct NewToken<'a> {
    pub hash: &'a str,
    pub expires_at: i64,
}

/// A new grant.
#[derive(Debug, Clone, Copy)]
pub struct NewGrant<'a> {
    pub id: &'a str,
    pub client_id: &'a str,
    pub identity_id: &'a str,
    pub scope: &'a str,
    pub resource: &'a str,
    pub idle_expires_at: i64,
}

/// What redeeming a code issues.
#[derive(Debug, Clone, Copy)]
pub struct Redemption<'a> {
    pub code_hash: &'a str,
    pub grant: NewGrant<'a>,
    pub access: NewToken<'a>,
    pub refresh: Option<NewToken<'a>>,
    /// A dynamic client's registration is kept until this time after its use.
    pub client_expires_at: i64,
}

/// What rotating a refresh token issues.
#[derive(Debug, Clone, Copy)]
pub struct Rotation<'a> {
    pub old_hash: &'a str,
    pub grant_id: &'a str,
    pub client_id: &'a str,
    pub access: NewToken<'a>,
    pub refresh: NewToken<'a>,
    pub idle_expires_at: i64,
    pub client_expires_at: i64,
}

/// Result of [`Store::rotate_refresh_token`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RotationOutcome {
    Rotated,
    /// The token was used already (reuse, or a concurrent refresh won).
    AlreadyUsed,
    /// The grant was revoked meanwhile.
    GrantRevoked,
}

/// How many rows a sweep deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExpiredGrantRows {
    pub auth_codes: u64,
    pub access_tokens: u64,
    pub refresh_tokens: u64,
    pub connect_links: u64,
}

const GRANT_COLUMNS: &str = "g.id AS g_id, g.client_id AS g_client_id, g.identity_id AS g_identity_id, g.scope AS g_scope, \
                             g.resource AS g_resource, g.created_at AS g_created_at, g.last_refresh_at AS g_last_refresh_at, \
                             g.idle_expires_at AS g_idle_expires_at, g.revoked_at AS g_revoked_at, \
                             g.revoke_reason AS g_revoke_reason, g.url_elicitation AS g_url_elicitation";

impl Store {
    /// One code by hash.
    pub async fn get_auth_code(&self, code_hash: &str) -> Result<Option<AuthCodeRow>, StoreError> {
        let row = sqlx::query(
            "SELECT code_hash, client_id, identity_id, redirect_uri, redirect_uri_sent, code_challenge, scope, resource, grant_id,
                 created_at, expires_at, consumed_at
             FROM auth_codes WHERE code_hash = $1",
        )
        .bind(code_hash)
        .fetch_optional(self.pool())
        .await?;
        row.as_ref()
            .map(|row| {
                Ok(AuthCodeRow {
                    code_hash: get_str(row, "code_hash")?,
                    client_id: get_str(row, "client_id")?,
                    identity_id: get_str(row, "identity_id")?,
                    redirect_uri: get_str(row, "redirect_uri")?,
                    redirect_uri_sent: get_i64(row, "redirect_uri_sent")? != 0,
                    code_challenge: get_str(row, "code_challenge")?,
                    scope: get_str(row, "scope")?,
                    resource: get_str(row, "resource")?,
                    grant_id: get_opt_str(row, "grant_id")?,
                    created_at: get_i64(row, "created_at")?,
                    expires_at: get_i64(row, "expires_at")?,
                    consumed_at: get_opt_i64(row, "consumed_at")?,
                })
            })
            .transpose()
    }

    /// Redeems a code once: marks it consumed (only if it was not), creates the
    /// grant and its tokens, links the code to the grant and marks the client
    /// used, in one transaction. Returns false when the code was consumed already.
    pub async fn redeem_auth_code(&self, r: &Redemption<'_>, now: i64) -> Result<bool, StoreError> {
        let mut tx = self.pool().begin().await?;
        // Invariant: this compare-and-swap makes a code single-use across replicas.
        let consumed =
            sqlx::query("UPDATE auth_codes SET consumed_at = $2, grant_id = $3 WHERE code_hash = $1 AND consumed_at IS NULL")
                .bind(r.code_hash)
                .bind(now)
                .bind(r.grant.id)
                .execute(&mut *tx)
                .await?;
        if consumed.rows_affected() != 1 {
            tx.rollback().await?;
            return Ok(false);
        }
        sqlx::query(
            "INSERT INTO grants (id, client_id, identity_id, scope, resource, created_at, last_refresh_at, idle_expires_at,
                 revoked_at, revoke_reason, url_elicitation)
             VALUES ($1, $2, $3, $4, $5, $6, NULL, $7, NULL, NULL, 0)",
        )
        .bind(r.grant.id)
        .bind(r.grant.client_id)
        .bind(r.grant.identity_id)
        .bind(r.grant.scope)
        .bind(r.grant.resource)
        .bind(now)
        .bind(r.grant.idle_expires_at)
        .execute(&mut *tx)
        .await?;
        insert_access_token(&mut tx, r.grant.id, r.access, now).await?;
        if let Some(refresh) = r.refresh {
            insert_refresh_token(&mut tx, r.grant.id, refresh, now).await?;
        }
        touch_client(&mut tx, r.grant.client_id, now, r.client_expires_at).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// One grant by id.
    pub async fn get_grant(&self, id: &str) -> Result<Option<GrantRow>, StoreError> {
        let sql = format!("SELECT {GRANT_COLUMNS} FROM grants g WHERE g.id = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(self.pool())
            .await?;
        row.as_ref().map(grant_from_row).transpose()
    }

    /// Grants, optionally of one identity and/or client, newest first.
    pub async fn list_grants(
        &self,
        identity_id: Option<&str>,
        client_id: Option<&str>,
        include_revoked: bool,
    ) -> Result<Vec<GrantRow>, StoreError> {
        let sql = format!(
            "SELECT {GRANT_COLUMNS} FROM grants g
             WHERE ($1 = '' OR g.identity_id = $1) AND ($2 = '' OR g.client_id = $2) AND ($3 = 1 OR g.revoked_at IS NULL)
             ORDER BY g.created_at DESC, g.id DESC"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(identity_id.unwrap_or(""))
            .bind(client_id.unwrap_or(""))
            .bind(i64::from(include_revoked))
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(grant_from_row).collect()
    }

    /// Revokes a grant and deletes its tokens. Returns whether it was still active.
    pub async fn revoke_grant(&self, grant_id: &str, reason: &str, now: i64) -> Result<bool, StoreError> {
        let mut tx = self.pool().begin().await?;
        let revoked = sqlx::query("UPDATE grants SET revoked_at = $2, revoke_reason = $3 WHERE id = $1 AND revoked_at IS NULL")
            .bind(grant_id)
            .bind(now)
            .bind(reason)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM access_tokens WHERE grant_id = $1")
            .bind(grant_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM refresh_tokens WHERE grant_id = $1")
            .bind(grant_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(revoked.rows_affected() == 1)
    }

    /// A refresh token by hash, with its grant.
    pub async fn find_refresh_token(&self, token_hash: &str) -> Result<Option<(TokenRow, GrantRow)>, StoreError> {
        let sql = format!(
            "SELECT t.token_hash, t.grant_id, t.created_at, t.expires_at, t.used_at, {GRANT_COLUMNS}
             FROM refresh_tokens t JOIN grants g ON g.id = t.grant_id WHERE t.token_hash = $1"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(token_hash)
            .fetch_optional(self.pool())
            .await?;
        row.as_ref()
            .map(|row| Ok((token_from_row(row, true)?, grant_from_row(row)?)))
            .transpose()
    }

    /// An access token by hash, with its grant.
    pub async fn find_access_token(&self, token_hash: &str) -> Result<Option<(TokenRow, GrantRow)>, StoreError> {
        let sql = format!(
            "SELECT t.token_hash, t.grant_id, t.created_at, t.expires_at, {GRANT_COLUMNS}
             FROM access_tokens t JOIN grants g ON g.id = t.grant_id WHERE t.token_hash = $1"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(token_hash)
            .fetch_optional(self.pool())
            .await?;
        row.as_ref()
            .map(|row| Ok((token_from_row(row, false)?, grant_from_row(row)?)))
            .transpose()
    }

    /// What `ResolveAccessToken` needs of an access token, by hash: its
    /// expiry, its grant's caller fields and its identity.
    ///
    /// Only those columns: this is the `/mcp` caller lookup on every cache
    /// miss, and moving each column out of SQLite and through the Any driver
    /// is most of what the lookup costs (BENCHMARKS.md, "Where the time goes").
    pub async fn resolve_access_token(&self, token_hash: &str) -> Result<Option<ResolvedToken>, StoreError> {
        let row = sqlx::query(
            "SELECT t.expires_at, g.id AS g_id, g.client_id, g.scope, g.resource, g.revoked_at AS g_revoked_at,
                 g.url_elicitation, i.id AS i_id, i.kind, i.display_name, i.subject, i.created_at AS i_created_at,
                 i.revoked_at AS i_revoked_at
             FROM access_tokens t JOIN grants g ON g.id = t.grant_id JOIN identities i ON i.id = g.identity_id
             WHERE t.token_hash = $1",
        )
        .bind(token_hash)
        .fetch_optional(self.pool())
        .await?;
        row.as_ref()
            .map(|row| {
                Ok(ResolvedToken {
                    expires_at: get_i64(row, "expires_at")?,
                    grant_id: get_str(row, "g_id")?,
                    client_id: get_str(row, "client_id")?,
                    scope: get_str(row, "scope")?,
                    resource: get_str(row, "resource")?,
                    grant_revoked_at: get_opt_i64(row, "g_revoked_at")?,
                    url_elicitation: get_i64(row, "url_elicitation")? != 0,
                    identity: IdentityRow {
                        id: get_str(row, "i_id")?,
                        kind: get_str(row, "kind")?,
                        display_name: get_str(row, "display_name")?,
                        subject: get_opt_str(row, "subject")?,
                        created_at: get_i64(row, "i_created_at")?,
                        revoked_at: get_opt_i64(row, "i_revoked_at")?,
                    },
                })
            })
            .transpose()
    }

    /// Deletes one access token.
    pub async fn delete_access_token(&self, token_hash: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM access_tokens WHERE token_hash = $1")
            .bind(token_hash)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Rotates a refresh token once: marks the old one used (only if it was not),
    /// extends the grant (only if not revoked), stores the new pair and marks
    /// the client used, in one transaction.
    pub async fn rotate_refresh_token(&self, r: &Rotation<'_>, now: i64) -> Result<RotationOutcome, StoreError> {
        let mut tx = self.pool().begin().await?;
        // Invariant: this compare-and-swap makes a refresh token single-use across replicas.
        let used = sqlx::query("UPDATE refresh_tokens SET used_at = $2 WHERE token_hash = $1 AND used_at IS NULL")
            .bind(r.old_hash)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        if used.rows_affected() != 1 {
            tx.rollback().await?;
            return Ok(RotationOutcome::AlreadyUsed);
        }
        let extended =
            sqlx::query("UPDATE grants SET last_refresh_at = $2, idle_expires_at = $3 WHERE id = $1 AND revoked_at IS NULL")
                .bind(r.grant_id)
                .bind(now)
                .bind(r.idle_expires_at)
                .execute(&mut *tx)
                .await?;
        if extended.rows_affected() != 1 {
            tx.rollback().await?;
            return Ok(RotationOutcome::GrantRevoked);
        }
        insert_access_token(&mut tx, r.grant_id, r.access, now).await?;
        insert_refresh_token(&mut tx, r.grant_id, r.refresh, now).await?;
        touch_client(&mut tx, r.client_id, now, r.client_expires_at).await?;
        tx.commit().await?;
        Ok(RotationOutcome::Rotated)
    }

    /// Deletes codes, access tokens, refresh tokens and connect links past their expiry.
    pub async fn delete_expired_grant_rows(&self, now: i64) -> Result<ExpiredGrantRows, StoreError> {
        let mut counts = ExpiredGrantRows::default();
        for (sql, count) in [
            ("DELETE FROM auth_codes WHERE expires_at < $1", &mut counts.auth_codes),
            ("DELETE FROM access_tokens WHERE expires_at < $1", &mut counts.access_tokens),
            ("DELETE FROM refresh_tokens WHERE expires_at < $1", &mut counts.refresh_tokens),
            ("DELETE FROM connect_links WHERE expires_at < $1", &mut counts.connect_links),
        ] {
            *count = sqlx::query(sql).bind(now).execute(self.pool()).await?.rows_affected();
        }
        Ok(counts)
    }
}

type Tx<'c> = sqlx::Transaction<'c, sqlx::Any>;

async fn insert_access_token(tx: &mut Tx<'_>, grant_id: &str, token: NewToken<'_>, now: i64) -> Result<(), StoreError> {
    sqlx::query("INSERT INTO access_tokens (token_hash, grant_id, created_at, expires_at) VALUES ($1, $2, $3, $4)")
        .bind(token.hash)
        .bind(grant_id)
        .bind(now)
        .bind(token.expires_at)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

async fn insert_refresh_token(tx: &mut Tx<'_>, grant_id: &str, token: NewToken<'_>, now: i64) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO refresh_tokens (token_hash, grant_id, created_at, expires_at, used_at) VALUES ($1, $2, $3, $4, NULL)",
    )
    .bind(token.hash)
    .bind(grant_id)
    .bind(now)
    .bind(token.expires_at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Marks a dynamic client used, which keeps its registration.
async fn touch_client(tx: &mut Tx<'_>, client_id: &str, now: i64, expires_at: i64) -> Result<(), StoreError> {
    sqlx::query("UPDATE clients SET last_used_at = $2, expires_at = $3 WHERE client_id = $1 AND kind = 'dynamic'")
        .bind(client_id)
        .bind(now)
        .bind(expires_at)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

fn token_from_row(row: &AnyRow, has_used_at: bool) -> Result<TokenRow, StoreError> {
    Ok(TokenRow {
        token_hash: get_str(row, "token_hash")?,
        grant_id: get_str(row, "grant_id")?,
        created_at: get_i64(row, "created_at")?,
        expires_at: get_i64(row, "expires_at")?,
        used_at: if has_used_at { get_opt_i64(row, "used_at")? } else { None },
    })
}

fn grant_from_row(row: &AnyRow) -> Result<GrantRow, StoreError> {
    Ok(GrantRow {
        id: get_str(row, "g_id")?,
        client_id: get_str(row, "g_client_id")?,
        identity_id: get_str(row, "g_identity_id")?,
        scope: get_str(row, "g_scope")?,
        resource: get_str(row, "g_resource")?,
        created_at: get_i64(row, "g_created_at")?,
        last_refresh_at: get_opt_i64(row, "g_last_refresh_at")?,
        idle_expires_at: get_i64(row, "g_idle_expires_at")?,
        revoked_at: get_opt_i64(row, "g_revoked_at")?,
        revoke_reason: get_opt_str(row, "g_revoke_reason")?,
        url_elicitation: get_i64(row, "g_url_elicitation")? != 0,
    })
}
