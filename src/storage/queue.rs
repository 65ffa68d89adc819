//! The order in which tasks run: the `task_queue` table (queued tasks by
//! priority, then age) and `active_users` (the one running task of each user).
//!
//! Invariants: a task is in `task_queue` iff its status is `queued` or
//! `interrupted`; a task is in `active_users` iff it is running, at most one per
//! (bot, user), so a user's prompts run one at a time, in order. The two tables
//! are therefore also the index of the tasks that have not finished
//! ([`super::tasks`]).

use redb::{ReadableTable, ReadableTableMetadata, Table};

use super::records::Task;
use super::tables::{ACTIVE_USERS, TASK_QUEUE, TASKS};
use super::tasks::decode_task;
use super::{Store, StoreResult};

/// Most queue entries a claim inspects before giving up (all blocked or future).
const CLAIM_SCAN_LIMIT: usize = 10_000;

impl Store {
    /// Number of queued tasks (all bots); O(1).
    pub fn queue_depth(&self) -> StoreResult<u64> {
        self.read(|tx| Ok(tx.open_table(TASK_QUEUE)?.len()?))
    }

    /// Queued tasks per bot.
    pub fn queue_depth_by_bot(&self) -> StoreResult<Vec<(String, u64)>> {
        self.read(|tx| {
            let queue = tx.open_table(TASK_QUEUE)?;
            let tasks = tx.open_table(TASKS)?;
            let mut counts: std::collections::BTreeMap<String, u64> = Default::default();
            for row in queue.iter()? {
                let id = row?.0.value().2;
                if let Some(v) = tasks.get(id)? {
                    *counts.entry(decode_task(v.value())?.bot_id).or_default() += 1;
                }
            }
            Ok(counts.into_iter().collect())
        })
    }

    /// Whether a claim at `now_ms` would find nothing, from a read transaction.
    pub(super) fn nothing_to_claim(
        &self,
        now_ms: u64,
        blocked_bots: &[String],
    ) -> StoreResult<bool> {
        self.read(|tx| {
            let queue = tx.open_table(TASK_QUEUE)?;
            let tasks = tx.open_table(TASKS)?;
            let active = tx.open_table(ACTIVE_USERS)?;
            Ok(first_claimable(&queue, &tasks, &active, now_ms, blocked_bots, &[])?.is_none())
        })
    }
}

impl Store {
    /// Whether a new task of (`bot_id`, `user_id`) would be the first claimable
    /// at `now_ms` (skipping `blocked_bots`): nothing claimable is queued and
    /// the user runs nothing. Read only; [`Store::submit_started`] decides again
    /// in its transaction.
    pub fn may_start_now(
        &self,
        bot_id: &str,
        user_id: i64,
        now_ms: u64,
        blocked_bots: &[String],
    ) -> StoreResult<bool> {
        self.read(|tx| {
            let active = tx.open_table(ACTIVE_USERS)?;
            if active.get((bot_id, user_id))?.is_some() {
                return Ok(false);
            }
            let queue = tx.open_table(TASK_QUEUE)?;
            let tasks = tx.open_table(TASKS)?;
            Ok(first_claimable(&queue, &tasks, &active, now_ms, blocked_bots, &[])?.is_none())
        })
    }
}

/// The `task_queue` table as a write job holds it (opened once per job).
pub(super) type QueueRows<'txn> = Table<'txn, (u8, u64, u64), ()>;
/// The `active_users` table as a write job holds it.
pub(super) type ActiveUsers<'txn> = Table<'txn, (&'static str, i64), u64>;

/// Puts a task in the queue at its place (its priority and `enqueued_ms`).
pub(super) fn enqueue(queue: &mut QueueRows<'_>, task: &Task) -> StoreResult<()> {
    queue.insert(task.queue_key(), ())?;
    Ok(())
}

/// Takes a task out of the queue (nothing if it is not there).
pub(super) fn dequeue(queue: &mut QueueRows<'_>, task: &Task) -> StoreResult<()> {
    queue.remove(task.queue_key())?;
    Ok(())
}

/// Marks a task as its user's running one.
pub(super) fn occupy_user(active: &mut ActiveUsers<'_>, task: &Task) -> StoreResult<()> {
    active.insert((task.bot_id.as_str(), task.user_id), task.id)?;
    Ok(())
}

/// Frees a task's user, if this task is the one that holds it.
pub(super) fn release_user(active: &mut ActiveUsers<'_>, task: &Task) -> StoreResult<()> {
    let holder = active
        .get((task.bot_id.as_str(), task.user_id))?
        .map(|v| v.value());
    if holder == Some(task.id) {
        active.remove((task.bot_id.as_str(), task.user_id))?;
    }
    Ok(())
}

/// The task a claim at `now_ms` would take, from any view of the tables:
/// the first queued task by priority and age whose time has come, whose bot is
/// not blocked and whose user has no running task (in the tables, or in
/// `busy`: runs being started that the tables do not show yet).
pub(super) fn first_claimable(
    queue: &impl ReadableTable<(u8, u64, u64), ()>,
    tasks: &impl ReadableTable<u64, &'static [u8]>,
    active: &impl ReadableTable<(&'static str, i64), u64>,
    now_ms: u64,
    blocked_bots: &[String],
    busy: &[(String, i64)],
) -> StoreResult<Option<Task>> {
    let mut scanned = 0usize;
    let mut priority_start: u8 = 0;
    'priorities: loop {
        let range = queue.range((priority_start, 0, 0)..=(u8::MAX, u64::MAX, u64::MAX))?;
        for row in range {
            let (priority, enqueued_ms, id) = row?.0.value();
            scanned += 1;
            if scanned > CLAIM_SCAN_LIMIT {
                return Ok(None);
            }
            if enqueued_ms > now_ms {
                // The rest of this priority lies in the future too: jump to the next.
                match priority.checked_add(1) {
                    Some(next) => {
                        priority_start = next;
                        continue 'priorities;
                    }
                    None => return Ok(None),
                }
            }
            let Some(value) = tasks.get(id)? else {
                continue;
            };
            let task = decode_task(value.value())?;
            if blocked_bots.contains(&task.bot_id)
                || busy
                    .iter()
                    .any(|(bot, user)| *bot == task.bot_id && *user == task.user_id)
            {
                continue;
            }
            if active.get((task.bot_id.as_str(), task.user_id))?.is_some() {
                continue;
            }
            return Ok(Some(task));
        }
        return Ok(None);
    }
}
