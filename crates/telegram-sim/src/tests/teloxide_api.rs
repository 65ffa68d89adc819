//! A real teloxide `Bot` against the simulator: every method the product
//! uses round-trips and deserializes, and API errors map to the right
//! teloxide variants.

use std::time::Duration;

use serde_json::json;
use teloxide::{
    ApiError, RequestError,
    dispatching::UpdateFilterExt,
    payloads::setters::*,
    prelude::*,
    types::{
        BotCommand, ChatAction, InputFile, MessageEntityKind, MessageId, ParseMode,
        ReplyParameters, UpdateKind,
    },
};

use super::{TOKEN, USER, WAIT, bot, start};
use crate::{Content, IncomingMessage, SentKind};

#[tokio::test]
async fn get_me_deserializes() {
    let sim = start().await;
    let me = bot(&sim).get_me().await.expect("getMe");
    assert_eq!(me.id.0, 123_456);
    assert_eq!(me.username(), "sim1_bot");
    assert!(me.is_bot);
    sim.shutdown().await;
}

#[tokio::test]
async fn send_edit_delete_round_trip() {
    let sim = start().await;
    let bot = bot(&sim);
    let chat = ChatId(USER);
    let sent = bot
        .send_message(chat, "<b>Hi</b> &amp; <i>welcome</i>")
        .parse_mode(ParseMode::Html)
        .await
        .expect("sendMessage");
    assert_eq!(sent.text(), Some("Hi & welcome"));
    let entities = sent.entities().expect("entities");
    assert_eq!(entities.len(), 2);
    assert_eq!(entities[0].kind, MessageEntityKind::Bold);
    assert_eq!((entities[1].offset, entities[1].length), (5, 7));

    let edited = bot
        .edit_message_text(chat, sent.id, "<b>Hi</b> again")
        .parse_mode(ParseMode::Html)
        .await
        .expect("editMessageText");
    assert_eq!(edited.text(), Some("Hi again"));
    assert!(edited.edit_date().is_some());

    let same = bot
        .edit_message_text(chat, sent.id, "<b>Hi</b> again")
        .parse_mode(ParseMode::Html)
        .await;
    assert!(
        matches!(same, Err(RequestError::Api(ApiError::MessageNotModified))),
        "{same:?}"
    );
    let same_text_other_format = bot.edit_message_text(chat, sent.id, "Hi again").await;
    assert!(
        same_text_other_format.is_ok(),
        "entities differ, so it is a modification"
    );

    bot.delete_message(chat, sent.id)
        .await
        .expect("deleteMessage");
    let again = bot.delete_message(chat, sent.id).await;
    assert!(
        matches!(
            again,
            Err(RequestError::Api(ApiError::MessageToDeleteNotFound))
        ),
        "{again:?}"
    );
    let gone = bot.edit_message_text(chat, sent.id, "x").await;
    assert!(
        matches!(
            gone,
            Err(RequestError::Api(ApiError::MessageToEditNotFound))
        ),
        "{gone:?}"
    );

    let items = sim.sent(TOKEN).unwrap();
    let kinds: Vec<_> = items.iter().map(|i| i.kind).collect();
    assert_eq!(
        kinds,
        [
            SentKind::Message,
            SentKind::Edit,
            SentKind::Edit,
            SentKind::Delete
        ]
    );
    assert_eq!(
        items[0].text.as_deref(),
        Some("<b>Hi</b> &amp; <i>welcome</i>")
    );
    assert_eq!(items[0].plain_text.as_deref(), Some("Hi & welcome"));
    assert_eq!(items[0].parse_mode.as_deref(), Some("HTML"));
    assert!(
        items
            .windows(2)
            .all(|w| w[0].seq < w[1].seq && w[0].at <= w[1].at)
    );
    assert!(sim.chat(TOKEN, USER).unwrap().is_empty());
    sim.shutdown().await;
}

#[tokio::test]
async fn message_ids_increase_per_chat() {
    let sim = start().await;
    let bot = bot(&sim);
    let a1 = bot.send_message(ChatId(1), "a").await.unwrap();
    let b1 = bot.send_message(ChatId(2), "b").await.unwrap();
    let a2 = bot.send_message(ChatId(1), "a").await.unwrap();
    assert_eq!((a1.id.0, b1.id.0, a2.id.0), (1, 1, 2));
    let injected = sim
        .inject_message(TOKEN, &IncomingMessage::text(1, 1, "user"))
        .unwrap();
    assert_eq!(
        injected.message_id, 3,
        "user and bot share the chat's sequence"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn chat_action_and_commands() {
    let sim = start().await;
    let bot = bot(&sim);
    bot.send_chat_action(ChatId(USER), ChatAction::Typing)
        .await
        .expect("sendChatAction");
    let commands = vec![
        BotCommand::new("start", "Start the agent"),
        BotCommand::new("status", "Show status"),
    ];
    bot.set_my_commands(commands.clone())
        .await
        .expect("setMyCommands");
    assert_eq!(
        bot.get_my_commands().await.expect("getMyCommands"),
        commands
    );
    bot.delete_webhook().await.expect("deleteWebhook");
    let info = bot.get_webhook_info().await.expect("getWebhookInfo");
    assert!(info.url.is_none());

    let stored = sim.commands(TOKEN).unwrap();
    assert_eq!(stored[1].command, "status");
    let items = sim.sent(TOKEN).unwrap();
    assert_eq!(items[0].kind, SentKind::ChatAction);
    assert_eq!(items[0].action.as_deref(), Some("typing"));
    assert_eq!(items[1].kind, SentKind::Commands);
    let bad = bot
        .set_my_commands(vec![BotCommand::new("Bad Command", "x")])
        .await;
    assert!(bad.is_err());
    sim.shutdown().await;
}

#[tokio::test]
async fn send_document_is_multipart_and_recorded() {
    let sim = start().await;
    let bot = bot(&sim);
    let file = InputFile::memory(b"line 1\nline 2\n".to_vec()).file_name("report.txt");
    let message = bot
        .send_document(ChatId(USER), file)
        .caption("<i>daily</i> report")
        .parse_mode(ParseMode::Html)
        .await
        .expect("sendDocument");
    let document = message.document().expect("document");
    assert_eq!(document.file_name.as_deref(), Some("report.txt"));
    assert_eq!(message.caption(), Some("daily report"));

    let items = sim.wait_for_messages(TOKEN, USER, 1, WAIT).await.unwrap();
    let doc = items[0].document.as_ref().expect("document recorded");
    assert_eq!(items[0].kind, SentKind::Document);
    assert_eq!(doc.file_name.as_deref(), Some("report.txt"));
    assert_eq!(doc.content_text(), "line 1\nline 2\n");
    assert_eq!(doc.size, 14);
    assert!(!doc.truncated);
    assert_eq!(items[0].plain_text.as_deref(), Some("daily report"));
    sim.shutdown().await;
}

#[tokio::test]
async fn replies_embed_the_original() {
    let sim = start().await;
    let bot = bot(&sim);
    let injected = sim
        .inject_message(TOKEN, &IncomingMessage::text(USER, USER, "question"))
        .unwrap();
    let reply = bot
        .send_message(ChatId(USER), "answer")
        .reply_parameters(ReplyParameters::new(MessageId(injected.message_id)))
        .await
        .expect("reply");
    assert_eq!(
        reply.reply_to_message().and_then(|m| m.text()),
        Some("question")
    );
    assert_eq!(
        sim.sent(TOKEN).unwrap()[0].reply_to_message_id,
        Some(injected.message_id)
    );
    let missing = bot
        .send_message(ChatId(USER), "answer")
        .reply_parameters(ReplyParameters::new(MessageId(999)))
        .await;
    assert!(
        matches!(
            missing,
            Err(RequestError::Api(ApiError::MessageToReplyNotFound))
        ),
        "{missing:?}"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn text_validation_maps_to_teloxide_errors() {
    let sim = start().await;
    let bot = bot(&sim);
    let chat = ChatId(USER);
    let empty = bot.send_message(chat, "").await;
    assert!(
        matches!(empty, Err(RequestError::Api(ApiError::MessageTextIsEmpty))),
        "{empty:?}"
    );
    let blank = bot
        .send_message(chat, "<b> </b>")
        .parse_mode(ParseMode::Html)
        .await;
    assert!(
        matches!(blank, Err(RequestError::Api(ApiError::MessageTextIsEmpty))),
        "{blank:?}"
    );
    let long = bot.send_message(chat, "x".repeat(4097)).await;
    assert!(
        matches!(long, Err(RequestError::Api(ApiError::MessageIsTooLong))),
        "{long:?}"
    );
    let fits = bot.send_message(chat, "😀".repeat(2048)).await;
    assert!(fits.is_ok(), "2048 emoji are 4096 UTF-16 units");
    let emoji_long = bot.send_message(chat, "😀".repeat(2049)).await;
    assert!(matches!(
        emoji_long,
        Err(RequestError::Api(ApiError::MessageIsTooLong))
    ));
    let tags_free = bot
        .send_message(chat, format!("<b>{}</b>", "&amp;".repeat(4096)))
        .parse_mode(ParseMode::Html)
        .await;
    assert!(
        tags_free.is_ok(),
        "tags and entity syntax do not count: {tags_free:?}"
    );
    let bad_html = bot
        .send_message(chat, "1 < 2")
        .parse_mode(ParseMode::Html)
        .await;
    match bad_html {
        Err(RequestError::Api(ApiError::CantParseEntities(text))) => {
            assert!(text.contains("Unsupported start tag"), "{text}");
        }
        other => panic!("expected CantParseEntities, got {other:?}"),
    }
    let unbalanced = bot
        .send_message(chat, "<b>bold")
        .parse_mode(ParseMode::Html)
        .await;
    assert!(matches!(
        unbalanced,
        Err(RequestError::Api(ApiError::CantParseEntities(_)))
    ));
    let long_edit_target = bot.send_message(chat, "short").await.unwrap();
    let long_edit = bot
        .edit_message_text(chat, long_edit_target.id, "y".repeat(5000))
        .await;
    assert!(
        matches!(
            long_edit,
            Err(RequestError::Api(ApiError::EditedMessageIsTooLong))
        ),
        "{long_edit:?}"
    );
    assert_eq!(
        sim.sent(TOKEN).unwrap().len(),
        3,
        "failed calls are not in the sent log"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn every_injected_update_kind_deserializes() {
    let sim = start().await;
    let bot = bot(&sim);
    let first = sim.inject_text(TOKEN, USER, USER, "/start now").unwrap();
    let photo = IncomingMessage::photo(USER, USER, Some("look".into()));
    sim.inject_message(TOKEN, &photo).unwrap();
    sim.inject_message(TOKEN, &IncomingMessage::sticker(USER, USER, "👍"))
        .unwrap();
    sim.inject_message(TOKEN, &IncomingMessage::text(USER, USER, ""))
        .unwrap();
    let original = sim
        .inject_message(TOKEN, &IncomingMessage::text(USER, USER, "typo"))
        .unwrap();
    sim.inject_edit(TOKEN, USER, original.message_id, "fixed")
        .unwrap();
    sim.inject_channel_post(TOKEN, -1_001_234, "News", "post")
        .unwrap();
    sim.inject_message(
        TOKEN,
        &IncomingMessage::text(USER, USER, "fwd").forwarded_from(77),
    )
    .unwrap();
    sim.inject_message(
        TOKEN,
        &IncomingMessage::text(USER, -500, "hi all").in_group("Team"),
    )
    .unwrap();
    sim.inject_message(
        TOKEN,
        &IncomingMessage::text(USER, -1_000_000_000_001, "hi super").in_supergroup("Big"),
    )
    .unwrap();
    let document = Content::Document {
        file_name: "a.txt".into(),
        file_size: 3,
        caption: None,
    };
    sim.inject_message(TOKEN, &IncomingMessage::with_content(USER, USER, document))
        .unwrap();
    let keyboard_msg = bot.send_message(ChatId(USER), "pick").await.unwrap();
    let callback = sim
        .inject_callback(TOKEN, USER, USER, keyboard_msg.id.0, "choice-1")
        .unwrap();
    sim.inject_raw(
        TOKEN,
        json!({ "update_id": 1, "something_new": { "x": 1 } }),
    )
    .unwrap();

    let updates = bot.get_updates().await.expect("getUpdates");
    assert_eq!(updates.len(), 13);
    assert_eq!(u64::from(updates[0].id.0), first);
    let messages: Vec<_> = updates
        .iter()
        .filter_map(|u| match &u.kind {
            UpdateKind::Message(m) => Some(m),
            _ => None,
        })
        .collect();
    assert_eq!(messages[0].text(), Some("/start now"));
    assert_eq!(
        messages[0].entities().unwrap()[0].kind,
        MessageEntityKind::BotCommand
    );
    assert!(messages[1].photo().is_some());
    assert_eq!(messages[1].caption(), Some("look"));
    assert!(messages[2].sticker().is_some());
    assert_eq!(messages[3].text(), Some(""));
    assert!(messages[5].forward_origin().is_some());
    assert!(messages[6].chat.is_group());
    assert!(messages[7].chat.is_supergroup());
    assert_eq!(
        messages[8].document().and_then(|d| d.file_name.as_deref()),
        Some("a.txt")
    );
    assert!(matches!(&updates[5].kind, UpdateKind::EditedMessage(m) if m.text() == Some("fixed")));
    assert!(matches!(&updates[6].kind, UpdateKind::ChannelPost(m) if m.chat.is_channel()));
    match &updates[11].kind {
        UpdateKind::CallbackQuery(q) => {
            assert_eq!(q.data.as_deref(), Some("choice-1"));
            bot.answer_callback_query(q.id.clone())
                .text("ok")
                .await
                .expect("answer");
        }
        other => panic!("expected callback query, got {other:?}"),
    }
    assert!(
        matches!(&updates[12].kind, UpdateKind::Error(_)),
        "unknown raw kinds stay raw"
    );
    let errors = updates[..12]
        .iter()
        .filter(|u| matches!(u.kind, UpdateKind::Error(_)))
        .count();
    assert_eq!(errors, 0, "all simulated updates parse");
    let answers: Vec<_> = sim
        .sent(TOKEN)
        .unwrap()
        .into_iter()
        .filter(|i| i.kind == SentKind::CallbackAnswer)
        .collect();
    assert_eq!(
        answers[0].callback_query_id.as_deref(),
        Some(callback.callback_query_id.as_str())
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn teloxide_dispatcher_answers_through_the_simulator() {
    let sim = start().await;
    let handler = Update::filter_message().endpoint(|bot: Bot, msg: Message| async move {
        let text = format!("echo: {}", msg.text().unwrap_or_default());
        bot.send_message(msg.chat.id, text).await?;
        respond(())
    });
    let mut dispatcher = Dispatcher::builder(bot(&sim), handler).build();
    let shutdown = dispatcher.shutdown_token();
    let running = tokio::spawn(async move { dispatcher.dispatch().await });

    sim.inject_text(TOKEN, USER, USER, "ping").unwrap();
    let items = sim
        .wait_for_messages(TOKEN, USER, 1, WAIT)
        .await
        .expect("reply");
    assert_eq!(items[0].text.as_deref(), Some("echo: ping"));
    sim.inject_text(TOKEN, USER, USER, "pong").unwrap();
    let items = sim
        .wait_for_messages(TOKEN, USER, 2, WAIT)
        .await
        .expect("second reply");
    assert_eq!(items[1].text.as_deref(), Some("echo: pong"));

    if let Ok(done) = shutdown.shutdown() {
        tokio::time::timeout(Duration::from_secs(15), done)
            .await
            .expect("dispatcher stops");
    }
    running.await.expect("dispatcher task");
    assert!(sim.call_count(TOKEN, "getUpdates").unwrap() >= 2);
    sim.shutdown().await;
}
