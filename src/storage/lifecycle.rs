//! A task's life: submission, claim, the agent's process, the finish, a
//! re-queue, a cancel or a retry — each one transaction over the task, its
//! indexes, its queue entry and what its end changes elsewhere.
//!
//! Invariants kept by every operation here:
//! - submitting inserts the task and its queue entry together, durable (through
//!   the journal) before the caller hears "queued";
//! - an update id already turned into a task is never turned into another
//!   (`update_dedup`);
//! - a finished task's cost is added to its bot's day, its session and history
//!   updated and its answer put in the outbox in the transaction that finishes it;
//! - every journaled operation is a deterministic function of the stored state
//!   and its [`TaskOp`], so the replay at open reproduces it exactly.

use std::sync::atomic::Ordering;

use redb::{ReadableTable, WriteTransaction};
use serde_json::json;

use super::batch::Tables;
use super::costs::add_run_cost_tx;
use super::error::StoreError;
use super::events::insert_event_into;
use super::limits::{MAX_PROMPT_BYTES, MAX_RESULT_BYTES, bound_text};
use super::outbox::enqueue_answer;
use super::projects::{DEFAULT_PROJECT, set_task_project_tx, task_project_in, task_project_tx};
use super::queue::{dequeue, enqueue, first_claimable, occupy_user, release_user};
use super::records::*;
use super::sessions::{
    agent_session_id_tx, append_message_tx, project_session_in, record_session_use_tx,
};
use super::tables::{ACTIVE_USERS, TASK_QUEUE, TASKS};
use super::task_ops::{TaskFinish, TaskOp};
use super::tasks::{insert_task_indexed, next_id, read_task, reindex_status, write_task};
use super::writer::Wanted;
use super::{Pending, Store, StoreResult};

/// The outcome of a submission.
#[derive(Debug, Clone)]
pub struct TaskSubmitted {
    /// The task (the existing one for a duplicate update).
    pub task: Task,
    /// Whether this update had been submitted before.
    pub duplicate: bool,
}

impl TaskSubmitted {
    /// Whether [`Store::submit_started`] started the new task on the process it
    /// was given (else it is a duplicate, or it came from another submission).
    pub fn started(&self) -> bool {
        !self.duplicate && self.task.status == TaskStatus::Running
    }
}

/// A task handed to a worker.
#[derive(Debug, Clone)]
pub struct Claimed {
    /// The task, now `running`.
    pub task: Task,
    /// The user's agent session to resume, if any (of the task's project).
    pub session_id: Option<String>,
    /// The project the task runs in.
    pub project: String,
}

/// The chat of a task that came from no chat (the HTTP API or `ask` without
/// one): its answer is kept with the task and never sent to Telegram, which
/// has no chat 0.
pub const NO_CHAT: i64 = 0;

impl Store {
    /// Stores a new queued task and its queue entry in one transaction, durable
    /// (through the journal) before this is answered. Only when this returns may
    /// the user be told the prompt is queued.
    pub fn submit_task(&self, new: NewTask, now_ms: u64) -> Pending<TaskSubmitted> {
        self.submit_task_in_project(new, DEFAULT_PROJECT, now_ms)
    }

    /// [`Self::submit_task`] for a task that runs in `project`.
    pub fn submit_task_in_project(
        &self,
        new: NewTask,
        project: &str,
        now_ms: u64,
    ) -> Pending<TaskSubmitted> {
        if let Err(e) = check_prompt(&new) {
            return Pending::failed(e);
        }
        let project = project.to_owned();
        let op = if project == DEFAULT_PROJECT {
            TaskOp::Submit {
                new: new.clone(),
                now_ms,
            }
        } else {
            TaskOp::SubmitInProject {
                new: new.clone(),
                project: project.clone(),
                now_ms,
            }
        };
        self.write_op(&op, move |t| submit_tx(t, &new, &project, now_ms))
    }

    /// [`Self::submit_task`] for a chat prompt, which also enters the user's
    /// conversation history, in the same transaction and journal record (a
    /// re-delivered update adds neither twice).
    pub fn submit_prompt(&self, new: NewTask, now_ms: u64) -> Pending<TaskSubmitted> {
        self.submit_prompt_in_project(new, DEFAULT_PROJECT, now_ms)
    }

    /// [`Self::submit_prompt`] for a prompt that runs in `project` (and enters
    /// that project's history).
    pub fn submit_prompt_in_project(
        &self,
        new: NewTask,
        project: &str,
        now_ms: u64,
    ) -> Pending<TaskSubmitted> {
        if let Err(e) = check_prompt(&new) {
            return Pending::failed(e);
        }
        let history = self.options().history_messages;
        let project = project.to_owned();
        let op = if project == DEFAULT_PROJECT {
            TaskOp::SubmitPrompt {
                new: new.clone(),
                now_ms,
                history,
            }
        } else {
            TaskOp::SubmitPromptInProject {
                new: new.clone(),
                project: project.clone(),
                now_ms,
                history,
            }
        };
        self.write_op(&op, move |t| {
            submit_prompt_tx(t, &new, &project, now_ms, history)
        })
    }

    /// Stores a new task and, in the same transaction and journal record, starts
    /// it on the agent process `(pid, start_time)` — the session's idle warm
    /// process, which the caller holds: claimed at `now_ms` (its attempt
    /// counted) with its process recorded, as [`Self::record_task_process`]
    /// would after a claim. Its prompt enters the history if `prompt`, as with
    /// [`Self::submit_prompt_in_project`].
    ///
    /// Only when nothing claimable is queued ahead of it (tasks of
    /// `blocked_bots`, whose agent breaker is open, are not) and its user runs
    /// nothing; otherwise [`StoreError::Conflict`] and nothing is stored (the
    /// caller submits it to the queue instead). A re-delivered update is found,
    /// as by a submission ([`TaskSubmitted::duplicate`]); else
    /// [`TaskSubmitted::started`]. The journal record says "started": its redo
    /// does not decide again (claims are relaxed, so a crash may have lost one
    /// that the decision saw).
    ///
    /// A warm prompt's start thus costs one durable step, not two. The caller
    /// writes the turn record and then the prompt after this returns; a crash
    /// between the two leaves a running task whose process has no turn record,
    /// which recovery re-queues (the idle process is ended as an orphan).
    pub fn submit_started(
        &self,
        new: NewTask,
        project: &str,
        prompt: bool,
        now_ms: u64,
        process: (u32, u64),
        blocked_bots: Vec<String>,
    ) -> Pending<TaskSubmitted> {
        if let Err(e) = check_prompt(&new) {
            return Pending::failed(e);
        }
        let history = if prompt {
            self.options().history_messages
        } else {
            0
        };
        let project = project.to_owned();
        let op = TaskOp::SubmitStarted {
            new: new.clone(),
            project: project.clone(),
            now_ms,
            history,
            pid: process.0,
            start_time: process.1,
        };
        self.write_op(&op, move |t| {
            let decide = Decide::Now {
                blocked_bots: &blocked_bots,
            };
            submit_started_tx(t, &new, &project, now_ms, history, process, decide)
        })
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
        // without a write. A task that becomes claimable after this look wakes
        // the dispatcher again, which claims it then. While claims keep taking
        // tasks (a backlog), the look would only repeat the writer's own: it
        // is skipped until a claim comes back empty.
        let took_task = self.inner.last_claim_took_task.clone();
        if !took_task.load(Ordering::Relaxed)
            && matches!(self.nothing_to_claim(now_ms, &blocked_bots), Ok(true))
        {
            return Pending::ready(None);
        }
        self.write_tables(
            Wanted::Relaxed,
            move |t| {
                let claimed = claim_tx(t, now_ms, &blocked_bots)?;
                took_task.store(claimed.is_some(), Ordering::Relaxed);
                Ok(claimed)
            },
            |outcome| outcome,
        )
    }

    /// The task [`Self::claim_next_task`] would take at `now_ms`, as it would
    /// run (`running`, its attempt counted, started at `now_ms`), from read
    /// transactions: nothing is written. Tasks of the users in `busy` (whose
    /// runs are being started) are passed over too.
    ///
    /// The claim is then written together with the agent's process by
    /// [`Self::record_task_process`], whose job claims a task still queued: a
    /// run's start costs one commit, not two. A run that ends before its agent
    /// starts claims it with [`Self::claim_selected`] first. Between the look
    /// and the claim the task may be cancelled; the claim then fails with
    /// [`StoreError::Conflict`] and the run is dropped.
    pub fn select_claimable(
        &self,
        now_ms: u64,
        blocked_bots: &[String],
        busy: &[(String, i64)],
    ) -> StoreResult<Option<Claimed>> {
        self.read(|tx| {
            let queue = tx.open_table(TASK_QUEUE)?;
            let tasks = tx.open_table(TASKS)?;
            let active = tx.open_table(ACTIVE_USERS)?;
            let found = first_claimable(&queue, &tasks, &active, now_ms, blocked_bots, busy)?;
            let Some(mut task) = found else {
                return Ok(None);
            };
            let project = task_project_in(tx, task.id)?;
            let session_id = project_session_in(tx, &task.bot_id, task.user_id, &project)?
                .and_then(|session| session.agent_session_id);
            as_claimed(&mut task, now_ms);
            Ok(Some(Claimed {
                task,
                session_id,
                project,
            }))
        })
    }

    /// Claims a task [`Self::select_claimable`] chose, as it was chosen at
    /// `claimed_ms`, when its run ends before its agent's process is recorded
    /// (a refusal, a spawn failure): the run's end is then recorded on a
    /// claimed task, as for any other run. Nothing for a task already running;
    /// [`StoreError::Conflict`] for one that is neither (cancelled meanwhile).
    /// Relaxed, as claims are.
    pub fn claim_selected(&self, task_id: u64, claimed_ms: u64) -> Pending<()> {
        self.write_tables(
            Wanted::Relaxed,
            move |t| {
                let mut task = read_task(&*t.tasks()?, task_id)?;
                match task.status {
                    TaskStatus::Queued | TaskStatus::Interrupted => {
                        mark_claimed(t, &mut task, claimed_ms)?;
                        write_task(&mut *t.tasks()?, &task)
                    }
                    TaskStatus::Running => Ok(()),
                    other => Err(StoreError::Conflict(format!("task {task_id} is {other}"))),
                }
            },
            |outcome| outcome,
        )
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
        self.write_op(&op, move |t| {
            started_tx(t, task_id, claimed_ms, pid, start_time)
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
        let record = op.record();
        let fresh = self.inner.delivery_begun_by_finish.clone();
        let forget = fresh.clone();
        self.write_tables(
            Wanted::Journaled(record),
            move |t| {
                let task = finish_tx(t, task_id, &finish, now_ms, history)?;
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
        self.write_tables(
            Wanted::Durable,
            move |t| {
            let mut task = read_task(&*t.tasks()?, task_id)?;
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
            dequeue(&mut *t.queue()?, &task)?;
            release_user(&mut *t.active()?, &task)?;
            task.status = status;
            task.error_class = Some(class);
            task.error = Some(error.clone());
            task.enqueued_ms = not_before_ms;
            task.pid = None;
            task.pid_start_time = None;
            enqueue(&mut *t.queue()?, &task)?;
            reindex_status(t, task.id, old_status, task.status)?;
            write_task(&mut *t.tasks()?, &task)?;
            insert_event_into(
                &mut *t.events()?,
                now_ms,
                0,
                "task_requeued",
                Some(&task.bot_id),
                &json!({"task_id": task.id, "class": class.as_str(), "attempts": task.attempts}),
            )?;
            Ok(task)
            },
            |outcome| outcome,
        )
    }

    /// Cancels a queued or interrupted task. A running task is cancelled by the
    /// worker pool (which kills its process group and then calls `finish_task`).
    pub fn cancel_queued_task(&self, task_id: u64, now_ms: u64) -> Pending<Task> {
        self.write_tables(
            Wanted::Durable,
            move |t| {
                let task = read_task(&*t.tasks()?, task_id)?;
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
                finish_tx(t, task_id, &finish, now_ms, 0)
            },
            |outcome| outcome,
        )
    }

    /// Creates a new task with the prompt of a finished one (a manual retry).
    pub fn retry_task(&self, task_id: u64, max_attempts: u32, now_ms: u64) -> Pending<Task> {
        self.write_tables(
            Wanted::Durable,
            move |t| {
                let old = read_task(&*t.tasks()?, task_id)?;
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
                let project = task_project_tx(t, task_id)?;
                let mut submitted = submit_tx(t, &new, &project, now_ms)?;
                submitted.task.retry_of = Some(task_id);
                write_task(&mut *t.tasks()?, &submitted.task)?;
                Ok(submitted.task)
            },
            |outcome| outcome,
        )
    }
}

fn check_prompt(new: &NewTask) -> StoreResult<()> {
    if new.prompt.len() > MAX_PROMPT_BYTES {
        return Err(StoreError::Invalid(format!(
            "prompt is {} bytes; at most {MAX_PROMPT_BYTES} are accepted",
            new.prompt.len()
        )));
    }
    Ok(())
}

/// Writes a task that is not stored yet, its indexes and its queue entry when
/// queued.
fn insert_new(t: &Tables<'_>, task: &Task) -> StoreResult<()> {
    insert_task_indexed(t, task)?;
    if matches!(task.status, TaskStatus::Queued | TaskStatus::Interrupted) {
        enqueue(&mut *t.queue()?, task)?;
    }
    Ok(())
}

/// Writes a task that is not stored yet, its indexes and its queue entry when
/// queued.
pub(super) fn insert_new_task(tx: &WriteTransaction, task: &Task) -> StoreResult<()> {
    insert_new(&Tables::new(tx), task)
}

/// Records a running task's process. After a crash that lost the relaxed claim,
/// the task is queued again: it is claimed here first, exactly as the claim at
/// `claimed_ms` did.
pub(super) fn started_tx(
    t: &Tables<'_>,
    task_id: u64,
    claimed_ms: u64,
    pid: u32,
    start_time: u64,
) -> StoreResult<()> {
    let mut task = read_task(&*t.tasks()?, task_id)?;
    if matches!(task.status, TaskStatus::Queued | TaskStatus::Interrupted) {
        mark_claimed(t, &mut task, claimed_ms)?;
    }
    record_process(&mut task, pid, start_time)?;
    write_task(&mut *t.tasks()?, &task)
}

pub(super) fn process_tx(
    t: &Tables<'_>,
    task_id: u64,
    pid: u32,
    start_time: u64,
) -> StoreResult<()> {
    let mut task = read_task(&*t.tasks()?, task_id)?;
    record_process(&mut task, pid, start_time)?;
    write_task(&mut *t.tasks()?, &task)
}

fn record_process(task: &mut Task, pid: u32, start_time: u64) -> StoreResult<()> {
    if task.status != TaskStatus::Running {
        return Err(StoreError::Conflict(format!(
            "task {} is {}, not running",
            task.id, task.status
        )));
    }
    task.pid = Some(pid);
    task.pid_start_time = Some(start_time);
    Ok(())
}

/// Whether [`submit_started_tx`] decides if the task may start (a live
/// submission), or redoes one that did (the journal's replay).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Decide<'a> {
    /// Started only if it is the first claimable task, `blocked_bots` passed over.
    Now {
        blocked_bots: &'a [String],
    },
    Decided,
}

/// See [`Store::submit_started`].
pub(super) fn submit_started_tx(
    t: &Tables<'_>,
    new: &NewTask,
    project: &str,
    now_ms: u64,
    history: usize,
    (pid, start_time): (u32, u64),
    decide: Decide<'_>,
) -> StoreResult<TaskSubmitted> {
    let mut submitted = submit_prompt_tx(t, new, project, now_ms, history)?;
    if submitted.duplicate {
        return Ok(submitted);
    }
    if let Decide::Now { blocked_bots } = decide {
        // The first claimable task: the new one only when no older task may
        // run first and its user runs nothing.
        let first = first_claimable_in(t, now_ms, blocked_bots)?;
        if first.is_none_or(|task| task.id != submitted.task.id) {
            return Err(StoreError::Conflict(
                "another task runs first, or its user runs one".into(),
            ));
        }
    }
    let task = &mut submitted.task;
    mark_claimed(t, task, now_ms)?;
    record_process(task, pid, start_time)?;
    write_task(&mut *t.tasks()?, task)?;
    Ok(submitted)
}

pub(super) fn claim_tx(
    t: &Tables<'_>,
    now_ms: u64,
    blocked_bots: &[String],
) -> StoreResult<Option<Claimed>> {
    match first_claimable_in(t, now_ms, blocked_bots)? {
        Some(task) => start_claimed(t, task, now_ms).map(Some),
        None => Ok(None),
    }
}

/// [`first_claimable`] in a write job's tables.
fn first_claimable_in(
    t: &Tables<'_>,
    now_ms: u64,
    blocked_bots: &[String],
) -> StoreResult<Option<Task>> {
    first_claimable(
        &*t.queue()?,
        &*t.tasks()?,
        &*t.active()?,
        now_ms,
        blocked_bots,
        &[],
    )
}

/// The fields a claim at `now_ms` changes in a task.
fn as_claimed(task: &mut Task, now_ms: u64) {
    task.status = TaskStatus::Running;
    task.attempts += 1;
    task.started_ms = Some(now_ms);
    task.pid = None;
    task.pid_start_time = None;
}

/// Turns a queued task into a running one (attempt counted, user marked busy).
fn start_claimed(t: &Tables<'_>, mut task: Task, now_ms: u64) -> StoreResult<Claimed> {
    mark_claimed(t, &mut task, now_ms)?;
    write_task(&mut *t.tasks()?, &task)?;
    let project = task_project_tx(t, task.id)?;
    let session_id = agent_session_id_tx(t, &task.bot_id, task.user_id, &project)?;
    Ok(Claimed {
        task,
        session_id,
        project,
    })
}

/// Everything a claim at `now_ms` changes but the task's own record, which
/// the caller writes once with whatever else it changes in the same job.
fn mark_claimed(t: &Tables<'_>, task: &mut Task, now_ms: u64) -> StoreResult<()> {
    // One running task per user, whoever started the other (the dispatcher's
    // choice and a start at the door can race for the same user).
    let holder = t
        .active()?
        .get((task.bot_id.as_str(), task.user_id))?
        .map(|v| v.value());
    if let Some(holder) = holder.filter(|&holder| holder != task.id) {
        return Err(StoreError::Conflict(format!(
            "task {}: its user runs task {holder}",
            task.id
        )));
    }
    let old_status = task.status;
    dequeue(&mut *t.queue()?, task)?;
    as_claimed(task, now_ms);
    reindex_status(t, task.id, old_status, task.status)?;
    occupy_user(&mut *t.active()?, task)?;
    insert_event_into(
        &mut *t.events()?,
        now_ms,
        0,
        "task_started",
        Some(&task.bot_id),
        &json!({"task_id": task.id, "attempt": task.attempts, "wait_ms": now_ms.saturating_sub(task.created_ms), "kind": task.kind.as_str()}),
    )
}

pub(super) fn finish_tx(
    t: &Tables<'_>,
    task_id: u64,
    finish: &TaskFinish,
    now_ms: u64,
    history: usize,
) -> StoreResult<Task> {
    let mut task = read_task(&*t.tasks()?, task_id)?;
    if task.status.is_terminal() {
        return Err(StoreError::Conflict(format!(
            "task {task_id} {}",
            task.status.already()
        )));
    }
    let old_status = task.status;
    let status = finish.status.unwrap_or(TaskStatus::Succeeded);
    if old_status == TaskStatus::Running {
        // A claim took it out of the queue and made it its user's running task.
        release_user(&mut *t.active()?, &task)?;
    } else {
        dequeue(&mut *t.queue()?, &task)?;
    }
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
    write_task(&mut *t.tasks()?, &task)?;
    reindex_status(t, task.id, old_status, status)?;
    if finish.cost_usd > 0.0 || finish.input_tokens > 0 || task.started_ms.is_some() {
        add_run_cost_tx(
            t,
            &task.bot_id,
            now_ms,
            finish.cost_usd,
            finish.input_tokens,
            finish.output_tokens,
        )?;
    }
    let project = task_project_tx(t, task.id)?;
    if let Some(session_id) = &finish.session_id {
        record_session_use_tx(t, &task.bot_id, task.user_id, &project, session_id, now_ms)?;
    }
    if status == TaskStatus::Succeeded
        && history > 0
        && let Some(result) = &task.result
    {
        append_message_tx(
            t,
            &task.bot_id,
            task.user_id,
            &project,
            "agent",
            result,
            now_ms,
            history,
        )?;
    }
    if finish.deliver && task.chat_id != NO_CHAT {
        enqueue_answer(t, task.id)?;
    }
    insert_event_into(
        &mut *t.events()?,
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

pub(super) fn submit_tx(
    t: &Tables<'_>,
    new: &NewTask,
    project: &str,
    now_ms: u64,
) -> StoreResult<TaskSubmitted> {
    if let Some(update) = new.update_id {
        let existing = t
            .dedup()?
            .get((new.bot_id.as_str(), update))?
            .map(|v| v.value());
        if let Some(id) = existing {
            let task = read_task(&*t.tasks()?, id)?;
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
    let id = next_id(&*t.tasks()?)?;
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
    insert_new(t, &task)?;
    set_task_project_tx(t, id, project)?;
    if let Some(update) = new.update_id {
        t.dedup()?.insert((new.bot_id.as_str(), update), id)?;
    }
    Ok(TaskSubmitted {
        task,
        duplicate: false,
    })
}

pub(super) fn submit_prompt_tx(
    t: &Tables<'_>,
    new: &NewTask,
    project: &str,
    now_ms: u64,
    history: usize,
) -> StoreResult<TaskSubmitted> {
    let submitted = submit_tx(t, new, project, now_ms)?;
    if !submitted.duplicate && history > 0 {
        append_message_tx(
            t,
            &new.bot_id,
            new.user_id,
            project,
            "user",
            &new.prompt,
            now_ms,
            history,
        )?;
    }
    Ok(submitted)
}
