//! Clock faults (issue 10): the wall clock of a running service jumps back or
//! forward by hours (through the test skew file, see `src/clock.rs`); the queue
//! keeps its order and never stalls, `/restart` still works, restart notices and
//! stored times stay in order across a clock set back while the service was down.

use std::path::Path;

use agentlab::clock::TEST_SKEW_FILE_ENV;
use serde_json::{Value, json};
use telegram_sim::SentKind;

use crate::harness::{Options, PATIENCE, Service};

const HOUR_MS: i64 = 3_600_000;

fn skewed_options(skew_file: &Path, workers: usize) -> Options {
    Options {
        workers,
        extra_env: vec![(TEST_SKEW_FILE_ENV.into(), skew_file.display().to_string())],
        ..Options::default()
    }
}

/// Sets the service's wall-clock skew and waits until the service says it
/// applied it (it re-reads the file every 50 ms and logs each new value).
async fn set_skew(service: &Service, file: &Path, ms: i64) {
    std::fs::write(file, ms.to_string()).expect("skew file");
    let value = format!("skew_ms={ms}");
    service
        .wait_for_log_line(|line| line.contains("test clock skew applied") && line.contains(&value))
        .await;
}

async fn submit(service: &Service, user: i64, prompt: &str) -> u64 {
    let (status, created) = service
        .post(
            "/api/tasks",
            json!({"bot_id": "BOT-001", "user_id": user, "prompt": prompt}),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    created["id"].as_u64().expect("task id")
}

fn started_ms(task: &Value) -> u64 {
    task["started_ms"]
        .as_u64()
        .unwrap_or_else(|| panic!("no started_ms: {task}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clock_jump_back_or_forward_keeps_the_queue_in_order_and_moving() {
    let dir = tempfile::tempdir().expect("dir");
    let skew = dir.path().join("clock-skew");
    std::fs::write(&skew, "0").expect("skew file");
    let service = Service::start(skewed_options(&skew, 1)).await;

    // One worker, kept busy, so the next tasks wait in the queue.
    let blocker = submit(&service, 111, "sleep:1").await;
    service.wait_task_status(blocker, "running").await;
    let before_jump = submit(&service, 222, "queued before the jump").await;
    set_skew(&service, &skew, -2 * HOUR_MS).await;
    let after_back = submit(&service, 333, "queued after the jump back").await;
    set_skew(&service, &skew, 3 * HOUR_MS).await;
    let after_forward = submit(&service, 444, "queued after the jump forward").await;

    let mut done = Vec::new();
    for id in [blocker, before_jump, after_back, after_forward] {
        let task = service.wait_task_done(id).await;
        assert_eq!(task["status"], "succeeded", "{task}");
        done.push(task);
    }
    // Run in the order they were queued, and stored times never went back.
    for pair in done.windows(2) {
        assert!(
            started_ms(&pair[0]) <= started_ms(&pair[1]),
            "ran out of order: {} then {}",
            pair[0],
            pair[1]
        );
        assert!(
            pair[0]["created_ms"].as_u64() <= pair[1]["created_ms"].as_u64(),
            "created times went back: {} then {}",
            pair[0],
            pair[1]
        );
    }
    drop(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_works_with_a_clock_ahead_and_times_resume_after_a_clock_set_back() {
    let dir = tempfile::tempdir().expect("dir");
    let skew = dir.path().join("clock-skew");
    // The local clock three hours ahead of Telegram's.
    std::fs::write(&skew, (3 * HOUR_MS).to_string()).expect("skew file");
    let mut service = Service::start(skewed_options(&skew, 2)).await;
    let first = submit(&service, 111, "before the restart").await;
    let first = service.wait_task_done(first).await;

    // /restart is acted on (dates would call it stale: Telegram's clock is behind).
    service.send(0, 111, "/restart");
    assert_eq!(
        service.wait_exit(PATIENCE).await,
        Some(42),
        "{}",
        service.stderr_tail()
    );

    // Down, the clock is set back five hours (two behind Telegram's).
    std::fs::write(&skew, (-2 * HOUR_MS).to_string()).expect("skew file");
    service.restart().await;
    let token = service.tokens[0].clone();
    let log = service
        .sim
        .wait_for(
            &token,
            |items| {
                items.iter().any(|i| {
                    i.kind == SentKind::Edit
                        && i.text
                            .as_deref()
                            .is_some_and(|t| t.starts_with("✅ Back after"))
                })
            },
            PATIENCE,
        )
        .await
        .expect("the restarting message is edited to say back");
    let back = log
        .iter()
        .find_map(|i| i.text.as_deref().filter(|t| t.starts_with("✅ Back after")))
        .expect("back notice")
        .to_string();
    assert!(!back.contains('-'), "a negative downtime: {back}");

    // The redelivered-/restart guard does not swallow a new /restart either.
    let second = submit(&service, 111, "after the restart").await;
    let second = service.wait_task_done(second).await;
    assert!(
        first["finished_ms"].as_u64() <= second["created_ms"].as_u64(),
        "stored times went back across the restart: {first} then {second}"
    );
    service.send(0, 111, "/restart");
    assert_eq!(service.wait_exit(PATIENCE).await, Some(42));
}
