//! The demo upstream built into the `gatehouse` binary: configuration, spawning, the router and
//! the counters tests read.
//!
//! It is a small but strict OAuth 2.1 authorization server (RFC 8414 metadata, RFC 7591
//! registration, PKCE S256 only, rotating refresh tokens, RFC 7009 revocation, `iss` in the
//! authorization response) with a login/consent page, and a Streamable HTTP MCP server at `/mcp`
//! that accepts only the access tokens this provider issued. It is also an OpenID provider: a
//! request with the `openid` scope gets an ES256-signed ID token (`/jwks`,
//! `/.well-known/openid-configuration`). `gatehouse up` runs it so a newcomer can walk the
//! per-user OAuth flow; the test suite uses it as its fixture upstream and sign-in provider.
//!
//! The consent page (`GET /authorize`) is a form whose fields a test can read with
//! [`hidden_fields`]: the hidden request parameters plus `csrf`, a text field `account` and a
//! submit button `decision` with the values `allow` and `deny`. Post all hidden fields back to
//! `POST /authorize` together with `account` and `decision`.
//!
//! Everything lives in memory; nothing survives the process.

mod authorize;
mod mcp;
mod oauth;
mod oidc;
mod pages;
mod store;
#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::routing::{any, get, post};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest as _, Sha256};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub use pages::hidden_fields;
pub use store::TokenEndpointAuthMethod;
use store::{Client, Store};

/// The demo's own scopes; a request for anything but these and [`OIDC_SCOPES`] is `invalid_scope`.
pub const SCOPES: [&str; 2] = ["notes.read", "notes.write"];

/// OpenID Connect scopes the demo also accepts: `openid` adds an ID token to the code exchange.
pub const OIDC_SCOPES: [&str; 3] = ["openid", "email", "profile"];

/// The MCP protocol revisions the demo server speaks, oldest first; the last is the default.
pub const PROTOCOL_VERSIONS: [&str; 3] = ["2025-03-26", "2025-06-18", "2025-11-25"];

/// How the demo upstream behaves. Build it with `..Default::default()` so new knobs do not break
/// callers.
#[derive(Debug, Clone)]
pub struct DemoConfig {
    /// Shown on the login page, e.g. "Demo Notes".
    pub name: String,
    /// Lifetime of access tokens.
    pub access_token_ttl: Duration,
    /// Each refresh returns a new refresh token and invalidates the old one; presenting the old
    /// one again revokes the whole grant (refresh-token reuse detection).
    pub rotate_refresh_tokens: bool,
    /// Whether `/token` hands out refresh tokens at all.
    pub issue_refresh_tokens: bool,
}

impl Default for DemoConfig {
    fn default() -> Self {
        Self {
            name: "Demo Notes".to_owned(),
            access_token_ttl: Duration::from_secs(3600),
            rotate_refresh_tokens: true,
            issue_refresh_tokens: true,
        }
    }
}

/// One request seen at `/mcp`, recorded before authentication so tests can assert what a
/// gateway forwarded (and that no Gatehouse token ever reached the upstream).
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    /// HTTP method.
    pub method: String,
    /// Every header as (lower-case name, value); non-UTF-8 values are converted lossily.
    pub headers: Vec<(String, String)>,
    /// The body, converted lossily to UTF-8.
    pub body: String,
}

impl RecordedRequest {
    /// The first value of a header, by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Counters and the request log of a running demo upstream.
#[derive(Debug, Default)]
pub struct DemoStats {
    /// Successful authorization-code exchanges at `/token`.
    pub code_exchanges: AtomicU64,
    /// Successful refresh-token grants at `/token`.
    pub refreshes: AtomicU64,
    /// Authenticated `/revoke` requests (whether or not the token was known).
    pub revocations: AtomicU64,
    /// Every request to `/mcp`, authenticated or not.
    pub mcp_requests: AtomicU64,
    /// Every request to `/token`, successful or not.
    pub token_requests: AtomicU64,
    /// Successful dynamic client registrations.
    pub registrations: AtomicU64,
    /// Every `/mcp` request, in arrival order.
    pub requests: Mutex<Vec<RecordedRequest>>,
}

impl DemoStats {
    pub fn code_exchanges(&self) -> u64 {
        self.code_exchanges.load(Ordering::SeqCst)
    }
    pub fn refreshes(&self) -> u64 {
        self.refreshes.load(Ordering::SeqCst)
    }
    pub fn revocations(&self) -> u64 {
        self.revocations.load(Ordering::SeqCst)
    }
    pub fn mcp_requests(&self) -> u64 {
        self.mcp_requests.load(Ordering::SeqCst)
    }
    pub fn token_requests(&self) -> u64 {
        self.token_requests.load(Ordering::SeqCst)
    }
    pub fn registrations(&self) -> u64 {
        self.registrations.load(Ordering::SeqCst)
    }

    /// A copy of every `/mcp` request recorded so far.
    pub fn recorded_requests(&self) -> Vec<RecordedRequest> {
        self.requests.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Whether any recorded `/mcp` request carried `needle` in any header value (e.g. a token
    /// Gatehouse issued, which must never reach an upstream).
    pub fn any_header_contains(&self, needle: &str) -> bool {
        self.requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .any(|r| r.headers.iter().any(|(_, v)| v.contains(needle)))
    }

    fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::SeqCst);
    }
}

/// A client registered out of band (what an administrator would do at a provider without
/// dynamic registration), for configuring Gatehouse with a static client.
#[derive(Debug, Clone)]
pub struct StaticClient {
    pub client_id: String,
    /// Required unless `auth_method` is [`TokenEndpointAuthMethod::None`].
    pub client_secret: Option<String>,
    pub auth_method: TokenEndpointAuthMethod,
    pub redirect_uris: Vec<String>,
    pub client_name: Option<String>,
}

/// State shared by every handler.
pub(crate) struct Shared {
    pub(crate) config: DemoConfig,
    /// Issuer: scheme, host and port, no trailing slash.
    pub(crate) base_url: String,
    pub(crate) stats: Arc<DemoStats>,
    /// Signs ID tokens (ES256).
    pub(crate) signing_key: oidc::SigningKey,
    store: Mutex<Store>,
}

impl Shared {
    pub(crate) fn new(config: DemoConfig, base_url: String, signing_key: oidc::SigningKey) -> Self {
        Self {
            config,
            base_url,
            stats: Arc::new(DemoStats::default()),
            signing_key,
            store: Mutex::new(Store::default()),
        }
    }

    /// The store. Handlers never hold it across an `.await`; a panic while holding it leaves
    /// data that is still consistent enough for a demo, so poisoning is ignored.
    pub(crate) fn store(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn mcp_url(&self) -> String {
        format!("{}/mcp", self.base_url)
    }

    pub(crate) fn resource_metadata_url(&self) -> String {
        format!("{}/.well-known/oauth-protected-resource/mcp", self.base_url)
    }
}

/// The demo upstream's routes.
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route(
            "/.well-known/oauth-authorization-server",
            get(oauth::authorization_server_metadata),
        )
        .route("/.well-known/openid-configuration", get(oidc::openid_configuration))
        .route("/jwks", get(oidc::jwks))
        .route(
            "/.well-known/oauth-protected-resource",
            get(oauth::protected_resource_metadata),
        )
        .route(
            "/.well-known/oauth-protected-resource/mcp",
            get(oauth::protected_resource_metadata),
        )
        .route("/register", post(oauth::register))
        .route(
            "/authorize",
            get(authorize::authorize_page).post(authorize::authorize_decision),
        )
        .route("/token", post(oauth::token))
        .route("/revoke", post(oauth::revoke))
        .route("/userinfo", get(oauth::userinfo).post(oauth::userinfo_post))
        // `any` so that every method reaches the handler and is recorded and answered there.
        .route("/mcp", any(mcp::handle))
        .with_state(shared)
}

/// A running demo upstream. Dropping it stops the server.
pub struct DemoUpstream {
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl DemoUpstream {
    /// Serves on `listener`; the issuer is `http://<listener address>` (an unspecified bind
    /// address such as 0.0.0.0 is replaced by loopback).
    pub async fn spawn(listener: TcpListener, config: DemoConfig) -> anyhow::Result<Self> {
        let base_url = loopback_base_url(listener.local_addr()?);
        Self::spawn_with_base_url(listener, config, base_url).await
    }

    /// Serves on `listener` but announces `base_url` (scheme, host, port; no path) as issuer,
    /// for when the demo is reached through another name or a proxy.
    pub async fn spawn_with_base_url(listener: TcpListener, config: DemoConfig, base_url: String) -> anyhow::Result<Self> {
        let parsed = url::Url::parse(&base_url)?;
        anyhow::ensure!(
            matches!(parsed.scheme(), "http" | "https")
                && parsed.path() == "/"
                && parsed.query().is_none()
                && parsed.fragment().is_none(),
            "demo base URL must be an http(s) origin without path: {base_url}"
        );
        let base_url = base_url.trim_end_matches('/').to_owned();
        let shared = Arc::new(Shared::new(config, base_url, oidc::SigningKey::generate()?));
        let app = router(shared.clone());
        let task = tokio::spawn(async move {
            if let Err(error) = axum::serve(listener, app).await {
                tracing::error!(%error, "demo upstream stopped");
            }
        });
        tracing::info!(base_url = %shared.base_url, "demo upstream listening");
        Ok(Self { shared, task })
    }

    /// The issuer, e.g. `http://127.0.0.1:4100` (no trailing slash).
    pub fn base_url(&self) -> &str {
        &self.shared.base_url
    }

    /// The MCP endpoint, `base_url + "/mcp"`; also the RFC 8707 resource identifier.
    pub fn mcp_url(&self) -> String {
        self.shared.mcp_url()
    }

    pub fn config(&self) -> &DemoConfig {
        &self.shared.config
    }

    pub fn stats(&self) -> &DemoStats {
        &self.shared.stats
    }

    /// A shared handle on the stats that outlives borrows of `self`.
    pub fn stats_handle(&self) -> Arc<DemoStats> {
        self.shared.stats.clone()
    }

    /// Test knob: every access token issued so far is expired from now on (refresh tokens keep
    /// working).
    pub fn expire_access_tokens(&self) {
        self.shared.store().expire_access_tokens();
    }

    /// Test knob: revokes every grant, so all access and refresh tokens issued so far stop
    /// working (as when a user disconnects the app at the provider).
    pub fn revoke_all(&self) {
        self.shared.store().revoke_all();
    }

    /// Test knob: the next `n` requests to `/token` fail with 503 `temporarily_unavailable`,
    /// to exercise a client's handling of transient provider failures.
    pub fn fail_next_token_requests(&self, n: u32) {
        self.shared.store().fail_token_requests = n;
    }

    /// Test knob: `/mcp` answers 401 to every token while `refuse` is set, even to
    /// freshly refreshed ones (the gateway must then ask the person again).
    pub fn refuse_mcp_tokens(&self, refuse: bool) {
        self.shared.store().refuse_mcp_tokens = refuse;
    }

    /// Test knob: forgets a registered client, as a provider does when a registration expires
    /// or is deleted; `/token` then answers `invalid_client`. Returns whether it existed.
    pub fn remove_client(&self, client_id: &str) -> bool {
        self.shared.store().clients.remove(client_id).is_some()
    }

    /// Registers a public client for Gatehouse's user sign-in (redirect URI
    /// `<public_url>/signin/callback`) and returns the control plane's `sign_in` settings that
    /// use this provider, so `gatehouse up` (and tests) can offer "sign in" against the demo.
    pub fn sign_in_config(&self, public_url: &str) -> anyhow::Result<gatehouse_control_plane::sign_in::SignInConfig> {
        let client_id = "gatehouse-sign-in".to_owned();
        self.add_client(StaticClient {
            client_id: client_id.clone(),
            client_secret: None,
            auth_method: TokenEndpointAuthMethod::None,
            redirect_uris: vec![format!("{}/signin/callback", public_url.trim_end_matches('/'))],
            client_name: Some("Gatehouse sign-in".to_owned()),
        })?;
        Ok(gatehouse_control_plane::sign_in::SignInConfig {
            issuer: self.base_url().to_owned(),
            client_id,
            display_name: format!("Sign in with {}", self.shared.config.name),
            ..Default::default()
        })
    }

    /// Registers a client out of band.
    pub fn add_client(&self, client: StaticClient) -> anyhow::Result<()> {
        for uri in &client.redirect_uris {
            oauth::validate_redirect_uri(uri).map_err(anyhow::Error::msg)?;
        }
        anyhow::ensure!(!client.redirect_uris.is_empty(), "redirect_uris is empty");
        let secret_hash = match (client.auth_method, &client.client_secret) {
            (TokenEndpointAuthMethod::None, None) => None,
            (TokenEndpointAuthMethod::None, Some(_)) => {
                anyhow::bail!("a public client has no secret")
            }
            (_, Some(secret)) => Some(sha256(secret)),
            (_, None) => anyhow::bail!("a confidential client needs a secret"),
        };
        let mut store = self.shared.store();
        anyhow::ensure!(
            !store.clients.contains_key(&client.client_id),
            "client {} already exists",
            client.client_id
        );
        store.clients.insert(
            client.client_id.clone(),
            Client {
                secret_hash,
                auth_method: client.auth_method,
                redirect_uris: client.redirect_uris,
                client_name: client.client_name,
                refresh_allowed: true,
            },
        );
        Ok(())
    }
}

impl Drop for DemoUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn loopback_base_url(addr: SocketAddr) -> String {
    let ip = match addr.ip() {
        ip if !ip.is_unspecified() => ip,
        std::net::IpAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
        std::net::IpAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
    };
    // SocketAddr's Display brackets IPv6 addresses, as a URL needs.
    format!("http://{}", SocketAddr::new(ip, addr.port()))
}

/// A fresh 256-bit random secret, base64url without padding, after a readable prefix.
pub(crate) fn random_token(prefix: &str) -> String {
    let mut bytes = [0u8; 32];
    rand::fill(&mut bytes[..]);
    format!("{prefix}{}", URL_SAFE_NO_PAD.encode(bytes))
}

pub(crate) fn sha256(value: &str) -> [u8; 32] {
    Sha256::digest(value.as_bytes()).into()
}

/// PKCE S256: BASE64URL-NOPAD(SHA256(verifier)).
pub(crate) fn pkce_challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(sha256(verifier))
}

/// Compares without an early exit, so timing does not reveal how much of a secret matched.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Parameters of a query string or form body.
pub(crate) type Params = std::collections::HashMap<String, String>;

/// Parses `application/x-www-form-urlencoded` text; a parameter given twice is an error
/// (RFC 6749 §3.1, §3.2).
pub(crate) fn parse_params(raw: &str) -> Result<Params, String> {
    let mut params = Params::new();
    for (name, value) in url::form_urlencoded::parse(raw.as_bytes()) {
        if params.insert(name.clone().into_owned(), value.into_owned()).is_some() {
            return Err(format!("parameter {name} was given more than once"));
        }
    }
    Ok(params)
}

/// Whether the request's media type (parameters ignored) is `expected`.
pub(crate) fn has_content_type(headers: &axum::http::HeaderMap, expected: &str) -> bool {
    headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case(expected))
}

pub(crate) fn is_form(headers: &axum::http::HeaderMap) -> bool {
    has_content_type(headers, "application/x-www-form-urlencoded")
}
