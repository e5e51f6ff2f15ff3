//! CSRF tokens of the consent forms: base64url(HMAC-SHA256(key = browser
//! secret, message = "gatehouse-csrf:" + flow id)). Only the browser holding
//! the flow cookie can know it, it differs per flow, and any data plane can
//! recompute it, so no state is needed. Every POST checks it before any
//! control-plane call (docs/consent-flow.md).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit as _, Mac as _};
use sha2::Sha256;
use subtle::ConstantTimeEq as _;

/// The token for `flow_id` under `browser_secret`.
pub(crate) fn token(browser_secret: &str, flow_id: &str) -> String {
    // Invariant: HMAC accepts keys of any length, so this never fails.
    let mut mac = Hmac::<Sha256>::new_from_slice(browser_secret.as_bytes()).expect("Invariant: HMAC takes any key length");
    mac.update(b"gatehouse-csrf:");
    mac.update(flow_id.as_bytes());
    URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
}

/// Whether `presented` is the token for `flow_id` under `browser_secret`.
pub(crate) fn verify(browser_secret: &str, flow_id: &str, presented: Option<&str>) -> bool {
    let Some(presented) = presented else { return false };
    let expected = token(browser_secret, flow_id);
    // Security: constant-time comparison, so timing reveals no prefix of the token.
    // The length is public (always 43), so comparing unequal lengths early leaks nothing.
    expected.len() == presented.len() && bool::from(expected.as_bytes().ct_eq(presented.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_right_token_passes() {
        let token = token("bs_secret", "flw_1");
        assert_eq!(token.len(), 43, "32 bytes in unpadded base64url");
        assert!(!token.contains(['+', '/', '=']));
        assert!(verify("bs_secret", "flw_1", Some(&token)));
    }

    #[test]
    fn a_missing_or_wrong_token_fails() {
        let token = token("bs_secret", "flw_1");
        assert!(!verify("bs_secret", "flw_1", None));
        assert!(!verify("bs_secret", "flw_1", Some("")));
        let mut wrong = token.clone().into_bytes();
        wrong[0] = if wrong[0] == b'A' { b'B' } else { b'A' };
        assert!(!verify("bs_secret", "flw_1", Some(std::str::from_utf8(&wrong).unwrap())));
        assert!(!verify("bs_secret", "flw_1", Some(&token[..42])));
        // Another browser's secret yields another token.
        assert!(!verify("bs_other", "flw_1", Some(&token)));
    }

    #[test]
    fn the_token_of_another_flow_fails() {
        let other_flow = token("bs_secret", "flw_2");
        assert!(!verify("bs_secret", "flw_1", Some(&other_flow)));
    }
}

/// Properties of the CSRF token over generated input (SECURITY.md).
#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn the_token_verifies_and_is_43_base64url_characters(browser_secret in any::<String>(), flow_id in any::<String>()) {
            let token = token(&browser_secret, &flow_id);
            prop_assert_eq!(token.len(), 43);
            prop_assert!(token.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
            prop_assert!(verify(&browser_secret, &flow_id, Some(&token)));
        }

        #[test]
        fn any_other_presented_value_fails(browser_secret in any::<String>(), flow_id in any::<String>(), presented in any::<String>()) {
            let token = token(&browser_secret, &flow_id);
            prop_assume!(presented != token);
            prop_assert!(!verify(&browser_secret, &flow_id, Some(&presented)));
        }

        #[test]
        fn another_flow_or_browser_gets_another_token(
            browser_secret in any::<String>(),
            flow_id in any::<String>(),
            other in any::<String>(),
        ) {
            prop_assume!(other != flow_id && other != browser_secret);
            let token = token(&browser_secret, &flow_id);
            prop_assert!(!verify(&browser_secret, &other, Some(&token)), "another flow");
            prop_assert!(!verify(&other, &flow_id, Some(&token)), "another browser");
        }
    }
}
