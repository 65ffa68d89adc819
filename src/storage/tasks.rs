//! Task records and their indexes: the `tasks` table, `task_status` and
//! `task_user`, and the reads over them.
//!
//! Invariants: a task id is one above the newest task's and never reused (tasks
//! are never deleted); `task_user` indexes every task under its (bot, user) and
//! `task_status` every task that *ended without succeeding* (failed,
//! cancelled) under its status, written in the transaction that finishes it.
//! The other tasks need no index row of their own: a queued or interrupted task
//! is in `task_queue`, a running one is its user's row in `active_users`
//! ([`super::queue`]), and a succeeded one is any other task — most tasks, so
//! a newest-first scan of `tasks` finds them as fast as an index would, and
//! their number is the table's length minus the rest. A task's claim moves no
//! index row, and a successful finish (the common path) adds none. The
//! life-cycle that moves tasks between statuses is in [`super::lifecycle`].

use redb::{ReadTransaction, ReadableTable, ReadableTableMetadata, Table, WriteTransaction};

use super::batch::Tables;
use super::codec;
use super::error::StoreError;
use super::records::{Task, TaskStatus};
use super::tables::{ACTIVE_USERS, TASK_QUEUE, TASK_STATUS, TASK_USER, TASKS};
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
                (_, _, Some(status)) if has_index_row(status) => {
                    let index = tx.open_table(TASK_STATUS)?;
                    let s = status.index();
                    for row in index.range((s, 0)..=(s, u64::MAX))?.rev() {
                        if !take(row?.0.value().1)? {
                            break;
                        }
                    }
                }
                (_, _, Some(status)) if !status.is_terminal() => {
                    for id in live_ids(tx, status)?.into_iter().rev() {
                        if !take(id)? {
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
            let tasks = tx.open_table(TASKS)?;
            let ids = if has_index_row(status) {
                let index = tx.open_table(TASK_STATUS)?;
                let s = status.index();
                let mut ids = Vec::new();
                for row in index.range((s, 0)..=(s, u64::MAX))? {
                    ids.push(row?.0.value().1);
                }
                ids
            } else if status.is_terminal() {
                let mut ids = Vec::new();
                for row in tasks.iter()? {
                    ids.push(row?.0.value());
                }
                ids
            } else {
                live_ids(tx, status)?
            };
            let mut out = Vec::new();
            for id in ids {
                if let Some(v) = tasks.get(id)? {
                    let task = decode_task(v.value())?;
                    if task.status == status {
                        out.push(task);
                    }
                }
            }
            Ok(out)
        })
    }

    /// Number of tasks in each status.
    pub fn task_counts(&self) -> StoreResult<Vec<(TaskStatus, u64)>> {
        self.read(|tx| {
            let index = tx.open_table(TASK_STATUS)?;
            let tasks = tx.open_table(TASKS)?;
            // The queue holds queued and interrupted tasks: told apart by their records.
            let mut queued = 0;
            let mut interrupted = 0;
            for row in tx.open_table(TASK_QUEUE)?.iter()? {
                if let Some(v) = tasks.get(row?.0.value().2)? {
                    match decode_task(v.value())?.status {
                        TaskStatus::Queued => queued += 1,
                        TaskStatus::Interrupted => interrupted += 1,
                        _ => {}
                    }
                }
            }
            let mut out = Vec::new();
            for status in TaskStatus::ALL {
                let n = match status {
                    TaskStatus::Queued => queued,
                    TaskStatus::Interrupted => interrupted,
                    TaskStatus::Running => tx.open_table(ACTIVE_USERS)?.len()?,
                    // Every task not counted otherwise: filled in below.
                    TaskStatus::Succeeded => 0,
                    _ => {
                        let s = status.index();
                        index.range((s, 0)..=(s, u64::MAX))?.count() as u64
                    }
                };
                out.push((status, n));
            }
            let others: u64 = out.iter().map(|(_, n)| n).sum();
            let succeeded = tasks.len()?.saturating_sub(others);
            for (status, n) in &mut out {
                if *status == TaskStatus::Succeeded {
                    *n = succeeded;
                }
            }
            Ok(out)
        })
    }
}

/// The ids of the tasks that may be in a status no index row covers (queued,
/// interrupted: the queue; running: the users' running slots), oldest first.
/// The caller checks each task's status.
fn live_ids(tx: &ReadTransaction, status: TaskStatus) -> StoreResult<Vec<u64>> {
    let mut ids = Vec::new();
    if status == TaskStatus::Running {
        for row in tx.open_table(ACTIVE_USERS)?.iter()? {
            ids.push(row?.1.value());
        }
    } else {
        for row in tx.open_table(TASK_QUEUE)?.iter()? {
            ids.push(row?.0.value().2);
        }
    }
    ids.sort_unstable();
    ids.dedup();
    Ok(ids)
}

pub(super) fn decode_task(bytes: &[u8]) -> StoreResult<Task> {
    codec::decode(bytes).map_err(|e| StoreError::decode("tasks", e))
}

/// The `tasks` table as a write job holds it (opened once per job).
pub(super) type TaskRows<'txn> = Table<'txn, u64, &'static [u8]>;

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

/// Changes a task's record in place; for fields no index covers.
pub(super) fn update_task(
    t: &Tables<'_>,
    task_id: u64,
    change: impl FnOnce(&mut Task) -> StoreResult<()>,
) -> StoreResult<Task> {
    let mut tasks = t.tasks()?;
    let mut task = read_task(&*tasks, task_id)?;
    change(&mut task)?;
    write_task(&mut tasks, &task)?;
    Ok(task)
}

/// Writes a task that is not stored yet, with its user index row and, if it is
/// finished already (an imported one), its status row.
pub(super) fn insert_task_indexed(t: &Tables<'_>, task: &Task) -> StoreResult<()> {
    write_task(&mut *t.tasks()?, task)?;
    if has_index_row(task.status) {
        t.status()?.insert((task.status.index(), task.id), ())?;
    }
    t.users()?
        .insert((task.bot_id.as_str(), task.user_id, task.id), ())?;
    Ok(())
}

/// Whether a task in `status` has a `task_status` row: one that ended without
/// succeeding (see the module comment).
pub(super) fn has_index_row(status: TaskStatus) -> bool {
    status.is_terminal() && status != TaskStatus::Succeeded
}

/// Moves a task's `task_status` row from `old` to `new`; only the statuses of
/// [`has_index_row`] have one.
/// The index is opened only when a row moves.
pub(super) fn reindex_status(
    t: &Tables<'_>,
    id: u64,
    old: TaskStatus,
    new: TaskStatus,
) -> StoreResult<()> {
    if old == new {
        return Ok(());
    }
    if has_index_row(old) {
        t.status()?.remove((old.index(), id))?;
    }
    if has_index_row(new) {
        t.status()?.insert((new.index(), id), ())?;
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
