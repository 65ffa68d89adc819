//! Backups: snapshots, verification, rotation, restore, the schedule, automatic
//! recovery at start, and the disk-space guard.
//!
//! The storage layer does the redb work (`Store::snapshot_to`, `inspect_snapshot`);
//! this module is the policy around it:
//! - [`create`]: `backup_dir/agentlab-<UTC time>.redb.tmp` → verified → renamed
//!   `.redb` → recorded (meta `last_backup`, event `backup`) → rotated ([`rotation`]);
//! - [`schedule`]: the cron schedule (croner + wall clock; see there why not
//!   tokio-cron-scheduler), with retries and the `backup_failed` alert;
//! - [`restore`]: `agentlab restore`, and the automatic recovery of
//!   [`open_store_or_restore`];
//! - [`disk`]: measuring free space and pruning when the disk is nearly full;
//! - [`remote`]: verified, optionally encrypted copies in object storage, uploaded
//!   in the background after each snapshot, and restored from there.
//!
//! The running service holds one [`Backups`] handle (the store, the configuration,
//! the offsite uploader): it starts the schedule and takes snapshots on demand
//! for `/backup` and `POST /api/backup`.
//!
//! Invariants: a snapshot file named `.redb` has passed verification; nothing here
//! ever deletes a database file or a snapshot except rotation after a verified
//! snapshot; the service keeps serving while a snapshot is written (one read
//! transaction, on a blocking thread).

pub mod create;
pub mod disk;
pub mod files;
pub mod remote;
pub mod restore;
pub mod rotation;
pub mod schedule;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::task::JoinSet;

use crate::config::Config;
use crate::shutdown::Shutdown;
use crate::status::Started;
use crate::storage::{Alert, AlertState, Store, StoreError, StoreOptions, now_ms};

pub use create::{BackupOutcome, backup_now, backup_with_retries};
pub use restore::{RestoreOutcome, newest_verified_snapshot, restore_snapshot};

/// Why a backup or restore failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackupError {
    /// The storage layer failed (reading the source, writing or verifying the copy).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A file or folder could not be used.
    #[error("{path}: {error}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The I/O error: in the message, and so not a `source`, or a printed
        /// chain would name it twice.
        error: std::io::Error,
    },
    /// The snapshot to restore failed verification.
    #[error(
        "snapshot {path} failed verification ({defect}); nothing was changed. \
         Choose another snapshot: `agentlab backups` lists them and whether each verifies"
    )]
    SnapshotInvalid {
        /// The snapshot.
        path: PathBuf,
        /// Why (in the message, so not a `source`: a printed chain names it once).
        defect: SnapshotDefect,
    },
    /// The service holds the database.
    #[error(
        "the agentlab service is running and holds {0}; stop it first (launchctl bootout / systemctl stop agentlab)"
    )]
    ServiceRunning(PathBuf),
    /// There is no snapshot to restore.
    #[error(
        "no verified snapshot in {0} (`agentlab backups` lists the snapshots there and why each fails verification)"
    )]
    NoSnapshot(PathBuf),
}

/// Why a snapshot cannot be used, worded for someone choosing a snapshot.
///
/// The storage layer's message for a corrupt file advises restoring a
/// snapshot, which is right for a damaged *database* but not for a snapshot
/// that is itself damaged, least of all inside `restore`: this says only what
/// is wrong, and the restore error adds the advice that fits.
#[derive(Debug, Clone)]
pub struct SnapshotDefect(pub StoreError);

impl std::fmt::Display for SnapshotDefect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            StoreError::Corrupt { detail, .. } => write!(f, "corrupt: {detail}"),
            other => write!(f, "{other}"),
        }
    }
}

/// What is wrong with a database file, without the storage layer's advice to
/// restore a snapshot: for start-up recovery, which restores one itself.
pub(crate) fn damage(error: &StoreError) -> String {
    match error {
        StoreError::Corrupt { path, detail } => format!("{}: {detail}", path.display()),
        other => other.to_string(),
    }
}

impl BackupError {
    pub(crate) fn io(path: &Path, error: std::io::Error) -> Self {
        BackupError::Io {
            path: path.to_path_buf(),
            error,
        }
    }
}

/// The store as opened at start, and what start-up had to do to open it.
pub struct OpenedStore {
    /// The store.
    pub store: Store,
    /// Notices for the operator (e.g. a restored snapshot).
    pub notices: Vec<String>,
}

/// Store options from the configuration.
pub fn store_options(config: &Config) -> StoreOptions {
    StoreOptions {
        cache_mb: config.storage.cache_mb,
        history_messages: config.storage.history_messages,
        quick_repair: config.storage.quick_repair,
        ..StoreOptions::default()
    }
}

/// Start-up step 2: opens the store with a full integrity check. A corrupt file
/// (not one merely held by another process) is moved aside as
/// `agentlab.redb.corrupt-<time>` and the newest verified snapshot restored, or,
/// with no snapshot, an empty store is started; either way a `database_restored`
/// alert is raised and a notice returned. Blocking.
pub fn open_store_or_restore(config: &Config) -> anyhow::Result<OpenedStore> {
    let path = config.database_path();
    let opened = if is_empty_file(&path) {
        // redb would silently initialise an empty file as a new database.
        Err(StoreError::Corrupt {
            path: path.clone(),
            detail: "the file is empty".into(),
        })
    } else {
        open_waiting_for_lock(&path, store_options(config))
    };
    match opened {
        Ok(store) => Ok(OpenedStore {
            store,
            notices: Vec::new(),
        }),
        Err(e) if e.is_corrupt() => {
            let recovered = restore::recover_corrupt_database(config, &e)?;
            Ok(recovered)
        }
        Err(e) => Err(anyhow::Error::new(e).context(format!("opening {}", path.display()))),
    }
}

/// How long start-up waits for a database lock held by someone else.
const LOCK_PATIENCE: std::time::Duration = std::time::Duration::from_secs(5);

/// Opens the store, waiting briefly while another process holds the lock. After a
/// SIGKILL, a child the dead service was forking at that instant can hold the
/// file's lock for a moment (until its exec closes it); found by the kill -9 loop.
/// A genuinely running second service still gets `AlreadyOpen` after the wait.
fn open_waiting_for_lock(path: &Path, options: StoreOptions) -> Result<Store, StoreError> {
    let deadline = std::time::Instant::now() + LOCK_PATIENCE;
    let mut logged = false;
    loop {
        match open_catching_panics(path, options.clone()) {
            Err(StoreError::AlreadyOpen { .. }) if std::time::Instant::now() < deadline => {
                if !logged {
                    tracing::warn!(path = %path.display(), "database is locked by another process; waiting up to 5 s");
                    logged = true;
                }
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            other => return other,
        }
    }
}

fn is_empty_file(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.len() == 0)
}

/// [`Store::open_checked`], with a panic inside redb (possible on a damaged file)
/// reported as corruption instead of taking the process down.
fn open_catching_panics(path: &Path, options: StoreOptions) -> Result<Store, StoreError> {
    let attempt = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        Store::open_checked(path, options)
    }));
    match attempt {
        Ok(result) => result,
        Err(panic) => {
            let detail = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "redb panicked while opening the file".into());
            Err(StoreError::Corrupt {
                path: path.to_path_buf(),
                detail,
            })
        }
    }
}

/// The backups of a running service: what the schedule and on-demand snapshots use.
#[derive(Clone)]
pub struct Backups {
    config: Arc<Config>,
    store: Store,
    offsite: remote::offsite::Offsite,
}

impl Backups {
    /// Backups of `store` as `config` says, copied offsite by `offsite`.
    pub fn new(config: Arc<Config>, store: Store, offsite: remote::offsite::Offsite) -> Self {
        Backups {
            config,
            store,
            offsite,
        }
    }

    /// The offsite uploader (its report is part of health).
    pub fn offsite(&self) -> &remote::offsite::Offsite {
        &self.offsite
    }

    /// Starts the backup schedule, the disk guard's periodic check (its heartbeat
    /// log line tells the uptime since `started`) and the offsite uploader; all
    /// end at `shutdown`.
    pub fn spawn(&self, shutdown: &Shutdown, started: Started, tasks: &mut JoinSet<()>) {
        schedule::spawn(self.clone(), shutdown, tasks);
        disk::spawn(
            self.config.clone(),
            self.store.clone(),
            shutdown,
            started,
            tasks,
        );
        self.offsite.spawn(shutdown, tasks);
    }

    /// Takes a snapshot now (`/backup`, `POST /api/backup`): on a blocking thread,
    /// so the service keeps serving. A failure raises `backup_failed`.
    pub async fn take_snapshot(&self) -> anyhow::Result<String> {
        let store = self.store.clone();
        let config = self.config.clone();
        let span = tracing::Span::current();
        let outcome = tokio::task::spawn_blocking(move || {
            let _entered = span.enter();
            let result = backup_now(&store, &config);
            if let Err(e) = &result {
                create::report_backup_failure(&store, e, 1);
            }
            result
        })
        .await??;
        self.offsite.snapshot_taken();
        Ok(outcome.summary())
    }
}

/// Raises a firing alert of `rule`, unless one is already open (then its message
/// is updated). Failures to write it are logged: an alert about a broken store
/// must not fail the operation that noticed.
pub fn raise_alert(store: &Store, rule: &str, severity: &str, message: &str) {
    let now = now_ms();
    let existing = store
        .open_alerts()
        .ok()
        .and_then(|open| open.into_iter().find(|a| a.rule == rule));
    let alert = match existing {
        Some(mut alert) => {
            alert.message = message.to_string();
            alert.severity = severity.to_string();
            alert
        }
        None => Alert {
            id: 0,
            rule: rule.to_string(),
            subject: String::new(),
            severity: severity.to_string(),
            state: AlertState::Firing,
            started_ms: now,
            fired_ms: Some(now),
            resolved_ms: None,
            value: 1.0,
            message: message.to_string(),
            notified_ms: None,
        },
    };
    match store.upsert_alert(alert).wait() {
        Ok(id) => tracing::warn!(rule, alert_id = id, message, "alert raised"),
        Err(e) => tracing::error!(rule, error = %e, message, "cannot store the alert"),
    }
}

/// Resolves every open alert of `rule`.
pub fn resolve_alerts(store: &Store, rule: &str) {
    let Ok(open) = store.open_alerts() else {
        return;
    };
    for mut alert in open.into_iter().filter(|a| a.rule == rule) {
        alert.state = AlertState::Resolved;
        alert.resolved_ms = Some(now_ms());
        if let Err(e) = store.upsert_alert(alert).wait() {
            tracing::warn!(rule, error = %e, "cannot resolve the alert");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_io_error_is_named_once_in_the_printed_chain() {
        let cause = std::io::Error::other("No space left on device");
        let error = anyhow::Error::from(BackupError::io(Path::new("/b/x.redb.tmp"), cause));
        let printed = format!("{error:#}");
        assert_eq!(printed, "/b/x.redb.tmp: No space left on device");
        // Logged on its own (`error = %e`), it keeps its cause.
        assert_eq!(error.to_string(), printed);
    }
}
