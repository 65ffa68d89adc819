//! Schema 2: the index tables the worker pool and the bot need — tasks by status
//! and by user, the per-user running slot, Telegram update de-duplication and the
//! answer outbox — filled from existing tasks.

use redb::{ReadableTable, WriteTransaction};

use crate::storage::codec;
use crate::storage::error::StoreError;
use crate::storage::records::{Task, TaskStatus};
use crate::storage::tables::*;

/// Creates the index tables and indexes every existing task.
pub(super) fn apply(tx: &WriteTransaction) -> Result<(), StoreError> {
    let tasks = tx.open_table(TASKS)?;
    let mut by_status = tx.open_table(TASK_STATUS)?;
    let mut by_user = tx.open_table(TASK_USER)?;
    let mut active = tx.open_table(ACTIVE_USERS)?;
    let mut dedup = tx.open_table(UPDATE_DEDUP)?;
    tx.open_table(OUTBOX)?;
    for row in tasks.iter()? {
        let (id, value) = row?;
        let task: Task =
            codec::decode(value.value()).map_err(|e| StoreError::decode("tasks", e))?;
        by_status.insert((task.status.index(), id.value()), ())?;
        by_user.insert((task.bot_id.as_str(), task.user_id, task.id), ())?;
        if task.status == TaskStatus::Running {
            active.insert((task.bot_id.as_str(), task.user_id), task.id)?;
        }
        if let Some(update) = task.update_id {
            dedup.insert((task.bot_id.as_str(), update), task.id)?;
        }
    }
    Ok(())
}
