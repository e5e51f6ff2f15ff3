//! Names as clients see them: every tool and prompt of service `notes` appears
//! as `notes__<upstream name>`, within the `^[a-zA-Z0-9_-]{1,64}$` rule clients
//! enforce.
//!
//! Service names are `[a-z0-9-]`, so the first `__` always ends the service.
//! An upstream name that would break the rule (too long, other characters) is
//! shortened and suffixed with a hash of the original; routing recomputes
//! `exposed()` over the service's upstream list, so the mapping is reversible
//! without storing anything.

use sha2::{Digest as _, Sha256};

/// Between the service and the upstream name.
pub const SEPARATOR: &str = "__";
/// The longest name clients accept.
pub const MAX_LEN: usize = 64;

fn allowed(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-'
}

/// The name clients see for `upstream` of `service`.
pub fn exposed(service: &str, upstream: &str) -> String {
    let plain = format!("{service}{SEPARATOR}{upstream}");
    if plain.len() <= MAX_LEN && !upstream.is_empty() && upstream.chars().all(allowed) {
        return plain;
    }
    // Shortened form: service, separator, a sanitised prefix, `-`, 8 hex of the hash.
    let digest = Sha256::digest(upstream.as_bytes());
    let hash: String = digest.iter().take(4).map(|b| format!("{b:02x}")).collect();
    let room = MAX_LEN.saturating_sub(service.len() + SEPARATOR.len() + 1 + hash.len());
    let sanitised: String = upstream
        .chars()
        .map(|c| if allowed(c) { c } else { '_' })
        .take(room)
        .collect();
    format!("{service}{SEPARATOR}{sanitised}-{hash}")
}

/// The service a client-side name belongs to, and the rest of the name.
pub fn service_of(exposed: &str) -> Option<(&str, &str)> {
    let (service, rest) = exposed.split_once(SEPARATOR)?;
    let valid_service = !service.is_empty()
        && service
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    (valid_service && !rest.is_empty()).then_some((service, rest))
}

/// Finds the upstream name among `upstream_names` that `exposed` stands for.
pub fn resolve<'a>(service: &str, exposed_name: &str, upstream_names: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    upstream_names.into_iter().find(|name| exposed(service, name) == exposed_name)
}

/// Whether the part after the separator may be a shortened name (ends in
/// `-` and 8 hex digits). Such a name may also be a plain upstream name, so
/// routing asks the catalogue first.
pub fn may_be_shortened(rest: &str) -> bool {
    let bytes = rest.as_bytes();
    bytes.len() > 9 && bytes[bytes.len() - 9] == b'-' && bytes[bytes.len() - 8..].iter().all(|b| b.is_ascii_hexdigit())
}

/// Whether a name satisfies the rule clients enforce.
#[cfg(test)]
pub fn is_valid(name: &str) -> bool {
    !name.is_empty() && name.len() <= MAX_LEN && name.chars().all(allowed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_names_are_prefixed_and_split_back() {
        assert_eq!(exposed("notes", "search"), "notes__search");
        assert_eq!(service_of("notes__search"), Some(("notes", "search")));
        assert_eq!(service_of("notes__get__page"), Some(("notes", "get__page")));
        assert_eq!(service_of("search"), None);
        assert_eq!(service_of("Notes__x"), None);
        assert_eq!(service_of("notes__"), None);
    }

    #[test]
    fn awkward_names_stay_valid_unique_and_resolvable() {
        let long = "a".repeat(80);
        let names = ["files.read", "files/read", long.as_str(), "ok_name", "ünïcode"];
        let exposed_names: Vec<String> = names.iter().map(|n| exposed("github-enterprise", n)).collect();
        for (name, shown) in names.iter().zip(&exposed_names) {
            assert!(is_valid(shown), "{shown:?} breaks the rule");
            assert_eq!(resolve("github-enterprise", shown, names.iter().copied()), Some(*name));
        }
        assert_ne!(
            exposed_names[0], exposed_names[1],
            "names differing in a replaced character stay distinct"
        );
        for shown in &exposed_names[..3] {
            assert!(may_be_shortened(service_of(shown).unwrap().1), "{shown}");
        }
        assert!(!may_be_shortened("ok_name"));
        assert!(!may_be_shortened("-12345678"));
    }
}
