//! What the hand-written benches share: latency statistics, bounded loops and a
//! markdown table printer. Each bench binary includes this module with `mod common;`
//! and uses a part of it, hence the `dead_code` allowance.

#![allow(dead_code)]

pub mod fill;
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
