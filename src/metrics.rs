//! In-memory measurements of calls to dependencies (Telegram, the agent, our own
//! HTTP routes): counts, errors and latency histograms per (dependency, method).
//!
//! Cheap enough for every call (one short lock per observation); read by the
//! Prometheus exposition and sampled into the store by the monitors. Nothing here
//! is persisted: the monitors write what matters to the `series` table.
//!
//! Invariants: every count only grows for the life of the process, so the
//! Prometheus counters and histograms built from it are monotonic. A long poll
//! (`getUpdates`) is counted as a call but its latency — mostly the server's
//! wait for updates — is kept out of the latency histogram, so a quiet chat does
//! not read as a 30 s p95.

use std::collections::BTreeMap;
use std::sync::{Mutex, OnceLock};

/// Upper bounds of the latency buckets, milliseconds.
pub const LATENCY_BUCKETS_MS: [f64; 14] = [
    1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0,
];

/// Calls whose duration is a wait by design (long polls): counted, not timed.
const UNTIMED_CALLS: [(&str, &str); 1] = [("telegram", "getUpdates")];

/// Counts and latency histogram of one (dependency, method).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CallStats {
    /// Calls.
    pub calls: u64,
    /// Calls that failed.
    pub errors: u64,
    /// Calls that timed out.
    pub timeouts: u64,
    /// Sum of latencies, ms.
    pub latency_sum_ms: f64,
    /// Timed calls per bucket of [`LATENCY_BUCKETS_MS`] (not cumulative), plus
    /// one for +Inf. Long polls are not timed, so the buckets may sum to fewer
    /// than `calls`.
    pub buckets: [u64; LATENCY_BUCKETS_MS.len() + 1],
}

impl CallStats {
    /// Calls whose latency is in the histogram.
    pub fn timed_calls(&self) -> u64 {
        self.buckets.iter().sum()
    }

    fn count(&mut self, outcome: CallOutcome) {
        self.calls += 1;
        match outcome {
            CallOutcome::Ok => {}
            CallOutcome::Error => self.errors += 1,
            CallOutcome::Timeout => {
                self.errors += 1;
                self.timeouts += 1;
            }
        }
    }

    fn observe(&mut self, latency_ms: f64, outcome: CallOutcome) {
        self.count(outcome);
        self.latency_sum_ms += latency_ms;
        let index = LATENCY_BUCKETS_MS
            .iter()
            .position(|&b| latency_ms <= b)
            .unwrap_or(LATENCY_BUCKETS_MS.len());
        self.buckets[index] += 1;
    }

    /// Estimated quantile (0..1) of the timed calls from the histogram, ms;
    /// `None` without timed calls.
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        let timed = self.timed_calls();
        if timed == 0 {
            return None;
        }
        let target = (q * timed as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= target {
                return Some(
                    LATENCY_BUCKETS_MS
                        .get(i)
                        .copied()
                        .unwrap_or(LATENCY_BUCKETS_MS[LATENCY_BUCKETS_MS.len() - 1]),
                );
            }
        }
        Some(LATENCY_BUCKETS_MS[LATENCY_BUCKETS_MS.len() - 1])
    }

    /// The difference since an earlier reading (for per-interval rates).
    pub fn since(&self, earlier: &CallStats) -> CallStats {
        let mut buckets = self.buckets;
        for (b, e) in buckets.iter_mut().zip(earlier.buckets) {
            *b = b.saturating_sub(e);
        }
        CallStats {
            calls: self.calls.saturating_sub(earlier.calls),
            errors: self.errors.saturating_sub(earlier.errors),
            timeouts: self.timeouts.saturating_sub(earlier.timeouts),
            latency_sum_ms: (self.latency_sum_ms - earlier.latency_sum_ms).max(0.0),
            buckets,
        }
    }
}

/// How a call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallOutcome {
    /// It answered.
    Ok,
    /// It failed.
    Error,
    /// It did not answer in time.
    Timeout,
}

type Key = (&'static str, String);

fn registry() -> &'static Mutex<BTreeMap<Key, CallStats>> {
    static REGISTRY: OnceLock<Mutex<BTreeMap<Key, CallStats>>> = OnceLock::new();
    REGISTRY.get_or_init(Default::default)
}

/// Records one call of `dependency` (`telegram`, `agent`, `http`) and `method`.
pub fn observe(dependency: &'static str, method: &str, latency_ms: f64, outcome: CallOutcome) {
    // A std Mutex: held for a map update, never across an await.
    let mut map = registry().lock().unwrap_or_else(|p| p.into_inner());
    let stats = map.entry((dependency, method.to_string())).or_default();
    if UNTIMED_CALLS.contains(&(dependency, method)) {
        stats.count(outcome);
    } else {
        stats.observe(latency_ms, outcome);
    }
}

/// Upper bounds of the task run-time buckets, seconds.
pub const TASK_DURATION_BUCKETS_S: [f64; 11] = [
    1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0,
];

/// Run times of the tasks finished by this process, for one terminal status.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DurationHistogram {
    /// Tasks per bucket of [`TASK_DURATION_BUCKETS_S`] (not cumulative), plus +Inf.
    pub buckets: [u64; TASK_DURATION_BUCKETS_S.len() + 1],
    /// Sum of run times, seconds.
    pub sum_s: f64,
}

fn task_durations() -> &'static Mutex<BTreeMap<&'static str, DurationHistogram>> {
    static DURATIONS: OnceLock<Mutex<BTreeMap<&'static str, DurationHistogram>>> = OnceLock::new();
    DURATIONS.get_or_init(Default::default)
}

/// Records the run time of a task this process finished with `status`.
pub fn observe_task_duration(status: &'static str, run_ms: u64) {
    let seconds = run_ms as f64 / 1000.0;
    let index = TASK_DURATION_BUCKETS_S
        .iter()
        .position(|&b| seconds <= b)
        .unwrap_or(TASK_DURATION_BUCKETS_S.len());
    // A std Mutex: held for a map update, never across an await.
    let mut map = task_durations().lock().unwrap_or_else(|p| p.into_inner());
    let histogram = map.entry(status).or_default();
    histogram.buckets[index] += 1;
    histogram.sum_s += seconds;
}

/// The run-time histogram of tasks finished with `status` by this process.
pub fn task_duration_histogram(status: &str) -> DurationHistogram {
    let map = task_durations().lock().unwrap_or_else(|p| p.into_inner());
    map.get(status).cloned().unwrap_or_default()
}

/// Every (dependency, method) with its stats so far.
pub fn snapshot() -> Vec<(&'static str, String, CallStats)> {
    let map = registry().lock().unwrap_or_else(|p| p.into_inner());
    map.iter()
        .map(|((dep, method), stats)| (*dep, method.clone(), stats.clone()))
        .collect()
}

/// Stats of one dependency, all methods merged.
pub fn dependency_totals(dependency: &str) -> CallStats {
    let mut total = CallStats::default();
    for (dep, _, stats) in snapshot() {
        if dep == dependency {
            total.calls += stats.calls;
            total.errors += stats.errors;
            total.timeouts += stats.timeouts;
            total.latency_sum_ms += stats.latency_sum_ms;
            for (t, s) in total.buckets.iter_mut().zip(stats.buckets) {
                *t += s;
            }
        }
    }
    total
}

/// Distinct (what, kind) labels kept for unknown agent events; more are counted
/// under kind `other`, so a chatty CLI cannot grow the exposition without bound.
const MAX_UNKNOWN_EVENT_KINDS: usize = 32;

fn unknown_events() -> &'static Mutex<BTreeMap<(&'static str, String), u64>> {
    static UNKNOWN: OnceLock<Mutex<BTreeMap<(&'static str, String), u64>>> = OnceLock::new();
    UNKNOWN.get_or_init(Default::default)
}

/// Counts an event (or content block) of the agent's output that agentlab does not
/// know: `what` says where it was (`event`, `assistant content`), `kind` its type.
pub fn count_unknown_agent_event(what: &'static str, kind: &str) {
    // A std Mutex: held for a map update, never across an await.
    let mut map = unknown_events().lock().unwrap_or_else(|p| p.into_inner());
    let known = map.contains_key(&(what, kind.to_owned()));
    let kind = if known || map.len() < MAX_UNKNOWN_EVENT_KINDS {
        kind.to_owned()
    } else {
        "other".to_owned()
    };
    *map.entry((what, kind)).or_default() += 1;
}

/// Unknown agent events seen by this process, by (what, kind).
pub fn unknown_agent_events() -> Vec<(&'static str, String, u64)> {
    let map = unknown_events().lock().unwrap_or_else(|p| p.into_inner());
    map.iter()
        .map(|((what, kind), count)| (*what, kind.clone(), *count))
        .collect()
}

/// All unknown agent events seen by this process.
pub fn unknown_agent_events_total() -> u64 {
    unknown_agent_events().iter().map(|(_, _, n)| n).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_come_from_the_buckets() {
        let mut s = CallStats::default();
        for _ in 0..90 {
            s.observe(3.0, CallOutcome::Ok);
        }
        for _ in 0..10 {
            s.observe(400.0, CallOutcome::Timeout);
        }
        assert_eq!(s.calls, 100);
        assert_eq!(s.timeouts, 10);
        assert_eq!(s.quantile_ms(0.5), Some(5.0));
        assert_eq!(s.quantile_ms(0.95), Some(500.0));
        let later = s.clone();
        assert_eq!(later.since(&s).calls, 0);
        assert_eq!(CallStats::default().quantile_ms(0.95), None);
    }

    #[test]
    fn long_polls_are_counted_but_not_timed() {
        for _ in 0..20 {
            observe("telegram", "getUpdates", 30_000.0, CallOutcome::Ok);
        }
        observe("telegram", "getUpdates", 10.0, CallOutcome::Error);
        let polls = snapshot()
            .into_iter()
            .find(|(d, m, _)| *d == "telegram" && m == "getUpdates")
            .map(|(_, _, s)| s)
            .expect("recorded");
        assert!(polls.calls >= 21 && polls.errors >= 1, "{polls:?}");
        assert_eq!(polls.timed_calls(), 0, "{polls:?}");
        assert_eq!(polls.latency_sum_ms, 0.0);
        assert_eq!(polls.quantile_ms(0.95), None);
    }
}
