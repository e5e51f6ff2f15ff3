//! The back channel of the demo provider: discovery documents (RFC 8414, RFC 9728), dynamic
//! client registration (RFC 7591), `/token` (authorization code with PKCE S256, rotating refresh
//! tokens), `/revoke` (RFC 7009), `/userinfo`, and the client and bearer authentication they
//! share with `/mcp`.

use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Map, Value, json};

use super::authorize::normalize_scope;
use super::store::{Client, IssuedTokens, MAX_CLIENTS, TokenEndpointAuthMethod};
use super::{
    Params, SCOPES, Shared, constant_time_eq, has_content_type, is_form, parse_params, pkce_challenge, random_token, sha256,
};

const GRANT_TYPES: [&str; 2] = ["authorization_code", "refresh_token"];

/// An RFC 6749 §5.2 (or RFC 7591 §3.2.2) error response.
pub(crate) struct OAuthError {
    status: StatusCode,
    error: &'static str,
    description: String,
}

impl OAuthError {
    fn bad_request(error: &'static str, description: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            error,
            description: description.into(),
        }
    }

    fn invalid_client(description: impl Into<String>) -> Self {
        Self {
            status: StatusCode::UNAUTHORIZED,
            error: "invalid_client",
            description: description.into(),
        }
    }
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let mut response = (
            self.status,
            no_store(),
            Json(json!({ "error": self.error, "error_description": self.description })),
        )
            .into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            // RFC 6749 §5.2: a 401 names the scheme the client should authenticate with.
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"gatehouse-demo\""),
            );
        }
        response
    }
}

/// Token responses and errors must not be cached (RFC 6749 §5.1).
fn no_store() -> [(header::HeaderName, HeaderValue); 2] {
    [
        (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        (header::PRAGMA, HeaderValue::from_static("no-cache")),
    ]
}

/// Discovery documents are public; browser-based clients fetch them cross-origin.
pub(crate) fn public_json(value: Value) -> Response {
    (
        [(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"))],
        Json(value),
    )
        .into_response()
}

pub(crate) async fn authorization_server_metadata(State(shared): State<Arc<Shared>>) -> Response {
    let base = &shared.base_url;
    public_json(json!({
        "issuer": base,
        "authorization_endpoint": format!("{base}/authorize"),
        "token_endpoint": format!("{base}/token"),
        "registration_endpoint": format!("{base}/register"),
        "revocation_endpoint": format!("{base}/revoke"),
        "userinfo_endpoint": format!("{base}/userinfo"),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": GRANT_TYPES,
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": ["none", "client_secret_post", "client_secret_basic"],
        "revocation_endpoint_auth_methods_supported": ["none", "client_secret_post", "client_secret_basic"],
        "scopes_supported": SCOPES,
        "authorization_response_iss_parameter_supported": true,
        "service_documentation": format!("{base}/.well-known/oauth-protected-resource/mcp"),
    }))
}

pub(crate) async fn protected_resource_metadata(State(shared): State<Arc<Shared>>) -> Response {
    public_json(json!({
        "resource": shared.mcp_url(),
        "authorization_servers": [shared.base_url],
        "scopes_supported": SCOPES,
        "bearer_methods_supported": ["header"],
        "resource_name": shared.config.name,
    }))
}

/// Registered redirect URIs: absolute http(s) URLs with a host and no fragment.
pub(crate) fn validate_redirect_uri(uri: &str) -> Result<(), String> {
    let url = url::Url::parse(uri).map_err(|e| format!("redirect URI {uri:?}: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("redirect URI {uri:?} is not http(s)"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("redirect URI {uri:?} has no host"));
    }
    if url.fragment().is_some() {
        return Err(format!("redirect URI {uri:?} has a fragment"));
    }
    Ok(())
}

pub(crate) async fn register(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    match register_client(&shared, &headers, &body) {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

fn register_client(shared: &Shared, headers: &HeaderMap, body: &[u8]) -> Result<Response, OAuthError> {
    let metadata_error = |d: &str| OAuthError::bad_request("invalid_client_metadata", d);
    if !has_content_type(headers, "application/json") {
        return Err(metadata_error("the body must be application/json"));
    }
    let Ok(Value::Object(mut metadata)) = serde_json::from_slice::<Value>(body) else {
        return Err(metadata_error("the body must be a JSON object"));
    };

    let redirect_uris = string_list(metadata.get("redirect_uris"))
        .filter(|uris| !uris.is_empty())
        .ok_or_else(|| OAuthError::bad_request("invalid_redirect_uri", "redirect_uris must be a non-empty array of URLs"))?;
    for uri in &redirect_uris {
        validate_redirect_uri(uri).map_err(|e| OAuthError::bad_request("invalid_redirect_uri", e))?;
    }

    // RFC 7591 §2: the default is client_secret_basic.
    let auth_method = match metadata.get("token_endpoint_auth_method") {
        None => TokenEndpointAuthMethod::ClientSecretBasic,
        Some(value) => value.as_str().and_then(TokenEndpointAuthMethod::parse).ok_or_else(|| {
            metadata_error("token_endpoint_auth_method must be none, client_secret_post or client_secret_basic")
        })?,
    };

    // Deviation from RFC 7591's default (authorization_code only): clients that do not say
    // get refresh tokens too, which is what MCP clients expect.
    let grant_types = match metadata.get("grant_types") {
        None => GRANT_TYPES.iter().map(|g| (*g).to_owned()).collect(),
        Some(value) => string_list(Some(value))
            .filter(|g| g.iter().all(|g| GRANT_TYPES.contains(&g.as_str())) && g.iter().any(|g| g == "authorization_code"))
            .ok_or_else(|| metadata_error("grant_types must include authorization_code and may add refresh_token"))?,
    };
    let response_types = match metadata.get("response_types") {
        None => vec!["code".to_owned()],
        Some(value) => string_list(Some(value))
            .filter(|r| r.iter().all(|r| r == "code") && !r.is_empty())
            .ok_or_else(|| metadata_error("response_types must be [\"code\"]"))?,
    };
    if let Some(scope) = metadata.get("scope") {
        let valid = scope.as_str().and_then(normalize_scope).is_some();
        if !valid {
            return Err(metadata_error(&format!(
                "scope must be a space-separated subset of {}",
                SCOPES.join(" ")
            )));
        }
    }
    let client_name = match metadata.get("client_name") {
        None => None,
        Some(Value::String(name)) => Some(name.clone()),
        Some(_) => return Err(metadata_error("client_name must be a string")),
    };

    let client_id = random_token("demo_client_");
    let client_secret = (auth_method != TokenEndpointAuthMethod::None).then(|| random_token("demo_cs_"));
    {
        let mut store = shared.store();
        if store.clients.len() >= MAX_CLIENTS {
            return Err(metadata_error("too many clients are registered"));
        }
        store.clients.insert(
            client_id.clone(),
            Client {
                secret_hash: client_secret.as_deref().map(sha256),
                auth_method,
                redirect_uris: redirect_uris.clone(),
                client_name,
                refresh_allowed: grant_types.iter().any(|g| g == "refresh_token"),
            },
        );
    }
    super::DemoStats::bump(&shared.stats.registrations);

    // Echo what the client sent (RFC 7591 §3.2.1), with the values as registered.
    let issued_at = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    metadata.remove("client_secret");
    metadata.insert("client_id".into(), client_id.into());
    metadata.insert("client_id_issued_at".into(), issued_at.into());
    if let Some(secret) = client_secret {
        metadata.insert("client_secret".into(), secret.into());
        metadata.insert("client_secret_expires_at".into(), 0.into());
    } else {
        metadata.remove("client_secret_expires_at");
    }
    metadata.insert("redirect_uris".into(), json!(redirect_uris));
    metadata.insert("token_endpoint_auth_method".into(), auth_method.as_str().into());
    metadata.insert("grant_types".into(), json!(grant_types));
    metadata.insert("response_types".into(), json!(response_types));
    Ok((StatusCode::CREATED, no_store(), Json(Value::Object(metadata))).into_response())
}

fn string_list(value: Option<&Value>) -> Option<Vec<String>> {
    value?.as_array()?.iter().map(|v| v.as_str().map(str::to_owned)).collect()
}

/// The authenticated client of a `/token` or `/revoke` request.
struct AuthenticatedClient {
    client_id: String,
    refresh_allowed: bool,
}

/// Authenticates the client with the one method it registered (RFC 6749 §2.3).
fn authenticate_client(shared: &Shared, headers: &HeaderMap, params: &Params) -> Result<AuthenticatedClient, OAuthError> {
    let basic = match headers.get(header::AUTHORIZATION) {
        None => None,
        Some(value) => Some(
            parse_basic(value).ok_or_else(|| OAuthError::invalid_client("the Authorization header is not valid HTTP Basic"))?,
        ),
    };
    let body_id = params.get("client_id");
    let body_secret = params.get("client_secret");
    let (client_id, secret, method) = match (basic, body_secret) {
        (Some(_), Some(_)) => {
            return Err(OAuthError::bad_request(
                "invalid_request",
                "use one client authentication method, not two",
            ));
        }
        (Some((id, secret)), None) => {
            if body_id.is_some_and(|b| *b != id) {
                return Err(OAuthError::bad_request(
                    "invalid_request",
                    "client_id in the body differs from the Basic credentials",
                ));
            }
            (id, Some(secret), TokenEndpointAuthMethod::ClientSecretBasic)
        }
        (None, Some(secret)) => {
            let id = body_id.ok_or_else(|| OAuthError::bad_request("invalid_request", "client_id is required"))?;
            (id.clone(), Some(secret.clone()), TokenEndpointAuthMethod::ClientSecretPost)
        }
        (None, None) => {
            let id = body_id.ok_or_else(|| OAuthError::invalid_client("client authentication is required"))?;
            (id.clone(), None, TokenEndpointAuthMethod::None)
        }
    };
    let store = shared.store();
    let Some(client) = store.clients.get(&client_id) else {
        return Err(OAuthError::invalid_client("unknown client"));
    };
    if client.auth_method != method {
        return Err(OAuthError::invalid_client(format!(
            "this client authenticates with {}",
            client.auth_method.as_str()
        )));
    }
    if let (Some(expected), Some(secret)) = (&client.secret_hash, &secret)
        && !constant_time_eq(expected, &sha256(secret))
    {
        return Err(OAuthError::invalid_client("wrong client secret"));
    }
    Ok(AuthenticatedClient {
        client_id,
        refresh_allowed: client.refresh_allowed,
    })
}

/// `Basic base64(urlencode(id) ":" urlencode(secret))` (RFC 6749 §2.3.1).
fn parse_basic(value: &HeaderValue) -> Option<(String, String)> {
    let (scheme, credentials) = value.to_str().ok()?.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = String::from_utf8(STANDARD.decode(credentials.trim()).ok()?).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    let id = form_decode(id)?;
    (!id.is_empty()).then_some(())?;
    Some((id, form_decode(secret)?))
}

/// Decodes one `application/x-www-form-urlencoded` component; `None` on bad escapes.
fn form_decode(text: &str) -> Option<String> {
    let mut bytes = Vec::with_capacity(text.len());
    let mut input = text.bytes();
    while let Some(b) = input.next() {
        match b {
            b'+' => bytes.push(b' '),
            b'%' => {
                let hex = [input.next()?, input.next()?];
                bytes.push(u8::from_str_radix(std::str::from_utf8(&hex).ok()?, 16).ok()?);
            }
            _ => bytes.push(b),
        }
    }
    String::from_utf8(bytes).ok()
}

/// Reads a form body, refusing other media types and repeated parameters.
fn read_form(headers: &HeaderMap, body: &[u8]) -> Result<Params, OAuthError> {
    if !is_form(headers) {
        return Err(OAuthError::bad_request(
            "invalid_request",
            "the body must be application/x-www-form-urlencoded",
        ));
    }
    let text = std::str::from_utf8(body).map_err(|_| OAuthError::bad_request("invalid_request", "the body is not UTF-8"))?;
    parse_params(text).map_err(|e| OAuthError::bad_request("invalid_request", e))
}

pub(crate) async fn token(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    super::DemoStats::bump(&shared.stats.token_requests);
    {
        let mut store = shared.store();
        if store.fail_token_requests > 0 {
            store.fail_token_requests -= 1;
            return OAuthError {
                status: StatusCode::SERVICE_UNAVAILABLE,
                error: "temporarily_unavailable",
                description: "the demo provider was told to fail this request".to_owned(),
            }
            .into_response();
        }
    }
    let result = read_form(&headers, &body).and_then(|params| {
        let client = authenticate_client(&shared, &headers, &params)?;
        match params.get("grant_type").map(String::as_str) {
            None => Err(OAuthError::bad_request("invalid_request", "grant_type is required")),
            Some("authorization_code") => exchange_code(&shared, &client, &params),
            Some("refresh_token") => refresh(&shared, &client, &params),
            Some(other) => Err(OAuthError::bad_request(
                "unsupported_grant_type",
                format!("grant_type {other} is not supported"),
            )),
        }
    });
    result.unwrap_or_else(IntoResponse::into_response)
}

fn required<'a>(params: &'a Params, name: &str) -> Result<&'a str, OAuthError> {
    params
        .get(name)
        .map(String::as_str)
        .ok_or_else(|| OAuthError::bad_request("invalid_request", format!("{name} is required")))
}

/// An RFC 8707 `resource` at `/token` must name what the grant is for.
fn check_resource(shared: &Shared, params: &Params, granted: Option<&str>) -> Result<(), OAuthError> {
    match params.get("resource") {
        Some(asked) if *asked != granted.map_or_else(|| shared.mcp_url(), str::to_owned) => {
            Err(OAuthError::bad_request("invalid_target", "resource does not match the grant"))
        }
        _ => Ok(()),
    }
}

fn exchange_code(shared: &Shared, client: &AuthenticatedClient, params: &Params) -> Result<Response, OAuthError> {
    let code = required(params, "code")?;
    let redirect_uri = required(params, "redirect_uri")?;
    let verifier = required(params, "code_verifier")?;
    let invalid_grant = |d: &str| OAuthError::bad_request("invalid_grant", d);

    let mut store = shared.store();
    let key = sha256(code);
    let Some(record) = store.codes.get_mut(&key).filter(|r| r.expires_at > Instant::now()) else {
        return Err(invalid_grant("unknown or expired authorization code"));
    };
    if record.request.client_id != client.client_id {
        return Err(invalid_grant("the code was issued to another client"));
    }
    if record.used {
        // RFC 6749 §4.1.2: a replayed code revokes what it was exchanged for.
        if let Some(grant_id) = record.grant_id {
            store.revoke_grant(grant_id);
        }
        return Err(invalid_grant("the authorization code was already used"));
    }
    // Any redemption attempt uses the code up, so a verifier cannot be guessed at leisure.
    record.used = true;
    if record.request.redirect_uri != redirect_uri {
        return Err(invalid_grant("redirect_uri differs from the authorization request"));
    }
    if !(43..=128).contains(&verifier.len()) || !verifier.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b)) {
        return Err(OAuthError::bad_request(
            "invalid_request",
            "code_verifier must be 43 to 128 unreserved characters",
        ));
    }
    if !constant_time_eq(pkce_challenge(verifier).as_bytes(), record.request.code_challenge.as_bytes()) {
        return Err(invalid_grant("code_verifier does not match code_challenge"));
    }
    let request = record.request.clone();
    let account = record.account.clone();
    check_resource(shared, params, request.resource.as_deref())?;

    let grant_id = store.create_grant(&client.client_id, &account, &request.scope, request.resource.as_deref());
    if let Some(record) = store.codes.get_mut(&key) {
        record.grant_id = Some(grant_id);
    }
    let tokens = store.issue_tokens(
        grant_id,
        shared.config.access_token_ttl,
        shared.config.issue_refresh_tokens && client.refresh_allowed,
    );
    drop(store);
    super::DemoStats::bump(&shared.stats.code_exchanges);
    let mut response = token_response(shared, tokens, &request.scope);
    // OpenID Connect Core §3.1.3.3: asked for `openid`, the response carries an ID token.
    if request.scope.split(' ').any(|s| s == "openid") {
        let Some(id_token) = super::oidc::id_token(shared, &client.client_id, &account, request.nonce.as_deref()) else {
            return Err(OAuthError {
                status: StatusCode::INTERNAL_SERVER_ERROR,
                error: "server_error",
                description: "signing the ID token failed".to_owned(),
            });
        };
        response.insert("id_token".into(), id_token.into());
    }
    Ok((no_store(), Json(Value::Object(response))).into_response())
}

fn refresh(shared: &Shared, client: &AuthenticatedClient, params: &Params) -> Result<Response, OAuthError> {
    let presented = required(params, "refresh_token")?;
    let invalid_grant = |d: &str| OAuthError::bad_request("invalid_grant", d);

    let mut store = shared.store();
    let key = sha256(presented);
    let Some(record) = store.refresh_tokens.get(&key) else {
        return Err(invalid_grant("unknown refresh token"));
    };
    let (grant_id, rotated) = (record.grant_id, record.rotated);
    let Some(grant) = store.grants.get(&grant_id) else {
        return Err(invalid_grant("unknown refresh token"));
    };
    if grant.client_id != client.client_id {
        return Err(invalid_grant("the refresh token was issued to another client"));
    }
    if grant.revoked {
        return Err(invalid_grant("the refresh token was revoked"));
    }
    if rotated {
        // Reuse of a rotated token means it leaked: end the whole family.
        store.revoke_grant(grant_id);
        return Err(invalid_grant("the refresh token was already used"));
    }
    let granted_scope = grant.scope.clone();
    check_resource(shared, params, grant.resource.as_deref())?;
    // A refresh may narrow the scope, never widen it (RFC 6749 §6).
    let scope = match params.get("scope") {
        None => granted_scope,
        Some(asked) => normalize_scope(asked)
            .filter(|s| s.split(' ').all(|s| granted_scope.split(' ').any(|g| g == s)))
            .ok_or_else(|| OAuthError::bad_request("invalid_scope", "scope exceeds the grant"))?,
    };

    let rotate = shared.config.rotate_refresh_tokens;
    if rotate && let Some(record) = store.refresh_tokens.get_mut(&key) {
        record.rotated = true;
    }
    let tokens = store.issue_tokens(grant_id, shared.config.access_token_ttl, rotate);
    drop(store);
    super::DemoStats::bump(&shared.stats.refreshes);
    // Without rotation the response has no refresh_token: the client keeps the one it has.
    Ok((no_store(), Json(Value::Object(token_response(shared, tokens, &scope)))).into_response())
}

fn token_response(shared: &Shared, tokens: IssuedTokens, scope: &str) -> Map<String, Value> {
    let mut body = Map::new();
    body.insert("access_token".into(), tokens.access_token.into());
    body.insert("token_type".into(), "Bearer".into());
    body.insert("expires_in".into(), shared.config.access_token_ttl.as_secs().into());
    if let Some(refresh_token) = tokens.refresh_token {
        body.insert("refresh_token".into(), refresh_token.into());
    }
    body.insert("scope".into(), scope.into());
    body
}

pub(crate) async fn revoke(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let result = read_form(&headers, &body).and_then(|params| {
        let client = authenticate_client(&shared, &headers, &params)?;
        let token = required(&params, "token")?;
        super::DemoStats::bump(&shared.stats.revocations);
        // The hint only orders the search (RFC 7009 §2.1); both kinds are looked up.
        let key = sha256(token);
        let mut store = shared.store();
        let owned_by_client = |store: &super::store::Store, grant_id: u64| -> bool {
            store.grants.get(&grant_id).is_some_and(|g| g.client_id == client.client_id)
        };
        if let Some(grant_id) = store.access_tokens.get(&key).map(|t| t.grant_id)
            && owned_by_client(&store, grant_id)
            && let Some(record) = store.access_tokens.get_mut(&key)
        {
            record.revoked = true;
        }
        if let Some(grant_id) = store.refresh_tokens.get(&key).map(|t| t.grant_id)
            && owned_by_client(&store, grant_id)
        {
            // Revoking a refresh token ends its grant, access tokens included (RFC 7009 §2.1).
            store.revoke_grant(grant_id);
        }
        // Unknown tokens and other clients' tokens get the same 200 (RFC 7009 §2.2).
        Ok((StatusCode::OK, no_store()).into_response())
    });
    result.unwrap_or_else(IntoResponse::into_response)
}

/// What the `Authorization` header of a resource request holds.
pub(crate) enum Bearer<'a> {
    Missing,
    Malformed,
    Token(&'a str),
}

pub(crate) fn bearer(headers: &HeaderMap) -> Bearer<'_> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Bearer::Missing;
    };
    let Some((scheme, token)) = value.to_str().ok().and_then(|v| v.split_once(' ')) else {
        return Bearer::Malformed;
    };
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Bearer::Malformed;
    }
    Bearer::Token(token)
}

pub(crate) async fn userinfo(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    let info = match bearer(&headers) {
        Bearer::Token(token) => shared.store().validate_access_token(token),
        Bearer::Missing | Bearer::Malformed => None,
    };
    userinfo_response(info, &headers)
}

/// `POST /userinfo` (OpenID Connect Core §5.3.1): the token in the `Authorization` header or,
/// per RFC 6750 §2.2, as `access_token` in a form body (never both).
pub(crate) async fn userinfo_post(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let in_body = read_form(&headers, &body)
        .ok()
        .and_then(|params| params.get("access_token").cloned());
    let info = match (bearer(&headers), in_body) {
        (Bearer::Token(token), None) => shared.store().validate_access_token(token),
        (Bearer::Missing, Some(token)) => shared.store().validate_access_token(&token),
        _ => None,
    };
    userinfo_response(info, &headers)
}

fn userinfo_response(info: Option<super::store::TokenInfo>, headers: &HeaderMap) -> Response {
    match info {
        Some(info) => (
            no_store(),
            Json(json!({ "sub": info.account, "preferred_username": info.account })),
        )
            .into_response(),
        None => {
            let challenge = match bearer(headers) {
                Bearer::Missing => "Bearer",
                _ => "Bearer error=\"invalid_token\"",
            };
            (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, HeaderValue::from_static(challenge))],
            )
                .into_response()
        }
    }
}
