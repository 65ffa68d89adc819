//! `tasks.json`: the old bot's tasks, converted to [`Task`] records.
//!
//! Status mapping (legacy spelling, case-insensitive, `-`/space read as `_`):
//!
//! | legacy | agentlab | queue |
//! |---|---|---|
//! | `pending`, `queued`, `waiting`, `new`, `created`, `submitted`, `scheduled` | `queued` | yes: it runs |
//! | `in_progress`, `running`, `processing`, `started`, `active`, `executing`, `working` | `interrupted` (class `interrupted`) | yes: re-run, the migration interrupted it |
//! | `completed`, `complete`, `done`, `success`, `succeeded`, `successful`, `finished`, `ok` | `succeeded` | no |
//! | `failed`, `failure`, `error`, `errored`, `crashed` | `failed` (class `agent_error`) | no |
//! | `timeout`, `timed_out`, `timedout` | `failed` (class `timeout`) | no |
//! | `cancelled`, `canceled`, `aborted`, `killed`, `stopped` | `cancelled` | no |
//! | anything else, or no status | `failed`, never run (a note says so) | no |
//!
//! A task with no status but a result is `succeeded`, with an error `failed`.
//! Queued and interrupted tasks keep their legacy creation time as queue
//! position, so they run oldest first, and get at least one attempt left.

use std::collections::HashSet;

use serde_json::Value;

use crate::storage::{
    FailureClass, LegacyTask, MAX_PROMPT_BYTES, PRIORITY_NORMAL, Task, TaskKind, TaskSource,
    TaskStatus,
};

use super::ParseOptions;
use super::report::FileReport;
use super::shape::{Fields, canonical_json, fingerprint, records, type_name};

const WRAPPERS: &[&str] = &["tasks", "task_queue", "queue", "items", "data", "records"];
const ID: &[&str] = &["id", "task_id", "taskId", "uuid"];
const USER: &[&str] = &["user_id", "userId", "user", "from_id", "fromId", "owner_id"];
const CHAT: &[&str] = &["chat_id", "chatId", "chat"];
const PROMPT: &[&str] = &[
    "prompt",
    "message",
    "text",
    "content",
    "query",
    "task",
    "description",
    "input",
];
const STATUS: &[&str] = &["status", "state"];
const CREATED: &[&str] = &[
    "created_at",
    "created",
    "timestamp",
    "createdAt",
    "submitted_at",
    "queued_at",
    "time",
    "ts",
    "date",
];
const STARTED: &[&str] = &["started_at", "startedAt", "start_time", "started"];
const FINISHED: &[&str] = &[
    "completed_at",
    "finished_at",
    "ended_at",
    "completedAt",
    "finishedAt",
    "end_time",
    "done_at",
    "completed",
    "finished",
];
const RESULT: &[&str] = &["result", "response", "output", "answer", "reply"];
const ERROR: &[&str] = &[
    "error",
    "error_message",
    "errorMessage",
    "exception",
    "failure",
];
const COST: &[&str] = &[
    "cost_usd",
    "total_cost_usd",
    "cost",
    "costUsd",
    "totalCostUsd",
];
const INPUT_TOKENS: &[&str] = &["input_tokens", "inputTokens", "prompt_tokens"];
const OUTPUT_TOKENS: &[&str] = &["output_tokens", "outputTokens", "completion_tokens"];
const SESSION: &[&str] = &[
    "session_id",
    "sessionId",
    "claude_session_id",
    "agent_session_id",
];
const ATTEMPTS: &[&str] = &[
    "attempts",
    "attempt",
    "retries",
    "retry_count",
    "retryCount",
];
const EXIT_CODE: &[&str] = &["exit_code", "exitCode", "returncode", "return_code"];
const KIND: &[&str] = &["kind", "type"];
const MESSAGE_ID: &[&str] = &["reply_to_message_id", "message_id", "messageId"];

/// Converts the parsed `tasks.json`; returns the tasks and how many records it held.
pub(crate) fn convert(
    value: Value,
    opts: &ParseOptions,
    report: &mut FileReport,
) -> Result<(Vec<LegacyTask>, u64), String> {
    let (keyed, items) = records(value, WRAPPERS, report)?;
    let bar = opts.progress().records("converting tasks", items.len());
    let total = items.len() as u64;
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for (locator, value) in items {
        bar.inc(1);
        if let Some(task) = convert_one(&locator, keyed, value, opts, report) {
            if seen.insert(task.legacy_id.clone()) {
                out.push(task);
            } else {
                report.skip(
                    &locator,
                    format!(
                        "duplicate task id `{}`: the first one was kept",
                        task.legacy_id
                    ),
                );
            }
        }
    }
    bar.finish_and_clear();
    Ok((out, total))
}

fn convert_one(
    locator: &str,
    keyed: bool,
    value: Value,
    opts: &ParseOptions,
    report: &mut FileReport,
) -> Option<LegacyTask> {
    let Value::Object(map) = value else {
        report.skip(
            locator,
            format!("a task must be an object, found {}", type_name(&value)),
        );
        return None;
    };
    let content_id = format!(
        "h{}",
        fingerprint(&canonical_json(&Value::Object(map.clone())))
    );
    let mut f = Fields::new(map, report, locator, opts.now_ms);
    let legacy_id = if keyed {
        // The key is the id; an `id` field that repeats it says nothing more.
        if let Some((name, id)) = f.take(ID)
            && id.as_str() != Some(locator)
            && id.as_i64().is_none_or(|n| n.to_string() != locator)
        {
            f.reject(name, id);
        }
        locator.to_string()
    } else {
        f.take_string(ID).unwrap_or(content_id)
    };

    let user = f.take_i64(USER);
    let chat = f.take_i64(CHAT);
    let (Some(user_id), Some(chat_id)) = (user.or(chat), chat.or(user)) else {
        f.report().skip(
            locator,
            "no usable user or chat id (user_id, userId, chat_id, ...)",
        );
        return None;
    };
    let Some(prompt) = f.take_string(PROMPT) else {
        f.report()
            .skip(locator, "no prompt (prompt, message, text, ...)");
        return None;
    };
    if prompt.len() > MAX_PROMPT_BYTES {
        f.report().skip(
            locator,
            format!(
                "prompt is {} bytes; at most {MAX_PROMPT_BYTES} are accepted",
                prompt.len()
            ),
        );
        return None;
    }

    let raw_status = f.take(STATUS).map(|(name, v)| match v {
        Value::String(s) => (name, s),
        other => (name, other.to_string()),
    });
    let created = f.take_time(
        CREATED,
        "creation time taken from the start or finish time, else 0 (unknown)",
    );
    let started = f.take_time(STARTED, "left unset");
    let finished = f.take_time(FINISHED, "left unset");
    let result = f.take_string(RESULT);
    let error = f.take_string(ERROR);
    let cost_usd = f.take_f64(COST).unwrap_or(0.0);
    let (mut input_tokens, mut output_tokens) =
        (f.take_u64(INPUT_TOKENS), f.take_u64(OUTPUT_TOKENS));
    if let Some((name, usage)) = f.take(&["usage"]) {
        if let Value::Object(usage_map) = &usage {
            let read = |k: &str| usage_map.get(k).and_then(Value::as_u64);
            input_tokens = input_tokens.or(read("input_tokens"));
            output_tokens = output_tokens.or(read("output_tokens"));
        }
        // Usage holds more than the two totals (cache tokens...): keep it whole.
        f.reject(name, usage);
    }
    let session_id = f.take_string(SESSION);
    let priority = f.take_i64(&["priority"]);
    let attempts = f
        .take_u64(ATTEMPTS)
        .map(|a| a.min(u64::from(u32::MAX)) as u32);
    let exit_code = f.take_i64(EXIT_CODE).and_then(|c| i32::try_from(c).ok());
    let kind = match f.take(KIND) {
        Some((_, Value::String(k))) if k.eq_ignore_ascii_case("chat") => TaskKind::Chat,
        Some((_, Value::String(k))) if k.eq_ignore_ascii_case("task") => TaskKind::Task,
        Some((name, other)) => {
            f.reject(name, other);
            TaskKind::Task
        }
        None => TaskKind::Task,
    };
    let reply_to_message_id = f.take_i64(MESSAGE_ID).and_then(|m| i32::try_from(m).ok());

    let mapped = map_status(
        raw_status.as_ref().map(|(_, s)| s.as_str()),
        result.is_some(),
        error.is_some(),
    );
    if let Some(note) = &mapped.note {
        f.report().note(format!("{locator}: {note}"));
    }
    let created_ms = created.or(started).or(finished).unwrap_or(0);
    let status = mapped.status;
    let attempts = attempts.unwrap_or(match status {
        TaskStatus::Queued | TaskStatus::Cancelled => 0,
        _ => 1,
    });
    let attempts = if status == TaskStatus::Interrupted {
        attempts.max(1)
    } else {
        attempts
    };
    let max_attempts = if matches!(status, TaskStatus::Queued | TaskStatus::Interrupted) {
        opts.max_attempts.max(attempts.saturating_add(1))
    } else {
        opts.max_attempts.max(attempts).max(1)
    };
    let error = match (mapped.error, error) {
        (Some(ours), Some(theirs)) => Some(format!("{ours} (legacy error: {theirs})")),
        (ours, theirs) => theirs.or(ours),
    };
    let priority = match priority.map(u8::try_from) {
        Some(Ok(p)) => p,
        Some(Err(_)) | None => PRIORITY_NORMAL,
    };
    let mut additions = vec![("legacy_id", Value::String(legacy_id.clone()))];
    if let Some((name, raw)) = raw_status {
        additions.push(("legacy_status", Value::String(raw)));
        if name != "status" {
            additions.push(("legacy_status_field", Value::String(name)));
        }
    }
    let extra = f.into_extra(additions);
    let task = Task {
        id: 0,
        bot_id: opts.bot_id.clone(),
        user_id,
        chat_id,
        kind,
        source: TaskSource::Legacy,
        prompt,
        priority,
        status,
        attempts,
        max_attempts,
        created_ms,
        enqueued_ms: created_ms,
        started_ms: started,
        finished_ms: if status.is_terminal() { finished } else { None },
        pid: None,
        pid_start_time: None,
        exit_code,
        result,
        error_class: mapped.class,
        error,
        cost_usd,
        input_tokens: input_tokens.unwrap_or(0),
        output_tokens: output_tokens.unwrap_or(0),
        session_id,
        reply_to_message_id,
        update_id: None,
        progress_message_id: None,
        delivery_started_ms: None,
        retry_of: None,
        extra,
    };
    Some(LegacyTask { legacy_id, task })
}

/// Our status for a legacy one.
pub(crate) struct MappedStatus {
    /// The status.
    pub status: TaskStatus,
    /// Failure class, for failed, cancelled and interrupted tasks.
    pub class: Option<FailureClass>,
    /// Our explanation, stored as the task's error.
    pub error: Option<String>,
    /// Something the summary should say.
    pub note: Option<String>,
}

/// Maps a legacy status (see the module table).
pub(crate) fn map_status(raw: Option<&str>, has_result: bool, has_error: bool) -> MappedStatus {
    let plain = |status, class| MappedStatus {
        status,
        class,
        error: None,
        note: None,
    };
    let Some(raw) = raw else {
        return if has_result {
            plain(TaskStatus::Succeeded, None)
        } else if has_error {
            plain(TaskStatus::Failed, Some(FailureClass::AgentError))
        } else {
            MappedStatus {
                status: TaskStatus::Failed,
                class: Some(FailureClass::AgentError),
                error: Some(
                    "the legacy task had no status; imported as failed so it does not run again"
                        .into(),
                ),
                note: Some("no status: imported as failed, not run".into()),
            }
        };
    };
    let key = raw.trim().to_ascii_lowercase().replace(['-', ' '], "_");
    match key.as_str() {
        "pending" | "queued" | "waiting" | "new" | "created" | "submitted" | "scheduled" => {
            plain(TaskStatus::Queued, None)
        }
        "in_progress" | "inprogress" | "running" | "processing" | "started" | "active"
        | "executing" | "working" => MappedStatus {
            status: TaskStatus::Interrupted,
            class: Some(FailureClass::Interrupted),
            error: Some(
                "interrupted: the legacy bot was running it when its state was migrated; re-queued"
                    .into(),
            ),
            note: None,
        },
        "completed" | "complete" | "done" | "success" | "succeeded" | "successful" | "finished"
        | "ok" => plain(TaskStatus::Succeeded, None),
        "failed" | "failure" | "error" | "errored" | "crashed" => {
            plain(TaskStatus::Failed, Some(FailureClass::AgentError))
        }
        "timeout" | "timed_out" | "timedout" => {
            plain(TaskStatus::Failed, Some(FailureClass::Timeout))
        }
        "cancelled" | "canceled" | "aborted" | "killed" | "stopped" => {
            plain(TaskStatus::Cancelled, Some(FailureClass::Cancelled))
        }
        _ => MappedStatus {
            status: TaskStatus::Failed,
            class: Some(FailureClass::AgentError),
            error: Some(format!(
                "legacy status `{raw}` is not recognised; imported as failed so it does not run"
            )),
            note: Some(format!(
                "status `{raw}` not recognised: imported as failed, not run"
            )),
        },
    }
}
