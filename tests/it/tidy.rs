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
