//! HTTP side of the Bot API: `GET|POST /bot<token>/<method>`.
//!
//! Every call to a registered bot is logged (method, arrival time, duration,
//! status, fault), queued faults are applied before the method runs, and the
//! answer is always the Bot API envelope `{"ok":..., ...}`.

use std::{sync::Arc, time::Instant};

use axum::{
    Json,
    body::Body,
    extract::{ConnectInfo, Request, State},
    http::{header::CONTENT_TYPE, request::Parts},
    response::{IntoResponse, Response},
};
use serde_json::{Value, json};

use super::{
    error::ApiFailure,
    methods::{self, Ctx},
    net::ConnTag,
    params::{Params, percent_decode},
    redact::masked_token,
    state::{SimState, unix_now},
    types::{DOWNLOAD, FaultKind},
};

/// The result of serving one call, for the answer and the call log.
struct Outcome {
    response: Response,
    status: Option<u16>,
    error: Option<String>,
}

impl Outcome {
    fn from_result(result: Result<Value, ApiFailure>) -> Self {
        match result {
            Ok(value) => Self {
                response: Json(json!({ "ok": true, "result": value })).into_response(),
                status: Some(200),
                error: None,
            },
            Err(failure) => Self {
                status: Some(failure.code),
                error: Some(failure.description.clone()),
                response: failure.into_response(),
            },
        }
    }

    fn dropped() -> Self {
        Self {
            response: Response::default(),
            status: None,
            error: Some("connection dropped".into()),
        }
    }
}

/// What an applied fault means for the rest of the call.
enum FaultEffect {
    /// Answer with this error instead of running the method.
    Fail(ApiFailure),
    /// Close the connection without answering.
    Drop,
    /// Run the method normally (after a delay, if any).
    Proceed,
    /// Run `getUpdates` re-delivering the previous batch.
    Duplicate,
}

/// The call being served.
struct Call<'a> {
    state: &'a SimState,
    token: &'a str,
    method: &'a str,
    canonical: Option<&'static str>,
}

/// Handler for `/{bot<token>}/{method}`.
pub(crate) async fn handle(State(state): State<Arc<SimState>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let Some((token, method)) = split_path(parts.uri.path()) else {
        return ApiFailure::not_found().into_response();
    };
    if !state.has_bot(&token) {
        tracing::debug!(bot = %masked_token(&token), %method, "telegram sim: call with unknown token");
        return ApiFailure::unauthorized().into_response();
    }
    let canonical = methods::canonical(&method);
    let method = canonical.map_or(method, str::to_owned);
    let call = Call {
        state: &state,
        token: &token,
        method: &method,
        canonical,
    };
    let started = Instant::now();
    let Some((seq, fault)) = begin(&state, &token, &method) else {
        return ApiFailure::unauthorized().into_response();
    };
    state.notify_log();
    let outcome = serve(&call, &parts, body, fault).await;
    finish(&call, seq, started, &outcome);
    outcome.response
}

/// Logs the call's arrival and takes the fault that applies to it.
fn begin(state: &SimState, token: &str, method: &str) -> Option<(u64, Option<FaultKind>)> {
    state
        .with_bot(token, |bot| {
            let seq = bot.begin_call(method, state.elapsed());
            let fault = bot.take_fault(method);
            if let Some(record) = bot.call_mut(seq) {
                record.fault = fault.clone();
            }
            (seq, fault)
        })
        .ok()
}

/// Splits `/bot<token>/<method>`; the token is percent-decoded.
fn split_path(path: &str) -> Option<(String, String)> {
    let (first, method) = path.strip_prefix('/')?.split_once('/')?;
    let token = first.strip_prefix("bot")?;
    if token.is_empty() || method.is_empty() || method.contains('/') {
        return None;
    }
    Some((percent_decode(token, false), method.to_owned()))
}

async fn serve(call: &Call<'_>, parts: &Parts, body: Body, fault: Option<FaultKind>) -> Outcome {
    let effect = match fault {
        Some(kind) => apply_fault(call.state, &kind, parts).await,
        None => FaultEffect::Proceed,
    };
    let duplicate = match effect {
        FaultEffect::Fail(failure) => return Outcome::from_result(Err(failure)),
        FaultEffect::Drop => return Outcome::dropped(),
        FaultEffect::Proceed => false,
        FaultEffect::Duplicate => true,
    };
    let result = match read_params(call.state, parts, body).await {
        Ok(params) => run_method(call, &params, duplicate).await,
        Err(failure) => Err(failure),
    };
    Outcome::from_result(result)
}

async fn apply_fault(state: &SimState, kind: &FaultKind, parts: &Parts) -> FaultEffect {
    match kind {
        FaultKind::TooManyRequests { retry_after } => {
            FaultEffect::Fail(ApiFailure::retry_after(*retry_after))
        }
        FaultKind::CantParseEntities => FaultEffect::Fail(ApiFailure::cant_parse_entities(
            "Can't find end of the entity starting at byte offset 0",
        )),
        FaultKind::Conflict => FaultEffect::Fail(ApiFailure::conflict()),
        FaultKind::ServerError { status } => FaultEffect::Fail(ApiFailure::server_error(*status)),
        FaultKind::Api {
            status,
            description,
        } => FaultEffect::Fail(ApiFailure::new(*status, description.clone())),
        FaultKind::Delay { ms } => {
            tokio::select! {
                () = tokio::time::sleep(std::time::Duration::from_millis(*ms)) => {}
                () = state.shut_down() => {}
            }
            FaultEffect::Proceed
        }
        FaultKind::DuplicateUpdates => FaultEffect::Duplicate,
        FaultKind::DropConnection => match parts.extensions.get::<ConnectInfo<ConnTag>>() {
            Some(ConnectInfo(conn)) => {
                tracing::debug!(peer = %conn.peer, "telegram sim: dropping connection (fault)");
                conn.kill.trigger();
                FaultEffect::Drop
            }
            None => FaultEffect::Fail(ApiFailure::new(
                502,
                "Bad Gateway: connection drop unavailable",
            )),
        },
    }
}

async fn read_params(state: &SimState, parts: &Parts, body: Body) -> Result<Params, ApiFailure> {
    let bytes = axum::body::to_bytes(body, state.limits().max_body_bytes)
        .await
        .map_err(|_| ApiFailure::too_large())?;
    let content_type = parts
        .headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    Params::parse(content_type, parts.uri.query(), &bytes)
}

async fn run_method(
    call: &Call<'_>,
    params: &Params,
    duplicate: bool,
) -> Result<Value, ApiFailure> {
    let Some(method) = call.canonical else {
        return Err(ApiFailure::not_found());
    };
    if method == "getUpdates" {
        return methods::get_updates(call.state, call.token, params, duplicate).await;
    }
    let ctx = Ctx {
        at: call.state.elapsed(),
        now: unix_now(),
    };
    call.state
        .with_bot(call.token, |bot| {
            methods::dispatch(bot, method, params, ctx)
        })
        .map_err(|_| ApiFailure::unauthorized())?
}

fn finish(call: &Call<'_>, seq: u64, started: Instant, outcome: &Outcome) {
    let elapsed = started.elapsed();
    let _ = call.state.with_bot(call.token, |bot| {
        if let Some(record) = bot.call_mut(seq) {
            record.elapsed = Some(elapsed);
            record.status = outcome.status;
            record.error.clone_from(&outcome.error);
        }
    });
    call.state.notify_log();
    tracing::debug!(
        bot = %masked_token(call.token),
        method = call.method,
        status = ?outcome.status,
        error = ?outcome.error,
        elapsed_ms = elapsed.as_millis(),
        "telegram sim: bot api call"
    );
}

/// Handler for `GET /file/{bot<token>}/{file_path}`: the content of a file a
/// user sent, as the real server's download endpoint serves it. Downloads are
/// logged and take faults under the method name [`DOWNLOAD`].
pub(crate) async fn download(State(state): State<Arc<SimState>>, request: Request) -> Response {
    let (parts, _body) = request.into_parts();
    let Some((token, path)) = parts
        .uri
        .path()
        .strip_prefix("/file/bot")
        .and_then(|rest| rest.split_once('/'))
        .map(|(token, path)| (percent_decode(token, false), percent_decode(path, false)))
    else {
        return ApiFailure::not_found().into_response();
    };
    if !state.has_bot(&token) {
        tracing::debug!(bot = %masked_token(&token), "telegram sim: download with unknown token");
        return ApiFailure::unauthorized().into_response();
    }
    let call = Call {
        state: &state,
        token: &token,
        method: DOWNLOAD,
        canonical: None,
    };
    let started = Instant::now();
    let Some((seq, fault)) = begin(&state, &token, DOWNLOAD) else {
        return ApiFailure::unauthorized().into_response();
    };
    state.notify_log();
    let effect = match fault {
        Some(kind) => apply_fault(&state, &kind, &parts).await,
        None => FaultEffect::Proceed,
    };
    let outcome = match effect {
        FaultEffect::Fail(failure) => Outcome::from_result(Err(failure)),
        FaultEffect::Drop => Outcome::dropped(),
        FaultEffect::Proceed | FaultEffect::Duplicate => {
            match state.with_bot(&token, |bot| bot.file_at(&path).map(|f| f.data.clone())) {
                Ok(Some(data)) => Outcome {
                    response: ([(CONTENT_TYPE, "application/octet-stream")], data).into_response(),
                    status: Some(200),
                    error: None,
                },
                _ => Outcome::from_result(Err(ApiFailure::not_found())),
            }
        }
    };
    finish(&call, seq, started, &outcome);
    outcome.response
}

/// Fallback for any other path: the Bot API's 404.
pub(crate) async fn not_found() -> Response {
    ApiFailure::not_found().into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_split() {
        assert_eq!(
            split_path("/bot123:abc/getMe"),
            Some(("123:abc".into(), "getMe".into()))
        );
        assert_eq!(
            split_path("/bot1%3Ax/sendMessage"),
            Some(("1:x".into(), "sendMessage".into()))
        );
        assert_eq!(split_path("/control/x"), None);
        assert_eq!(split_path("/bot/getMe"), None);
        assert_eq!(split_path("/bot1:a/x/y"), None);
        assert_eq!(split_path("/bot1:a/"), None);
    }
}
