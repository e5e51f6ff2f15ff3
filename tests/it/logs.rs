//! Secrets never reach the log: `gatehouse up` runs as an operator would run
//! it, with `RUST_LOG=trace` for every crate, while a whole flow goes through
//! it (registration, authorize, Skip, connecting the demo upstream, approve,
//! token, `/mcp`, refresh, revoke, and a virtual-key flow of a confidential
//! client). Then its whole log is searched for every secret the test saw or
//! can read back from the vault.

use std::sync::{Arc, Mutex};

use gatehouse::admin_client::GrpcClient;
use gatehouse::pb::CreateVirtualKeyRequest;
use gatehouse_control_plane::store::connections;
use gatehouse_control_plane::vault::{Aad, KeySource, Vault};
use reqwest::StatusCode;
use reqwest::header;
use serde_json::{Value, json};
use sqlx::Connection as _;
use sqlx::Row as _;

use crate::support::fleet::{
    Browser, Pkce, RegisteredClient, STATE, allow_at_demo, authorize_params, basic_authorization, follow_onward, location,
    query_of,
};
use crate::support::up_process::UpProcess;

/// The secrets a test saw, each with what it is.
#[derive(Default)]
struct Secrets(Vec<(String, String)>);

impl Secrets {
    fn add(&mut self, what: &str, value: impl Into<String>) {
        let value = value.into();
        assert!(value.len() >= 16, "{what} is too short to search for: {value:?}");
        self.0.push((what.to_owned(), value));
    }
}

/// The value of query parameter `name` of `url`.
fn param(url: &str, name: &str) -> String {
    query_of(url)
        .remove(name)
        .and_then(|mut values| values.pop())
        .unwrap_or_else(|| panic!("{url} has no {name}"))
}

async fn json_of(response: reqwest::Response) -> Value {
    let status = response.status();
    let body: Value = response.json().await.expect("JSON");
    assert!(status.is_success(), "{status}: {body}");
    body
}

/// A flow on `browser` up to its services page: (flow id, CSRF token).
async fn open_flow(
    secrets: &mut Secrets,
    base: &str,
    browser: &Browser,
    client: &RegisteredClient,
    pkce: &Pkce,
) -> (String, String) {
    let flow_id = browser.authorize(base, &authorize_params(client, pkce, STATE)).await;
    let cookie = browser.cookie("gatehouse-flow").expect("flow cookie");
    secrets.add("browser secret (flow cookie)", cookie.split_once('~').expect("id~secret").1);
    let identity = browser.page(&format!("{base}/consent/{flow_id}/identity")).await;
    let csrf = identity.csrf();
    secrets.add("CSRF token", csrf.clone());
    secrets.add("PKCE verifier", pkce.verifier.clone());
    (flow_id, csrf)
}

/// Approves and returns the code.
async fn approve(secrets: &mut Secrets, base: &str, browser: &Browser, flow_id: &str, csrf: &str) -> String {
    let to = browser
        .post_see_other(&format!("{base}/consent/{flow_id}/approve"), &[("csrf", csrf)])
        .await;
    let code = param(&to, "code");
    secrets.add("authorization code", code.clone());
    code
}

/// `POST /token` with `form`; Basic credentials when given. Returns (access, refresh).
async fn token(
    secrets: &mut Secrets,
    http: &reqwest::Client,
    base: &str,
    form: &[(&str, &str)],
    basic: Option<&str>,
) -> (String, String) {
    let mut request = http.post(format!("{base}/token")).form(form);
    if let Some(basic) = basic {
        request = request.header(header::AUTHORIZATION, basic);
    }
    let body = json_of(request.send().await.expect("/token")).await;
    let access = body["access_token"].as_str().expect("access_token").to_owned();
    let refresh = body["refresh_token"].as_str().expect("refresh_token").to_owned();
    secrets.add("access token", access.clone());
    secrets.add("refresh token", refresh.clone());
    (access, refresh)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_the_log_at_trace_level() {
    let dir = tempfile::tempdir().unwrap();
    let up = UpProcess::start(dir.path(), "trace");
    let base = up.public_url.clone();
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let mut secrets = Secrets::default();
    secrets.add("admin credential", up.admin_credential.clone());

    // Registration: a public client, and a confidential one with a secret.
    let register = |metadata: Value| {
        let http = http.clone();
        let url = format!("{base}/register");
        async move { json_of(http.post(url).json(&metadata).send().await.expect("/register")).await }
    };
    let public = register(json!({
        "client_name": "Log test client",
        "redirect_uris": ["http://127.0.0.1:33418/callback"],
        "token_endpoint_auth_method": "none",
    }))
    .await;
    let public = RegisteredClient {
        client_id: public["client_id"].as_str().unwrap().to_owned(),
        client_secret: None,
        redirect_uri: "http://127.0.0.1:33418/callback".to_owned(),
    };
    let confidential = register(json!({
        "client_name": "Log test confidential client",
        "redirect_uris": ["https://app.example.com/callback"],
        "token_endpoint_auth_method": "client_secret_basic",
    }))
    .await;
    let confidential = RegisteredClient {
        client_id: confidential["client_id"].as_str().unwrap().to_owned(),
        client_secret: Some(confidential["client_secret"].as_str().unwrap().to_owned()),
        redirect_uri: "https://app.example.com/callback".to_owned(),
    };
    let client_secret = confidential.client_secret.clone().unwrap();
    secrets.add("client secret", client_secret.clone());

    // A flow with Skip that connects the demo upstream.
    let browser = Browser::new();
    let pkce = Pkce::new();
    let (flow_id, csrf) = open_flow(&mut secrets, &base, &browser, &public, &pkce).await;
    let to = browser
        .post_see_other(
            &format!("{base}/consent/{flow_id}/identity"),
            &[("csrf", csrf.as_str()), ("choice", "skip")],
        )
        .await;
    assert_eq!(to, format!("/consent/{flow_id}/services"));
    let response = browser
        .post_raw(
            &format!("{base}/consent/{flow_id}/connect"),
            &[("csrf", csrf.as_str()), ("service", "demo")],
        )
        .await;
    let upstream_url = follow_onward(&browser, response).await;
    secrets.add("upstream state", param(&upstream_url, "state"));
    let callback = allow_at_demo(&browser, &up.demo_base, &upstream_url, "alice").await;
    secrets.add("upstream authorization code", param(&callback, "code"));
    let response = browser.get_raw(&callback).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&response), format!("/consent/{flow_id}/services"));
    let code = approve(&mut secrets, &base, &browser, &flow_id, &csrf).await;

    // The client's token, a call through the gateway, refresh and revocation.
    let (access, refresh) = token(
        &mut secrets,
        &http,
        &base,
        &[
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("code_verifier", pkce.verifier.as_str()),
            ("redirect_uri", public.redirect_uri.as_str()),
            ("client_id", public.client_id.as_str()),
        ],
        None,
    )
    .await;
    let response = http
        .post(format!("{base}/mcp"))
        .bearer_auth(&access)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::ACCEPT, "application/json, text/event-stream")
        .body(r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#)
        .send()
        .await
        .expect("/mcp");
    assert_eq!(response.status(), StatusCode::OK, "tools/list through the gateway");
    let tools = response.text().await.unwrap();
    assert!(
        tools.contains("demo__"),
        "the demo's tools are listed, so its token was used: {tools}"
    );
    let (_, rotated_refresh) = token(
        &mut secrets,
        &http,
        &base,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh.as_str()),
            ("client_id", public.client_id.as_str()),
        ],
        None,
    )
    .await;
    let response = http
        .post(format!("{base}/revoke"))
        .form(&[("token", rotated_refresh.as_str()), ("client_id", public.client_id.as_str())])
        .send()
        .await
        .expect("/revoke");
    assert_eq!(response.status(), StatusCode::OK);
    // Refused requests carry secrets too: a reused refresh token, a token in a query string.
    let response = http
        .post(format!("{base}/token"))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh.as_str()),
            ("client_id", public.client_id.as_str()),
        ])
        .send()
        .await
        .expect("/token");
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let response = http
        .post(format!("{base}/mcp?access_token={access}"))
        .body("{}")
        .send()
        .await
        .expect("/mcp");
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);

    // A virtual key, a wrong one typed first, and the confidential client with Basic.
    let admin = GrpcClient::connect(&up.grpc_url, &up.admin_credential).await.unwrap();
    let key = admin
        .admin()
        .create_virtual_key(CreateVirtualKeyRequest { name: "alice".into() })
        .await
        .unwrap()
        .into_inner()
        .secret;
    secrets.add("virtual key", key.clone());
    let typo = format!("{key}-typo");
    secrets.add("mistyped virtual key", typo.clone());
    let browser = Browser::new();
    let pkce = Pkce::new();
    let (flow_id, csrf) = open_flow(&mut secrets, &base, &browser, &confidential, &pkce).await;
    let identity_url = format!("{base}/consent/{flow_id}/identity");
    let response = browser
        .post_raw(
            &identity_url,
            &[
                ("csrf", csrf.as_str()),
                ("choice", "virtual_key"),
                ("virtual_key", typo.as_str()),
            ],
        )
        .await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    browser
        .post_see_other(
            &identity_url,
            &[
                ("csrf", csrf.as_str()),
                ("choice", "virtual_key"),
                ("virtual_key", key.as_str()),
            ],
        )
        .await;
    let code = approve(&mut secrets, &base, &browser, &flow_id, &csrf).await;
    let basic = basic_authorization(&confidential.client_id, &client_secret);
    token(
        &mut secrets,
        &http,
        &base,
        &[
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("code_verifier", pkce.verifier.as_str()),
            ("redirect_uri", confidential.redirect_uri.as_str()),
        ],
        Some(&basic),
    )
    .await;
    // A wrong client secret in Basic.
    let wrong_secret = format!("{client_secret}-wrong");
    secrets.add("wrong client secret", wrong_secret.clone());
    let response = http
        .post(format!("{base}/token"))
        .header(
            header::AUTHORIZATION,
            basic_authorization(&confidential.client_id, &wrong_secret),
        )
        .form(&[("grant_type", "refresh_token"), ("refresh_token", "gh_rt_x")])
        .send()
        .await
        .expect("/token");
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);

    let log = up.stop();

    // What only the vault knows: the upstream's tokens, Gatehouse's client secret
    // there, and the PKCE verifier Gatehouse sent it; and the vault key itself.
    let key_file = dir.path().join("vault.keys");
    for line in std::fs::read_to_string(&key_file).unwrap().lines() {
        if let Some((_, key)) = line.split('#').next().unwrap().trim().split_once(char::is_whitespace) {
            secrets.add("vault key", key.trim());
        }
    }
    let vault = Vault::load(KeySource::File(key_file)).unwrap();
    let mut db = sqlx::SqliteConnection::connect(&format!("sqlite://{}", dir.path().join("gatehouse.db").display()))
        .await
        .unwrap();
    let rows = sqlx::query("SELECT id, identity_id, flow_id, service, access_ct, refresh_ct FROM connections")
        .fetch_all(&mut db)
        .await
        .unwrap();
    assert_eq!(rows.len(), 1, "the demo connection");
    for row in rows {
        let id: String = row.get(0);
        let owner = connections::owner(
            row.get::<Option<String>, _>(1).as_deref(),
            row.get::<Option<String>, _>(2).as_deref(),
        );
        let service: String = row.get(3);
        let open = |field, blob: &[u8]| {
            vault
                .open_secret(connections::aad(field, &id, &owner, &service), blob)
                .unwrap()
                .expose()
                .to_owned()
        };
        secrets.add("upstream access token", open("access_ct", &row.get::<Vec<u8>, _>(4)));
        secrets.add(
            "upstream refresh token",
            open("refresh_ct", &row.get::<Option<Vec<u8>>, _>(5).expect("a refresh token")),
        );
    }
    for row in sqlx::query("SELECT service, secret_ct FROM upstream_clients")
        .fetch_all(&mut db)
        .await
        .unwrap()
    {
        let service: String = row.get(0);
        if let Some(blob) = row.get::<Option<Vec<u8>>, _>(1) {
            let aad = Aad {
                table: "upstream_clients",
                field: "secret_ct",
                row_id: &service,
                identity: "",
                service: &service,
            };
            secrets.add(
                "Gatehouse's client secret at the upstream",
                vault.open_secret(aad, &blob).unwrap().expose(),
            );
        }
    }
    for row in sqlx::query("SELECT state_hash, service, verifier_ct FROM upstream_attempts")
        .fetch_all(&mut db)
        .await
        .unwrap()
    {
        let (state_hash, service): (String, String) = (row.get(0), row.get(1));
        let aad = Aad {
            table: "upstream_attempts",
            field: "verifier_ct",
            row_id: &state_hash,
            identity: "",
            service: &service,
        };
        secrets.add(
            "upstream PKCE verifier",
            vault.open_secret(aad, &row.get::<Vec<u8>, _>(2)).unwrap().expose(),
        );
    }

    // The search means something only if the log is the trace log of this flow.
    assert!(log.contains("TRACE"), "the log is at trace level");
    assert!(log.contains("/consent/") && log.contains("/token"), "the log covers the flow");
    assert!(
        log.contains(&confidential.client_id),
        "the log is searchable: the refused client authentication names its client (ids are not secret)"
    );
    let leaks: Vec<String> = secrets
        .0
        .iter()
        .filter(|(_, value)| log.contains(value.as_str()))
        .map(|(what, value)| {
            let at = log.find(value.as_str()).unwrap();
            let mut start = log[..at].rfind('\n').map_or(0, |i| i + 1).max(at.saturating_sub(300));
            while !log.is_char_boundary(start) {
                start -= 1;
            }
            let mut end = log[at..].find('\n').map_or(log.len(), |i| at + i).min(at + value.len() + 300);
            while !log.is_char_boundary(end) {
                end += 1;
            }
            format!("{what}:\n    {}", &log[start..end])
        })
        .collect();
    assert!(
        leaks.is_empty(),
        "{} of {} secrets reached the log ({} bytes):\n{}",
        leaks.len(),
        secrets.0.len(),
        log.len(),
        leaks.join("\n")
    );
}

// === Correlation: request ids and traces across the planes ===

/// The client's trace: `traceparent` it sends, and its trace id.
const CLIENT_TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN_ID: &str = "00f067aa0ba902b7";

/// `POST /register` (one control-plane call) with the client's `traceparent`;
/// returns the `x-request-id` the data plane answered with.
async fn register_with_trace(base: &str) -> String {
    let response = reqwest::Client::new()
        .post(format!("{base}/register"))
        .header("traceparent", format!("00-{CLIENT_TRACE_ID}-{CLIENT_SPAN_ID}-01"))
        .json(&json!({
            "client_name": "Trace test client",
            "redirect_uris": ["http://127.0.0.1:33418/callback"],
            "token_endpoint_auth_method": "none",
        }))
        .send()
        .await
        .expect("/register");
    assert!(response.status().is_success(), "{}", response.status());
    response.headers()["x-request-id"].to_str().unwrap().to_owned()
}

/// The JSON log lines whose spans include one named `span` with `request_id`.
fn lines_in_span<'a>(lines: &'a [Value], span: &str, request_id: &str) -> Vec<&'a Value> {
    lines
        .iter()
        .filter(|line| {
            line["spans"]
                .as_array()
                .is_some_and(|spans| spans.iter().any(|s| s["name"] == span && s["request_id"] == request_id))
        })
        .collect()
}

/// The trace id of `span` in `line`.
fn trace_id_of<'a>(line: &'a Value, span: &str) -> &'a str {
    line["spans"]
        .as_array()
        .and_then(|spans| spans.iter().find(|s| s["name"] == span))
        .and_then(|s| s["trace_id"].as_str())
        .unwrap_or_default()
}

fn json_lines(log: &str) -> Vec<Value> {
    log.lines().filter_map(|line| serde_json::from_str(line).ok()).collect()
}

/// With `format = "json"`, a request's lines on the data plane and the lines
/// of the gRPC call it caused on the control plane carry the request id the
/// client got in `x-request-id`, and the trace id of the client's
/// `traceparent`. The control plane's `/metrics` is on when configured.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_log_lines_of_both_planes_carry_the_request_id_and_the_clients_trace() {
    let dir = tempfile::tempdir().unwrap();
    let up = UpProcess::start_with(
        dir.path(),
        "info,gatehouse_control_plane=debug,gatehouse::http=debug",
        &[
            ("GATEHOUSE_LOG__FORMAT", "json"),
            ("GATEHOUSE_CONTROL_PLANE__METRICS_LISTEN", "127.0.0.1:0"),
        ],
    );
    let request_id = register_with_trace(&up.public_url).await;
    let metrics_url = up
        .control_plane_metrics
        .clone()
        .expect("the banner names the control plane's metrics");
    let metrics = reqwest::get(&metrics_url).await.unwrap().text().await.unwrap();
    assert!(
        metrics.contains("gatehouse_grpc_requests_total{method=\"/gatehouse.v1.FlowService/RegisterClient\",code=\"OK\"} 1"),
        "{metrics}"
    );
    let log = tokio::task::spawn_blocking(move || up.stop()).await.unwrap();
    let lines = json_lines(&log);
    assert!(!lines.is_empty(), "JSON lines:\n{log}");

    let data_plane = lines_in_span(&lines, "request", &request_id);
    assert!(!data_plane.is_empty(), "data-plane lines of request {request_id}:\n{log}");
    let control_plane = lines_in_span(&lines, "grpc", &request_id);
    assert!(
        !control_plane.is_empty(),
        "control-plane lines of request {request_id}:\n{log}"
    );
    for line in &data_plane {
        assert_eq!(trace_id_of(line, "request"), CLIENT_TRACE_ID, "{line}");
    }
    for line in &control_plane {
        assert_eq!(trace_id_of(line, "grpc"), CLIENT_TRACE_ID, "{line}");
        assert_eq!(
            line["spans"][0]["method"], "/gatehouse.v1.FlowService/RegisterClient",
            "{line}"
        );
    }
}

/// OTLP/HTTP protobuf messages, as much of them as the test reads
/// (opentelemetry-proto's `collector/trace/v1` and `trace/v1`).
mod otlp {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ExportTraceServiceRequest {
        #[prost(message, repeated, tag = "1")]
        pub resource_spans: Vec<ResourceSpans>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ResourceSpans {
        #[prost(message, optional, tag = "1")]
        pub resource: Option<Resource>,
        #[prost(message, repeated, tag = "2")]
        pub scope_spans: Vec<ScopeSpans>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Resource {
        #[prost(message, repeated, tag = "1")]
        pub attributes: Vec<KeyValue>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct KeyValue {
        #[prost(string, tag = "1")]
        pub key: String,
        #[prost(message, optional, tag = "2")]
        pub value: Option<AnyValue>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct AnyValue {
        #[prost(string, tag = "1")]
        pub string_value: String,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ScopeSpans {
        #[prost(message, repeated, tag = "2")]
        pub spans: Vec<Span>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Span {
        #[prost(bytes = "vec", tag = "1")]
        pub trace_id: Vec<u8>,
        #[prost(bytes = "vec", tag = "2")]
        pub span_id: Vec<u8>,
        #[prost(bytes = "vec", tag = "4")]
        pub parent_span_id: Vec<u8>,
        #[prost(string, tag = "5")]
        pub name: String,
    }
}

/// An exported span: (service name, span name, trace id, span id, parent span id), ids in hex.
type Exported = (String, String, String, String, String);

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A fixture OpenTelemetry collector on 127.0.0.1:0: every `POST /v1/traces`
/// body, decoded. Returns its base URL, what it received, and its task.
async fn collector() -> (String, Arc<Mutex<Vec<Exported>>>, tokio::task::JoinHandle<()>) {
    use axum::body::Bytes;
    use prost::Message as _;
    let received: Arc<Mutex<Vec<Exported>>> = Arc::default();
    let sink = received.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |body: Bytes| {
            let sink = sink.clone();
            async move {
                let request = otlp::ExportTraceServiceRequest::decode(body).expect("OTLP protobuf");
                for resource_spans in request.resource_spans {
                    let service = resource_spans
                        .resource
                        .iter()
                        .flat_map(|r| &r.attributes)
                        .find(|kv| kv.key == "service.name")
                        .and_then(|kv| kv.value.as_ref())
                        .map(|v| v.string_value.clone())
                        .unwrap_or_default();
                    for span in resource_spans.scope_spans.into_iter().flat_map(|s| s.spans) {
                        sink.lock().unwrap().push((
                            service.clone(),
                            span.name,
                            hex(&span.trace_id),
                            hex(&span.span_id),
                            hex(&span.parent_span_id),
                        ));
                    }
                }
                ([(header::CONTENT_TYPE, "application/x-protobuf")], Vec::<u8>::new())
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (base, received, task)
}

/// With `[telemetry] otlp_endpoint`, `gatehouse up` exports the data plane's
/// request span (service `gatehouse-data-plane`, continuing the client's
/// trace) and the control plane's span of the gRPC call it caused (service
/// `gatehouse-control-plane`, its child), and logs the same trace id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_export_reaches_a_collector_with_one_trace_across_both_planes() {
    let (collector_url, received, collector_task) = collector().await;
    let dir = tempfile::tempdir().unwrap();
    let up = UpProcess::start_with(
        dir.path(),
        "info,gatehouse_control_plane=debug",
        &[
            ("GATEHOUSE_LOG__FORMAT", "json"),
            ("GATEHOUSE_TELEMETRY__OTLP_ENDPOINT", &collector_url),
        ],
    );
    let request_id = register_with_trace(&up.public_url).await;
    // Stopping flushes what is still batched.
    let log = tokio::task::spawn_blocking(move || up.stop()).await.unwrap();
    let spans = received.lock().unwrap().clone();
    collector_task.abort();

    let request = spans
        .iter()
        .find(|(service, name, trace, _, _)| service == "gatehouse-data-plane" && name == "request" && trace == CLIENT_TRACE_ID)
        .unwrap_or_else(|| panic!("the data plane's request span, in the client's trace: {spans:#?}"));
    assert_eq!(request.4, CLIENT_SPAN_ID, "the client's span is its parent");
    let grpc = spans
        .iter()
        .find(|(service, name, trace, _, _)| service == "gatehouse-control-plane" && name == "grpc" && trace == CLIENT_TRACE_ID)
        .unwrap_or_else(|| panic!("the control plane's gRPC span, in the client's trace: {spans:#?}"));
    assert_eq!(grpc.4, request.3, "the gRPC span's parent is the data plane's request span");

    let lines = json_lines(&log);
    let control_plane = lines_in_span(&lines, "grpc", &request_id);
    assert!(
        !control_plane.is_empty(),
        "control-plane lines of request {request_id}:\n{log}"
    );
    for line in control_plane {
        assert_eq!(trace_id_of(line, "grpc"), CLIENT_TRACE_ID, "{line}");
    }
}
