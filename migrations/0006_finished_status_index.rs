//! Schema 6: `task_status` indexes finished tasks only (succeeded, failed,
//! cancelled). A queued or interrupted task is found through `task_queue` and a
//! running one through `active_users`, so claiming a task moves no index row
//! and finishing it adds one; the rows of tasks still alive are deleted here.
//!
//! The version bump makes an older build refuse the file: it would look for
//! queued and running tasks in `task_status` and find none.

use redb::WriteTransaction;

use crate::storage::error::StoreError;
use crate::storage::records::TaskStatus;
use crate::storage::tables::TASK_STATUS;

/// Deletes the `task_status` rows of tasks that have not finished.
pub(super) fn apply(tx: &WriteTransaction) -> Result<(), StoreError> {
    let mut index = tx.open_table(TASK_STATUS)?;
    for status in TaskStatus::ALL.into_iter().filter(|s| !s.is_terminal()) {
        let s = status.index();
        index.retain_in((s, 0)..=(s, u64::MAX), |_, _| false)?;
    }
    Ok(())
}
