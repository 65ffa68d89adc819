//! `getUpdates`: long polling, offsets, limits, allowed updates, conflicts.

use std::time::{Duration, Instant};

use serde_json::json;
use teloxide::{
    ApiError, RequestError,
    payloads::setters::*,
    prelude::*,
    types::{AllowedUpdate, UpdateKind},
};

use super::{TOKEN, USER, bot, start};

fn texts(updates: &[Update]) -> Vec<String> {
    updates
        .iter()
        .filter_map(|u| match &u.kind {
            UpdateKind::Message(m) => m.text().map(str::to_owned),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn long_poll_returns_promptly_when_an_update_arrives() {
    let sim = start().await;
    let bot = bot(&sim);
    let injector = sim.clone();
    let inject = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        injector.inject_text(TOKEN, USER, USER, "wake up").unwrap();
    });
    let started = Instant::now();
    let updates = bot.get_updates().timeout(10).await.expect("getUpdates");
    let waited = started.elapsed();
    inject.await.unwrap();
    assert_eq!(texts(&updates), ["wake up"]);
    assert!(
        waited >= Duration::from_millis(250),
        "it waited for the update: {waited:?}"
    );
    assert!(
        waited < Duration::from_secs(3),
        "it answered promptly: {waited:?}"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn long_poll_times_out_empty() {
    let sim = start().await;
    let started = Instant::now();
    let updates = bot(&sim)
        .get_updates()
        .timeout(1)
        .await
        .expect("getUpdates");
    let waited = started.elapsed();
    assert!(updates.is_empty());
    assert!(waited >= Duration::from_millis(950), "{waited:?}");
    assert!(waited < Duration::from_secs(3), "{waited:?}");
    let quick = Instant::now();
    bot(&sim).get_updates().await.expect("timeout 0");
    assert!(quick.elapsed() < Duration::from_millis(500));
    sim.shutdown().await;
}

#[tokio::test]
async fn offset_confirms_and_limit_bounds() {
    let sim = start().await;
    let bot = bot(&sim);
    for text in ["a", "b", "c"] {
        sim.inject_text(TOKEN, USER, USER, text).unwrap();
    }
    let all = bot.get_updates().await.unwrap();
    assert_eq!(texts(&all), ["a", "b", "c"]);
    let again = bot.get_updates().await.unwrap();
    assert_eq!(again.len(), 3, "unconfirmed updates are delivered again");

    let first_two = bot.get_updates().limit(2).await.unwrap();
    assert_eq!(texts(&first_two), ["a", "b"]);
    let next = i32::try_from(first_two[1].id.0).unwrap() + 1;
    let rest = bot.get_updates().offset(next).await.unwrap();
    assert_eq!(texts(&rest), ["c"]);
    assert_eq!(sim.pending_updates(TOKEN).unwrap(), 1);
    let last = u64::from(rest[0].id.0);
    let waiting = {
        let sim = sim.clone();
        tokio::spawn(async move { sim.wait_for_confirmed(TOKEN, last, super::WAIT).await })
    };
    assert!(
        sim.wait_for_confirmed(TOKEN, last, Duration::from_millis(50))
            .await
            .is_err()
    );
    let done = i32::try_from(rest[0].id.0).unwrap() + 1;
    assert!(bot.get_updates().offset(done).await.unwrap().is_empty());
    assert_eq!(sim.pending_updates(TOKEN).unwrap(), 0);
    waiting.await.unwrap().expect("confirmation observed");
    assert!(
        sim.wait_for_confirmed(TOKEN, last + 100, Duration::from_millis(50))
            .await
            .is_err(),
        "not issued yet"
    );

    for text in ["d", "e", "f"] {
        sim.inject_text(TOKEN, USER, USER, text).unwrap();
    }
    let tail = bot.get_updates().offset(-1).await.unwrap();
    assert_eq!(texts(&tail), ["f"], "negative offset keeps only the tail");
    sim.shutdown().await;
}

#[tokio::test]
async fn allowed_updates_filter_types() {
    let sim = start().await;
    let bot = bot(&sim);
    let sent = bot.send_message(ChatId(USER), "menu").await.unwrap();
    sim.inject_text(TOKEN, USER, USER, "text").unwrap();
    sim.inject_callback(TOKEN, USER, USER, sent.id.0, "x")
        .unwrap();
    let updates = bot
        .get_updates()
        .allowed_updates(vec![AllowedUpdate::CallbackQuery])
        .await
        .unwrap();
    assert_eq!(updates.len(), 1);
    assert!(matches!(updates[0].kind, UpdateKind::CallbackQuery(_)));
    sim.shutdown().await;
}

#[tokio::test]
async fn a_newer_poll_terminates_the_waiting_one() {
    let sim = start().await;
    let first_bot = bot(&sim);
    let waiting = tokio::spawn(async move { first_bot.get_updates().timeout(10).await });
    sim.wait_for_calls(TOKEN, |calls| !calls.is_empty(), super::WAIT)
        .await
        .unwrap();
    // The first poll is logged on arrival; give it time to start waiting.
    tokio::time::sleep(Duration::from_millis(300)).await;
    bot(&sim).get_updates().await.expect("the newer poll wins");
    let older = tokio::time::timeout(Duration::from_secs(3), waiting)
        .await
        .unwrap()
        .unwrap();
    assert!(
        matches!(
            older,
            Err(RequestError::Api(ApiError::TerminatedByOtherGetUpdates))
        ),
        "{older:?}"
    );
    let calls = sim.calls(TOKEN).unwrap();
    assert_eq!(calls[0].status, Some(409));
    sim.shutdown().await;
}

#[tokio::test]
async fn shutdown_ends_pending_long_polls() {
    let sim = start().await;
    let bot = bot(&sim);
    let waiting = tokio::spawn(async move { bot.get_updates().timeout(30).await });
    sim.wait_for_calls(TOKEN, |calls| !calls.is_empty(), super::WAIT)
        .await
        .unwrap();
    let started = Instant::now();
    sim.shutdown().await;
    assert!(started.elapsed() < Duration::from_secs(3));
    let result = tokio::time::timeout(Duration::from_secs(3), waiting)
        .await
        .unwrap()
        .unwrap();
    assert!(result.map(|u| u.is_empty()).unwrap_or(true));
}

#[tokio::test]
async fn raw_updates_keep_their_content() {
    let sim = start().await;
    let id = sim
        .inject_raw(TOKEN, json!({ "update_id": 5, "message": {
            "message_id": 77, "date": 1, "chat": { "id": 9, "type": "private", "first_name": "R" },
            "from": { "id": 9, "is_bot": false, "first_name": "R" }, "text": "raw"
        }}))
        .unwrap();
    let updates = bot(&sim).get_updates().await.unwrap();
    assert_eq!(
        u64::from(updates[0].id.0),
        id,
        "the simulator assigns update ids"
    );
    assert_eq!(texts(&updates), ["raw"]);
    let reply = bot(&sim)
        .send_message(ChatId(9), "re")
        .reply_parameters(teloxide::types::ReplyParameters::new(
            teloxide::types::MessageId(77),
        ))
        .await
        .expect("raw messages can be replied to");
    assert_eq!(reply.id.0, 78, "ids continue after the raw message");
    sim.inject_raw(TOKEN, json!({ "callback_query": {
        "id": "raw-cb", "from": { "id": 9, "is_bot": false, "first_name": "R" }, "chat_instance": "c", "data": "d"
    }}))
    .unwrap();
    bot(&sim)
        .answer_callback_query(teloxide::types::CallbackQueryId("raw-cb".into()))
        .await
        .expect("raw callback ids can be answered");
    assert!(sim.inject_raw(TOKEN, json!([1])).is_err());
    assert!(sim.inject_raw(TOKEN, json!({ "update_id": 1 })).is_err());
    sim.shutdown().await;
}
