//! The CLI over HTTP (`status`, `tasks`, `ask`, `restart`, the `dump` fallback)
//! against a running service, and against none.

use std::path::Path;
use std::process::Output;

use crate::harness::{Options, PATIENCE, Service, binary};

/// Runs `agentlab --config <config> <args>` with `env`; returns its output.
async fn agentlab(config: &Path, env: &[(String, String)], args: &[&str]) -> Output {
    let mut cmd = tokio::process::Command::new(binary());
    cmd.arg("--config")
        .arg(config)
        .args(args)
        .env_remove("AGENTLAB_CONFIG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    tokio::time::timeout(PATIENCE, cmd.output())
        .await
        .expect("the CLI answers in time")
        .expect("run the CLI")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_status_ask_tasks_and_dump_work_through_the_running_service() {
    let mut service = Service::start(Options::default()).await;
    let env = service.env();
    let config = service.config_path.clone();

    let status = agentlab(&config, &env, &["status"]).await;
    let out = text(&status.stdout);
    assert!(
        status.status.success(),
        "status failed: {out}{}",
        text(&status.stderr)
    );
    assert!(out.contains("agentlab") && out.contains("BOT-001"), "{out}");

    let ask = agentlab(&config, &env, &["ask", "hello from the cli"]).await;
    assert!(ask.status.success(), "ask failed: {}", text(&ask.stderr));
    assert!(
        text(&ask.stdout).contains("hello from the cli"),
        "{}",
        text(&ask.stdout)
    );

    let no_wait = agentlab(&config, &env, &["ask", "--no-wait", "later"]).await;
    assert!(no_wait.status.success(), "{}", text(&no_wait.stderr));
    let id: u64 = text(&no_wait.stdout)
        .trim()
        .parse()
        .expect("--no-wait prints the task id");
    service.wait_task_done(id).await;

    let tasks = agentlab(&config, &env, &["tasks", "--status", "succeeded"]).await;
    let listed = text(&tasks.stdout);
    assert!(tasks.status.success(), "{}", text(&tasks.stderr));
    assert!(
        listed.contains(&format!("#{id}")) && listed.contains("hello from the cli"),
        "{listed}"
    );

    let bad = agentlab(&config, &env, &["tasks", "--status", "sleeping"]).await;
    assert!(!bad.status.success());
    assert!(
        text(&bad.stderr).contains("unknown status"),
        "{}",
        text(&bad.stderr)
    );

    // The service holds the database: dump falls back to the admin route.
    let dump = agentlab(
        &config,
        &env,
        &["dump", "--table", "tasks", "--format", "ndjson"],
    )
    .await;
    assert!(dump.status.success(), "{}", text(&dump.stderr));
    assert!(
        text(&dump.stderr).contains("admin API"),
        "{}",
        text(&dump.stderr)
    );
    let rows: Vec<serde_json::Value> = text(&dump.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("ndjson"))
        .collect();
    assert!(
        rows.iter().any(|r| r["id"] == id && r["table"] == "tasks"),
        "{rows:?}"
    );

    // Every format prints through the service exactly what it prints from the file.
    const FORMATS: [&str; 3] = ["json", "ndjson", "table"];
    let mut remote = Vec::new();
    for format in FORMATS {
        let dump = agentlab(
            &config,
            &env,
            &["dump", "--table", "tasks", "--format", format],
        )
        .await;
        assert!(dump.status.success(), "{format}: {}", text(&dump.stderr));
        assert!(text(&dump.stderr).contains("admin API"), "{format}");
        remote.push(text(&dump.stdout));
    }
    let json: serde_json::Value = serde_json::from_str(&remote[0]).expect("one JSON document");
    assert!(
        json["tasks"]
            .as_array()
            .is_some_and(|rows| rows.iter().any(|r| r["id"] == id)),
        "{json}"
    );
    assert!(remote[2].starts_with("== tasks ==\n"), "{}", remote[2]);
    assert!(remote[2].contains(&format!("id={id}")), "{}", remote[2]);

    assert_eq!(service.stop().await, Some(0));
    // A dump only reads: the stopped service's file stays byte for byte.
    let db = service.data_dir().join("agentlab.redb");
    let file_before = std::fs::read(&db).expect("database file");
    let entries_before = dir_entries(&service.data_dir());
    for (format, through_service) in FORMATS.iter().zip(&remote) {
        let dump = agentlab(
            &config,
            &env,
            &["dump", "--table", "tasks", "--format", format],
        )
        .await;
        assert!(dump.status.success(), "{format}: {}", text(&dump.stderr));
        assert!(!text(&dump.stderr).contains("admin API"), "{format}");
        assert_eq!(
            &text(&dump.stdout),
            through_service,
            "--format {format} differs between the file and the service"
        );
    }
    assert!(
        std::fs::read(&db).expect("database file") == file_before,
        "dump changed the database file"
    );
    assert_eq!(
        dir_entries(&service.data_dir()),
        entries_before,
        "dump left files behind"
    );
}

/// The names in a folder, sorted.
fn dir_entries(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dump_of_a_data_dir_without_a_database_says_so_and_creates_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path(), "");
    let data = dir.path().join("data");
    let dump = agentlab(&config, &[], &["dump"]).await;
    assert_eq!(dump.status.code(), Some(1), "{}", text(&dump.stderr));
    assert!(
        text(&dump.stderr).contains("nothing to dump"),
        "{}",
        text(&dump.stderr)
    );
    assert!(text(&dump.stdout).is_empty());
    assert!(
        !data.join("agentlab.redb").exists(),
        "a database was created"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_of_a_data_dir_without_a_database_says_so_and_creates_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path(), "");
    let backup = agentlab(&config, &[], &["backup"]).await;
    assert_eq!(backup.status.code(), Some(1), "{}", text(&backup.stderr));
    assert!(
        text(&backup.stderr).contains("nothing to back up"),
        "{}",
        text(&backup.stderr)
    );
    assert!(
        !dir.path().join("data").join("agentlab.redb").exists(),
        "a database was created"
    );
    assert!(
        !dir.path().join("backups").exists()
            || std::fs::read_dir(dir.path().join("backups"))
                .expect("backups")
                .next()
                .is_none(),
        "a snapshot was written"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_config_file_is_one_clear_error_with_its_cause_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("nowhere.toml");
    let check = agentlab(&missing, &[], &["check-config"]).await;
    assert_eq!(check.status.code(), Some(1));
    let stderr = text(&check.stderr);
    assert!(stderr.contains("cannot read config file"), "{stderr}");
    assert_eq!(
        stderr.matches("No such file or directory").count(),
        1,
        "{stderr}"
    );
}

/// `run` refuses to start while a bot's token variable is unset (or empty), so
/// `check-config` fails too (exit 1), naming the bot and the variable; it still
/// prints the configuration, and passes once the variable is set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_config_fails_naming_the_variable_when_a_bot_token_is_unset() {
    let dir = tempfile::tempdir().expect("tempdir");
    let var = "AGENTLAB_TEST_CHECK_CONFIG_TOKEN";
    let config = dir.path().join("agentlab.toml");
    std::fs::write(
        &config,
        format!("[[bots]]\nid = \"BOT-001\"\ntoken_env = \"{var}\"\nallowed_users = [1]\n"),
    )
    .expect("config");
    for value in [None, Some("")] {
        let env: Vec<(String, String)> = value
            .map(|v| (var.to_string(), v.to_string()))
            .into_iter()
            .collect();
        let check = agentlab(&config, &env, &["check-config"]).await;
        let (stdout, stderr) = (text(&check.stdout), text(&check.stderr));
        assert_eq!(check.status.code(), Some(1), "{value:?}: {stdout}{stderr}");
        assert!(stdout.contains("[[bots]]"), "{value:?}: {stdout}");
        assert!(stdout.contains(&format!("${var} is NOT set")), "{stdout}");
        assert!(
            stderr.contains(&format!(
                "bot `BOT-001`: the token variable ${var} is not set"
            )),
            "{value:?}: {stderr}"
        );
    }
    let env = [(var.to_string(), "123:abc".to_string())];
    let check = agentlab(&config, &env, &["check-config"]).await;
    assert_eq!(check.status.code(), Some(0), "{}", text(&check.stderr));
    assert!(!text(&check.stdout).contains("123:abc"));
    assert!(
        text(&check.stdout).contains("max_upload_mb = 20"),
        "the upload limit is shown: {}",
        text(&check.stdout)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_restart_asks_the_service_to_exit_with_42() {
    let mut service = Service::start(Options::default()).await;
    let restart = agentlab(&service.config_path.clone(), &service.env(), &["restart"]).await;
    assert!(restart.status.success(), "{}", text(&restart.stderr));
    assert!(text(&restart.stdout).contains("restart requested"));
    assert_eq!(service.wait_exit(PATIENCE).await, Some(42));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_says_plainly_when_the_service_is_not_running() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A port nothing listens on: bound, then released.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let config = write_config(
        dir.path(),
        &format!("[http]\nbind = \"127.0.0.1:{port}\"\n"),
    );
    let status = agentlab(&config, &[], &["status"]).await;
    assert_eq!(
        status.status.code(),
        Some(1),
        "status exits non-zero when nothing runs"
    );
    assert!(
        text(&status.stdout).contains("NOT running"),
        "{}",
        text(&status.stdout)
    );
    for args in [&["tasks"][..], &["ask", "hi"][..], &["restart"][..]] {
        let out = agentlab(&config, &[], args).await;
        assert!(
            !out.status.success(),
            "{args:?} succeeded without a service"
        );
        assert!(
            text(&out.stderr).contains("not running"),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
}

/// `<dir>/agentlab.toml` for a service that is not running: folders under `dir`,
/// one bot, and `sections` (TOML tables) before the bot.
fn write_config(dir: &std::path::Path, sections: &str) -> std::path::PathBuf {
    let config = dir.join("agentlab.toml");
    let root = dir.display();
    std::fs::write(
        &config,
        format!(
            "data_dir = \"{root}/data\"\nlog_dir = \"{root}/logs\"\nbackup_dir = \"{root}/backups\"\n{sections}[[bots]]\nid = \"BOT-001\"\n"
        ),
    )
    .expect("config");
    config
}
