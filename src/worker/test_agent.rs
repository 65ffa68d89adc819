//! The built-in test agent: a stand-in for Claude Code whose behaviour the prompt
//! controls, run as the hidden `test-agent` subcommand of the agentlab binary.
//!
//! Tests use it as a real subprocess, and `agentlab demo` uses it as the agent, so
//! its ordinary answer is friendly: it echoes the prompt. It speaks Claude Code's
//! stream-json protocol when given its flags (`--input-format stream-json`: stdin
//! holds `{"type":"user",...}` messages, each answered as its own turn as soon as its
//! line is read, until stdin ends — so a process whose stdin stays open stays warm
//! for the next prompt; `--output-format stream-json`: each turn prints a
//! `system`/`init` event, the `assistant` tool calls with their `user` tool results,
//! an `assistant` text event and the `result`, one JSON object a line, with
//! `total_cost_usd` cumulative over the process's turns like the real CLI);
//! otherwise the prompt is the whole of stdin's text and the answer one JSON result
//! object. With `--resume ID` it continues session `ID`, otherwise it makes up a
//! fresh one. The exit code is the last turn's. A turn that leaves the agent broken
//! (`exit`, `bad-json`, `no-session`, raw `long` output) ends the process.
//!
//! Leading words of the prompt (case-insensitive, any number, e.g.
//! `sleep:2 cost:0.5 hello`) are directives; the rest is the message:
//!
//! | directive | behaviour |
//! |---|---|
//! | `sleep:N` | wait N seconds (fractions allowed), then go on |
//! | `fail` | answer "agent failed as asked" with `is_error: true`, exit 1 |
//! | `exit:N` | exit with code N, printing nothing on stdout |
//! | `hang` | never finish |
//! | `long:N` | answer with N bytes of text; above [`STREAM_THRESHOLD`] stream N raw bytes (not JSON) without holding them in memory |
//! | `cost:X` | report `total_cost_usd` X |
//! | `spawn-child` | start a grandchild (this agent with prompt `hang`) in the same process group, report its pid on stderr and in the answer |
//! | `bad-json` | print something that is not JSON |
//! | `ignore-term` | ignore SIGTERM (reported on stderr), then never finish |
//! | `crash` | abort (SIGABRT) |
//! | `stderr:TEXT` | print TEXT on stderr |
//! | `no-session` | when resuming (or continuing a session in a process kept open), fail like Claude Code with an unknown session id |
//! | `pwd` | answer with the working directory |
//! | `argv` | answer `argv:` and the arguments it was started with, space-separated, then the message on its own line |
//! | `env:NAME` | answer whether variable NAME is set (never its value) |
//! | `tool:NAME` | (stream-json output) first call tool NAME with the message as its main argument (`command` for Bash, `file_path` otherwise): a `tool_use` event and its `tool_result`, before any `sleep`; nothing is run |
//!
//! Usage counts: input tokens = prompt bytes / 4, output tokens = answer bytes / 4.

use std::io::{self, BufRead as _, Read as _, Write as _};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::json;

/// `long:N` above this many bytes streams raw, non-JSON output.
pub const STREAM_THRESHOLD: u64 = 256 * 1024;

/// What stderr says after `spawn-child`, followed by the grandchild's pid.
pub const GRANDCHILD_PID_NOTE: &str = "test-agent: grandchild pid ";

/// What stderr says once SIGTERM is ignored (after `ignore-term`).
pub const IGNORING_SIGTERM_NOTE: &str = "test-agent: ignoring SIGTERM";

/// The failure answer of `fail`.
pub const FAILED_AS_ASKED: &str = "agent failed as asked";

/// The arguments this process was started with, for `argv`.
static STARTED_WITH: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();

/// The text of a `long:N` answer, repeated and cut to N bytes.
const LONG_PATTERN: &[u8] = b"agentlab test agent long output line\n";

/// Runs the test agent with this process's arguments and stdio; returns the exit code.
pub fn run() -> i32 {
    run_with_args(std::env::args().skip(1))
}

/// Runs the test agent with this process's stdio and the given arguments (those a
/// real agent would get: `-p`, `--resume ID`, ...; others are ignored); returns the
/// exit code.
pub fn run_with_args(args: impl IntoIterator<Item = String>) -> i32 {
    let args: Vec<String> = args.into_iter().collect();
    let _ = STARTED_WITH.set(args.clone());
    let resume = flag_value(&args, "--resume");
    let protocol = Protocol {
        stream_json_in: flag_value(&args, "--input-format").as_deref() == Some("stream-json"),
        stream_json_out: flag_value(&args, "--output-format").as_deref() == Some("stream-json"),
    };
    let mut session = Session {
        id: resume.clone().unwrap_or_else(fresh_session_id),
        resumed: resume.is_some(),
        turns: 0,
        total_cost_usd: 0.0,
    };
    if protocol.stream_json_in {
        return answer_each_message(&mut session, protocol);
    }
    let started = Instant::now();
    let mut stdin = Vec::new();
    if let Err(error) = io::stdin().read_to_end(&mut stdin) {
        eprintln!("test-agent: cannot read the prompt from stdin: {error}");
        return 2;
    }
    let prompt = String::from_utf8_lossy(&stdin);
    turn(&mut session, &prompt, started, protocol)
}

/// One conversation: its id, and the cost of its turns so far in this process.
#[derive(Debug)]
struct Session {
    id: String,
    /// Started with `--resume`.
    resumed: bool,
    /// Turns answered so far by this process.
    turns: u32,
    total_cost_usd: f64,
}

/// Stream-json input: answers every user message as its line arrives, until stdin
/// ends; the exit code is the last turn's (2 when there was no user message).
fn answer_each_message(session: &mut Session, protocol: Protocol) -> i32 {
    let mut code = None;
    for line in io::stdin().lock().lines() {
        let line = match line {
            Ok(line) => line,
            Err(error) => {
                eprintln!("test-agent: cannot read stdin: {error}");
                return 2;
            }
        };
        let started = Instant::now();
        match prompt_of_message(&line) {
            Ok(Some(prompt)) => {
                let directives = Directives::parse(&prompt);
                let turn_code = turn(session, &prompt, started, protocol);
                if directives.ends_the_process() {
                    // A broken agent: it does not wait for another prompt.
                    return turn_code;
                }
                code = Some(turn_code);
                session.turns += 1;
            }
            Ok(None) => {}
            Err(error) => {
                eprintln!("test-agent: {error}");
                return 2;
            }
        }
    }
    code.unwrap_or_else(|| {
        eprintln!("test-agent: stdin holds no user message");
        2
    })
}

/// Answers one prompt; returns its exit code.
fn turn(session: &mut Session, prompt: &str, started: Instant, protocol: Protocol) -> i32 {
    let directives = Directives::parse(prompt);
    match act(&directives, session, prompt, started, protocol) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("test-agent: cannot write the answer: {error}");
            2
        }
    }
}

/// The value after `flag`, if any.
fn flag_value(args: &[String], flag: &str) -> Option<String> {
    let at = args.iter().position(|arg| arg == flag)?;
    args.get(at + 1).cloned()
}

/// Which sides speak Claude Code's stream-json.
#[derive(Debug, Clone, Copy, Default)]
struct Protocol {
    stream_json_in: bool,
    stream_json_out: bool,
}

/// The prompt of one line of stream-json input: the text of a user message,
/// `None` for other messages (control requests, blank lines).
fn prompt_of_message(line: &str) -> Result<Option<String>, String> {
    if line.trim().is_empty() {
        return Ok(None);
    }
    let message: serde_json::Value = serde_json::from_str(line)
        .map_err(|e| format!("stdin is not stream-json ({e}): {line}"))?;
    if message["type"] != "user" {
        return Ok(None);
    }
    match &message["message"]["content"] {
        serde_json::Value::String(text) => Ok(Some(text.clone())),
        serde_json::Value::Array(blocks) => Ok(Some(
            blocks
                .iter()
                .filter_map(|block| block["text"].as_str())
                .collect::<Vec<_>>()
                .join("\n"),
        )),
        _ => Err(format!("a user message without content: {line}")),
    }
}

/// The directives at the start of a prompt, and the message after them.
#[derive(Debug, Clone, Default, PartialEq)]
struct Directives {
    sleep: Option<Duration>,
    fail: bool,
    exit: Option<i32>,
    hang: bool,
    long: Option<u64>,
    cost: f64,
    spawn_child: bool,
    bad_json: bool,
    ignore_term: bool,
    crash: bool,
    stderr: Vec<String>,
    no_session: bool,
    pwd: bool,
    argv: bool,
    env: Vec<String>,
    tools: Vec<String>,
    message: String,
}

impl Directives {
    fn parse(prompt: &str) -> Self {
        let mut directives = Directives::default();
        let mut rest = prompt.trim_start();
        while let Some(word) = rest.split_whitespace().next() {
            if !directives.apply(word) {
                break;
            }
            rest = rest[word.len()..].trim_start();
        }
        directives.message = rest.trim_end().to_owned();
        directives
    }

    /// Applies `word` if it is a directive; false if it is the start of the message.
    fn apply(&mut self, word: &str) -> bool {
        let (name, value) = match word.split_once(':') {
            Some((name, value)) => (name.to_ascii_lowercase(), Some(value)),
            None => (word.to_ascii_lowercase(), None),
        };
        match (name.as_str(), value) {
            ("fail", None) => self.fail = true,
            ("hang", None) => self.hang = true,
            ("spawn-child", None) => self.spawn_child = true,
            ("bad-json", None) => self.bad_json = true,
            ("ignore-term", None) => self.ignore_term = true,
            ("crash", None) => self.crash = true,
            ("no-session", None) => self.no_session = true,
            ("pwd", None) => self.pwd = true,
            ("argv", None) => self.argv = true,
            ("sleep", Some(v)) => return set(&mut self.sleep, parse_seconds(v)),
            ("exit", Some(v)) => return set(&mut self.exit, v.parse().ok()),
            ("long", Some(v)) => return set(&mut self.long, v.parse().ok()),
            ("cost", Some(v)) => match v.parse::<f64>() {
                Ok(cost) if cost.is_finite() && cost >= 0.0 => self.cost = cost,
                _ => return false,
            },
            ("stderr", Some(text)) if !text.is_empty() => self.stderr.push(text.to_owned()),
            ("env", Some(name)) if !name.is_empty() => self.env.push(name.to_owned()),
            ("tool", Some(name)) if is_tool_name(name) => self.tools.push(name.to_owned()),
            _ => return false,
        }
        true
    }
}

impl Directives {
    /// Whether the turn leaves the agent broken (no protocol answer, or a lost
    /// session), so that it exits instead of waiting for the next prompt.
    fn ends_the_process(&self) -> bool {
        self.exit.is_some()
            || self.bad_json
            || self.no_session
            || self.long.is_some_and(|len| len > STREAM_THRESHOLD)
    }
}

/// Stores `value` if there is one; whether there was.
fn set<T>(slot: &mut Option<T>, value: Option<T>) -> bool {
    let parsed = value.is_some();
    if parsed {
        *slot = value;
    }
    parsed
}

/// A tool name as Claude Code spells them: an ASCII letter, then letters, digits
/// or `_`.
fn is_tool_name(name: &str) -> bool {
    name.bytes().next().is_some_and(|b| b.is_ascii_alphabetic())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

fn parse_seconds(value: &str) -> Option<Duration> {
    Duration::try_from_secs_f64(value.parse().ok()?).ok()
}

/// Does what the directives say; returns the exit code.
fn act(
    d: &Directives,
    session: &mut Session,
    prompt: &str,
    started: Instant,
    protocol: Protocol,
) -> io::Result<i32> {
    for text in &d.stderr {
        eprintln!("{text}");
    }
    if d.no_session && (session.resumed || session.turns > 0) {
        eprintln!("No conversation found with session ID: {}", session.id);
        return Ok(1);
    }
    if d.ignore_term {
        ignore_sigterm();
    }
    let grandchild = if d.spawn_child {
        Some(spawn_grandchild()?)
    } else {
        None
    };
    let mut init_printed = false;
    if protocol.stream_json_out && !d.tools.is_empty() {
        print_init(&session.id)?;
        init_printed = true;
        for (n, name) in d.tools.iter().enumerate() {
            print_tool_call(&session.id, &format!("toolu_test_{n}"), name, &d.message)?;
        }
    }
    if let Some(pause) = d.sleep {
        std::thread::sleep(pause);
    }
    if d.hang || d.ignore_term {
        hang();
    }
    if d.crash {
        std::process::abort();
    }
    if let Some(code) = d.exit {
        return Ok(code);
    }
    if protocol.stream_json_out && !init_printed {
        print_init(&session.id)?;
    }
    if d.bad_json {
        print_stdout(b"{\"type\":\"result\",\"result\": this is not JSON }}\n")?;
        return Ok(0);
    }
    if let Some(len) = d.long.filter(|len| *len > STREAM_THRESHOLD) {
        stream_long_output(len)?;
        return Ok(0);
    }
    let text = answer_text(d, grandchild);
    if protocol.stream_json_out {
        print_assistant_text(&session.id, &text)?;
    }
    session.total_cost_usd += d.cost;
    print_result(d, session, prompt, &text, started, grandchild)?;
    Ok(if d.fail { 1 } else { 0 })
}

fn answer_text(d: &Directives, grandchild: Option<u32>) -> String {
    let mut text = if d.fail {
        FAILED_AS_ASKED.to_owned()
    } else if let Some(len) = d.long {
        long_text(len)
    } else if d.pwd {
        std::env::current_dir().map_or_else(
            |e| format!("no working directory: {e}"),
            |dir| dir.display().to_string(),
        )
    } else if d.argv {
        let args = STARTED_WITH.get().map_or_else(String::new, |a| a.join(" "));
        format!("argv: {args}\n{}", d.message)
    } else if !d.env.is_empty() {
        env_report(&d.env)
    } else if d.message.is_empty() {
        "You sent an empty prompt. Send some text and I will echo it back.".to_owned()
    } else {
        format!(
            "You said: {}\n\n(This answer comes from agentlab's built-in test agent, which \
             echoes your prompt. Configure a real agent, such as Claude Code \
             (`[bots.agent] command = [\"claude\"]`), for real answers.)",
            d.message
        )
    };
    if let Some(pid) = grandchild {
        text.push_str(&format!("\n\ngrandchild pid: {pid}"));
    }
    text
}

/// One line per variable: `NAME is set` or `NAME is not set`.
fn env_report(names: &[String]) -> String {
    let line = |name: &String| {
        let state = if std::env::var_os(name).is_some() {
            "set"
        } else {
            "not set"
        };
        format!("{name} is {state}")
    };
    names.iter().map(line).collect::<Vec<_>>().join("\n")
}

fn long_text(len: u64) -> String {
    let len = usize::try_from(len).unwrap_or(usize::MAX);
    LONG_PATTERN
        .iter()
        .map(|b| char::from(*b))
        .cycle()
        .take(len)
        .collect()
}

/// The `system`/`init` event that opens a stream-json turn.
fn print_init(session_id: &str) -> io::Result<()> {
    let cwd = std::env::current_dir().map_or_else(|_| String::new(), |d| d.display().to_string());
    let init = json!({
        "type": "system", "subtype": "init", "session_id": session_id, "cwd": cwd,
        "model": "test-agent", "tools": ["Bash", "Read", "Edit", "Write"],
        "permissionMode": "default", "claude_code_version": "test-agent",
    });
    print_line(&init)
}

/// The answer as an `assistant` event with one text block.
fn print_assistant_text(session_id: &str, text: &str) -> io::Result<()> {
    let message = json!({
        "type": "assistant", "session_id": session_id, "parent_tool_use_id": null,
        "message": {"role": "assistant", "model": "test-agent",
                    "content": [{"type": "text", "text": text}]},
    });
    print_line(&message)
}

/// A tool call and its result, as the CLI prints them: an `assistant` event with a
/// `tool_use` block, then a `user` event with the `tool_result`.
fn print_tool_call(session_id: &str, id: &str, name: &str, argument: &str) -> io::Result<()> {
    let input = if name == "Bash" {
        json!({"command": argument, "description": "test agent tool call"})
    } else {
        json!({"file_path": argument})
    };
    print_line(&json!({
        "type": "assistant", "session_id": session_id, "parent_tool_use_id": null,
        "message": {"role": "assistant", "model": "test-agent",
                    "content": [{"type": "tool_use", "id": id, "name": name, "input": input}]},
    }))?;
    print_line(&json!({
        "type": "user", "session_id": session_id, "parent_tool_use_id": null,
        "message": {"role": "user", "content": [{"type": "tool_result", "tool_use_id": id,
                    "content": format!("{name} done (test agent: nothing was run)"),
                    "is_error": false}]},
    }))
}

fn print_line(value: &serde_json::Value) -> io::Result<()> {
    let mut line = value.to_string();
    line.push('\n');
    print_stdout(line.as_bytes())
}

fn print_result(
    d: &Directives,
    session: &Session,
    prompt: &str,
    text: &str,
    started: Instant,
    grandchild: Option<u32>,
) -> io::Result<()> {
    let mut result = json!({
        "type": "result",
        "subtype": if d.fail { "error_during_execution" } else { "success" },
        "is_error": d.fail,
        "duration_ms": u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        "duration_api_ms": 0,
        "num_turns": 1 + d.tools.len(),
        "result": text,
        "session_id": session.id,
        "total_cost_usd": session.total_cost_usd,
        "usage": {
            "input_tokens": prompt.len() / 4,
            "output_tokens": text.len() / 4,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
        },
    });
    if let Some(pid) = grandchild {
        result["grandchild_pid"] = json!(pid);
    }
    let mut line = result.to_string();
    line.push('\n');
    print_stdout(line.as_bytes())
}

fn fresh_session_id() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_nanos());
    format!("test-{}-{nanos}", std::process::id())
}

fn print_stdout(bytes: &[u8]) -> io::Result<()> {
    let mut stdout = io::stdout().lock();
    stdout.write_all(bytes)?;
    stdout.flush()
}

/// Writes `len` bytes of [`LONG_PATTERN`] through a fixed buffer.
fn stream_long_output(len: u64) -> io::Result<()> {
    let chunk: Vec<u8> = LONG_PATTERN
        .iter()
        .copied()
        .cycle()
        .take(64 * 1024)
        .collect();
    let mut stdout = io::stdout().lock();
    let mut left = len;
    while left > 0 {
        let n = usize::try_from(left).map_or(chunk.len(), |left| left.min(chunk.len()));
        stdout.write_all(&chunk[..n])?;
        left -= n as u64;
    }
    stdout.flush()
}

/// Starts this program again as a test agent told to hang, in our process group.
fn spawn_grandchild() -> io::Result<u32> {
    let exe = std::env::current_exe()?;
    let mut child = std::process::Command::new(exe)
        .arg("test-agent")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(b"hang")?;
    }
    let pid = child.id();
    eprintln!("{GRANDCHILD_PID_NOTE}{pid}");
    // Dropping the handle neither waits for nor kills the grandchild: it stays behind.
    Ok(pid)
}

fn ignore_sigterm() {
    // SAFETY: SIG_IGN installs no handler code, so no handler can run concurrently
    // with anything; this process has no other threads.
    unsafe {
        libc::signal(libc::SIGTERM, libc::SIG_IGN);
    }
    eprintln!("{IGNORING_SIGTERM_NOTE}");
}

fn hang() -> ! {
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn combined_directives_are_read_and_the_rest_is_the_message() {
        let d = Directives::parse("  SLEEP:0.5 cost:0.25 stderr:Boom hello  there\n");
        assert_eq!(d.sleep, Some(Duration::from_millis(500)));
        assert_eq!(d.cost, 0.25);
        assert_eq!(d.stderr, ["Boom"]);
        assert_eq!(d.message, "hello  there");
    }

    #[test]
    fn the_first_non_directive_word_ends_the_directives() {
        let d = Directives::parse("please fail now");
        assert!(!d.fail);
        assert_eq!(d.message, "please fail now");
    }

    #[test]
    fn malformed_values_are_message_text() {
        for prompt in [
            "sleep:soon x",
            "cost:-1 x",
            "exit:x x",
            "long: x",
            "stderr: x",
        ] {
            let d = Directives::parse(prompt);
            assert_eq!(
                d,
                Directives {
                    message: prompt.to_owned(),
                    ..Directives::default()
                }
            );
        }
    }

    #[test]
    fn resume_id_follows_the_flag() {
        let args = ["test-agent", "-p", "--resume", "abc"].map(String::from);
        assert_eq!(flag_value(&args, "--resume").as_deref(), Some("abc"));
        assert_eq!(flag_value(&["test-agent".to_owned()], "--resume"), None);
    }

    #[test]
    fn stream_json_lines_are_read_one_user_message_at_a_time() {
        let text = r#"{"type":"user","message":{"role":"user","content":"sleep:0 hello"}}"#;
        assert_eq!(prompt_of_message(text), Ok(Some("sleep:0 hello".into())));
        let blocks = r#"{"type":"user","message":{"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]}}"#;
        assert_eq!(prompt_of_message(blocks), Ok(Some("a\nb".into())));
        let interrupt =
            r#"{"type":"control_request","request_id":"x","request":{"subtype":"interrupt"}}"#;
        assert_eq!(prompt_of_message(interrupt), Ok(None));
        assert_eq!(prompt_of_message("  "), Ok(None));
        assert!(prompt_of_message("plain words").is_err());
    }

    #[test]
    fn tool_directives_name_tools_and_leave_the_message() {
        let d = Directives::parse("tool:Bash tool:Read sleep:0.1 cargo test");
        assert_eq!(d.tools, ["Bash", "Read"]);
        assert_eq!(d.message, "cargo test");
        assert_eq!(
            Directives::parse("tool:rm;x hi").tools,
            Vec::<String>::new()
        );
    }

    #[test]
    fn long_text_has_exactly_the_asked_length() {
        assert_eq!(long_text(1000).len(), 1000);
        assert_eq!(long_text(0), "");
    }

    #[test]
    fn ordinary_answer_echoes_the_message() {
        let d = Directives::parse("hello");
        assert!(answer_text(&d, None).starts_with("You said: hello\n"));
    }
}
