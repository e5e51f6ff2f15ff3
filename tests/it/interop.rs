//! The interop suite: Gatehouse against software nobody on the team wrote, on
//! each store (SQLite, PostgreSQL). Every peer is real and on loopback:
//!
//! - oidc-provider (npm; `tests/interop/oidc_provider.mjs`): the OpenID
//!   provider people sign in at on the identity page, and the OAuth server of
//!   the service `notes` (Gatehouse discovers it and registers dynamically;
//!   refresh tokens rotate on every use).
//! - `notes`: an MCP server built with the Python MCP SDK
//!   (`tests/interop/per_user_server.py`) that validates every bearer by
//!   introspection at that provider and answers with whose token it was.
//! - `conf`: an MCP server built with the TypeScript MCP SDK offering the
//!   tools the conformance suite's `server` scenarios call.
//! - Clients: the official conformance suite (`authorization` mode against the
//!   issuer with chromium walking the consent pages; `server` mode through
//!   `/mcp`), the Python SDK and the TypeScript SDK, at each protocol revision:
//!   the 1.x SDKs at 2025-06-18 and 2025-11-25, the 2.x clients (Python `mcp`
//!   2.3.0 in `.tools/py2`, `@modelcontextprotocol/client` 2.4.0) at 2026-07-28.
//!
//! A person is Debian's chromium (`tests/interop/browser.mjs`): sign in at the
//! provider, connect `notes`, approve. What passed goes to
//! `tests/artifacts/interop/matrix.{md,json}`.
//!
//! `.ci/run` installs the peers (Node 22 into `.tools/node22`, npm packages
//! under `tests/interop/`, Python `mcp` 2.x into `.tools/py2`) and runs this
//! suite on its own:
//! `cargo test --test it interop -- --ignored`.

#[path = "interop_matrix.rs"]
mod matrix;
#[path = "interop_peers.rs"]
mod peers;

use std::time::{Duration, Instant};

use gatehouse::pb::{
    DeleteConnectionRequest, ListConnectionsRequest, ListIdentitiesRequest, ReadUpstreamTokenRequest, RefreshConnectionRequest,
};
use serde_json::Value;

use self::matrix::{Cell, Outcome};
use self::peers::{Interop, Peers};
use crate::support::Backend;
use crate::support::plane::{ADMIN, TOKEN_READER};

/// Revisions the matrix covers.
const REVISIONS: [&str; 3] = ["2025-06-18", "2025-11-25", "2026-07-28"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "interop suite (needs Node 22, chromium and the npm peers): .ci/run runs it with --ignored"]
async fn interop_sqlite() {
    run(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "interop suite (needs Node 22, chromium and the npm peers): .ci/run runs it with --ignored"]
async fn interop_postgres() {
    run(Backend::Postgres).await;
}

async fn run(backend: Backend) {
    let Some(peers) = Peers::find() else { return };
    let Some(interop) = Interop::start(&peers, backend).await else {
        return;
    };
    let store = interop.store();
    let started = Instant::now();
    let mut cells = Vec::new();
    // GATEHOUSE_INTEROP_PARTS=a,b runs only those parts (authorization, sdk,
    // server, lifecycle), for working on one; CI runs all.
    let parts = std::env::var("GATEHOUSE_INTEROP_PARTS").unwrap_or_default();
    let part = |name: &str| parts.is_empty() || parts.split(',').any(|p| p == name);

    // 1. The conformance suite against the issuer, the browser through the consent pages.
    if part("authorization") {
        cells.push(conformance_authorization(&interop).await);
    }

    // 2. The SDK clients at each revision: a different person each time, each
    //    signed in at the provider and connected to `notes` in chromium; the
    //    per-user server must see that person's token.
    let mut account = 0;
    for client in ["Python SDK", "TypeScript SDK"].into_iter().filter(|_| part("sdk")) {
        for revision in REVISIONS {
            account += 1;
            cells.push(sdk_client(&interop, client, revision, &format!("user{account}")).await);
        }
    }

    // 3. The conformance suite's server scenarios through /mcp.
    for revision in REVISIONS.into_iter().filter(|_| part("server")) {
        cells.push(conformance_server(&interop, revision).await);
    }

    // 4. oidc-provider as the upstream: refresh with rotation, revocation.
    if part("lifecycle") {
        cells.push(upstream_lifecycle(&interop).await);
    }

    for cell in &mut cells {
        cell.store = store.into();
    }
    eprintln!("interop on {store}: {:.0?}", started.elapsed());
    matrix::record(store, &cells);
    interop.stop().await;
    let failed: Vec<String> = cells
        .iter()
        .filter(|c| matches!(c.outcome, Outcome::Fail(_)))
        .map(|c| format!("{} × {} × {}: {}", c.client, c.revision, c.store, c.outcome.detail()))
        .collect();
    assert!(failed.is_empty(), "interop failures on {store}:\n{}", failed.join("\n"));
}

// === 1. conformance authorization ===

async fn conformance_authorization(interop: &Interop) -> Cell {
    let cell = |outcome| Cell::new("conformance (authorization)", "all", outcome);
    let port = peers::free_port();
    let redirect = format!("http://127.0.0.1:{port}/callback");
    let client = interop.register_client("MCP conformance suite", &redirect).await;
    let output = interop.artifacts("conformance-authorization");
    let result = interop
        .node_json(
            "conformance_authorization.mjs",
            &[],
            &[
                ("ISSUER", interop.issuer.as_str()),
                ("CLIENT_ID", client.as_str()),
                ("PORT", &port.to_string()),
                ("RESOURCE", &format!("{}/mcp", interop.issuer)),
                ("OUTPUT", &output.join("results").display().to_string()),
                ("ACCOUNT", "conformance-user"),
                ("SERVICE", "Notes"),
                ("ARTIFACTS", &output.join("browser").display().to_string()),
            ],
            Duration::from_secs(180),
        )
        .await;
    let result = match result {
        Ok(result) => result,
        Err(err) => return cell(Outcome::Fail(err)),
    };
    cell(matrix::judge_checks(&result, &[]))
}

// === 2. the SDK clients ===

/// Which official client runs at `revision`: the 1.x SDKs speak the
/// initialize handshake (2025-06-18, 2025-11-25); 2026-07-28 (server/discover,
/// then per-request `_meta`) takes the 2.x clients, Python `mcp` 2.3.0 in
/// `.tools/py2` and the npm package `@modelcontextprotocol/client` 2.4.0.
/// Returns the script and the client package it drives.
fn sdk_script(client: &str, revision: &str) -> (&'static str, &'static str) {
    let modern = revision == "2026-07-28";
    match (client, modern) {
        ("Python SDK", false) => ("sdk_client.py", "mcp 1.30.0"),
        ("Python SDK", true) => ("sdk_client2.py", "mcp 2.3.0"),
        (_, false) => ("sdk_client.mjs", "@modelcontextprotocol/sdk 1.32.2"),
        (_, true) => ("sdk_client2.mjs", "@modelcontextprotocol/client 2.4.0"),
    }
}

async fn sdk_client(interop: &Interop, client: &str, revision: &str, account: &str) -> Cell {
    let cell = |outcome| Cell::new(client, revision, outcome);
    let (script, package) = sdk_script(client, revision);
    let mcp_url = format!("{}/mcp", interop.issuer);
    let artifacts = interop.artifacts(&format!("{}-{revision}", script.replace('.', "-")));
    let args = [mcp_url.as_str(), revision, account, "Notes", "notes__whoami"];
    let env = [("ARTIFACTS", artifacts.display().to_string())];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let result = if script.ends_with(".py") {
        let sdk2 = script == "sdk_client2.py";
        interop.python_json(script, sdk2, &args, &env, Duration::from_secs(180)).await
    } else {
        interop.node_json(script, &args, &env, Duration::from_secs(180)).await
    };
    let result = match result {
        Ok(result) => result,
        Err(err) => return cell(Outcome::Fail(err)),
    };
    let mut problems = Vec::new();
    if result["negotiated"] != revision {
        problems.push(format!("negotiated {} instead of {revision}", result["negotiated"]));
    }
    // The 2.x clients reach 2026-07-28 only through server/discover; Python's
    // "auto" falls back to initialize, so that must not have happened.
    let discovered = result["discovered"] == true || result["era"] == "modern";
    if revision == "2026-07-28" && !discovered {
        problems.push(format!(
            "not negotiated through server/discover (discovered {}, era {})",
            result["discovered"], result["era"]
        ));
    }
    if revision == "2026-07-28" {
        problems.extend(modern_wire(&result["wire"], revision));
    }
    if result["iss"] != interop.issuer.as_str() {
        problems.push(format!("iss {} is not the issuer", result["iss"]));
    }
    let tools: Vec<&str> = result["tools"]
        .as_array()
        .map(|t| t.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    for expected in ["notes__whoami", "notes__token_info", "conf__test_simple_text"] {
        if !tools.contains(&expected) {
            problems.push(format!("tools/list lacks {expected}"));
        }
    }
    let text = result["call"]["content"][0]["text"].as_str().unwrap_or_default();
    if result["call"]["isError"] == true || text != format!("you are {account}") {
        problems.push(format!("notes__whoami answered {}", result["call"]));
    }
    cell(if problems.is_empty() {
        let negotiation = if discovered {
            let posts: Vec<String> = result["wire"]
                .as_array()
                .map(|w| {
                    w.iter()
                        .map(|r| format!("{} {}", r["method"].as_str().unwrap_or("?"), r["status"]))
                        .collect()
                })
                .unwrap_or_default();
            format!(
                "server/discover; on the wire: {} (each 200 with MCP-Protocol-Version, Mcp-Method, _meta); ",
                posts.join(", ")
            )
        } else {
            "initialize, ".to_owned()
        };
        Outcome::Pass(format!(
            "{package}: OAuth (sign-in as {account}, notes connected), {negotiation}tools/list, notes__whoami saw {account}'s token"
        ))
    } else {
        Outcome::Fail(problems.join("; "))
    })
}

/// What a 2.x client sent on the 2026-07-28 wire (`wire`: each POST to /mcp
/// as its script recorded it) and was answered 200 for: server/discover, then
/// tools/list and tools/call, no initialize; each with `MCP-Protocol-Version`
/// and `_meta` protocolVersion at `revision`, `_meta` clientCapabilities,
/// `Mcp-Method` naming the method and, on tools/call, `Mcp-Name` the tool.
/// Returns what was not so.
fn modern_wire(wire: &Value, revision: &str) -> Vec<String> {
    let sent = wire.as_array().cloned().unwrap_or_default();
    let answered: Vec<&Value> = sent.iter().filter(|r| r["status"] == 200).collect();
    let methods: Vec<&str> = answered.iter().filter_map(|r| r["method"].as_str()).collect();
    let mut problems = Vec::new();
    for method in ["server/discover", "tools/list", "tools/call"] {
        if !methods.contains(&method) {
            problems.push(format!("no {method} answered 200 on the wire (sent: {methods:?})"));
        }
    }
    if sent.iter().any(|r| r["method"] == "initialize") {
        problems.push("the client sent initialize".into());
    }
    for request in answered {
        let method = request["method"].as_str().unwrap_or("?");
        let keys: Vec<&str> = request["metaKeys"]
            .as_array()
            .map(|k| k.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let mut wrong = Vec::new();
        if request["protocolVersionHeader"] != revision {
            wrong.push(format!("MCP-Protocol-Version {}", request["protocolVersionHeader"]));
        }
        if request["metaVersion"] != revision {
            wrong.push(format!("_meta protocolVersion {}", request["metaVersion"]));
        }
        if !keys.contains(&"io.modelcontextprotocol/clientCapabilities") {
            wrong.push(format!("_meta without clientCapabilities ({keys:?})"));
        }
        if request["methodHeader"] != method {
            wrong.push(format!("Mcp-Method {}", request["methodHeader"]));
        }
        if method == "tools/call" && request["nameHeader"] != "notes__whoami" {
            wrong.push(format!("Mcp-Name {}", request["nameHeader"]));
        }
        if !wrong.is_empty() {
            problems.push(format!("{method}: {}", wrong.join(", ")));
        }
    }
    problems
}

// === 3. conformance server ===

/// Server scenarios that apply to a gateway, by revision. Left out, with why:
/// `logging-set-level`, `tools-call-with-logging` (logging/setLevel: Gatehouse
/// keeps no session a level would belong to; logging is deprecated in
/// 2026-07-28), `tools-call-sampling`, `tools-call-elicitation` and the
/// elicitation scenarios (server-to-client requests: Gatehouse sends none),
/// `server-sse-*` (GET streams and resumption: Gatehouse issues no session),
/// resources, prompts and completion (the fixture's fixed URIs and names; a
/// gateway names them per service), `input-required-result-*` and `caching`
/// (behaviour of the fixture server itself, not of what relays it).
fn server_scenarios(revision: &str) -> Vec<&'static str> {
    let tools = [
        "tools-list",
        "tools-call-simple-text",
        "tools-call-image",
        "tools-call-audio",
        "tools-call-embedded-resource",
        "tools-call-mixed-content",
        "tools-call-error",
        "tools-call-with-progress",
    ];
    let mut scenarios: Vec<&'static str> = match revision {
        "2025-06-18" => vec!["server-initialize", "server-session-lifecycle", "ping"],
        "2025-11-25" => vec![
            "server-initialize",
            "server-session-lifecycle",
            "ping",
            "dns-rebinding-protection",
            "json-schema-2020-12",
        ],
        _ => vec![
            "server-stateless",
            "dns-rebinding-protection",
            "http-header-validation",
            "json-schema-2020-12",
        ],
    };
    scenarios.extend(tools);
    scenarios
}

async fn conformance_server(interop: &Interop, revision: &str) -> Cell {
    let cell = |outcome| Cell::new("conformance (server)", revision, outcome);
    let output = interop.artifacts(&format!("conformance-server-{revision}"));
    // Gatehouse's known gaps on the 2026-07-28 wire (each one open work).
    let baseline = interop.peers_dir.join("expected-failures.yml");
    let known = if revision == "2026-07-28" {
        matrix::known_failures(&baseline)
    } else {
        Vec::new()
    };
    let mut ran = Vec::new();
    let mut failures = Vec::new();
    let mut known_failed = 0;
    for scenario in server_scenarios(revision) {
        let dir = output.join(scenario).display().to_string();
        let mut args = vec![
            "server",
            "--url",
            &interop.proxy_url,
            "--scenario",
            scenario,
            "--spec-version",
            revision,
        ];
        let baseline_arg = baseline.display().to_string();
        if !known.is_empty() {
            args.extend(["--expected-failures", baseline_arg.as_str()]);
        }
        args.extend(["-o", dir.as_str()]);
        match interop.conformance(&args).await {
            Ok(result) => {
                known_failed += result["checks"]
                    .as_array()
                    .map(|c| c.iter().filter(|c| c["status"] == "FAILURE").count())
                    .unwrap_or(0);
                if let Outcome::Fail(why) = matrix::judge_checks(&result, &known) {
                    failures.push(format!("{scenario}: {why}"));
                }
                ran.push(scenario);
            }
            Err(err) => failures.push(format!("{scenario}: {err}")),
        }
    }
    cell(if failures.is_empty() {
        let known = if known_failed > 0 {
            format!(" ({known_failed} known failures, tests/interop/expected-failures.yml)")
        } else {
            String::new()
        };
        Outcome::Pass(format!("{} scenarios{known}: {}", ran.len(), ran.join(", ")))
    } else {
        Outcome::Fail(failures.join("; "))
    })
}

// === 4. the upstream OAuth lifecycle at oidc-provider ===

async fn upstream_lifecycle(interop: &Interop) -> Cell {
    let cell = |outcome| Cell::new("oidc-provider (refresh, rotation, revocation)", "2025-11-25", outcome);
    match lifecycle(interop).await {
        Ok(detail) => cell(Outcome::Pass(detail)),
        Err(err) => cell(Outcome::Fail(err)),
    }
}

async fn lifecycle(interop: &Interop) -> Result<String, String> {
    let account = "lifecycle-user";
    let bearer = interop.access_token(account, Some("Notes")).await?;
    let info = |bearer: String| async move {
        let result = interop.call_tool(&bearer, "notes__token_info").await?;
        let text = result["content"][0]["text"]
            .as_str()
            .ok_or(format!("token_info answered {result}"))?;
        serde_json::from_str::<Value>(text).map_err(|e| format!("token_info: {e}"))
    };
    let first = info(bearer.clone()).await?;
    if first["sub"] != account {
        return Err(format!("the upstream saw {} instead of {account}", first["sub"]));
    }
    let admin = interop.grpc(ADMIN).await;
    // The person's identity (a user: the subject the provider's ID token named), then its connection.
    let identity = admin
        .admin()
        .list_identities(ListIdentitiesRequest::default())
        .await
        .map_err(|e| format!("ListIdentities: {e}"))?
        .into_inner()
        .identities
        .into_iter()
        .find(|i| i.display_name == account || i.subject == account || i.subject.ends_with(&format!("|{account}")))
        .ok_or(format!("no identity with subject {account}"))?;
    let connection = admin
        .admin()
        .list_connections(ListConnectionsRequest {
            identity_id: identity.id.clone(),
            service: "notes".into(),
        })
        .await
        .map_err(|e| format!("ListConnections: {e}"))?
        .into_inner()
        .connections
        .into_iter()
        .next()
        .ok_or(format!("{account} has no notes connection"))?;
    if !connection.has_refresh_token {
        return Err("oidc-provider issued no refresh token to Gatehouse".into());
    }
    // What the control plane holds now: the access token, live at the
    // provider as this person's.
    let reader = interop.grpc(TOKEN_READER).await;
    let current = || async {
        let credential = reader
            .tokens()
            .read_upstream_token(ReadUpstreamTokenRequest {
                identity_id: connection.identity_id.clone(),
                service: "notes".into(),
                purpose: "interop: introspect at the provider".into(),
            })
            .await
            .map_err(|e| format!("ReadUpstreamToken: {e}"))?
            .into_inner();
        let token = credential
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("authorization"))
            .and_then(|h| h.value.strip_prefix("Bearer "))
            .ok_or("no bearer in the upstream credential")?
            .to_string();
        let live = interop.introspect(&token).await?;
        if live["active"] != true || live["sub"] != account {
            return Err(format!("the provider does not know Gatehouse's token as {account}'s: {live}"));
        }
        Ok::<String, String>(token)
    };
    let mut token = current().await?;
    // Two refreshes in a row: the second works only if Gatehouse kept the
    // refresh token the first one rotated to (oidc-provider refuses a used one
    // and ends the grant). Each gives a new access token, live at the provider,
    // and the upstream keeps seeing this person through /mcp.
    let mut seen = vec![token.clone()];
    for round in 1..=2 {
        admin
            .admin()
            .refresh_connection(RefreshConnectionRequest {
                id: connection.id.clone(),
            })
            .await
            .map_err(|e| format!("RefreshConnection #{round}: {e}"))?;
        token = current().await?;
        if seen.contains(&token) {
            return Err(format!("refresh #{round} left the old access token in place"));
        }
        seen.push(token.clone());
        let now = info(bearer.clone()).await?;
        if now["sub"] != account {
            return Err(format!("after refresh #{round} the upstream saw {}", now["sub"]));
        }
    }
    let deleted = admin
        .admin()
        .delete_connection(DeleteConnectionRequest {
            id: connection.id.clone(),
        })
        .await
        .map_err(|e| format!("DeleteConnection: {e}"))?
        .into_inner();
    if !deleted.revoked_upstream {
        return Err("DeleteConnection did not revoke at the provider".into());
    }
    let dead = interop.introspect(&token).await?;
    if dead["active"] != false {
        return Err(format!("the provider still knows the revoked token: {dead}"));
    }
    let after = interop.call_tool(&bearer, "notes__whoami").await;
    let text = after.as_ref().map(|r| r.to_string()).unwrap_or_else(|e| e.clone());
    if !text.contains("/connect/") {
        return Err(format!("after revocation notes__whoami answered {text}"));
    }
    Ok(format!(
        "connected as {account}; 2 refreshes with rotation (3 distinct access tokens, each live at the provider as {account}, the upstream seeing {account} throughout); revoked at the provider (introspection inactive); connect link after"
    ))
}
