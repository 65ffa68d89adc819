//! Every call to the Bot API goes through [`TelegramApi`]: the bot's telegram
//! circuit breaker, flood-control (429 `retry_after`) honoured, transient network
//! errors retried with backoff, latency measured, and the token never in an error.
//!
//! Which outcomes count against Telegram's breaker: network errors, timeouts and
//! 5xx. A 4xx answer (bad request, forbidden, not modified) means Telegram is up
//! and answered; a 429 is flood control on our side, neither.
//!
//! JSON calls are posted by [`TelegramApi`] itself on teloxide's HTTP client
//! and their answers read only as far as agentlab needs them; the multipart
//! uploads (documents, photos) and downloads go through teloxide.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::header::{CONTENT_TYPE, HeaderValue};
use serde::de::{DeserializeOwned, IgnoredAny};

use teloxide::payloads::{
    AnswerCallbackQuery, DeleteMessage, DeleteWebhook, EditMessageText, GetFile, GetMe, GetUpdates,
    SendChatAction, SendMessage, SetMyCommands,
};
use teloxide::payloads::{
    AnswerCallbackQuerySetters, EditMessageTextSetters, GetUpdatesSetters, SendDocumentSetters,
    SendMessageSetters, SendPhotoSetters,
};
use teloxide::prelude::Requester;
use teloxide::requests::{Payload, Request};
use teloxide::types::{
    BotCommand, CallbackQueryId, ChatAction, ChatId, InlineKeyboardButton, InlineKeyboardMarkup,
    InputFile, MessageId, ParseMode, ReplyParameters, ResponseParameters, Update,
};
use teloxide::{ApiError, Bot, RequestError};

use crate::breaker::{CircuitBreaker, Permit};
use crate::metrics::{self, CallOutcome};

/// How often a call is retried after flood control or a network error.
const MAX_RETRIES: u32 = 4;
/// Longest flood-control wait honoured inline; longer ones are returned to the caller.
const MAX_INLINE_RETRY_AFTER: Duration = Duration::from_secs(30);
/// How long an answer with a 5xx status waits before it is returned (teloxide's
/// own requests wait as long).
const DELAY_ON_SERVER_ERROR: Duration = Duration::from_secs(10);

/// Why a Bot API call did not succeed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SendError {
    /// The telegram breaker is open; try again later.
    #[error("telegram circuit open; retry in {0:?}")]
    CircuitOpen(Duration),
    /// Flood control asked to wait longer than we wait inline.
    #[error("telegram flood control: retry after {0:?}")]
    RetryAfter(Duration),
    /// Telegram refused the HTML formatting.
    #[error("telegram cannot parse the formatting: {0}")]
    CantParseEntities(String),
    /// Another process polls this token.
    #[error("409 conflict: another process is polling this bot token")]
    Conflict,
    /// An edit had nothing to change.
    #[error("message not modified")]
    NotModified,
    /// Telegram refused the request (4xx).
    #[error("telegram refused the request: {0}")]
    Refused(String),
    /// The network or Telegram's side failed (retries exhausted).
    #[error("telegram unreachable: {0}")]
    Unavailable(String),
}

/// One bot's Bot API client.
#[derive(Clone)]
pub struct TelegramApi {
    bot: Bot,
    /// `<api_url>/bot<token>`: a method's URL is this plus its name.
    methods: reqwest::Url,
    token: String,
    breaker: CircuitBreaker,
}

impl TelegramApi {
    /// A client for `token` at `api_url`.
    pub fn new(token: String, api_url: &str, breaker: CircuitBreaker) -> Result<Self, String> {
        let url = reqwest::Url::parse(api_url)
            .map_err(|e| format!("invalid api_url `{api_url}`: {e}"))?;
        let mut methods = url.clone();
        methods
            .path_segments_mut()
            .map_err(|()| format!("invalid api_url `{api_url}`: not a base URL"))?
            .push(&format!("bot{token}"));
        let bot = Bot::new(token.clone()).set_api_url(url);
        Ok(TelegramApi {
            bot,
            methods,
            token,
            breaker,
        })
    }

    /// Removes the token from a text (errors may carry the request URL).
    pub fn redact(&self, text: &str) -> String {
        redact_token_in(text, &self.token)
    }

    /// The bot's username (`getMe`).
    pub async fn username(&self) -> Result<String, SendError> {
        let me = self
            .call("getMe", || self.post::<_, Me>(GetMe::new()))
            .await?;
        Ok(me.username.unwrap_or_default())
    }

    /// Removes a webhook so long polling works (pending updates are kept).
    pub async fn delete_webhook(&self) -> Result<(), SendError> {
        self.call("deleteWebhook", || {
            self.post::<_, IgnoredAny>(DeleteWebhook::new())
        })
        .await
        .map(|_| ())
    }

    /// Registers the command list shown by Telegram clients.
    pub async fn set_commands(&self, commands: Vec<BotCommand>) -> Result<(), SendError> {
        self.call("setMyCommands", || {
            self.post::<_, IgnoredAny>(SetMyCommands::new(commands.clone()))
        })
        .await
        .map(|_| ())
    }

    /// One long poll. Not retried here: the poller owns its backoff.
    pub async fn get_updates(&self, offset: i32, timeout_s: u32) -> Result<Vec<Update>, SendError> {
        let permit = self.admit()?;
        let started = Instant::now();
        let result = self
            .post::<_, Vec<Update>>(
                GetUpdates::new()
                    .offset(offset)
                    .timeout(timeout_s)
                    .limit(100),
            )
            .await;
        // A long poll's latency is mostly waiting; only its outcome is measured.
        match result {
            Ok(updates) => {
                permit.success();
                metrics::observe(
                    "telegram",
                    "getUpdates",
                    started.elapsed().as_secs_f64() * 1000.0,
                    CallOutcome::Ok,
                );
                Ok(updates)
            }
            Err(e) => {
                let error = self.classify(&e);
                self.report(&error, "getUpdates", started, permit);
                Err(error)
            }
        }
    }

    /// Sends HTML; if Telegram refuses the formatting, sends `plain` instead.
    pub async fn send_html(
        &self,
        chat_id: i64,
        html: &str,
        plain: &str,
        reply_to: Option<i32>,
    ) -> Result<i32, SendError> {
        let sent = self
            .send_text(chat_id, html, Some(ParseMode::Html), reply_to)
            .await;
        match sent {
            Ok(id) => Ok(id),
            Err(SendError::CantParseEntities(why)) => {
                tracing::warn!(reason = %why, "telegram refused the formatting; resending as plain text");
                self.send_plain(chat_id, plain, reply_to).await
            }
            Err(e) => Err(e),
        }
    }

    /// Sends plain text.
    pub async fn send_plain(
        &self,
        chat_id: i64,
        text: &str,
        reply_to: Option<i32>,
    ) -> Result<i32, SendError> {
        self.send_text(chat_id, text, None, reply_to).await
    }

    async fn send_text(
        &self,
        chat_id: i64,
        text: &str,
        parse_mode: Option<ParseMode>,
        reply_to: Option<i32>,
    ) -> Result<i32, SendError> {
        let sent = self
            .call("sendMessage", || {
                let mut payload = SendMessage::new(ChatId(chat_id), text);
                if let Some(mode) = parse_mode {
                    payload = payload.parse_mode(mode);
                }
                if let Some(id) = reply_to {
                    payload = payload.reply_parameters(reply_parameters(id));
                }
                self.post::<_, SentId>(payload)
            })
            .await?;
        Ok(sent.message_id)
    }

    /// Replaces the text of a message the bot sent.
    pub async fn edit_text(
        &self,
        chat_id: i64,
        message_id: i32,
        text: &str,
    ) -> Result<(), SendError> {
        match self
            .call("editMessageText", || {
                self.post::<_, IgnoredAny>(EditMessageText::new(
                    ChatId(chat_id),
                    MessageId(message_id),
                    text,
                ))
            })
            .await
        {
            Ok(_) | Err(SendError::NotModified) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Replaces the text of a message with HTML.
    pub async fn edit_html(
        &self,
        chat_id: i64,
        message_id: i32,
        html: &str,
    ) -> Result<(), SendError> {
        match self
            .call("editMessageText", || {
                self.post::<_, IgnoredAny>(
                    EditMessageText::new(ChatId(chat_id), MessageId(message_id), html)
                        .parse_mode(ParseMode::Html),
                )
            })
            .await
        {
            Ok(_) | Err(SendError::NotModified) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Answers a button press: `text` shown briefly, or as an alert the user
    /// dismisses when `alert`.
    pub async fn answer_callback(
        &self,
        callback_query_id: &str,
        text: &str,
        alert: bool,
    ) -> Result<(), SendError> {
        self.call("answerCallbackQuery", || {
            self.post::<_, IgnoredAny>(
                AnswerCallbackQuery::new(CallbackQueryId(callback_query_id.to_owned()))
                    .text(text)
                    .show_alert(alert),
            )
        })
        .await
        .map(|_| ())
    }

    /// Deletes a message the bot sent.
    pub async fn delete(&self, chat_id: i64, message_id: i32) -> Result<(), SendError> {
        self.call("deleteMessage", || {
            self.post::<_, IgnoredAny>(DeleteMessage::new(ChatId(chat_id), MessageId(message_id)))
        })
        .await
        .map(|_| ())
    }

    /// Sends HTML with rows of inline buttons, each `(label, callback_data)`.
    /// With `reply_to`, the message answers that one (still sent if it is gone).
    pub async fn send_html_with_rows(
        &self,
        chat_id: i64,
        html: &str,
        rows: &[Vec<(String, String)>],
        reply_to: Option<i32>,
    ) -> Result<i32, SendError> {
        let markup = keyboard(rows);
        let sent = self
            .call("sendMessage", || {
                let mut payload = SendMessage::new(ChatId(chat_id), html)
                    .parse_mode(ParseMode::Html)
                    .reply_markup(markup.clone());
                if let Some(id) = reply_to {
                    payload = payload.reply_parameters(reply_parameters(id));
                }
                self.post::<_, SentId>(payload)
            })
            .await?;
        Ok(sent.message_id)
    }

    /// Replaces a message's HTML and its rows of inline buttons.
    pub async fn edit_html_with_rows(
        &self,
        chat_id: i64,
        message_id: i32,
        html: &str,
        rows: &[Vec<(String, String)>],
    ) -> Result<(), SendError> {
        let markup = keyboard(rows);
        match self
            .call("editMessageText", || {
                self.post::<_, IgnoredAny>(
                    EditMessageText::new(ChatId(chat_id), MessageId(message_id), html)
                        .parse_mode(ParseMode::Html)
                        .reply_markup(markup.clone()),
                )
            })
            .await
        {
            Ok(_) | Err(SendError::NotModified) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Shows "typing…" in the chat.
    pub async fn typing(&self, chat_id: i64) -> Result<(), SendError> {
        self.call("sendChatAction", || {
            self.post::<_, IgnoredAny>(SendChatAction::new(ChatId(chat_id), ChatAction::Typing))
        })
        .await
        .map(|_| ())
    }

    /// Sends a text file.
    pub async fn send_document(
        &self,
        chat_id: i64,
        file_name: &str,
        content: &str,
        caption: &str,
        reply_to: Option<i32>,
    ) -> Result<i32, SendError> {
        let message = self
            .call("sendDocument", || {
                let file =
                    InputFile::memory(content.as_bytes().to_vec()).file_name(file_name.to_string());
                let mut req = self
                    .bot
                    .send_document(ChatId(chat_id), file)
                    .caption(caption);
                if let Some(id) = reply_to {
                    req = req.reply_parameters(reply_parameters(id));
                }
                req.send()
            })
            .await?;
        Ok(message.id.0)
    }

    /// A breaker permit for one call; resolved by the call's outcome (a dropped
    /// permit, e.g. a cancelled call, counts as neither success nor failure).
    fn admit(&self) -> Result<Permit, SendError> {
        self.breaker.try_acquire().map_err(|rejected| {
            SendError::CircuitOpen(rejected.retry_after().max(Duration::from_millis(100)))
        })
    }

    /// Posts `payload` as JSON to its Bot API method and reads the answer's
    /// `result` only as far as `O` asks: [`SentId`] for a sent message's id,
    /// [`IgnoredAny`] for nothing. teloxide would read every answer into a whole
    /// `Message` (user, chat, entities, reply markup...) through an untagged
    /// wrapper that buffers the document first, which costs more than the rest
    /// of the call; the request sent is the same, on teloxide's HTTP client.
    async fn post<P, O>(&self, payload: P) -> Result<O, RequestError>
    where
        P: Payload + serde::Serialize,
        O: DeserializeOwned,
    {
        let body = serde_json::to_vec(&payload).map_err(|e| RequestError::InvalidJson {
            source: Arc::new(e),
            raw: Box::from(""),
        })?;
        let mut url = self.methods.clone();
        url.path_segments_mut()
            .expect("the API URL was checked to be a base")
            .push(P::NAME);
        let response = self
            .bot
            .client()
            .post(url)
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .body(body)
            .send()
            .await?;
        if response.status().is_server_error() {
            // As teloxide does for its own requests: Telegram's side is
            // failing, so the answer waits before the caller retries.
            tokio::time::sleep(DELAY_ON_SERVER_ERROR).await;
        }
        let text = response.bytes().await?;
        read_answer(&text)
    }

    /// Runs one request with the breaker, flood control and retries.
    async fn call<T, F, Fut>(&self, method: &'static str, make: F) -> Result<T, SendError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, RequestError>>,
    {
        let mut attempt = 0;
        loop {
            let permit = self.admit()?;
            let started = Instant::now();
            let result = make().await;
            match result {
                Ok(value) => {
                    permit.success();
                    metrics::observe(
                        "telegram",
                        method,
                        started.elapsed().as_secs_f64() * 1000.0,
                        CallOutcome::Ok,
                    );
                    return Ok(value);
                }
                Err(e) => {
                    let error = self.classify(&e);
                    self.report(&error, method, started, permit);
                    attempt += 1;
                    match &error {
                        SendError::RetryAfter(wait)
                            if attempt <= MAX_RETRIES && *wait <= MAX_INLINE_RETRY_AFTER =>
                        {
                            tracing::info!(
                                method,
                                wait_ms = wait.as_millis() as u64,
                                "telegram flood control; waiting"
                            );
                            tokio::time::sleep(*wait).await;
                        }
                        SendError::Unavailable(_) if attempt <= MAX_RETRIES => {
                            tokio::time::sleep(Duration::from_millis(200 * (1 << attempt))).await;
                        }
                        _ => return Err(error),
                    }
                }
            }
        }
    }

    fn classify(&self, e: &RequestError) -> SendError {
        match e {
            RequestError::RetryAfter(secs) => SendError::RetryAfter(secs.duration()),
            RequestError::Api(ApiError::CantParseEntities(why)) => {
                SendError::CantParseEntities(why.clone())
            }
            RequestError::Api(ApiError::TerminatedByOtherGetUpdates) => SendError::Conflict,
            RequestError::Api(ApiError::MessageNotModified) => SendError::NotModified,
            RequestError::Api(ApiError::Unknown(text)) if looks_server_side(text) => {
                SendError::Unavailable(self.redact(text))
            }
            RequestError::Api(api) => SendError::Refused(self.redact(&api.to_string())),
            RequestError::MigrateToChatId(_) => SendError::Refused(self.redact(&e.to_string())),
            RequestError::Network(_) | RequestError::Io(_) | RequestError::InvalidJson { .. } => {
                SendError::Unavailable(self.redact(&e.to_string()))
            }
        }
    }

    fn report(&self, error: &SendError, method: &str, started: Instant, permit: Permit) {
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        match error {
            SendError::Unavailable(why) => {
                let outcome = if why.contains("timed out") || why.contains("timeout") {
                    CallOutcome::Timeout
                } else {
                    CallOutcome::Error
                };
                metrics::observe("telegram", method, ms, outcome);
                permit.failure(why);
            }
            SendError::CircuitOpen(_) => permit.ignore(),
            SendError::RetryAfter(_) => {
                metrics::observe("telegram", method, ms, CallOutcome::Error);
                permit.ignore();
            }
            _ => {
                // Telegram answered: it is up, even if it said no.
                metrics::observe("telegram", method, ms, CallOutcome::Ok);
                permit.success();
            }
        }
    }
}

/// Files: `getFile` and downloads (the download URL holds the token, so every
/// error text is redacted).
impl TelegramApi {
    /// The `file_path` of a file a user sent, for [`TelegramApi::download`].
    pub async fn file_path(&self, file_id: &str) -> Result<String, SendError> {
        let file = self
            .call("getFile", || {
                self.post::<_, FilePath>(GetFile::new(teloxide::types::FileId(file_id.to_owned())))
            })
            .await?;
        Ok(file.file_path)
    }

    /// Sends `content` as a document named `file_name` (or, with `as_photo`, as a
    /// photo); the message id.
    pub async fn send_file(
        &self,
        chat_id: i64,
        file_name: &str,
        content: &[u8],
        as_photo: bool,
        reply_to: Option<i32>,
    ) -> Result<i32, SendError> {
        let file = || InputFile::memory(content.to_vec()).file_name(file_name.to_string());
        let message = if as_photo {
            self.call("sendPhoto", || {
                let mut req = self.bot.send_photo(ChatId(chat_id), file());
                if let Some(id) = reply_to {
                    req = req.reply_parameters(reply_parameters(id));
                }
                req.send()
            })
            .await?
        } else {
            self.call("sendDocument", || {
                let mut req = self.bot.send_document(ChatId(chat_id), file());
                if let Some(id) = reply_to {
                    req = req.reply_parameters(reply_parameters(id));
                }
                req.send()
            })
            .await?
        };
        Ok(message.id.0)
    }

    /// Downloads `file_path` into `dst`, once (the caller retries, since a
    /// failed attempt may have written part of the file). A network error or a
    /// 5xx is [`SendError::Unavailable`]; a 4xx answer [`SendError::Refused`].
    pub async fn download(
        &self,
        file_path: &str,
        dst: &mut (dyn tokio::io::AsyncWrite + Unpin + Send),
    ) -> Result<(), SendError> {
        use teloxide::net::Download;
        let permit = self.admit()?;
        let started = Instant::now();
        let result = self.bot.download_file(file_path, dst).await;
        let outcome = match result {
            Ok(()) => {
                permit.success();
                metrics::observe(
                    "telegram",
                    "download",
                    started.elapsed().as_secs_f64() * 1000.0,
                    CallOutcome::Ok,
                );
                return Ok(());
            }
            Err(teloxide::DownloadError::Network(e))
                if e.status().is_some_and(|s| s.is_client_error()) =>
            {
                SendError::Refused(self.redact(&e.to_string()))
            }
            Err(teloxide::DownloadError::Network(e)) => {
                SendError::Unavailable(self.redact(&e.to_string()))
            }
            Err(teloxide::DownloadError::Io(e)) => {
                // Our side (the disk) failed: Telegram is not to blame.
                permit.ignore();
                return Err(SendError::Refused(format!("cannot write the file: {e}")));
            }
        };
        self.report(&outcome, "download", started, permit);
        Err(outcome)
    }
}

/// A Bot API answer: `{"ok": true, "result": ...}`, or `{"ok": false,
/// "description": ..., "parameters": ...}` (read field by field, with no
/// buffering of the document).
#[derive(serde::Deserialize)]
struct Answer<O> {
    ok: bool,
    result: Option<O>,
    description: Option<ApiError>,
    parameters: Option<ResponseParameters>,
}

/// The `result` of a Bot API answer, or the error it reports, as teloxide
/// reports it for its own requests.
fn read_answer<O: DeserializeOwned>(text: &[u8]) -> Result<O, RequestError> {
    let invalid = |source: serde_json::Error| RequestError::InvalidJson {
        source: Arc::new(source),
        raw: String::from_utf8_lossy(text).into(),
    };
    let answer: Answer<O> = serde_json::from_slice(text).map_err(invalid)?;
    match answer {
        Answer {
            ok: true,
            result: Some(result),
            ..
        } => Ok(result),
        Answer { ok: true, .. } => Err(invalid(serde::de::Error::missing_field("result"))),
        Answer {
            parameters: Some(ResponseParameters::RetryAfter(wait)),
            ..
        } => Err(RequestError::RetryAfter(wait)),
        Answer {
            parameters: Some(ResponseParameters::MigrateToChatId(to)),
            ..
        } => Err(RequestError::MigrateToChatId(to)),
        Answer {
            description: Some(description),
            ..
        } => Err(RequestError::Api(description)),
        // teloxide cannot read a refusal without a description either: a
        // gateway's answer rather than Telegram's, so not a refusal to give
        // up on.
        Answer { .. } => Err(invalid(serde::de::Error::missing_field("description"))),
    }
}

/// The part of `getMe`'s answer agentlab keeps.
#[derive(Debug, serde::Deserialize)]
struct Me {
    username: Option<String>,
}

/// The part of `getFile`'s answer agentlab keeps.
#[derive(Debug, serde::Deserialize)]
struct FilePath {
    file_path: String,
}

/// The part of a sent `Message` agentlab keeps.
#[derive(Debug, serde::Deserialize)]
struct SentId {
    message_id: i32,
}

/// Reply to `id`, but still send if that message is gone.
fn reply_parameters(id: i32) -> ReplyParameters {
    ReplyParameters::new(MessageId(id)).allow_sending_without_reply()
}

fn looks_server_side(text: &str) -> bool {
    let lower = text.to_ascii_lowercase();
    lower.contains("internal server error")
        || lower.contains("bad gateway")
        || lower.contains("service unavailable")
        || lower.contains("gateway timeout")
        || lower.starts_with("5")
}

/// `text` with every occurrence of `token` (and of its secret half, after the bot
/// id) replaced by a placeholder: for error texts that may carry a Bot API URL.
pub fn redact_token_in(text: &str, token: &str) -> String {
    if token.is_empty() {
        return text.to_string();
    }
    let mut out = text.replace(token, "<redacted-token>");
    if let Some((_, secret)) = token.split_once(':')
        && secret.len() >= 8
    {
        out = out.replace(secret, "<redacted>");
    }
    out
}

/// An inline keyboard of rows of `(label, callback_data)` buttons.
fn keyboard(rows: &[Vec<(String, String)>]) -> InlineKeyboardMarkup {
    InlineKeyboardMarkup::new(rows.iter().map(|row| {
        row.iter()
            .map(|(label, data)| InlineKeyboardButton::callback(label.clone(), data.clone()))
            .collect::<Vec<_>>()
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_redacted_from_error_text() {
        let token = "123456:ABCDEFGHsecret";
        let text = "error sending request for url (http://x/bot123456:ABCDEFGHsecret/GetUpdates)";
        let redacted = redact_token_in(text, token);
        assert!(!redacted.contains("ABCDEFGHsecret"));
        assert!(redacted.contains("<redacted-token>"));
    }

    #[test]
    fn an_answer_is_read_as_far_as_asked() {
        let sent = br#"{"ok":true,"result":{"message_id":42,"chat":{"id":7,"type":"private"},"date":0,"text":"hi"}}"#;
        assert_eq!(read_answer::<SentId>(sent).unwrap().message_id, 42);
        read_answer::<IgnoredAny>(br#"{"ok":true,"result":true}"#).unwrap();
    }

    #[test]
    fn an_error_answer_is_the_error_teloxide_reports() {
        let flood = br#"{"ok":false,"error_code":429,"description":"Too Many Requests: retry after 3","parameters":{"retry_after":3}}"#;
        assert!(matches!(
            read_answer::<IgnoredAny>(flood),
            Err(RequestError::RetryAfter(s)) if s.duration() == Duration::from_secs(3)
        ));
        let same = br#"{"ok":false,"error_code":400,"description":"Bad Request: message is not modified: specified new message content and reply markup are exactly the same as a current content and reply markup of the message"}"#;
        assert!(matches!(
            read_answer::<IgnoredAny>(same),
            Err(RequestError::Api(ApiError::MessageNotModified))
        ));
        let other = br#"{"ok":false,"error_code":500,"description":"Internal Server Error"}"#;
        assert!(matches!(
            read_answer::<IgnoredAny>(other),
            Err(RequestError::Api(ApiError::Unknown(text))) if text == "Internal Server Error"
        ));
    }

    #[test]
    fn an_answer_that_is_not_the_bot_apis_is_invalid_json() {
        for text in [
            &b"<html>bad gateway</html>"[..],
            br#"{"ok":true}"#,
            br#"{"ok":false,"error_code":502}"#,
        ] {
            assert!(matches!(
                read_answer::<SentId>(text),
                Err(RequestError::InvalidJson { .. })
            ));
        }
    }

    #[test]
    fn method_urls_are_the_api_url_with_the_token_and_the_method() {
        let api = TelegramApi::new(
            "1:abc".into(),
            "http://127.0.0.1:8081",
            CircuitBreaker::new(
                "telegram",
                crate::breaker::BreakerSettings::default(),
                Arc::new(crate::clock::SystemClock::new()),
            ),
        )
        .unwrap();
        assert_eq!(api.methods.as_str(), "http://127.0.0.1:8081/bot1:abc");
    }
}
