//! The upstream side of the consent flow, on both backends, against the demo
//! upstream on 127.0.0.1: ConnectService → the demo's consent page → the
//! callback (CompleteConnect) → a sealed connection; the refusals of the
//! callback; discovery and registration once per service; Disconnect with
//! revocation; and user sign-in (BeginSignIn / CompleteSignIn) with the demo
//! as OpenID provider.

use std::sync::Arc;

use gatehouse::admin_client::GrpcClient;
use gatehouse::demo::{DemoUpstream, StaticClient, TokenEndpointAuthMethod, hidden_fields};
use gatehouse::pb::{
    self, BeginSignInRequest, ChooseIdentityRequest, CompleteConnectRequest, CompleteSignInRequest, ConnectServiceRequest,
    DisconnectServiceRequest, ErrorReason, FlowRef, GetFlowRequest, RegisterClientRequest, StartFlowRequest,
    choose_identity_request::Choice,
};
use gatehouse_control_plane::clock::TestClock;
use gatehouse_control_plane::mcp_servers::{AuthMode, McpServer, UpstreamOAuth};
use gatehouse_control_plane::secret;
use gatehouse_control_plane::sign_in::SignInConfig;
use gatehouse_control_plane::store::audit::AuditQuery;
use gatehouse_control_plane::store::connections::{self, ConnectionRow};
use gatehouse_control_plane::sweeper::sweep_once;
use gatehouse_control_plane::upstream::pkce_challenge;
use reqwest::StatusCode;
use tonic::Code;

use crate::store_test;
use crate::support::db::contains;
use crate::support::plane::DATA_PLANE;
use crate::support::{TestControlPlane, TestDb};

/// The test control plane's public URL (see `support::plane::config`).
const PUBLIC_URL: &str = "http://127.0.0.1:9";
const CLIENT_REDIRECT: &str = "http://127.0.0.1/callback";
const SIGN_IN_CLIENT: &str = "gatehouse-sign-in";

// === Harness ===

/// A demo upstream registered as the oauth service "notes" (no client id, so
/// Gatehouse discovers and registers), a control plane, and a data-plane client.
struct Upstream {
    demo: DemoUpstream,
    cp: TestControlPlane,
    clock: Arc<TestClock>,
    grpc: GrpcClient,
    /// The demo's browser (no redirects followed).
    browser: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl Upstream {
    async fn start(db: &TestDb) -> Self {
        let demo = crate::support::fleet::demo_upstream().await;
        let dir = tempfile::tempdir().expect("temp dir");
        // Sign-in uses a confidential client registered out of band, its secret in a file.
        let secret_file = dir.path().join("sign-in.secret");
        std::fs::write(&secret_file, "sign-in-client-secret\n").expect("secret file");
        demo.add_client(StaticClient {
            client_id: SIGN_IN_CLIENT.into(),
            client_secret: Some("sign-in-client-secret".into()),
            auth_method: TokenEndpointAuthMethod::ClientSecretBasic,
            redirect_uris: vec![format!("{PUBLIC_URL}/signin/callback")],
            client_name: Some("Gatehouse sign-in".into()),
        })
        .expect("sign-in client");
        let notes = McpServer {
            name: "notes".into(),
            display_name: "Notes".into(),
            url: demo.mcp_url(),
            auth_mode: AuthMode::Oauth,
            oauth: UpstreamOAuth {
                scopes: vec!["notes.read".into()],
                ..Default::default()
            },
            ..Default::default()
        };
        let issuer = demo.base_url().to_string();
        let secret_path = secret_file.display().to_string();
        let clock = Arc::new(TestClock::default());
        let cp = TestControlPlane::start_configured(db, clock.clone(), move |config| {
            // The demo listens on 127.0.0.1 over plain http.
            config.outbound.allow_loopback = true;
            config.mcp_servers = vec![notes];
            config.sign_in = Some(SignInConfig {
                issuer,
                client_id: SIGN_IN_CLIENT.into(),
                client_secret_file: secret_path,
                display_name: "Demo sign-in".into(),
                ..Default::default()
            });
        })
        .await;
        let grpc = cp.client(DATA_PLANE).await;
        let browser = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("browser");
        Self {
            demo,
            cp,
            clock,
            grpc,
            browser,
            _dir: dir,
        }
    }

    /// A flow of a new public client, identity not yet chosen.
    async fn open_flow(&self) -> FlowRef {
        let client = self
            .grpc
            .flows()
            .register_client(RegisterClientRequest {
                redirect_uris: vec![CLIENT_REDIRECT.into()],
                token_endpoint_auth_method: "none".into(),
                client_name: "Test client".into(),
                ..Default::default()
            })
            .await
            .expect("RegisterClient")
            .into_inner()
            .client
            .expect("client");
        let verifier = secret::generate("").expose().to_string();
        let started = self
            .grpc
            .flows()
            .start_flow(StartFlowRequest {
                client_id: client.client_id,
                redirect_uri: CLIENT_REDIRECT.into(),
                response_type: "code".into(),
                code_challenge: pkce_challenge(&verifier),
                code_challenge_method: "S256".into(),
                scope: "mcp".into(),
                state: "st-1".into(),
                has_state: true,
                ..Default::default()
            })
            .await
            .expect("StartFlow")
            .into_inner();
        assert!(started.error_redirect.is_empty(), "{}", started.error_redirect);
        FlowRef {
            flow_id: started.flow_id,
            browser_secret: started.browser_secret,
            remote_addr: "192.0.2.9:4000".into(),
        }
    }

    /// A flow whose identity is Skip (anonymous).
    async fn skipped_flow(&self) -> FlowRef {
        let flow = self.open_flow().await;
        self.grpc
            .flows()
            .choose_identity(ChooseIdentityRequest {
                flow: Some(flow.clone()),
                choice: Some(Choice::Skip(true)),
            })
            .await
            .expect("ChooseIdentity skip");
        flow
    }

    async fn get_flow(&self, flow: &FlowRef) -> pb::FlowView {
        self.grpc
            .flows()
            .get_flow(GetFlowRequest {
                flow: Some(flow.clone()),
            })
            .await
            .expect("GetFlow")
            .into_inner()
    }

    async fn connect(&self, flow: &FlowRef, service: &str) -> Result<String, tonic::Status> {
        self.grpc
            .flows()
            .connect_service(ConnectServiceRequest {
                flow: Some(flow.clone()),
                service: service.into(),
            })
            .await
            .map(|r| r.into_inner().authorization_url)
    }

    /// Follows an authorization URL as a browser at the demo: its consent page,
    /// then `decision` as `account`. Returns the redirect's query parameters.
    async fn walk_demo(&self, authorization_url: &str, account: &str, decision: &str) -> Vec<(String, String)> {
        let page = self.browser.get(authorization_url).send().await.expect("GET /authorize");
        assert_eq!(page.status(), StatusCode::OK, "the demo's consent page");
        let mut form = hidden_fields(&page.text().await.expect("page"));
        form.push(("account".into(), account.into()));
        form.push(("decision".into(), decision.into()));
        let answer = self
            .browser
            .post(format!("{}/authorize", self.demo.base_url()))
            .form(&form)
            .send()
            .await
            .expect("POST /authorize");
        assert_eq!(answer.status(), StatusCode::SEE_OTHER);
        let location = answer.headers()["location"].to_str().expect("location").to_string();
        let url = url::Url::parse(&location).expect("absolute location");
        url.query_pairs().into_owned().collect()
    }

    /// ConnectService, then the demo allows as `account`: the callback's parameters.
    async fn authorized(&self, flow: &FlowRef, account: &str) -> Callback {
        let url = self.connect(flow, "notes").await.expect("ConnectService");
        Callback::from(self.walk_demo(&url, account, "allow").await)
    }

    async fn complete(&self, request: CompleteConnectRequest) -> Result<pb::CompleteConnectResponse, tonic::Status> {
        self.grpc.flows().complete_connect(request).await.map(|r| r.into_inner())
    }

    async fn disconnect(&self, flow: &FlowRef, service: &str) -> Result<pb::FlowView, tonic::Status> {
        self.grpc
            .flows()
            .disconnect_service(DisconnectServiceRequest {
                flow: Some(flow.clone()),
                service: service.into(),
            })
            .await
            .map(|r| r.into_inner())
    }

    async fn connections(&self) -> Vec<ConnectionRow> {
        self.cp
            .core()
            .store
            .list_connections(None, Some("notes"))
            .await
            .expect("list connections")
            .into_iter()
            .collect()
    }

    /// The access token of a stored connection, opened with the vault.
    fn open_access(&self, row: &ConnectionRow) -> String {
        let owner = row.owner();
        self.cp
            .core()
            .vault
            .open_secret(connections::aad("access_ct", &row.id, &owner, &row.service), &row.access_ct)
            .expect("the connection's access token opens in its own row")
            .expose()
            .to_string()
    }

    async fn userinfo_status(&self, access_token: &str) -> StatusCode {
        self.browser
            .get(format!("{}/userinfo", self.demo.base_url()))
            .bearer_auth(access_token)
            .send()
            .await
            .expect("userinfo")
            .status()
    }
}

/// The parameters of an upstream's redirect to a callback.
#[derive(Debug, Clone, Default)]
struct Callback {
    state: String,
    code: String,
    iss: String,
    error: String,
    error_description: String,
}

impl From<Vec<(String, String)>> for Callback {
    fn from(params: Vec<(String, String)>) -> Self {
        let get = |name: &str| {
            params
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        };
        Self {
            state: get("state"),
            code: get("code"),
            iss: get("iss"),
            error: get("error"),
            error_description: get("error_description"),
        }
    }
}

impl Callback {
    /// The CompleteConnect request this redirect makes, from the browser holding `flow`.
    fn request(&self, flow: &FlowRef) -> CompleteConnectRequest {
        CompleteConnectRequest {
            state: self.state.clone(),
            code: self.code.clone(),
            error: self.error.clone(),
            error_description: self.error_description.clone(),
            iss: self.iss.clone(),
            browser_secret: flow.browser_secret.clone(),
            remote_addr: "192.0.2.9:4000".into(),
            ..Default::default()
        }
    }
}

/// The machine-readable reason in a refusal's details.
fn reason(status: &tonic::Status) -> ErrorReason {
    let detail = gatehouse::admin_client::error_detail(status).expect("refusals carry an ErrorDetail");
    ErrorReason::try_from(detail.reason).expect("known reason")
}

fn query_param(url: &str, name: &str) -> Option<String> {
    url::Url::parse(url)
        .ok()?
        .query_pairs()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.into_owned())
}

// === Connect ===

store_test!(
    connect_discovers_registers_once_and_stores_a_sealed_connection,
    |db| async move {
        let up = Upstream::start(&db).await;
        let flow = up.skipped_flow().await;

        let url = up.connect(&flow, "notes").await.expect("ConnectService");
        assert!(url.starts_with(&format!("{}/authorize?", up.demo.base_url())), "{url}");
        assert_eq!(query_param(&url, "code_challenge_method").as_deref(), Some("S256"));
        assert_eq!(query_param(&url, "scope").as_deref(), Some("notes.read"));
        assert_eq!(query_param(&url, "resource"), Some(up.demo.mcp_url()));
        assert_eq!(
            query_param(&url, "redirect_uri"),
            Some(format!("{PUBLIC_URL}/oauth/callback"))
        );
        let state = query_param(&url, "state").expect("state");
        assert!(state.starts_with("gh_st_"));
        // Only the hash of the state is stored.
        let attempt = up
            .cp
            .core()
            .store
            .get_upstream_attempt(&secret::hash(&state))
            .await
            .unwrap()
            .expect("the attempt, by the state's hash");
        assert_eq!(attempt.flow_id.as_deref(), Some(flow.flow_id.as_str()));
        assert_eq!(up.demo.stats().registrations(), 1, "registered dynamically");

        let callback = Callback::from(up.walk_demo(&url, "alice", "allow").await);
        assert_eq!(callback.iss, up.demo.base_url());
        let done = up.complete(callback.request(&flow)).await.expect("CompleteConnect");
        assert_eq!(
            (
                done.flow_id.as_str(),
                done.service.as_str(),
                done.connected,
                done.notice.as_str()
            ),
            (flow.flow_id.as_str(), "notes", true, "")
        );

        let rows = up.connections().await;
        assert_eq!(rows.len(), 1);
        let row = &rows[0];
        assert_eq!(
            row.flow_id.as_deref(),
            Some(flow.flow_id.as_str()),
            "the flow owns it until Approve"
        );
        assert_eq!(row.identity_id, None);
        assert_eq!(row.account, "alice", "from the demo's userinfo");
        assert_eq!(row.scopes, "notes.read");
        assert!(row.refresh_ct.is_some());
        assert!(row.expires_at.is_some());
        let access = up.open_access(row);
        assert!(!contains(&row.access_ct, &access), "sealed, not stored in plaintext");
        assert_eq!(up.userinfo_status(&access).await, StatusCode::OK, "a live upstream token");

        // The services page shows it.
        let view = up.get_flow(&flow).await;
        let notes = view.services.iter().find(|s| s.service == "notes").expect("notes listed");
        assert_eq!(notes.connection.as_ref().map(|c| c.account.as_str()), Some("alice"));

        // The same state again: single use.
        let replay = up.complete(callback.request(&flow)).await.unwrap_err();
        assert_eq!(reason(&replay), ErrorReason::AlreadyUsed);

        // Reconnect: discovery and registration are remembered, the connection replaced.
        let again = up.authorized(&flow, "alice2").await;
        assert!(up.complete(again.request(&flow)).await.unwrap().connected);
        assert_eq!(up.demo.stats().registrations(), 1, "registered once per service");
        let rows = up.connections().await;
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].account, "alice2");
        assert_eq!(up.demo.stats().code_exchanges(), 2);

        // Disconnect removes it and revokes at the provider.
        let old_access = up.open_access(&rows[0]);
        let view = up.disconnect(&flow, "notes").await.expect("DisconnectService");
        let notes = view.services.iter().find(|s| s.service == "notes").expect("notes listed");
        assert!(
            notes
                .connection
                .as_ref()
                .is_none_or(|c| c.status == pb::ConnectionStatus::NotConnected as i32),
            "{notes:?}"
        );
        assert!(up.connections().await.is_empty());
        assert!(up.demo.stats().revocations() >= 1, "revoked at the provider");
        assert_eq!(up.userinfo_status(&old_access).await, StatusCode::UNAUTHORIZED);

        let actions = up
            .cp
            .core()
            .store
            .query_audit(&AuditQuery {
                limit: 1000,
                ..Default::default()
            })
            .await
            .unwrap();
        let actions: Vec<&str> = actions.iter().map(|e| e.action.as_str()).collect();
        assert!(actions.contains(&"connection.connect"), "{actions:?}");
        assert!(actions.contains(&"connection.disconnect"), "{actions:?}");
    }
);

store_test!(
    connections_of_an_abandoned_anonymous_identity_stop_refreshing_and_are_revoked_when_swept,
    |db| async move {
        let up = Upstream::start(&db).await;
        let core = up.cp.core().clone();
        // Skip, connect, approve: the connection is the anonymous identity's.
        // The client never redeems its code, so no grant will ever use it.
        let flow = up.skipped_flow().await;
        let callback = up.authorized(&flow, "alice").await;
        assert!(up.complete(callback.request(&flow)).await.unwrap().connected);
        up.grpc
            .flows()
            .approve(pb::ApproveRequest {
                flow: Some(flow.clone()),
            })
            .await
            .expect("Approve");
        let row = up.connections().await.pop().expect("the connection");
        let identity = row.identity_id.clone().expect("moved to the identity");
        let access = up.open_access(&row);
        assert_eq!(up.userinfo_status(&access).await, StatusCode::OK);

        // Two hours on, the code and flow have expired and the upstream token is
        // due: the refresher leaves it alone, as nobody can use it any more.
        up.clock.advance(2 * 3600);
        let report = gatehouse_control_plane::refresher::refresh_due_once(&core).await.unwrap();
        assert_eq!(report.due, 0, "{report:?}");
        assert_eq!(up.demo.stats().refreshes(), 0);
        // Within the grace it stays.
        let report = sweep_once(&core, core.now()).await.unwrap();
        assert_eq!((report.connections, report.identities), (0, 0), "{report:?}");
        assert_eq!(up.connections().await.len(), 1);

        // A day later it goes, revoked at the provider like an administrator's
        // delete (refresh token and access token), and its identity with it.
        up.clock.advance(24 * 3600);
        let report = sweep_once(&core, core.now()).await.unwrap();
        assert_eq!(
            (report.connections, report.identities, report.approved_clients),
            (1, 1, 1),
            "{report:?}"
        );
        assert!(up.connections().await.is_empty());
        assert_eq!(up.demo.stats().revocations(), 2, "both tokens revoked (RFC 7009)");
        assert_eq!(up.userinfo_status(&access).await, StatusCode::UNAUTHORIZED);
        assert!(core.store.get_identity(&identity).await.unwrap().is_none());
        let deleted = core
            .store
            .query_audit(&AuditQuery {
                action_prefix: Some("connection.delete".into()),
                limit: 10,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(deleted.len(), 1);
        assert_eq!(deleted[0].actor, "system:sweeper");
        assert!(
            deleted[0].detail.contains(r#""revoked_upstream":true"#),
            "{}",
            deleted[0].detail
        );
    }
);

store_test!(connect_needs_an_identity_and_an_oauth_service, |db| async move {
    let up = Upstream::start(&db).await;
    let flow = up.open_flow().await;
    let early = up.connect(&flow, "notes").await.unwrap_err();
    assert_eq!(reason(&early), ErrorReason::OutOfOrder);
    up.grpc
        .flows()
        .choose_identity(ChooseIdentityRequest {
            flow: Some(flow.clone()),
            choice: Some(Choice::Skip(true)),
        })
        .await
        .unwrap();
    let unknown = up.connect(&flow, "nope").await.unwrap_err();
    assert_eq!((unknown.code(), reason(&unknown)), (Code::NotFound, ErrorReason::NotFound));
    let mut stranger = flow.clone();
    stranger.browser_secret = secret::generate("gh_bs_").expose().to_string();
    let wrong = up.connect(&stranger, "notes").await.unwrap_err();
    assert_eq!(reason(&wrong), ErrorReason::WrongBrowser);
    // No state exists before the click on Connect (SPEC-NOTES §5.2).
    assert_eq!(up.demo.stats().registrations(), 0);
});

// === Callback refusals ===

store_test!(callback_refusals_name_the_attack, |db| async move {
    let up = Upstream::start(&db).await;
    let flow = up.skipped_flow().await;
    let other = up.skipped_flow().await;

    // A state presented with another browser's flow secret: refused, and not spent.
    let callback = up.authorized(&flow, "alice").await;
    let stolen = up.complete(callback.request(&other)).await.unwrap_err();
    assert_eq!(reason(&stolen), ErrorReason::WrongBrowser);
    assert!(up.connections().await.is_empty());
    assert!(
        up.complete(callback.request(&flow)).await.unwrap().connected,
        "the right browser still completes"
    );

    // An unknown state.
    let mut forged = callback.request(&flow);
    forged.state = secret::generate("gh_st_").expose().to_string();
    let unknown = up.complete(forged).await.unwrap_err();
    assert_eq!(reason(&unknown), ErrorReason::NotFound);

    // Mix-up (RFC 9207): an iss naming another server.
    let callback = up.authorized(&flow, "alice").await;
    let mut mixed = callback.request(&flow);
    mixed.iss = "http://127.0.0.1:1".into();
    let mixup = up.complete(mixed).await.unwrap_err();
    assert_eq!(
        (mixup.code(), reason(&mixup)),
        (Code::InvalidArgument, ErrorReason::InvalidRequest)
    );

    // The person denies at the provider: no connection, a notice for the page.
    let url = up.connect(&flow, "notes").await.unwrap();
    let denied = Callback::from(up.walk_demo(&url, "alice", "deny").await);
    assert_eq!(denied.error, "access_denied");
    let done = up
        .complete(denied.request(&flow))
        .await
        .expect("a provider error is an answer");
    assert!(!done.connected);
    assert_eq!(done.flow_id, flow.flow_id);
    assert_eq!(done.notice, "Notes said: access_denied (The user denied the request.)");
    assert_eq!(
        up.get_flow(&flow).await.notice,
        done.notice,
        "shown once on the services page"
    );
    assert_eq!(up.get_flow(&flow).await.notice, "");

    // A state older than lifetimes.upstream_state (10 minutes).
    let late = up.authorized(&flow, "alice").await;
    up.clock.advance(10 * 60 + 1);
    let expired = up.complete(late.request(&flow)).await.unwrap_err();
    assert_eq!(reason(&expired), ErrorReason::Expired);
    assert_eq!(
        up.demo.stats().code_exchanges(),
        1,
        "only the one good callback reached /token"
    );
});

store_test!(transient_token_failures_are_retried, |db| async move {
    let up = Upstream::start(&db).await;
    let flow = up.skipped_flow().await;
    let callback = up.authorized(&flow, "alice").await;
    up.demo.fail_next_token_requests(2);
    let done = up.complete(callback.request(&flow)).await.expect("CompleteConnect");
    assert!(done.connected, "{done:?}");
    assert_eq!(up.demo.stats().token_requests(), 3, "two 503s, then success");
    assert_eq!(up.demo.stats().code_exchanges(), 1);

    // Three failures in a row exhaust the retries: no connection, a notice.
    let callback = up.authorized(&flow, "bob").await;
    up.demo.fail_next_token_requests(3);
    let done = up.complete(callback.request(&flow)).await.expect("an answer");
    assert!(!done.connected);
    assert!(done.notice.contains("not reachable"), "{}", done.notice);
    assert_eq!(up.connections().await[0].account, "alice", "the earlier connection stays");
});

store_test!(a_forgotten_registration_is_made_again, |db| async move {
    let up = Upstream::start(&db).await;
    let flow = up.skipped_flow().await;
    let url = up.connect(&flow, "notes").await.unwrap();
    let client_id = query_param(&url, "client_id").expect("client_id");
    let callback = Callback::from(up.walk_demo(&url, "alice", "allow").await);
    // The provider forgets Gatehouse between the consent and the code exchange.
    assert!(up.demo.remove_client(&client_id));
    let done = up.complete(callback.request(&flow)).await.expect("an answer");
    assert!(!done.connected);
    assert!(done.notice.contains("no longer knows Gatehouse"), "{}", done.notice);
    // The next connect registers again and works.
    let callback = up.authorized(&flow, "alice").await;
    assert_eq!(up.demo.stats().registrations(), 2);
    assert!(up.complete(callback.request(&flow)).await.unwrap().connected);
});

// === Sign-in ===

store_test!(sign_in_makes_a_verified_user_identity, |db| async move {
    let up = Upstream::start(&db).await;
    let flow = up.open_flow().await;
    assert!(up.get_flow(&flow).await.identity.is_none());

    let url = up
        .grpc
        .flows()
        .begin_sign_in(BeginSignInRequest {
            flow: Some(flow.clone()),
        })
        .await
        .expect("BeginSignIn")
        .into_inner()
        .authorization_url;
    assert_eq!(query_param(&url, "client_id").as_deref(), Some(SIGN_IN_CLIENT));
    assert_eq!(query_param(&url, "scope").as_deref(), Some("openid email profile"));
    assert_eq!(
        query_param(&url, "redirect_uri"),
        Some(format!("{PUBLIC_URL}/signin/callback"))
    );
    let nonce = query_param(&url, "nonce").expect("nonce");
    let state = query_param(&url, "state").expect("state");
    let attempt = up
        .cp
        .core()
        .store
        .get_upstream_attempt(&secret::hash(&state))
        .await
        .unwrap()
        .expect("attempt");
    assert_eq!(
        attempt.nonce_hash,
        Some(secret::hash(&nonce)),
        "only the nonce's hash is stored"
    );

    let callback = Callback::from(up.walk_demo(&url, "alice", "allow").await);
    let complete = |callback: &Callback, flow: &FlowRef| CompleteSignInRequest {
        browser_secret: flow.browser_secret.clone(),
        state: callback.state.clone(),
        code: callback.code.clone(),
        error: callback.error.clone(),
        error_description: callback.error_description.clone(),
        iss: callback.iss.clone(),
        remote_addr: "192.0.2.9:4000".into(),
        ..Default::default()
    };

    // Another browser cannot finish this sign-in.
    let other = up.open_flow().await;
    let stolen = up
        .grpc
        .flows()
        .complete_sign_in(complete(&callback, &other))
        .await
        .unwrap_err();
    assert_eq!(reason(&stolen), ErrorReason::WrongBrowser);

    let done = up
        .grpc
        .flows()
        .complete_sign_in(complete(&callback, &flow))
        .await
        .expect("CompleteSignIn")
        .into_inner();
    assert_eq!(done.flow_id, flow.flow_id);
    let view = up.get_flow(&flow).await;
    assert_eq!(view.step, pb::FlowStep::Services as i32);
    let identity = view.identity.expect("an identity");
    assert_eq!(identity.kind, pb::IdentityKind::User as i32);
    assert_eq!(identity.subject, format!("{}#alice", up.demo.base_url()));
    assert_eq!(identity.display_name, "alice@demo.test");

    // Used once.
    let replay = up
        .grpc
        .flows()
        .complete_sign_in(complete(&callback, &flow))
        .await
        .unwrap_err();
    assert_eq!(reason(&replay), ErrorReason::AlreadyUsed);

    // The same person signing in again is the same identity.
    let second = up.open_flow().await;
    let url = up
        .grpc
        .flows()
        .begin_sign_in(BeginSignInRequest {
            flow: Some(second.clone()),
        })
        .await
        .unwrap()
        .into_inner()
        .authorization_url;
    let callback = Callback::from(up.walk_demo(&url, "alice", "allow").await);
    up.grpc
        .flows()
        .complete_sign_in(complete(&callback, &second))
        .await
        .expect("second sign-in");
    assert_eq!(up.get_flow(&second).await.identity.unwrap().id, identity.id);

    // Cancelling at the provider leaves the flow as it was, with a notice.
    let third = up.open_flow().await;
    let url = up
        .grpc
        .flows()
        .begin_sign_in(BeginSignInRequest {
            flow: Some(third.clone()),
        })
        .await
        .unwrap()
        .into_inner()
        .authorization_url;
    let denied = Callback::from(up.walk_demo(&url, "alice", "deny").await);
    up.grpc
        .flows()
        .complete_sign_in(complete(&denied, &third))
        .await
        .expect("a provider error is an answer");
    let view = up.get_flow(&third).await;
    assert!(view.identity.is_none());
    assert!(view.notice.starts_with("Demo sign-in said: access_denied"), "{}", view.notice);
});
