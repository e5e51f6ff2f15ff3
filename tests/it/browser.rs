//! A person clicks through the consent pages in Debian's chromium (driven by
//! playwright-core): identity (Skip) → services → Connect → the demo upstream's
//! consent page → Approve. Screenshots of each page go to `tests/artifacts/browser/`.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest as _, Sha256};

use crate::support::tools;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn person_consents_connects_the_demo_service_and_approves_in_chromium() {
    let Some(node) = tools::node_with_playwright() else { return };
    let (_dir, running) = crate::support::up::start().await;
    let base = running.public_url.clone();
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();

    // The application: a public client with a loopback redirect URI, PKCE S256.
    let redirect_uri = "http://127.0.0.1:9/callback";
    let registered: serde_json::Value = http
        .post(format!("{base}/register"))
        .json(&serde_json::json!({
            "client_name": "Browser test app",
            "redirect_uris": [redirect_uri],
            "token_endpoint_auth_method": "none",
        }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let client_id = registered["client_id"].as_str().unwrap().to_string();
    let verifier = "browser-test-verifier-0123456789-abcdefghijklmnopqrstuvwxyz";
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    let mut authorize = url::Url::parse(&format!("{base}/authorize")).unwrap();
    authorize
        .query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", &client_id)
        .append_pair("redirect_uri", redirect_uri)
        .append_pair("state", "state-from-the-app")
        .append_pair("code_challenge", &challenge)
        .append_pair("code_challenge_method", "S256")
        .append_pair("scope", "mcp");

    let artifacts = tools::repo().join("tests/artifacts/browser");
    let output = tokio::process::Command::new(node)
        .arg(tools::repo().join("tests/browser/consent.mjs"))
        .env("AUTHORIZE_URL", authorize.as_str())
        .env("REDIRECT_URI", redirect_uri)
        .env("SERVICE", "Demo Notes")
        .env("ACCOUNT", "alice")
        .env("ARTIFACTS", &artifacts)
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "the browser run failed (screenshots in {}):\n{}",
        artifacts.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    let response: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(response["state"], "state-from-the-app");
    assert_eq!(response["iss"], base.as_str());
    for page in [
        "identity",
        "services",
        "upstream-consent",
        "services-connected",
        "back-in-the-application",
    ] {
        let saved = std::fs::read_dir(&artifacts)
            .unwrap()
            .any(|e| e.unwrap().file_name().to_string_lossy().ends_with(&format!("-{page}.png")));
        assert!(saved, "a screenshot of the {page} page");
    }

    // The application redeems the code.
    let tokens: serde_json::Value = http
        .post(format!("{base}/token"))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", response["code"].as_str().unwrap()),
            ("redirect_uri", redirect_uri),
            ("client_id", &client_id),
            ("code_verifier", verifier),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(tokens["access_token"].as_str().unwrap().starts_with("gh_at_"), "{tokens}");

    // The demo connection now belongs to the identity the person chose.
    let connections = running
        .control_plane
        .core()
        .store
        .list_connections(None, Some("demo"))
        .await
        .unwrap();
    assert_eq!(connections.len(), 1);
    assert_eq!(connections[0].account, "alice");
    assert!(
        connections[0].identity_id.is_some(),
        "approve moved the connection to the identity"
    );
    running.shutdown().await;
}
