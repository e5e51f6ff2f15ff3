//! `gatehouse up`: one command gives a working gateway on a fresh data directory.

use gatehouse::commands::up;
use gatehouse::config::Config;
use gatehouse::pb::{CreateVirtualKeyRequest, ListMcpServersRequest, ListVirtualKeysRequest};

use crate::support::up::options;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_serves_health_grpc_and_the_demo_upstream_and_survives_a_restart() {
    crate::support::init_logging();
    let dir = tempfile::tempdir().unwrap();
    let running = up::start(Config::default(), &options(dir.path())).await.unwrap();
    assert!(running.created_vault_key && running.created_admin_credential);
    assert!(running.public_url.starts_with("http://127.0.0.1:") && !running.public_url.ends_with(":0"));
    #[cfg(unix)]
    for file in ["vault.keys", "admin.token"] {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(dir.path().join(file)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{file} is private");
    }

    let http = reqwest::Client::new();
    let health: serde_json::Value = http
        .get(format!("{}/healthz", running.public_url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health, serde_json::json!({ "status": "ok", "control_plane": "serving" }));
    let ready = http.get(format!("{}/readyz", running.public_url)).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    let response = http.get(format!("{}/healthz", running.public_url)).send().await.unwrap();
    assert!(
        response.headers().contains_key("x-request-id"),
        "every response carries a request id"
    );

    let admin = gatehouse::admin_client::GrpcClient::connect(&running.grpc_url(), running.admin_credential.expose())
        .await
        .unwrap();
    let servers = admin
        .admin()
        .list_mcp_servers(ListMcpServersRequest {})
        .await
        .unwrap()
        .into_inner()
        .servers;
    let demo = running.demo.as_ref().unwrap();
    assert_eq!(servers.len(), 1);
    assert_eq!((servers[0].name.as_str(), servers[0].url.clone()), ("demo", demo.mcp_url()));
    let key = admin
        .admin()
        .create_virtual_key(CreateVirtualKeyRequest { name: "alice".into() })
        .await
        .unwrap()
        .into_inner();
    let credential = running.admin_credential.expose().to_string();
    running.shutdown().await;

    // Same data directory: same credential, same keys, nothing created anew.
    let again = up::start(Config::default(), &options(dir.path())).await.unwrap();
    assert!(!again.created_vault_key && !again.created_admin_credential);
    assert_eq!(again.admin_credential.expose(), credential);
    let admin = gatehouse::admin_client::GrpcClient::connect(&again.grpc_url(), &credential)
        .await
        .unwrap();
    let keys = admin
        .admin()
        .list_virtual_keys(ListVirtualKeysRequest { include_revoked: false })
        .await
        .unwrap()
        .into_inner()
        .keys;
    assert_eq!(keys, [key.key.unwrap()]);
    again.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_plane_readiness_follows_the_control_plane() {
    let dir = tempfile::tempdir().unwrap();
    let running = up::start(Config::default(), &options(dir.path())).await.unwrap();
    let http = reqwest::Client::new();
    let public_url = running.public_url.clone();
    assert_eq!(http.get(format!("{public_url}/readyz")).send().await.unwrap().status(), 200);
    running.control_plane.shutdown().await;
    let ready = http.get(format!("{public_url}/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    let health: serde_json::Value = http
        .get(format!("{public_url}/healthz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["control_plane"], "unreachable");
    running.data_plane.shutdown().await;
}
