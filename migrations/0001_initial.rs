//! Schema 1: every table of the first release (see docs/ARCHITECTURE.md).

use redb::WriteTransaction;

use crate::storage::error::StoreError;
use crate::storage::tables::*;

/// Creates the tables (opening a table in a write transaction creates it).
pub(super) fn apply(tx: &WriteTransaction) -> Result<(), StoreError> {
    tx.open_table(META)?;
    tx.open_table(SESSIONS)?;
    tx.open_table(MESSAGES)?;
    tx.open_table(TASKS)?;
    tx.open_table(TASK_QUEUE)?;
    tx.open_table(COSTS)?;
    tx.open_table(RESTART_STATE)?;
    tx.open_table(SERIES)?;
    tx.open_table(SERIES_ROLLUP)?;
    tx.open_table(SERIES_NAMES)?;
    tx.open_table(ALERTS)?;
    tx.open_table(EVENTS)?;
    tx.open_table(BREAKERS)?;
    Ok(())
}
