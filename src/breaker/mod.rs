//! Circuit breakers: stop calling a dependency that keeps failing, probe it after a
//! pause, and resume normal traffic once it answers again.
//!
//! Layout: `settings` (the `[breaker]` tuning and its validation), `machine`
//! (one breaker's state machine, its permits and records), `circuits` (the
//! service's breakers, one per (bot, dependency), restored from and persisted to
//! the store). Time comes from a [`crate::clock::Clock`], so tests never sleep.
//! Where breakers sit among the layers: `docs/ARCHITECTURE.md`.
//!
//! agentlab keeps one [`CircuitBreaker`] per (bot, dependency) — the agent process and
//! the Telegram API. While the agent's breaker is open, prompts stay queued instead of
//! failing one after another; its transitions are recorded as events and its
//! [`BreakerSnapshot`] is persisted so a restart does not close an open circuit.
//!
//! `Closed` → `Open` → (recovery timeout) → `HalfOpen` → `Closed` after
//! `success_threshold` probe successes, or back to `Open` — for twice as long, capped —
//! after a probe failure or a probe timeout.
//!
//! Invariants:
//! - Closed opens on *either* `failure_threshold` consecutive failures *or* a failure
//!   rate of at least `failure_rate` over the last `window_s`, once the window holds
//!   `min_calls` calls; the rate is evaluated when a failure is recorded.
//! - At most `half_open_max_calls` probes are outstanding, exactly, under any
//!   concurrency: the open → half-open edge and each grant share one critical section.
//! - Never stuck half-open: a probe unresolved after `probe_timeout_s` counts as a
//!   failure. Timers fire lazily on every call and on [`CircuitBreaker::tick`].
//! - An outcome only moves the state period it was admitted in: a permit granted before
//!   a transition still shows in the totals but cannot affect the new state.
//! - The observer sees every transition exactly once, in order, after the internal lock
//!   has been released, together with the snapshot taken at that transition.
//! - Durations use the monotonic clock; wall-clock time only labels transitions and
//!   snapshots, and a restored open period is clamped so a wall-clock jump cannot
//!   stretch it.

mod circuits;
mod machine;
mod settings;

pub use circuits::{Circuits, Dependency};
pub(crate) use circuits::{SERVICE_BOT_ID, service_breaker};
pub use machine::{
    BreakerSnapshot, CircuitBreaker, OutcomeTotals, Permit, Rejected, State, Transition,
    TransitionObserver,
};
pub use settings::{BreakerSettings, InvalidSetting};

#[cfg(test)]
mod tests;
