//! Circuit breakers (placeholder until the breaker module lands).
use serde::{Deserialize, Serialize};

/// Breaker settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct BreakerSettings {
    /// Consecutive failures.
    pub failure_threshold: u32,
    /// Rate.
    pub failure_rate: f64,
    /// Window.
    pub window_s: u64,
    /// Min calls.
    pub min_calls: u32,
    /// Recovery.
    pub recovery_timeout_s: u64,
    /// Successes to close.
    pub success_threshold: u32,
    /// Probes.
    pub half_open_max_calls: u32,
}

impl Default for BreakerSettings {
    fn default() -> Self {
        Self { failure_threshold: 5, failure_rate: 0.5, window_s: 60, min_calls: 10, recovery_timeout_s: 30, success_threshold: 2, half_open_max_calls: 1 }
    }
}

impl BreakerSettings {
    /// Validate.
    pub fn validate(&self) -> Result<(), String> { Ok(()) }
}
