//! Tests of the demo upstream against a real server on 127.0.0.1:0, driven with reqwest the
//! way a gateway and a browser would.

use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{LOCATION, WWW_AUTHENTICATE};
use serde_json::{Value, json};

use super::*;

const REDIRECT: &str = "http://127.0.0.1:9/callback";

async fn start(config: DemoConfig) -> DemoUpstream {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    DemoUpstream::spawn(listener, config).await.unwrap()
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

fn pkce() -> (String, String) {
    let verifier = random_token("v");
    let challenge = pkce_challenge(&verifier);
    (verifier, challenge)
}

async fn register(demo: &DemoUpstream, http: &reqwest::Client, metadata: Value) -> Value {
    let response = http
        .post(format!("{}/register", demo.base_url()))
        .json(&metadata)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    response.json().await.unwrap()
}

async fn register_public(demo: &DemoUpstream, http: &reqwest::Client) -> String {
    let client = register(
        demo,
        http,
        json!({ "redirect_uris": [REDIRECT], "token_endpoint_auth_method": "none", "client_name": "Test <App>" }),
    )
    .await;
    client["client_id"].as_str().unwrap().to_owned()
}

fn authorize_query<'a>(client_id: &'a str, challenge: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("response_type", "code"),
        ("client_id", client_id),
        ("redirect_uri", REDIRECT),
        ("code_challenge", challenge),
        ("code_challenge_method", "S256"),
        ("scope", "notes.read"),
        ("state", "st&te=1"),
    ]
}

/// GET /authorize and the page's hidden fields.
async fn open_page(demo: &DemoUpstream, http: &reqwest::Client, query: &[(&str, &str)]) -> Vec<(String, String)> {
    let response = http
        .get(format!("{}/authorize", demo.base_url()))
        .query(query)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let csp = response.headers()["content-security-policy"].to_str().unwrap();
    assert_eq!(
        csp,
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self' http://127.0.0.1:9; \
         frame-ancestors 'none'"
    );
    assert_eq!(response.headers()["x-frame-options"], "DENY");
    hidden_fields(&response.text().await.unwrap())
}

async fn decide(
    demo: &DemoUpstream,
    http: &reqwest::Client,
    fields: &[(String, String)],
    account: &str,
    decision: &str,
) -> reqwest::Response {
    let mut form = fields.to_vec();
    form.push(("account".into(), account.into()));
    form.push(("decision".into(), decision.into()));
    http.post(format!("{}/authorize", demo.base_url()))
        .form(&form)
        .send()
        .await
        .unwrap()
}

fn location_params(response: &reqwest::Response) -> (url::Url, Params) {
    let location = response.headers()[LOCATION].to_str().unwrap();
    let url = url::Url::parse(location).unwrap();
    let params = url.query_pairs().into_owned().collect();
    (url, params)
}

/// Register → consent page → Allow, returning (client_id, code, verifier).
async fn authorized_code(demo: &DemoUpstream, http: &reqwest::Client, account: &str) -> (String, String, String) {
    let client_id = register_public(demo, http).await;
    let (verifier, challenge) = pkce();
    let fields = open_page(demo, http, &authorize_query(&client_id, &challenge)).await;
    let response = decide(demo, http, &fields, account, "allow").await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let (url, params) = location_params(&response);
    assert!(url.as_str().starts_with(REDIRECT));
    assert_eq!(params["state"], "st&te=1");
    assert_eq!(params["iss"], demo.base_url());
    (client_id, params["code"].clone(), verifier)
}

async fn token(demo: &DemoUpstream, http: &reqwest::Client, form: &[(&str, &str)]) -> reqwest::Response {
    http.post(format!("{}/token", demo.base_url()))
        .form(form)
        .send()
        .await
        .unwrap()
}

async fn exchange(demo: &DemoUpstream, http: &reqwest::Client, client_id: &str, code: &str, verifier: &str) -> reqwest::Response {
    token(
        demo,
        http,
        &[
            ("grant_type", "authorization_code"),
            ("client_id", client_id),
            ("code", code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", verifier),
        ],
    )
    .await
}

/// A full flow's token response.
async fn tokens(demo: &DemoUpstream, http: &reqwest::Client, account: &str) -> (String, Value) {
    let (client_id, code, verifier) = authorized_code(demo, http, account).await;
    let response = exchange(demo, http, &client_id, &code, &verifier).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["cache-control"], "no-store");
    (client_id, response.json().await.unwrap())
}

async fn assert_oauth_error(response: reqwest::Response, status: StatusCode, error: &str) {
    assert_eq!(response.status(), status);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], error, "{body}");
}

async fn mcp_raw(demo: &DemoUpstream, http: &reqwest::Client, token: Option<&str>, body: &str) -> reqwest::Response {
    let mut request = http
        .post(demo.mcp_url())
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2025-11-25")
        .body(body.to_owned());
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.unwrap()
}

async fn mcp(demo: &DemoUpstream, http: &reqwest::Client, token: &str, body: Value) -> Value {
    let response = mcp_raw(demo, http, Some(token), &body.to_string()).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers().get("mcp-session-id").is_none());
    response.json().await.unwrap()
}

fn call(name: &str, arguments: Value) -> Value {
    json!({ "jsonrpc": "2.0", "id": 7, "method": "tools/call",
            "params": { "name": name, "arguments": arguments } })
}

fn resource_challenge(demo: &DemoUpstream) -> String {
    format!(
        "Bearer resource_metadata=\"{}/.well-known/oauth-protected-resource/mcp\"",
        demo.base_url()
    )
}

#[tokio::test]
async fn metadata_documents_describe_the_endpoints() {
    let demo = start(DemoConfig::default()).await;
    let http = http();
    let base = demo.base_url();
    assert!(!base.ends_with('/'));
    let server: Value = http
        .get(format!("{base}/.well-known/oauth-authorization-server"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(server["issuer"], base);
    assert_eq!(server["authorization_endpoint"], format!("{base}/authorize"));
    assert_eq!(server["token_endpoint"], format!("{base}/token"));
    assert_eq!(server["registration_endpoint"], format!("{base}/register"));
    assert_eq!(server["revocation_endpoint"], format!("{base}/revoke"));
    assert_eq!(server["response_types_supported"], json!(["code"]));
    assert_eq!(
        server["grant_types_supported"],
        json!(["authorization_code", "refresh_token"])
    );
    assert_eq!(server["code_challenge_methods_supported"], json!(["S256"]));
    assert_eq!(
        server["token_endpoint_auth_methods_supported"],
        json!(["none", "client_secret_post", "client_secret_basic"])
    );
    assert_eq!(server["scopes_supported"], json!(["notes.read", "notes.write"]));
    assert_eq!(server["authorization_response_iss_parameter_supported"], true);
    for path in [
        "/.well-known/oauth-protected-resource/mcp",
        "/.well-known/oauth-protected-resource",
    ] {
        let resource: Value = http.get(format!("{base}{path}")).send().await.unwrap().json().await.unwrap();
        assert_eq!(resource["resource"], demo.mcp_url());
        assert_eq!(resource["authorization_servers"], json!([base]));
        assert_eq!(resource["scopes_supported"], json!(["notes.read", "notes.write"]));
        assert_eq!(resource["bearer_methods_supported"], json!(["header"]));
    }
}

#[tokio::test]
async fn full_flow_reaches_whoami_as_the_account() {
    let demo = start(DemoConfig {
        name: "Demo Notes".into(),
        ..Default::default()
    })
    .await;
    let http = http();
    let client_id = register_public(&demo, &http).await;
    let (verifier, challenge) = pkce();
    let mut query = authorize_query(&client_id, &challenge);
    let mcp_url = demo.mcp_url();
    query.push(("resource", &mcp_url));
    let page = http
        .get(format!("{}/authorize", demo.base_url()))
        .query(&query)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("Sign in to Demo Notes"));
    assert!(page.contains("Test &#60;App&#62;"), "client name is escaped");
    assert!(page.contains("notes.read") && !page.contains("notes.write"));
    let fields = hidden_fields(&page);
    let field = |name: &str| fields.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone());
    assert_eq!(field("state").as_deref(), Some("st&te=1"));
    assert_eq!(field("resource"), Some(mcp_url.clone()));
    assert!(field("csrf").is_some());

    let response = decide(&demo, &http, &fields, "alice", "allow").await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let (_, params) = location_params(&response);
    assert_eq!(params["iss"], demo.base_url());
    let code = &params["code"];

    let response = exchange(&demo, &http, &client_id, code, &verifier).await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 3600);
    assert_eq!(body["scope"], "notes.read");
    assert!(body["refresh_token"].is_string());
    let access = body["access_token"].as_str().unwrap();
    assert_eq!(demo.stats().code_exchanges(), 1);

    let reply = mcp(&demo, &http, access, call("whoami", json!({}))).await;
    assert_eq!(reply["id"], 7);
    assert_eq!(reply["result"]["isError"], false);
    assert_eq!(reply["result"]["content"][0]["text"], "you are alice");

    let me: Value = http
        .get(format!("{}/userinfo", demo.base_url()))
        .bearer_auth(access)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["sub"], "alice");
}

#[tokio::test]
async fn wrong_verifier_is_invalid_grant() {
    let demo = start(DemoConfig::default()).await;
    let http = http();
    let (client_id, code, _) = authorized_code(&demo, &http, "alice").await;
    let (other_verifier, _) = pkce();
    let response = exchange(&demo, &http, &client_id, &code, &other_verifier).await;
    assert_oauth_error(response, StatusCode::BAD_REQUEST, "invalid_grant").await;
    assert_eq!(demo.stats().code_exchanges(), 0);
}

#[tokio::test]
async fn code_replay_is_invalid_grant_and_revokes_its_tokens() {
    let demo = start(DemoConfig::default()).await;
    let http = http();
    let (client_id, code, verifier) = authorized_code(&demo, &http, "alice").await;
    let first: Value = exchange(&demo, &http, &client_id, &code, &verifier)
        .await
        .json()
        .await
        .unwrap();
    let access = first["access_token"].as_str().unwrap();
    assert_eq!(
        mcp_raw(&demo, &http, Some(access), r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#)
            .await
            .status(),
        StatusCode::OK
    );

    let replay = exchange(&demo, &http, &client_id, &code, &verifier).await;
    assert_oauth_error(replay, StatusCode::BAD_REQUEST, "invalid_grant").await;
    let after = mcp_raw(&demo, &http, Some(access), r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#).await;
    assert_eq!(after.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn refresh_rotates_and_refuses_the_old_token() {
    let demo = start(DemoConfig::default()).await;
    let http = http();
    let (client_id, first) = tokens(&demo, &http, "alice").await;
    let old = first["refresh_token"].as_str().unwrap();
    let refresh = |rt: String| {
        let (demo, http, client_id) = (&demo, &http, client_id.clone());
        async move {
            token(
                demo,
                http,
                &[
                    ("grant_type", "refresh_token"),
                    ("client_id", &client_id),
                    ("refresh_token", &rt),
                ],
            )
            .await
        }
    };
    let response = refresh(old.to_owned()).await;
    assert_eq!(response.status(), StatusCode::OK);
    let second: Value = response.json().await.unwrap();
    let new = second["refresh_token"].as_str().unwrap();
    assert_ne!(new, old);
    assert_ne!(second["access_token"], first["access_token"]);
    assert_eq!(demo.stats().refreshes(), 1);

    // The rotated-out token is refused, and its reuse ends the family.
    assert_oauth_error(refresh(old.to_owned()).await, StatusCode::BAD_REQUEST, "invalid_grant").await;
    assert_oauth_error(refresh(new.to_owned()).await, StatusCode::BAD_REQUEST, "invalid_grant").await;
    let access = second["access_token"].as_str().unwrap();
    let response = mcp_raw(&demo, &http, Some(access), r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn refresh_without_rotation_keeps_the_token() {
    let demo = start(DemoConfig {
        rotate_refresh_tokens: false,
        access_token_ttl: Duration::from_secs(60),
        ..Default::default()
    })
    .await;
    let http = http();
    let (client_id, first) = tokens(&demo, &http, "bob").await;
    assert_eq!(first["expires_in"], 60);
    let rt = first["refresh_token"].as_str().unwrap();
    for _ in 0..2 {
        let response = token(
            &demo,
            &http,
            &[
                ("grant_type", "refresh_token"),
                ("client_id", &client_id),
                ("refresh_token", rt),
            ],
        )
        .await;
        assert_eq!(response.status(), StatusCode::OK);
        let body: Value = response.json().await.unwrap();
        assert!(body.get("refresh_token").is_none());
    }

    let no_refresh = start(DemoConfig {
        issue_refresh_tokens: false,
        ..Default::default()
    })
    .await;
    let (_, body) = tokens(&no_refresh, &http, "bob").await;
    assert!(body.get("refresh_token").is_none());
}

#[tokio::test]
async fn unknown_client_or_redirect_gets_an_error_page() {
    let demo = start(DemoConfig::default()).await;
    let http = http();
    let client_id = register_public(&demo, &http).await;
    let (_, challenge) = pkce();
    let mut unknown = authorize_query("nobody", &challenge);
    unknown.retain(|(n, _)| *n != "client_id");
    unknown.push(("client_id", "nobody"));
    let mut wrong_redirect = authorize_query(&client_id, &challenge);
    wrong_redirect.retain(|(n, _)| *n != "redirect_uri");
    wrong_redirect.push(("redirect_uri", "http://127.0.0.1:9/callback/other"));
    for query in [unknown, wrong_redirect] {
        let response = http
            .get(format!("{}/authorize", demo.base_url()))
            .query(&query)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert!(response.headers().get(LOCATION).is_none());
        assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    }
}

#[tokio::test]
async fn bad_requests_from_a_known_client_redirect_with_errors() {
    let demo = start(DemoConfig::default()).await;
    let http = http();
    let client_id = register_public(&demo, &http).await;
    let (_, challenge) = pkce();
    let cases: [(&str, Option<&str>, &str); 4] = [
        ("code_challenge_method", Some("plain"), "invalid_request"),
        ("code_challenge", None, "invalid_request"),
        ("scope", Some("notes.delete"), "invalid_scope"),
        ("response_type", Some("token"), "unsupported_response_type"),
    ];
    for (name, value, error) in cases {
        let mut query = authorize_query(&client_id, &challenge);
        query.retain(|(n, _)| *n != name);
        if let Some(value) = value {
            query.push((name, value));
        }
        let response = http
            .get(format!("{}/authorize", demo.base_url()))
            .query(&query)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::FOUND, "{name}");
        let (_, params) = location_params(&response);
        assert_eq!(params["error"], error, "{name}");
        assert_eq!(params["state"], "st&te=1");
        assert_eq!(params["iss"], demo.base_url());
    }
}

#[tokio::test]
async fn deny_redirects_with_access_denied() {
    let demo = start(DemoConfig::default()).await;
    let http = http();
    let client_id = register_public(&demo, &http).await;
    let (_, challenge) = pkce();
    let fields = open_page(&demo, &http, &authorize_query(&client_id, &challenge)).await;
    let response = decide(&demo, &http, &fields, "", "deny").await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let (_, params) = location_params(&response);
    assert_eq!(params["error"], "access_denied");
    assert_eq!(params["state"], "st&te=1");
    assert_eq!(params["iss"], demo.base_url());
    assert!(!params.contains_key("code"));
}

#[tokio::test]
async fn consent_form_checks_its_csrf_token_and_fields() {
    let demo = start(DemoConfig::default()).await;
    let http = http();
    let client_id = register_public(&demo, &http).await;
    let (_, challenge) = pkce();
    let fields = open_page(&demo, &http, &authorize_query(&client_id, &challenge)).await;

    let forged: Vec<_> = fields
        .iter()
        .map(|(n, v)| (n.clone(), if n == "csrf" { "demo_csrf_forged".into() } else { v.clone() }))
        .collect();
    assert_eq!(
        decide(&demo, &http, &forged, "alice", "allow").await.status(),
        StatusCode::BAD_REQUEST
    );

    let tampered: Vec<_> = fields
        .iter()
        .map(|(n, v)| {
            (
                n.clone(),
                if n == "scope" {
                    "notes.read notes.write".into()
                } else {
                    v.clone()
                },
            )
        })
        .collect();
    assert_eq!(
        decide(&demo, &http, &tampered, "alice", "allow").await.status(),
        StatusCode::BAD_REQUEST
    );

    // A bad account name re-renders the page; the same token then still works, once.
    let retry = decide(&demo, &http, &fields, "no spaces", "allow").await;
    assert_eq!(retry.status(), StatusCode::BAD_REQUEST);
    assert!(retry.text().await.unwrap().contains("account name"));
    assert_eq!(
        decide(&demo, &http, &fields, "alice", "allow").await.status(),
        StatusCode::SEE_OTHER
    );
    assert_eq!(
        decide(&demo, &http, &fields, "alice", "allow").await.status(),
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test]
async fn mcp_without_token_is_401_with_resource_metadata() {
    let demo = start(DemoConfig::default()).await;
    let http = http();
    let body = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#;
    let response = mcp_raw(&demo, &http, None, body).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(response.headers()[WWW_AUTHENTICATE], resource_challenge(&demo).as_str());

    let response = mcp_raw(&demo, &http, Some("demo_at_made_up"), body).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        response.headers()[WWW_AUTHENTICATE],
        format!("{}, error=\"invalid_token\"", resource_challenge(&demo)).as_str()
    );
    assert_eq!(demo.stats().mcp_requests(), 2);
}

#[tokio::test]
async fn revoked_and_expired_tokens_are_401() {
    let demo = start(DemoConfig::default()).await;
    let http = http();
    let ping = r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#;

    // Revoking the refresh token ends the grant's access tokens too.
    let (client_id, body) = tokens(&demo, &http, "alice").await;
    let access = body["access_token"].as_str().unwrap();
    assert_eq!(mcp_raw(&demo, &http, Some(access), ping).await.status(), StatusCode::OK);
    let response = http
        .post(format!("{}/revoke", demo.base_url()))
        .form(&[
            ("client_id", client_id.as_str()),
            ("token", body["refresh_token"].as_str().unwrap()),
            ("token_type_hint", "refresh_token"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(demo.stats().revocations(), 1);
    let response = mcp_raw(&demo, &http, Some(access), ping).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(
        response.headers()[WWW_AUTHENTICATE]
            .to_str()
            .unwrap()
            .contains("invalid_token")
    );

    // Unknown tokens are "revoked" too, silently.
    let response = http
        .post(format!("{}/revoke", demo.base_url()))
        .form(&[("client_id", client_id.as_str()), ("token", "nonsense")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);

    // Expiry, and revoke_all.
    let (client_id, body) = tokens(&demo, &http, "alice").await;
    let access = body["access_token"].as_str().unwrap();
    demo.expire_access_tokens();
    assert_eq!(
        mcp_raw(&demo, &http, Some(access), ping).await.status(),
        StatusCode::UNAUTHORIZED
    );
    let rt = body["refresh_token"].as_str().unwrap();
    let refreshed: Value = token(
        &demo,
        &http,
        &[
            ("grant_type", "refresh_token"),
            ("client_id", &client_id),
            ("refresh_token", rt),
        ],
    )
    .await
    .json()
    .await
    .unwrap();
    let access = refreshed["access_token"].as_str().unwrap();
    assert_eq!(mcp_raw(&demo, &http, Some(access), ping).await.status(), StatusCode::OK);
    demo.revoke_all();
    assert_eq!(
        mcp_raw(&demo, &http, Some(access), ping).await.status(),
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn confidential_clients_authenticate_as_registered() {
    let demo = start(DemoConfig::default()).await;
    let http = http();
    let basic = register(&demo, &http, json!({ "redirect_uris": [REDIRECT] })).await;
    assert_eq!(basic["token_endpoint_auth_method"], "client_secret_basic");
    assert_eq!(basic["client_secret_expires_at"], 0);
    let id = basic["client_id"].as_str().unwrap();
    let secret = basic["client_secret"].as_str().unwrap();
    let (verifier, challenge) = pkce();
    let fields = open_page(&demo, &http, &authorize_query(id, &challenge)).await;
    let (_, params) = location_params(&decide(&demo, &http, &fields, "carol", "allow").await);
    let form = [
        ("grant_type", "authorization_code"),
        ("code", params["code"].as_str()),
        ("redirect_uri", REDIRECT),
        ("code_verifier", verifier.as_str()),
    ];
    let url = format!("{}/token", demo.base_url());

    let wrong = http
        .post(&url)
        .basic_auth(id, Some("wrong"))
        .form(&form)
        .send()
        .await
        .unwrap();
    assert!(wrong.headers()[WWW_AUTHENTICATE].to_str().unwrap().starts_with("Basic"));
    assert_oauth_error(wrong, StatusCode::UNAUTHORIZED, "invalid_client").await;
    let as_public = token(&demo, &http, &[&form[..], &[("client_id", id)]].concat()).await;
    assert_oauth_error(as_public, StatusCode::UNAUTHORIZED, "invalid_client").await;
    let as_post = token(
        &demo,
        &http,
        &[&form[..], &[("client_id", id), ("client_secret", secret)]].concat(),
    )
    .await;
    assert_oauth_error(as_post, StatusCode::UNAUTHORIZED, "invalid_client").await;

    let ok = http.post(&url).basic_auth(id, Some(secret)).form(&form).send().await.unwrap();
    assert_eq!(ok.status(), StatusCode::OK);

    let post = register(
        &demo,
        &http,
        json!({ "redirect_uris": [REDIRECT], "token_endpoint_auth_method": "client_secret_post" }),
    )
    .await;
    let revoke = http
        .post(format!("{}/revoke", demo.base_url()))
        .form(&[
            ("client_id", post["client_id"].as_str().unwrap()),
            ("client_secret", post["client_secret"].as_str().unwrap()),
            ("token", "whatever"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(revoke.status(), StatusCode::OK);
}

#[tokio::test]
async fn registration_rejects_bad_metadata() {
    let demo = start(DemoConfig::default()).await;
    let http = http();
    let cases = [
        (json!({}), "invalid_redirect_uri"),
        (json!({ "redirect_uris": ["not a url"] }), "invalid_redirect_uri"),
        (json!({ "redirect_uris": ["ftp://example.com/cb"] }), "invalid_redirect_uri"),
        (
            json!({ "redirect_uris": [REDIRECT], "token_endpoint_auth_method": "private_key_jwt" }),
            "invalid_client_metadata",
        ),
        (
            json!({ "redirect_uris": [REDIRECT], "grant_types": ["implicit"] }),
            "invalid_client_metadata",
        ),
    ];
    for (metadata, error) in cases {
        let response = http
            .post(format!("{}/register", demo.base_url()))
            .json(&metadata)
            .send()
            .await
            .unwrap();
        assert_oauth_error(response, StatusCode::BAD_REQUEST, error).await;
    }
    let public = register(
        &demo,
        &http,
        json!({ "redirect_uris": [REDIRECT], "token_endpoint_auth_method": "none", "client_name": "x" }),
    )
    .await;
    assert!(public.get("client_secret").is_none());
    assert_eq!(public["client_name"], "x");
    assert_eq!(public["redirect_uris"], json!([REDIRECT]));
    assert_eq!(demo.stats().registrations(), 1);
}

#[tokio::test]
async fn mcp_speaks_streamable_http_json_rpc() {
    let demo = start(DemoConfig::default()).await;
    let http = http();
    let (_, body) = tokens(&demo, &http, "alice").await;
    let at = body["access_token"].as_str().unwrap();

    let init = mcp(
        &demo,
        &http,
        at,
        json!({ "jsonrpc": "2.0", "id": "i", "method": "initialize",
        "params": { "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": { "name": "t", "version": "1" } } }),
    )
    .await;
    assert_eq!(init["result"]["protocolVersion"], "2025-06-18");
    assert_eq!(init["result"]["capabilities"], json!({ "tools": {} }));
    assert_eq!(init["result"]["serverInfo"]["name"], "gatehouse-demo");
    let init = mcp(
        &demo,
        &http,
        at,
        json!({ "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": { "protocolVersion": "2099-01-01" } }),
    )
    .await;
    assert_eq!(init["result"]["protocolVersion"], "2025-11-25");

    assert_eq!(
        mcp(&demo, &http, at, json!({ "jsonrpc": "2.0", "id": 2, "method": "ping" })).await["result"],
        json!({})
    );
    let list = mcp(&demo, &http, at, json!({ "jsonrpc": "2.0", "id": 3, "method": "tools/list" })).await;
    let names: Vec<_> = list["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["whoami", "echo", "add"]);
    for tool in list["result"]["tools"].as_array().unwrap() {
        assert!(tool["title"].is_string() && tool["description"].is_string());
        assert_eq!(tool["inputSchema"]["type"], "object");
    }

    let text = |v: &Value| v["result"]["content"][0]["text"].as_str().unwrap().to_owned();
    assert_eq!(
        text(&mcp(&demo, &http, at, call("echo", json!({ "text": "hi" }))).await),
        "hi"
    );
    assert_eq!(
        text(&mcp(&demo, &http, at, call("add", json!({ "a": 2, "b": 3 }))).await),
        "5"
    );
    assert_eq!(
        text(&mcp(&demo, &http, at, call("add", json!({ "a": 0.5, "b": 2 }))).await),
        "2.5"
    );
    let bad = mcp(&demo, &http, at, call("add", json!({ "a": "x" }))).await;
    assert_eq!(bad["result"]["isError"], true);
    let unknown = mcp(&demo, &http, at, call("nope", json!({}))).await;
    assert_eq!(unknown["error"]["code"], -32602);
    let unknown = mcp(
        &demo,
        &http,
        at,
        json!({ "jsonrpc": "2.0", "id": 4, "method": "resources/list" }),
    )
    .await;
    assert_eq!(unknown["error"]["code"], -32601);

    let notification = mcp_raw(
        &demo,
        &http,
        Some(at),
        r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
    )
    .await;
    assert_eq!(notification.status(), StatusCode::ACCEPTED);
    assert!(notification.text().await.unwrap().is_empty());
    let response = mcp_raw(&demo, &http, Some(at), r#"{"jsonrpc":"2.0","id":9,"result":{}}"#).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);

    let parse = mcp_raw(&demo, &http, Some(at), "{not json").await;
    assert_eq!(parse.status(), StatusCode::BAD_REQUEST);
    assert_eq!(parse.json::<Value>().await.unwrap()["error"]["code"], -32700);
    let batch = mcp_raw(&demo, &http, Some(at), r#"[{"jsonrpc":"2.0","id":1,"method":"ping"}]"#).await;
    assert_eq!(batch.status(), StatusCode::BAD_REQUEST);
    assert_eq!(batch.json::<Value>().await.unwrap()["error"]["code"], -32600);

    let discover = mcp_raw(
        &demo,
        &http,
        Some(at),
        r#"{"jsonrpc":"2.0","id":1,"method":"server/discover"}"#,
    )
    .await;
    assert_eq!(discover.status(), StatusCode::BAD_REQUEST);
    assert!(discover.text().await.unwrap().is_empty());

    for method in [reqwest::Method::GET, reqwest::Method::DELETE] {
        let response = http.request(method, demo.mcp_url()).bearer_auth(at).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    }
    let response = http
        .post(demo.mcp_url())
        .bearer_auth(at)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2026-07-28")
        .body(r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn mcp_requests_are_recorded_with_their_headers() {
    let demo = start(DemoConfig::default()).await;
    let http = http();
    mcp_raw(
        &demo,
        &http,
        Some("gh_gatehouse_token"),
        r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#,
    )
    .await;
    let recorded = demo.stats().recorded_requests();
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0].method, "POST");
    assert_eq!(recorded[0].header("Authorization"), Some("Bearer gh_gatehouse_token"));
    assert!(recorded[0].body.contains("ping"));
    assert!(demo.stats().any_header_contains("gh_gatehouse_token"));
    assert!(!demo.stats().any_header_contains("something else"));
}

#[tokio::test]
async fn token_endpoint_failure_knob_and_static_clients() {
    let demo = start(DemoConfig::default()).await;
    let http = http();
    demo.add_client(StaticClient {
        client_id: "static-app".into(),
        client_secret: Some("s3cret".into()),
        auth_method: TokenEndpointAuthMethod::ClientSecretPost,
        redirect_uris: vec![REDIRECT.into()],
        client_name: Some("Static".into()),
    })
    .unwrap();
    let (verifier, challenge) = pkce();
    let fields = open_page(&demo, &http, &authorize_query("static-app", &challenge)).await;
    let (_, params) = location_params(&decide(&demo, &http, &fields, "dave", "allow").await);
    let form = [
        ("grant_type", "authorization_code"),
        ("client_id", "static-app"),
        ("client_secret", "s3cret"),
        ("code", params["code"].as_str()),
        ("redirect_uri", REDIRECT),
        ("code_verifier", verifier.as_str()),
    ];
    demo.fail_next_token_requests(1);
    assert_oauth_error(
        token(&demo, &http, &form).await,
        StatusCode::SERVICE_UNAVAILABLE,
        "temporarily_unavailable",
    )
    .await;
    assert_eq!(token(&demo, &http, &form).await.status(), StatusCode::OK);
    assert_eq!(demo.stats().token_requests(), 2);
}

#[test]
fn hidden_fields_decode_entities() {
    let html = r#"<form><input type="hidden" name="state" value="a&#38;b&#34;c">
        <input type="text" name="account" value="x"><input type="hidden" name="csrf" value="t"></form>"#;
    assert_eq!(
        hidden_fields(html),
        vec![("state".into(), "a&b\"c".into()), ("csrf".into(), "t".into())]
    );
}

#[test]
fn pkce_challenge_matches_rfc_7636_example() {
    assert_eq!(
        pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
        "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
    );
}

#[tokio::test]
async fn openid_scope_adds_an_es256_id_token_that_verifies_with_the_jwks() {
    use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED, UnparsedPublicKey};

    let demo = start(DemoConfig::default()).await;
    let http = http();
    let base = demo.base_url();
    let get_json = |path: &str| {
        let request = http.get(format!("{base}{path}"));
        async move { request.send().await.unwrap().json::<Value>().await.unwrap() }
    };
    let discovery = get_json("/.well-known/openid-configuration").await;
    assert_eq!(discovery["issuer"], base);
    assert_eq!(discovery["jwks_uri"], format!("{base}/jwks"));
    assert_eq!(discovery["userinfo_endpoint"], format!("{base}/userinfo"));
    assert_eq!(discovery["id_token_signing_alg_values_supported"], json!(["ES256"]));
    assert_eq!(discovery["code_challenge_methods_supported"], json!(["S256"]));
    assert!(discovery["scopes_supported"].as_array().unwrap().contains(&json!("openid")));
    let metadata = get_json("/.well-known/oauth-authorization-server").await;
    assert_eq!(metadata["userinfo_endpoint"], format!("{base}/userinfo"));

    let client_id = register_public(&demo, &http).await;
    let (verifier, challenge) = pkce();
    let mut query = authorize_query(&client_id, &challenge);
    query.retain(|(name, _)| *name != "scope");
    query.push(("scope", "openid email notes.read"));
    query.push(("nonce", "n-0S6_WzA2Mj"));
    let fields = open_page(&demo, &http, &query).await;
    assert!(fields.contains(&("nonce".into(), "n-0S6_WzA2Mj".into())));
    let response = decide(&demo, &http, &fields, "alice", "allow").await;
    let (_, params) = location_params(&response);
    let body: Value = exchange(&demo, &http, &client_id, &params["code"], &verifier)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body["scope"], "openid email notes.read");
    let id_token = body["id_token"].as_str().expect("an id_token");

    let parts: Vec<&str> = id_token.split('.').collect();
    assert_eq!(parts.len(), 3);
    let decode = |part: &str| -> Value { serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap() };
    let header = decode(parts[0]);
    let claims = decode(parts[1]);
    assert_eq!(header["alg"], "ES256");
    let jwks = get_json("/jwks").await;
    let key = &jwks["keys"][0];
    assert_eq!((key["kty"].as_str(), key["crv"].as_str()), (Some("EC"), Some("P-256")));
    assert_eq!(key["kid"], header["kid"]);
    let mut point = vec![4u8];
    point.extend(URL_SAFE_NO_PAD.decode(key["x"].as_str().unwrap()).unwrap());
    point.extend(URL_SAFE_NO_PAD.decode(key["y"].as_str().unwrap()).unwrap());
    let signed = format!("{}.{}", parts[0], parts[1]);
    let signature = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
    UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &point)
        .verify(signed.as_bytes(), &signature)
        .expect("the ID token verifies with the published key");
    let mut forged = signed.into_bytes();
    forged[5] ^= 1;
    assert!(
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &point)
            .verify(&forged, &signature)
            .is_err()
    );

    assert_eq!(claims["iss"], base);
    assert_eq!(claims["sub"], "alice");
    assert_eq!(claims["aud"], client_id.as_str());
    assert_eq!(claims["nonce"], "n-0S6_WzA2Mj");
    assert_eq!(claims["email"], "alice@demo.test");
    let (iat, exp) = (claims["iat"].as_u64().unwrap(), claims["exp"].as_u64().unwrap());
    assert!(exp > iat);

    // Userinfo also answers a POST with the token in the form body (RFC 6750 §2.2).
    let access = body["access_token"].as_str().unwrap();
    let me: Value = http
        .post(format!("{base}/userinfo"))
        .form(&[("access_token", access)])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["preferred_username"], "alice");
    let both = http
        .post(format!("{base}/userinfo"))
        .bearer_auth(access)
        .form(&[("access_token", access)])
        .send()
        .await
        .unwrap();
    assert_eq!(both.status(), StatusCode::UNAUTHORIZED, "two token carriers are refused");

    // Without `openid` there is no ID token, and an unknown scope is still refused.
    let (_, plain) = tokens(&demo, &http, "bob").await;
    assert!(plain.get("id_token").is_none());
}
