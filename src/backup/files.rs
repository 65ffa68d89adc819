//! Snapshot files: their names, and finding them in the backup folder.
//!
//! A snapshot is `agentlab-<UTC time>.redb`, e.g. `agentlab-20250101T120000.123Z.redb`:
//! names sort in time order, and the time is read back from the name (never from
//! the file's mtime, which a copy changes). Invariant: a name ending in `.redb` only
//! ever appears by renaming a `.redb.tmp` that passed verification, so an
//! interrupted snapshot never looks like a good one.

use std::path::{Path, PathBuf};

use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};

const PREFIX: &str = "agentlab-";
const SUFFIX: &str = ".redb";
/// Suffix of a snapshot being written.
pub const TMP_SUFFIX: &str = ".redb.tmp";
const TIME_FORMAT: &str = "%Y%m%dT%H%M%S%.3fZ";

/// A snapshot file found in the backup folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotFile {
    /// Where it is.
    pub path: PathBuf,
    /// When it was taken (from its name), unix ms.
    pub taken_ms: u64,
    /// Size in bytes.
    pub size_bytes: u64,
}

/// The file name of a snapshot taken at `taken_ms`.
pub fn snapshot_name(taken_ms: u64) -> String {
    format!("{PREFIX}{}{SUFFIX}", utc_stamp(taken_ms))
}

/// A UTC timestamp usable in file names (`20250101T120000.123Z`).
pub fn utc_stamp(ms: u64) -> String {
    Utc.timestamp_millis_opt(ms as i64)
        .single()
        .map(|t| t.format(TIME_FORMAT).to_string())
        .unwrap_or_else(|| ms.to_string())
}

/// The time in a snapshot's file name, if it is one.
pub fn parse_snapshot_name(name: &str) -> Option<u64> {
    let stamp = name.strip_prefix(PREFIX)?.strip_suffix(SUFFIX)?;
    let time = NaiveDateTime::parse_from_str(stamp, TIME_FORMAT).ok()?;
    let time: DateTime<Utc> = Utc.from_utc_datetime(&time);
    u64::try_from(time.timestamp_millis()).ok()
}

/// Every snapshot in `dir`, newest first. A missing folder has none.
pub fn list_snapshots(dir: &Path) -> std::io::Result<Vec<SnapshotFile>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let Some(taken_ms) = name.to_str().and_then(parse_snapshot_name) else {
            continue;
        };
        let meta = entry.metadata()?;
        if meta.is_file() {
            out.push(SnapshotFile {
                path: entry.path(),
                taken_ms,
                size_bytes: meta.len(),
            });
        }
    }
    out.sort_by(|a, b| {
        b.taken_ms
            .cmp(&a.taken_ms)
            .then_with(|| b.path.cmp(&a.path))
    });
    Ok(out)
}

/// Removes `agentlab-*.redb.tmp` files left by an interrupted snapshot. Only one
/// snapshot runs at a time (see `create`), so none of them is in progress.
pub fn remove_stale_temporaries(dir: &Path) -> std::io::Result<usize> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let mut removed = 0;
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.starts_with(PREFIX) && name.ends_with(TMP_SUFFIX) {
            std::fs::remove_file(entry.path())?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// fsyncs a folder, so a rename inside it survives a power cut.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_sort_in_time_order() {
        let a = 1_700_000_000_123;
        let b = a + 1;
        assert_eq!(parse_snapshot_name(&snapshot_name(a)), Some(a));
        assert!(snapshot_name(a) < snapshot_name(b));
        assert_eq!(snapshot_name(a), "agentlab-20231114T221320.123Z.redb");
    }

    #[test]
    fn other_files_are_not_snapshots() {
        assert_eq!(
            parse_snapshot_name("agentlab-20231114T221320.123Z.redb.tmp"),
            None
        );
        assert_eq!(parse_snapshot_name("agentlab.redb"), None);
        assert_eq!(parse_snapshot_name("README.md"), None);
    }
}
