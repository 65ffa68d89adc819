//! The service with the real Claude Code CLI as its agent (`kind = "claude"`),
//! talking to the test kit's scripted Messages API: the prompt goes in as a
//! stream-json message, the answer comes back from the CLI's event stream, through
//! the Telegram simulator. Skips (with how to install the CLI) where it is missing,
//! except in CI.

use std::time::Duration;

use agentlab::worker::proc_identity;
use agentlab_testkit::claude::{require_claude, service_options};
use agentlab_testkit::model::{ModelSim, Reply};
use telegram_sim::SentKind;

use crate::harness::{Options, PATIENCE, Service, agent_of};

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
    let service = Service::start(service_options(&binary, &model, "")).await;

    service.send(0, 111, "say hello");
    service
        .wait_for_message(0, 111, |m| m.contains("Hello from the scripted model."))
        .await;
    let task = &service.tasks().await[0];
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
    let service = Service::start(service_options(
        &binary,
        &model,
        "allowed_tools = [\"Bash\"]",
    ))
    .await;

    service.send(0, 111, "write the file");
    service
        .wait_for_message(0, 111, |m| m.contains("Wrote made-by-agent.txt."))
        .await;
    // The bot's workdir is the service's temporary root.
    let written = std::fs::read_to_string(service.dir.path().join("made-by-agent.txt"));
    assert_eq!(written.expect("the tool ran"), "from-bash\n");
    // The tool call was shown in the progress message before the answer came.
    let sent = service.sent_to(0, 111);
    let answer_at = sent
        .iter()
        .find(|i| {
            i.kind == SentKind::Message
                && i.plain_text
                    .as_deref()
                    .is_some_and(|t| t.contains("Wrote made-by-agent.txt."))
        })
        .map(|i| i.seq)
        .expect("the answer");
    let shown = sent.iter().find(|i| {
        i.kind == SentKind::Edit
            && i.plain_text
                .as_deref()
                .is_some_and(|t| t.contains("Bash: echo from-bash > made-by-agent.txt"))
    });
    let shown = shown.unwrap_or_else(|| panic!("no progress edit with the Bash call: {sent:#?}"));
    assert!(shown.seq < answer_at, "{sent:#?}");
    let task = &service.tasks().await[0];
    let (_, task) = service.get(&format!("/api/tasks/{}", task["id"])).await;
    assert_eq!(
        task["steps"]["items"][0]["summary"], "Bash: echo from-bash > made-by-agent.txt",
        "{task}"
    );
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
    let service = Service::start(service_options(&binary, &model, "")).await;

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
    let tasks = service.tasks().await;
    assert_eq!(tasks.len(), 2);
    assert_eq!(tasks[0]["session_id"], tasks[1]["session_id"]);
    // Warm (the default): the same process answered both.
    assert_eq!(tasks[0]["pid"], tasks[1]["pid"]);
    assert!(proc_identity::is_alive(&agent_of(&tasks[1])));
}

#[tokio::test(flavor = "multi_thread")]
#[cfg_attr(
    missing_tool = "claude",
    ignore = "the pinned Claude Code CLI is not installed: see .ci/run (npm install --prefix .tools/claude-code)"
)]
async fn with_keep_warm_s_zero_the_next_prompt_resumes_the_conversation_in_a_new_process() {
    let Some(binary) = require_claude("keep_warm_s_zero_resumes") else {
        return;
    };
    let model = ModelSim::start().await.expect("model");
    model.push(Reply::text("Noted: green."));
    model.push(Reply::text("You said green."));
    let service = Service::start(service_options(&binary, &model, "keep_warm_s = 0")).await;

    service.send(0, 111, "my colour is green");
    service
        .wait_for_message(0, 111, |m| m.contains("Noted: green."))
        .await;
    service.send(0, 111, "which colour?");
    service
        .wait_for_message(0, 111, |m| m.contains("You said green."))
        .await;
    let second = model.agent_requests().pop().expect("a request");
    let shown = second.user_texts();
    assert!(shown.iter().any(|t| t == "my colour is green"), "{shown:?}");
    let tasks = service.tasks().await;
    assert_eq!(tasks[0]["session_id"], tasks[1]["session_id"]);
    assert_ne!(tasks[0]["pid"], tasks[1]["pid"]);
    assert!(!proc_identity::is_alive(&agent_of(&tasks[0])));
}

#[tokio::test(flavor = "multi_thread")]
#[cfg_attr(
    missing_tool = "claude",
    ignore = "the pinned Claude Code CLI is not installed: see .ci/run (npm install --prefix .tools/claude-code)"
)]
async fn each_of_three_warm_prompts_costs_its_own_turn_not_the_process_total() {
    let Some(binary) = require_claude("three_warm_prompts_cost") else {
        return;
    };
    let model = ModelSim::start().await.expect("model");
    for n in 1..=3 {
        model.push(Reply::text(format!("Answer {n}.")));
    }
    let service = Service::start(service_options(&binary, &model, "")).await;
    for n in 1..=3 {
        service.send(0, 111, &format!("prompt {n}"));
        let want = format!("Answer {n}.");
        service
            .wait_for_message(0, 111, |m| m.contains(&want))
            .await;
    }
    let tasks = service.tasks().await;
    assert_eq!(tasks.len(), 3);
    assert!(
        tasks.iter().all(|t| t["pid"] == tasks[0]["pid"]),
        "one warm process"
    );
    let costs: Vec<f64> = tasks
        .iter()
        .map(|t| t["cost_usd"].as_f64().unwrap_or(0.0))
        .collect();
    // Same usage every turn, and the later turns send a longer history: each turn
    // costs about the first's (cumulative totals would be 2x and 3x it).
    assert!(costs[0] > 0.0, "{costs:?}");
    for cost in &costs[1..] {
        assert!(*cost > 0.0 && *cost < costs[0] * 1.5, "{costs:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
#[cfg_attr(
    missing_tool = "claude",
    ignore = "the pinned Claude Code CLI is not installed: see .ci/run (npm install --prefix .tools/claude-code)"
)]
async fn an_overloaded_model_fails_the_task_with_the_clis_message_and_counts_on_the_breaker() {
    let Some(binary) = require_claude("an_overloaded_model_fails_the_task") else {
        return;
    };
    let model = ModelSim::start().await.expect("model");
    for _ in 0..4 {
        model.push(Reply::error(529, "overloaded_error", "Overloaded"));
    }
    let service = Service::start(Options {
        limits_toml: "max_attempts = 1".into(),
        ..service_options(&binary, &model, "")
    })
    .await;

    service.send(0, 111, "hello");
    let shown = service
        .wait_for_message(0, 111, |m| m.contains("failed"))
        .await;
    assert!(shown.to_lowercase().contains("overloaded"), "{shown}");
    let id = service.tasks().await[0]["id"].as_u64().expect("id");
    let task = service.wait_task_done(id).await;
    assert_eq!(task["status"], "failed", "{task}");
    assert_eq!(task["error_class"], "agent_error", "{task}");
    let (_, circuit) = service.get("/api/bot/BOT-001/circuit-status").await;
    assert!(
        circuit.to_string().contains("\"failure_count\":1"),
        "{circuit}"
    );
}

#[tokio::test(flavor = "multi_thread")]
#[cfg_attr(
    missing_tool = "claude",
    ignore = "the pinned Claude Code CLI is not installed: see .ci/run (npm install --prefix .tools/claude-code)"
)]
async fn the_cli_killed_mid_turn_is_retried_by_its_failure_class() {
    let Some(binary) = require_claude("the_cli_killed_mid_turn_is_retried") else {
        return;
    };
    let model = ModelSim::start().await.expect("model");
    // The first turn waits long enough to be killed in; the retry is answered.
    model.push_after(Duration::from_secs(20), Reply::text("Too late."));
    model.push(Reply::text("Answered on the second attempt."));
    let service = Service::start(service_options(&binary, &model, "")).await;

    service.send(0, 111, "hello");
    let id = wait_for_first_task(&service).await;
    let running = service.wait_running_with_pid(id).await;
    wait_for_agent_request(&model, 1).await;
    let cli = agent_of(&running);
    // SAFETY: signalling the CLI process this test's service started.
    unsafe { libc::kill(cli.pid as i32, libc::SIGKILL) };
    service
        .wait_for_message(0, 111, |m| m.contains("Answered on the second attempt."))
        .await;
    let task = service.wait_task_done(id).await;
    assert_eq!(task["status"], "succeeded", "{task}");
    assert_eq!(task["attempts"], 2, "{task}");
}

#[tokio::test(flavor = "multi_thread")]
#[cfg_attr(
    missing_tool = "claude",
    ignore = "the pinned Claude Code CLI is not installed: see .ci/run (npm install --prefix .tools/claude-code)"
)]
async fn a_turn_running_when_the_service_is_killed_is_answered_once_after_restart() {
    let Some(binary) = require_claude("service_killed_mid_turn") else {
        return;
    };
    let model = ModelSim::start().await.expect("model");
    model.push_after(
        Duration::from_secs(3),
        Reply::text("Answer after the crash."),
    );
    let mut service = Service::start(service_options(&binary, &model, "")).await;

    service.send(0, 111, "hello");
    let id = wait_for_first_task(&service).await;
    let running = service.wait_running_with_pid(id).await;
    wait_for_agent_request(&model, 1).await;
    service.kill9();
    assert!(proc_identity::is_alive(&agent_of(&running)));
    service.restart().await;
    service
        .wait_for_message(0, 111, |m| m.contains("Answer after the crash."))
        .await;
    let task = service.wait_task_done(id).await;
    assert_eq!(task["status"], "succeeded", "{task}");
    assert_eq!(task["attempts"], 1, "{task}");
    let answers = service
        .messages_to(0, 111)
        .into_iter()
        .filter(|m| m.contains("Answer after the crash."))
        .count();
    assert_eq!(answers, 1);
    assert_eq!(model.agent_requests().len(), 1, "the turn ran once");
}

/// The id of the bot's first task, once there is one.
async fn wait_for_first_task(service: &Service) -> u64 {
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        if let Some(id) = service.tasks().await.first().and_then(|t| t["id"].as_u64()) {
            return id;
        }
        assert!(std::time::Instant::now() < deadline, "no task was created");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the model stand-in got `n` agent-loop requests (the turn is under way).
async fn wait_for_agent_request(model: &ModelSim, n: usize) {
    let deadline = std::time::Instant::now() + PATIENCE;
    while model.agent_requests().len() < n {
        assert!(
            std::time::Instant::now() < deadline,
            "the CLI never asked the model"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
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
    let service = Service::start(Options {
        limits_toml: "max_attempts = 1".into(),
        ..service_options(&binary, &model, "")
    })
    .await;

    service.send(0, 111, "hello");
    service
        .wait_for_message(0, 111, |m| m.contains("API Error: 500"))
        .await;
    let task = &service.tasks().await[0];
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
