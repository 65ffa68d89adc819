//! Tool approvals in the chat: each pending approval of this bot is shown as one
//! message with the tool, its input and three buttons (`Allow`, `Always allow
//! <Tool>`, `Deny`); a press decides it; once decided, however, the message is
//! edited to say what, by whom and when, and loses its buttons.
//!
//! Invariants:
//! - every press is answered with `answerCallbackQuery`; a press by someone who is
//!   neither the task's user nor an admin of the bot, or on a request that was
//!   decided already (or is unknown), changes nothing;
//! - only [`run`] sends and edits approval messages, one announcement after the
//!   other, so an approval's "decided" edit never overtakes its first showing;
//! - callback data is `ap:<id>:<a|A|d>`, well under Telegram's 64 bytes.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use teloxide::types::CallbackQuery;
use tokio::sync::broadcast::error::RecvError;

use super::BotRuntime;
use super::render::escape_html;
use crate::approvals::{ApprovalNews, Decider, EXPIRY_DECIDER, TIMEOUT_DECIDER};
use crate::storage::{Approval, ApprovalDecision, DecideOutcome, iso8601};

/// Prefix of approval buttons' callback data.
const CALLBACK_PREFIX: &str = "ap:";
/// Most characters of a tool input shown in the message.
const MAX_SHOWN_CHARS: usize = 1500;
/// How often pending approvals that are not shown yet (Telegram was down) are
/// tried again.
const RESHOW_EVERY: Duration = Duration::from_secs(5);

/// Shows and updates this bot's approval messages until shutdown.
#[tracing::instrument(skip_all, fields(bot_id = %bot.config.id))]
pub(super) async fn run(bot: Arc<BotRuntime>) {
    let approvals = bot.ctx.pool.approvals().clone();
    let mut news = approvals.subscribe();
    let mut shutdown = bot.ctx.shutdown.subscribe();
    let mut reshow = tokio::time::interval(RESHOW_EVERY);
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            _ = reshow.tick() => show_unshown(&bot).await,
            received = news.recv() => match received {
                Ok(ApprovalNews::Asked(id)) => {
                    if let Some(approval) = this_bots(&bot, id) {
                        show(&bot, &approval).await;
                    }
                }
                Ok(ApprovalNews::Decided(id)) => {
                    if let Some(approval) = this_bots(&bot, id) {
                        show_decided(&bot, &approval).await;
                    }
                }
                Err(RecvError::Lagged(_)) => show_unshown(&bot).await,
                Err(RecvError::Closed) => break,
            },
        }
    }
}

/// Handles a press of an inline button.
pub(super) async fn handle_callback(bot: &BotRuntime, query: CallbackQuery) {
    let query_id = query.id.0.clone();
    let Some((id, decision)) = query.data.as_deref().and_then(parse_callback) else {
        answer(bot, &query_id, "This button is no longer in use.", false).await;
        return;
    };
    let presser = i64::try_from(query.from.id.0).unwrap_or(i64::MAX);
    let approval = match bot.ctx.store.approval(id) {
        Ok(Some(approval)) if approval.asked.bot_id == bot.config.id => approval,
        Ok(_) => {
            answer(bot, &query_id, "This request is unknown.", false).await;
            return;
        }
        Err(error) => {
            tracing::error!(%error, "cannot read an approval");
            answer(
                bot,
                &query_id,
                "Cannot read this request now; try again.",
                true,
            )
            .await;
            return;
        }
    };
    if presser != approval.asked.user_id && !bot.config.admins.contains(&presser) {
        let text = "Only the user who asked or an admin of this bot can decide this.";
        answer(bot, &query_id, text, true).await;
        return;
    }
    if approval.verdict.is_some() {
        answer(bot, &query_id, "Already decided.", false).await;
        return;
    }
    let by = Decider {
        name: user_name(&query.from),
        user_id: Some(presser),
    };
    let text = match bot.ctx.pool.approvals().decide(id, decision, by).await {
        Ok(DecideOutcome::Decided(_)) => match decision {
            ApprovalDecision::Allow => "Allowed.",
            ApprovalDecision::AlwaysAllow => "Allowed for this session.",
            _ => "Denied.",
        },
        Ok(DecideOutcome::AlreadyDecided(_)) => "Already decided.",
        Ok(DecideOutcome::Unknown) => "This request is unknown.",
        Err(error) => {
            tracing::error!(%error, "cannot decide an approval");
            "Cannot record the decision now; try again."
        }
    };
    answer(bot, &query_id, text, false).await;
}

async fn answer(bot: &BotRuntime, query_id: &str, text: &str, alert: bool) {
    if let Err(error) = bot.api.answer_callback(query_id, text, alert).await {
        tracing::warn!(%error, "cannot answer a button press");
    }
}

/// `ap:<id>:<a|A|d>` → the approval and the decision.
fn parse_callback(data: &str) -> Option<(u64, ApprovalDecision)> {
    let rest = data.strip_prefix(CALLBACK_PREFIX)?;
    let (id, choice) = rest.split_once(':')?;
    let decision = match choice {
        "a" => ApprovalDecision::Allow,
        "A" => ApprovalDecision::AlwaysAllow,
        "d" => ApprovalDecision::Deny,
        _ => return None,
    };
    Some((id.parse().ok()?, decision))
}

/// The buttons of an approval: (label, callback data).
pub fn buttons(approval: &Approval) -> Vec<(String, String)> {
    let tool: String = approval.asked.tool_name.chars().take(40).collect();
    vec![
        (
            "✅ Allow".into(),
            format!("{CALLBACK_PREFIX}{}:a", approval.id),
        ),
        (
            format!("♾️ Always allow {tool}"),
            format!("{CALLBACK_PREFIX}{}:A", approval.id),
        ),
        (
            "⛔ Deny".into(),
            format!("{CALLBACK_PREFIX}{}:d", approval.id),
        ),
    ]
}

/// The approval's request, readable: the tool and its input (a Bash command in a
/// `<pre>` block, a file path with a short preview of what is written), escaped
/// and truncated.
pub fn request_html(approval: &Approval) -> String {
    let input: Value = serde_json::from_str(&approval.asked.input_json).unwrap_or(Value::Null);
    let text = |key: &str| input.get(key).and_then(Value::as_str);
    let tool = escape_html(&approval.asked.tool_name);
    let mut out = format!(
        "🔐 Task #{} asks to use <b>{tool}</b>\n",
        approval.asked.task_id
    );
    match (
        approval.asked.tool_name.as_str(),
        text("command"),
        text("file_path"),
    ) {
        ("Bash", Some(command), _) => {
            out.push_str(&format!("<pre>{}</pre>", escape_html(&shorten(command))));
            if let Some(description) = text("description") {
                out.push_str(&format!("\n<i>{}</i>", escape_html(&shorten(description))));
            }
        }
        (_, _, Some(path)) => {
            out.push_str(&format!("<code>{}</code>", escape_html(&shorten(path))));
            let preview = text("content").or_else(|| text("new_string"));
            if let Some(preview) = preview {
                out.push_str(&format!("\n<pre>{}</pre>", escape_html(&shorten(preview))));
            }
        }
        _ => {
            let pretty = serde_json::to_string_pretty(&input).unwrap_or_default();
            out.push_str(&format!("<pre>{}</pre>", escape_html(&shorten(&pretty))));
        }
    }
    out
}

/// What the message says once decided: the request, then the decision.
pub fn decided_html(approval: &Approval) -> String {
    let mut out = request_html(approval);
    if let Some(verdict) = &approval.verdict {
        let what = match verdict.decision {
            ApprovalDecision::Allow => "✅ Allowed",
            ApprovalDecision::AlwaysAllow => "♾️ Always allowed for this session",
            ApprovalDecision::Deny => "⛔ Denied",
            ApprovalDecision::TimedOut => "⌛ Denied: nobody answered in time",
            ApprovalDecision::Expired => "⏹ Expired: the agent stopped before an answer",
        };
        out.push_str(&format!("\n\n{what}"));
        if verdict.by != TIMEOUT_DECIDER && verdict.by != EXPIRY_DECIDER {
            out.push_str(&format!(" by {}", escape_html(&verdict.by)));
        }
        out.push_str(&format!(" at {}", iso8601(verdict.at_ms)));
    }
    out
}

fn shorten(text: &str) -> String {
    if text.chars().count() <= MAX_SHOWN_CHARS {
        return text.to_owned();
    }
    let mut out: String = text.chars().take(MAX_SHOWN_CHARS).collect();
    out.push('…');
    out
}

fn user_name(user: &teloxide::types::User) -> String {
    match &user.username {
        Some(name) => format!("@{name}"),
        None => user.first_name.clone(),
    }
}

fn this_bots(bot: &BotRuntime, id: u64) -> Option<Approval> {
    match bot.ctx.store.approval(id) {
        Ok(found) => found.filter(|a| a.asked.bot_id == bot.config.id),
        Err(error) => {
            tracing::error!(%error, approval_id = id, "cannot read an approval");
            None
        }
    }
}

/// Shows the pending approvals of this bot that have no message yet.
async fn show_unshown(bot: &BotRuntime) {
    let pending = match bot.ctx.store.pending_approvals() {
        Ok(pending) => pending,
        Err(error) => {
            tracing::error!(%error, "cannot read the pending approvals");
            return;
        }
    };
    for approval in pending {
        if approval.asked.bot_id == bot.config.id && approval.message_id.is_none() {
            show(bot, &approval).await;
        }
    }
}

/// Sends the approval's message, with its buttons, and records it.
async fn show(bot: &BotRuntime, approval: &Approval) {
    if approval.message_id.is_some() || approval.verdict.is_some() {
        return;
    }
    let html = request_html(approval);
    let sent = bot
        .api
        .send_html_with_buttons(approval.asked.chat_id, &html, &buttons(approval))
        .await;
    match sent {
        Ok(message_id) => {
            let recorded = bot
                .ctx
                .store
                .set_approval_message(approval.id, message_id)
                .await;
            if let Err(error) = recorded {
                tracing::error!(%error, "cannot record an approval's message");
            }
            // Decided while it was being sent: the decision shows at once.
            if let Some(now) = this_bots(bot, approval.id).filter(|a| a.verdict.is_some()) {
                show_decided(bot, &now).await;
            }
        }
        Err(error) => tracing::warn!(%error, approval_id = approval.id, "cannot show an approval"),
    }
}

/// Edits the approval's message to its decision, without buttons.
async fn show_decided(bot: &BotRuntime, approval: &Approval) {
    let Some(message_id) = approval.message_id else {
        return;
    };
    if let Err(error) = bot
        .api
        .edit_html(approval.asked.chat_id, message_id, &decided_html(approval))
        .await
    {
        tracing::warn!(%error, approval_id = approval.id, "cannot show an approval's decision");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::NewApproval;

    fn approval(tool: &str, input: &str) -> Approval {
        Approval {
            id: 12_345_678_901,
            asked: NewApproval {
                task_id: 3,
                bot_id: "B".into(),
                user_id: 7,
                chat_id: 7,
                request_id: "r".into(),
                tool_name: tool.into(),
                input_json: input.into(),
                process_dir: "/x".into(),
                created_ms: 0,
            },
            message_id: None,
            verdict: None,
        }
    }

    #[test]
    fn buttons_read_as_agreed_and_their_data_parses_back_within_64_bytes() {
        let a = approval("mcp__some_server__a_rather_long_tool_name_indeed", "{}");
        let shown = buttons(&a);
        assert!(shown[0].0.ends_with("Allow"));
        assert!(shown[1].0.contains("Always allow mcp__some_server"));
        assert!(shown[2].0.ends_with("Deny"));
        let decisions = [
            ApprovalDecision::Allow,
            ApprovalDecision::AlwaysAllow,
            ApprovalDecision::Deny,
        ];
        for ((_, data), decision) in shown.iter().zip(decisions) {
            assert!(data.len() <= 64, "{data}");
            assert_eq!(parse_callback(data), Some((a.id, decision)));
        }
        assert_eq!(parse_callback("ap:1:x"), None);
        assert_eq!(parse_callback("other"), None);
    }

    #[test]
    fn a_bash_command_is_shown_escaped_in_pre_and_long_inputs_are_cut() {
        let a = approval("Bash", r#"{"command":"echo '<b>' && rm -rf x"}"#);
        let html = request_html(&a);
        assert!(
            html.contains("<pre>echo '&lt;b&gt;' &amp;&amp; rm -rf x</pre>"),
            "{html}"
        );
        let long = "y".repeat(5000);
        let w = approval(
            "Write",
            &serde_json::json!({"file_path": "/tmp/a&b.txt", "content": long}).to_string(),
        );
        let html = request_html(&w);
        assert!(html.contains("<code>/tmp/a&amp;b.txt</code>"), "{html}");
        assert!(html.len() < 2000, "{}", html.len());
        assert!(html.contains('…'));
    }
}
