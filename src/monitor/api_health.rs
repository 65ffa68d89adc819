//! API health: latency, errors and timeouts of every dependency (Telegram, the
//! agent, our own HTTP routes), each against its own baseline.
//!
//! Each tick takes the calls made since the previous tick from [`crate::metrics`]
//! and keeps the last [`WINDOW_TICKS`] of them; the p95 of that window (shown
//! whenever the window holds a timed call) is compared with the dependency's
//! baseline (an EWMA of earlier windows' p95). Invariants: a
//! dependency is `degraded` only after its p95 stayed above `factor` × baseline
//! (and at least [`MIN_EXCESS_MS`] above it) for `degraded_for`; the baseline
//! learns only from healthy windows with at least [`MIN_CALLS`] calls, so an
//! outage does not become the new normal; `cascading` means two or more
//! dependencies are degraded at once.

use std::collections::{BTreeMap, VecDeque};

use serde::Serialize;

use crate::metrics::CallStats;

/// Ticks merged into one window (one minute at the default 10 s interval).
pub const WINDOW_TICKS: usize = 6;
/// Calls a window needs to be judged or learnt from.
pub const MIN_CALLS: u64 = 5;
/// Smallest excess over the baseline that counts, ms (ignores sub-ms baselines).
pub const MIN_EXCESS_MS: f64 = 50.0;
const BASELINE_ALPHA: f64 = 0.1;

/// Health of one dependency.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct DependencyHealth {
    /// Calls in the window.
    pub calls: u64,
    /// Errors in the window.
    pub errors: u64,
    /// Timeouts in the window.
    pub timeouts: u64,
    /// Errors / calls in the window.
    pub error_rate: f64,
    /// p95 latency of the window's timed calls, ms; `None` when it has none.
    pub p95_ms: Option<f64>,
    /// The baseline p95, ms, once learnt.
    pub baseline_p95_ms: Option<f64>,
    /// Since when p95 has been above the threshold, unix ms.
    pub slow_since_ms: Option<u64>,
    /// Slow for at least the configured duration.
    pub degraded: bool,
}

/// Thresholds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HealthParams {
    /// p95 above baseline × factor is slow.
    pub factor: f64,
    /// Slow for this long is degraded, ms.
    pub degraded_for_ms: u64,
}

#[derive(Debug, Default)]
struct Tracker {
    previous_total: Option<CallStats>,
    window: VecDeque<CallStats>,
    health: DependencyHealth,
}

/// Health of every dependency seen.
#[derive(Debug, Default)]
pub struct ApiHealth {
    trackers: BTreeMap<String, Tracker>,
}

impl ApiHealth {
    /// Takes the cumulative totals of each dependency at `now_ms` and updates the
    /// verdicts.
    pub fn update(&mut self, totals: &[(String, CallStats)], now_ms: u64, params: &HealthParams) {
        for (dependency, total) in totals {
            let tracker = self.trackers.entry(dependency.clone()).or_default();
            let delta = match &tracker.previous_total {
                Some(previous) => total.since(previous),
                None => total.clone(),
            };
            tracker.previous_total = Some(total.clone());
            tracker.window.push_back(delta);
            while tracker.window.len() > WINDOW_TICKS {
                tracker.window.pop_front();
            }
            let window = merge(tracker.window.iter());
            judge(&mut tracker.health, &window, now_ms, params);
        }
    }

    /// Each dependency's health.
    pub fn report(&self) -> BTreeMap<String, DependencyHealth> {
        self.trackers
            .iter()
            .map(|(k, t)| (k.clone(), t.health.clone()))
            .collect()
    }

    /// The dependencies degraded now.
    pub fn degraded(&self) -> Vec<String> {
        self.trackers
            .iter()
            .filter(|(_, t)| t.health.degraded)
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Two or more dependencies degraded together.
    pub fn cascading(&self) -> bool {
        self.degraded().len() >= 2
    }
}

fn merge<'a>(stats: impl Iterator<Item = &'a CallStats>) -> CallStats {
    let mut total = CallStats::default();
    for s in stats {
        total.calls += s.calls;
        total.errors += s.errors;
        total.timeouts += s.timeouts;
        total.latency_sum_ms += s.latency_sum_ms;
        for (t, b) in total.buckets.iter_mut().zip(s.buckets) {
            *t += b;
        }
    }
    total
}

/// Updates one dependency's verdict from its current window.
fn judge(health: &mut DependencyHealth, window: &CallStats, now_ms: u64, params: &HealthParams) {
    health.calls = window.calls;
    health.errors = window.errors;
    health.timeouts = window.timeouts;
    health.error_rate = if window.calls > 0 {
        window.errors as f64 / window.calls as f64
    } else {
        0.0
    };
    health.p95_ms = window.quantile_ms(0.95);
    let timed = window.timed_calls();
    let p95 = match health.p95_ms {
        Some(p95) if timed >= MIN_CALLS => p95,
        _ => {
            // Too little traffic to judge: keep the verdict, but a degraded state
            // without traffic to prove it ends.
            if timed == 0 {
                health.slow_since_ms = None;
                health.degraded = false;
            }
            return;
        }
    };
    let slow = health
        .baseline_p95_ms
        .is_some_and(|base| p95 > base * params.factor && p95 - base >= MIN_EXCESS_MS);
    if slow {
        let since = *health.slow_since_ms.get_or_insert(now_ms);
        health.degraded = now_ms.saturating_sub(since) >= params.degraded_for_ms;
    } else {
        health.slow_since_ms = None;
        health.degraded = false;
        health.baseline_p95_ms = Some(match health.baseline_p95_ms {
            Some(base) => base + BASELINE_ALPHA * (p95 - base),
            None => p95,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::LATENCY_BUCKETS_MS;

    const PARAMS: HealthParams = HealthParams {
        factor: 3.0,
        degraded_for_ms: 120_000,
    };

    /// Cumulative stats after `calls` more calls of `latency_ms` each.
    fn add(total: &mut CallStats, calls: u64, latency_ms: f64) {
        let index = LATENCY_BUCKETS_MS
            .iter()
            .position(|&b| latency_ms <= b)
            .unwrap_or(LATENCY_BUCKETS_MS.len());
        total.calls += calls;
        total.latency_sum_ms += latency_ms * calls as f64;
        total.buckets[index] += calls;
    }

    #[test]
    fn slow_for_the_duration_is_degraded_and_two_together_cascade() {
        let mut health = ApiHealth::default();
        let (mut telegram, mut agent) = (CallStats::default(), CallStats::default());
        let mut now = 0;
        for _ in 0..30 {
            add(&mut telegram, 10, 80.0);
            add(&mut agent, 10, 900.0);
            now += 10_000;
            health.update(
                &[
                    ("telegram".into(), telegram.clone()),
                    ("agent".into(), agent.clone()),
                ],
                now,
                &PARAMS,
            );
        }
        assert!(health.degraded().is_empty());
        let mut degraded_after = None;
        for tick in 1..=30 {
            add(&mut telegram, 10, 2_000.0);
            add(&mut agent, 10, 9_000.0);
            now += 10_000;
            health.update(
                &[
                    ("telegram".into(), telegram.clone()),
                    ("agent".into(), agent.clone()),
                ],
                now,
                &PARAMS,
            );
            if degraded_after.is_none() && health.cascading() {
                degraded_after = Some(tick);
            }
        }
        let ticks = degraded_after.expect("never cascaded");
        // Slow from the first or second tick (the window mixes old calls), degraded 2 min later.
        assert!((13..=16).contains(&ticks), "after {ticks} ticks");
        let report = health.report();
        assert_eq!(
            report["telegram"].baseline_p95_ms,
            Some(100.0),
            "the outage is not learnt"
        );
    }

    #[test]
    fn a_few_calls_have_a_p95_before_they_can_be_judged() {
        let mut health = ApiHealth::default();
        let mut agent = CallStats::default();
        add(&mut agent, 4, 45.0);
        health.update(&[("agent".into(), agent.clone())], 10_000, &PARAMS);
        let report = health.report();
        assert_eq!(report["agent"].calls, 4);
        assert_eq!(report["agent"].p95_ms, Some(50.0));
        assert_eq!(
            report["agent"].baseline_p95_ms, None,
            "too few to learn from"
        );
        for tick in 2..=WINDOW_TICKS as u64 + 1 {
            health.update(&[("agent".into(), agent.clone())], tick * 10_000, &PARAMS);
        }
        assert_eq!(health.report()["agent"].p95_ms, None, "the window emptied");
    }

    #[test]
    fn a_short_slow_spell_is_not_degraded() {
        let mut health = ApiHealth::default();
        let mut telegram = CallStats::default();
        let mut now = 0;
        for i in 0..60 {
            let latency = if (30..36).contains(&i) { 2_000.0 } else { 80.0 };
            add(&mut telegram, 10, latency);
            now += 10_000;
            health.update(&[("telegram".into(), telegram.clone())], now, &PARAMS);
            assert!(health.degraded().is_empty(), "tick {i}");
        }
    }
}
