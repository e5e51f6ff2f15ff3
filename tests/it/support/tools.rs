//! External tools some tests drive (grpcurl, node with playwright-core and
//! chromium, the Python MCP SDK). `.ci/run` installs them; elsewhere a test
//! without its tool skips with a loud message, and under `CI=true` it fails.

use std::path::{Path, PathBuf};

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The first candidate that exists (or answers on PATH), else a loud skip (or a CI failure).
pub fn require(what: &str, candidates: &[PathBuf]) -> Option<PathBuf> {
    for candidate in candidates {
        let on_path = candidate.components().count() == 1;
        if (on_path && std::process::Command::new(candidate).arg("--version").output().is_ok()) || candidate.exists() {
            return Some(candidate.clone());
        }
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("CI=true and {what} is missing (.ci/run installs it)");
    }
    eprintln!("\n!!!!!!!!!! SKIPPING: {what} not found (run .ci/run once to install it) !!!!!!!!!!\n");
    None
}

/// The project's Python (with the `mcp` SDK and grpcurl), installed by `.ci/run` in `.tools/py`.
pub fn python() -> Option<PathBuf> {
    let python = repo().join(".tools/py/bin/python");
    let has_sdk = python.exists()
        && std::process::Command::new(&python)
            .args(["-c", "import mcp"])
            .output()
            .is_ok_and(|o| o.status.success());
    require(
        "Python with the mcp SDK (.tools/py)",
        &if has_sdk { vec![python] } else { vec![] },
    )
}

/// Node with `tests/browser/node_modules/playwright-core` and Debian's chromium.
pub fn node_with_playwright() -> Option<PathBuf> {
    let ready = repo().join("tests/browser/node_modules/playwright-core").exists() && Path::new("/usr/bin/chromium").exists();
    require(
        "node with playwright-core (tests/browser) and /usr/bin/chromium",
        &if ready { vec![PathBuf::from("node")] } else { vec![] },
    )
}

/// grpcurl: `GATEHOUSE_GRPCURL`, `.tools/py/bin/grpcurl` or PATH.
pub fn grpcurl() -> Option<PathBuf> {
    let mut candidates: Vec<PathBuf> = std::env::var_os("GATEHOUSE_GRPCURL").map(PathBuf::from).into_iter().collect();
    candidates.push(repo().join(".tools/py/bin/grpcurl"));
    candidates.push(PathBuf::from("grpcurl"));
    require("grpcurl", &candidates)
}

/// Node with `tests/sdk/typescript/node_modules/@modelcontextprotocol/sdk` (`.ci/run` runs `npm ci` there).
pub fn node_with_mcp_sdk() -> Option<PathBuf> {
    let ready = repo()
        .join("tests/sdk/typescript/node_modules/@modelcontextprotocol/sdk")
        .exists();
    require(
        "node with @modelcontextprotocol/sdk (tests/sdk/typescript)",
        &if ready { vec![PathBuf::from("node")] } else { vec![] },
    )
}
