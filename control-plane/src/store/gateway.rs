//! What `/mcp` needs from the store: the identity behind a grant, the
//! identity's connection to a service, connect links, and the client's
//! recorded capabilities.

use sqlx::Row as _;

use super::connections::{self, COLUMNS, ConnectionRow};
use super::{Store, StoreError, get_i64, get_opt_i64, get_opt_str, get_str};
use crate::mcp_servers::McpServer;

/// A grant as the gateway sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantOwner {
    pub grant_id: String,
    pub client_id: String,
    pub identity_id: String,
    /// Whether the grant or its identity is revoked.
    pub revoked: bool,
}

/// What [`Store::credential_rows`] found for a grant and a service.
#[derive(Debug, Clone)]
pub struct CredentialRows {
    pub owner: GrantOwner,
    /// `None`: no such service.
    pub server: Option<McpServer>,
    /// The grant's identity's connection to the service, if any.
    pub connection: Option<ConnectionRow>,
}

/// A connect link row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectLinkRow {
    pub link_hash: String,
    pub grant_id: String,
    pub identity_id: String,
    pub service: String,
    pub expires_at: i64,
    pub used_at: Option<i64>,
}

impl Store {
    /// The identity a grant acts for.
    pub async fn grant_owner(&self, grant_id: &str) -> Result<Option<GrantOwner>, StoreError> {
        let row = sqlx::query(
            "SELECT g.id, g.client_id, g.identity_id, g.revoked_at AS grant_revoked, i.revoked_at AS identity_revoked
             FROM grants g LEFT JOIN identities i ON i.id = g.identity_id WHERE g.id = $1",
        )
        .bind(grant_id)
        .fetch_optional(self.pool())
        .await?;
        let Some(row) = row else { return Ok(None) };
        Ok(Some(GrantOwner {
            grant_id: get_str(&row, "id")?,
            client_id: get_str(&row, "client_id")?,
            identity_id: get_str(&row, "identity_id")?,
            revoked: get_opt_i64(&row, "grant_revoked")?.is_some() || get_opt_i64(&row, "identity_revoked")?.is_some(),
        }))
    }

    /// An identity's connection to a service.
    ///
    /// One row by `UNIQUE (identity_id, service)`: the `/mcp` credential path,
    /// so it must stay an index lookup however many connections the vault
    /// holds (`list_connections`' optional filters defeat the index).
    pub async fn identity_connection(&self, identity_id: &str, service: &str) -> Result<Option<ConnectionRow>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM connections WHERE identity_id = $1 AND service = $2");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(identity_id)
            .bind(service)
            .fetch_optional(self.pool())
            .await?;
        row.as_ref().map(connections::from_row).transpose()
    }

    /// What `GetUpstreamCredential` reads, in one query: the grant and its
    /// identity, the service entry, and the identity's connection to it.
    pub async fn credential_rows(&self, grant_id: &str, service: &str) -> Result<Option<CredentialRows>, StoreError> {
        static SQL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
        let sql = SQL.get_or_init(|| {
            let connection: Vec<String> = COLUMNS.split(',').map(|c| format!("c.{0} AS {0}", c.trim())).collect();
            format!(
                "SELECT g.client_id AS g_client_id, g.identity_id AS g_identity_id, g.revoked_at AS g_revoked_at,
                     i.revoked_at AS i_revoked_at, s.name AS s_name, s.settings AS s_settings, s.source AS s_source,
                     s.created_at AS s_created_at, s.updated_at AS s_updated_at, {}
                 FROM grants g LEFT JOIN identities i ON i.id = g.identity_id
                     LEFT JOIN mcp_servers s ON s.name = $2
                     LEFT JOIN connections c ON c.identity_id = g.identity_id AND c.service = $2
                 WHERE g.id = $1",
                connection.join(", ")
            )
        });
        let row = sqlx::query(sqlx::AssertSqlSafe(sql.as_str()))
            .bind(grant_id)
            .bind(service)
            .fetch_optional(self.pool())
            .await?;
        let Some(row) = row else { return Ok(None) };
        let owner = GrantOwner {
            grant_id: grant_id.to_owned(),
            client_id: get_str(&row, "g_client_id")?,
            identity_id: get_str(&row, "g_identity_id")?,
            revoked: get_opt_i64(&row, "g_revoked_at")?.is_some() || get_opt_i64(&row, "i_revoked_at")?.is_some(),
        };
        let server = match get_opt_str(&row, "s_name")? {
            None => None,
            Some(name) => {
                let mut server: McpServer = serde_json::from_str(&get_str(&row, "s_settings")?)
                    .map_err(|e| StoreError::Corrupt(format!("mcp_servers.settings of {name:?}: {e}")))?;
                server.source = get_str(&row, "s_source")?;
                server.created_at = get_i64(&row, "s_created_at")?;
                server.updated_at = get_i64(&row, "s_updated_at")?;
                Some(server)
            }
        };
        let connection = match get_opt_str(&row, "id")? {
            None => None,
            Some(_) => Some(connections::from_row(&row)?),
        };
        Ok(Some(CredentialRows {
            owner,
            server,
            connection,
        }))
    }

    /// Records whether the grant's client declared URL-mode elicitation.
    pub async fn set_url_elicitation(&self, grant_id: &str, supported: bool) -> Result<bool, StoreError> {
        let result = sqlx::query("UPDATE grants SET url_elicitation = $2 WHERE id = $1")
            .bind(grant_id)
            .bind(i64::from(supported))
            .execute(self.pool())
            .await?;
        Ok(result.rows_affected() > 0)
    }

    /// Stores a new connect link (only the hash of its id).
    pub async fn insert_connect_link(&self, link: &ConnectLinkRow, now: i64) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO connect_links (link_hash, grant_id, identity_id, service, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&link.link_hash)
        .bind(&link.grant_id)
        .bind(&link.identity_id)
        .bind(&link.service)
        .bind(now)
        .bind(link.expires_at)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Marks a link used, unless it already is; whether this call did.
    pub async fn use_connect_link(&self, link_hash: &str, now: i64) -> Result<bool, StoreError> {
        let result = sqlx::query("UPDATE connect_links SET used_at = $2 WHERE link_hash = $1 AND used_at IS NULL")
            .bind(link_hash)
            .bind(now)
            .execute(self.pool())
            .await?;
        Ok(result.rows_affected() == 1)
    }

    /// Makes a used link usable again (its authorization could not begin).
    pub async fn release_connect_link(&self, link_hash: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE connect_links SET used_at = NULL WHERE link_hash = $1")
            .bind(link_hash)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// A connect link by the hash of its id.
    pub async fn get_connect_link(&self, link_hash: &str) -> Result<Option<ConnectLinkRow>, StoreError> {
        let row = sqlx::query(
            "SELECT link_hash, grant_id, identity_id, service, expires_at, used_at FROM connect_links WHERE link_hash = $1",
        )
        .bind(link_hash)
        .fetch_optional(self.pool())
        .await?;
        let Some(row) = row else { return Ok(None) };
        Ok(Some(ConnectLinkRow {
            link_hash: get_str(&row, "link_hash")?,
            grant_id: get_str(&row, "grant_id")?,
            identity_id: get_str(&row, "identity_id")?,
            service: get_str(&row, "service")?,
            expires_at: get_i64(&row, "expires_at")?,
            used_at: row.try_get::<Option<i64>, _>("used_at")?,
        }))
    }
}

/// A refreshed token set to store in place of a connection's old one. The
/// values are sealed for the row's id, owner and service under one key.
#[derive(Debug, Clone)]
pub struct Refreshed {
    pub access: crate::vault::Sealed,
    /// `None` keeps the stored refresh token (the provider did not rotate it).
    pub refresh: Option<crate::vault::Sealed>,
    pub expires_at: Option<i64>,
}

impl Store {
    /// Takes the refresh lease of a connection at `version`, unless another
    /// refresher holds an unexpired one. Whoever gets it refreshes; the others wait.
    pub async fn take_refresh_lease(
        &self,
        id: &str,
        version: i64,
        owner: &str,
        now: i64,
        until: i64,
    ) -> Result<bool, StoreError> {
        let result = sqlx::query(
            "UPDATE connections SET refresh_lease_until = $4, refresh_lease_owner = $3
             WHERE id = $1 AND version = $2 AND (refresh_lease_until IS NULL OR refresh_lease_until < $5)",
        )
        .bind(id)
        .bind(version)
        .bind(owner)
        .bind(until)
        .bind(now)
        .execute(self.pool())
        .await?;
        Ok(result.rows_affected() == 1)
    }

    /// Stores a refreshed token set (lease holder only); bumps the version.
    pub async fn store_refreshed(&self, id: &str, owner: &str, refreshed: &Refreshed, now: i64) -> Result<bool, StoreError> {
        // Invariant: a row's ciphertexts share one key id. Without a new refresh
        // token, the stored one is re-sealed by the caller under the same key.
        let result = sqlx::query(
            "UPDATE connections SET access_ct = $3, refresh_ct = COALESCE($4, refresh_ct), key_id = $5, expires_at = $6,
                 last_refresh_at = $7, updated_at = $7, status = 'connected', version = version + 1,
                 refresh_lease_until = NULL, refresh_lease_owner = NULL
             WHERE id = $1 AND refresh_lease_owner = $2",
        )
        .bind(id)
        .bind(owner)
        .bind(&refreshed.access.blob)
        .bind(refreshed.refresh.as_ref().map(|r| r.blob.clone()))
        .bind(&refreshed.access.key_id)
        .bind(refreshed.expires_at)
        .bind(now)
        .execute(self.pool())
        .await?;
        Ok(result.rows_affected() == 1)
    }

    /// Marks a connection as needing the person to authorize again; bumps the version.
    pub async fn mark_needs_reauth(&self, id: &str, now: i64) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE connections SET status = 'needs_reauth', version = version + 1, updated_at = $2,
                 refresh_lease_until = NULL, refresh_lease_owner = NULL WHERE id = $1",
        )
        .bind(id)
        .bind(now)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Connected per-identity connections with a refresh token whose access
    /// token expires before `before`, soonest first, at most `limit`.
    ///
    /// An anonymous identity exists only for its grant: once no grant of it can
    /// be refreshed at `now` (and no code of it awaits exchange), nobody can use
    /// its connections again, so they are not kept alive at the provider; the
    /// sweeper deletes and revokes them.
    pub async fn connections_due_for_refresh(&self, now: i64, before: i64, limit: i64) -> Result<Vec<ConnectionRow>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM connections
             WHERE status = 'connected' AND identity_id IS NOT NULL AND refresh_ct IS NOT NULL
               AND expires_at IS NOT NULL AND expires_at < $1
               AND (NOT EXISTS (SELECT 1 FROM identities i WHERE i.id = connections.identity_id AND i.kind = 'anonymous')
                    OR EXISTS (SELECT 1 FROM grants g WHERE g.identity_id = connections.identity_id
                                   AND g.revoked_at IS NULL AND g.idle_expires_at > $3)
                    OR EXISTS (SELECT 1 FROM auth_codes c WHERE c.identity_id = connections.identity_id
                                   AND c.consumed_at IS NULL AND c.expires_at > $3))
             ORDER BY expires_at LIMIT $2"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(before)
            .bind(limit)
            .bind(now)
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(super::connections::from_row).collect()
    }

    /// Gives up a refresh lease without changing the tokens (a transient failure).
    pub async fn release_refresh_lease(&self, id: &str, owner: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE connections SET refresh_lease_until = NULL, refresh_lease_owner = NULL WHERE id = $1 AND refresh_lease_owner = $2")
            .bind(id)
            .bind(owner)
            .execute(self.pool())
            .await?;
        Ok(())
    }
}
