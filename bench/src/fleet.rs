//! Gatehouse for the benchmark: a control plane on SQLite in a temporary
//! directory and two data planes sharing one issuer, one with the
//! caller and credential caches on (the default) and one with them off
//! (`cache_callers_and_credentials = false`). The fixture upstream is MCP
//! server `fast` (no upstream auth). Everything listens on 127.0.0.1:0.
//! The data planes' rate limits are off (all users come from one address).

use std::sync::Arc;

use gatehouse_control_plane::ControlPlane;
use gatehouse_control_plane::clock::SystemClock;
use gatehouse_control_plane::config::{CallerConfig, ControlPlaneConfig, Role, VaultConfig};
use gatehouse_control_plane::mcp_servers::{AuthMode, McpServer};
use gatehouse_control_plane::secret::{self, prefix};
use gatehouse_control_plane::vault::Vault;
use gatehouse_data_plane::DataPlane;
use gatehouse_data_plane::config::{ControlPlaneClientConfig, Credential, DataPlaneConfig};

/// The MCP server name the fixture is registered under.
pub const SERVICE: &str = "fast";

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
    _dir: tempfile::TempDir,
}

impl Fleet {
    /// Starts both planes on the current runtime.
    pub async fn start(upstream_url: &str) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let key_file = dir.path().join("vault.keys");
        Vault::create_key_file_if_missing(&key_file)?;
        let credential = secret::generate(prefix::SERVICE_CREDENTIAL);

        let warm_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let cold_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let issuer = format!("http://{}", warm_listener.local_addr()?);
        let cold_url = format!("http://{}", cold_listener.local_addr()?);

        let mut config = ControlPlaneConfig {
            listen: "127.0.0.1:0".parse()?,
            database_url: format!("sqlite://{}?mode=rwc", dir.path().join("bench.db").display()),
            vault: VaultConfig {
                key_file: Some(key_file),
            },
            callers: vec![CallerConfig {
                name: "bench-data-plane".into(),
                role: Role::DataPlane,
                token_sha256: secret::hash(credential.expose()),
            }],
            public_url: issuer.clone(),
            mcp_servers: vec![McpServer {
                name: SERVICE.into(),
                display_name: "Benchmark fixture".into(),
                url: upstream_url.to_owned(),
                auth_mode: AuthMode::None,
                ..Default::default()
            }],
            ..Default::default()
        };
        // The fixture listens on loopback.
        config.outbound.allow_loopback = true;
        let cp_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let control_plane = ControlPlane::start(config, cp_listener, Arc::new(SystemClock)).await?;
        let cp_url = format!("http://{}", control_plane.local_addr());

        let data_plane = |listener: &tokio::net::TcpListener, cache: bool| -> anyhow::Result<DataPlaneConfig> {
            let mut config = DataPlaneConfig {
                listen: listener.local_addr()?,
                control_plane: ControlPlaneClientConfig {
                    urls: vec![cp_url.clone()],
                    token: Credential::new(credential.expose()),
                    ..Default::default()
                },
                public_url: issuer.clone(),
                cache_callers_and_credentials: cache,
                ..Default::default()
            };
            // Every synthetic user signs up from 127.0.0.1 through one client:
            // the per-address and per-client limits would refuse most of them.
            config.rate_limits.per_address_per_minute = 0;
            config.rate_limits.per_client_per_minute = 0;
            Ok(config)
        };
        let warm_config = data_plane(&warm_listener, true)?;
        let cold_config = data_plane(&cold_listener, false)?;
        let warm = DataPlane::start(warm_config, warm_listener).await?;
        let cold = DataPlane::start(cold_config, cold_listener).await?;
        Ok(Self {
            control_plane,
            warm,
            cold,
            issuer,
            cold_url,
            _dir: dir,
        })
    }

    /// Stops the data planes, then the control plane.
    pub async fn stop(self) {
        self.warm.shutdown().await;
        self.cold.shutdown().await;
        self.control_plane.shutdown().await;
    }
}
