//! `ProcessFleet`: the split deployment as an operator runs it. Control planes
//! and data planes are separate `gatehouse control-plane` / `gatehouse
//! data-plane` processes on loopback, each with its own config file, sharing
//! one PostgreSQL database (a schema of the machine's server, or a private
//! server from [`PrivatePostgres`]). Tests kill, stop and restart them.
//!
//! Every plane gets a port chosen up front ([`free_port`]), so a restarted
//! plane comes back at the address the others know. The demo upstream runs in the test process.

use std::io::{BufRead as _, BufReader, Read as _};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use sha2::{Digest as _, Sha256};

use super::db::random_hex;
use super::fleet::Edge;

/// How to build a process fleet.
pub struct ProcessFleetBuilder {
    control_planes: usize,
    data_planes: usize,
    database_url: String,
    /// Extra TOML appended to every control plane's file (e.g. `[[mcp_servers]]`).
    control_plane_toml: String,
    caller_cache_seconds: i64,
}

impl ProcessFleetBuilder {
    /// TOML appended to each control plane's config file.
    pub fn control_plane_toml(mut self, toml: &str) -> Self {
        self.control_plane_toml.push_str(toml);
        self
    }

    /// How long data planes may cache a resolved caller.
    pub fn caller_cache_seconds(mut self, seconds: i64) -> Self {
        self.caller_cache_seconds = seconds;
        self
    }

    pub fn start(self) -> ProcessFleet {
        let dir = tempfile::tempdir().expect("temp dir");
        let reserve = || SocketAddr::from(([127, 0, 0, 1], free_port()));
        let cp_addrs: Vec<SocketAddr> = (0..self.control_planes).map(|_| reserve()).collect();
        let dp_addrs: Vec<SocketAddr> = (0..self.data_planes).map(|_| reserve()).collect();
        let urls: Vec<String> = dp_addrs.iter().map(|a| format!("http://{a}")).collect();
        let issuer = urls[0].clone();
        let cp_urls: Vec<String> = cp_addrs.iter().map(|a| format!("http://{a}")).collect();

        let secrets = Secrets {
            data_plane: format!("gh_svc_{}", random_hex(32)),
            admin: format!("gh_adm_{}", random_hex(32)),
            token_reader: format!("gh_svc_{}", random_hex(32)),
        };
        let key = base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 32]>());
        std::fs::write(dir.path().join("vault.keys"), format!("k1 {key}\n")).expect("vault key file");

        let mut fleet = ProcessFleet {
            edge: Edge { urls, issuer },
            cp_urls,
            cp_addrs,
            dp_addrs,
            admin_token: secrets.admin.clone(),
            token_reader_token: secrets.token_reader.clone(),
            data_plane_token: secrets.data_plane.clone(),
            control_planes: Vec::new(),
            data_planes: Vec::new(),
            dir,
        };
        for i in 0..self.control_planes {
            let path = fleet.dir.path().join(format!("control-plane-{i}.toml"));
            std::fs::write(&path, self.control_plane_file(&fleet, i, &secrets)).expect("write config");
        }
        for i in 0..self.data_planes {
            let path = fleet.dir.path().join(format!("data-plane-{i}.toml"));
            std::fs::write(&path, self.data_plane_file(&fleet, i)).expect("write config");
        }
        for i in 0..self.control_planes {
            let plane = fleet.spawn_control_plane(i);
            fleet.control_planes.push(Some(plane));
        }
        for i in 0..self.data_planes {
            let plane = fleet.spawn_data_plane(i);
            fleet.data_planes.push(Some(plane));
        }
        fleet
    }

    fn control_plane_file(&self, fleet: &ProcessFleet, i: usize, secrets: &Secrets) -> String {
        let hash = |s: &str| hex(&Sha256::digest(s.as_bytes()));
        format!(
            r#"public_url = "{issuer}"

[log]
format = "json"
filter = "info"

[control_plane]
listen = "{listen}"
database_url = "{database_url}"

[control_plane.vault]
key_file = "{keys}"

[control_plane.outbound]
allow_loopback = true

[control_plane.lifetimes]
caller_cache = {caller_cache}

[[control_plane.callers]]
name = "data-planes"
role = "data-plane"
token_sha256 = "{dp}"

[[control_plane.callers]]
name = "operator"
role = "admin"
token_sha256 = "{admin}"

[[control_plane.callers]]
name = "sync-service"
role = "token-reader"
token_sha256 = "{reader}"

{extra}
"#,
            issuer = fleet.issuer,
            listen = fleet.cp_addrs[i],
            database_url = self.database_url,
            keys = fleet.dir.path().join("vault.keys").display(),
            caller_cache = self.caller_cache_seconds,
            dp = hash(&secrets.data_plane),
            admin = hash(&secrets.admin),
            reader = hash(&secrets.token_reader),
            extra = self.control_plane_toml,
        )
    }

    fn data_plane_file(&self, fleet: &ProcessFleet, i: usize) -> String {
        let urls: Vec<String> = fleet.cp_urls.iter().map(|u| format!("\"{u}\"")).collect();
        format!(
            r#"public_url = "{issuer}"

[log]
format = "json"
filter = "info"

[data_plane]
listen = "{listen}"

[data_plane.control_plane]
urls = [{urls}]
deadline_ms = 3000
"#,
            issuer = fleet.issuer,
            listen = fleet.dp_addrs[i],
            urls = urls.join(", "),
        )
    }
}

struct Secrets {
    data_plane: String,
    admin: String,
    token_reader: String,
}

/// A free loopback port below the kernel's ephemeral range, so no outgoing
/// connection and no other test's port-0 listener can take it between now and
/// the moment the plane binds it (and a restarted plane finds it free again).
/// Never the same port twice in this test binary.
pub fn free_port() -> u16 {
    static HANDED_OUT: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    let ephemeral_low: u16 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse().ok())
        .unwrap_or(32768);
    let (low, high) = (10_000u16, ephemeral_low.saturating_sub(1).max(10_001));
    let mut handed_out = HANDED_OUT.lock().expect("ports");
    for _ in 0..1000 {
        let port = low + rand::random::<u16>() % (high - low);
        if !handed_out.contains(&port) && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            handed_out.push(port);
            return port;
        }
    }
    panic!("no free port between {low} and {high}");
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The running fleet. Dropping it kills every process.
pub struct ProcessFleet {
    edge: Edge,
    /// Every control plane's gRPC URL, in start order.
    pub cp_urls: Vec<String>,
    cp_addrs: Vec<SocketAddr>,
    dp_addrs: Vec<SocketAddr>,
    /// Credentials the control planes accept (admin and token-reader roles).
    pub admin_token: String,
    pub token_reader_token: String,
    data_plane_token: String,
    control_planes: Vec<Option<PlaneProcess>>,
    data_planes: Vec<Option<PlaneProcess>>,
    dir: tempfile::TempDir,
}

impl std::ops::Deref for ProcessFleet {
    type Target = Edge;

    fn deref(&self) -> &Edge {
        &self.edge
    }
}

impl ProcessFleet {
    /// Two control planes and two data planes on `database_url`.
    pub fn builder(database_url: &str) -> ProcessFleetBuilder {
        ProcessFleetBuilder {
            control_planes: 2,
            data_planes: 2,
            database_url: database_url.to_owned(),
            control_plane_toml: String::new(),
            caller_cache_seconds: 60,
        }
    }

    fn spawn_control_plane(&self, i: usize) -> PlaneProcess {
        let config = self.dir.path().join(format!("control-plane-{i}.toml"));
        PlaneProcess::spawn(&format!("cp{i}"), &config, "control-plane", &[], "Gatehouse control plane:")
    }

    fn spawn_data_plane(&self, i: usize) -> PlaneProcess {
        let config = self.dir.path().join(format!("data-plane-{i}.toml"));
        let env = [("GATEHOUSE_DATA_PLANE__CONTROL_PLANE__TOKEN", self.data_plane_token.as_str())];
        PlaneProcess::spawn(&format!("dp{i}"), &config, "data-plane", &env, "Gatehouse data plane:")
    }

    /// Kills control plane `i` with SIGKILL (no chance to finish anything).
    pub fn kill_control_plane(&mut self, i: usize) {
        if let Some(plane) = self.control_planes[i].take() {
            plane.kill();
        }
    }

    /// Kills data plane `i` with SIGKILL.
    pub fn kill_data_plane(&mut self, i: usize) {
        if let Some(plane) = self.data_planes[i].take() {
            plane.kill();
        }
    }

    /// Starts control plane `i` again, at its address.
    pub fn restart_control_plane(&mut self, i: usize) {
        self.kill_control_plane(i);
        let plane = self.spawn_control_plane(i);
        self.control_planes[i] = Some(plane);
    }

    /// Waits until every running data plane says it is ready (`/readyz`).
    pub async fn wait_ready(&self) {
        let http = reqwest::Client::new();
        for (i, plane) in self.data_planes.iter().enumerate() {
            if plane.is_none() {
                continue;
            }
            let url = format!("{}/readyz", self.url(i));
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                match http.get(&url).send().await {
                    Ok(response) if response.status().is_success() => break,
                    _ if Instant::now() > deadline => panic!("data plane {i} never became ready:\n{}", self.logs()),
                    _ => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        }
    }

    /// An admin (or other role) gRPC client of control plane `i`.
    pub async fn client(&self, i: usize, credential: &str) -> gatehouse::admin_client::GrpcClient {
        gatehouse::admin_client::GrpcClient::connect(&self.cp_urls[i], credential)
            .await
            .expect("gRPC client")
    }

    /// Everything every plane logged so far (for failure messages).
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for plane in self.control_planes.iter().chain(&self.data_planes).flatten() {
            out.push_str(&format!("--- {} ---\n{}\n", plane.name, plane.log()));
        }
        out
    }

    /// Stops every plane with SIGTERM, asserting each exits cleanly.
    pub fn stop(mut self) {
        for plane in self.data_planes.iter_mut().chain(self.control_planes.iter_mut()) {
            if let Some(plane) = plane.take() {
                plane.stop();
            }
        }
    }
}

/// One plane's process; killed on drop.
struct PlaneProcess {
    name: String,
    child: Child,
    log: Arc<Mutex<Vec<u8>>>,
}

impl PlaneProcess {
    /// Starts `gatehouse --config FILE <command>` and waits for its banner.
    fn spawn(name: &str, config: &Path, command: &str, env: &[(&str, &str)], banner: &str) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_gatehouse"))
            .arg("--config")
            .arg(config)
            .arg(command)
            .envs(env.iter().copied())
            .env_remove("RUST_LOG")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start a plane");
        let log: Arc<Mutex<Vec<u8>>> = Arc::default();
        let mut stderr = child.stderr.take().expect("stderr");
        let sink = log.clone();
        std::thread::spawn(move || {
            let mut chunk = [0u8; 16 * 1024];
            while let Ok(n) = stderr.read(&mut chunk) {
                if n == 0 {
                    break;
                }
                sink.lock().expect("log").extend_from_slice(&chunk[..n]);
            }
        });
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let mut started = false;
        for line in lines.by_ref() {
            let Ok(line) = line else { break };
            if line.starts_with(banner) {
                started = true;
                break;
            }
        }
        std::thread::spawn(move || lines.for_each(drop));
        let plane = Self {
            name: name.to_owned(),
            child,
            log,
        };
        assert!(started, "{name} did not start:\n{}", plane.log());
        plane
    }

    fn log(&self) -> String {
        String::from_utf8_lossy(&self.log.lock().expect("log")).into_owned()
    }

    fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn stop(mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let exited = self.child.wait().expect("wait");
        assert!(
            exited.success(),
            "{} stops cleanly on SIGTERM ({exited}):\n{}",
            self.name,
            self.log()
        );
    }
}

impl Drop for PlaneProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// === A private PostgreSQL server ===

/// A PostgreSQL server of the test's own (`initdb` + `pg_ctl` in a temporary
/// folder, on a free port), for tests that restart the database. Stopped on drop.
pub struct PrivatePostgres {
    dir: PathBuf,
    bin: PathBuf,
    pub port: u16,
    _temp: tempfile::TempDir,
}

impl PrivatePostgres {
    /// Creates and starts the server, or `None` (with a loud message) when the
    /// PostgreSQL server binaries are missing outside CI. Under `CI=true` they must be there.
    pub fn start_or_skip() -> Option<Self> {
        let Some(bin) = postgres_bin_dir() else {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("CI=true and no PostgreSQL server binaries (initdb, pg_ctl) were found under /usr/lib/postgresql");
            }
            eprintln!("\n!!!!!!!!!! SKIPPING: no initdb/pg_ctl under /usr/lib/postgresql; CI fails here. !!!!!!!!!!\n");
            return None;
        };
        let temp = tempfile::tempdir().expect("temp dir");
        let dir = temp.path().join("pgdata");
        let port = free_port();
        // PostgreSQL refuses to run as root: run it as the `postgres` user when we are root.
        let as_root = running_as_root();
        if as_root {
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(temp.path())
                .status()
                .expect("chown");
            assert!(status.success());
        }
        let server = Self {
            dir,
            bin,
            port,
            _temp: temp,
        };
        let initdb = server.bin.join("initdb");
        server.run(
            &initdb,
            &[
                "-D",
                &server.dir.display().to_string(),
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
            ],
        );
        server.start();
        Some(server)
    }

    /// The URL of its `postgres` database.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    pub fn start(&self) {
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories={} -c fsync=off",
            self.port,
            self.dir.display()
        );
        let log = self.dir.join("server.log").display().to_string();
        let pg_ctl = self.bin.join("pg_ctl");
        self.run(
            &pg_ctl,
            &[
                "-D",
                &self.dir.display().to_string(),
                "-o",
                &options,
                "-l",
                &log,
                "-w",
                "start",
            ],
        );
    }

    /// Stops the server (fast shutdown: clients are disconnected).
    pub fn stop(&self) {
        let pg_ctl = self.bin.join("pg_ctl");
        self.run(&pg_ctl, &["-D", &self.dir.display().to_string(), "-m", "fast", "-w", "stop"]);
    }

    fn run(&self, program: &Path, args: &[&str]) {
        let output = if running_as_root() {
            Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(program)
                .args(args)
                .output()
        } else {
            Command::new(program).args(args).output()
        }
        .expect("run a PostgreSQL tool");
        assert!(
            output.status.success(),
            "{} {args:?} failed: {}{}",
            program.display(),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let pg_ctl = self.bin.join("pg_ctl");
        let args = ["-D", &self.dir.display().to_string(), "-m", "immediate", "stop"].map(str::to_owned);
        let _ = if running_as_root() {
            Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(&pg_ctl)
                .args(&args)
                .output()
        } else {
            Command::new(&pg_ctl).args(&args).output()
        };
    }
}

/// The newest `/usr/lib/postgresql/<version>/bin` holding `initdb` and `pg_ctl`.
fn postgres_bin_dir() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            (bin.join("initdb").exists() && bin.join("pg_ctl").exists()).then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

/// Whether this process runs as root (from `id -u`, to stay free of `unsafe`).
fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}
