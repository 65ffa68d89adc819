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
//! - every agent run goes through [`Pool::run_claimed`], which asks the agent
//!   breaker before starting (a run started at the door asked it there) and
//!   reports the outcome after.
//! - a run started at the door ([`Pool::reserve_warm_start`]) holds a permit of
//!   the same semaphore and was claimed by the store under the same rules as the
//!   dispatcher's (first claimable, its user running nothing); it is tracked
//!   beside the dispatcher's runs and detached with them at shutdown.
//! - at shutdown, agents are not killed: their tasks stay `running` with pid and
//!   start time recorded, and the next process adopts them; idle warm processes
//!   ([`super::warm`]) are ended.
//! - each task that reaches a terminal state, or is re-queued for another attempt,
//!   is announced once on the [`PoolEvents`] channel the pool was built with, after
//!   the store recorded it (the bots deliver answers and retry notices from it).
//! - a warm process is used by one run at a time: it leaves the warm set for the
//!   run and goes back only after a complete `result`, still running, and only
//!   when its bot keeps processes warm (`keep_warm_s` > 0); a Claude Code agent
//!   that asks approvals runs on such a process whatever `keep_warm_s` says, and
//!   with `keep_warm_s = 0` the process ends with its turn.
//! - the approval requests a run's agent makes are tasks of that run: awaited
//!   before it expires what is still pending, cancelled with it when it is
//!   detached at shutdown (no fire-and-forget spawn outlives the pool);
//! - what a run's agent does reaches [`Pool::progress`] and the
//!   [`Pool::subscribe_progress`] channel as it happens, and the store's
//!   `task_events` table before the task is concluded.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, broadcast, mpsc, watch};
use tokio::task::JoinSet;

use super::agent::{self, AdoptSpec, AgentCommand, AgentOutcome, RunSpec};
use super::follow::Follower;
use super::live::LiveProgress;
use super::proc_identity::{self, ProcIdentity};
use super::stream::{Event, StreamParser};
use super::warm::{self, SessionKey, WarmProcess, WarmSet};
use crate::approvals::{AgentLink, AgentRequest, Approvals};
use crate::breaker::{Circuits, Dependency, Permit, State};
use crate::budget::{Exceeded, Spend};
use crate::config::{AgentConfig, BotConfig, Config, PermissionMode};
use crate::storage::{
    Claimed, FailureClass, Pending, Store, StoreError, Task, TaskFinish, TaskStatus, TaskStep,
    now_ms,
};

/// Longest an idle dispatcher sleeps without a notification (a safety net only).
const IDLE_SAFETY_WAKE: Duration = Duration::from_secs(5);
/// Poll interval for adopted agents (not our children, so no exit notification).
const ADOPT_POLL: Duration = Duration::from_millis(200);
/// Grace between SIGTERM and SIGKILL when a run is stopped.
const KILL_GRACE: Duration = Duration::from_secs(2);
/// Longest retry backoff.
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// Warm processes kept per worker.
const WARM_PER_WORKER: usize = 2;
/// Progress notifications buffered per subscriber; a slower one skips to the newest.
const PROGRESS_CHANNEL: usize = 256;

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
    /// Idle warm agent processes. A std Mutex: held for a map operation only,
    /// never across an await (processes are taken out before they are used).
    warm: Mutex<WarmSet>,
    /// What each running task's agent has done so far. A std Mutex, as above.
    progress: Mutex<HashMap<u64, LiveProgress>>,
    /// Announces the id of a task whose progress changed.
    progress_tx: broadcast::Sender<u64>,
    /// Tool approvals the agents ask for.
    approvals: Approvals,
    /// Running tasks whose turn was interrupted with /stop. A std Mutex, as above.
    stopped: Mutex<std::collections::HashSet<u64>>,
    /// Runs chosen by the dispatcher whose claim is not written yet, by task id,
    /// with their (bot, user): the claim is written with the agent's process
    /// ([`Store::record_task_process`]), so a run's start costs one commit. Their
    /// users are passed over by the next choice; a run that ends before its agent
    /// starts writes the claim first ([`Pool::claim_if_starting`]). An entry with
    /// a time is a run the store could not start: its user is passed over until
    /// then, so a failing store is not asked again at once. A std Mutex, as above.
    starting: Mutex<HashMap<u64, Starting>>,
    /// The runs started at the door ([`Pool::start_reserved`]), beside the
    /// dispatcher's own; closed when the dispatcher stops. A std Mutex, as above.
    door_runs: Mutex<DoorRuns>,
}

/// Runs started at the door, the users whose prompts are being started there,
/// and whether the pool still takes them.
#[derive(Default)]
struct DoorRuns {
    runs: JoinSet<()>,
    /// (bot, user) of each reservation held: the dispatcher passes them over.
    users: Vec<(String, i64)>,
    closed: bool,
}

/// A user's place in [`DoorRuns::users`], given up when dropped.
struct DoorUser {
    shared: Arc<Shared>,
    user: (String, i64),
}

impl Drop for DoorUser {
    fn drop(&mut self) {
        let mut door = lock(&self.shared.door_runs);
        if let Some(at) = door.users.iter().position(|user| *user == self.user) {
            door.users.swap_remove(at);
        }
    }
}

/// A warm start reserved for a prompt at the door ([`Pool::reserve_warm_start`]):
/// a worker, a call of the bot's agent breaker and the session's idle warm
/// process, held while the prompt is stored. Given to [`Pool::start_reserved`]
/// when the store started the task on the process, else to [`Pool::release`].
pub struct WarmStart {
    permit: OwnedSemaphorePermit,
    breaker: Permit,
    process: WarmProcess,
    key: SessionKey,
    session_id: Option<String>,
    agent: AgentConfig,
    blocked_bots: Vec<String>,
    _user: DoorUser,
}

impl WarmStart {
    /// The reserved process's pid and start time, to record with the task.
    pub fn process(&self) -> (u32, u64) {
        (self.process.identity.pid, self.process.identity.start_time)
    }

    /// The bots whose agent breaker refused calls when this was reserved: their
    /// queued tasks do not run first.
    pub fn blocked_bots(&self) -> Vec<String> {
        self.blocked_bots.clone()
    }
}

/// What a run started at the door brings with it.
struct Reserved {
    breaker: Permit,
    process: WarmProcess,
    /// The agent settings the process was matched against.
    agent: AgentConfig,
}

/// A chosen run whose claim is not written yet (see [`Shared::starting`]).
#[derive(Debug, Clone)]
struct Starting {
    /// Its (bot, user).
    user: (String, i64),
    /// Until when its user is passed over after the store failed to start it.
    held_until: Option<Instant>,
}

/// How long a run the store could not start keeps its user out of the next choices.
const START_FAILURE_HOLD: Duration = Duration::from_secs(2);

/// What happened to a task's run, decided from the agent's outcome.
#[derive(Debug)]
enum Verdict {
    Done(TaskFinish),
    Retry {
        class: FailureClass,
        error: String,
    },
    /// The run did not start: the task was cancelled between the dispatcher's
    /// choice and the claim, or the store could not write the claim. A piped
    /// agent never got the prompt; one that reads it at start was stopped at
    /// once. Nothing to record.
    Withdrawn,
}

impl Pool {
    /// A pool over `store` announcing its tasks' ends and retries on `events`;
    /// nothing runs until [`Pool::run`] is spawned.
    pub fn new(config: Arc<Config>, store: Store, circuits: Circuits, events: PoolEvents) -> Self {
        let workers = config.limits.workers;
        let runs_dir = config.runs_dir();
        Pool {
            shared: Arc::new(Shared {
                circuits,
                wake: Notify::new(),
                permits: Arc::new(Semaphore::new(workers)),
                busy: AtomicUsize::new(0),
                cancels: Mutex::new(HashMap::new()),
                next_due: Mutex::new(None),
                events,
                runs_dir,
                warm: Mutex::new(WarmSet::default()),
                progress: Mutex::new(HashMap::new()),
                progress_tx: broadcast::channel(PROGRESS_CHANNEL).0,
                approvals: Approvals::new(
                    store.clone(),
                    config.clone(),
                    AgentLink {
                        write_line: warm::write_control_blocking,
                        is_alive: warm::process_alive,
                    },
                ),
                stopped: Mutex::default(),
                starting: Mutex::default(),
                door_runs: Mutex::default(),
                store,
                config,
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

    /// The tool approvals of the agents.
    pub fn approvals(&self) -> &Approvals {
        &self.shared.approvals
    }

    /// Hands the approval requests among `events` of `task`'s agent, whose
    /// process lives in `process_dir`, to the approvals, as tasks of `forwarded`:
    /// the run owns them, waits for them ([`settle_requests`]) before it expires
    /// what is still pending, and dropping them (a run detached at shutdown)
    /// cancels them — the next process follows the turn again and forwards its
    /// requests anew, each stored once.
    fn forward_requests(
        &self,
        forwarded: &mut JoinSet<()>,
        task: &Task,
        process_dir: &std::path::Path,
        events: &[Event],
    ) {
        while forwarded.try_join_next().is_some() {}
        for event in events {
            if let Event::ControlRequest {
                request_id,
                subtype,
                tool_name,
                input,
            } = event
            {
                let request = AgentRequest {
                    task_id: task.id,
                    bot_id: task.bot_id.clone(),
                    user_id: task.user_id,
                    chat_id: task.chat_id,
                    process_dir: process_dir.to_path_buf(),
                    request_id: request_id.clone(),
                    subtype: subtype.clone(),
                    tool_name: tool_name.clone(),
                    input: input.clone(),
                };
                let approvals = self.shared.approvals.clone();
                forwarded.spawn(async move { approvals.on_request(request).await });
            }
        }
    }

    /// Interrupts the current turn of a running task's agent on an input pipe (a
    /// `control_request` of subtype `interrupt`): the agent stops its tool, ends
    /// the turn and stays open for the session's next prompt if its bot keeps
    /// processes warm; the task ends as cancelled. `Ok(false)` when the task does
    /// not run here as such a turn (an agent reading a prompt file can only be
    /// cancelled).
    pub async fn stop_turn(&self, task_id: u64) -> std::io::Result<bool> {
        if !self.is_running(task_id) {
            return Ok(false);
        }
        // The record of this attempt's process only: an earlier attempt's warm
        // process may have left one for a run that is now cold.
        let task = self.shared.store.get_task(task_id).ok().flatten();
        let Some(record) = warm::read_turn_record(&self.run_dir(task_id)).filter(|r| {
            task.as_ref().is_some_and(|t| {
                t.pid == Some(r.identity.pid) && t.pid_start_time == Some(r.identity.start_time)
            })
        }) else {
            return Ok(false);
        };
        lock(&self.shared.stopped).insert(task_id);
        let request = serde_json::json!({"type": "control_request",
            "request_id": format!("stop-{task_id}-{}", now_ms()),
            "request": {"subtype": "interrupt"}});
        let mut line = request.to_string().into_bytes();
        line.push(b'\n');
        let written = warm::write_control(&record.process_dir, line).await;
        if written.is_err() {
            lock(&self.shared.stopped).remove(&task_id);
        }
        written.map(|()| true)
    }

    /// Whether a task is running in this pool.
    pub fn is_running(&self, task_id: u64) -> bool {
        lock(&self.shared.cancels).contains_key(&task_id)
    }

    /// Ids of tasks whose progress changed, as it happens (the bots' progress
    /// messages). A receiver that falls behind skips to the newest.
    pub fn subscribe_progress(&self) -> broadcast::Receiver<u64> {
        self.shared.progress_tx.subscribe()
    }

    /// What a running task's agent has done so far, if it runs here.
    pub fn progress(&self, task_id: u64) -> Option<LiveProgress> {
        lock(&self.shared.progress).get(&task_id).cloned()
    }

    /// Idle warm agent processes and their resident memory in all, bytes.
    pub fn warm_usage(&self) -> (usize, u64) {
        lock(&self.shared.warm).usage()
    }

    /// Ends the idle warm process of a (bot, user, project) session, if any (`/new`).
    pub async fn end_warm_session(&self, bot_id: &str, user_id: i64, project: &str) {
        self.shared
            .approvals
            .forget_session(bot_id, user_id, project);
        let ended = lock(&self.shared.warm).remove_matching(bot_id, Some(user_id), Some(project));
        end_all(ended).await;
    }

    /// Ends the warm processes that outlived their `keep_warm_s`, or whose bot is
    /// gone; returns when the next one is due.
    async fn end_expired_warm(&self) -> Option<Instant> {
        let keep = |key: &SessionKey| {
            Duration::from_secs(self.bot(&key.0).map_or(0, |bot| bot.agent.keep_warm_s))
        };
        let expired = lock(&self.shared.warm).expired(Instant::now(), keep);
        if !expired.is_empty() {
            tracing::debug!(count = expired.len(), "ending idle warm agents");
        }
        end_all(expired).await;
        lock(&self.shared.warm).next_expiry(keep)
    }

    /// Ends the warm processes a previous agentlab left idle, keeping those of the
    /// tasks being adopted.
    pub(crate) fn sweep_orphan_warm(&self, adopted: &[Task]) -> usize {
        let keep: Vec<std::path::PathBuf> = adopted
            .iter()
            .filter_map(|task| warm::read_turn_record(&self.run_dir(task.id)))
            .map(|record| record.process_dir)
            .collect();
        warm::sweep_orphans(&self.shared.runs_dir, &keep)
    }

    /// The identities of the warm processes in the runs folder.
    pub(crate) fn warm_identities(&self) -> Vec<ProcIdentity> {
        warm::warm_identities(&self.shared.runs_dir)
    }

    /// Whether a running task's recorded process is one of the `warm` processes
    /// but holds no turn of the task: the task was started at the door
    /// ([`Pool::start_reserved`]) and the service stopped before its turn was
    /// recorded, so its prompt was never written (a run the dispatcher starts
    /// records the turn before the process).
    pub(crate) fn turn_never_began(&self, task: &Task, warm: &[ProcIdentity]) -> bool {
        let (Some(pid), Some(start_time)) = (task.pid, task.pid_start_time) else {
            return false;
        };
        let identity = ProcIdentity { pid, start_time };
        // Alive: the kernel kept the unsynced turn record, if it was written.
        // (After a power loss a dead process's record may be lost with it;
        // such a run is settled as any dead one, its attempt counted.)
        warm.contains(&identity)
            && proc_identity::is_alive(&identity)
            && warm::read_turn_record(&self.run_dir(task.id))
                .is_none_or(|record| record.identity != identity)
    }

    /// Puts a task whose turn never began ([`Self::turn_never_began`]) back in
    /// its place in the queue, its attempt given back: its prompt never reached
    /// the agent, so nothing ran and nothing is announced.
    pub(crate) async fn requeue_unbegun(&self, task: &Task) {
        let why = "a restart came before the prompt reached the agent; it runs again";
        if let Err(error) = self
            .requeue_unstarted(task, FailureClass::Interrupted, why, now_ms())
            .await
        {
            tracing::error!(%error, task_id = task.id, "cannot put an unbegun task back in the queue");
        }
    }

    /// Puts a claimed task whose agent never got its prompt back in its place
    /// in the queue (its `enqueued_ms`), the attempt its claim counted given back.
    async fn requeue_unstarted(
        &self,
        task: &Task,
        class: FailureClass,
        why: &str,
        now: u64,
    ) -> Result<Task, StoreError> {
        let store = &self.shared.store;
        store
            .requeue_task(
                task.id,
                TaskStatus::Queued,
                class,
                why.to_owned(),
                task.enqueued_ms,
                now,
                true,
            )
            .await
    }

    fn run_dir(&self, task_id: u64) -> std::path::PathBuf {
        self.shared.runs_dir.join(task_id.to_string())
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
            runs.spawn(Box::pin(async move { pool.adopt_task(task, permit).await }));
        }
        loop {
            if *shutdown.borrow() {
                break;
            }
            self.end_expired_warm().await;
            let permit = tokio::select! {
                p = self.shared.permits.clone().acquire_owned() => p,
                _ = shutdown.changed() => break,
            };
            let Ok(permit) = permit else { break };
            match self.claim().await {
                Ok(Some(claimed)) => {
                    let pool = self.clone();
                    // Boxed: a run's future is large, and spawning moves it by value
                    // several times (into the task cell, out at completion).
                    runs.spawn(Box::pin(async move {
                        pool.run_claimed(claimed, permit, None).await
                    }));
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
        lock(&self.shared.door_runs).closed = true;
        // Detach: agents keep running and are adopted by the next process. The run
        // tasks are waiting on processes or polls; aborting them loses nothing stored.
        runs.abort_all();
        while runs.join_next().await.is_some() {}
        let mut door_runs = std::mem::take(&mut lock(&self.shared.door_runs).runs);
        door_runs.abort_all();
        while door_runs.join_next().await.is_some() {}
        // Idle warm processes hold no turn: a graceful stop ends them. (A process
        // that was answering is left to its task's adoption.)
        let idle = lock(&self.shared.warm).drain();
        end_all(idle).await;
    }

    /// Reserves a warm start for a prompt of (`bot_id`, `user_id`) in `project`
    /// about to be stored: a free worker, a call of the bot's agent breaker and
    /// the session's idle warm process, when the process can take the prompt as
    /// the dispatcher would give it (same command, same session, alive), the bot
    /// keeps processes warm and its budget is not spent. The store then decides,
    /// in the transaction that stores the prompt, whether it starts at once
    /// ([`Store::submit_started`]: nothing queued may run first and the user
    /// runs nothing) — one durable step instead of a submission and a start.
    /// `None` whenever any of this does not hold: the prompt is queued and the
    /// dispatcher starts it as any other.
    pub fn reserve_warm_start(
        &self,
        bot_id: &str,
        user_id: i64,
        project: &str,
    ) -> Option<WarmStart> {
        let bot = self.bot(bot_id)?;
        let key: SessionKey = (bot_id.to_owned(), user_id, project.to_owned());
        if bot.agent.keep_warm_s == 0 || !lock(&self.shared.warm).contains(&key) {
            return None;
        }
        // As the store will decide, read only: a prompt that would wait is
        // queued without the door's durable step failing first.
        let blocked_bots = self.shared.circuits.agent_blocked_bots();
        let store = &self.shared.store;
        if !matches!(
            store.may_start_now(bot_id, user_id, now_ms(), &blocked_bots),
            Ok(true)
        ) {
            return None;
        }
        let user = (bot_id.to_owned(), user_id);
        if lock(&self.shared.starting)
            .values()
            .any(|run| run.user == user)
        {
            return None;
        }
        let permit = self.shared.permits.clone().try_acquire_owned().ok()?;
        let door_user = {
            let mut door = lock(&self.shared.door_runs);
            if door.closed || door.users.contains(&user) {
                return None;
            }
            door.users.push(user.clone());
            DoorUser {
                shared: self.shared.clone(),
                user,
            }
        };
        let spend = Spend::of(&self.shared.store, bot_id, now_ms());
        if spend.exceeded(&self.shared.config.limits).is_some() {
            return None;
        }
        let agent = self.agent_for_user(bot, user_id);
        if !agent::uses_input_pipe(&agent) {
            return None;
        }
        let command = AgentCommand::from_config(&agent, self.scrub_env());
        let session_id = self
            .shared
            .store
            .get_project_session(bot_id, user_id, project)
            .ok()?
            .and_then(|session| session.agent_session_id)
            .filter(|id| agent::is_valid_session_id(id));
        let mut process = lock(&self.shared.warm).take(&key)?;
        let fits =
            process.command == command && process.session_id == session_id && process.is_running();
        // Only a closed breaker: a probe of a half-open one is the dispatcher's.
        let breaker = match self.shared.circuits.get(bot_id, Dependency::Agent) {
            Some(breaker) if fits && breaker.state() == State::Closed => breaker.try_acquire().ok(),
            _ => None,
        };
        let Some(breaker) = breaker else {
            // Left as it was: the dispatcher's run decides what becomes of it.
            self.put_back(key, process);
            return None;
        };
        Some(WarmStart {
            permit,
            breaker,
            process,
            key,
            session_id,
            agent,
            blocked_bots,
            _user: door_user,
        })
    }

    /// Runs `task`, which the store started on the reserved process
    /// ([`crate::storage::TaskSubmitted::started`]), as the dispatcher runs a
    /// task it claimed: the turn is recorded, the prompt written, the turn
    /// followed. If the pool has stopped meanwhile, the task is left running
    /// with its process recorded and no turn record, for the next start's
    /// recovery to re-queue.
    pub fn start_reserved(&self, start: WarmStart, task: Task) {
        // The store shows its user running now: the dispatcher's choices pass
        // it over without the reservation's entry, dropped at the end.
        let WarmStart {
            permit,
            breaker,
            process,
            key,
            session_id,
            agent,
            _user,
            ..
        } = start;
        let claimed = Claimed {
            task,
            session_id,
            project: key.2,
        };
        let reserved = Reserved {
            breaker,
            process,
            agent,
        };
        let pool = self.clone();
        let mut door = lock(&self.shared.door_runs);
        while door.runs.try_join_next().is_some() {}
        if door.closed {
            // Its task, running with no turn record, goes back to the queue at
            // the next start; the process is not left running meanwhile.
            tokio::spawn(reserved.process.end(KILL_GRACE));
            return;
        }
        door.runs.spawn(Box::pin(async move {
            pool.run_claimed(claimed, permit, Some(reserved)).await
        }));
    }

    /// Gives back a warm start the store did not use (the prompt was queued, was
    /// a duplicate, or could not be stored): the process is idle in the warm set
    /// again, the worker free.
    pub fn release(&self, start: WarmStart) {
        let WarmStart {
            permit,
            process,
            key,
            _user,
            ..
        } = start;
        self.put_back(key, process);
        drop((permit, _user));
        self.notify();
    }

    /// Puts a process taken from the warm set back, ending what that evicts;
    /// ends it instead once the pool has stopped (its warm set was emptied).
    fn put_back(&self, key: SessionKey, process: WarmProcess) {
        if lock(&self.shared.door_runs).closed {
            tokio::spawn(process.end(KILL_GRACE));
            return;
        }
        let capacity = self.workers().saturating_mul(WARM_PER_WORKER).max(1);
        let evicted = lock(&self.shared.warm).put(key, process, capacity);
        if !evicted.is_empty() {
            tokio::spawn(end_all(evicted));
        }
    }

    /// Chooses the next task to run (see [`Shared::starting`]); its claim is
    /// written when its agent starts.
    async fn claim(&self) -> Result<Option<Claimed>, StoreError> {
        let blocked = self.shared.circuits.agent_blocked_bots();
        let busy: Vec<(String, i64)> = {
            let mut starting = lock(&self.shared.starting);
            let now = Instant::now();
            starting.retain(|_, run| run.held_until.is_none_or(|until| until > now));
            let door_users = lock(&self.shared.door_runs).users.clone();
            starting
                .values()
                .map(|run| run.user.clone())
                .chain(door_users)
                .collect()
        };
        let chosen = self
            .shared
            .store
            .select_claimable(now_ms(), &blocked, &busy)?;
        if let Some(claimed) = &chosen {
            let run = Starting {
                user: (claimed.task.bot_id.clone(), claimed.task.user_id),
                held_until: None,
            };
            lock(&self.shared.starting).insert(claimed.task.id, run);
        }
        Ok(chosen)
    }

    /// Writes the claim of a chosen task whose run ends before its agent's
    /// process was recorded, so its end is recorded on a claimed task (its
    /// attempt counted) as any run's is. Nothing for any other task.
    /// `false` when the claim could not be written: the task is still queued
    /// (its user runs another task, or the store failed) or was cancelled.
    async fn claim_if_starting(&self, task: &Task) -> bool {
        if !lock(&self.shared.starting).contains_key(&task.id) {
            return true;
        }
        let claimed_ms = task.started_ms.unwrap_or_else(now_ms);
        // The entry keeps its user out of the next choices until the claim
        // shows in the store.
        let claimed = self.shared.store.claim_selected(task.id, claimed_ms).await;
        if let Err(error) = &claimed {
            tracing::warn!(%error, "cannot claim the task before recording its end");
        }
        lock(&self.shared.starting).remove(&task.id);
        claimed.is_ok()
    }

    /// Records a chosen task's agent process, which also writes its claim.
    /// `false` when the run must not go on, and its agent must not be given the
    /// prompt: the task was cancelled since it was chosen, or neither the record
    /// nor the claim alone could be written (the task is then still queued, and
    /// its user held back for [`START_FAILURE_HOLD`]). When only the pid could
    /// not be recorded the run goes on, as a run whose pid is unknown.
    async fn record_process(&self, task: &Task, identity: ProcIdentity) -> bool {
        let claimed_ms = task.started_ms.unwrap_or_else(now_ms);
        let store = &self.shared.store;
        let recorded = store
            .record_task_process(task.id, claimed_ms, identity.pid, identity.start_time)
            .await;
        let started = match recorded {
            Ok(()) => true,
            Err(StoreError::Conflict(why)) => {
                tracing::info!(%why, "the task cannot start now; its agent is not given the prompt");
                false
            }
            Err(error) => {
                tracing::error!(%error, "cannot record the agent's pid");
                match store.claim_selected(task.id, claimed_ms).await {
                    Ok(()) => true,
                    Err(error) => {
                        tracing::error!(%error, "cannot claim the task either; it waits");
                        self.hold_start(task.id);
                        return false;
                    }
                }
            }
        };
        lock(&self.shared.starting).remove(&task.id);
        started
    }

    /// Keeps a run the store could not start out of the next choices for
    /// [`START_FAILURE_HOLD`], and wakes the dispatcher after it.
    fn hold_start(&self, task_id: u64) {
        if let Some(run) = lock(&self.shared.starting).get_mut(&task_id) {
            run.held_until = Some(Instant::now() + START_FAILURE_HOLD);
        }
        self.schedule_wake(START_FAILURE_HOLD);
    }

    async fn idle(&self, shutdown: &mut watch::Receiver<bool>) {
        let mut wait = IDLE_SAFETY_WAKE;
        if let Some(due) = *lock(&self.shared.next_due) {
            wait = wait.min(due.saturating_duration_since(Instant::now()));
        }
        if let Some(ms) = self.shared.circuits.next_probe_in_ms(Dependency::Agent) {
            wait = wait.min(Duration::from_millis(ms + 5));
        }
        if let Some(expiry) = self.end_expired_warm().await {
            wait = wait.min(expiry.saturating_duration_since(Instant::now()));
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
    async fn run_claimed(
        self,
        claimed: Claimed,
        permit: OwnedSemaphorePermit,
        reserved: Option<Reserved>,
    ) {
        let _busy = BusyGuard::new(&self.shared.busy);
        let task = claimed.task;
        let (breaker_permit, process) = match reserved {
            // Its budget and breaker were asked at the door.
            Some(Reserved {
                breaker,
                process,
                agent,
            }) => (breaker, Some((process, agent))),
            None => match self.admit_run(&task).await {
                Some(breaker) => (breaker, None),
                None => {
                    drop(permit);
                    return;
                }
            },
        };
        let verdict = self
            .run_agent(&task, &claimed.project, claimed.session_id, process)
            .await;
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
            Verdict::Retry { .. } | Verdict::Withdrawn => breaker_permit.ignore(),
        }
        self.conclude(&task, verdict).await;
        drop(permit);
    }

    /// Asks the bot's budget and agent breaker whether a claimed task may run:
    /// the breaker's permit if so; if not, the task is concluded (refused) or
    /// held in the queue (breaker open) and `None` returned.
    async fn admit_run(&self, task: &Task) -> Option<Permit> {
        if let Some(refusal) = self.budget_refusal(task) {
            self.conclude(task, refusal).await;
            return None;
        }
        let Some(breaker) = self
            .shared
            .circuits
            .get(&task.bot_id, Dependency::Agent)
            .cloned()
        else {
            self.conclude(task, unknown_bot(task)).await;
            return None;
        };
        match breaker.try_acquire() {
            Ok(permit) => Some(permit),
            Err(rejected) => {
                self.hold_for_breaker(task, rejected.retry_after()).await;
                None
            }
        }
    }

    /// A claimed task whose bot's agent breaker refused: back in the queue without
    /// using an attempt, to be tried when the breaker allows a probe.
    async fn hold_for_breaker(&self, task: &Task, retry_after: Duration) {
        if !self.claim_if_starting(task).await {
            // Never claimed: still in its place in the queue, its attempt unused.
            self.schedule_wake(retry_after);
            return;
        }
        let now = now_ms();
        // Keep its place in line: the breaker, not a backoff, decides when it runs
        // (claims skip the bot while its agent circuit refuses calls).
        let why = "the agent is unavailable (circuit open); the task runs when it recovers";
        let requeued = self
            .requeue_unstarted(task, FailureClass::CircuitOpen, why, now)
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

    /// The agent command for a task of `user_id`: the bot's, with the user's
    /// `/mode` permission mode and `/model` model when they chose them. A warm
    /// process started with another command (another model) never takes the
    /// user's next prompt: [`Self::run_warm`] compares the commands.
    fn agent_command(&self, bot: &BotConfig, user_id: i64) -> AgentCommand {
        AgentCommand::from_config(&self.agent_for_user(bot, user_id), self.scrub_env())
    }

    /// Environment variables the agents never see: the bots' tokens and the
    /// admin token.
    fn scrub_env(&self) -> Vec<String> {
        let config = &self.shared.config;
        let tokens = config.bots.iter().map(|b| b.token_env.clone());
        tokens
            .chain([config.http.admin_token_env.clone()])
            .collect()
    }

    /// The bot's agent settings as they apply to `user_id`: with the user's
    /// `/mode` permission mode and `/model` model when they chose them.
    fn agent_for_user(&self, bot: &BotConfig, user_id: i64) -> AgentConfig {
        let chosen = match self.shared.store.user_mode(&bot.id, user_id) {
            Ok(mode) => mode.as_deref().and_then(PermissionMode::from_name),
            Err(error) => {
                tracing::warn!(%error, "cannot read the user's permission mode; using the bot's");
                None
            }
        };
        let model = self.user_model(bot, user_id);
        AgentConfig {
            permission_mode: chosen.unwrap_or(bot.agent.permission_mode),
            model: model.unwrap_or_else(|| bot.agent.model.clone()),
            ..bot.agent.clone()
        }
    }

    /// The model `user_id` picked with `/model`, while the bot still offers it.
    fn user_model(&self, bot: &BotConfig, user_id: i64) -> Option<String> {
        match self.shared.store.user_model(&bot.id, user_id) {
            Ok(stored) => stored.filter(|name| bot.agent.model_choices().contains(name)),
            Err(error) => {
                tracing::warn!(%error, "cannot read the user's model; using the bot's");
                None
            }
        }
    }

    fn run_spec(&self, task: &Task, workdir: &Path, session_id: Option<String>) -> RunSpec {
        RunSpec {
            task_id: task.id,
            prompt: task.prompt.clone(),
            workdir: workdir.to_path_buf(),
            run_dir: self.run_dir(task.id),
            session_id,
            timeout: Duration::from_secs(self.shared.config.limits.task_timeout_s),
            kill_grace: KILL_GRACE,
        }
    }

    /// Spawns the agent, records its identity, waits; retries a lost session once
    /// as a fresh one.
    ///
    /// `reserved`: the warm process the store started the task on, and the
    /// agent settings it was matched against, if it was started at the door.
    async fn run_agent(
        &self,
        task: &Task,
        project: &str,
        session_id: Option<String>,
        reserved: Option<(WarmProcess, AgentConfig)>,
    ) -> Verdict {
        let (mut reserved, reserved_agent) = reserved.unzip();
        let bot = self.bot(&task.bot_id).cloned();
        let workdir = bot
            .as_ref()
            .and_then(|bot| bot.project_workdir(project).map(Path::to_path_buf));
        let (Some(bot), Some(workdir)) = (bot, workdir) else {
            if let Some(process) = reserved.take() {
                process.end(KILL_GRACE).await;
            }
            return match self.bot(&task.bot_id) {
                None => unknown_bot(task),
                Some(_) => unknown_project(task, project),
            };
        };
        // A run started at the door was matched against the settings read there.
        let agent_for_user =
            reserved_agent.unwrap_or_else(|| self.agent_for_user(&bot, task.user_id));
        let command = AgentCommand::from_config(&agent_for_user, self.scrub_env());
        // Kept warm, or asking approvals (answered on the input pipe): a turn of a
        // process on a pipe, which `keep_or_end` ends after it unless kept warm.
        let piped = agent::uses_input_pipe(&agent_for_user);
        let mut session = session_id.filter(|s| agent::is_valid_session_id(s));
        loop {
            let spec = self.run_spec(task, &workdir, session.clone());
            let run = if piped {
                self.run_warm(task, project, &command, &spec, reserved.take())
                    .await
            } else {
                if let Some(process) = reserved.take() {
                    process.end(KILL_GRACE).await;
                }
                self.spawn_and_wait(task, &command, &spec).await
            };
            let outcome = match run {
                Ok(outcome) => outcome,
                Err(verdict) => return verdict,
            };
            // One agent call, warm or per prompt: its own run time and outcome.
            crate::metrics::observe(
                "agent",
                &task.bot_id,
                outcome.duration_ms as f64,
                agent_call_outcome(&outcome),
            );
            if session.is_some() && outcome.is_unknown_session() {
                tracing::info!("agent no longer knows the session; retrying as a fresh session");
                if let Err(e) = self
                    .shared
                    .store
                    .forget_agent_session(&task.bot_id, task.user_id, project)
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
        if !self.record_process(task, running.identity()).await {
            // It read its prompt at start: stop it at once.
            let (_stop, stopped) = watch::channel(true);
            running.wait(stopped).await;
            return Err(Verdict::Withdrawn);
        }
        let (cancel_tx, cancel_rx) = watch::channel(false);
        lock(&self.shared.cancels).insert(task.id, cancel_tx);
        let outcome = if command.prompt_format == agent::PromptFormat::StreamJson {
            // Follow the events while the process runs, for the progress message.
            let stdout = spec.run_dir.join(agent::STDOUT_FILE);
            let mut follower = Follower::new(&stdout, StreamParser::new(task.id));
            let mut recorder = ProgressRecorder::new(self, task.id);
            let wait = running.wait(cancel_rx);
            tokio::pin!(wait);
            let mut found = true;
            let outcome = loop {
                tokio::select! {
                    biased;
                    outcome = &mut wait => break outcome,
                    () = follower.pause(found) => {}
                }
                let events = follower.read_new();
                found = !events.is_empty();
                recorder.record(&events);
            };
            recorder.record(&follower.read_new());
            recorder.flush().await;
            outcome
        } else {
            running.wait(cancel_rx).await
        };
        lock(&self.shared.cancels).remove(&task.id);
        Ok(outcome)
    }

    /// Runs the task's prompt as a turn of its session's warm process: the idle one
    /// if it is alive and holds the same session under the same command, otherwise
    /// a new one (resuming the session, if any). Its approval requests are
    /// forwarded to the approvals while the turn runs. A process that answered
    /// stays warm if its bot keeps processes warm; any other is ended.
    ///
    /// `reserved`: the process the store started the task on at the door (its
    /// claim and process already recorded), used instead of the idle one.
    async fn run_warm(
        &self,
        task: &Task,
        project: &str,
        command: &AgentCommand,
        spec: &RunSpec,
        reserved: Option<WarmProcess>,
    ) -> Result<AgentOutcome, Verdict> {
        let key: SessionKey = (task.bot_id.clone(), task.user_id, project.to_owned());
        let recorded = reserved.is_some();
        let idle = reserved.or_else(|| lock(&self.shared.warm).take(&key));
        let reusable = match idle {
            Some(mut process) => {
                if process.command == *command
                    && process.session_id == spec.session_id
                    && process.is_running()
                {
                    Some(process)
                } else {
                    tracing::debug!("the idle warm agent cannot take this prompt; ending it");
                    process.end(KILL_GRACE).await;
                    None
                }
            }
            None => None,
        };
        let prompt = command.prompt_format.encode(&spec.prompt);
        let mut process = match reusable {
            Some(process) => match self
                .start_turn(task, &process, &prompt, spec, recorded)
                .await
            {
                Ok(true) => process,
                Ok(false) => {
                    // It never got the prompt: still the session's idle process.
                    self.keep_idle(key, process).await;
                    return Err(Verdict::Withdrawn);
                }
                Err(error) => {
                    // It died between its last answer and now: a cold start resumes.
                    tracing::info!(%error, "the warm agent is gone; starting a new one");
                    process.end(KILL_GRACE).await;
                    self.cold_warm_start(task, command, spec, &prompt).await?
                }
            },
            None => self.cold_warm_start(task, command, spec, &prompt).await?,
        };
        let (cancel_tx, cancel_rx) = watch::channel(false);
        lock(&self.shared.cancels).insert(task.id, cancel_tx);
        let mut recorder = ProgressRecorder::new(self, task.id);
        let process_dir = process.dir.clone();
        let mut forwarded = JoinSet::new();
        let outcome = process
            .follow_turn(
                task.id,
                spec.timeout,
                spec.kill_grace,
                cancel_rx,
                &mut |events: &[Event]| {
                    recorder.record(events);
                    self.forward_requests(&mut forwarded, task, &process_dir, events);
                },
            )
            .await;
        recorder.flush().await;
        settle_requests(&mut forwarded).await;
        lock(&self.shared.cancels).remove(&task.id);
        self.keep_or_end(key, process, &outcome).await;
        self.shared.approvals.expire_task(task.id).await;
        let mut outcome = outcome;
        if lock(&self.shared.stopped).remove(&task.id) {
            // Stopped by its user: the process stays warm, the task is cancelled.
            outcome.cancelled = true;
        }
        Ok(outcome)
    }

    /// A new warm-capable process with the task's prompt written to it.
    async fn cold_warm_start(
        &self,
        task: &Task,
        command: &AgentCommand,
        spec: &RunSpec,
        prompt: &[u8],
    ) -> Result<WarmProcess, Verdict> {
        let process = match WarmProcess::spawn(command, spec) {
            Ok(process) => process,
            Err(e) => {
                tracing::warn!(error = %e, "agent spawn failed");
                return Err(self.retry_or_fail(task, FailureClass::SpawnFailed, e.to_string()));
            }
        };
        let started = self.start_turn(task, &process, prompt, spec, false).await;
        if let Ok(false) = started {
            process.end(KILL_GRACE).await;
            return Err(Verdict::Withdrawn);
        }
        if let Err(error) = started {
            tracing::warn!(%error, "cannot give the new agent its prompt");
            process.end(KILL_GRACE).await;
            return Err(self.retry_or_fail(
                task,
                FailureClass::SpawnFailed,
                format!("cannot give the agent its prompt: {error}"),
            ));
        }
        Ok(process)
    }

    /// Records the turn (its process, offset and cost so far) with the task, then
    /// writes the prompt: a restart in between finds the turn and follows it.
    /// `recorded`: the store already holds the process with the task (started
    /// at the door). `Ok(false)`: the task is no longer this run's (see
    /// [`Self::record_process`]) and the prompt was not written.
    async fn start_turn(
        &self,
        task: &Task,
        process: &WarmProcess,
        prompt: &[u8],
        spec: &RunSpec,
        recorded: bool,
    ) -> std::io::Result<bool> {
        // In this order: a recorded pid whose process lives means its turn record
        // is there for adoption to follow — except for a task started at the
        // door, whose process was recorded first: a restart before its turn
        // record finds an idle process with no turn, which recovery ends and
        // whose task it re-queues. The prompt is written only after both.
        // Written on this thread, as the run files are (see
        // `agent::prepare_run_files`): a small file and a rename, not synced,
        // cost less than two hand-overs to the blocking pool.
        warm::write_turn_record(&spec.run_dir, &process.turn_record())?;
        if !recorded && !self.record_process(task, process.identity).await {
            return Ok(false);
        }
        process.write_prompt(prompt.to_vec()).await.map(|()| true)
    }

    /// Puts a process that answered back into the warm set (ending the least
    /// recently used beyond the bound) when its bot keeps processes warm; ends
    /// any other: with `keep_warm_s = 0` every process ends with its turn.
    async fn keep_or_end(&self, key: SessionKey, mut process: WarmProcess, outcome: &AgentOutcome) {
        if outcome.result.complete
            && !outcome.timed_out
            && !outcome.cancelled
            && process.is_running()
        {
            self.keep_idle(key, process).await;
        } else {
            process.end(KILL_GRACE).await;
        }
    }

    /// Puts an idle process into the warm set (ending the least recently used
    /// beyond its bound) when its bot keeps processes warm; ends it otherwise.
    async fn keep_idle(&self, key: SessionKey, process: WarmProcess) {
        let kept_warm = self
            .bot(&key.0)
            .is_some_and(|bot| bot.agent.keep_warm_s > 0);
        if !kept_warm {
            process.end(KILL_GRACE).await;
            return;
        }
        let capacity = self.workers().saturating_mul(WARM_PER_WORKER).max(1);
        let evicted = lock(&self.shared.warm).put(key, process, capacity);
        end_all(evicted).await;
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
        lock(&self.shared.progress).remove(&task.id);
        if !matches!(verdict, Verdict::Withdrawn) {
            self.claim_if_starting(task).await;
        }
        let now = now_ms();
        match verdict {
            Verdict::Withdrawn => {}
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
        let identity = ProcIdentity { pid, start_time };
        let run_dir = self.run_dir(task.id);
        tracing::info!(
            pid,
            "adopting an agent left running by the previous process"
        );
        let (cancel_tx, cancel_rx) = watch::channel(false);
        lock(&self.shared.cancels).insert(task.id, cancel_tx);
        let outcome = match warm::read_turn_record(&run_dir).filter(|r| r.identity == identity) {
            Some(record) => {
                // A warm process's turn: follow it from its offset to its result.
                let command = match self.bot(&task.bot_id) {
                    Some(bot) => self.agent_command(bot, task.user_id),
                    None => AgentCommand::from_config(
                        &crate::config::AgentConfig::default(),
                        Vec::new(),
                    ),
                };
                let mut process = WarmProcess::adopted(&record, command);
                let mut recorder = ProgressRecorder::new(&self, task.id);
                let process_dir = process.dir.clone();
                let mut forwarded = JoinSet::new();
                let outcome = process
                    .follow_turn(
                        task.id,
                        timeout,
                        KILL_GRACE,
                        cancel_rx,
                        &mut |events: &[Event]| {
                            recorder.record(events);
                            self.forward_requests(&mut forwarded, &task, &process_dir, events);
                        },
                    )
                    .await;
                recorder.flush().await;
                settle_requests(&mut forwarded).await;
                let project = self.shared.store.task_project(task.id).unwrap_or_else(|error| {
                    tracing::warn!(%error, "cannot read the task's project; its warm agent is not kept");
                    String::new()
                });
                if project.is_empty() {
                    process.end(KILL_GRACE).await;
                } else {
                    let key = (task.bot_id.clone(), task.user_id, project);
                    self.keep_or_end(key, process, &outcome).await;
                }
                self.shared.approvals.expire_task(task.id).await;
                let mut outcome = outcome;
                if lock(&self.shared.stopped).remove(&task.id) {
                    outcome.cancelled = true;
                }
                outcome
            }
            None => {
                let spec = AdoptSpec {
                    identity,
                    run_dir,
                    poll: ADOPT_POLL,
                    timeout,
                    kill_grace: KILL_GRACE,
                };
                agent::adopt(spec, cancel_rx).await
            }
        };
        lock(&self.shared.cancels).remove(&task.id);
        let verdict = self.judge(&task, outcome);
        self.conclude(&task, verdict).await;
        drop(permit);
    }

    /// Finishes or re-queues a task whose agent died with the previous process:
    /// from its output files when they hold a complete result, else as interrupted.
    pub(crate) async fn settle_dead_run(&self, task: &Task) {
        let turn = warm::read_turn_record(&self.run_dir(task.id)).filter(|r| {
            Some(r.identity.pid) == task.pid && Some(r.identity.start_time) == task.pid_start_time
        });
        let outcome = match (task.pid, task.pid_start_time) {
            (Some(_), Some(_)) if turn.is_some() => {
                turn.map(|record| dead_turn_outcome(task.id, &record))
            }
            (Some(pid), Some(start_time)) => {
                let spec = AdoptSpec {
                    identity: ProcIdentity { pid, start_time },
                    run_dir: self.run_dir(task.id),
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

/// What the output of a warm turn whose process died with the previous agentlab
/// holds: its result, if it got that far.
fn dead_turn_outcome(task_id: u64, record: &warm::TurnRecord) -> AgentOutcome {
    let stdout = record.process_dir.join(agent::STDOUT_FILE);
    let parser =
        StreamParser::resuming(task_id, record.offset, record.cost_base).naming_output(&stdout);
    let mut follower = Follower::new(&stdout, parser);
    let result = follower
        .read_new()
        .into_iter()
        .find_map(|event| match event {
            Event::Result(end) => Some(end.result),
            _ => None,
        })
        .unwrap_or_default();
    AgentOutcome {
        exit_code: None,
        signal: None,
        timed_out: false,
        cancelled: false,
        result,
        stdout_bytes: follower.parser().consumed(),
        stderr_tail: String::new(),
        duration_ms: 0,
    }
}

/// Ends warm processes, one after the other.
async fn end_all(processes: Vec<WarmProcess>) {
    for process in processes {
        process.end(KILL_GRACE).await;
    }
}

/// Turns a run's events into the task's live progress (announced at once) and its
/// stored steps (written in batches, awaited before the task is concluded).
struct ProgressRecorder<'a> {
    pool: &'a Pool,
    task_id: u64,
    written: Option<Pending<()>>,
}

impl<'a> ProgressRecorder<'a> {
    fn new(pool: &'a Pool, task_id: u64) -> Self {
        ProgressRecorder {
            pool,
            task_id,
            written: None,
        }
    }

    fn record(&mut self, events: &[Event]) {
        if events.is_empty() {
            return;
        }
        let (changed, new_steps) = {
            let mut progress = lock(&self.pool.shared.progress);
            let live = progress.entry(self.task_id).or_default();
            let before = live.version;
            let new_steps = live.apply(events);
            (live.version != before, new_steps)
        };
        if !new_steps.is_empty() {
            let at_ms = now_ms();
            let steps = new_steps
                .into_iter()
                .map(|summary| TaskStep { at_ms, summary })
                .collect();
            // Writes are applied in order; the last one's answer covers them all.
            self.written = Some(
                self.pool
                    .shared
                    .store
                    .append_task_steps(self.task_id, steps),
            );
        }
        if changed {
            // No subscriber (no bot running) is fine: the store has the steps.
            let _ = self.pool.shared.progress_tx.send(self.task_id);
        }
    }

    async fn flush(&mut self) {
        if let Some(written) = self.written.take()
            && let Err(e) = written.await
        {
            tracing::warn!(error = %e, "cannot store the agent's steps");
        }
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
    lower.contains("rate limit") || lower.contains("rate_limit") || has_number(&lower, "429")
}

/// Whether `number` stands in `text` as a number of its own: "status 429", not
/// the digits inside a port such as "127.0.0.1:42953".
fn has_number(text: &str, number: &str) -> bool {
    text.match_indices(number).any(|(at, _)| {
        let before = text[..at].chars().next_back();
        let after = text[at + number.len()..].chars().next();
        !before.is_some_and(|c| c.is_ascii_digit()) && !after.is_some_and(|c| c.is_ascii_digit())
    })
}

/// A task of a project the configuration no longer has: running it in another
/// workdir would be wrong, so it fails and says why.
fn unknown_project(task: &Task, project: &str) -> Verdict {
    Verdict::Done(TaskFinish {
        status: Some(TaskStatus::Failed),
        error_class: Some(FailureClass::SpawnFailed),
        error: Some(format!(
            "project `{project}` of bot `{}` is not configured any more",
            task.bot_id
        )),
        deliver: true,
        ..TaskFinish::default()
    })
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

/// Waits until every request a run forwarded has been handled (stored, shown or
/// answered), so that none is stored after the run expired what was pending.
async fn settle_requests(forwarded: &mut JoinSet<()>) {
    while let Some(joined) = forwarded.join_next().await {
        if let Err(error) = joined {
            tracing::error!(%error, "forwarding an approval request failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{AgentConfig, AgentKind};
    use crate::shutdown::Shutdown;
    use crate::storage::{NewTask, PRIORITY_NORMAL, StoreOptions, TaskKind, TaskSource};

    #[test]
    fn a_429_is_a_rate_limit_but_digits_of_a_port_are_not() {
        assert!(looks_rate_limited("API Error: 429 Too Many Requests"));
        assert!(looks_rate_limited("status=429"));
        assert!(looks_rate_limited("Rate limit reached"));
        assert!(!looks_rate_limited(
            "API Error: 529 Overloaded. Check your inference gateway (127.0.0.1:42953)."
        ));
        assert!(!looks_rate_limited("took 14290 ms"));
    }

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
            id: "POOL-EVENTS".into(),
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
        let circuits = Circuits::load(&store, &["POOL-EVENTS".to_string()], &config.breaker);
        let (events, mut announced) = super::super::pool_events();
        let pool = Pool::new(config.clone(), store.clone(), circuits, events);
        let new = NewTask {
            bot_id: "POOL-EVENTS".into(),
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
        // Each attempt is one agent call in the dependency metrics.
        let calls = crate::metrics::snapshot()
            .into_iter()
            .find(|(dep, bot, _)| *dep == "agent" && bot == "POOL-EVENTS")
            .map(|(_, _, stats)| (stats.calls, stats.errors));
        assert_eq!(calls, Some((2, 2)));
        shutdown.request(0);
        running.await.expect("the pool stops");
        assert!(announced.try_recv().is_err(), "nothing announced twice");
        store.close();
    }

    /// A process that answered joins the warm set only when its bot keeps
    /// processes warm; with `keep_warm_s = 0` it is ended there and then, before
    /// the task is concluded (not later, by the dispatcher's expiry).
    #[tokio::test(flavor = "multi_thread")]
    async fn an_answered_process_is_kept_only_when_its_bot_keeps_processes_warm() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, pool) = pool_of_bots(dir.path(), &[("COLD", 0), ("WARM", 600)]);
        let bots = ["COLD".to_string(), "WARM".to_string()];
        let command = sleeping_command();
        let answered = AgentOutcome {
            exit_code: None,
            signal: None,
            timed_out: false,
            cancelled: false,
            result: crate::worker::agent_result::AgentResult {
                complete: true,
                ..Default::default()
            },
            stdout_bytes: 0,
            stderr_tail: String::new(),
            duration_ms: 0,
        };
        let mut started = Vec::new();
        for (n, bot) in bots.iter().enumerate() {
            let spec = RunSpec {
                task_id: n as u64,
                prompt: String::new(),
                workdir: dir.path().to_path_buf(),
                run_dir: dir.path().join(format!("runs/{n}")),
                session_id: None,
                timeout: Duration::from_secs(60),
                kill_grace: Duration::from_millis(100),
            };
            let process = WarmProcess::spawn(&command, &spec).expect("spawn");
            started.push(process.identity);
            let key = (bot.clone(), 1, "default".to_owned());
            pool.keep_or_end(key, process, &answered).await;
        }
        let alive = |n: usize| crate::worker::proc_identity::is_alive(&started[n]);
        assert!(!alive(0), "the COLD bot's process outlived its turn");
        assert!(alive(1), "the WARM bot's process was not kept");
        assert_eq!(pool.warm_usage().0, 1);
        let kept = lock(&pool.shared.warm).drain();
        end_all(kept).await;
        assert!(!alive(1));
        store.close();
    }

    /// A task started at the door whose service stopped before its turn was
    /// recorded: its warm process never got the prompt. Recovery does not adopt
    /// it (it would wait on an idle process): the process is ended and the task
    /// put back in its place in the queue, its attempt given back.
    #[tokio::test]
    async fn a_door_start_cut_before_its_turn_record_is_requeued_not_adopted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, pool) = pool_of_bots(dir.path(), &[("WARM", 600)]);
        let spec = RunSpec {
            task_id: 100,
            prompt: String::new(),
            workdir: dir.path().to_path_buf(),
            run_dir: pool.shared.config.runs_dir().join("100"),
            session_id: None,
            timeout: Duration::from_secs(60),
            kill_grace: Duration::from_millis(100),
        };
        let process = WarmProcess::spawn(&sleeping_command(), &spec).expect("spawn");
        let identity = process.identity;
        let new = NewTask {
            bot_id: "WARM".into(),
            user_id: 1,
            chat_id: 1,
            kind: TaskKind::Chat,
            source: TaskSource::Telegram,
            prompt: "hello".into(),
            priority: PRIORITY_NORMAL,
            max_attempts: 3,
            reply_to_message_id: None,
            update_id: None,
        };
        let submitted = store
            .submit_started(
                new,
                "default",
                true,
                now_ms(),
                (identity.pid, identity.start_time),
                Vec::new(),
            )
            .await
            .expect("submit");
        assert!(submitted.started());
        // The service stops here: the process is left idle, the turn unrecorded.
        drop(process);
        let recovery = super::super::recovery::recover_running_tasks(&store, &pool)
            .await
            .expect("recovery");
        assert!(recovery.adopt.is_empty(), "{recovery:?}");
        assert_eq!(recovery.settled, 1);
        let task = store.get_task(submitted.task.id).unwrap().unwrap();
        assert_eq!(task.status, TaskStatus::Queued, "{task:?}");
        assert_eq!(task.error_class, Some(FailureClass::Interrupted));
        assert_eq!(task.attempts, 0, "its attempt never began");
        assert_eq!(
            task.enqueued_ms, submitted.task.enqueued_ms,
            "its place in line"
        );
        // Killed: gone, or a zombie until this test process, its parent, reaps it.
        let state = || {
            let stat = std::fs::read_to_string(format!("/proc/{}/stat", identity.pid)).ok()?;
            let after_name = &stat[stat.rfind(')')? + 1..];
            after_name.split_whitespace().next().map(str::to_owned)
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while state().is_some_and(|state| state != "Z") {
            assert!(Instant::now() < deadline, "the idle process still runs");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        store.close();
    }

    /// A store and a pool in `dir` with a bot per (id, `keep_warm_s`), the
    /// agent otherwise as configured by default; nobody listens to its events.
    fn pool_of_bots(dir: &Path, bots: &[(&str, u64)]) -> (Store, Pool) {
        let mut config = Config {
            data_dir: dir.to_path_buf(),
            ..Config::default()
        };
        for &(id, keep_warm_s) in bots {
            config.bots.push(BotConfig {
                id: id.into(),
                workdir: dir.to_path_buf(),
                agent: AgentConfig {
                    keep_warm_s,
                    ..AgentConfig::default()
                },
                ..BotConfig::default()
            });
        }
        let config = Arc::new(config);
        let store = Store::open(&config.database_path(), StoreOptions::default()).expect("store");
        let ids: Vec<String> = bots.iter().map(|(id, _)| (*id).to_owned()).collect();
        let circuits = Circuits::load(&store, &ids, &config.breaker);
        let (events, _announced) = super::super::pool_events();
        (store.clone(), Pool::new(config, store, circuits, events))
    }

    fn sleeping_command() -> AgentCommand {
        AgentCommand {
            program: "sleep".into(),
            args: vec!["60".into()],
            resume_args: Vec::new(),
            trailing_args: Vec::new(),
            prompt_format: agent::PromptFormat::StreamJson,
            scrub_env: Vec::new(),
        }
    }

    /// A run's approval requests are its own tasks: handled by the time the run
    /// settles them, and never handled once it dropped them (a run detached at
    /// shutdown). A current-thread runtime runs a spawned task only when this
    /// one waits, so what was cancelled before that never runs.
    #[tokio::test]
    async fn a_runs_approval_requests_are_awaited_with_it_and_cancelled_with_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let keep_warm_s = AgentConfig::default().keep_warm_s;
        let (store, pool) = pool_of_bots(dir.path(), &[("B", keep_warm_s)]);
        let new = NewTask {
            bot_id: "B".into(),
            user_id: 1,
            chat_id: 1,
            kind: TaskKind::Task,
            source: TaskSource::Api,
            prompt: "approve:Bash ls".into(),
            priority: PRIORITY_NORMAL,
            max_attempts: 1,
            reply_to_message_id: None,
            update_id: None,
        };
        let task = store.submit_task(new, now_ms()).await.expect("stored").task;
        let asks = |request_id: &str| {
            vec![Event::ControlRequest {
                request_id: request_id.into(),
                subtype: "can_use_tool".into(),
                tool_name: Some("Bash".into()),
                input: serde_json::json!({"command": "ls"}),
            }]
        };
        let pending = || -> Vec<String> {
            let pending = store.pending_approvals().expect("read");
            pending.into_iter().map(|a| a.asked.request_id).collect()
        };

        let mut forwarded = JoinSet::new();
        pool.forward_requests(&mut forwarded, &task, dir.path(), &asks("settled"));
        assert!(pending().is_empty(), "handled before the run waited");
        settle_requests(&mut forwarded).await;
        assert_eq!(pending(), ["settled"]);

        let mut detached = JoinSet::new();
        pool.forward_requests(&mut detached, &task, dir.path(), &asks("dropped"));
        drop(detached);
        let mut later = JoinSet::new();
        pool.forward_requests(&mut later, &task, dir.path(), &asks("later"));
        settle_requests(&mut later).await;
        assert_eq!(pending(), ["settled", "later"], "a dropped request ran");
        store.close();
    }
}
