//! Tool approvals from the chat, with the real Claude Code CLI against the test
//! kit's scripted Messages API, through the Telegram simulator: the CLI asks
//! before a tool runs, the bot shows the request with buttons, a press answers it.
//! Skips (with how to install the CLI) where it is missing, except in CI.

use agentlab_testkit::claude::{require_claude, service_options};
use agentlab_testkit::model::{ModelSim, Reply};
use serde_json::{Value, json};
use telegram_sim::{SentItem, SentKind};

use crate::harness::{Options, Service, wait_until};

/// The task's user; 111 is the bot's admin, 333 an allowed user who is neither.
pub(crate) const USER: i64 = 222;
pub(crate) const ADMIN: i64 = 111;
const STRANGER: i64 = 333;

/// The approval messages (with buttons) sent to the user, oldest first.
pub(crate) fn approval_messages(service: &Service) -> Vec<SentItem> {
    service
        .sent_to(0, USER)
        .into_iter()
        .filter(|i| i.kind == SentKind::Message && i.reply_markup.is_some())
        .collect()
}

/// Waits for the `n`th approval message (1-based).
pub(crate) async fn wait_for_approval(service: &Service, n: usize) -> SentItem {
    wait_until("an approval message", || {
        approval_messages(service).into_iter().nth(n - 1)
    })
    .await
}

/// Waits until a pending approval's Telegram message is recorded. A kill before
/// that point rightly shows the request again after the restart (the service
/// cannot know Telegram took the first one), so the restart tests wait for it.
pub(crate) async fn wait_for_recorded_message(service: &Service) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (_, pending) = service.get("/api/approvals").await;
        let recorded = pending
            .as_array()
            .is_some_and(|all| all.iter().any(|a| a["message_id"].is_i64()));
        if recorded {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the approval's message was never recorded: {pending}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// `user` presses the button whose label ends with `label`; returns the text of
/// the press's answer.
pub(crate) async fn press(service: &Service, user: i64, item: &SentItem, label: &str) -> String {
    let (_, data) = item
        .buttons()
        .into_iter()
        .find(|(text, _)| text.ends_with(label))
        .unwrap_or_else(|| panic!("no {label} button: {:?}", item.buttons()));
    let message_id = item.message_id.expect("message id");
    service.press(0, user, USER, message_id, &data).await
}

/// The latest edit of a message, visible text.
pub(crate) fn edited_text(service: &Service, message_id: i32) -> Option<String> {
    service
        .sent_to(0, USER)
        .into_iter()
        .rfind(|i| i.kind == SentKind::Edit && i.message_id == Some(message_id))
        .and_then(|i| i.plain_text)
}

#[tokio::test(flavor = "multi_thread")]
#[cfg_attr(
    missing_tool = "claude",
    ignore = "the pinned Claude Code CLI is not installed: see .ci/run (npm install --prefix .tools/claude-code)"
)]
async fn an_allowed_bash_call_runs_once_and_only_the_user_or_an_admin_decides() {
    let Some(binary) = require_claude("approval_allow") else {
        return;
    };
    let model = ModelSim::start().await.expect("model");
    model.push(Reply::bash("echo approved > approved.txt"));
    model.push(Reply::text("Wrote approved.txt."));
    let service = Service::start(service_options(&binary, &model, "")).await;

    service.send(0, USER, "write the file");
    let asked = wait_for_approval(&service, 1).await;
    let shown = asked.text.clone().unwrap_or_default();
    assert!(
        shown.contains("<pre>echo approved &gt; approved.txt</pre>"),
        "{shown}"
    );
    let labels: Vec<String> = asked.buttons().into_iter().map(|(l, _)| l).collect();
    assert!(labels[0].ends_with("Allow"), "{labels:?}");
    assert!(labels[1].ends_with("Always allow Bash"), "{labels:?}");
    assert!(labels[2].ends_with("Deny"), "{labels:?}");
    assert!(asked.buttons().iter().all(|(_, data)| data.len() <= 64));

    let refused = press(&service, STRANGER, &asked, "Allow").await;
    assert!(refused.contains("Only the user who asked"), "{refused}");
    let dir = service.dir.path().to_path_buf();
    assert!(!dir.join("approved.txt").exists());
    assert_eq!(edited_text(&service, asked.message_id.expect("id")), None);

    let allowed = press(&service, ADMIN, &asked, "Allow").await;
    assert_eq!(allowed, "Allowed.");
    service
        .wait_for_message(0, USER, |m| m.contains("Wrote approved.txt."))
        .await;
    let written = std::fs::read_to_string(dir.join("approved.txt"));
    assert_eq!(written.expect("the command ran"), "approved\n");
    let message_id = asked.message_id.expect("id");
    let edited = wait_until("the decision shown", || edited_text(&service, message_id)).await;
    assert!(edited.contains("Allowed by"), "{edited}");
    let edit = service
        .sent_to(0, USER)
        .into_iter()
        .rfind(|i| i.kind == SentKind::Edit && i.message_id == Some(message_id))
        .expect("edit");
    assert_eq!(edit.reply_markup, None, "the buttons stay: {edit:?}");

    let again = press(&service, USER, &asked, "Deny").await;
    assert_eq!(again, "Already decided.");
    let answers = service
        .messages_to(0, USER)
        .into_iter()
        .filter(|m| m.contains("Wrote approved.txt."))
        .count();
    assert_eq!(answers, 1);
}

#[tokio::test(flavor = "multi_thread")]
#[cfg_attr(
    missing_tool = "claude",
    ignore = "the pinned Claude Code CLI is not installed: see .ci/run (npm install --prefix .tools/claude-code)"
)]
async fn a_denied_bash_call_does_not_run_and_the_agent_is_told() {
    let Some(binary) = require_claude("approval_deny") else {
        return;
    };
    let model = ModelSim::start().await.expect("model");
    model.push(Reply::bash("touch denied.txt"));
    model.push(Reply::text("I was told no."));
    let service = Service::start(service_options(&binary, &model, "")).await;

    service.send(0, USER, "touch the file");
    let asked = wait_for_approval(&service, 1).await;
    assert_eq!(press(&service, USER, &asked, "Deny").await, "Denied.");
    service
        .wait_for_message(0, USER, |m| m.contains("I was told no."))
        .await;
    assert!(!service.dir.path().join("denied.txt").exists());
    let told = model
        .agent_requests()
        .last()
        .expect("a request")
        .user_texts();
    assert!(told.iter().any(|t| t.contains("Denied by")), "{told:?}");
    let edited = edited_text(&service, asked.message_id.expect("id")).unwrap_or_default();
    assert!(edited.contains("Denied by"), "{edited}");
}

#[tokio::test(flavor = "multi_thread")]
#[cfg_attr(
    missing_tool = "claude",
    ignore = "the pinned Claude Code CLI is not installed: see .ci/run (npm install --prefix .tools/claude-code)"
)]
async fn always_allow_lasts_for_the_session_until_new() {
    let Some(binary) = require_claude("approval_always") else {
        return;
    };
    let model = ModelSim::start().await.expect("model");
    model.push(Reply::bash("echo 1 > one.txt"));
    model.push(Reply::text("First done."));
    model.push(Reply::bash("echo 2 > two.txt"));
    model.push(Reply::text("Second done."));
    model.push(Reply::bash("echo 3 > three.txt"));
    model.push(Reply::text("Third done."));
    let service = Service::start(service_options(&binary, &model, "")).await;
    let dir = service.dir.path().to_path_buf();

    service.send(0, USER, "first");
    let asked = wait_for_approval(&service, 1).await;
    let answer = press(&service, USER, &asked, "Always allow Bash").await;
    assert_eq!(answer, "Allowed for this session.");
    service
        .wait_for_message(0, USER, |m| m.contains("First done."))
        .await;
    service.send(0, USER, "second");
    service
        .wait_for_message(0, USER, |m| m.contains("Second done."))
        .await;
    assert!(dir.join("two.txt").exists());
    assert_eq!(
        approval_messages(&service).len(),
        1,
        "the second call asked"
    );
    // Answered by the session's decision, and recorded like any other, so a turn
    // followed again after a restart finds it answered.
    let (_, dashboard) = service.get("/api/dashboard").await;
    let recent = dashboard["approvals"]["recent"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(recent[0]["by"], "always allow", "{recent:#?}");
    assert_eq!(recent[0]["decision"], "allow", "{recent:#?}");
    let stored = reqwest::Client::new()
        .get(format!(
            "{}/api/admin/dump?table=approvals",
            service.base_url
        ))
        .bearer_auth(crate::harness::ADMIN_TOKEN)
        .send()
        .await
        .expect("dump")
        .text()
        .await
        .expect("text");
    let by_session = stored
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|row| row["verdict"]["by"] == "always allow")
        .count();
    assert_eq!(by_session, 1, "{stored}");

    service.send(0, USER, "/new");
    service.send(0, USER, "third");
    let asked_again = wait_for_approval(&service, 2).await;
    assert!(!dir.join("three.txt").exists());
    press(&service, USER, &asked_again, "Allow").await;
    service
        .wait_for_message(0, USER, |m| m.contains("Third done."))
        .await;
    assert!(dir.join("three.txt").exists());
}

#[tokio::test(flavor = "multi_thread")]
#[cfg_attr(
    missing_tool = "claude",
    ignore = "the pinned Claude Code CLI is not installed: see .ci/run (npm install --prefix .tools/claude-code)"
)]
async fn an_unanswered_request_is_denied_after_the_timeout() {
    let Some(binary) = require_claude("approval_timeout") else {
        return;
    };
    let model = ModelSim::start().await.expect("model");
    model.push(Reply::bash("touch late.txt"));
    model.push(Reply::text("Nobody answered me."));
    let service = Service::start(service_options(&binary, &model, "approval_timeout_s = 1")).await;

    service.send(0, USER, "touch it");
    let asked = wait_for_approval(&service, 1).await;
    service
        .wait_for_message(0, USER, |m| m.contains("Nobody answered me."))
        .await;
    assert!(!service.dir.path().join("late.txt").exists());
    let message_id = asked.message_id.expect("id");
    let edited = wait_until("the timeout shown", || edited_text(&service, message_id)).await;
    assert!(edited.contains("nobody answered in time"), "{edited}");
    let told = model
        .agent_requests()
        .last()
        .expect("a request")
        .user_texts();
    assert!(told.iter().any(|t| t.contains("within 1 s")), "{told:?}");
    assert_eq!(
        press(&service, USER, &asked, "Allow").await,
        "Already decided."
    );
}

/// Runs `agentlab --config <config> <args>` against the service; returns stdout.
async fn agentlab(service: &Service, args: &[&str]) -> String {
    let mut cmd = tokio::process::Command::new(crate::harness::binary());
    cmd.arg("--config")
        .arg(&service.config_path)
        .args(args)
        .env_remove("AGENTLAB_CONFIG");
    for (k, v) in service.env() {
        cmd.env(k, v);
    }
    let out = tokio::time::timeout(crate::harness::PATIENCE, cmd.output())
        .await
        .expect("the CLI answers in time")
        .expect("run the CLI");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "agentlab {args:?} failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// The pending approvals, by the HTTP API.
async fn pending(service: &Service) -> Vec<serde_json::Value> {
    let (status, body) = service.get("/api/approvals").await;
    assert_eq!(status, 200, "{body}");
    body.as_array().cloned().unwrap_or_default()
}

async fn wait_pending(service: &Service) -> serde_json::Value {
    let deadline = tokio::time::Instant::now() + crate::harness::PATIENCE;
    loop {
        if let Some(first) = pending(service).await.into_iter().next() {
            return first;
        }
        assert!(tokio::time::Instant::now() < deadline, "nothing pending");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
#[cfg_attr(
    missing_tool = "claude",
    ignore = "the pinned Claude Code CLI is not installed: see .ci/run (npm install --prefix .tools/claude-code)"
)]
async fn the_http_api_and_the_cli_decide_while_telegram_refuses_every_call() {
    let Some(binary) = require_claude("approval_http_cli") else {
        return;
    };
    let model = ModelSim::start().await.expect("model");
    model.push(Reply::bash("echo by-api > by-api.txt"));
    model.push(Reply::text("The API allowed it."));
    model.push(Reply::bash("echo by-cli > by-cli.txt"));
    model.push(Reply::text("The CLI denied it."));
    let service = Service::start(service_options(&binary, &model, "")).await;
    let token = service.tokens[0].clone();
    let refuse_all = telegram_sim::Fault::new(telegram_sim::FaultKind::ServerError { status: 502 })
        .times(1_000_000);
    service.sim.inject_fault(&token, refuse_all).expect("fault");
    let dir = service.dir.path().to_path_buf();

    let task = json!({"bot_id": "BOT-001", "user_id": USER, "chat_id": USER, "prompt": "via api"});
    let (status, created) = service.post("/api/tasks", task).await;
    assert_eq!(status, 201, "{created}");
    let asked = wait_pending(&service).await;
    assert_eq!(asked["tool"], "Bash", "{asked}");
    assert_eq!(asked["input"]["command"], "echo by-api > by-api.txt");
    let path = format!("/api/approvals/{}", asked["id"]);
    let (status, body) = service.post(&path, json!({"decision": "maybe"})).await;
    assert_eq!(status, 400, "{body}");
    assert!(pending(&service).await.len() == 1);
    let (status, decided) = service.post(&path, json!({"decision": "allow"})).await;
    assert_eq!(status, 200, "{decided}");
    assert_eq!(decided["decision"], "allow");
    assert_eq!(decided["decided_by"], "api");
    let (status, again) = service.post(&path, json!({"decision": "deny"})).await;
    assert_eq!(status, 409, "{again}");
    let (status, _) = service
        .post("/api/approvals/999999", json!({"decision": "allow"}))
        .await;
    assert_eq!(status, 404);
    let done = service
        .wait_task_done(created["id"].as_u64().expect("id"))
        .await;
    assert_eq!(done["result"], "The API allowed it.", "{done}");
    assert_eq!(
        std::fs::read_to_string(dir.join("by-api.txt")).expect("ran"),
        "by-api\n"
    );

    let task = json!({"bot_id": "BOT-001", "user_id": USER, "chat_id": USER, "prompt": "via cli"});
    let (_, created) = service.post("/api/tasks", task).await;
    let asked = wait_pending(&service).await;
    let listed = agentlab(&service, &["approvals"]).await;
    let id = asked["id"].to_string();
    assert!(
        listed.contains(&format!("#{id}")) && listed.contains("echo by-cli > by-cli.txt"),
        "{listed}"
    );
    let answered = agentlab(&service, &["approve", &id, "deny"]).await;
    assert!(answered.contains("deny"), "{answered}");
    let done = service
        .wait_task_done(created["id"].as_u64().expect("id"))
        .await;
    assert_eq!(done["result"], "The CLI denied it.", "{done}");
    assert!(!dir.join("by-cli.txt").exists());
    assert!(pending(&service).await.is_empty());
    assert_eq!(
        agentlab(&service, &["approvals"]).await.trim(),
        "no approvals are waiting"
    );

    // Each decision is an audit event: who, the tool, a digest, the decision.
    let resp = reqwest::Client::new()
        .get(format!("{}/api/admin/dump?table=events", service.base_url))
        .bearer_auth(crate::harness::ADMIN_TOKEN)
        .send()
        .await
        .expect("dump");
    let events: Vec<serde_json::Value> = resp
        .text()
        .await
        .expect("text")
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .filter(|e: &serde_json::Value| e["event"] == "approval")
        .collect();
    let decisions: Vec<(&str, &str)> = events
        .iter()
        .map(|e| {
            (
                e["decision"].as_str().unwrap_or(""),
                e["by"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        decisions,
        [("allow", "api"), ("deny", "cli")],
        "{events:#?}"
    );
    // The dashboard lists them too, newest first, and nothing pending.
    let (status, dashboard) = service.get("/api/dashboard").await;
    assert_eq!(status, 200, "{dashboard}");
    let approvals = &dashboard["approvals"];
    assert_eq!(approvals["pending"], 0, "{approvals}");
    let shown: Vec<&str> = approvals["recent"]
        .as_array()
        .expect("recent")
        .iter()
        .map(|e| e["decision"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(shown, ["deny", "allow"], "{approvals}");
    assert!(events.iter().all(|e| e["tool"] == "Bash"
        && e["input_sha256"].as_str().is_some_and(|d| d.len() == 64)
        && e["waited_s"].is_number()));
}

#[tokio::test(flavor = "multi_thread")]
#[cfg_attr(
    missing_tool = "claude",
    ignore = "the pinned Claude Code CLI is not installed: see .ci/run (npm install --prefix .tools/claude-code)"
)]
async fn after_a_kill_9_the_same_button_reaches_the_same_agent_and_the_answer_arrives_once() {
    let Some(binary) = require_claude("approval_kill9") else {
        return;
    };
    let model = ModelSim::start().await.expect("model");
    model.push(Reply::bash("echo survived > survived.txt"));
    model.push(Reply::text("Ran after the restart."));
    let mut service = Service::start(service_options(&binary, &model, "")).await;

    service.send(0, USER, "run it across a crash");
    let asked = wait_for_approval(&service, 1).await;
    let (_, tasks) = service.get("/api/tasks?limit=10").await;
    let agent_pid = tasks[0]["pid"].as_u64().expect("pid");
    wait_for_recorded_message(&service).await;
    service.kill9();
    service.restart().await;

    let answer = press(&service, USER, &asked, "Allow").await;
    assert_eq!(answer, "Allowed.");
    service
        .wait_for_message(0, USER, |m| m.contains("Ran after the restart."))
        .await;
    assert_eq!(
        std::fs::read_to_string(service.dir.path().join("survived.txt")).expect("ran"),
        "survived\n"
    );
    let (_, tasks) = service.get("/api/tasks?limit=10").await;
    assert_eq!(tasks[0]["pid"].as_u64(), Some(agent_pid), "{tasks}");
    assert_eq!(tasks[0]["attempts"], 1, "{tasks}");
    let answers = service
        .messages_to(0, USER)
        .into_iter()
        .filter(|m| m.contains("Ran after the restart."))
        .count();
    assert_eq!(answers, 1);
    // The request was shown once: the restart found it stored, not asked anew.
    assert_eq!(approval_messages(&service).len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
#[cfg_attr(
    missing_tool = "claude",
    ignore = "the pinned Claude Code CLI is not installed: see .ci/run (npm install --prefix .tools/claude-code)"
)]
async fn a_request_whose_agent_died_with_the_service_expires_and_the_task_runs_again() {
    let Some(binary) = require_claude("approval_agent_died") else {
        return;
    };
    let model = ModelSim::start().await.expect("model");
    model.push(Reply::bash("echo first > first.txt"));
    model.push(Reply::bash("echo second > second.txt"));
    model.push(Reply::text("Done on the second attempt."));
    let mut service = Service::start(service_options(&binary, &model, "")).await;

    service.send(0, USER, "survive this");
    let asked = wait_for_approval(&service, 1).await;
    let (_, tasks) = service.get("/api/tasks?limit=10").await;
    let agent = tasks[0]["pid"].as_u64().expect("pid");
    wait_for_recorded_message(&service).await;
    service.kill9();
    // The agent's group goes with it, as after a reboot.
    let group = -i32::try_from(agent).expect("pid");
    // SAFETY: kill(2) with a process group id; no memory is involved.
    unsafe { libc::kill(group, libc::SIGKILL) };
    service.restart().await;

    let message_id = asked.message_id.expect("id");
    let edited = wait_until("the expiry shown", || edited_text(&service, message_id)).await;
    assert!(edited.contains("Expired"), "{edited}");
    assert_eq!(
        press(&service, USER, &asked, "Allow").await,
        "Already decided."
    );
    let asked_again = wait_for_approval(&service, 2).await;
    press(&service, USER, &asked_again, "Allow").await;
    service
        .wait_for_message(0, USER, |m| m.contains("Done on the second attempt."))
        .await;
    assert!(!service.dir.path().join("first.txt").exists());
    assert!(service.dir.path().join("second.txt").exists());
}

#[tokio::test(flavor = "multi_thread")]
#[cfg_attr(
    missing_tool = "claude",
    ignore = "the pinned Claude Code CLI is not installed: see .ci/run (npm install --prefix .tools/claude-code)"
)]
async fn stop_interrupts_a_long_tool_call_and_the_session_stays_usable() {
    let Some(binary) = require_claude("stop_interrupts") else {
        return;
    };
    let model = ModelSim::start().await.expect("model");
    model.push(Reply::bash(
        "python3 -c 'import time; time.sleep(30)' && echo late > late.txt",
    ));
    model.push(Reply::text("Still here after the stop."));
    let service = Service::start(service_options(
        &binary,
        &model,
        "allowed_tools = [\"Bash\"]",
    ))
    .await;

    let (first, done) = stop_a_long_tool_call(&service).await;
    let id = first["id"].as_u64().expect("id");
    assert_eq!(done["attempts"], 1, "{done}");
    assert!(!service.dir.path().join("late.txt").exists());

    service.send(0, USER, "are you there?");
    service
        .wait_for_message(0, USER, |m| m.contains("Still here after the stop."))
        .await;
    let (_, tasks) = service.get("/api/tasks?limit=10").await;
    let next = tasks
        .as_array()
        .and_then(|t| t.iter().find(|t| t["id"].as_u64() != Some(id)).cloned())
        .expect("the next task");
    assert_eq!(next["pid"], first["pid"], "the same warm agent answered");
    assert_eq!(next["session_id"], done["session_id"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn mode_is_kept_per_user_shown_in_status_and_used_for_the_next_process() {
    let service = Service::start(Options::default()).await;
    service.send(0, USER, "/mode bypassPermissions");
    service
        .wait_for_message(0, USER, |m| m.contains("Only an admin"))
        .await;
    service.send(0, USER, "/mode yolo");
    service
        .wait_for_message(0, USER, |m| m.contains("not a permission mode"))
        .await;
    service.send(0, USER, "/mode plan");
    service
        .wait_for_message(0, USER, |m| m.starts_with("Permission mode: plan."))
        .await;
    service.send(0, USER, "/status");
    service
        .wait_for_message(0, USER, |m| m.contains("Permission mode: plan (yours"))
        .await;
    service.send(0, ADMIN, "/status");
    service
        .wait_for_message(0, ADMIN, |m| {
            m.contains("Permission mode: default (the bot's")
        })
        .await;
    service.send(0, ADMIN, "/mode bypassPermissions");
    service
        .wait_for_message(0, ADMIN, |m| {
            m.starts_with("Permission mode: bypassPermissions.")
        })
        .await;

    service.send(0, USER, "in plan mode");
    service
        .wait_for_message(0, USER, |m| {
            m.contains("in plan mode") && !m.contains("Queued")
        })
        .await;
    let (_, tasks) = service.get("/api/tasks?limit=10").await;
    let pid = tasks[0]["pid"].as_u64().expect("pid");
    // The warm agent stays open after answering: its command line shows the mode.
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).expect("the agent runs");
    let args: Vec<String> = cmdline
        .split(|b| *b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let at = args
        .iter()
        .position(|a| a == "--permission-mode")
        .unwrap_or_else(|| panic!("{args:?}"));
    assert_eq!(args[at + 1], "plan", "{args:?}");
    assert!(
        args.iter().any(|a| a == "--permission-prompt-tool"),
        "{args:?}"
    );
}

/// The processes whose parent is `pid` (read from `/proc/*/stat`).
fn children_of(pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let child: u32 = entry.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
            // `pid (comm) state ppid ...`; comm may hold spaces and parentheses.
            let after_comm = &stat[stat.rfind(')')? + 1..];
            let parent: u32 = after_comm.split_whitespace().nth(1)?.parse().ok()?;
            (parent == pid).then_some(child)
        })
        .collect()
}

/// Waits until the service runs no agent process: none of its children is left,
/// and none of the tasks' agents (an adopted one is not its child) is alive.
async fn wait_no_agent_left(service: &Service) {
    use agentlab::worker::proc_identity::is_alive;
    let pid = service.pid().expect("the service runs");
    let tasks = service.tasks().await;
    let agents: Vec<_> = tasks.iter().map(crate::harness::agent_of).collect();
    wait_until("no agent process left", || {
        (children_of(pid).is_empty() && !agents.iter().any(is_alive)).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
#[cfg_attr(
    missing_tool = "claude",
    ignore = "the pinned Claude Code CLI is not installed: see .ci/run (npm install --prefix .tools/claude-code)"
)]
async fn with_keep_warm_s_zero_every_prompt_asks_in_a_process_that_ends_with_its_turn() {
    let Some(binary) = require_claude("approval_keep_warm_zero") else {
        return;
    };
    let model = ModelSim::start().await.expect("model");
    model.push(Reply::bash("echo cold > cold.txt"));
    model.push(Reply::text("Wrote cold.txt."));
    model.push(Reply::bash("touch refused.txt"));
    model.push(Reply::text("I was told no."));
    let service = Service::start(service_options(&binary, &model, "keep_warm_s = 0")).await;
    let dir = service.dir.path().to_path_buf();

    service.send(0, USER, "write the file");
    let asked = wait_for_approval(&service, 1).await;
    let labels: Vec<String> = asked.buttons().into_iter().map(|(l, _)| l).collect();
    assert!(labels[0].ends_with("Allow"), "{labels:?}");
    assert!(labels[1].ends_with("Always allow Bash"), "{labels:?}");
    assert!(labels[2].ends_with("Deny"), "{labels:?}");
    assert!(!dir.join("cold.txt").exists(), "ran before the press");
    assert_eq!(press(&service, USER, &asked, "Allow").await, "Allowed.");
    service
        .wait_for_message(0, USER, |m| m.contains("Wrote cold.txt."))
        .await;
    let written = std::fs::read_to_string(dir.join("cold.txt"));
    assert_eq!(written.expect("the command ran"), "cold\n");
    wait_no_agent_left(&service).await;

    // Nothing was kept: the next prompt starts a process that asks again.
    service.send(0, USER, "touch another");
    let asked_again = wait_for_approval(&service, 2).await;
    assert_eq!(press(&service, USER, &asked_again, "Deny").await, "Denied.");
    service
        .wait_for_message(0, USER, |m| m.contains("I was told no."))
        .await;
    assert!(!dir.join("refused.txt").exists());
    wait_no_agent_left(&service).await;
    let tasks = service.tasks().await;
    assert_eq!(tasks.len(), 2, "{tasks:#?}");
    assert_ne!(tasks[0]["pid"], tasks[1]["pid"], "{tasks:#?}");
    assert_eq!(tasks[0]["session_id"], tasks[1]["session_id"], "{tasks:#?}");
    assert!(
        tasks.iter().all(|t| t["status"] == "succeeded"),
        "{tasks:#?}"
    );
}

/// The test agent's bot with `keep_warm_s = 0`.
async fn test_agent_service_not_kept_warm() -> Service {
    let agent = format!(
        "command = [{:?}, \"test-agent\"]\nkeep_warm_s = 0",
        crate::harness::binary()
    );
    Service::start(Options {
        agent_toml: Some(agent),
        ..Options::default()
    })
    .await
}

/// What the test agent recorded as run, in the bots' working directory.
pub(crate) fn test_agent_ran(service: &Service) -> Option<String> {
    let ran = service
        .dir
        .path()
        .join(agentlab::worker::test_agent::RAN_FILE);
    std::fs::read_to_string(ran).ok()
}

#[tokio::test(flavor = "multi_thread")]
async fn with_keep_warm_s_zero_the_test_agent_asks_every_time_and_keeps_no_process() {
    let service = test_agent_service_not_kept_warm().await;
    service.send(0, USER, "approve:Bash touch first.txt");
    let asked = wait_for_approval(&service, 1).await;
    assert_eq!(test_agent_ran(&service), None, "ran before the press");
    assert_eq!(press(&service, USER, &asked, "Allow").await, "Allowed.");
    service
        .wait_for_message(0, USER, |m| m.contains("Bash was allowed: touch first.txt"))
        .await;
    assert_eq!(
        test_agent_ran(&service).as_deref(),
        Some("Bash: touch first.txt\n")
    );
    // Ended with its turn, before the answer was sent.
    let first = crate::harness::agent_of(&service.tasks().await[0]);
    assert!(!agentlab::worker::proc_identity::is_alive(&first));
    wait_no_agent_left(&service).await;

    service.send(0, USER, "approve:Bash touch second.txt");
    let asked_again = wait_for_approval(&service, 2).await;
    assert_eq!(press(&service, USER, &asked_again, "Deny").await, "Denied.");
    service
        .wait_for_message(0, USER, |m| m.contains("Bash was denied: touch second.txt"))
        .await;
    assert_eq!(
        test_agent_ran(&service).as_deref(),
        Some("Bash: touch first.txt\n"),
        "the denied tool ran"
    );
    wait_no_agent_left(&service).await;
    let tasks = service.tasks().await;
    assert_ne!(tasks[0]["pid"], tasks[1]["pid"], "{tasks:#?}");
    assert_eq!(tasks[0]["session_id"], tasks[1]["session_id"], "{tasks:#?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn with_keep_warm_s_zero_a_kill_9_keeps_the_request_and_the_adopted_agent_ends_after_it() {
    let mut service = test_agent_service_not_kept_warm().await;
    allow_across_a_kill_9(&mut service, "across.txt").await;
    let tasks = service.tasks().await;
    assert_eq!(tasks.len(), 1, "{tasks:#?}");
    assert_eq!(tasks[0]["attempts"], 1, "the task ran again: {tasks:#?}");
    // The adopted agent is not kept for a next prompt either.
    wait_no_agent_left(&service).await;
    assert_eq!(approval_messages(&service).len(), 1, "shown again");
}

#[tokio::test(flavor = "multi_thread")]
#[cfg_attr(
    missing_tool = "claude",
    ignore = "the pinned Claude Code CLI is not installed: see .ci/run (npm install --prefix .tools/claude-code)"
)]
async fn with_keep_warm_s_zero_stop_interrupts_the_turn_and_the_next_prompt_resumes() {
    let Some(binary) = require_claude("stop_keep_warm_zero") else {
        return;
    };
    let model = ModelSim::start().await.expect("model");
    model.push(Reply::bash(
        "python3 -c 'import time; time.sleep(30)' && echo late > late.txt",
    ));
    model.push(Reply::text("Back after the stop."));
    let agent = "keep_warm_s = 0\nallowed_tools = [\"Bash\"]";
    let service = Service::start(service_options(&binary, &model, agent)).await;

    let (first, done) = stop_a_long_tool_call(&service).await;
    let id = first["id"].as_u64().expect("id");
    assert!(!service.dir.path().join("late.txt").exists());
    wait_no_agent_left(&service).await;

    service.send(0, USER, "are you there?");
    service
        .wait_for_message(0, USER, |m| m.contains("Back after the stop."))
        .await;
    let tasks = service.tasks().await;
    let next = tasks
        .iter()
        .find(|t| t["id"].as_u64() != Some(id))
        .expect("the next task");
    assert_ne!(next["pid"], first["pid"], "a process was kept: {tasks:#?}");
    assert_eq!(next["session_id"], done["session_id"], "{tasks:#?}");
    wait_no_agent_left(&service).await;
}

/// Sends a prompt whose Bash call sleeps 30 s (the model is scripted so), waits
/// until the progress message shows the call, then `/stop`s it; returns the
/// task as it ran and as it ended (cancelled).
async fn stop_a_long_tool_call(service: &Service) -> (Value, Value) {
    service.send(0, USER, "wait a long time");
    // The progress message shows the tool call once the CLI runs it.
    wait_until("the long tool call under way", || {
        service.sent_to(0, USER).into_iter().find(|i| {
            i.plain_text
                .as_deref()
                .is_some_and(|t| t.contains("time.sleep(30)"))
        })
    })
    .await;
    let (_, tasks) = service.get("/api/tasks?limit=10").await;
    let first = tasks[0].clone();
    service.send(0, USER, "/stop");
    service
        .wait_for_message(0, USER, |m| m.contains("Stopping task"))
        .await;
    let id = first["id"].as_u64().expect("id");
    let done = service.wait_task_done(id).await;
    assert_eq!(done["status"], "cancelled", "{done}");
    (first, done)
}

/// Sends `approve:Bash touch FILE` to the test agent, kill -9s the service once
/// the request is shown, restarts it and presses "Allow" on the same message:
/// the same agent runs the command once and its answer arrives.
pub(crate) async fn allow_across_a_kill_9(service: &mut Service, file: &str) {
    service.send(0, USER, &format!("approve:Bash touch {file}"));
    let asked = wait_for_approval(service, 1).await;
    wait_for_recorded_message(service).await;
    service.kill9();
    service.restart().await;

    assert_eq!(press(service, USER, &asked, "Allow").await, "Allowed.");
    service
        .wait_for_message(0, USER, |m| {
            m.contains(&format!("Bash was allowed: touch {file}"))
        })
        .await;
    assert_eq!(
        test_agent_ran(service).as_deref(),
        Some(format!("Bash: touch {file}\n").as_str()),
        "the same agent ran it once"
    );
}
