//! The benches' side of the service harness: `agentlab-testkit`'s
//! [`Service`] runs the release `agentlab run` as a subprocess against the
//! Telegram Bot API simulator running in the bench process, exactly as the
//! integration tests run the debug one; here is what only the benches need: the
//! binary to measure (`$AGENTLAB_BIN` for a baseline), options without test-only
//! settings, and what they read from outside — `/proc` CPU time and RSS, and the
//! simulator's clock.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

// Each bench binary uses a part of these (see `common`'s `dead_code` allowance).
#[allow(unused_imports)]
pub use agentlab_testkit::service::{
    ADMIN_TOKEN, BotSpec, Options, Service, agentlab_binary, bot_token, start_sim,
};
use telegram_sim::SimHandle;

/// Longest anything is waited for (a start on a 100 MB store included).
pub const PATIENCE: Duration = Duration::from_secs(60);

/// The binary to measure: `$AGENTLAB_BIN` (an older build, for a baseline in the
/// same harness), else the release build beside this bench (`cargo bench` builds
/// it; with `--no-run`, `cargo build --release` does).
pub fn release_binary() -> PathBuf {
    let path = std::env::var_os("AGENTLAB_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(agentlab_binary);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --release` first",
        path.display()
    );
    path
}

/// The service as the benches run it: the bots `(id, users)` (the first user
/// of each is its admin), `workers` workers, rates that never refuse, the
/// default monitor, warnings only in the log, files in [`super::bench_dir`], and
/// `[runtime] async_threads` when `$AGENTLAB_BENCH_ASYNC_THREADS` asks for it.
pub fn bench_options(bots: &[(&str, std::ops::RangeInclusive<i64>)], workers: usize) -> Options {
    let mut extra_toml = String::new();
    if let Some(threads) = super::async_threads_override() {
        extra_toml.push_str(&format!("\n[runtime]\nasync_threads = {threads}\n"));
    }
    Options {
        bots: bots
            .iter()
            .map(|(id, users)| BotSpec::new(id, &users.clone().collect::<Vec<_>>()))
            .collect(),
        workers,
        limits_toml: "rate_per_minute = 1000000\nrate_per_hour = 1000000".into(),
        monitor_toml: String::new(),
        extra_toml,
        binary: release_binary(),
        log_filter: "warn".into(),
        temp_parent: Some(super::bench_dir()),
        patience: PATIENCE,
        ..Options::default()
    }
}

/// Starts the bench service on `sim` (see [`bench_options`]), in a directory
/// made beforehand (e.g. holding a pre-filled store); returns once ready.
pub async fn start_in(dir: tempfile::TempDir, sim: &SimHandle, options: Options) -> Service {
    let mut service = Service::prepare_in(dir, sim.clone(), options);
    service.spawn();
    service.wait_ready().await;
    service
}

/// Maps bench-process instants onto the simulator's clock (`SentItem::at`,
/// `CallRecord::at`: time since the simulator started).
#[derive(Debug, Clone, Copy)]
pub struct SimClock {
    /// The instant the simulator's clock reads zero, as estimated.
    zero: Instant,
    /// Half the round trip of the calibration call: the estimate's uncertainty.
    pub uncertainty: Duration,
}

impl SimClock {
    /// Calibrates with `getMe` calls on a token of its own: the call's recorded
    /// arrival lies between sending and receiving the answer; the tightest of a
    /// few round trips wins.
    pub async fn calibrate(sim: &SimHandle) -> SimClock {
        let token = "999999:calibration";
        sim.register_bot(token).expect("register calibration bot");
        let http = reqwest::Client::new();
        let mut best: Option<SimClock> = None;
        for _ in 0..20 {
            let before = Instant::now();
            http.post(format!("{}/bot{token}/getMe", sim.url()))
                .send()
                .await
                .expect("getMe");
            let after = Instant::now();
            let at = sim
                .calls(token)
                .expect("calls")
                .last()
                .expect("the getMe call")
                .at;
            let half = (after - before) / 2;
            let estimate = SimClock {
                zero: before + half - at,
                uncertainty: half,
            };
            if best.is_none_or(|b| estimate.uncertainty < b.uncertainty) {
                best = Some(estimate);
            }
        }
        best.expect("calibrated")
    }

    /// `instant` on the simulator's clock.
    pub fn at(&self, instant: Instant) -> Duration {
        instant.saturating_duration_since(self.zero)
    }
}

/// CPU time of a process from `/proc/<pid>/stat`: its own (utime + stime) and that
/// of its waited-for children (cutime + cstime).
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuTimes {
    /// The process itself.
    pub own: Duration,
    /// The part of `own` spent in the kernel.
    pub system: Duration,
    /// Its reaped children (the agents).
    pub children: Duration,
}

impl CpuTimes {
    /// Reads the current values.
    pub fn of(pid: u32) -> CpuTimes {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read stat");
        // Fields after the `(comm)`, which may hold spaces: state is field 3.
        let after = &stat[stat.rfind(')').expect("comm") + 2..];
        let fields: Vec<u64> = after
            .split_whitespace()
            .map(|f| f.parse().unwrap_or(0))
            .collect();
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        let ticks = |i: usize| Duration::from_secs_f64(fields[i] as f64 / hz);
        // utime, stime, cutime, cstime are fields 14..=17, i.e. 11..=14 here.
        CpuTimes {
            own: ticks(11) + ticks(12),
            system: ticks(12),
            children: ticks(13) + ticks(14),
        }
    }

    /// The time spent since `earlier`.
    pub fn since(&self, earlier: CpuTimes) -> CpuTimes {
        CpuTimes {
            own: self.own.saturating_sub(earlier.own),
            system: self.system.saturating_sub(earlier.system),
            children: self.children.saturating_sub(earlier.children),
        }
    }
}

/// On-CPU time of a process's live threads (`/proc/<pid>/task/*/schedstat`), to
/// show where a level's CPU went. Threads that exited in between are missing:
/// the caller compares the sum with [`CpuTimes`].
#[derive(Debug, Clone, Default)]
pub struct ThreadTimes(BTreeMap<u32, (String, Duration)>);

impl ThreadTimes {
    /// Reads the current values, per thread id.
    pub fn of(pid: u32) -> ThreadTimes {
        let mut threads = BTreeMap::new();
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            return ThreadTimes(threads);
        };
        for task in tasks.flatten() {
            let Some(tid) = task.file_name().to_str().and_then(|t| t.parse().ok()) else {
                continue;
            };
            let dir = task.path();
            let name = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
            let on_cpu_ns: u64 = std::fs::read_to_string(dir.join("schedstat"))
                .ok()
                .and_then(|s| s.split_whitespace().next().and_then(|f| f.parse().ok()))
                .unwrap_or(0);
            threads.insert(
                tid,
                (name.trim().to_string(), Duration::from_nanos(on_cpu_ns)),
            );
        }
        ThreadTimes(threads)
    }

    /// The time each thread name spent since `earlier`, summed over its threads
    /// (a thread new since then counts from zero).
    pub fn since(&self, earlier: &ThreadTimes) -> BTreeMap<String, Duration> {
        let mut by_name = BTreeMap::new();
        for (tid, (name, now)) in &self.0 {
            let before = earlier.0.get(tid).map(|(_, t)| *t).unwrap_or_default();
            *by_name.entry(name.clone()).or_insert(Duration::ZERO) += now.saturating_sub(before);
        }
        by_name
    }
}

/// VmRSS of a process, KiB.
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}
