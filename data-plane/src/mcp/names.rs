//! Names as clients see them: every tool and prompt of service `notes` appears
//! as `notes__<upstream name>`, within the `^[a-zA-Z0-9_-]{1,64}$` rule clients
//! enforce.
//!
//! Service names are `[a-z0-9-]`, so the first `__` always ends the service.
//! An upstream name that would break the rule (too long, other characters) is
//! shortened and suffixed with `-` and 8 hex digits of a hash of the original.
//! So that a plain name can never pass for a shortened one, an upstream name
//! that already ends like a shortened one (`-` and 8 hex digits) is shortened
//! too: plain and shortened exposed names are disjoint sets.
//!
//! Security: within one service's catalogue, distinct upstream names get
//! distinct exposed names ([`exposed_all`]), or a client could call one tool
//! by the name of another. Two shortened names can share the 8 hex digits (an
//! upstream can search for such a pair); the catalogue then gives each of them
//! a hash salted with a counter, in sorted order, until no name is taken twice.
//! Routing recomputes the same mapping over the service's catalogue
//! ([`resolve`]), so the mapping is reversible without storing anything.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use sha2::{Digest as _, Sha256};

/// Between the service and the upstream name.
pub const SEPARATOR: &str = "__";
/// The longest name clients accept.
pub const MAX_LEN: usize = 64;
/// Hex digits of the hash that ends a shortened name.
const HASH_HEX: usize = 8;

fn allowed(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-'
}

/// The name clients see for `upstream` of `service`, on its own. Within a
/// catalogue, [`exposed_all`] decides (it differs only for colliding
/// shortened names).
pub fn exposed(service: &str, upstream: &str) -> String {
    let plain = format!("{service}{SEPARATOR}{upstream}");
    if plain.len() <= MAX_LEN && !upstream.is_empty() && upstream.chars().all(allowed) && !may_be_shortened(upstream) {
        return plain;
    }
    shortened(service, upstream, 0)
}

/// Service, separator, a sanitised prefix, `-`, 8 hex of the hash of
/// `upstream` (salted with `salt` when it is not 0).
fn shortened(service: &str, upstream: &str, salt: u32) -> String {
    let mut hasher = Sha256::new();
    if salt != 0 {
        hasher.update(format!("gatehouse-name-salt-{salt}:"));
    }
    hasher.update(upstream.as_bytes());
    let digest = hasher.finalize();
    let hash: String = digest.iter().take(HASH_HEX / 2).map(|b| format!("{b:02x}")).collect();
    let room = MAX_LEN.saturating_sub(service.len() + SEPARATOR.len() + 1 + hash.len());
    let sanitised: String = upstream
        .chars()
        .map(|c| if allowed(c) { c } else { '_' })
        .take(room)
        .collect();
    format!("{service}{SEPARATOR}{sanitised}-{hash}")
}

/// The exposed name of every distinct name of one service's catalogue, no two
/// alike: [`exposed`], except that shortened names sharing an exposed name are
/// given salted hashes instead. Deterministic and independent of the order of
/// the catalogue, so a listing and a later call agree.
pub fn exposed_all<'a>(service: &str, upstream_names: impl IntoIterator<Item = &'a str>) -> BTreeMap<String, String> {
    let distinct: BTreeSet<&str> = upstream_names.into_iter().collect();
    let base: Vec<(&str, String)> = distinct.iter().map(|name| (*name, exposed(service, name))).collect();
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for (_, shown) in &base {
        *counts.entry(shown.as_str()).or_default() += 1;
    }
    let mut taken: HashSet<String> = base.iter().map(|(_, shown)| shown.clone()).collect();
    let mut out = BTreeMap::new();
    for (name, shown) in &base {
        if counts[shown.as_str()] == 1 {
            out.insert((*name).to_owned(), shown.clone());
            continue;
        }
        // Only shortened names collide (plain ones are the upstream name itself,
        // and never look shortened): each of the group gets the first free salt.
        let mut salt = 1;
        let unique = loop {
            let candidate = shortened(service, name, salt);
            if taken.insert(candidate.clone()) {
                break candidate;
            }
            salt += 1;
        };
        out.insert((*name).to_owned(), unique);
    }
    out
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

/// Finds the upstream name among `upstream_names` (one service's catalogue)
/// that `exposed_name` stands for, by [`exposed_all`].
pub fn resolve<'a>(service: &str, exposed_name: &str, upstream_names: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let names: Vec<&'a str> = upstream_names.into_iter().collect();
    let shown = exposed_all(service, names.iter().copied());
    names
        .into_iter()
        .find(|name| shown.get(*name).is_some_and(|s| s == exposed_name))
}

/// Whether the part after the separator may be a shortened name (ends in
/// `-` and 8 hex digits). A plain name never does (such an upstream name is
/// shortened too), so only these need the catalogue to route.
pub fn may_be_shortened(rest: &str) -> bool {
    let bytes = rest.as_bytes();
    bytes.len() > HASH_HEX
        && bytes[bytes.len() - HASH_HEX - 1] == b'-'
        && bytes[bytes.len() - HASH_HEX..].iter().all(|b| b.is_ascii_hexdigit())
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
        assert!(!may_be_shortened("12345678"));
        assert!(may_be_shortened("-12345678"), "an empty upstream name shortens to this");
        assert_eq!(resolve("notes", &exposed("notes", ""), [""]), Some(""));
    }

    #[test]
    fn a_plain_name_that_looks_shortened_never_takes_another_tools_name() {
        // The audit's case: an upstream tool literally named like the shortened
        // form of `files.read` used to be exposed as exactly that form.
        let of_dotted = exposed("files", "files.read");
        let lookalike = service_of(&of_dotted).unwrap().1.to_owned();
        assert_eq!(lookalike.len(), "files_read-".len() + 8);
        let shown = exposed_all("files", ["files.read", lookalike.as_str()]);
        assert_eq!(shown.len(), 2);
        assert_ne!(shown["files.read"], shown[&lookalike], "{shown:?}");
        assert_eq!(shown["files.read"], of_dotted);
        for name in ["files.read", lookalike.as_str()] {
            assert!(is_valid(&shown[name]));
            assert_eq!(resolve("files", &shown[name], [lookalike.as_str(), "files.read"]), Some(name));
        }
        // Dispatch routes a plain-looking name without the catalogue only when
        // it cannot be a shortened one; the look-alike is not such a name.
        assert!(may_be_shortened(&lookalike));
    }

    #[test]
    fn shortened_names_with_the_same_hash_prefix_are_told_apart() {
        // Two names that sanitise alike and whose SHA-256 share the first 4
        // bytes (86e144be), found by a birthday search.
        let (a, b) = ("/./...././.../..........", "//....//..//.././.......");
        assert_eq!(exposed("s", a), exposed("s", b), "a real collision of the context-free form");
        for order in [[a, b], [b, a]] {
            let shown = exposed_all("s", order);
            assert_ne!(shown[a], shown[b]);
            for name in [a, b] {
                assert!(is_valid(&shown[name]), "{shown:?}");
                assert!(may_be_shortened(service_of(&shown[name]).unwrap().1));
                assert_eq!(resolve("s", &shown[name], order), Some(name));
            }
            assert_eq!(shown, exposed_all("s", [a, b]), "independent of the catalogue's order");
        }
    }
}

/// Properties of name exposure over arbitrary catalogues (SECURITY.md): every
/// exposed name is valid, distinct names stay distinct, and each routes back.
#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::*;

    pub(super) fn service() -> impl Strategy<Value = String> {
        "[a-z0-9-]{1,32}"
    }

    /// Upstream names an attacker would pick: plain, odd, long, and the
    /// shortened forms of the others taken literally.
    pub(super) fn catalogue() -> impl Strategy<Value = (String, Vec<String>)> {
        let name = prop_oneof![
            3 => "[a-zA-Z0-9_-]{0,70}",
            2 => "[a-z._/ -]{0,30}",
            1 => any::<String>(),
            1 => "[a-z_]{0,12}-[0-9a-fA-F]{8}",
            1 => prop::sample::select(vec![
                "/./...././.../..........".to_owned(),
                "//....//..//.././.......".to_owned(),
                String::new(),
            ]),
        ];
        (
            service(),
            prop::collection::vec(name, 0..12),
            prop::collection::vec(any::<prop::sample::Index>(), 0..4),
        )
            .prop_map(|(service, mut names, lookalikes)| {
                if !names.is_empty() {
                    for index in lookalikes {
                        let shown = exposed(&service, index.get::<String>(&names));
                        names.push(service_of(&shown).expect("valid").1.to_owned());
                    }
                }
                (service, names)
            })
    }

    /// The checks, shared with the fuzz target.
    pub(super) fn check_catalogue(service: &str, names: &[String]) -> Result<(), TestCaseError> {
        let shown = exposed_all(service, names.iter().map(String::as_str));
        let mut seen = HashSet::new();
        for (name, exposed_name) in &shown {
            prop_assert!(is_valid(exposed_name), "{:?} -> {:?}", name, exposed_name);
            prop_assert!(
                seen.insert(exposed_name.clone()),
                "{:?} exposed twice in {:?}",
                exposed_name,
                shown
            );
            let (service_part, rest) = service_of(exposed_name).expect("a service prefix");
            prop_assert_eq!(service_part, service);
            prop_assert_eq!(
                resolve(service, exposed_name, names.iter().map(String::as_str)),
                Some(name.as_str())
            );
            // Dispatch routes a name that cannot be shortened without the
            // catalogue, as the upstream name after the prefix: that must be
            // the same tool.
            if !may_be_shortened(rest) {
                prop_assert_eq!(rest, name.as_str());
                prop_assert_eq!(&exposed(service, rest), exposed_name);
            }
        }
        prop_assert_eq!(shown.len(), names.iter().collect::<HashSet<_>>().len());
        Ok(())
    }

    proptest! {
        #[test]
        fn any_catalogue_is_exposed_valid_unique_and_reversible((service, names) in catalogue()) {
            check_catalogue(&service, &names)?;
        }

        #[test]
        fn exposure_does_not_depend_on_the_catalogues_order((service, names) in catalogue(), seed in any::<u64>()) {
            let mut shuffled = names.clone();
            let len = shuffled.len();
            if len > 1 {
                for i in 0..len {
                    shuffled.swap(i, (seed as usize).wrapping_add(i * 7) % len);
                }
            }
            prop_assert_eq!(
                exposed_all(&service, names.iter().map(String::as_str)),
                exposed_all(&service, shuffled.iter().map(String::as_str))
            );
        }
    }
}

/// The fuzz target `names` (SECURITY.md, "Fuzzing"): a catalogue as JSON
/// `{"service": .., "names": [..]}`, or any bytes as one name a line of
/// service `svc`.
#[cfg(test)]
mod fuzz_targets {
    use proptest::prelude::*;

    use super::properties::{catalogue, check_catalogue};
    use crate::mcp::jsonrpc::fuzz;

    #[derive(serde::Serialize, serde::Deserialize)]
    struct Input {
        service: String,
        names: Vec<String>,
    }

    fn check(bytes: &[u8]) -> Result<(), TestCaseError> {
        let input = match serde_json::from_slice::<Input>(bytes) {
            Ok(input)
                if !input.service.is_empty()
                    && input.service.len() <= 32
                    && input
                        .service
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') =>
            {
                input
            }
            _ => Input {
                service: "svc".into(),
                names: String::from_utf8_lossy(bytes).split('\n').map(str::to_owned).collect(),
            },
        };
        check_catalogue(&input.service, &input.names)
    }

    #[test]
    fn names() {
        let strategy = prop_oneof![
            4 => catalogue().prop_map(|(service, names)| serde_json::to_vec(&Input { service, names }).unwrap()),
            1 => any::<Vec<u8>>(),
        ];
        fuzz::run("names", file!(), strategy, check);
    }
}
