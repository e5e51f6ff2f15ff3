//! The way on to an upstream or sign-in provider after a Connect or sign-in
//! post. Browsers apply `form-action` to the redirects that answer a form post,
//! and the pages allow only `'self'` (and the client's redirect origin), so the
//! post answers 303 to a page of this origin, `/consent/{flow_id}/continue`,
//! which leads on by meta refresh and a plain link (`redirect.html`).
//!
//! Nothing is stored: the provider URL travels in the query with a signature,
//! `base64url(HMAC-SHA256(browser secret, "gatehouse-continue:" flow id "\n" URL))`.
//! Only the browser holding the flow cookie passes it, so the page is no open
//! redirect and a copied link shows nothing in another browser. The key is the
//! CSRF key, with its own message prefix.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit as _, Mac as _};
use sha2::Sha256;
use subtle::ConstantTimeEq as _;

fn signature(browser_secret: &str, flow_id: &str, url: &str) -> String {
    // Invariant: HMAC accepts keys of any length, so this never fails.
    let mut mac = Hmac::<Sha256>::new_from_slice(browser_secret.as_bytes()).expect("Invariant: HMAC takes any key length");
    mac.update(b"gatehouse-continue:");
    mac.update(flow_id.as_bytes());
    // Flow ids never hold a newline (pages::is_flow_id), so the split is unambiguous.
    mac.update(b"\n");
    mac.update(url.as_bytes());
    URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
}

/// The continuation page of `flow_id` leading to `url`, as a path and query.
pub(crate) fn path(browser_secret: &str, flow_id: &str, url: &str) -> String {
    let query = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("to", url)
        .append_pair("sig", &signature(browser_secret, flow_id, url))
        .finish();
    format!("/consent/{flow_id}/continue?{query}")
}

/// Whether `presented` signs `url` for `flow_id` under `browser_secret`.
pub(crate) fn verify(browser_secret: &str, flow_id: &str, url: &str, presented: Option<&str>) -> bool {
    let Some(presented) = presented else { return false };
    let expected = signature(browser_secret, flow_id, url);
    // Security: constant time, as the CSRF token.
    expected.len() == presented.len() && bool::from(expected.as_bytes().ct_eq(presented.as_bytes()))
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
        let path = path("bs_secret", "flw_1", url);
        assert!(path.starts_with("/consent/flw_1/continue?to="), "{path}");
        let (to, sig) = query(&path);
        assert_eq!(to, url);
        assert!(verify("bs_secret", "flw_1", &to, Some(&sig)));
        assert!(!verify("bs_other", "flw_1", &to, Some(&sig)), "another browser");
        assert!(!verify("bs_secret", "flw_2", &to, Some(&sig)), "another flow");
        assert!(
            !verify("bs_secret", "flw_1", "https://evil.example/", Some(&sig)),
            "another URL"
        );
        assert!(!verify("bs_secret", "flw_1", &to, None));
        assert!(!verify("bs_secret", "flw_1", &to, Some(&sig[..42])));
    }

    #[test]
    fn the_signature_is_not_the_csrf_token() {
        let sig = signature("bs_secret", "flw_1", "");
        assert_ne!(sig, super::super::csrf::token("bs_secret", "flw_1"));
    }
}
