//! One incoming message: who sent it, what it asks, and the answer.
//!
//! Deny by default: a user not in `allowed_users` (or `admins`) gets one polite
//! refusal and an event; nothing of theirs reaches the agent. A prompt passes the
//! rate limit and the budget, is stored as a task (durable), and only then is
//! acknowledged. Control commands are answered at once: they never wait for the
//! user's running prompt.

use std::sync::Arc;
use std::time::Instant;

use teloxide::types::Message;

use super::BotRuntime;
use super::commands::{self, Command};
use crate::breaker::Dependency;
use crate::storage::{NewTask, PRIORITY_NORMAL, StoreError, TaskKind, TaskSource, now_ms};

/// Share of a budget at which the user is warned (once a day).
const BUDGET_WARNING: f64 = 0.8;

/// Who sent a message, once authorised.
#[derive(Debug, Clone, Copy)]
pub(super) struct Sender {
    pub user_id: i64,
    pub chat_id: i64,
    pub message_id: i32,
    pub is_admin: bool,
}

pub(super) async fn handle_message(bot: &Arc<BotRuntime>, update_id: i64, message: Message) {
    let Some(sender) = authorise(bot, &message).await else {
        return;
    };
    let Some(text) = message.text() else {
        let what = describe_non_text(&message);
        bot.reply(
            sender,
            &format!(
                "Sorry, I only understand text messages for now ({what} is not supported yet)."
            ),
        )
        .await;
        return;
    };
    let username = bot.link.username();
    match commands::parse(text, username.as_deref()) {
        Command::Prompt(prompt) => submit_prompt(bot, sender, update_id, prompt).await,
        Command::ForAnotherBot => {}
        Command::Restart if already_restarted_for(bot, update_id) => {
            // A /restart re-delivered after the restart it asked for: never loop.
            tracing::info!(update_id, "stale /restart ignored");
            bot.reply(sender, "That /restart was already carried out.")
                .await;
        }
        Command::Restart if sender.is_admin => {
            if let Err(e) = bot
                .ctx
                .store
                .set_restart_update_floor(&bot.config.id, update_id, now_ms())
                .await
            {
                bot.reply(
                    sender,
                    &format!("Could not record the restart ({e}); not restarting."),
                )
                .await;
                return;
            }
            super::replies::answer_command(bot, sender, Command::Restart).await
        }
        command => super::replies::answer_command(bot, sender, command).await,
    }
}

/// Edits are not picked up as new prompts (the original already ran or is queued).
pub(super) async fn handle_edited(bot: &Arc<BotRuntime>, message: Message) {
    if let Some(sender) = authorise(bot, &message).await {
        bot.reply(
            sender,
            "I saw you edited a message. Edits are not sent to the agent; send the new text as a new message.",
        )
        .await;
    }
}

async fn authorise(bot: &Arc<BotRuntime>, message: &Message) -> Option<Sender> {
    let from = message.from.as_ref()?;
    if from.is_bot {
        return None;
    }
    let user_id = from.id.0 as i64;
    let chat_id = message.chat.id.0;
    let is_admin = bot.config.admins.contains(&user_id);
    let sender = Sender {
        user_id,
        chat_id,
        message_id: message.id.0,
        is_admin,
    };
    if is_admin || bot.config.allowed_users.contains(&user_id) {
        return Some(sender);
    }
    let first_time = bot
        .denied_told
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(user_id);
    tracing::info!(
        user_id,
        first_time,
        "message from a user who is not allowed"
    );
    if first_time {
        let _ = bot
            .ctx
            .store
            .append_event(
                "user_denied",
                Some(&bot.config.id),
                serde_json::json!({"user_id": user_id, "chat_id": chat_id}),
                now_ms(),
            )
            .await;
        bot.reply(
            sender,
            &format!(
                "Sorry, this bot is private and you are not on its list of users. \
                 If you should be, ask its owner to add your user id {user_id}."
            ),
        )
        .await;
    }
    None
}

/// How long a recorded `/restart` update id says "already done": Telegram may
/// start update ids afresh after a week without updates, or a new token may.
const RESTART_FLOOR_TTL_MS: u64 = 24 * 3_600_000;

/// Whether this `/restart` update was already acted on: its update id is at or
/// below the one recorded before a restart in the last day. Update ids, not
/// message dates: the local clock may be off or jump; Telegram's ids grow.
fn already_restarted_for(bot: &BotRuntime, update_id: i64) -> bool {
    match bot.ctx.store.restart_update_floor(&bot.config.id) {
        Ok(floor) => floor.is_some_and(|(id, at_ms)| {
            update_id <= id && now_ms().saturating_sub(at_ms) < RESTART_FLOOR_TTL_MS
        }),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the last /restart; acting on this one");
            false
        }
    }
}

fn describe_non_text(message: &Message) -> &'static str {
    if message.photo().is_some() {
        "a photo"
    } else if message.sticker().is_some() {
        "a sticker"
    } else if message.document().is_some() {
        "a file"
    } else if message.voice().is_some() || message.audio().is_some() {
        "audio"
    } else if message.video().is_some() {
        "a video"
    } else {
        "this kind of message"
    }
}

async fn submit_prompt(bot: &Arc<BotRuntime>, sender: Sender, update_id: i64, prompt: String) {
    if prompt.trim().is_empty() {
        bot.reply(
            sender,
            "That message is empty: there is nothing to send to the agent.",
        )
        .await;
        return;
    }
    let rate = bot.limiter.lock().unwrap_or_else(|p| p.into_inner()).check(
        &bot.config.id,
        sender.user_id,
        Instant::now(),
    );
    if let Err(limited) = rate {
        let window = if limited.per_hour { "hour" } else { "minute" };
        let secs = limited.retry_after.as_secs().max(1);
        bot.reply(
            sender,
            &format!(
                "Slow down: you reached the limit of prompts per {window}. Try again in {secs} s."
            ),
        )
        .await;
        return;
    }
    if let Some(refusal) = budget_check(bot, sender).await {
        bot.reply(sender, &refusal).await;
        return;
    }
    if let Err(full) = crate::backup::disk::admit_prompt(&bot.ctx.config, &bot.ctx.store) {
        bot.reply(
            sender,
            &format!("Your prompt was NOT queued: {full}. Please try again later."),
        )
        .await;
        return;
    }
    let new = NewTask {
        bot_id: bot.config.id.clone(),
        user_id: sender.user_id,
        chat_id: sender.chat_id,
        kind: TaskKind::Chat,
        source: TaskSource::Telegram,
        prompt,
        priority: PRIORITY_NORMAL,
        max_attempts: bot.ctx.config.limits.max_attempts,
        reply_to_message_id: Some(sender.message_id),
        update_id: Some(update_id),
    };
    let now = now_ms();
    let submitted = match bot.ctx.store.submit_prompt(new, now).await {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot store a prompt");
            bot.reply(sender, &storage_refusal(&e)).await;
            return;
        }
    };
    if submitted.duplicate {
        tracing::info!(
            task_id = submitted.task.id,
            "update already stored; not acknowledged twice"
        );
        return;
    }
    let task = submitted.task;
    bot.ctx.pool.notify();
    let ack = if bot
        .ctx
        .circuits
        .is_blocked(&bot.config.id, Dependency::Agent)
    {
        format!(
            "⏸ Queued as task #{}. The agent is unavailable right now (its circuit breaker is open); \
             your prompt stays queued and runs as soon as it recovers.",
            task.id
        )
    } else {
        format!("⏳ Queued as task #{}.", task.id)
    };
    match bot
        .api
        .send_plain(sender.chat_id, &ack, Some(sender.message_id))
        .await
    {
        Ok(message_id) => {
            // Relaxed bookkeeping (see Store::set_progress_message). Awaiting it
            // would order nothing: the task may be running or done already.
            bot.ctx
                .store
                .set_progress_message(task.id, Some(message_id))
                .detach();
        }
        Err(e) => {
            tracing::warn!(error = %e, task_id = task.id, "cannot acknowledge the prompt; it is stored and will run")
        }
    }
}

/// A user-facing sentence for a prompt the store would not take.
fn storage_refusal(e: &StoreError) -> String {
    match e {
        StoreError::Invalid(why) => format!("I could not take that prompt: {why}."),
        StoreError::Io(_) => "I could not save your prompt (the server's disk is full or read-only), \
             so it was NOT queued. Please try again later."
            .into(),
        _ => "I could not save your prompt because of a storage problem, so it was NOT queued. Please try again later."
            .into(),
    }
}

/// Refuses when a budget is spent; warns once a day at 80%.
async fn budget_check(bot: &Arc<BotRuntime>, sender: Sender) -> Option<String> {
    let limits = &bot.ctx.config.limits;
    let now = now_ms();
    let store = &bot.ctx.store;
    let today = store
        .cost_today(&bot.config.id, now)
        .map(|c| c.usd)
        .unwrap_or(0.0);
    let month = store
        .cost_month(&bot.config.id, now)
        .map(|c| c.usd)
        .unwrap_or(0.0);
    if today >= limits.daily_cost_usd {
        return Some(format!(
            "The daily budget is spent: ${today:.2} of ${:.2} today. Your prompt was not queued; try again tomorrow (UTC).",
            limits.daily_cost_usd
        ));
    }
    if month >= limits.monthly_cost_usd {
        return Some(format!(
            "The monthly budget is spent: ${month:.2} of ${:.2} this month. Your prompt was not queued.",
            limits.monthly_cost_usd
        ));
    }
    let near_day = limits.daily_cost_usd > 0.0 && today >= limits.daily_cost_usd * BUDGET_WARNING;
    let near_month =
        limits.monthly_cost_usd > 0.0 && month >= limits.monthly_cost_usd * BUDGET_WARNING;
    if near_day || near_month {
        let day = crate::storage::utc_day(now);
        let first = bot
            .budget_warned
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert((sender.user_id, day));
        if first {
            bot.reply(
                sender,
                &format!(
                    "Heads up: ${today:.2} of the ${:.2} daily budget and ${month:.2} of the ${:.2} monthly budget are spent.",
                    limits.daily_cost_usd, limits.monthly_cost_usd
                ),
            )
            .await;
        }
    }
    None
}

impl BotRuntime {
    /// Sends a plain-text reply; failures are logged (the reply is not critical).
    pub(super) async fn reply(&self, sender: Sender, text: &str) {
        if let Err(e) = self
            .api
            .send_plain(sender.chat_id, text, Some(sender.message_id))
            .await
        {
            tracing::warn!(error = %e, chat_id = sender.chat_id, "cannot send a reply");
        }
    }
}
