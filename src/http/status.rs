//! Status routes: the bots, one bot's status and breakers, the tasks.
//!
//! Invariant: an unknown bot or task is a 404, a malformed id or filter a 400;
//! every answer is built from in-memory state and short store reads.

use std::sync::atomic::Ordering;

use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use serde_json::{Value, json};

use super::AppState;
use super::HttpContext;
use super::error::ApiError;
use super::extract::{ApiPath, ApiQuery};
use crate::breaker::BreakerSnapshot;
use crate::breaker::Dependency;
use crate::storage::{TaskFilter, TaskStatus, iso8601, now_ms};

/// Most tasks one list answer holds.
pub(crate) const MAX_TASK_LIMIT: usize = 1000;
/// Tasks a list answer holds when `limit` is not given.
const DEFAULT_TASK_LIMIT: usize = 50;

/// `GET /api/bots`
pub(crate) async fn list_bots(State(api): State<AppState>) -> Result<Json<Value>, ApiError> {
    let ctx = &api.ctx;
    let depths = ctx.store.queue_depth_by_bot()?;
    let bots: Vec<Value> = ctx
        .config
        .bots
        .iter()
        .map(|bot| {
            let depth = depths
                .iter()
                .find(|(id, _)| id == &bot.id)
                .map_or(0, |(_, n)| *n);
            json!({
                "id": bot.id,
                "username": ctx.links.get(&bot.id).and_then(|l| l.username()),
                "state": bot_state(ctx, &bot.id),
                "queue_depth": depth,
                "circuit": circuit_summary(ctx, &bot.id),
            })
        })
        .collect();
    Ok(Json(json!({"bots": bots})))
}

/// `GET /api/bot/{bot_id}/status`
pub(crate) async fn bot_status(
    State(api): State<AppState>,
    ApiPath(bot_id): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    let ctx = &api.ctx;
    known_bot(ctx, &bot_id)?;
    let now = now_ms();
    let queue_depth = ctx
        .store
        .queue_depth_by_bot()?
        .into_iter()
        .find(|(id, _)| id == &bot_id)
        .map_or(0, |(_, n)| n);
    let busy_workers = ctx
        .store
        .list_tasks(&TaskFilter {
            status: Some(TaskStatus::Running),
            bot_id: Some(bot_id.clone()),
            user_id: None,
            limit: Some(MAX_TASK_LIMIT),
        })?
        .len();
    let cost = ctx.store.cost_today(&bot_id, now)?;
    let link = ctx.links.get(&bot_id);
    let last_poll_ok_ms = link
        .map(|l| l.last_poll_ok_ms.load(Ordering::Relaxed))
        .filter(|&ms| ms > 0);
    Ok(Json(json!({
        "bot_id": bot_id,
        "username": link.and_then(|l| l.username()),
        "state": bot_state(ctx, &bot_id),
        "ready": ctx.is_ready(),
        "uptime_s": ctx.uptime_s(),
        "queue_depth": queue_depth,
        "busy_workers": busy_workers,
        "workers": ctx.pool.workers(),
        "pool_busy_workers": ctx.pool.busy(),
        "cost_today_usd": cost.usd,
        "tasks_today": cost.tasks,
        "daily_budget_usd": ctx.config.limits.daily_cost_usd,
        "telegram": {
            "last_poll_ok_ms": last_poll_ok_ms,
            "last_poll_age_s": last_poll_ok_ms.map(|ms| now.saturating_sub(ms) / 1000),
            "conflicts": link.map_or(0, |l| l.conflicts.load(Ordering::Relaxed)),
            "updates": link.map_or(0, |l| l.updates.load(Ordering::Relaxed)),
            "last_error": link.and_then(|l| l.last_error()),
        },
        "circuit": circuit_summary(ctx, &bot_id),
    })))
}

/// `GET /api/bot/{bot_id}/circuit-status`
pub(crate) async fn circuit_status(
    State(api): State<AppState>,
    ApiPath(bot_id): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    let ctx = &api.ctx;
    known_bot(ctx, &bot_id)?;
    let now = now_ms();
    let dependencies: Vec<Value> = ctx
        .circuits
        .bot_snapshots(&bot_id)
        .into_iter()
        .map(|(dependency, snapshot)| breaker_json(dependency.as_str(), &snapshot, now))
        .collect();
    Ok(Json(
        json!({"bot_id": bot_id, "dependencies": dependencies}),
    ))
}

fn breaker_json(dependency: &str, s: &BreakerSnapshot, now: u64) -> Value {
    let failure_rate = if s.window_calls > 0 {
        f64::from(s.window_failures) / f64::from(s.window_calls)
    } else {
        0.0
    };
    json!({
        "dependency": dependency,
        "state": s.state.as_str(),
        "failure_count": s.consecutive_failures,
        "window_failures": s.window_failures,
        "window_calls": s.window_calls,
        "failure_rate": failure_rate,
        "half_open_successes": s.half_open_successes,
        "probes_in_flight": s.probes_in_flight,
        "opened_at_ms": s.opened_at_wall_ms,
        "next_probe_at_ms": s.open_until_wall_ms,
        "next_probe_in_ms": s.open_until_wall_ms.map(|until| until.saturating_sub(now)),
        "last_transition": s.last_transition.as_ref().map(|t| json!({
            "from": t.from.as_str(),
            "to": t.to.as_str(),
            "reason": t.reason,
            "at_ms": t.at_wall_ms,
            "at": iso8601(t.at_wall_ms),
        })),
        "totals": s.totals,
    })
}

/// `{"agent": "closed", "telegram": "open"}`
fn circuit_summary(ctx: &HttpContext, bot_id: &str) -> Value {
    let mut map = serde_json::Map::new();
    for (dependency, snapshot) in ctx.circuits.bot_snapshots(bot_id) {
        map.insert(
            dependency.as_str().to_string(),
            json!(snapshot.state.as_str()),
        );
    }
    Value::Object(map)
}

/// One word for a bot: `starting`, `polling`, `conflict`, `degraded` (a breaker
/// is not closed), `disconnected` (polls fail), `stopping`.
pub(super) fn bot_state(ctx: &HttpContext, bot_id: &str) -> &'static str {
    if ctx.shutdown.is_requested() {
        return "stopping";
    }
    let Some(link) = ctx.links.get(bot_id) else {
        return "unknown";
    };
    if link.in_conflict.load(Ordering::Relaxed) {
        return "conflict";
    }
    if Dependency::ALL
        .iter()
        .any(|&d| ctx.circuits.is_blocked(bot_id, d))
    {
        return "degraded";
    }
    if link.last_poll_ok_ms.load(Ordering::Relaxed) == 0 {
        return "starting";
    }
    if link.consecutive_failures.load(Ordering::Relaxed) > 0 {
        return "disconnected";
    }
    "polling"
}

pub(crate) fn known_bot(ctx: &HttpContext, bot_id: &str) -> Result<(), ApiError> {
    match ctx.config.bot(bot_id) {
        Some(_) => Ok(()),
        None => Err(unknown_bot(bot_id)),
    }
}

/// The answer naming a bot that is not configured.
pub(crate) fn unknown_bot(bot_id: &str) -> ApiError {
    ApiError::not_found(format!("bot `{bot_id}` is not configured"))
}

/// Query of `GET /api/tasks`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListTasksQuery {
    status: Option<String>,
    bot: Option<String>,
    limit: Option<usize>,
}

/// `GET /api/tasks?status=&bot=&limit=`: newest first.
pub(crate) async fn list_tasks(
    State(api): State<AppState>,
    ApiQuery(q): ApiQuery<ListTasksQuery>,
) -> Result<Json<Value>, ApiError> {
    let status = match q.status.as_deref() {
        None => None,
        Some(s) => Some(TaskStatus::parse(s).ok_or_else(|| {
            ApiError::bad_request(format!(
                "unknown status `{s}`; use one of {}",
                TaskStatus::ALL
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })?),
    };
    let bot_id = q.bot.filter(|b| !b.is_empty());
    if let Some(bot) = &bot_id {
        known_bot(&api.ctx, bot)?;
    }
    let limit = q.limit.unwrap_or(DEFAULT_TASK_LIMIT);
    if !(1..=MAX_TASK_LIMIT).contains(&limit) {
        return Err(ApiError::bad_request(format!(
            "limit must be between 1 and {MAX_TASK_LIMIT}"
        )));
    }
    let filter = TaskFilter {
        status,
        bot_id,
        user_id: None,
        limit: Some(limit),
    };
    Ok(Json(json!(api.ctx.store.list_tasks(&filter)?)))
}

/// `GET /api/tasks/{id}`
pub(crate) async fn get_task(
    State(api): State<AppState>,
    ApiPath(id): ApiPath<u64>,
) -> Result<Json<Value>, ApiError> {
    let task = api
        .ctx
        .store
        .get_task(id)?
        .ok_or_else(|| ApiError::not_found(format!("task {id} not found")))?;
    let steps = api.ctx.store.task_steps(id)?;
    let mut body = json!(task);
    body["project"] = json!(api.ctx.store.task_project(id)?);
    body["steps"] = json!({
        "earlier": steps.earlier,
        "items": steps.steps.iter().map(|s| json!({"at_ms": s.at_ms, "summary": s.summary})).collect::<Vec<_>>(),
    });
    Ok(Json(body))
}
