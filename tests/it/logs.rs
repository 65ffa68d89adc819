//! The service log (issue 8): JSON lines in `log_dir/agentlab.log.<UTC date>`,
//! rotated daily with 7 files kept, lines carrying bot/user/task fields, and
//! `agentlab logs` reading the newest file.

use std::path::Path;
use std::process::Command;

use serde_json::{Value, json};

use telegram_sim::TelegramSim;

use crate::harness::{Options, Service, binary};

/// Log files the service keeps (today's included).
const KEPT: usize = 7;

fn log_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("log dir")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with("agentlab.log"))
        .collect();
    names.sort();
    names
}

fn today_utc() -> String {
    chrono::Utc::now().format("%Y-%m-%d").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_are_daily_json_files_with_seven_kept() {
    let sim = TelegramSim::start(([127, 0, 0, 1], 0).into(), Vec::new())
        .await
        .expect("simulator");
    let mut service = Service::prepare(sim, Options::default());
    let logs = service.dir.path().join("logs");
    std::fs::create_dir_all(&logs).expect("log dir");
    // Ten older days, written oldest first (the appender orders by creation).
    let old: Vec<String> = (1..=10)
        .map(|day| format!("agentlab.log.2020-01-{day:02}"))
        .collect();
    for name in &old {
        std::fs::write(logs.join(name), b"{\"old\":true}\n").expect("old log");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    // Not a log file: never touched.
    std::fs::write(logs.join("notes.txt"), b"keep me").expect("other file");

    service.spawn();
    service.wait_ready().await;
    let (status, created) = service
        .post(
            "/api/tasks",
            json!({"bot_id": "BOT-001", "user_id": 111, "prompt": "hello log"}),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_u64().expect("task id");
    service.wait_task_done(id).await;
    assert_eq!(service.stop().await, Some(0), "{}", service.stderr_tail());

    let today = format!("agentlab.log.{}", today_utc());
    let files = log_files(&logs);
    assert_eq!(files.len(), KEPT, "kept files: {files:?}");
    assert!(files.contains(&today), "today's file missing: {files:?}");
    // The six newest of the old days survive, the four oldest are gone.
    for name in &old[..4] {
        assert!(!files.contains(name), "{name} should have been pruned");
    }
    for name in &old[4..] {
        assert!(files.contains(name), "{name} should have been kept");
    }
    assert!(
        logs.join("notes.txt").exists(),
        "a foreign file was deleted"
    );

    let text = std::fs::read_to_string(logs.join(&today)).expect("today's log");
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(!lines.is_empty(), "empty log");
    for line in &lines {
        assert!(line["timestamp"].is_string(), "no timestamp: {line}");
        assert!(line["level"].is_string(), "no level: {line}");
    }
    // The task's lines name it, in the event or in its span.
    let names_task = |l: &Value| {
        [&l["fields"]["task_id"], &l["span"]["task_id"]]
            .iter()
            .any(|v| v.as_u64() == Some(id))
    };
    assert!(
        lines.iter().any(names_task),
        "no line names task {id}:\n{text}"
    );
    assert!(
        !text.contains(&service.tokens[0]),
        "a bot token reached the log"
    );

    // `agentlab logs` shows the newest file.
    let out = Command::new(binary())
        .arg("--config")
        .arg(&service.config_path)
        .args(["logs", "-n", "5"])
        .output()
        .expect("agentlab logs");
    assert!(out.status.success(), "{out:?}");
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(
        shown.lines().count() >= 1 && !shown.contains("\"old\":true"),
        "logs showed: {shown}"
    );
}

/// A start-up error reaches the terminal once (the `error:` line, its cause
/// chain once), not again as a log line, and is still recorded in the log file
/// for the operator who reads that.
#[test]
fn a_start_up_error_is_printed_once_and_recorded_in_the_log_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path().display();
    let var = "AGENTLAB_TEST_START_UP_ERROR_TOKEN";
    let config = dir.path().join("agentlab.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = \"{root}/data\"\nlog_dir = \"{root}/logs\"\nbackup_dir = \"{root}/backups\"\n\
             [http]\nbind = \"127.0.0.1:0\"\n\
             [[bots]]\nid = \"BOT-001\"\ntoken_env = \"{var}\"\nallowed_users = [1]\n"
        ),
    )
    .expect("config");
    let output = Command::new(binary())
        .arg("--config")
        .arg(&config)
        .arg("run")
        .env_remove("AGENTLAB_CONFIG")
        .env_remove(var)
        .env("RUST_LOG", "info")
        .output()
        .expect("run agentlab");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    let cause = format!("the token variable ${var} is not set");
    assert_eq!(stderr.matches(&cause).count(), 1, "{stderr}");
    assert!(
        stderr.contains(&format!("error: bot `BOT-001`: {cause}")),
        "{stderr}"
    );

    let logs = dir.path().join("logs");
    let text: String = log_files(&logs)
        .iter()
        .map(|name| std::fs::read_to_string(logs.join(name)).expect("log file"))
        .collect();
    let failures: Vec<Value> = text
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|record| record["fields"]["message"] == "agentlab failed")
        .collect();
    assert_eq!(failures.len(), 1, "{text}");
    assert_eq!(failures[0]["level"], "ERROR");
    let recorded = failures[0]["fields"]["error"].as_str().unwrap_or_default();
    assert_eq!(recorded.matches(&cause).count(), 1, "{recorded}");
}
