//! Schema 3: minute rollups are no longer stored. Raw samples are kept exactly as
//! long as minute rollups were (`monitor.raw_retention_days`), so minute answers
//! are computed from the raw chunks; the rows written before are deleted here.
//! Hour rollups (series ids with the high bit set) stay.

use redb::WriteTransaction;

use crate::storage::error::StoreError;
use crate::storage::tables::SERIES_ROLLUP;

/// Series ids of hour rollups have this bit set; minute rollups' ids do not.
const HOUR_FLAG: u32 = 0x8000_0000;

/// Deletes every minute rollup row.
pub(super) fn apply(tx: &WriteTransaction) -> Result<(), StoreError> {
    let mut rollups = tx.open_table(SERIES_ROLLUP)?;
    let mut removed = 0u64;
    rollups.retain_in((0, 0)..(HOUR_FLAG, 0), |_, _| {
        removed += 1;
        false
    })?;
    tracing::info!(rows = removed, "minute rollups deleted");
    Ok(())
}
