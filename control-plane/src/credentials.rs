//! Upstream credentials for `/mcp`: what a data plane sends to an upstream MCP
//! server on behalf of one grant.
//!
//! Security: the caller is the grant's identity, as the control plane recorded
//! it at Approve; nothing a client sends names an identity. An OAuth service
//! gets that identity's own upstream token, never another identity's and never
//! the client's Gatehouse token (SPEC-NOTES R7, C8). Static header values are
//! read from the environment or a file here, so they never sit in the store.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use crate::Core;
use crate::audit;
use crate::connections::resource_of;
use crate::mcp_servers::{AuthMode, McpServer, StaticHeader};
use crate::secret::Secret;
use crate::store::StoreError;
use crate::store::audit::NewAuditEvent;
use crate::store::connections::{self, ConnectionRow};
use crate::store::gateway::Refreshed;
use crate::upstream::{self, UpstreamError};
use crate::vault::VaultError;

/// How long a data plane may cache a credential that does not expire.
const STATIC_CACHE_SECONDS: i64 = 300;
/// Refresh an upstream access token this long before it expires.
pub const REFRESH_AHEAD_SECONDS: i64 = 60;

#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error("unknown or revoked grant")]
    InvalidGrant,
    #[error("no MCP server named {0:?}")]
    UnknownService(String),
    #[error("{0} is not connected for this identity")]
    NotConnected(String),
    #[error("{0} needs to be authorized again")]
    NeedsReauth(String),
    #[error("static header {header} of {service}: {reason}")]
    StaticHeader {
        service: String,
        header: String,
        reason: String,
    },
    #[error("{service} is unavailable: {reason}")]
    Unavailable { service: String, reason: String },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Vault(#[from] VaultError),
}

/// A credential: headers to send, and how long it may be used and cached.
#[derive(Debug, Clone)]
pub struct Credential {
    pub headers: Vec<(String, Secret)>,
    pub expires_at: Option<i64>,
    pub version: String,
    pub connection_id: Option<String>,
    pub cache_seconds: i64,
}

/// The identity of a live grant.
pub async fn grant_identity(core: &Core, grant_id: &str) -> Result<String, CredentialError> {
    match core.store.grant_owner(grant_id).await? {
        Some(owner) if !owner.revoked => Ok(owner.identity_id),
        _ => Err(CredentialError::InvalidGrant),
    }
}

/// The service entry, or `UnknownService`.
pub async fn service(core: &Core, name: &str) -> Result<McpServer, CredentialError> {
    core.store
        .get_mcp_server(name)
        .await?
        .ok_or_else(|| CredentialError::UnknownService(name.to_string()))
}

/// Builds the credential of a connection row as it stands (no refresh).
pub fn from_connection(core: &Core, server: &McpServer, row: &ConnectionRow) -> Result<Credential, CredentialError> {
    if row.status == "needs_reauth" {
        return Err(CredentialError::NeedsReauth(server.display_name.clone()));
    }
    let owner = row.owner();
    let access = core
        .vault
        .open_secret(connections::aad("access_ct", &row.id, &owner, &row.service), &row.access_ct)?;
    let now = core.now();
    let cache_seconds = match row.expires_at {
        Some(expires_at) => (expires_at - now - REFRESH_AHEAD_SECONDS).clamp(0, STATIC_CACHE_SECONDS),
        None => STATIC_CACHE_SECONDS,
    };
    Ok(Credential {
        headers: vec![(
            "authorization".to_string(),
            Secret::new(format!("Bearer {}", access.expose())),
        )],
        expires_at: row.expires_at,
        version: row.version.to_string(),
        connection_id: Some(row.id.clone()),
        cache_seconds,
    })
}

/// The credential of a service that needs no per-identity connection.
pub fn shared(server: &McpServer) -> Result<Credential, CredentialError> {
    let headers = match server.auth_mode {
        AuthMode::None | AuthMode::Oauth => Vec::new(),
        AuthMode::StaticHeaders => server
            .static_headers
            .iter()
            .map(|h| Ok((h.name.to_ascii_lowercase(), static_value(server, h)?)))
            .collect::<Result<_, CredentialError>>()?,
    };
    Ok(Credential {
        headers,
        expires_at: None,
        version: "static".into(),
        connection_id: None,
        cache_seconds: STATIC_CACHE_SECONDS,
    })
}

fn static_value(server: &McpServer, header: &StaticHeader) -> Result<Secret, CredentialError> {
    let failed = |reason: String| CredentialError::StaticHeader {
        service: server.name.clone(),
        header: header.name.clone(),
        reason,
    };
    let value = if !header.value_env.is_empty() {
        std::env::var(&header.value_env).map_err(|_| failed(format!("environment variable {} is not set", header.value_env)))?
    } else {
        std::fs::read_to_string(&header.value_file)
            .map_err(|e| failed(format!("{}: {e}", header.value_file)))?
            .trim_end_matches(['\r', '\n'])
            .to_string()
    };
    if value.is_empty() || value.chars().any(|c| c.is_control()) {
        return Err(failed("the value is empty or has control characters".into()));
    }
    Ok(Secret::new(value))
}

// === Refresh, once per connection across replicas ===

/// How long a refresher may hold the lease before others may take over.
const LEASE_SECONDS: i64 = 30;
/// How long a caller waits for another replica's refresh.
const WAIT_FOR_REFRESH: Duration = Duration::from_secs(15);

/// This process's name as a lease holder.
fn lease_owner() -> &'static str {
    static OWNER: OnceLock<String> = OnceLock::new();
    OWNER.get_or_init(|| crate::secret::random_id("cp_"))
}

/// The credential for an OAuth connection, refreshed first when it expires within
/// `REFRESH_AHEAD_SECONDS` (or when `force`, after the upstream refused it).
pub async fn oauth_credential(
    core: &Core,
    server: &McpServer,
    identity_id: &str,
    force: Option<&str>,
) -> Result<Credential, CredentialError> {
    let row = core
        .store
        .identity_connection(identity_id, &server.name)
        .await?
        .ok_or_else(|| CredentialError::NotConnected(server.display_name.clone()))?;
    let now = core.now();
    let stale = match force {
        // The upstream refused `version`: refresh unless someone already did.
        Some(version) => row.version.to_string() == version,
        None => row.expires_at.is_some_and(|at| at <= now + REFRESH_AHEAD_SECONDS),
    };
    if !stale || row.status == "needs_reauth" {
        return from_connection(core, server, &row);
    }
    if let Some(wait) = backoff().waiting(&row.id) {
        // A refresh failed moments ago (the provider is down or overloaded):
        // keep using the token while it lasts instead of asking again.
        let still_valid = force.is_none() && row.expires_at.is_some_and(|at| at > now);
        if still_valid {
            return from_connection(core, server, &row);
        }
        return Err(CredentialError::Unavailable {
            service: server.display_name.clone(),
            reason: format!("the last token refresh failed; retrying in {} s", wait.as_secs().max(1)),
        });
    }
    refresh(core, server, row).await
}

/// Refreshes a connection ahead of its expiry (the background refresher):
/// once, under the lease, unless another replica just did.
pub async fn refresh_ahead(core: &Core, row: &ConnectionRow) -> Result<(), CredentialError> {
    let Some(identity_id) = &row.identity_id else {
        return Ok(());
    };
    let server = service(core, &row.service).await?;
    if server.auth_mode != AuthMode::Oauth || backoff().waiting(&row.id).is_some() {
        return Ok(());
    }
    oauth_credential(core, &server, identity_id, Some(&row.version.to_string()))
        .await
        .map(drop)
}

// === Back-off after transient refresh failures ===

/// First wait after a transient refresh failure; doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(5);
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// Connections whose last refresh failed transiently, per replica: (retry at, failures).
#[derive(Default)]
struct Backoff(Mutex<HashMap<String, (Instant, u32)>>);

fn backoff() -> &'static Backoff {
    static BACKOFF: OnceLock<Backoff> = OnceLock::new();
    BACKOFF.get_or_init(Backoff::default)
}

impl Backoff {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Instant, u32)>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// How long until `connection_id` may be refreshed again, if it must wait.
    fn waiting(&self, connection_id: &str) -> Option<Duration> {
        let map = self.map();
        let (until, _) = map.get(connection_id)?;
        until.checked_duration_since(Instant::now())
    }

    fn failed(&self, connection_id: &str) -> Duration {
        let mut map = self.map();
        let now = Instant::now();
        // Forget entries long past, so the map stays small.
        map.retain(|_, (until, _)| *until + MAX_BACKOFF > now);
        let failures = map.get(connection_id).map_or(0, |(_, n)| *n) + 1;
        let wait = FIRST_BACKOFF.saturating_mul(1 << (failures - 1).min(8)).min(MAX_BACKOFF);
        map.insert(connection_id.to_owned(), (now + wait, failures));
        wait
    }

    fn succeeded(&self, connection_id: &str) {
        self.map().remove(connection_id);
    }
}

/// The upstream refused a credential that was just refreshed: the connection
/// needs the person again (unless it changed meanwhile, then the newer one).
pub async fn give_up(core: &Core, server: &McpServer, identity_id: &str, version: &str) -> Result<Credential, CredentialError> {
    let row = core
        .store
        .identity_connection(identity_id, &server.name)
        .await?
        .ok_or_else(|| CredentialError::NotConnected(server.display_name.clone()))?;
    if row.version.to_string() != version {
        return from_connection(core, server, &row);
    }
    core.store.mark_needs_reauth(&row.id, core.now()).await?;
    publish_connection(core, &row);
    audit::record(
        core,
        NewAuditEvent {
            actor: "system",
            action: "connection.needs_reauth",
            target: &row.id,
            remote_addr: "",
            detail: serde_json::json!({ "service": server.name, "reason": "refused after refresh" }).to_string(),
        },
    )
    .await;
    Err(CredentialError::NeedsReauth(server.display_name.clone()))
}

/// Refreshes a connection: the one replica that takes the lease asks the
/// provider; every other caller waits for the new version.
async fn refresh(core: &Core, server: &McpServer, row: ConnectionRow) -> Result<Credential, CredentialError> {
    let now = core.now();
    if core
        .store
        .take_refresh_lease(&row.id, row.version, lease_owner(), now, now + LEASE_SECONDS)
        .await?
    {
        return refresh_holding_lease(core, server, &row).await;
    }
    // Another refresh is under way (here or on another replica): wait for its result.
    let deadline = tokio::time::Instant::now() + WAIT_FOR_REFRESH;
    while tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let Some(current) = core.store.get_connection(&row.id).await? else {
            return Err(CredentialError::NotConnected(server.display_name.clone()));
        };
        if current.version != row.version {
            return from_connection(core, server, &current);
        }
    }
    Err(CredentialError::Unavailable {
        service: server.display_name.clone(),
        reason: "a token refresh did not finish in time".into(),
    })
}

async fn refresh_holding_lease(core: &Core, server: &McpServer, row: &ConnectionRow) -> Result<Credential, CredentialError> {
    let owner = row.owner();
    let service = row.service.as_str();
    let outcome = match &row.refresh_ct {
        None => Err(UpstreamError::InvalidGrant),
        Some(blob) => {
            let refresh_token = core
                .vault
                .open_secret(connections::aad("refresh_ct", &row.id, &owner, service), blob)?;
            match upstream::client(core, server).await {
                Ok(client) => {
                    let result = upstream::refresh(core, &client, &refresh_token, Some(resource_of(server))).await;
                    if matches!(result, Err(UpstreamError::InvalidClient)) && client.dynamic {
                        // Our dynamic registration is gone: register again next time.
                        let _ = upstream::forget_client(core, &client).await;
                    }
                    result.map(|tokens| (tokens, refresh_token))
                }
                Err(err) => Err(err),
            }
        }
    };
    let now = core.now();
    let (action, result) = match outcome {
        Ok((tokens, old_refresh)) => {
            let access = core
                .vault
                .seal_secret(connections::aad("access_ct", &row.id, &owner, service), &tokens.access_token)?;
            // Invariant: both ciphertexts of a row are sealed under the key that is
            // active now, so re-seal the kept refresh token when none came back.
            let refresh_token = tokens.refresh_token.unwrap_or(old_refresh);
            let refresh = core
                .vault
                .seal_secret(connections::aad("refresh_ct", &row.id, &owner, service), &refresh_token)?;
            let refreshed = Refreshed {
                access,
                refresh: Some(refresh),
                expires_at: tokens.expires_in.map(|s| now + s.max(0)),
            };
            backoff().succeeded(&row.id);
            if !core.store.store_refreshed(&row.id, lease_owner(), &refreshed, now).await? {
                // The lease expired and someone else refreshed meanwhile: use theirs.
                let current = core.store.get_connection(&row.id).await?;
                let current = current.ok_or_else(|| CredentialError::NotConnected(server.display_name.clone()))?;
                return from_connection(core, server, &current);
            }
            publish_connection(core, row);
            let current = core.store.get_connection(&row.id).await?;
            let current = current.ok_or_else(|| CredentialError::NotConnected(server.display_name.clone()))?;
            ("connection.refresh", from_connection(core, server, &current))
        }
        Err(UpstreamError::InvalidGrant | UpstreamError::InvalidClient) => {
            // The provider will not honour this grant again: the person must
            // authorize again. Nothing is deleted; the page shows "needs re-auth".
            // (After invalid_client a dynamic registration was forgotten above,
            // so that authorization registers Gatehouse again.)
            backoff().succeeded(&row.id);
            core.store.mark_needs_reauth(&row.id, now).await?;
            publish_connection(core, row);
            (
                "connection.needs_reauth",
                Err(CredentialError::NeedsReauth(server.display_name.clone())),
            )
        }
        Err(err) => {
            // Transient or unexpected: keep the token, and back off before this
            // replica asks the provider again.
            core.store.release_refresh_lease(&row.id, lease_owner()).await?;
            let wait = backoff().failed(&row.id);
            tracing::warn!(target: "gatehouse::credentials", service, error = %err, retry_in_s = wait.as_secs(), "upstream token refresh failed; keeping the token");
            (
                "connection.refresh_failed",
                Err(CredentialError::Unavailable {
                    service: server.display_name.clone(),
                    reason: err.to_string(),
                }),
            )
        }
    };
    audit::record(
        core,
        NewAuditEvent {
            actor: "system",
            action,
            target: &row.id,
            remote_addr: "",
            detail: serde_json::json!({ "service": service }).to_string(),
        },
    )
    .await;
    result
}

/// Tells the data planes a connection's credential changed.
fn publish_connection(core: &Core, row: &ConnectionRow) {
    if let Some(identity_id) = &row.identity_id {
        core.events.publish(crate::events::Invalidation::ConnectionChanged {
            identity_id: identity_id.clone(),
            service: row.service.clone(),
        });
    }
}
