//! `POST /revoke` (RFC 7009): the client authenticates as at `/token`; the
//! control plane revokes the token if it belongs to that client. An unknown or
//! already invalid token is a success too (RFC 7009 §2.2), so the answer tells
//! nobody whether a token existed.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};

use super::error::{Endpoint, OAuthError};
use super::token::{client_authentication, parse_form};
use crate::AppState;
use crate::cp_client::CpResultExt as _;
use crate::pb::RevokeRequest;

/// `POST /revoke`.
pub(crate) async fn post_revoke(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, OAuthError> {
    let form = parse_form(&body)?;
    let client = client_authentication(&headers, &form, peer.ip().to_string())?;
    let used_basic = client.used_basic;
    let token = form.value("token");
    if token.is_empty() {
        return Err(OAuthError::invalid_request("token is required"));
    }
    let request = RevokeRequest {
        client: Some(client),
        token,
        token_type_hint: form.value("token_type_hint"),
    };
    state
        .cp
        .tokens()
        .revoke(request)
        .await
        .cp("Revoke")
        .map_err(|err| OAuthError::from_cp(err, Endpoint::Revoke).with_basic(used_basic))?;
    let mut response = ().into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}
