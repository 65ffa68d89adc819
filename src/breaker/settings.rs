//! The tuning of a breaker as configured (`[breaker]`), its validation, and the
//! clamped limits a breaker actually runs with.

use serde::{Deserialize, Serialize};

/// Tuning of one breaker, as read from the `[breaker]` configuration table.
///
/// Every field has a default, so an empty table is valid; unknown keys are an error.
/// Call [`BreakerSettings::validate`] when loading configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BreakerSettings {
    /// Consecutive failures in closed state that open the breaker.
    pub failure_threshold: u32,
    /// Failure rate (in `(0, 1]`) over the window that opens the breaker.
    pub failure_rate: f64,
    /// Length of the sliding failure-rate window, in seconds.
    pub window_s: u64,
    /// Calls the window must hold before the failure rate is considered.
    pub min_calls: u32,
    /// First open period, in seconds; doubled on each re-open from half-open.
    pub recovery_timeout_s: u64,
    /// Cap of the doubled open period, in seconds.
    pub max_recovery_timeout_s: u64,
    /// Probe successes in half-open that close the breaker.
    pub success_threshold: u32,
    /// Probes allowed to be outstanding at once in half-open.
    pub half_open_max_calls: u32,
    /// A probe unresolved after this many seconds counts as a failure.
    pub probe_timeout_s: u64,
}

impl Default for BreakerSettings {
    fn default() -> Self {
        Self {
            failure_threshold: 5,
            failure_rate: 0.5,
            window_s: 60,
            min_calls: 10,
            recovery_timeout_s: 30,
            max_recovery_timeout_s: 600,
            success_threshold: 2,
            half_open_max_calls: 1,
            probe_timeout_s: 60,
        }
    }
}

/// A `[breaker]` setting out of its accepted range.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{field} = {value}: {expected}")]
#[non_exhaustive]
pub struct InvalidSetting {
    /// The field, as named in the `[breaker]` table (`failure_threshold`, ...).
    pub field: &'static str,
    /// The value given.
    pub value: String,
    /// What is accepted.
    pub expected: String,
}

impl BreakerSettings {
    /// Checks every field; the error names the first bad field, its value and the
    /// accepted range.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        at_least_one("failure_threshold", self.failure_threshold.into())?;
        // Written so that NaN is rejected too.
        let rate_in_range = self.failure_rate > 0.0 && self.failure_rate <= 1.0;
        if !rate_in_range {
            return Err(InvalidSetting {
                field: "failure_rate",
                value: self.failure_rate.to_string(),
                expected: "must be above 0 and at most 1".into(),
            });
        }
        at_least_one("window_s", self.window_s)?;
        at_least_one("min_calls", self.min_calls.into())?;
        at_least_one("recovery_timeout_s", self.recovery_timeout_s)?;
        if self.max_recovery_timeout_s < self.recovery_timeout_s {
            return Err(InvalidSetting {
                field: "max_recovery_timeout_s",
                value: self.max_recovery_timeout_s.to_string(),
                expected: format!(
                    "must be at least recovery_timeout_s ({})",
                    self.recovery_timeout_s
                ),
            });
        }
        at_least_one("success_threshold", self.success_threshold.into())?;
        at_least_one("half_open_max_calls", self.half_open_max_calls.into())?;
        at_least_one("probe_timeout_s", self.probe_timeout_s)
    }
}

fn at_least_one(field: &'static str, value: u64) -> Result<(), InvalidSetting> {
    if value >= 1 {
        Ok(())
    } else {
        Err(InvalidSetting {
            field,
            value: value.to_string(),
            expected: "must be at least 1".into(),
        })
    }
}

/// Settings resolved to milliseconds and clamped to valid values, so that a breaker
/// built from unvalidated settings still never divides by zero or stays open forever.
#[derive(Clone, Debug)]
pub(super) struct Limits {
    pub(super) failure_threshold: u32,
    pub(super) failure_rate: f64,
    pub(super) window_ms: u64,
    pub(super) min_calls: u32,
    pub(super) recovery_ms: u64,
    pub(super) max_recovery_ms: u64,
    pub(super) success_threshold: u32,
    pub(super) half_open_max_calls: usize,
    pub(super) probe_timeout_ms: u64,
}

impl Limits {
    pub(super) fn new(settings: &BreakerSettings) -> Self {
        let rate = settings.failure_rate;
        let recovery_ms = secs_to_ms(settings.recovery_timeout_s.max(1));
        Self {
            failure_threshold: settings.failure_threshold.max(1),
            failure_rate: if rate > 0.0 && rate <= 1.0 { rate } else { 1.0 },
            window_ms: secs_to_ms(settings.window_s.max(1)),
            min_calls: settings.min_calls.max(1),
            recovery_ms,
            max_recovery_ms: secs_to_ms(settings.max_recovery_timeout_s).max(recovery_ms),
            success_threshold: settings.success_threshold.max(1),
            half_open_max_calls: usize::try_from(settings.half_open_max_calls.max(1))
                .unwrap_or(usize::MAX),
            probe_timeout_ms: secs_to_ms(settings.probe_timeout_s.max(1)),
        }
    }

    /// Length of the open period after `consecutive_opens` opens without a close.
    pub(super) fn open_period_ms(&self, consecutive_opens: u32) -> u64 {
        let doublings = consecutive_opens.saturating_sub(1).min(63);
        self.recovery_ms
            .saturating_mul(1_u64 << doublings)
            .min(self.max_recovery_ms)
    }

    pub(super) fn rate_exceeded(&self, calls: u64, failures: u64) -> bool {
        // Division, not multiplication, so that e.g. 6/10 compares equal to 0.6.
        calls >= u64::from(self.min_calls) && failures as f64 / calls as f64 >= self.failure_rate
    }
}

fn secs_to_ms(secs: u64) -> u64 {
    secs.saturating_mul(1_000)
}
