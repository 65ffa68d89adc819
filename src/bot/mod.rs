//! The Telegram side: one runtime per configured bot, each with its own token,
//! Bot API URL and telegram circuit breaker.
//!
//! Per bot, three loops run: the [`poller`] (long polling; an update's offset is
//! confirmed only after the update was handled, so nothing is lost in a crash and
//! re-delivered updates are de-duplicated by the store), the outbox [`delivery`]
//! (finished tasks' answers, retried until Telegram takes them) and the progress
//! updater (typing action and one edited status message per running task).
//!
//! Handles: the bots are built from a [`BotContext`] (the store, the pool, the
//! intake every prompt goes through, the backups, the breakers, the shutdown
//! signal, the start time, the operator notices, each bot's [`TelegramLink`] and
//! token); none of them names the code that builds it. One more loop routes the
//! pool's [`PoolEvent`]s to the bot a task belongs to: a finished task wakes its
//! outbox, a retried one its progress updater. The handler hands each task's
//! "queued" message to the progress updater in memory (`ProgressMessages`), so
//! the updater never waits for that id to reach the store.
//!
//! Invariant: a user hears "queued" only after the task is durable in the store.

mod approval;
pub mod commands;
mod delivery;
mod files;
mod handler;
mod inbox;
mod model;
mod poller;
mod progress;
mod projects;
pub mod render;
mod replies;
pub mod telegram;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use anyhow::Context;
use tokio::sync::{Notify, broadcast, mpsc};
use tokio::task::JoinSet;

use crate::approvals::ApprovalNews;
use crate::backup::Backups;
use crate::breaker::{Circuits, Dependency};
use crate::config::{BotConfig, Config};
use crate::intake::Intake;
use crate::shutdown::Shutdown;
use crate::status::{Notices, Started, TelegramLink, TelegramLinks};
use crate::storage::{RestartState, Store, now_ms};
use crate::worker::{Pool, PoolEvent};
use telegram::TelegramApi;

/// Longest a restart may have taken for its notice to say "back after N s" without
/// a note; older (or future) restart states are reported as implausible.
const PLAUSIBLE_RESTART_MS: u64 = 24 * 3600 * 1000;

/// What the bots are built from: the handles they use, and nothing else.
pub struct BotContext {
    /// The configuration (each bot's section, `limits`).
    pub config: Arc<Config>,
    /// The store.
    pub store: Store,
    /// The circuit breakers (each bot's Telegram breaker, the agent's for acks).
    pub circuits: Circuits,
    /// The worker pool (busy workers, cancelling a run).
    pub pool: Pool,
    /// Where prompts and retries enter.
    pub intake: Intake,
    /// Snapshots on demand (`/backup`).
    pub backups: Backups,
    /// The shutdown signal (`/restart` requests it).
    pub shutdown: Shutdown,
    /// When the process started (`/status`).
    pub started: Started,
    /// Operator notices (an odd restart state).
    pub notices: Notices,
    /// Each bot's Telegram link, written by its poller.
    pub links: TelegramLinks,
    /// Each bot's token, by bot id. Never logged.
    pub tokens: BTreeMap<String, String>,
}

impl BotContext {
    /// Seconds since start.
    pub fn uptime_s(&self) -> u64 {
        self.started.uptime_s()
    }

    /// Records a notice for operators (shown in health and logs).
    pub fn add_notice(&self, notice: String) {
        self.notices.add(notice);
    }
}

/// All bots of the service.
pub struct BotSet {
    bots: Vec<Arc<BotRuntime>>,
    shutdown: Shutdown,
}

/// One bot and its in-memory state.
pub(crate) struct BotRuntime {
    ctx: Arc<BotContext>,
    config: BotConfig,
    api: TelegramApi,
    link: Arc<TelegramLink>,
    /// std Mutex: held for a set operation only, never across an await.
    denied_told: Mutex<HashSet<i64>>,
    /// Woken when one of this bot's tasks finished: its answer is in the outbox.
    outbox_wake: Notify,
    /// Tasks re-queued for another attempt, for the progress updater.
    retried: RetriedTasks,
    /// "Queued" messages sent by the handler, for the progress updater.
    progress_messages: ProgressMessages,
}

/// Tasks of one bot re-queued for another attempt since its progress updater
/// last looked, so the chat is told of the retry at once (a failing attempt can
/// last milliseconds, far less than the updater's tick).
#[derive(Debug, Default)]
pub(crate) struct RetriedTasks {
    /// Their ids. A std Mutex: held for a push or a drain, never across an await.
    ids: Mutex<Vec<u64>>,
    /// Woken on each push.
    wake: Notify,
}

impl RetriedTasks {
    fn push(&self, task_id: u64) {
        self.ids
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(task_id);
        self.wake.notify_one();
    }

    /// The ids pushed since the last call.
    fn take(&self) -> Vec<u64> {
        std::mem::take(&mut *self.ids.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// The progress message of each task acknowledged by this process, handed from
/// the handler to the progress updater in memory. The store keeps the same id
/// (for the next process, and to delete the message with the answer); the
/// updater reads it from here first, so a retry right after "queued" is shown at
/// once. An entry lives until the task's answer is on its way.
#[derive(Debug, Default)]
pub(crate) struct ProgressMessages {
    /// By task id. A std Mutex: held for a map operation only, never across an await.
    ids: Mutex<HashMap<u64, i32>>,
    /// Woken when an id arrives.
    wake: Notify,
}

impl ProgressMessages {
    fn insert(&self, task_id: u64, message_id: i32) {
        self.ids
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(task_id, message_id);
        self.wake.notify_one();
    }

    fn get(&self, task_id: u64) -> Option<i32> {
        self.ids
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&task_id)
            .copied()
    }

    /// Gives `task` its progress message from here when the store did not have it.
    fn fill(&self, task: &mut crate::storage::Task) {
        if task.progress_message_id.is_none() {
            task.progress_message_id = self.get(task.id);
        }
    }

    fn remove(&self, task_id: u64) {
        self.ids
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&task_id);
    }
}

impl BotSet {
    /// Builds a runtime per configured bot; fails when a token is missing.
    pub fn connect(ctx: BotContext) -> anyhow::Result<Self> {
        let ctx = Arc::new(ctx);
        let mut bots = Vec::new();
        for config in &ctx.config.bots {
            let token = ctx.tokens.get(&config.id).cloned().with_context(|| {
                format!(
                    "bot `{}`: the token variable ${} is not set",
                    config.id, config.token_env
                )
            })?;
            let breaker = ctx
                .circuits
                .get(&config.id, Dependency::Telegram)
                .cloned()
                .with_context(|| format!("no telegram breaker for bot `{}`", config.id))?;
            let api = TelegramApi::new(token, &config.api_url, breaker)
                .map_err(|e| anyhow::anyhow!("bot `{}`: {e}", config.id))?;
            let link = ctx.links.get(&config.id).cloned().unwrap_or_default();
            bots.push(Arc::new(BotRuntime {
                ctx: ctx.clone(),
                config: config.clone(),
                api,
                link,
                denied_told: Mutex::default(),
                outbox_wake: Notify::new(),
                retried: RetriedTasks::default(),
                progress_messages: ProgressMessages::default(),
            }));
        }
        Ok(BotSet {
            bots,
            shutdown: ctx.shutdown.clone(),
        })
    }

    /// Tells the chat that asked for a restart that the service is back.
    pub async fn send_restart_notices(&self) {
        let taken = match self.bots.first() {
            Some(bot) => bot.ctx.store.take_restart_state().await,
            None => return,
        };
        match taken {
            Ok(None) => {}
            Ok(Some(Ok(state))) => self.announce_restart(state).await,
            Ok(Some(Err(why))) => {
                if let Some(bot) = self.bots.first() {
                    bot.ctx.add_notice(format!(
                        "the recorded restart state was unreadable ({why}); no restart notice was sent"
                    ));
                }
            }
            Err(e) => tracing::error!(error = %e, "cannot read the restart state"),
        }
    }

    async fn announce_restart(&self, state: RestartState) {
        let now = now_ms();
        let bot = state
            .bot_id
            .as_ref()
            .and_then(|id| self.bots.iter().find(|b| &b.config.id == id))
            .or(self.bots.first());
        let Some(bot) = bot else { return };
        let text = restart_notice_text(&state, now);
        if !is_plausible_restart(&state, now) {
            bot.ctx.add_notice(format!(
                "restart state looked implausible (requested at {} ms, now {now} ms); reported, not discarded",
                state.requested_ms
            ));
        }
        let Some(chat) = state.chat_id else {
            tracing::info!(notice = %text, "restart notice (no chat recorded)");
            return;
        };
        let edited = match state.message_id {
            Some(message_id) => bot.api.edit_text(chat, message_id, &text).await.is_ok(),
            None => false,
        };
        if !edited && let Err(e) = bot.api.send_plain(chat, &text, None).await {
            tracing::warn!(error = %e, "cannot send the restart notice");
        }
        let _ = bot
            .ctx
            .store
            .append_event(
                "restart_notice",
                Some(&bot.config.id),
                serde_json::json!({"requested_ms": state.requested_ms, "text": text}),
                now,
            )
            .await;
    }

    /// Starts every bot's loops (polling, delivery, progress, approvals), the
    /// timers of the approvals still pending, and the router of `pool_events` (the
    /// receiver of the channel the pool was built with) to them.
    ///
    /// `approval_news` holds one receiver per bot, in the configuration's order,
    /// subscribed before the pool ran: what an adopted agent's approvals did
    /// before the bots listen (an expiry, a new request) is shown, not lost.
    pub fn start(
        self,
        pool_events: mpsc::UnboundedReceiver<PoolEvent>,
        approval_news: Vec<broadcast::Receiver<ApprovalNews>>,
        tasks: &mut JoinSet<()>,
    ) {
        if let Some(bot) = self.bots.first() {
            let approvals = bot.ctx.pool.approvals().clone();
            tasks.spawn(async move { approvals.arm_pending().await });
        }
        for (bot, news) in self.bots.iter().zip(approval_news) {
            tasks.spawn(approval::run(bot.clone(), news));
        }
        for bot in &self.bots {
            tasks.spawn(poller::run(bot.clone()));
            tasks.spawn(delivery::run_outbox(bot.clone()));
            tasks.spawn(delivery::run_progress(bot.clone()));
        }
        tasks.spawn(route_pool_events(self.bots, pool_events, self.shutdown));
    }
}

/// Tells each bot about its tasks' ends and retries, until shutdown.
async fn route_pool_events(
    bots: Vec<Arc<BotRuntime>>,
    mut events: mpsc::UnboundedReceiver<PoolEvent>,
    shutdown: Shutdown,
) {
    let by_id: HashMap<String, Arc<BotRuntime>> =
        bots.into_iter().map(|b| (b.config.id.clone(), b)).collect();
    let mut stop = shutdown.subscribe();
    loop {
        let event = tokio::select! {
            event = events.recv() => event,
            _ = stop.changed() => None,
        };
        match event {
            Some(PoolEvent::Finished(task)) => {
                if let Some(bot) = by_id.get(&task.bot_id) {
                    bot.outbox_wake.notify_one();
                }
            }
            Some(PoolEvent::Retrying(task)) => {
                if let Some(bot) = by_id.get(&task.bot_id) {
                    bot.retried.push(task.id);
                }
            }
            None => return,
        }
    }
}

fn is_plausible_restart(state: &RestartState, now: u64) -> bool {
    state.requested_ms <= now + 60_000
        && now.saturating_sub(state.requested_ms) <= PLAUSIBLE_RESTART_MS
}

/// The text of the "back" notice; an implausible state is said so, never dropped.
pub fn restart_notice_text(state: &RestartState, now: u64) -> String {
    if state.requested_ms > now + 60_000 {
        return format!(
            "✅ Back. (The recorded restart time lies {} s in the future — the clock may have jumped; restart time unknown.)",
            (state.requested_ms - now) / 1000
        );
    }
    let age_s = (now - state.requested_ms.min(now)) / 1000;
    if age_s * 1000 > PLAUSIBLE_RESTART_MS {
        return format!(
            "✅ Back. (The restart was requested {} h ago — longer than a restart should take; the service was probably down in between.)",
            age_s / 3600
        );
    }
    format!("✅ Back after {age_s} s.")
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use telegram_sim::{SentKind, SimHandle, TelegramSim};

    use super::*;
    use crate::intake::{Door, Prompt};
    use crate::storage::StoreOptions;

    const TOKEN: &str = "123456:progress-test";

    /// One bot against the simulator, built the way the service builds it.
    async fn one_bot(dir: &tempfile::TempDir, sim: &SimHandle) -> (Arc<BotRuntime>, Intake, Store) {
        let mut config = Config {
            data_dir: dir.path().to_path_buf(),
            ..Config::default()
        };
        config.storage.min_free_mb = 0;
        config.bots.push(BotConfig {
            id: "B".into(),
            api_url: sim.url(),
            allowed_users: vec![7],
            ..BotConfig::default()
        });
        let config = Arc::new(config);
        let store = Store::open(&config.database_path(), StoreOptions::default()).expect("store");
        let circuits = Circuits::load(&store, &["B".to_string()], &config.breaker);
        let (events, _) = crate::worker::pool_events();
        let pool = Pool::new(config.clone(), store.clone(), circuits.clone(), events);
        let intake = Intake::new(config.clone(), store.clone(), pool.clone());
        let set = BotSet::connect(BotContext {
            backups: Backups::new(config.clone(), store.clone(), Default::default()),
            intake: intake.clone(),
            shutdown: Shutdown::new(),
            started: Started::now(),
            notices: Notices::default(),
            links: TelegramLinks::new(["B"]),
            tokens: [("B".to_string(), TOKEN.to_string())].into(),
            config,
            store: store.clone(),
            circuits,
            pool,
        })
        .expect("bots");
        let bot = set.bots[0].clone();
        (bot, intake, store)
    }

    /// The handler gives the "queued" message to the progress updater in memory:
    /// a running task whose message id never reached the store still has its
    /// message edited (the updater does not wait for the store to learn it).
    #[tokio::test(flavor = "multi_thread")]
    async fn the_progress_updater_edits_the_queued_message_the_handler_handed_over() {
        let sim = TelegramSim::start("127.0.0.1:0".parse().expect("addr"), vec![TOKEN.into()])
            .await
            .expect("simulator");
        let dir = tempfile::tempdir().expect("tempdir");
        let (bot, intake, store) = one_bot(&dir, &sim).await;
        let sender = intake.authorise("B", 7).expect("allowed");
        let accepted = intake
            .submit(Prompt {
                bot_id: "B".into(),
                text: "hello".into(),
                project: None,
                door: Door::Telegram {
                    sender,
                    chat_id: 7,
                    message_id: 1,
                    update_id: 1,
                },
            })
            .await
            .expect("queued");
        let queued = bot
            .api
            .send_plain(7, "⏳ Queued as task #1.", None)
            .await
            .expect("sent");
        bot.progress_messages.insert(accepted.task.id, queued);
        let claimed = store
            .claim_next_task(now_ms(), Vec::new())
            .await
            .expect("claim");
        assert!(claimed.is_some(), "the task runs");
        assert_eq!(
            store
                .get_task(accepted.task.id)
                .expect("read")
                .and_then(|t| t.progress_message_id),
            None,
            "the store was not told"
        );

        let updater = tokio::spawn(delivery::run_progress(bot.clone()));
        let edited = sim
            .wait_for(
                TOKEN,
                |sent| {
                    sent.iter().any(|item| {
                        item.kind == SentKind::Edit
                            && item.message_id == Some(queued)
                            && item
                                .text
                                .as_deref()
                                .is_some_and(|t| t.starts_with("⚙️ Running task #"))
                    })
                },
                Duration::from_secs(30),
            )
            .await;
        bot.ctx.shutdown.request(0);
        updater.await.expect("the updater ends at shutdown");
        edited.expect("the queued message shows the run");
        store.close();
        sim.shutdown().await;
    }

    fn state(requested_ms: u64) -> RestartState {
        RestartState {
            requested_ms,
            bot_id: None,
            chat_id: None,
            message_id: None,
            reason: "test".into(),
        }
    }

    #[test]
    fn restart_notice_reports_the_real_duration() {
        let now = 1_760_504_164_000;
        assert_eq!(
            restart_notice_text(&state(1_760_504_154_000), now),
            "✅ Back after 10 s."
        );
    }

    #[test]
    fn implausible_restart_states_are_reported_not_dropped() {
        let now = 1_760_504_164_000;
        // The old bot's bug: seconds read as milliseconds look 55 years old.
        let old = restart_notice_text(&state(1_760_504_154), now);
        assert!(old.contains("h ago"), "{old}");
        let future = restart_notice_text(&state(now + 3_600_000), now);
        assert!(future.contains("future"), "{future}");
        assert!(!is_plausible_restart(&state(1_760_504_154), now));
    }
}
