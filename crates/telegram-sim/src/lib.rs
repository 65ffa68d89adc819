//! A local **Telegram Bot API simulator**.
//!
//! It exists so that the bot can be exercised end to end without Telegram:
//! the integration tests and `agentlab demo` point a real `teloxide::Bot` at
//! it (`Bot::new(token).set_api_url(handle.url().parse()?)`), play the user's
//! part through the control API, and inspect what the bot did.
//!
//! # Two sides
//!
//! * **Bot API side** — `GET|POST /bot<token>/<method>` with JSON,
//!   form-urlencoded or multipart bodies, answering the real envelopes
//!   (`{"ok":true,"result":...}` / `{"ok":false,"error_code":..,"description":..}`).
//!   Implemented: `getMe`, `getUpdates` (offset, limit, real long polling,
//!   `allowed_updates`), `sendMessage`, `editMessageText`, `deleteMessage`,
//!   `sendChatAction`, `sendDocument`, `sendPhoto`, `getFile`, `setMyCommands`,
//!   `getMyCommands`, `deleteMyCommands`, `deleteWebhook`, `getWebhookInfo`,
//!   `answerCallbackQuery`; file downloads at `GET /file/bot<token>/<file_path>`
//!   for files users sent ([`IncomingFile`]: photo in three sizes, document,
//!   audio, voice, albums by `media_group_id`), logged and faulted as
//!   [`DOWNLOAD`]; uploads keep their bytes, name and caption. Method names match case-insensitively; other
//!   methods answer 404 `Not Found`, unregistered tokens 401 `Unauthorized`.
//! * **Control side** — [`SimHandle`] in-process, and the same operations as
//!   JSON routes under `/control/...` for tests in another process: register
//!   bots, inject updates, read the sent log and the call log, wait for
//!   conditions, queue faults.
//!
//! # Example
//!
//! ```text
//! let sim = TelegramSim::start("127.0.0.1:0".parse()?, vec![TOKEN.into()]).await?;
//! let bot = teloxide::Bot::new(TOKEN).set_api_url(sim.url().parse()?);
//! // ... start the product's dispatcher with `bot` ...
//! sim.inject_text(TOKEN, 42, 42, "/status")?;
//! let replies = sim.wait_for_messages(TOKEN, 42, 1, Duration::from_secs(5)).await?;
//! sim.inject_fault(TOKEN, Fault::new(FaultKind::TooManyRequests { retry_after: 1 }).on("sendMessage"))?;
//! sim.shutdown().await;
//! ```
//!
//! The control routes have no authentication: bind the simulator to a
//! loopback address.
//!
//! # Invariants
//!
//! * Validation follows the real server where the bot could get it wrong:
//!   empty text, more than 4096 UTF-16 code units *after* entity parsing,
//!   malformed HTML in `parse_mode=HTML` (see [`html`]), editing with
//!   identical content, editing/deleting unknown messages. Error
//!   descriptions are the real ones, so teloxide maps them to the same
//!   `ApiError` variants.
//! * Message ids increase per chat; update ids increase per bot; an update
//!   stays pending until a `getUpdates` offset above its id confirms it.
//! * A newer `getUpdates` for a bot makes a still-waiting older one answer
//!   409 Conflict, as on the real server.
//! * Faults are consumed in queue order, one per matching call, before the
//!   method runs; the call log records the fault applied to each call.
//! * Memory is bounded ([`SimLimits`]): logs, pending updates, known
//!   messages and chats, stored document content and request bodies are
//!   capped; the oldest entries are forgotten first.
//! * No input makes it panic; malformed bodies answer 400 with a description.
//! * Tokens are never logged in full (see [`masked_token`]); logging is at
//!   `debug` level (target `telegram_sim`).

mod bot_api;
mod control;
mod error;
mod handle;
pub mod html;
mod methods;
mod multipart;
mod net;
mod params;
mod redact;
mod state;
mod types;
mod updates;

#[cfg(test)]
mod tests;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use axum::{Router, routing::get};
use tokio::net::TcpListener;

pub use error::{ApiFailure, SimError};
pub use handle::SimHandle;
pub use redact::masked_token;
pub use types::{
    BotCommandSpec, BotInfo, CallRecord, ChatEntry, ChatSpec, Content, DOWNLOAD, Fault, FaultKind,
    FileKind, IncomingFile, IncomingMessage, Injected, InjectedCallback, SentDocument, SentItem,
    SentKind,
};

use net::{ConnTag, SimListener};
use state::SimState;

/// Caps that keep the simulator's memory bounded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimLimits {
    /// Unconfirmed updates kept per bot (oldest dropped beyond).
    pub max_pending_updates: usize,
    /// Entries of the sent log kept per bot.
    pub max_sent_items: usize,
    /// Entries of the call log kept per bot.
    pub max_calls: usize,
    /// Messages remembered per bot (for edits, deletes, replies).
    pub max_messages: usize,
    /// Chats remembered per bot.
    pub max_chats: usize,
    /// Faults queued per bot.
    pub max_faults: usize,
    /// Bytes of each uploaded document kept in the sent log.
    pub max_document_bytes: usize,
    /// Bytes of document content kept in a bot's whole sent log (the
    /// content of the oldest documents is dropped first).
    pub max_document_bytes_total: usize,
    /// Largest request body accepted (413 beyond).
    pub max_body_bytes: usize,
    /// Longest `getUpdates` timeout honoured.
    pub max_poll_timeout: Duration,
}

impl Default for SimLimits {
    fn default() -> Self {
        Self {
            max_pending_updates: 1_000,
            max_sent_items: 5_000,
            max_calls: 10_000,
            max_messages: 10_000,
            max_chats: 10_000,
            max_faults: 1_000,
            max_document_bytes: 512 * 1024,
            max_document_bytes_total: 64 * 1024 * 1024,
            max_body_bytes: 20 * 1024 * 1024,
            max_poll_timeout: Duration::from_secs(50),
        }
    }
}

/// Full configuration of a simulator.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Address to listen on (port 0 picks a free port).
    pub addr: SocketAddr,
    /// Tokens registered at start (default identities).
    pub tokens: Vec<String>,
    /// Memory caps.
    pub limits: SimLimits,
    /// Added to the first update id (1000) and to every chat's first message id
    /// (1). Telegram never repeats either, so a client that keeps state across
    /// simulator restarts (the demo, on its data directory) passes a value that
    /// grows with time, so a new run never repeats an id an earlier one used.
    pub id_offset: u32,
}

impl SimConfig {
    /// A configuration with default limits.
    pub fn new(addr: SocketAddr, tokens: Vec<String>) -> Self {
        Self {
            addr,
            tokens,
            limits: SimLimits::default(),
            id_offset: 0,
        }
    }
}

/// Entry point: starts simulators.
#[derive(Debug)]
pub struct TelegramSim;

impl TelegramSim {
    /// Starts a simulator on `addr` (e.g. `127.0.0.1:0`) with these bots
    /// registered. The server runs on the current Tokio runtime until
    /// [`SimHandle::shutdown`] or until the last handle is dropped.
    pub async fn start(addr: SocketAddr, tokens: Vec<String>) -> Result<SimHandle, SimError> {
        Self::start_with(SimConfig::new(addr, tokens)).await
    }

    /// Starts a simulator with a full configuration.
    pub async fn start_with(config: SimConfig) -> Result<SimHandle, SimError> {
        let state = SimState::new(config.limits, config.id_offset);
        for token in &config.tokens {
            state.register(token, None, None)?;
        }
        let bind_error = |error| SimError::Bind {
            addr: config.addr,
            error,
        };
        let listener = TcpListener::bind(config.addr).await.map_err(bind_error)?;
        let local = listener.local_addr().map_err(bind_error)?;
        let app = router(Arc::clone(&state)).into_make_service_with_connect_info::<ConnTag>();
        let shutdown_state = Arc::clone(&state);
        let server = tokio::spawn(async move {
            let result = axum::serve(SimListener::new(listener), app)
                .with_graceful_shutdown(async move { shutdown_state.shut_down().await })
                .await;
            if let Err(err) = result {
                tracing::warn!(%err, "telegram sim: server error");
            }
        });
        tracing::debug!(addr = %local, bots = config.tokens.len(), "telegram sim: listening");
        Ok(SimHandle::new(state, local, server))
    }
}

/// The complete HTTP application: Bot API, `/control`, JSON 404 fallback.
fn router(state: Arc<SimState>) -> Router {
    Router::new()
        .nest("/control", control::routes())
        .route("/file/{bot}/{*path}", get(bot_api::download))
        .route(
            "/{bot}/{method}",
            get(bot_api::handle).post(bot_api::handle),
        )
        .fallback(bot_api::not_found)
        .with_state(state)
}
