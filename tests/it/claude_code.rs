//! The service with the real Claude Code CLI as its agent (`kind = "claude"`),
//! talking to the test kit's scripted Messages API: the prompt goes in as a
//! stream-json message, the answer comes back from the CLI's event stream, through
//! the Telegram simulator. Skips (with how to install the CLI) where it is missing,
//! except in CI.

use std::path::Path;

use agentlab_testkit::claude::{claude_env, require_claude};
use agentlab_testkit::model::{ModelSim, Reply};

use crate::harness::{Options, Service};

/// A service whose bot runs the real CLI against `model`, with `agent` added to
/// its `[bots.agent]` section.
async fn service_with_claude(
    binary: &Path,
    model: &ModelSim,
    agent: &str,
    limits: &str,
) -> Service {
    let home = tempfile::tempdir().expect("home").keep();
    let env = claude_env(&home, &model.base_url())
        .into_iter()
        .filter(|(name, _)| name != "PATH")
        .map(|(name, value)| (name, value.to_string_lossy().into_owned()))
        .collect();
    Service::start(Options {
        agent_toml: Some(format!("command = [\"{}\"]\n{agent}", binary.display())),
        extra_env: env,
        limits_toml: limits.to_owned(),
        ..Options::default()
    })
    .await
}

/// The bot's tasks, oldest first.
async fn tasks(service: &Service) -> Vec<serde_json::Value> {
    let (status, body) = service.get("/api/tasks?limit=100").await;
    assert_eq!(status, 200, "{body}");
    let mut tasks = body.as_array().cloned().unwrap_or_default();
    tasks.sort_by_key(|t| t["id"].as_u64());
    tasks
}

#[tokio::test(flavor = "multi_thread")]
#[cfg_attr(
    missing_tool = "claude",
    ignore = "the pinned Claude Code CLI is not installed: see .ci/run (npm install --prefix .tools/claude-code)"
)]
async fn a_prompt_is_answered_by_the_real_claude_code() {
    let Some(binary) = require_claude("a_prompt_is_answered_by_the_real_claude_code") else {
        return;
    };
    let model = ModelSim::start().await.expect("model");
    model.push(Reply::text("Hello from the scripted model."));
    let service = service_with_claude(&binary, &model, "", "").await;

    service.send(0, 111, "say hello");
    service
        .wait_for_message(0, 111, |m| m.contains("Hello from the scripted model."))
        .await;
    let task = &tasks(&service).await[0];
    assert!(task["session_id"].is_string(), "{task}");
    assert!(task["cost_usd"].as_f64().unwrap_or(0.0) > 0.0, "{task}");
    let shown = model.agent_requests()[0].user_texts();
    assert!(shown.iter().any(|t| t == "say hello"), "{shown:?}");
}

#[tokio::test(flavor = "multi_thread")]
#[cfg_attr(
    missing_tool = "claude",
    ignore = "the pinned Claude Code CLI is not installed: see .ci/run (npm install --prefix .tools/claude-code)"
)]
async fn an_allowed_bash_call_runs_in_the_workdir_before_the_answer() {
    let Some(binary) = require_claude("an_allowed_bash_call_runs_in_the_workdir") else {
        return;
    };
    let model = ModelSim::start().await.expect("model");
    model.push(Reply::bash("echo from-bash > made-by-agent.txt"));
    model.push(Reply::text("Wrote made-by-agent.txt."));
    let service = service_with_claude(&binary, &model, "allowed_tools = [\"Bash\"]", "").await;

    service.send(0, 111, "write the file");
    service
        .wait_for_message(0, 111, |m| m.contains("Wrote made-by-agent.txt."))
        .await;
    // The bot's workdir is the service's temporary root.
    let written = std::fs::read_to_string(service.dir.path().join("made-by-agent.txt"));
    assert_eq!(written.expect("the tool ran"), "from-bash\n");
}

#[tokio::test(flavor = "multi_thread")]
#[cfg_attr(
    missing_tool = "claude",
    ignore = "the pinned Claude Code CLI is not installed: see .ci/run (npm install --prefix .tools/claude-code)"
)]
async fn the_next_prompt_continues_the_same_conversation() {
    let Some(binary) = require_claude("the_next_prompt_continues_the_same_conversation") else {
        return;
    };
    let model = ModelSim::start().await.expect("model");
    model.push(Reply::text("Noted: blue."));
    model.push(Reply::text("You said blue."));
    let service = service_with_claude(&binary, &model, "", "").await;

    service.send(0, 111, "my colour is blue");
    service
        .wait_for_message(0, 111, |m| m.contains("Noted: blue."))
        .await;
    service.send(0, 111, "which colour?");
    service
        .wait_for_message(0, 111, |m| m.contains("You said blue."))
        .await;
    // The second prompt's process was resumed: the model saw the first turn.
    let second = model.agent_requests().pop().expect("a request");
    let shown = second.user_texts();
    assert!(shown.iter().any(|t| t == "my colour is blue"), "{shown:?}");
    let tasks = tasks(&service).await;
    assert_eq!(tasks.len(), 2);
    assert_eq!(tasks[0]["session_id"], tasks[1]["session_id"]);
}

#[tokio::test(flavor = "multi_thread")]
#[cfg_attr(
    missing_tool = "claude",
    ignore = "the pinned Claude Code CLI is not installed: see .ci/run (npm install --prefix .tools/claude-code)"
)]
async fn a_model_api_error_fails_the_task_with_the_clis_message_and_counts_on_the_breaker() {
    let Some(binary) = require_claude("a_model_api_error_fails_the_task") else {
        return;
    };
    let model = ModelSim::start().await.expect("model");
    model.push(Reply::error(500, "api_error", "Internal server error"));
    let service = service_with_claude(&binary, &model, "", "max_attempts = 1").await;

    service.send(0, 111, "hello");
    service
        .wait_for_message(0, 111, |m| m.contains("API Error: 500"))
        .await;
    let task = &tasks(&service).await[0];
    let id = task["id"].as_u64().expect("id");
    let task = service.wait_task_done(id).await;
    assert_eq!(task["status"], "failed", "{task}");
    assert_eq!(task["error_class"], "agent_error", "{task}");
    let (status, circuit) = service.get("/api/bot/BOT-001/circuit-status").await;
    assert_eq!(status, 200);
    assert!(
        circuit.to_string().contains("\"failure_count\":1"),
        "{circuit}"
    );
}
