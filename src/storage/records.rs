//! The records kept in the store: plain serde data, encoded by [`super::codec`].
//!
//! Timestamps are unix milliseconds (UTC) in `u64` fields named `*_ms`, always.
//! Adding a field means a new codec version or a migration: postcard is not
//! self-describing, so old bytes only decode into the layout that wrote them.

use serde::{Deserialize, Serialize};

/// Where a task stands in its life-cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskStatus {
    /// Waiting in the queue.
    Queued,
    /// Claimed by a worker; an agent process runs (or is being started).
    Running,
    /// Finished with an answer.
    Succeeded,
    /// Finished without an answer, for good.
    Failed,
    /// Cancelled by a user or an admin.
    Cancelled,
    /// A restart interrupted it; it is re-queued while attempts remain.
    Interrupted,
}

impl TaskStatus {
    /// All statuses, in index order.
    pub const ALL: [TaskStatus; 6] = [
        TaskStatus::Queued,
        TaskStatus::Running,
        TaskStatus::Succeeded,
        TaskStatus::Failed,
        TaskStatus::Cancelled,
        TaskStatus::Interrupted,
    ];

    /// The lower-case name used in the API and the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Queued => "queued",
            TaskStatus::Running => "running",
            TaskStatus::Succeeded => "succeeded",
            TaskStatus::Failed => "failed",
            TaskStatus::Cancelled => "cancelled",
            TaskStatus::Interrupted => "interrupted",
        }
    }

    /// Parses the lower-case name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// Whether the task is finished for good.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            TaskStatus::Succeeded | TaskStatus::Failed | TaskStatus::Cancelled
        )
    }

    /// The status in a sentence about a task that cannot change any more:
    /// "Task #7 has already succeeded", "... was already cancelled".
    pub fn already(self) -> &'static str {
        match self {
            TaskStatus::Queued => "is already queued",
            TaskStatus::Running => "is already running",
            TaskStatus::Succeeded => "has already succeeded",
            TaskStatus::Failed => "has already failed",
            TaskStatus::Cancelled => "was already cancelled",
            TaskStatus::Interrupted => "was already interrupted",
        }
    }

    pub(crate) fn index(self) -> u8 {
        match self {
            TaskStatus::Queued => 0,
            TaskStatus::Running => 1,
            TaskStatus::Succeeded => 2,
            TaskStatus::Failed => 3,
            TaskStatus::Cancelled => 4,
            TaskStatus::Interrupted => 5,
        }
    }
}

impl std::fmt::Display for TaskStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What kind of work a task is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskKind {
    /// A conversational prompt from Telegram.
    Chat,
    /// A task submitted through the API or CLI.
    Task,
}

impl TaskKind {
    /// The lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskKind::Chat => "chat",
            TaskKind::Task => "task",
        }
    }
}

/// Why a task failed, for the failure analyzer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureClass {
    /// The agent ran past `task_timeout_s`.
    Timeout,
    /// The agent answered with an error or exited non-zero.
    AgentError,
    /// The agent process could not be started.
    SpawnFailed,
    /// A daily or monthly budget was exhausted.
    CostLimit,
    /// The agent reported rate limiting.
    RateLimited,
    /// The agent's circuit breaker was open.
    CircuitOpen,
    /// A restart interrupted the run.
    Interrupted,
    /// A user or an admin cancelled it.
    Cancelled,
}

impl FailureClass {
    /// All classes.
    pub const ALL: [FailureClass; 8] = [
        FailureClass::Timeout,
        FailureClass::AgentError,
        FailureClass::SpawnFailed,
        FailureClass::CostLimit,
        FailureClass::RateLimited,
        FailureClass::CircuitOpen,
        FailureClass::Interrupted,
        FailureClass::Cancelled,
    ];

    /// The snake-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureClass::Timeout => "timeout",
            FailureClass::AgentError => "agent_error",
            FailureClass::SpawnFailed => "spawn_failed",
            FailureClass::CostLimit => "cost_limit",
            FailureClass::RateLimited => "rate_limited",
            FailureClass::CircuitOpen => "circuit_open",
            FailureClass::Interrupted => "interrupted",
            FailureClass::Cancelled => "cancelled",
        }
    }

    /// Whether a task failing this way is retried automatically (while attempts
    /// remain, with backoff). A budget, a cancel or an open circuit is not.
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            FailureClass::Timeout
                | FailureClass::Interrupted
                | FailureClass::SpawnFailed
                | FailureClass::AgentError
                | FailureClass::RateLimited
        )
    }
}

/// Where a task came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskSource {
    /// A Telegram message.
    Telegram,
    /// The HTTP API or the CLI.
    Api,
    /// Imported from the old bot's JSON files.
    Legacy,
}

/// A unit of agent work and everything known about it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Task {
    /// Unique, increasing.
    pub id: u64,
    /// The bot it belongs to.
    pub bot_id: String,
    /// The Telegram user (or API caller's user id).
    pub user_id: i64,
    /// The chat answers go to.
    pub chat_id: i64,
    /// Chat or task.
    pub kind: TaskKind,
    /// Where it came from.
    pub source: TaskSource,
    /// The prompt, given to the agent on stdin.
    pub prompt: String,
    /// Queue priority: 0 runs first.
    pub priority: u8,
    /// Life-cycle state.
    pub status: TaskStatus,
    /// Runs started so far.
    pub attempts: u32,
    /// Runs allowed.
    pub max_attempts: u32,
    /// When it was submitted.
    pub created_ms: u64,
    /// Its position in the queue (may lie in the future for a retry backoff).
    pub enqueued_ms: u64,
    /// When the current or last run started.
    pub started_ms: Option<u64>,
    /// When it reached a terminal state.
    pub finished_ms: Option<u64>,
    /// The agent's process id while running.
    pub pid: Option<u32>,
    /// The agent's process start time (pid reuse guard).
    pub pid_start_time: Option<u64>,
    /// The agent's exit code.
    pub exit_code: Option<i32>,
    /// The answer, bounded; the full output stays in the run files.
    pub result: Option<String>,
    /// Failure class.
    pub error_class: Option<FailureClass>,
    /// Failure message.
    pub error: Option<String>,
    /// Cost of all runs, USD.
    pub cost_usd: f64,
    /// Input tokens of all runs.
    pub input_tokens: u64,
    /// Output tokens of all runs.
    pub output_tokens: u64,
    /// The agent session this task ran in.
    pub session_id: Option<String>,
    /// Telegram message to reply to.
    pub reply_to_message_id: Option<i32>,
    /// Telegram update that created it (deduplication key).
    pub update_id: Option<i64>,
    /// The "queued/running" message shown while it waits and runs; removed when
    /// the answer is delivered.
    pub progress_message_id: Option<i32>,
    /// Set when sending the answer begins, cleared if Telegram refused it: an
    /// outbox task that still has it after a crash may already have been delivered.
    pub delivery_started_ms: Option<u64>,
    /// A task this one retries.
    pub retry_of: Option<u64>,
    /// Free-form JSON kept from a legacy import.
    pub extra: Option<String>,
}

impl Task {
    /// The queue key of a queued task.
    pub(crate) fn queue_key(&self) -> (u8, u64, u64) {
        (self.priority, self.enqueued_ms, self.id)
    }

    /// Milliseconds between submission and the start of the last run.
    pub fn wait_ms(&self) -> Option<u64> {
        self.started_ms.map(|s| s.saturating_sub(self.created_ms))
    }

    /// Milliseconds the last run took.
    pub fn run_ms(&self) -> Option<u64> {
        match (self.started_ms, self.finished_ms) {
            (Some(s), Some(f)) => Some(f.saturating_sub(s)),
            _ => None,
        }
    }
}

/// What a caller supplies to create a task (also the journal's record of a
/// submission, so it is serde).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewTask {
    /// The bot.
    pub bot_id: String,
    /// The user.
    pub user_id: i64,
    /// The chat answers go to.
    pub chat_id: i64,
    /// Chat or task.
    pub kind: TaskKind,
    /// Where it came from.
    pub source: TaskSource,
    /// The prompt.
    pub prompt: String,
    /// Queue priority: 0 runs first.
    pub priority: u8,
    /// Runs allowed.
    pub max_attempts: u32,
    /// Telegram message to reply to.
    pub reply_to_message_id: Option<i32>,
    /// Telegram update id: a second submission with the same (bot, update) returns
    /// the first task instead of creating another.
    pub update_id: Option<i64>,
}

/// Priority of ordinary prompts.
pub const PRIORITY_NORMAL: u8 = 5;

/// An agent session of one (bot, user).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Session {
    /// The agent's session id, once it gave one.
    pub agent_session_id: Option<String>,
    /// When the session started.
    pub created_ms: u64,
    /// The last prompt or answer.
    pub last_active_ms: u64,
    /// Prompts sent in this session.
    pub message_count: u64,
    /// Working directory of the agent.
    pub workdir: String,
    /// Free-form JSON kept from a legacy import.
    pub extra: Option<String>,
}

/// One line of conversation history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// `user` or `agent`.
    pub role: String,
    /// The text, bounded.
    pub text: String,
    /// When.
    pub at_ms: u64,
}

/// Costs of one bot on one UTC day.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CostDay {
    /// USD.
    pub usd: f64,
    /// Tasks that ran.
    pub tasks: u64,
    /// Input tokens.
    pub input_tokens: u64,
    /// Output tokens.
    pub output_tokens: u64,
}

/// A restart asked for by `/restart` or `POST /api/restart`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RestartState {
    /// When it was asked for.
    pub requested_ms: u64,
    /// The bot that was asked.
    pub bot_id: Option<String>,
    /// The chat to tell when back.
    pub chat_id: Option<i64>,
    /// The "restarting…" message to edit.
    pub message_id: Option<i32>,
    /// Who or what asked.
    pub reason: String,
}

/// Lifecycle of an alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertState {
    /// Condition holds, not yet for its `for` duration.
    Pending,
    /// Firing.
    Firing,
    /// Resolved.
    Resolved,
}

impl AlertState {
    /// The lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertState::Pending => "pending",
            AlertState::Firing => "firing",
            AlertState::Resolved => "resolved",
        }
    }
}

/// An alert: one firing of one rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// Unique id.
    pub id: u64,
    /// Rule name, e.g. `circuit_open`.
    pub rule: String,
    /// What it is about (a bot id, a series), empty when global.
    pub subject: String,
    /// `info`, `warning` or `critical`.
    pub severity: String,
    /// State.
    pub state: AlertState,
    /// When the condition was first seen.
    pub started_ms: u64,
    /// When it fired.
    pub fired_ms: Option<u64>,
    /// When it resolved.
    pub resolved_ms: Option<u64>,
    /// The value that triggered it.
    pub value: f64,
    /// A sentence for humans.
    pub message: String,
    /// When the last notification went out.
    pub notified_ms: Option<u64>,
}

/// An entry of the event log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// When.
    pub at_ms: u64,
    /// Disambiguates events in the same millisecond.
    pub seq: u32,
    /// e.g. `state_transition`, `task_blocked`, `user_denied`, `backup`.
    pub kind: String,
    /// The bot concerned, if any.
    pub bot_id: Option<String>,
    /// JSON object with the details.
    pub payload_json: String,
}

/// A persisted circuit breaker (opaque snapshot owned by the breaker module).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredBreaker {
    /// `closed`, `open` or `half_open`, for dumps.
    pub state: String,
    /// The breaker's own snapshot, as JSON.
    pub snapshot_json: String,
    /// When it was written.
    pub updated_ms: u64,
}

/// Aggregate of samples in one rollup bucket.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Rollup {
    /// Smallest value.
    pub min: f64,
    /// Largest value.
    pub max: f64,
    /// Sum of values.
    pub sum: f64,
    /// Number of samples.
    pub count: u64,
}

impl Rollup {
    /// A bucket holding one value.
    pub fn of(value: f64) -> Self {
        Rollup {
            min: value,
            max: value,
            sum: value,
            count: 1,
        }
    }

    /// Merges another bucket into this one.
    pub fn merge(&mut self, other: &Rollup) {
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        self.sum += other.sum;
        self.count += other.count;
    }

    /// Mean value.
    pub fn mean(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.sum / self.count as f64
        }
    }
}

/// One sample of a series.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// When, unix ms.
    pub at_ms: u64,
    /// The value.
    pub value: f64,
}

/// A recorded snapshot file (kept in `meta`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackupRecord {
    /// File path.
    pub path: String,
    /// When it was taken.
    pub taken_ms: u64,
    /// File size in bytes.
    pub size_bytes: u64,
    /// Whether it passed verification.
    pub verified: bool,
    /// Rows per table.
    pub table_counts: Vec<(String, u64)>,
}
