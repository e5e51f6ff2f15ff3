//! `gatehouse up`: both planes in one process on SQLite in a data directory,
//! plus the demo upstream (an OAuth provider and an MCP server behind it), so a
//! newcomer can try the whole flow on one machine.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use gatehouse_control_plane::ControlPlane;
use gatehouse_control_plane::clock::SystemClock;
use gatehouse_control_plane::config::Role;
use gatehouse_control_plane::mcp_servers::{AuthMode, McpServer, UpstreamOAuth};
use gatehouse_control_plane::metrics::{self, MetricsServer};
use gatehouse_control_plane::secret::{self, Secret, prefix};
use gatehouse_control_plane::vault::Vault;
use gatehouse_data_plane::DataPlane;
use gatehouse_data_plane::config::Credential;

use super::{bind, shutdown_signal};
use crate::config::Config;
use crate::demo::{DemoConfig, DemoUpstream};
use crate::dev::{self, DataDir};

/// Options of `gatehouse up`.
#[derive(Debug, Clone)]
pub struct UpOptions {
    pub data_dir: PathBuf,
    pub http_addr: SocketAddr,
    pub grpc_addr: SocketAddr,
    /// Whether to start the demo upstream and register it as MCP server "demo".
    pub demo: bool,
}

/// Everything `up` started. Dropping it stops everything.
pub struct Up {
    pub control_plane: ControlPlane,
    /// The control plane's `/metrics` listener (`control_plane.metrics_listen`).
    pub control_plane_metrics: Option<MetricsServer>,
    pub data_plane: DataPlane,
    pub demo: Option<DemoUpstream>,
    pub admin_credential: Secret,
    pub public_url: String,
    pub data_dir: DataDir,
    pub created_vault_key: bool,
    pub created_admin_credential: bool,
}

impl Up {
    /// The control plane's gRPC URL.
    pub fn grpc_url(&self) -> String {
        format!("http://{}", self.control_plane.local_addr())
    }

    /// The MCP URL clients use.
    pub fn mcp_url(&self) -> String {
        format!("{}/mcp", self.public_url)
    }

    /// Stops the data plane, then the control plane.
    pub async fn shutdown(self) {
        self.data_plane.shutdown().await;
        self.control_plane.shutdown().await;
        if let Some(metrics) = self.control_plane_metrics {
            metrics.shutdown().await;
        }
        drop(self.demo);
    }
}

/// Starts everything `up` runs.
pub async fn start(mut config: Config, options: &UpOptions) -> anyhow::Result<Up> {
    let data_dir = DataDir::open(&options.data_dir)?;

    // Development defaults: the data directory holds the database, the vault key
    // file and the admin credential. A key file named in the config wins.
    config.control_plane.database_url = data_dir.database_url();
    let key_file = match &config.control_plane.vault.key_file {
        Some(path) => path.clone(),
        None => data_dir.vault_key_file(),
    };
    let created_vault_key = Vault::create_key_file_if_missing(&key_file)?;
    config.control_plane.vault.key_file = Some(key_file);
    let (admin_credential, created_admin_credential) = data_dir.admin_credential()?;
    // The in-process data plane gets a fresh credential each start; nobody else needs it.
    let data_plane_credential = secret::generate(prefix::SERVICE_CREDENTIAL);
    // The demo upstream listens on loopback; development mode may call it.
    config.control_plane.outbound.allow_loopback = true;
    config
        .control_plane
        .callers
        .push(dev::caller("admin", Role::Admin, &admin_credential));
    config
        .control_plane
        .callers
        .push(dev::caller("up-data-plane", Role::DataPlane, &data_plane_credential));

    // Order: bind both listeners first, so port 0 works and the public URL names the real port.
    let grpc_listener = bind(options.grpc_addr, "gRPC").await?;
    let http_listener = bind(options.http_addr, "HTTP").await?;
    let control_plane_metrics = match config.control_plane.metrics_listen {
        Some(addr) => Some(metrics::serve(bind(addr, "control-plane metrics").await?)?),
        None => None,
    };
    let grpc_addr = grpc_listener.local_addr()?;
    let http_addr = http_listener.local_addr()?;
    config.control_plane.listen = grpc_addr;
    config.data_plane.listen = http_addr;
    // Without an explicit public_url, finish() derives it from the bound address.
    config.finish()?;

    let demo = if options.demo {
        let listener = bind(SocketAddr::from(([127, 0, 0, 1], 0)), "the demo upstream").await?;
        let demo = DemoUpstream::spawn(listener, DemoConfig::default()).await?;
        config.control_plane.mcp_servers.push(demo_server(&demo));
        // The demo provider doubles as the OpenID provider for "Sign in", unless
        // the config names a real one.
        if config.control_plane.sign_in.is_none() {
            config.control_plane.sign_in = Some(demo.sign_in_config(config.public_url())?);
        }
        Some(demo)
    } else {
        None
    };

    let control_plane = ControlPlane::start(config.control_plane.clone(), grpc_listener, Arc::new(SystemClock)).await?;
    config.data_plane.control_plane.urls = vec![format!("http://{grpc_addr}")];
    config.data_plane.control_plane.token = Credential::new(data_plane_credential.expose());
    config.data_plane.control_plane.token_file = None;
    let data_plane = DataPlane::start(config.data_plane.clone(), http_listener).await?;

    Ok(Up {
        control_plane,
        control_plane_metrics,
        data_plane,
        demo,
        admin_credential,
        public_url: config.public_url().to_string(),
        data_dir,
        created_vault_key,
        created_admin_credential,
    })
}

/// The demo upstream as an MCP server entry: per-user OAuth, endpoints discovered.
fn demo_server(demo: &DemoUpstream) -> McpServer {
    McpServer {
        name: "demo".into(),
        display_name: "Demo Notes".into(),
        url: demo.mcp_url(),
        auth_mode: AuthMode::Oauth,
        oauth: UpstreamOAuth {
            scopes: vec!["notes.read".into()],
            client_name: "Gatehouse (development)".into(),
            ..Default::default()
        },
        ..Default::default()
    }
}

/// Runs `up` until a shutdown signal, after printing where everything is.
pub async fn run(config: Config, options: UpOptions) -> anyhow::Result<()> {
    let up = start(config, &options).await?;
    let stop = shutdown_signal();
    print_banner(&up);
    stop.await;
    tracing::info!(target: "gatehouse::up", "shutting down");
    up.shutdown().await;
    Ok(())
}

fn print_banner(up: &Up) {
    let grpc = up.control_plane.local_addr();
    let dir = up.data_dir.root.display();
    println!();
    println!("Gatehouse is up (development mode: SQLite, both planes, demo upstream).");
    println!();
    println!("  MCP URL        {}", up.mcp_url());
    println!("  Consent pages  {}/authorize (clients start there)", up.public_url);
    println!("  Health         {}/healthz", up.public_url);
    println!("  gRPC           {grpc} (plaintext; reflection and health on)");
    println!("  Metrics        {}/metrics (data plane)", up.public_url);
    if let Some(metrics) = &up.control_plane_metrics {
        println!("  Metrics        http://{}/metrics (control plane)", metrics.local_addr());
    }
    if let Some(demo) = &up.demo {
        println!(
            "  Demo upstream  {} (MCP server \"demo\"; sign in there as any account name)",
            demo.mcp_url()
        );
    }
    println!("  Data directory {dir}");
    if up.created_vault_key {
        println!("                 created vault key file {dir}/vault.keys (mode 0600)");
    }
    if up.created_admin_credential {
        println!("                 created admin credential {dir}/admin.token (mode 0600)");
    }
    println!();
    println!("  Admin credential (development): {}", up.admin_credential.expose());
    println!("  Try:  grpcurl -plaintext {grpc} list");
    println!(
        "        grpcurl -plaintext -H \"authorization: Bearer $(cat {dir}/admin.token)\" -d '{{\"name\":\"alice\"}}' {grpc} gatehouse.v1.AdminService/CreateVirtualKey"
    );
    println!();
}
