//! The service driving the built-in test agent over Claude Code's stream-json
//! protocol: live progress of tool calls, warm sessions (one process answering a
//! session's prompts), their ending, and a turn adopted across a kill -9.

use agentlab::worker::proc_identity;
use serde_json::Value;
use telegram_sim::SentKind;

use crate::harness::{Options, Service, agent_of, binary, wait_until};

/// A service whose test agent is started as Claude Code would be (stream-json),
/// with `agent` added to `[bots.agent]`.
async fn service(agent: &str) -> Service {
    Service::start(Options {
        agent_toml: Some(format!(
            "command = [\"{}\", \"test-agent\"]\n{agent}",
            binary()
        )),
        ..Options::default()
    })
    .await
}

/// Sends `text` and waits for the answer that echoes `echo`; returns the task.
async fn ask(service: &Service, user: i64, text: &str, echo: &str) -> Value {
    let want = format!("You said: {echo}");
    let before = service.tasks().await.len();
    service.send(0, user, text);
    service
        .wait_for_message(0, user, |m| m.contains(&want))
        .await;
    let all = service.tasks().await;
    assert_eq!(all.len(), before + 1);
    let id = all[before]["id"].as_u64().expect("id");
    service.wait_task_done(id).await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tool_call_is_shown_in_the_progress_message_before_the_answer_and_kept() {
    let service = service("").await;
    let task = ask(
        &service,
        111,
        "tool:Bash tool:Read sleep:1.5 cargo test",
        "cargo test",
    )
    .await;
    let sent = service.sent_to(0, 111);
    let answer_at = sent
        .iter()
        .find(|i| {
            i.kind == SentKind::Message
                && i.plain_text
                    .as_deref()
                    .is_some_and(|t| t.contains("You said: cargo test"))
        })
        .map(|i| i.seq)
        .expect("the answer");
    let progress = sent
        .iter()
        .find(|i| {
            i.kind == SentKind::Edit
                && i.plain_text.as_deref().is_some_and(|t| {
                    t.contains("• Bash: cargo test") && t.contains("• Read: cargo test")
                })
        })
        .unwrap_or_else(|| panic!("no progress edit with the tool calls: {sent:#?}"));
    assert!(progress.seq < answer_at, "{sent:#?}");
    assert_eq!(progress.parse_mode.as_deref(), Some("HTML"));

    let steps = &task["steps"];
    assert_eq!(steps["earlier"], 0, "{task}");
    let summaries: Vec<&str> = steps["items"]
        .as_array()
        .expect("steps")
        .iter()
        .filter_map(|s| s["summary"].as_str())
        .collect();
    assert_eq!(summaries, ["Bash: cargo test", "Read: cargo test"]);

    let id = task["id"].as_u64().expect("id");
    service.send(0, 111, &format!("/task {id}"));
    service
        .wait_for_message(0, 111, |m| {
            m.contains("Steps (2):") && m.contains("• Read: cargo test")
        })
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_session_stays_warm_one_process_answers_its_prompts_with_their_own_costs() {
    let service = service("").await;
    let first = ask(&service, 111, "cost:0.25 one", "one").await;
    let second = ask(&service, 111, "cost:0.5 two", "two").await;
    let third = ask(&service, 111, "cost:0.125 three", "three").await;
    let agent = agent_of(&first);
    assert_eq!(agent_of(&second), agent, "{second}");
    assert_eq!(agent_of(&third), agent, "{third}");
    assert!(
        proc_identity::is_alive(&agent),
        "the warm agent is still there"
    );
    assert_eq!(first["session_id"], third["session_id"]);
    // total_cost_usd is cumulative per process; each task has its own cost.
    let costs: Vec<f64> = [&first, &second, &third]
        .iter()
        .map(|t| t["cost_usd"].as_f64().expect("cost"))
        .collect();
    assert_eq!(costs, [0.25, 0.5, 0.125]);
    // Another user gets a process of their own.
    let other = ask(&service, 222, "hello", "hello").await;
    assert_ne!(agent_of(&other), agent);
    // The prompts to the idle warm process started as they were stored (one
    // durable step); the first prompt of each user was queued for a new process.
    let log = service.stderr_text();
    assert_eq!(log.matches("prompt started").count(), 2, "{log}");
    assert_eq!(log.matches("prompt queued").count(), 2, "{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn keep_warm_s_zero_starts_a_process_per_prompt_that_resumes_the_session() {
    let service = service("keep_warm_s = 0").await;
    let first = ask(&service, 111, "one", "one").await;
    let second = ask(&service, 111, "two", "two").await;
    assert_ne!(agent_of(&first).pid, agent_of(&second).pid);
    assert!(!proc_identity::is_alive(&agent_of(&first)));
    assert_eq!(first["session_id"], second["session_id"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn new_ends_the_warm_process_and_a_dead_one_is_replaced_by_a_resumed_one() {
    let service = service("").await;
    let first = ask(&service, 111, "one", "one").await;
    let agent = agent_of(&first);
    // Killed behind agentlab's back: the next prompt resumes in a new process.
    // SAFETY: signalling a test agent process this test's service started.
    unsafe { libc::kill(agent.pid as i32, libc::SIGKILL) };
    wait_until("the agent to die", || {
        (!proc_identity::is_alive(&agent)).then_some(())
    })
    .await;
    let second = ask(&service, 111, "two", "two").await;
    let replacement = agent_of(&second);
    assert_ne!(replacement, agent);
    assert_eq!(first["session_id"], second["session_id"]);
    service.send(0, 111, "/new");
    service
        .wait_for_message(0, 111, |m| m.contains("fresh agent session"))
        .await;
    wait_until("/new to end the warm agent", || {
        (!proc_identity::is_alive(&replacement)).then_some(())
    })
    .await;
    let third = ask(&service, 111, "three", "three").await;
    assert_ne!(third["session_id"], first["session_id"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_turn_running_when_the_service_is_killed_is_answered_once_by_the_next_process() {
    let mut service = service("").await;
    let warm = ask(&service, 111, "warm up", "warm up").await;
    service.send(0, 111, "sleep:2 after the crash");
    let id = warm["id"].as_u64().expect("id") + 1;
    let running = service.wait_running_with_pid(id).await;
    let agent = agent_of(&running);
    assert_eq!(agent, agent_of(&warm), "the turn runs in the warm process");
    service.kill9();
    assert!(
        proc_identity::is_alive(&agent),
        "the agent outlives the service"
    );
    service.restart().await;
    service
        .wait_for_message(0, 111, |m| m.contains("You said: after the crash"))
        .await;
    let done = service.wait_task_done(id).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["attempts"], 1, "adopted, not run again: {done}");
    // Answered once.
    let answers = service
        .messages_to(0, 111)
        .into_iter()
        .filter(|m| m.contains("You said: after the crash"))
        .count();
    assert_eq!(answers, 1);
    // The adopted process stays warm for the session's next prompt.
    let next = ask(&service, 111, "and then", "and then").await;
    assert_eq!(agent_of(&next), agent);
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_warm_processes_end_with_a_graceful_stop_and_after_a_kill_at_the_next_start() {
    let mut service = service("").await;
    let first = agent_of(&ask(&service, 111, "one", "one").await);
    service.kill9();
    assert!(
        proc_identity::is_alive(&first),
        "an idle warm agent outlives a kill -9"
    );
    service.restart().await;
    wait_until("the next start to end the orphaned warm agent", || {
        (!proc_identity::is_alive(&first)).then_some(())
    })
    .await;
    let second = agent_of(&ask(&service, 111, "two", "two").await);
    assert_eq!(service.stop().await, Some(0));
    wait_until("a graceful stop to end the idle warm agent", || {
        (!proc_identity::is_alive(&second)).then_some(())
    })
    .await;
}
