//! The way on to an upstream or sign-in provider after a Connect or sign-in
//! post. Browsers apply `form-action` to the redirects that answer a form post,
//! and the pages allow only `'self'` (and the client's redirect origin), so the
//! post answers 303 to a page of this origin, `/consent/{flow_id}/continue`
//! (or, after a connect-link post, `/connect/{link_id}/continue`), which leads
//! on by meta refresh and a plain link (`redirect.html`). A reload of that
//! page shows it again; it never posts the form again.
//!
//! Nothing is stored: the provider URL travels in the query with a signature,
//! `base64url(HMAC-SHA256(browser secret, purpose ":" id "\n" URL))`, where the
//! purpose (`gatehouse-continue` for a flow, `gatehouse-connect-continue` for
//! a connect link) keeps one kind of page from accepting the other's link.
//! Only the browser holding the cookie passes it, so the page is no open
//! redirect and a copied link shows nothing in another browser. The key is the
//! CSRF key, with its own message prefix.

use axum::response::{IntoResponse as _, Redirect, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit as _, Mac as _};
use sha2::Sha256;
use subtle::ConstantTimeEq as _;

use super::error::PageError;
use super::views::RedirectView;
use crate::cp_client::CpError;

/// Whose continuation page: a consent flow's or a connect link's.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Onward<'a> {
    /// `/consent/{flow_id}/continue`.
    Flow(&'a str),
    /// `/connect/{link_id}/continue`.
    Link(&'a str),
}

impl Onward<'_> {
    /// The message prefix and the id the signature binds.
    fn purpose_and_id(&self) -> (&'static [u8], &str) {
        match *self {
            Onward::Flow(id) => (b"gatehouse-continue:", id),
            Onward::Link(id) => (b"gatehouse-connect-continue:", id),
        }
    }
}

fn signature(browser_secret: &str, to: Onward<'_>, url: &str) -> String {
    let (purpose, id) = to.purpose_and_id();
    // Invariant: HMAC accepts keys of any length, so this never fails.
    let mut mac = Hmac::<Sha256>::new_from_slice(browser_secret.as_bytes()).expect("Invariant: HMAC takes any key length");
    mac.update(purpose);
    mac.update(id.as_bytes());
    // Flow and link ids never hold a newline (`pages::is_flow_id`,
    // `connect::is_link_id`), so the split is unambiguous.
    mac.update(b"\n");
    mac.update(url.as_bytes());
    URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
}

/// The continuation page of `to` leading to `url`, as a path and query.
pub(crate) fn path(browser_secret: &str, to: Onward<'_>, url: &str) -> String {
    let query = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("to", url)
        .append_pair("sig", &signature(browser_secret, to, url))
        .finish();
    match to {
        Onward::Flow(flow_id) => format!("/consent/{flow_id}/continue?{query}"),
        Onward::Link(link_id) => format!("/connect/{link_id}/continue?{query}"),
    }
}

/// Whether `presented` signs `url` for `to` under `browser_secret`.
pub(crate) fn verify(browser_secret: &str, to: Onward<'_>, url: &str, presented: Option<&str>) -> bool {
    let Some(presented) = presented else { return false };
    let expected = signature(browser_secret, to, url);
    // Security: constant time, as the CSRF token.
    expected.len() == presented.len() && bool::from(expected.as_bytes().ct_eq(presented.as_bytes()))
}

/// The continuation page of `to`, leading on to `url`.
pub(crate) fn page(to: Onward<'_>, url: String) -> Result<Response, PageError> {
    match RedirectView::new(url) {
        Some(view) => Ok(view.into_page().into_response()),
        None => Err(not_http(to)),
    }
}

/// The answer to a post that leads on to `url`: 303 to `to`'s continuation
/// page (same origin, so `form-action 'self'` allows it).
pub(crate) fn see_other(browser_secret: &str, to: Onward<'_>, url: &str) -> Result<Response, PageError> {
    // Checked here too, so a bad URL fails on the post rather than on the page.
    if RedirectView::new(url.to_owned()).is_none() {
        return Err(not_http(to));
    }
    Ok(Redirect::to(&path(browser_secret, to, url)).into_response())
}

/// The control plane handed over a provider URL that is not http(s).
fn not_http(to: Onward<'_>) -> PageError {
    let err = PageError::from(CpError::Internal);
    match to {
        Onward::Flow(flow_id) => {
            tracing::error!(target: "gatehouse::consent", flow_id, "the control plane returned a provider URL that is not http(s)");
            err.in_flow(flow_id)
        }
        // A link id is a secret: never in a log line.
        Onward::Link(_) => {
            tracing::error!(target: "gatehouse::consent", "the control plane returned a provider URL that is not http(s)");
            err
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(path: &str) -> (String, String) {
        let query = path.split_once('?').unwrap().1;
        let pairs: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes()).into_owned().collect();
        assert_eq!(pairs.len(), 2, "{pairs:?}");
        (pairs[0].1.clone(), pairs[1].1.clone())
    }

    #[test]
    fn the_path_carries_the_url_and_a_signature_only_this_browser_and_flow_pass() {
        let url = "https://up.example/authorize?state=s&redirect_uri=https%3A%2F%2Fgw%2Fcb";
        let path = path("bs_secret", Onward::Flow("flw_1"), url);
        assert!(path.starts_with("/consent/flw_1/continue?to="), "{path}");
        let (to, sig) = query(&path);
        assert_eq!(to, url);
        let flow = Onward::Flow("flw_1");
        assert!(verify("bs_secret", flow, &to, Some(&sig)));
        assert!(!verify("bs_other", flow, &to, Some(&sig)), "another browser");
        assert!(!verify("bs_secret", Onward::Flow("flw_2"), &to, Some(&sig)), "another flow");
        assert!(!verify("bs_secret", Onward::Link("flw_1"), &to, Some(&sig)), "a link's page");
        assert!(!verify("bs_secret", flow, "https://evil.example/", Some(&sig)), "another URL");
        assert!(!verify("bs_secret", flow, &to, None));
        assert!(!verify("bs_secret", flow, &to, Some(&sig[..42])));
    }

    #[test]
    fn a_links_path_is_its_own_page_and_passes_only_there() {
        let url = "https://up.example/authorize?state=s";
        let path = path("bs_secret", Onward::Link("gh_cl_1"), url);
        assert!(path.starts_with("/connect/gh_cl_1/continue?to="), "{path}");
        let (to, sig) = query(&path);
        assert!(verify("bs_secret", Onward::Link("gh_cl_1"), &to, Some(&sig)));
        assert!(!verify("bs_secret", Onward::Link("gh_cl_2"), &to, Some(&sig)), "another link");
        assert!(
            !verify("bs_secret", Onward::Flow("gh_cl_1"), &to, Some(&sig)),
            "a flow's page"
        );
        assert!(
            !verify("bs_other", Onward::Link("gh_cl_1"), &to, Some(&sig)),
            "another browser"
        );
    }

    #[test]
    fn the_signature_is_not_the_csrf_token() {
        let sig = signature("bs_secret", Onward::Flow("flw_1"), "");
        assert_ne!(sig, super::super::csrf::token("bs_secret", "flw_1"));
        let sig = signature("bs_secret", Onward::Link("gh_cl_1"), "");
        assert_ne!(sig, super::super::csrf::token("bs_secret", "gh_cl_1"));
    }
}
