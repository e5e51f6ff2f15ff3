//! Architecture invariants as tests (ARCHITECTURE.md states them): each
//! concern lives in one place, so a review of SQL, cryptography or gRPC
//! clients reads one module.

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// Files under `dir` (except those `allowed` by path suffix) that mention any of `needles`.
fn offenders(dir: &str, needles: &[&str], allowed: &[&str]) -> Vec<String> {
    let mut found = Vec::new();
    for file in rust_files(&root().join(dir)) {
        let rel = file.strip_prefix(root()).unwrap().display().to_string();
        if allowed.iter().any(|a| rel.ends_with(a) || rel.contains(&format!("/{a}/"))) {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap();
        for needle in needles {
            if text.contains(needle) {
                found.push(format!("{rel} mentions {needle:?}"));
            }
        }
    }
    found
}

#[test]
fn data_plane_holds_no_database_no_vault_and_no_control_plane_code() {
    let found = offenders(
        "data-plane/src",
        &["sqlx", "aes_gcm", "gatehouse_control_plane", "control_plane::"],
        &[],
    );
    assert!(found.is_empty(), "{found:#?}");
}

#[test]
fn control_plane_serves_no_http_pages() {
    let found = offenders("control-plane/src", &["axum::", "askama"], &[]);
    assert!(found.is_empty(), "{found:#?}");
}

#[test]
fn only_the_store_writes_sql() {
    let found = offenders(
        "control-plane/src",
        &["sqlx::query", "INSERT INTO", "UPDATE ", "DELETE FROM", "SELECT "],
        &["store"],
    );
    assert!(found.is_empty(), "{found:#?}");
}

#[test]
fn only_the_vault_touches_aes_gcm() {
    let found = offenders("control-plane/src", &["aes_gcm"], &["vault.rs"]);
    assert!(found.is_empty(), "{found:#?}");
}

#[test]
fn only_cp_client_is_a_grpc_client_in_the_data_plane() {
    let found = offenders(
        "data-plane/src",
        &["service_client", "health_client", "transport::Channel"],
        &["cp_client.rs", "cp_client", "pb.rs"],
    );
    assert!(found.is_empty(), "{found:#?}");
}

#[test]
fn only_outbound_makes_http_requests_from_the_control_plane() {
    let found = offenders(
        "control-plane/src",
        &["reqwest::Client", "reqwest::get", "ClientBuilder"],
        &["outbound.rs"],
    );
    assert!(found.is_empty(), "{found:#?}");
}

/// The code of `text` outside its `#[cfg(test)]` modules (which sit at the end
/// of a file here).
fn non_test_code(text: &str) -> &str {
    let mut end = text.len();
    let mut from = 0;
    while let Some(at) = text[from..].find("#[cfg(test)]") {
        let at = from + at;
        let rest = text[at + "#[cfg(test)]".len()..].trim_start();
        if rest.starts_with("mod ") || rest.starts_with("pub(crate) mod ") || rest.starts_with("pub mod ") {
            end = at;
            break;
        }
        from = at + 1;
    }
    &text[..end]
}

/// Words that name a secret, or the hash that stands for one.
const SECRET_WORDS: &[&str] = &[
    "secret",
    "hash",
    "csrf",
    "verifier",
    "nonce",
    "password",
    "presented",
    "virtual_key",
    "access_token",
    "refresh_token",
    "browser_key",
];

/// `==` and `!=` whose operand (the path or call right beside the operator)
/// names a secret: a comparison that stops at the first differing byte.
fn variable_time_secret_comparisons(line: &str) -> Vec<String> {
    let code = line.split("//").next().unwrap_or_default();
    let operand_char = |c: char| c.is_ascii_alphanumeric() || "_.:()&*[]".contains(c);
    let mut found = Vec::new();
    for (at, op) in code.match_indices("==").chain(code.match_indices("!=")) {
        let before = &code[..at];
        if before.ends_with(['=', '!', '<', '>']) || code[at + 2..].starts_with(['=', '>']) {
            continue;
        }
        let left: String = before.trim_end().chars().rev().take_while(|c| operand_char(*c)).collect();
        let left: String = left.chars().rev().collect();
        let right: String = code[at + 2..].trim_start().chars().take_while(|c| operand_char(*c)).collect();
        for operand in [left, right] {
            // A length is not the secret; a constant (`GRANT_REFRESH_TOKEN`) is none.
            let last = operand.rsplit("::").next().unwrap_or_default();
            if operand.ends_with(".len()") || last.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_') {
                continue;
            }
            let lower = operand.to_ascii_lowercase();
            if SECRET_WORDS.iter().any(|w| lower.contains(w)) {
                found.push(format!("{operand} {op}"));
            }
        }
    }
    found
}

#[test]
fn secrets_are_compared_in_constant_time() {
    // The detector itself: it must see the comparisons it exists for.
    for line in [
        "if row.browser_secret_hash == browser_secret.hash() {",
        "    && expected.nonce_hash != secret::hash(nonce)",
        "if csrf::expected(&cookie) == form.csrf {",
        "let ok = presented == stored;",
    ] {
        assert!(!variable_time_secret_comparisons(line).is_empty(), "missed {line:?}");
    }
    for line in [
        "if secret::constant_time_eq(hash, &presented_hash) {",
        "if m == \"client_secret_basic\" {",
        "let access_first = request.token_type_hint == \"access_token\";",
        "if method != AuthMethod::None && secret.is_none() {",
        "Some(v) => v.len() >= 8, // secret == x in a comment",
        "expected.len() == presented.len() && bool::from(expected.as_bytes().ct_eq(presented.as_bytes()))",
        "if grant != GRANT_AUTHORIZATION_CODE && grant != GRANT_REFRESH_TOKEN {",
    ] {
        assert_eq!(variable_time_secret_comparisons(line), Vec::<String>::new(), "{line:?}");
    }

    let mut found = Vec::new();
    for dir in ["data-plane/src", "control-plane/src"] {
        for file in rust_files(&root().join(dir)) {
            let rel = file.strip_prefix(root()).unwrap().display().to_string();
            let text = std::fs::read_to_string(&file).unwrap();
            for (i, line) in non_test_code(&text).lines().enumerate() {
                for what in variable_time_secret_comparisons(line) {
                    found.push(format!("{rel}:{}: {what}: {}", i + 1, line.trim()));
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "compare secrets with secret::constant_time_eq (control plane) or subtle's ct_eq (data plane): {found:#?}"
    );

    // Where secrets are compared, they go through the constant-time helpers.
    for (file, helper) in [
        ("control-plane/src/secret.rs", ".ct_eq("),
        ("control-plane/src/flows.rs", "constant_time_eq("),
        ("control-plane/src/grants.rs", "constant_time_eq("),
        ("control-plane/src/clients.rs", "constant_time_eq("),
        ("control-plane/src/grpc/mod.rs", "constant_time_eq("),
        ("control-plane/src/sign_in.rs", "constant_time_eq("),
        ("control-plane/src/connections.rs", "constant_time_eq("),
        ("control-plane/src/connect_links.rs", "constant_time_eq("),
        ("data-plane/src/consent/csrf.rs", ".ct_eq("),
        ("data-plane/src/consent/onward.rs", ".ct_eq("),
    ] {
        let text = std::fs::read_to_string(root().join(file)).unwrap();
        assert!(non_test_code(&text).contains(helper), "{file} no longer uses {helper}");
    }
}
