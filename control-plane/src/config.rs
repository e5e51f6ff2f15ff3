//! Control-plane settings, as read from the `[control_plane]` table of the
//! config file (the `gatehouse` binary loads the file and fills what is shared).

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

use crate::mcp_servers::McpServer;

/// What a caller of the gRPC API may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Flow and token services (a data plane).
    DataPlane,
    /// The admin service.
    Admin,
    /// Only `TokenService.ReadUpstreamToken` (an internal service reading upstream tokens).
    TokenReader,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::DataPlane => "data-plane",
            Self::Admin => "admin",
            Self::TokenReader => "token-reader",
        }
    }
}

/// A caller of the gRPC API and its credential. Only the credential's SHA-256 is configured.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallerConfig {
    /// Name used in logs and the audit log.
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// SHA-256 (lowercase hex) of the bearer credential it presents.
    pub token_sha256: String,
}

/// Vault key source.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VaultConfig {
    /// Key ring file (`<id> <base64 key>` a line; the last seals). When unset,
    /// keys come from the `GATEHOUSE_VAULT_KEYS` environment variable.
    pub key_file: Option<PathBuf>,
}

/// TLS for the gRPC listener.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain.
    pub cert_file: PathBuf,
    /// PEM private key.
    pub key_file: PathBuf,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 50051))
}

fn default_database_url() -> String {
    "sqlite://gatehouse-data/gatehouse.db?mode=rwc".to_string()
}

fn default_audit_retention_days() -> u32 {
    90
}

/// Lifetimes of what the control plane issues, in seconds.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Lifetimes {
    /// Pending consent flows.
    pub flow: i64,
    /// Authorization codes.
    pub code: i64,
    /// Access tokens.
    pub access_token: i64,
    /// Refresh tokens, counted from their last use.
    pub refresh_token_idle: i64,
    /// Upstream OAuth states.
    pub upstream_state: i64,
    /// How long a data plane may cache a resolved caller.
    pub caller_cache: i64,
}

impl Default for Lifetimes {
    fn default() -> Self {
        Self {
            flow: 15 * 60,
            code: 5 * 60,
            access_token: 60 * 60,
            refresh_token_idle: 30 * 24 * 60 * 60,
            upstream_state: 10 * 60,
            caller_cache: 60,
        }
    }
}

/// The `[control_plane]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControlPlaneConfig {
    /// gRPC listen address.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Address of the Prometheus `/metrics` listener (plain HTTP, e.g.
    /// `127.0.0.1:9464`); absent: no listener. The commands start it (`metrics::serve`).
    #[serde(default)]
    pub metrics_listen: Option<SocketAddr>,
    /// `sqlite://…` (default, a file) or `postgres://…`.
    #[serde(default = "default_database_url")]
    pub database_url: String,
    /// Vault key source.
    #[serde(default)]
    pub vault: VaultConfig,
    /// Who may call, with which role.
    #[serde(default)]
    pub callers: Vec<CallerConfig>,
    /// TLS for the listener; plaintext when absent.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// Lifetimes.
    #[serde(default)]
    pub lifetimes: Lifetimes,
    /// Outbound HTTP (metadata documents, upstream OAuth, sign-in).
    #[serde(default)]
    pub outbound: crate::outbound::OutboundConfig,
    /// MCP clients: redirect-URI policy, pre-registered clients, registration lifetime.
    #[serde(default)]
    pub clients: crate::clients::ClientsConfig,
    /// Whether the data plane may assert a user named by a trusted authenticating
    /// proxy (`ChooseIdentity.proxy_user`). Off unless a proxy in front of every
    /// data plane strips and sets that header.
    #[serde(default)]
    pub trust_proxy_user: bool,
    /// User sign-in at an OpenID Connect provider; absent: no "sign in" choice.
    #[serde(default)]
    pub sign_in: Option<crate::sign_in::SignInConfig>,
    /// Days an audit event is kept before the sweeper deletes it; 0 keeps
    /// events forever. Every `/register` and `/authorize` adds one, so without
    /// a bound the log grows with anonymous traffic.
    #[serde(default = "default_audit_retention_days")]
    pub audit_retention_days: u32,
    /// The public base URL of the gateway (the OAuth issuer); filled from the
    /// top-level `public_url`.
    #[serde(skip)]
    pub public_url: String,
    /// MCP servers seeded from the config file's `[[mcp_servers]]`.
    #[serde(skip)]
    pub mcp_servers: Vec<McpServer>,
}

impl Default for ControlPlaneConfig {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            metrics_listen: None,
            database_url: default_database_url(),
            vault: VaultConfig::default(),
            callers: Vec::new(),
            tls: None,
            lifetimes: Lifetimes::default(),
            outbound: crate::outbound::OutboundConfig::default(),
            clients: crate::clients::ClientsConfig::default(),
            trust_proxy_user: false,
            sign_in: None,
            audit_retention_days: default_audit_retention_days(),
            public_url: String::new(),
            mcp_servers: Vec::new(),
        }
    }
}
