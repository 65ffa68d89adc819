//! A dry run's view of a database file: what opening it would do, and a store
//! to preview writes against, without changing the file.
//!
//! Invariant: nothing here writes to the database file or its journal. The file
//! is first opened through redb's read-only handle (the OS file is opened for
//! reading only, and redb's lock keeps the service from starting meanwhile);
//! while that handle is held, the file and its journal are copied into a fresh
//! temporary folder. Everything an ordinary open does first — repair after an
//! unclean exit, pending migrations, redoing journaled task operations — then
//! happens to the copy, which is deleted when the [`ScratchStore`] is dropped.

use std::path::{Path, PathBuf};

use redb::{Database, ReadableDatabase};

use super::error::{self, StoreError};
use super::journal::Journal;
use super::migrations;
use super::{Store, StoreOptions, StoreResult};

/// A throw-away copy of a database file, opened as a [`Store`].
pub struct ScratchStore {
    store: Store,
    dir: PathBuf,
    original: PathBuf,
    schema_before: u32,
    repaired: bool,
}

impl ScratchStore {
    /// The opened copy (migrated, journal redone): preview against it.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The schema version of the original file.
    pub fn schema_before(&self) -> u32 {
        self.schema_before
    }

    /// The migrations opening the original would apply: (version, name).
    pub fn pending_migrations(&self) -> Vec<(u32, &'static str)> {
        migrations::pending_after(self.schema_before)
    }

    /// Journaled task operations opening the original would redo.
    pub fn journal_operations_to_redo(&self) -> u64 {
        self.store.replayed_at_open()
    }

    /// Whether the original was left by an unclean exit (opening it repairs it).
    pub fn needs_repair(&self) -> bool {
        self.repaired
    }

    /// One sentence on what opening the original would do before anything else
    /// (repair, migrations, journal redo); `None` when it would do nothing.
    pub fn opening_steps(&self) -> Option<String> {
        let mut steps = Vec::new();
        if self.repaired {
            steps.push("repair it (the last run did not exit cleanly)".to_string());
        }
        let pending = self.pending_migrations();
        if !pending.is_empty() {
            let names: Vec<String> = pending
                .iter()
                .map(|(version, name)| format!("{version:04}_{name}"))
                .collect();
            steps.push(format!(
                "migrate it from schema {} to {} ({})",
                self.schema_before,
                migrations::latest_version(),
                names.join(", ")
            ));
        }
        let redo = self.journal_operations_to_redo();
        if redo > 0 {
            steps.push(format!("redo {redo} journaled task operations"));
        }
        (!steps.is_empty()).then(|| {
            format!(
                "opening {} would first {}; this dry run did that on a copy only",
                self.original.display(),
                steps.join(", ")
            )
        })
    }
}

impl Drop for ScratchStore {
    fn drop(&mut self) {
        self.store.close();
        // redb's handle on the copy closes when `store` drops, just after this:
        // unlinking a file that is still open is fine on unix (the journal is
        // unix-only too).
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            tracing::warn!(dir = %self.dir.display(), error = %e, "cannot remove the dry run's scratch copy");
        }
    }
}

impl Store {
    /// Copies the database at `path` (which must exist) and its journal into a
    /// temporary folder and opens the copy; the original is never written (see
    /// the module doc). A file held by the running service is
    /// [`StoreError::AlreadyOpen`], as for [`Store::open`].
    pub fn open_scratch_copy(path: &Path, options: StoreOptions) -> StoreResult<ScratchStore> {
        if !path.is_file() {
            return Err(StoreError::NotFound {
                what: format!("database {}", path.display()),
            });
        }
        let dir = scratch_dir(path)?;
        let copy = dir.join("agentlab.redb");
        let copied = copy_under_read_lock(path, &copy);
        let schema_before = match copied {
            Ok(version) => version,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(e);
            }
        };
        let repaired = schema_before.is_none();
        let opened = schema_before
            .map_or_else(|| repair_and_read_version(&copy), Ok)
            .and_then(|before| Ok((before, Store::open(&copy, options)?)));
        match opened {
            Ok((schema_before, store)) => Ok(ScratchStore {
                store,
                dir,
                original: path.to_path_buf(),
                schema_before,
                repaired,
            }),
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                Err(e)
            }
        }
    }
}

/// Copies `path` and its journal to `copy` while holding a read-only handle on
/// it. Returns the file's schema version, or `None` when the file needs a repair
/// (redb refuses a read-only handle then; nobody holds the file, so the copy is
/// still a stable one).
fn copy_under_read_lock(path: &Path, copy: &Path) -> StoreResult<Option<u32>> {
    let handle = match Database::builder()
        .set_cache_size(4 * 1024 * 1024)
        .open_read_only(path)
    {
        Ok(db) => Some(db),
        Err(redb::DatabaseError::RepairAborted) => None,
        Err(e) => return Err(error::open_error(path, e)),
    };
    let version = match &handle {
        Some(db) => Some(migrations::current_version_read(&db.begin_read()?)?),
        None => None,
    };
    let io = |what: &Path, e: std::io::Error| {
        StoreError::Io(format!("cannot copy {} for a dry run: {e}", what.display()))
    };
    std::fs::copy(path, copy).map_err(|e| io(path, e))?;
    let journal = Journal::path_for(path);
    if journal.is_file() {
        std::fs::copy(&journal, Journal::path_for(copy)).map_err(|e| io(&journal, e))?;
    }
    drop(handle);
    Ok(version)
}

/// Lets redb repair a copy left by an unclean exit, and reads its schema version.
fn repair_and_read_version(copy: &Path) -> StoreResult<u32> {
    let db = Database::builder()
        .set_cache_size(4 * 1024 * 1024)
        .create(copy)
        .map_err(|e| error::open_error(copy, e))?;
    let version = migrations::current_version_read(&db.begin_read()?)?;
    Ok(version)
}

/// Prefix of scratch folders, beside the database.
const SCRATCH_PREFIX: &str = ".agentlab-dry-run-";
/// A scratch folder older than this was left by a dry run that was killed.
const STALE_SCRATCH: std::time::Duration = std::time::Duration::from_secs(3600);

/// A new scratch folder beside the database (same filesystem, same permissions
/// as the data it copies: conversations are private), after removing those
/// that killed dry runs left behind.
pub(super) fn scratch_dir(db_path: &Path) -> StoreResult<PathBuf> {
    let parent = db_path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    remove_stale_scratch(parent);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let dir = parent.join(format!("{SCRATCH_PREFIX}{}-{nanos}", std::process::id()));
    let mut builder = std::fs::DirBuilder::new();
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(&dir).map_err(|e| {
        StoreError::Io(format!(
            "cannot create a scratch folder {} for a private copy: {e}",
            dir.display()
        ))
    })?;
    Ok(dir)
}

fn remove_stale_scratch(parent: &Path) {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let stale = entry
            .file_name()
            .to_string_lossy()
            .starts_with(SCRATCH_PREFIX)
            && entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > STALE_SCRATCH);
        if stale {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}
