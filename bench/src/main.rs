//! `gatehouse-bench`: what Gatehouse adds to an MCP `tools/call` over calling
//! the upstream directly (issue 6). In one process, each on its own Tokio
//! runtime so CPU time can be told apart: a fixture upstream, Gatehouse (a
//! control plane on SQLite and two data planes, caches on and off), and the
//! load generator. K synthetic users go through the consent flow; then
//! `tools/call echo` is measured direct, through Gatehouse (2025-06-18
//! session and 2026-07-28 stateless) and with the data plane's caches off,
//! in alternating short runs, at a fixed concurrency and at a fixed rate.
//!
//! `--quick` prints one JSON object; the full run prints markdown tables.
//! Progress goes to stderr.

mod cpu;
mod fleet;
mod load;
mod oauth;
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

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let users = args.users.unwrap_or(if args.quick { 50 } else { 1000 });
    let rounds = args.rounds.unwrap_or(if args.quick { 2 } else { 4 });
    let run = Duration::from_millis(args.run_ms.unwrap_or(if args.quick { 1500 } else { 3000 }));
    let rate_run = Duration::from_millis(args.rate_run_ms.unwrap_or(if args.quick { 1500 } else { 3000 }));
    if users == 0 || args.connections == 0 || rounds == 0 {
        bail!("--users, --connections and --rounds must be at least 1");
    }
    let started = Instant::now();

    let runtime = |name: &str| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name(name)
            .enable_all()
            .build()
    };
    let upstream_rt = runtime(cpu::UPSTREAM)?;
    let gatehouse_rt = runtime("gatehouse-rt")?;
    let load_rt = runtime(cpu::LOADGEN)?;

    let (upstream_url, _) = upstream_rt.block_on(upstream::start())?;
    let fleet = gatehouse_rt.block_on(fleet::Fleet::start(&upstream_url))?;
    eprintln!(
        "fixture upstream {upstream_url}, Gatehouse {} (caches off: {})",
        fleet.issuer, fleet.cold_url
    );

    let result = load_rt.block_on(async {
        eprintln!("signing up {users} users ({} flows at a time)…", args.signup_concurrency);
        let signup = oauth::sign_up(&fleet.issuer, users, args.signup_concurrency).await?;
        eprintln!("  done in {:.1} s", signup.elapsed.as_secs_f64());
        let targets = Arc::new(Targets::new(&upstream_url, &fleet.issuer, &fleet.cold_url, &signup.tokens)?);
        prepare_users(&targets, args.signup_concurrency).await?;
        let setup = Setup { users, signup };
        measure(&args, &targets, rounds, run, rate_run, setup).await
    });
    gatehouse_rt.block_on(fleet.stop());
    let (closed, fixed, setup) = result?;

    let report = report_json(&args, &closed, &fixed, &setup, rounds, run, rate_run, started.elapsed());
    if args.quick {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_tables(&args, &closed, &fixed, &setup, rounds, run, rate_run);
        if args.json {
            println!("\n```json\n{}\n```", serde_json::to_string_pretty(&report)?);
        }
    }
    Ok(())
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

    eprintln!("warming up every mode…");
    for mode in [Mode::Direct, Mode::Warm, Mode::Stateless, Mode::Cold] {
        let result = load::closed_loop(targets, &clients, mode, Duration::from_millis(400), seed).await;
        seed += 1;
        if result.latencies_us.is_empty() {
            bail!("{}: no call succeeded: {:?}", mode.key(), result.first_error);
        }
    }

    let mut closed: BTreeMap<Mode, Measured> = BTreeMap::new();
    for round in 0..rounds {
        eprintln!(
            "closed loop, {} connections, round {}/{rounds} ({} ms runs)…",
            args.connections,
            round + 1,
            run.as_millis()
        );
        for mode in ROUND {
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
    let rate_rounds = if args.quick { 1 } else { 2 };
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
        "### `tools/call echo`, closed loop, {} keep-alive connections ({rounds} rounds of {} ms runs per gateway mode, direct runs in between)\n",
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
        "\n### `tools/call echo`, open loop at {} calls/s ({} ms runs, alternated; latency from each call's scheduled start)\n",
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
    println!(
        "\n### Setup\n\n{} users signed up in {:.1} s, {} flows at a time (register once; per user authorize → identity (Skip) → approve → /token; no upstream connect step).\nUnder that concurrency: a whole flow p50 {} µs, p99 {} µs; the `/token` code exchange p50 {} µs, p99 {} µs.",
        setup.users,
        setup.signup.elapsed.as_secs_f64(),
        args.signup_concurrency,
        quantile(&flows, 0.5),
        quantile(&flows, 0.99),
        quantile(&exchanges, 0.5),
        quantile(&exchanges, 0.99),
    );
    for (mode, m) in closed.iter().chain(fixed.iter()) {
        if let Some(err) = &m.first_error {
            eprintln!("{}: first error: {err}", mode.key());
        }
    }
}
