//! The consent pages: the identity and services pages, their form posts, the
//! sign-in and upstream OAuth callbacks, and the one stylesheet. Every page
//! and error page passes through [`security_headers`], the one place their
//! CSP, framing, sniffing, referrer and caching headers are set
//! (docs/consent-flow.md, "Routes"; SPEC-NOTES §5.5 C3, RFC 9700 §4.16).
//!
//! The pages only render and forward: the control plane decides every step.
//! Nothing here redirects to a client's `redirect_uri` that the control plane
//! did not hand back after verifying it.

pub(crate) mod cookie;
pub(crate) mod csrf;
pub(crate) mod error;
pub(crate) mod onward;
mod pages;
pub(crate) mod views;

use std::sync::Arc;

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderValue, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use crate::AppState;

/// The stylesheet every page links (`/static/gatehouse.css`).
const STYLESHEET: &str = include_str!("../../../templates/gatehouse.css");

/// The consent routes.
pub(crate) fn router() -> Router<Arc<AppState>> {
    let pages = Router::new()
        .route("/consent/{flow_id}", get(pages::get_consent))
        .route(
            "/consent/{flow_id}/identity",
            get(pages::get_identity).post(pages::post_identity),
        )
        .route("/consent/{flow_id}/services", get(pages::get_services))
        .route("/consent/{flow_id}/connect", post(pages::post_connect))
        .route("/consent/{flow_id}/continue", get(pages::get_continue))
        .route("/consent/{flow_id}/disconnect", post(pages::post_disconnect))
        .route("/consent/{flow_id}/approve", post(pages::post_approve))
        .route("/consent/{flow_id}/deny", post(pages::post_deny))
        .route("/signin/callback", get(pages::get_signin_callback))
        .route("/oauth/callback", get(pages::get_oauth_callback))
        .layer(middleware::from_fn(security_headers));
    // Order: the stylesheet sits outside the page headers, since it is cacheable.
    Router::new().route("/static/gatehouse.css", get(get_stylesheet)).merge(pages)
}

/// `GET /static/gatehouse.css`.
async fn get_stylesheet() -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("text/css; charset=utf-8")),
            (header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=3600")),
            (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
        ],
        STYLESHEET,
    )
        .into_response()
}

/// Extra `form-action` sources a page's forms may end at, set by the handler as
/// a response extension and turned into the CSP by [`security_headers`].
/// Browsers apply `form-action` to the redirect answering a form post too, so
/// the page whose forms end in a 303 to the client lists the client's
/// redirect origin. Connect and sign-in never redirect cross-origin from a
/// post: they answer 303 to the continuation page of this origin
/// (`redirect.html`, see `onward`), which leads on to the provider.
#[derive(Debug, Clone, Default)]
pub(crate) struct FormTargets(pub(crate) Vec<String>);

impl FormTargets {
    /// The target of the form posts that 303 to `redirect_uri`.
    pub(crate) fn redirect_to(redirect_uri: &str) -> Self {
        Self(form_target(redirect_uri).into_iter().collect())
    }
}

/// The CSP source matching `uri`: its origin for http(s), its scheme for a
/// native app's private-use URI. `None` if it does not parse.
pub(crate) fn form_target(uri: &str) -> Option<String> {
    let url = url::Url::parse(uri).ok()?;
    match url.scheme() {
        // The ASCII serialisation has no space, comma or semicolon, so it cannot
        // break out of the source list.
        "http" | "https" => Some(url.origin().ascii_serialization()),
        // `url` keeps schemes to [a-z0-9+.-].
        scheme => Some(format!("{scheme}:")),
    }
}

/// The page CSP with `targets` allowed as form destinations besides `'self'`.
pub(crate) fn content_security_policy(targets: &[String]) -> String {
    let mut form_action = String::from("'self'");
    for target in targets {
        form_action.push(' ');
        form_action.push_str(target);
    }
    format!(
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action {form_action}; frame-ancestors 'none'; base-uri 'none'"
    )
}

/// The headers of every page, error page and redirect of the consent routes
/// and `/authorize`.
pub(crate) async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let targets = response.extensions_mut().remove::<FormTargets>().unwrap_or_default();
    let csp = HeaderValue::from_str(&content_security_policy(&targets.0)).unwrap_or_else(|_| {
        HeaderValue::from_static(
            "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        )
    });
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_SECURITY_POLICY, csp);
    // Security: RFC 9700 §4.16, no framing (X-Frame-Options for browsers without CSP 2).
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    // Security: page URLs carry the flow id and callbacks carry codes; no Referer leaks them.
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_csp_allows_only_self_and_the_given_form_targets() {
        assert_eq!(
            content_security_policy(&[]),
            "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
        );
        assert_eq!(
            content_security_policy(&["http://127.0.0.1:33418".into()]),
            "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self' http://127.0.0.1:33418; frame-ancestors 'none'; base-uri 'none'"
        );
    }

    #[test]
    fn form_targets_are_origins_or_schemes() {
        assert_eq!(
            form_target("https://claude.ai/api/mcp/auth_callback?x=1").as_deref(),
            Some("https://claude.ai")
        );
        assert_eq!(
            form_target("http://localhost:6274/oauth/callback").as_deref(),
            Some("http://localhost:6274")
        );
        assert_eq!(form_target("HTTP://[::1]:80/cb").as_deref(), Some("http://[::1]"));
        assert_eq!(
            form_target("cursor://anysphere.cursor-mcp/oauth/callback").as_deref(),
            Some("cursor:")
        );
        assert_eq!(form_target("com.example.app:/callback").as_deref(), Some("com.example.app:"));
        assert_eq!(form_target("not a url; script-src *"), None);
        assert!(FormTargets::redirect_to("").0.is_empty());
    }
}
