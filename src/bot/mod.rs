//! The Telegram side: one runtime per configured bot, each with its own token,
//! Bot API URL and telegram circuit breaker.
//!
//! Per bot, three loops run: the [`poller`] (long polling; an update's offset is
//! confirmed only after the update was handled, so nothing is lost in a crash and
//! re-delivered updates are de-duplicated by the store), the outbox [`delivery`]
//! (finished tasks' answers, retried until Telegram takes them) and the progress
//! updater (typing action and one edited status message per running task).
//!
//! Invariant: a user hears "queued" only after the task is durable in the store.

mod approval;
pub mod commands;
mod delivery;
mod handler;
pub mod limits;
mod poller;
mod progress;
pub mod render;
mod replies;
pub mod telegram;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use tokio::task::JoinSet;

use crate::circuits::Dependency;
use crate::config::BotConfig;
use crate::service::{ServiceContext, TelegramLink};
use crate::storage::{RestartState, now_ms};
use limits::RateLimiter;
use telegram::TelegramApi;

/// Longest a restart may have taken for its notice to say "back after N s" without
/// a note; older (or future) restart states are reported as implausible.
const PLAUSIBLE_RESTART_MS: u64 = 24 * 3600 * 1000;

/// All bots of the service.
pub struct BotSet {
    bots: Vec<Arc<BotRuntime>>,
}

/// One bot and its in-memory state.
pub(crate) struct BotRuntime {
    ctx: Arc<ServiceContext>,
    config: BotConfig,
    api: TelegramApi,
    link: Arc<TelegramLink>,
    /// std Mutexes below: each held for a map operation only, never across an await.
    limiter: Mutex<RateLimiter>,
    denied_told: Mutex<HashSet<i64>>,
    budget_warned: Mutex<HashSet<(i64, u32)>>,
}

impl BotSet {
    /// Builds a runtime per configured bot; fails when a token is missing.
    pub fn connect(ctx: Arc<ServiceContext>) -> anyhow::Result<Self> {
        let mut bots = Vec::new();
        for config in &ctx.config.bots {
            let token = ctx.bot_tokens.get(&config.id).cloned().with_context(|| {
                format!(
                    "bot `{}`: the token variable ${} is not set",
                    config.id, config.token_env
                )
            })?;
            let breaker = ctx
                .circuits
                .get(&config.id, Dependency::Telegram)
                .cloned()
                .with_context(|| format!("no telegram breaker for bot `{}`", config.id))?;
            let api = TelegramApi::new(token, &config.api_url, breaker)
                .map_err(|e| anyhow::anyhow!("bot `{}`: {e}", config.id))?;
            let link = ctx.links.get(&config.id).cloned().unwrap_or_default();
            bots.push(Arc::new(BotRuntime {
                limiter: Mutex::new(RateLimiter::new(
                    ctx.config.limits.rate_per_minute,
                    ctx.config.limits.rate_per_hour,
                )),
                ctx: ctx.clone(),
                config: config.clone(),
                api,
                link,
                denied_told: Mutex::default(),
                budget_warned: Mutex::default(),
            }));
        }
        Ok(BotSet { bots })
    }

    /// Tells the chat that asked for a restart that the service is back.
    pub async fn send_restart_notices(&self) {
        let taken = match self.bots.first() {
            Some(bot) => bot.ctx.store.take_restart_state().await,
            None => return,
        };
        match taken {
            Ok(None) => {}
            Ok(Some(Ok(state))) => self.announce_restart(state).await,
            Ok(Some(Err(why))) => {
                if let Some(bot) = self.bots.first() {
                    bot.ctx.add_notice(format!(
                        "the recorded restart state was unreadable ({why}); no restart notice was sent"
                    ));
                }
            }
            Err(e) => tracing::error!(error = %e, "cannot read the restart state"),
        }
    }

    async fn announce_restart(&self, state: RestartState) {
        let now = now_ms();
        let bot = state
            .bot_id
            .as_ref()
            .and_then(|id| self.bots.iter().find(|b| &b.config.id == id))
            .or(self.bots.first());
        let Some(bot) = bot else { return };
        let text = restart_notice_text(&state, now);
        if !is_plausible_restart(&state, now) {
            bot.ctx.add_notice(format!(
                "restart state looked implausible (requested at {} ms, now {now} ms); reported, not discarded",
                state.requested_ms
            ));
        }
        let Some(chat) = state.chat_id else {
            tracing::info!(notice = %text, "restart notice (no chat recorded)");
            return;
        };
        let edited = match state.message_id {
            Some(message_id) => bot.api.edit_text(chat, message_id, &text).await.is_ok(),
            None => false,
        };
        if !edited && let Err(e) = bot.api.send_plain(chat, &text, None).await {
            tracing::warn!(error = %e, "cannot send the restart notice");
        }
        let _ = bot
            .ctx
            .store
            .append_event(
                "restart_notice",
                Some(&bot.config.id),
                serde_json::json!({"requested_ms": state.requested_ms, "text": text}),
                now,
            )
            .await;
    }

    /// Starts every bot's loops.
    pub fn start(self, tasks: &mut JoinSet<()>) {
        if let Some(bot) = self.bots.first() {
            let approvals = bot.ctx.pool.approvals().clone();
            tasks.spawn(async move { approvals.arm_pending().await });
        }
        for bot in self.bots {
            tasks.spawn(approval::run(bot.clone()));
            tasks.spawn(poller::run(bot.clone()));
            tasks.spawn(delivery::run_outbox(bot.clone()));
            tasks.spawn(delivery::run_progress(bot));
        }
    }
}

fn is_plausible_restart(state: &RestartState, now: u64) -> bool {
    state.requested_ms <= now + 60_000
        && now.saturating_sub(state.requested_ms) <= PLAUSIBLE_RESTART_MS
}

/// The text of the "back" notice; an implausible state is said so, never dropped.
pub fn restart_notice_text(state: &RestartState, now: u64) -> String {
    if state.requested_ms > now + 60_000 {
        return format!(
            "✅ Back. (The recorded restart time lies {} s in the future — the clock may have jumped; restart time unknown.)",
            (state.requested_ms - now) / 1000
        );
    }
    let age_s = (now - state.requested_ms.min(now)) / 1000;
    if age_s * 1000 > PLAUSIBLE_RESTART_MS {
        return format!(
            "✅ Back. (The restart was requested {} h ago — longer than a restart should take; the service was probably down in between.)",
            age_s / 3600
        );
    }
    format!("✅ Back after {age_s} s.")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(requested_ms: u64) -> RestartState {
        RestartState {
            requested_ms,
            bot_id: None,
            chat_id: None,
            message_id: None,
            reason: "test".into(),
        }
    }

    #[test]
    fn restart_notice_reports_the_real_duration() {
        let now = 1_760_504_164_000;
        assert_eq!(
            restart_notice_text(&state(1_760_504_154_000), now),
            "✅ Back after 10 s."
        );
    }

    #[test]
    fn implausible_restart_states_are_reported_not_dropped() {
        let now = 1_760_504_164_000;
        // The old bot's bug: seconds read as milliseconds look 55 years old.
        let old = restart_notice_text(&state(1_760_504_154), now);
        assert!(old.contains("h ago"), "{old}");
        let future = restart_notice_text(&state(now + 3_600_000), now);
        assert!(future.contains("future"), "{future}");
        assert!(!is_plausible_restart(&state(1_760_504_154), now));
    }
}
