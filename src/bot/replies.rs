//! Answers to the bot's commands. Each is answered at once, from the store and the
//! in-memory state; none waits for the user's running prompt.

use std::sync::Arc;

use super::BotRuntime;
use super::commands::{Command, help_text};
use super::handler::Sender;
use crate::config::{DEFAULT_PROJECT, PermissionMode};
use crate::storage::{RestartState, Task, TaskFilter, TaskStatus, now_ms};

pub(super) async fn answer_command(bot: &Arc<BotRuntime>, sender: Sender, command: Command) {
    let offers_models = !bot.config.agent.model_choices().is_empty();
    let text = match command {
        Command::Start => format!(
            "Hello! I connect you to a coding agent.\n\n{}",
            help_text(offers_models)
        ),
        Command::Help => help_text(offers_models),
        Command::New => new_session(bot, sender).await,
        Command::Status => format!(
            "{}{}{}{}",
            status_text(bot),
            mode_line(bot, sender),
            project_line(bot, sender).await,
            super::model::status_line(bot, sender.user_id)
        ),
        Command::Tasks => tasks_text(bot, sender),
        Command::Task(id) => task_text(bot, sender, id),
        Command::Cancel(id) => cancel(bot, sender, id).await,
        Command::Stop => stop(bot, sender).await,
        Command::Mode(name) => mode(bot, sender, name).await,
        Command::Model(_) if !offers_models => unknown_command("model"),
        Command::Model(name) => return super::model::answer(bot, sender, name).await,
        Command::Retry(id) => retry(bot, sender, id).await,
        Command::Cost => cost_text(bot),
        Command::Alerts => alerts_text(bot),
        Command::Restart => return restart(bot, sender).await,
        Command::Backup => backup(bot, sender).await,
        Command::Unknown(name) => unknown_command(&name),
        Command::BadArgument { command, given } => {
            format!("/{command} takes a task number, not \"{given}\". Example: /{command} 42")
        }
        Command::Project(name) => {
            return super::projects::project_command(bot, sender, name).await;
        }
        Command::ForAnotherBot | Command::Prompt(_) | Command::File(_) => return,
    };
    bot.reply(sender, &text).await;
}

fn unknown_command(name: &str) -> String {
    format!("I don't know the command /{name}. Send /help for the list.")
}

async fn new_session(bot: &BotRuntime, sender: Sender) -> String {
    // Only the current project's session starts afresh; the others keep theirs.
    let project = super::projects::current(bot, sender).await.name;
    // The session's warm agent process holds the old conversation: end it.
    bot.ctx
        .pool
        .end_warm_session(&bot.config.id, sender.user_id, &project)
        .await;
    match bot
        .ctx
        .store
        .reset_project_session(&bot.config.id, sender.user_id, &project)
        .await
    {
        Ok(_) if project == DEFAULT_PROJECT => {
            "Started a fresh agent session: the agent forgets the conversation so far.".into()
        }
        Ok(_) => format!(
            "Started a fresh agent session in project {project}: the agent forgets the conversation so far there."
        ),
        Err(e) => format!("Could not reset the session: {e}"),
    }
}

/// `/status`'s line about the sender's project: shown once the bot has more
/// than one (a bot with only its workdir keeps the status it always had).
async fn project_line(bot: &BotRuntime, sender: Sender) -> String {
    let project = super::projects::current(bot, sender).await;
    if bot.config.projects.is_empty() && project.name == DEFAULT_PROJECT {
        return String::new();
    }
    format!(
        "Project: {} ({}; /project)\n",
        project.name,
        project.workdir.display()
    )
}

fn status_text(bot: &BotRuntime) -> String {
    let ctx = &bot.ctx;
    let now = now_ms();
    let queue = ctx.store.queue_depth().unwrap_or(0);
    let cost = ctx
        .store
        .cost_today(&bot.config.id, now)
        .map(|c| c.usd)
        .unwrap_or(0.0);
    let mut out = format!(
        "agentlab {} — up {}\nQueue: {queue} waiting · workers busy {}/{}\nCost today: ${cost:.2} of ${:.2}\n",
        env!("CARGO_PKG_VERSION"),
        human_duration(ctx.uptime_s()),
        ctx.pool.busy(),
        ctx.pool.workers(),
        ctx.config.limits.daily_cost_usd,
    );
    for (dep, snapshot) in ctx.circuits.bot_snapshots(&bot.config.id) {
        out.push_str(&format!(
            "Breaker {}: {} ({} consecutive failures)\n",
            dep.as_str(),
            snapshot.state,
            snapshot.consecutive_failures
        ));
    }
    let alerts = ctx.store.open_alerts().map(|a| a.len()).unwrap_or(0);
    if alerts > 0 {
        out.push_str(&format!("Alerts: {alerts} open (/alerts)\n"));
    }
    out
}

fn user_tasks(bot: &BotRuntime, sender: Sender, limit: usize) -> Vec<Task> {
    let filter = TaskFilter {
        bot_id: Some(bot.config.id.clone()),
        user_id: Some(sender.user_id),
        limit: Some(limit),
        ..TaskFilter::default()
    };
    bot.ctx.store.list_tasks(&filter).unwrap_or_default()
}

fn tasks_text(bot: &BotRuntime, sender: Sender) -> String {
    let tasks = user_tasks(bot, sender, 10);
    if tasks.is_empty() {
        return "You have no tasks yet. Send me a message to start one.".into();
    }
    let now = now_ms();
    let mut out = String::from("Your recent tasks:\n");
    for task in tasks {
        out.push_str(&format!(
            "#{} {} · {} ago · {}\n",
            task.id,
            task.status,
            human_duration(now.saturating_sub(task.created_ms) / 1000),
            preview(&task.prompt, 40)
        ));
    }
    out
}

/// A task the sender may see: their own, or any task for an admin.
fn visible_task(bot: &BotRuntime, sender: Sender, id: u64) -> Result<Task, String> {
    match bot.ctx.store.get_task(id) {
        Ok(Some(task))
            if task.bot_id == bot.config.id
                && (task.user_id == sender.user_id || sender.is_admin) =>
        {
            Ok(task)
        }
        Ok(_) => Err(format!("There is no task #{id} of yours.")),
        Err(e) => Err(format!("Could not read task #{id}: {e}")),
    }
}

fn task_text(bot: &BotRuntime, sender: Sender, id: Option<u64>) -> String {
    let Some(id) = id else {
        return "Which task? Send /task 42 (see /tasks for numbers).".into();
    };
    match visible_task(bot, sender, id) {
        Ok(task) => {
            let mut out = format!(
                "Task #{} — {}\nAttempts: {}/{}\nPrompt: {}\n",
                task.id,
                task.status,
                task.attempts,
                task.max_attempts,
                preview(&task.prompt, 200)
            );
            if let Some(ms) = task.run_ms() {
                let which = if task.attempts > 1 {
                    format!(" (attempt {} of {})", task.attempts, task.max_attempts)
                } else {
                    String::new()
                };
                out.push_str(&format!("Ran for {}{which}\n", run_duration(ms)));
            }
            match bot.ctx.store.task_project(task.id) {
                Ok(project) if project != DEFAULT_PROJECT => {
                    out.push_str(&format!("Project: {project}\n"));
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, task_id = task.id, "cannot read a task's project")
                }
            }
            if task.cost_usd > 0.0 {
                out.push_str(&format!("Cost: ${:.4}\n", task.cost_usd));
            }
            if let (Some(class), Some(error)) = (task.error_class, &task.error) {
                out.push_str(&format!(
                    "Error ({}): {}\n",
                    class.as_str(),
                    preview(error, 300)
                ));
            }
            out.push_str(&steps_text(bot, task.id));
            out
        }
        Err(msg) => msg,
    }
}

/// Most tool calls listed by `/task ID` (the newest).
const TASK_STEPS_SHOWN: usize = 20;

/// The agent's tool calls for `/task ID`: "Steps:" and one line each, the oldest
/// folded into a count beyond [`TASK_STEPS_SHOWN`]; empty without steps.
fn steps_text(bot: &BotRuntime, task_id: u64) -> String {
    let Ok(steps) = bot.ctx.store.task_steps(task_id) else {
        return String::new();
    };
    if steps.steps.is_empty() {
        return String::new();
    }
    let skip = steps.steps.len().saturating_sub(TASK_STEPS_SHOWN);
    let folded = steps.earlier as usize + skip;
    let mut out = format!("Steps ({}):\n", folded + steps.steps.len() - skip);
    if folded > 0 {
        out.push_str(&format!("… {folded} earlier\n"));
    }
    for step in &steps.steps[skip..] {
        out.push_str(&format!("• {}\n", preview(&step.summary, 120)));
    }
    out
}

async fn cancel(bot: &BotRuntime, sender: Sender, id: Option<u64>) -> String {
    let task = match id {
        Some(id) => match visible_task(bot, sender, id) {
            Ok(t) => t,
            Err(msg) => return msg,
        },
        None => {
            let open = user_tasks(bot, sender, 50).into_iter().find(|t| {
                matches!(
                    t.status,
                    TaskStatus::Running | TaskStatus::Queued | TaskStatus::Interrupted
                )
            });
            match open {
                Some(t) => t,
                None => return "You have nothing running or queued to cancel.".into(),
            }
        }
    };
    match task.status {
        TaskStatus::Running => {
            if bot.ctx.pool.cancel_running(task.id) {
                format!("Cancelling task #{}…", task.id)
            } else {
                format!(
                    "Task #{} is starting; try /cancel again in a moment.",
                    task.id
                )
            }
        }
        TaskStatus::Queued | TaskStatus::Interrupted => {
            match bot.ctx.store.cancel_queued_task(task.id, now_ms()).await {
                Ok(_) => format!("Cancelled task #{} before it ran.", task.id),
                Err(e) => format!("Could not cancel task #{}: {e}", task.id),
            }
        }
        status => format!("Task #{} {}.", task.id, status.already()),
    }
}

/// The user's permission mode: theirs, or the bot's configured one.
fn user_mode(bot: &BotRuntime, sender: Sender) -> (PermissionMode, bool) {
    let chosen = bot
        .ctx
        .store
        .user_mode(&bot.config.id, sender.user_id)
        .ok()
        .flatten()
        .as_deref()
        .and_then(PermissionMode::from_name);
    match chosen {
        Some(mode) => (mode, true),
        None => (bot.config.agent.permission_mode, false),
    }
}

fn mode_line(bot: &BotRuntime, sender: Sender) -> String {
    let (mode, chosen) = user_mode(bot, sender);
    let whose = if chosen { "yours" } else { "the bot's" };
    format!("Permission mode: {} ({whose}; /mode)\n", mode.as_str())
}

async fn mode(bot: &BotRuntime, sender: Sender, name: Option<String>) -> String {
    let choices = if sender.is_admin {
        "default, acceptEdits, plan, bypassPermissions"
    } else {
        "default, acceptEdits, plan"
    };
    let Some(name) = name else {
        let (mode, _) = user_mode(bot, sender);
        return format!(
            "Your permission mode: {}. Choose one with /mode NAME: {choices}.",
            mode.as_str()
        );
    };
    let Some(mode) = PermissionMode::from_name(&name) else {
        return format!("\"{name}\" is not a permission mode; choose one of: {choices}.");
    };
    if mode == PermissionMode::BypassPermissions && !sender.is_admin {
        return "Only an admin of this bot may bypass permissions.".into();
    }
    let stored = bot
        .ctx
        .store
        .set_user_mode(&bot.config.id, sender.user_id, Some(mode.as_str().into()))
        .await;
    match stored {
        Ok(()) => format!(
            "Permission mode: {}. It applies from your next prompt (a running one keeps its mode).",
            mode.as_str()
        ),
        Err(e) => format!("Could not set the permission mode: {e}"),
    }
}

async fn stop(bot: &BotRuntime, sender: Sender) -> String {
    let running = user_tasks(bot, sender, 50)
        .into_iter()
        .find(|t| t.status == TaskStatus::Running);
    let Some(task) = running else {
        return "Nothing of yours is running to stop.".into();
    };
    match bot.ctx.pool.stop_turn(task.id).await {
        Ok(true) => format!(
            "Stopping task #{}: the agent ends its current step; your session stays open.",
            task.id
        ),
        Ok(false) => format!(
            "Task #{} cannot be interrupted (it is starting, or its agent asks nothing and runs a process per prompt); /cancel ends it.",
            task.id
        ),
        Err(e) => format!("Could not stop task #{}: {e}", task.id),
    }
}

async fn retry(bot: &BotRuntime, sender: Sender, id: Option<u64>) -> String {
    let task = match id {
        Some(id) => match visible_task(bot, sender, id) {
            Ok(t) => t,
            Err(msg) => return msg,
        },
        None => {
            let failed = user_tasks(bot, sender, 50)
                .into_iter()
                .find(|t| matches!(t.status, TaskStatus::Failed | TaskStatus::Cancelled));
            match failed {
                Some(t) => t,
                None => return "You have no failed or cancelled task to retry.".into(),
            }
        }
    };
    match bot.ctx.intake.retry(task.id).await {
        Ok(new) => format!("Retrying task #{} as task #{}.", task.id, new.id),
        Err(e) => format!("Could not retry task #{}: {e}", task.id),
    }
}

fn cost_text(bot: &BotRuntime) -> String {
    let now = now_ms();
    let limits = &bot.ctx.config.limits;
    let (today, month) = bot
        .ctx
        .store
        .cost_today_and_month(&bot.config.id, now)
        .unwrap_or_default();
    format!(
        "Today: ${:.2} of ${:.2} ({} tasks)\nThis month: ${:.2} of ${:.2} ({} tasks)",
        today.usd,
        limits.daily_cost_usd,
        today.tasks,
        month.usd,
        limits.monthly_cost_usd,
        month.tasks
    )
}

fn alerts_text(bot: &BotRuntime) -> String {
    match bot.ctx.store.open_alerts() {
        Ok(alerts) if alerts.is_empty() => "No open alerts. ✅".into(),
        Ok(alerts) => {
            let mut out = format!("{} open alert(s):\n", alerts.len());
            for a in alerts.iter().take(20) {
                out.push_str(&format!(
                    "• [{}] {} {}: {}\n",
                    a.severity,
                    a.rule,
                    a.state.as_str(),
                    a.message
                ));
            }
            out
        }
        Err(e) => format!("Could not read alerts: {e}"),
    }
}

async fn restart(bot: &BotRuntime, sender: Sender) {
    if !sender.is_admin {
        bot.reply(sender, "Only admins may restart the service.")
            .await;
        return;
    }
    let message_id = bot
        .api
        .send_plain(sender.chat_id, "🔄 Restarting…", Some(sender.message_id))
        .await
        .ok();
    let state = RestartState {
        requested_ms: now_ms(),
        bot_id: Some(bot.config.id.clone()),
        chat_id: Some(sender.chat_id),
        message_id,
        reason: format!("/restart by user {}", sender.user_id),
    };
    if let Err(e) = bot.ctx.store.set_restart_state(state).await {
        bot.reply(
            sender,
            &format!("Could not record the restart ({e}); not restarting."),
        )
        .await;
        return;
    }
    let _ = bot
        .ctx
        .store
        .append_event(
            "restart_requested",
            Some(&bot.config.id),
            serde_json::json!({"user_id": sender.user_id}),
            now_ms(),
        )
        .await;
    tracing::info!(user_id = sender.user_id, "restart requested from Telegram");
    bot.ctx.shutdown.request(crate::shutdown::RESTART_EXIT_CODE);
}

async fn backup(bot: &BotRuntime, sender: Sender) -> String {
    if !sender.is_admin {
        return "Only admins may take backups.".into();
    }
    match bot.ctx.backups.take_snapshot().await {
        Ok(report) => format!("Backup taken: {report}"),
        Err(e) => format!("Backup failed: {e:#}"),
    }
}

fn preview(text: &str, max_chars: usize) -> String {
    let one_line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.chars().count() <= max_chars {
        one_line
    } else {
        format!("{}…", one_line.chars().take(max_chars).collect::<String>())
    }
}

/// How long a run took, to a precision that never shows a real run as zero:
/// "27 ms", "2.0 s", "3 min 5 s". The built-in test agent answers in tens of
/// milliseconds, which tenths of a second would show as "0.0 s".
pub fn run_duration(ms: u64) -> String {
    match ms {
        ms if ms < 1000 => format!("{ms} ms"),
        ms if ms < 60_000 => format!("{:.1} s", ms as f64 / 1000.0),
        ms => human_duration(ms / 1000),
    }
}

/// "3 h 5 min", "42 s".
pub fn human_duration(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s} s"),
        s if s < 3600 => format!("{} min {} s", s / 60, s % 60),
        s if s < 86_400 => format!("{} h {} min", s / 3600, (s % 3600) / 60),
        s => format!("{} d {} h", s / 86_400, (s % 86_400) / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_short_run_is_shown_in_milliseconds_not_as_zero() {
        assert_eq!(run_duration(27), "27 ms");
        assert_eq!(run_duration(0), "0 ms");
        assert_eq!(run_duration(2_024), "2.0 s");
        assert_eq!(run_duration(185_000), "3 min 5 s");
    }
}
