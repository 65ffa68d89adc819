//! Schema 7: `task_status` indexes the tasks that ended without succeeding
//! (failed, cancelled). Succeeded tasks are most of them: a newest-first scan of
//! `tasks` lists them as fast as the index did, and their number is the table's
//! length minus every other status, so a successful finish writes no index row.
//! The succeeded rows are deleted here.
//!
//! The version bump makes an older build refuse the file: it would list and
//! count succeeded tasks from `task_status` and find none.

use redb::WriteTransaction;

use crate::storage::error::StoreError;
use crate::storage::records::TaskStatus;
use crate::storage::tables::TASK_STATUS;

/// Deletes the `task_status` rows of succeeded tasks.
pub(super) fn apply(tx: &WriteTransaction) -> Result<(), StoreError> {
    let mut index = tx.open_table(TASK_STATUS)?;
    let s = TaskStatus::Succeeded.index();
    index.retain_in((s, 0)..=(s, u64::MAX), |_, _| false)?;
    Ok(())
}
