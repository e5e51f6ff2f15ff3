//! Rate limits on what people and clients could abuse: `/register`,
//! `/authorize`, `/token`, `/revoke` and every form post (identity, virtual
//! key, sign-in, connect, approve, connect links). Each client address has a
//! token bucket, and each OAuth client id another (so one client cannot starve
//! the others behind a shared address, nor many addresses one client's budget).
//! Over the limit: 429 with `Retry-After`, before any control-plane call.
//!
//! The buckets live in this data plane's memory: a fleet of N instances allows
//! up to N times the rate, which bounds abuse without shared state on the hot
//! path. Behind a proxy the address is the proxy's; put limits there too.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::BoxError;
use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{ConnectInfo, Request};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use tower::{Layer, Service, ServiceExt as _};

use crate::AppState;

/// The `[data_plane.rate_limits]` table.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimits {
    /// Requests a minute from one client address (0 turns the limit off).
    pub per_address_per_minute: u32,
    /// Requests a minute naming one OAuth client id (0 turns the limit off).
    pub per_client_per_minute: u32,
}

impl Default for RateLimits {
    fn default() -> Self {
        Self {
            per_address_per_minute: 300,
            per_client_per_minute: 600,
        }
    }
}

/// Most buckets kept; past it, full (idle) buckets are forgotten.
const MAX_BUCKETS: usize = 100_000;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// Token buckets keyed by address or client id.
#[derive(Debug, Default)]
pub struct Limiter {
    buckets: Mutex<HashMap<Key, Bucket>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Address(IpAddr),
    Client(String),
}

impl Limiter {
    /// Takes one token from `key`'s bucket, or says how long until one is there.
    fn take(&self, key: Key, per_minute: u32, now: Instant) -> Result<(), Duration> {
        if per_minute == 0 {
            return Ok(());
        }
        let capacity = f64::from(per_minute);
        let per_second = capacity / 60.0;
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        if buckets.len() >= MAX_BUCKETS && !buckets.contains_key(&key) {
            buckets.retain(|_, b| b.tokens + now.duration_since(b.updated).as_secs_f64() * per_second < capacity);
        }
        let bucket = buckets.entry(key).or_insert(Bucket {
            tokens: capacity,
            updated: now,
        });
        let elapsed = now.duration_since(bucket.updated).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * per_second).min(capacity);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64(((1.0 - bucket.tokens) / per_second).ceil().max(1.0)))
        }
    }
}

/// Whether a request is one the limits apply to.
fn limited(method: &Method, path: &str) -> bool {
    matches!(path, "/register" | "/authorize" | "/token" | "/revoke")
        || (method == Method::POST && (path.starts_with("/consent/") || path.starts_with("/connect/")))
}

/// The OAuth client id a request names: the `/authorize` query, HTTP Basic, or the form body.
fn client_id(query: Option<&str>, authorization: Option<&str>, body: &[u8]) -> Option<String> {
    let from_pairs = |bytes: &[u8]| {
        url::form_urlencoded::parse(bytes)
            .find(|(name, _)| name == "client_id")
            .map(|(_, value)| value.into_owned())
    };
    if let Some(id) = query.and_then(|q| from_pairs(q.as_bytes())) {
        return Some(id);
    }
    if let Some(basic) = authorization.and_then(|a| a.strip_prefix("Basic ")) {
        use base64::Engine as _;
        let decoded = base64::engine::general_purpose::STANDARD.decode(basic.trim()).ok()?;
        let text = String::from_utf8(decoded).ok()?;
        let id = text.split(':').next()?;
        return Some(
            url::form_urlencoded::parse(format!("x={id}").as_bytes())
                .next()?
                .1
                .into_owned(),
        );
    }
    from_pairs(body)
}

/// The rate-limit layer (`layers::apply`): per-address, then per-client
/// limits on the limited routes; every other request passes untouched.
#[derive(Clone)]
pub(crate) struct RateLimitLayer(pub(crate) Arc<AppState>);

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimit {
            inner,
            state: self.0.clone(),
        }
    }
}

#[derive(Clone)]
pub(crate) struct RateLimit<S> {
    inner: S,
    state: Arc<AppState>,
}

impl<S, B> Service<Request<B>> for RateLimit<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: HttpBody<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let request = request.map(Body::new);
        if !limited(request.method(), request.uri().path()) {
            return Box::pin(self.inner.call(request));
        }
        // The service that was made ready answers; a fresh clone stays for the next call.
        let fresh = self.inner.clone();
        let ready = std::mem::replace(&mut self.inner, fresh);
        let state = self.state.clone();
        Box::pin(async move {
            match admit(&state, request).await {
                Ok(request) => ready.oneshot(request).await,
                Err(refusal) => Ok(refusal),
            }
        })
    }
}

/// `request`, when neither its address nor its client is over the limit;
/// otherwise the 429.
async fn admit(state: &AppState, request: Request) -> Result<Request, Response> {
    let path = request.uri().path();
    let limits = &state.config.rate_limits;
    let now = Instant::now();
    if let Some(ConnectInfo(peer)) = request.extensions().get::<ConnectInfo<SocketAddr>>()
        && let Err(wait) = state
            .limiter
            .take(Key::Address(peer.ip()), limits.per_address_per_minute, now)
    {
        tracing::warn!(target: "gatehouse::security", reason = "rate limit per address", path, "request refused");
        return Err(too_many(wait));
    }
    if limits.per_client_per_minute == 0 || path.starts_with("/consent/") || path.starts_with("/connect/") {
        return Ok(request);
    }
    // The client id may be in the form body: read it (the body limit layer
    // already bounds it) and hand the same bytes on.
    let (parts, body) = request.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, state.config.max_body_bytes).await else {
        return Err(StatusCode::PAYLOAD_TOO_LARGE.into_response());
    };
    let authorization = parts.headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    if let Some(id) = client_id(parts.uri.query(), authorization, &bytes)
        && let Err(wait) = state.limiter.take(Key::Client(id), limits.per_client_per_minute, now)
    {
        tracing::warn!(target: "gatehouse::security", reason = "rate limit per client", path = parts.uri.path(), "request refused");
        return Err(too_many(wait));
    }
    Ok(Request::from_parts(parts, Body::from(bytes)))
}

fn too_many(wait: Duration) -> Response {
    let seconds = wait.as_secs().max(1);
    let body = serde_json::json!({
        "error": "temporarily_unavailable",
        "error_description": format!("too many requests; retry after {seconds} seconds"),
    });
    let mut response = (StatusCode::TOO_MANY_REQUESTS, axum::Json(body)).into_response();
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&seconds.to_string()) {
        headers.insert(header::RETRY_AFTER, value);
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // The request's body may be unread, and hyper then closes the connection:
    // say so, rather than let the client's next request on it fail.
    headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_empties_refills_and_says_how_long_to_wait() {
        let limiter = Limiter::default();
        let start = Instant::now();
        let key = || Key::Address(IpAddr::from([127, 0, 0, 1]));
        for _ in 0..3 {
            assert!(limiter.take(key(), 3, start).is_ok());
        }
        let wait = limiter.take(key(), 3, start).unwrap_err();
        assert_eq!(wait, Duration::from_secs(20));
        assert!(limiter.take(key(), 3, start + Duration::from_secs(21)).is_ok(), "refilled");
        assert!(
            limiter.take(Key::Address(IpAddr::from([10, 0, 0, 1])), 3, start).is_ok(),
            "buckets are per key"
        );
        assert!(limiter.take(key(), 0, start).is_ok(), "0 turns the limit off");
    }

    #[test]
    fn the_client_id_comes_from_the_query_basic_or_the_form() {
        assert_eq!(
            client_id(Some("response_type=code&client_id=abc"), None, b""),
            Some("abc".into())
        );
        assert_eq!(client_id(None, Some("Basic YSUyMGI6c2VjcmV0"), b""), Some("a b".into()));
        assert_eq!(client_id(None, None, b"grant_type=x&client_id=c%2B1"), Some("c+1".into()));
        assert_eq!(client_id(None, None, b"grant_type=x"), None);
    }

    #[test]
    fn limits_cover_the_abusable_endpoints_only() {
        assert!(limited(&Method::POST, "/token"));
        assert!(limited(&Method::GET, "/authorize"));
        assert!(limited(&Method::POST, "/consent/f/identity"));
        assert!(limited(&Method::POST, "/connect/x"));
        assert!(!limited(&Method::GET, "/consent/f/identity"));
        assert!(!limited(&Method::POST, "/mcp"));
        assert!(!limited(&Method::GET, "/.well-known/oauth-authorization-server"));
    }
}
