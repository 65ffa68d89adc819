//! Building the updates a user's actions produce (messages, edits, channel
//! posts, callback queries, raw JSON) in the exact Bot API JSON shape.

use serde_json::{Map, Value, json};

use super::{
    error::SimError,
    html::utf16_len,
    state::StoredFile,
    state::{BotState, StoredMessage, unix_now},
    types::{ChatSpec, Content, FileKind, IncomingFile, IncomingMessage, Injected},
};

/// How long before "now" a forwarded message was originally sent.
const FORWARD_AGE_SECS: i64 = 60;

/// A `User` object for a simulated human.
pub(crate) fn user_json(user_id: i64, first_name: Option<&str>, username: Option<&str>) -> Value {
    json!({
        "id": user_id,
        "is_bot": false,
        "first_name": first_name.map_or_else(|| format!("User {user_id}"), str::to_owned),
        "username": username.map_or_else(|| format!("user{}", user_id.unsigned_abs()), str::to_owned),
        "language_code": "en",
    })
}

fn chat_json(msg: &IncomingMessage, from: &Value) -> Value {
    match &msg.chat {
        ChatSpec::Private => json!({
            "id": msg.chat_id,
            "type": "private",
            "first_name": from["first_name"],
            "username": from["username"],
        }),
        ChatSpec::Group { title } => json!({ "id": msg.chat_id, "type": "group", "title": title }),
        ChatSpec::Supergroup { title } => {
            json!({ "id": msg.chat_id, "type": "supergroup", "title": title })
        }
    }
}

/// `entities` for a text starting with a `/command`.
fn command_entities(text: &str) -> Option<Value> {
    if !text.starts_with('/') {
        return None;
    }
    let command = text.split_whitespace().next().unwrap_or(text);
    (command.len() > 1)
        .then(|| json!([{ "type": "bot_command", "offset": 0, "length": utf16_len(command) }]))
}

fn file_ids(bot: &mut BotState, kind: &str) -> (String, String) {
    let n = bot.next_file;
    bot.next_file += 1;
    (format!("sim-{kind}-{n}"), format!("simu{n}"))
}

/// Adds the content fields (`text`, `photo`, ...) to a message object and
/// returns the visible text.
fn add_content(
    bot: &mut BotState,
    content: &Content,
    message: &mut Map<String, Value>,
) -> Option<String> {
    match content {
        Content::Text { text } => {
            message.insert("text".into(), json!(text));
            if let Some(entities) = command_entities(text) {
                message.insert("entities".into(), entities);
            }
            Some(text.clone())
        }
        Content::Photo { caption } => {
            // Downloadable like any file: a few kilobytes of placeholder bytes.
            let photo = IncomingFile::new(FileKind::Photo, vec![0u8; 4096]);
            add_file(bot, &photo, message);
            add_caption(message, caption.as_deref())
        }
        Content::Sticker { emoji } => {
            let (id, unique) = file_ids(bot, "sticker");
            message.insert(
                "sticker".into(),
                json!({
                    "file_id": id, "file_unique_id": unique, "type": "regular",
                    "width": 512, "height": 512, "is_animated": false, "is_video": false,
                    "emoji": emoji, "set_name": "SimStickers", "file_size": 20_000,
                }),
            );
            None
        }
        Content::Document {
            file_name,
            file_size,
            caption,
        } => {
            // Downloadable, empty; `file_size` is what the update announces.
            let document = IncomingFile {
                claimed_size: Some(*file_size),
                ..IncomingFile::new(FileKind::Document, Vec::new()).named(file_name.clone())
            };
            add_file(bot, &document, message);
            add_caption(message, caption.as_deref())
        }
        Content::File(file) => {
            add_file(bot, file, message);
            if let Some(group) = &file.media_group_id {
                message.insert("media_group_id".into(), json!(group));
            }
            add_caption(message, file.caption.as_deref())
        }
    }
}

/// Registers `data` for `getFile` and returns the `File` fields of the Bot API.
fn register_file(
    bot: &mut BotState,
    kind: FileKind,
    data: Vec<u8>,
    claimed: Option<u64>,
    ext: &str,
) -> Map<String, Value> {
    let folder = match kind {
        FileKind::Photo => "photos",
        FileKind::Document => "documents",
        FileKind::Audio => "music",
        FileKind::Voice => "voice",
    };
    let (id, unique) = file_ids(bot, folder);
    let path = format!("{folder}/file_{}.{ext}", bot.next_file);
    let size = claimed.unwrap_or(data.len() as u64);
    bot.store_file(StoredFile {
        file_id: id.clone(),
        unique_id: unique.clone(),
        path,
        size,
        data,
    });
    let mut fields = Map::new();
    fields.insert("file_id".into(), json!(id));
    fields.insert("file_unique_id".into(), json!(unique));
    fields.insert("file_size".into(), json!(size));
    fields
}

fn add_file(bot: &mut BotState, file: &IncomingFile, message: &mut Map<String, Value>) {
    let ext = file
        .file_name
        .as_deref()
        .and_then(|n| n.rsplit_once('.'))
        .map_or("bin", |(_, ext)| ext);
    match file.kind {
        FileKind::Photo => {
            let len = file.data.len();
            let mut sizes = Vec::new();
            for (part, (w, h)) in [(4, (90, 67)), (2, (320, 240)), (1, (1280, 960))] {
                let data = file.data[..len / part].to_vec();
                let claimed = (part == 1).then_some(file.claimed_size).flatten();
                let mut size = register_file(bot, FileKind::Photo, data, claimed, "jpg");
                size.insert("width".into(), json!(w));
                size.insert("height".into(), json!(h));
                sizes.push(Value::Object(size));
            }
            message.insert("photo".into(), Value::Array(sizes));
        }
        kind => {
            let (field, default_ext, default_mime) = match kind {
                FileKind::Audio => ("audio", "mp3", "audio/mpeg"),
                FileKind::Voice => ("voice", "oga", "audio/ogg"),
                _ => ("document", ext, "application/octet-stream"),
            };
            let ext = if file.file_name.is_some() {
                ext
            } else {
                default_ext
            };
            let mut fields = register_file(bot, kind, file.data.clone(), file.claimed_size, ext);
            let mime = file.mime_type.as_deref().unwrap_or(default_mime);
            fields.insert("mime_type".into(), json!(mime));
            if let Some(name) = &file.file_name {
                fields.insert("file_name".into(), json!(name));
            }
            if matches!(kind, FileKind::Audio | FileKind::Voice) {
                fields.insert("duration".into(), json!(1));
            }
            message.insert(field.into(), Value::Object(fields));
        }
    }
}

fn add_caption(message: &mut Map<String, Value>, caption: Option<&str>) -> Option<String> {
    let caption = caption?;
    message.insert("caption".into(), json!(caption));
    Some(caption.to_owned())
}

/// A stored message as embedded in `reply_to_message` (one level only).
pub(crate) fn reply_json(bot: &BotState, chat_id: i64, message_id: i32) -> Option<Value> {
    let mut json = bot.live_message(chat_id, message_id)?.json.clone();
    if let Some(obj) = json.as_object_mut() {
        obj.remove("reply_to_message");
    }
    Some(json)
}

fn push_update(bot: &mut BotState, kind: &str, payload: Value) -> u64 {
    let mut body = Map::new();
    body.insert(kind.into(), payload);
    bot.updates.push(body)
}

/// Injects a user message; the chat is created or updated from the message.
pub(crate) fn inject_message(
    bot: &mut BotState,
    msg: &IncomingMessage,
) -> Result<Injected, SimError> {
    let from = user_json(
        msg.user_id,
        msg.first_name.as_deref(),
        msg.username.as_deref(),
    );
    let chat = chat_json(msg, &from);
    let reply = match msg.reply_to_message_id {
        Some(id) => Some(
            reply_json(bot, msg.chat_id, id).ok_or(SimError::MessageNotFound {
                chat_id: msg.chat_id,
                message_id: id,
            })?,
        ),
        None => None,
    };
    bot.upsert_chat(msg.chat_id, chat);
    let (message_id, chat) = bot.next_message_id(msg.chat_id);
    let now = unix_now();
    let mut message = Map::new();
    message.insert("message_id".into(), json!(message_id));
    message.insert("from".into(), from);
    message.insert("chat".into(), chat);
    message.insert("date".into(), json!(now));
    if let Some(original) = msg.forward_from {
        message.insert(
            "forward_origin".into(),
            json!({ "type": "user", "date": now - FORWARD_AGE_SECS, "sender_user": user_json(original, None, None) }),
        );
    }
    if let Some(reply) = reply {
        message.insert("reply_to_message".into(), reply);
    }
    let text = add_content(bot, &msg.content, &mut message);
    let json = Value::Object(message);
    store_user_message(bot, msg.chat_id, message_id, json.clone(), text);
    let update_id = push_update(bot, "message", json);
    Ok(Injected {
        update_id,
        message_id,
    })
}

fn store_user_message(
    bot: &mut BotState,
    chat_id: i64,
    message_id: i32,
    json: Value,
    text: Option<String>,
) {
    bot.store_message(
        chat_id,
        message_id,
        StoredMessage {
            json,
            from_bot: false,
            text,
            entities: Value::Null,
            markup: Value::Null,
            edited: false,
            deleted: false,
        },
    );
}

/// Injects an `edited_message` for a text message a user sent earlier.
pub(crate) fn inject_edit(
    bot: &mut BotState,
    chat_id: i64,
    message_id: i32,
    text: &str,
) -> Result<u64, SimError> {
    let not_found = SimError::MessageNotFound {
        chat_id,
        message_id,
    };
    let stored = bot
        .live_message_mut(chat_id, message_id)
        .filter(|m| !m.from_bot && m.json.get("text").is_some())
        .ok_or(not_found)?;
    stored.json["text"] = json!(text);
    stored.json["edit_date"] = json!(unix_now());
    match command_entities(text) {
        Some(entities) => stored.json["entities"] = entities,
        None => {
            if let Some(obj) = stored.json.as_object_mut() {
                obj.remove("entities");
            }
        }
    }
    stored.text = Some(text.to_owned());
    stored.edited = true;
    let json = stored.json.clone();
    Ok(push_update(bot, "edited_message", json))
}

/// Injects a `channel_post` in a channel with this id and title.
pub(crate) fn inject_channel_post(
    bot: &mut BotState,
    chat_id: i64,
    title: &str,
    text: &str,
) -> Injected {
    let chat = json!({ "id": chat_id, "type": "channel", "title": title });
    bot.upsert_chat(chat_id, chat);
    let (message_id, chat) = bot.next_message_id(chat_id);
    let json = json!({
        "message_id": message_id,
        "sender_chat": chat,
        "chat": chat,
        "date": unix_now(),
        "text": text,
    });
    store_user_message(
        bot,
        chat_id,
        message_id,
        json.clone(),
        Some(text.to_owned()),
    );
    let update_id = push_update(bot, "channel_post", json);
    Injected {
        update_id,
        message_id,
    }
}

/// Injects a `callback_query` as if `user_id` pressed an inline button with
/// `data` under `message_id`. Returns the update id and the query id.
pub(crate) fn inject_callback(
    bot: &mut BotState,
    user_id: i64,
    chat_id: i64,
    message_id: i32,
    data: &str,
) -> Result<(u64, String), SimError> {
    let message = bot
        .live_message(chat_id, message_id)
        .map(|m| m.json.clone())
        .ok_or(SimError::MessageNotFound {
            chat_id,
            message_id,
        })?;
    let query_id = format!("simcb{}", bot.next_callback);
    bot.next_callback += 1;
    bot.remember_callback(query_id.clone());
    let query = json!({
        "id": query_id,
        "from": user_json(user_id, None, None),
        "message": message,
        "chat_instance": format!("simci{chat_id}"),
        "data": data,
    });
    Ok((push_update(bot, "callback_query", query), query_id))
}

/// Injects an arbitrary update object; its `update_id` (if any) is replaced.
pub(crate) fn inject_raw(bot: &mut BotState, update: Value) -> Result<u64, SimError> {
    let Value::Object(mut body) = update else {
        return Err(SimError::InvalidUpdate(
            "an update must be a JSON object".into(),
        ));
    };
    body.remove("update_id");
    if body.is_empty() {
        return Err(SimError::InvalidUpdate(
            "an update needs one field besides update_id (e.g. \"message\")".into(),
        ));
    }
    remember_raw(bot, &body);
    Ok(bot.updates.push(body))
}

/// Makes the objects of a raw update usable by later calls: a message can be
/// replied to, edited by the user or deleted; a callback query can be answered.
fn remember_raw(bot: &mut BotState, body: &Map<String, Value>) {
    if let Some(id) = body
        .get("callback_query")
        .and_then(|q| q.get("id"))
        .and_then(Value::as_str)
    {
        bot.remember_callback(id.to_owned());
    }
    let Some(message) = body.get("message").or_else(|| body.get("channel_post")) else {
        return;
    };
    let chat_id = message.pointer("/chat/id").and_then(Value::as_i64);
    let message_id = message
        .get("message_id")
        .and_then(Value::as_i64)
        .and_then(|id| i32::try_from(id).ok());
    let (Some(chat_id), Some(message_id)) = (chat_id, message_id) else {
        return;
    };
    if let Some(chat) = message.get("chat") {
        let chat_state = bot.upsert_chat(chat_id, chat.clone());
        chat_state.next_message_id = chat_state.next_message_id.max(message_id.saturating_add(1));
        chat_state.message_ids.push_back(message_id);
    }
    let text = message
        .get("text")
        .or_else(|| message.get("caption"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    store_user_message(bot, chat_id, message_id, message.clone(), text);
}
