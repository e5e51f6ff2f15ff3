//! `/token` on its own (code exchange and refresh, closed loop over seeded
//! codes) and one whole consent flow with the upstream connect step, end to
//! end, one flow at a time.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::load::{RunResult, merge, micros};
use crate::oauth::{self, Jar, REDIRECT_URI, hidden_field, see_other};

/// `POST /token` with `form`; the token set's `refresh_token` (may be empty).
async fn token(http: &reqwest::Client, url: &str, form: &[(&str, &str)]) -> Result<String, String> {
    let response = http.post(url).form(form).send().await.map_err(|e| e.to_string())?;
    let status = response.status();
    let body: Value = response.json().await.map_err(|e| e.to_string())?;
    if status != StatusCode::OK || body["access_token"].as_str().is_none() {
        return Err(format!("{status} {body}"));
    }
    Ok(body["refresh_token"].as_str().unwrap_or_default().to_owned())
}

/// Exchanges every code in `codes` (each once), `concurrency` at a time;
/// returns the run and the refresh tokens issued.
pub async fn exchange(
    base: &str,
    client_id: &str,
    codes: Vec<String>,
    verifier: &str,
    concurrency: usize,
) -> anyhow::Result<(RunResult, Vec<String>)> {
    let url: Arc<str> = format!("{base}/token").into();
    let codes = Arc::new(codes);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let http = crate::load::connection()?;
        let (url, codes, next) = (url.clone(), codes.clone(), next.clone());
        let (client_id, verifier) = (client_id.to_owned(), verifier.to_owned());
        tasks.spawn(async move {
            let mut result = RunResult::default();
            let mut refresh = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(code) = codes.get(i) else { break };
                let sent = Instant::now();
                let form = [
                    ("grant_type", "authorization_code"),
                    ("code", code.as_str()),
                    ("code_verifier", verifier.as_str()),
                    ("redirect_uri", REDIRECT_URI),
                    ("client_id", client_id.as_str()),
                ];
                match token(&http, &url, &form).await {
                    Ok(rt) => {
                        result.latencies_us.push(micros(sent.elapsed()));
                        refresh.push(rt);
                    }
                    Err(err) => {
                        result.errors += 1;
                        result.first_error.get_or_insert(err);
                    }
                }
            }
            (result, refresh)
        });
    }
    let mut total = RunResult::default();
    let mut refresh_tokens = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        let (result, refresh) = joined?;
        merge(&mut total, result);
        refresh_tokens.extend(refresh.into_iter().filter(|t| !t.is_empty()));
    }
    total.elapsed = started.elapsed();
    Ok((total, refresh_tokens))
}

/// Refreshes for `duration`: each task owns some refresh-token chains and
/// rotates them in turn (each refresh token is presented once).
pub async fn refresh(
    base: &str,
    client_id: &str,
    tokens: Vec<String>,
    concurrency: usize,
    duration: Duration,
) -> anyhow::Result<RunResult> {
    if tokens.is_empty() {
        bail!("no refresh tokens to rotate");
    }
    let url: Arc<str> = format!("{base}/token").into();
    let started = Instant::now();
    let end = started + duration;
    let mut chains: Vec<Vec<String>> = vec![Vec::new(); concurrency.max(1)];
    for (i, token) in tokens.into_iter().enumerate() {
        chains[i % concurrency.max(1)].push(token);
    }
    let mut tasks = tokio::task::JoinSet::new();
    for mut mine in chains.into_iter().filter(|c| !c.is_empty()) {
        let http = crate::load::connection()?;
        let (url, client_id) = (url.clone(), client_id.to_owned());
        tasks.spawn(async move {
            let mut result = RunResult::default();
            let mut i = 0usize;
            while Instant::now() < end && !mine.is_empty() {
                let slot = i % mine.len();
                i += 1;
                let sent = Instant::now();
                let form = [
                    ("grant_type", "refresh_token"),
                    ("refresh_token", mine[slot].as_str()),
                    ("client_id", client_id.as_str()),
                ];
                match token(&http, &url, &form).await {
                    Ok(next) if !next.is_empty() => {
                        result.latencies_us.push(micros(sent.elapsed()));
                        mine[slot] = next;
                    }
                    Ok(_) => {
                        result.errors += 1;
                        mine.swap_remove(slot);
                    }
                    Err(err) => {
                        result.errors += 1;
                        result.first_error.get_or_insert(err);
                        mine.swap_remove(slot);
                    }
                }
            }
            result
        });
    }
    let mut total = RunResult::default();
    while let Some(joined) = tasks.join_next().await {
        merge(&mut total, joined?);
    }
    total.elapsed = started.elapsed();
    Ok(total)
}

/// Registers a public client named `client_name` (PKCE, refresh tokens).
pub async fn register(http: &reqwest::Client, base: &str, client_name: &str) -> anyhow::Result<String> {
    let response = http
        .post(format!("{base}/register"))
        .json(&json!({
            "client_name": client_name,
            "redirect_uris": [REDIRECT_URI],
            "token_endpoint_auth_method": "none",
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
        }))
        .send()
        .await?;
    if response.status() != StatusCode::CREATED {
        bail!(
            "POST /register: {} {}",
            response.status(),
            response.text().await.unwrap_or_default()
        );
    }
    let body: Value = response.json().await?;
    Ok(body["client_id"]
        .as_str()
        .ok_or_else(|| anyhow!("no client_id in {body}"))?
        .to_owned())
}

/// Wall time of each step of one consent flow with connect.
#[derive(Debug, Default, Clone)]
pub struct FlowSteps {
    /// `GET /authorize` → 303 to the identity page.
    pub authorize: Duration,
    /// Identity page, Skip, services page.
    pub identity: Duration,
    /// Connect → Gatehouse's redirect page → the provider's consent page →
    /// allow → `/oauth/callback` (the control plane exchanges the upstream
    /// code and seals the tokens) → back on the services page.
    pub connect: Duration,
    /// Approve → 303 with the code.
    pub approve: Duration,
    /// `POST /token`.
    pub token: Duration,
    pub total: Duration,
}

/// One person's whole consent flow, connecting `service` at the demo provider
/// `demo_base`: register (its own client) → authorize →
/// identity (Skip) → connect → approve → token.
pub async fn flow_with_connect(base: &str, demo_base: &str, service: &str, account: &str) -> anyhow::Result<FlowSteps> {
    let http = oauth::client()?;
    let started = Instant::now();
    let client_id = register(&http, base, "gatehouse-bench consent").await?;
    let verifier = oauth::verifier();
    let challenge = oauth::s256(&verifier);
    let mut jar = Jar::default();
    let mut steps = FlowSteps::default();
    let mut mark = Instant::now();
    let mut lap = |slot: &mut Duration| {
        let now = Instant::now();
        *slot = now - mark;
        mark = now;
    };

    let authorize = url::Url::parse_with_params(
        &format!("{base}/authorize"),
        &[
            ("response_type", "code"),
            ("client_id", client_id.as_str()),
            ("redirect_uri", REDIRECT_URI),
            ("code_challenge", challenge.as_str()),
            ("code_challenge_method", "S256"),
            ("scope", "mcp"),
            ("state", "bench"),
        ],
    )?;
    let to = see_other(jar.send(http.get(authorize)).await?, "GET /authorize").await?;
    let flow_id = to
        .strip_prefix("/consent/")
        .ok_or_else(|| anyhow!("/authorize sent the browser to {to}"))?
        .to_owned();
    lap(&mut steps.authorize);

    let identity = format!("{base}/consent/{flow_id}/identity");
    let html = jar.send(http.get(&identity)).await?.text().await?;
    let csrf = hidden_field(&html, "csrf").ok_or_else(|| anyhow!("no csrf field on the identity page"))?;
    let response = jar
        .send(http.post(&identity).form(&[("csrf", csrf.as_str()), ("choice", "skip")]))
        .await?;
    let to = see_other(response, "POST identity (skip)").await?;
    let services = jar.send(http.get(format!("{base}{to}"))).await?;
    if services.status() != StatusCode::OK {
        bail!("services page: {}", services.status());
    }
    services.text().await?;
    lap(&mut steps.identity);

    connect(&http, &mut jar, base, demo_base, &flow_id, &csrf, service, account).await?;
    lap(&mut steps.connect);

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
    lap(&mut steps.approve);

    let form = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("code_verifier", verifier.as_str()),
        ("redirect_uri", REDIRECT_URI),
        ("client_id", client_id.as_str()),
    ];
    token(&http, &format!("{base}/token"), &form)
        .await
        .map_err(|e| anyhow!("POST /token: {e}"))?;
    lap(&mut steps.token);
    steps.total = started.elapsed();
    Ok(steps)
}

/// The connect step of consent flow `flow_id` (its identity chosen), as a
/// browser walks it: Connect `service` → Gatehouse's redirect page → the demo
/// provider's consent page at `demo_base` → allow as `account` →
/// `/oauth/callback` (the control plane exchanges the upstream code and seals
/// the tokens to the flow's identity) → the services page, which must then
/// show a connected service.
#[allow(clippy::too_many_arguments)]
pub async fn connect(
    http: &reqwest::Client,
    jar: &mut Jar,
    base: &str,
    demo_base: &str,
    flow_id: &str,
    csrf: &str,
    service: &str,
    account: &str,
) -> anyhow::Result<()> {
    let response = jar
        .send(
            http.post(format!("{base}/consent/{flow_id}/connect"))
                .form(&[("csrf", csrf), ("service", service)]),
        )
        .await?;
    // 303 to the continuation page of this origin, which links on to the upstream.
    let to = see_other(response, "POST connect").await?;
    let page = jar.send(http.get(format!("{base}{to}"))).await?;
    if page.status() != StatusCode::OK {
        bail!("continuation page: {} {}", page.status(), page.text().await?);
    }
    let html = page.text().await?;
    let upstream_url = continuation_link(&html).context("no continuation link after Connect")?;
    let page = jar.send(http.get(&upstream_url)).await?.text().await?;
    let mut form = gatehouse::demo::hidden_fields(&page);
    form.push(("account".into(), account.into()));
    form.push(("decision".into(), "allow".into()));
    let response = jar.send(http.post(format!("{demo_base}/authorize")).form(&form)).await?;
    if !response.status().is_redirection() {
        bail!("the provider's consent: {}", response.status());
    }
    let callback = response
        .headers()
        .get(reqwest::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| anyhow!("the provider's consent: no Location"))?
        .to_owned();
    let to = see_other(jar.send(http.get(&callback)).await?, "GET /oauth/callback").await?;
    if to != format!("/consent/{flow_id}/services") {
        bail!("the callback sent the browser to {to}");
    }
    let services = jar.send(http.get(format!("{base}{to}"))).await?.text().await?;
    // The status line of a connected service (templates/services.html).
    if !services.contains(r#"class="status status-ok">Connected"#) {
        bail!("the services page shows no connected service after connecting {service}");
    }
    Ok(())
}

/// The continuation link of Gatehouse's redirect page, entities decoded.
fn continuation_link(html: &str) -> Option<String> {
    let needle = r#"<a class="button" href=""#;
    let start = html.find(needle)? + needle.len();
    let end = html[start..].find('"')?;
    Some(html[start..start + end].replace("&#38;", "&").replace("&amp;", "&"))
}
