//! In-memory state of the demo provider: registered clients, pending consent pages,
//! authorization codes, grants and their access and refresh tokens.
//!
//! Secrets (client secrets, CSRF tokens, codes, tokens) are keyed by their SHA-256, so the
//! maps never hold one in plaintext. A grant is one approval (client, account, scope, resource);
//! its tokens die with it.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::{random_token, sha256};

pub(crate) type Hash = [u8; 32];

/// How long a consent page stays usable.
pub(crate) const CONSENT_TTL: Duration = Duration::from_secs(10 * 60);
/// How long an authorization code stays redeemable.
pub(crate) const CODE_TTL: Duration = Duration::from_secs(5 * 60);
/// Bounds on what unauthenticated callers can make us keep.
pub(crate) const MAX_CLIENTS: usize = 10_000;
pub(crate) const MAX_CONSENTS: usize = 10_000;

/// How a client authenticates at `/token` and `/revoke` (RFC 7591 `token_endpoint_auth_method`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenEndpointAuthMethod {
    /// A public client: `client_id` in the body, no secret.
    None,
    /// `client_id` and `client_secret` in the form body.
    ClientSecretPost,
    /// HTTP Basic with the form-urlencoded `client_id` and `client_secret`.
    ClientSecretBasic,
}

impl TokenEndpointAuthMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::ClientSecretPost => "client_secret_post",
            Self::ClientSecretBasic => "client_secret_basic",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "none" => Some(Self::None),
            "client_secret_post" => Some(Self::ClientSecretPost),
            "client_secret_basic" => Some(Self::ClientSecretBasic),
            _ => None,
        }
    }
}

pub(crate) struct Client {
    pub(crate) secret_hash: Option<Hash>,
    pub(crate) auth_method: TokenEndpointAuthMethod,
    pub(crate) redirect_uris: Vec<String>,
    pub(crate) client_name: Option<String>,
    /// False when the client registered `grant_types` without `refresh_token`.
    pub(crate) refresh_allowed: bool,
}

/// The validated parameters of one authorization request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AuthRequest {
    pub(crate) client_id: String,
    pub(crate) redirect_uri: String,
    /// Space-separated, validated against the supported scopes.
    pub(crate) scope: String,
    pub(crate) state: Option<String>,
    pub(crate) resource: Option<String>,
    pub(crate) code_challenge: String,
    /// OpenID Connect: echoed in the ID token.
    pub(crate) nonce: Option<String>,
}

/// A rendered consent page waiting for its form post, keyed by the hash of its CSRF token.
pub(crate) struct PendingConsent {
    pub(crate) request: AuthRequest,
    pub(crate) expires_at: Instant,
}

pub(crate) struct CodeRecord {
    pub(crate) request: AuthRequest,
    pub(crate) account: String,
    pub(crate) expires_at: Instant,
    /// Set at the first redemption attempt; a second attempt is a replay.
    pub(crate) used: bool,
    /// The grant the code was exchanged for, revoked if the code is replayed.
    pub(crate) grant_id: Option<u64>,
}

pub(crate) struct Grant {
    pub(crate) client_id: String,
    pub(crate) account: String,
    pub(crate) scope: String,
    pub(crate) resource: Option<String>,
    pub(crate) revoked: bool,
}

pub(crate) struct AccessToken {
    pub(crate) grant_id: u64,
    pub(crate) expires_at: Instant,
    pub(crate) revoked: bool,
}

pub(crate) struct RefreshToken {
    pub(crate) grant_id: u64,
    /// Replaced by a newer token of the same grant; presenting it again is reuse.
    pub(crate) rotated: bool,
}

/// What a valid access token grants.
#[derive(Debug, Clone)]
pub(crate) struct TokenInfo {
    pub(crate) account: String,
    pub(crate) resource: Option<String>,
}

/// Tokens minted for one `/token` response.
pub(crate) struct IssuedTokens {
    pub(crate) access_token: String,
    pub(crate) refresh_token: Option<String>,
}

#[derive(Default)]
pub(crate) struct Store {
    pub(crate) clients: HashMap<String, Client>,
    pub(crate) consents: HashMap<Hash, PendingConsent>,
    pub(crate) codes: HashMap<Hash, CodeRecord>,
    pub(crate) grants: HashMap<u64, Grant>,
    pub(crate) access_tokens: HashMap<Hash, AccessToken>,
    pub(crate) refresh_tokens: HashMap<Hash, RefreshToken>,
    next_grant_id: u64,
    /// Test knob: how many upcoming `/token` requests fail with 503.
    pub(crate) fail_token_requests: u32,
    /// Test knob: `/mcp` refuses every bearer token (401), as a resource server that
    /// no longer accepts a provider's tokens.
    pub(crate) refuse_mcp_tokens: bool,
}

impl Store {
    /// Drops consents, codes and access tokens that can no longer be used. Used codes stay
    /// until they expire so that a replay is still recognised.
    pub(crate) fn purge_expired(&mut self) {
        let now = Instant::now();
        self.consents.retain(|_, c| c.expires_at > now);
        self.codes.retain(|_, c| c.expires_at > now);
        self.access_tokens.retain(|_, t| t.expires_at > now);
    }

    pub(crate) fn create_grant(&mut self, client_id: &str, account: &str, scope: &str, resource: Option<&str>) -> u64 {
        self.next_grant_id += 1;
        let id = self.next_grant_id;
        self.grants.insert(
            id,
            Grant {
                client_id: client_id.to_owned(),
                account: account.to_owned(),
                scope: scope.to_owned(),
                resource: resource.map(str::to_owned),
                revoked: false,
            },
        );
        id
    }

    /// Mints an access token (and a refresh token when asked) for a grant.
    pub(crate) fn issue_tokens(&mut self, grant_id: u64, ttl: Duration, with_refresh: bool) -> IssuedTokens {
        self.purge_expired();
        let access_token = random_token("demo_at_");
        self.access_tokens.insert(
            sha256(&access_token),
            AccessToken {
                grant_id,
                expires_at: Instant::now() + ttl,
                revoked: false,
            },
        );
        let refresh_token = with_refresh.then(|| {
            let token = random_token("demo_rt_");
            self.refresh_tokens.insert(
                sha256(&token),
                RefreshToken {
                    grant_id,
                    rotated: false,
                },
            );
            token
        });
        IssuedTokens {
            access_token,
            refresh_token,
        }
    }

    /// The live grant behind a valid (known, unexpired, unrevoked) access token.
    pub(crate) fn validate_access_token(&self, token: &str) -> Option<TokenInfo> {
        let record = self.access_tokens.get(&sha256(token))?;
        if record.revoked || record.expires_at <= Instant::now() {
            return None;
        }
        let grant = self.grants.get(&record.grant_id)?;
        if grant.revoked {
            return None;
        }
        Some(TokenInfo {
            account: grant.account.clone(),
            resource: grant.resource.clone(),
        })
    }

    pub(crate) fn revoke_grant(&mut self, grant_id: u64) {
        if let Some(grant) = self.grants.get_mut(&grant_id) {
            grant.revoked = true;
        }
    }

    pub(crate) fn expire_access_tokens(&mut self) {
        let now = Instant::now();
        for token in self.access_tokens.values_mut() {
            token.expires_at = now;
        }
    }

    pub(crate) fn revoke_all(&mut self) {
        for grant in self.grants.values_mut() {
            grant.revoked = true;
        }
    }
}
