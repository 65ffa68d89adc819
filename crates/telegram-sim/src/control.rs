//! HTTP control routes under `/control`, so a test in another process can
//! drive the simulator. Bodies and answers are JSON; errors are
//! `{"ok": false, "error": "..."}` with a 4xx/5xx status.

use std::{sync::Arc, time::Duration};

use axum::{
    Json, Router,
    extract::{FromRequest, FromRequestParts, Query, Request, State},
    http::request::Parts,
    routing::{get, post},
};
use serde::{Deserialize, de::DeserializeOwned};
use serde_json::{Value, json};

use super::{
    error::SimError,
    state::SimState,
    types::{BotInfo, Fault, IncomingMessage},
};

/// Longest wait a control request may ask for.
const MAX_CONTROL_WAIT: Duration = Duration::from_secs(600);

type Shared = State<Arc<SimState>>;
type Answer = Result<Json<Value>, SimError>;

/// The control routes, to be nested under `/control`.
pub(crate) fn routes() -> Router<Arc<SimState>> {
    Router::new()
        .route("/health", get(|| async { Json(json!({ "ok": true })) }))
        .route("/bots", get(list_bots).post(register_bot))
        .route("/inject/text", post(inject_text))
        .route("/inject/message", post(inject_message))
        .route("/inject/edit", post(inject_edit))
        .route("/inject/channel_post", post(inject_channel_post))
        .route("/inject/callback", post(inject_callback))
        .route("/inject/raw", post(inject_raw))
        .route("/sent", get(sent))
        .route("/chat", get(chat))
        .route("/wait/sent", get(wait_sent))
        .route("/wait/messages", get(wait_messages))
        .route("/wait/confirmed", get(wait_confirmed))
        .route(
            "/faults",
            get(list_faults).post(add_fault).delete(clear_faults),
        )
        .route("/calls", get(calls))
        .route("/calls/counts", get(call_counts))
        .route("/commands", get(commands))
        .route("/updates/pending", get(pending_updates))
        .route("/reset", post(reset))
}

/// JSON body extractor whose rejection is a JSON 400.
struct Body<T>(T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = SimError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        Json::<T>::from_request(req, state)
            .await
            .map(|Json(value)| Self(value))
            .map_err(|rejection| SimError::BadRequest(rejection.body_text()))
    }
}

/// Query-string extractor whose rejection is a JSON 400.
struct Params<T>(T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Params<T> {
    type Rejection = SimError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(value)| Self(value))
            .map_err(|rejection| SimError::BadRequest(rejection.body_text()))
    }
}

fn answer(value: impl serde::Serialize) -> Answer {
    serde_json::to_value(value)
        .map(Json)
        .map_err(|e| SimError::BadRequest(e.to_string()))
}

fn wait_duration(timeout_ms: u64) -> Duration {
    Duration::from_millis(timeout_ms).min(MAX_CONTROL_WAIT)
}

#[derive(Deserialize)]
struct TokenQuery {
    token: String,
}

#[derive(Deserialize)]
struct RegisterBody {
    token: String,
    username: Option<String>,
    first_name: Option<String>,
}

async fn list_bots(State(state): Shared) -> Answer {
    answer(state.bots())
}

async fn register_bot(State(state): Shared, Body(body): Body<RegisterBody>) -> Answer {
    let info: BotInfo = state.register(&body.token, body.username, body.first_name)?;
    answer(info)
}

#[derive(Deserialize)]
struct InjectTextBody {
    token: String,
    user_id: i64,
    chat_id: i64,
    text: String,
}

async fn inject_text(State(state): Shared, Body(body): Body<InjectTextBody>) -> Answer {
    let message = IncomingMessage::text(body.user_id, body.chat_id, body.text);
    answer(state.inject_message(&body.token, &message)?)
}

#[derive(Deserialize)]
struct InjectMessageBody {
    token: String,
    message: IncomingMessage,
}

async fn inject_message(State(state): Shared, Body(body): Body<InjectMessageBody>) -> Answer {
    answer(state.inject_message(&body.token, &body.message)?)
}

#[derive(Deserialize)]
struct InjectEditBody {
    token: String,
    chat_id: i64,
    message_id: i32,
    text: String,
}

async fn inject_edit(State(state): Shared, Body(body): Body<InjectEditBody>) -> Answer {
    let update_id = state.inject_edit(&body.token, body.chat_id, body.message_id, &body.text)?;
    answer(json!({ "update_id": update_id }))
}

#[derive(Deserialize)]
struct ChannelPostBody {
    token: String,
    chat_id: i64,
    #[serde(default = "default_channel_title")]
    title: String,
    text: String,
}

fn default_channel_title() -> String {
    "Sim Channel".to_owned()
}

async fn inject_channel_post(State(state): Shared, Body(body): Body<ChannelPostBody>) -> Answer {
    answer(state.inject_channel_post(&body.token, body.chat_id, &body.title, &body.text)?)
}

#[derive(Deserialize)]
struct CallbackBody {
    token: String,
    user_id: i64,
    chat_id: i64,
    message_id: i32,
    data: String,
}

async fn inject_callback(State(state): Shared, Body(body): Body<CallbackBody>) -> Answer {
    answer(state.inject_callback(
        &body.token,
        body.user_id,
        body.chat_id,
        body.message_id,
        &body.data,
    )?)
}

#[derive(Deserialize)]
struct RawBody {
    token: String,
    update: Value,
}

async fn inject_raw(State(state): Shared, Body(body): Body<RawBody>) -> Answer {
    let update_id = state.inject_raw(&body.token, body.update)?;
    answer(json!({ "update_id": update_id }))
}

#[derive(Deserialize)]
struct SentQuery {
    token: String,
    chat_id: Option<i64>,
    #[serde(default)]
    since: u64,
}

async fn sent(State(state): Shared, Params(q): Params<SentQuery>) -> Answer {
    let mut items = state.sent(&q.token)?;
    items.retain(|i| i.seq > q.since && q.chat_id.is_none_or(|c| i.chat_id == Some(c)));
    answer(items)
}

#[derive(Deserialize)]
struct ChatQuery {
    token: String,
    chat_id: i64,
}

async fn chat(State(state): Shared, Params(q): Params<ChatQuery>) -> Answer {
    answer(state.chat(&q.token, q.chat_id)?)
}

#[derive(Deserialize)]
struct WaitSentQuery {
    token: String,
    #[serde(default)]
    since: u64,
    #[serde(default = "one")]
    count: usize,
    chat_id: Option<i64>,
    timeout_ms: u64,
}

fn one() -> usize {
    1
}

async fn wait_sent(State(state): Shared, Params(q): Params<WaitSentQuery>) -> Answer {
    let items = state
        .wait_log(
            wait_duration(q.timeout_ms),
            || format!("{} sent item(s) after seq {}", q.count, q.since),
            || {
                let mut items = state.sent(&q.token)?;
                items.retain(|i| i.seq > q.since && q.chat_id.is_none_or(|c| i.chat_id == Some(c)));
                Ok((items.len() >= q.count).then_some(items))
            },
        )
        .await?;
    answer(items)
}

#[derive(Deserialize)]
struct WaitMessagesQuery {
    token: String,
    chat_id: i64,
    #[serde(default = "one")]
    count: usize,
    timeout_ms: u64,
}

async fn wait_messages(State(state): Shared, Params(q): Params<WaitMessagesQuery>) -> Answer {
    let items = state
        .wait_for_messages(&q.token, q.chat_id, q.count, wait_duration(q.timeout_ms))
        .await?;
    answer(items)
}

#[derive(Deserialize)]
struct WaitConfirmedQuery {
    token: String,
    update_id: u64,
    timeout_ms: u64,
}

async fn wait_confirmed(State(state): Shared, Params(q): Params<WaitConfirmedQuery>) -> Answer {
    state
        .wait_for_confirmed(&q.token, q.update_id, wait_duration(q.timeout_ms))
        .await?;
    answer(json!({ "ok": true }))
}

async fn list_faults(State(state): Shared, Params(q): Params<TokenQuery>) -> Answer {
    answer(state.faults(&q.token)?)
}

#[derive(Deserialize)]
struct FaultBody {
    token: String,
    fault: Fault,
}

async fn add_fault(State(state): Shared, Body(body): Body<FaultBody>) -> Answer {
    state.add_fault(&body.token, body.fault)?;
    answer(json!({ "ok": true }))
}

async fn clear_faults(State(state): Shared, Params(q): Params<TokenQuery>) -> Answer {
    answer(json!({ "cleared": state.clear_faults(&q.token)? }))
}

async fn calls(State(state): Shared, Params(q): Params<TokenQuery>) -> Answer {
    answer(state.calls(&q.token)?)
}

async fn call_counts(State(state): Shared, Params(q): Params<TokenQuery>) -> Answer {
    answer(state.call_counts(&q.token)?)
}

async fn commands(State(state): Shared, Params(q): Params<TokenQuery>) -> Answer {
    answer(state.commands(&q.token)?)
}

async fn pending_updates(State(state): Shared, Params(q): Params<TokenQuery>) -> Answer {
    answer(json!({ "pending": state.pending_updates(&q.token)? }))
}

async fn reset(State(state): Shared, Params(q): Params<TokenQuery>) -> Answer {
    state.clear_logs(&q.token)?;
    answer(json!({ "ok": true }))
}
