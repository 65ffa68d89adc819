//! `restart_state.json`: a restart the old bot was asked for, converted to
//! [`RestartState`] so the new service can send the "back online" notice.
//!
//! One object (optionally under `restart_state`/`restart`/`state`), or an array of
//! them of which the newest is kept. `{}` means no restart is pending, and so does
//! a record with `pending`/`active`/`in_progress` set to `false`. The timestamp is
//! the one the old bot misread: `1760504154` is seconds, 2025-10-15T04:55:54Z.

use serde_json::{Map, Value};

use crate::storage::{LegacyRestart, RestartState};

use super::ParseOptions;
use super::report::FileReport;
use super::shape::{Fields, canonical_json, fingerprint, type_name, unwrap};
use super::timestamp;

const WRAPPERS: &[&str] = &["restart_state", "restart", "state", "data"];
const TIME: &[&str] = &[
    "timestamp",
    "requested_at",
    "restart_time",
    "restart_requested_at",
    "time",
    "created_at",
    "requested",
    "ts",
    "date",
];
const CHAT: &[&str] = &["chat_id", "chatId", "chat"];
const MESSAGE: &[&str] = &["message_id", "messageId", "msg_id", "status_message_id"];
const REASON: &[&str] = &["reason", "note", "requested_by", "by"];
const USER: &[&str] = &["user_id", "userId", "requested_by_user"];
const PENDING_FLAGS: &[&str] = &["pending", "active", "in_progress"];

/// Converts the parsed `restart_state.json`; returns the restart (if one is
/// pending) and how many records the file held.
pub(crate) fn convert(
    value: Value,
    opts: &ParseOptions,
    report: &mut FileReport,
) -> Result<(Option<LegacyRestart>, u64), String> {
    let mut total = 1;
    let candidates: Vec<(String, Map<String, Value>)> = match unwrap(value, WRAPPERS, report) {
        Value::Object(map) if map.is_empty() => {
            report.note("no restart pending ({})");
            return Ok((None, 0));
        }
        Value::Object(map) => vec![("state".into(), map)],
        Value::Array(items) => {
            total = items.len() as u64;
            let mut objects = Vec::new();
            for (i, item) in items.into_iter().enumerate() {
                match item {
                    Value::Object(map) => objects.push((format!("[{i}]"), map)),
                    other => report.skip(
                        &format!("[{i}]"),
                        format!(
                            "a restart state must be an object, found {}",
                            type_name(&other)
                        ),
                    ),
                }
            }
            objects
        }
        other => {
            return Err(format!(
                "the file holds {}, not a restart state object",
                type_name(&other)
            ));
        }
    };
    let mut converted: Vec<(String, LegacyRestart)> = Vec::new();
    for (locator, map) in candidates {
        if let Some(restart) = convert_one(&locator, map, opts, report) {
            converted.push((locator, restart));
        }
    }
    // The newest wins; equal times keep the later record.
    let newest = converted
        .iter()
        .enumerate()
        .max_by_key(|(i, (_, r))| (r.state.requested_ms, *i))
        .map(|(i, _)| i);
    let mut kept = None;
    for (i, (locator, restart)) in converted.into_iter().enumerate() {
        if Some(i) == newest {
            if restart.state.requested_ms > 0 {
                let at = timestamp::iso(restart.state.requested_ms as i64);
                report.note(format!(
                    "{locator}: the restart to announce was requested at {at}"
                ));
            }
            kept = Some(restart);
        } else {
            report.skip(
                &locator,
                "an older restart state: only the newest is imported",
            );
        }
    }
    Ok((kept, total))
}

fn convert_one(
    locator: &str,
    map: Map<String, Value>,
    opts: &ParseOptions,
    report: &mut FileReport,
) -> Option<LegacyRestart> {
    let fp = fingerprint(&canonical_json(&Value::Object(map.clone())));
    let mut f = Fields::new(map, report, locator, opts.now_ms);
    if let Some((name, Value::Bool(false))) = f.take(PENDING_FLAGS) {
        f.report()
            .skip(locator, format!("`{name}` is false: no restart pending"));
        return None;
    }
    let requested_ms = f.take_time(TIME, "set to 0 (unknown time)").unwrap_or(0);
    let chat_id = f.take_i64(CHAT);
    let message_id = f.take_i64(MESSAGE).and_then(|m| i32::try_from(m).ok());
    let reason = f.take_string(REASON);
    let user = f.take_i64(USER);
    let reason = match (reason, user) {
        (Some(reason), _) => reason,
        (None, Some(user)) => format!("requested by user {user} (legacy bot)"),
        (None, None) => "restart requested in the legacy bot".to_string(),
    };
    if !f.is_empty() {
        let left = f.left_names().join(", ");
        f.report().note(format!(
            "{locator}: fields kept in meta `legacy:extra:restart:<fingerprint>`: {left}"
        ));
    }
    let extra = f.into_extra(Vec::new());
    Some(LegacyRestart {
        fingerprint: fp,
        extra,
        state: RestartState {
            requested_ms,
            bot_id: Some(opts.bot_id.clone()),
            chat_id,
            message_id,
            reason,
        },
    })
}
