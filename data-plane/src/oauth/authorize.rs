//! `GET /authorize` (OAuth 2.1 "Authorization Request"): parses the query and
//! asks the control plane to open a flow. Until the control plane has verified
//! the client and its redirect URI, every problem is an error page; after
//! that, the control plane builds the error redirect itself.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, RawQuery, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};

use super::params::Params;
use crate::AppState;
use crate::consent::cookie;
use crate::consent::error::PageError;
use crate::cp_client::{CpError, CpResultExt as _};
use crate::pb::StartFlowRequest;

/// Parses the authorization request. `resource` may repeat (RFC 8707 §2);
/// any other parameter sent twice is refused (RFC 6749 §3.1).
fn parse_request(query: &str, remote_addr: String) -> Result<StartFlowRequest, PageError> {
    // Security: RFC 6749 §4.1.2.1, a malformed request is not yet tied to a
    // verified redirect URI, so it gets an error page, never a redirect.
    let params = Params::parse(query.as_bytes(), &["resource"]).map_err(|dup| PageError::bad_request(dup.to_string()))?;
    Ok(StartFlowRequest {
        client_id: params.value("client_id"),
        redirect_uri: params.value("redirect_uri"),
        response_type: params.value("response_type"),
        code_challenge: params.value("code_challenge"),
        code_challenge_method: params.value("code_challenge_method"),
        scope: params.value("scope"),
        resources: params.all("resource"),
        state: params.value("state"),
        has_state: params.contains("state"),
        prompt: params.value("prompt"),
        remote_addr,
    })
}

/// `GET /authorize`.
pub(crate) async fn get_authorize(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    RawQuery(query): RawQuery,
) -> Result<Response, PageError> {
    let request = parse_request(query.as_deref().unwrap_or_default(), peer.ip().to_string())?;
    // Security: RFC 6749 §4.1.2.1, RFC 9700 §4.11.2: a refusal here means the
    // client or its redirect URI is not verified, so it is an error page
    // (PageError never redirects): an attacker-chosen URI receives nothing.
    let started = state.cp.flows().start_flow(request).await.cp("StartFlow")?;

    // --- By this point the control plane has verified the client and the redirect URI. ---
    if !started.error_redirect.is_empty() {
        // The control plane built it from the verified redirect URI, with error, state and iss.
        let location = HeaderValue::from_str(&started.error_redirect).map_err(|_| PageError::from(CpError::Internal))?;
        return Ok((StatusCode::FOUND, [(header::LOCATION, location)]).into_response());
    }
    let Some(set_cookie) = cookie::set_cookie(
        &state.config.public_url,
        &started.flow_id,
        &started.browser_secret,
        started.expires_in,
    ) else {
        tracing::error!(target: "gatehouse::oauth", "the control plane returned a flow id or browser secret that cannot sit in a cookie");
        return Err(PageError::from(CpError::Internal));
    };
    // One flow per browser: this cookie replaces any earlier flow's.
    let mut response = Redirect::to(&format!("/consent/{}", started.flow_id)).into_response();
    response.headers_mut().insert(header::SET_COOKIE, set_cookie);
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consent::error::PageErrorKind;

    #[test]
    fn a_duplicated_parameter_is_an_error_page() {
        let err = parse_request("client_id=a&client_id=b&redirect_uri=x", String::new()).unwrap_err();
        assert!(matches!(err.kind, PageErrorKind::BadRequest(_)));
        let err = parse_request("state=1&state=1", String::new()).unwrap_err();
        assert!(matches!(err.kind, PageErrorKind::BadRequest(_)));
    }

    #[test]
    fn the_request_is_passed_on_as_sent() {
        let request = parse_request(
            "response_type=code&client_id=cli_1&redirect_uri=http%3A%2F%2F127.0.0.1%3A9%2Fcb&code_challenge=abc&code_challenge_method=S256&scope=mcp&resource=http%3A%2F%2Fgw%2Fmcp&resource=http%3A%2F%2Fgw&state=&prompt=consent",
            "10.0.0.1".into(),
        )
        .unwrap();
        assert_eq!(request.client_id, "cli_1");
        assert_eq!(request.redirect_uri, "http://127.0.0.1:9/cb");
        assert_eq!(request.resources, vec!["http://gw/mcp", "http://gw"]);
        assert!(request.has_state, "an empty state is still a state");
        assert_eq!(request.state, "");
        assert_eq!(request.prompt, "consent");
        assert_eq!(request.remote_addr, "10.0.0.1");
        let request = parse_request("client_id=cli_1", String::new()).unwrap();
        assert!(!request.has_state);
    }
}

/// Properties of the authorization-request parser over generated input (SECURITY.md).
#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn any_query_is_parsed_or_refused_with_a_page(query in prop_oneof![
            any::<String>(),
            "((client_id|redirect_uri|state|resource|scope|code_challenge)=[a-z%0-9+&=]{0,8}&?){0,6}",
        ]) {
            if let Ok(request) = parse_request(&query, String::new()) {
                prop_assert_eq!(request.has_state, query.split('&').any(|p| p.split('=').next() == Some("state")));
                prop_assert!(request.resources.iter().all(|r| !r.is_empty()));
            }
        }
    }
}

/// The fuzz target `oauth_authorize` (SECURITY.md, "Fuzzing"): any query string
/// (corpus `fuzz/corpus/oauth`) is parsed or refused with a page, and what is
/// parsed is passed on as sent.
#[cfg(test)]
mod fuzz_targets {
    use proptest::prelude::*;

    use super::*;
    use crate::mcp::jsonrpc::fuzz;

    fn check(input: &[u8]) -> Result<(), TestCaseError> {
        let query = String::from_utf8_lossy(input);
        let pairs: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes()).into_owned().collect();
        let last = |name: &str| {
            pairs
                .iter()
                .rev()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        };
        match parse_request(&query, "192.0.2.1".into()) {
            Ok(request) => {
                prop_assert_eq!(request.client_id, last("client_id"));
                prop_assert_eq!(request.redirect_uri, last("redirect_uri"));
                prop_assert_eq!(request.code_challenge, last("code_challenge"));
                prop_assert_eq!(request.code_challenge_method, last("code_challenge_method"));
                prop_assert_eq!(request.state, last("state"));
                prop_assert_eq!(request.has_state, pairs.iter().any(|(n, _)| n == "state"));
                let resources: Vec<String> = pairs
                    .iter()
                    .filter(|(n, v)| n == "resource" && !v.is_empty())
                    .map(|(_, v)| v.clone())
                    .collect();
                prop_assert_eq!(request.resources, resources);
                prop_assert_eq!(request.remote_addr, "192.0.2.1");
            }
            Err(_) => {
                let repeated = pairs
                    .iter()
                    .any(|(name, _)| name != "resource" && pairs.iter().filter(|(n, _)| n == name).count() > 1);
                prop_assert!(repeated, "refused without a repeated parameter: {:?}", query);
            }
        }
        Ok(())
    }

    #[test]
    fn oauth_authorize() {
        fuzz::run("oauth", file!(), crate::oauth::params::fuzz_targets::query(), check);
    }
}
