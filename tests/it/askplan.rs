//! The agent's questions (`AskUserQuestion`) and plans (`ExitPlanMode`) from the
//! chat and the HTTP API, with the real Claude Code CLI against the test kit's
//! scripted Messages API, through the Telegram simulator: the options are
//! buttons, the chosen labels reach the model, a plan is approved or sent back.
//! Skips (with how to install the CLI) where it is missing, except in CI.

use agentlab_testkit::claude::{require_claude, service_options};
use agentlab_testkit::model::{ModelSim, Reply};
use serde_json::{Value, json};
use telegram_sim::{SentItem, SentKind};

use crate::harness::{Service, wait_until};

/// The task's user; 333 is an allowed user who is not the bot's admin.
const USER: i64 = 222;
const STRANGER: i64 = 333;

/// A question request of two questions, the second multi-select.
fn two_questions() -> Reply {
    Reply::tool(
        "I need to know two things.",
        "AskUserQuestion",
        json!({"questions": [
            {"question": "Which color?", "header": "Color", "multiSelect": false,
             "options": [{"label": "Red", "description": "warm <and> bright"},
                         {"label": "Blue", "description": "cool"}]},
            {"question": "Which sizes?", "header": "Sizes", "multiSelect": true,
             "options": [{"label": "S", "description": "small"},
                         {"label": "M", "description": "medium"},
                         {"label": "L", "description": "large"}]},
        ]}),
    )
}

/// The messages with buttons sent to the user, oldest first.
fn asked(service: &Service) -> Vec<SentItem> {
    service
        .sent_to(0, USER)
        .into_iter()
        .filter(|i| i.kind == SentKind::Message && i.reply_markup.is_some())
        .collect()
}

async fn wait_for_asked(service: &Service, n: usize) -> SentItem {
    wait_until("a message with buttons", || {
        asked(service).into_iter().nth(n - 1)
    })
    .await
}

/// The latest version of a message: its last edit, or itself.
fn latest(service: &Service, message_id: i32) -> Option<SentItem> {
    service
        .sent_to(0, USER)
        .into_iter()
        .filter(|i| i.message_id == Some(message_id))
        .rfind(|i| i.kind == SentKind::Edit || i.kind == SentKind::Message)
}

/// Waits until the message shows a button labelled `label`.
async fn wait_for_button(service: &Service, message_id: i32, label: &str) -> SentItem {
    wait_until("the button shown", || {
        latest(service, message_id)
            .filter(|item| item.buttons().iter().any(|(text, _)| text == label))
    })
    .await
}

/// `user` presses the button labelled exactly `label` of the message's latest
/// version; returns the text of the press's answer.
async fn press(service: &Service, user: i64, message_id: i32, label: &str) -> String {
    let item = wait_for_button(service, message_id, label).await;
    let (_, data) = item
        .buttons()
        .into_iter()
        .find(|(text, _)| text == label)
        .unwrap_or_else(|| panic!("no {label} button: {:?}", item.buttons()));
    service.press(0, user, USER, message_id, &data).await
}

/// Every text the model was shown in its requests so far.
fn model_saw(model: &ModelSim) -> Vec<String> {
    model
        .agent_requests()
        .iter()
        .flat_map(|r| r.user_texts())
        .collect()
}

async fn pending(service: &Service) -> Vec<Value> {
    let (status, body) = service.get("/api/approvals").await;
    assert_eq!(status, 200, "{body}");
    body.as_array().cloned().unwrap_or_default()
}

async fn wait_pending(service: &Service, what: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + crate::harness::PATIENCE;
    loop {
        if let Some(found) = pending(service).await.into_iter().find(|a| what(a)) {
            return found;
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
async fn questions_are_answered_by_buttons_and_the_model_sees_the_chosen_labels() {
    let Some(binary) = require_claude("ask_buttons") else {
        return;
    };
    let model = ModelSim::start().await.expect("model");
    model.push(two_questions());
    model.push(Reply::text("Blue it is, in S and M."));
    let service = Service::start(service_options(&binary, &model, "")).await;

    service.send(0, USER, "paint it");
    let shown = wait_for_asked(&service, 1).await;
    let id = shown.message_id.expect("id");
    let html = shown.text.clone().unwrap_or_default();
    assert!(html.contains("<b>Color</b>: Which color?"), "{html}");
    assert!(
        html.contains("<b>Red</b> — warm &lt;and&gt; bright"),
        "{html}"
    );
    assert!(html.contains("Which sizes?"), "{html}");
    let labels: Vec<String> = shown.buttons().into_iter().map(|(l, _)| l).collect();
    assert_eq!(labels, ["Red", "Blue", "⛔ Deny"]);
    assert!(shown.buttons().iter().all(|(_, data)| data.len() <= 64));

    let refused = press(&service, STRANGER, id, "Blue").await;
    assert!(refused.contains("Only the user who asked"), "{refused}");
    assert_eq!(press(&service, USER, id, "Blue").await, "Noted.");
    // The message moves on to the second question, a multi-select one.
    let next = wait_for_button(&service, id, "✔ Done").await;
    let labels: Vec<String> = next.buttons().into_iter().map(|(l, _)| l).collect();
    assert_eq!(labels, ["☐ S", "☐ M", "☐ L", "✔ Done", "⛔ Deny"]);
    assert!(
        next.text
            .as_deref()
            .unwrap_or_default()
            .contains("→ <i>Blue</i>"),
        "{next:?}"
    );
    assert_eq!(
        press(&service, USER, id, "✔ Done").await,
        "Choose at least one option first."
    );
    assert_eq!(press(&service, USER, id, "☐ S").await, "Noted.");
    assert_eq!(press(&service, USER, id, "☐ M").await, "Noted.");
    assert_eq!(press(&service, USER, id, "☐ L").await, "Noted.");
    assert_eq!(press(&service, USER, id, "☑ L").await, "Noted.");
    assert!(!model_saw(&model).iter().any(|t| t.contains("Which color?")));
    assert_eq!(press(&service, USER, id, "✔ Done").await, "Answered.");

    service
        .wait_for_message(0, USER, |m| m.contains("Blue it is, in S and M."))
        .await;
    let saw = model_saw(&model);
    assert!(
        saw.iter()
            .any(|t| t.contains(r#""Which color?"="Blue""#)
                && t.contains(r#""Which sizes?"="S, M""#)),
        "{saw:?}"
    );
    let decided = wait_until("the answer shown", || {
        latest(&service, id).filter(|i| i.reply_markup.is_none() && i.kind == SentKind::Edit)
    })
    .await;
    let text = decided.plain_text.unwrap_or_default();
    assert!(text.contains("Answered by"), "{text}");
    assert_eq!(press_stale(&service, &shown).await, "Already decided.");

    // The decision is in the observability API's audit, with the answers.
    let (status, audit) = service.get("/api/observability/approvals?limit=5").await;
    assert_eq!(status, 200, "{audit}");
    let last = &audit["decisions"][0];
    assert_eq!(last["event"], "approval", "{audit}");
    assert_eq!(last["tool"], "AskUserQuestion", "{audit}");
    assert_eq!(last["kind"], "question", "{audit}");
    assert_eq!(last["decision"], "allow", "{audit}");
    assert_eq!(last["by_user"], USER, "{audit}");
    assert_eq!(
        last["answers"],
        json!({"Which color?": "Blue", "Which sizes?": "S, M"})
    );
    assert!(last["input_sha256"].as_str().is_some_and(|d| d.len() == 64));
    assert!(last["waited_s"].is_number());
}

#[tokio::test(flavor = "multi_thread")]
#[cfg_attr(
    missing_tool = "claude",
    ignore = "the pinned Claude Code CLI is not installed: see .ci/run (npm install --prefix .tools/claude-code)"
)]
async fn a_question_answered_in_part_survives_a_kill_9_and_is_finished_after_the_restart() {
    let Some(binary) = require_claude("ask_kill9") else {
        return;
    };
    let model = ModelSim::start().await.expect("model");
    model.push(two_questions());
    model.push(Reply::text("Answered across a restart."));
    let mut service = Service::start(service_options(&binary, &model, "")).await;

    service.send(0, USER, "ask me across a crash");
    let shown = wait_for_asked(&service, 1).await;
    let id = shown.message_id.expect("id");
    assert_eq!(press(&service, USER, id, "Red").await, "Noted.");
    assert_eq!(press(&service, USER, id, "☐ L").await, "Noted.");
    service.kill9();
    service.restart().await;

    // The choices made before the restart are kept: the second question's
    // toggle is still on, and confirming it answers the agent that waited.
    assert_eq!(press(&service, USER, id, "☑ L").await, "Noted.");
    assert_eq!(press(&service, USER, id, "☐ M").await, "Noted.");
    assert_eq!(press(&service, USER, id, "✔ Done").await, "Answered.");
    service
        .wait_for_message(0, USER, |m| m.contains("Answered across a restart."))
        .await;
    let saw = model_saw(&model);
    assert!(
        saw.iter()
            .any(|t| t.contains(r#""Which color?"="Red""#) && t.contains(r#""Which sizes?"="M""#)),
        "{saw:?}"
    );
    assert_eq!(asked(&service).len(), 1, "the question was asked anew");
}

/// Presses the first button of a message as first shown (a stale button).
async fn press_stale(service: &Service, item: &SentItem) -> String {
    let (_, data) = item.buttons().into_iter().next().expect("a button");
    let message_id = item.message_id.expect("id");
    service.press(0, USER, USER, message_id, &data).await
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

#[tokio::test(flavor = "multi_thread")]
#[cfg_attr(
    missing_tool = "claude",
    ignore = "the pinned Claude Code CLI is not installed: see .ci/run (npm install --prefix .tools/claude-code)"
)]
async fn the_http_api_and_the_cli_answer_questions_one_at_a_time() {
    let Some(binary) = require_claude("ask_http") else {
        return;
    };
    let model = ModelSim::start().await.expect("model");
    model.push(two_questions());
    model.push(Reply::text("Answered from a terminal."));
    let service = Service::start(service_options(&binary, &model, "")).await;

    let task = json!({"bot_id": "BOT-001", "user_id": USER, "chat_id": USER, "prompt": "ask"});
    let (status, created) = service.post("/api/tasks", task).await;
    assert_eq!(status, 201, "{created}");
    let listed = wait_pending(&service, |a| a["kind"] == "question").await;
    assert_eq!(listed["options"], json!(["Red", "Blue"]), "{listed}");
    assert_eq!(listed["questions"][1]["multi_select"], true, "{listed}");
    assert_eq!(listed["questions"][0]["answer"], Value::Null, "{listed}");
    let path = format!("/api/approvals/{}", listed["id"]);

    // A bare allow would leave the agent without answers; a wrong label is refused.
    let (status, body) = service.post(&path, json!({"decision": "allow"})).await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = service.post(&path, json!({"answer": "Green"})).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap_or_default()
            .contains("Red, Blue"),
        "{body}"
    );
    let (status, body) = service
        .post(&path, json!({"answer": "Red", "decision": "deny"}))
        .await;
    assert_eq!(status, 400, "{body}");

    let (status, first) = service.post(&path, json!({"answer": "Red"})).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["decision"], Value::Null, "{first}");
    assert_eq!(first["questions"][0]["answer"], "Red", "{first}");
    assert_eq!(first["options"], json!(["S", "M", "L"]), "{first}");

    let listed = agentlab(&service, &["approvals"]).await;
    assert!(listed.contains("Which sizes? [S | M | L]"), "{listed}");
    let id = first["id"].to_string();
    let answered = agentlab(&service, &["approve", &id, "--answer", "L, S"]).await;
    assert!(answered.contains("allow"), "{answered}");
    let done = service
        .wait_task_done(created["id"].as_u64().expect("id"))
        .await;
    assert_eq!(done["result"], "Answered from a terminal.", "{done}");
    let saw = model_saw(&model);
    assert!(
        saw.iter().any(
            |t| t.contains(r#""Which color?"="Red""#) && t.contains(r#""Which sizes?"="L, S""#)
        ),
        "{saw:?}"
    );
    let (status, again) = service.post(&path, json!({"answer": "Red"})).await;
    assert_eq!(status, 409, "{again}");
}

/// The plan file the CLI asks the agent to write in plan mode, as its first
/// request in the session says.
fn plan_file(model: &ModelSim) -> String {
    let first = model
        .agent_requests()
        .first()
        .expect("a request")
        .body
        .to_string();
    let marker = "create your plan at ";
    let at = first
        .find(marker)
        .unwrap_or_else(|| panic!("no plan file named in plan mode"))
        + marker.len();
    let rest = &first[at..];
    let end = rest.find(".md").expect("a .md plan file") + 3;
    rest[..end].to_owned()
}

/// In plan mode: the agent asks which approach (so the test can read the plan
/// file's name from the first request before scripting the rest), writes its
/// plan and asks to leave plan mode. Returns the plan's message id.
async fn plan_shown(service: &Service, model: &ModelSim, after_plan: Vec<Reply>) -> i32 {
    model.push(Reply::tool(
        "One question first.",
        "AskUserQuestion",
        json!({"questions": [{"question": "Which approach?", "header": "Approach",
            "multiSelect": false, "options": [
                {"label": "Simple", "description": "one file"},
                {"label": "Thorough", "description": "many files"}]}]}),
    ));
    service.send(0, USER, "/mode plan");
    service
        .wait_for_message(0, USER, |m| m.starts_with("Permission mode: plan."))
        .await;
    service.send(0, USER, "make a plan");
    let question = wait_for_asked(service, 1).await;
    let plan = plan_file(model);
    model.push(Reply::tool(
        "Writing the plan.",
        "Write",
        json!({"file_path": plan, "content": "# Plan\n1. echo planned > planned.txt\n"}),
    ));
    model.push(Reply::tool("Ready.", "ExitPlanMode", json!({})));
    for reply in after_plan {
        model.push(reply);
    }
    let id = question.message_id.expect("id");
    assert_eq!(press(service, USER, id, "Simple").await, "Answered.");
    let shown = wait_for_asked(service, 2).await;
    let html = shown.text.clone().unwrap_or_default();
    assert!(html.contains("1. echo planned &gt; planned.txt"), "{html}");
    let labels: Vec<String> = shown.buttons().into_iter().map(|(l, _)| l).collect();
    assert_eq!(labels, ["✅ Approve plan", "📝 Keep planning"]);
    shown.message_id.expect("id")
}

#[tokio::test(flavor = "multi_thread")]
#[cfg_attr(
    missing_tool = "claude",
    ignore = "the pinned Claude Code CLI is not installed: see .ci/run (npm install --prefix .tools/claude-code)"
)]
async fn an_approved_plan_leaves_plan_mode_and_the_next_tool_runs() {
    let Some(binary) = require_claude("plan_approved") else {
        return;
    };
    let model = ModelSim::start().await.expect("model");
    let service = Service::start(service_options(&binary, &model, "")).await;
    let after = vec![
        Reply::bash("echo planned > planned.txt"),
        Reply::text("Plan carried out."),
    ];
    let plan = plan_shown(&service, &model, after).await;
    assert_eq!(
        press(&service, USER, plan, "✅ Approve plan").await,
        "Plan approved."
    );
    // Out of plan mode, the Bash call is asked for like any other tool.
    let bash = wait_for_asked(&service, 3).await;
    let labels: Vec<String> = bash.buttons().into_iter().map(|(l, _)| l).collect();
    assert!(labels[0].ends_with("Allow"), "{labels:?}");
    press(&service, USER, bash.message_id.expect("id"), "✅ Allow").await;
    service
        .wait_for_message(0, USER, |m| m.contains("Plan carried out."))
        .await;
    let written = std::fs::read_to_string(service.dir.path().join("planned.txt"));
    assert_eq!(written.expect("the planned command ran"), "planned\n");
    let decided = wait_until("the plan's decision shown", || {
        latest(&service, plan).filter(|i| i.reply_markup.is_none() && i.kind == SentKind::Edit)
    })
    .await;
    let text = decided.plain_text.unwrap_or_default();
    assert!(text.contains("Plan approved by"), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
#[cfg_attr(
    missing_tool = "claude",
    ignore = "the pinned Claude Code CLI is not installed: see .ci/run (npm install --prefix .tools/claude-code)"
)]
async fn keep_planning_tells_the_agent_and_nothing_runs() {
    let Some(binary) = require_claude("plan_kept") else {
        return;
    };
    let model = ModelSim::start().await.expect("model");
    let service = Service::start(service_options(&binary, &model, "")).await;
    let after = vec![
        Reply::bash("echo early > early.txt"),
        Reply::text("Back to planning."),
    ];
    let plan = plan_shown(&service, &model, after).await;
    assert_eq!(
        press(&service, USER, plan, "📝 Keep planning").await,
        "Keep planning."
    );
    service
        .wait_for_message(0, USER, |m| m.contains("Back to planning."))
        .await;
    let saw = model_saw(&model);
    assert!(
        saw.iter()
            .any(|t| t.contains("The user wants you to keep planning")),
        "{saw:?}"
    );
    // Still in plan mode: the Bash call was refused by the CLI, never offered.
    assert!(!service.dir.path().join("early.txt").exists());
    assert_eq!(asked(&service).len(), 2);
    let decided = wait_until("the plan's decision shown", || {
        latest(&service, plan).filter(|i| i.reply_markup.is_none() && i.kind == SentKind::Edit)
    })
    .await;
    let text = decided.plain_text.unwrap_or_default();
    assert!(text.contains("Keep planning by"), "{text}");
}
