//! Circuit breakers: stop calling a dependency that keeps failing, probe it after a
//! pause, and resume normal traffic once it answers again.
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
#![warn(missing_docs)]

use std::cell::Cell;
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// Reasons longer than this (in chars) are cut before they are stored in a transition.
const MAX_REASON_CHARS: usize = 200;
/// The failure-rate window is a ring of at most this many time buckets.
const WINDOW_BUCKETS: u64 = 60;
/// Finest bucket granularity of the failure-rate window.
const MIN_BUCKET_MS: u64 = 1_000;

// ---------------------------------------------------------------------------------------
// Settings
// ---------------------------------------------------------------------------------------

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
struct Limits {
    failure_threshold: u32,
    failure_rate: f64,
    window_ms: u64,
    min_calls: u32,
    recovery_ms: u64,
    max_recovery_ms: u64,
    success_threshold: u32,
    half_open_max_calls: usize,
    probe_timeout_ms: u64,
}

impl Limits {
    fn new(settings: &BreakerSettings) -> Self {
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
    fn open_period_ms(&self, consecutive_opens: u32) -> u64 {
        let doublings = consecutive_opens.saturating_sub(1).min(63);
        self.recovery_ms
            .saturating_mul(1_u64 << doublings)
            .min(self.max_recovery_ms)
    }

    fn rate_exceeded(&self, calls: u64, failures: u64) -> bool {
        // Division, not multiplication, so that e.g. 6/10 compares equal to 0.6.
        calls >= u64::from(self.min_calls) && failures as f64 / calls as f64 >= self.failure_rate
    }
}

fn secs_to_ms(secs: u64) -> u64 {
    secs.saturating_mul(1_000)
}

// ---------------------------------------------------------------------------------------
// Clocks
// ---------------------------------------------------------------------------------------

/// Source of time for a breaker; injectable so tests never sleep.
pub trait Clock: Send + Sync {
    /// Monotonic milliseconds since an arbitrary fixed origin; never decreases.
    /// Every duration (open period, window, probe timeout) is measured with it.
    fn now_ms(&self) -> u64;
    /// Wall-clock time as unix milliseconds (UTC). It may jump, so it only labels
    /// transitions and snapshots.
    fn wall_ms(&self) -> u64;
}

/// The real clock: monotonic time since the process first read a `SystemClock`, and
/// the system's wall clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl SystemClock {
    /// Returns the system clock.
    pub fn new() -> Self {
        Self
    }
}

fn process_start() -> Instant {
    static START: OnceLock<Instant> = OnceLock::new();
    *START.get_or_init(Instant::now)
}

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        duration_to_ms(process_start().elapsed())
    }

    fn wall_ms(&self) -> u64 {
        // The service clock: the wall clock, never running backwards.
        crate::clock::now_ms()
    }
}

/// A clock that only moves when told to, for tests. Monotonic time starts at 0.
#[derive(Debug)]
pub struct ManualClock {
    mono_ms: AtomicU64,
    wall_ms: AtomicU64,
}

impl ManualClock {
    /// A clock at monotonic 0 whose wall clock reads `wall_ms` (unix milliseconds).
    pub fn new(wall_ms: u64) -> Self {
        Self {
            mono_ms: AtomicU64::new(0),
            wall_ms: AtomicU64::new(wall_ms),
        }
    }

    /// Moves both the monotonic and the wall clock forward.
    pub fn advance(&self, by: Duration) {
        let ms = duration_to_ms(by);
        add_saturating(&self.mono_ms, ms);
        add_saturating(&self.wall_ms, ms);
    }

    /// Sets the wall clock alone, as an NTP step or a manual change would.
    pub fn set_wall_ms(&self, wall_ms: u64) {
        self.wall_ms.store(wall_ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.mono_ms.load(Ordering::SeqCst)
    }

    fn wall_ms(&self) -> u64 {
        self.wall_ms.load(Ordering::SeqCst)
    }
}

fn add_saturating(counter: &AtomicU64, ms: u64) {
    // The closure always returns Some, so this cannot fail.
    let _ = counter.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |v| {
        Some(v.saturating_add(ms))
    });
}

fn duration_to_ms(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

// ---------------------------------------------------------------------------------------
// Public records
// ---------------------------------------------------------------------------------------

/// The state of a breaker. Serialized as `"closed"`, `"open"`, `"half_open"`;
/// displayed as `CLOSED`, `OPEN`, `HALF_OPEN`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Calls flow; outcomes are counted.
    Closed,
    /// Calls are rejected until the open period ends.
    Open,
    /// A limited number of probe calls decide between closing and re-opening.
    HalfOpen,
}

impl State {
    /// The serialized form (`closed`, `open`, `half_open`), handy as a metrics label.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Closed => "closed",
            State::Open => "open",
            State::HalfOpen => "half_open",
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            State::Closed => "CLOSED",
            State::Open => "OPEN",
            State::HalfOpen => "HALF_OPEN",
        })
    }
}

/// One state change, as recorded in the events table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transition {
    /// State before the change.
    pub from: State,
    /// State after the change.
    pub to: State,
    /// Why, e.g. `5 consecutive failures (last: timeout)` or `probe timed out`.
    pub reason: String,
    /// When, in unix milliseconds.
    pub at_wall_ms: u64,
}

/// How many outcomes a breaker has seen since it was created (or restored), by kind.
///
/// These count what callers reported, including outcomes that arrived too late to
/// affect the state; probe timeouts are counted separately.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutcomeTotals {
    /// Calls reported as successful.
    pub successes: u64,
    /// Calls reported as failed.
    pub failures: u64,
    /// Calls refused because the breaker was open or half-open with no free slot.
    pub rejected: u64,
    /// Calls resolved as neither (cancelled, cost limit, dropped permit).
    pub ignored: u64,
    /// Probes that were not resolved within `probe_timeout_s`.
    pub probe_timeouts: u64,
}

impl OutcomeTotals {
    fn count(&mut self, outcome: Outcome<'_>) {
        let counter = match outcome {
            Outcome::Success => &mut self.successes,
            Outcome::Failure(_) => &mut self.failures,
            Outcome::Ignored => &mut self.ignored,
        };
        *counter = counter.saturating_add(1);
    }
}

/// Everything needed to show a breaker or to bring it back after a restart.
///
/// Plain data with no skipped or defaulted fields, so it encodes with postcard as well
/// as JSON.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BreakerSnapshot {
    /// Current state.
    pub state: State,
    /// Consecutive failures counted in closed state (kept while open, reset on close).
    pub consecutive_failures: u32,
    /// Failures in the failure-rate window.
    pub window_failures: u32,
    /// Calls (successes and failures) in the failure-rate window.
    pub window_calls: u32,
    /// Probe successes so far in half-open; 0 in other states.
    pub half_open_successes: u32,
    /// Probes currently outstanding; 0 outside half-open.
    pub probes_in_flight: u32,
    /// When the breaker last opened (unix ms); `None` while closed.
    pub opened_at_wall_ms: Option<u64>,
    /// When the next probe may happen (unix ms); `Some` only while open.
    pub open_until_wall_ms: Option<u64>,
    /// Opens since the breaker was last closed; drives the doubling of the open period.
    pub consecutive_opens: u32,
    /// The most recent state change.
    pub last_transition: Option<Transition>,
    /// Outcome counters.
    pub totals: OutcomeTotals,
    /// When this snapshot was taken (unix ms).
    pub taken_at_wall_ms: u64,
}

/// Receives every transition with the snapshot taken right after it.
///
/// Called outside the breaker's lock, so it may log, write to storage or call back into
/// the breaker; calls are serialized and in order. Keep it short: while it runs, the
/// thread that delivers transitions waits for it. A panic is caught and logged.
pub type TransitionObserver = Arc<dyn Fn(&Transition, &BreakerSnapshot) + Send + Sync>;

/// A call refused by the breaker.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("circuit breaker {breaker} is {state}; next probe in {retry_after_ms} ms")]
#[non_exhaustive]
pub struct Rejected {
    /// Name of the breaker that refused.
    pub breaker: Arc<str>,
    /// `Open`, or `HalfOpen` when every probe slot is taken.
    pub state: State,
    /// When open: until the open period ends. When half-open: until the oldest
    /// outstanding probe times out (a slot may free up sooner).
    pub retry_after_ms: u64,
}

impl Rejected {
    /// [`Rejected::retry_after_ms`] as a `Duration`.
    pub fn retry_after(&self) -> Duration {
        Duration::from_millis(self.retry_after_ms)
    }
}

// ---------------------------------------------------------------------------------------
// The breaker
// ---------------------------------------------------------------------------------------

/// A circuit breaker guarding one dependency. Cheap to clone; clones share state.
///
/// Callers either take a [`Permit`] with [`try_acquire`](Self::try_acquire) and resolve
/// it, or use [`can_execute`](Self::can_execute) followed by
/// [`record_success`](Self::record_success) / [`record_failure`](Self::record_failure).
#[derive(Clone)]
pub struct CircuitBreaker {
    shared: Arc<Shared>,
}

impl fmt::Debug for CircuitBreaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreaker")
            .field("name", &self.shared.name)
            .field("settings", &self.shared.settings)
            .finish_non_exhaustive()
    }
}

impl CircuitBreaker {
    /// A closed breaker. Settings should have passed [`BreakerSettings::validate`];
    /// invalid values are clamped to the nearest valid one (and logged) rather than
    /// panicking.
    pub fn new(name: impl Into<String>, settings: BreakerSettings, clock: Arc<dyn Clock>) -> Self {
        let name: Arc<str> = Arc::from(name.into());
        if let Err(error) = settings.validate() {
            tracing::warn!(breaker = %name, %error, "invalid breaker settings, clamping them");
        }
        let limits = Limits::new(&settings);
        let core = Core::new(&limits, clock.now_ms());
        Self {
            shared: Arc::new(Shared {
                name,
                settings,
                limits,
                clock,
                core: Mutex::new(core),
            }),
        }
    }

    /// Rebuilds a breaker from a persisted snapshot, without reporting a transition.
    ///
    /// - `Open` stays open for the time it had left, measured on the wall clock and
    ///   clamped to `[0, open period]` (the period for its `consecutive_opens`, at most
    ///   `max_recovery_timeout_s`), so a wall-clock jump cannot keep it open for hours.
    /// - `HalfOpen` comes back `Open` with its open period already over: the next call
    ///   moves it to half-open and fresh probes are issued.
    /// - `Closed` keeps its consecutive failures, and its window counts if the snapshot
    ///   is younger than the window (they are replayed at the current instant).
    ///
    /// Totals and the last transition carry over.
    pub fn restore(
        name: impl Into<String>,
        settings: BreakerSettings,
        clock: Arc<dyn Clock>,
        snapshot: BreakerSnapshot,
    ) -> Self {
        let breaker = Self::new(name, settings, clock);
        breaker
            .shared
            .with_core(|core, ctx| core.restore(snapshot, ctx));
        breaker
    }

    /// Sets the observer that receives every later transition.
    pub fn with_observer(self, observer: TransitionObserver) -> Self {
        self.shared.lock_core().observer = Some(observer);
        self
    }

    /// The name given at construction, e.g. `BOT-001/agent`.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The settings given at construction.
    pub fn settings(&self) -> &BreakerSettings {
        &self.shared.settings
    }

    /// Asks to make one call. Closed: always granted. Open: rejected. Half-open: granted
    /// as a probe while fewer than `half_open_max_calls` probes are outstanding.
    ///
    /// The permit must be resolved with [`Permit::success`], [`Permit::failure`] or
    /// [`Permit::ignore`]; dropping it unresolved counts as ignore.
    pub fn try_acquire(&self) -> Result<Permit, Rejected> {
        match self.shared.with_core(|core, ctx| core.admit(ctx, false)) {
            Ok(ticket) => Ok(Permit {
                shared: Arc::clone(&self.shared),
                ticket,
                resolved: false,
            }),
            Err(refusal) => Err(self.rejected(refusal)),
        }
    }

    /// Whether a call may go ahead now, for callers that report with
    /// [`record_success`](Self::record_success) / [`record_failure`](Self::record_failure)
    /// instead of holding a [`Permit`].
    ///
    /// - Closed: `true`, and nothing is reserved.
    /// - Open: `false` (counted as rejected).
    /// - Half-open: if a probe slot is free, takes it and returns `true`. The slot is
    ///   released by the next `record_*` call, or, if none comes, by the probe timeout —
    ///   which counts as a failure. Callers whose call may be cancelled should use
    ///   [`try_acquire`](Self::try_acquire) and [`Permit::ignore`] instead.
    pub fn can_execute(&self) -> bool {
        self.shared
            .with_core(|core, ctx| core.admit(ctx, true))
            .is_ok()
    }

    /// Reports a successful call made without a permit. Closed: counts. Half-open:
    /// resolves the oldest probe taken by `can_execute` (or counts as a probe success
    /// if there is none). Open: only the totals change.
    pub fn record_success(&self) {
        self.shared
            .with_core(|core, ctx| core.record_without_permit(Outcome::Success, ctx));
    }

    /// Reports a failed call made without a permit; see
    /// [`record_success`](Self::record_success) for how each state treats it.
    pub fn record_failure(&self, reason: &str) {
        self.shared
            .with_core(|core, ctx| core.record_without_permit(Outcome::Failure(reason), ctx));
    }

    /// The current state, after firing any due timer.
    pub fn state(&self) -> State {
        self.shared.with_core(|core, _| core.state())
    }

    /// A consistent snapshot of the breaker, after firing any due timer.
    pub fn snapshot(&self) -> BreakerSnapshot {
        self.shared.with_core(|core, ctx| {
            let wall = ctx.clock.wall_ms();
            core.snapshot(ctx, wall)
        })
    }

    /// Fires due timers (end of the open period, probe timeouts) even when no call
    /// arrives. The owner should call it every few seconds.
    pub fn tick(&self) {
        self.shared.with_core(|_, _| ());
    }

    fn rejected(&self, refusal: Refusal) -> Rejected {
        Rejected {
            breaker: Arc::clone(&self.shared.name),
            state: refusal.state,
            retry_after_ms: refusal.retry_after_ms,
        }
    }
}

/// The right to make one call. Resolve it with exactly one of its methods; dropping it
/// unresolved counts as [`Permit::ignore`]. `Send + 'static`: it may move into a task.
#[must_use = "a permit must be resolved with success(), failure() or ignore()"]
pub struct Permit {
    shared: Arc<Shared>,
    ticket: Ticket,
    resolved: bool,
}

impl fmt::Debug for Permit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permit")
            .field("breaker", &self.shared.name)
            .field("ticket", &self.ticket)
            .finish()
    }
}

impl Permit {
    /// The call succeeded.
    pub fn success(self) {
        self.resolve(Outcome::Success);
    }

    /// The call failed because of the dependency; `reason` ends up in the transition
    /// if this failure opens the breaker (cut to 200 characters).
    pub fn failure(self, reason: &str) {
        self.resolve(Outcome::Failure(reason));
    }

    /// The call says nothing about the dependency (cancelled by the user, stopped by a
    /// cost limit): counts as neither success nor failure, and frees a probe slot.
    pub fn ignore(self) {
        self.resolve(Outcome::Ignored);
    }

    /// Whether this permit is a half-open probe.
    pub fn is_probe(&self) -> bool {
        matches!(self.ticket, Ticket::Probe { .. })
    }

    fn resolve(mut self, outcome: Outcome<'_>) {
        self.resolved = true;
        self.shared.resolve(self.ticket, outcome);
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if !self.resolved {
            self.resolved = true;
            self.shared.resolve(self.ticket, Outcome::Ignored);
        }
    }
}

// ---------------------------------------------------------------------------------------
// Internals
// ---------------------------------------------------------------------------------------

/// What a permit was issued for: a call in one closed period, or one probe.
#[derive(Clone, Copy, Debug)]
enum Ticket {
    Closed { epoch: u64 },
    Probe { id: u64 },
}

#[derive(Clone, Copy, Debug)]
enum Outcome<'r> {
    Success,
    Failure(&'r str),
    Ignored,
}

struct Refusal {
    state: State,
    retry_after_ms: u64,
}

struct Shared {
    name: Arc<str>,
    settings: BreakerSettings,
    limits: Limits,
    clock: Arc<dyn Clock>,
    // A std Mutex rather than an async one: it is never held across an `.await`, and
    // every critical section is a few field updates (no I/O, no user code), so
    // blocking on it is cheaper than any async handshake.
    core: Mutex<Core>,
}

/// Everything a critical section needs besides the core itself.
struct Ctx<'a> {
    limits: &'a Limits,
    clock: &'a dyn Clock,
    /// Monotonic time, read inside the lock so it never goes backwards between
    /// critical sections, and only when needed: a closed-state grant needs none.
    now: Cell<Option<u64>>,
}

impl Ctx<'_> {
    fn now(&self) -> u64 {
        match self.now.get() {
            Some(now) => now,
            None => {
                let now = self.clock.now_ms();
                self.now.set(Some(now));
                now
            }
        }
    }
}

impl Shared {
    fn lock_core(&self) -> MutexGuard<'_, Core> {
        // No user code runs under the lock, so a poisoned lock still holds a consistent
        // core; carry on rather than panic.
        self.core.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `f` under the lock after firing due timers, then, outside the lock,
    /// delivers any transitions it produced.
    fn with_core<R>(&self, f: impl FnOnce(&mut Core, &Ctx<'_>) -> R) -> R {
        let (result, delivery) = {
            let mut core = self.lock_core();
            let ctx = Ctx {
                limits: &self.limits,
                clock: self.clock.as_ref(),
                now: Cell::new(None),
            };
            core.fire_due_timers(&ctx);
            let result = f(&mut core, &ctx);
            (result, core.claim_delivery())
        };
        if let Some(delivery) = delivery {
            self.deliver(delivery);
        }
        result
    }

    fn resolve(&self, ticket: Ticket, outcome: Outcome<'_>) {
        self.with_core(|core, ctx| core.resolve(ticket, outcome, ctx));
    }

    /// Announces transitions until none is pending. Only one thread delivers at a time
    /// (the `delivering` flag), which keeps transitions in order and lets the observer
    /// call back into the breaker without deadlocking.
    fn deliver(&self, mut delivery: Delivery) {
        loop {
            for notice in &delivery.notices {
                self.announce(notice, delivery.observer.as_ref());
            }
            let next = self.lock_core().continue_delivery();
            match next {
                Some(more) => delivery = more,
                None => return,
            }
        }
    }

    fn announce(&self, notice: &Notice, observer: Option<&TransitionObserver>) {
        let t = &notice.transition;
        if t.to == State::Open {
            tracing::warn!(breaker = %self.name, from = %t.from, to = %t.to, reason = %t.reason, "circuit breaker opened");
        } else {
            tracing::info!(breaker = %self.name, from = %t.from, to = %t.to, reason = %t.reason, "circuit breaker state changed");
        }
        if let Some(observer) = observer {
            let outcome = catch_unwind(AssertUnwindSafe(|| observer(t, &notice.snapshot)));
            if outcome.is_err() {
                tracing::error!(breaker = %self.name, from = %t.from, to = %t.to, "circuit breaker observer panicked");
            }
        }
    }
}

struct Notice {
    transition: Transition,
    snapshot: BreakerSnapshot,
}

struct Delivery {
    notices: Vec<Notice>,
    observer: Option<TransitionObserver>,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Phase {
    Closed,
    Open { until_ms: u64 },
    HalfOpen { successes: u32 },
}

#[derive(Clone, Copy, Debug)]
struct Probe {
    id: u64,
    deadline_ms: u64,
    /// Taken by `can_execute`; released by the next `record_*` call.
    detached: bool,
}

/// The mutable state behind the lock.
struct Core {
    phase: Phase,
    /// Outstanding probes, oldest first; empty outside half-open.
    probes: Vec<Probe>,
    /// Bumped by every transition; a closed-state permit only counts in its own epoch.
    epoch: u64,
    next_probe_id: u64,
    consecutive_failures: u32,
    window: RollingWindow,
    consecutive_opens: u32,
    opened_at_wall_ms: Option<u64>,
    totals: OutcomeTotals,
    last_transition: Option<Transition>,
    observer: Option<TransitionObserver>,
    pending: Vec<Notice>,
    delivering: bool,
}

impl Core {
    fn new(limits: &Limits, now: u64) -> Self {
        Self {
            phase: Phase::Closed,
            probes: Vec::new(),
            epoch: 0,
            next_probe_id: 0,
            consecutive_failures: 0,
            window: RollingWindow::new(limits.window_ms, now),
            consecutive_opens: 0,
            opened_at_wall_ms: None,
            totals: OutcomeTotals::default(),
            last_transition: None,
            observer: None,
            pending: Vec::new(),
            delivering: false,
        }
    }

    fn state(&self) -> State {
        match self.phase {
            Phase::Closed => State::Closed,
            Phase::Open { .. } => State::Open,
            Phase::HalfOpen { .. } => State::HalfOpen,
        }
    }

    /// The lazy timers: the end of the open period, then probe deadlines.
    fn fire_due_timers(&mut self, ctx: &Ctx<'_>) {
        if let Phase::Open { until_ms } = self.phase
            && ctx.now() >= until_ms
        {
            let reason = "recovery timeout elapsed".to_owned();
            self.enter(Phase::HalfOpen { successes: 0 }, reason, ctx);
        }
        if self.probes.is_empty() {
            return;
        }
        let now = ctx.now();
        let expired = self
            .probes
            .iter()
            .filter(|probe| probe.deadline_ms <= now)
            .count() as u64;
        if expired > 0 {
            self.totals.probe_timeouts = self.totals.probe_timeouts.saturating_add(expired);
            self.reopen("probe timed out".to_owned(), ctx);
        }
    }

    fn admit(&mut self, ctx: &Ctx<'_>, detached: bool) -> Result<Ticket, Refusal> {
        match self.phase {
            Phase::Closed => Ok(Ticket::Closed { epoch: self.epoch }),
            Phase::Open { until_ms } => {
                Err(self.refuse(State::Open, until_ms.saturating_sub(ctx.now())))
            }
            Phase::HalfOpen { .. } => self.admit_probe(ctx, detached),
        }
    }

    fn admit_probe(&mut self, ctx: &Ctx<'_>, detached: bool) -> Result<Ticket, Refusal> {
        if self.probes.len() >= ctx.limits.half_open_max_calls {
            let oldest_deadline = self.probes.iter().map(|p| p.deadline_ms).min();
            let wait = oldest_deadline
                .unwrap_or(ctx.now())
                .saturating_sub(ctx.now());
            return Err(self.refuse(State::HalfOpen, wait));
        }
        let id = self.next_probe_id;
        self.next_probe_id = self.next_probe_id.wrapping_add(1);
        self.probes.push(Probe {
            id,
            deadline_ms: ctx.now().saturating_add(ctx.limits.probe_timeout_ms),
            detached,
        });
        Ok(Ticket::Probe { id })
    }

    fn refuse(&mut self, state: State, retry_after_ms: u64) -> Refusal {
        self.totals.rejected = self.totals.rejected.saturating_add(1);
        Refusal {
            state,
            retry_after_ms,
        }
    }

    fn resolve(&mut self, ticket: Ticket, outcome: Outcome<'_>, ctx: &Ctx<'_>) {
        self.totals.count(outcome);
        match ticket {
            Ticket::Closed { epoch } => {
                if epoch == self.epoch && self.phase == Phase::Closed {
                    self.apply_closed(outcome, ctx);
                }
            }
            Ticket::Probe { id } => {
                // Absent when the probe timed out or its half-open period ended.
                if let Some(index) = self.probes.iter().position(|p| p.id == id) {
                    self.probes.remove(index);
                    self.apply_probe(outcome, ctx);
                }
            }
        }
    }

    fn record_without_permit(&mut self, outcome: Outcome<'_>, ctx: &Ctx<'_>) {
        self.totals.count(outcome);
        match self.phase {
            Phase::Closed => self.apply_closed(outcome, ctx),
            Phase::HalfOpen { .. } => {
                if let Some(index) = self.probes.iter().position(|p| p.detached) {
                    self.probes.remove(index);
                }
                self.apply_probe(outcome, ctx);
            }
            Phase::Open { .. } => {}
        }
    }

    fn apply_closed(&mut self, outcome: Outcome<'_>, ctx: &Ctx<'_>) {
        match outcome {
            Outcome::Success => {
                self.consecutive_failures = 0;
                self.window.record(ctx.now(), false);
            }
            Outcome::Failure(reason) => {
                self.consecutive_failures = self.consecutive_failures.saturating_add(1);
                self.window.record(ctx.now(), true);
                if let Some(why) = self.trip_reason(reason, ctx) {
                    self.consecutive_opens = 1;
                    self.enter_open(why, ctx);
                }
            }
            Outcome::Ignored => {}
        }
    }

    /// Why the breaker must open after a failure in closed state, if it must.
    fn trip_reason(&mut self, last_reason: &str, ctx: &Ctx<'_>) -> Option<String> {
        if self.consecutive_failures >= ctx.limits.failure_threshold {
            return Some(format!(
                "{} consecutive failures (last: {})",
                self.consecutive_failures,
                bounded_reason(last_reason)
            ));
        }
        let (calls, failures) = self.window.counts(ctx.now());
        ctx.limits.rate_exceeded(calls, failures).then(|| {
            format!(
                "failure rate {:.2} over {}s ({calls} calls)",
                failures as f64 / calls as f64,
                ctx.limits.window_ms / 1_000
            )
        })
    }

    fn apply_probe(&mut self, outcome: Outcome<'_>, ctx: &Ctx<'_>) {
        let Phase::HalfOpen { successes } = self.phase else {
            return;
        };
        match outcome {
            Outcome::Success => {
                let successes = successes.saturating_add(1);
                if successes >= ctx.limits.success_threshold {
                    self.close(format!("{successes} successes in half-open"), ctx);
                } else {
                    self.phase = Phase::HalfOpen { successes };
                }
            }
            Outcome::Failure(reason) => {
                self.reopen(format!("probe failed: {}", bounded_reason(reason)), ctx);
            }
            Outcome::Ignored => {}
        }
    }

    fn reopen(&mut self, reason: String, ctx: &Ctx<'_>) {
        self.consecutive_opens = self.consecutive_opens.saturating_add(1);
        self.enter_open(reason, ctx);
    }

    fn enter_open(&mut self, reason: String, ctx: &Ctx<'_>) {
        let period = ctx.limits.open_period_ms(self.consecutive_opens);
        let until_ms = ctx.now().saturating_add(period);
        self.enter(Phase::Open { until_ms }, reason, ctx);
    }

    fn close(&mut self, reason: String, ctx: &Ctx<'_>) {
        self.consecutive_opens = 0;
        self.consecutive_failures = 0;
        self.window.clear();
        self.enter(Phase::Closed, reason, ctx);
    }

    /// Switches phase and queues the transition for delivery outside the lock.
    fn enter(&mut self, phase: Phase, reason: String, ctx: &Ctx<'_>) {
        let wall = ctx.clock.wall_ms();
        let from = self.state();
        self.phase = phase;
        self.epoch = self.epoch.wrapping_add(1);
        self.probes.clear();
        match phase {
            Phase::Open { .. } => self.opened_at_wall_ms = Some(wall),
            Phase::Closed => self.opened_at_wall_ms = None,
            Phase::HalfOpen { .. } => {}
        }
        let transition = Transition {
            from,
            to: self.state(),
            reason,
            at_wall_ms: wall,
        };
        self.last_transition = Some(transition.clone());
        let snapshot = self.snapshot(ctx, wall);
        self.pending.push(Notice {
            transition,
            snapshot,
        });
    }

    fn snapshot(&mut self, ctx: &Ctx<'_>, wall: u64) -> BreakerSnapshot {
        let (calls, failures) = self.window.counts(ctx.now());
        let (half_open_successes, open_until_wall_ms) = match self.phase {
            Phase::Closed => (0, None),
            Phase::Open { until_ms } => {
                let remaining = until_ms.saturating_sub(ctx.now());
                (0, Some(wall.saturating_add(remaining)))
            }
            Phase::HalfOpen { successes } => (successes, None),
        };
        BreakerSnapshot {
            state: self.state(),
            consecutive_failures: self.consecutive_failures,
            window_failures: saturate_u32(failures),
            window_calls: saturate_u32(calls),
            half_open_successes,
            probes_in_flight: saturate_u32(self.probes.len() as u64),
            opened_at_wall_ms: self.opened_at_wall_ms,
            open_until_wall_ms,
            consecutive_opens: self.consecutive_opens,
            last_transition: self.last_transition.clone(),
            totals: self.totals,
            taken_at_wall_ms: wall,
        }
    }

    fn restore(&mut self, mut snapshot: BreakerSnapshot, ctx: &Ctx<'_>) {
        let wall = ctx.clock.wall_ms();
        self.totals = snapshot.totals;
        self.last_transition = snapshot.last_transition.take();
        self.consecutive_failures = snapshot.consecutive_failures;
        let opens = snapshot.consecutive_opens.max(1);
        let period = ctx.limits.open_period_ms(opens);
        let remaining = match snapshot.state {
            State::Closed => {
                let age_ms = wall.saturating_sub(snapshot.taken_at_wall_ms);
                self.restore_window(&snapshot, age_ms, ctx);
                return;
            }
            // A missing deadline is treated as a full open period: stay on the safe side.
            State::Open => snapshot
                .open_until_wall_ms
                .map_or(period, |until| until.saturating_sub(wall))
                .min(period),
            State::HalfOpen => 0,
        };
        self.consecutive_opens = opens;
        self.opened_at_wall_ms = Some(snapshot.opened_at_wall_ms.unwrap_or(wall));
        self.phase = Phase::Open {
            until_ms: ctx.now().saturating_add(remaining),
        };
    }

    /// Replays the window counts of a snapshot younger than the window at `now`: they
    /// then expire up to one window late, which errs on the side of caution.
    fn restore_window(&mut self, snapshot: &BreakerSnapshot, age_ms: u64, ctx: &Ctx<'_>) {
        if age_ms < ctx.limits.window_ms {
            let failures = snapshot.window_failures.min(snapshot.window_calls);
            self.window.add(ctx.now(), snapshot.window_calls, failures);
        }
    }

    fn claim_delivery(&mut self) -> Option<Delivery> {
        if self.delivering || self.pending.is_empty() {
            return None;
        }
        self.delivering = true;
        Some(self.take_delivery())
    }

    fn continue_delivery(&mut self) -> Option<Delivery> {
        if self.pending.is_empty() {
            self.delivering = false;
            return None;
        }
        Some(self.take_delivery())
    }

    fn take_delivery(&mut self) -> Delivery {
        Delivery {
            notices: std::mem::take(&mut self.pending),
            observer: self.observer.clone(),
        }
    }
}

fn saturate_u32(value: u64) -> u32 {
    u32::try_from(value).unwrap_or(u32::MAX)
}

/// A reason fit for a transition record: trimmed, non-empty, at most 200 chars.
fn bounded_reason(reason: &str) -> &str {
    let reason = reason.trim();
    if reason.is_empty() {
        return "unspecified";
    }
    match reason.char_indices().nth(MAX_REASON_CHARS) {
        Some((cut, _)) => reason.get(..cut).unwrap_or(reason),
        None => reason,
    }
}

/// Calls and failures over a sliding time window, kept in a fixed ring of buckets so
/// memory and cost stay bounded whatever the call volume.
///
/// Buckets are `window / 60` wide (at least 1 s). A call leaves the window between
/// `window − bucket` and `window` after it was recorded — never later.
#[derive(Debug)]
struct RollingWindow {
    bucket_ms: u64,
    buckets: Vec<Bucket>,
    /// Absolute number (`time / bucket_ms`) of the newest bucket.
    newest: u64,
    calls: u64,
    failures: u64,
}

#[derive(Clone, Copy, Debug, Default)]
struct Bucket {
    calls: u32,
    failures: u32,
}

impl RollingWindow {
    fn new(window_ms: u64, now: u64) -> Self {
        let bucket_ms = (window_ms / WINDOW_BUCKETS).max(MIN_BUCKET_MS);
        // At most WINDOW_BUCKETS: bucket_ms >= 1000 makes the rounding error < 1.
        let len = (window_ms / bucket_ms).clamp(1, WINDOW_BUCKETS) as usize;
        Self {
            bucket_ms,
            buckets: vec![Bucket::default(); len],
            newest: now / bucket_ms,
            calls: 0,
            failures: 0,
        }
    }

    fn record(&mut self, now: u64, failed: bool) {
        self.add(now, 1, u32::from(failed));
    }

    fn add(&mut self, now: u64, calls: u32, failures: u32) {
        self.slide(now);
        let slot = self.slot(self.newest);
        let bucket = &mut self.buckets[slot];
        let (calls_before, failures_before) = (bucket.calls, bucket.failures);
        bucket.calls = bucket.calls.saturating_add(calls);
        bucket.failures = bucket.failures.saturating_add(failures);
        // Totals follow what the bucket really gained, so expiry subtracts exactly.
        self.calls += u64::from(bucket.calls - calls_before);
        self.failures += u64::from(bucket.failures - failures_before);
    }

    fn counts(&mut self, now: u64) -> (u64, u64) {
        self.slide(now);
        (self.calls, self.failures)
    }

    fn clear(&mut self) {
        self.buckets.fill(Bucket::default());
        self.calls = 0;
        self.failures = 0;
    }

    /// Expires the buckets that fell out of the window by `now`.
    fn slide(&mut self, now: u64) {
        let current = now / self.bucket_ms;
        if current <= self.newest {
            return;
        }
        let len = self.buckets.len() as u64;
        if current - self.newest >= len {
            self.clear();
        } else {
            for number in self.newest + 1..=current {
                let slot = self.slot(number);
                let expired = std::mem::take(&mut self.buckets[slot]);
                self.calls -= u64::from(expired.calls);
                self.failures -= u64::from(expired.failures);
            }
        }
        self.newest = current;
    }

    fn slot(&self, number: u64) -> usize {
        // The remainder is below buckets.len(), so it fits in usize.
        (number % self.buckets.len() as u64) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Barrier;
    use std::sync::atomic::AtomicUsize;
    use std::thread;

    const WALL_START: u64 = 1_700_000_000_000;
    const NAME: &str = "BOT-001/agent";

    type Recorded = Arc<Mutex<Vec<(Transition, BreakerSnapshot)>>>;

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    fn breaker_with(settings: BreakerSettings) -> (CircuitBreaker, Arc<ManualClock>) {
        let clock = Arc::new(ManualClock::new(WALL_START));
        (CircuitBreaker::new(NAME, settings, clock.clone()), clock)
    }

    fn default_breaker() -> (CircuitBreaker, Arc<ManualClock>) {
        breaker_with(BreakerSettings::default())
    }

    /// Only the consecutive-failure trigger can fire.
    fn consecutive_only() -> BreakerSettings {
        BreakerSettings {
            min_calls: u32::MAX,
            ..Default::default()
        }
    }

    /// Only the failure-rate trigger can fire.
    fn rate_only() -> BreakerSettings {
        BreakerSettings {
            failure_threshold: u32::MAX,
            ..Default::default()
        }
    }

    fn fail(breaker: &CircuitBreaker, times: u32) {
        for _ in 0..times {
            breaker
                .try_acquire()
                .expect("call admitted")
                .failure("boom");
        }
    }

    fn succeed(breaker: &CircuitBreaker, times: u32) {
        for _ in 0..times {
            breaker.try_acquire().expect("call admitted").success();
        }
    }

    /// A default breaker opened by five failures at wall time `WALL_START`.
    fn opened_breaker() -> (CircuitBreaker, Arc<ManualClock>) {
        let (breaker, clock) = default_breaker();
        fail(&breaker, 5);
        assert_eq!(breaker.state(), State::Open);
        (breaker, clock)
    }

    fn retry_after_ms(breaker: &CircuitBreaker) -> u64 {
        breaker
            .try_acquire()
            .expect_err("call rejected")
            .retry_after_ms
    }

    fn last_reason(breaker: &CircuitBreaker) -> String {
        breaker
            .snapshot()
            .last_transition
            .expect("a transition happened")
            .reason
    }

    fn recorder() -> (TransitionObserver, Recorded) {
        let seen: Recorded = Arc::default();
        let sink = Arc::clone(&seen);
        let observer: TransitionObserver = Arc::new(move |transition, snapshot| {
            sink.lock()
                .expect("recorder lock")
                .push((transition.clone(), snapshot.clone()));
        });
        (observer, seen)
    }

    fn steps(seen: &Recorded) -> Vec<(State, State)> {
        let seen = seen.lock().expect("recorder lock");
        seen.iter().map(|(t, _)| (t.from, t.to)).collect()
    }

    fn restored(snapshot: BreakerSnapshot, clock: &Arc<ManualClock>) -> CircuitBreaker {
        CircuitBreaker::restore(NAME, BreakerSettings::default(), clock.clone(), snapshot)
    }

    // --- settings ------------------------------------------------------------------

    #[test]
    fn defaults_match_the_design_doc() {
        let s = BreakerSettings::default();
        assert_eq!(
            (s.failure_threshold, s.failure_rate, s.window_s, s.min_calls),
            (5, 0.5, 60, 10)
        );
        assert_eq!(
            (
                s.recovery_timeout_s,
                s.max_recovery_timeout_s,
                s.success_threshold
            ),
            (30, 600, 2)
        );
        assert_eq!((s.half_open_max_calls, s.probe_timeout_s), (1, 60));
        assert_eq!(s.validate(), Ok(()));
    }

    #[test]
    fn settings_fill_missing_keys_with_defaults_and_reject_unknown_ones() {
        let empty: BreakerSettings = serde_json::from_str("{}").expect("empty table");
        assert_eq!(empty, BreakerSettings::default());
        let partial: BreakerSettings =
            serde_json::from_str(r#"{"failure_threshold": 3}"#).expect("partial table");
        let expected = BreakerSettings {
            failure_threshold: 3,
            ..Default::default()
        };
        assert_eq!(partial, expected);
        let error = serde_json::from_str::<BreakerSettings>(r#"{"failure_treshold": 3}"#)
            .expect_err("a misspelt key is rejected");
        assert!(error.to_string().contains("failure_treshold"), "{error}");
    }

    #[test]
    fn validate_names_the_bad_field() {
        let d = BreakerSettings::default;
        let cases = [
            (
                BreakerSettings {
                    failure_threshold: 0,
                    ..d()
                },
                "failure_threshold",
            ),
            (
                BreakerSettings {
                    failure_rate: 0.0,
                    ..d()
                },
                "failure_rate",
            ),
            (
                BreakerSettings {
                    failure_rate: 1.5,
                    ..d()
                },
                "failure_rate",
            ),
            (
                BreakerSettings {
                    failure_rate: f64::NAN,
                    ..d()
                },
                "failure_rate",
            ),
            (BreakerSettings { window_s: 0, ..d() }, "window_s"),
            (
                BreakerSettings {
                    min_calls: 0,
                    ..d()
                },
                "min_calls",
            ),
            (
                BreakerSettings {
                    recovery_timeout_s: 0,
                    ..d()
                },
                "recovery_timeout_s",
            ),
            (
                BreakerSettings {
                    max_recovery_timeout_s: 10,
                    ..d()
                },
                "max_recovery_timeout_s",
            ),
            (
                BreakerSettings {
                    success_threshold: 0,
                    ..d()
                },
                "success_threshold",
            ),
            (
                BreakerSettings {
                    half_open_max_calls: 0,
                    ..d()
                },
                "half_open_max_calls",
            ),
            (
                BreakerSettings {
                    probe_timeout_s: 0,
                    ..d()
                },
                "probe_timeout_s",
            ),
        ];
        for (settings, field) in cases {
            let error = settings.validate().expect_err(field);
            assert_eq!(error.field, field, "{error}");
            assert!(error.to_string().starts_with(field), "{field}: {error}");
        }
        assert_eq!(
            BreakerSettings {
                failure_rate: 1.0,
                ..d()
            }
            .validate(),
            Ok(())
        );
    }

    #[test]
    fn invalid_settings_are_clamped_instead_of_panicking() {
        let settings = BreakerSettings {
            failure_threshold: 0,
            failure_rate: f64::NAN,
            window_s: 0,
            min_calls: 0,
            recovery_timeout_s: 0,
            max_recovery_timeout_s: 0,
            success_threshold: 0,
            half_open_max_calls: 0,
            probe_timeout_s: 0,
        };
        let (breaker, clock) = breaker_with(settings);
        fail(&breaker, 1);
        assert_eq!(retry_after_ms(&breaker), 1_000);
        clock.advance(secs(1));
        succeed(&breaker, 1);
        assert_eq!(breaker.state(), State::Closed);
    }

    #[test]
    fn state_serializes_in_snake_case_and_displays_in_capitals() {
        let cases = [
            (State::Closed, "\"closed\"", "CLOSED"),
            (State::Open, "\"open\"", "OPEN"),
            (State::HalfOpen, "\"half_open\"", "HALF_OPEN"),
        ];
        for (state, json, shown) in cases {
            assert_eq!(serde_json::to_string(&state).expect("serialize"), json);
            assert_eq!(
                serde_json::from_str::<State>(json).expect("deserialize"),
                state
            );
            assert_eq!(state.to_string(), shown);
            assert_eq!(format!("\"{}\"", state.as_str()), json);
        }
    }

    // --- closed → open -------------------------------------------------------------

    #[test]
    fn a_new_breaker_is_closed_and_admits_calls() {
        let (breaker, _) = default_breaker();
        assert_eq!(breaker.state(), State::Closed);
        let permit = breaker.try_acquire().expect("closed admits");
        assert!(!permit.is_probe());
        permit.success();
        assert!(breaker.can_execute());
    }

    #[test]
    fn five_consecutive_failures_open_the_breaker() {
        let (breaker, _) = breaker_with(consecutive_only());
        fail(&breaker, 4);
        assert_eq!(breaker.state(), State::Closed);
        breaker
            .try_acquire()
            .expect("call admitted")
            .failure("agent exited with 1");
        assert_eq!(breaker.state(), State::Open);
        let transition = breaker.snapshot().last_transition.expect("transition");
        assert_eq!(
            (transition.from, transition.to),
            (State::Closed, State::Open)
        );
        assert_eq!(
            transition.reason,
            "5 consecutive failures (last: agent exited with 1)"
        );
        assert_eq!(transition.at_wall_ms, WALL_START);
    }

    #[test]
    fn a_success_resets_the_consecutive_failure_count() {
        let (breaker, _) = breaker_with(consecutive_only());
        fail(&breaker, 4);
        succeed(&breaker, 1);
        fail(&breaker, 4);
        assert_eq!(breaker.state(), State::Closed);
        assert_eq!(breaker.snapshot().consecutive_failures, 4);
        fail(&breaker, 1);
        assert_eq!(breaker.state(), State::Open);
    }

    #[test]
    fn a_fifty_percent_flaky_dependency_opens_by_rate_without_five_consecutive_failures() {
        let (breaker, clock) = default_breaker();
        for _ in 0..5 {
            fail(&breaker, 1);
            clock.advance(secs(1));
            succeed(&breaker, 1);
            clock.advance(secs(1));
        }
        // 5 failures in 10 calls: the rate is reached, but only a failure evaluates it.
        assert_eq!(breaker.state(), State::Closed);
        fail(&breaker, 1);
        assert_eq!(breaker.state(), State::Open);
        assert_eq!(
            last_reason(&breaker),
            "failure rate 0.55 over 60s (11 calls)"
        );
        assert_eq!(breaker.snapshot().consecutive_failures, 1);
    }

    #[test]
    fn a_failure_rate_exactly_at_the_threshold_opens() {
        let (breaker, _) = default_breaker();
        for _ in 0..4 {
            succeed(&breaker, 1);
            fail(&breaker, 1);
        }
        succeed(&breaker, 1);
        assert_eq!(breaker.state(), State::Closed);
        fail(&breaker, 1);
        assert_eq!(breaker.state(), State::Open);
        assert_eq!(
            last_reason(&breaker),
            "failure rate 0.50 over 60s (10 calls)"
        );
    }

    #[test]
    fn low_volume_below_min_calls_never_opens_by_rate() {
        let (breaker, _) = default_breaker();
        fail(&breaker, 4);
        succeed(&breaker, 1);
        fail(&breaker, 4);
        let snapshot = breaker.snapshot();
        assert_eq!(snapshot.state, State::Closed);
        assert_eq!((snapshot.window_calls, snapshot.window_failures), (9, 8));
    }

    #[test]
    fn a_failure_rate_below_the_threshold_does_not_open() {
        let (breaker, _) = default_breaker();
        for _ in 0..10 {
            fail(&breaker, 1);
            succeed(&breaker, 2);
        }
        let snapshot = breaker.snapshot();
        assert_eq!(snapshot.state, State::Closed);
        assert_eq!((snapshot.window_calls, snapshot.window_failures), (30, 10));
    }

    #[test]
    fn calls_older_than_the_window_stop_counting() {
        let (breaker, clock) = breaker_with(rate_only());
        fail(&breaker, 9);
        clock.advance(secs(60));
        fail(&breaker, 1);
        assert_eq!(breaker.state(), State::Closed);
        assert_eq!(breaker.snapshot().window_calls, 1);
    }

    #[test]
    fn calls_inside_the_window_still_count() {
        let (breaker, clock) = breaker_with(rate_only());
        fail(&breaker, 9);
        clock.advance(Duration::from_millis(59_999));
        fail(&breaker, 1);
        assert_eq!(breaker.state(), State::Open);
        assert_eq!(
            last_reason(&breaker),
            "failure rate 1.00 over 60s (10 calls)"
        );
    }

    #[test]
    fn the_window_slides_one_bucket_at_a_time() {
        let (breaker, clock) = breaker_with(rate_only());
        succeed(&breaker, 4);
        clock.advance(secs(30));
        succeed(&breaker, 3);
        clock.advance(secs(30));
        assert_eq!(breaker.snapshot().window_calls, 3);
        clock.advance(secs(30));
        assert_eq!(breaker.snapshot().window_calls, 0);
    }

    #[test]
    fn a_long_window_uses_coarser_buckets_but_never_holds_a_call_too_long() {
        let settings = BreakerSettings {
            window_s: 3_600,
            ..rate_only()
        };
        let (breaker, clock) = breaker_with(settings);
        succeed(&breaker, 2);
        clock.advance(secs(3_599));
        assert_eq!(breaker.snapshot().window_calls, 2);
        clock.advance(secs(1));
        assert_eq!(breaker.snapshot().window_calls, 0);
    }

    // --- open → half-open → closed / open ----------------------------------------------

    #[test]
    fn an_open_breaker_rejects_with_the_time_until_the_next_probe() {
        let (breaker, clock) = opened_breaker();
        let rejected = breaker.try_acquire().expect_err("open rejects");
        assert_eq!(rejected.state, State::Open);
        assert_eq!(rejected.retry_after(), secs(30));
        assert_eq!(&*rejected.breaker, NAME);
        assert_eq!(
            rejected.to_string(),
            "circuit breaker BOT-001/agent is OPEN; next probe in 30000 ms"
        );
        clock.advance(secs(10));
        assert_eq!(retry_after_ms(&breaker), 20_000);
        assert!(!breaker.can_execute());
        let snapshot = breaker.snapshot();
        assert_eq!(snapshot.totals.rejected, 3);
        assert_eq!(snapshot.opened_at_wall_ms, Some(WALL_START));
        assert_eq!(snapshot.open_until_wall_ms, Some(WALL_START + 30_000));
    }

    #[test]
    fn the_recovery_timeout_moves_open_to_half_open() {
        let (breaker, clock) = opened_breaker();
        clock.advance(Duration::from_millis(29_999));
        assert_eq!(breaker.state(), State::Open);
        clock.advance(Duration::from_millis(1));
        assert_eq!(breaker.state(), State::HalfOpen);
        assert_eq!(last_reason(&breaker), "recovery timeout elapsed");
        let probe = breaker.try_acquire().expect("half-open admits a probe");
        assert!(probe.is_probe());
        let rejected = breaker.try_acquire().expect_err("one probe at a time");
        assert_eq!(rejected.state, State::HalfOpen);
        assert_eq!(rejected.retry_after_ms, 60_000);
        probe.success();
    }

    #[test]
    fn success_threshold_probe_successes_close_the_breaker() {
        let (breaker, clock) = opened_breaker();
        clock.advance(secs(30));
        succeed(&breaker, 1);
        assert_eq!(breaker.state(), State::HalfOpen);
        assert_eq!(breaker.snapshot().half_open_successes, 1);
        succeed(&breaker, 1);
        assert_eq!(breaker.state(), State::Closed);
        assert_eq!(last_reason(&breaker), "2 successes in half-open");
        let s = breaker.snapshot();
        assert_eq!(
            (s.consecutive_failures, s.window_calls, s.consecutive_opens),
            (0, 0, 0)
        );
        assert_eq!((s.opened_at_wall_ms, s.open_until_wall_ms), (None, None));
    }

    #[test]
    fn each_probe_failure_doubles_the_open_period_up_to_the_cap() {
        let (breaker, clock) = opened_breaker();
        let mut periods_s = vec![retry_after_ms(&breaker) / 1_000];
        for _ in 0..6 {
            clock.advance(secs(*periods_s.last().expect("a period")));
            breaker
                .try_acquire()
                .expect("probe admitted")
                .failure("still down");
            periods_s.push(retry_after_ms(&breaker) / 1_000);
        }
        assert_eq!(periods_s, [30, 60, 120, 240, 480, 600, 600]);
        assert_eq!(last_reason(&breaker), "probe failed: still down");
        assert_eq!(breaker.snapshot().consecutive_opens, 7);
    }

    #[test]
    fn closing_resets_the_open_period_to_the_recovery_timeout() {
        let (breaker, clock) = opened_breaker();
        clock.advance(secs(30));
        fail(&breaker, 1);
        clock.advance(secs(60));
        succeed(&breaker, 2);
        assert_eq!(breaker.state(), State::Closed);
        fail(&breaker, 5);
        assert_eq!(retry_after_ms(&breaker), 30_000);
    }

    #[test]
    fn ignored_calls_count_as_neither_success_nor_failure() {
        let (breaker, _) = default_breaker();
        fail(&breaker, 4);
        for _ in 0..3 {
            breaker.try_acquire().expect("call admitted").ignore();
        }
        let s = breaker.snapshot();
        assert_eq!(
            (s.consecutive_failures, s.window_calls, s.totals.ignored),
            (4, 4, 3)
        );
        fail(&breaker, 1);
        assert_eq!(breaker.state(), State::Open);
    }

    #[test]
    fn an_ignored_probe_frees_its_slot_without_counting() {
        let (breaker, clock) = opened_breaker();
        clock.advance(secs(30));
        breaker.try_acquire().expect("probe admitted").ignore();
        let s = breaker.snapshot();
        assert_eq!(
            (s.state, s.half_open_successes, s.probes_in_flight),
            (State::HalfOpen, 0, 0)
        );
        succeed(&breaker, 2);
        assert_eq!(breaker.state(), State::Closed);
    }

    #[test]
    fn dropping_an_unresolved_permit_counts_as_ignore() {
        let (breaker, clock) = opened_breaker();
        clock.advance(secs(30));
        drop(breaker.try_acquire().expect("probe admitted"));
        let s = breaker.snapshot();
        assert_eq!(
            (s.state, s.probes_in_flight, s.totals.ignored),
            (State::HalfOpen, 0, 1)
        );
        assert!(breaker.try_acquire().is_ok());
    }

    #[test]
    fn a_hung_probe_reopens_the_breaker_after_the_probe_timeout() {
        let (breaker, clock) = opened_breaker();
        clock.advance(secs(30));
        let hung = breaker.try_acquire().expect("probe admitted");
        clock.advance(secs(59));
        assert_eq!(breaker.state(), State::HalfOpen);
        clock.advance(secs(1));
        assert_eq!(breaker.state(), State::Open);
        assert_eq!(last_reason(&breaker), "probe timed out");
        assert_eq!(retry_after_ms(&breaker), 60_000);
        // The late answer is counted but cannot end the new open period.
        hung.success();
        let s = breaker.snapshot();
        assert_eq!(s.state, State::Open);
        assert_eq!((s.totals.probe_timeouts, s.totals.successes), (1, 1));
    }

    #[test]
    fn tick_fires_timers_when_no_call_arrives() {
        let (observer, seen) = recorder();
        let (breaker, clock) = opened_breaker();
        let breaker = breaker.with_observer(observer);
        clock.advance(secs(30));
        breaker.tick();
        assert_eq!(steps(&seen), [(State::Open, State::HalfOpen)]);
        let _hung = breaker.try_acquire().expect("probe admitted");
        clock.advance(secs(60));
        breaker.tick();
        assert_eq!(
            steps(&seen),
            [
                (State::Open, State::HalfOpen),
                (State::HalfOpen, State::Open)
            ]
        );
    }

    #[test]
    fn outcomes_admitted_before_opening_do_not_move_half_open() {
        let (breaker, clock) = default_breaker();
        let early_failure = breaker.try_acquire().expect("call admitted");
        let early_success = breaker.try_acquire().expect("call admitted");
        fail(&breaker, 5);
        clock.advance(secs(30));
        assert_eq!(breaker.state(), State::HalfOpen);
        early_success.success();
        early_failure.failure("late");
        let s = breaker.snapshot();
        assert_eq!((s.state, s.half_open_successes), (State::HalfOpen, 0));
        assert_eq!((s.totals.successes, s.totals.failures), (1, 6));
    }

    #[test]
    fn outcomes_from_an_earlier_closed_period_do_not_count_in_the_next_one() {
        let (breaker, clock) = default_breaker();
        let early = breaker.try_acquire().expect("call admitted");
        fail(&breaker, 5);
        clock.advance(secs(30));
        succeed(&breaker, 2);
        assert_eq!(breaker.state(), State::Closed);
        early.failure("late");
        assert_eq!(breaker.snapshot().consecutive_failures, 0);
    }

    #[test]
    fn a_probe_from_an_earlier_half_open_period_does_not_count_in_the_next_one() {
        let settings = BreakerSettings {
            half_open_max_calls: 2,
            ..Default::default()
        };
        let (breaker, clock) = breaker_with(settings);
        fail(&breaker, 5);
        clock.advance(secs(30));
        let failing = breaker.try_acquire().expect("probe admitted");
        let late = breaker.try_acquire().expect("second probe admitted");
        failing.failure("down");
        clock.advance(secs(60));
        assert_eq!(breaker.state(), State::HalfOpen);
        late.success();
        let s = breaker.snapshot();
        assert_eq!((s.state, s.half_open_successes), (State::HalfOpen, 0));
    }

    // --- callers without permits -------------------------------------------------------

    #[test]
    fn callers_without_permits_drive_a_full_cycle() {
        let (breaker, clock) = default_breaker();
        for _ in 0..100 {
            assert!(breaker.can_execute(), "closed reserves nothing");
        }
        for _ in 0..5 {
            breaker.record_failure("telegram 502");
        }
        assert_eq!(breaker.state(), State::Open);
        assert_eq!(
            last_reason(&breaker),
            "5 consecutive failures (last: telegram 502)"
        );
        assert!(!breaker.can_execute());
        clock.advance(secs(30));
        assert!(breaker.can_execute(), "takes the probe slot");
        assert!(!breaker.can_execute(), "the slot is taken");
        breaker.record_success();
        assert!(breaker.can_execute(), "record_success freed the slot");
        breaker.record_success();
        assert_eq!(breaker.state(), State::Closed);
    }

    #[test]
    fn a_probe_slot_taken_by_can_execute_times_out_if_nothing_is_recorded() {
        let (breaker, clock) = opened_breaker();
        clock.advance(secs(30));
        assert!(breaker.can_execute());
        assert!(!breaker.can_execute());
        clock.advance(secs(60));
        assert_eq!(breaker.state(), State::Open);
        assert_eq!(last_reason(&breaker), "probe timed out");
    }

    #[test]
    fn outcomes_recorded_while_open_only_change_the_totals() {
        let (breaker, _) = opened_breaker();
        breaker.record_success();
        breaker.record_failure("still sending");
        let s = breaker.snapshot();
        assert_eq!((s.state, s.consecutive_opens), (State::Open, 1));
        assert_eq!((s.totals.successes, s.totals.failures), (1, 6));
        assert_eq!(retry_after_ms(&breaker), 30_000);
    }

    #[test]
    fn totals_count_every_reported_outcome() {
        let (breaker, _) = default_breaker();
        succeed(&breaker, 2);
        breaker.try_acquire().expect("call admitted").ignore();
        fail(&breaker, 5);
        assert!(breaker.try_acquire().is_err());
        breaker.record_success();
        let expected = OutcomeTotals {
            successes: 3,
            failures: 5,
            rejected: 1,
            ignored: 1,
            probe_timeouts: 0,
        };
        assert_eq!(breaker.snapshot().totals, expected);
    }

    #[test]
    fn long_or_empty_failure_reasons_are_bounded() {
        let (breaker, _) = breaker_with(consecutive_only());
        fail(&breaker, 4);
        breaker
            .try_acquire()
            .expect("call admitted")
            .failure(&"x".repeat(10_000));
        let expected = format!("5 consecutive failures (last: {})", "x".repeat(200));
        assert_eq!(last_reason(&breaker), expected);
        assert_eq!(bounded_reason("  \n"), "unspecified");
        assert_eq!(bounded_reason(&"é".repeat(300)), "é".repeat(200));
    }

    // --- concurrency ---------------------------------------------------------------

    /// Opens a breaker, lets its open period elapse unnoticed, then has 64 threads race
    /// `try_acquire`; every granted permit is held until all racers are done.
    fn permits_granted_at_the_half_open_edge(max_calls: u32) -> usize {
        const RACERS: usize = 64;
        let settings = BreakerSettings {
            half_open_max_calls: max_calls,
            ..Default::default()
        };
        let (breaker, clock) = breaker_with(settings);
        fail(&breaker, 5);
        clock.advance(secs(30));
        let barrier = Barrier::new(RACERS);
        thread::scope(|scope| {
            let racers: Vec<_> = (0..RACERS)
                .map(|_| {
                    scope.spawn(|| {
                        barrier.wait();
                        breaker.try_acquire().ok()
                    })
                })
                .collect();
            let granted: Vec<Permit> = racers
                .into_iter()
                .filter_map(|racer| racer.join().expect("racer panicked"))
                .collect();
            granted.len()
        })
    }

    #[test]
    fn racing_threads_at_the_half_open_edge_get_exactly_max_calls_permits() {
        for max_calls in [1, 3] {
            for _ in 0..200 {
                let granted = permits_granted_at_the_half_open_edge(max_calls);
                assert_eq!(granted, max_calls as usize);
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn racing_tokio_tasks_at_the_half_open_edge_get_exactly_max_calls_permits() {
        const RACERS: usize = 64;
        for max_calls in [1_u32, 3] {
            for _ in 0..50 {
                let settings = BreakerSettings {
                    half_open_max_calls: max_calls,
                    ..Default::default()
                };
                let (breaker, clock) = breaker_with(settings);
                fail(&breaker, 5);
                clock.advance(secs(30));
                let barrier = Arc::new(tokio::sync::Barrier::new(RACERS));
                let racers: Vec<_> = (0..RACERS)
                    .map(|_| {
                        let (breaker, barrier) = (breaker.clone(), Arc::clone(&barrier));
                        tokio::spawn(async move {
                            barrier.wait().await;
                            breaker.try_acquire().ok()
                        })
                    })
                    .collect();
                let mut granted = Vec::new();
                for racer in racers {
                    granted.extend(racer.await.expect("racer panicked"));
                }
                assert_eq!(granted.len(), max_calls as usize);
            }
        }
    }

    #[test]
    fn probes_in_flight_never_exceed_the_limit_under_churn() {
        let settings = BreakerSettings {
            half_open_max_calls: 3,
            success_threshold: u32::MAX,
            ..Default::default()
        };
        let (breaker, clock) = breaker_with(settings);
        fail(&breaker, 5);
        clock.advance(secs(30));
        let in_flight = AtomicUsize::new(0);
        let peak = AtomicUsize::new(0);
        let granted = AtomicUsize::new(0);
        thread::scope(|scope| {
            for _ in 0..8 {
                scope.spawn(|| {
                    for round in 0..2_000 {
                        let Ok(permit) = breaker.try_acquire() else {
                            continue;
                        };
                        let holders = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                        peak.fetch_max(holders, Ordering::SeqCst);
                        granted.fetch_add(1, Ordering::SeqCst);
                        in_flight.fetch_sub(1, Ordering::SeqCst);
                        if round % 2 == 0 {
                            permit.ignore();
                        } else {
                            permit.success();
                        }
                    }
                });
            }
        });
        assert!(peak.load(Ordering::SeqCst) <= 3);
        assert!(granted.load(Ordering::SeqCst) > 3);
        assert_eq!(breaker.state(), State::HalfOpen);
    }

    #[test]
    fn permits_and_breakers_can_move_between_threads_and_tasks() {
        fn assert_send_sync_static<T: Send + Sync + 'static>() {}
        assert_send_sync_static::<Permit>();
        assert_send_sync_static::<CircuitBreaker>();
        assert_send_sync_static::<Rejected>();
    }

    // --- snapshot and restore ------------------------------------------------------

    #[test]
    fn a_closed_snapshot_round_trips_through_restore() {
        let (breaker, clock) = default_breaker();
        succeed(&breaker, 3);
        fail(&breaker, 3);
        breaker.try_acquire().expect("call admitted").ignore();
        let before = breaker.snapshot();
        assert_eq!(restored(before.clone(), &clock).snapshot(), before);
    }

    #[test]
    fn a_stale_closed_snapshot_keeps_its_failure_streak_but_not_its_window() {
        let (breaker, clock) = default_breaker();
        fail(&breaker, 3);
        let saved = breaker.snapshot();
        clock.advance(secs(61));
        let s = restored(saved, &clock).snapshot();
        assert_eq!((s.consecutive_failures, s.window_calls), (3, 0));
    }

    #[test]
    fn an_open_breaker_stays_open_across_a_restart() {
        let (breaker, clock) = opened_breaker();
        clock.advance(secs(10));
        let saved = breaker.snapshot();
        // A restart 5 s later: a fresh monotonic clock, the wall clock moved on.
        let after_restart = Arc::new(ManualClock::new(clock.wall_ms() + 5_000));
        let breaker = restored(saved.clone(), &after_restart);
        assert_eq!(breaker.state(), State::Open);
        assert_eq!(retry_after_ms(&breaker), 15_000);
        let s = breaker.snapshot();
        assert_eq!(s.opened_at_wall_ms, saved.opened_at_wall_ms);
        assert_eq!(s.open_until_wall_ms, saved.open_until_wall_ms);
        assert_eq!(s.last_transition, saved.last_transition);
        assert_eq!(s.consecutive_failures, 5);
        after_restart.advance(secs(15));
        assert_eq!(breaker.state(), State::HalfOpen);
    }

    #[test]
    fn a_wall_clock_jump_back_cannot_stretch_a_restored_open_period() {
        let (breaker, _) = opened_breaker();
        let saved = breaker.snapshot();
        let five_hours_earlier = Arc::new(ManualClock::new(WALL_START - 5 * 3_600_000));
        let breaker = restored(saved, &five_hours_earlier);
        assert_eq!(retry_after_ms(&breaker), 30_000);
    }

    #[test]
    fn a_restored_open_period_is_clamped_to_the_period_of_its_open_count() {
        let (breaker, clock) = opened_breaker();
        clock.advance(secs(30));
        fail(&breaker, 1);
        clock.advance(secs(60));
        fail(&breaker, 1);
        let saved = breaker.snapshot();
        assert_eq!(saved.consecutive_opens, 3);
        let jumped_back = Arc::new(ManualClock::new(clock.wall_ms() - 5 * 3_600_000));
        let breaker = restored(saved, &jumped_back);
        assert_eq!(retry_after_ms(&breaker), 120_000);
    }

    #[test]
    fn a_wall_clock_jump_forward_lets_a_restored_breaker_probe_at_once() {
        let (breaker, _) = opened_breaker();
        let saved = breaker.snapshot();
        let a_day_later = Arc::new(ManualClock::new(WALL_START + 86_400_000));
        assert_eq!(restored(saved, &a_day_later).state(), State::HalfOpen);
    }

    #[test]
    fn a_half_open_snapshot_restores_as_open_with_the_recovery_timeout_elapsed() {
        let (breaker, clock) = opened_breaker();
        clock.advance(secs(30));
        let _in_flight = breaker.try_acquire().expect("probe admitted");
        let saved = breaker.snapshot();
        assert_eq!((saved.state, saved.probes_in_flight), (State::HalfOpen, 1));
        let (observer, seen) = recorder();
        let breaker = restored(saved, &clock).with_observer(observer);
        let probe = breaker.try_acquire().expect("a fresh probe is issued");
        assert!(probe.is_probe());
        assert_eq!(steps(&seen), [(State::Open, State::HalfOpen)]);
        assert_eq!(last_reason(&breaker), "recovery timeout elapsed");
        probe.failure("still down");
        assert_eq!(retry_after_ms(&breaker), 60_000, "the doubling continues");
    }

    #[test]
    fn snapshots_survive_a_json_round_trip() {
        let (breaker, clock) = opened_breaker();
        clock.advance(secs(30));
        let _probe = breaker.try_acquire().expect("probe admitted");
        let snapshot = breaker.snapshot();
        let json = serde_json::to_string(&snapshot).expect("serialize");
        assert!(json.contains(r#""state":"half_open""#), "{json}");
        let back: BreakerSnapshot = serde_json::from_str(&json).expect("deserialize");
        assert_eq!(back, snapshot);
    }

    // --- observer ------------------------------------------------------------------

    #[test]
    fn the_observer_sees_each_transition_exactly_once_in_order() {
        let (observer, seen) = recorder();
        let (breaker, clock) = default_breaker();
        let breaker = breaker.with_observer(observer);
        fail(&breaker, 5);
        clock.advance(secs(30));
        breaker.tick();
        breaker.tick();
        fail(&breaker, 1);
        clock.advance(secs(60));
        assert_eq!(breaker.state(), State::HalfOpen);
        succeed(&breaker, 2);
        breaker.tick();
        let _ = breaker.snapshot();
        use State::{Closed, HalfOpen, Open};
        assert_eq!(
            steps(&seen),
            [
                (Closed, Open),
                (Open, HalfOpen),
                (HalfOpen, Open),
                (Open, HalfOpen),
                (HalfOpen, Closed)
            ]
        );
        for (transition, snapshot) in seen.lock().expect("recorder lock").iter() {
            assert_eq!(snapshot.state, transition.to);
            assert_eq!(snapshot.last_transition.as_ref(), Some(transition));
        }
    }

    #[test]
    fn the_observer_may_call_back_into_the_breaker() {
        let seen: Arc<Mutex<Vec<(State, State)>>> = Arc::default();
        let handle: Arc<OnceLock<CircuitBreaker>> = Arc::default();
        let observer: TransitionObserver = {
            let (seen, handle) = (Arc::clone(&seen), Arc::clone(&handle));
            Arc::new(move |transition, _| {
                seen.lock()
                    .expect("seen lock")
                    .push((transition.from, transition.to));
                // Entering half-open, the observer itself runs a probe that fails.
                if transition.to == State::HalfOpen
                    && let Some(breaker) = handle.get()
                    && let Ok(probe) = breaker.try_acquire()
                {
                    probe.failure("checked from the observer");
                }
            })
        };
        let (breaker, clock) = default_breaker();
        let breaker = breaker.with_observer(observer);
        handle.set(breaker.clone()).expect("handle set once");
        fail(&breaker, 5);
        clock.advance(secs(30));
        breaker.tick();
        let seen = seen.lock().expect("seen lock").clone();
        use State::{Closed, HalfOpen, Open};
        assert_eq!(seen, [(Closed, Open), (Open, HalfOpen), (HalfOpen, Open)]);
        assert_eq!(breaker.state(), State::Open);
    }

    #[test]
    fn a_panicking_observer_does_not_break_the_breaker() {
        let calls = Arc::new(AtomicUsize::new(0));
        let observer: TransitionObserver = {
            let calls = Arc::clone(&calls);
            Arc::new(move |_, _| {
                calls.fetch_add(1, Ordering::SeqCst);
                panic!("observer bug (expected by this test)");
            })
        };
        let (breaker, clock) = default_breaker();
        let breaker = breaker.with_observer(observer);
        fail(&breaker, 5);
        assert_eq!(breaker.state(), State::Open);
        clock.advance(secs(30));
        assert_eq!(breaker.state(), State::HalfOpen);
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn a_transition_from_another_thread_waits_for_the_observer_and_keeps_its_order() {
        let log: Arc<Mutex<Vec<String>>> = Arc::default();
        let (entered, wait_entered) = std::sync::mpsc::channel();
        let (release, wait_release) = std::sync::mpsc::channel::<()>();
        let wait_release = Mutex::new(wait_release);
        let observer: TransitionObserver = {
            let log = Arc::clone(&log);
            Arc::new(move |transition, _| {
                let push = |line: String| log.lock().expect("log lock").push(line);
                push(format!("start {}", transition.to));
                if transition.to == State::Open {
                    entered.send(()).expect("test waits for the observer");
                    // Bounded, so a failing assertion below cannot hang the test.
                    let wait = wait_release.lock().expect("release lock");
                    let _ = wait.recv_timeout(secs(10));
                }
                push(format!("end {}", transition.to));
            })
        };
        let (breaker, clock) = default_breaker();
        let breaker = breaker.with_observer(observer);
        thread::scope(|scope| {
            let opener = scope.spawn(|| fail(&breaker, 5));
            wait_entered.recv().expect("observer entered");
            clock.advance(secs(30));
            // The state moves at once; the notice waits for the busy observer.
            assert_eq!(breaker.state(), State::HalfOpen);
            assert_eq!(*log.lock().expect("log lock"), ["start OPEN"]);
            release.send(()).expect("observer waiting");
            opener.join().expect("opener panicked");
        });
        let log = log.lock().expect("log lock");
        assert_eq!(
            *log,
            ["start OPEN", "end OPEN", "start HALF_OPEN", "end HALF_OPEN"]
        );
    }

    // --- clocks --------------------------------------------------------------------

    #[test]
    fn the_system_clock_is_monotonic_and_its_wall_clock_is_plausible() {
        let clock = SystemClock::new();
        let first = clock.now_ms();
        assert!(clock.now_ms() >= first);
        assert!(clock.wall_ms() > 1_600_000_000_000);
    }

    #[test]
    fn the_manual_clock_moves_only_when_told() {
        let clock = ManualClock::new(WALL_START);
        assert_eq!((clock.now_ms(), clock.wall_ms()), (0, WALL_START));
        clock.advance(Duration::from_millis(1_500));
        assert_eq!(
            (clock.now_ms(), clock.wall_ms()),
            (1_500, WALL_START + 1_500)
        );
        clock.set_wall_ms(5);
        assert_eq!((clock.now_ms(), clock.wall_ms()), (1_500, 5));
    }
}
