//! Form and query parameters (`application/x-www-form-urlencoded`), parsed
//! once at the edge. A parameter sent twice is refused unless the protocol
//! lets it repeat (RFC 6749 §3.1, §3.2: "Request and response parameters
//! MUST NOT be included more than once"; RFC 8707 `resource` may repeat).

use std::collections::BTreeMap;

/// The parameters of one query string or form body.
#[derive(Default)]
pub(crate) struct Params {
    single: BTreeMap<String, String>,
    repeated: BTreeMap<String, Vec<String>>,
}

// Values may be secrets (codes, tokens, client secrets): no Debug of values.
impl std::fmt::Debug for Params {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Params")
            .field("names", &self.single.keys().chain(self.repeated.keys()).collect::<Vec<_>>())
            .finish()
    }
}

/// A parameter appeared more than once.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("parameter {0:?} appears more than once")]
pub(crate) struct DuplicateParam(pub(crate) String);

impl Params {
    /// Parses `input`; names in `may_repeat` collect every value, any other name
    /// sent twice is a [`DuplicateParam`].
    pub(crate) fn parse(input: &[u8], may_repeat: &[&str]) -> Result<Self, DuplicateParam> {
        let mut params = Params::default();
        for (name, value) in url::form_urlencoded::parse(input) {
            if may_repeat.contains(&name.as_ref()) {
                params.repeated.entry(name.into_owned()).or_default().push(value.into_owned());
            } else if params.single.contains_key(name.as_ref()) {
                return Err(DuplicateParam(name.into_owned()));
            } else {
                params.single.insert(name.into_owned(), value.into_owned());
            }
        }
        Ok(params)
    }

    /// The value of `name`, if present (possibly empty).
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.single.get(name).map(String::as_str)
    }

    /// The value of `name`, or "" when absent. RFC 6749 §3.1: a parameter
    /// without a value is treated as omitted, so both read the same.
    pub(crate) fn value(&self, name: &str) -> String {
        self.get(name).unwrap_or_default().to_owned()
    }

    /// Whether `name` was sent at all.
    pub(crate) fn contains(&self, name: &str) -> bool {
        self.single.contains_key(name) || self.repeated.contains_key(name)
    }

    /// Every non-empty value of a repeatable parameter.
    pub(crate) fn all(&self, name: &str) -> Vec<String> {
        self.repeated
            .get(name)
            .map(|values| values.iter().filter(|v| !v.is_empty()).cloned().collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_parameter_sent_twice_is_refused() {
        let err = Params::parse(b"client_id=a&state=x&client_id=b", &["resource"]).unwrap_err();
        assert_eq!(err, DuplicateParam("client_id".into()));
        // Even the same value twice.
        assert!(Params::parse(b"state=x&state=x", &[]).is_err());
        // An empty duplicate still counts.
        assert!(Params::parse(b"scope=&scope=mcp", &[]).is_err());
    }

    #[test]
    fn repeatable_parameters_collect_every_value() {
        let params = Params::parse(
            b"resource=https%3A%2F%2Fa%2Fmcp&resource=https%3A%2F%2Fb&resource=",
            &["resource"],
        )
        .unwrap();
        assert_eq!(params.all("resource"), vec!["https://a/mcp", "https://b"]);
        assert!(params.contains("resource"));
        assert!(params.all("missing").is_empty());
    }

    #[test]
    fn values_are_form_decoded_and_presence_is_kept() {
        let params = Params::parse(b"state=&scope=mcp+offline_access&x=%2B", &[]).unwrap();
        assert_eq!(params.get("state"), Some(""));
        assert!(params.contains("state"));
        assert_eq!(params.value("scope"), "mcp offline_access");
        assert_eq!(params.value("x"), "+");
        assert_eq!(params.get("absent"), None);
        assert_eq!(params.value("absent"), "");
    }

    #[test]
    fn debug_output_names_parameters_but_never_values() {
        let params = Params::parse(b"code=secret-code-value", &[]).unwrap();
        let printed = format!("{params:?}");
        assert!(printed.contains("code"));
        assert!(!printed.contains("secret-code-value"));
    }
}

/// Properties of the parameter parser over generated input (SECURITY.md).
#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn encoded_parameters_read_back_as_sent(params in prop::collection::btree_map(any::<String>(), any::<String>(), 0..6)) {
            let encoded = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(&params).finish();
            let parsed = Params::parse(encoded.as_bytes(), &[]).expect("unique names");
            for (name, value) in &params {
                prop_assert_eq!(parsed.get(name), Some(value.as_str()));
            }
        }

        #[test]
        fn a_name_sent_twice_is_refused_unless_it_may_repeat(name in "[a-z_]{1,10}", first in any::<String>(), second in any::<String>()) {
            let encoded = url::form_urlencoded::Serializer::new(String::new())
                .append_pair(&name, &first)
                .append_pair(&name, &second)
                .finish();
            prop_assert_eq!(Params::parse(encoded.as_bytes(), &[]).unwrap_err(), DuplicateParam(name.clone()));
            let repeated = Params::parse(encoded.as_bytes(), &[name.as_str()]).expect("may repeat");
            let expected: Vec<String> = [first, second].into_iter().filter(|v| !v.is_empty()).collect();
            prop_assert_eq!(repeated.all(&name), expected);
        }

        #[test]
        fn any_bytes_parse_or_are_refused_without_panicking(input in prop::collection::vec(any::<u8>(), 0..300)) {
            let _ = Params::parse(&input, &["resource"]);
        }
    }
}

/// The fuzz target `oauth_params` (SECURITY.md, "Fuzzing"): any query string or
/// form body, over the corpus `fuzz/corpus/oauth` it shares with the
/// authorization-request and token-request targets.
#[cfg(test)]
pub(crate) mod fuzz_targets {
    use proptest::prelude::*;

    use super::*;
    use crate::mcp::jsonrpc::fuzz;

    /// Query strings and form bodies: OAuth parameters, repeated or not,
    /// encoded or not; after a first line, some carry an `Authorization` value.
    pub(crate) fn query() -> impl Strategy<Value = Vec<u8>> {
        let name = prop_oneof![
            4 => prop::sample::select(vec![
                "client_id", "client_secret", "redirect_uri", "response_type", "code_challenge",
                "code_challenge_method", "scope", "resource", "state", "prompt", "grant_type",
                "code", "code_verifier", "refresh_token", "token",
            ])
            .prop_map(str::to_owned),
            1 => "[a-z_%+=&]{0,6}",
        ];
        let value = prop_oneof![
            2 => any::<String>().prop_map(|v| url::form_urlencoded::byte_serialize(v.as_bytes()).collect::<String>()),
            2 => "[a-zA-Z0-9%+=&:/._~-]{0,16}",
        ];
        let pairs = prop::collection::vec((name, prop::option::of(value)), 0..8).prop_map(|pairs| {
            pairs
                .into_iter()
                .map(|(name, value)| match value {
                    Some(value) => format!("{name}={value}"),
                    None => name,
                })
                .collect::<Vec<_>>()
                .join("&")
        });
        let authorization = prop::option::of(prop_oneof![
            "Basic [A-Za-z0-9+/=]{0,32}",
            "(basic|BASIC|Bearer) {0,2}[A-Za-z0-9+/=%:]{0,16}",
            any::<String>(),
        ]);
        prop_oneof![
            6 => (authorization, pairs).prop_map(|(authorization, pairs)| match authorization {
                Some(value) => format!("{value}\n{pairs}").into_bytes(),
                None => pairs.into_bytes(),
            }),
            1 => any::<Vec<u8>>(),
        ]
    }

    fn check(input: &[u8]) -> Result<(), TestCaseError> {
        let pairs: Vec<(String, String)> = url::form_urlencoded::parse(input).into_owned().collect();
        let count = |name: &str| pairs.iter().filter(|(n, _)| n == name).count();
        for may_repeat in [&[][..], &["resource"][..]] {
            match Params::parse(input, may_repeat) {
                Ok(params) => {
                    for (name, value) in &pairs {
                        prop_assert!(params.contains(name));
                        if may_repeat.contains(&name.as_str()) {
                            prop_assert_eq!(params.get(name), None);
                            prop_assert_eq!(value.is_empty(), !params.all(name).contains(value));
                        } else {
                            prop_assert_eq!(count(name), 1, "{:?} repeated but accepted", name);
                            prop_assert_eq!(params.get(name), Some(value.as_str()));
                            prop_assert_eq!(params.value(name), value.clone());
                        }
                    }
                    // Values never reach Debug output: it is the same with every value blanked.
                    // (A search for each value in it is not: `\u{7f}` ends in `}`.)
                    let blanked = url::form_urlencoded::Serializer::new(String::new())
                        .extend_pairs(pairs.iter().map(|(name, _)| (name.as_str(), "")))
                        .finish();
                    let blank = Params::parse(blanked.as_bytes(), may_repeat).expect("the same names parse the same");
                    prop_assert_eq!(format!("{params:?}"), format!("{blank:?}"));
                }
                Err(DuplicateParam(name)) => {
                    prop_assert!(!may_repeat.contains(&name.as_str()));
                    prop_assert!(count(&name) >= 2, "{:?} refused as repeated", name);
                }
            }
        }
        Ok(())
    }

    #[test]
    fn oauth_params() {
        fuzz::run("oauth", file!(), query(), check);
    }
}
