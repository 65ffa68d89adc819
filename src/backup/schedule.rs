//! The backup schedule: `backup.schedule` (six-field cron, hourly by default).
//!
//! Why croner and not tokio-cron-scheduler: tokio-cron-scheduler keeps each job's
//! next run time and fires only while `last check <= next run <= now`; its repeated
//! jobs advance that time from the previous one, so once the process was suspended
//! (or starved) past a tick the next run time lies behind the last check and the job
//! never fires again (its open drift report; with tokio-cron-scheduler 0.15 a
//! one-second repeated job suspended for 3.5 s fired once in the next 4 s).
//! `tests/it/backup_schedule.rs` checks that this schedule keeps firing. The loop here cannot get stuck that way: after every run (or wake-up) it
//! computes the next occurrence afresh from the wall clock, and it sleeps in slices
//! of at most [`MAX_SLEEP`], re-reading the wall clock each time, so a laptop
//! sleep (when the monotonic clock stops but the wall clock does not) delays a
//! snapshot by at most one slice. Ticks missed while suspended are not replayed: one
//! snapshot is taken on waking, then the schedule continues.
//!
//! A failed snapshot is retried after each of [`RETRY_DELAYS`]; when all failed,
//! the `backup_failed` alert is raised (and resolved by the next success).

use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::Backups;
use crate::config::parse_cron;
use crate::shutdown::Shutdown;

/// Longest single sleep before the wall clock is read again.
pub const MAX_SLEEP: Duration = Duration::from_secs(30);
/// Pauses before the retries of a failed scheduled snapshot.
pub const RETRY_DELAYS: [Duration; 3] = [
    Duration::from_secs(30),
    Duration::from_secs(120),
    Duration::from_secs(300),
];

/// Starts the scheduled snapshots (a no-op with a logged error if the schedule
/// does not parse; configuration validation refuses that earlier).
pub fn spawn(backups: Backups, shutdown: &Shutdown, tasks: &mut JoinSet<()>) {
    let cron = match parse_cron(&backups.config.backup.schedule) {
        Ok(cron) => cron,
        Err(e) => {
            tracing::error!(schedule = %backups.config.backup.schedule, error = %e, "backup schedule is invalid; no scheduled snapshots");
            return;
        }
    };
    let shutdown = shutdown.clone();
    tasks.spawn(async move {
        let stop = shutdown.subscribe();
        run_on_schedule(cron, stop, move || {
            let (backups, shutdown) = (backups.clone(), shutdown.clone());
            async move { scheduled_backup(&backups, &shutdown).await }
        })
        .await;
    });
}

#[tracing::instrument(skip_all)]
async fn scheduled_backup(backups: &Backups, shutdown: &Shutdown) {
    let store = backups.store.clone();
    let config = backups.config.clone();
    let mut shutdown = shutdown.subscribe();
    let mut attempt = 0usize;
    loop {
        attempt += 1;
        let (store2, config2) = (store.clone(), config.clone());
        let result =
            tokio::task::spawn_blocking(move || super::backup_now(&store2, &config2)).await;
        let error = match result {
            Ok(Ok(_)) => {
                backups.offsite.snapshot_taken();
                return;
            }
            Ok(Err(e)) => e,
            Err(join) => {
                tracing::error!(error = %join, "snapshot task panicked");
                return;
            }
        };
        let Some(delay) = RETRY_DELAYS.get(attempt - 1) else {
            let store = store.clone();
            let _ = tokio::task::spawn_blocking(move || {
                super::create::report_backup_failure(&store, &error, attempt)
            })
            .await;
            return;
        };
        tracing::warn!(error = %error, attempt, retry_in_s = delay.as_secs(), "scheduled snapshot failed; will retry");
        tokio::select! {
            _ = tokio::time::sleep(*delay) => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// Runs `job` at every occurrence of `cron` until `shutdown` turns true. The next
/// occurrence is always computed from the wall clock after the previous run, so
/// the loop never falls behind for good (see the module comment).
pub async fn run_on_schedule<F, Fut>(
    cron: croner::Cron,
    mut shutdown: watch::Receiver<bool>,
    mut job: F,
) where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    loop {
        let Some(next) = next_occurrence(&cron, Utc::now()) else {
            tracing::error!(
                "the backup schedule has no future occurrence; no more scheduled snapshots"
            );
            return;
        };
        tracing::debug!(next = %next, "next scheduled snapshot");
        tokio::select! {
            _ = sleep_until_wall_clock(next) => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        if *shutdown.borrow() {
            return;
        }
        job().await;
    }
}

/// The first occurrence strictly after `now`.
pub fn next_occurrence(cron: &croner::Cron, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    cron.find_next_occurrence(&now, false).ok()
}

/// Sleeps until the wall clock reads `at` or later, re-reading it at least every
/// [`MAX_SLEEP`].
async fn sleep_until_wall_clock(at: DateTime<Utc>) {
    loop {
        let now = Utc::now();
        if now >= at {
            return;
        }
        let remaining = (at - now).to_std().unwrap_or(Duration::ZERO).min(MAX_SLEEP);
        tokio::time::sleep_until(tokio::time::Instant::now() + remaining).await;
    }
}
