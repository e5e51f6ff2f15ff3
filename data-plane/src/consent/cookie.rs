//! The flow cookie: binds a consent flow to the browser that started it
//! (docs/consent-flow.md, "The flow cookie and CSRF"). Its value is
//! `<flow_id>~<browser_secret>`; the control plane keeps only the secret's
//! hash, so the cookie is what proves "same browser" on every step, on any
//! data-plane instance. One flow per browser at a time: a new `/authorize`
//! replaces it.

use axum::http::{HeaderMap, HeaderValue, header};

/// Name on an https issuer: the `__Host-` prefix makes browsers insist on
/// `Secure`, `Path=/` and no `Domain` (RFC 6265bis §4.1.3.2).
const SECURE_NAME: &str = "__Host-gatehouse-flow";
/// Name on an http issuer (development), where `__Host-` cookies are refused.
const PLAIN_NAME: &str = "gatehouse-flow";
/// Seconds the cookie lives when the control plane did not say (one from
/// before `StartFlowResponse.expires_in`): the default flow lifetime.
const DEFAULT_MAX_AGE_SECONDS: i64 = 900;
/// Longest value accepted back; a longer one is not ours.
const MAX_VALUE_LEN: usize = 512;

/// The flow id and browser secret a browser presented. Never printed.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct FlowCookie {
    pub(crate) flow_id: String,
    pub(crate) browser_secret: String,
}

impl std::fmt::Debug for FlowCookie {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlowCookie")
            .field("flow_id", &self.flow_id)
            .field("browser_secret", &"[redacted]")
            .finish()
    }
}

fn is_https(public_url: &str) -> bool {
    public_url
        .get(..8)
        .is_some_and(|scheme| scheme.eq_ignore_ascii_case("https://"))
}

/// The cookie's name for this issuer.
pub(crate) fn name(public_url: &str) -> &'static str {
    if is_https(public_url) { SECURE_NAME } else { PLAIN_NAME }
}

/// Whether `part` may sit in the cookie value: visible ASCII without the
/// separator `~` and the characters RFC 6265 §4.1.1 excludes from cookie values.
fn is_cookie_safe(part: &str) -> bool {
    !part.is_empty()
        && part.len() <= MAX_VALUE_LEN
        && part
            .bytes()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b'~' | b'"' | b',' | b';' | b'\\'))
}

/// The `Set-Cookie` value for a new flow that lives `lifetime` seconds (the
/// configured flow lifetime, so the cookie ends with the flow), or `None` if
/// the control plane handed out ids that cannot sit in a cookie.
pub(crate) fn set_cookie(public_url: &str, flow_id: &str, browser_secret: &str, lifetime: i64) -> Option<HeaderValue> {
    if !is_cookie_safe(flow_id) || !is_cookie_safe(browser_secret) {
        return None;
    }
    let secure = if is_https(public_url) { "; Secure" } else { "" };
    let max_age = if lifetime > 0 { lifetime } else { DEFAULT_MAX_AGE_SECONDS };
    let cookie = format!(
        "{}={flow_id}~{browser_secret}; HttpOnly; SameSite=Lax; Path=/; Max-Age={max_age}{secure}",
        name(public_url)
    );
    HeaderValue::from_str(&cookie).ok()
}

/// The flow cookie from the request's `Cookie` headers, if one is there and
/// well formed. Garbage reads as no cookie, never as an error.
pub(crate) fn from_headers(headers: &HeaderMap, public_url: &str) -> Option<FlowCookie> {
    let wanted = name(public_url);
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .filter(|(name, _)| *name == wanted)
        .find_map(|(_, value)| parse_value(value))
}

fn parse_value(value: &str) -> Option<FlowCookie> {
    let value = value.trim().trim_matches('"');
    let (flow_id, browser_secret) = value.split_once('~')?;
    (is_cookie_safe(flow_id) && is_cookie_safe(browser_secret)).then(|| FlowCookie {
        flow_id: flow_id.to_owned(),
        browser_secret: browser_secret.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cookie_headers(values: &[&[u8]]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(header::COOKIE, HeaderValue::from_bytes(value).unwrap());
        }
        headers
    }

    #[test]
    fn https_issuers_get_a_host_prefixed_secure_cookie() {
        let value = set_cookie("https://gw.example.com", "flw_1", "bs_secret", 900).unwrap();
        assert_eq!(
            value,
            "__Host-gatehouse-flow=flw_1~bs_secret; HttpOnly; SameSite=Lax; Path=/; Max-Age=900; Secure"
        );
        let value = set_cookie("HTTPS://gw.example.com", "flw_1", "bs_secret", 900).unwrap();
        assert!(value.to_str().unwrap().starts_with("__Host-"));
    }

    #[test]
    fn http_issuers_get_a_plain_cookie_without_secure() {
        let value = set_cookie("http://127.0.0.1:8080", "flw_1", "bs_secret", 120).unwrap();
        assert_eq!(
            value,
            "gatehouse-flow=flw_1~bs_secret; HttpOnly; SameSite=Lax; Path=/; Max-Age=120"
        );
        // A control plane that did not say: the default lifetime.
        let value = set_cookie("http://127.0.0.1:8080", "flw_1", "bs_secret", 0).unwrap();
        assert!(value.to_str().unwrap().ends_with("Max-Age=900"));
    }

    #[test]
    fn ids_that_cannot_sit_in_a_cookie_are_refused() {
        for (flow, secret) in [("", "s"), ("f", ""), ("f~x", "s"), ("f", "s;x"), ("f", "s x"), ("f", "é")] {
            assert!(set_cookie("https://gw", flow, secret, 900).is_none(), "{flow:?} {secret:?}");
        }
    }

    #[test]
    fn the_cookie_round_trips_among_others() {
        let headers = cookie_headers(&[b"theme=dark; gatehouse-flow=flw_1~bs_secret; other=1"]);
        let cookie = from_headers(&headers, "http://gw").unwrap();
        assert_eq!(cookie.flow_id, "flw_1");
        assert_eq!(cookie.browser_secret, "bs_secret");
        // The https name is a different cookie.
        assert!(from_headers(&headers, "https://gw").is_none());
        let headers = cookie_headers(&[b"a=b", b"__Host-gatehouse-flow=flw_2~bs_2"]);
        assert_eq!(from_headers(&headers, "https://gw").unwrap().flow_id, "flw_2");
    }

    #[test]
    fn garbage_cookies_read_as_no_cookie() {
        let garbage: &[&[u8]] = &[
            b"",
            b";;;",
            b"gatehouse-flow",
            b"gatehouse-flow=",
            b"gatehouse-flow=~",
            b"gatehouse-flow=flw_1",
            b"gatehouse-flow=flw_1~",
            b"gatehouse-flow=~secret",
            b"gatehouse-flow=a~b~c",
            b"gatehouse-flow=\xff\xfe~x",
            b"gatehouse-flowx=flw_1~s",
        ];
        for value in garbage {
            let headers = cookie_headers(&[value]);
            assert!(
                from_headers(&headers, "http://gw").is_none(),
                "{:?}",
                String::from_utf8_lossy(value)
            );
        }
        let long = format!("gatehouse-flow=f~{}", "x".repeat(MAX_VALUE_LEN + 1));
        assert!(from_headers(&cookie_headers(&[long.as_bytes()]), "http://gw").is_none());
        // A garbage copy does not hide a good one.
        let headers = cookie_headers(&[b"gatehouse-flow=junk; gatehouse-flow=flw_1~s"]);
        assert_eq!(from_headers(&headers, "http://gw").unwrap().flow_id, "flw_1");
    }

    #[test]
    fn debug_output_hides_the_browser_secret() {
        let cookie = FlowCookie {
            flow_id: "flw_1".into(),
            browser_secret: "bs_secret".into(),
        };
        assert!(!format!("{cookie:?}").contains("bs_secret"));
    }
}

/// Properties of the flow cookie over generated input (SECURITY.md): what is
/// set reads back as itself, garbage never panics, and what is read is always
/// a well-formed pair.
#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::*;

    /// One part of a cookie value: visible ASCII without `~ " , ; \`.
    fn part() -> impl Strategy<Value = String> {
        let safe: Vec<char> = ('!'..='~').filter(|c| !matches!(c, '~' | '"' | ',' | ';' | '\\')).collect();
        prop::collection::vec(prop::sample::select(safe), 1..64).prop_map(String::from_iter)
    }

    fn issuer() -> impl Strategy<Value = &'static str> {
        prop::sample::select(vec![
            "http://127.0.0.1:8080",
            "https://gw.example.com",
            "HTTPS://GW.example.com",
        ])
    }

    proptest! {
        #[test]
        fn a_set_cookie_reads_back_as_itself_among_other_cookies(
            flow_id in part(),
            browser_secret in part(),
            public_url in issuer(),
            before in "([a-z]{1,5}=[a-z0-9]{0,5}; ){0,2}",
        ) {
            let set = set_cookie(public_url, &flow_id, &browser_secret, 900).expect("safe parts make a cookie");
            let set = set.to_str().expect("ASCII");
            let pair = set.split(';').next().expect("name=value");
            let expected = format!("{}={flow_id}~{browser_secret}", name(public_url));
            prop_assert_eq!(pair, expected);
            let mut headers = HeaderMap::new();
            headers.insert(header::COOKIE, HeaderValue::from_str(&format!("{before}{pair}; theme=dark")).unwrap());
            let cookie = from_headers(&headers, public_url).expect("the cookie is found");
            prop_assert_eq!(cookie, FlowCookie { flow_id, browser_secret });
        }

        #[test]
        fn set_cookie_never_lets_a_value_add_attributes(
            flow_id in any::<String>(),
            browser_secret in any::<String>(),
            public_url in issuer(),
            lifetime in 1..100_000i64,
        ) {
            if let Some(set) = set_cookie(public_url, &flow_id, &browser_secret, lifetime) {
                let set = set.to_str().expect("ASCII");
                let secure = if public_url.to_ascii_lowercase().starts_with("https") { "; Secure" } else { "" };
                let expected =
                    format!("{}={flow_id}~{browser_secret}; HttpOnly; SameSite=Lax; Path=/; Max-Age={lifetime}{secure}", name(public_url));
                prop_assert_eq!(set, expected);
            }
        }

        #[test]
        fn any_cookie_header_reads_as_a_well_formed_cookie_or_none(raw in prop::collection::vec(any::<u8>(), 0..200), named in any::<bool>()) {
            let mut bytes = if named { b"gatehouse-flow=".to_vec() } else { Vec::new() };
            bytes.extend_from_slice(&raw);
            let Ok(value) = HeaderValue::from_bytes(&bytes) else { return Ok(()) };
            let mut headers = HeaderMap::new();
            headers.insert(header::COOKIE, value);
            if let Some(cookie) = from_headers(&headers, "http://gw") {
                prop_assert!(is_cookie_safe(&cookie.flow_id) && is_cookie_safe(&cookie.browser_secret));
                let text = String::from_utf8_lossy(&bytes);
                let pair = format!("{}~{}", cookie.flow_id, cookie.browser_secret);
                prop_assert!(text.contains(&pair));
            }
        }
    }
}
