//! What the running service knows about itself, kept in memory so `/health`,
//! `/status` and the monitors answer from it without touching a slow dependency.
//!
//! Each item is a small cloneable handle the composition root creates once and
//! hands to the parts that write or read it: [`Started`] (when the process
//! started), [`Readiness`] (the start-up barrier has passed and no stop was asked
//! for), [`TelegramLinks`] (each bot's connection to Telegram, written by its
//! poller) and [`Notices`] (things start-up wants an operator to know). None of
//! them names a part above it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::shutdown::Shutdown;

/// When the process started, monotonic and wall-clock.
#[derive(Debug, Clone, Copy)]
pub struct Started {
    at: Instant,
    unix_ms: u64,
}

impl Started {
    /// Started now.
    pub fn now() -> Self {
        Started {
            at: Instant::now(),
            unix_ms: crate::storage::now_ms(),
        }
    }

    /// Started at `at`, which was `unix_ms` on the wall clock (tests pin the latter).
    pub fn at(at: Instant, unix_ms: u64) -> Self {
        Started { at, unix_ms }
    }

    /// Time since start.
    pub fn elapsed(&self) -> Duration {
        self.at.elapsed()
    }

    /// Seconds since start.
    pub fn uptime_s(&self) -> u64 {
        self.elapsed().as_secs()
    }

    /// The start, unix ms.
    pub fn unix_ms(&self) -> u64 {
        self.unix_ms
    }
}

/// Whether the service takes work: set once the start-up barrier has passed,
/// cleared at shutdown, and never true while a stop is requested.
#[derive(Debug, Clone)]
pub struct Readiness {
    ready: Arc<AtomicBool>,
    shutdown: Shutdown,
}

impl Readiness {
    /// Not ready yet; unready as soon as `shutdown` is requested.
    pub fn new(shutdown: Shutdown) -> Self {
        Readiness {
            ready: Arc::new(AtomicBool::new(false)),
            shutdown,
        }
    }

    /// Marks the barrier passed (`true`) or the service stopping (`false`).
    pub fn set(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }

    /// Whether the service takes work (ready and not shutting down).
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst) && !self.shutdown.is_requested()
    }

    /// Whether the barrier was passed (even if a stop is requested since).
    pub fn barrier_passed(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    /// Whether a stop was requested.
    pub fn stopping(&self) -> bool {
        self.shutdown.is_requested()
    }
}

/// Each configured bot's [`TelegramLink`], by bot id (fixed at start).
#[derive(Debug, Clone, Default)]
pub struct TelegramLinks {
    links: Arc<BTreeMap<String, Arc<TelegramLink>>>,
}

impl TelegramLinks {
    /// A fresh link for each of `bot_ids`.
    pub fn new<'a>(bot_ids: impl IntoIterator<Item = &'a str>) -> Self {
        TelegramLinks {
            links: Arc::new(
                bot_ids
                    .into_iter()
                    .map(|id| (id.to_string(), Arc::new(TelegramLink::default())))
                    .collect(),
            ),
        }
    }

    /// The link of `bot_id`, if it is configured.
    pub fn get(&self, bot_id: &str) -> Option<&Arc<TelegramLink>> {
        self.links.get(bot_id)
    }

    /// Every link, by bot id.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &Arc<TelegramLink>)> {
        self.links.iter()
    }
}

impl<'a> IntoIterator for &'a TelegramLinks {
    type Item = (&'a String, &'a Arc<TelegramLink>);
    type IntoIter = std::collections::btree_map::Iter<'a, String, Arc<TelegramLink>>;

    fn into_iter(self) -> Self::IntoIter {
        self.links.iter()
    }
}

/// Things start-up wants an operator to know (a restored snapshot, an odd restart
/// state), shown by `/health` and logged when added.
#[derive(Debug, Clone, Default)]
pub struct Notices {
    /// A std Mutex: held for a push or a copy, never across an await.
    list: Arc<Mutex<Vec<String>>>,
}

impl Notices {
    /// Records a notice (and logs it).
    pub fn add(&self, notice: String) {
        tracing::warn!(notice = %notice, "start-up notice");
        self.list
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(notice);
    }

    /// Every notice so far, oldest first.
    pub fn list(&self) -> Vec<String> {
        self.list.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// What the service knows about one bot's connection to Telegram.
#[derive(Debug, Default)]
pub struct TelegramLink {
    /// Unix ms of the last successful getUpdates.
    pub last_poll_ok_ms: AtomicU64,
    /// Consecutive failed polls.
    pub consecutive_failures: AtomicU64,
    /// 409 Conflicts seen (another process polls this token).
    pub conflicts: AtomicU64,
    /// Whether the last poll ended in a 409.
    pub in_conflict: AtomicBool,
    /// The bot's username, once known.
    pub username: Mutex<Option<String>>,
    /// The last error, redacted.
    pub last_error: Mutex<Option<String>>,
    /// Updates handled.
    pub updates: AtomicU64,
}

impl TelegramLink {
    /// Records a successful poll.
    pub fn poll_ok(&self, now_ms: u64) {
        self.last_poll_ok_ms.store(now_ms, Ordering::Relaxed);
        self.consecutive_failures.store(0, Ordering::Relaxed);
        self.in_conflict.store(false, Ordering::Relaxed);
    }

    /// Records a failed poll.
    pub fn poll_failed(&self, error: String) {
        self.consecutive_failures.fetch_add(1, Ordering::Relaxed);
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(error);
    }

    /// The bot's username.
    pub fn username(&self) -> Option<String> {
        self.username
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The last error.
    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}
