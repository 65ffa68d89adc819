//! Process monitor: memory, CPU, threads and file descriptors of the service and
//! of each running agent, and the leak detector over the service's resident memory.
//! The one place that reads process figures: [`ProcessSampler`] for the periodic
//! samples, [`ProcessFigures`] for this process's running totals (`/metrics`).
//!
//! Invariants: a process that vanished between listing and reading is skipped,
//! never an error; threads, fd counts and limits come from `/proc` where it
//! exists (Linux), else fd counts and limits from sysinfo (macOS), and a figure
//! neither tells is `None` (the fd rule then never holds for that process); the leak verdict needs at least
//! `leak_min_samples` samples spanning `leak_min_span_minutes`, a slope of at least
//! `leak_min_mb_per_hour` and a fit of at least `leak_min_r2`, so a noisy flat line
//! is never a leak.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};

use serde::Serialize;
use sysinfo::{Pid, ProcessRefreshKind, ProcessesToUpdate, System};

use crate::config::MonitorConfig;

const MB: f64 = 1024.0 * 1024.0;
const HOUR_MS: f64 = 3_600_000.0;

/// One process's resources at one instant.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProcessSample {
    /// `service`, or `agent` for an agent subprocess.
    pub role: &'static str,
    /// Process id.
    pub pid: u32,
    /// The task an agent runs.
    pub task_id: Option<u64>,
    /// Resident memory, bytes.
    pub rss_bytes: u64,
    /// Virtual memory, bytes.
    pub virtual_bytes: u64,
    /// CPU use since the previous sample, percent of one core.
    pub cpu_percent: f64,
    /// Threads.
    pub threads: Option<u64>,
    /// Open file descriptors.
    pub open_fds: Option<u64>,
    /// The soft limit on open files.
    pub fd_limit: Option<u64>,
}

impl ProcessSample {
    /// Open fds as a share of the limit (0..1), when both are known.
    pub fn fd_ratio(&self) -> Option<f64> {
        match (self.open_fds, self.fd_limit) {
            (Some(open), Some(limit)) if limit > 0 => Some(open as f64 / limit as f64),
            _ => None,
        }
    }
}

/// Reads process resources; keeps sysinfo's state between ticks for CPU %.
pub struct ProcessSampler {
    system: Option<System>,
    proc_root: PathBuf,
}

impl Default for ProcessSampler {
    fn default() -> Self {
        Self::new()
    }
}

impl ProcessSampler {
    /// A sampler reading `/proc` where it exists (sysinfo unavailable: only
    /// `/proc` figures).
    pub fn new() -> Self {
        Self::with_proc_root("/proc")
    }

    /// A sampler reading `<proc_root>/<pid>/…`; where that is absent the fd
    /// figures come from sysinfo. The root is a parameter so that the sysinfo
    /// path is exercised on Linux too.
    pub fn with_proc_root(proc_root: impl Into<PathBuf>) -> Self {
        ProcessSampler {
            system: System::new().ok(),
            proc_root: proc_root.into(),
        }
    }

    /// Samples the service and the given agents `(pid, task_id)`.
    pub fn sample(&mut self, agents: &[(u32, u64)]) -> Vec<ProcessSample> {
        let own = std::process::id();
        let pids: Vec<Pid> = std::iter::once(own)
            .chain(agents.iter().map(|(pid, _)| *pid))
            .map(Pid::from_u32)
            .collect();
        if let Some(system) = self.system.as_mut() {
            // Tasks (threads) are read from /proc/<pid>/status instead: listing them
            // through sysinfo walks /proc/<pid>/task on every tick.
            let kind = ProcessRefreshKind::nothing()
                .with_memory()
                .with_cpu()
                .without_tasks();
            system.refresh_processes_specifics(ProcessesToUpdate::Some(&pids), true, kind);
        }
        let mut out = Vec::with_capacity(pids.len());
        let roles = std::iter::once(("service", None))
            .chain(agents.iter().map(|(_, t)| ("agent", Some(*t))));
        for (pid, (role, task_id)) in pids.iter().zip(roles) {
            let process = self.system.as_ref().and_then(|s| s.process(*pid));
            if process.is_none() && role == "agent" {
                continue;
            }
            let raw = pid.as_u32();
            out.push(ProcessSample {
                role,
                pid: raw,
                task_id,
                rss_bytes: process.map_or(0, |p| p.memory()),
                virtual_bytes: process.map_or(0, |p| p.virtual_memory()),
                cpu_percent: process.map_or(0.0, |p| f64::from(p.cpu_usage())),
                threads: proc_fs::threads(&self.proc_root, raw),
                open_fds: proc_fs::open_fds(&self.proc_root, raw)
                    .or_else(|| process?.open_files().map(|n| n as u64)),
                fd_limit: proc_fs::fd_limit(&self.proc_root, raw)
                    .or_else(|| process?.open_files_limit().map(|n| n as u64)),
            });
        }
        out
    }
}

/// This process's running totals, as the standard `process_*` metrics show them;
/// `None` where the platform does not tell. Read on demand (a counter such as the
/// CPU time must be current when scraped), unlike the monitors' periodic
/// [`ProcessSample`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProcessFigures {
    /// User and system CPU time, seconds.
    pub cpu_seconds: Option<f64>,
    /// Resident memory, bytes.
    pub resident_bytes: Option<f64>,
    /// Virtual memory, bytes.
    pub virtual_bytes: Option<f64>,
    /// OS threads.
    pub threads: Option<f64>,
    /// When the process started, unix seconds.
    pub start_time_s: Option<f64>,
    /// Open file descriptors.
    pub open_fds: Option<f64>,
    /// The soft limit on open files.
    pub max_fds: Option<f64>,
}

impl ProcessFigures {
    /// This process's figures: from `<proc_root>/self` when it exists (Linux),
    /// else from sysinfo (macOS and the other platforms without `/proc`). The
    /// root is a parameter so that the sysinfo path is exercised on Linux too.
    pub fn read(proc_root: &Path) -> ProcessFigures {
        let figures = Self::from_proc(proc_root).unwrap_or_else(Self::from_sysinfo);
        ProcessFigures {
            max_fds: own_fd_limit(),
            ..figures
        }
    }

    fn from_proc(proc_root: &Path) -> Option<ProcessFigures> {
        let stat = std::fs::read_to_string(proc_root.join("self/stat")).ok()?;
        // SAFETY: sysconf has no preconditions.
        let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        // SAFETY: as above.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as f64;
        // Fields after the command name, which may itself hold spaces and parentheses.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map_or_else(Vec::new, |(_, rest)| rest.split_whitespace().collect());
        let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<f64>().ok());
        let boot_time = std::fs::read_to_string(proc_root.join("stat"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("btime "))
                    .and_then(|v| v.trim().parse::<f64>().ok())
            });
        Some(ProcessFigures {
            cpu_seconds: field(14)
                .zip(field(15))
                .map(|(utime, stime)| (utime + stime) / ticks),
            resident_bytes: field(24).map(|rss| rss * page),
            virtual_bytes: field(23),
            threads: field(20),
            start_time_s: boot_time
                .zip(field(22))
                .map(|(boot, start_ticks)| boot + start_ticks / ticks),
            open_fds: proc_fs::open_fds(proc_root, std::process::id()).map(|n| n as f64),
            max_fds: None,
        })
    }

    fn from_sysinfo() -> ProcessFigures {
        let pid = sysinfo::Pid::from_u32(std::process::id());
        let Ok(mut system) = sysinfo::System::new() else {
            return ProcessFigures::default();
        };
        let kind = sysinfo::ProcessRefreshKind::nothing()
            .with_memory()
            .with_cpu()
            .with_tasks();
        system.refresh_processes_specifics(sysinfo::ProcessesToUpdate::Some(&[pid]), true, kind);
        let Some(process) = system.process(pid) else {
            return ProcessFigures::default();
        };
        ProcessFigures {
            cpu_seconds: Some(process.accumulated_cpu_time() as f64 / 1000.0),
            resident_bytes: Some(process.memory() as f64),
            virtual_bytes: Some(process.virtual_memory() as f64),
            // The threads are the process's tasks, plus the main one they omit.
            threads: process.tasks().map(|t| (t.len() + 1) as f64),
            start_time_s: Some(process.start_time() as f64).filter(|s| *s > 0.0),
            open_fds: process.open_files().map(|n| n as f64),
            max_fds: None,
        }
    }
}

/// The soft limit on open files of this process (`getrlimit`, every unix).
fn own_fd_limit() -> Option<f64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid, writable rlimit.
    (unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0)
        .then_some(limit.rlim_cur as f64)
}

/// `/proc` readings (Linux; `root` is `/proc` but for tests); `None` elsewhere
/// or when the process is gone.
pub mod proc_fs {
    use std::path::Path;

    /// Threads of a process, from `<root>/<pid>/status`.
    pub fn threads(root: &Path, pid: u32) -> Option<u64> {
        let text = std::fs::read_to_string(root.join(format!("{pid}/status"))).ok()?;
        parse_threads(&text)
    }

    /// Open file descriptors, the entries of `<root>/<pid>/fd`.
    pub fn open_fds(root: &Path, pid: u32) -> Option<u64> {
        std::fs::read_dir(root.join(format!("{pid}/fd")))
            .ok()
            .map(|dir| dir.count() as u64)
    }

    /// The soft limit on open files, from `<root>/<pid>/limits`.
    pub fn fd_limit(root: &Path, pid: u32) -> Option<u64> {
        let text = std::fs::read_to_string(root.join(format!("{pid}/limits"))).ok()?;
        parse_open_files_limit(&text)
    }

    /// The `Threads:` line of a status file.
    pub fn parse_threads(status: &str) -> Option<u64> {
        status
            .lines()
            .find_map(|l| l.strip_prefix("Threads:"))
            .and_then(|v| v.trim().parse().ok())
    }

    /// The soft limit of the `Max open files` line of a limits file (`None` when unlimited).
    pub fn parse_open_files_limit(limits: &str) -> Option<u64> {
        let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
        line.trim_start_matches("Max open files")
            .split_whitespace()
            .next()
            .and_then(|soft| soft.parse().ok())
    }
}

/// Used share (0..1) of the file system holding `path`, as `df` counts it
/// (blocks reserved for root count as used).
pub fn filesystem_used_ratio(path: &std::path::Path) -> Option<f64> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs only writes into the zeroed struct we own; the path is a
    // NUL-terminated string that outlives the call.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c_path.as_ptr(), &mut stat) } != 0 {
        return None;
    }
    let total = stat.f_blocks as f64;
    if total <= 0.0 {
        return None;
    }
    Some((total - stat.f_bavail as f64) / total)
}

/// A least-squares line through points.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LinearFit {
    /// Change of y per unit of x.
    pub slope: f64,
    /// y at x = 0.
    pub intercept: f64,
    /// Coefficient of determination, 0..1 (1 = every point on the line).
    pub r2: f64,
}

/// Fits a line through `(x, y)` points; `None` with fewer than two distinct x.
pub fn linear_fit(points: &[(f64, f64)]) -> Option<LinearFit> {
    let n = points.len() as f64;
    if points.len() < 2 {
        return None;
    }
    let mean_x = points.iter().map(|p| p.0).sum::<f64>() / n;
    let mean_y = points.iter().map(|p| p.1).sum::<f64>() / n;
    let (mut sxx, mut sxy, mut syy) = (0.0, 0.0, 0.0);
    for (x, y) in points {
        let (dx, dy) = (x - mean_x, y - mean_y);
        sxx += dx * dx;
        sxy += dx * dy;
        syy += dy * dy;
    }
    if sxx == 0.0 {
        return None;
    }
    let slope = sxy / sxx;
    let r2 = if syy == 0.0 {
        1.0
    } else {
        (sxy * sxy) / (sxx * syy)
    };
    Some(LinearFit {
        slope,
        intercept: mean_y - slope * mean_x,
        r2,
    })
}

/// The leak detector's judgement.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LeakVerdict {
    /// A steady climb was found.
    pub suspected: bool,
    /// The window holds enough samples over a long enough span to mean
    /// something; until then there is no trend to show.
    pub judged: bool,
    /// Fitted growth, MB per hour, once judged.
    pub mb_per_hour: Option<f64>,
    /// Fit quality, once judged.
    pub r2: Option<f64>,
    /// Samples in the window.
    pub samples: usize,
    /// Minutes the samples span.
    pub span_minutes: f64,
    /// Minutes the samples must span before a verdict (`leak_min_span_minutes`).
    pub needs_minutes: u64,
}

/// Judges `(unix ms, rss bytes)` samples (any order of arrival, within the window).
pub fn assess_leak(samples: &[(u64, f64)], config: &MonitorConfig) -> LeakVerdict {
    let first = samples.iter().map(|s| s.0).min().unwrap_or(0);
    let last = samples.iter().map(|s| s.0).max().unwrap_or(0);
    let span_minutes = (last - first) as f64 / 60_000.0;
    // x in hours since the first sample, y in MB: the slope is MB/h directly.
    let points: Vec<(f64, f64)> = samples
        .iter()
        .map(|(t, v)| ((t - first) as f64 / HOUR_MS, v / MB))
        .collect();
    let judged = samples.len() >= config.leak_min_samples
        && span_minutes >= config.leak_min_span_minutes as f64;
    let fit = if judged { linear_fit(&points) } else { None };
    let suspected =
        fit.is_some_and(|f| f.slope >= config.leak_min_mb_per_hour && f.r2 >= config.leak_min_r2);
    LeakVerdict {
        suspected,
        judged: fit.is_some(),
        mb_per_hour: fit.map(|f| f.slope),
        r2: fit.map(|f| f.r2),
        samples: samples.len(),
        span_minutes,
        needs_minutes: config.leak_min_span_minutes,
    }
}

/// The service's resident memory over the leak window, this process's samples
/// only: a new process starts with fresh memory, so a line fitted across a
/// restart would measure the restart, not a leak.
#[derive(Debug, Default)]
pub struct RssWindow {
    samples: VecDeque<(u64, f64)>,
}

impl RssWindow {
    /// Adds a sample and forgets those older than `window_ms` before it.
    pub fn push(&mut self, at_ms: u64, rss_bytes: f64, window_ms: u64) {
        if self.samples.back().is_some_and(|(t, _)| *t > at_ms) {
            return;
        }
        self.samples.push_back((at_ms, rss_bytes));
        let cutoff = at_ms.saturating_sub(window_ms);
        while self.samples.front().is_some_and(|(t, _)| *t < cutoff) {
            self.samples.pop_front();
        }
    }

    /// The samples, oldest first.
    pub fn samples(&self) -> Vec<(u64, f64)> {
        self.samples.iter().copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_metrics_come_from_sysinfo_where_proc_is_absent() {
        let figures = ProcessFigures::read(Path::new("/no/proc/here"));
        assert!(
            figures.resident_bytes.is_some_and(|b| b > 0.0),
            "{figures:?}"
        );
        assert!(
            figures.virtual_bytes.is_some_and(|b| b > 0.0),
            "{figures:?}"
        );
        assert!(figures.cpu_seconds.is_some_and(|s| s >= 0.0), "{figures:?}");
        let started = figures.start_time_s.expect("start time");
        let now = crate::clock::now_ms() as f64 / 1000.0;
        assert!(started > 1.6e9 && started <= now + 1.0, "{figures:?}");
        assert!(figures.max_fds.is_some_and(|n| n >= 1.0), "{figures:?}");
    }

    #[test]
    fn proc_and_sysinfo_agree_on_linux() {
        if !Path::new("/proc/self/stat").exists() {
            return;
        }
        let proc = ProcessFigures::read(Path::new("/proc"));
        let sysinfo = ProcessFigures::from_sysinfo();
        let (a, b) = (
            proc.start_time_s.expect("proc start"),
            sysinfo.start_time_s.expect("sysinfo start"),
        );
        assert!((a - b).abs() <= 2.0, "start {a} vs {b}");
        assert!(
            proc.threads.is_some() && proc.open_fds.is_some() && proc.max_fds.is_some(),
            "{proc:?}"
        );
    }

    /// A deterministic generator of noise in -1..1.
    fn noise(i: u64) -> f64 {
        let x = i
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((x >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
    }

    fn window(config: &MonitorConfig, rss: impl Fn(u64, f64) -> f64) -> RssWindow {
        let mut w = RssWindow::default();
        let start = 1_700_000_000_000u64;
        let window_ms = config.leak_window_hours * 3_600_000;
        for i in 0..(6 * 360) {
            let at = start + i * 10_000;
            let hours = (i * 10_000) as f64 / HOUR_MS;
            w.push(at, rss(i, hours), window_ms);
        }
        w
    }

    #[test]
    fn a_linear_climb_of_5_mb_per_hour_is_a_leak() {
        let config = MonitorConfig::default();
        let w = window(&config, |i, h| {
            200.0 * MB + 5.0 * MB * h + noise(i) * 0.5 * MB
        });
        let verdict = assess_leak(&w.samples(), &config);
        assert!(verdict.suspected, "{verdict:?}");
        let slope = verdict.mb_per_hour.expect("judged");
        assert!((slope - 5.0).abs() < 0.1, "{verdict:?}");
    }

    #[test]
    fn a_climb_is_flagged_within_the_window_once_warmed_up() {
        let config = MonitorConfig::default();
        let mut w = RssWindow::default();
        let mut flagged_at = None;
        for i in 0..(6 * 360u64) {
            let hours = (i * 10_000) as f64 / HOUR_MS;
            w.push(
                i * 10_000,
                100.0 * MB + 5.0 * MB * hours + noise(i) * MB,
                6 * 3_600_000,
            );
            if flagged_at.is_none() && assess_leak(&w.samples(), &config).suspected {
                flagged_at = Some(hours);
            }
        }
        let at = flagged_at.expect("never flagged");
        assert!((1.0..=2.0).contains(&at), "flagged after {at} h");
    }

    #[test]
    fn a_flat_series_with_20_percent_noise_is_not_a_leak() {
        let config = MonitorConfig::default();
        let w = window(&config, |i, _| 200.0 * MB * (1.0 + 0.2 * noise(i)));
        let verdict = assess_leak(&w.samples(), &config);
        assert!(!verdict.suspected, "{verdict:?}");
        assert!(verdict.r2.expect("judged") < 0.1, "{verdict:?}");
    }

    #[test]
    fn too_few_samples_are_never_a_leak() {
        let config = MonitorConfig::default();
        let samples: Vec<(u64, f64)> = (0..29)
            .map(|i| (i * 600_000, i as f64 * 10.0 * MB))
            .collect();
        assert!(!assess_leak(&samples, &config).suspected);
    }

    #[test]
    fn no_trend_is_given_before_the_window_is_long_enough() {
        let config = MonitorConfig::default();
        // Eight seconds after start: a steep, noisy climb of start-up allocations.
        let samples: Vec<(u64, f64)> = (0..9)
            .map(|i| {
                (
                    i * 1_000,
                    20.0 * MB + (i % 3) as f64 * 0.4 * MB + i as f64 * 0.2 * MB,
                )
            })
            .collect();
        let verdict = assess_leak(&samples, &config);
        assert!(!verdict.judged && !verdict.suspected, "{verdict:?}");
        assert_eq!((verdict.mb_per_hour, verdict.r2), (None, None));
        assert_eq!(verdict.needs_minutes, config.leak_min_span_minutes);
        assert_eq!(verdict.samples, 9);
    }

    #[test]
    fn proc_files_are_parsed() {
        assert_eq!(proc_fs::parse_threads("Name:\tx\nThreads:\t17\n"), Some(17));
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max open files            1024                 524288               files\n";
        assert_eq!(proc_fs::parse_open_files_limit(limits), Some(1024));
        assert_eq!(
            proc_fs::parse_open_files_limit(
                "Max open files            unlimited            unlimited            files"
            ),
            None
        );
    }

    #[test]
    fn without_proc_the_fd_figures_come_from_sysinfo() {
        let mut sampler = ProcessSampler::with_proc_root("/no/proc/here");
        let samples = sampler.sample(&[]);
        let own = &samples[0];
        assert_eq!(own.threads, None, "threads come from /proc only");
        if cfg!(any(target_os = "linux", target_os = "macos")) {
            assert!(own.rss_bytes > 0, "{own:?}");
            assert!(own.open_fds.is_some_and(|n| n > 0), "{own:?}");
            assert!(own.fd_limit.is_some_and(|n| n > 0), "{own:?}");
            assert!(own.fd_ratio().is_some(), "the fd rule can hold: {own:?}");
        }
    }

    #[test]
    fn the_data_directory_has_a_used_share() {
        let ratio = filesystem_used_ratio(std::path::Path::new("/")).expect("statvfs");
        assert!((0.0..=1.0).contains(&ratio));
        assert_eq!(
            filesystem_used_ratio(std::path::Path::new("/no/such/dir")),
            None
        );
    }

    #[test]
    fn the_service_samples_itself() {
        let mut sampler = ProcessSampler::new();
        let samples = sampler.sample(&[(u32::MAX - 1, 7)]);
        assert_eq!(samples.len(), 1, "a missing agent is skipped");
        assert_eq!(samples[0].role, "service");
        if cfg!(target_os = "linux") {
            assert!(samples[0].rss_bytes > 0);
            assert!(samples[0].open_fds.unwrap_or(0) > 0);
            assert!(samples[0].threads.unwrap_or(0) >= 1);
        }
    }
}
