//! A control plane on port 0 with a fresh database, a vault key file and known
//! credentials for each role.

use std::path::PathBuf;
use std::sync::Arc;

use gatehouse::admin_client::GrpcClient;
use gatehouse_control_plane::ControlPlane;
use gatehouse_control_plane::clock::TestClock;
use gatehouse_control_plane::config::{CallerConfig, ControlPlaneConfig, Role, VaultConfig};
use gatehouse_control_plane::mcp_servers::McpServer;
use gatehouse_control_plane::secret;
use gatehouse_control_plane::vault::Vault;

use super::TestDb;

pub const ADMIN: &str = "gh_svc_test-admin-credential";
pub const DATA_PLANE: &str = "gh_svc_test-data-plane-credential";
pub const TOKEN_READER: &str = "gh_svc_test-token-reader-credential";

pub struct TestControlPlane {
    pub plane: Option<ControlPlane>,
    pub key_file: PathBuf,
    pub url: String,
    _dir: tempfile::TempDir,
}

/// Settings for a test control plane on `db`.
pub fn config(db: &TestDb, key_file: PathBuf) -> ControlPlaneConfig {
    let caller = |name: &str, role, credential: &str| CallerConfig {
        name: name.into(),
        role,
        token_sha256: secret::hash(credential),
    };
    ControlPlaneConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        database_url: db.url.clone(),
        vault: VaultConfig {
            key_file: Some(key_file),
        },
        callers: vec![
            caller("test-admin", Role::Admin, ADMIN),
            caller("test-data-plane", Role::DataPlane, DATA_PLANE),
            caller("test-token-reader", Role::TokenReader, TOKEN_READER),
        ],
        public_url: "http://127.0.0.1:9".into(),
        ..Default::default()
    }
}

impl TestControlPlane {
    pub async fn start(db: &TestDb) -> Self {
        Self::start_with(db, Vec::new()).await
    }

    pub async fn start_with(db: &TestDb, mcp_servers: Vec<McpServer>) -> Self {
        super::init_logging();
        let dir = tempfile::tempdir().expect("temp dir");
        let key_file = dir.path().join("vault.keys");
        Vault::create_key_file_if_missing(&key_file).expect("key file");
        let mut config = config(db, key_file.clone());
        config.mcp_servers = mcp_servers;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let plane = ControlPlane::start(config, listener, Arc::new(TestClock::default()))
            .await
            .expect("control plane starts");
        let url = format!("http://{}", plane.local_addr());
        Self {
            plane: Some(plane),
            key_file,
            url,
            _dir: dir,
        }
    }

    /// A control plane whose settings `configure` adjusts (after the test
    /// defaults), on a clock the caller keeps to move time.
    pub async fn start_configured(db: &TestDb, clock: Arc<TestClock>, configure: impl FnOnce(&mut ControlPlaneConfig)) -> Self {
        super::init_logging();
        let dir = tempfile::tempdir().expect("temp dir");
        let key_file = dir.path().join("vault.keys");
        Vault::create_key_file_if_missing(&key_file).expect("key file");
        let mut config = config(db, key_file.clone());
        configure(&mut config);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let plane = ControlPlane::start(config, listener, clock)
            .await
            .expect("control plane starts");
        let url = format!("http://{}", plane.local_addr());
        Self {
            plane: Some(plane),
            key_file,
            url,
            _dir: dir,
        }
    }

    pub fn core(&self) -> &Arc<gatehouse_control_plane::Core> {
        self.plane.as_ref().expect("running").core()
    }

    /// A client presenting `credential`.
    pub async fn client(&self, credential: &str) -> GrpcClient {
        GrpcClient::connect(&self.url, credential).await.expect("connect")
    }

    pub async fn admin(&self) -> GrpcClient {
        self.client(ADMIN).await
    }

    pub async fn stop(mut self) {
        if let Some(plane) = self.plane.take() {
            plane.shutdown().await;
        }
    }
}
