//! `agentlab run`: one process hosting every bot, the worker pool, the monitors,
//! the backup scheduler and the HTTP server, around one store.
//!
//! [`ServiceContext`] is what the parts share; [`run`] (in `startup`) is the
//! start-up barrier (`docs/ARCHITECTURE.md`) and the shutdown that closes the store on every
//! path. The in-memory state kept here (readiness, each bot's Telegram link) is what
//! `/health` answers from, so health never blocks on a slow dependency.

mod startup;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::{Notify, watch};

use crate::breaker::Circuits;
use crate::config::Config;
use crate::storage::Store;
use crate::worker::Pool;

pub use startup::{RunOptions, addr_file, run};

/// Exit code asking the service manager to start the process again.
pub const RESTART_EXIT_CODE: i32 = 42;

/// Everything the parts of a running service share.
pub struct ServiceContext {
    /// The configuration.
    pub config: Arc<Config>,
    /// The store.
    pub store: Store,
    /// The circuit breakers.
    pub circuits: Circuits,
    /// The worker pool.
    pub pool: Pool,
    /// When the process started (monotonic).
    pub started: Instant,
    /// When the process started, unix ms.
    pub started_ms: u64,
    /// The admin bearer token, if configured.
    pub admin_token: Option<String>,
    /// Each bot's Telegram link state.
    pub links: BTreeMap<String, Arc<TelegramLink>>,
    /// Each bot's outbox wake-up.
    pub outbox_wake: BTreeMap<String, Arc<Notify>>,
    /// Each bot's tasks re-queued for another attempt, for its progress messages.
    pub retried: BTreeMap<String, Arc<RetriedTasks>>,
    /// The start-up barrier has passed.
    pub ready: AtomicBool,
    /// Shutdown was requested.
    pub shutdown: Shutdown,
    /// Things start-up wants an operator to know (restored snapshot, odd restart state).
    pub notices: Mutex<Vec<String>>,
    /// Each bot's token (from its environment variable). Never logged.
    pub bot_tokens: BTreeMap<String, String>,
    /// The monitors' latest snapshot.
    pub monitor: crate::monitor::MonitorHandle,
    /// The offsite backup uploader (disabled without `[backup.remote]`).
    pub offsite: crate::backup::remote::offsite::Offsite,
}

impl ServiceContext {
    /// A context for `config`'s bots over `store`, started now, not yet ready, with
    /// no tokens and no admin token (start-up sets those; tests and benches build
    /// contexts this way too).
    pub fn new(config: Arc<Config>, store: Store, circuits: Circuits, pool: Pool) -> Self {
        let bot_ids: Vec<String> = config.bots.iter().map(|b| b.id.clone()).collect();
        ServiceContext {
            links: bot_ids
                .iter()
                .map(|id| (id.clone(), Arc::new(TelegramLink::default())))
                .collect(),
            outbox_wake: bot_ids
                .iter()
                .map(|id| (id.clone(), Arc::new(Notify::new())))
                .collect(),
            retried: bot_ids
                .iter()
                .map(|id| (id.clone(), Arc::default()))
                .collect(),
            config,
            store,
            circuits,
            pool,
            started: Instant::now(),
            started_ms: crate::storage::now_ms(),
            admin_token: None,
            ready: AtomicBool::new(false),
            shutdown: Shutdown::new(),
            notices: Mutex::default(),
            bot_tokens: BTreeMap::new(),
            monitor: Default::default(),
            offsite: Default::default(),
        }
    }

    /// Seconds since start.
    pub fn uptime_s(&self) -> u64 {
        self.started.elapsed().as_secs()
    }

    /// Whether the service takes work (ready and not shutting down).
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst) && !self.shutdown.is_requested()
    }

    /// Wakes the outbox delivery of a bot.
    pub fn wake_outbox(&self, bot_id: &str) {
        if let Some(n) = self.outbox_wake.get(bot_id) {
            n.notify_one();
        }
    }

    /// Tells a bot's progress updater that `task` was re-queued for another attempt.
    pub fn task_retried(&self, task: &crate::storage::Task) {
        if let Some(retried) = self.retried.get(&task.bot_id) {
            retried
                .ids
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(task.id);
            retried.wake.notify_one();
        }
    }

    /// Records a notice for operators (shown in health and logs).
    pub fn add_notice(&self, notice: String) {
        tracing::warn!(notice = %notice, "start-up notice");
        self.notices
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(notice);
    }
}

/// Tasks of one bot re-queued for another attempt since its progress updater
/// last looked, so the chat is told of the retry at once (a failing attempt can
/// last milliseconds, far less than the updater's tick).
#[derive(Debug, Default)]
pub struct RetriedTasks {
    /// Their ids. A std Mutex: held for a push or a drain, never across an await.
    pub ids: Mutex<Vec<u64>>,
    /// Woken on each push.
    pub wake: Notify,
}

impl RetriedTasks {
    /// The ids pushed since the last call.
    pub fn take(&self) -> Vec<u64> {
        std::mem::take(&mut *self.ids.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// The shutdown signal: a watch channel every long-running part listens to, and
/// the exit code the process should end with.
#[derive(Clone, Debug)]
pub struct Shutdown {
    tx: Arc<watch::Sender<bool>>,
    exit_code: Arc<AtomicI32>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Self::new()
    }
}

impl Shutdown {
    /// A signal not yet given.
    pub fn new() -> Self {
        let (tx, _) = watch::channel(false);
        Shutdown {
            tx: Arc::new(tx),
            exit_code: Arc::new(AtomicI32::new(0)),
        }
    }

    /// Asks everything to stop; the process exits with `code`.
    pub fn request(&self, code: i32) {
        self.exit_code.store(code, Ordering::SeqCst);
        self.tx.send_replace(true);
    }

    /// Whether shutdown was asked for.
    pub fn is_requested(&self) -> bool {
        *self.tx.borrow()
    }

    /// A receiver that turns true at shutdown. Subscribed after the request (a
    /// task first polled just after a stop right after start), it reports the
    /// request as a change still to be seen: a plain subscription counts the
    /// current value as seen, and its `changed()` would wait forever.
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        let mut rx = self.tx.subscribe();
        if *rx.borrow() {
            rx.mark_changed();
        }
        rx
    }

    /// Waits until shutdown is asked for.
    pub async fn wait(&self) {
        let mut rx = self.subscribe();
        while !*rx.borrow_and_update() {
            if rx.changed().await.is_err() {
                return;
            }
        }
    }

    /// The exit code asked for.
    pub fn exit_code(&self) -> i32 {
        self.exit_code.load(Ordering::SeqCst)
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// A part whose loop first runs after a stop that came right after start
    /// must still see the stop, or the shutdown waits for it forever.
    #[tokio::test]
    async fn a_receiver_subscribed_after_the_request_sees_it() {
        let shutdown = Shutdown::new();
        let mut before = shutdown.subscribe();
        shutdown.request(0);
        let mut after = shutdown.subscribe();
        for rx in [&mut before, &mut after] {
            tokio::time::timeout(Duration::from_secs(5), rx.changed())
                .await
                .expect("the request is seen")
                .expect("the sender is alive");
            assert!(*rx.borrow_and_update());
        }
        let untouched = Shutdown::new();
        let mut idle = untouched.subscribe();
        assert!(
            tokio::time::timeout(Duration::from_millis(50), idle.changed())
                .await
                .is_err(),
            "a change reported with no request"
        );
    }
}
