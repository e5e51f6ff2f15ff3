//! The administration of identities, connections and grants, and the token
//! API for internal services (`ReadUpstreamToken`), over gRPC.

use std::time::{Duration, Instant};

use gatehouse::pb::{
    ConnectionStatus, CreateVirtualKeyRequest, IdentityKind, ListConnectionsRequest, ListGrantsRequest, ListIdentitiesRequest,
    QueryAuditLogRequest, ReadUpstreamTokenRequest, RevokeGrantsRequest, revoke_grants_request::Selector,
};
use gatehouse_control_plane::mcp_servers::{AuthMode, McpServer};
use serde_json::json;
use tonic::Code;

use crate::support::fleet::{Pkce, TestFleet, approve, choose_virtual_key, connect_demo_service, start_flow};
use crate::support::mcp_client::McpClient;
use crate::support::plane::{DATA_PLANE, TOKEN_READER};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_lists_and_revokes_and_a_token_reader_reads_the_upstream_token() {
    let demo = gatehouse::demo::DemoUpstream::spawn(
        tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        gatehouse::demo::DemoConfig::default(),
    )
    .await
    .unwrap();
    let demo_mcp = demo.mcp_url();
    let fleet = TestFleet::builder()
        .data_planes(2)
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
    let admin = fleet.control_plane.admin().await;
    let key = admin
        .admin()
        .create_virtual_key(CreateVirtualKeyRequest { name: "alice".into() })
        .await
        .unwrap()
        .into_inner();
    let identity_id = key.key.unwrap().identity_id;

    // Alice consents with her key and connects the demo service as "alice".
    let client = fleet.register_public().await;
    let browser = fleet.browser();
    let pkce = Pkce::new();
    let (flow_id, identity) = start_flow(&fleet, &browser, 0, &client, &pkce).await;
    let services = choose_virtual_key(&fleet, &browser, 0, &flow_id, &identity.csrf(), &key.secret).await;
    let csrf = services.csrf();
    connect_demo_service(&fleet, &browser, 1, (&flow_id, &csrf), "notes", demo.base_url(), "alice").await;
    let code = approve(&fleet, &browser, 0, &client, &flow_id, &csrf, &pkce).await;
    let tokens = fleet.exchange_code(0, &client, &code).await;

    let identities = admin
        .admin()
        .list_identities(ListIdentitiesRequest {
            kind: IdentityKind::VirtualKey as i32,
        })
        .await
        .unwrap()
        .into_inner()
        .identities;
    assert_eq!(identities.len(), 1);
    assert_eq!(
        (identities[0].id.as_str(), identities[0].display_name.as_str()),
        (identity_id.as_str(), "alice")
    );

    let connections = admin
        .admin()
        .list_connections(ListConnectionsRequest {
            identity_id: identity_id.clone(),
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .connections;
    assert_eq!(connections.len(), 1);
    assert_eq!(connections[0].status, ConnectionStatus::Connected as i32);
    assert_eq!(connections[0].account, "alice");
    assert!(connections[0].has_refresh_token);

    // An internal service reads Alice's upstream token; it works at the upstream.
    let read = fleet
        .control_plane
        .client(TOKEN_READER)
        .await
        .tokens()
        .read_upstream_token(ReadUpstreamTokenRequest {
            identity_id: identity_id.clone(),
            service: "notes".into(),
            purpose: "nightly sync".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let authorization = &read.headers.iter().find(|h| h.name == "authorization").unwrap().value;
    let whoami: serde_json::Value = reqwest::Client::new()
        .get(format!("{}/userinfo", demo.base_url()))
        .header("authorization", authorization)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(whoami["sub"], "alice");
    let audit = admin
        .admin()
        .query_audit_log(QueryAuditLogRequest {
            action_prefix: "token.read".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .events;
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0].actor, "service:test-token-reader");
    assert!(
        !format!("{audit:?}").contains(authorization.trim_start_matches("Bearer ")),
        "the audit log holds no token"
    );
    // The data-plane credential may not read tokens; an unknown identity is refused.
    let refused = fleet
        .control_plane
        .client(DATA_PLANE)
        .await
        .tokens()
        .read_upstream_token(ReadUpstreamTokenRequest {
            identity_id: identity_id.clone(),
            service: "notes".into(),
            purpose: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    let unknown = fleet
        .control_plane
        .client(TOKEN_READER)
        .await
        .tokens()
        .read_upstream_token(ReadUpstreamTokenRequest {
            identity_id: "idn_nobody".into(),
            service: "notes".into(),
            purpose: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);

    // The operator refreshes the connection now, then deletes it (revoked at the provider).
    let refreshes = demo.stats().refreshes();
    let refreshed = admin
        .admin()
        .refresh_connection(gatehouse::pb::RefreshConnectionRequest {
            id: connections[0].id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(demo.stats().refreshes(), refreshes + 1, "exactly one refresh");
    assert!(refreshed.last_refresh_at > 0);
    let revocations = demo.stats().revocations();
    let deleted = admin
        .admin()
        .delete_connection(gatehouse::pb::DeleteConnectionRequest {
            id: connections[0].id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(deleted.revoked_upstream);
    assert!(demo.stats().revocations() > revocations);
    let gone = admin
        .admin()
        .delete_connection(gatehouse::pb::DeleteConnectionRequest {
            id: connections[0].id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(gone.code(), Code::NotFound);

    // The operator revokes every grant of the identity: the client's token stops at once.
    let mcp = McpClient::new(&fleet, &tokens.access_token);
    mcp.initialize(json!({})).await;
    let grants = admin
        .admin()
        .list_grants(ListGrantsRequest {
            identity_id: identity_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .grants;
    assert_eq!(grants.len(), 1);
    let revoked = admin
        .admin()
        .revoke_grants(RevokeGrantsRequest {
            selector: Some(Selector::IdentityId(identity_id.clone())),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(revoked.revoked, 1);
    let started = Instant::now();
    let mut refused_everywhere = false;
    while started.elapsed() < Duration::from_secs(1) && !refused_everywhere {
        let mut statuses = Vec::new();
        for dp in 0..2 {
            statuses.push(
                fleet
                    .mcp_raw(dp, reqwest::Method::POST, Some(&tokens.access_token))
                    .await
                    .status(),
            );
        }
        refused_everywhere = statuses.iter().all(|s| *s == reqwest::StatusCode::UNAUTHORIZED);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(refused_everywhere, "a revoked grant stops working on every data plane");
    let empty = admin
        .admin()
        .revoke_grants(RevokeGrantsRequest { selector: None })
        .await
        .unwrap_err();
    assert_eq!(empty.code(), Code::InvalidArgument);
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_lists_configured_and_registered_clients() {
    let fleet = TestFleet::builder()
        .control_plane(|config| {
            config.clients.static_clients = vec![gatehouse_control_plane::clients::StaticClient {
                client_id: "internal-agent".into(),
                client_name: "Internal agent".into(),
                redirect_uris: vec!["https://agent.example.com/callback".into()],
                client_secret_sha256: None,
            }];
        })
        .spawn()
        .await;
    let registered = fleet.register_public().await;
    let clients = fleet
        .control_plane
        .admin()
        .await
        .admin()
        .list_clients(gatehouse::pb::ListClientsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .clients;
    let listed: Vec<(&str, i32, &str)> = clients
        .iter()
        .map(|c| (c.client_id.as_str(), c.kind, c.client_name.as_str()))
        .collect();
    assert_eq!(
        listed,
        vec![
            ("internal-agent", gatehouse::pb::ClientKind::Static as i32, "Internal agent"),
            (
                registered.client_id.as_str(),
                gatehouse::pb::ClientKind::Dynamic as i32,
                "Test Client"
            ),
        ]
    );
    fleet.stop().await;
}
