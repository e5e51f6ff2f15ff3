//! The OAuth 2.1 authorization server in the control plane, driven over gRPC
//! with the data plane's credential, on both backends: client registration and
//! lookup (dynamic, static, metadata documents), the consent flow from StartFlow
//! to Approve and Deny, the token endpoint (code exchange, rotation, reuse,
//! revocation), caller resolution, the sweeper, and what the raw database holds.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use gatehouse::admin_client::GrpcClient;
use gatehouse::pb::{
    self, ApproveRequest, ChooseIdentityRequest, ClientAuthentication, CreateVirtualKeyRequest, DenyRequest, ErrorReason,
    ExchangeCodeRequest, FlowRef, GetClientRequest, GetFlowRequest, QueryAuditLogRequest, RefreshRequest, RegisterClientRequest,
    ResolveAccessTokenRequest, RevokeRequest, RevokeVirtualKeyRequest, StartFlowRequest, choose_identity_request::Choice,
};
use gatehouse_control_plane::clients::StaticClient;
use gatehouse_control_plane::clock::TestClock;
use gatehouse_control_plane::config::ControlPlaneConfig;
use gatehouse_control_plane::grants::s256_challenge;
use gatehouse_control_plane::mcp_servers::{AuthMode, McpServer};
use gatehouse_control_plane::secret::{self, Secret};
use gatehouse_control_plane::store::connections::{self, NewConnection};
use gatehouse_control_plane::sweeper::sweep_once;
use sqlx::Row as _;
use tonic::Code;

use crate::store_test;
use crate::support::db::contains;
use crate::support::plane::DATA_PLANE;
use crate::support::{TestControlPlane, TestDb};

const ISSUER: &str = "http://127.0.0.1:9";
const RESOURCE: &str = "http://127.0.0.1:9/mcp";
const REDIRECT: &str = "http://127.0.0.1/callback";

// === Harness ===

/// A control plane, its clock, and a data-plane client of it.
struct Oauth {
    cp: TestControlPlane,
    clock: Arc<TestClock>,
    grpc: GrpcClient,
}

impl Oauth {
    async fn start(db: &TestDb) -> Self {
        Self::start_with(db, |_| {}).await
    }

    async fn start_with(db: &TestDb, configure: impl FnOnce(&mut ControlPlaneConfig)) -> Self {
        let clock = Arc::new(TestClock::default());
        let cp = TestControlPlane::start_configured(db, clock.clone(), configure).await;
        let grpc = cp.client(DATA_PLANE).await;
        Self { cp, clock, grpc }
    }

    async fn register(&self, request: RegisterClientRequest) -> Result<pb::RegisterClientResponse, tonic::Status> {
        self.grpc.flows().register_client(request).await.map(|r| r.into_inner())
    }

    /// A public client (auth method none) with one loopback redirect URI.
    async fn public_client(&self) -> String {
        self.register(RegisterClientRequest {
            redirect_uris: vec![REDIRECT.into()],
            token_endpoint_auth_method: "none".into(),
            client_name: "Test client".into(),
            ..Default::default()
        })
        .await
        .expect("register")
        .client
        .unwrap()
        .client_id
    }

    async fn start_flow(&self, request: StartFlowRequest) -> Result<pb::StartFlowResponse, tonic::Status> {
        self.grpc.flows().start_flow(request).await.map(|r| r.into_inner())
    }

    /// Opens a flow for `client_id` with a fresh PKCE pair and state "st-1".
    async fn open_flow(&self, client_id: &str) -> Started {
        let pkce = Pkce::new();
        let started = self.start_flow(authorize(client_id, &pkce)).await.expect("StartFlow");
        assert!(started.error_redirect.is_empty(), "refused: {}", started.error_redirect);
        Started {
            flow: FlowRef {
                flow_id: started.flow_id,
                browser_secret: started.browser_secret,
                remote_addr: "192.0.2.7:5000".into(),
            },
            pkce,
        }
    }

    async fn get_flow(&self, flow: &FlowRef) -> Result<pb::FlowView, tonic::Status> {
        self.grpc
            .flows()
            .get_flow(GetFlowRequest {
                flow: Some(flow.clone()),
            })
            .await
            .map(|r| r.into_inner())
    }

    async fn choose(&self, flow: &FlowRef, choice: Choice) -> Result<pb::FlowView, tonic::Status> {
        self.grpc
            .flows()
            .choose_identity(ChooseIdentityRequest {
                flow: Some(flow.clone()),
                choice: Some(choice),
            })
            .await
            .map(|r| r.into_inner())
    }

    async fn approve(&self, flow: &FlowRef) -> Result<String, tonic::Status> {
        self.grpc
            .flows()
            .approve(ApproveRequest {
                flow: Some(flow.clone()),
            })
            .await
            .map(|r| r.into_inner().url)
    }

    /// Skip, then approve: the authorization code from the redirect.
    async fn consent_skip(&self, started: &Started) -> String {
        self.choose(&started.flow, Choice::Skip(true)).await.expect("skip");
        let url = self.approve(&started.flow).await.expect("approve");
        param(&url, "code").expect("code in the redirect")
    }

    async fn exchange(&self, request: ExchangeCodeRequest) -> Result<pb::TokenSet, tonic::Status> {
        self.grpc.tokens().exchange_code(request).await.map(|r| r.into_inner())
    }

    async fn refresh(&self, client_id: &str, refresh_token: &str) -> Result<pb::TokenSet, tonic::Status> {
        self.grpc
            .tokens()
            .refresh(RefreshRequest {
                client: Some(public(client_id)),
                refresh_token: refresh_token.into(),
                ..Default::default()
            })
            .await
            .map(|r| r.into_inner())
    }

    async fn resolve(&self, access_token: &str) -> Result<pb::CallerInfo, tonic::Status> {
        self.grpc
            .tokens()
            .resolve_access_token(ResolveAccessTokenRequest {
                access_token: access_token.into(),
            })
            .await
            .map(|r| r.into_inner())
    }

    async fn revoke(&self, client: ClientAuthentication, token: &str, hint: &str) -> Result<(), tonic::Status> {
        self.grpc
            .tokens()
            .revoke(RevokeRequest {
                client: Some(client),
                token: token.into(),
                token_type_hint: hint.into(),
            })
            .await
            .map(|_| ())
    }

    /// Register, start, skip, approve, exchange: a public client's tokens.
    async fn tokens_for_new_client(&self) -> (String, pb::TokenSet) {
        let client_id = self.public_client().await;
        let started = self.open_flow(&client_id).await;
        let code = self.consent_skip(&started).await;
        let tokens = self
            .exchange(exchange(&client_id, &code, &started.pkce.verifier))
            .await
            .expect("exchange");
        (client_id, tokens)
    }

    async fn audit_actions(&self) -> Vec<String> {
        self.cp
            .admin()
            .await
            .admin()
            .query_audit_log(QueryAuditLogRequest {
                limit: 1000,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .events
            .into_iter()
            .map(|e| e.action)
            .collect()
    }
}

struct Pkce {
    verifier: String,
    challenge: String,
}

impl Pkce {
    fn new() -> Self {
        let verifier = secret::generate("").expose().to_string();
        Self {
            challenge: s256_challenge(&verifier),
            verifier,
        }
    }
}

struct Started {
    flow: FlowRef,
    pkce: Pkce,
}

fn authorize(client_id: &str, pkce: &Pkce) -> StartFlowRequest {
    StartFlowRequest {
        client_id: client_id.into(),
        redirect_uri: REDIRECT.into(),
        response_type: "code".into(),
        code_challenge: pkce.challenge.clone(),
        code_challenge_method: "S256".into(),
        scope: "mcp".into(),
        resources: vec![RESOURCE.into()],
        state: "st-1".into(),
        has_state: true,
        ..Default::default()
    }
}

fn public(client_id: &str) -> ClientAuthentication {
    ClientAuthentication {
        client_id: client_id.into(),
        ..Default::default()
    }
}

fn exchange(client_id: &str, code: &str, verifier: &str) -> ExchangeCodeRequest {
    ExchangeCodeRequest {
        client: Some(public(client_id)),
        code: code.into(),
        code_verifier: verifier.into(),
        redirect_uri: REDIRECT.into(),
        resources: vec![RESOURCE.into()],
    }
}

/// The machine-readable reason in a refusal's details.
fn reason(status: &tonic::Status) -> ErrorReason {
    let detail = gatehouse::admin_client::error_detail(status).expect("refusals carry an ErrorDetail");
    ErrorReason::try_from(detail.reason).expect("known reason")
}

/// Asserts a refusal's code and reason, naming the case.
#[track_caller]
fn assert_refused<T: std::fmt::Debug>(result: Result<T, tonic::Status>, code: Code, why: ErrorReason, case: &str) {
    match result {
        Ok(value) => panic!("{case}: expected {code:?}/{why:?}, got success {value:?}"),
        Err(status) => {
            assert_eq!((status.code(), reason(&status)), (code, why), "{case}: {}", status.message());
        }
    }
}

/// The value of query parameter `name` in `url`.
fn param(url: &str, name: &str) -> Option<String> {
    url::Url::parse(url)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

async fn count(db: &TestDb, sql: &'static str) -> i64 {
    let mut raw = db.raw().await;
    sqlx::query(sql)
        .fetch_one(&mut raw)
        .await
        .unwrap()
        .try_get::<i64, _>(0)
        .unwrap()
}

// === Registration ===

store_test!(
    registration_accepts_the_redirect_policy_and_refuses_the_rest,
    |db| async move {
        let oauth = Oauth::start(&db).await;
        for (case, uris) in [
            ("loopback http with a port", vec!["http://localhost:8787/callback"]),
            (
                "127.0.0.1 and [::1]",
                vec!["http://127.0.0.1:6276/oauth/callback", "http://[::1]/cb"],
            ),
            ("https", vec!["https://claude.ai/api/mcp/auth_callback"]),
            (
                "an allow-listed private-use scheme",
                vec!["cursor://anysphere.cursor-mcp/oauth/callback"],
            ),
        ] {
            let registered = oauth
                .register(RegisterClientRequest {
                    redirect_uris: uris.iter().map(|u| u.to_string()).collect(),
                    token_endpoint_auth_method: "none".into(),
                    ..Default::default()
                })
                .await
                .unwrap_or_else(|e| panic!("{case}: refused: {}", e.message()));
            let client = registered.client.unwrap();
            assert_eq!(client.redirect_uris, uris, "{case}");
            assert!(registered.client_secret.is_empty(), "{case}: a public client gets no secret");
        }

        for (case, uris, auth, grants, responses, why) in [
            (
                "http to a non-loopback host",
                vec!["http://example.com/cb"],
                "",
                vec![],
                vec![],
                ErrorReason::InvalidRedirectUri,
            ),
            (
                "javascript:",
                vec!["javascript:alert(1)"],
                "",
                vec![],
                vec![],
                ErrorReason::InvalidRedirectUri,
            ),
            (
                "data:",
                vec!["data:text/html,hi"],
                "",
                vec![],
                vec![],
                ErrorReason::InvalidRedirectUri,
            ),
            (
                "file:",
                vec!["file:///etc/passwd"],
                "",
                vec![],
                vec![],
                ErrorReason::InvalidRedirectUri,
            ),
            (
                "a fragment",
                vec!["https://app.example/cb#frag"],
                "",
                vec![],
                vec![],
                ErrorReason::InvalidRedirectUri,
            ),
            (
                "a wildcard",
                vec!["https://*.example.com/cb"],
                "",
                vec![],
                vec![],
                ErrorReason::InvalidRedirectUri,
            ),
            (
                "an unlisted private-use scheme",
                vec!["myapp://cb"],
                "",
                vec![],
                vec![],
                ErrorReason::InvalidRedirectUri,
            ),
            (
                "one bad URI among good ones",
                vec!["https://ok.example/cb", "http://evil.example/cb"],
                "",
                vec![],
                vec![],
                ErrorReason::InvalidRedirectUri,
            ),
            ("no redirect URI", vec![], "", vec![], vec![], ErrorReason::InvalidRedirectUri),
            (
                "an unknown auth method",
                vec![REDIRECT],
                "private_key_jwt",
                vec![],
                vec![],
                ErrorReason::InvalidClientMetadata,
            ),
            (
                "the implicit grant",
                vec![REDIRECT],
                "none",
                vec!["implicit"],
                vec![],
                ErrorReason::InvalidClientMetadata,
            ),
            (
                "refresh_token without authorization_code",
                vec![REDIRECT],
                "none",
                vec!["refresh_token"],
                vec![],
                ErrorReason::InvalidClientMetadata,
            ),
            (
                "response_type token",
                vec![REDIRECT],
                "none",
                vec![],
                vec!["token"],
                ErrorReason::InvalidClientMetadata,
            ),
        ] {
            let result = oauth
                .register(RegisterClientRequest {
                    redirect_uris: uris.iter().map(|u| u.to_string()).collect(),
                    token_endpoint_auth_method: auth.into(),
                    grant_types: grants.iter().map(|g| g.to_string()).collect(),
                    response_types: responses.iter().map(|r| r.to_string()).collect(),
                    ..Default::default()
                })
                .await;
            assert_refused(result, Code::InvalidArgument, why, case);
        }

        // Defaults: client_secret_basic with a secret shown once, both grants, a name.
        let confidential = oauth
            .register(RegisterClientRequest {
                redirect_uris: vec![REDIRECT.into()],
                scope: "mcp offline_access admin".into(),
                ..Default::default()
            })
            .await
            .unwrap();
        let client = confidential.client.unwrap();
        assert!(confidential.client_secret.starts_with("gh_cs_"));
        assert_eq!(client.auth_method, pb::ClientAuthMethod::ClientSecretBasic as i32);
        assert_eq!(client.grant_types, ["authorization_code", "refresh_token"]);
        assert_eq!(client.response_types, ["code"]);
        assert_eq!(client.client_name, "Unnamed client");
        assert_eq!(
            client.scope, "mcp offline_access",
            "only scopes Gatehouse issues are registered"
        );
        assert_eq!(client.kind, pb::ClientKind::Dynamic as i32);
        assert!(!client.client_id.starts_with("https://"));

        let found = oauth
            .grpc
            .flows()
            .get_client(GetClientRequest {
                client_id: client.client_id.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(found, client);
        assert_refused(
            oauth
                .grpc
                .flows()
                .get_client(GetClientRequest {
                    client_id: "cli_unknown".into(),
                })
                .await,
            Code::NotFound,
            ErrorReason::InvalidClient,
            "unknown client",
        );

        // An unused registration lapses after registration_ttl_days.
        oauth.clock.advance(31 * 24 * 3600);
        assert_refused(
            oauth
                .grpc
                .flows()
                .get_client(GetClientRequest {
                    client_id: client.client_id,
                })
                .await,
            Code::NotFound,
            ErrorReason::InvalidClient,
            "a lapsed unused registration",
        );
        assert!(oauth.audit_actions().await.iter().any(|a| a == "client.register"));
        oauth.cp.stop().await;
    }
);

store_test!(
    static_clients_come_from_the_config_and_authenticate_with_their_secret,
    |db| async move {
        let secret = "static-client-secret-value";
        let oauth = Oauth::start_with(&db, |cfg| {
            cfg.clients.static_clients = vec![
                StaticClient {
                    client_id: "ops-console".into(),
                    client_name: "Ops console".into(),
                    redirect_uris: vec![REDIRECT.into()],
                    client_secret_sha256: Some(secret::hash(secret)),
                },
                StaticClient {
                    client_id: "ops-cli".into(),
                    client_name: String::new(),
                    redirect_uris: vec![REDIRECT.into()],
                    client_secret_sha256: None,
                },
            ];
        })
        .await;
        let client = oauth
            .grpc
            .flows()
            .get_client(GetClientRequest {
                client_id: "ops-console".into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(client.kind, pb::ClientKind::Static as i32);
        assert_eq!(client.client_name, "Ops console");

        let started = oauth.open_flow("ops-console").await;
        let code = oauth.consent_skip(&started).await;
        let with_secret = |value: &str, basic: bool| ClientAuthentication {
            client_id: "ops-console".into(),
            client_secret: value.into(),
            used_basic: basic,
            ..Default::default()
        };
        for (case, auth) in [
            ("no secret", with_secret("", true)),
            ("a wrong secret", with_secret("not-the-secret", true)),
        ] {
            let result = oauth
                .exchange(ExchangeCodeRequest {
                    client: Some(auth),
                    ..exchange("ops-console", &code, &started.pkce.verifier)
                })
                .await;
            assert_refused(result, Code::Unauthenticated, ErrorReason::InvalidClient, case);
        }
        let tokens = oauth
            .exchange(ExchangeCodeRequest {
                client: Some(with_secret(secret, false)),
                ..exchange("ops-console", &code, &started.pkce.verifier)
            })
            .await
            .expect("a static client may send its secret in the body");
        assert!(tokens.access_token.starts_with("gh_at_"));

        let public_static = oauth.open_flow("ops-cli").await;
        let view = oauth.get_flow(&public_static.flow).await.unwrap();
        assert_eq!(view.client.unwrap().client_name, "Unnamed client");
        oauth.cp.stop().await;
    }
);

// === Client ID Metadata Documents ===

/// A small server publishing metadata documents, counting fetches per path.
struct DocumentServer {
    base: String,
    hits: Arc<std::sync::Mutex<std::collections::HashMap<String, usize>>>,
    task: tokio::task::JoinHandle<()>,
}

impl DocumentServer {
    async fn start() -> Self {
        use axum::http::{StatusCode, header};
        use axum::response::IntoResponse;

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let hits: Arc<std::sync::Mutex<std::collections::HashMap<String, usize>>> = Arc::default();
        let flaky = Arc::new(AtomicUsize::new(0));
        let (b, h) = (base.clone(), hits.clone());
        let app = axum::Router::new().fallback(move |uri: axum::http::Uri| {
            let (base, hits, flaky) = (b.clone(), h.clone(), flaky.clone());
            async move {
                let path = uri.path().to_string();
                *hits.lock().unwrap().entry(path.clone()).or_default() += 1;
                let doc = |id: &str, extra: serde_json::Value| {
                    let mut value = serde_json::json!({
                        "client_id": id,
                        "client_name": "Doc client",
                        "redirect_uris": [REDIRECT],
                        "token_endpoint_auth_method": "none",
                    });
                    value.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
                    value.to_string()
                };
                let own = format!("{base}{path}");
                let json = |body: String, cache: &'static str| {
                    (
                        StatusCode::OK,
                        [(header::CONTENT_TYPE, "application/json"), (header::CACHE_CONTROL, cache)],
                        body,
                    )
                        .into_response()
                };
                match path.as_str() {
                    "/good.json" => json(doc(&own, serde_json::json!({})), "max-age=300"),
                    "/nostore.json" => json(doc(&own, serde_json::json!({})), "no-store"),
                    "/mismatch.json" => json(doc(&format!("{base}/other.json"), serde_json::json!({})), "max-age=300"),
                    "/big.json" => json(doc(&own, serde_json::json!({ "padding": "x".repeat(6000) })), "max-age=300"),
                    "/secret.json" => json(
                        doc(
                            &own,
                            serde_json::json!({ "token_endpoint_auth_method": "client_secret_basic" }),
                        ),
                        "max-age=300",
                    ),
                    "/no-name.json" => json(
                        serde_json::json!({ "client_id": own, "redirect_uris": [REDIRECT] }).to_string(),
                        "max-age=300",
                    ),
                    "/redirect.json" => (StatusCode::FOUND, [(header::LOCATION, format!("{base}/good.json"))]).into_response(),
                    "/flaky.json" if flaky.fetch_add(1, Ordering::SeqCst) == 0 => {
                        (StatusCode::INTERNAL_SERVER_ERROR, "try later").into_response()
                    }
                    "/flaky.json" => json(doc(&own, serde_json::json!({})), "max-age=300"),
                    _ => (StatusCode::NOT_FOUND, "no such document").into_response(),
                }
            }
        });
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { base, hits, task }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn hits(&self, path: &str) -> usize {
        self.hits.lock().unwrap().get(path).copied().unwrap_or(0)
    }
}

impl Drop for DocumentServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

store_test!(
    metadata_documents_are_checked_cached_and_never_cached_when_bad,
    |db| async move {
        let docs = DocumentServer::start().await;
        let oauth = Oauth::start_with(&db, |cfg| cfg.outbound.allow_loopback = true).await;
        let get = |id: String| {
            let flows = oauth.grpc.flows();
            async move {
                let mut flows = flows;
                flows
                    .get_client(GetClientRequest { client_id: id })
                    .await
                    .map(|r| r.into_inner())
            }
        };

        let good = get(docs.url("/good.json")).await.expect("a valid document");
        assert_eq!(good.kind, pb::ClientKind::MetadataDocument as i32);
        assert_eq!(good.client_name, "Doc client");
        assert_eq!(good.auth_method, pb::ClientAuthMethod::None as i32);
        assert_eq!(get(docs.url("/good.json")).await.unwrap(), good);
        assert_eq!(docs.hits("/good.json"), 1, "the second lookup is a cache hit");
        oauth.clock.advance(301);
        get(docs.url("/good.json")).await.unwrap();
        assert_eq!(docs.hits("/good.json"), 2, "max-age=300 has passed: fetched again");

        get(docs.url("/nostore.json")).await.unwrap();
        get(docs.url("/nostore.json")).await.unwrap();
        assert_eq!(docs.hits("/nostore.json"), 2, "no-store is not cached");

        for (case, path) in [
            ("client_id differs from the URL", "/mismatch.json"),
            ("larger than 5 KB", "/big.json"),
            ("a redirect", "/redirect.json"),
            ("not 200", "/missing.json"),
            ("a client_secret auth method", "/secret.json"),
            ("no client_name", "/no-name.json"),
        ] {
            assert_refused(
                get(docs.url(path)).await,
                Code::FailedPrecondition,
                ErrorReason::InvalidClient,
                case,
            );
        }
        assert_eq!(docs.hits("/good.json"), 2, "a redirect is never followed");
        for (case, id) in [
            ("no path", docs.base.clone()),
            ("dot segments", format!("{}/a/../good.json", docs.base)),
            ("userinfo", docs.base.replace("http://", "http://user@") + "/good.json"),
        ] {
            assert_refused(get(id).await, Code::FailedPrecondition, ErrorReason::InvalidClient, case);
        }

        // A failure is not cached: the next lookup fetches again and succeeds.
        assert_refused(
            get(docs.url("/flaky.json")).await,
            Code::FailedPrecondition,
            ErrorReason::InvalidClient,
            "a 500",
        );
        get(docs.url("/flaky.json")).await.expect("fetched again after a failure");
        assert_eq!(docs.hits("/flaky.json"), 2);

        // A metadata-document client runs the whole flow as a public client.
        let client_id = docs.url("/good.json");
        let started = oauth.open_flow(&client_id).await;
        let code = oauth.consent_skip(&started).await;
        let tokens = oauth
            .exchange(exchange(&client_id, &code, &started.pkce.verifier))
            .await
            .expect("exchange");
        assert_eq!(oauth.resolve(&tokens.access_token).await.unwrap().client_id, client_id);
        oauth.cp.stop().await;
    }
);

// === StartFlow ===

store_test!(
    start_flow_refuses_by_status_until_the_redirect_uri_is_verified_then_by_redirect,
    |db| async move {
        let oauth = Oauth::start(&db).await;
        let client_id = oauth.public_client().await;
        let pkce = Pkce::new();

        assert_refused(
            oauth.start_flow(authorize("cli_nobody", &pkce)).await,
            Code::NotFound,
            ErrorReason::InvalidClient,
            "unknown client gets an error page, not a redirect",
        );
        for (case, uri) in [
            ("another host", "https://evil.example/callback"),
            ("another path", "http://127.0.0.1/callback/extra"),
            ("localhost for a 127.0.0.1 registration", "http://localhost/callback"),
            ("a query added", "http://127.0.0.1/callback?x=1"),
        ] {
            assert_refused(
                oauth
                    .start_flow(StartFlowRequest {
                        redirect_uri: uri.into(),
                        ..authorize(&client_id, &pkce)
                    })
                    .await,
                Code::InvalidArgument,
                ErrorReason::InvalidRedirectUri,
                case,
            );
        }

        // Security: RFC 8252 §7.3, the loopback port may vary.
        let varied = oauth
            .start_flow(StartFlowRequest {
                redirect_uri: "http://127.0.0.1:49152/callback".into(),
                ..authorize(&client_id, &pkce)
            })
            .await
            .unwrap();
        assert!(!varied.flow_id.is_empty() && varied.browser_secret.starts_with("gh_bs_"));
        let view = oauth
            .get_flow(&FlowRef {
                flow_id: varied.flow_id.clone(),
                browser_secret: varied.browser_secret.clone(),
                remote_addr: String::new(),
            })
            .await
            .unwrap();
        assert_eq!(view.redirect_uri, "http://127.0.0.1:49152/callback");
        assert_eq!(view.step, pb::FlowStep::ChooseIdentity as i32);
        assert_eq!(view.scopes, ["mcp"]);
        assert!(!view.sign_in_available);

        // One registered URI: redirect_uri may be omitted.
        let omitted = oauth
            .start_flow(StartFlowRequest {
                redirect_uri: String::new(),
                ..authorize(&client_id, &pkce)
            })
            .await
            .unwrap();
        assert!(omitted.error_redirect.is_empty());

        for (case, request, error) in [
            (
                "plain PKCE",
                StartFlowRequest {
                    code_challenge_method: "plain".into(),
                    ..authorize(&client_id, &pkce)
                },
                "invalid_request",
            ),
            (
                "no PKCE at all",
                StartFlowRequest {
                    code_challenge: String::new(),
                    code_challenge_method: String::new(),
                    ..authorize(&client_id, &pkce)
                },
                "invalid_request",
            ),
            (
                "a short challenge",
                StartFlowRequest {
                    code_challenge: "abc".into(),
                    ..authorize(&client_id, &pkce)
                },
                "invalid_request",
            ),
            (
                "response_type token",
                StartFlowRequest {
                    response_type: "token".into(),
                    ..authorize(&client_id, &pkce)
                },
                "unsupported_response_type",
            ),
            (
                "an unknown scope",
                StartFlowRequest {
                    scope: "mcp admin".into(),
                    ..authorize(&client_id, &pkce)
                },
                "invalid_scope",
            ),
            (
                "another resource",
                StartFlowRequest {
                    resources: vec!["https://other.example/mcp".into()],
                    ..authorize(&client_id, &pkce)
                },
                "invalid_target",
            ),
            (
                "one good and one foreign resource",
                StartFlowRequest {
                    resources: vec![RESOURCE.into(), "http://127.0.0.1:9/other".into()],
                    ..authorize(&client_id, &pkce)
                },
                "invalid_target",
            ),
        ] {
            let refused = oauth
                .start_flow(request)
                .await
                .unwrap_or_else(|e| panic!("{case}: {}", e.message()));
            assert!(
                refused.flow_id.is_empty() && refused.browser_secret.is_empty(),
                "{case}: no flow opened"
            );
            let url = refused.error_redirect;
            assert!(url.starts_with("http://127.0.0.1/callback?"), "{case}: {url}");
            assert_eq!(param(&url, "error").as_deref(), Some(error), "{case}: {url}");
            assert_eq!(param(&url, "state").as_deref(), Some("st-1"), "{case}: state is echoed");
            assert_eq!(param(&url, "iss").as_deref(), Some(ISSUER), "{case}: iss is the issuer");
        }
        let no_state = oauth
            .start_flow(StartFlowRequest {
                code_challenge_method: "plain".into(),
                state: String::new(),
                has_state: false,
                ..authorize(&client_id, &pkce)
            })
            .await
            .unwrap();
        assert_eq!(param(&no_state.error_redirect, "state"), None, "no state sent, none echoed");

        // Accepted spellings of the resource and scope.
        for (case, resources, scope) in [
            (
                "uppercase host and a trailing slash",
                vec!["HTTP://127.0.0.1:9/mcp/"],
                "mcp offline_access",
            ),
            ("the bare issuer", vec!["http://127.0.0.1:9/"], ""),
            ("no resource", vec![], "offline_access"),
        ] {
            let started = oauth
                .start_flow(StartFlowRequest {
                    resources: resources.iter().map(|r| r.to_string()).collect(),
                    scope: scope.into(),
                    ..authorize(&client_id, &pkce)
                })
                .await
                .unwrap();
            assert!(started.error_redirect.is_empty(), "{case}: {}", started.error_redirect);
        }
        oauth.cp.stop().await;
    }
);

// === The whole path ===

store_test!(
    skip_approve_exchange_resolve_refresh_and_reuse_revokes_the_family,
    |db| async move {
        let oauth = Oauth::start(&db).await;
        let client_id = oauth.public_client().await;
        let started = oauth.open_flow(&client_id).await;

        let view = oauth.get_flow(&started.flow).await.unwrap();
        assert_eq!(view.step, pb::FlowStep::ChooseIdentity as i32);
        assert_eq!(view.client.unwrap().client_name, "Test client");
        assert!(view.identity.is_none());

        let view = oauth.choose(&started.flow, Choice::Skip(true)).await.unwrap();
        assert_eq!(view.step, pb::FlowStep::Services as i32);
        let identity = view.identity.unwrap();
        assert_eq!(identity.kind, pb::IdentityKind::Anonymous as i32);
        assert_eq!(identity.display_name, "anonymous");
        assert!(!view.client_previously_approved);

        let url = oauth.approve(&started.flow).await.unwrap();
        assert!(url.starts_with("http://127.0.0.1/callback?code=gh_code_"), "{url}");
        assert_eq!(param(&url, "state").as_deref(), Some("st-1"));
        assert_eq!(param(&url, "iss").as_deref(), Some(ISSUER));
        let code = param(&url, "code").unwrap();

        let tokens = oauth
            .exchange(exchange(&client_id, &code, &started.pkce.verifier))
            .await
            .unwrap();
        assert!(tokens.access_token.starts_with("gh_at_") && tokens.refresh_token.starts_with("gh_rt_"));
        assert_eq!(
            (tokens.token_type.as_str(), tokens.expires_in, tokens.scope.as_str()),
            ("Bearer", 3600, "mcp")
        );

        let caller = oauth.resolve(&tokens.access_token).await.unwrap();
        assert_eq!(caller.client_id, client_id);
        assert_eq!(caller.identity.as_ref().unwrap().id, identity.id);
        assert_eq!(caller.identity.unwrap().kind, pb::IdentityKind::Anonymous as i32);
        assert_eq!(caller.scopes, ["mcp"]);
        assert_eq!(caller.resource, RESOURCE);
        assert!(
            caller.cache_ttl_ms > 0 && caller.cache_ttl_ms <= 60_000,
            "{}",
            caller.cache_ttl_ms
        );
        assert!(!caller.supports_url_elicitation);

        let rotated = oauth.refresh(&client_id, &tokens.refresh_token).await.unwrap();
        assert_ne!(rotated.refresh_token, tokens.refresh_token);
        assert_ne!(rotated.access_token, tokens.access_token);
        assert_eq!(oauth.resolve(&rotated.access_token).await.unwrap().grant_id, caller.grant_id);

        // Security: RFC 9700 §4.14.2, the rotated-out token presented again revokes the family.
        assert_refused(
            oauth.refresh(&client_id, &tokens.refresh_token).await,
            Code::InvalidArgument,
            ErrorReason::InvalidGrant,
            "a reused refresh token",
        );
        for (case, token) in [
            ("the first access token", &tokens.access_token),
            ("the rotated access token", &rotated.access_token),
        ] {
            assert_refused(
                oauth.resolve(token).await,
                Code::Unauthenticated,
                ErrorReason::InvalidGrant,
                case,
            );
        }
        assert_refused(
            oauth.refresh(&client_id, &rotated.refresh_token).await,
            Code::InvalidArgument,
            ErrorReason::InvalidGrant,
            "the rotated refresh token after the family was revoked",
        );

        let actions = oauth.audit_actions().await;
        for action in [
            "flow.start",
            "flow.identity",
            "flow.approve",
            "token.issue",
            "token.refresh",
            "token.reuse_detected",
        ] {
            assert!(actions.iter().any(|a| a == action), "audit log lacks {action}: {actions:?}");
        }
        oauth.cp.stop().await;
    }
);

store_test!(virtual_key_identity_revocation_and_resolution, |db| async move {
    let oauth = Oauth::start(&db).await;
    let admin = oauth.cp.admin().await;
    let key = admin
        .admin()
        .create_virtual_key(CreateVirtualKeyRequest { name: "alice".into() })
        .await
        .unwrap()
        .into_inner();
    let client_id = oauth.public_client().await;
    let started = oauth.open_flow(&client_id).await;

    assert_refused(
        oauth
            .choose(&started.flow, Choice::VirtualKey("gh_vk_not-a-key".into()))
            .await,
        Code::Unauthenticated,
        ErrorReason::InvalidVirtualKey,
        "an unknown virtual key",
    );
    assert_refused(
        oauth.choose(&started.flow, Choice::ProxyUser("alice".into())).await,
        Code::PermissionDenied,
        ErrorReason::Denied,
        "a proxy user without trust_proxy_user",
    );
    let view = oauth
        .choose(&started.flow, Choice::VirtualKey(key.secret.clone()))
        .await
        .unwrap();
    let identity = view.identity.unwrap();
    assert_eq!(identity.kind, pb::IdentityKind::VirtualKey as i32);
    assert_eq!(identity.display_name, "alice");
    assert_eq!(identity.id, key.key.as_ref().unwrap().identity_id);
    let code = param(&oauth.approve(&started.flow).await.unwrap(), "code").unwrap();
    let tokens = oauth
        .exchange(exchange(&client_id, &code, &started.pkce.verifier))
        .await
        .unwrap();

    // The same identity approved this client before: the next flow says so.
    let again = oauth.open_flow(&client_id).await;
    let view = oauth
        .choose(&again.flow, Choice::VirtualKey(key.secret.clone()))
        .await
        .unwrap();
    assert!(view.client_previously_approved);

    // RFC 7009: revoking the access token ends it; the refresh token still works.
    oauth
        .revoke(public(&client_id), &tokens.access_token, "access_token")
        .await
        .unwrap();
    assert_refused(
        oauth.resolve(&tokens.access_token).await,
        Code::Unauthenticated,
        ErrorReason::InvalidGrant,
        "a revoked access token",
    );
    let rotated = oauth.refresh(&client_id, &tokens.refresh_token).await.unwrap();

    // Another client's revocation succeeds without effect; unknown tokens succeed too.
    let other = oauth.public_client().await;
    oauth.revoke(public(&other), &rotated.refresh_token, "").await.unwrap();
    oauth
        .revoke(public(&other), &rotated.access_token, "refresh_token")
        .await
        .unwrap();
    oauth.revoke(public(&client_id), "gh_at_unknown", "").await.unwrap();
    assert!(
        oauth.resolve(&rotated.access_token).await.is_ok(),
        "another client cannot revoke"
    );
    assert_refused(
        oauth.revoke(public("cli_nobody"), &rotated.access_token, "").await,
        Code::Unauthenticated,
        ErrorReason::InvalidClient,
        "revocation by an unknown client",
    );

    // Revoking the refresh token (with a wrong hint) ends the grant.
    oauth
        .revoke(public(&client_id), &rotated.refresh_token, "access_token")
        .await
        .unwrap();
    assert_refused(
        oauth.resolve(&rotated.access_token).await,
        Code::Unauthenticated,
        ErrorReason::InvalidGrant,
        "an access token of a revoked grant",
    );
    assert_refused(
        oauth.refresh(&client_id, &rotated.refresh_token).await,
        Code::InvalidArgument,
        ErrorReason::InvalidGrant,
        "a revoked refresh token",
    );

    // A revoked virtual key takes every grant of its identity with it.
    let (_, fresh) = {
        let started = oauth.open_flow(&client_id).await;
        oauth
            .choose(&started.flow, Choice::VirtualKey(key.secret.clone()))
            .await
            .unwrap();
        let code = param(&oauth.approve(&started.flow).await.unwrap(), "code").unwrap();
        let tokens = oauth
            .exchange(exchange(&client_id, &code, &started.pkce.verifier))
            .await
            .unwrap();
        (started, tokens)
    };
    assert!(oauth.resolve(&fresh.access_token).await.is_ok());
    admin
        .admin()
        .revoke_virtual_key(RevokeVirtualKeyRequest { id: key.key.unwrap().id })
        .await
        .unwrap();
    assert_refused(
        oauth.resolve(&fresh.access_token).await,
        Code::Unauthenticated,
        ErrorReason::InvalidGrant,
        "a token of a revoked virtual key",
    );
    assert!(oauth.audit_actions().await.iter().any(|a| a == "token.revoke"));
    oauth.cp.stop().await;
});

store_test!(a_proxy_user_is_accepted_only_when_trusted, |db| async move {
    let oauth = Oauth::start_with(&db, |cfg| cfg.trust_proxy_user = true).await;
    let client_id = oauth.public_client().await;
    let first = oauth.open_flow(&client_id).await;
    let view = oauth
        .choose(&first.flow, Choice::ProxyUser("bob@example.com".into()))
        .await
        .unwrap();
    let identity = view.identity.unwrap();
    assert_eq!(identity.kind, pb::IdentityKind::User as i32);
    assert_eq!(identity.subject, "proxy#bob@example.com");
    let second = oauth.open_flow(&client_id).await;
    let view = oauth
        .choose(&second.flow, Choice::ProxyUser("bob@example.com".into()))
        .await
        .unwrap();
    assert_eq!(view.identity.unwrap().id, identity.id, "one person, one identity");
    oauth.cp.stop().await;
});

// === The token endpoint's refusals ===

store_test!(replayed_code_revokes_what_it_issued, |db| async move {
    let oauth = Oauth::start(&db).await;
    let client_id = oauth.public_client().await;
    let started = oauth.open_flow(&client_id).await;
    let code = oauth.consent_skip(&started).await;
    let tokens = oauth
        .exchange(exchange(&client_id, &code, &started.pkce.verifier))
        .await
        .unwrap();
    assert!(oauth.resolve(&tokens.access_token).await.is_ok());

    assert_refused(
        oauth.exchange(exchange(&client_id, &code, &started.pkce.verifier)).await,
        Code::InvalidArgument,
        ErrorReason::InvalidGrant,
        "a replayed code",
    );
    assert_refused(
        oauth.resolve(&tokens.access_token).await,
        Code::Unauthenticated,
        ErrorReason::InvalidGrant,
        "the access token the replayed code issued",
    );
    assert_refused(
        oauth.refresh(&client_id, &tokens.refresh_token).await,
        Code::InvalidArgument,
        ErrorReason::InvalidGrant,
        "the refresh token the replayed code issued",
    );
    assert!(oauth.audit_actions().await.iter().any(|a| a == "token.reuse_detected"));
    oauth.cp.stop().await;
});

store_test!(
    code_exchange_refusals_neither_burn_the_code_nor_issue_tokens,
    |db| async move {
        let oauth = Oauth::start(&db).await;
        let client_id = oauth.public_client().await;
        let confidential = oauth
            .register(RegisterClientRequest {
                redirect_uris: vec![REDIRECT.into()],
                token_endpoint_auth_method: "client_secret_post".into(),
                ..Default::default()
            })
            .await
            .unwrap();
        let confidential_id = confidential.client.unwrap().client_id;
        let started = oauth.open_flow(&client_id).await;
        let code = oauth.consent_skip(&started).await;
        let verifier = started.pkce.verifier.clone();

        for (case, request, code_status, why) in [
            (
                "PKCE verifier of another request",
                exchange(&client_id, &code, &Pkce::new().verifier),
                Code::InvalidArgument,
                ErrorReason::InvalidGrant,
            ),
            (
                "a malformed verifier",
                exchange(&client_id, &code, "short"),
                Code::InvalidArgument,
                ErrorReason::InvalidGrant,
            ),
            (
                "no verifier",
                exchange(&client_id, &code, ""),
                Code::InvalidArgument,
                ErrorReason::InvalidRequest,
            ),
            (
                "the code presented by another client",
                exchange(&oauth.public_client().await, &code, &verifier),
                Code::InvalidArgument,
                ErrorReason::InvalidGrant,
            ),
            (
                "another redirect_uri",
                ExchangeCodeRequest {
                    redirect_uri: "http://127.0.0.1:8080/callback".into(),
                    ..exchange(&client_id, &code, &verifier)
                },
                Code::InvalidArgument,
                ErrorReason::InvalidGrant,
            ),
            (
                "no redirect_uri, though the authorization request sent one",
                ExchangeCodeRequest {
                    redirect_uri: String::new(),
                    ..exchange(&client_id, &code, &verifier)
                },
                Code::InvalidArgument,
                ErrorReason::InvalidGrant,
            ),
            (
                "another resource",
                ExchangeCodeRequest {
                    resources: vec!["https://other.example/mcp".into()],
                    ..exchange(&client_id, &code, &verifier)
                },
                Code::InvalidArgument,
                ErrorReason::InvalidTarget,
            ),
            (
                "a public client presenting a secret",
                ExchangeCodeRequest {
                    client: Some(ClientAuthentication {
                        client_secret: "made-up".into(),
                        ..public(&client_id)
                    }),
                    ..exchange(&client_id, &code, &verifier)
                },
                Code::Unauthenticated,
                ErrorReason::InvalidClient,
            ),
            (
                "a confidential client without its secret",
                exchange(&confidential_id, &code, &verifier),
                Code::Unauthenticated,
                ErrorReason::InvalidClient,
            ),
            (
                "a confidential client using Basic after registering client_secret_post",
                ExchangeCodeRequest {
                    client: Some(ClientAuthentication {
                        client_secret: confidential.client_secret.clone(),
                        used_basic: true,
                        ..public(&confidential_id)
                    }),
                    ..exchange(&confidential_id, &code, &verifier)
                },
                Code::Unauthenticated,
                ErrorReason::InvalidClient,
            ),
            (
                "an unknown code",
                exchange(&client_id, "gh_code_not-issued", &verifier),
                Code::InvalidArgument,
                ErrorReason::InvalidGrant,
            ),
        ] {
            assert_refused(oauth.exchange(request).await, code_status, why, case);
        }
        // None of the refusals consumed the code or revoked anything. (RFC 8707:
        // the resource may be left out; the redirect URI may not.)
        let tokens = oauth
            .exchange(ExchangeCodeRequest {
                resources: vec![],
                ..exchange(&client_id, &code, &verifier)
            })
            .await
            .expect("the legitimate exchange still succeeds");
        assert!(oauth.resolve(&tokens.access_token).await.is_ok());

        // OAuth 2.1 §4.1.3: a client with one registered URI that left redirect_uri
        // out of /authorize may leave it out of /token too, but may not name another.
        let pkce = Pkce::new();
        let omitted = oauth
            .start_flow(StartFlowRequest {
                redirect_uri: String::new(),
                ..authorize(&client_id, &pkce)
            })
            .await
            .unwrap();
        let omitted = Started {
            flow: FlowRef {
                flow_id: omitted.flow_id,
                browser_secret: omitted.browser_secret,
                remote_addr: "192.0.2.7:5000".into(),
            },
            pkce,
        };
        let omitted_code = oauth.consent_skip(&omitted).await;
        assert_refused(
            oauth
                .exchange(ExchangeCodeRequest {
                    redirect_uri: "http://127.0.0.1:8080/callback".into(),
                    ..exchange(&client_id, &omitted_code, &omitted.pkce.verifier)
                })
                .await,
            Code::InvalidArgument,
            ErrorReason::InvalidGrant,
            "another redirect_uri after /authorize omitted it",
        );
        oauth
            .exchange(ExchangeCodeRequest {
                redirect_uri: String::new(),
                ..exchange(&client_id, &omitted_code, &omitted.pkce.verifier)
            })
            .await
            .expect("omitted at /authorize, omitted at /token");

        // A code past its 5 minutes is refused.
        let late = oauth.open_flow(&client_id).await;
        let late_code = oauth.consent_skip(&late).await;
        oauth.clock.advance(301);
        assert_refused(
            oauth.exchange(exchange(&client_id, &late_code, &late.pkce.verifier)).await,
            Code::InvalidArgument,
            ErrorReason::InvalidGrant,
            "an expired code",
        );
        // Refresh with a wider scope is refused; the same scope is fine.
        assert_refused(
            oauth
                .grpc
                .tokens()
                .refresh(RefreshRequest {
                    client: Some(public(&client_id)),
                    refresh_token: tokens.refresh_token.clone(),
                    scope: "mcp admin".into(),
                    ..Default::default()
                })
                .await,
            Code::InvalidArgument,
            ErrorReason::InvalidScope,
            "a wider scope at refresh",
        );
        assert_refused(
            oauth
                .grpc
                .tokens()
                .refresh(RefreshRequest {
                    client: Some(public(&oauth.public_client().await)),
                    refresh_token: tokens.refresh_token.clone(),
                    ..Default::default()
                })
                .await,
            Code::InvalidArgument,
            ErrorReason::InvalidGrant,
            "a refresh token presented by another client",
        );
        oauth.cp.stop().await;
    }
);

// === Consent steps ===

store_test!(
    consent_steps_refuse_other_browsers_wrong_order_expiry_and_reuse,
    |db| async move {
        let oauth = Oauth::start(&db).await;
        let client_id = oauth.public_client().await;
        let started = oauth.open_flow(&client_id).await;

        let stranger = FlowRef {
            browser_secret: secret::generate("gh_bs_").expose().to_string(),
            ..started.flow.clone()
        };
        assert_refused(
            oauth.get_flow(&stranger).await,
            Code::PermissionDenied,
            ErrorReason::WrongBrowser,
            "another browser",
        );
        assert_refused(
            oauth.approve(&stranger).await,
            Code::PermissionDenied,
            ErrorReason::WrongBrowser,
            "another browser approving",
        );
        assert_refused(
            oauth
                .get_flow(&FlowRef {
                    flow_id: "flw_nonexistent".into(),
                    ..started.flow.clone()
                })
                .await,
            Code::NotFound,
            ErrorReason::NotFound,
            "an unknown flow",
        );
        assert_refused(
            oauth.approve(&started.flow).await,
            Code::FailedPrecondition,
            ErrorReason::OutOfOrder,
            "approve before an identity",
        );
        oauth.choose(&started.flow, Choice::Skip(true)).await.unwrap();
        oauth.approve(&started.flow).await.unwrap();
        assert_refused(
            oauth.approve(&started.flow).await,
            Code::FailedPrecondition,
            ErrorReason::AlreadyUsed,
            "a second approve",
        );
        assert_refused(
            oauth.get_flow(&started.flow).await,
            Code::FailedPrecondition,
            ErrorReason::AlreadyUsed,
            "reading an approved flow",
        );

        // Deny: access_denied with state and iss, and the flow is consumed.
        let denied = oauth.open_flow(&client_id).await;
        let url = oauth
            .grpc
            .flows()
            .deny(DenyRequest {
                flow: Some(denied.flow.clone()),
            })
            .await
            .unwrap()
            .into_inner()
            .url;
        assert_eq!(param(&url, "error").as_deref(), Some("access_denied"));
        assert_eq!(param(&url, "state").as_deref(), Some("st-1"));
        assert_eq!(param(&url, "iss").as_deref(), Some(ISSUER));
        assert_eq!(param(&url, "code"), None);
        assert_refused(
            oauth.approve(&denied.flow).await,
            Code::FailedPrecondition,
            ErrorReason::AlreadyUsed,
            "approve after deny",
        );

        // A flow lives 15 minutes.
        let expiring = oauth.open_flow(&client_id).await;
        oauth.choose(&expiring.flow, Choice::Skip(true)).await.unwrap();
        oauth.clock.advance(15 * 60 + 1);
        assert_refused(
            oauth.approve(&expiring.flow).await,
            Code::FailedPrecondition,
            ErrorReason::Expired,
            "an expired flow",
        );
        assert!(oauth.audit_actions().await.iter().any(|a| a == "flow.deny"));
        oauth.cp.stop().await;
    }
);

/// An OAuth service for the services page.
fn notes_server() -> McpServer {
    McpServer {
        name: "notes".into(),
        display_name: "Notes".into(),
        url: "https://notes.example.com/mcp".into(),
        auth_mode: AuthMode::Oauth,
        ..Default::default()
    }
}

/// Stores a connection made in `flow_id` (owned by the flow until approval).
async fn connect_in_flow(oauth: &Oauth, flow_id: &str, id: &str, access: &str, refresh: Option<&str>, expires_at: i64) {
    let core = oauth.cp.core();
    let owner = connections::owner(None, Some(flow_id));
    let seal = |field, value: &str| {
        core.vault
            .seal_secret(connections::aad(field, id, &owner, "notes"), &Secret::new(value))
            .unwrap()
    };
    core.store
        .put_connection(
            &NewConnection {
                id,
                identity_id: None,
                flow_id: Some(flow_id),
                service: "notes",
                account: "alice@notes.example",
                scopes: "notes.read notes.write",
                access: seal("access_ct", access),
                refresh: refresh.map(|r| seal("refresh_ct", r)),
                expires_at: Some(expires_at),
            },
            core.now(),
        )
        .await
        .unwrap();
}

store_test!(
    approve_moves_the_flows_connections_to_the_identity_and_reseals_them,
    |db| async move {
        let oauth = Oauth::start_with(&db, |cfg| {
            cfg.mcp_servers = vec![
                notes_server(),
                McpServer {
                    name: "public-docs".into(),
                    url: "https://docs.example.com/mcp".into(),
                    ..Default::default()
                },
            ];
        })
        .await;
        let client_id = oauth.public_client().await;
        let started = oauth.open_flow(&client_id).await;
        let flow_id = started.flow.flow_id.clone();
        let view = oauth.choose(&started.flow, Choice::Skip(true)).await.unwrap();
        let first_identity = view.identity.unwrap().id;
        let services: Vec<_> = view
            .services
            .iter()
            .map(|s| (s.service.as_str(), s.needs_connection))
            .collect();
        assert_eq!(services, [("notes", true), ("public-docs", false)]);
        assert_eq!(
            view.services[0].connection.as_ref().unwrap().status,
            pb::ConnectionStatus::NotConnected as i32
        );

        // A connection made in the flow shows on the services page; one that expires
        // soon without a refresh token shows as expiring.
        let now = oauth.cp.core().now();
        connect_in_flow(&oauth, &flow_id, "conn_soon", "upstream-at-1", None, now + 60).await;
        let view = oauth.get_flow(&started.flow).await.unwrap();
        let connection = view.services[0].connection.clone().unwrap();
        assert_eq!(connection.status, pb::ConnectionStatus::Expiring as i32);
        assert_eq!(connection.account, "alice@notes.example");
        assert_eq!(connection.identity_id, "", "still the flow's");

        // Choosing again discards the flow's connections.
        let view = oauth.choose(&started.flow, Choice::Skip(true)).await.unwrap();
        assert_ne!(view.identity.as_ref().unwrap().id, first_identity);
        assert_eq!(
            view.services[0].connection.as_ref().unwrap().status,
            pb::ConnectionStatus::NotConnected as i32,
            "choosing again discards the connections made so far"
        );
        let identity = view.identity.unwrap().id;

        connect_in_flow(
            &oauth,
            &flow_id,
            "conn_1",
            "upstream-access-42",
            Some("upstream-refresh-42"),
            now + 3600,
        )
        .await;
        let view = oauth.get_flow(&started.flow).await.unwrap();
        assert_eq!(
            view.services[0].connection.as_ref().unwrap().status,
            pb::ConnectionStatus::Connected as i32
        );
        assert!(view.services[0].connection.as_ref().unwrap().has_refresh_token);
        oauth.approve(&started.flow).await.unwrap();

        // The connection now belongs to the identity, and its ciphertexts open only as the identity's.
        let core = oauth.cp.core();
        let row = core.store.get_connection("conn_1").await.unwrap().unwrap();
        assert_eq!(row.identity_id.as_deref(), Some(identity.as_str()));
        let owner = row.owner();
        assert_eq!(owner, identity);
        let access = core
            .vault
            .open_secret(connections::aad("access_ct", "conn_1", &owner, "notes"), &row.access_ct)
            .unwrap();
        assert_eq!(access.expose(), "upstream-access-42");
        let refresh = core
            .vault
            .open_secret(
                connections::aad("refresh_ct", "conn_1", &owner, "notes"),
                row.refresh_ct.as_deref().unwrap(),
            )
            .unwrap();
        assert_eq!(refresh.expose(), "upstream-refresh-42");
        assert!(
            core.vault
                .open(
                    connections::aad("access_ct", "conn_1", &format!("flow:{flow_id}"), "notes"),
                    &row.access_ct
                )
                .is_err(),
            "the old binding no longer opens it"
        );
        assert_eq!(count(&db, "SELECT COUNT(*) FROM approved_clients").await, 1);
        oauth.cp.stop().await;
    }
);

// === Sweeper ===

store_test!(sweeper_deletes_what_expired_and_keeps_what_lives, |db| async move {
    let oauth = Oauth::start(&db).await;
    let (used_client, tokens) = oauth.tokens_for_new_client().await;
    let _unused = oauth.public_client().await;
    let pending = oauth.open_flow(&used_client).await;
    oauth.choose(&pending.flow, Choice::Skip(true)).await.unwrap();
    connect_in_flow(&oauth, &pending.flow.flow_id, "conn_pending", "at", None, 0).await;
    let unexchanged = oauth.open_flow(&used_client).await;
    oauth.consent_skip(&unexchanged).await;

    let core = oauth.cp.core().clone();
    let nothing = sweep_once(&core, core.now()).await.unwrap();
    assert_eq!(nothing.total(), 0, "nothing expired yet: {nothing:?}");

    // After an hour: flows, codes and the access token are gone; the refresh token lives.
    oauth.clock.advance(3601);
    let report = sweep_once(&core, core.now()).await.unwrap();
    assert_eq!(
        (report.flows, report.auth_codes, report.access_tokens),
        (3, 2, 1),
        "{report:?}"
    );
    assert_eq!(count(&db, "SELECT COUNT(*) FROM flows").await, 0);
    assert_eq!(
        count(&db, "SELECT COUNT(*) FROM connections").await,
        0,
        "the abandoned flow's connection went with it"
    );
    assert_eq!(count(&db, "SELECT COUNT(*) FROM refresh_tokens").await, 1);
    assert!(oauth.refresh(&used_client, &tokens.refresh_token).await.is_ok());

    // After 31 days: the unused registration lapses; the used client stays.
    oauth.clock.advance(31 * 24 * 3600);
    let report = sweep_once(&core, core.now()).await.unwrap();
    assert_eq!(report.clients, 1, "{report:?}");
    assert!(report.refresh_tokens >= 1, "{report:?}");
    assert_eq!(count(&db, "SELECT COUNT(*) FROM clients").await, 1);
    assert_eq!(count(&db, "SELECT COUNT(*) FROM refresh_tokens").await, 0);
    oauth.cp.stop().await;
});

/// Stores a connection owned by `identity_id` whose access token expires at `expires_at`.
async fn connect_identity(oauth: &Oauth, identity_id: &str, id: &str, expires_at: i64) {
    let core = oauth.cp.core();
    let owner = connections::owner(Some(identity_id), None);
    let seal = |field, value: &str| {
        core.vault
            .seal_secret(connections::aad(field, id, &owner, "notes"), &Secret::new(value))
            .unwrap()
    };
    core.store
        .put_connection(
            &NewConnection {
                id,
                identity_id: Some(identity_id),
                flow_id: None,
                service: "notes",
                account: "someone@notes.example",
                scopes: "notes.read",
                access: seal("access_ct", "upstream-at"),
                refresh: Some(seal("refresh_ct", "upstream-rt")),
                expires_at: Some(expires_at),
            },
            core.now(),
        )
        .await
        .unwrap();
}

/// Stores an upstream authorization attempt (its state only hashed, its verifier sealed).
async fn upstream_attempt(oauth: &Oauth, state: &str) {
    let core = oauth.cp.core();
    let state_hash = secret::hash(state);
    let verifier = core
        .vault
        .seal_secret(
            gatehouse_control_plane::store::reseal::aad("upstream_attempts", "verifier_ct", &state_hash, "", "notes"),
            &Secret::new("verifier"),
        )
        .unwrap();
    let now = core.now();
    core.store
        .insert_upstream_attempt(
            &gatehouse_control_plane::store::upstream::NewAttempt {
                state_hash: &state_hash,
                kind: "connect",
                flow_id: None,
                identity_id: None,
                link_id: None,
                service: "notes",
                verifier,
                nonce_hash: None,
                browser_secret_hash: None,
                redirect_uri: "http://127.0.0.1:9/oauth/callback",
                expires_at: now + 600,
            },
            now,
        )
        .await
        .unwrap();
}

/// The identity a token set's grant acts for.
async fn identity_of(oauth: &Oauth, tokens: &pb::TokenSet) -> String {
    oauth.resolve(&tokens.access_token).await.unwrap().identity.unwrap().id
}

async fn exists(db: &TestDb, table: &'static str, column: &'static str, value: &str) -> bool {
    let mut raw = db.raw().await;
    let sql = format!("SELECT COUNT(*) FROM {table} WHERE {column} = $1");
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(value.to_owned())
        .fetch_one(&mut raw)
        .await
        .unwrap()
        .try_get::<i64, _>(0)
        .unwrap()
        > 0
}

async fn rows(db: &TestDb, table: &'static str) -> i64 {
    let mut raw = db.raw().await;
    sqlx::query(sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM {table}")))
        .fetch_one(&mut raw)
        .await
        .unwrap()
        .try_get::<i64, _>(0)
        .unwrap()
}

const DAY: i64 = 24 * 3600;

store_test!(sweeper_deletes_what_was_abandoned_and_keeps_what_lives, |db| async move {
    // Flows live 3 days here, so an identity can have a flow in progress for
    // longer than the sweeper's grace; refresh tokens idle out after 1.5 days.
    let oauth = Oauth::start_with(&db, |cfg| {
        cfg.lifetimes.flow = 3 * DAY;
        cfg.lifetimes.refresh_token_idle = DAY + DAY / 2;
        cfg.audit_retention_days = 1;
    })
    .await;
    let core = oauth.cp.core().clone();
    let t0 = core.now();
    let far = t0 + 365 * DAY;

    // live: an anonymous grant kept refreshed, with a connection.
    let (live_client, live_tokens) = oauth.tokens_for_new_client().await;
    let live = identity_of(&oauth, &live_tokens).await;
    connect_identity(&oauth, &live, "conn_live", far).await;
    // revoked: an anonymous grant its client revoked, with a connection.
    let (revoked_client, revoked_tokens) = oauth.tokens_for_new_client().await;
    let revoked = identity_of(&oauth, &revoked_tokens).await;
    connect_identity(&oauth, &revoked, "conn_revoked", far).await;
    oauth
        .revoke(public(&revoked_client), &revoked_tokens.refresh_token, "refresh_token")
        .await
        .unwrap();
    // idle: an anonymous grant never refreshed, with a connection.
    let (_, idle_tokens) = oauth.tokens_for_new_client().await;
    let idle = identity_of(&oauth, &idle_tokens).await;
    connect_identity(&oauth, &idle, "conn_idle", far).await;
    // named: a virtual key's grant, revoked, with a connection.
    let key = oauth
        .cp
        .admin()
        .await
        .admin()
        .create_virtual_key(CreateVirtualKeyRequest { name: "alice".into() })
        .await
        .unwrap()
        .into_inner();
    let named_client = oauth.public_client().await;
    let named_flow = oauth.open_flow(&named_client).await;
    oauth
        .choose(&named_flow.flow, Choice::VirtualKey(key.secret.clone()))
        .await
        .unwrap();
    let named_code = param(&oauth.approve(&named_flow.flow).await.unwrap(), "code").unwrap();
    let named_tokens = oauth
        .exchange(exchange(&named_client, &named_code, &named_flow.pkce.verifier))
        .await
        .unwrap();
    let named = identity_of(&oauth, &named_tokens).await;
    connect_identity(&oauth, &named, "conn_named", far).await;
    oauth
        .revoke(public(&named_client), &named_tokens.refresh_token, "refresh_token")
        .await
        .unwrap();
    // denied and abandoned: Skip identities of flows that never became a grant.
    let denied_flow = oauth.open_flow(&live_client).await;
    let denied = oauth
        .choose(&denied_flow.flow, Choice::Skip(true))
        .await
        .unwrap()
        .identity
        .unwrap()
        .id;
    oauth
        .grpc
        .flows()
        .deny(DenyRequest {
            flow: Some(denied_flow.flow.clone()),
        })
        .await
        .unwrap();
    let abandoned_flow = oauth.open_flow(&live_client).await;
    let abandoned = oauth
        .choose(&abandoned_flow.flow, Choice::Skip(true))
        .await
        .unwrap()
        .identity
        .unwrap()
        .id;
    // An upstream authorization attempt nobody finished.
    upstream_attempt(&oauth, "gh_st_abandoned").await;

    let nothing = sweep_once(&core, core.now()).await.unwrap();
    assert_eq!(nothing.total(), 0, "nothing ended long enough ago: {nothing:?}");

    // Nearly a day later: the live grant is refreshed; a flow starts whose
    // identity will be older than the grace while the flow is still in progress.
    oauth.clock.advance(DAY - 3600);
    let live_tokens = oauth.refresh(&live_client, &live_tokens.refresh_token).await.unwrap();
    let pending_flow = oauth.open_flow(&live_client).await;
    let pending = oauth
        .choose(&pending_flow.flow, Choice::Skip(true))
        .await
        .unwrap()
        .identity
        .unwrap()
        .id;
    let report = sweep_once(&core, core.now()).await.unwrap();
    assert_eq!(
        report.upstream_attempts, 1,
        "the attempt expired after 10 minutes: {report:?}"
    );
    assert_eq!(
        (report.grants, report.identities, report.connections, report.audit_events),
        (0, 0, 0, 0),
        "what ended less than a day ago is within the grace: {report:?}"
    );

    // Nearly two days: the idle grant can no longer be refreshed. The refresher keeps
    // only connections someone can still use: the live grant's and the named
    // identity's (a virtual key may be used again), not those of anonymous
    // identities whose grants ended.
    oauth.clock.advance(DAY);
    let live_tokens = oauth.refresh(&live_client, &live_tokens.refresh_token).await.unwrap();
    let mut due: Vec<String> = core
        .store
        .connections_due_for_refresh(core.now(), far + 1, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.id)
        .collect();
    due.sort();
    assert_eq!(due, ["conn_live", "conn_named"]);

    // Three days and a few hours: everything that ended more than a day ago goes.
    oauth.clock.advance(DAY + 6 * 3600);
    upstream_attempt(&oauth, "gh_st_fresh").await;
    let live_tokens = oauth.refresh(&live_client, &live_tokens.refresh_token).await.unwrap();
    let audit_before = count(&db, "SELECT COUNT(*) FROM audit_events").await;
    let report = sweep_once(&core, core.now()).await.unwrap();
    assert_eq!(
        report.grants, 3,
        "revoked, idle and the named one's revoked grant: {report:?}"
    );
    assert_eq!(report.identities, 4, "revoked, idle, denied, abandoned: {report:?}");
    assert_eq!(report.approved_clients, 2, "the revoked and idle identities': {report:?}");
    assert_eq!(report.connections, 2, "conn_revoked and conn_idle: {report:?}");
    assert_eq!(report.upstream_attempts, 0, "the fresh attempt lives: {report:?}");
    assert!(
        report.audit_events > 0 && report.audit_events < audit_before as u64,
        "events older than a day go, the refresh just now stays: {report:?}"
    );

    for gone in [&revoked, &idle, &denied, &abandoned] {
        assert!(!exists(&db, "identities", "id", gone).await, "identity {gone} is swept");
        assert!(!exists(&db, "approved_clients", "identity_id", gone).await);
        assert!(!exists(&db, "connections", "identity_id", gone).await);
        assert!(!exists(&db, "grants", "identity_id", gone).await);
    }
    for kept in [&live, &named, &pending] {
        assert!(exists(&db, "identities", "id", kept).await, "identity {kept} is kept");
    }
    assert!(exists(&db, "grants", "identity_id", &live).await, "the live grant stays");
    assert!(
        !exists(&db, "grants", "identity_id", &named).await,
        "the named identity's ended grant goes"
    );
    for kept in [&live, &named] {
        assert!(exists(&db, "approved_clients", "identity_id", kept).await);
        assert!(exists(&db, "connections", "identity_id", kept).await);
    }
    assert!(exists(&db, "upstream_attempts", "state_hash", &secret::hash("gh_st_fresh")).await);
    assert!(!exists(&db, "upstream_attempts", "state_hash", &secret::hash("gh_st_abandoned")).await);
    let cutoff_ms = (core.now() - DAY) * 1000;
    let mut raw = db.raw().await;
    let oldest: i64 = sqlx::query("SELECT MIN(at_ms) FROM audit_events")
        .fetch_one(&mut raw)
        .await
        .unwrap()
        .try_get(0)
        .unwrap();
    assert!(oldest >= cutoff_ms, "no audit event older than the retention remains");
    assert!(
        oauth.audit_actions().await.iter().any(|a| a == "connection.delete"),
        "the sweeper's deletes are audited"
    );

    // What was kept still works: the live grant refreshes, the pending flow approves.
    oauth.refresh(&live_client, &live_tokens.refresh_token).await.unwrap();
    let code = param(&oauth.approve(&pending_flow.flow).await.unwrap(), "code").unwrap();
    oauth
        .exchange(exchange(&live_client, &code, &pending_flow.pkce.verifier))
        .await
        .expect("the flow in progress finishes with its identity");
    let again = sweep_once(&core, core.now()).await.unwrap();
    assert_eq!((again.grants, again.identities, again.connections), (0, 0, 0), "{again:?}");
    oauth.cp.stop().await;
});

store_test!(registration_and_authorize_spam_leaves_nothing_behind, |db| async move {
    // Issue 8: anonymous traffic must not grow the database without bound.
    let oauth = Oauth::start(&db).await;
    let core = oauth.cp.core().clone();
    for i in 0..12 {
        let client_id = oauth.public_client().await;
        let started = oauth.open_flow(&client_id).await;
        oauth.choose(&started.flow, Choice::Skip(true)).await.unwrap();
        if i % 2 == 0 {
            oauth
                .grpc
                .flows()
                .deny(DenyRequest {
                    flow: Some(started.flow.clone()),
                })
                .await
                .unwrap();
        }
    }
    for table in ["clients", "flows", "identities", "audit_events"] {
        assert!(rows(&db, table).await >= 12, "{table} holds the spam");
    }
    // Past the registration lifetime (30 days) and the audit retention (90 days).
    oauth.clock.advance(91 * DAY);
    let report = sweep_once(&core, core.now()).await.unwrap();
    assert_eq!((report.clients, report.flows, report.identities), (12, 12, 12), "{report:?}");
    for table in [
        "clients",
        "flows",
        "identities",
        "approved_clients",
        "audit_events",
        "auth_codes",
        "grants",
    ] {
        assert_eq!(rows(&db, table).await, 0, "{table} is back to empty");
    }
    oauth.cp.stop().await;
});

// === Secrets at rest ===

store_test!(raw_database_holds_no_token_code_or_client_secret, |db| async move {
    let oauth = Oauth::start(&db).await;
    let registered = oauth
        .register(RegisterClientRequest {
            redirect_uris: vec![REDIRECT.into()],
            token_endpoint_auth_method: "client_secret_basic".into(),
            client_name: "Confidential".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let client_id = registered.client.unwrap().client_id;
    let client_secret = registered.client_secret;
    let started = oauth.open_flow(&client_id).await;
    let browser_secret = started.flow.browser_secret.clone();
    let code = oauth.consent_skip(&started).await;
    let auth = ClientAuthentication {
        client_id: client_id.clone(),
        client_secret: client_secret.clone(),
        used_basic: true,
        ..Default::default()
    };
    let tokens = oauth
        .exchange(ExchangeCodeRequest {
            client: Some(auth.clone()),
            ..exchange(&client_id, &code, &started.pkce.verifier)
        })
        .await
        .unwrap();
    let rotated = oauth
        .grpc
        .tokens()
        .refresh(RefreshRequest {
            client: Some(auth),
            refresh_token: tokens.refresh_token.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    oauth.cp.stop().await;

    let dump = db.raw_dump();
    assert!(
        contains(&dump, &client_id),
        "the dump is readable (sanity check of the search)"
    );
    assert!(
        contains(&dump, &secret::hash(&rotated.access_token)),
        "the hash is what is stored"
    );
    for (what, value) in [
        ("client secret", client_secret.as_str()),
        ("browser secret", browser_secret.as_str()),
        ("authorization code", code.as_str()),
        ("access token", tokens.access_token.as_str()),
        ("refresh token", tokens.refresh_token.as_str()),
        ("rotated access token", rotated.access_token.as_str()),
        ("rotated refresh token", rotated.refresh_token.as_str()),
        ("PKCE verifier", started.pkce.verifier.as_str()),
    ] {
        assert!(!contains(&dump, value), "the raw database holds the {what} in plaintext");
    }
});
