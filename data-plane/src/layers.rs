//! The middleware every route shares, outermost first. Route groups add their
//! own layers (security headers on pages, the caller on `/mcp`).
//!
//! [`Observe`] gives each request its span (request id, trace id; the path,
//! never the query), continues the client's W3C `traceparent` or starts a
//! trace, keeps both ids for the control-plane calls the request makes
//! ([`propagate`]) and counts the request by route template (`metrics`).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::MatchedPath;
use axum::http::{HeaderName, HeaderValue, Request, Response, StatusCode, header};
use tower::{Layer, Service};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;
use tracing::Instrument as _;

use crate::AppState;
use crate::metrics::HttpMetrics;
use crate::trace_context::{self, SpanIds, TRACEPARENT};

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Wraps `routes` in the shared stack.
pub fn apply(routes: Router, state: &AppState) -> Router {
    let config = &state.config;
    // axum's `layer` wraps from the inside out: the last call is outermost.
    // Each layer wraps every route after routing, so `MatchedPath` is known to all.
    routes
        // Order: innermost; a handler past its time answers 408 instead of holding the connection.
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            Duration::from_millis(config.request_timeout_ms),
        ))
        // Order: outside the timeout, so an oversized body is refused (413) before any work.
        .layer(RequestBodyLimitLayer::new(config.max_body_bytes))
        // A panic in a handler becomes a 500 for that request, not a dropped connection.
        .layer(CatchPanicLayer::new())
        // Order: after the request id exists, so the echo carries it.
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        // Its events (debug: started, finished; error: a 5xx) go to the span of `Observe`.
        .layer(TraceLayer::new_for_http().make_span_with(|_: &Request<Body>| tracing::Span::none()))
        // Order: inside the request id (it logs it), outside everything a request can fail in.
        .layer(ObserveLayer(state.metrics.clone()))
        // Order: before any span, so no bearer token or cookie reaches a log line.
        .layer(SetSensitiveRequestHeadersLayer::new([
            header::AUTHORIZATION,
            header::COOKIE,
            header::SET_COOKIE,
        ]))
        // Order: outermost, so every log line and response of this request carries its id.
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
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
    // Boxed like every route layer's future in axum (`Route` boxes each one).
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
        let route = request.extensions().get::<MatchedPath>().cloned();
        let method = request.method().clone();
        let span = tracing::info_span!(
            "request",
            method = %method,
            route = route.as_ref().map_or("unmatched", MatchedPath::as_str),
            path = %loggable_path(request.uri().path()),
            // Safe: `sane_request_id` above (or made here).
            request_id = request_id.to_str().unwrap_or_default(),
            trace_id = tracing::field::Empty,
            span_id = tracing::field::Empty,
        );
        let ids = trace_context::start(&span, parent.as_ref());
        let current = RequestContext { request_id, span: ids };
        let inner = {
            let _entered = span.enter();
            self.inner.call(request)
        };
        let metrics = self.metrics.clone();
        let answered = CURRENT.scope(current, inner).instrument(span);
        Box::pin(async move {
            let result = answered.await;
            if let Ok(response) = &result {
                let route = route.as_ref().map_or("unmatched", MatchedPath::as_str);
                metrics.record(route, &method, response.status().as_u16(), start.elapsed());
            }
            result
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_link_ids_never_reach_the_log() {
        assert_eq!(loggable_path("/connect/gh_cl_secret"), "/connect/[redacted]");
        assert_eq!(loggable_path("/mcp"), "/mcp");
    }
}
