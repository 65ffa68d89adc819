//! Schema 4: task operations are journaled (`<db>.journal`, see the storage
//! journal) and task ids follow the newest task instead of a counter in `meta`.
//!
//! The version bump is the point: a build of schema 3 would ignore the journal
//! (losing operations acknowledged before a crash) and hand out ids from the stale
//! counter (reusing ids), so it must refuse this file. The counter is deleted so
//! nothing reads a stale value.

use redb::WriteTransaction;

use crate::storage::error::StoreError;
use crate::storage::tables::META;

/// The retired counter (schema 1–3).
const NEXT_TASK_ID: &str = "next_task_id";

/// Deletes the retired task-id counter.
pub(super) fn apply(tx: &WriteTransaction) -> Result<(), StoreError> {
    tx.open_table(META)?.remove(NEXT_TASK_ID)?;
    Ok(())
}
