//! Properties over generated input at public entry points (SECURITY.md): the
//! Client ID Metadata Document parser through `clients::get` against a real
//! server, and the JSON-RPC envelope of `/mcp` over HTTP. The parsers inside the
//! planes have their own properties in `#[cfg(test)]` modules (`clients`,
//! `grants`, `flows`; `oauth::{params, authorize, token}`, `consent::{cookie,
//! csrf}`). Failures are kept in `proptest-regressions/` and replayed first.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use gatehouse_control_plane::clients::{self, AuthMethod, ClientError, ClientKind, ClientsConfig};
use gatehouse_control_plane::clock::TestClock;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use reqwest::{StatusCode, header};
use serde_json::Value;

use crate::support::fleet::{Pkce, TestFleet, approve, skip, start_flow};
use crate::support::http_fixture::{HttpFixture, Reply};
use crate::support::{Backend, TestControlPlane, TestDb};

/// proptest's default of 256 cases (`PROPTEST_CASES` raises it), failures kept beside this file.
fn runner() -> TestRunner {
    TestRunner::new(Config {
        source_file: Some(file!()),
        ..Config::default()
    })
}

/// Any JSON value, nested a few levels.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::from),
        any::<String>().prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map("[a-z_]{1,12}", inner, 0..4).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A value for one metadata member: usually plausible, sometimes anything.
fn member(plausible: impl Strategy<Value = Value> + 'static) -> impl Strategy<Value = Option<Value>> {
    prop::option::weighted(0.95, prop_oneof![12 => plausible.boxed(), 1 => any_json().boxed()])
}

/// A metadata document as bytes, for the document at `own` (its URL).
fn metadata_document(own: String) -> impl Strategy<Value = Vec<u8>> {
    let good = prop::sample::select(vec![
        "http://127.0.0.1:33418/callback",
        "https://app.example/cb",
        "cursor://app/cb",
    ]);
    let bad = prop::sample::select(vec![
        "javascript:alert(1)",
        "https://app.example/cb#frag",
        "http://evil.example/cb",
        "data:text/html,x",
    ]);
    let redirect = prop_oneof![12 => good, 1 => bad].prop_map(Value::from);
    let own_id = own.clone();
    let structured = (
        member(prop_oneof![6 => Just(Value::from(own_id)), 1 => "https://[a-z]{1,6}\\.example/[a-z]{1,6}".prop_map(Value::from)]),
        member("\\PC{0,30}".prop_map(Value::from)),
        member(prop::collection::vec(redirect, 1..4).prop_map(Value::from)),
        member(
            prop_oneof![6 => Just("none"), 1 => prop::sample::select(vec!["client_secret_basic", "private_key_jwt", ""])]
                .prop_map(Value::from),
        ),
        member(
            prop::collection::vec(
                prop_oneof![6 => prop::sample::select(vec!["authorization_code", "refresh_token"]), 1 => Just("implicit")],
                0..3,
            )
            .prop_map(Value::from),
        ),
        prop::option::weighted(0.05, any::<String>()),
        prop::option::weighted(0.05, 4_000usize..7_000),
    )
        .prop_map(|(client_id, name, redirect_uris, auth, grants, secret, padding)| {
            let mut doc = serde_json::Map::new();
            for (key, value) in [
                ("client_id", client_id),
                ("client_name", name),
                ("redirect_uris", redirect_uris),
                ("token_endpoint_auth_method", auth),
                ("grant_types", grants),
                ("client_secret", secret.map(Value::from)),
                ("padding", padding.map(|n| Value::from("x".repeat(n)))),
            ] {
                if let Some(value) = value {
                    doc.insert(key.to_owned(), value);
                }
            }
            Value::Object(doc).to_string().into_bytes()
        });
    prop_oneof![
        8 => structured,
        1 => any_json().prop_map(|v| v.to_string().into_bytes()),
        1 => prop::collection::vec(any::<u8>(), 0..300),
    ]
}

#[test]
fn any_metadata_document_is_refused_or_yields_a_checked_public_client() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let body: Arc<Mutex<Vec<u8>>> = Arc::default();
    let served = body.clone();
    let (docs, db) = runtime.block_on(async move {
        let docs = HttpFixture::start(move |_, _| Reply::Bytes(served.lock().unwrap().clone())).await;
        (docs, TestDb::new(Backend::Sqlite).await)
    });
    let cp = runtime.block_on(TestControlPlane::start_configured(
        &db,
        Arc::new(TestClock::default()),
        |config| config.outbound.allow_loopback = true,
    ));
    let core = cp.core().clone();
    let config = ClientsConfig::default();
    // Each case names a document of its own, so no answer comes from the cache.
    let case = AtomicUsize::new(0);
    let base = docs.base.clone();
    let strategy = (0..1u8).prop_flat_map(move |_| {
        let own = format!("{base}/doc/{}.json", case.fetch_add(1, Ordering::SeqCst));
        (Just(own.clone()), metadata_document(own))
    });
    let accepted = AtomicUsize::new(0);
    let result = runner().run(&strategy, |(url, document)| {
        *body.lock().unwrap() = document.clone();
        let text = String::from_utf8_lossy(&document);
        match runtime.block_on(clients::get(&core, &url)) {
            Ok(client) => {
                accepted.fetch_add(1, Ordering::SeqCst);
                prop_assert_eq!(&client.client_id, &url, "the document names itself: {}", text);
                prop_assert_eq!(client.kind, ClientKind::MetadataDocument);
                prop_assert_eq!(client.auth_method, AuthMethod::None, "a public client: {}", text);
                prop_assert!(client.secret_hash.is_none());
                prop_assert!(!client.client_name.trim().is_empty(), "{}", text);
                prop_assert!(!client.redirect_uris.is_empty(), "{}", text);
                for uri in &client.redirect_uris {
                    prop_assert!(clients::check_redirect_uri(uri, &config).is_ok(), "{} in {}", uri, text);
                }
                prop_assert!(
                    document.len() <= clients::MAX_METADATA_DOCUMENT_BYTES,
                    "{} bytes",
                    document.len()
                );
                prop_assert!(!text.contains("client_secret\""), "a document with a secret: {}", text);
            }
            Err(ClientError::MetadataDocument { .. }) => {}
            Err(other) => prop_assert!(false, "{:?} for {}", other, text),
        }
        Ok(())
    });
    if let Err(failure) = result {
        panic!("{failure}");
    }
    let accepted = accepted.into_inner();
    assert!(
        accepted >= 10,
        "{accepted} generated documents were valid: acceptance is exercised too little"
    );
    runtime.block_on(cp.stop());
    drop(docs);
}

/// A JSON-RPC message as an MCP client (or an attacker) might send it.
fn jsonrpc_body() -> impl Strategy<Value = Vec<u8>> {
    let id = prop_oneof![
        any::<i64>().prop_map(Value::from),
        "\\PC{0,10}".prop_map(Value::from),
        Just(Value::Null),
        any_json(),
    ];
    let method = prop_oneof![
        prop::sample::select(vec![
            "initialize",
            "tools/list",
            "tools/call",
            "prompts/list",
            "resources/list",
            "ping",
            "notifications/initialized",
            "notifications/cancelled",
            "",
        ])
        .prop_map(Value::from),
        any_json(),
    ];
    let message = (
        prop::option::weighted(0.9, prop_oneof![Just(Value::from("2.0")), any_json()]),
        prop::option::weighted(0.8, id),
        prop::option::weighted(0.9, method),
        prop::option::weighted(0.6, any_json()),
    )
        .prop_map(|(jsonrpc, id, method, params)| {
            let mut object = serde_json::Map::new();
            for (key, value) in [("jsonrpc", jsonrpc), ("id", id), ("method", method), ("params", params)] {
                if let Some(value) = value {
                    object.insert(key.to_owned(), value);
                }
            }
            Value::Object(object)
        })
        .boxed();
    prop_oneof![
        6 => message.clone().prop_map(|m| m.to_string().into_bytes()),
        1 => prop::collection::vec(message, 0..4).prop_map(|batch| Value::from(batch).to_string().into_bytes()),
        1 => any_json().prop_map(|v| v.to_string().into_bytes()),
        1 => prop::collection::vec(any::<u8>(), 0..200),
    ]
}

#[test]
fn any_body_at_mcp_gets_an_answer_never_a_server_error() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (fleet, access_token) = runtime.block_on(async {
        let fleet = TestFleet::start(1).await;
        let client = fleet.register_public().await;
        let browser = fleet.browser();
        let pkce = Pkce::new();
        let (flow_id, identity) = start_flow(&fleet, &browser, 0, &client, &pkce).await;
        let services = skip(&fleet, &browser, 0, &flow_id, &identity.csrf()).await;
        let code = approve(&fleet, &browser, 0, &client, &flow_id, &services.csrf(), &pkce).await;
        let tokens = fleet.exchange_code(0, &client, &code).await;
        (fleet, tokens.access_token)
    });
    let url = format!("{}/mcp", fleet.url(0));
    let http = fleet.http();
    let version = prop::option::of(prop::sample::select(vec![
        "2025-06-18",
        "2025-11-25",
        "2026-07-28",
        "1999-01-01",
    ]));
    let answered = AtomicUsize::new(0);
    let result = runner().run(&(jsonrpc_body(), version), |(body, version)| {
        let text = String::from_utf8_lossy(&body).into_owned();
        let mut request = http
            .post(&url)
            .bearer_auth(&access_token)
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::ACCEPT, "application/json, text/event-stream")
            .body(body);
        if let Some(version) = version {
            request = request.header("mcp-protocol-version", version);
        }
        let response = runtime.block_on(request.send());
        let response = match response {
            Ok(response) => response,
            Err(err) => return Err(TestCaseError::fail(format!("no answer ({err}) to {text}"))),
        };
        let status = response.status();
        let answer = runtime.block_on(response.text()).unwrap_or_default();
        prop_assert!(
            !status.is_server_error(),
            "{} for {} with version {:?}: {}",
            status,
            text,
            version,
            answer
        );
        if status.is_success() {
            answered.fetch_add(1, Ordering::SeqCst);
        }
        if status == StatusCode::OK && answer.starts_with('{') {
            prop_assert!(serde_json::from_str::<Value>(&answer).is_ok(), "not JSON: {}", answer);
        }
        Ok(())
    });
    if let Err(failure) = result {
        panic!("{failure}");
    }
    assert!(
        answered.into_inner() > 0,
        "some generated messages are valid, so the gateway is reached too"
    );
    runtime.block_on(fleet.stop());
}
