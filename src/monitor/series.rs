//! The monitors' view of the time-series store: series names with labels, the
//! batch a tick writes, retention, and history answers.
//!
//! Invariants: a series name is `metric` or `metric{k="v",...}` with labels in the
//! order given (callers give them in a fixed order, so one series has one name);
//! retention deletes in transactions of at most [`PRUNE_BATCH_ROWS`] rows and
//! yields between them, so it never holds the writer for long; the event log has
//! no retention of its own and is kept as long as hour rollups
//! (`monitor.rollup_retention_days`), pruned by the same job; a history answer
//! holds at most [`MAX_HISTORY_POINTS`] points per series.

use std::time::Duration;

use serde::Serialize;

use crate::storage::{Sample, SeriesPoint, SeriesResolution, Store, StoreError};

/// Most points a history answer holds.
pub const MAX_HISTORY_POINTS: usize = 1000;
/// Rows one retention transaction touches at most.
pub(crate) const PRUNE_BATCH_ROWS: usize = 256;
const DAY_MS: u64 = 86_400_000;

/// Every metric type the monitors sample — the names the history route answers
/// for — with its labels and unit. The OpenAPI document and the README list them
/// from here; [`SampleBatch::push`] refuses (in debug builds) a name not listed.
pub const METRIC_TYPES: &[(&str, &str)] = &[
    (
        "process_rss_bytes",
        "resident memory of the service (`proc=\"service\"`), bytes",
    ),
    (
        "process_virtual_bytes",
        "virtual memory of the service, bytes",
    ),
    (
        "process_cpu_percent",
        "CPU of the service since the previous sample, % of one core",
    ),
    (
        "process_threads",
        "threads of the service (where the platform tells)",
    ),
    (
        "process_open_fds",
        "open file descriptors of the service (where the platform tells)",
    ),
    (
        "process_fd_limit",
        "the service's soft limit on open files (where the platform tells)",
    ),
    ("agents_running", "agent subprocesses running"),
    (
        "agents_rss_bytes",
        "resident memory of all agents together, bytes",
    ),
    (
        "agents_cpu_percent",
        "CPU of all agents together, % of one core",
    ),
    (
        "agents_max_open_fds",
        "open file descriptors of the agent holding most",
    ),
    (
        "agent_warm_processes",
        "idle agent processes kept open for their session's next prompt",
    ),
    (
        "agent_warm_rss_bytes",
        "resident memory of the idle warm agent processes together, bytes",
    ),
    (
        "api_calls",
        "calls in the last minute per dependency (`dep`: telegram, agent, http)",
    ),
    (
        "api_error_rate",
        "failed share of the last minute's calls per `dep`, 0..1",
    ),
    (
        "api_timeouts",
        "timed-out calls in the last minute per `dep`",
    ),
    (
        "api_p95_ms",
        "p95 latency of the last minute's calls per `dep`, ms (Telegram long polls excluded)",
    ),
    ("failures_per_min", "task failures in the last minute"),
    ("failures_last_hour", "task failures in the last hour"),
    ("queue_depth", "queued tasks, in total and per `bot`"),
    ("workers_busy", "agent runs in progress"),
    ("throughput_per_min", "tasks finished in the last minute"),
    (
        "task_wait_ms",
        "mean wait in the queue of the tasks started since the previous sample, per `kind`, ms",
    ),
    (
        "task_run_ms",
        "mean run time of the tasks finished since the previous sample, per `kind`, ms",
    ),
    (
        "task_wait_p95_ms",
        "p95 wait in the queue over the last hour, per `kind`, ms",
    ),
    (
        "task_run_p95_ms",
        "p95 run time over the last hour, per `kind`, ms",
    ),
    (
        "service_up",
        "1 at every sample while the service runs (gaps are downtime)",
    ),
    ("uptime_24h_pct", "uptime over the last 24 h, %"),
    (
        "bot_poll_failures",
        "consecutive failed getUpdates per `bot`",
    ),
    (
        "cost_today_usd",
        "agent cost of the current UTC day per `bot`, USD",
    ),
    (
        "disk_used_ratio",
        "used share of the data directory's file system, 0..1",
    ),
    ("alerts_firing", "alerts firing"),
];

/// Whether `metric` (a name without labels) is one of [`METRIC_TYPES`].
pub(crate) fn is_metric_type(metric: &str) -> bool {
    METRIC_TYPES.iter().any(|(name, _)| *name == metric)
}

/// The name of a series with labels, e.g. `task_wait_ms{kind="chat",bot="b1"}`.
pub(crate) fn series_name(metric: &str, labels: &[(&str, &str)]) -> String {
    if labels.is_empty() {
        return metric.to_string();
    }
    let inner: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", v.replace(['"', '\\', '{', '}'], "_")))
        .collect();
    format!("{metric}{{{}}}", inner.join(","))
}

/// The samples one tick writes, all at the same instant.
#[derive(Debug, Default, Clone)]
pub(crate) struct SampleBatch {
    at_ms: u64,
    samples: Vec<(String, Sample)>,
}

impl SampleBatch {
    /// An empty batch stamped `at_ms`.
    pub fn new(at_ms: u64) -> Self {
        SampleBatch {
            at_ms,
            samples: Vec::new(),
        }
    }

    /// Adds one value (non-finite values are skipped).
    pub fn push(&mut self, metric: &str, labels: &[(&str, &str)], value: f64) {
        debug_assert!(
            is_metric_type(metric),
            "metric `{metric}` is not listed in METRIC_TYPES"
        );
        if value.is_finite() {
            self.samples.push((
                series_name(metric, labels),
                Sample {
                    at_ms: self.at_ms,
                    value,
                },
            ));
        }
    }

    /// Samples so far.
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// The samples, for the store.
    pub fn into_samples(self) -> Vec<(String, Sample)> {
        self.samples
    }
}

/// The cut-offs of retention at `now_ms`: (raw samples — and so minute buckets,
/// which are computed from them — before, hour rollups before).
pub(crate) fn retention_cutoffs(now_ms: u64, raw_days: u64, rollup_days: u64) -> (u64, u64) {
    (
        now_ms.saturating_sub(raw_days.saturating_mul(DAY_MS)),
        now_ms.saturating_sub(rollup_days.saturating_mul(DAY_MS)),
    )
}

/// Deletes everything older than the retention limits, in small transactions.
/// Returns the rows changed.
pub async fn prune_expired(
    store: &Store,
    now_ms: u64,
    raw_days: u64,
    rollup_days: u64,
) -> Result<usize, StoreError> {
    let (raw_before, rollup_before) = retention_cutoffs(now_ms, raw_days, rollup_days);
    let mut total = 0;
    loop {
        let changed = store
            .prune_series(raw_before, rollup_before, PRUNE_BATCH_ROWS)
            .await?;
        total += changed;
        if changed == 0 {
            return Ok(total);
        }
        // Let the bot's durable writes in between the batches.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Deletes events older than `days` (the rollups' retention), in small
/// transactions. Returns the events removed.
pub(crate) async fn prune_expired_events(
    store: &Store,
    now_ms: u64,
    days: u64,
) -> Result<usize, StoreError> {
    prune_events_in_batches(
        store,
        now_ms.saturating_sub(days.saturating_mul(DAY_MS)),
        PRUNE_BATCH_ROWS,
    )
    .await
}

async fn prune_events_in_batches(
    store: &Store,
    before_ms: u64,
    batch_rows: usize,
) -> Result<usize, StoreError> {
    let mut total = 0;
    loop {
        let removed = store.prune_events(before_ms, batch_rows).await?;
        total += removed;
        if removed < batch_rows {
            return Ok(total);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
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
#[non_exhaustive]
pub enum HistoryError {
    /// No series of that type exists.
    #[error("unknown metric type `{0}`; GET /api/observability/metrics lists what is sampled")]
    UnknownMetric(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Picks the resolution for a range: raw up to 6 h, minutes up to 7 d, hours beyond.
pub(crate) fn resolution_for(range_ms: u64) -> SeriesResolution {
    const HOUR: u64 = 3_600_000;
    if range_ms <= 6 * HOUR {
        SeriesResolution::Raw
    } else if range_ms <= 7 * 24 * HOUR {
        SeriesResolution::Minute
    } else {
        SeriesResolution::Hour
    }
}

/// The resolution for a range and an optional step (ms between points asked for):
/// the finest of the range's and the step's, never finer than the range allows
/// to be answered within the bound.
pub(crate) fn resolution_for_step(range_ms: u64, step_ms: Option<u64>) -> SeriesResolution {
    let by_range = resolution_for(range_ms);
    match step_ms {
        Some(step) if step >= 3_600_000 => SeriesResolution::Hour,
        Some(step) if step >= 60_000 && by_range == SeriesResolution::Raw => {
            SeriesResolution::Minute
        }
        _ => by_range,
    }
}

/// Time series of `metric_type` (a series name, or its prefix before `{labels}`)
/// between `from_ms` and `to_ms`, at most [`MAX_HISTORY_POINTS`] points per series.
/// An empty or reversed range (`from_ms >= to_ms`) has no points: each matching
/// series is listed with none.
pub fn history_from_store(
    store: &Store,
    metric_type: &str,
    from_ms: u64,
    to_ms: u64,
    step_ms: Option<u64>,
) -> Result<History, HistoryError> {
    let names: Vec<String> = store
        .series_names()?
        .into_iter()
        .filter(|name| name == metric_type || name.split('{').next() == Some(metric_type))
        .collect();
    if names.is_empty() {
        return Err(HistoryError::UnknownMetric(metric_type.to_string()));
    }
    let resolution = resolution_for_step(to_ms.saturating_sub(from_ms), step_ms);
    let mut series = Vec::new();
    for name in names {
        let points = if from_ms < to_ms {
            store.series_rollups(&name, from_ms, to_ms, resolution)?
        } else {
            Vec::new()
        };
        series.push((name, downsample(points, MAX_HISTORY_POINTS)));
    }
    Ok(History {
        metric_type: metric_type.to_string(),
        resolution,
        series,
    })
}

/// Merges neighbouring points so at most `max` remain.
pub(crate) fn downsample(points: Vec<SeriesPoint>, max: usize) -> Vec<SeriesPoint> {
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
                max: chunk
                    .iter()
                    .map(|p| p.max)
                    .fold(f64::NEG_INFINITY, f64::max),
                count,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_part_of_the_name_in_the_given_order() {
        assert_eq!(series_name("queue_depth", &[]), "queue_depth");
        assert_eq!(
            series_name("task_wait_ms", &[("kind", "chat"), ("bot", "b\"1")]),
            "task_wait_ms{kind=\"chat\",bot=\"b_1\"}"
        );
    }

    #[test]
    fn retention_cutoffs_are_whole_days_back() {
        let now = 100 * DAY_MS;
        assert_eq!(retention_cutoffs(now, 7, 90), (93 * DAY_MS, 10 * DAY_MS));
        assert_eq!(retention_cutoffs(5, 7, 90), (0, 0));
    }

    #[tokio::test]
    async fn events_older_than_the_rollup_retention_are_pruned_in_batches() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store =
            Store::open(&dir.path().join("agentlab.redb"), Default::default()).expect("open");
        let now = 100 * DAY_MS;
        for at in [
            DAY_MS,
            2 * DAY_MS,
            3 * DAY_MS,
            4 * DAY_MS,
            9 * DAY_MS,
            11 * DAY_MS,
        ] {
            store
                .append_event("backup", None, serde_json::json!({"at": at}), at)
                .await
                .expect("event");
        }
        // 90 days back from day 100 is day 10: five events are older, in batches of 2.
        let cutoff = now - 90 * DAY_MS;
        assert_eq!(prune_events_in_batches(&store, cutoff, 2).await.unwrap(), 5);
        let left = store.events_between(0, u64::MAX, 100).unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].at_ms, 11 * DAY_MS);
        assert_eq!(prune_expired_events(&store, now, 90).await.unwrap(), 0);
        store.close();
    }

    #[test]
    fn a_coarse_step_picks_rollups() {
        assert_eq!(resolution_for_step(3_600_000, None), SeriesResolution::Raw);
        assert_eq!(
            resolution_for_step(3_600_000, Some(60_000)),
            SeriesResolution::Minute
        );
        assert_eq!(
            resolution_for_step(3_600_000, Some(3_600_000)),
            SeriesResolution::Hour
        );
        assert_eq!(
            resolution_for_step(30 * DAY_MS, Some(1_000)),
            SeriesResolution::Hour
        );
    }
}
