//! The dashboard: `GET /` is one page that shows the service's health and
//! history at a glance, and `GET /api/dashboard` is the summary it refreshes from.
//!
//! The page (HTML, CSS and JS under `dashboard/`) is embedded in the binary and
//! needs nothing from the internet: the browser draws its charts as inline SVG
//! from the history route. Both are read routes (see `access`): off loopback they
//! need the read or admin token (the page also takes `?token=`, which its script
//! then sends as a bearer header), so costs and prompts are not shown to the
//! network.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::{Html, IntoResponse, Response};
use serde_json::{Value, json};

use super::AppState;
use super::error::ApiError;
use super::status::bot_state;
use crate::storage::{AlertState, TaskFilter, now_ms};

/// Recent tasks the summary holds.
const RECENT_TASKS: usize = 20;
/// Alerts the summary holds (open ones first, then the latest resolved).
const RECENT_ALERTS: usize = 20;

const PAGE_HTML: &str = include_str!("dashboard/index.html");
const PAGE_CSS: &str = include_str!("dashboard/style.css");
const PAGE_JS: &str = include_str!("dashboard/app.js");

/// The page with its stylesheet and script inlined: one request, no other files.
fn page() -> &'static str {
    static PAGE: OnceLock<String> = OnceLock::new();
    PAGE.get_or_init(|| {
        PAGE_HTML
            .replace("/*STYLE*/", PAGE_CSS)
            .replace("/*SCRIPT*/", PAGE_JS)
    })
}

/// `GET /`
pub(crate) async fn page_handler() -> Response {
    (
        [(header::CACHE_CONTROL, "no-cache")],
        Html(page().to_string()),
    )
        .into_response()
}

/// `GET /api/dashboard`: what the page shows besides the charts.
pub(crate) async fn summary(State(api): State<AppState>) -> Result<Json<Value>, ApiError> {
    let ctx = &api.ctx;
    let now = now_ms();
    let (_, health) = super::health::health_document(&api);

    let depths: BTreeMap<String, u64> = ctx.store.queue_depth_by_bot()?.into_iter().collect();
    let mut cost_today = 0.0;
    let mut cost_month = 0.0;
    let mut bots = Vec::new();
    for bot in &ctx.config.bots {
        let (today, month) = ctx.store.cost_today_and_month(&bot.id, now)?;
        cost_today += today.usd;
        cost_month += month.usd;
        let link = ctx.links.get(&bot.id);
        let last_poll_ok_ms = link
            .map(|l| l.last_poll_ok_ms.load(std::sync::atomic::Ordering::Relaxed))
            .filter(|&ms| ms > 0);
        let breakers: Vec<Value> = ctx
            .circuits
            .bot_snapshots(&bot.id)
            .into_iter()
            .map(|(dependency, s)| {
                json!({
                    "dependency": dependency.as_str(),
                    "state": s.state.as_str(),
                    "failures": s.consecutive_failures,
                })
            })
            .collect();
        bots.push(json!({
            "id": bot.id,
            "username": link.and_then(|l| l.username()),
            "state": bot_state(ctx, &bot.id),
            "last_poll_age_s": last_poll_ok_ms.map(|ms| now.saturating_sub(ms) / 1000),
            "last_error": link.and_then(|l| l.last_error()),
            "queue_depth": depths.get(&bot.id).copied().unwrap_or(0),
            "cost_today_usd": today.usd,
            "tasks_today": today.tasks,
            "breakers": breakers,
        }));
    }

    let mut alerts = ctx.store.list_alerts(None, RECENT_ALERTS)?;
    // Firing first, then pending, then resolved; newest first within each (the
    // store's order, which a stable sort keeps).
    alerts.sort_by_key(|a| match a.state {
        AlertState::Firing => 0,
        AlertState::Pending => 1,
        AlertState::Resolved => 2,
    });

    let tasks: Vec<Value> = ctx
        .store
        .list_tasks(&TaskFilter {
            status: None,
            bot_id: None,
            user_id: None,
            limit: Some(RECENT_TASKS),
        })?
        .into_iter()
        .map(|t| {
            let duration_ms = match (t.started_ms, t.finished_ms) {
                (Some(start), Some(end)) => Some(end.saturating_sub(start)),
                (Some(start), None) => Some(now.saturating_sub(start)),
                _ => None,
            };
            json!({
                "id": t.id,
                "bot_id": t.bot_id,
                "kind": t.kind,
                "status": t.status.as_str(),
                "prompt": t.prompt.chars().take(80).collect::<String>(),
                "created_ms": t.created_ms,
                "duration_ms": duration_ms,
                "attempts": t.attempts,
                "cost_usd": t.cost_usd,
                "error_class": t.error_class,
            })
        })
        .collect();

    let snapshot = ctx.monitor.latest();
    let leak = snapshot.as_ref().map(|s| {
        json!({
            "suspected": s.leak.suspected,
            "judged": s.leak.judged,
            "needs_minutes": s.leak.needs_minutes,
            "mb_per_hour": s.leak.mb_per_hour,
            "r2": s.leak.r2,
            "span_minutes": s.leak.span_minutes,
        })
    });
    let failures_by_class = snapshot
        .as_ref()
        .map(|s| json!(s.failures.by_class))
        .unwrap_or_else(|| json!({}));

    let approvals = approvals_summary(&ctx.store)?;

    Ok(Json(json!({
        "now_ms": now,
        "status": health["status"],
        "version": env!("CARGO_PKG_VERSION"),
        "ready": ctx.is_ready(),
        "uptime_s": ctx.uptime_s(),
        "bots": bots,
        "queue": {
            "depth": ctx.store.queue_depth()?,
            "busy_workers": ctx.pool.busy(),
            "workers": ctx.pool.workers(),
        },
        "cost": {
            "today_usd": cost_today,
            "month_usd": cost_month,
            "daily_limit_usd": ctx.config.limits.daily_cost_usd,
            "monthly_limit_usd": ctx.config.limits.monthly_cost_usd,
        },
        "alerts": alerts,
        "tasks": tasks,
        "backup": ctx.store.last_backup()?.map(|b| json!({
            "taken_ms": b.taken_ms,
            "age_s": now.saturating_sub(b.taken_ms) / 1000,
            "size_bytes": b.size_bytes,
            "verified": b.verified,
        })),
        "offsite": ctx.offsite().report(now).map(|r| json!({
            "url": r.url,
            "encrypted": r.encrypted,
            "circuit": r.circuit,
            "age_s": r.age_s,
            "stale": r.stale,
            "newest": r.status.newest,
            "last_error": r.status.last_error,
        })),
        "leak": leak,
        "failures_by_class": failures_by_class,
        "approvals": approvals,
    })))
}

/// Most approval decisions the dashboard lists.
const RECENT_APPROVALS: usize = 10;

/// The tool approvals: how many wait, and the latest decisions (their audit
/// events: who, the tool, the input's digest, the decision, seconds waited).
fn approvals_summary(store: &crate::storage::Store) -> Result<Value, ApiError> {
    let pending = store.pending_approvals()?;
    let recent: Vec<Value> = store
        .recent_events(Some("approval"), RECENT_APPROVALS)?
        .iter()
        .map(crate::storage::event_json)
        .collect();
    Ok(json!({
        "pending": pending.len(),
        "pending_tools": pending.iter().map(|a| a.asked.tool_name.clone()).collect::<Vec<_>>(),
        "recent": recent,
    }))
}

#[cfg(test)]
mod tests {
    use super::page;

    #[test]
    fn the_page_inlines_its_style_and_script() {
        let html = page();
        assert!(!html.contains("/*STYLE*/") && !html.contains("/*SCRIPT*/"));
        assert!(html.contains("data-chart=\"memory\""));
    }
}
