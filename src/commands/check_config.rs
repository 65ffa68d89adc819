//! `agentlab check-config`: validate and print the effective configuration.

use std::path::Path;

use crate::app::{load_config, resolve_config_path};

/// Prints the effective configuration with secrets redacted.
pub fn run(named: Option<&Path>) -> anyhow::Result<i32> {
    let config = load_config(named)?;
    match resolve_config_path(named) {
        Some(path) => println!("# configuration from {}", path.display()),
        None => println!("# no configuration file: built-in defaults"),
    }
    print!("{}", config.render_redacted());
    Ok(0)
}
