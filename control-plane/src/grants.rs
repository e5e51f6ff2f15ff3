//! Grants: what a client holds after consent. Codes are exchanged once (PKCE),
//! refresh tokens rotate on every use and a reused one revokes its whole family,
//! clients revoke what they hold (RFC 7009), and access tokens resolve to their
//! caller for `/mcp`.
//!
//! Implements the token endpoint of OAuth 2.1 §3.2 and §4.1.3 / §4.3 (RFC 6749
//! §5), PKCE verification (RFC 7636 §4.6), resource binding (RFC 8707 §2.2),
//! refresh-token rotation and reuse detection (RFC 9700 §4.14.2) and
//! revocation (RFC 7009 §2). Never keeps a raw token: every code and token is
//! generated here, answered once and stored as its SHA-256.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};
use url::Url;

use crate::clients::{self, ClientError, PresentedClient};
use crate::events::Invalidation;
use crate::secret::{self, Secret, prefix};
use crate::store::StoreError;
use crate::store::audit::NewAuditEvent;
use crate::store::grants::{NewGrant, NewToken, Redemption, Rotation, RotationOutcome};
use crate::store::identities::IdentityRow;
use crate::{Core, audit};

/// The one scope Gatehouse issues.
pub const MCP_SCOPE: &str = "mcp";

#[derive(Debug, thiserror::Error)]
pub enum GrantError {
    /// Client authentication failed (RFC 6749 §5.2 invalid_client).
    #[error("client authentication failed")]
    InvalidClient,
    /// RFC 6749 §5.2 invalid_grant: the code or refresh token is invalid,
    /// expired, revoked, used, or bound to something else.
    #[error("{0}")]
    InvalidGrant(&'static str),
    #[error("{0}")]
    InvalidRequest(&'static str),
    #[error("the requested scope exceeds what was granted")]
    InvalidScope,
    #[error("resource must be this gateway's MCP endpoint, as in the authorization request")]
    InvalidTarget,
    #[error("{0}")]
    UnauthorizedClient(&'static str),
    /// An access token that does not resolve (unknown, expired, revoked).
    #[error("the access token is invalid, expired or revoked")]
    InvalidAccessToken,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<ClientError> for GrantError {
    fn from(err: ClientError) -> Self {
        match err {
            ClientError::Store(e) => Self::Store(e),
            _ => Self::InvalidClient,
        }
    }
}

// === Names: issuer, resource, scope, PKCE values ===

/// The issuer: the public URL without a trailing slash (RFC 8414 §2, RFC 9207 §2).
pub fn issuer(core: &Core) -> String {
    core.config.public_url.trim_end_matches('/').to_string()
}

/// The canonical resource (audience) of every token: `{issuer}/mcp`.
pub fn resource(core: &Core) -> String {
    format!("{}/mcp", issuer(core))
}

/// Checks RFC 8707 resource values: each must be this gateway's resource after
/// normalising scheme and host case and a trailing slash, or the bare issuer.
/// Returns the canonical resource, also when none was sent.
pub fn check_resources(core: &Core, resources: &[String]) -> Option<String> {
    let canonical = resource(core);
    let accepted = [normalise_resource(&canonical), normalise_resource(&issuer(core))];
    resources
        .iter()
        .all(|r| normalise_resource(r).is_some_and(|n| accepted.iter().any(|a| a.as_deref() == Some(n.as_str()))))
        .then_some(canonical)
}

/// scheme://host[:port]/path without a trailing slash, or `None` for what is
/// not an absolute http(s) URI or carries a fragment, query or userinfo
/// (RFC 8707 §2: no fragment; a query is not how Gatehouse names itself).
fn normalise_resource(raw: &str) -> Option<String> {
    let url = Url::parse(raw).ok()?;
    if !matches!(url.scheme(), "http" | "https")
        || url.fragment().is_some()
        || url.query().is_some()
        || !url.username().is_empty()
        || url.password().is_some()
    {
        return None;
    }
    let host = url.host_str()?;
    let port = url.port().map(|p| format!(":{p}")).unwrap_or_default();
    Some(format!("{}://{host}{port}{}", url.scheme(), url.path().trim_end_matches('/')))
}

/// The scope granted for a requested one: `mcp` when asked for or when nothing
/// was asked; `""` for `offline_access` alone; `None` when a requested scope is
/// not one Gatehouse offers (invalid_scope).
pub fn granted_scope(requested: &str) -> Option<String> {
    let requested: Vec<&str> = requested.split_whitespace().collect();
    if !requested.iter().all(|s| clients::SUPPORTED_SCOPES.contains(s)) {
        return None;
    }
    if requested.is_empty() {
        return Some(MCP_SCOPE.to_string());
    }
    // offline_access is accepted and not recorded (refresh tokens come with the
    // refresh_token grant type). A request for it alone grants no `mcp`, and
    // `/mcp` then answers 403 insufficient_scope, so the client steps up.
    let granted = if requested.contains(&MCP_SCOPE) { MCP_SCOPE } else { "" };
    Some(granted.to_string())
}

/// Whether `value` is a PKCE code verifier or S256 challenge: 43-128 characters
/// of `[A-Za-z0-9-._~]` (RFC 7636 §4.1, §4.2).
pub fn is_pkce_value(value: &str) -> bool {
    (43..=128).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

/// BASE64URL-NOPAD(SHA256(verifier)) (RFC 7636 §4.2).
pub fn s256_challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

// === Token endpoint ===

/// Tokens for the client, answered once.
#[derive(Debug)]
pub struct TokenSet {
    pub access_token: Secret,
    /// Seconds until the access token expires.
    pub expires_in: i64,
    /// Issued to clients that registered the refresh_token grant.
    pub refresh_token: Option<Secret>,
    /// Granted scope, space-separated.
    pub scope: String,
}

/// grant_type=authorization_code, as parsed by the data plane.
#[derive(Debug)]
pub struct CodeExchange {
    pub client: PresentedClient,
    pub code: Secret,
    /// Empty when absent.
    pub code_verifier: Secret,
    /// Empty when absent.
    pub redirect_uri: String,
    pub resources: Vec<String>,
    pub remote_addr: String,
}

/// grant_type=refresh_token, as parsed by the data plane.
#[derive(Debug)]
pub struct RefreshRequest {
    pub client: PresentedClient,
    pub refresh_token: Secret,
    /// Optional narrower scope (empty = as granted).
    pub scope: String,
    pub resources: Vec<String>,
    pub remote_addr: String,
}

/// Exchanges an authorization code (OAuth 2.1 §4.1.3).
pub async fn exchange_code(core: &Core, request: CodeExchange) -> Result<TokenSet, GrantError> {
    let client = clients::authenticate(core, &request.client).await?;
    if !client.allows_grant(clients::GRANT_AUTHORIZATION_CODE) {
        return Err(GrantError::UnauthorizedClient(
            "the client did not register the authorization_code grant",
        ));
    }
    const BAD_CODE: &str = "the authorization code is invalid, expired or was already used";
    let code_hash = request.code.hash();
    let Some(code) = core.store.get_auth_code(&code_hash).await? else {
        return Err(GrantError::InvalidGrant(BAD_CODE));
    };
    let now = core.now();
    if code.expires_at <= now {
        return Err(GrantError::InvalidGrant(BAD_CODE));
    }
    // Order: every binding of the code is checked before it is consumed, and a
    // replay revokes what the code issued only when the replay is otherwise
    // valid (OAuth 2.1 §4.1.3), so a guessed or stolen code without its verifier
    // can neither burn the code nor revoke the legitimate client's grant.
    // Security: OAuth 2.1 §4.1.3, the code was issued to this client.
    if code.client_id != client.client_id {
        tracing::warn!(target: "gatehouse::security", reason = "code presented by another client", client_id = %client.client_id, "code exchange refused");
        return Err(GrantError::InvalidGrant(BAD_CODE));
    }
    // Security: OAuth 2.1 §4.1.3, the code is bound to the redirect URI it was
    // sent to. When the authorization request named redirect_uri, the token
    // request must name the identical one: a missing value is refused like a
    // different one, so a code that leaked from a redirect cannot be redeemed by
    // leaving the parameter out. Only when /authorize omitted it (a client with
    // one registered URI) may /token omit it too, and a value sent must still match.
    let redirect_uri_bound = if request.redirect_uri.is_empty() {
        !code.redirect_uri_sent
    } else {
        request.redirect_uri == code.redirect_uri
    };
    if !redirect_uri_bound {
        tracing::warn!(target: "gatehouse::security", reason = "redirect_uri missing or different from the authorization request", client_id = %client.client_id, "code exchange refused");
        return Err(GrantError::InvalidGrant(
            "redirect_uri is missing or differs from the authorization request's",
        ));
    }
    // Security: RFC 7636 §4.6 and RFC 9700 §4.8, every code carries a challenge,
    // so a request without a verifier is a downgrade attempt.
    let verifier = request.code_verifier.expose();
    if verifier.is_empty() {
        return Err(GrantError::InvalidRequest("code_verifier is required (PKCE)"));
    }
    if !is_pkce_value(verifier) || !secret::constant_time_eq(s256_challenge(verifier).as_bytes(), code.code_challenge.as_bytes())
    {
        tracing::warn!(target: "gatehouse::security", reason = "PKCE verifier does not match", client_id = %client.client_id, "code exchange refused");
        return Err(GrantError::InvalidGrant("PKCE verification failed"));
    }
    // Security: RFC 8707 §2.2, a resource sent here must be the one the code is bound to.
    if check_resources(core, &request.resources).as_deref() != Some(code.resource.as_str()) {
        return Err(GrantError::InvalidTarget);
    }
    if code.consumed_at.is_some() {
        return Err(code_replayed(core, &client.client_id, &code_hash, &request.remote_addr).await);
    }
    match core.store.get_identity(&code.identity_id).await? {
        Some(identity) if identity.revoked_at.is_none() => {}
        _ => return Err(GrantError::InvalidGrant(BAD_CODE)),
    }

    // By this point the client, the code and every binding are verified.
    let grant_id = secret::random_id("grt_");
    let access = secret::generate(prefix::ACCESS_TOKEN);
    let refresh = client
        .allows_grant(clients::GRANT_REFRESH_TOKEN)
        .then(|| secret::generate(prefix::REFRESH_TOKEN));
    let (access_hash, refresh_hash) = (access.hash(), refresh.as_ref().map(Secret::hash));
    let idle = core.config.lifetimes.refresh_token_idle;
    let redeemed = core
        .store
        .redeem_auth_code(
            &Redemption {
                code_hash: &code_hash,
                grant: NewGrant {
                    id: &grant_id,
                    client_id: &client.client_id,
                    identity_id: &code.identity_id,
                    scope: &code.scope,
                    resource: &code.resource,
                    idle_expires_at: now + idle,
                },
                access: NewToken {
                    hash: &access_hash,
                    expires_at: now + core.config.lifetimes.access_token,
                },
                refresh: refresh_hash.as_deref().map(|hash| NewToken {
                    hash,
                    expires_at: now + idle,
                }),
                client_expires_at: now + clients::registration_ttl(core),
            },
            now,
        )
        .await?;
    if !redeemed {
        // A concurrent exchange of the same code won the compare-and-swap.
        return Err(code_replayed(core, &client.client_id, &code_hash, &request.remote_addr).await);
    }
    audit::record(
        core,
        NewAuditEvent {
            actor: &client_actor(&client.client_id),
            action: "token.issue",
            target: &grant_id,
            remote_addr: &request.remote_addr,
            detail: serde_json::json!({
                "identity_id": code.identity_id,
                "scope": code.scope,
                "refresh_token": refresh.is_some(),
            })
            .to_string(),
        },
    )
    .await;
    Ok(TokenSet {
        access_token: access,
        expires_in: core.config.lifetimes.access_token,
        refresh_token: refresh,
        scope: code.scope,
    })
}

/// A code was presented again: revoke the grant it produced (OAuth 2.1 §4.1.3,
/// "Reuse of Authorization Codes") and refuse.
async fn code_replayed(core: &Core, client_id: &str, code_hash: &str, remote_addr: &str) -> GrantError {
    let grant_id = match core.store.get_auth_code(code_hash).await {
        Ok(code) => code.and_then(|c| c.grant_id),
        Err(err) => return err.into(),
    };
    tracing::warn!(target: "gatehouse::security", reason = "authorization code replayed", client_id, grant_id = grant_id.as_deref().unwrap_or(""), "revoking what the code issued");
    if let Some(grant_id) = &grant_id {
        core.events.publish(Invalidation::GrantRevoked(grant_id.to_string()));
        if let Err(err) = core.store.revoke_grant(grant_id, "code_replayed", core.now()).await {
            return err.into();
        }
        audit::record(
            core,
            NewAuditEvent {
                actor: &client_actor(client_id),
                action: "token.reuse_detected",
                target: grant_id,
                remote_addr,
                detail: serde_json::json!({ "what": "authorization_code" }).to_string(),
            },
        )
        .await;
    }
    GrantError::InvalidGrant("the authorization code is invalid, expired or was already used")
}

/// Rotates a refresh token (OAuth 2.1 §4.3, RFC 9700 §4.14.2).
pub async fn refresh(core: &Core, request: RefreshRequest) -> Result<TokenSet, GrantError> {
    const BAD_TOKEN: &str = "the refresh token is invalid, expired or revoked";
    let client = clients::authenticate(core, &request.client).await?;
    if !client.allows_grant(clients::GRANT_REFRESH_TOKEN) {
        return Err(GrantError::UnauthorizedClient(
            "the client did not register the refresh_token grant",
        ));
    }
    let old_hash = request.refresh_token.hash();
    let Some((token, grant)) = core.store.find_refresh_token(&old_hash).await? else {
        return Err(GrantError::InvalidGrant(BAD_TOKEN));
    };
    // Security: OAuth 2.1 §4.3.1, a refresh token is bound to the client it was issued to.
    if grant.client_id != client.client_id {
        tracing::warn!(target: "gatehouse::security", reason = "refresh token presented by another client", client_id = %client.client_id, "refresh refused");
        return Err(GrantError::InvalidGrant(BAD_TOKEN));
    }
    // Security: RFC 9700 §4.14.2, a rotated refresh token presented again means
    // two parties hold the family; the whole grant is revoked.
    if token.used_at.is_some() {
        return Err(refresh_reused(core, &client.client_id, &grant.id, &request.remote_addr).await);
    }
    let now = core.now();
    if grant.revoked_at.is_some() || token.expires_at <= now || grant.idle_expires_at <= now {
        return Err(GrantError::InvalidGrant(BAD_TOKEN));
    }
    match core.store.get_identity(&grant.identity_id).await? {
        Some(identity) if identity.revoked_at.is_none() => {}
        _ => return Err(GrantError::InvalidGrant(BAD_TOKEN)),
    }
    // Security: RFC 6749 §6, a refresh may narrow the scope, never widen it
    // (offline_access is accepted and ignored, as at /authorize).
    let granted: Vec<&str> = grant.scope.split_whitespace().collect();
    let requested: Vec<&str> = request.scope.split_whitespace().filter(|s| *s != "offline_access").collect();
    if requested.iter().any(|s| !granted.contains(s)) {
        return Err(GrantError::InvalidScope);
    }
    let scope = if requested.is_empty() {
        grant.scope.clone()
    } else {
        requested.join(" ")
    };
    // Security: RFC 8707 §2.2, the resource stays the one consented to.
    if check_resources(core, &request.resources).as_deref() != Some(grant.resource.as_str()) {
        return Err(GrantError::InvalidTarget);
    }

    let access = secret::generate(prefix::ACCESS_TOKEN);
    let refresh = secret::generate(prefix::REFRESH_TOKEN);
    let (access_hash, refresh_hash) = (access.hash(), refresh.hash());
    let idle = core.config.lifetimes.refresh_token_idle;
    let outcome = core
        .store
        .rotate_refresh_token(
            &Rotation {
                old_hash: &old_hash,
                grant_id: &grant.id,
                client_id: &client.client_id,
                access: NewToken {
                    hash: &access_hash,
                    expires_at: now + core.config.lifetimes.access_token,
                },
                refresh: NewToken {
                    hash: &refresh_hash,
                    expires_at: now + idle,
                },
                idle_expires_at: now + idle,
                client_expires_at: now + clients::registration_ttl(core),
            },
            now,
        )
        .await?;
    match outcome {
        RotationOutcome::Rotated => {}
        RotationOutcome::AlreadyUsed => {
            return Err(refresh_reused(core, &client.client_id, &grant.id, &request.remote_addr).await);
        }
        RotationOutcome::GrantRevoked => return Err(GrantError::InvalidGrant(BAD_TOKEN)),
    }
    audit::record(
        core,
        NewAuditEvent {
            actor: &client_actor(&client.client_id),
            action: "token.refresh",
            target: &grant.id,
            remote_addr: &request.remote_addr,
            detail: serde_json::json!({ "scope": scope }).to_string(),
        },
    )
    .await;
    Ok(TokenSet {
        access_token: access,
        expires_in: core.config.lifetimes.access_token,
        refresh_token: Some(refresh),
        scope,
    })
}

async fn refresh_reused(core: &Core, client_id: &str, grant_id: &str, remote_addr: &str) -> GrantError {
    tracing::warn!(target: "gatehouse::security", reason = "refresh token reused", client_id, grant_id, "revoking the refresh-token family");
    core.events.publish(Invalidation::GrantRevoked(grant_id.to_string()));
    if let Err(err) = core.store.revoke_grant(grant_id, "refresh_token_reused", core.now()).await {
        return err.into();
    }
    audit::record(
        core,
        NewAuditEvent {
            actor: &client_actor(client_id),
            action: "token.reuse_detected",
            target: grant_id,
            remote_addr,
            detail: serde_json::json!({ "what": "refresh_token" }).to_string(),
        },
    )
    .await;
    GrantError::InvalidGrant("the refresh token is invalid, expired or revoked")
}

// === Revocation ===

/// /revoke, as parsed by the data plane.
#[derive(Debug)]
pub struct RevokeRequest {
    pub client: PresentedClient,
    pub token: Secret,
    /// `access_token`, `refresh_token` or empty; only the search order depends on it.
    pub token_type_hint: String,
    pub remote_addr: String,
}

/// Revokes a token the client holds (RFC 7009 §2.1). Unknown tokens, and tokens
/// of other clients, succeed without effect (RFC 7009 §2.2), so the answer
/// reveals nothing about tokens the caller does not hold.
pub async fn revoke(core: &Core, request: RevokeRequest) -> Result<(), GrantError> {
    let client = clients::authenticate(core, &request.client).await?;
    let hash = request.token.hash();
    // RFC 7009 §2.1: a wrong hint does not stop the search.
    let access_first = request.token_type_hint == "access_token";
    for look_for_access in [access_first, !access_first] {
        let found = if look_for_access {
            core.store.find_access_token(&hash).await?
        } else {
            core.store.find_refresh_token(&hash).await?
        };
        let Some((_, grant)) = found else { continue };
        // Security: RFC 7009 §2.1, only the client the token was issued to may revoke it.
        if grant.client_id != client.client_id {
            tracing::warn!(target: "gatehouse::security", reason = "revocation of another client's token", client_id = %client.client_id, "revocation ignored");
            return Ok(());
        }
        let what = if look_for_access {
            core.store.delete_access_token(&hash).await?;
            "access_token"
        } else {
            // RFC 7009 §2.1: revoking a refresh token ends its grant and every access token of it.
            core.store.revoke_grant(&grant.id, "revoked_by_client", core.now()).await?;
            core.events.publish(Invalidation::GrantRevoked(grant.id.clone()));
            "refresh_token"
        };
        audit::record(
            core,
            NewAuditEvent {
                actor: &client_actor(&client.client_id),
                action: "token.revoke",
                target: &grant.id,
                remote_addr: &request.remote_addr,
                detail: serde_json::json!({ "token_type": what }).to_string(),
            },
        )
        .await;
        return Ok(());
    }
    Ok(())
}

// === Resolving access tokens ===

/// Who a `/mcp` request's bearer token acts for.
#[derive(Debug, Clone)]
pub struct Caller {
    pub grant_id: String,
    pub client_id: String,
    pub identity: IdentityRow,
    pub scopes: Vec<String>,
    pub resource: String,
    pub expires_at: i64,
    /// How long a data plane may cache this answer.
    pub cache_ttl_ms: u32,
    pub supports_url_elicitation: bool,
}

/// Resolves an access token: unknown, expired, of a revoked grant or of a
/// revoked identity → `InvalidAccessToken`.
pub async fn resolve(core: &Core, access_token: &Secret) -> Result<Caller, GrantError> {
    let Some(token) = core.store.resolve_access_token(&access_token.hash()).await? else {
        return Err(GrantError::InvalidAccessToken);
    };
    let now = core.now();
    if token.expires_at <= now || token.grant_revoked_at.is_some() || token.identity.revoked_at.is_some() {
        return Err(GrantError::InvalidAccessToken);
    }
    // A data plane may cache the answer no longer than the configured bound and
    // never past the token's expiry; revocations also reach it as events.
    let ttl_seconds = core.config.lifetimes.caller_cache.min(token.expires_at - now).max(0);
    Ok(Caller {
        grant_id: token.grant_id,
        client_id: token.client_id,
        identity: token.identity,
        scopes: token.scope.split_whitespace().map(String::from).collect(),
        resource: token.resource,
        expires_at: token.expires_at,
        cache_ttl_ms: u32::try_from(ttl_seconds.saturating_mul(1000)).unwrap_or(u32::MAX),
        supports_url_elicitation: token.url_elicitation,
    })
}

/// The audit actor for a client.
pub fn client_actor(client_id: &str) -> String {
    format!("client:{client_id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s256_matches_rfc_7636_appendix_b() {
        assert_eq!(
            s256_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
        assert!(is_pkce_value("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"));
        assert!(!is_pkce_value("short"));
        assert!(!is_pkce_value(&"a".repeat(129)));
        assert!(!is_pkce_value(&format!("{}+", "a".repeat(43))));
    }

    #[test]
    fn scopes() {
        assert_eq!(granted_scope("").as_deref(), Some("mcp"));
        assert_eq!(granted_scope("mcp offline_access").as_deref(), Some("mcp"));
        assert_eq!(granted_scope("offline_access").as_deref(), Some(""));
        assert_eq!(granted_scope("mcp admin"), None);
    }

    #[test]
    fn resources_normalise_case_and_trailing_slash() {
        let norm = |s: &str| normalise_resource(s);
        assert_eq!(norm("HTTPS://GW.example.com/mcp/"), norm("https://gw.example.com/mcp"));
        assert_eq!(norm("https://gw.example.com:443/mcp"), norm("https://gw.example.com/mcp"));
        assert_eq!(norm("https://gw.example.com/"), norm("https://gw.example.com"));
        assert_ne!(norm("https://gw.example.com/MCP"), norm("https://gw.example.com/mcp"));
        assert_eq!(norm("https://gw.example.com/mcp#x"), None);
        assert_eq!(norm("https://gw.example.com/mcp?x=1"), None);
    }
}

/// Properties of the resource, scope and PKCE parsers over generated input
/// (SECURITY.md): they never panic, PKCE values are exactly RFC 7636's
/// alphabet and lengths, and resource normalisation is stable.
#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::*;

    /// RFC 7636 §4.1, written out independently of `is_pkce_value`.
    fn spec_pkce(value: &str) -> bool {
        let length = value.chars().count();
        (43..=128).contains(&length)
            && value
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_lowercase() || c.is_ascii_digit() || "-._~".contains(c))
    }

    fn resource_like() -> impl Strategy<Value = String> {
        let scheme = prop::sample::select(vec!["http", "https", "HTTPS", "HtTp", "ftp", "javascript", ""]);
        let host = prop::sample::select(vec![
            "gw.example.com",
            "GW.Example.COM",
            "127.0.0.1",
            "[::1]",
            "",
            "a b",
            "u@gw",
        ]);
        let port = prop::option::of(prop::sample::select(vec![80u32, 443, 8443, 0, 70_000]));
        let path = "(/[a-zA-Z0-9%._~-]{0,6}){0,3}/?";
        let tail = prop::option::of("[?#][a-z=]{0,4}");
        (scheme, host, port, path, tail).prop_map(|(scheme, host, port, path, tail)| {
            let port = port.map(|p| format!(":{p}")).unwrap_or_default();
            format!("{scheme}://{host}{port}{path}{}", tail.unwrap_or_default())
        })
    }

    fn any_resource() -> impl Strategy<Value = String> {
        prop_oneof![4 => resource_like(), 1 => any::<String>()]
    }

    proptest! {
        #[test]
        fn pkce_values_are_exactly_rfc_7636s(value in prop_oneof![
            "[A-Za-z0-9._~-]{40,131}",
            "[A-Za-z0-9._~+/= -]{40,131}",
            any::<String>(),
        ]) {
            prop_assert_eq!(is_pkce_value(&value), spec_pkce(&value), "{:?}", value);
        }

        #[test]
        fn the_s256_challenge_of_a_verifier_is_a_pkce_value_of_43_characters(verifier in "[A-Za-z0-9._~-]{43,128}") {
            let challenge = s256_challenge(&verifier);
            prop_assert_eq!(challenge.len(), 43);
            prop_assert!(is_pkce_value(&challenge));
            prop_assert_ne!(challenge, verifier, "the challenge never reveals the verifier");
        }

        #[test]
        fn normalised_resources_are_stable_and_carry_no_query_fragment_or_userinfo(raw in any_resource()) {
            if let Some(normal) = normalise_resource(&raw) {
                let again = normalise_resource(&normal);
                prop_assert_eq!(again.as_deref(), Some(normal.as_str()), "idempotent");
                prop_assert!(normal.starts_with("http://") || normal.starts_with("https://"), "{normal}");
                prop_assert!(!normal.contains(['?', '#', '@']), "{normal}");
                prop_assert!(!normal.ends_with('/'), "{normal}");
            }
        }

        #[test]
        fn case_of_scheme_and_host_and_a_trailing_slash_do_not_change_the_resource(
            host in "[a-z]{1,8}(\\.[a-z]{1,8}){0,2}",
            path in "(/[a-z0-9]{1,6}){0,3}",
            secure in any::<bool>(),
            slash in any::<bool>(),
        ) {
            let scheme = if secure { "https" } else { "http" };
            let canonical = normalise_resource(&format!("{scheme}://{host}{path}"));
            prop_assert!(canonical.is_some());
            let varied = format!("{}://{}{path}{}", scheme.to_ascii_uppercase(), host.to_ascii_uppercase(), if slash { "/" } else { "" });
            prop_assert_eq!(normalise_resource(&varied), canonical);
        }

        #[test]
        fn a_granted_scope_is_mcp_or_nothing(requested in prop_oneof!["[a-z_ ]{0,40}", any::<String>()]) {
            match granted_scope(&requested) {
                None => prop_assert!(requested.split_whitespace().any(|s| !clients::SUPPORTED_SCOPES.contains(&s))),
                Some(scope) => prop_assert!(scope == MCP_SCOPE || scope.is_empty(), "{scope:?}"),
            }
        }
    }
}

// === Administration ===

/// Which grants an administrator revokes.
#[derive(Debug, Clone)]
pub enum GrantSelector {
    Grant(String),
    Identity(String),
    Client(String),
}

/// Revokes every active grant the selector names; returns how many. Data
/// planes drop them at once (`WatchEvents`).
pub async fn revoke_selected(core: &Core, selector: &GrantSelector, actor: &str, remote_addr: &str) -> Result<u64, StoreError> {
    let ids: Vec<String> = match selector {
        GrantSelector::Grant(id) => vec![id.clone()],
        GrantSelector::Identity(id) => core
            .store
            .list_grants(Some(id), None, false)
            .await?
            .into_iter()
            .map(|g| g.id)
            .collect(),
        GrantSelector::Client(id) => core
            .store
            .list_grants(None, Some(id), false)
            .await?
            .into_iter()
            .map(|g| g.id)
            .collect(),
    };
    let mut revoked = 0;
    for id in ids {
        if core.store.revoke_grant(&id, "revoked_by_admin", core.now()).await? {
            revoked += 1;
            core.events.publish(Invalidation::GrantRevoked(id.clone()));
            crate::audit::record(
                core,
                NewAuditEvent {
                    actor,
                    action: "grant.revoke",
                    target: &id,
                    remote_addr,
                    detail: String::new(),
                },
            )
            .await;
        }
    }
    Ok(revoked)
}
