//! The model picker: `/model` shows the user's model and one button per model the
//! bot's agent offers (`[bots.agent] models`) plus one back to the bot's default;
//! a press or `/model NAME` keeps the choice per (bot, user) in the store, and the
//! pool starts that user's next agent process with it as `--model`.
//!
//! Invariants:
//! - a bot that offers no models has no `/model`: it answers like an unknown
//!   command, and the command list and /help leave it out;
//! - every press is answered with `answerCallbackQuery`; a press by a user who may
//!   not use the bot changes nothing, nor does a press on a model that is no
//!   longer offered (that one is shown the fresh list);
//! - callback data is `md:<index>:<name hash>` or `md:d` (the default), well under
//!   Telegram's 64 bytes: an index names the model, and the hash of its name
//!   tells a press on an older list from one on the current list.

use teloxide::types::CallbackQuery;

use super::BotRuntime;
use super::handler::Sender;
use super::render::escape_html;
use crate::config::DEFAULT_MODEL_CHOICE;

/// Prefix of the picker buttons' callback data.
const CALLBACK_PREFIX: &str = "md:";
/// The rest of the callback data of the "back to the default" button.
const DEFAULT_DATA: &str = "d";
/// Most characters of a model name on a button.
const MAX_LABEL_CHARS: usize = 48;

/// Whether a press is one of the picker's buttons.
pub(super) fn is_model_press(query: &CallbackQuery) -> bool {
    query
        .data
        .as_deref()
        .is_some_and(|data| data.starts_with(CALLBACK_PREFIX))
}

/// Answers `/model [NAME]`; the caller has checked that the bot offers models.
pub(super) async fn answer(bot: &BotRuntime, sender: Sender, name: Option<String>) {
    let Some(name) = name else {
        send_picker(bot, sender, "").await;
        return;
    };
    let choices = bot.config.agent.model_choices();
    let picked = if name.eq_ignore_ascii_case(DEFAULT_MODEL_CHOICE) {
        None
    } else {
        match choices.iter().find(|m| m.eq_ignore_ascii_case(&name)) {
            Some(model) => Some(model.clone()),
            None => {
                let note = format!(
                    "\"{}\" is not one of the models offered.\n",
                    escape_html(&name)
                );
                send_picker(bot, sender, &note).await;
                return;
            }
        }
    };
    let text = match choose(bot, sender.user_id, picked).await {
        Ok(chosen) => format!(
            "Model: {chosen}. It applies from your next prompt (a running one keeps its model)."
        ),
        Err(()) => "Could not record the model now; try again.".to_owned(),
    };
    bot.reply(sender, &text).await;
}

/// The `/status` line of the user's model; empty for an agent whose command line
/// agentlab does not shape (`kind = "plain"`).
pub(super) fn status_line(bot: &BotRuntime, user_id: i64) -> String {
    if bot.config.agent.kind != crate::config::AgentKind::Claude {
        return String::new();
    }
    let current = Current::of(bot, user_id);
    let hint = if bot.config.agent.model_choices().is_empty() {
        ""
    } else {
        "; /model"
    };
    let whose = if current.chosen.is_some() {
        "yours"
    } else {
        "the bot's"
    };
    format!("Model: {} ({whose}{hint})\n", current.described())
}

/// Handles a press of a picker button.
pub(super) async fn handle_callback(bot: &BotRuntime, query: CallbackQuery) {
    let query_id = query.id.0.clone();
    let presser = i64::try_from(query.from.id.0).unwrap_or(i64::MAX);
    let Some(press) = query.data.as_deref().and_then(parse_callback) else {
        answer_press(bot, &query_id, "This button is no longer in use.", false).await;
        return;
    };
    if bot.ctx.intake.authorise(&bot.config.id, presser).is_none() {
        answer_press(bot, &query_id, "You may not use this bot.", true).await;
        return;
    }
    let message = query.message.as_ref().map(|m| (m.chat().id.0, m.id().0));
    let choices = bot.config.agent.model_choices();
    if choices.is_empty() {
        answer_press(bot, &query_id, "This bot offers no models to pick.", false).await;
        if let Some((chat_id, message_id)) = message {
            let text = "This bot offers no models to pick.";
            if let Err(error) = bot.api.edit_html(chat_id, message_id, text).await {
                tracing::warn!(%error, "cannot update a model picker");
            }
        }
        return;
    }
    let picked = match press {
        Press::Default => None,
        Press::Model { index, hash } => match choices.get(index) {
            Some(model) if name_hash(model) == hash => Some(model.clone()),
            _ => {
                let text = "That model is no longer offered; here is the current list.";
                answer_press(bot, &query_id, text, false).await;
                refresh_picker(bot, message, presser).await;
                return;
            }
        },
    };
    match choose(bot, presser, picked).await {
        Ok(chosen) => {
            let text = format!("Model: {chosen}. It applies from your next prompt.");
            answer_press(bot, &query_id, &text, false).await;
            refresh_picker(bot, message, presser).await;
        }
        Err(()) => {
            let text = "Could not record the model now; try again.";
            answer_press(bot, &query_id, text, true).await;
        }
    }
}

/// Stores `picked` (`None`: back to the default) as the user's model; the model
/// now in use, described, or `Err` when the store refused (logged).
async fn choose(bot: &BotRuntime, user_id: i64, picked: Option<String>) -> Result<String, ()> {
    let stored = bot
        .ctx
        .store
        .set_user_model(&bot.config.id, user_id, picked)
        .await;
    match stored {
        Ok(()) => Ok(Current::of(bot, user_id).described()),
        Err(error) => {
            tracing::error!(%error, user_id, "cannot record a model choice");
            Err(())
        }
    }
}

/// The user's model as the pool resolves it.
struct Current {
    /// Their choice, while it is still offered.
    chosen: Option<String>,
    /// The model in use: the choice or the bot's `model`; empty for the CLI's
    /// default.
    model: String,
}

impl Current {
    fn of(bot: &BotRuntime, user_id: i64) -> Current {
        let stored = match bot.ctx.store.user_model(&bot.config.id, user_id) {
            Ok(stored) => stored,
            Err(error) => {
                tracing::warn!(%error, "cannot read the user's model; showing the bot's");
                None
            }
        };
        let agent = &bot.config.agent;
        let model = agent.model_for(stored.as_deref()).to_owned();
        let chosen = stored.filter(|name| agent.model_choices().contains(name));
        Current { chosen, model }
    }

    fn described(&self) -> String {
        if self.model.is_empty() {
            "the CLI's default".to_owned()
        } else {
            self.model.clone()
        }
    }
}

/// The picker's text (after `note`) and buttons for a user.
fn picker(bot: &BotRuntime, user_id: i64, note: &str) -> (String, Vec<Vec<(String, String)>>) {
    let current = Current::of(bot, user_id);
    let whose = if current.chosen.is_some() {
        "yours"
    } else {
        "the bot's default"
    };
    let html = format!(
        "{note}Model: <b>{}</b> ({whose}).\nPick the model for your next prompts:",
        escape_html(&current.described())
    );
    let mark = |on: bool| if on { "✅ " } else { "" };
    let mut rows: Vec<Vec<(String, String)>> = bot
        .config
        .agent
        .model_choices()
        .iter()
        .enumerate()
        .map(|(index, model)| {
            let name: String = model.chars().take(MAX_LABEL_CHARS).collect();
            let on = current.chosen.as_deref() == Some(model.as_str());
            vec![(
                format!("{}{name}", mark(on)),
                format!("{CALLBACK_PREFIX}{index}:{:08x}", name_hash(model)),
            )]
        })
        .collect();
    let default = bot.config.agent.model.trim();
    let default: String = if default.is_empty() {
        "the CLI's".to_owned()
    } else {
        default.chars().take(MAX_LABEL_CHARS).collect()
    };
    rows.push(vec![(
        format!("{}Bot default ({default})", mark(current.chosen.is_none())),
        format!("{CALLBACK_PREFIX}{DEFAULT_DATA}"),
    )]);
    (html, rows)
}

async fn send_picker(bot: &BotRuntime, sender: Sender, note: &str) {
    let (html, rows) = picker(bot, sender.user_id, note);
    let sent = bot
        .api
        .send_html_with_rows(sender.chat_id, &html, &rows, Some(sender.message_id))
        .await;
    if let Err(error) = sent {
        tracing::warn!(%error, "cannot send the model picker");
    }
}

/// Shows the presser's current state on the pressed message.
async fn refresh_picker(bot: &BotRuntime, message: Option<(i64, i32)>, user_id: i64) {
    let Some((chat_id, message_id)) = message else {
        return;
    };
    let (html, rows) = picker(bot, user_id, "");
    let edited = bot
        .api
        .edit_html_with_rows(chat_id, message_id, &html, &rows)
        .await;
    if let Err(error) = edited {
        tracing::warn!(%error, "cannot update a model picker");
    }
}

async fn answer_press(bot: &BotRuntime, query_id: &str, text: &str, alert: bool) {
    if let Err(error) = bot.api.answer_callback(query_id, text, alert).await {
        tracing::warn!(%error, "cannot answer a button press");
    }
}

/// What a picker button asks for.
#[derive(Debug, PartialEq, Eq)]
enum Press {
    /// Back to the bot's model.
    Default,
    /// The model at `index` of the list, if its name still hashes to `hash`.
    Model { index: usize, hash: u32 },
}

fn parse_callback(data: &str) -> Option<Press> {
    let rest = data.strip_prefix(CALLBACK_PREFIX)?;
    if rest == DEFAULT_DATA {
        return Some(Press::Default);
    }
    let (index, hash) = rest.split_once(':')?;
    Some(Press::Model {
        index: index.parse().ok()?,
        hash: u32::from_str_radix(hash, 16).ok()?,
    })
}

/// FNV-1a of a model name: stable across builds and restarts, unlike std's
/// hasher, so a button outlives the process that drew it.
fn name_hash(name: &str) -> u32 {
    name.bytes().fold(0x811c_9dc5, |hash, byte| {
        (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn callback_data_parses_back_and_stays_within_64_bytes() {
        let long = "x".repeat(200);
        let data = format!("{CALLBACK_PREFIX}{}:{:08x}", usize::MAX, name_hash(&long));
        assert!(data.len() <= 64, "{data}");
        assert_eq!(
            parse_callback(&data),
            Some(Press::Model {
                index: usize::MAX,
                hash: name_hash(&long)
            })
        );
        assert_eq!(parse_callback("md:d"), Some(Press::Default));
        assert_eq!(parse_callback("md:1"), None);
        assert_eq!(parse_callback("md:x:00"), None);
        assert_eq!(parse_callback("ap:1:a"), None);
        assert_ne!(name_hash("opus"), name_hash("sonnet"));
        assert_eq!(name_hash(""), 0x811c_9dc5);
    }
}
