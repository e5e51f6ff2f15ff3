//! The measurements beyond the `/mcp` hot path: the control plane's RPCs at
//! 1,000 → 100,000 seeded users on SQLite and PostgreSQL, `/token`, the whole
//! consent flow with connect, data-plane memory per cached grant, and the idle
//! RSS of `gatehouse up`. Each returns rows for the tables and the JSON.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use reqwest::header::HeaderValue;
use serde_json::{Value, json};

use crate::consent::{self, FlowSteps};
use crate::cpu::{CpuMeter, CpuSample};
use crate::fleet::{self, Shared, VAULT_SERVICE};
use crate::load::{RunResult, quantile};
use crate::memory::{self, ChildDataPlane};
use crate::rpc::{self, Rpc};
use crate::seed::{GrantShape, Seeder};

/// A run's latencies, sorted, and what it cost.
#[derive(Debug, Default, Clone)]
pub struct Summary {
    pub calls: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    pub rps: f64,
    pub p50: u32,
    pub p99: u32,
    pub p999: u32,
    /// Gatehouse threads' CPU per call, µs.
    pub gatehouse_cpu_us: f64,
    /// Load generator's CPU per call, µs.
    pub loadgen_cpu_us: f64,
    /// PostgreSQL server processes' CPU per call, µs (PostgreSQL runs only).
    pub postgres_cpu_us: f64,
    pub machine_busy_pct: f64,
}

impl Summary {
    pub fn of(mut run: RunResult, cpu: Option<&CpuSample>) -> Self {
        run.latencies_us.sort_unstable();
        let calls = run.latencies_us.len() as u64;
        let per = |ns: u64| ns as f64 / 1000.0 / calls.max(1) as f64;
        Self {
            calls,
            errors: run.errors,
            first_error: run.first_error,
            rps: calls as f64 / run.elapsed.as_secs_f64().max(1e-9),
            p50: quantile(&run.latencies_us, 0.5),
            p99: quantile(&run.latencies_us, 0.99),
            p999: quantile(&run.latencies_us, 0.999),
            gatehouse_cpu_us: cpu.map_or(0.0, |c| per(c.gatehouse_ns)),
            loadgen_cpu_us: cpu.map_or(0.0, |c| per(c.loadgen_ns)),
            postgres_cpu_us: 0.0,
            machine_busy_pct: cpu.map_or(0.0, CpuSample::machine_busy_percent),
        }
    }

    pub fn json(&self) -> Value {
        json!({
            "calls": self.calls,
            "errors": self.errors,
            "rps": self.rps.round(),
            "p50_us": self.p50,
            "p99_us": self.p99,
            "p999_us": self.p999,
            "gatehouse_cpu_us_per_call": round1(self.gatehouse_cpu_us),
            "loadgen_cpu_us_per_call": round1(self.loadgen_cpu_us),
            "postgres_cpu_us_per_call": round1(self.postgres_cpu_us),
            "machine_busy_pct": self.machine_busy_pct.round(),
        })
    }
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// One RPC measurement: backend, users in the store, which RPC.
#[derive(Debug, Clone)]
pub struct RpcRow {
    pub backend: &'static str,
    pub users: usize,
    pub rpc: Rpc,
    /// Calls in flight.
    pub concurrency: usize,
    pub summary: Summary,
}

pub struct RpcOptions {
    pub levels: Vec<usize>,
    /// Calls in flight of the throughput runs.
    pub concurrency: usize,
    /// Calls in flight of the latency runs (light load: p99 without queueing).
    pub latency_concurrency: usize,
    pub run: Duration,
}

/// Seeds `seeder`'s store up to each level and measures both RPCs against
/// the control plane at `cp_url`.
pub async fn rpc_levels(
    backend: &'static str,
    seeder: &mut Seeder,
    shape: &GrantShape,
    shared: &Shared,
    cp_url: &str,
    options: &RpcOptions,
    meter: &mut CpuMeter,
) -> anyhow::Result<Vec<RpcRow>> {
    let vault = shared.vault()?;
    let client = rpc::client(cp_url, &shared.credential).await?;
    let mut rows = Vec::new();
    for &level in &options.levels {
        let before = seeder.took;
        seeder.seed_users(level, shape, &vault, VAULT_SERVICE).await?;
        eprintln!(
            "  {backend}: {level} users seeded (+{:.1} s); resolve and credential runs…",
            (seeder.took - before).as_secs_f64()
        );
        let users = Arc::new(rpc::Users {
            tokens: seeder.tokens.clone(),
            grants: (0..seeder.seeded).map(|i| seeder.grant_id(i)).collect(),
            service: VAULT_SERVICE.to_owned(),
        });
        for rpc_kind in [Rpc::Resolve, Rpc::Credential] {
            // A short warm-up: connections, statement caches, the page cache.
            rpc::closed_loop(
                &client,
                &users,
                level,
                rpc_kind,
                options.concurrency,
                Duration::from_millis(300),
                7,
            )
            .await;
            for concurrency in [options.concurrency, options.latency_concurrency] {
                let before = meter.sample();
                let pg_before = memory::postgres_cpu_ns();
                let run = rpc::closed_loop(&client, &users, level, rpc_kind, concurrency, options.run, level as u64).await;
                let cpu = meter.sample().since(&before);
                let pg = memory::postgres_cpu_ns().saturating_sub(pg_before);
                let mut summary = Summary::of(run, Some(&cpu));
                if backend == "PostgreSQL" {
                    summary.postgres_cpu_us = pg as f64 / 1000.0 / summary.calls.max(1) as f64;
                }
                rows.push(RpcRow {
                    backend,
                    users: level,
                    rpc: rpc_kind,
                    concurrency,
                    summary,
                });
            }
        }
    }
    Ok(rows)
}

/// `/token`: code exchange and refresh.
pub struct TokenRows {
    pub exchange: Summary,
    pub refresh: Summary,
    pub concurrency: usize,
}

pub async fn token_endpoint(
    issuer: &str,
    seeder: &mut Seeder,
    shape: &GrantShape,
    codes: usize,
    concurrency: usize,
    refresh_run: Duration,
    meter: &mut CpuMeter,
) -> anyhow::Result<TokenRows> {
    let verifier = crate::oauth::verifier();
    let seeded = seeder.seed_codes(codes, shape, &verifier, "t").await?;
    // Warm-up: a few exchanges, not counted.
    let warm: Vec<String> = seeder.seed_codes(concurrency * 2, shape, &verifier, "w").await?;
    consent::exchange(issuer, &shape.client_id, warm, &verifier, concurrency).await?;
    let before = meter.sample();
    let (run, refresh_tokens) = consent::exchange(issuer, &shape.client_id, seeded, &verifier, concurrency).await?;
    let cpu = meter.sample().since(&before);
    let exchange = Summary::of(run, Some(&cpu));
    let before = meter.sample();
    let run = consent::refresh(issuer, &shape.client_id, refresh_tokens, concurrency, refresh_run).await?;
    let cpu = meter.sample().since(&before);
    Ok(TokenRows {
        exchange,
        refresh: Summary::of(run, Some(&cpu)),
        concurrency,
    })
}

/// Consent flows with connect, one at a time.
pub async fn consent_flows(issuer: &str, demo_base: &str, count: usize) -> anyhow::Result<Vec<FlowSteps>> {
    let mut flows = Vec::with_capacity(count);
    // One flow first, not counted (the provider registration of Gatehouse happens on the first connect).
    consent::flow_with_connect(issuer, demo_base, fleet::DEMO_SERVICE, "warmup")
        .await
        .context("consent flow (warm-up)")?;
    for i in 0..count {
        let steps = consent::flow_with_connect(issuer, demo_base, fleet::DEMO_SERVICE, &format!("person{i}"))
            .await
            .with_context(|| format!("consent flow {i}"))?;
        flows.push(steps);
    }
    Ok(flows)
}

/// One step of the memory run.
#[derive(Debug, Clone)]
pub struct MemoryRow {
    pub grants: usize,
    pub rss_kib: u64,
    /// (RSS − idle RSS) / grants, bytes.
    pub per_grant_bytes: f64,
    /// (RSS − previous RSS) / (grants − previous grants), bytes.
    pub marginal_bytes: f64,
    pub fill_seconds: f64,
    /// Warm calls over every cached grant, through the child alone.
    pub warm: Summary,
    /// The child data plane's CPU per warm call, µs.
    pub child_cpu_us: f64,
}

pub struct MemoryRows {
    pub idle_rss_kib: u64,
    pub rows: Vec<MemoryRow>,
}

pub async fn data_plane_memory(
    shared: &Shared,
    issuer: &str,
    tokens: &[String],
    levels: &[usize],
    warm_run: Duration,
) -> anyhow::Result<MemoryRows> {
    let bearers: Vec<HeaderValue> = tokens
        .iter()
        .map(|t| HeaderValue::from_str(&format!("Bearer {t}")))
        .collect::<Result<_, _>>()?;
    let bearers = Arc::new(bearers);
    let child = ChildDataPlane::spawn(&shared.cp_url, &shared.credential, issuer)?;
    let result = async {
        // Idle: after one call (lazy state: the catalogue, the connection pools).
        memory::fill(&child.url, &bearers, 0, 1, 1).await?;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let idle = child.rss_kib();
        let mut rows = Vec::new();
        let (mut filled, mut previous_rss) = (1usize, idle);
        for &level in levels {
            let level = level.min(bearers.len());
            let started = Instant::now();
            memory::fill(&child.url, &bearers, filled, level, 32).await?;
            let fill_seconds = started.elapsed().as_secs_f64();
            tokio::time::sleep(Duration::from_millis(500)).await;
            let rss = child.rss_kib();
            let cpu_before = child.cpu_ns();
            let run = memory::warm(&child.url, &bearers, level, 32, warm_run).await?;
            let cpu = child.cpu_ns().saturating_sub(cpu_before);
            let warm = Summary::of(run, None);
            eprintln!(
                "  {level} grants cached: RSS {} KiB (filled in {fill_seconds:.1} s), warm {:.0} calls/s",
                rss, warm.rps
            );
            rows.push(MemoryRow {
                grants: level,
                rss_kib: rss,
                per_grant_bytes: (rss.saturating_sub(idle) * 1024) as f64 / level as f64,
                marginal_bytes: (rss.saturating_sub(previous_rss) * 1024) as f64 / (level - filled).max(1) as f64,
                fill_seconds,
                child_cpu_us: cpu as f64 / 1000.0 / warm.calls.max(1) as f64,
                warm,
            });
            filled = level;
            previous_rss = rss;
        }
        anyhow::Ok(MemoryRows {
            idle_rss_kib: idle,
            rows,
        })
    }
    .await;
    child.stop();
    result
}

pub fn rpc_label(rpc: Rpc) -> &'static str {
    match rpc {
        Rpc::Resolve => "ResolveAccessToken",
        Rpc::Credential => "GetUpstreamCredential",
    }
}

pub fn flows_json(flows: &[FlowSteps]) -> Value {
    let q = |f: fn(&FlowSteps) -> Duration, p: f64| {
        let mut v: Vec<u32> = flows.iter().map(|s| crate::load::micros(f(s))).collect();
        v.sort_unstable();
        quantile(&v, p)
    };
    json!({
        "flows": flows.len(),
        "p50_us": q(|s| s.total, 0.5),
        "max_us": q(|s| s.total, 1.0),
        "authorize_p50_us": q(|s| s.authorize, 0.5),
        "identity_p50_us": q(|s| s.identity, 0.5),
        "connect_p50_us": q(|s| s.connect, 0.5),
        "approve_p50_us": q(|s| s.approve, 0.5),
        "token_p50_us": q(|s| s.token, 0.5),
    })
}
