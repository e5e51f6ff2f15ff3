//! The demo provider's HTML pages (askama templates under `templates/demo/`), the security
//! headers every page carries, and [`hidden_fields`], which reads a rendered consent form back.

use askama::Template;
use askama_web::WebTemplate;
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// Keeps the pages from loading anything, from being framed, and from posting anywhere but
/// back here.
const CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'";

/// Headers that keep the pages from being framed or sniffed, and from being cached or leaking
/// their URL (which carries `state`).
const PAGE_HEADERS: [(HeaderName, &str); 4] = [
    (header::X_FRAME_OPTIONS, "DENY"),
    (header::CACHE_CONTROL, "no-store"),
    (header::REFERRER_POLICY, "no-referrer"),
    (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
];

pub(crate) struct ScopeView {
    pub(crate) name: String,
    pub(crate) description: &'static str,
}

#[derive(Template, WebTemplate)]
#[template(path = "demo/authorize.html")]
pub(crate) struct AuthorizePage {
    /// The provider's name from the config.
    pub(crate) name: String,
    /// The client's registered name, or its id.
    pub(crate) client_name: String,
    pub(crate) redirect_host: String,
    pub(crate) scopes: Vec<ScopeView>,
    /// Hidden form fields: the request parameters and `csrf`.
    pub(crate) fields: Vec<(String, String)>,
    /// Prefill of the account field (after a rejected submission).
    pub(crate) account: String,
    pub(crate) error: Option<String>,
}

#[derive(Template, WebTemplate)]
#[template(path = "demo/error.html")]
pub(crate) struct ErrorPage {
    pub(crate) name: String,
    pub(crate) title: String,
    pub(crate) message: String,
}

/// A page response with the security headers.
pub(crate) fn page(status: StatusCode, body: impl IntoResponse) -> Response {
    page_with_csp(status, body, HeaderValue::from_static(CSP))
}

/// The consent page: as [`page`], but its form may also end at the client's redirect origin.
/// Chrome and Safari apply `form-action` to the redirect that answers a form post, so with
/// `'self'` alone the 303 back to the client would be blocked.
pub(crate) fn consent_page(status: StatusCode, body: impl IntoResponse, redirect_origin: &str) -> Response {
    let csp = CSP.replace("form-action 'self'", &format!("form-action 'self' {redirect_origin}"));
    match HeaderValue::from_str(&csp) {
        Ok(csp) => page_with_csp(status, body, csp),
        Err(_) => page(status, body),
    }
}

fn page_with_csp(status: StatusCode, body: impl IntoResponse, csp: HeaderValue) -> Response {
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_SECURITY_POLICY, csp);
    for (name, value) in PAGE_HEADERS {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

pub(crate) fn error_page(name: &str, title: &str, message: impl Into<String>) -> Response {
    page(
        StatusCode::BAD_REQUEST,
        ErrorPage {
            name: name.to_owned(),
            title: title.to_owned(),
            message: message.into(),
        },
    )
}

pub(crate) fn scope_description(scope: &str) -> &'static str {
    match scope {
        "notes.read" => "Read your notes",
        "notes.write" => "Create and change your notes",
        "openid" => "Sign you in with your account",
        "email" => "See your e-mail address",
        "profile" => "See your account name",
        _ => "Unknown permission",
    }
}

/// The `(name, value)` of every `<input type="hidden">` in a consent page, HTML entities decoded,
/// in document order. Tests (and scripted walkthroughs) post these back to `POST /authorize`
/// together with `account` and `decision`.
pub fn hidden_fields(html: &str) -> Vec<(String, String)> {
    let mut fields = Vec::new();
    let mut rest = html;
    while let Some(start) = rest.find("<input") {
        rest = &rest[start..];
        let Some(end) = rest.find('>') else { break };
        let tag = &rest[..end];
        rest = &rest[end..];
        if attribute(tag, "type").as_deref() != Some("hidden") {
            continue;
        }
        if let (Some(name), Some(value)) = (attribute(tag, "name"), attribute(tag, "value")) {
            fields.push((name, value));
        }
    }
    fields
}

/// The decoded value of a double-quoted attribute in one tag (the templates quote them all).
fn attribute(tag: &str, name: &str) -> Option<String> {
    let needle = format!(" {name}=\"");
    let start = tag.find(&needle)? + needle.len();
    let len = tag[start..].find('"')?;
    Some(decode_entities(&tag[start..start + len]))
}

/// Decodes the entities askama emits (numeric ones) and the common named ones.
fn decode_entities(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        rest = &rest[amp..];
        let decoded = rest.find(';').and_then(|semi| {
            let entity = &rest[1..semi];
            let c = match entity {
                "amp" => Some('&'),
                "lt" => Some('<'),
                "gt" => Some('>'),
                "quot" => Some('"'),
                "apos" => Some('\''),
                _ => entity
                    .strip_prefix("#x")
                    .or_else(|| entity.strip_prefix("#X"))
                    .map(|hex| u32::from_str_radix(hex, 16))
                    .or_else(|| entity.strip_prefix('#').map(str::parse::<u32>))
                    .and_then(Result::ok)
                    .and_then(char::from_u32),
            };
            c.map(|c| (c, semi))
        });
        match decoded {
            Some((c, semi)) => {
                out.push(c);
                rest = &rest[semi + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}
