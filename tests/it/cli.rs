//! The `gatehouse` binary as an operator runs it: `up` on port 0, grpcurl with
//! reflection (no proto files), `vault rotate`, a clean stop on SIGTERM, and a
//! bad config reported with its key and file.
//!
//! grpcurl comes from `support::tools::grpcurl`.

use std::io::{BufRead as _, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

fn gatehouse() -> Command {
    Command::new(env!("CARGO_BIN_EXE_gatehouse"))
}

/// A running `gatehouse up`, stopped with SIGTERM on drop.
struct Running {
    child: Child,
    grpc: String,
    public_url: String,
}

impl Running {
    fn start(data_dir: &std::path::Path) -> Self {
        let mut child = gatehouse()
            .args(["up", "--http-addr", "127.0.0.1:0", "--grpc-addr", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("gatehouse up starts");
        let stdout = child.stdout.take().expect("stdout");
        let mut grpc = String::new();
        let mut public_url = String::new();
        let mut lines = BufReader::new(stdout).lines();
        for line in lines.by_ref() {
            let line = line.expect("banner line");
            let mut words = line.split_whitespace();
            match (words.next(), words.next()) {
                (Some("gRPC"), Some(addr)) => grpc = addr.to_string(),
                (Some("Health"), Some(url)) => public_url = url.trim_end_matches("/healthz").to_string(),
                (Some("Try:"), _) => break,
                _ => {}
            }
        }
        assert!(
            !grpc.is_empty() && !public_url.is_empty(),
            "the banner names the gRPC address and the public URL"
        );
        // Keep reading, so later output never meets a closed pipe.
        std::thread::spawn(move || lines.for_each(drop));
        Self { child, grpc, public_url }
    }

    /// Sends SIGTERM and returns whether the process exited successfully.
    fn stop(mut self) -> bool {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        self.child.wait().map(|s| s.success()).unwrap_or(false)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn run_grpcurl(grpcurl: &PathBuf, args: &[&str]) -> String {
    let output = Command::new(grpcurl).args(args).output().expect("grpcurl runs");
    assert!(
        output.status.success(),
        "grpcurl {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("utf-8")
}

#[test]
fn operator_administers_a_fresh_gateway_with_grpcurl() {
    let Some(grpcurl) = crate::support::tools::grpcurl() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let running = Running::start(dir.path());
    let grpc = running.grpc.clone();

    let health = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(async { reqwest::get(format!("{}/healthz", running.public_url)).await?.text().await })
        .expect("GET /healthz");
    assert!(health.contains("\"status\":\"ok\""), "{health}");

    let services = run_grpcurl(&grpcurl, &["-plaintext", &grpc, "list"]);
    for service in [
        "gatehouse.v1.AdminService",
        "gatehouse.v1.FlowService",
        "gatehouse.v1.TokenService",
        "grpc.health.v1.Health",
    ] {
        assert!(services.contains(service), "grpcurl list shows {service}: {services}");
    }
    let described = run_grpcurl(
        &grpcurl,
        &["-plaintext", &grpc, "describe", "gatehouse.v1.AdminService.CreateVirtualKey"],
    );
    assert!(
        described.contains("Issues a virtual key"),
        "the contract's comments reach operators: {described}"
    );
    let health = run_grpcurl(&grpcurl, &["-plaintext", &grpc, "grpc.health.v1.Health/Check"]);
    assert!(health.contains("SERVING"));

    let token = std::fs::read_to_string(dir.path().join("admin.token")).unwrap();
    let auth = format!("authorization: Bearer {}", token.trim());
    let key = run_grpcurl(
        &grpcurl,
        &[
            "-plaintext",
            "-H",
            &auth,
            "-d",
            r#"{"name":"alice"}"#,
            &grpc,
            "gatehouse.v1.AdminService/CreateVirtualKey",
        ],
    );
    assert!(key.contains("\"secret\": \"gh_vk_"), "{key}");
    let server = run_grpcurl(
        &grpcurl,
        &[
            "-plaintext",
            "-H",
            &auth,
            "-d",
            r#"{"server":{"name":"search","url":"https://search.example.com/mcp","auth_mode":"UPSTREAM_AUTH_MODE_NONE"}}"#,
            &grpc,
            "gatehouse.v1.AdminService/CreateMcpServer",
        ],
    );
    assert!(server.contains("\"source\": \"admin\""), "{server}");
    let listed = run_grpcurl(
        &grpcurl,
        &["-plaintext", "-H", &auth, &grpc, "gatehouse.v1.AdminService/ListMcpServers"],
    );
    assert!(
        listed.contains("\"name\": \"demo\"") && listed.contains("\"name\": \"search\""),
        "{listed}"
    );

    let refused = Command::new(&grpcurl)
        .args(["-plaintext", &grpc, "gatehouse.v1.AdminService/ListMcpServers"])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("Unauthenticated"));

    let rotated = gatehouse()
        .args(["vault", "rotate", "--grpc-url", &format!("http://{grpc}"), "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(rotated.status.success(), "{}", String::from_utf8_lossy(&rotated.stderr));
    assert!(String::from_utf8_lossy(&rotated.stdout).contains("is now active"));

    assert!(running.stop(), "SIGTERM stops gatehouse up cleanly");
}

#[test]
fn bad_config_value_is_reported_with_key_and_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gatehouse.toml");
    std::fs::write(&config, "[data_plane]\nmax_body_bytes = \"lots\"\n").unwrap();
    let output = gatehouse().arg("--config").arg(&config).arg("up").output().unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("data_plane.max_body_bytes"), "{stderr}");
    assert!(stderr.contains(&config.display().to_string()), "{stderr}");

    let output = gatehouse()
        .arg("control-plane")
        .env("GATEHOUSE_CONTROL_PLANE__LISTEN", "nowhere")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("control_plane.listen") && stderr.contains("GATEHOUSE_"),
        "{stderr}"
    );
}

#[test]
fn control_plane_refuses_to_start_without_a_vault_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("cp.toml");
    std::fs::write(
        &config,
        format!(
            "[control_plane]\nlisten = \"127.0.0.1:0\"\ndatabase_url = \"sqlite://{}/cp.db?mode=rwc\"\n\
             [[control_plane.callers]]\nname = \"dp\"\nrole = \"data-plane\"\ntoken_sha256 = \"{}\"\n",
            dir.path().display(),
            "0".repeat(64)
        ),
    )
    .unwrap();
    let output = gatehouse()
        .arg("--config")
        .arg(&config)
        .arg("control-plane")
        .env_remove("GATEHOUSE_VAULT_KEYS")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("no vault key"), "{stderr}");
    assert!(
        !dir.path().join("cp.db").exists(),
        "nothing is created before the key is there"
    );
}

/// A child process killed when the test ends, even by a panic.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Reads lines from a child's stdout until one contains `needle`; returns that line.
fn wait_for_line(child: &mut Child, needle: &str) -> String {
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    for line in lines.by_ref() {
        let line = line.expect("line");
        if line.contains(needle) {
            std::thread::spawn(move || lines.for_each(drop));
            return line;
        }
    }
    panic!("the process ended before printing {needle:?}");
}

#[test]
fn split_deployment_runs_each_plane_as_its_own_process() {
    let dir = tempfile::tempdir().unwrap();
    let credential = "gh_svc_split-deployment-test-credential";
    let key = std::fs::read_to_string({
        let key_file = dir.path().join("vault.keys");
        gatehouse_control_plane::vault::Vault::create_key_file_if_missing(&key_file).unwrap();
        key_file
    })
    .unwrap();
    let grpc_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = dir.path().join("gatehouse.toml");
    std::fs::write(
        &config,
        format!(
            "[control_plane]\nlisten = \"127.0.0.1:{grpc_port}\"\ndatabase_url = \"sqlite://{dir}/cp.db?mode=rwc\"\n\
             [[control_plane.callers]]\nname = \"dp\"\nrole = \"data-plane\"\ntoken_sha256 = \"{hash}\"\n\
             [data_plane]\nlisten = \"127.0.0.1:0\"\n[data_plane.control_plane]\nurls = [\"http://127.0.0.1:{grpc_port}\"]\n",
            dir = dir.path().display(),
            hash = gatehouse_control_plane::secret::hash(credential),
        ),
    )
    .unwrap();
    // Keys from the environment, the credential from the environment: nothing secret in the file.
    let mut control_plane = Killed(
        gatehouse()
            .arg("--config")
            .arg(&config)
            .arg("control-plane")
            .env(
                "GATEHOUSE_VAULT_KEYS",
                key.lines().filter(|l| !l.starts_with('#')).collect::<Vec<_>>().join(";"),
            )
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    wait_for_line(&mut control_plane.0, "gRPC on");
    let mut data_plane = Killed(
        gatehouse()
            .arg("--config")
            .arg(&config)
            .arg("data-plane")
            .env("GATEHOUSE_DATA_PLANE__CONTROL_PLANE__TOKEN", credential)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let line = wait_for_line(&mut data_plane.0, "HTTP on");
    let addr = line.split_whitespace().nth(5).expect("address in the banner").to_string();
    let ready = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(async {
            reqwest::get(format!("http://{addr}/readyz"))
                .await
                .map(|r| r.status().as_u16())
        })
        .unwrap();
    assert_eq!(
        ready, 200,
        "the data plane reaches its control plane with the configured credential"
    );
    for child in [&mut data_plane, &mut control_plane] {
        let _ = Command::new("kill").args(["-TERM", &child.0.id().to_string()]).status();
        assert!(child.0.wait().unwrap().success(), "SIGTERM stops the plane cleanly");
    }
}
