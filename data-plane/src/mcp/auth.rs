//! Authentication of `/mcp`: the bearer token from the `Authorization` header,
//! resolved by the control plane to a [`Caller`]. Called by the `/mcp`
//! handlers themselves (not a middleware: one less boxed layer per call), so
//! an unknown path never costs a control-plane call. Tokens anywhere else (the query string) are refused (OAuth 2.1 §5.1.1,
//! SPEC-NOTES §2.4), and no other header ever names the caller.
//!
//! Resolved callers are cached under the SHA-256 of the token (never the
//! token itself) for at most the control plane's `cache_ttl_ms` and never past
//! the token's expiry, so a warm request makes no control-plane call.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::{HeaderMap, Uri, header};
use sha2::{Digest as _, Sha256};

use super::error::McpError;
use crate::AppState;
use crate::cp_client::{CpError, CpResultExt as _};
use crate::oauth::metadata::{MCP_SCOPE, resource, resource_metadata_url};
use crate::oauth::token::strip_scheme;
use crate::pb::{CallerInfo, ResolveAccessTokenRequest};

/// Longest bearer token sent to the control plane.
const MAX_TOKEN_LEN: usize = 4096;

/// Who is calling `/mcp`: what the bearer token resolved to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Caller {
    /// The grant (refresh-token family) of the token.
    pub(crate) grant_id: String,
    pub(crate) client_id: String,
    pub(crate) identity_id: String,
    pub(crate) identity_name: String,
    pub(crate) scopes: Vec<String>,
    /// Unix seconds.
    pub(crate) expires_at: i64,
    pub(crate) supports_url_elicitation: bool,
    /// The key of this caller in the cache: SHA-256 of its token.
    pub(crate) cache_key: TokenHash,
}

/// SHA-256 of a bearer token: what the caller cache is keyed by.
pub(crate) type TokenHash = [u8; 32];

/// The request's bearer token, kept for the rare step that must resolve the
/// caller afresh. Never cached, never printed.
#[derive(Clone)]
pub(crate) struct BearerToken(pub(crate) String);

impl std::fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BearerToken([redacted])")
    }
}

/// Resolves `token` at the control plane again (bypassing the cache) and
/// caches the answer; `None` when the control plane does not say.
pub(crate) async fn refresh_caller(state: &AppState, token: &BearerToken, cache_key: TokenHash) -> Option<Arc<Caller>> {
    let info = state
        .cp
        .tokens()
        .resolve_access_token(ResolveAccessTokenRequest {
            access_token: token.0.clone(),
        })
        .await
        .cp("ResolveAccessToken")
        .ok()?;
    let ttl = cache_ttl(&info, unix_now());
    let caller = Arc::new(Caller::new(info, cache_key));
    if state.mcp.cache_per_grant {
        state.mcp.callers.insert(cache_key, caller.clone(), ttl);
    }
    Some(caller)
}

impl Caller {
    fn new(info: CallerInfo, cache_key: TokenHash) -> Self {
        let identity = info.identity.unwrap_or_default();
        Self {
            cache_key,
            grant_id: info.grant_id,
            client_id: info.client_id,
            identity_id: identity.id,
            identity_name: identity.display_name,
            scopes: info.scopes,
            expires_at: info.expires_at,
            supports_url_elicitation: info.supports_url_elicitation,
        }
    }
}

/// Why no token could be read from a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BearerError {
    /// `access_token` in the query string.
    InQuery,
    /// No `Authorization: Bearer`.
    Missing,
    /// More than one Authorization header.
    Several,
    /// Not RFC 6750 `b64token` syntax: cannot be a token Gatehouse issued.
    Malformed,
}

/// The bearer token of a request.
pub(crate) fn bearer_token(query: Option<&str>, headers: &HeaderMap) -> Result<String, BearerError> {
    // Security: OAuth 2.1 §5.1.1, a token in the URL ends up in logs and
    // Referer headers; it is refused even when a header token is present.
    if let Some(query) = query
        && url::form_urlencoded::parse(query.as_bytes()).any(|(name, _)| name == "access_token")
    {
        return Err(BearerError::InQuery);
    }
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let value = match (values.next(), values.next()) {
        (None, _) => return Err(BearerError::Missing),
        (Some(_), Some(_)) => return Err(BearerError::Several),
        (Some(value), None) => value,
    };
    let value = value.to_str().map_err(|_| BearerError::Malformed)?;
    // Another scheme (Basic, …) is no credential for this resource: challenge.
    let token = strip_scheme(value, "Bearer").ok_or(BearerError::Missing)?.trim_end();
    let body = token.trim_end_matches('=');
    let syntax_ok = !body.is_empty()
        && token.len() <= MAX_TOKEN_LEN
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/'));
    if !syntax_ok {
        return Err(BearerError::Malformed);
    }
    Ok(token.to_owned())
}

/// Whether a token bound to `bound` may be used at `expected` (RFC 8707):
/// scheme and host case and a trailing slash aside, or the bare issuer.
pub(crate) fn same_resource(bound: &str, expected: &str, issuer: &str) -> bool {
    let normalize = |uri: &str| match url::Url::parse(uri) {
        // `Url` lower-cases scheme and host; the path is compared as is.
        Ok(url) => url.as_str().trim_end_matches('/').to_owned(),
        Err(_) => uri.trim_end_matches('/').to_owned(),
    };
    let bound = normalize(bound);
    bound == normalize(expected) || bound == normalize(issuer)
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// How long a resolved caller may be cached: the control plane's bound, and
/// never past the token's expiry.
fn cache_ttl(info: &CallerInfo, now: i64) -> Duration {
    let until_expiry = u64::try_from(info.expires_at.saturating_sub(now)).unwrap_or(0);
    Duration::from_millis(u64::from(info.cache_ttl_ms)).min(Duration::from_secs(until_expiry))
}

/// Authenticates a `/mcp` request: who calls, and with which token.
pub(crate) async fn authenticate(
    state: &AppState,
    uri: &Uri,
    headers: &HeaderMap,
) -> Result<(Arc<Caller>, BearerToken), McpError> {
    let public_url = &state.config.public_url;
    // Built only on the way to a refusal: the happy path needs no URL.
    let resource_metadata = || resource_metadata_url(public_url);
    let token = match bearer_token(uri.query(), headers) {
        Ok(token) => token,
        Err(BearerError::Missing) => {
            return Err(McpError::NoCredentials {
                resource_metadata: resource_metadata(),
            });
        }
        Err(BearerError::Malformed) => {
            return Err(McpError::InvalidToken {
                resource_metadata: resource_metadata(),
            });
        }
        Err(BearerError::InQuery) => {
            return Err(McpError::InvalidRequest {
                resource_metadata: resource_metadata(),
                description: "access tokens are accepted only in the Authorization header",
            });
        }
        Err(BearerError::Several) => {
            return Err(McpError::InvalidRequest {
                resource_metadata: resource_metadata(),
                description: "send exactly one Authorization header",
            });
        }
    };
    let cache_key: TokenHash = Sha256::digest(token.as_bytes()).into();
    // `cache_callers_and_credentials = false` (benchmarks): always ask the control plane.
    if state.mcp.cache_per_grant
        && let Some(caller) = state.mcp.callers.get(&cache_key)
    {
        state.mcp.cache_counts.caller.hit();
        return Ok((caller, BearerToken(token)));
    }
    state.mcp.cache_counts.caller.miss();
    let info = match state
        .cp
        .tokens()
        .resolve_access_token(ResolveAccessTokenRequest {
            access_token: token.clone(),
        })
        .await
        .cp("ResolveAccessToken")
    {
        Ok(info) => info,
        // Any refusal means the token is not one to honour (RFC 6750 §3.1).
        Err(CpError::Refused { .. }) => {
            return Err(McpError::InvalidToken {
                resource_metadata: resource_metadata(),
            });
        }
        Err(CpError::Unavailable) => return Err(McpError::Unavailable),
        Err(CpError::Internal) => return Err(McpError::Internal),
    };
    // Expiry is the control plane's to judge (its clock); it resolves only live tokens.
    // Security: RFC 8707 §2, SPEC-NOTES §2.4: only tokens issued for this
    // resource are accepted (the control plane binds each token to one).
    if !info.resource.is_empty() && !same_resource(&info.resource, &resource(public_url), public_url) {
        tracing::warn!(target: "gatehouse::security", reason = "audience_mismatch", grant_id = %info.grant_id, "token bound to another resource");
        return Err(McpError::InvalidToken {
            resource_metadata: resource_metadata(),
        });
    }
    if !info.scopes.iter().any(|scope| scope == MCP_SCOPE) {
        return Err(McpError::InsufficientScope {
            resource_metadata: resource_metadata(),
        });
    }
    // Order: only a caller that passed every check above is cached.
    let ttl = cache_ttl(&info, unix_now());
    let caller = Arc::new(Caller::new(info, cache_key));
    if state.mcp.cache_per_grant {
        state.mcp.callers.insert(cache_key, caller.clone(), ttl);
    }
    Ok((caller, BearerToken(token)))
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    #[test]
    fn a_token_in_the_query_string_is_refused_even_with_a_header() {
        assert_eq!(
            bearer_token(Some("access_token=abc"), &headers(&[])),
            Err(BearerError::InQuery)
        );
        assert_eq!(
            bearer_token(Some("x=1&access_token="), &headers(&["Bearer abc"])),
            Err(BearerError::InQuery)
        );
        assert_eq!(
            bearer_token(Some("x=access_token"), &headers(&["Bearer abc"])),
            Ok("abc".into())
        );
    }

    #[test]
    fn bearer_tokens_are_read_from_one_authorization_header() {
        assert_eq!(
            bearer_token(None, &headers(&["Bearer gh_at_abc-._~+/=="])),
            Ok("gh_at_abc-._~+/==".into())
        );
        assert_eq!(bearer_token(None, &headers(&["bearer abc"])), Ok("abc".into()));
        assert_eq!(bearer_token(None, &headers(&[])), Err(BearerError::Missing));
        assert_eq!(bearer_token(None, &headers(&["Basic YTpi"])), Err(BearerError::Missing));
        assert_eq!(
            bearer_token(None, &headers(&["Bearer a", "Bearer b"])),
            Err(BearerError::Several)
        );
        for bad in ["Bearer ", "Bearer a b", "Bearer a\"b", "Bearer ===", "Bearer a,b"] {
            assert_eq!(bearer_token(None, &headers(&[bad])), Err(BearerError::Malformed), "{bad:?}");
        }
    }

    #[test]
    fn callers_are_cached_no_longer_than_the_token_lives() {
        let info = |cache_ttl_ms, expires_at| CallerInfo {
            cache_ttl_ms,
            expires_at,
            ..Default::default()
        };
        assert_eq!(cache_ttl(&info(60_000, 1_000 + 3600), 1_000), Duration::from_secs(60));
        assert_eq!(cache_ttl(&info(60_000, 1_000 + 5), 1_000), Duration::from_secs(5));
        assert_eq!(cache_ttl(&info(60_000, 900), 1_000), Duration::ZERO);
    }

    #[test]
    fn resources_compare_without_case_or_trailing_slash() {
        let issuer = "https://gw.example.com";
        let expected = "https://gw.example.com/mcp";
        for bound in [
            "https://gw.example.com/mcp",
            "HTTPS://GW.example.com/mcp/",
            "https://gw.example.com",
            "https://gw.example.com/",
        ] {
            assert!(same_resource(bound, expected, issuer), "{bound}");
        }
        for bound in [
            "https://evil.example.com/mcp",
            "https://gw.example.com/other",
            "https://gw.example.com/MCP",
        ] {
            assert!(!same_resource(bound, expected, issuer), "{bound}");
        }
    }
}
