//! Reading what an agent printed: Claude Code's result, or a plain answer.
//!
//! Claude Code in stream-json prints one event a line and ends each turn with a
//! `result` event (`result`, `is_error`, `subtype`, `session_id`, `total_cost_usd`,
//! `usage`, ...; docs/claude-code-protocol.md); with `--output-format json` it prints
//! the result object alone. Anything else on stdout (plain text, broken JSON,
//! nothing at all) is taken as the answer text itself, with cost 0.
//!
//! Invariants:
//! - Parsing only ever sees a bounded head of stdout ([`MAX_JSON_BYTES`]); output
//!   larger than that is never a result object and is never loaded whole.
//! - [`AgentResult::text`] is at most [`MAX_RESULT_TEXT_BYTES`] plus a short marker
//!   naming the file that holds the full output; it is cut on a char boundary.
//! - Parsing never fails: missing or mistyped fields fall back to defaults.

use std::borrow::Cow;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Largest stdout that is still parsed as a JSON result object.
pub const MAX_JSON_BYTES: u64 = 1024 * 1024;

/// Largest answer text kept in an [`AgentResult`] (the marker comes on top).
pub const MAX_RESULT_TEXT_BYTES: usize = 64 * 1024;

/// The answer of one agent run, as far as its stdout tells.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AgentResult {
    /// The answer text (bounded, see the module docs).
    pub text: String,
    /// The agent itself reported an error (`is_error`, or an `error_*` subtype).
    pub is_error: bool,
    /// The agent's conversation id, to resume the conversation next time.
    pub session_id: Option<String>,
    /// Cost of the run in US dollars (`total_cost_usd`); 0 when unknown.
    pub cost_usd: f64,
    /// Input tokens, cache writes and cache reads included.
    pub input_tokens: u64,
    /// Output tokens.
    pub output_tokens: u64,
    /// Stdout was valid JSON.
    pub parsed_json: bool,
    /// Stdout held a whole result object: the run got to the end and said so.
    pub complete: bool,
    /// The result's `subtype` (`success`, `error_max_turns`, `error_max_budget_usd`,
    /// ...); empty when there was none.
    pub subtype: String,
}

impl AgentResult {
    /// The agent stopped because its budget (`--max-budget-usd`) ran out.
    pub fn hit_budget_limit(&self) -> bool {
        self.subtype == "error_max_budget_usd"
    }
}

/// Builds the result from the first bytes of an agent's stdout.
///
/// `head` is the start of the output and `total_len` its full length; when they
/// differ the output was too large to parse and only a bounded excerpt is kept.
/// `full_output` is named in the truncation marker.
pub fn parse_agent_output(head: &[u8], total_len: u64, full_output: &Path) -> AgentResult {
    let whole = total_len <= head.len() as u64 && total_len <= MAX_JSON_BYTES;
    if whole && let Some(result) = parse_json_output(head, full_output) {
        return result;
    }
    text_result(head, total_len, full_output)
}

/// Like [`parse_agent_output`], for output too large to parse whole: a stream of
/// events whose last line, in `tail` (the output's last bytes), is the result.
pub fn parse_agent_output_with_tail(
    head: &[u8],
    tail: &[u8],
    total_len: u64,
    full_output: &Path,
) -> AgentResult {
    let whole = total_len <= head.len() as u64 && total_len <= MAX_JSON_BYTES;
    if !whole
        && let Ok(text) = std::str::from_utf8(tail.trim_ascii())
        && let Some(result) = last_result_line(text)
    {
        return result_from_object(&result, full_output);
    }
    parse_agent_output(head, total_len, full_output)
}

/// True if `message` (an answer or stderr) says a resumed session does not exist.
///
/// Claude Code answers an unknown `--resume` id with "No conversation found with
/// session ID: ..."; the other phrasings are there for other agents and versions.
pub fn is_unknown_session_message(message: &str) -> bool {
    const PHRASES: [&str; 6] = [
        "no conversation found",
        "session not found",
        "no session found",
        "unknown session",
        "could not find session",
        "session does not exist",
    ];
    let lower = message.to_lowercase();
    PHRASES.iter().any(|phrase| lower.contains(phrase))
}

/// Stdout that is not (a recognisable) JSON: the text is the answer.
fn text_result(head: &[u8], total_len: u64, full_output: &Path) -> AgentResult {
    AgentResult {
        text: bounded_text(&String::from_utf8_lossy(head), total_len, full_output),
        ..AgentResult::default()
    }
}

/// Parses stdout as JSON; `None` if it is not JSON at all.
///
/// Accepted shapes: the result object itself; an array of messages whose last
/// `type: "result"` element is the result (`--verbose`); newline-delimited messages
/// ending in a result line (`stream-json`). Valid JSON of any other shape is kept
/// as text, marked `parsed_json` but not `complete`.
fn parse_json_output(head: &[u8], full_output: &Path) -> Option<AgentResult> {
    let text = std::str::from_utf8(head).ok()?.trim();
    if text.is_empty() {
        return None;
    }
    match serde_json::from_str::<Value>(text) {
        Ok(value) => Some(match find_result_object(&value) {
            Some(object) => result_from_object(object, full_output),
            None => AgentResult {
                parsed_json: true,
                ..text_result(head, head.len() as u64, full_output)
            },
        }),
        Err(_) => last_result_line(text).map(|object| result_from_object(&object, full_output)),
    }
}

/// The result object inside a parsed document, if there is one.
fn find_result_object(value: &Value) -> Option<&Value> {
    match value {
        Value::Object(_) if looks_like_result(value) => Some(value),
        Value::Array(items) => items.iter().rev().find(|item| is_result_type(item)),
        _ => None,
    }
}

/// The last line of newline-delimited JSON, if it is a result message.
fn last_result_line(text: &str) -> Option<Value> {
    let line = text.lines().rev().find(|line| !line.trim().is_empty())?;
    let value = serde_json::from_str::<Value>(line).ok()?;
    is_result_type(&value).then_some(value)
}

fn is_result_type(value: &Value) -> bool {
    value.get("type").and_then(Value::as_str) == Some("result")
}

/// A result object is `type: "result"`, or (tolerating a missing type) has `result`.
fn looks_like_result(value: &Value) -> bool {
    is_result_type(value) || value.get("result").is_some()
}

/// The answer held by a `result` object; `full_output` is named when the text is cut.
pub(super) fn result_from_object(object: &Value, full_output: &Path) -> AgentResult {
    let text = |key: &str| object.get(key).and_then(Value::as_str);
    let usage = object.get("usage");
    let count = |field: &str| {
        usage
            .and_then(|usage| usage.get(field))
            .and_then(Value::as_u64)
    };
    let fields = ResultLine {
        subtype: text("subtype").map(Cow::Borrowed),
        is_error: object.get("is_error").and_then(Value::as_bool),
        result: text("result").map(Cow::Borrowed),
        session_id: text("session_id").map(Cow::Borrowed),
        // `find_map`: a cost that is not a number is passed over.
        total_cost_usd: ["total_cost_usd", "cost_usd"]
            .iter()
            .find_map(|field| object.get(*field).and_then(Value::as_f64)),
        cost_usd: None,
        usage: Some(Usage {
            input_tokens: count("input_tokens"),
            cache_creation_input_tokens: count("cache_creation_input_tokens"),
            cache_read_input_tokens: count("cache_read_input_tokens"),
            output_tokens: count("output_tokens"),
        }),
        terminal_reason: None,
    };
    fields.answer(full_output)
}

/// A `result` line read into the fields an answer is made of, without building
/// the rest of it (`modelUsage`, `permission_denials`, ...): `None` when a field
/// has an unexpected type, and the caller reads the line whole with
/// [`result_from_object`], which passes such a field over. Also the line's
/// `terminal_reason`.
pub(super) fn result_from_line(
    line: &[u8],
    full_output: &Path,
) -> Option<(AgentResult, Option<String>)> {
    let fields: ResultLine<'_> = serde_json::from_slice(line).ok()?;
    let terminal_reason = fields.terminal_reason.as_deref().map(str::to_owned);
    Some((fields.answer(full_output), terminal_reason))
}

/// The fields of a `result` object an answer is made of.
#[derive(Deserialize)]
struct ResultLine<'a> {
    #[serde(borrow, default)]
    subtype: Option<Cow<'a, str>>,
    #[serde(default)]
    is_error: Option<bool>,
    #[serde(borrow, default)]
    result: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    session_id: Option<Cow<'a, str>>,
    #[serde(default)]
    total_cost_usd: Option<f64>,
    /// The cost's name in older versions.
    #[serde(default)]
    cost_usd: Option<f64>,
    #[serde(default)]
    usage: Option<Usage>,
    #[serde(borrow, default)]
    terminal_reason: Option<Cow<'a, str>>,
}

/// A `result`'s token counts.
#[derive(Deserialize)]
struct Usage {
    #[serde(default)]
    input_tokens: Option<u64>,
    #[serde(default)]
    cache_creation_input_tokens: Option<u64>,
    #[serde(default)]
    cache_read_input_tokens: Option<u64>,
    #[serde(default)]
    output_tokens: Option<u64>,
}

impl ResultLine<'_> {
    fn answer(&self, full_output: &Path) -> AgentResult {
        let subtype = self.subtype.as_deref().unwrap_or("");
        let is_error = self
            .is_error
            .unwrap_or_else(|| subtype.starts_with("error"));
        let text = match self.result.as_deref() {
            Some(result) => bounded_text(result, result.len() as u64, full_output),
            None if is_error && !subtype.is_empty() => format!("agent ended with {subtype}"),
            None if is_error => "agent reported an error".to_owned(),
            None => String::new(),
        };
        let usage = self.usage.as_ref();
        let count = |field: fn(&Usage) -> Option<u64>| usage.and_then(field).unwrap_or(0);
        AgentResult {
            text,
            is_error,
            session_id: self
                .session_id
                .as_deref()
                .filter(|id| !id.is_empty())
                .map(str::to_owned),
            // Negative or non-finite counts as 0.
            cost_usd: self
                .total_cost_usd
                .or(self.cost_usd)
                .filter(|cost| cost.is_finite() && *cost >= 0.0)
                .unwrap_or(0.0),
            input_tokens: count(|u| u.input_tokens)
                .saturating_add(count(|u| u.cache_creation_input_tokens))
                .saturating_add(count(|u| u.cache_read_input_tokens)),
            output_tokens: count(|u| u.output_tokens),
            parsed_json: true,
            complete: true,
            subtype: subtype.to_owned(),
        }
    }
}

/// `text` cut to [`MAX_RESULT_TEXT_BYTES`], with a marker when anything is missing.
///
/// `total_len` is the size of the whole text, of which `text` may be only a head.
fn bounded_text(text: &str, total_len: u64, full_output: &Path) -> String {
    let kept = floor_char_boundary(text, MAX_RESULT_TEXT_BYTES);
    if kept as u64 >= total_len {
        return text.to_owned();
    }
    format!(
        "{}\n\n[output truncated: first {kept} of {total_len} bytes shown; the full output is in {}]",
        &text[..kept],
        full_output.display()
    )
}

/// The largest char boundary of `text` at or below `max`.
fn floor_char_boundary(text: &str, max: usize) -> usize {
    let mut end = max.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    end
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(stdout: &str) -> AgentResult {
        parse_agent_output(
            stdout.as_bytes(),
            stdout.len() as u64,
            Path::new("/runs/7/stdout"),
        )
    }

    /// A `result` line read for its fields alone gives the answer reading it
    /// whole gives; a line with a mistyped field is left to the whole reading.
    #[test]
    fn a_result_line_read_for_its_fields_answers_as_read_whole() {
        let output = Path::new("/runs/7/stdout");
        let lines = [
            r#"{"type":"result","subtype":"success","is_error":false,"duration_ms":12,"num_turns":1,"result":"Hi \"there\"","session_id":"s-1","total_cost_usd":0.25,"usage":{"input_tokens":3,"cache_creation_input_tokens":5,"cache_read_input_tokens":7,"output_tokens":11,"server_tool_use":{"web_search_requests":0}},"modelUsage":{"m":{"inputTokens":3}},"permission_denials":[],"terminal_reason":"completed","uuid":"u"}"#,
            r#"{"type":"result","subtype":"error_max_turns","session_id":"","cost_usd":0.5}"#,
            r#"{"type":"result","subtype":"error_during_execution","is_error":null,"total_cost_usd":null,"cost_usd":-1,"usage":null}"#,
            r#"{"type":"result","result":"ok","total_cost_usd":-2.0,"usage":{"input_tokens":null}}"#,
        ];
        for line in lines {
            let whole: Value = serde_json::from_str(line).unwrap();
            let (fields, _) = result_from_line(line.as_bytes(), output).expect(line);
            assert_eq!(fields, result_from_object(&whole, output), "{line}");
        }
        let (_, reason) = result_from_line(lines[0].as_bytes(), output).unwrap();
        assert_eq!(reason.as_deref(), Some("completed"));
        for mistyped in [
            r#"{"type":"result","is_error":"yes","result":"x"}"#,
            r#"{"type":"result","total_cost_usd":"0.5","cost_usd":0.25}"#,
            r#"{"type":"result","usage":{"input_tokens":1.5}}"#,
        ] {
            assert!(
                result_from_line(mistyped.as_bytes(), output).is_none(),
                "{mistyped}"
            );
        }
        let whole: Value =
            serde_json::from_str(r#"{"type":"result","total_cost_usd":"0.5","cost_usd":0.25}"#)
                .unwrap();
        assert_eq!(result_from_object(&whole, output).cost_usd, 0.25);
    }

    #[test]
    fn claude_result_object_is_parsed() {
        let result = parse(
            r#"{"type":"result","subtype":"success","is_error":false,"result":"Done.",
               "session_id":"0b9c-11","total_cost_usd":0.0123,"duration_ms":900,"num_turns":2,
               "usage":{"input_tokens":10,"output_tokens":20,
                        "cache_creation_input_tokens":3,"cache_read_input_tokens":4}}"#,
        );
        assert_eq!(
            result,
            AgentResult {
                text: "Done.".into(),
                is_error: false,
                session_id: Some("0b9c-11".into()),
                cost_usd: 0.0123,
                input_tokens: 17,
                output_tokens: 20,
                parsed_json: true,
                complete: true,
                subtype: "success".into(),
            }
        );
    }

    #[test]
    fn missing_and_mistyped_fields_fall_back_to_defaults() {
        let result = parse(r#"{"type":"result","result":"ok","total_cost_usd":"free","usage":7}"#);
        assert_eq!(result.text, "ok");
        assert_eq!(result.cost_usd, 0.0);
        assert_eq!((result.input_tokens, result.output_tokens), (0, 0));
        assert_eq!(result.session_id, None);
        assert!(result.complete && !result.is_error);
    }

    #[test]
    fn error_subtype_without_result_is_an_error() {
        let result = parse(r#"{"type":"result","subtype":"error_max_turns","session_id":"s"}"#);
        assert!(result.is_error && result.complete);
        assert_eq!(result.text, "agent ended with error_max_turns");
    }

    #[test]
    fn verbose_array_and_stream_lines_yield_the_result_message() {
        let array = parse(
            r#"[{"type":"system"},{"type":"result","result":"from array","total_cost_usd":1.5}]"#,
        );
        assert_eq!((array.text.as_str(), array.cost_usd), ("from array", 1.5));
        let lines =
            parse("{\"type\":\"assistant\"}\n{\"type\":\"result\",\"result\":\"from lines\"}\n");
        assert_eq!(lines.text, "from lines");
        assert!(lines.complete);
    }

    #[test]
    fn plain_text_is_the_result_at_zero_cost() {
        let result = parse("just words\n");
        assert_eq!(result.text, "just words\n");
        assert_eq!(result.cost_usd, 0.0);
        assert!(!result.parsed_json && !result.complete && !result.is_error);
    }

    #[test]
    fn empty_and_truncated_json_are_incomplete_text() {
        assert_eq!(parse(""), AgentResult::default());
        let cut = parse(r#"{"type":"result","result":"hal"#);
        assert!(!cut.parsed_json && !cut.complete);
        assert_eq!(cut.text, r#"{"type":"result","result":"hal"#);
    }

    #[test]
    fn json_that_is_not_a_result_is_kept_as_text() {
        let result = parse(r#"{"error":"overloaded"}"#);
        assert!(result.parsed_json && !result.complete);
        assert_eq!(result.text, r#"{"error":"overloaded"}"#);
    }

    #[test]
    fn long_result_is_cut_on_a_char_boundary_with_a_marker() {
        let long = "é".repeat(MAX_RESULT_TEXT_BYTES);
        let json = serde_json::json!({"type": "result", "result": long}).to_string();
        let result = parse(&json);
        let (kept, marker) = result
            .text
            .split_once("\n\n[output truncated")
            .expect("marker");
        assert_eq!(kept.len(), MAX_RESULT_TEXT_BYTES);
        assert!(marker.contains("/runs/7/stdout"));
        assert!(result.complete);
    }

    #[test]
    fn output_larger_than_the_json_cap_is_never_parsed() {
        let head = br#"{"type":"result","result":"x"}"#;
        let result = parse_agent_output(head, MAX_JSON_BYTES + 1, Path::new("/o"));
        assert!(!result.parsed_json && !result.complete);
        assert!(
            result
                .text
                .contains(&format!("of {} bytes", MAX_JSON_BYTES + 1))
        );
    }

    #[test]
    fn a_large_event_stream_is_read_from_its_last_line() {
        let events = "{\"type\":\"assistant\",\"message\":{\"content\":[]}}\n".repeat(40_000);
        let result_line = r#"{"type":"result","subtype":"success","is_error":false,"result":"big done","session_id":"s-9","total_cost_usd":0.5}"#;
        let output = format!("{events}{result_line}\n");
        let total = output.len() as u64;
        assert!(total > MAX_JSON_BYTES);
        let head = &output.as_bytes()[..MAX_JSON_BYTES as usize];
        let tail = &output.as_bytes()[output.len() - 64 * 1024..];
        let result = parse_agent_output_with_tail(head, tail, total, Path::new("/o"));
        assert_eq!(result.text, "big done");
        assert_eq!(result.session_id.as_deref(), Some("s-9"));
        assert_eq!(result.cost_usd, 0.5);
        assert!(result.complete);
        let no_result =
            parse_agent_output_with_tail(head, b"{\"type\":\"user\"}\n", total, Path::new("/o"));
        assert!(!no_result.complete);
    }

    #[test]
    fn an_api_failure_reported_as_success_with_is_error_is_an_error() {
        // What Claude Code 2.1.328 prints when the API fails for good.
        let result = parse(
            r#"{"type":"result","subtype":"success","is_error":true,"api_error_status":500,"terminal_reason":"api_error","result":"API Error: 500 Internal server error.","session_id":"s","total_cost_usd":0}"#,
        );
        assert!(result.is_error && result.complete);
        assert_eq!(result.text, "API Error: 500 Internal server error.");
        let budget = parse(r#"{"type":"result","subtype":"error_max_budget_usd","is_error":true}"#);
        assert!(budget.hit_budget_limit());
    }

    #[test]
    fn negative_cost_counts_as_zero() {
        assert_eq!(parse(r#"{"result":"x","total_cost_usd":-3}"#).cost_usd, 0.0);
    }

    #[test]
    fn unknown_session_messages_are_recognised() {
        assert!(is_unknown_session_message(
            "No conversation found with session ID: 1234-abcd"
        ));
        assert!(is_unknown_session_message("Error: Session not found"));
        assert!(!is_unknown_session_message("All done, 3 files changed."));
    }
}
