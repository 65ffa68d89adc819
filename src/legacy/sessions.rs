//! `sessions.json`: one agent session per Telegram user, converted to [`Session`].
//!
//! A record is an object (fields below) or, in a keyed file, just the agent's
//! session id as a string: `{"123456789": "4f1c..."}`. In a keyed file the key is
//! the user id; in an array the `user_id` (or `userId`, `chat_id`, `user`) field is.

use std::collections::HashSet;

use serde_json::{Map, Value};

use crate::storage::{LegacySession, Session};

use super::ParseOptions;
use super::report::FileReport;
use super::shape::{Fields, as_i64, records, type_name};

const WRAPPERS: &[&str] = &["sessions", "user_sessions", "users", "data", "records"];
const USER: &[&str] = &["user_id", "userId", "chat_id", "chatId", "user"];
const SESSION: &[&str] = &[
    "session_id",
    "sessionId",
    "claude_session_id",
    "agent_session_id",
    "session",
];
const CREATED: &[&str] = &[
    "created_at",
    "created",
    "timestamp",
    "createdAt",
    "started_at",
    "start_time",
];
const LAST_ACTIVE: &[&str] = &[
    "last_active",
    "last_activity",
    "last_used",
    "lastActive",
    "last_message_at",
    "last_seen",
    "updated_at",
    "updatedAt",
    "updated",
];
const MESSAGE_COUNT: &[&str] = &[
    "message_count",
    "messageCount",
    "num_messages",
    "count",
    "messages",
];
const WORKDIR: &[&str] = &[
    "workdir",
    "cwd",
    "working_dir",
    "working_directory",
    "project_dir",
    "project_path",
    "directory",
];

/// Converts the parsed `sessions.json`; returns the sessions and how many records it held.
pub(crate) fn convert(
    value: Value,
    opts: &ParseOptions,
    report: &mut FileReport,
) -> Result<(Vec<LegacySession>, u64), String> {
    let (keyed, items) = records(value, WRAPPERS, report)?;
    let bar = opts.progress().records("converting sessions", items.len());
    let total = items.len() as u64;
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for (locator, value) in items {
        bar.inc(1);
        let key_user = keyed.then(|| locator.trim().parse::<i64>().ok()).flatten();
        let map = match value {
            Value::Object(map) => map,
            Value::String(id) if keyed => {
                let mut map = Map::new();
                map.insert("session_id".into(), Value::String(id));
                map
            }
            other => {
                report.skip(
                    &locator,
                    format!(
                        "a session must be an object or a session id string, found {}",
                        type_name(&other)
                    ),
                );
                continue;
            }
        };
        if let Some(session) = convert_one(&locator, key_user, map, opts, report) {
            if seen.insert(session.user_id) {
                out.push(session);
            } else {
                report.skip(
                    &locator,
                    format!(
                        "second session of user {}: the first one was kept",
                        session.user_id
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
    key_user: Option<i64>,
    map: Map<String, Value>,
    opts: &ParseOptions,
    report: &mut FileReport,
) -> Option<LegacySession> {
    let mut f = Fields::new(map, report, locator, opts.now_ms);
    let user_id = match key_user {
        Some(user) => user,
        None => match f.take_i64(USER) {
            Some(user) => user,
            None => {
                f.report().skip(
                    locator,
                    "no usable user id (a numeric key, or user_id, userId, chat_id...)",
                );
                return None;
            }
        },
    };
    let agent_session_id = f.take_string(SESSION);
    let created = f.take_time(
        CREATED,
        "creation time taken from the last activity, else 0 (unknown)",
    );
    let last_active = f.take_time(
        LAST_ACTIVE,
        "last activity taken from the creation time, else 0 (unknown)",
    );
    let message_count = match f.take(MESSAGE_COUNT) {
        Some((name, value)) => match (&value, as_i64(&value)) {
            (_, Some(n)) if n >= 0 => Some(n as u64),
            (Value::Array(items), _) => {
                // A history list: counted, and kept in `extra` (not replayed).
                let n = items.len() as u64;
                f.reject(name, value);
                Some(n)
            }
            _ => {
                f.reject(name, value);
                None
            }
        },
        None => None,
    };
    let workdir = f.take_string(WORKDIR).unwrap_or_default();
    let session = Session {
        agent_session_id,
        created_ms: created.or(last_active).unwrap_or(0),
        last_active_ms: last_active.or(created).unwrap_or(0),
        message_count: message_count.unwrap_or(0),
        workdir,
        extra: f.into_extra(Vec::new()),
    };
    Some(LegacySession { user_id, session })
}
