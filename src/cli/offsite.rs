//! `agentlab backups --remote` and `agentlab restore --remote`: the copies in
//! `[backup.remote]`.
//!
//! `restore --remote` downloads a copy into `backup_dir`, checks it against its
//! manifest (sizes and SHA-256), decrypts and authenticates it, verifies it as a
//! database, and then restores it exactly as a local snapshot is restored (the
//! current file kept aside). On a fresh machine with only the configuration (and
//! the provider's credentials and the key in the environment) that is the one
//! command that brings the data back: `agentlab restore --remote --latest --yes`.

use anyhow::{Context, bail};

use super::args::RestoreArgs;
use crate::backup::create::human_size;
use crate::backup::remote::{Remote, RemoteCopy};
use crate::backup::{self, BackupError};
use crate::config::Config;
use crate::storage::iso8601;

fn remote_of(config: &Config) -> anyhow::Result<Remote> {
    match Remote::from_config(&config.backup.remote)? {
        Some(remote) => Ok(remote),
        None => bail!(
            "no remote is configured: set [backup.remote] url (s3://bucket/prefix, gs://..., az://..., file:///path)"
        ),
    }
}

/// Lists the remote copies, newest first.
pub async fn list(config: &Config) -> anyhow::Result<i32> {
    let remote = remote_of(config)?;
    let copies = remote.list().await?;
    if copies.is_empty() {
        println!("no copies in {}", remote.url());
    }
    for copy in &copies {
        println!("{}", row(copy));
    }
    Ok(0)
}

fn row(copy: &RemoteCopy) -> String {
    format!(
        "{}  {:>9}  {}  {}  {}",
        iso8601(copy.taken_ms),
        human_size(copy.size_bytes),
        if copy.complete {
            "verified"
        } else {
            "INCOMPLETE (no manifest: an upload that did not finish)"
        },
        if copy.encrypted { "encrypted" } else { "plain" },
        copy.object,
    )
}

/// Downloads, checks and restores a remote copy (the service must be stopped).
pub async fn restore(config: &Config, args: RestoreArgs) -> anyhow::Result<i32> {
    super::backup::refuse_while_the_service_runs(config).await?;
    let name = match (&args.file, args.latest) {
        (Some(name), _) => Some(name.to_string_lossy().into_owned()),
        (None, true) => None,
        (None, false) => {
            bail!("name a remote copy or pass --latest (see `agentlab backups --remote`)")
        }
    };
    let remote = remote_of(config)?;
    eprintln!("downloading from {}", remote.url());
    let fetched = remote
        .fetch_verified(name.as_deref(), &config.backup_dir)
        .await?;
    let tasks = fetched
        .info
        .table_counts
        .iter()
        .find(|c| c.table == "tasks")
        .map_or(0, |c| c.rows);
    eprintln!(
        "remote copy {} (taken {}) checked{} and verified as {}: {}, {tasks} tasks",
        fetched.manifest.object,
        iso8601(fetched.manifest.taken_ms),
        if fetched.manifest.encrypted {
            ", decrypted"
        } else {
            ""
        },
        fetched.path.display(),
        human_size(fetched.info.size_bytes),
    );
    if !args.yes {
        if !std::io::IsTerminal::is_terminal(&std::io::stdin()) {
            bail!(
                "stdin is not a terminal, so restore cannot ask for confirmation; pass --yes to restore anyway (the downloaded snapshot stays at {})",
                fetched.path.display()
            );
        }
        eprint!(
            "Replace {} with it? The current file is kept as agentlab.redb.pre-restore-<time>. [y/N] ",
            config.database_path().display()
        );
        let mut answer = String::new();
        std::io::stdin()
            .read_line(&mut answer)
            .context("reading the answer")?;
        if !matches!(answer.trim(), "y" | "Y" | "yes" | "YES" | "Yes") {
            eprintln!("nothing was changed");
            return Ok(1);
        }
    }
    let config = config.clone();
    let snapshot = fetched.path.clone();
    let outcome = tokio::task::spawn_blocking(move || backup::restore_snapshot(&config, &snapshot))
        .await
        .context("restore task")?
        .map_err(|e: BackupError| anyhow::Error::new(e))?;
    println!("{}", outcome.summary());
    Ok(0)
}
