//! `agentlab migrate`: apply schema migrations (opening the store does), or import
//! the old bot's JSON files with `--from-json`.

use anyhow::Context;

use crate::cli::MigrateArgs;
use crate::config::Config;
use crate::storage::{Store, StoreError};

/// Runs the command.
pub async fn run(config: &Config, args: MigrateArgs) -> anyhow::Result<i32> {
    if let Some(dir) = &args.from_json {
        let summary = crate::legacy::run_migrate(config, dir, args.dry_run, args.bot.clone()).await?;
        println!("{summary}");
        return Ok(0);
    }
    let path = config.database_path();
    let store = match Store::open(&path, crate::backup::store_options(config)) {
        Ok(s) => s,
        Err(e @ StoreError::AlreadyOpen { .. }) => {
            anyhow::bail!("{e}; the running service already applied its migrations at start")
        }
        Err(e) => return Err(e).context("opening the store"),
    };
    let version = store.schema_version()?;
    store.close();
    println!("{}: schema version {version} (latest {})", path.display(), Store::latest_schema_version());
    Ok(0)
}
