//! Task records and their indexes: the `tasks` table, `task_status` and
//! `task_user`, and the reads over them.
//!
//! Invariants: a task id is one above the newest task's and never reused (tasks
//! are never deleted); `task_status` and `task_user` index every task under its
//! current status and its (bot, user), changed in the transaction that changes
//! the task. The life-cycle that moves tasks between statuses is in
//! [`super::lifecycle`].

use redb::{ReadableTable, Table, WriteTransaction};

use super::codec;
use super::error::StoreError;
use super::records::{Task, TaskStatus};
use super::tables::{TASK_STATUS, TASK_USER, TASKS};
use super::{Store, StoreResult};

/// Which tasks to list.
#[derive(Debug, Clone, Default)]
pub struct TaskFilter {
    /// Only this status.
    pub status: Option<TaskStatus>,
    /// Only this bot.
    pub bot_id: Option<String>,
    /// Only this user (read from the user index when `bot_id` is set too).
    pub user_id: Option<i64>,
    /// Newest first, at most this many (default 50).
    pub limit: Option<usize>,
}

impl Store {
    /// A task by id.
    pub fn get_task(&self, task_id: u64) -> StoreResult<Option<Task>> {
        self.read(|tx| {
            let tasks = tx.open_table(TASKS)?;
            tasks
                .get(task_id)?
                .map(|v| decode_task(v.value()))
                .transpose()
        })
    }

    /// Tasks matching `filter`, newest first.
    pub fn list_tasks(&self, filter: &TaskFilter) -> StoreResult<Vec<Task>> {
        let limit = filter.limit.unwrap_or(50);
        self.read(|tx| {
            let tasks = tx.open_table(TASKS)?;
            let mut out = Vec::new();
            let mut take = |id: u64| -> StoreResult<bool> {
                if let Some(v) = tasks.get(id)? {
                    let task = decode_task(v.value())?;
                    if filter.status.is_none_or(|s| s == task.status)
                        && filter.bot_id.as_ref().is_none_or(|b| *b == task.bot_id)
                        && filter.user_id.is_none_or(|u| u == task.user_id)
                    {
                        out.push(task);
                    }
                }
                Ok(out.len() < limit)
            };
            match (&filter.bot_id, filter.user_id, filter.status) {
                (Some(bot), Some(user), _) => {
                    let index = tx.open_table(TASK_USER)?;
                    let range =
                        index.range((bot.as_str(), user, 0)..=(bot.as_str(), user, u64::MAX))?;
                    for row in range.rev() {
                        if !take(row?.0.value().2)? {
                            break;
                        }
                    }
                }
                (_, _, Some(status)) => {
                    let index = tx.open_table(TASK_STATUS)?;
                    let s = status.index();
                    for row in index.range((s, 0)..=(s, u64::MAX))?.rev() {
                        if !take(row?.0.value().1)? {
                            break;
                        }
                    }
                }
                _ => {
                    for row in tasks.iter()?.rev() {
                        if !take(row?.0.value())? {
                            break;
                        }
                    }
                }
            }
            Ok(out)
        })
    }

    /// Every task in a status (all of them, oldest first): for recovery.
    pub fn tasks_in_status(&self, status: TaskStatus) -> StoreResult<Vec<Task>> {
        self.read(|tx| {
            let index = tx.open_table(TASK_STATUS)?;
            let tasks = tx.open_table(TASKS)?;
            let s = status.index();
            let mut out = Vec::new();
            for row in index.range((s, 0)..=(s, u64::MAX))? {
                let id = row?.0.value().1;
                if let Some(v) = tasks.get(id)? {
                    out.push(decode_task(v.value())?);
                }
            }
            Ok(out)
        })
    }

    /// Number of tasks in each status.
    pub fn task_counts(&self) -> StoreResult<Vec<(TaskStatus, u64)>> {
        self.read(|tx| {
            let index = tx.open_table(TASK_STATUS)?;
            let mut out = Vec::new();
            for status in TaskStatus::ALL {
                let s = status.index();
                let n = index.range((s, 0)..=(s, u64::MAX))?.count() as u64;
                out.push((status, n));
            }
            Ok(out)
        })
    }
}

pub(super) fn decode_task(bytes: &[u8]) -> StoreResult<Task> {
    codec::decode(bytes).map_err(|e| StoreError::decode("tasks", e))
}

/// The `tasks` table as a write job holds it (opened once per job).
pub(super) type TaskRows<'txn> = Table<'txn, u64, &'static [u8]>;
/// The `task_status` index as a write job holds it.
pub(super) type StatusIndex<'txn> = Table<'txn, (u8, u64), ()>;

/// A stored task; not found is an error.
pub(super) fn read_task(
    tasks: &impl ReadableTable<u64, &'static [u8]>,
    task_id: u64,
) -> StoreResult<Task> {
    match tasks.get(task_id)? {
        Some(v) => decode_task(v.value()),
        None => Err(StoreError::not_found(format!("task {task_id}"))),
    }
}

/// Stores a task's record (its indexes are the caller's).
pub(super) fn write_task(tasks: &mut TaskRows<'_>, task: &Task) -> StoreResult<()> {
    tasks.insert(task.id, codec::encode(task).as_slice())?;
    Ok(())
}

pub(super) fn load_task(tx: &WriteTransaction, task_id: u64) -> StoreResult<Task> {
    read_task(&tx.open_table(TASKS)?, task_id)
}

pub(super) fn store_task(tx: &WriteTransaction, task: &Task) -> StoreResult<()> {
    write_task(&mut tx.open_table(TASKS)?, task)
}

/// Changes a task's record in place; for fields no index covers.
pub(super) fn update_task(
    tx: &WriteTransaction,
    task_id: u64,
    change: impl FnOnce(&mut Task) -> StoreResult<()>,
) -> StoreResult<Task> {
    let mut tasks = tx.open_table(TASKS)?;
    let mut task = read_task(&tasks, task_id)?;
    change(&mut task)?;
    write_task(&mut tasks, &task)?;
    Ok(task)
}

/// Writes a task that is not stored yet, with its status and user index rows.
pub(super) fn insert_task_indexed(
    tx: &WriteTransaction,
    tasks: &mut TaskRows<'_>,
    status: &mut StatusIndex<'_>,
    task: &Task,
) -> StoreResult<()> {
    write_task(tasks, task)?;
    status.insert((task.status.index(), task.id), ())?;
    tx.open_table(TASK_USER)?
        .insert((task.bot_id.as_str(), task.user_id, task.id), ())?;
    Ok(())
}

pub(super) fn reindex_status(
    index: &mut StatusIndex<'_>,
    id: u64,
    old: TaskStatus,
    new: TaskStatus,
) -> StoreResult<()> {
    if old != new {
        index.remove((old.index(), id))?;
        index.insert((new.index(), id), ())?;
    }
    Ok(())
}

/// The next task id: one above the newest task. Tasks are never deleted, so
/// ids are never reused. (Up to schema 3 a counter in `meta` was written with
/// every submission: a B-tree update per submission, retired by migration 4.)
pub(super) fn next_task_id(tx: &WriteTransaction) -> StoreResult<u64> {
    next_id(&tx.open_table(TASKS)?)
}

/// [`next_task_id`] from the `tasks` table a job holds.
pub(super) fn next_id(tasks: &impl ReadableTable<u64, &'static [u8]>) -> StoreResult<u64> {
    Ok(tasks.last()?.map_or(1, |(k, _)| k.value() + 1))
}
