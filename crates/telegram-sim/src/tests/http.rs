//! Plain HTTP: envelopes, encodings, malformed input, and the `/control` routes.

use std::time::Duration;

use reqwest::Client;
use serde_json::{Value, json};

use super::{TOKEN, USER, call, start};
use crate::{SimConfig, SimLimits, TelegramSim};

#[tokio::test]
async fn envelopes_for_unknown_method_token_and_path() {
    let sim = start().await;
    let client = Client::new();
    let (status, body) = call(&sim, "sendPigeon", &json!({})).await;
    assert_eq!(status, 404);
    assert_eq!(
        body,
        json!({ "ok": false, "error_code": 404, "description": "Not Found" })
    );

    let url = format!("{}/bot999:wrong/getMe", sim.url());
    let response = client.post(url).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 401);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["description"], "Unauthorized");

    let response = client
        .get(format!("{}/nothing/here/at/all", sim.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 404);
    sim.shutdown().await;
}

#[tokio::test]
async fn malformed_json_is_a_400_with_description() {
    let sim = start().await;
    let url = format!("{}/bot{TOKEN}/sendMessage", sim.url());
    let response = Client::new()
        .post(url)
        .header("content-type", "application/json")
        .body("{\"chat_id\": 1, \"text\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["ok"], false);
    assert!(
        body["description"]
            .as_str()
            .unwrap()
            .starts_with("Bad Request: can't parse JSON body")
    );
    let calls = sim.calls(TOKEN).unwrap();
    assert_eq!(calls[0].status, Some(400));
    sim.shutdown().await;
}

#[tokio::test]
async fn methods_are_case_insensitive_and_accept_forms_and_queries() {
    let sim = start().await;
    let client = Client::new();
    let (status, body) = call(&sim, "GETME", &json!({})).await;
    assert_eq!(
        (status, body["result"]["is_bot"].clone()),
        (200, json!(true))
    );

    let url = format!("{}/bot{TOKEN}/sendmessage", sim.url());
    let response = client
        .post(&url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("chat_id=42&text=hello+form%21")
        .send()
        .await
        .unwrap();
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["result"]["text"], "hello form!");

    let response = client
        .get(format!("{url}?chat_id=42&text=from%20query"))
        .send()
        .await
        .unwrap();
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["result"]["message_id"], 2);
    assert_eq!(sim.call_count(TOKEN, "sendMessage").unwrap(), 2);
    sim.shutdown().await;
}

#[tokio::test]
async fn parameter_validation() {
    let sim = start().await;
    let cases = [
        (
            "sendMessage",
            json!({ "text": "x" }),
            "Bad Request: chat_id is empty",
        ),
        (
            "sendMessage",
            json!({ "chat_id": "@nobody", "text": "x" }),
            "Bad Request: chat not found",
        ),
        (
            "sendMessage",
            json!({ "chat_id": 1 }),
            "Bad Request: message text is empty",
        ),
        (
            "sendMessage",
            json!({ "chat_id": 1, "text": "x", "parse_mode": "Klingon" }),
            "Bad Request: unsupported parse_mode",
        ),
        (
            "sendMessage",
            json!({ "chat_id": 1, "text": "<b>x</i>", "parse_mode": "HTML" }),
            "Bad Request: can't parse entities: Unmatched end tag at byte offset 4, expected \"</b>\", found \"</i>\"",
        ),
        (
            "editMessageText",
            json!({ "chat_id": 1, "text": "x" }),
            "Bad Request: message identifier is not specified",
        ),
        (
            "deleteMessage",
            json!({ "chat_id": 1, "message_id": 5 }),
            "Bad Request: message to delete not found",
        ),
        (
            "sendChatAction",
            json!({ "chat_id": 1, "action": "dancing" }),
            "Bad Request: wrong parameter action in request",
        ),
        (
            "sendDocument",
            json!({ "chat_id": 1 }),
            "Bad Request: there is no document in the request",
        ),
        (
            "answerCallbackQuery",
            json!({ "callback_query_id": "nope" }),
            "Bad Request: query is too old and response timeout expired or query ID is invalid",
        ),
    ];
    for (method, body, expected) in cases {
        let (status, answer) = call(&sim, method, &body).await;
        assert_eq!(status, 400, "{method} {body}");
        assert_eq!(answer["description"], expected, "{method} {body}");
        assert_eq!(answer["error_code"], 400);
    }
    sim.inject_text(TOKEN, USER, USER, "from the user").unwrap();
    let (_, answer) = call(
        &sim,
        "editMessageText",
        &json!({ "chat_id": USER, "message_id": 1, "text": "x" }),
    )
    .await;
    assert_eq!(
        answer["description"],
        "Bad Request: message can't be edited"
    );
    let (status, _) = call(
        &sim,
        "sendMessage",
        &json!({ "chat_id": "42", "text": "string ids work" }),
    )
    .await;
    assert_eq!(status, 200);
    sim.shutdown().await;
}

#[tokio::test]
async fn oversized_bodies_are_rejected() {
    let limits = SimLimits {
        max_body_bytes: 1024,
        ..SimLimits::default()
    };
    let config = SimConfig {
        limits,
        ..SimConfig::new("127.0.0.1:0".parse().unwrap(), vec![TOKEN.into()])
    };
    let sim = TelegramSim::start_with(config).await.unwrap();
    let (status, body) = call(
        &sim,
        "sendMessage",
        &json!({ "chat_id": 1, "text": "x".repeat(2000) }),
    )
    .await;
    assert_eq!(status, 413);
    assert_eq!(body["ok"], false);
    sim.shutdown().await;
}

#[tokio::test]
async fn curl_style_multipart_upload() {
    let sim = start().await;
    let form = reqwest::multipart::Form::new()
        .text("chat_id", USER.to_string())
        .part(
            "document",
            reqwest::multipart::Part::bytes(vec![0u8, 159, 146, 150]).file_name("bin.dat"),
        );
    let url = format!("{}/bot{TOKEN}/sendDocument", sim.url());
    let response = Client::new()
        .post(url)
        .multipart(form)
        .send()
        .await
        .unwrap();
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["result"]["document"]["file_name"], "bin.dat");
    let items = sim.sent(TOKEN).unwrap();
    assert_eq!(
        items[0].document.as_ref().unwrap().content,
        vec![0u8, 159, 146, 150]
    );
    sim.shutdown().await;
}

async fn control(
    sim: &crate::SimHandle,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let url = format!("{}/control/{path}", sim.url());
    let client = Client::new();
    let request = match method {
        "POST" => client.post(url).json(&body.unwrap_or(Value::Null)),
        "DELETE" => client.delete(url),
        _ => client.get(url),
    };
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

#[tokio::test]
async fn control_routes_drive_a_whole_exchange() {
    let sim = start().await;
    let (status, health) = control(&sim, "GET", "health", None).await;
    assert_eq!((status, health), (200, json!({ "ok": true })));
    let (_, bot) = control(
        &sim,
        "POST",
        "bots",
        Some(json!({ "token": "77:other", "username": "other_bot" })),
    )
    .await;
    assert_eq!(bot["id"], 77);
    let (_, bots) = control(&sim, "GET", "bots", None).await;
    assert_eq!(bots.as_array().unwrap().len(), 2);

    let body = json!({ "token": TOKEN, "user_id": USER, "chat_id": USER, "text": "hello" });
    let (status, injected) = control(&sim, "POST", "inject/text", Some(body)).await;
    assert_eq!(status, 200);
    assert_eq!(injected["message_id"], 1);
    let message = json!({ "token": TOKEN, "message": {
        "user_id": USER, "chat_id": -5, "chat": { "type": "group", "title": "G" },
        "content": { "type": "sticker", "emoji": "🙂" }
    }});
    let (status, _) = control(&sim, "POST", "inject/message", Some(message)).await;
    assert_eq!(status, 200);
    let (_, pending) = control(&sim, "GET", &format!("updates/pending?token={TOKEN}"), None).await;
    assert_eq!(pending["pending"], 2);
    let last = injected["update_id"].as_u64().unwrap() + 1;
    let confirm = format!("wait/confirmed?token={TOKEN}&update_id={last}&timeout_ms=50");
    let (status, _) = control(&sim, "GET", &confirm, None).await;
    assert_eq!(status, 408);
    call(&sim, "getUpdates", &json!({ "offset": last + 1 })).await;
    let (status, _) = control(&sim, "GET", &confirm, None).await;
    assert_eq!(status, 200);

    let fault = json!({ "token": TOKEN, "fault": { "method": "sendMessage", "kind": { "type": "too_many_requests", "retry_after": 3 } } });
    let (status, _) = control(&sim, "POST", "faults", Some(fault)).await;
    assert_eq!(status, 200);
    let (_, faults) = control(&sim, "GET", &format!("faults?token={TOKEN}"), None).await;
    assert_eq!(faults[0]["times"], 1);
    let (status, limited) = call(
        &sim,
        "sendMessage",
        &json!({ "chat_id": USER, "text": "hi" }),
    )
    .await;
    assert_eq!(status, 429);
    assert_eq!(limited["parameters"]["retry_after"], 3);

    let waiter = {
        let url = format!(
            "{}/control/wait/messages?token={TOKEN}&chat_id={USER}&count=1&timeout_ms=5000",
            sim.url()
        );
        tokio::spawn(async move {
            Client::new()
                .get(url)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    call(
        &sim,
        "sendMessage",
        &json!({ "chat_id": USER, "text": "<b>hi</b>", "parse_mode": "HTML" }),
    )
    .await;
    let waited = waiter.await.unwrap();
    assert_eq!(waited[0]["plain_text"], "hi");
    assert_eq!(waited[0]["kind"], "message");

    let (_, sent) = control(
        &sim,
        "GET",
        &format!("sent?token={TOKEN}&chat_id={USER}"),
        None,
    )
    .await;
    assert_eq!(sent.as_array().unwrap().len(), 1);
    let (_, chat) = control(
        &sim,
        "GET",
        &format!("chat?token={TOKEN}&chat_id={USER}"),
        None,
    )
    .await;
    assert_eq!(
        chat.as_array().unwrap().len(),
        2,
        "user's hello and the bot's hi"
    );
    let (_, counts) = control(&sim, "GET", &format!("calls/counts?token={TOKEN}"), None).await;
    assert_eq!(counts["sendMessage"], 2);
    let (_, calls) = control(&sim, "GET", &format!("calls?token={TOKEN}"), None).await;
    let first_send = calls
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["method"] == "sendMessage")
        .unwrap();
    assert_eq!(first_send["status"], 429);
    assert_eq!(first_send["fault"]["type"], "too_many_requests");

    let (status, timeout) = control(
        &sim,
        "GET",
        &format!("wait/sent?token={TOKEN}&since=100&timeout_ms=50"),
        None,
    )
    .await;
    assert_eq!(status, 408);
    assert!(timeout["error"].as_str().unwrap().contains("timed out"));
    let (status, unknown) = control(&sim, "GET", "sent?token=nope", None).await;
    assert_eq!(status, 404);
    assert!(
        !unknown["error"].as_str().unwrap().contains("nope"),
        "tokens are redacted"
    );
    let (status, _) = control(&sim, "POST", "inject/text", Some(json!({ "token": TOKEN }))).await;
    assert_eq!(status, 400);
    let (status, _) = control(&sim, "POST", &format!("reset?token={TOKEN}"), None).await;
    assert_eq!(status, 200);
    assert!(sim.calls(TOKEN).unwrap().is_empty());
    sim.shutdown().await;
}

#[tokio::test]
async fn garbage_never_breaks_the_server() {
    let sim = start().await;
    let client = Client::new();
    let bodies: [(&str, &[u8]); 6] = [
        ("application/json", b"\xff\xfe\x00"),
        ("application/json", b"null"),
        ("multipart/form-data; boundary=zz", b"--zz\r\nbroken"),
        ("multipart/form-data", b"--zz--"),
        ("application/x-www-form-urlencoded", b"%%%=&&==%zz"),
        ("text/plain", b"hello"),
    ];
    for method in [
        "sendMessage",
        "getUpdates",
        "sendDocument",
        "setMyCommands",
        "editMessageText",
    ] {
        for (content_type, body) in bodies {
            let url = format!("{}/bot{TOKEN}/{method}", sim.url());
            let response = client
                .post(url)
                .header("content-type", content_type)
                .body(body.to_vec())
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            assert!(status < 500, "{method} {content_type}: {status}");
            let answer: Value = response.json().await.unwrap();
            assert_eq!(answer["ok"], status == 200, "{method} {content_type}");
        }
    }
    let (status, _) = call(&sim, "getMe", &json!({})).await;
    assert_eq!(status, 200);
    sim.shutdown().await;
}

#[tokio::test]
async fn registration_rejects_unusable_tokens() {
    assert!(
        TelegramSim::start("127.0.0.1:0".parse().unwrap(), vec!["bad/token".into()])
            .await
            .is_err()
    );
    let sim = start().await;
    assert!(sim.register_bot("").is_err());
    let again = sim.register_bot(TOKEN).unwrap();
    assert_eq!(again.id, 123_456, "registration is idempotent");
    let named = sim
        .register_bot_as("no-id-token-here", "named_bot", "Named")
        .unwrap();
    assert_eq!(named.username, "named_bot");
    sim.shutdown().await;
}
