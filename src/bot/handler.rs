//! One incoming message: who sent it, what it asks, and the answer.
//!
//! Deny by default: a user the intake does not authorise (not in `allowed_users`
//! nor `admins`) gets one polite refusal and an event; nothing of theirs reaches
//! the agent. A prompt goes through the intake (rate limit, budget, disk, stored
//! durably, pool woken) and only then is acknowledged; each refusal is worded
//! here for the chat. A message carrying a file is fetched first
//! ([`super::inbox`]), then submitted the same way; `/file` is served by
//! [`super::files`]. Control commands are answered at once: they never wait for
//! the user's running prompt.

use std::sync::Arc;

use teloxide::types::Message;

use super::BotRuntime;
use super::commands::{self, Command};
use crate::breaker::Dependency;
use crate::budget::Exceeded;
use crate::intake::{Authorised, BudgetWarning, Door, Prompt, Refusal};
use crate::storage::{MAX_PROMPT_BYTES, StoreError, now_ms};

/// Who sent a message, once authorised.
#[derive(Debug, Clone, Copy)]
pub(super) struct Sender {
    pub user_id: i64,
    pub chat_id: i64,
    pub message_id: i32,
    pub is_admin: bool,
    /// The intake's proof of it.
    pub authorised: Authorised,
}

pub(super) async fn handle_message(bot: &Arc<BotRuntime>, update_id: i64, message: Message) {
    let Some(sender) = authorise(bot, &message).await else {
        return;
    };
    if super::inbox::has_file(&message) {
        super::inbox::submit_files(bot, sender, update_id, std::slice::from_ref(&message)).await;
        return;
    }
    let Some(text) = message.text() else {
        let what = describe_non_text(&message);
        bot.reply(
            sender,
            &format!(
                "Sorry, I only understand text messages, photos, files, audio and voice messages ({what} is not supported yet)."
            ),
        )
        .await;
        return;
    };
    let username = bot.link.username();
    match commands::parse(text, username.as_deref()) {
        Command::Prompt(prompt) => {
            let project = super::projects::current(bot, sender).await;
            submit_prompt(bot, sender, update_id, prompt, project.name).await;
        }
        Command::ForAnotherBot => {}
        Command::File(path) => {
            let project = super::projects::current(bot, sender).await;
            super::files::send_project_file(bot, sender, &project.workdir, &path).await
        }
        Command::Project(name) => super::projects::project_command(bot, sender, name).await,
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

/// An album (messages sharing a `media_group_id`, in order): one prompt with
/// all its files, answered as a reply to the first message.
pub(super) async fn handle_album(bot: &Arc<BotRuntime>, update_id: i64, messages: Vec<Message>) {
    let Some(first) = messages.first() else {
        return;
    };
    let Some(sender) = authorise(bot, first).await else {
        return;
    };
    super::inbox::submit_files(bot, sender, update_id, &messages).await;
}

async fn authorise(bot: &Arc<BotRuntime>, message: &Message) -> Option<Sender> {
    let from = message.from.as_ref()?;
    if from.is_bot {
        return None;
    }
    let user_id = from.id.0 as i64;
    let chat_id = message.chat.id.0;
    if let Some(authorised) = bot.ctx.intake.authorise(&bot.config.id, user_id) {
        return Some(Sender {
            user_id,
            chat_id,
            message_id: message.id.0,
            is_admin: authorised.is_admin(),
            authorised,
        });
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
        bot.reply_to(
            chat_id,
            message.id.0,
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

/// Photos, documents, audio and voice never get here (see [`super::inbox`]).
fn describe_non_text(message: &Message) -> &'static str {
    if message.sticker().is_some() {
        "a sticker"
    } else if message.video().is_some() {
        "a video"
    } else {
        "this kind of message"
    }
}

/// Submits a prompt through the intake and acknowledges it; whether it is
/// stored (accepted now, or found stored by an earlier delivery).
pub(super) async fn submit_prompt(
    bot: &Arc<BotRuntime>,
    sender: Sender,
    update_id: i64,
    prompt: String,
    project: String,
) -> bool {
    let prompt = Prompt {
        bot_id: bot.config.id.clone(),
        text: prompt,
        project: Some(project),
        door: Door::Telegram {
            sender: sender.authorised,
            chat_id: sender.chat_id,
            message_id: sender.message_id,
            update_id,
        },
    };
    let accepted = match bot.ctx.intake.submit(prompt).await {
        Ok(accepted) => accepted,
        Err(refusal) => {
            if let Refusal::Store(e) = &refusal {
                tracing::error!(error = %e, "cannot store a prompt");
            }
            bot.reply(sender, &refusal_text(&refusal)).await;
            return false;
        }
    };
    if accepted.duplicate {
        tracing::info!(
            task_id = accepted.task.id,
            "update already stored; not acknowledged twice"
        );
        return true;
    }
    if let Some(warning) = accepted.budget_warning {
        bot.reply(sender, &budget_warning_text(&warning)).await;
    }
    let task = accepted.task;
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
            bot.progress_messages.insert(task.id, message_id);
            // Relaxed bookkeeping (see Store::set_progress_message): the progress
            // updater has the id already; the store keeps it for the next process.
            bot.ctx
                .store
                .set_progress_message(task.id, Some(message_id))
                .detach();
        }
        Err(e) => {
            tracing::warn!(error = %e, task_id = task.id, "cannot acknowledge the prompt; it is stored and will run")
        }
    }
    true
}

/// What the chat is told when the intake refused a prompt.
fn refusal_text(refusal: &Refusal) -> String {
    match refusal {
        Refusal::Empty => "That message is empty: there is nothing to send to the agent.".into(),
        Refusal::RateLimited(limited) => {
            let window = if limited.per_hour { "hour" } else { "minute" };
            let secs = limited.retry_after.as_secs().max(1);
            format!(
                "Slow down: you reached the limit of prompts per {window}. Try again in {secs} s."
            )
        }
        Refusal::Budget(Exceeded::Daily { spent, limit }) => format!(
            "The daily budget is spent: ${spent:.2} of ${limit:.2} today. Your prompt was not queued; try again tomorrow (UTC)."
        ),
        Refusal::Budget(Exceeded::Monthly { spent, limit }) => format!(
            "The monthly budget is spent: ${spent:.2} of ${limit:.2} this month. Your prompt was not queued."
        ),
        Refusal::DiskFull(full) => {
            format!("Your prompt was NOT queued: {full}. Please try again later.")
        }
        Refusal::TooLong { bytes } => format!(
            "I could not take that prompt: prompt is {bytes} bytes; at most {MAX_PROMPT_BYTES} are accepted."
        ),
        Refusal::Store(e) => storage_refusal(e),
        Refusal::UnknownBot(bot_id) => {
            format!("Your prompt was NOT queued: bot `{bot_id}` is not configured.")
        }
        Refusal::UnknownProject { project, known, .. } => format!(
            "Your prompt was NOT queued: there is no project `{project}` (projects: {}). Switch with /project.",
            known.join(", ")
        ),
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

/// The once-a-day notice that a budget is nearly spent.
fn budget_warning_text(warning: &BudgetWarning) -> String {
    format!(
        "Heads up: ${:.2} of the ${:.2} daily budget and ${:.2} of the ${:.2} monthly budget are spent.",
        warning.spend.today, warning.daily_limit, warning.spend.month, warning.monthly_limit
    )
}

impl BotRuntime {
    /// Sends a plain-text reply; failures are logged (the reply is not critical).
    pub(super) async fn reply(&self, sender: Sender, text: &str) {
        self.reply_to(sender.chat_id, sender.message_id, text).await;
    }

    /// Sends a plain-text reply to `message_id` in `chat_id`; failures are logged.
    async fn reply_to(&self, chat_id: i64, message_id: i32, text: &str) {
        if let Err(e) = self.api.send_plain(chat_id, text, Some(message_id)).await {
            tracing::warn!(error = %e, chat_id, "cannot send a reply");
        }
    }
}
