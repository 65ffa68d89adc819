//! Monitors and alerts: sample the service into the store's time series, evaluate
//! alert rules, and answer the observability API.
//!
//! (First cut: the breaker timer tick, and the observability answers over whatever
//! series exist. The monitors issue fills in the samplers and rules.)

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::task::JoinSet;

use crate::service::ServiceContext;
use crate::storage::{SeriesPoint, SeriesResolution, StoreError};

/// Most points a history answer holds.
pub const MAX_HISTORY_POINTS: usize = 1000;

/// Starts the monitors.
pub fn spawn_monitors(ctx: &Arc<ServiceContext>, tasks: &mut JoinSet<()>) {
    let ctx = ctx.clone();
    tasks.spawn(async move {
        let mut shutdown = ctx.shutdown.subscribe();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => ctx.circuits.tick(),
                _ = shutdown.changed() => break,
            }
        }
    });
}

/// The current snapshot of every monitor, for `GET /api/observability/metrics`.
pub fn snapshot_json(ctx: &ServiceContext) -> serde_json::Value {
    serde_json::json!({
        "uptime_s": ctx.uptime_s(),
        "queue_depth": ctx.store.queue_depth().unwrap_or(0),
        "busy_workers": ctx.pool.busy(),
        "workers": ctx.pool.workers(),
    })
}

/// A history answer.
#[derive(Debug, Clone, Serialize)]
pub struct History {
    /// The series asked for.
    pub metric_type: String,
    /// Resolution chosen for the range.
    pub resolution: SeriesResolution,
    /// Each matching series (name with labels) and its points.
    pub series: Vec<(String, Vec<SeriesPoint>)>,
}

/// Why a history query failed.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    /// No series of that type exists.
    #[error("unknown metric type `{0}`")]
    UnknownMetric(String),
    /// Bad range.
    #[error("{0}")]
    BadRange(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Picks the resolution for a range: raw up to 6 h, minutes up to 7 d, hours beyond.
pub fn resolution_for(range_ms: u64) -> SeriesResolution {
    const HOUR: u64 = 3_600_000;
    if range_ms <= 6 * HOUR {
        SeriesResolution::Raw
    } else if range_ms <= 7 * 24 * HOUR {
        SeriesResolution::Minute
    } else {
        SeriesResolution::Hour
    }
}

/// Time series of `metric_type` (a series name, or its prefix before `{labels}`)
/// between `from_ms` and `to_ms`, at most [`MAX_HISTORY_POINTS`] points per series.
pub fn history(ctx: &ServiceContext, metric_type: &str, from_ms: u64, to_ms: u64) -> Result<History, HistoryError> {
    if from_ms >= to_ms {
        return Err(HistoryError::BadRange(format!("`from` ({from_ms}) must be before `to` ({to_ms})")));
    }
    let names: Vec<String> = ctx
        .store
        .series_names()?
        .into_iter()
        .map(|(name, _)| name)
        .filter(|name| name == metric_type || name.split('{').next() == Some(metric_type))
        .collect();
    if names.is_empty() {
        return Err(HistoryError::UnknownMetric(metric_type.to_string()));
    }
    let resolution = resolution_for(to_ms - from_ms);
    let mut series = Vec::new();
    for name in names {
        let points = ctx.store.series_rollups(&name, from_ms, to_ms, resolution)?;
        series.push((name, downsample(points, MAX_HISTORY_POINTS)));
    }
    Ok(History {
        metric_type: metric_type.to_string(),
        resolution,
        series,
    })
}

/// Merges neighbouring points so at most `max` remain.
pub fn downsample(points: Vec<SeriesPoint>, max: usize) -> Vec<SeriesPoint> {
    if points.len() <= max || max == 0 {
        return points;
    }
    let per = points.len().div_ceil(max);
    points
        .chunks(per)
        .map(|chunk| {
            let count: u64 = chunk.iter().map(|p| p.count).sum();
            let sum: f64 = chunk.iter().map(|p| p.value * p.count as f64).sum();
            SeriesPoint {
                at_ms: chunk[0].at_ms,
                value: if count > 0 { sum / count as f64 } else { 0.0 },
                min: chunk.iter().map(|p| p.min).fold(f64::INFINITY, f64::min),
                max: chunk.iter().map(|p| p.max).fold(f64::NEG_INFINITY, f64::max),
                count,
            }
        })
        .collect()
}
