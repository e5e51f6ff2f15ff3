//! `gatehouse up` as a child process whose whole log (stderr) is kept, for
//! tests that read what an operator's log would hold. The banner on stdout
//! names the addresses, the demo upstream and the admin credential.

use std::io::{BufRead as _, BufReader, Read as _};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

/// A running `gatehouse up`; killed on drop, stopped with SIGTERM by [`UpProcess::stop`].
pub struct UpProcess {
    child: Child,
    log: Arc<Mutex<Vec<u8>>>,
    log_reader: Option<std::thread::JoinHandle<()>>,
    /// The issuer and base of every HTTP route.
    pub public_url: String,
    /// The control plane's gRPC URL (`http://…`).
    pub grpc_url: String,
    /// The demo upstream's base URL (its MCP endpoint is `{demo_base}/mcp`).
    pub demo_base: String,
    /// The development admin credential the banner shows.
    pub admin_credential: String,
    /// The control plane's `/metrics` URL, when `control_plane.metrics_listen` is set.
    pub control_plane_metrics: Option<String>,
}

impl UpProcess {
    /// Starts `gatehouse up` on port 0 in `data_dir` with `RUST_LOG=rust_log`.
    pub fn start(data_dir: &Path, rust_log: &str) -> Self {
        Self::start_with(data_dir, rust_log, &[])
    }

    /// [`UpProcess::start`] with more environment variables (`GATEHOUSE_…` settings).
    pub fn start_with(data_dir: &Path, rust_log: &str, env: &[(&str, &str)]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_gatehouse"))
            .args(["up", "--http-addr", "127.0.0.1:0", "--grpc-addr", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .env("RUST_LOG", rust_log)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("gatehouse up starts");
        let log: Arc<Mutex<Vec<u8>>> = Arc::default();
        let mut stderr = child.stderr.take().expect("stderr");
        let sink = log.clone();
        // Keep reading, so the child never blocks on a full pipe.
        let log_reader = std::thread::spawn(move || {
            let mut chunk = [0u8; 64 * 1024];
            while let Ok(n) = stderr.read(&mut chunk) {
                if n == 0 {
                    break;
                }
                sink.lock().expect("log").extend_from_slice(&chunk[..n]);
            }
        });
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let (mut public_url, mut grpc_url, mut demo_base, mut admin_credential) =
            (String::new(), String::new(), String::new(), String::new());
        let mut control_plane_metrics = None;
        for line in lines.by_ref() {
            let line = line.expect("banner line");
            let words: Vec<&str> = line.split_whitespace().collect();
            match words.as_slice() {
                ["gRPC", addr, ..] => grpc_url = format!("http://{addr}"),
                ["Health", url, ..] => public_url = url.trim_end_matches("/healthz").to_owned(),
                ["Demo", "upstream", url, ..] => demo_base = url.trim_end_matches("/mcp").to_owned(),
                ["Admin", "credential", "(development):", credential] => admin_credential = (*credential).to_owned(),
                ["Metrics", url, "(control", "plane)"] => control_plane_metrics = Some((*url).to_owned()),
                ["Try:", ..] => break,
                _ => {}
            }
        }
        std::thread::spawn(move || lines.for_each(drop));
        assert!(
            !public_url.is_empty() && !grpc_url.is_empty() && !demo_base.is_empty() && !admin_credential.is_empty(),
            "the banner names the public URL, gRPC, the demo upstream and the admin credential"
        );
        Self {
            child,
            log,
            log_reader: Some(log_reader),
            public_url,
            grpc_url,
            demo_base,
            admin_credential,
            control_plane_metrics,
        }
    }

    /// Stops the process with SIGTERM and returns everything it logged.
    pub fn stop(mut self) -> String {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let exited = self.child.wait().expect("wait for gatehouse up");
        if let Some(reader) = self.log_reader.take() {
            let _ = reader.join();
        }
        assert!(exited.success(), "gatehouse up stops cleanly on SIGTERM: {exited}");
        let log = String::from_utf8_lossy(&self.log.lock().expect("log")).into_owned();
        // Its stderr is a pipe, not a terminal: no colour escapes, which could
        // also split a search of the log.
        assert!(!log.contains('\u{1b}'), "a log written to a pipe carries no ANSI escapes");
        log
    }
}

impl Drop for UpProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
