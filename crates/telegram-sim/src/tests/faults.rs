//! Fault injection, observed through a real teloxide client (and plain HTTP
//! for 5xx, because teloxide sleeps 10 s after a server error).

use std::time::{Duration, Instant};

use serde_json::json;
use teloxide::{ApiError, RequestError, prelude::*, types::UpdateKind};

use super::{TOKEN, USER, WAIT, bot, bot_with_timeout, call, start};
use crate::{Fault, FaultKind, SentKind};

#[tokio::test]
async fn retry_after_is_reported_and_backoff_is_measurable() {
    let sim = start().await;
    let bot = bot(&sim);
    sim.inject_fault(
        TOKEN,
        Fault::new(FaultKind::TooManyRequests { retry_after: 1 }).on("sendMessage"),
    )
    .unwrap();
    bot.get_me().await.expect("faults only hit their method");
    let err = bot.send_message(ChatId(USER), "hi").await.unwrap_err();
    let RequestError::RetryAfter(after) = err else {
        panic!("expected RetryAfter, got {err:?}");
    };
    assert_eq!(after.seconds(), 1);
    tokio::time::sleep(after.duration()).await;
    bot.send_message(ChatId(USER), "hi")
        .await
        .expect("retry succeeds");

    let calls: Vec<_> = sim
        .calls(TOKEN)
        .unwrap()
        .into_iter()
        .filter(|c| c.method == "sendMessage")
        .collect();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0].status, Some(429));
    assert_eq!(
        calls[0].fault,
        Some(FaultKind::TooManyRequests { retry_after: 1 })
    );
    assert_eq!(calls[1].status, Some(200));
    assert!(
        calls[1].at - calls[0].at >= Duration::from_secs(1),
        "backoff respected"
    );
    assert_eq!(sim.call_count(TOKEN, "sendmessage").unwrap(), 2);
    assert_eq!(sim.sent(TOKEN).unwrap().len(), 1);
    sim.shutdown().await;
}

#[tokio::test]
async fn cant_parse_entities_and_conflict_faults() {
    let sim = start().await;
    let bot = bot(&sim);
    sim.inject_fault(
        TOKEN,
        Fault::new(FaultKind::CantParseEntities)
            .on("sendMessage")
            .times(1),
    )
    .unwrap();
    let err = bot.send_message(ChatId(USER), "x").await.unwrap_err();
    assert!(
        matches!(&err, RequestError::Api(ApiError::CantParseEntities(d)) if d.contains("byte offset 0")),
        "{err:?}"
    );
    sim.inject_fault(
        TOKEN,
        Fault::new(FaultKind::Conflict).on("GETUPDATES").times(2),
    )
    .unwrap();
    for _ in 0..2 {
        let err = bot.get_updates().await.unwrap_err();
        assert!(
            matches!(
                err,
                RequestError::Api(ApiError::TerminatedByOtherGetUpdates)
            ),
            "{err:?}"
        );
    }
    bot.get_updates().await.expect("faults are used up");
    assert!(sim.faults(TOKEN).unwrap().is_empty());
    sim.shutdown().await;
}

#[tokio::test]
async fn custom_api_error() {
    let sim = start().await;
    let fault = FaultKind::Api {
        status: 403,
        description: "Forbidden: bot was blocked by the user".into(),
    };
    sim.inject_fault(TOKEN, Fault::new(fault)).unwrap();
    let err = bot(&sim).send_message(ChatId(USER), "x").await.unwrap_err();
    assert!(
        matches!(err, RequestError::Api(ApiError::BotBlocked)),
        "{err:?}"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn server_errors_answer_5xx() {
    let sim = start().await;
    sim.inject_fault(TOKEN, Fault::new(FaultKind::ServerError { status: 502 }))
        .unwrap();
    let (status, body) = call(&sim, "getMe", &json!({})).await;
    assert_eq!(status, 502);
    assert_eq!(
        body,
        json!({ "ok": false, "error_code": 502, "description": "Bad Gateway" })
    );
    let (status, _) = call(&sim, "getMe", &json!({})).await;
    assert_eq!(status, 200);
    sim.shutdown().await;
}

#[tokio::test]
async fn delay_and_hang_past_the_client_timeout() {
    let sim = start().await;
    let bot = bot_with_timeout(&sim, Duration::from_millis(500));
    sim.inject_fault(TOKEN, Fault::new(FaultKind::Delay { ms: 150 }).on("getMe"))
        .unwrap();
    let started = Instant::now();
    bot.get_me().await.expect("a short delay still answers");
    assert!(started.elapsed() >= Duration::from_millis(150));

    sim.inject_fault(
        TOKEN,
        Fault::new(FaultKind::Delay { ms: 3_000 }).on("sendMessage"),
    )
    .unwrap();
    let err = bot.send_message(ChatId(USER), "slow").await.unwrap_err();
    assert!(
        matches!(&err, RequestError::Network(e) if e.is_timeout()),
        "{err:?}"
    );
    bot.get_me()
        .await
        .expect("the simulator is still responsive");
    sim.shutdown().await;
}

#[tokio::test]
async fn dropped_connection_is_a_network_error() {
    let sim = start().await;
    let bot = bot(&sim);
    bot.get_me().await.expect("warm up a pooled connection");
    sim.inject_fault(
        TOKEN,
        Fault::new(FaultKind::DropConnection).on("sendMessage"),
    )
    .unwrap();
    let started = Instant::now();
    let err = bot.send_message(ChatId(USER), "lost").await.unwrap_err();
    assert!(matches!(err, RequestError::Network(_)), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(5), "no hang");
    assert!(sim.sent(TOKEN).unwrap().is_empty(), "nothing was sent");
    let calls = sim.calls(TOKEN).unwrap();
    let dropped = calls.iter().find(|c| c.method == "sendMessage").unwrap();
    assert_eq!(dropped.status, None);
    assert_eq!(dropped.fault, Some(FaultKind::DropConnection));
    assert_eq!(
        sim.call_count(TOKEN, "sendMessage").unwrap(),
        1,
        "the client did not retry by itself"
    );
    bot.send_message(ChatId(USER), "found")
        .await
        .expect("next call works");
    sim.shutdown().await;
}

#[tokio::test]
async fn duplicate_delivery_resends_confirmed_updates() {
    let sim = start().await;
    let bot = bot(&sim);
    sim.inject_text(TOKEN, USER, USER, "one").unwrap();
    let first = bot.get_updates().await.unwrap();
    assert_eq!(first.len(), 1);
    sim.inject_fault(TOKEN, Fault::new(FaultKind::DuplicateUpdates))
        .unwrap();
    sim.inject_text(TOKEN, USER, USER, "two").unwrap();
    let offset = i32::try_from(first[0].id.0).unwrap() + 1;
    let again = bot.get_updates().offset(offset).await.unwrap();
    let ids: Vec<_> = again.iter().map(|u| u.id).collect();
    assert_eq!(ids.len(), 2);
    assert_eq!(ids[0], first[0].id, "the confirmed update came back");
    assert!(matches!(&again[1].kind, UpdateKind::Message(m) if m.text() == Some("two")));
    let next = i32::try_from(again[1].id.0).unwrap() + 1;
    assert!(bot.get_updates().offset(next).await.unwrap().is_empty());
    sim.shutdown().await;
}

#[tokio::test]
async fn faults_for_any_method_apply_in_order() {
    let sim = start().await;
    let bot = bot(&sim);
    sim.inject_fault(
        TOKEN,
        Fault::new(FaultKind::TooManyRequests { retry_after: 2 }),
    )
    .unwrap();
    sim.inject_fault(TOKEN, Fault::new(FaultKind::Conflict))
        .unwrap();
    assert!(matches!(
        bot.get_me().await,
        Err(RequestError::RetryAfter(_))
    ));
    assert!(matches!(
        bot.send_message(ChatId(USER), "x").await,
        Err(RequestError::Api(ApiError::TerminatedByOtherGetUpdates))
    ));
    bot.send_message(ChatId(USER), "x")
        .await
        .expect("queue empty");
    let items = sim
        .wait_for(
            TOKEN,
            |items| items.iter().any(|i| i.kind == SentKind::Message),
            WAIT,
        )
        .await
        .unwrap();
    assert_eq!(items.len(), 1);
    sim.inject_fault(TOKEN, Fault::new(FaultKind::Conflict))
        .unwrap();
    assert_eq!(sim.clear_faults(TOKEN).unwrap(), 1);
    sim.shutdown().await;
}
