//! Long polling of one bot.
//!
//! Invariants: pending updates are never dropped (no `drop_pending_updates`, the
//! first poll asks for every unconfirmed update); an update is confirmed — by the
//! next poll's offset — only after the whole batch was handled, i.e. every prompt
//! in it is a stored task; updates of different chats are handled concurrently,
//! a chat's updates in order (consecutive messages of one album together, as
//! one prompt). A 409 Conflict is recorded once per episode (event,
//! health), then polled with backoff, never logged in a tight loop.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use teloxide::types::{Update, UpdateKind};
use tokio::task::JoinSet;

use super::BotRuntime;
use super::commands::bot_commands;
use super::telegram::SendError;
use crate::storage::now_ms;

/// Long-poll timeout, seconds.
const POLL_TIMEOUT_S: u32 = 10;
/// Longest backoff between failed polls.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Polls until shutdown.
#[tracing::instrument(skip_all, fields(bot_id = %bot.config.id))]
pub(super) async fn run(bot: Arc<BotRuntime>) {
    let mut shutdown = bot.ctx.shutdown.subscribe();
    tokio::select! {
        _ = setup(&bot) => {}
        _ = shutdown.changed() => return,
    }
    let mut offset: i32 = 0;
    let mut confirmed: i32 = 0;
    let mut failures: u32 = 0;
    loop {
        if *shutdown.borrow() {
            break;
        }
        let polled = tokio::select! {
            r = bot.api.get_updates(offset, POLL_TIMEOUT_S) => r,
            _ = shutdown.changed() => break,
        };
        match polled {
            Ok(updates) => {
                confirmed = offset;
                failures = 0;
                bot.link.poll_ok(now_ms());
                if let Some(last) = updates.iter().map(|u| u.id.0).max() {
                    // Handled to the end even if shutdown starts meanwhile: what was
                    // taken is stored before we stop; the offset is confirmed next poll.
                    handle_batch(&bot, updates).await;
                    offset = (last as i32).saturating_add(1);
                }
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                let wait = on_poll_error(&bot, &e, failures).await;
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = shutdown.changed() => break,
                }
            }
        }
    }
    if offset != confirmed {
        confirm(&bot, offset).await;
    }
    tracing::info!("polling stopped");
}

/// Confirms handled updates before exiting (a zero-timeout poll with the new
/// offset), so a command like /restart is not delivered again to the next process.
/// Prompts would be de-duplicated by the store anyway; this spares the re-delivery.
async fn confirm(bot: &BotRuntime, offset: i32) {
    let confirmed =
        tokio::time::timeout(Duration::from_secs(3), bot.api.get_updates(offset, 0)).await;
    match confirmed {
        Ok(Ok(_)) => tracing::debug!(offset, "handled updates confirmed"),
        _ => tracing::warn!(
            offset,
            "could not confirm handled updates; they will be re-delivered and de-duplicated"
        ),
    }
}

/// getMe, deleteWebhook (keeping pending updates), setMyCommands; retried until
/// Telegram answers, without holding up anything else.
async fn setup(bot: &BotRuntime) {
    let mut wait = Duration::from_millis(200);
    loop {
        match bot.api.username().await {
            Ok(name) => {
                *bot.link.username.lock().unwrap_or_else(|p| p.into_inner()) = Some(name);
                break;
            }
            Err(e) => {
                bot.link.poll_failed(e.to_string());
                tracing::warn!(error = %e, "getMe failed; retrying");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(MAX_BACKOFF);
            }
        }
    }
    if let Err(e) = bot.api.delete_webhook().await {
        tracing::warn!(error = %e, "deleteWebhook failed");
    }
    let commands = bot_commands(!bot.config.agent.model_choices().is_empty())
        .into_iter()
        .map(|(name, description)| teloxide::types::BotCommand::new(name, description))
        .collect();
    if let Err(e) = bot.api.set_commands(commands).await {
        tracing::warn!(error = %e, "setMyCommands failed");
    }
}

async fn on_poll_error(bot: &BotRuntime, error: &SendError, failures: u32) -> Duration {
    let backoff = Duration::from_millis(250u64 << failures.min(7)).min(MAX_BACKOFF);
    match error {
        SendError::Conflict => {
            bot.link.conflicts.fetch_add(1, Ordering::Relaxed);
            let first_of_episode = !bot.link.in_conflict.swap(true, Ordering::Relaxed);
            bot.link.poll_failed(error.to_string());
            if first_of_episode {
                tracing::error!(
                    "409 conflict: another process is polling this bot's token; backing off"
                );
                let _ = bot
                    .ctx
                    .store
                    .append_event(
                        "telegram_conflict",
                        Some(&bot.config.id),
                        serde_json::json!({"message": "another process is polling this bot token (409 Conflict)"}),
                        now_ms(),
                    )
                    .await;
            }
            backoff.max(Duration::from_secs(2))
        }
        SendError::CircuitOpen(wait) | SendError::RetryAfter(wait) => *wait,
        other => {
            bot.link.poll_failed(other.to_string());
            if failures == 1 || failures.is_power_of_two() {
                tracing::warn!(error = %other, failures, "polling failed; backing off");
            }
            backoff
        }
    }
}

/// Handles a batch: chats concurrently, each chat's updates in order.
async fn handle_batch(bot: &Arc<BotRuntime>, updates: Vec<Update>) {
    let mut by_chat: BTreeMap<i64, Vec<Update>> = BTreeMap::new();
    for update in updates {
        let chat = update.chat().map_or(0, |c| c.id.0);
        by_chat.entry(chat).or_default().push(update);
    }
    bot.link.updates.fetch_add(
        by_chat.values().map(Vec::len).sum::<usize>() as u64,
        Ordering::Relaxed,
    );
    let mut chats = JoinSet::new();
    for (_, updates) in by_chat {
        let bot = bot.clone();
        // Boxed: handling an update is a large future, and spawning moves it
        // by value several times.
        chats.spawn(Box::pin(async move {
            let mut updates = updates.into_iter().peekable();
            while let Some(update) = updates.next() {
                let Some(group) = album_of(&update) else {
                    handle_update(&bot, update).await;
                    continue;
                };
                let mut album = vec![update];
                while let Some(next) = updates.next_if(|u| album_of(u).as_ref() == Some(&group)) {
                    album.push(next);
                }
                handle_album(&bot, album).await;
            }
        }));
    }
    while let Some(joined) = chats.join_next().await {
        if let Err(e) = joined {
            tracing::error!(error = %e, "an update handler failed");
        }
    }
}

/// The album a message belongs to (Telegram sends an album's photos as
/// consecutive messages sharing a `media_group_id`, usually in one batch).
fn album_of(update: &Update) -> Option<String> {
    match &update.kind {
        UpdateKind::Message(message) => message.media_group_id().map(|g| g.0.clone()),
        _ => None,
    }
}

/// An album's updates: one prompt for all of them.
async fn handle_album(bot: &Arc<BotRuntime>, mut album: Vec<Update>) {
    if album.len() == 1 {
        if let Some(update) = album.pop() {
            handle_update(bot, update).await;
        }
        return;
    }
    let update_id = album.first().map_or(0, |u| i64::from(u.id.0));
    let messages = album
        .into_iter()
        .filter_map(|u| match u.kind {
            UpdateKind::Message(message) => Some(message),
            _ => None,
        })
        .collect();
    super::handler::handle_album(bot, update_id, messages).await;
}

async fn handle_update(bot: &Arc<BotRuntime>, update: Update) {
    let update_id = i64::from(update.id.0);
    match update.kind {
        UpdateKind::Message(message) => {
            super::handler::handle_message(bot, update_id, message).await
        }
        UpdateKind::EditedMessage(message) => super::handler::handle_edited(bot, message).await,
        UpdateKind::CallbackQuery(query)
            if query
                .data
                .as_deref()
                .is_some_and(|d| d.starts_with(super::projects::CALLBACK_PREFIX)) =>
        {
            super::projects::handle_callback(bot, query).await
        }
        UpdateKind::CallbackQuery(query) if super::model::is_model_press(&query) => {
            super::model::handle_callback(bot, query).await
        }
        UpdateKind::CallbackQuery(query) => super::approval::handle_callback(bot, query).await,
        UpdateKind::ChannelPost(_) | UpdateKind::EditedChannelPost(_) => {
            tracing::debug!(update_id, "channel post ignored");
        }
        _ => tracing::debug!(update_id, "update kind not handled"),
    }
}
