//! The command line: what was typed, parsed into plain data (no I/O here).

use std::ffi::OsString;
use std::path::PathBuf;

use anyhow::Context;

use clap::parser::ValueSource;
use clap::{ArgMatches, Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};

/// agentlab: drive an AI coding agent from Telegram, durably, 24/7.
#[derive(Debug, Parser)]
#[command(name = "agentlab", version, about, long_about = None)]
pub struct Cli {
    /// Configuration file (TOML). Default: $AGENTLAB_CONFIG, else ./agentlab.toml if
    /// it exists, else built-in defaults. `demo` takes none: it runs on built-in
    /// defaults.
    #[arg(long, short = 'c', global = true, env = "AGENTLAB_CONFIG")]
    pub config: Option<PathBuf>,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// Parses the process's arguments; on a bad command line prints the usage
    /// error and exits with code 2, as clap does (or 0 for `--help`).
    pub fn parse_args() -> Cli {
        Self::try_parse_args(std::env::args_os()).unwrap_or_else(|e| e.exit())
    }

    /// Parses `args` (the program name first), with the checks clap's
    /// declarations cannot express.
    pub fn try_parse_args<I, T>(args: I) -> Result<Cli, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        let mut command = Cli::command();
        let matches = command.try_get_matches_from_mut(args)?;
        let cli = Cli::from_arg_matches(&matches).map_err(|e| e.format(&mut command))?;
        if let (Command::Demo(_), Some(file)) = (&cli.command, &cli.config)
            && typed_on_the_command_line(&matches, "config")
        {
            // The demo's configuration is built in (simulator URL, test agent,
            // its own folders): a file could not be honoured without turning
            // the demo into `run`. Ignoring it silently would mislead; the
            // variable $AGENTLAB_CONFIG, set for the service, is ignored.
            let message = format!(
                "`demo` runs on built-in defaults and reads no configuration file; \
                 to run the service with {file}, use `agentlab run -c {file}`",
                file = file.display()
            );
            let kind = clap::error::ErrorKind::ArgumentConflict;
            return Err(match command.find_subcommand_mut("demo") {
                Some(demo) => demo.error(kind, message),
                None => command.error(kind, message),
            });
        }
        Ok(cli)
    }
}

/// Whether `arg` was typed (as opposed to taken from its environment variable),
/// before or after the subcommand: a global argument may be either.
fn typed_on_the_command_line(matches: &ArgMatches, arg: &str) -> bool {
    let typed = |m: &ArgMatches| m.value_source(arg) == Some(ValueSource::CommandLine);
    typed(matches) || matches.subcommand().is_some_and(|(_, sub)| typed(sub))
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the service: bots, worker pool, monitors, backups, HTTP API.
    Run,
    /// Run the whole service locally with a built-in Telegram simulator and demo
    /// agent, on built-in defaults (no configuration file): no token needed.
    Demo(DemoArgs),
    /// Send a prompt through the running service's HTTP API and print the answer.
    Ask(AskArgs),
    /// Summarise the running service's health (non-zero exit when unhealthy).
    Status,
    /// List tasks.
    Tasks(TasksArgs),
    /// Show the service's log.
    Logs(LogsArgs),
    /// Print tables as JSON (from the running service, or the file when stopped).
    Dump(DumpArgs),
    /// Take a verified snapshot now.
    Backup,
    /// List snapshots (`--remote`: the copies in object storage).
    Backups(BackupsArgs),
    /// Restore a snapshot (the service must be stopped).
    Restore(RestoreArgs),
    /// Apply schema migrations, or import the old bot's JSON files.
    Migrate(MigrateArgs),
    /// Watch the service from outside and restart it when it is unhealthy.
    Watchdog(WatchdogArgs),
    /// List the tool approvals the running service's agents wait for.
    Approvals,
    /// Allow or deny a waiting tool approval of the running service.
    Approve(ApproveArgs),
    /// Ask the running service to restart (exit 42, restarted by launchd/systemd).
    Restart,
    /// Validate the configuration and print it with secrets redacted.
    CheckConfig,
    /// The built-in test agent (reads a prompt on stdin). For tests and the demo.
    #[command(hide = true)]
    TestAgent(TestAgentArgs),
}

/// `demo`
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Run the lines of this file as messages instead of reading the terminal.
    #[arg(long)]
    pub script: Option<PathBuf>,
    /// Folder for the demo's state (default ./demo-data).
    #[arg(long, default_value = "demo-data")]
    pub data_dir: PathBuf,
    /// HTTP port (0 picks a free one).
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
}

/// `approve`
#[derive(Debug, Args)]
pub struct ApproveArgs {
    /// The approval's id (from `agentlab approvals`).
    pub id: u64,
    /// What to decide (a question is denied this way, or answered with --answer).
    #[arg(
        value_enum,
        required_unless_present = "answer",
        conflicts_with = "answer"
    )]
    pub decision: Option<ApproveDecision>,
    /// Answer the first open question of a question approval with this option
    /// label.
    #[arg(long)]
    pub answer: Option<String>,
}

/// What `approve` decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ApproveDecision {
    /// The tool may run.
    Allow,
    /// The tool may not run.
    Deny,
}

/// `ask`
#[derive(Debug, Args)]
pub struct AskArgs {
    /// The prompt.
    pub prompt: String,
    /// The bot (default: the first configured).
    #[arg(long)]
    pub bot: Option<String>,
    /// The user id to act as (default: the bot's first admin).
    #[arg(long)]
    pub user: Option<i64>,
    /// The project to run in (a `[[bots.projects]]` name; default: `default`).
    #[arg(long)]
    pub project: Option<String>,
    /// Print the task id and return without waiting.
    #[arg(long)]
    pub no_wait: bool,
    /// Seconds to wait for the answer.
    #[arg(long, default_value_t = 1800)]
    pub timeout: u64,
}

/// `tasks`
#[derive(Debug, Args)]
pub struct TasksArgs {
    /// Only this status (queued, running, succeeded, failed, cancelled, interrupted).
    #[arg(long)]
    pub status: Option<String>,
    /// Only this bot.
    #[arg(long)]
    pub bot: Option<String>,
    /// At most this many.
    #[arg(long, default_value_t = 20)]
    pub limit: usize,
}

/// `logs`
#[derive(Debug, Args)]
pub struct LogsArgs {
    /// Keep printing new lines.
    #[arg(short, long)]
    pub follow: bool,
    /// Lines from the end.
    #[arg(short = 'n', long, default_value_t = 50)]
    pub lines: usize,
    /// Print the stored JSON records as they are (default: one readable line each).
    #[arg(long)]
    pub json: bool,
}

/// Output format of `dump`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DumpFormat {
    /// One JSON document: {table: [rows]}.
    Json,
    /// One JSON object per line, with a `table` field (event rows keep their flat shape: `timestamp`, `bot_id`, `event`, ...).
    Ndjson,
    /// `== table ==` headers and one `key=value` line per row.
    Table,
}

impl From<DumpFormat> for crate::storage::DumpFormat {
    fn from(format: DumpFormat) -> Self {
        match format {
            DumpFormat::Json => crate::storage::DumpFormat::Json,
            DumpFormat::Ndjson => crate::storage::DumpFormat::Ndjson,
            DumpFormat::Table => crate::storage::DumpFormat::Table,
        }
    }
}

/// `dump`
#[derive(Debug, Args)]
pub struct DumpArgs {
    /// Only these tables (repeatable).
    #[arg(long = "table")]
    pub tables: Vec<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = DumpFormat::Json)]
    pub format: DumpFormat,
    /// Only rows at or after this time (ISO-8601, a date, unix seconds or ms, or an
    /// age like 90s, 15m, 2h, 7d).
    #[arg(long, value_parser = since_argument)]
    pub since: Option<String>,
}

/// Checks `dump --since` as it is parsed, so a time it cannot read is a usage
/// error (exit code 2, with the accepted forms) like any other bad argument.
fn since_argument(text: &str) -> Result<String, String> {
    parse_since(text)
        .map(|_| text.to_string())
        .map_err(|e| e.to_string())
}

/// Parses `--since`: ISO-8601, unix seconds or milliseconds, or an age (`90s`,
/// `15m`, `2h`, `7d`) before now. Returns unix ms.
pub fn parse_since(text: &str) -> anyhow::Result<u64> {
    let t = text.trim();
    if let Some(age) = parse_age(t) {
        return Ok(crate::storage::now_ms().saturating_sub(age));
    }
    if let Ok(n) = t.parse::<u64>() {
        // Below 10^11 it can only be seconds (10^11 ms is 1973).
        return Ok(if n < 100_000_000_000 { n * 1000 } else { n });
    }
    if let Ok(dt) = chrono::DateTime::parse_from_rfc3339(t) {
        return u64::try_from(dt.timestamp_millis()).context("time before 1970");
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(t, "%Y-%m-%d") {
        let ms = d
            .and_hms_opt(0, 0, 0)
            .map(|dt| dt.and_utc().timestamp_millis())
            .unwrap_or(0);
        return u64::try_from(ms).context("time before 1970");
    }
    anyhow::bail!(
        "`{text}` is not a time: use ISO-8601 (2025-10-14T12:00:00Z), a date (2025-10-14), \
         unix seconds or milliseconds, or an age (90s, 15m, 2h, 7d)"
    )
}

fn parse_age(t: &str) -> Option<u64> {
    let (num, unit) = t.split_at(t.find(|c: char| !c.is_ascii_digit())?);
    let n: u64 = num.parse().ok()?;
    let ms = match unit {
        "s" => 1000,
        "m" | "min" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return None,
    };
    Some(n * ms)
}

/// `backups`
#[derive(Debug, Args)]
pub struct BackupsArgs {
    /// List the copies in `[backup.remote]` instead of the local snapshots.
    #[arg(long)]
    pub remote: bool,
}

/// `restore`
#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The newest verified snapshot.
    #[arg(long, conflicts_with = "file")]
    pub latest: bool,
    /// A snapshot file (with `--remote`: the name of a remote copy).
    pub file: Option<PathBuf>,
    /// Download the snapshot from `[backup.remote]`, check and decrypt it, then
    /// restore it like a local one.
    #[arg(long)]
    pub remote: bool,
    /// Do not ask for confirmation.
    #[arg(long)]
    pub yes: bool,
}

/// `migrate`
#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// Folder with the old bot's sessions.json, tasks.json, costs.json, restart_state.json.
    #[arg(long)]
    pub from_json: Option<PathBuf>,
    /// Write nothing: report what would be imported (with --from-json) or which
    /// schema migrations opening the store would apply.
    #[arg(long)]
    pub dry_run: bool,
    /// Bot the imported records belong to (default: the first configured).
    #[arg(long)]
    pub bot: Option<String>,
}

/// `watchdog`
#[derive(Debug, Args)]
pub struct WatchdogArgs {
    /// Check once and exit: 0 healthy, 1 unhealthy.
    #[arg(long)]
    pub once: bool,
}

/// `test-agent`
#[derive(Debug, Args)]
pub struct TestAgentArgs {
    /// Arguments a real agent would get (`-p`, `--resume ID`, ...).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_accepts_the_documented_forms() {
        assert_eq!(parse_since("1760504154").unwrap(), 1_760_504_154_000);
        assert_eq!(parse_since("1760504154000").unwrap(), 1_760_504_154_000);
        assert_eq!(
            parse_since("2025-10-15T04:55:54Z").unwrap(),
            1_760_504_154_000
        );
        assert!(parse_since("2h").unwrap() < crate::storage::now_ms());
        assert!(parse_since("yesterday").is_err());
    }

    #[test]
    fn a_config_file_named_for_the_demo_is_a_usage_error_pointing_to_run() {
        for args in [
            &["agentlab", "demo", "-c", "mine.toml"][..],
            &["agentlab", "demo", "--config", "mine.toml"][..],
            &["agentlab", "--config", "mine.toml", "demo", "--port", "0"][..],
        ] {
            let err = Cli::try_parse_args(args).expect_err("refused");
            assert_eq!(err.kind(), clap::error::ErrorKind::ArgumentConflict);
            assert_eq!(err.exit_code(), 2);
            let text = err.to_string();
            assert!(text.contains("built-in defaults"), "{args:?}: {text}");
            assert!(
                text.contains("agentlab run -c mine.toml"),
                "{args:?}: {text}"
            );
        }
    }

    #[test]
    fn an_unreadable_dump_since_is_a_usage_error_naming_the_accepted_forms() {
        let err =
            Cli::try_parse_args(["agentlab", "dump", "--since", "yesterday"]).expect_err("refused");
        assert_eq!(err.exit_code(), 2);
        let text = err.to_string();
        assert!(text.contains("yesterday"), "{text}");
        assert!(text.contains("ISO-8601") && text.contains("2h"), "{text}");
        let cli = Cli::try_parse_args(["agentlab", "dump", "--since", "2h"]).expect("parsed");
        match cli.command {
            Command::Dump(args) => assert_eq!(args.since.as_deref(), Some("2h")),
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn other_commands_take_the_config_file_before_or_after_the_command() {
        for args in [
            &["agentlab", "run", "-c", "mine.toml"][..],
            &["agentlab", "-c", "mine.toml", "check-config"][..],
        ] {
            let cli = Cli::try_parse_args(args).expect("parsed");
            assert_eq!(cli.config, Some(PathBuf::from("mine.toml")), "{args:?}");
        }
        let demo = Cli::try_parse_args(["agentlab", "demo"]).expect("parsed");
        assert!(matches!(demo.command, Command::Demo(_)));
    }
}
