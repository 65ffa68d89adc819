//! Public data types of the simulator's control side: what tests inject,
//! what they read back, and how faults are described. All of them are
//! serde-(de)serialisable because the HTTP control routes exchange them as
//! JSON.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Identity of a simulated bot, as returned by `getMe`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BotInfo {
    /// Bot user id (the numeric prefix of the token when it has one).
    pub id: i64,
    /// Bot username, without `@`.
    pub username: String,
    /// Display name.
    pub first_name: String,
}

/// What kind of action a [`SentItem`] records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SentKind {
    /// `sendMessage`.
    Message,
    /// `editMessageText`.
    Edit,
    /// `deleteMessage`.
    Delete,
    /// `sendDocument`.
    Document,
    /// `sendPhoto` (the upload is in [`SentItem::document`]).
    Photo,
    /// `sendChatAction`.
    ChatAction,
    /// `setMyCommands`.
    Commands,
    /// `answerCallbackQuery`.
    CallbackAnswer,
}

/// A file the bot uploaded with `sendDocument` or `sendPhoto`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SentDocument {
    /// File name from the multipart part (or `None` for a `file_id`/URL).
    pub file_name: Option<String>,
    /// Full size of the uploaded content in bytes.
    pub size: usize,
    /// Content, cut to the simulator's per-document limit.
    pub content: Vec<u8>,
    /// Whether `content` was cut.
    pub truncated: bool,
}

impl SentDocument {
    /// The stored content as (lossy) UTF-8 text.
    pub fn content_text(&self) -> String {
        String::from_utf8_lossy(&self.content).into_owned()
    }
}

/// One bot command as set with `setMyCommands`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BotCommandSpec {
    /// Command without the leading `/`.
    pub command: String,
    /// Description shown in the menu.
    pub description: String,
}

/// Something the bot did that a user could observe, in the order the
/// simulator accepted it. Failed calls are not recorded here (see
/// [`CallRecord`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SentItem {
    /// Position in the bot's log (strictly increasing, starts at 1).
    pub seq: u64,
    /// What happened.
    pub kind: SentKind,
    /// Target chat (absent only for `Commands` and `CallbackAnswer`).
    pub chat_id: Option<i64>,
    /// Message created, edited or deleted.
    pub message_id: Option<i32>,
    /// Text (or caption, or callback answer text) exactly as sent, before parsing.
    pub text: Option<String>,
    /// Visible text after removing tags and decoding entities.
    pub plain_text: Option<String>,
    /// `parse_mode` as sent.
    pub parse_mode: Option<String>,
    /// Message the bot replied to.
    pub reply_to_message_id: Option<i32>,
    /// `reply_markup` as sent (not interpreted).
    pub reply_markup: Option<Value>,
    /// Uploaded file, for `Document` and `Photo`.
    pub document: Option<SentDocument>,
    /// Chat action (`typing`, ...), for `ChatAction`.
    pub action: Option<String>,
    /// Commands, for `Commands`.
    pub commands: Option<Vec<BotCommandSpec>>,
    /// Query answered, for `CallbackAnswer`.
    pub callback_query_id: Option<String>,
    /// Monotonic time since the simulator started.
    pub at: Duration,
    /// Wall-clock Unix time in seconds (the message `date`).
    pub unix_time: i64,
}

impl SentItem {
    /// The visible text if there is one, otherwise the raw text.
    pub fn shown_text(&self) -> Option<&str> {
        self.plain_text.as_deref().or(self.text.as_deref())
    }

    /// Whether this item created a new message (text or document).
    pub fn is_new_message(&self) -> bool {
        matches!(
            self.kind,
            SentKind::Message | SentKind::Document | SentKind::Photo
        )
    }

    /// The (label, callback data) of its inline buttons, row after row; none
    /// without an inline keyboard.
    pub fn buttons(&self) -> Vec<(String, String)> {
        let rows = self
            .reply_markup
            .as_ref()
            .and_then(|markup| markup.get("inline_keyboard"))
            .and_then(Value::as_array);
        rows.into_iter()
            .flatten()
            .filter_map(Value::as_array)
            .flatten()
            .filter_map(|button| {
                let label = button.get("text")?.as_str()?;
                let data = button.get("callback_data")?.as_str()?;
                Some((label.to_owned(), data.to_owned()))
            })
            .collect()
    }
}

/// One Bot API call as seen by the simulator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallRecord {
    /// Position in the bot's call log (strictly increasing, starts at 1).
    pub seq: u64,
    /// Canonical method name (`getUpdates`), or the name as requested when unknown.
    pub method: String,
    /// When the request arrived, since the simulator started.
    pub at: Duration,
    /// Time until the answer was produced; `None` while in flight or if the
    /// client went away first.
    pub elapsed: Option<Duration>,
    /// HTTP status answered (`None` while in flight or when the connection was dropped).
    pub status: Option<u16>,
    /// Fault applied to this call, if any.
    pub fault: Option<FaultKind>,
    /// Error description answered, if the call failed.
    pub error: Option<String>,
}

/// A failure or misbehaviour to apply to upcoming Bot API calls.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum FaultKind {
    /// HTTP 429 `Too Many Requests: retry after N` with `parameters.retry_after`.
    TooManyRequests {
        /// Seconds the client must wait.
        retry_after: u64,
    },
    /// HTTP 400 `Bad Request: can't parse entities: Can't find end of the
    /// entity starting at byte offset 0` (use [`FaultKind::Api`] for another text).
    CantParseEntities,
    /// HTTP 409 `Conflict: terminated by other getUpdates request; ...`.
    Conflict,
    /// A 5xx answer (`status` must be 500..=599, otherwise 500 is used).
    ServerError {
        /// HTTP status.
        status: u16,
    },
    /// Wait this long before handling the call normally (use a value beyond
    /// the client's timeout to simulate a hang).
    Delay {
        /// Milliseconds.
        ms: u64,
    },
    /// Close the TCP connection without sending any response bytes.
    DropConnection,
    /// `getUpdates` only: deliver the previously delivered batch again in
    /// addition to new updates, ignoring that `offset` confirmed it.
    DuplicateUpdates,
    /// Any other error answer.
    Api {
        /// HTTP status (and `error_code`).
        status: u16,
        /// `description`.
        description: String,
    },
}

/// A queued fault: applies to the next `times` calls of `method` (matched
/// case-insensitively) or of any method when `method` is `None`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fault {
    /// Method to affect; `None` = any method.
    #[serde(default)]
    pub method: Option<String>,
    /// What to do.
    pub kind: FaultKind,
    /// How many calls to affect (at least 1).
    #[serde(default = "one")]
    pub times: u32,
}

fn one() -> u32 {
    1
}

impl Fault {
    /// A fault for the next call of any method.
    pub fn new(kind: FaultKind) -> Self {
        Self {
            method: None,
            kind,
            times: 1,
        }
    }

    /// Restricts the fault to one method (e.g. `"sendMessage"`).
    pub fn on(mut self, method: impl Into<String>) -> Self {
        self.method = Some(method.into());
        self
    }

    /// Applies the fault to the next `times` matching calls.
    pub fn times(mut self, times: u32) -> Self {
        self.times = times.max(1);
        self
    }
}

/// The method name downloads (`GET /file/bot<token>/<file_path>`) have in the
/// call log and for [`Fault::on`]: `Fault::new(..).on(DOWNLOAD).times(2)` fails
/// the next two downloads.
pub const DOWNLOAD: &str = "download";

/// Type of the chat an incoming message is in.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ChatSpec {
    /// One-to-one chat with the user (chat id should equal the user id).
    #[default]
    Private,
    /// Basic group.
    Group {
        /// Group title.
        title: String,
    },
    /// Supergroup.
    Supergroup {
        /// Group title.
        title: String,
    },
}

/// Content of an incoming user message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Content {
    /// A text message (may be empty, which real clients never send).
    Text {
        /// The text; a leading `/command` gets a `bot_command` entity.
        text: String,
    },
    /// A photo (three sizes, placeholder bytes) with an optional caption.
    Photo {
        /// Caption.
        #[serde(default)]
        caption: Option<String>,
    },
    /// A regular sticker.
    Sticker {
        /// Emoji of the sticker.
        emoji: String,
    },
    /// A document (downloadable, empty; see [`Content::File`] for content).
    Document {
        /// File name.
        file_name: String,
        /// Claimed size in bytes.
        #[serde(default)]
        file_size: u64,
        /// Caption.
        #[serde(default)]
        caption: Option<String>,
    },
    /// A file with real content the bot can fetch with `getFile` and download.
    File(IncomingFile),
}

/// Which Bot API field an [`IncomingFile`] arrives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileKind {
    /// `photo`: three sizes; the largest holds the bytes as given, the smaller
    /// ones a shorter prefix of them (so taking the wrong size is visible).
    Photo,
    /// `document`.
    Document,
    /// `audio`.
    Audio,
    /// `voice`.
    Voice,
}

/// A file sent by a user, with the bytes a download returns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IncomingFile {
    /// Where it arrives.
    pub kind: FileKind,
    /// The content.
    pub data: Vec<u8>,
    /// `file_name` (documents and audio).
    #[serde(default)]
    pub file_name: Option<String>,
    /// `mime_type` (documents, audio, voice); a generic one of the kind when absent.
    #[serde(default)]
    pub mime_type: Option<String>,
    /// `file_size` announced in the update instead of the real length (to test
    /// size limits without sending the bytes).
    #[serde(default)]
    pub claimed_size: Option<u64>,
    /// Caption.
    #[serde(default)]
    pub caption: Option<String>,
    /// `media_group_id`: messages sharing it form an album.
    #[serde(default)]
    pub media_group_id: Option<String>,
}

impl IncomingFile {
    /// A file of `kind` holding `data`.
    pub fn new(kind: FileKind, data: impl Into<Vec<u8>>) -> Self {
        Self {
            kind,
            data: data.into(),
            file_name: None,
            mime_type: None,
            claimed_size: None,
            caption: None,
            media_group_id: None,
        }
    }

    /// Names the file.
    pub fn named(mut self, file_name: impl Into<String>) -> Self {
        self.file_name = Some(file_name.into());
        self
    }

    /// Adds a caption.
    pub fn captioned(mut self, caption: impl Into<String>) -> Self {
        self.caption = Some(caption.into());
        self
    }

    /// Announces `size` bytes in the update, whatever the content's length.
    pub fn claiming_size(mut self, size: u64) -> Self {
        self.claimed_size = Some(size);
        self
    }

    /// Makes the message part of the album `group`.
    pub fn in_album(mut self, group: impl Into<String>) -> Self {
        self.media_group_id = Some(group.into());
        self
    }
}

/// A message from a user to inject as an update.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IncomingMessage {
    /// Sender user id.
    pub user_id: i64,
    /// Chat id (equal to `user_id` for private chats, negative for groups).
    pub chat_id: i64,
    /// Chat type.
    #[serde(default)]
    pub chat: ChatSpec,
    /// What was sent.
    pub content: Content,
    /// Sender's first name (default `User <id>`).
    #[serde(default)]
    pub first_name: Option<String>,
    /// Sender's username (default `user<id>`).
    #[serde(default)]
    pub username: Option<String>,
    /// Makes the message a forward of a message originally sent by this user id.
    #[serde(default)]
    pub forward_from: Option<i64>,
    /// Makes the message a reply to this message id of the same chat.
    #[serde(default)]
    pub reply_to_message_id: Option<i32>,
}

impl IncomingMessage {
    /// A text message from `user_id` in chat `chat_id` (a private chat
    /// unless changed with [`IncomingMessage::in_group`] or
    /// [`IncomingMessage::in_supergroup`]).
    pub fn text(user_id: i64, chat_id: i64, text: impl Into<String>) -> Self {
        Self::with_content(user_id, chat_id, Content::Text { text: text.into() })
    }

    /// A photo message.
    pub fn photo(user_id: i64, chat_id: i64, caption: Option<String>) -> Self {
        Self::with_content(user_id, chat_id, Content::Photo { caption })
    }

    /// A message carrying a file (photo, document, audio, voice) with content.
    pub fn file(user_id: i64, chat_id: i64, file: IncomingFile) -> Self {
        Self::with_content(user_id, chat_id, Content::File(file))
    }

    /// A sticker message.
    pub fn sticker(user_id: i64, chat_id: i64, emoji: impl Into<String>) -> Self {
        Self::with_content(
            user_id,
            chat_id,
            Content::Sticker {
                emoji: emoji.into(),
            },
        )
    }

    /// A message with arbitrary content.
    pub fn with_content(user_id: i64, chat_id: i64, content: Content) -> Self {
        Self {
            user_id,
            chat_id,
            chat: ChatSpec::Private,
            content,
            first_name: None,
            username: None,
            forward_from: None,
            reply_to_message_id: None,
        }
    }

    /// Puts the message in a basic group with this title.
    pub fn in_group(mut self, title: impl Into<String>) -> Self {
        self.chat = ChatSpec::Group {
            title: title.into(),
        };
        self
    }

    /// Puts the message in a supergroup with this title.
    pub fn in_supergroup(mut self, title: impl Into<String>) -> Self {
        self.chat = ChatSpec::Supergroup {
            title: title.into(),
        };
        self
    }

    /// Marks the message as forwarded from `user_id`.
    pub fn forwarded_from(mut self, user_id: i64) -> Self {
        self.forward_from = Some(user_id);
        self
    }

    /// Makes the message a reply to `message_id`.
    pub fn replying_to(mut self, message_id: i32) -> Self {
        self.reply_to_message_id = Some(message_id);
        self
    }
}

/// Identifiers assigned to an injected message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Injected {
    /// Update id the bot will receive.
    pub update_id: u64,
    /// Message id within its chat.
    pub message_id: i32,
}

/// Current state of a message in a chat, as a user would see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatEntry {
    /// Message id.
    pub message_id: i32,
    /// Whether the bot sent it.
    pub from_bot: bool,
    /// Visible text (or caption).
    pub text: Option<String>,
    /// Whether it was edited.
    pub edited: bool,
}

/// Identifiers assigned to an injected callback query.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InjectedCallback {
    /// Update id the bot will receive.
    pub update_id: u64,
    /// `callback_query.id`, to be answered with `answerCallbackQuery`.
    pub callback_query_id: String,
}
