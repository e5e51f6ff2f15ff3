//! The official Python MCP SDK client (`mcp` 1.x, its `OAuthClientProvider`
//! driven headlessly through the consent pages) against `gatehouse up`.

use gatehouse::commands::up::{self, UpOptions};
use gatehouse::config::Config;

use crate::support::tools;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_completes_oauth_through_the_consent_pages_and_lists_tools() {
    let Some(python) = tools::python() else { return };
    crate::support::init_logging();
    let dir = tempfile::tempdir().unwrap();
    let running = up::start(
        Config::default(),
        &UpOptions {
            data_dir: dir.path().to_path_buf(),
            http_addr: "127.0.0.1:0".parse().unwrap(),
            grpc_addr: "127.0.0.1:0".parse().unwrap(),
            demo: true,
        },
    )
    .await
    .unwrap();
    let output = tokio::process::Command::new(python)
        .arg(tools::repo().join("tests/sdk/python/oauth_list_tools.py"))
        .arg(running.mcp_url())
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "the Python SDK run failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let result: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(result["iss"], running.public_url.as_str(), "{result}");
    assert!(result["tools"].is_array(), "{result}");
    running.shutdown().await;
}
