//! Circuit breakers end to end: the acceptance scenario through the real
//! service, two bots, the test agent and the simulator.

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::{BotSpec, Options, PATIENCE, Service, binary};

async fn submit(service: &Service, bot: &str, user: i64, prompt: &str) -> u64 {
    let (status, created) = service
        .post(
            "/api/tasks",
            json!({"bot_id": bot, "user_id": user, "prompt": prompt}),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    created["id"].as_u64().expect("id")
}

async fn agent_state(service: &Service, bot: &str) -> String {
    let (status, body) = service.get(&format!("/api/bot/{bot}/circuit-status")).await;
    assert_eq!(status, 200, "{body}");
    let agent = body["dependencies"]
        .as_array()
        .and_then(|deps| deps.iter().find(|d| d["dependency"] == "agent"))
        .cloned()
        .or_else(|| body.get("agent").cloned())
        .unwrap_or_else(|| panic!("no agent breaker in {body}"));
    agent["state"].as_str().unwrap_or_default().to_lowercase()
}

async fn wait_state(service: &Service, bot: &str, want: &str) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let state = agent_state(service, bot).await;
        if state == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "breaker of {bot} is {state}, expected {want}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn agent_breaker_opens_holds_prompts_survives_a_restart_and_recovers() {
    let options = Options {
        bots: vec![BotSpec::new("BOT-A", &[111, 112]), BotSpec::new("BOT-B", &[211])],
        limits_toml: "max_attempts = 1".into(),
        extra_toml: "\n[breaker]\nfailure_threshold = 5\nrecovery_timeout_s = 3\nsuccess_threshold = 2\nhalf_open_max_calls = 1\nmin_calls = 100\n".into(),
        workers: 1,
        ..Options::default()
    };
    let mut service = Service::start(options).await;

    // 10 successes: closed.
    for i in 0..10 {
        let id = submit(&service, "BOT-A", 500 + i, "ok").await;
        assert_eq!(service.wait_task_done(id).await["status"], "succeeded");
    }
    assert_eq!(agent_state(&service, "BOT-A").await, "closed");

    // 5 failures: open.
    for i in 0..5 {
        let id = submit(&service, "BOT-A", 600 + i, "fail").await;
        assert_eq!(service.wait_task_done(id).await["status"], "failed");
    }
    wait_state(&service, "BOT-A", "open").await;

    // New prompts are held, not failed, and the user is told.
    service.send(0, 111, "held one");
    service.send(0, 112, "held two");
    for user in [111, 112] {
        service
            .wait_for_message(0, user, |t| t.contains("unavailable"))
            .await;
    }
    let (_, queued) = service.get("/api/tasks?status=queued&bot=BOT-A").await;
    assert_eq!(
        queued.as_array().map(Vec::len),
        Some(2),
        "held in the queue: {queued}"
    );

    // A restart while open stays open.
    assert_eq!(service.stop().await, Some(0));
    service.restart().await;
    assert_eq!(
        agent_state(&service, "BOT-A").await,
        "open",
        "the restart did not close the circuit"
    );

    // After the recovery timeout: half-open, two probe successes, closed; the held
    // prompts run.
    service
        .wait_for_message(0, 111, |t| t.starts_with("You said: held one"))
        .await;
    service
        .wait_for_message(0, 112, |t| t.starts_with("You said: held two"))
        .await;
    wait_state(&service, "BOT-A", "closed").await;

    // The other bot's breaker never left closed.
    let id = submit(&service, "BOT-B", 211, "still fine").await;
    assert_eq!(service.wait_task_done(id).await["status"], "succeeded");
    assert_eq!(agent_state(&service, "BOT-B").await, "closed");

    // Every transition is in the event log, as JSON lines from `dump`.
    assert_eq!(service.stop().await, Some(0));
    let output = Command::new(binary())
        .args(["--config"])
        .arg(&service.config_path)
        .args(["dump", "--table", "events", "--format", "ndjson"])
        .output()
        .expect("run dump");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let transitions: Vec<Value> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("JSON line"))
        .filter(|e| e["event"] == "state_transition" && e["dependency"] == "agent")
        .collect();
    let path: Vec<(String, String, String)> = transitions
        .iter()
        .map(|e| {
            (
                e["bot_id"].as_str().unwrap_or_default().to_string(),
                e["from"].as_str().unwrap_or_default().to_string(),
                e["to"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    let expected = [
        ("BOT-A", "closed", "open"),
        ("BOT-A", "open", "half_open"),
        ("BOT-A", "half_open", "closed"),
    ];
    assert_eq!(
        path,
        expected
            .map(|(b, f, t)| (b.to_string(), f.to_string(), t.to_string()))
            .to_vec(),
        "transitions: {transitions:#?}"
    );
    for e in &transitions {
        assert!(e["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')));
        assert!(e["reason"].as_str().is_some_and(|r| !r.is_empty()));
    }
}
