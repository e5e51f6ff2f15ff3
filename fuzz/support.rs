//! Time-bounded property runs over a corpus kept in the repository: how
//! Gatehouse fuzzes its parsers (SECURITY.md, "Fuzzing"). Included by path, in
//! tests only, into the crates whose parsers it exercises, so the targets can
//! call crate-private functions.
//!
//! [`run`] replays every file of `fuzz/corpus/<target>/` first, then the
//! failures proptest saved beside the calling source file
//! (`proptest-regressions/`), then generated cases: one batch (256, or
//! `PROPTEST_CASES`) in a plain `cargo test`, and batch after batch until
//! `GATEHOUSE_FUZZ_SECONDS` have passed when that is set (`.ci/run`). A panic
//! or a failed check is a failure, shrunk to a small input and saved.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use proptest::strategy::Strategy;
use proptest::test_runner::{Config, FileFailurePersistence, TestCaseError, TestRunner};

/// The seed inputs of `target`, by file name.
pub(crate) fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus").join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("a directory entry").path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{} holds no seed", dir.display());
    files
        .into_iter()
        .map(|path| {
            let name = path.file_name().expect("a file name").to_string_lossy().into_owned();
            let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            (name, bytes)
        })
        .collect()
}

/// Runs `check` over the corpus of `target`, then over inputs from `strategy`
/// (see the module documentation). `source_file` is the caller's `file!()`.
pub(crate) fn run<S>(target: &str, source_file: &'static str, strategy: S, check: impl Fn(&[u8]) -> Result<(), TestCaseError>)
where
    S: Strategy<Value = Vec<u8>>,
{
    let seeds = corpus(target);
    for (name, bytes) in &seeds {
        if let Err(err) = check(bytes) {
            panic!("fuzz/corpus/{target}/{name}: {err}");
        }
    }
    let budget = std::env::var("GATEHOUSE_FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .map(Duration::from_secs);
    let started = Instant::now();
    let mut cases = 0u64;
    loop {
        let config = Config {
            failure_persistence: Some(Box::new(FileFailurePersistence::SourceParallel("proptest-regressions"))),
            source_file: Some(source_file),
            ..Config::default()
        };
        cases += u64::from(config.cases);
        // A new runner each batch: a new random seed, and saved failures replayed first.
        let mut runner = TestRunner::new(config);
        if let Err(err) = runner.run(&strategy, |bytes| check(&bytes)) {
            panic!("fuzz target {target}: {err}");
        }
        if budget.is_none_or(|budget| started.elapsed() >= budget) {
            break;
        }
    }
    if budget.is_some() {
        let test = std::thread::current().name().unwrap_or(target).to_owned();
        eprintln!(
            "{test}: {} inputs of fuzz/corpus/{target} and {cases} generated inputs in {:.1?}, no failure",
            seeds.len(),
            started.elapsed()
        );
    }
}
