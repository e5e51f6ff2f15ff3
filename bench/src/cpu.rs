//! CPU time of this process, split by who spent it. Each part of the
//! benchmark runs on its own Tokio runtime whose threads carry a name prefix
//! ([`LOADGEN`], [`UPSTREAM`]); every other thread (the Gatehouse runtime,
//! SQLite workers) counts as Gatehouse. Per-thread times come from
//! `/proc/self/task/*/schedstat` (nanoseconds); the process total from
//! `/proc/self/stat` (utime + stime, clock ticks).

use std::collections::HashMap;

/// Thread-name prefix of the load generator's runtime.
pub const LOADGEN: &str = "bench-load";
/// Thread-name prefix of the fixture upstream's runtime.
pub const UPSTREAM: &str = "bench-upstream";

/// `sysconf(_SC_CLK_TCK)` on Linux x86-64 and arm64.
const CLOCK_TICKS_PER_SECOND: u64 = 100;

/// CPU nanoseconds so far, by part.
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuSample {
    /// utime + stime of the whole process (10 ms resolution).
    pub process_ns: u64,
    pub loadgen_ns: u64,
    pub upstream_ns: u64,
    pub gatehouse_ns: u64,
    /// Jiffies of the whole machine (every CPU) from `/proc/stat`: busy, and all.
    pub machine_busy: u64,
    pub machine_total: u64,
}

impl CpuSample {
    /// What was spent between `earlier` and `self`.
    pub fn since(&self, earlier: &CpuSample) -> CpuSample {
        CpuSample {
            process_ns: self.process_ns.saturating_sub(earlier.process_ns),
            loadgen_ns: self.loadgen_ns.saturating_sub(earlier.loadgen_ns),
            upstream_ns: self.upstream_ns.saturating_sub(earlier.upstream_ns),
            gatehouse_ns: self.gatehouse_ns.saturating_sub(earlier.gatehouse_ns),
            machine_busy: self.machine_busy.saturating_sub(earlier.machine_busy),
            machine_total: self.machine_total.saturating_sub(earlier.machine_total),
        }
    }

    pub fn add(&mut self, other: &CpuSample) {
        self.process_ns += other.process_ns;
        self.loadgen_ns += other.loadgen_ns;
        self.upstream_ns += other.upstream_ns;
        self.gatehouse_ns += other.gatehouse_ns;
        self.machine_busy += other.machine_busy;
        self.machine_total += other.machine_total;
    }

    /// How busy the machine's CPUs were, in percent (every process, not only this one).
    pub fn machine_busy_percent(&self) -> f64 {
        if self.machine_total == 0 {
            0.0
        } else {
            self.machine_busy as f64 * 100.0 / self.machine_total as f64
        }
    }
}

/// Per-thread CPU kept across samples, so a thread that exits between two
/// samples does not make a part's total go backwards.
#[derive(Default)]
pub struct CpuMeter {
    threads: HashMap<u32, (Part, u64)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    Loadgen,
    Upstream,
    Gatehouse,
}

impl CpuMeter {
    /// Reads every thread's CPU time now.
    pub fn sample(&mut self) -> CpuSample {
        let pid = std::process::id();
        if let Ok(entries) = std::fs::read_dir("/proc/self/task") {
            for entry in entries.flatten() {
                let Some(tid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                    continue;
                };
                let path = entry.path();
                let Some(ns) = std::fs::read_to_string(path.join("schedstat"))
                    .ok()
                    .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse::<u64>().ok()))
                else {
                    continue;
                };
                let name = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
                // The main thread only drives the load generator's `block_on`.
                let part = if tid == pid || name.starts_with(LOADGEN) {
                    Part::Loadgen
                } else if name.starts_with(UPSTREAM) {
                    Part::Upstream
                } else {
                    Part::Gatehouse
                };
                self.threads.insert(tid, (part, ns));
            }
        }
        let (machine_busy, machine_total) = machine_jiffies();
        let mut sample = CpuSample {
            process_ns: process_cpu_ns(),
            machine_busy,
            machine_total,
            ..Default::default()
        };
        for (part, ns) in self.threads.values() {
            match part {
                Part::Loadgen => sample.loadgen_ns += ns,
                Part::Upstream => sample.upstream_ns += ns,
                Part::Gatehouse => sample.gatehouse_ns += ns,
            }
        }
        sample
    }
}

/// utime + stime of this process, in nanoseconds.
fn process_cpu_ns() -> u64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0;
    };
    // The command name (field 2) may hold spaces; fields after its ')' are plain.
    let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
        return 0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After ')': state is field 3, so utime (14) and stime (15) are at 11 and 12.
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    (ticks(11) + ticks(12)) * (1_000_000_000 / CLOCK_TICKS_PER_SECOND)
}

/// (busy, total) jiffies of all CPUs: the `cpu` line of `/proc/stat`, idle and iowait being idle.
fn machine_jiffies() -> (u64, u64) {
    let Ok(stat) = std::fs::read_to_string("/proc/stat") else {
        return (0, 0);
    };
    let Some(line) = stat.lines().next().filter(|l| l.starts_with("cpu ")) else {
        return (0, 0);
    };
    // user nice system idle iowait irq softirq steal (guest time is already in user).
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .filter_map(|v| v.parse().ok())
        .collect();
    let total: u64 = fields.iter().sum();
    let idle = fields.get(3).copied().unwrap_or(0) + fields.get(4).copied().unwrap_or(0);
    (total.saturating_sub(idle), total)
}
