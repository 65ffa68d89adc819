//! Telegram commands (`/status`, `/cancel`, `/new`, …): what a message's text means,
//! parsed into plain data. (The `agentlab` subcommands are [`crate::cli`].)
//!
//! Invariant: parsing never fails and never panics; anything that is not a known
//! command addressed to this bot is a prompt (plain text), an unknown command, or a
//! command for another bot (ignored). Arguments are validated here (a task id is a
//! number), so handlers get typed values.

/// What a text message asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// /start
    Start,
    /// /help
    Help,
    /// /new: a fresh agent session.
    New,
    /// /status
    Status,
    /// /tasks: recent tasks of the user.
    Tasks,
    /// /task ID
    Task(Option<u64>),
    /// /cancel [ID]: the given task, or the user's running/queued one.
    Cancel(Option<u64>),
    /// /stop: interrupt the agent's current turn; the session stays.
    Stop,
    /// /mode [MODE]: show or set the user's agent permission mode.
    Mode(Option<String>),
    /// /model [NAME]: show the models to pick from, or pick one (`default`: the
    /// bot's).
    Model(Option<String>),
    /// /retry [ID]: the given task, or the user's last failed one.
    Retry(Option<u64>),
    /// /cost
    Cost,
    /// /alerts
    Alerts,
    /// /restart (admins)
    Restart,
    /// /backup (admins)
    Backup,
    /// /file PATH: a file of the current project's workdir, sent as a document
    /// (the path as typed).
    File(String),
    /// /project [NAME]: list the bot's projects, or switch to NAME.
    Project(Option<String>),
    /// A command we do not know.
    Unknown(String),
    /// A command with an argument that does not parse.
    BadArgument {
        /// The command.
        command: &'static str,
        /// What was given.
        given: String,
    },
    /// A command addressed to another bot (`/status@otherbot`): ignored.
    ForAnotherBot,
    /// Plain text: a prompt for the agent.
    Prompt(String),
}

/// The commands registered with Telegram, with their descriptions (also /help).
pub const COMMAND_LIST: &[(&str, &str)] = &[
    ("start", "introduction"),
    ("help", "what I can do"),
    ("new", "start a fresh agent session"),
    ("status", "service status: queue, workers, breakers, cost"),
    ("tasks", "your recent tasks"),
    ("task", "details of a task: /task ID"),
    ("cancel", "cancel your running or queued task: /cancel [ID]"),
    (
        "stop",
        "interrupt the agent's current step; the session stays",
    ),
    ("retry", "run a failed task again: /retry [ID]"),
    ("cost", "today's and this month's cost against the limits"),
    ("alerts", "current alerts"),
    ("restart", "restart the service (admins)"),
    ("backup", "take a backup now (admins)"),
    ("file", "send me a file of the project: /file PATH"),
    ("project", "list the projects or switch: /project [NAME]"),
];

/// `/model` in the command list and /help, for a bot whose agent offers models.
pub const MODEL_COMMAND: (&str, &str) = ("model", "choose the agent's model: /model [NAME]");

/// The commands a bot registers with Telegram and lists in /help: [`COMMAND_LIST`],
/// and [`MODEL_COMMAND`] when `offers_models` (a bot without models hides it).
pub fn bot_commands(offers_models: bool) -> Vec<(&'static str, &'static str)> {
    let mut list = COMMAND_LIST.to_vec();
    if offers_models {
        list.push(MODEL_COMMAND);
    }
    list
}

/// Parses a message text. `bot_username` is this bot's username without `@`.
pub fn parse(text: &str, bot_username: Option<&str>) -> Command {
    let trimmed = text.trim_start();
    let Some(rest) = trimmed.strip_prefix('/') else {
        return Command::Prompt(text.to_string());
    };
    let (head, args) = match rest.find(char::is_whitespace) {
        Some(i) => (&rest[..i], rest[i..].trim()),
        None => (rest, ""),
    };
    if head.is_empty() {
        return Command::Prompt(text.to_string());
    }
    let (name, target) = match head.split_once('@') {
        Some((name, target)) => (name, Some(target)),
        None => (head, None),
    };
    if let Some(target) = target {
        let ours = bot_username.is_some_and(|u| u.eq_ignore_ascii_case(target));
        if !ours {
            return Command::ForAnotherBot;
        }
    }
    let name = name.to_ascii_lowercase();
    match name.as_str() {
        "start" => Command::Start,
        "help" => Command::Help,
        "new" | "reset" => Command::New,
        "status" => Command::Status,
        "tasks" => Command::Tasks,
        "task" => with_id("task", args, Command::Task),
        "cancel" => with_id("cancel", args, Command::Cancel),
        "stop" => Command::Stop,
        "mode" => Command::Mode(args.split_whitespace().next().map(|m| truncate(m, 64))),
        "model" => Command::Model(args.split_whitespace().next().map(|m| truncate(m, 64))),
        "retry" => with_id("retry", args, Command::Retry),
        "cost" => Command::Cost,
        "alerts" => Command::Alerts,
        "restart" => Command::Restart,
        "backup" => Command::Backup,
        "file" => Command::File(args.to_owned()),
        "project" => Command::Project(args.split_whitespace().next().map(|p| truncate(p, 64))),
        _ => Command::Unknown(truncate(&name, 64)),
    }
}

fn with_id(command: &'static str, args: &str, make: fn(Option<u64>) -> Command) -> Command {
    let first = args.split_whitespace().next();
    match first {
        None => make(None),
        Some(arg) => match arg.trim_start_matches('#').parse::<u64>() {
            Ok(id) => make(Some(id)),
            Err(_) => Command::BadArgument {
                command,
                given: truncate(arg, 64),
            },
        },
    }
}

fn truncate(s: &str, max_chars: usize) -> String {
    s.chars().take(max_chars).collect()
}

/// The /help text; `offers_models` as in [`bot_commands`].
pub fn help_text(offers_models: bool) -> String {
    let mut out = String::from(
        "Send me a message and I pass it to the coding agent; you get its answer here.\n\
         Your messages run one at a time, in the order you send them.\n\nCommands:\n",
    );
    for (name, description) in bot_commands(offers_models) {
        out.push_str(&format!("/{name} — {description}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn plain_text_is_a_prompt() {
        assert_eq!(
            parse("fix the bug", None),
            Command::Prompt("fix the bug".into())
        );
        assert_eq!(parse("", None), Command::Prompt(String::new()));
        assert_eq!(parse("/", None), Command::Prompt("/".into()));
    }

    #[test]
    fn commands_and_arguments() {
        assert_eq!(parse("/status", None), Command::Status);
        assert_eq!(parse("/STATUS", None), Command::Status);
        assert_eq!(parse("/task 42", None), Command::Task(Some(42)));
        assert_eq!(parse("/cancel #7", None), Command::Cancel(Some(7)));
        assert_eq!(parse("/cancel", None), Command::Cancel(None));
        assert_eq!(parse("/stop", None), Command::Stop);
        assert_eq!(parse("/project", None), Command::Project(None));
        assert_eq!(
            parse("/project api", None),
            Command::Project(Some("api".into()))
        );
        assert!(
            help_text(false).contains("/project — "),
            "{}",
            help_text(false)
        );
        assert_eq!(parse("/mode", None), Command::Mode(None));
        assert_eq!(
            parse("/mode plan", None),
            Command::Mode(Some("plan".into()))
        );
        assert_eq!(parse("/model", None), Command::Model(None));
        assert_eq!(
            parse("/model  opus extra", None),
            Command::Model(Some("opus".into()))
        );
        assert_eq!(
            parse("/task abc", None),
            Command::BadArgument {
                command: "task",
                given: "abc".into()
            }
        );
        assert_eq!(
            parse("/frobnicate", None),
            Command::Unknown("frobnicate".into())
        );
    }

    #[test]
    fn commands_for_other_bots_are_ignored() {
        assert_eq!(
            parse("/status@otherbot", Some("mybot")),
            Command::ForAnotherBot
        );
        assert_eq!(parse("/status@MyBot", Some("mybot")), Command::Status);
        assert_eq!(parse("/status@mybot", None), Command::ForAnotherBot);
    }

    #[test]
    fn model_is_listed_only_for_a_bot_that_offers_models() {
        assert!(!help_text(false).contains("/model"));
        assert!(help_text(true).contains("/model — choose the agent's model"));
        assert!(!bot_commands(false).iter().any(|(name, _)| *name == "model"));
        assert!(bot_commands(true).iter().any(|(name, _)| *name == "model"));
    }

    proptest! {
        #[test]
        fn parsing_any_text_never_panics(text in any::<String>()) {
            let _ = parse(&text, Some("bot"));
        }

        #[test]
        fn text_without_a_leading_slash_is_the_prompt_itself(text in "[^/\\s].*") {
            prop_assert_eq!(parse(&text, None), Command::Prompt(text.clone()));
        }
    }
}
