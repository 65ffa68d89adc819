//! What the hand-written benches share: latency statistics, bounded loops and a
//! markdown table printer. Each bench binary includes this module with `mod common;`
//! and uses a part of it, hence the `dead_code` allowance.

#![allow(dead_code)]

pub mod fill;
pub mod latency;
pub mod service;

use std::time::{Duration, Instant};

/// Latency samples of one case, sorted on demand.
#[derive(Debug, Default, Clone)]
pub struct Latencies(Vec<Duration>);

impl Latencies {
    /// An empty set, with room for `n` samples.
    pub fn with_capacity(n: usize) -> Self {
        Latencies(Vec::with_capacity(n))
    }

    /// Adds a sample.
    pub fn push(&mut self, d: Duration) {
        self.0.push(d);
    }

    /// Adds all samples of another set.
    pub fn extend(&mut self, other: Latencies) {
        self.0.extend(other.0);
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The `q` quantile (0.0..=1.0), nearest rank; zero when empty.
    pub fn quantile(&self, q: f64) -> Duration {
        if self.0.is_empty() {
            return Duration::ZERO;
        }
        let mut sorted = self.0.clone();
        sorted.sort_unstable();
        let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
        sorted[rank - 1]
    }

    /// The median.
    pub fn median(&self) -> Duration {
        self.quantile(0.5)
    }

    /// The 99th percentile.
    pub fn p99(&self) -> Duration {
        self.quantile(0.99)
    }
}

/// Runs `op` until `budget` elapsed or `max_ops` ran, timing each call. Returns the
/// per-call latencies and the wall time of the whole loop.
pub fn run_for(
    budget: Duration,
    max_ops: usize,
    mut op: impl FnMut(usize),
) -> (Latencies, Duration) {
    let mut lat = Latencies::with_capacity(max_ops.min(1 << 20));
    let started = Instant::now();
    for i in 0..max_ops {
        let t = Instant::now();
        op(i);
        lat.push(t.elapsed());
        if started.elapsed() >= budget {
            break;
        }
    }
    (lat, started.elapsed())
}

/// Milliseconds with three decimals, for tables.
pub fn ms(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64() * 1e3)
}

/// A rate with thousands separators, no decimals.
pub fn rate(count: usize, elapsed: Duration) -> String {
    if elapsed.is_zero() {
        return "-".into();
    }
    thousands(count as f64 / elapsed.as_secs_f64())
}

/// A number rounded to an integer, with `,` between thousands.
pub fn thousands(value: f64) -> String {
    let n = value.round() as u64;
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A markdown table printed once all rows are in.
pub struct Table {
    header: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column titles.
    pub fn new(header: &[&'static str]) -> Self {
        Table {
            header: header.to_vec(),
            rows: Vec::new(),
        }
    }

    /// Adds a row (and echoes it to stderr, so a long run shows progress).
    pub fn row(&mut self, cells: Vec<String>) {
        eprintln!("  {}", cells.join(" | "));
        self.rows.push(cells);
    }

    /// Prints the table as markdown on stdout.
    pub fn print(&self) {
        println!("| {} |", self.header.join(" | "));
        println!(
            "|{}|",
            self.header
                .iter()
                .map(|_| "---")
                .collect::<Vec<_>>()
                .join("|")
        );
        for row in &self.rows {
            println!("| {} |", row.join(" | "));
        }
    }
}

/// The machine, in one line: cores, CPU model, kernel.
/// Where a bench puts its files: `$AGENTLAB_BENCH_DIR` (to measure on another
/// filesystem, e.g. a journaled ext4 mount) or `target/tmp`.
#[allow(dead_code)]
pub fn bench_dir() -> std::path::PathBuf {
    std::env::var_os("AGENTLAB_BENCH_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")))
}

/// The service's `[runtime] async_threads` in the benches that start it:
/// `$AGENTLAB_BENCH_ASYNC_THREADS`, else the configuration's default.
#[allow(dead_code)]
pub fn async_threads() -> usize {
    async_threads_override()
        .unwrap_or_else(|| agentlab::config::RuntimeConfig::default().async_threads)
}

/// `$AGENTLAB_BENCH_ASYNC_THREADS`, if set (only then is `[runtime]` written, so
/// an older binary without that section can be measured too).
#[allow(dead_code)]
pub fn async_threads_override() -> Option<usize> {
    std::env::var("AGENTLAB_BENCH_ASYNC_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
}

/// The filesystem type and options of the disk [`bench_dir`] is on, from
/// `/proc/mounts` (the longest mount point that prefixes it).
#[allow(dead_code)]
pub fn bench_filesystem() -> String {
    let dir = bench_dir();
    let dir = dir.canonicalize().unwrap_or(dir);
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    let best = mounts
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            (fields.len() >= 4 && dir.starts_with(fields[1])).then(|| (fields[1].len(), fields))
        })
        .max_by_key(|(len, _)| *len);
    match best {
        Some((_, f)) => {
            let journal = match f[2] {
                "ext4" => match journal_of(f[0]) {
                    Some(true) => ", with a journal",
                    Some(false) => ", no journal",
                    None => "",
                },
                _ => "",
            };
            format!("{} on {} ({}{journal})", dir.display(), f[0], f[2])
        }
        None => dir.display().to_string(),
    }
}

/// Whether an ext4 device has a journal (`/proc/fs/ext4/<dev>/options`).
fn journal_of(device: &str) -> Option<bool> {
    let name = device.rsplit('/').next()?;
    let options = std::fs::read_to_string(format!("/proc/fs/ext4/{name}/options")).ok()?;
    Some(options.lines().any(|l| l.starts_with("data=")))
}

pub fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    format!("{cores} cores, {model}, Linux {kernel}")
}
