//! `agentlab check-config`: validate and print the effective configuration.
//!
//! Exit code 0 when `agentlab run` could start with it (valid, at least one
//! bot, every bot's token variable set), 1 otherwise; the configuration is
//! printed either way when it is valid.

use std::path::Path;

use super::{load_config, resolve_config_path};

/// Prints the effective configuration with secrets redacted; 1 when no bot is
/// configured or a bot's token variable is unset, since `run` would refuse to
/// start.
pub fn run(named: Option<&Path>) -> anyhow::Result<i32> {
    let config = load_config(named)?;
    match resolve_config_path(named) {
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
