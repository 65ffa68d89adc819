//! `agentlab backup`, `backups`, `restore`.
//!
//! `backup` snapshots the file directly when no service holds it, else asks the
//! running service (`POST /api/backup`). `restore` never runs beside a service: it
//! refuses when the service answers over HTTP or holds the file, verifies the
//! snapshot first, and asks for confirmation on a terminal (`--yes` otherwise).

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;

use anyhow::{Context, bail};

use super::args::RestoreArgs;
use super::remote::ServiceClient;
use crate::backup::create::human_size;
use crate::backup::files::list_snapshots;
use crate::backup::{self, BackupError, SnapshotDefect};
use crate::config::Config;
use crate::storage::{Store, StoreError, inspect_snapshot, iso8601};

/// Takes a snapshot now.
pub async fn backup(config: &Config) -> anyhow::Result<i32> {
    let path = config.database_path();
    if !path.exists() {
        // Run from the wrong folder, a backup would create an empty database and
        // a "verified" empty snapshot, the newest one `restore --latest` picks.
        eprintln!(
            "nothing to back up: there is no database at {} (it is created when the service first starts)",
            path.display()
        );
        return Ok(1);
    }
    match Store::open(&path, backup::store_options(config)) {
        Ok(store) => {
            let owned = config.clone();
            let outcome = tokio::task::spawn_blocking(move || {
                let result = backup::backup_now(&store, &owned);
                if let Err(e) = &result {
                    backup::create::report_backup_failure(&store, e, 1);
                }
                store.close();
                result
            })
            .await
            .context("snapshot task")??;
            println!("{}", outcome.summary());
            // No service runs to upload it in the background: upload it now.
            match backup::remote::offsite::upload_newest_now(config).await {
                Ok(Some(copy)) => println!("{copy}"),
                Ok(None) => {}
                Err(e) => {
                    eprintln!(
                        "the snapshot is kept locally, but its remote copy failed: {e:#} (the service uploads it when it runs)"
                    );
                    return Ok(1);
                }
            }
            Ok(0)
        }
        Err(StoreError::AlreadyOpen { .. }) => {
            eprintln!("the service holds the database; asking it to take the snapshot");
            let client = ServiceClient::new(config)?;
            let answer = client.post("/api/backup", serde_json::json!({})).await?;
            let text = answer["message"]
                .as_str()
                .or_else(|| answer["result"].as_str())
                .or_else(|| answer["path"].as_str())
                .map(str::to_string)
                .unwrap_or_else(|| answer.to_string());
            println!("{text}");
            Ok(0)
        }
        Err(e) => Err(e).context("opening the store"),
    }
}

/// Lists snapshots, newest first, each verified now.
pub async fn list(config: &Config) -> anyhow::Result<i32> {
    let dir = config.backup_dir.clone();
    let rows = tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<String>> {
        let files = list_snapshots(&dir).with_context(|| format!("reading {}", dir.display()))?;
        let mut rows = Vec::new();
        for file in files {
            let name = file
                .path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let (verified, counts) = match inspect_snapshot(&file.path) {
                Ok(info) => {
                    let counts: Vec<String> = info
                        .table_counts
                        .iter()
                        .filter(|c| c.rows > 0)
                        .map(|c| format!("{}={}", c.table, c.rows))
                        .collect();
                    ("verified".to_string(), counts.join(" "))
                }
                Err(e) => (
                    format!("NOT VERIFIED ({})", SnapshotDefect(e)),
                    String::new(),
                ),
            };
            rows.push(format!(
                "{}  {:>9}  {}  {}  {}",
                iso8601(file.taken_ms),
                human_size(file.size_bytes),
                verified,
                name,
                counts
            ));
        }
        Ok(rows)
    })
    .await
    .context("listing task")??;
    if rows.is_empty() {
        println!("no snapshots in {}", config.backup_dir.display());
    }
    for row in rows {
        println!("{row}");
    }
    Ok(0)
}

/// Fails when the service answers: a restore replaces the file it holds.
pub(crate) async fn refuse_while_the_service_runs(config: &Config) -> anyhow::Result<()> {
    if let Ok(client) = ServiceClient::new(config)
        && client.get("/livez").await.is_ok()
    {
        bail!(
            "the agentlab service is running (it answers at {}); stop it before restoring",
            client.base()
        );
    }
    Ok(())
}

/// Restores a snapshot (the service must be stopped).
pub async fn restore(config: &Config, args: RestoreArgs) -> anyhow::Result<i32> {
    refuse_while_the_service_runs(config).await?;
    let snapshot = pick_snapshot(config, &args).await?;
    let shown = snapshot.clone();
    let info = tokio::task::spawn_blocking(move || inspect_snapshot(&shown))
        .await
        .context("verification task")?
        .map_err(|e| BackupError::SnapshotInvalid {
            path: snapshot.clone(),
            defect: SnapshotDefect(e),
        })?;
    let tasks = info
        .table_counts
        .iter()
        .find(|c| c.table == "tasks")
        .map_or(0, |c| c.rows);
    eprintln!(
        "snapshot {} verified: {}, {tasks} tasks",
        snapshot.display(),
        human_size(info.size_bytes)
    );
    if !args.yes && !confirm(config, &snapshot)? {
        eprintln!("nothing was changed");
        return Ok(1);
    }
    let config = config.clone();
    let outcome = tokio::task::spawn_blocking(move || backup::restore_snapshot(&config, &snapshot))
        .await
        .context("restore task")??;
    println!("{}", outcome.summary());
    Ok(0)
}

async fn pick_snapshot(config: &Config, args: &RestoreArgs) -> anyhow::Result<PathBuf> {
    match (&args.file, args.latest) {
        (Some(file), _) => Ok(file.clone()),
        (None, true) => {
            let dir = config.backup_dir.clone();
            let config = config.clone();
            let (found, rejected) =
                tokio::task::spawn_blocking(move || backup::newest_verified_snapshot(&config))
                    .await
                    .context("searching snapshots")??;
            for (path, why) in rejected {
                eprintln!("skipping {}: {why}", path.display());
            }
            match found {
                Some((file, _)) => Ok(file.path),
                None => Err(BackupError::NoSnapshot(dir).into()),
            }
        }
        (None, false) => bail!("name a snapshot file or pass --latest (see `agentlab backups`)"),
    }
}

/// Asks on the terminal; refuses when stdin is not one (use `--yes`).
fn confirm(config: &Config, snapshot: &std::path::Path) -> anyhow::Result<bool> {
    if !std::io::stdin().is_terminal() {
        bail!(
            "stdin is not a terminal, so restore cannot ask for confirmation; pass --yes to restore anyway"
        );
    }
    eprint!(
        "Replace {} with {}? The current file is kept as agentlab.redb.pre-restore-<time>. [y/N] ",
        config.database_path().display(),
        snapshot.display()
    );
    std::io::stderr().flush().ok();
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .context("reading the answer")?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes" | "YES" | "Yes"))
}
