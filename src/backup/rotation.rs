//! Rotation: which snapshots to keep.
//!
//! Kept: the newest `keep`; plus, with `keep_daily` > 0, the newest snapshot of each
//! of the newest `keep_daily` UTC days that have one; plus, with `keep_weekly` > 0,
//! the newest of each of the newest `keep_weekly` ISO weeks. Everything else may be
//! deleted. Rotation runs only after a snapshot was verified, so a failing backup
//! never costs an older good one.

use chrono::{Datelike, TimeZone, Utc};

use super::files::SnapshotFile;
use crate::config::BackupConfig;

/// The snapshots to delete under `policy`, given every snapshot (any order).
pub fn snapshots_to_delete(snapshots: &[SnapshotFile], policy: &BackupConfig) -> Vec<SnapshotFile> {
    let mut newest_first: Vec<&SnapshotFile> = snapshots.iter().collect();
    newest_first.sort_by_key(|s| std::cmp::Reverse(s.taken_ms));
    let mut keep = vec![false; newest_first.len()];
    for slot in keep.iter_mut().take(policy.keep.max(1)) {
        *slot = true;
    }
    keep_newest_per_period(&newest_first, &mut keep, policy.keep_daily, day_of);
    keep_newest_per_period(&newest_first, &mut keep, policy.keep_weekly, week_of);
    newest_first
        .into_iter()
        .zip(keep)
        .filter(|(_, kept)| !kept)
        .map(|(s, _)| s.clone())
        .collect()
}

fn keep_newest_per_period(
    newest_first: &[&SnapshotFile],
    keep: &mut [bool],
    periods: usize,
    period_of: fn(u64) -> i64,
) {
    let mut seen: Vec<i64> = Vec::new();
    for (i, snapshot) in newest_first.iter().enumerate() {
        if seen.len() >= periods {
            break;
        }
        let period = period_of(snapshot.taken_ms);
        if !seen.contains(&period) {
            seen.push(period);
            keep[i] = true;
        }
    }
}

fn day_of(ms: u64) -> i64 {
    (ms / 86_400_000) as i64
}

fn week_of(ms: u64) -> i64 {
    match Utc.timestamp_millis_opt(ms as i64).single() {
        Some(t) => {
            let week = t.iso_week();
            i64::from(week.year()) * 100 + i64::from(week.week())
        }
        None => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    const HOUR: u64 = 3_600_000;

    fn snapshots(hours: u64, start: u64) -> Vec<SnapshotFile> {
        (0..hours)
            .map(|h| SnapshotFile {
                path: PathBuf::from(format!("{h}")),
                taken_ms: start + h * HOUR,
                size_bytes: 1,
            })
            .collect()
    }

    fn policy(keep: usize, keep_daily: usize, keep_weekly: usize) -> BackupConfig {
        BackupConfig {
            keep,
            keep_daily,
            keep_weekly,
            ..BackupConfig::default()
        }
    }

    #[test]
    fn keeps_only_the_newest_without_daily_or_weekly() {
        let all = snapshots(30, 1_700_000_000_000);
        let deleted = snapshots_to_delete(&all, &policy(24, 0, 0));
        assert_eq!(deleted.len(), 6);
        assert!(deleted.iter().all(|s| s.taken_ms < all[6].taken_ms));
    }

    #[test]
    fn daily_keeps_add_the_newest_of_each_older_day() {
        // 10 days of hourly snapshots, starting at a UTC midnight.
        let all = snapshots(240, 1_699_920_000_000);
        let deleted = snapshots_to_delete(&all, &policy(24, 7, 0));
        // 24 newest (the last day) + the newest of the 6 days before it.
        assert_eq!(all.len() - deleted.len(), 24 + 6);
    }
}
