//! Import of the old bot's JSON files (lands with the legacy import work).

use std::path::Path;

use crate::config::Config;

/// Runs the import.
pub async fn run_migrate(_config: &Config, _dir: &Path, _dry_run: bool, _bot: Option<String>) -> anyhow::Result<String> {
    anyhow::bail!("the legacy import is not available yet")
}
