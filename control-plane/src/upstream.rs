//! Gatehouse as an OAuth client of upstream authorization servers: endpoint
//! discovery, client registration, the authorization URL (PKCE S256), the code
//! exchange and refresh with retries of transient failures, RFC 7009 revocation,
//! and reading the account name.
//!
//! Owns: what Gatehouse remembers about each service's authorization server
//! (`upstream_clients`: endpoints, its client id, the client secret sealed).
//! Never logs a token, and makes no request except through `outbound`.
//!
//! Implements: RFC 9728 (protected resource metadata), RFC 8414 (authorization
//! server metadata, with OpenID Connect Discovery as a fallback), RFC 7591
//! (dynamic registration), RFC 7636 (PKCE), RFC 8707 (resource indicators),
//! RFC 6749 §2.3.1, §4.1.3, §5.2, §6 (client authentication, code exchange,
//! errors, refresh), RFC 7009 (revocation).

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use crate::Core;
use crate::mcp_servers::McpServer;
use crate::outbound::{Fetched, Outbound, OutboundError};
use crate::secret::{self, Secret};
use crate::store::StoreError;
use crate::store::reseal;
use crate::store::upstream::{NewUpstreamClient, UpstreamClientRow};
use crate::vault::VaultError;

/// Largest metadata or registration document read (RFC 9728 and 8414 documents are small).
const MAX_DOCUMENT_BYTES: usize = 64 * 1024;
/// Tries of one token request when the provider fails transiently.
const TOKEN_TRIES: u32 = 3;
/// Pause before the second try; doubled before the third.
const FIRST_BACKOFF: Duration = Duration::from_millis(150);

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// Discovery found no usable authorization server (a configuration problem, or the upstream's).
    #[error("upstream discovery: {0}")]
    Discovery(String),
    /// Gatehouse cannot act as a client here (no client id and no registration endpoint, unreadable secret…).
    #[error("upstream client configuration: {0}")]
    Config(String),
    /// RFC 7591 registration was refused.
    #[error("upstream registration: {0}")]
    Registration(String),
    /// The authorization server does not know Gatehouse's client (any more).
    #[error("the upstream authorization server refused Gatehouse's client (invalid_client)")]
    InvalidClient,
    /// The code or refresh token is invalid, expired or revoked: final.
    #[error("the upstream authorization server refused the grant (invalid_grant)")]
    InvalidGrant,
    /// Any other OAuth error the provider answered with.
    #[error("the upstream authorization server answered {error}{}", description_suffix(.description))]
    Refused { error: String, description: String },
    /// Network failure, 5xx or 429, after retries: may pass.
    #[error("the upstream is unavailable: {0}")]
    Transient(String),
    /// The provider answered something that is not what the RFC says.
    #[error("the upstream's answer is malformed: {0}")]
    Malformed(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Vault(#[from] VaultError),
}

fn description_suffix(description: &str) -> String {
    if description.is_empty() {
        String::new()
    } else {
        format!(" ({description})")
    }
}

// === The control plane's outbound client ===

/// The control plane's guarded HTTP client (built once, in `ControlPlane::start`).
pub(crate) fn outbound(core: &Core) -> Result<Outbound, UpstreamError> {
    Ok(core.outbound.clone())
}

fn from_outbound(err: OutboundError) -> UpstreamError {
    if err.is_transient() {
        UpstreamError::Transient(err.to_string())
    } else {
        UpstreamError::Discovery(err.to_string())
    }
}

// === Authorization server metadata ===

/// What Gatehouse uses of an authorization server's metadata (RFC 8414 §2).
/// Empty strings and lists mean "not stated".
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct AuthServer {
    pub issuer: String,
    pub authorization_endpoint: String,
    pub token_endpoint: String,
    pub revocation_endpoint: String,
    pub registration_endpoint: String,
    pub userinfo_endpoint: String,
    pub jwks_uri: String,
    pub token_endpoint_auth_methods_supported: Vec<String>,
    pub code_challenge_methods_supported: Vec<String>,
    pub id_token_signing_alg_values_supported: Vec<String>,
    pub authorization_response_iss_parameter_supported: bool,
}

impl AuthServer {
    /// Parses a metadata document fetched for `expected_issuer`.
    pub fn from_metadata(outbound: &Outbound, document: &Value, expected_issuer: &str) -> Result<Self, UpstreamError> {
        let text = |name: &str| document.get(name).and_then(Value::as_str).unwrap_or_default().to_string();
        let list = |name: &str| -> Vec<String> {
            document
                .get(name)
                .and_then(Value::as_array)
                .map(|items| items.iter().filter_map(Value::as_str).map(str::to_string).collect())
                .unwrap_or_default()
        };
        let server = Self {
            issuer: text("issuer"),
            authorization_endpoint: text("authorization_endpoint"),
            token_endpoint: text("token_endpoint"),
            revocation_endpoint: text("revocation_endpoint"),
            registration_endpoint: text("registration_endpoint"),
            userinfo_endpoint: text("userinfo_endpoint"),
            jwks_uri: text("jwks_uri"),
            token_endpoint_auth_methods_supported: list("token_endpoint_auth_methods_supported"),
            code_challenge_methods_supported: list("code_challenge_methods_supported"),
            id_token_signing_alg_values_supported: list("id_token_signing_alg_values_supported"),
            authorization_response_iss_parameter_supported: document
                .get("authorization_response_iss_parameter_supported")
                .and_then(Value::as_bool)
                .unwrap_or(false),
        };
        // Security: RFC 8414 §3.3 (and OIDC Discovery §4.3): the issuer in the
        // document must be the one it was fetched for, or a server could speak
        // for another and collect its codes (mix-up).
        if !same_url(&server.issuer, expected_issuer) {
            return Err(UpstreamError::Discovery(format!(
                "metadata names issuer {:?}, but was fetched for {expected_issuer:?}",
                server.issuer
            )));
        }
        server.check(outbound)?;
        Ok(server)
    }

    /// Checks the endpoints Gatehouse will use and PKCE support.
    fn check(&self, outbound: &Outbound) -> Result<(), UpstreamError> {
        if self.authorization_endpoint.is_empty() || self.token_endpoint.is_empty() {
            return Err(UpstreamError::Discovery(
                "the authorization server names no authorization_endpoint or token_endpoint".into(),
            ));
        }
        // Security: the browser is sent to the authorization endpoint, so it gets
        // the same URL rules as every outbound request (https, no userinfo, no
        // special addresses), which also rules out javascript: and data: URLs.
        for endpoint in [
            &self.authorization_endpoint,
            &self.token_endpoint,
            &self.revocation_endpoint,
            &self.registration_endpoint,
            &self.userinfo_endpoint,
            &self.jwks_uri,
        ] {
            if !endpoint.is_empty() {
                outbound
                    .check_url(endpoint)
                    .map_err(|e| UpstreamError::Discovery(e.to_string()))?;
            }
        }
        // Security: RFC 9700 §2.1.1, PKCE with S256 only; a server that states
        // its methods must list S256.
        if !self.code_challenge_methods_supported.is_empty() && !self.code_challenge_methods_supported.iter().any(|m| m == "S256")
        {
            return Err(UpstreamError::Discovery(
                "the authorization server does not support PKCE S256".into(),
            ));
        }
        Ok(())
    }
}

/// Two URLs name the same thing: byte-identical but for one trailing slash.
pub(crate) fn same_url(a: &str, b: &str) -> bool {
    !a.is_empty() && a.trim_end_matches('/') == b.trim_end_matches('/')
}

/// GETs a JSON document; `Ok(None)` when the server answers 4xx (not there).
async fn fetch_json(outbound: &Outbound, url: &str) -> Result<Option<Value>, UpstreamError> {
    let fetched = outbound
        .get(url, "application/json", Some(MAX_DOCUMENT_BYTES))
        .await
        .map_err(from_outbound)?;
    match fetched.status {
        200 => serde_json::from_slice::<Value>(&fetched.body)
            .map(Some)
            .map_err(|_| UpstreamError::Discovery(format!("{url} did not answer JSON"))),
        429 | 500..=599 => Err(UpstreamError::Transient(format!("{url} answered {}", fetched.status))),
        _ => Ok(None),
    }
}

/// The well-known URL `suffix` for `url`, path inserted after it (RFC 8414 §3.1, RFC 9728 §3.1).
fn well_known(url: &url::Url, suffix: &str) -> String {
    let path = url.path().trim_end_matches('/');
    format!("{}/.well-known/{suffix}{path}", url.origin().ascii_serialization())
}

/// RFC 9728: the authorization server of a protected resource. Falls back to
/// the resource's origin when it publishes no metadata (MCP 2025-03-26).
pub async fn protected_resource_authorization_server(outbound: &Outbound, resource_url: &str) -> Result<String, UpstreamError> {
    let url =
        url::Url::parse(resource_url).map_err(|_| UpstreamError::Discovery(format!("MCP URL {resource_url:?} is not a URL")))?;
    let mut candidates = vec![well_known(&url, "oauth-protected-resource")];
    let root = format!("{}/.well-known/oauth-protected-resource", url.origin().ascii_serialization());
    if !candidates.contains(&root) {
        candidates.push(root);
    }
    for candidate in &candidates {
        let Some(document) = fetch_json(outbound, candidate).await? else {
            continue;
        };
        // Security: RFC 9728 §3.3, the document must be about this resource, or
        // another server's metadata could point us at an authorization server of
        // its choosing.
        if let Some(resource) = document.get("resource").and_then(Value::as_str)
            && !same_url(resource, resource_url)
        {
            return Err(UpstreamError::Discovery(format!(
                "{candidate} describes resource {resource:?}, not {resource_url:?}"
            )));
        }
        let server = document
            .get("authorization_servers")
            .and_then(Value::as_array)
            .and_then(|servers| servers.first())
            .and_then(Value::as_str)
            .ok_or_else(|| UpstreamError::Discovery(format!("{candidate} names no authorization server")))?;
        return Ok(server.to_string());
    }
    tracing::info!(target: "gatehouse::upstream", resource_url, "no protected resource metadata; using the origin as authorization server");
    Ok(url.origin().ascii_serialization())
}

/// RFC 8414 metadata of the authorization server `issuer`, with OpenID Connect
/// Discovery as the fallback (the order the MCP authorization spec gives).
pub async fn authorization_server_metadata(outbound: &Outbound, issuer: &str) -> Result<AuthServer, UpstreamError> {
    let url =
        url::Url::parse(issuer).map_err(|_| UpstreamError::Discovery(format!("authorization server {issuer:?} is not a URL")))?;
    let mut candidates = vec![
        well_known(&url, "oauth-authorization-server"),
        well_known(&url, "openid-configuration"),
    ];
    let appended = format!("{}/.well-known/openid-configuration", issuer.trim_end_matches('/'));
    if !candidates.contains(&appended) {
        candidates.push(appended);
    }
    for candidate in &candidates {
        if let Some(document) = fetch_json(outbound, candidate).await? {
            return AuthServer::from_metadata(outbound, &document, issuer);
        }
    }
    Err(UpstreamError::Discovery(format!(
        "no authorization server metadata for {issuer} (tried {})",
        candidates.join(", ")
    )))
}

/// The service's authorization server: configured fields win, the rest is discovered.
async fn resolve_auth_server(outbound: &Outbound, server: &McpServer) -> Result<AuthServer, UpstreamError> {
    let config = &server.oauth;
    let mut resolved = if !config.authorization_endpoint.is_empty() && !config.token_endpoint.is_empty() {
        // Both endpoints configured: the operator knows this server; no discovery.
        AuthServer {
            issuer: config.issuer.clone(),
            ..Default::default()
        }
    } else {
        let issuer = if config.issuer.is_empty() {
            protected_resource_authorization_server(outbound, &server.url).await?
        } else {
            config.issuer.clone()
        };
        authorization_server_metadata(outbound, &issuer).await?
    };
    apply_overrides(&mut resolved, server);
    resolved.check(outbound)?;
    Ok(resolved)
}

/// Configured endpoints win over discovered ones.
fn apply_overrides(resolved: &mut AuthServer, server: &McpServer) {
    let config = &server.oauth;
    for (configured, slot) in [
        (&config.issuer, &mut resolved.issuer),
        (&config.authorization_endpoint, &mut resolved.authorization_endpoint),
        (&config.token_endpoint, &mut resolved.token_endpoint),
        (&config.revocation_endpoint, &mut resolved.revocation_endpoint),
        (&config.registration_endpoint, &mut resolved.registration_endpoint),
    ] {
        if !configured.is_empty() {
            *slot = configured.clone();
        }
    }
}

// === Gatehouse's client at the upstream ===

/// How Gatehouse authenticates at a token, revocation or userinfo endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    /// Public client: `client_id` in the form.
    None,
    /// HTTP Basic (RFC 6749 §2.3.1).
    ClientSecretBasic,
    /// `client_id` and `client_secret` in the form.
    ClientSecretPost,
}

impl AuthMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::ClientSecretBasic => "client_secret_basic",
            Self::ClientSecretPost => "client_secret_post",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "none" => Some(Self::None),
            "client_secret_basic" => Some(Self::ClientSecretBasic),
            "client_secret_post" => Some(Self::ClientSecretPost),
            _ => None,
        }
    }

    /// The method for a client holding (or not) a secret at a server supporting `supported`
    /// (empty: RFC 8414 §2's default, client_secret_basic).
    pub fn choose(has_secret: bool, supported: &[String]) -> Option<Self> {
        let supports = |m: &str| supported.iter().any(|s| s == m) || (supported.is_empty() && m == "client_secret_basic");
        if !has_secret {
            // A configured public client: the server's list is its business.
            return Some(Self::None);
        }
        [Self::ClientSecretBasic, Self::ClientSecretPost]
            .into_iter()
            .find(|m| supports(m.as_str()))
    }
}

/// Gatehouse's identity at an authorization server. The secret never prints.
#[derive(Debug, Clone)]
pub struct ClientCredentials {
    pub client_id: String,
    pub secret: Option<Secret>,
    pub method: AuthMethod,
}

impl ClientCredentials {
    /// Adds the client's authentication to `form`; returns the Basic pair when Basic is used.
    fn authenticate<'a>(&'a self, form: &mut Vec<(&'static str, &'a str)>) -> Option<(&'a str, &'a str)> {
        match (self.method, &self.secret) {
            (AuthMethod::ClientSecretBasic, Some(secret)) => Some((self.client_id.as_str(), secret.expose())),
            (AuthMethod::ClientSecretPost, Some(secret)) => {
                form.push(("client_id", &self.client_id));
                form.push(("client_secret", secret.expose()));
                None
            }
            _ => {
                form.push(("client_id", &self.client_id));
                None
            }
        }
    }
}

/// Everything needed to act as a client of one service's authorization server.
#[derive(Debug, Clone)]
pub struct UpstreamClient {
    pub service: String,
    pub server: AuthServer,
    pub credentials: ClientCredentials,
    /// Registered by Gatehouse (so it may register again).
    pub dynamic: bool,
}

/// The remembered document in `upstream_clients.endpoints`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Remembered {
    /// The MCP URL discovery started from; a changed URL means discovering again.
    resource_url: String,
    server: AuthServer,
    auth_method: String,
}

/// The redirect URI Gatehouse registers and uses for upstream connections.
pub fn connect_redirect_uri(core: &Core) -> String {
    format!("{}/oauth/callback", core.config.public_url.trim_end_matches('/'))
}

/// Gatehouse's client at `server`'s authorization server: remembered, or
/// discovered and registered now (once per service; RFC 7591).
pub async fn client(core: &Core, server: &McpServer) -> Result<UpstreamClient, UpstreamError> {
    let outbound = outbound(core)?;
    if let Some(row) = core.store.get_upstream_client(&server.name).await? {
        if let Some(client) = from_remembered(core, server, &row)? {
            return Ok(client);
        }
        // The service's settings changed (URL, client id): discover and register afresh.
        core.store.forget_upstream_client(&server.name, &row.client_id).await?;
    }
    let resolved = resolve_auth_server(&outbound, server).await?;
    let configured_id = server.oauth.client_id.trim();
    let (client_id, secret, method, dynamic) = if configured_id.is_empty() {
        let (client_id, secret, method) = register(core, &outbound, server, &resolved).await?;
        (client_id, secret, method, true)
    } else {
        let secret = configured_secret(server)?;
        let method = AuthMethod::choose(secret.is_some(), &resolved.token_endpoint_auth_methods_supported).ok_or_else(|| {
            UpstreamError::Config("the authorization server supports neither client_secret_basic nor client_secret_post".into())
        })?;
        (configured_id.to_string(), secret, method, false)
    };
    let remembered = serde_json::to_string(&Remembered {
        resource_url: server.url.clone(),
        server: resolved.clone(),
        auth_method: method.as_str().to_string(),
    })
    .map_err(|e| UpstreamError::Malformed(e.to_string()))?;
    // Only a registered secret is stored (sealed); a configured one stays in its env/file.
    let sealed = match (&secret, dynamic) {
        (Some(secret), true) => Some(core.vault.seal_secret(secret_aad(&server.name), secret)?),
        _ => None,
    };
    let stored = core
        .store
        .insert_upstream_client_if_absent(
            &NewUpstreamClient {
                service: &server.name,
                issuer: &resolved.issuer,
                client_id: &client_id,
                secret: sealed,
                endpoints: &remembered,
                dynamic,
            },
            core.now(),
        )
        .await?;
    if stored.client_id != client_id {
        // Another call remembered a client first: use that one, so every attempt
        // of this service uses the same client id.
        if let Some(client) = from_remembered(core, server, &stored)? {
            return Ok(client);
        }
    }
    Ok(UpstreamClient {
        service: server.name.clone(),
        server: resolved,
        credentials: ClientCredentials {
            client_id,
            secret,
            method,
        },
        dynamic,
    })
}

/// A remembered client, if it still fits the service's settings.
fn from_remembered(core: &Core, server: &McpServer, row: &UpstreamClientRow) -> Result<Option<UpstreamClient>, UpstreamError> {
    let Ok(remembered) = serde_json::from_str::<Remembered>(&row.endpoints) else {
        return Ok(None);
    };
    let configured_id = server.oauth.client_id.trim();
    let fits = remembered.resource_url == server.url
        && if configured_id.is_empty() {
            row.dynamic
        } else {
            !row.dynamic && row.client_id == configured_id
        };
    let Some(method) = AuthMethod::parse(&remembered.auth_method) else {
        return Ok(None);
    };
    if !fits {
        return Ok(None);
    }
    let secret = if row.dynamic {
        match &row.secret_ct {
            Some(blob) => Some(core.vault.open_secret(secret_aad(&server.name), blob)?),
            None => None,
        }
    } else {
        configured_secret(server)?
    };
    let mut resolved = remembered.server;
    apply_overrides(&mut resolved, server);
    Ok(Some(UpstreamClient {
        service: server.name.clone(),
        server: resolved,
        credentials: ClientCredentials {
            client_id: row.client_id.clone(),
            secret,
            method,
        },
        dynamic: row.dynamic,
    }))
}

fn secret_aad(service: &str) -> crate::vault::Aad<'_> {
    reseal::aad("upstream_clients", "secret_ct", service, "", service)
}

/// The configured client secret, read from its environment variable or file.
fn configured_secret(server: &McpServer) -> Result<Option<Secret>, UpstreamError> {
    read_secret(&server.oauth.client_secret_env, &server.oauth.client_secret_file)
}

/// A secret named by an environment variable or a file (trimmed); neither named: none.
pub(crate) fn read_secret(env: &str, file: &str) -> Result<Option<Secret>, UpstreamError> {
    if !env.is_empty() {
        return match std::env::var(env) {
            Ok(value) if !value.trim().is_empty() => Ok(Some(Secret::new(value.trim()))),
            _ => Err(UpstreamError::Config(format!(
                "environment variable {env} (client secret) is not set"
            ))),
        };
    }
    if !file.is_empty() {
        return match std::fs::read_to_string(file) {
            Ok(value) if !value.trim().is_empty() => Ok(Some(Secret::new(value.trim()))),
            Ok(_) => Err(UpstreamError::Config(format!("client secret file {file} is empty"))),
            Err(err) => Err(UpstreamError::Config(format!("client secret file {file}: {err}"))),
        };
    }
    Ok(None)
}

/// RFC 7591 registration at the discovered registration endpoint.
async fn register(
    core: &Core,
    outbound: &Outbound,
    server: &McpServer,
    resolved: &AuthServer,
) -> Result<(String, Option<Secret>, AuthMethod), UpstreamError> {
    if resolved.registration_endpoint.is_empty() {
        return Err(UpstreamError::Config(format!(
            "service {:?} has no client_id configured and its authorization server offers no dynamic registration",
            server.name
        )));
    }
    // Prefer a public client (nothing to keep secret), else a secret sent with
    // Basic, as the server states; RFC 8414's default is client_secret_basic.
    let supported = &resolved.token_endpoint_auth_methods_supported;
    let requested = if supported.iter().any(|m| m == "none") {
        AuthMethod::None
    } else {
        AuthMethod::choose(true, supported).ok_or_else(|| {
            UpstreamError::Registration("the authorization server supports no client authentication Gatehouse speaks".into())
        })?
    };
    let client_name = if server.oauth.client_name.trim().is_empty() {
        "Gatehouse"
    } else {
        server.oauth.client_name.trim()
    };
    let mut body = json!({
        "client_name": client_name,
        "redirect_uris": [connect_redirect_uri(core)],
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "token_endpoint_auth_method": requested.as_str(),
    });
    if !server.oauth.scopes.is_empty() {
        body["scope"] = Value::String(server.oauth.scopes.join(" "));
    }
    let fetched = outbound
        .post_json(&resolved.registration_endpoint, &body)
        .await
        .map_err(from_outbound)?;
    if !(200..300).contains(&fetched.status) {
        let (error, description) = oauth_error(&fetched);
        return Err(UpstreamError::Registration(format!(
            "{} answered {}: {error}{}",
            resolved.registration_endpoint,
            fetched.status,
            description_suffix(&description)
        )));
    }
    let document: Value = serde_json::from_slice(&fetched.body)
        .map_err(|_| UpstreamError::Registration("the registration response is not JSON".into()))?;
    let client_id = document
        .get("client_id")
        .and_then(Value::as_str)
        .filter(|id| !id.is_empty())
        .ok_or_else(|| UpstreamError::Registration("the registration response has no client_id".into()))?
        .to_string();
    let secret = document
        .get("client_secret")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(Secret::new);
    // RFC 7591 §3.2.1: the server may register a method other than the one asked for.
    let method = document
        .get("token_endpoint_auth_method")
        .and_then(Value::as_str)
        .and_then(AuthMethod::parse)
        .unwrap_or(requested);
    if method != AuthMethod::None && secret.is_none() {
        return Err(UpstreamError::Registration(format!(
            "registered with {} but no client_secret came back",
            method.as_str()
        )));
    }
    tracing::info!(target: "gatehouse::upstream", service = %server.name, client_id, method = method.as_str(), "registered at the upstream authorization server");
    Ok((client_id, secret, method))
}

/// Forgets a registration the authorization server no longer accepts, so the
/// next connect registers again (RFC 7591; `invalid_client`).
pub async fn forget_client(core: &Core, client: &UpstreamClient) -> Result<(), UpstreamError> {
    if client.dynamic
        && core
            .store
            .forget_upstream_client(&client.service, &client.credentials.client_id)
            .await?
    {
        tracing::warn!(target: "gatehouse::upstream", service = %client.service, "upstream refused our registration; it will register again");
    }
    Ok(())
}

// === Authorization request ===

/// A PKCE pair (RFC 7636 §4.1, §4.2): 256 random bits as the verifier, S256 challenge.
pub struct Pkce {
    pub verifier: Secret,
    pub challenge: String,
}

impl Pkce {
    pub fn new() -> Self {
        let verifier = secret::generate("");
        let challenge = pkce_challenge(verifier.expose());
        Self { verifier, challenge }
    }
}

impl Default for Pkce {
    fn default() -> Self {
        Self::new()
    }
}

/// BASE64URL(SHA256(verifier)).
pub fn pkce_challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// The parameters of an authorization request.
pub struct AuthorizationRequest<'a> {
    pub client_id: &'a str,
    pub redirect_uri: &'a str,
    pub state: &'a Secret,
    pub code_challenge: &'a str,
    /// Space-separated; empty: omitted.
    pub scope: &'a str,
    /// RFC 8707.
    pub resource: Option<&'a str>,
    /// OpenID Connect.
    pub nonce: Option<&'a Secret>,
}

/// The authorization URL: the endpoint with the request's parameters added to its query.
pub fn authorization_url(endpoint: &str, request: &AuthorizationRequest<'_>) -> Result<String, UpstreamError> {
    let mut url = url::Url::parse(endpoint)
        .map_err(|_| UpstreamError::Discovery(format!("authorization endpoint {endpoint:?} is not a URL")))?;
    {
        let mut query = url.query_pairs_mut();
        query
            .append_pair("response_type", "code")
            .append_pair("client_id", request.client_id)
            .append_pair("redirect_uri", request.redirect_uri)
            .append_pair("state", request.state.expose())
            .append_pair("code_challenge", request.code_challenge)
            .append_pair("code_challenge_method", "S256");
        if !request.scope.is_empty() {
            query.append_pair("scope", request.scope);
        }
        if let Some(resource) = request.resource {
            query.append_pair("resource", resource);
        }
        if let Some(nonce) = request.nonce {
            query.append_pair("nonce", nonce.expose());
        }
    }
    Ok(url.into())
}

// === Token endpoint ===

/// A successful token response (RFC 6749 §5.1). Tokens never print.
#[derive(Debug, Clone)]
pub struct TokenResponse {
    pub access_token: Secret,
    pub refresh_token: Option<Secret>,
    pub id_token: Option<Secret>,
    pub expires_in: Option<i64>,
    pub scope: Option<String>,
    /// An account name the response itself carries (`email`, `preferred_username` or `sub`).
    pub account: Option<String>,
}

/// Exchanges an authorization code (RFC 6749 §4.1.3, RFC 7636 §4.5, RFC 8707 §2.2).
pub async fn exchange_code(
    core: &Core,
    token_endpoint: &str,
    credentials: &ClientCredentials,
    code: &str,
    verifier: &Secret,
    redirect_uri: &str,
    resource: Option<&str>,
) -> Result<TokenResponse, UpstreamError> {
    let mut form: Vec<(&'static str, &str)> = vec![
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", redirect_uri),
        ("code_verifier", verifier.expose()),
    ];
    if let Some(resource) = resource {
        form.push(("resource", resource));
    }
    token_request(core, token_endpoint, credentials, form).await
}

/// Refreshes (RFC 6749 §6). `invalid_grant` is final: the person must connect again.
pub async fn refresh(
    core: &Core,
    client: &UpstreamClient,
    refresh_token: &Secret,
    resource: Option<&str>,
) -> Result<TokenResponse, UpstreamError> {
    let mut form: Vec<(&'static str, &str)> = vec![("grant_type", "refresh_token"), ("refresh_token", refresh_token.expose())];
    if let Some(resource) = resource {
        form.push(("resource", resource));
    }
    token_request(core, &client.server.token_endpoint, &client.credentials, form).await
}

async fn token_request(
    core: &Core,
    token_endpoint: &str,
    credentials: &ClientCredentials,
    mut form: Vec<(&'static str, &str)>,
) -> Result<TokenResponse, UpstreamError> {
    let basic = credentials.authenticate(&mut form);
    let fetched = post_with_retries(core, token_endpoint, &form, basic, TOKEN_TRIES).await?;
    parse_token_response(&fetched)
}

/// POSTs a form, retrying network failures, 5xx and 429 up to `tries` times
/// with a short backoff; any other answer (success or OAuth error) is returned
/// as it is classified by `classify`.
async fn post_with_retries(
    core: &Core,
    url: &str,
    form: &[(&str, &str)],
    basic: Option<(&str, &str)>,
    tries: u32,
) -> Result<Fetched, UpstreamError> {
    let outbound = outbound(core)?;
    let mut backoff = FIRST_BACKOFF;
    let mut attempt = 1;
    loop {
        let outcome = match outbound.post_form(url, form, basic).await {
            Ok(fetched) if fetched.status == 429 || fetched.status >= 500 => {
                Err(UpstreamError::Transient(format!("{url} answered {}", fetched.status)))
            }
            Ok(fetched) => return classify(fetched),
            Err(err) => Err(from_outbound(err)),
        };
        match outcome {
            Err(UpstreamError::Transient(why)) if attempt < tries => {
                tracing::info!(target: "gatehouse::upstream", url, attempt, why, "transient upstream failure; retrying");
                tokio::time::sleep(backoff).await;
                backoff *= 2;
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// A 2xx answer passes; an OAuth error becomes its `UpstreamError`.
fn classify(fetched: Fetched) -> Result<Fetched, UpstreamError> {
    if (200..300).contains(&fetched.status) {
        return Ok(fetched);
    }
    let (error, description) = oauth_error(&fetched);
    Err(match error.as_str() {
        "invalid_grant" => UpstreamError::InvalidGrant,
        "invalid_client" | "unauthorized_client" => UpstreamError::InvalidClient,
        "" if fetched.status == 401 => UpstreamError::InvalidClient,
        "" => UpstreamError::Malformed(format!("HTTP {} without an OAuth error", fetched.status)),
        _ => UpstreamError::Refused { error, description },
    })
}

/// `error` and `error_description` of an RFC 6749 §5.2 body, cleaned for display.
fn oauth_error(fetched: &Fetched) -> (String, String) {
    let body: Value = serde_json::from_slice(&fetched.body).unwrap_or(Value::Null);
    let field = |name: &str| body.get(name).and_then(Value::as_str).map(printable).unwrap_or_default();
    (field("error"), field("error_description"))
}

/// Text from a provider, safe to show and log: printable characters only, at most 200.
pub fn printable(text: &str) -> String {
    text.chars().filter(|c| !c.is_control()).take(200).collect()
}

fn parse_token_response(fetched: &Fetched) -> Result<TokenResponse, UpstreamError> {
    let body: Value =
        serde_json::from_slice(&fetched.body).map_err(|_| UpstreamError::Malformed("the token response is not JSON".into()))?;
    let text = |name: &str| body.get(name).and_then(Value::as_str).filter(|v| !v.is_empty());
    let access_token = text("access_token")
        .map(Secret::new)
        .ok_or_else(|| UpstreamError::Malformed("the token response has no access_token".into()))?;
    // Security: Gatehouse sends upstream tokens as bearer tokens only; a
    // sender-constrained type (DPoP, MAC) would be misused that way.
    if let Some(kind) = text("token_type")
        && !kind.eq_ignore_ascii_case("bearer")
    {
        return Err(UpstreamError::Malformed(format!(
            "token_type {:?} is not Bearer",
            printable(kind)
        )));
    }
    let expires_in = match body.get("expires_in") {
        Some(Value::Number(n)) => n.as_i64(),
        Some(Value::String(s)) => s.parse().ok(),
        _ => None,
    };
    Ok(TokenResponse {
        access_token,
        refresh_token: text("refresh_token").map(Secret::new),
        id_token: text("id_token").map(Secret::new),
        expires_in,
        scope: text("scope").map(str::to_string),
        account: ["email", "preferred_username", "sub"]
            .into_iter()
            .find_map(|name| text(name).map(printable)),
    })
}

// === Revocation and userinfo ===

/// RFC 7009: revokes `token` at the revocation endpoint, if the server has one.
/// One try; the caller treats failure as best effort.
pub async fn revoke(core: &Core, client: &UpstreamClient, token: &Secret, hint: &str) -> Result<bool, UpstreamError> {
    if client.server.revocation_endpoint.is_empty() {
        return Ok(false);
    }
    let mut form: Vec<(&'static str, &str)> = vec![("token", token.expose()), ("token_type_hint", hint)];
    let basic = client.credentials.authenticate(&mut form);
    post_with_retries(core, &client.server.revocation_endpoint, &form, basic, 1).await?;
    Ok(true)
}

/// The account name at the userinfo endpoint: `email`, else
/// `preferred_username`, else `sub` (OpenID Connect Core §5.3; the token as an
/// RFC 6750 §2.1 bearer header).
pub async fn userinfo_account(
    core: &Core,
    userinfo_endpoint: &str,
    access_token: &Secret,
) -> Result<Option<String>, UpstreamError> {
    let fetched = core
        .outbound
        .get_with_bearer(userinfo_endpoint, access_token)
        .await
        .map_err(from_outbound)?;
    if !(200..300).contains(&fetched.status) {
        return Err(UpstreamError::Malformed(format!("userinfo answered {}", fetched.status)));
    }
    let body: Value = serde_json::from_slice(&fetched.body)
        .map_err(|_| UpstreamError::Malformed("the userinfo response is not JSON".into()))?;
    Ok(["email", "preferred_username", "sub"].into_iter().find_map(|name| {
        body.get(name)
            .and_then(Value::as_str)
            .filter(|v| !v.is_empty())
            .map(printable)
    }))
}

/// An authorization server's redirect back to Gatehouse (`/oauth/callback`
/// for a connection, `/signin/callback` for sign-in), as the data plane parsed it.
#[derive(Debug, Clone)]
pub struct Callback<'a> {
    pub state: &'a Secret,
    pub code: &'a Secret,
    pub error: &'a str,
    pub error_description: &'a str,
    pub iss: &'a str,
    /// The flow cookie's secret (attempts begun from a consent flow).
    pub browser_secret: &'a Secret,
    /// The connect cookie's secret (attempts begun from a connect link).
    pub link_browser_secret: &'a Secret,
    pub remote_addr: &'a str,
}

// === Upstream attempts (connect and sign-in states) ===

/// Why an upstream state cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptRefusal {
    Unknown,
    Used,
    Expired,
}

/// The unused, unexpired attempt of `kind` that `state` names.
///
/// Security: SPEC-NOTES C6, the lookup is by the hash of the exact state, of
/// the expected kind (a sign-in state never completes a connect, nor the
/// reverse). The attempt is not spent here: callers prove the browser first.
pub async fn live_attempt(
    core: &Core,
    state: &Secret,
    kind: &str,
) -> Result<crate::store::upstream::AttemptRow, Result<AttemptRefusal, StoreError>> {
    if state.expose().is_empty() {
        return Err(Ok(AttemptRefusal::Unknown));
    }
    let attempt = core
        .store
        .get_upstream_attempt(&state.hash())
        .await
        .map_err(Err)?
        .filter(|a| a.kind == kind)
        .ok_or(Ok(AttemptRefusal::Unknown))?;
    if attempt.consumed_at.is_some() {
        return Err(Ok(AttemptRefusal::Used));
    }
    if attempt.expires_at <= core.now() {
        return Err(Ok(AttemptRefusal::Expired));
    }
    Ok(attempt)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn well_known_urls_insert_the_path() {
        let url = url::Url::parse("https://as.example/tenant/1/").unwrap();
        assert_eq!(
            well_known(&url, "oauth-authorization-server"),
            "https://as.example/.well-known/oauth-authorization-server/tenant/1"
        );
        let root = url::Url::parse("https://as.example").unwrap();
        assert_eq!(
            well_known(&root, "oauth-protected-resource"),
            "https://as.example/.well-known/oauth-protected-resource"
        );
    }

    #[test]
    fn auth_method_prefers_basic_and_defaults_per_rfc_8414() {
        assert_eq!(AuthMethod::choose(true, &[]), Some(AuthMethod::ClientSecretBasic));
        assert_eq!(
            AuthMethod::choose(true, &["client_secret_post".into()]),
            Some(AuthMethod::ClientSecretPost)
        );
        assert_eq!(AuthMethod::choose(true, &["private_key_jwt".into()]), None);
        assert_eq!(
            AuthMethod::choose(false, &["client_secret_basic".into()]),
            Some(AuthMethod::None)
        );
    }

    #[test]
    fn authorization_url_keeps_the_endpoint_query_and_adds_pkce() {
        let state = Secret::new("gh_st_x");
        let url = authorization_url(
            "https://as.example/authorize?tenant=a",
            &AuthorizationRequest {
                client_id: "c 1",
                redirect_uri: "https://gw.example/oauth/callback",
                state: &state,
                code_challenge: "abc",
                scope: "read write",
                resource: Some("https://mcp.example/mcp"),
                nonce: None,
            },
        )
        .unwrap();
        let parsed = url::Url::parse(&url).unwrap();
        let pairs: Vec<(String, String)> = parsed.query_pairs().into_owned().collect();
        assert_eq!(pairs[0], ("tenant".into(), "a".into()));
        assert!(pairs.contains(&("client_id".into(), "c 1".into())));
        assert!(pairs.contains(&("code_challenge_method".into(), "S256".into())));
        assert!(pairs.contains(&("scope".into(), "read write".into())));
        assert!(pairs.contains(&("resource".into(), "https://mcp.example/mcp".into())));
        assert!(!pairs.iter().any(|(k, _)| k == "nonce"));
    }

    #[test]
    fn pkce_challenge_matches_rfc_7636_appendix_b() {
        assert_eq!(
            pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
        let pair = Pkce::new();
        assert_eq!(pair.verifier.expose().len(), 43);
        assert_eq!(pair.challenge, pkce_challenge(pair.verifier.expose()));
    }

    fn fetched(status: u16, body: Value) -> Fetched {
        Fetched {
            status,
            headers: Default::default(),
            body: serde_json::to_vec(&body).unwrap(),
        }
    }

    #[test]
    fn token_errors_are_classified() {
        assert!(matches!(
            classify(fetched(400, json!({"error": "invalid_grant"}))),
            Err(UpstreamError::InvalidGrant)
        ));
        assert!(matches!(
            classify(fetched(401, json!({"error": "invalid_client"}))),
            Err(UpstreamError::InvalidClient)
        ));
        assert!(matches!(
            classify(fetched(400, json!({"error": "invalid_scope", "error_description": "no\nway"}))),
            Err(UpstreamError::Refused { error, description }) if error == "invalid_scope" && description == "noway"
        ));
        let ok = parse_token_response(&fetched(
            200,
            json!({"access_token": "at", "token_type": "bearer", "expires_in": "60", "email": "a@x"}),
        ))
        .unwrap();
        assert_eq!(ok.expires_in, Some(60));
        assert_eq!(ok.account.as_deref(), Some("a@x"));
        assert!(!format!("{ok:?}").contains("\"at\""));
        assert!(parse_token_response(&fetched(200, json!({"access_token": "at", "token_type": "DPoP"}))).is_err());
        assert!(parse_token_response(&fetched(200, json!({"token_type": "Bearer"}))).is_err());
    }
}
