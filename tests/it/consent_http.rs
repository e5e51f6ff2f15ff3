//! The consent flow over HTTP, end to end: a real control plane, real data
//! planes, a browser with a cookie jar and an MCP client, each step asserted
//! (docs/consent-flow.md).

use gatehouse::pb::CreateVirtualKeyRequest;
use gatehouse_control_plane::mcp_servers::{AuthMode, McpServer};
use reqwest::header::{self, HeaderMap};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::fleet::{
    ClientAuth, Pkce, RegisteredClient, STATE, TestFleet, approve, authorize_params, basic_authorization, continuation_link,
    demo_upstream, fleet_with_sign_in, follow_onward, location, query_of, skip, start_flow,
};

/// The page headers of docs/consent-flow.md, with `form_targets` after `'self'`.
fn assert_page_headers(headers: &HeaderMap, form_targets: &str) {
    let form_action = if form_targets.is_empty() {
        "'self'".to_owned()
    } else {
        format!("'self' {form_targets}")
    };
    assert_eq!(
        headers[header::CONTENT_SECURITY_POLICY],
        format!("default-src 'none'; style-src 'self'; img-src 'self'; form-action {form_action}; frame-ancestors 'none'; base-uri 'none'").as_str()
    );
    assert_eq!(headers[header::X_FRAME_OPTIONS], "DENY");
    assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
    assert_eq!(headers[header::REFERRER_POLICY], "no-referrer");
    assert_eq!(headers[header::CACHE_CONTROL], "no-store");
}

/// An error page: the status, the page headers, and never a redirect.
async fn assert_error_page(response: reqwest::Response, status: StatusCode, case: &str) -> String {
    assert_eq!(response.status(), status, "{case}");
    assert!(
        response.headers().get(header::LOCATION).is_none(),
        "{case}: an error page never redirects"
    );
    assert_page_headers(response.headers(), "");
    assert!(
        response.headers()[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/html"),
        "{case}: an HTML page"
    );
    response.text().await.unwrap()
}

async fn json_body(response: reqwest::Response) -> Value {
    response.json().await.expect("JSON body")
}

/// Registration, authorize, Skip, Approve, /token: tokens for a fresh public client.
async fn tokens_for_new_client(fleet: &TestFleet) -> (RegisteredClient, crate::support::fleet::Tokens) {
    let client = fleet.register_public().await;
    let browser = fleet.browser();
    let pkce = Pkce::new();
    let (flow_id, identity) = start_flow(fleet, &browser, 0, &client, &pkce).await;
    let services = skip(fleet, &browser, 0, &flow_id, &identity.csrf()).await;
    let code = approve(fleet, &browser, 0, &client, &flow_id, &services.csrf(), &pkce).await;
    let tokens = fleet.exchange_code(0, &client, &code).await;
    (client, tokens)
}

fn challenge(fleet: &TestFleet, error: Option<&str>) -> String {
    let rm = format!("{}/.well-known/oauth-protected-resource/mcp", fleet.issuer);
    match error {
        None => format!(r#"Bearer resource_metadata="{rm}", scope="mcp""#),
        Some(error) => format!(r#"Bearer error="{error}", resource_metadata="{rm}", scope="mcp""#),
    }
}

// === Discovery and registration ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_documents_are_identical_at_both_paths_and_the_issuer_is_byte_identical() {
    let fleet = TestFleet::start(2).await;
    let http = fleet.http();
    let get = |url: String| {
        let http = http.clone();
        async move {
            let response = http
                .get(&url)
                .header(header::ORIGIN, "https://inspector.example")
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::OK, "{url}");
            assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json", "{url}");
            assert_eq!(response.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*", "{url}: CORS");
            response.text().await.unwrap()
        }
    };
    for dp in 0..2 {
        let base = fleet.url(dp);
        let prm_root = get(format!("{base}/.well-known/oauth-protected-resource")).await;
        let prm_mcp = get(format!("{base}/.well-known/oauth-protected-resource/mcp")).await;
        assert_eq!(prm_root, prm_mcp, "the protected-resource document is the same at both paths");
        let as_meta = get(format!("{base}/.well-known/oauth-authorization-server")).await;
        let oidc = get(format!("{base}/.well-known/openid-configuration")).await;
        assert_eq!(as_meta, oidc, "the authorization-server document is the same at both paths");

        let prm: Value = serde_json::from_str(&prm_mcp).unwrap();
        let meta: Value = serde_json::from_str(&as_meta).unwrap();
        // Every data plane announces the same issuer, byte for byte.
        assert_eq!(meta["issuer"].as_str(), Some(fleet.issuer.as_str()));
        assert_eq!(prm["authorization_servers"], json!([fleet.issuer]));
        assert_eq!(prm["resource"].as_str().unwrap(), format!("{}/mcp", fleet.issuer));
        assert_eq!(prm["scopes_supported"], json!(["mcp"]));
        assert_eq!(meta["code_challenge_methods_supported"], json!(["S256"]));
        assert_eq!(meta["grant_types_supported"], json!(["authorization_code", "refresh_token"]));
        assert_eq!(meta["response_types_supported"], json!(["code"]));
        assert_eq!(
            meta["token_endpoint_auth_methods_supported"],
            json!(["none", "client_secret_post", "client_secret_basic"])
        );
        assert_eq!(
            meta["authorization_endpoint"].as_str().unwrap(),
            format!("{}/authorize", fleet.issuer)
        );
        assert_eq!(meta["token_endpoint"].as_str().unwrap(), format!("{}/token", fleet.issuer));
        assert_eq!(
            meta["registration_endpoint"].as_str().unwrap(),
            format!("{}/register", fleet.issuer)
        );
        assert_eq!(
            meta["revocation_endpoint"].as_str().unwrap(),
            format!("{}/revoke", fleet.issuer)
        );
        assert_eq!(meta["client_id_metadata_document_supported"], true);
        assert_eq!(meta["authorization_response_iss_parameter_supported"], true);
    }
    // A CORS preflight for a JSON registration is answered.
    let preflight = http
        .request(Method::OPTIONS, format!("{}/register", fleet.issuer))
        .header(header::ORIGIN, "https://inspector.example")
        .header(header::ACCESS_CONTROL_REQUEST_METHOD, "POST")
        .header(header::ACCESS_CONTROL_REQUEST_HEADERS, "content-type")
        .send()
        .await
        .unwrap();
    assert!(preflight.status().is_success());
    assert_eq!(preflight.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_accepts_good_metadata_and_refuses_bad_metadata_with_json_errors() {
    let fleet = TestFleet::start(1).await;

    // A public client: no secret.
    let response = fleet
        .register_raw(&json!({
            "client_name": "Inspector",
            "redirect_uris": ["http://localhost:6274/oauth/callback"],
            "token_endpoint_auth_method": "none",
            "unknown_member": {"ignored": true},
        }))
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(response.headers()[header::CACHE_CONTROL], "no-store");
    assert_eq!(response.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
    let body = json_body(response).await;
    assert!(body["client_id"].as_str().unwrap().starts_with("cli_"));
    assert!(body["client_id_issued_at"].as_i64().unwrap() > 0);
    assert!(body.get("client_secret").is_none());
    assert_eq!(body["token_endpoint_auth_method"], "none");
    assert_eq!(body["redirect_uris"], json!(["http://localhost:6274/oauth/callback"]));
    assert_eq!(body["client_name"], "Inspector");

    // RFC 7591 default method: a confidential client with a secret that never expires.
    let response = fleet
        .register_raw(&json!({"redirect_uris": ["https://claude.ai/api/mcp/auth_callback"]}))
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let body = json_body(response).await;
    assert_eq!(body["token_endpoint_auth_method"], "client_secret_basic");
    assert!(!body["client_secret"].as_str().unwrap().is_empty());
    assert_eq!(body["client_secret_expires_at"], 0);

    // Refusals: 400 JSON, never HTML or a redirect.
    let refusals: &[(&str, &[u8], &str)] = &[
        ("no redirect URI", br#"{"client_name":"x"}"#, "invalid_redirect_uri"),
        (
            "javascript: URI",
            br#"{"redirect_uris":["javascript:alert(1)"]}"#,
            "invalid_redirect_uri",
        ),
        (
            "plain http off loopback",
            br#"{"redirect_uris":["http://evil.example/cb"]}"#,
            "invalid_redirect_uri",
        ),
        (
            "fragment",
            br#"{"redirect_uris":["https://app.example/cb#x"]}"#,
            "invalid_redirect_uri",
        ),
        (
            "implicit grant",
            br#"{"redirect_uris":["https://app.example/cb"],"grant_types":["implicit"]}"#,
            "invalid_client_metadata",
        ),
        (
            "unknown auth method",
            br#"{"redirect_uris":["https://app.example/cb"],"token_endpoint_auth_method":"private_key_jwt"}"#,
            "invalid_client_metadata",
        ),
        ("malformed JSON", b"{not json", "invalid_client_metadata"),
        ("a JSON array", b"[]", "invalid_client_metadata"),
        (
            "a string where a list belongs",
            br#"{"redirect_uris":"https://app.example/cb"}"#,
            "invalid_client_metadata",
        ),
    ];
    for (case, body, error) in refusals {
        let response = fleet
            .http()
            .post(format!("{}/register", fleet.issuer))
            .header(header::CONTENT_TYPE, "application/json")
            .body(body.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{case}");
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json", "{case}");
        let body = json_body(response).await;
        assert_eq!(body["error"], *error, "{case}: {body}");
        assert!(body["error_description"].is_string(), "{case}");
    }
    fleet.stop().await;
}

// === /authorize ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorize_with_an_unknown_client_or_an_unregistered_redirect_uri_shows_an_error_page_and_never_redirects() {
    let fleet = TestFleet::start(1).await;
    let client = fleet.register_public().await;
    let pkce = Pkce::new();
    let browser = fleet.browser();
    let with = |key: &str, value: &str| {
        let mut params = authorize_params(&client, &pkce, STATE);
        for param in params.iter_mut().filter(|(k, _)| k == key) {
            param.1 = value.to_owned();
        }
        params
    };
    let mut duplicated = authorize_params(&client, &pkce, STATE);
    duplicated.push(("redirect_uri".into(), "https://evil.example/cb".into()));
    let cases = [
        ("unknown client", with("client_id", "cli_doesnotexist")),
        ("unregistered redirect URI", with("redirect_uri", "https://evil.example/cb")),
        (
            "redirect URI with another path",
            with("redirect_uri", "http://127.0.0.1:33418/other"),
        ),
        ("duplicated parameter", duplicated),
        ("no client_id", with("client_id", "")),
    ];
    for (case, params) in cases {
        let response = browser.authorize_raw(fleet.url(0), &params).await;
        assert!(response.headers().get(header::SET_COOKIE).is_none(), "{case}: no flow");
        assert!(
            response.headers().get(header::ACCESS_CONTROL_ALLOW_ORIGIN).is_none(),
            "{case}: no CORS"
        );
        let html = assert_error_page(response, StatusCode::BAD_REQUEST, case).await;
        assert!(
            !html.contains("evil.example"),
            "{case}: the page does not link the attacker's URI"
        );
    }
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorize_with_plain_pkce_redirects_back_with_invalid_request_state_and_iss() {
    let fleet = TestFleet::start(1).await;
    let client = fleet.register_public().await;
    let pkce = Pkce::new();
    let mut params = authorize_params(&client, &pkce, STATE);
    for param in params.iter_mut().filter(|(k, _)| k == "code_challenge_method") {
        param.1 = "plain".into();
    }
    let response = fleet.browser().authorize_raw(fleet.url(0), &params).await;
    assert_eq!(response.status(), StatusCode::FOUND);
    assert!(response.headers().get(header::SET_COOKIE).is_none(), "no flow was opened");
    let to = location(&response);
    assert!(to.starts_with(&format!("{}?", client.redirect_uri)), "{to}");
    let query = query_of(&to);
    assert_eq!(query["error"], vec!["invalid_request".to_owned()]);
    assert_eq!(query["state"], vec![STATE.to_owned()]);
    assert_eq!(query["iss"], vec![fleet.issuer.clone()]);
    fleet.stop().await;
}

// === The whole flow ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_walks_the_whole_flow_and_the_client_uses_refreshes_and_revokes_its_tokens() {
    let fleet = TestFleet::start(1).await;
    let client = fleet.register_public().await;
    let browser = fleet.browser();
    let pkce = Pkce::new();
    let base = fleet.url(0).to_owned();

    // Step 1: /authorize sets the flow cookie and sends the browser to the consent page.
    let flow_id = browser.authorize(&base, &authorize_params(&client, &pkce, STATE)).await;
    let cookie = browser.cookie("gatehouse-flow").unwrap();
    assert!(cookie.starts_with(&format!("{flow_id}~")));
    let response = browser.get_raw(&format!("{base}/consent/{flow_id}")).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&response), format!("/consent/{flow_id}/identity"));

    // Step 2: the identity page says who asks and where the answer goes.
    let identity = browser.page(&format!("{base}/consent/{flow_id}/identity")).await;
    assert_page_headers(&identity.headers, "http://127.0.0.1:33418");
    assert!(identity.html.contains("Test Client"));
    assert!(identity.html.contains("127.0.0.1"));
    assert!(identity.html.contains("http://127.0.0.1:33418/callback"));
    assert!(identity.html.contains("any program on this computer could be this client"));
    assert!(identity.html.contains(r#"type="password""#));
    assert!(
        identity
            .html
            .contains(r#"<link rel="stylesheet" href="/static/gatehouse.css">"#)
    );
    assert!(!identity.html.contains("<script"), "no JavaScript");
    assert!(
        !identity.html.contains(&cookie["flw_".len().min(cookie.len())..]),
        "the browser secret is not on the page"
    );
    let csrf = identity.csrf();

    // The stylesheet is served and cacheable.
    let css = browser.get_raw(&format!("{base}/static/gatehouse.css")).await;
    assert_eq!(css.status(), StatusCode::OK);
    assert!(css.headers()[header::CONTENT_TYPE].to_str().unwrap().starts_with("text/css"));
    assert_eq!(css.headers()[header::CACHE_CONTROL], "public, max-age=3600");

    // Step 3: Skip, then the services page.
    let services = skip(&fleet, &browser, 0, &flow_id, &csrf).await;
    assert_page_headers(&services.headers, "http://127.0.0.1:33418");
    assert!(services.html.contains("only reachable by this application"));
    assert!(
        services.html.contains(&format!(r#"href="/consent/{flow_id}/identity""#)),
        "a way to change identity"
    );
    assert!(services.html.contains("Approve") && services.html.contains("Deny"));

    // Step 4: Approve sends the browser back with code, state and iss.
    let code = approve(&fleet, &browser, 0, &client, &flow_id, &services.csrf(), &pkce).await;

    // Step 5: the client exchanges the code.
    let tokens = fleet.exchange_code(0, &client, &code).await;
    assert_eq!(tokens.headers[header::CACHE_CONTROL], "no-store");
    assert_eq!(tokens.headers[header::PRAGMA], "no-cache");
    assert_eq!(tokens.headers[header::CONTENT_TYPE], "application/json");
    assert!(tokens.expires_in > 0);
    assert_eq!(tokens.scope.as_deref(), Some("mcp"));
    let first_refresh = tokens.refresh_token.clone().expect("a refresh token");

    // Step 6: /mcp lets the bearer past authentication, and challenges without it.
    for method in [Method::POST, Method::GET, Method::DELETE] {
        let response = fleet.mcp_raw(0, method.clone(), None).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{method}");
        assert_eq!(
            response.headers()[header::WWW_AUTHENTICATE],
            challenge(&fleet, None).as_str(),
            "{method}"
        );
    }
    let response = fleet.mcp_raw(0, Method::POST, Some(&tokens.access_token)).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        json_body(response).await,
        json!({"jsonrpc":"2.0","id":1,"result":{"tools":[]}})
    );
    let response = fleet.mcp_raw(0, Method::GET, Some(&tokens.access_token)).await;
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    let response = fleet.mcp_raw(0, Method::POST, Some("gh_at_not-a-real-token")).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        response.headers()[header::WWW_AUTHENTICATE],
        challenge(&fleet, Some("invalid_token")).as_str()
    );

    // Step 7: refresh rotates.
    let rotated = fleet.refresh(0, &client, &first_refresh).await;
    let second_refresh = rotated.refresh_token.clone().expect("a rotated refresh token");
    assert_ne!(second_refresh, first_refresh);
    assert_ne!(rotated.access_token, tokens.access_token);
    assert_eq!(rotated.headers[header::CACHE_CONTROL], "no-store");
    let response = fleet.mcp_raw(0, Method::POST, Some(&rotated.access_token)).await;
    assert_eq!(response.status(), StatusCode::OK);

    // Step 8: /revoke the current refresh token; it stops working, and revoking again is still 200.
    let revoke = fleet
        .revoke_raw(0, &[("token", second_refresh.as_str())], &client.auth())
        .await;
    assert_eq!(revoke.status(), StatusCode::OK);
    assert!(revoke.text().await.unwrap().is_empty());
    let again = fleet
        .revoke_raw(0, &[("token", second_refresh.as_str())], &client.auth())
        .await;
    assert_eq!(again.status(), StatusCode::OK, "RFC 7009: an invalid token is a success too");
    let refused = fleet
        .token_raw(
            0,
            &[("grant_type", "refresh_token"), ("refresh_token", second_refresh.as_str())],
            &client.auth(),
        )
        .await;
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
    assert_eq!(json_body(refused).await["error"], "invalid_grant");

    // The first refresh token was rotated away: invalid_grant.
    let old = fleet
        .token_raw(
            0,
            &[("grant_type", "refresh_token"), ("refresh_token", first_refresh.as_str())],
            &client.auth(),
        )
        .await;
    assert_eq!(old.status(), StatusCode::BAD_REQUEST);
    assert_eq!(json_body(old).await["error"], "invalid_grant");
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_code_is_invalid_grant_and_revokes_what_it_issued() {
    let fleet = TestFleet::start(1).await;
    let client = fleet.register_public().await;
    let browser = fleet.browser();
    let pkce = Pkce::new();
    let (flow_id, identity) = start_flow(&fleet, &browser, 0, &client, &pkce).await;
    let services = skip(&fleet, &browser, 0, &flow_id, &identity.csrf()).await;
    let code = approve(&fleet, &browser, 0, &client, &flow_id, &services.csrf(), &pkce).await;
    let tokens = fleet.exchange_code(0, &client, &code).await;
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code.code.as_str()),
        ("code_verifier", code.verifier.as_str()),
        ("redirect_uri", client.redirect_uri.as_str()),
    ];
    let replay = fleet.token_raw(0, &form, &client.auth()).await;
    assert_eq!(replay.status(), StatusCode::BAD_REQUEST);
    assert_eq!(json_body(replay).await["error"], "invalid_grant");
    // OAuth 2.1 "Reuse of Authorization Codes": what the code issued stops working.
    let response = fleet.mcp_raw(0, Method::POST, Some(&tokens.access_token)).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let refresh = fleet
        .token_raw(
            0,
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", tokens.refresh_token.as_deref().unwrap()),
            ],
            &client.auth(),
        )
        .await;
    assert_eq!(json_body(refresh).await["error"], "invalid_grant");
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reused_refresh_token_is_invalid_grant_and_ends_the_grant() {
    let fleet = TestFleet::start(1).await;
    let (client, tokens) = tokens_for_new_client(&fleet).await;
    let first_refresh = tokens.refresh_token.clone().unwrap();
    let rotated = fleet.refresh(0, &client, &first_refresh).await;
    let reuse = fleet
        .token_raw(
            0,
            &[("grant_type", "refresh_token"), ("refresh_token", first_refresh.as_str())],
            &client.auth(),
        )
        .await;
    assert_eq!(reuse.status(), StatusCode::BAD_REQUEST);
    assert_eq!(json_body(reuse).await["error"], "invalid_grant");
    // Reuse revoked the family: the rotated tokens stop too.
    let response = fleet.mcp_raw(0, Method::POST, Some(&rotated.access_token)).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        response.headers()[header::WWW_AUTHENTICATE],
        challenge(&fleet, Some("invalid_token")).as_str()
    );
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flow_started_on_one_data_plane_finishes_on_another() {
    let fleet = TestFleet::start(3).await;
    let client = fleet.register_public().await;
    let browser = fleet.browser();
    let pkce = Pkce::new();
    // Each step on the next data plane.
    let flow_id = browser
        .authorize(fleet.url(0), &authorize_params(&client, &pkce, STATE))
        .await;
    let identity = browser.page(&format!("{}/consent/{flow_id}/identity", fleet.url(1))).await;
    let services = skip(&fleet, &browser, 2, &flow_id, &identity.csrf()).await;
    let services_again = browser.page(&format!("{}/consent/{flow_id}/services", fleet.url(0))).await;
    assert_eq!(
        services_again.csrf(),
        services.csrf(),
        "any data plane computes the same CSRF token"
    );
    let code = approve(&fleet, &browser, 1, &client, &flow_id, &services.csrf(), &pkce).await;
    let tokens = fleet.exchange_code(2, &client, &code).await;
    for dp in 0..3 {
        let response = fleet.mcp_raw(dp, Method::POST, Some(&tokens.access_token)).await;
        assert_eq!(response.status(), StatusCode::OK, "data plane {dp}");
    }
    let rotated = fleet.refresh(1, &client, tokens.refresh_token.as_deref().unwrap()).await;
    assert!(rotated.refresh_token.is_some());
    fleet.stop().await;
}

// === Browser binding and CSRF ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consent_posts_without_the_right_csrf_token_are_refused_and_change_nothing() {
    let fleet = TestFleet::start(1).await;
    let client = fleet.register_public().await;
    let browser = fleet.browser();
    let base = fleet.url(0).to_owned();
    // An earlier flow in the same browser: its token belongs to another flow.
    let (_, first) = start_flow(&fleet, &browser, 0, &client, &Pkce::new()).await;
    let other_flows_token = first.csrf();
    let (flow_id, identity) = start_flow(&fleet, &browser, 0, &client, &Pkce::new()).await;
    let right = identity.csrf();
    assert_ne!(right, other_flows_token);

    let mut wrong = right.clone().into_bytes();
    wrong[0] = if wrong[0] == b'A' { b'B' } else { b'A' };
    let wrong = String::from_utf8(wrong).unwrap();
    let url = format!("{base}/consent/{flow_id}/identity");
    for (case, form) in [
        ("missing", vec![("choice", "skip")]),
        ("empty", vec![("csrf", ""), ("choice", "skip")]),
        ("wrong", vec![("csrf", wrong.as_str()), ("choice", "skip")]),
        (
            "another flow's",
            vec![("csrf", other_flows_token.as_str()), ("choice", "skip")],
        ),
    ] {
        let response = browser.post_raw(&url, &form).await;
        assert_error_page(response, StatusCode::FORBIDDEN, case).await;
    }
    for action in ["approve", "deny", "connect", "disconnect"] {
        let response = browser
            .post_raw(
                &format!("{base}/consent/{flow_id}/{action}"),
                &[("csrf", wrong.as_str()), ("service", "x")],
            )
            .await;
        assert_error_page(response, StatusCode::FORBIDDEN, action).await;
    }
    // Nothing changed: the flow still waits for an identity, and the right token works.
    let response = browser.get_raw(&format!("{base}/consent/{flow_id}")).await;
    assert_eq!(location(&response), format!("/consent/{flow_id}/identity"));
    skip(&fleet, &browser, 0, &flow_id, &right).await;
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_flow_of_one_browser_cannot_be_continued_by_another() {
    let fleet = TestFleet::start(1).await;
    let client = fleet.register_public().await;
    let base = fleet.url(0).to_owned();
    let alice = fleet.browser();
    let (flow_id, identity) = start_flow(&fleet, &alice, 0, &client, &Pkce::new()).await;
    let alices_csrf = identity.csrf();

    // Mallory has a flow of her own.
    let mallory = fleet.browser();
    let (mallorys_flow, _) = start_flow(&fleet, &mallory, 0, &client, &Pkce::new()).await;
    let response = mallory.get_raw(&format!("{base}/consent/{flow_id}/identity")).await;
    assert_error_page(response, StatusCode::FORBIDDEN, "another browser's flow").await;
    // Even with Alice's CSRF token (read over her shoulder), Mallory's cookie does not match it.
    let response = mallory
        .post_raw(
            &format!("{base}/consent/{flow_id}/identity"),
            &[("csrf", alices_csrf.as_str()), ("choice", "skip")],
        )
        .await;
    assert_error_page(response, StatusCode::FORBIDDEN, "another browser's post").await;
    // A forged cookie naming Alice's flow with Mallory's secret.
    let mallorys_secret = mallory
        .cookie("gatehouse-flow")
        .unwrap()
        .split_once('~')
        .unwrap()
        .1
        .to_owned();
    assert!(mallory.cookie("gatehouse-flow").unwrap().starts_with(&mallorys_flow));
    mallory.set_cookie("gatehouse-flow", Some(&format!("{flow_id}~{mallorys_secret}")));
    let response = mallory.get_raw(&format!("{base}/consent/{flow_id}/identity")).await;
    assert_error_page(response, StatusCode::FORBIDDEN, "forged cookie").await;
    // No cookie, or garbage.
    let stranger = fleet.browser();
    let response = stranger.get_raw(&format!("{base}/consent/{flow_id}/identity")).await;
    assert_error_page(response, StatusCode::FORBIDDEN, "no cookie").await;
    stranger.set_cookie("gatehouse-flow", Some("~~~garbage"));
    let response = stranger.get_raw(&format!("{base}/consent/{flow_id}/services")).await;
    assert_error_page(response, StatusCode::FORBIDDEN, "garbage cookie").await;

    // Alice is unaffected.
    skip(&fleet, &alice, 0, &flow_id, &alices_csrf).await;
    fleet.stop().await;
}

// === Finishing a flow ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_approve_is_refused_as_already_answered() {
    let fleet = TestFleet::start(1).await;
    let client = fleet.register_public().await;
    let browser = fleet.browser();
    let pkce = Pkce::new();
    let (flow_id, identity) = start_flow(&fleet, &browser, 0, &client, &pkce).await;
    let services = skip(&fleet, &browser, 0, &flow_id, &identity.csrf()).await;
    let csrf = services.csrf();
    approve(&fleet, &browser, 0, &client, &flow_id, &csrf, &pkce).await;
    let response = browser
        .post_raw(
            &format!("{}/consent/{flow_id}/approve", fleet.url(0)),
            &[("csrf", csrf.as_str())],
        )
        .await;
    let html = assert_error_page(response, StatusCode::CONFLICT, "second approve").await;
    assert!(html.contains("already answered"));
    let response = browser.get_raw(&format!("{}/consent/{flow_id}/services", fleet.url(0))).await;
    assert_error_page(response, StatusCode::CONFLICT, "the consumed flow's page").await;
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approve_before_choosing_an_identity_is_out_of_order_with_a_link_back() {
    let fleet = TestFleet::start(1).await;
    let client = fleet.register_public().await;
    let browser = fleet.browser();
    let (flow_id, identity) = start_flow(&fleet, &browser, 0, &client, &Pkce::new()).await;
    let response = browser
        .post_raw(
            &format!("{}/consent/{flow_id}/approve", fleet.url(0)),
            &[("csrf", identity.csrf().as_str())],
        )
        .await;
    let html = assert_error_page(response, StatusCode::CONFLICT, "approve first").await;
    assert!(
        html.contains(&format!(r#"href="/consent/{flow_id}""#)),
        "a link to the right step"
    );
    // The services page sends an identity-less flow to the identity page.
    let response = browser.get_raw(&format!("{}/consent/{flow_id}/services", fleet.url(0))).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&response), format!("/consent/{flow_id}/identity"));
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deny_redirects_back_with_access_denied_state_and_iss() {
    let fleet = TestFleet::start(1).await;
    let client = fleet.register_public().await;
    let browser = fleet.browser();
    let (flow_id, identity) = start_flow(&fleet, &browser, 0, &client, &Pkce::new()).await;
    let services = skip(&fleet, &browser, 0, &flow_id, &identity.csrf()).await;
    let to = browser
        .post_see_other(
            &format!("{}/consent/{flow_id}/deny", fleet.url(0)),
            &[("csrf", services.csrf().as_str())],
        )
        .await;
    assert!(to.starts_with(&format!("{}?", client.redirect_uri)), "{to}");
    let query = query_of(&to);
    assert_eq!(query["error"], vec!["access_denied".to_owned()]);
    assert_eq!(query["state"], vec![STATE.to_owned()]);
    assert_eq!(query["iss"], vec![fleet.issuer.clone()]);
    assert!(!query.contains_key("code"));

    // Cancel on the identity page denies too.
    let (flow_id, identity) = start_flow(&fleet, &browser, 0, &client, &Pkce::new()).await;
    assert!(identity.html.contains(&format!(r#"action="/consent/{flow_id}/deny""#)));
    let to = browser
        .post_see_other(
            &format!("{}/consent/{flow_id}/deny", fleet.url(0)),
            &[("csrf", identity.csrf().as_str())],
        )
        .await;
    assert_eq!(query_of(&to)["error"], vec!["access_denied".to_owned()]);
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_flow_is_404_and_an_expired_one_410() {
    let fleet = TestFleet::start(1).await;
    let client = fleet.register_public().await;
    let browser = fleet.browser();
    let (flow_id, _) = start_flow(&fleet, &browser, 0, &client, &Pkce::new()).await;
    let response = browser
        .get_raw(&format!("{}/consent/flw_doesnotexist/identity", fleet.url(0)))
        .await;
    assert_error_page(response, StatusCode::NOT_FOUND, "unknown flow").await;
    let response = browser
        .get_raw(&format!("{}/consent/not%20an%20id/identity", fleet.url(0)))
        .await;
    assert_error_page(response, StatusCode::NOT_FOUND, "malformed flow id").await;
    // Flows live 15 minutes.
    fleet.clock.advance(16 * 60);
    let response = browser.get_raw(&format!("{}/consent/{flow_id}/identity", fleet.url(0))).await;
    assert_error_page(response, StatusCode::GONE, "expired flow").await;
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_virtual_key_names_the_identity_and_a_wrong_one_shows_the_identity_page_again() {
    let fleet = TestFleet::start(1).await;
    let admin = fleet.control_plane.admin().await;
    let created = admin
        .admin()
        .create_virtual_key(CreateVirtualKeyRequest { name: "alice".into() })
        .await
        .unwrap()
        .into_inner();
    let client = fleet.register_public().await;
    let browser = fleet.browser();
    let pkce = Pkce::new();
    let (flow_id, identity) = start_flow(&fleet, &browser, 0, &client, &pkce).await;
    let url = format!("{}/consent/{flow_id}/identity", fleet.url(0));
    let csrf = identity.csrf();

    let response = browser
        .post_raw(
            &url,
            &[
                ("csrf", csrf.as_str()),
                ("choice", "virtual_key"),
                ("virtual_key", "gh_vk_wrong"),
            ],
        )
        .await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_page_headers(response.headers(), "http://127.0.0.1:33418");
    let html = response.text().await.unwrap();
    assert!(html.contains("was not accepted"), "{html}");
    assert!(!html.contains("gh_vk_wrong"), "the typed key is not echoed");

    let to = browser
        .post_see_other(
            &url,
            &[
                ("csrf", csrf.as_str()),
                ("choice", "virtual_key"),
                ("virtual_key", created.secret.as_str()),
            ],
        )
        .await;
    let services = browser.page(&format!("{}{to}", fleet.url(0))).await;
    assert!(services.html.contains("alice"), "the services page names the key's identity");
    assert!(!services.html.contains(&created.secret));
    let code = approve(&fleet, &browser, 0, &client, &flow_id, &services.csrf(), &pkce).await;
    fleet.exchange_code(0, &client, &code).await;
    fleet.stop().await;
}

// === Token and revocation endpoints ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_access_token_in_the_query_string_is_refused() {
    let fleet = TestFleet::start(1).await;
    let (_, tokens) = tokens_for_new_client(&fleet).await;
    let response = fleet
        .http()
        .post(format!("{}/mcp?access_token={}", fleet.url(0), tokens.access_token))
        .bearer_auth(&tokens.access_token)
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert!(
        response.headers()[header::WWW_AUTHENTICATE]
            .to_str()
            .unwrap()
            .starts_with(r#"Bearer error="invalid_request""#)
    );
    let body = json_body(response).await;
    assert_eq!(body["error"], "invalid_request");
    assert!(!body.to_string().contains(&tokens.access_token), "the token is not echoed");
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_confidential_client_authenticates_with_http_basic_or_the_body() {
    let fleet = TestFleet::start(1).await;
    for method in ["client_secret_basic", "client_secret_post"] {
        let client = fleet.register_confidential(method).await;
        let secret = client.client_secret.clone().unwrap();
        let browser = fleet.browser();
        let pkce = Pkce::new();
        let (flow_id, identity) = start_flow(&fleet, &browser, 0, &client, &pkce).await;
        assert!(
            !identity.html.contains("any program on this computer"),
            "an https client gets no loopback warning"
        );
        let services = skip(&fleet, &browser, 0, &flow_id, &identity.csrf()).await;
        assert_page_headers(&services.headers, "https://app.example.com");
        let code = approve(&fleet, &browser, 0, &client, &flow_id, &services.csrf(), &pkce).await;
        let form = [
            ("grant_type", "authorization_code"),
            ("code", code.code.as_str()),
            ("code_verifier", code.verifier.as_str()),
            ("redirect_uri", client.redirect_uri.as_str()),
        ];
        let auth = if method == "client_secret_basic" {
            ClientAuth::Basic(&client.client_id, &secret)
        } else {
            ClientAuth::Post(&client.client_id, &secret)
        };
        let response = fleet.token_raw(0, &form, &auth).await;
        let status = response.status();
        let body = json_body(response).await;
        assert_eq!(status, StatusCode::OK, "{method}: {body}");
        assert!(body["access_token"].is_string(), "{method}");
    }
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_client_credentials_via_basic_get_401_with_a_basic_challenge() {
    let fleet = TestFleet::start(1).await;
    let client = fleet.register_confidential("client_secret_basic").await;
    let form = [("grant_type", "refresh_token"), ("refresh_token", "gh_rt_whatever")];

    let response = fleet
        .token_raw(0, &form, &ClientAuth::Basic(&client.client_id, "wrong-secret"))
        .await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(response.headers()[header::WWW_AUTHENTICATE], r#"Basic realm="gatehouse""#);
    assert_eq!(response.headers()[header::CACHE_CONTROL], "no-store");
    assert_eq!(response.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
    assert_eq!(
        response.headers()[header::ACCESS_CONTROL_EXPOSE_HEADERS],
        "www-authenticate",
        "a browser client can read the challenge"
    );
    assert_eq!(json_body(response).await["error"], "invalid_client");

    // The same mistake in the body: 401 without the Basic challenge.
    let response = fleet
        .token_raw(0, &form, &ClientAuth::Post(&client.client_id, "wrong-secret"))
        .await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(response.headers().get(header::WWW_AUTHENTICATE).is_none());
    assert_eq!(json_body(response).await["error"], "invalid_client");

    // Malformed Basic credentials, and at /revoke.
    let response = fleet
        .http()
        .post(format!("{}/revoke", fleet.url(0)))
        .header(header::AUTHORIZATION, "Basic !!!")
        .form(&[("token", "x")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(response.headers()[header::WWW_AUTHENTICATE], r#"Basic realm="gatehouse""#);
    let response = fleet
        .revoke_raw(0, &[("token", "x")], &ClientAuth::Basic(&client.client_id, "wrong-secret"))
        .await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_token_requests_get_the_oauth_error_codes() {
    let fleet = TestFleet::start(1).await;
    let client = fleet.register_confidential("client_secret_basic").await;
    let secret = client.client_secret.clone().unwrap();
    let basic = basic_authorization(&client.client_id, &secret);
    let cases: &[(&str, &str, Option<&str>, &str)] = &[
        ("no grant_type", "code=x", Some(&basic), "invalid_request"),
        (
            "unknown grant_type",
            "grant_type=password&username=a&password=b",
            Some(&basic),
            "unsupported_grant_type",
        ),
        ("no code", "grant_type=authorization_code", Some(&basic), "invalid_request"),
        (
            "duplicated code",
            "grant_type=authorization_code&code=a&code=b",
            Some(&basic),
            "invalid_request",
        ),
        (
            "Basic and a body secret",
            "grant_type=refresh_token&refresh_token=x&client_secret=y",
            Some(&basic),
            "invalid_request",
        ),
        (
            "unknown code",
            "grant_type=authorization_code&code=nope&code_verifier=x",
            Some(&basic),
            "invalid_grant",
        ),
        (
            "no client authentication",
            "grant_type=refresh_token&refresh_token=x",
            None,
            "invalid_client",
        ),
    ];
    for (case, body, authorization, error) in cases {
        let mut request = fleet
            .http()
            .post(format!("{}/token", fleet.url(0)))
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(body.to_string());
        if let Some(authorization) = authorization {
            request = request.header(header::AUTHORIZATION, *authorization);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.headers()[header::CACHE_CONTROL], "no-store", "{case}");
        let body = json_body(response).await;
        assert_eq!(body["error"], *error, "{case}: {body}");
    }
    // Revocation without a token.
    let response = fleet.revoke_raw(0, &[], &ClientAuth::Basic(&client.client_id, &secret)).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(json_body(response).await["error"], "invalid_request");
    // An unknown token is revoked "successfully".
    let response = fleet
        .revoke_raw(
            0,
            &[("token", "gh_rt_unknown"), ("token_type_hint", "refresh_token")],
            &ClientAuth::Basic(&client.client_id, &secret),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    fleet.stop().await;
}

// === Services ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connecting_a_service_walks_the_upstream_and_returns_to_the_services_page() {
    let (fleet, demo) = fleet_with_notes(|_| {}).await;
    let client = fleet.register_public().await;
    let browser = fleet.browser();
    let pkce = Pkce::new();
    let (flow_id, identity) = start_flow(&fleet, &browser, 0, &client, &pkce).await;
    let services = skip(&fleet, &browser, 0, &flow_id, &identity.csrf()).await;
    assert!(services.html.contains("Demo Notes"));
    assert!(services.html.contains("Not connected"));
    let csrf = services.csrf();

    // Connect answers 303 to a continuation page of this origin (which
    // `form-action 'self'` allows), never a cross-origin 303 to the upstream.
    let response = browser
        .post_raw(
            &format!("{}/consent/{flow_id}/connect", fleet.url(1)),
            &[("csrf", csrf.as_str()), ("service", "notes")],
        )
        .await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_page_headers(response.headers(), "");
    let onward = location(&response);
    assert!(onward.starts_with(&format!("/consent/{flow_id}/continue?")), "{onward}");
    // The page leads on by meta refresh and a link, no JavaScript; any data plane serves it.
    let response = browser.get_raw(&format!("{}{onward}", fleet.url(0))).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_page_headers(response.headers(), "");
    let html = response.text().await.unwrap();
    assert!(html.contains(r#"http-equiv="refresh""#));
    assert!(!html.contains("<script"));
    let upstream_url = continuation_link(&html);
    assert!(
        upstream_url.starts_with(&format!("{}/authorize?", demo.base_url())),
        "{upstream_url}"
    );

    // The person allows at the upstream, which sends the browser back to /oauth/callback.
    let page = browser.page(&upstream_url).await;
    let mut form = gatehouse::demo::hidden_fields(&page.html);
    form.push(("account".into(), "alice".into()));
    form.push(("decision".into(), "allow".into()));
    let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let response = browser.post_raw(&format!("{}/authorize", demo.base_url()), &form).await;
    assert!(response.status().is_redirection(), "{}", response.status());
    let callback = location(&response);
    assert!(
        callback.starts_with(&format!("{}/oauth/callback?", fleet.issuer)),
        "{callback}"
    );
    // The callback lands on another data plane.
    let callback = callback.replacen(&fleet.issuer, fleet.url(1), 1);
    let response = browser.get_raw(&callback).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&response), format!("/consent/{flow_id}/services"));
    let services = browser.page(&format!("{}/consent/{flow_id}/services", fleet.url(0))).await;
    assert!(services.html.contains("Connected as alice"), "{}", services.html);
    assert!(services.html.contains(&format!(r#"action="/consent/{flow_id}/disconnect""#)));

    // Disconnect, then approve.
    let to = browser
        .post_see_other(
            &format!("{}/consent/{flow_id}/disconnect", fleet.url(0)),
            &[("csrf", csrf.as_str()), ("service", "notes")],
        )
        .await;
    assert_eq!(to, format!("/consent/{flow_id}/services"));
    let services = browser.page(&format!("{}{to}", fleet.url(0))).await;
    assert!(services.html.contains("Not connected"));
    approve(&fleet, &browser, 0, &client, &flow_id, &csrf, &pkce).await;
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_asserted_by_a_trusted_proxy_header_can_be_chosen() {
    let fleet = TestFleet::builder()
        .control_plane(|config| config.trust_proxy_user = true)
        .data_plane(|config| config.trusted_user_header = Some("X-Forwarded-User".into()))
        .spawn()
        .await;
    let client = fleet.register_public().await;
    let browser = fleet.browser();
    let pkce = Pkce::new();
    let flow_id = browser
        .authorize(fleet.url(0), &authorize_params(&client, &pkce, STATE))
        .await;
    let url = format!("{}/consent/{flow_id}/identity", fleet.url(0));
    // Without the header, no such choice.
    let page = browser.page(&url).await;
    assert!(!page.html.contains(r#"value="proxy""#));
    let csrf = page.csrf();
    let response = browser.post_raw(&url, &[("csrf", csrf.as_str()), ("choice", "proxy")]).await;
    assert_error_page(response, StatusCode::BAD_REQUEST, "proxy choice without the header").await;

    let response = fleet
        .http()
        .get(&url)
        .header(
            header::COOKIE,
            format!("gatehouse-flow={}", browser.cookie("gatehouse-flow").unwrap()),
        )
        .header("X-Forwarded-User", "bob@example.com")
        .send()
        .await
        .unwrap();
    assert!(response.text().await.unwrap().contains("Continue as bob@example.com"));
    let response = fleet
        .http()
        .post(&url)
        .header(
            header::COOKIE,
            format!("gatehouse-flow={}", browser.cookie("gatehouse-flow").unwrap()),
        )
        .header("X-Forwarded-User", "bob@example.com")
        .form(&[("csrf", csrf.as_str()), ("choice", "proxy"), ("proxy_user", "mallory")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let services = browser.page(&format!("{}/consent/{flow_id}/services", fleet.url(0))).await;
    assert!(
        services.html.contains("bob@example.com"),
        "the header names the user, never the form"
    );
    assert!(!services.html.contains("mallory"));
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_control_plane_the_endpoints_answer_503_with_retry_after() {
    let mut fleet = TestFleet::start(1).await;
    let (client, tokens) = tokens_for_new_client(&fleet).await;
    let browser = fleet.browser();
    let (flow_id, _) = start_flow(&fleet, &browser, 0, &client, &Pkce::new()).await;
    fleet.stop_control_plane().await;

    let response = fleet.mcp_raw(0, Method::POST, Some(&tokens.access_token)).await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE, "/mcp");
    assert!(response.headers().contains_key(header::RETRY_AFTER));

    let refresh = tokens.refresh_token.clone().unwrap();
    let response = fleet
        .token_raw(
            0,
            &[("grant_type", "refresh_token"), ("refresh_token", refresh.as_str())],
            &client.auth(),
        )
        .await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE, "/token");
    assert!(response.headers().contains_key(header::RETRY_AFTER));
    assert_eq!(json_body(response).await["error"], "temporarily_unavailable");

    let response = browser.get_raw(&format!("{}/consent/{flow_id}/identity", fleet.url(0))).await;
    assert!(response.headers().contains_key(header::RETRY_AFTER));
    let html = assert_error_page(response, StatusCode::SERVICE_UNAVAILABLE, "a page").await;
    assert!(
        html.contains(&format!(r#"href="/consent/{flow_id}""#)),
        "a way back once it answers again"
    );

    let response = browser
        .authorize_raw(fleet.url(0), &authorize_params(&client, &Pkce::new(), STATE))
        .await;
    assert_error_page(response, StatusCode::SERVICE_UNAVAILABLE, "/authorize").await;
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signing_in_at_the_openid_provider_makes_a_verified_user_identity() {
    let demo = std::sync::Arc::new(demo_upstream().await);
    let fleet = fleet_with_sign_in(demo.clone(), Vec::new(), 2).await;
    let client = fleet.register_public().await;
    let browser = fleet.browser();
    let pkce = Pkce::new();
    let (flow_id, identity) = start_flow(&fleet, &browser, 0, &client, &pkce).await;
    assert!(identity.html.contains("Sign in with"), "the identity page offers sign-in");

    // Sign in: 303 to the continuation page, on to the provider, which asks for the account.
    let response = browser
        .post_raw(
            &format!("{}/consent/{flow_id}/identity", fleet.url(1)),
            &[("csrf", identity.csrf().as_str()), ("choice", "user")],
        )
        .await;
    assert_page_headers(response.headers(), "");
    let provider_url = follow_onward(&browser, response).await;
    assert!(
        provider_url.starts_with(&format!("{}/authorize?", demo.base_url())),
        "{provider_url}"
    );
    assert!(provider_url.contains("openid"), "{provider_url}");
    let page = browser.page(&provider_url).await;
    let mut form = gatehouse::demo::hidden_fields(&page.html);
    form.push(("account".into(), "alice".into()));
    form.push(("decision".into(), "allow".into()));
    let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let response = browser.post_raw(&format!("{}/authorize", demo.base_url()), &form).await;
    let callback = location(&response);
    assert!(
        callback.starts_with(&format!("{}/signin/callback?", fleet.issuer)),
        "{callback}"
    );

    // The callback lands on the other data plane and the flow goes on as alice.
    let response = browser.get_raw(&callback.replacen(&fleet.issuer, fleet.url(1), 1)).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&response), format!("/consent/{flow_id}/services"));
    let services = browser.page(&format!("{}/consent/{flow_id}/services", fleet.url(0))).await;
    assert!(services.html.contains("alice@demo.test"), "{}", services.html);

    // The same callback again (a replayed state) is refused.
    let replay = browser.get_raw(&callback.replacen(&fleet.issuer, fleet.url(0), 1)).await;
    assert!(replay.status().is_client_error(), "{}", replay.status());

    let code = approve(&fleet, &browser, 0, &client, &flow_id, &services.csrf(), &pkce).await;
    let tokens = fleet.exchange_code(1, &client, &code).await;
    let caller = fleet
        .control_plane
        .client(crate::support::plane::DATA_PLANE)
        .await
        .tokens()
        .resolve_access_token(gatehouse::pb::ResolveAccessTokenRequest {
            access_token: tokens.access_token.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let identity = caller.identity.unwrap();
    assert_eq!(identity.kind, gatehouse::pb::IdentityKind::User as i32);
    assert_eq!(identity.subject, format!("{}#alice", demo.base_url()));
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_without_the_mcp_scope_gets_403_insufficient_scope() {
    let fleet = TestFleet::start(1).await;
    let client = fleet.register_public().await;
    let browser = fleet.browser();
    let pkce = Pkce::new();
    let mut params = authorize_params(&client, &pkce, STATE);
    params.retain(|(k, _)| k != "scope");
    params.push(("scope".into(), "offline_access".into()));
    let flow_id = browser.authorize(fleet.url(0), &params).await;
    let identity = browser.page(&format!("{}/consent/{flow_id}/identity", fleet.url(0))).await;
    let services = skip(&fleet, &browser, 0, &flow_id, &identity.csrf()).await;
    let code = approve(&fleet, &browser, 0, &client, &flow_id, &services.csrf(), &pkce).await;
    let tokens = fleet.exchange_code(0, &client, &code).await;
    let response = fleet.mcp_raw(0, Method::POST, Some(&tokens.access_token)).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        response.headers()[header::WWW_AUTHENTICATE],
        format!(
            r#"Bearer error="insufficient_scope", scope="mcp", resource_metadata="{}/.well-known/oauth-protected-resource/mcp""#,
            fleet.issuer
        )
        .as_str()
    );
    fleet.stop().await;
}

// === Continuation pages, dead ends and lifetimes ===

/// A fleet of two data planes whose control plane knows the demo upstream as
/// "notes" (OAuth), adjusted by `configure`; the demo's handle comes along.
async fn fleet_with_notes(
    configure: impl FnOnce(&mut gatehouse_control_plane::config::ControlPlaneConfig) + Send + 'static,
) -> (TestFleet, gatehouse::demo::DemoUpstream) {
    let demo = demo_upstream().await;
    let demo_mcp = demo.mcp_url();
    let fleet = TestFleet::builder()
        .data_planes(2)
        .control_plane(move |config| {
            config.outbound.allow_loopback = true;
            config.mcp_servers = vec![McpServer {
                name: "notes".into(),
                display_name: "Demo Notes".into(),
                url: demo_mcp,
                auth_mode: AuthMode::Oauth,
                ..Default::default()
            }];
            configure(config);
        })
        .spawn()
        .await;
    (fleet, demo)
}

/// Posts Connect for "notes" on data plane `dp` and follows the 303 and the
/// continuation page; returns the upstream's authorization URL.
async fn connect_notes(
    fleet: &TestFleet,
    browser: &crate::support::fleet::Browser,
    dp: usize,
    flow_id: &str,
    csrf: &str,
) -> String {
    let response = browser
        .post_raw(
            &format!("{}/consent/{flow_id}/connect", fleet.url(dp)),
            &[("csrf", csrf), ("service", "notes")],
        )
        .await;
    follow_onward(browser, response).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_continuation_page_shows_only_what_this_browser_was_sent_there_with() {
    let (fleet, demo) = fleet_with_notes(|_| {}).await;
    let client = fleet.register_public().await;
    let browser = fleet.browser();
    let pkce = Pkce::new();
    let (flow_id, identity) = start_flow(&fleet, &browser, 0, &client, &pkce).await;
    let services = skip(&fleet, &browser, 0, &flow_id, &identity.csrf()).await;
    let response = browser
        .post_raw(
            &format!("{}/consent/{flow_id}/connect", fleet.url(0)),
            &[("csrf", services.csrf().as_str()), ("service", "notes")],
        )
        .await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let onward = location(&response);
    let query = query_of(&format!("{}{onward}", fleet.url(0)));
    let upstream_url = query["to"][0].clone();
    assert!(upstream_url.starts_with(demo.base_url()), "{upstream_url}");

    // Another browser (no flow cookie, or another flow's) is shown nothing.
    let stranger = fleet.browser();
    let html = assert_error_page(
        stranger.get_raw(&format!("{}{onward}", fleet.url(1))).await,
        StatusCode::FORBIDDEN,
        "no flow cookie",
    )
    .await;
    assert!(!html.contains(demo.base_url()), "{html}");
    let (_, _) = start_flow(&fleet, &stranger, 0, &client, &Pkce::new()).await;
    let cookie = stranger.cookie("gatehouse-flow").unwrap();
    let (_, other_secret) = cookie.split_once('~').unwrap();
    stranger.set_cookie("gatehouse-flow", Some(&format!("{flow_id}~{other_secret}")));
    let html = assert_error_page(
        stranger.get_raw(&format!("{}{onward}", fleet.url(1))).await,
        StatusCode::FORBIDDEN,
        "another browser's secret",
    )
    .await;
    assert!(!html.contains(demo.base_url()), "{html}");

    // A URL swapped in is no open redirect, and the page leads back to the request.
    let forged = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("to", "https://evil.example/")
        .append_pair("sig", &query["sig"][0])
        .finish();
    let html = assert_error_page(
        browser
            .get_raw(&format!("{}/consent/{flow_id}/continue?{forged}", fleet.url(0)))
            .await,
        StatusCode::FORBIDDEN,
        "forged URL",
    )
    .await;
    assert!(!html.contains("evil.example"), "{html}");
    assert!(html.contains(&format!(r#"href="/consent/{flow_id}""#)), "{html}");

    // The browser that posted goes on.
    let page = browser.page(&format!("{}{onward}", fleet.url(1))).await;
    assert_eq!(continuation_link(&page.html), upstream_url);
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_answer_after_its_state_expired_leads_back_to_the_services_page() {
    let (fleet, demo) = fleet_with_notes(|_| {}).await;
    let client = fleet.register_public().await;
    let browser = fleet.browser();
    let pkce = Pkce::new();
    let (flow_id, identity) = start_flow(&fleet, &browser, 0, &client, &pkce).await;
    let csrf = skip(&fleet, &browser, 0, &flow_id, &identity.csrf()).await.csrf();
    let upstream_url = connect_notes(&fleet, &browser, 0, &flow_id, &csrf).await;
    let callback = crate::support::fleet::allow_at_demo(&browser, demo.base_url(), &upstream_url, "alice").await;

    // The upstream state lives 10 minutes, the flow 15: the flow goes on.
    fleet.clock.advance(10 * 60 + 1);
    let response = browser.get_raw(&callback.replacen(&fleet.issuer, fleet.url(1), 1)).await;
    let html = assert_error_page(response, StatusCode::GONE, "expired upstream state").await;
    let back = format!("/consent/{flow_id}/services");
    assert!(html.contains(&format!(r#"href="{back}""#)), "a way back: {html}");
    assert!(html.contains("still open"), "{html}");

    // The same answer again (the state is spent or expired): still a way back.
    let response = browser.get_raw(&callback.replacen(&fleet.issuer, fleet.url(0), 1)).await;
    let status = response.status();
    let html = response.text().await.unwrap();
    assert!(status == StatusCode::GONE || status == StatusCode::CONFLICT, "{status}");
    assert!(html.contains(&format!(r#"href="{back}""#)), "{html}");

    // Back on the services page, Connect again works.
    let services = browser.page(&format!("{}{back}", fleet.url(0))).await;
    assert!(services.html.contains("Not connected"), "{}", services.html);
    let upstream_url = connect_notes(&fleet, &browser, 1, &flow_id, &services.csrf()).await;
    let callback = crate::support::fleet::allow_at_demo(&browser, demo.base_url(), &upstream_url, "alice").await;
    let response = browser.get_raw(&callback.replacen(&fleet.issuer, fleet.url(0), 1)).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&response), back);
    let services = browser.page(&format!("{}{back}", fleet.url(0))).await;
    assert!(services.html.contains("Connected as alice"), "{}", services.html);
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sign_in_answer_after_its_state_expired_leads_back_to_the_identity_page() {
    let demo = std::sync::Arc::new(demo_upstream().await);
    let fleet = fleet_with_sign_in(demo.clone(), Vec::new(), 1).await;
    let client = fleet.register_public().await;
    let browser = fleet.browser();
    let (flow_id, identity) = start_flow(&fleet, &browser, 0, &client, &Pkce::new()).await;
    let response = browser
        .post_raw(
            &format!("{}/consent/{flow_id}/identity", fleet.url(0)),
            &[("csrf", identity.csrf().as_str()), ("choice", "user")],
        )
        .await;
    let provider_url = follow_onward(&browser, response).await;
    let callback = crate::support::fleet::allow_at_demo(&browser, demo.base_url(), &provider_url, "alice").await;
    assert!(
        callback.starts_with(&format!("{}/signin/callback?", fleet.issuer)),
        "{callback}"
    );

    fleet.clock.advance(10 * 60 + 1);
    let html = assert_error_page(browser.get_raw(&callback).await, StatusCode::GONE, "expired sign-in state").await;
    let back = format!("/consent/{flow_id}/identity");
    assert!(html.contains(&format!(r#"href="{back}""#)), "a way back: {html}");
    let identity = browser.page(&format!("{}{back}", fleet.url(0))).await;
    assert!(identity.html.contains("Sign in with"), "{}", identity.html);
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_error_at_the_callback_lands_on_the_services_page_with_the_reason() {
    let (fleet, demo) = fleet_with_notes(|_| {}).await;
    let client = fleet.register_public().await;
    let browser = fleet.browser();
    let pkce = Pkce::new();
    let (flow_id, identity) = start_flow(&fleet, &browser, 0, &client, &pkce).await;
    let csrf = skip(&fleet, &browser, 0, &flow_id, &identity.csrf()).await.csrf();
    let upstream_url = connect_notes(&fleet, &browser, 0, &flow_id, &csrf).await;

    // The person denies at the provider: it sends error=access_denied&state=… back.
    let callback = crate::support::fleet::decide_at_demo(&browser, demo.base_url(), &upstream_url, "alice", "deny").await;
    assert!(
        callback.starts_with(&format!("{}/oauth/callback?", fleet.issuer)),
        "{callback}"
    );
    let query = query_of(&callback);
    assert_eq!(query["error"], vec!["access_denied".to_owned()]);
    assert!(query.contains_key("state") && !query.contains_key("code"));
    let response = browser.get_raw(&callback.replacen(&fleet.issuer, fleet.url(1), 1)).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER, "no dead end");
    assert_eq!(location(&response), format!("/consent/{flow_id}/services"));
    let services = browser.page(&format!("{}/consent/{flow_id}/services", fleet.url(0))).await;
    assert!(services.html.contains(r#"class="notice""#), "{}", services.html);
    assert!(services.html.contains("access_denied"), "the reason: {}", services.html);
    assert!(services.html.contains("The user denied the request."), "{}", services.html);
    assert!(services.html.contains("Not connected"));
    // The notice is shown once; the flow goes on to Approve.
    let services = browser.page(&format!("{}/consent/{flow_id}/services", fleet.url(1))).await;
    assert!(!services.html.contains("access_denied"));
    approve(&fleet, &browser, 1, &client, &flow_id, &services.csrf(), &pkce).await;
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_flow_cookie_and_the_expired_page_follow_the_configured_flow_lifetime() {
    let fleet = TestFleet::builder()
        .control_plane(|config| config.lifetimes.flow = 120)
        .spawn()
        .await;
    let client = fleet.register_public().await;
    let browser = fleet.browser();
    let response = browser
        .authorize_raw(fleet.url(0), &authorize_params(&client, &Pkce::new(), STATE))
        .await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let set_cookie = response.headers()[header::SET_COOKIE].to_str().unwrap().to_owned();
    assert!(set_cookie.contains("; Max-Age=120"), "{set_cookie}");
    let flow_id = location(&response).strip_prefix("/consent/").unwrap().to_owned();

    fleet.clock.advance(121);
    let html = assert_error_page(
        browser.get_raw(&format!("{}/consent/{flow_id}/identity", fleet.url(0))).await,
        StatusCode::GONE,
        "expired flow",
    )
    .await;
    assert!(html.contains("2 minutes"), "the configured lifetime: {html}");
    assert!(!html.contains("15 minutes"), "{html}");
    assert!(html.contains("Return to your application and start again"), "{html}");
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_token_lifetimes_hold_at_mcp_and_token() {
    const ACCESS: u64 = 3;
    const IDLE: i64 = 60;
    let fleet = TestFleet::builder()
        .data_planes(2)
        .control_plane(|config| {
            config.lifetimes.access_token = ACCESS as i64;
            config.lifetimes.refresh_token_idle = IDLE;
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
    assert_eq!(tokens.expires_in, ACCESS as i64);
    let first_refresh = tokens.refresh_token.clone().expect("a refresh token");

    // In time: the access token works (and the data plane caches the answer),
    // and so does the refresh token, on either data plane.
    let response = fleet.mcp_raw(0, Method::POST, Some(&tokens.access_token)).await;
    assert_eq!(response.status(), StatusCode::OK);
    let rotated = fleet.refresh(1, &client, &first_refresh).await;
    let last_issued = std::time::Instant::now();
    let second_refresh = rotated.refresh_token.clone().expect("rotated");
    let response = fleet.mcp_raw(1, Method::POST, Some(&rotated.access_token)).await;
    assert_eq!(response.status(), StatusCode::OK);

    // Expired (on the real clock: the data plane's cache must not outlive the
    // token): refused at /mcp with invalid_token, on the data plane that cached it too.
    // Lifetimes count in whole seconds, hence the second more.
    let expired_at = last_issued + std::time::Duration::from_millis(ACCESS * 1000 + 1100);
    tokio::time::sleep_until(expired_at.into()).await;
    for (dp, token) in [(0, &tokens.access_token), (1, &rotated.access_token)] {
        let response = fleet.mcp_raw(dp, Method::POST, Some(token)).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "dp {dp}");
        assert_eq!(
            response.headers()[header::WWW_AUTHENTICATE],
            challenge(&fleet, Some("invalid_token")).as_str()
        );
    }

    // The refresh token's idle time counts from its last use: used within it, it works.
    fleet.clock.advance(IDLE - 10);
    let third = fleet.refresh(0, &client, &second_refresh).await;
    let response = fleet.mcp_raw(0, Method::POST, Some(&third.access_token)).await;
    assert_eq!(response.status(), StatusCode::OK);
    let third_refresh = third.refresh_token.expect("rotated");

    // Left idle longer: invalid_grant.
    fleet.clock.advance(IDLE + 1);
    let response = fleet
        .token_raw(
            1,
            &[("grant_type", "refresh_token"), ("refresh_token", third_refresh.as_str())],
            &client.auth(),
        )
        .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(response.headers()[header::CACHE_CONTROL], "no-store");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "invalid_grant", "{body}");
    fleet.stop().await;
}
