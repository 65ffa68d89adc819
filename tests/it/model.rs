//! The model picker (`/model`): the buttons, a press, the choice kept per (bot,
//! user) across `/new` and restarts, and the model reaching the agent's command
//! line — with the test agent (which answers `argv` with its arguments) and with
//! the real Claude Code CLI against the test kit's scripted Messages API (which
//! records the model each request names).

use std::path::Path;

use agentlab_testkit::claude::{require_claude, service_options};
use agentlab_testkit::model::{ModelSim, Reply};
use serde_json::Value;
use telegram_sim::{SentItem, SentKind};

use crate::harness::{Options, Service, StoreAccess, binary, wait_until};

/// An allowed user; 999 is nobody the bot knows.
const USER: i64 = 222;
const STRANGER: i64 = 999;
/// `[bots.agent]` keys of a bot offering two models over a default.
const MODELS: &str = "model = \"model-base\"\nmodels = [\"model-a\", \"model-b\"]\n";

/// A service whose test agent is started as Claude Code would be, with `agent`
/// added to `[bots.agent]`.
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

/// The bot's tasks, newest first.
async fn tasks(service: &Service) -> Vec<Value> {
    let (status, body) = service.get("/api/tasks?limit=100").await;
    assert_eq!(status, 200, "{body}");
    body.as_array().cloned().unwrap_or_default()
}

fn labels(item: &SentItem) -> Vec<String> {
    item.buttons().into_iter().map(|(label, _)| label).collect()
}

/// Waits for the `n`th picker (1-based) sent to the user.
async fn wait_for_picker(service: &Service, n: usize) -> SentItem {
    wait_until("a model picker", || {
        service
            .sent_to(0, USER)
            .into_iter()
            .filter(|i| {
                i.kind == SentKind::Message
                    && i.reply_markup.is_some()
                    && i.plain_text
                        .as_deref()
                        .is_some_and(|t| t.contains("Pick the model"))
            })
            .nth(n - 1)
    })
    .await
}

/// Waits for an edit of `message_id` whose buttons satisfy `pred`; its buttons.
async fn wait_for_edit(
    service: &Service,
    message_id: i32,
    pred: impl Fn(&[String]) -> bool,
) -> Vec<String> {
    wait_until("the picker edited", || {
        service.sent_to(0, USER).into_iter().find_map(|i| {
            let shown = labels(&i);
            (i.kind == SentKind::Edit && i.message_id == Some(message_id) && pred(&shown))
                .then_some(shown)
        })
    })
    .await
}

/// `user` presses the button labelled `label` on `picker`; the press's answer.
async fn press(service: &Service, user: i64, picker: &SentItem, label: &str) -> String {
    let (_, data) = picker
        .buttons()
        .into_iter()
        .find(|(text, _)| text.trim_start_matches("✅ ") == label)
        .unwrap_or_else(|| panic!("no {label} button: {:?}", picker.reply_markup));
    press_data(service, user, picker.message_id.expect("message id"), &data).await
}

async fn press_data(service: &Service, user: i64, message_id: i32, data: &str) -> String {
    service.press(0, user, USER, message_id, data).await
}

/// Sends `argv <tag>` and waits for the test agent's answer: its arguments.
async fn agent_arguments(service: &Service, tag: &str) -> String {
    service.send(0, USER, &format!("argv {tag}"));
    let answer = service
        .wait_for_message(0, USER, |m| m.contains("argv:") && m.contains(tag))
        .await;
    assert!(answer.contains("--input-format stream-json"), "{answer}");
    answer
}

/// The names of the commands the bot registered with Telegram.
async fn registered_commands(service: &Service) -> Vec<String> {
    wait_until("the bot's commands", || {
        let commands = service.sim.commands(&service.tokens[0]).ok()?;
        (!commands.is_empty()).then(|| commands.into_iter().map(|c| c.command).collect())
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_press_picks_the_model_and_the_next_prompt_runs_a_new_process_with_it() {
    let service = service(MODELS).await;
    assert!(
        registered_commands(&service)
            .await
            .contains(&"model".into())
    );
    service.send(0, USER, "/help");
    service
        .wait_for_message(0, USER, |m| m.contains("/model — choose the agent's model"))
        .await;

    let first = agent_arguments(&service, "first-prompt").await;
    assert!(first.contains("--model model-base"), "{first}");
    assert!(!first.contains("--resume"), "{first}");
    let before = tasks(&service).await[0].clone();
    let first_pid = before["pid"].as_u64().expect("pid");
    let session = before["session_id"].as_str().expect("session").to_owned();

    service.send(0, USER, "/model");
    let picker = wait_for_picker(&service, 1).await;
    let text = picker.plain_text.clone().unwrap_or_default();
    assert!(
        text.contains("Model: model-base (the bot's default)"),
        "{text}"
    );
    assert_eq!(
        labels(&picker),
        ["model-a", "model-b", "✅ Bot default (model-base)"]
    );
    for (_, data) in picker.buttons() {
        assert!(data.len() < 64, "{data}");
        assert!(!data.contains("model"), "an index, not the name: {data}");
    }

    let refused = press(&service, STRANGER, &picker, "model-a").await;
    assert_eq!(refused, "You may not use this bot.");
    let picked = press(&service, USER, &picker, "model-b").await;
    assert!(picked.starts_with("Model: model-b."), "{picked}");
    let shown = wait_for_edit(&service, picker.message_id.expect("id"), |l| {
        l.iter().any(|l| l == "✅ model-b")
    })
    .await;
    assert_eq!(shown, ["model-a", "✅ model-b", "Bot default (model-base)"]);
    service.send(0, USER, "/status");
    service
        .wait_for_message(0, USER, |m| m.contains("Model: model-b (yours; /model)"))
        .await;

    // The idle warm process runs model-base: a new one takes the prompt, with
    // the new model, on the same conversation.
    let second = agent_arguments(&service, "second-prompt").await;
    assert!(second.contains("--model model-b"), "{second}");
    assert!(second.contains(&format!("--resume {session}")), "{second}");
    let after = tasks(&service).await[0].clone();
    assert_ne!(after["pid"].as_u64(), Some(first_pid), "{after}");
    assert_eq!(after["session_id"].as_str(), Some(session.as_str()));
    wait_until("the old process ended", || {
        (!Path::new(&format!("/proc/{first_pid}")).exists()).then_some(())
    })
    .await;

    assert!(
        !service
            .sent_to(0, USER)
            .iter()
            .any(|i| i.kind == SentKind::Edit
                && i.message_id == picker.message_id
                && labels(i).contains(&"✅ model-a".to_owned())),
        "the stranger's press changed nothing"
    );
    service.send(0, USER, "/model gpt-9");
    let refused = wait_for_picker(&service, 2).await;
    let text = refused.plain_text.unwrap_or_default();
    assert!(
        text.contains("\"gpt-9\" is not one of the models offered"),
        "{text}"
    );
    assert!(text.contains("Model: model-b (yours)"), "{text}");
    service.send(0, USER, "/model default");
    service
        .wait_for_message(0, USER, |m| m.starts_with("Model: model-base."))
        .await;
    let third = agent_arguments(&service, "third-prompt").await;
    assert!(third.contains("--model model-base"), "{third}");

    let mut service = service;
    service.stop().await;
    let store = service.open_store();
    assert_eq!(store.user_model("BOT-001", STRANGER).expect("read"), None);
    assert_eq!(store.user_model("BOT-001", USER).expect("read"), None);
    store.close();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_choice_survives_new_and_a_restart_and_a_withdrawn_button_shows_the_list() {
    let mut service = service(&format!("{MODELS}keep_warm_s = 0\n")).await;
    service.send(0, USER, "/model");
    let picker = wait_for_picker(&service, 1).await;
    let picked = press(&service, USER, &picker, "model-a").await;
    assert!(picked.starts_with("Model: model-a."), "{picked}");
    service.send(0, USER, "/new");
    service
        .wait_for_message(0, USER, |m| m.starts_with("Started a fresh agent session"))
        .await;
    let cold = agent_arguments(&service, "cold-prompt").await;
    assert!(cold.contains("--model model-a"), "{cold}");

    // The operator lists another model first: model-a moves to the second row.
    service.stop().await;
    let config = std::fs::read_to_string(&service.config_path).expect("config");
    let changed = config.replace(
        "models = [\"model-a\", \"model-b\"]",
        "models = [\"model-c\", \"model-a\"]",
    );
    assert_ne!(config, changed);
    std::fs::write(&service.config_path, changed).expect("config");
    service.restart().await;

    service.send(0, USER, "/status");
    service
        .wait_for_message(0, USER, |m| m.contains("Model: model-a (yours; /model)"))
        .await;
    // The first row's button was model-a's; it is model-c's now.
    let (_, stale) = picker.buttons().into_iter().next().expect("a button");
    let message_id = picker.message_id.expect("id");
    let answer = press_data(&service, USER, message_id, &stale).await;
    assert_eq!(
        answer,
        "That model is no longer offered; here is the current list."
    );
    let shown = wait_for_edit(&service, message_id, |l| l.iter().any(|l| l == "model-c")).await;
    assert_eq!(shown, ["model-c", "✅ model-a", "Bot default (model-base)"]);
    let after = agent_arguments(&service, "prompt-after-restart").await;
    assert!(after.contains("--model model-a"), "{after}");
}

#[tokio::test(flavor = "multi_thread")]
async fn without_models_the_command_is_hidden_and_answers_like_an_unknown_one() {
    let service = service("").await;
    let commands = registered_commands(&service).await;
    assert!(commands.contains(&"status".into()), "{commands:?}");
    assert!(!commands.contains(&"model".into()), "{commands:?}");
    service.send(0, USER, "/help");
    let help = service
        .wait_for_message(0, USER, |m| m.contains("Commands:"))
        .await;
    assert!(!help.contains("/model"), "{help}");
    service.send(0, USER, "/model");
    service
        .wait_for_message(0, USER, |m| {
            m == "I don't know the command /model. Send /help for the list."
        })
        .await;
    service.send(0, USER, "/status");
    service
        .wait_for_message(0, USER, |m| {
            m.contains("Model: the CLI's default (the bot's)")
        })
        .await;
    let first = service.sent_to(0, USER)[0].message_id.expect("id");
    let answer = press_data(&service, USER, first, "md:d").await;
    assert_eq!(answer, "This bot offers no models to pick.");
    let answer = press_data(&service, USER, first, "md:0:00000000").await;
    assert_eq!(answer, "This bot offers no models to pick.");
    let arguments = agent_arguments(&service, "prompt-without-models").await;
    assert!(!arguments.contains("--model"), "{arguments}");
}

#[tokio::test(flavor = "multi_thread")]
#[cfg_attr(
    missing_tool = "claude",
    ignore = "the pinned Claude Code CLI is not installed: see .ci/run (npm install --prefix .tools/claude-code)"
)]
async fn the_real_cli_asks_the_chosen_model_and_keeps_the_conversation() {
    let Some(claude) = require_claude("the_real_cli_asks_the_chosen_model") else {
        return;
    };
    let model = ModelSim::start().await.expect("model");
    model.push(Reply::text("First answer."));
    model.push(Reply::text("Second answer."));
    let service = Service::start(service_options(
        &claude,
        &model,
        &format!("models = [\"{CHOSEN}\"]\n"),
    ))
    .await;

    service.send(0, USER, "remember the word kumquat");
    service
        .wait_for_message(0, USER, |m| m.contains("First answer."))
        .await;
    let default_model = model.agent_requests()[0].model().map(str::to_owned);
    assert_ne!(default_model.as_deref(), Some(CHOSEN));

    service.send(0, USER, &format!("/model {CHOSEN}"));
    service
        .wait_for_message(0, USER, |m| m.starts_with(&format!("Model: {CHOSEN}.")))
        .await;
    service.send(0, USER, "which word?");
    service
        .wait_for_message(0, USER, |m| m.contains("Second answer."))
        .await;
    let requests = model.agent_requests();
    let last = requests.last().expect("a request");
    assert_eq!(last.model(), Some(CHOSEN), "{:?}", last.model());
    let shown = last.user_texts();
    assert!(
        shown.iter().any(|t| t.contains("kumquat")),
        "the conversation was resumed: {shown:?}"
    );
    let all = tasks(&service).await;
    assert_eq!(all[0]["session_id"], all[1]["session_id"], "{all:?}");
    assert_ne!(
        all[0]["pid"], all[1]["pid"],
        "a new process for the new model"
    );
}

/// A model the pinned CLI sends as it is given (no alias to resolve).
const CHOSEN: &str = "claude-sonnet-4-5";
