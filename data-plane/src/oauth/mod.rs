//! Gatehouse as OAuth 2.1 authorization server for MCP clients: discovery
//! documents, registration, `/authorize`, `/token` and `/revoke`. This module
//! parses the wire and shapes responses; every decision that needs state is
//! the control plane's (`FlowService`, `TokenService`).
//!
//! CORS: the metadata, token, registration and revocation endpoints allow any
//! origin (browser-based clients); `/authorize` never does (RFC 9700 §2.6) and
//! carries the page security headers instead.

pub(crate) mod authorize;
pub(crate) mod error;
pub(crate) mod metadata;
pub(crate) mod params;
pub(crate) mod register;
pub(crate) mod revoke;
pub(crate) mod token;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderName, Method, header};
use axum::middleware;
use axum::routing::{get, post};
use tower_http::cors::{Any, CorsLayer};

use crate::AppState;
use crate::consent::security_headers;

/// CORS for the endpoints browser-based clients call directly. No credentials
/// (cookies) are involved, so any origin may call them.
pub(crate) fn cors() -> CorsLayer {
    CorsLayer::new()
        .allow_origin(Any)
        .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            HeaderName::from_static("mcp-protocol-version"),
        ])
        // A browser client must read the challenge of a 401.
        .expose_headers([header::WWW_AUTHENTICATE])
        .max_age(Duration::from_secs(3600))
}

/// The OAuth routes.
pub(crate) fn router() -> Router<Arc<AppState>> {
    let cross_origin = Router::new()
        .route("/.well-known/oauth-protected-resource", get(metadata::get_protected_resource))
        .route(
            "/.well-known/oauth-protected-resource/mcp",
            get(metadata::get_protected_resource),
        )
        .route(
            "/.well-known/oauth-authorization-server",
            get(metadata::get_authorization_server),
        )
        .route("/.well-known/openid-configuration", get(metadata::get_authorization_server))
        .route("/register", post(register::post_register))
        .route("/token", post(token::post_token))
        .route("/revoke", post(revoke::post_revoke))
        .layer(cors());
    // Security: RFC 9700 §2.6, no CORS at the authorization endpoint; its error
    // page gets the page headers (no framing, RFC 9700 §4.16).
    let authorize = Router::new()
        .route("/authorize", get(authorize::get_authorize))
        .layer(middleware::from_fn(security_headers));
    cross_origin.merge(authorize)
}
