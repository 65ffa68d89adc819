//! Every redb table of the store, in one place.
//!
//! Keys are fixed-width integers or tuples so range scans come out ordered. Values
//! are bytes written by [`super::codec`] (or `()` for index tables), so a damaged
//! value is a decode error, never a panic. The names are part of the contract
//! (`docs/ARCHITECTURE.md`): `dump`, backups and outside tools rely on them.

use redb::TableDefinition;

/// Schema version, legacy-import marker, last backup, id counters.
pub const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
/// (bot_id, user_id) → [`super::records::Session`].
pub const SESSIONS: TableDefinition<(&str, i64), &[u8]> = TableDefinition::new("sessions");
/// (bot_id, user_id, seq) → [`super::records::ChatMessage`].
pub const MESSAGES: TableDefinition<(&str, i64, u64), &[u8]> = TableDefinition::new("messages");
/// task_id → [`super::records::Task`].
pub const TASKS: TableDefinition<u64, &[u8]> = TableDefinition::new("tasks");
/// (priority, enqueued_ms, task_id) → (): the queued tasks, in order.
pub const TASK_QUEUE: TableDefinition<(u8, u64, u64), ()> = TableDefinition::new("task_queue");
/// (status index, task_id) → (): finished tasks by status (succeeded, failed,
/// cancelled); the queued and interrupted ones are in [`TASK_QUEUE`], the
/// running ones in [`ACTIVE_USERS`] (schema 5).
pub const TASK_STATUS: TableDefinition<(u8, u64), ()> = TableDefinition::new("task_status");
/// (bot_id, user_id, task_id) → (): tasks by user.
pub const TASK_USER: TableDefinition<(&str, i64, u64), ()> = TableDefinition::new("task_user");
/// (bot_id, user_id) → task_id: the one running task of a user (per-user order).
pub const ACTIVE_USERS: TableDefinition<(&str, i64), u64> = TableDefinition::new("active_users");
/// (bot_id, update_id) → task_id: Telegram updates already turned into tasks.
pub const UPDATE_DEDUP: TableDefinition<(&str, i64), u64> = TableDefinition::new("update_dedup");
/// task_id → (): finished tasks whose answer is not yet delivered.
pub const OUTBOX: TableDefinition<u64, ()> = TableDefinition::new("outbox");
/// (bot_id, yyyymmdd) → [`super::records::CostDay`].
pub const COSTS: TableDefinition<(&str, u32), &[u8]> = TableDefinition::new("costs");
/// key → [`super::records::RestartState`] (one row, key `pending`).
pub const RESTART_STATE: TableDefinition<&str, &[u8]> = TableDefinition::new("restart_state");
/// (series_id, chunk start ms) → a compressed block of samples.
pub const SERIES: TableDefinition<(u32, u64), &[u8]> = TableDefinition::new("series");
/// (series_id | 0x8000_0000, hour start ms) → [`super::records::Rollup`] of that
/// hour. Minute answers are computed from the raw chunks (schema 2 and older
/// also kept minute rollups here, under plain series ids; migration 3 drops them).
pub const SERIES_ROLLUP: TableDefinition<(u32, u64), &[u8]> = TableDefinition::new("series_rollup");
/// series name with labels → series_id.
pub const SERIES_NAMES: TableDefinition<&str, u32> = TableDefinition::new("series_names");
/// alert_id → [`super::records::Alert`].
pub const ALERTS: TableDefinition<u64, &[u8]> = TableDefinition::new("alerts");
/// (unix ms, seq) → [`super::records::Event`].
pub const EVENTS: TableDefinition<(u64, u32), &[u8]> = TableDefinition::new("events");
/// (bot_id, dependency) → [`super::records::StoredBreaker`].
pub const BREAKERS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("breakers");

/// (task_id, seq) → [`super::task_events::TaskStep`]: what the agent did, bounded.
pub const TASK_EVENTS: TableDefinition<(u64, u32), &[u8]> = TableDefinition::new("task_events");

/// approval id → [`super::approvals::Approval`]: tool approvals agents asked for.
pub const APPROVALS: TableDefinition<u64, &[u8]> = TableDefinition::new("approvals");
/// (task_id, the CLI's request id) → approval id: each request stored once.
pub const APPROVAL_REQUESTS: TableDefinition<(u64, &str), u64> =
    TableDefinition::new("approval_requests");
/// approval id → [`super::approval_answers::QuestionPick`]s: the options chosen so
/// far for an approval that asks questions.
pub const APPROVAL_ANSWERS: TableDefinition<u64, &[u8]> = TableDefinition::new("approval_answers");

/// (bot_id, user_id) → permission mode name chosen with `/mode`.
pub const USER_MODES: TableDefinition<(&str, i64), &str> = TableDefinition::new("user_modes");
/// (bot_id, user_id) → model name chosen with `/model`.
pub const USER_MODELS: TableDefinition<(&str, i64), &str> = TableDefinition::new("user_models");

/// (bot_id, user_id) → project name chosen with `/project` (absent: `default`).
pub const USER_PROJECTS: TableDefinition<(&str, i64), &str> = TableDefinition::new("user_projects");
/// task_id → project name, for tasks of a project other than `default`.
pub const TASK_PROJECTS: TableDefinition<u64, &str> = TableDefinition::new("task_projects");
/// (bot_id, user_id, project) → [`super::records::Session`] of a project other
/// than `default` (whose sessions are in `sessions`).
pub const PROJECT_SESSIONS: TableDefinition<(&str, i64, &str), &[u8]> =
    TableDefinition::new("project_sessions");
/// (bot_id, user_id, project, seq) → [`super::records::ChatMessage`] of a project
/// other than `default` (whose history is in `messages`).
pub const PROJECT_MESSAGES: TableDefinition<(&str, i64, &str, u64), &[u8]> =
    TableDefinition::new("project_messages");

/// Names of every table, in dump order.
pub const ALL_TABLES: [&str; 28] = [
    "meta",
    "sessions",
    "messages",
    "tasks",
    "task_queue",
    "task_status",
    "task_user",
    "active_users",
    "update_dedup",
    "outbox",
    "costs",
    "restart_state",
    "series",
    "series_rollup",
    "series_names",
    "alerts",
    "events",
    "breakers",
    "task_events",
    "approvals",
    "approval_requests",
    "user_modes",
    "user_projects",
    "task_projects",
    "project_sessions",
    "project_messages",
    "user_models",
    "approval_answers",
];
