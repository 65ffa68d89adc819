//! Tool approvals in the chat: each pending approval of this bot is shown as one
//! message with the tool, its input and three buttons (`Allow`, `Always allow
//! <Tool>`, `Deny`); a press decides it; once decided, however, the message is
//! edited to say what, by whom and when, and loses its buttons.
//!
//! The agent's questions (`AskUserQuestion`) show every question and, as buttons,
//! the options of the first one not answered yet (one per row, and `Deny`); a
//! press answers that question and the message moves on to the next, a
//! multi-select question collecting options until `Done`. The agent's plan
//! (`ExitPlanMode`) shows the plan with `Approve plan` and `Keep planning`.
//!
//! Invariants:
//! - every press is answered with `answerCallbackQuery`; a press by someone who is
//!   neither the task's user nor an admin of the bot, or on a request that was
//!   decided already (or is unknown), changes nothing;
//! - only [`run`] sends and edits approval messages, one announcement after the
//!   other, so an approval's "decided" edit never overtakes its first showing;
//! - callback data is `ap:<id>:<a|A|d|k>` (allow, always allow, deny, keep
//!   planning), `ap:<id>:o<question>.<option>` (choose), `ap:<id>:x<question>.<option>`
//!   (unchoose, multi-select) or `ap:<id>:c<question>` (confirm a multi-select
//!   choice): at most 3 + 20 + 1 + 23 bytes, well under Telegram's 64; pressed
//!   twice, each means the same.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use teloxide::types::CallbackQuery;
use tokio::sync::broadcast::{self, error::RecvError};

use super::BotRuntime;
use super::render::escape_html;
use crate::approvals::ask::{self, ApprovalKind, Press, PressOutcome};
use crate::approvals::{AnswerOutcome, ApprovalNews, Decider, EXPIRY_DECIDER, TIMEOUT_DECIDER};
use crate::storage::{Approval, ApprovalDecision, DecideOutcome, QuestionPick, iso8601};

/// Prefix of approval buttons' callback data.
const CALLBACK_PREFIX: &str = "ap:";
/// Most characters of a tool input shown in the message.
const MAX_SHOWN_CHARS: usize = 1500;
/// Most characters of a plan shown: the message stays within Telegram's 4096.
const MAX_PLAN_CHARS: usize = 3500;
/// Most characters of a question's message (HTML) before it is shown compact,
/// without the options' descriptions: Telegram takes 4096 at most.
const MAX_QUESTION_HTML: usize = 3900;
/// Most characters of a button's label.
const MAX_LABEL_CHARS: usize = 60;
/// How often pending approvals that are not shown yet (Telegram was down) are
/// tried again.
const RESHOW_EVERY: Duration = Duration::from_secs(5);

/// Shows and updates this bot's approval messages until shutdown.
#[tracing::instrument(skip_all, fields(bot_id = %bot.config.id))]
pub(super) async fn run(bot: Arc<BotRuntime>, mut news: broadcast::Receiver<ApprovalNews>) {
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
    let Some((id, choice)) = query.data.as_deref().and_then(parse_callback) else {
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
    let kind = ApprovalKind::of(&approval);
    let decision = match choice {
        Choice::Pick(press) => {
            let text = answer_text(bot.ctx.pool.approvals().answer(id, press, by).await);
            answer(bot, &query_id, text, false).await;
            return;
        }
        Choice::Decide(decision) => decision,
    };
    // Only the buttons shown are taken: a question is allowed by its answers, and
    // neither a question nor a plan is "always" allowed.
    let offered = match kind {
        ApprovalKind::Tool => true,
        ApprovalKind::Question => decision == ApprovalDecision::Deny,
        ApprovalKind::Plan => decision != ApprovalDecision::AlwaysAllow,
    };
    if !offered {
        answer(bot, &query_id, "This button is no longer in use.", false).await;
        return;
    }
    let text = match bot.ctx.pool.approvals().decide(id, decision, by).await {
        Ok(DecideOutcome::Decided(_)) => match (kind, decision) {
            (ApprovalKind::Plan, ApprovalDecision::Allow) => "Plan approved.",
            (ApprovalKind::Plan, _) => "Keep planning.",
            (_, ApprovalDecision::Allow) => "Allowed.",
            (_, ApprovalDecision::AlwaysAllow) => "Allowed for this session.",
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

/// What a press that chose an option is told.
fn answer_text(outcome: Result<AnswerOutcome, crate::approvals::ApprovalError>) -> &'static str {
    match outcome {
        Ok(AnswerOutcome::Recorded(_)) => "Noted.",
        Ok(AnswerOutcome::Answered(_)) => "Answered.",
        Ok(AnswerOutcome::AlreadyDecided(_)) => "Already decided.",
        Ok(AnswerOutcome::Refused(PressOutcome::AlreadyAnswered)) => "Already answered.",
        Ok(AnswerOutcome::Refused(PressOutcome::NothingChosen)) => {
            "Choose at least one option first."
        }
        Ok(AnswerOutcome::Refused(_) | AnswerOutcome::NotAQuestion) => {
            "This button is no longer in use."
        }
        Ok(AnswerOutcome::Unknown) => "This request is unknown.",
        Err(error) => {
            tracing::error!(%error, "cannot record an answer");
            "Cannot record the answer now; try again."
        }
    }
}

async fn answer(bot: &BotRuntime, query_id: &str, text: &str, alert: bool) {
    if let Err(error) = bot.api.answer_callback(query_id, text, alert).await {
        tracing::warn!(%error, "cannot answer a button press");
    }
}

/// What a button asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Choice {
    /// A decision (`k`, keep planning, is a denial).
    Decide(ApprovalDecision),
    /// An option of a question, or the confirmation of a multi-select one.
    Pick(Press),
}

/// `ap:<id>:<a|A|d|k|o<q>.<i>|x<q>.<i>|c<q>>` → the approval and the choice.
fn parse_callback(data: &str) -> Option<(u64, Choice)> {
    let rest = data.strip_prefix(CALLBACK_PREFIX)?;
    let (id, choice) = rest.split_once(':')?;
    let choice = match choice {
        "a" => Choice::Decide(ApprovalDecision::Allow),
        "A" => Choice::Decide(ApprovalDecision::AlwaysAllow),
        "d" | "k" => Choice::Decide(ApprovalDecision::Deny),
        other => {
            let pair = |rest: &str| -> Option<(usize, usize)> {
                let (question, option) = rest.split_once('.')?;
                Some((question.parse().ok()?, option.parse().ok()?))
            };
            if let Some(rest) = other.strip_prefix('o') {
                let (question, option) = pair(rest)?;
                Choice::Pick(Press::Choose { question, option })
            } else if let Some(rest) = other.strip_prefix('x') {
                let (question, option) = pair(rest)?;
                Choice::Pick(Press::Unchoose { question, option })
            } else {
                let question = other.strip_prefix('c')?.parse().ok()?;
                Choice::Pick(Press::Confirm { question })
            }
        }
    };
    Some((id.parse().ok()?, choice))
}

/// The buttons of a pending approval, in rows: (label, callback data). A
/// question offers the options of its first open question.
pub fn buttons(approval: &Approval, picks: &[QuestionPick]) -> Vec<Vec<(String, String)>> {
    let data = |choice: &str| format!("{CALLBACK_PREFIX}{}:{choice}", approval.id);
    let deny = ("⛔ Deny".to_owned(), data("d"));
    match ApprovalKind::of(approval) {
        ApprovalKind::Tool => {
            let tool: String = approval.asked.tool_name.chars().take(40).collect();
            vec![vec![
                ("✅ Allow".into(), data("a")),
                (format!("♾️ Always allow {tool}"), data("A")),
                deny,
            ]]
        }
        ApprovalKind::Plan => vec![vec![
            (format!("✅ {}", ask::APPROVE_PLAN), data("a")),
            (format!("📝 {}", ask::KEEP_PLANNING), data("k")),
        ]],
        ApprovalKind::Question => {
            let questions = ask::questions(&ask::input_of(approval));
            let mut rows = Vec::new();
            if let Some(q) = ask::current(&questions, picks) {
                let question = &questions[q];
                let chosen = ask::pick_of(picks, q).map_or(&[][..], |p| p.labels.as_slice());
                for (i, (label, _)) in question.options.iter().enumerate() {
                    let (mark, verb) = match (question.multi_select, chosen.contains(label)) {
                        (false, _) => ("", 'o'),
                        (true, true) => ("☑ ", 'x'),
                        (true, false) => ("☐ ", 'o'),
                    };
                    let shown = format!("{mark}{}", cut(label, MAX_LABEL_CHARS));
                    rows.push(vec![(shown, data(&format!("{verb}{q}.{i}")))]);
                }
                if question.multi_select {
                    rows.push(vec![("✔ Done".into(), data(&format!("c{q}")))]);
                }
            }
            rows.push(vec![deny]);
            rows
        }
    }
}

/// The approval's request, readable: the tool and its input (a Bash command in a
/// `<pre>` block, a file path with a short preview of what is written), the
/// agent's questions with their options and what was chosen so far, or its plan;
/// escaped and truncated.
pub fn request_html(approval: &Approval, picks: &[QuestionPick]) -> String {
    let input = ask::input_of(approval);
    match ApprovalKind::of(approval) {
        ApprovalKind::Tool => {}
        ApprovalKind::Plan => return plan_html(approval, &input),
        ApprovalKind::Question => {
            let full = questions_html(approval, &input, picks, true);
            if full.chars().count() <= MAX_QUESTION_HTML {
                return full;
            }
            return questions_html(approval, &input, picks, false);
        }
    }
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

fn plan_html(approval: &Approval, input: &Value) -> String {
    let plan = input
        .get("plan")
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|p| !p.is_empty());
    let mut out = format!(
        "📋 Task #{} has a plan and asks to start on it\n\n",
        approval.asked.task_id
    );
    match plan {
        Some(plan) => out.push_str(&escape_html(&cut(plan, MAX_PLAN_CHARS))),
        None => out.push_str("<i>(the agent gave no plan text)</i>"),
    }
    out
}

fn questions_html(
    approval: &Approval,
    input: &Value,
    picks: &[QuestionPick],
    with_descriptions: bool,
) -> String {
    let questions = ask::questions(input);
    let (question_chars, description_chars) = if with_descriptions {
        (400, 200)
    } else {
        (200, 0)
    };
    let mut out = format!("❓ Task #{} asks", approval.asked.task_id);
    for (i, question) in questions.iter().enumerate() {
        out.push_str("\n\n");
        if questions.len() > 1 {
            out.push_str(&format!("{}. ", i + 1));
        }
        if !question.header.is_empty() {
            let header = escape_html(&cut(&question.header, MAX_LABEL_CHARS));
            out.push_str(&format!("<b>{header}</b>: "));
        }
        out.push_str(&escape_html(&cut(&question.text, question_chars)));
        if question.multi_select {
            out.push_str(" <i>(several may be chosen)</i>");
        }
        for (label, description) in &question.options {
            out.push_str(&format!(
                "\n• <b>{}</b>",
                escape_html(&cut(label, MAX_LABEL_CHARS))
            ));
            if description_chars > 0 && !description.is_empty() {
                let description = escape_html(&cut(description, description_chars));
                out.push_str(&format!(" — {description}"));
            }
        }
        if let Some(pick) = ask::pick_of(picks, i).filter(|p| !p.labels.is_empty()) {
            let chosen: Vec<String> = pick
                .labels
                .iter()
                .map(|l| escape_html(&cut(l, MAX_LABEL_CHARS)))
                .collect();
            let lead = if pick.done { "→" } else { "chosen so far:" };
            out.push_str(&format!("\n{lead} <i>{}</i>", chosen.join(", ")));
        }
    }
    out
}

/// What the message says once decided: the request, then the decision.
pub fn decided_html(approval: &Approval, picks: &[QuestionPick]) -> String {
    let mut out = request_html(approval, picks);
    let kind = ApprovalKind::of(approval);
    if let Some(verdict) = &approval.verdict {
        let what = match (kind, verdict.decision) {
            (ApprovalKind::Plan, ApprovalDecision::Allow) => "✅ Plan approved",
            (ApprovalKind::Plan, ApprovalDecision::Deny) if verdict.by != "configuration" => {
                "📝 Keep planning"
            }
            (ApprovalKind::Question, ApprovalDecision::Allow) => "✅ Answered",
            (_, ApprovalDecision::Allow) => "✅ Allowed",
            (_, ApprovalDecision::AlwaysAllow) => "♾️ Always allowed for this session",
            (_, ApprovalDecision::Deny) => "⛔ Denied",
            (_, ApprovalDecision::TimedOut) => "⌛ Denied: nobody answered in time",
            (_, ApprovalDecision::Expired) => "⏹ Expired: the agent stopped before an answer",
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
    cut(text, MAX_SHOWN_CHARS)
}

/// `text` cut to at most `max` characters (and an ellipsis).
fn cut(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut out: String = text.chars().take(max).collect();
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

/// The picks of an approval that asks questions (none for the others).
fn picks_of(bot: &BotRuntime, approval: &Approval) -> Vec<QuestionPick> {
    if ApprovalKind::of(approval) != ApprovalKind::Question {
        return Vec::new();
    }
    bot.ctx
        .store
        .approval_picks(approval.id)
        .unwrap_or_else(|error| {
            tracing::error!(%error, approval_id = approval.id, "cannot read an approval's answers");
            Vec::new()
        })
}

/// Sends the approval's message, with its buttons, and records it; one shown
/// already is edited to what it now asks (the next question).
async fn show(bot: &BotRuntime, approval: &Approval) {
    if approval.verdict.is_some() {
        return;
    }
    let picks = picks_of(bot, approval);
    let html = request_html(approval, &picks);
    let rows = buttons(approval, &picks);
    if let Some(message_id) = approval.message_id {
        let edited = bot
            .api
            .edit_html_with_rows(approval.asked.chat_id, message_id, &html, &rows)
            .await;
        if let Err(error) = edited {
            tracing::warn!(%error, approval_id = approval.id, "cannot show an approval's next question");
        }
        return;
    }
    let sent = bot
        .api
        .send_html_with_rows(approval.asked.chat_id, &html, &rows, None)
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
        .edit_html(
            approval.asked.chat_id,
            message_id,
            &decided_html(approval, &picks_of(bot, approval)),
        )
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
        let shown: Vec<(String, String)> = buttons(&a, &[]).concat();
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
            assert_eq!(parse_callback(data), Some((a.id, Choice::Decide(decision))));
        }
        assert_eq!(parse_callback("ap:1:x"), None);
        assert_eq!(parse_callback("other"), None);
    }

    #[test]
    fn a_bash_command_is_shown_escaped_in_pre_and_long_inputs_are_cut() {
        let a = approval("Bash", r#"{"command":"echo '<b>' && rm -rf x"}"#);
        let html = request_html(&a, &[]);
        assert!(
            html.contains("<pre>echo '&lt;b&gt;' &amp;&amp; rm -rf x</pre>"),
            "{html}"
        );
        let long = "y".repeat(5000);
        let w = approval(
            "Write",
            &serde_json::json!({"file_path": "/tmp/a&b.txt", "content": long}).to_string(),
        );
        let html = request_html(&w, &[]);
        assert!(html.contains("<code>/tmp/a&amp;b.txt</code>"), "{html}");
        assert!(html.len() < 2000, "{}", html.len());
        assert!(html.contains('…'));
    }

    fn question() -> Approval {
        let input = serde_json::json!({"questions": [
            {"question": "Which <color>?", "header": "Color", "multiSelect": false,
             "options": [{"label": "Red & warm", "description": "like fire"},
                         {"label": "Blue", "description": "like water"}]},
            {"question": "Which sizes?", "header": "Size", "multiSelect": true,
             "options": [{"label": "S", "description": ""}, {"label": "M", "description": ""}]},
        ]});
        approval("AskUserQuestion", &input.to_string())
    }

    #[test]
    fn a_question_offers_the_options_of_its_first_open_question_and_they_parse_back() {
        let a = question();
        let rows = buttons(&a, &[]);
        let labels: Vec<&str> = rows.iter().flatten().map(|(l, _)| l.as_str()).collect();
        assert_eq!(labels, ["Red & warm", "Blue", "⛔ Deny"]);
        for (_, data) in rows.iter().flatten() {
            assert!(data.len() <= 64, "{data}");
        }
        assert_eq!(
            parse_callback(&rows[1][0].1),
            Some((
                a.id,
                Choice::Pick(Press::Choose {
                    question: 0,
                    option: 1
                })
            ))
        );
        let html = request_html(&a, &[]);
        assert!(
            html.contains("1. <b>Color</b>: Which &lt;color&gt;?"),
            "{html}"
        );
        assert!(
            html.contains("• <b>Red &amp; warm</b> — like fire"),
            "{html}"
        );

        let picks = vec![
            QuestionPick {
                question: 0,
                labels: vec!["Blue".into()],
                done: true,
            },
            QuestionPick {
                question: 1,
                labels: vec!["M".into()],
                done: false,
            },
        ];
        let rows = buttons(&a, &picks);
        let labels: Vec<&str> = rows.iter().flatten().map(|(l, _)| l.as_str()).collect();
        assert_eq!(labels, ["☐ S", "☑ M", "✔ Done", "⛔ Deny"]);
        assert_eq!(
            parse_callback(&rows[1][0].1),
            Some((
                a.id,
                Choice::Pick(Press::Unchoose {
                    question: 1,
                    option: 1
                })
            ))
        );
        assert_eq!(
            parse_callback(&rows[2][0].1),
            Some((a.id, Choice::Pick(Press::Confirm { question: 1 })))
        );
        let html = request_html(&a, &picks);
        assert!(html.contains("→ <i>Blue</i>"), "{html}");
        assert!(html.contains("chosen so far: <i>M</i>"), "{html}");
    }

    #[test]
    fn long_questions_and_plans_stay_within_a_telegram_message() {
        let long = "q".repeat(5000);
        let questions: Vec<Value> = (0..4)
            .map(|i| {
                serde_json::json!({"question": format!("{i}{long}"), "header": long,
                    "multiSelect": false,
                    "options": (0..4).map(|o| serde_json::json!(
                        {"label": format!("{o}{long}"), "description": long})).collect::<Vec<_>>()})
            })
            .collect();
        let a = approval(
            "AskUserQuestion",
            &serde_json::json!({"questions": questions}).to_string(),
        );
        let html = request_html(&a, &[]);
        assert!(html.chars().count() <= 4096, "{}", html.chars().count());
        for (label, _) in buttons(&a, &[]).iter().flatten() {
            assert!(label.chars().count() <= MAX_LABEL_CHARS + 1, "{label}");
        }
        let plan = approval(
            "ExitPlanMode",
            &serde_json::json!({"plan": format!("<b>{long}")}).to_string(),
        );
        let html = request_html(&plan, &[]);
        assert!(html.chars().count() <= 4096, "{}", html.chars().count());
        assert!(html.contains("&lt;b&gt;qqq"), "{html}");
        let labels: Vec<String> = buttons(&plan, &[])
            .concat()
            .into_iter()
            .map(|(l, _)| l)
            .collect();
        assert_eq!(labels, ["✅ Approve plan", "📝 Keep planning"]);
        assert_eq!(
            parse_callback(&format!("ap:{}:k", plan.id)),
            Some((plan.id, Choice::Decide(ApprovalDecision::Deny)))
        );
    }
}
