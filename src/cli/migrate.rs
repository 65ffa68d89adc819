//! `agentlab migrate`: apply schema migrations (opening the store does), or import
//! the old bot's JSON files with `--from-json`. With `--dry-run`, neither writes:
//! the migrations (and any repair or journal redo) that opening the store would do
//! are reported, having been done on a scratch copy only.

use std::path::Path;

use anyhow::Context;

use super::args::MigrateArgs;
use crate::config::Config;
use crate::storage::{Store, StoreError};

/// Runs the command.
pub async fn run(config: &Config, args: MigrateArgs) -> anyhow::Result<i32> {
    if let Some(dir) = &args.from_json {
        let summary =
            crate::legacy::run_migrate(config, dir, args.dry_run, args.bot.clone()).await?;
        println!("{summary}");
        return Ok(0);
    }
    let path = config.database_path();
    let options = crate::backup::store_options(config);
    if args.dry_run {
        let report = tokio::task::spawn_blocking(move || dry_run_report(&path, options))
            .await
            .context("the dry run panicked")??;
        println!("{report}");
        return Ok(0);
    }
    let store = match Store::open(&path, options) {
        Ok(s) => s,
        Err(e @ StoreError::AlreadyOpen { .. }) => {
            anyhow::bail!("{e}; the running service already applied its migrations at start")
        }
        Err(e) => return Err(e).context("opening the store"),
    };
    let version = store.schema_version()?;
    store.close();
    println!(
        "{}: schema version {version} (latest {})",
        path.display(),
        Store::latest_schema_version()
    );
    Ok(0)
}

/// What `agentlab migrate` would do to the store at `path`, without writing.
pub fn dry_run_report(
    path: &Path,
    options: crate::storage::StoreOptions,
) -> anyhow::Result<String> {
    let latest = Store::latest_schema_version();
    if !path.exists() {
        return Ok(format!(
            "{}: no database yet; migrating would create it at schema version {latest} (dry run: nothing written)",
            path.display()
        ));
    }
    let scratch = match Store::open_scratch_copy(path, options) {
        Ok(s) => s,
        Err(e @ StoreError::AlreadyOpen { .. }) => {
            anyhow::bail!("{e}; the running service already applied its migrations at start")
        }
        Err(e) => {
            return Err(e).with_context(|| format!("cannot read {} for a dry run", path.display()));
        }
    };
    let head = format!(
        "{}: schema version {} (latest {latest})",
        path.display(),
        scratch.schema_before()
    );
    Ok(match scratch.opening_steps() {
        Some(steps) => format!("{head}\n{steps}; nothing was written"),
        None => format!("{head}\nup to date: nothing to do (dry run: nothing written)"),
    })
}
