//! Whether there is room for a new prompt: the disk check of the intake.
//!
//! Below `storage.min_free_mb` free, a prompt is refused *before* anything is
//! written, so nothing is half-stored; first the disk guard's pruning
//! ([`crate::backup::disk::prune`]) gets a chance to free space, at most once a
//! minute (it walks every run folder, on the caller's thread). Files a user
//! sends count too ([`admit_download`]): they are refused when storing them
//! would leave less than the minimum free where they go.

use std::path::Path;

use crate::backup::disk::{DiskLevel, free_bytes, health_check, prune};
use crate::config::Config;
use crate::storage::{Store, now_ms};

/// Why a prompt was refused.
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "The server's disk is almost full ({free_mb} MB free, {min_mb} MB needed), so new prompts are refused until space is freed. Nothing you sent earlier is lost."
)]
pub struct DiskFull {
    /// Free MiB.
    pub free_mb: u64,
    /// Required MiB.
    pub min_mb: u64,
}

/// Whether a new prompt may be stored. When the disk is below the minimum, prunes
/// first and measures again. Blocking (statvfs; pruning only when low).
pub fn admit_prompt(config: &Config, store: &Store) -> Result<(), DiskFull> {
    if health_check(config).level != DiskLevel::Fail {
        return Ok(());
    }
    // Pruning walks every run folder: it runs on the caller's (async) thread, so
    // at most once a minute, not once per refused prompt.
    static LAST_PRUNE_MS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let now = now_ms();
    let last = LAST_PRUNE_MS.load(std::sync::atomic::Ordering::Relaxed);
    if now.saturating_sub(last) >= 60_000
        && LAST_PRUNE_MS
            .compare_exchange(
                last,
                now,
                std::sync::atomic::Ordering::Relaxed,
                std::sync::atomic::Ordering::Relaxed,
            )
            .is_ok()
    {
        prune(config, store);
    }
    let health = health_check(config);
    if health.level == DiskLevel::Fail {
        Err(DiskFull {
            free_mb: health.free_bytes / (1024 * 1024),
            min_mb: config.storage.min_free_mb,
        })
    } else {
        Ok(())
    }
}

/// Whether `bytes` more may be written under `dir` (the inbox of a bot's
/// workdir, maybe on another file system than the data folder): the prompt's
/// check first, then the minimum must stay free after the download. Blocking.
pub fn admit_download(
    config: &Config,
    store: &Store,
    dir: &Path,
    bytes: u64,
) -> Result<(), DiskFull> {
    admit_prompt(config, store)?;
    let min_bytes = config.storage.min_free_mb * 1024 * 1024;
    let free = free_bytes(dir).unwrap_or(u64::MAX);
    if free.saturating_sub(bytes) < min_bytes {
        return Err(DiskFull {
            free_mb: free / (1024 * 1024),
            min_mb: config.storage.min_free_mb,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::StoreOptions;

    #[test]
    fn a_download_counts_against_the_free_space() {
        let dir = tempfile::tempdir().expect("tempdir");
        let free_mb = free_bytes(dir.path()).expect("statvfs") / (1024 * 1024);
        if free_mb < 1024 {
            return; // too little room to leave a margin both ways
        }
        let mut config = Config {
            data_dir: dir.path().join("data"),
            ..Config::default()
        };
        // A prompt fits (500 MiB to spare), a download as large as the disk does not.
        config.storage.min_free_mb = free_mb - 500;
        std::fs::create_dir_all(&config.data_dir).expect("data dir");
        let store = Store::open(&config.database_path(), StoreOptions::default()).expect("store");
        assert!(admit_prompt(&config, &store).is_ok());
        assert!(admit_download(&config, &store, dir.path(), 1024 * 1024).is_ok());
        let refused = admit_download(&config, &store, dir.path(), free_mb * 1024 * 1024)
            .expect_err("no room for it");
        assert_eq!(refused.min_mb, free_mb - 500);
    }
}
