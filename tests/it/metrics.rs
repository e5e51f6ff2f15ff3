//! `/metrics` on the data plane: what operators count.

use std::time::Duration;

use gatehouse_control_plane::mcp_servers::{AuthMode, McpServer};
use serde_json::json;

use crate::support::fleet::{Pkce, TestFleet, approve, skip, start_flow};
use crate::support::mcp_client::McpClient;
use crate::support::mcp_upstream::{McpUpstream, Script};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_upstream_is_counted_by_server_and_the_others_still_listed() {
    let slow = McpUpstream::start(Script {
        tools: vec!["crawl".into()],
        delay: Duration::from_secs(2),
        ..Default::default()
    })
    .await;
    let fine = McpUpstream::start(Script::default()).await;
    let server = |name: &str, url: &str, timeout_ms| McpServer {
        name: name.into(),
        url: url.into(),
        auth_mode: AuthMode::None,
        timeout_ms,
        ..Default::default()
    };
    let servers = vec![server("slow", &slow.url, 200), server("fine", &fine.url, 0)];
    let fleet = TestFleet::builder()
        .data_planes(1)
        .control_plane(move |config| {
            config.outbound.allow_loopback = true;
            config.mcp_servers = servers;
        })
        .spawn()
        .await;
    let client = fleet.register_public().await;
    let browser = fleet.browser();
    let pkce = Pkce::new();
    let (flow_id, identity) = start_flow(&fleet, &browser, 0, &client, &pkce).await;
    let services = skip(&fleet, &browser, 0, &flow_id, &identity.csrf()).await;
    let code = approve(&fleet, &browser, 0, &client, &flow_id, &services.csrf(), &pkce).await;
    let tokens = fleet.exchange_code(0, &client, &code).await;
    let mcp = McpClient::new(&fleet, &tokens.access_token);
    mcp.initialize(json!({})).await;
    assert_eq!(mcp.tool_names().await, ["fine__echo"]);

    let metrics = fleet.http().get(format!("{}/metrics", fleet.url(0))).send().await.unwrap();
    assert_eq!(metrics.status(), 200);
    let text = metrics.text().await.unwrap();
    assert!(
        text.contains("gatehouse_data_plane_upstream_errors_total{server=\"slow\"} 1"),
        "{text}"
    );
    assert!(!text.contains("server=\"fine\""), "{text}");
    fleet.stop().await;
}
