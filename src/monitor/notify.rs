//! Alert notifications: a message to every bot admin on Telegram and a JSON POST
//! to the webhook, when an alert fires, is reminded of, or resolves.
//!
//! Sent straight through the Bot API (`POST {api_url}/bot{token}/sendMessage`) so
//! the monitors do not depend on the bots' handlers. Invariants: each admin gets
//! one message per announcement even when several bots list them (through the first
//! bot that lists them); the token never appears in a log line or an error (every
//! error text is passed through `redact_token_in`); the webhook is tried
//! `webhook_attempts` times with doubling back-off on network errors, 429 and 5xx,
//! never on another 4xx.

use std::collections::BTreeSet;
use std::time::Duration;

use serde::Serialize;

use super::rules::Announcement;
use crate::bot::telegram::redact_token_in;
use crate::config::{Config, secret_from_env};
use crate::storage::Alert;

const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
const TELEGRAM_ATTEMPTS: u32 = 2;

/// One alert announcement.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Notice {
    /// What happened to the alert.
    pub announce: Announcement,
    /// The alert after the change.
    pub alert: Alert,
}

/// A bot that sends notices, with the admins it sends them to.
#[derive(Clone)]
pub struct TelegramTarget {
    /// Bot id (for logs).
    pub bot_id: String,
    /// Bot API base URL.
    pub api_url: String,
    /// The bot's token (never logged).
    pub token: String,
    /// Admin chats (private chat id = user id).
    pub chat_ids: Vec<i64>,
}

impl std::fmt::Debug for TelegramTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TelegramTarget")
            .field("bot_id", &self.bot_id)
            .field("api_url", &self.api_url)
            .field("chat_ids", &self.chat_ids)
            .finish_non_exhaustive()
    }
}

/// Where notices go.
#[derive(Debug, Clone, Default)]
pub struct Targets {
    /// Bots and their admins.
    pub telegram: Vec<TelegramTarget>,
    /// Webhook URL, if set.
    pub webhook_url: Option<String>,
    /// Webhook attempts.
    pub webhook_attempts: u32,
    /// First back-off between webhook attempts.
    pub retry_base: Duration,
}

impl Targets {
    /// The targets of a configuration (bots without a token in the environment are skipped).
    pub fn from_config(config: &Config) -> Targets {
        let mut seen = BTreeSet::new();
        let mut telegram = Vec::new();
        for bot in &config.bots {
            let Some(token) = secret_from_env(&bot.token_env) else {
                continue;
            };
            let chat_ids: Vec<i64> = bot
                .admins
                .iter()
                .copied()
                .filter(|a| seen.insert(*a))
                .collect();
            if !chat_ids.is_empty() {
                telegram.push(TelegramTarget {
                    bot_id: bot.id.clone(),
                    api_url: bot.api_url.trim_end_matches('/').to_string(),
                    token,
                    chat_ids,
                });
            }
        }
        Targets {
            telegram,
            webhook_url: Some(config.alerts.webhook_url.clone()).filter(|u| !u.is_empty()),
            webhook_attempts: config.alerts.webhook_attempts.max(1),
            retry_base: Duration::from_millis(500),
        }
    }
}

/// What a delivery achieved.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Delivery {
    /// Admin chats reached.
    pub telegram_sent: usize,
    /// Admin chats that could not be reached.
    pub telegram_failed: usize,
    /// The webhook accepted it (`None` without a webhook).
    pub webhook_ok: Option<bool>,
}

/// The Telegram text of a notice.
pub(crate) fn telegram_text(notice: &Notice) -> String {
    let a = &notice.alert;
    let head = match notice.announce {
        Announcement::Fired => format!("🔴 ALERT {} [{}]", a.rule, a.severity),
        Announcement::Reminder => format!("🟠 STILL FIRING {} [{}]", a.rule, a.severity),
        Announcement::Resolved => format!("✅ RESOLVED {}", a.rule),
    };
    let subject = if a.subject.is_empty() {
        String::new()
    } else {
        format!(" ({})", a.subject)
    };
    format!("{head}{subject}\n{}", a.message)
}

/// The webhook body of a notice.
pub(crate) fn webhook_body(notice: &Notice) -> serde_json::Value {
    let a = &notice.alert;
    serde_json::json!({
        "event": notice.announce,
        "id": a.id,
        "rule": a.rule,
        "subject": a.subject,
        "severity": a.severity,
        "state": a.state.as_str(),
        "started_ms": a.started_ms,
        "fired_ms": a.fired_ms,
        "resolved_ms": a.resolved_ms,
        "value": a.value,
        "message": a.message,
    })
}

/// Sends a notice to every target.
#[tracing::instrument(skip_all, fields(rule = %notice.alert.rule, subject = %notice.alert.subject, announce = ?notice.announce))]
pub(crate) async fn deliver(
    client: &reqwest::Client,
    targets: &Targets,
    notice: &Notice,
) -> Delivery {
    let mut delivery = Delivery::default();
    let text = telegram_text(notice);
    for target in &targets.telegram {
        let url = format!("{}/bot{}/sendMessage", target.api_url, target.token);
        for chat_id in &target.chat_ids {
            let body = serde_json::json!({"chat_id": chat_id, "text": text});
            match post_with_retries(client, &url, &body, TELEGRAM_ATTEMPTS, targets.retry_base)
                .await
            {
                Ok(()) => delivery.telegram_sent += 1,
                Err(e) => {
                    delivery.telegram_failed += 1;
                    tracing::warn!(bot_id = %target.bot_id, chat_id, error = %redact_token_in(&e, &target.token), "alert notice not delivered");
                }
            }
        }
    }
    if let Some(url) = &targets.webhook_url {
        let result = post_with_retries(
            client,
            url,
            &webhook_body(notice),
            targets.webhook_attempts,
            targets.retry_base,
        )
        .await;
        if let Err(e) = &result {
            tracing::warn!(error = %e, "alert webhook failed");
        }
        delivery.webhook_ok = Some(result.is_ok());
    }
    delivery
}

async fn post_with_retries(
    client: &reqwest::Client,
    url: &str,
    body: &serde_json::Value,
    attempts: u32,
    retry_base: Duration,
) -> Result<(), String> {
    let mut last = String::new();
    for attempt in 0..attempts.max(1) {
        if attempt > 0 {
            tokio::time::sleep(retry_base * 2u32.pow(attempt - 1)).await;
        }
        match client
            .post(url)
            .timeout(REQUEST_TIMEOUT)
            .json(body)
            .send()
            .await
        {
            Ok(response) if response.status().is_success() => return Ok(()),
            Ok(response) => {
                let status = response.status();
                last = format!("HTTP {status}");
                if status.is_client_error() && status != reqwest::StatusCode::TOO_MANY_REQUESTS {
                    break;
                }
            }
            // reqwest errors name the URL, which holds the bot token: callers redact.
            Err(e) => last = e.to_string(),
        }
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::AlertState;

    #[test]
    fn texts_name_the_rule_subject_and_message() {
        let notice = Notice {
            announce: Announcement::Fired,
            alert: Alert {
                id: 3,
                rule: "bot_down".into(),
                subject: "b1".into(),
                severity: "critical".into(),
                state: AlertState::Firing,
                started_ms: 1,
                fired_ms: Some(2),
                resolved_ms: None,
                value: 4.0,
                message: "bot b1 cannot poll".into(),
                notified_ms: Some(2),
            },
        };
        assert_eq!(
            telegram_text(&notice),
            "🔴 ALERT bot_down [critical] (b1)\nbot b1 cannot poll"
        );
        let body = webhook_body(&notice);
        assert_eq!(body["event"], "fired");
        assert_eq!(body["state"], "firing");
        assert_eq!(body["id"], 3);
    }
}
