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
//! | `approve:NAME` | (stream-json) ask to use tool NAME with the message as its main argument, as Claude Code asks its controller, and report the decision in the answer (below) |
//!
//! `approve:NAME`, e.g. `approve:Bash touch done.txt`: the `tool_use` event is
//! followed, under `--permission-prompt-tool stdio` with stream-json input, by a
//! `control_request` (`subtype: "can_use_tool"`, `tool_name`, `input`,
//! `tool_use_id`, a `request_id`) exactly as the real CLI prints it; the agent then
//! reads stdin until the `control_response` with that request id (noting on stderr
//! when it arrived, [`RESPONSE_RECEIVED_NOTE`]). Allowed, it "runs" the tool
//! harmlessly: it appends `NAME: ARGUMENT` (from `updatedInput`) as a line to
//! [`RAN_FILE`] in its working directory — nothing is executed. Denied, the
//! `tool_result` is an error with the denial's message. Without an approver (no
//! `--permission-prompt-tool stdio`, or the prompt not on stream-json input) the
//! tool is denied at once, as Claude Code's print mode does, and the `result`
//! lists it in `permission_denials`. The answer says, per tool, what was decided.
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

/// What stderr says when a `control_response` arrives, followed by its request
/// id, a space and the arrival time (unix nanoseconds, `CLOCK_REALTIME`).
pub const RESPONSE_RECEIVED_NOTE: &str = "test-agent: control_response received ";

/// The file in the working directory where an allowed `approve:NAME` tool is
/// recorded, one `NAME: ARGUMENT` line per run.
pub const RAN_FILE: &str = "test-agent-ran.txt";

/// The denial's message when nobody can be asked, as Claude Code's print mode says it.
const NO_APPROVER_DENIAL: &str = "permission to use this tool was not granted (no approver)";

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
        approver: flag_value(&args, "--permission-prompt-tool").as_deref() == Some("stdio"),
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
    turn(
        &mut session,
        &prompt,
        started,
        protocol,
        &mut std::iter::empty(),
    )
}

/// The rest of stdin, line by line: where a turn waiting for an approval reads
/// its answer.
type Input<'a> = dyn Iterator<Item = io::Result<String>> + 'a;

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
    let mut lines = io::stdin().lock().lines();
    while let Some(line) = lines.next() {
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
                let turn_code = turn(session, &prompt, started, protocol, &mut lines);
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

/// Answers one prompt, reading the answers to its approval requests from
/// `input`; returns its exit code.
fn turn(
    session: &mut Session,
    prompt: &str,
    started: Instant,
    protocol: Protocol,
    input: &mut Input<'_>,
) -> i32 {
    let directives = Directives::parse(prompt);
    match act(&directives, session, prompt, started, protocol, input) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("test-agent: cannot answer: {error}");
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
    /// `--permission-prompt-tool stdio`: tools are asked for on stdout and
    /// answered on stdin.
    approver: bool,
}

impl Protocol {
    /// Whether a tool can be asked for: there is an approver, and stdin stays
    /// open for its answer.
    fn can_ask(self) -> bool {
        self.approver && self.stream_json_in && self.stream_json_out
    }
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
    approvals: Vec<String>,
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
            ("approve", Some(name)) if is_tool_name(name) => self.approvals.push(name.to_owned()),
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
    input: &mut Input<'_>,
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
    let mut decisions = Vec::new();
    for (n, name) in d.approvals.iter().enumerate() {
        if protocol.stream_json_out && !init_printed {
            print_init(&session.id)?;
            init_printed = true;
        }
        let call = ToolUse {
            id: format!("toolu_approve_{}_{}_{n}", std::process::id(), session.turns),
            name: name.clone(),
            input: tool_input(name, &d.message),
        };
        let Some(decision) = ask_and_use(&session.id, &call, protocol, input)? else {
            eprintln!("test-agent: stdin ended while waiting for an approval");
            return Ok(1);
        };
        decisions.push((call, decision));
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
    let text = if decisions.is_empty() {
        answer_text(d, grandchild)
    } else {
        decisions_text(&decisions)
    };
    if protocol.stream_json_out {
        print_assistant_text(&session.id, &text)?;
    }
    session.total_cost_usd += d.cost;
    let turn = TurnSummary {
        prompt,
        text: &text,
        started,
        grandchild,
        decisions: &decisions,
    };
    print_result(d, session, &turn)?;
    Ok(if d.fail { 1 } else { 0 })
}

/// A tool call the agent asks to make.
#[derive(Debug, Clone, PartialEq)]
struct ToolUse {
    id: String,
    name: String,
    input: serde_json::Value,
}

/// What the approver said about a tool call.
#[derive(Debug, Clone, PartialEq)]
enum Decision {
    /// Allowed, with the input to use (`updatedInput`); what running it left.
    Allowed { ran: String },
    /// Denied, with the approver's message.
    Denied { message: String },
}

/// The input of tool `name` whose main argument is `argument`.
fn tool_input(name: &str, argument: &str) -> serde_json::Value {
    if name == "Bash" {
        json!({"command": argument, "description": "test agent tool call"})
    } else {
        json!({"file_path": argument})
    }
}

/// The main argument of a tool input: what [`tool_input`] put there.
fn main_argument(input: &serde_json::Value) -> String {
    ["command", "file_path"]
        .iter()
        .find_map(|key| input[*key].as_str())
        .map_or_else(|| input.to_string(), str::to_owned)
}

/// Calls a tool that needs permission: prints its `tool_use`, asks for it
/// (when there is an approver) and waits for the answer on `input`, uses it
/// if allowed and prints its `tool_result`. `None` when stdin ended first.
fn ask_and_use(
    session_id: &str,
    call: &ToolUse,
    protocol: Protocol,
    input: &mut Input<'_>,
) -> io::Result<Option<Decision>> {
    if protocol.stream_json_out {
        print_line(&json!({
            "type": "assistant", "session_id": session_id, "parent_tool_use_id": null,
            "message": {"role": "assistant", "model": "test-agent",
                "content": [{"type": "tool_use", "id": call.id, "name": call.name,
                             "input": call.input}]},
        }))?;
    }
    let decision = if protocol.can_ask() {
        let request_id = format!("req_{}", call.id);
        print_line(&json!({
            "type": "control_request", "request_id": request_id,
            "request": {"subtype": "can_use_tool", "tool_name": call.name,
                "display_name": call.name, "input": call.input,
                "description": "test agent tool call", "tool_use_id": call.id,
                "permission_suggestions": [{"type": "addRules", "behavior": "allow",
                    "rules": [{"toolName": call.name}], "destination": "session"}]},
        }))?;
        let Some(response) = wait_for_response(&request_id, input)? else {
            return Ok(None);
        };
        decide(call, &response, std::path::Path::new(RAN_FILE))?
    } else {
        Decision::Denied {
            message: NO_APPROVER_DENIAL.to_owned(),
        }
    };
    if protocol.stream_json_out {
        let (content, is_error) = match &decision {
            Decision::Allowed { ran } => (ran.clone(), false),
            Decision::Denied { message } => (message.clone(), true),
        };
        print_line(&json!({
            "type": "user", "session_id": session_id, "parent_tool_use_id": null,
            "message": {"role": "user", "content": [{"type": "tool_result",
                "tool_use_id": call.id, "content": content, "is_error": is_error}]},
        }))?;
    }
    Ok(Some(decision))
}

/// Reads stdin until the `control_response` answering `request_id`; returns its
/// `response` object (`None` when stdin ended first). Other lines are skipped.
fn wait_for_response(
    request_id: &str,
    input: &mut Input<'_>,
) -> io::Result<Option<serde_json::Value>> {
    for line in input {
        let line = line?;
        let Ok(message) = serde_json::from_str::<serde_json::Value>(&line) else {
            eprintln!("test-agent: skipping a line that is not JSON while waiting: {line}");
            continue;
        };
        let response = &message["response"];
        if message["type"] != "control_response" || response["request_id"] != request_id {
            continue;
        }
        eprintln!("{RESPONSE_RECEIVED_NOTE}{request_id} {}", unix_nanos());
        return Ok(Some(response.clone()));
    }
    Ok(None)
}

/// What a `control_response`'s `response` decides about `call`; an allowed tool
/// is "run" by recording it in `ran_file` ([`RAN_FILE`]).
fn decide(
    call: &ToolUse,
    response: &serde_json::Value,
    ran_file: &std::path::Path,
) -> io::Result<Decision> {
    let answer = &response["response"];
    if response["subtype"] != "success" {
        let error = response["error"].as_str().unwrap_or("no reason given");
        return Ok(Decision::Denied {
            message: format!("the approval failed: {error}"),
        });
    }
    if answer["behavior"] != "allow" {
        let message = answer["message"].as_str().unwrap_or("denied").to_owned();
        return Ok(Decision::Denied { message });
    }
    let used = match &answer["updatedInput"] {
        serde_json::Value::Null => &call.input,
        updated => updated,
    };
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(ran_file)?;
    writeln!(file, "{}: {}", call.name, main_argument(used))?;
    Ok(Decision::Allowed {
        ran: format!(
            "{} done (test agent: recorded in {RAN_FILE}, nothing was run)",
            call.name
        ),
    })
}

/// One line per decided tool call: what was decided, and for a denial why.
fn decisions_text(decisions: &[(ToolUse, Decision)]) -> String {
    decisions
        .iter()
        .map(|(call, decision)| {
            let argument = main_argument(&call.input);
            match decision {
                Decision::Allowed { .. } => {
                    format!(
                        "{} was allowed: {argument} (recorded in {RAN_FILE})",
                        call.name
                    )
                }
                Decision::Denied { message } => {
                    format!("{} was denied: {argument} ({message})", call.name)
                }
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn unix_nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_nanos())
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
    let input = tool_input(name, argument);
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

/// What a turn's `result` reports besides the directives and the session.
struct TurnSummary<'a> {
    prompt: &'a str,
    text: &'a str,
    started: Instant,
    grandchild: Option<u32>,
    decisions: &'a [(ToolUse, Decision)],
}

fn print_result(d: &Directives, session: &Session, turn: &TurnSummary<'_>) -> io::Result<()> {
    let TurnSummary {
        prompt,
        text,
        started,
        grandchild,
        decisions,
    } = *turn;
    let denials: Vec<serde_json::Value> = decisions
        .iter()
        .filter(|(_, decision)| matches!(decision, Decision::Denied { .. }))
        .map(|(call, _)| {
            json!({"tool_name": call.name, "tool_use_id": call.id, "tool_input": call.input})
        })
        .collect();
    let mut result = json!({
        "type": "result",
        "subtype": if d.fail { "error_during_execution" } else { "success" },
        "is_error": d.fail,
        "duration_ms": u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        "duration_api_ms": 0,
        "num_turns": 1 + d.tools.len() + decisions.len(),
        "result": text,
        "session_id": session.id,
        "total_cost_usd": session.total_cost_usd,
        "usage": {
            "input_tokens": prompt.len() / 4,
            "output_tokens": text.len() / 4,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
        },
        "permission_denials": denials,
    });
    if let Some(pid) = grandchild {
        result["grandchild_pid"] = json!(pid);
    }
    let mut line = result.to_string();
    line.push('\n');
    print_stdout(line.as_bytes())
}

fn fresh_session_id() -> String {
    format!("test-{}-{}", std::process::id(), unix_nanos())
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

    fn bash(command: &str) -> ToolUse {
        ToolUse {
            id: "toolu_1".into(),
            name: "Bash".into(),
            input: tool_input("Bash", command),
        }
    }

    #[test]
    fn approve_directives_name_tools_and_need_an_approver_on_stream_json() {
        let d = Directives::parse("approve:Bash touch x");
        assert_eq!(d.approvals, ["Bash"]);
        assert_eq!(d.message, "touch x");
        assert!(Directives::parse("approve:a;b x").approvals.is_empty());
        let full = Protocol {
            stream_json_in: true,
            stream_json_out: true,
            approver: true,
        };
        assert!(full.can_ask());
        assert!(
            !Protocol {
                approver: false,
                ..full
            }
            .can_ask()
        );
        assert!(
            !Protocol {
                stream_json_in: false,
                ..full
            }
            .can_ask()
        );
    }

    #[test]
    fn the_wait_skips_other_lines_until_its_own_response() {
        let lines = [
            r#"{"type":"control_response","response":{"subtype":"success","request_id":"other","response":{"behavior":"allow"}}}"#,
            "not json",
            r#"{"type":"control_response","response":{"subtype":"success","request_id":"mine","response":{"behavior":"deny","message":"no"}}}"#,
            r#"{"type":"user","message":{"content":"after"}}"#,
        ];
        let mut input = lines.iter().map(|l| Ok((*l).to_owned()));
        let response = wait_for_response("mine", &mut input).expect("read");
        assert_eq!(response.expect("found")["response"]["message"], json!("no"));
        assert_eq!(
            input.count(),
            1,
            "the next prompt is left for the next turn"
        );
        let mut ended = std::iter::empty();
        assert_eq!(wait_for_response("mine", &mut ended).expect("read"), None);
    }

    #[test]
    fn an_allowed_tool_is_recorded_with_the_updated_input_and_a_denied_one_is_not() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ran = dir.path().join(RAN_FILE);
        let allow = json!({"subtype": "success", "request_id": "r",
            "response": {"behavior": "allow", "updatedInput": {"command": "touch y"}}});
        let decision = decide(&bash("touch x"), &allow, &ran).expect("decide");
        assert!(matches!(decision, Decision::Allowed { .. }), "{decision:?}");
        assert_eq!(
            std::fs::read_to_string(&ran).expect("ran"),
            "Bash: touch y\n"
        );

        let deny = json!({"subtype": "success", "request_id": "r",
            "response": {"behavior": "deny", "message": "not today"}});
        let decision = decide(&bash("touch z"), &deny, &ran).expect("decide");
        assert_eq!(
            decision,
            Decision::Denied {
                message: "not today".into()
            }
        );
        let failed = json!({"subtype": "error", "request_id": "r", "error": "boom"});
        let decision = decide(&bash("touch z"), &failed, &ran).expect("decide");
        assert!(matches!(decision, Decision::Denied { .. }), "{decision:?}");
        assert_eq!(
            std::fs::read_to_string(&ran).expect("ran"),
            "Bash: touch y\n"
        );
        let text = decisions_text(&[
            (bash("touch y"), Decision::Allowed { ran: String::new() }),
            (
                bash("touch z"),
                Decision::Denied {
                    message: "not today".into(),
                },
            ),
        ]);
        assert_eq!(
            text,
            format!(
                "Bash was allowed: touch y (recorded in {RAN_FILE})\nBash was denied: touch z (not today)"
            )
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
