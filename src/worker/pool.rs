//! The worker pool: claims queued tasks from the store and runs them as agent
//! subprocesses, at most `limits.workers` at a time.
//!
//! Invariants:
//! - nothing about a task lives only here: the store says what is queued and what
//!   runs; the pool can start after tasks were queued, stop, and start again, and
//!   every queued task still runs (the old bot's "worker pool not started" drop is
//!   impossible by construction);
//! - the dispatcher holds one semaphore permit per run, so no more than `workers`
//!   agents run at once; the permit moves into the run's task and is released when
//!   it ends;
//! - idle, the dispatcher sleeps on a [`Notify`] (new task, finished run, breaker
//!   change) — the timed wake-ups are only for retry backoffs and breaker probes;
//! - every agent run goes through [`run_task`], which asks the agent breaker before
//!   starting and reports the outcome after.
//! - at shutdown, agents are not killed: their tasks stay `running` with pid and
//!   start time recorded, and the next process adopts them;
//! - each task that reaches a terminal state, or is re-queued for another attempt,
//!   is announced once on the [`PoolEvents`] channel the pool was built with, after
//!   the store recorded it (the bots deliver answers and retry notices from it).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio::task::JoinSet;

use super::agent::{self, AdoptSpec, AgentCommand, AgentOutcome, RunSpec};
use super::proc_identity::ProcIdentity;
use crate::breaker::{Circuits, Dependency};
use crate::budget::{Exceeded, Spend};
use crate::config::{BotConfig, Config};
use crate::storage::{
    Claimed, FailureClass, Store, StoreError, Task, TaskFinish, TaskStatus, now_ms,
};

/// Longest an idle dispatcher sleeps without a notification (a safety net only).
const IDLE_SAFETY_WAKE: Duration = Duration::from_secs(5);
/// Poll interval for adopted agents (not our children, so no exit notification).
const ADOPT_POLL: Duration = Duration::from_millis(200);
/// Grace between SIGTERM and SIGKILL when a run is stopped.
const KILL_GRACE: Duration = Duration::from_secs(2);
/// Longest retry backoff.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// What the pool announces about a task, after the store recorded it.
#[derive(Debug, Clone)]
pub enum PoolEvent {
    /// The task reached a terminal state: its answer is in the outbox.
    Finished(Task),
    /// An attempt failed and the task is queued for the next one.
    Retrying(Task),
}

/// Where the pool announces [`PoolEvent`]s. Unbounded: the pool never waits for a
/// reader, and there is at most one event per attempt. Sending to a closed
/// channel (nobody listens, as in tests of the pool alone) is not an error.
pub type PoolEvents = mpsc::UnboundedSender<PoolEvent>;

/// A channel for the pool's events: give the sender to [`Pool::new`].
pub fn pool_events() -> (PoolEvents, mpsc::UnboundedReceiver<PoolEvent>) {
    mpsc::unbounded_channel()
}

/// The pool, shared by the dispatcher, the runs, the bots and the HTTP API.
#[derive(Clone)]
pub struct Pool {
    shared: Arc<Shared>,
}

struct Shared {
    config: Arc<Config>,
    store: Store,
    circuits: Circuits,
    wake: Notify,
    permits: Arc<Semaphore>,
    busy: AtomicUsize,
    /// Cancellation senders of running tasks. A std Mutex: held for a map
    /// operation only, never across an await.
    cancels: Mutex<HashMap<u64, watch::Sender<bool>>>,
    /// Earliest instant a delayed retry becomes due.
    next_due: Mutex<Option<Instant>>,
    events: PoolEvents,
    runs_dir: std::path::PathBuf,
}

/// What happened to a task's run, decided from the agent's outcome.
#[derive(Debug)]
enum Verdict {
    Done(TaskFinish),
    Retry { class: FailureClass, error: String },
}

impl Pool {
    /// A pool over `store` announcing its tasks' ends and retries on `events`;
    /// nothing runs until [`Pool::run`] is spawned.
    pub fn new(config: Arc<Config>, store: Store, circuits: Circuits, events: PoolEvents) -> Self {
        let workers = config.limits.workers;
        let runs_dir = config.runs_dir();
        Pool {
            shared: Arc::new(Shared {
                config,
                store,
                circuits,
                wake: Notify::new(),
                permits: Arc::new(Semaphore::new(workers)),
                busy: AtomicUsize::new(0),
                cancels: Mutex::new(HashMap::new()),
                next_due: Mutex::new(None),
                events,
                runs_dir,
            }),
        }
    }

    /// Wakes the dispatcher: a task was queued, or something it waits for changed.
    pub fn notify(&self) {
        self.shared.wake.notify_one();
    }

    /// Waits for a wake-up of the dispatcher (one given before counts).
    #[cfg(test)]
    pub(crate) async fn notified(&self) {
        self.shared.wake.notified().await;
    }

    /// Agent runs in progress.
    pub fn busy(&self) -> usize {
        self.shared.busy.load(Ordering::Relaxed)
    }

    /// Configured number of workers.
    pub fn workers(&self) -> usize {
        self.shared.config.limits.workers
    }

    /// Asks a running task to stop (its process group is killed). Returns whether
    /// the task was running here.
    pub fn cancel_running(&self, task_id: u64) -> bool {
        match lock(&self.shared.cancels).get(&task_id) {
            Some(tx) => tx.send(true).is_ok(),
            None => false,
        }
    }

    /// Runs the pool until `shutdown` turns true: first adopts the runs left by the
    /// previous process (`adopted`), then claims queued tasks. Returns after every
    /// run task has ended or been detached.
    pub async fn run(self, adopted: Vec<Task>, mut shutdown: watch::Receiver<bool>) {
        let mut runs = JoinSet::new();
        for task in adopted {
            let permit = tokio::select! {
                p = self.shared.permits.clone().acquire_owned() => p,
                _ = shutdown.changed() => break,
            };
            let Ok(permit) = permit else { break };
            let pool = self.clone();
            runs.spawn(async move { pool.adopt_task(task, permit).await });
        }
        loop {
            if *shutdown.borrow() {
                break;
            }
            let permit = tokio::select! {
                p = self.shared.permits.clone().acquire_owned() => p,
                _ = shutdown.changed() => break,
            };
            let Ok(permit) = permit else { break };
            match self.claim().await {
                Ok(Some(claimed)) => {
                    let pool = self.clone();
                    runs.spawn(async move { pool.run_claimed(claimed, permit).await });
                }
                Ok(None) => {
                    drop(permit);
                    self.idle(&mut shutdown).await;
                }
                Err(e) => {
                    drop(permit);
                    tracing::error!(error = %e, "cannot claim a task; retrying shortly");
                    self.idle(&mut shutdown).await;
                }
            }
            while runs.try_join_next().is_some() {}
        }
        // Detach: agents keep running and are adopted by the next process. The run
        // tasks are waiting on processes or polls; aborting them loses nothing stored.
        runs.abort_all();
        while runs.join_next().await.is_some() {}
    }

    async fn claim(&self) -> Result<Option<Claimed>, StoreError> {
        let blocked = self.shared.circuits.agent_blocked_bots();
        self.shared.store.claim_next_task(now_ms(), blocked).await
    }

    async fn idle(&self, shutdown: &mut watch::Receiver<bool>) {
        let mut wait = IDLE_SAFETY_WAKE;
        if let Some(due) = *lock(&self.shared.next_due) {
            wait = wait.min(due.saturating_duration_since(Instant::now()));
        }
        if let Some(ms) = self.shared.circuits.next_probe_in_ms(Dependency::Agent) {
            wait = wait.min(Duration::from_millis(ms + 5));
        }
        tokio::select! {
            _ = self.shared.wake.notified() => {}
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.changed() => {}
        }
        let mut due = lock(&self.shared.next_due);
        if due.is_some_and(|d| d <= Instant::now()) {
            *due = None;
        }
    }

    fn bot(&self, bot_id: &str) -> Option<&BotConfig> {
        self.shared.config.bot(bot_id)
    }

    #[tracing::instrument(skip_all, fields(task_id = claimed.task.id, bot_id = %claimed.task.bot_id))]
    async fn run_claimed(self, claimed: Claimed, permit: OwnedSemaphorePermit) {
        let _busy = BusyGuard::new(&self.shared.busy);
        let task = claimed.task;
        if let Some(refusal) = self.budget_refusal(&task) {
            self.conclude(&task, refusal).await;
            drop(permit);
            return;
        }
        let Some(breaker) = self
            .shared
            .circuits
            .get(&task.bot_id, Dependency::Agent)
            .cloned()
        else {
            self.conclude(&task, unknown_bot(&task)).await;
            return;
        };
        let breaker_permit = match breaker.try_acquire() {
            Ok(p) => p,
            Err(rejected) => {
                self.hold_for_breaker(&task, rejected.retry_after()).await;
                return;
            }
        };
        let verdict = self.run_agent(&task, claimed.session_id).await;
        match &verdict {
            Verdict::Done(finish) => match finish.error_class {
                None => breaker_permit.success(),
                Some(class) if counts_against_agent(class) => {
                    breaker_permit.failure(class.as_str())
                }
                Some(_) => breaker_permit.ignore(),
            },
            Verdict::Retry { class, .. } if counts_against_agent(*class) => {
                breaker_permit.failure(class.as_str())
            }
            Verdict::Retry { .. } => breaker_permit.ignore(),
        }
        self.conclude(&task, verdict).await;
        drop(permit);
    }

    /// A claimed task whose bot's agent breaker refused: back in the queue without
    /// using an attempt, to be tried when the breaker allows a probe.
    async fn hold_for_breaker(&self, task: &Task, retry_after: Duration) {
        let now = now_ms();
        // Keep its place in line: the breaker, not a backoff, decides when it runs
        // (claims skip the bot while its agent circuit refuses calls).
        let due = task.enqueued_ms;
        let requeued = self
            .shared
            .store
            .requeue_task(
                task.id,
                TaskStatus::Queued,
                FailureClass::CircuitOpen,
                "the agent is unavailable (circuit open); the task runs when it recovers".into(),
                due,
                now,
                true,
            )
            .await;
        if let Err(e) = requeued {
            tracing::error!(error = %e, "cannot put a blocked task back in the queue");
        }
        let _ = self
            .shared
            .store
            .append_event(
                "task_blocked",
                Some(&task.bot_id),
                serde_json::json!({"task_id": task.id, "dependency": "agent", "state": "open", "message": "agent circuit open; task held in the queue"}),
                now,
            )
            .await;
        self.schedule_wake(retry_after);
    }

    fn budget_refusal(&self, task: &Task) -> Option<Verdict> {
        let spend = Spend::of(&self.shared.store, &task.bot_id, now_ms());
        let message = match spend.exceeded(&self.shared.config.limits)? {
            Exceeded::Daily { spent, limit } => format!(
                "daily budget reached: ${spent:.2} spent today of ${limit:.2}; the task was not run"
            ),
            Exceeded::Monthly { spent, limit } => format!(
                "monthly budget reached: ${spent:.2} spent this month of ${limit:.2}; the task was not run"
            ),
        };
        Some(Verdict::Done(TaskFinish {
            status: Some(TaskStatus::Failed),
            error_class: Some(FailureClass::CostLimit),
            error: Some(message),
            deliver: true,
            ..TaskFinish::default()
        }))
    }

    fn agent_command(&self, bot: &BotConfig) -> AgentCommand {
        let mut scrub_env: Vec<String> = self
            .shared
            .config
            .bots
            .iter()
            .map(|b| b.token_env.clone())
            .collect();
        scrub_env.push(self.shared.config.http.admin_token_env.clone());
        AgentCommand::from_config(&bot.agent, scrub_env)
    }

    fn run_spec(&self, task: &Task, bot: &BotConfig, session_id: Option<String>) -> RunSpec {
        RunSpec {
            task_id: task.id,
            prompt: task.prompt.clone(),
            workdir: bot.workdir.clone(),
            run_dir: self.shared.runs_dir.join(task.id.to_string()),
            session_id,
            timeout: Duration::from_secs(self.shared.config.limits.task_timeout_s),
            kill_grace: KILL_GRACE,
        }
    }

    /// Spawns the agent, records its identity, waits; retries a lost session once
    /// as a fresh one.
    async fn run_agent(&self, task: &Task, session_id: Option<String>) -> Verdict {
        let Some(bot) = self.bot(&task.bot_id).cloned() else {
            return unknown_bot(task);
        };
        let command = self.agent_command(&bot);
        let mut session = session_id.filter(|s| agent::is_valid_session_id(s));
        loop {
            let spec = self.run_spec(task, &bot, session.clone());
            let outcome = match self.spawn_and_wait(task, &command, &spec).await {
                Ok(outcome) => outcome,
                Err(verdict) => return verdict,
            };
            if session.is_some() && outcome.is_unknown_session() {
                tracing::info!("agent no longer knows the session; retrying as a fresh session");
                if let Err(e) = self
                    .shared
                    .store
                    .forget_agent_session(&task.bot_id, task.user_id)
                    .await
                {
                    tracing::warn!(error = %e, "cannot forget the stale session");
                }
                session = None;
                continue;
            }
            return self.judge(task, outcome);
        }
    }

    async fn spawn_and_wait(
        &self,
        task: &Task,
        command: &AgentCommand,
        spec: &RunSpec,
    ) -> Result<AgentOutcome, Verdict> {
        let running = match agent::spawn(command, spec).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "agent spawn failed");
                return Err(self.retry_or_fail(task, FailureClass::SpawnFailed, e.to_string()));
            }
        };
        let identity = running.identity();
        if let Err(e) = self
            .shared
            .store
            .record_task_process(
                task.id,
                task.started_ms.unwrap_or_else(now_ms),
                identity.pid,
                identity.start_time,
            )
            .await
        {
            tracing::error!(error = %e, "cannot record the agent's pid");
        }
        let (cancel_tx, cancel_rx) = watch::channel(false);
        lock(&self.shared.cancels).insert(task.id, cancel_tx);
        let run_started = Instant::now();
        let outcome = running.wait(cancel_rx).await;
        lock(&self.shared.cancels).remove(&task.id);
        crate::metrics::observe(
            "agent",
            &task.bot_id,
            run_started.elapsed().as_secs_f64() * 1000.0,
            agent_call_outcome(&outcome),
        );
        Ok(outcome)
    }

    /// Decides a task's fate from its agent's outcome.
    fn judge(&self, task: &Task, outcome: AgentOutcome) -> Verdict {
        let result = &outcome.result;
        let base = TaskFinish {
            result: Some(result.text.clone()),
            exit_code: outcome.exit_code,
            cost_usd: result.cost_usd,
            input_tokens: result.input_tokens,
            output_tokens: result.output_tokens,
            session_id: result.session_id.clone(),
            deliver: true,
            ..TaskFinish::default()
        };
        if outcome.succeeded() {
            return Verdict::Done(TaskFinish {
                status: Some(TaskStatus::Succeeded),
                ..base
            });
        }
        let summary = outcome
            .failure_summary()
            .unwrap_or_else(|| "agent failed".into());
        if outcome.cancelled {
            return Verdict::Done(TaskFinish {
                status: Some(TaskStatus::Cancelled),
                error_class: Some(FailureClass::Cancelled),
                error: Some("cancelled while running".into()),
                ..base
            });
        }
        let class = if outcome.timed_out {
            FailureClass::Timeout
        } else if result.hit_budget_limit() {
            FailureClass::CostLimit
        } else if looks_rate_limited(&result.text) || looks_rate_limited(&outcome.stderr_tail) {
            FailureClass::RateLimited
        } else {
            FailureClass::AgentError
        };
        if class.is_retryable() && task.attempts < task.max_attempts {
            return Verdict::Retry {
                class,
                error: summary,
            };
        }
        Verdict::Done(TaskFinish {
            status: Some(TaskStatus::Failed),
            error_class: Some(class),
            error: Some(summary),
            ..base
        })
    }

    fn retry_or_fail(&self, task: &Task, class: FailureClass, error: String) -> Verdict {
        if class.is_retryable() && task.attempts < task.max_attempts {
            Verdict::Retry { class, error }
        } else {
            Verdict::Done(TaskFinish {
                status: Some(TaskStatus::Failed),
                error_class: Some(class),
                error: Some(error),
                deliver: true,
                ..TaskFinish::default()
            })
        }
    }

    /// Records the verdict in the store and tells whoever waits.
    async fn conclude(&self, task: &Task, verdict: Verdict) {
        let now = now_ms();
        match verdict {
            Verdict::Done(finish) => {
                match self.shared.store.finish_task(task.id, finish, now).await {
                    Ok(done) => {
                        tracing::info!(status = %done.status, "task finished");
                        if let Some(run_ms) = done.run_ms() {
                            crate::metrics::observe_task_duration(done.status.as_str(), run_ms);
                        }
                        let _ = self.shared.events.send(PoolEvent::Finished(done));
                    }
                    Err(e) => tracing::error!(error = %e, "cannot record the task's end"),
                }
            }
            Verdict::Retry { class, error } => {
                let delay = backoff(task.attempts);
                tracing::info!(
                    class = class.as_str(),
                    delay_ms = delay.as_millis() as u64,
                    "task will be retried"
                );
                let status = if class == FailureClass::Interrupted {
                    TaskStatus::Interrupted
                } else {
                    TaskStatus::Queued
                };
                let due = now + delay.as_millis() as u64;
                match self
                    .shared
                    .store
                    .requeue_task(task.id, status, class, error, due, now, false)
                    .await
                {
                    Ok(requeued) => {
                        let _ = self.shared.events.send(PoolEvent::Retrying(requeued));
                    }
                    Err(e) => tracing::error!(error = %e, "cannot re-queue the task"),
                }
                self.schedule_wake(delay);
            }
        }
        self.notify();
    }

    fn schedule_wake(&self, after: Duration) {
        let at = Instant::now() + after;
        let mut due = lock(&self.shared.next_due);
        if due.is_none_or(|d| at < d) {
            *due = Some(at);
        }
    }

    /// Sees a run left by the previous process to its end.
    #[tracing::instrument(skip_all, fields(task_id = task.id, bot_id = %task.bot_id))]
    async fn adopt_task(self, task: Task, permit: OwnedSemaphorePermit) {
        let _busy = BusyGuard::new(&self.shared.busy);
        let (Some(pid), Some(start_time)) = (task.pid, task.pid_start_time) else {
            return;
        };
        let elapsed = Duration::from_millis(now_ms().saturating_sub(task.started_ms.unwrap_or(0)));
        let timeout =
            Duration::from_secs(self.shared.config.limits.task_timeout_s).saturating_sub(elapsed);
        let spec = AdoptSpec {
            identity: ProcIdentity { pid, start_time },
            run_dir: self.shared.runs_dir.join(task.id.to_string()),
            poll: ADOPT_POLL,
            timeout,
            kill_grace: KILL_GRACE,
        };
        tracing::info!(
            pid,
            "adopting an agent left running by the previous process"
        );
        let (cancel_tx, cancel_rx) = watch::channel(false);
        lock(&self.shared.cancels).insert(task.id, cancel_tx);
        let outcome = agent::adopt(spec, cancel_rx).await;
        lock(&self.shared.cancels).remove(&task.id);
        let verdict = self.judge(&task, outcome);
        self.conclude(&task, verdict).await;
        drop(permit);
    }

    /// Finishes or re-queues a task whose agent died with the previous process:
    /// from its output files when they hold a complete result, else as interrupted.
    pub(crate) async fn settle_dead_run(&self, task: &Task) {
        let outcome = match (task.pid, task.pid_start_time) {
            (Some(pid), Some(start_time)) => {
                let spec = AdoptSpec {
                    identity: ProcIdentity { pid, start_time },
                    run_dir: self.shared.runs_dir.join(task.id.to_string()),
                    poll: ADOPT_POLL,
                    timeout: Duration::ZERO,
                    kill_grace: Duration::ZERO,
                };
                // The identity is known dead (or reused): adopt only reads the files.
                let (_tx, rx) = watch::channel(false);
                Some(agent::adopt(spec, rx).await)
            }
            _ => None,
        };
        let verdict = match outcome {
            Some(outcome) if outcome.result.complete => self.judge(task, outcome),
            _ if task.attempts < task.max_attempts => Verdict::Retry {
                class: FailureClass::Interrupted,
                error: "a restart interrupted the run; it will run again".into(),
            },
            _ => Verdict::Done(TaskFinish {
                status: Some(TaskStatus::Failed),
                error_class: Some(FailureClass::Interrupted),
                error: Some(format!(
                    "a restart interrupted the run and no attempts remain ({} of {})",
                    task.attempts, task.max_attempts
                )),
                deliver: true,
                ..TaskFinish::default()
            }),
        };
        self.conclude(task, verdict).await;
    }
}

/// Failure classes that say something about the agent's health.
fn counts_against_agent(class: FailureClass) -> bool {
    matches!(
        class,
        FailureClass::Timeout
            | FailureClass::AgentError
            | FailureClass::SpawnFailed
            | FailureClass::RateLimited
    )
}

fn looks_rate_limited(text: &str) -> bool {
    let lower = text.to_ascii_lowercase();
    lower.contains("rate limit") || lower.contains("rate_limit") || lower.contains("429")
}

fn unknown_bot(task: &Task) -> Verdict {
    Verdict::Done(TaskFinish {
        status: Some(TaskStatus::Failed),
        error_class: Some(FailureClass::SpawnFailed),
        error: Some(format!("bot `{}` is not configured", task.bot_id)),
        deliver: false,
        ..TaskFinish::default()
    })
}

/// Exponential backoff: 1 s, 2 s, 4 s, ... capped.
fn backoff(attempts: u32) -> Duration {
    let secs = 1u64 << attempts.saturating_sub(1).min(6);
    Duration::from_secs(secs).min(MAX_BACKOFF)
}

/// How an agent run counts in the `agent` dependency's call stats.
fn agent_call_outcome(outcome: &AgentOutcome) -> crate::metrics::CallOutcome {
    if outcome.timed_out {
        crate::metrics::CallOutcome::Timeout
    } else if outcome.succeeded() || outcome.cancelled {
        crate::metrics::CallOutcome::Ok
    } else {
        crate::metrics::CallOutcome::Error
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

struct BusyGuard<'a>(&'a AtomicUsize);

impl<'a> BusyGuard<'a> {
    fn new(counter: &'a AtomicUsize) -> Self {
        counter.fetch_add(1, Ordering::Relaxed);
        BusyGuard(counter)
    }
}

impl Drop for BusyGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{AgentConfig, AgentKind};
    use crate::shutdown::Shutdown;
    use crate::storage::{NewTask, PRIORITY_NORMAL, StoreOptions, TaskKind, TaskSource};

    /// The bots learn of a task's retries and end only from the pool's event
    /// channel: each is announced once, after the store recorded it.
    #[tokio::test(flavor = "multi_thread")]
    async fn the_pool_announces_each_retry_and_the_end_on_its_channel() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = Config {
            data_dir: dir.path().to_path_buf(),
            ..Config::default()
        };
        config.limits.max_attempts = 2;
        config.bots.push(BotConfig {
            id: "B".into(),
            workdir: dir.path().to_path_buf(),
            agent: AgentConfig {
                kind: AgentKind::Plain,
                command: vec!["sh".into(), "-c".into(), "cat >/dev/null; exit 3".into()],
                ..AgentConfig::default()
            },
            ..BotConfig::default()
        });
        let config = Arc::new(config);
        let store = Store::open(&config.database_path(), StoreOptions::default()).expect("store");
        let circuits = Circuits::load(&store, &["B".to_string()], &config.breaker);
        let (events, mut announced) = super::super::pool_events();
        let pool = Pool::new(config.clone(), store.clone(), circuits, events);
        let new = NewTask {
            bot_id: "B".into(),
            user_id: 1,
            chat_id: 1,
            kind: TaskKind::Task,
            source: TaskSource::Api,
            prompt: "fail".into(),
            priority: PRIORITY_NORMAL,
            max_attempts: 2,
            reply_to_message_id: None,
            update_id: None,
        };
        let id = store
            .submit_task(new, now_ms())
            .await
            .expect("stored")
            .task
            .id;
        let shutdown = Shutdown::new();
        let running = tokio::spawn(pool.clone().run(Vec::new(), shutdown.subscribe()));
        pool.notify();

        let mut next = async || {
            tokio::time::timeout(Duration::from_secs(60), announced.recv())
                .await
                .expect("an event in time")
                .expect("the channel is open")
        };
        match next().await {
            PoolEvent::Retrying(task) => {
                assert_eq!((task.id, task.attempts), (id, 1));
                assert_eq!(task.status, TaskStatus::Queued);
            }
            other => panic!("expected a retry first, got {other:?}"),
        }
        match next().await {
            PoolEvent::Finished(task) => {
                assert_eq!((task.id, task.attempts), (id, 2));
                assert_eq!(task.status, TaskStatus::Failed);
                let stored = store.get_task(id).expect("read").expect("task");
                assert_eq!(
                    stored.status,
                    TaskStatus::Failed,
                    "announced after it was stored"
                );
            }
            other => panic!("expected the end, got {other:?}"),
        }
        shutdown.request(0);
        running.await.expect("the pool stops");
        assert!(announced.try_recv().is_err(), "nothing announced twice");
        store.close();
    }
}
