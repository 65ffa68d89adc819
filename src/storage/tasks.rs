//! Tasks and their queue: submission, claiming, life-cycle, costs and the outbox.
//!
//! Invariants kept by every operation here, each in one transaction:
//! - a task is in `task_queue` iff its status is `queued` or `interrupted`;
//! - `task_status` and `task_user` index every task under its current status/user;
//! - `active_users` holds the one running task of a (bot, user): a user's prompts
//!   run one at a time, in order;
//! - a finished task's cost is added to its bot's day in the same transaction that
//!   finishes it, and its answer enters the `outbox` until delivered;
//! - an update id already turned into a task is never turned into another.

use std::path::Path;

use redb::{Database, Durability, ReadableTable, ReadableTableMetadata, Table, WriteTransaction};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::codec;
use super::error::StoreError;
use super::events::insert_event;
use super::journal::{Journal, JournalRecord};
use super::kv::{journal_seq, set_journal_seq};
use super::records::*;
use super::sessions::append_message_tx;
use super::tables::*;
use super::writer::JournalState;
use super::{Pending, Store, StoreResult};

/// Most queue entries a claim inspects before giving up (all blocked or future).
const CLAIM_SCAN_LIMIT: usize = 10_000;
/// Longest stored prompt, bytes. Telegram caps a message at 4,096 characters; the
/// API may send more, but not without bound.
pub const MAX_PROMPT_BYTES: usize = 256 * 1024;
/// Longest stored result, bytes (the full output stays in the run files).
pub const MAX_RESULT_BYTES: usize = 64 * 1024;
/// Most answers remembered as "delivery begun by this process's finish".
const MAX_FRESH_DELIVERIES: usize = 100_000;

/// The answers whose delivery this process's `finish_task` recorded as begun
/// (see [`Store::begin_delivery`]). Shared with the writer thread, which marks a
/// task inside the transaction that finishes it; never holds a `Store`, so a
/// job can never keep the store alive on its own writer thread.
#[derive(Debug, Clone, Default)]
pub(super) struct FreshDeliveries(std::sync::Arc<std::sync::Mutex<std::collections::HashSet<u64>>>);

impl FreshDeliveries {
    /// A std Mutex: held for one set operation, never across an await.
    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashSet<u64>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn insert(&self, task_id: u64) {
        let mut set = self.lock();
        // Bounded: answers that are never delivered (a bot removed from the
        // configuration) must not grow it forever; a forgotten mark only costs a
        // delivery its own durable step and a repeat note.
        if set.len() >= MAX_FRESH_DELIVERIES {
            set.clear();
        }
        set.insert(task_id);
    }

    fn remove(&self, task_id: u64) -> bool {
        self.lock().remove(&task_id)
    }
}

/// The outcome of a submission.
#[derive(Debug, Clone)]
pub struct TaskSubmitted {
    /// The task (the existing one for a duplicate update).
    pub task: Task,
    /// Whether this update had been submitted before.
    pub duplicate: bool,
}

/// A task handed to a worker.
#[derive(Debug, Clone)]
pub struct Claimed {
    /// The task, now `running`.
    pub task: Task,
    /// The user's agent session to resume, if any.
    pub session_id: Option<String>,
}

/// How a run ended, as recorded by [`Store::finish_task`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TaskFinish {
    /// `succeeded`, `failed` or `cancelled`.
    pub status: Option<TaskStatus>,
    /// The answer (bounded here).
    pub result: Option<String>,
    /// Failure class.
    pub error_class: Option<FailureClass>,
    /// Failure message.
    pub error: Option<String>,
    /// Exit code.
    pub exit_code: Option<i32>,
    /// Cost of this run.
    pub cost_usd: f64,
    /// Input tokens of this run.
    pub input_tokens: u64,
    /// Output tokens of this run.
    pub output_tokens: u64,
    /// The agent session the run used or created.
    pub session_id: Option<String>,
    /// Whether the answer should be delivered to the chat.
    pub deliver: bool,
}

/// The chat of a task that came from no chat (the HTTP API or `ask` without
/// one): its answer is kept with the task and never sent to Telegram, which
/// has no chat 0.
pub const NO_CHAT: i64 = 0;

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
    /// Stores a new queued task and its queue entry in one transaction, durable
    /// (through the journal) before this is answered. Only when this returns may
    /// the user be told the prompt is queued.
    pub fn submit_task(&self, new: NewTask, now_ms: u64) -> Pending<TaskSubmitted> {
        if new.prompt.len() > MAX_PROMPT_BYTES {
            return Pending::failed(StoreError::Invalid(format!(
                "prompt is {} bytes; at most {MAX_PROMPT_BYTES} are accepted",
                new.prompt.len()
            )));
        }
        let op = TaskOp::Submit {
            new: new.clone(),
            now_ms,
        };
        self.write_op(&op, move |tx| submit_tx(tx, &new, now_ms))
    }

    /// [`Self::submit_task`] for a chat prompt, which also enters the user's
    /// conversation history, in the same transaction and journal record (a
    /// re-delivered update adds neither twice).
    pub fn submit_prompt(&self, new: NewTask, now_ms: u64) -> Pending<TaskSubmitted> {
        if new.prompt.len() > MAX_PROMPT_BYTES {
            return Pending::failed(StoreError::Invalid(format!(
                "prompt is {} bytes; at most {MAX_PROMPT_BYTES} are accepted",
                new.prompt.len()
            )));
        }
        let history = self.options().history_messages;
        let op = TaskOp::SubmitPrompt {
            new: new.clone(),
            now_ms,
            history,
        };
        self.write_op(&op, move |tx| submit_prompt_tx(tx, &new, now_ms, history))
    }

    /// Queues a journaled write: `f` applies `op` and returns the caller's answer;
    /// [`TaskOp::redo`] applies the same op again at open after a crash.
    pub(super) fn write_op<T, F>(&self, op: &TaskOp, f: F) -> Pending<T>
    where
        T: Send + 'static,
        F: FnMut(&WriteTransaction) -> StoreResult<T> + Send + 'static,
    {
        let mut record = vec![JOURNAL_FORMAT];
        record.extend(codec::encode(op));
        self.write_journaled(record, f)
    }

    /// Claims the next runnable queued task (priority, then age), skipping tasks of
    /// `blocked_bots`, of users who already have a running task, and retries whose
    /// backoff has not elapsed. The task becomes `running` in the same transaction.
    ///
    /// The claim is relaxed (not fsynced): every other claimer sees it at once, and
    /// what makes it durable is [`Self::record_task_process`], whose journal record
    /// redoes the claim if a crash lost it. A claim lost before that leaves the
    /// task queued, which is what recovery does with a run that has no recorded
    /// process anyway.
    pub fn claim_next_task(
        &self,
        now_ms: u64,
        blocked_bots: Vec<String>,
    ) -> Pending<Option<Claimed>> {
        // Most claims that find nothing are answered from a read transaction,
        // without a write (and its fsync). A task that becomes claimable after this
        // look wakes the dispatcher again, which claims it then.
        let nothing_to_claim = self.read(|tx| {
            let queue = tx.open_table(TASK_QUEUE)?;
            let tasks = tx.open_table(TASKS)?;
            let active = tx.open_table(ACTIVE_USERS)?;
            Ok(first_claimable(&queue, &tasks, &active, now_ms, &blocked_bots)?.is_none())
        });
        if matches!(nothing_to_claim, Ok(true)) {
            return Pending::ready(None);
        }
        self.write_relaxed(move |tx| claim_tx(tx, now_ms, &blocked_bots))
    }

    /// Records the agent process of a claimed task (before waiting for it),
    /// durable through the journal together with the claim: `claimed_ms` is the
    /// task's `started_ms`, so a redo after a crash claims it as it was claimed.
    pub fn record_task_process(
        &self,
        task_id: u64,
        claimed_ms: u64,
        pid: u32,
        start_time: u64,
    ) -> Pending<()> {
        let op = TaskOp::Started {
            task_id,
            claimed_ms,
            pid,
            start_time,
        };
        self.write_op(&op, move |tx| {
            started_tx(tx, task_id, claimed_ms, pid, start_time)
        })
    }

    /// Ends a running (or queued, for a refusal) task: status, result, cost added to
    /// the bot's day, session updated, answer queued for delivery — one transaction.
    ///
    /// An answer queued for delivery is also recorded as being delivered from now
    /// on (the outbox sends it at once), which saves its delivery a durable step;
    /// if a crash comes before the answer is sent, the next process sends it with
    /// the note that it may be a repeat.
    pub fn finish_task(&self, task_id: u64, finish: TaskFinish, now_ms: u64) -> Pending<Task> {
        let history = self.options().history_messages;
        let deliver = finish.deliver;
        let op = TaskOp::Finish {
            task_id,
            finish: finish.clone(),
            now_ms,
            history,
        };
        let mut record = vec![JOURNAL_FORMAT];
        record.extend(codec::encode(&op));
        let fresh = self.inner.delivery_begun_by_finish.clone();
        let forget = fresh.clone();
        self.write_journaled_then(
            record,
            move |tx| {
                let task = finish_tx(tx, task_id, &finish, now_ms, history)?;
                // Marked before the commit makes the answer visible to the
                // outbox, so the outbox never finds it unmarked.
                if deliver && task.chat_id != NO_CHAT {
                    fresh.insert(task_id);
                }
                Ok(task)
            },
            move |outcome| {
                if outcome.is_err() {
                    forget.remove(task_id);
                }
                outcome
            },
        )
    }

    /// Puts a task back in the queue after a failed or interrupted run, to start no
    /// earlier than `not_before_ms` (its queue position: a time in the past keeps an
    /// old place in line, a future one is a retry backoff). `refund_attempt` gives back the attempt its claim
    /// counted (the run never started, e.g. the breaker refused it).
    #[allow(clippy::too_many_arguments)]
    pub fn requeue_task(
        &self,
        task_id: u64,
        status: TaskStatus,
        class: FailureClass,
        error: String,
        not_before_ms: u64,
        now_ms: u64,
        refund_attempt: bool,
    ) -> Pending<Task> {
        self.write(move |tx| {
            let mut task = load_task(tx, task_id)?;
            if refund_attempt {
                task.attempts = task.attempts.saturating_sub(1);
            }
            if task.status.is_terminal() {
                return Err(StoreError::Conflict(format!(
                    "task {task_id} {}",
                    task.status.already()
                )));
            }
            let old_status = task.status;
            remove_from_queue(tx, &task)?;
            release_user(tx, &task)?;
            task.status = status;
            task.error_class = Some(class);
            task.error = Some(error.clone());
            task.enqueued_ms = not_before_ms;
            task.pid = None;
            task.pid_start_time = None;
            tx.open_table(TASK_QUEUE)?.insert(task.queue_key(), ())?;
            reindex_status(tx, task.id, old_status, task.status)?;
            store_task(tx, &task)?;
            insert_event(
                tx,
                now_ms,
                0,
                "task_requeued",
                Some(&task.bot_id),
                &json!({"task_id": task.id, "class": class.as_str(), "attempts": task.attempts}),
            )?;
            Ok(task)
        })
    }

    /// Cancels a queued or interrupted task. A running task is cancelled by the
    /// worker pool (which kills its process group and then calls `finish_task`).
    pub fn cancel_queued_task(&self, task_id: u64, now_ms: u64) -> Pending<Task> {
        self.write(move |tx| {
            let task = load_task(tx, task_id)?;
            match task.status {
                TaskStatus::Queued | TaskStatus::Interrupted => {}
                other => {
                    return Err(StoreError::Conflict(format!(
                        "task {task_id} is {other}, not queued"
                    )));
                }
            }
            let finish = TaskFinish {
                status: Some(TaskStatus::Cancelled),
                error_class: Some(FailureClass::Cancelled),
                error: Some("cancelled before it ran".into()),
                ..TaskFinish::default()
            };
            finish_tx(tx, task_id, &finish, now_ms, 0)
        })
    }

    /// Creates a new task with the prompt of a finished one (a manual retry).
    pub fn retry_task(&self, task_id: u64, max_attempts: u32, now_ms: u64) -> Pending<Task> {
        self.write(move |tx| {
            let old = load_task(tx, task_id)?;
            if !old.status.is_terminal() {
                return Err(StoreError::Conflict(format!(
                    "task {task_id} is {}; only a finished task can be retried",
                    old.status
                )));
            }
            let new = NewTask {
                bot_id: old.bot_id.clone(),
                user_id: old.user_id,
                chat_id: old.chat_id,
                kind: old.kind,
                source: old.source,
                prompt: old.prompt.clone(),
                priority: old.priority,
                max_attempts,
                reply_to_message_id: old.reply_to_message_id,
                update_id: None,
            };
            let mut submitted = submit_tx(tx, &new, now_ms)?;
            submitted.task.retry_of = Some(task_id);
            store_task(tx, &submitted.task)?;
            Ok(submitted.task)
        })
    }

    /// Remembers the progress message shown for a task. Relaxed: lost in a crash,
    /// the message is merely not cleaned up after the answer.
    pub fn set_progress_message(&self, task_id: u64, message_id: Option<i32>) -> Pending<()> {
        self.write_relaxed(move |tx| progress_tx(tx, task_id, message_id))
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
        self.write_op(&op, move |tx| begin_delivery_tx(tx, task_id, now_ms))
    }

    /// Records that a delivery attempt failed before reaching the user.
    pub fn delivery_failed(&self, task_id: u64) -> Pending<()> {
        self.inner.delivery_begun_by_finish.remove(task_id);
        let op = TaskOp::DeliveryFailed { task_id };
        self.write_op(&op, move |tx| delivery_failed_tx(tx, task_id))
    }

    /// Removes a delivered answer from the outbox. Relaxed: lost in a crash (the
    /// next durable commit is at most a second away), the answer is sent again
    /// with the note that says so, since [`Self::begin_delivery`] is durable.
    pub fn mark_delivered(&self, task_id: u64) -> Pending<()> {
        self.inner.delivery_begun_by_finish.remove(task_id);
        self.write_relaxed(move |tx| delivered_tx(tx, task_id))
    }

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

    /// Finished tasks whose answer has not been delivered yet, oldest first.
    pub fn undelivered(&self, bot_id: &str) -> StoreResult<Vec<Task>> {
        self.read(|tx| {
            let outbox = tx.open_table(OUTBOX)?;
            let tasks = tx.open_table(TASKS)?;
            let mut out = Vec::new();
            for row in outbox.iter()? {
                let id = row?.0.value();
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

pub(super) fn decode_task(bytes: &[u8]) -> StoreResult<Task> {
    codec::decode(bytes).map_err(|e| StoreError::decode("tasks", e))
}

fn load_task(tx: &WriteTransaction, task_id: u64) -> StoreResult<Task> {
    let tasks = tx.open_table(TASKS)?;
    let value = tasks.get(task_id)?;
    match value {
        Some(v) => decode_task(v.value()),
        None => Err(StoreError::not_found(format!("task {task_id}"))),
    }
}

pub(super) fn store_task(tx: &WriteTransaction, task: &Task) -> StoreResult<()> {
    tx.open_table(TASKS)?
        .insert(task.id, codec::encode(task).as_slice())?;
    Ok(())
}

fn update_task(
    tx: &WriteTransaction,
    task_id: u64,
    change: impl FnOnce(&mut Task) -> StoreResult<()>,
) -> StoreResult<Task> {
    let mut task = load_task(tx, task_id)?;
    change(&mut task)?;
    store_task(tx, &task)?;
    Ok(task)
}

fn reindex_status(
    tx: &WriteTransaction,
    id: u64,
    old: TaskStatus,
    new: TaskStatus,
) -> StoreResult<()> {
    if old != new {
        let mut index = tx.open_table(TASK_STATUS)?;
        index.remove((old.index(), id))?;
        index.insert((new.index(), id), ())?;
    }
    Ok(())
}

fn remove_from_queue(tx: &WriteTransaction, task: &Task) -> StoreResult<()> {
    tx.open_table(TASK_QUEUE)?.remove(task.queue_key())?;
    Ok(())
}

fn release_user(tx: &WriteTransaction, task: &Task) -> StoreResult<()> {
    let mut active = tx.open_table(ACTIVE_USERS)?;
    let holder = active
        .get((task.bot_id.as_str(), task.user_id))?
        .map(|v| v.value());
    if holder == Some(task.id) {
        active.remove((task.bot_id.as_str(), task.user_id))?;
    }
    Ok(())
}

/// The next task id: one above the newest task. Tasks are never deleted, so
/// ids are never reused. (Up to schema 3 a counter in `meta` was written with
/// every submission: a B-tree update per submission, retired by migration 4.)
pub(super) fn next_task_id(tx: &WriteTransaction) -> StoreResult<u64> {
    Ok(tx
        .open_table(TASKS)?
        .last()?
        .map_or(1, |(k, _)| k.value() + 1))
}

pub(super) fn submit_tx(
    tx: &WriteTransaction,
    new: &NewTask,
    now_ms: u64,
) -> StoreResult<TaskSubmitted> {
    if let Some(update) = new.update_id {
        let existing = tx
            .open_table(UPDATE_DEDUP)?
            .get((new.bot_id.as_str(), update))?
            .map(|v| v.value());
        if let Some(id) = existing {
            let task = load_task(tx, id)?;
            // A re-delivery is the same message. Telegram picks update ids at
            // random again after a week without updates, so an id seen before
            // on another message is a new prompt, never one to drop.
            if task.chat_id == new.chat_id && task.reply_to_message_id == new.reply_to_message_id {
                return Ok(TaskSubmitted {
                    task,
                    duplicate: true,
                });
            }
        }
    }
    let id = next_task_id(tx)?;
    let task = Task {
        id,
        bot_id: new.bot_id.clone(),
        user_id: new.user_id,
        chat_id: new.chat_id,
        kind: new.kind,
        source: new.source,
        prompt: new.prompt.clone(),
        priority: new.priority,
        status: TaskStatus::Queued,
        attempts: 0,
        max_attempts: new.max_attempts.max(1),
        created_ms: now_ms,
        enqueued_ms: now_ms,
        started_ms: None,
        finished_ms: None,
        pid: None,
        pid_start_time: None,
        exit_code: None,
        result: None,
        error_class: None,
        error: None,
        cost_usd: 0.0,
        input_tokens: 0,
        output_tokens: 0,
        session_id: None,
        reply_to_message_id: new.reply_to_message_id,
        update_id: new.update_id,
        progress_message_id: None,
        delivery_started_ms: None,
        retry_of: None,
        extra: None,
    };
    insert_new_task(tx, &task)?;
    if let Some(update) = new.update_id {
        tx.open_table(UPDATE_DEDUP)?
            .insert((new.bot_id.as_str(), update), id)?;
    }
    Ok(TaskSubmitted {
        task,
        duplicate: false,
    })
}

/// First byte of every journal record this build writes: the layout of
/// [`TaskOp`]. A record with another value is not redone (it is kept aside).
const JOURNAL_FORMAT: u8 = 1;

/// A task operation as the journal records it. Each is a deterministic function
/// of the stored state and these inputs, so [`TaskOp::redo`] after a crash
/// reproduces exactly what was acknowledged (same ids, same outcome).
#[derive(Debug, PartialEq, Serialize, Deserialize)]
pub(super) enum TaskOp {
    Submit {
        new: NewTask,
        now_ms: u64,
    },
    Claim {
        now_ms: u64,
        blocked_bots: Vec<String>,
    },
    Process {
        task_id: u64,
        pid: u32,
        start_time: u64,
    },
    Finish {
        task_id: u64,
        finish: TaskFinish,
        now_ms: u64,
        history: usize,
    },
    Progress {
        task_id: u64,
        message_id: Option<i32>,
    },
    BeginDelivery {
        task_id: u64,
        now_ms: u64,
    },
    DeliveryFailed {
        task_id: u64,
    },
    Delivered {
        task_id: u64,
    },
    /// A conversation message (the user's prompt, recorded beside its task).
    Message {
        bot_id: String,
        user_id: i64,
        role: String,
        text: String,
        now_ms: u64,
        history: usize,
    },
    // Variants are matched by position in the encoding: add new ones below only.
    // `Claim`, `Process`, `Progress`, `Delivered` and `Message` are no longer
    // written; they stay to redo journals an older build left behind.
    /// A submission whose prompt also enters the conversation history.
    SubmitPrompt {
        new: NewTask,
        now_ms: u64,
        history: usize,
    },
    /// A claimed task's agent process; redoes the (relaxed) claim if it was lost.
    Started {
        task_id: u64,
        claimed_ms: u64,
        pid: u32,
        start_time: u64,
    },
}

impl TaskOp {
    /// Applies the operation again, as the [`Store`] method that journaled it did.
    fn redo(&self, tx: &WriteTransaction) -> StoreResult<()> {
        match self {
            TaskOp::Submit { new, now_ms } => submit_tx(tx, new, *now_ms).map(drop),
            TaskOp::Claim {
                now_ms,
                blocked_bots,
            } => claim_tx(tx, *now_ms, blocked_bots).map(drop),
            TaskOp::Process {
                task_id,
                pid,
                start_time,
            } => process_tx(tx, *task_id, *pid, *start_time),
            TaskOp::Finish {
                task_id,
                finish,
                now_ms,
                history,
            } => finish_tx(tx, *task_id, finish, *now_ms, *history).map(drop),
            TaskOp::Progress {
                task_id,
                message_id,
            } => progress_tx(tx, *task_id, *message_id),
            TaskOp::BeginDelivery { task_id, now_ms } => {
                begin_delivery_tx(tx, *task_id, *now_ms).map(drop)
            }
            TaskOp::DeliveryFailed { task_id } => delivery_failed_tx(tx, *task_id),
            TaskOp::Delivered { task_id } => delivered_tx(tx, *task_id),
            TaskOp::Message {
                bot_id,
                user_id,
                role,
                text,
                now_ms,
                history,
            } => append_message_tx(tx, bot_id, *user_id, role, text, *now_ms, *history),
            TaskOp::SubmitPrompt {
                new,
                now_ms,
                history,
            } => submit_prompt_tx(tx, new, *now_ms, *history).map(drop),
            TaskOp::Started {
                task_id,
                claimed_ms,
                pid,
                start_time,
            } => started_tx(tx, *task_id, *claimed_ms, *pid, *start_time),
        }
    }
}

fn submit_prompt_tx(
    tx: &WriteTransaction,
    new: &NewTask,
    now_ms: u64,
    history: usize,
) -> StoreResult<TaskSubmitted> {
    let submitted = submit_tx(tx, new, now_ms)?;
    if !submitted.duplicate && history > 0 {
        append_message_tx(
            tx,
            &new.bot_id,
            new.user_id,
            "user",
            &new.prompt,
            now_ms,
            history,
        )?;
    }
    Ok(submitted)
}

/// Records a running task's process. After a crash that lost the relaxed claim,
/// the task is queued again: it is claimed here first, exactly as the claim at
/// `claimed_ms` did.
fn started_tx(
    tx: &WriteTransaction,
    task_id: u64,
    claimed_ms: u64,
    pid: u32,
    start_time: u64,
) -> StoreResult<()> {
    let task = load_task(tx, task_id)?;
    if matches!(task.status, TaskStatus::Queued | TaskStatus::Interrupted) {
        start_claimed(tx, task, claimed_ms)?;
    }
    process_tx(tx, task_id, pid, start_time)
}

fn process_tx(tx: &WriteTransaction, task_id: u64, pid: u32, start_time: u64) -> StoreResult<()> {
    update_task(tx, task_id, |task| {
        if task.status != TaskStatus::Running {
            return Err(StoreError::Conflict(format!(
                "task {task_id} is {}, not running",
                task.status
            )));
        }
        task.pid = Some(pid);
        task.pid_start_time = Some(start_time);
        Ok(())
    })
    .map(drop)
}

fn progress_tx(tx: &WriteTransaction, task_id: u64, message_id: Option<i32>) -> StoreResult<()> {
    update_task(tx, task_id, |task| {
        task.progress_message_id = message_id;
        Ok(())
    })
    .map(drop)
}

fn begin_delivery_tx(tx: &WriteTransaction, task_id: u64, now_ms: u64) -> StoreResult<Option<u64>> {
    let mut previous = None;
    update_task(tx, task_id, |task| {
        previous = task.delivery_started_ms;
        task.delivery_started_ms = Some(now_ms);
        Ok(())
    })?;
    Ok(previous)
}

fn delivery_failed_tx(tx: &WriteTransaction, task_id: u64) -> StoreResult<()> {
    update_task(tx, task_id, |task| {
        task.delivery_started_ms = None;
        Ok(())
    })
    .map(drop)
}

fn delivered_tx(tx: &WriteTransaction, task_id: u64) -> StoreResult<()> {
    tx.open_table(OUTBOX)?.remove(task_id)?;
    Ok(())
}

/// Opens the journal of the database at `db_path` and redoes the task operations
/// it holds that the database does not (the last run ended without a
/// checkpoint), then commits durably. Returns the journal, ready for writing, and
/// how many operations were redone.
pub(super) fn replay_journal(db: &Database, db_path: &Path) -> StoreResult<(JournalState, u64)> {
    let path = Journal::path_for(db_path);
    let (mut journal, records) = Journal::open(&path)
        .map_err(|e| StoreError::Io(format!("cannot open the journal {}: {e}", path.display())))?;
    let applied = {
        let tx = db.begin_write()?;
        let seq = journal_seq(&tx)?;
        tx.abort()?;
        seq
    };
    let pending: Vec<JournalRecord> = records.into_iter().filter(|r| r.seq > applied).collect();
    let ready = |journal| JournalState {
        journal,
        last_seq: applied,
        seal: None,
    };
    let Some(first) = pending.first() else {
        journal.restart();
        return Ok((ready(journal), 0));
    };
    if first.seq != applied + 1 {
        // Records written against another database (this one was restored or
        // recreated): redoing them here would apply operations to the wrong tasks.
        let kept = keep_journal_copy(&path, "orphaned");
        tracing::error!(
            journal = %path.display(),
            first_seq = first.seq,
            database_seq = applied,
            kept_at = ?kept,
            "the journal does not continue this database (it was replaced by a restore or recreated); its operations are not redone"
        );
        clear_journal(&mut journal);
        return Ok((ready(journal), 0));
    }
    let mut redone = 0;
    let mut failed = Vec::new();
    // One transaction per record, so one that cannot be redone leaves no trace;
    // non-durable, made durable together by the last commit.
    for record in &pending {
        let mut tx = db.begin_write()?;
        tx.set_durability(Durability::None)?;
        match decode_op(&record.payload).and_then(|op| op.redo(&tx)) {
            Ok(()) => {
                tx.commit()?;
                redone += 1;
            }
            Err(e) => {
                tx.abort()?;
                failed.push(format!("seq {}: {e}", record.seq));
            }
        }
    }
    let last_seq = pending.last().map_or(applied, |r| r.seq);
    let mut tx = db.begin_write()?;
    tx.set_durability(Durability::Immediate)?;
    set_journal_seq(&tx, last_seq)?;
    tx.commit()?;
    tracing::warn!(
        operations = redone,
        journal = %path.display(),
        "redid task operations the last run acknowledged but had not checkpointed (it did not shut down cleanly)"
    );
    if !failed.is_empty() {
        let kept = keep_journal_copy(&path, "unredone");
        tracing::error!(
            journal = %path.display(),
            kept_at = ?kept,
            failures = ?failed,
            "journaled task operations could not be redone; the journal was copied aside"
        );
    }
    journal.restart();
    Ok((
        JournalState {
            journal,
            last_seq,
            seal: None,
        },
        redone,
    ))
}

fn decode_op(payload: &[u8]) -> StoreResult<TaskOp> {
    match payload.split_first() {
        Some((&JOURNAL_FORMAT, op)) => {
            codec::decode_exact(op).map_err(|e| StoreError::decode("journal", e))
        }
        _ => Err(StoreError::decode(
            "journal",
            codec::DecodeError::Malformed("unknown journal record format".into()),
        )),
    }
}

/// A copy of the journal for a human, `<journal>.<label>-<unix ms>`: records this
/// open does not redo are never silently dropped.
fn keep_journal_copy(path: &Path, label: &str) -> Option<std::path::PathBuf> {
    let mut aside = path.as_os_str().to_os_string();
    aside.push(format!(".{label}-{}", super::now_ms()));
    let aside = std::path::PathBuf::from(aside);
    match std::fs::copy(path, &aside) {
        Ok(_) => Some(aside),
        Err(e) => {
            tracing::error!(journal = %path.display(), error = %e, "cannot copy the journal aside");
            None
        }
    }
}

fn clear_journal(journal: &mut Journal) {
    if let Err(e) = journal.clear() {
        tracing::error!(journal = %journal.path().display(), error = %e, "cannot clear the journal");
    }
}

/// Writes a task and its indexes (and its queue entry when queued).
pub(super) fn insert_new_task(tx: &WriteTransaction, task: &Task) -> StoreResult<()> {
    store_task(tx, task)?;
    if matches!(task.status, TaskStatus::Queued | TaskStatus::Interrupted) {
        tx.open_table(TASK_QUEUE)?.insert(task.queue_key(), ())?;
    }
    tx.open_table(TASK_STATUS)?
        .insert((task.status.index(), task.id), ())?;
    tx.open_table(TASK_USER)?
        .insert((task.bot_id.as_str(), task.user_id, task.id), ())?;
    Ok(())
}

fn claim_tx(
    tx: &WriteTransaction,
    now_ms: u64,
    blocked_bots: &[String],
) -> StoreResult<Option<Claimed>> {
    let Some(task) = find_claimable(tx, now_ms, blocked_bots)? else {
        return Ok(None);
    };
    start_claimed(tx, task, now_ms).map(Some)
}

/// Turns a queued task into a running one (attempt counted, user marked busy).
fn start_claimed(tx: &WriteTransaction, mut task: Task, now_ms: u64) -> StoreResult<Claimed> {
    let old_status = task.status;
    remove_from_queue(tx, &task)?;
    task.status = TaskStatus::Running;
    task.attempts += 1;
    task.started_ms = Some(now_ms);
    task.pid = None;
    task.pid_start_time = None;
    store_task(tx, &task)?;
    reindex_status(tx, task.id, old_status, task.status)?;
    tx.open_table(ACTIVE_USERS)?
        .insert((task.bot_id.as_str(), task.user_id), task.id)?;
    let session_id = tx
        .open_table(SESSIONS)?
        .get((task.bot_id.as_str(), task.user_id))?
        .map(|v| codec::decode::<Session>(v.value()))
        .transpose()
        .map_err(|e| StoreError::decode("sessions", e))?
        .and_then(|s| s.agent_session_id);
    insert_event(
        tx,
        now_ms,
        0,
        "task_started",
        Some(&task.bot_id),
        &json!({"task_id": task.id, "attempt": task.attempts, "wait_ms": now_ms.saturating_sub(task.created_ms), "kind": task.kind.as_str()}),
    )?;
    Ok(Claimed { task, session_id })
}

fn find_claimable(
    tx: &WriteTransaction,
    now_ms: u64,
    blocked_bots: &[String],
) -> StoreResult<Option<Task>> {
    let queue = tx.open_table(TASK_QUEUE)?;
    let tasks = tx.open_table(TASKS)?;
    let active = tx.open_table(ACTIVE_USERS)?;
    first_claimable(&queue, &tasks, &active, now_ms, blocked_bots)
}

/// The task a claim at `now_ms` would take, from any view of the tables.
fn first_claimable(
    queue: &impl ReadableTable<(u8, u64, u64), ()>,
    tasks: &impl ReadableTable<u64, &'static [u8]>,
    active: &impl ReadableTable<(&'static str, i64), u64>,
    now_ms: u64,
    blocked_bots: &[String],
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
            if blocked_bots.contains(&task.bot_id) {
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

fn finish_tx(
    tx: &WriteTransaction,
    task_id: u64,
    finish: &TaskFinish,
    now_ms: u64,
    history: usize,
) -> StoreResult<Task> {
    let mut task = load_task(tx, task_id)?;
    if task.status.is_terminal() {
        return Err(StoreError::Conflict(format!(
            "task {task_id} {}",
            task.status.already()
        )));
    }
    let old_status = task.status;
    let status = finish.status.unwrap_or(TaskStatus::Succeeded);
    remove_from_queue(tx, &task)?;
    release_user(tx, &task)?;
    task.status = status;
    task.finished_ms = Some(now_ms);
    task.result = finish
        .result
        .as_deref()
        .map(|r| bound_text(r, MAX_RESULT_BYTES));
    task.error_class = finish.error_class;
    task.error = finish.error.clone();
    task.exit_code = finish.exit_code;
    task.cost_usd += finish.cost_usd;
    task.input_tokens += finish.input_tokens;
    task.output_tokens += finish.output_tokens;
    if finish.session_id.is_some() {
        task.session_id = finish.session_id.clone();
    }
    if finish.deliver && task.chat_id != NO_CHAT {
        // See Store::finish_task: the outbox sends it from now on.
        task.delivery_started_ms = Some(now_ms);
    }
    store_task(tx, &task)?;
    reindex_status(tx, task.id, old_status, status)?;
    if finish.cost_usd > 0.0 || finish.input_tokens > 0 || task.started_ms.is_some() {
        add_cost_tx(tx, &task.bot_id, now_ms, finish)?;
    }
    if let Some(session_id) = &finish.session_id {
        remember_session(tx, &task, session_id, now_ms)?;
    }
    if status == TaskStatus::Succeeded
        && history > 0
        && let Some(result) = &task.result
    {
        append_message_tx(
            tx,
            &task.bot_id,
            task.user_id,
            "agent",
            result,
            now_ms,
            history,
        )?;
    }
    if finish.deliver && task.chat_id != NO_CHAT {
        tx.open_table(OUTBOX)?.insert(task.id, ())?;
    }
    insert_event(
        tx,
        now_ms,
        0,
        "task_finished",
        Some(&task.bot_id),
        &json!({
            "task_id": task.id,
            "status": status.as_str(),
            "class": task.error_class.map(|c| c.as_str()),
            "kind": task.kind.as_str(),
            "wait_ms": task.wait_ms(),
            "run_ms": task.run_ms(),
            "cost_usd": finish.cost_usd,
        }),
    )?;
    Ok(task)
}

fn remember_session(
    tx: &WriteTransaction,
    task: &Task,
    session_id: &str,
    now_ms: u64,
) -> StoreResult<()> {
    let mut sessions = tx.open_table(SESSIONS)?;
    let key = (task.bot_id.as_str(), task.user_id);
    let existing = sessions
        .get(key)?
        .map(|v| codec::decode::<Session>(v.value()))
        .transpose()
        .map_err(|e| StoreError::decode("sessions", e))?;
    let mut session = existing.unwrap_or(Session {
        agent_session_id: None,
        created_ms: now_ms,
        last_active_ms: now_ms,
        message_count: 0,
        workdir: String::new(),
        extra: None,
    });
    session.agent_session_id = Some(session_id.to_string());
    session.last_active_ms = now_ms;
    session.message_count += 1;
    sessions.insert(key, codec::encode(&session).as_slice())?;
    Ok(())
}

fn add_cost_tx(
    tx: &WriteTransaction,
    bot_id: &str,
    now_ms: u64,
    finish: &TaskFinish,
) -> StoreResult<()> {
    let mut costs: Table<(&str, u32), &[u8]> = tx.open_table(COSTS)?;
    let day = utc_day(now_ms);
    let mut entry: CostDay = costs
        .get((bot_id, day))?
        .map(|v| codec::decode(v.value()))
        .transpose()
        .map_err(|e| StoreError::decode("costs", e))?
        .unwrap_or_default();
    entry.usd += finish.cost_usd;
    entry.tasks += 1;
    entry.input_tokens += finish.input_tokens;
    entry.output_tokens += finish.output_tokens;
    costs.insert((bot_id, day), codec::encode(&entry).as_slice())?;
    Ok(())
}

/// The UTC day of a unix-ms time, as yyyymmdd.
pub fn utc_day(ms: u64) -> u32 {
    use chrono::{Datelike, TimeZone, Utc};
    let dt = Utc
        .timestamp_millis_opt(ms as i64)
        .single()
        .unwrap_or_default();
    dt.year() as u32 * 10_000 + dt.month() * 100 + dt.day()
}

/// Cuts text to at most `max` bytes on a char boundary, saying so.
pub fn bound_text(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let marker = "\n\n[… output truncated; the full output is in the task's run files]";
    let mut cut = max.saturating_sub(marker.len());
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}{marker}", &text[..cut])
}
