//! The middleware every request crosses, outermost first, wrapped once
//! around the finished router ([`apply`]) rather than per route: axum clones
//! a route's boxed layer stack on every request, which the profile showed
//! costing a tenth of a warm `tools/call` (BENCHMARKS.md). Route groups add
//! their own layers (security headers on pages); `/mcp` checks its caller in
//! its handlers.
//!
//! [`Observe`] gives each request its id and span (request id, trace id; the
//! path, never the query), continues the client's W3C `traceparent` or starts
//! a trace, keeps both ids for the control-plane calls the request makes
//! ([`propagate`]), logs its start and end, echoes `x-request-id`, and counts
//! the request by route template (`metrics`), which [`RouteLabel`] reports
//! from inside routing.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::MatchedPath;
use axum::http::{HeaderName, HeaderValue, Request, Response, StatusCode, header};
use tower::{Layer, Service, ServiceBuilder};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::map_response_body::MapResponseBodyLayer;
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tower_http::timeout::TimeoutLayer;
use tracing::Instrument as _;

use crate::AppState;
use crate::metrics::HttpMetrics;
use crate::ratelimit::RateLimitLayer;
use crate::trace_context::{self, SpanIds, TRACEPARENT};

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The whole HTTP service: `routes` inside the shared stack.
pub type App = tower::util::BoxCloneSyncService<Request<Body>, Response<Body>, Infallible>;

/// Wraps `routes` (once) in the shared stack.
pub fn apply(routes: Router, state: &Arc<AppState>) -> App {
    let config = &state.config;
    // Inside routing, per route: the one layer that must know the matched route.
    let routes = routes.layer(RouteLabelLayer);
    let stack = ServiceBuilder::new()
        // One box for every response body, so the service has axum's types.
        .layer(MapResponseBodyLayer::new(Body::new))
        // A 413 leaves the request body unread, and hyper then closes the
        // connection: the response says so, so a keep-alive client does not
        // send its next request into a closed connection (the 401 of `/mcp`
        // drains its body instead: `mcp::refuse_after_draining`).
        .map_response(close_after_a_refused_body)
        // Order: before any span, so no bearer token or cookie reaches a log line.
        .layer(SetSensitiveRequestHeadersLayer::new([
            header::AUTHORIZATION,
            header::COOKIE,
            header::SET_COOKIE,
        ]))
        // Order: outside everything a request can fail in, so each has its id, span and count.
        .layer(ObserveLayer(state.metrics.clone()))
        // A panic in a handler becomes a 500 for that request, not a dropped connection.
        .layer(CatchPanicLayer::custom(panic_response))
        // Order: outside the timeout, so an oversized body is refused (413) before any work.
        .layer(RequestBodyLimitLayer::new(config.max_body_bytes))
        // A handler past its time answers 408 instead of holding the connection.
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            Duration::from_millis(config.request_timeout_ms),
        ))
        // Order: innermost, right outside routing, so an over-limit request
        // costs no control-plane call; it reads form bodies the limit above bounds.
        .layer(RateLimitLayer(state.clone()))
        .service(routes);
    App::new(stack)
}

/// Adds `Connection: close` to a 413 (see [`apply`]).
fn close_after_a_refused_body<B>(mut response: Response<B>) -> Response<B> {
    if response.status() == StatusCode::PAYLOAD_TOO_LARGE {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// The 500 for a handler that panicked. Security: the panic's message is
/// neither logged nor answered, since it could quote a value it failed on.
fn panic_response(_payload: Box<dyn std::any::Any + Send + 'static>) -> Response<Body> {
    tracing::error!(target: "gatehouse::http", "a handler panicked; answered 500");
    let mut response = Response::new(Body::from(r#"{"error":"server_error","error_description":"internal error"}"#));
    *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// Names the matched route, inside routing where axum knows it: on the
/// request's span, and on the response for [`Observe`]'s metrics.
#[derive(Clone, Copy)]
struct RouteLabelLayer;

impl<S> Layer<S> for RouteLabelLayer {
    type Service = RouteLabel<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RouteLabel(inner)
    }
}

#[derive(Clone)]
struct RouteLabel<S>(S);

impl<S> Service<Request<Body>> for RouteLabel<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let route = request.extensions().get::<MatchedPath>().cloned();
        if let Some(route) = &route {
            tracing::Span::current().record("route", route.as_str());
        }
        let answered = self.0.call(request);
        Box::pin(async move {
            let mut response = answered.await?;
            if let Some(route) = route {
                response.extensions_mut().insert(route);
            }
            Ok(response)
        })
    }
}

/// A request path fit for a log line: `/connect/<link id>` loses its secret.
fn loggable_path(path: &str) -> &str {
    if path.starts_with("/connect/") {
        "/connect/[redacted]"
    } else {
        path
    }
}

/// What control-plane calls made for a request carry.
#[derive(Clone)]
struct RequestContext {
    request_id: HeaderValue,
    /// The request's span.
    span: SpanIds,
}

tokio::task_local! {
    static CURRENT: RequestContext;
}

/// Adds the current request's `traceparent` (naming its span as the parent)
/// and `x-request-id` to a control-plane call's metadata (`cp_client`'s
/// interceptor); nothing outside a request (the event stream).
pub(crate) fn propagate(metadata: &mut tonic::metadata::MetadataMap) {
    let _ = CURRENT.try_with(|current| {
        if let Ok(value) = current.span.traceparent().parse() {
            metadata.insert(TRACEPARENT, value);
        }
        if let Ok(value) = tonic::metadata::MetadataValue::try_from(current.request_id.as_bytes()) {
            metadata.insert("x-request-id", value);
        }
    });
}

/// `future`, run in another task, still as part of the current request (its
/// span, its ids for control-plane calls).
pub(crate) fn in_request<F: Future>(future: F) -> impl Future<Output = F::Output> {
    // Order: read now, in the request's task; the future runs in another.
    let current = CURRENT.try_with(RequestContext::clone).ok();
    let span = tracing::Span::current();
    async move {
        match current {
            Some(current) => CURRENT.scope(current, future).await,
            None => future.await,
        }
    }
    .instrument(span)
}

/// [`Observe`] for every route.
#[derive(Clone)]
pub(crate) struct ObserveLayer(Arc<HttpMetrics>);

impl<S> Layer<S> for ObserveLayer {
    type Service = Observe<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Observe {
            inner,
            metrics: self.0.clone(),
        }
    }
}

/// Span, trace context and metrics of one request.
#[derive(Clone)]
pub(crate) struct Observe<S> {
    inner: S,
    metrics: Arc<HttpMetrics>,
}

impl<S, B> Service<Request<Body>> for Observe<S>
where
    S: Service<Request<Body>, Response = Response<B>>,
    S::Future: Send + 'static,
{
    type Response = Response<B>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<B>, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<Body>) -> Self::Future {
        let start = Instant::now();
        // A client's request id is kept only when it is fit for a log line.
        let request_id = match request.headers().get(&REQUEST_ID) {
            Some(id) if trace_context::sane_request_id(id.as_bytes()).is_some() => id.clone(),
            _ => {
                let fresh = HeaderValue::from_str(&format!("{:032x}", rand::random::<u128>()))
                    .unwrap_or(HeaderValue::from_static("unknown"));
                request.headers_mut().insert(REQUEST_ID, fresh.clone());
                fresh
            }
        };
        let parent = request
            .headers()
            .get(TRACEPARENT)
            .and_then(|value| SpanIds::parse(value.as_bytes()));
        let method = request.method().clone();
        let span = tracing::info_span!(
            "request",
            method = %method,
            // Recorded by `RouteLabel` once routing has matched.
            route = tracing::field::Empty,
            path = %loggable_path(request.uri().path()),
            // Safe: `sane_request_id` above (or made here).
            request_id = request_id.to_str().unwrap_or_default(),
            trace_id = tracing::field::Empty,
            span_id = tracing::field::Empty,
        );
        let ids = trace_context::start(&span, parent.as_ref());
        let inner = {
            let _entered = span.enter();
            tracing::debug!(target: "gatehouse::http", "started processing request");
            self.inner.call(request)
        };
        let current = RequestContext {
            request_id: request_id.clone(),
            span: ids,
        };
        let metrics = self.metrics.clone();
        let answered = CURRENT.scope(current, inner);
        Box::pin(
            async move {
                let mut result = answered.await;
                if let Ok(response) = &mut result {
                    let status = response.status();
                    let latency = start.elapsed();
                    let route = response.extensions().get::<MatchedPath>().map_or("unmatched", MatchedPath::as_str);
                    metrics.record(route, &method, status.as_u16(), latency);
                    if status.is_server_error() {
                        tracing::error!(target: "gatehouse::http", status = status.as_u16(), latency_ms = latency.as_millis() as u64, "request failed");
                    } else {
                        tracing::debug!(target: "gatehouse::http", status = status.as_u16(), latency_ms = latency.as_millis() as u64, "finished processing request");
                    }
                    response.headers_mut().entry(REQUEST_ID).or_insert(request_id);
                }
                result
            }
            .instrument(span),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panic_is_a_500_that_quotes_nothing_of_the_panic() {
        let response = panic_response(Box::new(String::from("token gh_at_secret")));
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = axum::body::to_bytes(response.into_body(), 1024).await.unwrap();
        assert!(!String::from_utf8_lossy(&body).contains("gh_at_secret"));
    }

    #[test]
    fn connect_link_ids_never_reach_the_log() {
        assert_eq!(loggable_path("/connect/gh_cl_secret"), "/connect/[redacted]");
        assert_eq!(loggable_path("/mcp"), "/mcp");
    }
}
