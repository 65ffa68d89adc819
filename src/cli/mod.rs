//! The command line, the top layer: [`args`] parses what was typed into plain data,
//! [`main`] resolves the configuration, sets up logging and runs one subcommand —
//! `run` is the service ([`crate::service`]); the others that carry logic have a
//! file each here (`ask`/`status`/`tasks`/`restart` in [`remote`], `backup`/`backups`/
//! `restore` in [`backup`] and [`offsite`], [`demo`], [`dump`], [`logs`], [`migrate`],
//! [`watchdog`], [`check_config`]). These are the `agentlab` subcommands; the Telegram
//! commands (`/status`, `/cancel`, …) live in [`crate::bot::commands`]. The layers
//! below: `docs/ARCHITECTURE.md`.
//!
//! Errors are reported at the edge with their whole chain, once: on stderr, and as a
//! record in the log files when the command writes them (never twice on the
//! terminal).

mod approvals;
pub mod args;
mod backup;
mod check_config;
mod demo;
mod dump;
mod logs;
pub mod migrate;
mod offsite;
mod remote;
mod watchdog;

pub use args::{Cli, Command};

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;

use crate::config::{Config, ConfigWarning};

/// Configuration file looked for in the working directory when none is named.
const DEFAULT_CONFIG_FILE: &str = "agentlab.toml";

/// Entry point of the binary: returns the process exit code.
pub fn main(cli: Cli) -> ExitCode {
    if let Command::TestAgent(args) = cli.command {
        // Synchronous, no logging: it is the agent, not the service.
        let code = crate::worker::test_agent::run_with_args(args.args);
        return ExitCode::from(code.clamp(0, 255) as u8);
    }
    match run(cli) {
        Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
        Err(e) => {
            // Once, with the whole chain; the log files got their record in `run`.
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// The stack of every runtime thread (async workers and the blocking pool), the
/// main thread's size on Linux. Set here rather than inherited: `RUST_MIN_STACK`
/// in the environment would otherwise size them, and decoding one Bot API answer
/// (a `Message` holding the message it replies to) takes ~600 KiB of stack in a
/// debug build; a thread that overflows aborts the whole service, which then
/// vanishes right after it said it was ready.
const RUNTIME_THREAD_STACK_BYTES: usize = 8 * 1024 * 1024;

/// Runs a subcommand; the exit code on success (e.g. 42 for a restart).
fn run(cli: Cli) -> anyhow::Result<i32> {
    let config_path = cli.config.clone();
    // The configuration comes first: it says how many threads the runtime gets.
    let config = match cli.command {
        Command::Demo(_) | Command::CheckConfig | Command::TestAgent(_) => None,
        _ => Some(load_config(config_path.as_deref())?),
    };
    let threads = config.as_ref().map_or_else(
        || crate::config::RuntimeConfig::default().async_threads,
        |c| c.runtime.async_threads,
    );
    // Held until the command has finished and its failure, if any, is recorded:
    // a record logged after the guard is dropped never reaches the file.
    let telemetry = init_telemetry(&cli.command, config.as_ref());
    let outcome = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .worker_threads(threads)
        .thread_name("agentlab")
        .thread_stack_size(RUNTIME_THREAD_STACK_BYTES)
        .build()
        .context("starting the async runtime")
        .and_then(|runtime| runtime.block_on(dispatch(cli.command, config_path, config)));
    if let (Err(e), Some(guard)) = (&outcome, &telemetry)
        && guard.writes_files()
    {
        crate::telemetry::record_failure(e);
    }
    outcome
}

/// Logging for the long-lived commands: the service (and the demo, which runs
/// it) and the watchdog log to the terminal and to their files in a log folder;
/// the others print what they have to say and log nothing.
fn init_telemetry(
    command: &Command,
    config: Option<&Config>,
) -> Option<crate::telemetry::TelemetryGuard> {
    match (command, config) {
        (Command::Run, Some(config)) => {
            Some(crate::telemetry::init_service(&config.log_dir, "info"))
        }
        // Long-lived under launchd or systemd: what it checks and restarts
        // must reach their logs (stderr) and its own files in log_dir.
        (Command::Watchdog(_), Some(config)) => {
            Some(crate::telemetry::init_watchdog(&config.log_dir, "info"))
        }
        (Command::Demo(args), _) => {
            Some(crate::telemetry::init_service(&demo::log_dir(args), "warn"))
        }
        _ => None,
    }
}

async fn dispatch(
    command: Command,
    config_path: Option<PathBuf>,
    config: Option<Config>,
) -> anyhow::Result<i32> {
    match (command, config) {
        (Command::Demo(args), _) => demo::run(args).await,
        (Command::CheckConfig, _) => {
            let config = load_config(config_path.as_deref())?;
            let path = resolve_config_path(config_path.as_deref());
            check_config::run(&config, path.as_deref())
        }
        (command, Some(config)) => run_with_config(command, config).await,
        (_, None) => unreachable_command(),
    }
}

async fn run_with_config(command: Command, config: Config) -> anyhow::Result<i32> {
    match command {
        Command::Run => {
            let options = crate::service::RunOptions {
                shutdown: None,
                systemd_notify: true,
                tokens: Default::default(),
                bound: None,
            };
            crate::service::run(config, options).await
        }
        Command::Dump(args) => dump::run(&config, args).await,
        Command::Migrate(args) => migrate::run(&config, args).await,
        Command::Ask(args) => remote::ask(&config, args).await,
        Command::Status => remote::status(&config).await,
        Command::Tasks(args) => remote::tasks(&config, args).await,
        Command::Restart => remote::restart(&config).await,
        Command::Approvals => approvals::list(&config).await,
        Command::Approve(args) => approvals::approve(&config, args).await,
        Command::Logs(args) => logs::run(&config, args).await,
        Command::Backup => backup::backup(&config).await,
        Command::Backups(args) if args.remote => offsite::list(&config).await,
        Command::Backups(_) => backup::list(&config).await,
        Command::Restore(args) if args.remote => offsite::restore(&config, args).await,
        Command::Restore(args) => backup::restore(&config, args).await,
        Command::Watchdog(args) => watchdog::run(&config, args).await,
        Command::Demo(_) | Command::CheckConfig | Command::TestAgent(_) => unreachable_command(),
    }
}

fn unreachable_command() -> anyhow::Result<i32> {
    anyhow::bail!("this command is dispatched elsewhere")
}

/// The configuration file to use: the one named, else `./agentlab.toml` if it
/// exists, else none (built-in defaults).
fn resolve_config_path(named: Option<&Path>) -> Option<PathBuf> {
    match named {
        Some(p) => Some(p.to_path_buf()),
        None => {
            let default = PathBuf::from(DEFAULT_CONFIG_FILE);
            default.exists().then_some(default)
        }
    }
}

/// Loads and validates the configuration, printing warnings.
fn load_config(named: Option<&Path>) -> anyhow::Result<Config> {
    let (config, warnings) = match resolve_config_path(named) {
        Some(path) => Config::load(&path)?,
        None => {
            let config = Config::default();
            let warnings = config.validate()?;
            (config, warnings)
        }
    };
    print_warnings(&warnings);
    Ok(config)
}

fn print_warnings(warnings: &[ConfigWarning]) {
    for w in warnings {
        eprintln!("warning: {}", w.0);
    }
}
