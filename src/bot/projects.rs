//! `/project`: which of the bot's projects (its `workdir`, named `default`, and
//! each `[[bots.projects]]`) a user's prompts run in. `/project` lists them with
//! a button each, the current one marked; `/project NAME` or a press switches.
//!
//! Invariants:
//! - the choice is stored per (bot, user) and read back for every prompt, so it
//!   survives a restart; a stored project the configuration no longer has is
//!   dropped (back to `default`) and the user told once;
//! - every press is answered with `answerCallbackQuery`; a press by a user the
//!   bot does not allow changes nothing; a press switches the presser's own
//!   project, never another user's;
//! - callback data is `pj:<name>`: project names are at most 32 ASCII characters
//!   (checked with the configuration), so it stays well under Telegram's 64 bytes,
//!   and a press still means the same project after the list was reordered.

use std::path::PathBuf;

use teloxide::types::CallbackQuery;

use super::BotRuntime;
use super::handler::Sender;
use super::render::escape_html;
use crate::config::DEFAULT_PROJECT;

/// Prefix of project buttons' callback data.
pub(super) const CALLBACK_PREFIX: &str = "pj:";

/// The project a user's next prompt runs in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Current {
    /// Its name (`default` for the bot's own workdir).
    pub name: String,
    /// Its working directory.
    pub workdir: PathBuf,
}

/// The sender's current project. A stored choice the configuration no longer
/// has is cleared, and the user is told so, before `default` is returned.
pub(super) async fn current(bot: &BotRuntime, sender: Sender) -> Current {
    let chosen = bot
        .ctx
        .store
        .user_project(&bot.config.id, sender.user_id)
        .unwrap_or_else(|error| {
            tracing::warn!(%error, "cannot read the user's project; using the default");
            DEFAULT_PROJECT.to_owned()
        });
    if let Some(workdir) = bot.config.project_workdir(&chosen) {
        return Current {
            workdir: workdir.to_path_buf(),
            name: chosen,
        };
    }
    if let Err(error) = bot
        .ctx
        .store
        .set_user_project(&bot.config.id, sender.user_id, None)
        .await
    {
        tracing::warn!(%error, "cannot clear a project the configuration dropped");
    }
    bot.reply(
        sender,
        &format!(
            "Note: the project `{chosen}` is no longer configured; you are back in the `{DEFAULT_PROJECT}` project."
        ),
    )
    .await;
    Current {
        name: DEFAULT_PROJECT.to_owned(),
        workdir: bot.config.workdir.clone(),
    }
}

/// `/project [NAME]`: switches to NAME, or lists the projects with buttons (also
/// for a name the bot does not have).
pub(super) async fn project_command(bot: &BotRuntime, sender: Sender, name: Option<String>) {
    let unknown = match name {
        Some(name) if bot.config.project_workdir(&name).is_some() => {
            let text = switch(bot, sender.user_id, &name).await;
            bot.reply(sender, &text).await;
            return;
        }
        Some(name) => Some(name),
        None => None,
    };
    let current = current(bot, sender).await;
    let mut html = String::new();
    if let Some(name) = unknown {
        html.push_str(&format!(
            "There is no project <code>{}</code>.\n",
            escape_html(&name)
        ));
    }
    html.push_str(&list_html(bot, &current.name));
    let buttons = buttons(bot, &current.name);
    if let Err(error) = bot
        .api
        .send_html_with_rows(sender.chat_id, &html, &[buttons], None)
        .await
    {
        tracing::warn!(%error, "cannot send the project list");
    }
}

/// "Projects:" and one line per project, the current one marked.
fn list_html(bot: &BotRuntime, current: &str) -> String {
    let mut out = String::from("Projects (switch with /project NAME or a button):\n");
    for (name, workdir) in bot.config.project_list() {
        let mark = if name == current { "▶ " } else { "• " };
        let now = if name == current { " (current)" } else { "" };
        out.push_str(&format!(
            "{mark}<b>{}</b>{now} — <code>{}</code>\n",
            escape_html(name),
            escape_html(&workdir.display().to_string())
        ));
    }
    out
}

/// One button per project: (label, callback data).
fn buttons(bot: &BotRuntime, current: &str) -> Vec<(String, String)> {
    bot.config
        .project_list()
        .into_iter()
        .map(|(name, _)| {
            let label = if name == current {
                format!("✓ {name}")
            } else {
                name.to_owned()
            };
            (label, format!("{CALLBACK_PREFIX}{name}"))
        })
        .collect()
}

/// Stores `name` as the user's project and says so.
async fn switch(bot: &BotRuntime, user_id: i64, name: &str) -> String {
    let stored = bot
        .ctx
        .store
        .set_user_project(&bot.config.id, user_id, Some(name.to_owned()))
        .await;
    match stored {
        Ok(()) => {
            let workdir = bot
                .config
                .project_workdir(name)
                .map(|w| w.display().to_string())
                .unwrap_or_default();
            format!(
                "Project: {name} ({workdir}). Your next prompt runs there, in this project's own session."
            )
        }
        Err(e) => format!("Could not switch the project: {e}"),
    }
}

/// Handles a press of a project button (callback data starting with
/// [`CALLBACK_PREFIX`]).
pub(super) async fn handle_callback(bot: &BotRuntime, query: CallbackQuery) {
    let query_id = query.id.0.clone();
    let name = query
        .data
        .as_deref()
        .and_then(|d| d.strip_prefix(CALLBACK_PREFIX))
        .unwrap_or_default()
        .to_owned();
    let presser = i64::try_from(query.from.id.0).unwrap_or(i64::MAX);
    let (text, alert) = if bot.ctx.intake.authorise(&bot.config.id, presser).is_none() {
        ("You are not allowed to use this bot.".to_owned(), true)
    } else if bot.config.project_workdir(&name).is_none() {
        (
            format!("There is no project `{name}` any more; send /project for the list."),
            true,
        )
    } else {
        (switch(bot, presser, &name).await, false)
    };
    if let Err(error) = bot.api.answer_callback(&query_id, &text, alert).await {
        tracing::warn!(%error, "cannot answer a button press");
    }
    // The chat also keeps the switch in writing, like `/project NAME`.
    if !alert && let Some(message) = &query.message {
        let chat_id = message.chat().id.0;
        if let Err(error) = bot.api.send_plain(chat_id, &text, None).await {
            tracing::warn!(%error, "cannot confirm a project switch");
        }
    }
}
