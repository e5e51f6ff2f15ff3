//! The load generator: `tools/call echo` in four styles ([`Mode`]), closed
//! loop at a fixed number of keep-alive connections, or open loop at a fixed
//! rate (latency counted from each call's scheduled start, so a slow server
//! cannot hide its queue). Through Gatehouse the tool is `vault__echo`: the
//! fixture's `echo` behind the per-user OAuth service `vault`, so each call
//! is made as one user with that user's own upstream connection.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use bytes::Bytes;
use reqwest::StatusCode;
use reqwest::header::{self, HeaderMap, HeaderValue};

/// How a call is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Mode {
    /// Straight to the fixture upstream.
    Direct,
    /// Through Gatehouse, caches on, a 2025-06-18 session (initialized beforehand).
    Warm,
    /// Through Gatehouse, 2026-07-28 stateless: `_meta` and the mirrored headers.
    Stateless,
    /// Through the data plane with its caller and credential caches off.
    Cold,
}

impl Mode {
    pub fn key(self) -> &'static str {
        match self {
            Mode::Direct => "direct",
            Mode::Warm => "gateway",
            Mode::Stateless => "stateless",
            Mode::Cold => "nocache",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Mode::Direct => "direct to the upstream",
            Mode::Warm => "Gatehouse, warm caches, 2025-06-18 session",
            Mode::Stateless => "Gatehouse, warm caches, 2026-07-28 stateless",
            Mode::Cold => "Gatehouse, data-plane caches off (2025-06-18)",
        }
    }
}

const LEGACY_BODY: &str =
    r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"vault__echo","arguments":{"text":"hello"}}}"#;
const DIRECT_BODY: &str =
    r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"hello"}}}"#;
const MODERN_BODY: &str = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"vault__echo","arguments":{"text":"hello"},"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}}}"#;

/// Where and how each mode's calls go.
pub struct Targets {
    pub direct: String,
    pub warm: String,
    pub cold: String,
    /// `Bearer <token>`, one per user.
    pub bearers: Vec<HeaderValue>,
}

impl Targets {
    pub fn new(upstream: &str, issuer: &str, cold_base: &str, tokens: &[String]) -> anyhow::Result<Self> {
        let mut bearers = Vec::with_capacity(tokens.len());
        for token in tokens {
            let mut value = HeaderValue::from_str(&format!("Bearer {token}"))?;
            value.set_sensitive(true);
            bearers.push(value);
        }
        if bearers.is_empty() {
            bail!("no users");
        }
        Ok(Self {
            direct: upstream.to_owned(),
            warm: format!("{issuer}/mcp"),
            cold: format!("{cold_base}/mcp"),
            bearers,
        })
    }

    /// The request of one call as `user`.
    fn request(&self, http: &reqwest::Client, mode: Mode, user: usize) -> reqwest::RequestBuilder {
        let (url, body, modern) = match mode {
            Mode::Direct => (&self.direct, DIRECT_BODY, false),
            Mode::Warm => (&self.warm, LEGACY_BODY, false),
            Mode::Cold => (&self.cold, LEGACY_BODY, false),
            Mode::Stateless => (&self.warm, MODERN_BODY, true),
        };
        let mut headers = HeaderMap::with_capacity(6);
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(
            header::ACCEPT,
            HeaderValue::from_static("application/json, text/event-stream"),
        );
        if modern {
            headers.insert("mcp-protocol-version", HeaderValue::from_static("2026-07-28"));
            headers.insert("mcp-method", HeaderValue::from_static("tools/call"));
            headers.insert("mcp-name", HeaderValue::from_static("vault__echo"));
        } else {
            headers.insert("mcp-protocol-version", HeaderValue::from_static("2025-06-18"));
        }
        if mode != Mode::Direct {
            headers.insert(header::AUTHORIZATION, self.bearers[user % self.bearers.len()].clone());
        }
        http.post(url.as_str())
            .headers(headers)
            .body(Bytes::from_static(body.as_bytes()))
    }
}

/// A small, fast generator for picking users (xorshift64*).
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 33) as usize % n.max(1)
    }
}

/// What one run measured.
#[derive(Debug, Default)]
pub struct RunResult {
    /// Microseconds per successful call (open loop: from its scheduled start).
    pub latencies_us: Vec<u32>,
    /// Open loop only: microseconds from when the call was actually sent
    /// (what the servers took, without the generator's timer lag).
    pub service_us: Vec<u32>,
    pub errors: u64,
    pub first_error: Option<String>,
    pub elapsed: Duration,
}

/// One call; `Ok` only for a 200 carrying the fixture's echo (its
/// `structuredContent`), so an answer that did not reach the upstream (an
/// error, or a result asking the user to connect the service) counts as an error.
async fn call(request: reqwest::RequestBuilder) -> Result<(), String> {
    let response = request.send().await.map_err(|e| e.to_string())?;
    let status = response.status();
    let body = response.bytes().await.map_err(|e| e.to_string())?;
    if status == StatusCode::OK && memchr(&body, br#""structuredContent""#) {
        Ok(())
    } else {
        Err(format!("{status} {}", String::from_utf8_lossy(&body[..body.len().min(300)])))
    }
}

fn memchr(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// A client holding at most one idle keep-alive connection (one per worker).
pub fn connection() -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .no_proxy()
        .http1_only()
        .pool_max_idle_per_host(1)
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(10))
        .build()?)
}

/// Closed loop: `connections` workers, each with its own keep-alive
/// connection, calling back to back for `duration`, each call as a random user.
pub async fn closed_loop(
    targets: &Arc<Targets>,
    clients: &[reqwest::Client],
    mode: Mode,
    duration: Duration,
    seed: u64,
) -> RunResult {
    let started = Instant::now();
    let end = started + duration;
    let mut workers = tokio::task::JoinSet::new();
    for (i, http) in clients.iter().enumerate() {
        let (targets, http) = (targets.clone(), http.clone());
        workers.spawn(async move {
            let mut rng = Rng::new(seed ^ ((i as u64 + 1) << 32));
            let mut result = RunResult {
                latencies_us: Vec::with_capacity(16 * 1024),
                ..Default::default()
            };
            // Bounded by time, and by a cap no run reaches (10 µs a call).
            let cap = duration.as_micros() / 10 + 1;
            let mut n = 0u128;
            while n < cap {
                let now = Instant::now();
                if now >= end {
                    break;
                }
                n += 1;
                let user = rng.below(targets.bearers.len());
                match call(targets.request(&http, mode, user)).await {
                    Ok(()) => result.latencies_us.push(micros(now.elapsed())),
                    Err(err) => {
                        result.errors += 1;
                        result.first_error.get_or_insert(err);
                    }
                }
            }
            result
        });
    }
    let mut total = RunResult::default();
    while let Some(joined) = workers.join_next().await {
        match joined {
            Ok(result) => merge(&mut total, result),
            Err(err) => {
                total.errors += 1;
                total.first_error.get_or_insert(err.to_string());
            }
        }
    }
    total.elapsed = started.elapsed();
    total
}

/// Open loop: calls scheduled every `1/rate` for `duration`, whatever the
/// replies do; each call's latency runs from its scheduled start.
///
/// The schedule is kept by a thread of its own that sleeps to each due time
/// (the kernel's high-resolution timers, late by tens of microseconds) and
/// spawns the call onto this runtime. Tokio's timer has a 1 ms tick: paced by
/// it, calls at 2,000/s left in pairs on each tick, up to a millisecond late,
/// and each pair queued on itself, which is not the even rate asked for.
pub async fn fixed_rate(
    targets: &Arc<Targets>,
    http: &reqwest::Client,
    mode: Mode,
    rate: u32,
    duration: Duration,
    seed: u64,
) -> RunResult {
    let period = Duration::from_secs_f64(1.0 / f64::from(rate.max(1)));
    let count = (duration.as_secs_f64() * f64::from(rate)).ceil() as u64;
    let runtime = tokio::runtime::Handle::current();
    let (targets, http) = (targets.clone(), http.clone());
    let started = Instant::now();
    // A blocking-pool thread: it carries the load generator's thread name, so
    // its CPU counts as the load generator's.
    let pacer = tokio::task::spawn_blocking(move || {
        let mut rng = Rng::new(seed);
        let mut calls = Vec::with_capacity(usize::try_from(count).unwrap_or(0));
        for i in 0..count {
            let due = started + period.mul_f64(i as f64);
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            let request = targets.request(&http, mode, rng.below(targets.bearers.len()));
            calls.push(runtime.spawn(async move {
                let sent = Instant::now();
                call(request).await.map(|()| (micros(due.elapsed()), micros(sent.elapsed())))
            }));
        }
        calls
    });
    let mut total = RunResult::default();
    let calls = match pacer.await {
        Ok(calls) => calls,
        Err(err) => {
            total.errors += 1;
            total.first_error = Some(err.to_string());
            Vec::new()
        }
    };
    for joined in calls {
        match joined.await {
            Ok(Ok((us, service))) => {
                total.latencies_us.push(us);
                total.service_us.push(service);
            }
            Ok(Err(err)) => {
                total.errors += 1;
                total.first_error.get_or_insert(err);
            }
            Err(err) => {
                total.errors += 1;
                total.first_error.get_or_insert(err.to_string());
            }
        }
    }
    total.elapsed = started.elapsed();
    total
}

pub fn merge(total: &mut RunResult, result: RunResult) {
    total.latencies_us.extend_from_slice(&result.latencies_us);
    total.service_us.extend_from_slice(&result.service_us);
    total.errors += result.errors;
    if total.first_error.is_none() {
        total.first_error = result.first_error;
    }
}

pub fn micros(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}

/// The value at quantile `q` of sorted `values` (nearest rank).
pub fn quantile(sorted: &[u32], q: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}
