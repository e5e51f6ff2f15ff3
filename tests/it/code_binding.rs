//! An authorization code is bound to everything its authorization request
//! named, proved over HTTP at the data plane's `/token` on both backends: the
//! client, the redirect URI (sent, and identical), the resource and the PKCE
//! verifier (OAuth 2.1 §4.1.3, RFC 7636 §4.6, RFC 8707 §2.2). Each refusal has
//! its exact status and OAuth error, and burns nothing: the rightful request
//! still redeems the code afterwards. Only a code presented again after it
//! was redeemed, with every binding right, is burnt, and takes what it
//! issued with it.

use reqwest::{Response, StatusCode};
use serde_json::Value;

use crate::store_test;
use crate::support::fleet::{
    AuthorizationCode, ClientAuth, Pkce, RegisteredClient, STATE, TestFleet, Tokens, approve, authorize_params, skip, start_flow,
};

/// A refused token request: the case, the form, the client authentication,
/// and the status and OAuth error expected.
type Refusal<'a> = (&'a str, Vec<(&'a str, &'a str)>, ClientAuth<'a>, StatusCode, &'a str);

/// Walks a flow for `client` (Skip, Approve): its code.
async fn code_for(fleet: &TestFleet, client: &RegisteredClient) -> AuthorizationCode {
    let browser = fleet.browser();
    let pkce = Pkce::new();
    let (flow_id, identity) = start_flow(fleet, &browser, 0, client, &pkce).await;
    let services = skip(fleet, &browser, 0, &flow_id, &identity.csrf()).await;
    approve(fleet, &browser, 0, client, &flow_id, &services.csrf(), &pkce).await
}

/// The form of an authorization_code grant; `None` leaves a parameter out.
fn code_form<'a>(
    code: &'a str,
    verifier: Option<&'a str>,
    redirect_uri: Option<&'a str>,
    resource: Option<&'a str>,
) -> Vec<(&'a str, &'a str)> {
    let mut form = vec![("grant_type", "authorization_code"), ("code", code)];
    for (name, value) in [
        ("code_verifier", verifier),
        ("redirect_uri", redirect_uri),
        ("resource", resource),
    ] {
        if let Some(value) = value {
            form.push((name, value));
        }
    }
    form
}

/// Asserts an RFC 6749 §5.2 error response: status, `error`, and no tokens.
async fn assert_refused(response: Response, status: StatusCode, error: &str, case: &str) {
    assert_eq!(response.status(), status, "{case}");
    assert_eq!(response.headers()["cache-control"], "no-store", "{case}");
    let body: Value = response.json().await.expect("JSON error body");
    assert_eq!(body["error"], error, "{case}: {body}");
    assert!(body.get("access_token").is_none(), "{case}: {body}");
}

/// Whether the grant behind `refresh_token` is alive: a refresh succeeds (and
/// rotates; the new refresh token is returned).
async fn refresh(fleet: &TestFleet, client: &RegisteredClient, refresh_token: &str) -> Result<String, String> {
    let response = fleet
        .token_raw(
            0,
            &[("grant_type", "refresh_token"), ("refresh_token", refresh_token)],
            &client.auth(),
        )
        .await;
    let status = response.status();
    let body: Value = response.json().await.expect("JSON body");
    match status {
        StatusCode::OK => Ok(body["refresh_token"].as_str().expect("rotated").to_owned()),
        _ => Err(body["error"].as_str().unwrap_or_default().to_owned()),
    }
}

store_test!(
    a_code_is_refused_with_any_other_binding_and_stays_usable_by_its_own_request,
    |db| async move {
        let fleet = TestFleet::builder().database(db).spawn().await;
        let client = fleet.register_public().await;
        let other = fleet.register_public().await;
        let confidential = fleet.register_confidential("client_secret_basic").await;
        let code = code_for(&fleet, &client).await;
        let resource = format!("{}/mcp", fleet.issuer);
        let (c, v, r) = (code.code.as_str(), code.verifier.as_str(), client.redirect_uri.as_str());
        let wrong_verifier = Pkce::new().verifier;
        // The registered loopback URI with another port: acceptable at /authorize
        // (RFC 8252 §7.3), but not the one this code was sent to.
        let other_port = r.replace(":33418/", ":33419/");
        assert_ne!(other_port, r);
        let trailing_slash = format!("{r}/");
        let confidential_auth = ClientAuth::Basic(
            &confidential.client_id,
            confidential.client_secret.as_deref().expect("secret"),
        );

        let refusals: Vec<Refusal<'_>> = vec![
            (
                "the code presented by another public client",
                code_form(c, Some(v), Some(r), None),
                ClientAuth::Public(&other.client_id),
                StatusCode::BAD_REQUEST,
                "invalid_grant",
            ),
            (
                "the code presented by another, authenticated, confidential client",
                code_form(c, Some(v), Some(r), None),
                confidential_auth,
                StatusCode::BAD_REQUEST,
                "invalid_grant",
            ),
            (
                "another redirect URI (the loopback port differs)",
                code_form(c, Some(v), Some(&other_port), None),
                client.auth(),
                StatusCode::BAD_REQUEST,
                "invalid_grant",
            ),
            (
                "another redirect URI (a trailing slash)",
                code_form(c, Some(v), Some(&trailing_slash), None),
                client.auth(),
                StatusCode::BAD_REQUEST,
                "invalid_grant",
            ),
            (
                "another redirect URI (another host)",
                code_form(c, Some(v), Some("https://attacker.example/callback"), None),
                client.auth(),
                StatusCode::BAD_REQUEST,
                "invalid_grant",
            ),
            (
                "no redirect URI, though /authorize sent one",
                code_form(c, Some(v), None, None),
                client.auth(),
                StatusCode::BAD_REQUEST,
                "invalid_grant",
            ),
            (
                "another resource",
                code_form(c, Some(v), Some(r), Some("https://other.example/mcp")),
                client.auth(),
                StatusCode::BAD_REQUEST,
                "invalid_target",
            ),
            (
                "a wrong PKCE verifier",
                code_form(c, Some(&wrong_verifier), Some(r), None),
                client.auth(),
                StatusCode::BAD_REQUEST,
                "invalid_grant",
            ),
            (
                "no PKCE verifier",
                code_form(c, None, Some(r), None),
                client.auth(),
                StatusCode::BAD_REQUEST,
                "invalid_request",
            ),
        ];
        for (case, form, auth, status, error) in refusals {
            let response = fleet.token_raw(0, &form, &auth).await;
            assert_refused(response, status, error, case).await;
        }

        // Nothing above consumed the code: its own request, with every binding, redeems it.
        let response = fleet
            .token_raw(0, &code_form(c, Some(v), Some(r), Some(&resource)), &client.auth())
            .await;
        let tokens = Tokens::from_response(response).await;
        let refresh_token = tokens.refresh_token.clone().expect("a refresh token");

        // Once redeemed, a presentation that fails another binding is refused
        // and revokes nothing (a stolen code without its verifier or client
        // cannot end the rightful grant)...
        for (case, form, auth) in [
            (
                "the redeemed code from another client",
                code_form(c, Some(v), Some(r), None),
                ClientAuth::Public(&other.client_id),
            ),
            (
                "the redeemed code with a wrong verifier",
                code_form(c, Some(&wrong_verifier), Some(r), None),
                client.auth(),
            ),
            (
                "the redeemed code without redirect_uri",
                code_form(c, Some(v), None, None),
                client.auth(),
            ),
        ] {
            let response = fleet.token_raw(0, &form, &auth).await;
            assert_refused(response, StatusCode::BAD_REQUEST, "invalid_grant", case).await;
        }
        let refresh_token = refresh(&fleet, &client, &refresh_token)
            .await
            .expect("the grant survives refusals that fail a binding");

        // ...while the code presented again with every binding right is burnt
        // and revokes what it issued (OAuth 2.1 §4.1.3, reuse of codes).
        let response = fleet
            .token_raw(0, &code_form(c, Some(v), Some(r), None), &client.auth())
            .await;
        assert_refused(response, StatusCode::BAD_REQUEST, "invalid_grant", "the code replayed").await;
        assert_eq!(
            refresh(&fleet, &client, &refresh_token).await,
            Err("invalid_grant".to_owned()),
            "the replay revoked the grant"
        );
        fleet.stop().await;
    }
);

store_test!(
    a_redirect_uri_left_out_of_authorize_may_be_left_out_of_token_but_not_changed,
    |db| async move {
        let fleet = TestFleet::builder().database(db).spawn().await;
        // One registered URI: OAuth 2.1 §4.1.1 lets /authorize leave redirect_uri out.
        let client = fleet.register_public().await;
        let code_without = || async {
            let browser = fleet.browser();
            let pkce = Pkce::new();
            let params: Vec<(String, String)> = authorize_params(&client, &pkce, STATE)
                .into_iter()
                .filter(|(name, _)| name != "redirect_uri")
                .collect();
            let flow_id = browser.authorize(fleet.url(0), &params).await;
            let identity = browser.page(&format!("{}/consent/{flow_id}/identity", fleet.url(0))).await;
            let services = skip(&fleet, &browser, 0, &flow_id, &identity.csrf()).await;
            approve(&fleet, &browser, 0, &client, &flow_id, &services.csrf(), &pkce).await
        };

        let code = code_without().await;
        let other_port = client.redirect_uri.replace(":33418/", ":33419/");
        let response = fleet
            .token_raw(
                0,
                &code_form(&code.code, Some(&code.verifier), Some(&other_port), None),
                &client.auth(),
            )
            .await;
        assert_refused(
            response,
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "another redirect URI than the one the code went to",
        )
        .await;
        let response = fleet
            .token_raw(0, &code_form(&code.code, Some(&code.verifier), None, None), &client.auth())
            .await;
        assert_eq!(response.status(), StatusCode::OK, "left out at both ends");

        // Naming the one it went to is fine too.
        let code = code_without().await;
        let response = fleet
            .token_raw(
                0,
                &code_form(&code.code, Some(&code.verifier), Some(&client.redirect_uri), None),
                &client.auth(),
            )
            .await;
        assert_eq!(response.status(), StatusCode::OK, "the registered URI named at /token");
        fleet.stop().await;
    }
);
