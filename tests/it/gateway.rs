//! `/mcp`, the gateway, end to end: two data planes (requests round-robined
//! across them), one control plane, the demo upstream (per-user OAuth) and the
//! scriptable fixture upstreams (no auth, a static header, slow, SSE with
//! progress, expiring sessions, broken). Where a test reads the log, it runs
//! `gatehouse up` as a process (`support::up_process`) instead.

use std::time::Duration;

use gatehouse::demo::{DemoConfig, DemoUpstream};
use gatehouse::pb::CreateVirtualKeyRequest;
use gatehouse_control_plane::mcp_servers::{AuthMode, McpServer, StaticHeader, UpstreamOAuth};
use reqwest::StatusCode;
use reqwest::header;
use serde_json::{Value, json};

use crate::support::fleet::{
    Browser, Edge, Pkce, TestFleet, Tokens, allow_at_demo, approve, choose_virtual_key, connect_demo_service, continuation_link,
    demo_upstream, fleet_with_sign_in, location, query_of, skip, start_flow,
};
use crate::support::mcp_client::{McpClient, read_reply};
use crate::support::mcp_upstream::{Broken, McpUpstream, Script};
use crate::support::up_process::UpProcess;

// === Setup ===

/// The demo upstream as a per-user OAuth service.
fn oauth_service(name: &str, demo: &DemoUpstream) -> McpServer {
    McpServer {
        name: name.into(),
        display_name: "Demo Notes".into(),
        url: demo.mcp_url(),
        auth_mode: AuthMode::Oauth,
        ..Default::default()
    }
}

/// A fixture upstream without authentication.
fn open_service(name: &str, fixture: &McpUpstream) -> McpServer {
    McpServer {
        name: name.into(),
        display_name: format!("Fixture {name}"),
        url: fixture.url.clone(),
        auth_mode: AuthMode::None,
        ..Default::default()
    }
}

/// Two data planes and `servers`, loopback upstreams allowed.
async fn fleet_with(servers: Vec<McpServer>) -> TestFleet {
    TestFleet::builder()
        .data_planes(2)
        .control_plane(move |config| {
            config.outbound.allow_loopback = true;
            config.mcp_servers = servers;
        })
        .spawn()
        .await
}

/// How a test person proves who they are on the identity page.
enum Identity<'a> {
    Skip,
    VirtualKey(&'a str),
}

/// A new client's tokens: authorize, `identity`, connect `connect` (services
/// backed by `demo`) as `account`, approve, exchange. The steps alternate
/// between the data planes.
async fn sign_up(
    fleet: &Edge,
    identity: Identity<'_>,
    connect: &[&str],
    demo: Option<&DemoUpstream>,
    account: &str,
) -> (Browser, Tokens) {
    let client = fleet.register_public().await;
    let browser = fleet.browser();
    let pkce = Pkce::new();
    let (flow_id, page) = start_flow(fleet, &browser, 0, &client, &pkce).await;
    let services = match identity {
        Identity::Skip => skip(fleet, &browser, 1, &flow_id, &page.csrf()).await,
        Identity::VirtualKey(key) => choose_virtual_key(fleet, &browser, 1, &flow_id, &page.csrf(), key).await,
    };
    let csrf = services.csrf();
    for service in connect {
        let demo = demo.expect("connecting needs the demo upstream");
        connect_demo_service(fleet, &browser, 0, (&flow_id, &csrf), service, demo.base_url(), account).await;
    }
    let code = approve(fleet, &browser, 1, &client, &flow_id, &csrf, &pkce).await;
    let tokens = fleet.exchange_code(0, &client, &code).await;
    (browser, tokens)
}

async fn virtual_key(fleet: &TestFleet, name: &str) -> String {
    let admin = fleet.control_plane.admin().await;
    admin
        .admin()
        .create_virtual_key(CreateVirtualKeyRequest { name: name.into() })
        .await
        .unwrap()
        .into_inner()
        .secret
}

fn text_of(response: &Value) -> String {
    response["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

// === The per-user OAuth service and a no-auth service ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tools_of_every_service_are_listed_prefixed_and_calls_reach_the_callers_own_upstream_account() {
    let demo = demo_upstream().await;
    let plain = McpUpstream::start(Script::default()).await;
    let fleet = fleet_with(vec![oauth_service("notes", &demo), open_service("plain", &plain)]).await;
    let (_, tokens) = sign_up(&fleet, Identity::Skip, &["notes"], Some(&demo), "alice").await;
    let mcp = McpClient::new(&fleet, &tokens.access_token);

    let init = mcp.initialize(json!({})).await;
    assert_eq!(init["protocolVersion"], "2025-11-25");
    assert_eq!(init["serverInfo"]["name"], "gatehouse");
    assert_eq!(init["capabilities"], json!({"tools": {}, "prompts": {}, "resources": {}}));

    let tools = mcp.result("tools/list", json!({})).await;
    let names: Vec<&str> = tools["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["notes__whoami", "notes__echo", "notes__add", "plain__echo"]);
    let echo = &tools["tools"][1];
    assert_eq!(echo["description"], "Returns the text it is given.", "descriptions are kept");
    assert_eq!(echo["inputSchema"]["required"], json!(["text"]), "schemas are kept");
    assert_eq!(echo["annotations"]["readOnlyHint"], true, "other fields are kept");

    for _ in 0..2 {
        assert_eq!(mcp.call_text("notes__whoami", json!({})).await, "you are alice");
    }
    assert_eq!(mcp.call_text("notes__add", json!({"a": 2, "b": 3})).await, "5");
    let reply = mcp.call_tool("plain__echo", json!({"text": "hi"})).await;
    assert_eq!(reply["result"]["structuredContent"]["arguments"], json!({"text": "hi"}));
    assert_eq!(
        reply["result"]["structuredContent"]["authorization"], "",
        "no credential goes to a no-auth service"
    );

    let reply = mcp.call_tool("notes__nope", json!({})).await;
    assert_eq!(reply["error"]["code"], -32602, "{reply}");
    let reply = mcp.call_tool("nothing__echo", json!({})).await;
    assert_eq!(reply["error"]["code"], -32602);
    assert_eq!(reply["error"]["message"], "Unknown tool: nothing__echo");
    assert_eq!(mcp.result("ping", json!({})).await, json!({}));
    let reply = mcp.request("sampling/createMessage", json!({})).await;
    assert_eq!(reply["error"]["code"], -32601);

    // Security: no Gatehouse token ever reaches an upstream.
    assert!(demo.stats().mcp_requests() > 0);
    assert!(
        !demo.stats().any_header_contains("gh_at_"),
        "a Gatehouse token reached the demo upstream"
    );
    assert!(!demo.stats().any_header_contains(&tokens.access_token));
    let fixture_headers = plain.all_headers();
    assert!(!fixture_headers.is_empty());
    assert!(
        fixture_headers.iter().flatten().all(|(_, v)| !v.contains("gh_at_")),
        "a Gatehouse token reached the fixture"
    );
    fleet.stop().await;
}

/// The header an authenticating proxy in front of the consent pages sets.
const PROXY_USER_HEADER: &str = "X-Forwarded-User";

/// A new client's tokens for the user `user`, asserted by the trusted proxy
/// header on the identity page, with "notes" connected at the demo as `account`.
async fn sign_up_behind_proxy(fleet: &TestFleet, demo: &DemoUpstream, user: &str, account: &str) -> Tokens {
    let client = fleet.register_public().await;
    let browser = fleet.browser();
    let pkce = Pkce::new();
    let (flow_id, page) = start_flow(fleet, &browser, 0, &client, &pkce).await;
    let csrf = page.csrf();
    let response = fleet
        .http()
        .post(format!("{}/consent/{flow_id}/identity", fleet.url(1)))
        .header(
            header::COOKIE,
            format!("gatehouse-flow={}", browser.cookie("gatehouse-flow").unwrap()),
        )
        .header(PROXY_USER_HEADER, user)
        .form(&[("csrf", csrf.as_str()), ("choice", "proxy")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER, "{user} chosen by the proxy header");
    connect_demo_service(fleet, &browser, 0, (&flow_id, &csrf), "notes", demo.base_url(), account).await;
    let code = approve(fleet, &browser, 1, &client, &flow_id, &csrf, &pkce).await;
    fleet.exchange_code(0, &client, &code).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_caller_is_whoever_the_token_says_and_no_header_can_name_another() {
    let demo = demo_upstream().await;
    let servers = vec![oauth_service("notes", &demo)];
    // The deployment trusts a proxy's user header on the consent pages; /mcp must not.
    let fleet = TestFleet::builder()
        .data_planes(2)
        .control_plane(move |config| {
            config.outbound.allow_loopback = true;
            config.mcp_servers = servers;
            config.trust_proxy_user = true;
        })
        .data_plane(|config| config.trusted_user_header = Some(PROXY_USER_HEADER.into()))
        .spawn()
        .await;
    let alice = sign_up_behind_proxy(&fleet, &demo, "alice@example.com", "alice").await;
    let bob = sign_up_behind_proxy(&fleet, &demo, "bob@example.com", "bob").await;

    // Bob as Gatehouse knows him: his identity's id, name and subject.
    let identities = fleet
        .control_plane
        .admin()
        .await
        .admin()
        .list_identities(gatehouse::pb::ListIdentitiesRequest { kind: 0 })
        .await
        .unwrap()
        .into_inner()
        .identities;
    let bob_identity = identities
        .iter()
        .find(|i| i.display_name == "bob@example.com")
        .unwrap_or_else(|| panic!("bob is a user: {identities:?}"))
        .clone();
    let as_bob = McpClient::new(&fleet, &bob.access_token);
    assert_eq!(as_bob.call_text("notes__whoami", json!({})).await, "you are bob");

    let as_alice = McpClient::new(&fleet, &alice.access_token);
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "notes__whoami", "arguments": {}}})
        .to_string();
    let bob_names = [
        bob_identity.id.as_str(),
        bob_identity.display_name.as_str(),
        bob_identity.subject.as_str(),
    ];
    let spoofs: Vec<(&str, &str)> = [
        PROXY_USER_HEADER,
        "x-user-id",
        "x-gatehouse-identity",
        "x-gatehouse-identity-id",
        "x-identity-id",
        "x-remote-user",
        "x-auth-request-user",
        "x-forwarded-email",
        "remote-user",
    ]
    .into_iter()
    .flat_map(|header| bob_names.iter().filter(|v| !v.is_empty()).map(move |value| (header, *value)))
    .collect();
    // Each header alone, on each data plane; then all of them at once.
    for spoof in &spoofs {
        for _ in 0..2 {
            let reply = read_reply(as_alice.post_raw(&body, &[*spoof]).await).await;
            assert_eq!(text_of(&reply.response), "you are alice", "{spoof:?}");
        }
    }
    for _ in 0..2 {
        let reply = read_reply(as_alice.post_raw(&body, &spoofs).await).await;
        assert_eq!(text_of(&reply.response), "you are alice", "every header at once");
    }
    assert_eq!(as_bob.call_text("notes__whoami", json!({})).await, "you are bob");

    // Unknown or missing tokens get the challenge, whatever else is sent.
    let nobody = McpClient::new(&fleet, "gh_at_not-a-token");
    let response = nobody.post_raw(&body, &spoofs).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(
        response.headers()[header::WWW_AUTHENTICATE]
            .to_str()
            .unwrap()
            .contains("invalid_token")
    );
    for dp in 0..2 {
        let mut request = fleet
            .http()
            .post(format!("{}/mcp", fleet.url(dp)))
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::ACCEPT, "application/json, text/event-stream")
            .body(body.clone());
        for (name, value) in &spoofs {
            request = request.header(*name, *value);
        }
        let response = request.send().await.unwrap();
        assert_eq!(
            response.status(),
            StatusCode::UNAUTHORIZED,
            "no bearer: the trusted proxy header names nobody on /mcp"
        );
    }
    fleet.stop().await;
}

// === Connect links ===

/// The connect link in an `isError` tool result.
fn link_in_result(response: &Value) -> String {
    assert_eq!(response["result"]["isError"], true, "{response}");
    let text = text_of(response);
    let start = text.find("http").unwrap_or_else(|| panic!("no link in {text}"));
    text[start..].split_whitespace().next().unwrap().to_owned()
}

/// The connect link of a -32042 error, checked.
fn link_in_elicitation(response: &Value) -> String {
    assert_eq!(response["error"]["code"], -32042, "{response}");
    let elicitation = &response["error"]["data"]["elicitations"][0];
    assert_eq!(elicitation["mode"], "url");
    let url = elicitation["url"].as_str().unwrap().to_owned();
    let id = elicitation["elicitationId"].as_str().unwrap();
    assert!(
        !id.is_empty() && !url.contains(id),
        "the elicitation id is not the link's secret"
    );
    assert!(elicitation["message"].as_str().unwrap().contains("Demo Notes"));
    url
}

/// Opens a connect link in `browser` on data plane `dp`: the page, the form
/// (with `virtual_key` when given); returns the response to the post.
async fn submit_link(
    fleet: &TestFleet,
    browser: &Browser,
    link: &str,
    dp: usize,
    virtual_key: Option<&str>,
) -> reqwest::Response {
    let link = link.replacen(&fleet.issuer, fleet.url(dp), 1);
    let page = browser.page(&link).await;
    assert_eq!(page.headers[header::X_FRAME_OPTIONS], "DENY");
    assert_eq!(
        page.html.contains(r#"name="virtual_key""#),
        virtual_key.is_some(),
        "{}",
        page.html
    );
    let csrf = page.csrf();
    let mut form = vec![("csrf", csrf.as_str())];
    if let Some(key) = virtual_key {
        form.push(("virtual_key", key));
    }
    browser.post_raw(&link, &form).await
}

/// Goes on to the demo upstream from `response`: a connect-link post's 303 to
/// its continuation page, or the sign-in callback's continuation page itself
/// (a GET, answered 200). Allows as `account`, lands the callback on data
/// plane `dp` and asserts the "Connected" page.
async fn finish_link_at_demo(
    fleet: &TestFleet,
    browser: &Browser,
    response: reqwest::Response,
    demo: &DemoUpstream,
    account: &str,
    dp: usize,
) {
    let upstream_url = if response.status() == StatusCode::SEE_OTHER {
        crate::support::fleet::follow_onward(browser, response).await
    } else {
        assert_eq!(response.status(), StatusCode::OK);
        continuation_link(&response.text().await.unwrap())
    };
    assert!(upstream_url.starts_with(demo.base_url()), "{upstream_url}");
    let callback = crate::support::fleet::allow_at_demo(browser, demo.base_url(), &upstream_url, account).await;
    let callback = callback.replacen(&fleet.issuer, fleet.url(dp), 1);
    let done = browser.page(&callback).await;
    assert!(done.html.contains("Connected"), "{}", done.html);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unconnected_service_answers_with_its_connect_link_and_after_connecting_the_same_call_works() {
    let demo = demo_upstream().await;
    let fleet = fleet_with(vec![oauth_service("notes", &demo)]).await;
    let (_, tokens) = sign_up(&fleet, Identity::Skip, &[], None, "").await;
    let mcp = McpClient::new(&fleet, &tokens.access_token);

    // Without the elicitation capability: a tool error with the link.
    mcp.initialize(json!({"elicitation": {}})).await;
    assert!(
        mcp.tool_names().await.is_empty(),
        "nothing is known of an unconnected service yet"
    );
    let response = mcp.call_tool("notes__whoami", json!({})).await;
    let first_link = link_in_result(&response);
    assert!(
        first_link.starts_with(&format!("{}/connect/gh_cl_", fleet.issuer)),
        "{first_link}"
    );

    // With it: URL-mode elicitation (-32042), on either data plane.
    mcp.initialize(json!({"elicitation": {"url": {}}})).await;
    let link = link_in_elicitation(&mcp.call_tool("notes__whoami", json!({})).await);
    let again = link_in_elicitation(&mcp.call_tool("notes__whoami", json!({})).await);
    assert_ne!(link, again, "each link is new");

    // An anonymous (Skip) identity: the link alone is the proof.
    let browser = fleet.browser();
    let response = submit_link(&fleet, &browser, &link, 1, None).await;
    finish_link_at_demo(&fleet, &browser, response, &demo, "carol", 0).await;

    // The same call now works, with the same token: no new OAuth for the client.
    assert_eq!(mcp.call_text("notes__whoami", json!({})).await, "you are carol");
    // (Listed once on each data plane: each keeps its own catalogue.)
    for _ in 0..2 {
        assert_eq!(mcp.tool_names().await, ["notes__whoami", "notes__echo", "notes__add"]);
    }

    // A link works once.
    let response = browser.get_raw(&link.replacen(&fleet.issuer, fleet.url(0), 1)).await;
    assert_eq!(response.status(), StatusCode::CONFLICT);
    // Another caller, not connected, sees the service's tools (the catalogue
    // shared by callers) but gets a link.
    let (_, other) = sign_up(&fleet, Identity::Skip, &[], None, "").await;
    let other = McpClient::new(&fleet, &other.access_token);
    assert_eq!(other.tool_names().await, ["notes__whoami", "notes__echo", "notes__add"]);
    let late = link_in_result(&other.call_tool("notes__whoami", json!({})).await);
    // Links live ten minutes.
    fleet.clock.advance(11 * 60);
    let response = fleet.browser().get_raw(&late).await;
    assert_eq!(response.status(), StatusCode::GONE);
    let response = fleet
        .browser()
        .get_raw(&format!("{}/connect/gh_cl_unknown", fleet.url(1)))
        .await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    fleet.stop().await;
}

/// A fleet with the per-user service `notes`, an anonymous (Skip) caller not
/// connected to it, and the connect link its first call was answered with.
async fn anonymous_caller_with_a_link() -> (DemoUpstream, TestFleet, McpClient, String) {
    let demo = demo_upstream().await;
    let fleet = fleet_with(vec![oauth_service("notes", &demo)]).await;
    let (_, tokens) = sign_up(&fleet, Identity::Skip, &[], None, "").await;
    let mcp = McpClient::new(&fleet, &tokens.access_token);
    mcp.initialize(json!({"elicitation": {"url": {}}})).await;
    let link = link_in_elicitation(&mcp.call_tool("notes__whoami", json!({})).await);
    (demo, fleet, mcp, link)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connect_link_post_leads_to_a_continuation_page_only_its_browser_is_shown() {
    let (demo, fleet, mcp, link) = anonymous_caller_with_a_link().await;
    let link_id = link.rsplit('/').next().unwrap().to_owned();
    let browser = fleet.browser();
    let response = submit_link(&fleet, &browser, &link, 0, None).await;
    // 303 to a page of this origin (form-action 'self'), as the consent posts.
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let onward = location(&response);
    assert!(onward.starts_with(&format!("/connect/{link_id}/continue?")), "{onward}");
    let upstream_url = query_of(&format!("{}{onward}", fleet.url(0)))["to"][0].clone();
    assert!(upstream_url.starts_with(demo.base_url()), "{upstream_url}");

    // Another browser is shown nothing: without the link's cookie, or with its own.
    let stranger = fleet.browser();
    for cookie in [None, Some("another-browsers-secret")] {
        stranger.set_cookie("gatehouse-connect", cookie);
        let refused = stranger.get_raw(&format!("{}{onward}", fleet.url(1))).await;
        assert_eq!(refused.status(), StatusCode::FORBIDDEN, "cookie {cookie:?}");
        let html = refused.text().await.unwrap();
        assert!(!html.contains(demo.base_url()), "{html}");
    }
    // A URL swapped in under the signature is no open redirect.
    let sig = query_of(&format!("{}{onward}", fleet.url(0)))["sig"][0].clone();
    let forged = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("to", "https://evil.example/")
        .append_pair("sig", &sig)
        .finish();
    let refused = browser
        .get_raw(&format!("{}/connect/{link_id}/continue?{forged}", fleet.url(0)))
        .await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    assert!(!refused.text().await.unwrap().contains("evil.example"));

    // The browser that posted is shown the page however often it reloads it
    // (nothing is posted again), on either data plane, and goes on.
    for dp in [0, 1] {
        let page = browser.page(&format!("{}{onward}", fleet.url(dp))).await;
        assert_eq!(continuation_link(&page.html), upstream_url);
    }
    let callback = allow_at_demo(&browser, demo.base_url(), &upstream_url, "carol").await;
    let done = browser.page(&callback.replacen(&fleet.issuer, fleet.url(1), 1)).await;
    assert!(done.html.contains("Connected"), "{}", done.html);
    assert_eq!(mcp.call_text("notes__whoami", json!({})).await, "you are carol");
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connect_link_is_refused_to_another_identity_and_works_for_its_own() {
    let demo = demo_upstream().await;
    let fleet = fleet_with(vec![oauth_service("notes", &demo)]).await;
    let alice_key = virtual_key(&fleet, "alice").await;
    let bob_key = virtual_key(&fleet, "bob").await;
    let (_, tokens) = sign_up(&fleet, Identity::VirtualKey(&alice_key), &[], None, "").await;
    let mcp = McpClient::new(&fleet, &tokens.access_token);
    let link = link_in_result(&mcp.call_tool("notes__echo", json!({"text": "x"})).await);

    // Bob's browser, Bob's key: refused (403), and nothing connected.
    let bob = fleet.browser();
    let response = submit_link(&fleet, &bob, &link, 0, Some(&bob_key)).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert!(response.headers().get(header::LOCATION).is_none());
    // A key that is no key: the form again (401).
    let response = submit_link(&fleet, &bob, &link, 1, Some("gh_vk_not-a-key")).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    // A post without the page's cookie is refused before anything is checked.
    let response = fleet
        .browser()
        .post_raw(&link, &[("csrf", "forged"), ("virtual_key", alice_key.as_str())])
        .await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    link_in_result(&mcp.call_tool("notes__echo", json!({"text": "x"})).await);

    // Alice's key: connected, and the call works.
    let alice = fleet.browser();
    let response = submit_link(&fleet, &alice, &link, 1, Some(&alice_key)).await;
    finish_link_at_demo(&fleet, &alice, response, &demo, "alice-at-demo", 1).await;
    assert_eq!(mcp.call_text("notes__whoami", json!({})).await, "you are alice-at-demo");
    fleet.stop().await;
}

// === Upstream 401 ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_401_is_refreshed_once_and_retried_and_a_failed_refresh_asks_to_connect_again() {
    let demo = demo_upstream().await;
    let fleet = fleet_with(vec![oauth_service("notes", &demo)]).await;
    let (_, tokens) = sign_up(&fleet, Identity::Skip, &["notes"], Some(&demo), "alice").await;
    let mcp = McpClient::new(&fleet, &tokens.access_token);
    mcp.initialize(json!({"elicitation": {"url": {}}})).await;
    assert_eq!(mcp.call_text("notes__whoami", json!({})).await, "you are alice");
    assert_eq!(demo.stats().refreshes(), 0);

    // The upstream token expires: one refresh, one retry, and the call works.
    demo.expire_access_tokens();
    assert_eq!(mcp.call_text("notes__whoami", json!({})).await, "you are alice");
    assert_eq!(demo.stats().refreshes(), 1, "exactly one refresh");
    assert_eq!(mcp.call_text("notes__whoami", json!({})).await, "you are alice");
    assert_eq!(demo.stats().refreshes(), 1);

    // The grant ends at the provider: the refresh fails, the connection needs
    // re-authorization and the caller gets the connect link.
    demo.revoke_all();
    let link = link_in_elicitation(&mcp.call_tool("notes__whoami", json!({})).await);
    link_in_elicitation(&mcp.call_tool("notes__whoami", json!({})).await);

    let browser = fleet.browser();
    let response = submit_link(&fleet, &browser, &link, 0, None).await;
    finish_link_at_demo(&fleet, &browser, response, &demo, "alice", 1).await;
    assert_eq!(mcp.call_text("notes__whoami", json!({})).await, "you are alice");
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_refuses_even_a_refreshed_token_marks_the_connection_for_re_authorization() {
    let demo = demo_upstream().await;
    let fleet = fleet_with(vec![oauth_service("notes", &demo)]).await;
    let (_, tokens) = sign_up(&fleet, Identity::Skip, &["notes"], Some(&demo), "alice").await;
    let mcp = McpClient::new(&fleet, &tokens.access_token);
    mcp.initialize(json!({"elicitation": {"url": {}}})).await;
    assert_eq!(mcp.call_text("notes__whoami", json!({})).await, "you are alice");

    demo.refuse_mcp_tokens(true);
    let link = link_in_elicitation(&mcp.call_tool("notes__whoami", json!({})).await);
    assert_eq!(demo.stats().refreshes(), 1, "one refresh, then no second one");
    let connections = fleet
        .control_plane
        .core()
        .store
        .list_connections(None, Some("notes"))
        .await
        .unwrap();
    assert_eq!(connections[0].status, "needs_reauth");
    // The next call asks for the link straight away, with no refresh.
    link_in_elicitation(&mcp.call_tool("notes__whoami", json!({})).await);
    assert_eq!(demo.stats().refreshes(), 1);

    demo.refuse_mcp_tokens(false);
    let browser = fleet.browser();
    let response = submit_link(&fleet, &browser, &link, 0, None).await;
    finish_link_at_demo(&fleet, &browser, response, &demo, "alice", 1).await;
    assert_eq!(mcp.call_text("notes__whoami", json!({})).await, "you are alice");
    fleet.stop().await;
}

// === Fixture upstreams: static header, slow, SSE, sessions, allow and deny lists ===

/// The caller's tokens when no service needs connecting.
async fn tokens_for(fleet: &Edge) -> Tokens {
    sign_up(fleet, Identity::Skip, &[], None, "").await.1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_static_header_service_gets_its_header_and_a_slow_one_does_not_hold_up_the_others() {
    // The header's value comes from an environment variable the control plane
    // reads; cargo sets CARGO_MANIFEST_DIR for every test process.
    let secret = env!("CARGO_MANIFEST_DIR").to_owned();
    let keyed = McpUpstream::start(Script {
        tools: vec!["lookup".into()],
        required_header: Some(("x-api-key".into(), secret.clone())),
        ..Default::default()
    })
    .await;
    let slow = McpUpstream::start(Script {
        tools: vec!["crawl".into()],
        delay: Duration::from_secs(3),
        ..Default::default()
    })
    .await;
    let plain = McpUpstream::start(Script::default()).await;
    let fleet = fleet_with(vec![
        McpServer {
            auth_mode: AuthMode::StaticHeaders,
            static_headers: vec![StaticHeader {
                name: "X-Api-Key".into(),
                value_env: "CARGO_MANIFEST_DIR".into(),
                value_file: String::new(),
            }],
            ..open_service("keyed", &keyed)
        },
        McpServer {
            timeout_ms: 300,
            ..open_service("slow", &slow)
        },
        open_service("plain", &plain),
    ])
    .await;
    let mcp = McpClient::new(&fleet, &tokens_for(&fleet).await.access_token);
    mcp.initialize(json!({})).await;
    for _ in 0..2 {
        let started = std::time::Instant::now();
        assert_eq!(
            mcp.tool_names().await,
            ["keyed__lookup", "plain__echo"],
            "the slow service is left out"
        );
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "tools/list waited for the slow service"
        );
    }
    let reply = mcp.call_tool("keyed__lookup", json!({"text": "q"})).await;
    assert_eq!(reply["result"]["structuredContent"]["tool"], "lookup", "{reply}");
    let headers = keyed.all_headers();
    assert!(
        headers
            .iter()
            .all(|h| h.iter().any(|(n, v)| n == "x-api-key" && *v == secret))
    );
    let reply = mcp.call_tool("slow__crawl", json!({})).await;
    assert_eq!(reply["error"]["code"], -32603, "{reply}");
    assert!(
        reply["error"]["message"].as_str().unwrap().contains("did not answer in time"),
        "{reply}"
    );
    assert_eq!(mcp.call_tool("plain__echo", json!({})).await["result"]["isError"], false);
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_replies_are_relayed_with_their_progress_notifications() {
    let streaming = McpUpstream::start(Script {
        tools: vec!["build".into()],
        sse: true,
        ..Default::default()
    })
    .await;
    let fleet = fleet_with(vec![open_service("ci", &streaming)]).await;
    let mcp = McpClient::new(&fleet, &tokens_for(&fleet).await.access_token);
    mcp.initialize(json!({})).await;
    // tools/list reads the SSE reply to its response.
    assert_eq!(mcp.tool_names().await, ["ci__build"]);
    for _ in 0..2 {
        let reply = mcp
            .request_with(
                "tools/call",
                json!({"name": "ci__build", "arguments": {"text": "go"}, "_meta": {"progressToken": "tok-1"}}),
                &[],
            )
            .await;
        assert!(reply.sse, "an SSE reply stays SSE");
        assert_eq!(reply.notifications.len(), 2, "{:?}", reply.notifications);
        for (i, note) in reply.notifications.iter().enumerate() {
            assert_eq!(note["method"], "notifications/progress");
            assert_eq!(note["params"]["progressToken"], "tok-1");
            assert_eq!(note["params"]["progress"], i + 1);
        }
        assert_eq!(reply.response["result"]["structuredContent"]["tool"], "build");
    }
    // The token went upstream with the client's params; the name was the upstream's.
    let bodies = streaming.recorded.requests.lock().unwrap().clone();
    let call = bodies.iter().find(|(_, b)| b["method"] == "tools/call").unwrap();
    assert_eq!(call.1["params"]["name"], "build");
    assert_eq!(call.1["params"]["_meta"]["progressToken"], "tok-1");
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_sessions_open_lazily_and_reopen_after_a_404() {
    let sessions = McpUpstream::start(Script {
        sessions: true,
        ..Default::default()
    })
    .await;
    let fleet = fleet_with(vec![open_service("stateful", &sessions)]).await;
    let mcp = McpClient::new(&fleet, &tokens_for(&fleet).await.access_token);
    mcp.initialize(json!({})).await;
    assert_eq!(
        sessions.recorded.sessions_opened.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "lazily"
    );
    for _ in 0..4 {
        let reply = mcp.call_tool("stateful__echo", json!({"text": "a"})).await;
        assert_eq!(reply["result"]["isError"], false, "{reply}");
    }
    let opened = sessions.recorded.sessions_opened.load(std::sync::atomic::Ordering::SeqCst);
    assert!(opened >= 1);
    sessions.expire_session();
    let reply = mcp.call_tool("stateful__echo", json!({"text": "b"})).await;
    assert_eq!(reply["result"]["isError"], false, "{reply}");
    assert!(sessions.recorded.sessions_opened.load(std::sync::atomic::Ordering::SeqCst) > opened);
    // Every request after initialize carried a session id and the negotiated version.
    for (headers, body) in sessions.recorded.requests.lock().unwrap().iter() {
        if body["method"] != "initialize" {
            assert!(headers.contains_key("mcp-session-id"), "{body}");
            assert_eq!(headers["mcp-protocol-version"], "2025-11-25");
        }
    }
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_and_deny_lists_hide_tools_and_long_or_odd_names_stay_valid_and_route_back() {
    let long = format!("summarise_{}", "x".repeat(60));
    let fixture = McpUpstream::start(Script {
        tools: vec![
            "read".into(),
            "write".into(),
            "delete".into(),
            long.clone(),
            "files.read".into(),
        ],
        ..Default::default()
    })
    .await;
    let fleet = fleet_with(vec![McpServer {
        allow_tools: vec!["read".into(), "write".into(), long.clone(), "files.read".into()],
        deny_tools: vec!["write".into()],
        ..open_service("docs-archive", &fixture)
    }])
    .await;
    let mcp = McpClient::new(&fleet, &tokens_for(&fleet).await.access_token);
    let names = mcp.tool_names().await;
    assert_eq!(names.len(), 3, "{names:?}");
    assert_eq!(names[0], "docs-archive__read");
    let rule = |n: &str| n.len() <= 64 && n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    for name in &names {
        assert!(rule(name), "{name} breaks the 64-character rule");
        assert!(name.starts_with("docs-archive__"));
    }
    for (name, upstream) in names.iter().zip(["read", long.as_str(), "files.read"]) {
        let reply = mcp.call_tool(name, json!({})).await;
        assert_eq!(reply["result"]["structuredContent"]["tool"], upstream, "{name}: {reply}");
    }
    for hidden in ["docs-archive__write", "docs-archive__delete"] {
        let reply = mcp.call_tool(hidden, json!({})).await;
        assert_eq!(reply["error"]["code"], -32602, "{hidden}");
        assert_eq!(reply["error"]["message"], format!("Unknown tool: {hidden}"));
    }
    // Prompts and resources are aggregated and routed the same way.
    let prompts = mcp.result("prompts/list", json!({})).await;
    assert_eq!(prompts["prompts"][0]["name"], "docs-archive__greeting");
    let prompt = mcp.result("prompts/get", json!({"name": "docs-archive__greeting"})).await;
    assert_eq!(prompt["messages"][0]["content"]["text"], "hello");
    let resources = mcp.result("resources/list", json!({})).await;
    let uri = resources["resources"][0]["uri"].as_str().unwrap().to_owned();
    assert_eq!(uri, "mcp+docs-archive:fixture://readme");
    let read = mcp.result("resources/read", json!({"uri": uri})).await;
    assert_eq!(read["contents"][0]["uri"], "fixture://readme");
    assert_eq!(read["contents"][0]["text"], "read me");
    fleet.stop().await;
}

// === Streamable HTTP rules ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_transport_rules_of_every_revision_are_kept() {
    let plain = McpUpstream::start(Script::default()).await;
    let fleet = fleet_with(vec![open_service("plain", &plain)]).await;
    let tokens = tokens_for(&fleet).await;
    let mut mcp = McpClient::new(&fleet, &tokens.access_token);
    let ping = r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#;

    // Origin: a foreign one is refused; Gatehouse's own passes; none passes.
    let response = mcp.post_raw(ping, &[("origin", "https://evil.example.com")]).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let issuer = fleet.issuer.clone();
    let response = mcp.post_raw(ping, &[("origin", issuer.as_str())]).await;
    assert_eq!(response.status(), StatusCode::OK);

    // MCP-Protocol-Version: unsupported → 400 with a JSON-RPC error; absent → 2025-03-26.
    mcp.version = Some("1999-01-01".into());
    let response = mcp.post_raw(ping, &[]).await;
    mcp.version = Some("2025-11-25".into());
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], -32600);

    // GET and DELETE: 405, POST allowed.
    for method in [reqwest::Method::GET, reqwest::Method::DELETE] {
        let response = fleet.mcp_raw(1, method.clone(), Some(&tokens.access_token)).await;
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED, "{method}");
        assert_eq!(response.headers()[header::ALLOW], "POST");
        let response = fleet.mcp_raw(0, method.clone(), None).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{method} needs the token first");
    }

    // Notifications and responses: 202, no body. No session id is ever issued.
    for message in [
        r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
        r#"{"jsonrpc":"2.0","id":"srv-1","result":{}}"#,
    ] {
        let response = mcp.post_raw(message, &[]).await;
        assert_eq!(response.status(), StatusCode::ACCEPTED);
        assert!(response.headers().get("mcp-session-id").is_none());
        assert!(response.text().await.unwrap().is_empty());
    }
    let response = mcp
        .post_raw(
            r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{}}}"#,
            &[],
        )
        .await;
    assert!(response.headers().get("mcp-session-id").is_none());
    assert_eq!(
        response.json::<Value>().await.unwrap()["result"]["protocolVersion"],
        "2025-06-18"
    );
    let response = fleet
        .http()
        .post(format!("{}/mcp", fleet.url(1)))
        .bearer_auth(&tokens.access_token)
        .header(header::CONTENT_TYPE, "text/plain")
        .body(ping)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let response = mcp.post_raw("{not json", &[]).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(response.json::<Value>().await.unwrap()["error"]["code"], -32700);

    // Batches: answered on 2025-03-26, refused later.
    let batch = json!([
        {"jsonrpc": "2.0", "id": "a", "method": "ping"},
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        {"jsonrpc": "2.0", "id": "b", "method": "tools/call", "params": {"name": "plain__echo", "arguments": {"text": "x"}}},
        {"jsonrpc": "2.0", "id": "c", "method": "no/such"},
    ])
    .to_string();
    mcp.version = Some("2025-06-18".into());
    let response = mcp.post_raw(&batch, &[]).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(response.json::<Value>().await.unwrap()["error"]["code"], -32600);
    mcp.version = None;
    let response = mcp.post_raw(&batch, &[]).await;
    assert_eq!(response.status(), StatusCode::OK);
    let answers: Value = response.json().await.unwrap();
    let answers = answers.as_array().unwrap();
    assert_eq!(answers.len(), 3, "{answers:?}");
    assert_eq!((answers[0]["id"].as_str(), &answers[0]["result"]), (Some("a"), &json!({})));
    assert_eq!(answers[1]["result"]["structuredContent"]["tool"], "echo");
    assert_eq!(answers[2]["error"]["code"], -32601);
    mcp.version = Some("2025-03-26".into());
    let response = mcp
        .post_raw(r#"[{"jsonrpc":"2.0","method":"notifications/initialized"}]"#, &[])
        .await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    fleet.stop().await;
}

/// A 2026-07-28 request body with its `_meta`.
fn modern(id: u64, method: &str, mut params: Value, capabilities: Value) -> String {
    params["_meta"] = json!({
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": capabilities,
        "io.modelcontextprotocol/clientInfo": {"name": "modern-test", "version": "1"},
    });
    json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_2026_wire_is_served_statelessly_with_its_headers_checked() {
    let demo = demo_upstream().await;
    let plain = McpUpstream::start(Script::default()).await;
    let fleet = fleet_with(vec![oauth_service("notes", &demo), open_service("plain", &plain)]).await;
    let mut mcp = McpClient::new(&fleet, &tokens_for(&fleet).await.access_token);
    mcp.version = Some("2026-07-28".into());

    let response = mcp
        .post_raw(
            &modern(1, "server/discover", json!({}), json!({})),
            &[("mcp-method", "server/discover")],
        )
        .await;
    let discovered = read_reply(response).await.response;
    let result = &discovered["result"];
    assert_eq!(
        result["supportedVersions"],
        json!(["2025-03-26", "2025-06-18", "2025-11-25", "2026-07-28"])
    );
    assert_eq!(result["capabilities"]["tools"], json!({}));
    assert_eq!(result["resultType"], "complete");

    let response = mcp
        .post_raw(
            &modern(2, "tools/list", json!({}), json!({})),
            &[("mcp-method", "tools/list")],
        )
        .await;
    let listed = read_reply(response).await.response;
    assert_eq!(listed["result"]["tools"][0]["name"], "plain__echo");
    // Every 2026-07-28 result has its type; a list its cache hints (per person: private).
    assert_eq!(listed["result"]["resultType"], "complete");
    assert_eq!(listed["result"]["ttlMs"], 0);
    assert_eq!(listed["result"]["cacheScope"], "private");

    let call = |id, name: &str, capabilities| {
        modern(
            id,
            "tools/call",
            json!({"name": name, "arguments": {"text": "m"}}),
            capabilities,
        )
    };
    let response = mcp
        .post_raw(
            &call(3, "plain__echo", json!({})),
            &[("mcp-method", "tools/call"), ("mcp-name", "plain__echo")],
        )
        .await;
    let called = read_reply(response).await.response;
    assert_eq!(called["result"]["structuredContent"]["tool"], "echo");
    assert_eq!(
        called["result"]["resultType"], "complete",
        "the upstream's legacy result, completed"
    );

    // A request whose _meta is missing or lacks a required key: 400, -32602.
    for (case, body) in [
        (
            "no _meta",
            json!({"jsonrpc": "2.0", "id": 8, "method": "tools/list", "params": {}}).to_string(),
        ),
        (
            "no clientCapabilities",
            json!({"jsonrpc": "2.0", "id": 8, "method": "tools/list",
                   "params": {"_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28"}}})
            .to_string(),
        ),
    ] {
        let response = mcp.post_raw(&body, &[("mcp-method", "tools/list")]).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{case}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], -32602, "{case}");
    }
    // ping is gone in 2026-07-28: 404, -32601.
    let response = mcp
        .post_raw(&modern(9, "ping", json!({}), json!({})), &[("mcp-method", "ping")])
        .await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], -32601);

    // Headers that do not mirror the body: 400, -32020.
    for (case, headers) in [
        ("method", vec![("mcp-method", "tools/list"), ("mcp-name", "plain__echo")]),
        ("name", vec![("mcp-method", "tools/call"), ("mcp-name", "plain__other")]),
        ("no name", vec![("mcp-method", "tools/call")]),
    ] {
        let response = mcp.post_raw(&call(4, "plain__echo", json!({})), &headers).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{case}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], -32020, "{case}");
        assert_eq!(body["id"], 4, "{case}");
    }
    // An unsupported modern revision: -32022 naming the supported ones.
    let future = modern(5, "tools/list", json!({}), json!({})).replace("2026-07-28", "2099-01-01");
    mcp.version = Some("2099-01-01".into());
    let response = mcp.post_raw(&future, &[("mcp-method", "tools/list")]).await;
    mcp.version = Some("2026-07-28".into());
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], -32022);
    assert_eq!(body["error"]["data"]["requested"], "2099-01-01");
    // An unknown method: 404 with -32601.
    let response = mcp
        .post_raw(&modern(6, "no/such", json!({}), json!({})), &[("mcp-method", "no/such")])
        .await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);

    // Not connected: URL elicitation as an InputRequiredResult when declared on the request.
    let response = mcp
        .post_raw(
            &call(7, "notes__echo", json!({"elicitation": {"url": {}}})),
            &[("mcp-method", "tools/call"), ("mcp-name", "notes__echo")],
        )
        .await;
    let result = read_reply(response).await.response["result"].clone();
    assert_eq!(result["resultType"], "input_required", "{result}");
    let request = &result["inputRequests"]["connect_notes"];
    assert_eq!(request["method"], "elicitation/create");
    assert_eq!(request["params"]["mode"], "url");
    assert!(request["params"]["url"].as_str().unwrap().contains("/connect/gh_cl_"));
    let response = mcp
        .post_raw(
            &call(8, "notes__echo", json!({})),
            &[("mcp-method", "tools/call"), ("mcp-name", "notes__echo")],
        )
        .await;
    assert_eq!(read_reply(response).await.response["result"]["isError"], true);
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_control_plane_down_warm_caches_keep_calls_working_and_cold_ones_answer_503() {
    let demo = demo_upstream().await;
    let plain = McpUpstream::start(Script::default()).await;
    let mut fleet = fleet_with(vec![oauth_service("notes", &demo), open_service("plain", &plain)]).await;
    let (_, tokens) = sign_up(&fleet, Identity::Skip, &["notes"], Some(&demo), "alice").await;
    let cold = tokens_for(&fleet).await;
    let mcp = McpClient::new(&fleet, &tokens.access_token);
    // Warm both data planes.
    for _ in 0..2 {
        assert_eq!(mcp.tool_names().await.len(), 4);
        assert_eq!(mcp.call_text("notes__whoami", json!({})).await, "you are alice");
        assert_eq!(mcp.call_tool("plain__echo", json!({})).await["result"]["isError"], false);
    }
    fleet.stop_control_plane().await;
    for _ in 0..2 {
        assert_eq!(mcp.call_text("notes__whoami", json!({})).await, "you are alice");
        assert_eq!(mcp.call_tool("plain__echo", json!({})).await["result"]["isError"], false);
        assert_eq!(mcp.tool_names().await.len(), 4);
    }
    let response = McpClient::new(&fleet, &cold.access_token)
        .post_raw(r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#, &[])
        .await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(response.headers().contains_key(header::RETRY_AFTER));
    fleet.stop().await;
}

// === The store's side of connect links, on both backends ===

crate::store_test!(a_connect_link_is_spent_once_and_can_be_released, |db| async move {
    use gatehouse_control_plane::store::Store;
    use gatehouse_control_plane::store::gateway::ConnectLinkRow;
    let store = Store::connect(&db.url).await.unwrap();
    let link = ConnectLinkRow {
        link_hash: "hash-1".into(),
        grant_id: "grt_1".into(),
        identity_id: "idn_1".into(),
        service: "notes".into(),
        expires_at: 700,
        used_at: None,
    };
    store.insert_connect_link(&link, 100).await.unwrap();
    assert_eq!(store.get_connect_link("hash-1").await.unwrap(), Some(link.clone()));
    assert!(store.use_connect_link("hash-1", 200).await.unwrap());
    assert!(
        !store.use_connect_link("hash-1", 201).await.unwrap(),
        "a second use is refused"
    );
    assert_eq!(store.get_connect_link("hash-1").await.unwrap().unwrap().used_at, Some(200));
    store.release_connect_link("hash-1").await.unwrap();
    assert!(store.use_connect_link("hash-1", 300).await.unwrap());
    assert!(!store.use_connect_link("nope", 300).await.unwrap());
});

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_url_from_a_connect_link_forwarded_to_another_browser_connects_nothing() {
    let (demo, fleet, mcp, link) = anonymous_caller_with_a_link().await;

    // The attacker opens the link for their grant, then sends the upstream URL to a victim.
    let attacker = fleet.browser();
    let response = submit_link(&fleet, &attacker, &link, 0, None).await;
    let upstream_url = crate::support::fleet::follow_onward(&attacker, response).await;
    let victim = fleet.browser();
    let callback = crate::support::fleet::allow_at_demo(&victim, demo.base_url(), &upstream_url, "victim").await;
    let refused = victim.get_raw(&callback.replacen(&fleet.issuer, fleet.url(1), 1)).await;
    assert_eq!(
        refused.status(),
        StatusCode::FORBIDDEN,
        "the callback needs the browser that opened the link"
    );
    assert!(
        fleet
            .control_plane
            .core()
            .store
            .list_connections(None, Some("notes"))
            .await
            .unwrap()
            .is_empty(),
        "the victim's account landed nowhere"
    );
    let response = mcp.call_tool("notes__whoami", json!({})).await;
    assert!(response.to_string().contains("-32042"), "still not connected: {response}");
    fleet.stop().await;
}

// === Connect links of signed-in users ===

/// A new client's tokens for the user `account`, signed in at the demo
/// provider on the identity page; no service connected.
async fn sign_up_as_user(fleet: &TestFleet, demo: &DemoUpstream, account: &str) -> Tokens {
    let client = fleet.register_public().await;
    let browser = fleet.browser();
    let pkce = Pkce::new();
    let (flow_id, page) = start_flow(fleet, &browser, 0, &client, &pkce).await;
    let response = browser
        .post_raw(
            &format!("{}/consent/{flow_id}/identity", fleet.url(1)),
            &[("csrf", page.csrf().as_str()), ("choice", "user")],
        )
        .await;
    let provider_url = crate::support::fleet::follow_onward(&browser, response).await;
    let callback = crate::support::fleet::allow_at_demo(&browser, demo.base_url(), &provider_url, account).await;
    let to = browser.get_raw(&callback.replacen(&fleet.issuer, fleet.url(0), 1)).await;
    assert_eq!(to.status(), StatusCode::SEE_OTHER);
    let services = browser.page(&format!("{}/consent/{flow_id}/services", fleet.url(1))).await;
    let code = approve(fleet, &browser, 1, &client, &flow_id, &services.csrf(), &pkce).await;
    fleet.exchange_code(0, &client, &code).await
}

/// Opens `link` in `browser` on data plane `dp`, which offers sign-in; signs
/// in at the demo provider as `account`; returns the sign-in callback URL
/// (on data plane `dp`), not yet followed.
async fn sign_in_at_link(
    fleet: &TestFleet,
    browser: &Browser,
    link: &str,
    dp: usize,
    demo: &DemoUpstream,
    account: &str,
) -> String {
    let page = browser.page(&link.replacen(&fleet.issuer, fleet.url(dp), 1)).await;
    assert!(page.html.contains("Sign in with"), "the page offers sign-in: {}", page.html);
    let response = submit_link(fleet, browser, link, dp, None).await;
    let provider_url = crate::support::fleet::follow_onward(browser, response).await;
    assert!(
        provider_url.starts_with(&format!("{}/authorize?", demo.base_url())) && provider_url.contains("openid"),
        "{provider_url}"
    );
    let callback = crate::support::fleet::allow_at_demo(browser, demo.base_url(), &provider_url, account).await;
    assert!(
        callback.starts_with(&format!("{}/signin/callback?", fleet.issuer)),
        "{callback}"
    );
    callback.replacen(&fleet.issuer, fleet.url(dp), 1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_in_users_connect_link_needs_the_same_account_signed_in_in_the_same_browser() {
    let demo = std::sync::Arc::new(demo_upstream().await);
    let fleet = fleet_with_sign_in(demo.clone(), vec![oauth_service("notes", &demo)], 2).await;
    let tokens = sign_up_as_user(&fleet, &demo, "alice").await;
    let mcp = McpClient::new(&fleet, &tokens.access_token);
    let link = link_in_result(&mcp.call_tool("notes__whoami", json!({})).await);
    let connections = || async {
        fleet
            .control_plane
            .core()
            .store
            .list_connections(None, Some("notes"))
            .await
            .unwrap()
    };

    // Bob signs in at Alice's link: refused (403), nothing connected, the link not spent.
    let bob = fleet.browser();
    let callback = sign_in_at_link(&fleet, &bob, &link, 0, &demo, "bob").await;
    let refused = bob.get_raw(&callback).await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    assert!(refused.text().await.unwrap().contains("another account"));
    assert!(connections().await.is_empty(), "bob's sign-in connected nothing");

    // Alice signs in at the same link. Her callback presented without the
    // connect cookie, or with another browser's, is refused and spends nothing.
    let alice = fleet.browser();
    let callback = sign_in_at_link(&fleet, &alice, &link, 1, &demo, "alice").await;
    let no_cookie = fleet.browser().get_raw(&callback).await;
    assert_eq!(no_cookie.status(), StatusCode::FORBIDDEN, "no connect cookie");
    let elsewhere = bob.get_raw(&callback).await;
    assert_eq!(elsewhere.status(), StatusCode::FORBIDDEN, "another browser's connect cookie");
    assert!(connections().await.is_empty());

    // In her own browser: on to the upstream, connected, and the same call works with the same token.
    let response = alice.get_raw(&callback).await;
    finish_link_at_demo(&fleet, &alice, response, &demo, "alice", 0).await;
    assert_eq!(mcp.call_text("notes__whoami", json!({})).await, "you are alice");
    assert_eq!(connections().await.len(), 1);

    // The link was spent, and the sign-in callback works once.
    let response = alice.get_raw(&link.replacen(&fleet.issuer, fleet.url(0), 1)).await;
    assert_eq!(response.status(), StatusCode::CONFLICT);
    assert!(alice.get_raw(&callback).await.status().is_client_error());
    fleet.stop().await;
}

// === Upstream credentials: a static header from a file, the per-grant cache ===

/// An admin of `up` registers `server` through the gRPC admin API.
async fn register_at(up: &UpProcess, server: gatehouse::pb::McpServer) {
    let admin = gatehouse::admin_client::GrpcClient::connect(&up.grpc_url, &up.admin_credential)
        .await
        .unwrap();
    admin
        .admin()
        .create_mcp_server(gatehouse::pb::CreateMcpServerRequest { server: Some(server) })
        .await
        .unwrap();
}

/// What a client sees of `up`: one data plane, which is also the issuer.
fn edge_of(up: &UpProcess) -> Edge {
    Edge {
        urls: vec![up.public_url.clone()],
        issuer: up.public_url.clone(),
    }
}

/// `tools/list` until it names `tool` (a new service reaches the data plane
/// by an event); returns the last listing.
async fn listing_with(mcp: &McpClient, tool: &str) -> Vec<String> {
    for _ in 0..50 {
        let names = mcp.tool_names().await;
        if names.iter().any(|n| n == tool) {
            return names;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{tool} never listed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_static_header_read_from_a_file_reaches_the_upstream_and_never_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let secret = gatehouse_control_plane::secret::random_id("file-held-api-key-");
    let key_file = dir.path().join("search.key");
    // As an operator writes it: with a trailing newline, readable by the service only.
    std::fs::write(&key_file, format!("{secret}\n")).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let keyed = McpUpstream::start(Script {
        tools: vec!["lookup".into()],
        required_header: Some(("x-api-key".into(), secret.clone())),
        ..Default::default()
    })
    .await;
    let up = UpProcess::start(&dir.path().join("data"), "trace");
    register_at(
        &up,
        gatehouse::pb::McpServer {
            name: "keyed".into(),
            url: keyed.url.clone(),
            auth_mode: gatehouse::pb::UpstreamAuthMode::StaticHeaders as i32,
            static_headers: vec![gatehouse::pb::StaticHeader {
                name: "X-Api-Key".into(),
                value_file: key_file.display().to_string(),
                ..Default::default()
            }],
            ..Default::default()
        },
    )
    .await;
    let edge = edge_of(&up);
    let mcp = McpClient::new(&edge, &tokens_for(&edge).await.access_token);
    mcp.initialize(json!({})).await;
    assert!(
        listing_with(&mcp, "keyed__lookup")
            .await
            .contains(&"keyed__lookup".to_owned())
    );
    let reply = mcp.call_tool("keyed__lookup", json!({"text": "q"})).await;
    assert_eq!(reply["result"]["isError"], false, "{reply}");
    assert_eq!(reply["result"]["structuredContent"]["tool"], "lookup");
    let headers = keyed.all_headers();
    assert!(headers.len() >= 3, "initialize, tools/list and tools/call reached it");
    for request in &headers {
        let sent: Vec<&str> = request
            .iter()
            .filter(|(n, _)| n == "x-api-key")
            .map(|(_, v)| v.as_str())
            .collect();
        assert_eq!(sent, [secret.as_str()], "the file's value, without its newline, once");
    }
    assert!(
        !reply.to_string().contains(&secret),
        "the secret does not come back to the client"
    );

    let log = up.stop();
    let upstream = keyed.url.trim_start_matches("http://").trim_end_matches("/mcp");
    assert!(
        log.contains(&format!("connected to {upstream}")),
        "the trace log covers the calls to the service"
    );
    assert!(!log.contains(&secret), "the header's value reached the log");
}

/// A URL where nothing listens: a port that was just free.
fn refusing_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    format!("http://127.0.0.1:{port}/mcp")
}

/// The value of the Prometheus series `series` (name and labels) in `text`.
fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_upstreams_are_left_out_of_tools_list_counted_and_logged() {
    let failing = McpUpstream::start(Script {
        tools: vec!["fail".into()],
        broken: Some(Broken::Status(503)),
        ..Default::default()
    })
    .await;
    let garbled = McpUpstream::start(Script {
        tools: vec!["garble".into()],
        broken: Some(Broken::Garbage),
        ..Default::default()
    })
    .await;
    let fine = McpUpstream::start(Script::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let up = UpProcess::start_with(dir.path(), "info", &[("GATEHOUSE_LOG__FORMAT", "json")]);
    let broken = [
        ("failing", failing.url.clone()),
        ("refusing", refusing_url()),
        ("garbled", garbled.url.clone()),
    ];
    for (name, url) in broken.iter().cloned().chain([("fine", fine.url.clone())]) {
        register_at(
            &up,
            gatehouse::pb::McpServer {
                name: name.into(),
                url,
                auth_mode: gatehouse::pb::UpstreamAuthMode::None as i32,
                ..Default::default()
            },
        )
        .await;
    }
    let edge = edge_of(&up);
    let mcp = McpClient::new(&edge, &tokens_for(&edge).await.access_token);
    mcp.initialize(json!({})).await;
    for _ in 0..2 {
        let names = listing_with(&mcp, "fine__echo").await;
        assert_eq!(names, ["fine__echo"], "the broken ones are left out, the rest listed");
    }
    assert_eq!(mcp.call_tool("fine__echo", json!({})).await["result"]["isError"], false);
    // The broken ones were asked (past initialize, for two of them).
    for fixture in [&failing, &garbled] {
        let methods: Vec<Value> = fixture
            .recorded
            .requests
            .lock()
            .unwrap()
            .iter()
            .map(|(_, body)| body["method"].clone())
            .collect();
        assert!(methods.contains(&json!("tools/list")), "{methods:?}");
    }

    let metrics = edge
        .http()
        .get(format!("{}/metrics", up.public_url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for (name, _) in &broken {
        let count = metric(
            &metrics,
            &format!("gatehouse_data_plane_upstream_errors_total{{server=\"{name}\"}}"),
        );
        assert!(count.is_some_and(|c| c >= 2.0), "{name} counted twice: {metrics}");
    }
    assert_eq!(
        metric(&metrics, "gatehouse_data_plane_upstream_errors_total{server=\"fine\"}"),
        None
    );

    let log = up.stop();
    let failures: Vec<Value> = log
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|line| line["message"] == "upstream call failed")
        .collect();
    for (name, _) in &broken {
        let lines: Vec<&Value> = failures.iter().filter(|l| l["service"] == *name).collect();
        assert!(lines.len() >= 2, "{name}'s failures are logged: {failures:#?}");
        assert!(lines.iter().all(|l| l["level"] == "WARN" && l["method"] == "tools/list"));
        assert!(lines.iter().all(|l| !l["error"].as_str().unwrap_or("").is_empty()));
    }
    assert!(!failures.iter().any(|l| l["service"] == "fine"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warm_data_plane_stops_using_a_connection_the_admin_disconnected() {
    let demo = demo_upstream().await;
    let fleet = fleet_with(vec![oauth_service("notes", &demo)]).await;
    let (_, tokens) = sign_up(&fleet, Identity::Skip, &["notes"], Some(&demo), "alice").await;
    let mcp = McpClient::new(&fleet, &tokens.access_token);
    mcp.initialize(json!({"elicitation": {"url": {}}})).await;
    // Warm: both data planes hold the caller and the upstream credential.
    for _ in 0..4 {
        assert_eq!(mcp.call_text("notes__whoami", json!({})).await, "you are alice");
    }
    for dp in 0..2 {
        let text = fleet
            .http()
            .get(format!("{}/metrics", fleet.url(dp)))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let hits = metric(&text, "gatehouse_data_plane_cache_hits_total{cache=\"credential\"}");
        assert!(
            hits.is_some_and(|h| h >= 1.0),
            "data plane {dp} served from its cache: {text}"
        );
    }

    // The admin disconnects Alice (her token is revoked at the provider too);
    // from now on no request may leave a data plane with it.
    let connection = fleet
        .control_plane
        .core()
        .store
        .list_connections(None, Some("notes"))
        .await
        .unwrap()
        .remove(0);
    let admin = fleet.control_plane.admin().await;
    admin
        .admin()
        .delete_connection(gatehouse::pb::DeleteConnectionRequest { id: connection.id })
        .await
        .unwrap();
    // Revocations reach every data plane within a second.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let reached = demo.stats().mcp_requests();
    for _ in 0..4 {
        link_in_elicitation(&mcp.call_tool("notes__whoami", json!({})).await);
    }
    assert_eq!(
        demo.stats().mcp_requests(),
        reached,
        "no call went upstream with the disconnected connection's token"
    );
    fleet.stop().await;
}

/// The bearer tokens of the demo upstream's `/mcp` requests, in order.
fn bearers_at(demo: &DemoUpstream) -> Vec<String> {
    demo.stats()
        .recorded_requests()
        .iter()
        .filter_map(|r| r.header("authorization").map(str::to_owned))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cached_upstream_credential_is_not_used_once_its_token_is_due_to_expire() {
    // Tokens that live 6 s past the control plane's refresh margin: the data
    // planes may keep one at most that long, then it is refreshed, not reused.
    let margin = gatehouse_control_plane::credentials::REFRESH_AHEAD_SECONDS.unsigned_abs();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let demo = DemoUpstream::spawn(
        listener,
        DemoConfig {
            access_token_ttl: Duration::from_secs(margin + 6),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let fleet = fleet_with(vec![oauth_service("notes", &demo)]).await;
    let (_, tokens) = sign_up(&fleet, Identity::Skip, &["notes"], Some(&demo), "alice").await;
    let connected = std::time::Instant::now();
    let mcp = McpClient::new(&fleet, &tokens.access_token);
    for _ in 0..4 {
        assert_eq!(mcp.call_text("notes__whoami", json!({})).await, "you are alice");
    }
    let first = bearers_at(&demo);
    assert!(first.len() >= 4, "{first:?}");
    assert!(
        first.iter().all(|b| *b == first[0]),
        "within its lifetime the cached token is used"
    );
    assert_eq!(demo.stats().refreshes(), 0);

    // Past the point where the token may still be used (6 s after connecting,
    // give or take the control plane's whole seconds).
    tokio::time::sleep(Duration::from_secs(8).saturating_sub(connected.elapsed())).await;
    for _ in 0..4 {
        assert_eq!(mcp.call_text("notes__whoami", json!({})).await, "you are alice");
    }
    assert_eq!(demo.stats().refreshes(), 1, "refreshed once, for both data planes");
    let later = &bearers_at(&demo)[first.len()..];
    assert!(
        !later.is_empty() && later.iter().all(|b| *b != first[0]),
        "the old token was used again: {later:?}"
    );
    assert!(later.iter().all(|b| *b == later[0]), "both data planes use the new one");
    fleet.stop().await;
}

// === Upstream sessions ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_callers_of_one_server_get_separate_upstream_sessions() {
    let demo = demo_upstream().await;
    let fixture = McpUpstream::start(Script {
        sessions: true,
        ..Default::default()
    })
    .await;
    // A per-user OAuth service whose tokens come from the demo provider, so
    // the fixture sees each caller's own bearer.
    let service = McpServer {
        name: "stateful".into(),
        display_name: "Stateful".into(),
        url: fixture.url.clone(),
        auth_mode: AuthMode::Oauth,
        oauth: UpstreamOAuth {
            issuer: demo.base_url().to_owned(),
            resource: demo.mcp_url(),
            ..Default::default()
        },
        ..Default::default()
    };
    let fleet = fleet_with(vec![service]).await;
    let (_, alice) = sign_up(&fleet, Identity::Skip, &["stateful"], Some(&demo), "alice").await;
    let (_, bob) = sign_up(&fleet, Identity::Skip, &["stateful"], Some(&demo), "bob").await;
    let callers = [
        McpClient::new(&fleet, &alice.access_token),
        McpClient::new(&fleet, &bob.access_token),
    ];
    // Interleaved, so each data plane serves both callers.
    let mut seen: [Vec<(String, String)>; 2] = Default::default();
    for _ in 0..3 {
        for (caller, seen) in callers.iter().zip(seen.iter_mut()) {
            let reply = caller.call_tool("stateful__echo", json!({"text": "x"})).await;
            let result = &reply["result"]["structuredContent"];
            assert_eq!(result["tool"], "echo", "{reply}");
            seen.push((
                result["authorization"].as_str().unwrap().to_owned(),
                result["session"].as_str().unwrap().to_owned(),
            ));
        }
    }
    let [alice_seen, bob_seen] = seen;
    let bearer = |seen: &[(String, String)]| {
        assert!(seen.iter().all(|(b, _)| *b == seen[0].0), "one upstream token per caller");
        seen[0].0.clone()
    };
    let (alice_bearer, bob_bearer) = (bearer(&alice_seen), bearer(&bob_seen));
    assert!(alice_bearer.starts_with("Bearer ") && alice_bearer != bob_bearer);
    let sessions = |seen: &[(String, String)]| {
        let mut ids: Vec<String> = seen.iter().map(|(_, s)| s.clone()).collect();
        ids.sort();
        ids.dedup();
        ids
    };
    let (alice_sessions, bob_sessions) = (sessions(&alice_seen), sessions(&bob_seen));
    assert!(
        alice_sessions.iter().all(|s| !bob_sessions.contains(s)),
        "a session is never shared: {alice_sessions:?} {bob_sessions:?}"
    );
    assert!(
        alice_sessions.len() <= 2 && bob_sessions.len() <= 2,
        "one session per caller and data plane, reused: {alice_sessions:?} {bob_sessions:?}"
    );

    // The fixture's own record: each session was opened with one caller's
    // token and only ever presented with that token.
    let issued = fixture.sessions_by_authorization();
    assert_eq!(
        issued.keys().collect::<Vec<_>>(),
        {
            let mut both = vec![&alice_bearer, &bob_bearer];
            both.sort();
            both
        },
        "sessions were opened for the two callers only"
    );
    for (authorization, session) in fixture.session_uses() {
        assert!(
            issued.get(&authorization).is_some_and(|ids| ids.contains(&session)),
            "{session} was presented with another caller's token"
        );
    }
    fleet.stop().await;
}
