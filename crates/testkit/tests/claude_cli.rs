//! The facts agentlab relies on about Claude Code's stream-json protocol
//! (docs/claude-code-protocol.md), checked against the real, pinned CLI talking to
//! the scripted model stand-in. When the pin moves, these say what changed.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use agentlab_testkit::claude::{CLAUDE_CODE_VERSION, claude_env, require_claude};
use agentlab_testkit::model::{ModelSim, Reply};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

/// How long one turn may take on a busy two-core machine.
const TURN_PATIENCE: Duration = Duration::from_secs(90);

/// One CLI process in stream-json mode, in its own working directory and home.
struct Cli {
    child: Child,
    stdin: ChildStdin,
    stdout: Lines<BufReader<ChildStdout>>,
    _dirs: tempfile::TempDir,
    workdir: PathBuf,
}

impl Cli {
    async fn start(binary: &Path, model: &ModelSim, flags: &[&str]) -> Cli {
        let dirs = tempfile::tempdir().expect("temp dir");
        let workdir = dirs.path().join("work");
        let home = dirs.path().join("home");
        std::fs::create_dir_all(&workdir).expect("workdir");
        std::fs::create_dir_all(&home).expect("home");
        Cli::start_in(binary, model, flags, dirs, workdir, &home).await
    }

    async fn start_in(
        binary: &Path,
        model: &ModelSim,
        flags: &[&str],
        dirs: tempfile::TempDir,
        workdir: PathBuf,
        home: &Path,
    ) -> Cli {
        let mut command = Command::new(binary);
        command
            .args(["-p", "--verbose", "--input-format", "stream-json"])
            .args(["--output-format", "stream-json"])
            .args(flags)
            .env_clear()
            .envs(claude_env(home, &model.base_url()))
            .current_dir(&workdir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        let mut child = command.spawn().expect("the CLI starts");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = BufReader::new(child.stdout.take().expect("stdout")).lines();
        Cli {
            child,
            stdin,
            stdout,
            _dirs: dirs,
            workdir,
        }
    }

    async fn send(&mut self, message: Value) {
        let mut line = message.to_string();
        line.push('\n');
        self.stdin.write_all(line.as_bytes()).await.expect("write");
        self.stdin.flush().await.expect("flush");
    }

    async fn prompt(&mut self, text: &str) {
        self.send(json!({"type": "user", "message": {"role": "user", "content": text}}))
            .await;
    }

    /// The next event; panics at end of output or after the patience.
    async fn next_event(&mut self) -> Value {
        let line = tokio::time::timeout(TURN_PATIENCE, self.stdout.next_line())
            .await
            .expect("the CLI answered in time")
            .expect("stdout readable")
            .expect("the CLI is still running");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
    }

    /// Every event up to and including the turn's `result`.
    async fn turn(&mut self) -> Vec<Value> {
        let mut events = Vec::new();
        loop {
            let event = self.next_event().await;
            let done = event["type"] == "result";
            events.push(event);
            if done {
                return events;
            }
        }
    }

    async fn close(mut self) -> Option<i32> {
        drop(self.stdin);
        let status = tokio::time::timeout(TURN_PATIENCE, self.child.wait())
            .await
            .expect("the CLI exits after stdin closes")
            .expect("wait");
        status.code()
    }
}

fn result_of(events: &[Value]) -> &Value {
    events.last().expect("a result")
}

fn tool_uses(events: &[Value]) -> Vec<&Value> {
    events
        .iter()
        .filter(|e| e["type"] == "assistant")
        .flat_map(|e| e["message"]["content"].as_array().into_iter().flatten())
        .filter(|block| block["type"] == "tool_use")
        .collect()
}

#[tokio::test]
#[cfg_attr(
    missing_tool = "claude",
    ignore = "the pinned Claude Code CLI is not installed: see .ci/run (npm install --prefix .tools/claude-code)"
)]
async fn a_prompt_is_answered_with_init_then_result_in_one_session() {
    let Some(binary) = require_claude("a_prompt_is_answered") else {
        return;
    };
    let model = ModelSim::start().await.expect("model");
    model.push(Reply::text("Hello from the stand-in."));
    let mut cli = Cli::start(&binary, &model, &[]).await;
    cli.prompt("say hello").await;
    let events = cli.turn().await;

    let init = &events[0];
    assert_eq!(
        (&init["type"], &init["subtype"]),
        (&json!("system"), &json!("init"))
    );
    assert_eq!(init["claude_code_version"], CLAUDE_CODE_VERSION);
    let result = result_of(&events);
    assert_eq!(result["subtype"], "success");
    assert_eq!(result["is_error"], false);
    assert_eq!(result["result"], "Hello from the stand-in.");
    assert_eq!(result["session_id"], init["session_id"]);
    assert!(result["total_cost_usd"].as_f64().expect("cost") > 0.0);
    let asked = model.agent_requests();
    assert!(asked[0].user_texts().iter().any(|t| t == "say hello"));
    assert_eq!(cli.close().await, Some(0));
}

#[tokio::test]
#[cfg_attr(
    missing_tool = "claude",
    ignore = "the pinned Claude Code CLI is not installed: see .ci/run (npm install --prefix .tools/claude-code)"
)]
async fn an_allowed_bash_call_runs_in_the_working_directory() {
    let Some(binary) = require_claude("an_allowed_bash_call_runs") else {
        return;
    };
    let model = ModelSim::start().await.expect("model");
    model.push(Reply::bash("echo made-by-bash > made.txt"));
    model.push(Reply::text("The file is written."));
    let mut cli = Cli::start(&binary, &model, &["--allowedTools", "Bash"]).await;
    cli.prompt("write the file").await;
    let events = cli.turn().await;

    let calls = tool_uses(&events);
    assert_eq!(calls.len(), 1, "{events:#?}");
    assert_eq!(calls[0]["name"], "Bash");
    assert_eq!(calls[0]["input"]["command"], "echo made-by-bash > made.txt");
    let tool_result = events
        .iter()
        .find(|e| e["type"] == "user")
        .expect("a tool_result event");
    assert_eq!(tool_result["message"]["content"][0]["type"], "tool_result");
    assert_eq!(
        tool_result["message"]["content"][0]["tool_use_id"],
        calls[0]["id"]
    );
    assert_eq!(result_of(&events)["result"], "The file is written.");
    let written = std::fs::read_to_string(cli.workdir.join("made.txt")).expect("file on disk");
    assert_eq!(written, "made-by-bash\n");
}

#[tokio::test]
#[cfg_attr(
    missing_tool = "claude",
    ignore = "the pinned Claude Code CLI is not installed: see .ci/run (npm install --prefix .tools/claude-code)"
)]
async fn total_cost_is_cumulative_for_the_process() {
    let Some(binary) = require_claude("total_cost_is_cumulative") else {
        return;
    };
    let model = ModelSim::start().await.expect("model");
    model.push(Reply::text("one"));
    model.push(Reply::text("two"));
    model.push(Reply::text("three"));
    let mut cli = Cli::start(&binary, &model, &[]).await;
    let mut totals = Vec::new();
    let mut sessions = Vec::new();
    for prompt in ["first", "second", "third"] {
        cli.prompt(prompt).await;
        let events = cli.turn().await;
        let result = result_of(&events);
        totals.push(result["total_cost_usd"].as_f64().expect("cost"));
        sessions.push(result["session_id"].clone());
    }
    // Every answer has the same usage, so each prompt costs the same: the totals
    // grow by one prompt's cost each time.
    let one = totals[0];
    assert!(one > 0.0);
    for (i, total) in totals.iter().enumerate() {
        let expected = one * (i + 1) as f64;
        assert!((total - expected).abs() < 1e-9, "{totals:?}");
    }
    assert!(sessions.windows(2).all(|w| w[0] == w[1]), "{sessions:?}");
    // The third request shows the model both earlier prompts: one conversation.
    let third = &model.agent_requests()[2];
    let texts = third.user_texts();
    assert!(texts.iter().any(|t| t == "first") && texts.iter().any(|t| t == "second"));
}

#[tokio::test]
#[cfg_attr(
    missing_tool = "claude",
    ignore = "the pinned Claude Code CLI is not installed: see .ci/run (npm install --prefix .tools/claude-code)"
)]
async fn an_api_error_ends_the_turn_as_an_error_result_with_the_clis_message() {
    let Some(binary) = require_claude("an_api_error_ends_the_turn") else {
        return;
    };
    let model = ModelSim::start().await.expect("model");
    model.push(Reply::error(500, "api_error", "Internal server error"));
    let mut cli = Cli::start(&binary, &model, &[]).await;
    cli.prompt("hello").await;
    let events = cli.turn().await;
    let result = result_of(&events);
    assert_eq!(result["is_error"], true, "{result:#}");
    assert_eq!(result["api_error_status"], 500);
    let message = result["result"].as_str().expect("text");
    assert!(message.contains("500"), "{message}");
    assert_eq!(cli.close().await, Some(1));
}

#[tokio::test]
#[cfg_attr(
    missing_tool = "claude",
    ignore = "the pinned Claude Code CLI is not installed: see .ci/run (npm install --prefix .tools/claude-code)"
)]
async fn a_tool_that_needs_permission_is_asked_for_on_stdout_and_the_answer_obeyed() {
    let Some(binary) = require_claude("a_tool_that_needs_permission") else {
        return;
    };
    let model = ModelSim::start().await.expect("model");
    model.push(Reply::bash("touch allowed.txt"));
    model.push(Reply::text("Allowed and done."));
    model.push(Reply::bash("touch denied.txt"));
    model.push(Reply::text("I was told no."));
    let flags = ["--permission-prompt-tool", "stdio"];
    let mut cli = Cli::start(&binary, &model, &flags).await;

    for (prompt, allow) in [("allow this", true), ("deny this", false)] {
        cli.prompt(prompt).await;
        let request = loop {
            let event = cli.next_event().await;
            assert_ne!(event["type"], "result", "no approval was asked: {event:#}");
            if event["type"] == "control_request" {
                break event;
            }
        };
        let asked = &request["request"];
        assert_eq!(asked["subtype"], "can_use_tool");
        assert_eq!(asked["tool_name"], "Bash");
        assert!(asked["tool_use_id"].is_string());
        let answer = if allow {
            json!({"behavior": "allow", "updatedInput": asked["input"]})
        } else {
            json!({"behavior": "deny", "message": "not on my phone"})
        };
        cli.send(json!({"type": "control_response", "response": {
            "subtype": "success", "request_id": request["request_id"], "response": answer}}))
            .await;
        let events = cli.turn().await;
        assert_eq!(result_of(&events)["is_error"], false);
    }
    assert!(cli.workdir.join("allowed.txt").exists());
    assert!(!cli.workdir.join("denied.txt").exists());
    let told = model
        .agent_requests()
        .last()
        .expect("a request")
        .user_texts();
    assert!(
        told.iter().any(|t| t.contains("not on my phone")),
        "{told:?}"
    );
}

#[tokio::test]
#[cfg_attr(
    missing_tool = "claude",
    ignore = "the pinned Claude Code CLI is not installed: see .ci/run (npm install --prefix .tools/claude-code)"
)]
async fn resume_shows_the_model_the_earlier_turns_of_the_session() {
    let Some(binary) = require_claude("resume_shows_the_model") else {
        return;
    };
    let model = ModelSim::start().await.expect("model");
    model.push(Reply::text("Remembered: 42."));
    model.push(Reply::text("It was 42."));
    let dirs = tempfile::tempdir().expect("temp dir");
    let (workdir, home) = (dirs.path().join("work"), dirs.path().join("home"));
    std::fs::create_dir_all(&workdir).expect("workdir");
    std::fs::create_dir_all(&home).expect("home");
    let scratch = tempfile::tempdir().expect("temp dir");

    let mut first = Cli::start_in(&binary, &model, &[], scratch, workdir.clone(), &home).await;
    first.prompt("remember the number 42").await;
    let session = result_of(&first.turn().await)["session_id"].clone();
    assert_eq!(first.close().await, Some(0));

    let session_id = session.as_str().expect("session id").to_owned();
    let resume = ["--resume", session_id.as_str()];
    let mut second = Cli::start_in(&binary, &model, &resume, dirs, workdir, &home).await;
    second.prompt("what was the number?").await;
    let result = result_of(&second.turn().await).clone();
    assert_eq!(result["session_id"], session);
    let shown = model
        .agent_requests()
        .last()
        .expect("a request")
        .user_texts();
    assert!(
        shown.iter().any(|t| t == "remember the number 42"),
        "{shown:?}"
    );
    assert!(
        shown.iter().any(|t| t == "what was the number?"),
        "{shown:?}"
    );
}

#[tokio::test]
#[cfg_attr(
    missing_tool = "claude",
    ignore = "the pinned Claude Code CLI is not installed: see .ci/run (npm install --prefix .tools/claude-code)"
)]
async fn an_interrupt_ends_the_running_tool_and_the_session_answers_the_next_prompt() {
    let Some(binary) = require_claude("an_interrupt_ends_the_running_tool") else {
        return;
    };
    let model = ModelSim::start().await.expect("model");
    let slow = "python3 -c 'import time; time.sleep(60)' && touch finished.txt";
    model.push(Reply::bash(slow));
    model.push(Reply::text("Still here."));
    let mut cli = Cli::start(&binary, &model, &["--allowedTools", "Bash"]).await;
    cli.prompt("run the slow thing").await;
    loop {
        let event = cli.next_event().await;
        if !tool_uses(std::slice::from_ref(&event)).is_empty() {
            break;
        }
    }
    cli.send(json!({"type": "control_request", "request_id": "stop-1",
                    "request": {"subtype": "interrupt"}}))
        .await;
    let interrupted = cli.turn().await;
    assert_eq!(result_of(&interrupted)["subtype"], "error_during_execution");
    assert!(!cli.workdir.join("finished.txt").exists());

    cli.prompt("are you there?").await;
    let next = cli.turn().await;
    assert_eq!(result_of(&next)["result"], "Still here.");
    // The interrupt is acknowledged by request id, before or just after its result.
    let acknowledged = interrupted
        .iter()
        .chain(&next)
        .any(|e| e["type"] == "control_response" && e["response"]["request_id"] == "stop-1");
    assert!(acknowledged, "{interrupted:#?}");
}
