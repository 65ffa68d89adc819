//! What an import found and did, for the person running it.
//!
//! Nothing the parser meets goes unmentioned: a record is imported, already
//! imported, kept out in favour of the store's own, or listed under "skipped"
//! with its file, key and reason; a timestamp it could not use is listed with its
//! raw value and what was done instead; anything else it ignored is a note.

use std::fmt;
use std::path::PathBuf;

use crate::storage::{ImportCounts, KindCounts};

/// How a legacy file was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileStatus {
    /// Not there: that kind is skipped.
    Missing,
    /// 0 bytes, only whitespace, or `null`: read as holding no records.
    Empty,
    /// Read; holds this many records (including skipped ones).
    Read(u64),
    /// Valid JSON of a shape with no records in it (e.g. a bare number).
    Unusable(String),
}

/// A record that was not imported, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// File name.
    pub file: String,
    /// The record's key, `[index]` in an array, or a path like `123/2025-10-14`.
    pub record: String,
    /// Why.
    pub reason: String,
}

/// A timestamp that could not be used; its record was still imported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Implausible {
    /// File name.
    pub file: String,
    /// The record's key or `[index]`.
    pub record: String,
    /// The field as spelled in the file.
    pub field: String,
    /// The raw JSON value.
    pub raw: String,
    /// What is wrong with it.
    pub problem: String,
    /// What was done instead (e.g. "left unset").
    pub action: String,
}

/// Everything found in one file.
#[derive(Debug, Clone)]
pub struct FileReport {
    /// File name, e.g. `tasks.json`.
    pub file: String,
    /// How it was found.
    pub status: FileStatus,
    /// Records not imported, with reasons.
    pub skipped: Vec<Skipped>,
    /// Timestamps that could not be used.
    pub implausible: Vec<Implausible>,
    /// Anything else worth knowing (ignored metadata, fields not kept...).
    pub notes: Vec<String>,
}

impl FileReport {
    pub(crate) fn new(file: &str) -> Self {
        FileReport {
            file: file.to_string(),
            status: FileStatus::Missing,
            skipped: Vec::new(),
            implausible: Vec::new(),
            notes: Vec::new(),
        }
    }

    pub(crate) fn skip(&mut self, record: &str, reason: impl Into<String>) {
        self.skipped.push(Skipped {
            file: self.file.clone(),
            record: record.to_string(),
            reason: reason.into(),
        });
    }

    pub(crate) fn note(&mut self, note: impl Into<String>) {
        self.notes.push(note.into());
    }

    /// Records read from the file (0 unless [`FileStatus::Read`]).
    pub fn records(&self) -> u64 {
        match self.status {
            FileStatus::Read(n) => n,
            _ => 0,
        }
    }
}

/// One kind of record (tasks, sessions, cost days, restart state) in a summary.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KindSummary {
    /// Records read from the file (for costs: entries, which may be per user).
    pub records: u64,
    /// Records skipped by the parser (listed in [`ImportSummary::skipped`]).
    pub skipped: u64,
    /// What the store did with the rest (for costs: per UTC day).
    pub counts: KindCounts,
}

/// The result of `agentlab migrate --from-json`, printed for the user.
#[derive(Debug, Clone)]
pub struct ImportSummary {
    /// The legacy directory.
    pub source: PathBuf,
    /// The bot the records were imported under.
    pub bot_id: String,
    /// Whether this was a dry run (nothing written).
    pub dry_run: bool,
    /// One report per legacy file, in a fixed order.
    pub files: Vec<FileReport>,
    /// `tasks.json`.
    pub tasks: KindSummary,
    /// `sessions.json`.
    pub sessions: KindSummary,
    /// `costs.json`, counted in UTC days once merged.
    pub costs: KindSummary,
    /// `restart_state.json`.
    pub restart: KindSummary,
    /// Imported tasks put in the queue to run.
    pub queued: u64,
    /// A remark about the store itself (e.g. a dry run without a database yet).
    pub store_note: Option<String>,
}

impl ImportSummary {
    /// Every skipped record, file by file.
    pub fn skipped(&self) -> impl Iterator<Item = &Skipped> {
        self.files.iter().flat_map(|f| f.skipped.iter())
    }

    /// Every unusable timestamp, file by file.
    pub fn implausible(&self) -> impl Iterator<Item = &Implausible> {
        self.files.iter().flat_map(|f| f.implausible.iter())
    }

    /// The store's counts, as one value.
    pub fn counts(&self) -> ImportCounts {
        ImportCounts {
            tasks: self.tasks.counts,
            sessions: self.sessions.counts,
            costs: self.costs.counts,
            restart: self.restart.counts,
            queued: self.queued,
        }
    }
}

impl fmt::Display for ImportSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verb = if self.dry_run {
            "would import"
        } else {
            "imported"
        };
        writeln!(
            f,
            "legacy import from {} into bot {}{}",
            self.source.display(),
            self.bot_id,
            if self.dry_run {
                " (dry run: nothing written)"
            } else {
                ""
            }
        )?;
        writeln!(f, "files:")?;
        for file in &self.files {
            let status = match &file.status {
                FileStatus::Missing => "missing, skipped".to_string(),
                FileStatus::Empty => "empty, nothing to import".to_string(),
                FileStatus::Read(n) => format!("{n} record{}", if *n == 1 { "" } else { "s" }),
                FileStatus::Unusable(why) => format!("not imported: {why}"),
            };
            writeln!(f, "  {:<20} {status}", file.file)?;
        }
        writeln!(
            f,
            "  {:<10} {:>8} {:>8} {:>12} {:>8} {:>14}",
            "", "records", "skipped", verb, "already", "kept existing"
        )?;
        for (name, kind) in [
            ("tasks", &self.tasks),
            ("sessions", &self.sessions),
            ("cost days", &self.costs),
            ("restart", &self.restart),
        ] {
            writeln!(
                f,
                "  {name:<10} {:>8} {:>8} {:>12} {:>8} {:>14}",
                kind.records,
                kind.skipped,
                kind.counts.imported,
                kind.counts.already_imported,
                kind.counts.kept_existing
            )?;
        }
        writeln!(f, "tasks queued to run: {}", self.queued)?;
        let skipped: Vec<_> = self.skipped().collect();
        if !skipped.is_empty() {
            writeln!(f, "skipped records ({}):", skipped.len())?;
            for s in skipped {
                writeln!(f, "  {} {}: {}", s.file, s.record, s.reason)?;
            }
        }
        let implausible: Vec<_> = self.implausible().collect();
        if !implausible.is_empty() {
            writeln!(
                f,
                "implausible or unreadable timestamps ({}; their records were still imported):",
                implausible.len()
            )?;
            for t in implausible {
                writeln!(
                    f,
                    "  {} {} `{}` = {}: {}; {}",
                    t.file, t.record, t.field, t.raw, t.problem, t.action
                )?;
            }
        }
        let notes: Vec<_> = self
            .files
            .iter()
            .flat_map(|file| file.notes.iter().map(move |n| (&file.file, n)))
            .collect();
        if !notes.is_empty() || self.store_note.is_some() {
            writeln!(f, "notes:")?;
            for (file, note) in notes {
                writeln!(f, "  {file}: {note}")?;
            }
            if let Some(note) = &self.store_note {
                writeln!(f, "  {note}")?;
            }
        }
        Ok(())
    }
}
