//! The middleware every route shares, outermost first. Route groups add their
//! own layers (security headers on pages, the caller on `/mcp`).

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderName, Request, StatusCode, header};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use crate::config::DataPlaneConfig;

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Wraps `routes` in the shared stack.
pub fn apply(routes: Router, config: &DataPlaneConfig) -> Router {
    // axum's `layer` wraps from the inside out: the last call is outermost.
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
        // The span names the path, never the query: callbacks carry authorization
        // codes there, and a refused `?access_token=` would otherwise reach the log.
        // A connect link's path carries its secret id: that part is redacted.
        .layer(TraceLayer::new_for_http().make_span_with(|request: &Request<Body>| {
            tracing::debug_span!("request", method = %request.method(), path = %loggable_path(request.uri().path()))
        }))
        // Order: before Trace, so no bearer token or cookie reaches a log line.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_link_ids_never_reach_the_log() {
        assert_eq!(loggable_path("/connect/gh_cl_secret"), "/connect/[redacted]");
        assert_eq!(loggable_path("/mcp"), "/mcp");
    }
}
