//! The split deployment under faults: two control planes and two data planes
//! as separate processes (`support::process_fleet`) on PostgreSQL, driven the
//! way clients, browsers and operators drive them. Each test starts its own
//! fleet with its own schema (or its own PostgreSQL server) and stops it.

use std::time::{Duration, Instant};

use gatehouse::demo::{DemoConfig, DemoUpstream};
use gatehouse::pb::{
    ConnectionStatus, CreateVirtualKeyRequest, DeleteConnectionRequest, ListConnectionsRequest, ListIdentitiesRequest,
    ReadUpstreamTokenRequest, RevokeGrantsRequest, RevokeVirtualKeyRequest, revoke_grants_request::Selector,
};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::TestDb;
use crate::support::fleet::{
    Browser, Edge, Pkce, RegisteredClient, Tokens, approve, choose_virtual_key, connect_demo_service, skip, start_flow,
};
use crate::support::mcp_client::McpClient;
use crate::support::process_fleet::{PrivatePostgres, ProcessFleet};

async fn demo() -> DemoUpstream {
    DemoUpstream::spawn(
        tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        DemoConfig::default(),
    )
    .await
    .unwrap()
}

/// The demo upstream as MCP server `notes` (per-user OAuth).
fn notes_toml(demo: &DemoUpstream) -> String {
    format!(
        "[[mcp_servers]]\nname = \"notes\"\nurl = \"{}\"\nauth_mode = \"oauth\"\n",
        demo.mcp_url()
    )
}

/// A fleet of two and two on a fresh schema of the machine's PostgreSQL
/// (`None` only when PostgreSQL is unreachable outside CI).
async fn fleet_on_postgres(demo: &DemoUpstream, caller_cache: i64) -> Option<(ProcessFleet, TestDb)> {
    let db = TestDb::postgres_or_skip().await?;
    let fleet = ProcessFleet::builder(&db.url)
        .control_plane_toml(&notes_toml(demo))
        .caller_cache_seconds(caller_cache)
        .start();
    fleet.wait_ready().await;
    Some((fleet, db))
}

/// One person's way through the consent pages, each step on another data
/// plane: `key` (a virtual key) or Skip, then connecting `notes` at the demo
/// upstream (`demo_base`) as `account`.
async fn consent_at(edge: &Edge, demo_base: &str, key: Option<&str>, account: &str) -> (RegisteredClient, Tokens) {
    let client = edge.register_public().await;
    let browser = Browser::new();
    let pkce = Pkce::new();
    let (flow_id, page) = start_flow(edge, &browser, 0, &client, &pkce).await;
    let services = match key {
        Some(key) => choose_virtual_key(edge, &browser, 1, &flow_id, &page.csrf(), key).await,
        None => skip(edge, &browser, 1, &flow_id, &page.csrf()).await,
    };
    let csrf = services.csrf();
    connect_demo_service(edge, &browser, 0, (&flow_id, &csrf), "notes", demo_base, account).await;
    let code = approve(edge, &browser, 1, &client, &flow_id, &csrf, &pkce).await;
    let tokens = edge.exchange_code(0, &client, &code).await;
    (client, tokens)
}

async fn consent(edge: &Edge, demo: &DemoUpstream, key: Option<&str>, account: &str) -> (RegisteredClient, Tokens) {
    consent_at(edge, demo.base_url(), key, account).await
}

/// A refresh at `/token` of data plane `dp`.
async fn refresh_raw(edge: &Edge, dp: usize, client: &RegisteredClient, tokens: &Tokens) -> reqwest::Response {
    let refresh_token = tokens.refresh_token.as_deref().expect("a refresh token");
    edge.token_raw(
        dp,
        &[("grant_type", "refresh_token"), ("refresh_token", refresh_token)],
        &client.auth(),
    )
    .await
}

async fn create_key(fleet: &ProcessFleet, cp: usize, name: &str) -> (String, String) {
    let created = fleet
        .client(cp, &fleet.admin_token)
        .await
        .admin()
        .create_virtual_key(CreateVirtualKeyRequest { name: name.into() })
        .await
        .unwrap()
        .into_inner();
    let key = created.key.unwrap();
    (created.secret, key.id)
}

/// Polls `/mcp` on data plane `dp` until `done` holds for the reply, for at most `limit`.
async fn within(edge: &Edge, dp: usize, token: &str, limit: Duration, done: impl Fn(StatusCode, &Value) -> bool) -> bool {
    let started = Instant::now();
    let http = reqwest::Client::new();
    while started.elapsed() < limit {
        let response = http
            .post(format!("{}/mcp", edge.url(dp)))
            .bearer_auth(token)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", "2025-11-25")
            .body(
                json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "notes__whoami", "arguments": {}}})
                    .to_string(),
            )
            .send()
            .await;
        if let Ok(response) = response {
            let status = response.status();
            let body: Value = response.json().await.unwrap_or(Value::Null);
            if done(status, &body) {
                return true;
            }
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    false
}

fn refused(status: StatusCode, _: &Value) -> bool {
    status == StatusCode::UNAUTHORIZED
}

/// The call answered with the connect link instead of the tool's result.
fn asks_to_connect(status: StatusCode, body: &Value) -> bool {
    status == StatusCode::OK && body["result"]["isError"] == json!(true) && body.to_string().contains("/connect/")
}

/// Both data planes have resolved `token` and hold the credential (warm caches).
async fn warm(edge: &Edge, token: &str, account: &str) {
    let mcp = McpClient::new(edge, token);
    for _ in 0..edge.urls.len() {
        assert_eq!(mcp.call_text("notes__whoami", json!({})).await, format!("you are {account}"));
    }
}

// === The whole story ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_story_runs_through_two_control_planes_and_two_data_planes() {
    let demo = demo().await;
    let Some((fleet, _db)) = fleet_on_postgres(&demo, 60).await else {
        return;
    };

    // An operator issues Alice a key on one control plane; she consents through both data planes.
    let (alice_key, _) = create_key(&fleet, 1, "alice").await;
    let (client, tokens) = consent(&fleet, &demo, Some(&alice_key), "alice").await;
    let mcp = McpClient::new(&fleet, &tokens.access_token);
    mcp.initialize(json!({})).await;
    assert!(mcp.tool_names().await.contains(&"notes__whoami".to_owned()));
    for _ in 0..4 {
        assert_eq!(mcp.call_text("notes__whoami", json!({})).await, "you are alice");
    }

    // The client refreshes its Gatehouse token on the other data plane; the new one works.
    let refreshed = Tokens::from_response(refresh_raw(&fleet, 1, &client, &tokens).await).await;
    let mcp = McpClient::new(&fleet, &refreshed.access_token);
    assert_eq!(mcp.call_text("notes__whoami", json!({})).await, "you are alice");

    // The upstream token expires: one refresh for the whole fleet, and calls go on.
    demo.expire_access_tokens();
    for _ in 0..4 {
        assert_eq!(mcp.call_text("notes__whoami", json!({})).await, "you are alice");
    }
    assert_eq!(demo.stats().refreshes(), 1);

    // The operator sees Alice's connection on either control plane.
    let admin = fleet.client(0, &fleet.admin_token).await;
    let identities = admin
        .admin()
        .list_identities(ListIdentitiesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .identities;
    let alice = identities
        .iter()
        .find(|i| i.display_name == "alice")
        .expect("alice is listed");
    let connections = fleet
        .client(1, &fleet.admin_token)
        .await
        .admin()
        .list_connections(ListConnectionsRequest {
            identity_id: alice.id.clone(),
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .connections;
    assert_eq!(connections.len(), 1);
    assert_eq!(connections[0].status, ConnectionStatus::Connected as i32);
    assert_eq!(connections[0].account, "alice");

    // An internal service reads Alice's upstream token (generated client), and it works upstream.
    let read = fleet
        .client(1, &fleet.token_reader_token)
        .await
        .tokens()
        .read_upstream_token(ReadUpstreamTokenRequest {
            identity_id: alice.id.clone(),
            service: "notes".into(),
            purpose: "fleet test".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let authorization = &read.headers.iter().find(|h| h.name == "authorization").unwrap().value;
    let whoami: Value = reqwest::Client::new()
        .get(format!("{}/userinfo", demo.base_url()))
        .header("authorization", authorization)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(whoami["sub"], "alice");

    // The operator revokes Alice's grants on one control plane: both data planes refuse within a second.
    warm(&fleet, &refreshed.access_token, "alice").await;
    fleet
        .client(1, &fleet.admin_token)
        .await
        .admin()
        .revoke_grants(RevokeGrantsRequest {
            selector: Some(Selector::IdentityId(alice.id.clone())),
        })
        .await
        .unwrap();
    for dp in 0..2 {
        assert!(
            within(&fleet, dp, &refreshed.access_token, Duration::from_secs(1), refused).await,
            "data plane {dp} still accepts a revoked grant:\n{}",
            fleet.logs()
        );
    }
    fleet.stop();
}

// === Revocation push across replicas ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocations_on_either_control_plane_reach_both_data_planes_within_a_second() {
    let demo = demo().await;
    let Some((fleet, _db)) = fleet_on_postgres(&demo, 300).await else {
        return;
    };
    // Whichever replica each data plane's event stream is on, a change made on
    // one replica reaches a data plane subscribed to the other only through the relay.
    let (bob_key, bob_key_id) = create_key(&fleet, 0, "bob").await;
    let (_, alice) = consent(&fleet, &demo, None, "alice").await;
    let (_, bob) = consent(&fleet, &demo, Some(&bob_key), "bob").await;
    let (_, carol) = consent(&fleet, &demo, None, "carol").await;
    warm(&fleet, &alice.access_token, "alice").await;
    warm(&fleet, &bob.access_token, "bob").await;
    warm(&fleet, &carol.access_token, "carol").await;

    // A revoked virtual key, on control plane 1.
    fleet
        .client(1, &fleet.admin_token)
        .await
        .admin()
        .revoke_virtual_key(RevokeVirtualKeyRequest { id: bob_key_id })
        .await
        .unwrap();
    for dp in 0..2 {
        assert!(
            within(&fleet, dp, &bob.access_token, Duration::from_secs(1), refused).await,
            "data plane {dp} still accepts the revoked key's token:\n{}",
            fleet.logs()
        );
    }

    // A revoked grant (the client revokes its refresh token), on data plane 1 → some control plane.
    let grants = fleet
        .client(0, &fleet.admin_token)
        .await
        .admin()
        .list_grants(gatehouse::pb::ListGrantsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .grants;
    let admin0 = fleet.client(0, &fleet.admin_token).await;
    let alice_connection = connection_of(&fleet, "alice").await;
    let alice_grant = grants
        .iter()
        .find(|g| g.identity_id == alice_connection.identity_id)
        .expect("alice's grant");
    admin0
        .admin()
        .revoke_grants(RevokeGrantsRequest {
            selector: Some(Selector::GrantId(alice_grant.id.clone())),
        })
        .await
        .unwrap();
    for dp in 0..2 {
        assert!(
            within(&fleet, dp, &alice.access_token, Duration::from_secs(1), refused).await,
            "data plane {dp} still accepts a token of the revoked grant"
        );
    }

    // A disconnected connection, on control plane 1: calls ask to connect again.
    let carol_connection = connection_of(&fleet, "carol").await;
    fleet
        .client(1, &fleet.admin_token)
        .await
        .admin()
        .delete_connection(DeleteConnectionRequest { id: carol_connection.id })
        .await
        .unwrap();
    for dp in 0..2 {
        assert!(
            within(&fleet, dp, &carol.access_token, Duration::from_secs(1), asks_to_connect).await,
            "data plane {dp} still uses the disconnected connection"
        );
    }
    fleet.stop();
}

/// The connection of an identity whose upstream account is `account` (not one
/// held by an abandoned consent flow).
async fn connection_of(fleet: &ProcessFleet, account: &str) -> gatehouse::pb::Connection {
    fleet
        .client(0, &fleet.admin_token)
        .await
        .admin()
        .list_connections(ListConnectionsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .connections
        .into_iter()
        .find(|c| c.account == account && !c.identity_id.is_empty())
        .unwrap_or_else(|| panic!("a connection of {account}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_whose_event_never_arrives_takes_effect_when_the_cache_expires() {
    let demo = demo().await;
    let Some(db) = TestDb::postgres_or_skip().await else { return };
    let fleet = ProcessFleet::builder(&db.url)
        .control_plane_toml(&notes_toml(&demo))
        .caller_cache_seconds(3)
        .start();
    fleet.wait_ready().await;
    let (_, tokens) = consent(&fleet, &demo, None, "alice").await;
    warm(&fleet, &tokens.access_token, "alice").await;

    // The grant is revoked where no event is published (straight in the
    // database, as when the stream and the relay are both down): nothing tells
    // the data planes, and they serve the cached caller...
    let mut raw = db.raw().await;
    sqlx::query("UPDATE grants SET revoked_at = 1, revoke_reason = 'test'")
        .execute(&mut raw)
        .await
        .expect("revoke in the database");
    let mcp = McpClient::new(&fleet, &tokens.access_token);
    assert_eq!(mcp.call_text("notes__whoami", json!({})).await, "you are alice");
    // ...only until the cache lifetime (3 s) ends.
    for dp in 0..2 {
        assert!(
            within(&fleet, dp, &tokens.access_token, Duration::from_secs(5), refused).await,
            "data plane {dp}: the revoked grant outlived the caller cache:\n{}",
            fleet.logs()
        );
    }
    fleet.stop();
}

// === Upstream refresh, once across replicas ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_calls_on_an_expired_upstream_token_make_exactly_one_refresh() {
    let demo = demo().await;
    let Some((fleet, _db)) = fleet_on_postgres(&demo, 60).await else {
        return;
    };
    let (_, tokens) = consent(&fleet, &demo, None, "alice").await;
    warm(&fleet, &tokens.access_token, "alice").await;
    assert_eq!(demo.stats().refreshes(), 0);

    // The provider rotates refresh tokens and revokes the grant when an old one
    // comes back, so a second refresh anywhere would break every later call.
    demo.expire_access_tokens();
    let mcp = std::sync::Arc::new(McpClient::new(&fleet, &tokens.access_token));
    let calls: Vec<_> = (0..50)
        .map(|_| {
            let mcp = mcp.clone();
            tokio::spawn(async move { mcp.call_text("notes__whoami", json!({})).await })
        })
        .collect();
    for call in calls {
        assert_eq!(call.await.unwrap(), "you are alice");
    }
    assert_eq!(demo.stats().refreshes(), 1, "exactly one refresh at the provider");
    assert_eq!(mcp.call_text("notes__whoami", json!({})).await, "you are alice");
    fleet.stop();
}

// === Faults ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_control_plane_killed_mid_flow_the_flow_finishes_on_the_other() {
    let demo = demo().await;
    let Some((mut fleet, _db)) = fleet_on_postgres(&demo, 60).await else {
        return;
    };
    let client = fleet.register_public().await;
    let browser = Browser::new();
    let pkce = Pkce::new();
    let (flow_id, page) = start_flow(&fleet, &browser, 0, &client, &pkce).await;

    fleet.kill_control_plane(0);
    let services = skip(&fleet, &browser, 1, &flow_id, &page.csrf()).await;
    let csrf = services.csrf();
    connect_demo_service(&fleet, &browser, 0, (&flow_id, &csrf), "notes", demo.base_url(), "alice").await;
    let code = approve(&fleet, &browser, 1, &client, &flow_id, &csrf, &pkce).await;
    let tokens = fleet.exchange_code(0, &client, &code).await;
    warm(&fleet, &tokens.access_token, "alice").await;

    // The replica comes back; the other one dies; a new person still gets through.
    fleet.restart_control_plane(0);
    fleet.kill_control_plane(1);
    let (_, bob) = consent(&fleet, &demo, None, "bob").await;
    warm(&fleet, &bob.access_token, "bob").await;
    fleet.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_plane_killed_the_client_goes_on_through_the_other() {
    let demo = demo().await;
    let Some((mut fleet, _db)) = fleet_on_postgres(&demo, 60).await else {
        return;
    };
    let (client, tokens) = consent(&fleet, &demo, None, "alice").await;
    let mcp = McpClient::new(&fleet, &tokens.access_token);
    mcp.initialize(json!({})).await;

    fleet.kill_data_plane(1);
    // The client's balancer now sends everything to data plane 0: no session, no state lost.
    let survivor = Edge {
        urls: vec![fleet.url(0).to_owned()],
        issuer: fleet.issuer.clone(),
    };
    let mcp = McpClient::new(&survivor, &tokens.access_token);
    assert_eq!(mcp.call_text("notes__whoami", json!({})).await, "you are alice");
    assert_eq!(refresh_raw(&survivor, 0, &client, &tokens).await.status(), StatusCode::OK);
    fleet.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_control_plane_the_data_plane_serves_its_cache_and_answers_503_with_retry_after() {
    let demo = demo().await;
    let Some((mut fleet, _db)) = fleet_on_postgres(&demo, 4).await else {
        return;
    };
    let (client, tokens) = consent(&fleet, &demo, None, "alice").await;
    let caller_cached_at = Instant::now();
    warm(&fleet, &tokens.access_token, "alice").await;

    fleet.kill_control_plane(0);
    fleet.kill_control_plane(1);
    // What is cached is served: the caller and the credential.
    let mcp = McpClient::new(&fleet, &tokens.access_token);
    assert_eq!(mcp.call_text("notes__whoami", json!({})).await, "you are alice");

    // What needs the control plane is 503 with Retry-After.
    let response = refresh_raw(&fleet, 0, &client, &tokens).await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(response.headers().contains_key("retry-after"));
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "temporarily_unavailable");

    let unknown = fleet.mcp_raw(1, reqwest::Method::POST, Some("gh_at_never-seen-before")).await;
    assert_eq!(unknown.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(unknown.headers().contains_key("retry-after"));

    let ready = reqwest::get(format!("{}/readyz", fleet.url(0))).await.unwrap();
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);

    // Once the cached caller expires, the data plane cannot vouch for it any more.
    let expiry = Duration::from_secs(4).saturating_sub(caller_cached_at.elapsed()) + Duration::from_millis(500);
    tokio::time::sleep(expiry).await;
    let response = fleet.mcp_raw(0, reqwest::Method::POST, Some(&tokens.access_token)).await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(response.headers().contains_key("retry-after"));

    // A control plane comes back: the same token works again, nothing was lost.
    fleet.restart_control_plane(1);
    fleet.wait_ready().await;
    assert_eq!(mcp.call_text("notes__whoami", json!({})).await, "you are alice");
    fleet.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restarted_both_planes_recover_without_a_restart_and_nothing_is_lost() {
    let Some(postgres) = PrivatePostgres::start_or_skip() else {
        return;
    };
    let demo = demo().await;
    let fleet = ProcessFleet::builder(&postgres.url())
        .control_plane_toml(&notes_toml(&demo))
        .start();
    fleet.wait_ready().await;
    let (_, alice) = consent(&fleet, &demo, None, "alice").await;
    warm(&fleet, &alice.access_token, "alice").await;

    postgres.stop();
    // Cached calls go on while the database is down.
    let mcp = McpClient::new(&fleet, &alice.access_token);
    assert_eq!(mcp.call_text("notes__whoami", json!({})).await, "you are alice");
    postgres.start();

    // Without restarting anything: a new person consents, Alice's tokens still
    // work and refresh, and revocation still reaches every data plane.
    let deadline = Instant::now() + Duration::from_secs(20);
    let bob = loop {
        let attempt = tokio::time::timeout(Duration::from_secs(15), consent_or_error(&fleet, &demo)).await;
        match attempt {
            Ok(Some(tokens)) => break tokens,
            _ if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(500)).await,
            _ => panic!("the fleet did not recover after the database restart:\n{}", fleet.logs()),
        }
    };
    warm(&fleet, &bob.access_token, "bob").await;
    assert_eq!(mcp.call_text("notes__whoami", json!({})).await, "you are alice");
    let bob_connection = connection_of(&fleet, "bob").await;
    fleet
        .client(1, &fleet.admin_token)
        .await
        .admin()
        .revoke_grants(RevokeGrantsRequest {
            selector: Some(Selector::IdentityId(bob_connection.identity_id)),
        })
        .await
        .unwrap();
    for dp in 0..2 {
        assert!(
            within(&fleet, dp, &bob.access_token, Duration::from_secs(3), refused).await,
            "data plane {dp} missed a revocation after the database restart:\n{}",
            fleet.logs()
        );
    }
    fleet.stop();
}

/// `consent` for "bob" that reports failure instead of panicking (while the database comes back).
async fn consent_or_error(fleet: &ProcessFleet, demo: &DemoUpstream) -> Option<Tokens> {
    let edge = Edge {
        urls: fleet.urls.clone(),
        issuer: fleet.issuer.clone(),
    };
    let demo_base = demo.base_url().to_owned();
    // A step that fails asserts (panics) inside the task; that is a failed attempt.
    tokio::spawn(async move { consent_at(&edge, &demo_base, None, "bob").await.1 })
        .await
        .ok()
}

// === Administration as the README shows it ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fleet_administration_command_of_the_readme_runs_against_the_fleet() {
    let Some(grpcurl) = crate::support::tools::grpcurl() else {
        return;
    };
    let demo = demo().await;
    let Some((fleet, _db)) = fleet_on_postgres(&demo, 60).await else {
        return;
    };
    let (alice_key, _) = create_key(&fleet, 0, "alice").await;
    let (client, _tokens) = consent(&fleet, &demo, Some(&alice_key), "alice").await;
    let alice = connection_of(&fleet, "alice").await;

    let commands = crate::support::readme::readme_commands("### Administering people, connections and grants");
    assert!(commands.len() >= 10, "{commands:?}");
    let path = format!(
        "{}:{}",
        grpcurl.parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut outputs = Vec::new();
    for command in &commands {
        let output = std::process::Command::new("sh")
            .arg("-c")
            .arg(command)
            .env("PATH", &path)
            .env("GW", fleet.cp_urls[1].trim_start_matches("http://"))
            .env("ADMIN_TOKEN", &fleet.admin_token)
            .env("READER_TOKEN", &fleet.token_reader_token)
            .env("IDENTITY", &alice.identity_id)
            .env("CONNECTION", &alice.id)
            .env("CLIENT", &client.client_id)
            .output()
            .expect("sh runs");
        assert!(
            output.status.success(),
            "README command failed: {command}\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        outputs.push((command.clone(), String::from_utf8_lossy(&output.stdout).into_owned()));
    }
    let output_of = |rpc: &str| {
        outputs
            .iter()
            .find(|(command, _)| command.ends_with(rpc))
            .map(|(_, out)| out.clone())
            .unwrap_or_else(|| panic!("the README runs {rpc}"))
    };
    assert!(output_of("/ListIdentities").contains("alice"));
    assert!(output_of("/ListConnections").contains("CONNECTION_STATUS_CONNECTED"));
    assert!(output_of("/ListClients").contains(&client.client_id));
    assert!(output_of("/ReadUpstreamToken").contains("Bearer "));
    assert!(output_of("/QueryAuditLog").contains("connection."));
    // The commands ran in the order shown: the connection was refreshed, then deleted.
    assert!(output_of("/RefreshConnection").contains(&alice.id));
    assert_eq!(demo.stats().refreshes(), 1);
    assert!(output_of("/DeleteConnection").contains("revokedUpstream"));
    assert_eq!(
        demo.stats().revocations(),
        2,
        "the provider was told of both tokens (RFC 7009)"
    );
    fleet.stop();
}

#[test]
fn the_example_config_files_of_a_split_deployment_load() {
    let examples = crate::support::tools::repo().join("examples");
    let control = gatehouse::config::Config::load(Some(&examples.join("control-plane.toml"))).expect("control-plane.toml");
    assert!(control.control_plane.database_url.starts_with("postgres://"));
    assert_eq!(control.control_plane.callers.len(), 3);
    let data = gatehouse::config::Config::load(Some(&examples.join("data-plane.toml"))).expect("data-plane.toml");
    assert_eq!(data.data_plane.control_plane.urls.len(), 2);
    assert_eq!(control.public_url(), data.public_url(), "one issuer for the whole deployment");
}
