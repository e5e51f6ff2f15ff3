//! The interop matrix: what passed, by client × protocol revision × store,
//! written to `tests/artifacts/interop/matrix.md` (and `.json`). Each store's
//! run records its cells; the matrix is rebuilt from every store's cells, so
//! whichever run ends last writes the whole table.

use std::path::PathBuf;
use std::sync::Mutex;

use serde_json::{Value, json};

use crate::support::tools;

/// How one cell went.
#[derive(Debug, Clone)]
pub enum Outcome {
    Pass(String),
    Fail(String),
}

impl Outcome {
    fn label(&self) -> &'static str {
        match self {
            Self::Pass(_) => "pass",
            Self::Fail(_) => "FAIL",
        }
    }

    pub fn detail(&self) -> &str {
        match self {
            Self::Pass(d) | Self::Fail(d) => d,
        }
    }
}

/// One client at one revision on one store.
#[derive(Debug, Clone)]
pub struct Cell {
    pub client: String,
    pub revision: String,
    pub store: String,
    pub outcome: Outcome,
}

impl Cell {
    pub fn new(client: &str, revision: &str, outcome: Outcome) -> Self {
        Self {
            client: client.into(),
            revision: revision.into(),
            store: String::new(),
            outcome,
        }
    }
}

/// A conformance run (`{exitCode, checks: [{scenario, id, status, errorMessage}]}`):
/// passed when it exited 0 and every failed check is a known one
/// (`scenario:id` in `known`, the expected-failures baseline the suite was given).
pub fn judge_checks(result: &Value, known: &[String]) -> Outcome {
    if let Some(error) = result["browserError"].as_str() {
        return Outcome::Fail(format!("browser step: {error}"));
    }
    let checks = result["checks"].as_array().cloned().unwrap_or_default();
    let key = |c: &Value| format!("{}:{}", c["scenario"].as_str().unwrap_or(""), c["id"].as_str().unwrap_or("?"));
    let failed: Vec<&Value> = checks.iter().filter(|c| c["status"] == "FAILURE").collect();
    let (expected, unexpected): (Vec<&Value>, Vec<&Value>) = failed.into_iter().partition(|c| known.contains(&key(c)));
    if !unexpected.is_empty() {
        let lines: Vec<String> = unexpected
            .iter()
            .map(|c| format!("{}: {}", key(c), c["errorMessage"].as_str().unwrap_or("")))
            .collect();
        return Outcome::Fail(lines.join("; "));
    }
    if checks.is_empty() {
        return Outcome::Fail(format!("no checks ran (exit {})", result["exitCode"]));
    }
    if result["exitCode"] != 0 {
        return Outcome::Fail(format!(
            "exit {} (a known failure that now passes? remove it from tests/interop/expected-failures.yml)",
            result["exitCode"]
        ));
    }
    let passed = checks.iter().filter(|c| c["status"] == "SUCCESS").count();
    let mut detail = format!("{passed} checks passed");
    if !expected.is_empty() {
        detail.push_str(&format!(
            ", {} known failures (tests/interop/expected-failures.yml)",
            expected.len()
        ));
    }
    let warnings: Vec<String> = checks.iter().filter(|c| c["status"] == "WARNING").map(key).collect();
    if !warnings.is_empty() {
        detail.push_str(&format!(", warnings: {}", warnings.join(", ")));
    }
    Outcome::Pass(detail)
}

/// The `scenario:check` entries of the expected-failures baseline.
pub fn known_failures(file: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- "))
        .map(|l| l.split('#').next().unwrap_or_default().trim().to_owned())
        .collect()
}

fn folder() -> PathBuf {
    tools::repo().join("tests/artifacts/interop")
}

static WRITING: Mutex<()> = Mutex::new(());

/// Records `store`'s cells and rebuilds the matrix from every store's.
pub fn record(store: &str, cells: &[Cell]) {
    let _guard = WRITING.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let dir = folder();
    std::fs::create_dir_all(&dir).expect("artifacts folder");
    let json: Vec<Value> = cells
        .iter()
        .map(|c| json!({"client": c.client, "revision": c.revision, "store": c.store, "outcome": c.outcome.label(), "detail": c.outcome.detail()}))
        .collect();
    std::fs::write(
        dir.join(format!("cells-{store}.json")),
        serde_json::to_vec_pretty(&json).expect("json"),
    )
    .expect("write cells");

    let mut all: Vec<Value> = Vec::new();
    for store in ["sqlite", "postgres"] {
        if let Ok(text) = std::fs::read_to_string(dir.join(format!("cells-{store}.json"))) {
            all.extend(serde_json::from_str::<Vec<Value>>(&text).unwrap_or_default());
        }
    }
    std::fs::write(dir.join("matrix.json"), serde_json::to_vec_pretty(&all).expect("json")).expect("write matrix");
    std::fs::write(dir.join("matrix.md"), markdown(&all)).expect("write matrix");
}

fn markdown(all: &[Value]) -> String {
    let mut rows: Vec<(String, String)> = Vec::new();
    for cell in all {
        let key = (
            cell["client"].as_str().unwrap_or_default().to_owned(),
            cell["revision"].as_str().unwrap_or_default().to_owned(),
        );
        if !rows.contains(&key) {
            rows.push(key);
        }
    }
    let find = |client: &str, revision: &str, store: &str| {
        all.iter()
            .find(|c| c["client"] == client && c["revision"] == revision && c["store"] == store)
            .map(|c| c["outcome"].as_str().unwrap_or("?").to_owned())
            .unwrap_or_else(|| "not run".into())
    };
    let mut out =
        String::from("# Interop matrix\n\nWritten by `cargo test --test it interop -- --ignored` (tests/it/interop.rs).\n\n");
    out.push_str("| Client | Revision | SQLite | PostgreSQL |\n|---|---|---|---|\n");
    for (client, revision) in &rows {
        out.push_str(&format!(
            "| {client} | {revision} | {} | {} |\n",
            find(client, revision, "sqlite"),
            find(client, revision, "postgres")
        ));
    }
    out.push_str("\n## Details\n\n");
    for cell in all {
        out.push_str(&format!(
            "- {} × {} × {}: **{}** — {}\n",
            cell["client"].as_str().unwrap_or_default(),
            cell["revision"].as_str().unwrap_or_default(),
            cell["store"].as_str().unwrap_or_default(),
            cell["outcome"].as_str().unwrap_or_default(),
            cell["detail"].as_str().unwrap_or_default()
        ));
    }
    out
}
