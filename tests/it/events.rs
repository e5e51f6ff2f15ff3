//! Invalidation events: a revocation reaches every data plane's caches at
//! once (`WatchEvents`), not when the cached entries expire.

use std::time::{Duration, Instant};

use gatehouse::pb::{CreateVirtualKeyRequest, RevokeVirtualKeyRequest};
use serde_json::json;

use crate::support::fleet::{Pkce, TestFleet, approve, choose_virtual_key, start_flow};
use crate::support::mcp_client::McpClient;

/// Polls `/mcp` on data plane `dp` with `token` until it answers 401, for at most `limit`.
async fn refused_within(fleet: &TestFleet, dp: usize, token: &str, limit: Duration) -> bool {
    let started = Instant::now();
    while started.elapsed() < limit {
        let response = fleet.mcp_raw(dp, reqwest::Method::POST, Some(token)).await;
        if response.status() == reqwest::StatusCode::UNAUTHORIZED {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_virtual_key_stops_working_on_every_data_plane_at_once() {
    let fleet = TestFleet::start(2).await;
    let key = fleet
        .control_plane
        .admin()
        .await
        .admin()
        .create_virtual_key(CreateVirtualKeyRequest { name: "alice".into() })
        .await
        .unwrap()
        .into_inner();
    let client = fleet.register_public().await;
    let browser = fleet.browser();
    let pkce = Pkce::new();
    let (flow_id, identity) = start_flow(&fleet, &browser, 0, &client, &pkce).await;
    let services = choose_virtual_key(&fleet, &browser, 0, &flow_id, &identity.csrf(), &key.secret).await;
    let code = approve(&fleet, &browser, 0, &client, &flow_id, &services.csrf(), &pkce).await;
    let tokens = fleet.exchange_code(0, &client, &code).await;

    // Both data planes resolve and cache the caller (the cache outlives this test).
    let mcp = McpClient::new(&fleet, &tokens.access_token);
    for _ in 0..2 {
        mcp.initialize(json!({})).await;
    }

    fleet
        .control_plane
        .admin()
        .await
        .admin()
        .revoke_virtual_key(RevokeVirtualKeyRequest { id: key.key.unwrap().id })
        .await
        .unwrap();
    for dp in 0..2 {
        assert!(
            refused_within(&fleet, dp, &tokens.access_token, Duration::from_secs(1)).await,
            "data plane {dp} still accepts the revoked identity's token"
        );
    }
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_grant_stops_working_on_every_data_plane_at_once() {
    let fleet = TestFleet::start(2).await;
    let client = fleet.register_public().await;
    let browser = fleet.browser();
    let pkce = Pkce::new();
    let (flow_id, identity) = start_flow(&fleet, &browser, 0, &client, &pkce).await;
    let services = crate::support::fleet::skip(&fleet, &browser, 0, &flow_id, &identity.csrf()).await;
    let code = approve(&fleet, &browser, 0, &client, &flow_id, &services.csrf(), &pkce).await;
    let tokens = fleet.exchange_code(0, &client, &code).await;
    let mcp = McpClient::new(&fleet, &tokens.access_token);
    for _ in 0..2 {
        mcp.initialize(json!({})).await;
    }
    // The client revokes its refresh token: the grant ends (RFC 7009 §2.1).
    let refresh = tokens.refresh_token.clone().expect("a refresh token");
    let response = fleet.revoke_raw(1, &[("token", refresh.as_str())], &client.auth()).await;
    assert_eq!(response.status(), reqwest::StatusCode::OK);
    for dp in 0..2 {
        assert!(
            refused_within(&fleet, dp, &tokens.access_token, Duration::from_secs(1)).await,
            "data plane {dp} still accepts a token of the revoked grant"
        );
    }
    fleet.stop().await;
}
