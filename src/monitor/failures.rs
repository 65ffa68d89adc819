//! Failure analyzer: which failures happen, where, when, together, and whether
//! they are getting worse.
//!
//! Failures are task runs that ended `failed` or were re-queued after a failure
//! (`task_finished` with status failed, `task_requeued`), each with its class and
//! bot. Invariants: the window kept is the last 25 h (the trend compares the last
//! hour with the 24 h before it); co-occurrence counts each unordered pair of
//! failures of *different* classes at most `window` apart once; cancellations are
//! not failures.

use std::collections::{BTreeMap, VecDeque};

use serde::Serialize;

use crate::storage::Event;

const HOUR_MS: u64 = 3_600_000;
/// How far back the analyzer keeps failures.
pub const KEPT_MS: u64 = 25 * HOUR_MS;

/// One failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// When, unix ms.
    pub at_ms: u64,
    /// The failure class (`timeout`, `agent_error`, ...).
    pub class: String,
    /// The bot.
    pub bot: String,
}

impl Failure {
    /// The failure an event records, if it records one.
    pub fn from_event(event: &Event) -> Option<Failure> {
        let payload: serde_json::Value = serde_json::from_str(&event.payload_json).ok()?;
        let class = payload
            .get("class")
            .and_then(|c| c.as_str())
            .unwrap_or("unknown");
        let failed = match event.kind.as_str() {
            "task_finished" => payload.get("status").and_then(|s| s.as_str()) == Some("failed"),
            "task_requeued" => true,
            _ => false,
        };
        (failed && class != "cancelled").then(|| Failure {
            at_ms: event.at_ms,
            class: class.to_string(),
            bot: event.bot_id.clone().unwrap_or_default(),
        })
    }
}

/// How the failure rate moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Trend {
    /// More than before.
    Rising,
    /// About the same.
    Flat,
    /// Less than before.
    Falling,
}

/// What the analyzer found.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FailureReport {
    /// Failures in the last 24 h by class.
    pub by_class: BTreeMap<String, u64>,
    /// Failures in the last 24 h by bot.
    pub by_bot: BTreeMap<String, u64>,
    /// Failures in the last 24 h by UTC hour of day (0..24).
    pub by_hour: [u64; 24],
    /// Pairs of classes seen within the window of each other, with counts.
    pub co_occurrence: Vec<(String, String, u64)>,
    /// Failures in the last minute.
    pub last_minute: u64,
    /// Failures in the last hour.
    pub last_hour: u64,
    /// Failures per hour over the 24 h before the last hour.
    pub previous_per_hour: f64,
    /// Last hour against the 24 h before.
    pub trend: Trend,
    /// Rising and above the threshold.
    pub cascade_risk: bool,
}

/// Thresholds of the analyzer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FailureParams {
    /// Co-occurrence window, ms.
    pub window_ms: u64,
    /// Failures in the last hour from which a rising rate is a cascade risk.
    pub cascade_min_per_hour: u64,
    /// Ratio of the last hour's rate to the previous 24 h's that counts as rising.
    pub rising_factor: f64,
}

/// The failures of the last [`KEPT_MS`], oldest first.
#[derive(Debug, Default)]
pub struct FailureLog {
    failures: VecDeque<Failure>,
}

impl FailureLog {
    /// Adds a failure (late ones are inserted in order) and forgets old ones.
    pub fn push(&mut self, failure: Failure, now_ms: u64) {
        let at = self.failures.partition_point(|f| f.at_ms <= failure.at_ms);
        self.failures.insert(at, failure);
        let cutoff = now_ms.saturating_sub(KEPT_MS);
        while self.failures.front().is_some_and(|f| f.at_ms < cutoff) {
            self.failures.pop_front();
        }
    }

    /// Analyzes the failures as of `now_ms`.
    pub fn analyze(&self, now_ms: u64, params: &FailureParams) -> FailureReport {
        let day_start = now_ms.saturating_sub(24 * HOUR_MS);
        let hour_start = now_ms.saturating_sub(HOUR_MS);
        let prev_start = hour_start.saturating_sub(24 * HOUR_MS);
        let mut by_class: BTreeMap<String, u64> = BTreeMap::new();
        let mut by_bot: BTreeMap<String, u64> = BTreeMap::new();
        let mut by_hour = [0u64; 24];
        let (mut last_hour, mut previous, mut last_minute) = (0u64, 0u64, 0u64);
        let recent: Vec<&Failure> = self.failures.iter().filter(|f| f.at_ms <= now_ms).collect();
        for f in &recent {
            if f.at_ms >= day_start {
                *by_class.entry(f.class.clone()).or_default() += 1;
                *by_bot.entry(f.bot.clone()).or_default() += 1;
                by_hour[((f.at_ms / HOUR_MS) % 24) as usize] += 1;
            }
            if f.at_ms >= hour_start {
                last_hour += 1;
            } else if f.at_ms >= prev_start {
                previous += 1;
            }
            if f.at_ms + 60_000 > now_ms {
                last_minute += 1;
            }
        }
        let previous_per_hour = previous as f64 / 24.0;
        let trend = trend_of(last_hour as f64, previous_per_hour, params.rising_factor);
        FailureReport {
            by_class,
            by_bot,
            by_hour,
            co_occurrence: co_occurrence(&recent, day_start, params.window_ms),
            last_minute,
            last_hour,
            previous_per_hour,
            trend,
            cascade_risk: trend == Trend::Rising && last_hour >= params.cascade_min_per_hour,
        }
    }
}

/// Rising when `recent` is `factor` times `baseline` (or more than one with no
/// baseline), falling when below it by the same factor.
pub fn trend_of(recent: f64, baseline: f64, factor: f64) -> Trend {
    if baseline <= 0.0 {
        return if recent > 1.0 {
            Trend::Rising
        } else {
            Trend::Flat
        };
    }
    if recent >= baseline * factor {
        Trend::Rising
    } else if recent * factor <= baseline {
        Trend::Falling
    } else {
        Trend::Flat
    }
}

fn co_occurrence(
    failures: &[&Failure],
    since_ms: u64,
    window_ms: u64,
) -> Vec<(String, String, u64)> {
    let mut pairs: BTreeMap<(String, String), u64> = BTreeMap::new();
    let day: Vec<&&Failure> = failures.iter().filter(|f| f.at_ms >= since_ms).collect();
    for (i, a) in day.iter().enumerate() {
        for b in day[i + 1..]
            .iter()
            .take_while(|b| b.at_ms - a.at_ms <= window_ms)
        {
            if a.class != b.class {
                let key = if a.class < b.class {
                    (a.class.clone(), b.class.clone())
                } else {
                    (b.class.clone(), a.class.clone())
                };
                *pairs.entry(key).or_default() += 1;
            }
        }
    }
    let mut out: Vec<(String, String, u64)> =
        pairs.into_iter().map(|((a, b), n)| (a, b, n)).collect();
    out.sort_by(|x, y| y.2.cmp(&x.2).then_with(|| (&x.0, &x.1).cmp(&(&y.0, &y.1))));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const PARAMS: FailureParams = FailureParams {
        window_ms: 300_000,
        cascade_min_per_hour: 10,
        rising_factor: 2.0,
    };

    fn event(at_ms: u64, kind: &str, bot: &str, payload: serde_json::Value) -> Event {
        Event {
            at_ms,
            seq: 0,
            kind: kind.into(),
            bot_id: Some(bot.into()),
            payload_json: payload.to_string(),
        }
    }

    #[test]
    fn failure_events_are_recognised() {
        let failed = event(
            1,
            "task_finished",
            "b",
            serde_json::json!({"status": "failed", "class": "timeout"}),
        );
        assert_eq!(
            Failure::from_event(&failed).map(|f| f.class),
            Some("timeout".into())
        );
        let ok = event(
            1,
            "task_finished",
            "b",
            serde_json::json!({"status": "succeeded", "class": null}),
        );
        assert_eq!(Failure::from_event(&ok), None);
        let cancelled = event(
            1,
            "task_finished",
            "b",
            serde_json::json!({"status": "failed", "class": "cancelled"}),
        );
        assert_eq!(Failure::from_event(&cancelled), None);
        let requeued = event(
            1,
            "task_requeued",
            "b",
            serde_json::json!({"class": "interrupted"}),
        );
        assert!(Failure::from_event(&requeued).is_some());
    }

    #[test]
    fn a_scripted_sequence_gives_known_counts_co_occurrences_and_trend() {
        let now = 100 * HOUR_MS + 30 * 60_000;
        let mut log = FailureLog::default();
        let mut add = |at: u64, class: &str, bot: &str| {
            log.push(
                Failure {
                    at_ms: at,
                    class: class.into(),
                    bot: bot.into(),
                },
                now,
            )
        };
        // The previous 24 h: 12 agent errors on b1, two hours apart (0.5 per hour).
        for i in 0..12 {
            add(now - 3 * HOUR_MS - i * 2 * HOUR_MS, "agent_error", "b1");
        }
        // Older than 25 h: forgotten.
        add(now - 30 * HOUR_MS, "timeout", "b1");
        // The last hour: a burst of 6 timeouts on b2 with 4 rate limits among them.
        for i in 0..6 {
            add(now - 40 * 60_000 + i * 60_000, "timeout", "b2");
        }
        for i in 0..4 {
            add(
                now - 40 * 60_000 + i * 60_000 + 30_000,
                "rate_limited",
                "b2",
            );
        }
        let report = log.analyze(now, &PARAMS);
        assert_eq!(
            report.by_class.get("agent_error"),
            Some(&11),
            "one of them is 25 h old"
        );
        assert_eq!(report.by_class.get("timeout"), Some(&6));
        assert_eq!(report.by_class.get("rate_limited"), Some(&4));
        assert_eq!(report.by_bot.get("b2"), Some(&10));
        assert_eq!(report.by_hour.iter().sum::<u64>(), 21);
        assert_eq!(report.last_hour, 10);
        assert_eq!(report.previous_per_hour, 0.5);
        assert_eq!(report.trend, Trend::Rising);
        assert!(report.cascade_risk);
        // Timeouts at minutes 0..5 and rate limits at 0.5..3.5: each rate limit is
        // within 5 min of every timeout at most 5 min away.
        let (a, b, n) = report.co_occurrence[0].clone();
        assert_eq!((a.as_str(), b.as_str()), ("rate_limited", "timeout"));
        let expected: u64 = (0..4u64)
            .map(|r| {
                (0..6u64)
                    .filter(|t| (r * 60 + 30).abs_diff(t * 60) <= 300)
                    .count() as u64
            })
            .sum();
        assert_eq!(n, expected);
        assert_eq!(
            report.co_occurrence.len(),
            1,
            "agent errors are hours apart"
        );
    }

    #[test]
    fn a_quiet_hour_after_a_busy_day_is_falling() {
        assert_eq!(trend_of(1.0, 5.0, 2.0), Trend::Falling);
        assert_eq!(trend_of(5.0, 5.0, 2.0), Trend::Flat);
        assert_eq!(trend_of(0.0, 0.0, 2.0), Trend::Flat);
        assert_eq!(trend_of(3.0, 0.0, 2.0), Trend::Rising);
    }
}
