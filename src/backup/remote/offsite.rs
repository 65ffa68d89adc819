//! The background uploader: after each verified local snapshot (and at start, and
//! on retries) it makes sure the newest local snapshot has a verified remote copy,
//! then rotates the remote.
//!
//! Invariants:
//! - nothing here runs on a prompt's path: the snapshot code only wakes the
//!   uploader ([`Offsite::snapshot_taken`]), which works in a task of its own;
//! - the remote is a dependency with its own circuit breaker (the `[breaker]`
//!   settings, persisted under the service-wide bot id
//!   [`crate::breaker::SERVICE_BOT_ID`], dependency `offsite`); while it is open
//!   no call is made, and the next attempt waits for its probe;
//! - a failed attempt is retried after a pause that doubles from 1 s up to
//!   `retry_max_s`; a new snapshot meanwhile wakes it early;
//! - the newest verified copy is recorded (meta `last_offsite_backup`, JSON) and
//!   its age drives the `backup_offsite_stale` alert and the `/health` check
//!   (warn, never fail).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::Notify;
use tokio::task::JoinSet;

use super::{Remote, RemoteError};
use crate::backup::files;
use crate::breaker::{CircuitBreaker, State};
use crate::clock::SystemClock;
use crate::config::Config;
use crate::shutdown::Shutdown;
use crate::storage::{Store, now_ms};

/// The dependency name of the remote's breaker.
pub const DEPENDENCY: &str = "offsite";
/// Meta key of the newest verified remote copy.
const META_KEY: &str = "last_offsite_backup";
/// First pause after a failure.
const FIRST_RETRY: Duration = Duration::from_secs(1);

/// The newest verified remote copy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewestCopy {
    /// The data object.
    pub object: String,
    /// When its snapshot was taken, unix ms.
    pub taken_ms: u64,
    /// Object size.
    pub size_bytes: u64,
}

/// What the uploader knows, for `/health`, the dashboard and the alert rules.
#[derive(Debug, Clone, Default, Serialize)]
pub struct OffsiteStatus {
    /// The newest verified copy, once known.
    pub newest: Option<NewestCopy>,
    /// With no copy known: when the oldest local snapshot still waiting to go
    /// offsite was taken.
    pub pending_since_ms: Option<u64>,
    /// When the last attempt succeeded, unix ms.
    pub last_success_ms: Option<u64>,
    /// The last attempt's error, if it failed.
    pub last_error: Option<String>,
    /// Failed attempts in a row.
    pub consecutive_failures: u64,
    /// Copies uploaded by this process.
    pub uploads: u64,
}

/// A view of the remote for reports.
#[derive(Debug, Clone, Serialize)]
pub struct OffsiteReport {
    /// The remote (credentials redacted).
    pub url: String,
    /// Whether copies are encrypted.
    pub encrypted: bool,
    /// The breaker's state.
    pub circuit: String,
    /// Seconds since the newest copy's snapshot was taken (or since the oldest
    /// snapshot waiting, with none), once known.
    pub age_s: Option<u64>,
    /// `stale_after_s`.
    pub stale_after_s: u64,
    /// Whether the newest copy is older than `stale_after_s`.
    pub stale: bool,
    /// The uploader's state.
    #[serde(flatten)]
    pub status: OffsiteStatus,
}

struct Inner {
    remote: Remote,
    store: Store,
    backup_dir: std::path::PathBuf,
    keep: usize,
    stale_after_ms: u64,
    retry_max: Duration,
    breaker: CircuitBreaker,
    wake: Notify,
    /// A std Mutex: held only to read or replace the status, never across an await.
    status: Mutex<OffsiteStatus>,
}

/// The handle of the uploader; cheap to clone. Disabled when no remote is configured.
#[derive(Clone, Default)]
pub struct Offsite {
    inner: Option<Arc<Inner>>,
}

impl std::fmt::Debug for Offsite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.inner {
            Some(inner) => write!(f, "Offsite({:?})", inner.remote),
            None => write!(f, "Offsite(disabled)"),
        }
    }
}

impl Offsite {
    /// No remote.
    pub fn disabled() -> Self {
        Offsite { inner: None }
    }

    /// The uploader for `config`'s remote (disabled without one), with its breaker
    /// restored from the store and the newest copy as last recorded.
    pub fn new(config: &Config, store: &Store) -> Result<Self, RemoteError> {
        let Some(remote) = Remote::from_config(&config.backup.remote)? else {
            return Ok(Self::disabled());
        };
        let breaker = crate::breaker::service_breaker(
            store,
            DEPENDENCY,
            &config.breaker,
            Arc::new(SystemClock::new()),
        );
        let newest = match store.get_meta(META_KEY) {
            Ok(Some(bytes)) => serde_json::from_slice::<NewestCopy>(&bytes).ok(),
            _ => None,
        };
        let r = &config.backup.remote;
        Ok(Offsite {
            inner: Some(Arc::new(Inner {
                remote,
                store: store.clone(),
                backup_dir: config.backup_dir.clone(),
                keep: r.keep,
                stale_after_ms: r.stale_after_s.saturating_mul(1000),
                retry_max: Duration::from_secs(r.retry_max_s),
                breaker,
                wake: Notify::new(),
                status: Mutex::new(OffsiteStatus {
                    newest,
                    ..OffsiteStatus::default()
                }),
            })),
        })
    }

    /// Whether a remote is configured.
    pub fn enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// A verified local snapshot exists: wake the uploader. Never blocks.
    pub fn snapshot_taken(&self) {
        if let Some(inner) = &self.inner {
            inner.wake.notify_one();
        }
    }

    /// The remote's state now, if one is configured.
    pub fn report(&self, now: u64) -> Option<OffsiteReport> {
        let inner = self.inner.as_ref()?;
        let status = inner.status();
        let age_ms = age_ms(&status, now);
        Some(OffsiteReport {
            url: inner.remote.url().to_string(),
            encrypted: inner.remote.encrypts(),
            circuit: inner.breaker.state().as_str().to_string(),
            age_s: age_ms.map(|ms| ms / 1000),
            stale_after_s: inner.stale_after_ms / 1000,
            stale: age_ms.is_some_and(|ms| ms > inner.stale_after_ms),
            status,
        })
    }

    /// Whether the remote's breaker is open.
    pub fn circuit_open(&self) -> bool {
        self.inner
            .as_ref()
            .is_some_and(|i| i.breaker.state() == State::Open)
    }

    /// Starts the uploader; it stops at shutdown.
    pub fn spawn(&self, shutdown: &Shutdown, tasks: &mut JoinSet<()>) {
        let Some(inner) = self.inner.clone() else {
            return;
        };
        let shutdown = shutdown.clone();
        tasks.spawn(async move { inner.run(shutdown).await });
    }
}

fn age_ms(status: &OffsiteStatus, now: u64) -> Option<u64> {
    status
        .newest
        .as_ref()
        .map(|c| c.taken_ms)
        .or(status.pending_since_ms)
        .map(|since| now.saturating_sub(since))
}

/// What the loop does next.
enum Next {
    /// Wait for a new snapshot.
    Idle,
    /// Try again after this pause (or a new snapshot).
    RetryIn(Duration),
}

impl Inner {
    fn status(&self) -> OffsiteStatus {
        self.status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn update(&self, change: impl FnOnce(&mut OffsiteStatus)) {
        change(&mut self.status.lock().unwrap_or_else(|p| p.into_inner()));
    }

    async fn run(self: Arc<Self>, shutdown: Shutdown) {
        let mut stop = shutdown.subscribe();
        let mut pause = FIRST_RETRY;
        tracing::info!(remote = %self.remote.url(), encrypted = self.remote.encrypts(), "offsite uploader started");
        loop {
            if *stop.borrow() {
                return;
            }
            let next = match self.breaker.try_acquire() {
                Err(rejected) => Next::RetryIn(rejected.retry_after().max(FIRST_RETRY)),
                Ok(permit) => {
                    let attempt = tokio::select! {
                        result = self.sync_once() => result,
                        _ = stop.wait_for(|s| *s) => return,
                    };
                    match attempt {
                        Ok(()) => {
                            permit.success();
                            pause = FIRST_RETRY;
                            if self.breaker.state() == State::Closed {
                                Next::Idle
                            } else {
                                // Half-open: the next probe is cheap (a listing).
                                Next::RetryIn(Duration::ZERO)
                            }
                        }
                        Err(e) => {
                            let reason = e.to_string();
                            permit.failure(&reason);
                            let wait = pause;
                            pause = (pause * 2).min(self.retry_max);
                            let failures = {
                                let mut status =
                                    self.status.lock().unwrap_or_else(|p| p.into_inner());
                                status.last_error = Some(reason.clone());
                                status.consecutive_failures += 1;
                                status.consecutive_failures
                            };
                            tracing::warn!(error = %reason, failures, retry_in_ms = wait.as_millis() as u64, "offsite copy failed; will retry");
                            Next::RetryIn(wait)
                        }
                    }
                }
            };
            match next {
                Next::Idle => tokio::select! {
                    _ = self.wake.notified() => {}
                    _ = stop.wait_for(|s| *s) => return,
                },
                Next::RetryIn(wait) => tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = self.wake.notified() => {}
                    _ = stop.wait_for(|s| *s) => return,
                },
            }
        }
    }

    /// One pass: upload the newest local snapshot unless the remote has it, then
    /// rotate.
    #[tracing::instrument(skip_all)]
    async fn sync_once(&self) -> Result<(), RemoteError> {
        let dir = self.backup_dir.clone();
        let local = tokio::task::spawn_blocking(move || files::list_snapshots(&dir))
            .await
            .map_err(|_| RemoteError::Interrupted)?
            .map_err(|e| RemoteError::Io {
                path: self.backup_dir.clone(),
                error: e,
            })?;
        let newest_local = local.into_iter().next();
        if let Some(local) = &newest_local {
            self.update(|s| {
                if s.newest.is_none() {
                    s.pending_since_ms.get_or_insert(local.taken_ms);
                }
            });
        }
        let copies = self.remote.list().await?;
        let mut newest = copies.iter().find(|c| c.complete).map(|c| NewestCopy {
            object: c.object.clone(),
            taken_ms: c.taken_ms,
            size_bytes: c.size_bytes,
        });
        if let Some(local) = newest_local {
            let name = local
                .path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let offsite = copies.iter().any(|c| c.complete && c.snapshot == name);
            if !offsite {
                let started = std::time::Instant::now();
                let manifest = self.remote.upload(&local).await?;
                let elapsed_ms = started.elapsed().as_millis() as u64;
                tracing::info!(object = %manifest.object, size_bytes = manifest.size_bytes, encrypted = manifest.encrypted, elapsed_ms, "offsite copy uploaded and verified");
                let payload = json!({
                    "object": manifest.object,
                    "size_bytes": manifest.size_bytes,
                    "encrypted": manifest.encrypted,
                    "elapsed_ms": elapsed_ms,
                    "verified": true,
                });
                if let Err(e) = self
                    .store
                    .append_event("offsite_backup", None, payload, now_ms())
                    .await
                {
                    tracing::warn!(error = %e, "cannot record the offsite_backup event");
                }
                if newest
                    .as_ref()
                    .is_none_or(|n| n.taken_ms <= manifest.taken_ms)
                {
                    newest = Some(NewestCopy {
                        object: manifest.object,
                        taken_ms: manifest.taken_ms,
                        size_bytes: manifest.size_bytes,
                    });
                }
                self.update(|s| s.uploads += 1);
            }
        }
        let removed = self.remote.rotate(self.keep).await?;
        if !removed.is_empty() {
            tracing::info!(removed = removed.len(), "old offsite copies rotated out");
        }
        if let Some(copy) = &newest
            && let Ok(bytes) = serde_json::to_vec(copy)
            && let Err(e) = self.store.put_meta(META_KEY, bytes).await
        {
            tracing::warn!(error = %e, "cannot record the newest offsite copy");
        }
        self.update(|s| {
            if newest.is_some() {
                s.newest = newest;
                s.pending_since_ms = None;
            }
            s.last_success_ms = Some(now_ms());
            s.last_error = None;
            s.consecutive_failures = 0;
        });
        Ok(())
    }
}

/// Uploads the newest local snapshot and rotates, once, in the calling task
/// (`agentlab backup` when no service runs). `Ok(None)` without a remote.
pub async fn upload_newest_now(config: &Config) -> Result<Option<String>, RemoteError> {
    let Some(remote) = Remote::from_config(&config.backup.remote)? else {
        return Ok(None);
    };
    let dir = config.backup_dir.clone();
    let local = tokio::task::spawn_blocking(move || files::list_snapshots(&dir))
        .await
        .map_err(|_| RemoteError::Interrupted)?
        .map_err(|e| RemoteError::Io {
            path: config.backup_dir.clone(),
            error: e,
        })?;
    let Some(newest) = local.into_iter().next() else {
        return Ok(None);
    };
    let manifest = remote.upload(&newest).await?;
    remote.rotate(config.backup.remote.keep).await?;
    Ok(Some(format!(
        "remote copy {} in {} verified ({} bytes{})",
        manifest.object,
        remote.url(),
        manifest.size_bytes,
        if manifest.encrypted {
            ", encrypted"
        } else {
            ""
        }
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn age_counts_from_the_newest_copy_or_else_the_oldest_waiting_snapshot() {
        let mut status = OffsiteStatus::default();
        assert_eq!(age_ms(&status, 10_000), None);
        status.pending_since_ms = Some(4_000);
        assert_eq!(age_ms(&status, 10_000), Some(6_000));
        status.newest = Some(NewestCopy {
            object: "o".into(),
            taken_ms: 9_000,
            size_bytes: 1,
        });
        assert_eq!(age_ms(&status, 10_000), Some(1_000));
    }
}
