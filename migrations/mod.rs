//! Schema migrations, compiled into the binary and applied in order at open.
//!
//! Each step is one numbered file with an `apply` function. All pending steps run
//! inside one write transaction together with the new version number in `meta`, so
//! a crash mid-migration leaves the previous schema intact. A file whose version is
//! newer than this build knows is refused rather than guessed at.

use redb::{Database, ReadTransaction, ReadableTable, WriteTransaction};

use super::error::StoreError;
use super::tables::META;

#[path = "0001_initial.rs"]
mod m0001_initial;
#[path = "0002_status_and_user_indexes.rs"]
mod m0002_status_and_user_indexes;
#[path = "0003_drop_minute_rollups.rs"]
mod m0003_drop_minute_rollups;
#[path = "0004_task_journal.rs"]
mod m0004_task_journal;
#[path = "0005_projects.rs"]
mod m0005_projects;
#[path = "0006_finished_status_index.rs"]
mod m0006_finished_status_index;
#[path = "0007_succeeded_not_indexed.rs"]
mod m0007_succeeded_not_indexed;

/// Key of the schema version in `meta` (a little-endian u32).
pub(crate) const SCHEMA_VERSION_KEY: &str = "schema_version";

struct Migration {
    version: u32,
    name: &'static str,
    apply: fn(&WriteTransaction) -> Result<(), StoreError>,
}

const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "initial",
        apply: m0001_initial::apply,
    },
    Migration {
        version: 2,
        name: "status_and_user_indexes",
        apply: m0002_status_and_user_indexes::apply,
    },
    Migration {
        version: 3,
        name: "drop_minute_rollups",
        apply: m0003_drop_minute_rollups::apply,
    },
    Migration {
        version: 4,
        name: "task_journal",
        apply: m0004_task_journal::apply,
    },
    Migration {
        version: 5,
        name: "projects",
        apply: m0005_projects::apply,
    },
    Migration {
        version: 6,
        name: "finished_status_index",
        apply: m0006_finished_status_index::apply,
    },
    Migration {
        version: 7,
        name: "succeeded_not_indexed",
        apply: m0007_succeeded_not_indexed::apply,
    },
];

pub(crate) fn latest_version() -> u32 {
    MIGRATIONS.last().map_or(0, |m| m.version)
}

/// Applies every migration newer than the file's version, in one transaction.
pub(crate) fn apply_pending(db: &Database) -> Result<(), StoreError> {
    apply_up_to(db, latest_version())
}

/// The migrations a file at schema `current` still needs: (version, name), in
/// the order they would run. Empty when it is up to date (or newer).
pub(crate) fn pending_after(current: u32) -> Vec<(u32, &'static str)> {
    MIGRATIONS
        .iter()
        .filter(|m| m.version > current)
        .map(|m| (m.version, m.name))
        .collect()
}

/// Applies the migrations newer than the file's version up to `target`, in one
/// transaction. Only tests stop short of the latest (to build old files).
pub(crate) fn apply_up_to(db: &Database, target: u32) -> Result<(), StoreError> {
    let tx = db.begin_write()?;
    let current = read_version(&tx)?;
    let latest = latest_version();
    if current > latest {
        return Err(StoreError::SchemaTooNew {
            found: current,
            supported: latest,
        });
    }
    if current >= target {
        tx.abort()?;
        return Ok(());
    }
    for migration in MIGRATIONS
        .iter()
        .filter(|m| m.version > current && m.version <= target)
    {
        tracing::info!(
            version = migration.version,
            name = migration.name,
            "applying migration"
        );
        (migration.apply)(&tx)?;
    }
    {
        let mut meta = tx.open_table(META)?;
        meta.insert(SCHEMA_VERSION_KEY, target.to_le_bytes().as_slice())?;
    }
    tx.commit()?;
    Ok(())
}

fn read_version(tx: &WriteTransaction) -> Result<u32, StoreError> {
    let meta = tx.open_table(META)?;
    let value = meta.get(SCHEMA_VERSION_KEY)?;
    Ok(value.map_or(0, |v| decode_version(v.value())))
}

pub(crate) fn current_version_read(tx: &ReadTransaction) -> Result<u32, StoreError> {
    let meta = match tx.open_table(META) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(0),
        Err(e) => return Err(e.into()),
    };
    let value = meta.get(SCHEMA_VERSION_KEY)?;
    Ok(value.map_or(0, |v| decode_version(v.value())))
}

fn decode_version(bytes: &[u8]) -> u32 {
    bytes.try_into().map(u32::from_le_bytes).unwrap_or(u32::MAX)
}
