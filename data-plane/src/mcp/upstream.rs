//! The upstream MCP client: Streamable HTTP in the legacy wire (initialize
//! once, then requests with `MCP-Protocol-Version` and the upstream's
//! `Mcp-Session-Id` when it gave one). It sends the caller's credential for
//! the service and nothing of the MCP client's request but the JSON-RPC body:
//! never the client's `Authorization` (SPEC-NOTES §2.4, C8), never its other
//! headers. JSON replies come back as bytes; SSE replies as the open response,
//! to be relayed ([`relay`]) or read to their response ([`read_response`]).

use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::jsonrpc;
use super::services::{Credential, Service};
use super::sse::{self, EventSplitter};

/// The revision Gatehouse asks upstreams for; they answer with theirs.
pub(crate) const UPSTREAM_VERSION: &str = "2025-11-25";
/// Largest JSON reply read from an upstream.
const MAX_REPLY_BYTES: usize = 16 * 1024 * 1024;

// Header names and values of every upstream request, built once.
const APPLICATION_JSON: HeaderValue = HeaderValue::from_static("application/json");
const ACCEPT_BOTH: HeaderValue = HeaderValue::from_static("application/json, text/event-stream");
const MCP_PROTOCOL_VERSION: HeaderName = HeaderName::from_static("mcp-protocol-version");
const MCP_SESSION_ID: HeaderName = HeaderName::from_static("mcp-session-id");

/// An upstream session: what initialize negotiated. A cache entry: losing it
/// only means initializing again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UpstreamSession {
    /// The upstream's `Mcp-Session-Id`, when it issued one.
    pub(crate) session_id: Option<HeaderValue>,
    /// The revision the upstream answered with.
    pub(crate) version: String,
}

/// What an upstream answered.
#[derive(Debug)]
pub(crate) enum UpstreamReply {
    /// A JSON body, as received.
    Json(Bytes),
    /// An SSE stream, still open.
    Sse(reqwest::Response),
    /// 202: a notification was accepted.
    Accepted,
}

/// Why an upstream call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum UpstreamError {
    /// 401 (or 403 with an `invalid_token` challenge): the credential was refused.
    #[error("the upstream refused the credential")]
    Unauthorized,
    /// 404 to a request carrying a session id: the session is gone.
    #[error("the upstream session expired")]
    SessionExpired,
    #[error("no answer in time")]
    Timeout,
    #[error("unreachable: {0}")]
    Unreachable(String),
    #[error("HTTP status {0}")]
    Status(u16),
    #[error("malformed reply: {0}")]
    Malformed(String),
}

/// The upstream HTTP client (one per data plane, cheap to clone).
#[derive(Clone, Debug)]
pub(crate) struct UpstreamClient {
    http: reqwest::Client,
    /// Service URLs, parsed once (a parse per call showed in the profile).
    urls: std::sync::Arc<std::sync::RwLock<std::collections::HashMap<String, reqwest::Url>>>,
}

/// Parsed service URLs kept at most (there are a handful of services).
const MAX_PARSED_URLS: usize = 256;

impl UpstreamClient {
    pub(crate) fn new() -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            // Security: an upstream cannot send the request (with the person's
            // credential) somewhere else.
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(5))
            .build()?;
        Ok(Self {
            http,
            urls: std::sync::Arc::default(),
        })
    }

    /// `service.url`, parsed; `None` when it is no URL (the request then
    /// fails as it would have with the string).
    fn url(&self, service: &Service) -> Option<reqwest::Url> {
        let read = self.urls.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(url) = read.get(&service.url) {
            return Some(url.clone());
        }
        drop(read);
        let url = reqwest::Url::parse(&service.url).ok()?;
        let mut write = self.urls.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        if write.len() >= MAX_PARSED_URLS {
            write.clear();
        }
        write.insert(service.url.clone(), url.clone());
        Some(url)
    }

    /// A POST to `service`.
    fn post_to(&self, service: &Service) -> reqwest::RequestBuilder {
        match self.url(service) {
            Some(url) => self.http.post(url),
            None => self.http.post(&service.url),
        }
    }

    /// POSTs one JSON-RPC message to `service` before `deadline`.
    pub(crate) async fn post(
        &self,
        service: &Service,
        credential: &Credential,
        session: Option<&UpstreamSession>,
        body: Bytes,
        deadline: Instant,
    ) -> Result<UpstreamReply, UpstreamError> {
        let mut request = self
            .post_to(service)
            .header(header::CONTENT_TYPE, APPLICATION_JSON)
            .header(header::ACCEPT, ACCEPT_BOTH)
            .body(body);
        if let Some(session) = session {
            request = request.header(MCP_PROTOCOL_VERSION, session.version.as_str());
            if let Some(id) = &session.session_id {
                request = request.header(MCP_SESSION_ID, id.clone());
            }
        }
        for (name, value) in &credential.headers {
            request = request.header(name.clone(), value.clone());
        }
        let response = match tokio::time::timeout_at(deadline, request.send()).await {
            Err(_) => return Err(UpstreamError::Timeout),
            // The error names the URL, never a header.
            Ok(Err(err)) => return Err(UpstreamError::Unreachable(err.without_url().to_string())),
            Ok(Ok(response)) => response,
        };
        let status = response.status();
        if status == StatusCode::UNAUTHORIZED || (status == StatusCode::FORBIDDEN && challenge_says_invalid_token(&response)) {
            return Err(UpstreamError::Unauthorized);
        }
        if status == StatusCode::NOT_FOUND && session.is_some_and(|s| s.session_id.is_some()) {
            return Err(UpstreamError::SessionExpired);
        }
        if status == StatusCode::ACCEPTED {
            return Ok(UpstreamReply::Accepted);
        }
        let content_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_ascii_lowercase();
        if content_type.starts_with("text/event-stream") && status.is_success() {
            return Ok(UpstreamReply::Sse(response));
        }
        // A JSON-RPC error may come with a 4xx status; its body still answers the request.
        if content_type.starts_with("application/json") {
            let body = read_body(response, deadline).await?;
            if status.is_success() || serde_json::from_slice::<Value>(&body).is_ok_and(|v| v.get("error").is_some()) {
                return Ok(UpstreamReply::Json(body));
            }
        }
        Err(UpstreamError::Status(status.as_u16()))
    }

    /// `initialize`, then `notifications/initialized`: the session to use.
    pub(crate) async fn initialize(
        &self,
        service: &Service,
        credential: &Credential,
        deadline: Instant,
    ) -> Result<UpstreamSession, UpstreamError> {
        let body = json!({
            "jsonrpc": "2.0",
            "id": "gatehouse-initialize",
            "method": "initialize",
            "params": {
                "protocolVersion": UPSTREAM_VERSION,
                "capabilities": {},
                "clientInfo": { "name": "gatehouse", "version": env!("CARGO_PKG_VERSION") },
            },
        });
        let response = self.post_initialize(service, credential, body.to_string(), deadline).await?;
        let (session_id, reply) = response;
        let message = read_response(reply, deadline).await?;
        let version = message["result"]["protocolVersion"]
            .as_str()
            .ok_or_else(|| UpstreamError::Malformed("initialize has no protocolVersion".into()))?
            .to_owned();
        let session = UpstreamSession { session_id, version };
        let initialized = Bytes::from_static(br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#);
        match self.post(service, credential, Some(&session), initialized, deadline).await {
            Ok(_) => {}
            Err(UpstreamError::Unauthorized) => return Err(UpstreamError::Unauthorized),
            // Some servers do not care; the session still works.
            Err(err) => {
                tracing::debug!(target: "gatehouse::mcp", service = %service.name, error = %err, "notifications/initialized not accepted")
            }
        }
        Ok(session)
    }

    /// The initialize POST, keeping the session id header.
    async fn post_initialize(
        &self,
        service: &Service,
        credential: &Credential,
        body: String,
        deadline: Instant,
    ) -> Result<(Option<HeaderValue>, UpstreamReply), UpstreamError> {
        let mut request = self
            .post_to(service)
            .header(header::CONTENT_TYPE, APPLICATION_JSON)
            .header(header::ACCEPT, ACCEPT_BOTH)
            .body(body);
        for (name, value) in &credential.headers {
            request = request.header(name.clone(), value.clone());
        }
        let response = match tokio::time::timeout_at(deadline, request.send()).await {
            Err(_) => return Err(UpstreamError::Timeout),
            Ok(Err(err)) => return Err(UpstreamError::Unreachable(err.without_url().to_string())),
            Ok(Ok(response)) => response,
        };
        let status = response.status();
        if status == StatusCode::UNAUTHORIZED || (status == StatusCode::FORBIDDEN && challenge_says_invalid_token(&response)) {
            return Err(UpstreamError::Unauthorized);
        }
        if !status.is_success() {
            return Err(UpstreamError::Status(status.as_u16()));
        }
        let session_id = response
            .headers()
            .get("mcp-session-id")
            .filter(|v| !v.is_empty() && v.as_bytes().iter().all(|b| (0x21..=0x7e).contains(b)))
            .cloned();
        let is_sse = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.to_ascii_lowercase().starts_with("text/event-stream"));
        let reply = if is_sse {
            UpstreamReply::Sse(response)
        } else {
            UpstreamReply::Json(read_body(response, deadline).await?)
        };
        Ok((session_id, reply))
    }
}

/// Whether a 403 carries `WWW-Authenticate: Bearer error="invalid_token"`.
fn challenge_says_invalid_token(response: &reqwest::Response) -> bool {
    response
        .headers()
        .get_all(header::WWW_AUTHENTICATE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("invalid_token"))
}

async fn read_body(mut response: reqwest::Response, deadline: Instant) -> Result<Bytes, UpstreamError> {
    let mut body = Vec::new();
    loop {
        match tokio::time::timeout_at(deadline, response.chunk()).await {
            Err(_) => return Err(UpstreamError::Timeout),
            Ok(Err(err)) => return Err(UpstreamError::Unreachable(err.without_url().to_string())),
            Ok(Ok(None)) => return Ok(Bytes::from(body)),
            Ok(Ok(Some(chunk))) => {
                if body.len() + chunk.len() > MAX_REPLY_BYTES {
                    return Err(UpstreamError::Malformed("the reply is too large".into()));
                }
                body.extend_from_slice(&chunk);
            }
        }
    }
}

/// The JSON-RPC response an upstream reply carries: the JSON body, or the
/// first response event of an SSE stream (notifications before it are dropped).
pub(crate) async fn read_response(reply: UpstreamReply, deadline: Instant) -> Result<Value, UpstreamError> {
    match reply {
        UpstreamReply::Json(body) => serde_json::from_slice(&body).map_err(|e| UpstreamError::Malformed(e.to_string())),
        UpstreamReply::Accepted => Err(UpstreamError::Malformed("202 to a request".into())),
        UpstreamReply::Sse(mut response) => {
            let mut splitter = EventSplitter::default();
            let mut read = 0usize;
            loop {
                let chunk = match tokio::time::timeout_at(deadline, response.chunk()).await {
                    Err(_) => return Err(UpstreamError::Timeout),
                    Ok(Err(err)) => return Err(UpstreamError::Unreachable(err.without_url().to_string())),
                    Ok(Ok(None)) => {
                        // The last event may lack its blank line.
                        return splitter
                            .finish()
                            .and_then(|event| sse::event_data(&event))
                            .and_then(|data| serde_json::from_str::<Value>(&data).ok())
                            .filter(sse::is_response)
                            .ok_or_else(|| UpstreamError::Malformed("the stream ended without a response".into()));
                    }
                    Ok(Ok(Some(chunk))) => chunk,
                };
                read += chunk.len();
                if read > MAX_REPLY_BYTES {
                    return Err(UpstreamError::Malformed("the reply is too large".into()));
                }
                for event in splitter.push(&chunk) {
                    if let Some(message) = sse::event_data(&event).and_then(|d| serde_json::from_str::<Value>(&d).ok())
                        && sse::is_response(&message)
                    {
                        return Ok(message);
                    }
                }
            }
        }
    }
}

/// Relays an upstream SSE reply to the client as it arrives: each event's
/// bytes unchanged (progress notifications included), ending after the
/// response. Past `deadline`, or when the upstream ends without a response,
/// the client gets a JSON-RPC error for `id_json` instead. A client that goes
/// away drops the receiver, which ends the relay and the upstream request.
pub(crate) fn relay(mut upstream: reqwest::Response, deadline: Instant, id_json: String, service: String) -> Response {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(16);
    tokio::spawn(async move {
        let mut splitter = EventSplitter::default();
        let failure = loop {
            let chunk = match tokio::time::timeout_at(deadline, upstream.chunk()).await {
                Err(_) => break format!("{service} did not answer in time"),
                Ok(Err(_)) => break format!("{service} ended its reply without an answer"),
                Ok(Ok(None)) => {
                    // The last event may lack its blank line: relay it whole.
                    if let Some(event) = splitter.finish()
                        && sse::event_data(&event)
                            .and_then(|d| serde_json::from_str::<Value>(&d).ok())
                            .is_some_and(|m| sse::is_response(&m))
                    {
                        let mut event = event.to_vec();
                        event.extend_from_slice(b"\n\n");
                        let _ = tx.send(Ok(Bytes::from(event))).await;
                        return;
                    }
                    break format!("{service} ended its reply without an answer");
                }
                Ok(Ok(Some(chunk))) => chunk,
            };
            for event in splitter.push(&chunk) {
                let is_response = sse::event_data(&event)
                    .and_then(|d| serde_json::from_str::<Value>(&d).ok())
                    .is_some_and(|m| sse::is_response(&m));
                if tx.send(Ok(event)).await.is_err() {
                    return;
                }
                if is_response {
                    return;
                }
            }
        };
        tracing::warn!(target: "gatehouse::mcp", service = %service, reason = %failure, "upstream stream failed");
        let error = jsonrpc::error_response(&id_json, jsonrpc::INTERNAL_ERROR, &failure, None);
        let _ = tx.send(Ok(sse::message_event(&error))).await;
    });
    let body = Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream")),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (
                axum::http::HeaderName::from_static("x-accel-buffering"),
                HeaderValue::from_static("no"),
            ),
        ],
        body,
    )
        .into_response()
}
