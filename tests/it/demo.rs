//! `agentlab demo`: the whole service with the built-in simulator and test
//! agent, driven by a script, as a newcomer runs it.

use std::process::Command;

use crate::harness::binary;

/// Runs `demo --script` on `data_dir`; returns its exit code and stdout.
fn run_demo(data_dir: &std::path::Path, script: &std::path::Path) -> (Option<i32>, String) {
    let output = Command::new(binary())
        .args(["demo", "--port", "0", "--script"])
        .arg(script)
        .arg("--data-dir")
        .arg(data_dir)
        .env_remove("AGENTLAB_CONFIG")
        .output()
        .expect("run agentlab demo");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

/// A second run on the same data directory (its tasks and update records kept)
/// answers its prompts like the first: a fresh simulator must not make the new
/// prompts look like re-deliveries of the old ones.
#[test]
fn a_second_demo_run_on_the_same_data_answers_every_prompt() {
    let dir = tempfile::tempdir().expect("temp dir");
    let script = dir.path().join("script.txt");
    std::fs::write(&script, "hello agentlab\nsecond prompt\n").expect("script");
    let data = dir.path().join("demo-data");
    for run in 1..=2 {
        let (code, out) = run_demo(&data, &script);
        assert_eq!(code, Some(0), "run {run}:\n{out}");
        for prompt in ["hello agentlab", "second prompt"] {
            assert!(
                out.contains(&format!("You said: {prompt}")),
                "run {run} has no answer to {prompt:?}:\n{out}"
            );
        }
    }
}

/// An address file left by a run that was killed names a dead port: the banner
/// must show where this run listens, and the script must still be answered.
#[test]
fn a_stale_address_file_from_a_killed_run_is_not_believed() {
    let dir = tempfile::tempdir().expect("temp dir");
    let script = dir.path().join("script.txt");
    std::fs::write(&script, "hello after a crash\n").expect("script");
    let data = dir.path().join("demo-data");
    let stale = data.join("data").join("agentlab.addr");
    std::fs::create_dir_all(stale.parent().expect("parent")).expect("data dir");
    std::fs::write(&stale, "127.0.0.1:1").expect("stale address");
    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(60);
    std::fs::File::options()
        .write(true)
        .open(&stale)
        .and_then(|f| f.set_modified(old))
        .expect("age the stale file");
    let (code, out) = run_demo(&data, &script);
    assert_eq!(code, Some(0), "{out}");
    assert!(!out.contains("127.0.0.1:1/"), "stale address shown:\n{out}");
    assert!(out.contains("You said: hello after a crash"), "{out}");
}

/// `/restart` in the demo restarts the service the way launchd or systemd
/// would: the chat is told it is back, and the next prompt is answered.
#[test]
fn restart_in_the_demo_comes_back_and_answers_again() {
    let dir = tempfile::tempdir().expect("temp dir");
    let script = dir.path().join("script.txt");
    std::fs::write(&script, "/restart\nhello after the restart\n").expect("script");
    let (code, out) = run_demo(&dir.path().join("demo-data"), &script);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("Back after"), "no restart notice:\n{out}");
    assert!(out.contains("You said: hello after the restart"), "{out}");
}

/// Input piped into the interactive demo that ends at once is still answered
/// before the demo exits.
#[test]
fn piped_input_is_answered_before_the_demo_exits() {
    use std::io::Write as _;
    let dir = tempfile::tempdir().expect("temp dir");
    let mut child = Command::new(binary())
        .args(["demo", "--port", "0", "--data-dir"])
        .arg(dir.path().join("demo-data"))
        .env_remove("AGENTLAB_CONFIG")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run agentlab demo");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(b"sleep:1 piped in\n").expect("write");
    drop(stdin);
    let output = child.wait_with_output().expect("demo output");
    let out = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{out}");
    assert!(out.contains("You said: piped in"), "{out}");
}

/// The demo runs on built-in defaults: a configuration file named on its
/// command line (before or after `demo`) is a usage error, exit 2, that says so
/// and how to run the service with that file, and nothing is started.
#[test]
fn a_config_file_given_to_the_demo_is_a_usage_error_pointing_to_run() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("mine.toml");
    std::fs::write(&config, "[limits]\nworkers = 1\n").expect("config");
    let data = dir.path().join("demo-data");
    let config_arg = config.to_str().expect("utf-8 path");
    for args in [
        &["demo", "-c", config_arg][..],
        &["--config", config_arg, "demo"][..],
    ] {
        let output = Command::new(binary())
            .args(args)
            .args(["--port", "0", "--data-dir"])
            .arg(&data)
            .env_remove("AGENTLAB_CONFIG")
            .stdin(std::process::Stdio::null())
            .output()
            .expect("run agentlab demo");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains("built-in defaults"), "{args:?}: {stderr}");
        assert!(
            stderr.contains(&format!("agentlab run -c {config_arg}")),
            "{args:?}: {stderr}"
        );
        assert!(!data.exists(), "{args:?}: the demo started");
    }
}

/// `/send PATH caption` sends a local file as the demo user; files the bot sends
/// back are shown as their name and size.
#[test]
fn send_hands_a_local_file_to_the_agent_and_files_come_back_as_name_and_size() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("demo-data");
    std::fs::create_dir_all(&data).expect("data dir");
    std::fs::write(data.join("notes.txt"), "twelve bytes").expect("project file");
    let local = dir.path().join("log.txt");
    std::fs::write(&local, "the log the user has").expect("local file");
    let script = dir.path().join("script.txt");
    std::fs::write(
        &script,
        format!(
            "/send {} what does this log say?\n/file notes.txt\n",
            local.display()
        ),
    )
    .expect("script");
    let (code, out) = run_demo(&data, &script);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("You said: what does this log say?"), "{out}");
    let saved = out
        .lines()
        .find_map(|l| {
            l.split_once("Attached file: ")
                .map(|(_, p)| p.trim().to_owned())
        })
        .unwrap_or_else(|| panic!("no saved path in:\n{out}"));
    assert_eq!(
        std::fs::read_to_string(&saved).expect("saved file"),
        "the log the user has"
    );
    assert!(out.contains("📎 notes.txt (12 bytes)"), "{out}");
}

/// A tool approval in the demo: the test agent asks (`approve:Bash ...`), the
/// buttons are printed as numbered choices, typing `1` presses Allow, and the
/// edited message and the agent's answer follow.
#[test]
fn an_approval_is_shown_as_numbered_buttons_and_a_typed_number_presses_one() {
    let dir = tempfile::tempdir().expect("temp dir");
    let script = dir.path().join("script.txt");
    std::fs::write(&script, "approve:Bash touch from-the-demo.txt\n1\n").expect("script");
    let data = dir.path().join("demo-data");
    let (code, out) = run_demo(&data, &script);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("[1] ✅ Allow  [2] ♾️ Always allow Bash  [3] ⛔ Deny"),
        "no numbered buttons:\n{out}"
    );
    let pressed = out.find("you> 1").unwrap_or_else(|| panic!("{out}"));
    let after = &out[pressed..];
    assert!(after.contains("bot (pop-up)> Allowed."), "{out}");
    let edited = after
        .lines()
        .find(|l| l.contains("(edited)> 🔐"))
        .unwrap_or_else(|| panic!("the approval was not edited:\n{out}"));
    let decision = &after[after.find(edited).unwrap_or(0)..];
    assert!(decision.contains("Allowed by"), "{out}");
    assert!(
        after.contains("Bash was allowed: touch from-the-demo.txt"),
        "{out}"
    );
    let ran = std::fs::read_to_string(data.join(agentlab::worker::test_agent::RAN_FILE));
    assert_eq!(
        ran.expect("the tool was recorded"),
        "Bash: touch from-the-demo.txt\n"
    );
}
