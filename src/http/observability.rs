//! Observability routes: the monitors' snapshot, time-series history, alerts.
//!
//! The data belongs to the monitors (`crate::monitor`); these handlers only parse
//! parameters, call it, and shape the answer. History is bounded: at most
//! [`MAX_HISTORY_POINTS`] points per series, fewer when `step` asks for it, and
//! names the periods of the range when the service was not running (`down`), so
//! a chart does not join the points on either side.

use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use serde_json::{Value, json};

use super::AppState;
use super::error::ApiError;
use super::extract::{ApiPath, ApiQuery};
use crate::monitor::{self, HistoryError, MAX_HISTORY_POINTS, Snapshot};
use crate::storage::{AlertState, now_ms};

/// Range of a history query when `from` is not given.
const DEFAULT_HISTORY_RANGE_MS: u64 = 3_600_000;
/// Alerts one answer holds when `limit` is not given, and at most.
const DEFAULT_ALERT_LIMIT: usize = 100;
pub(crate) const MAX_ALERT_LIMIT: usize = 1000;

/// `GET /api/observability/metrics`
pub(crate) async fn metrics_snapshot(State(api): State<AppState>) -> Json<Value> {
    let ctx = &api.ctx;
    let gauges = ServiceGauges {
        uptime_s: ctx.uptime_s(),
        queue_depth: ctx.store.queue_depth().unwrap_or(0),
        busy_workers: ctx.pool.busy(),
        workers: ctx.pool.workers(),
    };
    Json(snapshot_json(&gauges, ctx.monitor.latest().as_deref()))
}

/// The service's own figures shown beside the monitors' snapshot.
struct ServiceGauges {
    uptime_s: u64,
    queue_depth: u64,
    busy_workers: usize,
    workers: usize,
}

/// The metrics answer: the service's gauges, then every field of the last tick's
/// snapshot (none before the first tick).
fn snapshot_json(gauges: &ServiceGauges, snapshot: Option<&Snapshot>) -> Value {
    let mut value = json!({
        "uptime_s": gauges.uptime_s,
        "queue_depth": gauges.queue_depth,
        "busy_workers": gauges.busy_workers,
        "workers": gauges.workers,
    });
    if let (Some(snapshot), Some(map)) = (snapshot, value.as_object_mut())
        && let Ok(Value::Object(fields)) = serde_json::to_value(snapshot)
    {
        map.extend(fields);
    }
    value
}

/// Query of the history route: unix ms, `step` in ms.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct HistoryQuery {
    from: Option<u64>,
    to: Option<u64>,
    step: Option<u64>,
}

/// `GET /api/observability/history/{metric_type}?from=&to=&step=`
pub(crate) async fn history(
    State(api): State<AppState>,
    ApiPath(metric_type): ApiPath<String>,
    ApiQuery(q): ApiQuery<HistoryQuery>,
) -> Result<Json<Value>, ApiError> {
    let to = q.to.unwrap_or_else(now_ms);
    let from = q
        .from
        .unwrap_or_else(|| to.saturating_sub(DEFAULT_HISTORY_RANGE_MS));
    // A reversed range is a mistake (swapped bounds, seconds for ms), not a
    // question whose answer is "no points"; `from == to` is an empty range.
    if from > to {
        let to_shown = match q.to {
            Some(_) => format!("`to` ({to})"),
            None => format!("`to` (now, {to})"),
        };
        return Err(ApiError::bad_request(format!(
            "`from` ({from}) is after {to_shown}; give from <= to, in unix milliseconds"
        )));
    }
    let max_points = match q.step {
        None => MAX_HISTORY_POINTS,
        Some(0) => return Err(ApiError::bad_request("`step` must be at least 1 ms")),
        Some(step) => usize::try_from(to.saturating_sub(from).div_ceil(step))
            .unwrap_or(usize::MAX)
            .clamp(1, MAX_HISTORY_POINTS),
    };
    let mut found =
        monitor::series::history_from_store(&api.ctx.store, &metric_type, from, to, None).map_err(
            |e| match e {
                HistoryError::UnknownMetric(m) => {
                    ApiError::not_found(format!("no series of metric type `{m}`"))
                }
                HistoryError::Store(e) => e.into(),
            },
        )?;
    found.series = found
        .series
        .into_iter()
        .map(|(name, points)| (name, monitor::downsample(points, max_points)))
        .collect();
    let down = api
        .ctx
        .monitor
        .latest()
        .map(|snapshot| snapshot.down_periods(from, to))
        .unwrap_or_default();
    let series: Vec<Value> = found
        .series
        .iter()
        .map(|(name, points)| json!({"name": name, "points": points}))
        .collect();
    Ok(Json(json!({
        "metric_type": found.metric_type,
        "from": from,
        "to": to,
        "step": q.step,
        "resolution": found.resolution,
        "series": series,
        "down": down,
    })))
}

/// Query of the alerts route.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AlertsQuery {
    state: Option<String>,
    limit: Option<usize>,
}

/// `GET /api/observability/alerts?state=&limit=`: newest first.
pub(crate) async fn alerts(
    State(api): State<AppState>,
    ApiQuery(q): ApiQuery<AlertsQuery>,
) -> Result<Json<Value>, ApiError> {
    let state = match q.state.as_deref() {
        None | Some("all") => None,
        Some("pending") => Some(AlertState::Pending),
        Some("firing") => Some(AlertState::Firing),
        Some("resolved") => Some(AlertState::Resolved),
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "unknown alert state `{other}`; use pending, firing, resolved or all"
            )));
        }
    };
    let limit = q.limit.unwrap_or(DEFAULT_ALERT_LIMIT);
    if !(1..=MAX_ALERT_LIMIT).contains(&limit) {
        return Err(ApiError::bad_request(format!(
            "limit must be between 1 and {MAX_ALERT_LIMIT}"
        )));
    }
    let alerts = api.ctx.store.list_alerts(state, limit)?;
    Ok(Json(json!({"alerts": alerts})))
}

/// Approval decisions one answer holds when `limit` is not given.
const DEFAULT_DECISION_LIMIT: usize = 100;
/// Most approval decisions one answer holds.
pub(crate) const MAX_DECISION_LIMIT: usize = 1000;

/// Query of the approval audit route.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DecisionsQuery {
    limit: Option<usize>,
}

/// `GET /api/observability/approvals?limit=`: the audit of approval decisions
/// (who, the tool, a digest of its input, the decision, seconds waited), newest
/// first.
pub(crate) async fn approval_decisions(
    State(api): State<AppState>,
    ApiQuery(q): ApiQuery<DecisionsQuery>,
) -> Result<Json<Value>, ApiError> {
    let limit = q.limit.unwrap_or(DEFAULT_DECISION_LIMIT);
    if !(1..=MAX_DECISION_LIMIT).contains(&limit) {
        return Err(ApiError::bad_request(format!(
            "limit must be between 1 and {MAX_DECISION_LIMIT}"
        )));
    }
    let decisions: Vec<Value> = api
        .ctx
        .store
        .recent_events(Some("approval"), limit)?
        .iter()
        .map(crate::storage::event_json)
        .collect();
    Ok(Json(json!({"decisions": decisions})))
}
