//! What a newcomer meets first (issue 24): the demo, and the command line
//! pointed at the demo with `examples/demo.toml`, run as a person would.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::harness::{PATIENCE, binary};

/// `examples/demo.toml` in this checkout.
fn demo_toml() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/demo.toml")
}

/// Runs `agentlab demo --script` with `lines` in `dir`, on `dir/demo-data`.
fn run_demo_script(dir: &Path, lines: &str) -> Output {
    let script = dir.join("script.txt");
    std::fs::write(&script, lines).expect("script");
    Command::new(binary())
        .current_dir(dir)
        .args(["demo", "--port", "0", "--script"])
        .arg(&script)
        .env_remove("AGENTLAB_CONFIG")
        .env_remove("AGENTLAB_ADMIN_TOKEN")
        .output()
        .expect("run agentlab demo")
}

/// Runs a command of the CLI in `dir` with `examples/demo.toml`.
fn cli_on_demo(dir: &Path, args: &[&str]) -> Output {
    Command::new(binary())
        .current_dir(dir)
        .arg("--config")
        .arg(demo_toml())
        .args(args)
        .env_remove("AGENTLAB_CONFIG")
        .env_remove("AGENTLAB_ADMIN_TOKEN")
        .output()
        .expect("run agentlab")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A prompt that fails is retried, and the chat sees each retry (which attempt
/// failed, why, and which comes next), then a failure that says how many
/// attempts it had. A run of milliseconds is not shown as "0.0 s".
#[test]
fn a_failing_prompt_shows_its_retries_in_the_chat() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = run_demo_script(dir.path(), "fail\n/task 1\nhello\n/task 2\n");
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        text(&out.stderr)
    );
    assert!(
        stdout.contains("of 3 failed (agent_error:") && stdout.contains("Trying again"),
        "no retry shown:\n{stdout}"
    );
    assert!(
        stdout.contains("Task #1 failed after 3 attempts (agent_error)"),
        "{stdout}"
    );
    assert!(stdout.contains("(attempt 3 of 3)"), "{stdout}");
    assert!(!stdout.contains("Ran for 0.0 s"), "{stdout}");
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("Ran for ") && l.ends_with(" ms")),
        "{stdout}"
    );
}

/// After a demo, `examples/demo.toml` points `tasks`, `dump`, `logs`, `backup`
/// and `backups` at the demo's folders; sizes agree between `backup` and
/// `backups`; an empty table is dumped as empty; a bad `--since` is a usage error.
#[test]
fn the_demo_config_points_the_command_line_at_the_demo() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = run_demo_script(dir.path(), "hello from the demo\n");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));

    let dump = cli_on_demo(
        dir.path(),
        &["dump", "--table", "tasks", "--format", "ndjson"],
    );
    assert_eq!(dump.status.code(), Some(0), "{}", text(&dump.stderr));
    assert!(
        text(&dump.stdout).contains("hello from the demo"),
        "{}",
        text(&dump.stdout)
    );
    let empty = cli_on_demo(dir.path(), &["dump", "--table", "alerts"]);
    assert_eq!(empty.status.code(), Some(0), "{}", text(&empty.stderr));
    let doc: serde_json::Value = serde_json::from_slice(&empty.stdout).expect("JSON");
    assert_eq!(doc, serde_json::json!({"alerts": []}));
    let table = cli_on_demo(
        dir.path(),
        &["dump", "--table", "alerts", "--format", "table"],
    );
    assert_eq!(text(&table.stdout), "== alerts ==\n(no rows)\n");

    let since = cli_on_demo(dir.path(), &["dump", "--since", "yesterday"]);
    assert_eq!(since.status.code(), Some(2), "{}", text(&since.stderr));
    assert!(
        text(&since.stderr).contains("ISO-8601"),
        "{}",
        text(&since.stderr)
    );

    let logs = cli_on_demo(dir.path(), &["logs", "-n", "200"]);
    assert_eq!(logs.status.code(), Some(0), "{}", text(&logs.stderr));
    let readable = text(&logs.stdout);
    assert!(readable.contains("agentlab starting"), "{readable}");
    assert!(
        !readable.contains("\"fields\""),
        "raw JSON by default:\n{readable}"
    );
    // A reader that goes away (`logs | head`) ends the command quietly.
    let mut cut = Command::new(binary())
        .current_dir(dir.path())
        .arg("--config")
        .arg(demo_toml())
        .args(["logs", "-n", "200"])
        .env_remove("AGENTLAB_CONFIG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run agentlab logs");
    drop(cut.stdout.take());
    let cut = cut.wait_with_output().expect("logs ends");
    assert_eq!(cut.status.code(), Some(0), "{}", text(&cut.stderr));
    let raw = cli_on_demo(dir.path(), &["logs", "--json", "-n", "1"]);
    let line = text(&raw.stdout);
    let record: serde_json::Value = serde_json::from_str(line.trim()).expect("a JSON record");
    assert!(record["fields"]["message"].is_string(), "{line}");

    let backup = cli_on_demo(dir.path(), &["backup"]);
    assert_eq!(backup.status.code(), Some(0), "{}", text(&backup.stderr));
    let said = text(&backup.stdout);
    let snapshots = dir.path().join("demo-data/backups");
    let file = std::fs::read_dir(&snapshots)
        .expect("the demo's backup folder")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "redb"))
        .expect("a snapshot");
    let size =
        agentlab::backup::create::human_size(std::fs::metadata(&file).expect("snapshot").len());
    assert!(
        said.contains(&format!("({size},")),
        "backup said {said}, file is {size}"
    );
    let listed = cli_on_demo(dir.path(), &["backups"]);
    assert!(
        text(&listed.stdout).contains(&size),
        "backups said {}, file is {size}",
        text(&listed.stdout)
    );
}

/// A second demo on a folder a first one still runs on names the real cause —
/// the folder is in use — not the port.
#[test]
fn a_second_demo_on_the_same_folder_says_the_folder_is_in_use() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("demo-data");
    let mut first = Command::new(binary())
        .args(["demo", "--port", "0", "--data-dir"])
        .arg(&data)
        .env_remove("AGENTLAB_CONFIG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the first demo");
    let stdout = first.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.contains("HTTP API:") {
                let _ = tx.send(());
            }
        }
    });
    rx.recv_timeout(PATIENCE).expect("the first demo is ready");

    let second = Command::new(binary())
        .args(["demo", "--port", "0", "--data-dir"])
        .arg(&data)
        .env_remove("AGENTLAB_CONFIG")
        .stdin(Stdio::null())
        .output()
        .expect("run the second demo");
    drop(first.stdin.take());
    let first_code = first.wait().expect("the first demo ends").code();
    let _ = reader.join();

    let stderr = text(&second.stderr);
    assert_eq!(second.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("is in use by another agentlab"), "{stderr}");
    assert!(!stderr.contains("--port 0"), "blames the port: {stderr}");
    assert_eq!(first_code, Some(0), "the first demo was disturbed");
}

/// A configuration without bots is refused by `check-config` and by `run`,
/// with what to do.
#[test]
fn a_configuration_without_bots_is_refused_with_what_to_do() {
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path().display();
    let config = dir.path().join("agentlab.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = \"{root}/data\"\nlog_dir = \"{root}/logs\"\nbackup_dir = \"{root}/backups\"\n\
             [http]\nbind = \"127.0.0.1:0\"\n"
        ),
    )
    .expect("config");
    for command in ["check-config", "run"] {
        let out = Command::new(binary())
            .arg("--config")
            .arg(&config)
            .arg(command)
            .env_remove("AGENTLAB_CONFIG")
            .output()
            .expect("run agentlab");
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{command}: {stderr}");
        assert!(
            stderr.contains("no bots are configured"),
            "{command}: {stderr}"
        );
        assert!(stderr.contains("[[bots]]"), "{command}: {stderr}");
    }
    assert!(
        !dir.path().join("data").exists(),
        "`run` created its data folder before refusing"
    );
}

/// At a terminal the demo shows `you> ` after the user's line and after the
/// bot said something, not on every quiet half second, so a slow answer does
/// not pile prompts up. (`script` gives the demo a terminal.)
#[test]
fn the_interactive_demo_does_not_repeat_its_prompt_while_quiet() {
    let util_linux = Command::new("script")
        .arg("--version")
        .output()
        .is_ok_and(|out| text(&out.stdout).contains("util-linux"));
    if !util_linux {
        // BSD and macOS script(1) take other flags.
        eprintln!("skipped: util-linux `script` is not installed");
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let demo = format!(
        "{} demo --port 0 --data-dir {}",
        binary(),
        dir.path().join("demo-data").display()
    );
    let mut session = Command::new("script")
        .args(["-qfec", &demo, "/dev/null"])
        .env_remove("AGENTLAB_CONFIG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the demo on a terminal");
    let stdout = session.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            all.push_str(&line);
            all.push('\n');
            let _ = tx.send(line);
        }
        all
    });
    let wait_for = |needle: &str| {
        let deadline = std::time::Instant::now() + PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return,
                Ok(_) => {}
                Err(e) => panic!("no {needle:?} from the demo: {e}"),
            }
        }
    };
    let mut stdin = session.stdin.take().expect("stdin");
    wait_for("HTTP API:");
    use std::io::Write;
    // Quiet for four seconds while the agent works: eight ticks of the demo.
    writeln!(stdin, "sleep:4 quiet please").expect("type a prompt");
    wait_for("You said: quiet please");
    writeln!(stdin, "/quit").expect("type /quit");
    let status = session.wait().expect("the demo ends");
    drop(stdin);
    let all = reader.join().expect("reader");
    assert!(status.success(), "{all}");
    let prompts = all.matches("you> ").count();
    let bot_lines = all.lines().filter(|l| l.contains("bot [")).count();
    // One at the start, one after the line, one after each print of the bot's.
    assert!(
        prompts <= 2 + bot_lines,
        "{prompts} prompts for {bot_lines} lines of the bot's:\n{all}"
    );
}
