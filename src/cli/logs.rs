//! `agentlab logs`: the last lines of the service's log, optionally following it.
//!
//! The files hold JSON lines (one record each: `timestamp`, `level`, `target`,
//! `fields` with `message` and the event's own fields, `span` with the current
//! span's fields). By default each record is printed as one readable line —
//! time, level, message, then `key=value` for the event's and the span's fields —
//! and `--json` prints the records exactly as stored. A line that is not such a
//! record is printed unchanged, never dropped.

use std::io::{BufRead, Seek, SeekFrom};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use serde_json::Value;

use super::args::LogsArgs;
use crate::config::Config;

/// The newest log file in `log_dir` (daily files are `agentlab.log.YYYY-MM-DD`).
pub fn newest_log(config: &Config) -> Option<PathBuf> {
    let entries = std::fs::read_dir(&config.log_dir).ok()?;
    entries
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(crate::telemetry::LOG_FILE)
        })
        .max_by_key(|e| e.file_name())
        .map(|e| e.path())
}

/// Runs the command.
pub async fn run(config: &Config, args: LogsArgs) -> anyhow::Result<i32> {
    let Some(path) = newest_log(config) else {
        anyhow::bail!(
            "no log file in {} (has the service run with this configuration?)",
            config.log_dir.display()
        );
    };
    let show = |line: &str| {
        if args.json {
            line.to_string()
        } else {
            readable_line(line)
        }
    };
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let lines: Vec<&str> = text.lines().collect();
    let mut out = std::io::stdout().lock();
    for line in &lines[lines.len().saturating_sub(args.lines)..] {
        if !print_line(&mut out, &show(line))? {
            return Ok(0);
        }
    }
    drop(out);
    if !args.follow {
        return Ok(0);
    }
    let mut file = std::fs::File::open(&path)?;
    let mut pos = file.seek(SeekFrom::End(0))?;
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let len = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(pos);
        if len < pos {
            pos = 0;
        }
        if len > pos {
            file.seek(SeekFrom::Start(pos))?;
            let mut reader = std::io::BufReader::new(&file);
            let mut line = String::new();
            while reader.read_line(&mut line)? > 0 {
                let shown = show(line.trim_end_matches(['\n', '\r']));
                if !print_line(&mut std::io::stdout().lock(), &shown)? {
                    return Ok(0);
                }
                line.clear();
            }
            pos = len;
        }
    }
}

/// Writes one line; `false` when the reader has gone (`logs | head`), which
/// ends the command quietly.
fn print_line(out: &mut impl std::io::Write, line: &str) -> std::io::Result<bool> {
    match writeln!(out, "{line}").and_then(|()| out.flush()) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(e),
    }
}

/// One stored JSON record as a line for people:
/// `2025-10-15 04:55:54.123  INFO  task finished  status=succeeded  [task_id=7 bot_id=BOT-001]`.
/// Anything that is not a JSON object comes back unchanged.
pub fn readable_line(line: &str) -> String {
    let Ok(Value::Object(record)) = serde_json::from_str::<Value>(line) else {
        return line.to_string();
    };
    let time = record
        .get("timestamp")
        .and_then(Value::as_str)
        .map(readable_time)
        .unwrap_or_default();
    let level = record.get("level").and_then(Value::as_str).unwrap_or("");
    let mut out = format!("{time} {level:>5} ");
    let fields = record.get("fields").and_then(Value::as_object);
    match fields.and_then(|f| f.get("message")) {
        Some(message) => out.push_str(&plain(message)),
        None => out.push_str(record.get("target").and_then(Value::as_str).unwrap_or("")),
    }
    for (key, value) in fields.into_iter().flatten() {
        if key != "message" {
            out.push_str(&format!("  {key}={}", plain(value)));
        }
    }
    if let Some(span) = record.get("span").and_then(Value::as_object) {
        let span_fields: Vec<String> = span
            .iter()
            .filter(|(key, _)| key.as_str() != "name")
            .map(|(key, value)| format!("{key}={}", plain(value)))
            .collect();
        if !span_fields.is_empty() {
            out.push_str(&format!("  [{}]", span_fields.join(" ")));
        }
    }
    out
}

/// `2025-10-15T04:55:54.123456Z` → `2025-10-15 04:55:54.123` (UTC, as stored).
fn readable_time(stamp: &str) -> String {
    match chrono::DateTime::parse_from_rfc3339(stamp) {
        Ok(t) => t
            .with_timezone(&chrono::Utc)
            .format("%Y-%m-%d %H:%M:%S%.3f")
            .to_string(),
        Err(_) => stamp.to_string(),
    }
}

/// A field's value without JSON quotes (strings), one line (newlines as ⏎).
fn plain(value: &Value) -> String {
    match value {
        Value::String(s) => s.replace('\n', "⏎"),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_record_reads_as_one_line_with_its_fields() {
        let line = r#"{"timestamp":"2025-10-15T04:55:54.123456Z","level":"INFO","fields":{"message":"task finished","status":"succeeded"},"target":"agentlab::worker::pool","span":{"bot_id":"BOT-001","task_id":7,"name":"run_task"}}"#;
        assert_eq!(
            readable_line(line),
            "2025-10-15 04:55:54.123  INFO task finished  status=succeeded  [bot_id=BOT-001 task_id=7]"
        );
    }

    #[test]
    fn a_record_without_message_or_span_and_a_foreign_line_are_kept() {
        let line = r#"{"timestamp":"2025-10-15T04:55:54Z","level":"ERROR","fields":{"error":"disk\nfull"},"target":"agentlab::x"}"#;
        assert_eq!(
            readable_line(line),
            "2025-10-15 04:55:54.000 ERROR agentlab::x  error=disk⏎full"
        );
        assert_eq!(readable_line("not json {"), "not json {");
        assert_eq!(readable_line("[1,2]"), "[1,2]");
    }
}
