//! Data-plane memory: a data plane in a child process (this binary, run as
//! `gatehouse-bench --child-data-plane`), so its resident set is its own.
//! The parent drives `tools/call` as 1,000, then 10,000, then 100,000
//! distinct seeded users through it (each user's first call fills the caller,
//! credential and upstream-session caches) and reads the child's `VmRSS`
//! after each step, then measures warm calls over all cached users with the
//! child's own CPU time. Also the idle RSS of `gatehouse up`.

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use reqwest::header::{self, HeaderMap, HeaderValue};

use crate::load::{Rng, RunResult, merge, micros};

/// Environment of the child data plane.
const ENV_CP_URL: &str = "GATEHOUSE_BENCH_CP_URL";
const ENV_CREDENTIAL: &str = "GATEHOUSE_BENCH_CP_CREDENTIAL";
const ENV_ISSUER: &str = "GATEHOUSE_BENCH_ISSUER";

/// The child's side: a data plane with caches on (room for 200,000 callers),
/// on a 2-thread runtime; prints its URL, serves until stdin closes.
pub fn child_main() -> anyhow::Result<()> {
    let cp_url = std::env::var(ENV_CP_URL)?;
    let credential = std::env::var(ENV_CREDENTIAL)?;
    let issuer = std::env::var(ENV_ISSUER)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let mut config = crate::fleet::data_plane_config(addr, &cp_url, &credential, &issuer, true);
        config.caller_cache_entries = 200_000;
        let data_plane = gatehouse_data_plane::DataPlane::start(config, listener).await?;
        println!("listening http://{addr}");
        // Order: the parent closing stdin (or exiting) ends the child.
        tokio::task::spawn_blocking(|| {
            let mut sink = String::new();
            while std::io::stdin().read_line(&mut sink).is_ok_and(|n| n > 0) {}
        })
        .await?;
        data_plane.shutdown().await;
        anyhow::Ok(())
    })
}

/// A running child data plane.
pub struct ChildDataPlane {
    child: Child,
    pub url: String,
}

impl ChildDataPlane {
    pub fn spawn(cp_url: &str, credential: &str, issuer: &str) -> anyhow::Result<Self> {
        let mut child = Command::new(std::env::current_exe()?)
            .arg("--child-data-plane")
            .env(ENV_CP_URL, cp_url)
            .env(ENV_CREDENTIAL, credential)
            .env(ENV_ISSUER, issuer)
            .env_remove("RUST_LOG")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        let url = line
            .trim()
            .strip_prefix("listening ")
            .ok_or_else(|| anyhow!("child data plane said {line:?}"))?
            .to_owned();
        Ok(Self { child, url })
    }

    pub fn rss_kib(&self) -> u64 {
        rss_kib(self.child.id())
    }

    /// utime + stime of the child, nanoseconds (10 ms resolution).
    pub fn cpu_ns(&self) -> u64 {
        process_cpu_ns(self.child.id())
    }

    pub fn stop(mut self) {
        drop(self.child.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `VmRSS` of process `pid`, KiB.
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

/// utime + stime of process `pid`, nanoseconds.
pub fn process_cpu_ns(pid: u32) -> u64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0;
    };
    let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
        return 0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    (ticks(11) + ticks(12)) * 10_000_000
}

/// CPU nanoseconds of every `postgres` process (the server's share of a run).
pub fn postgres_cpu_ns() -> u64 {
    let Ok(entries) = std::fs::read_dir("/proc") else { return 0 };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()))
        .filter(|pid| std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "postgres"))
        .map(process_cpu_ns)
        .sum()
}

/// The headers of one `tools/call` of `tool` (2025-06-18, no session of ours).
fn call_headers(bearer: &HeaderValue) -> HeaderMap {
    let mut headers = HeaderMap::with_capacity(4);
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(
        header::ACCEPT,
        HeaderValue::from_static("application/json, text/event-stream"),
    );
    headers.insert("mcp-protocol-version", HeaderValue::from_static("2025-06-18"));
    headers.insert(header::AUTHORIZATION, bearer.clone());
    headers
}

const BODY: &str =
    r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"vault__echo","arguments":{"text":"hello"}}}"#;

async fn call(http: &reqwest::Client, url: &str, bearer: &HeaderValue) -> Result<(), String> {
    let response = http
        .post(url)
        .headers(call_headers(bearer))
        .body(BODY)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status();
    let body = response.bytes().await.map_err(|e| e.to_string())?;
    if status.is_success() && body.windows(8).any(|w| w == br#""result""#) {
        Ok(())
    } else {
        Err(format!("{status} {}", String::from_utf8_lossy(&body[..body.len().min(300)])))
    }
}

/// One call as each of users `from..to`, `concurrency` at a time.
pub async fn fill(url: &str, bearers: &Arc<Vec<HeaderValue>>, from: usize, to: usize, concurrency: usize) -> anyhow::Result<()> {
    let next = Arc::new(AtomicUsize::new(from));
    let url: Arc<str> = format!("{url}/mcp").into();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let http = crate::load::connection()?;
        let (next, url, bearers) = (next.clone(), url.clone(), bearers.clone());
        tasks.spawn(async move {
            loop {
                let user = next.fetch_add(1, Ordering::Relaxed);
                if user >= to {
                    return anyhow::Ok(());
                }
                call(&http, &url, &bearers[user])
                    .await
                    .map_err(|e| anyhow!("user {user}: {e}"))?;
            }
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined??;
    }
    Ok(())
}

/// Closed loop over users `0..count` (all cached) for `duration`.
pub async fn warm(
    url: &str,
    bearers: &Arc<Vec<HeaderValue>>,
    count: usize,
    concurrency: usize,
    duration: Duration,
) -> anyhow::Result<RunResult> {
    let url: Arc<str> = format!("{url}/mcp").into();
    let started = Instant::now();
    let end = started + duration;
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..concurrency {
        let http = crate::load::connection()?;
        let (url, bearers) = (url.clone(), bearers.clone());
        tasks.spawn(async move {
            let mut rng = Rng::new(0xfeed ^ ((worker as u64 + 1) << 32));
            let mut result = RunResult::default();
            while Instant::now() < end {
                let sent = Instant::now();
                match call(&http, &url, &bearers[rng.below(count)]).await {
                    Ok(()) => result.latencies_us.push(micros(sent.elapsed())),
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
    while let Some(joined) = tasks.join_next().await {
        merge(&mut total, joined?);
    }
    total.elapsed = started.elapsed();
    Ok(total)
}

/// Idle RSS of `gatehouse up` (the binary next to this one), KiB, after it
/// printed its banner and `settle` passed; `None` when the binary is missing.
pub fn idle_up_rss(demo: bool, settle: Duration) -> anyhow::Result<Option<u64>> {
    let exe = std::env::current_exe()?;
    let Some(binary) = exe.parent().map(|dir| dir.join("gatehouse")).filter(|p| p.exists()) else {
        return Ok(None);
    };
    let dir = tempfile::tempdir()?;
    let mut command = Command::new(&binary);
    command
        .arg("up")
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args(["--http-addr", "127.0.0.1:0", "--grpc-addr", "127.0.0.1:0"])
        .env_remove("RUST_LOG")
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    if !demo {
        command.arg("--no-demo");
    }
    let mut child = command.spawn().with_context(|| format!("{}", binary.display()))?;
    let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.contains("Gatehouse is up") {
                let _ = tx.send(());
            }
        }
    });
    let up = rx.recv_timeout(Duration::from_secs(30));
    let rss = if up.is_ok() {
        std::thread::sleep(settle);
        Some(rss_kib(child.id()))
    } else {
        None
    };
    let _ = child.kill();
    let _ = child.wait();
    if rss.is_none() {
        bail!("gatehouse up did not come up within 30 s");
    }
    Ok(rss)
}
