//! Admin routes: submit and cancel tasks, restart, back up, dump the store.
//!
//! Invariants: each needs the bearer token from `http.admin_token_env`, compared
//! in constant time, and is refused (403) when no token is configured; the
//! [`Admin`] extractor comes first in every handler, so nothing of an
//! unauthenticated request is parsed or acted on. The dump streams rows from one
//! read transaction through a bounded channel: memory stays flat whatever the
//! size of the store (ndjson and table text; the JSON document is collected
//! first, as the CLI does), and a client that goes away ends the transaction. Its
//! text comes from the same [`DumpWriter`] as `agentlab dump` on the file.

use std::convert::Infallible;
use std::time::Duration;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{FromRequestParts, RawQuery, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use subtle::ConstantTimeEq;
use tokio::sync::mpsc;

use super::error::ApiError;
use super::extract::{ApiJson, ApiPath, json_integer, optional_json_integer};
use super::status::unknown_bot;
use super::{Api, AppState};
use crate::intake::{Door, Prompt, Refusal};
use crate::shutdown::RESTART_EXIT_CODE;
use crate::storage::{
    DumpFormat, DumpWriter, MAX_PROMPT_BYTES, RestartState, TaskStatus, now_ms, tables::ALL_TABLES,
};

/// Proof that the request carried the admin token.
pub(crate) struct Admin;

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, api: &AppState) -> Result<Self, ApiError> {
        check_token(
            &api.ctx.admin_token,
            &api.ctx.config.http.admin_token_env,
            parts,
        )?;
        Ok(Admin)
    }
}

fn check_token(expected: &Option<String>, env_var: &str, parts: &Parts) -> Result<(), ApiError> {
    let Some(expected) = expected.as_deref() else {
        return Err(ApiError::forbidden(format!(
            "admin routes are disabled: set ${env_var} to enable them"
        )));
    };
    let given = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| {
            ApiError::unauthorized("missing bearer token (Authorization: Bearer <token>)")
        })?;
    if bool::from(given.trim().as_bytes().ct_eq(expected.as_bytes())) {
        Ok(())
    } else {
        Err(ApiError::unauthorized("wrong bearer token"))
    }
}

/// Body of `POST /api/tasks`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateTask {
    bot_id: String,
    #[serde(deserialize_with = "json_integer")]
    user_id: i64,
    prompt: String,
    #[serde(default, deserialize_with = "optional_json_integer")]
    chat_id: Option<i64>,
    /// The project it runs in; absent: `default`.
    #[serde(default)]
    project: Option<String>,
}

/// `POST /api/tasks`: queue a prompt through the intake; answers 201 with the
/// task id once durable.
pub(crate) async fn create_task(
    _: Admin,
    State(api): State<AppState>,
    ApiJson(req): ApiJson<CreateTask>,
) -> Result<Response, ApiError> {
    let prompt = Prompt {
        bot_id: req.bot_id,
        text: req.prompt,
        door: Door::Http {
            user_id: req.user_id,
            chat_id: req.chat_id,
        },
        project: req.project,
    };
    let accepted = api.ctx.intake.submit(prompt).await.map_err(refusal_error)?;
    tracing::info!(task_id = accepted.task.id, bot_id = %accepted.task.bot_id, "task submitted over HTTP");
    let body = json!({"id": accepted.task.id, "status": accepted.task.status});
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

/// The answer to a prompt the intake refused.
fn refusal_error(refusal: Refusal) -> ApiError {
    match refusal {
        Refusal::UnknownBot(bot_id) => unknown_bot(&bot_id),
        Refusal::Empty => ApiError::bad_request("prompt is empty"),
        unknown @ Refusal::UnknownProject { .. } => ApiError::bad_request(unknown.to_string()),
        Refusal::TooLong { .. } => {
            ApiError::bad_request(format!("prompt is longer than {MAX_PROMPT_BYTES} bytes"))
        }
        // Low on disk: refused cleanly rather than half-written (nothing stored is lost).
        Refusal::DiskFull(full) => ApiError::unavailable(full.to_string()),
        Refusal::Store(e) => e.into(),
        // Not applied to an admin's task (see `crate::intake`); worded if they ever are.
        other @ (Refusal::RateLimited(_) | Refusal::Budget(_)) => {
            ApiError::unavailable(other.to_string())
        }
    }
}

/// Longest a cancel waits for a just-claimed task to register with the pool.
const CANCEL_REGISTER_WAIT: Duration = Duration::from_secs(2);

/// `POST /api/tasks/{id}/cancel`
pub(crate) async fn cancel_task(
    _: Admin,
    State(api): State<AppState>,
    ApiPath(id): ApiPath<u64>,
) -> Result<Json<Value>, ApiError> {
    let ctx = &api.ctx;
    let task = ctx
        .store
        .get_task(id)?
        .ok_or_else(|| ApiError::not_found(format!("task {id} not found")))?;
    match task.status {
        TaskStatus::Running => {
            // A task is `running` in the store a moment before its run registers
            // with the pool: give it that moment.
            let deadline = tokio::time::Instant::now() + CANCEL_REGISTER_WAIT;
            while !ctx.pool.cancel_running(id) {
                if tokio::time::Instant::now() >= deadline {
                    return Err(ApiError::conflict(format!(
                        "task {id} is running but not in this pool; try again"
                    )));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Ok(Json(json!({"id": id, "status": "cancelling"})))
        }
        TaskStatus::Queued | TaskStatus::Interrupted => {
            let t = ctx.store.cancel_queued_task(id, now_ms()).await?;
            Ok(Json(json!({"id": id, "status": t.status})))
        }
        other => Err(ApiError::conflict(format!("task {id} {}", other.already()))),
    }
}

/// `POST /api/restart`: records the restart state, then exits with code 42 (the
/// service manager starts the process again). The answer goes out first: axum's
/// graceful shutdown finishes requests in flight.
pub(crate) async fn restart(_: Admin, State(api): State<AppState>) -> Result<Response, ApiError> {
    let ctx = &api.ctx;
    let state = RestartState {
        requested_ms: now_ms(),
        bot_id: None,
        chat_id: None,
        message_id: None,
        reason: "POST /api/restart".into(),
    };
    ctx.store.set_restart_state(state).await?;
    tracing::warn!("restart requested over HTTP");
    ctx.shutdown.request(RESTART_EXIT_CODE);
    let body = json!({"status": "restarting", "exit_code": RESTART_EXIT_CODE});
    Ok((StatusCode::ACCEPTED, Json(body)).into_response())
}

/// `POST /api/backup`: takes a verified snapshot now.
pub(crate) async fn backup(_: Admin, State(api): State<AppState>) -> Result<Json<Value>, ApiError> {
    match api.ctx.backups.take_snapshot().await {
        Ok(path) => Ok(Json(json!({"status": "ok", "path": path}))),
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "backup over HTTP failed");
            // The caller is an authenticated admin: the reason is theirs to see.
            Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "backup_failed",
                format!("backup failed: {e:#}"),
            ))
        }
    }
}

/// Parsed query of the dump route (`table` may repeat or hold a comma list).
#[derive(Debug)]
struct DumpQuery {
    tables: Vec<String>,
    since: Option<u64>,
    format: DumpFormat,
}

impl Default for DumpQuery {
    fn default() -> Self {
        DumpQuery {
            tables: Vec::new(),
            since: None,
            format: DumpFormat::Ndjson,
        }
    }
}

fn parse_dump_query(raw: Option<&str>) -> Result<DumpQuery, ApiError> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(raw.unwrap_or(""))
        .map_err(|e| ApiError::bad_request(format!("invalid query string: {e}")))?;
    let mut q = DumpQuery::default();
    for (key, value) in pairs {
        match key.as_str() {
            "table" if value.trim().is_empty() => {
                return Err(ApiError::bad_request(
                    "table is empty: name one or more tables, or leave `table` out for all",
                ));
            }
            "table" => {
                for name in value.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                    if !ALL_TABLES.contains(&name) {
                        return Err(ApiError::bad_request(format!(
                            "unknown table `{name}`; tables are: {}",
                            ALL_TABLES.join(", ")
                        )));
                    }
                    q.tables.push(name.to_string());
                }
            }
            "format" => {
                q.format = DumpFormat::parse(&value).ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "format `{value}`: use ndjson (the default), json or table"
                    ))
                })?;
            }
            "since" => {
                let since = value.parse().map_err(|_| {
                    ApiError::bad_request(format!("since `{value}`: expected unix milliseconds"))
                })?;
                q.since = Some(since);
            }
            other => {
                return Err(ApiError::bad_request(format!(
                    "unknown parameter `{other}`"
                )));
            }
        }
    }
    Ok(q)
}

/// Chunks buffered between the reading thread and the socket.
const DUMP_CHANNEL_LINES: usize = 256;

/// `GET /api/admin/dump?table=&format=ndjson|json|table&since=`: the dump, as
/// `agentlab dump --format` prints it (ndjson by default: one JSON line per row).
pub(crate) async fn dump(
    _: Admin,
    State(api): State<AppState>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let q = parse_dump_query(raw.as_deref())?;
    let content_type = match q.format {
        DumpFormat::Ndjson => "application/x-ndjson",
        DumpFormat::Json => "application/json",
        DumpFormat::Table => "text/plain; charset=utf-8",
    };
    let (tx, rx) = mpsc::channel::<Bytes>(DUMP_CHANNEL_LINES);
    spawn_dump(&api, q, tx);
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|line| (Ok::<_, Infallible>(line), rx))
    });
    Ok((
        [(header::CONTENT_TYPE, content_type)],
        Body::from_stream(stream),
    )
        .into_response())
}

/// Runs the dump's read transaction on a blocking thread, one line per row. A
/// failure after the first byte can no longer change the status: it ends the
/// stream with an `{"error","code"}` line instead.
fn spawn_dump(api: &Api, q: DumpQuery, tx: mpsc::Sender<Bytes>) {
    let store = api.ctx.store.clone();
    let span = tracing::Span::current();
    // Not tracked in the service's JoinSet: it ends when the rows or the client
    // end, and the store outlives it (the closure holds a clone).
    tokio::task::spawn_blocking(move || {
        let _entered = span.enter();
        let chunks =
            std::io::BufWriter::with_capacity(DUMP_CHUNK_BYTES, ChannelWriter { tx: tx.clone() });
        let mut writer = DumpWriter::new(q.format, chunks, &q.tables);
        let dumped = store
            .dump(&q.tables, q.since, &mut |row| writer.row(row))
            .map_err(|e| e.to_string())
            .and_then(|()| writer.finish().map(drop).map_err(|e| e.to_string()));
        if let Err(e) = dumped {
            tracing::warn!(error = %e, "dump over HTTP ended early");
            let mut line =
                json!({"error": format!("dump ended early: {e}"), "code": "dump_failed"})
                    .to_string();
            line.push('\n');
            let _ = tx.blocking_send(Bytes::from(line));
        }
    });
}

/// Bytes written to the dump's response, in chunks of about this size.
const DUMP_CHUNK_BYTES: usize = 16 * 1024;

/// The response body's end of the channel, as a blocking [`std::io::Write`].
struct ChannelWriter {
    tx: mpsc::Sender<Bytes>,
}

impl std::io::Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.tx
            .blocking_send(Bytes::copy_from_slice(buf))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "client went away"))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts_with(auth: Option<&str>) -> Parts {
        let mut builder = axum::http::Request::builder().uri("/api/restart");
        if let Some(a) = auth {
            builder = builder.header(header::AUTHORIZATION, a);
        }
        builder
            .body(())
            .map(|r| r.into_parts().0)
            .unwrap_or_else(|_| unreachable!())
    }

    #[test]
    fn tokens_are_checked_and_refused_when_unconfigured() {
        let secret = Some("s3cret".to_string());
        assert!(check_token(&secret, "T", &parts_with(Some("Bearer s3cret"))).is_ok());
        let wrong = check_token(&secret, "T", &parts_with(Some("Bearer nope"))).unwrap_err();
        assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
        let missing = check_token(&secret, "T", &parts_with(None)).unwrap_err();
        assert_eq!(missing.status(), StatusCode::UNAUTHORIZED);
        let basic = check_token(&secret, "T", &parts_with(Some("Basic s3cret"))).unwrap_err();
        assert_eq!(basic.status(), StatusCode::UNAUTHORIZED);
        let off = check_token(&None, "T", &parts_with(Some("Bearer s3cret"))).unwrap_err();
        assert_eq!(off.status(), StatusCode::FORBIDDEN);
    }

    #[test]
    fn dump_queries_take_repeated_and_listed_tables() {
        let q = parse_dump_query(Some(
            "table=events&table=tasks,alerts&format=ndjson&since=5",
        ))
        .unwrap();
        assert_eq!(q.tables, ["events", "tasks", "alerts"]);
        assert_eq!(q.since, Some(5));
        assert!(parse_dump_query(Some("table=nope")).is_err());
        assert_eq!(
            parse_dump_query(Some("format=table")).unwrap().format,
            DumpFormat::Table
        );
        assert_eq!(parse_dump_query(None).unwrap().format, DumpFormat::Ndjson);
        assert!(parse_dump_query(Some("format=xml")).is_err());
        assert!(parse_dump_query(Some("since=yesterday")).is_err());
        assert!(parse_dump_query(None).unwrap().tables.is_empty());
    }
}
