//! Projects (`[[bots.projects]]`, `/project`): the next prompt runs in the chosen
//! project's workdir, in that project's own agent session; `/new` resets only the
//! current project; the choice survives a restart; `POST /api/tasks` takes a
//! `project`. Through the real binary, the Telegram simulator and the test agent
//! (whose `pwd` answers its working directory and whose session is the one it was
//! given with `--resume`, or a fresh one).

use std::path::Path;

use agentlab_testkit::claude::{require_claude, service_options};
use agentlab_testkit::model::{ModelSim, Reply};
use serde_json::{Value, json};
use telegram_sim::{FileKind, IncomingFile, IncomingMessage, SentItem, SentKind};

use crate::harness::{Options, Service, wait_until};

const USER: i64 = 111;
/// Not in the bot's `allowed_users`.
const STRANGER: i64 = 999;

/// A service whose bot has the project `api` (in its own folder) besides its
/// workdir; `keep_warm_s = 0` runs a process per prompt, so a session goes on
/// only through `--resume`.
async fn service_with_api_project(keep_warm_s: u64) -> (Service, tempfile::TempDir) {
    let api = tempfile::tempdir().expect("api workdir");
    let binary = Options::default().binary;
    let options = Options {
        agent_toml: Some(format!(
            "command = [{:?}, \"test-agent\"]\nkeep_warm_s = {keep_warm_s}\n",
            binary.display().to_string()
        )),
        extra_toml: projects_toml(api.path()),
        ..Options::default()
    };
    (Service::start(options).await, api)
}

fn projects_toml(api: &Path) -> String {
    format!(
        "\n[[bots.projects]]\nname = \"api\"\nworkdir = {:?}\n",
        api.display().to_string()
    )
}

/// Sends `text` as a prompt and waits for its task to finish; returns the task
/// as `GET /api/tasks/{id}` shows it.
async fn prompt(service: &Service, text: &str) -> Value {
    let queued = |t: &str| t.starts_with("⏳ Queued as task #");
    let before = service
        .messages_to(0, USER)
        .iter()
        .filter(|t| queued(t))
        .count();
    service.send(0, USER, text);
    let acks = service.wait_for_count(0, USER, before + 1, queued).await;
    let id: u64 = acks[before]
        .trim_start_matches("⏳ Queued as task #")
        .trim_end_matches('.')
        .parse()
        .expect("task id");
    let task = service.wait_task_done(id).await;
    assert_eq!(task["status"], "succeeded", "{task}");
    task
}

/// Sends a command and waits for a new message that satisfies `pred`.
async fn command(service: &Service, text: &str, pred: impl Fn(&str) -> bool) -> String {
    let before = service.messages_to(0, USER).len();
    service.send(0, USER, text);
    wait_until(&format!("the answer to {text}"), || {
        service
            .messages_to(0, USER)
            .into_iter()
            .skip(before)
            .find(|t| pred(t))
    })
    .await
}

fn in_dir(task: &Value, dir: &Path) -> bool {
    let answer = task["result"].as_str().unwrap_or_default();
    let canonical = dir.canonicalize().expect("canonical");
    answer.contains(&dir.display().to_string()) || answer.contains(&canonical.display().to_string())
}

fn session(task: &Value) -> String {
    task["session_id"]
        .as_str()
        .unwrap_or_else(|| panic!("no session: {task}"))
        .to_owned()
}

async fn projects_keep_their_own_sessions(keep_warm_s: u64) {
    let (service, api) = service_with_api_project(keep_warm_s).await;
    let root = service.dir.path().to_path_buf();

    let first = prompt(&service, "pwd").await;
    assert!(in_dir(&first, &root), "{first}");
    assert_eq!(first["project"], "default");
    let default_session = session(&first);

    let switched = command(&service, "/project api", |t| t.starts_with("Project: api")).await;
    assert!(
        switched.contains(&api.path().display().to_string()),
        "{switched}"
    );
    let in_api = prompt(&service, "pwd").await;
    assert!(
        in_dir(&in_api, api.path()),
        "runs in the api workdir: {in_api}"
    );
    assert_eq!(in_api["project"], "api");
    let api_session = session(&in_api);
    assert_ne!(api_session, default_session, "api has a session of its own");

    command(&service, "/project default", |t| {
        t.starts_with("Project: default")
    })
    .await;
    let back = prompt(&service, "pwd").await;
    assert!(in_dir(&back, &root), "{back}");
    assert_eq!(session(&back), default_session, "the first session resumes");
    if keep_warm_s > 0 {
        // The api prompt had a warm agent of its own: default's stayed open.
        assert_ne!(in_api["pid"], first["pid"], "{in_api}");
        assert_eq!(
            back["pid"], first["pid"],
            "default's warm agent took it: {back}"
        );
    }

    // /task shows a project other than default; default's tasks read as before.
    let id = in_api["id"].as_u64().expect("id");
    let shown = command(&service, &format!("/task {id}"), |t| {
        t.starts_with(&format!("Task #{id}"))
    })
    .await;
    assert!(shown.contains("Project: api"), "{shown}");
    let id = back["id"].as_u64().expect("id");
    let shown = command(&service, &format!("/task {id}"), |t| {
        t.starts_with(&format!("Task #{id}"))
    })
    .await;
    assert!(!shown.contains("Project:"), "{shown}");

    // /new in default: a fresh session there, api's goes on.
    command(&service, "/new", |t| {
        t.starts_with("Started a fresh agent session")
    })
    .await;
    let fresh = prompt(&service, "hello").await;
    assert_ne!(session(&fresh), default_session, "default starts afresh");
    command(&service, "/project api", |t| t.starts_with("Project: api")).await;
    let api_again = prompt(&service, "pwd").await;
    assert_eq!(
        session(&api_again),
        api_session,
        "/new elsewhere left api's session"
    );
    assert!(in_dir(&api_again, api.path()), "{api_again}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_switched_project_runs_in_its_workdir_with_its_own_session_and_switching_back_resumes_the_first()
 {
    projects_keep_their_own_sessions(0).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn warm_agents_are_kept_per_project_so_switching_back_resumes_the_first_session() {
    projects_keep_their_own_sessions(600).await;
}

/// `user` presses the button `data` under `item`; returns the press's answer.
async fn press(service: &Service, user: i64, item: &SentItem, data: &str) -> String {
    let message_id = item.message_id.expect("message id");
    service.press(0, user, USER, message_id, data).await
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unknown_project_gets_the_list_whose_buttons_switch_only_for_allowed_users() {
    let (service, api) = service_with_api_project(0).await;
    let listed = command(&service, "/project nope", |t| {
        t.contains("There is no project")
    })
    .await;
    assert!(listed.contains("There is no project nope"), "{listed}");
    assert!(
        listed.contains("default") && listed.contains("api"),
        "{listed}"
    );
    assert!(listed.contains("(current)"), "{listed}");
    let list = service
        .sent_to(0, USER)
        .into_iter()
        .rfind(|i| i.kind == SentKind::Message && i.reply_markup.is_some())
        .expect("the list has buttons");
    let shown = list.buttons();
    assert_eq!(shown.len(), 2, "{shown:?}");
    assert!(
        shown[0].0.contains("default") && shown[0].0.starts_with('✓'),
        "{shown:?}"
    );
    let (_, api_data) = shown[1].clone();
    assert!(api_data.len() < 64, "{api_data}");

    // Someone the bot does not allow presses: answered, nothing changes.
    let refused = press(&service, STRANGER, &list, &api_data).await;
    assert!(refused.contains("not allowed"), "{refused}");
    let still_default = prompt(&service, "pwd").await;
    assert_eq!(still_default["project"], "default");

    let switched = press(&service, USER, &list, &api_data).await;
    assert!(switched.starts_with("Project: api"), "{switched}");
    let in_api = prompt(&service, "pwd").await;
    assert_eq!(in_api["project"], "api");
    assert!(in_dir(&in_api, api.path()), "{in_api}");

    let status = command(&service, "/status", |t| t.starts_with("agentlab ")).await;
    assert!(status.contains("Project: api"), "{status}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_http_api_takes_a_project_and_refuses_an_unknown_one_naming_the_known() {
    let (service, api) = service_with_api_project(0).await;
    let (status, created) = service
        .post(
            "/api/tasks",
            json!({"bot_id": "BOT-001", "user_id": USER, "prompt": "pwd", "project": "api"}),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let task = service
        .wait_task_done(created["id"].as_u64().expect("id"))
        .await;
    assert_eq!(task["project"], "api");
    assert!(in_dir(&task, api.path()), "{task}");

    let (status, plain) = service
        .post(
            "/api/tasks",
            json!({"bot_id": "BOT-001", "user_id": USER, "prompt": "pwd"}),
        )
        .await;
    assert_eq!(status, 201, "{plain}");
    let task = service
        .wait_task_done(plain["id"].as_u64().expect("id"))
        .await;
    assert_eq!(task["project"], "default");
    assert!(in_dir(&task, service.dir.path()), "{task}");

    let (status, refused) = service
        .post(
            "/api/tasks",
            json!({"bot_id": "BOT-001", "user_id": USER, "prompt": "pwd", "project": "web"}),
        )
        .await;
    assert_eq!(status, 400, "{refused}");
    let error = refused["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("web") && error.contains("default, api"),
        "{error}"
    );

    // `agentlab ask --project` posts it.
    let asked = ask(&service, &["--project", "api", "pwd"]).await;
    assert!(
        asked.status.success(),
        "{}",
        String::from_utf8_lossy(&asked.stderr)
    );
    let canonical = api.path().canonicalize().expect("canonical");
    let out = String::from_utf8_lossy(&asked.stdout);
    assert!(out.contains(&canonical.display().to_string()), "{out}");
    let refused = ask(&service, &["--project", "web", "pwd"]).await;
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("default, api"), "{err}");
}

/// Runs `agentlab ask ARGS` against the service; returns its output.
async fn ask(service: &Service, args: &[&str]) -> std::process::Output {
    let run = tokio::process::Command::new(crate::harness::binary())
        .arg("--config")
        .arg(&service.config_path)
        .arg("ask")
        .args(args)
        .env_remove("AGENTLAB_CONFIG")
        .envs(service.env())
        .output();
    tokio::time::timeout(crate::harness::PATIENCE, run)
        .await
        .expect("the CLI answers in time")
        .expect("run the CLI")
}

#[tokio::test(flavor = "multi_thread")]
async fn the_chosen_project_survives_a_restart_and_a_removed_one_falls_back_to_default() {
    let (mut service, api) = service_with_api_project(0).await;
    command(&service, "/project api", |t| t.starts_with("Project: api")).await;
    service.stop().await;
    service.restart().await;
    let task = prompt(&service, "pwd").await;
    assert_eq!(task["project"], "api");
    assert!(in_dir(&task, api.path()), "{task}");

    // The project leaves the configuration: the next prompt runs in default,
    // and the user is told why.
    service.stop().await;
    let config = std::fs::read_to_string(&service.config_path).expect("config");
    let without = config.replace(&projects_toml(api.path()), "");
    assert_ne!(without, config);
    std::fs::write(&service.config_path, without).expect("write config");
    service.restart().await;
    let task = prompt(&service, "pwd").await;
    assert_eq!(task["project"], "default");
    assert!(in_dir(&task, service.dir.path()), "{task}");
    service
        .wait_for_message(0, USER, |t| t.contains("`api` is no longer configured"))
        .await;
}

/// The last request the real CLI sent the model: the user texts it carried.
fn last_user_texts(model: &ModelSim) -> Vec<String> {
    model
        .agent_requests()
        .pop()
        .expect("a request")
        .user_texts()
}

#[tokio::test(flavor = "multi_thread")]
#[cfg_attr(
    missing_tool = "claude",
    ignore = "the pinned Claude Code CLI is not installed: see .ci/run (npm install --prefix .tools/claude-code)"
)]
async fn with_the_real_cli_two_projects_keep_two_conversations() {
    let Some(binary) = require_claude("two_projects_keep_two_conversations") else {
        return;
    };
    let model = ModelSim::start().await.expect("model");
    for reply in [
        "Noted: blue.",
        "Noted: red.",
        "You said blue.",
        "You said red.",
    ] {
        model.push(Reply::text(reply));
    }
    let api = tempfile::tempdir().expect("api workdir");
    let service = Service::start(Options {
        extra_toml: projects_toml(api.path()),
        ..service_options(&binary, &model, "")
    })
    .await;

    service.send(0, USER, "my colour is blue");
    service
        .wait_for_message(0, USER, |m| m.contains("Noted: blue."))
        .await;
    command(&service, "/project api", |t| t.starts_with("Project: api")).await;
    service.send(0, USER, "my colour is red");
    service
        .wait_for_message(0, USER, |m| m.contains("Noted: red."))
        .await;
    let shown = last_user_texts(&model);
    assert!(
        !shown.iter().any(|t| t == "my colour is blue"),
        "api starts its own conversation: {shown:?}"
    );

    command(&service, "/project default", |t| {
        t.starts_with("Project: default")
    })
    .await;
    service.send(0, USER, "which colour?");
    service
        .wait_for_message(0, USER, |m| m.contains("You said blue."))
        .await;
    let shown = last_user_texts(&model);
    assert!(shown.iter().any(|t| t == "my colour is blue"), "{shown:?}");
    assert!(!shown.iter().any(|t| t == "my colour is red"), "{shown:?}");

    command(&service, "/project api", |t| t.starts_with("Project: api")).await;
    service.send(0, USER, "which colour, here?");
    service
        .wait_for_message(0, USER, |m| m.contains("You said red."))
        .await;
    let shown = last_user_texts(&model);
    assert!(shown.iter().any(|t| t == "my colour is red"), "{shown:?}");
    assert!(!shown.iter().any(|t| t == "my colour is blue"), "{shown:?}");
}

/// The approval messages (with buttons) sent to the user, oldest first.
fn approval_messages(service: &Service) -> Vec<SentItem> {
    service
        .sent_to(0, USER)
        .into_iter()
        .filter(|i| i.kind == SentKind::Message && i.reply_markup.is_some())
        .collect()
}

/// `user` presses the button of `item` whose label ends with `label`.
async fn press_labelled(service: &Service, item: &SentItem, label: &str) -> String {
    let (_, data) = item
        .buttons()
        .into_iter()
        .find(|(text, _)| text.ends_with(label))
        .unwrap_or_else(|| panic!("no {label} button: {:?}", item.buttons()));
    press(service, USER, item, &data).await
}

#[tokio::test(flavor = "multi_thread")]
#[cfg_attr(
    missing_tool = "claude",
    ignore = "the pinned Claude Code CLI is not installed: see .ci/run (npm install --prefix .tools/claude-code)"
)]
async fn always_allow_in_one_project_does_not_allow_in_another() {
    let Some(binary) = require_claude("always_allow_per_project") else {
        return;
    };
    let model = ModelSim::start().await.expect("model");
    model.push(Reply::bash("echo 1 > one.txt"));
    model.push(Reply::text("First done."));
    model.push(Reply::bash("echo 2 > two.txt"));
    model.push(Reply::text("Second done."));
    model.push(Reply::bash("echo 3 > three.txt"));
    model.push(Reply::text("Third done."));
    let api = tempfile::tempdir().expect("api workdir");
    let service = Service::start(Options {
        extra_toml: projects_toml(api.path()),
        ..service_options(&binary, &model, "")
    })
    .await;

    service.send(0, USER, "first");
    let asked = wait_until("the first approval", || {
        approval_messages(&service).into_iter().next()
    })
    .await;
    let answer = press_labelled(&service, &asked, "Always allow Bash").await;
    assert_eq!(answer, "Allowed for this session.");
    service
        .wait_for_message(0, USER, |m| m.contains("First done."))
        .await;

    command(&service, "/project api", |t| t.starts_with("Project: api")).await;
    service.send(0, USER, "second");
    let asked = wait_until("api's own approval", || {
        approval_messages(&service).into_iter().nth(1)
    })
    .await;
    assert_eq!(press_labelled(&service, &asked, "Allow").await, "Allowed.");
    service
        .wait_for_message(0, USER, |m| m.contains("Second done."))
        .await;
    assert!(api.path().join("two.txt").exists(), "ran in api's workdir");

    command(&service, "/project default", |t| {
        t.starts_with("Project: default")
    })
    .await;
    service.send(0, USER, "third");
    service
        .wait_for_message(0, USER, |m| m.contains("Third done."))
        .await;
    assert!(service.dir.path().join("three.txt").exists());
    assert_eq!(
        approval_messages(&service).len(),
        2,
        "default's session still always allows Bash"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn downloads_file_and_the_outbox_are_the_current_projects() {
    // The agent writes where it ran into the outbox, then is the test agent.
    let scripts = tempfile::tempdir().expect("scripts");
    let script = scripts.path().join("agent.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nmkdir -p .agentlab/outbox\npwd > .agentlab/outbox/where.txt\nexec {:?} test-agent \"$@\"\n",
            crate::harness::binary()
        ),
    )
    .expect("script");
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    let api = tempfile::tempdir().expect("api workdir");
    let service = Service::start(Options {
        agent_toml: Some(format!(
            "command = [{:?}]\nkeep_warm_s = 0",
            script.display().to_string()
        )),
        extra_toml: projects_toml(api.path()),
        ..Options::default()
    })
    .await;
    command(&service, "/project api", |t| t.starts_with("Project: api")).await;

    let document = IncomingFile::new(FileKind::Document, b"log line\n".to_vec())
        .named("app.log")
        .captioned("read this");
    service.send_message(0, &IncomingMessage::file(USER, USER, document));
    let answer = service
        .wait_for_message(0, USER, |t| t.contains("Attached file: "))
        .await;
    let saved = answer
        .lines()
        .find_map(|l| l.split_once("Attached file: "))
        .map(|(_, path)| Path::new(path.trim()).to_path_buf())
        .expect("a saved path");
    let api_root = std::path::absolute(api.path()).expect("absolute");
    assert!(
        saved.starts_with(api_root.join(".agentlab").join("inbox")),
        "{saved:?}"
    );
    assert_eq!(std::fs::read(&saved).expect("saved"), b"log line\n");

    // The task's outbox is api's: the file says the agent ran there.
    let where_ran = wait_for_upload(&service, "where.txt").await;
    let canonical = api.path().canonicalize().expect("canonical");
    assert_eq!(
        String::from_utf8_lossy(&where_ran).trim(),
        canonical.display().to_string()
    );
    assert!(api.path().join(".agentlab/outbox/sent/where.txt").exists());

    // /file reads api's workdir.
    std::fs::write(api.path().join("notes.txt"), b"api notes").expect("notes");
    service.send(0, USER, "/file notes.txt");
    assert_eq!(wait_for_upload(&service, "notes.txt").await, b"api notes");
}

/// Waits for a document or photo named `name` sent to `USER`; its bytes.
async fn wait_for_upload(service: &Service, name: &str) -> Vec<u8> {
    wait_until(&format!("`{name}` sent"), || {
        service.sent_to(0, USER).into_iter().find_map(|item| {
            let document = item.document?;
            (document.file_name.as_deref() == Some(name)).then_some(document.content)
        })
    })
    .await
}
