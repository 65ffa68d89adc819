//! Taking a snapshot: temporary file → verified copy → rename → record → rotate.
//!
//! Invariants: at most one snapshot is written at a time in this process (a lock
//! held around the whole sequence); a `.redb` name appears only after
//! verification; on any failure the temporary file is removed and nothing older is
//! touched; rotation runs only after success.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde_json::json;

use super::files::{self, SnapshotFile, TMP_SUFFIX};
use super::{BackupError, raise_alert, resolve_alerts, rotation};
use crate::config::Config;
use crate::storage::{BackupRecord, Store, TableCount, now_ms};

/// Serialises snapshots in this process (scheduled, `/backup`, `POST /api/backup`).
/// A std `Mutex` is right: it is only taken on blocking threads, never across an
/// `.await`.
static SNAPSHOT_LOCK: Mutex<()> = Mutex::new(());

/// A snapshot that was taken, verified, recorded and rotated.
#[derive(Debug, Clone)]
pub struct BackupOutcome {
    /// The snapshot.
    pub file: SnapshotFile,
    /// Rows per table, as in the source's read transaction (and verified in the file).
    pub table_counts: Vec<TableCount>,
    /// Older snapshots removed by rotation.
    pub removed: Vec<PathBuf>,
    /// How long it took, ms.
    pub elapsed_ms: u64,
}

impl BackupOutcome {
    /// One line for humans (the CLI, the bot, the API).
    pub fn summary(&self) -> String {
        let tasks = self
            .table_counts
            .iter()
            .find(|c| c.table == "tasks")
            .map_or(0, |c| c.rows);
        format!(
            "snapshot {} verified ({}, {tasks} tasks, {} ms){}",
            self.file.path.display(),
            human_size(self.file.size_bytes),
            self.elapsed_ms,
            if self.removed.is_empty() {
                String::new()
            } else {
                format!("; {} old snapshot(s) rotated out", self.removed.len())
            }
        )
    }
}

/// Runs `work` on a scoped thread of its own at a lower CPU priority (nice 10 on
/// Linux, where niceness is per thread), so that on a small machine the bot and
/// the workers win the CPU while a snapshot is copied and verified. A thread of
/// its own, because a thread's niceness cannot be raised back without privilege
/// and the runtime's blocking threads are reused. Elsewhere it runs at normal
/// priority.
fn at_low_priority<T: Send>(
    dir: &Path,
    work: impl FnOnce() -> Result<T, BackupError> + Send,
) -> Result<T, BackupError> {
    std::thread::scope(|scope| {
        let handle = std::thread::Builder::new()
            .name("snapshot".into())
            .spawn_scoped(scope, || {
                lower_this_threads_priority();
                work()
            })
            .map_err(|e| BackupError::io(dir, e))?;
        handle
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// Lowers the calling thread's CPU priority (see [`at_low_priority`]); for
/// threads of their own that do a snapshot's heavy lifting.
#[cfg(target_os = "linux")]
pub(super) fn lower_this_threads_priority() {
    // Relative to the thread's current niceness (an absolute 10 would raise the
    // priority of a service run at nice 15), at most 19.
    // SAFETY: getpriority/setpriority with who = 0 read and change only the
    // calling thread on Linux.
    let current = unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
    let target = (current + SNAPSHOT_NICE).min(19);
    let failed = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, target) } != 0;
    if failed {
        let error = std::io::Error::last_os_error();
        tracing::debug!(%error, "the snapshot thread keeps its priority");
    }
}

/// Lowers the calling thread's CPU priority (Linux only).
#[cfg(not(target_os = "linux"))]
pub(super) fn lower_this_threads_priority() {}

/// Niceness added for the snapshot thread.
#[cfg(target_os = "linux")]
const SNAPSHOT_NICE: libc::c_int = 10;

/// Takes a verified snapshot of `store` into `config.backup_dir`, records it (meta
/// `last_backup` and a `backup` event), resolves an open `backup_failed` alert and
/// rotates. Blocking: call it from `spawn_blocking`. Raises no alert on failure:
/// [`backup_with_retries`] and the scheduler decide when a failure is final.
pub fn backup_now(store: &Store, config: &Config) -> Result<BackupOutcome, BackupError> {
    let _one_at_a_time = SNAPSHOT_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let started = std::time::Instant::now();
    let dir = &config.backup_dir;
    std::fs::create_dir_all(dir).map_err(|e| BackupError::io(dir, e))?;
    if let Ok(n @ 1..) = files::remove_stale_temporaries(dir) {
        tracing::warn!(
            removed = n,
            "removed temporary files of an interrupted snapshot"
        );
    }
    let (file, table_counts) = at_low_priority(dir, || write_verified_snapshot(store, dir))?;
    let elapsed_ms = started.elapsed().as_millis() as u64;

    let record = BackupRecord {
        path: file.path.display().to_string(),
        taken_ms: file.taken_ms,
        size_bytes: file.size_bytes,
        verified: true,
        table_counts: table_counts
            .iter()
            .map(|c| (c.table.clone(), c.rows))
            .collect(),
    };
    store.record_backup(record).wait()?;
    let payload = json!({
        "path": file.path.display().to_string(),
        "size_bytes": file.size_bytes,
        "elapsed_ms": elapsed_ms,
        "verified": true,
    });
    store
        .append_event("backup", None, payload, now_ms())
        .wait()?;
    resolve_alerts(store, "backup_failed");

    let removed = match rotate(dir, config) {
        Ok(removed) => removed,
        Err(e) => {
            tracing::warn!(error = %e, "snapshot rotation failed; older snapshots are kept");
            Vec::new()
        }
    };
    tracing::info!(path = %file.path.display(), size_bytes = file.size_bytes, elapsed_ms, rotated = removed.len(), "snapshot taken");
    Ok(BackupOutcome {
        file,
        table_counts,
        removed,
        elapsed_ms,
    })
}

/// [`backup_now`], retried after each of `delays` on failure. When every attempt
/// failed, raises the `backup_failed` alert and records a `backup_failed` event.
/// Blocking.
pub fn backup_with_retries(
    store: &Store,
    config: &Config,
    delays: &[std::time::Duration],
) -> Result<BackupOutcome, BackupError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        match backup_now(store, config) {
            Ok(outcome) => return Ok(outcome),
            Err(e) if attempt <= delays.len() => {
                tracing::warn!(error = %e, attempt, "snapshot failed; retrying");
                std::thread::sleep(delays[attempt - 1]);
            }
            Err(e) => {
                report_backup_failure(store, &e, attempt);
                return Err(e);
            }
        }
    }
}

/// Raises `backup_failed` and records the failure as an event.
pub fn report_backup_failure(store: &Store, error: &BackupError, attempts: usize) {
    tracing::error!(error = %error, attempts, "snapshot failed");
    let message =
        format!("backup failed after {attempts} attempt(s): {error}. Older snapshots are intact.");
    raise_alert(store, "backup_failed", "warning", &message);
    let payload = json!({"error": error.to_string(), "attempts": attempts});
    if let Err(e) = store
        .append_event("backup_failed", None, payload, now_ms())
        .wait()
    {
        tracing::warn!(error = %e, "cannot record the backup_failed event");
    }
}

/// Writes `<dir>/agentlab-<time>.redb.tmp`, verifies it, renames it to `.redb`.
fn write_verified_snapshot(
    store: &Store,
    dir: &Path,
) -> Result<(SnapshotFile, Vec<TableCount>), BackupError> {
    let mut taken_ms = now_ms();
    // Two snapshots in one millisecond (or a clock step back) must not collide.
    while dir.join(files::snapshot_name(taken_ms)).exists() {
        taken_ms += 1;
    }
    let path = dir.join(files::snapshot_name(taken_ms));
    let tmp = dir.join(format!(
        "{}{TMP_SUFFIX}",
        files::snapshot_name(taken_ms).trim_end_matches(".redb")
    ));
    let result = store
        .snapshot_to(&tmp)
        .map_err(BackupError::from)
        .and_then(|info| {
            std::fs::rename(&tmp, &path).map_err(|e| BackupError::io(&path, e))?;
            files::sync_dir(dir).map_err(|e| BackupError::io(dir, e))?;
            Ok(info)
        });
    match result {
        Ok(info) => Ok((
            SnapshotFile {
                path,
                taken_ms,
                size_bytes: info.size_bytes,
            },
            info.table_counts,
        )),
        Err(e) => {
            if let Err(rm) = std::fs::remove_file(&tmp)
                && rm.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(error = %rm, path = %tmp.display(), "cannot remove the temporary snapshot");
            }
            Err(e)
        }
    }
}

/// Deletes the snapshots the rotation policy does not keep; returns them.
pub fn rotate(dir: &Path, config: &Config) -> Result<Vec<PathBuf>, BackupError> {
    let all = files::list_snapshots(dir).map_err(|e| BackupError::io(dir, e))?;
    let mut removed = Vec::new();
    for old in rotation::snapshots_to_delete(&all, &config.backup) {
        std::fs::remove_file(&old.path).map_err(|e| BackupError::io(&old.path, e))?;
        removed.push(old.path);
    }
    Ok(removed)
}

/// `12.3 MB`-style size.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KB", "MB", "GB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit + 1 < UNITS.len() {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(target_os = "linux")]
    fn this_threads_nice() -> libc::c_int {
        // SAFETY: getpriority with who = 0 reads the calling thread's niceness.
        unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) }
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn snapshot_work_runs_niced_and_leaves_the_caller_alone() {
        let before = this_threads_nice();
        let inside = at_low_priority(Path::new("."), || Ok(this_threads_nice())).expect("ran");
        assert_eq!(inside, (before + SNAPSHOT_NICE).min(19), "inside {inside}");
        assert_eq!(this_threads_nice(), before, "the caller's niceness changed");
    }

    #[test]
    fn snapshot_work_errors_come_back() {
        let dir = Path::new("/nowhere");
        let err = at_low_priority::<()>(dir, || {
            Err(BackupError::io(dir, std::io::Error::other("disk gone")))
        })
        .expect_err("error passed through");
        assert!(err.to_string().contains("disk gone"), "{err}");
    }
}
