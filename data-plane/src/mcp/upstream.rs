//! The upstream MCP client: Streamable HTTP in the legacy wire (initialize
//! once, then requests with `MCP-Protocol-Version` and the upstream's
//! `Mcp-Session-Id` when it gave one). It sends the caller's credential for
//! the service and nothing of the MCP client's request but the JSON-RPC body:
//! never the client's `Authorization` (SPEC-NOTES §2.4, C8), never its other
//! headers. JSON replies come back as bytes; SSE replies as the open response,
//! to be relayed ([`relay`]) or read to their response ([`read_response`]).
//!
//! The client is hyper's own (pooled HTTP/1.1 keep-alive, rustls for https)
//! rather than reqwest: on the hot path reqwest's URL handling, redirect
//! policy and retry layers cost about a tenth of a warm `tools/call`
//! (BENCHMARKS.md), and Gatehouse needs none of them here.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderName, HeaderValue, Method, Request, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rustls_platform_verifier::BuilderVerifierExt as _;
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
    /// The revision the upstream answered with, as the header every later request carries.
    pub(crate) version: HeaderValue,
}

/// What an upstream answered.
#[derive(Debug)]
pub(crate) enum UpstreamReply {
    /// A JSON body, as received.
    Json(Bytes),
    /// An SSE stream, still open.
    Sse(hyper::Response<Incoming>),
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

/// Why the upstream client could not be made.
#[derive(Debug, thiserror::Error)]
#[error("the upstream HTTP client could not be made: {0}")]
pub(crate) struct ClientError(#[from] rustls::Error);

/// The upstream HTTP client (one per data plane, cheap to clone).
#[derive(Clone, Debug)]
pub(crate) struct UpstreamClient {
    http: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    /// Service URLs, parsed once (a parse per call showed in the profile).
    urls: Arc<std::sync::RwLock<std::collections::HashMap<String, Uri>>>,
}

/// Parsed service URLs kept at most (there are a handful of services).
const MAX_PARSED_URLS: usize = 256;

impl UpstreamClient {
    pub(crate) fn new() -> Result<Self, ClientError> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_platform_verifier()?
            .with_no_client_auth();
        let mut tcp = HttpConnector::new();
        tcp.set_connect_timeout(Some(Duration::from_secs(5)));
        tcp.set_nodelay(true);
        // `https_or_http` lets the connector see `https` URLs.
        tcp.enforce_http(false);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(tcp);
        // hyper follows no redirects. Security: an upstream cannot send the
        // request (with the person's credential) somewhere else.
        let http = Client::builder(TokioExecutor::new()).build(connector);
        Ok(Self {
            http,
            urls: Arc::default(),
        })
    }

    /// `service.url`, parsed (and checked to be http or https).
    fn url(&self, service: &Service) -> Result<Uri, UpstreamError> {
        let read = self.urls.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(url) = read.get(&service.url) {
            return Ok(url.clone());
        }
        drop(read);
        let url: Uri = service
            .url
            .parse()
            .ok()
            .filter(|url: &Uri| matches!(url.scheme_str(), Some("http" | "https")) && url.host().is_some())
            .ok_or_else(|| UpstreamError::Unreachable("the service URL is not an http(s) URL".into()))?;
        let mut write = self.urls.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        if write.len() >= MAX_PARSED_URLS {
            write.clear();
        }
        write.insert(service.url.clone(), url.clone());
        Ok(url)
    }

    /// Sends a POST of `body` to `service` with the credential's headers and
    /// `extra` headers; the response once its head has arrived, by `deadline`.
    async fn send(
        &self,
        service: &Service,
        credential: &Credential,
        extra: &[(HeaderName, HeaderValue)],
        body: Bytes,
        deadline: Instant,
    ) -> Result<hyper::Response<Incoming>, UpstreamError> {
        let mut request = Request::new(Full::new(body));
        *request.method_mut() = Method::POST;
        *request.uri_mut() = self.url(service)?;
        let headers = request.headers_mut();
        headers.insert(header::CONTENT_TYPE, APPLICATION_JSON);
        headers.insert(header::ACCEPT, ACCEPT_BOTH);
        for (name, value) in extra {
            headers.insert(name.clone(), value.clone());
        }
        for (name, value) in &credential.headers {
            headers.insert(name.clone(), value.clone());
        }
        match tokio::time::timeout_at(deadline, self.http.request(request)).await {
            Err(_) => Err(UpstreamError::Timeout),
            // The error says what failed (connect, closed), never a header.
            Ok(Err(err)) => Err(UpstreamError::Unreachable(describe(&err))),
            Ok(Ok(response)) => Ok(response),
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
        let mut extra = Vec::new();
        if let Some(session) = session {
            extra.push((MCP_PROTOCOL_VERSION, session.version.clone()));
            if let Some(id) = &session.session_id {
                extra.push((MCP_SESSION_ID, id.clone()));
            }
        }
        let response = self.send(service, credential, &extra, body, deadline).await?;
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
        let content_type = content_type(&response);
        if content_type.starts_with("text/event-stream") && status.is_success() {
            return Ok(UpstreamReply::Sse(response));
        }
        // A JSON-RPC error may come with a 4xx status; its body still answers the request.
        if content_type.starts_with("application/json") {
            let body = read_body(response.into_body(), deadline).await?;
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
            .and_then(|version| HeaderValue::from_str(version).ok())
            .ok_or_else(|| UpstreamError::Malformed("initialize has no protocolVersion".into()))?;
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
        let response = self.send(service, credential, &[], Bytes::from(body), deadline).await?;
        let status = response.status();
        if status == StatusCode::UNAUTHORIZED || (status == StatusCode::FORBIDDEN && challenge_says_invalid_token(&response)) {
            return Err(UpstreamError::Unauthorized);
        }
        if !status.is_success() {
            return Err(UpstreamError::Status(status.as_u16()));
        }
        let session_id = response
            .headers()
            .get(MCP_SESSION_ID)
            .filter(|v| !v.is_empty() && v.as_bytes().iter().all(|b| (0x21..=0x7e).contains(b)))
            .cloned();
        let reply = if content_type(&response).starts_with("text/event-stream") {
            UpstreamReply::Sse(response)
        } else {
            UpstreamReply::Json(read_body(response.into_body(), deadline).await?)
        };
        Ok((session_id, reply))
    }
}

/// A client error for a log line: its kind and causes, never a URL or header.
fn describe(err: &hyper_util::client::legacy::Error) -> String {
    let mut text = if err.is_connect() {
        String::from("could not connect")
    } else {
        String::from("the connection failed")
    };
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The reply's media type, lowercased.
fn content_type(response: &hyper::Response<Incoming>) -> String {
    response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase()
}

/// Whether a 403 carries `WWW-Authenticate: Bearer error="invalid_token"`.
fn challenge_says_invalid_token(response: &hyper::Response<Incoming>) -> bool {
    response
        .headers()
        .get_all(header::WWW_AUTHENTICATE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("invalid_token"))
}

/// The next chunk of data of `body` (trailers skipped); `None` at its end.
async fn chunk(body: &mut Incoming) -> Result<Option<Bytes>, hyper::Error> {
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            return Ok(Some(data));
        }
    }
    Ok(None)
}

async fn read_body(mut response: Incoming, deadline: Instant) -> Result<Bytes, UpstreamError> {
    // Most replies arrive in one chunk: keep it as it is, copy only when there are more.
    let mut first: Option<Bytes> = None;
    let mut body = Vec::new();
    loop {
        match tokio::time::timeout_at(deadline, chunk(&mut response)).await {
            Err(_) => return Err(UpstreamError::Timeout),
            Ok(Err(err)) => return Err(UpstreamError::Unreachable(err.to_string())),
            Ok(Ok(None)) => {
                return Ok(match first {
                    Some(first) if body.is_empty() => first,
                    _ => Bytes::from(body),
                });
            }
            Ok(Ok(Some(chunk))) => {
                let read = first.as_ref().map_or(0, Bytes::len) + body.len() + chunk.len();
                if read > MAX_REPLY_BYTES {
                    return Err(UpstreamError::Malformed("the reply is too large".into()));
                }
                match first.take() {
                    None if body.is_empty() => first = Some(chunk),
                    taken => {
                        if let Some(taken) = taken {
                            body.extend_from_slice(&taken);
                        }
                        body.extend_from_slice(&chunk);
                    }
                }
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
        UpstreamReply::Sse(response) => {
            let mut response = response.into_body();
            let mut splitter = EventSplitter::default();
            let mut read = 0usize;
            loop {
                let chunk = match tokio::time::timeout_at(deadline, chunk(&mut response)).await {
                    Err(_) => return Err(UpstreamError::Timeout),
                    Ok(Err(err)) => return Err(UpstreamError::Unreachable(err.to_string())),
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
pub(crate) fn relay(upstream: hyper::Response<Incoming>, deadline: Instant, id_json: String, service: String) -> Response {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(16);
    let mut upstream = upstream.into_body();
    tokio::spawn(async move {
        let mut splitter = EventSplitter::default();
        let failure = loop {
            let chunk = match tokio::time::timeout_at(deadline, chunk(&mut upstream)).await {
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
