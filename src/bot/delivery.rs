//! Getting answers to users: the outbox loop and the progress updater.
//!
//! Outbox invariant: a finished task's answer stays in the store's `outbox` until
//! Telegram accepted every part; then it is removed. A crash in between re-sends
//! the answer at the next start (at-least-once; such duplicates are counted by the
//! reliability suite). While Telegram (or its breaker) is down, answers wait in
//! the store and are delivered when it is back.
//!
//! Progress: one status message per task ("queued" → "running… 20 s"), edited in
//! place at most every [`EDIT_EVERY`] and never with the text it already shows, a
//! typing action while the agent works past its first [`TYPING_AFTER`], and flood
//! control (429) pauses all edits of the bot for the time Telegram asks.
//! While the agent works, its tool calls and newest text (the pool's live
//! progress, announced on [`crate::worker::Pool::subscribe_progress`]) are shown
//! as they come ([`super::progress`]), at most one edit per [`CHAT_EDIT_EVERY`]
//! per chat; before the answer replaces the message, its last steps are shown if
//! they were not yet.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::BotRuntime;
use super::progress::{ProgressView, render_progress};
use super::render::{self, TELEGRAM_MESSAGE_LIMIT};
use super::telegram::SendError;
use crate::storage::{Task, TaskStatus, now_ms};

/// Minimum time between two edits of one progress message showing only time.
const EDIT_EVERY: Duration = Duration::from_secs(10);
/// Minimum time between two progress edits in one chat.
const CHAT_EDIT_EVERY: Duration = Duration::from_secs(1);
/// How often the progress updater looks at running tasks.
const PROGRESS_TICK: Duration = Duration::from_secs(2);
/// Typing actions expire after about 5 s on the client.
const TYPING_EVERY: Duration = Duration::from_secs(5);
/// A running task's first typing action comes after it ran this long.
const TYPING_AFTER: Duration = Duration::from_secs(1);
/// Messages per answer before the rest goes as a document.
const MAX_PARTS: usize = 4;
/// Longest wait between outbox retries while Telegram is failing.
const MAX_RETRY: Duration = Duration::from_secs(60);

/// Delivers finished tasks' answers until shutdown.
#[tracing::instrument(skip_all, fields(bot_id = %bot.config.id))]
pub(super) async fn run_outbox(bot: Arc<BotRuntime>) {
    let wake = &bot.outbox_wake;
    let mut shutdown = bot.ctx.shutdown.subscribe();
    let mut retry = Duration::from_millis(500);
    loop {
        let waited = match deliver_pending(&bot).await {
            Ok(()) => {
                retry = Duration::from_millis(500);
                Duration::from_secs(30)
            }
            Err(wait) => {
                retry = (retry * 2).min(MAX_RETRY);
                wait.unwrap_or(retry)
            }
        };
        tokio::select! {
            _ = wake.notified() => {}
            _ = tokio::time::sleep(waited) => {}
            _ = shutdown.changed() => break,
        }
    }
}

/// Delivers every pending answer; on a Telegram failure returns how long to wait.
async fn deliver_pending(bot: &BotRuntime) -> Result<(), Option<Duration>> {
    let pending = match bot.ctx.store.undelivered(&bot.config.id) {
        Ok(p) => p,
        Err(e) => {
            tracing::error!(error = %e, "cannot read the outbox");
            return Err(None);
        }
    };
    for task in pending {
        match deliver(bot, &task).await {
            Ok(()) => {
                bot.progress_messages.remove(task.id);
                // Not awaited: the outbox stops listing it at once, and the mark
                // shares the commit of the store's next write (a failed commit
                // is logged by the writer, and the answer is listed again).
                bot.ctx.store.mark_delivered(task.id).detach();
                // What the agent left in the outbox follows its answer.
                super::files::send_outbox(bot, task.id, task.chat_id).await;
            }
            Err(SendError::Refused(why)) => {
                // Telegram will never take it (chat gone, bot blocked): drop it loudly.
                tracing::warn!(task_id = task.id, reason = %why, "answer refused by Telegram; giving up on it");
                let _ = bot
                    .ctx
                    .store
                    .append_event(
                        "delivery_refused",
                        Some(&bot.config.id),
                        serde_json::json!({"task_id": task.id, "reason": why}),
                        now_ms(),
                    )
                    .await;
                bot.progress_messages.remove(task.id);
                bot.ctx.store.mark_delivered(task.id).detach();
            }
            Err(SendError::CircuitOpen(wait) | SendError::RetryAfter(wait)) => {
                return Err(Some(wait));
            }
            Err(e) => {
                tracing::warn!(error = %e, task_id = task.id, "cannot deliver an answer yet; will retry");
                return Err(None);
            }
        }
    }
    Ok(())
}

/// The text a user sees for a finished task (Markdown, rendered later).
pub(crate) fn answer_markdown(task: &Task) -> String {
    match task.status {
        TaskStatus::Succeeded => {
            let text = task.result.as_deref().unwrap_or("").trim();
            if text.is_empty() {
                "(The agent finished without saying anything.)".into()
            } else {
                text.to_string()
            }
        }
        TaskStatus::Cancelled => format!("🚫 Task #{} was cancelled.", task.id),
        _ => {
            let class = task.error_class.map_or("error", |c| c.as_str());
            let error = task.error.as_deref().unwrap_or("no details");
            let attempts = if task.attempts > 1 {
                format!(" after {} attempts", task.attempts)
            } else {
                String::new()
            };
            format!(
                "❌ Task #{} failed{attempts} ({class}): {error}\n\nSend /retry {} to run it again.",
                task.id, task.id
            )
        }
    }
}

async fn deliver(bot: &BotRuntime, task: &Task) -> Result<(), SendError> {
    let store = &bot.ctx.store;
    let earlier_attempt = match store.begin_delivery(task.id, now_ms()).await {
        Ok(previous) => previous,
        Err(e) => {
            tracing::error!(error = %e, task_id = task.id, "cannot record the delivery attempt");
            return Err(SendError::Unavailable("storage".into()));
        }
    };
    let mut markdown = answer_markdown(task);
    if earlier_attempt.is_some() {
        // A crash interrupted an earlier delivery: the user may already have it.
        markdown.push_str(REPEAT_NOTE);
        let _ = store
            .append_event(
                "delivery_repeated",
                Some(&bot.config.id),
                serde_json::json!({"task_id": task.id}),
                now_ms(),
            )
            .await;
    }
    show_final_steps(bot, task).await;
    let sent = send_answer(bot, task, &markdown).await;
    if sent.is_err() {
        let _ = store.delivery_failed(task.id).await;
    }
    sent
}

/// Appended to an answer sent again after a crash interrupted its delivery.
pub(crate) const REPEAT_NOTE: &str =
    "\n\n(Sent again after a restart interrupted its delivery — you may have this answer already.)";

async fn send_answer(bot: &BotRuntime, task: &Task, markdown: &str) -> Result<(), SendError> {
    let rendered = render::render_answer(markdown, TELEGRAM_MESSAGE_LIMIT, MAX_PARTS);
    let mut reply_to = task.reply_to_message_id;
    for part in &rendered.parts {
        bot.api
            .send_html(task.chat_id, &part.html, &part.plain, reply_to)
            .await?;
        reply_to = None;
    }
    if let Some((name, content)) = &rendered.overflow_document {
        let caption = format!("Full answer of task #{}", task.id);
        bot.api
            .send_document(task.chat_id, name, content, &caption, None)
            .await?;
    }
    let progress = task
        .progress_message_id
        .or_else(|| bot.progress_messages.get(task.id));
    if let Some(progress) = progress
        && let Err(e) = bot.api.delete(task.chat_id, progress).await
    {
        tracing::debug!(error = %e, "cannot delete the progress message");
    }
    Ok(())
}

/// Shows a finished task's steps in its progress message if the last ones were
/// not shown yet, just before the answer replaces it.
async fn show_final_steps(bot: &BotRuntime, task: &Task) {
    let Some(message_id) = task.progress_message_id else {
        return;
    };
    let shown = edit_book().take_shown(task.id);
    let steps = match bot.ctx.store.task_steps(task.id) {
        Ok(steps) => steps,
        Err(e) => {
            tracing::debug!(error = %e, "cannot read the task's steps");
            return;
        }
    };
    let total = u64::from(steps.earlier) + steps.steps.len() as u64;
    if total == 0 || total <= shown {
        return;
    }
    let summaries: Vec<String> = steps.steps.into_iter().map(|s| s.summary).collect();
    let header = final_header(task, total);
    let html = render_progress(
        &ProgressView {
            header: &header,
            earlier: steps.earlier,
            steps: &summaries,
            text: None,
        },
        TELEGRAM_MESSAGE_LIMIT,
    );
    let wait = edit_book().reserve(&bot.config.id, task.chat_id, Instant::now());
    if !wait.is_zero() {
        tokio::time::sleep(wait).await;
    }
    if let Err(e) = bot.api.edit_html(task.chat_id, message_id, &html).await {
        tracing::debug!(error = %e, "cannot show the task's last steps");
    }
}

/// The first line of a finished task's last progress state.
fn final_header(task: &Task, steps: u64) -> String {
    let seconds = task
        .finished_ms
        .zip(task.started_ms)
        .map_or(0, |(end, start)| end.saturating_sub(start) / 1000);
    let plural = if steps == 1 { "" } else { "s" };
    format!("🏁 Task #{}: {steps} step{plural} in {seconds} s", task.id)
}

/// When each chat's progress message was last edited and how many steps each
/// task's message shows, shared by the progress updater and the outbox so the
/// per-chat pace holds for both. A std Mutex: held for a map operation only.
#[derive(Default)]
struct EditBook {
    inner: std::sync::Mutex<EditBookInner>,
}

#[derive(Default)]
struct EditBookInner {
    last_edit: HashMap<(String, i64), Instant>,
    shown_steps: HashMap<u64, u64>,
}

impl EditBook {
    fn lock(&self) -> std::sync::MutexGuard<'_, EditBookInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How long until the chat may be edited again (zero: now).
    fn wait_for(&self, bot_id: &str, chat_id: i64, now: Instant) -> Duration {
        let book = self.lock();
        book.last_edit
            .get(&(bot_id.to_owned(), chat_id))
            .map_or(Duration::ZERO, |last| {
                (*last + CHAT_EDIT_EVERY).saturating_duration_since(now)
            })
    }

    /// Books the chat's next edit slot; returns how long to wait for it.
    fn reserve(&self, bot_id: &str, chat_id: i64, now: Instant) -> Duration {
        let mut book = self.lock();
        let slot = book
            .last_edit
            .get(&(bot_id.to_owned(), chat_id))
            .map_or(now, |last| (*last + CHAT_EDIT_EVERY).max(now));
        book.last_edit.insert((bot_id.to_owned(), chat_id), slot);
        if book.last_edit.len() > 10_000 {
            book.last_edit
                .retain(|_, at| now.saturating_duration_since(*at) < CHAT_EDIT_EVERY);
        }
        slot.saturating_duration_since(now)
    }

    fn set_shown(&self, task_id: u64, steps: u64) {
        self.lock().shown_steps.insert(task_id, steps);
    }

    fn take_shown(&self, task_id: u64) -> u64 {
        self.lock().shown_steps.remove(&task_id).unwrap_or(0)
    }
}

fn edit_book() -> &'static EditBook {
    static BOOK: std::sync::OnceLock<EditBook> = std::sync::OnceLock::new();
    BOOK.get_or_init(EditBook::default)
}

/// Keeps each running task's progress message and typing action current, and
/// tells the chat at once when an attempt failed and another one is coming.
#[tracing::instrument(skip_all, fields(bot_id = %bot.config.id))]
pub(super) async fn run_progress(bot: Arc<BotRuntime>) {
    let mut shutdown = bot.ctx.shutdown.subscribe();
    let retried = &bot.retried;
    let mut shown: HashMap<u64, Shown> = HashMap::new();
    let mut live_changes = bot.ctx.pool.subscribe_progress();
    // The next time a paced progress edit is due, if one waits.
    let mut paced: Option<Instant> = None;
    // Tasks waiting for their next attempt, shown until it starts.
    let mut retrying: Vec<u64> = Vec::new();
    let mut paused_until: Option<Instant> = None;
    // A retry can come before the handler sent the "Queued" message; the updater
    // then looks again when that message arrives, not a tick later.
    let mut awaiting_message = false;
    loop {
        // Wake for the chat's pace when a paced edit waits, else at the tick.
        let tick = paced.map_or(PROGRESS_TICK, |due| {
            PROGRESS_TICK.min(due.saturating_duration_since(Instant::now()))
        });
        tokio::select! {
            _ = tokio::time::sleep(tick) => {}
            _ = retried.wake.notified() => {}
            _ = bot.progress_messages.wake.notified(), if awaiting_message => {}
            // A task's agent did something (or we fell behind: look at all).
            changed = live_changes.recv() => {
                if let Err(tokio::sync::broadcast::error::RecvError::Closed) = changed {
                    // The pool is gone: the service is stopping.
                    break;
                }
            }
            _ = shutdown.changed() => break,
        }
        paced = None;
        for id in retried.take() {
            if !retrying.contains(&id) {
                retrying.push(id);
            }
        }
        if paused_until.is_some_and(|t| Instant::now() < t) {
            continue;
        }
        let mut tasks: Vec<Task> = bot
            .ctx
            .store
            .tasks_in_status(TaskStatus::Running)
            .unwrap_or_default()
            .into_iter()
            .filter(|t| t.bot_id == bot.config.id)
            .collect();
        retrying.retain(|id| !tasks.iter().any(|t| t.id == *id));
        tasks
            .iter_mut()
            .for_each(|task| bot.progress_messages.fill(task));
        retrying.retain(|id| match bot.ctx.store.get_task(*id) {
            Ok(Some(mut task))
                if matches!(task.status, TaskStatus::Queued | TaskStatus::Interrupted) =>
            {
                bot.progress_messages.fill(&mut task);
                tasks.push(task);
                true
            }
            _ => false,
        });
        awaiting_message = tasks
            .iter()
            .any(|t| t.status != TaskStatus::Running && t.progress_message_id.is_none());
        shown.retain(|id, _| tasks.iter().any(|t| t.id == *id));
        for task in tasks {
            match update_progress(&bot, &task, shown.entry(task.id).or_default()).await {
                Ok(Some(due)) => paced = Some(paced.map_or(due, |p| p.min(due))),
                Ok(None) => {}
                Err(wait) => {
                    paused_until = Some(Instant::now() + wait);
                    break;
                }
            }
        }
    }
}

#[derive(Default)]
struct Shown {
    edited: Option<Instant>,
    typing: Option<Instant>,
    /// The phase last shown: running or waiting, and the attempt.
    phase: Option<(bool, u32)>,
    /// The version of the agent's live progress last shown.
    live_version: u64,
    /// A hash of the text last sent, to skip an edit that would change nothing.
    fingerprint: Option<u64>,
}

/// A hash of a progress message's text.
fn fingerprint(text: &str) -> u64 {
    use std::hash::{Hash as _, Hasher as _};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    text.hash(&mut hasher);
    hasher.finish()
}

/// One progress step for a task; `Err(wait)` when Telegram asked us to slow down,
/// `Ok(Some(due))` when news waits for the chat's pace until `due`.
/// A new phase (an attempt failed, the next one started) is shown at once, the
/// agent's new steps as soon as the chat's pace allows, the running time at most
/// every [`EDIT_EVERY`].
async fn update_progress(
    bot: &BotRuntime,
    task: &Task,
    shown: &mut Shown,
) -> Result<Option<Instant>, Duration> {
    let now = Instant::now();
    let running = task.status == TaskStatus::Running;
    let paced = edit_progress(bot, task, shown, now).await?;
    if running
        && typing_due(task, now_ms())
        && shown
            .typing
            .is_none_or(|t| now.duration_since(t) >= TYPING_EVERY)
    {
        shown.typing = Some(now);
        if let Err(SendError::RetryAfter(wait)) = bot.api.typing(task.chat_id).await {
            return Err(wait);
        }
    }
    Ok(paced)
}

/// Whether a running task has run long enough for a typing action: a turn
/// answered within [`TYPING_AFTER`] shows its answer before the action would.
fn typing_due(task: &Task, now_ms: u64) -> bool {
    task.started_ms
        .is_none_or(|started| now_ms.saturating_sub(started) >= TYPING_AFTER.as_millis() as u64)
}

/// The edit half of [`update_progress`]: the progress message, when it shows
/// something new and the chat's pace allows.
async fn edit_progress(
    bot: &BotRuntime,
    task: &Task,
    shown: &mut Shown,
    now: Instant,
) -> Result<Option<Instant>, Duration> {
    let running = task.status == TaskStatus::Running;
    let Some(message_id) = task.progress_message_id else {
        return Ok(None);
    };
    let live = if running {
        bot.ctx.pool.progress(task.id)
    } else {
        None
    };
    let phase = (running, task.attempts);
    let news = live
        .as_ref()
        .is_some_and(|live| live.version != shown.live_version);
    if shown.phase == Some(phase)
        && !news
        && shown
            .edited
            .is_some_and(|t| now.duration_since(t) < EDIT_EVERY)
    {
        return Ok(None);
    }
    let book = edit_book();
    let wait = book.wait_for(&bot.config.id, task.chat_id, now);
    if !wait.is_zero() {
        return Ok(Some(now + wait));
    }
    let header = progress_text(task, now_ms());
    let html = live.as_ref().map(|live| {
        render_progress(
            &ProgressView {
                header: &header,
                earlier: live.earlier,
                steps: &live.steps,
                text: live.text.as_deref(),
            },
            TELEGRAM_MESSAGE_LIMIT,
        )
    });
    shown.phase = Some(phase);
    if let Some(live) = &live {
        shown.live_version = live.version;
    }
    let fingerprint = fingerprint(html.as_deref().unwrap_or(&header));
    if shown.fingerprint == Some(fingerprint) {
        // The message already reads exactly so: an edit would change nothing.
        shown.edited = Some(now);
        return Ok(None);
    }
    book.reserve(&bot.config.id, task.chat_id, now);
    shown.edited = Some(now);
    shown.fingerprint = Some(fingerprint);
    let sent = match (&live, &html) {
        (Some(live), Some(html)) => {
            book.set_shown(task.id, u64::from(live.earlier) + live.steps.len() as u64);
            bot.api.edit_html(task.chat_id, message_id, html).await
        }
        _ => bot.api.edit_text(task.chat_id, message_id, &header).await,
    };
    match sent {
        Err(SendError::RetryAfter(wait)) => Err(wait),
        _ => Ok(None),
    }
}

/// Longest failure text quoted in a progress message, in characters.
const PROGRESS_ERROR_CHARS: usize = 200;

/// The progress message of a running task, or of one waiting for its next
/// attempt: which attempt of how many, and why the previous one failed.
fn progress_text(task: &Task, now_ms: u64) -> String {
    let failure = || {
        let class = task.error_class.map_or("failed", |c| c.as_str());
        let error: String = task
            .error
            .as_deref()
            .unwrap_or("no details")
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        let error = if error.chars().count() > PROGRESS_ERROR_CHARS {
            let cut: String = error.chars().take(PROGRESS_ERROR_CHARS - 1).collect();
            format!("{cut}…")
        } else {
            error
        };
        format!("{class}: {error}")
    };
    if task.status == TaskStatus::Running {
        let elapsed_s = now_ms.saturating_sub(task.started_ms.unwrap_or(now_ms)) / 1000;
        if task.attempts <= 1 {
            return format!("⚙️ Running task #{}… {elapsed_s} s", task.id);
        }
        return format!(
            "⚙️ Running task #{}, attempt {} of {}… {elapsed_s} s\nAttempt {} failed ({})",
            task.id,
            task.attempts,
            task.max_attempts,
            task.attempts - 1,
            failure()
        );
    }
    let wait_s = task.enqueued_ms.saturating_sub(now_ms).div_ceil(1000);
    let when = if wait_s == 0 {
        "now".to_string()
    } else {
        format!("in {wait_s} s")
    };
    format!(
        "🔁 Task #{}: attempt {} of {} failed ({}). Trying again {when}, attempt {} of {}.",
        task.id,
        task.attempts,
        task.max_attempts,
        failure(),
        task.attempts + 1,
        task.max_attempts
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::FailureClass;

    fn failed_once(status: TaskStatus) -> Task {
        use crate::storage::{TaskKind, TaskSource};
        Task {
            id: 7,
            bot_id: "B".into(),
            user_id: 1,
            chat_id: 1,
            kind: TaskKind::Chat,
            source: TaskSource::Telegram,
            prompt: "fail".into(),
            priority: 5,
            status,
            attempts: 1,
            max_attempts: 3,
            created_ms: 1_000,
            enqueued_ms: 1_000,
            started_ms: Some(1_000),
            finished_ms: None,
            pid: None,
            pid_start_time: None,
            exit_code: None,
            result: None,
            error_class: Some(FailureClass::AgentError),
            error: Some("the agent exited with code 1:\nboom".into()),
            cost_usd: 0.0,
            input_tokens: 0,
            output_tokens: 0,
            session_id: None,
            reply_to_message_id: None,
            update_id: None,
            progress_message_id: Some(3),
            delivery_started_ms: None,
            retry_of: None,
            extra: None,
        }
    }

    #[test]
    fn a_retry_says_which_attempt_failed_why_and_what_comes_next() {
        let mut task = failed_once(TaskStatus::Queued);
        task.enqueued_ms = 11_000;
        assert_eq!(
            progress_text(&task, 10_000),
            "🔁 Task #7: attempt 1 of 3 failed (agent_error: the agent exited with code 1: boom). \
             Trying again in 1 s, attempt 2 of 3."
        );
        task.status = TaskStatus::Running;
        task.attempts = 2;
        task.started_ms = Some(11_000);
        assert_eq!(
            progress_text(&task, 14_500),
            "⚙️ Running task #7, attempt 2 of 3… 3 s\nAttempt 1 failed (agent_error: the agent exited with code 1: boom)"
        );
        task.attempts = 1;
        assert_eq!(progress_text(&task, 14_500), "⚙️ Running task #7… 3 s");
    }

    #[test]
    fn a_typing_action_waits_for_the_task_first_second() {
        let mut task = failed_once(TaskStatus::Running);
        task.started_ms = Some(10_000);
        assert!(!typing_due(&task, 10_000));
        assert!(!typing_due(&task, 10_999));
        assert!(typing_due(&task, 11_000));
        task.started_ms = None;
        assert!(typing_due(&task, 0));
    }

    #[test]
    fn the_same_progress_text_has_the_same_fingerprint() {
        let a = fingerprint("⚙️ Running task #7… 3 s\n💬 <i>hi</i>");
        assert_eq!(a, fingerprint("⚙️ Running task #7… 3 s\n💬 <i>hi</i>"));
        assert_ne!(a, fingerprint("⚙️ Running task #7… 4 s\n💬 <i>hi</i>"));
    }

    #[test]
    fn a_failure_after_retries_says_how_many_attempts_it_had() {
        let mut task = failed_once(TaskStatus::Failed);
        task.attempts = 3;
        assert!(
            answer_markdown(&task)
                .starts_with("❌ Task #7 failed after 3 attempts (agent_error): "),
            "{}",
            answer_markdown(&task)
        );
        task.attempts = 1;
        assert!(answer_markdown(&task).starts_with("❌ Task #7 failed (agent_error): "));
    }
}
