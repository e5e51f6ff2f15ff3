//! The front channel of the demo provider: `GET /authorize` (validate the request, render the
//! login/consent page) and `POST /authorize` (check the page's CSRF token, then redirect back
//! to the client with a code or `access_denied`).
//!
//! Until the client and its exact redirect URI are known good, every error is an HTML page and
//! never a redirect, so the endpoint cannot be used as an open redirector.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::pages::{AuthorizePage, ScopeView, consent_page, error_page, scope_description};
use super::store::{AuthRequest, CODE_TTL, CONSENT_TTL, CodeRecord, MAX_CONSENTS, PendingConsent};
use super::{OIDC_SCOPES, Params, SCOPES, Shared, parse_params, random_token, sha256};

/// Why an authorization request failed, and so how the browser is told.
enum Failure {
    /// Client or redirect URI not trustworthy: show a page, do not redirect.
    Page(&'static str, String),
    /// A valid client made a bad request: tell it at its redirect URI (RFC 6749 §4.1.2.1).
    Redirect {
        redirect_uri: String,
        state: Option<String>,
        error: &'static str,
        description: String,
    },
}

pub(crate) async fn authorize_page(State(shared): State<Arc<Shared>>, RawQuery(query): RawQuery) -> Response {
    let request = match parse_params(query.as_deref().unwrap_or(""))
        .map_err(|e| Failure::Page("Invalid request", e))
        .and_then(|params| validate_request(&shared, &params))
    {
        Ok(request) => request,
        Err(failure) => return fail(&shared, failure, StatusCode::FOUND),
    };
    let csrf = random_token("demo_csrf_");
    {
        let mut store = shared.store();
        store.purge_expired();
        if store.consents.len() >= MAX_CONSENTS {
            drop(store);
            return error_page(
                &shared.config.name,
                "Busy",
                "Too many sign-in pages are open at once. Try again in a few minutes.",
            );
        }
        store.consents.insert(
            sha256(&csrf),
            PendingConsent {
                request: request.clone(),
                expires_at: Instant::now() + CONSENT_TTL,
            },
        );
    }
    render(&shared, &request, &csrf, String::new(), None)
}

pub(crate) async fn authorize_decision(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let name = &shared.config.name;
    if !super::is_form(&headers) {
        return error_page(name, "Invalid request", "The form was not sent as a form.");
    }
    let params = match std::str::from_utf8(&body)
        .map_err(|_| "The form is not UTF-8.".to_owned())
        .and_then(parse_params)
    {
        Ok(params) => params,
        Err(message) => return error_page(name, "Invalid request", message),
    };
    let Some(csrf) = params.get("csrf") else {
        return error_page(name, "Invalid request", "The form has no CSRF token.");
    };
    let key = sha256(csrf);
    let request = {
        let mut store = shared.store();
        store.purge_expired();
        match store.consents.get(&key) {
            Some(pending) => pending.request.clone(),
            None => {
                return error_page(
                    name,
                    "This page has expired",
                    "The sign-in page was already used or is too old. Start again from the application.",
                );
            }
        }
    };
    // The hidden fields must come back exactly as rendered: the page approves that request and
    // no other.
    let expected = form_fields(&request, csrf);
    let tampered = expected.iter().any(|(field, value)| params.get(field) != Some(value))
        || ["state", "resource", "nonce"]
            .iter()
            .any(|f| params.contains_key(*f) && !expected.iter().any(|(n, _)| n == f));
    if tampered {
        return error_page(
            name,
            "Invalid request",
            "The form does not match the request it was shown for.",
        );
    }
    match params.get("decision").map(String::as_str) {
        Some("deny") => {
            shared.store().consents.remove(&key);
            redirect(
                &request.redirect_uri,
                &[
                    ("error", "access_denied"),
                    ("error_description", "The user denied the request."),
                ],
                request.state.as_deref(),
                &shared.base_url,
                StatusCode::SEE_OTHER,
            )
        }
        Some("allow") => {
            let raw_account = params.get("account").map(String::as_str).unwrap_or("");
            let account = match validate_account(raw_account) {
                Ok(account) => account,
                // The consent stays pending so the person can correct the name.
                Err(message) => {
                    return render(&shared, &request, csrf, raw_account.to_owned(), Some(message));
                }
            };
            let code = random_token("demo_ac_");
            {
                let mut store = shared.store();
                if store.consents.remove(&key).is_none() {
                    // A concurrent post of the same page won the race.
                    drop(store);
                    return error_page(
                        name,
                        "This page has expired",
                        "The sign-in page was already used. Start again from the application.",
                    );
                }
                store.codes.insert(
                    sha256(&code),
                    CodeRecord {
                        request: request.clone(),
                        account,
                        expires_at: Instant::now() + CODE_TTL,
                        used: false,
                        grant_id: None,
                    },
                );
            }
            redirect(
                &request.redirect_uri,
                &[("code", &code)],
                request.state.as_deref(),
                &shared.base_url,
                StatusCode::SEE_OTHER,
            )
        }
        _ => error_page(name, "Invalid request", "Choose Allow or Deny."),
    }
}

/// Checks the query of `GET /authorize`.
fn validate_request(shared: &Shared, params: &Params) -> Result<AuthRequest, Failure> {
    let get = |name: &str| params.get(name).map(String::as_str);
    let Some(client_id) = get("client_id") else {
        return Err(Failure::Page(
            "Invalid request",
            "The application did not say who it is (no client_id).".to_owned(),
        ));
    };
    let Some(redirect_uri) = get("redirect_uri") else {
        return Err(Failure::Page(
            "Invalid request",
            "The application did not say where to send you back (no redirect_uri).".to_owned(),
        ));
    };
    {
        let store = shared.store();
        let Some(client) = store.clients.get(client_id) else {
            return Err(Failure::Page(
                "Unknown application",
                format!("No application is registered as \"{client_id}\"."),
            ));
        };
        if !client.redirect_uris.iter().any(|r| r == redirect_uri) {
            return Err(Failure::Page(
                "Unregistered redirect address",
                format!("\"{redirect_uri}\" is not a redirect address registered for this application."),
            ));
        }
    }
    let state = get("state").map(str::to_owned);
    let fail = |error: &'static str, description: &str| Failure::Redirect {
        redirect_uri: redirect_uri.to_owned(),
        state: state.clone(),
        error,
        description: description.to_owned(),
    };
    match get("response_type") {
        Some("code") => {}
        None => return Err(fail("invalid_request", "response_type is required")),
        Some(_) => {
            return Err(fail("unsupported_response_type", "only response_type=code is supported"));
        }
    }
    let Some(code_challenge) = get("code_challenge") else {
        return Err(fail("invalid_request", "code_challenge is required (PKCE)"));
    };
    if get("code_challenge_method") != Some("S256") {
        return Err(fail("invalid_request", "code_challenge_method must be S256"));
    }
    // An S256 challenge is exactly 43 base64url characters.
    if code_challenge.len() != 43
        || !code_challenge
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(fail("invalid_request", "code_challenge is not a base64url SHA-256"));
    }
    let scope = match get("scope") {
        None => SCOPES.join(" "),
        Some(requested) => normalize_scope(requested).ok_or_else(|| fail("invalid_scope", "unknown scope"))?,
    };
    let nonce = get("nonce").map(str::to_owned);
    if nonce.as_ref().is_some_and(|n| n.is_empty() || n.len() > 256) {
        return Err(fail("invalid_request", "nonce must be 1 to 256 characters"));
    }
    let resource = get("resource").map(str::to_owned);
    if let Some(resource) = &resource
        && *resource != shared.mcp_url()
    {
        return Err(fail("invalid_target", "resource must be this provider's MCP server URL"));
    }
    Ok(AuthRequest {
        client_id: client_id.to_owned(),
        redirect_uri: redirect_uri.to_owned(),
        scope,
        state,
        resource,
        code_challenge: code_challenge.to_owned(),
        nonce,
    })
}

/// Supported scopes (the demo's and OpenID Connect's) of a space-separated list, deduplicated
/// in the server's order; `None` when one is unknown. An empty list means the default (the
/// demo's scopes).
pub(crate) fn normalize_scope(requested: &str) -> Option<String> {
    let asked: Vec<&str> = requested.split(' ').filter(|s| !s.is_empty()).collect();
    let known = || OIDC_SCOPES.iter().chain(SCOPES.iter());
    if asked.iter().any(|s| !known().any(|k| k == s)) {
        return None;
    }
    if asked.is_empty() {
        return Some(SCOPES.join(" "));
    }
    Some(known().filter(|s| asked.contains(s)).copied().collect::<Vec<_>>().join(" "))
}

fn validate_account(raw: &str) -> Result<String, String> {
    let account = raw.trim();
    if account.is_empty() {
        return Err("Enter an account name, for example alice.".to_owned());
    }
    if account.chars().count() > 64 || !account.chars().all(|c| c.is_ascii_alphanumeric() || "._-@+".contains(c)) {
        return Err("Use at most 64 letters, digits and . _ - @ + for the account name.".to_owned());
    }
    Ok(account.to_owned())
}

/// The hidden fields of the consent form: the validated request plus the CSRF token.
fn form_fields(request: &AuthRequest, csrf: &str) -> Vec<(String, String)> {
    let mut fields = vec![
        ("response_type".to_owned(), "code".to_owned()),
        ("client_id".to_owned(), request.client_id.clone()),
        ("redirect_uri".to_owned(), request.redirect_uri.clone()),
        ("scope".to_owned(), request.scope.clone()),
        ("code_challenge".to_owned(), request.code_challenge.clone()),
        ("code_challenge_method".to_owned(), "S256".to_owned()),
    ];
    if let Some(state) = &request.state {
        fields.push(("state".to_owned(), state.clone()));
    }
    if let Some(resource) = &request.resource {
        fields.push(("resource".to_owned(), resource.clone()));
    }
    if let Some(nonce) = &request.nonce {
        fields.push(("nonce".to_owned(), nonce.clone()));
    }
    fields.push(("csrf".to_owned(), csrf.to_owned()));
    fields
}

fn render(shared: &Shared, request: &AuthRequest, csrf: &str, account: String, error: Option<String>) -> Response {
    let client_name = shared
        .store()
        .clients
        .get(&request.client_id)
        .and_then(|c| c.client_name.clone())
        .unwrap_or_else(|| request.client_id.clone());
    let redirect = url::Url::parse(&request.redirect_uri).ok();
    let redirect_host = redirect
        .as_ref()
        .and_then(|u| {
            u.host_str()
                .map(|h| u.port().map_or_else(|| h.to_owned(), |p| format!("{h}:{p}")))
        })
        .unwrap_or_else(|| request.redirect_uri.clone());
    let redirect_origin = redirect.map(|u| u.origin().ascii_serialization()).unwrap_or_default();
    let status = if error.is_some() {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    consent_page(
        status,
        AuthorizePage {
            name: shared.config.name.clone(),
            client_name,
            redirect_host,
            scopes: request
                .scope
                .split(' ')
                .filter(|s| !s.is_empty())
                .map(|s| ScopeView {
                    name: s.to_owned(),
                    description: scope_description(s),
                })
                .collect(),
            fields: form_fields(request, csrf),
            account,
            error,
        },
        &redirect_origin,
    )
}

fn fail(shared: &Shared, failure: Failure, status: StatusCode) -> Response {
    match failure {
        Failure::Page(title, message) => error_page(&shared.config.name, title, message),
        Failure::Redirect {
            redirect_uri,
            state,
            error,
            description,
        } => redirect(
            &redirect_uri,
            &[("error", error), ("error_description", &description)],
            state.as_deref(),
            &shared.base_url,
            status,
        ),
    }
}

/// Redirects to the client with `params`, then `state` (when the client sent one) and `iss`
/// (RFC 9207), keeping any query the registered redirect URI already has.
fn redirect(redirect_uri: &str, params: &[(&str, &str)], state: Option<&str>, issuer: &str, status: StatusCode) -> Response {
    // Registered redirect URIs were validated as absolute URLs, so this parse succeeds.
    let Ok(mut url) = url::Url::parse(redirect_uri) else {
        return (StatusCode::INTERNAL_SERVER_ERROR, "bad redirect URI").into_response();
    };
    {
        let mut query = url.query_pairs_mut();
        for (name, value) in params {
            query.append_pair(name, value);
        }
        if let Some(state) = state {
            query.append_pair("state", state);
        }
        query.append_pair("iss", issuer);
    }
    let Ok(location) = HeaderValue::from_str(url.as_str()) else {
        return (StatusCode::INTERNAL_SERVER_ERROR, "bad redirect URI").into_response();
    };
    (
        status,
        [
            (header::LOCATION, location),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
    )
        .into_response()
}
