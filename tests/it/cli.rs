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
    /// The start banner, every line up to and including `Try:`.
    banner: Vec<String>,
    /// The admin credential as the banner prints it.
    admin_credential: String,
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
        let mut admin_credential = String::new();
        let mut banner = Vec::new();
        let mut lines = BufReader::new(stdout).lines();
        for line in lines.by_ref() {
            let line = line.expect("banner line");
            banner.push(line.clone());
            let words: Vec<&str> = line.split_whitespace().collect();
            match words.as_slice() {
                ["gRPC", addr, ..] => grpc = (*addr).to_string(),
                ["Health", url, ..] => public_url = url.trim_end_matches("/healthz").to_string(),
                ["Admin", "credential", "(development):", credential] => admin_credential = (*credential).to_string(),
                ["Try:", ..] => break,
                _ => {}
            }
        }
        assert!(
            !grpc.is_empty() && !public_url.is_empty() && !admin_credential.is_empty(),
            "the banner names the gRPC address, the public URL and the admin credential: {banner:#?}"
        );
        // Keep reading, so later output never meets a closed pipe.
        std::thread::spawn(move || lines.for_each(drop));
        Self {
            child,
            grpc,
            public_url,
            banner,
            admin_credential,
        }
    }

    /// The banner line whose first words are `label`, without them.
    fn banner_value(&self, label: &str) -> &str {
        self.banner
            .iter()
            .find_map(|line| line.trim_start().strip_prefix(label))
            .unwrap_or_else(|| panic!("the banner has a {label:?} line: {:#?}", self.banner))
            .trim()
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

/// The mode bits of `path`.
#[cfg(unix)]
fn mode_of(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path).expect("file exists").permissions().mode() & 0o777
}

#[test]
fn the_start_banner_on_a_fresh_data_dir_names_every_address_the_credential_and_the_files_it_created() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("gatehouse-data");
    let running = Running::start(&data_dir);
    let public_url = running.public_url.clone();
    assert!(
        public_url.starts_with("http://127.0.0.1:") && !public_url.ends_with(":0"),
        "the real port, not 0: {public_url}"
    );
    let data = data_dir.display().to_string();

    assert_eq!(running.banner_value("MCP URL"), format!("{public_url}/mcp"));
    assert_eq!(
        running.banner_value("Consent pages"),
        format!("{public_url}/authorize (clients start there)")
    );
    let grpc_line = running.banner_value("gRPC");
    assert_eq!(grpc_line, format!("{} (plaintext; reflection and health on)", running.grpc));
    assert!(
        running.grpc.starts_with("127.0.0.1:") && !running.grpc.ends_with(":0"),
        "{grpc_line}"
    );
    assert_eq!(running.banner_value("Health"), format!("{public_url}/healthz"));
    assert_eq!(running.banner_value("Data directory"), data);
    let key_line = format!("created vault key file {data}/vault.keys (mode 0600)");
    let token_line = format!("created admin credential {data}/admin.token (mode 0600)");
    for line in [&key_line, &token_line] {
        assert!(
            running.banner.iter().any(|l| l.trim() == line.as_str()),
            "the banner says {line:?}: {:#?}",
            running.banner
        );
    }
    #[cfg(unix)]
    for file in ["vault.keys", "admin.token"] {
        assert_eq!(mode_of(&data_dir.join(file)), 0o600, "{file} is private, as the banner says");
    }
    let credential = running.banner_value("Admin credential (development):").to_owned();
    assert_eq!(credential, running.admin_credential);
    assert_eq!(
        std::fs::read_to_string(data_dir.join("admin.token")).unwrap().trim(),
        credential,
        "the credential printed is the one in the file the banner names"
    );

    // Each address answers as the banner says it does.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let (health, mcp, authorize) = runtime.block_on(async {
        let health = http
            .get(format!("{public_url}/healthz"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let mcp = http
            .post(running.banner_value("MCP URL"))
            .header("content-type", "application/json")
            .body(r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#)
            .send()
            .await
            .unwrap();
        let authorize = http.get(format!("{public_url}/authorize")).send().await.unwrap();
        (health, mcp, authorize)
    });
    assert!(health.contains("\"status\":\"ok\""), "{health}");
    assert_eq!(mcp.status(), 401, "the MCP URL asks for a token");
    assert!(
        mcp.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .contains(&format!("{public_url}/.well-known/oauth-protected-resource")),
        "{:?}",
        mcp.headers()
    );
    assert_eq!(
        authorize.status(),
        400,
        "the consent base answers (a bare /authorize lacks its parameters)"
    );
    runtime.block_on(async {
        let admin = gatehouse::admin_client::GrpcClient::connect(&format!("http://{}", running.grpc), &credential)
            .await
            .unwrap();
        admin
            .admin()
            .list_mcp_servers(gatehouse::pb::ListMcpServersRequest {})
            .await
            .expect("the printed credential is an admin credential at the printed gRPC address");
    });
    assert!(running.stop(), "SIGTERM stops gatehouse up cleanly");

    // Started again on the same directory: nothing is created, so nothing claims to be.
    let again = Running::start(&data_dir);
    assert!(!again.banner.iter().any(|l| l.contains("created ")), "{:#?}", again.banner);
    assert_eq!(again.admin_credential, credential);
    assert!(again.stop());
}

/// The RPCs of the README's "Administering with grpcurl" block, in its order.
const README_RPCS: [&str; 14] = [
    " list",
    "describe gatehouse.v1.AdminService",
    "grpc.health.v1.Health/Check",
    "/CreateVirtualKey",
    "/ListVirtualKeys",
    "/RevokeVirtualKey",
    "/CreateMcpServer",
    "/ListMcpServers",
    "/GetMcpServer",
    "/UpdateMcpServer",
    "/DeleteMcpServer",
    "/QueryAuditLog",
    "/ListVaultKeys",
    "/RotateVaultKey",
];

/// The `"name": "value"` string field of grpcurl's JSON output.
fn json_field<'a>(output: &'a str, name: &str) -> &'a str {
    let start = output
        .find(&format!("\"{name}\": \""))
        .unwrap_or_else(|| panic!("{name} in {output}"))
        + name.len()
        + 5;
    &output[start..start + output[start..].find('"').unwrap()]
}

#[test]
fn every_grpcurl_command_of_the_readme_runs_verbatim_against_gatehouse_up() {
    let Some(grpcurl) = crate::support::tools::grpcurl() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let running = Running::start(&dir.path().join("gatehouse-data"));
    let grpc = running.grpc.clone();

    let commands = crate::support::readme::readme_commands("## Administering with grpcurl");
    let rpcs: Vec<&str> = README_RPCS
        .iter()
        .map(|rpc| {
            let found: Vec<&String> = commands
                .iter()
                .filter(|c| c.ends_with(rpc) || c.contains(&format!("{rpc} ")))
                .collect();
            assert_eq!(found.len(), 1, "the README runs {rpc} once: {commands:#?}");
            *rpc
        })
        .collect();
    assert_eq!(
        commands.len(),
        rpcs.len(),
        "every command of the block is known: {commands:#?}"
    );

    let path = format!(
        "{}:{}",
        grpcurl.parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    // Runs the block in `workdir`, `ADMIN_TOKEN` set or not; the outputs in order.
    let run_block = |workdir: &std::path::Path, admin_token: Option<&str>| {
        let mut key_id = String::new();
        let mut outputs: Vec<String> = Vec::new();
        for (command, rpc) in commands.iter().zip(&rpcs) {
            assert!(
                command.ends_with(rpc) || command.contains(&format!("{rpc} ")),
                "the README's commands in order: {rpc} next, not {command}"
            );
            let mut sh = Command::new("sh");
            sh.arg("-c")
                .arg(command)
                .current_dir(workdir)
                .env("PATH", &path)
                .env("GW", &grpc)
                .env("KEY_ID", &key_id)
                .env_remove("ADMIN_TOKEN");
            if let Some(token) = admin_token {
                sh.env("ADMIN_TOKEN", token);
            }
            let output = sh.output().expect("sh runs");
            let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
            assert!(
                output.status.success(),
                "README command failed: {command}\n{stdout}{}",
                String::from_utf8_lossy(&output.stderr)
            );
            if *rpc == "/CreateVirtualKey" {
                // What the README tells the reader to copy.
                key_id = json_field(&stdout, "id").to_owned();
            }
            outputs.push(stdout);
        }
        (outputs, key_id)
    };

    // In a directory without the data directory, so the credential can only
    // come from ADMIN_TOKEN: the one the banner printed.
    let elsewhere = tempfile::tempdir().unwrap();
    let (outputs, key_id) = run_block(elsewhere.path(), Some(&running.admin_credential));
    let output_of = |rpc: &str| outputs[rpcs.iter().position(|r| *r == rpc).unwrap()].as_str();
    for service in [
        "gatehouse.v1.AdminService",
        "gatehouse.v1.FlowService",
        "gatehouse.v1.TokenService",
        "grpc.health.v1.Health",
    ] {
        assert!(output_of(" list").contains(service), "grpcurl list shows {service}");
    }
    assert!(
        output_of("describe gatehouse.v1.AdminService").contains("Issues a virtual key"),
        "the contract's comments reach operators"
    );
    assert!(output_of("grpc.health.v1.Health/Check").contains("SERVING"));
    let created = output_of("/CreateVirtualKey");
    assert!(created.contains("\"secret\": \"gh_vk_"), "{created}");
    assert!(key_id.starts_with("vk_"), "{created}");
    assert!(output_of("/ListVirtualKeys").contains(&key_id));
    let revoked = output_of("/RevokeVirtualKey");
    assert!(revoked.contains(&key_id) && revoked.contains("revokedAt"), "{revoked}");
    assert!(output_of("/CreateMcpServer").contains("\"source\": \"admin\""));
    let listed = output_of("/ListMcpServers");
    assert!(
        listed.contains("\"name\": \"demo\"") && listed.contains("\"name\": \"search\""),
        "{listed}"
    );
    assert!(output_of("/GetMcpServer").contains("https://search.example.com/mcp"));
    let updated = output_of("/UpdateMcpServer");
    assert!(
        updated.contains("https://search2.example.com/mcp") && updated.contains("\"delete\""),
        "{updated}"
    );
    let audit = output_of("/QueryAuditLog");
    for action in ["virtual_key.create", "virtual_key.revoke"] {
        assert!(audit.contains(action), "{action} in {audit}");
    }
    assert!(output_of("/ListVaultKeys").contains("\"active\": true"));
    let rotated = output_of("/RotateVaultKey");
    let new_key = json_field(rotated, "keyId");
    assert!(!output_of("/ListVaultKeys").contains(new_key), "a new key: {rotated}");

    // The state the block left: the key revoked, "search" gone.
    let auth = format!("authorization: Bearer {}", running.admin_credential);
    let servers = run_grpcurl(
        &grpcurl,
        &["-plaintext", "-H", &auth, &grpc, "gatehouse.v1.AdminService/ListMcpServers"],
    );
    assert!(!servers.contains("search"), "DeleteMcpServer deleted it: {servers}");
    let keys = run_grpcurl(
        &grpcurl,
        &["-plaintext", "-H", &auth, &grpc, "gatehouse.v1.AdminService/ListVaultKeys"],
    );
    assert!(keys.contains(new_key), "RotateVaultKey added {new_key}: {keys}");

    // Pasted as is in the directory `up` started in (only the port is not
    // the default): the credential comes from the data directory.
    let (again, second_key) = run_block(dir.path(), None);
    assert_ne!(second_key, key_id);
    assert!(again[rpcs.iter().position(|r| *r == "/RevokeVirtualKey").unwrap()].contains(&second_key));

    // Without the credential: refused.
    let refused = Command::new(&grpcurl)
        .args(["-plaintext", &grpc, "gatehouse.v1.AdminService/ListMcpServers"])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("Unauthenticated"));

    // `gatehouse vault rotate`, as the paragraph under the block says.
    let rotated = gatehouse()
        .args(["vault", "rotate", "--grpc-url", &format!("http://{grpc}"), "--data-dir"])
        .arg(dir.path().join("gatehouse-data"))
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
