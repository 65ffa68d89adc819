//! `agentlab backup`, `backups`, `restore`.

use crate::cli::RestoreArgs;
use crate::config::Config;

/// Takes a snapshot now.
pub async fn backup(_config: &Config) -> anyhow::Result<i32> {
    anyhow::bail!("backups are not available yet")
}

/// Lists snapshots.
pub async fn list(_config: &Config) -> anyhow::Result<i32> {
    anyhow::bail!("backups are not available yet")
}

/// Restores a snapshot.
pub async fn restore(_config: &Config, _args: RestoreArgs) -> anyhow::Result<i32> {
    anyhow::bail!("restore is not available yet")
}
