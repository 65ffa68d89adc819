//! Restoring a snapshot: by hand (`agentlab restore`, local or `--remote`) and
//! automatically at start when the database is corrupt — from the newest local
//! snapshot that verifies, else from the newest remote copy that passes every
//! check ([`super::remote`]), else an empty store, each said by an alert.
//!
//! Invariants: nothing is ever deleted — the file being replaced is renamed aside
//! (`agentlab.redb.pre-restore-<time>` by hand, `agentlab.redb.corrupt-<time>` at
//! start); a snapshot is verified (integrity check and row counts) before it is
//! used; it is copied to a temporary file in the data folder, fsynced and renamed
//! into place, so a crash mid-restore leaves either the old state or the new one;
//! a file held by a running service is never touched.

use std::path::{Path, PathBuf};

use serde_json::json;

use super::files::{self, SnapshotFile};
use super::{BackupError, OpenedStore, SnapshotDefect, damage, raise_alert, store_options};
use crate::config::Config;
use crate::storage::{
    SnapshotInfo, Store, StoreError, TableCount, inspect_snapshot, iso8601, now_ms,
};

/// What a restore did.
#[derive(Debug, Clone)]
pub struct RestoreOutcome {
    /// The snapshot restored.
    pub snapshot: PathBuf,
    /// When the snapshot was taken (from its name), if it is named like one.
    pub taken_ms: Option<u64>,
    /// Rows per table restored.
    pub table_counts: Vec<TableCount>,
    /// Where the replaced database file was moved (none when there was none).
    pub moved_aside: Option<PathBuf>,
}

impl RestoreOutcome {
    /// A few lines for humans.
    pub fn summary(&self) -> String {
        let taken = self
            .taken_ms
            .map_or_else(|| "unknown time".to_string(), iso8601);
        let counts: Vec<String> = self
            .table_counts
            .iter()
            .filter(|c| c.rows > 0)
            .map(|c| format!("{} {}", c.table, c.rows))
            .collect();
        let aside = self.moved_aside.as_ref().map_or_else(
            || "there was no database file to replace".to_string(),
            |p| format!("the previous file is kept at {}", p.display()),
        );
        format!(
            "restored {} (taken {taken}); rows: {}; {aside}",
            self.snapshot.display(),
            if counts.is_empty() {
                "none".to_string()
            } else {
                counts.join(", ")
            }
        )
    }
}

/// A snapshot that passed verification, with what it holds.
pub type VerifiedSnapshot = (SnapshotFile, SnapshotInfo);
/// Snapshots that failed verification: (path, why), newest first.
pub type RejectedSnapshots = Vec<(PathBuf, String)>;

/// The newest snapshot in `config.backup_dir` that passes verification, with what
/// it holds; the ones that failed are returned too (path, why), newest first.
pub fn newest_verified_snapshot(
    config: &Config,
) -> Result<(Option<VerifiedSnapshot>, RejectedSnapshots), BackupError> {
    let dir = &config.backup_dir;
    let mut rejected = Vec::new();
    for file in files::list_snapshots(dir).map_err(|e| BackupError::io(dir, e))? {
        match inspect_snapshot(&file.path) {
            Ok(info) => return Ok((Some((file, info)), rejected)),
            Err(e) => {
                let defect = SnapshotDefect(e).to_string();
                tracing::warn!(path = %file.path.display(), error = %defect, "snapshot failed verification; trying an older one");
                rejected.push((file.path.clone(), defect));
            }
        }
    }
    Ok((None, rejected))
}

/// Restores `snapshot` over the configured database, by hand. Refuses while
/// another process (the service) holds the database. Verifies the snapshot first,
/// moves the current file aside as `agentlab.redb.pre-restore-<time>`, installs the
/// copy, checks it opens, and records a `restore` event in it. Blocking.
pub fn restore_snapshot(config: &Config, snapshot: &Path) -> Result<RestoreOutcome, BackupError> {
    let db_path = config.database_path();
    let info = inspect_snapshot(snapshot).map_err(|e| BackupError::SnapshotInvalid {
        path: snapshot.to_path_buf(),
        defect: SnapshotDefect(e),
    })?;
    // Hold the current file (if it opens) while it is moved aside: redb's lock
    // follows the open file, so the service cannot take it meanwhile.
    let held = if db_path.exists() {
        match Store::open(&db_path, store_options(config)) {
            Ok(store) => Some(store),
            Err(StoreError::AlreadyOpen { .. }) => {
                return Err(BackupError::ServiceRunning(db_path));
            }
            Err(e) if e.is_corrupt() => None,
            Err(e) => return Err(e.into()),
        }
    } else {
        None
    };
    let moved_aside = move_aside(&db_path, "pre-restore")?;
    if let Some(store) = held {
        store.close();
    }
    install_snapshot(snapshot, &db_path)?;
    let outcome = RestoreOutcome {
        snapshot: snapshot.to_path_buf(),
        taken_ms: snapshot
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(files::parse_snapshot_name),
        table_counts: info.table_counts,
        moved_aside,
    };
    let store = Store::open_checked(&db_path, store_options(config))?;
    let payload = json!({
        "reason": "manual",
        "snapshot": outcome.snapshot.display().to_string(),
        "moved_aside": outcome.moved_aside.as_ref().map(|p| p.display().to_string()),
    });
    let recorded = store
        .append_event("restore", None, payload, now_ms())
        .wait();
    store.close();
    recorded?;
    Ok(outcome)
}

/// Start-up step 2 after the database failed to open as corrupt: moves it aside,
/// restores the newest verified snapshot — local, else remote — (or starts empty
/// when there is none) and raises the `database_restored` alert saying which.
pub(super) fn recover_corrupt_database(
    config: &Config,
    why: &StoreError,
) -> Result<OpenedStore, BackupError> {
    let db_path = config.database_path();
    // Restoring is what this does: the storage layer's advice to restore is
    // left out of what the operator is told.
    let why = damage(why);
    tracing::error!(error = %why, "the database is corrupt; moving it aside and restoring the newest snapshot");
    let corrupt = move_aside(&db_path, "corrupt")?;
    let corrupt_text = corrupt
        .as_ref()
        .map_or_else(|| "(no file)".to_string(), |p| p.display().to_string());
    let (found, rejected) = newest_verified_snapshot(config)?;
    // No local snapshot verifies: the newest remote copy that passes every check.
    let mut from_remote = None;
    let mut remote_failure = String::new();
    let found = match found {
        Some(found) => Some(found),
        None => match super::remote::fetch_newest_blocking(config) {
            Ok(Some(fetched)) => {
                let file = SnapshotFile {
                    path: fetched.path,
                    taken_ms: fetched.manifest.taken_ms,
                    size_bytes: fetched.info.size_bytes,
                };
                from_remote = Some(fetched.manifest.object);
                Some((file, fetched.info))
            }
            Ok(None) => None,
            Err(e) => {
                tracing::error!(error = %e, "no remote copy could be restored either");
                remote_failure = format!(" No remote copy could be used either: {e}.");
                None
            }
        },
    };
    let skipped = if rejected.is_empty() {
        String::new()
    } else {
        format!(
            " ({} newer snapshot(s) failed verification and were skipped)",
            rejected.len()
        )
    };

    let Some((file, info)) = found else {
        let store = Store::open(&db_path, store_options(config))?;
        let message = format!(
            "DATABASE LOST: the database was corrupt ({why}) and no verified snapshot exists in {}{skipped}. \
             agentlab started with an EMPTY database. The corrupt file is kept at {corrupt_text}.{remote_failure}",
            config.backup_dir.display(),
        );
        raise_alert(&store, "database_restored", "critical", &message);
        record_recovery_event(&store, None, corrupt.as_deref());
        return Ok(OpenedStore {
            store,
            notices: vec![message],
        });
    };

    install_snapshot(&file.path, &db_path)?;
    let store = Store::open_checked(&db_path, store_options(config))?;
    let tasks = info
        .table_counts
        .iter()
        .find(|c| c.table == "tasks")
        .map_or(0, |c| c.rows);
    let source = match &from_remote {
        Some(object) => format!(
            "no local snapshot verified{skipped}, so the remote copy {object} from {} (downloaded to {}) \
             taken {} was restored ({tasks} tasks)",
            crate::config::redact_secret_url(&config.backup.remote.url),
            file.path.display(),
            iso8601(file.taken_ms),
        ),
        None => format!(
            "snapshot {} taken {} was restored ({tasks} tasks){skipped}",
            file.path.display(),
            iso8601(file.taken_ms),
        ),
    };
    let message = format!(
        "The database was corrupt ({why}); it was moved aside to {corrupt_text} and {source}. \
         Changes after that time are lost."
    );
    raise_alert(&store, "database_restored", "warning", &message);
    record_recovery_event(&store, Some(&file.path), corrupt.as_deref());
    Ok(OpenedStore {
        store,
        notices: vec![message],
    })
}

fn record_recovery_event(store: &Store, snapshot: Option<&Path>, corrupt: Option<&Path>) {
    let payload = json!({
        "reason": "corrupt",
        "snapshot": snapshot.map(|p| p.display().to_string()),
        "corrupt_file": corrupt.map(|p| p.display().to_string()),
    });
    if let Err(e) = store
        .append_event("restore", None, payload, now_ms())
        .wait()
    {
        tracing::warn!(error = %e, "cannot record the restore event");
    }
}

/// Renames `db_path` to `<name>.<label>-<UTC time>`; `None` when it does not exist.
fn move_aside(db_path: &Path, label: &str) -> Result<Option<PathBuf>, BackupError> {
    if !db_path.exists() {
        return Ok(None);
    }
    let name = db_path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("agentlab.redb");
    let mut at = now_ms();
    let mut aside = db_path.with_file_name(format!("{name}.{label}-{}", files::utc_stamp(at)));
    while aside.exists() {
        at += 1;
        aside = db_path.with_file_name(format!("{name}.{label}-{}", files::utc_stamp(at)));
    }
    std::fs::rename(db_path, &aside).map_err(|e| BackupError::io(db_path, e))?;
    if let Some(dir) = db_path.parent().filter(|d| !d.as_os_str().is_empty()) {
        files::sync_dir(dir).map_err(|e| BackupError::io(dir, e))?;
    }
    tracing::warn!(from = %db_path.display(), to = %aside.display(), "database file moved aside");
    Ok(Some(aside))
}

/// Copies a verified snapshot to `<db>.restoring`, fsyncs it, renames it to `db`.
fn install_snapshot(snapshot: &Path, db_path: &Path) -> Result<(), BackupError> {
    let dir = db_path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| BackupError::io(dir, e))?;
    let tmp = db_path.with_extension("redb.restoring");
    let copied = std::fs::copy(snapshot, &tmp)
        .and_then(|_| std::fs::File::open(&tmp)?.sync_all())
        .and_then(|_| std::fs::rename(&tmp, db_path))
        .and_then(|_| files::sync_dir(dir));
    if let Err(e) = copied {
        let _ = std::fs::remove_file(&tmp);
        return Err(BackupError::io(db_path, e));
    }
    tracing::info!(snapshot = %snapshot.display(), to = %db_path.display(), "snapshot installed");
    Ok(())
}
