//! The Bot API methods the simulator implements, with the validations and
//! error descriptions of the real server.

use std::time::Duration;

use serde_json::{Map, Value, json};

use super::{
    SimLimits,
    error::ApiFailure,
    html::{Formatted, MAX_CAPTION_UTF16, MAX_MESSAGE_UTF16, parse_html},
    params::Params,
    state::{BotState, SimState, StoredMessage, wait_until},
    types::{BotCommandSpec, SentDocument, SentItem, SentKind},
    updates::reply_json,
};

/// Canonical names of the implemented methods.
pub(crate) const METHODS: &[&str] = &[
    "getMe",
    "getUpdates",
    "sendMessage",
    "editMessageText",
    "deleteMessage",
    "sendChatAction",
    "sendDocument",
    "sendPhoto",
    "getFile",
    "setMyCommands",
    "getMyCommands",
    "deleteMyCommands",
    "deleteWebhook",
    "getWebhookInfo",
    "answerCallbackQuery",
];

/// Actions accepted by `sendChatAction`.
const CHAT_ACTIONS: &[&str] = &[
    "typing",
    "upload_photo",
    "record_video",
    "upload_video",
    "record_voice",
    "upload_voice",
    "upload_document",
    "choose_sticker",
    "find_location",
    "record_video_note",
    "upload_video_note",
];

/// Most commands `setMyCommands` accepts.
const MAX_COMMANDS: usize = 100;

/// Longest command name and description.
const MAX_COMMAND_LEN: usize = 32;
const MAX_COMMAND_DESCRIPTION_LEN: usize = 256;

/// Largest `limit` of `getUpdates`.
const MAX_UPDATES_LIMIT: i64 = 100;

const NOT_MODIFIED: &str = "message is not modified: specified new message content and reply markup are \
                            exactly the same as a current content and reply markup of the message";

/// The canonical name of a method, matched case-insensitively.
pub(crate) fn canonical(method: &str) -> Option<&'static str> {
    METHODS
        .iter()
        .copied()
        .find(|m| m.eq_ignore_ascii_case(method))
}

/// Time of the call being served.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ctx {
    /// Since the simulator started.
    pub at: Duration,
    /// Unix time.
    pub now: i64,
}

/// Runs a method other than `getUpdates` against the bot's state.
pub(crate) fn dispatch(
    bot: &mut BotState,
    method: &str,
    p: &Params,
    ctx: Ctx,
) -> Result<Value, ApiFailure> {
    match method {
        "getMe" => Ok(get_me(bot)),
        "sendMessage" => send_message(bot, p, ctx),
        "editMessageText" => edit_message_text(bot, p, ctx),
        "deleteMessage" => delete_message(bot, p, ctx),
        "sendChatAction" => send_chat_action(bot, p, ctx),
        "sendDocument" => send_document(bot, p, ctx),
        "sendPhoto" => send_photo(bot, p, ctx),
        "getFile" => get_file(bot, p),
        "setMyCommands" => set_my_commands(bot, p, ctx),
        "getMyCommands" => Ok(get_my_commands(bot, p)),
        "deleteMyCommands" => {
            bot.commands.remove(&commands_key(p));
            Ok(json!(true))
        }
        "deleteWebhook" => Ok(delete_webhook(bot, p)),
        "getWebhookInfo" => Ok(json!({
            "url": "",
            "has_custom_certificate": false,
            "pending_update_count": bot.updates.len(),
        })),
        "answerCallbackQuery" => answer_callback_query(bot, p, ctx),
        _ => Err(ApiFailure::not_found()),
    }
}

fn get_me(bot: &BotState) -> Value {
    let mut me = bot.user_json();
    me["can_join_groups"] = json!(true);
    me["can_read_all_group_messages"] = json!(false);
    me["supports_inline_queries"] = json!(false);
    me["can_connect_to_business"] = json!(false);
    me["has_main_web_app"] = json!(false);
    me
}

fn new_item(kind: SentKind, ctx: Ctx) -> SentItem {
    SentItem {
        seq: 0,
        kind,
        chat_id: None,
        message_id: None,
        text: None,
        plain_text: None,
        parse_mode: None,
        reply_to_message_id: None,
        reply_markup: None,
        document: None,
        action: None,
        commands: None,
        callback_query_id: None,
        at: ctx.at,
        unix_time: ctx.now,
    }
}

fn chat_id(p: &Params) -> Result<i64, ApiFailure> {
    if !p.has("chat_id") {
        return Err(ApiFailure::bad_request("chat_id is empty"));
    }
    p.i64("chat_id")
        .filter(|id| *id != 0)
        .ok_or_else(|| ApiFailure::bad_request("chat not found"))
}

fn message_id(p: &Params) -> Result<i32, ApiFailure> {
    p.i64("message_id")
        .and_then(|id| i32::try_from(id).ok())
        .ok_or_else(|| ApiFailure::bad_request("message identifier is not specified"))
}

/// Parses `text` according to `parse_mode` (HTML is validated strictly;
/// Markdown modes are accepted as plain text).
fn format_text(text: &str, parse_mode: Option<&str>) -> Result<Formatted, ApiFailure> {
    match parse_mode.map(str::trim).filter(|m| !m.is_empty()) {
        None => Ok(Formatted::plain(text)),
        Some(mode) if mode.eq_ignore_ascii_case("html") => Ok(parse_html(text)?),
        Some(mode)
            if mode.eq_ignore_ascii_case("markdown") || mode.eq_ignore_ascii_case("markdownv2") =>
        {
            Ok(Formatted::plain(text))
        }
        Some(_) => Err(ApiFailure::bad_request("unsupported parse_mode")),
    }
}

/// Parses and validates a message text (empty and length checks).
fn message_text(p: &Params, too_long: &str) -> Result<(String, Formatted), ApiFailure> {
    let raw = p.str("text").unwrap_or_default();
    if raw.is_empty() {
        return Err(ApiFailure::bad_request("message text is empty"));
    }
    let formatted = format_text(&raw, p.str("parse_mode").as_deref())?;
    if formatted.text.trim().is_empty() {
        return Err(ApiFailure::bad_request("message text is empty"));
    }
    if formatted.utf16_len() > MAX_MESSAGE_UTF16 {
        return Err(ApiFailure::bad_request(too_long));
    }
    Ok((raw, formatted))
}

/// Parses and validates an optional caption.
fn caption(p: &Params) -> Result<Option<(String, Formatted)>, ApiFailure> {
    let Some(raw) = p.str("caption").filter(|c| !c.is_empty()) else {
        return Ok(None);
    };
    let formatted = format_text(&raw, p.str("parse_mode").as_deref())?;
    if formatted.utf16_len() > MAX_CAPTION_UTF16 {
        return Err(ApiFailure::bad_request("message caption is too long"));
    }
    Ok(Some((raw, formatted)))
}

/// The message being replied to (`reply_parameters` or the legacy
/// `reply_to_message_id`), as its id and embedded JSON.
fn reply_target(
    bot: &BotState,
    chat_id: i64,
    p: &Params,
) -> Result<Option<(i32, Value)>, ApiFailure> {
    let (id, allow_missing) = match p.json("reply_parameters")? {
        Some(rp) => (
            rp.get("message_id").and_then(Value::as_i64),
            rp.get("allow_sending_without_reply")
                .and_then(Value::as_bool)
                .unwrap_or(false),
        ),
        None => (
            p.i64("reply_to_message_id"),
            p.bool("allow_sending_without_reply").unwrap_or(false),
        ),
    };
    let Some(id) = id else { return Ok(None) };
    let found = i32::try_from(id)
        .ok()
        .and_then(|id| Some((id, reply_json(bot, chat_id, id)?)));
    match found {
        Some(target) => Ok(Some(target)),
        None if allow_missing => Ok(None),
        None => Err(ApiFailure::bad_request("message to be replied not found")),
    }
}

/// Allocates a message from the bot in `chat_id` with the common fields.
fn new_bot_message(
    bot: &mut BotState,
    chat_id: i64,
    ctx: Ctx,
    reply: Option<Value>,
) -> (i32, Map<String, Value>) {
    let from = bot.user_json();
    let (message_id, chat) = bot.next_message_id(chat_id);
    let mut message = Map::new();
    message.insert("message_id".into(), json!(message_id));
    message.insert("from".into(), from);
    message.insert("chat".into(), chat);
    message.insert("date".into(), json!(ctx.now));
    if let Some(reply) = reply {
        message.insert("reply_to_message".into(), reply);
    }
    (message_id, message)
}

fn insert_text(
    message: &mut Map<String, Value>,
    formatted: &Formatted,
    text_key: &str,
    entities_key: &str,
) {
    message.insert(text_key.into(), json!(formatted.text));
    if formatted.entities.is_empty() {
        message.remove(entities_key);
    } else {
        message.insert(entities_key.into(), formatted.entities_json());
    }
}

fn store_bot_message(
    bot: &mut BotState,
    chat_id: i64,
    message_id: i32,
    json: Value,
    text: Option<&Formatted>,
    markup: Value,
) {
    bot.store_message(
        chat_id,
        message_id,
        StoredMessage {
            json,
            from_bot: true,
            text: text.map(|f| f.text.clone()),
            entities: text.map_or(Value::Null, Formatted::entities_json),
            markup,
            edited: false,
            deleted: false,
        },
    );
}

fn send_message(bot: &mut BotState, p: &Params, ctx: Ctx) -> Result<Value, ApiFailure> {
    let chat_id = chat_id(p)?;
    let (raw, formatted) = message_text(p, "message is too long")?;
    let reply = reply_target(bot, chat_id, p)?;
    let markup = p.json("reply_markup")?;
    let reply_id = reply.as_ref().map(|(id, _)| *id);
    let (message_id, mut message) = new_bot_message(bot, chat_id, ctx, reply.map(|(_, json)| json));
    insert_text(&mut message, &formatted, "text", "entities");
    let json = Value::Object(message);
    let stored_markup = markup.clone().unwrap_or(Value::Null);
    store_bot_message(
        bot,
        chat_id,
        message_id,
        json.clone(),
        Some(&formatted),
        stored_markup,
    );
    bot.record_sent(SentItem {
        chat_id: Some(chat_id),
        message_id: Some(message_id),
        text: Some(raw),
        plain_text: Some(formatted.text),
        parse_mode: p.str("parse_mode"),
        reply_to_message_id: reply_id,
        reply_markup: markup,
        ..new_item(SentKind::Message, ctx)
    });
    Ok(json)
}

fn edit_message_text(bot: &mut BotState, p: &Params, ctx: Ctx) -> Result<Value, ApiFailure> {
    if p.has("inline_message_id") {
        return Err(ApiFailure::bad_request(
            "inline messages are not supported by the simulator",
        ));
    }
    let chat_id = chat_id(p)?;
    let message_id = message_id(p)?;
    let (raw, formatted) = message_text(p, "MESSAGE_TOO_LONG")?;
    let markup = p.json("reply_markup")?;
    let new_markup = markup.clone().unwrap_or(Value::Null);
    let stored = bot
        .live_message_mut(chat_id, message_id)
        .ok_or_else(|| ApiFailure::bad_request("message to edit not found"))?;
    if !stored.from_bot || stored.json.get("text").is_none() {
        return Err(ApiFailure::bad_request("message can't be edited"));
    }
    let entities = formatted.entities_json();
    if stored.text.as_deref() == Some(formatted.text.as_str())
        && stored.entities == entities
        && stored.markup == new_markup
    {
        return Err(ApiFailure::bad_request(NOT_MODIFIED));
    }
    if let Some(message) = stored.json.as_object_mut() {
        insert_text(message, &formatted, "text", "entities");
        message.insert("edit_date".into(), json!(ctx.now));
    }
    stored.text = Some(formatted.text.clone());
    stored.entities = entities;
    stored.markup = new_markup;
    stored.edited = true;
    let json = stored.json.clone();
    bot.record_sent(SentItem {
        chat_id: Some(chat_id),
        message_id: Some(message_id),
        text: Some(raw),
        plain_text: Some(formatted.text),
        parse_mode: p.str("parse_mode"),
        reply_markup: markup,
        ..new_item(SentKind::Edit, ctx)
    });
    Ok(json)
}

fn delete_message(bot: &mut BotState, p: &Params, ctx: Ctx) -> Result<Value, ApiFailure> {
    let chat_id = chat_id(p)?;
    let message_id = message_id(p)?;
    let stored = bot
        .live_message_mut(chat_id, message_id)
        .ok_or_else(|| ApiFailure::bad_request("message to delete not found"))?;
    stored.deleted = true;
    let text = stored.text.clone();
    bot.record_sent(SentItem {
        chat_id: Some(chat_id),
        message_id: Some(message_id),
        plain_text: text,
        ..new_item(SentKind::Delete, ctx)
    });
    Ok(json!(true))
}

fn send_chat_action(bot: &mut BotState, p: &Params, ctx: Ctx) -> Result<Value, ApiFailure> {
    let chat_id = chat_id(p)?;
    let action = p
        .str("action")
        .filter(|a| CHAT_ACTIONS.contains(&a.as_str()))
        .ok_or_else(|| ApiFailure::bad_request("wrong parameter action in request"))?;
    bot.record_sent(SentItem {
        chat_id: Some(chat_id),
        action: Some(action),
        ..new_item(SentKind::ChatAction, ctx)
    });
    Ok(json!(true))
}

/// A document given in a `sendDocument` call.
struct Upload {
    file_name: Option<String>,
    data: Vec<u8>,
}

/// Finds the document: `attach://<part>`, a file part named `document`, or
/// a file id / URL string (recorded without content).
fn document_upload(p: &Params) -> Result<Upload, ApiFailure> {
    upload(p, "document")
}

/// The file of an upload method, from the multipart part named by `field`
/// (directly or through `attach://`); a `file_id` or URL gives no content.
fn upload(p: &Params, field: &str) -> Result<Upload, ApiFailure> {
    let missing = || ApiFailure::bad_request(format!("there is no {field} in the request"));
    let part = match p.str(field) {
        Some(reference) => match reference.strip_prefix("attach://") {
            Some(name) => p.file(name).ok_or_else(missing)?,
            None => {
                return Ok(Upload {
                    file_name: None,
                    data: Vec::new(),
                });
            }
        },
        None => p.file(field).ok_or_else(missing)?,
    };
    if part.data.is_empty() {
        return Err(ApiFailure::bad_request("file must be non-empty"));
    }
    Ok(Upload {
        file_name: part.file_name.clone().filter(|n| !n.is_empty()),
        data: part.data.clone(),
    })
}

fn mime_type(file_name: Option<&str>) -> &'static str {
    let ext = file_name
        .and_then(|n| n.rsplit_once('.'))
        .map(|(_, ext)| ext.to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "txt" | "log" => "text/plain",
        "md" => "text/markdown",
        "json" => "application/json",
        "html" => "text/html",
        "csv" => "text/csv",
        "pdf" => "application/pdf",
        "zip" => "application/zip",
        _ => "application/octet-stream",
    }
}

fn sent_document(upload: Upload, limits: &SimLimits) -> SentDocument {
    let size = upload.data.len();
    let mut content = upload.data;
    let truncated = content.len() > limits.max_document_bytes;
    content.truncate(limits.max_document_bytes);
    SentDocument {
        file_name: upload.file_name,
        size,
        content,
        truncated,
    }
}

fn send_document(bot: &mut BotState, p: &Params, ctx: Ctx) -> Result<Value, ApiFailure> {
    let chat_id = chat_id(p)?;
    let upload = document_upload(p)?;
    let caption = caption(p)?;
    let reply = reply_target(bot, chat_id, p)?;
    let markup = p.json("reply_markup")?;
    let reply_id = reply.as_ref().map(|(id, _)| *id);
    let n = bot.next_file;
    bot.next_file += 1;
    let mut document = json!({
        "file_id": format!("sim-document-{n}"),
        "file_unique_id": format!("simu{n}"),
        "mime_type": mime_type(upload.file_name.as_deref()),
        "file_size": upload.data.len(),
    });
    if let Some(name) = &upload.file_name {
        document["file_name"] = json!(name);
    }
    let (message_id, mut message) = new_bot_message(bot, chat_id, ctx, reply.map(|(_, json)| json));
    message.insert("document".into(), document);
    if let Some((_, formatted)) = &caption {
        insert_text(&mut message, formatted, "caption", "caption_entities");
    }
    let json = Value::Object(message);
    let markup_value = markup.clone().unwrap_or(Value::Null);
    store_bot_message(
        bot,
        chat_id,
        message_id,
        json.clone(),
        caption.as_ref().map(|(_, f)| f),
        markup_value,
    );
    let document = sent_document(upload, bot.limits());
    bot.record_sent(SentItem {
        chat_id: Some(chat_id),
        message_id: Some(message_id),
        text: caption.as_ref().map(|(raw, _)| raw.clone()),
        plain_text: caption.map(|(_, f)| f.text),
        parse_mode: p.str("parse_mode"),
        reply_to_message_id: reply_id,
        reply_markup: markup,
        document: Some(document),
        ..new_item(SentKind::Document, ctx)
    });
    Ok(json)
}

/// Largest file `getFile` hands out to bots (the real server's limit).
const MAX_DOWNLOAD_BYTES: u64 = 20 * 1024 * 1024;

fn get_file(bot: &BotState, p: &Params) -> Result<Value, ApiFailure> {
    let file_id = p.str("file_id").unwrap_or_default();
    if file_id.is_empty() {
        return Err(ApiFailure::bad_request("file_id not specified"));
    }
    let file = bot
        .file(&file_id)
        .ok_or_else(|| ApiFailure::bad_request("invalid file_id"))?;
    if file.size > MAX_DOWNLOAD_BYTES {
        return Err(ApiFailure::bad_request("file is too big"));
    }
    Ok(json!({
        "file_id": file.file_id,
        "file_unique_id": file.unique_id,
        "file_size": file.size,
        "file_path": file.path,
    }))
}

fn send_photo(bot: &mut BotState, p: &Params, ctx: Ctx) -> Result<Value, ApiFailure> {
    let chat_id = chat_id(p)?;
    let upload = upload(p, "photo")?;
    let caption = caption(p)?;
    let reply = reply_target(bot, chat_id, p)?;
    let markup = p.json("reply_markup")?;
    let reply_id = reply.as_ref().map(|(id, _)| *id);
    let n = bot.next_file;
    bot.next_file += 1;
    let photo = json!([{
        "file_id": format!("sim-photo-{n}"),
        "file_unique_id": format!("simu{n}"),
        "width": 1280,
        "height": 960,
        "file_size": upload.data.len(),
    }]);
    let (message_id, mut message) = new_bot_message(bot, chat_id, ctx, reply.map(|(_, json)| json));
    message.insert("photo".into(), photo);
    if let Some((_, formatted)) = &caption {
        insert_text(&mut message, formatted, "caption", "caption_entities");
    }
    let json = Value::Object(message);
    store_bot_message(
        bot,
        chat_id,
        message_id,
        json.clone(),
        caption.as_ref().map(|(_, f)| f),
        markup.clone().unwrap_or(Value::Null),
    );
    let photo = sent_document(upload, bot.limits());
    bot.record_sent(SentItem {
        chat_id: Some(chat_id),
        message_id: Some(message_id),
        text: caption.as_ref().map(|(raw, _)| raw.clone()),
        plain_text: caption.map(|(_, f)| f.text),
        parse_mode: p.str("parse_mode"),
        reply_to_message_id: reply_id,
        reply_markup: markup,
        document: Some(photo),
        ..new_item(SentKind::Photo, ctx)
    });
    Ok(json)
}

/// Storage key of a command list: scope (with its chat/user) and language.
fn commands_key(p: &Params) -> String {
    let scope = p.json("scope").ok().flatten().unwrap_or(Value::Null);
    let lang = p.str("language_code").unwrap_or_default();
    scoped_commands_key(&scope, &lang)
}

/// Storage key of the command list for `scope` (null = default) and `lang`.
pub(crate) fn scoped_commands_key(scope: &Value, lang: &str) -> String {
    let field = |key: &str| scope.get(key).map(Value::to_string).unwrap_or_default();
    let kind = scope
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("default");
    format!("{kind}|{}|{}|{lang}", field("chat_id"), field("user_id"))
}

fn parse_command(value: &Value) -> Result<BotCommandSpec, ApiFailure> {
    let command = value.get("command").and_then(Value::as_str).unwrap_or("");
    let description = value
        .get("description")
        .and_then(Value::as_str)
        .unwrap_or("");
    let command_ok = !command.is_empty()
        && command.len() <= MAX_COMMAND_LEN
        && command
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if !command_ok {
        return Err(ApiFailure::bad_request("BOT_COMMAND_INVALID"));
    }
    let len = description.chars().count();
    if len == 0 || len > MAX_COMMAND_DESCRIPTION_LEN {
        return Err(ApiFailure::bad_request("command description is invalid"));
    }
    Ok(BotCommandSpec {
        command: command.to_owned(),
        description: description.to_owned(),
    })
}

fn set_my_commands(bot: &mut BotState, p: &Params, ctx: Ctx) -> Result<Value, ApiFailure> {
    let list = p
        .json("commands")?
        .ok_or_else(|| ApiFailure::bad_request("parameter \"commands\" is required"))?;
    let Value::Array(list) = list else {
        return Err(ApiFailure::bad_request("can't parse commands JSON object"));
    };
    if list.len() > MAX_COMMANDS {
        return Err(ApiFailure::bad_request("too many commands specified"));
    }
    let commands = list
        .iter()
        .map(parse_command)
        .collect::<Result<Vec<_>, _>>()?;
    bot.commands.insert(commands_key(p), commands.clone());
    bot.record_sent(SentItem {
        commands: Some(commands),
        ..new_item(SentKind::Commands, ctx)
    });
    Ok(json!(true))
}

fn get_my_commands(bot: &BotState, p: &Params) -> Value {
    let commands = bot
        .commands
        .get(&commands_key(p))
        .cloned()
        .unwrap_or_default();
    json!(commands)
}

fn delete_webhook(bot: &mut BotState, p: &Params) -> Value {
    if p.bool("drop_pending_updates").unwrap_or(false) {
        bot.updates.confirm(i64::MAX);
    }
    json!(true)
}

fn answer_callback_query(bot: &mut BotState, p: &Params, ctx: Ctx) -> Result<Value, ApiFailure> {
    let id = p
        .str("callback_query_id")
        .filter(|id| bot.callback_ids.contains(id))
        .ok_or_else(|| {
            ApiFailure::bad_request(
                "query is too old and response timeout expired or query ID is invalid",
            )
        })?;
    bot.record_sent(SentItem {
        text: p.str("text"),
        callback_query_id: Some(id),
        ..new_item(SentKind::CallbackAnswer, ctx)
    });
    Ok(json!(true))
}

/// Parameters of one `getUpdates` call.
struct PollRequest {
    offset: Option<i64>,
    limit: usize,
    timeout: Duration,
    allowed: Option<Vec<String>>,
}

impl PollRequest {
    fn from_params(p: &Params, limits: &SimLimits) -> Result<Self, ApiFailure> {
        let limit = p
            .i64("limit")
            .unwrap_or(MAX_UPDATES_LIMIT)
            .clamp(1, MAX_UPDATES_LIMIT);
        let timeout = p.i64("timeout").unwrap_or(0).max(0).unsigned_abs();
        let allowed = match p.json("allowed_updates")? {
            Some(Value::Array(items)) => Some(
                items
                    .iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect(),
            ),
            _ => None,
        };
        Ok(Self {
            offset: p.i64("offset"),
            limit: usize::try_from(limit).unwrap_or(100),
            timeout: Duration::from_secs(timeout).min(limits.max_poll_timeout),
            allowed,
        })
    }
}

/// What one check of a waiting `getUpdates` found.
enum PollStep {
    Batch(Vec<(u64, Value)>),
    Superseded,
}

/// `getUpdates` with real long polling: answers as soon as an update is
/// available or after `timeout`. A newer `getUpdates` for the same bot makes
/// a waiting one answer 409 Conflict, as on the real server. With
/// `duplicate`, the previously delivered batch is delivered again.
pub(crate) async fn get_updates(
    state: &SimState,
    token: &str,
    p: &Params,
    duplicate: bool,
) -> Result<Value, ApiFailure> {
    let req = PollRequest::from_params(p, state.limits())?;
    let rx = state.subscribe_updates();
    let (generation, previous) = state
        .with_bot(token, |bot| {
            let previous = if duplicate {
                bot.updates.last_batch.clone()
            } else {
                Vec::new()
            };
            if let Some(offset) = req.offset {
                bot.updates.confirm(offset);
            }
            bot.updates.set_allowed(req.allowed.clone());
            bot.poll_generation += 1;
            (bot.poll_generation, previous)
        })
        .map_err(|_| ApiFailure::unauthorized())?;
    state.notify_updates();
    state.notify_log();
    let wait = if previous.is_empty() {
        req.timeout
    } else {
        Duration::ZERO
    };
    let deadline = tokio::time::Instant::now() + wait;
    let step = wait_until(state, rx, deadline, || {
        poll_step(state, token, generation, req.limit)
    })
    .await;
    let batch = match step {
        Some(PollStep::Superseded) => return Err(ApiFailure::conflict()),
        Some(PollStep::Batch(batch)) => batch,
        None => Vec::new(),
    };
    Ok(merge_duplicates(previous, batch))
}

fn poll_step(state: &SimState, token: &str, generation: u64, limit: usize) -> Option<PollStep> {
    state
        .with_bot(token, |bot| {
            if bot.poll_generation != generation {
                return Some(PollStep::Superseded);
            }
            let batch = bot.updates.batch(limit);
            if batch.is_empty() {
                return None;
            }
            bot.updates.last_batch = batch.clone();
            Some(PollStep::Batch(batch))
        })
        .ok()
        .flatten()
}

fn merge_duplicates(previous: Vec<(u64, Value)>, batch: Vec<(u64, Value)>) -> Value {
    let mut seen: Vec<u64> = previous.iter().map(|(id, _)| *id).collect();
    let mut out: Vec<Value> = previous.into_iter().map(|(_, u)| u).collect();
    for (id, update) in batch {
        if !seen.contains(&id) {
            seen.push(id);
            out.push(update);
        }
    }
    Value::Array(out)
}
