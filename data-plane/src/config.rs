//! Data-plane settings, as read from the `[data_plane]` table of the config
//! file (the `gatehouse` binary loads the file and fills what is shared).

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// The credential this data plane presents to the control plane. Never printed.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Credential(String);

impl Credential {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Credential([redacted])")
    }
}

/// How to reach the control plane.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControlPlaneClientConfig {
    /// One or more control-plane gRPC URLs (`http://host:port`, or `https://` with TLS);
    /// calls are balanced across them.
    #[serde(default = "default_control_plane_urls")]
    pub urls: Vec<String>,
    /// The service credential (data-plane role). Prefer `token_file` or the
    /// `GATEHOUSE_DATA_PLANE__CONTROL_PLANE__TOKEN` environment variable.
    #[serde(default)]
    pub token: Credential,
    /// File holding the service credential.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// PEM CA certificate to verify the control plane's TLS certificate.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Deadline of each call, in milliseconds.
    #[serde(default = "default_deadline_ms")]
    pub deadline_ms: u64,
}

impl Default for ControlPlaneClientConfig {
    fn default() -> Self {
        Self {
            urls: default_control_plane_urls(),
            token: Credential::default(),
            token_file: None,
            ca_file: None,
            deadline_ms: default_deadline_ms(),
        }
    }
}

impl ControlPlaneClientConfig {
    pub fn deadline(&self) -> Duration {
        Duration::from_millis(self.deadline_ms.max(1))
    }
}

fn default_control_plane_urls() -> Vec<String> {
    vec!["http://127.0.0.1:50051".to_string()]
}

fn default_deadline_ms() -> u64 {
    5_000
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}

fn default_max_body_bytes() -> usize {
    1024 * 1024
}

fn default_request_timeout_ms() -> u64 {
    60_000
}

fn default_upstream_timeout_ms() -> u64 {
    10_000
}

fn default_caller_cache_entries() -> usize {
    100_000
}

fn default_true() -> bool {
    true
}

/// The `[data_plane]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataPlaneConfig {
    /// HTTP listen address.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// How to reach the control plane.
    #[serde(default)]
    pub control_plane: ControlPlaneClientConfig,
    /// Largest request body accepted, in bytes.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
    /// Time limit of one request, in milliseconds.
    #[serde(default = "default_request_timeout_ms")]
    pub request_timeout_ms: u64,
    /// A request header set by an authenticating reverse proxy in front of the
    /// data plane (for example `X-Forwarded-User`). When set and present on a
    /// request, the identity page offers "Continue as <value>"; the control plane
    /// decides whether that proxy user is trusted. Leave unset unless a proxy
    /// strips this header from every client request.
    #[serde(default)]
    pub trusted_user_header: Option<String>,
    /// Origins (scheme://host[:port]) besides the public URL's whose browsers
    /// may call `/mcp`. A request with any other `Origin` header gets 403
    /// (DNS-rebinding defence); requests without one (native clients) pass.
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    /// Time limit of one upstream MCP call, in milliseconds, for services that
    /// set no `timeout_ms` of their own.
    #[serde(default = "default_upstream_timeout_ms")]
    pub default_upstream_timeout_ms: u64,
    /// Request rates allowed on the endpoints people and clients could abuse.
    #[serde(default)]
    pub rate_limits: crate::ratelimit::RateLimits,
    /// Most resolved callers (bearer token → identity) kept in memory.
    #[serde(default = "default_caller_cache_entries")]
    pub caller_cache_entries: usize,
    /// Whether `/mcp` caches resolved callers (bearer token → identity) and
    /// upstream credentials. Off, every request asks the control plane for
    /// both (`ResolveAccessToken`, `GetUpstreamCredential`): slower, and only
    /// meant for measuring what the caches save (the benchmark's "cache off" run).
    #[serde(default = "default_true")]
    pub cache_callers_and_credentials: bool,
    /// The public base URL (the OAuth issuer); filled from the top-level `public_url`.
    #[serde(skip)]
    pub public_url: String,
}

impl Default for DataPlaneConfig {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            control_plane: ControlPlaneClientConfig::default(),
            max_body_bytes: default_max_body_bytes(),
            request_timeout_ms: default_request_timeout_ms(),
            trusted_user_header: None,
            allowed_origins: Vec::new(),
            default_upstream_timeout_ms: default_upstream_timeout_ms(),
            caller_cache_entries: default_caller_cache_entries(),
            rate_limits: crate::ratelimit::RateLimits::default(),
            cache_callers_and_credentials: true,
            public_url: String::new(),
        }
    }
}
