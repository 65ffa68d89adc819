//! `agentlab check-config`: validate and print the effective configuration.
//!
//! Exit code 0 when `agentlab run` could start with it (valid, at least one
//! bot, every bot's token variable set), 1 otherwise; the configuration is
//! printed either way when it is valid.

use std::path::Path;

use crate::config::Config;

/// Prints `config` (read from `path`, or the built-in defaults without one) with
/// secrets redacted; 1 when no bot is configured or a bot's token variable is
/// unset, since `run` would refuse to start.
pub fn run(config: &Config, path: Option<&Path>) -> anyhow::Result<i32> {
    match path {
        Some(path) => println!("# configuration from {}", path.display()),
        None => println!("# no configuration file: built-in defaults"),
    }
    print!("{}", config.render_redacted());
    if let Err(no_bots) = config.require_bots() {
        eprintln!("error: {no_bots}; `agentlab run` would refuse to start");
        return Ok(1);
    }
    let missing = config.missing_tokens();
    for token in &missing {
        eprintln!(
            "error: {token}; `agentlab run` would refuse to start (export it, or put it in the service's environment file)"
        );
    }
    Ok(if missing.is_empty() { 0 } else { 1 })
}
