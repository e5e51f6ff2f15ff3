//! One test per attack, each named after it: the exact refusal (HTTP status and
//! OAuth error, or the error page) and that nothing changed (the store's rows,
//! the flow still usable by its own browser, no code or token issued, no
//! outbound request made). Attacks already proved elsewhere are listed in
//! SECURITY.md with the test that proves them; this file holds the rest.

use std::time::{Duration, Instant};

use gatehouse::demo::DemoUpstream;
use gatehouse_control_plane::mcp_servers::{AuthMode, McpServer};
use reqwest::header::{self, HeaderMap};
use reqwest::{Response, StatusCode};
use serde_json::json;

use crate::support::fleet::{
    Browser, Pkce, RegisteredClient, STATE, TestFleet, allow_at_demo, approve, authorize_params, connect_demo_service,
    demo_upstream, follow_onward, location, query_of, skip, start_flow,
};
use crate::support::http_fixture::{HttpFixture, Reply};
use crate::support::mcp_client::McpClient;
use crate::support::mcp_upstream::{McpUpstream, Script};
use crate::support::snapshot::{count, snapshot};

// === Harness ===

/// An error page: `status`, the page headers, and neither a redirect nor a new cookie.
async fn assert_refusal_page(response: Response, status: StatusCode, case: &str) -> String {
    assert_eq!(response.status(), status, "{case}");
    let headers: &HeaderMap = response.headers();
    assert!(headers.get(header::LOCATION).is_none(), "{case}: a refusal never redirects");
    assert!(headers.get(header::SET_COOKIE).is_none(), "{case}: a refusal sets no cookie");
    assert_eq!(headers[header::X_FRAME_OPTIONS], "DENY", "{case}");
    assert!(
        headers[header::CONTENT_TYPE].to_str().unwrap().starts_with("text/html"),
        "{case}: an HTML page"
    );
    response.text().await.expect("page body")
}

/// `params` with `key` set to `value`, or removed for `None`.
fn with(params: &[(String, String)], key: &str, value: Option<&str>) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = params.iter().filter(|(k, _)| k != key).cloned().collect();
    if let Some(value) = value {
        out.push((key.to_owned(), value.to_owned()));
    }
    out
}

/// A fleet with the demo as the oauth service "notes".
async fn fleet_with_demo(demo: &DemoUpstream) -> TestFleet {
    let url = demo.mcp_url();
    TestFleet::builder()
        .control_plane(move |config| {
            config.outbound.allow_loopback = true;
            config.mcp_servers = vec![McpServer {
                name: "notes".into(),
                display_name: "Demo Notes".into(),
                url,
                auth_mode: AuthMode::Oauth,
                ..Default::default()
            }];
        })
        .spawn()
        .await
}

/// A flow of a new public client walked to the services page: (client, flow id, CSRF token, PKCE).
async fn flow_at_services(fleet: &TestFleet, browser: &Browser) -> (RegisteredClient, String, String, Pkce) {
    let client = fleet.register_public().await;
    let pkce = Pkce::new();
    let (flow_id, identity) = start_flow(fleet, browser, 0, &client, &pkce).await;
    let services = skip(fleet, browser, 0, &flow_id, &identity.csrf()).await;
    (client, flow_id, services.csrf(), pkce)
}

/// Connect "notes" and allow at the demo as `account`; the callback URL (on
/// data plane 0), not yet visited.
async fn upstream_callback(fleet: &TestFleet, browser: &Browser, demo: &DemoUpstream, flow_id: &str, csrf: &str) -> String {
    let response = browser
        .post_raw(
            &format!("{}/consent/{flow_id}/connect", fleet.url(0)),
            &[("csrf", csrf), ("service", "notes")],
        )
        .await;
    let upstream_url = crate::support::fleet::follow_onward(browser, response).await;
    let callback = allow_at_demo(browser, demo.base_url(), &upstream_url, "alice").await;
    assert!(
        callback.starts_with(&format!("{}/oauth/callback?", fleet.issuer)),
        "{callback}"
    );
    callback
}

/// `url` with query parameter `name` set to `value` (or removed for `None`).
fn with_query(url: &str, name: &str, value: Option<&str>) -> String {
    let mut parsed = url::Url::parse(url).unwrap();
    let pairs: Vec<(String, String)> = parsed
        .query_pairs()
        .into_owned()
        .filter(|(k, _)| k != name)
        .chain(value.map(|v| (name.to_owned(), v.to_owned())))
        .collect();
    parsed.query_pairs_mut().clear().extend_pairs(pairs);
    parsed.to_string()
}

// === Open redirect through redirect_uri (RFC 6749 §4.1.2.1, RFC 9700 §4.11.2) ===

/// Each `(case, redirect_uri)` at `/authorize` for `client`: an error page,
/// never a redirect, no flow, no row anywhere, the attacker's URI not linked.
async fn assert_redirect_uris_refused(fleet: &TestFleet, client: &RegisteredClient, cases: &[(&str, &str)]) {
    let browser = fleet.browser();
    let params = authorize_params(client, &Pkce::new(), STATE);
    let before = snapshot(fleet.db()).await;
    for (case, uri) in cases {
        let response = browser
            .authorize_raw(fleet.url(0), &with(&params, "redirect_uri", Some(uri)))
            .await;
        let html = assert_refusal_page(response, StatusCode::BAD_REQUEST, case).await;
        assert!(
            !html.contains(&format!("href=\"{uri}")),
            "{case}: the page does not link the URI"
        );
    }
    before.assert_unchanged(&snapshot(fleet.db()).await, "refused redirect URIs");
    assert!(browser.cookie("gatehouse-flow").is_none(), "no flow was opened");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_redirect_through_an_unregistered_redirect_uri_gets_an_error_page() {
    let fleet = TestFleet::start(1).await;
    let client = fleet.register_public().await;
    assert_redirect_uris_refused(
        &fleet,
        &client,
        &[
            ("an attacker's https URI", "https://evil.example/callback"),
            (
                "an attacker's URI with the registered path",
                "https://evil.example:33418/callback",
            ),
            ("a javascript: URI", "javascript:alert(document.domain)"),
            ("a data: URI", "data:text/html,<script>alert(1)</script>"),
            ("a protocol-relative URI", "//evil.example/callback"),
        ],
    )
    .await;
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_redirect_through_a_registered_uri_with_another_path_or_query_gets_an_error_page() {
    let fleet = TestFleet::start(1).await;
    let public = fleet.register_public().await;
    assert_redirect_uris_refused(
        &fleet,
        &public,
        &[
            ("an extra path segment", "http://127.0.0.1:33418/callback/evil"),
            ("dot segments", "http://127.0.0.1:33418/callback/../evil"),
            ("an encoded slash", "http://127.0.0.1:33418/callback%2F..%2Fevil"),
            ("a trailing slash", "http://127.0.0.1:33418/callback/"),
            ("an added query", "http://127.0.0.1:33418/callback?next=https://evil.example"),
            ("an empty query", "http://127.0.0.1:33418/callback?"),
            ("a fragment", "http://127.0.0.1:33418/callback#https://evil.example"),
            ("another path on a varied port", "http://127.0.0.1:40000/other"),
        ],
    )
    .await;
    let confidential = fleet.register_confidential("client_secret_basic").await;
    assert_redirect_uris_refused(
        &fleet,
        &confidential,
        &[
            ("an extra path segment", "https://app.example.com/callback/evil"),
            ("an added query", "https://app.example.com/callback?x=1"),
            ("another port", "https://app.example.com:8443/callback"),
            ("a suffixed host", "https://app.example.com.evil.example/callback"),
            ("userinfo naming the host", "https://app.example.com@evil.example/callback"),
            ("http instead of https", "http://app.example.com/callback"),
            ("upper-case path", "https://app.example.com/CALLBACK"),
        ],
    )
    .await;
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_redirect_through_a_loopback_uri_on_another_host_gets_an_error_page() {
    let fleet = TestFleet::start(1).await;
    // Registered: http://127.0.0.1:33418/callback. The port may vary (RFC 8252 §7.3); the host may not.
    let client = fleet.register_public().await;
    assert_redirect_uris_refused(
        &fleet,
        &client,
        &[
            ("localhost for 127.0.0.1", "http://localhost:33418/callback"),
            ("[::1] for 127.0.0.1", "http://[::1]:33418/callback"),
            ("another loopback address", "http://127.0.0.2:33418/callback"),
            (
                "a name starting like the address",
                "http://127.0.0.1.evil.example:33418/callback",
            ),
            ("another host on a varied port", "http://evil.example:40000/callback"),
            ("https on the loopback host", "https://127.0.0.1:33418/callback"),
            ("a decimal spelling of the address", "http://2130706433:33418/callback"),
        ],
    )
    .await;
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_redirect_through_an_error_for_an_unknown_client_gets_an_error_page() {
    let fleet = TestFleet::start(1).await;
    let client = fleet.register_public().await;
    let browser = fleet.browser();
    let good = authorize_params(&client, &Pkce::new(), STATE);
    let unknown = with(&good, "client_id", Some("cli_doesnotexist"));
    let evil = "https://evil.example/callback";
    // Each request is wrong in a way that a verified client would hear about at
    // its redirect URI; unverified, the browser gets a page instead.
    let cases = [
        (
            "an unknown client with plain PKCE",
            with(
                &with(&unknown, "redirect_uri", Some(evil)),
                "code_challenge_method",
                Some("plain"),
            ),
        ),
        (
            "an unknown client with response_type=token",
            with(&with(&unknown, "redirect_uri", Some(evil)), "response_type", Some("token")),
        ),
        (
            "an unknown client with an unknown scope",
            with(&with(&unknown, "redirect_uri", Some(evil)), "scope", Some("admin")),
        ),
        (
            "an unknown client without PKCE",
            with(&with(&unknown, "redirect_uri", Some(evil)), "code_challenge", None),
        ),
        (
            "a known client, an unregistered URI and plain PKCE",
            with(
                &with(&good, "redirect_uri", Some(evil)),
                "code_challenge_method",
                Some("plain"),
            ),
        ),
        (
            "a known client, an unregistered URI and a foreign resource",
            with(
                &with(&good, "redirect_uri", Some(evil)),
                "resource",
                Some("https://evil.example/mcp"),
            ),
        ),
    ];
    let before = snapshot(fleet.db()).await;
    for (case, params) in cases {
        let response = browser.authorize_raw(fleet.url(0), &params).await;
        let html = assert_refusal_page(response, StatusCode::BAD_REQUEST, case).await;
        assert!(
            !html.contains("evil.example"),
            "{case}: the page does not link the attacker's URI"
        );
    }
    before.assert_unchanged(&snapshot(fleet.db()).await, "errors of unverified requests");
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_redirect_through_deny_goes_only_to_the_registered_redirect_uri() {
    let fleet = TestFleet::start(1).await;
    let client = fleet.register_confidential("client_secret_basic").await;
    let browser = fleet.browser();
    // A state crafted to smuggle parameters: it must come back as one value.
    let state = "x&redirect_uri=https://evil.example/&error=none#frag";
    let flow_id = browser
        .authorize(fleet.url(0), &authorize_params(&client, &Pkce::new(), state))
        .await;
    let identity = browser.page(&format!("{}/consent/{flow_id}/identity", fleet.url(0))).await;
    // The deny form carries fields an attacker added: they are ignored.
    let to = browser
        .post_see_other(
            &format!("{}/consent/{flow_id}/deny", fleet.url(0)),
            &[
                ("csrf", identity.csrf().as_str()),
                ("redirect_uri", "https://evil.example/callback"),
                ("state", "forged"),
            ],
        )
        .await;
    let parsed = url::Url::parse(&to).unwrap();
    assert_eq!(
        format!("{}://{}{}", parsed.scheme(), parsed.host_str().unwrap(), parsed.path()),
        client.redirect_uri,
        "deny redirects to the registered URI only: {to}"
    );
    assert_eq!(parsed.fragment(), None, "{to}");
    let query = query_of(&to);
    assert_eq!(
        query.keys().map(String::as_str).collect::<Vec<_>>(),
        ["error", "error_description", "iss", "state"],
        "nothing but the error, state and iss: {to}"
    );
    assert_eq!(query["error"], ["access_denied"]);
    assert_eq!(query["error_description"], ["the request was denied"]);
    assert_eq!(query["state"], [state], "the state comes back as one value");
    assert_eq!(query["iss"], [fleet.issuer.as_str()]);
    assert_eq!(count(fleet.db(), "auth_codes").await, 0, "deny issues no code");
    fleet.stop().await;
}

// === PKCE downgrade (RFC 9700 §2.1.1, §4.8) ===

/// Each `(case, params)` is refused by a redirect to the verified URI with
/// `invalid_request`, state and iss, before any flow exists.
async fn assert_pkce_refused(fleet: &TestFleet, client: &RegisteredClient, cases: Vec<(&str, Vec<(String, String)>)>) {
    let browser = fleet.browser();
    let before = snapshot(fleet.db()).await;
    for (case, params) in cases {
        let response = browser.authorize_raw(fleet.url(0), &params).await;
        assert_eq!(response.status(), StatusCode::FOUND, "{case}");
        assert!(response.headers().get(header::SET_COOKIE).is_none(), "{case}: no flow cookie");
        let to = location(&response);
        assert!(to.starts_with(&format!("{}?", client.redirect_uri)), "{case}: {to}");
        let query = query_of(&to);
        assert_eq!(query["error"], ["invalid_request"], "{case}: {to}");
        assert_eq!(query["state"], [STATE], "{case}");
        assert_eq!(query["iss"], [fleet.issuer.as_str()], "{case}");
        assert!(!query.contains_key("code"), "{case}");
    }
    before.assert_unchanged(&snapshot(fleet.db()).await, "PKCE downgrades");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pkce_downgrade_to_plain_is_refused_before_a_flow_exists() {
    let fleet = TestFleet::start(1).await;
    let client = fleet.register_public().await;
    let pkce = Pkce::new();
    let params = authorize_params(&client, &pkce, STATE);
    assert_pkce_refused(
        &fleet,
        &client,
        vec![
            ("plain", with(&params, "code_challenge_method", Some("plain"))),
            (
                "plain with the verifier as challenge",
                with(
                    &with(&params, "code_challenge_method", Some("plain")),
                    "code_challenge",
                    Some(&pkce.verifier),
                ),
            ),
            (
                "a challenge without a method (RFC 7636 §4.3 would read plain)",
                with(&params, "code_challenge_method", None),
            ),
            ("a lower-case method", with(&params, "code_challenge_method", Some("s256"))),
        ],
    )
    .await;
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pkce_downgrade_by_omitting_the_code_challenge_is_refused_before_a_flow_exists() {
    let fleet = TestFleet::start(1).await;
    let client = fleet.register_public().await;
    let params = authorize_params(&client, &Pkce::new(), STATE);
    assert_pkce_refused(
        &fleet,
        &client,
        vec![
            (
                "no challenge and no method",
                with(&with(&params, "code_challenge", None), "code_challenge_method", None),
            ),
            ("S256 without a challenge", with(&params, "code_challenge", None)),
            ("an empty challenge", with(&params, "code_challenge", Some(""))),
        ],
    )
    .await;
    fleet.stop().await;
}

// === CSRF on the consent forms ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csrf_on_every_consent_post_is_refused_with_403_and_changes_nothing() {
    let demo = demo_upstream().await;
    let fleet = fleet_with_demo(&demo).await;
    let client = fleet.register_public().await;
    let browser = fleet.browser();
    // An earlier flow of the same browser: its token is another flow's.
    let (_, earlier) = start_flow(&fleet, &browser, 0, &client, &Pkce::new()).await;
    let other_flows_token = earlier.csrf();
    // The flow under attack is at its last step with a connected service, so
    // each forged post would change something if it went through.
    let pkce = Pkce::new();
    let (flow_id, identity) = start_flow(&fleet, &browser, 0, &client, &pkce).await;
    let csrf = skip(&fleet, &browser, 0, &flow_id, &identity.csrf()).await.csrf();
    connect_demo_service(&fleet, &browser, 0, (&flow_id, &csrf), "notes", demo.base_url(), "alice").await;
    assert_ne!(csrf, other_flows_token);
    let mut wrong = csrf.clone().into_bytes();
    wrong[5] = if wrong[5] == b'A' { b'B' } else { b'A' };
    let wrong = String::from_utf8(wrong).unwrap();

    let before = snapshot(fleet.db()).await;
    let upstream_calls = (
        demo.stats().registrations(),
        demo.stats().code_exchanges(),
        demo.stats().revocations(),
    );
    for (action, fields) in [
        ("identity", vec![("choice", "skip")]),
        ("connect", vec![("service", "notes")]),
        ("disconnect", vec![("service", "notes")]),
        ("approve", vec![]),
        ("deny", vec![]),
    ] {
        for (token_case, token) in [
            ("missing", None),
            ("empty", Some("")),
            ("wrong", Some(wrong.as_str())),
            ("another flow's", Some(other_flows_token.as_str())),
        ] {
            let case = format!("{action} with a {token_case} CSRF token");
            let mut form = fields.clone();
            if let Some(token) = token {
                form.push(("csrf", token));
            }
            let response = browser
                .post_raw(&format!("{}/consent/{flow_id}/{action}", fleet.url(0)), &form)
                .await;
            assert_refusal_page(response, StatusCode::FORBIDDEN, &case).await;
        }
    }
    before.assert_unchanged(&snapshot(fleet.db()).await, "forged consent posts");
    assert_eq!(
        (
            demo.stats().registrations(),
            demo.stats().code_exchanges(),
            demo.stats().revocations()
        ),
        upstream_calls,
        "no forged post reached the upstream"
    );
    // The flow is untouched: still connected, and its own browser approves it.
    let services = browser.page(&format!("{}/consent/{flow_id}/services", fleet.url(0))).await;
    assert!(services.html.contains("Connected as alice"), "{}", services.html);
    approve(&fleet, &browser, 0, &client, &flow_id, &csrf, &pkce).await;
    fleet.stop().await;
}

// === Consent steps out of order, repeated, expired ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_before_choosing_an_identity_is_out_of_order_and_starts_nothing() {
    let demo = demo_upstream().await;
    let fleet = fleet_with_demo(&demo).await;
    let client = fleet.register_public().await;
    let browser = fleet.browser();
    let (flow_id, identity) = start_flow(&fleet, &browser, 0, &client, &Pkce::new()).await;
    let before = snapshot(fleet.db()).await;
    let response = browser
        .post_raw(
            &format!("{}/consent/{flow_id}/connect", fleet.url(0)),
            &[("csrf", identity.csrf().as_str()), ("service", "notes")],
        )
        .await;
    let html = assert_refusal_page(response, StatusCode::CONFLICT, "connect before an identity").await;
    assert!(
        html.contains(&format!(r#"href="/consent/{flow_id}""#)),
        "a link to the right step"
    );
    before.assert_unchanged(&snapshot(fleet.db()).await, "connect before an identity");
    assert_eq!(
        count(fleet.db(), "upstream_attempts").await,
        0,
        "no upstream state was created"
    );
    assert_eq!(demo.stats().registrations(), 0, "the upstream was not contacted");
    // The flow goes on at its real step.
    skip(&fleet, &browser, 0, &flow_id, &identity.csrf()).await;
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approving_twice_is_refused_and_issues_no_second_code() {
    let fleet = TestFleet::start(1).await;
    let browser = fleet.browser();
    let (client, flow_id, csrf, pkce) = flow_at_services(&fleet, &browser).await;
    let code = approve(&fleet, &browser, 0, &client, &flow_id, &csrf, &pkce).await;
    let before = snapshot(fleet.db()).await;
    assert_eq!(before.rows("auth_codes").len(), 1);
    let response = browser
        .post_raw(
            &format!("{}/consent/{flow_id}/approve", fleet.url(0)),
            &[("csrf", csrf.as_str())],
        )
        .await;
    assert_refusal_page(response, StatusCode::CONFLICT, "a second approve").await;
    before.assert_unchanged(&snapshot(fleet.db()).await, "a second approve");
    // The one code issued still works.
    fleet.exchange_code(0, &client, &code).await;
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_flow_cannot_be_approved_or_continued() {
    let fleet = TestFleet::start(1).await;
    let browser = fleet.browser();
    let (_, flow_id, csrf, _) = flow_at_services(&fleet, &browser).await;
    // Flows live 15 minutes (docs/consent-flow.md, "Lifetimes").
    fleet.clock.advance(15 * 60 + 1);
    let before = snapshot(fleet.db()).await;
    for (case, step, form) in [
        ("approve", "approve", vec![("csrf", csrf.as_str())]),
        ("identity", "identity", vec![("csrf", csrf.as_str()), ("choice", "skip")]),
        ("deny", "deny", vec![("csrf", csrf.as_str())]),
    ] {
        let response = browser
            .post_raw(&format!("{}/consent/{flow_id}/{step}", fleet.url(0)), &form)
            .await;
        assert_refusal_page(response, StatusCode::GONE, case).await;
    }
    before.assert_unchanged(&snapshot(fleet.db()).await, "posts to an expired flow");
    assert_eq!(count(fleet.db(), "auth_codes").await, 0, "no code was issued");
    fleet.stop().await;
}

// === The upstream callback (SPEC-NOTES §5.5 C6, RFC 9207) ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_upstream_state_at_the_callback_is_refused() {
    let demo = demo_upstream().await;
    let fleet = fleet_with_demo(&demo).await;
    let browser = fleet.browser();
    let (_, flow_id, csrf, _) = flow_at_services(&fleet, &browser).await;
    let callback = upstream_callback(&fleet, &browser, &demo, &flow_id, &csrf).await;
    let response = browser.get_raw(&callback).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER, "the first callback connects");
    assert_eq!(count(fleet.db(), "connections").await, 1);

    let before = snapshot(fleet.db()).await;
    let response = browser.get_raw(&callback).await;
    assert_refusal_page(response, StatusCode::CONFLICT, "the same state again").await;
    before.assert_unchanged(&snapshot(fleet.db()).await, "a replayed state");
    assert_eq!(
        demo.stats().code_exchanges(),
        1,
        "the replayed code never reached the upstream"
    );
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_state_from_another_flow_at_the_callback_is_refused() {
    let demo = demo_upstream().await;
    let fleet = fleet_with_demo(&demo).await;
    let alice = fleet.browser();
    let (_, alices_flow, alices_csrf, _) = flow_at_services(&fleet, &alice).await;
    let callback = upstream_callback(&fleet, &alice, &demo, &alices_flow, &alices_csrf).await;

    // Mallory, in a flow of her own, lands on Alice's callback (a link she was
    // sent, or a code she intercepted): her cookie is not the state's flow's.
    let mallory = fleet.browser();
    let (_, mallorys_flow, _, _) = flow_at_services(&fleet, &mallory).await;
    let before = snapshot(fleet.db()).await;
    let response = mallory.get_raw(&callback).await;
    assert_refusal_page(response, StatusCode::FORBIDDEN, "another flow's state").await;
    // Without any flow cookie.
    let response = fleet.browser().get_raw(&callback).await;
    assert_refusal_page(response, StatusCode::FORBIDDEN, "a state without a flow cookie").await;
    before.assert_unchanged(&snapshot(fleet.db()).await, "another flow's state");
    assert_eq!(demo.stats().code_exchanges(), 0, "the code never reached the upstream");
    assert!(
        mallory
            .page(&format!("{}/consent/{mallorys_flow}/services", fleet.url(0)))
            .await
            .html
            .contains("Not connected"),
        "Mallory's flow got nothing"
    );

    // The state was not spent: Alice's own browser completes it.
    let response = alice.get_raw(&callback).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&response), format!("/consent/{alices_flow}/services"));
    assert_eq!(count(fleet.db(), "connections").await, 1);
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mix_up_an_iss_from_another_issuer_at_the_callback_is_refused() {
    let demo = demo_upstream().await;
    let fleet = fleet_with_demo(&demo).await;
    let browser = fleet.browser();
    let (_, flow_id, csrf, _) = flow_at_services(&fleet, &browser).await;
    for (case, iss) in [
        ("another issuer", Some("https://evil.example")),
        ("another port of the same host", Some("http://127.0.0.1:1")),
        // The demo advertises authorization_response_iss_parameter_supported.
        ("no iss from a server that promises it", None),
    ] {
        let callback = upstream_callback(&fleet, &browser, &demo, &flow_id, &csrf).await;
        assert_eq!(
            query_of(&callback)["iss"],
            [demo.base_url()],
            "the honest callback names the demo"
        );
        let response = browser.get_raw(&with_query(&callback, "iss", iss)).await;
        let html = assert_refusal_page(response, StatusCode::BAD_REQUEST, case).await;
        assert!(html.contains("names another issuer"), "{case}: the page says why: {html}");
        assert_eq!(count(fleet.db(), "connections").await, 0, "{case}: no connection");
        assert_eq!(
            demo.stats().code_exchanges(),
            0,
            "{case}: the code was not sent to any token endpoint"
        );
        // Security: the state is spent by the refusal, so the honest response
        // cannot be replayed after a mix-up was seen.
        let response = browser.get_raw(&callback).await;
        assert_refusal_page(response, StatusCode::CONFLICT, case).await;
    }
    fleet.stop().await;
}

// === SSRF through Client ID Metadata Documents (CIMD draft §6) ===

/// `/authorize` with `client_id` = `url`: an error page naming `why`, quickly,
/// and no row anywhere (nothing cached, no flow).
async fn assert_metadata_document_refused(fleet: &TestFleet, url: &str, why: &str, within: Duration) {
    let client = RegisteredClient {
        client_id: url.to_owned(),
        client_secret: None,
        redirect_uri: "http://127.0.0.1:33418/callback".to_owned(),
    };
    let before = snapshot(fleet.db()).await;
    let started = Instant::now();
    let response = fleet
        .browser()
        .authorize_raw(fleet.url(0), &authorize_params(&client, &Pkce::new(), STATE))
        .await;
    let elapsed = started.elapsed();
    let html = assert_refusal_page(response, StatusCode::BAD_REQUEST, url).await;
    assert!(html.contains(why), "{url}: the page says why ({why}): {html}");
    assert!(elapsed < within, "{url}: refused after {elapsed:?}, not within {within:?}");
    before.assert_unchanged(&snapshot(fleet.db()).await, url);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssrf_through_a_metadata_document_on_a_link_local_address_is_refused_before_connecting() {
    // A long outbound timeout: a connection attempt would show as a slow refusal.
    let fleet = TestFleet::builder()
        .control_plane(|config| config.outbound.timeout_ms = 30_000)
        .spawn()
        .await;
    for url in [
        "https://169.254.169.254/latest/meta-data/client.json",
        "https://[fe80::1]/client.json",
    ] {
        assert_metadata_document_refused(&fleet, url, "link-local", Duration::from_secs(2)).await;
    }
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssrf_through_a_metadata_document_on_a_private_address_is_refused_before_connecting() {
    let fleet = TestFleet::builder()
        .control_plane(|config| config.outbound.timeout_ms = 30_000)
        .spawn()
        .await;
    for url in [
        "https://10.0.0.1/client.json",
        "https://192.168.1.1/client.json",
        "https://172.16.0.1/client.json",
        "https://[fd00::1]/client.json",
        "https://100.64.0.1/client.json",
    ] {
        assert_metadata_document_refused(&fleet, url, "private addresses are refused", Duration::from_secs(2)).await;
    }
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssrf_through_a_metadata_document_on_loopback_is_refused_when_loopback_is_not_allowed() {
    // A valid document on 127.0.0.1: only the address is wrong.
    let docs = HttpFixture::start(|base, path| {
        Reply::Json(
            json!({
                "client_id": format!("{base}{path}"),
                "client_name": "Loopback document",
                "redirect_uris": ["http://127.0.0.1:33418/callback"],
                "token_endpoint_auth_method": "none",
            })
            .to_string(),
        )
    })
    .await;
    let fleet = TestFleet::start(1).await;
    let port = docs.base.rsplit(':').next().unwrap().to_owned();
    for (url, why) in [
        (docs.url("/client.json"), "must be https"),
        (
            format!("https://127.0.0.1:{port}/client.json"),
            "loopback addresses are refused",
        ),
        (
            format!("https://localhost:{port}/client.json"),
            "loopback addresses are refused",
        ),
        (format!("https://[::1]:{port}/client.json"), "loopback addresses are refused"),
    ] {
        assert_metadata_document_refused(&fleet, &url, why, Duration::from_secs(2)).await;
    }
    assert!(
        docs.requests().is_empty(),
        "nothing reached the server: {:?}",
        docs.requests()
    );
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssrf_through_a_slow_metadata_document_is_cut_at_the_outbound_timeout() {
    let docs = HttpFixture::start(|_, _| Reply::Hang).await;
    let fleet = TestFleet::builder()
        .control_plane(|config| {
            config.outbound.allow_loopback = true;
            config.outbound.timeout_ms = 500;
        })
        .spawn()
        .await;
    assert_metadata_document_refused(
        &fleet,
        &docs.url("/slow.json"),
        "client metadata document",
        Duration::from_secs(3),
    )
    .await;
    assert_eq!(docs.requests(), ["/slow.json"], "fetched once, then given up");
    fleet.stop().await;
}

// === SSRF through upstream discovery (RFC 9728, RFC 8414) ===

/// How a discovery refusal is set up and what it must show.
struct DiscoveryCase {
    name: &'static str,
    /// Whether the fleet may reach loopback (the fixture MCP server is there).
    allow_loopback: bool,
    outbound_timeout_ms: u64,
    /// The refusal comes within this long.
    within: Duration,
    /// What the refusal page says.
    why: &'static str,
}

/// Connect to an oauth service whose protected-resource metadata answers with
/// `reply(base)`: Connect answers a 502 page saying why, with a way back; nothing
/// is stored, nothing beyond that document is fetched, and the flow goes on.
async fn assert_discovery_refused_with(case: DiscoveryCase, reply: impl Fn(&str) -> Reply + Send + Sync + 'static) {
    let mcp = HttpFixture::start(move |base, path| {
        if path.starts_with("/.well-known/oauth-protected-resource") {
            reply(base)
        } else {
            Reply::NotFound
        }
    })
    .await;
    let url = mcp.url("/mcp");
    let (allow_loopback, timeout_ms) = (case.allow_loopback, case.outbound_timeout_ms);
    let fleet = TestFleet::builder()
        .control_plane(move |config| {
            config.outbound.allow_loopback = allow_loopback;
            config.outbound.timeout_ms = timeout_ms;
            config.outbound.max_body_bytes = 16 * 1024;
            config.mcp_servers = vec![McpServer {
                name: "files".into(),
                display_name: "Files".into(),
                url,
                auth_mode: AuthMode::Oauth,
                ..Default::default()
            }];
        })
        .spawn()
        .await;
    let browser = fleet.browser();
    let (_, flow_id, csrf, _) = flow_at_services(&fleet, &browser).await;
    let before = snapshot(fleet.db()).await;
    let started = Instant::now();
    let response = browser
        .post_raw(
            &format!("{}/consent/{flow_id}/connect", fleet.url(0)),
            &[("csrf", csrf.as_str()), ("service", "files")],
        )
        .await;
    let html = assert_refusal_page(response, StatusCode::BAD_GATEWAY, case.name).await;
    assert!(
        started.elapsed() < case.within,
        "{}: refused within {:?}",
        case.name,
        case.within
    );
    assert!(
        html.contains(case.why),
        "{}: the page says why ({}): {html}",
        case.name,
        case.why
    );
    assert!(
        html.contains(&format!(r#"href="/consent/{flow_id}""#)),
        "{}: a way back to the flow",
        case.name
    );
    before.assert_unchanged(&snapshot(fleet.db()).await, case.name);
    assert!(
        mcp.requests()
            .iter()
            .all(|p| p.starts_with("/.well-known/oauth-protected-resource")),
        "{}: only the protected-resource metadata was fetched: {:?}",
        case.name,
        mcp.requests()
    );
    if !case.allow_loopback {
        assert!(mcp.requests().is_empty(), "{}: nothing was sent to loopback", case.name);
    }
    // The flow goes on without the service.
    assert!(
        browser
            .page(&format!("{}/consent/{flow_id}/services", fleet.url(0)))
            .await
            .html
            .contains("Not connected")
    );
    fleet.stop().await;
}

/// Protected-resource metadata naming `authorization_server`: refused before any
/// connection to it (the outbound timeout is long, the refusal quick).
async fn assert_discovery_refused(authorization_server: &'static str, why: &'static str) {
    let case = DiscoveryCase {
        name: authorization_server,
        allow_loopback: true,
        outbound_timeout_ms: 30_000,
        within: Duration::from_secs(2),
        why,
    };
    assert_discovery_refused_with(case, move |base| {
        Reply::Json(json!({ "resource": format!("{base}/mcp"), "authorization_servers": [authorization_server] }).to_string())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssrf_through_upstream_discovery_to_a_private_address_is_refused() {
    assert_discovery_refused("https://10.0.0.7", "private addresses are refused").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssrf_through_upstream_discovery_to_a_link_local_address_is_refused() {
    assert_discovery_refused("https://169.254.169.254/latest", "link-local").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssrf_through_upstream_discovery_on_loopback_is_refused_when_loopback_is_not_allowed() {
    let case = DiscoveryCase {
        name: "loopback MCP server",
        allow_loopback: false,
        outbound_timeout_ms: 500,
        within: Duration::from_secs(2),
        why: "loopback",
    };
    assert_discovery_refused_with(case, |_| {
        Reply::Json(json!({ "authorization_servers": ["https://as.example.com"] }).to_string())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssrf_through_an_oversized_discovery_document_is_refused() {
    let case = DiscoveryCase {
        name: "oversized metadata",
        allow_loopback: true,
        outbound_timeout_ms: 500,
        within: Duration::from_secs(10),
        why: "larger than",
    };
    assert_discovery_refused_with(case, |_| {
        Reply::Bytes(format!("{{\"pad\":\"{}\"}}", "x".repeat(64 * 1024)).into_bytes())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssrf_through_a_discovery_document_that_never_answers_is_cut_at_the_timeout() {
    let case = DiscoveryCase {
        name: "hanging metadata",
        allow_loopback: true,
        outbound_timeout_ms: 500,
        within: Duration::from_secs(10),
        why: "Files",
    };
    assert_discovery_refused_with(case, |_| Reply::Hang).await;
}

// === Limits and token passthrough at /mcp, CSRF on connect links ===

/// A public client's tokens for a Skip identity on `fleet`, with "notes"
/// connected at the demo as `account` when `connect` is set.
async fn tokens_of_a_skip_identity(fleet: &TestFleet, demo: &DemoUpstream, connect: bool, account: &str) -> String {
    let browser = fleet.browser();
    let (client, flow_id, csrf, pkce) = flow_at_services(fleet, &browser).await;
    if connect {
        connect_demo_service(fleet, &browser, 0, (&flow_id, &csrf), "notes", demo.base_url(), account).await;
    }
    let code = approve(fleet, &browser, 0, &client, &flow_id, &csrf, &pkce).await;
    fleet.exchange_code(0, &client, &code).await.access_token
}

fn tools_call(id: u64, name: &str, arguments: serde_json::Value) -> String {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": name, "arguments": arguments}}).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_mcp_body_with_a_valid_token_gets_413_and_reaches_no_upstream() {
    let demo = demo_upstream().await;
    let url = demo.mcp_url();
    let fleet = TestFleet::builder()
        .control_plane(move |config| {
            config.outbound.allow_loopback = true;
            config.mcp_servers = vec![McpServer {
                name: "notes".into(),
                display_name: "Demo Notes".into(),
                url,
                auth_mode: AuthMode::Oauth,
                ..Default::default()
            }];
        })
        .data_plane(|config| config.max_body_bytes = 4096)
        .spawn()
        .await;
    let token = tokens_of_a_skip_identity(&fleet, &demo, true, "alice").await;
    let mcp = McpClient::new(&fleet, &token);
    // The token is good: a small call reaches the upstream.
    let small = mcp.post_raw(&tools_call(1, "notes__echo", json!({"text": "hi"})), &[]).await;
    assert_eq!(small.status(), StatusCode::OK);
    let reached = demo.stats().mcp_requests();
    assert!(reached > 0);

    let big = tools_call(2, "notes__echo", json!({"text": "x".repeat(8192)}));
    assert!(big.len() > 4096);
    let refused = mcp.post_raw(&big, &[]).await;
    assert_eq!(refused.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(demo.stats().mcp_requests(), reached, "nothing reached the upstream");
    assert!(
        demo.stats().recorded_requests().iter().all(|r| !r.body.contains("xxxxxxxx")),
        "no part of the oversized body was forwarded"
    );
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_tokens_never_reach_the_mcp_client() {
    let demo = demo_upstream().await;
    let fleet = fleet_with_demo(&demo).await;
    let token = tokens_of_a_skip_identity(&fleet, &demo, true, "alice").await;
    let mcp = McpClient::new(&fleet, &token);
    let mut seen = Vec::new();
    let mut send = async |body: String| {
        let response = mcp.post_raw(&body, &[]).await;
        let mut text = format!("{}\n", response.status());
        for (name, value) in response.headers() {
            text.push_str(&format!("{name}: {}\n", String::from_utf8_lossy(value.as_bytes())));
        }
        text.push_str(&response.text().await.unwrap());
        seen.push(text);
    };
    let initialize = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}});
    send(initialize.to_string()).await;
    send(json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}).to_string()).await;
    send(tools_call(3, "notes__whoami", json!({}))).await;
    send(tools_call(4, "notes__echo", json!({"text": "hi"}))).await;
    send(tools_call(5, "notes__nope", json!({}))).await;
    // An upstream 401: the gateway refreshes, retries, and answers.
    demo.expire_access_tokens();
    send(tools_call(6, "notes__whoami", json!({}))).await;
    send(json!({"jsonrpc": "2.0", "id": 7, "method": "resources/list"}).to_string()).await;
    assert!(seen[2].contains("you are alice"), "{}", seen[2]);
    assert!(seen[5].contains("you are alice"), "{}", seen[5]);

    // Every upstream access token the demo was sent, the refreshed one included.
    let upstream_tokens: std::collections::BTreeSet<String> = demo
        .stats()
        .recorded_requests()
        .iter()
        .filter_map(|r| r.header("authorization")?.strip_prefix("Bearer ").map(str::to_owned))
        .collect();
    assert!(
        upstream_tokens.len() >= 2,
        "the first and the refreshed token: {upstream_tokens:?}"
    );
    assert_eq!(demo.stats().refreshes(), 1);
    for upstream_token in &upstream_tokens {
        assert_ne!(upstream_token, &token);
        for (i, reply) in seen.iter().enumerate() {
            assert!(
                !reply.contains(upstream_token.as_str()),
                "reply {i} carries an upstream token: {reply}"
            );
        }
    }
    fleet.stop().await;
}

/// The link in a tool result telling the caller to connect.
fn connect_link_in(reply: &serde_json::Value) -> String {
    assert_eq!(reply["result"]["isError"], true, "{reply}");
    let text = reply["result"]["content"][0]["text"].as_str().unwrap_or_default();
    let start = text.find("http").unwrap_or_else(|| panic!("no link in {text}"));
    text[start..].split_whitespace().next().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csrf_on_a_connect_link_post_is_refused_with_403_and_changes_nothing() {
    let demo = demo_upstream().await;
    let fleet = fleet_with_demo(&demo).await;
    let token = tokens_of_a_skip_identity(&fleet, &demo, false, "").await;
    let mcp = McpClient::new(&fleet, &token);
    let link = connect_link_in(&mcp.call_tool("notes__whoami", json!({})).await);
    let link = link.replacen(&fleet.issuer, fleet.url(0), 1);
    assert!(link.contains("/connect/gh_cl_"), "{link}");

    // The browser that opened the link has its cookie; the page's token is the right one.
    let browser = fleet.browser();
    let page = browser.page(&link).await;
    let csrf = page.csrf();
    let mut wrong = csrf.clone().into_bytes();
    wrong[5] = if wrong[5] == b'A' { b'B' } else { b'A' };
    let wrong = String::from_utf8(wrong).unwrap();

    let before = snapshot(fleet.db()).await;
    let upstream_calls = (demo.stats().registrations(), demo.stats().code_exchanges());
    for (case, token) in [("missing", None), ("empty", Some("")), ("wrong", Some(wrong.as_str()))] {
        let form: Vec<(&str, &str)> = token.map(|t| ("csrf", t)).into_iter().collect();
        let response = browser.post_raw(&link, &form).await;
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "a {case} CSRF token");
        assert!(
            response.headers().get(header::LOCATION).is_none(),
            "a {case} CSRF token: no redirect onward"
        );
        let html = response.text().await.unwrap();
        assert!(
            !html.contains(demo.base_url()),
            "a {case} CSRF token: no link to the upstream"
        );
    }
    before.assert_unchanged(&snapshot(fleet.db()).await, "forged connect-link posts");
    assert_eq!(
        (demo.stats().registrations(), demo.stats().code_exchanges()),
        upstream_calls,
        "no forged post reached the upstream"
    );
    // Still not connected, and the link is not spent: its own post goes on.
    connect_link_in(&mcp.call_tool("notes__whoami", json!({})).await);
    let response = browser.post_raw(&link, &[("csrf", csrf.as_str())]).await;
    let upstream_url = follow_onward(&browser, response).await;
    assert!(upstream_url.starts_with(demo.base_url()), "{upstream_url}");
    let callback = allow_at_demo(&browser, demo.base_url(), &upstream_url, "carol").await;
    let done = browser.page(&callback.replacen(&fleet.issuer, fleet.url(0), 1)).await;
    assert!(done.html.contains("Connected"), "{}", done.html);
    assert_eq!(mcp.call_text("notes__whoami", json!({})).await, "you are carol");
    fleet.stop().await;
}

// === Tool names: one exposed name per upstream tool ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tool_named_like_another_tools_shortened_name_gets_its_own_name_and_route() {
    // `files_read-601e4eb6` is what `files.read` shortens to (8 hex of its
    // SHA-256); the last two shorten alike, hash included.
    let upstream_names = [
        "files.read",
        "files_read-601e4eb6",
        "/./...././.../..........",
        "//....//..//.././.......",
    ];
    let fixture = McpUpstream::start(Script {
        tools: upstream_names.iter().map(|n| (*n).to_owned()).collect(),
        ..Default::default()
    })
    .await;
    let url = fixture.url.clone();
    let fleet = TestFleet::builder()
        .control_plane(move |config| {
            config.outbound.allow_loopback = true;
            config.mcp_servers = vec![McpServer {
                name: "files".into(),
                display_name: "Files".into(),
                url,
                auth_mode: AuthMode::None,
                ..Default::default()
            }];
        })
        .spawn()
        .await;
    let browser = fleet.browser();
    let (client, flow_id, csrf, pkce) = flow_at_services(&fleet, &browser).await;
    let code = approve(&fleet, &browser, 0, &client, &flow_id, &csrf, &pkce).await;
    let token = fleet.exchange_code(0, &client, &code).await.access_token;
    let mcp = McpClient::new(&fleet, &token);

    let names = mcp.tool_names().await;
    assert_eq!(names.len(), upstream_names.len(), "{names:?}");
    let distinct: std::collections::BTreeSet<&String> = names.iter().collect();
    assert_eq!(distinct.len(), names.len(), "two tools share a name: {names:?}");
    assert_eq!(
        names[0], "files__files_read-601e4eb6",
        "the shortened name stays the one it always was"
    );
    for name in &names {
        assert!(
            name.len() <= 64 && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'),
            "{name}"
        );
    }
    for (name, upstream) in names.iter().zip(upstream_names) {
        let reply = mcp.call_tool(name, json!({})).await;
        assert_eq!(reply["result"]["structuredContent"]["tool"], upstream, "{name}: {reply}");
    }
    fleet.stop().await;
}
