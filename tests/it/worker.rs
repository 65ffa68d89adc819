//! The worker pool end to end: bounded concurrency, durability across kills,
//! recovery by pid and start time, retries, costs, bounded output.

use std::time::Duration;

use agentlab::storage::{
    NewTask, PRIORITY_NORMAL, TaskFinish, TaskKind, TaskSource, TaskStatus, now_ms,
};
use agentlab::worker::proc_identity;
use serde_json::{Value, json};

use crate::harness::{Options, PATIENCE, Service, StoreAccess};

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

fn ms(task: &Value, field: &str) -> u64 {
    task[field]
        .as_u64()
        .unwrap_or_else(|| panic!("{field} missing in {task}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn ten_tasks_with_three_workers_never_run_more_than_three_at_once() {
    let service = Service::start(Options::default()).await;
    let mut ids = Vec::new();
    for user in 0..10 {
        ids.push(submit(&service, 1000 + user, "sleep:0.6 work").await);
    }
    let mut spans = Vec::new();
    for id in ids {
        let task = service.wait_task_done(id).await;
        assert_eq!(task["status"], "succeeded", "{task}");
        spans.push((ms(&task, "started_ms"), ms(&task, "finished_ms")));
    }
    let max_overlap = spans
        .iter()
        .map(|(start, _)| {
            spans
                .iter()
                .filter(|(s, f)| s <= start && start < f)
                .count()
        })
        .max()
        .unwrap_or(0);
    assert!(max_overlap <= 3, "at most 3 ran at once, saw {max_overlap}");
    assert!(
        max_overlap >= 2,
        "the pool did run tasks in parallel ({max_overlap})"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn tasks_queued_before_the_pool_starts_all_run() {
    let sim = telegram_sim::TelegramSim::start(([127, 0, 0, 1], 0).into(), Vec::new())
        .await
        .expect("sim");
    let mut service = Service::prepare(sim, Options::default());
    {
        std::fs::create_dir_all(service.data_dir()).expect("data dir");
        let store = service.open_store();
        for i in 0..6 {
            let new = NewTask {
                bot_id: "BOT-001".into(),
                user_id: 111,
                chat_id: 111,
                kind: TaskKind::Chat,
                source: TaskSource::Api,
                prompt: format!("queued early {i}"),
                priority: PRIORITY_NORMAL,
                max_attempts: 3,
                reply_to_message_id: None,
                update_id: None,
            };
            store.submit_task(new, now_ms()).wait().expect("submit");
        }
        store.close();
    }
    service.spawn();
    service.wait_ready().await;
    service
        .wait_for_count(0, 111, 6, |t| t.starts_with("You said: queued early"))
        .await;
}

/// The start-up check of the whole file goes through redb's repair path, so the
/// log must say "repairing" only when there is something to repair: after a
/// kill -9, not after a clean stop (an operator would chase a crash that never was).
#[tokio::test(flavor = "multi_thread")]
async fn only_a_start_after_kill_9_logs_a_repair() {
    const REPAIR: &str = "repairing database after an unclean exit";
    let mut service = Service::start(Options::default()).await;
    let id = submit(&service, 111, "before a clean stop").await;
    service.wait_task_done(id).await;
    assert_eq!(service.stop().await, Some(0), "{}", service.stderr_tail());
    service.restart().await;
    assert_eq!(
        service.stderr_text().matches(REPAIR).count(),
        0,
        "a clean stop needs no repair: {}",
        service.stderr_tail()
    );
    assert!(
        !service.stderr_text().contains('\u{1b}'),
        "colour codes in a log file: {}",
        service.stderr_tail()
    );
    service.kill9();
    service.restart().await;
    assert!(
        service.stderr_text().contains(REPAIR),
        "a start after kill -9 says it repairs: {}",
        service.stderr_tail()
    );
    assert_eq!(service.stop().await, Some(0), "{}", service.stderr_tail());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_task_running_at_kill_9_is_adopted_and_its_answer_recorded() {
    let mut service = Service::start(Options::default()).await;
    let id = submit(&service, 111, "sleep:4 survive the crash").await;
    let pid = wait_for_pid(&service, id).await;
    service.kill9();
    assert!(
        proc_identity::read_identity(pid).is_some(),
        "the agent outlives the service"
    );
    service.restart().await;
    let task = service.wait_task_done(id).await;
    assert_eq!(task["status"], "succeeded", "{task}");
    assert_eq!(task["attempts"], 1, "adopted, not re-run: {task}");
    assert!(
        task["result"]
            .as_str()
            .unwrap_or("")
            .contains("survive the crash")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_task_whose_agent_died_with_the_service_is_run_again() {
    let mut service = Service::start(Options::default()).await;
    let id = submit(&service, 111, "sleep:30 killed with everything").await;
    let pid = wait_for_pid(&service, id).await;
    service.kill9();
    // The agent dies too (a machine reboot, an OOM kill of the whole group).
    // SAFETY: the agent's process group is ours (the test started the service).
    unsafe { libc::killpg(pid as i32, libc::SIGKILL) };
    service.restart().await;
    let (_, task) = service.get(&format!("/api/tasks/{id}")).await;
    assert!(
        matches!(
            task["status"].as_str(),
            Some("interrupted" | "queued" | "running")
        ),
        "re-queued: {task}"
    );
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let (_, task) = service.get(&format!("/api/tasks/{id}")).await;
        if task["status"] == "running" && task["attempts"] == 2 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "not re-run: {task}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stored_pid_that_now_belongs_to_another_process_is_not_adopted() {
    let sim = telegram_sim::TelegramSim::start(([127, 0, 0, 1], 0).into(), Vec::new())
        .await
        .expect("sim");
    let mut service = Service::prepare(sim, Options::default());
    // A live process that is not an agent: this test process itself.
    let own = proc_identity::read_identity(std::process::id()).expect("own identity");
    let id = {
        std::fs::create_dir_all(service.data_dir()).expect("data dir");
        let store = service.open_store();
        let new = NewTask {
            bot_id: "BOT-001".into(),
            user_id: 111,
            chat_id: 111,
            kind: TaskKind::Chat,
            source: TaskSource::Api,
            prompt: "pid reuse victim".into(),
            priority: PRIORITY_NORMAL,
            max_attempts: 3,
            reply_to_message_id: None,
            update_id: None,
        };
        let id = store
            .submit_task(new, now_ms())
            .wait()
            .expect("submit")
            .task
            .id;
        let claimed = store
            .claim_next_task(now_ms(), vec![])
            .wait()
            .expect("claim")
            .expect("a task to claim");
        // Same pid, another start time: the pid was reused.
        let claimed_ms = claimed.task.started_ms.expect("started");
        store
            .record_task_process(id, claimed_ms, own.pid, own.start_time + 12345)
            .wait()
            .expect("pid");
        store.close();
        id
    };
    service.spawn();
    service.wait_ready().await;
    let task = service.wait_task_done(id).await;
    assert_eq!(task["status"], "succeeded");
    assert_eq!(
        task["attempts"], 2,
        "judged dead and run again, not adopted: {task}"
    );
    assert!(
        proc_identity::is_alive(&own),
        "and the other process was not touched"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn timeout_and_cancel_leave_no_process_of_the_group_alive() {
    let options = Options {
        limits_toml: "max_attempts = 1".into(),
        ..Options::default()
    };
    let service = Service::start(options).await;
    // Cancel: a hanging agent with a grandchild.
    let id = submit(&service, 111, "spawn-child hang").await;
    let pid = wait_for_pid(&service, id).await;
    let (status, _) = service
        .post(&format!("/api/tasks/{id}/cancel"), json!({}))
        .await;
    assert_eq!(status, 200);
    let task = service.wait_task_done(id).await;
    assert_eq!(task["status"], "cancelled", "{task}");
    assert_group_gone(pid).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_timed_out_task_is_killed_with_its_grandchildren() {
    let options = Options {
        limits_toml: "max_attempts = 1".into(),
        ..Options::default()
    };
    let mut service = Service::prepare(
        telegram_sim::TelegramSim::start(([127, 0, 0, 1], 0).into(), Vec::new())
            .await
            .expect("sim"),
        options,
    );
    let config = std::fs::read_to_string(&service.config_path).expect("config");
    std::fs::write(
        &service.config_path,
        config.replace("task_timeout_s = 60", "task_timeout_s = 1"),
    )
    .expect("config");
    service.spawn();
    service.wait_ready().await;
    let id = submit(&service, 111, "spawn-child hang").await;
    let pid = wait_for_pid(&service, id).await;
    let task = service.wait_task_done(id).await;
    assert_eq!(task["status"], "failed");
    assert_eq!(task["error_class"], "timeout");
    assert_group_gone(pid).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_agent_is_retried_up_to_max_attempts_then_failed() {
    let service = Service::start(Options::default()).await;
    let id = submit(&service, 111, "fail").await;
    let task = service.wait_task_done(id).await;
    assert_eq!(task["status"], "failed", "{task}");
    assert_eq!(task["attempts"], 3);
    assert_eq!(task["error_class"], "agent_error");
}

#[tokio::test(flavor = "multi_thread")]
async fn cost_accumulates_per_day_and_a_task_over_budget_is_refused() {
    let options = Options {
        limits_toml: "daily_cost_usd = 1.0".into(),
        ..Options::default()
    };
    let service = Service::start(options).await;
    for _ in 0..2 {
        let id = submit(&service, 111, "cost:0.6 spend").await;
        assert_eq!(service.wait_task_done(id).await["status"], "succeeded");
    }
    let id = submit(&service, 111, "cost:0.6 one too many").await;
    let task = service.wait_task_done(id).await;
    assert_eq!(task["status"], "failed");
    assert_eq!(task["error_class"], "cost_limit");
    let error = task["error"].as_str().unwrap_or("");
    assert!(
        error.contains("$1.20") && error.contains("$1.00"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn huge_output_is_bounded_in_the_store_and_complete_in_the_run_file() {
    let service = Service::start(Options::default()).await;
    let id = submit(&service, 111, "long:50000000").await;
    let task = service.wait_task_done(id).await;
    let result = task["result"].as_str().unwrap_or("");
    assert!(
        result.len() <= 70 * 1024,
        "stored result is bounded: {} bytes",
        result.len()
    );
    let stdout = service
        .data_dir()
        .join("runs")
        .join(id.to_string())
        .join("stdout");
    // The whole output: the 50 MB answer after the agent's one-line `init` event.
    let len = std::fs::metadata(stdout).expect("run file").len();
    assert!((50_000_000..50_004_096).contains(&len), "{len} bytes");
}

#[tokio::test(flavor = "multi_thread")]
async fn finish_task_twice_is_a_conflict_not_a_double_count() {
    let dir = tempfile::tempdir().expect("dir");
    let store = agentlab::storage::Store::open(&dir.path().join("a.redb"), Default::default())
        .expect("open");
    let new = NewTask {
        bot_id: "B".into(),
        user_id: 1,
        chat_id: 1,
        kind: TaskKind::Chat,
        source: TaskSource::Api,
        prompt: "p".into(),
        priority: PRIORITY_NORMAL,
        max_attempts: 1,
        reply_to_message_id: None,
        update_id: None,
    };
    let id = store.submit_task(new, 1).wait().expect("submit").task.id;
    store.claim_next_task(2, vec![]).wait().expect("claim");
    let finish = TaskFinish {
        status: Some(TaskStatus::Succeeded),
        cost_usd: 0.5,
        ..TaskFinish::default()
    };
    store
        .finish_task(id, finish.clone(), 3)
        .wait()
        .expect("finish");
    assert!(store.finish_task(id, finish, 4).wait().is_err());
    assert_eq!(
        store
            .cost_day("B", agentlab::storage::utc_day(3))
            .expect("cost")
            .usd,
        0.5
    );
}

async fn wait_for_pid(service: &Service, id: u64) -> u32 {
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let (_, task) = service.get(&format!("/api/tasks/{id}")).await;
        if let Some(pid) = task["pid"].as_u64() {
            return pid as u32;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "task {id} never got a pid: {task}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Live (non-zombie) processes whose process group is `pgid`, from /proc.
fn group_members(pgid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // Fields after the command name: state ppid pgrp ...
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.len() > 2 && fields[0] != "Z" && fields[2] == pgid.to_string() {
            out.push(pid);
        }
    }
    out
}

/// Every process of the agent's group (the agent is the group leader) is gone.
async fn assert_group_gone(pgid: u32) {
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        if group_members(pgid).is_empty() {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "process group {pgid} still has members"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_resume_the_agent_no_longer_knows_is_retried_once_as_a_fresh_session() {
    let service = Service::start(Options::default()).await;
    service.send(0, 111, "first message");
    service
        .wait_for_message(0, 111, |t| t.starts_with("You said: first message"))
        .await;
    let (_, tasks) = service.get("/api/tasks?limit=1").await;
    let first_session = tasks[0]["session_id"]
        .as_str()
        .expect("a session id")
        .to_string();
    // The agent "forgot" the session: resuming fails like Claude Code does.
    service.send(0, 111, "no-session second message");
    service
        .wait_for_message(0, 111, |t| t.starts_with("You said: second message"))
        .await;
    let (_, tasks) = service.get("/api/tasks?limit=1").await;
    let task = &tasks[0];
    assert_eq!(task["status"], "succeeded", "{task}");
    assert_eq!(
        task["attempts"], 1,
        "the fresh session is part of the same attempt"
    );
    let second_session = task["session_id"].as_str().expect("a new session id");
    assert_ne!(
        second_session, first_session,
        "the user's session was replaced"
    );
}
