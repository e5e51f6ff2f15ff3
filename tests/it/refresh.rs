//! Upstream token refresh in the background, ahead of expiry, and how each
//! kind of failure is handled: transient (keep the token, back off),
//! `invalid_grant` (needs the person again, shown in the pages and the admin
//! API), `invalid_client` (a dynamic registration is made again).

use std::time::Duration;

use gatehouse::demo::{DemoConfig, DemoUpstream};
use gatehouse::pb::{
    ConnectionStatus, CreateVirtualKeyRequest, ErrorReason, ListConnectionsRequest, QueryAuditLogRequest,
    ReadUpstreamTokenRequest,
};
use gatehouse_control_plane::mcp_servers::{AuthMode, McpServer};
use gatehouse_control_plane::refresher::refresh_due_once;
use serde_json::json;

use crate::support::fleet::{Pkce, TestFleet, Tokens, approve, choose_virtual_key, connect_demo_service, start_flow};
use crate::support::mcp_client::McpClient;
use crate::support::plane::TOKEN_READER;

/// Upstream access tokens live this long (seconds): the refresher finds a
/// token due once it expires within two rounds plus the margin (120 s).
const UPSTREAM_TTL: u64 = 150;

async fn setup() -> (DemoUpstream, TestFleet, String) {
    let demo = DemoUpstream::spawn(
        tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        DemoConfig {
            access_token_ttl: Duration::from_secs(UPSTREAM_TTL),
            ..DemoConfig::default()
        },
    )
    .await
    .unwrap();
    let demo_mcp = demo.mcp_url();
    let fleet = TestFleet::builder()
        .control_plane(move |config| {
            config.outbound.allow_loopback = true;
            config.mcp_servers = vec![McpServer {
                name: "notes".into(),
                url: demo_mcp,
                auth_mode: AuthMode::Oauth,
                ..Default::default()
            }];
        })
        .spawn()
        .await;
    let key = fleet
        .control_plane
        .admin()
        .await
        .admin()
        .create_virtual_key(CreateVirtualKeyRequest { name: "alice".into() })
        .await
        .unwrap()
        .into_inner()
        .secret;
    (demo, fleet, key)
}

/// Alice consents with her key and connects `notes` as "alice".
async fn consent(fleet: &TestFleet, demo: &DemoUpstream, key: &str) -> Tokens {
    let client = fleet.register_public().await;
    let browser = fleet.browser();
    let pkce = Pkce::new();
    let (flow_id, identity) = start_flow(fleet, &browser, 0, &client, &pkce).await;
    let services = choose_virtual_key(fleet, &browser, 0, &flow_id, &identity.csrf(), key).await;
    let csrf = services.csrf();
    connect_demo_service(fleet, &browser, 0, (&flow_id, &csrf), "notes", demo.base_url(), "alice").await;
    let code = approve(fleet, &browser, 0, &client, &flow_id, &csrf, &pkce).await;
    fleet.exchange_code(0, &client, &code).await
}

async fn connection(fleet: &TestFleet) -> gatehouse::pb::Connection {
    let mut connections = fleet
        .control_plane
        .admin()
        .await
        .admin()
        .list_connections(ListConnectionsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .connections;
    assert_eq!(connections.len(), 1);
    connections.remove(0)
}

async fn audited(fleet: &TestFleet, action: &str) -> usize {
    fleet
        .control_plane
        .admin()
        .await
        .admin()
        .query_audit_log(QueryAuditLogRequest {
            action_prefix: action.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .events
        .len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_refreshed_in_the_background_before_they_expire() {
    let (demo, fleet, key) = setup().await;
    let tokens = consent(&fleet, &demo, &key).await;
    let core = fleet.control_plane.core().clone();
    let before = connection(&fleet).await;

    // Not due yet: nothing happens.
    assert_eq!(refresh_due_once(&core).await.unwrap().due, 0);
    assert_eq!(demo.stats().refreshes(), 0);

    // 40 s later the token expires within the refresher's horizon: one refresh.
    fleet.clock.advance(40);
    let report = refresh_due_once(&core).await.unwrap();
    assert_eq!((report.due, report.failed), (1, 0));
    assert_eq!(demo.stats().refreshes(), 1);
    let after = connection(&fleet).await;
    assert!(after.expires_at > before.expires_at, "a new expiry: {after:?}");
    assert!(after.last_refresh_at > 0);
    assert_eq!(after.status, ConnectionStatus::Connected as i32);

    // Calls use the new token with no refresh of their own; nothing is due any more.
    let mcp = McpClient::new(&fleet, &tokens.access_token);
    assert_eq!(mcp.call_text("notes__whoami", json!({})).await, "you are alice");
    assert_eq!(refresh_due_once(&core).await.unwrap().due, 0);
    assert_eq!(demo.stats().refreshes(), 1);
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transient_refresh_failure_keeps_the_token_and_backs_off() {
    let (demo, fleet, key) = setup().await;
    let tokens = consent(&fleet, &demo, &key).await;
    let core = fleet.control_plane.core().clone();
    let before = connection(&fleet).await;

    demo.fail_next_token_requests(1000);
    fleet.clock.advance(40);
    let report = refresh_due_once(&core).await.unwrap();
    assert_eq!((report.due, report.failed), (1, 1));
    let requests_after_first_round = demo.stats().token_requests();
    assert!(requests_after_first_round >= 1);

    // The token stays, the connection stays connected, and calls go on with it.
    let after = connection(&fleet).await;
    assert_eq!(after.status, ConnectionStatus::Connected as i32);
    assert_eq!(after.expires_at, before.expires_at, "the token was kept");
    let mcp = McpClient::new(&fleet, &tokens.access_token);
    assert_eq!(mcp.call_text("notes__whoami", json!({})).await, "you are alice");
    assert_eq!(audited(&fleet, "connection.refresh_failed").await, 1);

    // Backing off: another round right away does not ask the provider again.
    refresh_due_once(&core).await.unwrap();
    assert_eq!(demo.stats().token_requests(), requests_after_first_round);
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_grant_marks_the_connection_for_re_authorization_in_the_admin_api_and_the_pages() {
    let (demo, fleet, key) = setup().await;
    consent(&fleet, &demo, &key).await;
    let core = fleet.control_plane.core().clone();

    demo.revoke_all();
    fleet.clock.advance(40);
    assert_eq!(refresh_due_once(&core).await.unwrap().failed, 1);
    let needing = connection(&fleet).await;
    assert_eq!(needing.status, ConnectionStatus::NeedsReauth as i32);
    assert_eq!(audited(&fleet, "connection.needs_reauth").await, 1);

    // An internal service asking for the token is told the connection needs re-auth.
    let refused = fleet
        .control_plane
        .client(TOKEN_READER)
        .await
        .tokens()
        .read_upstream_token(ReadUpstreamTokenRequest {
            identity_id: needing.identity_id.clone(),
            service: "notes".into(),
            purpose: "nightly sync".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    let detail = gatehouse::admin_client::error_detail(&refused).expect("an ErrorDetail");
    assert_eq!(detail.reason, ErrorReason::NeedsReauth as i32);

    // Alice's next consent shows it and offers to reconnect; reconnecting fixes it.
    let client = fleet.register_public().await;
    let browser = fleet.browser();
    let pkce = Pkce::new();
    let (flow_id, identity) = start_flow(&fleet, &browser, 0, &client, &pkce).await;
    let services = choose_virtual_key(&fleet, &browser, 0, &flow_id, &identity.csrf(), &key).await;
    assert!(services.html.contains("Needs re-authorization"), "{}", services.html);
    assert!(services.html.contains("Reconnect"));
    let csrf = services.csrf();
    connect_demo_service(&fleet, &browser, 0, (&flow_id, &csrf), "notes", demo.base_url(), "alice").await;
    let code = approve(&fleet, &browser, 0, &client, &flow_id, &csrf, &pkce).await;
    let tokens = fleet.exchange_code(0, &client, &code).await;
    assert_eq!(connection(&fleet).await.status, ConnectionStatus::Connected as i32);
    let mcp = McpClient::new(&fleet, &tokens.access_token);
    assert_eq!(mcp.call_text("notes__whoami", json!({})).await, "you are alice");
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_client_forgets_the_dynamic_registration_and_the_next_connect_registers_again() {
    let (demo, fleet, key) = setup().await;
    consent(&fleet, &demo, &key).await;
    let core = fleet.control_plane.core().clone();
    assert_eq!(demo.stats().registrations(), 1);

    // The provider forgets Gatehouse's registration.
    let client_id = core
        .store
        .get_upstream_client("notes")
        .await
        .unwrap()
        .expect("a registration")
        .client_id;
    assert!(demo.remove_client(&client_id));
    fleet.clock.advance(40);
    assert_eq!(refresh_due_once(&core).await.unwrap().failed, 1);
    assert_eq!(connection(&fleet).await.status, ConnectionStatus::NeedsReauth as i32);

    // Reconnecting registers Gatehouse again and works.
    consent(&fleet, &demo, &key).await;
    assert_eq!(demo.stats().registrations(), 2);
    assert_eq!(connection(&fleet).await.status, ConnectionStatus::Connected as i32);
    fleet.stop().await;
}
