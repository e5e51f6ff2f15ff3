//! `/mcp`: the per-user gateway to upstream MCP servers (Streamable HTTP,
//! MCP revisions 2025-03-26, 2025-06-18, 2025-11-25 and 2026-07-28).
//!
//! A request passes, in order: the `Origin` check, authentication (`auth`:
//! bearer → [`Caller`], cached), the transport checks (`wire`), then dispatch
//! by method (`dispatch`): `initialize`, `server/discover` and `ping` are
//! answered here; list calls fan out to every service (`aggregate`); calls of
//! one tool, prompt or resource are forwarded to their service (`upstream`),
//! whose reply is copied through; a service the caller has not connected
//! answers with a connect link (`elicit`).
//!
//! Gatehouse issues no session id (stateless legacy mode, SPEC-NOTES §4.3):
//! GET and DELETE answer 405. What the data plane keeps (callers,
//! credentials, the service catalogue, upstream sessions) is in [`Gateway`]
//! and is only a cache.

mod aggregate;
pub(crate) mod auth;
pub(crate) mod cache;
mod dispatch;
mod elicit;
pub(crate) mod error;
pub(crate) mod events;
pub(crate) mod jsonrpc;
pub(crate) mod names;
pub(crate) mod services;
mod sse;
mod upstream;
pub(crate) mod wire;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::Value;
use tokio::time::Instant;

pub(crate) use self::auth::Caller;
use self::auth::{BearerToken, TokenHash};
use self::cache::{Refreshing, TtlCache};
use self::dispatch::Reply;
use self::error::McpError;
use self::jsonrpc::{Incoming, Kind};
use self::services::{AuthMode, Credential, CredentialError, Service, Services};
use self::upstream::{UpstreamClient, UpstreamError, UpstreamReply, UpstreamSession};
use crate::AppState;
use crate::config::DataPlaneConfig;
use crate::cp_client::{ControlPlaneClient, CpError};

/// Upstream sessions and credentials kept at most (each per grant and service).
const PER_GRANT_ENTRIES: usize = 100_000;
/// How long an idle upstream session is remembered.
const SESSION_TTL: Duration = Duration::from_secs(30 * 60);
/// How long a service's tool and prompt catalogue is remembered.
const CATALOGUE_TTL: Duration = Duration::from_secs(60 * 60);

/// What `/mcp` keeps between requests: caches only.
pub(crate) struct Gateway {
    /// SHA-256(bearer token) → resolved caller.
    pub(crate) callers: TtlCache<TokenHash, Arc<Caller>>,
    /// `DataPlaneConfig::cache_callers_and_credentials`: when false, `callers`
    /// and `credentials` are neither read nor filled, so every request asks
    /// the control plane (for benchmarks).
    pub(crate) cache_per_grant: bool,
    /// (grant, service) → credential, and the identity it belongs to.
    credentials: TtlCache<(String, String), Arc<(Credential, String)>>,
    /// (grant, service) → upstream session.
    sessions: TtlCache<(String, String), Arc<UpstreamSession>>,
    /// The service catalogue (ListServices).
    services: Refreshing<Services>,
    /// service → its upstream tools (after the allow and deny lists), shared by
    /// every caller: name resolution, and listing for callers not yet connected.
    tool_catalogues: TtlCache<String, Arc<Vec<Value>>>,
    /// service → its upstream prompts.
    prompt_catalogues: TtlCache<String, Arc<Vec<Value>>>,
    upstream: UpstreamClient,
    default_timeout: Duration,
    /// Upstream calls that failed (timeouts, errors), by service, for operators (`/metrics`).
    upstream_failures: std::sync::Mutex<std::collections::BTreeMap<String, u64>>,
    /// Hits and misses of the caches above, for operators (`/metrics`).
    pub(crate) cache_counts: crate::metrics::CacheCounts,
}

impl Gateway {
    pub(crate) fn new(config: &DataPlaneConfig) -> Result<Self, upstream::ClientError> {
        Ok(Self {
            callers: TtlCache::new(config.caller_cache_entries.max(1)),
            cache_per_grant: config.cache_callers_and_credentials,
            credentials: TtlCache::new(PER_GRANT_ENTRIES),
            sessions: TtlCache::new(PER_GRANT_ENTRIES),
            services: Refreshing::new(services::SERVICES_MAX_AGE),
            tool_catalogues: TtlCache::new(4096),
            prompt_catalogues: TtlCache::new(4096),
            upstream: UpstreamClient::new()?,
            default_timeout: Duration::from_millis(config.default_upstream_timeout_ms.max(1)),
            upstream_failures: std::sync::Mutex::default(),
            cache_counts: Default::default(),
        })
    }

    /// The service catalogue: cached for a few seconds; a stale copy keeps
    /// serving while the control plane does not answer.
    pub(crate) async fn services(&self, cp: &ControlPlaneClient) -> Result<Services, McpError> {
        if let Some(services) = self.services.fresh() {
            self.cache_counts.services.hit();
            return Ok(services);
        }
        self.cache_counts.services.miss();
        match services::list_services(cp).await {
            Ok(services) => {
                self.services.set(services.clone());
                Ok(services)
            }
            Err(err) => match self.services.stale() {
                Some(services) => Ok(services),
                None => Err(match err {
                    CpError::Unavailable => McpError::Unavailable,
                    _ => McpError::Internal,
                }),
            },
        }
    }

    /// The caller's credential for `service`, from the cache or the control plane.
    async fn credential(
        &self,
        cp: &ControlPlaneClient,
        caller: &Caller,
        service: &Service,
    ) -> Result<Arc<(Credential, String)>, CredentialError> {
        let key = (caller.grant_id.clone(), service.name.clone());
        self.credential_for(cp, caller, service, &key).await
    }

    /// [`Self::credential`] under its cache key, when the caller has it already.
    async fn credential_for(
        &self,
        cp: &ControlPlaneClient,
        caller: &Caller,
        service: &Service,
        key: &(String, String),
    ) -> Result<Arc<(Credential, String)>, CredentialError> {
        if self.cache_per_grant
            && let Some(kept) = self.credentials.get(key)
        {
            self.cache_counts.credential.hit();
            return Ok(kept);
        }
        self.cache_counts.credential.miss();
        let credential = services::fetch_credential(cp, &caller.grant_id, &service.name).await?;
        Ok(self.keep_credential(caller, service, credential))
    }

    /// `credential`, cached (with the identity it belongs to, for invalidation).
    fn keep_credential(&self, caller: &Caller, service: &Service, credential: Credential) -> Arc<(Credential, String)> {
        let ttl = credential.cache_ttl;
        let kept = Arc::new((credential, caller.identity_id.clone()));
        if self.cache_per_grant {
            let key = (caller.grant_id.clone(), service.name.clone());
            self.credentials.insert(key, kept.clone(), ttl);
        }
        kept
    }

    // === Invalidation (events) ===

    /// The grants of `identity_id` among cached callers and credentials.
    fn grants_of(&self, identity_id: &str) -> Vec<String> {
        let mut grants: Vec<String> = self
            .callers
            .values_where(|caller| caller.identity_id == identity_id)
            .into_iter()
            .map(|caller| caller.grant_id.clone())
            .collect();
        grants.extend(
            self.credentials
                .keys_where(|kept| kept.1 == identity_id)
                .into_iter()
                .map(|(grant, _)| grant),
        );
        grants.sort();
        grants.dedup();
        grants
    }

    /// Drops everything cached for `grants`.
    fn forget_grants(&self, grants: &[String]) {
        let revoked = |grant: &String| grants.contains(grant);
        self.callers.remove_where(|_, caller| revoked(&caller.grant_id));
        self.credentials.remove_where(|(grant, _), _| revoked(grant));
        self.sessions.remove_where(|(grant, _), _| revoked(grant));
    }

    /// Drops the credentials and sessions of one identity's connection.
    fn forget_connection(&self, identity_id: &str, service: &str) {
        let grants = self.grants_of(identity_id);
        let hit = |grant: &String, name: &String| name == service && grants.contains(grant);
        self.credentials.remove_where(|(grant, name), _| hit(grant, name));
        self.sessions.remove_where(|(grant, name), _| hit(grant, name));
    }

    /// Drops the service catalogue and what was learnt from the services.
    fn forget_services(&self) {
        self.services.clear();
        self.tool_catalogues.remove_where(|_, _| true);
        self.prompt_catalogues.remove_where(|_, _| true);
        self.sessions.remove_where(|_, _| true);
    }

    /// After missing events: drops everything kept per grant.
    fn forget_per_grant(&self) {
        self.callers.remove_where(|_, _| true);
        self.credentials.remove_where(|_, _| true);
    }

    /// Counts and logs a failed upstream call.
    /// Failed upstream calls so far, by service.
    pub(crate) fn upstream_failure_counts(&self) -> Vec<(String, u64)> {
        let counts = self
            .upstream_failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        counts.iter().map(|(service, n)| (service.clone(), *n)).collect()
    }

    fn upstream_failed(&self, service: &Service, method: &str, err: &UpstreamError) {
        let failures = {
            let mut counts = self
                .upstream_failures
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let count = counts.entry(service.name.clone()).or_default();
            *count += 1;
            *count
        };
        tracing::warn!(target: "gatehouse::mcp", service = %service.name, method, error = %err, failures, "upstream call failed");
    }

    /// Sends one JSON-RPC message to `service` as `caller`: the credential
    /// (cached), the session (initialized lazily), then the message. An
    /// upstream 401 gets one refresh through the control plane and one retry;
    /// an expired upstream session one re-initialisation and one retry.
    async fn call(
        &self,
        cp: &ControlPlaneClient,
        caller: &Caller,
        service: &Service,
        body: Bytes,
    ) -> Result<(UpstreamReply, Instant), CallError> {
        let deadline = Instant::now() + service.timeout(self.default_timeout);
        let key = (caller.grant_id.clone(), service.name.clone());
        let mut credential = self.credential_for(cp, caller, service, &key).await?;
        let mut refreshed = false;
        let mut reinitialized = false;
        loop {
            let attempt = async {
                let session = match self.sessions.get(&key) {
                    Some(session) => session,
                    None => {
                        let session = Arc::new(self.upstream.initialize(service, &credential.0, deadline).await?);
                        self.sessions.insert(key.clone(), session.clone(), SESSION_TTL);
                        session
                    }
                };
                self.upstream
                    .post(service, &credential.0, Some(&session), body.clone(), deadline)
                    .await
            };
            match attempt.await {
                Ok(reply) => return Ok((reply, deadline)),
                Err(UpstreamError::Unauthorized) if service.auth_mode == AuthMode::Oauth && !refreshed => {
                    refreshed = true;
                    self.credentials.remove(&key);
                    self.sessions.remove(&key);
                    tracing::info!(target: "gatehouse::mcp", service = %service.name, grant_id = %caller.grant_id, "upstream refused the credential; refreshing once");
                    let fresh =
                        services::report_unauthorized(cp, &caller.grant_id, &service.name, &credential.0.version, false).await?;
                    credential = self.keep_credential(caller, service, fresh);
                }
                Err(UpstreamError::Unauthorized) if service.auth_mode == AuthMode::Oauth => {
                    self.credentials.remove(&key);
                    self.sessions.remove(&key);
                    // Still refused after one refresh: the connection needs the person again.
                    return match services::report_unauthorized(cp, &caller.grant_id, &service.name, &credential.0.version, true)
                        .await
                    {
                        Ok(_) | Err(CredentialError::NeedsReauth) => Err(CallError::Credential(CredentialError::NeedsReauth)),
                        Err(err) => Err(CallError::Credential(err)),
                    };
                }
                Err(UpstreamError::SessionExpired) if !reinitialized => {
                    reinitialized = true;
                    self.sessions.remove(&key);
                }
                Err(err) => return Err(CallError::Upstream(err)),
            }
        }
    }
}

/// Why a call to a service did not produce a reply.
#[derive(Debug)]
pub(crate) enum CallError {
    Credential(CredentialError),
    Upstream(UpstreamError),
}

impl From<CredentialError> for CallError {
    fn from(err: CredentialError) -> Self {
        Self::Credential(err)
    }
}

/// The `/mcp` route.
pub(crate) fn router() -> Router<Arc<AppState>> {
    Router::new().route("/mcp", post(post_mcp).get(get_or_delete_mcp).delete(get_or_delete_mcp))
}

/// What every method of `/mcp` checks first, in order: the `Origin` (so a
/// foreign origin is refused before any token is looked at), then the caller.
/// Plain calls rather than route layers: each layer would cost a boxed
/// service clone on every call.
async fn admit(state: &AppState, parts: &Parts) -> Result<(Arc<Caller>, BearerToken), McpError> {
    wire::check_origin(&parts.headers, &state.config.public_url, &state.config.allowed_origins)?;
    auth::authenticate(state, &parts.uri, &parts.headers).await
}

/// `GET` and `DELETE /mcp`: no stream to open, no session to end (SPEC-NOTES §4.3).
async fn get_or_delete_mcp(State(state): State<Arc<AppState>>, request: Request) -> McpError {
    let (parts, _) = request.into_parts();
    match admit(&state, &parts).await {
        Ok(_) => McpError::MethodNotAllowed,
        Err(err) => err,
    }
}

/// `POST /mcp`: one JSON-RPC message (or, on 2025-03-26, a batch).
async fn post_mcp(State(state): State<Arc<AppState>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let (caller, token) = match admit(&state, &parts).await {
        Ok(admitted) => admitted,
        Err(err) => return refuse_after_draining(body, err).await,
    };
    // Order: the body is read only for an admitted caller. The body limit
    // layer bounds it; its refusal keeps axum's `Bytes` extractor's status.
    let body = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(body) => body,
        Err(err) => return body_refusal(err),
    };
    match serve(&state, &caller, &token, &parts.headers, &body).await {
        Ok(response) => response,
        Err(err) => err.into_response(),
    }
}

/// `refusal`, once the request's body has been read and dropped. hyper closes
/// a keep-alive connection whose request body was left unread, without a
/// `Connection: close` on the response; a client that sent its body a moment
/// later then finds its next request on that connection cut off (an SDK
/// client's first, unauthenticated POST is answered 401 this way). The body
/// limit layer bounds what is read; past it, the response says it closes.
async fn refuse_after_draining(body: axum::body::Body, refusal: McpError) -> Response {
    let drained = axum::body::to_bytes(body, usize::MAX).await.is_ok();
    let mut response = refusal.into_response();
    if !drained {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// 413 for a body over the limit, 400 for one that broke off.
fn body_refusal(err: axum::Error) -> Response {
    let inner = err.into_inner();
    let over_limit = std::iter::successors(Some(&*inner as &(dyn std::error::Error + 'static)), |e| e.source())
        .any(|e| e.is::<http_body_util::LengthLimitError>());
    if over_limit {
        (StatusCode::PAYLOAD_TOO_LARGE, "the request body is too large").into_response()
    } else {
        (StatusCode::BAD_REQUEST, "the request body could not be read").into_response()
    }
}

async fn serve(
    state: &Arc<AppState>,
    caller: &Arc<Caller>,
    token: &BearerToken,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, McpError> {
    wire::check_content_type(headers)?;
    if jsonrpc::is_batch(body) {
        // Batches exist only in 2025-03-26 (SPEC-NOTES §1).
        if wire::header_version(headers)? != wire::DEFAULT_VERSION {
            return Err(McpError::BatchNotAllowed);
        }
        return serve_batch(state, caller, token, body).await;
    }
    let message = Incoming::parse(body).map_err(McpError::Malformed)?;
    let method = message.method.as_deref().unwrap_or_default();
    let modern = wire::modern_meta(message.params);
    match &modern {
        Some(modern) => wire::check_modern(headers, message.id_json(), method, message.params, modern)?,
        None => {
            let version = wire::header_version(headers)?;
            if wire::MODERN_VERSIONS.contains(&version.as_str()) && message.kind() == Kind::Request {
                return Err(wire::missing_meta(message.id_json()));
            }
        }
    }
    if message.kind() != Kind::Request {
        // Notifications and responses are accepted and dropped: Gatehouse sends
        // no requests to clients and keeps no session they would belong to.
        return Ok(StatusCode::ACCEPTED.into_response());
    }
    if modern.is_some() && wire::REMOVED_IN_MODERN.contains(&method) {
        return Err(McpError::Rpc {
            id: message.id_json().to_owned(),
            failure: error::RpcFailure::MethodNotFound(method.to_owned()),
            modern: true,
        });
    }
    let call = dispatch::Call {
        state,
        caller,
        token,
        id: message.id_json(),
        method,
        params: message.params,
        modern: modern.as_ref(),
        buffered: false,
    };
    let reply = dispatch::dispatch(&call).await?;
    // The 2026-07-28 wire: results complete with their type and cache hints,
    // whatever revision the upstream speaks (legacy replies pass unread).
    Ok(match (reply, &modern) {
        (Reply::Json(body), Some(_)) => match wire::complete_result(method, &body) {
            Some(completed) => json_response(Bytes::from(completed)),
            None => json_response(body),
        },
        (Reply::Json(body), None) => json_response(body),
        (Reply::Stream(response), Some(modern)) => sse::modern_stream(response, method, message.id_json(), modern).await?,
        (Reply::Stream(response), None) => response,
    })
}

/// A 2025-03-26 batch: each request answered in turn, the answers in one array.
async fn serve_batch(
    state: &Arc<AppState>,
    caller: &Arc<Caller>,
    token: &BearerToken,
    body: &[u8],
) -> Result<Response, McpError> {
    let elements = jsonrpc::parse_batch(body).map_err(McpError::Malformed)?;
    let mut answers: Vec<Vec<u8>> = Vec::new();
    for element in elements {
        let message = match Incoming::parse(element.get().as_bytes()) {
            Ok(message) => message,
            Err(err) => {
                answers.push(jsonrpc::error_response("null", err.code(), &err.to_string(), None));
                continue;
            }
        };
        if message.kind() != Kind::Request {
            continue;
        }
        let call = dispatch::Call {
            state,
            caller,
            token,
            id: message.id_json(),
            method: message.method.as_deref().unwrap_or_default(),
            params: message.params,
            modern: None,
            buffered: true,
        };
        let answer = match dispatch::dispatch(&call).await {
            Ok(Reply::Json(body)) => body.to_vec(),
            Ok(Reply::Stream(_)) => unreachable_stream(call.id),
            Err(err) => match err.rpc_body() {
                Some(body) => body,
                None => return Err(err),
            },
        };
        answers.push(answer);
    }
    if answers.is_empty() {
        return Ok(StatusCode::ACCEPTED.into_response());
    }
    let mut out = Vec::from(&b"["[..]);
    for (i, answer) in answers.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(answer);
    }
    out.push(b']');
    Ok(json_response(Bytes::from(out)))
}

/// Batch calls are dispatched without streaming (see `dispatch::Call::buffered`);
/// should a stream come back anyway, the element gets an error.
fn unreachable_stream(id: &str) -> Vec<u8> {
    jsonrpc::error_response(id, jsonrpc::INTERNAL_ERROR, "internal error", None)
}

fn json_response(body: Bytes) -> Response {
    ([(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], body).into_response()
}
