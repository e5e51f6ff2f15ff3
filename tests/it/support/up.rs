//! `gatehouse up` in-process, as a newcomer runs it: a fresh data directory,
//! both planes on port 0 and the demo upstream.

use gatehouse::commands::up::{self, Up, UpOptions};
use gatehouse::config::Config;

/// The options of `gatehouse up` in `dir`, on port 0.
pub fn options(dir: &std::path::Path) -> UpOptions {
    UpOptions {
        data_dir: dir.to_path_buf(),
        http_addr: "127.0.0.1:0".parse().expect("addr"),
        grpc_addr: "127.0.0.1:0".parse().expect("addr"),
        demo: true,
    }
}

/// A running `gatehouse up` and the temporary data directory it lives in.
pub async fn start() -> (tempfile::TempDir, Up) {
    super::init_logging();
    let dir = tempfile::tempdir().expect("temp dir");
    let running = up::start(Config::default(), &options(dir.path()))
        .await
        .expect("gatehouse up starts");
    (dir, running)
}
