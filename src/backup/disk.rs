//! Disk-full degradation: measure the free space of the data folder's file system,
//! free some by pruning, and refuse new prompts when that is not enough.
//!
//! Thresholds come from `storage.min_free_mb`: below twice that, health is `warn`;
//! below it, run output of tasks finished more than [`PRUNE_RUNS_AFTER`] ago and
//! rotated log files are pruned (every [`CHECK_EVERY`] by the service, and whenever
//! a prompt finds the disk low); if still below, health is `fail`, the `disk_full`
//! alert fires and the intake's admission (`crate::intake::admission`) refuses new
//! prompts *before* anything is written, so nothing is half-stored. Stored data is never pruned here, only files
//! that can be regenerated or are already in the store (a run's result is).
//!
//! Callers: the intake measures [`health_check`] (and prunes) before it stores a
//! prompt; `/health` reports [`health_check`] as its `disk` check.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;

use crate::config::Config;
use crate::shutdown::Shutdown;
use crate::status::Started;
use crate::storage::{Store, TaskStatus, now_ms};

/// Finished runs whose output is older than this may be pruned.
pub const PRUNE_RUNS_AFTER: Duration = Duration::from_secs(7 * 24 * 3600);
/// How often the service checks the disk.
pub const CHECK_EVERY: Duration = Duration::from_secs(60);

/// The state of the disk, as health reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskLevel {
    /// Plenty of space.
    Pass,
    /// Below twice the minimum.
    Warn,
    /// Below the minimum: new prompts are refused.
    Fail,
}

impl DiskLevel {
    /// `pass`, `warn` or `fail` (health+json).
    pub fn as_str(self) -> &'static str {
        match self {
            DiskLevel::Pass => "pass",
            DiskLevel::Warn => "warn",
            DiskLevel::Fail => "fail",
        }
    }
}

/// The `disk` check of `/health`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskHealth {
    /// The level.
    pub level: DiskLevel,
    /// Free bytes available to this process on the data folder's file system.
    pub free_bytes: u64,
    /// The configured minimum, bytes.
    pub min_free_bytes: u64,
}

/// Bytes available to unprivileged users on the file system holding `path` (the
/// nearest existing ancestor when `path` does not exist yet).
pub fn free_bytes(path: &Path) -> std::io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let mut probe = path.to_path_buf();
    while !probe.exists() {
        if !probe.pop() {
            probe = PathBuf::from(".");
            break;
        }
    }
    if probe.as_os_str().is_empty() {
        probe = PathBuf::from(".");
    }
    let c_path = std::ffi::CString::new(probe.as_os_str().as_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    // SAFETY: `c_path` is a valid NUL-terminated string and `stat` is a zeroed,
    // properly aligned statvfs that the call fills in.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statvfs(c_path.as_ptr(), &mut stat) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    #[allow(clippy::unnecessary_cast)] // the field types differ between platforms
    Ok(stat.f_bavail as u64 * stat.f_frsize as u64)
}

/// The disk's level now (one statvfs; cheap enough for every request).
pub fn health_check(config: &Config) -> DiskHealth {
    let min_free_bytes = config.storage.min_free_mb * 1024 * 1024;
    let free_bytes = free_bytes(&config.data_dir).unwrap_or(u64::MAX);
    let level = if free_bytes < min_free_bytes {
        DiskLevel::Fail
    } else if free_bytes < min_free_bytes.saturating_mul(2) {
        DiskLevel::Warn
    } else {
        DiskLevel::Pass
    };
    DiskHealth {
        level,
        free_bytes,
        min_free_bytes,
    }
}

/// What [`prune`] removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Run folders removed.
    pub runs: usize,
    /// Log files removed.
    pub logs: usize,
}

/// Removes the output folders and turn records (`<id>.turn.json`) of tasks
/// finished more than [`PRUNE_RUNS_AFTER`] ago and the rotated log files (every
/// `agentlab.log.*` but the newest). Blocking.
pub fn prune(config: &Config, store: &Store) -> Pruned {
    let mut pruned = Pruned::default();
    let cutoff = now_ms().saturating_sub(PRUNE_RUNS_AFTER.as_millis() as u64);
    if let Ok(entries) = std::fs::read_dir(config.runs_dir()) {
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some((task_id, is_folder)) = name.to_str().and_then(run_entry_task) else {
                continue;
            };
            let finished_long_ago = matches!(
                store.get_task(task_id),
                Ok(Some(task)) if is_finished(task.status) && task.finished_ms.is_some_and(|at| at < cutoff)
            );
            if !finished_long_ago {
                continue;
            }
            let removed = if is_folder {
                std::fs::remove_dir_all(entry.path())
            } else {
                std::fs::remove_file(entry.path())
            };
            if removed.is_ok() {
                pruned.runs += 1;
            }
        }
    }
    pruned.logs = prune_rotated_logs(&config.log_dir);
    if pruned != Pruned::default() {
        tracing::warn!(
            runs = pruned.runs,
            logs = pruned.logs,
            "disk low: pruned old run output and logs"
        );
    }
    pruned
}

fn is_finished(status: TaskStatus) -> bool {
    matches!(
        status,
        TaskStatus::Succeeded | TaskStatus::Failed | TaskStatus::Cancelled
    )
}

/// The task an entry of the runs folder belongs to: `<id>` (its output folder,
/// `true`) or `<id>.turn.json` / `<id>.turn.json.tmp` (a warm turn's record).
fn run_entry_task(name: &str) -> Option<(u64, bool)> {
    if let Ok(id) = name.parse::<u64>() {
        return Some((id, true));
    }
    let record = name.strip_suffix(".tmp").unwrap_or(name);
    let id = record.strip_suffix(".turn.json")?.parse::<u64>().ok()?;
    Some((id, false))
}

/// Removes every rotated log file but the newest (the one being written).
fn prune_rotated_logs(log_dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(log_dir) else {
        return 0;
    };
    let mut logs: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(crate::telemetry::LOG_FILE))
        })
        .collect();
    // Daily names end in the date, so the newest sorts last.
    logs.sort();
    logs.pop();
    logs.into_iter()
        .filter(|p| std::fs::remove_file(p).is_ok())
        .count()
}

/// Checks the disk every [`CHECK_EVERY`]: prunes when low, raises `disk_full` when
/// pruning was not enough, resolves it when space is back, and logs a heartbeat
/// line (the watchdog watches the log advance).
pub fn spawn(
    config: Arc<Config>,
    store: Store,
    shutdown: &Shutdown,
    started: Started,
    tasks: &mut JoinSet<()>,
) {
    let mut shutdown = shutdown.subscribe();
    tasks.spawn(async move {
        loop {
            let (config, store) = (config.clone(), store.clone());
            let checked =
                tokio::task::spawn_blocking(move || check_and_alert(&config, &store)).await;
            if let Ok(health) = checked {
                tracing::info!(
                    disk = health.level.as_str(),
                    free_mb = health.free_bytes / (1024 * 1024),
                    uptime_s = started.uptime_s(),
                    "heartbeat"
                );
            }
            tokio::select! {
                _ = tokio::time::sleep(CHECK_EVERY) => {}
                _ = shutdown.wait_for(|stop| *stop) => return,
            }
        }
    });
}

/// One periodic check: prune when low, alert when still low, resolve when fine.
pub fn check_and_alert(config: &Config, store: &Store) -> DiskHealth {
    let mut health = health_check(config);
    if health.level == DiskLevel::Fail {
        prune(config, store);
        health = health_check(config);
    }
    if health.level == DiskLevel::Fail {
        let message = format!(
            "disk almost full: {} MB free on the data folder's file system (minimum {} MB); new prompts are refused",
            health.free_bytes / (1024 * 1024),
            config.storage.min_free_mb
        );
        super::raise_alert(store, "disk_full", "critical", &message);
    } else {
        super::resolve_alerts(store, "disk_full");
    }
    health
}

#[cfg(test)]
mod tests {
    use super::run_entry_task;

    #[test]
    fn run_folders_and_turn_records_are_told_by_their_task() {
        assert_eq!(run_entry_task("42"), Some((42, true)));
        assert_eq!(run_entry_task("42.turn.json"), Some((42, false)));
        assert_eq!(run_entry_task("42.turn.json.tmp"), Some((42, false)));
        assert_eq!(run_entry_task("warm"), None);
        assert_eq!(run_entry_task("x.turn.json"), None);
        assert_eq!(run_entry_task("42.json"), None);
    }
}
