//! The Telegram bot end to end: the real binary, the simulator, the test agent.

use std::time::Duration;

use serde_json::json;
use telegram_sim::{Fault, FaultKind, IncomingMessage, SentKind};

use crate::harness::{BotSpec, Options, PATIENCE, Service, wait_until};

#[tokio::test(flavor = "multi_thread")]
async fn allowed_user_prompt_is_answered_after_a_queued_acknowledgement() {
    let service = Service::start(Options::default()).await;
    service.send(0, 111, "hello there");
    let answer = service
        .wait_for_message(0, 111, |t| t.starts_with("You said: hello there"))
        .await;
    assert!(answer.contains("test agent"));
    let messages = service.messages_to(0, 111);
    let ack = messages
        .iter()
        .position(|t| t.starts_with("⏳ Queued as task #"))
        .expect("acknowledged");
    let answered = messages
        .iter()
        .position(|t| t.starts_with("You said"))
        .expect("answered");
    assert!(
        ack < answered,
        "queued is said before the answer: {messages:#?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_user_gets_one_refusal_and_nothing_runs() {
    let service = Service::start(Options::default()).await;
    let mut last = 0;
    for text in ["hi", "run rm -rf", "/status"] {
        last = service.send(0, 999, text);
    }
    service
        .wait_for_message(0, 999, |t| t.contains("not on its list"))
        .await;
    // Every update handled and confirmed, then check nothing else was said.
    service
        .sim
        .wait_for_confirmed(&service.tokens[0], last, PATIENCE)
        .await
        .expect("updates confirmed");
    let (_, tasks) = service.get("/api/tasks").await;
    assert_eq!(
        tasks.as_array().map(Vec::len),
        Some(0),
        "nothing of theirs reached the agent"
    );
    let to_stranger = service.messages_to(0, 999);
    assert_eq!(
        to_stranger.len(),
        1,
        "one refusal, not one per message: {to_stranger:#?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn five_users_sending_at_once_get_their_answers_in_the_order_sent() {
    let service = Service::start(Options::default()).await;
    let users = [111, 222, 333, 444, 555];
    for round in 0..3 {
        for user in users {
            service.send(
                0,
                user,
                &format!("sleep:0.{} user {user} message {round}", (user / 111) % 3),
            );
        }
    }
    for user in users {
        let answers = service
            .wait_for_count(0, user, 3, |t| t.starts_with("You said"))
            .await;
        let order: Vec<usize> = answers
            .iter()
            .map(|a| {
                a.split("message ")
                    .nth(1)
                    .and_then(|r| r[..1].parse().ok())
                    .expect("round")
            })
            .collect();
        assert_eq!(
            order,
            vec![0, 1, 2],
            "user {user}'s answers in the order sent"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn messages_sent_while_the_service_was_down_are_answered_after_start() {
    let sim = telegram_sim::TelegramSim::start(([127, 0, 0, 1], 0).into(), Vec::new())
        .await
        .expect("sim");
    let mut service = Service::prepare(sim, Options::default());
    for i in 0..5 {
        service.send(0, 111, &format!("early {i}"));
    }
    service.spawn();
    service.wait_ready().await;
    let answers = service
        .wait_for_count(0, 111, 5, |t| t.starts_with("You said: early"))
        .await;
    assert_eq!(answers.len(), 5);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_long_answer_with_code_blocks_is_split_and_reassembles() {
    let service = Service::start(Options::default()).await;
    let mut prompt = String::new();
    for i in 0..40 {
        prompt.push_str(&format!(
            "Paragraph {i}: some words about the change, <tags> & ampersands.\n\n"
        ));
        prompt.push_str(&format!(
            "```rust\nfn f{i}() -> u32 {{\n    {i} // a < b && c > d\n}}\n```\n\n"
        ));
    }
    assert!(prompt.len() > 4096);
    let (status, created) = service
        .post(
            "/api/tasks",
            json!({"bot_id": "BOT-001", "user_id": 111, "chat_id": 111, "prompt": prompt}),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    // The whole answer has arrived once its last code block has.
    let last_block = "fn f39() -> u32 {\n    39 // a < b && c > d\n}";
    let items = wait_until("the last part of the answer", || {
        let items: Vec<_> = service
            .sent_to(0, 111)
            .into_iter()
            .filter(|i| i.kind == SentKind::Message && i.parse_mode.as_deref() == Some("HTML"))
            .collect();
        let joined: String = items.iter().filter_map(|i| i.plain_text.clone()).collect();
        joined.contains(last_block).then_some(items)
    })
    .await;
    assert!(items.len() >= 2, "split into several messages: {items:#?}");
    let mut joined = String::new();
    for item in &items {
        let plain = item.plain_text.clone().unwrap_or_default();
        assert!(plain.encode_utf16().count() <= 4096);
        let html = item.text.clone().unwrap_or_default();
        assert_eq!(
            html.matches("<pre>").count(),
            html.matches("</pre>").count(),
            "balanced code blocks"
        );
        joined.push_str(&plain);
    }
    // The answer is "You said: <prompt>\n\n(...)": every line of the prompt's text
    // content arrives, in order (fences become <pre> blocks).
    let expected_lines: Vec<&str> = prompt
        .lines()
        .filter(|l| !l.starts_with("```") && !l.is_empty())
        .collect();
    let mut rest = joined.as_str();
    for line in expected_lines {
        let at = rest
            .find(line)
            .unwrap_or_else(|| panic!("line {line:?} missing or out of order"));
        rest = &rest[at + line.len()..];
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn html_special_characters_and_unbalanced_backticks_arrive_intact() {
    let service = Service::start(Options::default()).await;
    let text = "compare a < b && c > d, then `unbalanced and **half bold & <b>not a tag</b>";
    service.send(0, 111, text);
    let answer = service
        .wait_for_message(0, 111, |t| t.starts_with("You said"))
        .await;
    assert!(answer.contains(text), "{answer}");
}

#[tokio::test(flavor = "multi_thread")]
async fn refused_formatting_is_resent_as_plain_text() {
    let service = Service::start(Options::default()).await;
    let token = service.tokens[0].clone();
    service.send(0, 111, "warm up");
    service
        .wait_for_message(0, 111, |t| t.starts_with("You said: warm up"))
        .await;
    service
        .sim
        .inject_fault(
            &token,
            Fault::new(FaultKind::CantParseEntities)
                .on("sendMessage")
                .times(1),
        )
        .expect("fault");
    // The fault hits the next sendMessage: the "queued" acknowledgement is plain
    // text, so send through the API to have the answer be the next message.
    let (_, created) = service
        .post("/api/tasks", json!({"bot_id": "BOT-001", "user_id": 111, "chat_id": 111, "prompt": "**bold** answer"}))
        .await;
    service
        .wait_task_done(created["id"].as_u64().expect("id"))
        .await;
    let answer = service
        .wait_for_message(0, 111, |t| {
            t.contains("bold** answer") || t.contains("You said: bold")
        })
        .await;
    assert!(answer.contains("bold"), "{answer}");
}

#[tokio::test(flavor = "multi_thread")]
async fn flood_control_on_edits_is_honoured_and_the_answer_still_arrives() {
    let service = Service::start(Options::default()).await;
    let token = service.tokens[0].clone();
    service
        .sim
        .inject_fault(
            &token,
            Fault::new(FaultKind::TooManyRequests { retry_after: 1 })
                .on("editMessageText")
                .times(2),
        )
        .expect("fault");
    service.send(0, 111, "sleep:3 slow one");
    service
        .wait_for_message(0, 111, |t| t.starts_with("You said: slow one"))
        .await;
    let calls = service.sim.calls(&token).expect("calls");
    let edits: Vec<_> = calls
        .iter()
        .filter(|c| c.method.eq_ignore_ascii_case("editMessageText"))
        .collect();
    if edits.len() >= 2 {
        let gap = edits[1].at.saturating_sub(edits[0].at);
        assert!(
            gap >= Duration::from_millis(950),
            "retry_after honoured: {gap:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_31st_prompt_in_a_minute_is_refused_with_a_retry_time() {
    let service = Service::start(Options::default()).await;
    for i in 0..31 {
        service.send(0, 222, &format!("prompt {i}"));
    }
    let refusal = service
        .wait_for_message(0, 222, |t| t.starts_with("Slow down"))
        .await;
    assert!(refusal.contains("Try again in"), "{refusal}");
    service
        .wait_for_count(0, 222, 30, |t| t.starts_with("You said: prompt"))
        .await;
    let (_, tasks) = service.get("/api/tasks?limit=100").await;
    assert_eq!(tasks.as_array().map(Vec::len), Some(30));
}

#[tokio::test(flavor = "multi_thread")]
async fn status_is_answered_while_a_prompt_runs() {
    let service = Service::start(Options::default()).await;
    service.send(0, 111, "sleep:5 long job");
    service
        .wait_for_message(0, 111, |t| t.starts_with("⏳ Queued"))
        .await;
    service.send(0, 111, "/status");
    service
        .wait_for_message(0, 111, |t| {
            t.contains("Queue:") && t.contains("workers busy")
        })
        .await;
    assert!(
        !service
            .messages_to(0, 111)
            .iter()
            .any(|t| t.starts_with("You said: long job")),
        "status came before the running prompt's answer"
    );
    service
        .wait_for_message(0, 111, |t| t.starts_with("You said: long job"))
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn restart_exits_42_and_the_chat_hears_back_after_the_next_start() {
    let mut service = Service::start(Options::default()).await;
    service.send(0, 111, "/restart");
    assert_eq!(service.wait_exit(PATIENCE).await, Some(42));
    service.restart().await;
    let token = service.tokens[0].clone();
    service
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
}

#[tokio::test(flavor = "multi_thread")]
async fn non_text_messages_get_a_clear_answer_and_nothing_crashes() {
    let service = Service::start(Options::default()).await;
    service.send_message(0, &IncomingMessage::photo(111, 111, None));
    service.send_message(0, &IncomingMessage::sticker(111, 111, "👍"));
    service.send(0, 111, "");
    service.send(0, 111, "   ");
    service
        .wait_for_message(0, 111, |t| t.contains("only understand text"))
        .await;
    service
        .wait_for_message(0, 111, |t| t.contains("Look at this image: "))
        .await;
    service
        .wait_for_message(0, 111, |t| t.contains("empty"))
        .await;
    service.send(0, 111, "still alive?");
    service
        .wait_for_message(0, 111, |t| t.starts_with("You said: still alive?"))
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn commands_for_other_bots_and_group_messages_behave() {
    let options = Options {
        bots: vec![BotSpec::new("BOT-001", &[111])],
        ..Options::default()
    };
    let service = Service::start(options).await;
    service.send(0, 111, "/status@someoneelse_bot");
    service.send_message(
        0,
        &IncomingMessage::text(111, -500, "from a group").in_group("team"),
    );
    service
        .wait_for_message(0, -500, |t| t.starts_with("You said: from a group"))
        .await;
    assert!(
        service
            .messages_to(0, 111)
            .iter()
            .all(|t| !t.contains("Queue:"))
    );
}

/// Issue 10's hand-picked inputs: forwarded text is the forwarder's prompt; a
/// channel post is ignored; NUL bytes, emoji ZWJ sequences and right-to-left text
/// arrive intact; a 100,000-character prompt is answered in parts plus a file,
/// bounded with a visible marker; and the bot still answers afterwards.
#[tokio::test(flavor = "multi_thread")]
async fn hand_picked_odd_inputs_are_answered_intact_or_ignored() {
    let service = Service::start(Options::default()).await;
    let token = service.tokens[0].clone();

    service.send_message(
        0,
        &IncomingMessage::text(111, 111, "forwarded words").forwarded_from(999),
    );
    service
        .wait_for_message(0, 111, |t| t.starts_with("You said: forwarded words"))
        .await;

    service
        .sim
        .inject_channel_post(&token, -100_123, "news", "a channel post")
        .expect("channel post");

    service.send(0, 111, "nul\0byte");
    service
        .wait_for_message(0, 111, |t| t.starts_with("You said: nul"))
        .await;

    let mixed =
        "family 👩\u{200d}👩\u{200d}👧\u{200d}👦 and مرحبا بالعالم \u{202e}reversed\u{202c}";
    service.send(0, 111, mixed);
    service
        .wait_for_message(0, 111, |t| t.contains(mixed))
        .await;

    // Long answers come as a few parts plus the answer as a file.
    let long = format!("long{}end", "x".repeat(100_000));
    service.send(0, 111, &long);
    service
        .wait_for_message(0, 111, |t| t.contains("attached as answer.md"))
        .await;
    let file = wait_until("the answer file", || {
        let doc = service
            .sent_to(0, 111)
            .into_iter()
            .find_map(|i| i.document)?;
        Some(String::from_utf8_lossy(&doc.content).into_owned())
    })
    .await;
    // Answers are bounded (64 KiB) with a visible marker; the run files keep all.
    assert!(file.starts_with("You said: longxxx"), "{}", &file[..40]);
    assert!(
        file.trim_end()
            .ends_with("the full output is in the task's run files]"),
        "no truncation marker at the end of the file"
    );

    service.send(0, 111, "still alive?");
    service
        .wait_for_message(0, 111, |t| t.starts_with("You said: still alive?"))
        .await;
    assert!(
        service.sent_to(0, -100_123).is_empty(),
        "answered a channel post"
    );
}
