//! Claude Code's stream-json output, read as it is written: one JSON event a line
//! (docs/claude-code-protocol.md).
//!
//! [`StreamParser`] takes the bytes of the agent's stdout in whatever pieces they
//! arrive and turns each complete line into [`Event`]s: `system`/`init`, the
//! content blocks of `assistant` messages (`text`, `thinking`, `tool_use`), the
//! `tool_result`s of `user` messages, `control_request`s and the `result` that
//! ends every turn.
//!
//! Invariants:
//! - Nothing the CLI prints is fatal: unknown event and content types are skipped
//!   and counted (`agentlab_agent_unknown_events_total`, plus a debug line), unknown
//!   fields are never looked at, a malformed line is logged with the task id and
//!   skipped (the first few as warnings, so raw output cannot flood the log), a line longer than [`MAX_LINE_BYTES`] is skipped without being held.
//! - [`StreamParser::consumed`] is the offset just past the last complete line
//!   handled, so a reader can stop anywhere and a later one resume from there.
//! - `total_cost_usd` is cumulative for the agent process: a turn's cost is the
//!   difference from the previous `result` of the same process, never negative.

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use serde_json::Value;
use tracing::{debug, warn};

use super::agent_result::{self, AgentResult};

/// Longest event line kept in memory; a longer one (a huge tool result) is skipped.
pub const MAX_LINE_BYTES: usize = 4 * 1024 * 1024;

/// Malformed lines of one output logged as warnings; the rest go to debug.
const MALFORMED_WARNINGS: u64 = 3;

/// Longest [`ToolCall::summary`], in characters.
pub const MAX_SUMMARY_CHARS: usize = 120;

/// What an event line is, and the fields of a `system` event, read without
/// building the rest of the line; a string field that is not a string (or any
/// other surprise) leaves the line to the general reading.
#[derive(serde::Deserialize)]
struct Envelope<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    subtype: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    session_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    model: Option<Cow<'a, str>>,
}

impl<'a> Envelope<'a> {
    /// The same fields of a line read whole (a field that is not a string is
    /// missing).
    fn of(value: &'a Value) -> Envelope<'a> {
        let text = |key: &str| value.get(key).and_then(Value::as_str).map(Cow::Borrowed);
        Envelope {
            kind: text("type"),
            subtype: text("subtype"),
            session_id: text("session_id"),
            model: text("model"),
        }
    }
}

/// One thing the agent said, in the order it said it.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// `system`/`init`: a turn starts.
    Init {
        /// The conversation the turn belongs to.
        session_id: Option<String>,
        /// The model answering.
        model: Option<String>,
    },
    /// Another `system` event (`api_retry`, ...), by subtype.
    System {
        /// The event's subtype.
        subtype: String,
    },
    /// A text block of an assistant message.
    Text(String),
    /// A thinking block (its content is not kept).
    Thinking,
    /// The model asked for a tool.
    ToolUse(ToolCall),
    /// A tool's answer to the model.
    ToolResult {
        /// The [`ToolCall::id`] it answers.
        tool_use_id: String,
        /// The tool failed or was denied.
        is_error: bool,
    },
    /// The CLI asks its controller something (`can_use_tool`: an approval).
    ControlRequest {
        /// Id to answer with.
        request_id: String,
        /// What is asked.
        subtype: String,
        /// The tool concerned, for `can_use_tool`.
        tool_name: Option<String>,
        /// The tool's input, for `can_use_tool` (null when absent).
        input: Value,
    },
    /// The turn ended.
    Result(Box<TurnEnd>),
}

/// A tool call of the model.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolCall {
    /// The call's id.
    pub id: String,
    /// The tool (`Bash`, `Read`, `Edit`, ...).
    pub name: String,
    /// The tool's input, as the model wrote it.
    pub input: Value,
}

impl ToolCall {
    /// One short line for people: the tool and its main argument, e.g.
    /// `Bash: cargo test` or `Edit: src/lib.rs`; at most [`MAX_SUMMARY_CHARS`].
    pub fn summary(&self) -> String {
        const MAIN_ARGUMENT: [&str; 8] = [
            "command",
            "file_path",
            "notebook_path",
            "path",
            "pattern",
            "url",
            "query",
            "description",
        ];
        let argument = MAIN_ARGUMENT
            .iter()
            .find_map(|key| self.input.get(*key).and_then(Value::as_str))
            .or_else(|| {
                let object = self.input.as_object()?;
                object.values().find_map(Value::as_str)
            });
        let line = match argument {
            Some(argument) => {
                let argument = argument.split_whitespace().collect::<Vec<_>>().join(" ");
                format!("{}: {argument}", self.name)
            }
            None => self.name.clone(),
        };
        cut_chars(&line, MAX_SUMMARY_CHARS)
    }
}

/// The `result` event of a turn.
#[derive(Debug, Clone, PartialEq)]
pub struct TurnEnd {
    /// The turn's answer; its `cost_usd` is this turn's own cost.
    pub result: AgentResult,
    /// The process's cumulative `total_cost_usd` after this turn.
    pub total_cost_usd: f64,
    /// Why the turn ended (`completed`, `api_error`, ...), when the CLI says.
    pub terminal_reason: Option<String>,
}

/// Turns the agent's stdout into events, piece by piece.
#[derive(Debug)]
pub struct StreamParser {
    task_id: u64,
    partial: Vec<u8>,
    /// Skipping the rest of a line longer than [`MAX_LINE_BYTES`].
    skipping: bool,
    /// Bytes of the line being skipped seen so far.
    skipped: u64,
    consumed: u64,
    session_id: Option<String>,
    total_cost_usd: f64,
    /// The file the output is read from, named when an answer is cut.
    output: PathBuf,
    /// Malformed lines seen (only the first few are logged as warnings).
    malformed: u64,
}

impl StreamParser {
    /// A parser for a fresh process's output, logging under `task_id`.
    pub fn new(task_id: u64) -> Self {
        StreamParser::resuming(task_id, 0, 0.0)
    }

    /// A parser that starts reading at byte `offset` of a process's output, after
    /// turns that cost `total_cost_usd` in all.
    pub fn resuming(task_id: u64, offset: u64, total_cost_usd: f64) -> Self {
        StreamParser {
            task_id,
            partial: Vec::new(),
            skipping: false,
            skipped: 0,
            consumed: offset,
            session_id: None,
            total_cost_usd,
            output: PathBuf::new(),
            malformed: 0,
        }
    }

    /// Names `output` as the file holding the whole output when an answer is cut.
    pub fn naming_output(mut self, output: &Path) -> Self {
        self.output = output.to_path_buf();
        self
    }

    /// The offset just past the last complete line handled.
    pub fn consumed(&self) -> u64 {
        self.consumed
    }

    /// The session id the agent last named (in `init` or `result`).
    pub fn session_id(&self) -> Option<&str> {
        self.session_id.as_deref()
    }

    /// The process's cumulative cost as of the last `result`.
    pub fn total_cost_usd(&self) -> f64 {
        self.total_cost_usd
    }

    /// Reads the next bytes of the output; returns the events of the lines they
    /// complete. An incomplete last line is kept for the next call.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<Event> {
        let mut events = Vec::new();
        let mut rest = bytes;
        while let Some(at) = rest.iter().position(|b| *b == b'\n') {
            let (line, after) = rest.split_at(at);
            rest = &after[1..];
            // The whole line counts, including what earlier calls held of it.
            self.consumed += (self.partial.len() + line.len()) as u64 + 1;
            if self.skipping {
                self.consumed += self.skipped;
                self.skipping = false;
                self.skipped = 0;
                continue;
            }
            if self.partial.is_empty() {
                self.parse_line(line, &mut events);
            } else {
                let mut whole = std::mem::take(&mut self.partial);
                whole.extend_from_slice(line);
                self.parse_line(&whole, &mut events);
            }
        }
        if self.skipping {
            self.skipped += rest.len() as u64;
        } else {
            self.partial.extend_from_slice(rest);
            if self.partial.len() > MAX_LINE_BYTES {
                warn!(
                    task_id = self.task_id,
                    bytes = self.partial.len(),
                    "an agent event line is too long; skipping it"
                );
                self.skipped = self.partial.len() as u64;
                self.partial = Vec::new();
                self.skipping = true;
            }
        }
        // Bytes of the unfinished line are not consumed yet.
        events
    }

    fn parse_line(&mut self, line: &[u8], events: &mut Vec<Event>) {
        let line = line.trim_ascii();
        if line.is_empty() {
            return;
        }
        // The type (and a system event's few fields) first: the largest lines,
        // `system`/`init` with the tool and command lists, need nothing else,
        // and stream events nothing at all, so only the others become a Value.
        if let Ok(envelope) = serde_json::from_slice::<Envelope<'_>>(line) {
            match envelope.kind.as_deref() {
                Some("system") => {
                    self.system(&envelope, events);
                    return;
                }
                Some("control_response" | "control_cancel_request" | "stream_event") => return,
                Some("result") => {
                    if let Some((result, terminal_reason)) =
                        agent_result::result_from_line(line, &self.output)
                    {
                        self.turn_ended(result, terminal_reason, events);
                        return;
                    }
                }
                _ => {}
            }
        }
        let value: Value = match serde_json::from_slice(line) {
            Ok(value) => value,
            Err(error) => {
                self.malformed += 1;
                let excerpt = String::from_utf8_lossy(&line[..line.len().min(200)]).into_owned();
                if self.malformed <= MALFORMED_WARNINGS {
                    warn!(task_id = self.task_id, %error, line = %excerpt, "skipping a malformed agent event line");
                } else {
                    debug!(task_id = self.task_id, %error, line = %excerpt, malformed = self.malformed, "skipping a malformed agent event line");
                }
                return;
            }
        };
        let kind = value.get("type").and_then(Value::as_str).unwrap_or("");
        match kind {
            "system" => self.system(&Envelope::of(&value), events),
            "assistant" => self.assistant(&value, events),
            "user" => self.user(&value, events),
            "control_request" => {
                let request = value.get("request");
                let text = |v: Option<&Value>, key: &str| {
                    v.and_then(|v| v.get(key))
                        .and_then(Value::as_str)
                        .map(str::to_owned)
                };
                events.push(Event::ControlRequest {
                    request_id: text(Some(&value), "request_id").unwrap_or_default(),
                    subtype: text(request, "subtype").unwrap_or_default(),
                    tool_name: text(request, "tool_name"),
                    input: request
                        .and_then(|r| r.get("input"))
                        .cloned()
                        .unwrap_or(Value::Null),
                });
            }
            "result" => {
                let result = agent_result::result_from_object(&value, &self.output);
                let terminal_reason = value
                    .get("terminal_reason")
                    .and_then(Value::as_str)
                    .map(str::to_owned);
                self.turn_ended(result, terminal_reason, events);
            }
            // The CLI's answers to our own control requests (interrupt, approvals).
            "control_response" | "control_cancel_request" | "stream_event" => {}
            other => self.unknown("event", other),
        }
    }

    /// A `result`: the turn's end, its cost the difference of the process's
    /// cumulative totals.
    fn turn_ended(
        &mut self,
        mut result: AgentResult,
        terminal_reason: Option<String>,
        events: &mut Vec<Event>,
    ) {
        if let Some(id) = &result.session_id {
            self.session_id = Some(id.clone());
        }
        let total = result.cost_usd;
        result.cost_usd = (total - self.total_cost_usd).max(0.0);
        self.total_cost_usd = self.total_cost_usd.max(total);
        events.push(Event::Result(Box::new(TurnEnd {
            result,
            total_cost_usd: total,
            terminal_reason,
        })));
    }

    fn system(&mut self, envelope: &Envelope<'_>, events: &mut Vec<Event>) {
        let subtype = envelope.subtype.as_deref().unwrap_or("");
        if subtype == "init" {
            let session_id = envelope
                .session_id
                .as_deref()
                .filter(|id| !id.is_empty())
                .map(str::to_owned);
            if session_id.is_some() {
                self.session_id.clone_from(&session_id);
            }
            let model = envelope.model.as_deref().map(str::to_owned);
            events.push(Event::Init { session_id, model });
        } else {
            events.push(Event::System {
                subtype: subtype.to_owned(),
            });
        }
    }

    fn assistant(&mut self, value: &Value, events: &mut Vec<Event>) {
        let blocks = match content(value) {
            Some(Value::String(text)) => {
                events.push(Event::Text(text.clone()));
                return;
            }
            Some(Value::Array(blocks)) => blocks,
            _ => return,
        };
        for block in blocks {
            let kind = block.get("type").and_then(Value::as_str).unwrap_or("");
            match kind {
                "text" => {
                    let text = block.get("text").and_then(Value::as_str).unwrap_or("");
                    events.push(Event::Text(text.to_owned()));
                }
                "thinking" | "redacted_thinking" => events.push(Event::Thinking),
                "tool_use" | "server_tool_use" => {
                    let field = |key: &str| {
                        block
                            .get(key)
                            .and_then(Value::as_str)
                            .unwrap_or("")
                            .to_owned()
                    };
                    events.push(Event::ToolUse(ToolCall {
                        id: field("id"),
                        name: field("name"),
                        input: block.get("input").cloned().unwrap_or(Value::Null),
                    }));
                }
                other => self.unknown("assistant content", other),
            }
        }
    }

    fn user(&mut self, value: &Value, events: &mut Vec<Event>) {
        // A string content is the prompt echoed back: nothing new.
        let Some(Value::Array(blocks)) = content(value) else {
            return;
        };
        for block in blocks {
            if block.get("type").and_then(Value::as_str) == Some("tool_result") {
                events.push(Event::ToolResult {
                    tool_use_id: block
                        .get("tool_use_id")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_owned(),
                    is_error: block
                        .get("is_error")
                        .and_then(Value::as_bool)
                        .unwrap_or(false),
                });
            }
            // Other user content (the prompt echoed back, text) says nothing new.
        }
    }

    fn unknown(&self, what: &'static str, kind: &str) {
        debug!(
            task_id = self.task_id,
            what, kind, "ignoring an unknown agent event"
        );
        crate::metrics::count_unknown_agent_event(what, kind);
    }
}

/// The content of a message event (`message.content`): a list of blocks, or a
/// string (one text block).
fn content(value: &Value) -> Option<&Value> {
    value.get("message").and_then(|m| m.get("content"))
}

/// `text` cut to `max` characters, ending in `…` when cut.
pub fn cut_chars(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut cut: String = text.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const INIT: &str = r#"{"type":"system","subtype":"init","session_id":"s-1","model":"m","tools":["Bash"],"brand_new_field":{"x":1}}"#;
    const TOOL: &str = r#"{"type":"assistant","session_id":"s-1","message":{"content":[{"type":"tool_use","id":"t1","name":"Bash","input":{"command":"cargo   test\n--all","timeout":5}}]}}"#;
    const TOOL_RESULT: &str = r#"{"type":"user","message":{"content":[{"type":"tool_result","tool_use_id":"t1","content":"ok","is_error":false}]},"tool_use_result":{"stdout":"ok"}}"#;
    const TEXT: &str = r#"{"type":"assistant","message":{"content":[{"type":"thinking","thinking":"hm"},{"type":"text","text":"Done."}]}}"#;

    fn result(total: f64) -> String {
        format!(
            r#"{{"type":"result","subtype":"success","is_error":false,"result":"Done.","session_id":"s-1","total_cost_usd":{total},"usage":{{"input_tokens":3,"output_tokens":4}},"terminal_reason":"completed"}}"#
        )
    }

    fn feed_all(parser: &mut StreamParser, text: &str) -> Vec<Event> {
        parser.feed(text.as_bytes())
    }

    #[test]
    fn every_event_type_of_a_turn_is_read() {
        let mut parser = StreamParser::new(7);
        let stream = format!(
            "{INIT}\n{TOOL}\n{TOOL_RESULT}\n{TEXT}\n{}\n{}\n",
            r#"{"type":"control_request","request_id":"r1","request":{"subtype":"can_use_tool","tool_name":"Write","input":{}}}"#,
            result(0.5)
        );
        let events = feed_all(&mut parser, &stream);
        assert_eq!(
            events[0],
            Event::Init {
                session_id: Some("s-1".into()),
                model: Some("m".into())
            }
        );
        let Event::ToolUse(call) = &events[1] else {
            panic!("{events:?}")
        };
        assert_eq!(call.summary(), "Bash: cargo test --all");
        assert_eq!(
            events[2],
            Event::ToolResult {
                tool_use_id: "t1".into(),
                is_error: false
            }
        );
        assert_eq!(events[3], Event::Thinking);
        assert_eq!(events[4], Event::Text("Done.".into()));
        assert_eq!(
            events[5],
            Event::ControlRequest {
                request_id: "r1".into(),
                subtype: "can_use_tool".into(),
                tool_name: Some("Write".into()),
                input: serde_json::json!({}),
            }
        );
        let Event::Result(end) = &events[6] else {
            panic!("{events:?}")
        };
        assert_eq!(end.result.text, "Done.");
        assert_eq!(end.result.cost_usd, 0.5);
        assert_eq!(end.terminal_reason.as_deref(), Some("completed"));
        assert_eq!(events.len(), 7);
        assert_eq!(parser.session_id(), Some("s-1"));
        assert_eq!(parser.consumed(), stream.len() as u64);
    }

    #[test]
    fn a_turns_cost_is_the_difference_of_the_cumulative_totals() {
        let mut parser = StreamParser::new(1);
        let mut costs = Vec::new();
        for total in [0.0008, 0.0024, 0.0030] {
            for event in feed_all(&mut parser, &format!("{INIT}\n{}\n", result(total))) {
                if let Event::Result(end) = event {
                    costs.push(end.result.cost_usd);
                }
            }
        }
        let expected = [0.0008, 0.0016, 0.0006];
        for (cost, want) in costs.iter().zip(expected) {
            assert!((cost - want).abs() < 1e-12, "{costs:?}");
        }
        assert_eq!(costs.len(), 3);
        // A parser resuming after earlier turns starts from their total.
        let mut resumed = StreamParser::resuming(1, 100, 0.0024);
        let events = feed_all(&mut resumed, &format!("{}\n", result(0.0030)));
        let Some(Event::Result(end)) = events.last() else {
            panic!("{events:?}")
        };
        assert!((end.result.cost_usd - 0.0006).abs() < 1e-12);
        assert_eq!(resumed.consumed(), 100 + result(0.0030).len() as u64 + 1);
    }

    #[test]
    fn unknown_types_and_malformed_lines_are_skipped_and_counted() {
        let before = crate::metrics::unknown_agent_events_total();
        let mut parser = StreamParser::new(9);
        let stream = format!(
            "{}\n{{not json\n{}\n{}\n",
            r#"{"type":"telemetry_v9","data":1}"#,
            r#"{"type":"assistant","message":{"content":[{"type":"hologram"},{"type":"text","text":"still here"}]}}"#,
            result(0.1)
        );
        let events = feed_all(&mut parser, &stream);
        assert_eq!(events.len(), 2, "{events:?}");
        assert_eq!(events[0], Event::Text("still here".into()));
        assert!(matches!(events[1], Event::Result(_)));
        // Other tests may count too: at least these two.
        assert!(crate::metrics::unknown_agent_events_total() >= before + 2);
    }

    #[test]
    fn system_lines_are_read_from_their_few_fields_whatever_else_they_carry() {
        let mut parser = StreamParser::new(3);
        let tools: Vec<String> = (0..200).map(|i| format!("\"Tool{i}\"")).collect();
        let init = format!(
            r#"{{"type":"system","subtype":"init","session_id":"s-9","model":"m","tools":[{}],"mcp_servers":[{{"name":"x","status":"ok"}}],"cwd":"/w\u00e9"}}"#,
            tools.join(",")
        );
        let stream = format!(
            "{init}\n{}\n{}\n{}\n",
            r#"{"type":"stream_event","event":{"type":"content_block_delta","delta":{"text":"x"}}}"#,
            r#"{"type":"system","subtype":7,"session_id":null}"#,
            r#"{"type":"system","subtype":"compact_boundary","session_id":"s-9"}"#,
        );
        let events = feed_all(&mut parser, &stream);
        assert_eq!(
            events,
            [
                Event::Init {
                    session_id: Some("s-9".into()),
                    model: Some("m".into())
                },
                Event::System {
                    subtype: String::new()
                },
                Event::System {
                    subtype: "compact_boundary".into()
                },
            ]
        );
        assert_eq!(parser.session_id(), Some("s-9"));
    }

    #[test]
    fn an_overlong_line_is_skipped_without_being_held() {
        let mut parser = StreamParser::new(1);
        let huge = vec![b'x'; MAX_LINE_BYTES + 10];
        assert!(parser.feed(&huge).is_empty());
        assert!(parser.partial.is_empty());
        assert!(parser.feed(b"still the long line").is_empty());
        let tail = format!("\n{}\n", result(0.2));
        let events = parser.feed(tail.as_bytes());
        assert_eq!(events.len(), 1);
        let total = huge.len() + "still the long line".len() + tail.len();
        assert_eq!(parser.consumed(), total as u64);
    }

    #[test]
    fn summaries_pick_the_main_argument_and_stay_short() {
        let call = |name: &str, input: Value| ToolCall {
            id: "x".into(),
            name: name.into(),
            input,
        };
        let edit = call(
            "Edit",
            serde_json::json!({"file_path": "src/lib.rs", "old_string": "a"}),
        );
        assert_eq!(edit.summary(), "Edit: src/lib.rs");
        assert_eq!(
            call("Grep", serde_json::json!({"pattern": "fn main"})).summary(),
            "Grep: fn main"
        );
        assert_eq!(
            call("TodoWrite", serde_json::json!({})).summary(),
            "TodoWrite"
        );
        let long = call("Bash", serde_json::json!({"command": "x".repeat(500)})).summary();
        assert_eq!(long.chars().count(), MAX_SUMMARY_CHARS);
        assert!(long.ends_with('…'));
    }

    proptest! {
        /// However the output is cut into pieces, the same events come out, and
        /// `consumed` ends at the end of the last complete line.
        #[test]
        fn events_do_not_depend_on_how_the_output_is_cut(cuts in proptest::collection::vec(0usize..2000, 0..12)) {
            let stream = format!("{INIT}\n{TOOL}\n\n{TOOL_RESULT}\n{TEXT}\n{}\n{{\"type\":\"res", result(0.25));
            let mut whole = StreamParser::new(1);
            let expected = whole.feed(stream.as_bytes());
            let bytes = stream.as_bytes();
            let mut points: Vec<usize> = cuts.into_iter().map(|c| c % (bytes.len() + 1)).collect();
            points.sort_unstable();
            let mut parser = StreamParser::new(1);
            let mut events = Vec::new();
            let mut at = 0;
            for point in points.into_iter().chain([bytes.len()]) {
                events.extend(parser.feed(&bytes[at..point]));
                at = point;
            }
            prop_assert_eq!(&events, &expected);
            prop_assert_eq!(parser.consumed(), whole.consumed());
            prop_assert_eq!(parser.consumed() as usize, stream.rfind('\n').unwrap_or(0) + 1);
        }

        /// Arbitrary bytes never panic the parser.
        #[test]
        fn arbitrary_output_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
            let mut parser = StreamParser::new(1);
            let _ = parser.feed(&bytes);
            prop_assert!(parser.consumed() <= bytes.len() as u64);
        }
    }
}
