//! `gatehouse-bench`: what Gatehouse adds to an MCP `tools/call` over calling
//! the upstream directly (issue 6). In one process, each on its own Tokio
//! runtime so CPU time can be told apart: a fixture upstream, Gatehouse (a
//! control plane on SQLite and two data planes, caches on and off), and the
//! load generator. K synthetic users go through the consent flow, each
//! connecting the per-user OAuth service `vault` (the fixture, authorized at
//! the demo OAuth provider); then `tools/call echo` is measured direct, and as
//! `vault__echo` through Gatehouse (2025-06-18 session and 2026-07-28
//! stateless) and with the data plane's caches off, in alternating short
//! runs, at a fixed concurrency and at a fixed rate.
//!
//! `--quick` prints one JSON object; the full run prints markdown tables.
//! Progress goes to stderr.

mod consent;
mod cpu;
mod extra;
mod fleet;
mod load;
mod memory;
mod oauth;
mod rpc;
mod seed;
mod upstream;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Parser;
use reqwest::header::{self, HeaderValue};
use serde_json::{Value, json};

use crate::cpu::{CpuMeter, CpuSample};
use crate::load::{Mode, RunResult, Targets, quantile};

#[derive(Debug, Parser)]
#[command(about = "Benchmarks Gatehouse against calling the upstream MCP server directly (issue 6)")]
struct Args {
    /// Short run (under a minute); prints one JSON object.
    #[arg(long)]
    quick: bool,
    /// Synthetic users to sign up (default 1000, 50 with --quick).
    #[arg(long)]
    users: Option<usize>,
    /// Keep-alive connections of the closed-loop runs.
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// Calls per second of the fixed-rate runs.
    #[arg(long, default_value_t = 2000)]
    rate: u32,
    /// Length of one closed-loop run, in milliseconds (default 3000, 1500 with --quick).
    #[arg(long)]
    run_ms: Option<u64>,
    /// Rounds of closed-loop runs (default 4, 2 with --quick).
    #[arg(long)]
    rounds: Option<usize>,
    /// Length of one fixed-rate run, in milliseconds (default 3000, 1500 with --quick).
    #[arg(long)]
    rate_run_ms: Option<u64>,
    /// Consent flows in flight at once while signing users up.
    #[arg(long, default_value_t = 16)]
    signup_concurrency: usize,
    /// Also print the JSON object after the tables of a full run.
    #[arg(long)]
    json: bool,
    /// What to measure, comma-separated: closed, fixed, rpc, token, flow, memory, idle
    /// (default: all; with --quick: closed,fixed).
    #[arg(long, value_delimiter = ',')]
    phases: Option<Vec<String>>,
    /// Users in the store at each step of the RPC runs.
    #[arg(long, value_delimiter = ',', default_value = "1000,10000,100000")]
    rpc_users: Vec<usize>,
    /// Length of one RPC run, in milliseconds.
    #[arg(long, default_value_t = 2000)]
    rpc_run_ms: u64,
    /// Calls in flight at once in the RPC and /token runs.
    #[arg(long, default_value_t = 32)]
    rpc_concurrency: usize,
    /// Calls in flight in the RPC latency runs (light load).
    #[arg(long, default_value_t = 4)]
    rpc_latency_concurrency: usize,
    /// PostgreSQL server for the RPC runs (a database is created and dropped there); "" skips them.
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
    postgres: String,
    /// Authorization codes exchanged in the /token run.
    #[arg(long, default_value_t = 3000)]
    codes: usize,
    /// Whole consent flows (with connect) timed one at a time.
    #[arg(long, default_value_t = 20)]
    flows: usize,
    /// Cached grants at each step of the data-plane memory run.
    #[arg(long, value_delimiter = ',', default_value = "1000,10000,100000")]
    memory_grants: Vec<usize>,
    /// Closed loop through the warm data plane only (for profiling: `valgrind --tool=callgrind … --phases closed --only-warm`).
    #[arg(long)]
    only_warm: bool,
    /// Worker threads of the Gatehouse runtime (both planes); the load
    /// generator and the upstream keep two each.
    #[arg(long, default_value_t = 2)]
    gatehouse_threads: usize,
    /// Internal: run as the child data plane of the memory run.
    #[arg(long, hide = true)]
    child_data_plane: bool,
}

impl Args {
    fn phase(&self, name: &str) -> bool {
        match &self.phases {
            Some(phases) => phases.iter().any(|p| p == name),
            None if self.quick => matches!(name, "closed" | "fixed"),
            None => true,
        }
    }
}

/// The order of one round: every gateway run next to a direct one.
const ROUND: [Mode; 6] = [
    Mode::Direct,
    Mode::Warm,
    Mode::Direct,
    Mode::Stateless,
    Mode::Direct,
    Mode::Cold,
];

/// What one mode measured, summed over its runs.
#[derive(Default)]
struct Measured {
    latencies_us: Vec<u32>,
    service_us: Vec<u32>,
    errors: u64,
    first_error: Option<String>,
    elapsed: Duration,
    cpu: CpuSample,
}

impl Measured {
    fn add(&mut self, run: RunResult, cpu: &CpuSample) {
        self.latencies_us.extend_from_slice(&run.latencies_us);
        self.service_us.extend_from_slice(&run.service_us);
        self.errors += run.errors;
        if self.first_error.is_none() {
            self.first_error = run.first_error;
        }
        self.elapsed += run.elapsed;
        self.cpu.add(cpu);
    }

    fn finish(&mut self) {
        self.latencies_us.sort_unstable();
        self.service_us.sort_unstable();
    }

    /// Open loop: the quantile of the time from sending to the reply.
    fn service_q(&self, q: f64) -> u32 {
        quantile(&self.service_us, q)
    }

    fn calls(&self) -> u64 {
        self.latencies_us.len() as u64
    }

    fn rps(&self) -> f64 {
        self.calls() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    fn q(&self, q: f64) -> u32 {
        quantile(&self.latencies_us, q)
    }

    /// CPU microseconds per call of one part.
    fn per_call(&self, ns: u64) -> f64 {
        ns as f64 / 1000.0 / self.calls().max(1) as f64
    }
}

struct Setup {
    users: usize,
    signup: oauth::Users,
}

/// The allocator of the `gatehouse` binary (see its line in Cargo.toml).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.child_data_plane {
        return memory::child_main();
    }
    let users = args.users.unwrap_or(if args.quick { 50 } else { 1000 });
    let rounds = args.rounds.unwrap_or(if args.quick { 2 } else { 4 });
    let run = Duration::from_millis(args.run_ms.unwrap_or(if args.quick { 1500 } else { 3000 }));
    let rate_run = Duration::from_millis(args.rate_run_ms.unwrap_or(if args.quick { 1500 } else { 3000 }));
    if users == 0 || args.connections == 0 || rounds == 0 {
        bail!("--users, --connections and --rounds must be at least 1");
    }
    let started = Instant::now();
    // Gatehouse as deployed: `gatehouse up`'s log subscriber (text on stderr at
    // `info`, or `RUST_LOG`), so each request's span costs what it costs there.
    let _telemetry = gatehouse::telemetry::init(
        &gatehouse::config::LogConfig::default(),
        &gatehouse::config::TelemetryConfig::default(),
        gatehouse::telemetry::Planes {
            data: true,
            control: true,
        },
    );

    let runtime = |name: &str, threads: usize| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads.max(1))
            .thread_name(name)
            .enable_all()
            .build()
    };
    let upstream_rt = runtime(cpu::UPSTREAM, 2)?;
    let gatehouse_rt = runtime("gatehouse-rt", args.gatehouse_threads)?;
    let load_rt = runtime(cpu::LOADGEN, 2)?;

    let (upstream_url, _) = upstream_rt.block_on(upstream::start())?;
    // The demo OAuth provider: the authorization server of `vault`, which every
    // user connects while signing up, and (phase `flow`) an MCP server of its own.
    let demo = upstream_rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        gatehouse::demo::DemoUpstream::spawn(listener, gatehouse::demo::DemoConfig::default()).await
    })?;
    let demo_base = demo.base_url().to_owned();
    let demo_mcp = demo.mcp_url();
    let provider = fleet::DemoProvider {
        base_url: &demo_base,
        mcp_url: &demo_mcp,
    };
    let fleet = gatehouse_rt.block_on(fleet::Fleet::start(&upstream_url, &provider, args.phase("flow")))?;
    eprintln!(
        "fixture upstream {upstream_url}, Gatehouse {} (caches off: {})",
        fleet.issuer, fleet.cold_url
    );

    let result = load_rt.block_on(async {
        eprintln!(
            "signing up {users} users, each connecting {} ({} flows at a time)…",
            fleet::VAULT_SERVICE,
            args.signup_concurrency
        );
        let connect_to = oauth::ConnectTo {
            demo_base: &demo_base,
            service: fleet::VAULT_SERVICE,
        };
        let signup = oauth::sign_up(&fleet.issuer, &connect_to, users, args.signup_concurrency).await?;
        eprintln!("  done in {:.1} s", signup.elapsed.as_secs_f64());
        let connected = seed::connected_identities(&fleet.shared.database_url, fleet::VAULT_SERVICE).await?;
        if connected != users {
            bail!(
                "{connected} identities have a {} connection after {users} sign-ups",
                fleet::VAULT_SERVICE
            );
        }
        let targets = Arc::new(Targets::new(&upstream_url, &fleet.issuer, &fleet.cold_url, &signup.tokens)?);
        let setup = Setup { users, signup };
        if !args.phase("closed") && !args.phase("fixed") {
            return Ok((BTreeMap::new(), BTreeMap::new(), setup));
        }
        prepare_users(&targets, args.signup_concurrency).await?;
        measure(&args, &targets, rounds, run, rate_run, setup).await
    });
    let extras = match &result {
        Ok(_) => run_extras(&args, &fleet, &gatehouse_rt, &load_rt, &demo_base),
        Err(_) => Ok(Extras::default()),
    };
    gatehouse_rt.block_on(fleet.stop());
    drop(demo);
    let (closed, fixed, setup) = result?;
    let extras = extras?;

    let mut report = report_json(&args, &closed, &fixed, &setup, rounds, run, rate_run, started.elapsed());
    extras.add_json(&mut report);
    if args.quick {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        if !closed.is_empty() || !fixed.is_empty() {
            print_tables(&args, &closed, &fixed, &setup, rounds, run, rate_run);
        }
        extras.print(&args);
        if args.json {
            println!("\n```json\n{}\n```", serde_json::to_string_pretty(&report)?);
        }
    }
    Ok(())
}

/// What the phases after the hot path measured.
#[derive(Default)]
struct Extras {
    rpc: Vec<extra::RpcRow>,
    seeding: Vec<(&'static str, usize, f64)>,
    token: Option<extra::TokenRows>,
    flows: Vec<consent::FlowSteps>,
    memory: Option<extra::MemoryRows>,
    idle: Option<(Option<u64>, Option<u64>)>,
}

fn run_extras(
    args: &Args,
    fleet: &fleet::Fleet,
    gatehouse_rt: &tokio::runtime::Runtime,
    load_rt: &tokio::runtime::Runtime,
    demo_base: &str,
) -> anyhow::Result<Extras> {
    let mut extras = Extras::default();
    let mut meter = CpuMeter::default();
    let wants_store = ["rpc", "token", "memory"].iter().any(|p| args.phase(p));
    if wants_store {
        let run_id = format!("{:06x}", std::process::id() & 0xff_ffff);
        let mut seeder = load_rt.block_on(seed::Seeder::connect(&fleet.shared.database_url, &run_id))?;
        let (client_id, scope, resource) = load_rt.block_on(seeder.grant_shape_of_any())?;
        let shape = seed::GrantShape {
            client_id,
            scope,
            resource,
            redirect_uri: oauth::REDIRECT_URI.to_owned(),
        };
        if args.phase("rpc") {
            let options = extra::RpcOptions {
                levels: args.rpc_users.clone(),
                concurrency: args.rpc_concurrency,
                latency_concurrency: args.rpc_latency_concurrency,
                run: Duration::from_millis(args.rpc_run_ms),
            };
            eprintln!("control-plane RPCs on SQLite…");
            extras.rpc.extend(load_rt.block_on(extra::rpc_levels(
                "SQLite",
                &mut seeder,
                &shape,
                &fleet.shared,
                &fleet.shared.cp_url,
                &options,
                &mut meter,
            ))?);
            extras.seeding.push(("SQLite", seeder.seeded, seeder.took.as_secs_f64()));
            if !args.postgres.is_empty() {
                eprintln!("control-plane RPCs on PostgreSQL…");
                let name = format!("gatehouse_bench_{}", std::process::id());
                let pg_url = load_rt.block_on(seed::create_postgres_database(&args.postgres, &name))?;
                let outcome = (|| {
                    let (control_plane, cp_url) =
                        gatehouse_rt.block_on(fleet::second_control_plane(&fleet.shared, &fleet.issuer, &pg_url))?;
                    let measured = load_rt.block_on(async {
                        let mut pg = seed::Seeder::connect(&pg_url, &run_id).await?;
                        let rows =
                            extra::rpc_levels("PostgreSQL", &mut pg, &shape, &fleet.shared, &cp_url, &options, &mut meter).await;
                        let took = (pg.seeded, pg.took.as_secs_f64());
                        pg.close().await;
                        anyhow::Ok((rows?, took))
                    });
                    gatehouse_rt.block_on(control_plane.shutdown());
                    measured
                })();
                load_rt.block_on(seed::drop_postgres_database(&args.postgres, &name))?;
                let (rows, (seeded, took)) = outcome?;
                extras.rpc.extend(rows);
                extras.seeding.push(("PostgreSQL", seeded, took));
            }
        }
        if args.phase("token") {
            eprintln!("/token: code exchange and refresh…");
            if seeder.seeded == 0 {
                load_rt.block_on(seeder.seed_users(1000, &shape, &fleet.shared.vault()?, fleet::VAULT_SERVICE))?;
            }
            let codes = if args.quick { args.codes.min(500) } else { args.codes };
            extras.token = Some(load_rt.block_on(extra::token_endpoint(
                &fleet.issuer,
                &mut seeder,
                &shape,
                codes,
                args.rpc_concurrency.min(16),
                Duration::from_millis(args.rpc_run_ms),
                &mut meter,
            ))?);
        }
        if args.phase("memory") {
            let most = args.memory_grants.iter().copied().max().unwrap_or(0);
            if seeder.seeded < most {
                load_rt.block_on(seeder.seed_users(most, &shape, &fleet.shared.vault()?, fleet::VAULT_SERVICE))?;
            }
            eprintln!("data-plane memory (a child process), {:?} cached grants…", args.memory_grants);
            extras.memory = Some(load_rt.block_on(extra::data_plane_memory(
                &fleet.shared,
                &fleet.issuer,
                &seeder.tokens,
                &args.memory_grants,
                Duration::from_millis(args.rpc_run_ms),
            ))?);
        }
        load_rt.block_on(seeder.close());
    }
    if args.phase("flow") {
        eprintln!("{} consent flows with connect, one at a time…", args.flows);
        extras.flows = load_rt.block_on(extra::consent_flows(&fleet.issuer, demo_base, args.flows))?;
    }
    if args.phase("idle") {
        eprintln!("idle RSS of gatehouse up…");
        let settle = Duration::from_secs(3);
        extras.idle = Some((memory::idle_up_rss(true, settle)?, memory::idle_up_rss(false, settle)?));
    }
    Ok(extras)
}

impl Extras {
    fn add_json(&self, report: &mut Value) {
        let Some(out) = report.as_object_mut() else { return };
        if !self.rpc.is_empty() {
            let rows: Vec<Value> = self
                .rpc
                .iter()
                .map(|r| {
                    let mut v = r.summary.json();
                    v["backend"] = json!(r.backend);
                    v["users"] = json!(r.users);
                    v["rpc"] = json!(extra::rpc_label(r.rpc));
                    v["in_flight"] = json!(r.concurrency);
                    v
                })
                .collect();
            out.insert("rpc".into(), json!(rows));
            let seeding: Vec<Value> = self
                .seeding
                .iter()
                .map(|(b, n, s)| json!({"backend": b, "users": n, "seconds": round2(*s)}))
                .collect();
            out.insert("seeding".into(), json!(seeding));
        }
        if let Some(token) = &self.token {
            out.insert(
                "token_endpoint".into(),
                json!({"concurrency": token.concurrency, "exchange": token.exchange.json(), "refresh": token.refresh.json()}),
            );
        }
        if !self.flows.is_empty() {
            out.insert("consent_flow_with_connect".into(), extra::flows_json(&self.flows));
        }
        if let Some(memory) = &self.memory {
            let rows: Vec<Value> = memory
                .rows
                .iter()
                .map(|r| {
                    json!({
                        "grants": r.grants,
                        "rss_kib": r.rss_kib,
                        "per_grant_bytes": r.per_grant_bytes.round(),
                        "marginal_bytes_per_grant": r.marginal_bytes.round(),
                        "fill_seconds": round2(r.fill_seconds),
                        "warm": r.warm.json(),
                        "data_plane_cpu_us_per_call": round2(r.child_cpu_us),
                    })
                })
                .collect();
            out.insert(
                "data_plane_memory".into(),
                json!({"idle_rss_kib": memory.idle_rss_kib, "rows": rows}),
            );
        }
        if let Some((demo, bare)) = self.idle {
            out.insert(
                "gatehouse_up_idle_rss_kib".into(),
                json!({"with_demo": demo, "no_demo": bare}),
            );
        }
    }

    /// Every cost by users: the RPCs on both backends and the data plane's memory and warm calls.
    fn print_scaling(&self, args: &Args) {
        let mut levels: Vec<usize> = self.rpc.iter().map(|r| r.users).collect();
        if let Some(memory) = &self.memory {
            levels.extend(memory.rows.iter().map(|r| r.grants));
        }
        levels.sort_unstable();
        levels.dedup();
        if levels.len() < 2 {
            return;
        }
        let rpc = |backend: &str, kind: rpc::Rpc, users: usize| {
            let row = |concurrency: usize| {
                self.rpc
                    .iter()
                    .find(|r| r.backend == backend && r.rpc == kind && r.users == users && r.concurrency == concurrency)
            };
            match (row(args.rpc_concurrency), row(args.rpc_latency_concurrency)) {
                (Some(busy), Some(light)) => format!("{:.0} / {}", busy.summary.rps, light.summary.p99),
                _ => "–".to_owned(),
            }
        };
        println!("\n### How each cost grows with users\n");
        println!(
            "| users | resolve SQLite: calls/s ({} in flight) / p99 µs ({} in flight) | credential SQLite | resolve PostgreSQL | credential PostgreSQL | data-plane RSS KiB | bytes per cached grant | warm calls/s through the data plane | data-plane CPU/call µs |",
            args.rpc_concurrency, args.rpc_latency_concurrency
        );
        println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        for users in levels {
            let memory = self.memory.as_ref().and_then(|m| m.rows.iter().find(|r| r.grants == users));
            println!(
                "| {users} | {} | {} | {} | {} | {} | {} | {} | {} |",
                rpc("SQLite", rpc::Rpc::Resolve, users),
                rpc("SQLite", rpc::Rpc::Credential, users),
                rpc("PostgreSQL", rpc::Rpc::Resolve, users),
                rpc("PostgreSQL", rpc::Rpc::Credential, users),
                memory.map_or("–".to_owned(), |m| m.rss_kib.to_string()),
                memory.map_or("–".to_owned(), |m| format!("{:.0}", m.per_grant_bytes)),
                memory.map_or("–".to_owned(), |m| format!("{:.0}", m.warm.rps)),
                memory.map_or("–".to_owned(), |m| format!("{:.1}", m.child_cpu_us)),
            );
        }
    }

    fn print(&self, args: &Args) {
        if !self.rpc.is_empty() {
            println!(
                "\n### Control-plane RPCs, closed loop on one HTTP/2 channel, {} calls in flight (throughput) and {} (latency under light load); {} ms runs; each call a random seeded user with a sealed upstream token\n",
                args.rpc_concurrency, args.rpc_latency_concurrency, args.rpc_run_ms
            );
            println!(
                "| Backend | users (= connections in the vault) | RPC | in flight | calls/s | p50 µs | p99 µs | p99.9 µs | control plane CPU/call µs | PostgreSQL CPU/call µs | client CPU/call µs | machine busy | errors |"
            );
            println!("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
            for r in &self.rpc {
                let s = &r.summary;
                println!(
                    "| {} | {} | {} | {} | {:.0} | {} | {} | {} | {:.1} | {} | {:.1} | {:.0}% | {} |",
                    r.backend,
                    r.users,
                    extra::rpc_label(r.rpc),
                    r.concurrency,
                    s.rps,
                    s.p50,
                    s.p99,
                    s.p999,
                    s.gatehouse_cpu_us,
                    if r.backend == "PostgreSQL" {
                        format!("{:.1}", s.postgres_cpu_us)
                    } else {
                        "–".into()
                    },
                    s.loadgen_cpu_us,
                    s.machine_busy_pct,
                    s.errors
                );
                if let Some(err) = &s.first_error {
                    eprintln!("{} {} {}: first error: {err}", r.backend, r.users, extra::rpc_label(r.rpc));
                }
            }
            for (backend, users, seconds) in &self.seeding {
                println!(
                    "\nSeeding {backend}: {users} users (identity, grant, access token, sealed connection) in {seconds:.1} s."
                );
            }
        }
        if let Some(token) = &self.token {
            println!(
                "\n### `POST /token` through the data plane, closed loop, {} connections\n",
                token.concurrency
            );
            println!(
                "| Grant | calls/s | p50 µs | p99 µs | p99.9 µs | Gatehouse CPU/call µs | load generator CPU/call µs | errors |"
            );
            println!("|---|---:|---:|---:|---:|---:|---:|---:|");
            for (name, s) in [
                ("authorization_code (exchange)", &token.exchange),
                ("refresh_token (rotation)", &token.refresh),
            ] {
                println!(
                    "| {name} | {:.0} | {} | {} | {} | {:.1} | {:.1} | {} |",
                    s.rps, s.p50, s.p99, s.p999, s.gatehouse_cpu_us, s.loadgen_cpu_us, s.errors
                );
                if let Some(err) = &s.first_error {
                    eprintln!("/token {name}: first error: {err}");
                }
            }
        }
        if !self.flows.is_empty() {
            let j = extra::flows_json(&self.flows);
            println!(
                "\n### One whole consent flow with connect, one at a time ({} flows)\n",
                self.flows.len()
            );
            println!("| Step | p50 µs |");
            println!("|---|---:|");
            for (label, key) in [
                ("register + GET /authorize", "authorize_p50_us"),
                ("identity page → Skip → services page", "identity_p50_us"),
                (
                    "Connect → provider consent → /oauth/callback → services page",
                    "connect_p50_us",
                ),
                ("Approve → code", "approve_p50_us"),
                ("POST /token", "token_p50_us"),
                ("**whole flow**", "p50_us"),
            ] {
                println!("| {label} | {} |", j[key]);
            }
        }
        if let Some(memory) = &self.memory {
            println!(
                "\n### Data-plane memory and warm calls by cached grants (data plane alone in a child process; idle RSS {} KiB)\n",
                memory.idle_rss_kib
            );
            println!(
                "| cached grants | RSS KiB | (RSS − idle) / grant, bytes | marginal bytes / grant | warm calls/s (32 conns) | p50 µs | p99 µs | data-plane CPU/call µs |"
            );
            println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
            for r in &memory.rows {
                println!(
                    "| {} | {} | {:.0} | {:.0} | {:.0} | {} | {} | {:.1} |",
                    r.grants, r.rss_kib, r.per_grant_bytes, r.marginal_bytes, r.warm.rps, r.warm.p50, r.warm.p99, r.child_cpu_us
                );
            }
        }
        self.print_scaling(args);
        if let Some((demo, bare)) = self.idle {
            let show = |v: Option<u64>| {
                v.map_or("not measured (no gatehouse binary next to this one)".to_owned(), |k| {
                    format!("{k} KiB")
                })
            };
            println!(
                "\n### Idle RSS of `gatehouse up`\n\nWith the demo upstream: {}; with `--no-demo`: {}.",
                show(demo),
                show(bare)
            );
        }
    }
}

type Results = (BTreeMap<Mode, Measured>, BTreeMap<Mode, Measured>, Setup);

async fn measure(
    args: &Args,
    targets: &Arc<Targets>,
    rounds: usize,
    run: Duration,
    rate_run: Duration,
    setup: Setup,
) -> anyhow::Result<Results> {
    let clients = (0..args.connections)
        .map(|_| load::connection())
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut meter = CpuMeter::default();
    let mut seed = 1u64;

    let (warm_up, order): (&[Mode], &[Mode]) = if args.only_warm {
        (&[Mode::Warm], &[Mode::Warm])
    } else {
        (&[Mode::Direct, Mode::Warm, Mode::Stateless, Mode::Cold], &ROUND)
    };
    eprintln!("warming up every mode…");
    for &mode in warm_up {
        let result = load::closed_loop(targets, &clients, mode, Duration::from_millis(400), seed).await;
        seed += 1;
        if result.latencies_us.is_empty() {
            bail!("{}: no call succeeded: {:?}", mode.key(), result.first_error);
        }
    }

    let mut closed: BTreeMap<Mode, Measured> = BTreeMap::new();
    let rounds = if args.phase("closed") { rounds } else { 0 };
    for round in 0..rounds {
        eprintln!(
            "closed loop, {} connections, round {}/{rounds} ({} ms runs)…",
            args.connections,
            round + 1,
            run.as_millis()
        );
        for &mode in order {
            let before = meter.sample();
            let result = load::closed_loop(targets, &clients, mode, run, seed).await;
            let cpu = meter.sample().since(&before);
            seed += 1;
            closed.entry(mode).or_default().add(result, &cpu);
        }
    }
    closed.values_mut().for_each(Measured::finish);

    // Open loop: a shared pool, as many connections as the queue needs.
    let http = reqwest::Client::builder()
        .no_proxy()
        .http1_only()
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(10))
        .build()?;
    let rate_rounds = if !args.phase("fixed") {
        0
    } else if args.quick {
        1
    } else {
        2
    };
    let rate_order: &[Mode] = if args.quick {
        &[Mode::Direct, Mode::Warm, Mode::Direct, Mode::Stateless]
    } else {
        &ROUND
    };
    let mut fixed: BTreeMap<Mode, Measured> = BTreeMap::new();
    for round in 0..rate_rounds {
        eprintln!(
            "fixed rate {}/s, round {}/{rate_rounds} ({} ms runs)…",
            args.rate,
            round + 1,
            rate_run.as_millis()
        );
        for &mode in rate_order {
            let before = meter.sample();
            let result = load::fixed_rate(targets, &http, mode, args.rate, rate_run, seed).await;
            let cpu = meter.sample().since(&before);
            seed += 1;
            fixed.entry(mode).or_default().add(result, &cpu);
        }
    }
    fixed.values_mut().for_each(Measured::finish);
    Ok((closed, fixed, setup))
}

/// Per user: `initialize` + `notifications/initialized` (2025-06-18) on both
/// data planes, then one call in each style, so upstream sessions exist and
/// the warm caches hold every user before anything is measured.
async fn prepare_users(targets: &Arc<Targets>, concurrency: usize) -> anyhow::Result<()> {
    eprintln!("initializing {} users on both data planes…", targets.bearers.len());
    let started = Instant::now();
    let http = oauth::client()?;
    let permits = Arc::new(tokio::sync::Semaphore::new(concurrency.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    for user in 0..targets.bearers.len() {
        let (targets, http, permits) = (targets.clone(), http.clone(), permits.clone());
        tasks.spawn(async move {
            let _permit = permits.acquire_owned().await?;
            for url in [&targets.warm, &targets.cold] {
                let bearer = &targets.bearers[user];
                initialize(&http, url, bearer)
                    .await
                    .with_context(|| format!("user {user} at {url}"))?;
            }
            anyhow::Ok(())
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined??;
    }
    eprintln!("  done in {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

async fn initialize(http: &reqwest::Client, url: &str, bearer: &HeaderValue) -> anyhow::Result<()> {
    let post = |body: &'static str| {
        http.post(url)
            .header(header::AUTHORIZATION, bearer.clone())
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::ACCEPT, "application/json, text/event-stream")
            .body(body)
    };
    let response = post(
        r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"gatehouse-bench","version":"1"}}}"#,
    )
    .send()
    .await?;
    let status = response.status();
    let body = response.text().await?;
    if !status.is_success() || !body.contains("2025-06-18") {
        bail!("initialize: {status} {body}");
    }
    let response = post(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#)
        .header("mcp-protocol-version", "2025-06-18")
        .send()
        .await?;
    if response.status().as_u16() != 202 {
        bail!("notifications/initialized: {}", response.status());
    }
    Ok(())
}

fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 { a / b } else { 0.0 }
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

#[allow(clippy::too_many_arguments)]
fn report_json(
    args: &Args,
    closed: &BTreeMap<Mode, Measured>,
    fixed: &BTreeMap<Mode, Measured>,
    setup: &Setup,
    rounds: usize,
    run: Duration,
    rate_run: Duration,
    wall: Duration,
) -> Value {
    let empty = Measured::default();
    let c = |mode| closed.get(&mode).unwrap_or(&empty);
    let f = |mode| fixed.get(&mode).unwrap_or(&empty);
    let direct = c(Mode::Direct);
    let mut out = serde_json::Map::new();
    out.insert("direct_rps".into(), json!(direct.rps().round()));
    out.insert("gateway_rps".into(), json!(c(Mode::Warm).rps().round()));
    out.insert("ratio".into(), json!(round2(ratio(c(Mode::Warm).rps(), direct.rps()))));
    out.insert("direct_p50_us".into(), json!(direct.q(0.5)));
    out.insert("gateway_p50_us".into(), json!(c(Mode::Warm).q(0.5)));
    out.insert("direct_p99_us".into(), json!(direct.q(0.99)));
    out.insert("gateway_p99_us".into(), json!(c(Mode::Warm).q(0.99)));
    for mode in [Mode::Direct, Mode::Warm, Mode::Stateless, Mode::Cold] {
        let m = c(mode);
        let key = mode.key();
        out.insert(format!("{key}_calls"), json!(m.calls()));
        out.insert(format!("{key}_errors"), json!(m.errors));
        if mode != Mode::Direct && mode != Mode::Warm {
            out.insert(format!("{key}_rps"), json!(m.rps().round()));
            out.insert(format!("{key}_ratio"), json!(round2(ratio(m.rps(), direct.rps()))));
            out.insert(format!("{key}_p50_us"), json!(m.q(0.5)));
            out.insert(format!("{key}_p99_us"), json!(m.q(0.99)));
        }
        out.insert(format!("{key}_p999_us"), json!(m.q(0.999)));
        out.insert(format!("{key}_cpu_us_per_call"), json!(round2(m.per_call(m.cpu.process_ns))));
        out.insert(
            format!("{key}_gatehouse_cpu_us_per_call"),
            json!(round2(m.per_call(m.cpu.gatehouse_ns))),
        );
        out.insert(
            format!("{key}_loadgen_cpu_us_per_call"),
            json!(round2(m.per_call(m.cpu.loadgen_ns))),
        );
        out.insert(
            format!("{key}_upstream_cpu_us_per_call"),
            json!(round2(m.per_call(m.cpu.upstream_ns))),
        );
        out.insert(format!("{key}_machine_busy_pct"), json!(m.cpu.machine_busy_percent().round()));
    }
    let fixed_direct = f(Mode::Direct);
    let mut rate = serde_json::Map::new();
    for (mode, m) in fixed {
        let key = mode.key();
        rate.insert(format!("{key}_achieved_rps"), json!(m.rps().round()));
        rate.insert(format!("{key}_p50_us"), json!(m.q(0.5)));
        rate.insert(format!("{key}_p99_us"), json!(m.q(0.99)));
        rate.insert(format!("{key}_p999_us"), json!(m.q(0.999)));
        rate.insert(format!("{key}_errors"), json!(m.errors));
        rate.insert(format!("{key}_service_p50_us"), json!(m.service_q(0.5)));
        rate.insert(format!("{key}_service_p99_us"), json!(m.service_q(0.99)));
        rate.insert(
            format!("{key}_gatehouse_cpu_us_per_call"),
            json!(round2(m.per_call(m.cpu.gatehouse_ns))),
        );
        if *mode != Mode::Direct {
            rate.insert(
                format!("{key}_added_p50_us"),
                json!(i64::from(m.q(0.5)) - i64::from(fixed_direct.q(0.5))),
            );
            rate.insert(
                format!("{key}_added_p99_us"),
                json!(i64::from(m.q(0.99)) - i64::from(fixed_direct.q(0.99))),
            );
            rate.insert(
                format!("{key}_added_service_p50_us"),
                json!(i64::from(m.service_q(0.5)) - i64::from(fixed_direct.service_q(0.5))),
            );
            rate.insert(
                format!("{key}_added_service_p99_us"),
                json!(i64::from(m.service_q(0.99)) - i64::from(fixed_direct.service_q(0.99))),
            );
        }
    }
    out.insert("fixed_rate".into(), json!({ "rate": args.rate, "results": rate }));
    let warm = c(Mode::Warm);
    let added_p50 = i64::from(f(Mode::Warm).q(0.5)) - i64::from(fixed_direct.q(0.5));
    let added_p99 = i64::from(f(Mode::Warm).q(0.99)) - i64::from(fixed_direct.q(0.99));
    out.insert(
        "targets".into(),
        json!({
            "ratio_at_least_0.35": ratio(warm.rps(), direct.rps()) >= 0.35,
            "gatehouse_cpu_at_most_80us": warm.per_call(warm.cpu.gatehouse_ns) <= 80.0,
            "fixed_rate_added_p50_at_most_150us": added_p50 <= 150,
            "fixed_rate_added_p99_at_most_1ms": added_p99 <= 1000,
            "nocache_ratio_at_least_0.20": ratio(c(Mode::Cold).rps(), direct.rps()) >= 0.20,
        }),
    );
    let mut flows: Vec<u32> = setup.signup.flow_times.iter().map(|d| micros(*d)).collect();
    flows.sort_unstable();
    let mut exchanges: Vec<u32> = setup.signup.token_times.iter().map(|d| micros(*d)).collect();
    exchanges.sort_unstable();
    out.insert(
        "setup".into(),
        json!({
            "users": setup.users,
            "signup_concurrency": args.signup_concurrency,
            "signup_seconds": round2(setup.signup.elapsed.as_secs_f64()),
            "consent_flow_p50_us_under_concurrency": quantile(&flows, 0.5),
            "token_exchange_p50_us_under_concurrency": quantile(&exchanges, 0.5),
            "token_exchange_p99_us_under_concurrency": quantile(&exchanges, 0.99),
        }),
    );
    out.insert(
        "config".into(),
        json!({
            "connections": args.connections,
            "rounds": rounds,
            "run_ms": run.as_millis() as u64,
            "rate_run_ms": rate_run.as_millis() as u64,
            "quick": args.quick,
            "wall_seconds": round2(wall.as_secs_f64()),
        }),
    );
    Value::Object(out)
}

fn micros(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}

fn print_tables(
    args: &Args,
    closed: &BTreeMap<Mode, Measured>,
    fixed: &BTreeMap<Mode, Measured>,
    setup: &Setup,
    rounds: usize,
    run: Duration,
    rate_run: Duration,
) {
    let empty = Measured::default();
    let direct = closed.get(&Mode::Direct).unwrap_or(&empty);
    println!(
        "### `tools/call echo` (through Gatehouse: `vault__echo`, each user's own upstream connection), closed loop, {} keep-alive connections ({rounds} rounds of {} ms runs per gateway mode, direct runs in between)\n",
        args.connections,
        run.as_millis()
    );
    println!(
        "| Run | calls/s | × direct | p50 µs | p99 µs | p99.9 µs | CPU/call, whole process µs | Gatehouse (both planes) µs | load generator µs | upstream µs | machine busy | errors |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for mode in [Mode::Direct, Mode::Warm, Mode::Stateless, Mode::Cold] {
        let m = closed.get(&mode).unwrap_or(&empty);
        println!(
            "| {} | {:.0} | {:.2} | {} | {} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.0}% | {} |",
            mode.label(),
            m.rps(),
            ratio(m.rps(), direct.rps()),
            m.q(0.5),
            m.q(0.99),
            m.q(0.999),
            m.per_call(m.cpu.process_ns),
            m.per_call(m.cpu.gatehouse_ns),
            m.per_call(m.cpu.loadgen_ns),
            m.per_call(m.cpu.upstream_ns),
            m.cpu.machine_busy_percent(),
            m.errors,
        );
    }
    let fixed_direct = fixed.get(&Mode::Direct).unwrap_or(&empty);
    println!(
        "\n### `tools/call echo` (through Gatehouse: `vault__echo`), open loop at {} calls/s ({} ms runs, alternated; latency from each call's scheduled start)\n",
        args.rate,
        rate_run.as_millis()
    );
    println!(
        "| Run | achieved calls/s | p50 µs | p99 µs | p99.9 µs | added p50 µs | added p99 µs | send→reply p50 / p99 µs | added send→reply p50 / p99 µs | Gatehouse CPU/call µs | errors |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (mode, m) in fixed {
        let added = |ours: u32, direct: u32| {
            if *mode == Mode::Direct {
                "–".to_owned()
            } else {
                (i64::from(ours) - i64::from(direct)).to_string()
            }
        };
        println!(
            "| {} | {:.0} | {} | {} | {} | {} | {} | {} / {} | {} / {} | {:.1} | {} |",
            mode.label(),
            m.rps(),
            m.q(0.5),
            m.q(0.99),
            m.q(0.999),
            added(m.q(0.5), fixed_direct.q(0.5)),
            added(m.q(0.99), fixed_direct.q(0.99)),
            m.service_q(0.5),
            m.service_q(0.99),
            added(m.service_q(0.5), fixed_direct.service_q(0.5)),
            added(m.service_q(0.99), fixed_direct.service_q(0.99)),
            m.per_call(m.cpu.gatehouse_ns),
            m.errors,
        );
    }
    let mut flows: Vec<u32> = setup.signup.flow_times.iter().map(|d| micros(*d)).collect();
    flows.sort_unstable();
    let mut exchanges: Vec<u32> = setup.signup.token_times.iter().map(|d| micros(*d)).collect();
    exchanges.sort_unstable();
    let mut connects: Vec<u32> = setup.signup.connect_times.iter().map(|d| micros(*d)).collect();
    connects.sort_unstable();
    println!(
        "\n### Setup\n\n{} users signed up in {:.1} s, {} flows at a time (register once; per user authorize → identity (Skip) → Connect `{}` → demo provider consent → /oauth/callback → services page → approve → /token).\nUnder that concurrency: a whole flow p50 {} µs, p99 {} µs; the connect step p50 {} µs, p99 {} µs; the `/token` code exchange p50 {} µs, p99 {} µs.",
        setup.users,
        setup.signup.elapsed.as_secs_f64(),
        args.signup_concurrency,
        fleet::VAULT_SERVICE,
        quantile(&flows, 0.5),
        quantile(&flows, 0.99),
        quantile(&connects, 0.5),
        quantile(&connects, 0.99),
        quantile(&exchanges, 0.5),
        quantile(&exchanges, 0.99),
    );
    for (mode, m) in closed.iter().chain(fixed.iter()) {
        if let Some(err) = &m.first_error {
            eprintln!("{}: first error: {err}", mode.key());
        }
    }
}
