//! `TestFleet`: one control plane and N data planes on port 0, sharing one
//! issuer (the first data plane's URL); `Edge`, what a client sees of any
//! fleet (its data planes' URLs and the issuer: this one, or the separate
//! processes of `process_fleet`) and the OAuth steps against it; `Browser`, a cookie-keeping HTTP
//! client with redirects off that walks the consent pages. Happy-path helpers
//! assert and return typed values; each has a `_raw` twin returning the
//! `reqwest::Response` for refusal tests.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use gatehouse_control_plane::clock::TestClock;
use gatehouse_control_plane::config::ControlPlaneConfig;
use gatehouse_data_plane::DataPlane;
use gatehouse_data_plane::config::{ControlPlaneClientConfig, Credential, DataPlaneConfig};
use reqwest::header::{self, HeaderMap};
use reqwest::{Response, StatusCode};
use serde_json::Value;
use sha2::{Digest as _, Sha256};

use super::plane::{DATA_PLANE, TestControlPlane};
use super::{Backend, TestDb};

/// What a client sees of a fleet: its data planes and the issuer they share.
pub struct Edge {
    /// Every data plane's base URL (`http://127.0.0.1:port`), in start order.
    pub urls: Vec<String>,
    /// The issuer every data plane announces: `urls[0]`.
    pub issuer: String,
}

/// One control plane and its data planes.
pub struct TestFleet {
    edge: Edge,
    pub clock: Arc<TestClock>,
    pub control_plane: TestControlPlane,
    data_planes: Vec<DataPlane>,
    _db: TestDb,
}

type ConfigureControlPlane = Box<dyn FnOnce(&mut ControlPlaneConfig) + Send>;
type ConfigureDataPlane = Box<dyn Fn(&mut DataPlaneConfig) + Send>;

/// How to build a fleet.
pub struct FleetBuilder {
    data_planes: usize,
    /// The database to use; a fresh SQLite file when unset.
    database: Option<TestDb>,
    configure_control_plane: Vec<ConfigureControlPlane>,
    configure_data_plane: Vec<ConfigureDataPlane>,
}

impl FleetBuilder {
    pub fn data_planes(mut self, n: usize) -> Self {
        assert!(n >= 1, "a fleet needs a data plane");
        self.data_planes = n;
        self
    }

    /// Runs the fleet on `db` (for tests that run on both backends, `store_test!`).
    pub fn database(mut self, db: TestDb) -> Self {
        self.database = Some(db);
        self
    }

    /// Adjusts the control plane's settings (after the test defaults).
    pub fn control_plane(mut self, configure: impl FnOnce(&mut ControlPlaneConfig) + Send + 'static) -> Self {
        self.configure_control_plane.push(Box::new(configure));
        self
    }

    /// Adjusts every data plane's settings.
    pub fn data_plane(mut self, configure: impl Fn(&mut DataPlaneConfig) + Send + 'static) -> Self {
        self.configure_data_plane.push(Box::new(configure));
        self
    }

    pub async fn spawn(self) -> TestFleet {
        super::init_logging();
        let db = match self.database {
            Some(db) => db,
            None => TestDb::new(Backend::Sqlite).await,
        };
        // Bind every data plane's listener first: the issuer is the first one's URL,
        // and the control plane must know it (it writes `iss` and redirects).
        let mut listeners = Vec::new();
        for _ in 0..self.data_planes {
            listeners.push(tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind data plane"));
        }
        let urls: Vec<String> = listeners
            .iter()
            .map(|l| format!("http://{}", l.local_addr().expect("addr")))
            .collect();
        let issuer = urls[0].clone();
        let clock = Arc::new(TestClock::default());
        let public_url = issuer.clone();
        let configure = self.configure_control_plane;
        let control_plane = TestControlPlane::start_configured(&db, clock.clone(), move |config| {
            config.public_url = public_url;
            for configure in configure {
                configure(config);
            }
        })
        .await;
        let mut data_planes = Vec::new();
        for listener in listeners {
            let mut config = DataPlaneConfig {
                listen: listener.local_addr().expect("addr"),
                control_plane: ControlPlaneClientConfig {
                    urls: vec![control_plane.url.clone()],
                    token: Credential::new(DATA_PLANE),
                    ..Default::default()
                },
                public_url: issuer.clone(),
                ..Default::default()
            };
            for configure in &self.configure_data_plane {
                configure(&mut config);
            }
            data_planes.push(DataPlane::start(config, listener).await.expect("data plane starts"));
        }
        TestFleet {
            edge: Edge { urls, issuer },
            clock,
            control_plane,
            data_planes,
            _db: db,
        }
    }
}

impl TestFleet {
    pub fn builder() -> FleetBuilder {
        FleetBuilder {
            data_planes: 1,
            database: None,
            configure_control_plane: Vec::new(),
            configure_data_plane: Vec::new(),
        }
    }

    /// A fleet of `n` data planes with default settings.
    pub async fn start(n: usize) -> Self {
        Self::builder().data_planes(n).spawn().await
    }

    /// The fleet's database, for "nothing changed" and "nothing stored" checks.
    pub fn db(&self) -> &TestDb {
        &self._db
    }

    /// Stops the control plane (the data planes keep running), for outage tests.
    pub async fn stop_control_plane(&mut self) {
        if let Some(plane) = self.control_plane.plane.take() {
            plane.shutdown().await;
        }
    }

    /// Stops everything.
    pub async fn stop(self) {
        for plane in self.data_planes {
            plane.shutdown().await;
        }
        self.control_plane.stop().await;
    }
}

impl std::ops::Deref for TestFleet {
    type Target = Edge;

    fn deref(&self) -> &Edge {
        &self.edge
    }
}

impl Edge {
    /// The base URL of data plane `i` (modulo the fleet size, for round-robin walks).
    pub fn url(&self, i: usize) -> &str {
        &self.urls[i % self.urls.len()]
    }

    /// A client with redirects off and no cookies (what an MCP client is).
    pub fn http(&self) -> reqwest::Client {
        no_redirects()
    }

    /// A new browser with an empty cookie jar.
    pub fn browser(&self) -> Browser {
        Browser::new()
    }

    // === Registration ===

    pub async fn register_raw(&self, metadata: &Value) -> Response {
        self.http()
            .post(format!("{}/register", self.issuer))
            .json(metadata)
            .send()
            .await
            .expect("POST /register")
    }

    /// Registers `metadata`, asserting 201; the client's first redirect URI is the one it uses.
    pub async fn register(&self, metadata: Value) -> RegisteredClient {
        let response = self.register_raw(&metadata).await;
        assert_eq!(response.status(), StatusCode::CREATED, "registration of {metadata}");
        let body: Value = response.json().await.expect("registration JSON");
        RegisteredClient {
            client_id: body["client_id"].as_str().expect("client_id").to_owned(),
            client_secret: body["client_secret"].as_str().map(str::to_owned),
            redirect_uri: body["redirect_uris"][0].as_str().expect("redirect_uris").to_owned(),
        }
    }

    /// A public client (`none`) with a loopback redirect URI.
    pub async fn register_public(&self) -> RegisteredClient {
        self.register(serde_json::json!({
            "client_name": "Test Client",
            "redirect_uris": ["http://127.0.0.1:33418/callback"],
            "token_endpoint_auth_method": "none",
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
        }))
        .await
    }

    /// A confidential client authenticating with `method` (`client_secret_basic` or `_post`).
    pub async fn register_confidential(&self, method: &str) -> RegisteredClient {
        let client = self
            .register(serde_json::json!({
                "client_name": "Confidential Client",
                "redirect_uris": ["https://app.example.com/callback"],
                "token_endpoint_auth_method": method,
                "grant_types": ["authorization_code", "refresh_token"],
            }))
            .await;
        assert!(client.client_secret.is_some(), "a confidential client gets a secret");
        client
    }

    // === Token endpoint ===

    /// `POST /token` on data plane `dp` with `form`, authenticating as `auth` says.
    pub async fn token_raw(&self, dp: usize, form: &[(&str, &str)], auth: &ClientAuth<'_>) -> Response {
        post_form(&self.http(), &format!("{}/token", self.url(dp)), form, auth).await
    }

    /// `POST /revoke` on data plane `dp`.
    pub async fn revoke_raw(&self, dp: usize, form: &[(&str, &str)], auth: &ClientAuth<'_>) -> Response {
        post_form(&self.http(), &format!("{}/revoke", self.url(dp)), form, auth).await
    }

    /// Exchanges `code`, asserting a token response.
    pub async fn exchange_code(&self, dp: usize, client: &RegisteredClient, code: &AuthorizationCode) -> Tokens {
        let form = [
            ("grant_type", "authorization_code"),
            ("code", code.code.as_str()),
            ("code_verifier", code.verifier.as_str()),
            ("redirect_uri", client.redirect_uri.as_str()),
        ];
        let response = self.token_raw(dp, &form, &client.auth()).await;
        Tokens::from_response(response).await
    }

    /// Refreshes, asserting a token response.
    pub async fn refresh(&self, dp: usize, client: &RegisteredClient, refresh_token: &str) -> Tokens {
        let form = [("grant_type", "refresh_token"), ("refresh_token", refresh_token)];
        let response = self.token_raw(dp, &form, &client.auth()).await;
        Tokens::from_response(response).await
    }

    /// `/mcp` with an optional bearer token.
    pub async fn mcp_raw(&self, dp: usize, method: reqwest::Method, bearer: Option<&str>) -> Response {
        let mut request = self
            .http()
            .request(method, format!("{}/mcp", self.url(dp)))
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::ACCEPT, "application/json, text/event-stream")
            .body(r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#);
        if let Some(token) = bearer {
            request = request.bearer_auth(token);
        }
        request.send().await.expect("/mcp")
    }
}

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("HTTP client")
}

async fn post_form(http: &reqwest::Client, url: &str, form: &[(&str, &str)], auth: &ClientAuth<'_>) -> Response {
    let mut fields: Vec<(&str, &str)> = form.to_vec();
    let mut request = http.post(url);
    match auth {
        ClientAuth::Public(id) => fields.push(("client_id", id)),
        ClientAuth::Post(id, secret) => {
            fields.push(("client_id", id));
            fields.push(("client_secret", secret));
        }
        ClientAuth::Basic(id, secret) => {
            request = request.header(header::AUTHORIZATION, basic_authorization(id, secret));
        }
    }
    request.form(&fields).send().await.expect("POST form")
}

/// `Basic base64(urlencode(id):urlencode(secret))` (RFC 6749 §2.3.1).
pub fn basic_authorization(id: &str, secret: &str) -> String {
    let encode = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    format!("Basic {}", STANDARD.encode(format!("{}:{}", encode(id), encode(secret))))
}

/// How a request authenticates the client at /token and /revoke.
pub enum ClientAuth<'a> {
    /// `client_id` in the body, no secret.
    Public(&'a str),
    /// `client_id` and `client_secret` in the body.
    Post(&'a str, &'a str),
    /// HTTP Basic.
    Basic(&'a str, &'a str),
}

/// A registered client.
#[derive(Debug, Clone)]
pub struct RegisteredClient {
    pub client_id: String,
    pub client_secret: Option<String>,
    pub redirect_uri: String,
}

impl RegisteredClient {
    /// Public clients send their id; confidential ones use HTTP Basic.
    pub fn auth(&self) -> ClientAuth<'_> {
        match &self.client_secret {
            None => ClientAuth::Public(&self.client_id),
            Some(secret) => ClientAuth::Basic(&self.client_id, secret),
        }
    }
}

/// A PKCE pair (RFC 7636, S256).
#[derive(Debug, Clone)]
pub struct Pkce {
    pub verifier: String,
    pub challenge: String,
}

impl Pkce {
    pub fn new() -> Self {
        let verifier = URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>());
        let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
        Self { verifier, challenge }
    }
}

/// The parameters of an authorization request, each overridable.
pub fn authorize_params(client: &RegisteredClient, pkce: &Pkce, state: &str) -> Vec<(String, String)> {
    [
        ("response_type", "code"),
        ("client_id", client.client_id.as_str()),
        ("redirect_uri", client.redirect_uri.as_str()),
        ("code_challenge", pkce.challenge.as_str()),
        ("code_challenge_method", "S256"),
        ("scope", "mcp"),
        ("state", state),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// A code from the redirect after Approve, with what exchanging it needs.
#[derive(Debug, Clone)]
pub struct AuthorizationCode {
    pub code: String,
    pub verifier: String,
}

/// A successful token response.
#[derive(Debug, Clone)]
pub struct Tokens {
    pub access_token: String,
    pub refresh_token: Option<String>,
    pub expires_in: i64,
    pub scope: Option<String>,
    pub headers: HeaderMap,
}

impl Tokens {
    pub async fn from_response(response: Response) -> Self {
        let status = response.status();
        let headers = response.headers().clone();
        let body: Value = response.json().await.expect("token JSON");
        assert_eq!(status, StatusCode::OK, "token response: {body}");
        assert_eq!(body["token_type"], "Bearer");
        Self {
            access_token: body["access_token"].as_str().expect("access_token").to_owned(),
            refresh_token: body["refresh_token"].as_str().map(str::to_owned),
            expires_in: body["expires_in"].as_i64().expect("expires_in"),
            scope: body["scope"].as_str().map(str::to_owned),
            headers,
        }
    }
}

/// A page fetched by the browser.
#[derive(Debug, Clone)]
pub struct PageHtml {
    pub headers: HeaderMap,
    pub html: String,
}

impl PageHtml {
    /// The value of the hidden `csrf` field (every form carries the same one).
    pub fn csrf(&self) -> String {
        gatehouse::demo::hidden_fields(&self.html)
            .into_iter()
            .find(|(name, _)| name == "csrf")
            .map(|(_, value)| value)
            .unwrap_or_else(|| panic!("no csrf field in {}", self.html))
    }
}

/// A browser: one cookie jar (kept by hand, as a browser would, ignoring ports),
/// redirects off so each step is asserted.
pub struct Browser {
    http: reqwest::Client,
    jar: Mutex<BTreeMap<String, String>>,
}

impl Default for Browser {
    fn default() -> Self {
        Self::new()
    }
}

impl Browser {
    /// A browser with an empty cookie jar, for servers outside a fleet (`gatehouse up`).
    pub fn new() -> Self {
        Self {
            http: no_redirects(),
            jar: Mutex::new(BTreeMap::new()),
        }
    }

    /// The value of cookie `name`, if set.
    pub fn cookie(&self, name: &str) -> Option<String> {
        self.jar.lock().expect("jar").get(name).cloned()
    }

    /// Sets (or with `None` removes) a cookie by hand, to forge or drop it.
    pub fn set_cookie(&self, name: &str, value: Option<&str>) {
        let mut jar = self.jar.lock().expect("jar");
        match value {
            Some(value) => jar.insert(name.to_owned(), value.to_owned()),
            None => jar.remove(name),
        };
    }

    fn cookie_header(&self) -> Option<String> {
        let jar = self.jar.lock().expect("jar");
        (!jar.is_empty()).then(|| jar.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; "))
    }

    fn keep_cookies(&self, response: &Response) {
        let mut jar = self.jar.lock().expect("jar");
        for value in response.headers().get_all(header::SET_COOKIE) {
            let value = value.to_str().expect("ASCII Set-Cookie");
            let mut parts = value.split(';');
            let Some((name, cookie)) = parts.next().and_then(|p| p.trim().split_once('=')) else {
                continue;
            };
            let expired = parts.any(|p| p.trim().eq_ignore_ascii_case("Max-Age=0"));
            if expired {
                jar.remove(name);
            } else {
                jar.insert(name.to_owned(), cookie.to_owned());
            }
        }
    }

    /// GET `url` with the browser's cookies.
    pub async fn get_raw(&self, url: &str) -> Response {
        let mut request = self.http.get(url);
        if let Some(cookies) = self.cookie_header() {
            request = request.header(header::COOKIE, cookies);
        }
        let response = request.send().await.unwrap_or_else(|e| panic!("GET {url}: {e}"));
        self.keep_cookies(&response);
        response
    }

    /// POST a form to `url` with the browser's cookies.
    pub async fn post_raw(&self, url: &str, form: &[(&str, &str)]) -> Response {
        let mut request = self.http.post(url).form(form);
        if let Some(cookies) = self.cookie_header() {
            request = request.header(header::COOKIE, cookies);
        }
        let response = request.send().await.unwrap_or_else(|e| panic!("POST {url}: {e}"));
        self.keep_cookies(&response);
        response
    }

    /// `GET /authorize` on `base` with `params`.
    pub async fn authorize_raw(&self, base: &str, params: &[(String, String)]) -> Response {
        let query = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(params)
            .finish();
        self.get_raw(&format!("{base}/authorize?{query}")).await
    }

    /// Authorizes `client`, asserting the 303 to `/consent/{flow_id}` and the
    /// flow cookie; returns the flow id.
    pub async fn authorize(&self, base: &str, params: &[(String, String)]) -> String {
        let response = self.authorize_raw(base, params).await;
        assert_eq!(
            response.status(),
            StatusCode::SEE_OTHER,
            "authorize: {}",
            response.text().await.unwrap_or_default()
        );
        assert!(
            response.headers().get(header::ACCESS_CONTROL_ALLOW_ORIGIN).is_none(),
            "no CORS on /authorize"
        );
        let location = location(&response);
        let flow_id = location
            .strip_prefix("/consent/")
            .unwrap_or_else(|| panic!("authorize redirects to the consent page, not {location}"))
            .to_owned();
        assert!(self.cookie("gatehouse-flow").is_some(), "the flow cookie is set");
        flow_id
    }

    /// GET a consent page, asserting 200.
    pub async fn page(&self, url: &str) -> PageHtml {
        let response = self.get_raw(url).await;
        let status = response.status();
        let headers = response.headers().clone();
        let html = response.text().await.expect("page body");
        assert_eq!(status, StatusCode::OK, "GET {url}: {html}");
        PageHtml { headers, html }
    }

    /// POST a form, asserting a 303; returns the Location.
    pub async fn post_see_other(&self, url: &str, form: &[(&str, &str)]) -> String {
        let response = self.post_raw(url, form).await;
        let status = response.status();
        let location = response
            .headers()
            .get(header::LOCATION)
            .map(|v| v.to_str().expect("ASCII Location").to_owned());
        let body = response.text().await.unwrap_or_default();
        assert_eq!(status, StatusCode::SEE_OTHER, "POST {url}: {body}");
        location.expect("Location")
    }
}

/// The Location header of a redirect.
pub fn location(response: &Response) -> String {
    response
        .headers()
        .get(header::LOCATION)
        .unwrap_or_else(|| panic!("{} has no Location", response.status()))
        .to_str()
        .expect("ASCII Location")
        .to_owned()
}

/// The query parameters of `url` (every value of each name).
pub fn query_of(url: &str) -> BTreeMap<String, Vec<String>> {
    let parsed = url::Url::parse(url).unwrap_or_else(|e| panic!("{url}: {e}"));
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (k, v) in parsed.query_pairs() {
        out.entry(k.into_owned()).or_default().push(v.into_owned());
    }
    out
}

// === Walking a consent flow (shared by the consent and gateway suites) ===

/// The `state` the helpers send to `/authorize` (characters that need encoding included).
pub const STATE: &str = "st-8f3a/+ state";

/// Authorizes on data plane `dp` and walks to the identity page; returns the flow id and the page.
pub async fn start_flow(
    fleet: &Edge,
    browser: &Browser,
    dp: usize,
    client: &RegisteredClient,
    pkce: &Pkce,
) -> (String, PageHtml) {
    let flow_id = browser.authorize(fleet.url(dp), &authorize_params(client, pkce, STATE)).await;
    let page = browser.page(&format!("{}/consent/{flow_id}/identity", fleet.url(dp))).await;
    (flow_id, page)
}

/// Chooses Skip and returns the services page.
pub async fn skip(fleet: &Edge, browser: &Browser, dp: usize, flow_id: &str, csrf: &str) -> PageHtml {
    let to = browser
        .post_see_other(
            &format!("{}/consent/{flow_id}/identity", fleet.url(dp)),
            &[("csrf", csrf), ("choice", "skip")],
        )
        .await;
    assert_eq!(to, format!("/consent/{flow_id}/services"));
    browser.page(&format!("{}{to}", fleet.url(dp))).await
}

/// Chooses the virtual key `key` and returns the services page.
pub async fn choose_virtual_key(fleet: &Edge, browser: &Browser, dp: usize, flow_id: &str, csrf: &str, key: &str) -> PageHtml {
    let to = browser
        .post_see_other(
            &format!("{}/consent/{flow_id}/identity", fleet.url(dp)),
            &[("csrf", csrf), ("choice", "virtual_key"), ("virtual_key", key)],
        )
        .await;
    assert_eq!(to, format!("/consent/{flow_id}/services"));
    browser.page(&format!("{}{to}", fleet.url(dp))).await
}

/// Approves, asserting the 303 to the redirect URI with code, state and iss.
pub async fn approve(
    fleet: &Edge,
    browser: &Browser,
    dp: usize,
    client: &RegisteredClient,
    flow_id: &str,
    csrf: &str,
    pkce: &Pkce,
) -> AuthorizationCode {
    let to = browser
        .post_see_other(&format!("{}/consent/{flow_id}/approve", fleet.url(dp)), &[("csrf", csrf)])
        .await;
    assert!(
        to.starts_with(&format!("{}?", client.redirect_uri)),
        "approve sends the browser to the client: {to}"
    );
    let query = query_of(&to);
    assert_eq!(query["state"], vec![STATE.to_owned()], "state is echoed exactly");
    assert_eq!(query["iss"], vec![fleet.issuer.clone()], "iss is the issuer (RFC 9207)");
    assert!(!query.contains_key("error"));
    let code = query["code"][0].clone();
    assert!(!code.is_empty());
    AuthorizationCode {
        code,
        verifier: pkce.verifier.clone(),
    }
}

/// Follows the answer to a Connect, sign-in or connect-link post as a browser
/// does: the 303 to the continuation page of the origin that answered, then
/// the page's link on to the provider, which is returned.
pub async fn follow_onward(browser: &Browser, response: Response) -> String {
    let status = response.status();
    assert_eq!(
        status,
        StatusCode::SEE_OTHER,
        "a Connect, sign-in or connect-link post answers 303"
    );
    let to = location(&response);
    assert!(
        (to.starts_with("/consent/") || to.starts_with("/connect/")) && to.contains("/continue?"),
        "303 to the continuation page of this origin, not {to}"
    );
    let base = response.url().origin().ascii_serialization();
    let page = browser.page(&format!("{base}{to}")).await;
    assert!(page.html.contains(r#"http-equiv="refresh""#), "{}", page.html);
    continuation_link(&page.html)
}

/// The continuation link of `redirect.html` (after Connect), entities decoded.
pub fn continuation_link(html: &str) -> String {
    let start = html.find(r#"<a class="button" href=""#).expect("continuation link") + r#"<a class="button" href=""#.len();
    let end = html[start..].find('"').unwrap();
    html[start..start + end].replace("&#38;", "&").replace("&amp;", "&")
}

/// At the demo upstream's consent page `upstream_url`, allows as `account`;
/// returns where the upstream sends the browser back (Gatehouse's `/oauth/callback`).
pub async fn allow_at_demo(browser: &Browser, demo_base: &str, upstream_url: &str, account: &str) -> String {
    decide_at_demo(browser, demo_base, upstream_url, account, "allow").await
}

/// At the demo upstream's consent page `upstream_url`, answers `decision`
/// (`allow` or `deny`) as `account`; returns where the upstream sends the
/// browser back.
pub async fn decide_at_demo(browser: &Browser, demo_base: &str, upstream_url: &str, account: &str, decision: &str) -> String {
    let page = browser.page(upstream_url).await;
    let mut form = gatehouse::demo::hidden_fields(&page.html);
    form.push(("account".into(), account.into()));
    form.push(("decision".into(), decision.into()));
    let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let response = browser.post_raw(&format!("{demo_base}/authorize"), &form).await;
    assert!(response.status().is_redirection(), "{}", response.status());
    location(&response)
}

/// On the services page of `flow` (its id and CSRF token), connects `service`
/// at the demo upstream as `account`, landing the callback on data plane `dp`.
pub async fn connect_demo_service(
    fleet: &Edge,
    browser: &Browser,
    dp: usize,
    (flow_id, csrf): (&str, &str),
    service: &str,
    demo_base: &str,
    account: &str,
) {
    let response = browser
        .post_raw(
            &format!("{}/consent/{flow_id}/connect", fleet.url(dp)),
            &[("csrf", csrf), ("service", service)],
        )
        .await;
    let upstream_url = follow_onward(browser, response).await;
    let callback = allow_at_demo(browser, demo_base, &upstream_url, account).await;
    let callback = callback.replacen(&fleet.issuer, fleet.url(dp), 1);
    let response = browser.get_raw(&callback).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&response), format!("/consent/{flow_id}/services"));
}

/// The demo upstream (OAuth provider, OpenID provider and MCP server) on 127.0.0.1.
pub async fn demo_upstream() -> gatehouse::demo::DemoUpstream {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    gatehouse::demo::DemoUpstream::spawn(listener, gatehouse::demo::DemoConfig::default())
        .await
        .unwrap()
}

/// A fleet of `data_planes` whose identity page offers sign-in at the demo
/// provider `demo`, with `servers` registered.
pub async fn fleet_with_sign_in(
    demo: Arc<gatehouse::demo::DemoUpstream>,
    servers: Vec<gatehouse_control_plane::mcp_servers::McpServer>,
    data_planes: usize,
) -> TestFleet {
    TestFleet::builder()
        .data_planes(data_planes)
        .control_plane(move |config| {
            config.outbound.allow_loopback = true;
            config.mcp_servers = servers;
            config.sign_in = Some(demo.sign_in_config(&config.public_url).unwrap());
        })
        .spawn()
        .await
}
