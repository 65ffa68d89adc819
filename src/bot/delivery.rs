//! Getting answers to users: the outbox loop and the progress updater.
//!
//! Outbox invariant: a finished task's answer stays in the store's `outbox` until
//! Telegram accepted every part; then it is removed. A crash in between re-sends
//! the answer at the next start (at-least-once; such duplicates are counted by the
//! reliability suite). While Telegram (or its breaker) is down, answers wait in
//! the store and are delivered when it is back.
//!
//! Progress: one status message per task ("queued" → "running… 20 s"), edited in
//! place at most every [`EDIT_EVERY`], a typing action while the agent works, and
//! flood control (429) pauses all edits of the bot for the time Telegram asks.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::BotRuntime;
use super::render::{self, TELEGRAM_MESSAGE_LIMIT};
use super::telegram::SendError;
use crate::storage::{Task, TaskStatus, now_ms};

/// Minimum time between two edits of one progress message.
const EDIT_EVERY: Duration = Duration::from_secs(10);
/// How often the progress updater looks at running tasks.
const PROGRESS_TICK: Duration = Duration::from_secs(2);
/// Typing actions expire after about 5 s on the client.
const TYPING_EVERY: Duration = Duration::from_secs(5);
/// Messages per answer before the rest goes as a document.
const MAX_PARTS: usize = 4;
/// Longest wait between outbox retries while Telegram is failing.
const MAX_RETRY: Duration = Duration::from_secs(60);

/// Delivers finished tasks' answers until shutdown.
#[tracing::instrument(skip_all, fields(bot_id = %bot.config.id))]
pub(super) async fn run_outbox(bot: Arc<BotRuntime>) {
    let wake = bot.ctx.outbox_wake.get(&bot.config.id).cloned().unwrap_or_default();
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
                if let Err(e) = bot.ctx.store.mark_delivered(task.id).await {
                    tracing::error!(error = %e, task_id = task.id, "answer sent but not marked delivered");
                }
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
                let _ = bot.ctx.store.mark_delivered(task.id).await;
            }
            Err(SendError::CircuitOpen(wait) | SendError::RetryAfter(wait)) => return Err(Some(wait)),
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
            format!(
                "❌ Task #{} failed ({class}): {error}\n\nSend /retry {} to run it again.",
                task.id, task.id
            )
        }
    }
}

async fn deliver(bot: &BotRuntime, task: &Task) -> Result<(), SendError> {
    let markdown = answer_markdown(task);
    let rendered = render::render_answer(&markdown, TELEGRAM_MESSAGE_LIMIT, MAX_PARTS);
    let mut reply_to = task.reply_to_message_id;
    for part in &rendered.parts {
        bot.api.send_html(task.chat_id, &part.html, &part.plain, reply_to).await?;
        reply_to = None;
    }
    if let Some((name, content)) = &rendered.overflow_document {
        let caption = format!("Full answer of task #{}", task.id);
        bot.api.send_document(task.chat_id, name, content, &caption, None).await?;
    }
    if let Some(progress) = task.progress_message_id {
        if let Err(e) = bot.api.delete(task.chat_id, progress).await {
            tracing::debug!(error = %e, "cannot delete the progress message");
        }
    }
    Ok(())
}

/// Keeps each running task's progress message and typing action current.
#[tracing::instrument(skip_all, fields(bot_id = %bot.config.id))]
pub(super) async fn run_progress(bot: Arc<BotRuntime>) {
    let mut shutdown = bot.ctx.shutdown.subscribe();
    let mut shown: HashMap<u64, Shown> = HashMap::new();
    let mut paused_until: Option<Instant> = None;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(PROGRESS_TICK) => {}
            _ = shutdown.changed() => break,
        }
        if paused_until.is_some_and(|t| Instant::now() < t) {
            continue;
        }
        let running: Vec<Task> = bot
            .ctx
            .store
            .tasks_in_status(TaskStatus::Running)
            .unwrap_or_default()
            .into_iter()
            .filter(|t| t.bot_id == bot.config.id)
            .collect();
        shown.retain(|id, _| running.iter().any(|t| t.id == *id));
        for task in running {
            if let Err(wait) = update_progress(&bot, &task, shown.entry(task.id).or_default()).await {
                paused_until = Some(Instant::now() + wait);
                break;
            }
        }
    }
}

#[derive(Default)]
struct Shown {
    edited: Option<Instant>,
    typing: Option<Instant>,
}

/// One progress step for a task; `Err(wait)` when Telegram asked us to slow down.
async fn update_progress(bot: &BotRuntime, task: &Task, shown: &mut Shown) -> Result<(), Duration> {
    let now = Instant::now();
    if shown.typing.is_none_or(|t| now.duration_since(t) >= TYPING_EVERY) {
        shown.typing = Some(now);
        if let Err(SendError::RetryAfter(wait)) = bot.api.typing(task.chat_id).await {
            return Err(wait);
        }
    }
    let Some(message_id) = task.progress_message_id else {
        return Ok(());
    };
    if shown.edited.is_some_and(|t| now.duration_since(t) < EDIT_EVERY) {
        return Ok(());
    }
    shown.edited = Some(now);
    let elapsed_s = now_ms().saturating_sub(task.started_ms.unwrap_or_else(now_ms)) / 1000;
    let text = format!("⚙️ Running task #{}… {elapsed_s} s", task.id);
    match bot.api.edit_text(task.chat_id, message_id, &text).await {
        Err(SendError::RetryAfter(wait)) => Err(wait),
        _ => Ok(()),
    }
}
