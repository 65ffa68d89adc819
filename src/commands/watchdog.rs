//! `agentlab watchdog`.

use crate::cli::WatchdogArgs;
use crate::config::Config;

/// Runs the watchdog.
pub async fn run(_config: &Config, _args: WatchdogArgs) -> anyhow::Result<i32> {
    anyhow::bail!("the watchdog is not available yet")
}
