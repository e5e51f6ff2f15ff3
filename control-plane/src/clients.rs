//! MCP clients: the redirect-URI policy, dynamic registration (RFC 7591),
//! pre-registered clients from the config, Client ID Metadata Documents (fetched
//! through `outbound` and cached), and client authentication at `/token` and
//! `/revoke` (RFC 6749 §2.3).
//!
//! Never trusts a client URL before the outbound guard has checked it, never
//! caches a metadata document that failed, and never stores a client secret:
//! only its SHA-256.

use serde::Deserialize;
use url::Url;

use crate::Core;
use crate::audit;
use crate::secret::{self, Secret, prefix};
use crate::store::StoreError;
use crate::store::audit::NewAuditEvent;
use crate::store::clients::ClientRow;

/// Largest Client ID Metadata Document read (CIMD draft §6 recommends 5 KB).
pub const MAX_METADATA_DOCUMENT_BYTES: usize = 5 * 1024;
/// How long a metadata document is cached when its response says nothing.
const DEFAULT_DOCUMENT_CACHE_SECONDS: i64 = 60 * 60;
/// The longest a metadata document is cached, whatever its response says.
const MAX_DOCUMENT_CACHE_SECONDS: i64 = 24 * 60 * 60;
/// client_name when a client gives none.
pub const UNNAMED_CLIENT: &str = "Unnamed client";

const MAX_REDIRECT_URIS: usize = 20;
const MAX_URI_LEN: usize = 2000;
const MAX_NAME_CHARS: usize = 200;

/// Grant types Gatehouse supports.
pub const GRANT_AUTHORIZATION_CODE: &str = "authorization_code";
pub const GRANT_REFRESH_TOKEN: &str = "refresh_token";

/// The `[control_plane.clients]` table.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClientsConfig {
    /// Private-use URI schemes (RFC 8252 §7.1) accepted in redirect URIs, for
    /// native clients that register them (Cursor, VS Code, Windsurf).
    pub allowed_private_use_schemes: Vec<String>,
    /// Pre-registered clients.
    pub static_clients: Vec<StaticClient>,
    /// Days an unused dynamic registration is kept (counted again from each use).
    pub registration_ttl_days: i64,
}

impl Default for ClientsConfig {
    fn default() -> Self {
        Self {
            allowed_private_use_schemes: ["cursor", "vscode", "vscode-insiders", "windsurf"].map(String::from).to_vec(),
            static_clients: Vec::new(),
            registration_ttl_days: 30,
        }
    }
}

/// A client pre-registered in the config file (`[[control_plane.clients.static_clients]]`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticClient {
    pub client_id: String,
    #[serde(default)]
    pub client_name: String,
    pub redirect_uris: Vec<String>,
    /// SHA-256 (hex) of the client secret; absent for a public client. A
    /// confidential static client may authenticate with Basic or in the body.
    #[serde(default)]
    pub client_secret_sha256: Option<String>,
}

/// Where a client's registration came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientKind {
    Dynamic,
    MetadataDocument,
    Static,
}

impl ClientKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Dynamic => "dynamic",
            Self::MetadataDocument => "metadata_document",
            Self::Static => "static",
        }
    }
}

/// How a client authenticates at the token endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    None,
    ClientSecretPost,
    ClientSecretBasic,
}

impl AuthMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::ClientSecretPost => "client_secret_post",
            Self::ClientSecretBasic => "client_secret_basic",
        }
    }

    fn parse(value: &str) -> Option<Self> {
        match value {
            "none" => Some(Self::None),
            "client_secret_post" => Some(Self::ClientSecretPost),
            "client_secret_basic" => Some(Self::ClientSecretBasic),
            _ => None,
        }
    }
}

/// An MCP client, whatever its origin. Never holds a secret, only its hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Client {
    pub client_id: String,
    pub kind: ClientKind,
    pub client_name: String,
    pub redirect_uris: Vec<String>,
    pub auth_method: AuthMethod,
    /// SHA-256 hex of the secret (confidential clients).
    pub secret_hash: Option<String>,
    pub grant_types: Vec<String>,
    pub response_types: Vec<String>,
    pub scope: String,
    pub client_uri: String,
    pub logo_uri: String,
    pub application_type: String,
    pub created_at: i64,
}

impl Client {
    /// Whether the client registered `grant_type`.
    pub fn allows_grant(&self, grant_type: &str) -> bool {
        self.grant_types.iter().any(|g| g == grant_type)
    }
}

/// An RFC 7591 registration request, as parsed by the data plane.
#[derive(Debug, Clone, Default)]
pub struct Registration {
    pub redirect_uris: Vec<String>,
    pub token_endpoint_auth_method: String,
    pub grant_types: Vec<String>,
    pub response_types: Vec<String>,
    pub client_name: String,
    pub client_uri: String,
    pub logo_uri: String,
    pub scope: String,
    pub application_type: String,
    pub software_id: String,
    pub software_version: String,
    pub contacts: Vec<String>,
}

/// Client credentials as presented at `/token` or `/revoke`.
#[derive(Debug, Clone)]
pub struct PresentedClient {
    pub client_id: String,
    /// `None` for a public client.
    pub secret: Option<Secret>,
    /// Whether the credentials came in HTTP Basic.
    pub used_basic: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// RFC 7591 invalid_redirect_uri, or a redirect URI the client did not register.
    #[error("{0}")]
    InvalidRedirectUri(String),
    /// RFC 7591 invalid_client_metadata.
    #[error("{0}")]
    InvalidMetadata(String),
    #[error("unknown client_id")]
    NotFound,
    /// The client_id is a metadata document URL that could not be used.
    #[error("client metadata document {url}: {reason}")]
    MetadataDocument { url: String, reason: String },
    /// Client authentication failed (the reason is logged, never answered).
    #[error("client authentication failed")]
    AuthenticationFailed,
    #[error(transparent)]
    Store(#[from] StoreError),
}

// === Registration ===

/// Registers a client (RFC 7591 §3). Returns it with its secret, which exists
/// only in this answer for confidential clients.
pub async fn register(core: &Core, request: Registration, remote_addr: &str) -> Result<(Client, Option<Secret>), ClientError> {
    let now = core.now();
    let auth_method = match request.token_endpoint_auth_method.trim() {
        // RFC 7591 §2: the default is client_secret_basic.
        "" => AuthMethod::ClientSecretBasic,
        other => AuthMethod::parse(other).ok_or_else(|| {
            ClientError::InvalidMetadata(format!(
                "token_endpoint_auth_method {other:?} is not supported (none, client_secret_post, client_secret_basic)"
            ))
        })?,
    };
    let metadata = check_metadata(
        &core.config.clients,
        core.config.outbound.allow_loopback,
        Metadata {
            redirect_uris: request.redirect_uris,
            grant_types: request.grant_types,
            response_types: request.response_types,
            client_name: request.client_name,
            client_uri: request.client_uri,
            logo_uri: request.logo_uri,
            scope: request.scope,
            application_type: request.application_type,
        },
    )?;
    let secret = (auth_method != AuthMethod::None).then(|| secret::generate(prefix::CLIENT_SECRET));
    // Invariant: ids Gatehouse issues never look like a URL, so they cannot be
    // confused with a metadata document id (CIMD draft §3).
    let client_id = secret::random_id("cli_");
    let informational = serde_json::json!({
        "software_id": request.software_id,
        "software_version": request.software_version,
        "contacts": request.contacts,
    });
    let row = ClientRow {
        client_id: client_id.clone(),
        kind: ClientKind::Dynamic.as_str().to_string(),
        client_name: metadata.client_name,
        redirect_uris: metadata.redirect_uris,
        auth_method: auth_method.as_str().to_string(),
        secret_hash: secret.as_ref().map(Secret::hash),
        grant_types: metadata.grant_types,
        response_types: metadata.response_types,
        scope: metadata.scope,
        client_uri: metadata.client_uri,
        logo_uri: metadata.logo_uri,
        application_type: metadata.application_type,
        metadata: informational.to_string(),
        created_at: now,
        last_used_at: None,
        expires_at: Some(now + registration_ttl(core)),
    };
    core.store.insert_client(&row).await?;
    audit::record(
        core,
        NewAuditEvent {
            actor: &format!("client:{client_id}"),
            action: "client.register",
            target: &client_id,
            remote_addr,
            detail: serde_json::json!({
                "client_name": row.client_name,
                "auth_method": row.auth_method,
                "redirect_uris": row.redirect_uris,
            })
            .to_string(),
        },
    )
    .await;
    Ok((from_row(row)?, secret))
}

/// Seconds an unused dynamic registration is kept.
pub fn registration_ttl(core: &Core) -> i64 {
    core.config.clients.registration_ttl_days.max(1) * 24 * 60 * 60
}

/// Client metadata common to registrations and metadata documents.
struct Metadata {
    redirect_uris: Vec<String>,
    grant_types: Vec<String>,
    response_types: Vec<String>,
    client_name: String,
    client_uri: String,
    logo_uri: String,
    scope: String,
    application_type: String,
}

/// Validates metadata and fills defaults. The whole request is refused when one
/// redirect URI is (RFC 7591 §3.2.2: the server returns what it registered, and
/// silently dropping a URI would surprise the client at `/authorize`).
fn check_metadata(config: &ClientsConfig, allow_loopback_urls: bool, m: Metadata) -> Result<Metadata, ClientError> {
    if m.redirect_uris.is_empty() {
        return Err(ClientError::InvalidRedirectUri(
            "at least one redirect_uri is required".into(),
        ));
    }
    if m.redirect_uris.len() > MAX_REDIRECT_URIS {
        return Err(ClientError::InvalidRedirectUri(format!(
            "at most {MAX_REDIRECT_URIS} redirect_uris are accepted"
        )));
    }
    for uri in &m.redirect_uris {
        check_redirect_uri(uri, config)
            .map_err(|reason| ClientError::InvalidRedirectUri(format!("redirect_uri {:?} is refused: {reason}", shorten(uri))))?;
    }

    let grant_types = if m.grant_types.is_empty() {
        vec![GRANT_AUTHORIZATION_CODE.to_string(), GRANT_REFRESH_TOKEN.to_string()]
    } else {
        let mut unique: Vec<String> = Vec::new();
        for grant in m.grant_types {
            if grant != GRANT_AUTHORIZATION_CODE && grant != GRANT_REFRESH_TOKEN {
                return Err(ClientError::InvalidMetadata(format!(
                    "grant_type {:?} is not supported (authorization_code, refresh_token)",
                    shorten(&grant)
                )));
            }
            if !unique.contains(&grant) {
                unique.push(grant);
            }
        }
        unique
    };
    // RFC 7591 §2.1: response_type "code" goes with grant_type "authorization_code".
    if !grant_types.iter().any(|g| g == GRANT_AUTHORIZATION_CODE) {
        return Err(ClientError::InvalidMetadata(
            "grant_types must include authorization_code".into(),
        ));
    }
    // An empty list means ["code"] (RFC 7591 §2).
    if !m.response_types.iter().all(|r| r == "code") {
        return Err(ClientError::InvalidMetadata("response_types must be [\"code\"]".into()));
    }
    let response_types = vec!["code".to_string()];

    let client_name = m.client_name.trim();
    if client_name.chars().any(char::is_control) {
        return Err(ClientError::InvalidMetadata(
            "client_name must not contain control characters".into(),
        ));
    }
    if client_name.chars().count() > MAX_NAME_CHARS {
        return Err(ClientError::InvalidMetadata(format!(
            "client_name must be at most {MAX_NAME_CHARS} characters"
        )));
    }
    let client_name = if client_name.is_empty() {
        UNNAMED_CLIENT.to_string()
    } else {
        client_name.to_string()
    };

    for (field, value) in [("client_uri", &m.client_uri), ("logo_uri", &m.logo_uri)] {
        if !value.is_empty() && !is_web_url(value, allow_loopback_urls) {
            return Err(ClientError::InvalidMetadata(format!("{field} must be an https URL")));
        }
    }

    // RFC 7591 §2: the server may register less than asked; it registers only
    // the scopes it issues and says so in the answer.
    let scope = m
        .scope
        .split_whitespace()
        .filter(|s| SUPPORTED_SCOPES.contains(s))
        .collect::<Vec<_>>()
        .join(" ");

    let application_type = m.application_type.trim().to_string();
    if !["", "web", "native"].contains(&application_type.as_str()) {
        return Err(ClientError::InvalidMetadata(
            "application_type must be \"web\" or \"native\"".into(),
        ));
    }
    Ok(Metadata {
        redirect_uris: m.redirect_uris,
        grant_types,
        response_types,
        client_name,
        client_uri: m.client_uri,
        logo_uri: m.logo_uri,
        scope,
        application_type,
    })
}

/// Scopes a client may ask for: `mcp`, and `offline_access`, which is accepted
/// and ignored (refresh tokens are issued to clients that registered the grant).
pub const SUPPORTED_SCOPES: &[&str] = &["mcp", "offline_access"];

fn is_web_url(value: &str, allow_loopback_http: bool) -> bool {
    match Url::parse(value) {
        Ok(url) => {
            url.username().is_empty()
                && url.password().is_none()
                && url.host().is_some()
                && (url.scheme() == "https" || (url.scheme() == "http" && (allow_loopback_http || is_loopback_host(&url))))
        }
        Err(_) => false,
    }
}

fn shorten(value: &str) -> String {
    if value.chars().count() > 120 {
        format!("{}…", value.chars().take(120).collect::<String>())
    } else {
        value.to_string()
    }
}

// === Redirect URIs ===

/// The redirect-URI policy (OAuth 2.1 §1.5 and §2.3.1, RFC 9700 §2.1 and §4.1,
/// RFC 8252 §7): https anywhere; http only to a loopback host (any port);
/// private-use schemes only when allow-listed; never a fragment or a wildcard.
pub fn check_redirect_uri(raw: &str, config: &ClientsConfig) -> Result<(), &'static str> {
    if raw.is_empty() {
        return Err("it is empty");
    }
    if raw.len() > MAX_URI_LEN {
        return Err("it is longer than 2000 characters");
    }
    // Security: RFC 6749 §3.1.2, a redirection endpoint must not include a fragment.
    if raw.contains('#') {
        return Err("fragments are not allowed");
    }
    // Security: RFC 9700 §4.1.3, redirect URIs match exactly; a wildcard pattern
    // would let an attacker pick a URI under it.
    if raw.contains('*') {
        return Err("wildcards are not allowed (redirect URIs match exactly)");
    }
    if raw.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("whitespace and control characters are not allowed");
    }
    let url = Url::parse(raw).map_err(|_| "it is not an absolute URI")?;
    match url.scheme() {
        // Security: schemes that run code or read local files in the browser are
        // never a redirect target.
        "javascript" | "data" | "file" | "vbscript" | "blob" | "about" | "filesystem" => Err("this scheme is never allowed"),
        "https" => {
            if url.host().is_none() {
                return Err("an https URI needs a host");
            }
            if !url.username().is_empty() || url.password().is_some() {
                return Err("userinfo is not allowed");
            }
            Ok(())
        }
        "http" => {
            if !url.username().is_empty() || url.password().is_some() {
                return Err("userinfo is not allowed");
            }
            // Security: RFC 9700 §2.6 / OAuth 2.1 §1.5, plain http only to the
            // loopback interface of a native client (RFC 8252 §7.3).
            if is_loopback_host(&url) {
                Ok(())
            } else {
                Err("http is allowed only for localhost, 127.0.0.1 and [::1]")
            }
        }
        scheme => {
            // Security: RFC 8252 §7.1, a private-use scheme can be claimed by any
            // app on the device; only the schemes of known native clients, listed
            // by the operator, are accepted (PKCE then makes an intercepted code useless).
            if config
                .allowed_private_use_schemes
                .iter()
                .any(|allowed| allowed.eq_ignore_ascii_case(scheme))
            {
                Ok(())
            } else {
                Err("this private-use scheme is not in control_plane.clients.allowed_private_use_schemes")
            }
        }
    }
}

fn is_loopback_host(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip == std::net::Ipv4Addr::LOCALHOST,
        Some(url::Host::Ipv6(ip)) => ip == std::net::Ipv6Addr::LOCALHOST,
        None => false,
    }
}

/// The redirect URI a request may use: the requested one when the client
/// registered it, or the only registered one when none was requested.
pub fn match_redirect_uri(client: &Client, requested: &str) -> Option<String> {
    if requested.is_empty() {
        // OAuth 2.1 §4.1.1: redirect_uri may be omitted only when exactly one is registered.
        return match client.redirect_uris.as_slice() {
            [only] => Some(only.clone()),
            _ => None,
        };
    }
    // Security: exact string comparison (RFC 9700 §4.1.3), except the port of a
    // loopback http URI, which a native app picks at run time (RFC 8252 §7.3); a
    // prefix or pattern match would let an attacker add a path.
    client
        .redirect_uris
        .iter()
        .any(|registered| registered == requested || is_loopback_port_variant(registered, requested))
        .then(|| requested.to_string())
}

fn is_loopback_port_variant(registered: &str, requested: &str) -> bool {
    let (Ok(registered), Ok(requested_url)) = (Url::parse(registered), Url::parse(requested)) else {
        return false;
    };
    // The requested URI must already be in normal form, so what the browser is
    // sent to is exactly what was compared.
    requested_url.as_str() == requested
        && registered.scheme() == "http"
        && requested_url.scheme() == "http"
        && is_loopback_host(&registered)
        && registered.host() == requested_url.host()
        && registered.username().is_empty()
        && requested_url.username().is_empty()
        && registered.password().is_none()
        && requested_url.password().is_none()
        && registered.path() == requested_url.path()
        && registered.query() == requested_url.query()
        && registered.fragment().is_none()
        && requested_url.fragment().is_none()
}

// === Lookup ===

/// A client by id: pre-registered in the config, a Client ID Metadata Document
/// (fetched or from the cache), or registered dynamically.
pub async fn get(core: &Core, client_id: &str) -> Result<Client, ClientError> {
    if client_id.is_empty() {
        return Err(ClientError::NotFound);
    }
    if let Some(configured) = core.config.clients.static_clients.iter().find(|c| c.client_id == client_id) {
        return Ok(from_static(configured));
    }
    if client_id.starts_with("https://") || client_id.starts_with("http://") {
        return metadata_document(core, client_id).await;
    }
    let row = core.store.get_client(client_id).await?.ok_or(ClientError::NotFound)?;
    if row.kind != ClientKind::Dynamic.as_str() {
        return Err(ClientError::NotFound);
    }
    // An unused registration that lapsed is gone, even before the sweeper deletes it.
    if row.last_used_at.is_none() && row.expires_at.is_some_and(|at| at < core.now()) {
        return Err(ClientError::NotFound);
    }
    from_row(row)
}

/// Every client Gatehouse knows: the configured ones, then the stored ones, newest first.
pub async fn list(core: &Core) -> Result<Vec<Client>, ClientError> {
    let mut clients: Vec<Client> = core.config.clients.static_clients.iter().map(from_static).collect();
    for row in core.store.list_clients().await? {
        clients.push(from_row(row)?);
    }
    Ok(clients)
}

fn from_static(configured: &StaticClient) -> Client {
    let name = configured.client_name.trim();
    Client {
        client_id: configured.client_id.clone(),
        kind: ClientKind::Static,
        client_name: if name.is_empty() { UNNAMED_CLIENT.into() } else { name.into() },
        redirect_uris: configured.redirect_uris.clone(),
        auth_method: if configured.client_secret_sha256.is_some() {
            AuthMethod::ClientSecretBasic
        } else {
            AuthMethod::None
        },
        secret_hash: configured
            .client_secret_sha256
            .as_ref()
            .map(|h| h.trim().to_ascii_lowercase()),
        grant_types: vec![GRANT_AUTHORIZATION_CODE.into(), GRANT_REFRESH_TOKEN.into()],
        response_types: vec!["code".into()],
        scope: String::new(),
        client_uri: String::new(),
        logo_uri: String::new(),
        application_type: String::new(),
        created_at: 0,
    }
}

fn from_row(row: ClientRow) -> Result<Client, ClientError> {
    let kind = match row.kind.as_str() {
        "dynamic" => ClientKind::Dynamic,
        "metadata_document" => ClientKind::MetadataDocument,
        other => return Err(StoreError::Corrupt(format!("clients.kind {other:?}")).into()),
    };
    let auth_method = AuthMethod::parse(&row.auth_method)
        .ok_or_else(|| StoreError::Corrupt(format!("clients.auth_method {:?}", row.auth_method)))?;
    Ok(Client {
        client_id: row.client_id,
        kind,
        client_name: row.client_name,
        redirect_uris: row.redirect_uris,
        auth_method,
        secret_hash: row.secret_hash,
        grant_types: row.grant_types,
        response_types: row.response_types,
        scope: row.scope,
        client_uri: row.client_uri,
        logo_uri: row.logo_uri,
        application_type: row.application_type,
        created_at: row.created_at,
    })
}

// === Client ID Metadata Documents ===

/// A metadata document as published (CIMD draft §4). Unknown fields are ignored.
#[derive(Debug, Deserialize)]
struct MetadataDocument {
    client_id: String,
    client_name: Option<String>,
    redirect_uris: Option<Vec<String>>,
    token_endpoint_auth_method: Option<String>,
    #[serde(default)]
    grant_types: Vec<String>,
    #[serde(default)]
    response_types: Vec<String>,
    #[serde(default)]
    scope: String,
    #[serde(default)]
    client_uri: String,
    #[serde(default)]
    logo_uri: String,
    #[serde(default)]
    application_type: String,
}

async fn metadata_document(core: &Core, url: &str) -> Result<Client, ClientError> {
    let refused = |reason: String| ClientError::MetadataDocument {
        url: shorten(url),
        reason,
    };
    check_metadata_document_url(url, core.config.outbound.allow_loopback).map_err(|r| refused(r.into()))?;
    let now = core.now();
    if let Some(row) = core.store.get_client(url).await?
        && row.kind == ClientKind::MetadataDocument.as_str()
        && row.expires_at.is_some_and(|at| at > now)
    {
        return from_row(row);
    }

    // Security: CIMD draft §6, the fetch goes through the outbound guard (no
    // redirects, special-use addresses refused, 5 KB cap, deadline).
    let fetched = core
        .outbound
        .get(url, "application/json", Some(MAX_METADATA_DOCUMENT_BYTES))
        .await
        .map_err(|e| {
            tracing::warn!(target: "gatehouse::clients", url, error = %e, "metadata document fetch failed");
            refused(e.to_string())
        })?;
    if fetched.status != 200 {
        return Err(refused(format!("answered HTTP {} (only 200 is accepted)", fetched.status)));
    }
    let metadata = parse_metadata_document(&core.config.clients, core.config.outbound.allow_loopback, url, &fetched.body)
        .map_err(refused)?;

    let row = ClientRow {
        client_id: url.to_string(),
        kind: ClientKind::MetadataDocument.as_str().to_string(),
        client_name: metadata.client_name,
        redirect_uris: metadata.redirect_uris,
        auth_method: AuthMethod::None.as_str().to_string(),
        secret_hash: None,
        grant_types: metadata.grant_types,
        response_types: metadata.response_types,
        scope: metadata.scope,
        client_uri: metadata.client_uri,
        logo_uri: metadata.logo_uri,
        application_type: metadata.application_type,
        metadata: "{}".to_string(),
        created_at: now,
        last_used_at: None,
        expires_at: None,
    };
    // Only a valid document is cached (CIMD draft §6: never cache a failure).
    let lifetime = cache_lifetime(&fetched.headers);
    if lifetime > 0 {
        core.store
            .put_metadata_document(&ClientRow {
                expires_at: Some(now + lifetime),
                ..row.clone()
            })
            .await?;
    }
    from_row(row)
}

/// Reads a fetched metadata document (CIMD draft §4) of `url`: the metadata
/// it registers, or why it is refused. Pure, so it is fuzzed on its own.
fn parse_metadata_document(config: &ClientsConfig, allow_loopback: bool, url: &str, body: &[u8]) -> Result<Metadata, String> {
    let value: serde_json::Value = serde_json::from_slice(body).map_err(|_| "the document is not JSON".to_owned())?;
    let Some(object) = value.as_object() else {
        return Err("the document is not a JSON object".into());
    };
    // Security: CIMD draft §4.1, a document is public, so it must not use a
    // shared secret; one that carries a secret has leaked it.
    if object.keys().any(|k| k.starts_with("client_secret")) {
        return Err("a metadata document must not contain a client secret".into());
    }
    let document: MetadataDocument = serde_json::from_value(value).map_err(|e| format!("the document is malformed: {e}"))?;
    // Security: CIMD draft §4.1, the document must name itself exactly, or any
    // host could publish a document claiming another client's id.
    if document.client_id != url {
        return Err("its client_id is not exactly the document URL".into());
    }
    let client_name = document
        .client_name
        .filter(|n| !n.trim().is_empty())
        .ok_or_else(|| "client_name is required".to_owned())?;
    let redirect_uris = document
        .redirect_uris
        .filter(|r| !r.is_empty())
        .ok_or_else(|| "redirect_uris is required".to_owned())?;
    match document.token_endpoint_auth_method.as_deref() {
        None | Some("none") => {}
        Some(method) if method.starts_with("client_secret") => {
            return Err(format!(
                "token_endpoint_auth_method {method:?} uses a shared secret, which a public document cannot"
            ));
        }
        Some(method) => {
            return Err(format!("token_endpoint_auth_method {method:?} is not supported (none)"));
        }
    }
    check_metadata(
        config,
        allow_loopback,
        Metadata {
            redirect_uris,
            grant_types: document.grant_types,
            response_types: document.response_types,
            client_name,
            client_uri: document.client_uri,
            logo_uri: document.logo_uri,
            scope: document.scope,
            application_type: document.application_type,
        },
    )
    .map_err(|e| e.to_string())
}

/// Checks a metadata document URL (CIMD draft §3): https (http to loopback only
/// when the outbound config allows loopback, for development), a path, no
/// fragment, no userinfo, no dot segments, already in normal form.
fn check_metadata_document_url(raw: &str, allow_loopback: bool) -> Result<(), &'static str> {
    if raw.len() > MAX_URI_LEN {
        return Err("the URL is too long");
    }
    if raw.contains('#') {
        return Err("the URL must not contain a fragment");
    }
    let url = Url::parse(raw).map_err(|_| "not an absolute URL")?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err("the URL must not contain userinfo");
    }
    match url.scheme() {
        "https" => {}
        "http" if allow_loopback && is_loopback_host(&url) => {}
        _ => return Err("the URL must be https"),
    }
    let path = raw
        .split_once("://")
        .and_then(|(_, rest)| rest.find('/').map(|i| &rest[i..]))
        .unwrap_or("");
    let path = path.split(['?']).next().unwrap_or("");
    if path.is_empty() || path == "/" {
        return Err("the URL must have a path");
    }
    if path.split('/').any(|segment| {
        matches!(
            segment.to_ascii_lowercase().as_str(),
            "." | ".." | "%2e" | "%2e%2e" | ".%2e" | "%2e."
        )
    }) {
        return Err("the URL must not contain dot segments");
    }
    if url.as_str() != raw {
        return Err("the URL is not in normal form (lowercase scheme and host, no default port)");
    }
    Ok(())
}

/// How long a fetched document may be cached: its `Cache-Control: max-age`,
/// at most 24 hours; an hour when unsaid; not at all for no-store or no-cache.
fn cache_lifetime(headers: &reqwest::header::HeaderMap) -> i64 {
    let Some(value) = headers.get(reqwest::header::CACHE_CONTROL).and_then(|v| v.to_str().ok()) else {
        return DEFAULT_DOCUMENT_CACHE_SECONDS;
    };
    let mut lifetime = DEFAULT_DOCUMENT_CACHE_SECONDS;
    for directive in value.split(',').map(|d| d.trim().to_ascii_lowercase()) {
        if directive == "no-store" || directive == "no-cache" {
            return 0;
        }
        if let Some(seconds) = directive.strip_prefix("max-age=") {
            lifetime = seconds.trim_matches('"').parse::<i64>().unwrap_or(0);
        }
    }
    lifetime.clamp(0, MAX_DOCUMENT_CACHE_SECONDS)
}

// === Authentication ===

/// Authenticates a client at the token or revocation endpoint (RFC 6749 §2.3,
/// RFC 7591 token_endpoint_auth_method). Why it failed is logged on the security
/// target; the answer is always the same.
pub async fn authenticate(core: &Core, presented: &PresentedClient) -> Result<Client, ClientError> {
    let refuse = |reason: &'static str| {
        tracing::warn!(target: "gatehouse::security", reason, client_id = %shorten(&presented.client_id), "client authentication refused");
        ClientError::AuthenticationFailed
    };
    let client = match get(core, &presented.client_id).await {
        Ok(client) => client,
        Err(ClientError::Store(e)) => return Err(ClientError::Store(e)),
        Err(_) => return Err(refuse("unknown client")),
    };
    match (client.auth_method, &presented.secret, &client.secret_hash) {
        (AuthMethod::None, None, _) => Ok(client),
        // Security: RFC 6749 §2.3, a public client has no secret; one presenting a
        // secret is not the client it names (or is confused), so it is refused.
        (AuthMethod::None, Some(_), _) => Err(refuse("a public client presented a secret")),
        (_, None, _) => Err(refuse("a confidential client presented no secret")),
        (_, Some(_), None) => Err(refuse("a confidential client has no stored secret")),
        (method, Some(presented_secret), Some(stored_hash)) => {
            // Security: RFC 7591 §2, the client uses the method it registered
            // (static clients may use either secret method).
            let method_fits = client.kind == ClientKind::Static
                || match method {
                    AuthMethod::ClientSecretBasic => presented.used_basic,
                    AuthMethod::ClientSecretPost => !presented.used_basic,
                    AuthMethod::None => false,
                };
            if !method_fits {
                return Err(refuse("the client used another authentication method than it registered"));
            }
            // Security: hashes are compared in constant time, so timing reveals nothing of the secret.
            if secret::constant_time_eq(stored_hash.as_bytes(), presented_secret.hash().as_bytes()) {
                Ok(client)
            } else {
                Err(refuse("wrong client secret"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirect_policy() {
        let config = ClientsConfig::default();
        for ok in [
            "https://claude.ai/api/mcp/auth_callback",
            "http://localhost:8787/callback",
            "http://127.0.0.1:6276/oauth/callback",
            "http://[::1]/cb",
            "cursor://anysphere.cursor-mcp/oauth/callback",
            "vscode://x/cb",
        ] {
            assert!(check_redirect_uri(ok, &config).is_ok(), "{ok}");
        }
        for bad in [
            "http://example.com/cb",
            "https://example.com/cb#x",
            "https://*.example.com/cb",
            "javascript:alert(1)",
            "data:text/html,x",
            "file:///etc/passwd",
            "myapp://cb",
            "/relative",
            "https://user:pw@example.com/cb",
            "http://127.0.0.2/cb",
        ] {
            assert!(check_redirect_uri(bad, &config).is_err(), "{bad}");
        }
    }

    #[test]
    fn loopback_port_may_vary_nothing_else() {
        let client = Client {
            client_id: "c".into(),
            kind: ClientKind::Dynamic,
            client_name: "n".into(),
            redirect_uris: vec!["http://127.0.0.1/callback".into(), "https://app.example/cb".into()],
            auth_method: AuthMethod::None,
            secret_hash: None,
            grant_types: vec![],
            response_types: vec![],
            scope: String::new(),
            client_uri: String::new(),
            logo_uri: String::new(),
            application_type: String::new(),
            created_at: 0,
        };
        assert!(match_redirect_uri(&client, "http://127.0.0.1:51234/callback").is_some());
        assert!(match_redirect_uri(&client, "http://127.0.0.1/callback").is_some());
        assert!(match_redirect_uri(&client, "http://localhost:5/callback").is_none());
        assert!(match_redirect_uri(&client, "http://127.0.0.1:5/callback/x").is_none());
        assert!(match_redirect_uri(&client, "https://app.example:444/cb").is_none());
        assert!(match_redirect_uri(&client, "https://app.example/cb/").is_none());
        assert!(
            match_redirect_uri(&client, "").is_none(),
            "two registered: redirect_uri is required"
        );
    }

    #[test]
    fn metadata_document_urls() {
        assert!(check_metadata_document_url("https://app.example/client.json", false).is_ok());
        for bad in [
            "https://app.example",
            "https://app.example/",
            "https://app.example/a/../client.json",
            "https://app.example/./client.json",
            "https://u@app.example/client.json",
            "https://app.example/client.json#f",
            "http://app.example/client.json",
            "https://APP.example/client.json",
            "http://127.0.0.1:8080/client.json",
        ] {
            assert!(check_metadata_document_url(bad, false).is_err(), "{bad}");
        }
        assert!(check_metadata_document_url("http://127.0.0.1:8080/client.json", true).is_ok());
    }

    #[test]
    fn cache_lifetime_follows_max_age_within_bounds() {
        let mut headers = reqwest::header::HeaderMap::new();
        assert_eq!(cache_lifetime(&headers), 3600);
        headers.insert(reqwest::header::CACHE_CONTROL, "public, max-age=120".parse().unwrap());
        assert_eq!(cache_lifetime(&headers), 120);
        headers.insert(reqwest::header::CACHE_CONTROL, "max-age=999999".parse().unwrap());
        assert_eq!(cache_lifetime(&headers), 86400);
        headers.insert(reqwest::header::CACHE_CONTROL, "no-store".parse().unwrap());
        assert_eq!(cache_lifetime(&headers), 0);
    }
}

/// Properties of the redirect-URI policy and the metadata-document checks over
/// generated input (SECURITY.md): they never panic, and what they accept keeps
/// the invariants an open redirect would break.
#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::*;

    /// Strings shaped like URIs, with the parts an attacker varies.
    fn uri_like() -> impl Strategy<Value = String> {
        let scheme = prop::sample::select(vec![
            "http",
            "https",
            "HTTP",
            "HtTpS",
            "javascript",
            "JaVaScRiPt",
            "data",
            "file",
            "vbscript",
            "blob",
            "about",
            "cursor",
            "CURSOR",
            "vscode",
            "myapp",
            "ws",
            "",
        ]);
        let separator = prop::sample::select(vec!["://", ":", ":/", ":///", "//"]);
        let userinfo = prop::option::of("[a-z:@%]{0,6}");
        let host = prop::sample::select(vec![
            "localhost",
            "LocalHost",
            "127.0.0.1",
            "[::1]",
            "127.0.0.2",
            "0",
            "2130706433",
            "[::ffff:127.0.0.1]",
            "example.com",
            "evil.example",
            "*.example.com",
            "",
            "a b",
            "127.0.0.1.evil.example",
            "%6cocalhost",
        ]);
        let port = prop::option::of(0u32..70_000);
        let path = "(/[a-zA-Z0-9._%~*:@!$&'()+,;= \t-]{0,8}){0,3}";
        let query = prop::option::of("[a-z0-9=&%/?:#]{0,12}");
        let fragment = prop::option::of("[a-z0-9#/]{0,6}");
        (scheme, separator, userinfo, host, port, path, query, fragment).prop_map(
            |(scheme, separator, userinfo, host, port, path, query, fragment)| {
                let mut uri = format!("{scheme}{separator}");
                if let Some(userinfo) = userinfo {
                    uri.push_str(&format!("{userinfo}@"));
                }
                uri.push_str(host);
                if let Some(port) = port {
                    uri.push_str(&format!(":{port}"));
                }
                uri.push_str(&path);
                if let Some(query) = query {
                    uri.push_str(&format!("?{query}"));
                }
                if let Some(fragment) = fragment {
                    uri.push_str(&format!("#{fragment}"));
                }
                uri
            },
        )
    }

    /// Mostly acceptable redirect URIs, to register.
    fn registrable() -> impl Strategy<Value = String> {
        let scheme = prop::sample::select(vec!["http", "https", "cursor"]);
        let host = prop::sample::select(vec!["127.0.0.1", "localhost", "[::1]", "app.example"]);
        let port = prop::option::of(1u16..=65_535);
        let path = "(/[a-z]{1,5}){0,2}";
        let query = prop::option::of("[a-z]=[0-9]");
        (scheme, host, port, path, query).prop_map(|(scheme, host, port, path, query)| {
            let port = port.map(|p| format!(":{p}")).unwrap_or_default();
            let query = query.map(|q| format!("?{q}")).unwrap_or_default();
            format!("{scheme}://{host}{port}{path}{query}")
        })
    }

    fn any_uri() -> impl Strategy<Value = String> {
        prop_oneof![4 => uri_like(), 1 => any::<String>(), 1 => "\\PC{0,40}"]
    }

    fn client_with(redirect_uris: Vec<String>) -> Client {
        Client {
            client_id: "cli_p".into(),
            kind: ClientKind::Dynamic,
            client_name: "p".into(),
            redirect_uris,
            auth_method: AuthMethod::None,
            secret_hash: None,
            grant_types: vec![],
            response_types: vec![],
            scope: String::new(),
            client_uri: String::new(),
            logo_uri: String::new(),
            application_type: String::new(),
            created_at: 0,
        }
    }

    proptest! {
        #[test]
        fn accepted_redirect_uris_never_run_code_carry_fragments_or_leave_loopback_over_http(raw in any_uri()) {
            let config = ClientsConfig::default();
            if check_redirect_uri(&raw, &config).is_ok() {
                prop_assert!(!raw.contains('#'), "a fragment: {raw:?}");
                prop_assert!(!raw.contains('*'), "a wildcard: {raw:?}");
                prop_assert!(!raw.chars().any(|c| c.is_whitespace() || c.is_control()), "{raw:?}");
                let url = Url::parse(&raw).expect("accepted URIs parse");
                let scheme = url.scheme();
                prop_assert!(
                    !["javascript", "data", "file", "vbscript", "blob", "about", "filesystem"].contains(&scheme),
                    "scheme {scheme} in {raw:?}"
                );
                prop_assert!(url.fragment().is_none(), "{raw:?}");
                match scheme {
                    "https" => prop_assert!(url.host().is_some() && url.username().is_empty() && url.password().is_none(), "{raw:?}"),
                    "http" => {
                        prop_assert!(is_loopback_host(&url), "plain http off loopback: {raw:?}");
                        prop_assert!(url.username().is_empty() && url.password().is_none(), "{raw:?}");
                    }
                    other => prop_assert!(
                        config.allowed_private_use_schemes.iter().any(|s| s.eq_ignore_ascii_case(other)),
                        "an unlisted scheme: {raw:?}"
                    ),
                }
            }
        }

        #[test]
        fn a_matched_redirect_uri_is_a_registered_one_or_its_loopback_port_variant(
            registered in prop::collection::vec(registrable(), 1..3),
            requested in any_uri(),
            port in 1u16..=65_535,
            edit in 0usize..6,
            extra in "[a-zA-Z0-9/?&=.%:@#]{1,6}",
        ) {
            let config = ClientsConfig::default();
            let registered: Vec<String> =
                registered.into_iter().filter(|r| check_redirect_uri(r, &config).is_ok()).collect();
            prop_assume!(!registered.is_empty());
            let client = client_with(registered.clone());
            // The requested URI as sent, the first registered one on another
            // port, and a near miss of it.
            let mut variant = Url::parse(&registered[0]).expect("accepted URIs parse");
            let _ = variant.set_port(Some(port));
            let first = &registered[0];
            let near_miss = match edit {
                0 => format!("{first}{extra}"),
                1 => format!("{extra}{first}"),
                2 => first.to_ascii_uppercase(),
                3 => first.replacen("://", &format!("://{extra}"), 1),
                4 => first.replacen('/', &extra, 1),
                _ => format!("{}{extra}", variant),
            };
            for requested in [requested, variant.to_string(), near_miss] {
                let Some(matched) = match_redirect_uri(&client, &requested) else { continue };
                if requested.is_empty() {
                    // OAuth 2.1 §4.1.1: omitted only when exactly one is registered.
                    prop_assert_eq!(std::slice::from_ref(&matched), registered.as_slice());
                    continue;
                }
                prop_assert_eq!(&matched, &requested, "the browser goes where the request said");
                if registered.contains(&requested) {
                    continue;
                }
                // Only the port of a loopback http URI may differ (RFC 8252 §7.3).
                let mut url = Url::parse(&requested).expect("a matched URI parses");
                prop_assert_eq!(url.scheme(), "http");
                prop_assert!(is_loopback_host(&url), "{requested:?}");
                let _ = url.set_port(None);
                prop_assert!(
                    registered.iter().any(|r| Url::parse(r).is_ok_and(|mut r| {
                        let _ = r.set_port(None);
                        r == url
                    })),
                    "{requested:?} matched none of {registered:?}"
                );
            }
        }

        #[test]
        fn accepted_metadata_document_urls_are_https_normal_and_have_a_path(raw in any_uri(), allow_loopback in any::<bool>()) {
            if check_metadata_document_url(&raw, allow_loopback).is_ok() {
                let url = Url::parse(&raw).expect("accepted URLs parse");
                prop_assert_eq!(url.as_str(), raw.as_str(), "already in normal form");
                prop_assert!(url.scheme() == "https" || (allow_loopback && url.scheme() == "http" && is_loopback_host(&url)), "{raw:?}");
                prop_assert!(url.fragment().is_none() && url.username().is_empty() && url.password().is_none(), "{raw:?}");
                prop_assert!(url.path() != "/" && !url.path().is_empty(), "{raw:?}");
                prop_assert!(!url.path().split('/').any(|s| s == "." || s == ".."), "{raw:?}");
            }
        }

        #[test]
        fn the_cache_lifetime_of_any_header_stays_within_a_day(value in "[ -~]{0,60}") {
            let mut headers = reqwest::header::HeaderMap::new();
            if let Ok(value) = reqwest::header::HeaderValue::from_str(&value) {
                headers.insert(reqwest::header::CACHE_CONTROL, value);
            }
            let lifetime = cache_lifetime(&headers);
            prop_assert!((0..=MAX_DOCUMENT_CACHE_SECONDS).contains(&lifetime), "{lifetime}");
        }

        #[test]
        fn client_metadata_never_panics_and_keeps_only_good_redirect_uris(
            redirect_uris in prop::collection::vec(any_uri(), 0..4),
            grant_types in prop::collection::vec(prop::sample::select(vec!["authorization_code", "refresh_token", "implicit", "", "password"]), 0..3),
            response_types in prop::collection::vec(prop::sample::select(vec!["code", "token", ""]), 0..2),
            client_name in "\\PC{0,20}",
            client_uri in any_uri(),
            scope in "[a-z_ ]{0,30}",
        ) {
            let config = ClientsConfig::default();
            let checked = check_metadata(&config, false, Metadata {
                redirect_uris: redirect_uris.clone(),
                grant_types: grant_types.iter().map(|g| g.to_string()).collect(),
                response_types: response_types.iter().map(|r| r.to_string()).collect(),
                client_name,
                client_uri,
                logo_uri: String::new(),
                scope,
                application_type: String::new(),
            });
            if let Ok(metadata) = checked {
                prop_assert_eq!(&metadata.redirect_uris, &redirect_uris);
                prop_assert!(metadata.redirect_uris.iter().all(|r| check_redirect_uri(r, &config).is_ok()));
                prop_assert!(metadata.grant_types.iter().all(|g| g == GRANT_AUTHORIZATION_CODE || g == GRANT_REFRESH_TOKEN));
                prop_assert_eq!(metadata.response_types, vec!["code".to_string()]);
                prop_assert!(metadata.scope.split_whitespace().all(|s| SUPPORTED_SCOPES.contains(&s)));
                prop_assert!(!metadata.client_name.is_empty() && !metadata.client_name.chars().any(char::is_control));
            }
        }
    }
}

/// The fuzzing harness (SECURITY.md, "Fuzzing"); it lives beside the corpus, in `fuzz/`.
#[cfg(test)]
#[path = "../../fuzz/support.rs"]
mod fuzz;

/// The fuzz target `client_metadata` (SECURITY.md, "Fuzzing"): any body served
/// as the Client ID Metadata Document `https://app.example/client.json` is
/// refused, or registers a public client that names that URL and has only
/// redirect URIs the policy accepts.
#[cfg(test)]
mod fuzz_targets {
    use proptest::prelude::*;
    use serde_json::{Value, json};

    use super::*;

    const URL: &str = "https://app.example/client.json";

    fn check(body: &[u8]) -> Result<(), TestCaseError> {
        let config = ClientsConfig::default();
        for allow_loopback in [false, true] {
            let Ok(metadata) = parse_metadata_document(&config, allow_loopback, URL, body) else {
                continue;
            };
            let value: Value = serde_json::from_slice(body).expect("an accepted document is JSON");
            let object = value.as_object().expect("an accepted document is an object");
            prop_assert_eq!(object.get("client_id").and_then(Value::as_str), Some(URL));
            prop_assert!(!object.keys().any(|k| k.starts_with("client_secret")));
            prop_assert!(
                matches!(object.get("token_endpoint_auth_method"), None | Some(Value::Null))
                    || object["token_endpoint_auth_method"] == "none"
            );
            prop_assert!(!metadata.client_name.trim().is_empty());
            prop_assert!(!metadata.redirect_uris.is_empty() && metadata.redirect_uris.len() <= MAX_REDIRECT_URIS);
            for uri in &metadata.redirect_uris {
                prop_assert!(check_redirect_uri(uri, &config).is_ok(), "{:?}", uri);
            }
        }
        Ok(())
    }

    fn document() -> impl Strategy<Value = Value> {
        let uri = prop_oneof![
            3 => prop::sample::select(vec![
                "http://127.0.0.1:3000/callback",
                "http://localhost/cb",
                "https://app.example/cb",
                "cursor://anysphere.cursor-mcp/oauth/callback",
                "javascript:alert(1)",
                "http://evil.example/cb",
                "https://app.example/cb#frag",
                "https://*.example/cb",
                "",
            ])
            .prop_map(str::to_owned),
            1 => any::<String>(),
        ];
        let text = prop_oneof!["\\PC{0,12}", Just(String::new()), Just("  ".to_owned())];
        (
            prop::option::of(prop_oneof![4 => Just(json!(URL)), 1 => Just(json!("https://app.example/other.json")), 1 => Just(json!(7))]),
            prop::option::of(prop_oneof![3 => text.clone().prop_map(Value::from), 1 => Just(Value::Null), 1 => Just(json!(["x"]))]),
            prop::option::of(prop_oneof![4 => prop::collection::vec(uri, 0..4).prop_map(Value::from), 1 => Just(json!("https://app.example/cb"))]),
            prop::option::of(prop::sample::select(vec!["none", "client_secret_basic", "client_secret_post", "private_key_jwt", "NONE"])),
            prop::option::of(prop::collection::vec(
                prop::sample::select(vec!["authorization_code", "refresh_token", "client_credentials", "implicit", "password"]),
                0..3,
            )),
            prop::option::of(prop::collection::vec(prop::sample::select(vec!["code", "token", "id_token"]), 0..2)),
            prop::option::of(text),
            prop::option::of(prop::sample::select(vec!["client_secret", "client_secret_expires_at", "jwks", "extra"])),
        )
            .prop_map(|(client_id, name, uris, method, grants, responses, scope, extra)| {
                let mut object = serde_json::Map::new();
                let mut put = |key: &str, value: Option<Value>| {
                    if let Some(value) = value {
                        object.insert(key.to_owned(), value);
                    }
                };
                put("client_id", client_id);
                put("client_name", name);
                put("redirect_uris", uris);
                put("token_endpoint_auth_method", method.map(Value::from));
                put("grant_types", grants.map(Value::from));
                put("response_types", responses.map(Value::from));
                put("scope", scope.map(Value::from));
                put(extra.unwrap_or("x-extra"), Some(json!("s3cr3t")));
                Value::Object(object)
            })
    }

    #[test]
    fn client_metadata() {
        let json = document().prop_map(|value| serde_json::to_vec(&value).unwrap()).boxed();
        let edited = (json.clone(), any::<prop::sample::Index>(), any::<u8>()).prop_map(|(mut bytes, at, byte)| {
            let at = at.index(bytes.len());
            bytes[at] = byte;
            bytes
        });
        let strategy = prop_oneof![6 => json, 2 => edited, 1 => any::<Vec<u8>>()];
        fuzz::run("client_metadata", file!(), strategy, check);
    }
}
