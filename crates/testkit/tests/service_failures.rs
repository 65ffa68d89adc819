//! How the service harness fails: loudly, with the service's log. A stand-in for
//! the binary (a shell script that writes to stderr) takes the place of
//! `agentlab run`, so these tests need no build of the product.
//!
//! The `should_panic` tests fail through a harness helper on purpose; the last
//! test runs one of them again in a child process to see what a failing test
//! prints: the service's log, which a passing test's captured output hides.

use std::os::unix::fs::PermissionsExt as _;
use std::path::PathBuf;

use agentlab_testkit::service::{KEEP_LOGS_ENV, Options, Service, start_sim};

/// What the stand-in writes to stderr before it does `then`.
const STAND_IN_SAYS: &str = "stand-in agentlab started with";

/// A script in `dir` that says [`STAND_IN_SAYS`] and its arguments on stderr,
/// then runs `then` (shell).
fn stand_in(dir: &tempfile::TempDir, then: &str) -> PathBuf {
    let path = dir.path().join("agentlab");
    std::fs::write(
        &path,
        format!("#!/bin/sh\necho \"{STAND_IN_SAYS} $*\" >&2\n{then}\n"),
    )
    .expect("write the stand-in");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
        .expect("make the stand-in executable");
    path
}

#[tokio::test]
#[should_panic(expected = "stand-in agentlab started with --config")]
async fn a_service_that_exits_during_start_up_fails_the_start_with_its_log() {
    let bin = tempfile::tempdir().expect("temp dir");
    let options = Options {
        binary: stand_in(&bin, "exit 3"),
        ..Options::default()
    };
    Service::start(options).await;
}

#[tokio::test]
#[should_panic(expected = "the service process was killed by signal 9 during start-up")]
async fn a_service_killed_during_start_up_is_reported_with_its_signal() {
    let bin = tempfile::tempdir().expect("temp dir");
    let options = Options {
        binary: stand_in(&bin, "kill -9 $$"),
        ..Options::default()
    };
    Service::start(options).await;
}

#[tokio::test]
#[should_panic(expected = "the service process is running")]
async fn a_request_that_cannot_reach_the_service_says_whether_it_runs() {
    let bin = tempfile::tempdir().expect("temp dir");
    let options = Options {
        binary: stand_in(&bin, "exec sleep 600"),
        ..Options::default()
    };
    let mut service = Service::prepare(start_sim().await, options);
    service.spawn();
    service
        .wait_for_log_line(|line| line.contains(STAND_IN_SAYS))
        .await;
    // Port 1 on loopback: nothing listens, the connection is refused.
    service.base_url = "http://127.0.0.1:1".into();
    service.get("/api/tasks").await;
}

/// Also: with [`KEEP_LOGS_ENV`] set, the log is kept in that folder.
#[test]
fn a_test_failing_in_a_harness_helper_prints_the_service_log() {
    let me = std::env::current_exe().expect("own path");
    let kept = tempfile::tempdir().expect("temp dir");
    let out = std::process::Command::new(me)
        .args([
            "--exact",
            "a_request_that_cannot_reach_the_service_says_whether_it_runs",
            "--nocapture",
        ])
        .env(KEEP_LOGS_ENV, kept.path())
        .output()
        .expect("run the failing test");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stdout.contains("1 passed"),
        "the failing test did not run as expected:\n{stdout}\n{stderr}"
    );
    let report = stderr
        .split_once("---- agentlab service log (")
        .map(|(_, report)| report)
        .unwrap_or_else(|| panic!("no service log printed:\n{stderr}"));
    assert!(
        report.contains(&format!("{STAND_IN_SAYS} --config")),
        "the log lacks what the service wrote:\n{stderr}"
    );
    assert!(
        report.contains("---- end of the service log ----"),
        "{stderr}"
    );
    let logs: Vec<String> = std::fs::read_dir(kept.path())
        .expect("the kept logs folder")
        .map(|entry| std::fs::read_to_string(entry.expect("entry").path()).expect("a kept log"))
        .collect();
    assert_eq!(logs.len(), 1, "one service, one kept log: {logs:#?}");
    assert!(logs[0].contains(STAND_IN_SAYS), "{logs:#?}");
}
