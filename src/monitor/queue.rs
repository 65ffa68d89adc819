//! Queue analytics: depth, waiting and running times per task kind and per bot,
//! throughput, the bottleneck, and the throughput trend.
//!
//! Fed by `task_started` (wait) and `task_finished` (run, outcome) events.
//! Invariants: statistics cover the last [`STATS_WINDOW_MS`]; the trend compares
//! the completions of the last hour with the mean of the two hours before it (flat
//! while either side has fewer than [`MIN_TREND_COMPLETIONS`] completions, so
//! a quiet queue does not swing between rising and falling).

use std::collections::{BTreeMap, VecDeque};

use serde::Serialize;

use super::failures::{Trend, trend_of};
use crate::storage::Event;

const HOUR_MS: u64 = 3_600_000;
/// Window of the wait/run statistics and of the trend.
pub const STATS_WINDOW_MS: u64 = 3 * HOUR_MS;
/// Completions per hour below which the trend is flat.
pub const MIN_TREND_COMPLETIONS: f64 = 5.0;
const TREND_FACTOR: f64 = 1.5;
/// Window of the charted wait/run p95 (`task_wait_p95_ms`, `task_run_p95_ms`).
pub const P95_WINDOW_MS: u64 = 5 * 60_000;

/// One task movement.
#[derive(Debug, Clone, PartialEq)]
pub enum QueueEvent {
    /// A run started after waiting.
    Started {
        /// When.
        at_ms: u64,
        /// Task kind.
        kind: String,
        /// Bot.
        bot: String,
        /// Queued → started, ms.
        wait_ms: u64,
    },
    /// A task reached a terminal state.
    Finished {
        /// When.
        at_ms: u64,
        /// Task kind.
        kind: String,
        /// Bot.
        bot: String,
        /// Started → finished, ms (none when it never ran).
        run_ms: Option<u64>,
    },
}

impl QueueEvent {
    /// The queue movement an event records.
    pub fn from_event(event: &Event) -> Option<QueueEvent> {
        let payload: serde_json::Value = serde_json::from_str(&event.payload_json).ok()?;
        let kind = payload
            .get("kind")
            .and_then(|k| k.as_str())
            .unwrap_or("unknown")
            .to_string();
        let bot = event.bot_id.clone().unwrap_or_default();
        match event.kind.as_str() {
            "task_started" => Some(QueueEvent::Started {
                at_ms: event.at_ms,
                kind,
                bot,
                wait_ms: payload.get("wait_ms").and_then(|w| w.as_u64()).unwrap_or(0),
            }),
            "task_finished" => Some(QueueEvent::Finished {
                at_ms: event.at_ms,
                kind,
                bot,
                run_ms: payload.get("run_ms").and_then(|w| w.as_u64()),
            }),
            _ => None,
        }
    }

    fn at_ms(&self) -> u64 {
        match self {
            QueueEvent::Started { at_ms, .. } | QueueEvent::Finished { at_ms, .. } => *at_ms,
        }
    }
}

/// Count, mean and max of durations.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct DurationStats {
    /// Values.
    pub count: u64,
    /// Sum, ms.
    pub total_ms: u64,
    /// Mean, ms.
    pub mean_ms: f64,
    /// Largest, ms.
    pub max_ms: u64,
}

impl DurationStats {
    fn add(&mut self, ms: u64) {
        self.count += 1;
        self.total_ms += ms;
        self.max_ms = self.max_ms.max(ms);
        self.mean_ms = self.total_ms as f64 / self.count as f64;
    }
}

/// Queue analytics at one instant.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct QueueReport {
    /// Tasks waiting.
    pub depth: u64,
    /// Tasks waiting per bot.
    pub depth_by_bot: BTreeMap<String, u64>,
    /// Workers busy and in all.
    pub busy_workers: usize,
    /// Workers.
    pub workers: usize,
    /// Wait (queued → started) per task kind.
    pub wait_by_kind: BTreeMap<String, DurationStats>,
    /// Wait per bot.
    pub wait_by_bot: BTreeMap<String, DurationStats>,
    /// Run time per task kind.
    pub run_by_kind: BTreeMap<String, DurationStats>,
    /// Run time per bot.
    pub run_by_bot: BTreeMap<String, DurationStats>,
    /// Completions in the last minute.
    pub throughput_per_min: u64,
    /// Completions in the last hour.
    pub completions_last_hour: u64,
    /// The kind with the most total waiting time.
    pub bottleneck_kind: Option<String>,
    /// Throughput trend over the last hours.
    pub throughput_trend: Option<Trend>,
}

/// The task movements of the last [`STATS_WINDOW_MS`].
#[derive(Debug, Default)]
pub struct QueueLog {
    events: VecDeque<QueueEvent>,
}

impl QueueLog {
    /// Adds a movement and forgets old ones.
    pub fn push(&mut self, event: QueueEvent, now_ms: u64) {
        let at = self.events.partition_point(|e| e.at_ms() <= event.at_ms());
        self.events.insert(at, event);
        let cutoff = now_ms.saturating_sub(STATS_WINDOW_MS);
        while self.events.front().is_some_and(|e| e.at_ms() < cutoff) {
            self.events.pop_front();
        }
    }

    /// Analytics as of `now_ms`, with the current depth and workers.
    pub fn analyze(
        &self,
        now_ms: u64,
        depth_by_bot: BTreeMap<String, u64>,
        busy: usize,
        workers: usize,
    ) -> QueueReport {
        let mut report = QueueReport {
            depth: depth_by_bot.values().sum(),
            depth_by_bot,
            busy_workers: busy,
            workers,
            ..QueueReport::default()
        };
        let mut hours = [0u64; 3];
        for event in self.events.iter().filter(|e| e.at_ms() <= now_ms) {
            match event {
                QueueEvent::Started {
                    kind, bot, wait_ms, ..
                } => {
                    report
                        .wait_by_kind
                        .entry(kind.clone())
                        .or_default()
                        .add(*wait_ms);
                    report
                        .wait_by_bot
                        .entry(bot.clone())
                        .or_default()
                        .add(*wait_ms);
                }
                QueueEvent::Finished {
                    at_ms,
                    kind,
                    bot,
                    run_ms,
                    ..
                } => {
                    if let Some(run) = run_ms {
                        report
                            .run_by_kind
                            .entry(kind.clone())
                            .or_default()
                            .add(*run);
                        report.run_by_bot.entry(bot.clone()).or_default().add(*run);
                    }
                    let age = now_ms - at_ms;
                    if age < 60_000 {
                        report.throughput_per_min += 1;
                    }
                    if let Some(h) = hours.get_mut((age / HOUR_MS) as usize) {
                        *h += 1;
                    }
                }
            }
        }
        report.completions_last_hour = hours[0];
        report.bottleneck_kind = report
            .wait_by_kind
            .iter()
            .filter(|(_, s)| s.total_ms > 0)
            .max_by_key(|(_, s)| s.total_ms)
            .map(|(k, _)| k.clone());
        let before = (hours[1] + hours[2]) as f64 / 2.0;
        let last = hours[0] as f64;
        report.throughput_trend = Some(if last.max(before) < MIN_TREND_COMPLETIONS {
            Trend::Flat
        } else {
            trend_of(last, before, TREND_FACTOR)
        });
        report
    }

    /// The 95th percentile (nearest rank) of waits and of run times per task
    /// kind, over the movements of the last `window_ms` before `now_ms`. Kinds
    /// with no movement in the window are absent.
    pub fn p95_by_kind(&self, now_ms: u64, window_ms: u64) -> KindPercentiles {
        let since = now_ms.saturating_sub(window_ms);
        let mut waits: BTreeMap<String, Vec<u64>> = BTreeMap::new();
        let mut runs: BTreeMap<String, Vec<u64>> = BTreeMap::new();
        for event in self
            .events
            .iter()
            .filter(|e| e.at_ms() >= since && e.at_ms() <= now_ms)
        {
            match event {
                QueueEvent::Started { kind, wait_ms, .. } => {
                    waits.entry(kind.clone()).or_default().push(*wait_ms)
                }
                QueueEvent::Finished {
                    kind,
                    run_ms: Some(run),
                    ..
                } => runs.entry(kind.clone()).or_default().push(*run),
                QueueEvent::Finished { .. } => {}
            }
        }
        let p95 = |values: BTreeMap<String, Vec<u64>>| {
            values
                .into_iter()
                .map(|(kind, mut v)| (kind, nearest_rank(&mut v, 0.95)))
                .collect()
        };
        KindPercentiles {
            wait_ms: p95(waits),
            run_ms: p95(runs),
        }
    }
}

/// Per task kind percentiles of waiting and running, ms.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct KindPercentiles {
    /// Queued → started.
    pub wait_ms: BTreeMap<String, u64>,
    /// Started → finished.
    pub run_ms: BTreeMap<String, u64>,
}

/// The nearest-rank percentile `q` (0..=1) of a non-empty list.
fn nearest_rank(values: &mut [u64], q: f64) -> u64 {
    values.sort_unstable();
    let rank = (q * values.len() as f64).ceil() as usize;
    values[rank.clamp(1, values.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn started(at_ms: u64, kind: &str, bot: &str, wait_ms: u64) -> QueueEvent {
        QueueEvent::Started {
            at_ms,
            kind: kind.into(),
            bot: bot.into(),
            wait_ms,
        }
    }

    fn finished(at_ms: u64, kind: &str, run_ms: u64) -> QueueEvent {
        QueueEvent::Finished {
            at_ms,
            kind: kind.into(),
            bot: "b1".into(),
            run_ms: Some(run_ms),
        }
    }

    #[test]
    fn waits_runs_bottleneck_and_throughput_are_counted() {
        let now = 10 * HOUR_MS;
        let mut log = QueueLog::default();
        log.push(started(now - 5_000, "chat", "b1", 1_000), now);
        log.push(started(now - 4_000, "chat", "b2", 3_000), now);
        log.push(started(now - 3_000, "task", "b1", 30_000), now);
        log.push(finished(now - 2_000, "chat", 500), now);
        log.push(finished(now - 120_000, "task", 9_000), now);
        let depth = BTreeMap::from([("b1".to_string(), 2), ("b2".to_string(), 1)]);
        let r = log.analyze(now, depth, 2, 3);
        assert_eq!(r.depth, 3);
        assert_eq!(r.wait_by_kind["chat"].count, 2);
        assert_eq!(r.wait_by_kind["chat"].mean_ms, 2_000.0);
        assert_eq!(r.wait_by_bot["b1"].max_ms, 30_000);
        assert_eq!(r.run_by_kind["task"].mean_ms, 9_000.0);
        assert_eq!(r.throughput_per_min, 1);
        assert_eq!(r.completions_last_hour, 2);
        assert_eq!(r.bottleneck_kind.as_deref(), Some("task"));
        assert_eq!(r.throughput_trend, Some(Trend::Flat));
    }

    #[test]
    fn p95_covers_only_the_window_and_uses_the_nearest_rank() {
        let now = 10 * HOUR_MS;
        let mut log = QueueLog::default();
        // Outside the window: a huge wait that must not count.
        log.push(started(now - P95_WINDOW_MS - 1, "chat", "b1", 999_999), now);
        for i in 1..=100u64 {
            log.push(started(now - 1_000 - i, "chat", "b1", i * 10), now);
        }
        log.push(finished(now - 10, "task", 7_000), now);
        let p = log.p95_by_kind(now, P95_WINDOW_MS);
        assert_eq!(p.wait_ms["chat"], 950);
        assert_eq!(p.run_ms["task"], 7_000);
        assert!(!p.run_ms.contains_key("chat"));
        assert!(!p.wait_ms.contains_key("task"));
        assert_eq!(nearest_rank(&mut [5], 0.95), 5);
        assert_eq!(nearest_rank(&mut [1, 2], 0.95), 2);
    }

    #[test]
    fn throughput_trend_follows_the_last_hours() {
        let now = 10 * HOUR_MS;
        let mut log = QueueLog::default();
        for i in 0..10 {
            log.push(finished(now - 2 * HOUR_MS - i * 60_000, "chat", 1), now);
            log.push(finished(now - HOUR_MS - i * 60_000, "chat", 1), now);
        }
        for i in 0..30 {
            log.push(finished(now - i * 60_000, "chat", 1), now);
        }
        assert_eq!(
            log.analyze(now, BTreeMap::new(), 0, 1).throughput_trend,
            Some(Trend::Rising)
        );
        let later = now + HOUR_MS + 1;
        let mut quiet = QueueLog::default();
        for i in 0..20 {
            quiet.push(finished(later - 2 * HOUR_MS + i * 60_000, "chat", 1), later);
        }
        assert_eq!(
            quiet.analyze(later, BTreeMap::new(), 0, 1).throughput_trend,
            Some(Trend::Falling)
        );
    }
}
