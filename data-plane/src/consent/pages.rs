//! The consent page handlers. Each reads the flow cookie, checks the CSRF
//! token of a post before any control-plane call, makes one `FlowService`
//! call and renders or redirects. Every post answers 303 (RFC 9700 §4.12,
//! never 307); Connect and sign-in answer 303 to the continuation page of
//! this origin, which leads on to the provider (see `onward`).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderName};
use axum::response::{IntoResponse, Redirect, Response};

use super::cookie::{self, FlowCookie};
use super::error::{PageError, PageErrorKind};
use super::views::{DoneView, IdentityView, RedirectView, ServicesView};
use super::{csrf, onward};
use crate::AppState;
use crate::cp_client::{CpError, CpResultExt as _};
use crate::oauth::params::Params;
use crate::pb::{
    ApproveRequest, BeginSignInRequest, ChooseIdentityRequest, CompleteConnectRequest, CompleteSignInRequest,
    ConnectServiceRequest, DenyRequest, DisconnectServiceRequest, ErrorReason, FlowRef, FlowStep, FlowView, GetFlowRequest,
    choose_identity_request,
};

/// Longest proxy-asserted user name accepted.
const MAX_PROXY_USER_LEN: usize = 256;

// === Request plumbing ===

/// Whether `flow_id` can be an id the control plane issued. Anything else is
/// answered 404 without asking.
fn is_flow_id(flow_id: &str) -> bool {
    !flow_id.is_empty() && flow_id.len() <= 128 && flow_id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn page_of(flow_id: &str, step: &str) -> String {
    format!("/consent/{flow_id}/{step}")
}

/// The flow named by the path and proved by the cookie. The cookie may name
/// another flow (a newer `/authorize` replaced it): the control plane then
/// answers WRONG_BROWSER or NOT_FOUND, as it decides.
fn flow_ref(state: &AppState, headers: &HeaderMap, flow_id: &str, peer: SocketAddr) -> Result<(FlowRef, FlowCookie), PageError> {
    if !is_flow_id(flow_id) {
        return Err(PageError::new(PageErrorKind::UnknownFlow));
    }
    let cookie = cookie::from_headers(headers, &state.config.public_url)
        .ok_or_else(|| PageError::new(PageErrorKind::NoFlowCookie).in_flow(flow_id))?;
    let flow = FlowRef {
        flow_id: flow_id.to_owned(),
        browser_secret: cookie.browser_secret.clone(),
        remote_addr: peer.ip().to_string(),
    };
    Ok((flow, cookie))
}

/// A consent form post: its parameters, once the CSRF token matched.
fn checked_post(
    state: &AppState,
    headers: &HeaderMap,
    flow_id: &str,
    peer: SocketAddr,
    body: &[u8],
) -> Result<(FlowRef, Params), PageError> {
    let (flow, cookie) = flow_ref(state, headers, flow_id, peer)?;
    let form = Params::parse(body, &[]).map_err(|dup| PageError::bad_request(dup.to_string()).in_flow(flow_id))?;
    // Security: CSRF check before any control-plane call (docs/consent-flow.md):
    // only the browser holding this flow's cookie can compute the token.
    if !csrf::verify(&cookie.browser_secret, flow_id, form.get("csrf")) {
        return Err(PageError::new(PageErrorKind::Csrf).in_flow(flow_id));
    }
    Ok((flow, form))
}

/// The user an authenticating proxy asserted, when a trusted header is configured.
fn proxy_user(state: &AppState, headers: &HeaderMap) -> Option<String> {
    let name = state.config.trusted_user_header.as_deref()?;
    let Ok(name) = HeaderName::try_from(name) else {
        tracing::warn!(target: "gatehouse::consent", header = name, "trusted_user_header is not a valid header name; ignored");
        return None;
    };
    let value = headers.get(name)?.to_str().ok()?.trim();
    (!value.is_empty() && value.len() <= MAX_PROXY_USER_LEN).then(|| value.to_owned())
}

async fn get_flow(state: &AppState, flow: FlowRef) -> Result<FlowView, PageError> {
    let flow_id = flow.flow_id.clone();
    state
        .cp
        .flows()
        .get_flow(GetFlowRequest { flow: Some(flow) })
        .await
        .cp("GetFlow")
        .map_err(|err| PageError::from(err).in_flow(&flow_id))
}

// === Pages ===

/// `GET /consent/{flow_id}`: the page of the flow's step.
pub(crate) async fn get_consent(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(flow_id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, PageError> {
    let (flow, _) = flow_ref(&state, &headers, &flow_id, peer)?;
    let view = get_flow(&state, flow).await?;
    let step = if view.step == FlowStep::Services as i32 {
        "services"
    } else {
        "identity"
    };
    Ok(Redirect::to(&page_of(&flow_id, step)).into_response())
}

/// `GET /consent/{flow_id}/identity`: choose (or change) the identity.
pub(crate) async fn get_identity(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(flow_id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, PageError> {
    let (flow, cookie) = flow_ref(&state, &headers, &flow_id, peer)?;
    let view = get_flow(&state, flow).await?;
    let csrf = csrf::token(&cookie.browser_secret, &flow_id);
    Ok(IdentityView::new(&view, csrf, proxy_user(&state, &headers))
        .into_page()
        .into_response())
}

/// `POST /consent/{flow_id}/identity`: `choice` = `virtual_key` (with
/// `virtual_key`), `skip`, `proxy` or `user` (sign-in at the provider).
pub(crate) async fn post_identity(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(flow_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, PageError> {
    let (flow, form) = checked_post(&state, &headers, &flow_id, peer, &body)?;
    let in_flow = |err: CpError| PageError::from(err).in_flow(&flow_id);
    let choice = match form.get("choice").unwrap_or_default() {
        "skip" => choose_identity_request::Choice::Skip(true),
        "virtual_key" => {
            let key = form.value("virtual_key").trim().to_owned();
            if key.is_empty() {
                return invalid_virtual_key(&state, flow, &headers, "Enter your virtual key.").await;
            }
            choose_identity_request::Choice::VirtualKey(key)
        }
        "proxy" => {
            // Security: the proxy user comes from the configured header of this
            // request, never from the form; the control plane decides whether
            // that proxy is trusted.
            let user = proxy_user(&state, &headers)
                .ok_or_else(|| PageError::bad_request("no user was asserted by a trusted proxy").in_flow(&flow_id))?;
            choose_identity_request::Choice::ProxyUser(user)
        }
        "user" => {
            let started = state
                .cp
                .flows()
                .begin_sign_in(BeginSignInRequest {
                    flow: Some(flow.clone()),
                })
                .await
                .cp("BeginSignIn")
                .map_err(in_flow)?;
            return onward::see_other(
                &flow.browser_secret,
                onward::Onward::Flow(&flow.flow_id),
                &started.authorization_url,
            );
        }
        _ => return Err(PageError::bad_request("choose an identity").in_flow(&flow_id)),
    };
    let request = ChooseIdentityRequest {
        flow: Some(flow.clone()),
        choice: Some(choice),
    };
    match state.cp.flows().choose_identity(request).await.cp("ChooseIdentity") {
        Ok(_) => Ok(Redirect::to(&page_of(&flow_id, "services")).into_response()),
        Err(CpError::Refused {
            reason: ErrorReason::InvalidVirtualKey,
            ..
        }) => {
            invalid_virtual_key(
                &state,
                flow,
                &headers,
                "This virtual key was not accepted: it is unknown or revoked.",
            )
            .await
        }
        Err(err) => Err(in_flow(err)),
    }
}

/// The identity page again, with why the virtual key was not accepted (401).
async fn invalid_virtual_key(state: &AppState, flow: FlowRef, headers: &HeaderMap, message: &str) -> Result<Response, PageError> {
    let csrf = csrf::token(&flow.browser_secret, &flow.flow_id);
    let view = get_flow(state, flow).await?;
    let mut page = IdentityView::new(&view, csrf, proxy_user(state, headers));
    page.error = Some(message.to_owned());
    Ok(page.into_page().into_response())
}

/// `GET /consent/{flow_id}/services`: services, connections, Approve and Deny.
pub(crate) async fn get_services(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(flow_id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, PageError> {
    let (flow, cookie) = flow_ref(&state, &headers, &flow_id, peer)?;
    let view = get_flow(&state, flow).await?;
    if view.step != FlowStep::Services as i32 {
        // No identity yet: the services page has nothing to show.
        return Ok(Redirect::to(&page_of(&flow_id, "identity")).into_response());
    }
    let csrf = csrf::token(&cookie.browser_secret, &flow_id);
    Ok(ServicesView::new(&view, csrf).into_page().into_response())
}

/// `POST /consent/{flow_id}/connect`: `service` → the upstream's authorization page.
pub(crate) async fn post_connect(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(flow_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, PageError> {
    let (flow, form) = checked_post(&state, &headers, &flow_id, peer, &body)?;
    let service = form.value("service");
    if service.is_empty() {
        return Err(PageError::bad_request("service is required").in_flow(&flow_id));
    }
    let started = state
        .cp
        .flows()
        .connect_service(ConnectServiceRequest {
            flow: Some(flow.clone()),
            service,
        })
        .await
        .cp("ConnectService")
        .map_err(|err| PageError::from(err).in_flow(&flow_id))?;
    onward::see_other(
        &flow.browser_secret,
        onward::Onward::Flow(&flow.flow_id),
        &started.authorization_url,
    )
}

/// `GET /consent/{flow_id}/continue?to=…&sig=…`: the continuation page a
/// Connect or sign-in post leads to; it needs the flow cookie that signed `to`.
pub(crate) async fn get_continue(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(flow_id): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, PageError> {
    let (_, cookie) = flow_ref(&state, &headers, &flow_id, peer)?;
    let params = callback_params(query).map_err(|err| err.in_flow(&flow_id))?;
    let url = params.value("to");
    // Security: only a URL this flow's browser was sent here with is shown;
    // anything else would make this page an open redirect.
    if !onward::verify(
        &cookie.browser_secret,
        onward::Onward::Flow(&flow_id),
        &url,
        params.get("sig"),
    ) {
        return Err(PageError::new(PageErrorKind::BadContinuation).in_flow(&flow_id));
    }
    onward::page(onward::Onward::Flow(&flow_id), url)
}

/// `POST /consent/{flow_id}/disconnect`: `service` → back to the services page.
pub(crate) async fn post_disconnect(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(flow_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, PageError> {
    let (flow, form) = checked_post(&state, &headers, &flow_id, peer, &body)?;
    let service = form.value("service");
    if service.is_empty() {
        return Err(PageError::bad_request("service is required").in_flow(&flow_id));
    }
    state
        .cp
        .flows()
        .disconnect_service(DisconnectServiceRequest {
            flow: Some(flow),
            service,
        })
        .await
        .cp("DisconnectService")
        .map_err(|err| PageError::from(err).in_flow(&flow_id))?;
    Ok(Redirect::to(&page_of(&flow_id, "services")).into_response())
}

/// `POST /consent/{flow_id}/approve`: 303 to the client with the code.
pub(crate) async fn post_approve(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(flow_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, PageError> {
    let (flow, _) = checked_post(&state, &headers, &flow_id, peer, &body)?;
    let redirect = state
        .cp
        .flows()
        .approve(ApproveRequest { flow: Some(flow) })
        .await
        .cp("Approve")
        .map_err(|err| PageError::from(err).in_flow(&flow_id))?;
    // Security: the URL is the redirect URI the control plane verified at
    // StartFlow, with code, state and iss; 303 so the post is not replayed there.
    Ok(Redirect::to(&redirect.url).into_response())
}

/// `POST /consent/{flow_id}/deny`: 303 to the client with `access_denied`.
pub(crate) async fn post_deny(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(flow_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, PageError> {
    let (flow, _) = checked_post(&state, &headers, &flow_id, peer, &body)?;
    let redirect = state
        .cp
        .flows()
        .deny(DenyRequest { flow: Some(flow) })
        .await
        .cp("Deny")
        .map_err(|err| PageError::from(err).in_flow(&flow_id))?;
    Ok(Redirect::to(&redirect.url).into_response())
}

// === Callbacks ===

/// A refused callback. When the attempt it named expired or was used while
/// this browser's flow goes on, the page leads back to the flow's page to try
/// again (never a dead end); otherwise the refusal as it is.
async fn callback_error(state: &AppState, cookie: Option<&FlowCookie>, peer: SocketAddr, err: CpError) -> PageError {
    let Some(cookie) = cookie else { return PageError::from(err) };
    let ended = match &err {
        CpError::Refused {
            reason: reason @ (ErrorReason::Expired | ErrorReason::AlreadyUsed),
            ..
        } => Some(*reason == ErrorReason::Expired),
        _ => None,
    };
    if let Some(expired) = ended.filter(|_| is_flow_id(&cookie.flow_id)) {
        let flow = FlowRef {
            flow_id: cookie.flow_id.clone(),
            browser_secret: cookie.browser_secret.clone(),
            remote_addr: peer.ip().to_string(),
        };
        // The flow itself may have ended too: then its own refusal stands.
        if let Ok(view) = get_flow(state, flow).await {
            let step = if view.step == FlowStep::Services as i32 {
                "services"
            } else {
                "identity"
            };
            let back = page_of(&cookie.flow_id, step);
            return PageError::new(PageErrorKind::AttemptEnded { expired, back }).in_flow(&cookie.flow_id);
        }
    }
    PageError::from(err).in_flow(&cookie.flow_id)
}

/// The query of a provider's redirect back, duplicates refused.
fn callback_params(query: Option<String>) -> Result<Params, PageError> {
    Params::parse(query.unwrap_or_default().as_bytes(), &[]).map_err(|dup| PageError::bad_request(dup.to_string()))
}

/// `GET /signin/callback`: the sign-in provider's redirect back, for a flow's
/// identity page or for a connect link of a signed-in user.
pub(crate) async fn get_signin_callback(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, PageError> {
    let params = callback_params(query)?;
    // Security: the flow cookie (identity page) or the connect cookie (connect
    // link, SPEC-NOTES §5.4 phishing rule) binds the sign-in to the browser
    // that began it; the control plane checks the one its attempt is bound to,
    // together with the single-use state. Without either, nothing is sent.
    let cookie = cookie::from_headers(&headers, &state.config.public_url);
    let link_secret = crate::connect::cookie_secret(&headers, &state.config.public_url);
    if cookie.is_none() && link_secret.is_none() {
        return Err(PageError::new(PageErrorKind::NoFlowCookie));
    }
    let request = CompleteSignInRequest {
        browser_secret: cookie.as_ref().map(|c| c.browser_secret.clone()).unwrap_or_default(),
        state: params.value("state"),
        code: params.value("code"),
        error: params.value("error"),
        error_description: params.value("error_description"),
        iss: params.value("iss"),
        remote_addr: peer.ip().to_string(),
        link_browser_secret: link_secret.unwrap_or_default(),
    };
    let done = match state.cp.flows().complete_sign_in(request).await.cp("CompleteSignIn") {
        Ok(done) => done,
        Err(err) => return Err(callback_error(&state, cookie.as_ref(), peer, err).await),
    };
    if !done.continue_url.is_empty() {
        // A connect link: the signed-in user is the link's own; on to the upstream.
        return match RedirectView::new(done.continue_url) {
            Some(view) => Ok(view.into_page().into_response()),
            None => {
                tracing::error!(target: "gatehouse::consent", "the control plane returned an upstream URL that is not http(s)");
                Err(PageError::from(CpError::Internal))
            }
        };
    }
    if !is_flow_id(&done.flow_id) {
        return Err(PageError::from(CpError::Internal));
    }
    Ok(Redirect::to(&page_of(&done.flow_id, "services")).into_response())
}

/// `GET /oauth/callback`: an upstream's redirect back after Connect.
pub(crate) async fn get_oauth_callback(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, PageError> {
    let params = callback_params(query)?;
    let cookie = cookie::from_headers(&headers, &state.config.public_url);
    let request = CompleteConnectRequest {
        state: params.value("state"),
        code: params.value("code"),
        error: params.value("error"),
        error_description: params.value("error_description"),
        iss: params.value("iss"),
        browser_secret: cookie.as_ref().map(|c| c.browser_secret.clone()).unwrap_or_default(),
        link_browser_secret: crate::connect::cookie_secret(&headers, &state.config.public_url).unwrap_or_default(),
        remote_addr: peer.ip().to_string(),
    };
    let done = match state.cp.flows().complete_connect(request).await.cp("CompleteConnect") {
        Ok(done) => done,
        Err(err) => return Err(callback_error(&state, cookie.as_ref(), peer, err).await),
    };
    if done.flow_id.is_empty() {
        // A connect link from /mcp: there is no consent page to return to.
        let view = if done.connected {
            DoneView {
                title: "Connected".to_owned(),
                message: format!("{} is connected. Your application can use it now.", done.service),
            }
        } else {
            DoneView {
                title: "Not connected".to_owned(),
                message: if done.notice.is_empty() {
                    "The connection was not made.".to_owned()
                } else {
                    done.notice
                },
            }
        };
        return Ok(view.into_page().into_response());
    }
    if !is_flow_id(&done.flow_id) {
        return Err(PageError::from(CpError::Internal));
    }
    // The control plane keeps the notice of a failed connection on the flow;
    // the services page shows it once.
    Ok(Redirect::to(&page_of(&done.flow_id, "services")).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flow_ids_are_checked_before_any_call() {
        assert!(is_flow_id("flw_AbC-123"));
        for bad in ["", "a/b", "a b", "a%2Fb", "é", &"x".repeat(129)] {
            assert!(!is_flow_id(bad), "{bad:?}");
        }
    }
}
