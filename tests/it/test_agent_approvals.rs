//! Tool approvals with the binary's test agent (`approve:Bash COMMAND`), fast
//! and without the CLI: it asks with a `control_request` as Claude Code does, the
//! bot shows the buttons, and the press decides what the agent reports and
//! whether it "runs" the tool (a line in its `test-agent-ran.txt`).

use agentlab::worker::test_agent::RAN_FILE;

use crate::approvals::{USER, allow_across_a_kill_9, edited_text, press, wait_for_approval};
use crate::harness::{Options, Service, wait_until};

/// What the test agent recorded as run, in the bots' working directory.
fn ran(service: &Service) -> Option<String> {
    std::fs::read_to_string(service.dir.path().join(RAN_FILE)).ok()
}

/// The answers containing `text` the user got.
fn answers_with(service: &Service, text: &str) -> usize {
    service
        .messages_to(0, USER)
        .into_iter()
        .filter(|m| m.contains(text))
        .count()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_test_agent_asks_and_an_allowed_tool_runs_once() {
    let service = Service::start(Options::default()).await;
    service.send(0, USER, "approve:Bash touch allowed.txt");
    let asked = wait_for_approval(&service, 1).await;
    let shown = asked.text.clone().unwrap_or_default();
    assert!(shown.contains("<pre>touch allowed.txt</pre>"), "{shown}");
    assert_eq!(ran(&service), None, "ran before the press");

    assert_eq!(press(&service, USER, &asked, "Allow").await, "Allowed.");
    service
        .wait_for_message(0, USER, |m| {
            m.contains("Bash was allowed: touch allowed.txt")
        })
        .await;
    assert_eq!(ran(&service).as_deref(), Some("Bash: touch allowed.txt\n"));
    let message_id = asked.message_id.expect("id");
    let edited = wait_until("the decision shown", || edited_text(&service, message_id)).await;
    assert!(edited.contains("Allowed by"), "{edited}");
    assert_eq!(answers_with(&service, "Bash was allowed"), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tool_the_test_agent_is_denied_does_not_run_and_the_answer_says_why() {
    let service = Service::start(Options::default()).await;
    service.send(0, USER, "approve:Bash touch denied.txt");
    let asked = wait_for_approval(&service, 1).await;
    assert_eq!(press(&service, USER, &asked, "Deny").await, "Denied.");
    let answer = service
        .wait_for_message(0, USER, |m| m.contains("Bash was denied: touch denied.txt"))
        .await;
    assert!(
        answer.contains("Denied by"),
        "the denial's message: {answer}"
    );
    assert_eq!(ran(&service), None);
}

#[tokio::test(flavor = "multi_thread")]
async fn without_an_approver_the_test_agent_is_denied_as_the_cli_denies() {
    // In `bypassPermissions` mode agentlab does not pass `--permission-prompt-tool
    // stdio` (the CLI allows everything there), so nobody is asked; the test agent,
    // without an approver, denies as the CLI's print mode does.
    let agent = format!(
        "command = [{:?}, \"test-agent\"]\npermission_mode = \"bypassPermissions\"\n\
         keep_warm_s = 0",
        crate::harness::binary()
    );
    let service = Service::start(Options {
        agent_toml: Some(agent),
        ..Options::default()
    })
    .await;
    service.send(0, USER, "approve:Bash touch unasked.txt");
    service
        .wait_for_message(0, USER, |m| {
            m.contains("Bash was denied: touch unasked.txt") && m.contains("no approver")
        })
        .await;
    let asked = service
        .sent_to(0, USER)
        .into_iter()
        .filter(|i| i.reply_markup.is_some())
        .count();
    assert_eq!(asked, 0, "an approval was shown");
    assert_eq!(ran(&service), None);
}

#[tokio::test(flavor = "multi_thread")]
async fn after_a_kill_9_the_press_reaches_the_waiting_test_agent_and_it_answers_once() {
    let mut service = Service::start(Options::default()).await;
    allow_across_a_kill_9(&mut service, "after-restart.txt").await;
    let (_, tasks) = service.get("/api/tasks?limit=10").await;
    let tasks = tasks.as_array().cloned().unwrap_or_default();
    assert_eq!(tasks.len(), 1, "{tasks:#?}");
    assert_eq!(tasks[0]["attempts"], 1, "the task ran again: {tasks:#?}");
    assert_eq!(answers_with(&service, "Bash was allowed"), 1);
    let shown = service
        .sent_to(0, USER)
        .into_iter()
        .filter(|i| i.reply_markup.is_some())
        .count();
    assert_eq!(shown, 1, "the request was shown again after the restart");
}
