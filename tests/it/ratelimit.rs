//! Limits: request rates per client address and per client id (429 with
//! `Retry-After`), and body sizes on every endpoint (413).

use reqwest::StatusCode;
use serde_json::json;

use crate::support::fleet::TestFleet;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_spam_from_one_address_gets_429_with_retry_after() {
    let fleet = TestFleet::builder()
        .data_plane(|config| config.rate_limits.per_address_per_minute = 5)
        .spawn()
        .await;
    let metadata = json!({ "redirect_uris": ["http://127.0.0.1:9/cb"], "token_endpoint_auth_method": "none" });
    for _ in 0..5 {
        assert_eq!(fleet.register_raw(&metadata).await.status(), StatusCode::CREATED);
    }
    let refused = fleet.register_raw(&metadata).await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = refused.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    let body: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(body["error"], "temporarily_unavailable");
    // The same address is limited on /authorize and /token too; discovery is not.
    assert_eq!(
        fleet
            .http()
            .get(format!("{}/authorize", fleet.url(0)))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    let metadata_doc = fleet
        .http()
        .get(format!("{}/.well-known/oauth-authorization-server", fleet.url(0)))
        .send()
        .await
        .unwrap();
    assert_eq!(metadata_doc.status(), StatusCode::OK);
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_client_id_over_its_rate_is_refused_without_starving_the_others() {
    let fleet = TestFleet::builder()
        .data_plane(|config| {
            config.rate_limits.per_address_per_minute = 1000;
            config.rate_limits.per_client_per_minute = 3;
        })
        .spawn()
        .await;
    let noisy = fleet.register_public().await;
    let quiet = fleet.register_public().await;
    let token = |client_id: String| {
        let http = fleet.http();
        let url = format!("{}/token", fleet.url(0));
        async move {
            http.post(url)
                .form(&[
                    ("grant_type", "authorization_code"),
                    ("code", "nope"),
                    ("client_id", &client_id),
                ])
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    for _ in 0..3 {
        assert_eq!(
            token(noisy.client_id.clone()).await,
            StatusCode::BAD_REQUEST,
            "an ordinary refusal"
        );
    }
    assert_eq!(token(noisy.client_id.clone()).await, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        token(quiet.client_id.clone()).await,
        StatusCode::BAD_REQUEST,
        "another client is not affected"
    );
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_bodies_are_refused_on_every_endpoint() {
    let fleet = TestFleet::builder()
        .data_plane(|config| config.max_body_bytes = 4096)
        .spawn()
        .await;
    let big = "x".repeat(8192);
    for path in [
        "/register",
        "/token",
        "/revoke",
        "/mcp",
        "/consent/flw_x/identity",
        "/connect/gh_cl_x",
    ] {
        let response = fleet
            .http()
            .post(format!("{}{path}", fleet.url(0)))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(big.clone())
            .send()
            .await
            .unwrap();
        assert!(
            [StatusCode::PAYLOAD_TOO_LARGE, StatusCode::UNAUTHORIZED].contains(&response.status()),
            "{path}: {}",
            response.status()
        );
        if path != "/mcp" {
            assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE, "{path}");
        }
    }
    fleet.stop().await;
}
