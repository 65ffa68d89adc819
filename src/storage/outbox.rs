//! Answers on their way to the chat: the `outbox` table and the delivery
//! fields of a task (its progress message, when sending its answer began).
//!
//! Invariants: a finished task whose answer is to be delivered stays in the
//! outbox until it is marked delivered; the start of each delivery attempt is
//! durable before the answer is sent, so after a crash an answer that may have
//! reached the user is sent again only with a note that says so.

use redb::ReadableTable;

use super::batch::Tables;
use super::records::Task;
use super::tables::{OUTBOX, TASKS};
use super::task_ops::TaskOp;
use super::tasks::{decode_task, update_task};
use super::writer::Wanted;
use super::{Pending, Store, StoreResult};

/// Most answers remembered as "delivery begun by this process's finish".
const MAX_FRESH_DELIVERIES: usize = 100_000;

/// A set of task ids shared with the writer thread: the answers whose delivery
/// this process's `finish_task` recorded as begun (see
/// [`Store::begin_delivery`]), which the writer marks inside the transaction
/// that finishes a task, or the delivered marks not committed yet (see
/// [`Store::mark_delivered`]). Never holds a `Store`, so a job can never keep
/// the store alive on its own writer thread.
#[derive(Debug, Clone, Default)]
pub(super) struct FreshDeliveries(std::sync::Arc<std::sync::Mutex<std::collections::HashSet<u64>>>);

impl FreshDeliveries {
    /// A std Mutex: held for one set operation, never across an await.
    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashSet<u64>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn insert(&self, task_id: u64) {
        let mut set = self.lock();
        // Bounded: answers that are never delivered (a bot removed from the
        // configuration) must not grow it forever; a forgotten mark only costs a
        // delivery its own durable step and a repeat note.
        if set.len() >= MAX_FRESH_DELIVERIES {
            set.clear();
        }
        set.insert(task_id);
    }

    /// Adds without the bound of [`Self::insert`]: for a set whose entries
    /// leave on their own (see [`Store::mark_delivered`]), which emptying
    /// would make wrong.
    pub(super) fn hold(&self, task_id: u64) {
        self.lock().insert(task_id);
    }

    pub(super) fn remove(&self, task_id: u64) -> bool {
        self.lock().remove(&task_id)
    }

    fn snapshot(&self) -> std::collections::HashSet<u64> {
        self.lock().clone()
    }
}

impl Store {
    /// Remembers the progress message shown for a task. Relaxed: lost in a crash,
    /// the message is merely not cleaned up after the answer (delivery also
    /// finds the id in memory). Deferred: parked without waking the writer, it
    /// is committed with the next write sent after it or just before the
    /// writer's idle checkpoint (see [`super::writer`]).
    pub fn set_progress_message(&self, task_id: u64, message_id: Option<i32>) -> Pending<()> {
        self.write_tables(
            Wanted::Deferred,
            move |t| progress_tx(t, task_id, message_id),
            |outcome| outcome,
        )
    }

    /// Records that sending a task's answer begins; returns when an earlier attempt
    /// began (and was never marked failed or delivered): that one may have reached
    /// the user before a crash.
    pub fn begin_delivery(&self, task_id: u64, now_ms: u64) -> Pending<Option<u64>> {
        if self.inner.delivery_begun_by_finish.remove(task_id)
            && matches!(self.get_task(task_id), Ok(Some(t)) if t.delivery_started_ms.is_some())
        {
            // This process's finish_task recorded the start: a first attempt.
            return Pending::ready(None);
        }
        let op = TaskOp::BeginDelivery { task_id, now_ms };
        self.write_op(&op, move |t| begin_delivery_tx(t, task_id, now_ms))
    }

    /// Records that a delivery attempt failed before reaching the user.
    pub fn delivery_failed(&self, task_id: u64) -> Pending<()> {
        self.inner.delivery_begun_by_finish.remove(task_id);
        let op = TaskOp::DeliveryFailed { task_id };
        self.write_op(&op, move |t| delivery_failed_tx(t, task_id))
    }

    /// Removes a delivered answer from the outbox. Relaxed: lost in a crash (it
    /// reaches the disk with the next durable commit, a few seconds later), the
    /// answer is sent again with the note that says so, since
    /// [`Self::begin_delivery`] is durable. Deferred: parked without waking the
    /// writer, it is committed with the next write or just before the writer's
    /// idle checkpoint (see [`super::writer`]).
    /// Meanwhile [`Self::undelivered`] no longer lists the task, so a caller
    /// need not wait for the mark ([`Pending::detach`]); if its commit fails,
    /// the task is listed again.
    pub fn mark_delivered(&self, task_id: u64) -> Pending<()> {
        self.inner.delivery_begun_by_finish.remove(task_id);
        let unsaved = self.inner.delivered_unsaved.clone();
        unsaved.hold(task_id);
        self.write_tables(
            Wanted::Deferred,
            move |t| delivered_tx(t, task_id),
            move |outcome| {
                unsaved.remove(task_id);
                outcome
            },
        )
    }

    /// Finished tasks whose answer has not been delivered yet, oldest first.
    pub fn undelivered(&self, bot_id: &str) -> StoreResult<Vec<Task>> {
        // Taken before the read transaction begins: a mark leaves the set only
        // once its commit is visible, so a mark missing from this copy is in
        // the transaction's view (and the task gone from the outbox there).
        // Looked at after the transaction began, a mark that left the set in
        // between would be in neither, and its answer would be sent twice.
        let unsaved = self.inner.delivered_unsaved.snapshot();
        self.read(|tx| {
            let outbox = tx.open_table(OUTBOX)?;
            let tasks = tx.open_table(TASKS)?;
            let mut out = Vec::new();
            for row in outbox.iter()? {
                let id = row?.0.value();
                if unsaved.contains(&id) {
                    continue;
                }
                if let Some(v) = tasks.get(id)? {
                    let task = decode_task(v.value())?;
                    if task.bot_id == bot_id {
                        out.push(task);
                    }
                }
            }
            Ok(out)
        })
    }
}

/// Queues a finished task's answer for delivery.
pub(super) fn enqueue_answer(t: &Tables<'_>, task_id: u64) -> StoreResult<()> {
    t.outbox()?.insert(task_id, ())?;
    Ok(())
}

pub(super) fn progress_tx(
    t: &Tables<'_>,
    task_id: u64,
    message_id: Option<i32>,
) -> StoreResult<()> {
    update_task(t, task_id, |task| {
        task.progress_message_id = message_id;
        Ok(())
    })
    .map(drop)
}

pub(super) fn begin_delivery_tx(
    t: &Tables<'_>,
    task_id: u64,
    now_ms: u64,
) -> StoreResult<Option<u64>> {
    let mut previous = None;
    update_task(t, task_id, |task| {
        previous = task.delivery_started_ms;
        task.delivery_started_ms = Some(now_ms);
        Ok(())
    })?;
    Ok(previous)
}

pub(super) fn delivery_failed_tx(t: &Tables<'_>, task_id: u64) -> StoreResult<()> {
    update_task(t, task_id, |task| {
        task.delivery_started_ms = None;
        Ok(())
    })
    .map(drop)
}

pub(super) fn delivered_tx(t: &Tables<'_>, task_id: u64) -> StoreResult<()> {
    t.outbox()?.remove(task_id)?;
    Ok(())
}
