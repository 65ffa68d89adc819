//! Snapshots: a consistent logical copy of the store in a fresh redb file, and the
//! verification of such a file.
//!
//! redb has no backup API, and a copy of the live file can catch a commit half
//! written; its maintainer's advice is to copy a read transaction into a new
//! database, which is what this does. Invariants:
//! - every row comes from ONE read transaction, so a snapshot is exactly one commit's
//!   state whatever the writer does meanwhile (MVCC: the writer never waits for it);
//! - the destination is created new (an existing file is never overwritten), filled
//!   in one durable write transaction, closed and fsynced;
//! - a snapshot is reported good only after the file was reopened, passed redb's
//!   integrity check, and holds per table exactly the rows the source held in that
//!   same read transaction;
//! - a table in the source that this copy does not know is an error, never silently
//!   left out (add it to `copy_every_table` together with `tables::ALL_TABLES`).

use std::fs::OpenOptions;
use std::path::Path;

use redb::{
    Database, Key, ReadTransaction, ReadableDatabase, ReadableTable, TableDefinition, Value,
    WriteTransaction,
};

use super::dump::{TableCount, table_counts_tx};
use super::error::{StoreError, open_error};
use super::tables::{self, ALL_TABLES};
use super::{Store, StoreResult};

/// Page cache of the snapshot file while it is written or checked: enough for a
/// sequential copy, small next to the service's own.
const SNAPSHOT_CACHE_BYTES: usize = 64 * 1024 * 1024;

/// What a verified snapshot file holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotInfo {
    /// Rows per table (every table of [`tables::ALL_TABLES`], in that order).
    pub table_counts: Vec<TableCount>,
    /// File size in bytes.
    pub size_bytes: u64,
}

impl Store {
    /// Copies every table, from one read transaction, into a new redb file at
    /// `dest` (which must not exist), fsyncs it, then verifies it: reopened,
    /// integrity-checked, and the same row count per table as the source had in that
    /// transaction. Blocking: call it from `spawn_blocking`. On error `dest` may
    /// remain; the caller removes it.
    pub fn snapshot_to(&self, dest: &Path) -> StoreResult<SnapshotInfo> {
        // Buffered samples belong in the snapshot; a store that can no longer
        // write still has a file worth copying.
        if let Err(e) = self.write_buffered_samples() {
            tracing::warn!(error = %e, "snapshot taken without the buffered samples");
        }
        let source = self.inner.db.begin_read()?;
        check_tables_known(&source)?;
        let source_counts = table_counts_tx(&source)?;

        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(dest)
            .map_err(|e| {
                StoreError::Io(format!("cannot create snapshot {}: {e}", dest.display()))
            })?;
        let backend = redb::backends::FileBackend::new(file).map_err(|e| open_error(dest, e))?;
        let target = Database::builder()
            .set_cache_size(SNAPSHOT_CACHE_BYTES)
            .create_with_backend(backend)
            .map_err(|e| open_error(dest, e))?;
        let tx = target.begin_write()?;
        copy_every_table(&source, &tx)?;
        tx.commit()?;
        drop(source);
        target
            .close()
            .map_err(|e| StoreError::Io(format!("closing snapshot {}: {e}", dest.display())))?;
        std::fs::File::open(dest)
            .and_then(|f| f.sync_all())
            .map_err(|e| StoreError::Io(format!("fsync of snapshot {}: {e}", dest.display())))?;

        let mut info = inspect_in_place(dest)?;
        // redb's integrity check commits to the file it checks, which can grow
        // it: the size reported (and recorded) is the file's as it is left.
        info.size_bytes = std::fs::metadata(dest)
            .map_err(|e| StoreError::Io(format!("{}: {e}", dest.display())))?
            .len();
        if info.table_counts != source_counts {
            return Err(StoreError::Corrupt {
                path: dest.to_path_buf(),
                detail: format!(
                    "row counts differ from the source: {}",
                    describe_difference(&source_counts, &info.table_counts)
                ),
            });
        }
        Ok(info)
    }
}

/// Verifies a closed snapshot (or database) file without changing it: redb's
/// integrity check commits to the file it checks, and a snapshot must stay
/// byte for byte as it was written (its hash, a read-only or immutable copy),
/// so the check runs on a private copy beside it, removed afterwards. See
/// [`inspect_in_place`] for what is checked. Blocking.
pub fn inspect_snapshot(path: &Path) -> StoreResult<SnapshotInfo> {
    let dir = super::scratch::scratch_dir(path)?;
    let copy = dir.join("snapshot.redb");
    let inspected = std::fs::copy(path, &copy)
        .map_err(|e| StoreError::Io(format!("{}: {e}", path.display())))
        .and_then(|_| inspect_in_place(&copy))
        .map_err(|e| e.with_path_shown(&copy, path));
    let _ = std::fs::remove_dir_all(&dir);
    inspected
}

/// Opens a closed file exclusively, runs redb's integrity check and counts the
/// rows of every table. A file that needed repair is reported corrupt: a
/// snapshot is written once and closed cleanly, so it never should.
fn inspect_in_place(path: &Path) -> StoreResult<SnapshotInfo> {
    let size_bytes = std::fs::metadata(path)
        .map_err(|e| StoreError::Io(format!("{}: {e}", path.display())))?
        .len();
    if size_bytes == 0 {
        return Err(StoreError::Corrupt {
            path: path.to_path_buf(),
            detail: "the file is empty".into(),
        });
    }
    let mut db = Database::builder()
        .set_cache_size(SNAPSHOT_CACHE_BYTES)
        .open(path)
        .map_err(|e| open_error(path, e))?;
    let clean = db.check_integrity().map_err(|e| open_error(path, e))?;
    if !clean {
        return Err(StoreError::Corrupt {
            path: path.to_path_buf(),
            detail: "the integrity check had to repair the file".into(),
        });
    }
    let tx = db.begin_read()?;
    let table_counts = table_counts_tx(&tx)?;
    Ok(SnapshotInfo {
        table_counts,
        size_bytes,
    })
}

/// Refuses a source holding a table this module would not copy.
fn check_tables_known(source: &ReadTransaction) -> StoreResult<()> {
    for handle in source.list_tables()? {
        use redb::TableHandle;
        if !ALL_TABLES.contains(&handle.name()) {
            return Err(StoreError::Internal(format!(
                "table `{}` is not known to the snapshot code; refusing an incomplete snapshot",
                handle.name()
            )));
        }
    }
    if let Some(handle) = source.list_multimap_tables()?.next() {
        use redb::MultimapTableHandle;
        return Err(StoreError::Internal(format!(
            "multimap table `{}` is not known to the snapshot code; refusing an incomplete snapshot",
            handle.name()
        )));
    }
    Ok(())
}

fn copy_every_table(source: &ReadTransaction, target: &WriteTransaction) -> StoreResult<()> {
    let mut copied: Vec<&str> = Vec::with_capacity(ALL_TABLES.len());
    macro_rules! copy {
        ($($def:expr),* $(,)?) => {
            $(
                copy_table(source, target, $def)?;
                copied.push(redb::TableHandle::name(&$def));
            )*
        };
    }
    copy!(
        tables::META,
        tables::SESSIONS,
        tables::MESSAGES,
        tables::TASKS,
        tables::TASK_QUEUE,
        tables::TASK_STATUS,
        tables::TASK_USER,
        tables::ACTIVE_USERS,
        tables::UPDATE_DEDUP,
        tables::OUTBOX,
        tables::COSTS,
        tables::RESTART_STATE,
        tables::SERIES,
        tables::SERIES_ROLLUP,
        tables::SERIES_NAMES,
        tables::ALERTS,
        tables::EVENTS,
        tables::BREAKERS,
        tables::TASK_EVENTS,
        tables::APPROVALS,
        tables::APPROVAL_REQUESTS,
        tables::USER_MODES,
        tables::USER_PROJECTS,
        tables::TASK_PROJECTS,
        tables::PROJECT_SESSIONS,
        tables::PROJECT_MESSAGES,
        tables::USER_MODELS,
        tables::APPROVAL_ANSWERS,
    );
    if let Some(missing) = ALL_TABLES.iter().find(|name| !copied.contains(name)) {
        return Err(StoreError::Internal(format!(
            "table `{missing}` is not copied by the snapshot code; refusing an incomplete snapshot"
        )));
    }
    Ok(())
}

fn copy_table<K: Key + 'static, V: Value + 'static>(
    source: &ReadTransaction,
    target: &WriteTransaction,
    def: TableDefinition<K, V>,
) -> StoreResult<()> {
    let from = match source.open_table(def) {
        Ok(table) => table,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    let mut to = target.open_table(def)?;
    for row in from.iter()? {
        let (key, value) = row?;
        to.insert(key.value(), value.value())?;
    }
    Ok(())
}

fn describe_difference(expected: &[TableCount], found: &[TableCount]) -> String {
    let mut parts = Vec::new();
    for want in expected {
        let got = found
            .iter()
            .find(|c| c.table == want.table)
            .map_or(0, |c| c.rows);
        if got != want.rows {
            parts.push(format!(
                "{} {} in the source, {} in the copy",
                want.table, want.rows, got
            ));
        }
    }
    if parts.is_empty() {
        "tables differ".into()
    } else {
        parts.join("; ")
    }
}
