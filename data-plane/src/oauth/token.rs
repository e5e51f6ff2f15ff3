//! `POST /token` (OAuth 2.1 "Token Request"): parses the form and the client
//! authentication, hands the grant to the control plane (`ExchangeCode` or
//! `Refresh`), and shapes the RFC 6749 §5.1 response. PKCE, code binding,
//! refresh rotation and reuse detection are the control plane's.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use serde_json::{Map, Value};

use super::error::{Endpoint, ErrorCode, OAuthError};
use super::params::Params;
use crate::AppState;
use crate::cp_client::CpResultExt as _;
use crate::pb::{ClientAuthentication, ExchangeCodeRequest, RefreshRequest, TokenSet};

/// Parameters that may repeat in a token or revocation request (RFC 8707 §2).
pub(crate) const REPEATABLE: &[&str] = &["resource"];

/// Parses a form body, refusing duplicated parameters (RFC 6749 §3.2).
pub(crate) fn parse_form(body: &[u8]) -> Result<Params, OAuthError> {
    Params::parse(body, REPEATABLE).map_err(|dup| OAuthError::invalid_request(dup.to_string()))
}

/// The client's credentials as presented (RFC 6749 §2.3.1): HTTP Basic, or
/// `client_id` (+ `client_secret`) in the body, never both.
pub(crate) fn client_authentication(
    headers: &HeaderMap,
    form: &Params,
    remote_addr: String,
) -> Result<ClientAuthentication, OAuthError> {
    let body_id = form.value("client_id");
    let body_secret = form.value("client_secret");
    let mut authorization = headers.get_all(header::AUTHORIZATION).iter();
    let basic = match (authorization.next(), authorization.next()) {
        (None, _) => None,
        (Some(_), Some(_)) => return Err(OAuthError::invalid_request("more than one Authorization header")),
        (Some(value), None) => {
            let value = value
                .to_str()
                .map_err(|_| OAuthError::invalid_request("the Authorization header is not ASCII"))?;
            let Some(credentials) = strip_scheme(value, "Basic") else {
                return Err(OAuthError::invalid_request(
                    "only HTTP Basic client authentication is supported",
                ));
            };
            let (id, secret) = parse_basic(credentials)
                .ok_or_else(|| OAuthError::new(ErrorCode::InvalidClient, "malformed HTTP Basic credentials").with_basic(true))?;
            Some((id, secret))
        }
    };
    match basic {
        Some((id, secret)) => {
            // Security: RFC 6749 §2.3: "The client MUST NOT use more than one
            // authentication method in each request." A body client_id naming the
            // same client is tolerated (several SDKs always send it).
            if !body_secret.is_empty() || (!body_id.is_empty() && body_id != id) {
                return Err(OAuthError::invalid_request(
                    "client credentials were sent both in HTTP Basic and in the body",
                ));
            }
            Ok(ClientAuthentication {
                client_id: id,
                client_secret: secret,
                used_basic: true,
                remote_addr,
            })
        }
        None if body_id.is_empty() => Err(OAuthError::new(
            ErrorCode::InvalidClient,
            "client authentication is missing: send client_id",
        )),
        None => Ok(ClientAuthentication {
            client_id: body_id,
            client_secret: body_secret,
            used_basic: false,
            remote_addr,
        }),
    }
}

/// `value` without its auth scheme (compared case-insensitively, RFC 9110 §11.1).
pub(crate) fn strip_scheme<'a>(value: &'a str, scheme: &str) -> Option<&'a str> {
    let (found, rest) = value.split_once(' ')?;
    found.eq_ignore_ascii_case(scheme).then(|| rest.trim_start_matches(' '))
}

/// Decodes HTTP Basic credentials: base64 of `id:secret`, each part
/// form-urlencoded (RFC 6749 §2.3.1). The id ends at the first colon, so a
/// secret may contain colons.
fn parse_basic(credentials: &str) -> Option<(String, String)> {
    let credentials = credentials.trim();
    let decoded = STANDARD
        .decode(credentials)
        .or_else(|_| STANDARD_NO_PAD.decode(credentials))
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    let id = form_decode(id)?;
    if id.is_empty() {
        return None;
    }
    Some((id, form_decode(secret)?))
}

/// `application/x-www-form-urlencoded` decoding of one value: `+` is a space,
/// `%XX` a byte; a broken escape or invalid UTF-8 is refused.
fn form_decode(value: &str) -> Option<String> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes.get(i + 1..i + 3)?;
                // `from_str_radix` also takes a sign ("%+A" would decode to a newline).
                if !hex.iter().all(u8::is_ascii_hexdigit) {
                    return None;
                }
                let hex = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            byte => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// The RFC 6749 §5.1 success body.
fn token_response(tokens: TokenSet) -> Response {
    let mut body = Map::new();
    body.insert("access_token".into(), tokens.access_token.into());
    body.insert("token_type".into(), "Bearer".into());
    body.insert("expires_in".into(), tokens.expires_in.into());
    if !tokens.refresh_token.is_empty() {
        body.insert("refresh_token".into(), tokens.refresh_token.into());
    }
    if !tokens.scope.is_empty() {
        body.insert("scope".into(), tokens.scope.into());
    }
    let mut response = Json(Value::Object(body)).into_response();
    // Security: OAuth 2.1 "Token Endpoint Response": tokens are never cached.
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    response
}

/// `POST /token`.
pub(crate) async fn post_token(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, OAuthError> {
    let form = parse_form(&body)?;
    let client = client_authentication(&headers, &form, peer.ip().to_string())?;
    let used_basic = client.used_basic;
    let refused = |err| OAuthError::from_cp(err, Endpoint::Token).with_basic(used_basic);
    let tokens = match form.get("grant_type").unwrap_or_default() {
        "authorization_code" => {
            let code = form.value("code");
            if code.is_empty() {
                return Err(OAuthError::invalid_request("code is required"));
            }
            let request = ExchangeCodeRequest {
                client: Some(client),
                code,
                code_verifier: form.value("code_verifier"),
                redirect_uri: form.value("redirect_uri"),
                resources: form.all("resource"),
            };
            state
                .cp
                .tokens()
                .exchange_code(request)
                .await
                .cp("ExchangeCode")
                .map_err(refused)?
        }
        "refresh_token" => {
            let refresh_token = form.value("refresh_token");
            if refresh_token.is_empty() {
                return Err(OAuthError::invalid_request("refresh_token is required"));
            }
            let request = RefreshRequest {
                client: Some(client),
                refresh_token,
                scope: form.value("scope"),
                resources: form.all("resource"),
            };
            state.cp.tokens().refresh(request).await.cp("Refresh").map_err(refused)?
        }
        "" => return Err(OAuthError::invalid_request("grant_type is required")),
        _ => {
            return Err(OAuthError::new(
                ErrorCode::UnsupportedGrantType,
                "grant_type must be authorization_code or refresh_token",
            ));
        }
    };
    Ok(token_response(tokens))
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn basic(raw: &str) -> String {
        format!("Basic {}", STANDARD.encode(raw))
    }

    fn headers(authorization: Option<&str>) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Some(value) = authorization {
            headers.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    fn authenticate(authorization: Option<&str>, body: &str) -> Result<ClientAuthentication, OAuthError> {
        let form = parse_form(body.as_bytes()).unwrap();
        client_authentication(&headers(authorization), &form, "10.0.0.1".into())
    }

    #[test]
    fn basic_credentials_are_form_urlencoded_and_the_secret_may_hold_colons() {
        assert_eq!(
            parse_basic(&STANDARD.encode("cli_1:s3:cr:et")),
            Some(("cli_1".into(), "s3:cr:et".into()))
        );
        assert_eq!(
            parse_basic(&STANDARD.encode("my%20client:a+b%3Ac%25")),
            Some(("my client".into(), "a b:c%".into()))
        );
        // Unpadded base64 is accepted too.
        assert_eq!(parse_basic(&STANDARD_NO_PAD.encode("a:b")), Some(("a".into(), "b".into())));
        assert_eq!(parse_basic(&STANDARD.encode("a:")), Some(("a".into(), String::new())));
    }

    #[test]
    fn malformed_basic_credentials_are_refused() {
        for raw in ["no-colon", ":secret-without-id", "bad%zzescape:x", "a:%C3"] {
            assert_eq!(parse_basic(&STANDARD.encode(raw)), None, "{raw}");
        }
        assert_eq!(parse_basic("***not base64***"), None);
        let err = authenticate(Some("Basic ***"), "").unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidClient);
        assert!(err.used_basic);
    }

    #[test]
    fn basic_authentication_is_marked_as_such() {
        let auth = authenticate(Some(&basic("cli_1:s3cret")), "grant_type=x").unwrap();
        assert_eq!(
            (auth.client_id.as_str(), auth.client_secret.as_str(), auth.used_basic),
            ("cli_1", "s3cret", true)
        );
        assert_eq!(auth.remote_addr, "10.0.0.1");
        // The scheme is case-insensitive.
        let auth = authenticate(Some(&basic("cli_1:s3cret").replace("Basic", "bAsIc")), "").unwrap();
        assert!(auth.used_basic);
        // The same client_id in the body is tolerated.
        assert!(authenticate(Some(&basic("cli_1:s3cret")), "client_id=cli_1").is_ok());
    }

    #[test]
    fn credentials_in_basic_and_body_at_once_are_invalid_request() {
        for body in [
            "client_secret=other",
            "client_id=cli_2",
            "client_id=cli_1&client_secret=s3cret",
        ] {
            let err = authenticate(Some(&basic("cli_1:s3cret")), body).unwrap_err();
            assert_eq!(err.code, ErrorCode::InvalidRequest, "{body}");
        }
    }

    #[test]
    fn body_authentication_and_public_clients() {
        let auth = authenticate(None, "client_id=cli_1&client_secret=s3cret").unwrap();
        assert_eq!(
            (auth.client_id.as_str(), auth.client_secret.as_str(), auth.used_basic),
            ("cli_1", "s3cret", false)
        );
        let auth = authenticate(None, "client_id=cli_1").unwrap();
        assert_eq!(auth.client_secret, "");
        let err = authenticate(None, "grant_type=authorization_code").unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidClient);
        assert!(!err.used_basic);
        let err = authenticate(Some("Bearer abc"), "client_id=cli_1").unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidRequest);
    }

    #[test]
    fn a_duplicated_form_parameter_is_invalid_request() {
        let err = parse_form(b"grant_type=authorization_code&code=a&code=b").err().unwrap();
        assert_eq!(err.code, ErrorCode::InvalidRequest);
        assert!(parse_form(b"resource=a&resource=b").is_ok());
    }

    #[test]
    fn the_token_response_is_never_cached_and_omits_empty_fields() {
        let response = token_response(TokenSet {
            access_token: "at".into(),
            token_type: "Bearer".into(),
            expires_in: 3600,
            refresh_token: String::new(),
            scope: "mcp".into(),
        });
        assert_eq!(response.headers()[header::CACHE_CONTROL], "no-store");
        assert_eq!(response.headers()[header::PRAGMA], "no-cache");
    }
}

/// Properties of client authentication parsing over generated input (SECURITY.md).
#[cfg(test)]
mod properties {
    use axum::http::HeaderValue;
    use proptest::prelude::*;

    use super::*;

    fn form_urlencode(value: &str) -> String {
        url::form_urlencoded::byte_serialize(value.as_bytes()).collect()
    }

    proptest! {
        #[test]
        fn basic_credentials_read_back_as_encoded(id in any::<String>(), secret in any::<String>(), padded in any::<bool>()) {
            prop_assume!(!id.is_empty());
            let raw = format!("{}:{}", form_urlencode(&id), form_urlencode(&secret));
            let encoded = if padded { STANDARD.encode(raw) } else { STANDARD_NO_PAD.encode(raw) };
            prop_assert_eq!(parse_basic(&encoded), Some((id, secret)));
        }

        #[test]
        fn any_basic_credentials_parse_or_are_refused(credentials in prop_oneof![any::<String>(), "[A-Za-z0-9+/=]{0,40}"]) {
            if let Some((id, _)) = parse_basic(&credentials) {
                prop_assert!(!id.is_empty());
            }
        }

        #[test]
        fn form_decoding_accepts_only_well_formed_escapes(value in prop_oneof![any::<String>(), "[a-z%+0-9A-F-]{0,12}"]) {
            if let Some(decoded) = form_decode(&value) {
                let bytes = value.as_bytes();
                for (i, _) in value.match_indices('%') {
                    prop_assert!(
                        bytes.get(i + 1..i + 3).is_some_and(|hex| hex.iter().all(u8::is_ascii_hexdigit)),
                        "{:?} decoded to {:?} despite a broken escape", value, decoded
                    );
                }
            }
        }

        #[test]
        fn a_request_never_authenticates_two_ways(
            authorization in prop::option::of(prop_oneof![any::<String>(), "Basic [A-Za-z0-9+/=]{0,24}"]),
            body in "((client_id|client_secret|grant_type)=[a-z0-9%]{0,6}&?){0,4}",
        ) {
            let mut headers = HeaderMap::new();
            if let Some(value) = authorization.as_deref().and_then(|a| HeaderValue::from_str(a).ok()) {
                headers.insert(header::AUTHORIZATION, value);
            }
            let Ok(form) = parse_form(body.as_bytes()) else { return Ok(()) };
            if let Ok(client) = client_authentication(&headers, &form, String::new()) {
                prop_assert!(!client.client_id.is_empty());
                if client.used_basic {
                    prop_assert!(form.value("client_secret").is_empty(), "Basic and a body secret");
                } else {
                    prop_assert!(headers.get(header::AUTHORIZATION).is_none());
                }
            }
        }
    }
}

/// The fuzz target `oauth_token` (SECURITY.md, "Fuzzing"): an `Authorization`
/// value (the first line, when there are two) and a form body (corpus
/// `fuzz/corpus/oauth`), through the form parser, HTTP Basic decoding and
/// client authentication.
#[cfg(test)]
mod fuzz_targets {
    use axum::http::HeaderValue;
    use proptest::prelude::*;

    use super::*;
    use crate::mcp::jsonrpc::fuzz;

    fn check(input: &[u8]) -> Result<(), TestCaseError> {
        let (authorization, body) = match input.iter().position(|b| *b == b'\n') {
            Some(at) => (Some(&input[..at]), &input[at + 1..]),
            None => (None, input),
        };
        let mut headers = HeaderMap::new();
        if let Some(value) = authorization.and_then(|a| HeaderValue::from_bytes(a).ok()) {
            headers.insert(header::AUTHORIZATION, value);
        }
        let text = String::from_utf8_lossy(input);
        if let Some(decoded) = form_decode(&text) {
            let bytes = text.as_bytes();
            for (i, _) in text.match_indices('%') {
                prop_assert!(
                    bytes
                        .get(i + 1..i + 3)
                        .is_some_and(|hex| hex.iter().all(u8::is_ascii_hexdigit))
                );
            }
            let encoded: String = url::form_urlencoded::byte_serialize(decoded.as_bytes()).collect();
            prop_assert_eq!(form_decode(&encoded), Some(decoded));
        }
        let line = String::from_utf8_lossy(authorization.unwrap_or(input));
        if let Some(credentials) = strip_scheme(&line, "Basic")
            && let Some((id, _secret)) = parse_basic(credentials)
        {
            prop_assert!(!id.is_empty());
        }
        let Ok(form) = parse_form(body) else { return Ok(()) };
        if let Ok(client) = client_authentication(&headers, &form, "192.0.2.1".into()) {
            prop_assert!(!client.client_id.is_empty());
            prop_assert_eq!(client.remote_addr, "192.0.2.1");
            if client.used_basic {
                prop_assert!(headers.contains_key(header::AUTHORIZATION));
                prop_assert!(form.value("client_secret").is_empty(), "Basic and a body secret");
                let body_id = form.value("client_id");
                prop_assert!(body_id.is_empty() || body_id == client.client_id);
            } else {
                prop_assert!(!headers.contains_key(header::AUTHORIZATION));
                prop_assert_eq!(client.client_id, form.value("client_id"));
                prop_assert_eq!(client.client_secret, form.value("client_secret"));
            }
        }
        Ok(())
    }

    #[test]
    fn oauth_token() {
        fuzz::run("oauth", file!(), crate::oauth::params::fuzz_targets::query(), check);
    }
}
