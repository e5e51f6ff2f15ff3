//! Gatehouse for the benchmark: a control plane on SQLite in a temporary
//! directory and two data planes sharing one issuer, one with the caller and
//! credential caches on (the default) and one with them off
//! (`cache_callers_and_credentials = false`). Everything listens on
//! 127.0.0.1:0; the data planes' rate limits are off (all users come from one
//! address).
//!
//! MCP servers: `vault` (the fixture upstream as a per-user OAuth service whose
//! authorization server is the demo OAuth provider: every synthetic user
//! connects it in its consent flow, so each `tools/call vault__echo` resolves
//! the caller and uses that caller's own sealed upstream token; the fixture
//! answers whatever bearer it gets; the RPC and memory runs seed more of its
//! connections, see `seed.rs`) and, when asked for, `demo` (the demo provider's
//! own MCP server, for the timed consent flows with connect).

use std::path::PathBuf;
use std::sync::Arc;

use gatehouse_control_plane::ControlPlane;
use gatehouse_control_plane::clock::SystemClock;
use gatehouse_control_plane::config::{CallerConfig, ControlPlaneConfig, Role, VaultConfig};
use gatehouse_control_plane::mcp_servers::{AuthMode, McpServer, UpstreamOAuth};
use gatehouse_control_plane::secret::{self, prefix};
use gatehouse_control_plane::vault::{KeySource, Vault};
use gatehouse_data_plane::DataPlane;
use gatehouse_data_plane::config::{ControlPlaneClientConfig, Credential, DataPlaneConfig};

/// The fixture upstream as a per-user OAuth service (the hot-path runs).
pub const VAULT_SERVICE: &str = "vault";
/// The demo OAuth provider's MCP server (consent flow with connect).
pub const DEMO_SERVICE: &str = "demo";

pub struct Fleet {
    pub control_plane: ControlPlane,
    /// Caches on; its URL is the issuer.
    pub warm: DataPlane,
    /// Caches off.
    pub cold: DataPlane,
    /// `http://127.0.0.1:port` of `warm`.
    pub issuer: String,
    /// `http://127.0.0.1:port` of `cold`.
    pub cold_url: String,
    pub shared: Shared,
}

/// What a second control plane (or a child data plane) needs to join in.
pub struct Shared {
    /// `http://127.0.0.1:port` of the control plane's gRPC.
    pub cp_url: String,
    /// The data-plane credential (plaintext), for RPC clients.
    pub credential: String,
    pub database_url: String,
    pub key_file: PathBuf,
    servers: Vec<McpServer>,
    _dir: tempfile::TempDir,
}

impl Shared {
    /// The vault the control planes use (same key file), for sealing seeded rows.
    pub fn vault(&self) -> anyhow::Result<Vault> {
        Ok(Vault::load(KeySource::File(self.key_file.clone()))?)
    }
}

/// The control plane's configuration, on `database_url`.
fn control_plane_config(
    database_url: &str,
    key_file: PathBuf,
    credential: &str,
    issuer: &str,
    servers: Vec<McpServer>,
) -> anyhow::Result<ControlPlaneConfig> {
    let mut config = ControlPlaneConfig {
        listen: "127.0.0.1:0".parse()?,
        database_url: database_url.to_owned(),
        vault: VaultConfig {
            key_file: Some(key_file),
        },
        callers: vec![CallerConfig {
            name: "bench-data-plane".into(),
            role: Role::DataPlane,
            token_sha256: secret::hash(credential),
        }],
        public_url: issuer.to_owned(),
        mcp_servers: servers,
        ..Default::default()
    };
    // The fixtures listen on loopback.
    config.outbound.allow_loopback = true;
    // Resolved callers may be cached for an hour (default one minute), so the
    // memory runs, which take longer than a minute to fill, stay warm.
    config.lifetimes.caller_cache = 3600;
    Ok(config)
}

/// A data plane's configuration (rate limits off).
pub fn data_plane_config(
    listen: std::net::SocketAddr,
    cp_url: &str,
    credential: &str,
    issuer: &str,
    cache: bool,
) -> DataPlaneConfig {
    let mut config = DataPlaneConfig {
        listen,
        control_plane: ControlPlaneClientConfig {
            urls: vec![cp_url.to_owned()],
            token: Credential::new(credential),
            ..Default::default()
        },
        public_url: issuer.to_owned(),
        cache_callers_and_credentials: cache,
        ..Default::default()
    };
    // Every synthetic user signs up from 127.0.0.1 through one client:
    // the per-address and per-client limits would refuse most of them.
    config.rate_limits.per_address_per_minute = 0;
    config.rate_limits.per_client_per_minute = 0;
    config
}

/// The demo OAuth provider (`gatehouse::demo`) the fleet's OAuth services use.
pub struct DemoProvider<'a> {
    /// Its issuer, `http://127.0.0.1:port`.
    pub base_url: &'a str,
    /// Its MCP endpoint, also the RFC 8707 resource its tokens are for.
    pub mcp_url: &'a str,
}

impl Fleet {
    /// Starts both planes on the current runtime. `vault` (the fixture at
    /// `upstream_url`) authorizes at `demo`; `demo_service`: also register the
    /// demo's own MCP server as per-user OAuth service `demo`.
    pub async fn start(upstream_url: &str, demo: &DemoProvider<'_>, demo_service: bool) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let key_file = dir.path().join("vault.keys");
        Vault::create_key_file_if_missing(&key_file)?;
        let credential = secret::generate(prefix::SERVICE_CREDENTIAL).expose().to_owned();

        let warm_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let cold_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let issuer = format!("http://{}", warm_listener.local_addr()?);
        let cold_url = format!("http://{}", cold_listener.local_addr()?);

        let mut servers = vec![McpServer {
            name: VAULT_SERVICE.into(),
            display_name: "Benchmark fixture (per-user OAuth)".into(),
            url: upstream_url.to_owned(),
            auth_mode: AuthMode::Oauth,
            // The fixture publishes no OAuth metadata: its authorization server
            // is named here (discovered from the demo's issuer metadata, the
            // client registered there once), and the demo only grants tokens
            // for its own MCP URL as the resource.
            oauth: UpstreamOAuth {
                issuer: demo.base_url.to_owned(),
                resource: demo.mcp_url.to_owned(),
                scopes: vec!["notes.read".into()],
                client_name: "Gatehouse (benchmark, vault)".into(),
                ..Default::default()
            },
            ..Default::default()
        }];
        if demo_service {
            servers.push(McpServer {
                name: DEMO_SERVICE.into(),
                display_name: "Demo Notes".into(),
                url: demo.mcp_url.to_owned(),
                auth_mode: AuthMode::Oauth,
                oauth: UpstreamOAuth {
                    scopes: vec!["notes.read".into()],
                    client_name: "Gatehouse (benchmark)".into(),
                    ..Default::default()
                },
                ..Default::default()
            });
        }
        let database_url = format!("sqlite://{}?mode=rwc", dir.path().join("bench.db").display());
        let config = control_plane_config(&database_url, key_file.clone(), &credential, &issuer, servers.clone())?;
        let cp_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let control_plane = ControlPlane::start(config, cp_listener, Arc::new(SystemClock)).await?;
        let cp_url = format!("http://{}", control_plane.local_addr());

        let warm_config = data_plane_config(warm_listener.local_addr()?, &cp_url, &credential, &issuer, true);
        let cold_config = data_plane_config(cold_listener.local_addr()?, &cp_url, &credential, &issuer, false);
        let warm = DataPlane::start(warm_config, warm_listener).await?;
        let cold = DataPlane::start(cold_config, cold_listener).await?;
        Ok(Self {
            control_plane,
            warm,
            cold,
            issuer,
            cold_url,
            shared: Shared {
                cp_url,
                credential,
                database_url,
                key_file,
                servers,
                _dir: dir,
            },
        })
    }

    /// Stops the data planes, then the control plane.
    pub async fn stop(self) {
        self.warm.shutdown().await;
        self.cold.shutdown().await;
        self.control_plane.shutdown().await;
    }
}

/// A second control plane on another database (PostgreSQL), same vault,
/// credential, issuer and MCP servers.
pub async fn second_control_plane(shared: &Shared, issuer: &str, database_url: &str) -> anyhow::Result<(ControlPlane, String)> {
    let config = control_plane_config(
        database_url,
        shared.key_file.clone(),
        &shared.credential,
        issuer,
        shared.servers.clone(),
    )?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let control_plane = ControlPlane::start(config, listener, Arc::new(SystemClock)).await?;
    let url = format!("http://{}", control_plane.local_addr());
    Ok((control_plane, url))
}
