//! The connect-link page: `GET /connect/{link_id}` shows what the link
//! connects and asks the person to prove the identity it belongs to;
//! `POST /connect/{link_id}` sends that proof to the control plane
//! (`OpenConnectLink`), which spends the link and begins the upstream
//! authorization, and answers 303 to `/connect/{link_id}/continue`, the signed
//! continuation page (`consent::onward`) that leads on to the upstream. The
//! upstream's redirect back lands on `/oauth/callback` like any connection.
//!
//! A signed-in user's link offers "Sign in with <provider>": the POST then
//! begins a sign-in bound to the link and to this browser's cookie, the
//! provider's redirect lands on `/signin/callback`, and only if the verified
//! account is the link's own does that page continue to the upstream.
//!
//! Security (SPEC-NOTES §5.4 phishing rule, C9): a link is bound to the
//! identity of the grant that asked; the control plane refuses a virtual key
//! of another identity. The form carries a CSRF token bound to a short-lived
//! cookie the GET sets (as the consent forms are bound to the flow cookie),
//! checked before any control-plane call. The link id is a secret: it is in
//! the URL the person was given and in the form action, never in a log line.

use std::net::SocketAddr;
use std::sync::Arc;

use askama::Template;
use askama_web::WebTemplate;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::AppState;
use crate::consent::csrf;
use crate::consent::error::{PageError, PageErrorKind};
use crate::consent::onward::{self, Onward};
use crate::consent::security_headers;
use crate::consent::views::Page;
use crate::cp_client::{CpError, CpResultExt as _};
use crate::oauth::params::Params;
use crate::pb::{ConnectLinkProof, ErrorReason, OpenConnectLinkRequest, OpenConnectLinkResponse};

/// The CSRF cookie's name on an https issuer (`__Host-`: Secure, Path=/, no Domain).
const SECURE_COOKIE: &str = "__Host-gatehouse-connect";
/// Its name on an http issuer (development).
const PLAIN_COOKIE: &str = "gatehouse-connect";
/// Seconds the cookie lives: a link's lifetime.
const COOKIE_MAX_AGE: u32 = 600;

/// The connect-link routes.
pub(crate) fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/connect/{link_id}", get(get_connect).post(post_connect))
        .route("/connect/{link_id}/continue", get(get_continue))
        .layer(middleware::from_fn(security_headers))
}

/// The page of an id that cannot be a link's (no control-plane call).
fn no_such_link() -> PageError {
    PageError::from(CpError::Refused {
        reason: ErrorReason::NotFound,
        description: String::new(),
    })
}

/// Whether `link_id` can be a link id the control plane issued.
fn is_link_id(link_id: &str) -> bool {
    !link_id.is_empty() && link_id.len() <= 128 && link_id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn cookie_name(public_url: &str) -> &'static str {
    if public_url.get(..8).is_some_and(|s| s.eq_ignore_ascii_case("https://")) {
        SECURE_COOKIE
    } else {
        PLAIN_COOKIE
    }
}

/// The connect cookie's secret, if the browser sent a well-formed one. It keys
/// the page's CSRF token and binds the upstream callback to this browser.
pub(crate) fn cookie_secret(headers: &HeaderMap, public_url: &str) -> Option<String> {
    let wanted = cookie_name(public_url);
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .filter(|(name, value)| {
            *name == wanted && value.len() == 43 && value.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        })
        .map(|(_, value)| value.to_owned())
        .next()
}

fn set_cookie(public_url: &str, secret: &str) -> Option<HeaderValue> {
    let secure = if cookie_name(public_url) == SECURE_COOKIE {
        "; Secure"
    } else {
        ""
    };
    HeaderValue::from_str(&format!(
        "{}={secret}; HttpOnly; SameSite=Lax; Path=/; Max-Age={COOKIE_MAX_AGE}{secure}",
        cookie_name(public_url)
    ))
    .ok()
}

/// `templates/connect.html`.
#[derive(Template, WebTemplate)]
#[template(path = "connect.html")]
pub(crate) struct ConnectView {
    pub(crate) link_id: String,
    pub(crate) csrf: String,
    pub(crate) display_name: String,
    /// Ask for the identity's virtual key.
    pub(crate) virtual_key: bool,
    /// The identity is a signed-in user: proved by signing in again.
    pub(crate) sign_in: bool,
    /// The sign-in button's label; empty when sign-in is not configured.
    pub(crate) sign_in_label: String,
    pub(crate) error: Option<String>,
}

impl ConnectView {
    fn new(link_id: &str, csrf: String, link: &OpenConnectLinkResponse) -> Self {
        let proof = ConnectLinkProof::try_from(link.proof).unwrap_or(ConnectLinkProof::Unspecified);
        Self {
            link_id: link_id.to_owned(),
            csrf,
            display_name: if link.display_name.is_empty() {
                link.service.clone()
            } else {
                link.display_name.clone()
            },
            virtual_key: proof == ConnectLinkProof::VirtualKey,
            sign_in: matches!(proof, ConnectLinkProof::SignIn | ConnectLinkProof::Unspecified),
            sign_in_label: link.sign_in_label.clone(),
            error: None,
        }
    }
}

async fn preview(state: &AppState, link_id: &str, peer: SocketAddr) -> Result<OpenConnectLinkResponse, PageError> {
    state
        .cp
        .flows()
        .open_connect_link(OpenConnectLinkRequest {
            link_id: link_id.to_owned(),
            preview: true,
            remote_addr: peer.ip().to_string(),
            ..Default::default()
        })
        .await
        .cp("OpenConnectLink")
        .map_err(PageError::from)
}

/// `GET /connect/{link_id}`: what the link connects, and the proof form.
pub(crate) async fn get_connect(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(link_id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, PageError> {
    if !is_link_id(&link_id) {
        return Err(no_such_link());
    }
    let link = preview(&state, &link_id, peer).await?;
    let public_url = &state.config.public_url;
    let secret = cookie_secret(&headers, public_url).unwrap_or_else(|| URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>()));
    let view = ConnectView::new(&link_id, csrf::token(&secret, &link_id), &link);
    let mut response = Page::new(view, StatusCode::OK).into_response();
    if let Some(cookie) = set_cookie(public_url, &secret) {
        response.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    Ok(response)
}

/// `POST /connect/{link_id}`: `csrf` and, for a virtual-key identity, `virtual_key`.
pub(crate) async fn post_connect(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(link_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, PageError> {
    if !is_link_id(&link_id) {
        return Err(no_such_link());
    }
    let secret = cookie_secret(&headers, &state.config.public_url).ok_or_else(|| PageError::new(PageErrorKind::NoFlowCookie))?;
    let form = Params::parse(&body, &[]).map_err(|dup| PageError::bad_request(dup.to_string()))?;
    // Security: CSRF check before any control-plane call: only the browser
    // holding the cookie the page set can compute the token.
    if !csrf::verify(&secret, &link_id, form.get("csrf")) {
        return Err(PageError::new(PageErrorKind::Csrf));
    }
    let virtual_key = form.value("virtual_key").trim().to_owned();
    let opened = state
        .cp
        .flows()
        .open_connect_link(OpenConnectLinkRequest {
            link_id: link_id.clone(),
            virtual_key,
            // Binds the upstream (or sign-in) callback to this browser (its cookie).
            browser_secret: secret.clone(),
            remote_addr: peer.ip().to_string(),
            ..Default::default()
        })
        .await
        .cp("OpenConnectLink");
    match opened {
        // 303 to this origin's continuation page, as the consent posts do:
        // a reload shows the page again instead of posting the proof twice.
        Ok(opened) => onward::see_other(&secret, Onward::Link(&link_id), &opened.authorization_url),
        Err(CpError::Refused {
            reason: reason @ (ErrorReason::InvalidVirtualKey | ErrorReason::InvalidRequest),
            ..
        }) => {
            // The form again, with why; 401 like the identity page.
            let link = preview(&state, &link_id, peer).await?;
            let mut view = ConnectView::new(&link_id, csrf::token(&secret, &link_id), &link);
            view.error = Some(if reason == ErrorReason::InvalidVirtualKey {
                "This virtual key was not accepted: it is unknown or revoked.".to_owned()
            } else {
                "Enter your virtual key.".to_owned()
            });
            Ok(Page::new(view, StatusCode::UNAUTHORIZED).into_response())
        }
        Err(err) => Err(PageError::from(err)),
    }
}

/// `GET /connect/{link_id}/continue?to=…&sig=…`: the continuation page the
/// post leads to; it needs the cookie of the browser that posted.
pub(crate) async fn get_continue(
    State(state): State<Arc<AppState>>,
    Path(link_id): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, PageError> {
    if !is_link_id(&link_id) {
        return Err(no_such_link());
    }
    let secret = cookie_secret(&headers, &state.config.public_url).ok_or_else(|| PageError::new(PageErrorKind::NoFlowCookie))?;
    let params =
        Params::parse(query.unwrap_or_default().as_bytes(), &[]).map_err(|dup| PageError::bad_request(dup.to_string()))?;
    let url = params.value("to");
    // Security: only a URL this browser was sent here with is shown; anything
    // else would make this page an open redirect.
    if !onward::verify(&secret, Onward::Link(&link_id), &url, params.get("sig")) {
        return Err(PageError::new(PageErrorKind::BadContinuation));
    }
    onward::page(Onward::Link(&link_id), url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_ids_are_checked_before_any_call() {
        assert!(is_link_id("gh_cl_AbC-123_x"));
        for bad in ["", "a/b", "a b", "%2F", &"x".repeat(129)] {
            assert!(!is_link_id(bad), "{bad:?}");
        }
    }

    #[test]
    fn the_csrf_cookie_is_http_only_and_host_prefixed_on_https() {
        let secret = "a".repeat(43);
        let cookie = set_cookie("https://gw.example.com", &secret).unwrap();
        assert_eq!(
            cookie,
            format!("__Host-gatehouse-connect={secret}; HttpOnly; SameSite=Lax; Path=/; Max-Age=600; Secure").as_str()
        );
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_str(&format!("x=1; gatehouse-connect={secret}")).unwrap(),
        );
        assert_eq!(cookie_secret(&headers, "http://127.0.0.1"), Some(secret));
        assert_eq!(cookie_secret(&headers, "https://gw.example.com"), None);
    }

    #[test]
    fn the_page_asks_for_the_proof_the_link_needs() {
        let link = |proof: ConnectLinkProof| OpenConnectLinkResponse {
            service: "notes".into(),
            display_name: "Notes <b>".into(),
            proof: proof as i32,
            ..Default::default()
        };
        let html = ConnectView::new("gh_cl_x", "tok".into(), &link(ConnectLinkProof::VirtualKey))
            .render()
            .unwrap();
        assert!(html.contains(r#"name="virtual_key""#));
        assert!(html.contains(r#"name="csrf" value="tok""#));
        assert!(html.contains(r#"action="/connect/gh_cl_x""#));
        assert!(!html.contains("Notes <b>"), "escaped");
        let html = ConnectView::new("gh_cl_x", "tok".into(), &link(ConnectLinkProof::LinkOnly))
            .render()
            .unwrap();
        assert!(!html.contains(r#"name="virtual_key""#));
        let html = ConnectView::new("gh_cl_x", "tok".into(), &link(ConnectLinkProof::SignIn))
            .render()
            .unwrap();
        assert!(!html.contains("<form"), "no sign-in configured: no form");
        let mut signed_in = link(ConnectLinkProof::SignIn);
        signed_in.sign_in_label = "Sign in with Acme <i>".into();
        let html = ConnectView::new("gh_cl_x", "tok".into(), &signed_in).render().unwrap();
        assert!(html.contains(r#"action="/connect/gh_cl_x""#));
        assert!(
            html.contains("Sign in with Acme &#60;i&#62;") || html.contains("Sign in with Acme &lt;i&gt;"),
            "{html}"
        );
        assert!(!html.contains(r#"name="virtual_key""#));
    }
}
