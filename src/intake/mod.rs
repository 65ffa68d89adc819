//! The one way a prompt enters the service, whichever door it came through:
//! a Telegram message, `POST /api/tasks`, or `agentlab ask` (which posts there).
//!
//! [`Intake::submit`] runs the rules in one order, each in one place:
//! 1. validate: the bot is configured, the prompt is not empty and at most
//!    [`MAX_PROMPT_BYTES`];
//! 2. admit: the user's rate ([`limits`]) and the bot's budget
//!    ([`crate::budget`]) for Telegram prompts, then the disk ([`admission`]);
//! 3. submit: the task is stored durably (a Telegram prompt also enters the
//!    user's conversation history; a re-delivered update is found, not stored twice);
//! 4. wake the pool, so the task starts now and callers never need to — or,
//!    when the session's warm process is idle and the pool can take the prompt
//!    now, store it already started on that process (one durable step) and let
//!    the pool run it ([`Pool::reserve_warm_start`]).
//!
//! A manual retry (`/retry`) enters here too ([`Intake::retry`]): its prompt
//! passed the rules when first sent; it is stored anew and the pool woken.
//!
//! Who may speak is decided by [`Intake::authorise`], the only reader of a bot's
//! `allowed_users` and `admins`; a Telegram prompt carries its [`Authorised`]
//! proof, so the check cannot be skipped nor made twice. An HTTP task is an
//! admin's (the bearer token was checked by the HTTP layer): it names any user,
//! is not rate-limited, and is not refused for the budget at the door — the
//! pool refuses to start any task while its bot's budget is spent.
//!
//! Invariant: nothing is stored unless every rule passed, and a refusal changes
//! nothing but the rate window of the user who was refused.

pub mod admission;
pub mod limits;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::budget::{Exceeded, Spend};
use crate::config::{Config, DEFAULT_PROJECT};
use crate::storage::{
    MAX_PROMPT_BYTES, NO_CHAT, NewTask, PRIORITY_NORMAL, Store, StoreError, Task, TaskKind,
    TaskSource, TaskSubmitted, now_ms,
};
use crate::worker::Pool;
use admission::DiskFull;
use limits::{RateLimited, RateLimiter};

/// Share of a budget at which a Telegram user is warned (once a day).
pub const BUDGET_WARNING: f64 = 0.8;

/// The intake: cloneable, one per service (the rate windows are shared by
/// every door that is rate-limited).
#[derive(Clone)]
pub struct Intake {
    inner: Arc<Inner>,
}

struct Inner {
    config: Arc<Config>,
    store: Store,
    pool: Pool,
    /// std Mutexes below: each held for a map operation only, never across an await.
    limiter: Mutex<RateLimiter>,
    /// (bot, user, UTC day) already warned that a budget is nearly spent.
    budget_warned: Mutex<HashSet<(String, i64, u32)>>,
}

/// Proof that a Telegram user may talk to a bot; only [`Intake::authorise`] makes one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Authorised {
    user_id: i64,
    is_admin: bool,
}

impl Authorised {
    /// The user.
    pub fn user_id(&self) -> i64 {
        self.user_id
    }

    /// Whether the user is one of the bot's admins.
    pub fn is_admin(&self) -> bool {
        self.is_admin
    }
}

/// Which door a prompt came through, and what that door knows.
#[derive(Debug, Clone)]
pub enum Door {
    /// A Telegram message from an authorised user.
    Telegram {
        /// The sender, authorised.
        sender: Authorised,
        /// The chat the answer goes to.
        chat_id: i64,
        /// The message, answered as a reply to it.
        message_id: i32,
        /// The update that carried it (a re-delivered update is stored once).
        update_id: i64,
    },
    /// `POST /api/tasks` (and `agentlab ask`), by an admin on behalf of `user_id`.
    Http {
        /// The user the task is for.
        user_id: i64,
        /// The chat the answer goes to, if any.
        chat_id: Option<i64>,
    },
}

/// A prompt at the door.
#[derive(Debug, Clone)]
pub struct Prompt {
    /// The bot it is for.
    pub bot_id: String,
    /// The text for the agent.
    pub text: String,
    /// Where it came from.
    pub door: Door,
    /// The project it runs in; `None` is `default`. (The Telegram door passes
    /// the sender's current project.)
    pub project: Option<String>,
}

/// A prompt that passed every rule and is stored.
#[derive(Debug, Clone)]
pub struct Accepted {
    /// The stored task.
    pub task: Task,
    /// The same update was stored before (its task is returned; nothing new was stored).
    pub duplicate: bool,
    /// A budget is at least [`BUDGET_WARNING`] spent and this user was not told
    /// today: tell them.
    pub budget_warning: Option<BudgetWarning>,
}

/// What a user is told when a budget is nearly spent.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BudgetWarning {
    /// Spent so far.
    pub spend: Spend,
    /// `limits.daily_cost_usd`.
    pub daily_limit: f64,
    /// `limits.monthly_cost_usd`.
    pub monthly_limit: f64,
}

/// Why a prompt was not taken. Each door words it for its caller.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// No bot of that id is configured.
    #[error("bot `{0}` is not configured")]
    UnknownBot(String),
    /// The bot has no project of that name.
    #[error("bot `{bot_id}` has no project `{project}`; its projects are: {}", .known.join(", "))]
    UnknownProject {
        /// The bot.
        bot_id: String,
        /// The name asked for.
        project: String,
        /// The bot's projects, `default` first.
        known: Vec<String>,
    },
    /// Nothing but white space.
    #[error("prompt is empty")]
    Empty,
    /// Longer than [`MAX_PROMPT_BYTES`].
    #[error("prompt is {bytes} bytes; at most {MAX_PROMPT_BYTES} are accepted")]
    TooLong {
        /// Its length.
        bytes: usize,
    },
    /// The user sent too many prompts lately.
    #[error("rate limit reached; retry in {} s", .0.retry_after.as_secs().max(1))]
    RateLimited(RateLimited),
    /// The bot's budget is spent.
    #[error("budget spent")]
    Budget(Exceeded),
    /// The disk is nearly full.
    #[error(transparent)]
    DiskFull(DiskFull),
    /// The store would not take it.
    #[error(transparent)]
    Store(StoreError),
}

impl Intake {
    /// The intake of `config`'s bots, storing into `store` and waking `pool`.
    pub fn new(config: Arc<Config>, store: Store, pool: Pool) -> Self {
        let limiter = RateLimiter::new(config.limits.rate_per_minute, config.limits.rate_per_hour);
        Intake {
            inner: Arc::new(Inner {
                config,
                store,
                pool,
                limiter: Mutex::new(limiter),
                budget_warned: Mutex::default(),
            }),
        }
    }

    /// Whether `user_id` may talk to `bot_id` (an admin, or on the allowed list).
    pub fn authorise(&self, bot_id: &str, user_id: i64) -> Option<Authorised> {
        let bot = self.inner.config.bot(bot_id)?;
        let is_admin = bot.admins.contains(&user_id);
        (is_admin || bot.allowed_users.contains(&user_id))
            .then_some(Authorised { user_id, is_admin })
    }

    /// Validates, admits and stores `prompt`, then wakes the pool. Only when this
    /// returns `Ok` may the caller say the prompt is queued.
    #[tracing::instrument(skip_all, fields(bot_id = %prompt.bot_id))]
    pub async fn submit(&self, prompt: Prompt) -> Result<Accepted, Refusal> {
        let inner = &self.inner;
        let limits = &inner.config.limits;
        let Some(bot) = inner.config.bot(&prompt.bot_id) else {
            return Err(Refusal::UnknownBot(prompt.bot_id));
        };
        let project = prompt.project.as_deref().unwrap_or(DEFAULT_PROJECT);
        if bot.project_workdir(project).is_none() {
            return Err(Refusal::UnknownProject {
                bot_id: prompt.bot_id.clone(),
                project: project.to_owned(),
                known: bot
                    .project_list()
                    .iter()
                    .map(|(name, _)| (*name).to_owned())
                    .collect(),
            });
        }
        let project = project.to_owned();
        if prompt.text.trim().is_empty() {
            return Err(Refusal::Empty);
        }
        if prompt.text.len() > MAX_PROMPT_BYTES {
            return Err(Refusal::TooLong {
                bytes: prompt.text.len(),
            });
        }
        let now = now_ms();
        let mut budget_warning = None;
        if let Door::Telegram { sender, .. } = &prompt.door {
            inner
                .limiter
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .check(&prompt.bot_id, sender.user_id, Instant::now())
                .map_err(Refusal::RateLimited)?;
            let spend = Spend::of(&inner.store, &prompt.bot_id, now);
            if let Some(exceeded) = spend.exceeded(limits) {
                return Err(Refusal::Budget(exceeded));
            }
            if spend.nears(limits, BUDGET_WARNING) {
                let day = crate::storage::utc_day(now);
                let first = inner
                    .budget_warned
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert((prompt.bot_id.clone(), sender.user_id, day));
                budget_warning = first.then_some(BudgetWarning {
                    spend,
                    daily_limit: limits.daily_cost_usd,
                    monthly_limit: limits.monthly_cost_usd,
                });
            }
        }
        admission::admit_prompt(&inner.config, &inner.store).map_err(Refusal::DiskFull)?;
        let (new, enters_history) = match prompt.door {
            Door::Telegram {
                sender,
                chat_id,
                message_id,
                update_id,
            } => (
                NewTask {
                    bot_id: prompt.bot_id,
                    user_id: sender.user_id,
                    chat_id,
                    kind: TaskKind::Chat,
                    source: TaskSource::Telegram,
                    prompt: prompt.text,
                    priority: PRIORITY_NORMAL,
                    max_attempts: limits.max_attempts,
                    reply_to_message_id: Some(message_id),
                    update_id: Some(update_id),
                },
                true,
            ),
            Door::Http { user_id, chat_id } => (
                NewTask {
                    bot_id: prompt.bot_id,
                    user_id,
                    chat_id: chat_id.unwrap_or(NO_CHAT),
                    kind: TaskKind::Task,
                    source: TaskSource::Api,
                    prompt: prompt.text,
                    priority: PRIORITY_NORMAL,
                    max_attempts: limits.max_attempts,
                    reply_to_message_id: None,
                    update_id: None,
                },
                false,
            ),
        };
        let submitted = self.store_new(new, &project, enters_history, now).await?;
        if submitted.started() {
            tracing::info!(task_id = submitted.task.id, "prompt started");
        } else if !submitted.duplicate {
            inner.pool.notify();
            tracing::info!(task_id = submitted.task.id, "prompt queued");
        }
        Ok(Accepted {
            task: submitted.task,
            duplicate: submitted.duplicate,
            budget_warning,
        })
    }

    /// Stores a new task (its prompt entering the history if `enters_history`).
    /// When the pool can start it at once on its session's idle warm process,
    /// the store starts it in the same durable step and the pool runs it;
    /// otherwise it is queued (the caller wakes the pool).
    async fn store_new(
        &self,
        new: NewTask,
        project: &str,
        enters_history: bool,
        now: u64,
    ) -> Result<TaskSubmitted, Refusal> {
        let inner = &self.inner;
        if let Some(start) = inner
            .pool
            .reserve_warm_start(&new.bot_id, new.user_id, project)
        {
            let pending = inner.store.submit_started(
                new.clone(),
                project,
                enters_history,
                now,
                start.process(),
                start.blocked_bots(),
            );
            // Settled in a task of its own, so a caller that stops waiting (an
            // HTTP client gone) cannot drop the reservation while the store may
            // still start the task on it.
            let pool = inner.pool.clone();
            let settled = tokio::spawn(async move {
                let submitted = pending.await;
                match &submitted {
                    Ok(submitted) if submitted.started() => {
                        pool.start_reserved(start, submitted.task.clone())
                    }
                    _ => pool.release(start),
                }
                submitted
            })
            .await;
            match settled {
                // Something runs before it: it goes to the queue.
                Ok(Err(StoreError::Conflict(_))) => {}
                Ok(submitted) => return submitted.map_err(Refusal::Store),
                Err(join) => return Err(Refusal::Store(StoreError::Internal(join.to_string()))),
            }
        }
        let submitted = if enters_history {
            inner
                .store
                .submit_prompt_in_project(new, project, now)
                .await
        } else {
            inner.store.submit_task_in_project(new, project, now).await
        };
        submitted.map_err(Refusal::Store)
    }

    /// Queues a finished task's prompt again as a new task, and wakes the pool.
    pub async fn retry(&self, task_id: u64) -> Result<Task, StoreError> {
        let inner = &self.inner;
        let task = inner
            .store
            .retry_task(task_id, inner.config.limits.max_attempts, now_ms())
            .await?;
        inner.pool.notify();
        Ok(task)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::breaker::Circuits;
    use crate::config::BotConfig;
    use crate::storage::{StoreOptions, TaskStatus};

    struct Site {
        _dir: tempfile::TempDir,
        store: Store,
        intake: Intake,
        events: tokio::sync::mpsc::UnboundedReceiver<crate::worker::PoolEvent>,
    }

    fn site(limits: impl FnOnce(&mut crate::config::LimitsConfig)) -> Site {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = Config {
            data_dir: dir.path().to_path_buf(),
            ..Config::default()
        };
        // The test machine's disk may be nearly full: only a test of the disk rule
        // should meet it.
        config.storage.min_free_mb = 0;
        config.bots.push(BotConfig {
            id: "B".into(),
            allowed_users: vec![7],
            admins: vec![1],
            ..BotConfig::default()
        });
        limits(&mut config.limits);
        let config = Arc::new(config);
        let store = Store::open(&config.database_path(), StoreOptions::default()).expect("store");
        let circuits = Circuits::load(&store, &["B".to_string()], &config.breaker);
        let (tx, events) = crate::worker::pool_events();
        let pool = Pool::new(config.clone(), store.clone(), circuits, tx);
        Site {
            intake: Intake::new(config, store.clone(), pool),
            store,
            _dir: dir,
            events,
        }
    }

    fn telegram(site: &Site, user_id: i64, update_id: i64, text: &str) -> Prompt {
        let sender = site.intake.authorise("B", user_id).expect("allowed");
        Prompt {
            bot_id: "B".into(),
            text: text.into(),
            project: None,
            door: Door::Telegram {
                sender,
                chat_id: user_id,
                message_id: 10,
                update_id,
            },
        }
    }

    fn http(bot_id: &str, text: &str) -> Prompt {
        Prompt {
            bot_id: bot_id.into(),
            text: text.into(),
            project: None,
            door: Door::Http {
                user_id: 99,
                chat_id: None,
            },
        }
    }

    #[test]
    fn only_admins_and_allowed_users_of_a_configured_bot_are_authorised() {
        let site = site(|_| {});
        assert_eq!(
            site.intake.authorise("B", 1).map(|a| a.is_admin()),
            Some(true)
        );
        assert_eq!(
            site.intake.authorise("B", 7).map(|a| a.is_admin()),
            Some(false)
        );
        assert_eq!(site.intake.authorise("B", 8), None);
        assert_eq!(site.intake.authorise("NOPE", 1), None);
    }

    #[tokio::test]
    async fn bad_prompts_are_refused_before_anything_is_stored() {
        let site = site(|_| {});
        let refusals = [
            site.intake.submit(http("NOPE", "hi")).await,
            site.intake.submit(http("B", "  \n")).await,
            site.intake
                .submit(http("B", &"x".repeat(MAX_PROMPT_BYTES + 1)))
                .await,
        ];
        assert!(matches!(refusals[0], Err(Refusal::UnknownBot(ref b)) if b == "NOPE"));
        assert!(matches!(refusals[1], Err(Refusal::Empty)));
        assert!(matches!(
            refusals[2],
            Err(Refusal::TooLong { bytes }) if bytes == MAX_PROMPT_BYTES + 1
        ));
        assert_eq!(site.store.queue_depth().expect("depth"), 0);
    }

    #[tokio::test]
    async fn a_stored_prompt_is_queued_once_and_a_redelivered_update_is_found() {
        let site = site(|_| {});
        let first = site
            .intake
            .submit(telegram(&site, 7, 500, "hello"))
            .await
            .expect("accepted");
        assert!(!first.duplicate);
        assert_eq!(first.task.status, TaskStatus::Queued);
        assert_eq!(first.task.source, TaskSource::Telegram);
        let again = site
            .intake
            .submit(telegram(&site, 7, 500, "hello"))
            .await
            .expect("accepted");
        assert!(again.duplicate);
        assert_eq!(again.task.id, first.task.id);
        let by_http = site
            .intake
            .submit(http("B", "job"))
            .await
            .expect("accepted");
        assert_eq!(by_http.task.source, TaskSource::Api);
        assert_eq!(by_http.task.chat_id, NO_CHAT);
        assert_eq!(site.store.queue_depth().expect("depth"), 2);
    }

    #[tokio::test]
    async fn telegram_prompts_are_rate_limited_and_http_tasks_are_not() {
        let site = site(|limits| limits.rate_per_minute = 2);
        for update in 0..2 {
            site.intake
                .submit(telegram(&site, 7, update, "p"))
                .await
                .expect("within the rate");
        }
        let limited = site.intake.submit(telegram(&site, 7, 2, "p")).await;
        assert!(
            matches!(limited, Err(Refusal::RateLimited(r)) if !r.per_hour),
            "{limited:?}"
        );
        // Another user has a window of their own; the admin's HTTP door has none.
        site.intake
            .submit(telegram(&site, 1, 3, "p"))
            .await
            .expect("another user");
        for _ in 0..3 {
            site.intake.submit(http("B", "p")).await.expect("http");
        }
        assert_eq!(site.store.queue_depth().expect("depth"), 6);
    }

    #[tokio::test]
    async fn a_spent_budget_refuses_telegram_prompts_at_the_door() {
        let site = site(|limits| limits.daily_cost_usd = 0.0);
        let refused = site.intake.submit(telegram(&site, 7, 1, "p")).await;
        assert!(
            matches!(refused, Err(Refusal::Budget(Exceeded::Daily { .. }))),
            "{refused:?}"
        );
        assert_eq!(site.store.queue_depth().expect("depth"), 0);
        // The admin's task is taken; the pool refuses to run it (worker tests).
        site.intake.submit(http("B", "p")).await.expect("http");
    }

    #[tokio::test]
    async fn a_full_disk_refuses_every_door_and_stores_nothing() {
        let site = site(|_| {});
        let mut config = (*site.intake.inner.config).clone();
        config.storage.min_free_mb = u64::MAX / (2 * 1024 * 1024);
        let pool = site.intake.inner.pool.clone();
        let full = Intake::new(Arc::new(config), site.store.clone(), pool);
        let by_telegram = full.submit(telegram(&site, 7, 1, "p")).await;
        let by_http = full.submit(http("B", "p")).await;
        assert!(
            matches!(by_telegram, Err(Refusal::DiskFull(_))),
            "{by_telegram:?}"
        );
        assert!(matches!(by_http, Err(Refusal::DiskFull(_))), "{by_http:?}");
        assert_eq!(site.store.queue_depth().expect("depth"), 0);
    }

    #[tokio::test]
    async fn a_queued_prompt_wakes_the_pool_without_the_caller_asking() {
        let site = site(|_| {});
        site.intake.submit(http("B", "p")).await.expect("accepted");
        // The wake is a stored permit on the pool's Notify: the dispatcher's next
        // wait returns at once instead of after its idle safety wake.
        let woken = tokio::time::timeout(
            std::time::Duration::from_secs(1),
            site.intake.inner.pool.notified(),
        )
        .await;
        assert!(woken.is_ok(), "the pool was not woken");
        drop(site.events);
    }
}
