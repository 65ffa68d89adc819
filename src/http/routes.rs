//! Routes (first cut: liveness, readiness, health, tasks).

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use subtle::ConstantTimeEq;

use super::error::ApiError;
use crate::service::ServiceContext;
use crate::storage::{NewTask, PRIORITY_NORMAL, TaskFilter, TaskKind, TaskSource, TaskStatus, now_ms};

type Ctx = State<Arc<ServiceContext>>;

pub(super) fn router(ctx: Arc<ServiceContext>) -> Router {
    Router::new()
        .route("/livez", get(|| async { Json(json!({"status": "pass"})) }))
        .route("/readyz", get(readyz))
        .route("/health", get(health))
        .route("/api/tasks", get(list_tasks).post(create_task))
        .route("/api/tasks/{id}", get(get_task))
        .route("/api/tasks/{id}/cancel", post(cancel_task))
        .layer(tower_http::limit::RequestBodyLimitLayer::new(1024 * 1024))
        .with_state(ctx)
}

async fn readyz(State(ctx): Ctx) -> impl IntoResponse {
    if ctx.is_ready() {
        (StatusCode::OK, Json(json!({"status": "pass"})))
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"status": "fail", "reason": "starting or stopping"})))
    }
}

async fn health(State(ctx): Ctx) -> impl IntoResponse {
    let storage_ok = ctx.store.queue_depth().is_ok();
    let status = if storage_ok { "pass" } else { "fail" };
    let code = if storage_ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (
        code,
        [("content-type", "application/health+json")],
        Json(json!({"status": status, "version": env!("CARGO_PKG_VERSION"), "uptime_s": ctx.uptime_s()})),
    )
}

fn require_admin(ctx: &ServiceContext, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(expected) = ctx.admin_token.as_deref() else {
        return Err(ApiError::forbidden(format!(
            "admin routes are disabled: set ${} to enable them",
            ctx.config.http.admin_token_env
        )));
    };
    let given = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| ApiError::unauthorized("missing bearer token"))?;
    if bool::from(given.as_bytes().ct_eq(expected.as_bytes())) {
        Ok(())
    } else {
        Err(ApiError::unauthorized("wrong bearer token"))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateTask {
    bot_id: String,
    user_id: i64,
    prompt: String,
    chat_id: Option<i64>,
}

async fn create_task(State(ctx): Ctx, headers: HeaderMap, body: axum::body::Bytes) -> Result<impl IntoResponse, ApiError> {
    require_admin(&ctx, &headers)?;
    let req: CreateTask = serde_json::from_slice(&body).map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))?;
    if ctx.config.bot(&req.bot_id).is_none() {
        return Err(ApiError::not_found(format!("bot `{}` is not configured", req.bot_id)));
    }
    if req.prompt.trim().is_empty() {
        return Err(ApiError::bad_request("prompt is empty"));
    }
    let new = NewTask {
        bot_id: req.bot_id,
        user_id: req.user_id,
        chat_id: req.chat_id.unwrap_or(0),
        kind: TaskKind::Task,
        source: TaskSource::Api,
        prompt: req.prompt,
        priority: PRIORITY_NORMAL,
        max_attempts: ctx.config.limits.max_attempts,
        reply_to_message_id: None,
        update_id: None,
    };
    let submitted = ctx.store.submit_task(new, now_ms()).await?;
    ctx.pool.notify();
    Ok((StatusCode::CREATED, Json(json!({"id": submitted.task.id, "status": submitted.task.status}))))
}

async fn get_task(State(ctx): Ctx, Path(id): Path<String>) -> Result<impl IntoResponse, ApiError> {
    let id: u64 = id.parse().map_err(|_| ApiError::bad_request(format!("task id `{id}` is not a number")))?;
    let task = ctx.store.get_task(id)?.ok_or_else(|| ApiError::not_found(format!("task {id} not found")))?;
    Ok(Json(task))
}

#[derive(Deserialize)]
struct ListQuery {
    status: Option<String>,
    bot: Option<String>,
    limit: Option<usize>,
}

async fn list_tasks(State(ctx): Ctx, Query(q): Query<ListQuery>) -> Result<impl IntoResponse, ApiError> {
    let status = match q.status.as_deref() {
        None | Some("") => None,
        Some(s) => Some(TaskStatus::parse(s).ok_or_else(|| ApiError::bad_request(format!("unknown status `{s}`")))?),
    };
    let filter = TaskFilter { status, bot_id: q.bot, user_id: None, limit: Some(q.limit.unwrap_or(50).min(1000)) };
    Ok(Json(ctx.store.list_tasks(&filter)?))
}

async fn cancel_task(State(ctx): Ctx, headers: HeaderMap, Path(id): Path<String>) -> Result<impl IntoResponse, ApiError> {
    require_admin(&ctx, &headers)?;
    let id: u64 = id.parse().map_err(|_| ApiError::bad_request(format!("task id `{id}` is not a number")))?;
    let task = ctx.store.get_task(id)?.ok_or_else(|| ApiError::not_found(format!("task {id} not found")))?;
    match task.status {
        TaskStatus::Running => {
            ctx.pool.cancel_running(id);
            Ok(Json(json!({"id": id, "status": "cancelling"})))
        }
        TaskStatus::Queued | TaskStatus::Interrupted => {
            let t = ctx.store.cancel_queued_task(id, now_ms()).await?;
            Ok(Json(json!({"id": id, "status": t.status})))
        }
        other => Err(ApiError::conflict(format!("task {id} is already {other}"))),
    }
}
