//! Importing the old Python bot's JSON state: `agentlab migrate --from-json DIR`.
//!
//! The old bot kept `sessions.json`, `tasks.json`, `costs.json` and
//! `restart_state.json` in one folder, in layouts that were never written down.
//! This module reads them tolerantly and hands one [`LegacyBatch`] to
//! [`Store::import_legacy`], which writes it in one transaction.
//!
//! # What is accepted
//!
//! Every file is optional (a missing one is reported as skipped); an empty one
//! (0 bytes, whitespace, `null`) holds nothing. A file's records may be
//! - an array of objects (`[{"id": "t1", ...}, ...]`, records named `[index]`),
//! - an object keyed by id (`{"t1": {...}}`: task id, or user id for sessions),
//! - either of those under one wrapper key (`{"tasks": [...]}`,
//!   `{"sessions": {...}}`), beside which only scalar metadata may stand (a note
//!   lists it).
//!
//! Field names have synonyms (`user_id`/`userId`/`chat_id`, `session_id`/
//! `sessionId`/`claude_session_id`, `created_at`/`created`/`timestamp`,
//! `prompt`/`message`/`text`, `cost`/`cost_usd`/`total_cost_usd`, ...): see
//! `legacy/tasks.rs`, `sessions.rs`, `costs.rs`, `restart.rs` for each kind's list and the
//! task status mapping. Ids may be numbers or numeric strings. Fields we do not
//! model are kept as a JSON object string in the record's `extra` (tasks and
//! sessions), together with `legacy_id`, `legacy_status` and the raw value of any
//! field that could not be used.
//!
//! Timestamps (seconds, milliseconds, ISO-8601) are normalised to unix ms by
//! [`timestamp`]. A value that cannot be read, or lies before 2000-01-01 or more
//! than a day after the import, is listed in the summary (file, record, field,
//! raw value) and the record is still imported: an optional time is left unset,
//! a required one (task creation, session creation/activity) falls back to the
//! record's other times, else 0 meaning "unknown", and a restart's time becomes 0
//! (stale: no notice). Cost days are keys: an implausible one is imported as
//! written and listed.
//!
//! # Errors versus skips
//!
//! - A file that is not valid JSON is a [`LegacyError::Malformed`] naming the
//!   file, line and column; every file is parsed before the one write, so
//!   nothing at all is imported.
//! - A record of the wrong type (a task that is a number, a session without a
//!   user id, a cost that is negative) is skipped and listed with its file, key
//!   and reason; the rest is imported.
//! - A whole file of the wrong type (a bare number or string) imports nothing
//!   from that file and says why.
//!
//! # Idempotence
//!
//! Each imported record leaves a marker in the store's `meta` table; importing
//! the same folder again reports those records as "already imported" and writes
//! nothing for them (see `storage/legacy.rs`). A task's marker is its legacy id:
//! the key or `id` field, else a fingerprint of the record's content. A cost day
//! is imported once, so a day that grew after the import is not topped up.
//! Sessions and a pending restart the running service already has are kept.
//!
//! The user-facing description is `docs/legacy-import.md`.

mod costs;
mod progress;
mod report;
mod restart;
mod sessions;
mod shape;
mod tasks;
pub mod timestamp;

#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use crate::config::Config;
use crate::storage::{self, ImportCounts, LegacyBatch, Store, StoreError, StoreOptions};

pub use report::{FileReport, FileStatus, Implausible, ImportSummary, KindSummary, Skipped};
pub use shape::LegacyError;

use progress::Progress;

/// The legacy files, in the order they are read and reported.
pub const LEGACY_FILES: [&str; 4] = [
    "sessions.json",
    "tasks.json",
    "costs.json",
    "restart_state.json",
];

/// How to read a legacy folder.
#[derive(Debug, Clone)]
pub struct ParseOptions {
    /// The bot every record is imported under.
    pub bot_id: String,
    /// Time of the import, unix ms: the "now" of plausibility checks.
    pub now_ms: u64,
    /// Attempts given to imported tasks that will run (at least one more than
    /// they already had).
    pub max_attempts: u32,
    /// Show progress bars for large files (still only on a terminal).
    pub show_progress: bool,
}

impl ParseOptions {
    fn progress(&self) -> Progress {
        Progress::new(self.show_progress)
    }
}

/// A legacy folder, parsed and converted, not yet written.
#[derive(Debug, Clone)]
pub struct ParsedLegacy {
    /// What would be written.
    pub batch: LegacyBatch,
    /// One report per file, in [`LEGACY_FILES`] order.
    pub files: Vec<FileReport>,
    /// Records read per kind: tasks, sessions, costs, restart.
    records: [u64; 4],
}

/// Reads and converts every legacy file of `dir`. Fails only on a folder or file
/// that cannot be read or a file that is not JSON; see the module doc.
pub fn parse_dir(dir: &Path, opts: &ParseOptions) -> Result<ParsedLegacy, LegacyError> {
    if !dir.is_dir() {
        return Err(LegacyError::NotADirectory(dir.to_path_buf()));
    }
    let progress = opts.progress();
    // Parse every file before converting any, so a malformed last file stops the
    // import before work is wasted (and long before anything is written).
    let mut contents = Vec::with_capacity(LEGACY_FILES.len());
    for name in LEGACY_FILES {
        contents.push(shape::read_json(dir, name, &progress)?);
    }
    let mut parsed = ParsedLegacy {
        batch: LegacyBatch {
            bot_id: opts.bot_id.clone(),
            source: dir.display().to_string(),
            now_ms: opts.now_ms,
            ..LegacyBatch::default()
        },
        files: Vec::new(),
        records: [0; 4],
    };
    for (name, content) in LEGACY_FILES.into_iter().zip(contents) {
        let mut report = FileReport::new(name);
        match content {
            shape::FileContent::Missing => report.status = FileStatus::Missing,
            shape::FileContent::Empty => report.status = FileStatus::Empty,
            shape::FileContent::Json(value) => {
                convert_file(name, value, opts, &mut report, &mut parsed)
            }
        }
        parsed.files.push(report);
    }
    Ok(parsed)
}

/// Converts one parsed file into `parsed.batch`.
fn convert_file(
    name: &str,
    value: serde_json::Value,
    opts: &ParseOptions,
    report: &mut FileReport,
    parsed: &mut ParsedLegacy,
) {
    let outcome = match name {
        "tasks.json" => tasks::convert(value, opts, report).map(|(tasks, n)| {
            parsed.batch.tasks = tasks;
            parsed.records[0] = n;
            n
        }),
        "sessions.json" => sessions::convert(value, opts, report).map(|(sessions, n)| {
            parsed.batch.sessions = sessions;
            parsed.records[1] = n;
            n
        }),
        "costs.json" => costs::convert(value, opts, report).map(|(costs, n)| {
            parsed.batch.costs = costs;
            parsed.records[2] = n;
            n
        }),
        _ => restart::convert(value, opts, report).map(|(restart, n)| {
            parsed.batch.restart = restart;
            parsed.records[3] = n;
            n
        }),
    };
    report.status = match outcome {
        Ok(n) => FileStatus::Read(n),
        Err(why) => FileStatus::Unusable(why),
    };
}

impl ParsedLegacy {
    /// Records in the batch (tasks, sessions, cost days, restart).
    pub fn batch_len(&self) -> usize {
        self.batch.tasks.len()
            + self.batch.sessions.len()
            + self.batch.costs.len()
            + usize::from(self.batch.restart.is_some())
    }

    /// The summary of this parse with the store's `counts`.
    pub fn summary(
        &self,
        counts: ImportCounts,
        dry_run: bool,
        store_note: Option<String>,
    ) -> ImportSummary {
        let skipped_in = |file: &str| {
            self.files
                .iter()
                .filter(|f| f.file == file)
                .map(|f| f.skipped.len() as u64)
                .sum()
        };
        let kind = |i: usize, file: &str, counts| KindSummary {
            records: self.records[i],
            skipped: skipped_in(file),
            counts,
        };
        ImportSummary {
            source: PathBuf::from(&self.batch.source),
            bot_id: self.batch.bot_id.clone(),
            dry_run,
            files: self.files.clone(),
            tasks: kind(0, "tasks.json", counts.tasks),
            sessions: kind(1, "sessions.json", counts.sessions),
            costs: kind(2, "costs.json", counts.costs),
            restart: kind(3, "restart_state.json", counts.restart),
            queued: counts.queued,
            store_note,
        }
    }
}

/// Picks the bot to import under: `--bot`, else the configuration's first bot.
/// The bot must be configured: tasks of an unknown bot would never run.
pub fn resolve_bot(config: &Config, bot: Option<String>) -> anyhow::Result<String> {
    let configured: Vec<&str> = config.bots.iter().map(|b| b.id.as_str()).collect();
    match bot {
        Some(bot) if configured.contains(&bot.as_str()) => Ok(bot),
        Some(bot) => bail!(
            "bot `{bot}` is not in the configuration (configured: {}); add it under [[bots]] first",
            if configured.is_empty() {
                "none".to_string()
            } else {
                configured.join(", ")
            }
        ),
        None => match configured.first() {
            Some(first) => Ok(first.to_string()),
            None => bail!("no bot is configured; add one under [[bots]] or pass --bot ID"),
        },
    }
}

/// `agentlab migrate --from-json DIR [--dry-run] [--bot ID]`: parses the legacy
/// folder, then (unless `dry_run`) writes it in one transaction. The service must
/// be stopped: the store is opened directly.
pub async fn run_migrate(
    config: &Config,
    from_json: &Path,
    dry_run: bool,
    bot: Option<String>,
) -> anyhow::Result<ImportSummary> {
    let bot_id = resolve_bot(config, bot)?;
    let opts = ParseOptions {
        bot_id,
        now_ms: storage::now_ms(),
        max_attempts: config.limits.max_attempts,
        show_progress: true,
    };
    let dir = from_json.to_path_buf();
    let db_path = config.database_path();
    let store_options = StoreOptions {
        cache_mb: config.storage.cache_mb,
        ..StoreOptions::default()
    };
    // Parsing and redb are blocking work: keep them off the async runtime.
    let summary = tokio::task::spawn_blocking(move || -> anyhow::Result<ImportSummary> {
        let parsed =
            parse_dir(&dir, &opts).with_context(|| format!("cannot import {}", dir.display()))?;
        import_parsed(parsed, &db_path, store_options, dry_run, opts.progress())
    })
    .await
    .context("the import task panicked")??;
    tracing::info!(
        source = %from_json.display(),
        dry_run,
        tasks = summary.tasks.counts.imported,
        sessions = summary.sessions.counts.imported,
        cost_days = summary.costs.counts.imported,
        restart = summary.restart.counts.imported,
        skipped = summary.skipped().count(),
        implausible = summary.implausible().count(),
        "legacy import done"
    );
    Ok(summary)
}

/// Writes (or previews) a parsed folder into the store at `db_path`.
fn import_parsed(
    mut parsed: ParsedLegacy,
    db_path: &Path,
    options: StoreOptions,
    dry_run: bool,
    progress: Progress,
) -> anyhow::Result<ImportSummary> {
    if dry_run && !db_path.exists() {
        let note = format!(
            "no database at {} yet: every record counts as new",
            db_path.display()
        );
        return Ok(parsed.summary(parsed.batch.preview_into_empty_store(), true, Some(note)));
    }
    if dry_run {
        return preview_parsed(&parsed, db_path, options);
    }
    let store = match Store::open(db_path, options) {
        Ok(store) => store,
        Err(StoreError::AlreadyOpen { path }) => bail!(
            "the agentlab service is running (it holds {}); stop it before a legacy import",
            path.display(),
        ),
        Err(e) => {
            return Err(e).with_context(|| format!("cannot open the store {}", db_path.display()));
        }
    };
    let spinner = (parsed.batch_len() > progress::LARGE_RECORD_COUNT).then(|| {
        progress.spinner(format!(
            "writing {} records in one transaction",
            parsed.batch_len()
        ))
    });
    // The batch moves to the writer; the summary needs only its identity.
    let identity = LegacyBatch {
        bot_id: parsed.batch.bot_id.clone(),
        source: parsed.batch.source.clone(),
        now_ms: parsed.batch.now_ms,
        ..LegacyBatch::default()
    };
    let batch = std::mem::replace(&mut parsed.batch, identity);
    let outcome = store.import_legacy(batch).wait();
    if let Some(spinner) = spinner {
        spinner.finish_and_clear();
    }
    // Close on every path: an unclean close makes the next open walk the file.
    store.close();
    let counts = outcome.context("the legacy import transaction failed; nothing was written")?;
    Ok(parsed.summary(counts, false, None))
}

/// A dry run on an existing store: previews against a scratch copy, so the file
/// stays byte for byte as it was (no migration, no journal replay, no repair),
/// while the counts are those the real import would see after opening it.
fn preview_parsed(
    parsed: &ParsedLegacy,
    db_path: &Path,
    options: StoreOptions,
) -> anyhow::Result<ImportSummary> {
    let scratch = match Store::open_scratch_copy(db_path, options) {
        Ok(scratch) => scratch,
        Err(StoreError::AlreadyOpen { path }) => bail!(
            "the agentlab service is running (it holds {}); stop it before a legacy import, or a dry run cannot tell which records were imported before",
            path.display(),
        ),
        Err(e) => {
            return Err(e).with_context(|| {
                format!("cannot read the store {} for a dry run", db_path.display())
            });
        }
    };
    let counts = scratch.store().preview_legacy_import(&parsed.batch)?;
    let note = scratch.opening_steps();
    Ok(parsed.summary(counts, true, note))
}
