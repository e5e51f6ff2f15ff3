//! Synthetic users: one public client registered once, then per user a whole
//! headless consent flow (GET /authorize → identity page → Skip → Connect the
//! per-user OAuth service at the demo provider → Approve → POST /token), each
//! with its own cookie jar, so every user has its own grant and its own sealed
//! upstream connection. Users are signed up concurrently, at most
//! `concurrency` at a time.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use reqwest::StatusCode;
use reqwest::header::{self, HeaderMap};
use serde_json::Value;
use sha2::{Digest as _, Sha256};
use tokio::sync::Semaphore;

pub const REDIRECT_URI: &str = "http://127.0.0.1:33418/callback";
const STATE: &str = "bench";

/// What signing up the users produced.
pub struct Users {
    /// One access token per user.
    pub tokens: Vec<String>,
    /// Wall time of each user's flow (authorize → token), under the concurrency used.
    pub flow_times: Vec<Duration>,
    /// Wall time of each `POST /token` code exchange, under the same concurrency.
    pub token_times: Vec<Duration>,
    /// Wall time of each connect step (Connect → provider consent → callback
    /// → services page), under the same concurrency.
    pub connect_times: Vec<Duration>,
    pub elapsed: Duration,
}

/// Where each user's consent flow connects: MCP server `service`, whose
/// authorization server is the demo provider at `demo_base`.
pub struct ConnectTo<'a> {
    pub demo_base: &'a str,
    pub service: &'a str,
}

/// Registers a client and signs up `count` users at `base` (the issuer), each
/// connecting `to.service` (as demo account `user<n>`) before Approve.
pub async fn sign_up(base: &str, to: &ConnectTo<'_>, count: usize, concurrency: usize) -> anyhow::Result<Users> {
    let http = client()?;
    let started = Instant::now();
    let client_id: Arc<str> = crate::consent::register(&http, base, "gatehouse-bench").await?.into();

    let permits = Arc::new(Semaphore::new(concurrency.max(1)));
    let base: Arc<str> = base.into();
    let (demo_base, service): (Arc<str>, Arc<str>) = (to.demo_base.into(), to.service.into());
    let mut tasks = tokio::task::JoinSet::new();
    for user in 0..count {
        let (http, permits, base, client_id) = (http.clone(), permits.clone(), base.clone(), client_id.clone());
        let (demo_base, service) = (demo_base.clone(), service.clone());
        tasks.spawn(async move {
            let _permit = permits.acquire_owned().await?;
            let to = ConnectTo {
                demo_base: &demo_base,
                service: &service,
            };
            let result = one_flow(&http, &base, &client_id, &to, &format!("user{user}")).await;
            result.with_context(|| format!("user {user}"))
        });
    }
    let mut users = Users {
        tokens: Vec::with_capacity(count),
        flow_times: Vec::with_capacity(count),
        token_times: Vec::with_capacity(count),
        connect_times: Vec::with_capacity(count),
        elapsed: Duration::ZERO,
    };
    while let Some(joined) = tasks.join_next().await {
        let flow = joined??;
        users.tokens.push(flow.token);
        users.flow_times.push(flow.total);
        users.token_times.push(flow.exchange);
        users.connect_times.push(flow.connect);
    }
    users.elapsed = started.elapsed();
    Ok(users)
}

/// A client that follows no redirects (each step is checked) and uses no proxy.
pub fn client() -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()?)
}

/// What one user's flow produced.
pub struct Flow {
    pub token: String,
    /// The whole flow's wall time.
    pub total: Duration,
    /// The connect step's.
    pub connect: Duration,
    /// The `POST /token` code exchange's.
    pub exchange: Duration,
}

/// One user's flow, connecting `connect_to.service` as demo account `account`.
pub async fn one_flow(
    http: &reqwest::Client,
    base: &str,
    client_id: &str,
    connect_to: &ConnectTo<'_>,
    account: &str,
) -> anyhow::Result<Flow> {
    let started = Instant::now();
    let verifier = verifier();
    let challenge = s256(&verifier);
    let mut jar = Jar::default();

    let authorize = url::Url::parse_with_params(
        &format!("{base}/authorize"),
        &[
            ("response_type", "code"),
            ("client_id", client_id),
            ("redirect_uri", REDIRECT_URI),
            ("code_challenge", challenge.as_str()),
            ("code_challenge_method", "S256"),
            ("scope", "mcp"),
            ("state", STATE),
        ],
    )?;
    let response = jar.send(http.get(authorize)).await?;
    let to = see_other(response, "GET /authorize").await?;
    let flow_id = to
        .strip_prefix("/consent/")
        .ok_or_else(|| anyhow!("/authorize sent the browser to {to}"))?
        .to_owned();

    let identity = format!("{base}/consent/{flow_id}/identity");
    let response = jar.send(http.get(&identity)).await?;
    let status = response.status();
    let html = response.text().await?;
    if status != StatusCode::OK {
        bail!("GET identity page: {status} {html}");
    }
    let csrf = hidden_field(&html, "csrf").ok_or_else(|| anyhow!("no csrf field on the identity page"))?;

    let response = jar
        .send(http.post(&identity).form(&[("csrf", csrf.as_str()), ("choice", "skip")]))
        .await?;
    see_other(response, "POST identity (skip)").await?;

    let connect_started = Instant::now();
    crate::consent::connect(
        http,
        &mut jar,
        base,
        connect_to.demo_base,
        &flow_id,
        &csrf,
        connect_to.service,
        account,
    )
    .await
    .context("connect")?;
    let connect = connect_started.elapsed();

    let response = jar
        .send(
            http.post(format!("{base}/consent/{flow_id}/approve"))
                .form(&[("csrf", csrf.as_str())]),
        )
        .await?;
    let to = see_other(response, "POST approve").await?;
    let code = url::Url::parse(&to)?
        .query_pairs()
        .find(|(k, _)| k == "code")
        .map(|(_, v)| v.into_owned())
        .ok_or_else(|| anyhow!("approve redirected without a code: {to}"))?;

    let exchange_started = Instant::now();
    let response = http
        .post(format!("{base}/token"))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("code_verifier", verifier.as_str()),
            ("redirect_uri", REDIRECT_URI),
            ("client_id", client_id),
        ])
        .send()
        .await?;
    let status = response.status();
    let body: Value = response.json().await?;
    if status != StatusCode::OK {
        bail!("POST /token: {status} {body}");
    }
    let exchange = exchange_started.elapsed();
    let token = body["access_token"]
        .as_str()
        .ok_or_else(|| anyhow!("no access_token in {body}"))?
        .to_owned();
    Ok(Flow {
        token,
        total: started.elapsed(),
        connect,
        exchange,
    })
}

/// The PKCE S256 challenge of `verifier`.
pub fn s256(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// A fresh PKCE verifier (43 characters).
pub fn verifier() -> String {
    URL_SAFE_NO_PAD.encode(random_bytes())
}

/// 32 random bytes (the PKCE verifier's entropy), from the OS via `RandomState`'s seed
/// mixed with the time: a benchmark's verifier needs uniqueness, not secrecy.
fn random_bytes() -> [u8; 32] {
    use std::hash::{BuildHasher as _, RandomState};
    let state = RandomState::new();
    let mut out = [0u8; 32];
    for (i, chunk) in out.chunks_mut(8).enumerate() {
        let word = state.hash_one((i, Instant::now()));
        chunk.copy_from_slice(&word.to_le_bytes());
    }
    out
}

/// The cookies of one browser (name → value), ports and paths ignored.
#[derive(Default)]
pub struct Jar {
    cookies: Vec<(String, String)>,
}

impl Jar {
    pub async fn send(&mut self, mut request: reqwest::RequestBuilder) -> anyhow::Result<reqwest::Response> {
        if !self.cookies.is_empty() {
            let header = self
                .cookies
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join("; ");
            request = request.header(header::COOKIE, header);
        }
        let response = request.send().await?;
        self.keep(response.headers());
        Ok(response)
    }

    fn keep(&mut self, headers: &HeaderMap) {
        for value in headers.get_all(header::SET_COOKIE) {
            let Ok(value) = value.to_str() else { continue };
            let mut parts = value.split(';');
            let Some((name, cookie)) = parts.next().and_then(|p| p.trim().split_once('=')) else {
                continue;
            };
            let expired = parts.any(|p| p.trim().eq_ignore_ascii_case("Max-Age=0"));
            self.cookies.retain(|(k, _)| k != name);
            if !expired {
                self.cookies.push((name.to_owned(), cookie.to_owned()));
            }
        }
    }
}

/// Checks a 303 and returns its Location.
pub async fn see_other(response: reqwest::Response, step: &str) -> anyhow::Result<String> {
    let status = response.status();
    let location = response
        .headers()
        .get(header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    if status != StatusCode::SEE_OTHER {
        bail!("{step}: {status} {}", response.text().await.unwrap_or_default());
    }
    location.ok_or_else(|| anyhow!("{step}: 303 without Location"))
}

/// The value of hidden input `name` (the templates double-quote attributes).
pub fn hidden_field(html: &str, name: &str) -> Option<String> {
    let needle = format!(r#"name="{name}" value=""#);
    let start = html.find(&needle)? + needle.len();
    let len = html[start..].find('"')?;
    Some(html[start..start + len].replace("&#38;", "&").replace("&amp;", "&"))
}
